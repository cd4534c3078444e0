"""The command-line door: a Hydra app that composes a job and hands it to the runner.

Only the job itself imports torch, onnx and onnxruntime, so ``--help``, ``--cfg job`` and
config errors answer quickly. ``exporter card DIR`` and ``exporter diff A B`` read finished builds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf

from .errors import ExportError
from .schema import option_value, register_configs

log = logging.getLogger("exporter")

register_configs()

# HYDRA_FULL_ERROR=1 as the user set it: then tracebacks are shown (main() sets the variable itself
# so that Hydra hands every exception to us instead of printing its own partial traceback).
_SHOW_TRACEBACKS = os.environ.get("HYDRA_FULL_ERROR") == "1"
INTERRUPTED_MESSAGE = "interrupted; the previous build is intact"


class Interrupted(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` runs (staging removed, lock freed).
    A BaseException, like KeyboardInterrupt: no ``except Exception`` in a format may swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: Any) -> NoReturn:
    raise Interrupted(signum)


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

    from .schema import check_config

    try:
        # Unknown keys (however added) and out-of-range values, before the model is even built.
        check_config(cfg)
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
    # What Hydra would write into .hydra/ of its job folder (hydra.output_subdir is null): written
    # into the staged build instead, so a run that fails never rewrites a good folder's records.
    hydra_records = {
        ".hydra/config.yaml": OmegaConf.to_yaml(cfg),
        ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task),
    }
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
        extra_files=hydra_records,
        wait=bool(cfg.wait),
    )


@hydra.main(config_path="pkg://exporter.conf", config_name="config", version_base="1.3")
def export_job(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job. In a single run a failure exits non-zero; in a sweep it is reported at the end."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        from .runner import run_export

        result = run_export(job_from_config(cfg))
    except Exception as exc:  # noqa: BLE001 - the command line reports, it does not dump stacks
        if not isinstance(exc, ExportError):
            if _SHOW_TRACEBACKS:
                raise
            # Not the user's input as far as the tool can tell (e.g. a bug in their dataset code).
            exc = ExportError(f"{type(exc).__name__}: {_first_line(exc)} (HYDRA_FULL_ERROR=1 shows the traceback)")
        if multirun:
            log.error("error: %s", exc)
            return {"status": "error", "error": str(exc), "export_dir": str(cfg.export_dir)}
        _stop(75 if type(exc).__name__ == "BuildLocked" else 2, f"error: {exc}")
    finally:
        _remove_if_empty(Path(HydraConfig.get().runtime.output_dir))
    log.info("\nbuild: %s (%s)", result.export_dir, result.metadata["status"])
    summary = {"status": result.metadata["status"], "export_dir": str(result.export_dir),
               "errors": {n: a.record.get("error") for n, a in result.artifacts.items() if a.status != "ok"}}
    if not result.ok and not multirun:
        sys.exit(1)
    return summary


def _remove_if_empty(folder: Path) -> None:
    """Hydra creates its job folder (and its parents) before the job starts; a job that built nothing
    there (it failed first, or export_dir points elsewhere) leaves no empty folders behind. Parents
    are removed only inside the working directory, and only while empty."""
    cwd = Path.cwd().resolve()
    folder = folder.resolve()
    while folder != cwd:
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            return
        if cwd not in folder.parents:
            return
        folder = folder.parent


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"


def main() -> None:
    """Console script ``exporter``: subcommands ``card`` and ``diff``, otherwise the Hydra app.

    Every failure ends in one line on stderr and a non-zero exit, never a traceback (unless
    HYDRA_FULL_ERROR=1): 1 a format failed, 2 bad input or a failed job, 75 the build folder is
    locked and wait=false, 130 Ctrl-C, 143 SIGTERM. docs/errors.md lists the messages.
    """
    if len(sys.argv) > 1 and sys.argv[1] in ("card", "diff"):
        from .card import main as card_main

        sys.exit(card_main(sys.argv[1:]))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        _refuse_keyless_overrides(sys.argv[1:])
        export_job()
    except KeyboardInterrupt:
        _stop(130, _interrupted_message())
    except Interrupted as exc:
        _stop(128 + exc.signum, _interrupted_message())
    except Exception as exc:  # noqa: BLE001 - Hydra's own errors (composition, overrides, job folder)
        if _SHOW_TRACEBACKS:
            raise
        _stop(2, "error: " + describe_error(exc, sys.argv[1:]))


def _interrupted_message() -> str:
    from .build_folder import PUBLISHED

    if PUBLISHED:
        return f"interrupted after the new build was published; {PUBLISHED[-1]} is complete"
    return INTERRUPTED_MESSAGE


def _stop(code: int, message: str) -> NoReturn:
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


def _refuse_keyless_overrides(args: list[str]) -> None:
    from .errors import ConfigError

    for arg in args:
        if arg.startswith("=") or arg.startswith("+=") or arg.startswith("~="):
            raise ConfigError(f"override {arg!r} has no key; write key=value, e.g. seed{arg.lstrip('+~')}")


def describe_error(exc: BaseException, args: list[str]) -> str:
    """One line for an error raised before or around the job (mostly Hydra's), naming the key and,
    where there is a fixed set, the valid values."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ExportError):
        return str(exc)
    unbuilt = _option_of_unbuilt_format(args)
    if unbuilt:
        return unbuilt
    if isinstance(exc, CompactHydraException):
        text = _one_line(str(exc))
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException):
            text = text.split(". To append to your config use")[0].rstrip(".")
            text += ": " + _one_line(str(cause).split("\n    full_key:")[0])
            text += _valid_keys(cause)
        return text
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot write {exc.filename}: {exc.strerror or exc} (check hydra.run.dir / export_dir)"
    return f"{type(exc).__name__}: {_first_line(exc)} (HYDRA_FULL_ERROR=1 shows the traceback)"


def _one_line(text: str) -> str:
    """Hydra's multi-line messages as one line: option lists joined, search paths dropped."""
    lines = text.split("Config search path:")[0].splitlines()
    out: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("\t") and out:
            out[-1] += ("" if out[-1].endswith(":") else ",") + " " + line.strip()
        else:
            out.append(line.strip())
    return ". ".join(s.rstrip(".") for s in out)


def _valid_keys(cause: BaseException) -> str:
    """'; valid keys: ...' for an unknown key in one of the schema dataclasses."""
    from dataclasses import fields, is_dataclass

    object_type = getattr(cause, "object_type", None)
    if isinstance(object_type, type) and is_dataclass(object_type) and "not in" in str(cause):
        return "; valid keys: " + ", ".join(f.name for f in fields(object_type))
    return ""


def _option_of_unbuilt_format(args: list[str]) -> str:
    """``format=torchscript format.onnx.opset=17``: an option of a format the job does not build."""
    chosen = None
    options = []
    for arg in args:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "format":
            chosen = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        elif key.startswith("format.") and key.count(".") >= 2:
            options.append((key, key.split(".")[1]))
    chosen = chosen or ["onnx"]
    for key, name in options:
        if name not in chosen:
            return (f"{key}: format {name} is not built by this job (format={','.join(chosen)}); "
                    f"add it, e.g. format=[{','.join(chosen + [name])}], or drop the option")
    return ""
