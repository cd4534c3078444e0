"""Where an ONNX artifact's weights live, and writing them without holding them in memory.

After export the job works on the graph alone (``load_graph``), the weights left in files, and
writes the artifact at the end by streaming each weight from file to file (``write``): inside a
self-contained ``model.onnx``, or, over the 2 GB protobuf limit, in one data file beside it.

A protobuf message cannot exceed 2 GiB, so a model with more weight bytes than that keeps its
tensors outside ``model.onnx``. The legacy exporter then writes one file per tensor (a 760M model:
103 files); the dynamo exporter one file. Either way the job leaves exactly one, ``<file>.data``
(``model.onnx.data``), recorded and hashed in metadata.json under the artifact's ``extra_files``.

Smaller models get a data file too from 256 MiB of weights (``format.onnx.external_data=null``):
ONNX Runtime maps a data file but reads a self-contained file whole before building its tensors
(a 124M GPT-2: 0.98 GB against 0.70 GB for the session). That size is an internal setting, the
environment variable ``EXPORTER_ONNX_EXTERNAL_DATA_BYTES``; the tests lower it to take this path
with a small model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...config import environment as settings

THRESHOLD_ENV = settings.ONNX_EXTERNAL_DATA_BYTES
DEFAULT_THRESHOLD = 256 * 2**20
# Above this a self-contained file is impossible (2 GiB per protobuf message, with room for the graph).
INLINE_LIMIT = int(1.8 * 2**30)
# Tensors smaller than this stay inside the graph (shapes, small constants): ONNX's own default.
INLINE_BELOW = 1024


def threshold() -> int:
    """Weight bytes above which an ONNX artifact keeps its weights in a data file
    (``format.onnx.external_data=null``)."""
    return settings.bytes_setting(THRESHOLD_ENV, DEFAULT_THRESHOLD)


AUTO_DYNAMO_ENV = settings.ONNX_AUTO_DYNAMO_BYTES
# Where the legacy exporter cannot write its weights to a file (deferred.py: another torch), it holds
# the whole serialized model in memory: a 124M GPT-2 (475 MiB) peaked at 5.8x its weights through it
# and 3.8x through the dynamo one (docs/performance.md); below this the legacy one's speed wins.
DEFAULT_AUTO_DYNAMO = 256 * 2**20


def auto_dynamo_bytes(streamed: bool) -> "int | None":
    """Weight bytes above which ``backend=auto`` picks the dynamo exporter below opset 18 (internal
    setting ``EXPORTER_ONNX_AUTO_DYNAMO_BYTES``); None: never. By default never when the legacy
    exporter writes its weights straight to a file (``streamed``, deferred.py), else 256 MiB."""
    import os

    if AUTO_DYNAMO_ENV not in os.environ and streamed:
        return None
    return settings.bytes_setting(AUTO_DYNAMO_ENV, DEFAULT_AUTO_DYNAMO)


def weight_bytes(module: Any) -> int:
    """Bytes of the module's parameters and buffers, each tensor counted once (tied weights once)."""
    seen: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        seen.setdefault(id(tensor), tensor.numel() * tensor.element_size())
    return sum(seen.values())


def data_file(path: Path) -> Path:
    """The one data file of the ONNX file at ``path``: ``model.onnx`` -> ``model.onnx.data``."""
    return path.with_name(path.name + ".data")


def save(model: Any, path: Path, external: bool) -> None:
    """Save ``model`` (held in memory) at ``path``, its weights in ``<path>.data`` when
    ``external``; nothing else is left beside it (the per-tensor files of an earlier save are removed)."""
    import onnx

    data = data_file(path)
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=INLINE_BELOW, convert_attribute=False)
    else:
        onnx.save_model(model, str(path))
    _remove_strays(path, keep_data=external)


def load_graph(path: Path) -> Any:
    """The ONNX model at ``path`` with its weights out of memory: every initializer of
    ``INLINE_BELOW`` bytes or more refers to a data file beside it.

    Weights an exporter wrote inline (the legacy one, under 2 GB) are referred to where they lie,
    inside ``path`` itself: the file is scanned, not parsed whole, so that what follows (tied
    weights, tags, the checker) works on the graph alone and ``write`` streams the weights into the
    artifact. The weights are never held as a protobuf and its serialized copy at once, which is
    what made a save cost three times their size.
    """
    import onnx

    scanned = _refer_to_inline_weights(path)
    if scanned is not None:
        return scanned
    # A layout the scan does not take (never seen from torch): stage the weights with onnx instead.
    proto = onnx.load(str(path), load_external_data=False)
    if not any(_inline_bytes(init) >= INLINE_BELOW for init in proto.graph.initializer):
        return proto
    staging = path.with_name(path.name + STAGING_SUFFIX)
    staging.unlink(missing_ok=True)
    # onnx writes one tensor at a time and clears it from the message.
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=staging.name, size_threshold=INLINE_BELOW, convert_attribute=False)
    del proto  # the emptied message still holds the arena its weights were parsed into
    return onnx.load(str(path), load_external_data=False)


