"""Numeric ranges and unknown keys: declared once in the schema, checked the same from both doors."""

import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose

import exporter.cli.app  # noqa: F401 - registers the schemas and the folder-name resolvers
from exporter import export_model
from exporter.build.checkpoint import load_checkpoint
from exporter.errors import ConfigError, first_line
from exporter.formats import export_schema, formats_schema
from exporter.formats.onnx import OnnxFormatConfig
from exporter.cli.config_store import check_config, check_known_keys, unknown_keys
from exporter.config.checks import check_values, valid_range
from exporter.config.schema import CacheConfig, CalibrationConfig, ExportConfig, QuantizationConfig, ValidateConfig

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

# (schema, field, prefix, a value just outside, a value at the edge that passes, the range as messages say it)
BOUNDS = [
    (ValidateConfig, "atol", "validate.", -1e-9, 0.0, ">= 0"),
    (ValidateConfig, "rtol", "validate.", -0.5, 0.0, ">= 0"),
    (ValidateConfig, "quantized_atol", "validate.", -1.0, 0.0, ">= 0"),
    (ValidateConfig, "quantized_rtol", "validate.", -1.0, 0.0, ">= 0"),
    (ValidateConfig, "min_agreement", "validate.", 1.01, 1.0, "0 to 1"),
    (ValidateConfig, "min_agreement", "validate.", -0.01, 0.0, "0 to 1"),
    (ValidateConfig, "second_batch_size", "validate.", -1, 0, ">= 0"),
    (ValidateConfig, "generation_steps", "validate.", 0, 1, "1 to 256"),
    (ValidateConfig, "generation_steps", "validate.", 257, 256, "1 to 256"),
    (QuantizationConfig, "latency_runs", "quantization.", 0, 1, ">= 1"),
    (CalibrationConfig, "num_samples", "calibration.", 0, 1, ">= 1"),
    (CalibrationConfig, "heldout_samples", "calibration.", -1, 0, ">= 0"),
    (OnnxFormatConfig, "opset", "format.onnx.", 6, 7, "7 to 23"),
    (OnnxFormatConfig, "opset", "format.onnx.", 24, 23, "7 to 23"),
    (ExportConfig, "seed", "", -1, 0, "0 to 4294967295"),
    (ExportConfig, "seed", "", 2**32, 2**32 - 1, "0 to 4294967295"),
    (CacheConfig, "max_bytes", "cache.", -1, 0, ">= 0"),
]


def _schemas(root: type = None) -> list[type]:
    """Every dataclass schema reachable from ``root`` (default: the whole job's, formats included:
    ``ExportConfig`` and what the registry's subclass of it, with the ``format`` node typed, reaches)."""
    if root is None:
        return [ExportConfig, *(s for s in _schemas(export_schema()) if s is not export_schema())]
    found = [root]
    for declared in typing.get_type_hints(root).values():
        for arg in (declared, *typing.get_args(declared)):
            if isinstance(arg, type) and is_dataclass(arg) and arg not in found:
                found += [s for s in _schemas(arg) if s not in found]
    return found


def _numeric_fields() -> set[tuple[type, str]]:
    """(schema, field) of every int or float option (Optional included, bool excluded)."""
    numeric = set()
    for schema in _schemas():
        for name, declared in typing.get_type_hints(schema).items():
            if {int, float} & {declared, *typing.get_args(declared)}:
                numeric.add((schema, name))
    return numeric


# --- declared once: every numeric option has bounds, and they are tested and documented ---

def test_every_numeric_option_has_bounds_and_a_test_here():
    bounded = {(schema, spec.name) for schema in _schemas() for spec in fields(schema)
               if {"min", "max"} & set(spec.metadata)}
    assert _numeric_fields() <= bounded, "a numeric option without min/max metadata"
    assert bounded == {(schema, name) for schema, name, *_ in BOUNDS}, "a bounded option missing from BOUNDS"


@pytest.mark.parametrize("schema, name, prefix", sorted({(s, n, p) for s, n, p, *_ in BOUNDS}, key=str))
def test_ranges_are_documented_beside_their_key(schema, name, prefix):
    spec = next(spec for spec in fields(schema) if spec.name == name)
    key, text = f"{prefix}{name}", f"`{valid_range(spec.metadata)}`"
    # The onnx table names its options without the format.onnx. prefix.
    lines = [line for line in DOCS.read_text().splitlines() if f"`{key}`" in line or f"| `{name}` |" in line]
    assert any(text in line for line in lines), f"docs/configuration.md: no {text} beside `{key}`"


# --- check_values on the dataclasses ---

