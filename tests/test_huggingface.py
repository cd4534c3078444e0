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
    assert "torch_dynamic_quantize" in md["artifacts"]["pytorch"]["load_hint"]
