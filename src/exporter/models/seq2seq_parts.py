"""The modules an encoder-decoder model is exported as (``exporter.adapters.seq2seq``): without the
key/value cache ``EncoderPart`` and ``DecoderPart``; with it ``EncoderPart``, ``DecoderFirstStepPart``
and ``DecoderWithPastPart``.

Each wraps the Hugging Face model it is built from, so a state dict saved from a part loads into
the same part built around a fresh model: ``DecoderPart(AutoModelForSeq2SeqLM.from_pretrained(DIR))``.
"""

from __future__ import annotations

import torch


class EncoderPart(torch.nn.Module):
    """The model's encoder: token ids and mask in, ``last_hidden_state`` out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.encoder = model.get_encoder()
        self.train(model.training)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class DecoderPart(torch.nn.Module):
    """The whole model called with the encoder's output given: the decoder and the LM head, with
    whatever the family does between them (e.g. T5's rescaling of tied embeddings)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                          decoder_input_ids=decoder_input_ids, use_cache=False).logits


# --- with the key/value cache: the files and names Optimum's ORTModelForSeq2SeqLM loads ---------


def _flat(self_pairs: list, cross_pairs: list) -> "list[torch.Tensor]":
    """Per layer: the decoder's own key and value, then (where given) the cross-attention ones."""
    flat: list[torch.Tensor] = []
    for index, (key, value) in enumerate(self_pairs):
        flat += [key, value]
        if cross_pairs:
            flat += list(cross_pairs[index])
    return flat


class DecoderFirstStepPart(torch.nn.Module):
    """The decoder's first step (``decoder_model``): the tokens decoded so far, the encoder's output
    and its mask in; the logits and every layer's keys and values (its own, and the cross-attention
    ones computed from the encoder's output, once) out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        from .hf_cache import cache_keyword

        self.model = model
        self.keyword = cache_keyword(model)
        self.train(model.training)

    def forward(self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor) -> tuple:
        from .hf_cache import encoder_decoder_cache, encoder_decoder_layers, returned_cache

        out = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                         decoder_input_ids=input_ids, use_cache=True, return_dict=True,
                         **{self.keyword: encoder_decoder_cache([], [])})
        return (out.logits, *_flat(*encoder_decoder_layers(returned_cache(out))))


class DecoderWithPastPart(torch.nn.Module):
    """The decoder's next steps (``decoder_with_past_model``): the new token, the encoder's mask, and
    per layer the decoder's past keys and values and the cross-attention ones in; the logits and the
    decoder's present keys and values out (the cross-attention ones do not change)."""

    def __init__(self, model: torch.nn.Module, layers: int, hidden_size: int):
        super().__init__()
        from .hf_cache import cache_keyword

        self.model = model
        self.layers, self.hidden_size = layers, hidden_size
        self.keyword = cache_keyword(model)
        self.train(model.training)

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor, *past: torch.Tensor) -> tuple:
        from .hf_cache import encoder_decoder_cache, encoder_decoder_layers, returned_cache

        own = [(past[4 * i], past[4 * i + 1]) for i in range(self.layers)]
        cross = [(past[4 * i + 2], past[4 * i + 3]) for i in range(self.layers)]
        # The encoder's output is not read (the cross-attention keys and values are given); the model
        # still takes one, so it gets zeros of the right shape.
        key = cross[0][0]
        hidden = key.new_zeros(key.shape[0], key.shape[2], self.hidden_size)
        out = self.model(encoder_outputs=(hidden,), attention_mask=encoder_attention_mask,
                         decoder_input_ids=input_ids, use_cache=True, return_dict=True,
                         **{self.keyword: encoder_decoder_cache(own, cross)})
        own_present, _ = encoder_decoder_layers(returned_cache(out))
        return (out.logits, *_flat(own_present, []))
