"""The Python door: ``export_model(...)`` for notebooks and scripts."""

from __future__ import annotations

import logging
import numbers
import os
import tempfile
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from .adapters import ModelAdapter
from .build.metadata import plain
from .config.checks import check_field, check_values
from .config.schema import CalibrationConfig, CalibrationSource, ExportConfig, QuantizationConfig, QuantizationMode, ValidateConfig
from .config.task_spec import TaskSpec
from .errors import ConfigError, ExportError, first_line

if TYPE_CHECKING:
    import torch

log = logging.getLogger("exporter")

DEFAULT_FORMATS = ("torchscript", "onnx")


def export_model(
    model: "torch.nn.Module",
    adapter: Optional[ModelAdapter],
    task_spec: TaskSpec,
    export_dir: Union[str, Path],
    formats: Sequence[str] = DEFAULT_FORMATS,
    quantization: Optional[str] = None,
    *,
    seed: int = 0,
    format_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    validate: Optional[Union[ValidateConfig, Mapping[str, Any]]] = None,
    calibration: Any = None,
    wait: bool = True,
) -> dict[str, Path]:
    """Export ``model`` to each of ``formats``, check every artifact against eager PyTorch, and
    write ``metadata.json`` and ``config.yaml`` beside them.

    Args:
        model: a trained ``torch.nn.Module`` (put in eval mode here).
        adapter: draws example inputs and calls the model; ``None`` picks the shipped adapter
            for ``task_spec.task_type``.
        task_spec: task type, modality and input/output schema.
        export_dir: output folder, created if missing.
        formats: any registered format: ``"onnx"``, ``"torchscript"``, ``"pytorch"`` (state dict),
            ``"exported_program"`` (torch.export ``.pt2``), or one a plug-in registers.
        quantization: ``None`` (default), ``"dynamic"``, ``"static"`` or ``"fp16"`` (ONNX), or a
            ``QuantizationConfig`` for the finer options (weight type, operator set, ...).
        seed: seed of the example inputs.
        format_options: per-format options, e.g. ``{"onnx": {"opset": 17}}`` (see docs/configuration.md).
        validate: tolerances, gates and strictness (``ValidateConfig`` fields, e.g. ``{"atol": 1e-5}``).
        calibration: samples for static quantization and the quantization report: ``None`` (random
            samples from the task spec, with a warning), a path to a ``.npz`` file, an iterable of
            dicts of named tensors (or tensors), or ``CalibrationConfig`` fields as a dict.
        wait: another build of the same ``export_dir`` is running: wait for it (default), or raise
            ``exporter.build.folder.BuildLocked`` at once.

    Returns:
        ``{format: Path, ..., "metadata": Path}``. A format that fails is logged, recorded in
        metadata.json, and left out of this dict; the other formats are still built.

    Raises:
        ConfigError (a ``ValueError``): invalid arguments (an unknown option, a wrong type, a value out
        of its range such as ``validate={"atol": -1}``) or a model that fails on its example input,
        before anything is written.

    Example (vision):
        >>> import tempfile
        >>> from exporter import TaskSpec, export_model
        >>> from exporter.models import SimpleCNN
        >>> spec = TaskSpec("demo", "vision", "vision_classification", {"image_size": [3, 32, 32]},
        ...                 {"num_classes": 10})
        >>> out = export_model(SimpleCNN(), None, spec, tempfile.mkdtemp(), formats=["onnx", "pytorch"])
        >>> sorted(out), out["onnx"].name
        (['metadata', 'onnx', 'pytorch'], 'model.onnx')

    Example (text):
        >>> from exporter import LanguageModelingAdapter
        >>> from exporter.models import LMStub
        >>> lm = TaskSpec("lm", "text", "language_modeling", {"vocab_size": 1000, "max_seq_len": 32})
        >>> out = export_model(LMStub(vocab_size=1000), LanguageModelingAdapter(), lm, tempfile.mkdtemp(),
        ...                    formats=["torchscript"], quantization="dynamic")
        >>> out["torchscript"].name
        'model.torchscript'
    """
    from .build.runner import ExportJob, run_export

    _check_arguments(model, adapter, task_spec, export_dir, formats, wait)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed: expected a whole number, got {_kind(seed)} {seed!r}")
    seed = int(seed)
    check_field(ExportConfig, "seed", seed, "seed")
    if isinstance(formats, str):
        formats = [formats]
    if format_options is not None and not isinstance(format_options, Mapping):
        raise ConfigError(f"format_options: expected None or a dict of format name -> options, got {_kind(format_options)}")
    format_options = dict(format_options or {})
    stray = sorted(set(format_options) - set(formats))
    if stray:
        raise ConfigError(f"format_options: options for format(s) {stray} that are not in formats={list(formats)}")
    from .formats import format_class
    from .formats.registry import resolve_alias

    built_formats, chosen_as = {}, {}
    for name in formats:
        target, preset = resolve_alias(name)
        if target in built_formats:
            raise ConfigError(f"formats: {chosen_as[target]!r} and {name!r} are the same format ({target}); one build "
                              "holds one file of it: export them into two folders")
        given = format_options.get(name)
        if given is not None and not is_dataclass(given) and not isinstance(given, Mapping):
            raise ConfigError(f"format_options[{name!r}]: expected a dict of options (e.g. {{'opset': 17}}) or the "
                              f"format's options dataclass, got {_kind(given)}")
        if is_dataclass(given):
            options = replace(given, **preset) if preset else given
        else:
            options = {**preset, **dict(given or {})}
        built_formats[target] = _dataclass_from(format_class(target).options_schema, options,
                                                f"format_options[{name!r}]", f"format.{target}.")
        built_formats[target].enabled = True
        chosen_as[target] = name
    quant = _quantization(quantization)
    validate_cfg = _dataclass_from(ValidateConfig, validate, "validate", "validate.")
    calibration_cfg, dataset = _calibration(calibration)
    snapshot = {
        "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}"},
        "adapter": None if adapter is None else f"{type(adapter).__module__}.{type(adapter).__qualname__}",
        "task_spec": task_spec.to_dict(),
        "format": {name: plain(opts) for name, opts in built_formats.items()},
        "quantization": plain(quant),
        "export_dir": str(export_dir),
        "seed": seed,
        "validate": plain(validate_cfg),
        "calibration": plain(calibration_cfg) if dataset is None else {
            **plain(calibration_cfg), "dataset": f"{type(dataset).__module__}.{type(dataset).__qualname__}"},
    }
    from omegaconf import OmegaConf

    job = ExportJob(
        model=model, task_spec=task_spec, export_dir=Path(export_dir), formats=built_formats, adapter=adapter,
        quantization=quant, validate=validate_cfg, seed=seed,
        calibration=calibration_cfg, calibration_dataset=dataset,
        snapshot_yaml=OmegaConf.to_yaml(OmegaConf.create(snapshot)),
        provenance={"config": {"source": "python-api", "choices": None, "overrides": []}, "checkpoint": None,
                    **_identity(snapshot, model)},
        wait=wait,
    )
    result = run_export(job)
    for name, artifact in result.artifacts.items():
        if artifact.status == "failed":
            log.error("export_model: %s was not exported: %s", name, artifact.record.error)
    if result.kept is not None:
        from .build.runner import kept_message

        log.error("export_model: %s", kept_message(result))
    return result.paths()


