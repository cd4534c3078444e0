"""Human-readable tables of a build, read from its metadata (no torch needed)."""

from __future__ import annotations

from typing import Any, Mapping

from .read import quantization_of


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def artifact_bytes(record: Mapping[str, Any]) -> "int | None":
    """Every byte of an artifact: its file and the files it needs beside it (``model.onnx.data``).

    >>> artifact_bytes({"bytes": 10, "extra_files": [{"file": "model.onnx.data", "bytes": 90}]})
    100
    """
    if not isinstance(record.get("bytes"), int):
        return None
    return record["bytes"] + sum(int(extra.get("bytes") or 0) for extra in record.get("extra_files") or []
                                 if isinstance(extra, Mapping))


def artifact_files(record: Mapping[str, Any]) -> str:
    """The artifact's file and those beside it: ``model.onnx + model.onnx.data``."""
    extras = [str(extra.get("file")) for extra in record.get("extra_files") or [] if isinstance(extra, Mapping)]
    return " + ".join([str(record.get("file", "")), *extras])


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with aligned columns (the benchmarks print these for the docs)."""
    # A "|" inside a cell (e.g. "max |diff|") would end the cell: escape it.
    headers = [h.replace("|", "\\|") for h in headers]
    rows = [[c.replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def artifact_row(name: str, record: Mapping[str, Any]) -> list[str]:
    validation = record.get("validation") or {}
    diff = validation.get("max_abs_diff")
    status = record.get("status", "?")
    if status == "failed":
        error = str(record.get("error", ""))
        # The whole message is in the log line above the table and in metadata.json.
        status = "FAILED: " + (error if len(error) <= 70 else error[:67] + "...")
    return [
        name,
        record.get("file", "") if record.get("status") != "failed" else "-",
        human_bytes(artifact_bytes(record)) if artifact_bytes(record) is not None else "-",
        f"{record['export_seconds']:.2f}" if "export_seconds" in record else "-",
        "not checked" if diff is None else f"{diff:.2e}",
        status,
    ]


def quantization_cells(record: Mapping[str, Any]) -> list[str]:
    """size, agreement and latency against the fp32 twin, for a quantized artifact's row."""
    report = record.get("quantization_report")
    if not report:
        return ["-", "-", "-"]
    fid = report["fidelity"]
    split = fid["heldout"] if fid["heldout"]["samples"] else fid["calibration"]
    agreement = "-" if split["agreement"] is None else f"{split['agreement']:.1%}"
    return [f"x{report['size']['ratio']:.2f}", agreement, f"x{report['speed']['ratio']:.2f}"]


def closing_table(metadata: Mapping[str, Any]) -> str:
    """format, file, size, export seconds, max difference, status: one row per requested format;
    for quantized jobs also size, agreement and latency against the fp32 twin."""
    artifacts = metadata.get("artifacts", {})
    headers = ["format", "file", "size", "export s", "max |diff|"]
    quantized = quantization_of(metadata)[0] is not None
    if quantized:
        headers += ["size vs fp32", "agreement", "latency vs fp32"]
    rows = []
    for name, rec in artifacts.items():
        row = artifact_row(name, rec)
        rows.append(row[:-1] + quantization_cells(rec) + row[-1:] if quantized else row)
        # Several outputs: one line each under the artifact, with its own largest difference.
        per_output = grouped_outputs((rec.get("validation") or {}).get("outputs") or {})
        if len(per_output) > 1:
            for output, diff in per_output.items():
                cells = ["", f"  {output}", "", "", "not checked" if diff is None else f"{diff:.2e}"]
                rows.append(cells + ["", "", ""] * quantized + [""])
    return table(headers + ["status"], rows)


def grouped_outputs(per_output: dict[str, Any]) -> dict[str, Any]:
    """Per-output differences for display, a cache's layers folded into one line each for keys and
    values (``present.*.key``: the largest over every layer); metadata.json keeps each one.

    >>> grouped_outputs({"logits": 1e-6, "present.0.key": 2e-6, "present.1.key": 3e-6})
    {'logits': 1e-06, 'present.*.key': 3e-06}
    """
    import re

    grouped: dict[str, Any] = {}
    for name, diff in per_output.items():
        key = re.sub(r"\.\d+\.", ".*.", name, count=1) if re.search(r"\.\d+\.", name) else name
        if key in grouped and grouped[key] is not None and diff is not None:
            grouped[key] = max(grouped[key], diff)
        else:
            grouped[key] = diff if key not in grouped else grouped[key]
    return grouped
