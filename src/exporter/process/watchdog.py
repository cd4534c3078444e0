"""A sweep's jobs end with the sweep: no worker builds on, or lingers, after its sweep's process is gone.

Hydra's joblib launcher runs the jobs in loky workers, ``submitit_local`` in processes of its own and
a local Ray in Ray's workers. None of them notices that the sweep's process was killed (SIGKILL
leaves it no say): loky's workers built on, published builds and held the caller's pipes for over
700 s. So the sweep names its process in the environment its jobs inherit (``SWEEP_OWNER_ENV``:
host, pid and the process's start time, so that a reused pid is not mistaken for it), and each job
of the sweep in another process follows it (``follow_the_sweep``): a thread checks twice a second
that the sweep's process is still there. When it is not, a job that is running is stopped as
SIGTERM stops it (its staging removed, its lock freed), and then the process ends, exit 143; a
worker between jobs ends at once.

A job on another machine (a Ray cluster, Slurm) cannot see the sweep's process; its launcher
decides what happens to it.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..interrupts import STOP_SIGNALS, Interrupted, raise_interrupted

SWEEP_OWNER_ENV = "EXPORTER_SWEEP_OWNER"
# The launcher of the sweep (its config's ``_target_``, shortened): how a stopped worker waits.
SWEEP_LAUNCHER_ENV = "EXPORTER_SWEEP_LAUNCHER"
_POLL_SECONDS = 0.5
# After the sweep is gone, how long a running job has to clean up after its SIGTERM.
_GRACE_SECONDS = 60.0

_FOLLOWING: list[threading.Thread] = []
_RUNNING: list[int] = []  # one entry while a job of the sweep runs in this process
_STOPPED: list[int] = []  # the signal that stopped this worker: it runs no further job
# In the sweep's records folder: a file per worker process while a job runs there, so that the
# sweep, stopping, waits for its jobs to clean up before the launcher's teardown kills its workers.
RUNNING_DIR = "running"
# In the sweep's records folder once the sweep is stopping: a worker that has stopped its job waits
# there for the end (the launcher, handed an interrupted job, would kill the other workers mid-cleanup).
STOPPING_FILE = "stopping"


def start_time(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat), or None when
    there is no such process, it has ended (a zombie its parent has not reaped yet), or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields after it start after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X"):  # a process that ended, not yet reaped: gone
        return None
    return fields[19]


def owner_value() -> str:
    """This process as the sweep's owner: ``host:pid:start time``."""
    return f"{socket.gethostname()}:{os.getpid()}:{start_time(os.getpid()) or '?'}"


def _owner_parts() -> Optional[tuple[str, int, str]]:
    """``SWEEP_OWNER_ENV`` as (host, pid, start time), or None outside a sweep."""
    parts = os.environ.get(SWEEP_OWNER_ENV, "").rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def _owner() -> Optional[tuple[int, str]]:
    """The sweep's process (pid, start time) when it runs on this host and is not this process."""
    parts = _owner_parts()
    if parts is None:
        return None
    host, pid, started = parts
    if host != socket.gethostname() or pid == os.getpid() or started == "?":
        return None
    return pid, started


def in_a_worker() -> bool:
    """A sweep's job in a process other than the sweep's own (a launcher's worker), or on another
    host: not in the sweep's process, and not outside a sweep."""
    parts = _owner_parts()
    return parts is not None and not (parts[0] == socket.gethostname() and parts[1] == os.getpid())


def _gone(pid: int, started: str) -> bool:
    return start_time(pid) != started


def follow_the_sweep() -> None:
    """In a sweep's job that runs outside the sweep's process, on the sweep's host: end this process
    when the sweep's process is gone (once per process; nothing elsewhere)."""
    owner = _owner()
    if owner is None or _FOLLOWING:
        return
    if _gone(*owner):  # gone before the job started
        os._exit(128 + signal.SIGTERM)
    thread = threading.Thread(target=_follow, args=owner, name="exporter-follows-its-sweep", daemon=True)
    _FOLLOWING.append(thread)
    thread.start()