def _kind(value: Any) -> str:
    """``a function (<lambda>)``, ``a dict``, ``None``: what was passed, for a one-line message."""
    import types

    if value is None:
        return "None"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"a function ({getattr(value, '__qualname__', '?')})"
    if isinstance(value, type):
        return f"the class {value.__qualname__} itself"
    name = type(value).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _check_arguments(model: Any, adapter: Any, task_spec: Any, export_dir: Any, formats: Any, wait: Any) -> None:
    """ConfigError naming the argument and what it takes, before anything is built: a raw
    AttributeError deep in the job says neither."""
    import torch

    if not isinstance(model, torch.nn.Module):
        hint = "; wrap it in a torch.nn.Module whose forward calls it" if callable(model) else ""
        if isinstance(model, type) and issubclass(model, torch.nn.Module):
            hint = f"; pass an instance: {model.__qualname__}(...)"
        raise ConfigError(f"model: expected a torch.nn.Module, got {_kind(model)}{hint}")
    if adapter is not None and not isinstance(adapter, ModelAdapter):
        hint = (f"; pass an instance: {adapter.__qualname__}()" if isinstance(adapter, type)
                and issubclass(adapter, ModelAdapter) else "")
        raise ConfigError(f"adapter: expected None (the task type's own adapter) or a ModelAdapter, "
                          f"got {_kind(adapter)}{hint}")
    if not isinstance(task_spec, TaskSpec):
        hint = "; TaskSpec.from_mapping(...) builds one from a dict" if isinstance(task_spec, Mapping) else ""
        raise ConfigError(f"task_spec: expected a TaskSpec, got {_kind(task_spec)}{hint}")
    if not isinstance(export_dir, (str, os.PathLike)) or not str(os.fspath(export_dir)).strip():
        raise ConfigError(f"export_dir: expected a folder path (a str or a Path), got "
                          f"{_kind(export_dir) if not isinstance(export_dir, str) else 'an empty string'}")
    names = [formats] if isinstance(formats, str) else formats
    if not isinstance(names, Sequence) or not names or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"formats: expected a list of format names (e.g. ['onnx', 'torchscript']), got "
                          f"{names!r}" if isinstance(names, Sequence) else f"formats: expected a list of format names, "
                          f"got {_kind(names)}")
    if not isinstance(wait, bool):
        raise ConfigError(f"wait: expected True or False, got {_kind(wait)}")


