"""State dict: torch.save (or safetensors) of the weights, checked by loading into a fresh model."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

from ..errors import ConfigError
from ..schema import option_value
from ..quantize import TORCH_DYNAMIC_RECIPE, check_torch, torch_dynamic_quantize
from .base import ExportContext, ExportOutcome, FormatExporter, Runnable


class StateDictExporter(FormatExporter):
    """Writes ``model.pth`` (or ``model.safetensors``); loads it into a blanked copy of the model.

    The copy's floating-point weights are set to NaN before loading, so the check fails unless
    the file really carries every weight.
    """

    name = "pytorch"

    @property
    def serialization(self) -> str:
        return option_value(self.options.serialization)

    @property
    def filename(self) -> str:
        return "model.safetensors" if self.serialization == "safetensors" else "model.pth"

    def check(self, ctx: ExportContext) -> None:
        if ctx.mode == "static":
            raise ConfigError(
                "quantization=static is not available for format pytorch: a state dict of a statically "
                "quantized graph cannot be loaded back into the model class; use format=onnx or format=torchscript"
            )
        check_torch(ctx.quantization, self.name)
        if ctx.quantized and self.serialization == "safetensors":
            raise ConfigError(
                "format.pytorch.serialization=safetensors cannot hold quantized (packed) weights; "
                "valid values with quantization=dynamic: ['torch']"
            )

    def _model_for(self, ctx: ExportContext):
        if ctx.quantized:
            return torch_dynamic_quantize(ctx.model, ctx.quantization)
        return ctx.model, None

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        import torch

        model, quantization = self._model_for(ctx)
        cls = type(ctx.model)
        build = f"model = {cls.__module__}.{cls.__qualname__}(...)  # same constructor arguments\n"
        if self.serialization == "safetensors":
            from safetensors.torch import save_model

            # save_model (not save_file) de-duplicates tied weights.
            save_model(model, str(path), metadata=ctx.tags())
            hint = build + f"safetensors.torch.load_model(model, '{self.filename}')"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.save(model.state_dict(), str(path))
            load = f"model.load_state_dict(torch.load('{self.filename}', weights_only=True))"
            if ctx.quantized and quantization["recipe"] != TORCH_DYNAMIC_RECIPE:
                # Tied layers kept fp32 or converted Conv1D layers: the same function rebuilds the same modules.
                build += ("from exporter.quantize import torch_dynamic_quantize\nfrom exporter.schema import "
                          "QuantizationConfig\nmodel, _ = torch_dynamic_quantize(model, QuantizationConfig(mode='dynamic'))\n")
            elif ctx.quantized:
                build += f"model = {TORCH_DYNAMIC_RECIPE}\n"
            hint = build + load
        details = {"serialization": self.serialization, "class": f"{cls.__module__}.{cls.__qualname__}"}
        if ctx.quantized:
            details["quantization"] = quantization
            details["load_note"] = (
                "quantized state dict: apply the same quantize_dynamic to a fresh model before load_state_dict"
            )
        return ExportOutcome(details=details, load_hint=hint)

    def load(self, path: Path, ctx: ExportContext) -> Runnable:
        import torch

        fresh = self._model_for(ctx)[0] if ctx.quantized else copy.deepcopy(ctx.model)
        with torch.no_grad():
            # Only what the state dict carries: non-persistent buffers (e.g. a causal mask) stay intact.
            for tensor in fresh.state_dict().values():
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    tensor.fill_(math.nan)
        if self.serialization == "safetensors":
            from safetensors.torch import load_model

            load_model(fresh, str(path), strict=True)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fresh.load_state_dict(torch.load(str(path), weights_only=True, map_location="cpu"), strict=True)
        fresh.eval()

        def run(inputs):
            with torch.no_grad():
                return ctx.adapter.run(fresh, inputs).numpy()

        return run
