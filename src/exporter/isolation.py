"""Each job of a sweep in a process of its own, forked from the sweep's process as the job starts.

Hydra's basic launcher runs a sweep's jobs one after another in one process. Sharing it, a job
inherits what earlier jobs left behind: torch.jit's class tables (a later job's TorchScript had
numbered class names), the memory they held (the six-job sweep of benchmarks/sweep_vs_bare.py
peaked 0.10 GiB above the largest single job), and one job that crashes the interpreter (a segfault
in a runtime, the kernel's out-of-memory killer) would end the whole sweep. In a forked process each
job starts from the sweep's state, gives everything back when it ends, and a crash is that job's
failure. The modules an earlier job imported are imported by the sweep's process before the next
fork, so that jobs still pay torch's import once per sweep, not once each.

    >>> result = run_forked(lambda: {"status": "ok", "answer": 6 * 7})
    >>> result.value, result.crash
    ({'status': 'ok', 'answer': 42}, None)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Optional

# Modules the jobs so far imported, in the order they did: imported here before the next fork.
_IMPORTED: list[str] = []
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@dataclass
class ChildResult:
    value: Any = None  # what the job returned (JSON), when it returned
    interrupted: Optional[int] = None  # the signal that stopped the job, when one did
    published: list[str] = field(default_factory=list)  # build folders the job published
    error: Optional[str] = None  # an exception that escaped the job, as one line
    crash: Optional[str] = None  # the process ended without reporting (a signal, os._exit)


def available() -> bool:
    """Forking is safe here: Linux (fork without exec is unsafe with macOS's system libraries), one
    thread (a lock another thread holds would stay locked in the child) and no tracer or profiler
    (coverage or cProfile would not see the jobs)."""
    return (sys.platform.startswith("linux") and threading.active_count() == 1
            and sys.gettrace() is None and sys.getprofile() is None)


def run_forked(job: Callable[[], Any], on_start: Optional[Callable[[], None]] = None,
               preload: tuple[str, ...] = ()) -> ChildResult:
    """Run ``job()`` in a forked child process and return what it reported. ``on_start`` runs
    first in the child (the command line installs its signal handlers there); ``preload`` names
    modules to import here first, beside those earlier jobs imported (the first job of a sweep
    would otherwise import torch in its own process, and this one again for the next job).

    A signal to this process while the job runs (Ctrl-C, SIGTERM) is passed on to the child, which
    stops its job the way a single run stops (staging removed, lock freed); this process waits for
    that, then raises it (KeyboardInterrupt or what the signal handler raises) with the child's
    report in ``exc.child_result``. When importing what earlier jobs imported started a thread,
    forking is no longer safe and the job runs here instead."""
    _import_what_jobs_imported(preload)
    if not available():
        return ChildResult(value=job())
    _flush_standard_streams()  # or the child would write what is still buffered here a second time
    read, write = os.pipe()
    # Held back until each process has the handlers it needs: a signal in between must neither run
    # this process's handler in the child (its exception would carry the child into the sweep's code)
    # nor be lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        raise
    if pid == 0:
        try:
            os.close(read)
            _child(job, on_start, write)
        finally:
            os._exit(1)  # never back into the sweep's code
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        try:
            report = reader.read()
            status = _wait(pid)
        except BaseException as exc:
            _pass_on(pid, getattr(exc, "signum", signal.SIGINT))
            report = reader.read()
            _wait(pid)
            exc.child_result = _result(report, None)
            raise
    return _result(report, status)


def _result(report: bytes, status: Optional[int]) -> ChildResult:
    try:
        data = json.loads(report) if report else None
    except ValueError:
        data = None
    if data is None:
        return ChildResult(crash=_how_it_ended(status))
    _IMPORTED.extend(name for name in data.pop("imported", []) if name not in _IMPORTED)
    return ChildResult(**data)


def _how_it_ended(status: Optional[int]) -> str:
    if status is not None and os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        why = " (the out-of-memory killer sends it, too)" if signum == signal.SIGKILL else ""
        return f"the job's process was killed by {signal.Signals(signum).name}{why}"
    code = os.waitstatus_to_exitcode(status) if status is not None else "unknown"
    return f"the job ended with exit status {code} before it reported"


def _wait(pid: int) -> int:
    return os.waitpid(pid, 0)[1]


def _pass_on(pid: int, signum: int) -> None:
    # Ctrl-C reaches the child from the terminal too; the child's handler stops once, whatever
    # number of signals arrives, so this copy never breaks its cleanup.
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _child(job: Callable[[], Any], on_start: Optional[Callable[[], None]], write: int) -> NoReturn:
    before = set(sys.modules)
    report: dict[str, Any] = {}
    code = 0
    try:
        if on_start is not None:
            on_start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        report["value"] = job()
    except KeyboardInterrupt:
        report["interrupted"], code = int(signal.SIGINT), 130
    except BaseException as exc:  # noqa: BLE001 - reported to the sweep's process, which carries on
        signum = getattr(exc, "signum", None)
        if signum is not None:
            report["interrupted"], code = int(signum), 128 + int(signum)
        else:
            report["error"], code = (f"{type(exc).__name__}: {exc}".splitlines() or ["?"])[0], 1
    # The job is over: a signal now must not raise into the report; the sweep's process has it too.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    from .build_folder import PUBLISHED

    report["published"] = [str(path) for path in PUBLISHED]
    report["imported"] = [name for name in sys.modules if name not in before]
    try:
        data = json.dumps(report, default=str).encode()
        while data:
            data = data[os.write(write, data):]
    except OSError:
        code = code or 1
    _flush_standard_streams()
    import logging

    logging.shutdown()  # flushes the job's log files; the sweep's process keeps its own copies
    os._exit(code)


def _flush_standard_streams() -> None:
    from .console import flush_stdout

    flush_stdout()
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _import_what_jobs_imported(preload: tuple[str, ...] = ()) -> None:
    """Import here what earlier jobs imported, so that the next forked job finds it loaded. A module
    that fails to import here is left to the job, which reports it as it would in a single run;
    import-time warnings are the jobs' to show, not this process's."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in [*preload, *_IMPORTED]:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - see the docstring
                pass
