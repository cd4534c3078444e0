"""The fp32 twin and weight-type selection, the same for every format.

A quantized artifact is built from the fp32 one the same job exported (the twin): the format's
``quantize`` turns it into one candidate per weight type (``weight_type=auto``: each the format
declares), every candidate is measured against the twin (``report.measure``) and gated, and the
fastest that passes is kept, with the reason recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..schema import WeightType
from . import report as quant_report
from . import weight_type_of

if TYPE_CHECKING:
    from ..formats.base import ExportContext, ExportOutcome, FormatExporter
    from ..plan import Plan

log = logging.getLogger("exporter")


@dataclass
class Built:
    """One artifact in its work folder, with what the exporter and the checks said of it."""

    folder: Path
    path: Path
    outcome: "ExportOutcome"
    export_seconds: float
    context: "ExportContext"
    report: Optional[dict[str, Any]] = None
    gate_failures: list[str] = field(default_factory=list)

    @property
    def quantized_layers(self) -> Optional[int]:
        return (self.outcome.details.get("quantization") or {}).get("quantized_layers")


def _folder_bytes(folder: Path) -> int:
    """An artifact's size: its file and any it needs beside it (an ONNX model's external data)."""
    return sum(item.stat().st_size for item in folder.iterdir() if item.is_file())


def timed(folder: Path, filename: str, context: "ExportContext",
          write: Callable[[Path], "ExportOutcome"]) -> Built:
    """Run ``write(path)`` for ``folder/filename`` (created) and time it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    started = time.perf_counter()
    outcome = write(path)
    return Built(folder, path, outcome, round(time.perf_counter() - started, 4), context)


def build_quantized(plan: "Plan", name: str, exporter: "FormatExporter", work: Path) -> tuple[Built, dict[str, Any]]:
    """Export the fp32 twin once, quantize it into each candidate weight type, measure each against
    the twin and keep the fastest that passes the gates. Returns the chosen artifact and what the
    selection records (``weight_type_selection`` when ``weight_type=auto``)."""
    ctx, q, job = plan.context, plan.context.quantization, plan.job
    twin_ctx = ctx.fp32()
    twin = timed(work / "fp32", exporter.filename, twin_ctx, lambda path: exporter.export(twin_ctx, path))
    # The twin is loaded after the first quantizer has run, not beside it: ONNX Runtime's quantizers
    # hold the whole fp32 model in memory, and so would the twin's session.
    run_fp32: Optional[Callable] = None
    auto = weight_type_of(q) == "auto"
    weight_types = exporter.weight_types(ctx.mode) if auto else [weight_type_of(q)]
    candidates = []
    for weight_type in weight_types or [weight_type_of(q)]:
        cctx = replace(ctx, quantization=replace(q, weight_type=WeightType(weight_type)))
        built = timed(work / f"quantized-{weight_type}", exporter.filename, cctx,
                      lambda path, cctx=cctx: exporter.quantize(cctx, twin.path, path))
        # One export: the quantized artifact's record holds the export's details and the quantizer's.
        built.outcome = replace(built.outcome, details={**twin.outcome.details, **built.outcome.details},
                                load_hint=built.outcome.load_hint or twin.outcome.load_hint)
        built.export_seconds = round(twin.export_seconds + built.export_seconds, 4)
        run_fp32 = run_fp32 or exporter.load(twin.path, twin_ctx)
        built.report = quant_report.measure(
            run=exporter.load(built.path, cctx), run_fp32=run_fp32, size=_folder_bytes(built.folder),
            size_fp32=_folder_bytes(twin.folder), task_type=job.task_spec.task_type,
            calibration=plan.reference("calibration"), heldout=plan.reference("heldout"),
            example=plan.inputs, latency_runs=int(q.latency_runs),
        )
        built.gate_failures = quant_report.gate_failures(built.report, job.validate, built.quantized_layers)
        candidates.append(built)
    passing = [c for c in candidates if not c.gate_failures]
    chosen = min(passing or candidates, key=lambda c: c.report["speed"]["latency_ms"])
    extra: dict[str, Any] = {}
    if auto and weight_types:
        chosen_type = weight_type_of(chosen.context.quantization)
        extra["weight_type_selection"] = {
            "candidates": {weight_type_of(c.context.quantization): {
                "latency_ms": c.report["speed"]["latency_ms"], "size_bytes": c.report["size"]["bytes"],
                "heldout_agreement": c.report["fidelity"]["heldout"]["agreement"],
                "gate_failures": c.gate_failures} for c in candidates},
            "chosen": chosen_type,
            "reason": (f"fastest of the {len(passing)} candidate(s) that pass the gates" if passing
                       else "no candidate passes the gates; the fastest is reported"),
        }
        log.info("%-12s weight_type=auto: %s -> %s", name, ", ".join(
            f"{weight_type_of(c.context.quantization)} {c.report['speed']['latency_ms']:.3f} ms" for c in candidates),
            chosen_type)
    return chosen, extra
