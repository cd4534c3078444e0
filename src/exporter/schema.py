"""Moved: ``exporter.schema`` is now ``exporter.config.schema`` and ``exporter.config.checks`` (docs/architecture.md).

The old name keeps working for one release: each name read here is forwarded, with a
DeprecationWarning saying where it lives now.
"""

import importlib
import warnings

_MOVED_TO = ("exporter.config.schema", "exporter.config.checks",)


def __getattr__(name: str):
    for module in _MOVED_TO:
        found = getattr(importlib.import_module(module), name, _MOVED_TO)
        if found is not _MOVED_TO:
            warnings.warn(f"exporter.schema.{name} moved to {module}.{name}; the old name goes in the next release",
                          DeprecationWarning, stacklevel=2)
            return found
    raise AttributeError(f"module 'exporter.schema' has no attribute {name!r}")
