"""Encoder-decoder models (T5, BART): parts per format, each checked at two shapes, and greedy
decoding through the loaded parts compared with eager generate. ONNX carries the key/value cache
(encoder_model, decoder_model, decoder_with_past_model, Optimum's files and names); the other
formats, and ONNX with use_cache=false, the encoder and the decoder. Tiny models built from a
config (no hub); their weights are drawn wide so that greedy decoding picks varied tokens."""

from __future__ import annotations

import json

import pytest

from conftest import run_card_snippets, run_cli

pytestmark = pytest.mark.slow  # Hugging Face models: run in CI
transformers = pytest.importorskip("transformers")

FORMATS = ["onnx", "torchscript", "exported_program", "pytorch"]
FILES = {"onnx": "onnx", "torchscript": "torchscript", "exported_program": "pt2", "pytorch": "pth"}


def _t5():
    import torch

    torch.manual_seed(0)
    T = transformers
    return T.T5ForConditionalGeneration(T.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, initializer_factor=20.0)).eval()


def _bart():
    import torch

    torch.manual_seed(0)
    T = transformers
    return T.BartForConditionalGeneration(T.BartConfig(
        vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        init_std=0.5)).eval()


def _spec(use_cache=None):
    from exporter import TaskSpec

    return TaskSpec("s2s", "text", "seq2seq_lm", {"vocab_size": 100, "max_seq_len": 12}, {"vocab_size": 100},
                    use_cache=use_cache)


CACHED = ("encoder_model", "decoder_model", "decoder_with_past_model")


def _parts(fmt):
    return CACHED if fmt == "onnx" else ("encoder", "decoder")


@pytest.fixture(scope="module")
def t5_every_format(tmp_path_factory):
    """T5 exported in every format (ONNX with the cache), once for the tests that read it (CI time)."""
    from exporter import export_model

    folder = tmp_path_factory.mktemp("t5_every_format") / "b"
    export_model(_t5(), None, _spec(), folder, formats=FORMATS)
    return folder


@pytest.mark.parametrize("build, formats", [(_t5, FORMATS), (_bart, ["onnx", "pytorch"])], ids=["t5", "bart"])
def test_parts_in_every_format_with_the_greedy_decoding_check(tmp_path, build, formats, request):
    from exporter import export_model

    FORMATS = formats  # noqa: N806 - BART: both layouts (ONNX with the cache, a state dict without); T5: every format
    if build is _t5:
        folder = request.getfixturevalue("t5_every_format")
    else:
        folder = tmp_path / "b"
        export_model(build(), None, _spec(), folder, formats=FORMATS)
    md = json.loads((folder / "metadata.json").read_text())
    assert md["status"] == "ok"
    # the folder: one file per part and format (ONNX: the three parts with the cache and the files
    # ORTModelForSeq2SeqLM reads beside them), beside the build's records
    expected = {f"{part}.{FILES[fmt]}" for fmt in FORMATS for part in _parts(fmt)}
    assert {p.name for p in folder.iterdir()} == expected | {
        "metadata.json", "config.yaml", "export.log", "config.json", "generation_config.json"}
    assert [i["name"] for i in md["parts"]["encoder"]["inputs"]] == ["input_ids", "attention_mask"]
    assert [o["name"] for o in md["parts"]["encoder"]["outputs"]] == ["last_hidden_state"]
    assert [i["name"] for i in md["parts"]["decoder"]["inputs"]] == [
        "decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"]
    assert md["parts"]["decoder"]["outputs"][0]["dynamic_axes"] == {"0": "batch", "1": "decoder_sequence"}
    # the cached layout: Optimum's names
    assert [i["name"] for i in md["parts"]["decoder_model"]["inputs"]] == [
        "input_ids", "encoder_hidden_states", "encoder_attention_mask"]
    assert [o["name"] for o in md["parts"]["decoder_model"]["outputs"]][:5] == [
        "logits", "present.0.decoder.key", "present.0.decoder.value", "present.0.encoder.key", "present.0.encoder.value"]
    with_past = md["parts"]["decoder_with_past_model"]
    assert [i["name"] for i in with_past["inputs"]][:6] == [
        "input_ids", "encoder_attention_mask", "past_key_values.0.decoder.key", "past_key_values.0.decoder.value",
        "past_key_values.0.encoder.key", "past_key_values.0.encoder.value"]
    assert [o["name"] for o in with_past["outputs"]] == [
        "logits", "present.0.decoder.key", "present.0.decoder.value", "present.1.decoder.key", "present.1.decoder.value"]
    # each part's own axes (the parts share names: input_ids, present.*)
    assert md["parts"]["encoder_model"]["inputs"][0]["dynamic_axes"] == {"0": "batch", "1": "encoder_sequence"}
    assert md["parts"]["decoder_model"]["inputs"][0]["dynamic_axes"] == {"0": "batch", "1": "decoder_sequence"}
    assert md["parts"]["decoder_model"]["outputs"][1]["dynamic_axes"] == {"0": "batch", "2": "decoder_sequence"}
    assert with_past["outputs"][1]["dynamic_axes"] == {"0": "batch", "2": "total_decoder_sequence"}
    assert md["cache"]["layout"] == "encoder-decoder" and md["cache"]["layers"] == 2
    assert md["cache"]["artifacts"] == [f"onnx/{part}" for part in CACHED]
    assert md["outputs"][0]["name"] == "logits" and md["output_shape"] == [1, 6, 100]
    for fmt in FORMATS:
        for part in _parts(fmt):
            record = md["artifacts"][f"{fmt}/{part}"]
            assert record["status"] == "ok" and record["file"] == f"{part}.{FILES[fmt]}"
            second = next(c for c in record["validation"]["checks"] if c["label"] == "second example")
            assert record["dynamic_axes_verified"] and second["input_shapes"]
            greedy = record["validation"]["greedy_decoding"]
            assert greedy["match"] and greedy["artifact_tokens"] == greedy["eager_tokens"]
            assert greedy["steps"] == 4 and len(greedy["eager_tokens"][0]) == 5
            # through the cache: each step's logits against eager's on the whole prefix
            assert ("through_cache" in greedy) is (fmt == "onnx")
            assert fmt != "onnx" or greedy["through_cache"]["passed"]
    # the check is not vacuous: the decoded tokens vary
    assert len({t for row in greedy["eager_tokens"] for t in row[1:]}) > 2
    # the past proven at another length than the example's
    shapes = {c["input_shapes"]["past_key_values.0.decoder.key"][2]
              for c in md["artifacts"]["onnx/decoder_with_past_model"]["validation"]["checks"]}
    assert len(shapes) == 2
    decoder = md["artifacts"][f"{FORMATS[-1]}/decoder"]["dynamic_axes"]
    assert decoder["decoder_input_ids"] == {"0": "batch", "1": "decoder_sequence"}
    assert decoder["encoder_hidden_states"] == {"0": "batch", "1": "encoder_sequence"}
    assert md["artifacts"]["onnx/decoder_model"]["runtimes"]["optimum"]["class"] == "ORTModelForSeq2SeqLM"


