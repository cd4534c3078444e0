"""The Python door: the spec's scenarios 1-4, 6-8 and the acceptance criteria."""

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from exporter import ConfigError, LanguageModelingAdapter, TaskSpec, VisionClassificationAdapter, export_model

SPEC_METADATA_KEYS = {"task_type", "modality", "input_shape", "output_shape", "exported_at", "torch_version",
                      "formats"}


def test_scenario_1_text_model_to_torchscript_and_onnx(tmp_path, lm_model, lm_spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = export_model(lm_model, LanguageModelingAdapter(), lm_spec, "exports/", formats=["torchscript", "onnx"])
    for name in ("model.torchscript", "model.onnx", "metadata.json"):
        assert (tmp_path / "exports" / name).is_file()
    assert out == {"torchscript": Path("exports/model.torchscript"), "onnx": Path("exports/model.onnx"),
                   "metadata": Path("exports/metadata.json")}


def test_scenario_2_vision_onnx_input_shape_and_opset(tmp_path, cnn_model):
    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 64, 64]}, {"num_classes": 10})
    out = export_model(cnn_model, VisionClassificationAdapter(), spec, tmp_path, formats=["onnx"])
    proto = onnx.load(str(out["onnx"]))
    assert proto.opset_import[0].version == 14
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    # the batch axis is symbolic (dynamic by default); the rest is the schema's image size
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [3, 64, 64]
    assert json.loads(out["metadata"].read_text())["input_shape"] == [1, 3, 64, 64]


def test_scenario_2_fixed_batch_gives_exact_input_shape(tmp_path, cnn_model):
    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 64, 64]})
    out = export_model(cnn_model, None, spec, tmp_path, formats=["onnx"],
                       format_options={"onnx": {"dynamic_batch": False}})
    dims = onnx.load(str(out["onnx"])).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 64, 64]
    checks = json.loads(out["metadata"].read_text())["artifacts"]["onnx"]["validation"]["checks"]
    assert [c["label"] for c in checks] == ["example"]  # no second batch size for a fixed-batch graph


