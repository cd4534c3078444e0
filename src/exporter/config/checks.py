"""The checks of option values Hydra's composition cannot make, shared by both doors: numeric bounds
and values checked against a table (``task_spec.task_type``), declared once as field metadata
(``{"min": 0.0}``, ``{"check": check_task_type}``) and checked by ``check_values``, and keys added
with ``+`` that no schema knows (``check_known_keys``). Free of torch, onnx and onnxruntime, and of
omegaconf until a composed config is handed in.

    >>> from exporter.config.schema import ValidateConfig
    >>> check_values(ValidateConfig(atol=-1.0), "validate.")
    Traceback (most recent call last):
    ...
    exporter.errors.ConfigError: validate.atol: -1.0 is out of range; valid values: >= 0
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional

from ..errors import ConfigError
from .schema import _is_config, option_value

if TYPE_CHECKING:
    from omegaconf import DictConfig


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
    """The message for one value outside its field's bounds or refused by its field's own check
    (metadata ``{"check": function(value, key)}`` raising ValueError, e.g. a task type against the
    task-type table), or None (None itself means unset: no bound applies)."""
    if value is not None and "check" in metadata:
        try:
            metadata["check"](option_value(value), key)
        except ValueError as exc:
            return str(exc)
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
    """Check every numeric option of a schema instance against the bounds in its field metadata, and
    every option whose field declares its own check (``task_spec.task_type``: the task-type table).

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


def _unknown_in(cfg: Any, schema: type) -> list[tuple[str, type]]:
    """``_unknown`` over a whole composed config (DictConfig or plain dict), from the job's schema down
    (``ExportConfig`` with its ``format`` node typed by the format registry: ``formats.export_schema()``)."""
    if _is_config(cfg):
        from omegaconf import OmegaConf

        # Unresolved: only keys are compared, and ${hydra:...} cannot resolve outside a job.
        cfg = OmegaConf.to_container(cfg, resolve=False)
    # Hydra's own node (compose(..., return_hydra_config=True)) is Hydra's to check.
    return list(_unknown({k: v for k, v in cfg.items() if k != "hydra"}, schema, ""))


def unknown_keys(cfg: DictConfig, schema: type) -> list[str]:
    """Dotted keys of a composed config that no schema declares, e.g. ``["validate.atoll"]``.

    Hydra refuses a misspelt key in ``key=value``, but ``+key=value`` adds it to a struct config
    unchecked; this compares every node with the fields of its dataclass schema instead.
    """
    return [key for key, _ in _unknown_in(cfg, schema)]


def check_known_keys(cfg: DictConfig, schema: type) -> None:
    """Raise ConfigError naming every unknown key and the valid keys beside it, joined by " | ":
    ``validate.atoll: unknown key; valid keys: enabled, atol, rtol, ...``."""
    problems = [f"{key}: unknown key; valid keys: {', '.join(spec.name for spec in fields(where))}"
                for key, where in _unknown_in(cfg, schema)]
    if problems:
        raise ConfigError(" | ".join(problems))


def check_config(cfg: DictConfig, schema: type) -> None:
    """The checks Hydra's composition cannot make, for the CLI to run on the composed config before
    building anything: unknown keys first (a typo's value is not worth checking), then bounds."""
    check_known_keys(cfg, schema)
    check_values(cfg)
