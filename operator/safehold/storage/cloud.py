"""What the object-store backends (S3, GCS, Azure) share beyond their parts: the form of their
repository URLs, the tuning options in them, and the Storage methods that follow from others.

Their URLs are ``scheme://bucket/prefix?option=value&…``: the bucket (or container) is the host,
the percent-decoded path is the prefix, and every store takes ``part_size`` (e.g. 16MiB),
``concurrency`` (parts in flight) and ``timeout`` (seconds) besides its own options. An option
given twice counts once, the last; an option given empty (``?region=``) counts as not given, so
templated URLs may leave values out.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from safehold.storage.base import ObjectInfo, ObjectNotFound, check_key

TUNING_OPTIONS = ("part_size", "concurrency", "timeout")
_SIZE = re.compile(r"(\d+)\s*([a-zA-Z]*)")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30}  # as the CLI's sizes
_VOWEL_SOUNDS = "aefhilmnorsx"  # letters whose English name starts with a vowel: "an s3://"


@dataclass(frozen=True)
class StoreURL:
    """A parsed object-store URL: ``bucket`` (or container), ``prefix``, the store's own
    ``options`` (non-empty values only) and ``tuning`` as constructor keywords."""

    bucket: str
    prefix: str
    options: dict[str, str]
    tuning: dict[str, Any]


def parse_store_url(url: str, scheme: str, *, example: str, options: Iterable[str],
                    credentials: str, noun: str = "bucket") -> StoreURL:
    """Split ``url`` of ``scheme`` (its own ``options`` plus the tuning ones) into its parts.

    Every problem is a ValueError naming the fix: ``example`` shows the form, ``credentials``
    says where the credentials go instead of the URL, ``noun`` is what the host names. An
    ``endpoint`` option must be http(s). The bucket name is the caller's to check.
    """
    parts = urlsplit(url)
    article = "an" if scheme[:1] in _VOWEL_SOUNDS else "a"
    if parts.scheme != scheme:
        raise ValueError(f"{url!r} is not {article} {scheme}:// URL; use {example}")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r} holds credentials: remove them from the URL and provide"
                         f" them as {credentials}")
    if not parts.netloc:
        raise ValueError(f"{url!r} names no {noun}; use {example}")
    if parts.fragment:
        raise ValueError(f"{url!r} has a fragment ('#…'); remove it")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        check_key(prefix)
    query = {name: values[-1] for name, values in
             parse_qs(parts.query, keep_blank_values=True).items()}
    accepted = (*options, *TUNING_OPTIONS)
    unknown = sorted(set(query) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} in {url!r}; {scheme}:// URLs"
                         f" accept {', '.join(accepted)}")
    given = {name: value for name, value in query.items() if value}
    endpoint = given.get("endpoint")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"endpoint={endpoint!r} in {url!r} must be an http(s):// URL: use"
                         " http(s)://host:port")
    tuning = {name: _tuning_value(name, given.pop(name).strip(), url)
              for name in TUNING_OPTIONS if name in given}
    return StoreURL(parts.netloc, prefix, given, tuning)


def _tuning_value(name: str, value: str, url: str) -> int | float:
    try:
        if name == "part_size":
            number, unit = _SIZE.fullmatch(value).groups()  # type: ignore[union-attr]
            return int(number) * _UNITS[unit.lower()]
        if name == "concurrency":
            return int(value)
        return float(value)
    except (AttributeError, KeyError, ValueError):
        fix = {"part_size": "a size such as 16MiB, 64MiB or 8388608",
               "concurrency": "a whole number of parts in flight"}.get(name, "seconds")
        raise ValueError(f"invalid {name} {value!r} in {url!r}: use {fix}") from None


class ObjectStore(ABC):
    """The Storage methods an object store derives from its others (``put``, ``stat``)."""

    @abstractmethod
    def put(self, key: str, chunks: Iterable[bytes]) -> int: ...

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put(key, (data,))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def free_space(self) -> int | None:
        """None: an object store has no free space to check before a backup."""
        return None


def check_list_prefix(prefix: str) -> str:
    """Return ``prefix`` unless it starts with '/', which no key does."""
    if prefix.startswith("/"):
        raise ValueError(f"invalid prefix {prefix!r}: keys are relative, drop the leading '/'")
    return prefix

