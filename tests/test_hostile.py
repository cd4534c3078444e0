"""A build folder or a command line prepared by someone hostile (issue 24): the tool runs no code a
build folder brings, keeps every good build, and answers every case in one line with its exit code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from conftest import run_cli

EVIL = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n\n\nclass Boom:\n    pass\n"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plant(build: Path, code_folder: Path, marker: Path, cwd: str) -> None:
    """evilmod.py in ``code_folder``, config.yaml pointing at it, and records re-hashed to vouch for it."""
    (code_folder / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    config = yaml.safe_load((build / "config.yaml").read_text())
    config["model"] = {"_target_": "evilmod.Boom"}
    (build / "config.yaml").write_text(yaml.safe_dump(config))
    metadata = json.loads((build / "metadata.json").read_text())
    metadata["config"]["cwd"] = cwd
    if code_folder == build:
        metadata["artifacts"]["onnx"]["extra_files"] = [
            {"file": "evilmod.py", "bytes": (build / "evilmod.py").stat().st_size, "sha256": _sha(build / "evilmod.py")}]
    metadata["records"]["config.yaml"] = _sha(build / "config.yaml")
    (build / "metadata.json").write_text(json.dumps(metadata))


def test_verify_imports_no_code_a_build_folder_brings(tmp_path, golden):
    build = golden.copy("onnx", tmp_path / "b")
    marker = tmp_path / "ran"
    _plant(build, build, marker, ".")
    card = run_cli("card", ".", cwd=build)
    assert card.returncode == 1 and "evilmod.py: not part of the build" in card.stdout + card.stderr
    assert "NOT PART OF THE BUILD: evilmod.py" in card.stdout
    r = run_cli("verify", ".", cwd=build)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith("error: model._target_ evilmod.Boom: ") and r.stderr.count("\n") == 1, r.stderr
    assert "--code" in r.stderr and not marker.exists()
    # the same through a config.cwd that names another folder, verified from anywhere
    other = tmp_path / "other"
    other.mkdir()
    build2 = golden.copy("onnx", tmp_path / "b2")
    _plant(build2, other, marker, str(other))
    r = run_cli("verify", str(build2), cwd=other)
    assert r.returncode == 2 and "evilmod.Boom" in r.stderr and not marker.exists(), r.stdout + r.stderr
    # Python's own library is no model code either
    config = yaml.safe_load((build2 / "config.yaml").read_text())
    config["model"] = {"_target_": "os.system", "command": f"touch {marker}"}
    (build2 / "config.yaml").write_text(yaml.safe_dump(config))
    r = run_cli("verify", str(build2), cwd=tmp_path)
    assert r.returncode == 2 and "Python's own 'os' is not model code" in r.stderr and not marker.exists(), r.stderr
    assert list(tmp_path.glob("*/__pycache__")) == []


def test_verify_says_which_model_code_it_imports(golden, tmp_path):
    r = run_cli("verify", str(golden("onnx")), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("model code: exporter.models.SimpleCNN from the installed distribution exporter "), r.stdout
    r = run_cli("verify", str(golden("onnx")), "--code", str(tmp_path / "nope"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: --code ") and r.stderr.count("\n") == 1, r.stderr
