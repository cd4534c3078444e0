"""Quantization users can trust: static calibration, fp16, the report, gates and clear refusals."""

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from exporter import ConfigError, TaskSpec, export_model
from exporter.config.schema import QuantizationConfig, QuantizationMode, WeightType

QDQ = {"QuantizeLinear", "DequantizeLinear"}


def metadata(out):
    return json.loads(out["metadata"].read_text())


def onnx_ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_static_onnx_with_random_calibration_is_recorded_and_warned(tmp_path, cnn_model, vision_spec, caplog):
    with caplog.at_level(logging.WARNING, logger="exporter"):
        out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"], quantization="static")
    assert QDQ <= onnx_ops(out["onnx"])
    md = metadata(out)
    assert md["calibration"]["source"] == "random"
    assert md["calibration"]["num_samples"] == 32 and md["calibration"]["heldout_samples"] == 16
    assert len(md["calibration"]["sha256"]) == 64
    assert "do not represent real inputs" in caplog.text
    # Logged while the job was planned, before the staged build (and its export.log) existed.
    assert "calibration: random samples drawn from the task spec" in (tmp_path / "export.log").read_text()
    details = md["artifacts"]["onnx"]["details"]["quantization"]
    assert details["op_types"] == ["MatMul", "Gemm", "Conv"] and details["preprocessed"] is True


def _npz(path, seed, n=40):
    rng = np.random.default_rng(seed)
    np.savez(path, pixel_values=rng.random((n, 3, 32, 32), dtype=np.float32))
    return path


def test_static_onnx_with_npz_and_the_hash_follows_the_data(tmp_path, cnn_model, vision_spec):
    hashes = []
    for seed in (1, 1, 2):
        out = export_model(cnn_model, None, vision_spec, tmp_path / f"b{len(hashes)}", formats=["onnx"],
                           quantization="static", calibration=_npz(tmp_path / f"c{seed}.npz", seed))
        assert QDQ <= onnx_ops(out["onnx"])
        md = metadata(out)
        assert md["calibration"]["source"] == "npz"
        assert md["calibration"]["num_samples"] == 32 and md["calibration"]["heldout_samples"] == 8
        hashes.append(md["calibration"]["sha256"])
    assert hashes[0] == hashes[1] != hashes[2]


def test_static_onnx_with_a_dataset(tmp_path, cnn_model, vision_spec):
    def batches():  # batched and unbatched items, dicts and bare tensors all count as samples
        gen = torch.Generator().manual_seed(0)
        for i in range(30):
            x = torch.rand(4, 3, 32, 32, generator=gen)
            yield {"pixel_values": x} if i % 2 else x[0]

    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"], quantization="static",
                       calibration=batches())
    md = metadata(out)
    assert QDQ <= onnx_ops(out["onnx"])
    assert md["calibration"]["source"] == "dataset"
    assert md["calibration"]["num_samples"] == 32 and md["calibration"]["heldout_samples"] == 16


def test_npz_without_the_input_arrays_names_what_it_has(tmp_path, cnn_model, vision_spec):
    np.savez(tmp_path / "bad.npz", images=np.zeros((40, 3, 32, 32), np.float32))
    with pytest.raises(ConfigError, match=r"no array named \['pixel_values'\]; it has \['images'\]"):
        export_model(cnn_model, None, vision_spec, tmp_path / "o", formats=["onnx"], quantization="static",
                     calibration=tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="3 sample"):
        np.savez(tmp_path / "few.npz", pixel_values=np.zeros((3, 3, 32, 32), np.float32))
        export_model(cnn_model, None, vision_spec, tmp_path / "o", formats=["onnx"], quantization="static",
                     calibration=tmp_path / "few.npz")
    assert not (tmp_path / "o").exists()


