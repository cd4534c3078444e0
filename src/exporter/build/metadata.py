"""metadata.json: what was built, from what, with which tools, and how each artifact checked out."""

from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone
from typing import Any, Optional

from ..config.build_key import LIBRARIES, library_versions
from ..records.layout import CONFIG_SNAPSHOT_FILE, METADATA_FILE  # noqa: F401 (the metadata writer's names)

SCHEMA_VERSION = "1.0"


def environment() -> dict[str, Any]:
    """Versions of Python and of every library that shapes an artifact (the libraries:
    ``exporter.config.build_key.LIBRARIES``; None for one not installed)."""
    return {"python": platform.python_version(), "platform": platform.platform(), **library_versions(LIBRARIES),
            "executable": sys.executable}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plain(obj: Any) -> Any:
    """Dataclasses, enums and containers as plain JSON/YAML values."""
    from dataclasses import asdict, is_dataclass

    from ..config.schema import option_value

    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return option_value(obj)


def _io_record(name: str, tensor: Any) -> dict[str, Any]:
    return {"name": name, "dtype": str(tensor.dtype).replace("torch.", ""), "shape": list(tensor.shape)}


def _io(plan: Any, axes: dict[str, dict[str, str]], with_input_axes: bool = False) -> dict[str, Any]:
    return {"inputs": [{**_io_record(n, t), **({"dynamic_axes": dict(axes.get(n, {}))} if with_input_axes else {})}
                       for n, t in plan.inputs.items()],
            "outputs": [{**_io_record(n, t), "dynamic_axes": dict(axes.get(n, {}))}
                        for n, t in zip(plan.context.output_names, plan.eager_outputs)]}


def _common_axes(plan: Any) -> dict[str, dict[str, str]]:
    """The axes every artifact of ``plan`` has, per input and output name."""
    per_artifact = [artifact.dynamic_axes for artifact in plan.artifacts.values()]
    common = {name: {axis: dim for axis, dim in dims.items()
                     if all(other.get(name, {}).get(axis) == dim for other in per_artifact)}
              for name, dims in per_artifact[0].items()}
    return {name: dims for name, dims in common.items() if dims}


def build_metadata(job: Any, plans: list[Any], results: dict[str, Any], seconds: float) -> dict[str, Any]:
    """metadata.json of a finished job (``plans``: its ``Plan``, or one per part of a model exported
    in parts; ``results``: artifact key -> ArtifactResult).

    Format-specific top-level keys (``opset``, ``onnx_backend``) come from each format's
    ``job_metadata`` hook, and are null when the job does not build that format. A model exported
    in parts records each part's inputs and outputs under ``parts``; the top-level ``inputs`` are
    the first part's (what a user feeds) and ``outputs`` the last part's (what comes out).
    """
    from ..formats import registered_formats
    from ..quantization import mode_of
    from .job import overall_status

    q = job.quantization
    plan, last = plans[0], plans[-1]
    first_input = next(iter(plan.inputs.values()))
    # The axes every artifact of a part has (each artifact records its own under dynamic_axes).
    axes: dict[str, dict[str, str]] = {}
    for each in plans:
        axes.update(_common_axes(each))
    format_keys: dict[str, Any] = {key: None for cls in registered_formats().values() for key in cls.metadata_keys}
    for name, exporter in plan.exporters.items():
        if plan.key(name) in results:
            format_keys.update(exporter.job_metadata(results[plan.key(name)].record.to_dict()))
    # Each part's own axes: parts share names (input_ids, present.*) whose axes differ between them.
    parts = {each.part: _io(each, _common_axes(each), with_input_axes=True) for each in plans} if len(plans) > 1 else None
    return {
        "schema_version": SCHEMA_VERSION,
        "status": overall_status([r.status for r in results.values()]),
        "task_name": job.task_spec.task_name,
        "task_type": job.task_spec.task_type,
        "modality": job.task_spec.modality,
        "input_shape": list(first_input.shape),
        "output_shape": list(last.eager.shape),
        "inputs": _io(plan, axes)["inputs"],
        "outputs": _io(last, axes)["outputs"],
        # Tensors the model returned that the config chose not to export (task_spec.outputs).
        "outputs_left_out": {n: last.choice.returned[n] for n in last.choice.left_out},
        # A model exported in parts: each part's inputs and outputs (artifacts: <format>/<part>).
        **({"parts": parts} if parts else {}),
        "dynamic_axes": axes,
        # A build with the key/value cache: its layout ("decoder" or "encoder-decoder"), the artifacts
        # that carry it, and their inputs and outputs (adapters/kv_cache.py, seq2seq.py); null without.
        "cache": _cache_record(plans, results),
        "exported_at": utc_now(),
        "torch_version": plan.torch_version,
        "formats": list(job.formats),
        # The specification's field: the mode, or null. The full settings are beside it.
        "quantization": None if mode_of(q) == "none" else mode_of(q),
        "quantization_config": None if mode_of(q) == "none" else plain(q),
        "calibration": plan.calibration.record() if plan.calibration is not None else None,
        **format_keys,
        "seed": job.seed,
        "task_spec": job.task_spec.to_dict(),
        "model_class": f"{type(job.model).__module__}.{type(job.model).__qualname__}",
        "parameters": sum(p.numel() for p in job.model.parameters()),
        "environment": environment(),
        **job.provenance,
        "total_seconds": round(seconds, 3),
        "artifacts": {name: r.record.to_dict() for name, r in results.items()},
    }


def _cache_record(plans: list[Any], results: dict) -> Optional[dict[str, Any]]:
    """The ``cache`` entry: the layout of the cache the build's graphs carry, which artifacts carry
    it, and (a causal LM) its graph's inputs and outputs with named axes; None without a cache."""
    cached = [plan for plan in plans if getattr(getattr(plan.whole, "adapter", None), "cache", None) is not None]
    if cached:  # an encoder-decoder's parts with the cache (adapters/seq2seq.py): each part's I/O is under parts
        layout = cached[0].whole.adapter.cache
        keys = [artifact.key for plan in cached for artifact in plan.artifacts.values()]
        return {**layout.to_dict(), "artifacts": [k for k in keys if k in results],
                "parts": [plan.part for plan in cached]}
    plan = plans[0]
    ctx = getattr(plan, "cache_context", None)
    if ctx is None:
        return None
    carriers = [artifact.key for artifact in plan.artifacts.values() if artifact.context is ctx]
    io = {"inputs": [_io_record(n, t) for n, t in ctx.example_inputs.items()],
          "outputs": [_io_record(n, t) for n, t in zip(ctx.output_names, ctx.example_outputs)]}
    axes = ctx.adapter.dynamic_axes(batch=True, sequence=True)
    for record in io["inputs"] + io["outputs"]:  # the example's sizes, each varying axis by its name
        named = axes.get(record["name"], {})
        record["shape"] = [named.get(axis, size) for axis, size in enumerate(record["shape"])]
    return {**ctx.adapter.layout.to_dict(), "artifacts": [k for k in carriers if k in results], **io}
