"""Restore collections from a backup, leaving existing data untouched until each is complete.

Every collection is loaded into a staging collection ``<coll>__safehold_restore`` (created with
the backed-up options; documents inserted as raw BSON, never decoded; indexes built after the
data), and only when *all* chosen collections are staged is each one renamed over its target
(``renameCollection`` with ``dropTarget``). So a restore that fails or is killed while loading
leaves every existing collection as it was; its staging leftovers are dropped by the next
restore of those collections (and skipped by backups).

Where this is not atomic, and why:

* across collections: the renames are one per collection; a crash in the middle of the rename
  phase (milliseconds) leaves some collections restored and others not;
* servers without ``dropTarget`` (FerretDB): the target is dropped, then the staging collection
  renamed; a crash between the two leaves the target absent, its restored data intact in the
  staging collection;
* FerretDB cannot rename collections whose names contain ``.`` (``InvalidNamespace``), so such
  collections cannot be restored into it: the restore fails at that rename, collections renamed
  before it are restored, the others untouched;
* views are dropped and re-created after the collections (they hold no data).

Collections of the database that the backup does not hold are left alone (like
``mongorestore --drop``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from typing import Any, Literal

from bson.raw_bson import RawBSONDocument
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from safehold.api.manifest import Manifest
from safehold.engines.base import ChainReader, ConflictError, EngineError, UnsupportedError
from safehold.engines.common import retry_transient, run_parallel
from safehold.engines.mongodb import layout, names
from safehold.engines.mongodb.conn import NOT_IMPLEMENTED, MongoTarget, guard

log = logging.getLogger("safehold.engines.mongodb")
INVALID_NAMESPACE = 73
MAX_DOCUMENT = 16 * 2**20 + 16 * 1024  # BSON limit plus the server's internal headroom
BATCH_BYTES = 8 * 2**20
BATCH_DOCS = 1000


def documents(blocks: Iterable[bytes], source: str) -> Iterator[bytes]:
    """Split a ``.bson`` stream (cut anywhere by chunking) into whole BSON documents."""
    pending = b""
    for block in blocks:
        data = pending + block if pending else block
        pos, end = 0, len(data)
        while end - pos >= 4:
            size = int.from_bytes(data[pos:pos + 4], "little")
            if not 5 <= size <= MAX_DOCUMENT:
                raise EngineError(f"{source}: invalid BSON document length {size} at byte"
                                  f" {pos} of a block: the data is damaged")
            if end - pos < size:
                break
            yield data[pos:pos + size]
            pos += size
        pending = data[pos:]
    if pending:
        raise EngineError(f"{source}: ends in the middle of a document ({len(pending)} bytes"
                          " left over): the data is truncated")


def batches(docs: Iterable[bytes]) -> Iterator[list[RawBSONDocument]]:
    batch: list[RawBSONDocument] = []
    size = 0
    for doc in docs:
        batch.append(RawBSONDocument(doc))
        size += len(doc)
        if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _entry(name: str) -> layout.TocEntry:
    return layout.TocEntry(name=name, type="collection", metadata="", data=None)


def staging_name(collection: str) -> str:
    return collection + layout.STAGING_SUFFIX


class Restorer:
    """One restore of chosen collections of ``manifest`` into ``db``."""

    def __init__(self, db: Database[Any], target: MongoTarget, manifest: Manifest,
                 chain: ChainReader, *, jobs: int) -> None:
        self.db, self.target, self.manifest, self.chain = db, target, manifest, chain
        self.jobs = max(1, jobs)
        self._stop = threading.Event()
        self._drop_target_supported = True

    def read(self, name: str) -> bytes:
        return b"".join(self.chain.open(self.manifest, name))

    def run(self, entries: Sequence[layout.TocEntry],
            conflict: Literal["fail", "replace"],
            replay: Callable[[], tuple[set[str], set[str]]] | None = None) -> None:
        """Stage, then (point in time) let ``replay`` change the staging collections -- it
        returns (collections it wrote, collections it dropped) -- then swap all into place."""
        names.database(self.db.name)
        for entry in entries:  # before the first write: a name from the backup is data
            names.collection(self.db.name, entry.name, suffix=layout.STAGING_SUFFIX)
        with guard(self.target):
            existing = set(self.db.list_collection_names())
        clash = sorted(e.name for e in entries if e.name in existing)
        if conflict == "fail" and clash:
            raise ConflictError(
                f"database {self.db.name!r} already has {', '.join(map(repr, clash))} and the"
                " conflict policy is 'fail'; use --conflict replace, restore into another"
                " database (the URI's path), or choose other collections")
        collections = [e for e in entries if e.type == "collection"]
        views = [e for e in entries if e.type == "view"]
        for entry in collections:  # leftovers of an interrupted restore
            if staging_name(entry.name) in existing:
                log.warning("dropping %s.%s left by an interrupted restore", self.db.name,
                            staging_name(entry.name))
                with guard(self.target):
                    self.db.drop_collection(staging_name(entry.name))
        touched: set[str] = set()
        dropped: set[str] = set()
        try:
            self._stage_all(collections)
            if replay is not None:
                touched, dropped = replay()
        except BaseException:
            self._stop.set()
            self._drop_staging([*collections, *(_entry(n) for n in touched)])
            raise
        for name in sorted({e.name for e in collections} - dropped | touched):
            self._swap(name)
        for name in sorted(dropped - touched):
            with guard(self.target):
                self.db.drop_collection(name)
        for entry in views:
            self._create_view(entry)

    def _stage_all(self, entries: Sequence[layout.TocEntry]) -> None:
        run_parallel(self._stage_with_retry, entries, jobs=self.jobs,
                     name="safehold-mongorestore", on_failure=self._stop.set)

    def _stage_with_retry(self, entry: layout.TocEntry) -> None:
        # A failed attempt drops its staging collection first, so a retry starts clean.
        def attempt() -> None:
            try:
                self._stage(entry)
            except BaseException:
                with suppress(PyMongoError):
                    self.db.drop_collection(staging_name(entry.name))
                raise

        retry_transient(attempt, what=f"restore of {self.db.name}.{entry.name}")

    def _stage(self, entry: layout.TocEntry) -> None:
        meta = layout.CollectionMetadata.parse(self.read(entry.metadata), entry.metadata)
        staging = staging_name(entry.name)
        count = 0
        with guard(self.target):
            self.db.command({"create": staging, **meta.options})
            if entry.data is not None:
                blocks = self.chain.open(self.manifest, entry.data)
                for batch in batches(documents(blocks, entry.data)):
                    if self._stop.is_set():
                        raise EngineError("restore cancelled: another collection failed")
                    self.db[staging].insert_many(batch, ordered=False)
                    count += len(batch)
            specs = meta.index_specs()
            if specs:
                self.db.command({"createIndexes": staging, "indexes": specs})
        if count != entry.documents:
            raise EngineError(f"{entry.data}: restored {count} documents, but the backup"
                              f" recorded {entry.documents}")
        log.info("staged %s.%s: %d documents, %d indexes", self.db.name, entry.name, count,
                 len(meta.indexes))

    def _swap(self, name: str) -> None:
        """Rename the staging collection over ``name`` (see the module docstring)."""
        source = f"{self.db.name}.{staging_name(name)}"
        dest = f"{self.db.name}.{name}"
        admin = self.db.client.admin
        with guard(self.target):
            if self._drop_target_supported:
                try:
                    admin.command("renameCollection", source, to=dest, dropTarget=True)
                    return
                except OperationFailure as exc:
                    if exc.code != NOT_IMPLEMENTED:
                        raise
                    self._drop_target_supported = False
                    log.warning("the server cannot rename with dropTarget (FerretDB?): each"
                                " collection is replaced by drop + rename, so a crash between"
                                " the two leaves it absent (its data stays in %s)",
                                staging_name(name))
            self.db.drop_collection(name)
            try:
                admin.command("renameCollection", source, to=dest)
            except OperationFailure as exc:
                if exc.code != INVALID_NAMESPACE:
                    raise
                raise UnsupportedError(
                    f"the server refuses to rename {source} to {dest}"
                    f" ({(exc.details or {}).get('errmsg')}): FerretDB cannot rename collections"
                    " whose names contain '.', so they cannot be restored into it") from None

    def _create_view(self, entry: layout.TocEntry) -> None:
        meta = layout.CollectionMetadata.parse(self.read(entry.metadata), entry.metadata)
        with guard(self.target):
            self.db.drop_collection(entry.name)
            self.db.command({"create": entry.name, **meta.options})

    def _drop_staging(self, entries: Sequence[layout.TocEntry]) -> None:
        for entry in entries:
            try:
                self.db.drop_collection(staging_name(entry.name))
            except PyMongoError as exc:
                log.warning("could not drop %s.%s after the failed restore (%s); the next"
                            " restore drops it", self.db.name, staging_name(entry.name),
                            type(exc).__name__)
