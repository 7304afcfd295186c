"""Chunk compression: one independent, standard-format frame per chunk.

Every chunk is a complete frame of its codec's ordinary container (a gzip member, a bzip2 stream,
an LZ4 frame, a zstd frame with content size and checksum), so the concatenation that
``safehold cat`` prints for an unencrypted object decodes with ``gzip -d``, ``bzip2 -d``,
``lz4 -d`` or ``zstd -d`` — the backup stays readable without Safehold.

The pipeline calls these functions from a thread pool. Each call builds its own (de)compressor,
so nothing is shared between threads, and all four libraries release the GIL while they work;
zstd runs with ``threads=0`` because the parallelism comes from the pool, not from libzstd.

Decoding is strict: the caller passes the chunk's raw size from the frame header, output is
bounded by it, and a short, long, truncated or trailing-garbage frame is a ``CorruptDataError``.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import lz4.frame
import zstandard

from safehold.api.errors import IntegrityError, UsageError

CODECS = ("none", "gzip", "bzip2", "lz4", "zstd")


class CodecError(UsageError, ValueError):
    """A codec spec names an unknown codec or a level outside the codec's range."""


class CorruptDataError(IntegrityError):
    """Compressed bytes do not decode to exactly the expected raw size."""


@dataclass(frozen=True)
class _Range:
    default: int
    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.low}..{self.high}, default {self.default}"


# Level ranges as the libraries accept them. "none" has no level; 0 is its only value.
_LEVELS: dict[str, _Range] = {
    "none": _Range(0, 0, 0),
    "gzip": _Range(6, 1, 9),
    "bzip2": _Range(9, 1, 9),
    "lz4": _Range(0, 0, lz4.frame.COMPRESSIONLEVEL_MAX),  # 0 = fast mode, 3+ = high compression
    "zstd": _Range(3, 1, zstandard.MAX_COMPRESSION_LEVEL),
}


def _choices() -> str:
    return "; ".join(
        name if name == "none" else f"{name}[:level] with level {_LEVELS[name]}" for name in CODECS
    )


@dataclass(frozen=True)
class Codec:
    """A compression algorithm and level; construct with :func:`parse_codec` or directly."""

    name: str
    level: int

    def __post_init__(self) -> None:
        levels = _LEVELS.get(self.name)
        if levels is None:
            raise CodecError(
                f"unknown compression codec {self.name!r}; choose one of: {_choices()}"
            )
        if not levels.low <= self.level <= levels.high:
            if self.name == "none":
                raise CodecError("compression 'none' takes no level; write just 'none'")
            raise CodecError(
                f"compression level {self.level} is out of range for {self.name}: "
                f"use {self.name}:N with N in {levels}"
            )

    @property
    def spec(self) -> str:
        """The canonical spec recorded in manifests, e.g. ``"zstd:3"`` (``"none"`` alone)."""
        return "none" if self.name == "none" else f"{self.name}:{self.level}"

    def compress(self, data: bytes) -> bytes:
        """Compress one chunk into a complete frame of this codec's standard format."""
        return _IMPLS[self.name].compress(data, self.level)

    def decompress(self, data: bytes | memoryview, raw_size: int) -> bytes:
        """Decode one frame that must hold exactly ``raw_size`` bytes.

        Raises CorruptDataError (naming the codec) when the frame is damaged, truncated, followed
        by extra bytes, or decodes to any other size; output never grows past ``raw_size + 1``.
        """
        if raw_size < 0:
            raise ValueError(f"raw_size must be >= 0, got {raw_size}")
        try:
            out = _IMPLS[self.name].decompress(data, raw_size)
        except CorruptDataError:
            raise
        except (OSError, ValueError, RuntimeError, zlib.error, zstandard.ZstdError) as exc:
            raise CorruptDataError(f"{self.name} chunk is corrupt: {exc}") from exc
        if len(out) != raw_size:
            got = str(len(out)) if len(out) <= raw_size else "more"
            raise _size_mismatch(self.name, raw_size, got)
        return out


