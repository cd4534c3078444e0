"""A build's identity: one hash over everything that decides what a build folder contains.

Two builds with the same key are the same build, so a job whose key equals the one recorded in its
folder (and whose files still hash as recorded) has nothing to do. What goes in, and why:

- the resolved config, without the keys that only say where or how the job runs (``export_dir``,
  ``wait``, ``force``, ``cache``) and without the options of formats the job does not build;
- the checkpoint's sha256 in place of its path (a moved file is the same weights; an overwritten
  one is not), and likewise the calibration ``.npz`` file's sha256 and, for a model loaded from a
  folder (``model.path``, the ``hf_*`` options), every file's sha256 and the transformers version;
- the seed (already in the config; named on its own in the inputs for readers);
- the versions of exporter, torch, onnx, onnxruntime and onnxscript, and Python's minor version:
  each shapes the artifact bytes;
- the model's code: the sha256 of every source file of the top-level package that defines
  ``model._target_`` (or, for a top-level module such as ``mynets.py``, of every module in its
  folder: the helpers it imports) when it is your code, or the version of the installed
  distribution it comes from. Code elsewhere (another package of yours) is not tracked: use
  ``force=true`` after changing it.

Not in it: timestamps, the host, the Python executable and the working directory (they do not
change what is built). A calibration ``dataset`` (a ``_target_`` that yields samples) cannot be
hashed before it runs, so such a build is never up to date: it always rebuilds.

Example:
    >>> inputs = key_inputs({"seed": 0, "export_dir": "/tmp/x", "format": {}}, model_target=None)
    >>> inputs["config"]
    {'seed': 0, 'format': {}}
    >>> len(build_key(inputs))
    64
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional

from ..files import sha256_known
from . import environment as settings

# 2: a model's own code is hashed file by file (so that an unchanged file is not read again).
KEY_VERSION = 2
# Where and how a job runs, not what it builds.
RUN_OPTIONS = ("export_dir", "wait", "force", "cache")
# Every library whose version a build records (metadata.json ``environment``, in this order), and
# whether it is keyed: True for those that shape the artifact bytes, whose versions are in the build
# key too. transformers is recorded (the code a Hugging Face model folder runs); a model folder's key
# has its version beside the folder's files (model_files).
LIBRARIES: Mapping[str, bool] = MappingProxyType({
    "exporter": True, "torch": True, "onnx": True, "onnxruntime": True, "onnxscript": True,
    "hydra-core": False, "omegaconf": False, "numpy": False, "transformers": False,
})
DISTRIBUTIONS = tuple(name for name, keyed in LIBRARIES.items() if keyed)
UNHASHABLE = "unhashable"
# Hashing the source of a model's package stops here (a huge source tree would slow every up-to-date check).
_MAX_SOURCE_FILES = 2000


def _file_identity(path: Optional[str]) -> Optional[dict[str, Any]]:
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        return {"missing": str(path)}
    return {"sha256": sha256_known(file)}


def _folder_identity(path: Any) -> Optional[dict[str, Any]]:
    """A model folder given as ``model.path`` (``save_pretrained``): the sha256 of each of its files
    and the transformers version that reads them. None when the model has no such folder."""
    if not isinstance(path, str) or not Path(path).expanduser().is_dir():
        return None
    folder = Path(path).expanduser()
    files = {name: sha256_known(folder / name) for name in _files_under(folder)}
    return {"files": files, "transformers": library_versions(["transformers"])["transformers"]}


def _files_under(folder: Path) -> list[str]:
    """Every file under ``folder``, by its path relative to it, sorted; through links to folders too
    (a loader reads a file in a linked subfolder as any other), each real folder walked once."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [os.path.relpath(os.path.join(root, f), folder) for f in files if os.path.isfile(os.path.join(root, f))]
    return sorted(found)


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, Optional[str]]:
    """Installed versions of ``names`` (default: every library in ``LIBRARIES``), None for one not
    installed; read from package metadata once per process (a sweep asks for every job): nothing
    imported."""
    return {dist: _version(dist) for dist in names}


