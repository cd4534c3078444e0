"""Hugging Face models from the command line: tiny models built from a config and saved with
save_pretrained in a temporary folder (no hub), every model=hf_* option x every format."""

from __future__ import annotations

import json

import pytest

from conftest import HEAVY, run_cli, run_cli_noting_imports

pytestmark = pytest.mark.slow  # Hugging Face models: run in CI
transformers = pytest.importorskip("transformers")

FORMATS = "format=[onnx,torchscript,pytorch,exported_program]"
BERT = dict(vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    T = transformers
    T.GPT2LMHeadModel(T.GPT2Config(vocab_size=500, n_embd=32, n_layer=2, n_head=2, n_positions=48, bos_token_id=0,
                                   eos_token_id=0)).save_pretrained(root / "gpt2-tiny")
    T.BertForSequenceClassification(T.BertConfig(**BERT, num_labels=3)).save_pretrained(root / "bert-cls")
    T.BertForQuestionAnswering(T.BertConfig(**BERT)).save_pretrained(root / "bert-qa")
    T.BertForTokenClassification(T.BertConfig(**BERT, num_labels=5)).save_pretrained(root / "bert-ner")
    T.ViTForImageClassification(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64, num_labels=4)
                                ).save_pretrained(root / "vit-tiny")
    T.T5ForConditionalGeneration(T.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                            decoder_start_token_id=0, pad_token_id=0)).save_pretrained(root / "t5-tiny")
    return root


# option, saved folder, expected inputs, outputs, first output shape (sizes read from config.json)
CASES = [
    ("hf_causal_lm", "gpt2-tiny", ["input_ids", "attention_mask", "position_ids"], ["logits"], [1, 48, 500]),
    ("hf_sequence_classification", "bert-cls", ["input_ids", "attention_mask", "token_type_ids"], ["logits"], [1, 3]),
    ("hf_question_answering", "bert-qa", ["input_ids", "attention_mask", "token_type_ids"],
     ["start_logits", "end_logits"], [1, 64]),
    ("hf_token_classification", "bert-ner", ["input_ids", "attention_mask", "token_type_ids"], ["logits"], [1, 64, 5]),
    ("hf_image_classification", "vit-tiny", ["pixel_values"], ["logits"], [1, 4]),
]


OPTIMUM = {"hf_causal_lm": "ORTModelForCausalLM", "hf_sequence_classification": "ORTModelForSequenceClassification",
           "hf_question_answering": "ORTModelForQuestionAnswering", "hf_token_classification": "ORTModelForTokenClassification",
           "hf_image_classification": "ORTModelForImageClassification"}


