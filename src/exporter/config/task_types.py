"""The task types and the modalities: the one table of each, from which everything else is derived.

A **modality** says how example inputs are drawn when an adapter leaves it to the task spec
(``exporter.adapters.example_inputs``): token ids for ``text``, images for ``vision``, and the
``input_schema`` values used when the task spec leaves them out. Drawing inputs is code, so the
modalities are a fixed table here.

A **task type** names what a model does; its entry gives its modality. Its other parts are found by
its name: its option file ``conf/task_spec/<name>.yaml`` (the ``input_schema``/``output_schema``
defaults a job composes) and its adapter, registered for it with ``@register_adapter("<name>")``
in ``exporter.adapters`` (inputs drawn, output names exported by default). ``tests/test_registry.py``
checks that every task type has exactly one of each.

Derived from these tables: the ``Modality`` enum of the config schema (Hydra refuses another value
when it composes), the check of ``task_spec.task_type`` (a plain string in the schema, checked
against this table with the other option values by ``exporter.config.checks``, so that a task
type registered after start-up composes), ``TaskSpec.validate``, the modality check of the example
inputs, and the valid values every message about them lists.

A task type from outside the package registers with ``register_task_type`` when its module is
imported; an installed plug-in names that module in the ``exporter.task_types`` entry-point group
and the table imports it the first time it is read (docs/extending.md). Imports no torch.

Example:
    >>> task_types()["object_detection"].modality
    'vision'
    >>> check_task_type("translation")
    Traceback (most recent call last):
    ...
    ValueError: task_spec.task_type: unknown task type 'translation'; valid values: ['vision_classification', \
'language_modeling', 'text_classification', 'question_answering', 'token_classification', 'feature_extraction', \
'object_detection', 'seq2seq_lm']
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

log = logging.getLogger("exporter")

# Modality -> the input_schema values example inputs use when the task spec leaves them out.
MODALITIES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "text": MappingProxyType({"max_seq_len": 128, "vocab_size": 50257}),
    "vision": MappingProxyType({"image_size": (3, 224, 224)}),
})

ENTRY_POINT_GROUP = "exporter.task_types"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class TaskTypeEntry:
    """One row of the task-type table."""

    name: str
    modality: str

    @property
    def input_defaults(self) -> Mapping[str, Any]:
        """The ``input_schema`` values its example inputs use when the task spec leaves them out."""
        return MODALITIES[self.modality]

    @property
    def option_file(self) -> str:
        """Its option file, relative to the config folder (``task_spec=<name>``)."""
        return f"task_spec/{self.name}.yaml"


_TABLE: dict[str, TaskTypeEntry] = {}
_loaded = False


def check_modality(modality: Any, key: str = "task_spec.modality") -> str:
    """``modality`` if the table has it, else ValueError naming ``key`` and the valid values."""
    if not isinstance(modality, str) or modality not in MODALITIES:
        raise ValueError(f"{key}: unsupported modality {modality!r}; valid values: {list(MODALITIES)}")
    return modality


def register_task_type(name: str, modality: str) -> TaskTypeEntry:
    """Add a task type to the table: its name (as ``task_spec.task_type`` spells it) and modality.

    Its adapter registers for the same name (``@register_adapter(name)`` in ``exporter.adapters``,
    after this call) and its option file is ``conf/task_spec/<name>.yaml`` (or the same path in a
    ``--config-dir``). Raises ValueError for a name that is not lower_snake_case or is taken, or a
    modality the table does not have.

    Example:
        >>> register_task_type("image_regression", "vision")
        TaskTypeEntry(name='image_regression', modality='vision')
        >>> "image_regression" in task_types()
        True
        >>> unregister_task_type("image_regression")
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"register_task_type: the name {name!r} must be lower_snake_case (a-z, 0-9, _), "
                         "as task_spec.task_type and the option file task_spec/<name>.yaml spell it")
    if name in _TABLE:
        raise ValueError(f"register_task_type: task type {name!r} is registered already "
                         f"(modality {_TABLE[name].modality!r})")
    check_modality(modality, key=f"register_task_type({name!r}): modality")
    _TABLE[name] = TaskTypeEntry(name, modality)
    return _TABLE[name]


def unregister_task_type(name: str) -> None:
    """Remove a task type (tests); unknown names are ignored. Its adapter is left to
    ``exporter.adapters.unregister_adapter``."""
    _TABLE.pop(name, None)


def is_registered(name: str) -> bool:
    """Whether the table has ``name`` now, without loading plug-ins (``register_adapter`` asks
    while plug-ins may be loading)."""
    return name in _TABLE


def _load() -> None:
    """The task types of installed plug-ins (entry-point group ``exporter.task_types``), once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from .plugins import load_plugins

    load_plugins(ENTRY_POINT_GROUP, "task type", lambda: _TABLE)


def task_types() -> dict[str, TaskTypeEntry]:
    """Every registered task type, name -> entry, in registration order (shipped ones first)."""
    _load()
    return dict(_TABLE)


def task_type_names() -> list[str]:
    """The valid values of ``task_spec.task_type``, in registration order."""
    return list(task_types())


def check_task_type(task_type: Any, key: str = "task_spec.task_type") -> TaskTypeEntry:
    """The entry of ``task_type``, or ValueError naming ``key`` and the valid values."""
    table = task_types()
    if not isinstance(task_type, str) or task_type not in table:
        raise ValueError(f"{key}: unknown task type {task_type!r}; valid values: {list(table)}")
    return table[task_type]


# The shipped task types (their adapters: exporter.adapters.tasks and .seq2seq; their option files:
# conf/task_spec/<name>.yaml), name -> modality. A new one is a line here, an option file and an
# adapter class (docs/extending.md, "Add a task type"); plug-ins call register_task_type instead.
SHIPPED: Mapping[str, str] = MappingProxyType({
    "vision_classification": "vision",
    "language_modeling": "text",
    "text_classification": "text",
    "question_answering": "text",
    "token_classification": "text",
    "feature_extraction": "text",
    "object_detection": "vision",
    "seq2seq_lm": "text",
})
for _name, _modality in SHIPPED.items():
    register_task_type(_name, _modality)
del _name, _modality
