"""The installed package (a built wheel, not the source tree) finds its configs through pkg://exporter.conf."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    """Build a wheel and install it (no dependencies: they are already here) into its own folder."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((root / "dist").glob("exporter-*.whl"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    return target


def _env(site: Path) -> dict:
    # The wheel's folder comes first on the path, ahead of the editable install of the source tree.
    return {**os.environ, "PYTHONPATH": str(site)}


def test_wheel_ships_every_config(wheel_install):
    conf = wheel_install / "exporter" / "conf"
    shipped = {str(p.relative_to(conf)) for p in conf.rglob("*.yaml")}
    source = {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == source


def test_installed_package_runs_from_anywhere(wheel_install, tmp_path):
    code = ("import exporter, hydra; from hydra.core.global_hydra import GlobalHydra\n"
            "from hydra import initialize_config_module, compose\n"
            "import exporter.cli.app\n"
            "with initialize_config_module(config_module='exporter.conf', version_base='1.3'):\n"
            "    cfg = compose('config', return_hydra_config=True)\n"
            "    print('FILE', exporter.__file__)\n"
            "    print('SEARCH', [f'{p.scheme()}://{p.path}' for p in GlobalHydra.instance().config_loader().get_sources()])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(wheel_install),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"FILE {wheel_install}" in r.stdout
    assert "pkg://exporter.conf" in r.stdout
    run = subprocess.run([sys.executable, "-m", "exporter", "format=pytorch",
                          "task_spec.input_schema.image_size=[3,16,16]"],
                         cwd=tmp_path, env=_env(wheel_install), capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "exports/simple_cnn/pytorch-none/model.pth").is_file()


def test_console_script(wheel_install, tmp_path):
    script = wheel_install / "bin" / "exporter"
    assert script.is_file()
    r = subprocess.run([sys.executable, str(script), "--cfg", "job"], cwd=tmp_path, env=_env(wheel_install),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "_target_: exporter.models.SimpleCNN" in r.stdout
