"""A nightly over a fleet of models, simulated: N small Hugging Face models swept across formats and
quantization modes, then four passes, each one `python -m exporter -m ...` process:

1. first:   an empty export folder and an empty build cache (every job builds, and stores);
2. unchanged: the same sweep again (every job up to date);
3. one model changed: one model's weights saved over (only its jobs rebuild);
4. warm cache: an empty export folder on "another node", the same cache (every job restored).

Prints wall time, time per job, peak RSS (``os.wait4``) and the jobs' statuses for each pass, and
the ratios the issue's targets are about. The models are GPT-2s (causal language models, the most
common model a platform exports) of distinct sizes and weights: 2-3 layers, width 64-128, a
vocabulary of 512-1304 (0.1-0.5M parameters; smaller ones make dynamic quantization's ONNX file
larger than the fp32 one, which the tool refuses).

    python benchmarks/fleet.py --models 100                      # formats onnx,pytorch x none,dynamic
    python benchmarks/fleet.py --models 10 --launcher joblib     # needs the `parallel` extra
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from measure import gib, run

from exporter.records.tables import markdown_table

MAKE = """
import json, sys, torch, transformers
for index, folder in enumerate(json.loads(sys.argv[1])):
    torch.manual_seed(1000 + index)
    config = transformers.GPT2Config(n_layer=2 + index % 2, n_embd=64 + 32 * (index % 3), n_head=4,
                                     vocab_size=512 + 8 * index, n_positions=64)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
"""

CHANGE = """
import sys, torch, transformers
model = transformers.GPT2LMHeadModel.from_pretrained(sys.argv[1])
with torch.no_grad():
    next(model.parameters()).add_(0.01)
model.save_pretrained(sys.argv[1])
"""


def sweep(models: list[Path], args: argparse.Namespace, cache: Path) -> list[str]:
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"] if args.launcher == "joblib" else []
    return [sys.executable, "-m", "exporter", "-m", "model=hf_causal_lm",
            "model.path=" + ",".join(str(m) for m in models), f"format={args.formats}",
            f"quantization={args.modes}", "task_spec.input_schema.max_seq_len=16",
            "quantization.latency_runs=3", f"cache.dir={cache}", *launcher]


def statuses(folder: Path) -> Counter:
    summary = json.loads((folder / "exports" / "sweep_summary.json").read_text())
    return Counter(job["status"] for job in summary["records"])


def failures(folder: Path) -> Counter:
    summary = json.loads((folder / "exports" / "sweep_summary.json").read_text())
    return Counter(str(job.get("error") or job.get("errors"))[:300] for job in summary["records"]
                   if job["status"] not in ("ok", "up to date", "restored"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--formats", default="onnx,pytorch")
    parser.add_argument("--modes", default="none,dynamic")
    parser.add_argument("--launcher", choices=["basic", "joblib"], default="basic")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--passes", type=int, default=4, help="run only the first this many passes")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it, instead of a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) if args.keep is None else args.keep
        root.mkdir(parents=True, exist_ok=args.keep is None)
        models = [root / "models" / f"m{i:04d}" for i in range(args.models)]
        subprocess.run([sys.executable, "-c", MAKE, json.dumps([str(m) for m in models])], check=True)
        cache, node_a, node_b = root / "cache", root / "node-a", root / "node-b"
        node_a.mkdir(), node_b.mkdir()
        command = sweep(models, args, cache)
        jobs = args.models * len(args.formats.split(",")) * len(args.modes.split(","))
        rows, walls = [], {}
        passes = [("first (empty folder, empty cache)", node_a, None),
                  ("unchanged", node_a, None),
                  ("one model changed", node_a, models[len(models) // 2]),
                  ("empty folder, warm cache", node_b, None)]
        for name, folder, change in passes[:args.passes]:
            if change is not None:
                subprocess.run([sys.executable, "-c", CHANGE, str(change)], check=True, capture_output=True)
            result = run(command, cwd=folder)
            counted = statuses(folder)
            for error, n in failures(folder).items():
                print(f"  {n} failed: {error}", file=sys.stderr)
            walls[name] = result.wall
            rows.append([name, f"{result.wall:.1f}", f"{result.wall / jobs:.3f}", gib(result.peak),
                         ", ".join(f"{n} {s}" for s, n in sorted(counted.items())), str(result.returncode)])
            print(f"{name}: {result.wall:.1f} s, {dict(counted)}", file=sys.stderr, flush=True)
        first = walls[passes[0][0]]
        print(f"{args.models} models x {args.formats} x {args.modes} = {jobs} jobs, {args.launcher} launcher\n")
        print(markdown_table(["pass", "wall s", "s per job", "peak RSS", "jobs", "exit"], rows))
        if len(walls) < len(passes):
            return
        print()
        print(markdown_table(["ratio", "measured", "target"], [
            ["unchanged / first", f"{walls['unchanged'] / first:.3f}", "<= 0.10"],
            ["warm cache / first", f"{walls['empty folder, warm cache'] / first:.3f}", "<= 0.20"],
            ["one model changed / first", f"{walls['one model changed'] / first:.3f}",
             f"its {jobs // args.models} jobs rebuilt"],
        ]))


if __name__ == "__main__":
    main()
