"""Which modules are imported where ahead of a job, in one place.

- ``JOB_MODULES``: what every build needs, imported ahead of the job by the process that will run
  it. A sweep's process imports them before it forks each job, so the jobs pay torch's import
  once per sweep.
- ``NATIVE_PACKAGES``: packages whose import runs native start-up code. A signal must not raise
  inside it: the command line holds SIGINT and SIGTERM while one of them is imported
  (``exporter.cli.startup``).
- ``WARM_PACKAGES``: the packages whose modules a sweep's process may import ahead of a job, because
  an earlier job imported them. These are the tool and its dependencies, which start no thread and
  print nothing on import. A user's own model or dataset module is imported by its job only.

Importing this module imports nothing else.
"""

JOB_MODULES = ("exporter.process.child", "torch", "exporter.build.runner")
NATIVE_PACKAGES = frozenset({"torch", "numpy", "onnx", "onnxruntime", "onnxscript", "onnx_ir", "ml_dtypes",
                             "transformers", "tokenizers", "safetensors"})
WARM_PACKAGES = NATIVE_PACKAGES | frozenset({
    "exporter", "torchgen", "functorch", "huggingface_hub", "sympy", "mpmath", "networkx",
    "jinja2", "markupsafe", "filelock", "fsspec", "packaging", "google", "yaml", "regex", "tqdm",
})
