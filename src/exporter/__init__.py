"""exporter: turn trained PyTorch models into checked deployment artifacts.

The public API is imported lazily so that ``python -m exporter --help`` and config errors
answer without importing torch, onnx or onnxruntime.

Example:
    >>> from exporter import TaskSpec, generate_dummy_input
    >>> spec = TaskSpec("demo", "vision", "vision_classification", {"image_size": [3, 32, 32]})
    >>> tuple(generate_dummy_input(spec).shape)
    (1, 3, 32, 32)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "export_model": "exporter.api",
    "generate_dummy_input": "exporter.adapters.example_inputs",
    "TaskSpec": "exporter.config.task_spec",
    "ModelAdapter": "exporter.adapters",
    "VisionClassificationAdapter": "exporter.adapters",
    "LanguageModelingAdapter": "exporter.adapters",
    "TextClassificationAdapter": "exporter.adapters",
    "export_onnx": "exporter.api",
    "export_torchscript": "exporter.api",
    "ExportError": "exporter.errors",
    "ConfigError": "exporter.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
