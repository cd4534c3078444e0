"""Errors that the command line reports as one clear message, without a traceback."""


class ExportError(Exception):
    """A problem with the user's input (config, checkpoint, model, schema) or an export that failed.

    The message names the field and, where there is a fixed set, the valid values.
    """


class ValidationError(ExportError):
    """An artifact ran, but its outputs differ from eager PyTorch beyond the tolerance."""


class ConfigError(ExportError, ValueError):
    """Invalid input, found before anything is written."""
