"""ONNX Runtime's quantizers on an exported fp32 graph: dynamic, static (calibrated) and float16.

Each reads the fp32 file the job already exported and writes the quantized one: the model is
exported once, however many weight types are tried.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config.schema import option_value
from ...errors import ExportError
from ...files import working_directory
from ...quantization import quiet, weight_type_of
from .external import data_file, into_one_data_file, save

if TYPE_CHECKING:
    from ...config.schema import QuantizationConfig

# Quantizing every operator type quantizes causal masks too (infinite scales): restrict by default.
STATIC_DEFAULT_OP_TYPES = ["MatMul", "Gemm", "Conv"]
# Operators that carry integer arithmetic in a quantized ONNX graph.
ONNX_QUANTIZED_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv",
                      "QGemm", "QuantizeLinear", "DynamicQuantizeLinear", "QAttention"}


def onnx_dynamic_quantize(source: Path, target: Path, q: "QuantizationConfig") -> dict:
    """ONNX Runtime's quantize_dynamic on an exported fp32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[weight_type_of(q)]
    external = _external(source)
    with quiet():
        quantize_dynamic(source, target, weight_type=weight_type, per_channel=bool(q.per_channel),
                         op_types_to_quantize=list(q.op_types) if q.op_types else None,
                         use_external_data_format=external)
    if external:
        into_one_data_file(target)
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
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    details: dict[str, Any] = {}
    prepared = source.with_name("pre-" + source.name)
    external = _external(source)
    saving = dict(save_as_external_data=external, all_tensors_to_one_file=True,
                  external_data_location=prepared.name + ".data") if external else {}
    with quiet():
        # Its symbolic shape inference writes into the current directory: the build's temporary folder.
        with working_directory(Path(tempfile.gettempdir())):
            try:
                quant_pre_process(str(source), str(prepared), **saving)
                details["preprocessed"] = True
            except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True, **saving)
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
            use_external_data_format=external,
        )
    prepared.unlink(missing_ok=True)
    prepared.with_name(prepared.name + ".data").unlink(missing_ok=True)
    if external:
        into_one_data_file(target)
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

    external = _external(source)
    with quiet():
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    save(model, target, external)
    converted = sum(1 for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16)
    return {"recipe": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)",
            "quantized_layers": converted}


def _external(source: Path) -> bool:
    """Whether the fp32 graph keeps its weights in a data file (then so does the quantized one):
    the job leaves an ONNX artifact's weights in ``<file>.data`` or inside the file, never elsewhere."""
    return data_file(source).exists()


def count_onnx_quantized(path: Path) -> int:
    import onnx

    return sum(1 for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in ONNX_QUANTIZED_OPS)
