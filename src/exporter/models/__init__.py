"""Example models shipped with the tool (``model=simple_cnn``, ``model=lm_stub``).

The classes are imported on first use (PEP 562): the build key names the module behind
``model._target_`` (``exporter.models.hf`` for a Hugging Face folder), and looking it up imports
this package, which must not import torch for it: an up-to-date build is answered without torch.

>>> from exporter.models import SimpleCNN
>>> SimpleCNN.__name__
'SimpleCNN'
"""

from importlib import import_module
from typing import Any

_CLASSES = {"LMStub": ".lm_stub", "SimpleCNN": ".simple_cnn"}

__all__ = sorted(_CLASSES)


def __getattr__(name: str) -> Any:
    if name not in _CLASSES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_CLASSES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CLASSES))
