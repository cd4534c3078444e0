"""Hugging Face key/value caches as tensors: read a cache object's layers, and build one from tensors
a graph takes as inputs. Shared by the causal-LM adapter (``adapters/kv_cache.py``) and the
encoder-decoder parts (``seq2seq_parts.py``).

Written against transformers 5 (``forward(cache=...)``, ``output.cache``, cache layers) and 4.57
(``past_key_values``), whichever is installed.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import torch


def cache_keyword(model: Any) -> Optional[str]:
    """The keyword ``model.forward`` takes its cache by (``cache`` in transformers 5,
    ``past_key_values`` before), or None: the model has no key/value cache."""
    try:
        taken = set(inspect.signature(getattr(model, "forward", model)).parameters)
    except (TypeError, ValueError):
        return None
    for name in ("cache", "past_key_values"):
        if name in taken and "use_cache" in taken:
            return name
    return None


def returned_cache(output: Any) -> Any:
    """The cache a model's output holds (``cache`` in transformers 5, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cache_layers(cache: Any) -> "list[tuple[torch.Tensor, torch.Tensor]]":
    """The (key, value) of each layer of a transformers cache object (or a legacy tuple of tuples)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v, *_ in cache]


def build_cache(pairs: "list[tuple[torch.Tensor, torch.Tensor]]") -> Any:
    """A ``DynamicCache`` holding ``pairs`` as its layers (none: an empty cache). Each layer is set
    directly rather than through ``update``, which starts from a 1-D empty tensor and concatenates
    onto it: a graph traced so holds a Concat that is wrong for a past of length 0."""
    from transformers.cache_utils import DynamicCache

    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # before the cache layers
        return DynamicCache.from_legacy_cache(tuple(pairs)) if pairs else DynamicCache()
    cache = DynamicCache()
    for key, value in pairs:
        layer = DynamicLayer()
        try:
            layer.lazy_initialization(key, value)
        except TypeError:  # transformers 4.5x: the key alone
            layer.lazy_initialization(key)
        layer.keys, layer.values = key, value
        cache.layers.append(layer)
    return cache


def encoder_decoder_cache(self_pairs: list, cross_pairs: list) -> Any:
    """An ``EncoderDecoderCache`` of the decoder's own keys and values (``self_pairs``) and the
    cross-attention ones computed from the encoder's output (``cross_pairs``; none: computed on this
    call). With cross pairs given, every layer is marked as holding them, so the model reuses them."""
    from transformers.cache_utils import EncoderDecoderCache

    cache = EncoderDecoderCache(build_cache(self_pairs), build_cache(cross_pairs))
    for index in range(len(cross_pairs)):
        cache.is_updated[index] = True
    return cache


def encoder_decoder_layers(cache: Any) -> "tuple[list, list]":
    """The (key, value) pairs of each layer of an ``EncoderDecoderCache``: the decoder's own, and the
    cross-attention ones."""
    if hasattr(cache, "self_attention_cache"):
        return cache_layers(cache.self_attention_cache), cache_layers(cache.cross_attention_cache)
    return [(k, v) for k, v, *_ in cache], [tuple(layer[2:4]) for layer in cache]
