"""Chunk compression: round trips, standard-format output, strict decoding, codec specs."""

from __future__ import annotations

import bz2
import gzip
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard

from safehold.codecs.compression import (
    CODECS,
    Codec,
    CodecError,
    CorruptDataError,
    parse_codec,
)
from tests.infra.portable import not_portable

# Compressible text with some structure, so every codec actually shrinks it.
TEXT = b"".join(b"row %06d|name-%d|%s\n" % (i, i % 97, b"x" * (i % 13)) for i in range(8_000))
RANDOM = os.urandom(256 * 1024)

LEVELS = {
    "none": [0],
    "gzip": [1, 6, 9],
    "bzip2": [1, 9],
    "lz4": [0, 3, 12],
    "zstd": [1, 3, 19],
}
ALL = [Codec(name, level) for name in CODECS for level in LEVELS[name]]
COMPRESSING = [c for c in ALL if c.name != "none"]


def ids(codec: Codec) -> str:
    return codec.spec


@pytest.mark.parametrize("codec", ALL, ids=ids)
@pytest.mark.parametrize("data", [b"", b"a", TEXT, RANDOM], ids=["empty", "1B", "text", "random"])
def test_round_trip(codec: Codec, data: bytes) -> None:
    frame = codec.compress(data)
    assert codec.decompress(frame, len(data)) == data


@pytest.mark.parametrize("codec", COMPRESSING, ids=ids)
def test_compresses_text_and_bounds_random_growth(codec: Codec) -> None:
    assert len(codec.compress(TEXT)) < len(TEXT) // 2
    # Incompressible input grows by at most a small framing overhead.
    assert len(codec.compress(RANDOM)) < len(RANDOM) * 1.01 + 1024


def _cat(codec: Codec, parts: list[bytes]) -> bytes:
    """What `safehold cat` prints for an unencrypted object: the chunks' frames back to back."""
    return b"".join(codec.compress(p) for p in parts)


PARTS = [TEXT[:50_000], b"", TEXT[50_000:]]


@not_portable("the gzip, bzip2, lz4 and zstd commands (apt-get install in unit.yml's Linux job)")
@pytest.mark.parametrize(
    ("name", "tool"), [("gzip", "gzip"), ("bzip2", "bzip2"), ("lz4", "lz4"), ("zstd", "zstd")]
)
def test_command_line_tools_decode_concatenated_frames(name: str, tool: str) -> None:
    path = shutil.which(tool)
    assert path, f"the {tool} command is needed for this test: apt-get install {tool}"
    stream = _cat(parse_codec(name), PARTS)
    result = subprocess.run([path, "-d", "-c"], input=stream, capture_output=True, check=True)
    assert result.stdout == TEXT


def test_python_readers_decode_concatenated_frames() -> None:
    assert gzip.decompress(_cat(parse_codec("gzip:9"), PARTS)) == TEXT
    assert bz2.decompress(_cat(parse_codec("bzip2:1"), PARTS)) == TEXT
    reader = zstandard.ZstdDecompressor().stream_reader(
        _cat(parse_codec("zstd:5"), PARTS), read_across_frames=True
    )
    assert reader.read() == TEXT


def test_zstd_frame_records_content_size_and_checksum() -> None:
    frame = parse_codec("zstd").compress(TEXT)
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == len(TEXT)
    assert params.has_checksum
    assert zstandard.ZstdDecompressor().decompress(frame) == TEXT


def test_gzip_output_is_deterministic() -> None:
    """mtime 0 in the gzip header: identical chunks give identical bytes (dedup-friendly)."""
    codec = parse_codec("gzip:6")
    assert codec.compress(TEXT) == codec.compress(TEXT)
    assert gzip.decompress(codec.compress(TEXT)) == TEXT


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


