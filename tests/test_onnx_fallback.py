"""format.onnx.backend=auto below opset 18: when the legacy exporter fails or bakes a size into its
graph, the job retries with the dynamo exporter at opset 18 once, says so, and records it;
strict_opset=true refuses instead. Never an ok for a graph whose dynamic axis does not work."""

from __future__ import annotations

import json
import math

import onnx
import pytest
import torch

from exporter import TaskSpec, export_model

SPEC = TaskSpec("pool", "text", "text_classification", {"vocab_size": 100, "max_seq_len": 16}, {"num_classes": 3})


class LogAddExp(torch.nn.Module):
    """torch.logaddexp has no legacy (TorchScript-based) ONNX symbolic; the dynamo exporter has one."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(100, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, input_ids):
        hidden = self.embed(input_ids)
        return self.head(torch.logaddexp(hidden, hidden * 0.5).mean(1))


class SqrtPool(LogAddExp):
    """Scales by math.sqrt of the sequence length: a Python number, which tracing bakes in."""

    def forward(self, input_ids):
        hidden = self.embed(input_ids)
        return self.head(hidden.sum(1) / math.sqrt(hidden.shape[1]))


def _record(out_dir):
    md = json.loads((out_dir / "metadata.json").read_text())
    return md, md["artifacts"]["onnx"]


def test_a_legacy_failure_falls_back_to_dynamo_and_says_so(tmp_path, caplog):
    out = export_model(LogAddExp(), None, SPEC, tmp_path / "a", formats=["onnx"])
    md, record = _record(tmp_path / "a")
    assert record["status"] == "ok" and md["opset"] == 18 and md["onnx_backend"] == "dynamo"
    fallback = record["details"]["fallback"]
    assert fallback["from"] == "legacy, opset 14" and fallback["to"] == "dynamo, opset 18"
    assert "the legacy exporter failed" in fallback["reason"] and "logaddexp" in fallback["reason"]
    assert onnx.load(str(out["onnx"])).opset_import[0].version == 18
    warning = [r.getMessage() for r in caplog.records if "instead of the legacy exporter" in r.getMessage()]
    assert warning and "opset 18" in warning[0] and "opset 14" in warning[0] and "logaddexp" in warning[0]


def test_strict_opset_refuses_instead(tmp_path):
    export_model(LogAddExp(), None, SPEC, tmp_path / "b", formats=["onnx"],
                 format_options={"onnx": {"strict_opset": True}})
    md, record = _record(tmp_path / "b")
    assert record["status"] == "failed"
    assert "format.onnx.strict_opset=true keeps that opset: set format.onnx.opset=18" in record["error"]


def test_a_baked_size_is_caught_retried_and_explained(tmp_path):
    # Legacy bakes math.sqrt(16); the second-shape check (8 tokens) catches it; dynamo is tried once and
    # specializes the axis too, so the job fails, naming the axis and what to do. Never ok.
    export_model(SqrtPool(), None, SPEC, tmp_path / "c", formats=["onnx", "torchscript"])
    md, record = _record(tmp_path / "c")
    assert record["status"] == "failed" and record["details"]["fallback"]["reason"].startswith(
        "the legacy graph failed the check: second example")
    assert "second example" in record["error"] and "the artifact cannot run this input" in record["error"]
    ts = md["artifacts"]["torchscript"]
    assert ts["status"] == "failed"
    assert "matches at the example's shape [1, 16] but not at [2, 8]: the batch and sequence axis was traced as a " \
        "constant" in ts["error"]
    assert "format=exported_program" in ts["error"]
    # with the second-shape check off, nothing says ok: the axes are recorded as unverified
    export_model(SqrtPool(), None, SPEC, tmp_path / "d", formats=["torchscript"], validate={"second_batch_size": 1})
    md = json.loads((tmp_path / "d" / "metadata.json").read_text())
    assert md["status"] == "unchecked" and md["artifacts"]["torchscript"]["dynamic_axes_verified"] is False


@pytest.mark.parametrize("strict", [False, True])
def test_the_fallback_never_happens_for_an_explicit_backend(tmp_path, strict):
    export_model(LogAddExp(), None, SPEC, tmp_path / "e", formats=["onnx"],
                 format_options={"onnx": {"backend": "legacy", "strict_opset": strict}})
    md, record = _record(tmp_path / "e")
    assert record["status"] == "failed" and "fallback" not in (record.get("details") or {})
