"""torch.export: an ``ExportedProgram`` saved as ``model.pt2``, checked with ``torch.export.load``.

The program is the input of ExecuTorch, AOTInductor and the dynamo ONNX exporter. Its dynamic
dimensions are the same named ``Dim`` objects the ONNX dynamo backend uses (``dynamic_shapes.py``).
The archive is byte-reproducible in a fresh process (checked by ``exporter verify``), so no
content hash beside the file hash is needed.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError, first_line
from .base import ExportContext, ExportOutcome, FormatExporter, Runnable
from .dynamic_shapes import torch_export_dynamic_shapes, trace_inputs
from .registry import register_format

TAGS_FILE = "exporter.json"


@dataclass
class ExportedProgramFormatConfig:
    # Set by choosing the format (format=exported_program, format=[onnx,exported_program,...]).
    enabled: bool = False
    # torch.export's strict mode (TorchDynamo traces the Python code); false: non-strict tracing,
    # which torch recommends and which accepts more Python.
    strict: bool = False
    dynamic_batch: bool = True
    # Text models: leave the sequence axis symbolic too (any length up to the model's maximum).
    dynamic_sequence: bool = True


def _reason(exc: BaseException, strict: bool) -> str:
    """torch.export's error in one line: for a dynamic axis it could not keep, torch's own reason
    (``Not all values of sequence ... satisfy the generated guard ...``) and the option to turn it off."""
    reasons = [line.strip()[2:] for line in str(exc).splitlines() if line.strip().startswith("- ")]
    axes = [axis for axis in ("batch", "sequence") if any(f"of {axis} " in r or f" {axis} as dynamic" in r
                                                         for r in reasons)]
    if reasons and axes:
        options = " or ".join(f"format.exported_program.dynamic_{axis}=false" for axis in axes)
        return (f"the model's code does not keep the declared dynamic axis {' and '.join(axes)} symbolic: "
                f"{reasons[0]} Set {options} to export that axis at the example's size, or change the code")
    hint = " (format.exported_program.strict=false accepts more Python)" if strict else ""
    return first_line(exc, with_type=True) + hint


@register_format
class ExportedProgramExporter(FormatExporter):
    """Writes ``model.pt2`` with ``torch.export.save``; loads it back with ``torch.export.load``."""

    name = "exported_program"
    options_schema = ExportedProgramFormatConfig
    summary = "model.pt2 (torch.export ExportedProgram), checked with torch.export.load"
    # Quantizing an ExportedProgram (PT2E) lowers it for one backend (XNNPACK, x86 Inductor) whose
    # int8 kernels only that backend runs: there is no portable quantized .pt2 to check here.
    refusals = {mode: "a quantized ExportedProgram (PT2E) is lowered for one backend; export the fp32 program "
                      "and quantize it for that backend" for mode in ("dynamic", "static", "fp16")}

    @property
    def filename(self) -> str:
        return "model.pt2"

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.options.dynamic_batch)

    @property
    def dynamic_sequence(self) -> bool:
        return bool(self.options.dynamic_sequence)

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        import torch

        shapes = torch_export_dynamic_shapes(ctx.adapter, ctx.example_inputs, self.dynamic_batch, self.dynamic_sequence)
        strict = bool(self.options.strict)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                program = torch.export.export(ctx.adapter.wrap(ctx.model), trace_inputs(ctx.example_inputs, shapes),
                                              dynamic_shapes=shapes, strict=strict)
        except Exception as exc:  # noqa: BLE001 - torch.export's errors are long; say what and what to do
            raise ExportError(f"exported_program: torch.export.export failed: {_reason(exc, strict)}") from exc
        torch.export.save(program, str(path), extra_files={TAGS_FILE: json.dumps(ctx.tags())})
        dims = {name: {str(axis): dim.__name__ for axis, dim in (spec or {}).items()}
                for name, spec in zip(ctx.example_inputs, shapes[0] if shapes else ()) if spec}
        names = ", ".join(ctx.example_inputs)
        return ExportOutcome(
            details={"method": "torch.export.export", "strict": strict, "dynamic_shapes": dims,
                     "graph_nodes": len(program.graph.nodes)},
            load_hint=(f"import torch\nprogram = torch.export.load('{self.filename}')  # extra_files={{'{TAGS_FILE}': ''}} "
                       f"returns the build's tags\nlogits = program.module()({names})"),
        )

    def load(self, path: Path, ctx: ExportContext) -> Runnable:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(str(path)).module()

        def run(inputs):
            with torch.no_grad():
                return module(*inputs.values()).numpy()

        return run
