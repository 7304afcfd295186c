"""`safehold stats` over real SQLite backups in a local repository, through the real CLI."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from safehold.cli.errors import Exit
from safehold.cli.stats_cmds import BARS, bottleneck_history, sparkline, stage_initials
from safehold.pipeline.profile import BACKUP_STAGES
from tests.infra.portable import local_path, sqlite_url
from tests.integration.cli_helpers import make_db, run, run_json


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": ""}


def backups(tmp_path: Path, env: dict[str, str], name: str, count: int) -> tuple[str, list[str]]:
    db = tmp_path / f"{name}.db"
    make_db(db)
    repo = (tmp_path / "repo").as_uri()
    ids = [run_json("backup", "-t", sqlite_url(db), "-r", repo, "--name", name,
                    "--no-encryption", env=env)["backup_id"] for _ in range(count)]
    return repo, ids


def stretch(repo: str, target: str, backup_id: str, seconds: float) -> None:
    """Make a real backup's recorded duration ``seconds`` long (its manifest is unencrypted, so
    unsigned): durations of real runs are not under a test's control."""
    path = local_path(repo) / target / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    started = datetime.fromisoformat(manifest["started_at"])
    manifest["finished_at"] = (started + timedelta(seconds=seconds)).isoformat()
    path.write_text(json.dumps(manifest))


def test_stats_per_target_with_a_regressed_run(tmp_path: Path, env: dict[str, str]) -> None:
    repo, ids = backups(tmp_path, env, "app", 4)
    backups(tmp_path, env, "other", 1)
    for bid in ids[:3]:
        stretch(repo, "app", bid, 1.0)
    stretch(repo, "app", ids[3], 5.0)  # 5x the trailing median of 1s: a regression

    data = run_json("stats", "-r", repo, env=env)
    by_name = {t["target"]: t for t in data["targets"]}
    assert sorted(by_name) == ["app", "other"]
    app = by_name["app"]
    assert app["count"] == 4
    assert app["p50_duration_seconds"] == 1.0
    assert app["p95_duration_seconds"] == pytest.approx(4.4)
    assert app["compression_ratio"] > 2  # repeated rows shrink
    assert app["raw_bytes_latest"] > 0 and app["stored_bytes_total"] > 0
    assert app["p50_throughput_bytes_per_second"] == pytest.approx(app["raw_bytes_latest"], 0.01)
    assert [r["regressed"] for r in app["runs"]] == [False, False, False, True]
    assert app["regressions"] == 1
    assert ids[3] in app["runs"][3]["regression"] and "5.0x" in app["runs"][3]["regression"]
    # each manifest records its run's stage timings: every run has its bottleneck stage
    assert all(r["bottleneck_stage"] in BACKUP_STAGES for r in app["runs"])
    assert app["bottleneck_stage"] in {r["bottleneck_stage"] for r in app["runs"]}
    assert by_name["other"]["count"] == 1 and by_name["other"]["regressions"] == 0

    only = run_json("stats", "-r", repo, "--target", "other", env=env)
    assert [t["target"] for t in only["targets"]] == ["other"]

    text = run("stats", "-r", repo, "-t", "app", env=env).stdout
    assert "app: 4 backup(s) in the last 30d" in text
    assert "p50 1.00s" in text
    chart = rows(text)
    assert chart["durations"].startswith(f"{BARS[0] * 3}{BARS[-1]}  1.00s .. 5.00s")
    # the same bytes in 1, 1, 1, 5 seconds: the last run's throughput is the lowest
    assert chart["throughputs"].startswith(f"{BARS[-1] * 3}{BARS[0]}  ")
    assert chart["raw sizes"].startswith(BARS[0] * 4) and chart["ratios"].startswith(BARS[0] * 4)
    initials = "".join(r["bottleneck_stage"][0] for r in app["runs"])
    assert chart["stages"].startswith(f"{initials}  (") and \
        f"{app['bottleneck_stage'][0]} {app['bottleneck_stage']}" in chart["stages"]
    assert f"REGRESSED  backup {ids[3]} took 5.0s" in text
    assert f"bottleneck  {app['bottleneck_stage']} in " in text and "of 4 timed run(s)" in text


