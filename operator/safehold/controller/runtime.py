"""The operator's process-wide state: settings and the API facade, set once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from safehold.controller.kube import Kube
from safehold.controller.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    kube: Kube


_current: Runtime | None = None


def set_runtime(runtime: Runtime) -> None:
    global _current
    _current = runtime


def get() -> Runtime:
    if _current is None:
        raise RuntimeError("the operator has not started: safehold.controller.handlers.startup")
    return _current
