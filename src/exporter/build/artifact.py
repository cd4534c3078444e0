"""One format of a job: export (and quantize), load back, compare with eager PyTorch at every
checked shape, and move the checked file into the staged build, with its typed record."""

from __future__ import annotations

import logging
import shutil
from typing import TYPE_CHECKING, Optional

from ..console import step
from ..errors import ExportError, first_line
from ..files import move_files, ordinary_permissions, sha256_of
from ..formats.base import as_output_list, to_numpy
from ..records.tables import artifact_bytes, grouped_outputs, human_bytes
from .compare import Check, Tolerance, Validation, compare_outputs
from ..interrupts import Interrupted
from .folder import INTERRUPTED, BuildTransaction
from .job import ArtifactRecord, ArtifactResult
from .quantize import build_quantized, timed
from .threads import in_background

if TYPE_CHECKING:
    from ..formats.base import FormatExporter
    from .plan import ArtifactPlan, Plan

log = logging.getLogger("exporter")
# Tracebacks of failed formats: into export.log only, never onto the console.
trace_log = logging.getLogger("exporter.trace")
trace_log.propagate = False


def _stop_if_asked() -> None:
    """A signal that came while a library ran (and that it caught: torch.export's tracing catches what
    is raised inside it) stops the build as soon as the library returns."""
    if INTERRUPTED:
        raise Interrupted(INTERRUPTED[-1])


def _file_hashes(folder) -> dict[str, tuple[int, str]]:
    """Size and sha256 of each file an export wrote, by name."""
    return {path.name: (path.stat().st_size, sha256_of(path)) for path in sorted(folder.iterdir()) if path.is_file()}


def _shapes(inputs) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in inputs.items()}


