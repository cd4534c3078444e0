"""``exporter verify DIR``: rebuild a build from its own records and compare the artifacts byte for byte.

The rebuild runs from DIR's ``config.yaml`` (the resolved config of the build), in the working
directory the build was made from, into a temporary folder that is removed afterwards. Every shipped
format rebuilds byte-identically in a fresh process (ONNX through either exporter: the job rewrites
the exporter's file itself, formats/onnx/external.py). Exit codes: 0 every artifact matches, 1 one
differs (or a file of DIR no longer matches its record), 2 DIR cannot be read or rebuilt.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..config import environment as settings
from ..errors import ExportError
from ..records.read import (FOREIGN, MISSING, MODIFIED, OK, RECORDS, UNLISTED, Build, BuildUnreadable, files_problems,
                            read_build)
from ..records.tables import table

BYTE_NOTE = ("bytes compared: the shipped formats rebuild byte-identically in a fresh process, except where a "
             "format records a content hash: TorchScript built after other traces in one process (a later job "
             "of a joblib worker, or of the Python API in a loop) or with the model's code installed at another "
             "path (a build restored from the cache: its debug records name the source files where it was built) "
             "and strict torch.export programs (they hold Python object ids) are compared by that hash")


@contextmanager
def _in_folder(folder: Any) -> Iterator[None]:
    """Run where the build was made from, so that relative paths (checkpoint, calibration file)
    resolve as they did. Only files are read from there: no import looks in it (``_import_path``)."""
    if not folder or not Path(folder).is_dir():
        yield
        return
    saved = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(saved)


def untrusted_path_entries(path: list[str], folders: list[Path], build: Optional[Path] = None) -> list[str]:
    """The entries of ``path`` (``sys.path``) through which a verify could import code a build
    folder brings: relative ones (``''`` is the working directory, wherever that is), the
    ``folders`` themselves (the working directory, the folder the records name) and the ``build``
    folder or any folder inside it. Entries inside a working directory stay: a virtual environment
    in the project folder is the user's own installation.

    >>> untrusted_path_entries(["", "/w", "/w/.venv/lib", "/b", "/b/x", "rel"], [Path("/w")], Path("/b"))
    ['', '/w', '/b', '/b/x', 'rel']
    """
    exact = {Path(os.path.realpath(folder)) for folder in folders}
    inside = Path(os.path.realpath(build)) if build is not None else None
    bad = []
    for entry in path:
        real = Path(os.path.realpath(entry)) if entry and os.path.isabs(entry) else None
        if real is None or real in exact or (inside is not None and (real == inside or inside in real.parents)):
            bad.append(entry)
    return bad


@contextmanager
def _import_path(folders: list[Path], build: Path, code: Optional[Path]) -> Iterator[None]:
    """``sys.path`` without the entries ``untrusted_path_entries`` names, with ``code`` (the folder
    the user named with ``--code``) in front."""
    saved = list(sys.path)
    bad = set(untrusted_path_entries(sys.path, folders, build))
    sys.path[:] = ([str(code)] if code is not None else []) + [entry for entry in sys.path if entry not in bad]
    try:
        yield
    finally:
        sys.path[:] = saved


def _targets(node: Any) -> list[str]:
    """Every ``_target_`` a config names (the model, an adapter, a calibration dataset), in order."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                found.append(value)
            else:
                found += _targets(value)
    elif isinstance(node, list):
        for value in node:
            found += _targets(value)
    return found


