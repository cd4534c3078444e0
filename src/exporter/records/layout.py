"""The file layout of a build folder: the names of its records, one leaf every other module reads.

A build folder holds its artifacts (named by their formats, ``exporter.formats.registry``) and these
records beside them. How a sweep job's folder is named (``sweep_suffix``) is here too: the folder name
is part of the layout, and both the command line and the job's process name folders.

    >>> sorted(RECORD_NAMES)
    ['.hydra', 'config.yaml', 'export.log', 'metadata.json']
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable, Optional

METADATA_FILE = "metadata.json"
CONFIG_SNAPSHOT_FILE = "config.yaml"
LOG_FILE = "export.log"
HYDRA_SUBDIR = ".hydra"
# What a build folder holds besides the files its records list.
RECORD_NAMES = frozenset({METADATA_FILE, CONFIG_SNAPSHOT_FILE, LOG_FILE, HYDRA_SUBDIR})


def stat_cache_path(folder: "str | os.PathLike[str]") -> str:
    """Where the tool notes, beside a build folder and no part of it (as its lock), what ``stat``
    said of the files the build was last checked by (exporter.records.stat_cache):
    ``exports/m/onnx-none`` -> ``exports/m/.onnx-none.stat-cache.json``; beside the folder a
    symbolic link points to, as the folder's lock is."""
    path = os.path.realpath(folder) if os.path.islink(folder) else os.path.abspath(folder)
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.stat-cache.json")

# The model-folder files a text model's build writes beside its graphs for the runtimes that load the
# folder as it is (ONNX Runtime GenAI, Optimum's ORT classes): copied from the model's folder or written.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "added_tokens.json",
                   "chat_template.jinja")
# An image model's preprocessing (its image processor), read by Optimum's pipelines beside the graph.
PREPROCESSOR_FILES = ("preprocessor_config.json",)
MODEL_FOLDER_FILES = frozenset({"config.json", "generation_config.json", "genai_config.json", *TOKENIZER_FILES,
                                *PREPROCESSOR_FILES})
# Files that are code to Python or to a loader: a build never writes one.
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyw", ".pyd", ".pyx", ".so", ".dylib", ".dll", ".sh", ".exe")


def written_by_a_build(name: str, artifact: Optional[str]) -> bool:
    """Whether a build of this tool writes a file of that ``name`` for the artifact file ``artifact``:
    the artifact itself, its data files (``model.onnx.data``) or a model-folder file
    (``MODEL_FOLDER_FILES``), and never code. A record that lists anything else was not written by
    a build: ``card`` counts it as no part of the build.

    >>> [written_by_a_build(n, "model.onnx") for n in ("model.onnx.data", "tokenizer.json", "evilmod.py")]
    [True, True, False]
    """
    if name.lower().endswith(CODE_SUFFIXES):
        return False
    return name == artifact or (artifact is not None and name.startswith(artifact + ".")) or name in MODEL_FOLDER_FILES


# The overrides a sweep varies (JSON list of keys), set by the sweep for its jobs (exporter.cli.sweep).
SWEEP_KEYS_ENV = "EXPORTER_SWEEP_KEYS"
# Choices already in the folder name <model>/<formats>-<quantization> (a dict merged into one of
# them, ``model={width: 8}``, is not: it goes in the suffix like any other value).
_NAMED_ELSEWHERE = ("format", "quantization", "model")
# Not about what is built.
_NOT_THE_BUILD = ("export_dir", "force", "wait")
_MAX_SUFFIX = 64


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _varied_keys() -> Optional[set[str]]:
    keys = os.environ.get(SWEEP_KEYS_ENV)
    return set(json.loads(keys)) if keys else None


def sweep_suffix(overrides: Iterable[str]) -> str:
    """``@opset=13`` for a job of a sweep that varies ``format.onnx.opset``: the overrides the sweep
    varies, other than the choices already in the folder name, in the order of their keys (the order
    they were given in names no folder: a nightly whose command lists them otherwise finds its builds
    up to date). Without the sweep's own list (a launcher that does not pass the environment on),
    every such override of the job is used.

    >>> sweep_suffix(["validate.rtol=0.01", "model=lm_stub", "seed=0", "format.onnx.opset=13"])
    '@onnx.opset=13,seed=0,validate.rtol=0.01'
    >>> sweep_suffix(["model={width: 8}", "format=[onnx,pytorch]"])
    '@model={width:8}'
    """
    varied = _varied_keys()
    items = []
    for override in overrides:
        key = _key(str(override))
        value = str(override).split("=", 1)[1] if "=" in str(override) else ""
        if (key in _NOT_THE_BUILD or key.startswith("hydra.") or (varied is not None and key not in varied)
                or (key in _NAMED_ELSEWHERE and not value.lstrip().startswith("{"))):
            continue
        items.append((key.removeprefix("format."), value))
    if not items:
        return ""
    items.sort(key=lambda item: item[0])
    text = ",".join(f"{key}={value}" for key, value in items).replace("/", "_").replace(" ", "")
    if len(text) > _MAX_SUFFIX:
        text = text[:_MAX_SUFFIX - 9] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return "@" + text


def input_variable(name: str) -> str:
    """The Python name a load hint gives an input, which the card defines before the hint:
    ``input_ids``; ``past_key_values.0.key`` -> ``past_key_values_0_key``.

    >>> input_variable("past_key_values.0.key"), input_variable("0x")
    ('past_key_values_0_key', 'input_0x')
    """
    import re

    text = re.sub(r"\W", "_", name)
    return text if text.isidentifier() and not text[0].isdigit() else f"input_{text}"
