"""Work on another thread whose result is needed later: hashing files (hashlib and file reads let
the other core work while this one imports or runs a model).

>>> result = in_background(sum, [1, 2, 3])
>>> result()
6
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def in_background(function: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Start ``function(*args)`` on a daemon thread (an interrupted or failed job never waits for
    it); the function returned waits for its result, or raises what it raised."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # re-raised where the result is needed
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=f"exporter-{getattr(function, '__name__', 'work')}", daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result
