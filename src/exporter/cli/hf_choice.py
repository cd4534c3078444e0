"""``model=hf model.path=DIR``: the ``hf_*`` option the folder's ``config.json`` asks for, chosen on
the command line before Hydra composes.

Hydra fixes the defaults list before it reads any value, and each family's option brings its own task
spec (inputs, outputs, checks). So ``model=hf`` is rewritten into ``model=hf_<task>`` from the folder's
``architectures`` (``exporter.config.hf_folder.task_of``), with one line naming the choice; the build
then runs, and records, as if that option had been typed. A sweep over several folders
(``-m model=hf model.path=a,b``) takes them when they are of one kind; folders of several kinds are
refused in one line (one sweep per kind: ``model=hf_causal_lm model.path=a,c``). Reads no torch.
"""

from __future__ import annotations

from typing import Any, Optional

from ..console import say
from ..errors import ConfigError

OPTION = "hf"


def choose_hf_option(args: list[str]) -> list[str]:
    """``args`` with ``model=hf`` replaced by the ``hf_*`` option of the folder(s) ``model.path`` names;
    ``args`` unchanged when no ``model=hf`` is given. ConfigError when a folder is not a saved model, of
    no kind an option builds or of several, when the folders are of several kinds, or when ``hf`` is
    swept beside other model options."""
    model_at = _index(args, "model")
    if model_at is None:
        return args
    model = _parse(args[model_at])
    if model is None or OPTION not in _values(model):
        return args
    from ..config.hf_folder import HF_OPTIONS, heads_of, read_config, task_of

    listed = ", ".join(f"model={name}" for name in HF_OPTIONS)
    if len(_values(model)) > 1:
        raise ConfigError(f"model=hf: takes its option from the folder, so it is swept alone (-m model=hf "
                          f"model.path=a,b), not beside other model options ({args[model_at]}); sweep those apart")
    path_at = _index(args, "model.path")
    if path_at is None:
        raise ConfigError(f"model=hf: reads the model's kind from model.path, which is not given; add "
                          f"model.path=DIR (a folder saved with save_pretrained), or choose one of {listed}")
    path = _parse(args[path_at])
    if path is None:  # Hydra's own one line about the override comes when it composes
        return args
    folders = [_resolved(value) for value in _values(path)]
    kinds: dict[str, list[str]] = {}
    named: dict[str, str] = {}
    for folder in folders:
        config = read_config(folder)
        task, why = task_of(config)
        if len(set(heads_of(config).values())) > 1:
            raise ConfigError(f"model=hf: {folder} holds heads of several kinds, {why}: choose the option of the "
                              "one to build")
        if task is None:
            raise ConfigError(f"model=hf: {folder} holds {why}, a kind no hf_* option builds; valid options: "
                              f"{listed}, or your own model with _target_ (docs/models.md)")
        kinds.setdefault(task, []).append(folder)
        named[folder] = why
    if len(kinds) > 1:
        each = "; ".join(f"model=hf_{task}: {', '.join(paths)}" for task, paths in kinds.items())
        raise ConfigError(f"model=hf: the folders of model.path are of {len(kinds)} kinds ({each}); a sweep builds "
                          "one kind: sweep each kind with its own option")
    (task,) = kinds
    chosen = f"hf_{task}"
    if len(folders) == 1:
        say(f"model=hf: {folders[0]} holds a {named[folders[0]]}: building it as model={chosen}", 0)
    else:
        say(f"model=hf: the {len(folders)} folders of model.path hold {', '.join(sorted(set(named.values())))}: "
            f"building them as model={chosen}", 0)
    key = args[model_at].split("=", 1)[0]
    return [*args[:model_at], f"{key}={chosen}", *args[model_at + 1:]]


def _index(args: list[str], key: str) -> Optional[int]:
    """The last argument that sets ``key`` (Hydra's rule: the last override wins)."""
    at = None
    for i, arg in enumerate(args):
        if "=" in arg and arg.split("=", 1)[0].lstrip("+~") == key:
            at = i
    return at


def _parse(arg: str) -> Any:
    """Hydra's reading of one override, or None where Hydra will say what is wrong with it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
    except Exception:  # noqa: BLE001 - Hydra's own message comes when it composes
        return None
    return override


def _values(override: Any) -> list[str]:
    """The values of an override as the job reads them (quotes and escapes undone)."""
    if override.is_sweep_override():
        try:
            values = list(override.sweep_iterator())
        except Exception as exc:  # noqa: BLE001 - glob() and other sweeps Hydra expands with its loader
            raise ConfigError(f"{override.input_line}: model=hf reads each folder before the sweep starts; list "
                              f"them (model.path=a,b) rather than {type(exc).__name__}: {exc}") from None
        return [str(getattr(value, "text", value)) for value in values]
    return [str(override.value())]


def _resolved(value: str) -> str:
    """A folder as the job will read it: ``${oc.env:MODELS}/gpt2`` resolved (OmegaConf's resolvers)."""
    if "${" not in value:
        return value
    from omegaconf import OmegaConf

    try:
        return str(OmegaConf.create({"path": value})["path"])
    except Exception as exc:  # noqa: BLE001 - an interpolation Hydra will refuse the same way
        raise ConfigError(f"model.path: cannot resolve {value!r}: {str(exc).splitlines()[0]}") from None
