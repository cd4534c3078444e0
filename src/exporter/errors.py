"""Errors that the command line reports as one clear message, without a traceback."""


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
    line = next((text.strip() for text in str(exc).splitlines() if text.strip()), "")
    if not line:
        return type(exc).__name__
    return f"{type(exc).__name__}: {line}" if with_type else line
