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


def padded_mask(shape: "Sequence[int]", dtype: "torch.dtype") -> "torch.Tensor":
    """An attention mask of ``shape`` (batch first): ones on the first row; every later row padded
    at the end of its last axis (row r loses r quarters of it, keeping at least one position), so a
    check on a batch proves the mask is honoured, not all ones.

    Example:
        >>> import torch
        >>> padded_mask((3, 8), torch.int64).tolist()
        [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0]]
    """
    import torch

    mask = torch.ones(tuple(shape), dtype=dtype)
    if len(shape) >= 2:
        length = shape[-1]
        for row in range(1, shape[0]):
            mask[row, ..., max(1, length - row * max(1, length // 4)):] = 0
    return mask
