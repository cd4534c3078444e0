"""Sweeps (``python -m exporter -m ...``): a folder per job, a record per job on disk, one summary.

Hydra runs the jobs through whichever launcher is configured (basic, joblib, Submitit, Ray), often
in other processes, so nothing here collects results in memory:

- ``on_multirun_start`` (the launching process) gives the sweep an id and notes which keys it varies,
  in environment variables that the jobs inherit;
- each job names its folder after its choices plus the varied overrides (``sweep_suffix``), records
  the sweep id in its metadata (two jobs of one sweep never share a folder) and writes a small record
  of its outcome into ``<sweep dir>/.sweep-<id>/``;
- ``on_multirun_end`` (the launching process again) reads those records and the jobs' own
  ``metadata.json`` files, prints the table, writes ``sweep_summary.json`` and ``sweep_summary.md``
  (and ``sweep_summary.png`` with the ``plot`` extra) into the sweep folder, and exits 1 when any
  job failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

from hydra.experimental.callback import Callback

from ..console import SWEEP_RECORDS_ENV, flush_stdout, note_lost, say
from ..records.layout import SWEEP_KEYS_ENV, sweep_suffix  # noqa: F401 (sweep_suffix: part of the sweep's API)

log = logging.getLogger("exporter")

SWEEP_ID_ENV = "EXPORTER_SWEEP_ID"
SUMMARY_JSON = "sweep_summary.json"
SUMMARY_MD = "sweep_summary.md"
SUMMARY_PNG = "sweep_summary.png"
# The sweep folder of this process's sweep, and whether Hydra's multirun.yaml was there before it
# (SweepSummary.on_multirun_start), so that a sweep that fails before any job can leave no trace.
STARTED: dict[str, Any] = {}
def task_overrides(hydra_cfg: Any = None) -> list[str]:
    """The job's command-line overrides as typed: ``hydra.overrides.task`` read without resolving, so
    that a value holding ``${`` (escaped, or an error the config check names) is text, not an
    interpolation to resolve in the wrong place."""
    from omegaconf import OmegaConf

    if hydra_cfg is None:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    return [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]


def sweep_identity() -> Optional[dict[str, Any]]:
    """This job's place in its sweep (None outside a sweep): recorded in metadata.json."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return {"id": os.environ.get(SWEEP_ID_ENV), "job": int(hydra_cfg.job.num),
            "dir": str(Path(hydra_cfg.sweep.dir).absolute())}


def claim_folder(folder: Path) -> None:
    """Make sure no other job of this sweep builds (or skips as up to date) ``folder``.

    The claim is a file named after the folder in the sweep's records folder, created exclusively,
    so it works whether the jobs run in one process, in workers or on other machines."""
    import hashlib as _hashlib

    from ..errors import ExportError

    identity = sweep_identity()
    records = os.environ.get(SWEEP_RECORDS_ENV)
    if identity is None or not records:
        return
    claims = Path(records) / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    claim = claims / _hashlib.sha256(str(folder.absolute()).encode()).hexdigest()[:32]
    try:
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        other = claim.read_text(encoding="utf-8").strip() or "?"
        if other == str(identity["job"]):
            return
        raise ExportError(
            f"job {identity['job']} of this sweep would replace {folder}, which job {other} of the same sweep "
            "builds: both jobs' overrides name that folder (the same values twice, values that differ only "
            "in '/', '_' or spaces, or a hydra.sweep.subdir that does not name what the jobs vary: at its "
            "default it does, or add ${hydra:job.override_dirname})") from None
    with os.fdopen(fd, "w") as f:
        f.write(str(identity["job"]))


def write_job_record(outcome: Mapping[str, Any]) -> None:
    """One job's outcome, for the summary the launching process writes (any launcher)."""
    identity = sweep_identity()
    if identity is None or not identity["id"]:
        return
    from ..files import write_json_atomic

    folder = Path(identity["dir"]) / f".sweep-{identity['id']}"
    record = {"job": identity["job"], "overrides": task_overrides(), **outcome}
    # Not flushed to the disk: a record for this sweep's summary, which a crash loses anyway.
    write_json_atomic(folder / f"job-{identity['job']:05d}.json", record, durable=False)


