"""torch.ao.quantization for the formats that save a torch module (TorchScript, the state dict):
dynamic quantization of Linear layers and FX graph-mode static quantization.

The policy around these calls (calibration, the fp32 twin, the report and its gates) is the
format-agnostic ``exporter.quantization`` package.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from ..errors import ExportError
from ..quantization import quiet

if TYPE_CHECKING:
    import torch

    from ..config.schema import QuantizationConfig

TORCH_DYNAMIC_RECIPE = "torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)"
# What these mechanisms take (the formats' ``quantization`` declarations use it): dynamic int8
# Linear weights, and static int8 through torch.fx.
TORCH_DYNAMIC = {"dynamic": ("qint8",)}
TORCH_STATIC = {"static": ("qint8",)}


def tied_linears(model: "torch.nn.Module") -> dict[str, str]:
    """Linear layers whose weight is shared with another module (e.g. an LM head tied to the
    embedding), mapped to the module they share it with."""
    import torch

    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter):
            owners.setdefault(id(weight), []).append(name)
    tied = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            others = [o for o in owners.get(id(module.weight), []) if o != name]
            if others:
                tied[name] = others[0]
    return tied


def _linearize_conv1d(model: "torch.nn.Module") -> int:
    """Replace Hugging Face ``Conv1D`` layers (GPT-2's Linear with a transposed weight) by
    ``nn.Linear`` in place, so torch's dynamic quantization sees them. Returns how many."""
    import torch

    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child).__name__ == "Conv1D" and type(child).__module__.startswith("transformers"):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out, bias=child.bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, child_name, linear)
                count += 1
    return count


def torch_dynamic_quantize(model: "torch.nn.Module", q: "QuantizationConfig") -> tuple["torch.nn.Module", dict]:
    """A copy of ``model`` with its Linear layers dynamically quantized (qint8 weights).

    A Linear whose weight is tied to another module stays fp32: quantizing it would add an int8
    copy beside the fp32 weight the other module still holds, and the artifact would grow.
    Hugging Face ``Conv1D`` layers are turned into Linear layers first. With nothing to quantize,
    the model itself is returned (and the report warns): a copy would only add bytes.
    """
    import torch

    work = copy.deepcopy(model)
    converted = _linearize_conv1d(work)
    tied = tied_linears(work)
    linears = [n for n, m in work.named_modules() if isinstance(m, torch.nn.Linear) and n not in tied]
    if not linears:
        return model, {"recipe": "none: no Linear layer to quantize", "quantized_layers": 0,
                       "kept_fp32": {name: f"weight tied to {other}" for name, other in tied.items()}}
    spec = {name: torch.ao.quantization.default_dynamic_qconfig for name in linears}
    with quiet():
        quantized = torch.ao.quantization.quantize_dynamic(work, spec, dtype=torch.qint8)
    recipe = TORCH_DYNAMIC_RECIPE if not tied else (
        "torch.ao.quantization.quantize_dynamic(model, {name: torch.ao.quantization.default_dynamic_qconfig "
        f"for name in {linears!r}}}, dtype=torch.qint8)"
    )
    report = {"recipe": recipe, "quantized_layers": len(linears),
              "kept_fp32": {name: f"weight tied to {other}" for name, other in tied.items()}}
    if converted:
        report["hf_conv1d_to_linear"] = converted
    return quantized, report


def torch_static_quantize(model: "torch.nn.Module", example: "dict[str, torch.Tensor]", samples: list,
                          format_name: str) -> tuple["torch.nn.Module", dict]:
    """FX graph-mode static quantization calibrated on ``samples`` (x86 backend)."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with quiet():
        try:
            prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                                  example_inputs=tuple(example.values()))
        except Exception as exc:  # noqa: BLE001 - symbolic tracing fails in many ways
            raise ExportError(
                f"{format_name}: static quantization needs a model that torch.fx can trace symbolically, and "
                f"{type(model).__name__} cannot be ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "use format=onnx, which quantizes the exported graph, or quantization=dynamic"
            ) from None
        with torch.no_grad():
            for sample in samples:
                prepared(*sample.values())
        quantized = convert_fx(prepared)
    layers = sum(1 for m in quantized.modules() if type(m).__module__.startswith("torch.ao.nn.quantized"))
    return quantized, {"recipe": "torch.ao.quantization.quantize_fx (x86 qconfig), calibrated",
                       "quantized_layers": layers}
