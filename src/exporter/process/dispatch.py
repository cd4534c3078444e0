"""The one way a described job reaches the process that builds it.

The command line composes the job, checks it, decides whether its folder is up to date and
describes it (``exporter.cli.describe``), all in the process Hydra runs the job in. Then
``build_described`` has the description built in one of three places:

- a process forked for the job, for each job of a sweep under Hydra's basic launcher
  (``exporter.process.forked_jobs``). Its memory and library state end with it, and a crash fails
  that job, not the sweep;
- the standby process of a single run, which imported torch while the command line composed the
  config (``exporter.process.standby``);
- this process: a single run without a standby, or a job of a launcher that starts processes of
  its own (joblib, Submitit, Ray), whose worker does the same steps through the same functions.

Everywhere the builder is ``exporter.process.child.build``. It builds what it is given and nothing
else: the checks and the up-to-date test have already run.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from ..console import flush_stdout, note_lost
from ..interrupts import PUBLISHED, Interrupted, stop_once_on_signals
from .child import SHOW_TRACEBACKS, Deferred, JobDescription, build, job_outcome, stop
from .preload import JOB_MODULES

log = logging.getLogger("exporter")



def build_described(description: JobDescription, checked: tuple[dict[str, Any], Optional[str]],
                    identity: Optional[dict[str, Any]], *, fork: bool,
                    hydra_state: Callable[[], tuple[Deferred, Optional[dict[str, Any]]]]) -> dict[str, Any]:
    """Build the described job and return its outcome. ``fork``: in a process forked for it (a job
    of a basic-launcher sweep). Otherwise it is built in the standby process if one takes it, else
    here. ``checked`` and ``identity`` are the checked config and the build key (None: the key is
    computed beside the model's build). ``hydra_state()`` returns what the standby needs of this
    process's Hydra: its config and the job's logging config (None: Hydra sets it up)."""
    if fork:
        return _in_a_forked_process(description, checked, identity)
    from .standby import take

    standby = take()
    if standby is not None:
        outcome = _in_the_standby(standby, description, checked, identity, hydra_state)
        if outcome is not None:
            return outcome
    return build(description, checked, identity)


def _in_a_forked_process(description: JobDescription, checked: tuple[dict[str, Any], Optional[str]],
                         identity: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The sweep's job in a process forked for it: its memory and library state end with it, and a
    crash (a segfault, the out-of-memory killer) fails this job, not the sweep. What every build
    needs is imported here first, once per sweep."""
    from .forked_jobs import run_forked

    export_dir = str(description.export_dir)
    with _publishes_of_the_jobs_process():
        result = run_forked(lambda: job_outcome(lambda: build(description, checked, identity), lambda: export_dir,
                                                multirun=True),
                            on_start=stop_once_on_signals, preload=JOB_MODULES)
    outcome = _outcome_of(result)
    if outcome is not None:
        return outcome
    reason = result.error or result.crash or f"SystemExit: {result.exit}"
    log.error("error: %s", reason)
    return {"status": "error", "error": reason, "export_dir": export_dir}


def _in_the_standby(standby: Any, description: JobDescription, checked: tuple[dict[str, Any], Optional[str]],
                    identity: Optional[dict[str, Any]],
                    hydra_state: Callable[[], tuple[Deferred, Optional[dict[str, Any]]]]) -> Optional[dict[str, Any]]:
    """The job built in the standby process (``exporter.process.child.take_over`` there). Its
    outcome, or None if the standby was gone before it took the job. The standby printed its own
    errors: this process ends with its exit status."""
    hydra_cfg, job_logging = hydra_state()
    with _publishes_of_the_jobs_process():
        result = standby.run("take_over", description, hydra_cfg, job_logging, dict(os.environ), os.getcwd(),
                             SHOW_TRACEBACKS, checked, identity)
    if result is None:
        return None
    if result.output_lost:  # this process's exit reports it, as if its own output were lost
        note_lost(OSError(result.output_lost))
    outcome = _outcome_of(result)
    if outcome is not None:
        return outcome
    if result.exit is not None or result.error:  # it said why (a line, or HYDRA_FULL_ERROR's traceback)
        flush_stdout()
        sys.exit(result.exit if result.exit is not None else 1)
    _remove_what_it_left(description.export_dir)
    stop(128 + result.killed_by if result.killed_by else 2, f"error: {result.crash}")


@contextmanager
def _publishes_of_the_jobs_process():
    """A signal that stops this process while a job's own process runs: what that process published
    counts as published here (the interruption message names it)."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as exc:
        PUBLISHED.extend(Path(p) for p in getattr(getattr(exc, "child_result", None), "published", []))
        raise


def _outcome_of(result: Any) -> Optional[dict[str, Any]]:
    """The outcome a job's own process reported (``forked_jobs.ChildResult``), what it published
    counted here; None if it reported none (it failed). A signal to that process alone stops this
    one too, as if it had been signalled."""
    PUBLISHED.extend(Path(p) for p in result.published)
    if result.interrupted:
        raise Interrupted(result.interrupted)
    return result.value


def _remove_what_it_left(folder: Path) -> None:
    """A job's process that was killed left its staging folder (and, killed while publishing, the
    previous build moved aside): put back and removed now, as the next build would (its lock is
    free: the kernel released it with the process)."""
    from ..build.folder import remove_leftovers

    try:
        if folder.parent.is_dir():
            remove_leftovers(folder.parent)
    except OSError as exc:
        log.warning("could not remove what the job left in %s: %s", folder.parent, exc)