@pytest.fixture(scope="module")
def t5_onnx_without_cache(tmp_path_factory):
    """T5 exported to ONNX with task_spec.use_cache=false, once for the tests that read it (CI time)."""
    from exporter import export_model

    folder = tmp_path_factory.mktemp("t5_no_cache") / "b"
    export_model(_t5(), None, _spec(use_cache=False), folder, formats=["onnx"])
    return folder


def test_use_cache_false_keeps_the_encoder_and_decoder_and_true_refuses_what_cannot_carry_it(
        tmp_path, t5_onnx_without_cache):
    from exporter import export_model
    from exporter.errors import ConfigError

    md = json.loads((t5_onnx_without_cache / "metadata.json").read_text())
    assert md["status"] == "ok" and sorted(md["artifacts"]) == ["onnx/decoder", "onnx/encoder"] and md["cache"] is None
    assert {p.name for p in t5_onnx_without_cache.iterdir()} == {
        "encoder.onnx", "decoder.onnx", "metadata.json", "config.yaml", "export.log"}
    with pytest.raises(ConfigError, match="task_spec.use_cache=true: format torchscript cannot carry"):
        export_model(_t5(), None, _spec(use_cache=True), tmp_path / "t", formats=["onnx", "torchscript"])
    with pytest.raises(ConfigError, match="task_spec.use_cache=true: the cache is exported by the tool's own"):
        export_model(_t5(), _mismatched_adapter(), _spec(use_cache=True), tmp_path / "a", formats=["onnx"])
    assert not (tmp_path / "t").exists() and not (tmp_path / "a").exists()


def test_the_greedy_check_catches_parts_that_disagree_with_the_model(t5_onnx_without_cache):
    import numpy as np
    import onnxruntime as ort

    from exporter.adapters.seq2seq import Seq2SeqLMAdapter

    runs = {}
    for part in ("encoder", "decoder"):
        session = ort.InferenceSession(str(t5_onnx_without_cache / f"{part}.onnx"), providers=["CPUExecutionProvider"])
        runs[part] = lambda inputs, s=session: s.run(None, {k: np.asarray(v) for k, v in inputs.items()})
    other = _bart()  # same sizes, other weights: the exported parts do not decode like it
    adapter = Seq2SeqLMAdapter(_spec())
    outcome = adapter.check_parts(other, adapter.parts(other), runs, steps=4, seed=0, tolerance=1e-3)
    assert outcome["match"] is False and outcome["first_difference"] >= 1
    assert outcome["artifact_tokens"] != outcome["eager_tokens"]


