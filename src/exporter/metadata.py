"""metadata.json: what was built, from what, with which tools, and how each artifact checked out."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import Any

SCHEMA_VERSION = "1.0"
METADATA_FILE = "metadata.json"
CONFIG_SNAPSHOT_FILE = "config.yaml"

_DISTRIBUTIONS = ("exporter", "torch", "onnx", "onnxruntime", "onnxscript", "hydra-core", "omegaconf", "numpy")


def environment() -> dict[str, Any]:
    """Versions of Python and of every library that shapes an artifact."""
    versions: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            versions[dist] = None
    versions["executable"] = sys.executable
    return versions


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plain(obj: Any) -> Any:
    """Dataclasses, enums and containers as plain JSON/YAML values."""
    from dataclasses import asdict, is_dataclass

    from .schema import option_value

    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return option_value(obj)
