"""One export job: model -> example inputs -> each format (export, load back, compare) -> records.

The command line (``cli.py``) and the Python API (``api.py``) both build an ``ExportJob`` and call
``run_export``; neither knows a format's internals, and neither does this module: it only uses the
``FormatExporter`` surface.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .adapters import ModelAdapter, adapter_for_task
from .errors import ConfigError, ExportError
from .files import publish, sha256_of, staging_dir, write_json_atomic, write_text_atomic
from .metadata import CONFIG_SNAPSHOT_FILE, METADATA_FILE, SCHEMA_VERSION, environment, plain, utc_now
from .report import human_bytes
from .quantize import check_quantization, mode_of, weight_type_of
from .schema import CalibrationConfig, QuantizationConfig, ValidateConfig, WeightType
from .task_spec import TaskSpec
from .validate import Tolerance, Validation, compare

if TYPE_CHECKING:
    import torch

log = logging.getLogger("exporter")


@dataclass
class ExportJob:
    """Everything one export needs; both doors (CLI and API) build one of these."""

    model: "torch.nn.Module"
    task_spec: TaskSpec
    export_dir: Path
    # format name -> its options (a schema dataclass or a matching object), in build order
    formats: dict[str, Any]
    adapter: Optional[ModelAdapter] = None
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    # An already built iterable for calibration source "dataset".
    calibration_dataset: Any = None
    seed: int = 0
    # The exact configuration, written beside the artifacts as config.yaml.
    snapshot_yaml: str = ""
    # Where the job came from: config choices and overrides, checkpoint hash, the door used.
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class ArtifactResult:
    format: str
    status: str  # "ok", "mismatch" (kept, validate.strict=false) or "failed"
    path: Optional[Path] = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    export_dir: Path
    metadata_path: Path
    artifacts: dict[str, ArtifactResult]
    metadata: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(a.status == "ok" for a in self.artifacts.values())

    def paths(self) -> dict[str, Path]:
        """``{format: Path, ..., "metadata": Path}`` for every artifact that was built."""
        out = {name: a.path for name, a in self.artifacts.items() if a.path is not None}
        out["metadata"] = self.metadata_path
        return out


def _shapes(inputs: "dict[str, torch.Tensor]") -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in inputs.items()}


def _describe(inputs: "dict[str, torch.Tensor]") -> str:
    return ", ".join(f"{n} {str(t.dtype).replace('torch.', '')}{list(t.shape)}" for n, t in inputs.items())


def _io_record(name: str, tensor: "torch.Tensor") -> dict[str, Any]:
    return {"name": name, "dtype": str(tensor.dtype).replace("torch.", ""), "shape": list(tensor.shape)}


class _Plan:
    """The checked, ready-to-run form of a job: exporters built, inputs drawn, eager outputs known."""

    def __init__(self, job: ExportJob):
        import torch

        from .formats import EXPORTERS, ExportContext

        try:
            job.task_spec.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        unknown = [f for f in job.formats if f not in EXPORTERS]
        if unknown or not job.formats:
            raise ConfigError(
                f"formats: unknown or no format {unknown}; valid values: {sorted(EXPORTERS)}"
            )
        check_quantization(job.quantization)
        self.job = job
        self.adapter = job.adapter or adapter_for_task(job.task_spec)
        job.model.eval()
        try:
            self.inputs = self.adapter.example_inputs(job.task_spec, batch_size=1, seed=job.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.eager = self._eager(self.inputs, first=True)
        self._second: dict[bool, Any] = {}
        self.context = ExportContext(
            model=job.model, adapter=self.adapter, task_spec=job.task_spec,
            example_inputs=self.inputs, quantization=job.quantization,
        )
        self.exporters = {name: EXPORTERS[name](options) for name, options in job.formats.items()}
        for exporter in self.exporters.values():
            exporter.check(self.context)
        self.calibration = None
        self._references: dict[str, list] = {}
        if self.context.quantized:
            from .calibration import build_calibration

            self.calibration = build_calibration(job.calibration, self.adapter, job.task_spec, self.inputs,
                                                 job.seed, dataset=job.calibration_dataset)
            self.context.calibration = self.calibration
        self.torch_version = torch.__version__

    def _eager(self, inputs, first: bool):
        import torch

        try:
            with torch.no_grad():
                return self.adapter.run(self.job.model, inputs)
        except Exception as exc:  # noqa: BLE001 - any failure here is the user's model/input mismatch
            if not first:
                raise
            raise ConfigError(
                f"the model failed on its example input ({_describe(inputs)}) drawn from task_spec "
                f"{self.job.task_spec.task_name!r} (input_schema {self.job.task_spec.input_schema}): "
                f"{type(exc).__name__}: {exc}. Check task_spec.input_schema against what the model expects."
            ) from None

    def reference(self, split: str) -> tuple[list, list]:
        """Calibration or held-out samples with their eager fp32 outputs (computed once)."""
        samples = self.calibration.samples if split == "calibration" else self.calibration.heldout
        if split not in self._references:
            import torch

            with torch.no_grad():
                self._references[split] = [self.adapter.run(self.job.model, s).numpy() for s in samples]
        return samples, self._references[split]

    def second_example(self, exporter) -> "tuple[dict[str, torch.Tensor], torch.Tensor] | None":
        """A differently sized input that proves the artifact's dynamic axes: another batch size and,
        for text with a dynamic sequence axis, half the sequence length. None when there is no check."""
        cfg = self.job.validate
        if not cfg.enabled or cfg.second_batch_size <= 1 or not exporter.dynamic_batch:
            return None
        shorter = bool(self.job.task_spec.modality == "text" and self.adapter.sequence_axes
                       and exporter.dynamic_sequence)
        if shorter not in self._second:
            seq_len = max(1, next(iter(self.inputs.values())).shape[1] // 2) if shorter else None
            inputs = self.adapter.example_inputs(
                self.job.task_spec, batch_size=cfg.second_batch_size, seed=self.job.seed + 1, seq_len=seq_len
            )
            try:
                self._second[shorter] = (inputs, self._eager(inputs, first=False))
            except Exception as exc:  # noqa: BLE001 - a model may take only batch 1; say so, check the first
                log.warning("second example input (%s) fails in eager PyTorch (%s); only the first is checked",
                            _describe(inputs), exc)
                self._second[shorter] = None
        return self._second[shorter]


def run_export(job: ExportJob) -> ExportResult:
    """Build, check and record every requested format. Raises ConfigError before writing anything
    when the job itself is invalid; a failing format is recorded and the others are still built."""
    started = time.perf_counter()
    was_training = job.model.training
    try:
        plan = _Plan(job)
        export_dir = Path(job.export_dir)
        export_dir.mkdir(parents=True, exist_ok=True)
        results = {name: _build_one(plan, name, exporter, export_dir) for name, exporter in plan.exporters.items()}
    finally:
        job.model.train(was_training)
    metadata = _metadata(plan, results, time.perf_counter() - started)
    metadata_path = export_dir / METADATA_FILE
    write_json_atomic(metadata_path, metadata)
    if job.snapshot_yaml:
        write_text_atomic(export_dir / CONFIG_SNAPSHOT_FILE, job.snapshot_yaml)
    return ExportResult(export_dir=export_dir, metadata_path=metadata_path, artifacts=results, metadata=metadata)


@dataclass
class _Built:
    """One artifact in its staging folder, with what the exporter and the checks said of it."""

    folder: Path
    path: Path
    outcome: Any
    export_seconds: float
    context: Any
    report: Optional[dict[str, Any]] = None
    gate_failures: list[str] = field(default_factory=list)


def _export_into(exporter, ctx, folder: Path) -> _Built:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / exporter.filename
    t0 = time.perf_counter()
    outcome = exporter.export(ctx, path)
    return _Built(folder, path, outcome, round(time.perf_counter() - t0, 4), ctx)


def _build_quantized(plan: _Plan, name: str, exporter, staged: Path) -> tuple[_Built, dict[str, Any]]:
    """Build the quantized artifact (each weight type when ``weight_type=auto``) and its fp32 twin,
    measure each, and keep the fastest that passes the gates."""
    from dataclasses import replace

    from . import quant_report

    ctx, q, job = plan.context, plan.context.quantization, plan.job
    twin = _export_into(exporter, ctx.fp32(), staged / "fp32")
    run_fp32 = exporter.load(twin.path, twin.context)
    auto = weight_type_of(q) == "auto"
    weight_types = exporter.weight_types(ctx.mode) if auto else [weight_type_of(q)]
    candidates = []
    for weight_type in weight_types:
        cctx = replace(ctx, quantization=replace(q, weight_type=WeightType(weight_type)))
        built = _export_into(exporter, cctx, staged / f"quantized-{weight_type}")
        built.report = quant_report.measure(
            run=exporter.load(built.path, cctx), run_fp32=run_fp32, size=built.path.stat().st_size,
            size_fp32=twin.path.stat().st_size, task_type=job.task_spec.task_type,
            calibration=plan.reference("calibration"), heldout=plan.reference("heldout"),
            example=plan.inputs, latency_runs=int(q.latency_runs),
        )
        layers = (built.outcome.details.get("quantization") or {}).get("quantized_layers")
        built.gate_failures = quant_report.gate_failures(built.report, job.validate, layers)
        candidates.append(built)
    passing = [c for c in candidates if not c.gate_failures]
    chosen = min(passing or candidates, key=lambda c: c.report["speed"]["latency_ms"])
    extra: dict[str, Any] = {}
    if auto:
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


def _build_one(plan: _Plan, name: str, exporter, export_dir: Path) -> ArtifactResult:
    job, ctx = plan.job, plan.context
    job.model.eval()
    final = export_dir / exporter.filename
    record: dict[str, Any] = {"file": exporter.filename, "status": "failed"}
    tolerance = Tolerance.for_artifact(job.validate, ctx.quantized)
    validation = Validation(tolerance)
    try:
        with staging_dir(export_dir, name) as staged:
            if ctx.quantized:
                built, extra = _build_quantized(plan, name, exporter, staged)
            else:
                built, extra = _export_into(exporter, ctx, staged / "build"), {}
            record["export_seconds"] = built.export_seconds
            record["details"] = built.outcome.details
            record["load_hint"] = built.outcome.load_hint
            if built.report is not None:
                from . import quant_report

                record["quantization_report"] = {**built.report, **extra, "gate_failures": built.gate_failures}
                layers = (built.outcome.details.get("quantization") or {}).get("quantized_layers")
                record["warnings"] = quant_report.warnings_for(built.report, layers)
            if job.validate.enabled:
                run = exporter.load(built.path, built.context)
                examples = [("example", plan.inputs, plan.eager)]
                second = plan.second_example(exporter)
                if second is not None:
                    examples.append(("second example", *second))
                for label, inputs, eager in examples:
                    validation.checks.append(
                        compare(label, _shapes(inputs), eager.numpy(), run(inputs), tolerance)
                    )
                record["validation"] = validation.to_dict()
            problems = [] if validation.passed else [f"outputs differ from eager PyTorch: {validation.summary()}"]
            problems += built.gate_failures
            if problems and job.validate.strict:
                raise ExportError(f"{name}: {'; '.join(problems)} (artifact not kept; validate.strict=false keeps it)")
            status = "mismatch" if problems else "ok"
            # Rename into place only once checked: a crash or a miss never leaves a torn artifact.
            publish(built.folder, export_dir)
        record.update(status=status, bytes=final.stat().st_size, sha256=sha256_of(final))
        if problems:
            record["warning"] = "; ".join(problems)
        _log_line(name, record)
        for note in record.get("warnings", []):
            log.warning("%-12s warning: %s", "", note)
        if record["details"].get("load_note"):
            log.info("%-12s %s:\n%s", "", record["details"]["load_note"], _indent(record["load_hint"]))
        return ArtifactResult(name, status, final, record)
    except Exception as exc:  # noqa: BLE001 - one failing format must not stop the others
        # A file left by an earlier build of this folder would not match this build's metadata.
        final.unlink(missing_ok=True)
        message = str(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"
        record.update(status="failed", error=message)
        if validation.checks:
            record["validation"] = validation.to_dict()
        log.error("%-12s FAILED: %s", name, message)
        return ArtifactResult(name, "failed", None, record)


def _log_line(name: str, record: dict[str, Any]) -> None:
    diff = (record.get("validation") or {}).get("max_abs_diff")
    diff_text = "not checked" if diff is None else f"max|diff| {diff:.2e}"
    log.info("%-12s %-18s %10s  %6.2fs  %s  %s", name, record["file"], human_bytes(record["bytes"]),
             record["export_seconds"], diff_text, record["status"])
    if "quantization_report" in record:
        from .quant_report import summary_line

        log.info("%-12s %s", "", summary_line(record["quantization_report"]))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _metadata(plan: _Plan, results: dict[str, ArtifactResult], seconds: float) -> dict[str, Any]:
    job = plan.job
    q = job.quantization
    first_input = next(iter(plan.inputs.values()))
    onnx = results.get("onnx")
    dynamic_axes = plan.adapter.dynamic_axes()
    output_name = plan.adapter.output_names[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok" if all(r.status == "ok" for r in results.values()) else (
            "failed" if any(r.status == "failed" for r in results.values()) else "mismatch"),
        "task_name": job.task_spec.task_name,
        "task_type": job.task_spec.task_type,
        "modality": job.task_spec.modality,
        "input_shape": list(first_input.shape),
        "output_shape": list(plan.eager.shape),
        "inputs": [_io_record(n, t) for n, t in plan.inputs.items()],
        "outputs": [_io_record(output_name, plan.eager)],
        "dynamic_axes": {k: {str(a): v for a, v in d.items()} for k, d in dynamic_axes.items()},
        "exported_at": utc_now(),
        "torch_version": plan.torch_version,
        "formats": list(job.formats),
        "quantization": None if mode_of(q) == "none" else plain(q),
        "calibration": plan.calibration.record() if plan.calibration is not None else None,
        "opset": int(job.formats["onnx"].opset) if "onnx" in job.formats else None,
        "onnx_backend": (onnx.record.get("details") or {}).get("backend") if onnx else None,
        "seed": job.seed,
        "task_spec": job.task_spec.to_dict(),
        "model_class": f"{type(job.model).__module__}.{type(job.model).__qualname__}",
        "parameters": sum(p.numel() for p in job.model.parameters()),
        "environment": environment(),
        **job.provenance,
        "total_seconds": round(seconds, 3),
        "artifacts": {name: r.record for name, r in results.items()},
    }
