"""The fp32 twin and weight-type selection, the same for every format.

A quantized artifact is built from the fp32 one the same job exported (the twin): the format's
``quantize`` turns it into one candidate per weight type (``weight_type=auto``: each the format
declares), every candidate is measured against the twin (``report.measure``) and gated, and the
fastest that passes is kept (``choose_weight_type``: candidates within the latency measurements'
spread are told apart by held-out agreement, then size), with the reason recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..config.schema import WeightType
from ..formats.base import as_output_list
from ..quantization import report as quant_report
from ..quantization import weight_type_of

if TYPE_CHECKING:
    from ..formats.base import ExportContext, ExportOutcome
    from .plan import ArtifactPlan, Plan

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


def build_quantized(plan: "Plan", artifact: "ArtifactPlan", work: Path) -> tuple[Built, dict[str, Any]]:
    """Export the fp32 twin once, quantize it into each candidate weight type, measure each against
    the twin and keep the fastest that passes the gates. Returns the chosen artifact and what the
    selection records (``weight_type_selection`` when ``weight_type=auto``)."""
    ctx, job = artifact.context, plan.job
    q = ctx.quantization
    name, exporter, references = artifact.key, artifact.exporter, artifact.references
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
        run = exporter.load(built.path, cctx)
        built.report = quant_report.measure(
            run=run, run_fp32=run_fp32, size=_folder_bytes(built.folder),
            size_fp32=_folder_bytes(twin.folder), task_type=job.task_spec.task_type,
            calibration=references.split("calibration"), heldout=references.split("heldout"),
            example=ctx.example_inputs, latency_runs=int(q.latency_runs),
        )
        agreement = getattr(cctx.adapter, "greedy_agreement", None)
        if callable(agreement):  # a graph with its cache: how much of a greedy text stays the fp32 twin's
            steps = max(int(job.validate.generation_steps), 16)
            built.report["generation"] = agreement(lambda inputs, run=run: as_output_list(run(inputs)),
                                                   lambda inputs: as_output_list(run_fp32(inputs)), steps, job.seed,
                                                   int(job.task_spec.input_schema.get("vocab_size", 2)))
        built.gate_failures = quant_report.gate_failures(built.report, job.validate, built.quantized_layers)
        candidates.append(built)
    figures = {weight_type_of(c.context.quantization): {
        "latency_ms": c.report["speed"]["latency_ms"], "latency_spread": c.report["speed"]["spread"],
        "size_bytes": c.report["size"]["bytes"], "heldout_agreement": c.report["fidelity"]["heldout"]["agreement"],
        "gate_failures": c.gate_failures} for c in candidates}
    chosen_type, reason = choose_weight_type(figures)
    chosen = next(c for c in candidates if weight_type_of(c.context.quantization) == chosen_type)
    extra: dict[str, Any] = {}
    if auto and weight_types:
        extra["weight_type_selection"] = {"candidates": figures, "chosen": chosen_type, "reason": reason}
        log.info("%-12s weight_type=auto -> %s: %s", name, chosen_type,
                 reason if "fastest" not in reason else ", ".join(
                     f"{weight_type_of(c.context.quantization)} {c.report['speed']['latency_ms']:.3f} ms"
                     for c in candidates) + f", {reason}")
    return chosen, extra


def choose_weight_type(figures: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The candidate to keep, and why: the fastest of those that pass the gates (of all of them if
    none does). Candidates whose median latencies differ by less than their measurements' spread
    (at least 5%) are not told apart by speed: of those, the one with the higher held-out agreement,
    then the smaller file.

    >>> choose_weight_type({"qint8": {"latency_ms": 1.0, "latency_spread": 0.1, "heldout_agreement": 0.9,
    ...                               "size_bytes": 10, "gate_failures": []},
    ...                     "quint8": {"latency_ms": 1.05, "latency_spread": 0.1, "heldout_agreement": 0.95,
    ...                                "size_bytes": 10, "gate_failures": []}})[0]
    'quint8'
    """
    passing = {k: f for k, f in figures.items() if not f["gate_failures"]}
    if len(figures) == 1:
        only = next(iter(figures))
        return only, "the only weight type this format takes" + ("" if passing else "; it fails the gates")
    pool = passing or figures
    fastest = min(pool, key=lambda k: pool[k]["latency_ms"])
    best = pool[fastest]

    def tolerance(f: dict[str, Any]) -> float:
        return max(quant_report.SLOWER_MARGIN - 1, best.get("latency_spread") or 0, f.get("latency_spread") or 0)

    close = [k for k, f in pool.items() if f["latency_ms"] <= best["latency_ms"] * (1 + tolerance(f))]
    among = f"of the {len(passing)} candidate(s) that pass the gates" if passing else "of all (none passes the gates)"
    if len(close) == 1:
        return fastest, (f"fastest {among}" if passing else "no candidate passes the gates; the fastest is reported")

    def agreement(k: str) -> float:
        value = pool[k]["heldout_agreement"]
        return -1.0 if value is None else value

    chosen = max(close, key=lambda k: (agreement(k), -pool[k]["size_bytes"]))
    others = [k for k in close if k != chosen]
    timings = ", ".join(f"{k} {pool[k]['latency_ms']:.3f} ms" for k in close)
    noise = max(tolerance(pool[k]) for k in close)
    if all(agreement(k) < agreement(chosen) for k in others):
        decided = "the higher held-out agreement: " + ", ".join(
            f"{k} {agreement(k):.2%}" for k in [chosen, *others])
    else:
        decided = "equal held-out agreement, the smaller file: " + ", ".join(
            f"{k} {pool[k]['size_bytes']} bytes" for k in [chosen, *others])
    return chosen, (f"{timings} are within the measurements' spread ({noise:.0%}), so not told apart by speed; "
                    f"kept {decided} ({among})")
