"""The legacy exporter with its weights written straight to a data file.

Left to itself, torch's legacy (TorchScript-based) exporter builds the whole model as one protobuf
in memory, serializes it, copies the bytes into Python and parses them once more: a 124M GPT-2
(475 MiB of weights) peaked at 2.75 GiB, 5.8x its weights. Its C++ encoder can instead leave each
weight out of the protobuf ("deferred weight export", a placeholder ``__EXTERNAL`` in the tensor)
and hand the weights back by name; torch never turns that on itself. ``weights_beside`` turns it on
for one export and writes the weights, one at a time, into ``<file>.data`` with the graph referring
to them, the layout the dynamo exporter leaves, so the rest of the job (``external.py``) is the same
for both exporters.

This reaches into two internals of torch (``torch._C.Graph._export_onnx``'s fourth argument and
``onnx_proto_utils._export_file``); where they are not as expected (another torch), nothing is
changed and the export is the plain one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from pathlib import Path
from typing import Any, Iterator, Mapping

from .external import INLINE_BELOW, data_file

PLACEHOLDER = b"__EXTERNAL"
ALIGN = 4096  # offsets of large tensors, as onnx aligns them (memory-mappable pages)


@functools.cache
def weights_streamable() -> bool:
    """Whether torch's internals are the ones ``weights_beside`` knows (its legacy exporter can
    write its weights to a file)."""
    import inspect

    import torch

    try:
        utils = importlib.import_module("torch.onnx._internal.torchscript_exporter.utils")
        source = inspect.getsource(utils._export)
    except (ImportError, AttributeError, OSError, TypeError):
        return False
    return (callable(getattr(getattr(torch._C, "Graph", None), "_export_onnx", None))
            and callable(getattr(utils.onnx_proto_utils, "_export_file", None))
            and "defer_weight_export = False" in source and "_export_file(proto, f, export_map)" in source)


@contextlib.contextmanager
def weights_beside() -> Iterator[bool]:
    """Within this block a legacy ``torch.onnx.export(..., f=<path>)`` writes the graph to ``path``
    and its weights to ``<path>.data``. Yields whether that is in effect (False: torch's internals
    are not the ones this module knows, and the export is the plain one)."""
    import torch

    if not weights_streamable():
        yield False
        return
    graph = torch._C.Graph
    proto_utils = importlib.import_module("torch.onnx._internal.torchscript_exporter.utils").onnx_proto_utils
    original_export, original_file = graph._export_onnx, proto_utils._export_file

    def export_onnx(self: Any, *args: Any) -> Any:
        if len(args) >= 4 and args[3] is False and args[0]:  # params, opset, axes, defer_weight_export, ...
            args = (*args[:3], True, *args[4:])
        return original_export(self, *args)

    def export_file(model_bytes: bytes, f: Any, export_map: Mapping[str, bytes]) -> None:
        if not export_map:
            return original_file(model_bytes, f, export_map)
        if not isinstance(f, (str, Path)):
            raise RuntimeError("deferred weights need a file path to write beside")
        write_with_data(model_bytes, Path(f), dict(export_map))

    graph._export_onnx = export_onnx
    proto_utils._export_file = export_file
    try:
        yield True
    finally:
        graph._export_onnx = original_export
        proto_utils._export_file = original_file


def write_with_data(model_bytes: bytes, path: Path, weights: dict[str, bytes]) -> None:
    """Write the graph (``model_bytes``, its initializers holding the placeholder) to ``path`` and
    each weight to ``<path>.data``, dropping each from ``weights`` once written."""
    import onnx

    model = onnx.load_model_from_string(model_bytes)
    data = data_file(path)
    with data.open("wb") as out:
        for tensor in model.graph.initializer:
            if tensor.raw_data != PLACEHOLDER:
                continue
            raw = weights.pop(tensor.name)
            if len(raw) < INLINE_BELOW:
                tensor.raw_data = raw
                continue
            offset = out.tell()
            if offset % ALIGN:
                out.write(b"\0" * (ALIGN - offset % ALIGN))
                offset = out.tell()
            out.write(raw)
            del raw
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(out.tell() - offset))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    if weights:
        raise RuntimeError(f"deferred weights not found among the graph's initializers: {sorted(weights)[:3]}")
    path.write_bytes(model.SerializeToString())
