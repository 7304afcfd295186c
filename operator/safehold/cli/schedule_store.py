"""The standalone scheduler's local SQLite store: schedules and the record of every slot.

One file (``--store``, ``SAFEHOLD_SCHEDULE_STORE``, else ``schedules.db`` in the user state dir
from platformdirs). A slot is *claimed* by inserting its row (primary key schedule, type, slot)
in one transaction before its backup starts, so a slot runs at most once whatever happens to
the daemon: a restarted daemon (or a second one on the same store) finds the row and moves on.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

from safehold.api.errors import UsageError

FILE_NAME = "schedules.db"
POLICIES = ("run-once", "skip")
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

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "target": self.target, "repo": self.repo,
                "crons": self.crons, "time_zone": self.time_zone or "UTC",
                "missed": self.missed, "at": self.at.isoformat() if self.at else None,
                "paused": self.paused, "created_at": self.created_at.isoformat()}


def _schedule(row: sqlite3.Row) -> Schedule:
    return Schedule(row["name"], row["target"], row["repo"], json.loads(row["crons"]),
                    row["time_zone"], row["missed"],
                    datetime.fromisoformat(row["at"]) if row["at"] else None,
                    bool(row["paused"]), datetime.fromisoformat(row["created_at"]))


class Store:
    """Schedules and runs in one SQLite file; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as conn, conn:
                conn.executescript(_SCHEMA)
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
            conn.execute("INSERT INTO schedules VALUES (?,?,?,?,?,?,?,?,?)",
                         (s.name, s.target, s.repo, json.dumps(s.crons), s.time_zone, s.missed,
                          s.at.isoformat() if s.at else None, int(s.paused),
                          s.created_at.isoformat()))

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

    def claim(self, name: str, kind: str, slot: datetime, outcome: str,
              passed_over: int = 0) -> bool:
        """Record ``slot`` (``running``, ``skipped``, ``covered``); False when already there."""
        now = datetime.now(UTC).isoformat()
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO runs (schedule, type, slot, outcome, passed_over,"
                " started_at) VALUES (?,?,?,?,?,?)",
                (name, kind, slot.astimezone(UTC).isoformat(), outcome, passed_over, now))
            return cur.rowcount == 1

    def finish(self, name: str, kind: str, slot: datetime, exit_code: int) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE runs SET outcome=?, exit_code=?, finished_at=? WHERE"
                         " schedule=? AND type=? AND slot=?",
                         ("success" if exit_code == 0 else "failure", exit_code,
                          datetime.now(UTC).isoformat(), name, kind,
                          slot.astimezone(UTC).isoformat()))

    def runs(self, name: str, limit: int = 20) -> list[dict[str, object]]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT * FROM runs WHERE schedule=? ORDER BY slot DESC, type"
                                " LIMIT ?", (name, limit)).fetchall()
        return [dict(r) for r in rows]
