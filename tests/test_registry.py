"""The format registry: every registered format is a complete unit (config file, schema entry, help
line, docs section, a real round trip), formats that declare no quantization are refused, and a
format from outside the package (an entry-point plug-in) works from the command line. The task-type
table likewise: every task type has one adapter and one option file, and one added by the recipe of
docs/extending.md exports from the command line. Library versions and artifact file names are listed
once."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch

import exporter.cli.app  # noqa: F401 - registers the schemas
from exporter import ConfigError, TaskSpec, export_model
from exporter.adapters import ADAPTERS, ModelAdapter, register_adapter, unregister_adapter
from exporter.formats import FormatExporter, register_format, registered_formats, unregister_format
from exporter.formats.registry import format_aliases
from exporter.config.schema import QuantizationMode
from exporter.config.task_types import MODALITIES, SHIPPED as SHIPPED_TASK_TYPES, register_task_type, task_types, unregister_task_type

from conftest import REPO, run_cli

SHIPPED = ["onnx", "torchscript", "pytorch", "exported_program"]
CONFIGURATION_DOCS = (REPO / "docs" / "configuration.md").read_text()
EXTENDING_DOCS = (REPO / "docs" / "extending.md").read_text()


# Big enough that int8 weights make a smaller file than fp32 ones (the size gate checks that).
FEATURES = 256


class LinearAdapter(ModelAdapter):
    """A plain ``nn.Linear(FEATURES, 3)``: one float input ``x`` of shape [batch, FEATURES]."""

    input_names = ("x",)

    def example_inputs(self, task_spec, batch_size=1, seed=0, seq_len=None):
        generator = torch.Generator().manual_seed(seed or 0)
        return {"x": torch.rand(batch_size, FEATURES, generator=generator)}


LINEAR_SPEC = TaskSpec("linear", "vision", "vision_classification", {"image_size": [FEATURES]}, {"num_classes": 3})


def linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(FEATURES, 3)


def format_section(name: str) -> str:
    """The ``### `format=<name>` `` section of docs/configuration.md."""
    match = re.search(rf"^### `format={name}`.*?(?=^##)", CONFIGURATION_DOCS, re.M | re.S)
    assert match, f"docs/configuration.md has no section for format={name}"
    return match.group(0)


def test_the_shipped_formats_are_registered_in_order():
    assert list(registered_formats())[:4] == SHIPPED
    assert format_aliases() == {"safetensors": "pytorch"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_registered_format_is_a_complete_unit(name, hydra_config_module, help_run):
    from hydra import compose
    from hydra.core.config_store import ConfigStore

    cls = registered_formats()[name]
    # 1. a config file that selects it, 2. a ConfigStore schema entry it extends
    option_file = REPO / "conf" / "format" / f"{name}.yaml"
    text = option_file.read_text()
    assert f"# @package format.{name}" in text and f"/schema/format/{name}@_here_" in text
    assert f"{name}.yaml" in ConfigStore.instance().repo["schema"]["format"]
    cfg = compose("config", overrides=[f"format={name}"])
    assert cfg.format[name].enabled is True
    # 3. a help line from its own summary
    help_text = help_run[0].stdout  # `python -m exporter --help`, run once per session (conftest)
    assert re.search(rf"^format={name}\s+{re.escape(cls.summary)}", help_text, re.M)
    for option in fields(cls.options_schema):
        if option.name != "enabled":
            assert re.search(rf"^format\.{name}\.{option.name}=", help_text, re.M), f"--help misses {option.name}"
    # 4. a docs section with a row per option, and a row in the formats table
    section = format_section(name)
    for option in fields(cls.options_schema):
        if option.name != "enabled":
            assert f"| `{option.name}` |" in section, f"format.{name}.{option.name} is not documented"
    assert re.search(rf"^\| `{name}`( \(default\))? \| `model\.", CONFIGURATION_DOCS, re.M)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_registered_format_round_trips_a_linear_layer(name, tmp_path):
    """Export, load back in the format's runtime, check at two batch sizes; then each quantization
    mode the format declares, measured against its fp32 twin."""
    cls = registered_formats()[name]
    out = export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / "fp32", formats=[name])
    record = json.loads(out["metadata"].read_text())["artifacts"][name]
    assert record["status"] == "ok" and out[name].name == record["file"]
    assert [c["input_shapes"]["x"] for c in record["validation"]["checks"]] == [[1, FEATURES], [2, FEATURES]]
    for mode in cls.quantization:
        built = export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / mode, formats=[name],
                             quantization=mode, calibration={"num_samples": 4, "heldout_samples": 2})
        record = json.loads(built["metadata"].read_text())["artifacts"][name]
        assert record["status"] == "ok", (mode, record.get("error"))
        assert record["quantization_report"]["size"]["bytes"] == built[name].stat().st_size


