"""Plug-ins found through entry points: a package declares ``name = "pkg.module"`` in a group
(``exporter.formats``, ``exporter.task_types``), and importing the module registers what it brings.

A plug-in that fails to load, or that registers nothing under its entry point's name, is named in a
warning and left out: a broken plug-in never takes the tool down.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection

log = logging.getLogger("exporter")


def load_plugins(group: str, kind: str, registered: Callable[[], Collection[str]]) -> None:
    """Import every module of entry-point ``group``; ``kind`` names what they register in the
    warnings (``format``, ``task type``), ``registered()`` what is registered so far."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=group):
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take the tool down
            log.warning("warning: %s plug-in %s (%s) failed to load and is not available: %s: %s",
                        kind, entry.name, entry.value, type(exc).__name__, exc)
            continue
        if entry.name not in registered():
            log.warning("warning: %s plug-in %s (%s) loaded but registered no %s named %r (registered: %s)",
                        kind, entry.name, entry.value, kind, entry.name, sorted(registered()))
