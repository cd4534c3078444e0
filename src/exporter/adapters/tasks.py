"""The shipped adapters of the single-graph task types: images in, class scores or boxes out;
token ids (and their mask) in, logits or hidden states out."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..config.task_spec import TaskSpec
from .base import ModelAdapter
from .example_inputs import padded_mask
from .registry import register_adapter

if TYPE_CHECKING:
    import torch


def _forward_parameters(model: Any) -> set[str]:
    try:
        return set(inspect.signature(getattr(model, "forward", model)).parameters)
    except (TypeError, ValueError):
        return set()


class _OptimumFolder:
    """A transformers model's ONNX build folder that Optimum's ``ORTModelFor<Task>`` loads as it is, and
    its ``model.safetensors`` folder that the family's ``from_pretrained`` loads: ``config.json`` and the
    tokenizer or image-processor files beside the file (``model_folder``)."""

    # The task type whose Optimum class runs the folder (model_folder.OPTIMUM_CLASSES); None: none does.
    optimum_task: Optional[str] = None
    # What that class is loaded with (a causal model's graph without the cache: use_cache=False).
    optimum_options: Mapping[str, Any] = {}

    def runtime_files(self, model: Any, folder: Any, graph_file: str) -> Optional[dict[str, Any]]:
        from .model_folder import optimum_folder, transformers_folder

        if graph_file.endswith(".safetensors"):  # the family's from_pretrained loads the build folder
            return transformers_folder(model, folder, graph_file)
        if self.optimum_task is None:
            return None
        return optimum_folder(model, folder, graph_file, self.optimum_task, **self.optimum_options)


class ImageAdapter(_OptimumFolder, ModelAdapter):
    """Images in (``pixel_values``, float32 ``[batch, C, H, W]``). With ``task_spec.dynamic_image_size``,
    height and width are dynamic axes (``height``, ``width``) and the second example is half the
    example's size; the outputs (one row per image) keep only their batch axis."""

    input_names = ("pixel_values",)

    def __init__(self, dynamic_image_size: bool = False):
        self.dynamic_image_size = dynamic_image_size

    @classmethod
    def for_task(cls, task_spec: TaskSpec) -> "ImageAdapter":
        return cls(dynamic_image_size=bool(getattr(task_spec, "dynamic_image_size", False)))

    @property
    def sequence_axes(self) -> Mapping[str, int]:  # type: ignore[override]
        # The axis the second example shortens: the height (the width follows, keeping the aspect).
        return {"pixel_values": 2} if self.dynamic_image_size else {}

    def dynamic_axes(self, batch: bool = True, sequence: bool = True) -> dict[str, dict[int, str]]:
        axes = super().dynamic_axes(batch=batch, sequence=False)
        if sequence and self.dynamic_image_size:
            axes.setdefault("pixel_values", {}).update({2: "height", 3: "width"})
        return axes

    def output_axes(self, name: str, tensor: "torch.Tensor", batch: bool, sequence: bool) -> dict[int, str]:
        return super().output_axes(name, tensor, batch, sequence=False)

    def example_inputs(
        self, task_spec: TaskSpec, batch_size: int = 1, seed: int | None = 0, seq_len: int | None = None
    ) -> "dict[str, torch.Tensor]":
        """``seq_len``: the second example's height; its width is scaled alike."""
        from .example_inputs import generate_dummy_input

        tensor = generate_dummy_input(task_spec, batch_size=batch_size, seed=seed)
        if seq_len is not None and tensor.dim() == 4:
            height, width = int(tensor.shape[2]), int(tensor.shape[3])
            tensor = tensor[:, :, :seq_len, :max(1, width * seq_len // height)].contiguous()
        return {self.input_names[0]: tensor}


@register_adapter("vision_classification")
class VisionClassificationAdapter(ImageAdapter):
    """Images in (``pixel_values``, float32 ``[batch, C, H, W]``), class logits out."""

    optimum_task = "vision_classification"


@register_adapter("object_detection")
class ObjectDetectionAdapter(ImageAdapter):
    """Images in (``pixel_values``), several heads out: ``logits`` (class scores per query) and
    ``pred_boxes`` (boxes per query), as Hugging Face detection models name them. A plain module
    returning a tuple of two tensors gets these names in order; other heads are named with
    ``task_spec.outputs=[...]``."""

    output_names = ("logits", "pred_boxes")


def _ignored_inputs(model: Any) -> set[str]:
    """Inputs a model's forward takes but whose value cannot change its output: ``token_type_ids``
    of a model with one token type or none (RoBERTa's checkpoints: ``type_vocab_size`` 1), which
    Optimum leaves out of the graph too."""
    types = getattr(getattr(model, "config", None), "type_vocab_size", None)
    return {"token_type_ids"} if isinstance(types, int) and types <= 1 else set()


class TextAdapter(_OptimumFolder, ModelAdapter):
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
        taken = _forward_parameters(model) - _ignored_inputs(model)
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
    optimum_task = "language_modeling"
    optimum_options = {"use_cache": False}  # this graph has no cache (kv_cache.py builds the one that has)

    def __init__(self, attention_mask: bool = False):
        super().__init__(attention_mask)


@register_adapter("text_classification")
class TextClassificationAdapter(TextAdapter):
    """Token ids in (plus ``attention_mask`` and ``token_type_ids`` when the model takes them, or
    ``input_schema.attention_mask: true``), class logits out."""

    optimum_task = "text_classification"


@register_adapter("question_answering")
class QuestionAnsweringAdapter(TextAdapter):
    """Extractive question answering: token ids in, ``start_logits`` and ``end_logits`` out (one
    score per token each)."""

    output_names = ("start_logits", "end_logits")
    sequence_outputs = ("start_logits", "end_logits")
    optimum_task = "question_answering"


@register_adapter("token_classification")
class TokenClassificationAdapter(TextAdapter):
    """Token classification (NER, tagging): token ids in, ``logits`` ``[batch, sequence, labels]`` out."""

    sequence_outputs = ("logits",)
    optimum_task = "token_classification"


@register_adapter("feature_extraction")
class FeatureExtractionAdapter(TextAdapter):
    """Embeddings: token ids in, ``last_hidden_state`` ``[batch, sequence, hidden]`` out (a plain
    module's single tensor takes that name)."""

    output_names = ("last_hidden_state",)
    sequence_outputs = ("last_hidden_state",)
    optimum_task = "feature_extraction"
