"""Wall time of sweeps: what building costs, and what an unchanged sweep costs per job.

1. A 12-job sweep: the basic launcher, joblib at 2 workers, and an up-to-date rerun.
2. The 40-job `lm_stub` sweep of issue #26 (`seed=0..19 format=onnx,pytorch`): built once, then
   unchanged three times, alternating with an unchanged 2-job sweep of the same folder; the
   difference between the two is what each further unchanged job costs (the sweep's start-up and
   summary are in both).

Each sweep is one `python -m exporter -m ...` process in a temporary folder. Prints Markdown tables.

    python benchmarks/sweep.py            # needs the `parallel` extra for the joblib row
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exporter.records.tables import markdown_table

SWEEP = ["-m", "format=onnx,torchscript,pytorch", "quantization=none,dynamic", "seed=0,1",
         "task_spec.input_schema.image_size=[3,32,32]", "quantization.latency_runs=5"]


def run(folder: Path, *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "exporter", *SWEEP, *extra], cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    line = next((x for x in r.stdout.splitlines() if x.startswith("sweep:")), f"exit {r.returncode}")
    skipped = sum(1 for x in r.stdout.splitlines() if x.startswith("up to date:"))
    return seconds, line + (f" ({skipped} up to date)" if skipped else "")


LM40 = ["-m", "model=lm_stub", "seed=" + ",".join(str(i) for i in range(20)), "format=onnx,pytorch"]
LM2 = ["-m", "model=lm_stub", "seed=0", "format=onnx,pytorch"]


def timed(folder: Path, args: list[str]) -> float:
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "exporter", *args], cwd=folder, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    return time.perf_counter() - started


def unchanged_jobs(repeat: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build = timed(folder, LM40)
        time.sleep(2.5)  # past the stat cache's racy window, as a nightly is
        timed(folder, LM40)  # the first unchanged pass reads the just-written artifacts once more
        forty, two = [], []
        for _ in range(repeat):
            forty.append(timed(folder, LM40))
            two.append(timed(folder, LM2))
    u40, u2 = statistics.median(forty), statistics.median(two)
    per_job = (u40 - u2) / 38
    print(markdown_table(["40-job lm_stub sweep", "wall s", "s per job"], [
        ["build", f"{build:.2f}", f"{build / 40:.3f}"],
        [f"unchanged (median of {repeat})", f"{u40:.2f}", f"{u40 / 40:.3f}"],
        [f"unchanged, 2 jobs (median of {repeat})", f"{u2:.2f}", "-"],
        ["each further unchanged job", "-", f"{per_job:.3f}"],
        ["unchanged / build", f"{u40 / build:.2f}", "-"],
    ]))


def main() -> None:
    unchanged_jobs()
    print()
    rows = []
    with tempfile.TemporaryDirectory() as basic, tempfile.TemporaryDirectory() as parallel:
        seconds, line = run(Path(basic))
        rows.append(["basic launcher", f"{seconds:.1f}", "x1.00", line])
        base = seconds
        try:
            import hydra_plugins.hydra_joblib_launcher  # noqa: F401
        except ImportError:
            rows.append(["joblib, 2 workers", "-", "-", "skipped: pip install '.[parallel]'"])
        else:
            seconds, line = run(Path(parallel), "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
            rows.append(["joblib, 2 workers", f"{seconds:.1f}", f"x{seconds / base:.2f}", line])
        seconds, line = run(Path(basic))
        rows.append(["rerun, basic launcher", f"{seconds:.1f}", f"x{seconds / base:.2f}", line])
    print(markdown_table(["12-job sweep", "wall s", "vs basic", "result"], rows))


if __name__ == "__main__":
    main()
