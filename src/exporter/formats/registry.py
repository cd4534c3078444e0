"""The format registry: the one place that knows which formats exist.

A format registers itself with ``@register_format`` on its exporter class (the class carries its
name, options dataclass, help line and quantization declaration). Everything else is derived from
here: the ``format`` node of the config schema (``formats_schema``/``export_schema``), Hydra's
ConfigStore entries, the ``--help`` format section, the unknown-format and quantization checks.

Formats shipped with the tool are imported by ``exporter.formats``; others are found through the
``exporter.formats`` entry-point group (a package declares ``myformat = "mypkg.myformat"`` and the
module's import registers it). Importing this module imports no torch, onnx or onnxruntime: format
modules import their toolchain inside functions.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import field, fields, is_dataclass, make_dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config.schema import QuantizationConfig
    from .base import FormatExporter

log = logging.getLogger("exporter")

ENTRY_POINT_GROUP = "exporter.formats"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTRY: dict[str, type["FormatExporter"]] = {}
# Other option names that select a registered format with some options set (format=safetensors).
_ALIASES: dict[str, str] = {}
_loaded = False


def register_format(cls: type["FormatExporter"]) -> type["FormatExporter"]:
    """Class decorator: add a format to the registry after checking its declaration.

    Example:
        >>> from dataclasses import dataclass
        >>> from exporter.formats import FormatExporter, register_format, unregister_format
        >>> @dataclass
        ... class NpyOptions:
        ...     enabled: bool = False
        >>> @register_format
        ... class NpyExporter(FormatExporter):
        ...     name, options_schema, summary = "npy", NpyOptions, "weights.npy, checked by numpy.load"
        ...     filename = "weights.npy"
        ...     def export(self, ctx, path): ...
        ...     def load(self, path, ctx): ...
        >>> "npy" in registered_formats()
        True
        >>> unregister_format("npy")
    """
    from ..quantization import MODES, WEIGHT_TYPES

    name = getattr(cls, "name", None)
    where = f"format {name!r} ({cls.__module__}.{cls.__qualname__})"
    if not isinstance(name, str) or not _NAME.match(name):
        raise TypeError(f"{where}: name must be lower-case letters, digits and underscores")
    options = getattr(cls, "options_schema", None)
    if not (isinstance(options, type) and is_dataclass(options)) or not fields(options) \
            or fields(options)[0].name != "enabled" or fields(options)[0].default is not False:
        raise TypeError(f"{where}: options_schema must be a dataclass whose first field is `enabled: bool = False`")
    if not str(getattr(cls, "summary", "") or "").strip():
        raise TypeError(f"{where}: summary (one line for --help and the docs) is empty")
    for mode, weight_types in dict(cls.quantization).items():
        if mode not in MODES or mode == "none" or not set(weight_types) <= set(WEIGHT_TYPES):
            raise TypeError(f"{where}: quantization declares {mode!r}: {list(weight_types)}; modes are "
                            f"{list(MODES[1:])}, weight types {list(WEIGHT_TYPES)}")
    from .base import FormatExporter

    if cls.quantization and cls.quantize is FormatExporter.quantize:
        raise TypeError(f"{where}: declares quantization {sorted(cls.quantization)} but does not implement "
                        "quantize(ctx, fp32_path, path)")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"{where}: the name is taken by {existing.__module__}.{existing.__qualname__}")
    _REGISTRY[name] = cls
    for alias in getattr(cls, "aliases", {}):
        _ALIASES[alias] = name
    return cls


def unregister_format(name: str) -> None:
    """Remove a format (tests and plug-in reloading); unknown names are ignored."""
    cls = _REGISTRY.pop(name, None)
    for alias in getattr(cls, "aliases", {}) if cls else ():
        _ALIASES.pop(alias, None)


def _load() -> None:
    """The shipped formats, then those of installed plug-ins (once per process)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    from ..config.plugins import load_plugins

    importlib.import_module("exporter.formats")
    load_plugins(ENTRY_POINT_GROUP, "format", lambda: _REGISTRY)


def registered_formats() -> dict[str, type["FormatExporter"]]:
    """Every registered format, name -> exporter class, in registration order (shipped ones first)."""
    _load()
    return dict(_REGISTRY)


