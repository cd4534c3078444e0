"""The standard streams at the end of a run: stdout flushed, one-line messages on stderr, and
neither raising when a reader closed its pipe (``exporter ... | head -1``) or a disk is full."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

# Python's own exit status when it cannot flush stdout at exit (a full disk, an I/O error).
OUTPUT_LOST = 120
# What a signal before the publish leaves: the folder as it was (exit 128 + the signal's number).
INTERRUPTED_MESSAGE = "interrupted; nothing was published (an earlier build is intact)"
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
