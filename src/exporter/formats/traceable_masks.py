"""Attention masks that exporters can record, for transformers 4.53 to 4.57.

Those releases build causal and padding masks with ``torch.vmap`` over the mask function. Tracing
cannot record vmap: on GPT-2, Llama and the other models on ``transformers.masking_utils`` the
legacy ONNX exporter and TorchScript fail with ``RuntimeError: unordered_map::at``, and
``torch.export`` records a ``flat_apply`` node it cannot serialize. transformers 5 builds the same
masks by broadcasting. While an exporter runs, :func:`traceable_attention_masks` puts a broadcasting
version in place of the vmap one; outside it nothing changes (eager runs and validation use
transformers' own functions).

The mask is the same boolean tensor: each mask function is called once on index tensors shaped
(batch, 1, 1, 1), (1, 1, 1, 1), (query, 1) and (1, kv) that broadcast to (batch, 1, query, kv),
instead of once per element under vmap. Sizes come from tensor shapes, so the trace keeps the
batch and sequence axes dynamic.

>>> with traceable_attention_masks() as swapped:
...     isinstance(swapped, bool)
True
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional

# What an artifact's record says when the swap was made for its trace.
SWAPPED_MASKS_NOTE = ("exported with broadcasting attention masks in place of transformers 4.53-4.57's vmap "
                      "ones (the same masks; tracing cannot record vmap)")


def _uses_vmap(masking: Any) -> bool:
    """transformers 4.53-4.57 on torch >= 2.6: ``sdpa_mask`` is the vmap version and takes
    ``cache_position`` (transformers 5 takes ``q_length`` and has ``use_vmap=False`` by default)."""
    sdpa_mask = getattr(masking, "sdpa_mask", None)
    if sdpa_mask is None or sdpa_mask is not getattr(masking, "sdpa_mask_recent_torch", None):
        return False
    parameters = inspect.signature(sdpa_mask).parameters
    return "cache_position" in parameters and "use_vmap" not in parameters


def _broadcast_sdpa_mask(masking: Any) -> Callable[..., Any]:
    """``sdpa_mask`` with the signature of transformers 4.53-4.57, built by broadcasting."""
    import torch

    def sdpa_mask(batch_size: int, cache_position: "torch.Tensor", kv_length: int, kv_offset: int = 0,
                  mask_function: Callable[..., Any] = masking.causal_mask_function,
                  attention_mask: Optional["torch.Tensor"] = None, local_size: Optional[int] = None,
                  allow_is_causal_skip: bool = True, **_: Any) -> Optional["torch.Tensor"]:
        q_length = cache_position.shape[0]
        padding_mask = masking.prepare_padding_mask(attention_mask, kv_length, kv_offset, _slice=False)
        # While tracing this is always False (transformers' own check): the mask is materialized,
        # never left to SDPA's is_causal, which a trace would fix for every shape.
        if allow_is_causal_skip and masking._ignore_causal_mask_sdpa(padding_mask, q_length, kv_length, kv_offset,
                                                                     local_size):
            return None
        if padding_mask is not None:
            mask_function = masking.and_masks(mask_function, masking.padding_mask_function(padding_mask))
        device = cache_position.device
        batch = torch.arange(batch_size, device=device)[:, None, None, None]
        head = torch.arange(1, device=device)[None, :, None, None]
        query = cache_position[None, None, :, None]
        kv = (torch.arange(kv_length, device=device) + kv_offset)[None, None, None, :]
        return mask_function(batch, head, query, kv).expand(batch_size, -1, q_length, kv_length)

    return sdpa_mask


@contextmanager
def traceable_attention_masks() -> Iterator[bool]:
    """Swap transformers' vmap mask builders for broadcasting ones for the duration; yields whether
    it did (False: transformers is not loaded, or its masks already trace)."""
    masking = sys.modules.get("transformers.masking_utils")
    if masking is None or not _uses_vmap(masking):
        yield False
        return
    original = masking.sdpa_mask
    mapping = masking.AttentionMaskInterface._global_mapping
    saved = dict(mapping)
    replacement = _broadcast_sdpa_mask(masking)
    # eager_mask looks sdpa_mask up in its module when called: replacing the module's name covers it.
    masking.sdpa_mask = replacement
    for name, function in saved.items():
        if function is original:
            mapping[name] = replacement
    try:
        yield True
    finally:
        masking.sdpa_mask = original
        mapping.clear()
        mapping.update(saved)
