"""Logs of real runs: levels, JSON or text, a log file with size- or time-based rotation, and
the run record (start, end, duration, outcome, sizes, ratio, per-stage timings)."""

from __future__ import annotations

import json
import logging
import logging.handlers
from pathlib import Path
from typing import Any

import pytest

from safehold.cli import runlog
from safehold.cli.errors import Exit
from tests.infra.portable import sqlite_url
from tests.integration.cli_helpers import make_db, run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_NO_ENCRYPTION": "1",
            "SAFEHOLD_AUDIT__FILE": str(tmp_path / "audit.jsonl")}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli(*args: str, env: dict[str, str], ok: bool = True) -> Any:
    """`run` without its --log-level warning (these tests set their own)."""
    from click.testing import CliRunner

    from safehold.cli.main import cli as main

    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_backup_run_is_logged_to_a_json_file(tmp_path: Path, env: dict[str, str]) -> None:
    db = tmp_path / "app.db"
    make_db(db, rows=500)
    log = tmp_path / "logs" / "safehold.log"
    cli("backup", "-t", sqlite_url(db), "-r", (tmp_path / "repo").as_uri(), "--log-file",
        str(log), env=env)
    records = lines(log)
    start, end = records[0], records[-1]
    assert start["event"] == "run.start" and start["command"] == "backup"
    assert end["event"] == "run.end" and end["outcome"] == "success" and end["exit_code"] == 0
    assert end["seconds"] > 0 and end["raw_bytes"] > end["stored_bytes"] > 0
    assert end["compression_ratio"] > 1 and end["throughput_mib_s"] > 0
    # the per-stage timings the pipeline reports, read from the result wherever they are
    assert end["stage_seconds"] and all(v >= 0 for v in end["stage_seconds"].values())
    assert end["bottleneck"] in end["stage_seconds"]
    assert all(r["level"] in ("info", "warning") for r in records)
    # a failure: outcome and exit code; WARNING hides the start, not the errors
    cli("--log-level", "WARNING", "verify", "-r", (tmp_path / "missing").as_uri(),
        "--log-file", str(log), env=env, ok=False)
    assert len(lines(log)) == len(records)  # info records filtered
    cli("verify", "-r", (tmp_path / "missing").as_uri(), "--log-file", str(log), env=env,
        ok=False)
    end = lines(log)[-1]
    assert end["outcome"] == "failure" and end["exit_code"] == Exit.NOT_FOUND


def test_text_format_and_level_from_the_config(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "safehold.log"
    (tmp_path / "safehold.yaml").write_text(
        f"log: {{level: debug, format: text, file: {log}}}\n")
    cli("config", "show", env=env)
    text = log.read_text()
    assert " INFO safehold.run run started: safehold config show" in text
    assert "run finished: safehold config show: success (exit 0)" in text
    # the flag wins over the config; the environment over the file
    cli("--log-level", "error", "config", "show", env=env)
    assert log.read_text() == text
    cli("config", "show", env={**env, "SAFEHOLD_LOG__LEVEL": "error"})
    assert log.read_text() == text


def test_size_rotation_keeps_the_given_number_of_files(tmp_path: Path,
                                                       env: dict[str, str]) -> None:
    log = tmp_path / "safehold.log"
    for _ in range(30):
        cli("--log-level", "debug", "--log-file", str(log), "--log-rotate", "4KiB",
            "--log-keep", "2", "config", "show", env=env)
    files = sorted(p.name for p in tmp_path.glob("safehold.log*"))
    assert files == ["safehold.log", "safehold.log.1", "safehold.log.2"], files
    assert all(p.stat().st_size <= 4096 for p in tmp_path.glob("safehold.log*"))


def test_time_rotation_and_bad_rotation(tmp_path: Path, env: dict[str, str]) -> None:
    log = tmp_path / "safehold.log"
    cli("--log-file", str(log), "--log-rotate", "daily", "config", "show", env=env)
    handler = next(h for h in logging.getLogger().handlers
                   if isinstance(h, logging.handlers.TimedRotatingFileHandler))
    assert handler.when == "D" and handler.utc and handler.backupCount == 5
    assert log.read_text()
    for bad in ("sometimes", "10", "5 parsecs"):
        result = cli("--log-file", str(log), "--log-rotate", bad, "config", "show", env=env,
                     ok=False)
        assert result.exit_code == Exit.USAGE and "hourly, daily, midnight" in result.output
    unwritable = cli("--log-file", str(tmp_path / "safehold.yaml" / "x.log"), "config",
                     "show", env=env, ok=False)
    assert unwritable.exit_code == Exit.USAGE and "cannot open the log file" in \
        unwritable.output


def test_stage_timings_are_read_generically(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever stages a result carries (stage_seconds or stages) reach the run record."""
    for key in ("stage_seconds", "stages"):
        run_ = runlog.begin("backup")
        run_.result = {"raw_bytes": 100, "stored_bytes": 10, "compression_ratio": 10.0,
                       "nested": {key: {"read": 1.5, "compress": 0.25}}}
        with caplog.at_level(logging.INFO, logger="safehold.run"):
            runlog.finish(run_, 0)
        record = caplog.records[-1]
        assert record.stage_seconds == {"read": 1.5, "compress": 0.25}  # type: ignore[attr-defined]
        assert "stages read=1.5s compress=0.25s" in record.getMessage()
    partial = runlog.begin("verify")
    partial.result = {"checked": 3}
    assert runlog.outcome(4, partial) == "partial"
    for status in ("failure", "partial"):  # a result that states its status is taken at it
        stated = runlog.begin("backup")
        stated.result = {"status": status, "databases": [{"status": "failed"}]}
        assert runlog.outcome(12 if status == "partial" else 3, stated) == status


def test_helper_run_keeps_its_quiet_default(tmp_path: Path, env: dict[str, str]) -> None:
    assert "run started" not in run("config", "show", env=env).output


@pytest.mark.parametrize("args", [["restore", "--help"], ["--help"], ["backup", "-h"],
                                  ["--version"]])
def test_help_and_version_are_not_runs(tmp_path: Path, env: dict[str, str],
                                       args: list[str]) -> None:
    """Asking for help or the version logs no run start or end (a newcomer's first command
    ends with the help, not an INFO line); a mistyped command still does."""
    log = tmp_path / "safehold.log"
    cli("--log-file", str(log), *args, env=env)
    assert not log.exists() or not [r for r in lines(log) if r.get("event")], lines(log)
    cli("--log-file", str(log), "restore", "--frm", "x", env=env, ok=False)
    assert [r["event"] for r in lines(log) if r.get("event")][-1] == "run.end"
