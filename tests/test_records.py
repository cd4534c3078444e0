"""Reading finished builds: ``card`` and ``diff`` re-hash every artifact and name a file that is missing or
changed (exit 1); a build that cannot be read is one ``error:`` line (exit 2); a build exchanged by a
rebuild in the middle of a read is read again, so metadata and hashes come from one build."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_card_snippets, run_cli

from exporter.records import read as records
from exporter.records.read import MISSING, NOT_RECORDED, OK, BuildUnreadable, files_problems, read_build
from exporter.records.tables import closing_table

SMALL = "task_spec.input_schema.image_size=[3,32,32]"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m exporter ARGS`` in a subprocess, as a user would run it."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture
def built(golden) -> Path:
    """One real build (onnx and pytorch) for the whole session (conftest.golden); tests that tamper
    work on a copy."""
    return golden("onnx+pytorch")


@pytest.fixture
def copy(golden, tmp_path):
    def make(name: str = "t") -> Path:
        return golden.copy("onnx+pytorch", tmp_path / name)

    return make


def edit_metadata(folder: Path, change) -> dict:
    md = json.loads((folder / "metadata.json").read_text())
    change(md)
    (folder / "metadata.json").write_text(json.dumps(md))
    return md


def row(stdout: str, fmt: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(f"{fmt} "))


def test_card_of_a_good_build_verifies_every_file(copy, tmp_path):
    copy()
    r = run("card", "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "on disk" in r.stdout and "verified" in row(r.stdout, "onnx") and "verified" in row(r.stdout, "pytorch")
    assert "WARNING" not in r.stdout


def test_card_names_a_deleted_artifact_and_exits_1(copy, tmp_path):
    (copy() / "model.onnx").unlink()
    r = run("card", "t", cwd=tmp_path)
    assert r.returncode == 1
    assert "MISSING" in row(r.stdout, "onnx") and "verified" in row(r.stdout, "pytorch")
    assert "> WARNING: t/model.onnx: missing (metadata.json records it for onnx)" in r.stdout
    assert "## Load onnx" in r.stdout  # the card is still printed in full


def test_card_names_a_modified_artifact_and_exits_1(copy, tmp_path):
    onnx = copy() / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    r = run("card", "t", cwd=tmp_path)
    assert r.returncode == 1
    assert "MODIFIED (sha256 differs from metadata.json)" in row(r.stdout, "onnx")
    assert "> WARNING: t/model.onnx: modified (sha256 differs from metadata.json)" in r.stdout


def test_diff_of_a_build_and_its_copy_is_identical(built, copy, tmp_path):
    copy()
    r = run("diff", str(built), "t", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "builds are identical" in r.stdout and r.stdout.count("identical bytes") == 2


def test_diff_rehashes_a_build_whose_artifact_is_missing(built, copy, tmp_path):
    (copy() / "model.onnx").unlink()
    # the records are the same: only the files on disk tell the two builds apart
    assert (built / "metadata.json").read_bytes() == (tmp_path / "t/metadata.json").read_bytes()
    r = run("diff", str(built), "t", cwd=tmp_path)
    assert r.returncode == 1
    assert "model.onnx MISSING in b" in row(r.stdout, "onnx") and "identical bytes" in row(r.stdout, "pytorch")
    assert "  t/model.onnx: missing (metadata.json records it for onnx)" in r.stdout
    assert "builds differ" in r.stdout and "builds are identical" not in r.stdout


def without_artifacts(raw: bytes) -> bytes:
    md = json.loads(raw)
    del md["artifacts"]
    return json.dumps(md).encode()


@pytest.mark.parametrize("name, damage, message", [
    ("metadata.json", lambda raw: b"[1, 2]\n", "t/metadata.json: expected a JSON object, got a list"),
    ("metadata.json", lambda raw: b"\xff\xfe", "t/metadata.json: not valid UTF-8"),
    ("metadata.json", without_artifacts, "t/metadata.json: 'artifacts' is missing"),
    ("metadata.json", lambda raw: b'{"status": "ok",\n', "t/metadata.json: not valid JSON (line 2: Expecting property name"),
    ("config.yaml", lambda raw: b"a: [\n", "t/config.yaml: not valid YAML (line 2: expected the node content"),
], ids=["json-list", "not-utf8", "no-artifacts", "invalid-json", "broken-yaml"])
def test_an_unreadable_build_is_one_line_and_exit_2(built, copy, tmp_path, name, damage, message):
    path = copy() / name
    path.write_bytes(damage(path.read_bytes()))
    for args in (["card", "t"], ["diff", str(built), "t"], ["diff", "t", str(built)]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [r.stderr.strip()] and r.stderr.startswith(f"error: {message}"), (args, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr and r.stdout == ""


def test_a_folder_without_metadata_is_not_a_build(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (["card", "empty"], ["card", "nowhere"]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert run("card", "empty", cwd=tmp_path).stderr == "error: empty is not a build folder (no metadata.json in it)\n"
    assert run("card", "nowhere", cwd=tmp_path).stderr == "error: nowhere: no such folder\n"


def test_card_onto_a_directory_is_one_line_and_exit_2(copy, tmp_path):
    copy()
    (tmp_path / "cards").mkdir()
    r = run("card", "t", "-o", "cards", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == "error: cannot write the card to cards: is a directory\n" and r.stdout == ""
    assert list((tmp_path / "cards").iterdir()) == [] and not list(tmp_path.glob(".cards.*"))  # no temporary left
    # a pipe or a link in the place named is never replaced by a regular file (nor is a device: /dev/full)
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere.md")
    for name, kind in (("pipe", "not a regular file (a device or a pipe)"), ("link", "a symbolic link")):
        r = run("card", "t", "-o", name, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith(f"error: card -o: {name} is {kind}; "), r.stderr
    assert (tmp_path / "link").is_symlink() and not (tmp_path / "elsewhere.md").exists()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)


def test_card_into_the_build_folder_itself_is_refused_and_the_build_stays_whole(copy, tmp_path):
    copy()
    before = sorted(p.name for p in (tmp_path / "t").iterdir())
    for target in ("t/CARD.md", "t/../t/card.md"):
        r = run("card", "t", "-o", target, cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"error: card -o: {target} is inside the build folder ")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == before
    assert run("card", "t", cwd=tmp_path).returncode == 0  # still a whole, undamaged build


def test_card_into_an_unwritable_place_is_one_line_and_exit_2(copy, tmp_path):
    copy()
    r = run("card", "t", "-o", "/proc/exporter-card.md", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: cannot write the card to /proc/exporter-card.md: ") and len(r.stderr.splitlines()) == 1
    assert "Traceback" not in r.stderr


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nothing can be written into, root included: a read-only tmpfs mounted on it (as
    tests/test_errors.py does); where mounting is not allowed, a folder without write permission.
    Yields the folder and the reason a write into it fails."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(locked)],
                      capture_output=True).returncode == 0:
        try:
            yield locked, "read-only file system"
        finally:
            subprocess.run(["umount", "-l", str(locked)], check=False)
        return
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("cannot mount a read-only tmpfs, and this user writes into a read-only directory")
        yield locked, "permission denied"
    finally:
        locked.chmod(0o700)


def test_card_into_a_read_only_directory_is_one_line_and_exit_2(copy, tmp_path, read_only_folder):
    copy()
    locked, reason = read_only_folder
    r = run("card", "t", "-o", "locked/card.md", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: cannot write the card to locked/card.md: {reason}\n"
    assert list(locked.iterdir()) == []


def test_card_without_a_folder_skips_builds_in_progress(copy, tmp_path):
    finished = tmp_path / "exports/simple_cnn/onnx-none"
    finished.parent.mkdir(parents=True)
    shutil.move(copy(), finished)
    staging = tmp_path / "exports/simple_cnn/.onnx-none.staging-123-abc/build"
    staging.mkdir(parents=True)
    (staging / "metadata.json").write_text('{"status": "half-written"')  # newer, and unreadable if picked
    later = (finished / "metadata.json").stat().st_mtime + 60
    os.utime(staging / "metadata.json", (later, later))
    r = run("card", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "# vision_classification: SimpleCNN (onnx, pytorch) - ok" in r.stdout


def test_extra_files_are_checked_too(copy, tmp_path):
    folder = copy()
    data = b"external tensor data"
    (folder / "model.onnx.data").write_bytes(data)
    extra = {"file": "model.onnx.data", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    edit_metadata(folder, lambda md: md["artifacts"]["onnx"].update(extra_files=[extra]))
    assert [(c.file, c.state) for c in read_build(folder).files_of("onnx")] == [("model.onnx", OK), ("model.onnx.data", OK)]
    (folder / "model.onnx.data").unlink()
    r = run("card", "t", cwd=tmp_path)
    assert r.returncode == 1
    assert "MISSING: model.onnx.data" in row(r.stdout, "onnx")
    assert "> WARNING: t/model.onnx.data: missing" in r.stdout


def test_a_failed_format_has_no_file_to_check(copy, tmp_path):
    folder = copy()
    edit_metadata(folder, lambda md: md["artifacts"].update(onnx={"status": "failed", "error": "boom"}))
    (folder / "model.onnx").unlink()
    build = read_build(folder)
    assert [c.state for c in build.files_of("onnx")] == [NOT_RECORDED] and files_problems(build) == []
    r = run("card", "t", cwd=tmp_path)
    assert r.returncode == 0 and "FAILED: boom" in row(r.stdout, "onnx")


def test_an_artifact_name_outside_the_folder_is_refused(built, copy, tmp_path):
    edit_metadata(copy(), lambda md: md["artifacts"]["onnx"].update(file=f"../{built.name}/model.onnx"))
    with pytest.raises(BuildUnreadable, match=r"'artifacts.onnx.file' must be a file name inside the build folder"):
        read_build(tmp_path / "t")


SETTINGS = {"mode": "dynamic", "weight_type": "qint8", "per_channel": False}
CALIBRATION = {"source": "random", "num_samples": 32, "sha256": "ab" * 32}


@pytest.mark.parametrize("shape", [
    {"quantization": "dynamic", "quantization_config": SETTINGS, "calibration": CALIBRATION},
    {"quantization": SETTINGS, "calibration": CALIBRATION},  # before the mode/config split
], ids=["mode-and-config", "one-dict"])
def test_card_reads_both_shapes_of_quantization(copy, tmp_path, shape):
    md = edit_metadata(copy(), lambda md: md.update(shape))
    r = run("card", "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "- Quantization: dynamic (weight_type=qint8, per_channel=False)\n" in r.stdout
    assert "## Quantization against the fp32 twin (calibration: random, 32 samples" in r.stdout
    assert "size vs fp32" in closing_table(md)


@pytest.mark.parametrize("quantization", [None, "none", {"mode": "none"}])
def test_not_quantized_reads_as_none(copy, tmp_path, quantization):
    md = edit_metadata(copy(), lambda md: md.update(quantization=quantization, quantization_config=None))
    r = run("card", "t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "- Quantization: none\n" in r.stdout and "fp32 twin" not in r.stdout
    assert "size vs fp32" not in closing_table(md)


def other_build(copy) -> Path:
    """A second, self-consistent build: other model.onnx bytes, and a metadata.json that records them."""
    folder = copy("other")
    onnx = folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")

    def change(md):
        md["task_name"] = "the other build"
        md["artifacts"]["onnx"].update(sha256=hashlib.sha256(onnx.read_bytes()).hexdigest(), bytes=onnx.stat().st_size)

    edit_metadata(folder, change)
    return folder


def exchange(a: Path, b: Path) -> None:
    """What a publish does in one renameat2 call, in three renames (nothing reads in between here)."""
    parked = a.with_name(a.name + ".parked")
    os.rename(a, parked)
    os.rename(b, a)
    os.rename(parked, b)


def test_a_folder_exchanged_mid_read_is_read_again(copy, monkeypatch):
    target, other = copy("target"), other_build(copy)
    real_hash, calls = records._sha256_at, []
    per_read = len(read_build(target).files)  # artifacts and records, each hashed once per read

    def hash_during_a_rebuild(fd, name, *rest):
        calls.append(name)
        if len(calls) == 1:
            # the rebuild publishes over the folder being read, then deletes the build it replaced
            exchange(target, other)
            shutil.rmtree(other)
        return real_hash(fd, name, *rest)

    monkeypatch.setattr(records, "_sha256_at", hash_during_a_rebuild)
    build = read_build(target)
    assert len(calls) == 2 * per_read  # every file, read twice: the first read was of the replaced build
    assert build.metadata["task_name"] == "the other build"
    assert all(c.state == OK for c in build.files) and files_problems(build) == []
    onnx = next(c for c in build.files if c.format == "onnx")
    assert onnx.sha256 == hashlib.sha256((target / "model.onnx").read_bytes()).hexdigest()


def test_a_folder_exchanged_under_every_read_is_one_clear_error(copy, monkeypatch):
    target, other = copy("target"), other_build(copy)
    real_hash, calls = records._sha256_at, []
    per_read = len(read_build(target).files)

    def hash_during_rebuilds(fd, name, *rest):
        calls.append(name)
        if (len(calls) - 1) % per_read == 0:  # the first file of every attempt
            exchange(target, other)
        return real_hash(fd, name, *rest)

    monkeypatch.setattr(records, "_sha256_at", hash_during_rebuilds)
    with pytest.raises(BuildUnreadable, match=r"target: replaced by a rebuild 3 times while being read"):
        read_build(target)
    assert len(calls) == 3 * per_read


def test_a_vanished_file_without_an_exchange_is_missing_not_retried(copy, monkeypatch):
    target = copy("target")
    real_hash, calls = records._sha256_at, []

    def hash_after_a_delete(fd, name, *rest):
        calls.append(name)
        if name == "model.onnx":
            (target / "model.onnx").unlink()
        return real_hash(fd, name, *rest)

    monkeypatch.setattr(records, "_sha256_at", hash_after_a_delete)
    files = [(c.file, c.state) for c in read_build(target).files if c.format != records.RECORDS]
    assert files == [("model.onnx", MISSING), ("model.pth", OK)]
    assert calls[:2] == ["model.onnx", "model.pth"] and calls.count("model.onnx") == 1


def test_card_and_diff_read_a_build_without_importing_torch(copy, tmp_path):
    """docs/configuration.md: both read a finished build folder without importing torch (nor onnx,
    onnxruntime or transformers): -X importtime of the real command, exit included."""
    from conftest import HEAVY, run_cli_noting_imports

    copy("a")
    copy("b")
    for args in (["card", "a"], ["diff", "a", "b"], ["diff", "a/config.yaml", "b/config.yaml"]):
        r, imported = run_cli_noting_imports(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout and "exporter" in imported and not imported & HEAVY, (args, sorted(imported & HEAVY))


@pytest.mark.parametrize("command, signum, code", [("card", "SIGINT", 130), ("diff", "SIGINT", 130),
                                                   ("card", "SIGTERM", 143)])
def test_ctrl_c_while_card_or_diff_reads_is_one_line_and_exit_130(copy, tmp_path, command, signum, code):
    """Stopped in the middle of re-hashing an artifact (here a sparse file of 64 GiB, which takes a
    while to read), card and diff say `interrupted: exporter <command> did not finish` and nothing else."""
    import signal

    from conftest import wait_for

    folder = copy("a")
    with open(folder / "model.onnx", "r+b") as f:
        f.truncate(64 << 30)
    args = ["card", "a"] if command == "card" else ["diff", "a", "a"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen([sys.executable, "-m", "exporter", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def reading_it() -> bool:
        try:
            return any(os.path.realpath(fd) == str((folder / "model.onnx").resolve())
                       for fd in Path(f"/proc/{proc.pid}/fd").iterdir())
        except OSError:
            return False

    wait_for(reading_it, proc)
    proc.send_signal(getattr(signal, signum))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, out + err
    assert err == f"interrupted: exporter {command} did not finish\n" and out == ""


def test_every_snippet_the_card_prints_runs_as_printed(tmp_path, golden):
    """Each "## Load" block of the card, copied as it is into a fresh Python in the build folder:
    onnx, torchscript, the state dict, model.safetensors and model.pt2, and a text model's ONNX."""

    builds = [golden("onnx+torchscript+pytorch")]
    for args, folder in (([SMALL, "format=[exported_program,safetensors]"], "more"),
                         (["model=lm_stub", "task_spec.input_schema.max_seq_len=8", "format=onnx"], "lm")):
        r = run_cli(*args, f"export_dir={folder}", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        builds.append(tmp_path / folder)
    ran = []
    for build in builds:
        ran += run_card_snippets(build, tmp_path)
    assert sorted(ran) == sorted(["onnx", "torchscript", "pytorch", "exported_program", "pytorch", "onnx"]), ran