@pytest.mark.parametrize("schema, name, prefix, bad, edge, valid", BOUNDS)
def test_check_values_names_key_value_and_range(schema, name, prefix, bad, edge, valid):
    with pytest.raises(ConfigError) as info:
        check_values(schema(**{name: bad}), prefix)
    assert str(info.value) == f"{prefix}{name}: {bad!r} is out of range; valid values: {valid}"
    check_values(schema(**{name: edge}), prefix)  # the edge itself is allowed


def test_check_values_walks_nested_schemas_and_lists_every_problem():
    cfg = export_schema()(format=formats_schema()(onnx=OnnxFormatConfig(opset=99)),
                          validate=ValidateConfig(atol=-1.0, rtol=-2.0))
    with pytest.raises(ConfigError) as info:
        check_values(cfg)
    assert str(info.value).split(" | ") == [
        "format.onnx.opset: 99 is out of range; valid values: 7 to 23",
        "validate.atol: -1.0 is out of range; valid values: >= 0",
        "validate.rtol: -2.0 is out of range; valid values: >= 0",
    ]


def test_check_values_refuses_nan_and_non_numbers_and_accepts_null():
    with pytest.raises(ConfigError, match=r"^validate\.atol: nan is out of range"):
        check_values(ValidateConfig(atol=float("nan")), "validate.")
    with pytest.raises(ConfigError, match=r"^validate\.rtol: 'tiny' is not a number; valid values: >= 0$"):
        check_values(ValidateConfig(rtol="tiny"), "validate.")
    check_values(ValidateConfig(quantized_atol=None, min_agreement=None), "validate.")
    # an infinite tolerance would pass anything
    with pytest.raises(ConfigError, match=r"^validate\.atol: inf is out of range"):
        check_values(ValidateConfig(atol=float("inf")), "validate.")


def test_second_batch_size_zero_and_one_are_valid_skips():
    for size in (0, 1):
        check_values(ValidateConfig(second_batch_size=size), "validate.")


# --- the Python door: same messages, before anything is written ---

@pytest.mark.parametrize("kwargs, message", [
    ({"validate": {"atol": -1}}, "validate.atol: -1.0 is out of range; valid values: >= 0"),
    ({"validate": {"min_agreement": 2}}, "validate.min_agreement: 2.0 is out of range; valid values: 0 to 1"),
    ({"validate": {"second_batch_size": -2}}, "validate.second_batch_size: -2 is out of range; valid values: >= 0"),
    ({"validate": ValidateConfig(quantized_rtol=-0.1)}, "validate.quantized_rtol: -0.1 is out of range; valid values: >= 0"),
    ({"format_options": {"onnx": {"opset": 30}}}, "format.onnx.opset: 30 is out of range; valid values: 7 to 23"),
    ({"format_options": {"onnx": OnnxFormatConfig(opset=3)}}, "format.onnx.opset: 3 is out of range; valid values: 7 to 23"),
    ({"calibration": {"num_samples": 0}}, "calibration.num_samples: 0 is out of range; valid values: >= 1"),
    ({"calibration": CalibrationConfig(heldout_samples=-1)},
     "calibration.heldout_samples: -1 is out of range; valid values: >= 0"),
    ({"quantization": QuantizationConfig(mode="dynamic", latency_runs=0)},
     "quantization.latency_runs: 0 is out of range; valid values: >= 1"),
    ({"seed": -5}, "seed: -5 is out of range; valid values: 0 to 4294967295"),
])
def test_api_refuses_out_of_range_values_before_writing(tmp_path, cnn_model, vision_spec, kwargs, message):
    out = tmp_path / "never" / "created"
    with pytest.raises(ConfigError) as info:
        export_model(cnn_model, None, vision_spec, out, formats=["onnx"], **kwargs)
    assert str(info.value) == message
    assert not (tmp_path / "never").exists()


def test_api_type_errors_still_name_the_argument(tmp_path, cnn_model, vision_spec):
    with pytest.raises(ConfigError, match=r"^validate: Key 'atoll' not in 'ValidateConfig'.*valid fields: .*'atol'"):
        export_model(cnn_model, None, vision_spec, tmp_path / "out", formats=["onnx"], validate={"atoll": 1e-9})
    assert not (tmp_path / "out").exists()


# --- unknown keys in a composed config ---

