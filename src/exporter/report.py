"""Human-readable tables of a build, read from its metadata (no torch needed)."""

from __future__ import annotations

from typing import Any, Mapping


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


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
        human_bytes(record["bytes"]) if "bytes" in record else "-",
        f"{record['export_seconds']:.2f}" if "export_seconds" in record else "-",
        "not checked" if diff is None else f"{diff:.2e}",
        status,
    ]


def closing_table(metadata: Mapping[str, Any]) -> str:
    """format, file, size, export seconds, max difference, status: one row per requested format."""
    rows = [artifact_row(name, rec) for name, rec in metadata.get("artifacts", {}).items()]
    return table(["format", "file", "size", "export s", "max |diff|", "status"], rows)
