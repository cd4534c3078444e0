"""Causal language models with their key/value cache (adapters/kv_cache.py): one ONNX graph for the
prompt and every next token, checked step by step and by greedy decoding against eager, in a
build folder that ONNX Runtime GenAI loads as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_card_snippets, run_cli

T = pytest.importorskip("transformers")


def _tokenizer(folder: Path, vocab: int) -> None:
    """A small byte-level BPE tokenizer, saved as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the cache holds the keys and the values of every layer"] * 20, trainer)
    T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>").save_pretrained(folder)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("decoders")
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    # Grouped-query attention: 4 query heads share 2 key/value heads.
    T.LlamaForCausalLM(T.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                     **ids)).save_pretrained(root / "llama")
    T.GPT2LMHeadModel(T.GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                   **ids)).save_pretrained(root / "gpt2")
    for name in ("llama", "gpt2"):
        _tokenizer(root / name, 300)
    return root


def _build(tmp_path: Path, folder: Path, *extra: str) -> tuple[Path, dict]:
    r = run_cli("model=hf_causal_lm", f"model.path={folder}", "export_dir=out", *extra, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp_path / "out", json.loads((tmp_path / "out" / "metadata.json").read_text())


@pytest.mark.parametrize("family, kv_heads, formats", [("llama", 2, "onnx"), ("gpt2", 4, "[onnx,torchscript]")])
def test_a_causal_lm_builds_with_its_cache_and_onnx_runtime_genai_generates_eagers_tokens(
        tmp_path, decoders, family, kv_heads, formats):
    """By default (task_spec.use_cache=null) ONNX gets the cache; TorchScript beside it, the graph
    without it, with a note."""
    import onnx
    import onnxruntime_genai as og
    import torch

    r = run_cli("model=hf_causal_lm", f"model.path={decoders / family}", "export_dir=out", f"format={formats}",
                cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    build, md = tmp_path / "out", json.loads((tmp_path / "out" / "metadata.json").read_text())
    if formats != "onnx":
        assert "note: torchscript is built without the key/value cache" in r.stdout
        assert "generation" not in md["artifacts"]["torchscript"]["validation"]
    graph = onnx.load(str(build / "model.onnx")).graph
    pasts = [f"past_key_values.{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "position_ids", *pasts]
    assert [o.name for o in graph.output] == ["logits", *(p.replace("past_key_values", "present") for p in pasts)]
    cache = md["cache"]
    assert (cache["layers"], cache["key_value_heads"], cache["head_size"], cache["dtype"]) == (2, kv_heads, 16, "float32")
    assert cache["artifacts"] == ["onnx"]
    onnx_record = md["artifacts"]["onnx"]
    assert onnx_record["status"] == "ok"
    generation = onnx_record["validation"]["generation"]
    assert generation["match"] and generation["stepwise"]["passed"] and generation["stepwise"]["batch"] == 2
    assert generation["greedy"]["artifact_tokens"] == generation["greedy"]["eager_tokens"]
    # The folder is a model folder: every file listed and hashed like the graph.
    listed = {extra["file"] for extra in onnx_record["extra_files"]}
    assert {"config.json", "generation_config.json", "genai_config.json", "tokenizer.json"} <= listed
    for name in listed:
        assert (build / name).is_file(), name
    genai = json.loads((build / "genai_config.json").read_text())
    assert genai["model"]["type"] == "decoder" and genai["search"]["past_present_share_buffer"] is False
    assert onnx_record["runtimes"]["onnxruntime_genai"] == {"config": "genai_config.json", "type": "decoder"}
    card = run_cli("card", str(build), cwd=tmp_path).stdout
    assert "## Generate from this folder (onnx, with its key/value cache)" in card and "og.Model('.')" in card
    assert "generation through the key/value cache (step by step, batch 2 left-padded; greedy 4 tokens) matches eager" \
        in card
    # what the card prints runs as printed: the graph fed by name (the empty past included), and GenAI on the folder
    expected = ["onnx", "onnxruntime_genai"] + (["torchscript"] if formats != "onnx" else [])
    assert sorted(run_card_snippets(build, tmp_path)) == sorted(expected)

    # ONNX Runtime GenAI loads the folder as it is and generates eager's greedy tokens.
    model = og.Model(str(build))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=20, do_sample=False)
    generator = og.Generator(model, params)
    prompt = [5, 17, 42, 9, 33]
    generator.append_tokens(prompt)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    eager = T.AutoModelForCausalLM.from_pretrained(str(decoders / family)).eval()
    expected = eager.generate(torch.tensor([prompt]), max_new_tokens=len(tokens), min_new_tokens=len(tokens),
                              do_sample=False)[0, len(prompt):].tolist()
    assert len(tokens) == 15 and tokens == expected
    # Its tokenizer reads the tokenizer files copied beside the graph.
    assert list(og.Tokenizer(model).encode("the cache")) == T.AutoTokenizer.from_pretrained(
        str(decoders / family))("the cache")["input_ids"]


def test_use_cache_false_builds_the_graph_without_it(tmp_path, decoders):
    import onnx

    build, md = _build(tmp_path, decoders / "llama", "task_spec.use_cache=false")
    graph = onnx.load(str(build / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "position_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    assert md["cache"] is None and not (build / "genai_config.json").exists()
    assert "generation" not in md["artifacts"]["onnx"]["validation"]
    # Optimum's class loads it with use_cache=False: its config and tokenizer are beside the graph
    assert md["artifacts"]["onnx"]["runtimes"]["optimum"] == {
        "class": "ORTModelForCausalLM", "files": ["config.json", "model.onnx"], "from_pretrained": {"use_cache": False}}
    assert (build / "config.json").is_file() and (build / "tokenizer.json").is_file()


@pytest.mark.parametrize("args, message", [
    (("format=torchscript",), "error: task_spec.use_cache=true: format torchscript cannot carry the key/value cache"),
    (("format=exported_program",), "error: task_spec.use_cache=true: format exported_program cannot carry"),
    (("format=pytorch",), "error: task_spec.use_cache=true: no format of this job carries a key/value cache"),
    (("format=onnx", "format.onnx.dynamic_sequence=false"), "error: task_spec.use_cache=true: "
                                                             "format.onnx.dynamic_sequence=false: the graph with the cache"),
    (("format=onnx", "quantization=static"), "error: task_spec.use_cache=true: static quantization of the graph "
                                             "with the cache is not built yet"),
    (("format=onnx", "format.onnx.input_names=[ids,mask,positions]"), "error: task_spec.use_cache=true: "
     "format.onnx.input_names: the graph's inputs or outputs are renamed"),
])
def test_use_cache_true_refuses_what_cannot_have_it_in_one_line(tmp_path, decoders, args, message):
    r = run_cli("model=hf_causal_lm", f"model.path={decoders / 'gpt2'}", "task_spec.use_cache=true", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(message), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "exports").exists()


def test_use_cache_true_on_a_model_without_a_cache_or_another_task_is_refused(tmp_path):
    r = run_cli("model=lm_stub", "format=onnx", "task_spec.use_cache=true", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: task_spec.use_cache=true: the model (LMStub) has no key/value cache the tool can "
                                "export (its forward takes no past_key_values, or returns no per-layer keys and "
                                "values); set task_spec.use_cache=null or false")
    r = run_cli("model=simple_cnn", "format=onnx", "task_spec.use_cache=true", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: task_spec.use_cache=true: task type 'vision_classification' has no "
                                       "key/value cache"), r.stderr
    # auto: a model without a cache builds as before, without a word about it: asserted on the build of
    # test_cli.py::test_several_formats_and_lm_stub (lm_stub, onnx among its formats; CI time)


def test_the_generation_check_fails_a_graph_whose_cache_is_wrong(decoders):
    """A runtime that returns the right logits but a damaged cache passes the one-shot comparison
    at the example, and fails generation: the step after the prompt reads the cache."""
    import torch

    from exporter.adapters.kv_cache import CausalLMWithCacheAdapter

    model = T.AutoModelForCausalLM.from_pretrained(str(decoders / "llama")).eval()
    adapter = CausalLMWithCacheAdapter.for_model(model)

    def eager(inputs):
        with torch.no_grad():
            return [t.numpy() for t in adapter.call(model, inputs).values()]

    assert adapter.check_generation(model, eager, 4, 0, 1e-4, 1e-3)["match"]

    def damaged(inputs):
        outputs = eager(inputs)
        return [outputs[0], *(o * 0.5 for o in outputs[1:])]

    outcome = adapter.check_generation(model, damaged, 4, 0, 1e-4, 1e-3)
    assert not outcome["match"] and outcome["stepwise"]["first_failing_step"] == 1


def test_a_dynamically_quantized_cached_graph_reports_its_greedy_agreement_with_fp32(tmp_path, decoders):
    import onnx

    build, md = _build(tmp_path, decoders / "llama", "format=onnx", "quantization=dynamic",
                       "task_spec.use_cache=true")
    graph = onnx.load(str(build / "model.onnx")).graph
    assert "past_key_values.1.value" in [i.name for i in graph.input]
    assert any(n.op_type == "DynamicQuantizeLinear" for n in graph.node)
    record = md["artifacts"]["onnx"]
    generation = record["quantization_report"]["generation"]
    assert generation["steps"] == 16 and 0.0 <= generation["agreement"] <= 1.0
    assert (generation["first_difference"] is None) == (generation["agreement"] == 1.0)
    # Checked against eager too and reported (quantized, no bounds set: not gated): run, not crashed.
    checked = record["validation"]["generation"]
    assert "error" not in checked and checked["stepwise"]["passed"] is None and checked["greedy"]["steps"] == 4
    assert md["cache"]["artifacts"] == ["onnx"]


def test_generation_steps_past_the_models_positions_are_cut_and_fixed_axes_build_without_the_cache(tmp_path, decoders):
    """gpt2 here has 64 positions: 256 steps after a 6-token prompt cannot be run by eager either, so
    the check runs as many as fit. A fixed sequence axis cannot serve a prompt and then one token:
    under use_cache=null the graph is built without the cache, with a note."""
    _, md = _build(tmp_path, decoders / "gpt2", "format=onnx", "validate.generation_steps=256")
    generation = md["artifacts"]["onnx"]["validation"]["generation"]
    assert md["artifacts"]["onnx"]["status"] == "ok" and generation["match"]
    assert generation["greedy"]["steps"] == generation["stepwise"]["steps"] == 64 - 6 - 1
    r = run_cli("model=hf_causal_lm", f"model.path={decoders / 'gpt2'}", "format=onnx",
                "format.onnx.dynamic_sequence=false", "export_dir=fixed", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeps its batch and sequence axes dynamic" in r.stdout + r.stderr
    assert json.loads((tmp_path / "fixed" / "metadata.json").read_text())["cache"] is None
    # (Names of your own for the graph's inputs take the same path, cache_obstacle: refused under true below.)


@pytest.mark.parametrize("max_seq_len", [2, 4, 6, 16])
def test_even_a_tiny_max_seq_len_gives_a_second_shape_that_differs_in_past_and_new_tokens(max_seq_len):
    from exporter import TaskSpec
    from exporter.adapters.kv_cache import CacheLayout, CausalLMWithCacheAdapter

    adapter = CausalLMWithCacheAdapter(CacheLayout(layers=1, key_value_heads=1, head_size=2, dtype="float32"),
                                       "past_key_values", position_ids=True)
    spec = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 10, "max_seq_len": max_seq_len}, {})
    first = adapter.example_inputs(spec, batch_size=1)
    # what the plan asks for the second shape: half the new tokens of the first
    second = adapter.example_inputs(spec, batch_size=2, seq_len=first["input_ids"].shape[1] // 2)
    for name, axis in (("input_ids", 1), ("past_key_values.0.key", 2), ("attention_mask", 1)):
        assert first[name].shape[axis] != second[name].shape[axis], (name, first[name].shape, second[name].shape)
    assert first["input_ids"].shape[1] >= 2 and second["input_ids"].shape[1] >= 2  # grouped-query attention needs 2
