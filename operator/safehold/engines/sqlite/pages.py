"""The byte formats of the SQLite engine's objects: page maps and page runs.

Every SQLite backup stores two objects:

``pages``
    A full backup stores the snapshot file itself, page after page. An incremental or
    differential stores only the pages that differ from its parent, as *runs*: an 8-byte header
    (big-endian u32 first page number, 1-based; u32 number of pages) followed by that many whole
    pages. Runs are in ascending page order and hold at most :data:`MAX_RUN_BYTES` of pages, so
    writer and reader need only one run in memory. Clustered changes cost one header per run,
    not per page.

``pagemap``
    For each page of the snapshot, in page order, the first 8 bytes of its BLAKE2b digest. The
    next incremental compares against it without reading the parent's data, and a restore checks
    the rebuilt file against it page by page.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from pathlib import Path

from safehold.engines.base import EngineError

DIGEST_SIZE = 8
DIGEST_NAME = "blake2b-64"
RUN_HEADER = struct.Struct(">II")
MAX_RUN_BYTES = 1 << 20
BLOCK_BYTES = 1 << 20


def page_digest(page: bytes | memoryview) -> bytes:
    return blake2b(page, digest_size=DIGEST_SIZE).digest()


def read_pages(path: Path, page_size: int) -> Iterator[tuple[int, bytes]]:
    """``(page number, page)`` for every page of a database file, read in ~1 MiB blocks."""
    per_block = max(1, BLOCK_BYTES // page_size)
    pgno = 1
    with path.open("rb") as f:
        while block := f.read(per_block * page_size):
            for off in range(0, len(block), page_size):
                yield pgno, block[off:off + page_size]
                pgno += 1


class PageMap:
    """Digests of a snapshot's pages, 8 bytes each: 4 MB for a 2 GB database of 4 KiB pages."""

    def __init__(self, data: bytes | bytearray = b"") -> None:
        if len(data) % DIGEST_SIZE:
            raise EngineError(
                f"page map is {len(data)} bytes, not a multiple of {DIGEST_SIZE}: the backup's"
                " 'pagemap' object is damaged; take a new full backup"
            )
        self._data = bytearray(data)

    @classmethod
    def read(cls, chunks: Iterable[bytes]) -> PageMap:
        return cls(b"".join(chunks))

    def __len__(self) -> int:
        return len(self._data) // DIGEST_SIZE

    def __bytes__(self) -> bytes:
        return bytes(self._data)

    def append(self, digest: bytes) -> None:
        self._data += digest

    def get(self, pgno: int) -> bytes | None:
        """The digest of page ``pgno`` (1-based), or None past the end of the map."""
        start = (pgno - 1) * DIGEST_SIZE
        return bytes(self._data[start:start + DIGEST_SIZE]) if pgno <= len(self) else None

    def count_changed(self, base: PageMap) -> int:
        """How many of this map's pages differ from ``base`` or are missing from it."""
        return sum(self.get(pgno) != base.get(pgno) for pgno in range(1, len(self) + 1))


def encode_runs(pages: Iterable[tuple[int, bytes]], page_size: int) -> Iterator[bytes]:
    """Group ``(page number, page)`` pairs, ascending, into run records."""
    max_pages = max(1, MAX_RUN_BYTES // page_size)
    first = 0
    run: list[bytes] = []
    for pgno, page in pages:
        if run and (pgno != first + len(run) or len(run) == max_pages):
            yield RUN_HEADER.pack(first, len(run)) + b"".join(run)
            run = []
        if not run:
            first = pgno
        run.append(page)
    if run:
        yield RUN_HEADER.pack(first, len(run)) + b"".join(run)


class ByteReader:
    """Exact-size reads over a stream of arbitrarily sized chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = bytearray()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        while len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def decode_runs(chunks: Iterable[bytes], page_size: int, page_count: int
                ) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first page number, pages)`` for each run, validating the framing."""
    reader = ByteReader(chunks)
    while header := reader.read(RUN_HEADER.size):
        if len(header) < RUN_HEADER.size:
            raise EngineError("'pages' object ends inside a run header: the backup is truncated")
        first, count = RUN_HEADER.unpack(header)
        if first < 1 or count < 1 or first + count - 1 > page_count:
            raise EngineError(
                f"'pages' object has a run of {count} pages at page {first}, outside the"
                f" database's {page_count} pages: the backup is damaged"
            )
        data = reader.read(count * page_size)
        if len(data) < count * page_size:
            raise EngineError("'pages' object ends inside a run: the backup is truncated")
        yield first, data
