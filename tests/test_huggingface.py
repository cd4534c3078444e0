"""Real Hugging Face architectures built from a config (random weights, no hub access)."""

import json

import pytest

pytestmark = pytest.mark.slow  # Hugging Face models: run in CI

transformers = pytest.importorskip("transformers")

from exporter import TaskSpec, export_model  # noqa: E402


def test_bert_text_classification_with_attention_mask(tmp_path):
    config = transformers.BertConfig(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, num_labels=3, max_position_embeddings=64)
    model = transformers.BertForSequenceClassification(config)
    spec = TaskSpec("intent", "text", "text_classification",
                    {"vocab_size": 500, "max_seq_len": 32, "attention_mask": True}, {"num_classes": 3})
    out = export_model(model, None, spec, tmp_path, formats=["onnx", "torchscript", "pytorch"])
    md = json.loads(out["metadata"].read_text())
    assert set(out) == {"onnx", "torchscript", "pytorch", "metadata"}
    # BERT takes token_type_ids too (sentence pairs): fed because its forward has the parameter
    assert [i["name"] for i in md["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert md["output_shape"] == [1, 3]  # .logits picked out of the model's output object
    for rec in md["artifacts"].values():
        assert rec["validation"]["passed"] and len(rec["validation"]["checks"]) == 2


def test_gpt2_language_model_dynamic_quantization(tmp_path):
    config = transformers.GPT2Config(vocab_size=500, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    spec = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 500, "max_seq_len": 32})
    out = export_model(model, None, spec, tmp_path, formats=["onnx", "torchscript", "pytorch"],
                       quantization="dynamic")
    md = json.loads(out["metadata"].read_text())
    assert md["output_shape"] == [1, 32, 500]
    assert all(rec["status"] == "ok" for rec in md["artifacts"].values())
    ts = md["artifacts"]["torchscript"]
    # GPT-2's Conv1D layers become Linear and are quantized; the LM head tied to the embedding stays fp32
    assert ts["details"]["quantization"]["hf_conv1d_to_linear"] == 8
    assert ts["details"]["quantization"]["kept_fp32"] == {"lm_head": "weight tied to transformer.wte"}
    for name in ("onnx", "torchscript", "pytorch"):
        report = md["artifacts"][name]["quantization_report"]
        assert report["size"]["bytes"] < report["size"]["fp32_bytes"], name
    hint = md["artifacts"]["pytorch"]["load_hint"]
    assert "torch_dynamic_quantize" in hint
    # The hint runs as written, given the folder the model was saved in, and loads every weight.
    import torch

    model.save_pretrained(tmp_path / "saved")
    namespace = {"FOLDER": str(tmp_path / "saved")}
    exec(hint.replace("'model.pth'", repr(str(tmp_path / "model.pth"))), namespace)  # noqa: S102
    ids = torch.randint(0, 500, (1, 8))
    quantized_logits = namespace["model"].eval()(ids).logits
    assert quantized_logits.shape == (1, 8, 500) and torch.isfinite(quantized_logits).all()


def _vmap_masks() -> bool:
    """transformers 4.53-4.57 build attention masks with torch.vmap (5.x by broadcasting)."""
    from packaging.version import Version

    return Version("4.53") <= Version(transformers.__version__) < Version("5")


def test_gpt2_traces_with_either_transformers_mask_builder(tmp_path):
    """The legacy ONNX exporter, TorchScript and torch.export take GPT-2 whatever builds its attention
    masks: transformers 4.53-4.57's vmap masks are swapped for broadcasting ones while exporting
    (recorded), so there is no fallback to the dynamo exporter, no `unordered_map::at` from
    TorchScript and no unserializable `flat_apply` node in the exported program."""
    config = transformers.GPT2Config(vocab_size=500, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    spec = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 500, "max_seq_len": 24, "attention_mask": True})
    out = export_model(model, None, spec, tmp_path, formats=["onnx", "torchscript", "exported_program"])
    md = json.loads(out["metadata"].read_text())
    # ONNX carries the key/value cache (task_spec.use_cache=null), checked as generation runs it.
    assert md["cache"]["artifacts"] == ["onnx"] and md["artifacts"]["onnx"]["validation"]["generation"]["match"]
    onnx = md["artifacts"]["onnx"]["details"]
    assert onnx["backend"] == "legacy" and onnx["opset"] == 14 and "fallback" not in onnx
    for name, record in md["artifacts"].items():
        assert record["status"] == "ok", name
        # the example and a second batch size and length: the trace kept both axes
        assert {c["label"] for c in record["validation"]["checks"]} == {"example", "second example"}, name
        assert record["validation"]["passed"], name
        assert ("attention_masks" in record["details"]) == _vmap_masks(), name


