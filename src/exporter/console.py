"""The standard streams at the end of a run: stdout flushed, one-line messages on stderr, and
neither raising when a reader closed its pipe (``exporter ... | head -1``) or a disk is full."""

from __future__ import annotations

import errno
import io
import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional

# Python's own exit status when it cannot flush stdout at exit (a full disk, an I/O error).
OUTPUT_LOST = 120
# What a signal before the publish leaves: the folder as it was (exit 128 + the signal's number).
INTERRUPTED_MESSAGE = "interrupted; nothing was published (the folder is as it was before this run)"
# Output that could not be written where it was written (unbuffered output, PYTHONUNBUFFERED=1,
# fails at each write, not at the flush at exit): the exit reports the first error.
LOST: list[OSError] = []


def note_lost(exc: Optional[BaseException]) -> None:
    """Note an error writing the output for the exit status; a reader that closed its pipe
    (``| head -1``) is not one."""
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError) and not LOST:
        LOST.append(exc)


class ConsoleHandler(logging.StreamHandler):
    """The job's console lines (``conf/hydra/job_logging/exporter.yaml``). logging drops an error
    writing a record (``logging.raiseExceptions`` is off: no traceback per line); this one notes
    it too, so that output lost to a full disk still ends the run with exit status 120."""

    def handleError(self, record: logging.LogRecord) -> None:
        note_lost(sys.exc_info()[1])
        super().handleError(record)

    def emit(self, record: logging.LogRecord) -> None:
        # While a step is drawn (``step``), stdout is rich's proxy, which prints above the drawing.
        drawn = _LIVE[-1] if _LIVE else None
        if drawn is None or self.stream is not drawn:
            super().emit(record)
            return
        self.stream = sys.stdout
        try:
            super().emit(record)
        finally:
            self.stream = drawn


def flush_stdout() -> Optional[OSError]:
    """Flush stdout; the error if it cannot be written. A pipe its reader closed (``| head -1``)
    is not one: the reader had what it wanted. Either way stdout then points at /dev/null, so
    that no later write or Python's exit raises again (the recipe of Python's signal docs)."""
    try:
        sys.stdout.flush()
        return None
    except (OSError, ValueError) as exc:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return None if isinstance(exc, BrokenPipeError) or not isinstance(exc, OSError) else exc


def say(message: str, code: int) -> int:
    """One line on stderr (as long as stderr can take it); returns ``code``."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    return code


def flush_streams() -> Optional[OSError]:
    """flush_stdout, then stderr as far as it can be flushed; stdout's error, if any, now or at an
    earlier write (note_lost)."""
    lost = flush_stdout()
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return lost or next(iter(LOST), None)


class GuardedStream(io.TextIOBase):
    """sys.stdout (or sys.stderr) such that no write ever raises into the tool or a library (Hydra's
    ``--help`` and ``--cfg``, the readers' reports, the job's log lines): an error writing stdout is
    noted (``note_lost``: the run then exits 120 saying so, if it was otherwise fine) and the rest
    goes to /dev/null. A stream closed before the process started (``exporter ... >&-``) is one
    whose first write is lost."""

    def __init__(self, inner: Optional[Any], fd: int, notes: bool):
        super().__init__()
        self._inner, self._fd, self._notes = inner, fd, notes
        # Closed before the process started: its first write is output lost (a reader that went
        # away later, ``| head -1``, is not: note_lost tells the two apart).
        self._closed_at_start = inner is None

    def _lost(self, exc: BaseException) -> None:
        if self._notes:
            note_lost(exc)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._fd)
            os.close(devnull)
        except OSError:
            pass
        self._inner = None

    def write(self, text: str) -> int:
        if self._inner is None:
            if self._notes and self._closed_at_start and text:
                note_lost(OSError(errno.EBADF, "stdout is closed"))
            return len(text)
        try:
            return self._inner.write(text)
        except (OSError, ValueError) as exc:
            self._lost(exc)
            return len(text)

    def flush(self) -> None:
        if self._inner is None:
            return
        try:
            self._inner.flush()
        except (OSError, ValueError) as exc:
            self._lost(exc)

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return self._inner is not None and self._inner.isatty()
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._inner, "encoding", None) or "utf-8"

    @property
    def errors(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self._inner, "errors", None)

    @property
    def buffer(self) -> Any:
        return self._inner.buffer if self._inner is not None else io.BytesIO()


def guard_standard_streams() -> None:
    """At the start of the process: a closed descriptor 0, 1 or 2 is opened on /dev/null (or the
    next file the tool opens, a build's export.log, say, would take its number and receive its
    output), and stdout and stderr become ``GuardedStream``s."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
    if not isinstance(sys.stdout, GuardedStream):
        sys.stdout = GuardedStream(None if 1 in closed or sys.stdout is None else sys.stdout, 1, notes=True)
    if not isinstance(sys.stderr, GuardedStream):
        sys.stderr = GuardedStream(None if 2 in closed or sys.stderr is None else sys.stderr, 2, notes=False)