def test_static_torchscript_through_fx(tmp_path, cnn_model, vision_spec):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["torchscript"], quantization="static")
    md = metadata(out)
    assert "quantize_fx" in md["artifacts"]["torchscript"]["details"]["quantization"]["recipe"]
    assert md["artifacts"]["torchscript"]["details"]["quantization"]["quantized_layers"] >= 3
    graph = str(torch.jit.load(str(out["torchscript"])).inlined_graph)
    assert "quantized::conv2d" in graph and "quantized::linear" in graph


class BranchOnValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, pixel_values):
        if pixel_values.sum() > -1:  # Python control flow on a tensor value
            return self.fc(pixel_values.flatten(1))
        return -self.fc(pixel_values.flatten(1))


def test_static_torchscript_of_the_shipped_lm(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["torchscript"], quantization="static")
    rec = metadata(out)["artifacts"]["torchscript"]
    assert rec["status"] == "ok" and rec["details"]["quantization"]["quantized_layers"] > 0
    # the traced graph takes other batch sizes and shorter sequences
    assert [c["input_shapes"]["input_ids"] for c in rec["validation"]["checks"]] == [[1, 32], [2, 16]]


def test_unsupported_static_and_fp16_combinations_fail_clearly(tmp_path, lm_model, lm_spec, cnn_model, vision_spec):
    with pytest.raises(ConfigError, match=r"static is not available for format pytorch \(a state dict .*\); "
                                          r"formats that take it: \['onnx', 'torchscript'\]"):
        export_model(cnn_model, None, vision_spec, tmp_path / "a", formats=["pytorch"], quantization="static")
    with pytest.raises(ConfigError, match=r"fp16 is not available for format torchscript \(.*use format=onnx.*\); "
                                          r"formats that take it: \['onnx'\]"):
        export_model(cnn_model, None, vision_spec, tmp_path / "b", formats=["torchscript"], quantization="fp16")
    # A branch on tensor values is control flow torch.fx cannot trace; the job says which format can
    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 8, 8]})
    out = export_model(BranchOnValues(), None, spec, tmp_path / "c", formats=["torchscript", "onnx"],
                       quantization="static")
    error = metadata(out)["artifacts"]["torchscript"]["error"]
    assert "torch.fx can trace symbolically" in error and "use format=onnx" in error
    assert "onnx" in out and "torchscript" not in out  # never a silent fp32 artifact labelled static