def _worker_handler(signum: int, frame: Any) -> None:
    """A worker's SIGINT, SIGTERM and SIGHUP: the first stops the job running (raised in the main
    thread: its staging removed, its lock freed), later ones (Ctrl-C reaches it from the terminal
    and again from the sweep) are noted only; between jobs, the worker just runs no further job.
    Dying on the spot would make the launcher kill the other workers in the middle of their cleanup."""
    if _STOPPED:
        return
    _STOPPED.append(signum)
    if _RUNNING:
        raise_interrupted(signum, frame)


@contextmanager
def job_in_a_worker(records: Optional[str]) -> Iterator[None]:
    """Around a sweep's job in a launcher's worker: the handlers above (kept for the worker's
    life), the sweep followed (``follow_the_sweep``), and a marker in ``records`` while it runs.
    Once the sweep is stopping, a worker whose job has stopped (or that was idle) starts nothing
    and hands nothing back: it waits for the sweep's process to end, then ends with it."""
    if signal.getsignal(signal.SIGTERM) is not _worker_handler:
        for signum in STOP_SIGNALS:
            signal.signal(signum, _worker_handler)
    follow_the_sweep()
    stopping = Path(records) / STOPPING_FILE if records else None
    if _STOPPED or (stopping is not None and stopping.exists()):
        _wait_for_the_end(stopping)
        raise Interrupted(_STOPPED[0] if _STOPPED else signal.SIGTERM)
    marker = Path(records) / RUNNING_DIR / str(os.getpid()) if records else None
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    _RUNNING.append(1)
    try:
        yield
    finally:
        _RUNNING.pop()
        if marker is not None:
            marker.unlink(missing_ok=True)
        if _STOPPED:
            _wait_for_the_end(stopping)


def _wait_for_the_end(stopping: Optional[Path]) -> None:
    """The sweep is stopping (``stopping`` exists) and its launcher is joblib's: wait until
    ``_follow`` ends this process with it. Loky, handed a job's interruption, would kill the other
    workers in the middle of their cleanup; Ray and Submitit wait for each job, so there the job
    reports its interruption at once (blocking would keep the sweep waiting for it). A worker
    stopped on its own (the sweep runs on) returns too."""
    if (stopping is None or not stopping.exists() or not _FOLLOWING
            or os.environ.get(SWEEP_LAUNCHER_ENV) != "joblib"):
        return
    while True:
        time.sleep(1.0)


def _follow(pid: int, started: str) -> None:
    while not _gone(pid, started):
        time.sleep(_POLL_SECONDS)
    if _RUNNING:
        # The job stops as on SIGTERM (its handler raises in the main thread: staging removed, lock
        # freed), and ends the process itself; should it not within the grace period, it ends here.
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_SECONDS
        while _RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
    os._exit(128 + signal.SIGTERM)


def stop_jobs(signum: int, records: Optional[str], timeout: float = 30.0) -> None:
    """Stop the jobs a sweep's launcher runs in other processes: mark the sweep as stopping (no job
    starts from now on, ``job_in_a_worker``), pass ``signum`` on to each process that runs one (its
    marker in ``records``: a loky worker, a Submitit job, a Ray worker; each stops its job as a
    single run stops, staging removed, lock freed), and wait, ``timeout`` seconds at most, until
    none runs any more. Nothing else of the launcher's is signalled: its own daemons (Ray's) end
    with it."""
    if not records:
        return
    Path(records).mkdir(parents=True, exist_ok=True)
    (Path(records) / STOPPING_FILE).touch()
    running = Path(records) / RUNNING_DIR

    def busy() -> list[int]:
        try:
            return [int(name) for name in os.listdir(running) if name.isdigit() and start_time(int(name))]
        except OSError:
            return []

    for pid in busy():
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while busy() and time.monotonic() < deadline:
        time.sleep(0.05)
