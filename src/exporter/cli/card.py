"""``exporter card`` and ``exporter diff``: read finished builds (metadata.json, config.yaml, the artifacts).

Neither imports torch: they read the records a build left behind (``records``), and re-hash every artifact
so that a card or a diff never vouches for a file that is missing or was changed since the build.
Exit codes: 0 all is well (``diff``: identical builds), 1 a file does not match its record (``diff``: the
builds differ), 2 a build cannot be read or the card cannot be written.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ..records.layout import METADATA_FILE, input_variable
from ..records.read import (
    FOREIGN,
    MISSING,
    MODIFIED,
    OK,
    Build,
    BuildUnreadable,
    files_problems,
    os_error_text,
    parse_config,
    quantization_of,
    read_build,
)
from ..records.tables import artifact_bytes, artifact_files, human_bytes, table


class BuildNotFound(Exception):
    pass


def find_build(path: Optional[str]) -> Path:
    """The build folder at ``path``, or the newest build under ./exports when no path is given."""
    if path is None:
        return newest_build(Path("exports"))
    folder = Path(path)
    if folder.name == METADATA_FILE and folder.is_file():
        folder = folder.parent
    return folder


def newest_build(root: Path) -> Path:
    """The folder of the newest metadata.json under ``root``.

    Hidden folders are skipped: a build in progress stages in one (``.onnx-none.staging-*/build``), and its
    half-written records are not a finished build.
    """
    newest: Optional[tuple[float, Path]] = None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if METADATA_FILE not in filenames:
            continue
        try:
            mtime = os.stat(os.path.join(dirpath, METADATA_FILE)).st_mtime
        except FileNotFoundError:
            continue  # removed by a rebuild since the listing
        if newest is None or mtime > newest[0]:
            newest = (mtime, Path(dirpath))
    if newest is None:
        raise BuildNotFound(f"no build found under ./{root}; pass the build folder: exporter card EXPORT_DIR")
    return newest[1]


def _io_line(io: Mapping[str, Any], axes: Mapping[str, Any]) -> str:
    dyn = io["dynamic_axes"] if isinstance(io.get("dynamic_axes"), Mapping) else axes.get(io["name"])
    dynamic = f" (dynamic: {', '.join(f'axis {a} = {n}' for a, n in dyn.items())})" if dyn else ""
    return f"- `{io['name']}`: {io['dtype']} {io['shape']}{dynamic}"


def _max_diff(record: Mapping[str, Any]) -> str:
    validation = record.get("validation")
    diff = validation.get("max_abs_diff") if isinstance(validation, Mapping) else None
    return f"{diff:.2e}" if isinstance(diff, (int, float)) else "-"


def _on_disk(build: Build, fmt: str, record: Mapping[str, Any]) -> str:
    """Whether the files of one format match their record: the card's ``on disk`` column."""
    checks = build.files_of(fmt)
    for check in checks:
        if check.state in (MISSING, MODIFIED):
            text = "MISSING" if check.state == MISSING else "MODIFIED (sha256 differs from metadata.json)"
            return text if check.file == record.get("file") else f"{text}: {check.file}"
        if check.state == FOREIGN:
            return f"NOT PART OF THE BUILD: {check.file}"
    if any(check.state == OK for check in checks):
        return "verified"
    return "-" if record.get("status") == "failed" else "not recorded"


