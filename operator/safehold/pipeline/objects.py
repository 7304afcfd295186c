"""Objects of one backup in and out of storage: the BackupSink and ChainReader the engines use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from safehold.api.errors import IntegrityError
from safehold.api.manifest import NOT_HASHED, Manifest, ObjectRecord
from safehold.codecs import crypto
from safehold.codecs.compression import Codec, CodecError, CorruptDataError, parse_codec
from safehold.codecs.frames import FrameError
from safehold.pipeline import stream
from safehold.pipeline.keys import DataKeys
from safehold.pipeline.profile import Profile, Tally, timed_iter
from safehold.repository import layout
from safehold.repository.repo import Repository
from safehold.storage.base import ObjectNotFound


class CorruptObjectError(IntegrityError):
    """An object failed a check while decoding; names the backup and the object."""

    def __init__(self, backup_id: str, name: str, detail: str) -> None:
        super().__init__(f"backup {backup_id}, object {name!r}: {detail}")
        self.backup_id = backup_id
        self.object = name


ProgressHook = Callable[[int], None]
NONE = parse_codec("none")  # the codec of objects the engine's tool compressed


def _object_id(backup_id: str, name: str) -> str:
    return f"{backup_id}/{name}"


def _counted(blocks: Iterable[bytes], hook: ProgressHook | None) -> Iterable[bytes]:
    if hook is None:
        return blocks
    return (hook(len(b)) or b for b in blocks)


class ObjectWriter:
    """BackupSink: stream engine output through chunk -> compress -> encrypt -> storage."""

    def __init__(self, repo: Repository, target: str, backup_id: str, codec: Codec,
                 data_key: bytes | None, *, chunk_size: int, workers: int | None = None) -> None:
        self.repo, self.target, self.backup_id = repo, target, backup_id
        self.codec, self.data_key = codec, data_key
        self.chunk_size, self.workers = chunk_size, workers
        self.records: list[ObjectRecord] = []
        self.on_bytes: ProgressHook | None = None  # raw bytes read from the engine
        self.profile: Profile | None = None  # where the time goes (pipeline.profile)

    def put(self, name: str, data: Iterable[bytes], *, meta: Mapping[str, Any] | None = None,
            compressed: bool = False) -> ObjectRecord:
        if any(r.name == name for r in self.records):
            raise ValueError(f"object {name!r} written twice in backup {self.backup_id}")
        cipher = (crypto.ChunkCipher(self.data_key, _object_id(self.backup_id, name))
                  if self.data_key is not None else None)
        # An encrypted object's stored bytes are not hashed: its tags authenticate them (a
        # SHA-256 pass of 0.2 CPU-s per 400 MB; docs/performance.md)
        stats = stream.StreamStats(profile=self.profile, hashed=cipher is None)
        codec = NONE if compressed else self.codec
        if codec != self.codec and self.profile is not None:
            self.profile.done_by_tool("compress")
        encoded = stream.encode(_counted(data, self.on_bytes), codec, cipher, stats,
                                chunk_size=self.chunk_size, workers=self.workers)
        key = layout.object_key(self.target, self.backup_id, name)
        if self.profile is None:
            self.repo.storage.put(key, encoded)
        else:  # the storage's own time: all of put but what producing its input took
            inside = Tally()
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self.repo.storage.put(key, timed_iter(encoded, inside))
            finally:
                self.profile.add("write", time.perf_counter() - t0 - inside.seconds,
                                 time.thread_time() - c0 - inside.cpu)
        record = ObjectRecord(name=name, raw_size=stats.raw_size, stored_size=stats.stored_size,
                              sha256=stats.sha256 if stats.hashed else NOT_HASHED,
                              chunks=stats.chunks, meta=dict(meta or {}),
                              compression=NONE.spec if codec != self.codec else None)
        self.records.append(record)
        return record


class ReadTally:
    """The sizes of the objects a reader decoded in full and checked: what a restore read
    (raw and stored bytes), for its result and run log."""

    def __init__(self) -> None:
        self.raw_bytes = self.stored_bytes = self.objects = 0
        self.tool_compressed = False  # an object its engine's tool compressed: no ratio
        self._lock = threading.Lock()

    def add(self, record: ObjectRecord) -> None:
        with self._lock:
            self.raw_bytes += record.raw_size
            self.stored_bytes += record.stored_size
            self.objects += 1
            self.tool_compressed |= record.compression is not None

    def as_dict(self, seconds: float) -> dict[str, Any]:
        """``raw_bytes``, ``stored_bytes``, ``compression_ratio`` (None when there is none to
        tell) and ``throughput_mib_s``."""
        return {"raw_bytes": self.raw_bytes, "stored_bytes": self.stored_bytes,
                "compression_ratio": round(self.raw_bytes / self.stored_bytes, 3)
                if self.stored_bytes and not self.tool_compressed else None,
                "throughput_mib_s": round(self.raw_bytes / 2**20 / max(seconds, 1e-9), 2)}


class ObjectReader:
    """ChainReader: decode objects of any backup, checking every frame, size and hash.

    With ``tags_suffice``, an encrypted object is checked by its frames' AES-GCM tags and its
    sizes, without hashing its stored bytes: the tags authenticate every byte, its place and
    the object it belongs to (docs/format.md), and the manifest that gives the sizes was
    authenticated before its data key was unwrapped (DataKeys.for_backup). Restores read so;
    ``verify`` checks everything, the manifest's SHA-256 too. Unencrypted objects are always
    hashed: there, only the SHA-256 binds the frames to the manifest.
    """

    def __init__(self, repo: Repository, keys: DataKeys, *, workers: int | None = None,
                 tags_suffice: bool = False) -> None:
        self.repo, self.keys, self.workers = repo, keys, workers
        self.tags_suffice = tags_suffice
        self.on_bytes: ProgressHook | None = None  # raw bytes handed to the engine
        self.profile: Profile | None = None  # where the time goes (pipeline.profile)
        self.tally: ReadTally | None = None  # sizes of the objects read in full

    def open(self, backup: Manifest, name: str, *, head: bool = False) -> Iterator[bytes]:
        try:
            record = backup.object(name)
        except KeyError:
            raise CorruptObjectError(
                backup.backup_id, name, "the manifest lists no such object, which the engine"
                " needs: the manifest is damaged or was not written by safehold") from None
        data_key = self.keys.for_backup(backup)
        cipher = (crypto.ChunkCipher(data_key, _object_id(backup.backup_id, name))
                  if data_key is not None else None)
        try:
            codec = parse_codec(record.compression or backup.compression)
        except CodecError as exc:  # only an edited manifest of an unencrypted backup gets here
            raise CorruptObjectError(backup.backup_id, name, f"the manifest's {exc}") from None
        key = layout.object_key(backup.target, backup.backup_id, name)
        blocks = _counted(self._decode(backup, record, codec, cipher, key, head),
                          None if head else self.on_bytes)
        if self.profile is not None:  # the engine's time between blocks: writing the database
            if record.compression is not None and not head:  # and its tool's decompressing
                self.profile.done_by_tool("decompress")
            return self.profile.consumer(blocks, "write")
        return iter(blocks)

    def _decode(self, backup: Manifest, record: ObjectRecord, codec: Codec,
                cipher: crypto.ChunkCipher | None, key: str, head: bool) -> Iterator[bytes]:
        if record.sha256 == NOT_HASHED and cipher is None:
            raise CorruptObjectError(
                backup.backup_id, record.name, "the manifest gives no SHA-256 for this"
                " unencrypted object, and nothing else could check it: the manifest was edited"
                " or not written by safehold")
        stats = stream.StreamStats(profile=self.profile, hashed=cipher is None or (
            not self.tags_suffice and record.sha256 != NOT_HASHED))
        try:
            # A head is decoded a frame at a time: the pool would read and decode several
            # frames ahead before yielding the first, for a listing that needs a few KiB.
            yield from stream.decode(self.repo.storage.get(key), codec, cipher, stats,
                                     workers=1 if head else self.workers,
                                     every_crc=not self.tags_suffice)
        except ObjectNotFound:
            raise CorruptObjectError(backup.backup_id, record.name,
                                     f"{key} is missing from the repository") from None
        except (FrameError, CorruptDataError) as exc:
            raise CorruptObjectError(backup.backup_id, record.name, str(exc)) from exc
        except crypto.TamperedError as exc:
            raise CorruptObjectError(
                backup.backup_id, record.name,
                f"authentication failed ({exc}): the object was modified, truncated, reordered"
                " or swapped",
            ) from exc
        if stats.stored_size != record.stored_size:
            raise CorruptObjectError(backup.backup_id, record.name,
                                     f"stored {stats.stored_size} bytes, the manifest says"
                                     f" {record.stored_size}")
        if stats.hashed and stats.sha256 != record.sha256:
            raise CorruptObjectError(
                backup.backup_id, record.name,
                f"stored bytes do not match the manifest (sha256 {stats.sha256[:12]}… vs"
                f" {record.sha256[:12]}…)",
            )
        if stats.raw_size != record.raw_size:
            raise CorruptObjectError(backup.backup_id, record.name,
                                     f"decoded {stats.raw_size} bytes, expected {record.raw_size}")
        if self.tally is not None and not head:  # a head read to its end is read again
            self.tally.add(record)