@dataclass
class PickleOptions:
    enabled: bool = False


class PickleExporter(FormatExporter):
    """A format defined inside a test: the whole module pickled with torch.save. Declares no
    quantization, so every mode must be refused for it."""

    name = "pickled_module"
    options_schema = PickleOptions
    summary = "model.pkl, the pickled module, checked with torch.load"
    filename = "model.pkl"

    def export(self, ctx, path):
        from exporter.formats import ExportOutcome

        torch.save(ctx.model, path)
        return ExportOutcome(details={"method": "torch.save(module)"})

    def load(self, path, ctx):
        module = torch.load(path, weights_only=False)
        return lambda inputs: ctx.adapter.run(module, inputs).detach().numpy()


@pytest.fixture
def pickle_format():
    register_format(PickleExporter)
    yield PickleExporter
    unregister_format(PickleExporter.name)


def test_a_format_registered_in_a_test_builds_and_refuses_quantization(pickle_format, tmp_path):
    out = export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / "fp32", formats=["pickled_module"])
    assert json.loads(out["metadata"].read_text())["artifacts"]["pickled_module"]["status"] == "ok"
    for mode in ("dynamic", "static", "fp16"):
        takers = [n for n, c in registered_formats().items() if mode in c.quantization]
        with pytest.raises(ConfigError) as info:
            export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / mode, formats=["onnx", "pickled_module"],
                         quantization=mode)
        assert str(info.value) == (f"quantization={mode} is not available for format pickled_module; "
                                   f"formats that take it: {takers}")
        assert not (tmp_path / mode).exists()  # refused before the folder is touched


def test_a_weight_type_the_format_does_not_declare_is_refused(tmp_path):
    from exporter.config.schema import QuantizationConfig, WeightType

    q = QuantizationConfig(mode=QuantizationMode.dynamic, weight_type=WeightType.quint8)
    with pytest.raises(ConfigError, match=r"weight_type=quint8: format pytorch takes \['qint8'\] for "
                                          r"quantization=dynamic; valid values: \['qint8', 'auto'\]"):
        export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path, formats=["pytorch"], quantization=q)


def test_register_format_checks_the_declaration():
    @dataclass
    class NoEnabled:
        level: int = 1

    class Bad(PickleExporter):
        name = "bad"
        options_schema = NoEnabled

    with pytest.raises(TypeError, match="first field is `enabled: bool = False`"):
        register_format(Bad)

    class BadMode(PickleExporter):
        name = "bad_mode"
        quantization = {"int4": ("qint8",)}

    with pytest.raises(TypeError, match="quantization declares 'int4'"):
        register_format(BadMode)

    class NoQuantize(PickleExporter):
        name = "no_quantize"
        quantization = {"dynamic": ("qint8",)}

    with pytest.raises(TypeError, match=r"declares quantization \['dynamic'\] but does not implement quantize"):
        register_format(NoQuantize)

    class Taken(PickleExporter):
        name = "onnx"

    with pytest.raises(TypeError, match="the name is taken by exporter.formats.onnx.OnnxExporter"):
        register_format(Taken)
    assert not {"bad", "bad_mode", "no_quantize"} & set(registered_formats())


PLUGIN = '''
from dataclasses import dataclass

import torch

from exporter.formats import ExportOutcome, FormatExporter, register_format


@dataclass
class PickleOptions:
    enabled: bool = False
    # Pickle protocol, to show that a plug-in's options are composed and type-checked.
    protocol: int = 4


@register_format
class PickleExporter(FormatExporter):
    name = "pickled_module"
    options_schema = PickleOptions
    summary = "model.pkl, the pickled module, checked with torch.load"
    filename = "model.pkl"

    def export(self, ctx, path):
        torch.save(ctx.model, path, pickle_protocol=self.options.protocol)
        return ExportOutcome(details={"protocol": self.options.protocol})

    def load(self, path, ctx):
        module = torch.load(path, weights_only=False)
        return lambda inputs: ctx.adapter.run(module, inputs).detach().numpy()
'''