def release_memory() -> None:
    """After a sweep job that ran in the sweep's own process (Hydra's basic launcher where
    exporter.process.forked_jobs cannot fork): collect the job's reference cycles and hand the freed heap back
    to the system (glibc's malloc_trim), so the next job starts from what the libraries keep, not
    from the last job's high-water mark.
    Measured on the six-job sweep of benchmarks/sweep_vs_bare.py: docs/performance.md."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps its own pace
        pass


def _artifact_rows(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    from ..records.tables import artifact_bytes

    rows = {}
    for name, rec in (metadata.get("artifacts") or {}).items():
        report = rec.get("quantization_report") or {}
        fidelity = report.get("fidelity") or {}
        split = fidelity.get("heldout") if (fidelity.get("heldout") or {}).get("samples") else fidelity.get("calibration")
        rows[name] = {
            "file": rec.get("file") if rec.get("status") != "failed" else None,
            "status": rec.get("status"),
            "bytes": artifact_bytes(rec),
            "export_seconds": rec.get("export_seconds"),
            "max_abs_diff": (rec.get("validation") or {}).get("max_abs_diff"),
            "size_ratio": (report.get("size") or {}).get("ratio"),
            "agreement": (split or {}).get("agreement"),
            "latency_ratio": (report.get("speed") or {}).get("ratio"),
            "error": rec.get("error"),
        }
    return rows


def collect(sweep_dir: Path, sweep_id: str) -> list[dict[str, Any]]:
    """The jobs' records, each completed with the artifacts of the build folder it names."""
    jobs = []
    for path in sorted((sweep_dir / f".sweep-{sweep_id}").glob("job-*.json")):
        job = json.loads(path.read_text(encoding="utf-8"))
        metadata_path = Path(job.get("export_dir") or "") / "metadata.json"
        job["artifacts"] = {}
        if job.get("status") not in ("error", "crashed") and metadata_path.is_file():
            job["artifacts"] = _artifact_rows(json.loads(metadata_path.read_text(encoding="utf-8")))
        jobs.append(job)
    return jobs


def _fmt(value: Any, kind: str) -> str:
    from ..records.tables import human_bytes

    if value is None:
        return "-"
    return {"bytes": lambda v: human_bytes(v), "s": lambda v: f"{v:.2f}", "diff": lambda v: f"{v:.2e}",
            "ratio": lambda v: f"x{v:.2f}", "pct": lambda v: f"{v:.1%}"}[kind](value)


def table_rows(jobs: list[dict[str, Any]], shared: set[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["job", "status", "format", "size", "export s", "max |diff|", "size vs fp32", "agreement",
               "latency vs fp32", "folder or reason"]
    rows = []
    for job in jobs:
        label = " ".join(o for o in job["overrides"] if o not in shared) or "(defaults)"
        reason = job.get("error") or "; ".join(f"{k}: {v}" for k, v in (job.get("errors") or {}).items() if v)
        if not job["artifacts"]:
            rows.append([label, job["status"], "-", "-", "-", "-", "-", "-", "-", (reason or job.get("export_dir", ""))[:200]])
        for name, a in job["artifacts"].items():
            rows.append([label, job["status"], name, _fmt(a["bytes"], "bytes"), _fmt(a["export_seconds"], "s"),
                         _fmt(a["max_abs_diff"], "diff"), _fmt(a["size_ratio"], "ratio"), _fmt(a["agreement"], "pct"),
                         _fmt(a["latency_ratio"], "ratio"), (a["error"] or job.get("export_dir", ""))[:200]])
    return headers, rows


# A bar per artifact: past this many the picture is no use (and its width would grow without end),
# so a bigger sweep has no sweep_summary.png.
MAX_PLOTTED = 200


def _plot_data(jobs: list[dict[str, Any]], shared: set[str]) -> list[tuple[str, float, float]]:
    """(label, size in KB, latency ratio) per artifact of the sweep, as the plot shows them."""
    bars = []
    for job in jobs:
        for name, a in job["artifacts"].items():
            if a["bytes"] is None:
                continue
            varied = [o.split("=", 1)[-1] for o in job["overrides"] if o not in shared]
            bars.append((" ".join([*varied, name]) if varied else f"{job['job']}: {name}", a["bytes"] / 1024,
                         a["latency_ratio"] or 0.0))
    return bars


def _plot(bars: list[tuple[str, float, float]], path: Path) -> bool:
    """Size and latency against fp32 per job and format (needs matplotlib: the ``plot`` extra)."""
    if not bars or len(bars) > MAX_PLOTTED:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, sizes, latencies = (list(column) for column in zip(*bars))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, len(labels) * 0.6), 6), sharex=True)
    top.bar(labels, sizes)
    top.set_ylabel("size (KB)")
    bottom.bar(labels, latencies)
    bottom.set_ylabel("latency vs fp32 (0: not quantized)")
    bottom.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _plotted_before(summary: Path) -> Optional[str]:
    """The digest of what the sweep_summary.png beside ``summary`` shows, as that summary says."""
    try:
        digest = json.loads(summary.read_bytes()).get("plot")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


