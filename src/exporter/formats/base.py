"""The surface every format exporter has; the runner knows this and nothing else."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Optional, Sequence

from ..adapters.outputs import as_output_list, to_numpy  # noqa: F401 (formats read results through them)
from ..config.schema import option_value
from ..errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..adapters import ModelAdapter
    from ..adapters.outputs import OutputChoice
    from ..config.schema import QuantizationConfig
    from ..config.task_spec import TaskSpec
    from ..quantization.calibration import CalibrationSet

# Runs a loaded artifact on named inputs and returns its outputs as numpy arrays, in the job's
# output order (``ExportContext.output_names``); a single array is taken as the only output.
Runnable = Callable[["Mapping[str, torch.Tensor]"], "list[np.ndarray]"]


@contextlib.contextmanager
def quiet_torch() -> Iterator[io.StringIO]:
    """What torch's exporters print while they work or fail (progress lines, partial graphs on
    stderr, warnings through torch's own log handlers) is collected here instead of reaching the
    terminal: the job's own one-line messages say what matters. Yields the collected text."""
    noise = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with _descriptors_into(noise), contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            yield noise
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _descriptors_into(noise: io.StringIO) -> Iterator[None]:
    """What C++ code writes straight to file descriptors 1 and 2 meanwhile (the legacy ONNX
    exporter prints its graph there at some opsets), into ``noise`` too. The capture is an unlinked
    temporary file: nothing is left behind, whatever stops the process."""
    import os
    import sys
    import tempfile

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no descriptors to capture (closed): nothing to do
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            capture.seek(0)
            noise.write(capture.read().decode(errors="replace"))


def as_arrays(result: Any) -> "list[np.ndarray]":
    """A traced program's result (one tensor, or a tuple of them) as numpy arrays in order."""
    items = result if isinstance(result, (tuple, list)) else [result]
    return [to_numpy(item) for item in items]


# Under this size an artifact torch serializes is written through memory (torch_saved).
_IN_MEMORY_BYTES = 512 << 20


def tensor_bytes(model: Any) -> int:
    """The bytes of a module's parameters and buffers: about what torch's writers write."""
    tensors = list(model.parameters()) + list(model.buffers()) if hasattr(model, "parameters") else []
    return sum(t.numel() * t.element_size() for t in tensors)


def torch_saved(path: Path, save: Callable[[Any], None], size_hint: int) -> None:
    """``save(target)`` (torch.save, torch.jit.save, torch.export.save) into ``path``. Torch's zip
    writer aborts the whole process on a full disk (its destructor throws while unwinding:
    "terminate called", SIGABRT), so an artifact of up to 512 MiB is serialized into memory and
    written by Python, whose error is an OSError like any other; a larger one is written directly,
    once the disk has room for it (``size_hint`` bytes and a tenth more)."""
    if size_hint <= _IN_MEMORY_BYTES:
        buffer = io.BytesIO()
        save(buffer)
        with open(path, "wb") as f:
            f.write(buffer.getbuffer())
        return
    free = shutil.disk_usage(path.parent).free
    if free < size_hint + size_hint // 10 + (1 << 20):
        raise OSError(errno.ENOSPC, f"No space left on device ({size_hint} bytes to write, {free} free)", str(path))
    save(str(path))