# Long work shows progress. On a terminal (stdout and stderr both one), the step under way and its
# elapsed time, drawn by rich on stderr and cleared when the step ends; the job's own lines print
# above it. Elsewhere (a pipe, a file, a launcher's log), no drawing: a step still running after
# EXPORTER_PROGRESS_SECONDS (10) gets a plain line, and another every 30 s after.
PROGRESS_ENV = "EXPORTER_PROGRESS_SECONDS"
# Set in a sweep (exporter.cli.sweep) and inherited by its jobs' processes: jobs that run side by side
# (joblib, Submitit, Ray) would draw over each other on one terminal, so a sweep's jobs draw nothing.
SWEEP_RECORDS_ENV = "EXPORTER_SWEEP_RECORDS"
_LIVE: list[Any] = []
_progress_log = logging.getLogger("exporter")


def _terminal() -> bool:
    if os.environ.get("TERM") == "dumb" or os.environ.get(SWEEP_RECORDS_ENV):
        return False
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (OSError, ValueError):
        return False


def _plain_after() -> Optional[float]:
    """Seconds before a step's first plain line: 10 by default; ``off`` (or a value past a day, ``inf``)
    none at all; a value that is not a number, the default."""
    value = os.environ.get(PROGRESS_ENV, "10").strip().lower()
    if value in ("off", "none", "never", "false"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return 10.0
    if seconds != seconds:  # nan
        return 10.0
    return None if seconds > 86400 else max(0.0, seconds)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Show ``what`` (``onnx: exporting``) as under way while the block runs: a spinner with the
    elapsed time on a terminal, a plain line now and then elsewhere (above)."""
    if _LIVE:  # a step inside a step: the outer one stays on show
        yield
        return
    if _terminal():
        with _drawn(what):
            yield
        return
    with _plain(what):
        yield


@contextmanager
def _drawn(what: str) -> Iterator[None]:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=Console(file=sys.stderr), transient=True, redirect_stdout=True,
                        redirect_stderr=True)
    progress.add_task(what, total=None)
    _LIVE.append(sys.stdout)
    try:
        # Inside the try: a Ctrl-C while the drawing starts still stops it (and shows the cursor).
        progress.start()
        yield
    finally:
        _LIVE.pop()
        progress.stop()


@contextmanager
def _plain(what: str) -> Iterator[None]:
    import threading
    import time

    started, done = time.monotonic(), threading.Event()
    after = _plain_after()
    if after is None:
        yield
        return

    def still() -> None:
        wait = after
        while not done.wait(wait):
            elapsed = time.monotonic() - started
            _progress_log.info("%s (%s s so far)", what, f"{elapsed:.0f}" if elapsed >= 10 else f"{elapsed:.1f}")
            wait = 30.0

    watcher = threading.Thread(target=still, name="exporter-progress", daemon=True)
    _LIVE.append(None)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        _LIVE.pop()
