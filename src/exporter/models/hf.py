"""Hugging Face models from a local folder saved with ``save_pretrained`` (``model=hf_*``).

Only local folders: ``local_files_only=True``, so a job never reaches for the hub. The task spec's
sizes come from the folder's ``config.json`` (``exporter.config.hf_folder``, read without torch).
"""

from __future__ import annotations

import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

from ..config.hf_folder import read_config, task_of
from ..errors import ConfigError, first_line, refused_pickle

log = logging.getLogger("exporter")

# model option -> the transformers Auto class that loads it
TASKS = {
    "causal_lm": "AutoModelForCausalLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "question_answering": "AutoModelForQuestionAnswering",
    "token_classification": "AutoModelForTokenClassification",
    "image_classification": "AutoModelForImageClassification",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
}


# model.dtype: the weights' dtype in the build. float32 by default, whatever the checkpoint holds;
# auto keeps the checkpoint's (transformers 5's own default), where each format supports it.
DTYPES = ("float32", "auto", "float16", "bfloat16")


def checkpoint_dtype(config: dict) -> str:
    """The dtype a saved model's weights are in, as its config.json says (``dtype`` from
    transformers 5, ``torch_dtype`` before): float32 when it says nothing."""
    return str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")


def from_pretrained(path: str, task: str, dtype: str = "float32", **kwargs: Any) -> Any:
    """Load the model saved in ``path`` for ``task`` (a key of ``TASKS``), in eval mode, with its
    weights in ``dtype`` (``DTYPES``; ``auto``: the checkpoint's own)."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("model: Hugging Face models need transformers: pip install 'exporter[hf]'") from None
    if task not in TASKS:
        raise ConfigError(f"model.task: unknown task {task!r}; valid values: {sorted(TASKS)}")
    if str(dtype) not in DTYPES:
        raise ConfigError(f"model.dtype: {dtype!r} is not a dtype the tool builds in; valid values: {list(DTYPES)}")
    config = read_config(path)  # a clear message for a folder that is not a saved model
    saved = checkpoint_dtype(config)
    chosen = saved if dtype == "auto" else str(dtype)
    if saved != chosen:
        log.info("model: the checkpoint's weights are %s; building in %s (model.dtype=auto keeps %s)", saved, chosen,
                 saved)
    import torch

    kwargs["dtype"] = getattr(torch, chosen, torch.float32)
    auto = getattr(transformers, TASKS[task])
    from transformers.utils import logging as hf_logging

    # No progress bar or notes of transformers' own on the console: the job says what matters.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # torch.load's own warning about the pickle it refused: the error below names the file.
            warnings.simplefilter("ignore")
            model = auto.from_pretrained(str(Path(path).expanduser()), local_files_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        pickled = sorted(p.name for p in Path(path).expanduser().glob("*.bin")) or ["its weights"]
        raise ConfigError(
            f"model.path: {Path(path) / pickled[0]} is a pickle the tool will not load ({refused_pickle(exc) or first_line(exc)}): "
            "weights are loaded as tensors only, never running what a pickle asks; save the model with "
            "save_pretrained (model.safetensors) where you trust its source") from None
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        config = read_config(path)
        kind = config.get("model_type", "?")
        others = sorted(name for name, cls in TASKS.items() if name != task)
        guess = task_of(config)[0]
        hint = (f"it is a {guess} model: use model=hf_{guess}" if guess and guess != task
                else f"choose the option for its kind (model=hf_<task>, tasks: {others})")
        raise ConfigError(f"model.path: {path} holds a {kind!r} model, which {TASKS[task]} (model.task={task}) "
                          f"does not load; {hint}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval()
