"""Plug-ins by URL scheme (engines, storage backends), imported on first use.

Modules register their factory at import time; the registry imports a scheme's module only when
a URL needs it, so ``safehold`` starts fast and a missing SDK only affects its own scheme.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Generic, TypeVar
from urllib.parse import urlsplit

F = TypeVar("F")


class SchemeRegistry(Generic[F]):
    def __init__(self, what: str, modules: Mapping[str, str], example: str) -> None:
        self.what = what  # "target" or "repository", for messages
        self.modules = dict(modules)
        self.example = example
        self._factories: dict[str, F] = {}

    def register(self, scheme: str, factory: F) -> None:
        self._factories[scheme] = factory

    def factory(self, url: str) -> F:
        """The factory for ``url``'s scheme; ValueError naming the supported ones otherwise."""
        scheme = urlsplit(url).scheme
        supported = ", ".join(f"{s}://" for s in sorted(self.modules))
        if not scheme:
            raise ValueError(f"{self.what} {url!r} is not a URL: write e.g. {self.example}"
                             f" (supported: {supported})")
        if scheme in self.modules and scheme not in self._factories:
            try:
                importlib.import_module(self.modules[scheme])
            except ImportError as exc:  # the package without its runner extra, or the exe
                raise ValueError(
                    f"this installation of safehold cannot open {scheme}:// URLs (no module"
                    f" {exc.name or self.modules[scheme]}): install safehold with its runner"
                    " extra (pipx install 'safehold[runner]'); the one-file executable"
                    " holds sqlite:// and file:// only") from None
        if scheme not in self._factories:
            raise ValueError(f"unsupported {self.what} scheme {scheme!r} in {url!r};"
                             f" supported: {supported}")
        return self._factories[scheme]
