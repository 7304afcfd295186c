"""What the object-store backends share: key checks, cutting a stream into parts, sending the
parts in parallel with bounded memory, and counting what was sent and what a resume skipped.

A streaming ``put`` is uploaded as fixed-size parts (GCS part objects, Azure blocks). Part
boundaries depend only on byte offsets, never on how the producer happened to chunk its output,
so re-running an interrupted backup that produces identical bytes produces identical parts, and
the backend can recognise (by index, size and MD5) the parts that are already stored.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

P = TypeVar("P")
R = TypeVar("R")
MiB = 1 << 20


def check_key(key: str) -> None:
    """Reject keys that are not relative '/'-separated paths (the same rule as local storage).

    Object stores would accept ``a//b`` or ``../x`` as names, but a repository copied between
    backends must mean the same thing everywhere.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid storage key {key!r}: keys are non-empty strings")
    if key.startswith("/"):
        raise ValueError(f"invalid storage key {key!r}: keys are relative, drop the leading '/'")
    for segment in key.split("/"):
        problem = (
            "it has an empty segment ('//', or a leading or trailing '/')" if not segment
            else f"the segment {segment!r} would escape or alias a directory"
            if segment in (".", "..")
            else "it contains a NUL character" if "\0" in segment
            else None
        )
        if problem:
            raise ValueError(
                f"invalid storage key {key!r}: {problem}; keys are relative '/'-separated"
                " paths such as 'target/backup-id/manifest.json'"
            )


def split_parts(chunks: Iterable[bytes], part_size: int) -> Iterator[bytes]:
    """Re-cut a byte stream into parts of exactly ``part_size`` bytes (the last may be shorter).

    An empty stream yields one empty part; a non-empty stream never ends with an empty part.
    """
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, got {part_size}")
    buf = bytearray()
    produced = False
    for chunk in chunks:
        buf += chunk
        while len(buf) >= part_size:
            yield bytes(buf[:part_size])
            del buf[:part_size]
            produced = True
    if buf or not produced:
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
