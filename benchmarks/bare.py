"""The bare toolchain the tool is measured against: one export, written by hand.

Builds the model, exports it in one format, loads the artifact back once in its runtime, compares
its outputs with eager PyTorch on the same example and writes a small metadata.json. No config, no
second shape, no tags, no staging folder: what a user would write without the tool. The other
benchmark scripts run it as its own process (``python benchmarks/bare.py ...``) beside the tool.

    python benchmarks/bare.py --model lm_stub --format onnx-legacy --out /tmp/bare
    python benchmarks/bare.py --model hf:/tmp/gpt2 --format onnx-dynamo --out /tmp/bare
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import warnings
from pathlib import Path

FORMATS = ("onnx-legacy", "onnx-dynamo", "torchscript", "pytorch")


def build(model: str):
    """(model, example inputs as a dict, dynamic axes) for simple_cnn, lm_stub or hf:<causal LM folder>."""
    import torch

    torch.manual_seed(0)
    if model == "simple_cnn":
        from exporter.models import SimpleCNN

        return SimpleCNN().eval(), {"pixel_values": torch.rand(1, 3, 224, 224)}, {"pixel_values": {0: "batch"}}
    if model == "lm_stub":
        from exporter.models import LMStub

        ids = torch.randint(0, 1000, (1, 128))
        return LMStub().eval(), {"input_ids": ids}, {"input_ids": {0: "batch", 1: "sequence"}}
    if model.startswith("hf:"):
        import transformers

        hf = transformers.AutoModelForCausalLM.from_pretrained(model[3:], local_files_only=True).eval()
        ids = torch.randint(0, hf.config.vocab_size, (1, 128))
        axes = {"batch": 0, "sequence": 1}
        axes = {name: {d: n for n, d in axes.items()} for name in ("input_ids", "attention_mask")}
        return _logits_only(hf), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, axes
    raise SystemExit(f"--model: simple_cnn, lm_stub or hf:<folder>, not {model!r}")


def _logits_only(hf):
    """A Hugging Face causal LM that returns its logits only (no key/value cache among the outputs)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask):
            return self.hf(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return LogitsOnly().eval()


def export(model, inputs: dict, axes: dict, fmt: str, out: Path) -> Path:
    import torch

    args = tuple(inputs.values())
    with torch.no_grad():
        if fmt.startswith("onnx"):
            path = out / "model.onnx"
            if fmt == "onnx-legacy":
                torch.onnx.export(model, args, str(path), input_names=list(inputs), output_names=["logits"],
                                  dynamic_axes=axes, opset_version=14, dynamo=False)
            else:
                batch = torch.export.Dim("batch")
                shapes = {name: {d: (batch if n == "batch" else torch.export.Dim.AUTO) for d, n in dims.items()}
                          for name, dims in axes.items()}
                torch.onnx.export(model, args, str(path), input_names=list(inputs), output_names=["logits"],
                                  dynamic_shapes=shapes, opset_version=18, dynamo=True, verbose=False)
        elif fmt == "torchscript":
            path = out / "model.torchscript"
            torch.jit.save(torch.jit.trace(model, args), str(path))
        else:
            path = out / "model.pth"
            torch.save(model.state_dict(), path)
    return path


def check(model, inputs: dict, path: Path, fmt: str) -> float:
    """Largest absolute difference between the loaded artifact and eager PyTorch."""
    import numpy as np
    import torch

    with torch.no_grad():
        expected = model(**inputs).numpy()
    if fmt.startswith("onnx"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        got = session.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})[0]
    elif fmt == "torchscript":
        with torch.no_grad():
            got = torch.jit.load(str(path))(*inputs.values()).numpy()
    else:
        model.load_state_dict(torch.load(path, weights_only=True))
        with torch.no_grad():
            got = model(**inputs).numpy()
    return float(np.abs(got - expected).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="simple_cnn, lm_stub or hf:<causal LM folder>")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    model, inputs, axes = build(args.model)
    path = export(model, inputs, axes, args.format, args.out)
    difference = check(model, inputs, path, args.format)
    files = {}
    for file in sorted(p for p in args.out.iterdir() if p.is_file()):
        with file.open("rb") as f:
            files[file.name] = hashlib.file_digest(f, "sha256").hexdigest()
    record = {"format": args.format, "max_abs_diff": difference, "files": files,
              "seconds": round(time.perf_counter() - started, 3), "pid": os.getpid()}
    (args.out / "metadata.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({"format": args.format, "max_abs_diff": difference}))


if __name__ == "__main__":
    main()
