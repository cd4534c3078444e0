"""The two modules an encoder-decoder model is exported as (``exporter.adapters.seq2seq``).

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
