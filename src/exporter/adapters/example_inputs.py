"""Example inputs drawn from a TaskSpec: the only place that knows input shapes and ranges."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.input_specs import padded_mask  # noqa: F401 (the mask generator lives with the input specs)
from ..config.task_spec import TaskSpec
from ..config.task_types import MODALITIES, check_modality

if TYPE_CHECKING:
    import torch

# The input_schema values used when the task spec leaves them out: the modality table's.
DEFAULT_MAX_SEQ_LEN = MODALITIES["text"]["max_seq_len"]
DEFAULT_VOCAB_SIZE = MODALITIES["text"]["vocab_size"]
DEFAULT_IMAGE_SIZE = MODALITIES["vision"]["image_size"]


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{field}: must be a positive integer, got {value!r}")
    return value


def text_input_shape(task_spec: TaskSpec) -> tuple[int, int]:
    """(max_seq_len, vocab_size) from ``input_schema``, validated."""
    schema = task_spec.input_schema
    seq = _positive_int(schema.get("max_seq_len", DEFAULT_MAX_SEQ_LEN), "task_spec.input_schema.max_seq_len")
    vocab = _positive_int(schema.get("vocab_size", DEFAULT_VOCAB_SIZE), "task_spec.input_schema.vocab_size")
    return seq, vocab


def image_size(task_spec: TaskSpec) -> tuple[int, int, int]:
    """(channels, height, width) from ``input_schema.image_size``, validated."""
    size = task_spec.input_schema.get("image_size", DEFAULT_IMAGE_SIZE)
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 3:
        raise ValueError(
            "task_spec.input_schema.image_size: must be three positive integers [channels, height, width], "
            f"got {size!r}"
        )
    return tuple(_positive_int(v, "task_spec.input_schema.image_size") for v in size)  # type: ignore[return-value]


def generate_dummy_input(
    task_spec: TaskSpec, batch_size: int = 1, seed: int | None = 0
) -> "torch.Tensor":
    """Draw one example input tensor for ``task_spec``.

    Text: ``input_ids`` of shape ``[batch_size, max_seq_len]`` (default 128), int64, uniform in
    ``[0, vocab_size)`` (default 50257). Vision: float32 ``[batch_size, *image_size]`` (default
    ``[3, 224, 224]``), uniform in ``[0, 1)``. The same seed gives the same tensor.

    Raises:
        ValueError: unknown modality, a non-positive size, or an ``image_size`` that is not three numbers.

    Example:
        >>> from exporter import TaskSpec, generate_dummy_input
        >>> spec = TaskSpec("demo", "vision", "vision_classification", {"image_size": [3, 64, 64]})
        >>> x = generate_dummy_input(spec)
        >>> tuple(x.shape), str(x.dtype), bool(x.min() >= 0 and x.max() < 1)
        ((1, 3, 64, 64), 'torch.float32', True)
        >>> lm = TaskSpec("lm", "text", "language_modeling", {"max_seq_len": 16, "vocab_size": 100})
        >>> ids = generate_dummy_input(lm)
        >>> tuple(ids.shape), str(ids.dtype), int(ids.max()) < 100
        ((1, 16), 'torch.int64', True)
    """
    _positive_int(batch_size, "batch_size")
    check_modality(task_spec.modality)
    import torch

    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    if task_spec.modality == "text":
        seq, vocab = text_input_shape(task_spec)
        return torch.randint(0, vocab, (batch_size, seq), dtype=torch.int64, generator=generator)
    return torch.rand((batch_size, *image_size(task_spec)), dtype=torch.float32, generator=generator)
