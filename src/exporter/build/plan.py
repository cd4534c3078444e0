"""The checked, ready-to-run form of a job: formats and options checked, exporters built, example
inputs drawn, eager outputs known, calibration samples ready. Everything here happens before the
build folder is touched, so a refused job leaves no trace."""

from __future__ import annotations

import logging
from dataclasses import is_dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

from ..adapters import adapter_for_task
from ..adapters.outputs import choose_outputs
from ..config.checks import check_values
from ..errors import ConfigError
from ..quantization import check_quantization
from .job import ExportJob

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger("exporter")

# Eager outputs of calibration and held-out samples kept between quantized candidates (Plan.reference).
REFERENCE_CACHE_BYTES = 64 * 2**20


def _describe(inputs: "dict[str, torch.Tensor]") -> str:
    return ", ".join(f"{n} {str(t.dtype).replace('torch.', '')}{list(t.shape)}" for n, t in inputs.items())


def _structure(output: Any) -> str:
    """What a model returned, briefly: 'a tuple of (float32[1, 16], float32[1, 10])'."""
    import torch

    def one(value: Any) -> str:
        if isinstance(value, torch.Tensor):
            return f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}"
        return type(value).__name__

    if isinstance(output, torch.Tensor):
        return f"one tensor {one(output)}"
    if isinstance(output, dict) or hasattr(output, "items"):
        return f"a {type(output).__name__} of ({', '.join(f'{k}: {one(v)}' for k, v in output.items())})"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of ({', '.join(one(v) for v in output)})"
    return f"a {type(output).__name__}"


