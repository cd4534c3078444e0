"""Quantization steps shared by the format exporters, and the guardrails around them."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

    from .schema import QuantizationConfig

log = logging.getLogger("exporter")

COLAB_STATIC_WARNING = "Static quantization may fail on Colab GPU, use dynamic instead"
MODES = ("none", "dynamic", "static")


def mode_of(q: "QuantizationConfig") -> str:
    return getattr(q.mode, "value", q.mode)


def weight_type_of(q: "QuantizationConfig") -> str:
    return getattr(q.weight_type, "value", q.weight_type)


def is_colab() -> bool:
    """True on Google Colab: ``google.colab`` importable or ``COLAB_RELEASE_TAG`` set."""
    if os.environ.get("COLAB_RELEASE_TAG"):
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def check_quantization(q: "QuantizationConfig") -> None:
    """Refuse what cannot be built, before any work; warn about static quantization on Colab."""
    mode = mode_of(q)
    if mode not in MODES:
        raise ConfigError(f"quantization: unknown mode {mode!r}; valid values: {list(MODES)}")
    if mode == "static":
        if is_colab():
            log.warning(COLAB_STATIC_WARNING)
        raise ConfigError(
            "quantization=static needs calibration data, which this version cannot take yet; "
            "use quantization=dynamic (ONNX, TorchScript, pytorch) or quantization=none"
        )


def check_torch_dynamic(q: "QuantizationConfig", format_name: str) -> None:
    """torch's dynamic quantization of Linear layers takes qint8 weights only."""
    if mode_of(q) == "dynamic" and weight_type_of(q) != "qint8":
        raise ConfigError(
            f"quantization.weight_type={weight_type_of(q)}: torch dynamic quantization of Linear layers "
            f"(format {format_name}) takes only qint8; valid values: ['qint8'] (ONNX also takes quint8)"
        )


def torch_dynamic_quantize(model: "torch.nn.Module", q: "QuantizationConfig") -> "torch.nn.Module":
    """A copy of ``model`` with its Linear layers dynamically quantized (int8 weights)."""
    import copy
    import warnings

    import torch

    check_torch_dynamic(q, "torch")
    with warnings.catch_warnings():
        # torch.ao.quantization works in 2.13 but warns that it is deprecated on every call.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )


TORCH_DYNAMIC_RECIPE = (
    "torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)"
)


def onnx_dynamic_quantize(source: Path, target: Path, q: "QuantizationConfig") -> None:
    """ONNX Runtime's quantize_dynamic on an exported fp32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[weight_type_of(q)]
    root = logging.getLogger()
    level = root.level
    # ONNX Runtime logs pre-processing advice at WARNING on the root logger on every call.
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(source, target, weight_type=weight_type, per_channel=bool(q.per_channel))
    finally:
        root.setLevel(level)