def _identity(snapshot: dict[str, Any], model: Any) -> dict[str, Any]:
    """The build key of an API build: its settings, the model class's code, the tool versions.
    (The model object's weights are not in it: an API build is never skipped as up to date.)"""
    from .config.build_key import build_key, key_inputs, model_code

    cls = type(model)
    inputs = key_inputs(snapshot, model_target=None, model_identity=model_code(f"{cls.__module__}.{cls.__qualname__}"))
    return {"build_key": build_key(inputs), "build_key_inputs": inputs}


def _calibration(value: Any) -> tuple[CalibrationConfig, Any]:
    """(config, dataset) from what the caller passed as ``calibration``."""
    if value is None:
        return CalibrationConfig(), None
    if isinstance(value, (CalibrationConfig, Mapping)):
        return _dataclass_from(CalibrationConfig, value, "calibration", "calibration."), None
    if isinstance(value, (str, Path)):
        return CalibrationConfig(source=CalibrationSource.npz, path=str(value)), None
    if hasattr(value, "__iter__"):
        return CalibrationConfig(source=CalibrationSource.dataset), value
    raise ConfigError(f"calibration: expected None, a .npz path, an iterable of samples or a dict of "
                      f"CalibrationConfig fields, got {type(value).__name__}")


def _quantization(value: Any) -> QuantizationConfig:
    if isinstance(value, QuantizationConfig):
        return _dataclass_from(QuantizationConfig, value, "quantization", "quantization.")
    mode = "none" if value is None else str(value)
    valid = [m.value for m in QuantizationMode]
    if mode not in valid:
        raise ConfigError(f"quantization: unknown mode {value!r}; valid values: [None, 'dynamic', 'static', 'fp16']")
    return QuantizationConfig(mode=QuantizationMode(mode))


def _dataclass_from(cls: type, values: Any, where: str, prefix: str) -> Any:
    """A schema dataclass from a dict (OmegaConf's type checks, same messages as the CLI) or as given,
    checked against the schema's bounds with the CLI's dotted key (``prefix``, e.g. ``"validate."``)."""
    if isinstance(values, cls):
        config = values
    elif values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected None, a dict of fields or a {cls.__name__}, got {_kind(values)}; "
                          f"valid fields: {[f.name for f in fields(cls)]}")
    else:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), dict(values or {})))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{where}: {first_line(exc)}; valid fields: {[f.name for f in fields(cls)]}") from None
    check_values(config, prefix)
    return config


