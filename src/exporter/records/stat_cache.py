"""The stat cache beside a build (``.<folder>.stat-cache.json`` next to its folder, as its lock): for the files its
build key hashed (its checkpoint, calibration file, model folder, model code) and the files of the
build itself, what ``stat`` said of each when it was last hashed, and the hash. The next "up to
date" check of the folder does not read those files again while ``stat`` says the same
(exporter.files.KnownHashes: device, inode, size, modification and change times), so an unchanged
500 MB model folder costs a few ``stat`` calls a night, not a read of 500 MB.

It is the tool's own note, no part of the build: never hashed, listed or published with the build,
nor stored in the build cache; a damaged or foreign one is ignored (every file is then read), and
``verify`` never uses it. A rebuild gives the folder new files (new inodes and times), which no
entry of the earlier build describes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..files import KNOWN, KnownHashes, write_json_atomic
from .layout import stat_cache_path

VERSION = 1


def adopt(folder: Path, known: KnownHashes = KNOWN) -> None:
    """What ``folder``'s stat cache says, into ``known`` (nothing when it is absent or unreadable)."""
    path = stat_cache_path(folder)
    try:
        with open(path, "rb") as f:
            written = os.fstat(f.fileno()).st_mtime_ns
            record = json.loads(f.read())
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and record.get("version") == VERSION and isinstance(record.get("files"), dict):
        known.adopt(record["files"], written)


def record(folder: Path, paths: Iterable[str], known: KnownHashes = KNOWN) -> None:
    """Write ``folder``'s stat cache: what ``known`` holds of ``paths`` (absolute) and of the folder's
    own files. Not written when there is nothing to say or nothing new; a failure to write is no
    failure of the build (the next check reads the files)."""
    folder = Path(folder).absolute()
    wanted = set(paths) | {str(p) for p in _files_in(folder)}
    entries = known.entries(wanted)
    if not entries:
        return
    path = Path(stat_cache_path(folder))
    try:
        current = json.loads(path.read_bytes())
    except (OSError, ValueError):
        current = None
    if isinstance(current, dict) and current.get("files") == entries:
        return
    try:
        write_json_atomic(path, {"version": VERSION, "files": entries}, durable=False)
    except OSError:
        pass


def _files_in(folder: Path) -> list[Path]:
    try:
        return list(folder.rglob("*"))
    except OSError:
        return []