def rows(text: str) -> dict[str, str]:
    """The text's ``  label  value`` rows by label (labels of one or two words)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("  ") and len(line) > 14:
            found[line[2:13].strip()] = line[14:]
    return found


def test_the_chart_follows_sizes_and_ratio_over_time(tmp_path: Path, env: dict[str, str]
                                                    ) -> None:
    """A database that grows between backups, then gets rows that do not compress: raw and
    stored sizes rise run by run, and the ratio falls on the last one."""
    db, repo = tmp_path / "grow.db", (tmp_path / "repo").as_uri()
    make_db(db, rows=500, tables=1)
    for extra, data in ((0, b""), (4000, b""), (8000, b""), (0, os.urandom(4 << 20))):
        with sqlite3.connect(db) as conn:
            conn.executemany("INSERT INTO t0 (name, data) VALUES (?, ?)",
                             [(f"more {i}", bytes([i % 256]) * 100) for i in range(extra)])
            if data:
                conn.execute("INSERT INTO t0 (name, data) VALUES ('noise', ?)", (data,))
        run("backup", "-t", sqlite_url(db), "-r", repo, "--no-encryption", env=env)
    target = run_json("stats", "-r", repo, env=env)["targets"][0]
    raw = [r["raw_bytes"] for r in target["runs"]]
    assert raw == sorted(raw) and len(set(raw)) == 4
    chart = rows(run("stats", "-r", repo, env=env).stdout)
    assert chart["raw sizes"][0] == BARS[0] and chart["raw sizes"][3] == BARS[-1]
    assert chart["stored"][0] == BARS[0] and chart["stored"][3] == BARS[-1]
    assert chart["ratios"][3] == BARS[0] and BARS[-1] in chart["ratios"][:3]
    assert " KiB .. " in chart["raw sizes"] and "MiB" in chart["raw sizes"]
    assert len(chart["stages"].split()[0]) == 4


def test_since_leaves_out_older_backups(tmp_path: Path, env: dict[str, str]) -> None:
    repo, ids = backups(tmp_path, env, "app", 2)
    path = local_path(repo) / "app" / ids[0] / "manifest.json"
    manifest = json.loads(path.read_text())
    for key in ("started_at", "finished_at"):  # the first backup ran 40 days ago
        manifest[key] = (datetime.fromisoformat(manifest[key]) - timedelta(days=40)).isoformat()
    path.write_text(json.dumps(manifest))
    assert run_json("stats", "-r", repo, env=env)["targets"][0]["count"] == 1
    assert run_json("stats", "-r", repo, "--since", "6w", env=env)["targets"][0]["count"] == 2


def test_empty_repository(tmp_path: Path, env: dict[str, str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_json("stats", "-r", empty.as_uri(), env=env)["targets"] == []
    assert "no backups in" in run("stats", "-r", empty.as_uri(), env=env).stdout
    missing = run("stats", "-r", (tmp_path / "nowhere").as_uri(), env=env, ok=False)
    assert missing.exit_code == Exit.NOT_FOUND
    assert "no repository at" in missing.output


def test_unknown_target_names_the_known_ones(tmp_path: Path, env: dict[str, str]) -> None:
    repo, _ = backups(tmp_path, env, "app", 1)
    backups(tmp_path, env, "billing", 1)
    result = run("stats", "-r", repo, "-t", "ap", env=env, ok=False)
    assert result.exit_code == Exit.NOT_FOUND
    assert "'ap' has no backups" in result.output
    assert "targets here: app, billing" in result.output


@pytest.mark.parametrize("since", ["30", "30x", "-3d", "0d", "1.5d", "", "999999999999w"])
def test_since_errors(tmp_path: Path, env: dict[str, str], since: str) -> None:
    repo, _ = backups(tmp_path, env, "app", 1)
    result = run("stats", "-r", repo, "--since", since, env=env, ok=False)
    assert result.exit_code == Exit.USAGE
    assert "--since" in result.output and ("30d" in result.output or "too far" in result.output)


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([]) == ""
    assert sparkline([2.0, 2.0]) == BARS[0] * 2
    assert sparkline([0.0, 7.0, 3.5]) == BARS[0] + BARS[7] + BARS[4]
    assert sparkline([1.0, None, 3.0]) == BARS[0] + " " + BARS[-1]  # unknown: a gap
    assert sparkline([None, None]) == "  "


def test_stage_initials_name_each_run_and_the_legend() -> None:
    runs = [{"bottleneck_stage": s} for s in ("read", None, "compress", "read")]
    assert stage_initials(runs) == "r-cr  (c compress, r read)"
    assert stage_initials([{"bottleneck_stage": None}]) == "-"


def test_bottleneck_history_folds_repeats_oldest_first() -> None:
    runs = [{"bottleneck_stage": s} for s in (None, "read", "read", "compress", None)]
    assert bottleneck_history(runs) == "- x1 > read x2 > compress x1 > - x1"
    assert bottleneck_history([]) == ""
    flapping = [{"bottleneck_stage": s} for s in ("read", "write") * 6]
    assert bottleneck_history(flapping, limit=3) == "... > write x1 > read x1 > write x1"


def test_a_damaged_manifest_is_left_out_and_said(tmp_path: Path, env: dict[str, str]) -> None:
    repo, ids = backups(tmp_path, env, "app", 2)
    (local_path(repo) / "app" / ids[0] / "manifest.json").write_text("{")
    result = run("stats", "-r", repo, "-o", "json", env=env)
    target = json.loads(result.stdout)["targets"][0]
    assert (target["count"], target["damaged"]) == (1, 1)
    assert "1 backup(s) of app left out: damaged manifest" in result.stderr
