"""Single-format helpers for callers that already hold an example input tensor.

They run the same exporter classes and checks as ``export_model``, then move the one artifact
to the path asked for.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .adapters import ModelAdapter
from .errors import ExportError
from .task_spec import TaskSpec

if TYPE_CHECKING:
    import torch

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

    from .api import export_model

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
