"""Each job of a sweep in a process of its own, forked from the sweep's process as the job starts.

Hydra's basic launcher runs a sweep's jobs one after another in one process. Sharing it, a job
inherits what earlier jobs left behind: torch.jit's class tables (a later job's TorchScript had
numbered class names), the memory they held (the six-job sweep of benchmarks/sweep_vs_bare.py
peaked 0.10 GiB above the largest single job), and one job that crashes the interpreter (a segfault
in a runtime, the kernel's out-of-memory killer) would end the whole sweep. In a forked process each
job starts from the sweep's state, gives everything back when it ends, and a crash is that job's
failure. The libraries an earlier job imported (the tool's dependencies, never the user's own
modules, whose import-time code must run in the job) are imported by the sweep's process before
the next fork, so that jobs still pay torch's import once per sweep, not once each.

The job's process ends as a single run ends: threads that are not daemons are waited for, the exit
handlers registered during the job run (log files closed, temporary folders removed, helper
processes ended), then ``os._exit``. It dies with the sweep's process, whatever ends that.

    >>> result = run_forked(lambda: {"status": "ok", "answer": 6 * 7})
    >>> result.value, result.crash
    ({'status': 'ok', 'answer': 42}, None)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Optional

from ..console import flush_streams
from ..interrupts import STOP_SIGNALS
from .internals import end_as_the_interpreter_would, forget_the_parents_exit_handlers
from .preload import WARM_PACKAGES

log = logging.getLogger("exporter")

# Libraries the jobs so far imported, in the order they did: imported here before the next fork.
_IMPORTED: list[str] = []
_PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass
class ChildResult:
    value: Any = None  # what the job returned (JSON), when it returned
    interrupted: Optional[int] = None  # the signal that stopped the job, when one did
    published: list[str] = field(default_factory=list)  # build folders the job published
    error: Optional[str] = None  # an exception that escaped the job, as one line
    exit: Optional[int] = None  # the job ended with sys.exit(exit) (it printed why)
    crash: Optional[str] = None  # the process ended without reporting (a signal, os._exit)
    killed_by: Optional[int] = None  # the signal that ended it so
    output_lost: Optional[str] = None  # why what it printed could not be written (a full disk)


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
    that, with further Ctrl-C and SIGTERM held back (the child stops once), then raises the signal's
    exception with the child's report in ``exc.child_result``. Those signals stay held back: the
    caller is on its way out. When importing what earlier jobs imported started a thread, forking
    is no longer safe and the job runs here instead, with a warning."""
    _import_what_jobs_imported(preload)
    if not available():
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.current_thread())
        log.warning("this job runs in the sweep's own process: a thread is running there (%s)", names)
        return ChildResult(value=job())
    flush_streams()  # or the child would write what is still buffered here a second time
    # A file, not a pipe: a helper process the job starts inherits every descriptor, and would hold a
    # pipe open after the job's process ended. Unlinked at once: nothing stays behind.
    with tempfile.TemporaryFile() as report_file:
        # Held back until each process has the handlers it needs: a signal in between must neither
        # run this process's handler in the child (its exception would carry the child into the
        # sweep's code) nor be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        sweep = os.getpid()
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            raise
        if pid == 0:
            try:
                _die_with(sweep)
                forget_the_parents_exit_handlers()
                run_and_report(job, on_start, report_file.fileno())
            finally:
                os._exit(1)  # never back into the sweep's code
        return supervise(pid, report_file)


def supervise(pid: int, report_file: Any) -> ChildResult:
    """Wait for the child ``pid`` (SIGINT and SIGTERM blocked by the caller until now) and return
    what it wrote into ``report_file``; a signal meanwhile is passed on, as run_forked says."""
    status = None
    try:
        # A signal that came while they were blocked is delivered here, inside the try.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        status = os.waitpid(pid, 0)[1]
    except BaseException as exc:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        _pass_on(pid, getattr(exc, "signum", signal.SIGINT))
        _wait_for(pid)
        exc.child_result = _result(_read(report_file), None)
        raise
    return _result(_read(report_file), status)


def _read(report_file: Any) -> bytes:
    report_file.seek(0)
    return report_file.read()


