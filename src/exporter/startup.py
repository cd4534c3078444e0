"""The process's first steps, for ``python -m exporter`` and the ``exporter`` console script.

Loading Hydra and the tool takes a few tenths of a second before ``exporter.cli.main`` installs the
job's signal handlers. A Ctrl-C or SIGTERM in that time ends the process as any interruption does
(exit 130 or 143, one line on stderr), not in a KeyboardInterrupt traceback: nothing has been
built or staged yet, so there is nothing to clean up.
"""

from __future__ import annotations

import os
import signal
from typing import Any, NoReturn

from .console import INTERRUPTED_MESSAGE, say


def run() -> NoReturn:
    """Install the early handlers, then load and run the command line (``exporter.cli.entry``)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped_while_loading)
    from .cli import entry

    entry()


def _stopped_while_loading(signum: int, _frame: Any) -> NoReturn:
    say(INTERRUPTED_MESSAGE, 0)
    os._exit(128 + signum)
