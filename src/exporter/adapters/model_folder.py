"""The files a runtime reads beside a Hugging Face model's graph, written into its build (Optimum's
``ORTModelFor<Task>.from_pretrained(folder)``, ONNX Runtime GenAI, and transformers' own
``from_pretrained`` beside ``model.safetensors``): the model's ``config.json`` and
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
        _built_dtype(model, folder / "config.json")
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


def _built_dtype(model: Any, config_file: Any) -> None:
    """A checkpoint saved in one dtype and built in another (``model.dtype``): the copied config says
    the build's, so that ``from_pretrained`` of the build loads its weights as they are."""
    import json

    first = next((p for p in model.parameters() if p.is_floating_point()), None) if hasattr(model, "parameters") else None
    if first is None:
        return
    built = str(first.dtype).replace("torch.", "")
    data = json.loads(config_file.read_text(encoding="utf-8"))
    keys = [key for key in ("dtype", "torch_dtype") if isinstance(data.get(key), str) and data[key] != built]
    if keys:
        data.update({key: built for key in keys})
        config_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def transformers_folder(model: Any, folder: Any, graph_file: str) -> Optional[dict[str, Any]]:
    """For a transformers model's ``model.safetensors``: its model files beside it, so that the family's
    ``from_pretrained(build_folder)`` loads the build; the record of that class. None otherwise."""
    if not graph_file.endswith(".safetensors") or not is_hf_model(model):
        return None
    files = copy_model_files(model, folder)
    return {"transformers": {"class": type(model).__name__, "files": ["config.json", graph_file]},
            "tokenizer_files": files}


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
