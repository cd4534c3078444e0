"""The tool against a bare script doing the same export by hand (bare.py), per model and format.

Each pair runs as two whole processes, alternately, --repeat times: ``python -m exporter ...``
(export, load back, compare at the example and at a second shape, tags, metadata, the staged
publish) and ``python benchmarks/bare.py ...`` (export, load back once, compare once, a small
metadata.json). The table shows the medians and the ratios tool/bare of wall time and peak RSS.

    python benchmarks/vs_bare.py                          # simple_cnn and lm_stub, every format
    python benchmarks/vs_bare.py --gpt2 /tmp/gpt2 --formats onnx-legacy onnx-dynamo --repeat 1
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from measure import bare, gib, last_line, median, run, tool

from exporter.records.tables import markdown_table

FORMAT_ARGS = {
    "onnx-legacy": ["format=onnx", "format.onnx.backend=legacy"],
    "onnx-dynamo": ["format=onnx", "format.onnx.opset=18", "format.onnx.backend=dynamo"],
    "torchscript": ["format=torchscript"],
    "pytorch": ["format=pytorch"],
}


def model_args(model: str) -> list[str]:
    if model.startswith("hf:"):
        return ["model=hf_causal_lm", f"model.path={model[3:]}"]
    return [f"model={model}"]


def pair(model: str, fmt: str, repeat: int) -> list[str]:
    tool_runs, bare_runs = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            tool_runs.append(run(tool([*model_args(model), *FORMAT_ARGS[fmt]], Path(a) / "out"), cwd=Path(a)))
            bare_runs.append(run(bare(model, fmt, Path(b) / "out"), cwd=Path(b)))
    failed = [r for r in tool_runs + bare_runs if r.returncode != 0]
    if failed:
        return [model, fmt, "-", "-", "-", "-", "-", "-", f"failed: {last_line(failed[0].output)}"]
    tw, bw = median([r.wall for r in tool_runs]), median([r.wall for r in bare_runs])
    tp, bp = median([r.peak for r in tool_runs]), median([r.peak for r in bare_runs])
    return [model, fmt, f"{tw:.1f}", f"{bw:.1f}", f"{tw / bw:.2f}", gib(tp), gib(bp), f"{tp / bp:.2f}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["simple_cnn", "lm_stub"], help="shipped models (none: --gpt2 alone)")
    parser.add_argument("--gpt2", help="also a GPT-2 folder saved with save_pretrained (model=hf_causal_lm)")
    parser.add_argument("--formats", nargs="+", default=list(FORMAT_ARGS), choices=list(FORMAT_ARGS))
    args = parser.parse_args()
    models = args.models + ([f"hf:{args.gpt2}"] if args.gpt2 else [])
    rows = [pair(model, fmt, args.repeat) for model in models for fmt in args.formats]
    headers = ["model", "format", "tool s", "bare s", "wall ratio", "tool peak", "bare peak", "RSS ratio", "note"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
