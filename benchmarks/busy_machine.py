"""A busy machine as the quantization report sees it: CPU hogs on every core, then a timed workload.

The report flags latency figures taken while other processes held the cores, even when every run
was slowed alike (no spread to see), from the time its threads waited on the run queue
(``cpu_wait``, exporter.quantization.report). The tests check that decision on made-up timings
(tests/test_quantization.py); this script checks, on a real machine and with real load, that
Linux's schedstat gives a figure over the bound. It was a test once, and it flaked: how much a
process waits depends on everything else running on the machine.

    python benchmarks/busy_machine.py            # two hogs per core, plus one
    python benchmarks/busy_machine.py --hogs 0   # a quiet machine: cpu_wait near 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def work(_inputs) -> None:  # about a millisecond of CPU
    sum(i * i for i in range(20000))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=2 * (os.cpu_count() or 2) + 1)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    from exporter.quantization import report

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    try:
        time.sleep(0.3)
        median, _, spread, cpu_wait = report.median_latencies_ms(work, work, {}, runs=args.runs)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    speed = {"latency_ms": median, "fp32_latency_ms": median, "ratio": 1.0, "spread": spread, "cpu_wait": cpu_wait}
    notes = report.warnings_for({"speed": speed}, quantized_layers=3)
    print(f"{args.hogs} hog(s): median {median:.3f} ms, spread {spread}, cpu_wait {cpu_wait} "
          f"(flagged above {report.BUSY_CPU_WAIT})")
    for note in notes:
        print("warning:", note)
    flagged = any("the machine was busy" in note for note in notes)
    return 0 if flagged == (args.hogs > 0) else 1


if __name__ == "__main__":
    sys.exit(main())
