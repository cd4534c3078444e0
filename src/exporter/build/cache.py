"""The shared build cache (``cache.dir``, ``EXPORTER_CACHE_DIR``): finished builds by build key, in a
folder that CI runners and cluster nodes share, as build systems keep one.

Layout (version 1)::

    <cache.dir>/exporter-cache-v1/
        ab/<build key>/entry.json     who stored it, when, from where, its size (the tool's mark)
        ab/<build key>/build/         the build folder as it was published: artifacts, metadata.json, records
        tmp/                          entries being stored, entries being evicted

A job whose key has an entry restores it into its own folder (``restore``): every artifact file is
copied and hashed on the way against the entry's metadata.json, this job's records (config.yaml,
.hydra/, export.log) are written beside them, metadata.json describes this job (its folder, sweep,
time) and where the build came from (``restored_from``), and the folder is published in one step,
as any build is (``BuildTransaction``). An entry that does not hash as its records say, whose
metadata's build key is not its own, or that lacks the tool's mark, is refused (and the job builds):
never trusted.

A job that built ok stores its folder (``store``): copied, each file hashed against its record, into
a folder of its own under ``tmp/``, then renamed into place, so that a half-stored entry is never seen
and, of two machines storing one key at once, the first rename wins and the other's copy is dropped.
Failed builds, and builds that are never up to date (a calibration dataset), are not stored.
``cache.max_bytes`` evicts the least recently used entries (a restore counts as a use) after a store.

The cache holds what its writers put there: give its folder to machines and people you trust with
your builds, as you would a Bazel or sccache remote cache. A remote store (S3, GCS through fsspec)
fits behind the same three operations (``lookup``, ``fetch`` a file, ``put`` a folder); this module
implements the local (or shared file system) one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import ExportError
from ..files import ordinary_permissions, sha256_of, write_json_atomic, write_text_atomic
from ..records.layout import LOG_FILE, METADATA_FILE, written_by_a_build

log = logging.getLogger("exporter")

LAYOUT = "exporter-cache-v1"
ENTRY_FILE = "entry.json"
TOOL = "exporter"
# Entries being stored or evicted by a process that died: removed once this old.
_STALE_SECONDS = 3600
_BLOCK = 1 << 20


class CacheRefused(Exception):
    """An entry the cache holds that is not a sound build of this key (the message says why)."""


@dataclass(frozen=True)
class CacheSettings:
    """The ``cache`` node of a job's config, checked."""

    dir: Optional[Path]
    read: bool = True
    write: bool = True
    max_bytes: Optional[int] = None

    @classmethod
    def of(cls, node: Optional[Mapping[str, Any]]) -> "CacheSettings":
        node = node or {}
        folder = node.get("dir")
        return cls(dir=Path(os.path.expanduser(str(folder))).absolute() if folder not in (None, "") else None,
                   read=bool(node.get("read", True)), write=bool(node.get("write", True)),
                   max_bytes=None if node.get("max_bytes") is None else int(node["max_bytes"]))

    @property
    def enabled(self) -> bool:
        return self.dir is not None and (self.read or self.write)


