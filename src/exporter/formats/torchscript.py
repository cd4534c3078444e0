"""TorchScript: torch.jit.trace of the adapter-wrapped model, checked with torch.jit.load."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..quantize import TORCH_DYNAMIC_RECIPE, check_torch_dynamic, torch_dynamic_quantize
from .base import ExportContext, ExportOutcome, FormatExporter, Runnable


class TorchScriptExporter(FormatExporter):
    """Writes ``model.torchscript``; loads it back with ``torch.jit.load``."""

    name = "torchscript"

    @property
    def filename(self) -> str:
        return "model.torchscript"

    def check(self, ctx: ExportContext) -> None:
        check_torch_dynamic(ctx.quantization, self.name)

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        import torch

        model = torch_dynamic_quantize(ctx.model, ctx.quantization) if ctx.quantized else ctx.model
        details = {"method": "torch.jit.trace", "strict": bool(self.options.strict)}
        # torch.jit works in 2.13 but warns that it is deprecated on every call.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(
                ctx.adapter.wrap(model), tuple(ctx.example_inputs.values()), strict=bool(self.options.strict)
            )
            if self.options.freeze:
                traced = torch.jit.freeze(traced.eval())
                details["frozen"] = True
            torch.jit.save(traced, str(path))
        if ctx.quantized:
            details["quantization"] = TORCH_DYNAMIC_RECIPE
        names = ", ".join(ctx.example_inputs)
        return ExportOutcome(
            details=details,
            load_hint=f"import torch\nmodule = torch.jit.load('{self.filename}')\nlogits = module({names})",
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
