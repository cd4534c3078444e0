"""A build folder is one transaction: killed, interrupted, raced, refused or out of disk, it always
holds one complete build that its records describe. Real processes and real signals throughout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, wait_for

from exporter.console import INTERRUPTED_MESSAGE as INTERRUPTED

LM = ["model=lm_stub", "task_spec.input_schema.max_seq_len=16", "quantization.latency_runs=2",
      "calibration.num_samples=4", "calibration.heldout_samples=2"]
LM_TWO = [*LM, "format=[onnx,torchscript]", "quantization=dynamic"]
SMALL = "task_spec.input_schema.image_size=[3,32,32]"
RECORDS = {"metadata.json", "config.yaml", "export.log", ".hydra"}


def assert_consistent(folder: Path) -> dict:
    """Every file in the folder is a record or an artifact that metadata.json lists with the same
    sha256, and every listed artifact is there: the promise of a build folder."""
    from exporter.records.read import files_problems, read_build

    build = read_build(folder)
    assert files_problems(build) == [], files_problems(build)
    listed = {Path(c.file).parts[0] for c in build.files if c.file and c.state not in ("not recorded", "unlisted")}
    assert {p.name for p in folder.iterdir()} == RECORDS | listed
    return build.metadata


def no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if ".staging-" in p.name]


def spawn(*args: str, cwd: Path) -> subprocess.Popen:
    """In a process group of its own, as a shell starts a job: pause() and resume() reach its build."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def pause(proc: subprocess.Popen) -> None:
    """What Ctrl-Z does: stop the run's whole process group (its build runs in a child process)."""
    os.killpg(proc.pid, signal.SIGSTOP)


def resume(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGCONT)


