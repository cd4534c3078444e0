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


class Serialization(str, Enum):
    torch = "torch"
    safetensors = "safetensors"


class WeightType(str, Enum):
    qint8 = "qint8"
    quint8 = "quint8"


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
    # Integer type of quantized weights (ONNX Runtime's QInt8/QUInt8, torch's qint8/quint8).
    weight_type: WeightType = WeightType.qint8
    # ONNX: quantize each output channel's weights with its own scale.
    per_channel: bool = False


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
    for name, node in FORMAT_SCHEMAS.items():
        cs.store(group="schema/format", name=name, node=node)
