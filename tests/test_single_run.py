"""A single run builds in a process forked for it (exporter.process.dispatch), as each job of a sweep
does: the command line reports a job process that was killed and removes what it left, passes
signals on, and its own death stops the job. The tool's own model called directly builds what
Hydra's instantiate builds, errors come as Hydra would word them, ``HYDRA_FULL_ERROR=1`` shows the
traceback once, and the job imports only what it needs."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from test_isolation import JOBS, ended, job_started, sha256, start

SMALL = "task_spec.input_schema.image_size=[3,32,32]"


MINE = """
import os
import signal
from pathlib import Path

from exporter.models import SimpleCNN


def raising(**kwargs):
    raise RuntimeError("disk on fire")


def same_cnn(**kwargs):
    return SimpleCNN(**kwargs)


def threads_noted(**kwargs):
    import torch

    with open("threads.txt", "w") as f:
        f.write(str(torch.get_num_threads()))
    return SimpleCNN(**kwargs)


def modules_noted(**kwargs):
    \"\"\"SimpleCNN, noting which of the command line's own modules the building process imported.\"\"\"
    import sys

    with open("modules.txt", "a") as f:
        f.write(" ".join(m for m in ("exporter.cli.app", "exporter.cli.sweep", "exporter.cli.card") if m in sys.modules) + "\\n")
    return SimpleCNN(**kwargs)


class KilledWhileValidated(SimpleCNN):
    \"\"\"Killed as the artifact is checked against it, with the build staged.\"\"\"

    def forward(self, x):
        if any(Path(".").rglob(".*.staging-*")):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)
"""


# Notes which process imports what, whatever imports it (a statement, importlib, pickle).
NOTING = """
import os
import sys


class Noted:
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "hydra", "omegaconf", "onnx", "onnxruntime", "onnxscript", "transformers"):
            with open(os.environ["IMPORTS_NOTED"], "a") as f:
                f.write(f"{os.getpid()} {name}\\n")
        return None


