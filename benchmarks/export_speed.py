"""How long each format and ONNX backend takes to build and check, on the shipped models.

Uses the Python API in one process (the same runner as the command line) and reads the times the
job records: export seconds per artifact and the whole job's seconds (export + load back + checks).
Each configuration is built --repeat times; the table shows the median.

    python benchmarks/export_speed.py
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import warnings

CONFIGS = [
    ("onnx (legacy, opset 14)", "onnx", {"onnx": {"opset": 14, "backend": "legacy"}}),
    ("onnx (dynamo, opset 18)", "onnx", {"onnx": {"opset": 18, "backend": "dynamo"}}),
    ("torchscript", "torchscript", {}),
    ("pytorch state dict", "pytorch", {}),
]


def models():
    from exporter import TaskSpec
    from exporter.models import LMStub, SimpleCNN

    yield ("simple_cnn 3x224x224", SimpleCNN(),
           TaskSpec("vision", "vision", "vision_classification", {"image_size": [3, 224, 224]}))
    yield ("lm_stub 128 tokens", LMStub(),
           TaskSpec("lm", "text", "language_modeling", {"vocab_size": 1000, "max_seq_len": 128}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    import torch

    from exporter import export_model
    from exporter.records.tables import markdown_table

    torch.manual_seed(0)
    rows = []
    for model_name, model, spec in models():
        for label, fmt, options in CONFIGS:
            export_s, job_s = [], []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as out:
                    paths = export_model(model, None, spec, out, formats=[fmt], format_options=options)
                    md = json.loads(paths["metadata"].read_text())
                    export_s.append(md["artifacts"][fmt]["export_seconds"])
                    job_s.append(md["total_seconds"])
            rows.append([model_name, label, f"{statistics.median(export_s):.3f}", f"{statistics.median(job_s):.3f}"])
    headers = ["model", "format", "export s (median)", "whole job s (median)"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
