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
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..config import environment as settings
from ..errors import ExportError
from ..records.read import MISSING, MODIFIED, Build, BuildUnreadable, read_build
from ..records.tables import table

BYTE_NOTE = ("bytes compared: the shipped formats rebuild byte-identically in a fresh process, except where a "
             "format records a content hash: TorchScript built after other traces in one process (a later job "
             "of a joblib worker, or of the Python API in a loop) and strict "
             "torch.export programs (they hold Python object ids) are compared by that hash")


@contextmanager
def _in_folder(folder: Any) -> Iterator[None]:
    """Run where the build was made from: relative paths (checkpoint, calibration file) and modules
    next to it (``model._target_: mynets.Net``) resolve as they did."""
    if not folder or not Path(folder).is_dir():
        yield
        return
    saved = os.getcwd()
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        os.chdir(saved)
        sys.path.remove(str(folder))


def _rebuild(build: Build, into: Path) -> dict[str, Any]:
    """The rebuilt metadata.json of DIR's config, built into ``into``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..build.runner import run_export
    from ..formats.registry import export_schema
    from .describe import job_from_config

    origin = dict(build.metadata.get("config") or {})
    if origin.get("source") != "cli":
        raise BuildUnreadable(
            f"{build.folder} was built with the Python API: the model was handed over as an object, which its "
            "records cannot rebuild; verify needs a build made from the command line (a config that names the model)")
    if not build.config:
        raise BuildUnreadable(f"{build.folder}: no config.yaml to rebuild from")
    from ..formats.registry import registered_formats

    unknown = sorted(set((build.config.get("format") or {})) - set(registered_formats()))
    if unknown:
        raise BuildUnreadable(
            f"{build.folder} was built with format(s) {unknown}, which no installed format or plug-in registers "
            f"here (registered: {sorted(registered_formats())}); install the plug-in that provides them to verify")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(export_schema()), build.config)
    except OmegaConfBaseException as exc:
        raise BuildUnreadable(f"{build.folder / 'config.yaml'}: does not fit this version's schema ({exc})") from None
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


def _verdict(build: Build, fmt: str, recorded: dict[str, Any], rebuilt: dict[str, Any]) -> tuple[str, bool]:
    for check in build.files_of(fmt):
        if check.state in (MISSING, MODIFIED):
            return f"{check.file} {check.state.upper()} in {build.folder.name} (its record is not the file)", False
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
        return ("identical content (the bytes differ only in what the process numbers or addresses: TorchScript "
                "class numbers, object ids in a strict torch.export program)"), True
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


def verify(folder: Path) -> tuple[str, bool]:
    """The report and whether every artifact of ``folder`` rebuilds to the same bytes."""
    from ..config.build_key import versions
    from ..interrupts import signals_deferred

    build = read_build(folder)
    # The folder and what removes it come into being together: a Ctrl-C in between (after mkdtemp,
    # before a try) left it behind. Should the signal arrive as this block ends, the object is
    # dropped on the way out and its finalizer removes the folder.
    with signals_deferred():
        scratch = tempfile.TemporaryDirectory(prefix="exporter-verify-", ignore_cleanup_errors=True)
    with scratch:
        rebuilt = _rebuild(build, Path(scratch.name) / "build")
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


def run_verify(folder: Path) -> int:
    """Command line: print the report; 0 all match, 1 a difference, 2 unreadable or not rebuildable."""
    try:
        text, ok = verify(folder)
    except ExportError as exc:
        print(f"error: cannot rebuild {folder}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0 if ok else 1
