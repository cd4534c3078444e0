"""Shared fixtures: small real models and task specs, and a runner for the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m exporter ARGS`` in a subprocess, as a user would run it."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=kwargs.pop("cwd", tmp_path), **kwargs)

    return run
