"""``exporter card`` and ``exporter diff``: read finished builds (metadata.json, config.yaml).

Neither imports torch: they read the records a build left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from .metadata import CONFIG_SNAPSHOT_FILE, METADATA_FILE
from .report import human_bytes, table


class BuildNotFound(Exception):
    pass


def find_build(path: Optional[str]) -> Path:
    """The build folder at ``path``, or the newest build under ./exports when no path is given."""
    if path is None:
        candidates = sorted(Path("exports").glob(f"**/{METADATA_FILE}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise BuildNotFound("no build found under ./exports; pass the build folder: exporter card EXPORT_DIR")
        return candidates[-1].parent
    folder = Path(path)
    if folder.is_file() and folder.name == METADATA_FILE:
        folder = folder.parent
    if not (folder / METADATA_FILE).is_file():
        raise BuildNotFound(f"{folder} is not a build folder (no {METADATA_FILE} in it)")
    return folder


def load_build(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    metadata = json.loads((folder / METADATA_FILE).read_text())
    config: dict[str, Any] = {}
    if (folder / CONFIG_SNAPSHOT_FILE).is_file():
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(folder / CONFIG_SNAPSHOT_FILE)) or {}
    return metadata, config


def _io_line(io: Mapping[str, Any], axes: Mapping[str, Any]) -> str:
    dyn = axes.get(io["name"])
    dynamic = f" (dynamic: {', '.join(f'axis {a} = {n}' for a, n in dyn.items())})" if dyn else ""
    return f"- `{io['name']}`: {io['dtype']} {io['shape']}{dynamic}"


def render_card(folder: Path) -> str:
    """A Markdown card of one build: what it is, what was checked, how to load each artifact."""
    md, _ = load_build(folder)
    env = md.get("environment", {})
    quant = md.get("quantization")
    checkpoint = md.get("checkpoint")
    cfg = md.get("config") or {}
    lines = [
        f"# {md.get('task_name')}: {md.get('model_class', '?').rsplit('.', 1)[-1]} "
        f"({', '.join(md.get('formats', []))}) - {md.get('status', '?')}",
        "",
        f"- Task: {md.get('task_type')} ({md.get('modality')})",
        f"- Model: `{md.get('model_class')}`, {md.get('parameters', 0):,} parameters",
        f"- Weights: {checkpoint['path'] + ' (sha256 ' + checkpoint['sha256'][:16] + '...)' if checkpoint else 'as built (no checkpoint)'}",
        f"- Quantization: {'none' if not quant else ', '.join(f'{k}={v}' for k, v in quant.items())}",
        f"- Built: {md.get('exported_at')} with torch {env.get('torch')}, onnx {env.get('onnx')}, "
        f"onnxruntime {env.get('onnxruntime')}, Python {env.get('python')}",
    ]
    if cfg.get("choices"):
        lines.append("- Config choices: " + " ".join(f"{k}={v}" for k, v in cfg["choices"].items()))
    if cfg.get("overrides"):
        lines.append("- Command-line overrides: " + " ".join(cfg["overrides"]))
    lines += ["", "## Inputs", *(_io_line(i, md.get("dynamic_axes", {})) for i in md.get("inputs", []))]
    lines += ["", "## Outputs", *(_io_line(o, md.get("dynamic_axes", {})) for o in md.get("outputs", []))]
    rows = []
    for name, rec in md.get("artifacts", {}).items():
        val = rec.get("validation") or {}
        diff = val.get("max_abs_diff")
        rows.append([name, rec.get("file", "-") if rec.get("status") != "failed" else "-",
                     human_bytes(rec["bytes"]) if "bytes" in rec else "-",
                     (rec.get("sha256") or "-")[:12], "-" if diff is None else f"{diff:.2e}",
                     rec.get("status", "?") if rec.get("status") != "failed" else f"FAILED: {rec.get('error', '')}"])
    lines += ["", "## Artifacts (checked against eager PyTorch)", "", "```",
              table(["format", "file", "size", "sha256", "max |diff|", "status"], rows), "```"]
    if quant:
        from .report import quantization_cells

        calibration = md.get("calibration") or {}
        qrows = [[name, *quantization_cells(rec)] for name, rec in md.get("artifacts", {}).items()
                 if rec.get("quantization_report")]
        lines += ["", f"## Quantization against the fp32 twin (calibration: {calibration.get('source')}, "
                  f"{calibration.get('num_samples')} samples, sha256 {str(calibration.get('sha256'))[:12]})", "",
                  "```", table(["format", "size", "agreement (held-out)", "latency"], qrows), "```"]
        for name, rec in md.get("artifacts", {}).items():
            for note in rec.get("warnings", []):
                lines.append(f"- {name}: {note}")
    for name, rec in md.get("artifacts", {}).items():
        if rec.get("load_hint") and rec.get("status") != "failed":
            lines += ["", f"## Load {name}", "", "```python", rec["load_hint"], "```"]
    return "\n".join(lines) + "\n"


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, data


# Fields that differ between any two builds and say nothing about what was built.
_VOLATILE = ("exported_at", "total_seconds", "export_seconds", "export_dir", "environment.executable")


def render_diff(a: Path, b: Path) -> tuple[str, bool]:
    """Differences between two builds: config, task and environment, then artifact by artifact."""
    md_a, cfg_a = load_build(a)
    md_b, cfg_b = load_build(b)
    out = [f"--- {a}", f"+++ {b}"]
    same = True

    def section(title: str, left: Mapping[str, Any], right: Mapping[str, Any]) -> None:
        nonlocal same
        flat_a, flat_b = dict(_flatten(left)), dict(_flatten(right))
        changed = [k for k in sorted(set(flat_a) | set(flat_b))
                   if flat_a.get(k) != flat_b.get(k) and not any(v in k for v in _VOLATILE)]
        if changed:
            same = False
            out.append(f"\n{title}:")
            out.extend(f"  {k}: {flat_a.get(k, '(absent)')!r} -> {flat_b.get(k, '(absent)')!r}" for k in changed)

    section("config", cfg_a, cfg_b)
    # Same config, other data: a changed checkpoint or calibration file shows here by its hash.
    section("inputs", {"checkpoint": md_a.get("checkpoint"), "calibration": md_a.get("calibration")},
            {"checkpoint": md_b.get("checkpoint"), "calibration": md_b.get("calibration")})
    section("environment", md_a.get("environment", {}), md_b.get("environment", {}))
    rows = []
    for name in sorted(set(md_a.get("artifacts", {})) | set(md_b.get("artifacts", {}))):
        ra, rb = md_a["artifacts"].get(name, {}), md_b["artifacts"].get(name, {})
        identical = bool(ra.get("sha256")) and ra.get("sha256") == rb.get("sha256")
        same = same and identical
        diff = lambda r: "-" if (r.get("validation") or {}).get("max_abs_diff") is None else f"{r['validation']['max_abs_diff']:.2e}"  # noqa: E731
        rows.append([name, human_bytes(ra["bytes"]) if "bytes" in ra else "-",
                     human_bytes(rb["bytes"]) if "bytes" in rb else "-", diff(ra), diff(rb),
                     "identical bytes" if identical else "differ"])
    out += ["\nartifacts:", table(["format", "size a", "size b", "max|diff| a", "max|diff| b", "bytes"], rows)]
    out.append("\nbuilds are identical" if same else "\nbuilds differ")
    return "\n".join(out) + "\n", same


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="exporter", description="Read finished builds.")
    sub = parser.add_subparsers(dest="command", required=True)
    card = sub.add_parser("card", help="print a Markdown card of a build (default: the newest under ./exports)")
    card.add_argument("export_dir", nargs="?")
    card.add_argument("-o", "--output", help="also write the card to this file")
    diff = sub.add_parser("diff", help="show how two builds differ; exit 1 when they do")
    diff.add_argument("a")
    diff.add_argument("b")
    args = parser.parse_args(argv)
    try:
        if args.command == "card":
            text = render_card(find_build(args.export_dir))
            if args.output:
                from .files import write_text_atomic

                write_text_atomic(Path(args.output), text)
            sys.stdout.write(text)
            return 0
        text, same = render_diff(find_build(args.a), find_build(args.b))
        sys.stdout.write(text)
        return 0 if same else 1
    except (BuildNotFound, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
