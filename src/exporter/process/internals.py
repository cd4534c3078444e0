"""The private internals of CPython and Hydra that the tool relies on, all in this one module.

Each is here because no public interface does the same thing. tests/test_internals.py fails if one
of them changes.

- A process that ends with ``os._exit`` instead of unwinding. These are the command line after its
  job (``exporter.cli.app.entry``) and a sweep's forked job (``exporter.process.forked_jobs``). Such
  a process still runs what the interpreter's own exit runs first. ``end_as_the_interpreter_would``
  does this, and Python has no public call for it: ``sys.exit`` would unwind through the caller's
  frames (in a forked job, the sweep's own code) and then free every module one by one (0.3-0.4 s
  with torch loaded, docs/performance.md).
- A forked job must not run the sweep's exit handlers, finalizers or helper processes.
  ``forget_the_parents_exit_handlers`` clears them, as multiprocessing does in the processes it
  forks. The ``atexit`` module has no public way to clear its handlers.
- Hydra composes the whole config once only to read ``hydra.mode``. ``hydra_mode_null`` skips that
  composition when the mode is bound to be null (0.15-0.25 s a run). Hydra's public API has no hook
  for this.

One other place leans on Hydra's and omegaconf's internals, kept beside the code it serves:
``exporter.cli.composition`` composes a sweep's jobs from their sets of config choices with
Hydra's own override split, repository and ``_apply_overrides_to_config``, and memoizes omegaconf's
grammar parse. tests/test_composition.py fails if its result ever differs from Hydra's composition.
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator


def end_as_the_interpreter_would() -> None:
    """Run what Python's own exit runs before it frees the modules. First threading's exit callbacks
    (a launcher's executor shuts down; joining its threads first would wait forever), then the
    threads that are not daemons, then the ``atexit`` handlers: ``logging.shutdown``, weakref
    finalizers (temporary folders), torch's and Hydra's."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()


def forget_the_parents_exit_handlers() -> None:
    """In a forked child: the parent's exit handlers, finalizers and helper processes belong to the
    parent, and this process must not run or end them (a temporary folder the parent made would be
    removed under it). The handlers the child registers itself run when it ends, as in a single
    run."""
    atexit._clear()
    for finalizer in list(getattr(weakref.finalize, "_registry", {})):
        finalizer.atexit = False
    if hasattr(weakref.finalize, "_registered_with_atexit"):  # registers its exit hook once per process
        weakref.finalize._registered_with_atexit = False
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:  # imported before the fork: its exit hook was just cleared
        mp_util._finalizer_registry.clear()
        sys.modules["multiprocessing.process"]._children.clear()
        atexit.register(mp_util._exit_function)  # ends the job's daemon helpers, joins the others


@contextmanager
def hydra_mode_null() -> Iterator[None]:
    """Inside this block, Hydra takes ``hydra.mode`` to be null without composing the config to read
    it. It then runs, or sweeps with ``-m``, exactly as it would with the null it read."""
    from hydra._internal.hydra import Hydra

    get_mode = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # what it returns for hydra.mode: null
    try:
        yield
    finally:
        Hydra.get_mode = get_mode
