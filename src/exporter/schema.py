"""Dataclass schemas for every config group (Hydra structured configs).

The formats' options are not here: each format declares its own options dataclass, and the
format registry (``formats/registry.py``) builds the ``format`` node from them.

Each YAML option under ``conf/`` extends its schema through its defaults list
(``- /schema/format/onnx@_here_``), so a misspelt key or a wrong type fails at
composition time with Hydra's own message. Two checks Hydra cannot make live here too,
shared by both doors: numeric bounds, declared once as field metadata (``{"min": 0.0}``)
and checked by ``check_values``, and keys added with ``+`` that no schema knows
(``check_known_keys``). This module must stay free of torch, onnx and onnxruntime:
``--help``, ``--cfg job`` and config errors import it.
"""

from __future__ import annotations

import functools
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from .errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

# omegaconf.MISSING, a value the config must give. Spelt here so that the job's process, which
# reads these dataclasses but no config, does not import omegaconf for it (exporter.job_process).
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


class Modality(str, Enum):
    text = "text"
    vision = "vision"


class TaskType(str, Enum):
    vision_classification = "vision_classification"
    language_modeling = "language_modeling"
    text_classification = "text_classification"
    question_answering = "question_answering"
    token_classification = "token_classification"
    feature_extraction = "feature_extraction"
    object_detection = "object_detection"
    seq2seq_lm = "seq2seq_lm"


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
    task_type: TaskType = MISSING
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


@functools.lru_cache(maxsize=None)
def _field_types(schema: type) -> Dict[str, Any]:
    """Field name -> declared type (annotations are strings here: ``from __future__ import annotations``)."""
    return typing.get_type_hints(schema)


def _without_none(declared: Any) -> Any:
    """``Optional[X]`` -> ``X``; other types unchanged."""
    if typing.get_origin(declared) is typing.Union:
        members = [arg for arg in typing.get_args(declared) if arg is not type(None)]
        return members[0] if len(members) == 1 else Any
    return declared


def _schema_of(declared: Any) -> Optional[type]:
    """The dataclass behind a declared type (``Optional[OnnxFormatConfig]`` -> ``OnnxFormatConfig``), else None."""
    declared = _without_none(declared)
    return declared if isinstance(declared, type) and is_dataclass(declared) else None


def _element_schema(declared: Any) -> Optional[type]:
    """The dataclass of a list field's elements (``Optional[List[X]]`` -> ``X``), else None."""
    declared = _without_none(declared)
    return _schema_of(typing.get_args(declared)[0]) if typing.get_origin(declared) is list else None


def _number(bound: float) -> str:
    """A bound as people write it: ``0`` rather than ``0.0``."""
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def valid_range(metadata: Mapping[str, Any]) -> str:
    """The allowed range of a bounded field as messages and docs say it: ``>= 0``, ``0 to 1``."""
    low, high = metadata.get("min"), metadata.get("max")
    if low is not None and high is not None:
        return f"{_number(low)} to {_number(high)}"
    return f">= {_number(low)}" if low is not None else f"<= {_number(high)}"


def _bound_problem(key: str, value: Any, metadata: Mapping[str, Any]) -> Optional[str]:
    """The message for one value outside its field's bounds, or None (None itself means unset: no bound applies)."""
    if value is None or ("min" not in metadata and "max" not in metadata):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key}: {value!r} is not a number; valid values: {valid_range(metadata)}"
    # Written as "not within" so that NaN, which compares false with everything, is out of range too;
    # infinity is no bound either (validate.atol=inf would pass anything).
    low, high = metadata.get("min"), metadata.get("max")
    if not ((low is None or value >= low) and (high is None or value <= high)) or value in (float("inf"), float("-inf")):
        return f"{key}: {value!r} is out of range; valid values: {valid_range(metadata)}"
    return None


def _value_problems(obj: Any, schema: type, prefix: str) -> Iterator[str]:
    """Every out-of-range value in a schema instance (dataclass or structured DictConfig).

    Only bounded and schema-typed fields are read, so interpolations elsewhere (``export_dir``) are
    never resolved and free-form nodes (``model``) never entered.
    """
    types = _field_types(schema)
    for spec in fields(schema):
        nested, element = _schema_of(types[spec.name]), _element_schema(types[spec.name])
        if not (nested or element or spec.metadata):
            continue
        if _is_config(obj) and _missing(obj, spec.name):
            continue  # ``???``: the job names the key when it reads it
        key, value = f"{prefix}{spec.name}", getattr(obj, spec.name)
        if isinstance(value, Sequence) and not isinstance(value, str):
            for index, item in enumerate(value):
                yield from _item_problems(f"{key}[{index}]", item, element, spec.metadata)
        else:
            yield from _item_problems(key, value, nested, spec.metadata)


