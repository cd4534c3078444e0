"""Tied weights stored once in a legacy-exported ONNX graph.

The legacy exporter folds constants: an LM head tied to the embedding (``lm_head.weight is
wte.weight``) becomes a second, transposed initializer for its ``MatMul``, so the file holds the
embedding twice (a 124M GPT-2: 652 MB instead of 498 MB). The dynamo exporter keeps one tensor and
a ``Transpose`` node. This pass does the same to a legacy graph: an initializer that equals another
one is replaced by it, and one that equals another's transpose by a ``Transpose`` node on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

# Smaller initializers are left alone: the saving would not pay for a node.
MIN_ELEMENTS = 4096


def _digest(array: Any) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def store_tied_weights_once(path: Path, external: bool = False) -> dict[str, int]:
    """Rewrite the ONNX file at ``path`` with duplicated and transposed-duplicate initializers
    stored once (its weights in one data file beside it when ``external``). Returns what was done:
    ``{"initializers": n, "bytes_saved": b}`` (zeros when nothing was duplicated; the file is then
    left untouched)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    # Initializers by content, and 2-D ones also by the content of their transpose.
    seen: dict[tuple, str] = {}
    replaced: dict[str, tuple[str, bool]] = {}  # name -> (kept name, transposed)
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.size < MIN_ELEMENTS:
            continue
        key = (array.dtype.str, array.shape, _digest(array))
        if key in seen:
            replaced[init.name] = (seen[key], False)
            continue
        if array.ndim == 2:
            transposed = np.ascontiguousarray(array.T)
            tkey = (array.dtype.str, transposed.shape, _digest(transposed))
            if tkey in seen:
                replaced[init.name] = (seen[tkey], True)
                continue
        seen[key] = init.name
    if not replaced:
        return {"initializers": 0, "bytes_saved": 0}
    saved = 0
    kept = []
    for init in graph.initializer:
        if init.name in replaced:
            saved += len(init.raw_data) or numpy_helper.to_array(init).nbytes
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    transposes = []
    for name, (source, transposed) in replaced.items():
        if transposed:
            transposes.append(helper.make_node("Transpose", [source], [name], perm=[1, 0], name=f"{name}_tied_transpose"))
        else:
            for node in graph.node:
                node.input[:] = [source if i == name else i for i in node.input]
            for output in graph.output:
                if output.name == name:  # a graph output that is an initializer: keep its name
                    transposes.append(helper.make_node("Identity", [source], [name], name=f"{name}_tied_identity"))
    # The new nodes read only initializers: first in the graph keeps it topologically sorted.
    nodes = transposes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    from .external import save

    save(model, path, external)
    return {"initializers": len(replaced), "bytes_saved": saved}