class Plan:
    """The checked, ready-to-run form of a job: exporters built, inputs drawn, eager outputs known."""

    def __init__(self, job: ExportJob, part: Optional[str] = None, whole: Any = None):
        import torch

        from ..formats import ExportContext, check_formats, format_class

        try:
            job.task_spec.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_quantization(job.quantization)
        # Every format known and able to build the quantization asked for, every option in range:
        # refused here, before the folder is touched.
        check_formats(job.formats, job.quantization)
        for name, options in job.formats.items():
            if is_dataclass(options):
                check_values(options, f"format.{name}.")
        for prefix, config in (("quantization.", job.quantization), ("validate.", job.validate),
                               ("calibration.", job.calibration)):
            check_values(config, prefix)
        self.job = job
        self.adapter = job.adapter or adapter_for_task(job.task_spec)
        self.adapter.bind(job.model)
        job.model.eval()
        try:
            self.inputs = self.adapter.example_inputs(job.task_spec, batch_size=1, seed=job.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.eager_outputs = self._eager(self.inputs, first=True)
        self._check_output_contract()
        if callable(getattr(self.adapter, "check_outputs", None)):
            try:
                self.adapter.check_outputs(self.choice.names, self.eager_outputs, self.inputs)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self._second: dict[tuple[int, bool], Any] = {}
        self.context = ExportContext(
            model=job.model, adapter=self.adapter, task_spec=job.task_spec, example_inputs=self.inputs,
            quantization=job.quantization, output_choice=self.choice, example_outputs=self.eager_outputs,
        )
        self.exporters = {name: format_class(name)(options) for name, options in job.formats.items()}
        # A model exported in parts: this plan is one part (its name is the artifacts' file stem);
        # ``whole`` is the model's own job (model and adapter) the parts are checked together against.
        self.part, self.whole = part, whole
        for name, exporter in self.exporters.items():
            if part is not None:
                exporter.stem = part
                if not exporter.filename.startswith(f"{part}."):
                    raise ConfigError(f"format {name} cannot export a model in parts ({part}): its file name "
                                      f"{exporter.filename!r} does not follow FormatExporter.stem")
        for exporter in self.exporters.values():
            exporter.check(self.context)
        self.calibration = None
        self._references: dict[str, dict[int, list]] = {}
        self._reference_bytes = 0
        if self.context.quantized:
            from ..quantization.calibration import build_calibration

            self.calibration = build_calibration(job.calibration, self.adapter, job.task_spec, self.inputs,
                                                 job.seed, dataset=job.calibration_dataset)
            self.context.calibration = self.calibration
        self.torch_version = torch.__version__

    def key(self, format_name: str) -> str:
        """This plan's artifact of ``format_name`` in metadata.json: the format's name, or
        ``<format>/<part>`` for a part (``onnx/encoder``)."""
        return format_name if self.part is None else f"{format_name}/{self.part}"

    def _eager(self, inputs, first: bool) -> "list[torch.Tensor]":
        """The exported outputs of the model on ``inputs``; on the first (example) input, also settle
        which outputs those are (``self.choice``)."""
        import torch

        try:
            with torch.no_grad():
                raw = self.adapter.call(self.job.model, inputs)
        except Exception as exc:  # noqa: BLE001 - any failure here is the user's model/input mismatch
            if not first:
                raise
            raise ConfigError(
                f"the model failed on its example input ({_describe(inputs)}) drawn from task_spec "
                f"{self.job.task_spec.task_name!r} (input_schema {self.job.task_spec.input_schema}): "
                f"{type(exc).__name__}: {exc}. Check task_spec.{'inputs' if self.job.task_spec.inputs is not None else 'input_schema'} "
                "against what the model expects."
            ) from None
        if first:
            self.raw_output = raw
            self.choice = choose_outputs(self.job.task_spec.outputs, self.adapter, raw)
        return self.choice.pick(self.adapter, raw)

    @property
    def eager(self) -> "torch.Tensor":
        """The first exported output on the example input (what ``output_shape`` records)."""
        return self.eager_outputs[0]

    def _check_output_contract(self) -> None:
        """The first output must be what the task spec says it is, and every output finite unless allowed."""
        import torch

        spec, eager, name = self.job.task_spec, self.eager, self.choice.names[0]
        schema = spec.output_schema or {}
        key = "num_classes" if "num_classes" in schema else (
            "vocab_size" if spec.task_type == "language_modeling" and "vocab_size" in schema else None)
        if key is not None and (eager.dim() == 0 or int(eager.shape[-1]) != int(schema[key])):
            last = int(eager.shape[-1]) if eager.dim() else "none (a scalar)"
            raise ConfigError(
                f"task_spec.output_schema.{key} is {schema[key]}, but the first exported output ({name}) has shape "
                f"{list(eager.shape)} (last dimension {last}); the model returned {_structure(self.raw_output)}. "
                f"Set task_spec.output_schema.{key}={last} if that output is right, or choose the outputs with "
                "task_spec.outputs=[...] (the first is checked against the task spec)"
            )
        if getattr(self.job.validate, "allow_nonfinite", False):
            return
        for name, output in zip(self.choice.names, self.eager_outputs):
            bad = int((~torch.isfinite(output)).sum()) if output.is_floating_point() else 0
            if bad:
                raise ConfigError(
                    f"the model's output {name} on its example input holds {bad} non-finite value(s) (NaN or inf) "
                    f"out of {output.numel()}; an artifact cannot be checked against that. Fix the model or its "
                    "weights, or set validate.allow_nonfinite=true to accept them"
                )

    def reference(self, split: str) -> "tuple[list, Iterator[list[np.ndarray]]]":
        """Calibration or held-out samples with their eager fp32 outputs, computed as they are read.

        Outputs are kept for the next quantized candidate while all kept total at most
        ``REFERENCE_CACHE_BYTES``; past it they are computed again instead: a language model's logits
        on 48 samples of 128 tokens are 1.2 GB at GPT-2's vocabulary, more than the 124M model's
        weights, and holding them set the peak memory of its quantized build.
        """
        samples = self.calibration.samples if split == "calibration" else self.calibration.heldout
        return samples, self._eager_outputs(split, samples)

    def _eager_outputs(self, split: str, samples: list) -> "Iterator[list[np.ndarray]]":
        import torch

        kept = self._references.setdefault(split, {})
        for index, sample in enumerate(samples):
            if index in kept:
                yield kept[index]
                continue
            with torch.no_grad():
                outputs = [t.numpy() for t in self.context.outputs(self.job.model, sample)]
            size = sum(o.nbytes for o in outputs)
            if self._reference_bytes + size <= REFERENCE_CACHE_BYTES:
                kept[index] = outputs
                self._reference_bytes += size
            yield outputs

    def _shorter(self, exporter) -> bool:
        """Whether the artifact declares a dynamic axis besides the batch (text: the sequence)."""
        return bool(self.adapter.sequence_axes and exporter.dynamic_sequence)

    def second_example(self, exporter) -> "tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None":
        """A differently sized input that proves each dynamic axis the artifact declares: another batch
        size (when the batch is dynamic) and, for text with a dynamic sequence axis, half the sequence
        length. None when the artifact declares no dynamic axis or the check is switched off."""
        cfg = self.job.validate
        shorter = self._shorter(exporter)
        if not cfg.enabled or cfg.second_batch_size <= 1 or not (exporter.dynamic_batch or shorter):
            return None
        batch = int(cfg.second_batch_size) if exporter.dynamic_batch else int(next(iter(self.inputs.values())).shape[0])
        key = (batch, shorter)
        if key not in self._second:
            seq_len = None
            if shorter:  # half the first varying axis of the inputs (declared adapters halve each)
                name, axis = next((n, a) for n, a in self.adapter.sequence_axes.items() if n in self.inputs)
                seq_len = max(1, int(self.inputs[name].shape[axis]) // 2)
            inputs = self.adapter.example_inputs(self.job.task_spec, batch_size=batch, seed=self.job.seed + 1,
                                                 seq_len=seq_len)
            try:
                self._second[key] = (inputs, self._eager(inputs, first=False))
            except Exception as exc:  # noqa: BLE001 - a model may take only batch 1; say so, check the first
                log.warning("second example input (%s) fails in eager PyTorch (%s); only the first is checked "
                            "and the dynamic axes stay unverified", _describe(inputs), exc)
                self.second_failure = f"the model fails in eager PyTorch on a second example ({_describe(inputs)})"
                self._second[key] = None
        return self._second[key]

    def unverified_axes(self, exporter) -> Optional[str]:
        """Why the artifact's declared dynamic axes were not proven at a second shape, or None."""
        if not (exporter.dynamic_batch or self._shorter(exporter)):
            return None  # nothing dynamic declared: nothing to prove
        if self.job.validate.second_batch_size <= 1:
            return f"validate.second_batch_size={self.job.validate.second_batch_size} skips the second-shape check"
        return getattr(self, "second_failure", None)


def plan_job(job: ExportJob) -> "list[Plan]":
    """The plans of a job: one, or one per part for a model its adapter exports in parts
    (encoder-decoder models: ``seq2seq.py``)."""
    from dataclasses import replace

    try:
        job.task_spec.validate()
        adapter = job.adapter or adapter_for_task(job.task_spec)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if job.adapter is not None and job.task_spec.inputs is not None:
        raise ConfigError(f"task_spec.inputs declares the model's inputs, but adapter {type(job.adapter).__name__} "
                          "draws its own: set one of them (task_spec.inputs=null, or no adapter)")
    parts = adapter.parts(job.model) if callable(getattr(adapter, "parts", None)) else None
    if not parts:
        return [Plan(replace(job, adapter=adapter))]
    for name, options in job.formats.items():
        if getattr(options, "dynamic_sequence", True) is False:
            raise ConfigError(f"format.{name}.dynamic_sequence=false: a model exported in parts ({', '.join(p.name for p in parts)}) "
                              "is used with inputs that grow (the decoder takes the tokens decoded so far), so its "
                              "sequence axes must stay dynamic; leave dynamic_sequence=true")
    return [Plan(replace(job, model=p.module, adapter=p.adapter), part=p.name, whole=replace(job, adapter=adapter))
            for p in parts]
