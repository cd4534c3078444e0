"""Measure what each quantization mode gains and costs on the shipped models, per format.

Every build runs as its own `python -m exporter` process (so ONNX Runtime's and torch's thread
pools never share a process with another build), and its numbers come from the report the job
writes to metadata.json: file size against the fp32 twin of the same format, argmax agreement
with eager fp32 PyTorch on held-out samples, and median latency against the fp32 twin, timed
interleaved in the same run.

    python benchmarks/quantization.py                 # the table in docs/quantization.md
    python benchmarks/quantization.py --quick         # fewer samples and runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from exporter.records.tables import markdown_table

MODELS = {
    "simple_cnn": ["model=simple_cnn"],
    "lm_stub": ["model=lm_stub"],
    # A larger language model, where int8 matrix multiplies have something to win.
    "lm_stub-large": ["model=lm_stub", "model.d_model=256", "model.n_layers=4", "model.vocab_size=8000"],
}
COMBINATIONS = [
    ("onnx", "dynamic", "qint8"), ("onnx", "dynamic", "quint8"), ("onnx", "static", "qint8"), ("onnx", "fp16", None),
    ("torchscript", "dynamic", "qint8"), ("torchscript", "static", "qint8"), ("pytorch", "dynamic", "qint8"),
]


def build(model_args: list[str], fmt: str, mode: str, weight_type: str | None, folder: Path, quick: bool) -> dict:
    args = [sys.executable, "-m", "exporter", *model_args, f"format={fmt}", f"quantization={mode}",
            f"hydra.run.dir={folder}"]
    if weight_type:
        args.append(f"quantization.weight_type={weight_type}")
    if quick:
        args += ["quantization.latency_runs=10", "calibration.num_samples=8", "calibration.heldout_samples=8"]
    else:
        args += ["quantization.latency_runs=50"]
    done = subprocess.run(args, capture_output=True, text=True)
    metadata = folder / "metadata.json"
    if not metadata.is_file():
        return {"status": "error", "error": (done.stdout + done.stderr).strip().splitlines()[-1]}
    return json.loads(metadata.read_text())["artifacts"][fmt]


def row(model: str, fmt: str, mode: str, weight_type: str | None, rec: dict) -> list[str]:
    label = f"{mode}" + (f" ({weight_type})" if weight_type else "")
    report = rec.get("quantization_report")
    if rec.get("status") != "ok" or not report:
        reason = (rec.get("error") or rec.get("status", "?")).split(";")[0].split(", and ")[0]
        return [model, fmt, label, "-", "-", "-", "-", "-", "-", f"failed: {reason[:70]}"]
    fid = report["fidelity"]
    held = fid["heldout"]
    speed = report["speed"]
    return [model, fmt, label, f"{report['size']['ratio']:.2f}", f"{held['agreement']:.1%}",
            f"{held['max_abs_diff']:.3g}", f"{speed['fp32_latency_ms']:.3f}", f"{speed['latency_ms']:.3f}",
            f"x{speed['ratio']:.2f}", "ok" + (" (warned: slower than fp32)" if any(
                "slower" in w for w in rec.get("warnings", [])) else "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calibration samples and timed runs")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    headers = ["model", "format", "mode", "size ratio", "agreement", "max |diff|", "fp32 ms", "quant ms",
               "latency ratio", "status"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models:
            for i, (fmt, mode, weight_type) in enumerate(COMBINATIONS):
                rec = build(MODELS[model], fmt, mode, weight_type, Path(scratch) / f"{model}-{i}", args.quick)
                rows.append(row(model, fmt, mode, weight_type, rec))
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
