"""Composing every combination of the shipped groups, and the schemas that guard them."""

import itertools
from pathlib import Path

import pytest
from hydra import compose
from omegaconf import OmegaConf

import exporter.cli.app  # noqa: F401 - registers the schemas and the folder-name resolver
from exporter.formats.registry import format_aliases, registered_formats
from exporter.config.schema import selected_formats

CONF = Path(__file__).resolve().parents[1] / "conf"
OPTIONS = {group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
           for group in ("model", "task_spec", "format", "quantization", "calibration")}


@pytest.fixture(autouse=True)
def _composed(hydra_config_module):
    """Every test here composes configs (the fixture is in conftest.py)."""
    yield


def test_shipped_options_are_the_documented_ones():
    assert OPTIONS == {
        "model": ["hf_causal_lm", "hf_image_classification", "hf_question_answering", "hf_seq2seq_lm",
                  "hf_sequence_classification",
                  "hf_token_classification", "lm_stub", "simple_cnn"],
        "task_spec": ["feature_extraction", "language_modeling", "object_detection", "question_answering",
                      "seq2seq_lm", "text_classification", "token_classification", "vision_classification"],
        # Every registered format and alias has its option file (tests/test_registry.py checks the rest).
        "format": sorted([*registered_formats(), *format_aliases()]),
        "quantization": ["dynamic", "fp16", "none", "static"],
        "calibration": ["dataset", "npz", "random"],
    }


def _combinations() -> list[tuple[str, ...]]:
    """Every model x task spec x format, with the quantization and calibration options taken in turn
    (each of those still meets every format)."""
    combos = []
    # (the hf_* models need a saved folder: test_hf_options_read_sizes_from_the_saved_config composes them)
    shipped = [m for m in OPTIONS["model"] if not m.startswith("hf_")]
    for index, (model, task_spec, fmt) in enumerate(itertools.product(shipped, OPTIONS["task_spec"], OPTIONS["format"])):
        quant = OPTIONS["quantization"][(index // len(OPTIONS["format"])) % len(OPTIONS["quantization"])]
        calibration = OPTIONS["calibration"][index % len(OPTIONS["calibration"])]
        combos.append((model, task_spec, fmt, quant, calibration))
    return combos


@pytest.mark.parametrize("model,task_spec,fmt,quant,calibration", _combinations())
def test_every_combination_composes_and_validates(model, task_spec, fmt, quant, calibration):
    cfg = compose("config", overrides=[f"model={model}", f"task_spec={task_spec}", f"format={fmt}",
                                       f"quantization={quant}", f"calibration={calibration}"],
                  return_hydra_config=True)
    assert cfg.calibration.source == calibration
    assert cfg.task_spec.task_type == task_spec
    assert selected_formats(cfg.format) == [format_aliases().get(fmt, fmt)]
    assert cfg.quantization.mode == quant
    job = OmegaConf.to_object(cfg.format)  # the schema accepts the composed values
    assert getattr(job, format_aliases().get(fmt, fmt)).enabled


def test_model_choice_brings_its_task_spec():
    assert compose("config").task_spec.task_type == "vision_classification"
    cfg = compose("config", overrides=["model=lm_stub"])
    assert cfg.task_spec.task_type == "language_modeling"
    assert cfg.task_spec.input_schema.vocab_size == cfg.model.vocab_size == 1000
    cfg = compose("config", overrides=["model=lm_stub", "task_spec=text_classification"])
    assert cfg.task_spec.task_type == "text_classification"


def test_several_formats_and_their_options():
    cfg = compose("config", overrides=["format=[onnx,torchscript,pytorch]", "format.onnx.opset=17"])
    assert cfg.format.onnx.opset == 17 and cfg.format.torchscript.strict and cfg.format.pytorch.serialization == "torch"


@pytest.mark.parametrize("override, message", [
    ("format.onnx.opsett=17", "Key 'opsett' not in 'OnnxFormatConfig'"),
    ("format.onnx.opset=seventeen", "could not be converted to Integer"),
    ("format.onnx.backend=fast", "Invalid value 'fast', expected one of [auto, legacy, dynamo]"),
    ("quantization.weight_type=int4", "expected one of [auto, qint8, quint8]"),
    ("task_spec.modality=audio", "expected one of [text, vision]"),
    ("validate.atol=tiny", "could not be converted to Float"),
    ("seed=abc", "could not be converted to Integer"),
    ("quantization=int8", "Could not find 'quantization/int8'"),
])
def test_typos_and_wrong_types_fail_at_composition(override, message):
    with pytest.raises(Exception) as info:
        compose("config", overrides=[override])
    text = str(info.value) + str(getattr(info.value, "__cause__", ""))
    assert message in text


def test_every_model_node_instantiates():
    import hydra
    import torch

    for model in [m for m in OPTIONS["model"] if not m.startswith("hf_")]:
        cfg = compose("config", overrides=[f"model={model}"])
        assert isinstance(hydra.utils.instantiate(cfg.model), torch.nn.Module)


def test_folder_names_follow_the_choices():
    from exporter.cli.app import build_name

    cfg = compose("config", overrides=["format=[onnx,torchscript]", "quantization=dynamic"])
    assert build_name(cfg.format, cfg.quantization.mode) == "onnx+torchscript-dynamic"
    hydra_cfg = OmegaConf.to_container(compose("config", return_hydra_config=True).hydra, resolve=False)
    assert "exporter.build_name" in hydra_cfg["run"]["dir"] and "exporter.build_name" in hydra_cfg["sweep"]["subdir"]


def test_schemas_do_not_leak_into_the_help(help_run):
    r, _ = help_run
    assert r.returncode == 0, r.stderr
    assert "== Config groups (group=option) ==" in r.stdout, r.stdout  # the help, not an empty output
    assert "schema/" not in r.stdout


def test_hf_options_read_sizes_from_the_saved_config(tmp_path):
    """No transformers needed: the sizes come from config.json alone, and the command line wins."""
    import json

    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 321, "n_positions": 40, "id2label": {"0": "a", "1": "b",
                                                      "2": "c"}, "image_size": 48, "num_channels": 1}))
    cfg = compose("config", overrides=["model=hf_causal_lm", f"model.path={tmp_path}"])
    assert cfg.task_spec.task_type == "language_modeling" and cfg.model.task == "causal_lm"
    assert cfg.task_spec.input_schema.vocab_size == 321 == cfg.task_spec.output_schema.vocab_size
    assert cfg.task_spec.input_schema.max_seq_len == 40  # the model's maximum, below the default 128
    cfg = compose("config", overrides=["model=hf_sequence_classification", f"model.path={tmp_path}",
                                       "task_spec.input_schema.max_seq_len=16"])
    assert cfg.task_spec.output_schema.num_classes == 3 and cfg.task_spec.input_schema.max_seq_len == 16
    cfg = compose("config", overrides=["model=hf_image_classification", f"model.path={tmp_path}"])
    assert list(cfg.task_spec.input_schema.image_size) == [1, 48, 48]
    from exporter.cli.app import model_name

    assert model_name("hf_causal_lm", "exporter.models.hf.from_pretrained", str(tmp_path) + "/") == tmp_path.name
    assert model_name(None, "transformers.AutoModel.from_pretrained", "/m/bert-base") == "bert-base"
