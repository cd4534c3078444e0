"""Loading a user's weights into the built model, with messages that list what does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, first_line, refused_pickle
from ..files import sha256_known

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

    if not path.exists():
        raise ConfigError(f"checkpoint: file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"checkpoint: {path} is not a regular file (a folder, a device, a pipe); give the state "
                          "dict's file (.pt, .pth, .bin or .safetensors)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        # first_line: an empty file raises EOFError with no text at all, which alone says little.
        refused = refused_pickle(exc)
        if refused:
            raise ConfigError(
                f"checkpoint: {path} is a pickle the tool will not load ({refused}): weights are loaded as tensors "
                "only, never running what a pickle asks; save a state dict of tensors (torch.save(model.state_dict(), "
                "...)) or a .safetensors file where you trust its source") from None
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


def _tied_names(model: "torch.nn.Module") -> dict[str, list[str]]:
    """Parameter name -> the other names of the same tensor in ``model`` (tied weights)."""
    by_tensor: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(parameter), []).append(name)
    return {name: [other for other in names if other != name] for names in by_tensor.values() for name in names
            if len(names) > 1}


def load_checkpoint(model: "torch.nn.Module", path: str | Path) -> dict[str, Any]:
    """Load ``path`` into ``model`` strictly; returns ``{"path", "sha256"}`` for metadata.json.

    Missing keys, unexpected keys and shape mismatches are all listed in one ConfigError.
    """
    path = Path(path)
    state = read_state_dict(path)
    expected = model.state_dict()
    # Tied weights (an LM head sharing the embedding) are saved once, by transformers' save_pretrained
    # and safetensors: a missing key whose parameter is one the checkpoint holds under another name
    # is filled from it, and the tie is kept (one tensor, loaded once).
    tied = _tied_names(model)
    for key in sorted(set(expected) - set(state)):
        twin = next((other for other in tied.get(key, ()) if other in state), None)
        if twin is not None:
            state = {**state, key: state[twin]}
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
    return {"path": str(path), "sha256": sha256_known(path)}
