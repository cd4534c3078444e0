"""A nightly over many models (issue #26): unchanged jobs nearly free, files not read again while
``stat`` says they are unchanged, each job of a sweep composed once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from exporter.files import RACY_NS, KnownHashes

SMALL = ("task_spec.input_schema.image_size=[3,16,16]", "format=pytorch")


def _aged(path: Path, seconds: float = 10.0) -> None:
    """Give ``path`` modification and change times older than the racy window (its ctime moves to now
    with the utime call, so wait that out instead)."""
    time.sleep(RACY_NS / 1e9 + 0.1)


def test_a_file_is_not_read_again_while_stat_says_it_is_unchanged(tmp_path):
    file = tmp_path / "weights.bin"
    file.write_bytes(b"a" * 4096)
    known = KnownHashes()
    first = known.sha256(file)
    assert known.read == 1
    known.sha256(file)
    assert known.read == 2, "a file changed within the racy window is read again"
    _aged(file)
    known.sha256(file)
    assert known.read == 3
    assert known.sha256(file) == first and known.read == 3, "unchanged since hashed: not read"
    # Same size, and the old modification time put back: the change time still moved.
    stat = file.stat()
    file.write_bytes(b"b" * 4096)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file.stat().st_mtime_ns == stat.st_mtime_ns
    assert known.sha256(file) != first and known.read == 4


def test_entries_read_back_are_trusted_only_outside_the_racy_window(tmp_path):
    file = tmp_path / "f"
    file.write_bytes(b"x")
    _aged(file)
    known = KnownHashes()
    digest = known.sha256(file)
    entries = known.entries()
    other = KnownHashes()
    other.adopt(entries, written_ns=time.time_ns())
    assert other.sha256(file) == digest and other.read == 0
    racy = KnownHashes()
    racy.adopt(entries, written_ns=file.stat().st_ctime_ns + 1)  # written right after the change
    racy.sha256(file)
    assert racy.read == 1
    broken = KnownHashes()
    broken.adopt({str(file): ["not", "numbers"], "/x": [1, 2]}, written_ns=time.time_ns())
    assert broken.sha256(file) == digest and broken.read == 1


def test_an_unchanged_job_reads_no_file_and_says_so(tmp_path):
    """The build's own files (just written) are read once more, then nothing is: the checkpoint, the
    model's code and the artifacts are known by stat. Changing the checkpoint in place, same size and
    modification time, is still seen."""
    import torch

    from exporter.models.simple_cnn import SimpleCNN

    checkpoint = tmp_path / "weights.pt"
    torch.save(SimpleCNN(num_classes=10).state_dict(), checkpoint)
    _aged(checkpoint)
    args = (*SMALL, f"checkpoint={checkpoint}", "hydra.run.dir=b")
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / ".b.stat-cache.json").is_file() and not (tmp_path / "b" / ".b.stat-cache.json").exists()
    recorded = json.loads((tmp_path / ".b.stat-cache.json").read_text())["files"]
    assert str(checkpoint) in recorded, "the checkpoint hashed for the key is remembered beside the build"
    _aged(tmp_path / "b")
    first = run_cli(*args, cwd=tmp_path)
    assert "up to date" in first.stdout, first.stdout + first.stderr
    second = run_cli(*args, cwd=tmp_path)
    line = next(x for x in second.stdout.splitlines() if x.startswith("up to date:"))
    assert "; 0 of " in line, line
    # The checkpoint rewritten in place: same size, its modification time put back.
    stat = checkpoint.stat()
    state = torch.load(checkpoint)
    next(iter(state.values())).add_(1.0)
    torch.save(state, checkpoint)
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert checkpoint.stat().st_size == stat.st_size
    third = run_cli(*args, cwd=tmp_path)
    assert third.returncode == 0 and "up to date" not in third.stdout, third.stdout + third.stderr


_COUNTING = """
import sys
import hydra._internal.config_loader_impl as impl
calls = []
compose = impl.ConfigLoaderImpl.load_configuration
def counted(self, *args, **kwargs):
    calls.append(1)
    return compose(self, *args, **kwargs)
impl.ConfigLoaderImpl.load_configuration = counted
from exporter.cli.app import main
sys.argv = ["exporter", *sys.argv[1:]]
try:
    main()
finally:
    print(f"compositions: {len(calls)}", file=sys.stderr)
