"""The examples in the public API's docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["exporter", "exporter.api", "exporter.adapters.example_inputs", "exporter.adapters.base",
           "exporter.config.task_spec", "exporter.config.task_types", "exporter.config.checks", "exporter.records.layout",
           "exporter.cli.describe",
           "exporter.models", "exporter.models.simple_cnn", "exporter.models.lm_stub",
           "exporter.formats.torchscript", "exporter.formats.traceable_masks", "exporter.build.folder",
           "exporter.config.build_key", "exporter.config.environment", "exporter.build.threads",
           "exporter.cli.app", "exporter.quantization.report", "exporter.build.quantize", "exporter.cli.verify",
           "exporter.process.forked_jobs", "exporter.process.child",
           "exporter.process.resolvers"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
