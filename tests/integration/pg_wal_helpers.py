"""`safehold wal stream` as a killable child process, and what a restored server (run as the
unprivileged test user) needs to fetch WAL with the default restore_command."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import safehold
from tests.infra.postgres import SUPERUSER, Postgres
from tests.infra.procs import chown_test_user, wait_until


class Streamer:
    """`safehold wal stream` as a child process (killable), its status file read back."""

    def __init__(self, pg: Postgres, db: str, repo: str, name: str, status: Path,
                 env: dict[str, str], *, slot: str | None = None) -> None:
        self.status, self.log = status, status.with_suffix(".log")
        extra = ["--slot", slot] if slot else []
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "safehold.cli", "wal", "stream", "-t",
                 f"postgresql://{SUPERUSER}@{pg.host}:{pg.port}/{db}", "-r", repo, "--name",
                 name, "--status-file", str(status), *extra],
                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)

    def read(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status.read_text()))
        except (OSError, ValueError):
            return {}

    def running(self) -> bool:
        assert self.proc.poll() is None, f"the streamer ended:\n{self.log.read_text()}"
        return True

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


def archived(repo: Path, name: str) -> list[str]:
    """The WAL segments (timeline 1) archived for target ``name`` in a file:// repository."""
    root = repo / name / "_logs" / "wal" / "00000001"
    return sorted(p.parent.name for p in root.glob("*/segment.json")) if root.exists() else []


def covered_until(repo: Path, name: str) -> datetime | None:
    """The latest ``covered_until`` of target ``name``'s archived segments (timeline 1) in a
    file:// repository: where its recoverable window ends."""
    root = repo / name / "_logs" / "wal" / "00000001"
    times = [datetime.fromisoformat(t) for p in root.glob("*/segment.json")
             if isinstance(t := json.loads(p.read_text()).get("meta", {}).get("covered_until"),
                           str)]
    return max(times, default=None)


def close_segments_until(pg: Postgres, db: str, when: datetime,
                         covered: Callable[[], datetime | None],
                         archived: Callable[[str], bool], *, tries: int = 5) -> None:
    """Close WAL segments (a write, then ``pg_switch_wal``) until ``covered()``, the end of
    the archive's recoverable window, reaches ``when``; ``archived(segment)`` says whether the
    streamer has stored a segment.

    A closed segment covers up to the send time of the last message whose WAL end it holds
    (walstream.Coverage). WAL written just after a switch (a running-xacts record, autovacuum)
    can put every message of the switch's tail past the segment, leaving its coverage short
    of its last commits until the next segment closes: a test aiming at the window's very end
    closes segments until the window reaches its target, as the streamer would in time."""
    pg.psql("CREATE TABLE IF NOT EXISTS switch_filler (at timestamptz)", db=db)
    for _ in range(tries):
        pg.psql("INSERT INTO switch_filler VALUES (clock_timestamp())", db=db)  # WAL to close
        segment = pg.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        pg.psql("SELECT pg_switch_wal()")
        wait_until(lambda s=segment: archived(s), what=f"segment {segment} archived",
                   timeout=180)
        end = covered()
        if end is not None and end >= when:
            return
    raise AssertionError(f"after {tries} closed segments the archive covers up to {end},"
                         f" not {when}")


def server_side_python(scratch: Path) -> str:
    """A Python the restored server's OS user (the unprivileged test user when we are root)
    can run, with this safehold importable: the default restore_command runs `sys.executable
    -m safehold.cli`, and this venv's interpreter lives under /root."""
    if os.geteuid() != 0:
        return sys.executable
    paths = [sysconfig.get_paths()["purelib"], str(Path(safehold.__file__).parents[1])]
    wrapper = scratch / "python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(':'.join(paths))}"
                       f" exec /usr/bin/python3.11 \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def let_restored_servers_fetch(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repository and key under ``scratch`` readable by the test user, the default
    restore_command's interpreter one it can run, and this run's XDG directory (tests/conftest.py,
    where the fetch looks for a config file) one it can look into."""
    chown_test_user(scratch)
    monkeypatch.setattr(sys, "executable", server_side_python(scratch))
    Path(os.environ["XDG_CONFIG_HOME"]).parent.chmod(0o755)
