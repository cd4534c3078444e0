"""Sizes of a Hugging Face model saved with ``save_pretrained``, read from its ``config.json``
without importing torch or transformers: the ``model=hf_*`` options fill their task spec from it
(``${exporter.hf_config:${model.path},vocab_size}``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def read_config(path: Any) -> dict[str, Any]:
    folder = Path(str(path)).expanduser()
    if not folder.exists():
        raise ConfigError(f"model.path: {folder} does not exist; give a folder saved with save_pretrained "
                          "(model.path=DIR)")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model.path: {folder} holds no config.json; give a folder saved with "
                          "save_pretrained (model.path=DIR)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.path: cannot read {folder / 'config.json'}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"model.path: {folder / 'config.json'} holds a JSON {type(config).__name__}, not the object "
                          "save_pretrained writes")
    return config


def config_value(path: Any, keys: str, default: Any = None) -> Any:
    """The first of ``keys`` ("a|b|c") set in ``<path>/config.json`` (nested ``text_config`` and
    ``vision_config`` searched too), else ``default``. ``num_labels`` counts ``id2label``;
    ``image_size`` becomes ``[num_channels, size, size]``.

    Example:
        >>> import json, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = open(folder + "/config.json", "w").write(json.dumps({"n_positions": 64, "id2label": {"0": "a", "1": "b"}}))
        >>> config_value(folder, "max_position_embeddings|n_positions"), config_value(folder, "num_labels")
        (64, 2)
    """
    if path is None or str(path) in ("", "???"):
        return default
    config = read_config(path)
    scopes = [config, *(config.get(k) or {} for k in ("text_config", "vision_config"))]
    for key in str(keys).split("|"):
        for scope in scopes:
            if key == "num_labels" and isinstance(scope.get("id2label"), dict):
                return len(scope["id2label"])
            if key == "image_size" and scope.get("image_size") is not None:
                size = scope["image_size"]
                size = list(size) if isinstance(size, (list, tuple)) else [size, size]
                return [int(scope.get("num_channels", 3)), *size]
            if scope.get(key) is not None:
                return scope[key]
    return default


def max_seq_len(path: Any, wanted: int = 128) -> int:
    """``wanted`` tokens, or fewer when the model takes fewer positions."""
    positions = config_value(path, "max_position_embeddings|n_positions|n_ctx")
    return int(min(wanted, positions)) if positions else int(wanted)


# model=hf: the head of a saved model's architecture (config.json "architectures") -> the task of
# the hf_* option that builds it (model=hf_<task>).
HEADS = (("ForCausalLM", "causal_lm"), ("LMHeadModel", "causal_lm"), ("ForConditionalGeneration", "seq2seq_lm"),
         ("ForSequenceClassification", "sequence_classification"), ("ForQuestionAnswering", "question_answering"),
         ("ForTokenClassification", "token_classification"), ("ForImageClassification", "image_classification"))
HF_OPTIONS = tuple(f"hf_{task}" for task in dict.fromkeys(task for _, task in HEADS))


def _architectures(config: dict) -> list[str]:
    listed = config.get("architectures") or []
    return [str(a) for a in (listed if isinstance(listed, list) else [listed])]


def heads_of(config: dict) -> dict[str, str]:
    """Each architecture ``config.json`` names whose head an ``hf_*`` option builds -> that option's task."""
    found: dict[str, str] = {}
    for architecture in _architectures(config):
        for suffix, task in HEADS:
            # ...ForConditionalGeneration is an encoder-decoder only where the config says so
            # (LLaVA's and Qwen2-VL's generate from images with a decoder alone).
            if architecture.endswith(suffix) and (task != "seq2seq_lm" or config.get("is_encoder_decoder")):
                found[architecture] = task
                break
    return found


def task_of(config: dict) -> "tuple[str | None, str]":
    """The task a saved model's ``config.json`` was built for, and what says so: its
    ``architectures`` (the class ``save_pretrained`` saved), else ``is_encoder_decoder``. None when
    it names no head an ``hf_*`` option builds, or heads of several kinds (the second item says which).

    Example:
        >>> task_of({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
        ('causal_lm', 'LlamaForCausalLM')
        >>> task_of({"architectures": ["BertForMaskedLM"], "model_type": "bert"})
        (None, "BertForMaskedLM (model_type 'bert')")
    """
    architectures = _architectures(config)
    found = heads_of(config)
    kinds = sorted(set(found.values()))
    if len(kinds) == 1:
        return kinds[0], ", ".join(found)
    if len(kinds) > 1:
        return None, " and ".join(f"{a} (hf_{t})" for a, t in found.items())
    if not architectures and config.get("is_encoder_decoder"):
        return "seq2seq_lm", "is_encoder_decoder: true"
    named = ", ".join(architectures) or "no architectures"
    return None, f"{named} (model_type {config.get('model_type', '?')!r})"