def _item_problems(key: str, value: Any, schema: Optional[type], metadata: Mapping[str, Any]) -> Iterator[str]:
    """A value's problems: walked when its field is schema-typed, else checked against the field's bounds."""
    if schema is not None:
        if is_dataclass(value) or _is_config(value):  # not None (an unselected format) or ``???``
            yield from _value_problems(value, schema, f"{key}.")
        return
    problem = _bound_problem(key, value, metadata)
    if problem:
        yield problem


def check_values(obj: Any, prefix: str = "") -> None:
    """Check every numeric option of a schema instance against the bounds in its field metadata.

    ``obj`` is a schema dataclass (``ValidateConfig(...)``) or a structured DictConfig composed onto
    one; nested schemas, Optional fields and lists are walked. ``prefix`` is where ``obj`` sits in the
    whole config (``"validate."``), so a message names the key as the command line spells it:
    ``validate.atol: -1.0 is out of range; valid values: >= 0``. Raises ConfigError listing every
    value out of range, joined by " | " (the command line prints one line).
    """
    schema = type(obj) if is_dataclass(obj) else _config_type(obj)
    if not (isinstance(schema, type) and is_dataclass(schema)):
        raise TypeError(f"check_values: expected a schema dataclass or structured config, got {type(obj).__name__}")
    problems = list(_value_problems(obj, schema, prefix))
    if problems:
        raise ConfigError(" | ".join(problems))


def _config_type(obj: Any) -> Any:
    if not _is_config(obj):
        return type(obj)
    from omegaconf import OmegaConf

    return OmegaConf.get_type(obj)


def _missing(cfg: Any, key: str) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.is_missing(cfg, key)


def check_field(schema: type, name: str, value: Any, key: str) -> None:
    """Check one value against a field's bounds outside its dataclass (the Python API's ``seed=``)."""
    spec = next(spec for spec in fields(schema) if spec.name == name)
    problem = _bound_problem(key, value, spec.metadata)
    if problem:
        raise ConfigError(problem)


def _unknown(data: Mapping[str, Any], schema: type, prefix: str) -> Iterator[tuple[str, type]]:
    """(dotted key, schema it is not in) for every key of ``data`` that ``schema`` does not declare."""
    types = _field_types(schema)
    for key, value in data.items():
        if key not in types:
            yield f"{prefix}{key}", schema
            continue
        nested, element = _schema_of(types[key]), _element_schema(types[key])
        # A field typed Any or Dict (model, input_schema, calibration.dataset) is free-form: not entered.
        if nested and isinstance(value, Mapping):
            yield from _unknown(value, nested, f"{prefix}{key}.")
        elif element and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _unknown(item, element, f"{prefix}{key}[{index}].")


def _unknown_in(cfg: Any) -> list[tuple[str, type]]:
    """``_unknown`` over a whole composed config (DictConfig or plain dict), from the job's schema down
    (``ExportConfig`` with its ``format`` node typed by the format registry)."""
    from .formats.registry import export_schema

    if _is_config(cfg):
        from omegaconf import OmegaConf

        # Unresolved: only keys are compared, and ${hydra:...} cannot resolve outside a job.
        cfg = OmegaConf.to_container(cfg, resolve=False)
    # Hydra's own node (compose(..., return_hydra_config=True)) is Hydra's to check.
    return list(_unknown({k: v for k, v in cfg.items() if k != "hydra"}, export_schema(), ""))


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys of a composed config that no schema declares, e.g. ``["validate.atoll"]``.

    Hydra refuses a misspelt key in ``key=value``, but ``+key=value`` adds it to a struct config
    unchecked; this compares every node with the fields of its dataclass schema instead.
    """
    return [key for key, _ in _unknown_in(cfg)]


def check_known_keys(cfg: DictConfig) -> None:
    """Raise ConfigError naming every unknown key and the valid keys beside it, joined by " | ":
    ``validate.atoll: unknown key; valid keys: enabled, atol, rtol, ...``."""
    problems = [f"{key}: unknown key; valid keys: {', '.join(spec.name for spec in fields(schema))}"
                for key, schema in _unknown_in(cfg)]
    if problems:
        raise ConfigError(" | ".join(problems))


def check_config(cfg: DictConfig) -> None:
    """The checks Hydra's composition cannot make, for the CLI to run on the composed config before
    building anything: unknown keys first (a typo's value is not worth checking), then bounds."""
    check_known_keys(cfg)
    check_values(cfg)


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore under ``schema/...`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from .formats.registry import export_schema, register_configs as register_format_configs

    cs = ConfigStore.instance()
    cs.store(name="export_schema", node=export_schema())
    cs.store(group="schema/task_spec", name="task_spec", node=TaskSpecConfig)
    cs.store(group="schema/quantization", name="quantization", node=QuantizationConfig)
    cs.store(group="schema/calibration", name="calibration", node=CalibrationConfig)
    register_format_configs()
