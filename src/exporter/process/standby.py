"""A single run's job process, forked as the command line starts: it imports torch while the
command line's own process loads Hydra and composes the config, then builds the job it is handed.

Before, one process did it all in turn: Hydra and the tool (about 0.2 s), the composition and
checks (about 0.2 s), torch (1.2-1.8 s), then the job. Now the config's half runs beside torch's
import, on the machine's second core, and the build starts as soon as both are done. What the job
needs of the command line's work travels with it: the job as the command line described it
(exporter.process.child.JobDescription), Hydra's own config, the environment and the working
directory. The command line's process then waits for the job, passes a Ctrl-C or SIGTERM on to
it, and ends with its exit status (exporter.process.forked_jobs, as for a sweep's jobs).

A command line that builds nothing (a config error, an up-to-date build) ends without waiting: the
standby process is killed with it (``PR_SET_PDEATHSIG``), wherever its imports are. Once it holds
the job, the command line's death sends it SIGTERM instead, so its staging is removed. There is no
standby process for a sweep (whose jobs are forked, exporter.process.forked_jobs), for ``--help``, ``--cfg``
or any other option, for ``card``/``diff``/``verify``, on a single core, off Linux, under a tracer
or profiler or ``python -X importtime`` (they would see only half the work), when the load
average of the last minute has reached the number of cores (unless ``EXPORTER_STANDBY=1``), and with
``EXPORTER_STANDBY=0``.

    >>> wanted(["exporter", "--help"], environ={}), wanted(["exporter"], environ={"EXPORTER_STANDBY": "0"})
    (False, False)
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import Any, Callable, NoReturn, Optional

from ..interrupts import STOP_SIGNALS
from .forked_jobs import available
from .preload import JOB_MODULES

# Override keys through which a run could get another hydra.mode (a sweep) or read other configs.
# Subcommands that read finished builds (exporter.cli.card): no build, so no standby; anything else
# is the Hydra app.
READERS = ("card", "diff", "verify")
MODE_KEYS = ("hydra.mode", "hydra.searchpath")
# Variables the command line sets for itself (exporter.cli.app.main); no library reads them on import.
_OWN_VARIABLES = ("HYDRA_FULL_ERROR",)
# EXPORTER_STANDBY's spellings.
_NEVER, _ALWAYS = ("0", "false", "no", "off"), ("1", "true", "yes", "on")
# What the standby process imports while it waits: what every build needs (preload.JOB_MODULES). The
# rest depends on the job: onnx, transformers, and Hydra where the job needs it (exporter.process.child).
# Not the command line, Hydra's composition, omegaconf or the config store: the command line's
# process has done that work.

_standby: Optional["Standby"] = None


def wanted(argv: list[str], environ: Optional[dict[str, str]] = None) -> bool:
    """Whether a standby process would help this command line: a single build (``single_build``)
    on a Linux machine with two cores or more, nothing tracing this process, one thread in it,
    and CPU time to spare. ``EXPORTER_STANDBY``: ``0`` (``false``, ``no``, ``off``) never; ``1``
    (``true``, ``yes``, ``on``) whatever the load; unset (or anything else): while the load
    average of the last minute is below the number of cores. Builds run one after another keep it
    near 1; a test suite or other builds beside keep it above 2 on two cores."""
    environ = os.environ if environ is None else environ
    setting = forced(environ)
    if setting is False or environ.get("PYTHONPROFILEIMPORTTIME"):
        return False
    if not available() or "importtime" in sys._xoptions:  # Linux, one thread, no tracer or profiler
        return False
    cores = len(os.sched_getaffinity(0))
    # On a busy machine the standby's imports would take the core the command line's own work
    # needs: a config error or an up-to-date build would answer later, and the build gain nothing.
    spare = setting is True or os.getloadavg()[0] < cores
    return cores >= 2 and spare and single_build(argv)


def forced(environ: Any) -> Optional[bool]:
    """``EXPORTER_STANDBY`` read: False never, True whatever the load, None by the load.

    >>> forced({"EXPORTER_STANDBY": " Off"}), forced({"EXPORTER_STANDBY": "yes"}), forced({})
    (False, True, None)
    """
    setting = environ.get("EXPORTER_STANDBY", "").strip().lower()
    return False if setting in _NEVER else True if setting in _ALWAYS else None


def single_build(argv: list[str]) -> bool:
    """The command line is one build: overrides only, none that could make it a sweep.

    >>> single_build(["exporter", "format=onnx"]), single_build(["exporter", "-m", "seed=1,2"])
    (True, False)
    """
    args = argv[1:]
    if args and args[0] in READERS:
        return False
    return not any(arg.startswith("-") or arg.lstrip("+~").split("=", 1)[0] in MODE_KEYS for arg in args)


def start(argv: list[str]) -> None:
    """Fork the standby process if this command line wants one (``wanted``)."""
    global _standby
    if _standby is None and wanted(argv):
        _standby = Standby()


def take() -> Optional["Standby"]:
    """The standby process, still waiting for its job, for the caller to hand it one; None when
    there is none (then the job runs here). Given out once. Also None, the standby dismissed, when
    the environment has changed since it was forked (``hydra.job.env_set``): torch read variables
    such as ``OMP_NUM_THREADS`` or ``PYTORCH_JIT`` as the standby imported it, so the job must run
    in this process, where torch is yet to be imported with them."""
    global _standby
    standby, _standby = _standby, None
    if standby is None or not standby.waiting():
        return None
    if _variables_changed(standby.environ, os.environ):
        standby.end()
        return None
    return standby


def _variables_changed(before: Any, now: Any) -> bool:
    """Whether a variable other than those the command line sets for itself was set, changed or
    removed.

    >>> _variables_changed({"A": "1"}, {"A": "1", "HYDRA_FULL_ERROR": "1"}), _variables_changed({}, {"B": ""})
    (False, True)
    """
    return {k: v for k, v in before.items() if k not in _OWN_VARIABLES} != \
        {k: v for k, v in now.items() if k not in _OWN_VARIABLES}


def dismiss() -> None:
    """The run ends without a job for its standby process: kill it and reap it here, rather than
    leave a dead child to whichever process adopts it (some containers' first process never reaps)."""
    global _standby
    standby, _standby = _standby, None
    if standby is not None:
        standby.end()


class Standby:
    """The forked process and the two unlinked files shared with it: the job handed to it, and its
    report (exporter.process.forked_jobs). A pipe carries one byte, "go"; its end of file, "never"."""

    def __init__(self) -> None:
        import tempfile

        self.job_file = tempfile.TemporaryFile()
        self.report_file = tempfile.TemporaryFile()
        go_read, self.go = os.pipe()
        parent = os.getpid()
        self.environ = dict(os.environ)  # what the libraries it imports read (take)
        # SIGINT and SIGTERM stay blocked in the child until it has the job and the handlers to stop
        # it: nothing it does before needs stopping (it dies with this process).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            raise
        if self.pid == 0:
            try:
                os.close(self.go)
                _wait_for_a_job(go_read, self.job_file.fileno(), self.report_file.fileno(), parent)
            finally:
                os._exit(1)
        os.close(go_read)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def end(self) -> None:
        """Kill it, wherever it is, and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def waiting(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def run(self, handler: str, *args: Any) -> Any:
        """Have the standby process call ``exporter.process.child.<handler>(*args)`` as its job, and
        return its report (exporter.process.forked_jobs.ChildResult); None if it is gone before it took the
        job (then the caller runs the job itself). ``handler`` prepares the process from ``args``
        (it runs with SIGINT and SIGTERM blocked) and returns the job to run."""
        from ..console import flush_streams
        from .forked_jobs import supervise

        data = pickle.dumps((handler, args), protocol=pickle.HIGHEST_PROTOCOL)
        self.job_file.write(data)
        self.job_file.flush()
        flush_streams()  # what this process said so far comes before what the job says
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            os.write(self.go, b"g")
        except OSError:  # it died (its imports crashed it): the job runs here
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            return None
        finally:
            os.close(self.go)
        return supervise(self.pid, self.report_file)


def _wait_for_a_job(go_read: int, job_fd: int, report_fd: int, parent: int) -> NoReturn:
    from .forked_jobs import _die_with, run_and_report

    _die_with(parent, signal.SIGKILL)  # idle, it has nothing to clean up
    _import_ahead()
    if os.read(go_read, 1) != b"g":
        os._exit(0)  # the command line's process ended without a job for it
    os.close(go_read)
    _die_with(parent, signal.SIGTERM)  # with the job, it cleans up as a single run does
    handler, args = pickle.loads(os.pread(job_fd, os.fstat(job_fd).st_size, 0))
    prepared: list[Callable[[], Any]] = []

    def prepare() -> None:
        from . import child as job_process

        prepared.append(getattr(job_process, handler)(*args))

    run_and_report(lambda: prepared[0](), prepare, report_fd)


def _import_ahead() -> None:
    """Import what the job will need. A failure is left to the job's own import, which reports it
    as it would in a single run."""
    import importlib

    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - see the docstring
            pass
