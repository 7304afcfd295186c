"""The standalone scheduler's local SQLite store: schedules and the record of every slot.

One file (``--store``, ``SAFEHOLD_SCHEDULE_STORE``, else ``schedules.db`` in the user state dir
from platformdirs). A slot is *claimed* by inserting its row (primary key schedule, type, slot)
in one transaction before its backup starts, so a slot runs at most once whatever happens to
the daemon: a restarted daemon (or a second one on the same store) finds the row and moves on.

Each claim names its *owner*: a process (the daemon, or `schedule run-now`) that holds an OS
file lock (filelock) in ``<store>.owners/`` for as long as it lives. A ``running`` row whose
owner's lock is free was left by a process that died mid-backup; :meth:`Store.recover` marks it
``interrupted`` and the daemon then treats the slot as missed (its schedule's policy decides).
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout

from safehold.api.errors import Exit, UsageError

FILE_NAME = "schedules.db"
POLICIES = ("run-once", "skip")
PARTIAL = int(Exit.PARTIAL)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
  name TEXT PRIMARY KEY, target TEXT NOT NULL, repo TEXT NOT NULL,
  crons TEXT NOT NULL, time_zone TEXT, missed TEXT NOT NULL, at TEXT,
  paused INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  schedule TEXT NOT NULL, type TEXT NOT NULL, slot TEXT NOT NULL, outcome TEXT NOT NULL,
  passed_over INTEGER NOT NULL DEFAULT 0, started_at TEXT NOT NULL, finished_at TEXT,
  exit_code INTEGER, PRIMARY KEY (schedule, type, slot));
"""
# columns added after the first release of the store: (table, column, definition)
_ADDED = (("schedules", "retention", "TEXT"), ("runs", "owner", "TEXT"),
          ("runs", "attempts", "INTEGER NOT NULL DEFAULT 1"), ("runs", "note", "TEXT"))


def default_path() -> Path:
    env = os.environ.get("SAFEHOLD_SCHEDULE_STORE")
    if env:
        return Path(env)
    return platformdirs.user_state_path("safehold", appauthor=False) / FILE_NAME


@dataclass(frozen=True)
class Schedule:
    name: str
    target: str
    repo: str
    crons: dict[str, str]  # type -> cron expression
    time_zone: str | None
    missed: str
    at: datetime | None
    paused: bool
    created_at: datetime
    retention: dict[str, object] | None = None  # RetentionPolicy fields (JSON form), or None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "target": self.target, "repo": self.repo,
                "crons": self.crons, "time_zone": self.time_zone or "UTC",
                "missed": self.missed, "at": self.at.isoformat() if self.at else None,
                "paused": self.paused, "retention": self.retention,
                "created_at": self.created_at.isoformat()}

    def row(self) -> tuple[object, ...]:
        return (self.name, self.target, self.repo, json.dumps(self.crons), self.time_zone,
                self.missed, self.at.isoformat() if self.at else None, int(self.paused),
                self.created_at.isoformat(),
                json.dumps(self.retention) if self.retention else None)


def _schedule(row: sqlite3.Row) -> Schedule:
    return Schedule(row["name"], row["target"], row["repo"], json.loads(row["crons"]),
                    row["time_zone"], row["missed"],
                    datetime.fromisoformat(row["at"]) if row["at"] else None,
                    bool(row["paused"]), datetime.fromisoformat(row["created_at"]),
                    json.loads(row["retention"]) if row["retention"] else None)


class Owner:
    """This process as the owner of the runs it claims: an OS file lock held while it lives
    (released by the OS when the process dies, however it dies)."""

    def __init__(self, store: Store) -> None:
        self.id = uuid.uuid4().hex
        store.owners.mkdir(parents=True, exist_ok=True)
        self.path = store.owners / f"{self.id}.lock"
        self._lock = FileLock(self.path)
        self._lock.acquire(timeout=0)

    def release(self) -> None:
        self._lock.release()
        self.path.unlink(missing_ok=True)


