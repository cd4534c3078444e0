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

With the key/value cache (``task_spec.use_cache``, the default for the formats that carry it), the
files and names are the ones Optimum's ``ORTModelForSeq2SeqLM`` loads, and cross-attention keys and
values are computed once:

- ``encoder_model``: as ``encoder``.
- ``decoder_model`` (the first step): ``input_ids``, ``encoder_hidden_states``,
  ``encoder_attention_mask`` -> ``logits``, and per layer ``i`` ``present.{i}.decoder.key`` /
  ``.value`` (``[batch, heads, decoder_sequence, head size]``) and ``present.{i}.encoder.key`` /
  ``.value`` (``[batch, heads, encoder_sequence, head size]``).
- ``decoder_with_past_model`` (every next step): ``input_ids``, ``encoder_attention_mask`` and per
  layer ``past_key_values.{i}.decoder.key`` / ``.value`` / ``past_key_values.{i}.encoder.key`` /
  ``.value`` -> ``logits`` and the decoder's ``present.{i}.decoder.key`` / ``.value`` (the
  cross-attention ones do not change).

The greedy check then runs the parts as a runtime does: the encoder once, the first step, then one
token at a time through the cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ..config.task_spec import TaskSpec
from ..errors import ConfigError
from .base import ModelAdapter, Part
from .declared import DeclaredInputsAdapter, InputSpec
from .example_inputs import text_input_shape
from .registry import register_adapter

if TYPE_CHECKING:
    import torch

ENCODER, DECODER = "encoder", "decoder"
# With the key/value cache: Optimum's file stems.
ENCODER_MODEL, DECODER_MODEL, DECODER_WITH_PAST = "encoder_model", "decoder_model", "decoder_with_past_model"
PAST = "past_key_values.{}.{}.{}"  # layer, decoder|encoder, key|value
PRESENT = "present.{}.{}.{}"


@dataclass(frozen=True)
class Seq2SeqCacheLayout:
    """An encoder-decoder's cache per decoder layer: its own keys and values
    (``[batch, key_value_heads, decoder_sequence, head_size]``) and the cross-attention ones
    (``[batch, cross_heads, encoder_sequence, head_size]``)."""

    layers: int
    key_value_heads: int
    cross_heads: int
    head_size: int
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"layout": "encoder-decoder", **asdict(self),
                "inputs": [PAST.format("{i}", side, kind) for side in ("decoder", "encoder") for kind in ("key", "value")],
                "outputs": [PRESENT.format("{i}", side, kind) for side in ("decoder", "encoder")
                            for kind in ("key", "value")]}