def test_the_cached_check_catches_parts_that_disagree_with_the_model(t5_every_format):
    import numpy as np
    import onnxruntime as ort

    from exporter.adapters.seq2seq import Seq2SeqLMAdapter

    runs = {}  # the ONNX parts with the cache, of T5's build in every format
    for part in CACHED:
        session = ort.InferenceSession(str(t5_every_format / f"{part}.onnx"), providers=["CPUExecutionProvider"])
        runs[part] = lambda inputs, s=session: s.run(None, {k: np.asarray(v) for k, v in inputs.items()})
    model = _t5()
    adapter = Seq2SeqLMAdapter(_spec())
    adapter = adapter.with_cache(adapter.cache_layout(model))
    outcome = adapter.check_parts(model, adapter.parts(model), runs, steps=4, seed=0, tolerance=1e-3)
    assert outcome["match"] and outcome["through_cache"]["passed"]  # the model they were built from
    other = _bart()  # same sizes, other weights: the exported parts do not decode like it
    outcome = adapter.check_parts(other, adapter.parts(other), runs, steps=4, seed=0, tolerance=1e-3)
    assert outcome["match"] is False and outcome["through_cache"]["passed"] is False
    assert outcome["through_cache"]["first_failing_step"] == 0


def test_hf_seq2seq_lm_from_the_command_line_and_verify(tmp_path):
    _t5().save_pretrained(tmp_path / "t5-tiny")
    r = run_cli("model=hf_seq2seq_lm", f"model.path={tmp_path / 't5-tiny'}", "format=[onnx,torchscript]",
                "task_spec.input_schema.max_seq_len=16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    build = tmp_path / "exports" / "t5-tiny" / "onnx+torchscript-none"
    md = json.loads((build / "metadata.json").read_text())
    assert md["status"] == "ok" and sorted(md["artifacts"]) == [
        "onnx/decoder_model", "onnx/decoder_with_past_model", "onnx/encoder_model", "torchscript/decoder",
        "torchscript/encoder"]
    assert md["task_spec"]["input_schema"]["vocab_size"] == 100  # read from config.json
    out = r.stderr + r.stdout
    assert ("greedy decoding of 4 tokens through encoder_model + decoder_model + decoder_with_past_model: matches "
            "eager generate") in out
    assert "greedy decoding of 4 tokens through encoder + decoder: matches eager generate" in out
    assert "note: torchscript is built without the key/value cache" in out
    # the model's own config.json, copied beside the graphs for ORTModelForSeq2SeqLM
    assert (build / "config.json").read_bytes() == (tmp_path / "t5-tiny" / "config.json").read_bytes()
    card = run_cli("card", str(build), cwd=tmp_path)
    assert card.returncode == 0 and "## Part decoder: inputs" in card.stdout
    assert "## Part decoder_with_past_model: inputs" in card.stdout and "ORTModelForSeq2SeqLM" in card.stdout
    encoder_part = card.stdout[card.stdout.index("## Part encoder_model: inputs"):]
    assert "`input_ids`: int64 [1, 16] (dynamic: axis 0 = batch, axis 1 = encoder_sequence)" in encoder_part
    assert ("- onnx: greedy decoding of 4 tokens through the parts and their key/value cache matches eager generate"
            in card.stdout)
    assert "- torchscript: greedy decoding of 4 tokens through the parts matches eager generate" in card.stdout
    # each part's snippet runs as printed, fed the part's own inputs (the decoder's, the past's)
    assert sorted(run_card_snippets(build, tmp_path)) == sorted(md["artifacts"]), card.stdout
    v = run_cli("verify", str(build), cwd=tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "onnx/decoder_with_past_model" in v.stdout and "identical" in v.stdout


def test_a_model_without_an_encoder_is_refused_for_seq2seq(tmp_path):
    import torch

    from exporter import export_model
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError, match="seq2seq_lm needs an encoder-decoder model with get_encoder"):
        export_model(torch.nn.Linear(4, 4), None, _spec(), tmp_path / "b", formats=["onnx"])
    assert not (tmp_path / "b").exists()


def test_dynamic_quantization_of_the_cached_parts_reports_the_greedy_check(tmp_path):
    from exporter import export_model

    export_model(_t5(), None, _spec(), tmp_path / "b", formats=["onnx"], quantization="dynamic")
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    outcomes = []
    for part in CACHED:
        record = md["artifacts"][f"onnx/{part}"]
        # quantized parts are reported, not gated: kept whatever the greedy check found
        assert record["status"] == "ok", record
        report = record["quantization_report"]
        assert report["size"]["bytes"] < report["size"]["fp32_bytes"] and report["fidelity"]["heldout"]["samples"]
        greedy = record["validation"]["greedy_decoding"]
        assert greedy["steps"] == 4 and len(greedy["eager_tokens"][0]) == len(greedy["artifact_tokens"][0]) == 5
        assert greedy["match"] is (greedy["artifact_tokens"] == greedy["eager_tokens"]), greedy
        if not greedy["match"]:
            assert any("does not match eager generate" in w and "quantized: reported, not gated" in w
                       for w in record.get("warnings") or []), record
        outcomes.append(greedy)
    assert outcomes[0] == outcomes[1] == outcomes[2]  # one check of the parts together, recorded in each


def _mismatched_adapter():
    """Parts that each match their own module but not the model: the decoder comes from another model."""
    from exporter.adapters.seq2seq import Seq2SeqLMAdapter

    class OtherDecoder(Seq2SeqLMAdapter):
        def parts(self, model):
            encoder, _ = super().parts(model)
            return [encoder, super().parts(_bart())[1]]

    return OtherDecoder(_spec())


def test_parts_that_do_not_decode_like_the_model_fail_both_and_keep_nothing(tmp_path):
    from exporter import export_model

    export_model(_t5(), _mismatched_adapter(), _spec(), tmp_path / "b", formats=["onnx"])
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["status"] == "failed"
    for part in ("encoder", "decoder"):
        record = md["artifacts"][f"onnx/{part}"]
        assert record["status"] == "failed" and "does not match eager generate" in record["error"]
        assert [c["within_tolerance"] for c in record["validation"]["checks"]] == [True, True]  # each part alone is fine
        assert not (tmp_path / "b" / f"{part}.onnx").exists()
    export_model(_t5(), _mismatched_adapter(), _spec(), tmp_path / "kept", formats=["onnx"], validate={"strict": False})
    md = json.loads((tmp_path / "kept" / "metadata.json").read_text())
    assert md["status"] == "mismatch" and (tmp_path / "kept" / "decoder.onnx").exists()
    assert "does not match eager generate" in md["artifacts"]["onnx/decoder"]["warning"]


def test_when_one_part_fails_the_formats_other_part_is_not_kept(tmp_path):
    from exporter import export_model

    # a tolerance the ONNX encoder meets (max |diff| ~6e-6) and the ONNX decoder does not (~1e-4); the
    # legacy exporter alone (a numerical miss, the dynamo exporter's retry misses too: CI time)
    export_model(_t5(), None, _spec(use_cache=False), tmp_path / "b", formats=["onnx", "torchscript"],
                 validate={"atol": 2e-5, "rtol": 0.0}, format_options={"onnx": {"backend": "legacy"}})
    md = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert md["artifacts"]["torchscript/encoder"]["status"] == "ok"
    assert md["artifacts"]["torchscript/decoder"]["status"] == "ok"
    assert "outputs differ from eager PyTorch" in md["artifacts"]["onnx/decoder"]["error"]
    encoder = md["artifacts"]["onnx/encoder"]
    assert encoder["status"] == "failed" and encoder["validation"]["passed"]  # it passed its own check
    assert "not kept: the decoder part of onnx failed, and the parts of a model are used together" in encoder["error"]
    assert not (tmp_path / "b" / "encoder.onnx").exists() and not (tmp_path / "b" / "decoder.onnx").exists()


def test_a_fixed_sequence_axis_is_refused_for_a_model_in_parts(tmp_path):
    from exporter import export_model
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError, match="format.onnx.dynamic_sequence=false: a model exported in parts"):
        export_model(_t5(), None, _spec(), tmp_path / "b", formats=["onnx"],
                     format_options={"onnx": {"dynamic_sequence": False}})


def test_a_miss_both_onnx_backends_share_is_not_blamed_on_a_traced_constant(tmp_path):
    from exporter import TaskSpec, export_model

    # wide weights over 128 tokens: the padded second shape's encoder output differs by 0.023 at a
    # scale of 64 (3.6e-4 of it), the same with the legacy exporter and with the dynamo one it falls
    # back to; a user who asks for 1e-4 of the scale gets a miss to attribute
    spec = TaskSpec("s2s", "text", "seq2seq_lm", {"vocab_size": 100, "max_seq_len": 128}, {"vocab_size": 100})
    export_model(_t5(), None, spec, tmp_path / "b", formats=["onnx"], validate={"rtol": 1e-4})
    error = json.loads((tmp_path / "b" / "metadata.json").read_text())["artifacts"]["onnx/encoder_model"]["error"]
    assert "built with legacy, opset 14 and again with dynamo, opset 18" in error
    assert "numerical cause" in error and "traced as a constant, e.g." not in error
