"""The tool's OmegaConf resolvers (``${exporter.build_name:...}``, ``${exporter.hf_config:...}``, ...),
registered when this module is imported.

Both processes of a run need them: the command line's, which composes the config, and the job's,
which builds the model from it (exporter.process.child), where a model node may use them too.

    >>> build_name({"onnx": {"enabled": True}, "torchscript": None}, "dynamic")
    'onnx-dynamic'
    >>> model_name("hf_causal_lm", "exporter.models.hf.from_pretrained", "~/models/gpt2-${x}/")
    'gpt2-_{x}'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config.schema import option_value, selected_formats


def build_name(formats: Any, quantization: Any) -> str:
    """Folder name of a build from its choices, e.g. ``onnx-dynamic`` or ``onnx+torchscript-none``
    (each format names itself: ``format=safetensors`` builds into ``safetensors-none``)."""
    from ..formats.registry import folder_label

    names = [folder_label(name, formats[name]) for name in selected_formats(formats)]
    return f"{'+'.join(names) or 'none'}-{option_value(quantization)}"


def model_name(choice: Any, target: Any, path: Any = None) -> str:
    """The build folder's model part: the folder name of a model loaded from a folder
    (``model=hf_causal_lm model.path=~/models/gpt2-tiny`` -> ``gpt2-tiny``), else the model option's
    name, else the class (or factory) name of a model given only by ``_target_``."""
    name = Path(str(path).rstrip("/")).name if path not in (None, "", "???") else ""
    name = name or (str(choice) if choice else str(target).rsplit(".", 1)[-1])
    # Hydra keeps the folder in its own config (hydra.runtime.output_dir), where a ``${`` would be
    # read as an interpolation whenever it is read again: ``models/esc${x}`` builds into ``esc_{x}``.
    return name.replace("$", "_")


def _format_help() -> str:
    from ..formats.registry import help_lines

    return help_lines()


def _format_option_help() -> str:
    from ..formats.registry import option_help_lines

    return option_help_lines()


def _hf_config(path: Any, keys: Any, default: Any = None) -> Any:
    from ..config.hf_folder import config_value

    return config_value(path, keys, default)


def _hf_max_seq_len(path: Any, wanted: Any = 128) -> Any:
    from ..config.hf_folder import max_seq_len

    return max_seq_len(path, int(wanted))


def _sweep_suffix(overrides: Any) -> str:
    from ..records.layout import sweep_suffix

    return sweep_suffix(list(overrides or []))


for _name, _resolver in (("exporter.build_name", build_name), ("exporter.model_name", model_name),
                         ("exporter.sweep_suffix", _sweep_suffix), ("exporter.format_help", _format_help),
                         ("exporter.format_option_help", _format_option_help),
                         ("exporter.hf_config", _hf_config), ("exporter.hf_max_seq_len", _hf_max_seq_len)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
