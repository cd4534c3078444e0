"""The adapters by task type: each shipped adapter registers itself for its task type
(``@register_adapter``), and ``adapter_for_task`` finds the one a task spec needs.

The shipped adapters register when ``exporter.adapters`` is imported (its ``__init__`` imports
``tasks`` and ``seq2seq``), which happens before any of its modules is used.
"""

from __future__ import annotations

from typing import Callable

from ..config.input_specs import parse_inputs, parse_output_axes
from ..config.task_spec import TaskSpec
from ..config.task_types import is_registered, task_types
from .base import ModelAdapter
from .declared import DeclaredInputsAdapter

# The adapters, by task type (one each): ``adapter_for_task`` looks them up here.
ADAPTERS: dict[str, Callable[[TaskSpec], ModelAdapter]] = {}


def register_adapter(task_type: str) -> Callable[[type], type]:
    """Class decorator: the adapter of ``task_type`` (built with ``cls.for_task(task_spec)``).

    The task type must be in the task-type table first (``exporter.config.task_types``), and has
    exactly one adapter: another class registered for it raises TypeError, as does an unknown task type
    (the same class again, its module reloaded, replaces itself).
    """
    def register(cls: type) -> type:
        where = f"register_adapter({task_type!r}) on {cls.__module__}.{cls.__qualname__}"
        if not is_registered(task_type):
            raise TypeError(f"{where}: no task type {task_type!r} in the table; register it first "
                            "(exporter.config.task_types.register_task_type)")
        # The same class again (its module reloaded) replaces itself; another class is refused.
        taken = _qualified(getattr(ADAPTERS[task_type], "__self__", ADAPTERS[task_type])) if task_type in ADAPTERS else None
        if taken is not None and taken != _qualified(cls):
            raise TypeError(f"{where}: task type {task_type!r} has an adapter already, {taken}")
        ADAPTERS[task_type] = cls.for_task
        return cls

    return register


def _qualified(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def unregister_adapter(task_type: str) -> None:
    """Remove the adapter of a task type (tests); unknown task types are ignored."""
    ADAPTERS.pop(task_type, None)


def adapter_for_task(task_spec: TaskSpec) -> ModelAdapter:
    """The shipped adapter for ``task_spec.task_type``; with ``task_spec.inputs`` declared, those
    inputs (``declared.py``) and the task type's output names."""
    task_types()  # plug-ins register their task types and adapters when the table is first read
    factory = ADAPTERS.get(task_spec.task_type)
    if factory is None:
        raise ValueError(f"task_spec.task_type: no adapter for {task_spec.task_type!r}; valid values: {sorted(ADAPTERS)}")
    adapter = factory(task_spec)
    if task_spec.inputs is None:
        return adapter
    declared_axes = parse_output_axes(task_spec.output_axes)
    # Outputs the task type gives a sequence axis keep it under the inputs' first non-batch axis name.
    inputs = parse_inputs(task_spec.inputs)
    first = next((label for spec in inputs for a, label in spec.dynamic_axes.items() if a), None)
    output_axes = {name: {0: "batch", **({axis: first} if first else {})} for name, axis in adapter.sequence_axes.items()
                   if name in adapter.output_names}
    output_axes.update(declared_axes)
    declared = DeclaredInputsAdapter(inputs, adapter.output_names, output_axes)
    declared.required_outputs = set(declared_axes)
    return declared
