"""Log segments in and out of the repository's archive (:mod:`safehold.repository.logarchive`).

The API every log streamer and point-in-time restore uses, whatever the engine::

    archive = LogArchive(repo, target, keks, kek=active_kek, namespace=None)
    archive.put(SegmentId(target, "binlog", "server-1", "binlog.000007"), blocks,
                start={...}, end={...}, first_time=t0, last_time=t1)   # durable on return
    archive.list(kind="binlog")                                          # records, in order
    archive.open(record)        # raw bytes, every frame, size, hash and the MAC checked
    archive.verify(record)      # the same, bytes discarded

An archive opened to apply what it reads (``tags_suffice=True``: point-in-time restores, WAL
fetched by PostgreSQL's restore_command) checks an encrypted segment by its frames' AES-GCM tags
and its sizes, as a backup's restore checks its objects (:class:`.objects.ObjectReader`): each
tag authenticates its chunk, the chunk's place and the segment (its subkey), and the sizes were
authenticated with the record's MAC before the key was unwrapped; hashing the bytes again, stored
and raw, proves nothing more. ``verify`` checks everything, and an unencrypted segment is always
hashed: there only the SHA-256 binds its bytes to its record.

``put`` returns only once the data, its key record and the segment record (last) are stored, so a
streamer confirms a position (to a replication slot, to its own state) only after it returns.
A retried ``put`` of the same bytes at the same positions is a no-op; different bytes under an
existing name are refused (SegmentConflict), never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from safehold import __version__
from safehold.api.manifest import ObjectRecord
from safehold.codecs import crypto
from safehold.codecs.compression import Codec, CorruptDataError, parse_codec
from safehold.codecs.frames import FrameError
from safehold.pipeline import keyuse, stream
from safehold.pipeline.objects import CorruptObjectError
from safehold.repository.logarchive import (
    SegmentConflict,
    SegmentId,
    SegmentRecord,
    list_segments,
    read_record,
)
from safehold.repository.policy import RepositoryTampered
from safehold.repository.repo import Repository, RepositoryDamaged
from safehold.repository.trust import Trust, establish
from safehold.storage.base import ObjectNotFound

log = logging.getLogger("safehold.logarchive")


class LogArchive:
    """The archived logs of one target. ``kek`` encrypts new segments (the target's policy,
    recorded with its first backup or segment, decides whether that is required); ``keks``
    read them."""

    def __init__(self, repo: Repository, target: str, keks: Sequence[crypto.Kek] = (), *,
                 kek: crypto.Kek | None = None, no_encryption: bool = False,
                 namespace: str | None = None, codec: Codec | None = None,
                 chunk_size: int = stream.DEFAULT_CHUNK_SIZE, workers: int | None = None,
                 tags_suffice: bool = False) -> None:
        self.repo, self.target = repo, target
        self.tags_suffice = tags_suffice
        self.kek = None if no_encryption else kek
        self.keks = [kek, *keks] if kek is not None else list(keks)
        self.no_encryption, self.namespace = no_encryption, namespace
        self.codec = codec or parse_codec("zstd")
        self.chunk_size, self.workers = chunk_size, workers
        self.trust = Trust(repo, self.keks)
        self._established = False

    # -- writing ----------------------------------------------------------------------------
    def put(self, seg: SegmentId, data: Iterable[bytes], *, start: Mapping[str, str],
            end: Mapping[str, str], first_time: datetime | None = None,
            last_time: datetime | None = None, complete: bool = True,
            meta: Mapping[str, Any] | None = None,
            tools: Mapping[str, str] | None = None) -> SegmentRecord:
        """Store one segment; durable (record written last) when this returns."""
        if seg.target != self.target:
            raise ValueError(f"segment {seg.label} is not of target {self.target!r}")
        if not self._established:
            establish(self.repo, self.target, self.namespace, self.kek,
                      no_encryption=self.no_encryption)
            self._established = True
        existing = self._existing(seg)
        data_key = os.urandom(crypto.KEY_SIZE) if self.kek is not None else None
        if data_key is not None and existing is None:
            data_key = self._resumed_key(seg) or data_key
        cipher = (crypto.ChunkCipher(data_key, seg.object_id())
                  if data_key is not None else None)
        stats = stream.StreamStats()
        raw_sha = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for block in data:
                raw_sha.update(block)
                yield block

        encoded = stream.encode(hashed(), self.codec, cipher, stats,
                                chunk_size=self.chunk_size, workers=self.workers)
        if existing is not None:  # a retry: compare without writing over what is there
            for _ in encoded:
                pass
        else:
            if data_key is not None and self.kek is not None:
                self._write_key(seg, data_key)
            self.repo.storage.put(seg.data_key, encoded)
        record = SegmentRecord(
            repo_id=self.repo.ensure_repo_id(), target=self.target, namespace=self.namespace,
            kind=seg.kind,  # type: ignore[arg-type]  # SegmentId checked it
            stream=seg.stream, name=seg.name, start=dict(start), end=dict(end),
            first_time=first_time, last_time=last_time, complete=complete,
            written_at=datetime.now(UTC), compression=self.codec.spec,
            encryption="aes-256-gcm" if data_key is not None else "none",
            chunk_size=self.chunk_size,
            object=ObjectRecord(name="data", raw_size=stats.raw_size,
                                stored_size=stats.stored_size, sha256=stats.sha256,
                                chunks=stats.chunks, meta={"raw_sha256": raw_sha.hexdigest()}),
            meta=dict(meta or {}), tools={"safehold": __version__, **(tools or {})})
        if existing is not None:
            if not existing.same_content(record):
                raise SegmentConflict(
                    f"log segment {seg.label} is already archived with other content (positions"
                    f" {existing.start}..{existing.end}, {existing.object.raw_size} bytes; now"
                    f" {record.start}..{record.end}, {stats.raw_size}"
                    " bytes): the server's log was rewritten, or two servers share one stream"
                    " name; it is kept as it is",
                    hint="check that the stream (server id / timeline) is the right one")
            return existing
        if data_key is not None:
            record = record.model_copy(
                update={"mac": crypto.manifest_mac(data_key, record.signing_bytes())})
        self.repo.storage.put_bytes(seg.record_key, record.to_json())
        log.info("archived log segment %s (%d bytes, %s..%s)", seg.label, stats.raw_size,
                 dict(start), dict(end))
        return record

    def _existing(self, seg: SegmentId) -> SegmentRecord | None:
        if not self.repo.storage.exists(seg.record_key):
            return None
        return read_record(self.repo, seg)

    def _resumed_key(self, seg: SegmentId) -> bytes | None:
        """The data key of an interrupted put of this segment: reusing it stores the same bytes."""
        if not self.repo.storage.exists(seg.keys_key):
            return None
        try:
            return crypto.unwrap_key(self.keks, self._read_wrapped(seg), seg.key_context())
        except crypto.CryptoError:
            return None  # written under another key: start over with a new one

    def _write_key(self, seg: SegmentId, data_key: bytes) -> None:
        assert self.kek is not None
        wrapped = crypto.wrap_key(self.kek, data_key, seg.key_context())
        body = {"cipher": "aes-256-gcm", "wrapped": wrapped.to_dict()}
        self.repo.storage.put_bytes(seg.keys_key, json.dumps(body).encode())

    def _read_wrapped(self, seg: SegmentId) -> crypto.WrappedKey:
        try:
            body = json.loads(self.repo.storage.get_bytes(seg.keys_key))
            return crypto.WrappedKey.from_dict(body["wrapped"])
        except ObjectNotFound:
            raise RepositoryDamaged(f"encrypted log segment {seg.label} has lost its key"
                                    f" record {seg.keys_key}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryDamaged(f"log segment {seg.label}: the key record {seg.keys_key}"
                                    f" is damaged ({exc})") from None

    # -- reading ----------------------------------------------------------------------------
    def list(self, kind: str | None = None, stream: str | None = None) -> list[SegmentRecord]:
        """The target's complete segments (records as stored: ``open``/``verify`` check them)."""
        return list_segments(self.repo, self.target, kind, stream)

    def data_key(self, record: SegmentRecord) -> bytes | None:
        """Check the record against the repository's trust rules and its MAC; its data key."""
        seg = record.id
        where = f"log segment {seg.label}"
        state = self.trust.encryption_required(self.target)
        if record.encryption == "none" or record.mac is None:
            if state[0]:
                raise RepositoryTampered(f"{where} is not encrypted (or has no MAC) but must be:"
                                         f" {state[1]}; do not replay it")
            key, key_id = None, None
        else:
            if not self.keks:
                raise crypto.MissingKeyError(
                    f"{where} is encrypted: supply its key with --key-file, SAFEHOLD_KEY_FILE,"
                    " SAFEHOLD_KEY or SAFEHOLD_PASSPHRASE")
            wrapped = self._read_wrapped(seg)
            key, key_id = crypto.unwrap_key(self.keks, wrapped, seg.key_context()), wrapped.key_id
            try:
                crypto.verify_manifest_mac(key, record.signing_bytes(), record.mac)
            except crypto.TamperedError:
                raise RepositoryTampered(f"{where}: its record was modified after it was written"
                                         " (MAC mismatch); do not replay it") from None
        recorded, namespace = self.trust.recorded_namespace(self.target)
        if recorded and record.namespace != namespace:
            raise RepositoryTampered(f"{where} belongs to namespace {record.namespace!r}, but"
                                     f" target {self.target!r} to {namespace!r}: it was copied"
                                     " here; do not replay it")
        if record.repo_id != self.trust.repo_id:
            raise RepositoryTampered(f"{where} was written to repository {record.repo_id}, not"
                                     f" {self.trust.repo_id}: it was copied here")
        if key_id is not None:
            keyuse.used(key_id, target=self.target, segment=seg.label)
        return key

    def open(self, record: SegmentRecord, *, everything: bool = False) -> Iterator[bytes]:
        """The segment's raw bytes; raises CorruptObjectError on any damage (at the latest when
        the iterator ends: consumers that apply must stage, as restores do). Checked as the
        archive was opened (``tags_suffice``, above), or with ``everything`` every hash too."""
        key = self.data_key(record)
        seg = record.id
        cipher = crypto.ChunkCipher(key, seg.object_id()) if key is not None else None
        hashed = cipher is None or everything or not self.tags_suffice
        return self._decode(record, parse_codec(record.compression), cipher, hashed)

    def _decode(self, record: SegmentRecord, codec: Codec,
                cipher: crypto.ChunkCipher | None, hashed: bool) -> Iterator[bytes]:
        seg = record.id
        label = f"log segment {seg.label}"
        stats = stream.StreamStats(hashed=hashed)
        raw_sha = hashlib.sha256() if hashed else None
        try:
            for block in stream.decode(self.repo.storage.get(seg.data_key), codec, cipher, stats,
                                       workers=self.workers):
                if raw_sha is not None:
                    raw_sha.update(block)
                yield block
        except ObjectNotFound:
            raise CorruptObjectError(label, "data", f"{seg.data_key} is missing") from None
        except (FrameError, CorruptDataError) as exc:
            raise CorruptObjectError(label, "data", str(exc)) from exc
        except crypto.TamperedError as exc:
            raise CorruptObjectError(label, "data", f"authentication failed ({exc})") from exc
        obj = record.object
        if stats.stored_size != obj.stored_size or stats.raw_size != obj.raw_size or (
                raw_sha is not None and (stats.sha256 != obj.sha256 or raw_sha.hexdigest()
                                         != obj.meta.get("raw_sha256", raw_sha.hexdigest()))):
            raise CorruptObjectError(label, "data", "stored bytes do not match the segment"
                                     " record (size or hash)")

    def read(self, record: SegmentRecord) -> bytes:
        """The whole segment, checked (segments are a log file each: tens of MiB at most)."""
        return b"".join(self.open(record))

    def verify(self, record: SegmentRecord) -> int:
        """Decode and check one segment end to end, every hash too; its raw size."""
        return sum(len(b) for b in self.open(record, everything=True))

    def get(self, seg: SegmentId) -> SegmentRecord:
        return read_record(self.repo, seg)