def _snippet_preamble(build: Build, record: Mapping[str, Any], name: str = "") -> list[str]:
    """Lines that make a load hint run as printed: the folder of a Hugging Face model (``FOLDER``)
    and example inputs of the recorded names, dtypes and shapes (zeros; ones for a mask), as numpy
    arrays for ONNX Runtime and as tensors for the rest."""
    md = build.metadata
    hint = str(record.get("load_hint") or "")
    lines = []
    path = _model_folder(build, ((build.config.get("model") or {}) if isinstance(build.config, dict) else {}).get("path"))
    if "FOLDER" in hint and isinstance(path, str):
        lines.append(f"FOLDER = {path!r}  # the model folder this build was made from")
    if "(**ARGUMENTS)" in hint:
        model = dict((build.config.get("model") or {}) if isinstance(build.config, dict) else {})
        plain = (int, float, str, bool, type(None))
        if model.pop("_target_", None) and all(isinstance(k, str) and not k.startswith("_") and isinstance(v, plain)
                                               for k, v in model.items()):
            lines.append(f"ARGUMENTS = {model!r}  # the model's constructor arguments, from config.yaml")
    # A part of a model exported in parts (``onnx/decoder_model``) takes the inputs its own record names.
    part = ((md.get("parts") or {}).get(name.partition("/")[2]) or {}) if "/" in name else {}
    inputs = [i for i in (part.get("inputs") if isinstance(part, dict) and part.get("inputs") else md.get("inputs")) or []
              if isinstance(i, dict)]
    numpy = "onnxruntime" in hint
    names = list(((record.get("details") or {}).get("input_names")) or []) if numpy else []
    names = names if len(names) == len(inputs) else [str(i.get("name")) for i in inputs]
    if not inputs or not all(isinstance(size, int) for i in inputs for size in i.get("shape") or []):
        return lines
    lines.append("import numpy as np" if numpy else "import torch")
    for name, spec in zip(names, inputs):
        fill = "ones" if "mask" in name else "zeros"
        dtype = f"np.{spec['dtype']}" if numpy else f"torch.{spec['dtype']}"
        lines.append(f"{input_variable(name)} = {'np' if numpy else 'torch'}.{fill}({spec['shape']}, dtype={dtype})"
                     "  # an example input: put yours here")
    # A graph with its key/value cache also takes the past: empty on a first call (past_sequence 0).
    cache = md.get("cache") if isinstance(md.get("cache"), dict) else {}
    fed = {str(i.get("name")) for i in inputs}
    batch = next((i["shape"][0] for i in inputs if i.get("shape")), 1)
    # (a decoder's cache names its inputs with their shapes; an encoder-decoder's, by pattern only)
    for spec in cache.get("inputs") or [] if numpy else []:
        if not isinstance(spec, dict):
            continue
        name = str(spec.get("name"))
        if name in fed or f"'{name}'" not in hint:
            continue
        shape = [batch if size == "batch" else 0 if size == "past_sequence" else size for size in spec.get("shape") or []]
        if all(isinstance(size, int) for size in shape):
            lines.append(f"{input_variable(name)} = np.zeros({shape}, dtype=np.{spec.get('dtype')})"
                         "  # the past: empty on a first call")
    return lines


def _quantization_line(md: Mapping[str, Any]) -> str:
    mode, settings = quantization_of(md)
    if mode is None:
        return "none"
    return mode + (f" ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else "")


def render_card(build: Build) -> str:
    """A Markdown card of one build: what it is, what was checked, how to load each artifact.

    A file on disk that does not match metadata.json is a warning at the top and in the artifacts table.
    """
    try:
        return _card(build)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # metadata.json parsed but is not shaped as this tool writes it: say so in one line.
        raise BuildUnreadable(f"{build.folder / METADATA_FILE}: unexpected content "
                              f"({type(exc).__name__}: {exc})") from None


def _model_folder(build: Build, path: Any) -> Any:
    """``model.path`` as the job read it: a relative one joined to the folder the job ran from (Hydra's
    ``runtime.cwd`` in the build's ``.hydra/hydra.yaml``), so that a snippet runs in the build folder."""
    if not isinstance(path, str) or not path or os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path) if isinstance(path, str) else path
    try:
        import yaml

        with open(build.folder / ".hydra" / "hydra.yaml", encoding="utf-8") as f:
            cwd = ((yaml.safe_load(f) or {}).get("hydra") or {}).get("runtime", {}).get("cwd")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return path
    return os.path.normpath(os.path.join(cwd, path)) if isinstance(cwd, str) and os.path.isabs(cwd) else path


def _weights_line(checkpoint: Any, config: Mapping[str, Any], key_inputs: Mapping[str, Any],
                  build: Optional[Build] = None) -> str:
    """Where the weights came from: a checkpoint, the model's folder (``model.path``, its files as
    hashed into the build key), or the model as its constructor built it."""
    if checkpoint:
        return f"{checkpoint['path']} (sha256 {checkpoint['sha256'][:16]}...)"
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    folder = model.get("path") or model.get("pretrained_model_name_or_path")
    if folder and build is not None and model.get("path"):
        folder = _model_folder(build, folder)
    if folder:
        files = sorted(((key_inputs.get("model_files") or {}).get("files") or {}))
        return f"from the model folder `{folder}`" + (f" ({', '.join(files)})" if files else "")
    return "as built (no checkpoint)"


