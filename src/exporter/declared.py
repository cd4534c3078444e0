"""Inputs declared in the config (``task_spec.inputs``) instead of by an adapter class.

A model family the shipped task types do not cover (several inputs, float and integer mixed, more
than one variable axis) is served from the command line by listing its inputs:

.. code-block:: yaml

    task_spec:
      inputs:
        - {name: input_ids, dtype: int64, shape: [16], range: [0, 1000], dynamic_axes: {1: sequence}}
        - {name: attention_mask, dtype: int64, shape: [16], generator: mask, dynamic_axes: {1: sequence}}
        - {name: pixel_values, dtype: float32, shape: [3, 32, 32]}
      output_axes: {logits: {1: sequence}}

``shape`` is one example without the batch axis; ``dynamic_axes`` names axes of the batched tensor
(axis 0 is the batch, dynamic unless the format says otherwise). One name is one size: axes that
share a name must have the same size, and the exported artifact knows they agree. The values come
from ``generator``:

- ``uniform`` (default): integers uniform in ``range`` ``[low, high)`` (required for integer
  inputs), floats uniform in ``range`` (default ``[0, 1)``);
- ``normal``: floats from a standard normal distribution (scaled into ``range`` when given);
- ``ones`` / ``zeros``;
- ``mask``: ones on the example; on larger batches (the second-shape check) every row after the
  first is padded at its end, so an attention mask is proven live;
- ``arange``: ``0, 1, ..., n-1`` along the last axis (position ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from .adapters import ModelAdapter
from .inputs import padded_mask
from .task_spec import TaskSpec

if TYPE_CHECKING:
    import torch

INPUT_DTYPES = ("int64", "int32", "float32", "float16", "bool")
GENERATORS = ("uniform", "normal", "ones", "zeros", "mask", "arange")
_FIELDS = ("name", "dtype", "shape", "range", "generator", "dynamic_axes")


def _axes(value: Any, where: str, rank: int) -> dict[int, str]:
    """``{axis: name}`` from a config mapping (keys may arrive as strings), checked against ``rank``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must map axis numbers to names, e.g. {{1: sequence}}; got {value!r}")
    axes: dict[int, str] = {}
    for key, name in value.items():
        try:
            axis = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: axis {key!r} is not a number; e.g. {{1: sequence}}") from None
        if rank and not 0 <= axis < rank:
            raise ValueError(f"{where}: axis {axis} is out of range for a tensor of rank {rank} "
                             "(axis 0 is the batch, axis 1 the first entry of shape)")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}: axis {axis} needs a name such as 'sequence', got {name!r}")
        if axis == 0 and name != "batch":
            raise ValueError(f"{where}: axis 0 is the batch axis, named 'batch' (got {name!r})")
        if axis != 0 and name == "batch":
            raise ValueError(f"{where}: 'batch' names axis 0 only; give axis {axis} a name of its own (e.g. sequence)")
        axes[axis] = name
    return axes


