"""ONNX: torch.onnx.export (legacy or dynamo backend), checked in ONNX Runtime."""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExportError, first_line
from ..schema import option_value
from ..quantize import onnx_dynamic_quantize, onnx_fp16, onnx_static_quantize
from .base import ExportContext, ExportOutcome, FormatExporter, Runnable

log = logging.getLogger("exporter")

# The dynamo exporter only has implementations from opset 18; asked for less, it silently
# returns 18 (torch 2.13), so lower opsets must go through the legacy exporter.
DYNAMO_MIN_OPSET = 18
BACKENDS = ("auto", "legacy", "dynamo")


class OnnxExporter(FormatExporter):
    """Writes ``model.onnx``; loads it back in an ONNX Runtime CPU session."""

    name = "onnx"

    @property
    def filename(self) -> str:
        return "model.onnx"

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.options.dynamic_batch)

    @property
    def dynamic_sequence(self) -> bool:
        return bool(self.options.dynamic_sequence)

    @property
    def opset(self) -> int:
        return int(self.options.opset)

    @property
    def backend(self) -> str:
        return option_value(self.options.backend)

    def input_names(self, ctx: ExportContext) -> list[str]:
        return list(self.options.input_names or ctx.adapter.input_names)

    def output_names(self, ctx: ExportContext) -> list[str]:
        return list(self.options.output_names or ctx.adapter.output_names)

    def weight_types(self, mode: str) -> list[str]:
        return ["qint8", "quint8"] if mode in ("dynamic", "static") else ["qint8"]

    def check(self, ctx: ExportContext) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"format.onnx.backend: unknown backend {self.backend!r}; valid values: {list(BACKENDS)}")
        if self.backend == "dynamo" and self.opset < DYNAMO_MIN_OPSET:
            raise ConfigError(
                f"format.onnx.backend=dynamo exports opset {DYNAMO_MIN_OPSET} or newer, but format.onnx.opset="
                f"{self.opset}; set format.onnx.opset>={DYNAMO_MIN_OPSET} or format.onnx.backend=legacy (or auto)"
            )
        if not 7 <= self.opset <= 23:
            raise ConfigError(f"format.onnx.opset: {self.opset} is out of range; valid values: 7 to 23")
        n_inputs = len(ctx.example_inputs)
        if self.options.input_names is not None and len(self.options.input_names) != n_inputs:
            raise ConfigError(
                f"format.onnx.input_names: the model takes {n_inputs} input(s) {list(ctx.example_inputs)}, "
                f"but {len(self.options.input_names)} name(s) were given: {list(self.options.input_names)}"
            )
        if self.options.output_names is not None and len(self.options.output_names) != 1:
            raise ConfigError(
                f"format.onnx.output_names: the exported graph has one output, but "
                f"{len(self.options.output_names)} name(s) were given: {list(self.options.output_names)}"
            )

    def _dynamic_axes(self, ctx: ExportContext) -> dict[str, dict[int, str]]:
        # The adapter names axes by its own input/output names; carry them over to the user's names.
        renames = dict(zip(ctx.adapter.input_names, self.input_names(ctx)))
        renames.update(zip(ctx.adapter.output_names, self.output_names(ctx)))
        axes = ctx.adapter.dynamic_axes(batch=self.dynamic_batch, sequence=self.dynamic_sequence)
        return {renames.get(name, name): dims for name, dims in axes.items()}

    def export(self, ctx: ExportContext, path: Path) -> ExportOutcome:
        import onnx

        fp32_path = path.with_name("fp32-" + path.name) if ctx.quantized else path
        details: dict[str, Any] = {"opset": self.opset, "backend_requested": self.backend}
        backend = "legacy" if self.backend == "auto" and self.opset < DYNAMO_MIN_OPSET else self.backend
        if backend == "auto":
            try:
                self._torch_export(ctx, fp32_path, dynamo=True)
                backend = "dynamo"
            except Exception as exc:  # noqa: BLE001 - any dynamo failure falls back to the legacy backend
                details["dynamo_error"] = first_line(exc, with_type=True)
                log.warning("onnx: dynamo exporter failed (%s); falling back to the legacy exporter", first_line(exc, with_type=True))
                backend = "legacy"
                self._torch_export(ctx, fp32_path, dynamo=False)
        else:
            self._torch_export(ctx, fp32_path, dynamo=backend == "dynamo")
        details["backend"] = backend

        proto = onnx.load(str(fp32_path), load_external_data=False)
        actual = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if actual != self.opset:
            raise ExportError(
                f"format.onnx.opset: asked for opset {self.opset}, but the {backend} exporter produced opset "
                f"{actual}; use format.onnx.backend=legacy for opsets below {DYNAMO_MIN_OPSET}"
            )
        onnx.checker.check_model(str(fp32_path))
        details["ir_version"] = proto.ir_version
        details["input_names"] = [i.name for i in proto.graph.input]
        details["output_names"] = [o.name for o in proto.graph.output]
        details["dynamic_axes"] = {k: {str(a): n for a, n in v.items()} for k, v in self._dynamic_axes(ctx).items()}

        if ctx.mode == "dynamic":
            details["quantization"] = onnx_dynamic_quantize(fp32_path, path, ctx.quantization)
        elif ctx.mode == "static":
            renames = dict(zip(ctx.adapter.input_names, self.input_names(ctx)))
            details["quantization"] = onnx_static_quantize(fp32_path, path, ctx.quantization,
                                                           ctx.calibration.samples, renames)
        elif ctx.mode == "fp16":
            details["quantization"] = onnx_fp16(fp32_path, path)
        if ctx.quantized:
            fp32_path.unlink()
        _tag(path, ctx.tags())
        return ExportOutcome(
            details=details,
            load_hint=(
                "import onnxruntime as ort\n"
                f"session = ort.InferenceSession('{self.filename}', providers=['CPUExecutionProvider'])\n"
                f"outputs = session.run(None, {{{', '.join(repr(n) + ': ...' for n in details['input_names'])}}})"
            ),
        )

    def _torch_export(self, ctx: ExportContext, path: Path, dynamo: bool) -> None:
        import torch

        module = ctx.adapter.wrap(ctx.model)
        kwargs: dict[str, Any] = dict(
            input_names=self.input_names(ctx),
            output_names=self.output_names(ctx),
            opset_version=self.opset,
            dynamic_axes=self._dynamic_axes(ctx) or None,
        )
        if dynamo:
            kwargs.update(dynamo=True, external_data=False, verbose=False,
                          dynamic_axes=None, dynamic_shapes=self._dynamic_shapes(ctx))
        else:
            kwargs.update(dynamo=False, do_constant_folding=bool(self.options.constant_folding))
        # Both backends print progress and deprecation notes; the job's log says what matters.
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(ctx.example_inputs.values()), str(path), **kwargs)

    def _dynamic_shapes(self, ctx: ExportContext) -> Any:
        """torch.export's form of the dynamic axes: named Dims per input of the (varargs) wrapper."""
        import torch

        axes = ctx.adapter.dynamic_axes(batch=self.dynamic_batch, sequence=self.dynamic_sequence)
        if not any(name in axes for name in ctx.example_inputs):
            return None
        dims: dict[str, Any] = {}
        per_input = []
        for name, tensor in ctx.example_inputs.items():
            spec = {}
            for axis, dim_name in axes.get(name, {}).items():
                if dim_name not in dims:
                    # The example holds the longest sequence the model takes (max_seq_len).
                    bound = {"max": int(tensor.shape[axis])} if dim_name == "sequence" else {}
                    dims[dim_name] = torch.export.Dim(dim_name, **bound)
                spec[axis] = dims[dim_name]
            per_input.append(spec or None)
        # The wrapper's forward(*tensors) takes all inputs as one varargs tuple.
        return (tuple(per_input),)

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
            return session.run(None, {k: v for k, v in feed.items() if k in graph_inputs})[0]

        return run


def _tag(path: Path, tags: dict[str, str]) -> None:
    """Write ``tags`` into the model's metadata_props (external data, if any, stays where it is)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    existing = {p.key: p for p in model.metadata_props}
    for key, value in tags.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))
