"""Inputs declared in the config (task_spec.inputs): any mix of inputs from the command line, each
dynamic axis by name, checked at two shapes in every format."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from exporter import TaskSpec, export_model
from exporter.errors import ConfigError

NET = '''
import torch
class Net(torch.nn.Module):
    """Token ids, a float feature vector and a mask in; three logits out."""
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(100, 8)
        self.lin = torch.nn.Linear(12, 3)
    def forward(self, ids, feats, mask):
        h = (self.emb(ids) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.lin(torch.cat([h, feats], -1))
'''
INPUTS = [
    {"name": "ids", "dtype": "int64", "shape": [12], "range": [0, 100], "dynamic_axes": {1: "sequence"}},
    {"name": "feats", "dtype": "float32", "shape": [4], "generator": "normal"},
    {"name": "mask", "dtype": "int64", "shape": [12], "generator": "mask", "dynamic_axes": {1: "sequence"}},
]
OVERRIDE = ("task_spec.inputs=[{name:ids,dtype:int64,shape:[12],range:[0,100],dynamic_axes:{1:sequence}},"
            "{name:feats,dtype:float32,shape:[4],generator:normal},"
            "{name:mask,dtype:int64,shape:[12],generator:mask,dynamic_axes:{1:sequence}}]")


@pytest.fixture
def net(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(NET)
    (tmp_path / "cfg" / "model").mkdir(parents=True)
    (tmp_path / "cfg" / "model" / "pair.yaml").write_text("# @package model\n_target_: mynets.Net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import mynets

    importlib.reload(mynets)
    return mynets.Net


def _spec(**changes):
    return TaskSpec("pair", "text", "text_classification", output_schema={"num_classes": 3},
                    inputs=changes.pop("inputs", INPUTS), **changes)


def test_declared_inputs_are_drawn_named_and_checked_at_two_shapes_in_every_format(tmp_path, net):
    export_model(net(), None, _spec(), tmp_path / "b", formats=["onnx", "torchscript", "exported_program", "pytorch"])
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["status"] == "ok"
    assert [(i["name"], i["dtype"], i["shape"]) for i in md["inputs"]] == [
        ("ids", "int64", [1, 12]), ("feats", "float32", [1, 4]), ("mask", "int64", [1, 12])]
    assert md["dynamic_axes"] == {"ids": {"0": "batch", "1": "sequence"}, "feats": {"0": "batch"},
                                  "mask": {"0": "batch", "1": "sequence"}, "logits": {"0": "batch"}}
    for name, record in md["artifacts"].items():
        second = next(c for c in record["validation"]["checks"] if c["label"] == "second example")
        # both named axes tried at another size: batch 2, sequence halved
        assert second["input_shapes"] == {"ids": [2, 6], "feats": [2, 4], "mask": [2, 6]}, name
        assert record["dynamic_axes_verified"] and record["status"] == "ok", name
    import onnx

    graph = onnx.load(tmp_path / "b" / "model.onnx").graph
    assert [i.name for i in graph.input] == ["ids", "feats", "mask"]
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]


def test_the_mask_generator_pads_rows_after_the_first_so_the_mask_is_live():
    from exporter.adapters import adapter_for_task

    adapter = adapter_for_task(_spec())
    mask = adapter.example_inputs(None, batch_size=3, seed=0)["mask"]
    assert mask[0].tolist() == [1] * 12 and 0 < mask[1].sum() < 12 and mask[2].sum() < mask[1].sum()
    feats = adapter.example_inputs(None, batch_size=1, seed=0)["feats"]
    assert feats.dtype.is_floating_point and float(feats.min()) < 0  # normal, not uniform [0, 1)


def test_declared_inputs_from_the_command_line(tmp_path, net):
    r = run_cli("--config-dir", "cfg", "model=pair", "task_spec=text_classification",
                "task_spec.output_schema.num_classes=3", OVERRIDE, "format=[onnx,torchscript]", "export_dir=out",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    md = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert md["status"] == "ok" and [i["name"] for i in md["inputs"]] == ["ids", "feats", "mask"]


@pytest.mark.parametrize("change, message", [
    ({"dtype": "int65"}, "task_spec.inputs[0].dtype: 'int65' is not supported; valid values: "
                         "['int64', 'int32', 'float32', 'float16', 'bool']"),
    ({"generator": "poisson"}, "task_spec.inputs[0].generator: 'poisson' is not known; valid values: "
                               "['uniform', 'normal', 'ones', 'zeros', 'mask', 'arange']"),
    ({"range": None}, "task_spec.inputs[0].range: an integer input drawn uniformly needs its range"),
    ({"shape": [0]}, "task_spec.inputs[0].shape: one example's shape without the batch axis"),
    ({"dynamic_axes": {3: "sequence"}}, "task_spec.inputs[0].dynamic_axes: axis 3 is out of range"),
    ({"dynamic_axes": {0: "rows"}}, "axis 0 is the batch axis, named 'batch'"),
    ({"colour": "red"}, "task_spec.inputs[0]: unknown field(s) ['colour']"),
    ({"shape": [10]}, "task_spec.inputs: axis 'sequence' is 10 in ids but 12 in mask"),
])
def test_bad_declarations_name_the_field_and_the_valid_values(tmp_path, net, change, message):
    first = {k: v for k, v in {**INPUTS[0], **change}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        export_model(net(), None, _spec(inputs=[first, *INPUTS[1:]]), tmp_path / "b", formats=["onnx"])
    assert message in str(info.value)
    assert not (tmp_path / "b").exists()


def test_bad_declaration_on_the_command_line_exits_2_without_a_traceback(tmp_path, net):
    r = run_cli("--config-dir", "cfg", "model=pair", "task_spec=text_classification",
                OVERRIDE.replace("dtype:int64,shape:[12],range", "dtype:int65,shape:[12],range"), "export_dir=out",
                cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "task_spec.inputs[0].dtype: 'int65' is not supported" in r.stderr
    assert not (tmp_path / "out").exists()


def test_an_adapter_and_declared_inputs_together_are_refused(tmp_path, net):
    from exporter import TextClassificationAdapter

    with pytest.raises(ConfigError, match="task_spec.inputs declares the model's inputs, but adapter"):
        export_model(net(), TextClassificationAdapter(), _spec(), tmp_path / "b", formats=["onnx"])


def test_output_axes_name_an_outputs_varying_axis(tmp_path):
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 5)

        def forward(self, tokens):
            return self.emb(tokens)

    spec = TaskSpec("tags", "text", "token_classification",
                    inputs=[{"name": "tokens", "dtype": "int64", "shape": [8], "range": [0, 50],
                             "dynamic_axes": {1: "words"}}],
                    output_axes={"logits": {1: "words"}})
    export_model(Tagger(), None, spec, tmp_path / "b", formats=["onnx"])
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["status"] == "ok" and md["outputs"][0]["dynamic_axes"] == {"0": "batch", "1": "words"}


@pytest.mark.parametrize("output_axes, message", [
    ({"logits": {1: "sequence"}}, "task_spec.output_axes.logits: axis 1 is 3 long but 'sequence' is 12 in the inputs"),
    ({"logits": {1: "whatever"}}, "axis 1 is named 'whatever', which names no input axis"),
    ({"logitz": {1: "sequence"}}, "task_spec.output_axes: no exported output named 'logitz'; outputs: ['logits']"),
    ({"logits": {2: "sequence"}}, "task_spec.output_axes.logits: axis 2 is out of range for its shape [1, 3]"),
])
def test_output_axes_that_do_not_hold_on_the_example_are_refused(tmp_path, net, output_axes, message):
    with pytest.raises(ConfigError) as info:
        export_model(net(), None, _spec(output_axes=output_axes), tmp_path / "b", formats=["onnx"])
    assert message in str(info.value)
    assert not (tmp_path / "b").exists()


def test_batch_names_axis_0_only(tmp_path, net):
    first = {**INPUTS[0], "dynamic_axes": {1: "batch"}}
    with pytest.raises(ConfigError, match="'batch' names axis 0 only; give axis 1 a name of its own"):
        export_model(net(), None, _spec(inputs=[first, *INPUTS[1:]]), tmp_path / "b", formats=["onnx"])


def test_a_declared_name_the_forward_does_not_take_is_refused_not_fed_by_position(tmp_path, net):
    misspelt = [{**INPUTS[2]}, INPUTS[1], {**INPUTS[0], "name": "idz"}]  # mask, feats, idz
    with pytest.raises(ConfigError, match=r"the model's forward takes \['ids', 'feats', 'mask'\], not \['idz'\]"):
        export_model(net(), None, _spec(inputs=misspelt), tmp_path / "b", formats=["onnx"])
    # in another order than the forward's, by name, they are fed by keyword
    reordered = [INPUTS[2], INPUTS[1], INPUTS[0]]
    export_model(net(), None, _spec(inputs=reordered), tmp_path / "ok", formats=["onnx"])
    assert json.loads((tmp_path / "ok" / "metadata.json").read_text())["status"] == "ok"


def test_a_bool_input_draws_both_values():
    from exporter.adapters.declared import parse_inputs

    [flag] = parse_inputs([{"name": "flag", "dtype": "bool", "shape": [64]}])
    import torch

    values = flag.draw(1, {}, torch.Generator().manual_seed(0))
    assert values.dtype == torch.bool and values.any() and not values.all()


def test_output_axes_from_the_command_line(tmp_path, net):
    r = run_cli("--config-dir", "cfg", "model=pair", "task_spec=text_classification",
                "task_spec.output_schema.num_classes=3", OVERRIDE, "task_spec.output_axes={logits:{1:sequence}}",
                "export_dir=out", cwd=tmp_path)
    # parsed and checked like the YAML form: logits [1, 3] has no sequence axis
    assert r.returncode == 2 and "task_spec.output_axes.logits: axis 1 is 3 long but 'sequence' is 12" in r.stderr
