"""Parallel, memory-bounded encoding of raw byte streams into stored objects, and back.

Chunks are independent (each is one codec frame, sealed on its own), so compression and
encryption run on a small thread pool — zlib, bz2, zstandard, lz4 and cryptography all release
the GIL — while the order of frames is kept. At most ``inflight`` chunks are in the pool at once,
so memory is bounded by about ``inflight * chunk_size * 2`` whatever the database's size.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from safehold.codecs.compression import Codec
from safehold.codecs.crypto import ChunkCipher, TamperedError
from safehold.codecs.frames import MAGIC, Frame, frame_parts, parse_frames
from safehold.pipeline.profile import WAITING, Profile

DEFAULT_CHUNK_SIZE = 4 << 20
T = TypeVar("T")


def default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


def rechunk(blocks: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Cut arbitrary blocks into ``size``-byte chunks, flagging the last one.

    An empty stream still yields one empty final chunk, so every object has a final frame.
    Each byte is copied once, by the join that makes its chunk: blocks wait in a list, and a
    block that straddles a chunk's end is cut through a memoryview, not copied. A ``bytes``
    block of exactly ``size`` that starts a chunk is the chunk itself, not copied at all
    (producers that read ``size`` at a time, as the PostgreSQL dump does).
    """
    parts: list[bytes | memoryview] = []
    have = 0
    ready: bytes | None = None
    for block in blocks:
        if not have and len(block) == size and type(block) is bytes:
            if ready is not None:
                yield ready, False
            ready = block
            continue
        # views must not see a producer's later writes: a mutable block is copied first
        view = memoryview(block if type(block) is bytes else bytes(block))
        while len(view) >= size - have:
            take = size - have
            parts.append(view[:take])
            view = view[take:]
            if ready is not None:
                yield ready, False
            ready, parts, have = b"".join(parts), [], 0
        if view:
            parts.append(view)
            have += len(view)
    if parts:
        if ready is not None:
            yield ready, False
        ready = b"".join(parts)
    yield (ready if ready is not None else b""), True


def ordered_map(fn: Callable[..., T], items: Iterable[tuple[object, ...]], workers: int,
                inflight: int, profile: Profile | None = None) -> Iterator[T]:
    """``fn(*item)`` for each item on a thread pool, yielded in input order, bounded in flight.

    The time spent waiting for the pool's next result counts as ``waiting`` in ``profile``.
    """
    def result(fut: Future[T]) -> T:
        if profile is None:
            return fut.result()
        with profile.timed(WAITING):
            return fut.result()

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
                    yield result(pending.popleft())
            while pending:
                yield result(pending.popleft())
        finally:
            for fut in pending:
                fut.cancel()


@dataclass
class StreamStats:
    raw_size: int = 0
    stored_size: int = 0
    chunks: int = 0
    profile: Profile | None = None
    hashed: bool = True  # False: the stored bytes are counted, not hashed (see decode)
    _sha: hashlib._Hash = field(default_factory=hashlib.sha256)

    def stored(self, data: bytes) -> bytes:
        self.stored_size += len(data)
        if not self.hashed:
            pass
        elif self.profile is None:
            self._sha.update(data)
        else:
            with self.profile.timed("hash"):
                self._sha.update(data)
        return data

    @property
    def sha256(self) -> str:
        if not self.hashed:
            raise ValueError("these stats count the stored bytes without hashing them")
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
    """Raw blocks -> the stored object's bytes (header, then one frame per chunk).

    With ``stats.profile`` set, the time spent reading ``blocks``, compressing, encrypting,
    hashing and waiting for the pool is added to it.
    """
    workers = workers or default_workers()
    profile = stats.profile
    if profile is not None:
        blocks = profile.producer(blocks, "read")

    def seal(index: int, chunk: bytes, final: bool) -> list[bytes]:
        t0, c0 = time.perf_counter(), time.thread_time()
        compressed = codec.compress(chunk)
        t1, c1 = time.perf_counter(), time.thread_time()
        payload = cipher.seal(index, final, compressed) if cipher is not None else (compressed,)
        if profile is not None:
            profile.add("compress", t1 - t0, c1 - c0)
            profile.add("encrypt", time.perf_counter() - t1, time.thread_time() - c1)
        return frame_parts(payload, len(chunk), final)

    def numbered() -> Iterator[tuple[int, bytes, bool]]:
        for index, (chunk, final) in enumerate(rechunk(blocks, chunk_size)):
            stats.raw_size += len(chunk)
            stats.chunks += 1
            yield index, chunk, final

    yield stats.stored(MAGIC)
    for parts in ordered_map(seal, numbered(), workers, inflight=2 * workers, profile=profile):
        for part in parts:  # header, [nonce,] payload: written in turn, never joined
            yield stats.stored(part)


def decode(
    stored: Iterable[bytes],
    codec: Codec,
    cipher: ChunkCipher | None,
    stats: StreamStats,
    *,
    workers: int | None = None,
    every_crc: bool = False,
) -> Iterator[bytes]:
    """Stored bytes -> raw chunks; raises on any damage (see codecs.frames, codecs.crypto).

    The caller compares ``stats.sha256`` with the manifest once the iterator is exhausted.
    With ``stats.profile`` set, the time spent reading ``stored``, hashing, decrypting,
    decompressing and waiting for the pool is added to it.

    With a ``cipher`` and ``stats.hashed`` false, each frame is checked by its tag alone, which
    authenticates every byte of it, its place in the object and the object's identity (its
    subkey): the CRC is computed only when a tag fails, to report damage in storage as such
    rather than as forgery. The caller then has no SHA-256 to compare, only the sizes.
    ``every_crc`` checks every frame's CRC even then (``verify`` of an object stored without a
    SHA-256: the CRC fields are the only stored bytes no tag covers).
    """
    workers = workers or default_workers()
    profile = stats.profile
    if profile is not None:
        stored = profile.producer(stored, "read")

    def counted() -> Iterator[bytes]:
        for block in stored:
            yield stats.stored(block)

    tags_only = cipher is not None and not stats.hashed

    def open_frame(frame: Frame) -> bytes:
        t0, c0 = time.perf_counter(), time.thread_time()
        payload: bytes | memoryview = frame.payload
        if cipher is not None:
            try:
                payload = cipher.decrypt(frame.index, frame.final, payload)
            except TamperedError:
                if tags_only and (damage := frame.damaged()):
                    raise damage from None
                raise
        t1, c1 = time.perf_counter(), time.thread_time()
        raw = codec.decompress(payload, frame.raw_len)
        if profile is not None:
            profile.add("decrypt", t1 - t0, c1 - c0)
            profile.add("decompress", time.perf_counter() - t1, time.thread_time() - c1)
        return raw

    frames = parse_frames(counted(), check_crc=every_crc or not tags_only)
    for raw in ordered_map(open_frame, ((f,) for f in frames), workers,
                           inflight=2 * workers, profile=profile):
        stats.raw_size += len(raw)
        stats.chunks += 1
        yield raw