class SweepSummary(Callback):
    """Gives the sweep its id, then summarizes it from disk and exits 1 if any job failed."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        # A launcher whose workers do not inherit the environment (an existing Ray cluster) can be
        # given the id up front: EXPORTER_SWEEP_ID=... set by the user is kept (docs/sweeps.md).
        os.environ.setdefault(SWEEP_ID_ENV, uuid.uuid4().hex[:12])
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        os.environ[SWEEP_RECORDS_ENV] = str(sweep_dir / f".sweep-{os.environ[SWEEP_ID_ENV]}")
        _hold_records(Path(os.environ[SWEEP_RECORDS_ENV]))
        STARTED.update(dir=sweep_dir, had_multirun_yaml=(sweep_dir / "multirun.yaml").exists())
        overrides = task_overrides(config.hydra)
        params = config.hydra.sweeper.get("params") or {}
        overrides += [f"{k}={v}" for k, v in params.items()]
        parsed = [o for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
        os.environ[SWEEP_KEYS_ENV] = json.dumps(sorted({o.key_or_group for o in parsed}))
        # The basic sweeper runs the cartesian product: the summary checks every job left a record.
        self.expected = None
        if str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            self.expected = 1
            for override in parsed:
                self.expected *= len(list(override.sweep_string_iterator()))
        # Last, with the environment complete (a local Ray started here passes it on to its workers):
        # the jobs that run in other processes of this host end with this one (exporter.process.watchdog).
        from ..process.watchdog import SWEEP_LAUNCHER_ENV, SWEEP_OWNER_ENV, owner_value

        os.environ[SWEEP_OWNER_ENV] = owner_value()
        launcher = str(config.hydra.launcher.get("_target_", ""))
        os.environ[SWEEP_LAUNCHER_ENV] = "joblib" if "joblib" in launcher else launcher.rsplit(".", 1)[-1]
        STARTED.update(expected=self.expected,
                       launcher=config.hydra.runtime.choices.get("hydra/launcher") or os.environ[SWEEP_LAUNCHER_ENV])
        if str(config.hydra.launcher.get("_target_", "")).endswith("hydra_ray_launcher.ray_launcher.RayLauncher"):
            _start_ray_here(config.hydra.launcher)
        if str(config.hydra.launcher.get("_target_", "")).endswith("hydra_submitit_launcher.submitit_launcher.LocalLauncher"):
            _quiet_submitit_controllers()
        _stop_the_jobs_on_signals()
        from .composition import compose_by_choices

        compose_by_choices(config)  # the basic launcher's jobs: each set of config choices composed once

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from .composition import compose_as_hydra_does

        compose_as_hydra_does()
        sweep_id = os.environ.get(SWEEP_ID_ENV)
        if not sweep_id:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs, failed, missing = summarize(sweep_dir, sweep_id, getattr(self, "expected", None))
        if failed or missing:
            say(f"error: {failed + missing} of {len(jobs) + missing} sweep job(s) failed (see {sweep_dir / SUMMARY_MD})", 1)
            raise SystemExit(1)


def summarize_a_sweep_its_launcher_ended() -> Optional[tuple[int, int, str]]:
    """A sweep that its launcher ended with an error after some of its jobs ran (joblib, Submitit and
    Ray end the sweep when a worker dies: a job killed by the out-of-memory killer, a crash): the
    summary of the jobs that left a record, and (how many failed, how many left no record, the
    launcher); None when no job left one (the sweep is then undone: ``undo_sweep_start``)."""
    sweep_dir, sweep_id = STARTED.get("dir"), os.environ.get(SWEEP_ID_ENV)
    if sweep_dir is None or not sweep_id or not list((sweep_dir / f".sweep-{sweep_id}").glob("job-*.json")):
        return None
    jobs, failed, missing = summarize(sweep_dir, sweep_id, STARTED.get("expected"))
    return failed, missing, str(STARTED.get("launcher"))


def summarize(sweep_dir: Path, sweep_id: str, expected: Optional[int]) -> tuple[list[dict[str, Any]], int, int]:
    """Write and print the summary of the sweep ``sweep_id`` from its jobs' records (which it then
    removes); the jobs, how many failed, and how many of the ``expected`` left no record."""
    from ..files import write_json_atomic, write_text_atomic
    from ..records.tables import markdown_table, table

    jobs = collect(sweep_dir, sweep_id)
    shutil.rmtree(sweep_dir / f".sweep-{sweep_id}", ignore_errors=True)
    failed = sum(1 for job in jobs if job["status"] not in ("ok", "up to date", "restored", "mismatch", "unchecked"))
    missing = (expected - len(jobs)) if expected is not None and expected > len(jobs) else 0
    shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if jobs else set()
    headers, rows = table_rows(jobs, shared)
    summary = {"sweep_id": sweep_id, "jobs": len(jobs), "ok": len(jobs) - failed, "failed": failed,
               "without_record": missing,
               "shared_overrides": sorted(shared), "records": jobs}
    # The picture is drawn again only when what it shows changed (a sweep of unchanged jobs
    # costs no plotting, about 0.6-0.9 s); without one, no earlier picture is left to mislead.
    bars = _plot_data(jobs, shared)
    digest = hashlib.sha256(json.dumps(bars).encode()).hexdigest() if 0 < len(bars) <= MAX_PLOTTED else None
    png = sweep_dir / SUMMARY_PNG
    unchanged = digest is not None and png.is_file() and _plotted_before(sweep_dir / SUMMARY_JSON) == digest
    plotted = unchanged or _plot(bars, png)
    if not plotted:
        png.unlink(missing_ok=True)
    summary["plot"] = digest if plotted else None
    write_json_atomic(sweep_dir / SUMMARY_JSON, summary)
    write_text_atomic(sweep_dir / SUMMARY_MD, "\n".join([
        f"**Sweep**: {len(jobs)} job(s), {len(jobs) - failed} ok, {failed} failed",
        *([f"Every job: `{' '.join(sorted(shared))}`"] if shared else []), "", markdown_table(headers, rows), ""]))
    try:
        print(f"\nsweep: {len(jobs)} job(s), {len(jobs) - failed} ok, {failed} failed", flush=True)
        if shared:
            print("every job: " + " ".join(sorted(shared)))
        print(table(headers, rows))
        print(f"summary: {sweep_dir / SUMMARY_JSON}, {sweep_dir / SUMMARY_MD}"
              + (f", {sweep_dir / SUMMARY_PNG}" if plotted else ""), flush=True)
        if missing:
            print(f"{missing} job(s) of {expected} left no record: killed, or their launcher did not pass "
                  f"{SWEEP_ID_ENV} on (docs/sweeps.md); they are counted as failed", flush=True)
    except OSError as exc:
        # stdout closed (| head) or full: the summary files hold it all, and the exit status
        # below must not be lost with the table (Hydra turns a callback's error into a warning).
        note_lost(exc)
        flush_stdout()
    return jobs, failed, missing


# The records folder of a sweep holds this lock while its sweep's process lives (the kernel frees it
# when the process ends, however it ends): the next sweep in the folder removes records whose lock is free.
RECORDS_LOCK = "owner.lock"
# A records folder without its lock yet (being made by a sweep starting now) is left alone this long.
_YOUNG_SECONDS = 60.0


def _start_ray_here(launcher: Any) -> None:
    """Hydra's local Ray launcher starts Ray as it launches, and ``ray.init`` takes SIGTERM over in
    this process (Ray's handler exits 1, after a C++ stack dump): Ray is started here first, as
    the launcher would (its default ``object_store_memory`` included), so that the sweep's own
    handlers, installed after it, stop the sweep as under any other launcher. The launcher then
    finds Ray running and uses it."""
    import ray
    from omegaconf import OmegaConf

    if ray.is_initialized():
        return
    init = OmegaConf.to_container(launcher.ray.init, resolve=True) if launcher.get("ray") else {}
    init = dict(init or {})
    init.setdefault("object_store_memory", 78643200)
    ray.init(**init)


def _quiet_submitit_controllers() -> None:
    """Submitit's local launcher starts a controller per job (``python -m submitit.local._local``) in
    the terminal's process group: Ctrl-C reached it too, and it printed a KeyboardInterrupt
    traceback and ended its job before the job had cleaned up (a staging folder was left). Started
    with SIGINT ignored (kept through exec: Python leaves an ignored SIGINT ignored), it leaves the
    job to the signal the job gets itself and to the sweep, which passes it on
    (``_stop_the_jobs_on_signals``); the job sets its own handlers (exporter.process.watchdog)."""
    import signal

    from submitit.local import local

    original = local.start_controller
    if getattr(original, "quiet_on_sigint", False):
        return

    def start_controller(*args: Any, **kwargs: Any) -> Any:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return original(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)

    start_controller.quiet_on_sigint = True  # type: ignore[attr-defined]
    local.start_controller = start_controller


def _stop_the_jobs_on_signals() -> None:
    """In the sweep's process: a signal is passed on to the jobs running in the launcher's workers
    (joblib's loky processes, Submitit's local jobs), which stop as a single run does (staging
    removed, lock freed) and end; once they have, the sweep stops (exit 128 + the signal). The
    launcher's own teardown would kill them first, leaving their staging folders behind."""
    import signal

    from ..interrupts import STOP_SIGNALS, raise_interrupted
    from ..process.watchdog import stop_jobs

    stopping: list[int] = []

    def stop_the_jobs(signum: int, frame: Any) -> None:
        if not stopping:
            stopping.append(signum)
            # SIGHUP stops a job as SIGTERM does.
            stop_jobs(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM, os.environ.get(SWEEP_RECORDS_ENV))
        raise_interrupted(signum, frame)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_the_jobs)


