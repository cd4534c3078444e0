"""Composing a sweep's jobs for less: what Hydra and omegaconf do again and again, done once.

Hydra composes each job of a sweep twice: the sweeper composes every job first, so that a job whose
overrides cannot be composed stops the sweep before anything runs, and the launcher composes each
one again as it runs it. Under Hydra's basic launcher both happen in this process, where both ask
the one config loader of the run: as the sweep starts (exporter.cli.sweep), that loader is made to
keep each job's config as the sweeper composes it, compressed (about 7 KiB a job), and to hand it
to the launcher instead of composing again. Other launchers compose in their own workers, on other
machines; they keep Hydra's way.

omegaconf parses every string that holds ``${`` with an ANTLR grammar each time it creates or
resolves such a node; the tool's folder names (``hydra.run.dir``, ``hydra.sweep.subdir``) are long
nested interpolations, and that parsing was about a third of each composition (0.13 s of which 0.05 s,
docs/performance.md). ``remember_parsed_interpolations`` keeps the parse trees of recent strings: a
parse is a pure function of the string, and its tree is only read (visited) afterwards.
"""

from __future__ import annotations

import functools
import pickle
import zlib
from typing import Any, Callable, Sequence

# Distinct strings with interpolations in a sweep's configs: the config's own few dozen, plus any
# the overrides bring.
_PARSED_KEPT = 4096


def remember_parsed_interpolations() -> None:
    """omegaconf's grammar parse, memoized for this process (idempotent). Its two callers (node
    creation, ``_utils``, and resolution, ``base``) import the function by name, so both names are
    replaced; an omegaconf without them is left as it is."""
    import omegaconf._utils as utils
    import omegaconf.base as base
    import omegaconf.grammar_parser as grammar

    original = getattr(grammar, "parse", None)
    if original is None or hasattr(original, "cache_info"):
        return
    parse = functools.lru_cache(maxsize=_PARSED_KEPT)(original)
    for module in (grammar, utils, base):
        if getattr(module, "parse", None) is original:
            module.parse = parse


class ComposedOnce:
    """A loader's ``load_sweep_config`` whose compositions are each used twice: the first
    composition of a job's overrides is kept (pickled, compressed), and the next request for the same
    overrides gets it back instead of composing again."""

    def __init__(self, load_sweep_config: Callable[..., Any]):
        self._load = load_sweep_config
        self._kept: dict[tuple[str, ...], bytes] = {}

    def __call__(self, master_config: Any, sweep_overrides: Sequence[str]) -> Any:
        key = tuple(sweep_overrides)
        kept = self._kept.pop(key, None)
        if kept is not None:
            return pickle.loads(zlib.decompress(kept))
        config = self._load(master_config, list(sweep_overrides))
        self._kept[key] = zlib.compress(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL), 1)
        return config


def compose_once(config: Any) -> None:
    """Under Hydra's basic launcher (``config`` is the sweep's), the run's config loader composes
    each job once (ComposedOnce); ``compose_as_hydra_does`` undoes it."""
    from hydra.core.global_hydra import GlobalHydra

    if not str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"):
        return
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    if loader is not None and "load_sweep_config" not in vars(loader):
        loader.load_sweep_config = ComposedOnce(loader.load_sweep_config)


def compose_as_hydra_does() -> None:
    """The run's config loader as Hydra made it (after a sweep)."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    if loader is not None and isinstance(vars(loader).get("load_sweep_config"), ComposedOnce):
        del loader.load_sweep_config