@dataclass(frozen=True)
class InputSpec:
    """One declared input: what ``task_spec.inputs[i]`` says, checked."""

    name: str
    dtype: str = "float32"
    # One example, without the batch axis.
    shape: tuple[int, ...] = ()
    range: Optional[tuple[float, float]] = None
    generator: str = "uniform"
    # Axis of the batched tensor -> name (0 is always "batch").
    dynamic_axes: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, where: str) -> "InputSpec":
        """Check one ``task_spec.inputs`` entry; ValueError naming the field and the valid values."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping with fields {list(_FIELDS)}, got {data!r}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; valid fields: {list(_FIELDS)}")
        name = data.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}.name: an input needs a name (a Python identifier), got {name!r}")
        dtype = str(data.get("dtype", "float32"))
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"{where}.dtype: {dtype!r} is not supported; valid values: {list(INPUT_DTYPES)}")
        shape = data.get("shape", [])
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"{where}.shape: one example's shape without the batch axis, as positive integers "
                             f"(e.g. [16] or [3, 32, 32]); got {shape!r}")
        generator = str(data.get("generator", "uniform"))
        if generator not in GENERATORS:
            raise ValueError(f"{where}.generator: {generator!r} is not known; valid values: {list(GENERATORS)}")
        bounds = data.get("range")
        if bounds is not None:
            if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2 or not all(
                    isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) or not bounds[0] < bounds[1]:
                raise ValueError(f"{where}.range: two numbers [low, high) with low < high; got {bounds!r}")
            bounds = (bounds[0], bounds[1])
        integer = dtype in ("int64", "int32")
        if integer and generator == "uniform" and bounds is None:
            raise ValueError(f"{where}.range: an integer input drawn uniformly needs its range [low, high), "
                             "e.g. [0, vocab_size] for token ids")
        if generator == "normal" and (integer or dtype == "bool"):
            raise ValueError(f"{where}.generator: normal draws floats, but dtype is {dtype}; use uniform with a range")
        axes = _axes(data.get("dynamic_axes"), f"{where}.dynamic_axes", len(shape) + 1)
        return cls(name=name, dtype=dtype, shape=tuple(shape), range=bounds, generator=generator,
                   dynamic_axes={0: "batch", **axes})

    def draw(self, batch: int, sizes: Mapping[str, int], generator: "torch.Generator") -> "torch.Tensor":
        """A batch of this input; ``sizes`` overrides the size of named axes (the second example)."""
        import torch

        shape = [batch, *self.shape]
        for axis, name in self.dynamic_axes.items():
            if axis and name in sizes:
                shape[axis] = sizes[name]
        dtype = getattr(torch, self.dtype)
        if self.generator == "mask":
            return padded_mask(shape, dtype)
        if self.generator == "ones":
            return torch.ones(shape, dtype=dtype)
        if self.generator == "zeros":
            return torch.zeros(shape, dtype=dtype)
        if self.generator == "arange":
            return torch.arange(shape[-1]).expand(*shape).to(dtype).contiguous()
        low, high = self.range or ((0, 2) if self.dtype == "bool" else (0.0, 1.0))  # bool: both values
        if dtype in (torch.int64, torch.int32, torch.bool):
            return torch.randint(int(low), int(high), shape, generator=generator).to(dtype)
        if self.generator == "normal":
            values = torch.randn(shape, generator=generator)
            if self.range is not None:
                values = values.clamp(low, high)
            return values.to(dtype)
        return (torch.rand(shape, generator=generator) * (high - low) + low).to(dtype)


def parse_inputs(entries: Any, where: str = "task_spec.inputs") -> list[InputSpec]:
    """Check ``task_spec.inputs``: a non-empty list of distinct inputs whose same-named axes agree."""
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, Sequence) or not entries:
        raise ValueError(f"{where}: a list of inputs, each {{name, dtype, shape, range|generator, dynamic_axes}}; "
                         f"got {entries!r}")
    specs = [InputSpec.parse(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{where}: input name(s) {twice} given more than once")
    sizes: dict[str, tuple[int, str]] = {}
    for spec in specs:
        for axis, label in spec.dynamic_axes.items():
            if axis == 0:
                continue
            size = spec.shape[axis - 1]
            seen = sizes.setdefault(label, (size, spec.name))
            if seen[0] != size:
                raise ValueError(f"{where}: axis {label!r} is {seen[0]} in {seen[1]} but {size} in {spec.name}; "
                                 "axes that share a name are one size")
    return specs


def parse_output_axes(value: Any, where: str = "task_spec.output_axes") -> dict[str, dict[int, str]]:
    """Check ``task_spec.output_axes`` (output name -> {axis: name})."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: map output names to their axes, e.g. {{logits: {{1: sequence}}}}; got {value!r}")
    return {str(name): {0: "batch", **_axes(axes, f"{where}.{name}", 0)} for name, axes in value.items()}