@pytest.mark.parametrize("overrides, message", [
    (["+validate.atoll=1e-9"], "validate.atoll: unknown key; valid keys: enabled, atol, rtol, quantized_atol,"),
    (["+format.onnx.foo=1"], "format.onnx.foo: unknown key; valid keys: enabled, opset, backend, dynamic_batch,"),
    (["format=[onnx,torchscript]", "+format.torchscript.optimize=true"],
     "format.torchscript.optimize: unknown key; valid keys: enabled, strict, freeze"),
    (["+format.tflite.x=1"], "format.tflite: unknown key; valid keys: onnx, torchscript, pytorch"),
    (["+foo=1"], "foo: unknown key; valid keys: model, task_spec, adapter, format, quantization, export_dir, seed,"),
    (["+task_spec.labels=3"], "task_spec.labels: unknown key; valid keys: task_name, modality, task_type,"),
    (["+quantization.bits=4"], "quantization.bits: unknown key; valid keys: mode, weight_type,"),
    (["+calibration.shuffle=true"], "calibration.shuffle: unknown key; valid keys: source, num_samples,"),
])
def test_keys_added_with_plus_that_no_schema_knows_fail(hydra_config_module, overrides, message):
    cfg = compose("config", overrides=overrides)
    key = message.split(":")[0]
    assert unknown_keys(cfg) == [key]
    with pytest.raises(ConfigError) as info:
        check_known_keys(cfg)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("overrides, key, value", [
    (["+model.extra=1"], "model.extra", 1),
    (["+task_spec.input_schema.foo=1"], "task_spec.input_schema.foo", 1),
    (["+task_spec.output_schema.labels=[a,b]"], "task_spec.output_schema.labels", ["a", "b"]),
    (["calibration=dataset", "calibration.dataset._target_=pkg.fn", "+calibration.dataset.split=val"],
     "calibration.dataset.split", "val"),
])
def test_free_form_nodes_stay_free(hydra_config_module, overrides, key, value):
    from omegaconf import OmegaConf

    cfg = compose("config", overrides=overrides)
    selected = OmegaConf.select(cfg, key)
    assert (OmegaConf.to_container(selected) if OmegaConf.is_config(selected) else selected) == value  # it was added
    assert unknown_keys(cfg) == []
    check_known_keys(cfg)


def test_several_unknown_keys_are_all_named(hydra_config_module):
    cfg = compose("config", overrides=["+validate.atoll=1", "+seedd=3"])
    with pytest.raises(ConfigError) as info:
        check_known_keys(cfg)
    assert sorted(line.split(":")[0] for line in str(info.value).split(" | ")) == ["seedd", "validate.atoll"]


SHIPPED = [(group, path.stem) for group in ("model", "task_spec", "format", "quantization", "calibration")
           for path in sorted((DOCS.parents[1] / "conf" / group).glob("*.yaml"))]


@pytest.mark.parametrize("group, option", SHIPPED)
def test_every_shipped_option_passes_check_config(hydra_config_module, group, option):
    cfg = compose("config", overrides=[f"{group}={option}"], return_hydra_config=True)
    check_config(cfg)  # the hydra node is Hydra's, ``???`` values are the job's to report


@pytest.mark.parametrize("override, message", [
    ("validate.atol=-1", "validate.atol: -1.0 is out of range; valid values: >= 0"),
    ("format.onnx.opset=99", "format.onnx.opset: 99 is out of range; valid values: 7 to 23"),
    ("calibration.num_samples=0", "calibration.num_samples: 0 is out of range; valid values: >= 1"),
    ("seed=-1", "seed: -1 is out of range; valid values: 0 to 4294967295"),
    ("+validate.atoll=1e-9", "validate.atoll: unknown key; valid keys: enabled, atol,"),
])
def test_check_config_on_a_composed_config(hydra_config_module, override, message):
    with pytest.raises(ConfigError) as info:
        check_config(compose("config", overrides=[override]))
    assert str(info.value).startswith(message)


# --- messages from exceptions without text ---

@pytest.mark.parametrize("name", ["empty.pt", "empty.safetensors"])
def test_empty_checkpoint_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        load_checkpoint(torch.nn.Linear(2, 2), path)
    message = str(info.value)
    assert message.startswith(f"checkpoint: cannot read {path} as a state dict (")
    assert "the file is empty (0 bytes)" in message


def test_empty_torch_checkpoint_says_eoferror(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\(EOFError; the file is empty \(0 bytes\)\)"):
        load_checkpoint(torch.nn.Linear(2, 2), tmp_path / "empty.pt")


def test_first_line_of_an_exception():
    assert first_line(EOFError()) == "EOFError"
    assert first_line(EOFError(), with_type=True) == "EOFError"
    assert first_line(ValueError("\n  bad value\nmore")) == "bad value"
    assert first_line(ValueError("bad value\nmore"), with_type=True) == "ValueError: bad value"


def test_schema_module_stays_free_of_torch():
    code = "import sys, exporter.config.schema; bad = {'torch', 'onnx', 'onnxruntime'} & set(sys.modules); assert not bad, bad"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
