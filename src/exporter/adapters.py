"""Adapters own what is model-specific: example inputs, names, dynamic axes, calling the model.

An adapter never touches a file format: the runner hands its example inputs and its
``wrap()``-ed module to every exporter, so one adapter serves ONNX, TorchScript and state dicts.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .inputs import generate_dummy_input, padded_mask
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


# The shipped adapters, by task type: ``adapter_for_task`` looks them up here.
ADAPTERS: dict[str, Callable[[TaskSpec], ModelAdapter]] = {}


def register_adapter(task_type: str) -> Callable[[type], type]:
    """Class decorator: the shipped adapter for ``task_type`` (built with ``cls.for_task(task_spec)``)."""
    def register(cls: type) -> type:
        ADAPTERS[task_type] = cls.for_task
        return cls

    return register


def _forward_parameters(model: Any) -> set[str]:
    try:
        return set(inspect.signature(getattr(model, "forward", model)).parameters)
    except (TypeError, ValueError):
        return set()


@register_adapter("vision_classification")
class VisionClassificationAdapter(ModelAdapter):
    """Images in (``pixel_values``, float32 ``[batch, C, H, W]``), class logits out."""

    input_names = ("pixel_values",)


@register_adapter("object_detection")
class ObjectDetectionAdapter(ModelAdapter):
    """Images in (``pixel_values``), several heads out: ``logits`` (class scores per query) and
    ``pred_boxes`` (boxes per query), as Hugging Face detection models name them. A plain module
    returning a tuple of two tensors gets these names in order; other heads are named with
    ``task_spec.outputs=[...]``."""

    input_names = ("pixel_values",)
    output_names = ("logits", "pred_boxes")


class TextAdapter(ModelAdapter):
    """Token ids in, and the companions a text model takes: ``attention_mask`` and, where the task
    uses them, ``token_type_ids`` (sentence pairs) or ``position_ids`` (causal LMs), each included
    when the model's ``forward`` takes it (``bind``) or the task spec forces it
    (``input_schema.attention_mask: true``).

    Example values: ``input_ids`` uniform in ``[0, vocab_size)``; ``attention_mask`` all ones on the
    example and, on larger batches (the second-shape check), padding at the end of every row after
    the first, so the mask is proven live; ``token_type_ids`` zeros (valid for every vocabulary of
    types); ``position_ids`` ``0..n-1``.
    """

    input_names = ("input_ids",)
    without_cache = True
    # The optional inputs this task feeds when the model takes them, in call order.
    companions: tuple[str, ...] = ("attention_mask", "token_type_ids")

    def __init__(self, attention_mask: bool = False):
        self.forced = ("attention_mask",) if attention_mask else ()
        self.input_names = ("input_ids", *self.forced)

    @property
    def sequence_axes(self) -> Mapping[str, int]:  # type: ignore[override]
        return {name: 1 for name in (*self.input_names, *self.sequence_outputs)}

    # Outputs with a sequence axis (axis 1).
    sequence_outputs: tuple[str, ...] = ()

    @classmethod
    def for_task(cls, task_spec: TaskSpec) -> "TextAdapter":
        return cls(attention_mask=bool(task_spec.input_schema.get("attention_mask", False)))

    def bind(self, model: Any) -> None:
        taken = _forward_parameters(model)
        self.input_names = ("input_ids", *(n for n in self.companions if n in taken or n in self.forced))

    def example_inputs(
        self, task_spec: TaskSpec, batch_size: int = 1, seed: int | None = 0, seq_len: int | None = None
    ) -> "dict[str, torch.Tensor]":
        import torch

        ids = super().example_inputs(task_spec, batch_size, seed, seq_len)[self.input_names[0]]
        batch, length = ids.shape
        inputs = {"input_ids": ids}
        for name in self.input_names[1:]:
            if name == "attention_mask":
                inputs[name] = padded_mask(ids.shape, ids.dtype)
            elif name == "token_type_ids":
                inputs[name] = torch.zeros_like(ids)
            elif name == "position_ids":
                inputs[name] = torch.arange(length).unsqueeze(0).expand(batch, length).contiguous()
        return inputs


@register_adapter("language_modeling")
class LanguageModelingAdapter(TextAdapter):
    """Token ids in (``input_ids``, int64 ``[batch, sequence]``, plus ``attention_mask`` and
    ``position_ids`` when the model takes them), next-token logits out (``[batch, sequence, vocab]``)."""

    companions = ("attention_mask", "position_ids")
    sequence_outputs = ("logits",)

    def __init__(self, attention_mask: bool = False):
        super().__init__(attention_mask)


@register_adapter("text_classification")
class TextClassificationAdapter(TextAdapter):
    """Token ids in (plus ``attention_mask`` and ``token_type_ids`` when the model takes them, or
    ``input_schema.attention_mask: true``), class logits out."""


@register_adapter("question_answering")
class QuestionAnsweringAdapter(TextAdapter):
    """Extractive question answering: token ids in, ``start_logits`` and ``end_logits`` out (one
    score per token each)."""

    output_names = ("start_logits", "end_logits")
    sequence_outputs = ("start_logits", "end_logits")


@register_adapter("token_classification")
class TokenClassificationAdapter(TextAdapter):
    """Token classification (NER, tagging): token ids in, ``logits`` ``[batch, sequence, labels]`` out."""

    sequence_outputs = ("logits",)


@register_adapter("feature_extraction")
class FeatureExtractionAdapter(TextAdapter):
    """Embeddings: token ids in, ``last_hidden_state`` ``[batch, sequence, hidden]`` out (a plain
    module's single tensor takes that name)."""

    output_names = ("last_hidden_state",)
    sequence_outputs = ("last_hidden_state",)


def adapter_for_task(task_spec: TaskSpec) -> ModelAdapter:
    """The shipped adapter for ``task_spec.task_type``; with ``task_spec.inputs`` declared, those
    inputs (``declared.py``) and the task type's output names."""
    factory = ADAPTERS.get(task_spec.task_type)
    if factory is None:
        raise ValueError(f"task_spec.task_type: no adapter for {task_spec.task_type!r}; valid values: {sorted(ADAPTERS)}")
    adapter = factory(task_spec)
    if task_spec.inputs is None:
        return adapter
    from .declared import DeclaredInputsAdapter, parse_inputs, parse_output_axes

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


# Encoder-decoder models register their adapter (seq2seq_lm) from their own module.
from . import seq2seq  # noqa: E402,F401
