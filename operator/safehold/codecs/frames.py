"""The byte layout of a stored object: a header, then independent frames (docs/format.md).

::

    object := MAGIC frame*
    frame  := flags:u8 raw_len:u32 payload_len:u32 crc32(payload):u32 payload
    flags  := bit 0 = final frame

``payload`` is the chunk compressed as one complete frame of the codec and then, when the backup
is encrypted, sealed with AES-256-GCM (nonce || ciphertext || tag) bound to the chunk's index and
final flag. The CRC names a damaged frame even in unencrypted backups before decompression runs;
the per-object SHA-256 in the manifest covers the whole object, header included. An encrypted
frame's tag already authenticates every byte of it: a reader that relies on the tags may leave
the CRC to :meth:`Frame.damaged`, to tell storage damage from forgery once a tag fails.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from safehold.api.errors import IntegrityError

MAGIC = b"SHLDOBJ1"
_FRAME = struct.Struct(">BIII")
FINAL = 0x01
# Raw chunks are a few MiB; a header claiming far more is corruption, not data.
MAX_FRAME = 1 << 30


class FrameError(IntegrityError, ValueError):
    """The object's framing is damaged (bad magic, truncated frame, CRC mismatch...)."""


@dataclass(frozen=True)
class Frame:
    index: int
    final: bool
    raw_len: int
    payload: memoryview  # read-only; a view of the stored block it lies in, when it lies in one
    crc: int  # as stored; checked by parse_frames unless told not to

    def damaged(self) -> FrameError | None:
        """The error of a payload that fails its CRC (damaged in storage or in transit)."""
        if zlib.crc32(self.payload) != self.crc:
            return FrameError(f"frame {self.index} fails its CRC check")
        return None


def frame_bytes(payload: bytes | memoryview, raw_len: int, final: bool) -> bytes:
    """One frame, joined (the pipeline writes :func:`frame_parts` in turn instead)."""
    return b"".join(frame_parts((bytes(payload),), raw_len, final))


def frame_parts(payload: Sequence[bytes], raw_len: int, final: bool) -> list[bytes]:
    """One frame as a list of byte strings: its header, then ``payload``'s parts (the payload
    is their concatenation; they are written in turn, never joined)."""
    crc = 0
    for part in payload:
        crc = zlib.crc32(part, crc)
    size = sum(len(part) for part in payload)
    return [_FRAME.pack(FINAL if final else 0, raw_len, size, crc), *payload]


class _Buffer:
    """Pull exact byte counts out of an iterator of arbitrary-size blocks, copying as little
    as possible: a read that lies inside one block is a view of it, one that spans blocks is
    joined once."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._it = iter(blocks)
        self._rest = memoryview(b"")  # the unread end of the current block

    def read(self, n: int) -> memoryview:
        if len(self._rest) >= n:
            out, self._rest = self._rest[:n], self._rest[n:]
            return out
        parts, have = [self._rest], len(self._rest)
        self._rest = memoryview(b"")
        while have < n:
            block = next(self._it, None)
            if block is None:
                break
            # a view must not see a producer's later writes: a mutable block is copied first
            view = memoryview(block if type(block) is bytes else bytes(block))
            take = min(len(view), n - have)
            parts.append(view[:take])
            have += take
            self._rest = view[take:]
        return memoryview(b"".join(parts))


def parse_frames(stored: Iterable[bytes], *, check_crc: bool = True) -> Iterator[Frame]:
    """Split a stored object into frames, checking magic, order, the final flag and (unless
    ``check_crc`` is false: the caller authenticates each payload) the CRCs."""
    buf = _Buffer(stored)
    if buf.read(len(MAGIC)) != MAGIC:
        raise FrameError("not a Safehold object (bad header)")
    index = 0
    while True:
        head = buf.read(_FRAME.size)
        if not head:
            raise FrameError(f"truncated: the object ends after {index} frames with no final frame")
        if len(head) < _FRAME.size:
            raise FrameError(f"truncated inside the header of frame {index}")
        flags, raw_len, payload_len, crc = _FRAME.unpack(head)
        if payload_len > MAX_FRAME or raw_len > MAX_FRAME or flags & ~FINAL:
            raise FrameError(f"frame {index} has an impossible header")
        payload = buf.read(payload_len)
        if len(payload) < payload_len:
            raise FrameError(f"truncated inside frame {index}")
        frame = Frame(index, bool(flags & FINAL), raw_len, payload, crc)
        if check_crc and (error := frame.damaged()):
            raise error
        yield frame
        index += 1
        if frame.final:
            if buf.read(1):
                raise FrameError(f"unexpected data after the final frame {index - 1}")
            return
