"""A causal language model with its key/value cache: one graph for the prompt and every next token.

The graph takes ``input_ids``, ``attention_mask`` (over the past and the new tokens),
``position_ids`` (where the model's ``forward`` takes them) and ``past_key_values.{i}.key`` /
``.value`` for each layer ``i`` (``[batch, key/value heads, past_sequence, head size]``), and returns
``logits`` and ``present.{i}.key`` / ``.value`` (the past with the new tokens appended). A prompt is
fed with a past of length 0; each next token with the present of the step before. These are the
names Optimum's ``ORTModelForCausalLM`` and ONNX Runtime GenAI's ``decoder`` type read.

Traced with a past of length 0, the legacy exporter freezes the cache's "is it empty" branch and the
graph is wrong on every cached step, and a single new token makes grouped-query attention fail on
the prompt; so the example the graph is traced with always has a past and at least two new tokens
(``example_inputs``). ``check_generation`` then proves the graph on what generation does: the prompt
with a past of length 0, then token after token through the cache, at batch 2 with left padding,
and greedy decoding against eager ``generate``.

Written against transformers 5 (``forward(cache=...)``, ``output.cache``) and 4.57
(``past_key_values``), whichever is installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

from ..config.task_spec import TaskSpec
from ..models.hf_cache import build_cache, cache_keyword, cache_layers, returned_cache
from .model_folder import copy_model_files
from .tasks import LanguageModelingAdapter, _forward_parameters

if TYPE_CHECKING:
    import torch

PAST = "past_key_values.{}.{}"
PRESENT = "present.{}.{}"
# Axis names: the new tokens, the cached ones, and both (the attention mask and the present).
SEQUENCE, PAST_SEQUENCE, TOTAL_SEQUENCE = "sequence", "past_sequence", "total_sequence"


@dataclass(frozen=True)
class CacheLayout:
    """What the cache of a model holds, per layer: a key and a value of ``[batch, kv_heads, past, head_size]``."""

    layers: int
    key_value_heads: int
    head_size: int
    dtype: str
    attention_heads: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return {"layout": "decoder", **asdict(self), "inputs": [PAST.format("{i}", "key"), PAST.format("{i}", "value")],
                "outputs": [PRESENT.format("{i}", "key"), PRESENT.format("{i}", "value")]}


def cache_layout(model: Any) -> Optional[CacheLayout]:
    """The cache layout of ``model``, read from what it returns for two tokens; None for a model
    without a key/value cache (``lm_stub``, a plain module) or one whose cache is not per-layer
    keys and values."""
    import torch

    keyword = cache_keyword(model)
    if keyword is None:
        return None
    try:
        with torch.no_grad():
            out = model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True, return_dict=True)
        pairs = cache_layers(returned_cache(out))
    except Exception:  # noqa: BLE001 - a cache this adapter cannot read: the model builds without one
        return None
    if not pairs or any(k.dim() != 4 or v.shape != k.shape for k, v in pairs):
        return None
    key = pairs[0][0]
    heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
    return CacheLayout(layers=len(pairs), key_value_heads=int(key.shape[1]), head_size=int(key.shape[3]),
                       dtype=str(key.dtype).replace("torch.", ""), attention_heads=heads)


class CausalLMWithCacheAdapter(LanguageModelingAdapter):
    """Token ids, their mask, positions and the past keys and values in; logits and the present
    keys and values out (module docstring)."""

    def __init__(self, layout: CacheLayout, keyword: str, position_ids: bool):
        super().__init__(attention_mask=True)
        self.layout, self.keyword, self.takes_position_ids = layout, keyword, position_ids
        pasts = [PAST.format(i, kind) for i in range(layout.layers) for kind in ("key", "value")]
        self.input_names = ("input_ids", "attention_mask", *(("position_ids",) if position_ids else ()), *pasts)
        self.output_names = ("logits", *(PRESENT.format(i, kind) for i in range(layout.layers)
                                         for kind in ("key", "value")))

    @classmethod
    def for_model(cls, model: Any) -> Optional["CausalLMWithCacheAdapter"]:
        """The adapter for ``model``'s cache; None when it has none."""
        layout = cache_layout(model)
        if layout is None:
            return None
        return cls(layout, cache_keyword(model), "position_ids" in _forward_parameters(model))

    def bind(self, model: Any) -> None:
        """The names are the cache's (``__init__``): nothing to fit."""

    @property
    def sequence_axes(self) -> Mapping[str, int]:  # type: ignore[override]
        axes = {"input_ids": 1, "logits": 1, "attention_mask": 1}
        if self.takes_position_ids:
            axes["position_ids"] = 1
        return axes

    def dynamic_axes(self, batch: bool = True, sequence: bool = True) -> dict[str, dict[int, str]]:
        """The batch (where asked), the new tokens (where asked), and always the past and the total:
        a cache that cannot grow is no cache."""
        axes: dict[str, dict[int, str]] = {}
        for name in self.input_names + self.output_names:
            named: dict[int, str] = {0: "batch"} if batch else {}
            if name.startswith(("past_key_values.", "present.")):
                named[2] = PAST_SEQUENCE if name.startswith("past") else TOTAL_SEQUENCE
            elif name == "attention_mask":
                named[1] = TOTAL_SEQUENCE
            elif sequence:
                named[1] = SEQUENCE
            axes[name] = named
        return axes

    def output_axes(self, name: str, tensor: "torch.Tensor", batch: bool, sequence: bool) -> dict[int, str]:
        return self.dynamic_axes(batch, sequence).get(name, {})

    def example_inputs(self, task_spec: TaskSpec, batch_size: int = 1, seed: int | None = 0,
                       seq_len: int | None = None) -> "dict[str, torch.Tensor]":
        """``max_seq_len`` tokens (or ``seq_len``) split into a past (its keys and values drawn at
        random) and at least two new tokens; rows after the first are left-padded in the past."""
        import torch

        # At least 3 past and 3 new tokens in the example and 2 and 2 in the second shape, so that even
        # a tiny max_seq_len gives two examples that differ in both the past and the new tokens.
        length = max(int(seq_len or task_spec.input_schema.get("max_seq_len", 16)), 4 if seq_len else 6)
        past = length // 2
        new = length - past
        generator = torch.Generator().manual_seed(int(seed or 0))
        vocab = int(task_spec.input_schema.get("vocab_size", 2))
        ids = torch.randint(0, vocab, (batch_size, new), generator=generator)
        mask = torch.ones(batch_size, past + new, dtype=torch.long)
        for row in range(1, batch_size):
            mask[row, :min(row, past - 1)] = 0  # left padding, the mask proven live
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.takes_position_ids:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        dtype = getattr(torch, self.layout.dtype)
        shape = (batch_size, self.layout.key_value_heads, past, self.layout.head_size)
        for i in range(self.layout.layers):
            for kind in ("key", "value"):
                inputs[PAST.format(i, kind)] = torch.randn(shape, generator=generator).to(dtype)
        return inputs

    def call(self, model: Any, inputs: "Mapping[str, torch.Tensor]") -> Any:
        pairs = [(inputs[PAST.format(i, "key")], inputs[PAST.format(i, "value")]) for i in range(self.layout.layers)]
        kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                  self.keyword: build_cache(pairs), "use_cache": True, "return_dict": True}
        if self.takes_position_ids:
            kwargs["position_ids"] = inputs["position_ids"]
        out = model(**kwargs)
        present = returned_cache(out)
        flat = {"logits": out.logits}
        for i, (key, value) in enumerate(cache_layers(present)):
            flat[PRESENT.format(i, "key")], flat[PRESENT.format(i, "value")] = key, value
        return flat

    # --- generation, checked on the loaded artifact -------------------------------------------

    def prompt_inputs(self, ids: "torch.Tensor", mask: "torch.Tensor") -> "dict[str, torch.Tensor]":
        """A prompt as the graph takes it: a past of length 0."""
        import torch

        inputs = {"input_ids": ids, "attention_mask": mask}
        if self.takes_position_ids:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        dtype = getattr(torch, self.layout.dtype)
        empty = torch.zeros(ids.shape[0], self.layout.key_value_heads, 0, self.layout.head_size, dtype=dtype)
        for i in range(self.layout.layers):
            for kind in ("key", "value"):
                inputs[PAST.format(i, kind)] = empty
        return inputs

    def as_prompt(self, sample: "Mapping[str, torch.Tensor]") -> "dict[str, torch.Tensor]":
        """A sample of the graph without the cache (``input_ids``, perhaps ``attention_mask``) as this
        graph takes it: the whole sequence as a prompt, with a past of length 0."""
        import torch

        ids = sample["input_ids"]
        mask = sample.get("attention_mask")
        return self.prompt_inputs(ids, mask if mask is not None else torch.ones_like(ids))

    def greedy_agreement(self, run: Any, run_reference: Any, steps: int, seed: int, vocab: int) -> dict[str, Any]:
        """The share of ``steps`` greedy tokens ``run`` (a quantized graph) decodes as
        ``run_reference`` (its fp32 twin) does from the same random prompt, both through their own
        cache; the first token that differs, if one does (every token after it follows another text)."""
        import torch

        prompt = torch.randint(0, vocab, (1, 8), generator=torch.Generator().manual_seed(int(seed) + 7))
        tokens, reference = self.greedy_tokens(run, prompt, steps), self.greedy_tokens(run_reference, prompt, steps)
        first = next((i for i, (a, b) in enumerate(zip(tokens, reference)) if a != b), None)
        return {"steps": steps, "agreement": sum(a == b for a, b in zip(tokens, reference)) / steps,
                "first_difference": first, "prompt": prompt[0].tolist(), "tokens": tokens, "fp32_tokens": reference,
                "compared_with": "the fp32 graph of this build (not eager PyTorch), from this prompt"}

    def greedy_tokens(self, run: Any, prompt: "torch.Tensor", steps: int) -> list[int]:
        """``steps`` tokens decoded greedily by ``run`` (named inputs -> list of arrays) through its cache."""
        import numpy as np
        import torch

        mask = torch.ones_like(prompt)
        inputs = self.prompt_inputs(prompt, mask)
        tokens: list[int] = []
        for _ in range(steps):
            outputs = run(inputs)
            token = int(np.asarray(outputs[0])[0, -1].argmax())
            tokens.append(token)
            mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
            inputs = self.next_inputs(torch.tensor([[token]]), mask,
                                      [torch.from_numpy(np.asarray(a)) for a in outputs[1:]])
        return tokens

    def next_inputs(self, token: "torch.Tensor", mask: "torch.Tensor", present: list) -> "dict[str, torch.Tensor]":
        """The next step's inputs: one token per row, the mask grown by it, and the present as the past."""
        inputs = {"input_ids": token, "attention_mask": mask}
        if self.takes_position_ids:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]
        for i in range(self.layout.layers):
            inputs[PAST.format(i, "key")], inputs[PAST.format(i, "value")] = present[2 * i], present[2 * i + 1]
        return inputs

    def runtime_files(self, model: Any, folder: Any, graph_file: str) -> dict[str, Any]:
        """The files runtimes read beside the graph (``write_model_folder``)."""
        return write_model_folder(model, folder, graph_file, self.layout, self.takes_position_ids)

    def check_generation(self, model: Any, run: Any, steps: int, seed: int, atol: Optional[float],
                         rtol: Optional[float]) -> dict[str, Any]:
        """The artifact (``run``: named inputs -> list of arrays) against eager ``model`` on what
        generation does. (a) Step by step: a batch of 2 prompts, the second left-padded, fed with a
        past of length 0, then ``steps`` tokens one at a time through the cache the graph returned;
        the logits of every real position within tolerance of eager's own cached run. (b) Greedy:
        ``steps`` tokens decoded through the artifact's cache equal eager ``generate``'s, or differ
        only where eager's two best logits tie within the tolerance.

        ``steps`` is cut to what the model's positions leave after the prompt. Without bounds
        (``atol``/``rtol`` None: a quantized artifact the user set no bounds for) the differences
        are measured and reported, and only the greedy tokens decide ``match``."""
        import numpy as np
        import torch

        generator = torch.Generator().manual_seed(int(seed))
        vocab = int(model.config.vocab_size) if hasattr(model, "config") else 2
        prompt_len = 6
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None) or getattr(
            getattr(model, "config", None), "n_positions", None)
        if positions:
            steps = max(1, min(steps, int(positions) - prompt_len - 1))
        bounded = atol is not None or rtol is not None
        atol, rtol = atol or 0.0, rtol or 0.0
        ids = torch.randint(0, vocab, (2, prompt_len), generator=generator)
        mask = torch.ones(2, prompt_len, dtype=torch.long)
        mask[1, :2] = 0
        worst, first_bad = 0.0, None
        eager_in = self.prompt_inputs(ids, mask)
        graph_in = dict(eager_in)
        for step in range(steps + 1):
            with torch.no_grad():
                eager = [t for t in self.call(model, eager_in).values()]
            graph = [torch.from_numpy(np.asarray(a)) for a in run(graph_in)]
            real = eager_in["attention_mask"][:, -eager[0].shape[1]:].bool()  # the new tokens that are not padding
            diff = (graph[0] - eager[0]).abs()[real]
            bound = (atol + rtol * eager[0].abs()[real])
            step_worst = float(diff.max()) if diff.numel() else 0.0
            worst = max(worst, step_worst)
            if bounded and first_bad is None and bool((diff > bound).any()):
                first_bad = step
            token = eager[0][:, -1:].argmax(-1)
            mask = torch.cat([eager_in["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)
            eager_in = self.next_inputs(token, mask, eager[1:])
            graph_in = self.next_inputs(token, mask, graph[1:])
        stepwise = {"batch": 2, "left_padding": [0, 2], "prompt_tokens": prompt_len, "steps": steps,
                    "max_abs_diff": worst, "passed": first_bad is None if bounded else None,
                    **({"first_failing_step": first_bad} if first_bad is not None else {})}
        greedy = self._greedy(model, run, steps, ids[:1], atol + rtol)
        return {"stepwise": stepwise, "greedy": greedy, "match": stepwise["passed"] is not False and greedy["match"]}

    def _greedy(self, model: Any, run: Any, steps: int, prompt: "torch.Tensor", tie: float) -> dict[str, Any]:
        import torch

        with torch.no_grad():
            kwargs = {"max_new_tokens": steps, "min_new_tokens": steps, "do_sample": False, "num_beams": 1}
            eager_tokens = model.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs)[0, prompt.shape[1]:]
            # Eager's logits along its own tokens: a tie between its two best is no difference.
            full = model(input_ids=torch.cat([prompt[0], eager_tokens]).unsqueeze(0), use_cache=False).logits[0]
        tokens = self.greedy_tokens(run, prompt, steps)
        expected = [int(t) for t in eager_tokens]
        first = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), None)
        outcome: dict[str, Any] = {"steps": steps, "match": first is None, "eager_tokens": expected,
                                   "artifact_tokens": tokens}
        if first is not None:
            logits = full[prompt.shape[1] - 1 + first]
            top2 = torch.topk(logits, 2).values
            if float(top2[0] - top2[1]) <= tie:
                outcome.update(match=True, note=f"token {first} differs where eager's two best logits tie "
                                                f"within {tie:g}; the tokens after it are not compared")
            else:
                outcome["first_difference"] = first
        return outcome


