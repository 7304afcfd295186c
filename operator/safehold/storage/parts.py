"""What the object-store backends (S3, GCS, Azure) share for writing: cutting a stream into
parts, sending the parts in parallel with bounded memory, skipping the parts an interrupted put
already stored, and counting what was sent and what was skipped.

A streaming ``put`` is uploaded as parts (S3 multipart parts, GCS part objects, Azure blocks).
Part boundaries depend only on byte offsets, never on how the producer happened to chunk its
output, so re-running an interrupted backup that produces identical bytes produces identical
parts, and the backend can recognise (by index, size and MD5) the parts that are already stored.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

P = TypeVar("P")
R = TypeVar("R")
MiB = 1 << 20


def part_size_at(part_size: int, index: int, *, grow_every: int = 0,
                 largest: int | None = None) -> int:
    """Size of part ``index`` (0-based) as :func:`split_parts` cuts it."""
    size = part_size * (index // grow_every + 1 if grow_every else 1)
    return min(size, largest) if largest else size


def split_parts(chunks: Iterable[bytes], part_size: int, *, grow_every: int = 0,
                largest: int | None = None) -> Iterator[bytes]:
    """Re-cut a byte stream into parts of ``part_size`` bytes (the last may be shorter).

    With ``grow_every``, parts ``k*grow_every`` and later are ``(k+1) * part_size`` long (but
    never longer than ``largest``), so a store with a maximum part count still takes huge
    objects, while the memory of ordinary ones stays small. An empty stream yields one empty
    part; a non-empty stream never ends with an empty part.
    """
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, got {part_size}")
    buf = bytearray()
    index = 0
    for chunk in chunks:
        buf += chunk
        while len(buf) >= (size := part_size_at(part_size, index, grow_every=grow_every,
                                                largest=largest)):
            with memoryview(buf) as view:
                yield bytes(view[:size])  # one copy, not a bytearray slice and then a copy
            del buf[:size]
            index += 1
    if buf or not index:
        yield bytes(buf)


def whole_or_parts(chunks: Iterable[bytes], part_size: int, *, grow_every: int = 0,
                   largest: int | None = None) -> bytes | Iterator[bytes]:
    """The whole stream if it fits in one part (to store in a single request), else its parts as
    :func:`split_parts` cuts them (for a multipart upload).

    The choice is made as soon as the stream outgrows one part, so the multipart upload starts
    at once: a producer failing after that leaves parts that a retried put can reuse.
    """
    rest = iter(chunks)
    head: deque[bytes] = deque()
    size = 0
    for chunk in rest:  # errors raised by the producer propagate unchanged
        head.append(chunk)
        size += len(chunk)
        if size > part_size:
            return split_parts(_drained(head, rest), part_size, grow_every=grow_every,
                               largest=largest)
    return b"".join(head)


def _drained(head: deque[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """``head``'s chunks, each let go of as it is taken (the memory stays one part), then
    ``rest``'s."""
    while head:
        yield head.popleft()
    yield from rest


def md5_of(data: bytes) -> bytes:
    """MD5 as the stores report it: an integrity check of a part in transit, not security."""
    return hashlib.md5(data, usedforsecurity=False).digest()


@dataclass
class TransferStats:
    """Bytes and parts actually uploaded, and those a resumed put found already stored.

    ``resumed_uploads`` counts the puts that continued an earlier put's unfinished upload (S3,
    where that upload is a server-side object of its own).
    """

    uploaded_bytes: int = 0
    skipped_bytes: int = 0
    uploaded_parts: int = 0
    skipped_parts: int = 0
    resumed_uploads: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def uploaded(self, size: int) -> None:
        with self._lock:
            self.uploaded_bytes += size
            self.uploaded_parts += 1

    def skipped(self, size: int) -> None:
        with self._lock:
            self.skipped_bytes += size
            self.skipped_parts += 1

    def resumed(self) -> None:
        with self._lock:
            self.resumed_uploads += 1


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


def upload_parts(parts: Iterable[bytes], send: Callable[[int, bytes], tuple[R, bool]], *,
                 stats: TransferStats, concurrency: int) -> tuple[list[R], int]:
    """Upload a stream's parts, ``concurrency`` at a time (see :func:`send_parts`).

    ``send(index, data)`` returns what the final commit names the part by (an ETag, a part
    object, a block id) and whether it sent the part: False when an earlier, interrupted put of
    the same key had stored it with identical content. Both are counted in ``stats``. Returns
    the references in part order and the stream's size.
    """
    def one(index: int, data: bytes) -> tuple[R, int]:
        reference, sent = send(index, data)
        (stats.uploaded if sent else stats.skipped)(len(data))
        return reference, len(data)

    sent = send_parts(parts, one, workers=concurrency)
    return [reference for reference, _ in sent], sum(size for _, size in sent)


def check_tuning(*, part_size: int | None = None, concurrency: int | None = None,
                 timeout: float | None = None, smallest: int = 1, largest: int | None = None,
                 most_concurrency: int | None = None) -> None:
    """Raise ValueError naming the bound unless each tuning value given is within what the
    store accepts: ``smallest``..``largest`` part sizes, 1..``most_concurrency`` parts in
    flight, a positive timeout."""
    if part_size is not None and not (
            smallest <= part_size and (largest is None or part_size <= largest)):
        bounds = (f"between {_size(smallest)} and {_size(largest)}" if largest
                  else f"at least {_size(smallest)}")
        raise ValueError(f"part_size must be {bounds}, got {part_size} bytes")
    if concurrency is not None and not (
            concurrency >= 1 and (most_concurrency is None or concurrency <= most_concurrency)):
        bounds = f"between 1 and {most_concurrency}" if most_concurrency else "at least 1"
        raise ValueError(f"concurrency must be {bounds}, got {concurrency}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")


def _size(n: int) -> str:
    """``5MiB`` for 5 << 20: the largest binary unit that divides ``n``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n} bytes" if n != 1 else "1 byte"
