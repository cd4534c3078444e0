"""Writing files so that a crash never leaves a torn one behind."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# A file changed this recently when it was hashed is hashed again next time: its timestamps could
# still move within the file system's granularity (up to 2 s on FAT, 1 s on some network shares)
# without a change of size, as git's "racily clean" entries are.
RACY_NS = 2_000_000_000


class KnownHashes:
    """sha256 of files by what ``stat`` says of them, as git's index and Bazel's digest cache keep
    them: a file whose device, inode, size, modification and change times (nanoseconds) are those it
    had when it was hashed is not read again. The change time moves with every write, rename into
    place and ``chmod`` and cannot be set back by hand, so a file rewritten and given its old
    modification time is still read. A file is only remembered when its ``stat`` was the same before
    and after it was read, and it had not changed for ``RACY_NS`` when it was.

    One per process (``KNOWN``); entries come from the files this process hashed and from the ones
    a build folder recorded beside it (exporter.records.stat_cache)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[int, int, int, int, int], str]] = {}
        self.read = 0  # files read (hashed), as the "up to date" line reports them
        self._noting: list[set[str]] = []

    @contextmanager
    def noting(self) -> Iterator[set[str]]:
        """The paths of every file hashed (or found known) meanwhile, on any thread."""
        used: set[str] = set()
        self._noting.append(used)
        try:
            yield used
        finally:
            # By identity: two sets noting the same paths are equal.
            self._noting[:] = [other for other in self._noting if other is not used]

    def sha256(self, path: "str | Path") -> str:
        key = os.path.abspath(path)
        known = self._entries.get(key)
        if known is not None and known[0] == _stat_identity(os.stat(path)):
            for used in self._noting:
                used.add(key)
            return known[1]  # not even opened
        with open(path, "rb") as f:
            return self.sha256_open(f, key)

    def sha256_open(self, f: Any, key: str) -> str:
        """sha256 of the open file ``f`` (at its start), known as ``key`` (its absolute path)."""
        before = _stat_identity(os.fstat(f.fileno()))
        for used in self._noting:
            used.add(key)
        known = self._entries.get(key)
        if known is not None and known[0] == before:
            return known[1]
        started = time.time_ns()
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        self.read += 1
        after = _stat_identity(os.fstat(f.fileno()))
        if after == before and max(before[3], before[4]) < started - RACY_NS:
            self._entries[key] = (before, digest.hexdigest())
        return digest.hexdigest()

    def adopt(self, entries: Mapping[str, Any], written_ns: int) -> None:
        """Entries read from a record (``{path: [dev, ino, size, mtime_ns, ctime_ns, sha256]}``) written
        at ``written_ns`` (its own modification time): those of files that had not changed for
        ``RACY_NS`` by then. A malformed entry is skipped."""
        for path, entry in entries.items():
            try:
                ident = tuple(int(v) for v in entry[:5])
                digest = str(entry[5])
            except (TypeError, ValueError, IndexError):
                continue
            if len(ident) == 5 and len(digest) == 64 and max(ident[3], ident[4]) < written_ns - RACY_NS:
                self._entries.setdefault(os.path.abspath(path), (ident, digest))  # type: ignore[arg-type]

    def entries(self, paths: Optional[set[str]] = None) -> dict[str, list[Any]]:
        """What is known, as ``adopt`` reads it: every entry, or those of ``paths`` (absolute)."""
        return {path: [*ident, digest] for path, (ident, digest) in sorted(self._entries.items())
                if paths is None or path in paths}


KNOWN = KnownHashes()


def sha256_known(path: "str | Path") -> str:
    """sha256 of ``path``, not read again while ``stat`` says it is unchanged (``KnownHashes``)."""
    return KNOWN.sha256(path)


