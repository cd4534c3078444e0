"""ONNX: torch.onnx.export (legacy or dynamo backend), checked in ONNX Runtime; quantized by ONNX
Runtime's quantizers on the exported graph (``quantize.py``)."""

from __future__ import annotations

import contextlib

import logging
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from ...config.schema import option_value
from ...errors import ConfigError, ExportError, first_line, out_of_space
from ...records.layout import input_variable
from ..base import ExportContext, ExportOutcome, FormatExporter, Runnable, quiet_torch
from ..dynamic_shapes import torch_export_dynamic_shapes
from ..registry import register_format
from ..traceable_masks import SWAPPED_MASKS_NOTE, traceable_attention_masks
from . import external as external_data
from .deferred import weights_beside, weights_streamable

log = logging.getLogger("exporter")

# The dynamo exporter only has implementations from opset 18; asked for less, it silently
# returns 18 (torch 2.13), so lower opsets must go through the legacy exporter.
DYNAMO_MIN_OPSET = 18


class OnnxBackend(str, Enum):
    auto = "auto"
    legacy = "legacy"
    dynamo = "dynamo"


BACKENDS = tuple(b.value for b in OnnxBackend)


@dataclass
class OnnxFormatConfig:
    # Set by choosing the format (format=onnx, format=[onnx,...]). The options of a format the job
    # does not build stay in the config, unused, so one sweep can set them for the jobs that do.
    enabled: bool = False
    # 7 to 23: the legacy exporter covers 7-20, the dynamo exporter 18 and up.
    opset: int = field(default=14, metadata={"min": 7, "max": 23, "help": "ONNX operator set"})
    # auto: the legacy TorchScript-based exporter (fast, byte-deterministic) below opset 18;
    # the dynamo exporter from 18 on, falling back to legacy if dynamo fails.
    backend: OnnxBackend = field(default=OnnxBackend.auto,
                                 metadata={"help": "auto | legacy | dynamo (dynamo needs opset >= 18)"})
    dynamic_batch: bool = field(default=True, metadata={"help": "symbolic batch axis"})
    # Text models: leave the sequence axis symbolic too (any length up to the model's maximum).
    dynamic_sequence: bool = field(default=True, metadata={
        "help": "text: symbolic sequence axis too; images: height and width (task_spec.dynamic_image_size)"})
    # null: the job's names (pixel_values / input_ids -> logits, or task_spec.outputs).
    input_names: Optional[List[str]] = field(default=None, metadata={"help": "graph input names (default: the adapter's)"})
    output_names: Optional[List[str]] = field(default=None, metadata={"help": "graph output names, one per output"})
    # Fold constants at export time (legacy exporter).
    constant_folding: bool = field(default=True, metadata={"help": "fold constants (legacy exporter)"})
    # null: weights over 256 MiB in model.onnx.data (ONNX Runtime then maps them instead of reading a
    # self-contained file whole: 0.28 GB less on a 124M GPT-2), smaller models self-contained; true:
    # always a data file; false: always self-contained (refused over the 2 GiB protobuf limit).
    external_data: Optional[bool] = field(default=None, metadata={
        "help": "weights in model.onnx.data: null (over 256 MiB) | true | false"})
    # backend=auto below opset 18: when the legacy exporter fails, or its graph fails the second-shape
    # check (a size baked in as a constant), the job retries with the dynamo exporter at opset 18 and
    # says so; true: keep the asked opset and fail instead.
    strict_opset: bool = field(default=False, metadata={
        "help": "true: never fall back from the legacy exporter to dynamo at opset 18"})


