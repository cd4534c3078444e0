"""Adapters: what is model-specific about calling a model (example inputs, names, dynamic axes),
one per task type, registered by task type (``register_adapter``, ``adapter_for_task``).

Importing this package registers the shipped adapters (``tasks``, ``seq2seq``); it imports no torch.
"""

from .base import ModelAdapter, Part
from .declared import DeclaredInputsAdapter
from .registry import ADAPTERS, adapter_for_task, register_adapter, unregister_adapter
from .seq2seq import Seq2SeqLMAdapter  # noqa: E402 (registers seq2seq_lm)
from .tasks import (
                    FeatureExtractionAdapter,
                    LanguageModelingAdapter,
                    ObjectDetectionAdapter,
                    QuestionAnsweringAdapter,
                    TextAdapter,
                    TextClassificationAdapter,
                    TokenClassificationAdapter,
                    VisionClassificationAdapter,
)

__all__ = ["ADAPTERS", "DeclaredInputsAdapter", "FeatureExtractionAdapter", "LanguageModelingAdapter", "ModelAdapter",
           "ObjectDetectionAdapter", "Part", "QuestionAnsweringAdapter", "Seq2SeqLMAdapter", "TextAdapter",
           "TextClassificationAdapter", "TokenClassificationAdapter", "VisionClassificationAdapter", "adapter_for_task",
           "register_adapter", "unregister_adapter"]