def unusable_link(path: Path) -> "str | None":
    """Why a symbolic link cannot be a folder's path (it points nowhere, or into a loop), or None.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> (d / "l").symlink_to("nowhere"); unusable_link(d / "l")
    'is a symbolic link to nowhere, which does not exist'
    >>> (d / "m").symlink_to("m"); unusable_link(d / "m")
    'is a symbolic link that loops (m -> m)'
    """
    import errno

    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
        return None
    except OSError as exc:
        target = os.readlink(path)
        if exc.errno == errno.ELOOP:
            return f"is a symbolic link that loops ({Path(path).name} -> {target})"
        return f"is a symbolic link to {target}, which does not exist"


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system under ``folder`` (or its nearest existing
    parent) takes: 255 on Linux's file systems."""
    for candidate in (Path(folder), *Path(folder).parents):
        try:
            return int(os.pathconf(candidate, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return 255


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ordinary_permissions(path: Path) -> None:
    """Give a file the permissions an ordinary open() would (0666 less the umask): some writers
    (ONNX's external data, safetensors) create theirs 0600, unreadable to the users a build ships to."""
    os.chmod(path, 0o666 & ~_umask())


def write_text_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Write to a temporary file in the same folder, then rename it into place. ``durable``: flushed
    to the disk before the rename (a record a crash must not lose; not a sweep's scratch record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions an ordinary open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n", durable)


def move_files(source: Path, destination_dir: Path) -> dict[str, Path]:
    """Move every file of ``source`` into ``destination_dir`` (same filesystem: each a rename)."""
    moved = {}
    for item in sorted(source.iterdir()):
        target = destination_dir / item.name
        os.replace(item, target)
        moved[item.name] = target
    return moved


@contextmanager
def working_directory(path: Path) -> Iterator[Path]:
    """Run a toolchain call that writes files into the current directory (ONNX Runtime's symbolic
    shape inference writes ``sym_shape_infer_temp.onnx`` and ``<uuid>.data`` there, and leaves them
    when it gives up) with ``path`` as the current directory; restored on every exit.

    The working directory belongs to the whole process: while the call runs, a relative path used by
    another thread (a user's, say) resolves inside ``path`` too. Keep the block to the call itself.
    """
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(saved)


# Files libraries write into the temporary folder whatever the tool does: ONNX Runtime's session id
# file (``.ses``, written as onnxruntime is imported) and torch's inductor cache folder (made, empty,
# as transformers loads a model). A run removes those it created (library_litter_noted at its start).
def _library_litter() -> list[Path]:
    import getpass
    import tempfile

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    folder = Path(tempfile.gettempdir())
    return [folder / ".ses", folder / f"torchinductor_{user}"]


_ABSENT_AT_START: list[Path] = []


def library_litter_noted() -> None:
    """At the start of a run: note which of those files do not exist yet."""
    _ABSENT_AT_START[:] = [path for path in _library_litter() if not os.path.lexists(path)]


def remove_library_litter() -> None:
    """At the end of a run: remove what the libraries created meanwhile (a folder only while
    empty: a cache that holds something is left alone)."""
    for path in _ABSENT_AT_START:
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            elif path.is_file():
                path.unlink()
        except OSError:
            pass


def remove_when_unlocked(folders: Iterator[Path], lock_name: str, unlocked_after: float) -> list[Path]:
    """Remove each of ``folders`` whose process is gone: it holds its lock file ``lock_name`` (an
    ``flock``, freed by the kernel however the process ended) and that lock can be taken now, or it
    holds none and has not changed for ``unlocked_after`` seconds (a folder being made right now
    has no lock yet). Symbolic links and other users' folders are left alone. The removed folders."""
    import shutil
    import time

    from filelock import FileLock, Timeout

    removed = []
    for folder in folders:
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            if not (folder / lock_name).exists():
                if time.time() - folder.stat().st_mtime > unlocked_after:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
                continue
            lock = FileLock(str(folder / lock_name))
            lock.acquire(timeout=0)
        except (OSError, Timeout):
            continue  # its process runs
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            lock.release()
    return removed