def test_fp16_onnx_keeps_float32_io(tmp_path, cnn_model, vision_spec):
    import onnxruntime as ort

    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"], quantization="fp16")
    model = onnx.load(str(out["onnx"]))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    session = ort.InferenceSession(str(out["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    report = metadata(out)["artifacts"]["onnx"]["quantization_report"]
    assert report["size"]["ratio"] < 0.75


def test_report_fields_for_a_language_model(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["onnx", "torchscript", "pytorch"],
                       quantization="dynamic")
    for name in ("onnx", "torchscript", "pytorch"):
        rec = metadata(out)["artifacts"][name]
        report = rec["quantization_report"]
        assert report["size"]["bytes"] == rec["bytes"] and report["size"]["bytes"] < report["size"]["fp32_bytes"]
        assert report["size"]["ratio"] == pytest.approx(report["size"]["bytes"] / report["size"]["fp32_bytes"], abs=1e-3)
        fid = report["fidelity"]
        assert fid["agreement_metric"] == "next_token_agreement"
        assert fid["calibration"]["samples"] == 32 and fid["heldout"]["samples"] == 16
        assert 0.5 < fid["heldout"]["agreement"] <= 1 and fid["heldout"]["max_abs_diff"] > 0
        speed = report["speed"]
        assert speed["latency_ms"] > 0 and speed["fp32_latency_ms"] > 0 and speed["runs"] == 30
        assert speed["ratio"] == pytest.approx(speed["latency_ms"] / speed["fp32_latency_ms"], rel=1e-2)
        assert speed["spread"] >= 0 and (speed["cpu_wait"] is None or speed["cpu_wait"] >= 0)
        assert report["gate_failures"] == []


def test_classifier_report_uses_top1_agreement(tmp_path, cnn_model, vision_spec):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"], quantization="dynamic")
    assert metadata(out)["artifacts"]["onnx"]["quantization_report"]["fidelity"]["agreement_metric"] == "top1_agreement"


def test_gates_fail_and_pass(tmp_path, lm_model, lm_spec):
    failing = export_model(lm_model, None, lm_spec, tmp_path / "fail", formats=["onnx"], quantization="dynamic",
                           validate={"min_agreement": 1.0})
    assert "onnx" not in failing
    error = metadata(failing)["artifacts"]["onnx"]["error"]
    assert "next_token_agreement on calibration samples" in error and "validate.min_agreement=1.0" in error
    passing = export_model(lm_model, None, lm_spec, tmp_path / "pass", formats=["onnx"], quantization="dynamic",
                           validate={"min_agreement": 0.5, "quantized_atol": 10.0})
    assert "onnx" in passing and metadata(passing)["artifacts"]["onnx"]["status"] == "ok"
    too_tight = export_model(lm_model, None, lm_spec, tmp_path / "atol", formats=["onnx"], quantization="dynamic",
                             validate={"quantized_atol": 1e-6})
    assert "validate.quantized_atol" in metadata(too_tight)["artifacts"]["onnx"]["error"]
    kept = export_model(lm_model, None, lm_spec, tmp_path / "kept", formats=["onnx"], quantization="dynamic",
                        validate={"min_agreement": 1.0, "strict": False})
    assert metadata(kept)["artifacts"]["onnx"]["status"] == "mismatch" and kept["onnx"].is_file()


def test_weight_type_auto_measures_both_and_records_why(tmp_path, cnn_model, vision_spec):
    q = QuantizationConfig(mode=QuantizationMode.dynamic, weight_type=WeightType.auto, latency_runs=10)
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx", "torchscript"], quantization=q)
    md = metadata(out)
    selection = md["artifacts"]["onnx"]["quantization_report"]["weight_type_selection"]
    assert set(selection["candidates"]) == {"qint8", "quint8"}
    candidates = selection["candidates"]
    assert all(c["latency_spread"] >= 0 for c in candidates.values())
    fastest = min(candidates, key=lambda k: candidates[k]["latency_ms"])
    assert (selection["chosen"] == fastest and "fastest" in selection["reason"]) or (
        "not told apart by speed" in selection["reason"])
    torchscript = md["artifacts"]["torchscript"]["quantization_report"]["weight_type_selection"]
    assert set(torchscript["candidates"]) == {"qint8"} and torchscript["reason"] == "the only weight type this format takes"
    from exporter.cli.card import render_card
    from exporter.records.read import read_build

    card = render_card(read_build(out["metadata"].parent))
    assert f"- onnx: weight_type=auto kept {selection['chosen']}: {selection['reason']}" in card


def test_eager_references_past_the_cache_bound_are_computed_again_with_the_same_figures(
        tmp_path, lm_model, lm_spec, monkeypatch):
    """Eager outputs of the calibration and held-out samples are kept for the next candidate only up
    to plan.REFERENCE_CACHE_BYTES (a language model's logits on them can outweigh its weights); past
    it they are computed again, once per sample, and every figure is the same."""
    from exporter.build import plan

    q = QuantizationConfig(mode=QuantizationMode.dynamic, weight_type=WeightType.auto, latency_runs=3)
    calls, agreements = [], []
    for bound in (plan.REFERENCE_CACHE_BYTES, 0):
        monkeypatch.setattr(plan, "REFERENCE_CACHE_BYTES", bound)
        count = [0]
        hook = lm_model.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        try:
            out = export_model(lm_model, None, lm_spec, tmp_path / str(bound), formats=["onnx"], quantization=q)
        finally:
            hook.remove()
        candidates = metadata(out)["artifacts"]["onnx"]["quantization_report"]["weight_type_selection"]["candidates"]
        assert set(candidates) == {"qint8", "quint8"}
        agreements.append({k: c["heldout_agreement"] for k, c in candidates.items()})
        calls.append(count[0])
    assert agreements[0] == agreements[1]
    assert calls[1] - calls[0] == 32 + 16  # the second candidate's samples, computed again


def test_non_finite_scales_fail_with_the_operator_advice(tmp_path, lm_model, lm_spec):
    q = QuantizationConfig(mode=QuantizationMode.static, op_types=["MatMul", "Gemm", "Conv", "Add", "Softmax"])
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["onnx"], quantization=q)
    error = metadata(out)["artifacts"]["onnx"]["error"]
    assert "non-finite or zero scales" in error and "restrict quantization.op_types" in error
    assert not (tmp_path / "model.onnx").exists()


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(2000, 64)
        self.mlp = nn.Linear(64, 64)
        self.head = nn.Linear(64, 2000, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, input_ids):
        return self.head(torch.relu(self.mlp(self.embed(input_ids))))


def test_tied_weights_stay_fp32_and_the_artifact_never_grows(tmp_path):
    spec = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 2000, "max_seq_len": 16})
    out = export_model(TiedLM(), None, spec, tmp_path, formats=["torchscript", "pytorch"], quantization="dynamic")
    for name in ("torchscript", "pytorch"):
        rec = metadata(out)["artifacts"][name]
        assert rec["details"]["quantization"]["kept_fp32"] == {"head": "weight tied to embed"}
        assert rec["quantization_report"]["size"]["bytes"] <= rec["quantization_report"]["size"]["fp32_bytes"]