def _card(build: Build) -> str:
    md = build.metadata
    env = md.get("environment") or {}
    checkpoint = md.get("checkpoint")
    cfg = md.get("config") or {}
    problems = files_problems(build)
    lines = [
        f"# {md.get('task_name')}: {str(md.get('model_class') or '?').rsplit('.', 1)[-1]} "
        f"({', '.join(md.get('formats', []))}) - {md.get('status', '?')}",
        "",
        *([f"> WARNING: {problem}" for problem in problems] + [""] if problems else []),
        f"- Task: {md.get('task_type')} ({md.get('modality')})",
        f"- Model: `{md.get('model_class')}`, {md.get('parameters', 0):,} parameters",
        f"- Weights: {_weights_line(checkpoint, build.config, md.get('build_key_inputs') or {}, build)}",
        f"- Quantization: {_quantization_line(md)}",
        f"- Built: {md.get('exported_at')} with torch {env.get('torch')}, onnx {env.get('onnx')}, "
        f"onnxruntime {env.get('onnxruntime')}, Python {env.get('python')}",
    ]
    restored = md.get("restored_from")
    if isinstance(restored, Mapping):
        lines[-1] = (f"- Built: {restored.get('exported_at')} on {restored.get('host')} with torch {env.get('torch')}, "
                     f"onnx {env.get('onnx')}, onnxruntime {env.get('onnxruntime')}, Python {env.get('python')}; "
                     f"restored here from the build cache {md.get('exported_at')} (build key "
                     f"{str(restored.get('build_key'))[:12]}): the artifacts are the bytes that build checked")
    if cfg.get("choices"):
        lines.append("- Config choices: " + " ".join(f"{k}={v}" for k, v in cfg["choices"].items()))
    if cfg.get("overrides"):
        lines.append("- Command-line overrides: " + " ".join(cfg["overrides"]))
    axes = md.get("dynamic_axes", {})
    parts = md.get("parts") if isinstance(md.get("parts"), Mapping) else None
    if parts:  # a model exported in parts (encoder, decoder): each part's own inputs and outputs
        for part, io in parts.items():
            lines += ["", f"## Part {part}: inputs", *(_io_line(i, axes) for i in io.get("inputs", []))]
            lines += ["", f"## Part {part}: outputs", *(_io_line(o, axes) for o in io.get("outputs", []))]
    else:
        lines += ["", "## Inputs", *(_io_line(i, axes) for i in md.get("inputs", []))]
        lines += ["", "## Outputs", *(_io_line(o, axes) for o in md.get("outputs", []))]
    cache = md.get("cache")
    if isinstance(cache, Mapping) and cache.get("layout") == "encoder-decoder":  # each part's I/O is above
        carriers = ", ".join(cache.get("artifacts") or [])
        lines += ["", f"## With the key/value cache ({carriers}): {cache.get('layers')} decoder layers, "
                      f"{cache.get('key_value_heads')} key/value heads of size {cache.get('head_size')} "
                      f"(cross-attention: {cache.get('cross_heads')} heads, computed once by decoder_model), "
                      f"{cache.get('dtype')}", "",
                  "- per layer `{i}`, into decoder_with_past_model: "
                  + ", ".join(f"`{name}`" for name in cache.get("inputs", [])),
                  "- out of decoder_model (all four) and decoder_with_past_model (the decoder's): "
                  + ", ".join(f"`{name}`" for name in cache.get("outputs", []))]
    elif isinstance(cache, Mapping):  # the graph with the key/value cache has inputs and outputs of its own
        carriers = ", ".join(cache.get("artifacts") or [])
        lines += ["", f"## With the key/value cache ({carriers}): {cache.get('layers')} layers, "
                      f"{cache.get('key_value_heads')} key/value heads of size {cache.get('head_size')}, "
                      f"{cache.get('dtype')}", "",
                  *(f"- input `{i['name']}` {i['dtype']}{i['shape']}" for i in cache.get("inputs", [])),
                  *(f"- output `{o['name']}` {o['dtype']}{o['shape']}" for o in cache.get("outputs", []))]
    artifacts = md["artifacts"]
    rows = []
    for name, rec in artifacts.items():
        rows.append([name, artifact_files(rec) if rec.get("status") != "failed" else "-",
                     human_bytes(artifact_bytes(rec)) if artifact_bytes(rec) is not None else "-",
                     (rec.get("sha256") or "-")[:12], _on_disk(build, name, rec), _max_diff(rec),
                     rec.get("status", "?") if rec.get("status") != "failed" else f"FAILED: {rec.get('error', '')}"])
    lines += ["", "## Artifacts (checked against eager PyTorch)", "", "```",
              table(["format", "file", "size", "sha256", "on disk", "max |diff|", "status"], rows), "```"]
    # What the build did not check says so, next to the table that would otherwise vouch for it.
    lines += [f"- {name}: NOT CHECKED: {rec['unchecked']}" for name, rec in artifacts.items() if rec.get("unchecked")]
    greedy = {name.split("/")[0]: (rec.get("validation") or {}).get("greedy_decoding") for name, rec in artifacts.items()}
    lines += [f"- {fmt}: greedy decoding of {g.get('steps')} tokens through the parts"
              f"{' and their key/value cache' if isinstance(g.get('through_cache'), Mapping) else ''} "
              f"{'matches eager generate' if g.get('match') else 'DIFFERS from eager generate'}"
              for fmt, g in greedy.items() if isinstance(g, Mapping)]
    for name, rec in artifacts.items():
        generation = (rec.get("validation") or {}).get("generation")
        if isinstance(generation, Mapping):
            lines.append(f"- {name}: generation through the key/value cache (step by step, batch 2 left-padded; greedy "
                         f"{(generation.get('greedy') or {}).get('steps')} tokens) "
                         f"{'matches eager' if generation.get('match') else 'DIFFERS from eager'}")
    lines += [f"- {name}: dynamic axes not verified at a second shape" for name, rec in artifacts.items()
              if rec.get("dynamic_axes_verified") is False and not rec.get("unchecked")]
    if quantization_of(md)[0] is not None:
        from ..records.tables import quantization_cells

        calibration = md.get("calibration") or {}
        qrows = [[name, *quantization_cells(rec)] for name, rec in artifacts.items() if rec.get("quantization_report")]
        lines += ["", f"## Quantization against the fp32 twin (calibration: {calibration.get('source')}, "
                  f"{calibration.get('num_samples')} samples, sha256 {str(calibration.get('sha256'))[:12]})", "",
                  "```", table(["format", "size", "agreement (held-out)", "latency"], qrows), "```"]
        for name, rec in artifacts.items():
            selection = (rec.get("quantization_report") or {}).get("weight_type_selection")
            if selection:
                lines.append(f"- {name}: weight_type=auto kept {selection['chosen']}: {selection['reason']}")
            for note in rec.get("warnings", []):
                lines.append(f"- {name}: {note}")
    for name, rec in artifacts.items():
        if rec.get("load_hint") and rec.get("status") != "failed":
            lines += ["", f"## Load {name}", "", "```python", *_snippet_preamble(build, rec, name), rec["load_hint"], "```"]
        if rec.get("runtimes") and rec.get("status") != "failed":
            cached = isinstance(md.get("cache"), dict) and name in (md["cache"].get("artifacts") or [])
            title = "Generate from this folder" if cached else "Run this folder in its runtimes"
            lines += ["", f"## {title} ({name}{', with its key/value cache' if cached else ''})", "",
                      *_runtime_lines(build, rec["runtimes"], cached)]
    return "\n".join(lines) + "\n"


