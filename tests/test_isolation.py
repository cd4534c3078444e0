"""Under Hydra's basic launcher each job of a sweep runs in a process of its own (exporter.process.forked_jobs):
what one job leaves behind (library state, memory, a crash) never reaches the next, and a signal to
the sweep stops the running job the way it stops a single run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, wait_for

from exporter.console import INTERRUPTED_MESSAGE as INTERRUPTED

SMALL = "task_spec.input_schema.image_size=[3,32,32]"

JOBS = '''
import atexit
import hashlib
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from exporter.models import SimpleCNN

if os.environ.get("JOBS_THREAD_AT_IMPORT"):  # a user module that starts a thread when imported
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()


def noted(**kwargs):
    """SimpleCNN, noting which process built it and that process's parent."""
    with open("pids.txt", "a") as f:
        f.write(f"{os.getpid()} {os.getppid()}\\n")
    return SimpleCNN(**kwargs)


def killed(**kwargs):
    """What the kernel's out-of-memory killer does to a job."""
    os.kill(os.getpid(), signal.SIGKILL)


def slow(**kwargs):
    Path(f"started-{os.getpid()}").touch()
    time.sleep(120)


class _Stalls(SimpleCNN):
    def forward(self, pixel_values):
        # Inside the build's staging (the export traces it): note it, then take a long while.
        if list(Path("exports").rglob(f".*.staging-*-{os.getpid()}-*")):
            Path(f"started-{os.getpid()}").touch()
            time.sleep(120)
        return super().forward(pixel_values)


def stalls(**kwargs):
    return _Stalls(**kwargs)


def busy(**kwargs):
    """Seconds inside one C call, where no signal handler can run."""
    Path(f"started-{os.getpid()}").touch()
    hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 4_000_000)
    time.sleep(120)


def _later():
    time.sleep(0.5)
    Path(f"thread-{os.getpid()}").touch()


def leaves_work(**kwargs):
    """What a single run's exit takes care of: a thread still working, an exit handler, a temporary
    folder left to its finalizer, a daemon helper process."""
    threading.Thread(target=_later).start()
    atexit.register(lambda: Path(f"atexit-{os.getpid()}").touch())
    leaves_work.scratch = tempfile.TemporaryDirectory(dir=".", prefix="scratch-")
    helper = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
    helper.start()
    Path(f"helper-{helper.pid}").touch()
    return SimpleCNN(**kwargs)


def broken_data(**kwargs):
    return (1 / 0 for _ in range(1))


def segfault(**kwargs):
    """A crash in native code (no core file left)."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)


def exits(**kwargs):
    """os._exit in the user's code: the process ends there, reporting nothing."""
    os._exit(3)