def _where_of(config: dict[str, Any], target: str) -> str:
    """The config key that names ``target``: ``model._target_``, ``adapter._target_``."""
    def walk(node: Any, prefix: str) -> Optional[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_target_" and value == target:
                    return f"{prefix}_target_"
                hit = walk(value, f"{prefix}{key}.")
                if hit:
                    return hit
        return None
    return walk(config, "") or "_target_"


def code_sources(config: dict[str, Any], code: Optional[Path], folder: Path,
                 build_folder: Optional[Path] = None) -> list[str]:
    """Where the code each ``_target_`` of ``config`` names would be imported from, one line each,
    found without running any of it (only top-level modules are looked up). Raises BuildUnreadable
    for code that is neither an installed distribution nor under ``code``: the working directory,
    a build folder or the standard library (``os.system``) are no model code a verify imports."""
    import importlib.util
    from importlib import metadata

    distributions = metadata.packages_distributions()
    lines = []
    for target in dict.fromkeys(_targets(config)):
        where = _where_of(config, target)
        top = target.split(".")[0]
        hint = (f"if it is your code, name the folder that holds it: exporter verify {folder} --code FOLDER")
        try:
            spec = importlib.util.find_spec(top) if top.isidentifier() else None
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise BuildUnreadable(f"{where} {target}: no module {top!r} is installed here; {hint}")
        origin = spec.origin if spec.origin not in (None, "built-in", "frozen") else None
        location = Path(origin) if origin else (
            Path(next(iter(spec.submodule_search_locations))) if spec.submodule_search_locations else None)
        real = Path(os.path.realpath(location)) if location is not None else None
        if build_folder is not None and real is not None and (real == build_folder or build_folder in real.parents):
            raise BuildUnreadable(f"{where} {target}: {location} lies inside the build folder {folder}; verify never "
                                  "imports code a build folder holds")
        if code is not None and location is not None and (
                Path(os.path.realpath(location)) == Path(os.path.realpath(code))
                or Path(os.path.realpath(code)) in Path(os.path.realpath(location)).parents):
            lines.append(f"model code: {target} from {code} (--code)")
        elif top in distributions and location is not None and not _in_stdlib(location):
            name = distributions[top][0]
            # Where it is found too: a copy earlier on the path (PYTHONPATH) shadows the distribution's own.
            found = location.parent if location.name == "__init__.py" else location
            lines.append(f"model code: {target} from the installed distribution {name} {metadata.version(name)} "
                         f"({found})")
        elif location is None or _in_stdlib(location):
            raise BuildUnreadable(f"{where} {target}: Python's own {top!r} is not model code; verify imports "
                                  "model code only from an installed distribution or a folder given with --code")
        else:
            raise BuildUnreadable(f"{where} {target}: {location} is neither an installed distribution nor under a "
                                  f"folder given with --code; {hint}")
    return lines


def _in_stdlib(location: Path) -> bool:
    import sysconfig

    real = Path(os.path.realpath(location))
    for key in ("stdlib", "platstdlib"):
        root = Path(os.path.realpath(sysconfig.get_paths()[key]))
        if real == root or (root in real.parents and "site-packages" not in real.relative_to(root).parts):
            return True
    return False


SCRATCH_PREFIX = "exporter-verify-"
_SCRATCH_LOCK = ".lock"


@contextmanager
def _held(scratch: Path) -> Iterator[None]:
    """A lock inside verify's temporary folder while it runs: the kernel frees it when the process
    ends, however it ends, and the next verify removes a folder whose lock is free."""
    from filelock import FileLock

    lock = FileLock(str(scratch / _SCRATCH_LOCK))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove_stale_scratch() -> None:
    """Remove the temporary folders of verifies that were killed (SIGKILL leaves no handler a say):
    those whose lock is free, or that hold no lock and are over an hour old."""
    from ..files import remove_when_unlocked

    remove_when_unlocked(Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"), _SCRATCH_LOCK, 3600)


def _rebuild(build: Build, into: Path, code: Optional[Path]) -> dict[str, Any]:
    """The rebuilt metadata.json of DIR's config, built into ``into``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..build.runner import run_export
    from ..formats.registry import export_schema
    from .describe import job_from_config

    origin = dict(build.metadata.get("config") or {})
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(export_schema()), literal(build.config))
    except OmegaConfBaseException as exc:
        raise BuildUnreadable(f"{build.folder / 'config.yaml'}: {_schema_misfit(exc)}; the config does not fit this "
                              "version's schema (written by another version, or edited by hand), so the build cannot "
                              "be made again from it") from None
    cfg.export_dir = str(into)
    cfg.force = True
    # The rebuild's own log goes to its (temporary) export.log; the report says what matters.
    logger = logging.getLogger("exporter")
    propagate, logger.propagate = logger.propagate, False
    # Under the internal settings the build was made with (none recorded: the defaults).
    recorded = (build.metadata.get("build_key_inputs") or {}).get("settings") or {}
    try:
        with _in_folder(origin.get("cwd")), settings.applied(recorded):
            result = run_export(job_from_config(cfg, origin=origin))
    finally:
        logger.propagate = propagate
    return result.metadata


def _schema_misfit(exc: BaseException) -> str:
    """omegaconf's error in one line, naming the key: ``seed: Value 'abc' could not be converted
    to Integer``, ``seedz: not a key of ExportConfig; valid keys: ...``."""
    from dataclasses import fields, is_dataclass

    key = str(getattr(exc, "full_key", "") or "")
    text = str(exc).split("\n")[0].strip()
    object_type = getattr(exc, "object_type", None)
    if "not in" in text and isinstance(object_type, type) and is_dataclass(object_type):
        text = (f"not a key of {object_type.__name__}; valid keys: "
                + ", ".join(f.name for f in fields(object_type)))
    return f"{key}: {text}" if key else text


def _refuse_paths_into_the_build(config: Any, real: Path, cwd: Any) -> None:
    """A value of the config that names a path inside the build folder (``model.repo_or_dir`` for a
    loader such as torch.hub.load): the rebuild would read, or run, what the folder brings. The
    build's own folder keys (``export_dir``) name it by design."""

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if key == "" and k in ("export_dir", "hydra"):
                    continue
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, str) and node and "\0" not in node and ("/" in node or node.startswith(".")):
            path = Path(node).expanduser()
            if not path.is_absolute() and cwd:
                path = Path(str(cwd)) / path
            try:
                resolved = Path(os.path.realpath(path))
            except (OSError, ValueError):
                return
            if resolved == real or real in resolved.parents:
                raise BuildUnreadable(f"{key}: {node} lies inside the build folder {real}; verify never reads or runs "
                                      "what a build folder holds besides its artifacts and records")

    walk(config, "")


def literal(node: Any) -> Any:
    """``config.yaml`` holds the resolved config: every value as it was used. Read back through
    omegaconf, a ``${`` in a value (``model.path='dir \\${x}'`` on the command line) would be an
    interpolation again; escaped here, it stays the text it was.

    >>> from omegaconf import OmegaConf
    >>> OmegaConf.to_container(OmegaConf.create(literal({"path": "dir ${x}", "n": [1, "${y}"]})), resolve=True)
    {'path': 'dir ${x}', 'n': [1, '${y}']}
    """
    if isinstance(node, dict):
        return {key: literal(value) for key, value in node.items()}
    if isinstance(node, list):
        return [literal(value) for value in node]
    if isinstance(node, str) and "${" in node:
        # omegaconf: \${ is an escaped interpolation; backslashes right before it are doubled first.
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", node)
    return node


def _check_rebuildable(build: Build) -> None:
    """BuildUnreadable when the records cannot say what to rebuild."""
    from ..formats.registry import registered_formats

    origin = dict(build.metadata.get("config") or {})
    if origin.get("source") != "cli":
        raise BuildUnreadable(
            f"{build.folder} was built with the Python API: the model was handed over as an object, which its "
            "records cannot rebuild; verify needs a build made from the command line (a config that names the model)")
    if not build.config:
        raise BuildUnreadable(f"{build.folder}: no config.yaml to rebuild from")

    unknown = sorted(set((build.config.get("format") or {})) - set(registered_formats()))
    if unknown:
        raise BuildUnreadable(
            f"{build.folder} was built with format(s) {unknown}, which no installed format or plug-in registers "
            f"here (registered: {sorted(registered_formats())}); install the plug-in that provides them to verify")


def _verdict(build: Build, fmt: str, recorded: dict[str, Any], rebuilt: dict[str, Any]) -> tuple[str, bool]:
    for check in build.files_of(fmt):
        if check.state in (MISSING, MODIFIED):
            return (f"{check.file} {check.state.upper()} in {build.folder.name} "
                    f"({check.why or 'its record is not the file'})"), False
        if check.state == FOREIGN:
            return f"{check.file} is no file a build writes (its record was not written by this tool)", False
    if rebuilt.get("status") == "failed":
        return f"not rebuilt: {rebuilt.get('error')}", False
    extras = [(e.get("file"), e.get("sha256")) for e in recorded.get("extra_files") or []]
    if extras != [(e.get("file"), e.get("sha256")) for e in rebuilt.get("extra_files") or []]:
        names = ", ".join(str(name) for name, _ in extras) or "none"
        return f"DIFFERS in the files beside it (recorded: {names})", False
    if recorded.get("sha256") == rebuilt.get("sha256"):
        return "identical bytes" + (f" (with {', '.join(str(n) for n, _ in extras)})" if extras else ""), True
    content = (recorded.get("details") or {}).get("content_sha256")
    if content and content == (rebuilt.get("details") or {}).get("content_sha256"):
        return ("identical content (the bytes differ only in what the process numbers or addresses, or where it "
                "found the code: TorchScript class numbers and the source paths of its debug records, object ids in "
                "a strict torch.export program)"), True
    return "DIFFERS" + (auto_choice_differs(recorded, rebuilt) or ""), False


def auto_choice_differs(recorded: dict[str, Any], rebuilt: dict[str, Any]) -> Optional[str]:
    """Why the bytes differ when ``weight_type=auto`` kept another type in the rebuild (it chooses by
    timing); None when it kept the same one, or did not choose.

    >>> kept = lambda t: {"quantization_report": {"weight_type_selection": {"chosen": t}}}
    >>> auto_choice_differs(kept("qint8"), kept("quint8"))[:60]
    ': weight_type=auto kept qint8 in the build and quint8 in the'
    """
    def chosen(record: dict[str, Any]) -> Optional[str]:
        return ((record.get("quantization_report") or {}).get("weight_type_selection") or {}).get("chosen")

    then, now = chosen(recorded), chosen(rebuilt)
    if then is None or now is None or then == now:
        return None
    return (f": weight_type=auto kept {then} in the build and {now} in the rebuild (it chooses by timing); "
            f"quantization.weight_type={then} builds the recorded choice")


def verify(folder: Path, code: Optional[Path] = None,
           announce: Callable[[str], None] = lambda line: None) -> tuple[str, bool]:
    """The report and whether every artifact of ``folder`` rebuilds to the same bytes. Before the
    rebuild, ``announce`` gets one line per model code it imports (``code_sources``)."""
    from ..config.build_key import versions
    from ..interrupts import signals_deferred

    build = read_build(folder)
    # An artifact that differs from its record is the rebuild's to show (a row, DIFFERS); the records
    # themselves (config.yaml, .hydra/, export.log), a file on no record and one no build writes are
    # not: with those, the folder is not what its records say it was built from.
    untrusted = [c for c in build.files if c.state in (UNLISTED, FOREIGN) or (c.format == RECORDS and c.state != OK)
                 or (c.state == MISSING and c.why)]  # something else in a file's place: a link, a FIFO
    problems = files_problems(Build(build.folder, build.metadata, build.config, tuple(untrusted)))
    if problems:
        # The records do not vouch for the folder (a changed config.yaml, a file dropped in): nothing
        # of it is rebuilt, so nothing of it is imported.
        return "\n".join([f"verify {folder}", *problems, "", "verification FAILED: the folder does not match its "
                           "records; nothing was rebuilt"]) + "\n", False
    kept = [fmt for fmt, record in build.metadata["artifacts"].items() if record.get("status") != "failed"]
    if kept and all(any(c.state in (MISSING, MODIFIED) for c in build.files_of(fmt)) for fmt in kept):
        # Every artifact already differs from its record: a rebuild could only say so again.
        rows = [[fmt, str(record.get("file")), str(record.get("sha256", "-"))[:12], "-",
                 _verdict(build, fmt, record, {})[0] if fmt in kept else "failed in the build itself: nothing to verify"]
                for fmt, record in build.metadata["artifacts"].items()]
        return "\n".join([f"verify {folder}", table(["format", "file", "recorded", "rebuilt", "result"], rows), "",
                          "verification FAILED: every artifact differs from its record; nothing was rebuilt"]) + "\n", False
    real = Path(os.path.realpath(build.folder))
    if code is not None and (Path(os.path.realpath(code)) == real or real in Path(os.path.realpath(code)).parents):
        raise BuildUnreadable(f"--code {code}: is the build folder {build.folder} or inside it; verify never imports "
                              "code a build folder holds: name the folder of your own model code")
    origin = dict(build.metadata.get("config") or {})
    # No import from here on looks in the working directory, the build folder or the folder its records name.
    drop = [Path.cwd()] + ([Path(str(origin["cwd"]))] if origin.get("cwd") else [])
    with _import_path(drop, build.folder, code):
        _check_rebuildable(build)
        sources = code_sources(build.config, code, folder, real)
        _refuse_paths_into_the_build(build.config, real, origin.get("cwd"))
        for line in sources:
            announce(line)
        # The folder and what removes it come into being together: a Ctrl-C in between (after mkdtemp,
        # before a try) left it behind. Should the signal arrive as this block ends, the object is
        # dropped on the way out and its finalizer removes the folder.
        _remove_stale_scratch()
        with signals_deferred():
            scratch = tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, ignore_cleanup_errors=True)
        with scratch, _held(Path(scratch.name)):
            rebuilt = _rebuild(build, Path(scratch.name) / "build", code)
    rows, ok = [], True
    for fmt, recorded in build.metadata["artifacts"].items():
        if recorded.get("status") == "failed":
            rows.append([fmt, "-", "-", "-", "failed in the build itself: nothing to verify"])
            continue
        again = (rebuilt.get("artifacts") or {}).get(fmt, {})
        verdict, same = _verdict(build, fmt, recorded, again)
        ok = ok and same
        rows.append([fmt, str(recorded.get("file")), str(recorded.get("sha256", "-"))[:12],
                     str(again.get("sha256", "-"))[:12], verdict])
    lines = [f"verify {folder}", BYTE_NOTE, "", table(["format", "file", "recorded", "rebuilt", "result"], rows)]
    then = (build.metadata.get("build_key_inputs") or {}).get("versions") or {}
    changed = {k: (v, versions().get(k)) for k, v in then.items() if versions().get(k) != v}
    if changed:
        lines.append("tool versions differ from the build's: " +
                     ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()))
    lines.append("\nverified: every artifact rebuilds to the bytes on record" if ok else "\nverification FAILED")
    return "\n".join(lines) + "\n", ok


def run_verify(folder: Path, code: Optional[Path] = None) -> int:
    """Command line: say which model code it imports, then print the report; 0 all match, 1 a
    difference, 2 unreadable or not rebuildable."""
    if code is not None and not code.is_dir():
        print(f"error: --code {code}: not a folder (name the folder that holds your model's code)", file=sys.stderr)
        return 2

    def announce(line: str) -> None:
        print(line, flush=True)

    try:
        text, ok = verify(folder, code.resolve() if code is not None else None, announce)
    except ExportError as exc:
        print(f"error: cannot rebuild {folder}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0 if ok else 1
