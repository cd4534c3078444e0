"""A Hydra callback that prints one summary of a sweep and makes a failed sweep exit non-zero."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("exporter")


class SweepSummary(Callback):
    """Collects every job's outcome; after the sweep, prints a table and exits 1 if any failed."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.failed = 0

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        overrides = " ".join(job_return.overrides or []) or "(defaults)"
        if job_return.status != JobStatus.COMPLETED:
            self.failed += 1
            self.rows.append([overrides, "crashed", str(job_return._return_value)[:160]])
            return
        outcome = job_return.return_value or {}
        status = outcome.get("status", "?")
        if status != "ok":
            self.failed += 1
        reason = outcome.get("error") or "; ".join(f"{k}: {v}" for k, v in (outcome.get("errors") or {}).items())
        self.rows.append([overrides, status, reason[:160] or outcome.get("export_dir", "")])

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from .report import table

        if not self.rows:
            return
        print(f"\nsweep: {len(self.rows)} job(s), {len(self.rows) - self.failed} ok, {self.failed} failed")
        print(table(["job", "status", "folder or reason"], self.rows), flush=True)
        if self.failed:
            raise SystemExit(1)
