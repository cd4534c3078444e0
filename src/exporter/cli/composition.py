"""Composing a sweep's jobs for less: what Hydra and omegaconf do again and again, done once.

Hydra composes each job of a sweep twice, each time from the start: the sweeper composes every job
first, so that a job whose overrides cannot be composed stops the sweep before anything runs, and the
launcher composes each one again as it runs it. Under Hydra's basic launcher both happen in this
process, where both ask the one config loader of the run: as the sweep starts (exporter.cli.sweep),
that loader is made to compose each set of config choices once (``ComposedByChoices``) and each job
from it. Other launchers compose in their own workers, on other machines; they keep Hydra's way.

omegaconf parses every string that holds ``${`` with an ANTLR grammar each time it creates or
resolves such a node; the tool's folder names (``hydra.run.dir``, ``hydra.sweep.subdir``) are long
nested interpolations, and that parsing was about a third of each composition (0.13 s of which 0.05 s,
docs/performance.md). ``remember_parsed_interpolations`` keeps the parse trees of recent strings: a
parse is a pure function of the string, and its tree is only read (visited) afterwards.
"""

from __future__ import annotations

import functools
import pickle
from collections import OrderedDict
from typing import Any, Sequence

# Distinct strings with interpolations in a sweep's configs: the config's own few dozen, plus any
# the overrides bring.
_PARSED_KEPT = 4096
# Sets of config choices whose composed config is kept (about 25 KiB each), least recently used out
# first: a sweep whose jobs choose more configs than this composes some of them again.
_CHOICES_KEPT = 512


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


class ComposedByChoices:
    """A loader's ``load_sweep_config`` that composes once what the jobs of a sweep share.

    Hydra composes each job of a sweep twice (the sweeper checks every job before any runs, the
    launcher composes each again as it runs it), each time from the start: about 0.08 s a job here.
    A job's overrides are of two kinds, as Hydra itself tells them apart
    (``defaults_list.Overrides``): those that choose configs (``model=lm_stub``,
    ``hydra/launcher=joblib``) or set Hydra's own settings (``hydra.*``), and plain values
    (``seed=3``, ``model.path=...``), which Hydra applies last, to the config the choices composed.
    So Hydra composes the config of each set of choices in the sweep once, and it is kept (pickled,
    about 25 KiB); each job gets a copy (about 1 ms) with its values applied by Hydra's own
    ``_apply_overrides_to_config``, and the fields Hydra derives from the whole override list
    (``hydra.overrides``, ``override_dirname``, ``env_set``, ``cwd``) set as Hydra sets them: about
    3 ms a job. tests/test_composition.py checks the result equals Hydra's composition, field for field
    and flag for flag, across choices, values, additions, deletions and errors. Overrides this cannot
    split (any error) are composed by Hydra, which then says what is wrong."""

    def __init__(self, loader: Any):
        self._loader = loader
        self._hydra_load = loader.load_sweep_config
        self._by_choices: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._repositories: dict[tuple[Any, ...], Any] = {}
        self._parser: Any = None

    def _split(self, config_name: Any, lines: list[str]) -> tuple[list[Any], list[Any]]:
        """The parsed overrides, and those of them that are plain values (Hydra's config overrides
        that are not Hydra's own settings)."""
        from hydra._internal.defaults_list import Overrides
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if self._parser is None:
            self._parser = OverridesParser.create()
        parsed = self._parser.parse_overrides(overrides=lines)
        settings = tuple(o.input_line for o in parsed if o.is_hydra_override())
        repository = self._repositories.get((config_name, settings))
        if repository is None:  # where groups are looked up: the search path, which only hydra.* changes
            _, repository = self._loader._parse_overrides_and_create_caching_repo(config_name, list(settings))
            self._repositories[(config_name, settings)] = repository
        values = [o for o in Overrides(repository, parsed).config_overrides if not o.is_hydra_override()]
        return parsed, values

    def __call__(self, master_config: Any, sweep_overrides: Sequence[str]) -> Any:
        import os
        import sys

        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from hydra.errors import ConfigCompositionException
        from hydra.types import RunMode
        from omegaconf import OmegaConf, open_dict
        from omegaconf.errors import OmegaConfBaseException

        config_name = master_config.hydra.job.config_name
        sweep_overrides = list(sweep_overrides)
        lines = list(OmegaConf.to_container(master_config.hydra.overrides.hydra)) + sweep_overrides
        try:
            parsed, values = self._split(config_name, lines)
        except Exception:  # noqa: BLE001 (Hydra's composition reports it, as it would without this)
            return self._hydra_load(master_config, sweep_overrides)
        plain = {id(o) for o in values}
        choices = tuple(o.input_line for o in parsed if id(o) not in plain)
        key = (config_name, choices)
        composed = self._by_choices.get(key)
        if composed is None:
            config = self._loader.load_configuration(config_name=config_name, overrides=list(choices),
                                                     run_mode=RunMode.RUN)
            composed = self._by_choices[key] = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
            if len(self._by_choices) > _CHOICES_KEPT:
                self._by_choices.popitem(last=False)
        else:
            self._by_choices.move_to_end(key)
        config = pickle.loads(composed)
        # As Hydra's ConfigLoaderImpl._load_configuration_impl does after composing, and
        # load_sweep_config after that.
        try:
            ConfigLoaderImpl._apply_overrides_to_config(values, config)
        except OmegaConfBaseException as e:
            raise ConfigCompositionException().with_traceback(sys.exc_info()[2]) from e
        task = [o for o in parsed if not o.is_hydra_override()]
        config.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
        config.hydra.overrides.task = [o.input_line for o in task]
        with open_dict(config.hydra):
            for name in config.hydra.job.env_copy:
                config.hydra.job.env_set[name] = os.environ[name]
        config.hydra.runtime.cwd = os.getcwd()
        dirname = config.hydra.job.config.override_dirname
        config.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config


def compose_by_choices(config: Any) -> None:
    """Under Hydra's basic launcher (``config`` is the sweep's), the run's config loader composes
    each set of config choices once and each job from it (ComposedByChoices); ``compose_as_hydra_does``
    undoes it."""
    from hydra.core.global_hydra import GlobalHydra

    if not str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher"):
        return
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    if loader is not None and "load_sweep_config" not in vars(loader):
        loader.load_sweep_config = ComposedByChoices(loader)


def compose_as_hydra_does() -> None:
    """The run's config loader as Hydra made it (after a sweep)."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    if loader is not None and isinstance(vars(loader).get("load_sweep_config"), ComposedByChoices):
        del loader.load_sweep_config