def test_scenario_3_metadata_schema(tmp_path, cnn_model, vision_spec):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"])
    md = json.loads(out["metadata"].read_text())
    assert SPEC_METADATA_KEYS <= set(md)
    assert md["schema_version"] == "1.0"
    assert md["task_type"] == "vision_classification" and md["modality"] == "vision"
    assert md["input_shape"] == [1, 3, 32, 32] and md["output_shape"] == [1, 10]
    assert md["torch_version"] == torch.__version__
    assert md["formats"] == ["onnx"] and md["quantization"] is None and md["opset"] == 14
    assert md["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": [1, 3, 32, 32]}]
    assert md["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [1, 10], "dynamic_axes": {"0": "batch"}}]
    assert md["outputs_left_out"] == {}
    assert md["dynamic_axes"]["pixel_values"] == {"0": "batch"}
    assert {"python", "torch", "onnx", "onnxruntime", "hydra-core"} <= set(md["environment"])
    art = md["artifacts"]["onnx"]
    assert art["file"] == "model.onnx" and art["status"] == "ok"
    assert art["bytes"] == out["onnx"].stat().st_size
    import hashlib
    assert art["sha256"] == hashlib.sha256(out["onnx"].read_bytes()).hexdigest()
    assert art["validation"]["passed"] and art["validation"]["max_abs_diff"] < 1e-4
    assert [c["input_shapes"]["pixel_values"][0] for c in art["validation"]["checks"]] == [1, 2]
    assert art["export_seconds"] > 0


def test_scenario_4_dynamic_quantization_shrinks_torchscript(tmp_path, lm_model, lm_spec):
    fp32 = export_model(lm_model, None, lm_spec, tmp_path / "fp32", formats=["torchscript"])
    q = export_model(lm_model, None, lm_spec, tmp_path / "q", formats=["torchscript"], quantization="dynamic")
    assert q["torchscript"].stat().st_size < fp32["torchscript"].stat().st_size
    module = torch.jit.load(str(q["torchscript"]))
    assert "Quantized" in str(module.code) or any("quantized" in str(n.kind()) for n in module.inlined_graph.nodes())
    md = json.loads(q["metadata"].read_text())
    assert md["quantization"] == "dynamic" and md["quantization_config"]["mode"] == "dynamic"
    # quantized artifacts are measured but not gated by default
    assert md["artifacts"]["torchscript"]["validation"]["gated"] is False
    assert md["artifacts"]["torchscript"]["validation"]["max_abs_diff"] > 0


def test_dynamic_quantization_onnx_holds_integer_ops(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["onnx", "pytorch"], quantization="dynamic")
    ops = {n.op_type for n in onnx.load(str(out["onnx"])).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
    md = json.loads(out["metadata"].read_text())
    assert "quantize_dynamic" in md["artifacts"]["pytorch"]["load_hint"]


def test_scenario_6_creates_missing_nested_directory(tmp_path, cnn_model, vision_spec):
    target = tmp_path / "exports" / "run_42"
    assert not target.exists()
    out = export_model(cnn_model, None, vision_spec, str(target) + "/", formats=["pytorch"])
    assert out["pytorch"].parent == target and out["pytorch"].is_file()


def test_scenario_7_colab_static_warns(tmp_path, cnn_model, vision_spec, monkeypatch, caplog):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20260101")
    with caplog.at_level(logging.WARNING, logger="exporter"):
        out = export_model(cnn_model, None, vision_spec, tmp_path / "out", formats=["onnx"], quantization="static")
    assert "Static quantization may fail on Colab GPU, use dynamic instead" in caplog.text
    assert "onnx" in out  # a warning, not a refusal: the static build still runs


def test_static_off_colab_has_no_colab_warning(tmp_path, cnn_model, vision_spec, monkeypatch, caplog):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    with caplog.at_level(logging.WARNING, logger="exporter"):
        export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"], quantization="static")
    assert "Colab" not in caplog.text


def test_scenario_8_return_value_structure(tmp_path, cnn_model, vision_spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = export_model(cnn_model, None, vision_spec, "exports", formats=["onnx", "pytorch"])
    assert out == {"onnx": Path("exports/model.onnx"), "pytorch": Path("exports/model.pth"),
                   "metadata": Path("exports/metadata.json")}


def test_lm_stub_to_all_three_formats_and_each_runs_in_its_runtime(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["torchscript", "onnx", "pytorch"])
    assert all(p.is_file() for p in out.values())
    ids = torch.randint(0, 1000, (3, 20))  # another batch size and a shorter sequence
    expected = lm_model.eval()(ids).detach().numpy()
    session = ort.InferenceSession(str(out["onnx"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input_ids": ids.numpy()})[0], expected, atol=1e-4)
    np.testing.assert_allclose(torch.jit.load(str(out["torchscript"]))(ids).detach().numpy(), expected, atol=1e-5)
    state = torch.load(str(out["pytorch"]), weights_only=True)
    assert set(state) == set(lm_model.state_dict())


def test_adapter_none_picks_adapter_from_task_type(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["onnx"])
    assert [i.name for i in onnx.load(str(out["onnx"])).graph.input] == ["input_ids"]


def test_export_does_not_change_the_users_model(tmp_path, cnn_model, vision_spec):
    cnn_model.train()
    before = {k: v.clone() for k, v in cnn_model.state_dict().items()}
    export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx", "torchscript", "pytorch"])
    assert cnn_model.training  # mode restored
    after = cnn_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched


def test_unknown_format_and_quantization_name_valid_values(tmp_path, cnn_model, vision_spec):
    with pytest.raises(ValueError,
                       match=r"'tflite'.*valid values: \['exported_program', 'onnx', 'pytorch', 'safetensors', 'torchscript'\]"):
        export_model(cnn_model, None, vision_spec, tmp_path / "a", formats=["onnx", "tflite"])
    with pytest.raises(ValueError, match=r"quantization.*'int4'.*valid values"):
        export_model(cnn_model, None, vision_spec, tmp_path / "b", formats=["onnx"], quantization="int4")
    with pytest.raises(ValueError, match="format_options.*opsett"):
        export_model(cnn_model, None, vision_spec, tmp_path / "c", formats=["onnx"],
                     format_options={"onnx": {"opsett": 3}})
    assert not any(tmp_path.iterdir())


def test_model_that_fails_on_example_input_fails_before_writing(tmp_path, vision_spec):
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 10))  # expects 100 features, gets 3*32*32
    with pytest.raises(ConfigError, match=r"pixel_values float32\[1, 3, 32, 32\]"):
        export_model(model, None, vision_spec, tmp_path / "out", formats=["onnx", "pytorch"])
    assert not (tmp_path / "out").exists()


class BatchBaked(nn.Module):
    """Multiplies by the batch size read as a Python int: tracing freezes it to the example's 1."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(x.flatten(1)) * int(x.shape[0])


def test_tolerance_miss_fails_and_keeps_nothing_when_strict(tmp_path, caplog):
    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 8, 8]})
    with caplog.at_level(logging.ERROR, logger="exporter"):
        out = export_model(BatchBaked(), None, spec, tmp_path, formats=["torchscript", "pytorch"])
    assert set(out) == {"pytorch", "metadata"}  # the state dict is exact; the trace is not
    assert not (tmp_path / "model.torchscript").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    md = json.loads(out["metadata"].read_text())
    ts = md["artifacts"]["torchscript"]
    assert ts["status"] == "failed" and "second example" in ts["error"]
    assert ts["validation"]["checks"][0]["within_tolerance"] and not ts["validation"]["checks"][1]["within_tolerance"]
    assert md["status"] == "failed"
    assert "torchscript was not exported" in caplog.text


def test_tolerance_miss_is_kept_and_recorded_when_not_strict(tmp_path):
    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 8, 8]})
    out = export_model(BatchBaked(), None, spec, tmp_path, formats=["torchscript"], validate={"strict": False})
    md = json.loads(out["metadata"].read_text())
    assert out["torchscript"].is_file()
    assert md["artifacts"]["torchscript"]["status"] == "mismatch" and md["status"] == "mismatch"


def test_quantized_gate_applies_only_when_a_bound_is_set(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path / "gated", formats=["onnx"], quantization="dynamic",
                       validate={"quantized_atol": 1e-9})
    assert "onnx" not in out
    assert "exceeds" in json.loads(out["metadata"].read_text())["artifacts"]["onnx"]["error"]


class NoOnnx(nn.Module):
    """An op the ONNX exporters cannot express, while TorchScript and state dicts are fine."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.linalg.eigvals(self.fc(x.flatten(1)[:, :16].reshape(-1, 4, 4))).real


def test_one_failing_format_does_not_stop_the_others(tmp_path, caplog):
    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [1, 4, 4]})
    with caplog.at_level(logging.ERROR, logger="exporter"):
        # the legacy exporter alone: NoOnnx fails without the dynamo exporter's attempt (CI time)
        out = export_model(NoOnnx(), None, spec, tmp_path, formats=["onnx", "torchscript", "pytorch"],
                           format_options={"onnx": {"backend": "legacy"}})
    assert set(out) == {"torchscript", "pytorch", "metadata"}
    md = json.loads(out["metadata"].read_text())
    assert md["artifacts"]["onnx"]["status"] == "failed" and md["artifacts"]["onnx"]["error"]
    assert not (tmp_path / "model.onnx").exists()
    assert "onnx was not exported" in caplog.text


def test_api_writes_a_config_snapshot(tmp_path, cnn_model, vision_spec):
    from omegaconf import OmegaConf

    export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"], format_options={"onnx": {"opset": 17}})
    snap = OmegaConf.load(tmp_path / "config.yaml")
    assert snap.format.onnx.opset == 17
    assert snap.task_spec.input_schema.image_size == [3, 32, 32]
    assert snap.model["class"] == "exporter.models.simple_cnn.SimpleCNN"
    assert snap.quantization.mode == "none"


def test_rebuild_gives_identical_onnx_bytes(tmp_path, cnn_model, vision_spec):
    a = export_model(cnn_model, None, vision_spec, tmp_path / "a", formats=["onnx"])
    b = export_model(cnn_model, None, vision_spec, tmp_path / "b", formats=["onnx"])
    assert a["onnx"].read_bytes() == b["onnx"].read_bytes()


def test_the_specs_validation_command(tmp_path, monkeypatch):
    """The spec's own validation script, with this package's import paths."""
    monkeypatch.chdir(tmp_path)

    class DummyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3)
            self.fc = nn.Linear(16 * 30 * 30, 10)

        def forward(self, x):
            x = self.conv(x)
            return self.fc(x.flatten(1))

    model = DummyCNN()
    task_spec = TaskSpec(task_name="vision_export_test", modality="vision", task_type="vision_classification",
                         input_schema={"image_size": [3, 32, 32]}, output_schema={"num_classes": 10})
    adapter = VisionClassificationAdapter()
    exports = export_model(model, adapter, task_spec, export_dir="test_exports",
                           formats=["torchscript", "onnx", "pytorch"])
    assert exports["torchscript"].exists()
    assert exports["onnx"].exists()
    assert exports["metadata"].exists()


def test_wrong_kinds_of_arguments_are_a_config_error_naming_the_argument(tmp_path, cnn_model, vision_spec):
    cases = [
        ({"model": lambda x: x}, "model: expected a torch.nn.Module, got a function (test_wrong_kinds"),
        ({"model": type(cnn_model)}, "model: expected a torch.nn.Module, got the class SimpleCNN itself; pass an instance"),
        ({"task_spec": vision_spec.to_dict()}, "task_spec: expected a TaskSpec, got a dict; TaskSpec.from_mapping"),
        ({"export_dir": None}, "export_dir: expected a folder path (a str or a Path), got None"),
        ({"adapter": LanguageModelingAdapter}, "adapter: expected None (the task type's own adapter) or a ModelAdapter, "
                                               "got the class LanguageModelingAdapter itself"),
        ({"formats": []}, "formats: expected a list of format names"),
        ({"format_options": {"onnx": 17}}, "format_options['onnx']: expected a dict of options"),
        ({"validate": "strict"}, "validate: expected None, a dict of fields or a ValidateConfig, got a str"),
        ({"wait": "no"}, "wait: expected True or False, got a str"),
        ({"seed": 0.5}, "seed: expected a whole number, got a float 0.5"),
        ({"seed": None}, "seed: expected a whole number, got None"),
    ]
    for change, said in cases:
        args = {"model": cnn_model, "adapter": None, "task_spec": vision_spec, "export_dir": tmp_path / "out",
                "formats": ["onnx"], **change}
        with pytest.raises(ConfigError) as caught:
            export_model(**args)
        assert str(caught.value).startswith(said), (change, str(caught.value))
    assert not (tmp_path / "out").exists()
    for fields, said in (({"input_schema": "abc"}, "task_spec.input_schema: expected a mapping of names to values"),
                         ({"task_name": 5}, "task_spec.task_name: expected a string, got int 5")):
        with pytest.raises(ConfigError, match=said.replace("(", r"\(")):
            TaskSpec(**{"task_name": "v", "modality": "vision", "task_type": "vision_classification", **fields})


class MaskDropped(nn.Module):
    """Pads only where the mask says so, on a branch tracing takes once: the example's all-ones mask
    traces the branch that ignores the mask, so the artifact drops that input."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        hidden = self.emb(input_ids)
        if bool(attention_mask.min() == 0):
            hidden = hidden * attention_mask.unsqueeze(-1)
        return self.fc(hidden.mean(1))


def test_the_check_judges_error_not_noise():
    """Per output, max |diff| <= atol + rtol * max |eager|: noise near an element of zero passes (an
    elementwise bound would fail it), an error of a fraction of the output's scale does not."""
    import numpy as np

    from exporter.build.compare import CRITERION, Tolerance, compare

    tolerance = Tolerance(atol=1e-4, rtol=1e-3, gated=True)
    eager = np.array([9.3, -4.0, 1e-6, 0.0], dtype=np.float32)
    noisy = eager + np.array([1e-5, -2e-5, 1.9e-4, -1.5e-4], dtype=np.float32)  # rounding of a sum of ~9
    check = compare("example", {}, eager, noisy, tolerance)
    assert check.within_tolerance and check.max_abs_eager == np.float32(9.3), check
    assert check.max_rel_diff > 100  # elementwise, the element near zero is off by a factor of 190
    wrong = eager.copy()
    wrong[1] += 0.05  # a wrong weight: 0.5% of the output's scale
    assert not compare("example", {}, eager, wrong, tolerance).within_tolerance
    assert "max |eager|" in CRITERION


def test_real_errors_still_fail_the_check(tmp_path):
    """A dropped input (the mask, on a branch traced once) and a traced constant (the batch size) fail."""
    spec = TaskSpec("t", "text", "text_classification", {"vocab_size": 50, "max_seq_len": 8, "attention_mask": True},
                    {"num_classes": 3})
    out = export_model(MaskDropped(), None, spec, tmp_path / "mask", formats=["torchscript"])
    record = json.loads(out["metadata"].read_text())["artifacts"]["torchscript"]
    assert record["status"] == "failed" and "second example" in record["error"], record.get("error")
    assert record["validation"]["criterion"] == "per output: max |artifact - eager| <= atol + rtol * max |eager|"
    vision = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 8, 8]})
    out = export_model(BatchBaked(), None, vision, tmp_path / "baked", formats=["torchscript"])
    assert json.loads(out["metadata"].read_text())["artifacts"]["torchscript"]["status"] == "failed"
