"""A six-job sweep against six bare scripts (bare.py) doing the same exports one after another.

The sweep is one ``python -m exporter -m model=simple_cnn,lm_stub format=onnx,torchscript,pytorch``
command (Hydra's basic launcher: each job runs in a process forked from the sweep's, which imports
what the jobs need once); the bare side is six processes, each paying its own imports. Wall: the
sweep's against the six summed; peak RSS: the sweep's (the kernel's high-water mark of the sweep's
process and of every job process it reaped, whichever is highest) against the largest of the six.
Paired runs, --repeat times, medians.

    python benchmarks/sweep_vs_bare.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from measure import bare, gib, last_line, median, run

from exporter.records.tables import markdown_table

MODELS = ["simple_cnn", "lm_stub"]
FORMATS = {"onnx": "onnx-legacy", "torchscript": "torchscript", "pytorch": "pytorch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sweep = [sys.executable, "-m", "exporter", "-m", f"model={','.join(MODELS)}", f"format={','.join(FORMATS)}"]
    sweeps, bares = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as folder:
            done = run(sweep, cwd=Path(folder))
            if done.returncode != 0:
                raise SystemExit(f"the sweep failed: {last_line(done.output)}")
            sweeps.append(done)
        with tempfile.TemporaryDirectory() as folder:
            runs = [run(bare(model, fmt, Path(folder) / f"{model}-{fmt}"), cwd=Path(folder))
                    for model in MODELS for fmt in FORMATS.values()]
            if any(r.returncode for r in runs):
                raise SystemExit(f"a bare script failed: {last_line(next(r for r in runs if r.returncode).output)}")
            bares.append((sum(r.wall for r in runs), max(r.peak for r in runs)))
    sw, sp = median([r.wall for r in sweeps]), median([r.peak for r in sweeps])
    bw, bp = median([w for w, _ in bares]), median([p for _, p in bares])
    rows = [["six-job sweep (one command)", f"{sw:.1f}", gib(sp)],
            ["six bare scripts (six processes)", f"{bw:.1f}", gib(bp)],
            ["ratio sweep/bare", f"{sw / bw:.2f}", f"{sp / bp:.2f}"]]
    print(markdown_table(["run", "wall s", "peak RSS"], rows))


if __name__ == "__main__":
    main()
