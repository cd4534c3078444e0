"""Shared by the benchmark scripts: run a whole process and read its wall time and peak RSS.

Peak RSS is the child's own high-water mark as the kernel reports it when the process is reaped
(``os.wait4``, the figure ``/usr/bin/time -v`` prints as "Maximum resident set size"), so nothing
samples and nothing is missed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
BARE = BENCHMARKS / "bare.py"


@dataclass
class Run:
    wall: float  # seconds
    peak: int  # bytes
    returncode: int
    output: str
    cpu: float = 0.0  # user + system seconds of the process and the children it waited for


def run(args: list[str], cwd: Path | None = None, env: dict | None = None) -> Run:
    """Run ``args`` to the end; its stdout and stderr together in ``output``."""
    started = time.perf_counter()
    with open(os.devnull, "rb") as stdin:
        child = subprocess.Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return Run(wall, usage.ru_maxrss * 1024, child.returncode, output, usage.ru_utime + usage.ru_stime)


def tool(args: list[str], out: Path, python: str = sys.executable) -> list[str]:
    """The command line of one ``python -m exporter`` job writing to ``out``."""
    return [python, "-m", "exporter", *args, f"hydra.run.dir={out}"]


def bare(model: str, fmt: str, out: Path, python: str = sys.executable) -> list[str]:
    """The command line of the bare script (bare.py) doing the same export by hand."""
    return [python, str(BARE), "--model", model, "--format", fmt, "--out", str(out)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def make_gpt2(folder: Path, n_layer: int, n_embd: int, n_head: int, vocab_size: int = 50257,
              n_positions: int = 1024) -> int:
    """Save a GPT-2 with these sizes and random weights (seed 0) in ``folder``, in a child process
    so that this one stays small; returns its parameter count."""
    code = (
        "import sys, torch, transformers\n"
        "torch.manual_seed(0)\n"
        f"config = transformers.GPT2Config(n_layer={n_layer}, n_embd={n_embd}, n_head={n_head}, "
        f"vocab_size={vocab_size}, n_positions={n_positions})\n"
        "model = transformers.GPT2LMHeadModel(config)\n"
        f"model.save_pretrained({str(folder)!r})\n"
        "print(sum(p.numel() for p in model.parameters()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def make_bert(folder: Path) -> None:
    """A tiny BERT sequence classifier with random weights (seed 0) in ``folder``."""
    code = (
        "import torch, transformers\n"
        "torch.manual_seed(0)\n"
        "config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, "
        "intermediate_size=128, vocab_size=1000, max_position_embeddings=128)\n"
        f"transformers.BertForSequenceClassification(config).save_pretrained({str(folder)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