@pytest.mark.parametrize("codec", COMPRESSING, ids=ids)
def test_corruption_raises_corrupt_data_error(codec: Codec) -> None:
    frame = codec.compress(TEXT)
    damaged = {
        "bit flip in body": _flip(frame, len(frame) // 2),
        "bit flip near end": _flip(frame, len(frame) - 2),
        "truncated": frame[: len(frame) - 5],
        "trailing garbage": frame + b"\x00garbage",
        "garbage": b"not a frame at all",
        "empty": b"",
    }
    for what, data in damaged.items():
        with pytest.raises(CorruptDataError, match=codec.name):
            codec.decompress(data, len(TEXT))
            pytest.fail(f"{codec.spec}: {what} went undetected")


@pytest.mark.parametrize("codec", ALL, ids=ids)
def test_size_mismatch_detected(codec: Codec) -> None:
    frame = codec.compress(TEXT)
    for expected in (len(TEXT) - 1, len(TEXT) + 1, 0):
        with pytest.raises(CorruptDataError, match=codec.name):
            codec.decompress(frame, expected)


@pytest.mark.parametrize("codec", ALL, ids=ids)
def test_empty_frame_with_trailing_bytes_is_corrupt(codec: Codec) -> None:
    with pytest.raises(CorruptDataError):
        codec.decompress(codec.compress(b"") + b"xx", 0)


def test_zstd_rejects_declared_size_before_decoding() -> None:
    """A header claiming a huge size fails on the header, without allocating that much."""
    frame = parse_codec("zstd").compress(b"abc" * 1000)
    with pytest.raises(CorruptDataError, match="header says 10"):
        parse_codec("zstd").decompress(frame, 10)


def test_negative_raw_size_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="raw_size"):
        parse_codec("gzip").decompress(b"", -1)


def test_parallel_use_from_threads() -> None:
    """The pipeline shares one Codec across its pool; results must not interfere."""
    chunks = [os.urandom(1024) + TEXT[i * 10_000 : i * 10_000 + 50_000] for i in range(16)]
    for codec in (parse_codec("zstd"), parse_codec("gzip:1"), parse_codec("lz4")):
        with ThreadPoolExecutor(4) as pool:
            frames = list(pool.map(codec.compress, chunks))
            back = list(pool.map(codec.decompress, frames, [len(c) for c in chunks]))
        assert back == chunks


@pytest.mark.parametrize(
    ("spec", "name", "level", "canonical"),
    [
        ("none", "none", 0, "none"),
        ("zstd", "zstd", 3, "zstd:3"),
        ("zstd:19", "zstd", 19, "zstd:19"),
        ("gzip", "gzip", 6, "gzip:6"),
        ("gzip:6", "gzip", 6, "gzip:6"),
        ("bzip2", "bzip2", 9, "bzip2:9"),
        ("bzip2:1", "bzip2", 1, "bzip2:1"),
        ("lz4", "lz4", 0, "lz4:0"),
        ("lz4:9", "lz4", 9, "lz4:9"),
        (" ZSTD:22 ", "zstd", 22, "zstd:22"),
    ],
)
def test_parse_codec(spec: str, name: str, level: int, canonical: str) -> None:
    codec = parse_codec(spec)
    assert (codec.name, codec.level, codec.spec) == (name, level, canonical)
    assert parse_codec(codec.spec) == codec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("brotli", r"unknown compression codec 'brotli'; choose one of: none; gzip\[:level\]"),
        ("", "unknown compression codec"),
        ("zstd:23", r"level 23 is out of range for zstd: use zstd:N with N in 1\.\.22, default 3"),
        ("zstd:0", r"out of range for zstd"),
        ("gzip:10", r"gzip:N with N in 1\.\.9, default 6"),
        ("bzip2:0", r"bzip2:N with N in 1\.\.9, default 9"),
        ("lz4:17", r"lz4:N with N in 0\.\.16, default 0"),
        ("zstd:fast", r"'fast' in 'zstd:fast' is not an integer: use zstd:N with N in 1\.\.22"),
        ("zstd:", r"level '' in 'zstd:' is not an integer"),
        ("none:3", "'none' takes no level"),
    ],
)
def test_parse_codec_errors_name_the_choices(spec: str, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        parse_codec(spec)


def test_codec_error_is_a_value_error_and_codec_validates_itself() -> None:
    with pytest.raises(ValueError, match="out of range for gzip"):
        Codec("gzip", 0)
    with pytest.raises(CodecError, match="choose one of"):
        Codec("xz", 6)
