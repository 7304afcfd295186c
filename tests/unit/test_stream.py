"""The streaming pipeline: chunking, ordered parallel encoding, bounded work in flight."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator

import pytest

from safehold.codecs.compression import parse_codec
from safehold.codecs.crypto import ChunkCipher
from safehold.codecs.frames import parse_frames
from safehold.pipeline import stream


@pytest.mark.parametrize(
    ("blocks", "size", "expected"),
    [
        ([], 4, [(b"", True)]),
        ([b""], 4, [(b"", True)]),
        ([b"abc"], 4, [(b"abc", True)]),
        ([b"abcd"], 4, [(b"abcd", True)]),
        ([b"ab", b"cd", b"e"], 4, [(b"abcd", False), (b"e", True)]),
        ([b"abcdefgh"], 4, [(b"abcd", False), (b"efgh", True)]),
        ([b"a"] * 9, 4, [(b"aaaa", False), (b"aaaa", False), (b"a", True)]),
    ],
)
def test_rechunk_cuts_fixed_sizes_and_flags_the_last(blocks, size, expected) -> None:
    assert list(stream.rechunk(blocks, size)) == expected


def test_rechunk_passes_a_whole_chunk_block_through_uncopied() -> None:
    whole, other = b"abcd", b"efgh"
    chunks = list(stream.rechunk([whole, b"xy", b"zw", other, b"!"], 4))
    assert [c for c, _ in chunks] == [b"abcd", b"xyzw", b"efgh", b"!"]
    assert chunks[0][0] is whole and chunks[2][0] is other
    # a mutable block is never passed on: the producer may write into it again
    mutable = bytearray(b"abcd")
    assert next(iter(stream.rechunk([mutable], 4)))[0] is not mutable


def test_ordered_map_keeps_order_and_bounds_inflight() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.001 * (i % 3))
        with lock:
            running -= 1
        return i * i

    submitted = 0

    def items() -> Iterator[tuple[int]]:
        nonlocal submitted
        for i in range(50):
            submitted += 1
            yield (i,)

    out = []
    for value in stream.ordered_map(work, items(), workers=2, inflight=4):
        out.append(value)
        # the producer is never more than `inflight` items ahead of the consumer
        assert submitted - len(out) <= 4
    assert out == [i * i for i in range(50)]
    assert peak <= 2


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_encode_decode_roundtrip(encrypted: bool, workers: int) -> None:
    data = os.urandom(100_000) + b"x" * 300_000
    codec = parse_codec("zstd:1")
    key = os.urandom(32)
    cipher = ChunkCipher(key, "b/obj") if encrypted else None
    wstats = stream.StreamStats()
    blocks = [data[i:i + 7777] for i in range(0, len(data), 7777)]
    stored = list(stream.encode(blocks, codec, cipher, wstats, chunk_size=65536, workers=workers))
    assert wstats.raw_size == len(data)
    assert wstats.chunks == len(list(parse_frames(stored))) == -(-len(data) // 65536)
    rstats = stream.StreamStats()
    cipher = ChunkCipher(key, "b/obj") if encrypted else None
    out = b"".join(stream.decode(stored, codec, cipher, rstats, workers=workers))
    assert out == data
    assert rstats.sha256 == wstats.sha256 and rstats.stored_size == wstats.stored_size


def test_encode_propagates_producer_errors() -> None:
    def broken() -> Iterator[bytes]:
        yield b"a" * 100_000
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(stream.encode(broken(), parse_codec("lz4"), None, stream.StreamStats(),
                           chunk_size=65536, workers=2))


def test_rechunk_matches_plain_slicing_for_any_block_sizes() -> None:
    """Random block sizes (empty, smaller than, equal to and many times the chunk size), as
    bytes and bytearray: the chunks are the stream cut every ``size`` bytes, as bytes."""
    rng = random.Random(7)
    for _ in range(200):
        size = rng.choice([1, 3, 16, 64])
        data = rng.randbytes(rng.randrange(0, 400))
        blocks: list[bytes | bytearray] = []
        at = 0
        while at < len(data):
            n = rng.choice([0, 1, size - 1, size, size + 1, 3 * size, rng.randrange(1, 200)])
            blocks.append(data[at:at + n] if rng.random() < 0.5 else bytearray(data[at:at + n]))
            at += n
        chunks = list(stream.rechunk(blocks, size))
        want = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        assert [c for c, _ in chunks] == want
        assert [f for _, f in chunks] == [False] * (len(want) - 1) + [True]
        assert all(type(c) is bytes for c, _ in chunks)
