"""What the command line makes of a composed config before any build: the config checked, its build
key (``build_identity``), whether the folder is already up to date, and the job described for the
process that builds it (``describe``, exporter.process.child). ``verify`` rebuilds a finished build's
config through the same functions (``job_from_config``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from ..config.schema import selected_formats
from ..process.child import JobDescription, config_errors, identity_of


def build_identity(cfg: DictConfig) -> dict[str, Any]:
    """Check the composed config (unknown keys, bounds) and compute its build key, without torch."""
    return identity_of(*checked_config(cfg))


def checked_config(cfg: DictConfig) -> tuple[dict[str, Any], Optional[str]]:
    """Check the composed config (unknown keys, bounds, format options); the config resolved and
    the model's ``_target_``, what its build key is computed from (exporter.process.child.identity_of)."""
    from ..config.schema import option_value
    from ..errors import ConfigError
    from ..formats.registry import cache_refusal, format_class
    from .config_store import check_config

    with config_errors():
        # Unknown keys (however added), out-of-range values and format options that contradict each
        # other, before the model is even built.
        check_config(cfg)
        chosen = {name: format_class(name) for name in selected_formats(cfg.format)}
        options = {name: OmegaConf.to_object(cfg.format[name]) for name in chosen}
        for name, cls in chosen.items():
            cls.check_options(options[name])
        mode = str(option_value(OmegaConf.select(cfg, "quantization.mode", default="none")))
        refused = cache_refusal(OmegaConf.select(cfg, "task_spec.use_cache"), chosen, mode, options)
        if refused is not None:
            raise ConfigError(refused)
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return resolved, OmegaConf.select(cfg, "model._target_")


def up_to_date(folder: Path, identity: dict[str, Any]) -> bool:
    """The folder holds a good build with this key and every file hashes as recorded (a file whose
    ``stat`` is as it was when last hashed is not read again: exporter.records.stat_cache)."""
    from ..config.build_key import reusable
    from ..records.read import BuildUnreadable, files_problems, read_build

    if not reusable(identity["build_key_inputs"]) or not (folder / "metadata.json").is_file():
        return False
    from ..files import KNOWN

    try:
        build = read_build(folder, known=KNOWN, with_config=False)
    except BuildUnreadable:
        return False
    md = build.metadata
    return md.get("build_key") == identity["build_key"] and md.get("status") == "ok" and not files_problems(build)


def job_from_config(cfg: DictConfig, identity: "dict[str, Any] | Callable[[], dict[str, Any]] | None" = None,
                    origin: Optional[dict[str, Any]] = None):
    """Turn a composed config into an ExportJob (builds the model, loads the checkpoint).
    ``identity``: the build key, or a function that gives it once the model is built; None: computed
    here first. ``origin``: where the config came from (choices, overrides); None: this Hydra job."""
    from ..process.child import build_job

    identity = identity or build_identity(cfg)
    return build_job(describe(cfg, origin), identity)


def describe(cfg: DictConfig, origin: Optional[dict[str, Any]] = None) -> JobDescription:
    """What the job's process needs of the composed config, derived here with Hydra and omegaconf
    (exporter.process.child): the task spec and options as the tool's types, the snapshot, and for a
    Hydra job (``origin`` None) its choices, overrides, ``.hydra/`` records and place in a sweep."""
    from ..config.task_spec import TaskSpec
    from ..errors import ConfigError
    from .sweep import sweep_identity, task_overrides

    with config_errors():
        try:
            task_spec = TaskSpec.from_mapping(OmegaConf.to_container(cfg.task_spec, resolve=True, enum_to_str=True))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        adapter = cfg.get("adapter")
        if adapter is not None and (not isinstance(adapter, DictConfig) or "_target_" not in adapter):
            raise ConfigError(f"adapter: expected null or a node with _target_, got {adapter!r}; "
                              "e.g. +adapter._target_=pkg.MyAdapter")
        formats = {name: OmegaConf.to_object(cfg.format[name]) for name in selected_formats(cfg.format)}
        if adapter is None:
            _check_names(task_spec, formats)
        _check_dtype(cfg, formats)
        hydra_files: dict[str, str] = {}
        provenance: dict[str, Any] = {}
        notes: list[str] = []
        if origin is None:

            origin, hydra_files = _hydra_origin(cfg, formats)
            provenance["sweep"] = sweep_identity()
            notes = _ignored_format_options(task_overrides(), formats)
        return JobDescription(
            config=cfg, model_call=own_model_call(cfg), has_adapter=adapter is not None,
            task_spec=task_spec, formats=formats,
            quantization=OmegaConf.to_object(cfg.quantization), validate=OmegaConf.to_object(cfg.validate),
            calibration=OmegaConf.to_object(cfg.calibration), export_dir=Path(cfg.export_dir), seed=cfg.seed,
            checkpoint=cfg.checkpoint, wait=bool(cfg.wait), snapshot_yaml=OmegaConf.to_yaml(cfg, resolve=True),
            origin=origin, hydra_files=hydra_files, provenance=provenance, notes=notes)