def _refer_to_inline_weights(path: Path) -> Any:
    """The model at ``path`` parsed without its large inline weights, each initializer's
    ``raw_data`` of ``INLINE_BELOW`` bytes or more replaced by a reference to its place in
    ``path`` (offset and length). Reads the protobuf framing only: ModelProto.graph (field 7),
    GraphProto.initializer (5), TensorProto.raw_data (9). None for a layout it does not take."""
    import mmap

    import onnx

    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            model_rest, graphs = _split(data, 0, len(data), _GRAPH)
            if len(graphs) != 1:
                return None
            graph_rest, initializers = _split(data, *graphs[0], _INITIALIZER)
            tensors = []
            for start, end in initializers:
                tensor_rest, raws = _split(data, start, end, _RAW_DATA)
                if len(raws) != 1 or raws[0][1] - raws[0][0] < INLINE_BELOW:
                    tensors.append(onnx.TensorProto.FromString(data[start:end]))
                    continue
                tensor = onnx.TensorProto.FromString(bytes(tensor_rest))
                _refer(tensor, path.name, raws[0][0], raws[0][1] - raws[0][0])
                tensors.append(tensor)
            model = onnx.ModelProto.FromString(bytes(model_rest))
            graph = onnx.GraphProto.FromString(bytes(graph_rest))
        except Exception:  # noqa: BLE001 - any surprise: onnx's own way
            return None
    graph.initializer.extend(tensors)
    model.graph.CopyFrom(graph)
    return model


def _split(data: Any, start: int, end: int, field: int) -> tuple[bytearray, list[tuple[int, int]]]:
    """The fields of the message in ``data[start:end]``: every field but ``field`` re-framed into
    a bytearray, and where each ``field`` value (length-delimited) starts and ends."""
    rest, found = bytearray(), []
    pos = start
    while pos < end:
        tag_start = pos
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if number == field:
                found.append((pos, pos + length))
                pos += length
                continue
            pos += length
        else:
            raise ValueError(f"wire type {wire}")
        rest += data[tag_start:pos]
    if pos != end:
        raise ValueError("a field runs past its message")
    return rest, found