'''


def ended(pid: int) -> bool:
    """No such process, or one that only waits to be reaped."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


def holds_back_sigint(pid: int) -> bool:
    """The process took a SIGINT (none is pending) and holds later ones back: its main thread blocks
    or ignores SIGINT (exporter.process.forked_jobs.supervise blocks it while its job cleans up)."""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    bit = 1 << (signal.SIGINT - 1)
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    return bool((int(status["SigBlk"], 16) | int(status["SigIgn"], 16)) & bit) and not pending & bit


def start(*args: str, cwd: Path, env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in (env or os.environ).items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def job_started(sweep: subprocess.Popen, folder: Path) -> int:
    """The pid of the job that just started (jobs.slow and jobs.busy leave started-<pid>)."""
    wait_for(lambda: list(folder.glob("started-*")), sweep)
    return int(next(folder.glob("started-*")).name.split("-")[1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_sweep_job_has_its_own_process_and_builds_the_bytes_a_single_run_builds(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    sweep = start("-m", "model._target_=jobs.noted", "seed=0,1", "format=torchscript", SMALL, cwd=tmp_path)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out + err
    pids = [tuple(map(int, line.split())) for line in (tmp_path / "pids.txt").read_text().splitlines()]
    assert len(pids) == 2 and pids[0][0] != pids[1][0] and {parent for _, parent in pids} == {sweep.pid}
    # In one shared process the second trace got numbered class names (docs/review.md): other bytes.
    single = run_cli("model._target_=jobs.noted", "seed=1", "format=torchscript", SMALL, "hydra.run.dir=single",
                     cwd=tmp_path)
    assert single.returncode == 0, single.stdout + single.stderr
    later = tmp_path / "exports/simple_cnn/torchscript-none@seed=1/model.torchscript"
    assert sha256(later) == sha256(tmp_path / "single/model.torchscript")


def test_a_job_whose_process_is_killed_fails_alone_and_the_sweep_goes_on(tmp_path):
    """Even after a job imported a user module that starts a thread: the sweep's process does not
    import it (a thread there would make forking unsafe, and the next job run unprotected)."""
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli("-m", "model._target_=jobs.noted,jobs.killed", "format=pytorch", SMALL, cwd=tmp_path,
                env={"JOBS_THREAD_AT_IMPORT": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sweep: 2 job(s), 1 ok, 1 failed" in r.stdout
    records = json.loads((tmp_path / "exports/sweep_summary.json").read_text())["records"]
    assert [job["status"] for job in records] == ["ok", "error"]
    assert "killed by SIGKILL" in records[1]["error"]
    assert (Path(records[0]["export_dir"]) / "model.pth").is_file()


@pytest.mark.parametrize("factory, code, message", [
    ("jobs.segfault", 139, "error: the job's process was killed by SIGSEGV"),
    ("jobs.exits", 2, "error: the job ended with exit status 3 before it reported"),
])
def test_a_job_process_that_crashes_or_exits_without_reporting_fails_the_run_with_its_reason(tmp_path, factory,
                                                                                              code, message):
    """docs/errors.md: killed by signal N on its own, exit 128 + N (139: a segfault); a process that
    ends without reporting, `the job ended with exit status N before it reported`; nothing published."""
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli(f"model._target_={factory}", "format=pytorch", SMALL, cwd=tmp_path)
    assert r.returncode == code, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == message and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.rglob("metadata.json")) and not list(tmp_path.rglob("*.staging-*"))


def test_sweep_jobs_that_crash_or_exit_without_reporting_fail_alone(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli("-m", "model._target_=jobs.segfault,jobs.exits,exporter.models.SimpleCNN", "format=pytorch", SMALL,
                cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sweep: 3 job(s), 1 ok, 2 failed" in r.stdout
    records = json.loads((tmp_path / "exports/sweep_summary.json").read_text())["records"]
    assert [(job["status"], job.get("error")) for job in records] == [
        ("error", "the job's process was killed by SIGSEGV"),
        ("error", "the job ended with exit status 3 before it reported"),
        ("ok", None)]
    assert (Path(records[2]["export_dir"]) / "model.pth").is_file()


def test_a_signal_to_the_jobs_own_process_stops_the_sweep(tmp_path):
    """docs/errors.md: SIGTERM to a job's process (not the sweep's) stops the running job, which
    cleans up, and the sweep with it: no later job runs."""
    (tmp_path / "jobs.py").write_text(JOBS)
    sweep = start("-m", "model._target_=jobs.slow,jobs.noted", "format=pytorch", SMALL, cwd=tmp_path)
    job_pid = job_started(sweep, tmp_path)
    assert job_pid != sweep.pid
    os.kill(job_pid, signal.SIGTERM)
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 143, out + err
    assert err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in out + err
    assert ended(job_pid)
    assert not (tmp_path / "pids.txt").exists()  # the second job never started
    assert not list(tmp_path.rglob("*.staging-*")) and not list(tmp_path.rglob("metadata.json"))


def test_a_job_ends_as_a_single_run_ends(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli("-m", "model._target_=jobs.leaves_work", "seed=0,1", "format=pytorch", SMALL, cwd=tmp_path,
                timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for what in ("thread", "atexit"):  # once per job, each from the job's own process
        assert len(list(tmp_path.glob(f"{what}-*"))) == 2, what
    assert not list(tmp_path.glob("scratch-*"))
    helpers = [int(p.name.split("-")[1]) for p in tmp_path.glob("helper-*")]
    assert len(helpers) == 2 and all(ended(pid) for pid in helpers)


def test_hydra_full_error_shows_the_traceback_of_a_sweep_job(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli("-m", "seed=0,1", "format=pytorch", "quantization=dynamic", "calibration=dataset",
                "calibration.dataset._target_=jobs.broken_data", SMALL, cwd=tmp_path,
                env={"HYDRA_FULL_ERROR": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("Traceback") == 2 and "ZeroDivisionError" in r.stderr
    assert "sweep: 2 job(s), 0 ok, 2 failed" in r.stdout


@pytest.mark.parametrize("how", ["SIGTERM to the sweep", "Ctrl-C to the terminal's process group",
                                 "Ctrl-C twice during a long C call"])
def test_a_signal_to_a_sweep_stops_its_running_job_and_the_sweep(tmp_path, how):
    (tmp_path / "jobs.py").write_text(JOBS)
    factory = "jobs.busy" if "twice" in how else "jobs.slow"
    sweep = start("-m", f"model._target_={factory},exporter.models.SimpleCNN", "format=pytorch", SMALL, cwd=tmp_path,
                  start_new_session=True)
    job_pid = job_started(sweep, tmp_path)
    assert job_pid != sweep.pid
    if how.startswith("SIGTERM"):
        sweep.send_signal(signal.SIGTERM)  # to the sweep's process alone, as `kill` or a scheduler sends it
    else:
        os.killpg(sweep.pid, signal.SIGINT)  # the job's process gets it from the terminal and from the sweep
        if "twice" in how:
            # Once the sweep has taken the first Ctrl-C it holds SIGINT back while its job cleans up.
            wait_for(lambda: holds_back_sigint(sweep.pid), sweep)
            os.killpg(sweep.pid, signal.SIGINT)  # the sweep still waits for its job
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == (143 if how.startswith("SIGTERM") else 130), out + err
    assert err.count("interrupted") == 1 and err.strip().splitlines()[-1] == INTERRUPTED
    assert "Traceback" not in out + err
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)  # the job's process ended (and was reaped) before the sweep did
    assert not list(tmp_path.rglob("*.staging-*")) and not list(tmp_path.rglob("metadata.json"))


def test_a_job_stops_when_the_sweeps_process_is_killed(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    sweep = start("-m", "model._target_=jobs.slow,exporter.models.SimpleCNN", "format=pytorch", SMALL, cwd=tmp_path)
    job_pid = job_started(sweep, tmp_path)
    sweep.kill()  # SIGKILL: no handler runs in the sweep's process
    sweep.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while not ended(job_pid):  # the job got SIGTERM when its parent died, and stops as on SIGTERM
        assert time.monotonic() < deadline, "the job's process outlived the sweep"
        time.sleep(0.05)
    assert not list(tmp_path.rglob("*.staging-*")) and not list(tmp_path.rglob("metadata.json"))


def test_a_helper_process_of_the_users_code_ends_quietly_with_a_single_run(tmp_path):
    """It is forked with Python's own signal handlers, not the tool's: ended at exit by
    multiprocessing's SIGTERM, it prints no Interrupted traceback."""
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli("model._target_=jobs.leaves_work", "format=pytorch", SMALL, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "Interrupted" not in r.stderr, r.stderr
    helpers = list(tmp_path.glob("helper-*"))
    assert len(helpers) == 1, helpers  # the job did start its helper process
    assert all(ended(int(p.name.split("-")[1])) for p in helpers)


def test_a_sweep_interrupted_after_a_job_published_keeps_its_multirun_yaml(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    sweep = start("-m", "model._target_=exporter.models.SimpleCNN,jobs.slow", "format=pytorch", SMALL, cwd=tmp_path)
    job_started(sweep, tmp_path)
    sweep.send_signal(signal.SIGTERM)
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 143, out + err
    assert len(list(tmp_path.rglob("metadata.json"))) == 1  # the first job's build
    assert (tmp_path / "exports/multirun.yaml").is_file()  # which says how it was made


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2:].split()[1] == str(pid):
                found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        found += children
        todo += children
    return found


# The local launchers whose jobs run in processes of their own; each stopped by the sweep's signal.
LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
    "ray": ["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false"],
}
LAUNCHER_MODULES = {"joblib": "hydra_plugins.hydra_joblib_launcher", "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                    "ray": "hydra_plugins.hydra_ray_launcher"}


@pytest.mark.parametrize("launcher, signum", [("joblib", signal.SIGKILL), ("joblib", signal.SIGTERM),
                                              ("submitit_local", signal.SIGKILL), ("submitit_local", signal.SIGINT),
                                              ("ray", signal.SIGTERM)])
def test_a_sweep_stopped_by_any_signal_leaves_no_process_and_no_folder(tmp_path, launcher, signum):
    """Loky's workers used to build on under PID 1 after a SIGKILL, holding the caller's pipes, and a
    SIGTERM left their staging folders: now each launcher's job stops as a single run does, and its
    process ends. (Ray runs where its launcher is installed: the ``ray`` extra.)"""
    pytest.importorskip(LAUNCHER_MODULES[launcher])
    if launcher == "ray":
        pytest.importorskip("ray")
    (tmp_path / "jobs.py").write_text(JOBS)
    sweep = start("-m", *LAUNCHERS[launcher], "model._target_=jobs.stalls", "seed=0,1",
                  "format=onnx", SMALL, cwd=tmp_path, start_new_session=True,
                  env={**os.environ, "PYTHONPATH": str(tmp_path)} if launcher == "ray" else None)
    wait_for(lambda: len(list(tmp_path.glob("started-*"))) == 2, sweep, timeout=180)
    processes = _descendants(sweep.pid)  # the workers (and their resource trackers, Ray's own processes)
    assert len(processes) >= 2 and list(tmp_path.rglob(".*.staging-*"))
    if signum == signal.SIGINT:  # Ctrl-C, pressed three times: every process of the terminal's group gets each
        for _ in range(3):
            os.killpg(sweep.pid, signum)
            time.sleep(0.02)
    else:
        sweep.send_signal(signum)
    out, err = sweep.communicate(timeout=90)  # the pipes close: no worker holds them any more
    deadline = time.monotonic() + 30
    while not all(ended(pid) for pid in processes):
        assert time.monotonic() < deadline, [(pid, Path(f"/proc/{pid}/cmdline").read_text()[:80])
                                             for pid in processes if not ended(pid)]
        time.sleep(0.05)
    assert not list(tmp_path.rglob(".*.staging-*")) and not list(tmp_path.rglob("metadata.json"))
    if signum != signal.SIGKILL:
        own = [line for line in err.strip().splitlines() if " -- " not in line]  # Ray logs its start there
        assert sweep.returncode == 128 + signum and own == [INTERRUPTED], err
        assert "Traceback" not in err and not list(tmp_path.glob("exports/.sweep-*"))
    else:
        # Its records stay until the next sweep in the folder, which removes them: their process is gone.
        assert len(list(tmp_path.glob("exports/.sweep-*"))) == 1
        r = run_cli("-m", "format=pytorch", SMALL, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not list(tmp_path.glob("exports/.sweep-*"))


def test_sighup_stops_a_run_as_sigterm_does_exit_129(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    run = start("model._target_=jobs.stalls", "format=onnx", SMALL, "export_dir=exports/b", cwd=tmp_path)
    wait_for(lambda: list(tmp_path.glob("started-*")), run)
    run.send_signal(signal.SIGHUP)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 129 and err.strip().splitlines() == [INTERRUPTED], err
    assert not list(tmp_path.rglob(".*.staging-*")) and not (tmp_path / "exports/b").exists()


FLEET_JOBS = '''
from exporter.models import SimpleCNN