def _runtime_lines(build: Build, runtimes: Mapping[str, Any], cached: bool) -> list[str]:
    """How each runtime loads the build folder as it is (``ArtifactRecord.runtimes``), run from inside
    it as the Load snippets are (``'.'``)."""
    folder = "."
    lines = []
    genai = runtimes.get("onnxruntime_genai") or {}
    if genai.get("config"):
        lines += ["ONNX Runtime GenAI (`pip install onnxruntime-genai`), type `" + str(genai.get("type")) + "`:", "",
                  "```python", "import onnxruntime_genai as og", "", f"model = og.Model({folder!r})",
                  "params = og.GeneratorParams(model)", "params.set_search_options(max_length=64, do_sample=False)",
                  "generator = og.Generator(model, params)", "generator.append_tokens([1, 2, 3])  # your prompt's ids",
                  "while not generator.is_done():", "    generator.generate_next_token()",
                  "print(generator.get_sequence(0))", "```", ""]
    elif genai.get("skipped"):
        lines += [f"- ONNX Runtime GenAI: no genai_config.json: {genai['skipped']}", ""]
    family = runtimes.get("transformers") or {}
    if family.get("class"):
        lines += [f"transformers, `{family['class']}` (config.json beside the weights):", "", "```python",
                  f"from transformers import {family['class']}", "",
                  f"model = {family['class']}.from_pretrained({folder!r})", "```", ""]
    optimum = runtimes.get("optimum") or {}
    if optimum.get("class"):
        cls = str(optimum["class"])
        options = {"use_cache": True} if cached else dict(optimum.get("from_pretrained") or {})
        arguments = "".join(f", {key}={value!r}" for key, value in {**options, "use_io_binding": False}.items())
        lines += [f"Optimum (`optimum[onnxruntime]`), `{cls}`:", "", "```python", "import torch",
                  f"from optimum.onnxruntime import {cls}", "", f"model = {cls}.from_pretrained({folder!r}{arguments})",
                  *_optimum_call(build, cls), "```"]
    return lines


