"""A build folder as one transaction: locked, staged beside the target, published in one step.

Every file of a build (artifacts, ``metadata.json``, ``config.yaml``, ``export.log``, ``.hydra/``) is
written into a staging folder next to the target and nowhere else; toolchain scratch files go to a
work folder beside it. Publishing exchanges the staged folder with the target in one ``renameat2``
call (``RENAME_EXCHANGE``), so at every instant the target path holds one complete build, the old
one or the new one, never a mix. A lock per target (``filelock``: ``flock`` on Unix, released by the
kernel when a process dies) keeps two builds of one folder apart; whoever holds it removes what dead
runs left behind. ``docs/reliability.md`` describes the guarantee.

Layout next to a target ``exports/simple_cnn/onnx-none``::

    exports/simple_cnn/.onnx-none.lock                      the lock (stays; empty)
    exports/simple_cnn/.onnx-none.staging-<host>-<pid>-<x>/ one run's staging root, removed at exit
        build/                                              becomes the target on publish
        work/                                               scratch: per-format builds, toolchain files

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> with BuildTransaction(root / "b") as txn:
    ...     _ = (txn.build / "metadata.json").write_text("{}")
    ...     txn.publish()
    >>> sorted(p.name for p in (root / "b").iterdir())
    ['metadata.json']
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import ConfigError, ExportError
from ..files import name_max, unusable_link
from ..formats.registry import registered_formats
from ..interrupts import INTERRUPTED, PUBLISHED, Interrupted, signals_deferred  # noqa: F401 (INTERRUPTED: for build_artifact)
from ..records.layout import HYDRA_SUBDIR, LOG_FILE, METADATA_FILE, RECORD_NAMES

log = logging.getLogger("exporter")

# Entries a folder may hold and still count as an earlier build (anything else is the user's).
_BUILD_ENTRIES = RECORD_NAMES
_STAGING = ".staging-"
FAILED_SUFFIX = ".failed"
# Artifact statuses of a good artifact: one a failed run never replaces.
GOOD = ("ok", "unchecked")


class BuildLocked(ExportError):
    """Another build of the same folder holds the lock and the job was told not to wait."""


# The names a build folder's own take beside it are longer by at most this many bytes: the staging
# root ``.<name>.staging-<host, 28 at most>-<pid>-<8 random>``, the lock ``.<name>.lock``, the stat cache
# ``.<name>.stat-cache.json`` and
# ``<name>.failed``. A name must leave that room under the file system's limit (NAME_MAX).
_NAME_ROOM = 1 + len(_STAGING) + 28 + 1 + 7 + 1 + 8


def longest_name(parent: Path) -> int:
    """The longest build folder name (bytes) the file system under ``parent`` leaves room for."""
    return name_max(parent) - _NAME_ROOM


def lock_path(target: Path) -> Path:
    """The lock of a build folder: a hidden file beside it (the folder itself is swapped whole)."""
    return target.parent / f".{target.name}.lock"


def failed_folder(target: Path) -> Path:
    """Where a run keeps its build when a format failed that was ok in the target's build, which it
    must not replace: ``exports/good`` -> ``exports/good.failed``."""
    return target.with_name(target.name + FAILED_SUFFIX)


def lost_formats(previous: Optional[dict], metadata: dict) -> list[str]:
    """The formats that failed in ``metadata`` (this run) and were ok in ``previous`` (the build the
    target holds): publishing would lose them.

    >>> lost_formats({"artifacts": {"onnx": {"status": "ok"}, "pytorch": {"status": "failed"}}},
    ...              {"artifacts": {"onnx": {"status": "failed"}, "pytorch": {"status": "failed"}}})
    ['onnx']
    >>> lost_formats(None, {"artifacts": {"onnx": {"status": "failed"}}})
    []
    """
    before = (previous or {}).get("artifacts") or {}
    return [name for name, record in (metadata.get("artifacts") or {}).items()
            if record.get("status") == "failed" and isinstance(before.get(name), dict)
            and before[name].get("status") in GOOD]


def staging_prefix(target: Path) -> str:
    return f".{target.name}{_STAGING}"


def _owner_of(name: str, prefix: str) -> str:
    """'pid 123 on host' from a staging folder name ``.<target>.staging-<host>-<pid>-<random>``."""
    parts = name[len(prefix):].split("-")
    # The host name may hold dashes; the pid and mkdtemp's random suffix never do.
    if len(parts) >= 3 and parts[-2].isdigit():
        return f"pid {parts[-2]} on {'-'.join(parts[:-2])}"
    return "another process"


def artifact_names() -> set[str]:
    """Names the registered formats give their artifacts (``FormatExporter.file_names``): an earlier
    build of ours may hold one it no longer lists (a build by an older version that did not remove
    files of dropped formats)."""
    return {name for cls in registered_formats().values() for name in cls.file_names()}


def _our_metadata(target: Path) -> Optional[dict]:
    """The folder's metadata.json if this tool wrote it (its shape says so), else None. Only a
    regular file is read: a FIFO in its place would block the build forever."""
    if not (target / METADATA_FILE).is_file():
        return None
    try:
        metadata = json.loads((target / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (isinstance(metadata, dict) and "schema_version" in metadata and isinstance(metadata.get("artifacts"), dict)
            and "exporter" in (metadata.get("environment") or {})):
        return metadata
    return None


def check_path(target: Path, key: str = "export_dir") -> None:
    """Refuse a build folder path that cannot be one: a symbolic link to nowhere or into a loop (in
    it or above it), a name longer than the names beside it that a build takes leave room for."""
    target = Path(target)
    for folder in (target, *target.parents):
        problem = unusable_link(folder)
        if problem:
            raise ConfigError(f"{key}: {folder} {problem}; point it at a folder, or remove it and choose "
                              "that path again")
    longest = longest_name(target.parent)
    for part in target.parts:
        size = len(os.fsencode(part))
        if size > longest:
            raise ConfigError(
                f"{key}: the folder name {part[:24]}... is {size} bytes long; a build stages itself beside its "
                f"folder under a longer name, so a build folder's name is at most {longest} bytes here (the file "
                f"system takes {name_max(target.parent)}): choose a shorter name")


def check_target(target: Path) -> None:
    """Refuse a target that is a file, the working directory (or holds it), or holds anything but an
    earlier build of this tool: publishing replaces the whole folder, so anything else would be lost."""
    check_path(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"export_dir: {target} is a file, not a folder; choose a folder path")
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    resolved = target.resolve()
    if cwd is not None and (cwd == resolved or resolved in cwd.parents):
        raise ConfigError(
            f"export_dir: {target} is the working directory or holds it; a build replaces its whole folder, so it "
            "must be a folder of its own (e.g. export_dir=exports/run_1; with Hydra, leave hydra.job.chdir false)")
    if not target.is_dir():
        return
    metadata = _our_metadata(target)
    if metadata is None and (target / METADATA_FILE).exists():
        raise ConfigError(
            f"export_dir: {target / METADATA_FILE} cannot be read as a build record of this tool, so {target} is "
            "not recognisable as an earlier build and will not be replaced; check the folder, remove it if it is "
            "a damaged build of yours, or choose another export_dir")
    allowed = {HYDRA_SUBDIR, LOG_FILE}  # what Hydra itself leaves in a job folder
    if metadata is not None:
        allowed |= _BUILD_ENTRIES | artifact_names()
        for record in metadata["artifacts"].values():
            if isinstance(record, dict):
                allowed.add(str(record.get("file")))
                allowed.update(str(extra.get("file")) for extra in record.get("extra_files") or [] if isinstance(extra, dict))
    foreign = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in target.iterdir()
                     if entry.name not in allowed and not entry.name.startswith(_STAGING))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" ... (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
        raise ConfigError(
            f"export_dir: {target} holds files that are not part of a build of this tool ({shown}); a build "
            "replaces the whole folder, so export_dir must be a new or empty folder or an earlier build: "
            "choose another export_dir"
        )


# ----------------------------------------------------------------------------- publishing

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Optional[Callable]:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``). False when the platform or
    the filesystem cannot; OSError for anything else (e.g. ENOENT when ``b`` vanished)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_tree(folder: Path) -> None:
    """Flush the staged files and folders, so a power cut after the swap cannot show empty files."""
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data files are flushed already
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the transaction

class BuildTransaction:
    """Lock ``target``, stage a build beside it, publish it in one step, clean up on every exit.

    ``wait``: when another build of the same folder holds the lock, wait for it (saying for whom)
    or, with ``wait=False``, raise ``BuildLocked`` at once.
    """

    def __init__(self, target: Path, wait: bool = True):
        target = Path(target)
        # A symbolic link to a build folder: build the folder it points to, keep the link.
        self.target = Path(os.path.realpath(target)) if target.is_symlink() and target.is_dir() else \
            Path(os.path.abspath(target))
        self.parent = self.target.parent
        self.wait = wait
        self.root: Optional[Path] = None
        self.published = False
        self._lock = None

    @property
    def build(self) -> Path:
        """The folder that becomes the target: write every file of the build here."""
        assert self.root is not None, "not entered"
        return self.root / "build"

    @property
    def work(self) -> Path:
        """Scratch space on the same filesystem, never published."""
        assert self.root is not None, "not entered"
        return self.root / "work"

    def __enter__(self) -> "BuildTransaction":
        check_target(self.target)
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"export_dir: cannot create {self.parent}: {exc.strerror or exc}") from None
        self._acquire()
        try:
            check_target(self.target)  # again under the lock: the folder may have changed while waiting
            remove_leftovers(self.parent, own=self.target)
            prefix = f"{staging_prefix(self.target)}{socket.gethostname()[:28]}-{os.getpid()}-"
            # The folder and the name that removes it come into being together: a signal just after
            # mkdtemp, before the assignment, left the staging folder behind (a burst of Ctrl-C
            # timed to its appearance did, under load).
            with signals_deferred():
                self.root = Path(tempfile.mkdtemp(prefix=prefix, dir=self.parent))
            self.build.mkdir()
            self.work.mkdir()
        except BaseException:
            self._cleanup()
            raise
        return self

    def _acquire(self) -> None:
        from filelock import FileLock, Timeout

        path = lock_path(self.target)
        try:
            # Create it first: filelock would keep polling a lock file it cannot create.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        except OSError as exc:
            raise ExportError(f"export_dir: cannot create the lock {path}: {exc.strerror or exc}") from None
        self._lock = FileLock(str(path))
        try:
            self._lock.acquire(timeout=0)
            return
        except Timeout:
            pass
        holder = self.holder()
        if not self.wait:
            raise BuildLocked(f"{self.target} is being built by {holder}; not waiting (wait=false). "
                              "Run again when it ends, or leave wait=true to queue behind it")
        log.info("waiting for %s, which is building %s ...", holder, self.target)
        self._lock.acquire()
        log.info("lock on %s acquired", self.target)

    def holder(self) -> str:
        """Who builds the target now, read from the staging folder name of the lock holder."""
        prefix = staging_prefix(self.target)
        # Dead runs may have left theirs too: the newest is the lock holder's.
        roots = sorted(self.parent.glob(f"{prefix}*"), key=lambda p: p.stat().st_mtime)
        return _owner_of(roots[-1].name, prefix) if roots else "another process"

    def publish(self, into: Optional[Path] = None) -> None:
        """Make the staged build the target (or ``into``: the ``failed_folder`` beside it, under
        the target's lock), in one atomic step (see the module docstring)."""
        into = self.target if into is None else into
        if into != self.target:
            check_target(into)
        if INTERRUPTED:
            # A signal a library caught and swallowed (torch.export's tracing catches what is raised in
            # it) still stops the build: nothing is published after a stop was asked for.
            raise Interrupted(INTERRUPTED[-1])
        _fsync_tree(self.build)
        with signals_deferred():
            self._swap(into)
            self.published = True
            PUBLISHED.append(into)
        _fsync_dir(self.parent)

    def _swap(self, into: Path) -> None:
        for _ in range(5):
            try:
                if into.exists() or into.is_symlink():
                    if exchange(self.build, into):
                        return
                    # No atomic exchange here: two renames, with a moment in which the target is
                    # absent (never mixed); a run that dies in between is rolled back by the next.
                    if into == self.target:
                        os.rename(into, self.root / "previous")
                    else:
                        os.rename(into, self.root / "replaced")
                os.rename(self.build, into)
                return
            except FileNotFoundError:
                continue  # the (empty) target was removed under us: rename instead of exchange
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue  # an empty target appeared (another process's Hydra mkdir): exchange
                raise
        raise ExportError(f"could not publish the build into {into}: it keeps changing")

    def previous_build(self) -> Optional[dict]:
        """The metadata.json of the build the target holds now (under the lock), or None."""
        return _our_metadata(self.target) if self.target.is_dir() else None

    def remove_failed_result(self) -> None:
        """After a publish into the target: the result an earlier failed run kept beside it
        (``failed_folder``) describes a build that is no longer the question; remove it."""
        aside = failed_folder(self.target)
        if aside.is_dir() and not aside.is_symlink() and _our_metadata(aside) is not None:
            shutil.rmtree(aside, ignore_errors=True)
            log.info("removed %s, the result of an earlier failed run", aside)

    def __exit__(self, *exc_info) -> None:
        with signals_deferred():
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
        finally:
            if self._lock is not None and self._lock.is_locked:
                self._lock.release()


def remove_leftovers(parent: Path, own: Optional[Path] = None) -> list[Path]:
    """Remove staging folders of dead runs in ``parent``. Those of ``own`` (whose lock the caller
    holds) go at once; those of other targets only when their lock can be taken right now.
    A dead run that had moved its target aside (two-rename fallback) gets it back first."""
    from filelock import FileLock, Timeout

    removed: list[Path] = []
    by_target: dict[str, list[Path]] = {}
    for entry in parent.iterdir():
        name = entry.name
        if name.startswith(".") and _STAGING in name and entry.is_dir():
            by_target.setdefault(name[1:name.index(_STAGING)], []).append(entry)
    for target_name, roots in by_target.items():
        target = parent / target_name
        if own is not None and target == own:
            removed += _remove_roots(target, roots)
            continue
        lock = FileLock(str(lock_path(target)))
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue
        try:
            removed += _remove_roots(target, roots)
        finally:
            lock.release()
    return removed


def _remove_roots(target: Path, roots: list[Path]) -> list[Path]:
    for root in roots:
        previous = root / "previous"
        if previous.is_dir() and not target.exists():
            os.rename(previous, target)
            log.warning("restored %s, which a run that died while publishing had moved aside", target)
        shutil.rmtree(root, ignore_errors=True)
        log.info("removed %s, left by a run that did not finish", root.name)
    return roots


@contextmanager
def toolchain_sandbox(work: Path) -> Iterator[Path]:
    """Run the build with the temporary folder inside ``work``: what the toolchains write into it
    (ONNX Runtime's quantizers, torch's compilers) is removed with the staging root. Process-wide state
    (``tempfile.tempdir``, ``TMPDIR``) is restored on every exit.

    The working directory is left alone: the user's threads may write relative paths while the job
    builds (a sweep job's thread wrote into a sandbox removed with the staging root, and its file was
    lost). The one call that writes into the current directory, ONNX Runtime's shape inference,
    changes it around that call only (``exporter.files.working_directory``).
    """
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(tmp)
    os.environ["TMPDIR"] = str(tmp)
    try:
        yield tmp
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
