"""format=exported_program: torch.export's ExportedProgram as model.pt2, from the command line and
the Python API, beside the other formats, checked, tamper-evident and reproducible."""

from __future__ import annotations

import json

import pytest
import torch

from exporter import ConfigError, TaskSpec, export_model

from conftest import run_cli

LM = ("model=lm_stub", "task_spec.input_schema.max_seq_len=32")


def _metadata(folder):
    return json.loads((folder / "metadata.json").read_text())


@pytest.fixture(scope="module")
def cnn_program(tmp_path_factory):
    """`format=exported_program` of the shipped default model, built once: read it, or copy it to change it."""
    project = tmp_path_factory.mktemp("cnn_program")
    r = run_cli("format=exported_program", "export_dir=out", cwd=project)
    assert r.returncode == 0, r.stderr
    return project / "out"


@pytest.mark.parametrize("model_args, shapes", [
    ((), [[1, 3, 224, 224], [2, 3, 224, 224]]),
    (LM, [[1, 32], [2, 16]]),
])
def test_both_shipped_models_from_the_command_line(tmp_path, cli, model_args, shapes, request):
    if model_args:
        r = cli(*model_args, "format=exported_program", "export_dir=out")
        assert r.returncode == 0, r.stderr
        out = tmp_path / "out"
    else:  # the default model's build, shared with the tampering test (CI time)
        out = request.getfixturevalue("cnn_program")
    md = _metadata(out)
    record = md["artifacts"]["exported_program"]
    assert md["status"] == "ok" and record["status"] == "ok" and record["file"] == "model.pt2"
    assert [next(iter(c["input_shapes"].values())) for c in record["validation"]["checks"]] == shapes
    assert record["dynamic_axes_verified"] is True and record["details"]["method"] == "torch.export.export"
    # the program loads in torch.export alone, carries the build's tags, and takes other shapes
    extra = {"exporter.json": ""}
    program = torch.export.load(str(out / "model.pt2"), extra_files=extra)
    tags = json.loads(extra["exporter.json"])
    assert tags["exporter.task_type"] == md["task_type"] and tags["exporter.quantization"] == "none"
    example = torch.zeros(3, *shapes[0][1:], dtype=torch.float32 if not model_args else torch.int64)
    assert program.module()(example).shape[0] == 3


def test_beside_every_other_format_and_rebuilt_up_to_date(tmp_path, cli):
    args = (*LM, "format=[onnx,torchscript,pytorch,exported_program]")
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    build = tmp_path / "exports/lm_stub/onnx+torchscript+pytorch+exported_program-none"
    md = _metadata(build)
    assert {name: a["status"] for name, a in md["artifacts"].items()} == {
        "onnx": "ok", "torchscript": "ok", "pytorch": "ok", "exported_program": "ok"}
    assert (build / "model.pt2").is_file() and md["opset"] == 14  # format keys still come from onnx
    again = cli(*args)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_tampering_is_named_and_verify_rebuilds_identical_bytes(tmp_path, cnn_program):
    import shutil

    shutil.copytree(cnn_program, tmp_path / "b", symlinks=True)  # `format=exported_program`, built in another process
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A rebuild in a fresh process gives the same bytes: torch.export.save is deterministic.
    r = run_cli("verify", str(tmp_path / "b"), cwd=elsewhere)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical bytes" in r.stdout and "model.pt2" in r.stdout
    data = bytearray((tmp_path / "b/model.pt2").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "b/model.pt2").write_bytes(bytes(data))
    card = run_cli("card", str(tmp_path / "b"), cwd=elsewhere)
    assert card.returncode == 1 and "model.pt2" in card.stdout and "modified" in card.stdout.lower()
    r = run_cli("verify", str(tmp_path / "b"), cwd=elsewhere)
    assert r.returncode == 1 and "model.pt2 MODIFIED" in r.stdout
    assert "nothing was rebuilt" in r.stdout  # its one artifact already differs: no rebuild to say so again


def test_quantization_is_refused_with_the_reason_and_the_formats_that_take_it(tmp_path, cli):
    r = cli("format=exported_program", "quantization=dynamic")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: quantization=dynamic is not available for format exported_program (a quantized ExportedProgram "
        "(PT2E) is lowered for one backend; export the fp32 program and quantize it for that backend); formats "
        "that take it: ['onnx', 'torchscript', 'pytorch']"]
    assert not (tmp_path / "exports").exists()


