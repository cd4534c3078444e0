"""What a quantized artifact gained and what it paid: size, fidelity and speed against its fp32 twin.

The fp32 twin is the same format built without quantization in the same job; both are loaded in
the same runtime and timed interleaved in the same run, so machine noise hits both alike.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

if TYPE_CHECKING:
    import numpy as np

    from ..config.schema import ValidateConfig

WARMUP_RUNS = 3
# Medians of a few dozen runs on a shared CPU move by a few percent; slower than this is a finding.
SLOWER_MARGIN = 1.05
# The spread of a latency measurement: the interquartile range of its runs over their median, the
# larger of the two sides. Quiet runs here spread by 2-20%; a busy machine (another job on the same
# cores) by far more, and its medians can be 100x the quiet ones. Above MEASURE_AGAIN_SPREAD the
# runs are measured once more and the calmer measurement kept; above UNRELIABLE_SPREAD the report
# says its latency figures cannot be trusted.
MEASURE_AGAIN_SPREAD = 0.25
UNRELIABLE_SPREAD = 0.5
# A machine busy with other work can also slow every run alike (medians 100x the quiet ones with a
# spread of 0.0004, seen here with two CPU hogs on the two cores): then the process's threads wait
# on the run queue. ``cpu_wait`` is that wait (Linux's per-thread schedstat, summed) over the
# measurement's wall time; quiet runs here: 0.00-0.02, with two hogs: about 1.0. Above this it is
# measured again, then flagged like a wide spread.
BUSY_CPU_WAIT = 0.2


def agreement_metric(task_type: str) -> str:
    return "next_token_agreement" if task_type == "language_modeling" else "top1_agreement"


def fidelity(run: Callable, samples: Sequence[dict], references: Iterable[Sequence["np.ndarray"]]) -> dict[str, Any]:
    """Max absolute difference (over every output) and argmax agreement (over the last axis of the
    first output, the task's prediction) with the eager fp32 outputs."""
    import numpy as np

    from ..adapters.outputs import as_output_list

    if not samples:
        return {"samples": 0, "max_abs_diff": None, "agreement": None}
    max_diff, agree, total = 0.0, 0, 0
    for sample, refs in zip(samples, references):
        outs = [np.asarray(o) for o in as_output_list(run(sample))]
        refs = [np.asarray(r) for r in refs]
        max_diff = max(max_diff, *(_max_abs_diff(o, r) for o, r in zip(outs, refs)))
        out, ref = outs[0], refs[0]
        same = out.argmax(axis=-1) == ref.argmax(axis=-1)
        agree += int(same.sum())
        total += same.size
    return {"samples": len(samples), "max_abs_diff": max_diff, "agreement": agree / total}


def _max_abs_diff(out: "np.ndarray", ref: "np.ndarray") -> float:
    """max |out - ref| in float64, a slice at a time where the shapes match (validate.compare's
    reason: an LM's logits are tens of MB, and each float64 temporary would be twice that)."""
    import numpy as np

    from ..adapters.outputs import COMPARE_CHUNK

    if not out.size:
        return 0.0
    if out.shape != ref.shape:
        return float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max())
    out, ref = out.reshape(-1), ref.reshape(-1)
    return max(float(np.abs(out[i:i + COMPARE_CHUNK].astype(np.float64) - ref[i:i + COMPARE_CHUNK]).max())
               for i in range(0, out.size, COMPARE_CHUNK))


# One timing of the two runnables: their run times (ms) in order, the seconds the process's threads
# waited for a CPU meanwhile (None where the system does not say), and the wall time it took (s).
Timing = tuple[Sequence[float], Sequence[float], Optional[float], float]
# What a measurement gives: median ms of each runnable, its spread and its cpu_wait.
Measured = tuple[float, float, float, Optional[float]]


