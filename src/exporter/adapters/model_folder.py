"""The files a runtime reads beside a Hugging Face model's graph, written into its build (Optimum's
``ORTModelFor<Task>.from_pretrained(folder)``, ONNX Runtime GenAI): the model's ``config.json`` and
``generation_config.json``, and its tokenizer or image-processor files, copied from the folder it
was loaded from (or, for a model built in Python, its config saved)."""

from __future__ import annotations

from typing import Any, Optional

from ..records.layout import PREPROCESSOR_FILES, TOKENIZER_FILES

# The task type of a single graph -> the Optimum class that runs its build folder.
OPTIMUM_CLASSES = {
    "text_classification": "ORTModelForSequenceClassification",
    "question_answering": "ORTModelForQuestionAnswering",
    "token_classification": "ORTModelForTokenClassification",
    "feature_extraction": "ORTModelForFeatureExtraction",
    "vision_classification": "ORTModelForImageClassification",
    "language_modeling": "ORTModelForCausalLM",
}


def is_hf_model(model: Any) -> bool:
    """A transformers model: one whose config saves itself as ``config.json``."""
    return callable(getattr(getattr(model, "config", None), "to_json_file", None))


def _source_folder(model: Any) -> Optional[str]:
    import os

    path = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(path) if path and os.path.isdir(str(path)) else None


def copy_model_files(model: Any, folder: Any) -> list[str]:
    """Write into ``folder`` the model's ``config.json`` and ``generation_config.json`` (copied from
    the folder it was loaded from, else saved from the model) and the tokenizer and image-processor
    files that folder holds; returns the names of those files."""
    import shutil
    from pathlib import Path

    folder, source = Path(folder), _source_folder(model)
    if source is not None and (Path(source) / "config.json").is_file():
        shutil.copyfile(Path(source) / "config.json", folder / "config.json")
    else:
        model.config.to_json_file(str(folder / "config.json"))
    generation = getattr(model, "generation_config", None)
    if source is not None and (Path(source) / "generation_config.json").is_file():
        shutil.copyfile(Path(source) / "generation_config.json", folder / "generation_config.json")
    elif generation is not None:
        generation.to_json_file(str(folder / "generation_config.json"))
    tokenizer = []
    for name in (*TOKENIZER_FILES, *PREPROCESSOR_FILES):
        if source is not None and (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, folder / name)
            tokenizer.append(name)
    return tokenizer



def optimum_folder(model: Any, folder: Any, graph_file: str, task_type: str, **options: Any) -> Optional[dict[str, Any]]:
    """For a transformers model's ONNX graph: its model files beside it, and the record of the Optimum
    class that loads the folder (``options``: what it is loaded with, ``use_cache=False`` for a causal
    model's graph without the cache). None for another model, format or task."""
    if not graph_file.endswith(".onnx") or not is_hf_model(model) or task_type not in OPTIMUM_CLASSES:
        return None
    files = copy_model_files(model, folder)
    optimum: dict[str, Any] = {"class": OPTIMUM_CLASSES[task_type], "files": ["config.json", graph_file]}
    if options:
        optimum["from_pretrained"] = options
    return {"optimum": optimum, "tokenizer_files": files}
