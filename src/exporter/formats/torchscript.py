"""TorchScript: torch.jit.trace of the adapter-wrapped model, checked with torch.jit.load."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Callable

from ..quantize import check_torch, torch_dynamic_quantize, torch_static_quantize
from .base import ExportContext, ExportOutcome, FormatExporter, Runnable


def in_fresh_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a new thread and wait for it, re-raising what it raised."""
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failure.append(exc)

    thread = threading.Thread(target=body, name="exporter-trace", daemon=True)
    thread.start()
    try:
        thread.join()
    except BaseException:
        # Ctrl-C or SIGTERM: let the trace finish first. A C++ trace still running while the
        # interpreter exits aborts the process ("terminate called without an active exception").
        thread.join()
        raise
    if failure:
        raise failure[0]


class TorchScriptExporter(FormatExporter):
    """Writes ``model.torchscript``; loads it back with ``torch.jit.load``."""

    name = "torchscript"

    @property
    def filename(self) -> str:
        return "model.torchscript"

    def check(self, ctx: ExportContext) -> None:
        check_torch(ctx.quantization, self.name)

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        import torch

        details = {"method": "torch.jit.trace", "strict": bool(self.options.strict)}
        model = ctx.model
        if ctx.mode == "dynamic":
            model, details["quantization"] = torch_dynamic_quantize(ctx.model, ctx.quantization)
        elif ctx.mode == "static":
            model, details["quantization"] = torch_static_quantize(ctx.model, ctx.example_inputs,
                                                                   ctx.calibration.samples, self.name)
        def trace_and_save() -> None:
            # torch.jit works in 2.13 but warns that it is deprecated on every call.
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(
                    ctx.adapter.wrap(model), tuple(ctx.example_inputs.values()), strict=bool(self.options.strict)
                )
                if self.options.freeze:
                    traced = torch.jit.freeze(traced.eval())
                torch.jit.save(traced, str(path), _extra_files={"exporter.json": json.dumps(ctx.tags())})

        # The saved debug info holds the Python stack of the trace call; from a fresh thread that
        # stack is the same whoever calls (command line, Python API, verify), so the bytes are too.
        in_fresh_thread(trace_and_save)
        if self.options.freeze:
            details["frozen"] = True
        names = ", ".join(ctx.example_inputs)
        return ExportOutcome(
            details=details,
            load_hint=(f"import torch\nmodule = torch.jit.load('{self.filename}')  # _extra_files={{'exporter.json': ''}} "
                       f"returns the build's tags\nlogits = module({names})"),
        )

    def load(self, path: Path, ctx: ExportContext) -> Runnable:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")

        def run(inputs):
            with torch.no_grad():
                return module(*inputs.values()).numpy()

        return run