def test_an_entry_point_plugin_works_from_the_command_line(tmp_path):
    """A package outside this one registers a format through the ``exporter.formats`` entry-point
    group: no option file, yet the command line composes it, checks its options, builds and checks
    it, lists it in --help and refuses quantization for it."""
    site = tmp_path / "site"
    (site / "pickle_format-1.0.dist-info").mkdir(parents=True)
    (site / "pickle_format.py").write_text(textwrap.dedent(PLUGIN))
    (site / "pickle_format-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pickle-format\nVersion: 1.0\n")
    (site / "pickle_format-1.0.dist-info" / "entry_points.txt").write_text(
        "[exporter.formats]\npickled_module = pickle_format\n")
    env = {"PYTHONPATH": str(site)}

    help_text = run_cli("--help", cwd=tmp_path, env=env).stdout
    assert re.search(r"^format=pickled_module\s+model.pkl, the pickled module", help_text, re.M)
    built = run_cli("format=pickled_module", "format.pickled_module.protocol=3", "export_dir=out", cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["formats"] == ["pickled_module"] and metadata["status"] == "ok"
    assert metadata["artifacts"]["pickled_module"]["details"] == {"protocol": 3}
    assert (tmp_path / "out" / "model.pkl").is_file()
    typo = run_cli("format=pickled_module", "format.pickled_module.protocoll=3", cwd=tmp_path, env=env)
    assert typo.returncode == 2 and "Key 'protocoll' not in 'PickleOptions'" in typo.stderr
    refused = run_cli("format=pickled_module", "quantization=dynamic", "export_dir=q", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: quantization=dynamic is not available for format pickled_module; formats that take it: "
        "['onnx', 'torchscript', 'pytorch']"]
    assert not (tmp_path / "q").exists()
    # without the plug-in installed, verify says what is missing
    missing = run_cli("verify", "out", cwd=tmp_path)
    assert missing.returncode == 2 and "format(s) ['pickled_module'], which no installed format or plug-in " \
        "registers here" in missing.stderr


# ---------------------------------------------------------------- docs/extending.md keeps count
# The files each recipe of docs/extending.md touches, checked against the shipped units.

def _format_files(name: str) -> list[Path]:
    module = registered_formats()[name].__module__.split(".")[-1]
    package = REPO / "src" / "exporter" / "formats" / module
    return [package / "__init__.py" if package.is_dir() else package.with_suffix(".py"),
            REPO / "src" / "exporter" / "formats" / "__init__.py",
            REPO / "conf" / "format" / f"{name}.yaml",
            REPO / "docs" / "configuration.md"]


def _recipe_count(title: str) -> int:
    match = re.search(rf"^## {title}.*?touches (\w+) files", EXTENDING_DOCS, re.M | re.S)
    assert match, f"docs/extending.md: no recipe '{title}' saying how many files it touches"
    words = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
    return words[match.group(1)]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_add_a_format_recipe_matches_each_shipped_format(name):
    files = _format_files(name)
    assert len(files) == _recipe_count("Add a format")
    module = registered_formats()[name].__module__.split(".")[-1]
    assert all(f.is_file() for f in files)
    assert re.search(rf"^from \. import .*\b{module}\b", files[1].read_text(), re.M)


def test_the_add_a_model_recipe_matches_each_shipped_model():
    models = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    assert _recipe_count("Add a model family") == 2  # conf/model/<name>.yaml and its docs row
    for model in models:
        assert re.search(rf"^\| `{model}`", CONFIGURATION_DOCS, re.M), f"model={model} has no row in the docs"


def test_the_add_a_quantization_backend_recipe_matches_each_declaring_format():
    assert _recipe_count("Add a quantization backend") == 2  # the format's module and its docs column
    for name, cls in registered_formats().items():
        if name in SHIPPED:
            assert ("def quantize(" in Path(__import__(cls.__module__, fromlist=["x"]).__file__).read_text()) \
                == bool(cls.quantization), name


def _code_words(path: Path) -> list[str]:
    """The identifiers and string literals of a module's code (docstrings and comments left out)."""
    import ast

    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.append(node.value)
        elif isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
    return words


def test_the_runner_and_the_schema_name_no_format():
    """Formats are known to the registry only: the job's modules go through the FormatExporter surface."""
    names = re.compile(r"\b(" + "|".join([*registered_formats(), *format_aliases()]) + r")\b")
    # (config/build_key.py is left out: it lists the onnx *library* among the versions a build records.)
    for module in ("build/runner.py", "build/plan.py", "build/artifact.py", "build/job.py", "build/quantize.py",
                   "build/metadata.py", "build/folder.py",
                   "config/schema.py", "config/checks.py", "quantization/__init__.py", "quantization/report.py",
                   "quantization/calibration.py"):
        found = [word for word in _code_words(REPO / "src" / "exporter" / module) if names.search(word)]
        assert not found, f"{module} names a format: {found}"


def test_onnx_quantization_exports_the_model_once(tmp_path, monkeypatch):
    """weight_type=auto builds two quantized candidates from the one fp32 graph the job exported."""
    from exporter.config.schema import QuantizationConfig, WeightType

    calls = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (calls.append(a[2]), real_export(*a, **k))[1])
    q = QuantizationConfig(mode=QuantizationMode.dynamic, weight_type=WeightType.auto, latency_runs=3)
    out = export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / "q", formats=["onnx"], quantization=q,
                       calibration={"num_samples": 4, "heldout_samples": 2})
    report = json.loads(out["metadata"].read_text())["artifacts"]["onnx"]["quantization_report"]
    assert sorted(report["weight_type_selection"]["candidates"]) == ["qint8", "quint8"]
    assert len(calls) == 1