def median_latencies_ms(run_a: Callable, run_b: Callable, inputs: dict, runs: int, *,
                        clock: Callable[[], float] = time.perf_counter,
                        waited: Optional[Callable[[], Optional[float]]] = None) -> Measured:
    """Median latency of two runnables on the same input, timed alternately, the measurement's
    ``spread`` and its ``cpu_wait`` (None where the system does not say). A measurement with a
    spread above MEASURE_AGAIN_SPREAD or a cpu_wait above BUSY_CPU_WAIT is taken once more, and
    the calmer of the two kept (``calmer_measurement``). ``clock`` and ``waited`` (seconds of
    run-queue wait so far, default ``run_queue_wait``) are what the timing reads."""
    waited = run_queue_wait if waited is None else waited
    for _ in range(WARMUP_RUNS):
        run_a(inputs)
        run_b(inputs)

    def timing() -> Timing:
        times_a, times_b = [], []
        waited_before, started = waited(), clock()
        for _ in range(runs):
            t0 = clock()
            run_a(inputs)
            t1 = clock()
            run_b(inputs)
            t2 = clock()
            times_a.append((t1 - t0) * 1000)
            times_b.append((t2 - t1) * 1000)
        wall, waited_after = clock() - started, waited()
        wait = None if waited_before is None or waited_after is None else max(waited_after - waited_before, 0)
        return times_a, times_b, wait, wall

    # A generator: the second timing runs only if calmer_measurement asks for it.
    return calmer_measurement(timing() for _attempt in range(2))


def figures(timing: Timing) -> Measured:
    """Medians, spread and cpu_wait of one timing: a pure function of its numbers.

    >>> figures(([1.0, 1.0, 1.1, 1.2, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0], 0.01, 0.05))
    (1.1, 2.0, 0.1818, 0.2)
    """
    times_a, times_b, wait, wall = timing
    cpu_wait = None if wait is None or wall <= 0 else round(wait / wall, 4)
    return statistics.median(times_a), statistics.median(times_b), max(spread(times_a), spread(times_b)), cpu_wait


def calmer_measurement(timings: Iterable[Timing]) -> Measured:
    """The figures of the first timing when it is steady (spread at most MEASURE_AGAIN_SPREAD,
    cpu_wait at most BUSY_CPU_WAIT), otherwise of the calmer of it and the next one; no timing is
    read beyond that. A pure function of the timings, which may be made up.

    >>> steady, noisy = ([2.0] * 8, [2.0] * 8, 0.0, 0.04), ([1.0, 1.0, 12.0, 12.0] * 2, [2.0] * 8, 0.0, 0.1)
    >>> calmer_measurement([steady, noisy]) == figures(steady), calmer_measurement([noisy, steady]) == figures(steady)
    (True, True)
    """
    best: Optional[Measured] = None
    for attempt, timing in enumerate(timings):
        measured = figures(timing)
        if best is None or _unsteadiness(measured) < _unsteadiness(best):
            best = measured
        if _unsteadiness(best) <= 1 or attempt >= 1:
            break
    if best is None:
        raise ValueError("no timing to measure")
    return best


def _unsteadiness(measured: Measured) -> float:
    """Above 1: measure again."""
    return max(measured[2] / MEASURE_AGAIN_SPREAD, (measured[3] or 0.0) / BUSY_CPU_WAIT)