class BufferSlicingLM(torch.nn.Module):
    """Slices a [max, max] causal-mask buffer to the sequence length: at the full length torch.export
    fixes the sequence axis to the buffer's size."""

    def __init__(self, vocab=50, max_len=16):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, vocab)
        self.register_buffer("mask", torch.full((max_len, max_len), float("-inf")).triu(1), persistent=False)

    def forward(self, input_ids):
        n = input_ids.shape[1]
        hidden = self.embed(input_ids)
        weights = (hidden @ hidden.transpose(1, 2) + self.mask[:n, :n]).softmax(-1)
        return self.head(weights @ hidden)


def test_an_axis_the_code_fixes_is_named_with_the_option_that_turns_it_off(tmp_path):
    spec = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 50, "max_seq_len": 16})
    out = export_model(BufferSlicingLM(), None, spec, tmp_path / "a", formats=["exported_program"])
    error = _metadata(tmp_path / "a")["artifacts"]["exported_program"]["error"]
    assert "exported_program" not in out
    assert "does not keep the declared dynamic axis sequence symbolic" in error
    assert "format.exported_program.dynamic_sequence=false" in error
    out = export_model(BufferSlicingLM(), None, spec, tmp_path / "b", formats=["exported_program"],
                       format_options={"exported_program": {"dynamic_sequence": False}})
    record = _metadata(tmp_path / "b")["artifacts"]["exported_program"]
    assert record["status"] == "ok" and "exported_program" in out
    # the batch axis is still proven; the sequence stays at the example's length
    assert [c["input_shapes"]["input_ids"] for c in record["validation"]["checks"]] == [[1, 16], [2, 16]]


def test_options_are_checked_like_every_format(tmp_path, cnn_model, vision_spec):
    with pytest.raises(ConfigError, match="format_options\\['exported_program'\\]: .*strickt"):
        export_model(cnn_model, None, vision_spec, tmp_path, formats=["exported_program"],
                     format_options={"exported_program": {"strickt": True}})


@pytest.mark.slow
def test_a_sweep_over_every_format(tmp_path, cli):
    r = cli("-m", "format=onnx,torchscript,pytorch,exported_program,safetensors", *LM)
    assert r.returncode == 0, r.stdout + r.stderr
    builds = sorted(p.parent.name for p in (tmp_path / "exports" / "lm_stub").glob("*/metadata.json"))
    assert builds == ["exported_program-none", "onnx-none", "pytorch-none", "safetensors-none", "torchscript-none"]
    assert "sweep: 5 job(s), 5 ok, 0 failed" in r.stdout


def test_a_strict_export_verifies_by_content_and_stores_no_sample_input(tmp_path, cli):
    import zipfile

    assert cli("format=exported_program", "format.exported_program.strict=true", "export_dir=s").returncode == 0
    archive = zipfile.ZipFile(tmp_path / "s" / "model.pt2")
    assert all(i.file_size == 0 for i in archive.infolist() if "sample_inputs" in i.filename)
    record = _metadata(tmp_path / "s")["artifacts"]["exported_program"]
    assert record["details"]["strict"] is True and len(record["details"]["content_sha256"]) == 64
    r = run_cli("verify", str(tmp_path / "s"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical" in r.stdout


def test_a_dynamic_sequence_is_proven_even_with_a_fixed_batch(tmp_path):
    from exporter.models import LMStub

    spec = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 100, "max_seq_len": 16})
    out = export_model(LMStub(vocab_size=100), None, spec, tmp_path, formats=["exported_program", "onnx"],
                       format_options={"exported_program": {"dynamic_batch": False}})
    md = _metadata(tmp_path)
    record = md["artifacts"]["exported_program"]
    assert [c["input_shapes"]["input_ids"] for c in record["validation"]["checks"]] == [[1, 16], [1, 8]]
    assert record["status"] == "ok" and record["dynamic_axes_verified"] is True
    # each artifact records its own axes; the build's are the ones every artifact has
    assert record["dynamic_axes"]["input_ids"] == {"1": "sequence"}
    assert md["artifacts"]["onnx"]["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    assert md["dynamic_axes"]["input_ids"] == {"1": "sequence"}
    assert "exported_program" in out


def test_data_dependent_control_flow_is_one_message_with_a_remedy(tmp_path, capfd):
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 4)

        def forward(self, pixel_values):
            y = self.fc(pixel_values.flatten(1))
            return y * 2 if y.sum() > 0 else y

    spec = TaskSpec("b", "vision", "vision_classification", {"image_size": [3, 8, 8]})
    capfd.readouterr()
    export_model(Branchy(), None, spec, tmp_path, formats=["exported_program"])
    error = _metadata(tmp_path)["artifacts"]["exported_program"]["error"]
    assert "branches on tensor values" in error and "torch.cond" in error
    # torch's partial graph goes to export.log, not to the terminal
    assert "def forward" not in capfd.readouterr().err
    assert "what torch.export printed" in (tmp_path / "export.log").read_text()
