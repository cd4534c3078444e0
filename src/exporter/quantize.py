"""Quantization steps shared by the format exporters, and the guardrails around them."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ConfigError, ExportError
from .schema import option_value

if TYPE_CHECKING:
    import torch

    from .schema import QuantizationConfig

log = logging.getLogger("exporter")

COLAB_STATIC_WARNING = "Static quantization may fail on Colab GPU, use dynamic instead"
MODES = ("none", "dynamic", "static", "fp16")
# Quantizing every operator type quantizes causal masks too (infinite scales): restrict by default.
STATIC_DEFAULT_OP_TYPES = ["MatMul", "Gemm", "Conv"]
# Operators that carry integer arithmetic in a quantized ONNX graph.
ONNX_QUANTIZED_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv",
                      "QGemm", "QuantizeLinear", "DynamicQuantizeLinear", "QAttention"}
TORCH_DYNAMIC_RECIPE = "torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)"


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
    if int(q.latency_runs) < 1:
        raise ConfigError(f"quantization.latency_runs: must be at least 1, got {q.latency_runs}")


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


# ---------------------------------------------------------------- torch (TorchScript, state dict)

def check_torch(q: "QuantizationConfig", format_name: str) -> None:
    """What torch's eager/FX quantization can do for ``format_name``."""
    mode = mode_of(q)
    if mode == "fp16":
        raise ConfigError(
            f"quantization=fp16 is not available for format {format_name}; use format=onnx, which keeps "
            "float32 inputs and outputs around a float16 graph"
        )
    if mode == "dynamic" and weight_type_of(q) not in ("qint8", "auto"):
        raise ConfigError(
            f"quantization.weight_type={weight_type_of(q)}: torch dynamic quantization of Linear layers "
            f"(format {format_name}) takes only qint8; valid values: ['qint8', 'auto'] (ONNX also takes quint8)"
        )


def tied_linears(model: "torch.nn.Module") -> dict[str, str]:
    """Linear layers whose weight is shared with another module (e.g. an LM head tied to the
    embedding), mapped to the module they share it with."""
    import torch

    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter):
            owners.setdefault(id(weight), []).append(name)
    tied = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            others = [o for o in owners.get(id(module.weight), []) if o != name]
            if others:
                tied[name] = others[0]
    return tied


def _linearize_conv1d(model: "torch.nn.Module") -> int:
    """Replace Hugging Face ``Conv1D`` layers (GPT-2's Linear with a transposed weight) by
    ``nn.Linear`` in place, so torch's dynamic quantization sees them. Returns how many."""
    import torch

    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child).__name__ == "Conv1D" and type(child).__module__.startswith("transformers"):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out, bias=child.bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, child_name, linear)
                count += 1
    return count


def torch_dynamic_quantize(model: "torch.nn.Module", q: "QuantizationConfig") -> tuple["torch.nn.Module", dict]:
    """A copy of ``model`` with its Linear layers dynamically quantized (qint8 weights).

    A Linear whose weight is tied to another module stays fp32: quantizing it would add an int8
    copy beside the fp32 weight the other module still holds, and the artifact would grow.
    Hugging Face ``Conv1D`` layers are turned into Linear layers first. With nothing to quantize,
    the model itself is returned (and the report warns): a copy would only add bytes.
    """
    import torch

    check_torch(q, "torch")
    work = copy.deepcopy(model)
    converted = _linearize_conv1d(work)
    tied = tied_linears(work)
    linears = [n for n, m in work.named_modules() if isinstance(m, torch.nn.Linear) and n not in tied]
    if not linears:
        return model, {"recipe": "none: no Linear layer to quantize", "quantized_layers": 0,
                       "kept_fp32": {name: f"weight tied to {other}" for name, other in tied.items()}}
    spec = {name: torch.ao.quantization.default_dynamic_qconfig for name in linears}
    with quiet():
        quantized = torch.ao.quantization.quantize_dynamic(work, spec, dtype=torch.qint8)
    recipe = TORCH_DYNAMIC_RECIPE if not tied else (
        "torch.ao.quantization.quantize_dynamic(model, {name: torch.ao.quantization.default_dynamic_qconfig "
        f"for name in {linears!r}}}, dtype=torch.qint8)"
    )
    report = {"recipe": recipe, "quantized_layers": len(linears),
              "kept_fp32": {name: f"weight tied to {other}" for name, other in tied.items()}}
    if converted:
        report["hf_conv1d_to_linear"] = converted
    return quantized, report


