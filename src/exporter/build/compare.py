"""Comparing an artifact's outputs with eager PyTorch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from ..adapters.outputs import COMPARE_CHUNK

if TYPE_CHECKING:
    import numpy as np

    from ..config.schema import ValidateConfig


# The check's criterion, recorded with each validation. Scaled by the output's largest eager value,
# not each element's own: a float32 graph that sums in another order is off by rounding noise
# relative to the output's scale, which near an element of zero is no error (an elementwise bound
# fails a BART whose logits sit near zero); a real error (a wrong weight, a dropped input, a
# traced constant) moves outputs by a fraction of their scale, far above it.
CRITERION = "per output: max |artifact - eager| <= atol + rtol * max |eager|"


@dataclass
class Tolerance:
    """The bound of each output: max |artifact - eager| <= atol + rtol * max |eager| (``CRITERION``);
    ``gated`` false: report only."""

    atol: Optional[float]
    rtol: Optional[float]
    gated: bool
    # NaN/inf in an output fail the check unless allowed (then they must sit where eager has them).
    allow_nonfinite: bool = False

    @classmethod
    def for_artifact(cls, cfg: "ValidateConfig", quantized: bool) -> "Tolerance":
        allow = bool(getattr(cfg, "allow_nonfinite", False))
        if not quantized:
            return cls(float(cfg.atol), float(cfg.rtol), gated=True, allow_nonfinite=allow)
        atol, rtol = cfg.quantized_atol, cfg.quantized_rtol
        # A quantized artifact is gated only on the bounds the user set.
        gated = atol is not None or rtol is not None
        return cls(
            float(atol) if atol is not None else (0.0 if gated else None),
            float(rtol) if rtol is not None else (0.0 if gated else None),
            gated,
            allow,
        )


@dataclass
class Check:
    """One comparison on one input."""

    label: str
    input_shapes: dict[str, list[int]]
    expected_shape: list[int]
    actual_shape: list[int]
    max_abs_diff: Optional[float]
    max_rel_diff: Optional[float]
    within_tolerance: bool
    problem: Optional[str] = None
    # Which output this check compared (a job may export several).
    output: Optional[str] = None
    # max |eager| of that output: the scale rtol is taken of (CRITERION).
    max_abs_eager: Optional[float] = None


@dataclass
class Validation:
    tolerance: Tolerance
    checks: list[Check] = field(default_factory=list)
    # A graph with a key/value cache run as generation runs it (adapters/kv_cache.check_generation).
    generation: Optional[dict[str, Any]] = None

    @property
    def passed(self) -> bool:
        """False only when a gated bound was missed (or the shape/finiteness is wrong), or generation
        through the cache differs from eager."""
        generated = self.generation is None or self.generation["match"] or not self.tolerance.gated
        return generated and all(c.within_tolerance or (not self.tolerance.gated and c.problem is None)
                                 for c in self.checks)

    @property
    def max_abs_diff(self) -> Optional[float]:
        values = [c.max_abs_diff for c in self.checks if c.max_abs_diff is not None]
        return max(values) if values else None

    def per_output(self) -> dict[str, Optional[float]]:
        """The largest difference of each output over every checked input."""
        result: dict[str, Optional[float]] = {}
        for check in self.checks:
            if check.output is None:
                continue
            previous = result.get(check.output)
            value = check.max_abs_diff
            result[check.output] = value if previous is None else (previous if value is None else max(previous, value))
        return result

    def summary(self) -> str:
        failed = [c for c in self.checks if not c.within_tolerance]
        if not failed and self.generation is not None and not self.generation["match"]:
            return f"generation through the cache: {generation_problem(self.generation)}"
        if not failed:
            return "within tolerance"
        c = failed[0]
        where = f"{c.label}, output {c.output}" if c.output else c.label
        if c.problem:
            return f"{where}: {c.problem}"
        scale = c.max_abs_eager or 0.0
        bound = (self.tolerance.atol or 0.0) + (self.tolerance.rtol or 0.0) * scale
        return (
            f"{where}: max |diff| {c.max_abs_diff:.3g} exceeds atol + rtol * max |eager| = "
            f"{self.tolerance.atol} + {self.tolerance.rtol} * {scale:.3g} = {bound:.3g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "gated": self.tolerance.gated,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "criterion": CRITERION,
            "max_abs_diff": self.max_abs_diff,
            "outputs": self.per_output(),
            **({"generation": self.generation} if self.generation is not None else {}),
            "checks": [asdict(c) for c in self.checks],
        }


def compare_outputs(label: str, input_shapes: dict[str, list[int]], names: Sequence[str],
                    expected: Sequence["np.ndarray"], actual: Sequence["np.ndarray"], tolerance: Tolerance) -> list[Check]:
    """Compare each of an artifact's outputs with the eager one of the same name, in order; an
    artifact with another number of outputs fails the check."""
    if len(actual) != len(expected):
        return [Check(label=label, input_shapes=input_shapes, expected_shape=[], actual_shape=[], max_abs_diff=None,
                      max_rel_diff=None, within_tolerance=False,
                      problem=f"the artifact returns {len(actual)} output(s), eager PyTorch {len(expected)} {list(names)}")]
    return [compare(label, input_shapes, e, a, tolerance, output=name) for name, e, a in zip(names, expected, actual)]


def compare(label: str, input_shapes: dict[str, list[int]], expected: "np.ndarray", actual: "np.ndarray",
            tolerance: Tolerance, output: Optional[str] = None) -> Check:
    """Compare one artifact output with the eager output."""
    import numpy as np

    expected, actual = np.asarray(expected), np.asarray(actual)
    shapes = dict(label=label, input_shapes=input_shapes,
                  expected_shape=list(expected.shape), actual_shape=list(actual.shape), output=output)
    if expected.shape != actual.shape:
        return Check(**shapes, max_abs_diff=None, max_rel_diff=None, within_tolerance=False,
                     problem=f"output shape {list(actual.shape)} differs from eager {list(expected.shape)}")
    # In float64, a slice at a time: an LM's logits are tens of MB, and each temporary would be that much.
    expected, actual = expected.reshape(-1), actual.reshape(-1)
    max_abs = max_rel = max_eager = 0.0
    nonfinite = {"eager": False, "artifact": False, "placed": False}
    for start in range(0, expected.size, COMPARE_CHUNK):
        e = expected[start:start + COMPARE_CHUNK].astype(np.float64)
        a = actual[start:start + COMPARE_CHUNK].astype(np.float64)
        finite_e, finite_a = np.isfinite(e), np.isfinite(a)
        nonfinite["eager"] |= not finite_e.all()
        nonfinite["artifact"] |= not finite_a.all()
        nonfinite["placed"] |= not np.array_equal(finite_e, finite_a)
        diff = np.abs(a[finite_e] - e[finite_e])
        scale = np.abs(e[finite_e])
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float((diff / np.maximum(scale, 1e-12)).max()))
            max_eager = max(max_eager, float(scale.max()))
    within = tolerance.atol is None or max_abs <= tolerance.atol + (tolerance.rtol or 0.0) * max_eager
    if not tolerance.allow_nonfinite and (nonfinite["eager"] or nonfinite["artifact"]):
        where = "eager PyTorch's" if nonfinite["eager"] else "the artifact's"
        return Check(**shapes, max_abs_diff=None, max_rel_diff=None, within_tolerance=False,
                     problem=f"non-finite values (NaN or inf) in {where} output (validate.allow_nonfinite=true accepts them)")
    if nonfinite["placed"]:
        return Check(**shapes, max_abs_diff=None, max_rel_diff=None, within_tolerance=False,
                     problem="non-finite values (NaN or inf) where eager PyTorch has finite ones, or the reverse")
    return Check(**shapes, max_abs_diff=max_abs, max_rel_diff=max_rel, within_tolerance=within,
                 max_abs_eager=max_eager)


def generation_problem(outcome: dict[str, Any]) -> str:
    """What went wrong in a generation check (``Validation.generation``), in one phrase."""
    if outcome.get("error"):
        return outcome["error"]
    stepwise, greedy = outcome.get("stepwise") or {}, outcome.get("greedy") or {}
    if not stepwise.get("passed", True):
        return (f"step {stepwise.get('first_failing_step')} of the cached run differs from eager "
                f"(max |diff| {stepwise.get('max_abs_diff'):.3g})")
    return (f"greedy token {greedy.get('first_difference')} differs (eager {greedy.get('eager_tokens')}, "
            f"artifact {greedy.get('artifact_tokens')})")
