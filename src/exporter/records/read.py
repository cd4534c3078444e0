"""Reading a finished build's records: metadata.json, config.yaml, and the files metadata.json vouches for.

``exporter card`` and ``exporter diff`` stand on this, so it imports neither torch nor onnx. Every artifact
file is hashed again: a reader calls a file verified only for bytes it has just read. A build that cannot
be read (no metadata.json, not JSON, not the shape this tool writes) is a ``BuildUnreadable`` naming the
file and what is wrong with it, never a traceback.

A rebuild publishes by exchanging the whole folder for its staged one and then deleting the old one, so
everything here is read through one open directory descriptor, and the read starts over when the folder
was exchanged meanwhile: metadata, config and hashes always come from one and the same build.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Optional, Union

from .layout import CONFIG_SNAPSHOT_FILE, CODE_SUFFIXES, HYDRA_SUBDIR, METADATA_FILE, RECORD_NAMES, written_by_a_build

OK, MISSING, MODIFIED, NOT_RECORDED, UNLISTED = "ok", "missing", "modified", "not recorded", "unlisted"
# A file the records list that no build of this tool writes (a .py among an artifact's extra_files).
FOREIGN = "foreign"
# The FileCheck "format" of the build's own records (config.yaml, export.log, .hydra/*).
RECORDS = "(records)"
# Artifact statuses of a file the build kept (a failed format has none).
KEPT = ("ok", "mismatch", "unchecked")

# A rebuild in a loop could exchange the folder under every read; after this many the reader gives up.
ATTEMPTS = 3
_BLOCK = 1 << 20


class BuildUnreadable(Exception):
    """A build folder whose records cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class FileCheck:
    """One file metadata.json records for a format, against the bytes on disk now."""

    format: str
    file: Optional[str]
    sha256: Optional[str]  # as recorded
    bytes: Optional[int]  # as recorded
    state: str  # OK, MISSING, MODIFIED (sha256 differs) or NOT_RECORDED (a failed format: no file)
    why: str = ""  # what is in a MISSING file's place, if anything (a symbolic link, a FIFO)


@dataclass(frozen=True)
class Build:
    """A build folder as read at one moment: its metadata, its config snapshot and its checked files."""

    folder: Path
    metadata: dict[str, Any]
    config: dict[str, Any]
    files: tuple[FileCheck, ...]

    def files_of(self, fmt: str) -> list[FileCheck]:
        return [check for check in self.files if check.format == fmt]


def read_build(folder: Union[str, Path], known: Any = None, with_config: bool = True) -> Build:
    """Read ``folder``'s metadata.json and config.yaml and re-hash every file metadata.json records.

    ``known`` (a ``exporter.files.KnownHashes``): a file whose ``stat`` is unchanged since it was last
    hashed is not read again (the "up to date" check; ``verify``, ``card`` and ``diff`` read every
    byte). ``with_config=False`` leaves config.yaml unparsed (``Build.config`` is empty).

    Raises ``BuildUnreadable`` when the records cannot be read. A missing or modified artifact is not an
    error here: it is the ``state`` of its ``FileCheck``, and ``files_problems`` words it.
    """
    folder = Path(folder)
    for _ in range(ATTEMPTS):
        fd = _open_folder(folder)
        try:
            try:
                build = _read_at(fd, folder, known, with_config)
            except BuildUnreadable:
                # A file that vanished mid-read is the old build being deleted after an exchange, not a broken build.
                if _replaced(fd, folder):
                    continue
                raise
            if not _replaced(fd, folder):
                return build
        finally:
            os.close(fd)
    raise BuildUnreadable(f"{folder}: replaced by a rebuild {ATTEMPTS} times while being read; try again")


def read_metadata(folder: Union[str, Path]) -> dict[str, Any]:
    """``folder``'s metadata.json, checked for the shape this tool writes (no file is hashed);
    ``BuildUnreadable`` otherwise."""
    folder = Path(folder)
    fd = _open_folder(folder)
    try:
        return _metadata_at(fd, folder)
    finally:
        os.close(fd)


def files_problems(build: Build) -> list[str]:
    """One line per file that is missing or whose bytes differ from its record in metadata.json."""
    lines = []
    for check in build.files:
        if check.state == MISSING:
            lines.append(f"{build.folder / check.file}: {check.why or 'missing'} (metadata.json records it for "
                         f"{check.format})")
        elif check.state == MODIFIED:
            lines.append(f"{build.folder / check.file}: modified (sha256 differs from metadata.json)")
        elif check.state == UNLISTED:
            lines.append(f"{build.folder / check.file}: not part of the build (metadata.json does not list it)")
        elif check.state == FOREIGN:
            lines.append(f"{build.folder / check.file}: not part of the build (metadata.json lists it, but a build "
                         "writes only its artifacts, their data files, its records and the model-folder files; "
                         "never code)")
    return lines