def torch_static_quantize(model: "torch.nn.Module", example: "dict[str, torch.Tensor]", samples: list,
                          format_name: str) -> tuple["torch.nn.Module", dict]:
    """FX graph-mode static quantization calibrated on ``samples`` (x86 backend)."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with quiet():
        try:
            prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                                  example_inputs=tuple(example.values()))
        except Exception as exc:  # noqa: BLE001 - symbolic tracing fails in many ways
            raise ExportError(
                f"{format_name}: static quantization needs a model that torch.fx can trace symbolically, and "
                f"{type(model).__name__} cannot be ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "use format=onnx, which quantizes the exported graph, or quantization=dynamic"
            ) from None
        with torch.no_grad():
            for sample in samples:
                prepared(*sample.values())
        quantized = convert_fx(prepared)
    layers = sum(1 for m in quantized.modules() if type(m).__module__.startswith("torch.ao.nn.quantized"))
    return quantized, {"recipe": "torch.ao.quantization.quantize_fx (x86 qconfig), calibrated",
                       "quantized_layers": layers}


# ---------------------------------------------------------------- ONNX Runtime

def onnx_dynamic_quantize(source: Path, target: Path, q: "QuantizationConfig") -> dict:
    """ONNX Runtime's quantize_dynamic on an exported fp32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[weight_type_of(q)]
    with quiet():
        quantize_dynamic(source, target, weight_type=weight_type, per_channel=bool(q.per_channel),
                         op_types_to_quantize=list(q.op_types) if q.op_types else None)
    return {"recipe": f"onnxruntime.quantization.quantize_dynamic(weight_type=QuantType.{weight_type.name})",
            "quantized_layers": count_onnx_quantized(target)}


class _Reader:
    """ONNX Runtime's CalibrationDataReader over our samples."""

    def __init__(self, samples: list, renames: dict[str, str], graph_inputs: list[str]):
        self._feeds = iter([{renames.get(k, k): v.numpy() for k, v in s.items() if renames.get(k, k) in graph_inputs}
                            for s in samples])

    def get_next(self):
        return next(self._feeds, None)


def onnx_static_quantize(source: Path, target: Path, q: "QuantizationConfig", samples: list,
                         renames: dict[str, str]) -> dict:
    """Pre-process, then ONNX Runtime's quantize_static calibrated on ``samples``; refuses
    non-finite scales."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    details: dict[str, Any] = {}
    prepared = source.with_name("pre-" + source.name)
    with quiet():
        try:
            quant_pre_process(str(source), str(prepared))
            details["preprocessed"] = True
        except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            details["preprocessed"] = f"without symbolic shape inference ({type(exc).__name__})"
        graph_inputs = [i.name for i in onnx.load(str(prepared), load_external_data=False).graph.input]
        types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
        op_types = list(q.op_types) if q.op_types else STATIC_DEFAULT_OP_TYPES
        quantize_static(
            str(prepared), str(target), _Reader(samples, renames, graph_inputs),
            quant_format=QuantFormat.QDQ if option_value(q.quant_format) == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=op_types, per_channel=bool(q.per_channel),
            weight_type=types[weight_type_of(q)], activation_type=types[option_value(q.activation_type)],
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[option_value(q.calibration_method)],
        )
    prepared.unlink(missing_ok=True)
    bad = non_finite_scales(target)
    if bad:
        raise ExportError(
            f"onnx: static quantization produced non-finite or zero scales for {bad[:5]}"
            f"{' ...' if len(bad) > 5 else ''}: those tensors cannot be represented in int8 (often masks "
            f"holding -inf); restrict quantization.op_types (now {op_types})"
        )
    details.update(recipe=f"onnxruntime.quantization.quantize_static({option_value(q.quant_format)}, {option_value(q.calibration_method)})",
                   op_types=op_types, quantized_layers=count_onnx_quantized(target))
    return details


def non_finite_scales(path: Path) -> list[str]:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    bad = []
    for init in model.graph.initializer:
        if init.name.endswith("_scale"):
            values = numpy_helper.to_array(init).astype(np.float64)
            if not np.all(np.isfinite(values)) or np.any(values == 0):
                bad.append(init.name)
    return bad


def onnx_fp16(source: Path, target: Path) -> dict:
    """float16 weights and activations, float32 inputs and outputs (``keep_io_types``)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with quiet():
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    converted = sum(1 for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16)
    return {"recipe": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)",
            "quantized_layers": converted}


def count_onnx_quantized(path: Path) -> int:
    import onnx

    return sum(1 for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in ONNX_QUANTIZED_OPS)