class NoMatmul(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3, 1, 1))

    def forward(self, pixel_values):
        return (pixel_values * self.scale).mean(dim=(2, 3))


def test_nothing_quantized_gets_a_warning(tmp_path, caplog):
    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 8, 8]})
    with caplog.at_level(logging.WARNING, logger="exporter"):
        out = export_model(NoMatmul(), None, spec, tmp_path, formats=["torchscript"], quantization="dynamic")
    warnings = metadata(out)["artifacts"]["torchscript"]["warnings"]
    assert any("nothing was quantized" in w for w in warnings)
    assert "nothing was quantized" in caplog.text


SMALL = "task_spec.input_schema.image_size=[3,32,32]"


@pytest.mark.slow
def test_cli_calibration_from_npz_and_from_a_dataset(tmp_path, cli):
    _npz(tmp_path / "calib.npz", 3, n=12)
    (tmp_path / "mydata.py").write_text(
        "import torch\n\ndef batches(n=3):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    for _ in range(n):\n        yield {'pixel_values': torch.rand(4, 3, 32, 32, generator=g)}\n")
    common = ["quantization=static", SMALL, "calibration.num_samples=8", "calibration.heldout_samples=4"]
    r = cli(*common, "calibration=npz", f"calibration.path={tmp_path / 'calib.npz'}", "hydra.run.dir=a")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(*common, "calibration=dataset", "calibration.dataset._target_=mydata.batches", "hydra.run.dir=b")
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = (json.loads((tmp_path / d / "metadata.json").read_text())["calibration"] for d in "ab")
    assert (a["source"], b["source"]) == ("npz", "dataset")
    assert a["num_samples"] == b["num_samples"] == 8 and a["sha256"] != b["sha256"]
    assert "mydata.batches" in b["description"]
    r = cli(*common, "calibration=npz", "hydra.run.dir=c")  # path left at ???
    assert r.returncode != 0 and "calibration.path" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr


def _candidate(latency_ms, spread=0.02, agreement=0.9, size=100, failures=()):
    return {"latency_ms": latency_ms, "latency_spread": spread, "heldout_agreement": agreement,
            "size_bytes": size, "gate_failures": list(failures)}