def _optimum_call(build: Build, cls: str) -> list[str]:
    """A call of an Optimum model on example inputs of the build's recorded names and sizes."""
    inputs = {str(i.get("name")): i for i in build.metadata.get("inputs") or [] if isinstance(i, dict)}
    if "pixel_values" in inputs:
        shape = inputs["pixel_values"].get("shape")
        return [f"pixel_values = torch.rand({shape})  # your images, preprocessed (preprocessor_config.json, if the "
                "model's folder had one, is beside the graph)", "outputs = model(pixel_values=pixel_values)",
                "print({name: tuple(value.shape) for name, value in outputs.items()})"]
    lines = ["input_ids = torch.tensor([[1, 2, 3]])  # your text's ids (its tokenizer files, if the model's folder had "
             "them, are beside the graph)", "attention_mask = torch.ones_like(input_ids)"]
    if cls in ("ORTModelForCausalLM", "ORTModelForSeq2SeqLM"):
        return lines + ["tokens = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, "
                        "do_sample=False)", "print(tokens[0].tolist())"]
    extra = ", token_type_ids=torch.zeros_like(input_ids)" if "token_type_ids" in inputs else ""
    return lines + [f"outputs = model(input_ids=input_ids, attention_mask=attention_mask{extra})",
                    "print({name: tuple(value.shape) for name, value in outputs.items()})"]


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, data


# Fields that differ between any two builds and say nothing about what was built.
_VOLATILE = ("exported_at", "total_seconds", "export_seconds", "export_dir", "environment.executable")


def _bytes_cell(a: Build, b: Build, fmt: str) -> tuple[str, bool]:
    """``identical bytes`` only when both records agree and every file of both builds was just verified."""
    for label, build in (("a", a), ("b", b)):
        for check in build.files_of(fmt):
            if check.state in (MISSING, MODIFIED):
                return f"{check.file} {check.state.upper()} in {label}", False
    checks_a, checks_b = a.files_of(fmt), b.files_of(fmt)
    verified = bool(checks_a) and all(c.state == OK for c in checks_a + checks_b)
    identical = verified and sorted((c.file, c.sha256) for c in checks_a) == sorted((c.file, c.sha256) for c in checks_b)
    if identical:
        return "identical bytes", True
    # TorchScript numbers classes by what its process traced before: compare the content then.
    content = [((build.metadata["artifacts"].get(fmt) or {}).get("details") or {}).get("content_sha256") for build in (a, b)]
    if verified and content[0] and content[0] == content[1]:
        return "identical content", True
    return "differ", False


