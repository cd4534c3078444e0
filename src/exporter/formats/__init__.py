"""Format exporters, one unit each, all with the surface of ``base.FormatExporter``.

Importing this package registers the shipped formats (each module's ``@register_format``); the
registry (``registry.py``) also loads plug-ins from the ``exporter.formats`` entry-point group.
The runner and the config schema only ever go through the registry.
"""

from __future__ import annotations

from .base import ExportContext, ExportOutcome, FormatExporter
from .registry import (check_formats, export_schema, format_class, formats_schema, register_format, registered_formats, unregister_format)

# Build order of a job follows the config; registration order is the order of --help and the docs.
from . import onnx, torchscript, state_dict, exported_program  # noqa: E402,F401  (registers them)

__all__ = ["ExportContext", "ExportOutcome", "FormatExporter", "check_formats", "export_schema", "format_class",
           "formats_schema", "register_format", "registered_formats", "unregister_format"]
