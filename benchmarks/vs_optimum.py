"""The tool against Hugging Face Optimum's ``optimum-cli export onnx`` on tiny GPT-2 and BERT folders,
and (``--models gpt2-124m``) on GPT-2 124M, each tool's default build: the graph with its key/value cache
(Optimum's ``text-generation-with-past``).

Both export the same saved folder to ONNX and validate it in ONNX Runtime; each runs as a whole
process, alternately, --repeat times. The table shows median wall time, CPU time (user + system) and
peak RSS, the ratios tool/Optimum, the size of what each wrote, and what each validated (the tool: every output at the
example and at a second shape; Optimum: the outputs its log names, at its own dummy shape).

Optimum is never a dependency of this project: install it in a scratch virtual environment beside
the tool and run this script with that environment's Python, so that both sides import the same
torch and transformers (Optimum pins its own transformers; transformers 5 alone takes seconds longer
to import than 4.57). Without optimum-cli, the script says so and prints the tool's side only.

    python -m venv /tmp/optimum && /tmp/optimum/bin/pip install torch==2.13.0 -e '.[hf]' 'optimum[onnxruntime]'
    /tmp/optimum/bin/python benchmarks/vs_optimum.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from measure import gib, last_line, make_bert, make_gpt2, median, run, tool

from exporter.records.tables import markdown_table

MODELS = {
    # name: (the tool's model option, Optimum's --task)
    "tiny GPT-2": ("hf_causal_lm", "text-generation-with-past"),
    "tiny BERT": ("hf_sequence_classification", "text-classification"),
    "GPT-2 124M": ("hf_causal_lm", "text-generation-with-past"),
}
CHOICES = {"tiny-gpt2": "tiny GPT-2", "tiny-bert": "tiny BERT", "gpt2-124m": "GPT-2 124M"}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name.startswith("model.onnx"))


def tool_validated(out: Path) -> str:
    record = json.loads((out / "metadata.json").read_text())["artifacts"]["onnx"]
    checks = record["validation"]["checks"]
    outputs = sorted({re.sub(r"\.\d+\.", ".*.", c["output"]) for c in checks})
    generation = record["validation"].get("generation")
    return (f"{', '.join(outputs)} at {len({c['label'] for c in checks})} shapes"
            + (", generation through the cache" if generation else ""))


def optimum_validated(output: str) -> str:
    names = sorted({re.sub(r"\.\d+\.", ".*.", n) for n in re.findall(r'Validating ONNX Model output "([^"]+)"', output)})
    return ", ".join(names) + " at 1 shape" if names else "not reported"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=sorted(CHOICES), default=["tiny-gpt2", "tiny-bert"])
    beside = Path(sys.executable).with_name("optimum-cli")
    parser.add_argument("--optimum-cli", default=str(beside) if beside.exists() else shutil.which("optimum-cli"),
                        help="the optimum-cli to run (default: the one beside this Python, else on PATH)")
    args = parser.parse_args()
    import transformers

    print(f"transformers {transformers.__version__}, {sys.executable}")
    if not args.optimum_cli or not Path(args.optimum_cli).exists():
        print("optimum-cli not found: showing the tool alone (see this script's docstring to install Optimum "
              "in a scratch environment, then pass --optimum-cli)")
    rows = []
    with tempfile.TemporaryDirectory() as models:
        folders = {}
        for choice in args.models:
            name = CHOICES[choice]
            folders[name] = Path(models) / choice
            if choice == "tiny-gpt2":
                make_gpt2(folders[name], n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128)
            elif choice == "gpt2-124m":
                make_gpt2(folders[name], n_layer=12, n_embd=768, n_head=12)
            else:
                make_bert(folders[name])
        for name, folder in folders.items():
            option, task = MODELS[name]
            ours, theirs = [], []
            our_size = their_size = 0
            our_checks = their_checks = ""
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as a:
                    out = Path(a) / "out"
                    done = run(tool([f"model={option}", f"model.path={folder}", "format=onnx"], out), cwd=Path(a))
                    if done.returncode:
                        raise SystemExit(f"{name}: the tool failed: {last_line(done.output)}")
                    ours.append(done)
                    our_size, our_checks = folder_bytes(out), tool_validated(out)
                if args.optimum_cli:
                    with tempfile.TemporaryDirectory() as b:
                        out = Path(b) / "out"
                        # At info level Optimum logs what it validated (it does validate either way).
                        done = run([args.optimum_cli, "export", "onnx", "--model", str(folder), "--task", task,
                                    str(out)], cwd=Path(b), env={**os.environ, "TRANSFORMERS_VERBOSITY": "info"})
                        if done.returncode:
                            raise SystemExit(f"{name}: optimum-cli failed: {last_line(done.output)}")
                        theirs.append(done)
                        their_size, their_checks = folder_bytes(out), optimum_validated(done.output)
            tw, tp, tc = (median([getattr(r, k) for r in ours]) for k in ("wall", "peak", "cpu"))
            rows.append([name, "exporter", f"{tw:.2f}", f"{tc:.2f}", gib(tp), f"{our_size / 1e6:.2f} MB", our_checks,
                         "", "", ""])
            if theirs:
                ow, op, oc = (median([getattr(r, k) for r in theirs]) for k in ("wall", "peak", "cpu"))
                rows.append([name, "optimum-cli", f"{ow:.2f}", f"{oc:.2f}", gib(op), f"{their_size / 1e6:.2f} MB",
                             their_checks, f"{tw / ow:.2f}", f"{tc / oc:.2f}", f"{tp / op:.2f}"])
            print(f"{name}: tool wall {[round(r.wall, 2) for r in ours]}, optimum wall "
                  f"{[round(r.wall, 2) for r in theirs]}", flush=True)
    headers = ["model", "tool", "wall s", "CPU s", "peak RSS", "ONNX size", "outputs validated", "wall ratio",
               "CPU ratio", "RSS ratio"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
