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
compose = impl.ConfigLoaderImpl.load_sweep_config
def counted(self, *args, **kwargs):
    calls.append(1)
    return compose(self, *args, **kwargs)
impl.ConfigLoaderImpl.load_sweep_config = counted
from exporter.cli.app import main
sys.argv = ["exporter", *sys.argv[1:]]
try:
    main()
finally:
    print(f"compositions: {len(calls)}", file=sys.stderr)
"""


def test_each_job_of_a_sweep_is_composed_once_under_the_basic_launcher(tmp_path):
    """Hydra's sweeper composes every job to check it, and its launcher composes each again: under
    the basic launcher (both in the sweep's process) the second is the first, kept. The jobs here
    stop at the config check (validate.atol=-1), before anything is built."""
    (tmp_path / "count.py").write_text(_COUNTING)
    r = subprocess.run(
        [sys.executable, "count.py", "-m", "model=lm_stub", "seed=0,1,2", "validate.atol=-1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "validate.atol" in r.stdout
    composed = int(r.stderr.rsplit("compositions: ", 1)[1].split()[0])
    assert composed == 3, r.stderr  # Hydra alone: 6


def test_the_sweep_picture_is_drawn_again_only_when_it_changes(tmp_path):
    sweep = (*SMALL, "-m", "seed=0,1")
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


def test_no_picture_for_more_bars_than_it_can_show(tmp_path):
    from exporter.cli.sweep import MAX_PLOTTED, _plot

    bars = [(f"job {i}", 1.0, 0.0) for i in range(MAX_PLOTTED + 1)]
    assert _plot(bars, tmp_path / "p.png") is False and not (tmp_path / "p.png").exists()
