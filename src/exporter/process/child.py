"""A command-line job in the process that builds it: the job described (``JobDescription``) turned
into an ``ExportJob`` and run, its errors turned into the run's end or a sweep job's outcome.

The command line composes and checks the config with Hydra and derives from it everything that
needs no torch (``exporter.cli.describe.describe``: the task spec, the options, the snapshot and the
records of ``.hydra/``). What is left needs the job's process: building the model (and an
adapter, a calibration dataset), loading the checkpoint, the export. That process is the command
line's own, or a sweep job's forked one (exporter.process.forked_jobs).

A model of the tool's own (a ``_target_`` in ``exporter.models``: ``model=simple_cnn``,
``lm_stub``, every ``hf_*``) with plain arguments is built by calling its class or factory, which
is all Hydra's ``instantiate`` would do with such a node. Anything else (your own ``_target_``, an
adapter, a calibration dataset) goes through ``instantiate`` and its policy on what a config may
name.

    >>> job_outcome(lambda: {"status": "ok"}, lambda: "exports/x", multirun=True)
    {'status': 'ok'}
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Union

from ..console import flush_stdout, say, step
from ..errors import ExportError, first_line
from ..interrupts import INTERRUPTED, Interrupted

log = logging.getLogger("exporter")

# HYDRA_FULL_ERROR=1 as the user set it: then tracebacks are shown. The command line sets
# HYDRA_FULL_ERROR=1 itself for Hydra's own errors, and notes the user's value in
# EXPORTER_USER_FULL_ERROR first: a launcher's workers (Submitit, Ray, joblib's loky) are fresh
# interpreters that inherit both, and must go by the user's.
USER_FULL_ERROR_ENV = "EXPORTER_USER_FULL_ERROR"
SHOW_TRACEBACKS = os.environ.get(USER_FULL_ERROR_ENV, os.environ.get("HYDRA_FULL_ERROR")) == "1"

Identity = Union[dict[str, Any], Callable[[], dict[str, Any]]]


@dataclass
class JobDescription:
    """One job as the command line describes it from the composed config (``exporter.cli.describe.describe``):
    plain values and the tool's dataclasses, and the composed config itself for what Hydra builds
    from it (``model``, ``adapter``, ``calibration.dataset``)."""

    config: Any  # the composed DictConfig
    model_call: Optional[tuple[str, dict[str, Any]]]  # the tool's own model and its plain arguments (cli.describe.own_model_call)
    task_spec: Any  # exporter.config.task_spec.TaskSpec
    formats: dict[str, Any]  # name -> the format's options dataclass
    quantization: Any
    validate: Any
    calibration: Any
    export_dir: Path
    seed: int
    checkpoint: Optional[str]
    wait: bool
    snapshot_yaml: str
    origin: dict[str, Any]  # where the config came from (choices, overrides)
    hydra_files: dict[str, str] = field(default_factory=dict)  # .hydra/*.yaml, written into the staged build
    provenance: dict[str, Any] = field(default_factory=dict)  # more for metadata.json (the sweep's identity)
    notes: list[str] = field(default_factory=list)  # said as the job starts, into its export.log too
    has_adapter: bool = False  # the config names one (``adapter._target_``)

    def composed(self) -> Any:
        """The composed config (Hydra's main set up its resolvers, ``${hydra:...}``, in this process)."""
        return self.config

    @property
    def model_target(self) -> Any:
        return self.model_call[0] if self.model_call else self.composed().model.get("_target_")

    @property
    def needs_samples(self) -> bool:
        from ..config.schema import option_value

        return (option_value(self.calibration.source) == "dataset"
                and option_value(self.quantization.mode) != "none")


# The files each build key of this process hashed (its inputs), by key: what the stat cache beside
# the build records of them (exporter.records.stat_cache).
INPUT_FILES: dict[str, set[str]] = {}


def identity_of(resolved: dict[str, Any], model_target: Optional[str]) -> dict[str, Any]:
    """The build key of a resolved config and the inputs it hashes (files whose ``stat`` is as it
    was when last hashed are not read again: exporter.files.KnownHashes)."""
    from ..config.build_key import build_key, key_inputs
    from ..files import KNOWN

    with KNOWN.noting() as used:
        inputs = key_inputs(resolved, model_target=model_target)
    key = build_key(inputs)
    INPUT_FILES.setdefault(key, set()).update(used)
    return {"build_key": key, "build_key_inputs": inputs}


def record_stats(folder: "str | Path", key: Optional[str]) -> None:
    """The stat cache beside the build in ``folder``: its inputs' (build key ``key``) and its own files'."""
    from ..records.stat_cache import record

    record(Path(folder), INPUT_FILES.get(key or "", ()))


def identity_in_background(checked: tuple[dict[str, Any], Optional[str]]) -> Callable[[], dict[str, Any]]:
    """The build key of a checked config (``exporter.cli.describe.checked_config``), computed on another
    thread while the model is built, returned by the function this gives. The key hashes the
    model's files (a 124M GPT-2 folder: 0.6 s, a 7B one: tens of seconds), and hashlib lets the other
    core do that while this one imports torch and transformers."""
    from ..build.threads import in_background
    from ..config import build_key  # noqa: F401 (imported here, not on the thread beside the model's imports)

    return in_background(identity_of, *checked)


def build_job(description: JobDescription, identity: Identity) -> Any:
    """The ExportJob of a description (builds the model, loads the checkpoint). ``identity``: the
    build key, or a function that gives it once the model is built."""
    import torch

    from ..build.checkpoint import load_checkpoint
    from ..build.job import ExportJob
    from ..errors import ConfigError

    with config_errors():
        # Random weights (no checkpoint) come from the seed too, so a rebuild gives the same bytes.
        torch.manual_seed(description.seed)
        with step("loading the model"):
            model = _model_of(description)
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(f"model: {description.model_target} built a {type(model).__name__}, "
                              "not a torch.nn.Module")
        checkpoint = load_checkpoint(model, description.checkpoint) if description.checkpoint else None
        adapter = _adapter_of(description)
        dataset = (_built("calibration.dataset", description.composed().calibration.dataset)
                   if description.needs_samples else None)
    job = ExportJob(
        model=model,
        task_spec=description.task_spec,
        export_dir=description.export_dir,
        formats=description.formats,
        adapter=adapter,
        quantization=description.quantization,
        validate=description.validate,
        calibration=description.calibration,
        calibration_dataset=dataset,
        seed=description.seed,
        snapshot_yaml=description.snapshot_yaml,
        provenance={"config": description.origin, "checkpoint": checkpoint},
        extra_files=description.hydra_files,
        wait=description.wait,
    )
    job.provenance.update(identity() if callable(identity) else identity)
    job.provenance.update(description.provenance)
    return job


def build(description: JobDescription, checked: tuple[dict[str, Any], Optional[str]],
          identity: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Build the job and export it; its outcome. ``checked``: the config as the command line checked
    it; ``identity``: the build key, or None to compute it beside the model's build."""
    from ..build.runner import held_back, run_export

    with held_back():  # what is logged while the job is built goes into its export.log too
        for note in description.notes:
            log.info("%s", note)
        job = build_job(description, identity or identity_in_background(checked))
        result = run_export(job)
    record_stats(result.export_dir, result.metadata.get("build_key"))
    log.info("\nbuild: %s (%s)", result.export_dir, result.metadata["status"])
    outcome = {"status": result.metadata["status"], "export_dir": str(result.export_dir),
               "errors": {n: a.record.problem for n, a in result.artifacts.items() if a.status != "ok"}}
    if result.kept is not None:
        from ..build.runner import kept_message

        outcome["kept"] = kept_message(result)
    return outcome


def job_outcome(work: Callable[[], dict[str, Any]], export_dir: Callable[[], str], multirun: bool) -> dict[str, Any]:
    """``work()`` with its errors turned into the run's end (one line, exit 2; 75 for a locked
    folder) or, in a sweep, into the job's outcome. ``export_dir()``: the job's folder, for that outcome."""
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - the command line reports, it does not dump stacks
        if INTERRUPTED:
            raise Interrupted(INTERRUPTED[-1]) from None  # a signal that a library turned into an error
        if not isinstance(exc, ExportError):
            if SHOW_TRACEBACKS:
                raise
            # Not the user's input as far as the tool can tell (e.g. a bug in their dataset code).
            exc = ExportError(f"{first_line(exc, with_type=True)} (HYDRA_FULL_ERROR=1 shows the traceback)")
        if not multirun:
            stop(75 if type(exc).__name__ == "BuildLocked" else 2, f"error: {exc}")
        log.error("error: %s", exc)
        return {"status": "error", "error": str(exc), "export_dir": export_dir()}


def stop(code: int, message: str) -> NoReturn:
    """End the run: stdout flushed first, then ``message`` on stderr, exit status ``code``."""
    flush_stdout()
    sys.exit(say(message, code))


@contextmanager
def config_errors():
    """A value the config leaves missing (``???``) or cannot resolve becomes one ConfigError naming its key."""
    from ..errors import ConfigError

    try:
        yield
    except Exception as exc:
        errors = sys.modules.get("omegaconf.errors")  # none to catch where omegaconf is not imported
        if errors is None or not isinstance(exc, errors.OmegaConfBaseException):
            raise
        key = getattr(exc, "full_key", None)
        message = first_line(exc)
        # An interpolation another key depends on (task_spec.input_schema.vocab_size reads model.path's
        # config.json): the error of the key at fault, not of the one that read it.
        refused = f"{ConfigError.__name__} raised while resolving interpolation: "
        if refused in message:  # a resolver of the tool's refused: its own words
            raise ConfigError(message.split(refused, 1)[1]) from None
        missing = "Missing mandatory value: "
        if missing in message and "interpolation" in message:
            name = message.split(missing, 1)[1].strip()
            raise ConfigError(f"{name}: missing; {key or 'the config'} is read from it: set {name}=...") from None
        if type(exc).__name__ in ("InterpolationKeyError", "GrammarParseError", "InterpolationResolutionError") \
                and "${" not in message:
            message += "; a value meant literally escapes it: '\\${...}' (e.g. model.path='dir \\${x}')"
        raise ConfigError(f"{key}: {message}" if key else message) from None


def _model_of(description: JobDescription) -> Any:
    """The job's model: the tool's own called directly (``model_call``), else built by Hydra."""
    if description.model_call is not None:
        target, kwargs = description.model_call
        found = _located(target)
        if found is not None:
            return _called("model", target, found, kwargs)
    # Anything else, and a name of the tool's that does not resolve: Hydra's instantiate, and its message.
    return _built("model", description.composed().model)


def _located(target: str) -> Any:
    """The class or function ``module.name`` names; None if it names none, or nothing callable
    (Hydra then says why)."""
    import importlib

    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return found if callable(found) else None


class ConstructorError(Exception):
    """A model's constructor failed (``_called``): raised with HYDRA_FULL_ERROR=1, the constructor's
    own error chained to it, so that its traceback is shown, as for Hydra's InstantiationException."""


def _called(where: str, target: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``function(**kwargs)`` (``target`` names it) as Hydra's instantiate calls a node's target,
    its error worded as Hydra words it; HYDRA_FULL_ERROR=1: the error itself, with its traceback."""
    from ..errors import ConfigError

    try:
        return function(**kwargs)
    except ConfigError:
        raise  # the tool's own factories (exporter.models.hf) word their refusals themselves, in full
    except Exception as exc:
        name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', target)}"
        message = f"Error in call to target '{name}': {exc!r}"
        if SHOW_TRACEBACKS:
            raise ConstructorError(message) from exc
        raise ConfigError(f"{where}: cannot build {target}: {message}") from None


def _built(where: str, node: Any) -> Any:
    """What Hydra's instantiate builds from ``node`` (of ``JobDescription.composed``); its errors as
    one ConfigError naming ``where``."""
    import hydra.utils
    from hydra.errors import InstantiationException

    from ..errors import ConfigError

    try:
        return hydra.utils.instantiate(node)
    except InstantiationException as exc:
        _traceback_if_asked(exc)
        raise ConfigError(f"{where}: cannot build {node.get('_target_')}: {_flat(exc)}") from None


def _adapter_of(description: JobDescription) -> Any:
    """The job's adapter: built from ``adapter._target_`` when the config gives one (checked by the
    command line), else None (the runner picks the shipped adapter of the task type)."""
    from ..adapters import ModelAdapter
    from ..errors import ConfigError

    if not description.has_adapter:
        return None
    node = description.composed().adapter
    adapter = _built("adapter", node)
    if not isinstance(adapter, ModelAdapter):
        raise ConfigError(f"adapter: {node.get('_target_')} built a {type(adapter).__name__}, not an "
                          "exporter.adapters.ModelAdapter")
    return adapter


def _traceback_if_asked(exc: BaseException) -> None:
    """With HYDRA_FULL_ERROR=1, an error raised by the user's own constructor (model, adapter,
    dataset) goes on as it is, so that its traceback is shown; else it becomes one line."""
    if SHOW_TRACEBACKS and exc.__cause__ is not None:
        raise exc


def _flat(exc: BaseException) -> str:
    """Hydra's instantiation errors span lines (message, the cause, ``full_key``): one line of them."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("full_key:")]
    return " ".join(lines) or type(exc).__name__