def run_queue_wait() -> Optional[float]:
    """Seconds this process's threads have spent ready to run but waiting for a CPU (Linux:
    ``/proc/self/task/*/schedstat``); None where the system does not say."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9


def spread(times: Sequence[float]) -> float:
    """Interquartile range over the median (0 for fewer than two runs).

    >>> spread([1.0, 1.0, 1.1, 1.2, 5.0])  # (1.2 - 1.0) / 1.1: the outlier 5.0 does not count
    0.1818
    """
    if len(times) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return round((q3 - q1) / median, 4) if median > 0 else 0.0


def measure(*, run: Callable, run_fp32: Callable, size: int, size_fp32: int, task_type: str,
            calibration: tuple, heldout: tuple, example: dict, latency_runs: int) -> dict[str, Any]:
    """The report of one quantized artifact (``calibration``/``heldout``: samples and their eager
    outputs, read once, in order)."""
    latency, latency_fp32, noise, cpu_wait = median_latencies_ms(run, run_fp32, example, latency_runs)
    return {
        "size": {"bytes": size, "fp32_bytes": size_fp32, "ratio": round(size / size_fp32, 4)},
        "fidelity": {
            "agreement_metric": agreement_metric(task_type),
            "calibration": fidelity(run, *calibration),
            "heldout": fidelity(run, *heldout),
        },
        "speed": {"latency_ms": round(latency, 4), "fp32_latency_ms": round(latency_fp32, 4),
                  "ratio": round(latency / latency_fp32, 4), "runs": latency_runs, "spread": noise, "cpu_wait": cpu_wait,
                  "input_shapes": {k: list(v.shape) for k, v in example.items()}},
    }


def gate_failures(report: dict[str, Any], validate: "ValidateConfig", quantized_layers: Optional[int]) -> list[str]:
    """Gates that fail the job: never larger than fp32, and the user's bounds where set.

    With nothing quantized the two files differ only by serialization noise (TorchScript mangles
    class names per trace); the "nothing was quantized" warning says what matters then.
    """
    failures = []
    size = report["size"]
    if size["bytes"] > size["fp32_bytes"] and quantized_layers != 0:
        failures.append(f"the quantized file ({size['bytes']} bytes) is larger than its fp32 twin "
                        f"({size['fp32_bytes']} bytes)")
    fid = report["fidelity"]
    splits = [(name, fid[name]) for name in ("calibration", "heldout") if fid[name]["samples"]]
    if validate.min_agreement is not None:
        for name, f in splits:
            if f["agreement"] < validate.min_agreement:
                failures.append(f"{fid['agreement_metric']} on {name} samples {f['agreement']:.4f} is below "
                                f"validate.min_agreement={validate.min_agreement}")
    if validate.quantized_atol is not None:
        for name, f in splits:
            if f["max_abs_diff"] > validate.quantized_atol:
                failures.append(f"max |diff| on {name} samples {f['max_abs_diff']:.3g} exceeds "
                                f"validate.quantized_atol={validate.quantized_atol}")
    return failures


def warnings_for(report: dict[str, Any], quantized_layers: Optional[int]) -> list[str]:
    notes = []
    if quantized_layers == 0:
        notes.append("nothing was quantized: the model has no layers this mode quantizes "
                     "(Linear, MatMul, Gemm or Conv); the artifact is fp32 in all but name")
    speed = report["speed"]
    if (speed.get("cpu_wait") or 0) > BUSY_CPU_WAIT:
        notes.append(f"the latency figures are unreliable: the machine was busy (the process waited for a CPU "
                     f"{speed['cpu_wait']:.2f} s per second of timing, measured twice); the latency ratio "
                     f"x{speed['ratio']:.2f} may be far off")
    elif speed.get("spread", 0) > UNRELIABLE_SPREAD:
        notes.append(f"the latency figures are unreliable: their runs spread by {speed['spread']:.0%} of the "
                     "median, measured twice (was the machine busy?); the latency ratio "
                     f"x{speed['ratio']:.2f} may be far off")
    elif speed["ratio"] > max(SLOWER_MARGIN, 1 + speed.get("spread", 0)):  # slower beyond the noise
        notes.append(f"the quantized artifact is slower than fp32 ({speed['latency_ms']:.3f} ms vs "
                     f"{speed['fp32_latency_ms']:.3f} ms median, x{speed['ratio']:.2f})")
    return notes


def summary_line(report: dict[str, Any]) -> str:
    fid = report["fidelity"]
    held = fid["heldout"] if fid["heldout"]["samples"] else fid["calibration"]
    agreement = "-" if held["agreement"] is None else f"{held['agreement']:.1%}"
    generation = report.get("generation")
    greedy = (f", greedy tokens as fp32 {generation['agreement']:.0%} of {generation['steps']}"
              if generation else "")
    return (f"size x{report['size']['ratio']:.2f}, {fid['agreement_metric'].replace('_', ' ')} {agreement}, "
            f"latency x{report['speed']['ratio']:.2f} of fp32{greedy}")