def test_broadcast_masks_equal_transformers_own_and_are_put_back():
    if not _vmap_masks():
        pytest.skip(f"transformers {transformers.__version__} builds its masks without vmap: nothing is swapped")
    import torch
    from transformers import masking_utils

    from exporter.formats.traceable_masks import traceable_attention_masks

    original = masking_utils.sdpa_mask
    padding = torch.ones(3, 7, dtype=torch.bool)
    padding[0, :2] = False  # left padding
    padding[2, 5:] = False  # right padding
    cases = [dict(batch_size=3, cache_position=torch.arange(7), kv_length=7, attention_mask=padding),
             dict(batch_size=3, cache_position=torch.arange(4, 7), kv_length=7, attention_mask=padding),
             dict(batch_size=2, cache_position=torch.arange(5), kv_length=5,
                  mask_function=masking_utils.sliding_window_causal_mask_function(2))]
    expected = [original(allow_is_causal_skip=False, **case) for case in cases]
    eager = masking_utils.eager_mask(**cases[0])
    with pytest.raises(RuntimeError), traceable_attention_masks() as swapped:
        assert swapped
        for case, mask in zip(cases, expected):
            got = masking_utils.ALL_MASK_ATTENTION_FUNCTIONS["sdpa"](allow_is_causal_skip=False, **case)
            assert got.shape == mask.shape and torch.equal(got, mask)
        assert torch.equal(masking_utils.eager_mask(**cases[0]), eager)
        raise RuntimeError("the swap is undone on the way out")
    assert masking_utils.sdpa_mask is original and masking_utils.ALL_MASK_ATTENTION_FUNCTIONS["sdpa"] is original


def _tiny_qwen(folder, dtype):
    import torch

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)
    transformers.Qwen2ForCausalLM(config).to(dtype).save_pretrained(folder)


def test_half_precision_checkpoints_build_in_float32_or_keep_their_dtype(tmp_path):
    """A checkpoint saved in bfloat16 or float16 builds in every format, in float32 by default (one
    note says so); model.dtype=auto keeps bfloat16 where the format's runtime runs it, and refuses
    ONNX (no bfloat16 kernels in ONNX Runtime on CPU) before the model loads."""
    import torch
    from conftest import run_cli

    for name, dtype, formats in (("bf16", torch.bfloat16, "[onnx,torchscript,pytorch,exported_program]"),
                                 ("fp16", torch.float16, "[onnx,pytorch]")):
        _tiny_qwen(tmp_path / name, dtype)
        r = run_cli("model=hf_causal_lm", f"model.path={name}", f"format={formats}", f"export_dir=out-{name}",
                    "task_spec.input_schema.max_seq_len=8", "validate.generation_steps=1", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        kind = str(dtype).replace("torch.", "")
        assert (f"model: the checkpoint's weights are {kind}; building in float32 (model.dtype=auto keeps {kind})"
                in r.stdout + r.stderr), r.stdout + r.stderr
        md = json.loads((tmp_path / f"out-{name}" / "metadata.json").read_text())
        assert {record["status"] for record in md["artifacts"].values()} == {"ok"}, md["artifacts"]
        state = torch.load(tmp_path / f"out-{name}" / "model.pth", weights_only=True)
        assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}
        # the config beside the graph says what the build holds, not what the checkpoint held
        config = json.loads((tmp_path / f"out-{name}" / "config.json").read_text())
        assert {config.get(k) for k in ("dtype", "torch_dtype")} - {None} == {"float32"}, config
    r = run_cli("model=hf_causal_lm", "model.path=bf16", "model.dtype=auto", "format=pytorch",
                "export_dir=auto", "task_spec.input_schema.max_seq_len=8", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    state = torch.load(tmp_path / "auto" / "model.pth", weights_only=True)
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.bfloat16}
    r = run_cli("model=hf_causal_lm", "model.path=bf16", "model.dtype=auto", "format=[onnx,pytorch]",
                "export_dir=refused", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: model.dtype=auto: the checkpoint's weights are bfloat16, "
                                                     "which ONNX Runtime's CPU kernels do not run"), r.stderr
    assert not (tmp_path / "refused").exists()


