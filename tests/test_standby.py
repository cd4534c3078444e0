"""A single run builds in a process forked as the command line starts (exporter.process.standby), which
imports torch while the command line composes the config: the same build as in one process, the
same messages and exit statuses, and no process left behind, whatever ends the run."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, wait_for
from test_isolation import JOBS, ended, job_started, sha256, start

from exporter.process.standby import forced, single_build, wanted

SMALL = "task_spec.input_schema.image_size=[3,32,32]"

MINE = """
import os
import signal

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

    calls = 0

    def forward(self, x):
        KilledWhileValidated.calls += 1
        if KilledWhileValidated.calls > 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)
"""


def processes_with(mark: str) -> list[int]:
    """Live processes whose environment holds ``mark`` (the run's, and the standby it forked)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in environ.read_bytes() and not ended(int(environ.parent.name)):
                found.append(int(environ.parent.name))
        except OSError:
            pass
    return found


def gone(mark: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while processes_with(mark):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_job_builds_in_the_standby_process_as_it_would_in_the_command_lines_own(tmp_path):
    (tmp_path / "jobs.py").write_text(JOBS)
    args = ("model._target_=jobs.noted", "format=[onnx,torchscript]", SMALL)
    proc = start(*args, "hydra.run.dir=standby", cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    alone = run_cli(*args, "hydra.run.dir=alone", cwd=tmp_path, env={"EXPORTER_STANDBY": "0"})
    assert alone.returncode == 0, alone.stdout + alone.stderr
    (builder, parent), (_, parent_alone) = [tuple(map(int, line.split()))
                                            for line in (tmp_path / "pids.txt").read_text().splitlines()]
    assert parent == proc.pid and builder != proc.pid  # built by the command line's child
    assert parent_alone == os.getpid()  # built by the command line's process, this test's child
    for name in ("model.onnx", "model.torchscript", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert sha256(tmp_path / "standby" / name) == sha256(tmp_path / "alone" / name), name
    assert out.splitlines()[-1] == f"build: {tmp_path / 'standby'} (ok)"
    assert err == alone.stderr == ""


def test_the_standby_process_does_not_import_the_command_line(tmp_path):
    """The command line's module (Hydra's app, the tool's config store) and the sweep's stay in the
    command line's process: the standby imports only what builds the job, before torch."""
    (tmp_path / "mine.py").write_text(MINE)
    for mode in ("1", "0"):
        done = run_cli("model._target_=mine.modules_noted", "format=pytorch", SMALL, f"hydra.run.dir=s{mode}",
                       cwd=tmp_path, env={"EXPORTER_STANDBY": mode})
        assert done.returncode == 0, done.stdout + done.stderr
    standby, alone = (tmp_path / "modules.txt").read_text().splitlines()
    assert standby == ""
    assert alone == "exporter.cli.app exporter.cli.sweep"  # one process: the command line's modules are there


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
    # Your own model: Hydra's instantiate builds it; not the shipped logging: Hydra sets it up.
    (("model=simple_cnn", "model._target_=mine.same_cnn", "format=pytorch"), {"torch", "hydra", "omegaconf"}),
    (("model=lm_stub", "hydra.verbose=true", "format=pytorch"), {"torch", "hydra", "omegaconf"}),
])
def test_the_job_imports_only_what_it_needs(tmp_path, args, job_imports):
    """Hydra, omegaconf and the tool's command line stay in the command line's process, off the
    build's critical path, unless the job needs them (a model of your own: Hydra's instantiate and
    its policy; a logging config other than the tool's own); onnxscript and the libraries of the
    formats the job does not build are not imported at all."""
    (tmp_path / "mine.py").write_text(MINE)
    done, by_pid = imports_by_process(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = [pid for pid, names in by_pid.items() if "torch" in names]
    (command_line,) = [pid for pid, names in by_pid.items() if "torch" not in names]
    assert by_pid[command_line] == {"hydra", "omegaconf"}
    assert by_pid[job] == job_imports


def test_the_tools_own_model_called_directly_builds_what_hydra_builds(tmp_path):
    """model=simple_cnn is called without Hydra in the job's process; the same class through your own
    _target_ goes through Hydra's instantiate: the same artifacts, byte for byte."""
    (tmp_path / "mine.py").write_text(MINE)
    for name, extra in (("own", ()), ("hydra", ("model._target_=mine.same_cnn",))):
        done = run_cli("model=simple_cnn", *extra, "format=[onnx,pytorch]", SMALL, f"hydra.run.dir={name}",
                       cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    for artifact in ("model.onnx", "model.pth"):
        assert sha256(tmp_path / "own" / artifact) == sha256(tmp_path / "hydra" / artifact), artifact


def test_a_logging_config_of_your_own_is_set_up_by_hydra_in_the_job(tmp_path):
    done = run_cli("model=simple_cnn", "format=pytorch", SMALL,
                   "hydra.job_logging.formatters.console.format='[job] %(message)s'", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("[job] pytorch ")  # the first line the job logs


def test_the_tools_own_model_fails_as_hydra_would_say_it(tmp_path):
    """The one line of a constructor's error is Hydra's wording, whichever process built it."""
    lines = []
    for mode in ("1", "0"):
        done = run_cli("model=simple_cnn", "+model.bogus=1", "format=pytorch", cwd=tmp_path,
                       env={"EXPORTER_STANDBY": mode})
        assert done.returncode == 2
        lines.append(done.stderr.strip())
    assert lines[0] == lines[1] == (
        "error: model: cannot build exporter.models.SimpleCNN: Error in call to target "
        "'exporter.models.simple_cnn.SimpleCNN': TypeError(\"SimpleCNN.__init__() got an unexpected keyword "
        "argument 'bogus'\")")


def test_a_run_that_builds_nothing_ends_at_once_with_its_standby_process(tmp_path, golden):
    """A config error and an up-to-date build are answered by the command line's process alone;
    the standby, still importing torch, is killed with it."""
    mark = f"STANDBY_TEST_{uuid.uuid4().hex}"
    r = run_cli("+validate.atoll=1", SMALL, cwd=tmp_path, env={mark: "1"})
    assert r.returncode == 2 and r.stderr.startswith("error: validate.atoll: unknown key"), r.stderr
    assert gone(mark)
    golden.copy("pytorch", tmp_path / "exports/simple_cnn/pytorch-none")  # where this run builds
    r = run_cli("format=pytorch", SMALL, cwd=tmp_path, env={mark: "1"})
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout + r.stderr
    assert gone(mark)


def in_group(pgid: int) -> list[str]:
    """Every process of a process group, a dead one not yet reaped included: 'pid state'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append(f"{stat.parent.name} {fields[0]}")
    return found


@pytest.mark.parametrize("when", ["a config error", "Ctrl-C while it loads"])
def test_the_command_line_reaps_its_standby_before_it_ends(tmp_path, when):
    """Not left dead to whichever process adopts it (some containers' first process never reaps)."""
    args = ("+validate.atoll=1",) if when == "a config error" else ("format=pytorch", SMALL)
    proc = start(*args, cwd=tmp_path, start_new_session=True)
    if when.startswith("Ctrl-C"):
        # The standby is forked (it imports torch while Hydra composes): now it has one to reap.
        wait_for(lambda: len(in_group(proc.pid)) > 1, proc)
        os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == (2 if when == "a config error" else 130)
    assert in_group(proc.pid) == []


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
def test_a_signal_stops_the_job_in_the_standby_process(tmp_path, how):
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
    assert err.strip().splitlines() == ["interrupted; the previous build is intact"], err
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


@pytest.mark.parametrize("standby", ["1", "0"])
def test_hydra_full_error_shows_the_users_constructors_traceback(tmp_path, standby):
    (tmp_path / "mine.py").write_text(MINE)
    r = run_cli("model._target_=mine.raising", "format=pytorch", SMALL, cwd=tmp_path,
                env={"HYDRA_FULL_ERROR": "1", "EXPORTER_STANDBY": standby})
    assert r.returncode == 1, r.stdout + r.stderr
    # The constructor's traceback, then Hydra's exception it caused; printed once.
    assert 'raise RuntimeError("disk on fire")' in r.stderr
    assert r.stderr.count("InstantiationException: Error in call to target 'mine.raising'") == 1
    r = run_cli("model._target_=mine.raising", "format=pytorch", SMALL, cwd=tmp_path, env={"EXPORTER_STANDBY": standby})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: model: cannot build mine.raising: Error in call to target 'mine.raising': " \
                               "RuntimeError('disk on fire')", r.stderr


@pytest.mark.parametrize("standby", ["1", "0"])
def test_hydra_full_error_shows_the_tools_own_models_traceback(tmp_path, standby):
    """The tool's own model is called without Hydra: its constructor's error still comes with its
    traceback and exit 1, as through Hydra's instantiate."""
    r = run_cli("+model.bogus=1", "format=pytorch", SMALL, cwd=tmp_path,
                env={"HYDRA_FULL_ERROR": "1", "EXPORTER_STANDBY": standby})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "TypeError: SimpleCNN.__init__() got an unexpected keyword argument 'bogus'" in r.stderr
    assert r.stderr.count("ConstructorError: Error in call to target 'exporter.models.simple_cnn.SimpleCNN'") == 1


def test_variables_set_for_the_job_reach_torch(tmp_path):
    """hydra.job.env_set sets variables torch reads as it is imported (OMP_NUM_THREADS): the standby
    imported torch without them, so the job is built in the command line's own process instead."""
    (tmp_path / "jobs.py").write_text(JOBS)
    (tmp_path / "mine.py").write_text(MINE)
    proc = start("model._target_=jobs.noted", "+hydra.job.env_set.OMP_NUM_THREADS=1", "format=pytorch", SMALL,
                 "hydra.run.dir=set", cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    builder, _parent = map(int, (tmp_path / "pids.txt").read_text().split())
    assert builder == proc.pid  # not its standby child
    done = run_cli("model._target_=mine.threads_noted", "+hydra.job.env_set.OMP_NUM_THREADS=1", "format=pytorch",
                   SMALL, "hydra.run.dir=threads", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "threads.txt").read_text() == "1"


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


@pytest.mark.parametrize("argv, expected", [
    (["exporter"], True),
    (["exporter", "format=onnx", "+adapter._target_=a.B", "~checkpoint"], True),
    (["exporter", "-m", "format=onnx,torchscript"], False),
    (["exporter", "--multirun", "seed=1,2"], False),
    (["exporter", "--cfg", "job"], False),
    (["exporter", "--help"], False),
    (["exporter", "card", "exports/x"], False),
    (["exporter", "verify", "exports/x"], False),
    (["exporter", "hydra.mode=MULTIRUN"], False),
    (["exporter", "+hydra.searchpath=[pkg://x]"], False),
])
def test_which_command_lines_get_a_standby_process(argv, expected):
    assert single_build(argv) is expected
    assert wanted(argv, environ={"EXPORTER_STANDBY": "0"}) is False


@pytest.mark.parametrize("setting, expected", [
    ("0", False), ("false", False), ("No", False), (" off ", False),
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("", None), ("auto", None),
])
def test_exporter_standby_in_its_usual_spellings(setting, expected):
    assert forced({"EXPORTER_STANDBY": setting}) is expected
    if expected is False:
        assert wanted(["exporter"], environ={"EXPORTER_STANDBY": setting}) is False


@pytest.fixture
def machine(monkeypatch):
    """A Linux machine where forking is safe, with the cores and last-minute load average a test sets."""
    from exporter.process import standby

    situation = {"cores": 2, "load": 0.5}
    monkeypatch.setattr(standby, "available", lambda: True)
    monkeypatch.setattr(standby.os, "sched_getaffinity", lambda _pid: set(range(situation["cores"])))
    monkeypatch.setattr(standby.os, "getloadavg", lambda: (situation["load"], 0.0, 0.0))
    return situation


@pytest.mark.parametrize("cores, load, setting, expected", [
    (2, 0.5, None, True),     # unset: a standby while the load is below the number of cores
    (2, 1.99, None, True),
    (2, 2.0, None, False),    # the load has reached the number of cores: no standby
    (2, 7.5, None, False),
    (8, 7.5, None, True),
    (2, 7.5, "auto", False),  # not a spelling of 0 or 1: by the load too
    (2, 7.5, "1", True),      # forced: whatever the load
    (2, 0.5, "0", False),     # never
    (1, 0.0, None, False),    # one core: never
    (1, 0.0, "1", False),
])
def test_without_exporter_standby_the_load_average_decides(machine, cores, load, setting, expected):
    machine.update(cores=cores, load=load)
    environ = {} if setting is None else {"EXPORTER_STANDBY": setting}
    assert wanted(["exporter", "format=pytorch"], environ=environ) is expected
    assert wanted(["exporter", "-m", "seed=0,1"], environ=environ) is False  # never for a sweep


LOAD_AVERAGE = """
import os

_load = float(os.environ["FAKE_LOAD_AVERAGE"])
os.getloadavg = lambda: (_load, _load, _load)  # the machine's last-minute load, as this test sets it
"""


def test_the_default_path_forks_a_standby_only_while_the_machine_has_cores_to_spare(tmp_path):
    """EXPORTER_STANDBY unset, as for a user: the command line's own process builds when the load
    average has reached the number of cores, its standby process when it has not."""
    import json
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: never a standby")
    (tmp_path / "jobs.py").write_text(JOBS)
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "sitecustomize.py").write_text(LOAD_AVERAGE)
    builders = {}
    for load in ("0", "1000"):
        env = {k: v for k, v in os.environ.items() if k not in ("EXPORTER_STANDBY", "HYDRA_FULL_ERROR")}
        env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path / "load"), env.get("PYTHONPATH")])),
                   FAKE_LOAD_AVERAGE=load)
        (tmp_path / "pids.txt").unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "model._target_=jobs.noted", "format=pytorch",
                                 SMALL, f"export_dir=load-{load}"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, out + err
        assert json.loads((tmp_path / f"load-{load}" / "metadata.json").read_text())["status"] == "ok"
        [(pid, parent)] = [tuple(map(int, line.split())) for line in (tmp_path / "pids.txt").read_text().splitlines()]
        builders[load] = "standby" if parent == proc.pid else "command line" if pid == proc.pid else (pid, parent)
    assert builders == {"0": "standby", "1000": "command line"}