# --- Single-format helpers for callers that already hold an example input tensor. They run the same
# exporter classes and checks as ``export_model``, then move the one artifact to the path asked for.

TensorOrDict = Union["torch.Tensor", Mapping[str, "torch.Tensor"]]


class _GivenInputsAdapter(ModelAdapter):
    """Serves the caller's example; larger batches repeat it along the batch axis."""

    def __init__(self, inputs: "dict[str, torch.Tensor]", base: Optional[ModelAdapter]):
        self._inputs = inputs
        self._base = base or ModelAdapter()
        self.input_names = tuple(inputs)
        self.output_names = self._base.output_names

    def example_inputs(self, task_spec, batch_size=1, seed=0, seq_len=None):
        return {n: t.repeat_interleave(batch_size, dim=0) if batch_size > 1 else t for n, t in self._inputs.items()}

    def call(self, model, inputs):
        return self._base.call(model, inputs)

    def select_output(self, output):
        return self._base.select_output(output)


def _export_one(model, dummy_input: TensorOrDict, path, fmt: str, options: dict[str, Any],
                quantization: Optional[str], adapter: Optional[ModelAdapter]) -> Path:
    import torch

    inputs = {"input": dummy_input} if isinstance(dummy_input, torch.Tensor) else dict(dummy_input)
    first = next(iter(inputs.values()))
    text = not first.is_floating_point()
    spec = TaskSpec("helper", "text" if text else "vision",
                    "language_modeling" if text else "vision_classification")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as scratch:
        # Sequence slicing needs a known sequence axis; the helpers only prove the batch axis.
        # A folder inside the scratch one: the build's lock file sits beside it and goes with it.
        out = export_model(model, _GivenInputsAdapter(inputs, adapter), spec, Path(scratch) / "build", formats=[fmt],
                           quantization=quantization, format_options={fmt: options},
                           validate={"second_batch_size": 2})
        if fmt not in out:
            import json

            error = json.loads(out["metadata"].read_text())["artifacts"][fmt].get("error")
            raise ExportError(f"{fmt} export failed: {error}")
        os.replace(out[fmt], path)
    return path


def export_onnx(model: "torch.nn.Module", dummy_input: TensorOrDict, path: Union[str, Path], *,
                opset: int = 14, input_names: Optional[list[str]] = None, output_names: Optional[list[str]] = None,
                dynamic_batch: bool = True, backend: str = "auto", quantization: Optional[str] = None,
                adapter: Optional[ModelAdapter] = None) -> Path:
    """Export to ONNX at ``path``, checked in ONNX Runtime against eager PyTorch.

    A tensor input is named ``input``; a dict names its inputs. The output is named ``logits``
    unless ``output_names`` says otherwise.

    Example:
        >>> import tempfile, torch, onnx
        >>> model = torch.nn.Linear(4, 2)
        >>> p = export_onnx(model, torch.rand(1, 4), tempfile.mkdtemp() + "/linear.onnx")
        >>> onnx.load(str(p)).opset_import[0].version
        14
    """
    options = {"opset": opset, "input_names": input_names, "output_names": output_names,
               "dynamic_batch": dynamic_batch, "backend": backend}
    return _export_one(model, dummy_input, path, "onnx", options, quantization, adapter)


def export_torchscript(model: "torch.nn.Module", dummy_input: TensorOrDict, path: Union[str, Path],
                       quantization: Optional[str] = None, *, strict: bool = True,
                       adapter: Optional[ModelAdapter] = None) -> Path:
    """Trace to TorchScript at ``path`` (``quantization="dynamic"``: int8 Linear layers first),
    checked with ``torch.jit.load`` against eager PyTorch.

    Example:
        >>> import tempfile, torch
        >>> p = export_torchscript(torch.nn.Linear(4, 2), torch.rand(1, 4), tempfile.mkdtemp() + "/m.pt")
        >>> tuple(torch.jit.load(str(p))(torch.rand(3, 4)).shape)
        (3, 2)
    """
    return _export_one(model, dummy_input, path, "torchscript", {"strict": strict}, quantization, adapter)