def test_a_bart_whose_logits_sit_near_zero_passes_on_noise(tmp_path):
    """BART with init_std=0.3: its ONNX decoder differs from eager by ~1e-4 at logits near zero,
    rounding noise an elementwise bound failed; the scale of the output says it is noise."""
    import torch

    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                                     decoder_ffn_dim=128, max_position_embeddings=256, init_std=0.3)
    spec = TaskSpec("bart", "text", "seq2seq_lm", {"vocab_size": 1000, "max_seq_len": 32})
    out = export_model(transformers.BartForConditionalGeneration(config).eval(), None, spec, tmp_path, formats=["onnx"])
    md = json.loads(out["metadata"].read_text())
    assert md["status"] == "ok" and all(r["status"] == "ok" for r in md["artifacts"].values()), md["artifacts"]


def test_roberta_is_not_fed_the_token_types_it_ignores(tmp_path):
    """type_vocab_size 1 (RoBERTa's checkpoints): token_type_ids cannot change the output, so the
    graph does not take it (Optimum leaves it out too); BERT's two types keep it."""
    config = transformers.RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
                                        num_labels=2)
    spec = TaskSpec("r", "text", "text_classification", {"vocab_size": 100, "max_seq_len": 16}, {"num_classes": 2})
    out = export_model(transformers.RobertaForSequenceClassification(config), None, spec, tmp_path, formats=["onnx"])
    md = json.loads(out["metadata"].read_text())
    assert [i["name"] for i in md["inputs"]] == ["input_ids", "attention_mask"] and md["status"] == "ok"
    import onnx

    assert [i.name for i in onnx.load(str(tmp_path / "model.onnx")).graph.input] == ["input_ids", "attention_mask"]


def test_model_safetensors_loads_with_from_pretrained_and_with_safetensors(tmp_path):
    """format=safetensors writes the file as save_pretrained does: "format": "pt" in its metadata and
    the tied head under the embedding's name; the family's from_pretrained and the card's snippet
    (safetensors.torch.load_model) load every weight."""
    import shutil

    import torch
    from safetensors import safe_open

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2,
                                                                 n_positions=32, bos_token_id=0, eos_token_id=0))
    model.save_pretrained(tmp_path / "saved")
    spec = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 100, "max_seq_len": 8})
    out = export_model(model, None, spec, tmp_path / "b", formats=["safetensors"])
    with safe_open(str(tmp_path / "b" / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"
        assert "transformer.wte.weight" in f.keys() and "lm_head.weight" not in f.keys()
    folder = shutil.copytree(tmp_path / "saved", tmp_path / "reloaded")
    shutil.copy(tmp_path / "b" / "model.safetensors", folder / "model.safetensors")
    loaded = transformers.GPT2LMHeadModel.from_pretrained(folder)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # From the command line, the build folder is one the family's from_pretrained loads as it is
    from conftest import run_card_snippets, run_cli

    r = run_cli("model=hf", "model.path=saved", "format=safetensors", "export_dir=cli", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    built = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "cli")
    assert built.lm_head.weight is built.transformer.wte.weight
    for (name, a), b in zip(model.state_dict().items(), built.state_dict().values()):
        assert torch.equal(a, b), name
    assert json.loads((tmp_path / "cli" / "metadata.json").read_text())["artifacts"]["pytorch"]["runtimes"][
        "transformers"] == {"class": "GPT2LMHeadModel", "files": ["config.json", "model.safetensors"]}
    assert sorted(run_card_snippets(tmp_path / "cli", tmp_path)) == ["pytorch", "transformers"]
    hint = json.loads(out["metadata"].read_text())["artifacts"]["pytorch"]["load_hint"]
    namespace = {"FOLDER": str(tmp_path / "saved")}
    exec(hint.replace("'model.safetensors'", repr(str(tmp_path / "b" / "model.safetensors"))), namespace)  # noqa: S102
    assert torch.equal(namespace["model"].transformer.wte.weight, model.transformer.wte.weight)