def quantization_of(metadata: Mapping[str, Any]) -> tuple[Optional[str], dict[str, Any]]:
    """The quantization mode of a build (None when it is not quantized) and its other settings.

    ``quantization`` is the mode with the settings in ``quantization_config``; builds written before that
    change carry one dict with a ``mode`` key.

    >>> quantization_of({"quantization": "dynamic", "quantization_config": {"mode": "dynamic", "per_channel": False}})
    ('dynamic', {'per_channel': False})
    >>> quantization_of({"quantization": {"mode": "none"}})
    (None, {})
    """
    quant = metadata.get("quantization")
    if isinstance(quant, Mapping):
        mode, settings = quant.get("mode"), quant
    else:
        mode, settings = quant, metadata.get("quantization_config")
    if mode in (None, "", "none"):
        return None, {}
    settings = settings if isinstance(settings, Mapping) else {}
    return str(mode), {k: v for k, v in settings.items() if k != "mode"}


def os_error_text(exc: OSError) -> str:
    """``permission denied``, ``is a directory``: an OSError as the tail of a one-line message."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _open_folder(folder: Path) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BuildUnreadable(f"{folder}: no such folder") from None
    except NotADirectoryError:
        raise BuildUnreadable(f"{folder} is not a build folder (not a folder)") from None
    except OSError as exc:
        raise BuildUnreadable(f"{folder}: {os_error_text(exc)}") from None


def _replaced(fd: int, folder: Path) -> bool:
    """Whether ``folder`` now names another directory than the one ``fd`` holds open."""
    held = os.fstat(fd)
    try:
        now = os.stat(folder)
    except OSError:
        return True
    return (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino)


class NotAFile(OSError):
    """A name in the folder that is no regular file (a FIFO, a device): never read, it could block."""


def _opener(fd: int):
    def opener(name: str, flags: int) -> int:
        # A build writes regular files only, inside its folder: a symbolic link (in the file's place
        # or among its folders) is not what it wrote, whatever it points to.
        parts = PurePosixPath(name).parts
        for depth in range(1, len(parts) + 1):
            try:
                mode = os.lstat("/".join(parts[:depth]), dir_fd=fd).st_mode
            except FileNotFoundError:
                break
            if stat.S_ISLNK(mode):
                raise NotAFile(errno.ELOOP, "a symbolic link in the place of a file the build wrote")
        # Non-blocking, so a FIFO put in a file's place opens at once (and is refused) instead of
        # waiting forever for a writer; a regular file reads as ever.
        handle = os.open(name, flags | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=fd)
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            os.close(handle)
            raise NotAFile(errno.EINVAL, "not a regular file (a FIFO, a device or a folder) in the place of a file "
                                         "the build wrote")
        return handle

    return opener


def _read_at(fd: int, folder: Path, known: Any = None, with_config: bool = True) -> Build:
    metadata = _metadata_at(fd, folder)
    config = _config_at(fd, folder) if with_config else {}
    files = tuple(check for fmt, record in metadata["artifacts"].items()
                  for check in _checks(fd, folder, fmt, record, known))
    # The build's other records (config.yaml, export.log, .hydra/) are hashed too, where it lists them.
    files += tuple(_check(fd, folder, RECORDS, {"file": name, "sha256": sha256}, known)
                   if Path(name).parts[0] in RECORD_NAMES and not name.lower().endswith(CODE_SUFFIXES)
                   else FileCheck(RECORDS, name, sha256, None, FOREIGN)
                   for name, sha256 in (metadata.get("records") or {}).items())
    # A file no record lists is not part of the build (dropped in by hand, or by another tool).
    listed = RECORD_NAMES | {Path(c.file).parts[0] for c in files if c.file}
    files += tuple(FileCheck(RECORDS, name, None, None, UNLISTED) for name in sorted(os.listdir(fd))
                   if name not in listed)
    # Inside .hydra/ too: only the files the records list (a module or a package dropped in there
    # is no more part of the build than one beside the artifacts).
    recorded = {c.file for c in files if c.file}
    files += tuple(FileCheck(RECORDS, name, None, None, UNLISTED) for name in _hydra_entries(fd)
                   if name not in recorded)
    return Build(folder, metadata, config, files)


def _hydra_entries(fd: int) -> list[str]:
    """``.hydra/<name>`` for each entry of the folder's .hydra/ (none when it is absent, or ``.hydra``
    itself when it is no folder of the build's: a link)."""
    try:
        mode = os.lstat(HYDRA_SUBDIR, dir_fd=fd).st_mode
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(mode):
        return [HYDRA_SUBDIR]
    inner = os.open(HYDRA_SUBDIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    try:
        return [f"{HYDRA_SUBDIR}/{name}" for name in sorted(os.listdir(inner))]
    finally:
        os.close(inner)


def _read_bytes(fd: int, name: str) -> bytes:
    with open(name, "rb", opener=_opener(fd)) as f:
        return f.read()


def _text(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BuildUnreadable(f"{path}: not valid UTF-8") from None


def _kind(value: Any) -> str:
    names = {type(None): "nothing", bool: "a boolean", str: "a string", int: "a number", float: "a number",
             list: "a list", dict: "an object"}
    return names.get(type(value), f"a {type(value).__name__}")


def _metadata_at(fd: int, folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    try:
        raw = _read_bytes(fd, METADATA_FILE)
    except FileNotFoundError:
        raise BuildUnreadable(f"{folder} is not a build folder (no {METADATA_FILE} in it)") from None
    except OSError as exc:
        raise BuildUnreadable(f"{path}: {os_error_text(exc)}") from None
    try:
        metadata = json.loads(_text(raw, path))
    except json.JSONDecodeError as exc:
        raise BuildUnreadable(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise BuildUnreadable(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(metadata, dict):
        raise BuildUnreadable(f"{path}: expected a JSON object, got {_kind(metadata)}")
    _check_artifacts(metadata, path)
    return metadata


def _check_artifacts(metadata: Mapping[str, Any], path: Path) -> None:
    """The shape of ``artifacts`` that the file checks and the card rely on."""
    if "artifacts" not in metadata:
        raise BuildUnreadable(f"{path}: 'artifacts' is missing")
    artifacts = metadata["artifacts"]
    if not isinstance(artifacts, dict) or not all(isinstance(record, dict) for record in artifacts.values()):
        raise BuildUnreadable(f"{path}: 'artifacts' must be an object of format -> record")
    if not artifacts:
        raise BuildUnreadable(f"{path}: 'artifacts' is empty; a build records at least one format")
    records = metadata.get("records")
    if records is not None and not (isinstance(records, dict) and all(
            isinstance(k, str) and isinstance(v, str) and _inside(k) for k, v in records.items())):
        raise BuildUnreadable(f"{path}: 'records' must be an object of file name -> sha256 inside the folder")
    _check_kinds(metadata, TOP_LEVEL_KINDS, f"{path}: '")
    version = metadata.get("schema_version")
    if version is not None and str(version).split(".")[0] != "1":
        raise BuildUnreadable(f"{path}: 'schema_version' is {version!r}; this version of the tool reads 1.x")
    for fmt, record in artifacts.items():
        where = f"{path}: 'artifacts.{fmt}"
        _check_kinds(record, ARTIFACT_KINDS, where + ".")
        _check_size(record, where)
        if record.get("status") in KEPT and (not record.get("file") or not record.get("sha256")):
            # An artifact the build kept always has its file and hash on record: without them nothing can vouch for it.
            raise BuildUnreadable(f"{where}' has status {record.get('status')} but no file or sha256 on record")
        if record.get("sha256") is not None or record.get("file") is not None:
            _check_file_record(record, where, needs_sha256=False)
        extra = record.get("extra_files") or []
        if not isinstance(extra, list) or not all(isinstance(item, dict) for item in extra):
            raise BuildUnreadable(f"{where}.extra_files' must be a list of {{\"file\", \"sha256\"}} objects")
        for item in extra:
            _check_file_record(item, f"{where}.extra_files", needs_sha256=True)
            _check_size(item, f"{where}.extra_files")


# The keys card and diff read, and the kinds they must be (None: absent or null is fine too).
TOP_LEVEL_KINDS = {"inputs": list, "outputs": list, "dynamic_axes": dict, "parts": dict, "cache": dict,
                   "config": dict, "environment": dict, "build_key_inputs": dict, "formats": list, "status": str,
                   "quantization_config": dict, "checkpoint": dict, "runtimes": dict, "parameters": int,
                   "schema_version": str, "exported_at": str, "build_key": str}
ARTIFACT_KINDS = {"validation": dict, "details": dict, "quantization_report": dict, "status": str, "error": str,
                  "runtimes": dict, "load_hint": str, "file": str}
_KIND_NAMES = {list: "a list", dict: "an object", str: "a string", int: "a whole number"}
# The record's fields for one input or output, and their kinds.
_IO_KINDS = {"name": str, "dtype": str, "shape": list}


def _check_kinds(record: Mapping[str, Any], kinds: Mapping[str, type], where: str) -> None:
    """Each key of ``kinds`` that ``record`` holds is null or of its kind; the lists of inputs and
    outputs hold objects. A hand-edited record otherwise reads as something it is not."""
    for key, kind in kinds.items():
        value = record.get(key)
        if value is not None and not isinstance(value, kind):
            raise BuildUnreadable(f"{where}{key}' must be {_KIND_NAMES[kind]}, got {_kind(value)}")
        if isinstance(value, bool) and kind is int:
            raise BuildUnreadable(f"{where}{key}' must be {_KIND_NAMES[kind]}, got {_kind(value)}")
        if key in ("inputs", "outputs") and value is not None and not all(
                isinstance(item, dict) and all(isinstance(item.get(k), t) for k, t in _IO_KINDS.items()) for item in value):
            raise BuildUnreadable(f"{where}{key}' must be a list of objects (name, dtype: strings, shape: a list)")


def _inside(name: str) -> bool:
    path = Path(name)
    return "\0" not in name and not path.is_absolute() and ".." not in path.parts


def _check_file_record(record: Mapping[str, Any], where: str, needs_sha256: bool) -> None:
    name, sha256 = record.get("file"), record.get("sha256")
    # A recorded name is read relative to the build folder; one reaching outside it is not this tool's record.
    if (not isinstance(name, str) or not name or "\0" in name or PurePosixPath(name).is_absolute()
            or ".." in PurePosixPath(name).parts):
        raise BuildUnreadable(f"{where}.file' must be a file name inside the build folder, got {name!r}")
    if (needs_sha256 or sha256 is not None) and not isinstance(sha256, str):
        raise BuildUnreadable(f"{where}.sha256' must be a string, got {_kind(sha256)}")


def _check_size(record: Mapping[str, Any], where: str) -> None:
    size = record.get("bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63):
        shown = repr(size) if len(repr(size)) <= 40 else repr(size)[:20] + f"... ({len(repr(size))} characters)"
        raise BuildUnreadable(f"{where}.bytes' must be a whole number of bytes below 2**63, got {shown}")


def parse_config(raw: bytes, path: Path) -> dict[str, Any]:
    """A config YAML file's bytes as a mapping; BuildUnreadable naming ``path`` otherwise."""
    import yaml

    try:
        config = yaml.safe_load(_text(raw, path))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        raise BuildUnreadable(f"{path}: not valid YAML ({where}{exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise BuildUnreadable(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise BuildUnreadable(f"{path}: expected a mapping, got {_kind(config)}")
    return config


def _config_at(fd: int, folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_SNAPSHOT_FILE
    try:
        raw = _read_bytes(fd, CONFIG_SNAPSHOT_FILE)
    except FileNotFoundError:
        return {}  # a folder without the snapshot still has its metadata; diff then compares no config
    except OSError as exc:
        raise BuildUnreadable(f"{path}: {os_error_text(exc)}") from None
    return parse_config(raw, path)


def _checks(fd: int, folder: Path, fmt: str, record: Mapping[str, Any], known: Any = None) -> list[FileCheck]:
    """The artifact file of one format record, then any extra files (external data) it lists."""
    artifact = record.get("file")
    if record.get("sha256") is None:
        checks = [FileCheck(fmt, artifact, None, record.get("bytes"), NOT_RECORDED)]
    elif not written_by_a_build(str(artifact), str(artifact)):
        checks = [FileCheck(fmt, artifact, record.get("sha256"), record.get("bytes"), FOREIGN)]
    else:
        checks = [_check(fd, folder, fmt, record, known)]
    return checks + [_check(fd, folder, fmt, extra, known) if written_by_a_build(extra["file"], artifact)
                     else FileCheck(fmt, extra["file"], extra.get("sha256"), extra.get("bytes"), FOREIGN)
                     for extra in record.get("extra_files") or []]


def _check(fd: int, folder: Path, fmt: str, record: Mapping[str, Any], known: Any = None) -> FileCheck:
    name, recorded = record["file"], record["sha256"]
    try:
        actual = _sha256_at(fd, name, known, os.path.abspath(folder / name))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        return FileCheck(fmt, name, recorded, record.get("bytes"), MISSING,
                         "" if isinstance(exc, FileNotFoundError) else "a folder in its place")
    except NotAFile as exc:
        return FileCheck(fmt, name, recorded, record.get("bytes"), MISSING, exc.strerror)
    except OSError as exc:
        raise BuildUnreadable(f"{folder / name}: {os_error_text(exc)}") from None
    else:
        state = OK if actual == recorded.lower() else MODIFIED
    return FileCheck(fmt, name, recorded, record.get("bytes"), state)


def _sha256_at(fd: int, name: str, known: Any = None, key: str = "") -> str:
    """sha256 of the file ``name`` inside the directory ``fd``, read in 1 MiB blocks (``known``:
    not read when its ``stat`` is that of its last hash)."""
    digest = hashlib.sha256()
    with open(name, "rb", opener=_opener(fd)) as f:
        if known is not None:
            return known.sha256_open(f, key)
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
