"""The checked, ready-to-run form of a job, computed once and handed down: formats and options
checked, exporters built, example inputs drawn, eager outputs known, calibration samples ready, and
for each format an ``ArtifactPlan``: its declared axes, the examples it is compared at with their
eager outputs, why its dynamic axes cannot be proven (if so), and the eager references its
quantized candidates are measured against. ``artifact.py`` and ``quantize.py`` read these; they never
call back into the plan. Everything here happens before the build folder is touched, so a refused
job leaves no trace."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, is_dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator, Optional

from ..adapters import adapter_for_task
from ..adapters.outputs import choose_outputs, to_numpy
from ..config.checks import check_values
from ..errors import ConfigError, first_line, out_of_memory
from ..interrupts import INTERRUPTED
from ..quantization import check_quantization
from .job import ExportJob

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..formats.base import FormatExporter

log = logging.getLogger("exporter")

# Eager outputs of calibration and held-out samples kept between quantized candidates (References).
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


class References:
    """Calibration and held-out samples with their eager fp32 outputs, computed as they are read.

    Outputs are kept for the next quantized candidate while all kept total at most
    ``REFERENCE_CACHE_BYTES``; past it they are computed again instead: a language model's logits
    on 48 samples of 128 tokens are 1.2 GB at GPT-2's vocabulary, more than the 124M model's
    weights, and holding them set the peak memory of its quantized build.
    """

    def __init__(self, calibration: Any, outputs: Any, model: Any):
        self._calibration, self._outputs, self._model = calibration, outputs, model
        self._kept: dict[str, dict[int, list]] = {}
        self._bytes = 0

    def split(self, name: str) -> "tuple[list, Iterator[list[np.ndarray]]]":
        """The samples of ``name`` (``calibration`` or ``heldout``) and an iterator of their eager outputs."""
        samples = self._calibration.samples if name == "calibration" else self._calibration.heldout
        return samples, self._eager_outputs(name, samples)

    def _eager_outputs(self, name: str, samples: list) -> "Iterator[list[np.ndarray]]":
        import torch

        kept = self._kept.setdefault(name, {})
        for index, sample in enumerate(samples):
            if index in kept:
                yield kept[index]
                continue
            with torch.no_grad():
                outputs = [to_numpy(t) for t in self._outputs(self._model, sample)]
            size = sum(o.nbytes for o in outputs)
            if self._bytes + size <= REFERENCE_CACHE_BYTES:
                kept[index] = outputs
                self._bytes += size
            yield outputs


@dataclass
class ArtifactPlan:
    """One format of a plan, decided before anything is exported: what ``artifact.build_artifact``
    builds, and everything it checks the artifact against."""

    key: str  # its name in metadata.json: the format's, or ``<format>/<part>``
    exporter: "FormatExporter"
    context: Any  # the ExportContext it is built with: the plan's, or its cached graph's (adapters/kv_cache.py)
    dynamic_axes: dict[str, dict[str, str]]  # the symbolic axes it is built with, per input and output
    # (label, inputs, eager outputs): the example and, where it declares dynamic axes, a second shape
    examples: list[tuple[str, Any, Any]] = field(default_factory=list)
    unverified: Optional[str] = None  # why its declared dynamic axes are not proven at a second shape
    references: Optional[References] = None  # quantized: the samples its candidates are measured on


class Plan:
    """The checked, ready-to-run form of a job: exporters built, inputs drawn, eager outputs known,
    one ``ArtifactPlan`` per format (``artifacts``)."""

    def __init__(self, job: ExportJob, part: Optional[str] = None, whole: Any = None, users_adapter: bool = False):
        import torch

        from ..formats import ExportContext, check_formats, format_class

        try:
            job.task_spec.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_quantization(job.quantization)
        _check_positions(job)
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
        self.users_adapter = users_adapter  # the job came with an adapter of its own (not the task type's)
        self.adapter = job.adapter or adapter_for_task(job.task_spec)
        self.adapter.bind(job.model)
        job.model.eval()
        try:
            self.inputs = self.adapter.example_inputs(job.task_spec, batch_size=1, seed=job.seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        except (RuntimeError, MemoryError) as exc:
            size = out_of_memory(exc)
            if size is None:
                raise
            raise ConfigError(
                f"{self._declared()}: the example input drawn from it does not fit in this machine's memory (it "
                f"asked for {size}); declare the size the model takes") from None
        self.eager_outputs = self._eager(self.inputs, first=True)
        self._check_output_contract()
        if callable(getattr(self.adapter, "check_outputs", None)):
            try:
                self.adapter.check_outputs(self.choice.names, self.eager_outputs, self.inputs)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self._second: dict[tuple[int, int, bool], Any] = {}
        self._second_failure: Optional[str] = None
        # Why an axis the artifact declares dynamic keeps its size in the second example (a sequence of 1).
        self._unvaried: dict[Any, str] = {}
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
        # A causal language model's cache, for the formats whose graph can carry it (task_spec.use_cache).
        self.cache_context = self._cache_context()
        for exporter in self.exporters.values():
            exporter.check(self._context_of(exporter))
        self.calibration = None
        references = None
        if self.context.quantized:
            from ..quantization.calibration import build_calibration

            self.calibration = build_calibration(job.calibration, self.adapter, job.task_spec, self.inputs,
                                                 job.seed, dataset=job.calibration_dataset)
            self.context.calibration = self.calibration
            references = References(self.calibration, self.context.outputs, job.model)
        self.torch_version = torch.__version__
        cache_references = None
        if self.cache_context is not None and self.calibration is not None:
            # The same samples for the graph with the cache, each fed as a prompt (a past of length 0).
            adapter = self.cache_context.adapter
            self.cache_context.calibration = replace(
                self.calibration, samples=[adapter.as_prompt(s) for s in self.calibration.samples],
                heldout=[adapter.as_prompt(s) for s in self.calibration.heldout])
            cache_references = References(self.cache_context.calibration, self.cache_context.outputs, job.model)
        self.artifacts = {name: self._artifact_plan(name, exporter, cache_references if exporter.carries_cache
                                                    and self.cache_context is not None else references)
                          for name, exporter in self.exporters.items()}

    def _declared(self) -> str:
        """Where the example input's sizes come from: ``task_spec.input_schema={...}`` or ``task_spec.inputs``."""
        spec = self.job.task_spec
        return "task_spec.inputs" if spec.inputs is not None else f"task_spec.input_schema={dict(spec.input_schema)}"

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
            size = out_of_memory(exc)
            if size is not None:
                raise ConfigError(
                    f"the model ran out of memory on its example input ({_describe(inputs)}; it asked for {size}): "
                    f"check {self._declared()} against the size the model takes") from None
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

    def _shorter(self, exporter, ctx) -> bool:
        """Whether the artifact declares a dynamic axis besides the batch (text: the sequence)."""
        return bool(ctx.adapter.sequence_axes and exporter.dynamic_sequence)

    def _second_key(self, exporter, ctx) -> tuple[int, int, bool]:
        """What the second example depends on: the adapter, its batch size, whether it is shorter."""
        first = ctx.example_inputs
        batch = (int(self.job.validate.second_batch_size) if exporter.dynamic_batch
                 else int(next(iter(first.values())).shape[0]))
        return (id(ctx.adapter), batch, self._shorter(exporter, ctx))

    def _second_example(self, exporter, ctx) -> "tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None":
        """A differently sized input that proves each dynamic axis the artifact declares: another batch
        size (when the batch is dynamic) and, for text with a dynamic sequence axis, half the sequence
        length. None when the artifact declares no dynamic axis or the check is switched off."""
        import torch

        cfg, adapter, first = self.job.validate, ctx.adapter, ctx.example_inputs
        shorter = self._shorter(exporter, ctx)
        if not cfg.enabled or cfg.second_batch_size <= 1 or not (exporter.dynamic_batch or shorter):
            return None
        key = self._second_key(exporter, ctx)
        batch = key[1]
        if key not in self._second:
            seq_len = None
            if shorter:  # half the first varying axis of the inputs (declared adapters halve each)
                name, axis = next((n, a) for n, a in adapter.sequence_axes.items() if n in first)
                seq_len = max(1, int(first[name].shape[axis]) // 2)
            inputs = adapter.example_inputs(self.job.task_spec, batch_size=batch, seed=self.job.seed + 1,
                                            seq_len=seq_len)
            varied = [n for n, a in adapter.sequence_axes.items() if n in first and n in inputs
                      and a < first[n].dim() and int(inputs[n].shape[a]) != int(first[n].shape[a])]
            if shorter and not varied:  # a sequence of one token has no shorter length to try
                self._unvaried[key] = (f"the sequence axis of {name} is {int(first[name].shape[axis])} long in the "
                                       "example and cannot be tried at another length (task_spec.input_schema."
                                       "max_seq_len=1?)")
            try:
                with torch.no_grad():
                    self._second[key] = (inputs, ctx.outputs(self.job.model, inputs))
            except Exception as exc:  # noqa: BLE001 - a model may take only batch 1; say so, check the first
                if INTERRUPTED:
                    raise
                if getattr(adapter, "dynamic_image_size", False):
                    raise ConfigError(
                        f"task_spec.dynamic_image_size=true: the model does not take another image size: on "
                        f"{_describe(inputs)} it fails in eager PyTorch ({first_line(exc, with_type=True)}); "
                        "leave task_spec.dynamic_image_size=false for a model of one size, or give a larger "
                        "task_spec.input_schema.image_size if half of it is too small for the model") from None
                log.warning("second example input (%s) fails in eager PyTorch (%s); only the first is checked "
                            "and the dynamic axes stay unverified", _describe(inputs), exc)
                self._second_failure = f"the model fails in eager PyTorch on a second example ({_describe(inputs)})"
                self._second[key] = None
        return self._second[key]

    def _context_of(self, exporter: "FormatExporter") -> Any:
        """The context ``exporter`` builds with: the cached graph's where it carries the cache."""
        return self.cache_context if self.cache_context is not None and exporter.carries_cache else self.context

    def _cache_context(self) -> Any:
        """The ExportContext of the model's graph with its key/value cache, or None: not asked for
        (``use_cache=false``), not a causal language model, no format that carries it, or a model
        without one. ``use_cache=true`` refuses, in one line, what cannot have it."""
        import torch

        from ..adapters.kv_cache import CausalLMWithCacheAdapter
        from ..formats import ExportContext
        from ..formats.registry import cache_obstacle, cache_refusal

        job, wanted = self.job, self.job.task_spec.use_cache
        if wanted is False or job.task_spec.task_type != "language_modeling":
            return None
        carriers = [n for n, e in self.exporters.items() if e.carries_cache]
        tracers = [n for n, e in self.exporters.items() if e.carries_cache is False]
        formats = {n: type(e) for n, e in self.exporters.items()}
        options = {n: e.options for n, e in self.exporters.items()}
        refused = cache_refusal(wanted, formats, self.context.mode, options)
        if refused is not None:
            raise ConfigError(refused)
        if not carriers:
            return None
        refusal = None
        adapter = None
        if self.users_adapter or job.task_spec.inputs is not None or self.part is not None:
            refusal = "the cache is exported by the tool's own language-model adapter, not with task_spec.inputs or an adapter of yours"
        else:
            adapter = CausalLMWithCacheAdapter.for_model(job.model)
            if adapter is None:
                refusal = (f"the model ({type(job.model).__name__}) has no key/value cache the tool can export "
                           "(its forward takes no past_key_values, or returns no per-layer keys and values)")
            else:
                obstacle = cache_obstacle(formats, self.context.mode, options)
                if obstacle is not None:
                    refusal = f"{obstacle}; this build's graph has no cache"
        if refusal is not None:
            if wanted:
                raise ConfigError(f"task_spec.use_cache=true: {refusal}; set task_spec.use_cache=null or false")
            if adapter is not None:  # a model with a cache that this build leaves out: say so
                log.warning("note: %s (task_spec.use_cache=null)", refusal)
            return None
        for name in tracers:
            log.info("note: %s is built without the key/value cache (transformers' torch.export path for decoders "
                     "takes a static cache at batch 1 without an attention mask, which the padded batch-2 check "
                     "cannot validate); %s carries it", name, " and ".join(carriers))
        inputs = adapter.example_inputs(job.task_spec, batch_size=1, seed=job.seed)
        with torch.no_grad():
            raw = adapter.call(job.model, inputs)
        choice = choose_outputs(None, adapter, raw)
        return ExportContext(model=job.model, adapter=adapter, task_spec=job.task_spec, example_inputs=inputs,
                             quantization=job.quantization, output_choice=choice,
                             example_outputs=choice.pick(adapter, raw))

    def _artifact_plan(self, name: str, exporter: "FormatExporter", references: Optional[References]) -> ArtifactPlan:
        """What the format ``name`` builds and is checked against (the eager outputs of its second
        example are computed before any artifact is loaded: the model's activations and an
        artifact's runtime are never held at once)."""
        ctx = self._context_of(exporter)
        examples = [("example", ctx.example_inputs, ctx.example_outputs)]
        unverified = None
        if exporter.dynamic_batch or self._shorter(exporter, ctx):  # something dynamic declared: to be proven
            second = self._second_example(exporter, ctx) if self.job.validate.enabled else None
            if second is not None:
                examples.append(("second example", *second))
                unverified = self._unvaried.get(self._second_key(exporter, ctx))
            elif self.job.validate.second_batch_size <= 1:
                unverified = f"validate.second_batch_size={self.job.validate.second_batch_size} skips the second-shape check"
            elif self.job.validate.enabled:
                unverified = self._second_failure
        return ArtifactPlan(key=self.key(name), exporter=exporter, context=ctx, dynamic_axes=declared_axes(ctx, exporter),
                            examples=examples, unverified=unverified, references=references)


def _check_positions(job: ExportJob) -> None:
    """A text model's example cannot be longer than the positions its config gives it
    (``max_position_embeddings``, GPT-2's ``n_positions``): refused in one line, before it fails
    deep inside the model (an IndexError in its position embedding) or builds a graph its runtimes'
    context length does not allow."""
    config = getattr(job.model, "config", None)
    length = (job.task_spec.input_schema or {}).get("max_seq_len")
    positions = next((getattr(config, name) for name in ("max_position_embeddings", "n_positions")
                      if isinstance(getattr(config, name, None), int)), None)
    if positions is not None and isinstance(length, int) and length > positions:
        raise ConfigError(f"task_spec.input_schema.max_seq_len={length} is more than the model's {positions} positions "
                          f"(its config's max_position_embeddings); set task_spec.input_schema.max_seq_len<={positions}")


def declared_axes(ctx, exporter: "FormatExporter") -> dict[str, dict[str, str]]:
    """The symbolic axes this format's artifact is built with, per input and output name."""
    axes = ctx.dynamic_axes(batch=exporter.dynamic_batch, sequence=exporter.dynamic_sequence)
    if getattr(exporter, "fixes_a_one_token_sequence", False):
        # torch.export keeps a sequence axis fixed when the example (the longest it takes) is one token.
        single = {name for name, tensor in ctx.example_inputs.items()
                  if any(dim == "sequence" and int(tensor.shape[axis]) < 2 for axis, dim in axes.get(name, {}).items())}
        if single:
            axes = {name: {axis: dim for axis, dim in dims.items() if dim != "sequence"} for name, dims in axes.items()}
            axes = {name: dims for name, dims in axes.items() if dims}
    return {name: {str(axis): dim for axis, dim in dims.items()} for name, dims in axes.items()}


def plan_job(job: ExportJob) -> "list[Plan]":
    """The plans of a job: one, or one per part for a model its adapter exports in parts
    (encoder-decoder models: ``seq2seq.py``; with the key/value cache, the formats that carry it
    get three parts and the others two)."""
    from ..formats import format_class

    try:
        job.task_spec.validate()
        adapter = job.adapter or adapter_for_task(job.task_spec)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_positions(job)
    if job.adapter is not None and job.task_spec.inputs is not None:
        raise ConfigError(f"task_spec.inputs declares the model's inputs, but adapter {type(job.adapter).__name__} "
                          "draws its own: set one of them (task_spec.inputs=null, or no adapter)")
    parts = adapter.parts(job.model) if callable(getattr(adapter, "parts", None)) else None
    if not parts:
        if job.task_spec.use_cache and job.task_spec.task_type != "language_modeling":
            raise ConfigError(f"task_spec.use_cache=true: {type(adapter).__name__} exports no key/value cache; set "
                              "task_spec.use_cache=null or false")
        return [Plan(replace(job, adapter=adapter), users_adapter=job.adapter is not None)]
    for name, options in job.formats.items():
        if getattr(options, "dynamic_sequence", True) is False:
            raise ConfigError(f"format.{name}.dynamic_sequence=false: a model exported in parts ({', '.join(p.name for p in parts)}) "
                              "is used with inputs that grow (the decoder takes the tokens decoded so far), so its "
                              "sequence axes must stay dynamic; leave dynamic_sequence=true")
    groups = [(adapter, job.formats)]
    cached = _parts_with_cache(job, adapter)
    if cached is not None:  # the formats that carry the cache get the cached parts; the others the plain ones
        carriers = {n: o for n, o in job.formats.items() if format_class(n).carries_cache}
        rest = {n: o for n, o in job.formats.items() if n not in carriers}
        groups = [(cached, carriers)] + ([(adapter, rest)] if rest else [])
    plans = []
    for each, formats in groups:
        whole = replace(job, adapter=each, formats=formats)
        plans += [Plan(replace(whole, model=p.module, adapter=p.adapter), part=p.name, whole=whole)
                  for p in (parts if each is adapter else each.parts(job.model))]
    return plans


def plans_of(plans: "list[Plan]", format_name: str) -> "list[Plan]":
    """The plans that build ``format_name``: the one plan, or its parts (an encoder-decoder's formats
    with the cache have other parts than those without)."""
    return [plan for plan in plans if format_name in plan.artifacts]


def _parts_with_cache(job: ExportJob, adapter: Any) -> Any:
    """The adapter of a model exported in parts for its layout with the key/value cache, or None:
    not asked for (``use_cache=false``), no format of the job carries it, something in the formats'
    options keeps them from it, or the model has none. ``use_cache=true`` refuses, in one line, what
    cannot have it; ``null`` says why a model with a cache is built without it."""
    from ..formats import format_class
    from ..formats.registry import cache_obstacle, cache_refusal
    from ..quantization import mode_of

    wanted = job.task_spec.use_cache
    if wanted is False:
        return None
    formats = {n: format_class(n) for n in job.formats}
    refused = cache_refusal(wanted, formats, mode_of(job.quantization), job.formats)
    if refused is not None:
        raise ConfigError(refused)
    if not any(cls.carries_cache for cls in formats.values()):
        return None
    layout = None
    if job.adapter is not None or not callable(getattr(adapter, "cache_layout", None)):
        refusal = "the cache is exported by the tool's own seq2seq_lm adapter, not by an adapter of yours"
    elif (layout := adapter.cache_layout(job.model)) is None:
        refusal = (f"the model ({type(job.model).__name__}) has no key/value cache the tool can export (its forward "
                   "takes no cache, or its first decoding step returns no per-layer keys and values)")
    else:
        refusal = cache_obstacle(formats, mode_of(job.quantization), job.formats)
        if refusal is not None:
            refusal += "; this build's parts have no cache"
    if refusal is not None:
        if wanted:
            raise ConfigError(f"task_spec.use_cache=true: {refusal}; set task_spec.use_cache=null or false")
        if layout is not None:
            log.warning("note: %s (task_spec.use_cache=null)", refusal)
        return None
    for name, cls in formats.items():
        if cls.carries_cache is False:
            log.info("note: %s is built without the key/value cache (encoder and decoder; its decoder takes the "
                     "whole decoded prefix at each step); %s carries it", name,
                     " and ".join(n for n, c in formats.items() if c.carries_cache))
    return adapter.with_cache(layout)