@functools.lru_cache(maxsize=None)
def _version(dist: str) -> Optional[str]:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Optional[str]]:
    """Versions of the packages that shape an artifact (the keyed ones of ``LIBRARIES``)."""
    return library_versions(DISTRIBUTIONS)


def model_code(target: Optional[str]) -> Optional[dict[str, Any]]:
    """Identity of the code behind ``model._target_`` without running it: the installed
    distribution's version, or a sha256 over the defining module's source files."""
    if not target or "." not in target:
        return None
    parts = target.split(".")
    for end in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:end])
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError, AttributeError):
            spec = None
        if spec is not None and spec.origin and spec.origin not in ("built-in", "frozen"):
            break
    else:
        return {"module": parts[0], "unknown": True}
    origin = Path(spec.origin)
    top = module.split(".")[0]
    if "site-packages" in origin.parts or "dist-packages" in origin.parts:
        try:
            return {"module": module, "distribution": top, "version": importlib_metadata.version(top)}
        except importlib_metadata.PackageNotFoundError:
            pass
    # Your own code: the model's module imports helpers beside it, so hash them all: the whole
    # top-level package, or every module in the folder of a top-level module (e.g. mynets.py).
    top_spec = importlib.util.find_spec(top) if top != module else spec
    roots = list(top_spec.submodule_search_locations or []) if top_spec and top_spec.submodule_search_locations else []
    if roots:
        files = sorted(f for root in roots for f in Path(root).rglob("*.py"))
    else:
        files = sorted(Path(top_spec.origin if top_spec and top_spec.origin else origin).parent.glob("*.py"))
    digest = hashlib.sha256()
    for file in files[:_MAX_SOURCE_FILES]:
        digest.update(str(file.name).encode() + b"\0" + sha256_known(file).encode() + b"\0")
    return {"module": module, "sha256": digest.hexdigest(), "files": min(len(files), _MAX_SOURCE_FILES)}


def key_inputs(config: Mapping[str, Any], *, model_target: Optional[str],
               model_identity: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Everything the key hashes, as a JSON-ready dict (recorded in metadata.json beside the key)."""
    cfg = {k: v for k, v in config.items() if k not in RUN_OPTIONS}
    formats = cfg.get("format") or {}
    if isinstance(formats, Mapping):
        cfg["format"] = {name: options for name, options in formats.items()
                         if isinstance(options, Mapping) and options.get("enabled", True)}
    checkpoint = _file_identity(cfg.pop("checkpoint", None))
    calibration = None
    quantization = cfg.get("quantization") or {}
    mode = quantization.get("mode") if isinstance(quantization, Mapping) else None
    calibration_cfg = dict(cfg.get("calibration") or {})
    if mode in (None, "none"):
        cfg.pop("calibration", None)  # unused without quantization
    elif calibration_cfg.get("source") == "npz":
        calibration = _file_identity(calibration_cfg.pop("path", None))
        cfg["calibration"] = calibration_cfg
    elif calibration_cfg.get("source") == "dataset":
        calibration = UNHASHABLE
    inputs = {
        "key_version": KEY_VERSION,
        "config": cfg,
        "checkpoint": checkpoint,
        "calibration": calibration,
        "seed": cfg.get("seed"),
        "versions": versions(),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "model_code": model_identity if model_identity is not None else model_code(model_target),
        # A model loaded from a folder (model.path): its files by content, so a folder saved over
        # in place is not mistaken for the same build.
        "model_files": _folder_identity((cfg.get("model") or {}).get("path")
                                        if isinstance(cfg.get("model"), Mapping) else None),
    }
    # Internal size settings change where an ONNX artifact's weights go (exporter.config.environment); only
    # those set are keyed, so a build at the defaults keeps the key it had before they existed.
    changed = settings.current()
    if changed:
        inputs["settings"] = changed
    return inputs


def build_key(inputs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``key_inputs``."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def reusable(inputs: Mapping[str, Any]) -> bool:
    """False when something in the inputs cannot be known before the build (a calibration dataset,
    a missing file): such a build is never skipped as up to date."""
    return inputs.get("calibration") != UNHASHABLE and not any(
        isinstance(v, Mapping) and "missing" in v for v in (inputs.get("checkpoint"), inputs.get("calibration")))
