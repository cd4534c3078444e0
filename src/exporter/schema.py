"""Dataclass schemas for every config group (Hydra structured configs).

Each YAML option under ``conf/`` extends its schema through its defaults list
(``- /schema/format/onnx@_here_``), so a misspelt key or a wrong type fails at
composition time with Hydra's own message. This module must stay free of torch,
onnx and onnxruntime: ``--help``, ``--cfg job`` and config errors import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


def option_value(option: Any) -> Any:
    """The plain value of an option: structured configs hand enums over as Enum members, the
    Python API as strings; everything downstream compares and records the string."""
    return getattr(option, "value", option)


class Modality(str, Enum):
    text = "text"
    vision = "vision"


class TaskType(str, Enum):
    vision_classification = "vision_classification"
    language_modeling = "language_modeling"
    text_classification = "text_classification"


class OnnxBackend(str, Enum):
    auto = "auto"
    legacy = "legacy"
    dynamo = "dynamo"


class QuantizationMode(str, Enum):
    none = "none"
    dynamic = "dynamic"
    static = "static"
    fp16 = "fp16"


class Serialization(str, Enum):
    torch = "torch"
    safetensors = "safetensors"


class WeightType(str, Enum):
    auto = "auto"
    qint8 = "qint8"
    quint8 = "quint8"


class ActivationType(str, Enum):
    qint8 = "qint8"
    quint8 = "quint8"


class QuantFormat(str, Enum):
    qdq = "qdq"
    qoperator = "qoperator"


class CalibrationMethod(str, Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class CalibrationSource(str, Enum):
    random = "random"
    npz = "npz"
    dataset = "dataset"


@dataclass
class TaskSpecConfig:
    """What the model does and what its inputs and outputs look like."""

    task_name: str = MISSING
    modality: Modality = MISSING
    task_type: TaskType = MISSING
    input_schema: Dict[str, Any] = field(default_factory=dict)
    output_schema: Dict[str, Any] = field(default_factory=dict)


@dataclass
class OnnxFormatConfig:
    opset: int = 14
    # auto: the legacy TorchScript-based exporter (fast, byte-deterministic) below opset 18;
    # the dynamo exporter from 18 on, falling back to legacy if dynamo fails.
    backend: OnnxBackend = OnnxBackend.auto
    dynamic_batch: bool = True
    # Text models: leave the sequence axis symbolic too (any length up to the model's maximum).
    dynamic_sequence: bool = True
    # null: the adapter's names (pixel_values / input_ids -> logits).
    input_names: Optional[List[str]] = None
    output_names: Optional[List[str]] = None
    # Fold constants at export time (legacy exporter).
    constant_folding: bool = True


@dataclass
class TorchScriptFormatConfig:
    # torch.jit.trace's strict mode: refuse mutable containers (lists, dicts) as outputs.
    strict: bool = True
    # torch.jit.freeze before saving: weights and attributes become constants (faster load and run).
    # (optimize_for_inference is not offered: its modules cannot be saved in torch 2.13.)
    freeze: bool = False


@dataclass
class PytorchFormatConfig:
    # torch: torch.save of the state dict (model.pth); safetensors: model.safetensors.
    serialization: Serialization = Serialization.torch


@dataclass
class FormatsConfig:
    """One entry per selected format (``format=[onnx,torchscript]``); unselected stay null."""

    onnx: Optional[OnnxFormatConfig] = None
    torchscript: Optional[TorchScriptFormatConfig] = None
    pytorch: Optional[PytorchFormatConfig] = None


@dataclass
class QuantizationConfig:
    mode: QuantizationMode = QuantizationMode.none
    # Integer type of quantized weights. auto: build each type the format takes, time them in the
    # same run, keep the fastest that passes the gates, and record why.
    weight_type: WeightType = WeightType.qint8
    # Static: integer type of activations.
    activation_type: ActivationType = ActivationType.quint8
    # ONNX: quantize each output channel's weights with its own scale.
    per_channel: bool = False
    # ONNX static: QDQ (QuantizeLinear/DequantizeLinear pairs) or QOperator (QLinearConv, ...).
    quant_format: QuantFormat = QuantFormat.qdq
    # ONNX: operator types to quantize. null: MatMul, Gemm, Conv for static (quantizing every
    # operator also quantizes causal masks: infinite scales); ONNX Runtime's own set for dynamic.
    op_types: Optional[List[str]] = None
    # ONNX static: how activation ranges are found from the calibration data.
    calibration_method: CalibrationMethod = CalibrationMethod.minmax
    # Timed runs per artifact for the latency report (median), after warm-up.
    latency_runs: int = 30


@dataclass
class CalibrationConfig:
    """Samples for static quantization and for the fidelity report of every quantized artifact."""

    # random: drawn like the example input (a warning says it does not represent real inputs);
    # npz: arrays named after the model inputs, first axis = samples; dataset: a _target_ yielding
    # dicts of named tensors (or tensors, for single-input models).
    source: CalibrationSource = CalibrationSource.random
    num_samples: int = 32
    # Further samples drawn the same way, never used for calibration: the held-out fidelity check.
    heldout_samples: int = 16
    path: Optional[str] = None
    dataset: Any = None


@dataclass
class ValidateConfig:
    """How exported artifacts are compared with eager PyTorch."""

    enabled: bool = True
    # fp32 artifacts pass when |artifact - eager| <= atol + rtol * |eager| everywhere.
    atol: float = 1e-4
    rtol: float = 1e-3
    # Quantized artifacts are always measured; they are gated only where a bound is set here.
    quantized_atol: Optional[float] = None
    quantized_rtol: Optional[float] = None
    # Quantized artifacts: least share of argmax agreement with fp32 (top-1 for classifiers,
    # next token for language models) on calibration and held-out samples; null: report only.
    min_agreement: Optional[float] = None
    # A second input with this batch size proves the dynamic batch axis (0 or 1: skip it).
    second_batch_size: int = 2
    # false: a miss is recorded and reported, the artifact is kept and the job still succeeds.
    strict: bool = True


@dataclass
class ExportConfig:
    """The whole export job (``conf/config.yaml`` composes onto this)."""

    model: Any = MISSING
    task_spec: TaskSpecConfig = MISSING
    format: FormatsConfig = field(default_factory=FormatsConfig)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    # Where artifacts, metadata.json and the config snapshot go (default: Hydra's job folder).
    export_dir: str = "${hydra:runtime.output_dir}"
    # Example inputs are drawn from this seed, so reruns check the same numbers.
    seed: int = 0
    # A state dict (.pt/.pth/.bin via torch.load(weights_only=True), or .safetensors) to load.
    checkpoint: Optional[str] = None
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


FORMAT_SCHEMAS = {
    "onnx": OnnxFormatConfig,
    "torchscript": TorchScriptFormatConfig,
    "pytorch": PytorchFormatConfig,
}


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore under ``schema/...`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(group="schema/task_spec", name="task_spec", node=TaskSpecConfig)
    cs.store(group="schema/quantization", name="quantization", node=QuantizationConfig)
    cs.store(group="schema/calibration", name="calibration", node=CalibrationConfig)
    for name, node in FORMAT_SCHEMAS.items():
        cs.store(group="schema/format", name=name, node=node)
