"""One export job: model -> example inputs -> each format (export, load back, compare) -> records.

The command line (``cli.py``) and the Python API (``api.py``) both build an ``ExportJob`` and call
``run_export``; neither knows a format's internals, and neither does this module: it only uses the
``FormatExporter`` surface.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .adapters import ModelAdapter, adapter_for_task
from .errors import ConfigError, ExportError, first_line
from .build_folder import INTERRUPTED, LOG_FILE, BuildTransaction, toolchain_sandbox
from .files import move_files, sha256_of, write_json_atomic, write_text_atomic
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
    # Further records written into the build folder (relative path -> text), e.g. Hydra's .hydra/.
    extra_files: dict[str, str] = field(default_factory=dict)
    # Another build of the same folder in progress: wait for it (true) or fail at once (false).
    wait: bool = True


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


def _structure(output: Any) -> str:
    """What a model returned, briefly: 'a tuple of (float32[1, 16], float32[1, 10])'."""
    import torch

    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}"
        return type(value).__name__

    if isinstance(output, torch.Tensor):
        return f"one tensor {one(output)}"
    if isinstance(output, dict) or hasattr(output, "items"):
        return f"a {type(output).__name__} of ({', '.join(f'{k}: {one(v)}' for k, v in output.items())})"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of ({', '.join(one(v) for v in output)})"
    return f"a {type(output).__name__}"


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
        self._check_output_contract()
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
                raw = self.adapter.call(self.job.model, inputs)
                if first:
                    self.raw_output = raw
                return self.adapter.select_output(raw)
        except Exception as exc:  # noqa: BLE001 - any failure here is the user's model/input mismatch
            if not first:
                raise
            raise ConfigError(
                f"the model failed on its example input ({_describe(inputs)}) drawn from task_spec "
                f"{self.job.task_spec.task_name!r} (input_schema {self.job.task_spec.input_schema}): "
                f"{type(exc).__name__}: {exc}. Check task_spec.input_schema against what the model expects."
            ) from None

    def _check_output_contract(self) -> None:
        """The chosen output must be what the task spec says it is, and finite unless allowed."""
        import torch

        spec, eager = self.job.task_spec, self.eager
        schema = spec.output_schema or {}
        key = "num_classes" if "num_classes" in schema else (
            "vocab_size" if spec.task_type == "language_modeling" and "vocab_size" in schema else None)
        if key is not None and (eager.dim() == 0 or int(eager.shape[-1]) != int(schema[key])):
            last = int(eager.shape[-1]) if eager.dim() else "none (a scalar)"
            raise ConfigError(
                f"task_spec.output_schema.{key} is {schema[key]}, but the output that "
                f"{type(self.adapter).__name__}.select_output picks has shape {list(eager.shape)} (last dimension "
                f"{last}); the model returned {_structure(self.raw_output)}. Set task_spec.output_schema.{key}={last} "
                "if that output is right, or give an adapter whose select_output picks the right one"
            )
        if not getattr(self.job.validate, "allow_nonfinite", False) and eager.is_floating_point():
            bad = int((~torch.isfinite(eager)).sum())
            if bad:
                raise ConfigError(
                    f"the model's output on its example input holds {bad} non-finite value(s) (NaN or inf) out of "
                    f"{eager.numel()}; an artifact cannot be checked against that. Fix the model or its weights, or "
                    "set validate.allow_nonfinite=true to accept them"
                )

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
                log.warning("second example input (%s) fails in eager PyTorch (%s); only the first is checked "
                            "and the dynamic axes stay unverified", _describe(inputs), exc)
                self.second_failure = f"the model fails in eager PyTorch on a second example ({_describe(inputs)})"
                self._second[shorter] = None
        return self._second[shorter]

    def unverified_axes(self, exporter) -> Optional[str]:
        """Why the artifact's declared dynamic axes were not proven at a second shape, or None."""
        if not exporter.dynamic_batch:
            return None  # nothing dynamic declared: nothing to prove
        if self.job.validate.second_batch_size <= 1:
            return f"validate.second_batch_size={self.job.validate.second_batch_size} skips the second-shape check"
        return getattr(self, "second_failure", None)


def run_export(job: ExportJob) -> ExportResult:
    """Build, check and record every requested format, then publish the build folder in one step.

    Raises ConfigError before touching the folder when the job itself is invalid. A failing format
    is recorded and the others are still built. Until the publish, the folder keeps the previous
    build whole: whatever stops the job (an error, a full disk, a signal) leaves it as it was.
    """
    started = time.perf_counter()
    was_training = job.model.training
    export_dir = Path(job.export_dir)
    try:
        plan = _Plan(job)
        with BuildTransaction(export_dir, wait=job.wait) as txn, _job_log(txn.build / LOG_FILE):
            try:
                with toolchain_sandbox(txn.work):
                    results = {name: _build_one(plan, name, exporter, txn)
                               for name, exporter in plan.exporters.items()}
                metadata = _metadata(plan, results, time.perf_counter() - started)
                records = {}
                if job.snapshot_yaml:
                    records[CONFIG_SNAPSHOT_FILE] = job.snapshot_yaml
                records.update(job.extra_files)
                for relative, text in records.items():
                    write_text_atomic(txn.build / relative, text)
                from .report import closing_table

                log.info("\n%s", closing_table(metadata))
                _close_job_log()
                # metadata.json comes last and hashes the other records, export.log included.
                metadata["records"] = {name: sha256_of(txn.build / name) for name in [*records, LOG_FILE]}
                write_json_atomic(txn.build / METADATA_FILE, metadata)
            except Exception as exc:
                if _disk_full(exc, txn.work):
                    raise _disk_full_error(export_dir) from None
                raise
            txn.publish()
    finally:
        job.model.train(was_training)
    artifacts = {name: replace(r, path=export_dir / r.path.name) if r.path else r for name, r in results.items()}
    return ExportResult(export_dir=export_dir, metadata_path=export_dir / METADATA_FILE, artifacts=artifacts,
                        metadata=metadata)