def builder_of(proc: subprocess.Popen) -> set[int]:
    """The pids that may hold a run's lock: its own, or a process it forked for its build."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return {proc.pid, *(int(pid) for pid in children.read_text().split())} if children.exists() else {proc.pid}


@pytest.fixture(scope="module")
def lm_build(tmp_path_factory) -> Path:
    """A good two-format dynamic-quantized build of the shipped LM, made once; tests copy it."""
    root = tmp_path_factory.mktemp("lm")
    r = run_cli(*LM_TWO, "hydra.run.dir=b", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "b"


@pytest.fixture
def cnn_build(golden) -> Path:
    """A good build of the shipped CNN, made once per session (conftest.golden); tests copy it."""
    return golden("onnx")


def copy_build(source: Path, root: Path) -> Path:
    shutil.copytree(source, root / "b", symlinks=True)
    return root / "b"


def staged_artifact(root: Path, name: str = "model.onnx"):
    return lambda: any(root.glob(f".b.staging-*/build/{name}"))


# SIGINT takes the handler SIGTERM takes (exporter.interrupts); the Ctrl-C tests of test_isolation and
# test_cli cover its own path.
@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGKILL, None, marks=pytest.mark.slow),
                                       (signal.SIGTERM, 143)],
                         ids=["SIGKILL", "SIGTERM"])
def test_a_rebuild_killed_after_its_first_artifact_leaves_the_previous_build_whole(tmp_path, lm_build, sig, code):
    folder = copy_build(lm_build, tmp_path)
    before = assert_consistent(folder)
    proc = spawn(*LM_TWO, "hydra.run.dir=b", "seed=1", cwd=tmp_path)
    # The moment the old tool published model.onnx into the folder: now it only reaches the staging.
    wait_for(staged_artifact(tmp_path), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    after = assert_consistent(folder)
    assert after["seed"] == 0 and after["artifacts"] == before["artifacts"]
    if code is not None:
        assert proc.returncode == code
        assert err.strip().splitlines()[-1] == INTERRUPTED
        assert "Traceback" not in out + err
        no_leftovers(tmp_path)
    # The next run removes what a killed one left, and builds.
    r = run_cli(*LM_TWO, "hydra.run.dir=b", "seed=1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert assert_consistent(folder)["seed"] == 1
    no_leftovers(tmp_path)


def test_a_kill_right_after_the_publish_leaves_the_new_build_whole(tmp_path, lm_build):
    folder = copy_build(lm_build, tmp_path)
    inode = folder.stat().st_ino
    proc = spawn(*LM_TWO, "hydra.run.dir=b", "seed=1", cwd=tmp_path)
    wait_for(lambda: folder.stat().st_ino != inode, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert assert_consistent(folder)["seed"] == 1


def test_a_rebuild_with_fewer_formats_leaves_only_its_own_files(tmp_path, cli, golden):
    golden.copy("onnx+torchscript+pytorch", tmp_path / "b")
    r = cli(SMALL, "format=torchscript", "hydra.run.dir=b")
    assert r.returncode == 0, r.stdout + r.stderr
    md = assert_consistent(tmp_path / "b")
    assert md["formats"] == ["torchscript"]
    assert not (tmp_path / "b/model.onnx").exists() and not (tmp_path / "b/model.pth").exists()


@pytest.mark.parametrize("configs", [("format=onnx", "format=onnx"), ("format=onnx", "format=torchscript")],
                         ids=["same", "different"])
def test_two_builds_into_one_folder_at_once_end_consistent(tmp_path, configs):
    procs = [spawn(SMALL, c, "hydra.run.dir=b", cwd=tmp_path) for c in configs]
    results = [p.communicate(timeout=240) + (p.returncode,) for p in procs]
    assert [code for _, _, code in results] == [0, 0], results
    md = assert_consistent(tmp_path / "b")
    assert md["formats"] in (["onnx"], ["torchscript"])
    no_leftovers(tmp_path)


def test_wait_false_refuses_while_another_build_holds_the_folder(tmp_path, lm_build):
    copy_build(lm_build, tmp_path)
    first = spawn(*LM_TWO, "hydra.run.dir=b", "seed=1", cwd=tmp_path)
    wait_for(staged_artifact(tmp_path), first)
    pause(first)  # holds the lock, mid-build, for as long as the test needs
    try:
        builders = builder_of(first)
        r = run_cli(*LM_TWO, "hydra.run.dir=b", "wait=false", "force=true", cwd=tmp_path)
    finally:
        resume(first)
    first.communicate(timeout=240)
    assert first.returncode == 0
    assert r.returncode == 75, r.stdout + r.stderr
    assert int(r.stderr.split("is being built by pid ")[1].split()[0]) in builders and "wait=false" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert assert_consistent(tmp_path / "b")["seed"] == 1


@pytest.mark.slow
def test_a_second_build_waits_and_says_for_whom(tmp_path, lm_build):
    copy_build(lm_build, tmp_path)
    first = spawn(*LM_TWO, "hydra.run.dir=b", "seed=1", cwd=tmp_path)
    wait_for(staged_artifact(tmp_path), first)
    pause(first)
    try:
        builders = builder_of(first)
        second = spawn(*LM_TWO, "hydra.run.dir=b", "seed=2", cwd=tmp_path)
        # Lines before the lock (a calibration warning), then the one saying whom it waits for.
        waiting = next(line for line in iter(second.stdout.readline, "") if line.startswith("waiting for"))
    finally:
        resume(first)
    first.communicate(timeout=240)
    rest, err = second.communicate(timeout=240)
    assert first.returncode == 0 and second.returncode == 0, err
    assert int(waiting.split("waiting for pid ")[1].split()[0]) in builders, waiting
    assert assert_consistent(tmp_path / "b")["seed"] == 2


def test_leftovers_of_dead_runs_are_removed_by_the_next_run(tmp_path, cli):
    for name in (".b.staging-host-99999-abc", ".other.staging-host-99998-xyz"):
        (tmp_path / name / "build").mkdir(parents=True)
        (tmp_path / name / "build" / "model.onnx").write_bytes(b"torn")
    assert cli(SMALL, "hydra.run.dir=b").returncode == 0
    no_leftovers(tmp_path)
    assert_consistent(tmp_path / "b")


@pytest.mark.parametrize("override, key", [
    ("validate.atol=-1", "validate.atol"),
    ("validate.rtol=-5", "validate.rtol"),
    ("validate.min_agreement=2", "validate.min_agreement"),
    ("validate.second_batch_size=-1", "validate.second_batch_size"),
    ("+validate.atoll=1e-9", "validate.atoll: unknown key"),
])
def test_impossible_settings_never_touch_a_good_folder(tmp_path, cli, cnn_build, override, key):
    copy_build(cnn_build, tmp_path)
    snapshot = {p.relative_to(tmp_path / "b"): (p.stat().st_mtime_ns, p.stat().st_ino)
                for p in (tmp_path / "b").rglob("*")}
    r = cli(SMALL, "hydra.run.dir=b", override)
    assert r.returncode == 2
    assert key in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    # not one file rewritten, Hydra's .hydra/ included
    assert {p.relative_to(tmp_path / "b"): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in (tmp_path / "b").rglob("*")} == snapshot


def test_a_failed_first_run_leaves_no_empty_folder(tmp_path, cli):
    r = cli(SMALL, "hydra.run.dir=b", "validate.atol=-1")
    assert r.returncode == 2
    assert not (tmp_path / "b").exists()


def test_export_dir_elsewhere_leaves_no_empty_hydra_folder(tmp_path, cli):
    r = cli(SMALL, "export_dir=out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_consistent(tmp_path / "out")
    assert not (tmp_path / "exports").exists()


def test_a_folder_holding_other_files_is_refused(tmp_path, cli):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = cli(SMALL, "export_dir=mine")
    assert r.returncode == 2
    assert "holds files that are not part of a build of this tool (notes.txt)" in r.stderr
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_the_python_api_refuses_a_folder_holding_other_files(tmp_path, cnn_model, vision_spec):
    from exporter import ConfigError, export_model

    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match=r"holds files that are not part of a build of this tool \(data.csv\)"):
        export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"])
    assert [p.name for p in tmp_path.iterdir()] == ["data.csv"]


@pytest.mark.slow
def test_every_format_and_quantization_leaves_the_working_directory_empty(tmp_path):
    """The sweep that used to leave sym_shape_infer_temp.onnx and <uuid>.data in the user's cwd: every
    format that quantizes with each mode that writes temporary files (fp32 and state dicts write none).
    The same sweep builds or explains each combination (quantization=none: in many other tests)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run_cli("-m", *LM, "format=onnx,torchscript,pytorch", "quantization=dynamic,static,fp16",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=cwd, timeout=600)
    assert r.returncode == 1  # some combinations cannot be built, and the sweep says so
    assert "sweep: 9 job(s), 6 ok, 3 failed" in r.stdout, r.stdout + r.stderr
    summary = r.stdout[r.stdout.index("sweep: 9 job(s)"):]
    rows = {line.split("  ")[0].strip(): line for line in summary.splitlines()[4:]}
    assert "not available for format pytorch" in rows["format=pytorch quantization=static"]
    assert "use format=onnx" in rows["format=torchscript quantization=fp16"]
    assert "use format=onnx" in rows["format=pytorch quantization=fp16"]
    for fmt in ("onnx", "torchscript", "pytorch"):
        assert " ok " in rows[f"format={fmt} quantization=dynamic"], rows
    assert list(cwd.iterdir()) == []
    built = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/*/metadata.json"))
    assert "onnx-static" in built and "onnx-fp16" in built and "torchscript-static" in built
    for folder in (tmp_path / "sweep").glob("*/*/metadata.json"):
        assert_consistent(folder.parent)


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs: room for one small build, not for three formats (root and mount needed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_mid_build_is_one_line_and_leaves_the_previous_build(tmp_path, small_disk, cli, cnn_build):
    copy_build(cnn_build, small_disk)  # the previous build: SMALL, onnx, seed 0 (conftest's golden build)
    (small_disk / "ballast").write_bytes(b"\0" * 200_000)
    r = cli(SMALL, f"hydra.run.dir={small_disk / 'b'}", "format=[onnx,torchscript,pytorch]", "seed=1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no space left on the device" in r.stderr and "previous build is intact" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr and len(r.stderr.strip().splitlines()) == 1
    md = assert_consistent(small_disk / "b")
    assert md["seed"] == 0 and md["formats"] == ["onnx"]
    no_leftovers(small_disk)


def test_a_disk_full_to_the_last_byte_is_one_line_for_every_writer(tmp_path, small_disk, cli):
    """A first build on a disk with no byte free: the disk-full message (not a second ENOSPC from
    closing export.log, not torch's writer aborting the process), and no claim of an earlier build."""
    fd = os.open(small_disk / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    for formats in ("format=onnx", "format=torchscript"):
        r = cli(SMALL, f"hydra.run.dir={small_disk / 'b'}", formats)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr == (f"error: no space left on the device of {small_disk / 'b'} while staging the build; nothing "
                            "was published and the folder holds no build; free some space and run again\n"), r.stderr
        assert "falling back" not in r.stdout + r.stderr and "instead of the legacy" not in r.stdout + r.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == [".b.lock", "ballast"]


def test_the_metadata_quantization_field_is_the_mode_string(lm_build, golden):
    md = json.loads((lm_build / "metadata.json").read_text())
    assert md["quantization"] == "dynamic"
    assert md["quantization_config"]["mode"] == "dynamic" and md["quantization_config"]["weight_type"] == "qint8"
    md_none = json.loads((golden("onnx") / "metadata.json").read_text())  # a build without quantization=
    assert md_none["quantization"] is None and md_none["quantization_config"] is None


def test_a_folder_holding_the_users_own_model_files_is_refused(tmp_path, cli):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "model.py").write_text("class Net: pass\n")
    (tmp_path / "proj" / "model.pth").write_bytes(b"ckpt")
    r = cli(SMALL, "export_dir=proj")
    assert r.returncode == 2 and "holds files that are not part of a build of this tool" in r.stderr
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["model.pth", "model.py"]
    # a metadata.json and config.yaml of someone else's do not make it a build either
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metadata.json").write_text('{"rows": 10}')
    (tmp_path / "data" / "config.yaml").write_text("a: 1\n")
    r = cli(SMALL, "export_dir=data")
    assert r.returncode == 2 and "metadata.json cannot be read as a build record of this tool" in r.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["config.yaml", "metadata.json"]


@pytest.mark.parametrize("override, message", [
    ("hydra.run.dir=.", "is the working directory or holds it"),
    ("hydra.job.chdir=true", "hydra.job.chdir: a job never runs inside its build folder"),  # refused before that
])
def test_building_into_the_working_directory_is_refused(tmp_path, cli, override, message):
    r = cli(SMALL, override)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stdout + r.stderr
    assert not list(tmp_path.glob("model.*")) and not (tmp_path / "metadata.json").exists()


def test_the_python_api_refuses_the_working_directory(tmp_path, monkeypatch, cnn_model, vision_spec):
    from exporter import ConfigError, export_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="is the working directory or holds it"):
        export_model(cnn_model, None, vision_spec, ".", formats=["onnx"])
    assert list(tmp_path.iterdir()) == [] and Path.cwd() == tmp_path


def test_hydra_output_subdir_cannot_rewrite_a_good_folder(tmp_path, cli, cnn_build):
    copy_build(cnn_build, tmp_path)
    before = (tmp_path / "b/.hydra/overrides.yaml").read_bytes()
    r = cli(SMALL, "hydra.run.dir=b", "hydra.output_subdir=.hydra", "validate.atol=-1")
    assert r.returncode == 2 and "hydra.output_subdir" in r.stderr
    assert (tmp_path / "b/.hydra/overrides.yaml").read_bytes() == before


def test_hydra_job_chdir_is_refused_in_one_line_before_anything_runs(tmp_path, cli):
    for args in ([SMALL, "hydra.job.chdir=true"], ["-m", SMALL, "seed=0,1", "hydra.job.chdir=True"]):
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.startswith("error: hydra.job.chdir: a job never runs inside its build "
                                                         "folder"), r.stderr
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "exports").exists() and not (tmp_path / "multirun").exists()
    assert cli(SMALL, "hydra.job.chdir=false", "format=pytorch").returncode == 0  # the default, said out loud