def format_aliases() -> dict[str, str]:
    """Option names that select a registered format under another name (``safetensors`` -> ``pytorch``)."""
    _load()
    return dict(_ALIASES)


def format_class(name: str) -> type["FormatExporter"]:
    """The exporter class of a registered format; ConfigError naming the valid ones otherwise."""
    found = registered_formats().get(name)
    if found is None:
        raise ConfigError(f"formats: unknown format {name!r}; valid values: {valid_names()}")
    return found


def valid_names() -> list[str]:
    """Every name that selects a format: the registered ones and their aliases."""
    return sorted([*registered_formats(), *format_aliases()])


def resolve_alias(name: str) -> tuple[str, dict[str, Any]]:
    """(format, the options the name sets): ``safetensors`` -> (``pytorch``, {serialization: safetensors})."""
    target = format_aliases().get(name)
    if target is None:
        return name, {}
    return target, dict(registered_formats()[target].alias_options.get(name, {}))


def check_formats(names: Iterable[str], quantization: "QuantizationConfig") -> None:
    """Before any work: every name is a registered format, and each takes the quantization asked for."""
    from ..quantization import check_support

    names = list(names)
    if not names:
        raise ConfigError(f"formats: no format chosen; valid values: {valid_names()}")
    classes = {name: format_class(name) for name in names}
    check_support(quantization, {n: c.quantization for n, c in registered_formats().items()},
                  {n: dict(c.refusals) for n, c in classes.items()})


def formats_schema() -> type:
    """The ``format`` node's schema: one field per registered format, typed by its options dataclass."""
    return _formats_schema(tuple((name, cls.options_schema) for name, cls in registered_formats().items()))


@functools.lru_cache(maxsize=None)
def _formats_schema(entries: tuple[tuple[str, type], ...]) -> type:
    cls = make_dataclass("FormatsConfig", [(name, options, field(default_factory=options)) for name, options in entries])
    cls.__doc__ = "Every format's options; ``enabled`` marks those the job builds (``format=[onnx,torchscript]``)."
    return _named_here(cls)


def export_schema() -> type:
    """``schema.ExportConfig`` with its ``format`` node typed by the registry: the whole job's schema."""
    return _export_schema(formats_schema())


@functools.lru_cache(maxsize=None)
def _export_schema(formats_cls: type) -> type:
    from ..config.schema import ExportConfig

    cls = make_dataclass("ExportConfig", [("format", formats_cls, field(default_factory=formats_cls))],
                         bases=(ExportConfig,))
    cls.__doc__ = ExportConfig.__doc__
    return _named_here(cls)


# The two schemas made above, by the names they carry: a composed config holding them can be
# pickled (a launcher that sends a job's config to another process does) and finds
# the same classes by name in the other process.
_BUILT_HERE = {"FormatsConfig": formats_schema, "ExportConfig": export_schema}


def _named_here(cls: type) -> type:
    cls.__module__ = __name__
    cls.__qualname__ = cls.__name__
    return cls


