"""Wall time of a 12-job sweep: the basic launcher, joblib at 2 workers, and an up-to-date rerun.

Each sweep is one `python -m exporter -m ...` process in a fresh temporary folder (the rerun reuses
the basic launcher's folder, where every job is then up to date). Prints a Markdown table.

    python benchmarks/sweep.py            # needs the `parallel` extra for the joblib row
"""

from __future__ import annotations

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


def main() -> None:
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