def _hold_records(records: Path) -> None:
    """Make this sweep's records folder and hold its lock; remove the records folders of sweeps
    whose process is gone (SIGKILLed: they never reached their summary), by the rule the staging
    folders of builds follow (exporter.build.folder.remove_leftovers)."""
    from filelock import FileLock

    from ..files import remove_when_unlocked

    records.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(records / RECORDS_LOCK))
    lock.acquire()
    STARTED["records_lock"] = lock
    others = (other for other in records.parent.glob(".sweep-*") if other != records)
    for other in remove_when_unlocked(others, RECORDS_LOCK, _YOUNG_SECONDS):
        log.info("removed %s, left by a sweep that did not finish", other.name)


def undo_sweep_start() -> None:
    """A sweep that stopped before any job published a build (an override no job can compose, a
    signal): remove the multirun.yaml Hydra wrote for it, and its folder if that leaves it empty."""
    from ..build.folder import PUBLISHED

    sweep_dir = STARTED.get("dir")
    if sweep_dir is None or PUBLISHED or STARTED.get("published") or STARTED.get("had_multirun_yaml"):
        return
    records = os.environ.get(SWEEP_RECORDS_ENV)
    if records:
        shutil.rmtree(records, ignore_errors=True)
    (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
    try:
        sweep_dir.rmdir()  # only ever removes an empty folder
    except OSError:
        pass
