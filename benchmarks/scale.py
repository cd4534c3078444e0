"""Scale: export + validation time and peak RSS for GPT-2-shaped models from about 1M to 700M parameters.

Each size is saved once (random weights, seed 0) and exported by ``python -m exporter
model=hf_causal_lm format=onnx`` with each ONNX backend as a whole process: the legacy exporter
at opset 14 and the dynamo exporter at opset 18 (and, with --bare, the bare script, bare.py, doing
the same export by hand). Peak RSS is shown in GiB and as a multiple of W, the model's fp32 weight
bytes (each tied tensor once). The largest size has over 2 GB of weights: its ONNX artifact keeps
them in one data file, model.onnx.data. Prints a Markdown table; with the ``plot`` extra
(matplotlib), also writes a PNG (--png).

    python benchmarks/scale.py                          # every size, both backends (about 20 minutes)
    python benchmarks/scale.py --sizes 1M 10M 124M --png scale.png
    python benchmarks/scale.py --sizes 124M --backends default   # the job's default settings
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from measure import bare, gib, last_line, make_gpt2, run, tool

from exporter.records.tables import markdown_table

# name: (n_layer, n_embd, n_head); GPT-2's vocabulary (50257) throughout
SIZES = {
    "1M": (2, 16, 2),
    "10M": (4, 128, 4),
    "124M": (12, 768, 12),  # GPT-2
    "355M": (24, 1024, 16),  # GPT-2 medium
    "700M": (32, 1280, 20),  # over 2 GB of fp32 weights
}
BACKENDS = {
    "legacy": ["format.onnx.backend=legacy", "format.onnx.opset=14"],
    "dynamo": ["format.onnx.backend=dynamo", "format.onnx.opset=18"],
    "default": [],  # backend=auto at opset 14: legacy up to 256 MiB of weights, dynamo above
}


def measure_tool(folder: Path, backend: str, work: Path) -> dict:
    out = work / "out"
    done = run(tool(["model=hf_causal_lm", f"model.path={folder}", "format=onnx", *BACKENDS[backend]], out), cwd=work)
    result = {"wall": done.wall, "peak": done.peak, "ok": done.returncode == 0, "note": ""}
    if done.returncode:
        result["note"] = last_line(done.output)
        return result
    record = json.loads((out / "metadata.json").read_text())["artifacts"]["onnx"]
    files = [record["file"], *(f["file"] for f in record.get("extra_files") or [])]
    size = record["bytes"] + sum(f["bytes"] for f in record.get("extra_files") or [])
    result["note"] = (f"{' + '.join(files)}, {size / 2**30:.2f} GiB, {record['details']['backend']} exporter, "
                      f"max|diff| {record['validation']['max_abs_diff']:.1e}")
    shutil.rmtree(out)
    return result


def measure_bare(folder: Path, backend: str, work: Path) -> dict:
    out = work / "bare"
    if backend == "default":
        return {"wall": 0.0, "peak": 0, "ok": False, "note": "no bare script for backend=auto"}
    done = run(bare(f"hf:{folder}", f"onnx-{backend}", out), cwd=work)
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": done.wall, "peak": done.peak, "ok": done.returncode == 0,
            "note": "" if done.returncode == 0 else last_line(done.output)}


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--png {path}: needs matplotlib: pip install '.[plot]'")
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for who in sorted({r["who"] for r in rows}):
        mine = [r for r in rows if r["who"] == who and r["ok"]]
        params = [r["params"] for r in mine]
        left.plot(params, [r["wall"] for r in mine], marker="o", label=who)
        right.plot(params, [r["peak"] / r["W"] for r in mine], marker="o", label=who)
    for axis, label in ((left, "wall s (whole process)"), (right, "peak RSS / W")):
        axis.set_xscale("log")
        axis.set_xlabel("parameters")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    right.set_yscale("log")
    figure.suptitle("GPT-2-shaped models, ONNX export + validation (whole processes)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--backends", nargs="+", default=["legacy", "dynamo"], choices=list(BACKENDS),
                        help="default: the job's default settings (backend=auto)")
    parser.add_argument("--bare", action="store_true", help="also the bare script, per backend")
    parser.add_argument("--png", type=Path, help="write a plot here (needs the plot extra)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            folder = Path(scratch) / size
            params = make_gpt2(folder, *SIZES[size])
            weights = params * 4
            for backend in args.backends:
                runners = [(f"exporter {backend}", measure_tool)] + ([(f"bare {backend}", measure_bare)] if args.bare else [])
                for who, measure in runners:
                    with tempfile.TemporaryDirectory() as work:
                        result = measure(folder, backend, Path(work))
                    rows.append({"size": size, "params": params, "W": weights, "who": who, **result})
            shutil.rmtree(folder)
    table = [[r["size"], f"{r['params'] / 1e6:.1f}M", gib(r["W"]), r["who"], f"{r['wall']:.1f}", gib(r["peak"]),
              f"{r['peak'] / r['W']:.2f}", r["note"] if r["ok"] else f"failed: {r['note']}"] for r in rows]
    print(markdown_table(["size", "parameters", "W (fp32)", "run", "wall s", "peak RSS", "peak / W", "artifact"], table))
    if args.png:
        plot(rows, args.png)


if __name__ == "__main__":
    main()