@pytest.mark.parametrize("option, folder, inputs, outputs, shape", CASES, ids=[c[0] for c in CASES])
def test_model_hf_picks_each_family_and_builds_it_in_every_format(tmp_path, saved, option, folder, inputs, outputs,
                                                                   shape):
    """model=hf reads the family from config.json and says which option it took; the explicit
    options are built by the models page's YAMLs (test_every_hf_yaml_of_the_models_page_exports_as_written)."""
    r = run_cli("model=hf", f"model.path={saved / folder}", FORMATS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    architecture = json.loads((saved / folder / "config.json").read_text())["architectures"][0]
    assert f"model=hf: {saved / folder} holds a {architecture}: building it as model={option}\n" in r.stderr, r.stderr
    # the build folder is named after the model folder
    build = tmp_path / "exports" / folder / "onnx+torchscript+pytorch+exported_program-none"
    md = json.loads((build / "metadata.json").read_text())
    assert md["status"] == "ok"
    assert [i["name"] for i in md["inputs"]] == inputs and [o["name"] for o in md["outputs"]] == outputs
    assert md["output_shape"] == shape
    for name, record in md["artifacts"].items():
        labels = [c["label"] for c in record["validation"]["checks"]]
        assert "second example" in labels and record["dynamic_axes_verified"], name
    # Optimum's ORTModelFor<Task> loads the ONNX folder as it is: config.json beside the graph, and
    # the record names the class (checked by hand with Optimum in docs/models.md; it cannot be installed here).
    onnx = md["artifacts"]["onnx"]
    assert onnx["runtimes"]["optimum"]["class"] == OPTIMUM[option], onnx.get("runtimes")
    assert json.loads((build / "config.json").read_text()) == json.loads((saved / folder / "config.json").read_text())
    assert "config.json" in [f["file"] for f in onnx["extra_files"]]
    if option == "hf_causal_lm":  # the card says where the weights came from
        card = run_cli("card", str(build), cwd=tmp_path)
        assert f"- Weights: from the model folder `{saved / folder}` (config.json, " in card.stdout, \
            card.stdout


def _config_only(folder, **config):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_model_hf_names_the_option_it_picks_or_refuses_in_one_line(tmp_path, capsys):
    """Read from config.json alone, before Hydra composes: no torch, nothing written."""
    t5 = _config_only(tmp_path / "t5", architectures=["T5ForConditionalGeneration"], model_type="t5",
                      is_encoder_decoder=True, vocab_size=100, n_positions=64)
    llama = _config_only(tmp_path / "llama", architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=100,
                         max_position_embeddings=64)
    mlm = _config_only(tmp_path / "mlm", architectures=["BertForMaskedLM"], model_type="bert")
    llava = _config_only(tmp_path / "llava", architectures=["LlavaForConditionalGeneration"], model_type="llava")
    both = _config_only(tmp_path / "both", architectures=["GPT2LMHeadModel", "GPT2ForSequenceClassification"],
                        model_type="gpt2")
    r, imported = run_cli_noting_imports("model=hf", f"model.path={t5}", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0 and "task: seq2seq_lm" in r.stdout and not imported & HEAVY, (r.stderr, imported & HEAVY)
    assert r.stderr == f"model=hf: {t5} holds a T5ForConditionalGeneration: building it as model=hf_seq2seq_lm\n"
    options = ("valid options: model=hf_causal_lm, model=hf_seq2seq_lm, model=hf_sequence_classification, "
               "model=hf_question_answering, model=hf_token_classification, model=hf_image_classification")
    for folder, named in ((mlm, "BertForMaskedLM (model_type 'bert')"), (llava, "LlavaForConditionalGeneration "
                          "(model_type 'llava')")):
        r = run_cli("model=hf", f"model.path={folder}", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.splitlines() == [
            f"error: model=hf: {folder} holds {named}, a kind no hf_* option builds; {options}, or your own model "
            "with _target_ (docs/models.md)"], r.stderr
    r = run_cli("model=hf", f"model.path={both}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"error: model=hf: {both} holds heads of several kinds, GPT2LMHeadModel (hf_causal_lm) and "
        "GPT2ForSequenceClassification (hf_sequence_classification): choose the option of the one to build"], r.stderr
    r = run_cli("model=hf", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: model=hf: reads the model's kind from model.path, which "
                                                     "is not given; add model.path=DIR"), r.stderr
    r = run_cli("model=hf", f"model.path={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: model.path: {tmp_path / 'nowhere'} does not exist")
    # a sweep: folders of one kind take its option (and the other options of model= stay), of two kinds are refused
    r = run_cli("-m", "model=hf", f"model.path={t5},{llama}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"error: model=hf: the folders of model.path are of 2 kinds (model=hf_seq2seq_lm: {t5}; model=hf_causal_lm: "
        f"{llama}); a sweep builds one kind: sweep each kind with its own option"], r.stderr
    import os

    from exporter.cli.hf_choice import choose_hf_option
    from exporter.errors import ConfigError

    # paths as Hydra reads them: quoted, escaped, an interpolation; other overrides kept as they are
    other = _config_only(tmp_path / "other dir", architectures=["MistralForCausalLM"], model_type="mistral")
    swept = ["-m", "model=hf", f"model.path={llama},'{other}'", "seed=1,2"]
    assert choose_hf_option(swept) == ["-m", "model=hf_causal_lm", *swept[2:]]
    assert capsys.readouterr().err == ("model=hf: the 2 folders of model.path hold LlamaForCausalLM, "
                                       "MistralForCausalLM: building them as model=hf_causal_lm\n")
    os.environ["EXPORTER_TEST_MODELS"] = str(tmp_path)
    try:
        for path in (str(other).replace(" ", "\\ "), "${oc.env:EXPORTER_TEST_MODELS}/other dir"):
            assert choose_hf_option(["model=hf", f"model.path='{path}'" if "$" in path else f"model.path={path}"])[0] \
                == "model=hf_causal_lm", path
    finally:
        del os.environ["EXPORTER_TEST_MODELS"]
    with pytest.raises(ConfigError, match=r"^model=hf: takes its option from the folder, so it is swept alone"):
        choose_hf_option(["-m", "model=lm_stub,hf", f"model.path={llama}"])
    with pytest.raises(ConfigError, match=r"^model.path=glob\(l\*\): model=hf reads each folder before the sweep"):
        choose_hf_option(["-m", "model=hf", "model.path=glob(l*)"])
    assert choose_hf_option(["model=hf", "model.path=~/x"]) == ["model=hf", "model.path=~/x"]  # Hydra says why
    (other / "config.json").unlink()
    other.rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both", "llama", "llava", "mlm", "t5"]


def test_images_of_any_size_are_dynamic_in_every_format_and_refused_for_a_fixed_size_model(tmp_path, saved):
    """task_spec.dynamic_image_size: height and width are dynamic axes, each format is checked at
    half the size, and the ONNX graph runs a third size; a ViT (one size) and a text task refuse it."""
    import numpy as np
    import onnxruntime as ort

    r = run_cli("task_spec.input_schema.image_size=[3,64,48]", "task_spec.dynamic_image_size=true", FORMATS,
                "export_dir=cnn", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    md = json.loads((tmp_path / "cnn" / "metadata.json").read_text())
    for name, record in md["artifacts"].items():
        assert record["status"] == "ok" and record["dynamic_axes_verified"], (name, record)
        assert record["dynamic_axes"]["pixel_values"] == {"0": "batch", "2": "height", "3": "width"}, name
        assert [c["input_shapes"]["pixel_values"] for c in record["validation"]["checks"]] == [[1, 3, 64, 48],
                                                                                             [2, 3, 32, 24]], name
    assert md["artifacts"]["exported_program"]["details"]["dynamic_shapes"]["pixel_values"] == {
        "0": "batch", "2": "height", "3": "width"}
    session = ort.InferenceSession(str(tmp_path / "cnn" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [d for d in session.get_inputs()[0].shape] == ["batch", 3, "height", "width"]
    assert session.run(None, {"pixel_values": np.random.rand(3, 3, 40, 56).astype(np.float32)})[0].shape == (3, 10)
    r = run_cli("model=hf_image_classification", f"model.path={saved / 'vit-tiny'}", "task_spec.dynamic_image_size=true",
                "export_dir=vit", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: task_spec.dynamic_image_size=true: the model does not take another image size: on pixel_values "
        "float32[2, 3, 16, 16] it fails in eager PyTorch (ValueError: Input image size (16*16) doesn't match model "
        "(32*32).); leave task_spec.dynamic_image_size=false for a model of one size, or give a larger "
        "task_spec.input_schema.image_size if half of it is too small for the model"], r.stderr
    assert not (tmp_path / "vit").exists()
    r = run_cli("model=lm_stub", "task_spec.dynamic_image_size=true", "export_dir=text", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: task_spec.dynamic_image_size=true: task type "
                                                     "'language_modeling' takes text inputs, not images"), r.stderr


def test_a_transformers_checkpoint_with_tied_weights_loads_and_stays_tied(tmp_path, saved):
    import torch

    from exporter.build.checkpoint import load_checkpoint

    model = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_pretrained(saved / "gpt2-tiny"))
    assert model.lm_head.weight is model.transformer.wte.weight
    record = load_checkpoint(model, saved / "gpt2-tiny" / "model.safetensors")  # lm_head.weight is not in the file
    assert model.lm_head.weight is model.transformer.wte.weight and record["sha256"]
    from safetensors.torch import load_file

    assert torch.equal(model.transformer.wte.weight, load_file(saved / "gpt2-tiny" / "model.safetensors")["transformer.wte.weight"])
    r = run_cli("model=hf_causal_lm", f"model.path={saved / 'gpt2-tiny'}",
                f"checkpoint={saved / 'gpt2-tiny' / 'model.safetensors'}", "export_dir=out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_a_folder_that_is_not_a_saved_model_is_named(tmp_path):
    r = run_cli("model=hf_causal_lm", f"model.path={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: model.path: {tmp_path} holds no config.json"), r.stderr
    r = run_cli("model=hf_causal_lm", f"model.path={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: model.path: {tmp_path / 'nowhere'} does not exist")
    # the key at fault, not the one whose default was to be read from it (vocab_size)
    r = run_cli("model=hf_causal_lm", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: model.path: missing;") and "vocab_size" in r.stderr
    assert "interpolation" not in r.stderr, r.stderr


def test_a_model_folder_saved_over_in_place_rebuilds(tmp_path, saved):
    import shutil

    import torch

    folder = tmp_path / "bert"
    shutil.copytree(saved / "bert-cls", folder)
    args = ("model=hf_sequence_classification", f"model.path={folder}", "format=onnx", "export_dir=out")
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    # Up to date, answered without torch: the key names exporter.models.hf without importing torch.
    again, imported = run_cli_noting_imports(*args, cwd=tmp_path)
    assert "up to date" in again.stdout + again.stderr and not imported & HEAVY, sorted(imported & HEAVY)
    shutil.copytree(tmp_path / "out", tmp_path / "before")
    torch.manual_seed(1)  # other weights, same folder
    transformers.BertForSequenceClassification(transformers.BertConfig.from_pretrained(folder)).save_pretrained(folder)
    changed = run_cli(*args, cwd=tmp_path)
    assert changed.returncode == 0 and "up to date" not in changed.stdout + changed.stderr
    md = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert "model.safetensors" in md["build_key_inputs"]["model_files"]["files"]
    assert md["environment"]["transformers"] == transformers.__version__
    # exporter diff says why the two builds differ: the same config, another model file
    diff = run_cli("diff", "before", "out", cwd=tmp_path)
    assert diff.returncode == 1 and "model_files.files.model.safetensors" in diff.stdout, diff.stdout


def test_a_folder_of_another_kind_of_model_is_one_clear_error(tmp_path, saved):
    r = run_cli("model=hf_seq2seq_lm", f"model.path={saved / 'gpt2-tiny'}", "format=onnx", "export_dir=out", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "holds a 'gpt2' model, which AutoModelForSeq2SeqLM (model.task=seq2seq_lm) does not load" in r.stderr
    assert "use model=hf_causal_lm" in r.stderr and "Error in call to target" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # nothing of transformers' own before it
    assert not (tmp_path / "out").exists()
    # an example longer than the model's positions: said up front, not an IndexError from inside it
    r = run_cli("model=hf_causal_lm", f"model.path={saved / 'gpt2-tiny'}", "task_spec.input_schema.max_seq_len=100",
                "format=pytorch", "export_dir=long", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: task_spec.input_schema.max_seq_len=100 is more than the model's 48 positions (its config's "
        "max_position_embeddings); set task_spec.input_schema.max_seq_len<=48"], r.stderr
    assert not (tmp_path / "long").exists()


# The saved tiny model each YAML of docs/models.md is tried on, by the option it builds on.
DOC_FOLDERS = {"hf_causal_lm": "gpt2-tiny", "hf_sequence_classification": "bert-cls", "hf_question_answering": "bert-qa",
               "hf_token_classification": "bert-ner", "hf_image_classification": "vit-tiny", "hf_seq2seq_lm": "t5-tiny"}


def _models_page_blocks() -> list[str]:
    import re

    from conftest import REPO

    page = (REPO / "docs" / "models.md").read_text()
    return [b for b in re.findall(r"```yaml\n(.*?)```", page, re.S) if "- hf_" in b]


def test_the_models_page_has_one_hf_yaml_per_shipped_family():
    import re

    assert {re.search(r"- (hf_\w+)", b).group(1) for b in _models_page_blocks()} == set(DOC_FOLDERS)


# One test per family's YAML, so that the suite's workers share them out.
@pytest.mark.parametrize("family", sorted(DOC_FOLDERS))
def test_every_hf_yaml_of_the_models_page_exports_as_written(tmp_path, saved, family):
    import re

    blocks = [b for b in _models_page_blocks() if re.search(r"- (hf_\w+)", b).group(1) == family]
    assert blocks, family
    for block in blocks:
        target, command = re.search(r"# (my_configs/\S+\.yaml)\s+-> python -m exporter (.*)", block).groups()
        path = tmp_path / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
        folder = saved / DOC_FOLDERS[family]
        short = [] if "vit" in folder.name else ["task_spec.input_schema.max_seq_len=16"]  # quick text examples
        r = run_cli(*command.split(), f"model.path={folder}", *short,
                    f"export_dir=out-{path.stem}", cwd=tmp_path)
        assert r.returncode == 0, (target, r.stderr[-2000:])
        assert json.loads((tmp_path / f"out-{path.stem}" / "metadata.json").read_text())["status"] == "ok", target


def test_a_model_folder_named_with_a_dollar_brace_builds(tmp_path, saved):
    """The build folder is named after the model folder, and Hydra keeps it in its config, where
    ``${`` would be read as an interpolation: it builds into ``esc_{x}`` instead of failing after
    the build with Hydra's own error and leaving empty folders."""
    import shutil

    shutil.copytree(saved / "gpt2-tiny", tmp_path / "esc${x}")
    r = run_cli("model=hf_causal_lm", "model.path=" + str(tmp_path / "esc\\${x}"), "format=pytorch", cwd=tmp_path)
    assert r.returncode == 0 and "rror" not in r.stderr, r.stdout + r.stderr  # transformers prints progress there
    assert (tmp_path / "exports" / "esc_{x}" / "pytorch-none" / "metadata.json").is_file()
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["esc_{x}"]
