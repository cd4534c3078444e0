"""Adapters own what is model-specific: example inputs, names, dynamic axes, calling the model.

An adapter never touches a file format: the runner hands its example inputs and its
``wrap()``-ed module to every exporter, so one adapter serves ONNX, TorchScript and state dicts.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ..config.task_spec import TaskSpec
from .example_inputs import generate_dummy_input

if TYPE_CHECKING:
    import torch

class ModelAdapter:
    """Base adapter: one input drawn from the task spec, one output tensor named ``logits``.

    Subclasses set ``input_names``/``output_names`` and may extend ``example_inputs``.

    Example:
        >>> import torch
        >>> from exporter import TaskSpec, VisionClassificationAdapter
        >>> spec = TaskSpec("demo", "vision", "vision_classification", {"image_size": [3, 8, 8]})
        >>> adapter = VisionClassificationAdapter()
        >>> inputs = adapter.example_inputs(spec)
        >>> list(inputs), tuple(inputs["pixel_values"].shape)
        (['pixel_values'], (1, 3, 8, 8))
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
        >>> tuple(adapter.run(model, inputs).shape)
        (1, 4)
    """

    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)
    # Axes (besides batch) that may change size between calls, per input name.
    sequence_axes: Mapping[str, int] = {}
    # Call a model whose forward takes ``use_cache`` with ``use_cache=False`` (Hugging Face text models).
    without_cache: bool = False

    @classmethod
    def for_task(cls, task_spec: TaskSpec) -> "ModelAdapter":
        """The adapter a job with ``task_spec`` uses (the registry's factory)."""
        return cls()

    def bind(self, model: Any) -> None:
        """Fit the adapter to the model before any input is drawn (e.g. take the inputs its
        ``forward`` accepts); the base adapter takes what it declares."""

    def example_inputs(
        self, task_spec: TaskSpec, batch_size: int = 1, seed: int | None = 0, seq_len: int | None = None
    ) -> "dict[str, torch.Tensor]":
        """Named example tensors for one call of the model."""
        tensor = generate_dummy_input(task_spec, batch_size=batch_size, seed=seed)
        if seq_len is not None and tensor.dim() >= 2:
            tensor = tensor[:, :seq_len]
        return {self.input_names[0]: tensor}

    def dynamic_axes(self, batch: bool = True, sequence: bool = True) -> dict[str, dict[int, str]]:
        """Symbolic axes per input and output name, in the form torch.onnx.export takes."""
        axes: dict[str, dict[int, str]] = {}
        for name in (*self.input_names, *self.output_names):
            named: dict[int, str] = {}
            if batch:
                named[0] = "batch"
            if sequence and name in self.sequence_axes:
                named[self.sequence_axes[name]] = "sequence"
            if named:
                axes[name] = named
        return axes

    def output_axes(self, name: str, tensor: "torch.Tensor", batch: bool, sequence: bool) -> dict[int, str]:
        """Symbolic axes of one exported output: the batch axis (0) and the sequence axis this
        adapter declares for that output name (``sequence_axes``)."""
        axes: dict[int, str] = {}
        if tensor.dim() == 0:
            return axes
        if batch:
            axes[0] = "batch"
        if sequence and name in self.sequence_axes and self.sequence_axes[name] < tensor.dim():
            axes[self.sequence_axes[name]] = "sequence"
        return axes

    def call(self, model: Any, inputs: "Mapping[str, torch.Tensor]") -> Any:
        """Call ``model`` with ``inputs``: by keyword when its forward names them, else in order."""
        forward = getattr(model, "forward", model)
        try:
            params = inspect.signature(forward).parameters
        except (TypeError, ValueError):
            params = {}
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if self.without_cache and "use_cache" in params and all(name in params for name in inputs):
            # Hugging Face models: no key/value cache in the output (it is not part of this export).
            return model(**inputs, use_cache=False)
        if inputs and (takes_kwargs or all(name in params for name in inputs)):
            return model(**inputs)
        return model(*inputs.values())

    def select_output(self, output: Any) -> "torch.Tensor":
        """The tensor to export from whatever the model returns (tensor, ``.logits``, tuple, dict)."""
        import torch

        if isinstance(output, torch.Tensor):
            return output
        logits = getattr(output, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
        if isinstance(output, Mapping):
            if "logits" in output:
                return output["logits"]
            return next(iter(output.values()))
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            return output[0]
        raise TypeError(
            f"{type(self).__name__}: cannot pick an output tensor from {type(output).__name__}; "
            "override select_output() in your adapter"
        )

    def run(self, model: Any, inputs: "Mapping[str, torch.Tensor]") -> "torch.Tensor":
        """Eager forward pass returning the output tensor."""
        return self.select_output(self.call(model, inputs))

    def wrap(self, model: Any, input_names: tuple[str, ...] | None = None, pick: Any = None) -> "torch.nn.Module":
        """A module taking the inputs positionally and returning the exported outputs (one tensor, or
        a tuple in the job's output order): what exporters trace. ``pick(raw)`` chooses the outputs
        (the job's ``OutputChoice``); without it, ``select_output``'s one tensor."""
        return _adapter_module_class()(self, model, tuple(input_names or self.input_names), pick)


@functools.cache
def _adapter_module_class() -> type:
    # Built on first use so that importing this module does not import torch.
    import torch

    class AdapterModule(torch.nn.Module):
        def __init__(self, adapter: ModelAdapter, model: torch.nn.Module, names: tuple[str, ...], pick: Any):
            super().__init__()
            self.model = model
            self._adapter = adapter
            self._names = names
            self._pick = pick
            # Same mode as the model: torch.onnx.export restores the wrapper's mode on exit, and a
            # wrapper left in training mode would switch the model (BatchNorm, Dropout) to training.
            self.train(model.training)

        def forward(self, *tensors: torch.Tensor) -> Any:
            raw = self._adapter.call(self.model, dict(zip(self._names, tensors)))
            outputs = self._pick(raw) if self._pick is not None else [self._adapter.select_output(raw)]
            return outputs[0] if len(outputs) == 1 else tuple(outputs)

    return AdapterModule


@dataclass
class Part:
    """One separately exported piece of a model whose adapter has ``parts(model)`` (encoder-decoder
    models: ``seq2seq.py``): its name (the artifacts' file stem), the module exporters trace, and
    the adapter that feeds it."""

    name: str
    module: Any
    adapter: ModelAdapter
