"""The examples in the public API's docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["exporter", "exporter.api", "exporter.inputs", "exporter.adapters", "exporter.task_spec",
           "exporter.helpers", "exporter.models", "exporter.models.simple_cnn", "exporter.models.lm_stub",
           "exporter.formats.torchscript", "exporter.formats.traceable_masks", "exporter.build_folder",
           "exporter.build_key", "exporter.settings", "exporter.background", "exporter.cli",
           "exporter.quantization.report", "exporter.quantization.selection", "exporter.verify",
           "exporter.isolation", "exporter.standby", "exporter.job_process", "exporter.resolvers"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
