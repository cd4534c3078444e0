"""Artifact latency: each built artifact in its own runtime against eager PyTorch, batch 1 and 8.

Builds every format of each model with the Python API (``export_model``), then loads each artifact
the way a user serves it (ONNX Runtime's CPU session, ``torch.jit.load``, the state dict loaded
into the model) and times it against eager PyTorch on the same inputs, interleaved call for call
in the same run, after warm-up (ONNX Runtime's worker threads do not spin between calls, so that
they leave the cores to the eager call that follows). Medians in milliseconds and the ratio artifact/eager (below 1:
the artifact is faster).

    python benchmarks/artifact_latency.py
    python benchmarks/artifact_latency.py --runs 20 --gpt2 /tmp/gpt2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings

FORMATS = [("onnx (legacy)", "onnx", {"onnx": {"backend": "legacy"}}),
           ("onnx (dynamo)", "onnx", {"onnx": {"opset": 18, "backend": "dynamo"}}),
           ("torchscript", "torchscript", {}), ("pytorch", "pytorch", {})]


def models(gpt2: str | None):
    from exporter import TaskSpec
    from exporter.models import LMStub, SimpleCNN

    yield "simple_cnn", SimpleCNN().eval(), TaskSpec("cnn", "vision", "vision_classification",
                                                     {"image_size": [3, 224, 224]})
    yield "lm_stub", LMStub().eval(), TaskSpec("lm", "text", "language_modeling",
                                               {"vocab_size": 1000, "max_seq_len": 128})
    if gpt2:
        from exporter.models.hf import from_pretrained

        model = from_pretrained(gpt2, "causal_lm")
        yield "gpt2", model, TaskSpec("gpt2", "text", "language_modeling",
                                      {"vocab_size": model.config.vocab_size, "max_seq_len": 128})


def loader(fmt: str, path: str, model, adapter):
    """A callable running the artifact on the adapter's inputs, as a user would load it."""
    import copy

    import torch

    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Spinning worker threads would keep the cores busy between calls and slow the eager call
        # timed right after (measured: eager 2x slower beside a spinning session).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        return lambda inputs: session.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})
    if fmt == "torchscript":
        scripted = torch.jit.load(path)
        return lambda inputs: scripted(*inputs.values())
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    return lambda inputs: adapter.run(fresh, inputs)


def timed(call, inputs, runs: int) -> list[float]:
    import torch

    seconds = []
    with torch.no_grad():
        for _ in range(runs):
            started = time.perf_counter()
            call(inputs)
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--gpt2", help="also a GPT-2 folder saved with save_pretrained")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import torch

    from exporter import export_model
    from exporter.adapters import adapter_for_task
    from exporter.records.tables import markdown_table

    torch.manual_seed(0)
    rows = []
    for name, model, spec in models(args.gpt2):
        adapter = adapter_for_task(spec)
        adapter.bind(model)
        for label, fmt, options in FORMATS:
            with tempfile.TemporaryDirectory() as out:
                paths = export_model(model, None, spec, out, formats=[fmt], format_options=options)
                run = loader(fmt, str(paths[fmt]), model, adapter)
                cells = [name, label]
                for batch in (1, 8):
                    inputs = adapter.example_inputs(spec, batch_size=batch)
                    eager = lambda x: adapter.run(model, x)  # noqa: E731
                    for call in (eager, run):  # warm-up
                        timed(call, inputs, 3)
                    ours, theirs = [], []
                    for _ in range(args.runs):  # interleaved, call for call
                        theirs += timed(eager, inputs, 1)
                        ours += timed(run, inputs, 1)
                    e, a = statistics.median(theirs) * 1e3, statistics.median(ours) * 1e3
                    cells += [f"{e:.2f}", f"{a:.2f}", f"{a / e:.2f}"]
                rows.append(cells)
    headers = ["model", "format", "eager ms b1", "artifact ms b1", "ratio b1", "eager ms b8", "artifact ms b8", "ratio b8"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
