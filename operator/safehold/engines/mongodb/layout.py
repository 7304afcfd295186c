"""The objects of a MongoDB backup: mongodump's directory layout plus two small JSON files.

::

    prelude.json                    versions, database, consistency (see :class:`Prelude`)
    <db>/<coll>.metadata.json       mongodump's metadata: options, indexes, uuid, name, type
    <db>/<coll>.bson                the documents, concatenated raw BSON (absent for views)
    toc.json                        the collections with their object names and counts

File names escape the collection name as mongodump does (Go's ``url.PathEscape``), so after
``safehold cat`` of each object into a directory, ``mongorestore --dir`` reads it (unencrypted
and uncompressed, or decoded by ``safehold cat``). A collection whose name starts with ``.`` is
escaped one step further (``%2E``): storage keys may not start with ``.tmp-`` and hidden files
surprise people; mongorestore takes the real name from ``collectionName`` anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from bson import json_util
from bson.binary import Binary

from safehold.api.errors import IntegrityError
from safehold.engines import shape
from safehold.engines.base import DatabaseMissing

FORMAT = 1
PRELUDE = "prelude.json"
TOC = "toc.json"
# A restore loads "<coll>__safehold_restore" first. No "." in the suffix: FerretDB cannot
# rename collections whose names contain one.
STAGING_SUFFIX = "__safehold_restore"
# Go's url.PathEscape leaves these reserved characters alone in a path segment.
_PATH_SAFE = "$&+:=@"
_DROPPED_INDEX_FIELDS = ("v", "ns", "background")


def escape(collection: str) -> str:
    escaped = quote(collection, safe=_PATH_SAFE)
    return "%2E" + escaped[1:] if escaped.startswith(".") else escaped


def data_object(database: str, collection: str) -> str:
    return f"{database}/{escape(collection)}.bson"


def metadata_object(database: str, collection: str) -> str:
    return f"{database}/{escape(collection)}.metadata.json"


def metadata_json(info: Mapping[str, Any], indexes: Iterable[Mapping[str, Any]]) -> bytes:
    """mongodump's ``<coll>.metadata.json`` for one ``listCollections`` entry: canonical
    extended JSON of ``{options, indexes, uuid, collectionName, type}`` (``options`` and ``uuid``
    omitted when empty, ``uuid`` as 32 hex digits)."""
    doc: dict[str, Any] = {}
    if info.get("options"):
        doc["options"] = info["options"]
    doc["indexes"] = list(indexes)
    uuid = (info.get("info") or {}).get("uuid")
    if isinstance(uuid, Binary) and uuid.subtype == 4:
        doc["uuid"] = bytes(uuid).hex()
    doc["collectionName"] = info["name"]
    doc["type"] = info.get("type", "collection")
    return json_util.dumps(doc, json_options=json_util.CANONICAL_JSON_OPTIONS).encode()


@dataclass(frozen=True)
class CollectionMetadata:
    """What a restore needs from ``<coll>.metadata.json``."""

    name: str
    type: str
    options: dict[str, Any]
    indexes: list[dict[str, Any]]

    @classmethod
    def parse(cls, data: bytes, source: str) -> CollectionMetadata:
        try:
            doc = json_util.loads(data.decode())
            return cls(name=doc["collectionName"], type=doc.get("type", "collection"),
                       options=dict(doc.get("options") or {}),
                       indexes=[dict(i) for i in doc["indexes"]])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{source} is not a mongodump metadata file"
                                 f" ({shape.describe(exc)}): the backup is damaged or was not"
                                 " written by Safehold") from None

    def index_specs(self) -> list[dict[str, Any]]:
        """Indexes to create on restore: all but ``_id_`` (every collection has it), without
        fields the server fills in itself (``v``, ``ns``, ``background``)."""
        return [{k: v for k, v in index.items() if k not in _DROPPED_INDEX_FIELDS}
                for index in self.indexes if index.get("name") != "_id_"]


@dataclass(frozen=True)
class TocEntry:
    name: str
    type: str  # "collection" or "view"
    metadata: str
    data: str | None  # views have no documents
    documents: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Toc:
    """``toc.json``: the collections of the backup, in restore order."""

    database: str
    collections: tuple[TocEntry, ...]
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False).encode()

    @classmethod
    def parse(cls, data: bytes, source: str) -> Toc:
        """A backup's ``toc.json``; IntegrityError (exit 4), naming the value, for anything
        Safehold did not write (an unencrypted backup's is protected by nothing but the
        storage), and for a format this Safehold does not know."""
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
                raise ValueError(f"format {found!r}, expected {FORMAT}; a newer Safehold may"
                                 " have written it")
            shape.check(doc, cls, "toc")
            return cls(database=doc["database"],
                       collections=tuple(TocEntry(**e) for e in doc["collections"]))
        except ValueError as exc:  # json's errors are ValueErrors too
            raise IntegrityError(f"{source} is not a Safehold MongoDB table of contents"
                                 f" ({shape.describe(exc)}): the backup is damaged or was not"
                                 " written by Safehold") from None

    def select(self, include: Iterable[str] | None) -> list[TocEntry]:
        """The entries named by ``include`` (all when None), in toc order."""
        if not include:
            return list(self.collections)
        wanted = list(dict.fromkeys(include))
        known = {e.name: e for e in self.collections}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise DatabaseMissing(
                f"the backup of database {self.database!r} has no collection"
                f" {', '.join(map(repr, missing))}; it has: "
                + (", ".join(sorted(known)) or "none"))
        return [known[n] for n in wanted]


@dataclass(frozen=True)
class Prelude:
    """``prelude.json``: where the backup came from and what consistency it has.

    It starts with mongodump's own prelude fields (``ServerVersion``, ``ToolVersion``), which
    mongorestore reads from the top of a dump directory; the rest is Safehold's.
    """

    database: str
    server_version: str
    consistency: str
    tool_version: str
    consistency_reason: str = ""
    start_position: dict[str, str] | None = None
    end_position: dict[str, str] | None = None
    skipped: list[str] = field(default_factory=list)
    format: int = FORMAT

    def to_json(self) -> bytes:
        doc = {"ServerVersion": self.server_version.split(" ")[0],  # "7.0.42 (FerretDB ..)"
               "ToolVersion": f"safehold {self.tool_version}", **asdict(self)}
        return json.dumps(doc, indent=1, ensure_ascii=False).encode()
