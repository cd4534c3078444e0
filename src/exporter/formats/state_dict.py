"""State dict: torch.save (or safetensors) of the weights, checked by loading into a fresh model."""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from ..config.schema import option_value
from ..errors import ConfigError
from .base import ExportContext, ExportOutcome, FormatExporter, Runnable, tensor_bytes, to_numpy, torch_saved
from .registry import register_format
from .torch_quantize import TORCH_DYNAMIC, TORCH_DYNAMIC_RECIPE, torch_dynamic_quantize


class Serialization(str, Enum):
    torch = "torch"
    safetensors = "safetensors"


@dataclass
class PytorchFormatConfig:
    # Set by choosing the format (format=onnx, format=[onnx,...]). The options of a format the job
    # does not build stay in the config, unused, so one sweep can set them for the jobs that do.
    enabled: bool = False
    # torch: torch.save of the state dict (model.pth); safetensors: model.safetensors
    # (format=safetensors chooses this format with this option set).
    serialization: Serialization = field(default=Serialization.torch, metadata={
        "help": "torch (model.pth) | safetensors (model.safetensors; or format=safetensors)"})


@register_format
class StateDictExporter(FormatExporter):
    """Writes ``model.pth`` (or ``model.safetensors``); loads it into a blanked copy of the model.

    The copy's floating-point weights are set to NaN before loading, so the check fails unless
    the file really carries every weight.
    """

    carries_cache = None
    progress_verb = "writing the weights"

    name = "pytorch"
    options_schema = PytorchFormatConfig
    summary = "model.pth state dict, checked by loading into a fresh model"
    aliases = {"safetensors": "model.safetensors (format=pytorch with format.pytorch.serialization=safetensors)"}
    alias_options = {"safetensors": {"serialization": "safetensors"}}
    # torch's dynamic quantization of Linear layers (torch_quantize.py); loading needs the same call.
    quantization = dict(TORCH_DYNAMIC)
    refusals = {
        "static": "a state dict of a statically quantized graph cannot be loaded back into the model class",
        "fp16": "use format=onnx, which keeps float32 inputs and outputs around a float16 graph",
    }

    @classmethod
    def folder_label(cls, options: Any) -> str:
        serialization = option_value((options or {}).get("serialization", "torch")) if hasattr(options, "get") \
            else option_value(getattr(options, "serialization", "torch"))
        return "safetensors" if serialization == "safetensors" else cls.name

    @property
    def serialization(self) -> str:
        return option_value(self.options.serialization)

    @property
    def filename(self) -> str:
        return f"{self.stem}.safetensors" if self.serialization == "safetensors" else f"{self.stem}.pth"

    def check(self, ctx: ExportContext) -> None:
        super().check(ctx)
        if ctx.quantized and self.serialization == "safetensors":
            raise ConfigError(
                "model.safetensors (format=safetensors, or format.pytorch.serialization=safetensors) cannot hold "
                "quantized (packed) weights; quantized state dicts are saved by format=pytorch as model.pth"
            )

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        return self._save(ctx, ctx.model, None, path)

    def quantize(self, ctx: ExportContext, fp32_path: Path, path: Path) -> ExportOutcome:
        model, report = torch_dynamic_quantize(ctx.model, ctx.quantization)
        return self._save(ctx, model, report, path)

    def _save(self, ctx: ExportContext, model: Any, quantization: Optional[dict], path: Path) -> ExportOutcome:
        import torch

        cls = type(ctx.model)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if getattr(cls, "config_class", None) is not None and hasattr(ctx.model, "config"):
            # A Hugging Face model is built from its config, not from keyword arguments.
            build = (f"import torch\nimport {cls.__module__}\nmodel = {name}({name}.config_class.from_pretrained(FOLDER))"
                     "  # FOLDER: where the model was saved with save_pretrained\n")
        else:
            build = (f"import torch\nimport {cls.__module__}\nmodel = {name}(**ARGUMENTS)  # ARGUMENTS: the same "
                     "constructor arguments\n")
        if self.serialization == "safetensors":
            from safetensors.torch import save_file, save_model

            # "format": "pt", as transformers writes it: its from_pretrained refuses a file without it.
            metadata = {"format": "pt", **ctx.tags()}
            dropped = _tied_copies(model)
            if dropped:
                # A tied weight under the name transformers keeps (wte, not lm_head), as save_pretrained writes it.
                save_file({k: v.contiguous() for k, v in model.state_dict().items() if k not in dropped}, str(path),
                          metadata=metadata)
            else:
                save_model(model, str(path), metadata=metadata)  # save_model (not save_file) de-duplicates tied weights
            _canonical_header(path)
            hint = build + f"import safetensors.torch\nsafetensors.torch.load_model(model, '{self.filename}')"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch_saved(path, lambda target: torch.save(model.state_dict(), target), tensor_bytes(model))
            load = f"model.load_state_dict(torch.load('{self.filename}', weights_only=True))"
            if ctx.quantized and quantization["recipe"] != TORCH_DYNAMIC_RECIPE:
                # Tied layers kept fp32 or converted Conv1D layers: the same function rebuilds the same modules.
                build += ("from exporter.formats.torch_quantize import torch_dynamic_quantize\nfrom exporter.config.schema import "
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

        fresh = torch_dynamic_quantize(ctx.model, ctx.quantization)[0] if ctx.quantized else copy.deepcopy(ctx.model)
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
                return [to_numpy(t) for t in ctx.outputs(fresh, inputs)]

        return run


def _tied_copies(model: Any) -> set[str]:
    """The names of a Hugging Face model's tied weights that save_pretrained leaves out of its file
    (``_tied_weights_keys``: ``lm_head.weight``, tied to the input embedding), where the tensor is
    indeed shared with a name that stays; empty for other models."""
    tied = getattr(model, "_tied_weights_keys", None)
    names = set(tied) if isinstance(tied, (list, tuple, set, dict)) else set()
    if not names:
        return set()
    state = model.state_dict()
    by_storage: dict[Any, list[str]] = {}
    for key, tensor in state.items():
        by_storage.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(key)
    dropped = set()
    for keys in by_storage.values():
        kept = [k for k in keys if k not in names]
        if len(keys) > 1 and kept:
            dropped.update(k for k in keys if k in names)
    return dropped


def _canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with its keys sorted. safetensors writes the header from a hash
    map, so the order of ``__metadata__`` (and tensor) entries changes from run to run and two
    identical builds differ in bytes; sorted, they are byte-identical. The rewritten header has the
    same entries, so it is no longer than the original: the rest is padded with spaces, as the
    format allows."""
    import json
    import struct

    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        ordered = {key: (dict(sorted(value.items())) if key == "__metadata__" else value)
                   for key, value in sorted(header.items(), key=lambda item: (item[0] != "__metadata__", item[0]))}
        text = json.dumps(ordered, separators=(",", ":")).encode()
        if len(text) > length:  # never expected: same entries, compact JSON
            return
        f.seek(8)
        f.write(text + b" " * (length - len(text)))