def test_records_and_stray_files_are_checked_like_artifacts(tmp_path, cli, cnn_build):
    folder = copy_build(cnn_build, tmp_path)
    md = assert_consistent(folder)
    assert set(md["records"]) == {"config.yaml", "export.log", ".hydra/config.yaml", ".hydra/hydra.yaml",
                                  ".hydra/overrides.yaml"}
    (folder / "export.log").unlink()
    r = cli("card", "b")
    assert r.returncode == 1 and "export.log: missing" in r.stdout
    shutil.rmtree(folder)
    folder = copy_build(cnn_build, tmp_path)
    (folder / "model.evil").write_bytes(b"x")
    r = cli("card", "b")
    assert r.returncode == 1 and "model.evil: not part of the build" in r.stdout
    # and such a folder is not rebuilt over: the stray file may be someone's
    r = cli(SMALL, "hydra.run.dir=b")
    assert r.returncode == 2 and "(model.evil)" in r.stderr and (folder / "model.evil").exists()


def test_validation_switched_off_is_never_called_ok(tmp_path, cli):
    r = cli(SMALL, "hydra.run.dir=b", "validate.enabled=false")
    assert r.returncode == 0
    assert "warning: build status unchecked" in r.stderr
    md = json.loads((tmp_path / "b/metadata.json").read_text())
    assert md["status"] == "unchecked" and md["artifacts"]["onnx"]["status"] == "unchecked"
    assert "NOT CHECKED" in cli("card", "b").stdout
    r = cli(SMALL, "hydra.run.dir=c", "validate.second_batch_size=1")
    md = json.loads((tmp_path / "c/metadata.json").read_text())
    assert md["status"] == "unchecked" and md["artifacts"]["onnx"]["dynamic_axes_verified"] is False


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1])
def test_ctrl_c_as_the_torchscript_trace_starts_exits_130_not_an_abort(tmp_path, delay):
    # The trace runs in C++ on its own thread; Python 3.11's Thread.join, when interrupted, marks
    # the thread stopped while it still runs. The job must wait for the trace, then exit 130
    # (it used to abort: "terminate called without an active exception", exit 134).
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "model=lm_stub", "format=[onnx,torchscript]",
                             "export_dir=b"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:
        if line.startswith("onnx"):  # the onnx artifact is checked: torchscript starts now
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "terminate called" not in rest and rest.strip().splitlines()[-1] == INTERRUPTED
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("attempt", range(3))
def test_sigterm_as_the_quantized_torchscript_trace_starts_exits_143(tmp_path, attempt):
    # The moment model.onnx reaches the staging folder, the TorchScript twin's trace thread starts.
    # A signal handled there used to raise from Thread.start() and abort the process (exit 134):
    # signals are held while the thread starts, then delivered with the thread known to run.
    proc = spawn(*LM_TWO, "hydra.run.dir=b", cwd=tmp_path)
    wait_for(staged_artifact(tmp_path), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "terminate called" not in err


def test_a_symlink_to_a_build_folder_is_followed_and_kept(tmp_path, cli, golden):
    """docs/reliability.md: a symbolic link to a build folder is followed: the folder it points to
    is rebuilt, the link stays."""
    real = golden.copy("onnx", tmp_path / "store" / "real")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    r = cli(SMALL, "export_dir=link", "seed=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "link").is_symlink() and os.readlink(tmp_path / "link") == str(real)
    assert assert_consistent(real)["seed"] == 1  # the new build, whole, where the link points
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "store"]
    no_leftovers(tmp_path / "store")
    assert [p.name for p in (tmp_path / "store").iterdir() if not p.name.endswith((".lock", ".stat-cache.json"))] == ["real"]


SWALLOWS_A_SIGNAL = '''
import os, signal, time
import torch

class Swallow(torch.nn.Module):
    """While it is traced, Ctrl-C comes, and the model's code (a library's, say) catches what it raises."""
    fired = False

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 10)

    def forward(self, x):
        if torch.jit.is_tracing() and not Swallow.fired:
            Swallow.fired = True
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except BaseException:
                pass
        return self.fc(x.flatten(1))
'''


def test_a_signal_a_library_swallows_still_stops_the_build_before_it_is_published(tmp_path):
    """torch.export's tracing catches what a signal raises inside it: the build still stops as soon
    as the library returns, and nothing is published."""
    (tmp_path / "swallow.py").write_text(SWALLOWS_A_SIGNAL)
    r = run_cli("~model", "+model._target_=swallow.Swallow", "task_spec.input_schema.image_size=[3,8,8]",
                "format=[torchscript,pytorch]", "export_dir=out", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 130, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == "interrupted; nothing was published (the folder is as it was before " \
                                                "this run)", r.stderr
    assert not (tmp_path / "out").exists()


def test_a_signal_the_moment_the_staging_folder_appears_leaves_no_staging_folder(tmp_path, monkeypatch):
    """A Ctrl-C timed to the staging folder's appearance (a burst of them, under load) arrived after
    mkdtemp made the folder and before the transaction held its name: the folder stayed behind."""
    import tempfile

    from exporter.build.folder import BuildTransaction
    from exporter.interrupts import INTERRUPTED, Interrupted, raise_interrupted

    made = tempfile.mkdtemp

    def mkdtemp_then_ctrl_c(*args, **kwargs):
        path = made(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # its handler runs before this function returns
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp_then_ctrl_c)
    previous = signal.signal(signal.SIGINT, raise_interrupted)
    try:
        with pytest.raises(Interrupted):
            with BuildTransaction(tmp_path / "b"):
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
        INTERRUPTED.clear()
    assert not list(tmp_path.glob(".*.staging-*")), list(tmp_path.iterdir())