@dataclass
class ExportContext:
    """Everything an exporter may read: the eval-mode fp32 model and how to call it."""

    model: "torch.nn.Module"
    adapter: "ModelAdapter"
    task_spec: "TaskSpec"
    example_inputs: "dict[str, torch.Tensor]"
    quantization: "QuantizationConfig"
    # Which outputs are exported, by name, and how to pick them from the model's raw output.
    output_choice: "OutputChoice"
    # The eager outputs on the example inputs, in output order (their shapes give the output axes).
    example_outputs: "list[torch.Tensor]"
    # Samples for static quantization (None when the job is not quantized).
    calibration: "Optional[CalibrationSet]" = None

    @property
    def output_names(self) -> list[str]:
        return list(self.output_choice.names)

    def outputs(self, model: Any, inputs: "Mapping[str, torch.Tensor]") -> "list[torch.Tensor]":
        """The exported outputs of ``model`` (the job's, a quantized or reloaded copy) on ``inputs``."""
        return self.output_choice.pick(self.adapter, self.adapter.call(model, inputs))

    def wrap(self, model: Any) -> "torch.nn.Module":
        """The module exporters trace: inputs positionally, the exported outputs in order."""
        return self.adapter.wrap(model, pick=lambda raw: self.output_choice.pick(self.adapter, raw))

    def dynamic_axes(self, batch: bool, sequence: bool) -> dict[str, dict[int, str]]:
        """Symbolic axes per input and output name (the form torch.onnx.export takes)."""
        axes = {name: dims for name, dims in self.adapter.dynamic_axes(batch=batch, sequence=sequence).items()
                if name in self.example_inputs}
        for name, tensor in zip(self.output_names, self.example_outputs):
            dims = self.adapter.output_axes(name, tensor, batch, sequence)
            if dims:
                axes[name] = dims
        return axes

    @property
    def mode(self) -> str:
        return option_value(self.quantization.mode)

    @property
    def quantized(self) -> bool:
        return self.mode != "none"

    def tags(self) -> dict[str, str]:
        """What every artifact carries in its format's own metadata slot (ONNX metadata_props,
        TorchScript extra files, safetensors header), so a file found alone still says what it
        is. Only stable facts: no timestamps, so rebuilds stay byte-identical."""
        import json

        from .. import __version__

        return {
            "exporter.version": __version__,
            "exporter.task_name": self.task_spec.task_name,
            "exporter.task_type": self.task_spec.task_type,
            "exporter.adapters.example_inputs": json.dumps({n: [str(t.dtype).replace("torch.", ""), list(t.shape)]
                                           for n, t in self.example_inputs.items()}),
            "exporter.quantization": self.mode,
        }

    def fp32(self) -> "ExportContext":
        """The same job without quantization: the fp32 twin a quantized artifact is measured against."""
        from ..config.schema import QuantizationConfig

        return replace(self, quantization=QuantizationConfig())


@dataclass
class ExportOutcome:
    """What an exporter reports about the file it wrote (goes into metadata.json)."""

    details: dict[str, Any] = field(default_factory=dict)
    # How a user loads this artifact, as a short code snippet.
    load_hint: str = ""


