"""A Hydra callback that prints one summary of a sweep and makes a failed sweep exit non-zero."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("exporter")


class SweepSummary(Callback):
    """Collects every job's outcome; after the sweep, prints a table and exits 1 if any failed."""

    def __init__(self) -> None:
        self.jobs: list[tuple[list[str], str, str]] = []

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        overrides = list(job_return.overrides or [])
        if job_return.status != JobStatus.COMPLETED:
            self.jobs.append((overrides, "crashed", str(job_return._return_value)))
            return
        outcome = job_return.return_value or {}
        reason = outcome.get("error") or "; ".join(f"{k}: {v}" for k, v in (outcome.get("errors") or {}).items())
        self.jobs.append((overrides, outcome.get("status", "?"), reason or outcome.get("export_dir", "")))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from .report import table

        if not self.jobs:
            return
        # Show what the sweep varied; what every job shares is printed once above the table.
        shared = set.intersection(*(set(o) for o, _, _ in self.jobs))
        rows = [[" ".join(o for o in overrides if o not in shared) or "(defaults)", status, reason[:200]]
                for overrides, status, reason in self.jobs]
        failed = sum(1 for _, status, _ in self.jobs if status != "ok")
        print(f"\nsweep: {len(rows)} job(s), {len(rows) - failed} ok, {failed} failed")
        if shared:
            print("every job: " + " ".join(sorted(shared)))
        print(table(["job", "status", "folder or reason"], rows), flush=True)
        if failed:
            raise SystemExit(1)