def good(**kwargs):
    return SimpleCNN(**kwargs)


def bad(**kwargs):
    raise RuntimeError("this model cannot be built")
'''


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "ray"])
def test_a_sweep_with_a_failed_job_on_each_launcher_loses_no_job_and_leaves_no_process(tmp_path, launcher):
    """Issue #26: a sweep under joblib, submitit_local and a local Ray (started by the sweep), one of
    its jobs failing: exit 1, both summary files, every job accounted for, the good build published,
    no process of the sweep left. A job whose model cannot be built used to end the whole sweep under
    these launchers (exit 2): their workers inherited the HYDRA_FULL_ERROR=1 the command line sets for
    itself. (Ray runs where its launcher is installed: the ``ray`` extra.)"""
    pytest.importorskip(LAUNCHER_MODULES[launcher])
    if launcher == "ray":
        pytest.importorskip("ray")
    (tmp_path / "fleetjobs.py").write_text(FLEET_JOBS)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    with open(tmp_path / "out.txt", "w") as out_file, open(tmp_path / "err.txt", "w") as err_file:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "exporter", "-m", *LAUNCHERS[launcher], "model._target_=fleetjobs.good,fleetjobs.bad",
             "seed=0,1", "format=pytorch", "task_spec.input_schema.image_size=[3,16,16]"],
            cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)}, stdout=out_file, stderr=err_file,
            start_new_session=True)
        processes: set[int] = set()
        deadline = time.monotonic() + 240
        while sweep.poll() is None:  # every process the sweep starts, noted while it runs
            assert time.monotonic() < deadline, "the sweep did not end"
            processes.update(_descendants(sweep.pid))
            time.sleep(0.1)
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert sweep.returncode == 1, out + err
    summary = json.loads((tmp_path / "exports" / "sweep_summary.json").read_text())
    assert (tmp_path / "exports" / "sweep_summary.md").is_file()
    assert summary["jobs"] == 4 and summary["ok"] == 2 and summary["failed"] == 2 and summary["without_record"] == 0
    failed = [job for job in summary["records"] if job["status"] != "ok"]
    assert all("this model cannot be built" in job["error"] for job in failed), failed
    assert len(list(tmp_path.rglob("metadata.json"))) == 2 and not list(tmp_path.rglob(".*.staging-*"))
    assert "error: 2 of 4 sweep job(s) failed" in err
    deadline = time.monotonic() + 30
    while not all(ended(pid) for pid in processes):
        assert time.monotonic() < deadline, [(pid, Path(f"/proc/{pid}/cmdline").read_text()[:80])
                                             for pid in processes if not ended(pid)]
        time.sleep(0.1)


CRASHING_JOBS = '''
import os
import signal

