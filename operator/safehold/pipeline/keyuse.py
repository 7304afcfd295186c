"""Who is told when a data key is unwrapped to read data (the audit log's ``key.used``).

The pipeline unwraps data keys (:class:`safehold.pipeline.keys.DataKeys`, the log archive's
segments) and calls :func:`used` once it has checked the key against its record's MAC; the CLI
registers a listener (:func:`listen`) that records the event once per run and key. Nothing
here imports more than the standard library, so registering costs the CLI's start-up nothing.
Rotation (unwrap to re-wrap) and a resumed backup (unwrap to write) are not reads and do not
call it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]

_listeners: list[Listener] = []
_lock = threading.Lock()


def listen(listener: Listener) -> None:
    """Call ``listener(key_id, facts)`` for every data key unwrapped for reading (idempotent)."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def forget(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def used(key_id: str, **facts: Any) -> None:
    """Key ``key_id`` unwrapped a data key to read ``facts`` (target, backup id or segment)."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(key_id, {k: v for k, v in facts.items() if v is not None})
