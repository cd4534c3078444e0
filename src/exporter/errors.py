"""Errors that the command line reports as one clear message, without a traceback."""

import re


class ExportError(Exception):
    """A problem with the user's input (config, checkpoint, model, schema) or an export that failed.

    The message names the field and, where there is a fixed set, the valid values.
    """


class ValidationError(ExportError):
    """An artifact ran, but its outputs differ from eager PyTorch beyond the tolerance."""


class ConfigError(ExportError, ValueError):
    """Invalid input, found before anything is written."""


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """One line of an exception for a one-line error message: the first non-blank line of its text
    (C++ errors from torch carry whole stack dumps after it), or its type name when the text is
    empty (``str(EOFError())`` is ``""``).

    ``with_type`` puts the type name in front: ``EOFError: Ran out of input``.
    """
    # Terminal colour codes (torch.onnx's messages carry them) would print as garbage in a log or a file.
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line:
        return type(exc).__name__
    if line.endswith(" Next steps:"):
        # torch.onnx's "Failed to export the model with torch.export. This is step 1/3 of exporting
        # the model to ONNX. Next steps:" and a list of what to file where: the cause says what failed.
        line = line[: -len(" Next steps:")].rstrip(".")
        if exc.__cause__ is not None and exc.__cause__ is not exc:
            line += f": {first_line(exc.__cause__, with_type=True)}"
    return f"{type(exc).__name__}: {line}" if with_type else line


def out_of_space(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT anywhere in the exception's chain (or torch's C++ writer saying so): a full
    disk, which no other exporter or retry would get past."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def refused_pickle(exc: BaseException) -> "str | None":
    """What torch.load's weights-only unpickler refused, in a few words, or None for another error:
    the pickle asks for code to run or objects to build, which a file of tensors never does.

    >>> refused_pickle(Exception("Weights only load failed. ... Trying to load unsupported GLOBAL posix.system "
    ...                          "whose module posix is blocked."))
    'it would call posix.system'
    >>> refused_pickle(Exception("Weights only load failed. ... WeightsUnpickler error: Unsupported operand 149"))
    'it is not a torch.save file of tensors (pickle operand 149)'
    >>> refused_pickle(EOFError()) is None
    True
    """
    text = str(exc)
    if "Weights only load failed" not in text and "WeightsUnpickler" not in text:
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it would call {found.group(1)}"
    found = re.search(r"Unsupported operand (\d+)", text)
    if found:
        return f"it is not a torch.save file of tensors (pickle operand {found.group(1)})"
    return "it holds objects other than tensors"


def out_of_memory(exc: BaseException) -> "str | None":
    """The size an allocation that failed asked for (``"120.0 GB"``), ``"memory"`` when unsaid,
    or None when ``exc`` is no failed allocation (torch's CPU allocator, or Python's MemoryError).

    >>> out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
    ...                            "allocate memory: you tried to allocate 120000000000 bytes. Error code 12"))
    '120.0 GB'
    >>> out_of_memory(ValueError("x")) is None
    True
    """
    text = str(exc)
    if not isinstance(exc, MemoryError) and "can't allocate memory" not in text:
        return None
    found = re.search(r"allocate (\d+) bytes", text)
    if not found:
        return "memory"
    size = float(found.group(1))
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.1f} {unit}" if unit != "bytes" else f"{int(size)} bytes"
        size /= 1000
    return "memory"