def _read_varint(data: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7

# Where load_graph stages weights that an exporter wrote inline.
STAGING_SUFFIX = ".staged-weights"


def external_array(init: Any, folder: Path) -> Any:
    """A read-only, memory-mapped numpy view of an initializer kept in a data file under
    ``folder``; None for an inline one or a type numpy cannot map."""
    import numpy as np
    import onnx
    from onnx import helper

    if init.data_location != onnx.TensorProto.EXTERNAL:
        return None
    info = _external_info(init, folder)
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
    except (KeyError, TypeError, ValueError):
        return None
    if dtype.itemsize * int(np.prod(init.dims, dtype=np.int64)) != info["length"]:
        return None
    return np.memmap(info["file"], dtype=dtype, mode="r", offset=info["offset"], shape=tuple(init.dims))


def write(proto: Any, path: Path, external: bool) -> None:
    """Write ``proto`` (from ``load_graph``, its weights in data files beside ``path``) as the
    artifact at ``path``: its weights in one data file, ``<path>.data``, when ``external``, else
    inside ``model.onnx``. The weights are copied from file to file in chunks, never held in memory;
    afterwards the folder holds ``path`` and its data file only.

    A self-contained file is framed by hand: the model without its graph, then the graph field
    with its initializers written one by one, each a tensor header followed by its bytes. Protobuf
    parsers accept fields in any order, so this is the same message ``onnx.save`` would write for
    the same content (its fields ordered differently), and always the same bytes for the same model.
    """
    import onnx

    folder = path.parent
    if _external_outside_initializers(proto):
        # A tensor in a node attribute or a subgraph kept outside: rare enough to take onnx's way.
        onnx.load_external_data_for_model(proto, str(folder))
        save(proto, path, external)
        return
    if external:
        _write_external(proto, path)
    else:
        _write_inline(proto, path)
    _remove_strays(path, keep_data=external)


CHUNK = 16 * 2**20


def _write_external(proto: Any, path: Path) -> None:
    import onnx

    folder = path.parent
    data = data_file(path)
    partial = data.with_name(data.name + ".partial")  # the source may be data itself
    moves = []
    with partial.open("wb") as out:
        for init in proto.graph.initializer:
            if init.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = _external_info(init, folder)
            offset = out.tell()
            _copy(info, out)
            moves.append((init, offset, info["length"]))
    os.replace(partial, data)
    for init, offset, length in moves:
        _refer(init, data.name, offset, length)
    path.write_bytes(proto.SerializeToString())


def _write_inline(proto: Any, path: Path) -> None:
    import onnx

    folder = path.parent
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    model.ClearField("graph")
    graph = onnx.GraphProto()
    graph.CopyFrom(proto.graph)
    graph.ClearField("initializer")
    # (serialized tensor without its data, external info or None)
    parts = []
    for init in proto.graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            parts.append((init.SerializeToString(), None))
            continue
        info = _external_info(init, folder)
        header = onnx.TensorProto()
        header.CopyFrom(init)
        header.ClearField("external_data")
        header.ClearField("data_location")
        header.ClearField("raw_data")
        parts.append((header.SerializeToString(), info))

    def tensor_size(header: bytes, info: dict | None) -> int:
        return len(header) + (0 if info is None else _field_size(_RAW_DATA, info["length"]))

    graph_bytes = graph.SerializeToString()
    graph_size = len(graph_bytes) + sum(_field_size(_INITIALIZER, tensor_size(h, i)) for h, i in parts)
    if graph_size >= 2**31:
        raise ValueError(f"{path.name}: {graph_size} bytes of graph do not fit in one protobuf (2 GiB); "
                         "its weights must go in a data file")
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        out.write(model.SerializeToString())
        out.write(_tag(_GRAPH) + _varint(graph_size) + graph_bytes)
        for header, info in parts:
            out.write(_tag(_INITIALIZER) + _varint(tensor_size(header, info)) + header)
            if info is not None:
                out.write(_tag(_RAW_DATA) + _varint(info["length"]))
                _copy(info, out)
    os.replace(partial, path)


# Field numbers in onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data.
_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9


def _tag(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_size(field: int, length: int) -> int:
    return len(_tag(field)) + len(_varint(length)) + length


def _refer(tensor: Any, location: str, offset: int, length: int) -> None:
    """Point ``tensor`` at ``length`` bytes of ``location`` from ``offset`` (onnx's own
    set_external_data insists on the bytes being in the message first)."""
    import onnx

    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _external_info(init: Any, folder: Path) -> dict:
    entries = {e.key: e.value for e in init.external_data}
    file = (folder / entries["location"]).resolve()
    if folder.resolve() not in file.parents:
        raise ValueError(f"initializer {init.name!r}: its data file {entries['location']!r} is outside {folder}")
    offset = int(entries.get("offset") or 0)
    length = int(entries["length"]) if entries.get("length") else file.stat().st_size - offset
    return {"file": file, "offset": offset, "length": length}


def _copy(info: dict, out: Any) -> None:
    with open(info["file"], "rb") as source:
        source.seek(info["offset"])
        left = info["length"]
        while left:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise ValueError(f"{info['file'].name}: ends before the {info['length']} bytes of a tensor at offset "
                                 f"{info['offset']}")
            out.write(chunk)
            left -= len(chunk)


def _inline_bytes(init: Any) -> int:
    import onnx

    return init.ByteSize() if init.data_location != onnx.TensorProto.EXTERNAL else 0


def _external_outside_initializers(proto: Any) -> bool:
    """Whether a tensor besides the graph's initializers (in a node attribute, a subgraph or a
    function) is kept in a data file."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    def external_count(tensors) -> int:
        return sum(1 for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL)

    return external_count(_get_all_tensors(proto)) != external_count(proto.graph.initializer)


def into_one_data_file(path: Path) -> None:
    """Leave an ONNX file whose weights are outside it with exactly one data file, ``<path>.data``:
    rewritten, a chunk at a time, when an exporter or quantizer left another layout (one file per
    tensor, ...)."""
    import onnx

    if {item.name for item in path.parent.iterdir()} != {path.name, data_file(path).name}:
        write(onnx.load(str(path), load_external_data=False), path, external=True)


def _remove_strays(path: Path, keep_data: bool) -> None:
    """Files an exporter left beside the graph besides the graph and its data file (the work
    folder holds this artifact alone, so anything else is such a file)."""
    keep = {path.name} | ({data_file(path).name} if keep_data else set())
    for item in path.parent.iterdir():
        if item.name not in keep and item.is_file():
            item.unlink()
