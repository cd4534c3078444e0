"""Shared fixtures: small real models and task specs, and a runner for the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite runs a worker per core (pytest-xdist), each starting builds of tiny models: torch's one
# thread per build, instead of one per core in each, keeps two builds from fighting over two cores
# (about 15% faster here). A test that needs another count sets it (test_single_run.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A step that runs long gets a plain progress line on stdout (exporter.console.step): on a machine
# busy enough to stretch a step past 10 s, that would be a line the tests asserting a build's exact
# output do not expect. The progress test sets its own value.
os.environ.setdefault("EXPORTER_PROGRESS_SECONDS", "3600")


def pytest_collection_modifyitems(config, items):
    """Slow tests (sweeps of many jobs, Hugging Face models, every kill signal) run in CI (CI=true),
    with EXPORTER_SLOW_TESTS=1, or when a -m expression is given; a plain local run skips them."""
    if os.environ.get("CI") or os.environ.get("EXPORTER_SLOW_TESTS") or config.getoption("markexpr"):
        return
    skip = pytest.mark.skip(reason="slow: runs in CI (CI=true) or with EXPORTER_SLOW_TESTS=1 / -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def hydra_config_module():
    """Hydra initialized on the shipped configs (pkg://exporter.conf), for compose()."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="exporter.conf", version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


@pytest.fixture
def vision_spec():
    from exporter import TaskSpec

    return TaskSpec("vision_export_test", "vision", "vision_classification",
                    {"image_size": [3, 32, 32]}, {"num_classes": 10})


@pytest.fixture
def lm_spec():
    from exporter import TaskSpec

    return TaskSpec("lm_export_test", "text", "language_modeling", {"vocab_size": 1000, "max_seq_len": 32},
                    {"vocab_size": 1000})


@pytest.fixture
def lm_model():
    import torch

    from exporter.models import LMStub

    torch.manual_seed(0)
    return LMStub(vocab_size=1000, d_model=64, n_heads=4, n_layers=2, max_seq_len=32)


@pytest.fixture
def cnn_model():
    import torch

    from exporter.models import SimpleCNN

    torch.manual_seed(0)
    return SimpleCNN(num_classes=10)


# A model the ONNX exporters cannot handle (eigvals), while TorchScript can: 4 "classes".
NO_ONNX = """
import torch


class NoOnnx(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, pixel_values):
        return torch.linalg.eigvals(self.fc(pixel_values.flatten(1)[:, :16].reshape(-1, 4, 4))).real
"""


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m exporter ARGS`` in a subprocess, as a user would run it."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


# Runs each (title, code) of a card in a namespace of its own, in one Python (a Python each would only
# add start-ups); the first that fails ends it with its title, code and traceback.
_SNIPPET_RUNNER = ("import contextlib, io, json, sys, traceback\nfor title, code in json.load(sys.stdin):\n    try:\n"
                   "        with contextlib.redirect_stdout(io.StringIO()):  # what a snippet prints is its own\n"
                   "            exec(compile(code, title, 'exec'), {'__name__': '__main__'})\n    except Exception:\n"
                   "        sys.exit(f'{title}:\\n{code}\\n{traceback.format_exc()}')\n    print(title)\n")


def run_card_snippets(build: Path, cwd: Path, skip: tuple[str, ...] = ("optimum",)) -> list[str]:
    """Every ```python block of the build's card, as printed, run in the build folder; the titles of
    those run (``## Load onnx`` -> ``onnx``; a runtime block by the package it imports). Blocks
    importing a package in ``skip`` are left out (Optimum cannot be installed beside transformers 5)."""
    import json
    import re

    card = run_cli("card", str(build), cwd=cwd)
    assert card.returncode == 0, card.stderr
    blocks = []
    for section, body in re.findall(r"^## (.*?)\n(.*?)(?=^## |\Z)", card.stdout, re.S | re.M):
        for code in re.findall(r"```python\n(.*?)```", body, re.S):
            package = next((p for p in ("onnxruntime_genai", "optimum", "transformers")
                            if re.search(rf"^(?:import|from) {p}\b", code, re.M)), None)
            if package in skip:
                continue
            blocks.append((section.removeprefix("Load ") if section.startswith("Load ") else package, code))
    done = subprocess.run([sys.executable, "-c", _SNIPPET_RUNNER], input=json.dumps(blocks), cwd=build,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (build.name, done.stderr[-3000:])
    return done.stdout.split()


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll an event (a file appearing, an inode changing), not a clock."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended before the event: {proc.communicate()}"
        assert time.monotonic() < deadline, "the event never happened"
        time.sleep(0.002)


# What --help, --cfg, config errors and an up-to-date build must answer without importing.
HEAVY = {"torch", "onnx", "onnxruntime", "transformers"}


def run_cli_noting_imports(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """run_cli, and the top-level packages the process imported (from Python's -X importtime, so
    through the real entry point, exit included); stderr keeps the tool's own lines only."""
    r = run_cli(*args, cwd=cwd, env={"PYTHONPROFILEIMPORTTIME": "1"})
    timings = [line for line in r.stderr.splitlines() if line.startswith("import time:")]
    r.stderr = "".join(line + "\n" for line in r.stderr.splitlines() if not line.startswith("import time:"))
    return r, {line.rsplit("|", 1)[1].strip().split(".")[0] for line in timings[1:]}


# ---------------------------------------------------------------- golden builds
# The same few builds are what many tests start from: each is made once per session (pytest-xdist:
# once per worker that needs it), by a real `python -m exporter` run. A test that reads one uses the
# folder as it is; a test that changes or rebuilds it works on a copy (Golden.copy) in its tmp_path.
GOLDEN_SMALL = "task_spec.input_schema.image_size=[3,32,32]"
GOLDEN_BUILDS = {
    "onnx": (GOLDEN_SMALL,),
    "pytorch": (GOLDEN_SMALL, "format=pytorch"),
    "onnx+pytorch": (GOLDEN_SMALL, "format=[onnx,pytorch]"),
    "onnx+torchscript+pytorch": (GOLDEN_SMALL, "format=[onnx,torchscript,pytorch]"),
    "onnx opset 17": (GOLDEN_SMALL, "format.onnx.opset=17"),
}


class Golden:
    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        """The build folder of GOLDEN_BUILDS[name], built on first use: read it, never change it."""
        if name not in self._built:
            project = self.root / name
            project.mkdir()
            r = run_cli(*GOLDEN_BUILDS[name], "hydra.run.dir=b", cwd=project)
            assert r.returncode == 0, r.stdout + r.stderr
            self._built[name] = project / "b"
        return self._built[name]

    def copy(self, name: str, to: Path) -> Path:
        """A copy of the golden build ``name`` at ``to`` (its parent folders made), for a test to change."""
        import shutil

        to.parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copytree(self(name), to, symlinks=True))


@pytest.fixture(scope="session")
def golden(tmp_path_factory) -> Golden:
    return Golden(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="session")
def help_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -m exporter --help`` run once per session, and the packages it imported."""
    return run_cli_noting_imports("--help", cwd=tmp_path_factory.mktemp("help"))


@pytest.fixture
def cli(tmp_path):
    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=kwargs.pop("cwd", tmp_path), **kwargs)

    return run


# ---------------------------------------------------------------- nothing outside tmp folders
# A file that appears in the repository during the tests was written outside a build folder (the
# tool's toolchain litter, or a test writing into the working directory): the run fails.
_CACHES = ("__pycache__", ".pytest_cache", ".egg-info", ".venv/", ".ruff_cache")


def _stray_files() -> set[str] | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    lines = {line[3:] for line in out.stdout.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in lines if not any(c in p for c in _CACHES)}


def pytest_sessionstart(session):
    session.config._stray_before = _stray_files()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_stray_before", None)
    after = _stray_files()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "files appeared in the repository during the tests (written outside a build folder): " + ", ".join(new)
        if reporter:
            reporter.write_line(message, red=True)
        session.exitstatus = 1