def test_weight_type_choice_tells_candidates_apart_by_speed_only_beyond_the_noise():
    from exporter.build.quantize import choose_weight_type

    # clearly faster: the fastest, whatever the agreement
    assert choose_weight_type({"qint8": _candidate(1.0, agreement=0.8), "quint8": _candidate(1.5)}) == (
        "qint8", "fastest of the 2 candidate(s) that pass the gates")
    # 3% apart on calm measurements: the higher agreement; equal agreement: the smaller file
    chosen, reason = choose_weight_type({"qint8": _candidate(1.0, agreement=0.8), "quint8": _candidate(1.03)})
    assert chosen == "quint8" and "not told apart by speed" in reason and "qint8 1.000 ms" in reason
    assert "kept the higher held-out agreement: quint8 90.00%, qint8 80.00%" in reason, reason
    chosen, reason = choose_weight_type({"qint8": _candidate(1.0, size=120), "quint8": _candidate(1.03, size=90)})
    assert chosen == "quint8" and "equal held-out agreement, the smaller file: quint8 90 bytes, qint8 120 bytes" in reason
    # 30% apart, but the measurements spread by 40%: not told apart either
    assert choose_weight_type({"qint8": _candidate(1.0, 0.4, 0.8), "quint8": _candidate(1.3, 0.1)})[0] == "quint8"
    # a candidate that fails a gate is never chosen over one that passes
    chosen, reason = choose_weight_type({"qint8": _candidate(0.5, failures=["x"]), "quint8": _candidate(2.0, agreement=0.1)})
    assert chosen == "quint8" and "of the 1 candidate(s)" in reason


def _timing(times_a, wait=0.0, wall=0.1):
    """One made-up timing (exporter.quantization.report.Timing): run times of the artifact in ms,
    its fp32 twin's (a steady 2 ms), seconds waited for a CPU during it, and its wall time."""
    return list(times_a), [2.0] * len(times_a), wait, wall


def _read_as_asked(timings, read):
    for timing in timings:  # what the measurement asks for, noted in ``read``
        read.append(timing)
        yield timing


CALM = _timing([2.0, 2.02, 1.98, 2.01] * 2)
SPREAD_OUT = _timing([1.0, 1.0, 12.0, 12.0] * 2)  # every other pair of runs 12x slower: a shared machine
SLOWED_ALIKE = _timing([150.0, 151.0, 149.0, 150.0] * 2, wait=0.1, wall=0.1)  # waited for a CPU all along


def test_a_noisy_latency_measurement_is_taken_again_and_flagged_when_it_stays_noisy():
    from exporter.quantization import report

    read = []
    figures = report.calmer_measurement(_read_as_asked([CALM, CALM], read))
    assert figures[2] < report.MEASURE_AGAIN_SPREAD and len(read) == 1  # measured once
    assert report.warnings_for({"speed": {"latency_ms": figures[0], "fp32_latency_ms": figures[1],
                                          "ratio": figures[0] / figures[1], "spread": figures[2]}}, 3) == []
    read.clear()
    median, _, noisy, _ = report.calmer_measurement(_read_as_asked([SPREAD_OUT, SPREAD_OUT], read))
    assert noisy > report.UNRELIABLE_SPREAD and len(read) == 2  # measured twice, noisy both times
    speed = {"latency_ms": median, "fp32_latency_ms": 2.0, "ratio": median / 2.0, "spread": noisy}
    notes = report.warnings_for({"speed": speed}, quantized_layers=3)
    assert len(notes) == 1 and "latency figures are unreliable" in notes[0], notes
    # the calmer of the two measurements is kept, whichever came first; never a third
    for first, second in ((SPREAD_OUT, CALM), (CALM, SPREAD_OUT)):
        read.clear()
        assert report.calmer_measurement(_read_as_asked([first, second, CALM], read)) == report.figures(CALM)
        assert len(read) == (2 if first is SPREAD_OUT else 1)


