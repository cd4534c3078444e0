"""Tied weights stored once in a legacy-exported ONNX graph.

The legacy exporter folds constants: an LM head tied to the embedding (``lm_head.weight is
wte.weight``) becomes a second, transposed initializer for its ``MatMul``, so the file holds the
embedding twice (a 124M GPT-2: 652 MB instead of 498 MB). The dynamo exporter keeps one tensor and
a ``Transpose`` node. This pass does the same to a legacy graph: an initializer that equals another
one is replaced by it, and one that equals another's transpose by a ``Transpose`` node on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Smaller initializers are left alone: the saving would not pay for a node.
MIN_ELEMENTS = 4096
# Values compared before two tensors are compared whole.
PROBES = 64


def _fingerprint(array: Any) -> tuple:
    """dtype, shape and a few values at fixed positions: equal for equal tensors, and read from a
    transposed view without copying it."""
    import numpy as np

    flat = np.linspace(0, array.size - 1, PROBES).astype(np.int64)
    return array.dtype.str, array.shape, array[np.unravel_index(flat, array.shape)].tobytes()


def store_tied_weights_once(proto: Any, folder: Path) -> dict[str, int]:
    """Replace, in ``proto`` (from ``external.load_graph``, its weights in data files under
    ``folder``), each initializer that equals another one by that one, and each that equals another's
    transpose by a ``Transpose`` node on it. The weights are compared memory-mapped, a few values
    first. Returns ``{"initializers": n, "bytes_saved": b}`` (zeros when nothing was duplicated)."""
    from onnx import helper

    from .external import external_array

    graph = proto.graph
    seen: dict[tuple, list] = {}  # fingerprint -> [(name, array)]
    replaced: dict[str, tuple[str, bool]] = {}  # name -> (kept name, transposed)
    saved = 0
    for init in graph.initializer:
        array = external_array(init, folder)
        if array is None or array.size < MIN_ELEMENTS:
            continue
        key = _fingerprint(array)
        match, transposed = _same(seen.get(key, ()), array), False
        if match is None and array.ndim == 2:
            match, transposed = _same(seen.get(_fingerprint(array.T), ()), array.T), True
        if match is not None:
            replaced[init.name] = (match, transposed)
            saved += array.nbytes
        else:
            seen.setdefault(key, []).append((init.name, array))
    if not replaced:
        return {"initializers": 0, "bytes_saved": 0}
    kept = [init for init in graph.initializer if init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    added = []
    for name, (source, transposed) in replaced.items():
        if transposed:
            added.append(helper.make_node("Transpose", [source], [name], perm=[1, 0], name=f"{name}_tied_transpose"))
        else:
            for node in graph.node:
                node.input[:] = [source if i == name else i for i in node.input]
            for output in graph.output:
                if output.name == name:  # a graph output that is an initializer: keep its name
                    added.append(helper.make_node("Identity", [source], [name], name=f"{name}_tied_identity"))
    # The new nodes read only initializers: first in the graph keeps it topologically sorted.
    nodes = added + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return {"initializers": len(replaced), "bytes_saved": saved}


def _same(candidates: Any, array: Any) -> str | None:
    """The name of the candidate whose values equal ``array``'s, if any."""
    import numpy as np

    return next((name for name, other in candidates if np.array_equal(other, array)), None)
