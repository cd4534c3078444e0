"""Hugging Face models from a local folder saved with ``save_pretrained`` (``model=hf_*``).

Only local folders: ``local_files_only=True``, so a job never reaches for the hub. The task spec's
sizes come from the folder's ``config.json`` (``exporter.config.hf_folder``, read without torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.hf_folder import read_config
from ..errors import ConfigError

# model option -> the transformers Auto class that loads it
TASKS = {
    "causal_lm": "AutoModelForCausalLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "question_answering": "AutoModelForQuestionAnswering",
    "token_classification": "AutoModelForTokenClassification",
    "image_classification": "AutoModelForImageClassification",
    "seq2seq_lm": "AutoModelForSeq2SeqLM",
}


def from_pretrained(path: str, task: str, **kwargs: Any) -> Any:
    """Load the model saved in ``path`` for ``task`` (a key of ``TASKS``), in eval mode."""
    try:
        import transformers
    except ImportError:
        raise ConfigError("model: Hugging Face models need transformers: pip install 'exporter[hf]'") from None
    if task not in TASKS:
        raise ConfigError(f"model.task: unknown task {task!r}; valid values: {sorted(TASKS)}")
    read_config(path)  # a clear message for a folder that is not a saved model
    auto = getattr(transformers, TASKS[task])
    try:
        model = auto.from_pretrained(str(Path(path).expanduser()), local_files_only=True, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" not in str(exc):
            raise
        kind = read_config(path).get("model_type", "?")
        others = sorted(name for name, cls in TASKS.items() if name != task)
        raise ConfigError(f"model.path: {path} holds a {kind!r} model, which {TASKS[task]} (model.task={task}) "
                          f"does not load; choose the option for its kind (model=hf_<task>, tasks: {others})") from None
    return model.eval()
