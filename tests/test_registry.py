"""The format registry: every registered format is a complete unit (config file, schema entry, help
line, docs section, a real round trip), formats that declare no quantization are refused, and a
format from outside the package (an entry-point plug-in) works from the command line."""

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
from exporter.adapters import ModelAdapter
from exporter.formats import FormatExporter, register_format, registered_formats, unregister_format
from exporter.formats.registry import format_aliases
from exporter.config.schema import QuantizationMode

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
def test_every_registered_format_is_a_complete_unit(name, hydra_config_module):
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
    help_text = run_cli("--help", cwd=REPO / "tests").stdout
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
    # (metadata.py is left out: it lists the onnx *library* among the tool versions it records.)
    for module in ("build/runner.py", "build/plan.py", "build/artifact.py", "build/job.py", "build/quantize.py",
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


def test_an_alias_names_its_format_in_help_folders_and_refuses_doubling(tmp_path, cli):
    help_text = run_cli("--help", cwd=tmp_path).stdout
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
