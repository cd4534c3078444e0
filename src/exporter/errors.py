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
