"""Per-format options and the surprises each backend hides."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter import ConfigError, export_model, export_onnx, export_torchscript


def test_dynamo_backend_at_opset_18(tmp_path, cnn_model, vision_spec):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"],
                       format_options={"onnx": {"backend": "dynamo", "opset": 18}})
    assert onnx.load(str(out["onnx"])).opset_import[0].version == 18
    md = json.loads(out["metadata"].read_text())
    assert md["onnx_backend"] == "dynamo" and md["artifacts"]["onnx"]["validation"]["passed"]


def test_dynamo_below_opset_18_is_refused_before_export(tmp_path, cnn_model, vision_spec):
    with pytest.raises(ConfigError, match=r"backend=dynamo exports opset 18 or newer.*opset=14"):
        export_model(cnn_model, None, vision_spec, tmp_path / "x", formats=["onnx"],
                     format_options={"onnx": {"backend": "dynamo", "opset": 14}})
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("opset", [13, 17])
def test_auto_backend_uses_legacy_below_18_and_keeps_the_opset(tmp_path, cnn_model, vision_spec, opset):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"],
                       format_options={"onnx": {"opset": opset}})
    assert onnx.load(str(out["onnx"])).opset_import[0].version == opset
    assert json.loads(out["metadata"].read_text())["onnx_backend"] == "legacy"


def test_custom_input_and_output_names(tmp_path, cnn_model, vision_spec):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"],
                       format_options={"onnx": {"input_names": ["image"], "output_names": ["scores"]}})
    session = ort.InferenceSession(str(out["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["scores"]
    assert session.get_inputs()[0].shape[0] == "batch"


def test_wrong_number_of_input_names_is_refused(tmp_path, cnn_model, vision_spec):
    with pytest.raises(ConfigError, match=r"format.onnx.input_names: the model takes 1 input"):
        export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"],
                     format_options={"onnx": {"input_names": ["a", "b"]}})


def test_torchscript_freeze(tmp_path, cnn_model, vision_spec):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["torchscript"],
                       format_options={"torchscript": {"freeze": True}})
    md = json.loads(out["metadata"].read_text())
    assert md["artifacts"]["torchscript"]["details"]["frozen"] is True
    # frozen: no parameters left as attributes, weights are constants of the graph
    assert not list(torch.jit.load(str(out["torchscript"])).parameters())
    assert md["artifacts"]["torchscript"]["validation"]["passed"]


def test_state_dict_as_safetensors(tmp_path, cnn_model, vision_spec):
    from safetensors.torch import load_file

    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["pytorch"],
                       format_options={"pytorch": {"serialization": "safetensors"}})
    assert out["pytorch"].name == "model.safetensors"
    assert set(load_file(str(out["pytorch"]))) == set(cnn_model.state_dict())


def test_quantized_safetensors_is_refused(tmp_path, lm_model, lm_spec):
    with pytest.raises(ConfigError, match="safetensors.*cannot hold quantized"):
        export_model(lm_model, None, lm_spec, tmp_path, formats=["pytorch"], quantization="dynamic",
                     format_options={"pytorch": {"serialization": "safetensors"}})


def test_quint8_is_for_onnx_only(tmp_path, lm_model, lm_spec):
    from exporter.config.schema import QuantizationConfig, QuantizationMode, WeightType

    q = QuantizationConfig(mode=QuantizationMode.dynamic, weight_type=WeightType.quint8)
    out = export_model(lm_model, None, lm_spec, tmp_path / "onnx", formats=["onnx"], quantization=q)
    assert "onnx" in out
    with pytest.raises(ConfigError, match=r"weight_type=quint8.*torchscript.*valid values: \['qint8', 'auto'\]"):
        export_model(lm_model, None, lm_spec, tmp_path / "ts", formats=["torchscript"], quantization=q)


def test_state_dict_check_fails_when_the_file_misses_weights(tmp_path, vision_spec):
    """A weight that lives outside the state dict cannot be restored from it: the check must see that."""

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 32 * 32, 10)

        def state_dict(self, *args, **kwargs):  # drops the bias, as a buggy custom state_dict would
            sd = super().state_dict(*args, **kwargs)
            sd.pop("fc.bias", None)
            return sd

        def forward(self, x):
            return self.fc(x.flatten(1))

    out = export_model(Hidden(), None, vision_spec, tmp_path, formats=["pytorch"])
    assert "pytorch" not in out
    md = json.loads((tmp_path / "metadata.json").read_text())
    record = md["artifacts"]["pytorch"]
    assert md["status"] == "failed" and record["status"] == "failed", record
    assert "Error(s) in loading state_dict for Hidden" in record["error"], record  # the check loaded it back
    assert not (tmp_path / "model.pth").exists()


def test_export_onnx_helper(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 3)).eval()
    path = export_onnx(model, torch.rand(1, 8), tmp_path / "sub" / "linear.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 8)
    assert [i.name for i in session.get_inputs()] == ["input"]
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).detach().numpy(), atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["linear.onnx"]


def test_export_torchscript_helper_quantized(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    fp32 = export_torchscript(model, torch.rand(1, 64), tmp_path / "fp32.pt")
    q = export_torchscript(model, torch.rand(1, 64), tmp_path / "q.pt", quantization="dynamic")
    assert q.stat().st_size < fp32.stat().st_size
    assert tuple(torch.jit.load(str(q))(torch.rand(2, 64)).shape) == (2, 4)


def test_text_onnx_with_fixed_sequence_is_checked_at_full_length(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["onnx"],
                       format_options={"onnx": {"dynamic_sequence": False}})
    session = ort.InferenceSession(str(out["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 32]
    checks = json.loads(out["metadata"].read_text())["artifacts"]["onnx"]["validation"]["checks"]
    assert [c["input_shapes"]["input_ids"] for c in checks] == [[1, 32], [2, 32]]


def test_text_second_check_uses_a_shorter_sequence(tmp_path, lm_model, lm_spec):
    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["onnx", "torchscript"])
    md = json.loads(out["metadata"].read_text())
    for name in ("onnx", "torchscript"):
        checks = md["artifacts"][name]["validation"]["checks"]
        assert [c["input_shapes"]["input_ids"] for c in checks] == [[1, 32], [2, 16]]
    assert md["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}


def test_auto_backend_from_opset_18_uses_dynamo(tmp_path, cnn_model, vision_spec):
    out = export_model(cnn_model, None, vision_spec, tmp_path, formats=["onnx"],
                       format_options={"onnx": {"opset": 18}})
    md = json.loads(out["metadata"].read_text())
    assert md["onnx_backend"] == "dynamo" and md["opset"] == 18


def test_artifacts_carry_their_tags_in_their_own_format(tmp_path, lm_model, lm_spec):
    from safetensors import safe_open

    out = export_model(lm_model, None, lm_spec, tmp_path, formats=["onnx", "torchscript", "pytorch"],
                       format_options={"pytorch": {"serialization": "safetensors"}})
    meta = ort.InferenceSession(str(out["onnx"]), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert meta.custom_metadata_map["exporter.task_type"] == "language_modeling"
    assert json.loads(meta.custom_metadata_map["exporter.adapters.example_inputs"]) == {"input_ids": ["int64", [1, 32]]}
    extra = {"exporter.json": ""}
    torch.jit.load(str(out["torchscript"]), _extra_files=extra)
    assert json.loads(extra["exporter.json"])["exporter.task_name"] == "lm_export_test"
    with safe_open(str(out["pytorch"]), "pt") as f:
        assert f.metadata()["exporter.quantization"] == "none"


class DataDependent(torch.nn.Module):
    """A Python branch on a tensor value: torch.export refuses it, the legacy tracer records one branch."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 4)

    def forward(self, pixel_values):
        if pixel_values.sum() > -1:  # always true for images in [0, 1)
            return self.fc(pixel_values.flatten(1))
        return -self.fc(pixel_values.flatten(1))


def test_auto_backend_falls_back_to_legacy_when_dynamo_fails(tmp_path):
    from exporter import TaskSpec

    spec = TaskSpec("v", "vision", "vision_classification", {"image_size": [3, 8, 8]})
    out = export_model(DataDependent(), None, spec, tmp_path, formats=["onnx"], format_options={"onnx": {"opset": 18}})
    md = json.loads(out["metadata"].read_text())
    details = md["artifacts"]["onnx"]["details"]
    assert md["onnx_backend"] == "legacy" and details["backend_requested"] == "auto"
    assert details["dynamo_error"]
    assert onnx.load(str(out["onnx"])).opset_import[0].version == 18