def _result(report: bytes, status: Optional[int]) -> ChildResult:
    try:
        data = json.loads(report) if report else None
    except ValueError:
        data = None
    if data is None:
        killed_by = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None
        return ChildResult(crash=_how_it_ended(status), killed_by=killed_by)
    _IMPORTED.extend(name for name in data.pop("imported", []) if name not in _IMPORTED)
    return ChildResult(**data)


def _how_it_ended(status: Optional[int]) -> str:
    if status is not None and os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        why = " (the out-of-memory killer sends it, too)" if signum == signal.SIGKILL else ""
        return f"the job's process was killed by {signal.Signals(signum).name}{why}"
    code = os.waitstatus_to_exitcode(status) if status is not None else "unknown"
    return f"the job ended with exit status {code} before it reported"


def _wait_for(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already, as the signal arrived
        pass


def _pass_on(pid: int, signum: int) -> None:
    # Ctrl-C reaches the child from the terminal too; the child's handler stops once, whatever
    # number of signals arrives, so this copy never breaks its cleanup.
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def run_and_report(job: Callable[[], Any], on_start: Optional[Callable[[], None]], report_fd: int) -> NoReturn:
    """In the child, SIGINT and SIGTERM blocked: ``on_start()``, then ``job()`` with the signals
    unblocked; its outcome is written to ``report_fd`` as JSON and the process ends (``_end``)."""
    before = set(sys.modules)
    report: dict[str, Any] = {}
    code = 0
    try:
        if on_start is not None:
            on_start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        report["value"] = job()
    except KeyboardInterrupt:
        report["interrupted"], code = int(signal.SIGINT), 130
    except BaseException as exc:  # noqa: BLE001 - reported to the sweep's process, which carries on
        signum = getattr(exc, "signum", None)
        if signum is not None:
            report["interrupted"], code = int(signum), 128 + int(signum)
        elif isinstance(exc, SystemExit):  # the job said its last line itself and chose the exit status
            report["exit"] = code = _exit_status(exc.code)
        else:
            # Only what the job did not turn into an outcome itself gets here (HYDRA_FULL_ERROR=1
            # asks for its traceback; a bug in the tool needs it).
            traceback.print_exc()
            report["error"], code = (f"{type(exc).__name__}: {exc}".splitlines() or ["?"])[0], 1
    # The job is over: a signal now must not raise into the report; the sweep's process has it too.
    # (Ignored, not blocked: the runtimes' own threads do not block signals, and the Python handler
    # of a signal one of them receives would still run here.)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    from ..interrupts import PUBLISHED

    report["published"] = [str(path) for path in PUBLISHED]
    lost = flush_streams()
    if lost is not None:
        report["output_lost"] = lost.strerror or str(lost)
    report["imported"] = [name for name in sys.modules if name not in before]
    try:
        data = json.dumps(report, default=str).encode()
        while data:
            data = data[os.write(report_fd, data):]
    except OSError:
        code = code or 1
    _end(code)


def _exit_status(code: Any) -> int:
    """What the interpreter makes of ``sys.exit(code)``: None is 0, a message is printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _end(code: int) -> NoReturn:
    """End as the interpreter ends a single run, then ``os._exit``. The report is written: a
    signal from here on ends the process at once."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    end_as_the_interpreter_would()
    logging.shutdown()  # its exit hook was the sweep's: the job's log files are flushed and closed here
    flush_streams()
    os._exit(code)


def _die_with(parent: int, signum: int = signal.SIGTERM) -> None:
    """``signum`` to this process when the sweep's process ends, however it ends (SIGKILL, a closed
    terminal): with SIGTERM the job stops as it would on SIGTERM, instead of building on
    unsupervised."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum))
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it ended before the request was in place
        os.kill(os.getpid(), signum)


def _import_what_jobs_imported(preload: tuple[str, ...] = ()) -> None:
    """Import here the libraries earlier jobs imported, so that the next forked job finds them
    loaded. A module that fails to import here is left to the job, which reports it as it would in
    a single run; import-time warnings are the jobs' to show, not this process's."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in [*preload, *_IMPORTED]:
            if name in sys.modules or name.split(".", 1)[0] not in WARM_PACKAGES:
                continue
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - see the docstring
                pass
