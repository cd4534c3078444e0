"""The process's first steps, for ``python -m exporter`` and the ``exporter`` console script.

Loading Hydra and the tool takes a few tenths of a second before ``exporter.cli.app.main`` installs the
job's signal handlers. A Ctrl-C or SIGTERM in that time ends the process as any interruption does
(exit 130 or 143, one line on stderr), not in a KeyboardInterrupt traceback: nothing has been
built or staged yet, so there is nothing to clean up.

Later, the job's handlers stop a build by raising an exception wherever Python is. Inside the
import of a library with native code that is harmful: raised from a callback of torch's or onnx's
C++ start-up it aborts the process (``terminate called after throwing ...``) or crashes it, and
torch swallows one raised while it imports numpy, then runs on half set up. So the command line
holds SIGINT and SIGTERM back while such a library is imported, and delivers them right after.
"""

from __future__ import annotations

import importlib.abc
import os
import signal
import sys
import threading
from typing import Any, NoReturn, Optional

from ..console import INTERRUPTED_MESSAGE, guard_standard_streams, say
from ..interrupts import STOP_SIGNALS
from ..process.preload import NATIVE_PACKAGES


def run() -> NoReturn:
    """Install the early handlers and the import hold, then load and run the command line
    (``exporter.cli.app.entry``)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stopped_while_loading)
    guard_standard_streams()
    if len(sys.argv) > 1 and sys.argv[1] in _readers():
        _working_directory_off_the_path()
    hold_signals_while_importing(NATIVE_PACKAGES)
    from .app import entry

    entry()


def _readers() -> tuple[str, ...]:
    from .commands import READERS

    return READERS


def _working_directory_off_the_path() -> None:
    """``card``, ``diff`` and ``verify`` import nothing from the working directory: ``python -m``
    puts it first on ``sys.path``, and a build folder read from inside (``cd DIR && exporter verify
    .``) could bring a ``yaml.py`` or ``torch.py`` of its own."""
    cwd = os.path.realpath(os.getcwd())
    sys.path[:] = [entry for entry in sys.path
                   if entry and os.path.isabs(entry) and os.path.realpath(entry) != cwd]


def _stopped_while_loading(signum: int, _frame: Any) -> NoReturn:
    from .commands import READERS

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    say(f"interrupted: exporter {command} did not finish" if command in READERS else INTERRUPTED_MESSAGE, 0)
    os._exit(128 + signum)


def hold_signals_while_importing(packages: frozenset[str]) -> None:
    """From now on, SIGINT and SIGTERM wait while one of ``packages`` is imported in the main thread
    (``exporter.interrupts.signals_deferred``), and are delivered as soon as its import is done."""
    if not any(isinstance(finder, _HoldWhileImporting) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HoldWhileImporting(packages))


class _HoldWhileImporting(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the finders after it, and wraps the loader of a held package."""

    def __init__(self, packages: frozenset[str]):
        self.packages = packages

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if name not in self.packages or threading.current_thread() is not threading.main_thread():
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HeldLoader(spec.loader)
                return spec
        return None


class _HeldLoader(importlib.abc.Loader):
    """The package's own loader, run with the signals held; the module keeps its own loader."""

    def __init__(self, loader: Any):
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        from ..interrupts import signals_deferred

        try:
            with signals_deferred():
                self._loader.exec_module(module)
        finally:
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
