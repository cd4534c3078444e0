"""The command-line door: a Hydra app that composes a job, checks it, describes it
(``describe``) and has it built (exporter.process.dispatch: in a process forked for it).

Only the job itself imports torch, onnx and onnxruntime, so ``--help``, ``--cfg job`` and
config errors answer quickly. ``exporter card DIR`` and ``exporter diff A B`` read finished builds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import hydra
from omegaconf import DictConfig

from ..console import INTERRUPTED_MESSAGE, OUTPUT_LOST, flush_stdout, flush_streams, say
from ..errors import ExportError, first_line
from ..files import library_litter_noted, remove_library_litter
from ..interrupts import INTERRUPTED, PUBLISHED, STOP_SIGNALS, Interrupted, python_signal_handlers, raise_interrupted
from ..process import watchdog
from ..process.child import SHOW_TRACEBACKS, USER_FULL_ERROR_ENV, identity_of, job_outcome, record_stats, stop
from ..process.resolvers import build_name, model_name  # noqa: F401 (part of the command line's API)
from .composition import remember_parsed_interpolations
from .config_store import register_configs
from .commands import MODE_KEYS, READERS
from .describe import _refuse_one_format_twice, checked_config, describe, up_to_date
from .hf_choice import choose_hf_option

log = logging.getLogger("exporter")

register_configs()
remember_parsed_interpolations()


@hydra.main(config_path="pkg://exporter.conf", config_name="config", version_base="1.3")
def export_job(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job. In a single run a failure exits non-zero; in a sweep it is recorded for the
    summary (exporter.cli.sweep) and the sweep exits non-zero at the end. Under Hydra's basic launcher
    each job of a sweep runs in a process of its own (exporter.process.forked_jobs)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .sweep import STARTED, release_memory, write_job_record

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    PUBLISHED.clear()  # "published" in an interruption message means: by this job
    forked = _fork_for_the_job(hydra_cfg, multirun)
    try:
        with _a_job_of_the_sweep(multirun):
            outcome = job_outcome(lambda: _run_job(cfg, forked, multirun), lambda: str(cfg.export_dir), multirun)
    except Interrupted as exc:
        if not (multirun and watchdog.in_a_worker()):
            raise
        # A job in a launcher's worker, stopped with its sweep (staging removed, lock freed): its outcome,
        # handed back quietly (raised, Ray would print its traceback in the sweep's output).
        return {"status": "interrupted", "error": f"stopped by {signal.Signals(exc.signum).name}",
                "export_dir": str(cfg.export_dir)}
    finally:
        _remove_if_empty(Path(hydra_cfg.runtime.output_dir))
    if multirun:
        if PUBLISHED:  # PUBLISHED is this job's alone: the next job starts it afresh
            STARTED["published"] = True
        write_job_record(outcome)
        if not forked and outcome.get("status") != "up to date":
            release_memory()
        return outcome
    # Format errors usually begin with the format's name already ("onnx: ..."): say it once.
    problems = "; ".join(error if str(error).startswith(f"{name}: ") else f"{name}: {error}"
                         for name, error in (outcome.get("errors") or {}).items() if error)
    if outcome.get("kept"):
        stop(1, f"error: a format failed: {problems}; {outcome['kept']}")
    if outcome["status"] == "failed":
        stop(1, f"error: the build is published, but a format failed: {problems}")
    if outcome["status"] in ("mismatch", "unchecked"):
        print(f"warning: build status {outcome['status']}: {problems}", file=sys.stderr, flush=True)
    return outcome


@contextmanager
def _a_job_of_the_sweep(multirun: bool) -> Any:
    """A sweep's job in a process the launcher started (a joblib worker, a Submitit or Ray job): it
    stops on SIGINT, SIGTERM and SIGHUP as a single run does (its staging removed, its lock freed:
    the worker's own handlers would end it mid-write, or not at all), and ends with the sweep's
    process (exporter.process.watchdog). In the sweep's own process, nothing changes."""
    if not multirun or not watchdog.in_a_worker():
        yield
        return
    from .sweep import SWEEP_RECORDS_ENV

    with watchdog.job_in_a_worker(os.environ.get(SWEEP_RECORDS_ENV)):
        yield


def _fork_for_the_job(hydra_cfg: Any, multirun: bool) -> bool:
    """A single run, or a job of a sweep under Hydra's basic launcher (which would run every job in
    the sweep's own process; joblib, Submitit and Ray start processes of their own), and this
    platform can fork safely."""
    from ..process.forked_jobs import available

    basic = str(hydra_cfg.launcher.get("_target_", "")).endswith(".BasicLauncher")
    return (basic or not multirun) and available()


def _run_job(cfg: DictConfig, fork: bool, multirun: bool) -> dict[str, Any]:
    """The job's steps in this process: checked, its build key, up to date or not, described; then
    built where exporter.process.dispatch says (``fork``: in a process forked for it)."""

    from ..build.cache import CacheSettings, store
    from ..build.folder import check_path
    from ..files import KNOWN
    from ..process.dispatch import build_described
    from ..records.stat_cache import adopt as adopt_stat_cache
    from .sweep import claim_folder

    from .sweep import task_overrides

    _refuse_one_format_twice(task_overrides())
    folder = Path(cfg.export_dir)
    check_path(folder)
    checked = checked_config(cfg)  # config errors end the job here, before torch is imported
    identity = None
    read_before = KNOWN.read
    with KNOWN.noting() as hashed:
        if not cfg.force and (folder / "metadata.json").is_file():
            # Nothing to be up to date with otherwise: the key is computed beside the model's build.
            adopt_stat_cache(folder)
            identity = identity_of(*checked)
        claim_folder(folder)
        current = identity is not None and up_to_date(folder, identity)
    if current:
        log.info("up to date: %s (build key %s; %d of %d files read, the others unchanged since they were hashed); "
                 "force=true rebuilds", folder, identity["build_key"][:12], KNOWN.read - read_before, len(hashed))
        record_stats(folder, identity["build_key"])
        return {"status": "up to date", "export_dir": str(folder), "errors": {}}
    cache = CacheSettings.of(checked[0].get("cache"))
    description = describe(cfg)
    if cache.dir is not None and cache.read and not cfg.force:
        identity = identity or identity_of(*checked)
        restored = _restored(cache, identity, folder, description)
        if restored is not None:
            return restored
    outcome = build_described(description, checked, identity, fork=fork, multirun=multirun)
    if cache.dir is not None and cache.write and outcome.get("status") == "ok" and not outcome.get("kept"):
        said = store(cache, Path(outcome["export_dir"]))
        if said is not None:
            log.info("%s", said)
    return outcome


def _restored(cache: Any, identity: dict[str, Any], folder: Path, description: Any) -> "dict[str, Any] | None":
    """The job's outcome when the build cache holds its build and it was restored into ``folder``."""
    from ..build.cache import restore
    from ..config.build_key import reusable
    from ..records.layout import CONFIG_SNAPSHOT_FILE

    if not reusable(identity["build_key_inputs"]):
        return None
    key = identity["build_key"]
    described: dict[str, Any] = {"config": description.origin, **description.provenance}
    checkpoint = identity["build_key_inputs"].get("checkpoint")
    if description.checkpoint and isinstance(checkpoint, dict):
        described["checkpoint"] = {"path": str(description.checkpoint), **checkpoint}
    metadata = restore(cache, key, folder, records={CONFIG_SNAPSHOT_FILE: description.snapshot_yaml,
                                                   **description.hydra_files},
                       described=described, wait=description.wait)
    if metadata is None:
        return None
    origin = metadata["restored_from"]
    log.info("restored from cache: %s (build key %s, built %s on %s); cache.read=false builds it here", folder,
             key[:12], origin.get("exported_at"), origin.get("host"))
    record_stats(folder, key)
    return {"status": "restored", "export_dir": str(folder), "errors": {}}


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


def main() -> None:
    """The command line (``entry`` runs it for the console script and ``python -m exporter``):
    subcommands ``card``, ``diff`` and ``verify``, otherwise the Hydra app.

    Every failure ends in one line on stderr and a non-zero exit, never a traceback (unless
    HYDRA_FULL_ERROR=1): 1 a format failed, 2 bad input or a failed job, 75 the build folder is
    locked and wait=false, 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP. docs/errors.md lists the messages.
    """
    library_litter_noted()
    if len(sys.argv) > 1 and sys.argv[1] in READERS:
        # An exception instead of exporter.cli.startup's immediate end: verify's rebuild removes its
        # temporary folder on the way out.
        for signum in STOP_SIGNALS:
            signal.signal(signum, raise_interrupted)
        from .card import main as card_main

        try:
            sys.exit(card_main(sys.argv[1:]))
        except (Interrupted, KeyboardInterrupt) as exc:
            _deaf_to_stop_signals()
            stop(128 + getattr(exc, "signum", signal.SIGINT), f"interrupted: exporter {sys.argv[1]} did not finish")
    os.environ.setdefault(USER_FULL_ERROR_ENV, os.environ.get("HYDRA_FULL_ERROR", ""))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # A process the job forks (a multiprocessing helper of the user's code) gets Python's own
    # handlers, not these: terminating it at exit must not print an Interrupted traceback.
    os.register_at_fork(after_in_child=python_signal_handlers)
    # SIGTERM and SIGHUP; Ctrl-C the same handler, so a KeyboardInterrupt a library wraps still ends
    # as an interruption.
    for signum in STOP_SIGNALS:
        signal.signal(signum, raise_interrupted)
    # Output piped into `head` that closes early: no logging tracebacks for the lines that can't go.
    logging.raiseExceptions = False
    try:
        _refuse_unsupported_overrides(sys.argv[1:])
        sys.argv[1:] = choose_hf_option(sys.argv[1:])  # model=hf: the family from the folder's config.json
        with _mode_without_composing(sys.argv[1:]):
            export_job()
    except KeyboardInterrupt:
        _deaf_to_stop_signals()
        message = _interrupted_message()
        _drop_sweep_records()
        stop(130, message)
    except Interrupted as exc:
        _deaf_to_stop_signals()
        message = _interrupted_message()
        _drop_sweep_records()
        stop(128 + exc.signum, message)
    except Exception as exc:  # noqa: BLE001 - Hydra's own errors (composition, overrides, job folder)
        if INTERRUPTED:
            _deaf_to_stop_signals()
            message = _interrupted_message()
            _drop_sweep_records()
            stop(128 + INTERRUPTED[-1], message)
        ended = _summary_of_an_ended_sweep()
        if ended is not None:
            failed, missing, launcher = ended
            if SHOW_TRACEBACKS:
                raise
            stop(2, f"error: the launcher ended the sweep: {describe_error(exc, sys.argv[1:])}; the summary above "
                    f"lists the jobs that ran ({failed} failed) and {missing} without a record. Under "
                    f"hydra/launcher={launcher} a job whose process is killed (the out-of-memory killer, a crash) "
                    "ends the sweep; the basic launcher runs each job in a process of its own and goes on")
        _undo_sweep_start()
        if SHOW_TRACEBACKS:
            raise
        stop(2, "error: " + describe_error(exc, sys.argv[1:]))
    finally:
        # The job is over: a signal from here on must not raise into interpreter shutdown (torch's
        # and Hydra's exit handlers would print a traceback) but end the process at once, saying so.
        if not _STOPPING:
            for signum in STOP_SIGNALS:
                signal.signal(signum, _signal_after_the_job)


def entry() -> NoReturn:
    """The console script ``exporter`` and ``python -m exporter`` (through exporter.cli.startup, which
    handles a signal while this module loads): main(), then the process ends
    without the interpreter's teardown. Freeing torch's modules one by one at exit takes 0.3-0.4 s
    (docs/performance.md), longer than many small jobs' own work, and nothing the job wrote depends
    on it: exit handlers still run (log files closed, temporary folders removed) and the standard
    streams are flushed before the process ends with main()'s exit code."""
    try:
        main()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    _end_process(code)


def _end_process(code: Any) -> NoReturn:
    from ..process.internals import end_as_the_interpreter_would

    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit status 1, as Python does
        code = say(str(code), 1)
    if sys.gettrace() is not None or sys.getprofile() is not None:
        # Under coverage, cProfile or pyinstrument: they write their results at interpreter exit.
        sys.exit(code)
    end_as_the_interpreter_would()
    remove_library_litter()
    lost = flush_streams()
    if lost is not None:
        # Otherwise fine: 120. A command that had its own result to give (1: a difference, a damaged
        # build) keeps it, and still says that its output was lost.
        code = say(f"error: cannot write the output: {lost.strerror or lost}", OUTPUT_LOST if code == 0 else code)
    os._exit(code)


# Set once the run reports an interruption: the rest of a burst of Ctrl-C (each press reaches every
# process of the terminal's group again) is ignored while the process cleans up and ends.
_STOPPING: list[bool] = []


def _deaf_to_stop_signals() -> None:
    _STOPPING.append(True)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _signal_after_the_job(signum: int, _frame: Any) -> NoReturn:
    flush_stdout()
    say(_interrupted_message(), 0)
    logging.shutdown()
    os._exit(128 + signum)


# Command-line options and override keys through which a run could get a hydra.mode other than the
# shipped configs' (null): another primary config or config folder, a search path, the key itself.
_MODE_OPTIONS = ("--config-path", "--config-name", "--config-dir", "--experimental-rerun")
_MODE_SHORT_OPTIONS = ("-cp", "-cn", "-cd")


def mode_is_default(args: list[str]) -> bool:
    """Whether hydra.mode is bound to be the shipped configs' null for this command line (then ``-m``
    alone decides between a run and a sweep). Hydra's argparse takes abbreviated long options
    (``--config-na``) and short ones with their value attached (``-cnsweepy``): both count.

    >>> mode_is_default(["format=onnx", "-m"]), mode_is_default(["--config-na", "mine"])
    (True, False)
    """
    for arg in args:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and len(name) > 2 and any(option.startswith(name) for option in _MODE_OPTIONS):
            return False
        if arg.startswith(_MODE_SHORT_OPTIONS) or name.lstrip("+~") in MODE_KEYS:
            return False
    return True


@contextmanager
def _mode_without_composing(args: list[str]):
    """Hydra composes the whole config once only to read hydra.mode, then again for the job (about
    0.15-0.25 s each, most of the tool's own startup). Where the mode is bound to be null
    (mode_is_default), its first composition is skipped (exporter.process.internals.hydra_mode_null)."""
    from ..process.internals import hydra_mode_null

    if not mode_is_default(args):
        yield
        return
    with hydra_mode_null():
        yield


def _interrupted_message() -> str:
    from .sweep import SWEEP_RECORDS_ENV

    records = os.environ.get(SWEEP_RECORDS_ENV)
    if records and Path(records).is_dir() and any(Path(records).glob("job-*.json")):
        # A sweep in which some jobs had ended (in other processes, under joblib, Submitit or Ray).
        return ("interrupted: the sweep stopped; the jobs that had ended keep their builds, every job it stopped "
                "left its folder as it was")
    if PUBLISHED:
        return f"interrupted after the new build was published; {PUBLISHED[-1]} is complete"
    return INTERRUPTED_MESSAGE


# Hydra's own top-level keys: one may add under them (+hydra.job.env_set.OMP_NUM_THREADS=1), not beside them.
_HYDRA_KEYS = frozenset({"run", "sweep", "launcher", "sweeper", "help", "hydra_help", "hydra_logging", "job_logging",
                         "env", "mode", "searchpath", "callbacks", "output_subdir", "overrides", "job", "runtime",
                         "verbose"})


def _refuse_unsupported_overrides(args: list[str]) -> None:
    from ..errors import ConfigError

    for arg in args:
        if arg.startswith("=") or arg.startswith("+=") or arg.startswith("~="):
            raise ConfigError(f"override {arg!r} has no key; write key=value, e.g. seed{arg.lstrip('+~')}")
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "hydra.output_subdir" and value not in ("null", ""):
            raise ConfigError("hydra.output_subdir: the build writes .hydra/ into its own staged folder, so that a "
                              "failed run never rewrites a good build's records; leave hydra.output_subdir=null")
        if (arg.startswith("+hydra.") or arg.startswith("++hydra.")) and key.split(".")[1] not in _HYDRA_KEYS:
            raise ConfigError(f"{key}: Hydra has no such setting to add (a key of its own is set without '+', "
                              "e.g. hydra.run.dir=...); the tool reads nothing else under hydra")
        if key in ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir") and "\\${" in value:
            raise ConfigError(f"{key}: a folder name with '${{' in it is not supported (Hydra reads its own job "
                              "folder back as an interpolation); choose a name without it, or put it in export_dir")
        if key in ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "export_dir") and "${" not in value:
            from ..build.folder import check_path

            check_path(Path(value.strip("'\"")), key)
        if key == "hydra.job.chdir" and value.strip().lower() not in ("false", "null", "0", "no", "off", ""):
            raise ConfigError("hydra.job.chdir: a job never runs inside its build folder (it would leave its records "
                              "among the artifacts, and a sweep could not count its jobs); paths resolve from where "
                              "you run it; leave hydra.job.chdir=false")


def _drop_sweep_records() -> None:
    """An interrupted sweep never reaches its summary: remove the job records it was collecting."""
    import shutil

    from .sweep import SWEEP_RECORDS_ENV

    records = os.environ.get(SWEEP_RECORDS_ENV)
    if records:
        shutil.rmtree(records, ignore_errors=True)
    _undo_sweep_start()


def _summary_of_an_ended_sweep() -> Any:
    if "exporter.cli.sweep" not in sys.modules:  # no sweep started in this process
        return None
    return sys.modules["exporter.cli.sweep"].summarize_a_sweep_its_launcher_ended()


def _undo_sweep_start() -> None:
    if "exporter.cli.sweep" in sys.modules:  # no sweep started in this process otherwise
        sys.modules["exporter.cli.sweep"].undo_sweep_start()


def describe_error(exc: BaseException, args: list[str]) -> str:
    """One line for an error raised before or around the job (mostly Hydra's), naming the key and,
    where there is a fixed set, the valid values."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ExportError):
        return str(exc)
    if type(exc).__name__ in ("LexerNoViableAltException", "InputMismatchException", "NoViableAltException") or (
            "override_grammar" in str(exc)):
        return _unparsable_override(args)
    if isinstance(exc, CompactHydraException):
        text = _one_line(str(exc))
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException):
            text = text.split(". To append to your config use")[0].rstrip(".")
            text += ": " + _one_line(str(cause).split("\n    full_key:")[0])
            text += _valid_keys(cause)
        if "Could not load 'format/" in text and "Available options" not in text:
            # A list (format=[onnx,tflite]) gets no option list from Hydra, unlike format=tflite.
            from ..formats.registry import valid_names

            text += f"; valid formats: {', '.join(valid_names())}"
        return text
    if isinstance(exc, OSError) and exc.filename:
        return _unwritable_folder(exc)
    if isinstance(exc, OmegaConfBaseException) and "nterpolation" in type(exc).__name__ + str(exc):
        key = getattr(exc, "full_key", None) or "a value"
        return (f"{key}: {first_line(exc)}; a value meant literally escapes it: '\\${{...}}' "
                f"(e.g. hydra.run.dir='runs/\\${{x}}')")
    return f"{first_line(exc, with_type=True)} (HYDRA_FULL_ERROR=1 shows the traceback)"


def _unwritable_folder(exc: OSError) -> str:
    """Hydra could not create the job's folder (``hydra.run.dir``, ``hydra.sweep.dir``)."""
    import errno

    from ..files import name_max, unusable_link

    path = Path(os.fsdecode(exc.filename))
    for folder in (path, *path.parents):
        problem = unusable_link(folder)
        if problem:
            return f"hydra.run.dir: {folder} {problem}; point it at a folder, or remove it and choose that path again"
    if exc.errno == errno.ENAMETOOLONG:
        longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
        from ..build.folder import longest_name

        return (f"hydra.run.dir: a folder name of {longest} bytes is more than the file system takes "
                f"({name_max(path.parent)}); a build folder's name is at most {longest_name(path.parent)} bytes here "
                "(the build stages itself beside it under a longer name): choose a shorter one")
    return f"cannot write {exc.filename}: {exc.strerror or exc} (check hydra.run.dir / export_dir)"


def _unparsable_override(args: list[str]) -> str:
    """Hydra's grammar refused an override: say which one and how to write it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - the one Hydra refused
            key, _, value = arg.partition("=")
            if not key.isascii():
                why = f"a key is an ASCII name (letters, digits, _ and .), {key!r} is not"
            elif value.count("'") % 2 or value.count('"') % 2:
                why = "a quote in the value is not closed"
            elif _unclosed(value):
                opened = _unclosed(value)
                closed = value + "".join({"[": "]", "{": "}", "(": ")"}[c] for c in reversed(opened))
                why = f"a '{opened[-1]}' in the value is not closed; did you mean '{key}={closed}'?"
            elif value.startswith("~"):
                why = ("Hydra reads a leading ~ as 'delete this key': write the path out "
                       f"({key}=$HOME{value[1:]}, which your shell expands) or quote it for Hydra ('{key}=\"{value}\"')")
            elif " " in value:
                why = f"a value with spaces is quoted, and the quotes kept from the shell: '{key}=\"{value}\"'"
            else:
                why = ("a value with characters the grammar keeps for itself ([]{}(),:=~'\" and spaces) is quoted: "
                       f"'{key}=\"{value}\"'")
            return f"override {arg!r} cannot be read: {why}"
    return "an override cannot be read (see https://hydra.cc/docs/advanced/override_grammar/basic)"


def _unclosed(value: str) -> str:
    """The brackets of ``value`` opened and never closed, outside quotes, in order.

    >>> _unclosed("[onnx,pytorch"), _unclosed("{a: [1, 2]}"), _unclosed("'[x'")
    ('[', '', '')
    """
    stack: list[str] = []
    quote = ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            stack.append(char)
        elif char in "]})" and stack and "[{(".index(stack[-1]) == "]})".index(char):
            stack.pop()
    return "".join(stack)


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
    if str(getattr(cause, "full_key", "")).startswith("adapter.") and "not in struct" in str(cause):
        # adapter is null by default: its keys are added, not overridden.
        return "; adapter is null by default: add it with +adapter._target_=pkg.MyAdapter"
    return ""
