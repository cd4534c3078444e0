"""torch.export: an ``ExportedProgram`` saved as ``model.pt2``, checked with ``torch.export.load``.

The program is the input of ExecuTorch, AOTInductor and the dynamo ONNX exporter. Its dynamic
dimensions are the same named ``Dim`` objects the ONNX dynamo backend uses (``dynamic_shapes.py``).
A non-strict export is byte-reproducible in a fresh process; a strict one (TorchDynamo) records
Python object ids in its program JSON, so ``details.content_sha256`` hashes the archive without
them and ``exporter verify`` accepts a rebuild whose content hash matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ExportError, first_line
from .base import ExportContext, ExportOutcome, FormatExporter, Runnable, as_arrays, quiet_torch, tensor_bytes, torch_saved
from .dynamic_shapes import torch_export_dynamic_shapes, trace_inputs
from .registry import register_format
from .traceable_masks import SWAPPED_MASKS_NOTE, traceable_attention_masks

TAGS_FILE = "exporter.json"
trace_log = logging.getLogger("exporter.trace")


@dataclass
class ExportedProgramFormatConfig:
    # Set by choosing the format (format=exported_program, format=[onnx,exported_program,...]).
    enabled: bool = False
    # torch.export's strict mode (TorchDynamo traces the Python code); false: non-strict tracing,
    # which torch recommends and which accepts more Python.
    strict: bool = field(default=False, metadata={"help": "torch.export strict mode (TorchDynamo)"})
    dynamic_batch: bool = field(default=True, metadata={"help": "symbolic batch axis"})
    # Text models: leave the sequence axis symbolic too (any length up to the model's maximum).
    dynamic_sequence: bool = field(default=True, metadata={
        "help": "text: symbolic sequence axis too; images: height and width (task_spec.dynamic_image_size)"})


# In the program's JSON, strict (TorchDynamo) tracing records Python object ids and addresses
# (``AdapterModule;140341810873424``, ``graph_id``, ``<built-in method ... at 0x7fa4...>``): they
# differ from process to process while the program is the same.
_PROCESS_IDS = re.compile(rb"0x[0-9a-f]{6,}|(?<![0-9.])[0-9]{9,}(?![0-9.])")


def canonical_sha256(path: Path) -> str:
    """sha256 of a ``.pt2`` archive's content without the per-process object ids in its program
    JSON and without the serialization id: equal for the same program and weights. (Non-strict
    exports are byte-identical anyway; strict ones carry those ids.)"""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename.split("/", 1)[-1]):
            name = info.filename.split("/", 1)[-1]
            if name.endswith(".data/serialization_id"):
                continue
            data = archive.read(info)
            if name.endswith(".json"):
                data = _PROCESS_IDS.sub(b"#", data)
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _reason(exc: BaseException, strict: bool) -> str:
    """torch.export's error in one line: for a dynamic axis it could not keep, torch's own reason
    (``Not all values of sequence ... satisfy the generated guard ...``) and the option to turn it off."""
    if "data-dependent" in str(exc) or type(exc).__name__ == "GuardOnDataDependentSymNode":
        return ("the model branches on tensor values (e.g. `if x.sum() > 0:`), which torch.export cannot trace into "
                "one program; write the branch with torch.cond (or torch.where), or use format=onnx or "
                f"format=torchscript, which trace only the branch the example input takes ({first_line(exc)})")
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
    # A sequence axis one token long in the example stays fixed (dynamic_shapes.py): say so in the record.
    fixes_a_one_token_sequence = True
    options_schema = ExportedProgramFormatConfig
    summary = "model.pt2 (torch.export ExportedProgram), checked with torch.export.load"
    # Quantizing an ExportedProgram (PT2E) lowers it for one backend (XNNPACK, x86 Inductor) whose
    # int8 kernels only that backend runs: there is no portable quantized .pt2 to check here.
    refusals = {mode: "a quantized ExportedProgram (PT2E) is lowered for one backend; export the fp32 program "
                      "and quantize it for that backend" for mode in ("dynamic", "static", "fp16")}

    @property
    def filename(self) -> str:
        return f"{self.stem}.pt2"

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        import torch

        shapes = torch_export_dynamic_shapes(ctx.adapter, ctx.example_inputs, self.dynamic_batch, self.dynamic_sequence)
        strict = bool(self.options.strict)
        try:
            # torch.export records transformers 4.53-4.57's vmap masks as a node it cannot serialize.
            with warnings.catch_warnings(), torch.no_grad(), quiet_torch() as noise, \
                    traceable_attention_masks() as swapped:
                warnings.simplefilter("ignore")
                program = torch.export.export(ctx.wrap(ctx.model), trace_inputs(ctx.example_inputs, shapes),
                                              dynamic_shapes=shapes, strict=strict)
        except Exception as exc:  # noqa: BLE001 - torch.export's errors are long; say what and what to do
            if noise.getvalue().strip():
                # The partial graph torch prints on failure: kept in export.log, not on the console.
                trace_log.error("exported_program: what torch.export printed:\n%s", noise.getvalue().rstrip())
            raise ExportError(f"exported_program: torch.export.export failed: {_reason(exc, strict)}") from exc
        # The archive would also store the (traced) example input: as large as the weights for an
        # image model, and no part of the program.
        try:
            program.example_inputs = None
        except (AttributeError, TypeError, ValueError):
            program._example_inputs = None
        torch_saved(path, lambda target: torch.export.save(program, target, extra_files={TAGS_FILE: json.dumps(ctx.tags())}),
                    tensor_bytes(ctx.model))
        declared = ctx.adapter.dynamic_axes(batch=self.dynamic_batch, sequence=self.dynamic_sequence)
        dims = {name: {str(axis): getattr(dim, "__name__", None) or declared[name][axis] for axis, dim in spec.items()}
                for name, spec in zip(ctx.example_inputs, shapes[0] if shapes else ()) if spec}
        names = ", ".join(ctx.example_inputs)
        details = {"method": "torch.export.export", "strict": strict, "dynamic_shapes": dims,
                   "graph_nodes": len(program.graph.nodes), "content_sha256": canonical_sha256(path)}
        if swapped:
            details["attention_masks"] = SWAPPED_MASKS_NOTE
        return ExportOutcome(
            details=details,
            load_hint=(f"import torch\nprogram = torch.export.load('{self.filename}')  # extra_files={{'{TAGS_FILE}': ''}} "
                       f"returns the build's tags\n{', '.join(ctx.output_names)} = program.module()({names})"),
        )

    def load(self, path: Path, ctx: ExportContext) -> Runnable:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(str(path)).module()

        def run(inputs):
            with torch.no_grad():
                return as_arrays(module(*inputs.values()))

        return run
