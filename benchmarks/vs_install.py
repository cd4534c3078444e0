"""The tool against another install of itself (an earlier commit, say): the same jobs, alternately.

For a change that should not cost anything (a refactoring), the two sides run each job as whole
processes, one after the other, --repeat times: single runs of the shipped models in every format
(what benchmarks/vs_bare.py runs) and the six-job sweep of benchmarks/sweep_vs_bare.py. The table
shows medians of wall time and peak RSS and the ratios this install / the other.

    git worktree add /tmp/before <commit>          # the other install: a Python whose exporter is it
    python benchmarks/vs_install.py --other-python /path/to/before/venv/bin/python --repeat 7
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from measure import gib, last_line, median, run, tool
from vs_bare import FORMAT_ARGS

from exporter.records.tables import markdown_table

SWEEP = ["-m", "model=simple_cnn,lm_stub", "format=onnx,torchscript,pytorch"]


def job(python: str, args: list[str], sweep: bool):
    with tempfile.TemporaryDirectory() as folder:
        command = [python, "-m", "exporter", *args] if sweep else tool(args, Path(folder) / "out", python)
        done = run(command, cwd=Path(folder))
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {last_line(done.output)}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other-python", required=True, help="a Python whose `-m exporter` is the other install")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=["simple_cnn", "lm_stub"])
    parser.add_argument("--formats", nargs="+", default=list(FORMAT_ARGS), choices=list(FORMAT_ARGS))
    parser.add_argument("--no-sweep", action="store_true", help="leave out the six-job sweep")
    args = parser.parse_args()
    cases = [(f"{m} {f}", [f"model={m}", *FORMAT_ARGS[f]], False) for m in args.models for f in args.formats]
    if not args.no_sweep:
        cases.append(("six-job sweep", SWEEP, True))
    rows = []
    for label, job_args, sweep in cases:
        this, other = [], []
        for index in range(args.repeat):  # alternately, the side that starts switching each time
            order = [(this, sys.executable), (other, args.other_python)]
            for runs, python in order if index % 2 == 0 else reversed(order):
                runs.append(job(python, job_args, sweep))
        wall = (median([r.wall for r in this]), median([r.wall for r in other]))
        peak = (median([r.peak for r in this]), median([r.peak for r in other]))
        rows.append([label, f"{wall[0]:.2f}", f"{wall[1]:.2f}", f"{wall[0] / wall[1]:.2f}",
                     gib(peak[0]), gib(peak[1]), f"{peak[0] / peak[1]:.2f}"])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(markdown_table(["job", "this wall s", "other wall s", "wall ratio", "this peak GiB", "other peak GiB",
                          "peak ratio"], rows))


if __name__ == "__main__":
    main()
