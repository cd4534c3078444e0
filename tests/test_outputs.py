"""Every output by name, in every format, checked one by one; never a silent drop (issue #8)."""

from __future__ import annotations

import json
import textwrap

import onnx
import pytest
import torch

from exporter import ConfigError, TaskSpec, export_model
from exporter.adapters.outputs import flatten_outputs

FORMATS = ["onnx", "torchscript", "pytorch", "exported_program"]


class TwoHead(torch.nn.Module):
    """A plain detector-style module: a shared trunk and two heads returned as a tuple."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Conv2d(3, 8, 3)
        self.boxes = torch.nn.Linear(8, 4)
        self.scores = torch.nn.Linear(8, 3)

    def forward(self, pixel_values):
        hidden = self.trunk(pixel_values).mean((2, 3))
        return self.boxes(hidden), self.scores(hidden)


def spec(task_type="vision_classification", outputs=None, **output_schema):
    return TaskSpec("heads", "vision", task_type, {"image_size": [3, 16, 16]}, output_schema, outputs=outputs)


def metadata(out):
    return json.loads(out["metadata"].read_text())


def test_flatten_names_every_tensor():
    out = flatten_outputs({"a": torch.zeros(1), "b": (torch.zeros(1), None, [torch.zeros(2)]), "c": None, "n": 3})
    assert list(out) == ["a", "b.0", "b.2.0"]
    assert list(flatten_outputs((torch.zeros(1), torch.zeros(1)))) == ["output_0", "output_1"]
    assert list(flatten_outputs(torch.zeros(1), ["logits"])) == ["logits"]


def test_an_unexported_output_fails_the_job_naming_it(tmp_path):
    with pytest.raises(ConfigError) as info:
        export_model(TwoHead(), None, spec(), tmp_path / "a", formats=["onnx"])
    assert str(info.value) == (
        "VisionClassificationAdapter exports ['logits'], but the model returns output_0 float32[1, 4], output_1 "
        "float32[1, 3]. Choose with task_spec.outputs=[...] (names from that list) or task_spec.outputs=all")
    assert not (tmp_path / "a").exists()

    class WithExtra(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 16 * 16, 5)

        def forward(self, pixel_values):
            logits = self.fc(pixel_values.flatten(1))
            return {"logits": logits, "features": pixel_values.mean((2, 3))}

    with pytest.raises(ConfigError, match=r"^the model returns tensors that would not be exported: features "
                                          r"float32\[1, 3\] \(exported: \['logits'\]\)"):
        export_model(WithExtra(), None, spec(), tmp_path / "b", formats=["onnx"])
    out = export_model(WithExtra(), None, spec(outputs=["logits"]), tmp_path / "c", formats=["onnx"])
    assert metadata(out)["outputs_left_out"] == {"features": "float32[1, 3]"}


def test_a_two_head_module_exports_both_heads_by_name_in_every_format(tmp_path):
    out = export_model(TwoHead(), None, spec(outputs=["boxes", "scores"]), tmp_path, formats=FORMATS)
    md = metadata(out)
    assert md["status"] == "ok" and md["output_shape"] == [1, 4]
    assert md["outputs"] == [
        {"name": "boxes", "dtype": "float32", "shape": [1, 4], "dynamic_axes": {"0": "batch"}},
        {"name": "scores", "dtype": "float32", "shape": [1, 3], "dynamic_axes": {"0": "batch"}}]
    for name in FORMATS:
        validation = md["artifacts"][name]["validation"]
        assert set(validation["outputs"]) == {"boxes", "scores"}, name
        # each output is compared on its own, at both shapes
        assert [(c["label"], c["output"]) for c in validation["checks"]] == [
            ("example", "boxes"), ("example", "scores"), ("second example", "boxes"), ("second example", "scores")]
    assert [o.name for o in onnx.load(str(out["onnx"])).graph.output] == ["boxes", "scores"]
    scripted = torch.jit.load(str(out["torchscript"]))
    boxes, scores = scripted(torch.rand(2, 3, 16, 16))
    assert boxes.shape == (2, 4) and scores.shape == (2, 3)
    # the closing table in export.log has a line per output
    log = (tmp_path / "export.log").read_text()
    assert "  boxes" in log and "  scores" in log


def test_all_outputs_with_derived_names_and_a_subset(tmp_path):
    out = export_model(TwoHead(), None, spec(outputs="all"), tmp_path / "all", formats=["onnx"])
    assert [o["name"] for o in metadata(out)["outputs"]] == ["output_0", "output_1"]
    out = export_model(TwoHead(), None, spec(outputs=["output_1"]), tmp_path / "one", formats=["onnx", "pytorch"])
    md = metadata(out)
    assert [o["name"] for o in md["outputs"]] == ["output_1"] and md["outputs_left_out"] == {"output_0": "float32[1, 4]"}
    with pytest.raises(ConfigError, match=r"task_spec.outputs: no output named \['boxes'\]; the model returns: "
                                          r"output_0 float32\[1, 4\], output_1 float32\[1, 3\]"):
        export_model(TwoHead(), None, spec(outputs=["boxes"]), tmp_path / "bad", formats=["onnx"])


def test_object_detection_names_two_heads_like_hugging_face(tmp_path):
    out = export_model(TwoHead(), None, spec("object_detection"), tmp_path, formats=["onnx", "exported_program"])
    md = metadata(out)
    assert [o["name"] for o in md["outputs"]] == ["logits", "pred_boxes"] and md["status"] == "ok"


def test_onnx_output_names_rename_each_output(tmp_path):
    out = export_model(TwoHead(), None, spec(outputs=["boxes", "scores"]), tmp_path / "a", formats=["onnx"],
                       format_options={"onnx": {"output_names": ["b", "s"]}})
    assert [o.name for o in onnx.load(str(out["onnx"])).graph.output] == ["b", "s"]
    with pytest.raises(ConfigError, match=r"output_names: the exported graph has 2 output\(s\) \['boxes', 'scores'\], "
                                          r"but 1 name\(s\) were given"):
        export_model(TwoHead(), None, spec(outputs=["boxes", "scores"]), tmp_path / "b", formats=["onnx"],
                     format_options={"onnx": {"output_names": ["b"]}})


def test_quantized_multi_output_artifact_is_measured(tmp_path):
    class Wide(TwoHead):
        def __init__(self):
            super().__init__()
            self.boxes = torch.nn.Linear(8, 512)
            self.scores = torch.nn.Linear(8, 512)

    out = export_model(Wide(), None, spec(outputs=["boxes", "scores"]), tmp_path, formats=["onnx", "torchscript"],
                       quantization="dynamic", calibration={"num_samples": 4, "heldout_samples": 2})
    md = metadata(out)
    for name in ("onnx", "torchscript"):
        record = md["artifacts"][name]
        assert record["status"] == "ok", record.get("error")
        assert set(record["validation"]["outputs"]) == {"boxes", "scores"}
        assert record["quantization_report"]["fidelity"]["heldout"]["samples"] == 2


ADAPTER_MODULE = '''
import torch

from exporter.adapters import ModelAdapter


class PairAdapter(ModelAdapter):
    """Two float inputs (left, right) of WIDTH features; one output."""

    input_names = ("left", "right")

    def __init__(self, width: int = 6):
        self.width = width

    def example_inputs(self, task_spec, batch_size=1, seed=0, seq_len=None):
        generator = torch.Generator().manual_seed(seed or 0)
        return {name: torch.rand(batch_size, self.width, generator=generator) for name in self.input_names}


class PairModel(torch.nn.Module):
    def __init__(self, width: int = 6):
        super().__init__()
        self.fc = torch.nn.Linear(2 * width, 3)

    def forward(self, left, right):
        return self.fc(torch.cat([left, right], dim=1))
'''


def test_an_adapter_from_the_command_line(tmp_path, cli):
    (tmp_path / "pair.py").write_text(textwrap.dedent(ADAPTER_MODULE))
    env = {"PYTHONPATH": str(tmp_path)}
    args = ("~model", "+model={_target_: pair.PairModel, width: 6}", "+adapter._target_=pair.PairAdapter",
            "+adapter.width=6", "task_spec.output_schema.num_classes=3", "format=[onnx,exported_program]",
            "export_dir=out")
    r = cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    md = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert [i["name"] for i in md["inputs"]] == ["left", "right"] and md["status"] == "ok"
    session_inputs = [i.name for i in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.input]
    assert session_inputs == ["left", "right"]
    wrong = cli("+adapter._target_=pair.PairModel", env=env)
    assert wrong.returncode == 2 and "adapter: pair.PairModel built a PairModel, not an exporter.adapters.ModelAdapter" \
        in wrong.stderr
    hint = cli("adapter._target_=pair.PairAdapter", env=env)
    assert hint.returncode == 2 and "add it with +adapter._target_=pkg.MyAdapter" in hint.stderr


transformers = pytest.importorskip("transformers")
BERT = dict(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)
TEXT = {"vocab_size": 500, "max_seq_len": 32}


@pytest.mark.slow
def test_question_answering_exports_both_logits_with_every_input(tmp_path):
    model = transformers.BertForQuestionAnswering(transformers.BertConfig(**BERT)).eval()
    out = export_model(model, None, TaskSpec("qa", "text", "question_answering", TEXT), tmp_path, formats=FORMATS)
    md = metadata(out)
    assert md["status"] == "ok"
    assert [i["name"] for i in md["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [(o["name"], o["dynamic_axes"]) for o in md["outputs"]] == [
        ("start_logits", {"0": "batch", "1": "sequence"}), ("end_logits", {"0": "batch", "1": "sequence"})]
    for record in md["artifacts"].values():
        assert set(record["validation"]["outputs"]) == {"start_logits", "end_logits"}
        second = [c for c in record["validation"]["checks"] if c["label"] == "second example"]
        assert second and second[0]["input_shapes"]["attention_mask"] == [2, 16]
    import onnxruntime as ort

    session = ort.InferenceSession(str(out["onnx"]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]
    # a padded batch: the artifact matches eager PyTorch on the real tokens
    ids = torch.randint(0, 500, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": torch.zeros_like(ids).numpy()}
    start, end = session.run(None, feed)
    with torch.no_grad():
        eager = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    real = mask.bool().numpy()
    assert abs(start - eager.start_logits.numpy())[real].max() < 1e-4
    assert abs(end - eager.end_logits.numpy())[real].max() < 1e-4


@pytest.mark.slow
def test_token_classification_and_feature_extraction(tmp_path):
    tagger = transformers.BertForTokenClassification(transformers.BertConfig(**BERT, num_labels=5))
    out = export_model(tagger, None, TaskSpec("ner", "text", "token_classification", TEXT, {"num_classes": 5}),
                       tmp_path / "ner", formats=["onnx", "exported_program"])
    md = metadata(out)
    assert md["status"] == "ok" and md["output_shape"] == [1, 32, 5]
    assert md["outputs"][0]["dynamic_axes"] == {"0": "batch", "1": "sequence"}
    encoder = transformers.BertModel(transformers.BertConfig(**BERT))
    feature = TaskSpec("emb", "text", "feature_extraction", TEXT)
    with pytest.raises(ConfigError, match=r"would not be exported: pooler_output float32\[1, 32\]"):
        export_model(encoder, None, feature, tmp_path / "fe0", formats=["onnx"])
    feature.outputs = ["last_hidden_state"]
    out = export_model(encoder, None, feature, tmp_path / "fe", formats=["onnx", "torchscript"])
    md = metadata(out)
    assert md["status"] == "ok" and md["output_shape"] == [1, 32, 32]
    assert md["outputs_left_out"] == {"pooler_output": "float32[1, 32]"}


def test_a_single_tensor_takes_the_one_name_the_config_gives(tmp_path):
    spec = TaskSpec("emb", "vision", "vision_classification", {"image_size": [3, 8, 8]}, outputs=["scores"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
    export_model(model, None, spec, tmp_path / "b", formats=["onnx"])
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["status"] == "ok" and [o["name"] for o in md["outputs"]] == ["scores"]
    assert [o.name for o in onnx.load(tmp_path / "b" / "model.onnx").graph.output] == ["scores"]