@register_format
class OnnxExporter(FormatExporter):
    """Writes ``model.onnx``; loads it back in an ONNX Runtime CPU session."""

    carries_cache = True

    name = "onnx"
    options_schema = OnnxFormatConfig
    summary = "model.onnx, checked in ONNX Runtime"
    # ONNX Runtime's quantizers, on the graph this job exported (quantize.py).
    quantization = {"dynamic": ("qint8", "quint8"), "static": ("qint8", "quint8"), "fp16": ()}
    metadata_keys = ("opset", "onnx_backend")

    @property
    def filename(self) -> str:
        return f"{self.stem}.onnx"

    @classmethod
    def extra_file_names(cls, filename: str) -> tuple[str, ...]:
        return (external_data.data_file(Path(filename)).name,)

    @property
    def opset(self) -> int:
        return int(self.options.opset)

    @property
    def backend(self) -> str:
        return option_value(self.options.backend)

    def input_names(self, ctx: ExportContext) -> list[str]:
        return list(self.options.input_names or ctx.adapter.input_names)

    def output_names(self, ctx: ExportContext) -> list[str]:
        return list(self.options.output_names or ctx.output_names)

    def job_metadata(self, record: Mapping[str, Any]) -> dict[str, Any]:
        details = record.get("details") or {}
        return {"opset": details.get("opset", self.opset), "onnx_backend": details.get("backend")}

    @classmethod
    def check_options(cls, options: Any) -> None:
        backend = option_value(options.backend)
        if backend not in BACKENDS:
            raise ConfigError(f"format.onnx.backend: unknown backend {backend!r}; valid values: {list(BACKENDS)}")
        if backend == "dynamo" and int(options.opset) < DYNAMO_MIN_OPSET:
            raise ConfigError(
                f"format.onnx.backend=dynamo exports opset {DYNAMO_MIN_OPSET} or newer, but format.onnx.opset="
                f"{options.opset}; set format.onnx.opset>={DYNAMO_MIN_OPSET} or format.onnx.backend=legacy (or auto)"
            )

    @classmethod
    def check_names(cls, options: Any, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        inputs = list(options.input_names or input_names)
        outputs = list(options.output_names or output_names)
        for key, names in (("input_names", options.input_names), ("output_names", options.output_names)):
            if names is not None:
                if any(not str(name) for name in names):
                    raise ConfigError(f"format.onnx.{key}: an empty name in {list(names)}; give every one a name")
                twice = sorted({str(name) for name in names if list(names).count(name) > 1})
                if twice:
                    raise ConfigError(f"format.onnx.{key}: {twice} given more than once in {list(names)}; "
                                      "a graph's names are unique")
        clash = [name for name in inputs if name in outputs]
        if clash:
            which = ("format.onnx.input_names" if options.input_names is not None else
                     "format.onnx.output_names" if options.output_names is not None else "the task's names")
            raise ConfigError(
                f"{which}: {clash} would name both a graph input and an output (inputs {inputs}, outputs "
                f"{outputs}); an ONNX graph's names are unique: choose other names")

    def check(self, ctx: ExportContext) -> None:
        super().check(ctx)
        if self.options.external_data is False and external_data.weight_bytes(ctx.model) > external_data.INLINE_LIMIT:
            raise ConfigError(
                f"format.onnx.external_data=false: {external_data.weight_bytes(ctx.model) / 2**30:.2f} GiB of weights "
                f"do not fit in one protobuf message (2 GiB); set format.onnx.external_data=true or null")
        n_inputs = len(ctx.example_inputs)
        if self.options.input_names is not None and len(self.options.input_names) != n_inputs:
            raise ConfigError(
                f"format.onnx.input_names: the model takes {n_inputs} input(s) {list(ctx.example_inputs)}, "
                f"but {len(self.options.input_names)} name(s) were given: {list(self.options.input_names)}"
            )
        n_outputs = len(ctx.output_names)
        if self.options.output_names is not None and len(self.options.output_names) != n_outputs:
            raise ConfigError(
                f"format.onnx.output_names: the exported graph has {n_outputs} output(s) {ctx.output_names}, but "
                f"{len(self.options.output_names)} name(s) were given: {list(self.options.output_names)}"
            )

    def _dynamic_axes(self, ctx: ExportContext) -> dict[str, dict[int, str]]:
        # Axes are named by the job's input/output names; carry them over to the user's names.
        renames = dict(zip(ctx.example_inputs, self.input_names(ctx)))
        renames.update(zip(ctx.output_names, self.output_names(ctx)))
        axes = ctx.dynamic_axes(batch=self.dynamic_batch, sequence=self.dynamic_sequence)
        return {renames.get(name, name): dims for name, dims in axes.items()}

    @property
    def may_fall_back(self) -> bool:
        """backend=auto below opset 18 with strict_opset=false: a legacy failure retries with dynamo."""
        return self.backend == "auto" and self.opset < DYNAMO_MIN_OPSET and not self.options.strict_opset

    def _auto_choice(self, ctx: ExportContext) -> tuple[str, int, str]:
        """backend=auto: the backend and opset for this model, and why (recorded in metadata)."""
        size = external_data.weight_bytes(ctx.model)
        if self.opset >= DYNAMO_MIN_OPSET:
            return "auto", self.opset, (f"opset {self.opset}: the dynamo exporter, with the legacy one as a fallback")
        limit = external_data.auto_dynamo_bytes(streamed=weights_streamable())
        large = limit is not None and size > limit
        if large and self.options.strict_opset:
            return "legacy", self.opset, (f"{size / 2**20:.1f} MiB of weights would take the dynamo exporter at opset "
                                          f"{DYNAMO_MIN_OPSET}, but format.onnx.strict_opset=true keeps opset "
                                          f"{self.opset}: the legacy exporter")
        if large:
            return "dynamo", DYNAMO_MIN_OPSET, (
                f"{size / 2**20:.1f} MiB of weights (over {limit / 2**20:.0f} MiB): the "
                f"dynamo exporter at opset {DYNAMO_MIN_OPSET}, which does not hold the serialized graph in memory "
                f"as the legacy one does (format.onnx.strict_opset=true keeps opset {self.opset})")
        return "legacy", self.opset, (f"opset {self.opset} and {size / 2**20:.1f} MiB of weights: the legacy "
                                      "exporter (fast and byte-reproducible)")

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        import torch

        if any(p.dtype == torch.bfloat16 for p in ctx.model.parameters()):
            raise ExportError("onnx: the model's weights are bfloat16, which ONNX Runtime's CPU kernels do not run; "
                              "export model.float() (or model.half()); model=hf_* builds in float32 by default")
        details: dict[str, Any] = {"opset": self.opset, "backend_requested": self.backend}
        backend = self.backend
        if self.backend == "auto":
            backend, opset, reason = self._auto_choice(ctx)
            details["backend_choice"] = reason
            if opset != self.opset:
                log.warning("onnx: %s", reason)
                self._torch_export(ctx, path, dynamo=True, opset=opset)
                details["opset"] = opset
                return self._finish(ctx, path, details, "dynamo", opset)
        if backend == "auto":
            try:
                self._torch_export(ctx, path, dynamo=True, opset=self.opset)
                backend = "dynamo"
            except Exception as exc:  # noqa: BLE001 - any dynamo failure falls back to the legacy backend
                if out_of_space(exc):
                    raise
                details["dynamo_error"] = first_line(exc, with_type=True)
                log.warning("onnx: dynamo exporter failed (%s); falling back to the legacy exporter", first_line(exc, with_type=True))
                backend = "legacy"
                self._torch_export(ctx, path, dynamo=False, opset=self.opset)
        elif backend == "legacy" and self.may_fall_back:
            try:
                self._torch_export(ctx, path, dynamo=False, opset=self.opset)
            except Exception as exc:  # noqa: BLE001 - the dynamo exporter may take what legacy cannot
                if out_of_space(exc):
                    raise
                return self._fall_back(ctx, path, f"the legacy exporter failed: {first_line(exc, with_type=True)}")
        else:
            try:
                self._torch_export(ctx, path, dynamo=backend == "dynamo", opset=self.opset)
            except Exception as exc:  # noqa: BLE001 - say what would have helped
                if backend == "legacy" and self.backend == "auto" and self.options.strict_opset:
                    raise ExportError(
                        f"onnx: the legacy exporter failed at opset {self.opset} ({first_line(exc, with_type=True)}); "
                        f"format.onnx.strict_opset=true keeps that opset: set format.onnx.opset={DYNAMO_MIN_OPSET} "
                        "(dynamo exporter) or strict_opset=false to let the job fall back") from exc
                raise
        return self._finish(ctx, path, details, backend, self.opset)

    def retry(self, ctx: ExportContext, path: Path, problem: str, outcome: ExportOutcome) -> Optional[ExportOutcome]:
        """A legacy graph that fails the check (typically a size baked in as a constant at the second
        shape) is exported again with the dynamo exporter at opset 18, once, unless strict_opset."""
        if not self.may_fall_back or outcome.details.get("backend") != "legacy":
            return None
        return self._fall_back(ctx, path, f"the legacy graph failed the check: {problem}")

    def mismatch_hint(self, changed_axes: list[str]) -> str:
        if self.backend == "dynamo" or self.opset >= DYNAMO_MIN_OPSET:
            return "the dynamo exporter specialized it too: compute the size with tensor ops, or fix that axis"
        return (f"the legacy exporter records Python numbers as constants; format.onnx.opset={DYNAMO_MIN_OPSET} uses "
                "the dynamo exporter, which keeps sizes symbolic" + (" (format.onnx.strict_opset=true kept the legacy "
                                                                      "exporter)" if self.options.strict_opset else ""))

    def _fall_back(self, ctx: ExportContext, path: Path, reason: str) -> ExportOutcome:
        log.warning("onnx: %s; exporting with the dynamo exporter at opset %d instead of the legacy exporter at opset "
                    "%d (format.onnx.strict_opset=true makes this an error)", reason, DYNAMO_MIN_OPSET, self.opset)
        path.unlink(missing_ok=True)
        self._torch_export(ctx, path, dynamo=True, opset=DYNAMO_MIN_OPSET)
        details: dict[str, Any] = {"opset": DYNAMO_MIN_OPSET, "backend_requested": self.backend,
                                   "fallback": {"from": f"legacy, opset {self.opset}",
                                                "to": f"dynamo, opset {DYNAMO_MIN_OPSET}", "reason": reason}}
        return self._finish(ctx, path, details, "dynamo", DYNAMO_MIN_OPSET)

    def _finish(self, ctx: ExportContext, path: Path, details: dict[str, Any], backend: str, opset: int) -> ExportOutcome:
        import onnx

        from .tied import store_tied_weights_once

        details["backend"] = backend
        if getattr(self, "_swapped_masks", False):
            details["attention_masks"] = SWAPPED_MASKS_NOTE
        # The graph alone in memory, its weights left in files (external.py): tied weights, tags and
        # the checker work on it, and the weights are streamed into the artifact at the end.
        proto = external_data.load_graph(path)
        actual = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if actual != opset:
            raise ExportError(
                f"format.onnx.opset: asked for opset {opset}, but the {backend} exporter produced opset "
                f"{actual}; use format.onnx.backend=legacy for opsets below {DYNAMO_MIN_OPSET}"
            )
        # Tied weights (an LM head sharing the embedding) stored once: the legacy exporter folds a
        # transposed copy into a second initializer, and the dynamo one does too for some models.
        tied = store_tied_weights_once(proto, path.parent)
        if tied["initializers"]:
            details["tied_weights"] = tied
        _set_tags(proto, ctx.tags())
        # The graph and its references to the data files, without loading the weights (checked by
        # path, beside them, so that the references resolve; the weights may lie in `path` itself).
        graph_only = path.with_name(path.name + ".graph-check")
        graph_only.write_bytes(proto.SerializeToString())
        try:
            onnx.checker.check_model(str(graph_only))
        finally:
            graph_only.unlink()
        # Over the protobuf limit: every weight in one data file beside the graph, never one per tensor.
        external = self._external(ctx)
        external_data.write(proto, path, external=external)
        if external:
            details["external_data"] = external_data.data_file(path).name
        details["ir_version"] = proto.ir_version
        details["input_names"] = [i.name for i in proto.graph.input]
        details["output_names"] = [o.name for o in proto.graph.output]
        details["dynamic_axes"] = {k: {str(a): n for a, n in v.items()} for k, v in self._dynamic_axes(ctx).items()}
        return ExportOutcome(details=details, load_hint=self._load_hint(details["input_names"]))

    def quantize(self, ctx: ExportContext, fp32_path: Path, path: Path) -> ExportOutcome:
        """ONNX Runtime's quantizer on the graph already exported: no second torch.onnx.export."""
        from .quantize import onnx_dynamic_quantize, onnx_fp16, onnx_static_quantize

        if ctx.mode == "dynamic":
            report = onnx_dynamic_quantize(fp32_path, path, ctx.quantization)
        elif ctx.mode == "static":
            renames = dict(zip(ctx.adapter.input_names, self.input_names(ctx)))
            report = onnx_static_quantize(fp32_path, path, ctx.quantization, ctx.calibration.samples, renames)
        else:
            report = onnx_fp16(fp32_path, path)
        _tag(path, ctx.tags())
        return ExportOutcome(details={"quantization": report})

    def _load_hint(self, input_names: list[str]) -> str:
        return ("import onnxruntime as ort\n"
                f"session = ort.InferenceSession('{self.filename}', providers=['CPUExecutionProvider'])\n"
                f"outputs = session.run(None, {{{', '.join(repr(n) + ': ' + input_variable(n) for n in input_names)}}})")

    def _external(self, ctx: ExportContext) -> bool:
        """Whether the artifact keeps its weights in ``model.onnx.data`` (format.onnx.external_data;
        null: over the size in external.py, or over the protobuf limit)."""
        size = external_data.weight_bytes(ctx.model)
        if self.options.external_data is None:
            return size > min(external_data.threshold(), external_data.INLINE_LIMIT)
        return bool(self.options.external_data) or size > external_data.INLINE_LIMIT

    def _torch_export(self, ctx: ExportContext, path: Path, dynamo: bool, opset: int) -> None:
        import torch

        module = ctx.wrap(ctx.model)
        kwargs: dict[str, Any] = dict(
            input_names=self.input_names(ctx),
            output_names=self.output_names(ctx),
            opset_version=opset,
            dynamic_axes=self._dynamic_axes(ctx) or None,
        )
        if dynamo:
            # Weights always to a data file: the graph is finished without them in memory (_finish).
            kwargs.update(dynamo=True, external_data=True, verbose=False,
                          dynamic_axes=None, dynamic_shapes=self._dynamic_shapes(ctx))
        else:
            kwargs.update(dynamo=False, do_constant_folding=bool(self.options.constant_folding))
        # Both backends print progress, deprecation notes and, on failure, the graph (to stderr); the
        # job's log says what matters.
        # The legacy exporter cannot trace transformers 4.53-4.57's vmap attention masks, and the
        # dynamo one gets a graph of vmap's pieces: both export the broadcasting masks instead.
        # The legacy exporter's weights go straight to a data file too (deferred.py): never the whole
        # serialized model in memory.
        # Over the protobuf limit its C++ encoder writes each weight to a file itself, copying nothing.
        small = external_data.weight_bytes(ctx.model) <= external_data.INLINE_LIMIT
        streamed = weights_beside() if not dynamo and small else contextlib.nullcontext(False)
        with warnings.catch_warnings(), quiet_torch(), torch.no_grad(), traceable_attention_masks() as swapped, \
                streamed:
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(ctx.example_inputs.values()), str(path), **kwargs)
        # Read by _finish for the artifact's record (the last export is the one kept).
        self._swapped_masks = swapped

    def _dynamic_shapes(self, ctx: ExportContext) -> Any:
        return torch_export_dynamic_shapes(ctx.adapter, ctx.example_inputs, self.dynamic_batch, self.dynamic_sequence,
                                           named_images=True)

    def load(self, path: Path, ctx: ExportContext) -> Runnable:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Spinning worker threads would steal the CPU from eager PyTorch running in this process.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph_inputs = [i.name for i in session.get_inputs()]
        renames = dict(zip(ctx.adapter.input_names, self.input_names(ctx)))

        def run(inputs):
            feed = {renames.get(k, k): v.numpy() for k, v in inputs.items()}
            # The exporter drops inputs the graph never reads (e.g. an unused attention_mask).
            return session.run(None, {k: v for k, v in feed.items() if k in graph_inputs})

        return run


def _set_tags(model: Any, tags: dict[str, str]) -> None:
    """Write ``tags`` into the model's metadata_props."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in tags.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value


def _tag(path: Path, tags: dict[str, str]) -> None:
    """Write ``tags`` into the metadata_props of the ONNX file at ``path``, its weights streamed
    (external.py), wherever they are kept."""
    external = external_data.data_file(path).exists()
    proto = external_data.load_graph(path)
    _set_tags(proto, tags)
    external_data.write(proto, path, external=external)