class LocalStore:
    """A cache folder on a local or shared file system (NFS, Lustre, a mounted bucket with POSIX
    renames)."""

    def __init__(self, root: Path):
        self.root = Path(root) / LAYOUT
        self.tmp = self.root / "tmp"

    def entry(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a build key: {key!r}")
        return self.root / key[:2] / key

    def lookup(self, key: str) -> Optional[Path]:
        """The entry's build folder, or None when the cache holds no build of ``key``."""
        entry = self.entry(key)
        return entry / "build" if (entry / ENTRY_FILE).is_file() else None

    def used(self, key: str) -> None:
        """Mark the entry as just used (eviction removes the least recently used first)."""
        try:
            os.utime(self.entry(key) / ENTRY_FILE)
        except OSError:
            pass

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last used, bytes, entry folder) of every entry."""
        found = []
        for shard in sorted(self.root.glob("??")):
            for entry in shard.iterdir():
                try:
                    mark = entry / ENTRY_FILE
                    used = mark.stat().st_mtime
                    size = int(json.loads(mark.read_bytes()).get("bytes", 0))
                except (OSError, ValueError, AttributeError):
                    continue
                found.append((used, size, entry))
        return found

    def remove(self, entry: Path) -> None:
        """Take ``entry`` out of the cache at once (a rename), then delete it."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        aside = self.tmp / f"evicted-{uuid.uuid4().hex}"
        try:
            os.rename(entry, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def evict(self, max_bytes: int) -> list[str]:
        """Remove the least recently used entries until the cache holds at most ``max_bytes``; the
        keys removed. Stale leftovers of dead processes go too."""
        self._remove_stale()
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, entry in entries:
            if total <= max_bytes:
                break
            self.remove(entry)
            total -= size
            removed.append(entry.name)
        return removed

    def _remove_stale(self) -> None:
        if not self.tmp.is_dir():
            return
        now = time.time()
        for leftover in self.tmp.iterdir():
            try:
                if now - leftover.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(leftover, ignore_errors=True)
            except OSError:
                continue


def _copy_hashed(source: Path, target: Path, durable: bool = True) -> str:
    """Copy ``source`` (a regular file, not a link) to ``target``; the sha256 of the bytes copied.
    ``durable``: flushed to the disk here (a restore's files are, with the rest of the build, as it
    is published)."""
    import errno
    import stat

    digest = hashlib.sha256()
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CacheRefused(f"{source.name} is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CacheRefused(f"{source.name} is not a regular file")
        with open(target, "xb") as dst:
            for block in iter(lambda: src.read(_BLOCK), b""):
                digest.update(block)
                dst.write(block)
            if durable:
                dst.flush()
                os.fsync(dst.fileno())
    ordinary_permissions(target)
    return digest.hexdigest()


def _artifact_files(metadata: Mapping[str, Any]) -> dict[str, str]:
    """file name -> recorded sha256 of every artifact file of a build that ended ok (its data files and
    model-folder files too). CacheRefused for a record no build of this tool writes."""
    files: dict[str, str] = {}
    for fmt, record in (metadata.get("artifacts") or {}).items():
        artifact = record.get("file")
        listed = [record, *(record.get("extra_files") or [])]
        for item in listed:
            name, sha = item.get("file"), item.get("sha256")
            if not isinstance(name, str) or not isinstance(sha, str) or "/" in name or name in (".", "..") \
                    or not written_by_a_build(name, artifact):
                raise CacheRefused(f"its metadata.json lists {name!r} for {fmt}, which no build of this tool writes")
            files[name] = sha.lower()
    return files


def _sound_metadata(folder: Path, key: Optional[str] = None) -> dict[str, Any]:
    """The metadata.json of a build folder, when it is a finished ok build of ``key`` (default: the
    key it records) whose key is the hash of its own recorded inputs; CacheRefused otherwise."""
    from ..config.build_key import build_key, reusable
    from ..records.read import BuildUnreadable, read_metadata

    try:
        metadata = read_metadata(folder)
    except BuildUnreadable as exc:
        raise CacheRefused(str(exc)) from None
    inputs, key = metadata.get("build_key_inputs"), key or metadata.get("build_key")
    if metadata.get("build_key") != key or not isinstance(inputs, dict) or build_key(inputs) != key:
        raise CacheRefused("its metadata.json is not that of a build of this key")
    if metadata.get("status") != "ok" or not reusable(inputs):
        raise CacheRefused("it is not a finished build that ended ok")
    for fmt, record in metadata["artifacts"].items():
        if record.get("status") != "ok" or (record.get("validation") or {}).get("passed") is False:
            raise CacheRefused(f"its metadata.json says the build is ok, but not its {fmt} artifact")
    return metadata


def store(settings: CacheSettings, folder: Path) -> Optional[str]:
    """Store the build published in ``folder`` (when it ended ok and can be reused) under its build
    key; the line that says what happened, or None when it was not stored. Never fails the job: a
    cache that cannot be written is a warning."""
    if settings.dir is None or not settings.write:
        return None
    store_ = LocalStore(settings.dir)
    try:
        metadata = _sound_metadata(folder)
        key = metadata["build_key"]
        if store_.lookup(key) is not None:
            store_.used(key)
            return f"cache: {key[:12]} is in {settings.dir} already"
        if store_.entry(key).exists():
            # A folder under the key without the tool's mark (a half-removed entry, another tool's
            # folder): no entry of ours; it makes way for a sound one.
            log.warning("warning: the cache's folder for key %s has no %s: removed", key[:12], ENTRY_FILE)
            store_.remove(store_.entry(key))
        files = _artifact_files(metadata)
        records = {name: str(sha).lower() for name, sha in (metadata.get("records") or {}).items()}
        store_.tmp.mkdir(parents=True, exist_ok=True)
        staging = store_.tmp / f"{key}-{socket.gethostname()[:28]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        (staging / "build").mkdir(parents=True)
        try:
            size = 0
            for name, recorded in {**files, **records}.items():
                target = staging / "build" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if _copy_hashed(folder / name, target) != recorded:
                    raise CacheRefused(f"{folder / name} changed since it was recorded")
                size += target.stat().st_size
            shutil.copyfile(folder / METADATA_FILE, staging / "build" / METADATA_FILE)
            size += (staging / "build" / METADATA_FILE).stat().st_size
            write_json_atomic(staging / ENTRY_FILE, {
                "tool": TOOL, "layout": LAYOUT, "build_key": key, "bytes": size,
                "stored_at": _now(), "host": socket.gethostname(), "from": str(folder.absolute())})
            entry = store_.entry(key)
            entry.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, entry)
                said = f"cache: stored as {key[:12]} in {settings.dir}"
            except OSError:
                if store_.lookup(key) is None:
                    raise
                # Another machine stored the same key meanwhile: its entry stands, ours goes.
                said = f"cache: {key[:12]} is in {settings.dir} already (another build stored it meanwhile)"
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if settings.max_bytes is not None:
            for evicted in store_.evict(settings.max_bytes):
                log.info("cache: evicted %s (cache.max_bytes=%d)", evicted[:12], settings.max_bytes)
            if store_.lookup(key) is None:
                said = f"cache: {key[:12]} was stored, then evicted: cache.max_bytes={settings.max_bytes} holds less than it"
        return said
    except (OSError, CacheRefused) as exc:
        log.warning("warning: the build was not stored in the cache %s: %s", settings.dir, exc)
        return None


def restore(settings: CacheSettings, key: str, target: Path, *, records: Mapping[str, str],
            described: Mapping[str, Any], wait: bool) -> Optional[dict[str, Any]]:
    """Restore the cached build of ``key`` into ``target`` as this job's build: its metadata.json as
    published, or None when the cache holds no sound build of ``key`` (a refused entry is said, and
    removed). ``records``: this job's record files (config.yaml, .hydra/*) by relative name;
    ``described``: what metadata.json says of this job (``config``, ``sweep``)."""
    from .folder import BuildTransaction

    if settings.dir is None or not settings.read:
        return None
    store_ = LocalStore(settings.dir)
    source = store_.lookup(key)
    if source is None:
        return None
    started = time.perf_counter()
    try:
        mark = json.loads((store_.entry(key) / ENTRY_FILE).read_bytes())
        if not isinstance(mark, dict) or mark.get("tool") != TOOL or mark.get("build_key") != key:
            raise CacheRefused(f"{ENTRY_FILE} is not this tool's mark for this key")
        stored = _sound_metadata(source, key)
        files = _artifact_files(stored)
        with BuildTransaction(target, wait=wait) as txn:
            for name, recorded in files.items():
                if _copy_hashed(source / name, txn.build / name, durable=False) != recorded:
                    raise CacheRefused(f"{name} does not hash as its record says (damaged)")
            metadata = _describe_restored(stored, key, mark, described)
            log_text = (f"restored from the build cache {settings.dir} (build key {key}), built "
                        f"{stored.get('exported_at')} on {mark.get('host')}; no model was built or checked in this run: "
                        f"the artifacts are those that build checked, byte for byte\n")
            # Not flushed file by file: the publish flushes the whole staged build before it swaps it in.
            for relative, text in {**records, LOG_FILE: log_text}.items():
                write_text_atomic(txn.build / relative, text, durable=False)
            metadata["records"] = {name: sha256_of(txn.build / name) for name in [*records, LOG_FILE]}
            metadata["total_seconds"] = round(time.perf_counter() - started, 3)
            write_json_atomic(txn.build / METADATA_FILE, metadata, durable=False)
            txn.publish()
            txn.remove_failed_result()
        store_.used(key)
        return metadata
    except (CacheRefused, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        log.warning("warning: the cache's build of key %s is refused (%s); building instead", key[:12], exc)
        if isinstance(exc, CacheRefused):
            store_.remove(store_.entry(key))
        return None
    except ExportError:
        raise
    except OSError as exc:
        log.warning("warning: cannot restore from the cache %s (%s); building instead", settings.dir, exc)
        return None


def _describe_restored(stored: Mapping[str, Any], key: str, mark: Mapping[str, Any],
                       described: Mapping[str, Any]) -> dict[str, Any]:
    """The stored metadata.json made this job's: its time, its config's origin and its place in a
    sweep, and where the build came from."""
    metadata = dict(stored)
    metadata["restored_from"] = {"build_key": key, "exported_at": stored.get("exported_at"),
                                 "host": mark.get("host"), "stored_at": mark.get("stored_at"),
                                 "total_seconds": stored.get("total_seconds")}
    metadata["exported_at"] = _now()
    metadata.pop("sweep", None)
    for name, value in described.items():
        if value is not None:
            metadata[name] = value
    return metadata


def _now() -> str:
    from .metadata import utc_now

    return utc_now()
