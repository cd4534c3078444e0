"""TaskSpec: what a model does and the shape of its inputs and outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Union

from ..errors import ConfigError
from . import task_types
from .schema import option_value


def __getattr__(name: str) -> Any:
    """``MODALITIES`` and ``TASK_TYPES`` (task type -> modality), read from the tables of
    ``exporter.config.task_types``, where they live now."""
    if name == "MODALITIES":
        return tuple(task_types.MODALITIES)
    if name == "TASK_TYPES":
        return {entry.name: entry.modality for entry in task_types.task_types().values()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Task types whose models have a key/value cache the tool exports (task_spec.use_cache).
CACHED_TASK_TYPES = ("language_modeling", "seq2seq_lm")

@dataclass
class TaskSpec:
    """Describes an export target independently of any one architecture.

    Example:
        >>> spec = TaskSpec(task_name="cifar", modality="vision", task_type="vision_classification",
        ...                 input_schema={"image_size": [3, 32, 32]}, output_schema={"num_classes": 10})
        >>> spec.modality
        'vision'
    """

    task_name: str
    modality: str
    task_type: str
    input_schema: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] = field(default_factory=dict)
    # The outputs to export, by name: None (the task type's own, e.g. ``logits``), ``"all"`` (every
    # tensor the model returns) or a list of names (the others left out on purpose).
    outputs: Optional[Union[str, list[str]]] = None
    # The model's inputs, declared instead of drawn by the task type's adapter: a list of
    # {name, dtype, shape, range | generator, dynamic_axes} (``config/input_specs.py``).
    inputs: Optional[list[dict[str, Any]]] = None
    # Axes of the outputs besides the batch, by output name: {logits: {1: sequence}}.
    output_axes: Optional[dict[str, dict[Any, str]]] = None
    # A causal language model's key/value cache: None (auto), True (demanded), False (without).
    use_cache: Optional[bool] = None
    # Images of any height and width (modality vision): both exported as dynamic axes and checked at
    # a second size, half the example's; refused for a model that takes one size only.
    dynamic_image_size: bool = False

    def __post_init__(self) -> None:
        # Enums from structured configs arrive as Enum members; keep plain strings.
        self.modality = option_value(self.modality)
        self.task_type = option_value(self.task_type)
        for name in ("task_name", "modality", "task_type"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"task_spec.{name}: expected a string, got {type(getattr(self, name)).__name__} "
                                 f"{getattr(self, name)!r}")
        for name in ("input_schema", "output_schema"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"task_spec.{name}: expected a mapping of names to values (e.g. "
                                 f"{{'image_size': [3, 32, 32]}}), got {type(value).__name__} {value!r}")
        self.input_schema = dict(self.input_schema or {})
        self.output_schema = dict(self.output_schema or {})
        if self.outputs is not None and not isinstance(self.outputs, str):
            self.outputs = [str(name) for name in self.outputs]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "TaskSpec":
        """Build from a dict or a resolved OmegaConf node (extra keys are refused)."""
        known = {"task_name", "modality", "task_type", "input_schema", "output_schema", "outputs", "inputs",
                 "output_axes", "use_cache", "dynamic_image_size"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"task_spec: unknown field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**{k: data[k] for k in known if k in data})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Raise ValueError naming the field and the valid values when the spec is inconsistent."""
        task_types.check_modality(self.modality)
        entry = task_types.check_task_type(self.task_type)
        if entry.modality != self.modality:
            raise ValueError(
                f"task_spec.task_type: {self.task_type!r} needs modality {entry.modality!r}, "
                f"but task_spec.modality is {self.modality!r}"
            )
        if self.use_cache is not None and not isinstance(self.use_cache, bool):
            raise ValueError(f"task_spec.use_cache: {self.use_cache!r} is not a boolean; valid values: null (auto), "
                             "true, false")
        if self.use_cache and self.task_type not in CACHED_TASK_TYPES:
            raise ValueError(f"task_spec.use_cache=true: task type {self.task_type!r} has no key/value cache this "
                             f"tool exports (only {' and '.join(CACHED_TASK_TYPES)} do); set task_spec.use_cache=null "
                             "or false")
        if not isinstance(self.dynamic_image_size, bool):
            raise ValueError(f"task_spec.dynamic_image_size: {self.dynamic_image_size!r} is not a boolean; valid "
                             "values: true, false")
        if self.dynamic_image_size and self.modality != "vision":
            raise ValueError(f"task_spec.dynamic_image_size=true: task type {self.task_type!r} takes {self.modality} "
                             "inputs, not images; leave task_spec.dynamic_image_size=false")
        if self.inputs is not None or self.output_axes is not None:
            from .input_specs import parse_inputs, parse_output_axes

            if self.inputs is not None:
                parse_inputs(self.inputs)
            parse_output_axes(self.output_axes)