def parse_codec(spec: str) -> Codec:
    """Parse ``"zstd"``, ``"zstd:19"``, ``"gzip:6"``, ``"none"``…; a bare name gets its default."""
    name, sep, level_text = spec.strip().lower().partition(":")
    levels = _LEVELS.get(name)
    if levels is None:
        raise CodecError(f"unknown compression codec {spec!r}; choose one of: {_choices()}")
    if not sep:
        return Codec(name, levels.default)
    try:
        level = int(level_text)
    except ValueError:
        raise CodecError(
            f"compression level {level_text!r} in {spec!r} is not an integer: "
            f"use {name}:N with N in {levels}"
        ) from None
    return Codec(name, level)


def _size_mismatch(codec: str, expected: int, got: str) -> CorruptDataError:
    return CorruptDataError(
        f"{codec} chunk decodes to {got} bytes but its header says {expected}: "
        "the chunk or its header is corrupt"
    )


@dataclass(frozen=True)
class _Impl:
    compress: Callable[[bytes, int], bytes]
    decompress: Callable[[bytes | memoryview, int], bytes]


def _check_complete(codec: str, eof: bool, unused: bytes) -> None:
    if not eof:
        raise CorruptDataError(f"{codec} chunk is truncated or decodes past its expected size")
    if unused:
        raise CorruptDataError(f"{codec} chunk has {len(unused)} unexpected bytes after its end")


def _none_compress(data: bytes, _level: int) -> bytes:
    return data


def _none_decompress(data: bytes | memoryview, raw_size: int) -> bytes:
    if len(data) != raw_size:
        raise _size_mismatch("none", raw_size, str(len(data)))
    return bytes(data)  # a frame payload is a view of a stored block: the engine gets bytes


def _gzip_compress(data: bytes, level: int) -> bytes:
    # wbits=31 writes a gzip member (header with mtime 0, CRC-32, size trailer): deterministic.
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _gzip_decompress(data: bytes | memoryview, raw_size: int) -> bytes:
    decompressor = zlib.decompressobj(31)
    out = decompressor.decompress(data, raw_size + 1)  # +1 so an oversized frame shows itself
    _check_complete("gzip", decompressor.eof, decompressor.unused_data)
    return out


def _bzip2_decompress(data: bytes | memoryview, raw_size: int) -> bytes:
    decompressor = bz2.BZ2Decompressor()
    out = decompressor.decompress(data, raw_size + 1)
    _check_complete("bzip2", decompressor.eof, decompressor.unused_data)
    return out


def _lz4_compress(data: bytes, level: int) -> bytes:
    frame: bytes = lz4.frame.compress(
        data, compression_level=level, content_checksum=True, store_size=True
    )
    return frame


def _lz4_decompress(data: bytes | memoryview, raw_size: int) -> bytes:
    decompressor = lz4.frame.LZ4FrameDecompressor()
    out: bytes = decompressor.decompress(data, raw_size + 1)
    _check_complete("lz4", decompressor.eof, decompressor.unused_data)
    return out


def _zstd_compress(data: bytes, level: int) -> bytes:
    compressor = zstandard.ZstdCompressor(
        level=level, write_checksum=True, write_content_size=True, threads=0
    )
    return compressor.compress(data)


def _zstd_decompress(data: bytes | memoryview, raw_size: int) -> bytes:
    # The header's content size decides the allocation, so check it before decoding anything.
    declared = zstandard.frame_content_size(data)
    if declared not in (raw_size, -1):
        raise _size_mismatch("zstd", raw_size, str(declared))
    decompressor = zstandard.ZstdDecompressor()
    if raw_size == 0:
        # zstandard's one-shot path skips its trailing-data check for empty frames.
        stream = decompressor.decompressobj()
        out = stream.decompress(data)
        _check_complete("zstd", stream.eof, stream.unused_data)
        return out
    return decompressor.decompress(data, max_output_size=raw_size, allow_extra_data=False)


_IMPLS: dict[str, _Impl] = {
    "none": _Impl(_none_compress, _none_decompress),
    "gzip": _Impl(_gzip_compress, _gzip_decompress),
    "bzip2": _Impl(bz2.compress, _bzip2_decompress),
    "lz4": _Impl(_lz4_compress, _lz4_decompress),
    "zstd": _Impl(_zstd_compress, _zstd_decompress),
}