def __getattr__(name: str) -> Any:
    if name in _BUILT_HERE:
        return _BUILT_HERE[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def help_lines(width: int = 30, indent: str = "") -> str:
    """The format section of ``--help``, one line per registered format and alias (the first line
    unindented: the help template indents it)."""
    lines = []
    for name, cls in registered_formats().items():
        default = " (default)" if name == "onnx" else ""
        lines.append(f"{('format=' + name).ljust(width)}{cls.summary}{default}")
        for alias, text in cls.aliases.items():
            lines.append(f"{('format=' + alias).ljust(width)}{text}")
    lines.append(f"format=[{','.join(registered_formats())}]   several formats in one job")
    return ("\n" + indent).join(lines)


def option_help_lines(width: int = 30) -> str:
    """The format options of ``--help``: ``format.<name>.<option>=<default>`` for every option of
    every registered format, with the option's ``help`` metadata (the first line unindented)."""
    from dataclasses import MISSING as NO_DEFAULT

    from ..config.schema import option_value

    lines = []
    for name, cls in registered_formats().items():
        for spec in fields(cls.options_schema):
            if spec.name == "enabled":
                continue
            default = spec.default if spec.default is not NO_DEFAULT else (
                spec.default_factory() if spec.default_factory is not NO_DEFAULT else "???")
            shown = {True: "true", False: "false", None: "null"}.get(option_value(default), option_value(default)) \
                if not isinstance(default, (list, dict)) else default
            key = f"format.{name}.{spec.name}={shown}"
            lines.append(f"{key.ljust(width)}{'   ' if len(key) >= width else ''}{spec.metadata.get('help', '')}".rstrip())
    return "\n".join(lines)


def folder_label(name: str, options: Optional[Mapping[str, Any]]) -> str:
    """How a format names itself in a build folder's name (``format=safetensors`` -> ``safetensors``)."""
    cls = registered_formats().get(name)
    return cls.folder_label(options) if cls is not None else name


def option_files(group: str) -> set[str]:
    """Names of the option files shipped in ``conf/<group>/`` (installed as ``exporter.conf``)."""
    from importlib.resources import files

    return {entry.name[:-5] for entry in files(f"exporter.conf.{group}").iterdir() if entry.name.endswith(".yaml")}


def register_configs() -> None:
    """Hydra's ConfigStore entries of the formats: ``schema/format/<name>`` (what each option file
    extends) and, for plug-ins shipping no ``conf/format/<name>.yaml``, the option ``format/<name>``."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    shipped = option_files("format")
    for name, cls in registered_formats().items():
        cs.store(group="schema/format", name=name, node=cls.options_schema)
        if name not in shipped:
            cs.store(group="format", name=name, node=cls.options_schema(enabled=True), package=f"format.{name}")


def cache_obstacle(formats: Mapping[str, type], quantization_mode: str,
                   options: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """What in these formats' options (name -> options dataclass) or this quantization mode keeps the
    formats that carry a key/value cache from carrying it, in one phrase; None when nothing does.
    ``task_spec.use_cache=true`` refuses it (``cache_refusal``); ``null`` builds without the cache."""
    options = options or {}
    carriers = [name for name, cls in formats.items() if cls.carries_cache]
    renamed = [f"format.{name}.{field}" for name in carriers for field in ("input_names", "output_names")
               if getattr(options.get(name), field, None) is not None]
    if renamed:
        return (f"{renamed[0]}: the graph's inputs or outputs are renamed, and the graph with the key/value cache "
                "has names of its own that runtimes read")
    fixed = [f"format.{name}.{axis}=false" for name in carriers for axis in ("dynamic_batch", "dynamic_sequence")
             if getattr(options.get(name), axis, True) is False]
    if fixed:
        return (f"{fixed[0]}: the graph with the cache takes a prompt and then one token at a time, at any batch "
                "size, so it keeps its batch and sequence axes dynamic")
    if quantization_mode == "static":
        return "static quantization of the graph with the cache is not built yet (dynamic and fp16 are)"
    return None


def cache_refusal(use_cache: Any, formats: Mapping[str, type], quantization_mode: str,
                  options: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """Why ``task_spec.use_cache=true`` cannot be had with these formats (name -> exporter class),
    this quantization mode and these format options, in one line; None when it can (or is not
    demanded). Checked as the config is composed, before any model is built, and again by the plan
    for the Python API."""
    if use_cache is not True:
        return None
    tracers = [name for name, cls in formats.items() if cls.carries_cache is False]
    carriers = [name for name, cls in formats.items() if cls.carries_cache]
    if tracers:
        return (f"task_spec.use_cache=true: format {tracers[0]} cannot carry the key/value cache (its graph is "
                f"traced without it; {' and '.join(n for n, c in registered_formats().items() if c.carries_cache)} "
                "carries it); drop that format, or set task_spec.use_cache=null to build it without the cache")
    if not carriers:
        return (f"task_spec.use_cache=true: no format of this job carries a key/value cache ({', '.join(formats)}); "
                "add format onnx, or set task_spec.use_cache=null")
    obstacle = cache_obstacle(formats, quantization_mode, options)
    if obstacle is not None:
        return f"task_spec.use_cache=true: {obstacle}; set task_spec.use_cache=null to build the graph without it"
    return None
