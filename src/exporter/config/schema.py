"""Dataclass schemas for every config group (Hydra structured configs).

The formats' options are not here: each format declares its own options dataclass, and the
format registry (``formats/registry.py``) builds the ``format`` node from them.

Each YAML option under ``conf/`` extends its schema through its defaults list
(``- /schema/format/onnx@_here_``), so a misspelt key or a wrong type fails at
composition time with Hydra's own message (the ConfigStore entries: ``exporter.cli.config_store``).
The two checks Hydra cannot make, numeric bounds (field metadata ``{"min": 0.0}``) and keys added
with ``+`` that no schema knows, are in ``exporter.config.checks``. This module must stay free of
torch, onnx and onnxruntime: ``--help``, ``--cfg job`` and config errors import it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from .task_types import MODALITIES, SHIPPED, check_task_type

# omegaconf.MISSING, a value the config must give. Spelt here so that the job's process, which
# reads these dataclasses but no config, does not import omegaconf for it (exporter.process.child).
MISSING = "???"


def _is_config(obj: Any) -> bool:
    """Whether ``obj`` is a DictConfig, without importing omegaconf: only a process that imported it
    can hold one."""
    omegaconf = sys.modules.get("omegaconf")
    return omegaconf is not None and isinstance(obj, omegaconf.DictConfig)


def option_value(option: Any) -> Any:
    """The plain value of an option: structured configs hand enums over as Enum members, the
    Python API as strings; everything downstream compares and records the string."""
    return getattr(option, "value", option)


# The modalities and task types are tables (exporter.config.task_types). Modality is an enum made
# from its table, so Hydra refuses another value when it composes; task_spec.task_type is a plain
# string checked against the task-type table with the other values (check_values), so that a task
# type registered after start-up (a plug-in) composes too.
Modality = Enum("Modality", [(name, name) for name in MODALITIES], type=str, module=__name__)
# The task types shipped with the tool, as an enum, for code that wants one (the config takes any
# registered task type: exporter.config.task_types.task_types()).
TaskType = Enum("TaskType", [(name, name) for name in SHIPPED], type=str, module=__name__)


class QuantizationMode(str, Enum):
    none = "none"
    dynamic = "dynamic"
    static = "static"
    fp16 = "fp16"


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
    # A registered task type (exporter.config.task_types); checked by exporter.config.checks.
    task_type: str = field(default=MISSING, metadata={"check": check_task_type})
    input_schema: Dict[str, Any] = field(default_factory=dict)
    output_schema: Dict[str, Any] = field(default_factory=dict)
    # The outputs to export, by name: null (the task type's own: logits, or start_logits and
    # end_logits for question answering), all (every tensor the model returns, with derived names),
    # or a list of names (the others are left out on purpose, and metadata.json says so).
    outputs: Any = None
    # The model's inputs, declared here instead of by the task type (docs/models.md): a list of
    # {name, dtype, shape (one example, no batch axis), range or generator, dynamic_axes}.
    inputs: Optional[List[Dict[str, Any]]] = None
    # Axes of the outputs besides the batch, by output name: {logits: {1: sequence}}.
    output_axes: Any = None
    # A causal language model's key/value cache in the graph (docs/models.md): null (auto: a format
    # that can carry it gets it when the model has one), true (demanded: refused where it cannot
    # be), false (the graph without it).
    use_cache: Optional[bool] = None
    # Images of any height and width (docs/models.md): both dynamic axes in the formats that declare
    # axes, every format checked at a second size (half the example's); refused for a model that
    # takes one size only (a ViT without position-embedding interpolation).
    dynamic_image_size: bool = False


def selected_formats(formats: Any) -> list[str]:
    """Names of the formats a job builds, in build order, from a composed ``format`` node."""
    return [name for name, options in (formats or {}).items()
            if options is not None and options.get("enabled", True)]


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
    latency_runs: int = field(default=30, metadata={"min": 1})


@dataclass
class CalibrationConfig:
    """Samples for static quantization and for the fidelity report of every quantized artifact."""

    # random: drawn like the example input (a warning says it does not represent real inputs);
    # npz: arrays named after the model inputs, first axis = samples; dataset: a _target_ yielding
    # dicts of named tensors (or tensors, for single-input models).
    source: CalibrationSource = CalibrationSource.random
    num_samples: int = field(default=32, metadata={"min": 1})
    # Further samples drawn the same way, never used for calibration: the held-out fidelity check.
    heldout_samples: int = field(default=16, metadata={"min": 0})
    path: Optional[str] = None
    dataset: Any = None


@dataclass
class ValidateConfig:
    """How exported artifacts are compared with eager PyTorch."""

    enabled: bool = True
    # fp32 artifacts pass when |artifact - eager| <= atol + rtol * |eager| everywhere.
    atol: float = field(default=1e-4, metadata={"min": 0.0})
    rtol: float = field(default=1e-3, metadata={"min": 0.0})
    # Quantized artifacts are always measured; they are gated only where a bound is set here.
    quantized_atol: Optional[float] = field(default=None, metadata={"min": 0.0})
    quantized_rtol: Optional[float] = field(default=None, metadata={"min": 0.0})
    # Quantized artifacts: least share of argmax agreement with fp32 (top-1 for classifiers,
    # next token for language models) on calibration and held-out samples; null: report only.
    min_agreement: Optional[float] = field(default=None, metadata={"min": 0.0, "max": 1.0})
    # A second input with this batch size proves the dynamic batch axis (0 or 1: skip it).
    second_batch_size: int = field(default=2, metadata={"min": 0})
    # false: a miss is recorded and reported, the artifact is kept and the job still succeeds.
    strict: bool = True
    # true: NaN/inf in eager and artifact outputs are accepted if they match position for position;
    # false: any non-finite output fails the check.
    allow_nonfinite: bool = False
    # Encoder-decoder models: tokens decoded greedily through the exported parts and compared with
    # eager generate (docs/models.md).
    generation_steps: int = field(default=4, metadata={"min": 1, "max": 256})


@dataclass
class CacheConfig:
    """The shared build cache (docs/sweeps.md): finished builds by build key, in a folder that many
    machines may share. No option here enters the build key."""

    # The cache folder (local, or on a shared file system); null: no cache. EXPORTER_CACHE_DIR sets
    # it for every run (a CI job, a cluster's nodes).
    dir: Optional[str] = "${oc.env:EXPORTER_CACHE_DIR,null}"
    # Restore a build the cache holds instead of building it.
    read: bool = True
    # Store each build that ends ok.
    write: bool = True
    # Past this many bytes, the least recently used builds are evicted (null: no limit).
    max_bytes: Optional[int] = field(default=None, metadata={"min": 0})


@dataclass
class ExportConfig:
    """The whole export job (``conf/config.yaml`` composes onto this)."""

    model: Any = MISSING
    task_spec: TaskSpecConfig = MISSING
    # How the model is called: null (the shipped adapter of task_spec.task_type), or a ModelAdapter
    # to build: {_target_: pkg.MyAdapter, arg: value}.
    adapter: Any = None
    # Every format's options, by format name. Typed by the format registry, which knows the formats:
    # ``exporter.formats.export_schema()`` is this class with this field typed (what Hydra composes onto).
    format: Any = field(default_factory=dict)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    # Where artifacts, metadata.json and the config snapshot go (default: Hydra's job folder).
    export_dir: str = "${hydra:runtime.output_dir}"
    # Example inputs are drawn from this seed, so reruns check the same numbers.
    # 0 to 2**32 - 1: derived seeds (seed + 1, calibration seeds) must still fit torch's 64-bit generator.
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})
    # A state dict (.pt/.pth/.bin via torch.load(weights_only=True), or .safetensors) to load.
    checkpoint: Optional[str] = None
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    # Another build of the same folder holds its lock: wait for it (true) or fail at once (false, exit 75).
    wait: bool = True
    # Rebuild even when the folder already holds a build with the same build key (docs/sweeps.md).
    force: bool = False
    # The shared build cache: restore a build made elsewhere from the same inputs (docs/sweeps.md).
    cache: CacheConfig = field(default_factory=CacheConfig)