sys.meta_path.insert(0, Noted())
"""


def imports_by_process(tmp_path: Path, *args: str) -> tuple[Any, dict[int, set[str]]]:
    (tmp_path / "noting").mkdir(exist_ok=True)
    (tmp_path / "noting" / "sitecustomize.py").write_text(NOTING)
    noted = tmp_path / f"imports-{uuid.uuid4().hex}.txt"
    done = run_cli(*args, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "noting"), "IMPORTS_NOTED": str(noted)})
    by_pid: dict[int, set[str]] = {}
    for line in noted.read_text().splitlines():
        pid, name = line.split()
        by_pid.setdefault(int(pid), set()).add(name)
    return done, by_pid


@pytest.mark.parametrize("args, job_imports", [
    # The tool's own model, plain arguments: called directly; each backend imports what it needs.
    (("model=lm_stub", "format=pytorch"), {"torch"}),
    (("model=lm_stub", "format=torchscript"), {"torch"}),
    (("model=lm_stub", "format=onnx"), {"torch", "onnx", "onnxruntime"}),  # legacy: no onnxscript
    # Your own model: Hydra's instantiate builds it.
    (("model=simple_cnn", "model._target_=mine.same_cnn", "format=pytorch"), {"torch"}),
])
def test_the_job_imports_only_what_it_needs(tmp_path, args, job_imports):
    """The command line imports Hydra and omegaconf, and torch before it forks the job; the job's
    process imports the libraries of the formats it builds: not onnxscript (the legacy exporter),
    nor the libraries of other formats."""
    (tmp_path / "mine.py").write_text(MINE)
    done, by_pid = imports_by_process(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    command_line = next(iter(by_pid))  # the first to import anything noted: Hydra, as the command starts
    assert by_pid.pop(command_line) == {"hydra", "omegaconf", "torch"}
    assert set().union(*by_pid.values()) == job_imports - {"torch"}


def test_the_tools_own_model_called_directly_builds_what_hydra_builds(tmp_path, golden):
    """model=simple_cnn is called without Hydra in the job's process; the same class through your own
    _target_ goes through Hydra's instantiate: the same artifacts, byte for byte."""
    (tmp_path / "mine.py").write_text(MINE)
    own = golden("onnx+pytorch")  # the shipped model=simple_cnn, format=[onnx,pytorch], SMALL (conftest)
    done = run_cli("model=simple_cnn", "model._target_=mine.same_cnn", "format=[onnx,pytorch]", SMALL,
                   "hydra.run.dir=hydra", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for artifact in ("model.onnx", "model.pth"):
        assert sha256(own / artifact) == sha256(tmp_path / "hydra" / artifact), artifact


def test_a_logging_config_of_your_own_is_set_up_by_hydra_in_the_job(tmp_path):
    done = run_cli("model=simple_cnn", "format=pytorch", SMALL,
                   "hydra.job_logging.formatters.console.format='[job] %(message)s'", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("[job] pytorch ")  # the first line the job logs


def test_the_tools_own_model_fails_as_hydra_would_say_it(tmp_path):
    """The one line of a constructor's error is Hydra's wording, whether the tool called its own model
    directly or Hydra's instantiate built a model of yours."""
    (tmp_path / "mine.py").write_text(MINE)
    lines = []
    for target in ((), ("model._target_=mine.same_cnn",)):
        done = run_cli("model=simple_cnn", *target, "+model.bogus=1", "format=pytorch", cwd=tmp_path)
        assert done.returncode == 2
        lines.append(done.stderr.strip())
    error = "TypeError(\"SimpleCNN.__init__() got an unexpected keyword argument 'bogus'\")"
    assert lines == [
        "error: model: cannot build exporter.models.SimpleCNN: Error in call to target "
        f"'exporter.models.simple_cnn.SimpleCNN': {error}",
        f"error: model: cannot build mine.same_cnn: Error in call to target 'mine.same_cnn': {error}"]


def test_hydra_full_error_shows_the_users_constructors_traceback(tmp_path):
    (tmp_path / "mine.py").write_text(MINE)
    r = run_cli("model._target_=mine.raising", "format=pytorch", SMALL, cwd=tmp_path,
                env={"HYDRA_FULL_ERROR": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    # The constructor's traceback, then Hydra's exception it caused; printed once.
    assert 'raise RuntimeError("disk on fire")' in r.stderr
    assert r.stderr.count("InstantiationException: Error in call to target 'mine.raising'") == 1
    r = run_cli("model._target_=mine.raising", "format=pytorch", SMALL, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: model: cannot build mine.raising: Error in call to target 'mine.raising': " \
                               "RuntimeError('disk on fire')", r.stderr


def test_hydra_full_error_shows_the_tools_own_models_traceback(tmp_path):
    """The tool's own model is called without Hydra: its constructor's error still comes with its
    traceback and exit 1, as through Hydra's instantiate."""
    r = run_cli("+model.bogus=1", "format=pytorch", SMALL, cwd=tmp_path,
                env={"HYDRA_FULL_ERROR": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "TypeError: SimpleCNN.__init__() got an unexpected keyword argument 'bogus'" in r.stderr
    assert r.stderr.count("ConstructorError: Error in call to target 'exporter.models.simple_cnn.SimpleCNN'") == 1


def test_variables_set_for_the_job_reach_torch(tmp_path):
    """hydra.job.env_set sets variables torch reads as it is imported (OMP_NUM_THREADS)."""
    (tmp_path / "mine.py").write_text(MINE)
    assert os.environ.get("OMP_NUM_THREADS") == "1"  # the suite's own (conftest.py): the job's must win
    done = run_cli("model._target_=mine.threads_noted", "+hydra.job.env_set.OMP_NUM_THREADS=2", "format=pytorch",
                   SMALL, "hydra.run.dir=threads", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "threads.txt").read_text() == "2"


def test_hydra_full_error_shows_the_jobs_traceback_once(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    args = ("format=pytorch", "quantization=dynamic", "calibration=dataset",
            "calibration.dataset._target_=jobs.broken_data", SMALL)
    r = run_cli(*args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("Traceback") == 1 and "ZeroDivisionError" in r.stderr
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "ZeroDivisionError" in r.stderr


def test_a_job_process_that_is_killed_fails_the_run_with_its_reason(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    r = run_cli("model._target_=jobs.killed", "format=pytorch", SMALL, cwd=tmp_path)
    assert r.returncode == 128 + signal.SIGKILL, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("error: the job's process was killed by SIGKILL (the "
                                                 "out-of-memory killer sends it, too)")
    assert not list(tmp_path.rglob("metadata.json")) and not list(tmp_path.rglob("*.staging-*"))



def test_the_command_line_removes_what_its_killed_job_left(tmp_path):
    """Killed with its build staged, the job's process cannot clean up; the command line's can."""
    (tmp_path / "mine.py").write_text(MINE)
    r = run_cli("model._target_=mine.KilledWhileValidated", "format=pytorch", SMALL, cwd=tmp_path)
    assert r.returncode == 137, r.stdout + r.stderr
    assert "left by a run that did not finish" in r.stdout  # there was a staged build, now removed
    assert r.stderr.strip().splitlines()[-1].startswith("error: the job's process was killed by SIGKILL")
    assert not list(tmp_path.rglob("*.staging-*")) and not list(tmp_path.rglob("metadata.json"))



@pytest.mark.parametrize("how", ["SIGTERM to the command line", "Ctrl-C to the terminal's process group"])
def test_a_signal_stops_the_job_in_its_own_process(tmp_path, how):
    (tmp_path / "jobs.py").write_text(JOBS)
    proc = start("model._target_=jobs.slow", "format=pytorch", SMALL, cwd=tmp_path, start_new_session=True)
    job_pid = job_started(proc, tmp_path)
    assert job_pid != proc.pid
    if how.startswith("SIGTERM"):
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # the job's process gets it too, and again from its parent
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if how.startswith("SIGTERM") else 130), out + err
    assert err.strip().splitlines() == ["interrupted; nothing was published (the folder is as it was before this run)"], err
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)  # ended, and reaped by the command line's process before it ended
    assert not list(tmp_path.rglob("*.staging-*")) and not list(tmp_path.rglob("metadata.json"))



def test_the_job_stops_when_the_command_lines_process_is_killed(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    proc = start("model._target_=jobs.slow", "format=pytorch", SMALL, cwd=tmp_path)
    job_pid = job_started(proc, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while not ended(job_pid):  # SIGTERM when its parent died: it stops as a run stops on SIGTERM
        assert time.monotonic() < deadline, "the job's process outlived the command line"
        time.sleep(0.05)
    assert not list(tmp_path.rglob("*.staging-*")) and not list(tmp_path.rglob("metadata.json"))

