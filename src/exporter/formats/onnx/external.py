"""ONNX files over the 2 GB protobuf limit: weights in one data file beside the graph.

A protobuf message cannot exceed 2 GiB, so a model with more weight bytes than that keeps its
tensors outside ``model.onnx``. The legacy exporter then writes one file per tensor (a 760M model:
103 files); the dynamo exporter one file. Either way the job leaves exactly one, ``<file>.data``
(``model.onnx.data``), recorded and hashed in metadata.json under the artifact's ``extra_files``.

Above which size weights go outside is an internal setting, the environment variable
``EXPORTER_ONNX_EXTERNAL_DATA_BYTES`` (default 1.8 GiB, below the limit to leave room for the graph
itself); the tests lower it to take this path with a small model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

THRESHOLD_ENV = "EXPORTER_ONNX_EXTERNAL_DATA_BYTES"
DEFAULT_THRESHOLD = int(1.8 * 2**30)
# Tensors smaller than this stay inside the graph (shapes, small constants): ONNX's own default.
INLINE_BELOW = 1024


def threshold() -> int:
    """Weight bytes above which an ONNX artifact keeps its weights in a data file."""
    return _bytes_setting(THRESHOLD_ENV, DEFAULT_THRESHOLD)


AUTO_DYNAMO_ENV = "EXPORTER_ONNX_AUTO_DYNAMO_BYTES"
DEFAULT_AUTO_DYNAMO = 2**30


def auto_dynamo_bytes() -> int:
    """Weight bytes above which ``backend=auto`` picks the dynamo exporter below opset 18 (internal
    setting ``EXPORTER_ONNX_AUTO_DYNAMO_BYTES``, default 1 GiB): the legacy exporter serializes the
    whole graph in memory, the dynamo one does not."""
    return _bytes_setting(AUTO_DYNAMO_ENV, DEFAULT_AUTO_DYNAMO)


def _bytes_setting(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"{name}: expected a number of bytes, got {raw!r}") from None


def weight_bytes(module: Any) -> int:
    """Bytes of the module's parameters and buffers, each tensor counted once (tied weights once)."""
    seen: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        seen.setdefault(id(tensor), tensor.numel() * tensor.element_size())
    return sum(seen.values())


def data_file(path: Path) -> Path:
    """The one data file of the ONNX file at ``path``: ``model.onnx`` -> ``model.onnx.data``."""
    return path.with_name(path.name + ".data")


def has_external_data(proto: Any) -> bool:
    """Whether a model (loaded with ``load_external_data=False``) keeps tensors in other files."""
    import onnx

    return any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)


def save(model: Any, path: Path, external: bool) -> None:
    """Save ``model`` at ``path``, its weights in ``<path>.data`` when ``external``; nothing else
    is left beside it (the per-tensor files of an earlier save are removed)."""
    import onnx

    data = data_file(path)
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=INLINE_BELOW, convert_attribute=False)
    else:
        onnx.save_model(model, str(path))
    _remove_strays(path)


def into_one_data_file(path: Path) -> None:
    """Leave an ONNX file whose weights are outside it with exactly one data file, ``<path>.data``:
    rewritten when an exporter or quantizer left another layout (one file per tensor, ...)."""
    import onnx

    if {item.name for item in path.parent.iterdir()} != {path.name, data_file(path).name}:
        save(onnx.load(str(path)), path, external=True)


def _remove_strays(path: Path) -> None:
    """Files an exporter left beside the graph besides the graph and its data file (the work
    folder holds this artifact alone, so anything else is such a file)."""
    keep = {path.name, data_file(path).name}
    for item in path.parent.iterdir():
        if item.name not in keep and item.is_file():
            item.unlink()