def test_an_alias_names_its_format_in_help_folders_and_refuses_doubling(tmp_path, cli, help_run):
    help_text = help_run[0].stdout  # `python -m exporter --help`, run once per session (conftest)
    assert re.search(r"^format=safetensors\s+model.safetensors", help_text, re.M)
    built = cli("format=safetensors")
    assert built.returncode == 0, built.stderr
    folder = tmp_path / "exports/simple_cnn/safetensors-none"
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "metadata.json").read_text())["formats"] == ["pytorch"]
    both = cli("format=[pytorch,safetensors]")
    assert both.returncode == 2 and both.stderr.strip().splitlines() == [
        "error: format: pytorch and safetensors are the same format (pytorch) with different options, and one "
        "build holds one file of it; build them as two jobs (python -m exporter -m format=pytorch,safetensors)"]


def test_format_lists_are_checked_by_name(tmp_path, cli):
    twice = cli("format=[onnx,onnx]")
    assert twice.returncode == 2 and "format: onnx is listed twice" in twice.stderr
    unknown = cli("format=[onnx,tflite]")
    assert unknown.returncode == 2 and "Could not load 'format/tflite'; valid formats: exported_program, onnx, " \
        "pytorch, safetensors, torchscript" in unknown.stderr


def test_the_python_api_takes_the_alias_too(tmp_path):
    out = export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / "a", formats=["safetensors"])
    assert out["pytorch"].name == "model.safetensors"
    with pytest.raises(ConfigError, match=r"'pytorch' and 'safetensors' are the same format \(pytorch\)"):
        export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / "b", formats=["pytorch", "safetensors"])
    with pytest.raises(ConfigError, match=r"unknown format 'tflite'; valid values: \['exported_program', 'onnx', "
                                          r"'pytorch', 'safetensors', 'torchscript'\]"):
        export_model(linear(), LinearAdapter(), LINEAR_SPEC, tmp_path / "c", formats=["tflite"])


# ---------------------------------------------------------------- one table per concept
# Task types: the table (exporter.config.task_types) gives each its modality; its option file and its
# adapter are found by its name. Library versions: one list. Artifact file names: the format registry.

TASK_SPEC_FILES = REPO / "conf" / "task_spec"


def test_every_task_type_has_one_adapter_and_one_option_file(hydra_config_module):
    from hydra import compose

    table = task_types()
    assert list(table) == list(SHIPPED_TASK_TYPES)  # no plug-in installed here
    # exactly one adapter each (a dict holds one per key; register_adapter refuses a second), none
    # for a task type the table does not have
    assert sorted(ADAPTERS) == sorted(table)
    # exactly one option file each, none for a task type the table does not have
    assert sorted(p.stem for p in TASK_SPEC_FILES.glob("*.yaml")) == sorted(table)
    fields_line = re.search(r"^Fields: .*?(?=\n\n)", CONFIGURATION_DOCS, re.M | re.S).group(0)
    for name, entry in table.items():
        assert (REPO / "conf" / entry.option_file).is_file()
        cfg = compose("config", overrides=[f"task_spec={name}"])
        # the option file states the modality again (Hydra composes it): it must be the table's
        assert (cfg.task_spec.task_type, cfg.task_spec.modality) == (name, entry.modality), entry.option_file
        assert f"`{name}`" in fields_line, f"docs/configuration.md's task_spec fields do not list {name}"


