"""Parallel, memory-bounded encoding of raw byte streams into stored objects, and back.

Chunks are independent (each is one codec frame, sealed on its own), so compression and
encryption run on a small thread pool — zlib, bz2, zstandard, lz4 and cryptography all release
the GIL — while the order of frames is kept. At most ``inflight`` chunks are in the pool at once,
so memory is bounded by about ``inflight * chunk_size * 2`` whatever the database's size.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from safehold.codecs.compression import Codec
from safehold.codecs.crypto import ChunkCipher
from safehold.codecs.frames import MAGIC, Frame, frame_bytes, parse_frames

DEFAULT_CHUNK_SIZE = 4 << 20
T = TypeVar("T")


def default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def rechunk(blocks: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Cut arbitrary blocks into ``size``-byte chunks, flagging the last one.

    An empty stream still yields one empty final chunk, so every object has a final frame.
    """
    buf = bytearray()
    ready: bytes | None = None
    for block in blocks:
        buf += block
        while len(buf) >= size:
            if ready is not None:
                yield ready, False
            ready = bytes(buf[:size])
            del buf[:size]
    if buf:
        if ready is not None:
            yield ready, False
        ready = bytes(buf)
    yield (ready if ready is not None else b""), True


def ordered_map(fn: Callable[..., T], items: Iterable[tuple[object, ...]], workers: int,
                inflight: int) -> Iterator[T]:
    """``fn(*item)`` for each item on a thread pool, yielded in input order, bounded in flight."""
    if workers <= 1:
        for item in items:
            yield fn(*item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safehold-codec") as pool:
        pending: deque[Future[T]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, *item))
                if len(pending) >= inflight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


@dataclass
class StreamStats:
    raw_size: int = 0
    stored_size: int = 0
    chunks: int = 0
    _sha: hashlib._Hash = field(default_factory=hashlib.sha256)

    def stored(self, data: bytes) -> bytes:
        self.stored_size += len(data)
        self._sha.update(data)
        return data

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def encode(
    blocks: Iterable[bytes],
    codec: Codec,
    cipher: ChunkCipher | None,
    stats: StreamStats,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> Iterator[bytes]:
    """Raw blocks -> the stored object's bytes (header, then one frame per chunk)."""
    workers = workers or default_workers()

    def seal(index: int, chunk: bytes, final: bool) -> bytes:
        payload = codec.compress(chunk)
        if cipher is not None:
            payload = cipher.encrypt(index, final, payload)
        return frame_bytes(payload, len(chunk), final)

    def numbered() -> Iterator[tuple[int, bytes, bool]]:
        for index, (chunk, final) in enumerate(rechunk(blocks, chunk_size)):
            stats.raw_size += len(chunk)
            stats.chunks += 1
            yield index, chunk, final

    yield stats.stored(MAGIC)
    for framed in ordered_map(seal, numbered(), workers, inflight=2 * workers):
        yield stats.stored(framed)


def decode(
    stored: Iterable[bytes],
    codec: Codec,
    cipher: ChunkCipher | None,
    stats: StreamStats,
    *,
    workers: int | None = None,
) -> Iterator[bytes]:
    """Stored bytes -> raw chunks; raises on any damage (see codecs.frames, codecs.crypto).

    The caller compares ``stats.sha256`` with the manifest once the iterator is exhausted.
    """
    workers = workers or default_workers()

    def counted() -> Iterator[bytes]:
        for block in stored:
            yield stats.stored(block)

    def open_frame(frame: Frame) -> bytes:
        payload = frame.payload
        if cipher is not None:
            payload = cipher.decrypt(frame.index, frame.final, payload)
        return codec.decompress(payload, frame.raw_len)

    for raw in ordered_map(open_frame, ((f,) for f in parse_frames(counted())), workers,
                           inflight=2 * workers):
        stats.raw_size += len(raw)
        stats.chunks += 1
        yield raw
