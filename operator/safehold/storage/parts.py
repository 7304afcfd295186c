"""What the GCS and Azure backends share: cutting a stream into parts, sending the parts in
parallel with bounded memory, and counting what was sent and what a resume skipped.

A streaming ``put`` is uploaded as fixed-size parts (GCS part objects, Azure blocks). Part
boundaries depend only on byte offsets, never on how the producer happened to chunk its output,
so re-running an interrupted backup that produces identical bytes produces identical parts, and
the backend can recognise (by index, size and MD5) the parts that are already stored.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

P = TypeVar("P")
R = TypeVar("R")
MiB = 1 << 20


def split_parts(chunks: Iterable[bytes], part_size: int, *, grow_every: int = 0
                ) -> Iterator[bytes]:
    """Re-cut a byte stream into parts of ``part_size`` bytes (the last may be shorter).

    With ``grow_every``, parts ``k*grow_every`` and later are ``(k+1) * part_size`` long, so a
    store with a maximum part count still takes huge objects, while the memory of ordinary
    ones stays small. An empty stream yields one empty part; a non-empty stream never ends
    with an empty part.
    """
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, got {part_size}")
    buf = bytearray()
    index = 0
    for chunk in chunks:
        buf += chunk
        while len(buf) >= (size := part_size * (index // grow_every + 1 if grow_every else 1)):
            yield bytes(buf[:size])
            del buf[:size]
            index += 1
    if buf or not index:
        yield bytes(buf)


def md5_of(data: bytes) -> bytes:
    """MD5 as the stores report it: an integrity check of a part in transit, not security."""
    return hashlib.md5(data, usedforsecurity=False).digest()


@dataclass
class TransferStats:
    """Bytes and parts actually uploaded, and those a resumed put found already stored."""

    uploaded_bytes: int = 0
    skipped_bytes: int = 0
    uploaded_parts: int = 0
    skipped_parts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def uploaded(self, size: int) -> None:
        with self._lock:
            self.uploaded_bytes += size
            self.uploaded_parts += 1

    def skipped(self, size: int) -> None:
        with self._lock:
            self.skipped_bytes += size
            self.skipped_parts += 1


def send_parts(parts: Iterable[P], send: Callable[[int, P], R], *, workers: int) -> list[R]:
    """Call ``send(index, part)`` for every part, at most ``workers`` at a time; results in order.

    The ``parts`` iterator (the database dump, compression, encryption) runs in the calling
    thread, and it is not advanced while ``workers`` parts are in flight, so memory stays at
    about ``workers + 1`` parts however large the object. On the first failure, of the
    producer or of a send, parts not yet started are abandoned, running sends finish, and the
    error propagates unchanged.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    futures: list[Future[R]] = []
    pending: set[Future[R]] = set()
    with ThreadPoolExecutor(workers, thread_name_prefix="safehold-part") as pool:
        try:
            for index, part in enumerate(parts):
                while len(pending) >= workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()  # raises the send's error
                future = pool.submit(send, index, part)
                futures.append(future)
                pending.add(future)
            return [future.result() for future in futures]
        except BaseException:
            for future in pending:
                future.cancel()
            raise


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": MiB, "mb": 1000**2,
          "mib": MiB, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30}
TUNING_OPTIONS = ("part_size", "concurrency", "timeout")


def tuning_options(query: dict[str, list[str]], url: str) -> dict[str, Any]:
    """``part_size`` (e.g. 16MiB), ``concurrency`` and ``timeout`` from a URL query, as the
    backends' keyword arguments (the same spelling as for s3:// URLs)."""
    options: dict[str, Any] = {}
    for name in TUNING_OPTIONS:
        if name not in query:
            continue
        value = query[name][-1].strip()
        try:
            if name == "part_size":
                number, unit = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", value).groups()  # type: ignore[union-attr]
                options[name] = int(number) * _UNITS[unit.lower()]
            elif name == "concurrency":
                options["workers"] = int(value)
            else:
                options[name] = float(value)
        except (AttributeError, KeyError, ValueError):
            raise ValueError(
                f"{name}={value!r} in {url!r} is not valid: part_size takes a size such as"
                " 16MiB, concurrency a whole number, timeout seconds") from None
    if options.get("part_size", 1) <= 0 or options.get("workers", 1) < 1 or options.get(
            "timeout", 1) <= 0:
        raise ValueError(f"part_size, concurrency and timeout in {url!r} must be positive")
    return options