class _PartAdapter(DeclaredInputsAdapter):
    """A cached part's declared inputs. Its present keys and values grow past any input's axis
    (``past + new``), so only output axes named after an input axis are checked against it."""

    def __init__(self, inputs: Sequence[InputSpec], output_names: Sequence[str],
                 output_axes: Mapping[str, Mapping[int, str]], files: Any = None):
        super().__init__(inputs, output_names, output_axes)
        self._files = files

    def check_outputs(self, names, tensors, inputs) -> None:
        labels = {label for spec in self.inputs for label in spec.dynamic_axes.values()}
        saved = self.declared_output_axes
        self.declared_output_axes = {name: {a: label for a, label in axes.items() if label in labels}
                                     for name, axes in saved.items()}
        try:
            super().check_outputs(names, tensors, inputs)
        finally:
            self.declared_output_axes = saved

    def runtime_files(self, model: Any, folder: Any, graph_file: str) -> Optional[dict[str, Any]]:
        """The first-step decoder's artifact carries what ``ORTModelForSeq2SeqLM`` reads beside the
        graphs: the model's ``config.json``, ``generation_config.json`` and tokenizer files."""
        if self._files is None:
            return None
        from .model_folder import copy_model_files

        tokenizer = copy_model_files(model.model, folder)
        return {"optimum": {"class": "ORTModelForSeq2SeqLM",
                            "files": ["config.json", *(f"{stem}.onnx" for stem in self._files)]},
                "onnxruntime_genai": {"skipped": "ONNX Runtime GenAI runs no encoder-decoder text model"},
                "tokenizer_files": tokenizer}


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

    def __init__(self, task_spec: TaskSpec, cache: Optional[Seq2SeqCacheLayout] = None):
        self.task_spec = task_spec
        self.cache = cache  # with the key/value cache: its layout (three parts); None: two parts

    def with_cache(self, layout: Seq2SeqCacheLayout) -> "Seq2SeqLMAdapter":
        """This adapter for the layout with the key/value cache."""
        return type(self)(self.task_spec, layout)

    def cache_layout(self, model: Any) -> Optional[Seq2SeqCacheLayout]:
        """The layout of ``model``'s cache, read from what its first decoding step returns; None for
        a model without one the tool can export."""
        import torch

        from ..models.hf_cache import cache_keyword
        from ..models.seq2seq_parts import DecoderFirstStepPart

        hidden = _config_value(model, "d_model", "hidden_size")
        start = _config_value(model, "decoder_start_token_id", "bos_token_id")
        if cache_keyword(model) is None or not isinstance(hidden, int) or start is None:
            return None
        try:
            with torch.no_grad():
                out = DecoderFirstStepPart(model)(torch.full((1, 1), int(start), dtype=torch.long),
                                                  torch.zeros(1, 3, hidden), torch.ones(1, 3, dtype=torch.long))
        except Exception:  # noqa: BLE001 - a cache this adapter cannot read: the model builds without one
            return None
        pairs = list(out[1:])
        if not pairs or len(pairs) % 4 or any(t.dim() != 4 for t in pairs):
            return None
        own, cross = pairs[0], pairs[2]
        if own.shape[2] != 1 or cross.shape[2] != 3 or own.shape[3] != cross.shape[3]:
            return None
        return Seq2SeqCacheLayout(layers=len(pairs) // 4, key_value_heads=int(own.shape[1]),
                                  cross_heads=int(cross.shape[1]), head_size=int(own.shape[3]),
                                  dtype=str(own.dtype).replace("torch.", ""))

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
        from ..models.seq2seq_parts import DecoderFirstStepPart, DecoderPart, DecoderWithPastPart, EncoderPart

        if self.cache is None:
            return [Part(ENCODER, EncoderPart(model), encoder), Part(DECODER, DecoderPart(model), decoder)]
        c = self.cache
        dec_axes = {0: "batch", 1: "decoder_sequence"}
        own_in = (c.key_value_heads, dec, c.head_size)
        cross = (c.cross_heads, seq, c.head_size)
        first_outputs = {"logits": dec_axes}
        with_past_inputs = [InputSpec("input_ids", "int64", (1,), (0, vocab), dynamic_axes=dec_axes),
                            InputSpec("encoder_attention_mask", "int64", (seq,), generator="mask",
                                      dynamic_axes={0: "batch", **enc_axes})]
        with_past_outputs = {"logits": dec_axes}
        for i in range(c.layers):
            for kind in ("key", "value"):
                first_outputs[PRESENT.format(i, "decoder", kind)] = {0: "batch", 2: "decoder_sequence"}
            for kind in ("key", "value"):
                first_outputs[PRESENT.format(i, "encoder", kind)] = {0: "batch", 2: "encoder_sequence"}
            for kind in ("key", "value"):
                with_past_inputs.append(InputSpec(PAST.format(i, "decoder", kind), c.dtype, own_in, generator="normal",
                                                  dynamic_axes={0: "batch", 2: "past_decoder_sequence"}))
            for kind in ("key", "value"):
                with_past_inputs.append(InputSpec(PAST.format(i, "encoder", kind), c.dtype, cross, generator="normal",
                                                  dynamic_axes={0: "batch", 2: "encoder_sequence"}))
            for kind in ("key", "value"):
                with_past_outputs[PRESENT.format(i, "decoder", kind)] = {0: "batch", 2: "total_decoder_sequence"}
        first = _PartAdapter(
            [InputSpec("input_ids", "int64", (dec,), (0, vocab), dynamic_axes=dec_axes),
             InputSpec("encoder_hidden_states", "float32", (seq, hidden), generator="normal",
                       dynamic_axes={0: "batch", **enc_axes}),
             InputSpec("encoder_attention_mask", "int64", (seq,), generator="mask", dynamic_axes={0: "batch", **enc_axes})],
            tuple(first_outputs), first_outputs, files=(ENCODER_MODEL, DECODER_MODEL, DECODER_WITH_PAST))
        with_past = _PartAdapter(with_past_inputs, tuple(with_past_outputs), with_past_outputs)
        return [Part(ENCODER_MODEL, EncoderPart(model), encoder),
                Part(DECODER_MODEL, DecoderFirstStepPart(model), first),
                Part(DECODER_WITH_PAST, DecoderWithPastPart(model, c.layers, hidden), with_past)]

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
        mask = encoder_inputs["attention_mask"]
        encoder = ENCODER if self.cache is None else ENCODER_MODEL
        hidden = torch.from_numpy(np.asarray(runs[encoder](encoder_inputs)[0]))
        tokens = torch.full((eager.shape[0], 1), int(start), dtype=torch.int64)
        decode = self._decode_uncached if self.cache is None else self._decode_cached
        step_logits = decode(runs, hidden, mask, tokens, steps)
        for logits in step_logits:
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
        record: dict[str, Any] = {"steps": steps, "input_shape": list(encoder_inputs["input_ids"].shape),
                                  "eager_tokens": eager.tolist(), "artifact_tokens": tokens.tolist()}
        from ..models.seq2seq_parts import DecoderPart, EncoderPart

        decoder = DecoderPart(model)
        with torch.no_grad():
            eager_hidden = EncoderPart(model)(**encoder_inputs)
        if self.cache is not None:
            # Each step's logits through the cache against eager's on the same tokens (the whole prefix).
            worst, bad = 0.0, None
            for step, logits in enumerate(step_logits):
                with torch.no_grad():
                    reference = decoder(tokens[:, :step + 1], eager_hidden, mask)[:, -1]
                diff = (logits - reference).abs()
                worst = max(worst, float(diff.max()))
                if bad is None and bool((diff > tolerance * (1 + reference.abs())).any()):
                    bad = step
            record["through_cache"] = {"parts": [ENCODER_MODEL, DECODER_MODEL, DECODER_WITH_PAST],
                                       "max_abs_diff": worst, "passed": bad is None,
                                       **({"first_failing_step": bad} if bad is not None else {})}
        differ = (tokens != eager).any(dim=0).nonzero()
        if len(differ) == 0:
            record["match"] = record.get("through_cache", {}).get("passed", True)
            return record
        first = int(differ[0])
        with torch.no_grad():  # eager's margin between its best two tokens at the first differing step
            prefix = eager[:, :first]
            logits = decoder(prefix, eager_hidden, mask)[:, -1]
        top = logits.topk(2, dim=-1).values
        rows = (tokens[:, first] != eager[:, first]).nonzero().flatten()
        margin = float((top[rows, 0] - top[rows, 1]).max())
        record.update(first_difference=first, eager_margin=margin, match=margin <= tolerance)
        if record["match"]:
            record["note"] = (f"step {first} differs where eager's best two tokens are {margin:.2e} apart "
                              "(a tie within tolerance)")
        return record

    @staticmethod
    def _decode_uncached(runs: Mapping[str, Any], hidden: "torch.Tensor", mask: "torch.Tensor",
                         tokens: "torch.Tensor", steps: int) -> "list[torch.Tensor]":
        """Each step's last logits, the decoder fed the whole prefix every time."""
        import numpy as np
        import torch

        out = []
        for _ in range(steps):
            logits = torch.from_numpy(np.asarray(runs[DECODER]({
                "decoder_input_ids": tokens, "encoder_hidden_states": hidden, "encoder_attention_mask": mask})[0]))[:, -1]
            out.append(logits)
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
        return out

    def _decode_cached(self, runs: Mapping[str, Any], hidden: "torch.Tensor", mask: "torch.Tensor",
                       tokens: "torch.Tensor", steps: int) -> "list[torch.Tensor]":
        """Each step's last logits as a runtime decodes: ``decoder_model`` on the start token, then
        ``decoder_with_past_model`` on one token at a time, fed the present it returned and the
        cross-attention keys and values of the first step."""
        import numpy as np
        import torch

        layers = self.cache.layers
        out: list[torch.Tensor] = []
        outputs = [torch.from_numpy(np.asarray(a)) for a in runs[DECODER_MODEL](
            {"input_ids": tokens, "encoder_hidden_states": hidden, "encoder_attention_mask": mask})]
        cross = {PAST.format(i, "encoder", kind): outputs[1 + 4 * i + 2 + k]
                 for i in range(layers) for k, kind in enumerate(("key", "value"))}
        own = {PAST.format(i, "decoder", kind): outputs[1 + 4 * i + k]
               for i in range(layers) for k, kind in enumerate(("key", "value"))}
        for step in range(steps):
            logits = outputs[0][:, -1]
            out.append(logits)
            if step == steps - 1:
                break
            feed = {"input_ids": logits.argmax(-1, keepdim=True), "encoder_attention_mask": mask}
            for i in range(layers):  # the graph's input order: per layer, decoder then encoder
                for side, held in (("decoder", own), ("encoder", cross)):
                    for kind in ("key", "value"):
                        feed[PAST.format(i, side, kind)] = held[PAST.format(i, side, kind)]
            outputs = [torch.from_numpy(np.asarray(a)) for a in runs[DECODER_WITH_PAST](feed)]
            own = {PAST.format(i, "decoder", kind): outputs[1 + 2 * i + k]
                   for i in range(layers) for k, kind in enumerate(("key", "value"))}
        return out