class DeclaredInputsAdapter(ModelAdapter):
    """An adapter whose inputs are declared (``task_spec.inputs``, or a model family's own list)
    rather than drawn by a task type's code; outputs keep the task type's names unless the config
    chooses them (``task_spec.outputs``).

    Example:
        >>> import torch
        >>> adapter = DeclaredInputsAdapter(parse_inputs([
        ...     {"name": "ids", "dtype": "int64", "shape": [8], "range": [0, 50], "dynamic_axes": {1: "sequence"}},
        ...     {"name": "mask", "dtype": "int64", "shape": [8], "generator": "mask", "dynamic_axes": {1: "sequence"}}]))
        >>> inputs = adapter.example_inputs(None, batch_size=2, seq_len=4)
        >>> {n: list(t.shape) for n, t in inputs.items()}, inputs["mask"].tolist()
        ({'ids': [2, 4], 'mask': [2, 4]}, [[1, 1, 1, 1], [1, 1, 1, 0]])
        >>> adapter.dynamic_axes()
        {'ids': {0: 'batch', 1: 'sequence'}, 'mask': {0: 'batch', 1: 'sequence'}, 'logits': {0: 'batch'}}
    """

    without_cache = True

    def __init__(self, inputs: Sequence[InputSpec], output_names: Sequence[str] = ("logits",),
                 output_axes: Optional[Mapping[str, Mapping[int, str]]] = None):
        self.inputs = list(inputs)
        self.input_names = tuple(spec.name for spec in self.inputs)
        self.output_names = tuple(output_names)
        self.declared_output_axes = {name: dict(axes) for name, axes in (output_axes or {}).items()}
        # Outputs whose axes the config declared (each must be exported); the others are defaults.
        self.required_outputs = set(self.declared_output_axes)

    @property
    def sequence_axes(self) -> Mapping[str, int]:  # type: ignore[override]
        """Inputs and outputs with an axis besides the batch (their first such axis)."""
        named = {spec.name: spec.dynamic_axes for spec in self.inputs}
        named.update(self.declared_output_axes)
        return {name: min(a for a in axes if a) for name, axes in named.items() if any(axes)}

    def dynamic_axes(self, batch: bool = True, sequence: bool = True) -> dict[str, dict[int, str]]:
        """Each input's and output's declared axes: the batch axis when ``batch``, the others when ``sequence``."""
        axes: dict[str, dict[int, str]] = {}
        named = {spec.name: spec.dynamic_axes for spec in self.inputs}
        for name in self.output_names:
            named.setdefault(name, self.declared_output_axes.get(name, {0: "batch"}))
        for name, dims in named.items():
            kept = {a: label for a, label in dims.items() if (batch if a == 0 else sequence)}
            if kept:
                axes[name] = kept
        return axes

    def output_axes(self, name: str, tensor: "torch.Tensor", batch: bool, sequence: bool) -> dict[int, str]:
        if tensor.dim() == 0:
            return {}
        dims = self.declared_output_axes.get(name, {0: "batch"})
        return {a: label for a, label in dims.items() if a < tensor.dim() and (batch if a == 0 else sequence)}

    def bind(self, model: Any) -> None:
        """Declared names are the forward's parameters: a name it does not take is refused (rather
        than fed by position to whichever parameter stands there)."""
        import inspect

        try:
            params = inspect.signature(getattr(model, "forward", model)).parameters
        except (TypeError, ValueError):
            return
        if any(p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL) for p in params.values()):
            return
        unknown = [name for name in self.input_names if name not in params]
        if unknown:
            from .errors import ConfigError

            raise ConfigError(f"task_spec.inputs: the model's forward takes {list(params)}, not {unknown}; "
                              "declare the inputs under the forward's parameter names")

    def check_outputs(self, names: Sequence[str], tensors: Sequence["torch.Tensor"],
                      inputs: "Mapping[str, torch.Tensor]") -> None:
        """The declared output axes hold on the example: each names an exported output, an axis it
        has, and a size one of the inputs gives that name (ValueError otherwise)."""
        sizes = {label: int(inputs[spec.name].shape[axis]) for spec in self.inputs
                 for axis, label in spec.dynamic_axes.items() if axis and spec.name in inputs}
        shapes = {name: list(t.shape) for name, t in zip(names, tensors)}
        for name, axes in self.declared_output_axes.items():
            if name not in shapes and name not in self.required_outputs:
                continue  # a task type's default for an output this job does not export
            if name not in shapes:
                raise ValueError(f"task_spec.output_axes: no exported output named {name!r}; outputs: {list(shapes)}")
            for axis, label in axes.items():
                if axis == 0:
                    continue
                shape = shapes[name]
                if axis >= len(shape):
                    raise ValueError(f"task_spec.output_axes.{name}: axis {axis} is out of range for its shape {shape}")
                if label not in sizes:
                    raise ValueError(f"task_spec.output_axes.{name}: axis {axis} is named {label!r}, which names no "
                                     f"input axis (input axes: {sorted(sizes) or 'none'}); an output axis varies "
                                     "with an input axis of the same name")
                if shape[axis] != sizes[label]:
                    raise ValueError(f"task_spec.output_axes.{name}: axis {axis} is {shape[axis]} long but "
                                     f"{label!r} is {sizes[label]} in the inputs; it does not follow that axis")

    def example_inputs(self, task_spec: Optional[TaskSpec], batch_size: int = 1, seed: Optional[int] = 0,
                       seq_len: Optional[int] = None) -> "dict[str, torch.Tensor]":
        """A batch of every declared input. ``seq_len`` (the second-shape check) halves every named
        axis besides the batch, so each declared dynamic axis is tried at another size."""
        import torch

        generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        sizes: dict[str, int] = {}
        if seq_len is not None:
            for spec in self.inputs:
                for axis, label in spec.dynamic_axes.items():
                    if axis:
                        sizes[label] = max(1, spec.shape[axis - 1] // 2)
        return {spec.name: spec.draw(batch_size, sizes, generator) for spec in self.inputs}
