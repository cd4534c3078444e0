"""Encoder-decoder language models (T5, BART, ...): exported as two parts, ``encoder`` and ``decoder``.

One graph cannot serve generation: the encoder runs once per input, the decoder once per generated
token. So the job exports each part as its own artifact per format (``encoder.onnx`` and
``decoder.onnx``, recorded as ``onnx/encoder`` and ``onnx/decoder``), validates each against eager
PyTorch at two shapes, and then checks them together: greedy decoding of a few tokens through the
loaded artifacts must give the tokens eager ``generate`` gives on the same input.

- ``encoder``: ``input_ids``, ``attention_mask`` -> ``last_hidden_state``
  (``[batch, encoder_sequence, d_model]``)
- ``decoder``: ``decoder_input_ids``, ``encoder_hidden_states``, ``encoder_attention_mask`` ->
  ``logits`` (``[batch, decoder_sequence, vocab]``); no key/value cache, so each step feeds the
  whole decoded prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..config.task_spec import TaskSpec
from ..errors import ConfigError
from .base import ModelAdapter, Part
from .declared import DeclaredInputsAdapter, InputSpec
from .example_inputs import text_input_shape
from .registry import register_adapter

if TYPE_CHECKING:
    pass

ENCODER, DECODER = "encoder", "decoder"


def _config_value(model: Any, *names: str) -> Any:
    """The first of ``names`` the model's generation config or config sets (not None)."""
    for holder in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        for name in names:
            value = getattr(holder, name, None)
            if value is not None:
                return value
    return None


