"""Example models shipped with the tool (``model=simple_cnn``, ``model=lm_stub``)."""

from .lm_stub import LMStub
from .simple_cnn import SimpleCNN

__all__ = ["LMStub", "SimpleCNN"]