def test_a_machine_busy_with_other_processes_is_flagged_even_when_every_run_is_slowed_alike():
    """Other processes on every core slow all runs alike (no spread to see): the process's threads
    wait on the run queue, and the report says the figures cannot be trusted."""
    from exporter.quantization import report

    read = []
    median, fp32, spread, cpu_wait = report.calmer_measurement(_read_as_asked([SLOWED_ALIKE, SLOWED_ALIKE], read))
    assert spread < report.MEASURE_AGAIN_SPREAD and cpu_wait == 1.0 > report.BUSY_CPU_WAIT
    assert len(read) == 2  # measured again, as busy the second time
    speed = {"latency_ms": median, "fp32_latency_ms": fp32, "ratio": median / fp32, "spread": spread, "cpu_wait": cpu_wait}
    notes = report.warnings_for({"speed": speed}, quantized_layers=3)
    assert len(notes) == 1 and "the machine was busy" in notes[0] and "1.00 s per second" in notes[0], notes
    # just under the bound: not measured again, not flagged
    read.clear()
    calm_enough = _timing([2.0] * 8, wait=0.019, wall=0.1)
    assert report.calmer_measurement(_read_as_asked([calm_enough, SLOWED_ALIKE], read))[3] == 0.19 and len(read) == 1
    # where the system does not say (None), the spread alone decides
    assert report.figures(_timing([2.0] * 8, wait=None))[3] is None


def test_the_latency_measurement_times_alternately_and_reads_the_run_queue_wait():
    """median_latencies_ms on a clock the runs advance: what it times is what calmer_measurement gets."""
    from exporter.quantization import report

    now, waited = [0.0], [0.0]
    durations = iter([0.002] * (2 * report.WARMUP_RUNS) + [0.001, 0.002, 0.012, 0.002] * 4 + [0.002] * 16)
    calls = []

    def run(name):
        def timed(_inputs):
            calls.append(name)
            now[0] += next(durations)
            waited[0] += 0.0001
        return timed

    median, fp32, spread, cpu_wait = report.median_latencies_ms(run("a"), run("b"), {}, runs=8,
                                                                clock=lambda: now[0], waited=lambda: waited[0])
    assert calls == ["a", "b"] * (report.WARMUP_RUNS + 16)  # alternately; the noisy first timing taken again
    assert (median, fp32, spread) == (pytest.approx(2.0), pytest.approx(2.0), 0.0)  # the calm second timing is kept
    assert cpu_wait == pytest.approx(16 * 0.0001 / (16 * 0.002))  # waited over the wall time of that timing


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="run-queue wait needs Linux's /proc")
def test_the_run_queue_wait_is_read_from_linux():
    """What the busy-machine figure rests on (a machine with other processes on every core:
    benchmarks/busy_machine.py measures it)."""
    from exporter.quantization import report

    first = report.run_queue_wait()
    sum(i * i for i in range(100000))
    assert isinstance(first, float) and 0 <= first <= report.run_queue_wait()


CLI_QUICK = ["quantization.latency_runs=2", "calibration.num_samples=4", "calibration.heldout_samples=2"]
TINY = '''
import torch


class Tiny(torch.nn.Module):
    """One 4x2 Linear layer: quantizing it adds more (scales, zero points, operators) than it saves."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, pixel_values):
        return self.fc(pixel_values.flatten(1))
'''


def test_a_quantized_file_larger_than_its_fp32_twin_fails_the_job(tmp_path, cli):
    """docs/quantization.md: a quantized file larger than its fp32 twin always fails the job, with no
    gate set; the artifact is not kept."""
    (tmp_path / "tiny.py").write_text(TINY)
    r = cli("~model", "+model={_target_: tiny.Tiny}", "task_spec.input_schema.image_size=[1,2,2]",
            "task_spec.output_schema.num_classes=2", "format=[onnx,torchscript]", "quantization=dynamic", *CLI_QUICK,
            "export_dir=b")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("error: the build is published, but a format failed: onnx: the quantized file (")
    md = json.loads((tmp_path / "b/metadata.json").read_text())
    assert md["status"] == "failed"
    for fmt in ("onnx", "torchscript"):
        record = md["artifacts"][fmt]
        size = record["quantization_report"]["size"]
        assert size["bytes"] > size["fp32_bytes"] and record["status"] == "failed", record
        expected = f"the quantized file ({size['bytes']} bytes) is larger than its fp32 twin ({size['fp32_bytes']} bytes)"
        assert record["quantization_report"]["gate_failures"] == [expected]
        assert record["error"].startswith(f"{fmt}: {expected}") and f"{fmt:<12} FAILED: {fmt}: {expected}" in r.stdout
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [".hydra", "config.yaml", "export.log",
                                                                   "metadata.json"]


