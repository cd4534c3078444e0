"""The command-line door: a Hydra app that composes a job and hands it to the runner.

Only the job itself imports torch, onnx and onnxruntime, so ``--help``, ``--cfg job`` and
config errors answer quickly. ``exporter card DIR`` and ``exporter diff A B`` read finished builds.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from .errors import ExportError
from .schema import option_value, register_configs

log = logging.getLogger("exporter")

register_configs()


def build_name(formats: Any, quantization: Any) -> str:
    """Folder name of a build from its choices, e.g. ``onnx-dynamic`` or ``onnx+torchscript-none``."""
    names = [name for name, options in (formats or {}).items() if options is not None]
    return f"{'+'.join(names) or 'none'}-{option_value(quantization)}"


def model_name(choice: Any, target: Any) -> str:
    """The model option's name, or the class name of a model given only by ``_target_``."""
    return str(choice) if choice else str(target).rsplit(".", 1)[-1]


for _name, _resolver in (("exporter.build_name", build_name), ("exporter.model_name", model_name)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def job_from_config(cfg: DictConfig):
    """Turn a composed config into an ExportJob (builds the model, loads the checkpoint).

    A value the config leaves missing (``???``) or cannot resolve becomes one ConfigError naming its key.
    """
    from omegaconf.errors import OmegaConfBaseException

    from .errors import ConfigError

    try:
        return _job_from_config(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{key}: {message}" if key else message) from None


def _job_from_config(cfg: DictConfig):
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException

    from .checkpoint import load_checkpoint
    from .errors import ConfigError
    from .runner import ExportJob
    from .task_spec import TaskSpec

    # Random weights (no checkpoint) come from the seed too, so a rebuild gives the same bytes.
    torch.manual_seed(cfg.seed)
    try:
        model = hydra.utils.instantiate(cfg.model)
    except InstantiationException as exc:
        raise ConfigError(f"model: cannot build {cfg.model.get('_target_')}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model: {cfg.model.get('_target_')} built a {type(model).__name__}, not a torch.nn.Module")
    checkpoint = load_checkpoint(model, cfg.checkpoint) if cfg.checkpoint else None
    spec_data = OmegaConf.to_container(cfg.task_spec, resolve=True, enum_to_str=True)
    try:
        task_spec = TaskSpec.from_mapping(spec_data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    formats = {name: OmegaConf.to_object(node) for name, node in cfg.format.items() if node is not None}
    calibration = OmegaConf.to_object(cfg.calibration)
    dataset = None
    needs_samples = option_value(calibration.source) == "dataset" and cfg.quantization.mode != "none"
    if needs_samples:
        try:
            dataset = hydra.utils.instantiate(cfg.calibration.dataset)
        except InstantiationException as exc:
            raise ConfigError(f"calibration.dataset: cannot build {cfg.calibration.dataset.get('_target_')}: {exc}") from None
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra") and k != "format"}
    choices["format"] = list(formats)
    return ExportJob(
        model=model,
        task_spec=task_spec,
        export_dir=Path(cfg.export_dir),
        formats=formats,
        quantization=OmegaConf.to_object(cfg.quantization),
        validate=OmegaConf.to_object(cfg.validate),
        calibration=calibration,
        calibration_dataset=dataset,
        seed=cfg.seed,
        snapshot_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        provenance={
            "config": {"source": "cli", "choices": choices, "overrides": list(hydra_cfg.overrides.task)},
            "checkpoint": checkpoint,
        },
    )


@hydra.main(config_path="pkg://exporter.conf", config_name="config", version_base="1.3")
def export_job(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job. In a single run a failure exits non-zero; in a sweep it is reported at the end."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .report import closing_table

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        from .runner import run_export

        result = run_export(job_from_config(cfg))
    except Exception as exc:  # noqa: BLE001 - the command line reports, it does not dump stacks
        if not isinstance(exc, ExportError):
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # Not the user's input as far as the tool can tell (e.g. a bug in their dataset code).
            exc = ExportError(f"{type(exc).__name__}: {exc} (HYDRA_FULL_ERROR=1 shows the traceback)")
        log.error("error: %s", exc)
        if multirun:
            return {"status": "error", "error": str(exc), "export_dir": str(cfg.export_dir)}
        sys.exit(2)
    log.info("\n%s\n\nbuild: %s (%s)", closing_table(result.metadata), result.export_dir, result.metadata["status"])
    summary = {"status": result.metadata["status"], "export_dir": str(result.export_dir),
               "errors": {n: a.record.get("error") for n, a in result.artifacts.items() if a.status != "ok"}}
    if not result.ok and not multirun:
        sys.exit(1)
    return summary


def main() -> None:
    """Console script ``exporter``: subcommands ``card`` and ``diff``, otherwise the Hydra app."""
    if len(sys.argv) > 1 and sys.argv[1] in ("card", "diff"):
        from .card import main as card_main

        sys.exit(card_main(sys.argv[1:]))
    export_job()