from exporter.models import SimpleCNN


def dies(**kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would


def good(**kwargs):
    return SimpleCNN(**kwargs)
'''


@pytest.mark.slow
def test_a_worker_killed_under_joblib_still_leaves_the_summary_of_the_jobs_that_ran(tmp_path):
    """joblib ends a sweep whose worker dies (TerminatedWorkerError): the jobs that ran are
    summarized, the rest counted as without a record, and one line names the launcher's error."""
    pytest.importorskip(LAUNCHER_MODULES["joblib"])
    (tmp_path / "crashing.py").write_text(CRASHING_JOBS)
    r = run_cli("-m", *LAUNCHERS["joblib"], "model._target_=crashing.good,crashing.dies", "seed=0,1",
                "format=pytorch", "task_spec.input_schema.image_size=[3,16,16]", cwd=tmp_path,
                env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 2, r.stdout + r.stderr
    summary = json.loads((tmp_path / "exports" / "sweep_summary.json").read_text())
    assert summary["jobs"] + summary["without_record"] == 4 and summary["without_record"] >= 1, summary
    assert r.stderr.strip().splitlines()[-1].startswith("error: the launcher ended the sweep: TerminatedWorkerError")
    assert "Under hydra/launcher=joblib a job whose process is killed" in r.stderr
    assert not list(tmp_path.glob("exports/.sweep-*")) and not list(tmp_path.rglob(".*.staging-*"))
