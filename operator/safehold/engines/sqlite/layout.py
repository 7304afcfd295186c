"""What each SQLite backup records about its snapshot, and which chains of them make sense.

A backup's ``engine_meta`` holds ``page_size``, ``page_count`` (of the whole snapshot) and
``changed_pages`` (pages stored in its ``pages`` object: all of them for a full backup). Pages
only line up between backups of one page size, and each backup's changes are relative to its
parent, so a restore chain must be a full backup followed by its descendants, link by link.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from safehold.api.manifest import Manifest
from safehold.engines.base import EngineError


@dataclass(frozen=True)
class Layout:
    page_size: int
    page_count: int
    changed_pages: int

    @classmethod
    def of(cls, backup: Manifest) -> Layout:
        meta = backup.engine_meta
        try:
            return cls(int(meta["page_size"]), int(meta["page_count"]),
                       int(meta["changed_pages"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(
                f"backup {backup.backup_id} lacks the SQLite page layout in its engine_meta"
                f" ({exc!r}); was it made by the sqlite engine?"
            ) from exc

    def as_meta(self) -> dict[str, int]:
        return {"page_size": self.page_size, "page_count": self.page_count,
                "changed_pages": self.changed_pages}


def check_chain(chain: Sequence[Manifest]) -> None:
    """Refuse a chain that does not start at a full backup or whose links do not join up."""
    if not chain:
        raise EngineError("nothing to restore: the restore chain is empty")
    for backup in chain:
        if backup.engine != "sqlite":
            raise EngineError(
                f"backup {backup.backup_id} was made by the {backup.engine} engine, not sqlite"
            )
    if chain[0].type != "full":
        raise EngineError(
            f"restore chain must start with a full backup, not {chain[0].type} backup"
            f" {chain[0].backup_id}"
        )
    for prev, backup in pairwise(chain):
        if backup.type == "full" or backup.parent_id != prev.backup_id:
            raise EngineError(
                f"backup {backup.backup_id} ({backup.type}, parent {backup.parent_id}) does not"
                f" follow {prev.backup_id} in the restore chain; resolve the chain again"
            )
    sizes = {Layout.of(b).page_size for b in chain}
    if len(sizes) > 1:
        raise EngineError(
            f"restore chain mixes page sizes {sorted(sizes)}; each page size needs its own full"
            " backup"
        )