# Less free space than this where the build is staged, after a failure: the disk was the cause.
_DISK_FULL_BYTES = 64 * 1024
_FILE_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# Tracebacks of failed formats: into export.log only, never onto the console.
trace_log = logging.getLogger("exporter.trace")
trace_log.propagate = False
_open_handlers: list[logging.Handler] = []


@contextmanager
def _job_log(path: Path):
    """The job's log inside the staged build (export.log), for both doors: what the console
    showed, plus the tracebacks of failed formats."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FILE_LOG_FORMAT))
    saved = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    for logger in (log, trace_log):
        logger.addHandler(handler)
    _open_handlers.append(handler)
    try:
        yield
    finally:
        log.setLevel(saved)
        _close_job_log()


def _close_job_log() -> None:
    """Detach and close the job's log file (before publishing: a published build is not written)."""
    while _open_handlers:
        handler = _open_handlers.pop()
        for logger in (log, trace_log):
            logger.removeHandler(handler)
        handler.close()


def _disk_full(exc: BaseException, folder: Optional[Path] = None) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain, torch's C++ writer reporting a short write, or (for
    messages that do not say why) no free space left where the build is staged."""
    import errno

    if folder is not None:
        try:
            stat = os.statvfs(folder)
            if stat.f_bavail * stat.f_frsize < _DISK_FULL_BYTES:
                return True
        except OSError:
            pass
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if any(sign in text for sign in ("No space left on device", "file write failed", "unexpected pos")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _disk_full_error(export_dir: Path) -> ExportError:
    return ExportError(f"no space left on the device of {export_dir} while staging the build; nothing was "
                       "published and the previous build is intact; free some space and run again")


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


def _build_one(plan: _Plan, name: str, exporter, txn: BuildTransaction) -> ArtifactResult:
    """Build one format in its own work folder, check it, and move its files into the staged build."""
    job, ctx = plan.job, plan.context
    job.model.eval()
    record: dict[str, Any] = {"file": exporter.filename, "status": "failed"}
    tolerance = Tolerance.for_artifact(job.validate, ctx.quantized)
    validation = Validation(tolerance)
    staged = txn.work / name
    try:
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
        # Never "ok" for what was not checked: no comparison at all, or dynamic axes never tried.
        unchecked = ("validate.enabled=false: not compared with eager PyTorch" if not job.validate.enabled
                     else plan.unverified_axes(exporter))
        record["dynamic_axes_verified"] = job.validate.enabled and not plan.unverified_axes(exporter)
        status = "mismatch" if problems else ("unchecked" if unchecked else "ok")
        if unchecked:
            record["unchecked"] = unchecked
        # Only checked files reach the staged build; the build as a whole is published later.
        final = move_files(built.folder, txn.build)[exporter.filename]
        record.update(status=status, bytes=final.stat().st_size, sha256=sha256_of(final))
        if problems:
            record["warning"] = "; ".join(problems)
        _log_line(name, record)
        for note in record.get("warnings", []):
            log.warning("%-12s warning: %s", "", note)
        if unchecked:
            log.warning("%-12s not checked: %s", "", unchecked)
        if record["details"].get("load_note"):
            log.info("%-12s %s:\n%s", "", record["details"]["load_note"], _indent(record["load_hint"]))
        return ArtifactResult(name, status, final, record)
    except Exception as exc:  # noqa: BLE001 - one failing format must not stop the others
        if _disk_full(exc, txn.work) or INTERRUPTED:
            raise  # not this format's failure: a full disk, or a signal a library wrapped
        message = str(exc) if isinstance(exc, ExportError) else first_line(exc, with_type=True)
        record.update(status="failed", error=message)
        if validation.checks:
            record["validation"] = validation.to_dict()
        log.error("%-12s FAILED: %s", name, message)
        trace_log.error("%s: traceback of the failure", name, exc_info=exc)
        return ArtifactResult(name, "failed", None, record)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _overall_status(statuses: list[str]) -> str:
    """The worst of the artifacts' statuses: failed, then mismatch, then unchecked, then ok."""
    for status in ("failed", "mismatch", "unchecked"):
        if status in statuses:
            return status
    return "ok"


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
        "status": _overall_status([r.status for r in results.values()]),
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
        # The specification's field: the mode, or null. The full settings are beside it.
        "quantization": None if mode_of(q) == "none" else mode_of(q),
        "quantization_config": None if mode_of(q) == "none" else plain(q),
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
