"""One export job: plan -> each format (export, load back, compare) -> records -> publish.

The command line (``cli.py``) and the Python API (``api.py``) both build an ``ExportJob`` and call
``run_export``. This module names no format: the plan (``plan.py``) builds the exporters through
the format registry, ``build_artifact.py`` builds each one through the ``FormatExporter`` surface,
and ``metadata.build_metadata`` writes what they report.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ..errors import ExportError
from ..files import sha256_of, write_json_atomic, write_text_atomic
from ..records.layout import CONFIG_SNAPSHOT_FILE, LOG_FILE, METADATA_FILE
from .artifact import build_artifact, check_parts_together, trace_log
from .folder import BuildTransaction, failed_folder, lost_formats, toolchain_sandbox
from .job import ArtifactRecord, ArtifactResult, ExportJob, ExportResult
from .metadata import build_metadata
from .plan import plan_job, plans_of

__all__ = ["ArtifactRecord", "ArtifactResult", "ExportJob", "ExportResult", "run_export"]

log = logging.getLogger("exporter")


def run_export(job: ExportJob) -> ExportResult:
    """Build, check and record every requested format, then publish the build folder in one step.

    Raises ConfigError before touching the folder when the job itself is invalid. A failing format
    is recorded and the others are still built. Until the publish, the folder keeps the previous
    build whole: whatever stops the job (an error, a full disk, a signal) leaves it as it was.
    """
    started = time.perf_counter()
    was_training = job.model.training
    export_dir = Path(job.export_dir)
    kept: Optional[Path] = None
    lost: list[str] = []
    try:
        with held_back() as planning:  # the calibration warning, say: logged before export.log exists
            plans = plan_job(job)
        with BuildTransaction(export_dir, wait=job.wait) as txn, _job_log(txn.build / LOG_FILE, planning):
            try:
                results = {}
                with toolchain_sandbox(txn.work):
                    for name in job.formats:
                        building = plans_of(plans, name)  # one plan, or one per part (encoder, decoder)
                        for plan in building:
                            artifact = plan.artifacts[name]
                            results[artifact.key] = build_artifact(plan, artifact, txn, _disk_full)
                        if len(building) > 1:
                            check_parts_together(building, name, results, txn)
                metadata = build_metadata(job, plans, results, time.perf_counter() - started)
                records = {}
                if job.snapshot_yaml:
                    records[CONFIG_SNAPSHOT_FILE] = job.snapshot_yaml
                records.update(job.extra_files)
                for relative, text in records.items():
                    write_text_atomic(txn.build / relative, text)
                from ..records.tables import closing_table

                log.info("\n%s", closing_table(metadata))
                _close_job_log()
                # metadata.json comes last and hashes the other records, export.log included.
                metadata["records"] = {name: sha256_of(txn.build / name) for name in [*records, LOG_FILE]}
                write_json_atomic(txn.build / METADATA_FILE, metadata)
            except Exception as exc:
                if _disk_full(exc, txn.work):
                    raise _disk_full_error(export_dir) from None
                raise
            # A format that failed here but was ok in the build the folder holds: that build stays,
            # and this run's goes beside it (docs/reliability.md, "A failed run loses no good artifact").
            lost = lost_formats(txn.previous_build(), metadata)
            if lost:
                kept = export_dir
                export_dir = failed_folder(export_dir)
                txn.publish(into=export_dir)  # each door says so (kept_message)
            else:
                txn.publish()
                txn.remove_failed_result()
    except OSError as exc:
        # Staging itself (its folders, export.log) on a disk out of space or out of inodes.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full_error(export_dir) from None
        raise
    finally:
        job.model.train(was_training)
    artifacts = {name: replace(r, path=export_dir / r.path.name) if r.path else r for name, r in results.items()}
    return ExportResult(export_dir=export_dir, metadata_path=export_dir / METADATA_FILE, artifacts=artifacts,
                        metadata=metadata, kept=kept, lost=lost)


# Less free space than this where the build is staged, after a failure: the disk was the cause.
_DISK_FULL_BYTES = 64 * 1024
_FILE_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
_open_handlers: list[logging.Handler] = []


@contextmanager
def _job_log(path: Path, earlier: Sequence[logging.LogRecord] = ()):
    """The job's log inside the staged build (export.log), for both doors: what the console
    showed (``earlier``: what it showed before the build folder was staged), plus the tracebacks
    of failed formats."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FILE_LOG_FORMAT))
    for record in earlier:
        handler.handle(record)
    with _at_info():
        for logger in (log, trace_log):
            logger.addHandler(handler)
        _open_handlers.append(handler)
        try:
            yield
        finally:
            _close_job_log()


@contextmanager
def held_back() -> Iterator[list[logging.LogRecord]]:
    """The records the job logs meanwhile (they still reach the console), kept for export.log.
    Nested in another one (the command line's, around the job's composition), the outer one's list:
    export.log then begins with what the command line logged before the job was built."""
    if _holding:
        yield _holding[-1]
        return
    held: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = held.append  # type: ignore[method-assign]
    _holding.append(held)
    with _at_info():
        log.addHandler(handler)
        try:
            yield held
        finally:
            log.removeHandler(handler)
            _holding.pop()


_holding: list[list[logging.LogRecord]] = []


@contextmanager
def _at_info() -> Iterator[None]:
    """The tool's logger at INFO at least (export.log is complete whatever the console shows)."""
    saved = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.setLevel(saved)


def kept_message(result: ExportResult) -> str:
    """What a run says when its folder kept the earlier build (``ExportResult.kept``)."""
    lost = ", ".join(result.lost)
    return (f"{result.kept} keeps its earlier build, in which {lost} {'was' if len(result.lost) == 1 else 'were'} "
            f"ok; this run's build, in which {lost} failed, is in {result.export_dir}")


def _close_job_log() -> None:
    """Detach and close the job's log file (before publishing: a published build is not written)."""
    while _open_handlers:
        handler = _open_handlers.pop()
        for logger in (log, trace_log):
            logger.removeHandler(handler)
        try:
            handler.close()
        except OSError:
            # A full disk: the log's last lines are lost with the staged build, which a failed write
            # never publishes; the error that stopped the job is the one to report, not this one.
            pass


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
    earlier = ("the previous build is intact" if (Path(export_dir) / METADATA_FILE).is_file()
               else "the folder holds no build")
    return ExportError(f"no space left on the device of {export_dir} while staging the build; nothing was "
                       f"published and {earlier}; free some space and run again")