"""


def test_hydra_composes_each_set_of_config_choices_once_under_the_basic_launcher(tmp_path):
    """Hydra's sweeper composes every job to check it, and its launcher composes each again, each
    from the start. Under the basic launcher (both in the sweep's process) Hydra composes the sweep's
    own config and each set of config choices once (here format=onnx and format=pytorch), and each
    job is that config with its values applied (exporter.cli.composition). The jobs stop at the config
    check (validate.atol=-1), before anything is built."""
    (tmp_path / "count.py").write_text(_COUNTING)
    r = subprocess.run(
        [sys.executable, "count.py", "-m", "model=lm_stub", "seed=0,1,2", "format=onnx,pytorch", "validate.atol=-1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "6 of 6 sweep job(s) failed" in r.stderr and "validate.atol" in r.stdout
    composed = int(r.stderr.rsplit("compositions: ", 1)[1].split()[0])
    assert composed == 3, r.stderr  # Hydra alone: 13 (the sweep's, then 2 for each of the 6 jobs)


def test_the_sweep_picture_is_drawn_again_only_when_it_changes(tmp_path):
    sweep = ("-m", *SMALL, "seed=0,1")
    r = run_cli(*sweep, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    png = tmp_path / "exports" / "sweep_summary.png"
    if not png.is_file():
        pytest.skip("matplotlib (the plot extra) is not installed")
    drawn = png.stat().st_mtime_ns
    r = run_cli(*sweep, cwd=tmp_path)
    assert r.stdout.count("up to date") >= 2 and png.stat().st_mtime_ns == drawn, r.stdout
    summary = json.loads((tmp_path / "exports" / "sweep_summary.json").read_text())
    assert summary["plot"] and len(summary["plot"]) == 64


def test_a_model_folder_is_hashed_through_its_linked_subfolders(tmp_path):
    from exporter.config.build_key import _folder_identity

    model, elsewhere = tmp_path / "model", tmp_path / "elsewhere"
    (model / "real").mkdir(parents=True), elsewhere.mkdir()
    (model / "config.json").write_text("{}")
    (model / "real" / "a.txt").write_text("a")
    (elsewhere / "tokenizer.json").write_text("1")
    (model / "sub").symlink_to(elsewhere, target_is_directory=True)
    (model / "real" / "loop").symlink_to(model, target_is_directory=True)  # walked once, not forever
    before = _folder_identity(str(model))["files"]
    assert sorted(before) == ["config.json", "real/a.txt", "sub/tokenizer.json"]
    (elsewhere / "tokenizer.json").write_text("2")
    assert _folder_identity(str(model))["files"]["sub/tokenizer.json"] != before["sub/tokenizer.json"]


def test_no_picture_for_more_bars_than_it_can_show(tmp_path):
    from exporter.cli.sweep import MAX_PLOTTED, _plot

    bars = [(f"job {i}", 1.0, 0.0) for i in range(MAX_PLOTTED + 1)]
    assert _plot(bars, tmp_path / "p.png") is False and not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------- the shared build cache

def _cache_env(cache: Path) -> dict[str, str]:
    return {"EXPORTER_CACHE_DIR": str(cache)}


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "exporter-cache-v1").glob("??/*") if p.is_dir())


def test_a_build_from_the_cache_is_the_stored_bytes_and_describes_its_own_job(tmp_path):
    from exporter.records.read import files_problems, read_build

    cache, first, second = tmp_path / "cache", tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    args = (*SMALL, "format=[onnx,pytorch]", "hydra.run.dir=b")
    built = run_cli(*args, cwd=first, env=_cache_env(cache))
    assert built.returncode == 0 and "cache: stored as" in built.stdout, built.stdout + built.stderr
    (entry,) = _entries(cache)
    restored = run_cli(*args, cwd=second, env=_cache_env(cache))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"restored from cache: {second / 'b'}" in restored.stdout, restored.stdout
    for name in ("model.onnx", "model.pth"):
        assert (second / "b" / name).read_bytes() == (first / "b" / name).read_bytes()
    build = read_build(second / "b")
    assert files_problems(build) == []
    md, original = build.metadata, json.loads((first / "b" / "metadata.json").read_text())
    assert md["build_key"] == original["build_key"] == entry.name
    assert md["restored_from"]["build_key"] == entry.name
    assert md["restored_from"]["exported_at"] == original["exported_at"] <= md["exported_at"]  # to the second
    assert md["config"]["cwd"] == str(second) and "restored from the build cache" in (second / "b" / "export.log").read_text()
    # No cache option is part of the build key: the same build without a cache has the same key.
    plain = run_cli(*args, "cache.dir=null", cwd=tmp_path)
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["build_key"] == md["build_key"], plain.stderr
    # verify rebuilds it from its records (never from the cache) and finds the same bytes.
    verified = run_cli("verify", "b", cwd=second, env=_cache_env(cache))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert len(_entries(cache)) == 1
    card = run_cli("card", "b", cwd=second)
    assert f"restored here from the build cache {md['exported_at']}" in card.stdout, card.stdout


def test_a_damaged_or_foreign_entry_is_refused_and_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    args = (*SMALL, "hydra.run.dir=b")
    (tmp_path / "a").mkdir(), (tmp_path / "c").mkdir(), (tmp_path / "d").mkdir()
    assert run_cli(*args, cwd=tmp_path / "a", env=_cache_env(cache)).returncode == 0
    (entry,) = _entries(cache)
    stored = entry / "build" / "model.pth"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    r = run_cli(*args, cwd=tmp_path / "c", env=_cache_env(cache))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is refused (model.pth does not hash as its record says (damaged))" in r.stdout + r.stderr
    assert "restored from cache" not in r.stdout and "cache: stored as" in r.stdout
    assert (tmp_path / "c" / "b" / "model.pth").read_bytes() == (tmp_path / "a" / "b" / "model.pth").read_bytes()
    assert (entry / "build" / "model.pth").read_bytes() == (tmp_path / "a" / "b" / "model.pth").read_bytes()
    # An entry without the tool's mark (another tool's folder under the same name) is no build of ours.
    (entry / "entry.json").write_text(json.dumps({"tool": "something-else", "build_key": entry.name}))
    r = run_cli(*args, cwd=tmp_path / "d", env=_cache_env(cache))
    assert r.returncode == 0 and "is refused (entry.json is not this tool's mark" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "restored from cache" not in r.stdout
    # A folder under the key with no mark at all (a half-removed entry) makes way for a sound one.
    (entry / "entry.json").unlink()
    (tmp_path / "e").mkdir()
    r = run_cli(*args, cwd=tmp_path / "e", env=_cache_env(cache))
    assert r.returncode == 0 and "has no entry.json: removed" in r.stdout + r.stderr, r.stdout + r.stderr
    assert f"cache: stored as {entry.name[:12]}" in r.stdout and (entry / "entry.json").is_file(), r.stdout + r.stderr


def test_cache_read_write_and_max_bytes(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    # A build that did not end ok is not stored (here: outputs off by more than nothing, not strict).
    r = run_cli("task_spec.input_schema.image_size=[3,16,16]", "hydra.run.dir=m", "validate.atol=0", "validate.rtol=0",
                "validate.strict=false", cwd=tmp_path / "a", env=_cache_env(cache))
    assert "status mismatch" in r.stderr and not _entries(cache), r.stdout + r.stderr
    r = run_cli(*SMALL, "hydra.run.dir=x", "cache.write=false", cwd=tmp_path / "a", env=_cache_env(cache))
    assert r.returncode == 0 and not _entries(cache), r.stdout + r.stderr
    r = run_cli(*SMALL, "hydra.run.dir=x", cwd=tmp_path / "a", env=_cache_env(cache))  # up to date: nothing built
    assert "up to date" in r.stdout and not _entries(cache)
    r = run_cli(*SMALL, "hydra.run.dir=x", "force=true", cwd=tmp_path / "a", env=_cache_env(cache))
    assert "cache: stored as" in r.stdout and len(_entries(cache)) == 1, r.stdout + r.stderr
    r = run_cli(*SMALL, "hydra.run.dir=x", "cache.read=false", cwd=tmp_path / "b", env=_cache_env(cache))
    assert r.returncode == 0 and "restored" not in r.stdout and "build:" in r.stdout, r.stdout
    # A second build; a limit below the two: the least recently used goes.
    (first,) = _entries(cache)
    size = json.loads((first / "entry.json").read_text())["bytes"]
    r = run_cli(*SMALL, "hydra.run.dir=y", "seed=1", f"cache.max_bytes={size + size // 2}", cwd=tmp_path / "a",
                env=_cache_env(cache))
    assert r.returncode == 0 and f"cache: evicted {first.name[:12]}" in r.stdout, r.stdout + r.stderr
    assert [e.name for e in _entries(cache)] != [first.name] and len(_entries(cache)) == 1
    r = run_cli(*SMALL, "hydra.run.dir=z", "cache.max_bytes=-1", cwd=tmp_path / "a", env=_cache_env(cache))
    assert r.returncode == 2 and "cache.max_bytes" in r.stderr, r.stderr


def test_a_sweep_marks_the_jobs_it_restored(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    sweep = ("-m", *SMALL, "seed=0,1")
    assert run_cli(*sweep, cwd=tmp_path / "a", env=_cache_env(cache)).returncode == 0
    r = run_cli(*sweep, cwd=tmp_path / "b", env=_cache_env(cache))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "b" / "exports" / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary["records"]] == ["restored", "restored"]
    assert summary["ok"] == 2 and summary["failed"] == 0


def test_two_machines_storing_one_key_at_once_leave_one_sound_entry(tmp_path):
    cache = tmp_path / "cache"
    procs = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, **_cache_env(cache),
               "EXPORTER_CACHE_DIR": str(cache)}
        procs.append(subprocess.Popen([sys.executable, "-m", "exporter", *SMALL, "hydra.run.dir=b", "cache.read=false"],
                                      cwd=tmp_path / name, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, out + err
    assert len(_entries(cache)) == 1 and not list((cache / "exporter-cache-v1" / "tmp").iterdir())
    (tmp_path / "d").mkdir()
    r = run_cli(*SMALL, "hydra.run.dir=b", cwd=tmp_path / "d", env=_cache_env(cache))
    assert "restored from cache" in r.stdout, r.stdout + r.stderr