def test_register_task_type_and_register_adapter_check_the_entry():
    with pytest.raises(ValueError, match=r"register_task_type\('image_regression'\): modality: unsupported "
                                         r"modality 'audio'; valid values: \['text', 'vision'\]"):
        register_task_type("image_regression", "audio")
    with pytest.raises(ValueError, match="task type 'object_detection' is registered already"):
        register_task_type("object_detection", "vision")
    with pytest.raises(ValueError, match="must be lower_snake_case"):
        register_task_type("Image-Regression", "vision")

    class ImageRegressionAdapter(ModelAdapter):
        input_names = ("pixel_values",)
        output_names = ("score",)

    with pytest.raises(TypeError, match="no task type 'image_regression' in the table; register it first"):
        register_adapter("image_regression")(ImageRegressionAdapter)
    with pytest.raises(TypeError, match="task type 'object_detection' has an adapter already, "
                                        "exporter.adapters.tasks.ObjectDetectionAdapter"):
        register_adapter("object_detection")(ImageRegressionAdapter)
    assert "image_regression" not in task_types() and "image_regression" not in ADAPTERS
    register_task_type("image_regression", "vision")
    try:
        register_adapter("image_regression")(ImageRegressionAdapter)
        spec = TaskSpec("r", "vision", "image_regression", {"image_size": [3, 8, 8]})
        spec.validate()
        from exporter.adapters import adapter_for_task

        assert type(adapter_for_task(spec)) is ImageRegressionAdapter
        with pytest.raises(ValueError, match="'image_regression' needs modality 'vision'"):
            TaskSpec("r", "text", "image_regression").validate()
    finally:
        unregister_adapter("image_regression")
        unregister_task_type("image_regression")
    with pytest.raises(ValueError, match=r"unknown task type 'image_regression'; valid values: \['vision_classification'"):
        TaskSpec("r", "vision", "image_regression").validate()


def test_the_default_input_sizes_are_the_modality_table_s():
    from exporter import generate_dummy_input

    assert tuple(generate_dummy_input(TaskSpec("t", "vision", "vision_classification")).shape[1:]) == \
        tuple(MODALITIES["vision"]["image_size"])
    ids = generate_dummy_input(TaskSpec("t", "text", "language_modeling"))
    assert ids.shape[1] == MODALITIES["text"]["max_seq_len"]


# A task type from outside the package, as docs/extending.md's recipe has it: a table entry
# (register_task_type) and an adapter (@register_adapter) in a module an entry point names, and an
# option file in the --config-dir. The model is in a module of its own: the plug-in module is imported
# when the config is checked, before the model is built, so it imports no torch.
TASK_PLUGIN = '''
from exporter.adapters import ModelAdapter, register_adapter
from exporter.config.task_types import register_task_type

register_task_type("image_regression", modality="vision")


@register_adapter("image_regression")
class ImageRegressionAdapter(ModelAdapter):
    """Images in, one score per image out."""

    input_names = ("pixel_values",)
    output_names = ("score",)
'''

TASK_MODEL = '''
import torch


class TinyRegressor(torch.nn.Module):
    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, pixel_values):
        return self.head(self.conv(pixel_values).mean(dim=(2, 3)))
'''

TASK_SPEC_FILE = '''
defaults:
  - /schema/task_spec/task_spec@_here_
  - _self_

task_name: image_regression
modality: vision
task_type: image_regression
input_schema:
  image_size: [3, 16, 16]
'''

TASK_MODEL_FILE = '''# @package _global_
defaults:
  - override /task_spec: image_regression

model:
  _target_: regression_models.TinyRegressor
'''


