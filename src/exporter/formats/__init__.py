"""Format exporters, one module each, all with the surface of ``base.FormatExporter``."""

from __future__ import annotations

from .base import ExportContext, ExportOutcome, FormatExporter
from .onnx import OnnxExporter
from .state_dict import StateDictExporter
from .torchscript import TorchScriptExporter

EXPORTERS: dict[str, type[FormatExporter]] = {
    cls.name: cls for cls in (OnnxExporter, TorchScriptExporter, StateDictExporter)
}

__all__ = ["EXPORTERS", "ExportContext", "ExportOutcome", "FormatExporter"]
