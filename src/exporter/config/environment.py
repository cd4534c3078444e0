"""Internal settings read from the environment: sizes that tests and benchmarks lower to reach a
large-model path with a small model (documented in docs/performance.md, not part of the config).

A build's output depends on them, so the ones set are recorded with its build key
(``build_key_inputs.settings`` in metadata.json) and ``exporter verify`` rebuilds under the same.

>>> sorted(SETTINGS)
['EXPORTER_ONNX_AUTO_DYNAMO_BYTES', 'EXPORTER_ONNX_EXTERNAL_DATA_BYTES']
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

# Weight bytes above which an ONNX artifact keeps its weights in model.onnx.data (external_data=null).
ONNX_EXTERNAL_DATA_BYTES = "EXPORTER_ONNX_EXTERNAL_DATA_BYTES"
# Weight bytes above which format.onnx.backend=auto picks the dynamo exporter below opset 18.
ONNX_AUTO_DYNAMO_BYTES = "EXPORTER_ONNX_AUTO_DYNAMO_BYTES"
SETTINGS = (ONNX_EXTERNAL_DATA_BYTES, ONNX_AUTO_DYNAMO_BYTES)


def bytes_setting(name: str, default: int) -> int:
    """The setting's value in bytes, or ``default`` where it is not set."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"{name}: expected a number of bytes, got {raw!r}") from None


def current() -> dict[str, str]:
    """The settings this process has, by name (empty where every one is at its default)."""
    return {name: os.environ[name] for name in SETTINGS if name in os.environ}


@contextmanager
def applied(settings: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``settings`` for the duration (the others unset), then this process's own again."""
    saved = current()
    for name in SETTINGS:
        os.environ.pop(name, None)
    os.environ.update({name: str(value) for name, value in settings.items() if name in SETTINGS})
    try:
        yield
    finally:
        for name in SETTINGS:
            os.environ.pop(name, None)
        os.environ.update(saved)