def test_validate_quantized_rtol_alone_gates_a_quantized_artifact(tmp_path, cli):
    """docs/configuration.md: validate.quantized_rtol (here without quantized_atol) bounds the
    quantized artifact's difference relative to eager fp32: far too tight fails the job, loose passes."""
    r = cli("-m", "validate.quantized_rtol=1e-12,1000", "format=pytorch", "quantization=dynamic", SMALL, *CLI_QUICK)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sweep: 2 job(s), 1 ok, 1 failed" in r.stdout
    tight, loose = (json.loads((tmp_path / f"exports/simple_cnn/pytorch-dynamic@validate.quantized_rtol={v}"
                                "/metadata.json").read_text())["artifacts"]["pytorch"] for v in ("1e-12", "1000"))
    assert tight["status"] == "failed" and loose["status"] == "ok", (tight, loose)
    for record, rtol in ((tight, 1e-12), (loose, 1000)):
        validation = record["validation"]
        assert (validation["atol"], validation["rtol"], validation["gated"]) == (0.0, rtol, True), validation
    assert "exceeds atol + rtol * max |eager| = 0.0 + 1e-12 * " in tight["error"], tight["error"]
    assert not all(c["within_tolerance"] for c in tight["validation"]["checks"])
    assert all(c["within_tolerance"] for c in loose["validation"]["checks"])


def _scales(path):
    """Each initializer named *_scale in the ONNX file, as an array."""
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_scale")}


def test_static_onnx_per_channel_qoperator_and_each_calibration_method(tmp_path, cli):
    """docs/configuration.md: quantization.per_channel=true (one scale per output channel),
    quantization.quant_format=qoperator (QLinear operators) and quantization.calibration_method
    (minmax, entropy, percentile) each reach ONNX Runtime's quantize_static."""
    r = cli("-m", "quantization.calibration_method=minmax,entropy,percentile", "quantization=static",
            "quantization.per_channel=true", "quantization.quant_format=qoperator",
            "task_spec.input_schema.image_size=[3,16,16]", *CLI_QUICK)
    assert r.returncode == 0, r.stdout + r.stderr
    folders = {method: tmp_path / f"exports/simple_cnn/onnx-static@quantization.calibration_method={method}"
               for method in ("minmax", "entropy", "percentile")}
    scales = {}
    for method, folder in folders.items():
        md = json.loads((folder / "metadata.json").read_text())
        assert md["status"] == "ok" and md["quantization_config"]["calibration_method"] == method
        assert md["quantization_config"]["per_channel"] is True and md["quantization_config"]["quant_format"] == "qoperator"
        assert method in md["artifacts"]["onnx"]["details"]["quantization"]["recipe"]
        graph = onnx.load(str(folder / "model.onnx")).graph
        ops = {n.op_type for n in graph.node}
        assert {"QLinearConv", "QGemm"} <= ops and not ops & {"Conv", "Gemm"}, ops  # QOperator, not Q/DQ pairs
        scales[method] = _scales(folder / "model.onnx")
        initializers = {i.name: list(i.dims) for i in graph.initializer}
        convs = [n for n in graph.node if n.op_type == "QLinearConv"]
        assert len(convs) == 2
        for conv in convs:  # inputs: x, x_scale, x_zero_point, w, w_scale, ...: a scale per output channel
            out_channels = initializers[conv.input[3]][0]
            assert list(scales[method][conv.input[4]].shape) == [out_channels] and out_channels > 1
    # the activations' ranges: percentile clips the tails that minmax keeps
    activations = [name for name, value in scales["minmax"].items() if value.ndim == 0]
    assert activations and any(scales["percentile"][n] < scales["minmax"][n] for n in activations)