@register_adapter("seq2seq_lm")
class Seq2SeqLMAdapter(ModelAdapter):
    """Encoder-decoder language models (``task_type: seq2seq_lm``): two parts, each with declared
    inputs, and a greedy-decoding check across them.

    Sizes: ``input_schema.max_seq_len`` (encoder tokens, default 128), ``vocab_size``, and
    ``decoder_seq_len`` (decoder tokens in the example, default half of max_seq_len); the hidden
    size is read from the model (``config.d_model``).
    """

    input_names = ("input_ids", "attention_mask")
    output_names = ("logits",)

    def __init__(self, task_spec: TaskSpec):
        self.task_spec = task_spec

    @classmethod
    def for_task(cls, task_spec: TaskSpec) -> "Seq2SeqLMAdapter":
        return cls(task_spec)

    def parts(self, model: Any) -> list[Part]:
        """The encoder and decoder parts of ``model`` with their adapters."""
        if not callable(getattr(model, "get_encoder", None)):
            raise ConfigError(
                f"task_spec.task_type seq2seq_lm needs an encoder-decoder model with get_encoder() (T5, BART, "
                f"... from transformers); {type(model).__name__} has none")
        hidden = _config_value(model, "d_model", "hidden_size")
        if not isinstance(hidden, int):
            raise ConfigError(f"{type(model).__name__}: no d_model/hidden_size in its config; cannot size the "
                              "decoder's encoder_hidden_states input")
        seq, vocab = text_input_shape(self.task_spec)
        dec = int(self.task_spec.input_schema.get("decoder_seq_len") or max(2, seq // 2))
        if dec <= 0:
            raise ConfigError(f"task_spec.input_schema.decoder_seq_len: must be a positive integer, got {dec}")
        enc_axes = {1: "encoder_sequence"}
        ids = InputSpec("input_ids", "int64", (seq,), (0, vocab), dynamic_axes={0: "batch", **enc_axes})
        mask = InputSpec("attention_mask", "int64", (seq,), generator="mask", dynamic_axes={0: "batch", **enc_axes})
        encoder = DeclaredInputsAdapter(
            [ids, mask], ("last_hidden_state",), {"last_hidden_state": {0: "batch", **enc_axes}})
        decoder = DeclaredInputsAdapter(
            [InputSpec("decoder_input_ids", "int64", (dec,), (0, vocab), dynamic_axes={0: "batch", 1: "decoder_sequence"}),
             InputSpec("encoder_hidden_states", "float32", (seq, hidden), generator="normal",
                       dynamic_axes={0: "batch", **enc_axes}),
             InputSpec("encoder_attention_mask", "int64", (seq,), generator="mask", dynamic_axes={0: "batch", **enc_axes})],
            ("logits",), {"logits": {0: "batch", 1: "decoder_sequence"}})
        from ..models.seq2seq_parts import DecoderPart, EncoderPart

        return [Part(ENCODER, EncoderPart(model), encoder), Part(DECODER, DecoderPart(model), decoder)]

    def check_parts(self, model: Any, parts: list[Part], runs: Mapping[str, Any], steps: int, seed: int,
                    tolerance: float) -> dict[str, Any]:
        """Greedy decoding of ``steps`` tokens through the loaded parts (``runs``: part name ->
        runnable) against eager ``generate`` on the same padded batch of two inputs.

        A divergence where eager's best two logits are within ``tolerance`` of each other is a tie
        (either token is right) and passes, with the step recorded.
        """
        import numpy as np
        import torch
        from transformers import GenerationConfig

        encoder_inputs = parts[0].adapter.example_inputs(self.task_spec, batch_size=2, seed=seed + 7)
        start = _config_value(model, "decoder_start_token_id", "bos_token_id")
        if start is None:
            raise ConfigError(f"{type(model).__name__}: no decoder_start_token_id in its config; greedy decoding "
                              "cannot start")
        pad = _config_value(model, "pad_token_id")
        # Plain greedy decoding of exactly ``steps`` tokens: none of the family's own processors
        # (forced BOS/EOS, n-gram blocking, minimum lengths), no stop at EOS. transformers fills
        # unset values of a passed config from the model's own, so the model's is swapped for the call.
        config = GenerationConfig(max_new_tokens=steps, do_sample=False, num_beams=1,
                                  decoder_start_token_id=start, bos_token_id=start,
                                  pad_token_id=pad if pad is not None else start)
        saved = model.generation_config
        model.generation_config = config
        try:
            with torch.no_grad():
                eager = model.generate(**encoder_inputs, generation_config=config)
        finally:
            model.generation_config = saved
        eager = eager[:, -(steps + 1):]  # the start token and the generated ones
        hidden = torch.from_numpy(np.asarray(runs[ENCODER](encoder_inputs)[0]))
        tokens = torch.full((eager.shape[0], 1), int(start), dtype=torch.int64)
        for _ in range(steps):
            logits = runs[DECODER]({"decoder_input_ids": tokens, "encoder_hidden_states": hidden,
                                    "encoder_attention_mask": encoder_inputs["attention_mask"]})[0]
            step = torch.from_numpy(np.asarray(logits))[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, step], dim=1)
        record: dict[str, Any] = {"steps": steps, "input_shape": list(encoder_inputs["input_ids"].shape),
                                  "eager_tokens": eager.tolist(), "artifact_tokens": tokens.tolist()}
        differ = (tokens != eager).any(dim=0).nonzero()
        if len(differ) == 0:
            record["match"] = True
            return record
        first = int(differ[0])
        with torch.no_grad():  # eager's margin between its best two tokens at the first differing step
            prefix = eager[:, :first]
            logits = parts[1].module(prefix, parts[0].module(**encoder_inputs), encoder_inputs["attention_mask"])[:, -1]
        top = logits.topk(2, dim=-1).values
        rows = (tokens[:, first] != eager[:, first]).nonzero().flatten()
        margin = float((top[rows, 0] - top[rows, 1]).max())
        record.update(first_difference=first, eager_margin=margin, match=margin <= tolerance)
        if record["match"]:
            record["note"] = (f"step {first} differs where eager's best two tokens are {margin:.2e} apart "
                              "(a tie within tolerance)")
        return record