def build_artifact(plan: "Plan", artifact: "ArtifactPlan", txn: BuildTransaction, disk_full) -> ArtifactResult:
    """Build one format of ``plan`` as ``artifact`` says, in its own work folder, check it, and move its
    files into the staged build.

    A failure of this format is recorded (status ``failed``) and the job goes on with the others;
    a full disk (``disk_full(exc, folder)``) or a signal is not this format's failure and propagates.
    """
    job, ctx = plan.job, artifact.context
    name, exporter = artifact.key, artifact.exporter
    job.model.eval()
    record = ArtifactRecord(file=exporter.filename, dynamic_axes=artifact.dynamic_axes)
    tolerance = Tolerance.for_artifact(job.validate, ctx.quantized)
    validation = Validation(tolerance)
    work = txn.work / name
    try:
        if ctx.quantized:
            with step(f"{name}: {exporter.progress_verb} and quantizing ({ctx.mode})"):
                built, selection = build_quantized(plan, artifact, work)
        else:
            with step(f"{name}: {exporter.progress_verb}"):
                built = timed(work / "build", exporter.filename, ctx, lambda path: exporter.export(ctx, path))
            selection = {}
        _stop_if_asked()
        runtime_files = getattr(ctx.adapter, "runtime_files", None)
        if callable(runtime_files):  # what a runtime reads beside the graph (a generation-ready folder)
            record.runtimes = runtime_files(job.model, built.folder, exporter.filename) or None
        # The files are final once written: hashed on another thread while they are validated
        # (ONNX Runtime and torch release the interpreter; a 124M GPT-2's weights take 0.6 s).
        hashes = in_background(_file_hashes, built.folder)
        if job.validate.enabled:
            validation = _validate(artifact, built, tolerance, job)
            _stop_if_asked()
            if not validation.passed and not ctx.quantized:
                # The format may know another way (ONNX: the dynamo exporter when legacy baked a size).
                first_try = built
                with step(f"{name}: {exporter.progress_verb} again, another way"):
                    retried = timed(work / "build", exporter.filename, ctx,
                                    lambda path: exporter.retry(ctx, path, validation.summary(), first_try.outcome))
                if retried.outcome is not None:
                    built = retried
                    built.export_seconds = round(first_try.export_seconds + retried.export_seconds, 4)
                    hashes = in_background(_file_hashes, built.folder)
                    validation = _validate(artifact, built, tolerance, job)
            record.validation = validation.to_dict()
        record.export_seconds = built.export_seconds
        record.details = built.outcome.details
        record.load_hint = built.outcome.load_hint
        if built.report is not None:
            from ..quantization import report as quant_report

            record.quantization_report = {**built.report, **selection, "gate_failures": built.gate_failures}
            record.warnings = quant_report.warnings_for(built.report, built.quantized_layers)
        problems = [] if validation.passed else [f"outputs differ from eager PyTorch: {validation.summary()}"
                                                 f"{_baked_axes_hint(plan, exporter, validation, built.outcome.details)}"]
        problems += built.gate_failures
        if problems and job.validate.strict:
            raise ExportError(f"{name}: {'; '.join(problems)} (artifact not kept; validate.strict=false keeps it)")
        # Never "ok" for what was not checked: no comparison at all, or dynamic axes never tried.
        unverified = artifact.unverified
        unchecked = "validate.enabled=false: not compared with eager PyTorch" if not job.validate.enabled else unverified
        record.dynamic_axes_verified = bool(job.validate.enabled and not unverified)
        record.status = "mismatch" if problems else ("unchecked" if unchecked else "ok")
        record.unchecked = unchecked or None
        # Only checked files reach the staged build; the build as a whole is published later.
        # Moves are renames: the files hashed are the files moved.
        hashed = hashes()
        moved = move_files(built.folder, txn.build)
        for path in moved.values():  # readable as any file the user writes (some writers make 0600)
            ordinary_permissions(path)
        if set(moved) != set(hashed):
            raise ExportError(f"{name}: the files written changed while they were checked "
                              f"(hashed {sorted(hashed)}, moved {sorted(moved)})")
        final = moved.pop(exporter.filename)
        record.bytes, record.sha256 = hashed[exporter.filename]
        record.extra_files = [{"file": file, "bytes": hashed[file][0], "sha256": hashed[file][1]}
                              for file in moved] or None
        record.warning = "; ".join(problems) or None
        _log(name, record)
        return ArtifactResult(name, record.status, final, record)
    except Exception as exc:  # noqa: BLE001 - one failing format must not stop the others
        if disk_full(exc, txn.work) or INTERRUPTED:
            raise  # not this format's failure: a full disk, or a signal a library wrapped
        record.status = "failed"
        record.error = str(exc) if isinstance(exc, ExportError) else first_line(exc, with_type=True)
        if validation.checks:
            record.validation = validation.to_dict()
        log.error("%-12s FAILED: %s", name, record.error)
        trace_log.error("%s: traceback of the failure", name, exc_info=exc)
        return ArtifactResult(name, "failed", None, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _validate(artifact: "ArtifactPlan", built, tolerance: Tolerance, job) -> Validation:
    """Load the artifact in its runtime and compare every output with eager PyTorch at each of the
    plan's examples (the example and, where the artifact declares dynamic axes, the second); a graph
    with a key/value cache is also run as generation runs it (``check_generation``)."""
    exporter, ctx = artifact.exporter, built.context
    validation = Validation(tolerance)
    with step(f"{artifact.key}: loading {built.path.name} in its runtime"):
        run = exporter.load(built.path, built.context)
    for label, inputs, eager in artifact.examples:
        try:
            with step(f"{artifact.key}: checking the {label} against eager PyTorch"):
                actual = as_output_list(run(inputs))
        except Exception as exc:  # noqa: BLE001 - an artifact that refuses an input fails that check
            if INTERRUPTED:
                raise
            validation.checks.append(Check(label=label, input_shapes=_shapes(inputs), expected_shape=[], actual_shape=[],
                                           max_abs_diff=None, max_rel_diff=None, within_tolerance=False,
                                           problem=f"the artifact cannot run this input ({first_line(exc, with_type=True)})"))
            continue
        validation.checks += compare_outputs(label, _shapes(inputs), ctx.output_names,
                                             [to_numpy(t) for t in eager], actual, tolerance)
    check_generation = getattr(ctx.adapter, "check_generation", None)
    steps = int(job.validate.generation_steps)
    if callable(check_generation) and steps > 0:
        try:
            with step(f"{artifact.key}: generating {steps} tokens through the cache, against eager PyTorch"):
                validation.generation = check_generation(ctx.model, lambda inputs: as_output_list(run(inputs)),
                                                         steps, job.seed, tolerance.atol, tolerance.rtol)
        except Exception as exc:  # noqa: BLE001 - a graph generation cannot run fails that check
            if INTERRUPTED:
                raise
            trace_log.error("traceback of the generation check", exc_info=exc)
            validation.generation = {"match": False, "error": first_line(exc, with_type=True)}
        outcome = validation.generation
        if outcome.get("error"):
            said = f"NOT RUN ({outcome['error']})"
        elif outcome["match"]:
            said = "matches eager"
        else:
            said = "DIFFERS" + ("" if tolerance.gated else " (quantized: reported, not gated)")
        ran = (outcome.get("greedy") or {}).get("steps", steps)
        log.info("%-12s generation through the cache (%d steps, batch 2 left-padded; greedy %d tokens): %s",
                 artifact.key, ran, ran, said)
    return validation


def _baked_axes_hint(plan: "Plan", exporter: "FormatExporter", validation: Validation,
                     details: Optional[dict] = None) -> str:
    """When only the second example fails, name the axes it changes (a size traced as a constant)."""
    failed = {c.label for c in validation.checks if not c.within_tolerance}
    if failed != {"second example"}:
        return ""
    second = next(c.input_shapes for c in validation.checks if c.label == "second example")
    first = next(c.input_shapes for c in validation.checks if c.label == "example")
    name = next(iter(first))
    axes = [label for axis, label in ((0, "batch"), (1, "sequence"))
            if axis < len(first[name]) and first[name][axis] != second[name][axis]]
    if (details or {}).get("fallback"):
        # The format already built it another way (ONNX: dynamo after legacy) and it differs the same way.
        fallback = details["fallback"]
        return (f" (it matches at the example's shape {first[name]} but not at {second[name]}, built with "
                f"{fallback.get('from')} and again with {fallback.get('to')}: the same miss both ways makes a "
                "numerical cause (large activations, a saturated softmax) likelier than a size traced as a "
                "constant; compare the difference with the outputs' scale, or loosen validate.atol/rtol knowingly)")
    hint = exporter.mismatch_hint(axes)
    return (f" (it matches at the example's shape {first[name]} but not at {second[name]}: the {' and '.join(axes)} "
            f"axis was traced as a constant, e.g. a size used in Python arithmetic such as math.sqrt(x.shape[1]) "
            f"or int(...){'; ' + hint if hint else ''})")


def _log(name: str, record: ArtifactRecord) -> None:
    """The artifact's line of the job's output, then its warnings and notes."""
    diff: Optional[float] = (record.validation or {}).get("max_abs_diff")
    diff_text = "not checked" if diff is None else f"max|diff| {diff:.2e}"
    size = artifact_bytes({"bytes": record.bytes, "extra_files": record.extra_files}) or 0
    log.info("%-12s %-18s %10s  %6.2fs  %s  %s", name, record.file, human_bytes(size),
             record.export_seconds, diff_text, record.status)
    per_output = grouped_outputs((record.validation or {}).get("outputs") or {})
    if len(per_output) > 1:
        log.info("%-12s %s", "", ", ".join(f"{n} {'not checked' if d is None else f'{d:.2e}'}"
                                           for n, d in per_output.items()))
    if record.quantization_report is not None:
        from ..quantization.report import summary_line

        log.info("%-12s %s", "", summary_line(record.quantization_report))
    for note in record.warnings or []:
        log.warning("%-12s warning: %s", "", note)
    if record.unchecked:
        log.warning("%-12s not checked: %s", "", record.unchecked)
    if (record.details or {}).get("load_note"):
        indented = "\n".join("    " + line for line in (record.load_hint or "").splitlines())
        log.info("%-12s %s:\n%s", "", record.details["load_note"], indented)


def check_parts_together(plans: "list[Plan]", format_name: str, results: dict, txn: BuildTransaction) -> None:
    """A model exported in parts: run the parts of ``format_name`` together, as they are used
    (encoder-decoder: greedy decoding against eager ``generate``), and record the outcome in each
    part's validation. fp32 parts that disagree with eager fail that check like any other output
    (``validate.strict`` decides whether they are kept); quantized parts are reported, not gated."""
    whole, first = plans[0].whole, plans[0]
    check = getattr(whole.adapter, "check_parts", None)
    keys = [plan.key(format_name) for plan in plans]
    failed = [plan.part for plan in plans if results[plan.key(format_name)].path is None]
    if failed:
        # A part alone is of no use: the format's other parts go too, saying why.
        for plan in plans:
            result = results[plan.key(format_name)]
            if result.path is None:
                continue
            _drop(result, txn, f"not kept: the {' and '.join(failed)} part of {format_name} failed, and the parts "
                               "of a model are used together")
            log.error("%-12s FAILED: %s", plan.key(format_name), result.record.error)
        return
    if check is None or not whole.validate.enabled:
        return  # no joint check, or checks off
    from ..adapters import Part

    parts = [Part(plan.part, plan.job.model, plan.adapter) for plan in plans]
    try:
        runs = {plan.part: plan.exporters[format_name].load(results[plan.key(format_name)].path, plan.context)
                for plan in plans}
        tolerance = whole.validate.atol + whole.validate.rtol
        steps = int(whole.validate.generation_steps)
        outcome = check(whole.model, parts, {n: _as_list(run) for n, run in runs.items()}, steps, whole.seed, tolerance)
    except Exception as exc:  # noqa: BLE001 - the joint check failing is this format's failure
        if INTERRUPTED:
            raise
        trace_log.error("%s: traceback of the joint check", format_name, exc_info=exc)
        outcome = {"match": False, "error": first_line(exc, with_type=True)}
    what = f"greedy decoding of {whole.validate.generation_steps} tokens through {' + '.join(p.part for p in plans)}"
    stepwise = outcome.get("through_cache")
    differs = "DIFFERS" + (" (quantized: reported, not gated)" if first.context.quantized else "")
    log.info("%-12s %s: %s%s", format_name, what, "matches eager generate" if outcome["match"] else differs,
             f" (each step's logits through the cache: max |diff| {stepwise['max_abs_diff']:.2e}"
             f"{'' if stepwise['passed'] else ', OVER the tolerance at step ' + str(stepwise.get('first_failing_step'))})"
             if isinstance(stepwise, dict) else "")
    if outcome.get("note"):
        log.info("%-12s %s", "", outcome["note"])
    for key in keys:
        record = results[key].record
        record.validation = {**(record.validation or {}), "greedy_decoding": outcome}
    if outcome["match"]:
        return
    where = outcome.get("error") or (f"token {outcome.get('first_difference')} differs "
                                     f"(eager {outcome.get('eager_tokens')}, artifacts {outcome.get('artifact_tokens')})"
                                     if outcome.get("first_difference") is not None else
                                     f"the logits through the cache differ from eager's at step "
                                     f"{(stepwise or {}).get('first_failing_step')} (max |diff| "
                                     f"{(stepwise or {}).get('max_abs_diff', 0):.2e})")
    problem = f"{what} does not match eager generate: {where}"
    if first.context.quantized:
        for key in keys:
            results[key].record.warnings = [*(results[key].record.warnings or []), f"{problem} (quantized: reported, not gated)"]
        log.warning("%-12s warning: %s (quantized: reported, not gated)", "", problem)
        return
    for key in keys:
        result = results[key]
        if whole.validate.strict:
            _drop(result, txn, f"{problem} (artifact not kept; validate.strict=false keeps it)")
        else:
            result.record.status, result.status = "mismatch", "mismatch"
            result.record.warning = "; ".join(filter(None, [result.record.warning, problem]))
    if whole.validate.strict:
        log.error("%-12s FAILED: %s", format_name, problem)
    else:
        log.warning("%-12s MISMATCH (kept: validate.strict=false): %s", format_name, problem)


def _drop(result, txn: BuildTransaction, error: str) -> None:
    """Take a built artifact back out of the staged build and record it as failed with ``error``."""
    record = result.record
    for name in [record.file, *(extra["file"] for extra in record.extra_files or [])]:
        (txn.build / name).unlink(missing_ok=True)
    record.extra_files = record.bytes = record.sha256 = None
    record.status, record.error = "failed", error
    result.status, result.path = "failed", None


def _as_list(run):
    """A runnable returning a list of outputs (a single-output format's array wrapped)."""
    return lambda inputs: as_output_list(run(inputs))
