"""TorchScript: torch.jit.trace of the adapter-wrapped model, checked with torch.jit.load."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .base import ExportContext, ExportOutcome, FormatExporter, Runnable, as_arrays, tensor_bytes, torch_saved
from .registry import register_format
from .torch_quantize import TORCH_DYNAMIC, TORCH_STATIC, torch_dynamic_quantize, torch_static_quantize
from .traceable_masks import SWAPPED_MASKS_NOTE, traceable_attention_masks

# TorchScript numbers a class (``linear/___torch_mangle_13.py``) when one of the same name was
# compiled earlier in the process, so the bytes depend on what the process traced before.
_MANGLED = re.compile(rb"[./]___torch_mangle_\d+")
_NOT_CONTENT = (".debug_pkl", ".data/serialization_id")
_CLASS_START = re.compile(rb"^(?=class )", re.M)


def canonical_sha256(path: Path) -> str:
    """sha256 of a TorchScript archive's content, without the per-process class numbering (and the
    file grouping that follows from it), the stack-trace debug records and the serialization id:
    equal for the same program and weights.

    Example:
        >>> import tempfile, torch, warnings
        >>> warnings.simplefilter("ignore")
        >>> paths = []
        >>> for _ in range(2):  # the second trace in this process gets numbered class names
        ...     _ = torch.manual_seed(0)
        ...     paths.append(tempfile.mkdtemp() + "/m.pt")
        ...     torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.ones(1, 2)), paths[-1])
        >>> canonical_sha256(Path(paths[0])) == canonical_sha256(Path(paths[1]))
        True
    """
    items = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.split("/", 1)[-1]
            if name.endswith(_NOT_CONTENT):
                continue
            name_bytes, data = _MANGLED.sub(b"", name.encode()), _MANGLED.sub(b"", archive.read(info))
            # Unnumbered classes of one module share a code file; numbered ones get a file each:
            # compare the code class by class.
            blocks = [b.strip() for b in _CLASS_START.split(data) if b.strip()] if name.startswith("code/") else [data]
            items += [(name_bytes, hashlib.sha256(block).digest()) for block in blocks]
    digest = hashlib.sha256()
    for name, content in sorted(items):
        digest.update(name + b"\0" + content)
    return digest.hexdigest()


def in_fresh_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a new thread and wait for it, re-raising what it raised.

    A signal (Ctrl-C, SIGTERM) raises here in the main thread while the trace goes on in C++; the
    trace must end before the interpreter does, or the process aborts ("terminate called without
    an active exception", exit 134 instead of 130). So an interruption waits for the thread to
    finish, then propagates. Not ``Thread.join``: on Python 3.11 a join that an exception
    interrupts marks the thread stopped while it still runs, and a second join returns at once.
    """
    from ..interrupts import signals_deferred

    failure: list[BaseException] = []
    done = threading.Event()

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=body, name="exporter-trace", daemon=True)
    started = False
    try:
        # Signals held while the thread starts (one arriving in start()'s own wait would raise
        # before the thread is known to run), then delivered here, with the thread started.
        with signals_deferred():
            thread.start()
            started = True
        done.wait()
    except BaseException as interruption:
        while started and not done.is_set():
            try:
                done.wait()
            except BaseException:  # noqa: BLE001 - another signal: the trace still has to end first
                pass
        raise interruption
    thread.join()
    if failure:
        raise failure[0]


@dataclass
class TorchScriptFormatConfig:
    # Set by choosing the format (format=onnx, format=[onnx,...]). The options of a format the job
    # does not build stay in the config, unused, so one sweep can set them for the jobs that do.
    enabled: bool = False
    # torch.jit.trace's strict mode: refuse mutable containers (lists, dicts) as outputs.
    strict: bool = field(default=True, metadata={"help": "torch.jit.trace strict mode"})
    # torch.jit.freeze before saving: weights and attributes become constants (faster load and run).
    # (optimize_for_inference is not offered: its modules cannot be saved in torch 2.13.)
    freeze: bool = field(default=False, metadata={"help": "torch.jit.freeze the traced module"})


@register_format
class TorchScriptExporter(FormatExporter):
    """Writes ``model.torchscript``; loads it back with ``torch.jit.load``."""

    name = "torchscript"
    options_schema = TorchScriptFormatConfig
    summary = "model.torchscript, checked with torch.jit.load"
    # torch.ao.quantization on the module, then traced (torch_quantize.py).
    quantization = {**TORCH_DYNAMIC, **TORCH_STATIC}
    refusals = {"fp16": "a float16 TorchScript program would take float16 inputs; use format=onnx, which keeps "
                        "float32 inputs and outputs around a float16 graph"}

    @property
    def filename(self) -> str:
        return f"{self.stem}.torchscript"

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        return self._trace(ctx, ctx.model, path, {})

    def quantize(self, ctx: ExportContext, fp32_path: Path, path: Path) -> ExportOutcome:
        # torch quantizes modules, not TorchScript programs: quantize the model, then trace it.
        if ctx.mode == "dynamic":
            model, report = torch_dynamic_quantize(ctx.model, ctx.quantization)
        else:
            model, report = torch_static_quantize(ctx.model, ctx.example_inputs, ctx.calibration.samples, self.name)
        return self._trace(ctx, model, path, {"quantization": report})

    def _trace(self, ctx: ExportContext, model: Any, path: Path, details: dict[str, Any]) -> ExportOutcome:
        import torch

        details = {"method": "torch.jit.trace", "strict": bool(self.options.strict), **details}

        def trace_and_save() -> None:
            # torch.jit works in 2.13 but warns that it is deprecated on every call.
            # Tracing cannot record transformers 4.53-4.57's vmap attention masks.
            with warnings.catch_warnings(), torch.no_grad(), traceable_attention_masks() as swapped:
                warnings.simplefilter("ignore")
                if swapped:
                    details["attention_masks"] = SWAPPED_MASKS_NOTE
                traced = torch.jit.trace(
                    ctx.wrap(model), tuple(ctx.example_inputs.values()), strict=bool(self.options.strict)
                )
                if self.options.freeze:
                    traced = torch.jit.freeze(traced.eval())
                torch_saved(path, lambda target: torch.jit.save(
                    traced, target, _extra_files={"exporter.json": json.dumps(ctx.tags())}), tensor_bytes(model))

        # The saved debug info holds the Python stack of the trace call; from a fresh thread that
        # stack is the same whoever calls (command line, Python API, verify), so the bytes are too.
        in_fresh_thread(trace_and_save)
        if self.options.freeze:
            details["frozen"] = True
        details["content_sha256"] = canonical_sha256(path)
        names = ", ".join(ctx.example_inputs)
        return ExportOutcome(
            details=details,
            load_hint=(f"import torch\nmodule = torch.jit.load('{self.filename}')  # _extra_files={{'exporter.json': ''}} "
                       f"returns the build's tags\n{', '.join(ctx.output_names)} = module({names})"),
        )

    def mismatch_hint(self, changed_axes: list[str]) -> str:
        return ("torch.jit.trace records Python numbers as constants: compute with tensor ops on x.size(...) instead, "
                "or use format=exported_program (torch.export keeps sizes symbolic)")

    def load(self, path: Path, ctx: ExportContext) -> Runnable:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")

        def run(inputs):
            with torch.no_grad():
                return as_arrays(module(*inputs.values()))

        return run
