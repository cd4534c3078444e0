"""Adapters own what is model-specific: example inputs, names, dynamic axes, calling the model.

An adapter never touches a file format: the runner hands its example inputs and its
``wrap()``-ed module to every exporter, so one adapter serves ONNX, TorchScript and state dicts.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Mapping

from .inputs import generate_dummy_input
from .task_spec import TaskSpec

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

    def call(self, model: Any, inputs: "Mapping[str, torch.Tensor]") -> Any:
        """Call ``model`` with ``inputs``: by keyword when its forward names them, else in order."""
        forward = getattr(model, "forward", model)
        try:
            params = inspect.signature(forward).parameters
        except (TypeError, ValueError):
            params = {}
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
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

    def wrap(self, model: Any, input_names: tuple[str, ...] | None = None) -> "torch.nn.Module":
        """A module taking the inputs positionally and returning one tensor: what exporters trace."""
        return _adapter_module_class()(self, model, tuple(input_names or self.input_names))


@functools.cache
def _adapter_module_class() -> type:
    # Built on first use so that importing this module does not import torch.
    import torch

    class AdapterModule(torch.nn.Module):
        def __init__(self, adapter: ModelAdapter, model: torch.nn.Module, names: tuple[str, ...]):
            super().__init__()
            self.model = model
            self._adapter = adapter
            self._names = names
            # Same mode as the model: torch.onnx.export restores the wrapper's mode on exit, and a
            # wrapper left in training mode would switch the model (BatchNorm, Dropout) to training.
            self.train(model.training)

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self._adapter.run(self.model, dict(zip(self._names, tensors)))

    return AdapterModule


class VisionClassificationAdapter(ModelAdapter):
    """Images in (``pixel_values``, float32 ``[batch, C, H, W]``), class logits out."""

    input_names = ("pixel_values",)


class LanguageModelingAdapter(ModelAdapter):
    """Token ids in (``input_ids``, int64 ``[batch, sequence]``), next-token logits out."""

    input_names = ("input_ids",)
    sequence_axes = {"input_ids": 1, "logits": 1}


class TextClassificationAdapter(ModelAdapter):
    """Token ids in (plus ``attention_mask`` when ``input_schema.attention_mask`` is true), class logits out."""

    input_names = ("input_ids",)
    sequence_axes = {"input_ids": 1, "attention_mask": 1}

    def __init__(self, attention_mask: bool = False):
        if attention_mask:
            self.input_names = ("input_ids", "attention_mask")

    @classmethod
    def for_task(cls, task_spec: TaskSpec) -> "TextClassificationAdapter":
        return cls(attention_mask=bool(task_spec.input_schema.get("attention_mask", False)))

    def example_inputs(
        self, task_spec: TaskSpec, batch_size: int = 1, seed: int | None = 0, seq_len: int | None = None
    ) -> "dict[str, torch.Tensor]":
        import torch

        inputs = super().example_inputs(task_spec, batch_size, seed, seq_len)
        if "attention_mask" in self.input_names:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return inputs


def adapter_for_task(task_spec: TaskSpec) -> ModelAdapter:
    """The shipped adapter for ``task_spec.task_type``."""
    if task_spec.task_type == "vision_classification":
        return VisionClassificationAdapter()
    if task_spec.task_type == "language_modeling":
        return LanguageModelingAdapter()
    if task_spec.task_type == "text_classification":
        return TextClassificationAdapter.for_task(task_spec)
    raise ValueError(
        f"task_spec.task_type: no adapter for {task_spec.task_type!r}; valid values: "
        "['vision_classification', 'language_modeling', 'text_classification']"
    )

