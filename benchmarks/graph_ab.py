"""Two or more cached decoder graphs head to head: ms per new token of a plain ONNX Runtime greedy
loop (one thread) over each, alternately, in fresh processes, nothing else in the rounds. The full
table of ``generation.py`` runs seven contenders per round, and where a graph sits in the round moves
its median by several percent; this is the A/B for "is graph X slower than graph Y".

    python benchmarks/graph_ab.py --layout BUILD/metadata.json --prompt 128 --repeat 7 \\
        tool=BUILD/model.onnx optimum=OPTIMUM_EXPORT/model.onnx

``--layout``: a tool build's metadata.json (its ``cache`` entry gives the layers and sizes of the
empty past the loop starts from; every graph must share them and the tool's input and output names,
which Optimum's export does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generation  # noqa: E402

from exporter.records.tables import markdown_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+", help="name=path/to/model.onnx")
    parser.add_argument("--layout", required=True, help="a tool build's metadata.json")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    layout = json.loads(Path(args.layout).read_text())["cache"]
    graphs = dict(item.split("=", 1) for item in args.graphs)
    prompt = [(7 * i + 3) % 500 for i in range(args.prompt)]
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(args.repeat):
        for name, path in graphs.items():
            times[name].append(generation.in_child("measure_cached", path, prompt, layout))
    base = statistics.median(times[next(iter(graphs))])
    rows = [[name, f"{statistics.median(v):.2f}", f"{statistics.median(v) / base:.3f}",
             " ".join(f"{x:.1f}" for x in v)] for name, v in times.items()]
    print(markdown_table(["graph", "ms/token (median)", "vs first", "runs"], rows))


if __name__ == "__main__":
    main()
