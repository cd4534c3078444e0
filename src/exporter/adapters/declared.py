"""The adapter of inputs declared in the config (``task_spec.inputs``, read by
``exporter.config.input_specs``) or by a model family's own list (``seq2seq``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ..config.input_specs import GENERATORS, INPUT_DTYPES, InputSpec, parse_inputs, parse_output_axes  # noqa: F401 (read here)
from ..config.task_spec import TaskSpec
from .base import ModelAdapter

if TYPE_CHECKING:
    import torch


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
            from ..errors import ConfigError

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
