"""Quantization policy, the same for every format: which modes exist, what a format must declare
to take one, the calibration samples, the fp32 twin and weight-type selection (``selection``), the
report and its gates (``report``).

The mechanisms live with their formats: ONNX Runtime's quantizer in ``formats/onnx/quantize.py``,
``torch.ao.quantization`` in ``formats/torch_quantize.py``. A format says what it takes in its
``quantization`` declaration (mode -> weight types); one that declares nothing is refused every
mode before any work (``check_support``).

This module stays free of torch, onnx and onnxruntime: config checks import it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from ..config.schema import QuantizationMode, WeightType, option_value
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config.schema import QuantizationConfig

log = logging.getLogger("exporter")

COLAB_STATIC_WARNING = "Static quantization may fail on Colab GPU, use dynamic instead"
MODES = tuple(m.value for m in QuantizationMode)
# The concrete weight types (``auto`` means "each the format takes, timed").
WEIGHT_TYPES = tuple(w.value for w in WeightType if w is not WeightType.auto)


def mode_of(q: "QuantizationConfig") -> str:
    return option_value(q.mode)


def weight_type_of(q: "QuantizationConfig") -> str:
    return option_value(q.weight_type)


def is_colab() -> bool:
    """True on Google Colab: ``google.colab`` importable or ``COLAB_RELEASE_TAG`` set."""
    if os.environ.get("COLAB_RELEASE_TAG"):
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def check_quantization(q: "QuantizationConfig") -> None:
    """Refuse unknown modes before any work; warn about static quantization on Colab."""
    mode = mode_of(q)
    if mode not in MODES:
        raise ConfigError(f"quantization: unknown mode {mode!r}; valid values: {list(MODES)}")
    if mode == "static" and is_colab():
        log.warning(COLAB_STATIC_WARNING)


def check_support(q: "QuantizationConfig", declarations: Mapping[str, Mapping[str, Sequence[str]]],
                  chosen: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse a mode (or weight type) that a chosen format does not declare, naming the formats of
    the registry that do take it.

    ``declarations`` maps every registered format to its ``quantization`` declaration (mode ->
    weight types); ``chosen`` maps the job's formats to their reasons for refusing modes (mode ->
    why, possibly empty).

    Example:
        >>> from exporter.config.schema import QuantizationConfig
        >>> declared = {"onnx": {"dynamic": ("qint8", "quint8")}, "plain": {}}
        >>> check_support(QuantizationConfig(mode="dynamic"), declared, {"plain": {}})
        Traceback (most recent call last):
        ...
        exporter.errors.ConfigError: quantization=dynamic is not available for format plain; formats that take it: ['onnx']
    """
    mode = mode_of(q)
    if mode == "none":
        return
    for name, reasons in chosen.items():
        offered = declarations.get(name, {})
        if mode not in offered:
            takers = [other for other, modes in declarations.items() if mode in modes]
            reason = reasons.get(mode) or ""
            raise ConfigError(f"quantization={mode} is not available for format {name}"
                              f"{f' ({reason})' if reason else ''}; formats that take it: {takers}")
        weight_type = weight_type_of(q)
        types = list(offered[mode])
        if types and weight_type != "auto" and weight_type not in types:
            raise ConfigError(f"quantization.weight_type={weight_type}: format {name} takes {types} for "
                              f"quantization={mode}; valid values: {[*types, 'auto']}")


@contextmanager
def quiet() -> Iterator[None]:
    """torch.ao.quantization and ONNX Runtime's quantizer warn on every call (deprecation notes,
    pre-processing advice on the root logger); the job's own report says what matters."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


__all__ = ["MODES", "WEIGHT_TYPES", "check_quantization", "check_support", "mode_of", "quiet", "weight_type_of"]
