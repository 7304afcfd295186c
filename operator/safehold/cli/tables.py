"""A backup's tables (or collections) as the user names them, for ``--include`` and ``restore -i``.

The list comes from the manifest where the engine records it (MySQL/MariaDB and MongoDB keep the
names on their ``toc.json`` record, sizes on each data object) or from the backup's own catalog
(PostgreSQL's ``toc.json``, decoded through the reader). SQLite backups are page images: for
``restore -i`` a backup of up to :data:`SQLITE_PREVIEW_LIMIT` is rebuilt in a temporary file to
list its tables; ``--include`` names are checked by the engine, which creates nothing when one
is unknown.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence

from safehold.api.errors import UsageError
from safehold.api.manifest import Manifest

Opener = Callable[[Manifest, str], Iterator[bytes]]
SQLITE_PREVIEW_LIMIT = 256 * 2**20  # raw bytes of a SQLite chain rebuilt just to list its tables


class _Reader:
    def __init__(self, open_object: Opener) -> None:
        self.open_object = open_object

    def open(self, backup: Manifest, name: str, *, head: bool = False) -> Iterator[bytes]:
        return self.open_object(backup, name)


def sqlite_tables(chain: Sequence[Manifest], open_object: Opener
                  ) -> dict[str, int | None] | None:
    """Table -> bytes of a SQLite backup, rebuilt in a temporary file; None when it is too big
    to preview quickly."""
    import sqlite3
    import tempfile
    from pathlib import Path

    from safehold.engines.sqlite.rebuild import rebuild

    if sum(m.raw_bytes for m in chain) > SQLITE_PREVIEW_LIMIT:
        return None
    with tempfile.TemporaryDirectory(prefix="safehold-preview-") as tmp:
        db = Path(tmp, "preview.db")
        db.touch(mode=0o600)
        rebuild(chain, _Reader(open_object), db, timeout=10.0)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            try:
                sizes = dict(conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"))
            except sqlite3.Error:  # built without the dbstat table
                sizes = {}
        finally:
            conn.close()
    return {n: sizes.get(n) for n in names}


def of_backup(manifest: Manifest, open_object: Opener | None = None
              ) -> dict[str, int | None] | None:
    """Table name -> raw bytes (None when unknown), or None when the backup lists no tables."""
    by_name = {o.name: o for o in manifest.objects}
    toc = by_name.get("toc.json")
    if toc is None:
        return None
    if "tables" in toc.meta:  # MySQL/MariaDB, MongoDB
        sizes: dict[str, int | None] = {str(n): None for n in toc.meta["tables"]}
        for o in manifest.objects:
            name = o.meta.get("table") if o.meta.get("kind") == "rows" else (
                o.meta.get("collection") if o.meta.get("kind") == "bson" else None)
            if name in sizes:
                sizes[name] = (sizes[name] or 0) + o.raw_size
        return sizes
    if toc.meta.get("format") == "safehold-pg-toc" and open_object is not None:
        from safehold.engines.postgres.catalog import Toc  # damage: IntegrityError, exit 4

        catalog = Toc.parse(b"".join(open_object(manifest, "toc.json")))
        return {t.qualified: int(t.bytes or 0) for t in catalog.tables}
    return None


def _known(name: str, tables: Sequence[str]) -> bool:
    folded = name.casefold()
    return any(t.casefold() == folded or t.split(".", 1)[-1].casefold() == folded
               for t in tables)


def check_include(manifest: Manifest, wanted: Sequence[str],
                  open_object: Opener | None = None) -> list[str]:
    """``wanted`` if every name is in the backup; else a UsageError listing what is there."""
    listed = of_backup(manifest, open_object)
    if listed is None:
        return list(wanted)
    tables = sorted(listed)
    for name in wanted:  # a bare name in several schemas: say which are meant
        same = [t for t in tables if "." in t and t.split(".", 1)[1] == name and name not in tables]
        if len(same) > 1:
            raise UsageError(f"table name {name!r} is ambiguous in backup {manifest.backup_id}:"
                             f" write one of {', '.join(same)}")
    unknown = [n for n in wanted if not _known(n, tables)]
    if not unknown:
        return list(wanted)
    noun = "collection" if manifest.engine == "mongodb" else "table"
    close = {n: difflib.get_close_matches(n, tables, n=1) for n in unknown}
    guesses = [f"{n!r} (did you mean {c[0]!r}?)" if c else repr(n) for n, c in close.items()]
    shown = ", ".join(tables[:40]) + (f" … ({len(tables)} in all)" if len(tables) > 40 else "")
    raise UsageError(
        f"backup {manifest.backup_id} has no {noun} {', '.join(guesses)};"
        f" it holds: {shown or 'none'}",
        hint="nothing was restored; fix --include (see `safehold show` for the backup's objects)")