def _changes(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs, volatile keys left out."""
    flat_a, flat_b = dict(_flatten(left)), dict(_flatten(right))
    return [(k, flat_a.get(k, "(absent)"), flat_b.get(k, "(absent)")) for k in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(k) != flat_b.get(k) and not any(v in k for v in _VOLATILE)]


def _inputs(md: dict[str, Any]) -> dict[str, Any]:
    key_inputs = md.get("build_key_inputs") or {}
    return {"checkpoint": md.get("checkpoint"), "calibration": md.get("calibration"),
            "model_files": key_inputs.get("model_files"), "model_code": key_inputs.get("model_code")}


def _diff_sections(a: Build, b: Build) -> tuple[list[tuple[str, list]], list[list[str]], list[str], bool]:
    md_a, md_b = a.metadata, b.metadata
    sections = [
        ("config", _changes(a.config, b.config)),
        # Same config, other data: a changed checkpoint, calibration file, model folder (saved over
        # in place) or model code shows here by its hash.
        ("inputs", _changes(_inputs(md_a), _inputs(md_b))),
        ("environment", _changes(md_a.get("environment") or {}, md_b.get("environment") or {})),
    ]
    same = not any(changes for _, changes in sections)
    rows = []
    for name in sorted(set(md_a["artifacts"]) | set(md_b["artifacts"])):
        ra, rb = md_a["artifacts"].get(name, {}), md_b["artifacts"].get(name, {})
        cell, identical = _bytes_cell(a, b, name)
        if ra.get("status") != rb.get("status"):
            cell, identical = f"status {ra.get('status', '-')} -> {rb.get('status', '-')}", False
        same = same and identical
        rows.append([name, human_bytes(artifact_bytes(ra)) if artifact_bytes(ra) is not None else "-",
                     human_bytes(artifact_bytes(rb)) if artifact_bytes(rb) is not None else "-", _max_diff(ra), _max_diff(rb), cell])
    # Equal records prove nothing when the files behind them are gone or changed.
    problems = files_problems(a) + files_problems(b)
    return sections, rows, problems, same and not problems


_ARTIFACT_HEADERS = ["format", "size a", "size b", "max|diff| a", "max|diff| b", "bytes"]


def render_diff(a: Build, b: Build, fmt: str = "text") -> tuple[str, bool]:
    """Differences between two builds: config, inputs and environment, then artifact by artifact.
    ``fmt="markdown"`` gives the same as Markdown, for a pull request."""
    sections, rows, problems, same = _diff_sections(a, b)
    if fmt == "markdown":
        return _markdown_diff(f"`{a.folder}` -> `{b.folder}`", sections, rows, problems, same), same
    out = [f"--- {a.folder}", f"+++ {b.folder}"]
    for title, changes in sections:
        if changes:
            out.append(f"\n{title}:")
            out.extend(f"  {k}: {old!r} -> {new!r}" for k, old, new in changes)
    out += ["\nartifacts:", table(_ARTIFACT_HEADERS, rows)]
    if problems:
        out += ["\nfiles that do not match their metadata.json:", *(f"  {p}" for p in problems)]
    out.append("\nbuilds are identical" if same else "\nbuilds differ")
    return "\n".join(out) + "\n", same


def _markdown_diff(title: str, sections: list, rows: Optional[list], problems: list[str], same: bool) -> str:
    from ..records.tables import markdown_table

    out = [f"### exporter diff: {title}", "", "**identical**" if same else "**differ**"]
    for name, changes in sections:
        if changes:
            out += ["", f"#### {name.capitalize()} changes", "",
                    markdown_table(["key", "old", "new"], [[f"`{k}`", f"`{old!r}`", f"`{new!r}`"] for k, old, new in changes])]
    if rows is not None:
        out += ["", "#### Artifacts", "", markdown_table(_ARTIFACT_HEADERS, rows)]
    if problems:
        out += ["", "#### Files that do not match their metadata.json", "", *(f"- {p}" for p in problems)]
    return "\n".join(out) + "\n"


def load_config_file(path: Path) -> dict[str, Any]:
    """A config YAML file (a build's config.yaml, or a config of yours) as a plain mapping."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BuildUnreadable(f"{path}: {os_error_text(exc)}") from None
    return parse_config(raw, path)


def render_config_diff(a: Path, b: Path, fmt: str = "text") -> tuple[str, bool]:
    """Two config files compared key by key (resolved values as written), without building."""
    changes = _changes(load_config_file(a), load_config_file(b))
    if fmt == "markdown":
        return _markdown_diff(f"`{a}` -> `{b}`", [("config", changes)], None, [], not changes), not changes
    out = [f"--- {a}", f"+++ {b}"]
    if changes:
        out.append("\nconfig:")
        out.extend(f"  {k}: {old!r} -> {new!r}" for k, old, new in changes)
    out.append("\nconfigs are identical" if not changes else "\nconfigs differ")
    return "\n".join(out) + "\n", not changes


def run_card(export_dir: Optional[str], output: Optional[str]) -> int:
    """Print the card (and write it to ``output``); 1 when a file does not match its record."""
    build = read_build(find_build(export_dir))
    if output and _inside(Path(output), build.folder):
        # A build folder holds only what its build wrote: a card written into it would make it "damaged".
        print(f"error: card -o: {output} is inside the build folder {build.folder}, which holds only what its "
              "build wrote; write the card elsewhere (e.g. -o CARD.md)", file=sys.stderr)
        return 2
    text = render_card(build)
    if output and (os.path.islink(output) or (os.path.exists(output) and not os.path.isfile(output)
                                              and not os.path.isdir(output))):
        # The card is written beside its target and renamed over it: that would replace a device,
        # a pipe or a link (not what it points to) with a regular file.
        kind = "a symbolic link" if os.path.islink(output) else "not a regular file (a device or a pipe)"
        print(f"error: card -o: {output} is {kind}; the card is written as a regular file of its own: name a "
              "new file or one that is a regular file (e.g. -o CARD.md), or print it to stdout", file=sys.stderr)
        return 2
    if output:
        from ..files import write_text_atomic

        try:
            write_text_atomic(Path(output), text)
        except OSError as exc:
            reason = os_error_text(exc)
            if exc.errno == errno.ENOENT and Path(output).parent.is_dir():
                # The card is written beside its target first, then renamed: /proc takes no new file.
                reason = f"{Path(output).parent} takes no new files ({reason})"
            print(f"error: cannot write the card to {output}: {reason}", file=sys.stderr)
            return 2
    sys.stdout.write(text)
    return 1 if files_problems(build) else 0


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (symbolic links and ``..`` resolved)."""
    try:
        return path.expanduser().resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):
        return False


def run_diff(a: str, b: str, fmt: str = "text") -> int:
    """Print how two builds (or two config files) differ; 0 identical, 1 they differ (a file missing or
    modified included)."""
    for path in (a, b):
        if not Path(path).exists():
            raise BuildUnreadable(f"{path}: no such build folder or config file")
    if Path(a).is_file() and Path(b).is_file() and Path(a).name != METADATA_FILE:
        text, same = render_config_diff(Path(a), Path(b), fmt)
    else:
        text, same = render_diff(read_build(find_build(a)), read_build(find_build(b)), fmt)
    sys.stdout.write(text)
    return 0 if same else 1


class _OneLineParser(argparse.ArgumentParser):
    """Argument mistakes as one line (the usage is one --help away), exit 2."""

    def error(self, message: str):
        print(f"error: {message}; see python -m exporter {{card,diff,verify}} --help", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str]) -> int:
    parser = _OneLineParser(prog="exporter", description="Read finished builds.")
    sub = parser.add_subparsers(dest="command", required=True)
    card = sub.add_parser("card", help="print a Markdown card of a build (default: the newest under ./exports); "
                                       "exit 1 when a file does not match metadata.json, 2 when the build cannot be read")
    card.add_argument("export_dir", nargs="?")
    card.add_argument("-o", "--output", help="also write the card to this file")
    diff = sub.add_parser("diff", help="show how two builds differ; exit 1 when they do, 2 when one cannot be read")
    diff.add_argument("a", help="a build folder, or a config YAML file")
    diff.add_argument("b", help="a build folder, or a config YAML file")
    diff.add_argument("--format", choices=["text", "markdown"], default="text",
                      help="markdown: tables ready to paste into a pull request")
    verify = sub.add_parser("verify", help="rebuild a build from its own config.yaml in a temporary folder and "
                                           "compare the artifacts byte for byte; exit 1 on a difference, 2 when "
                                           "the build cannot be read or rebuilt")
    verify.add_argument("export_dir")
    verify.add_argument("--code", metavar="PATH", type=Path,
                        help="a folder of your own model code to import (model._target_: mynets.Net); without it, "
                             "verify imports model code only from installed distributions, never from the build "
                             "folder or the working directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "card":
            return run_card(args.export_dir, args.output)
        if args.command == "verify":
            from .verify import run_verify

            return run_verify(Path(args.export_dir), args.code)
        return run_diff(args.a, args.b, args.format)
    except (BuildNotFound, BuildUnreadable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
