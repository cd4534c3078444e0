"""Loading a user's weights into the built model, with messages that list what does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, first_line
from .files import sha256_of

if TYPE_CHECKING:
    import torch

_LIST_LIMIT = 10


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f" ... (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def read_state_dict(path: Path) -> "dict[str, torch.Tensor]":
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``: no code runs).

    A ``{"state_dict": {...}}`` wrapper (Lightning and many training loops) is unwrapped.
    """
    import torch

    if not path.is_file():
        raise ConfigError(f"checkpoint: file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        # first_line: an empty file raises EOFError with no text at all, which alone says little.
        reason = first_line(exc, with_type=True) + ("; the file is empty (0 bytes)" if path.stat().st_size == 0 else "")
        raise ConfigError(
            f"checkpoint: cannot read {path} as a state dict ({reason}); "
            "expected a .safetensors file or a torch.save'd dict of tensors (.pt, .pth, .bin)"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"checkpoint: {path} does not hold a state dict (a dict of tensor names to tensors)")
    return state


def load_checkpoint(model: "torch.nn.Module", path: str | Path) -> dict[str, Any]:
    """Load ``path`` into ``model`` strictly; returns ``{"path", "sha256"}`` for metadata.json.

    Missing keys, unexpected keys and shape mismatches are all listed in one ConfigError.
    """
    path = Path(path)
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
    if problems:
        raise ConfigError(f"checkpoint: {path} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return {"path": str(path), "sha256": sha256_of(path)}