def test_a_task_type_added_by_the_recipe_exports_from_the_command_line(tmp_path):
    site, conf = tmp_path / "site", tmp_path / "conf"
    (site / "regression_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "regression_plugin.py").write_text(textwrap.dedent(TASK_PLUGIN))
    (site / "regression_models.py").write_text(textwrap.dedent(TASK_MODEL))
    (site / "regression_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: regression-plugin\nVersion: 1.0\n")
    (site / "regression_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[exporter.task_types]\nimage_regression = regression_plugin\n")
    (conf / "task_spec").mkdir(parents=True)
    (conf / "model").mkdir()
    (conf / "task_spec" / "image_regression.yaml").write_text(TASK_SPEC_FILE)
    (conf / "model" / "tiny_regressor.yaml").write_text(TASK_MODEL_FILE)
    env = {"PYTHONPATH": str(site)}

    built = run_cli("--config-dir", str(conf), "model=tiny_regressor", "format=[onnx,torchscript]", "export_dir=out",
                    cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["status"] == "ok"
    assert (metadata["task_type"], metadata["modality"]) == ("image_regression", "vision")
    # the plug-in's adapter named the output; the option file sized the input
    assert [o["name"] for o in metadata["outputs"]] == ["score"]
    assert metadata["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": [1, 3, 16, 16]}]
    for name, file in (("onnx", "model.onnx"), ("torchscript", "model.torchscript")):
        record = metadata["artifacts"][name]
        assert record["status"] == "ok" and record["file"] == file and (tmp_path / "out" / file).is_file()
        # checked against eager PyTorch at the example's batch size and another
        assert [c["input_shapes"]["pixel_values"][0] for c in record["validation"]["checks"]] == [1, 2]
        assert all(c["within_tolerance"] for c in record["validation"]["checks"])

    # the table, not a list fixed at import, gives the valid values
    unknown = run_cli("--config-dir", str(conf), "model=tiny_regressor", "task_spec.task_type=image_regresion",
                      cwd=tmp_path, env=env)
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "error: task_spec.task_type: unknown task type 'image_regresion'; valid values: "
        f"{[*SHIPPED_TASK_TYPES, 'image_regression']}"]
    # without the plug-in the option file still composes, and the check names the task types there are
    missing = run_cli("--config-dir", str(conf), "model=tiny_regressor", "export_dir=missing", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: task_spec.task_type: unknown task type 'image_regression'; valid values: {list(SHIPPED_TASK_TYPES)}"]
    assert not (tmp_path / "missing").exists()


def _add_a_task_type_files(name: str) -> list[Path]:
    adapter = ADAPTERS[name].__self__
    return [REPO / "src" / "exporter" / "config" / "task_types.py",
            REPO / "conf" / task_types()[name].option_file,
            Path(__import__(adapter.__module__, fromlist=["x"]).__file__)]


@pytest.mark.parametrize("name", list(SHIPPED_TASK_TYPES))
def test_the_add_a_task_type_recipe_matches_each_shipped_task_type(name):
    files = _add_a_task_type_files(name)
    assert len(files) == _recipe_count("Add a task type")
    assert all(f.is_file() for f in files)
    assert re.search(rf'^    "{name}": "{SHIPPED_TASK_TYPES[name]}",$', files[0].read_text(), re.M)
    assert f'@register_adapter("{name}")' in files[2].read_text()


def test_library_versions_are_listed_once(tmp_path):
    """One list (exporter.config.build_key.LIBRARIES): metadata.json records each, the build key the keyed ones."""
    from exporter.build.metadata import environment
    from exporter.config.build_key import LIBRARIES, key_inputs

    assert list(environment()) == ["python", "platform", *LIBRARIES, "executable"]
    assert list(key_inputs({}, model_target=None)["versions"]) == [name for name, keyed in LIBRARIES.items() if keyed]
    # a distribution name no module but the list's needs
    holders = [str(path.relative_to(REPO / "src" / "exporter")) for path in sorted((REPO / "src" / "exporter").rglob("*.py"))
               if "hydra-core" in _code_words(path)]
    assert holders == ["config/build_key.py"]


def test_build_folders_know_the_file_names_of_every_registered_format(pickle_format, tmp_path):
    """An earlier build may hold an artifact its metadata.json no longer lists; the names a format's
    artifacts take come from the format registry (FormatExporter.file_names)."""
    from exporter.build.folder import artifact_names, check_target

    assert registered_formats()["onnx"].file_names() == ("model.onnx", "model.onnx.data")
    assert registered_formats()["pytorch"].file_names() == ("model.pth", "model.safetensors")
    assert artifact_names() == {"model.onnx", "model.onnx.data", "model.torchscript", "model.pth", "model.safetensors",
                                "model.pt2", "model.pkl"}
    folder = tmp_path / "earlier"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({"schema_version": "1.0", "artifacts": {},
                                                      "environment": {"exporter": "0.1.0"}}))
    for name in ("model.onnx.data", "model.pkl"):
        (folder / name).write_bytes(b"")
    check_target(folder)  # both are names a registered format gives its files
    unregister_format("pickled_module")
    with pytest.raises(ConfigError, match=r"holds files that are not part of a build of this tool \(model.pkl\)"):
        check_target(folder)
