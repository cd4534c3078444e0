"""How Ctrl-C and SIGTERM stop the tool: an exception raised in the main thread, so that every
``finally`` runs (staging removed, lock freed), and held back where raising would do harm (the
publish step, a native library's import).

Kept apart and light: the command line installs these handlers before it loads anything else.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NoReturn

# Targets published by this process (the command line words an interruption after a publish).
PUBLISHED: list[Path] = []
# Signals the command line received. Some libraries turn the exception raised inside their calls
# into another one (omegaconf, torch); this record lets such an error still end as an interruption.
INTERRUPTED: list[int] = []
# The signals that stop the tool (its handlers, what a job's process passes on, what is held back).
# SIGHUP (the terminal closed, an ssh session dropped) stops it as SIGTERM does: exit 129.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` runs. A BaseException,
    like KeyboardInterrupt: no ``except Exception`` in a format may swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, _frame: Any) -> NoReturn:
    """The command line's handler of SIGINT and SIGTERM."""
    INTERRUPTED.append(signum)
    raise Interrupted(signum)


def stop_once_on_signals() -> None:
    """In a job's own process: the first SIGINT or SIGTERM stops the job; later ones (Ctrl-C reaches
    it from the terminal and again from the command line's or the sweep's process) must not break
    the cleanup it runs."""
    stopping: list[int] = []

    def stop_once(signum: int, frame: Any) -> None:
        if not stopping:
            stopping.append(signum)
            raise_interrupted(signum, frame)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_once)


def python_signal_handlers() -> None:
    """Python's own handlers, for a process the job forks (a multiprocessing helper of the user's
    code): terminating it at exit must not print an Interrupted traceback."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver them (main thread only; elsewhere
    signals never run here).

    The Python handlers are swapped for ones that only note the signal. Blocking the signal with
    pthread_sigmask would not do: the C-level handler may run in any other thread (torch's and ONNX
    Runtime's workers do not block it) and the Python handler would still run here, in the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _frame: held.append(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)  # now, with the real handler: it raises here if it raises
