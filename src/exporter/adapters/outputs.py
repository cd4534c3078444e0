"""Which of a model's outputs a job exports, by name, and never silently fewer than it returns.

A model may return a tensor, a tuple, a dict or a Hugging Face ``ModelOutput``. ``flatten_outputs``
names every tensor in it (dict keys, ``<key>.<i>`` inside nested tuples, ``output_<i>`` for the
items of an unnamed tuple). ``choose_outputs`` then settles what is exported:

- ``task_spec.outputs: all``: every tensor, under those names;
- ``task_spec.outputs: [a, b]``: those (a tuple's items take these names when there are as many);
  what else the model returns is left out on purpose and recorded as such;
- unset: the adapter's declared outputs (``logits`` for the classifiers and language models,
  ``start_logits`` and ``end_logits`` for question answering, ...). A model returning a tensor the
  declaration does not name fails the job, naming it: an artifact never drops an output unasked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

from ..errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .base import ModelAdapter

ALL = "all"
# Elements compared at a time (8 MB per float64 temporary): the comparison with eager and the
# quantization measures read large outputs (an LM's logits) a slice at a time.
COMPARE_CHUNK = 2**20


def as_output_list(result: Any) -> list:
    """A runnable's result as a list of outputs: one array (a single-output format's shortcut) or a
    sequence of arrays in the job's output order."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


def to_numpy(tensor: "torch.Tensor") -> "np.ndarray":
    """A tensor as a numpy array to compare; bfloat16, which numpy has no type for, as float32 (its
    every value exactly)."""
    import torch

    tensor = tensor.detach()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()


def describe_tensor(tensor: "torch.Tensor") -> str:
    return f"{str(tensor.dtype).replace('torch.', '')}{list(tensor.shape)}"


def flatten_outputs(output: Any, positional: Sequence[str] = ()) -> "dict[str, torch.Tensor]":
    """Every tensor in a model's output, by name, in the order the model returned them.

    A lone tensor takes ``positional[0]`` (else ``output``); the items of a top-level tuple or list
    take ``positional`` when there are exactly as many names, else ``output_0``, ``output_1``, ...;
    mappings (dicts, ``ModelOutput``) give their keys, nested containers ``<name>.<i>`` / ``<name>.<key>``.
    ``None`` entries (an HF output's unset ``loss``) and non-tensor values are left out.

    Example:
        >>> import torch
        >>> out = flatten_outputs({"boxes": torch.zeros(1, 4), "extra": (torch.zeros(1), None)})
        >>> list(out)
        ['boxes', 'extra.0']
        >>> list(flatten_outputs((torch.zeros(1), torch.zeros(2)), positional=["a", "b"]))
        ['a', 'b']
    """
    import torch

    flat: dict[str, torch.Tensor] = {}

    def visit(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, Mapping) or hasattr(value, "to_tuple"):
            for key, item in value.items():
                visit(f"{name}.{key}" if name else str(key), item)
        elif isinstance(value, (tuple, list)):
            for index, item in enumerate(value):
                visit(f"{name}.{index}", item)

    if isinstance(output, torch.Tensor):
        return {positional[0] if len(positional) == 1 else "output": output}
    if isinstance(output, (tuple, list)) and not hasattr(output, "to_tuple"):
        names = list(positional) if len(positional) == len(output) else [f"output_{i}" for i in range(len(output))]
        for name, item in zip(names, output):
            visit(name, item)
        return flat
    visit("", output)
    return flat


@dataclass
class OutputChoice:
    """The outputs a job exports (``names``, in order) and what the model returned besides."""

    names: list[str]
    # Everything the model returned: name -> "float32[1, 10]".
    returned: dict[str, str] = field(default_factory=dict)
    # Returned but not exported, because the config chose the outputs.
    left_out: list[str] = field(default_factory=list)
    # Names a top-level tuple's items get (the config's or the adapter's, when they match in number).
    positional: list[str] = field(default_factory=list)
    # The adapter overrides select_output(): it picks its one output itself.
    custom: bool = False

    def pick(self, adapter: "ModelAdapter", raw: Any) -> "list[torch.Tensor]":
        """The exported outputs, in order, from one call's raw output."""
        if self.custom:
            return [adapter.select_output(raw)]
        flat = flatten_outputs(raw, self.positional)
        missing = [name for name in self.names if name not in flat]
        if missing:
            raise ValueError(f"the model's output has no {missing} on this input (it returned {list(flat)})")
        return [flat[name] for name in self.names]


def _positional(requested: Union[None, str, Sequence[str]], adapter: "ModelAdapter", raw: Any) -> list[str]:
    import torch

    if isinstance(raw, torch.Tensor) and isinstance(requested, (list, tuple)) and len(requested) == 1:
        return [str(requested[0])]  # a lone tensor takes the one name the config gives it
    if isinstance(raw, (tuple, list)) and not hasattr(raw, "to_tuple"):
        for names in (requested if isinstance(requested, (list, tuple)) else None, adapter.output_names):
            if names and len(names) == len(raw):
                return list(names)
    return list(adapter.output_names[:1])


def choose_outputs(requested: Union[None, str, Sequence[str]], adapter: "ModelAdapter", raw: Any) -> OutputChoice:
    """Settle the exported outputs from the config's request, the adapter's declaration and what the
    model returned on its example input; ConfigError naming the tensors when they disagree."""
    from .base import ModelAdapter

    if type(adapter).select_output is not ModelAdapter.select_output and requested is None:
        # A custom adapter that picks its one output: exported under its first declared name.
        return OutputChoice(names=[adapter.output_names[0]], custom=True)
    positional = _positional(requested, adapter, raw)
    flat = flatten_outputs(raw, positional)
    returned = {name: describe_tensor(t) for name, t in flat.items()}
    listing = ", ".join(f"{name} {shape}" for name, shape in returned.items()) or "no tensor"
    if not flat:
        raise ConfigError(f"the model returned no tensor on its example input ({type(raw).__name__}); "
                          "an exported model must return tensors")
    if isinstance(requested, str):
        if requested != ALL:
            raise ConfigError(f"task_spec.outputs: {requested!r} is not a list of output names or 'all'; "
                              f"the model returns: {listing}")
        return OutputChoice(names=list(flat), returned=returned, positional=positional)
    if requested is not None:
        names = [str(n) for n in requested]
        unknown = [n for n in names if n not in flat]
        if not names or unknown or len(set(names)) != len(names):
            why = f"no output named {unknown}" if unknown else ("no name given" if not names else "a name given twice")
            raise ConfigError(
                f"task_spec.outputs: {why}; the model returns: {listing}. Name some of these, or use "
                f"task_spec.outputs=all (a tuple's items are output_0, output_1, ... unless the list names each one)")
        return OutputChoice(names=names, returned=returned, left_out=[n for n in flat if n not in names],
                            positional=positional)
    declared = list(adapter.output_names)
    missing = [n for n in declared if n not in flat]
    extra = [n for n in flat if n not in declared]
    if missing:
        raise ConfigError(
            f"{type(adapter).__name__} exports {declared}, but the model returns {listing}. Choose with "
            f"task_spec.outputs=[...] (names from that list) or task_spec.outputs=all")
    if extra:
        raise ConfigError(
            f"the model returns tensors that would not be exported: {', '.join(f'{n} {returned[n]}' for n in extra)} "
            f"(exported: {declared}). Set task_spec.outputs=all to export every one, or "
            f"task_spec.outputs=[{','.join(declared)}] to leave the others out on purpose")
    return OutputChoice(names=declared, returned=returned, positional=positional)