class FormatExporter(ABC):
    """Exports a model to one file format and loads that file back in the format's own runtime.

    A format is one unit: its exporter class (this surface), its options dataclass, its quantization
    mechanism and a declaration of what it takes. ``@register_format`` (``formats/registry.py``) adds
    it to the registry, from which the config schema, the command line's choices and help, and
    the quantization checks are all derived. docs/extending.md walks through adding one.
    """

    # The format's name on the command line (``format=<name>``) and in metadata.json.
    name: ClassVar[str]
    # Its options: a dataclass whose first field is ``enabled: bool = False`` (see schema.py).
    options_schema: ClassVar[type]
    # One line for ``--help`` and the docs: what file it writes and how it is checked.
    summary: ClassVar[str]
    # The quantization modes it builds, each with the weight types ``weight_type=auto`` tries
    # (empty: the mode has no weight type, e.g. fp16). Empty by default: a format that declares
    # nothing is refused every mode at composition, never built fp32 under a quantized label.
    quantization: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # Why a mode is not offered (mode -> reason), added to the refusal message.
    refusals: ClassVar[Mapping[str, str]] = {}
    # What the progress line says while it exports (``onnx: exporting``; a state dict: writing the weights).
    progress_verb: ClassVar[str] = "exporting"
    # Top-level metadata.json keys this format fills (null when the job does not build it).
    metadata_keys: ClassVar[tuple[str, ...]] = ()
    # Other option names for this format (``format=<alias>``, a conf/format/<alias>.yaml that sets
    # options of this one), each with its help line.
    aliases: ClassVar[Mapping[str, str]] = {}
    # The options each alias sets (``{"safetensors": {"serialization": "safetensors"}}``), for the
    # Python API; the command line's alias is its own option file that sets the same.
    alias_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # Whether its graph can carry a causal language model's key/value cache
    # (``task_spec.use_cache``, adapters/kv_cache.py): True, False (it traces the graph without the
    # cache), or None (it traces no graph: a state dict).
    carries_cache: ClassVar[Optional[bool]] = False

    @classmethod
    def folder_label(cls, options: Any) -> str:
        """This format's part of a build folder's name (``onnx`` in ``onnx+pytorch-none``)."""
        return cls.name

    # The artifact's file name without its extension: ``model``, or the part's name for models
    # exported in parts (``encoder``/``decoder``). A format's ``filename`` is built from it.
    stem: str = "model"

    def __init__(self, options: Any):
        self.options = options

    @property
    @abstractmethod
    def filename(self) -> str:
        """The artifact's file name inside the export folder (``<stem>.<extension>``)."""

    @classmethod
    def extra_file_names(cls, filename: str) -> tuple[str, ...]:
        """The files this format may write beside its artifact ``filename`` (recorded under the
        artifact's ``extra_files``): none by default; ONNX's weights file ``model.onnx.data``."""
        return ()

    @classmethod
    def file_names(cls, stem: str = "model") -> tuple[str, ...]:
        """Every file an artifact of this format named ``stem`` may be, whatever its options: its
        ``filename`` at the default options and at each alias's (``model.pth``, ``model.safetensors``),
        each followed by its ``extra_file_names``. A build folder may keep any of them from an earlier
        build (exporter.build.folder)."""
        names: list[str] = []
        for options in ({}, *cls.alias_options.values()):
            try:
                exporter = cls(replace(cls.options_schema(), **options))
                exporter.stem = stem
                filename = exporter.filename
            except Exception:  # noqa: BLE001 - options without defaults: that name is not known in advance
                continue
            names += [name for name in (filename, *cls.extra_file_names(filename)) if name not in names]
        return tuple(names)

    @property
    def dynamic_batch(self) -> bool:
        """Whether the artifact accepts another batch size than the example's (the format's
        ``dynamic_batch`` option where it has one)."""
        return bool(getattr(self.options, "dynamic_batch", True))

    @property
    def dynamic_sequence(self) -> bool:
        """Whether a text artifact accepts another sequence length than the example's (the format's
        ``dynamic_sequence`` option where it has one)."""
        return bool(getattr(self.options, "dynamic_sequence", True))

    def weight_types(self, mode: str) -> list[str]:
        """The weight types ``quantization.weight_type=auto`` tries for ``mode``."""
        return list(self.quantization.get(mode, ()))

    @classmethod
    def check_options(cls, options: Any) -> None:
        """Refuse option combinations this format cannot build whatever the model (raise
        ConfigError). The command line checks them with the config, before the model is built."""

    @classmethod
    def check_names(cls, options: Any, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        """Refuse options that cannot work with the task's input and output names (as its adapter
        names them before it sees the model): the command line checks them before the model is
        built. ONNX refuses an input and an output of one name (``format.onnx.input_names=[logits]``)."""

    def check(self, ctx: ExportContext) -> None:
        """Refuse option combinations this format cannot build (raise ConfigError), before any work
        (check_options first, then what depends on the model)."""
        self.check_options(self.options)

    @abstractmethod
    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        """Write the fp32 artifact to ``path`` (extra files may go beside it)."""

    def quantize(self, ctx: ExportContext, fp32_path: Path, path: Path) -> ExportOutcome:
        """Write the artifact quantized as ``ctx.quantization`` says to ``path``, given the fp32 one
        this job exported at ``fp32_path``. Only called for modes the format declares; the outcome's
        details are recorded over the fp32 export's."""
        raise ExportError(f"{self.name}: declares quantization modes {sorted(self.quantization)} but does not "
                          "implement FormatExporter.quantize")

    def retry(self, ctx: ExportContext, path: Path, problem: str, outcome: ExportOutcome) -> Optional[ExportOutcome]:
        """Another way to build the fp32 artifact at ``path`` after the one ``outcome`` describes failed
        its check (``problem``), or None. Called once; the new artifact is checked the same way."""
        return None

    def mismatch_hint(self, changed_axes: list[str]) -> str:
        """What to do when the artifact matches at the example's shape but not where ``changed_axes``
        (e.g. ``["batch", "sequence"]``) differ: the format's likely cause and remedy."""
        return ""

    @abstractmethod
    def load(self, path: Path, ctx: ExportContext) -> Runnable:
        """Load ``path`` in the format's own runtime and return something that runs it."""

    def job_metadata(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Values for this format's ``metadata_keys`` from its artifact record (``details`` included)."""
        return {}
