"""Hydra's ConfigStore entries of the tool, and the checks of a whole composed job against its schema
(``ExportConfig`` with the ``format`` node the format registry types).

The schemas are stored under ``schema/...``; each YAML option under ``conf/`` extends its schema through
its defaults list (``- /schema/format/onnx@_here_``), so a misspelt key or a wrong type fails at
composition time with Hydra's own message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import checks
from ..config.schema import CalibrationConfig, QuantizationConfig, TaskSpecConfig
from ..formats.registry import export_schema

if TYPE_CHECKING:
    from omegaconf import DictConfig


def unknown_keys(cfg: "DictConfig") -> list[str]:
    """Dotted keys of a composed job that no schema declares, e.g. ``["validate.atoll"]``."""
    return checks.unknown_keys(cfg, export_schema())


def check_known_keys(cfg: "DictConfig") -> None:
    """ConfigError naming every unknown key of a composed job and the valid keys beside it."""
    checks.check_known_keys(cfg, export_schema())


def check_config(cfg: "DictConfig") -> None:
    """The checks Hydra's composition cannot make, run on the composed job before anything is built:
    unknown keys first (a typo's value is not worth checking), then bounds."""
    checks.check_config(cfg, export_schema())


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore under ``schema/...`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from ..formats.registry import register_configs as register_format_configs

    cs = ConfigStore.instance()
    cs.store(name="export_schema", node=export_schema())
    cs.store(group="schema/task_spec", name="task_spec", node=TaskSpecConfig)
    cs.store(group="schema/quantization", name="quantization", node=QuantizationConfig)
    cs.store(group="schema/calibration", name="calibration", node=CalibrationConfig)
    register_format_configs()