def owner_alive(owners: Path, owner: str | None) -> bool:
    """Whether the process that claimed a run still holds its lock (None: a store row from
    before owners were recorded, whose process is gone)."""
    if not owner or not (owners / f"{owner}.lock").exists():
        return False
    lock = FileLock(owners / f"{owner}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    (owners / f"{owner}.lock").unlink(missing_ok=True)
    return False


class Store:
    """Schedules and runs in one SQLite file; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owners = path.parent / f"{path.name}.owners"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as conn, conn:
                conn.executescript(_SCHEMA)
                for table, column, definition in _ADDED:
                    have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                    if column not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot open the schedule store {path}: {exc}",
                             hint="give a writable SQLite file (or a new path) with --store"
                             " or SAFEHOLD_SCHEDULE_STORE") from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # ---------------------------------------------------------------- schedules

    def add(self, s: Schedule) -> None:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM schedules WHERE name=?", (s.name,)).fetchone():
                raise UsageError(f"schedule {s.name!r} exists already",
                                 hint=f"choose another name, or `safehold schedule remove"
                                 f" {s.name}` first")
            conn.execute("INSERT INTO schedules (name, target, repo, crons, time_zone, missed,"
                         " at, paused, created_at, retention) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         s.row())

    def update(self, s: Schedule) -> None:
        """Replace schedule ``s.name`` (which must exist); its run records stay."""
        self.get(s.name)
        with self._tx() as conn:
            conn.execute("UPDATE schedules SET target=?, repo=?, crons=?, time_zone=?, missed=?,"
                         " at=?, paused=?, created_at=?, retention=? WHERE name=?",
                         (*s.row()[1:], s.name))

    def all(self) -> list[Schedule]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT * FROM schedules ORDER BY name").fetchall()
        return [_schedule(r) for r in rows]

    def get(self, name: str) -> Schedule:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT * FROM schedules WHERE name=?", (name,)).fetchone()
        if row is None:
            raise UsageError(f"no schedule named {name!r} in {self.path}",
                             hint="`safehold schedule list` shows the schedules of this store")
        return _schedule(row)

    def remove(self, name: str) -> None:
        self.get(name)
        with self._tx() as conn:
            conn.execute("DELETE FROM schedules WHERE name=?", (name,))
            conn.execute("DELETE FROM runs WHERE schedule=?", (name,))

    def set_paused(self, name: str, paused: bool) -> None:
        self.get(name)
        with self._tx() as conn:
            conn.execute("UPDATE schedules SET paused=? WHERE name=?", (int(paused), name))

    # --------------------------------------------------------------------- runs

    def last_slot(self, name: str, kind: str) -> datetime | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT max(slot) FROM runs WHERE schedule=? AND type=?",
                               (name, kind)).fetchone()
        return datetime.fromisoformat(row[0]) if row[0] else None

    def last_run(self, name: str, kind: str) -> dict[str, object] | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT * FROM runs WHERE schedule=? AND type=? ORDER BY slot"
                               " DESC LIMIT 1", (name, kind)).fetchone()
        return dict(row) if row else None

    def claim(self, name: str, kind: str, slot: datetime, outcome: str,
              passed_over: int = 0, owner: Owner | None = None) -> bool:
        """Record ``slot`` (``running``, ``skipped``, ``covered``); False when already there."""
        now = datetime.now(UTC).isoformat()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO runs (schedule, type, slot, outcome, passed_over,"
                " started_at, owner) VALUES (?,?,?,?,?,?,?)",
                (name, kind, slot.astimezone(UTC).isoformat(), outcome, passed_over, now,
                 owner.id if owner else None))
            return cur.rowcount == 1

    def retry(self, name: str, kind: str, slot: datetime, owner: Owner) -> bool:
        """Claim an ``interrupted`` slot again (``running``, one more attempt); False when
        another process did first."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE runs SET outcome='running', attempts=attempts+1, owner=?, started_at=?,"
                " finished_at=NULL WHERE schedule=? AND type=? AND slot=? AND"
                " outcome='interrupted'",
                (owner.id, datetime.now(UTC).isoformat(), name, kind,
                 slot.astimezone(UTC).isoformat()))
            return cur.rowcount == 1

    def finish(self, name: str, kind: str, slot: datetime, exit_code: int,
               note: str | None = None) -> None:
        """Record a run's end: ``success`` (exit 0), ``partial`` (exit 12: some databases of a
        multi-database target were backed up) or ``failure``."""
        outcome = "success" if exit_code == 0 else "partial" if exit_code == PARTIAL \
            else "failure"
        with self._tx() as conn:
            conn.execute("UPDATE runs SET outcome=?, exit_code=?, finished_at=?, note=? WHERE"
                         " schedule=? AND type=? AND slot=?",
                         (outcome, exit_code,
                          datetime.now(UTC).isoformat(), note, name, kind,
                          slot.astimezone(UTC).isoformat()))

    def give_up(self, name: str, kind: str, slot: datetime, note: str) -> bool:
        """Leave an ``interrupted`` slot as it is for good (``not-rerun``), saying why; False
        when another process did first."""
        with self._tx() as conn:
            cur = conn.execute("UPDATE runs SET outcome='not-rerun', note=? WHERE schedule=? AND"
                         " type=? AND slot=? AND outcome='interrupted'",
                         (note, name, kind, slot.astimezone(UTC).isoformat()))
            return cur.rowcount == 1

    def interrupt(self, name: str, kind: str, slot: datetime, note: str) -> None:
        """Record a running slot as ``interrupted`` at once (the daemon is being stopped)."""
        with self._tx() as conn:
            conn.execute("UPDATE runs SET outcome='interrupted', finished_at=?, note=? WHERE"
                         " schedule=? AND type=? AND slot=? AND outcome='running'",
                         (datetime.now(UTC).isoformat(), note, name, kind,
                          slot.astimezone(UTC).isoformat()))

    def recover(self) -> list[dict[str, object]]:
        """Mark ``interrupted`` every ``running`` slot whose owner process is gone (killed
        mid-backup); the rows it changed."""
        with closing(self._connect()) as conn:
            rows = [dict(r) for r in conn.execute("SELECT * FROM runs WHERE outcome='running'")]
        stale = [r for r in rows if not owner_alive(self.owners, r["owner"])]
        changed = []
        now = datetime.now(UTC).isoformat()
        for r in stale:
            with self._tx() as conn:
                cur = conn.execute(
                    "UPDATE runs SET outcome='interrupted', finished_at=?, note=? WHERE"
                    " schedule=? AND type=? AND slot=? AND outcome='running' AND"
                    " owner IS ?", (now, "its process ended before the backup did (killed?)",
                                    r["schedule"], r["type"], r["slot"], r["owner"]))
            if cur.rowcount == 1:
                changed.append(r)
        return changed

    def runs(self, name: str, limit: int = 20) -> list[dict[str, object]]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT * FROM runs WHERE schedule=? ORDER BY slot DESC, type"
                                " LIMIT ?", (name, limit)).fetchall()
        return [dict(r) for r in rows]
