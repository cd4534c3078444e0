"""The one way a described job reaches the process that builds it.

The command line composes the job, checks it, decides whether its folder is up to date and
describes it (``exporter.cli.describe``), all in the process Hydra runs the job in. Then
``build_described`` has the description built in one of two places:

- a process forked for the job (``exporter.process.forked_jobs``), for a single run and for each
  job of a sweep under Hydra's basic launcher. Its memory and library state end with it; a crash
  (a segfault, the out-of-memory killer) is reported by this process, which removes what the job
  left, and fails that job, not the sweep;
- this process: a job of a launcher that starts processes of its own (joblib, Submitit, Ray),
  whose worker does the same steps through the same functions, and any job where forking is not
  safe (not Linux, another thread running, a tracer or profiler watching).

Everywhere the builder is ``exporter.process.child.build``. It builds what it is given and nothing
else: the checks and the up-to-date test have already run.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from ..console import flush_stdout, note_lost
from ..interrupts import PUBLISHED, Interrupted, stop_once_on_signals
from .child import JobDescription, build, job_outcome, stop
from .preload import JOB_MODULES

log = logging.getLogger("exporter")


def build_described(description: JobDescription, checked: tuple[dict[str, Any], Optional[str]],
                    identity: Optional[dict[str, Any]], *, fork: bool, multirun: bool) -> dict[str, Any]:
    """Build the described job and return its outcome. ``fork``: in a process forked for it
    (``forked_jobs.available`` says whether this process can fork safely), otherwise here.
    ``multirun``: a sweep's job, whose failure is its outcome; a single run's failure ends the run.
    ``checked`` and ``identity`` are the checked config and the build key (None: the key is
    computed beside the model's build)."""
    if not fork:
        return build(description, checked, identity)
    from .forked_jobs import run_forked

    export_dir = str(description.export_dir)
    with _publishes_of_the_jobs_process():
        result = run_forked(lambda: job_outcome(lambda: build(description, checked, identity), lambda: export_dir,
                                                multirun=multirun),
                            on_start=stop_once_on_signals, preload=JOB_MODULES)
    if result.output_lost:  # this process's exit reports it, as if its own output were lost
        note_lost(OSError(result.output_lost))
    outcome = _outcome_of(result)
    if outcome is not None:
        return outcome
    if result.crash:  # killed (a segfault, the out-of-memory killer): nothing of it cleaned up
        _remove_what_it_left(description.export_dir)
    if multirun:
        reason = result.error or result.crash or f"SystemExit: {result.exit}"
        log.error("error: %s", reason)
        return {"status": "error", "error": reason, "export_dir": export_dir}
    if result.exit is not None or result.error:  # it said why (a line, or HYDRA_FULL_ERROR's traceback)
        flush_stdout()
        sys.exit(result.exit if result.exit is not None else 1)
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
