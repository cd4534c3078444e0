"""Under Hydra's basic launcher each job of a sweep runs in a process of its own (exporter.isolation):
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

from conftest import run_cli

SMALL = "task_spec.input_schema.image_size=[3,32,32]"

JOBS = '''
import os
import signal
import time
from pathlib import Path

from exporter.models import SimpleCNN


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
'''


def start(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


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
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli("-m", "model._target_=jobs.killed,exporter.models.SimpleCNN", "format=pytorch", SMALL, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sweep: 2 job(s), 1 ok, 1 failed" in r.stdout
    records = json.loads((tmp_path / "exports/sweep_summary.json").read_text())["records"]
    assert [job["status"] for job in records] == ["error", "ok"]
    assert "killed by SIGKILL" in records[0]["error"]
    assert (Path(records[1]["export_dir"]) / "model.pth").is_file()


@pytest.mark.parametrize("how", ["SIGTERM to the sweep", "Ctrl-C to the terminal's process group"])
def test_a_signal_to_a_sweep_stops_its_running_job_and_the_sweep(tmp_path, how):
    (tmp_path / "jobs.py").write_text(JOBS)
    sweep = start("-m", "model._target_=jobs.slow,exporter.models.SimpleCNN", "format=pytorch", SMALL, cwd=tmp_path,
                  start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("started-*")):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.01)
    job_pid = int(next(tmp_path.glob("started-*")).name.split("-")[1])
    assert job_pid != sweep.pid
    if how.startswith("SIGTERM"):
        sweep.send_signal(signal.SIGTERM)  # to the sweep's process alone, as `kill` or a scheduler sends it
    else:
        os.killpg(sweep.pid, signal.SIGINT)  # the job's process gets it from the terminal and from the sweep
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == (143 if how.startswith("SIGTERM") else 130), out + err
    assert err.count("interrupted") == 1 and err.strip().splitlines()[-1] == "interrupted; the previous build is intact"
    assert "Traceback" not in out + err
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)  # the job's process ended (and was reaped) before the sweep did
    assert not list(tmp_path.rglob("*.staging-*")) and not list(tmp_path.rglob("metadata.json"))