# model_type values ONNX Runtime GenAI 0.18 runs in this graph's layout (split keys and values per
# layer, past_key_values.%d.key) under its generic "decoder" type. Its own "gpt2" type expects one
# combined past per layer and fails on this graph, so the type written is always "decoder".
GENAI_FAMILIES = frozenset({"gpt2", "gpt_neox", "llama", "mistral", "qwen2", "phi", "phi3", "gemma", "gemma2"})
GENAI_TYPE = "decoder"


def write_model_folder(model: Any, folder: Any, graph_file: str, layout: CacheLayout,
                       position_ids: bool = True) -> dict[str, Any]:
    """Write beside ``graph_file`` in ``folder`` what runtimes read with it: ``config.json`` and
    ``generation_config.json`` (the model's own, as saved), the tokenizer files its folder holds,
    and ``genai_config.json`` for the families ONNX Runtime GenAI runs. Returns what the folder is
    ready for (``ArtifactRecord.runtimes``)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    config, generation = model.config, getattr(model, "generation_config", None)
    tokenizer = copy_model_files(model, folder)
    runtimes: dict[str, Any] = {"optimum": {"class": "ORTModelForCausalLM", "files": ["config.json", graph_file]}}
    family = getattr(config, "model_type", None)
    if family not in GENAI_FAMILIES:
        runtimes["onnxruntime_genai"] = {"skipped": f"model_type {family!r} is not one ONNX Runtime GenAI runs in "
                                                    f"this layout ({', '.join(sorted(GENAI_FAMILIES))})"}
    elif not tokenizer:
        runtimes["onnxruntime_genai"] = {"config": "genai_config.json", "type": GENAI_TYPE,
                                         "note": "no tokenizer files in the model's folder: feed token ids"}
    else:
        runtimes["onnxruntime_genai"] = {"config": "genai_config.json", "type": GENAI_TYPE}
    if "config" in runtimes["onnxruntime_genai"]:
        genai = genai_config(config, generation, graph_file, layout, position_ids)
        (folder / "genai_config.json").write_text(json.dumps(genai, indent=4, sort_keys=True) + "\n")
    runtimes["tokenizer_files"] = tokenizer
    return runtimes


def genai_config(config: Any, generation: Any, graph_file: str, layout: CacheLayout,
                 position_ids: bool = True) -> dict[str, Any]:
    """ONNX Runtime GenAI's ``genai_config.json`` for this graph: its generic decoder type, the
    graph's input and output names, the cache's sizes, the token ids and the search defaults from
    the model's generation config (fields as its own model builder writes them)."""

    def setting(name: str, default: Any) -> Any:
        value = getattr(generation, name, None) if generation is not None else None
        if value is None:
            value = getattr(config, name, None)
        return default if value is None else value

    context = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048)
    eos = setting("eos_token_id", 0)
    eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    pad = setting("pad_token_id", None)
    heads = int(layout.attention_heads or getattr(config, "num_attention_heads", layout.key_value_heads))
    hidden = int(getattr(config, "hidden_size", heads * layout.head_size))
    return {
        "model": {
            "bos_token_id": setting("bos_token_id", eos_ids[0]),
            "context_length": context,
            "decoder": {
                "filename": graph_file,
                "head_size": layout.head_size,
                "hidden_size": hidden,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           **({"position_ids": "position_ids"} if position_ids else {}),
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": heads,
                "num_hidden_layers": layout.layers,
                "num_key_value_heads": layout.key_value_heads,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
            },
            "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
            "pad_token_id": eos_ids[0] if pad is None else pad,
            "type": GENAI_TYPE,
            "vocab_size": int(config.vocab_size),
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": bool(setting("do_sample", False)),
            "early_stopping": True,
            "length_penalty": float(setting("length_penalty", 1.0)),
            "max_length": context,
            "min_length": 0,
            "no_repeat_ngram_size": int(setting("no_repeat_ngram_size", 0)),
            "num_beams": int(setting("num_beams", 1)),
            "num_return_sequences": int(setting("num_return_sequences", 1)),
            # The graph concatenates the past and the new keys into a present that grows.
            "past_present_share_buffer": False,
            "repetition_penalty": float(setting("repetition_penalty", 1.0)),
            "temperature": float(setting("temperature", 1.0)),
            "top_k": int(setting("top_k", 50)),
            "top_p": float(setting("top_p", 1.0)),
        },
    }