def _check_dtype(cfg: DictConfig, formats: dict[str, Any]) -> None:
    """``model.dtype=auto`` on a bfloat16 checkpoint with ONNX: ONNX Runtime's CPU kernels do not
    run bfloat16; refused from config.json before the model loads."""
    model = cfg.get("model")
    if not isinstance(model, DictConfig) or str(model.get("_target_", "")) != "exporter.models.hf.from_pretrained":
        return
    if str(model.get("dtype", "float32")) != "auto" or "onnx" not in formats:
        return
    from ..config.hf_folder import read_config
    from ..errors import ConfigError
    from ..models.hf import checkpoint_dtype

    if checkpoint_dtype(read_config(model.path)) == "bfloat16":
        raise ConfigError("model.dtype=auto: the checkpoint's weights are bfloat16, which ONNX Runtime's CPU kernels "
                          "do not run; build onnx in float32 (model.dtype=float32, the default), or the other formats "
                          "(pytorch, safetensors, torchscript, exported_program keep bfloat16) in a job without onnx")


def _check_names(task_spec: Any, formats: dict[str, Any]) -> None:
    """Format options that clash with the task's input and output names, before the model is built
    (``FormatExporter.check_names``). The names are the task adapter's before it sees the model;
    where it cannot name them without the model, the format checks them when the job runs."""
    from ..adapters.registry import adapter_for_task
    from ..formats.registry import format_class

    try:
        adapter = adapter_for_task(task_spec)
        inputs, outputs = list(adapter.input_names), list(adapter.output_names)
    except Exception:  # noqa: BLE001 - names that depend on the model: checked with it
        return
    for name, options in formats.items():
        format_class(name).check_names(options, inputs, outputs)


def own_model_call(cfg: DictConfig) -> Optional[tuple[str, dict[str, Any]]]:
    """The model when it is the tool's own (a ``_target_`` in ``exporter.models``) with plain keyword
    arguments only (numbers, strings, booleans, null): its target and arguments, for the job's
    process to call directly (exporter.process.child), as Hydra's instantiate would. None: Hydra
    builds it (your own class, nested nodes, ``_partial_``, a value left ``???`` and the like).

    >>> from omegaconf import OmegaConf
    >>> own_model_call(OmegaConf.create({"model": {"_target_": "exporter.models.SimpleCNN", "width": 8}}))
    ('exporter.models.SimpleCNN', {'width': 8})
    >>> own_model_call(OmegaConf.create({"model": {"_target_": "mine.Net", "width": 8}})) is None
    True
    """
    if not isinstance(cfg.get("model"), DictConfig) or OmegaConf.missing_keys(cfg.model):
        return None  # ``???`` left in it: Hydra names the key, as it would for any model
    node = OmegaConf.to_container(cfg.model, resolve=True)
    target = node.pop("_target_", None)
    if not isinstance(target, str) or not target.startswith("exporter.models."):
        return None
    if any(str(key).startswith("_") or not (value is None or isinstance(value, (bool, int, float, str)))
           for key, value in node.items()):
        return None
    return target, node


def _hydra_origin(cfg: DictConfig, formats: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The job's choices and overrides, and what Hydra would write into .hydra/ of its job folder
    (hydra.output_subdir is null): written into the staged build instead, so a run that fails never
    rewrites a good folder's records."""
    from hydra.core.hydra_config import HydraConfig

    from .sweep import task_overrides

    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra") and k != "format"}
    choices["format"] = list(formats)
    origin = {"source": "cli", "choices": choices, "overrides": task_overrides(hydra_cfg), "cwd": os.getcwd()}
    records = {
        ".hydra/config.yaml": OmegaConf.to_yaml(cfg),
        ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task),
    }
    return origin, records


def _refuse_one_format_twice(overrides: Any) -> None:
    """``format=[pytorch,safetensors]`` names one format twice (an alias sets the other's options):
    the later option file would silently win, and one artifact be built instead of two."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ..errors import ConfigError
    from ..formats.registry import format_aliases

    chosen: list[str] = []
    # Only the format choice is read: another override's value may hold an interpolation this parser
    # would try to resolve on its own (the config's errors name such a key, with its remedy).
    formats = [o for o in overrides or [] if str(o).lstrip("+~").split("=", 1)[0].strip() == "format"]
    for override in OverridesParser.create().parse_overrides(formats):
        if override.key_or_group == "format":
            value = override.value()
            chosen = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    aliases = format_aliases()
    seen: dict[str, str] = {}
    for option in chosen:
        name = aliases.get(option, option)
        if option in seen.values():
            raise ConfigError(f"format: {option} is listed twice; each format is built once per job")
        if name in seen:
            raise ConfigError(f"format: {seen[name]} and {option} are the same format ({name}) with different "
                              f"options, and one build holds one file of it; build them as two jobs "
                              f"(python -m exporter -m format={seen[name]},{option})")
        seen[name] = option


def _ignored_format_options(overrides: Any, formats: dict[str, Any]) -> list[str]:
    """``format=onnx,torchscript format.onnx.opset=17``: the torchscript job ignores the ONNX option
    (a typo in an option name still fails composition for every job), and says so."""
    notes = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        parts = key.split(".")
        if len(parts) >= 3 and parts[0] == "format" and parts[1] not in formats and parts[2] != "enabled":
            notes.append(f"{override} ignored: this job does not build {parts[1]} (format=[{','.join(formats)}])")
    return notes
