"""`safehold restore --data-dir` and its point-in-time options: bad combinations are refused
(exit 2) with what to do, before any repository is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.cli.errors import Exit
from tests.integration.cli_helpers import run


@pytest.mark.parametrize(("args", "words"), [
    (["-b", "latest", "--data-dir", "{d}", "-t", "sqlite:///x.db"], "takes no --target"),
    (["-b", "latest", "--data-dir", "{d}", "--include", "t"], "takes no --target"),
    (["--data-dir", "{d}", "-b", "latest", "--restore-command", "cp /a/%f %p"],
     "only for --to-time or --to-lsn"),
    (["--data-dir", "{d}", "-b", "x", "--to-lsn", "0/1", "--restore-command", "c"],
     "leave out -b"),
    (["--data-dir", "{d}", "--to-lsn", "0/1", "--to-time", "2026-12-02T18:00:00Z",
      "--restore-command", "c"], "one recovery target"),
    (["--data-dir", "{d}", "--to-time", "yesterday", "--restore-command", "c"],
     "not an ISO 8601 time"),
    (["--data-dir", "{d}", "-b", "latest", "--bundle-wal"], "only for --to-time or --to-lsn"),
    (["--data-dir", "{d}", "--to-lsn", "0/1", "--bundle-wal", "--restore-command", "c"],
     "leave out --restore-command"),
    (["-t", "sqlite:///x.db", "--bundle-wal"], "give --data-dir"),
    (["-t", "sqlite:///x.db", "--to-lsn", "0/1"], "give --data-dir"),
    (["-t", "sqlite:///x.db", "--restore-command", "cp /a/%f %p"], "give --data-dir"),
    (["-b", "latest", "-t", "sqlite:///x.db", "--to-time", "2026-12-02T18:00:00Z"],
     "drop --backup"),
    (["--data-dir", "{d}", "--to-gtid", "0-1-2"], "MariaDB point-in-time"),
    (["-t", "sqlite:///x.db", "--to-time", "2026-12-02T18:00:00Z", "--database", "a"],
     "drop --database"),
    (["-b", "latest"], "--target is required"),
])
def test_bad_combinations_are_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    argv = [a.replace("{d}", str(tmp_path / "new")) for a in args]
    res = run("restore", "-r", f"file://{tmp_path / 'nowhere'}", *argv, ok=False,
              env={"SAFEHOLD_CONFIG": str(tmp_path / "none.yaml")})
    assert res.exit_code == Exit.USAGE, res.output
    assert words in res.output
    assert not (tmp_path / "new").exists() and not (tmp_path / "nowhere").exists()


def test_a_postgresql_point_in_time_restore_asks_for_a_data_directory(tmp_path: Path) -> None:
    """--to-time into a PostgreSQL URL is a physical recovery: named before any connection."""
    config = tmp_path / "safehold.yaml"
    config.write_text("")
    res = run("restore", "-r", f"file://{tmp_path / 'nowhere'}", "-t",
              "postgresql://u@127.0.0.1:1/db", "--to-time", "2026-12-02T18:00:00Z", ok=False,
              env={"SAFEHOLD_CONFIG": str(config)})
    assert res.exit_code == Exit.USAGE, res.output
    assert "give --data-dir DIR and --to-time" in res.output
