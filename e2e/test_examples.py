"""The sample manifests of docs/examples, applied with kubectl to a real cluster whose operator
runs as a Pod from its image, installed by the Helm chart (see e2e/README.md for the modes).

Per engine (PostgreSQL, MariaDB, SQLite; on kind also MongoDB) and per object store (S3, GCS,
Azure): a BackupTarget becomes Ready through its check Job, a full Backup completes and its
objects are in the store, a Restore of it reproduces the data (fingerprints of every table), and
a BackupSchedule fires. PostgreSQL and MariaDB also go back to a point in time: the targets'
log streamers archive the WAL / binary log, and a Restore to a time between two writes holds
exactly the writes before it. Everything of one step is applied at once, so the operator runs
the Jobs of all engines and stores side by side.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from e2e import data
from e2e.system import (
    PITR_CLAIM,
    STORES,
    System,
    eventually,
    make_buckets,
    phase,
    ready,
    repository_records,
    stored_keys,
)

FINGERPRINT = {"postgresql": data.PG_FINGERPRINT, "mariadb": data.MARIADB_FINGERPRINT}
Fingerprint = dict[str, tuple[int, str]]
PITR_ENGINES = ("postgresql", "mariadb")  # docs/examples/<engine>/pointintime-*.yaml
# `events` belongs to the examples' user, as `shop` does (the targets' check wants to read it)
OWNED = {"postgresql": "ALTER TABLE events OWNER TO safehold;", "mariadb": ""}
# the server's clock now, as an aware datetime (MariaDB's binlog times are whole seconds)
NOW = {"postgresql": "SELECT clock_timestamp()::text",
       "mariadb": "SELECT DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%dT%H:%i:%s+00:00')"}


def fingerprint(system: System, engine: str, store: str | None = None) -> Fingerprint:
    """The source database's tables (``store`` None), or those of the copy restored from
    ``store``."""
    if engine == "sqlite":
        return data.parse(system.sqlite("fingerprint",
                                        f"restored-{store}.db" if store else "app.db"))
    database = f"{data.SOURCE}_from_{store}" if store else data.SOURCE
    if engine == "mongodb":
        return data.parse(system.sql(engine, database, data.MONGODB_FINGERPRINT))
    return data.parse(system.sql(engine, database, FINGERPRINT[engine]))


def names(system: System, suffix: str = "") -> list[str]:
    return [f"{e}-{s}{suffix}" for e in system.engines for s in STORES]


def finished(system: System, plural: str, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """Wait until every object of ``wanted`` is Completed or Failed; return them."""
    def probe() -> dict[str, dict[str, Any]] | None:
        objs = system.objects(plural)
        done = {n: objs[n] for n in wanted if n in objs
                and phase(objs[n]) in ("Completed", "Failed")}
        return done if len(done) == len(wanted) else None

    result: dict[str, dict[str, Any]] = eventually(probe, f"{plural} {wanted} to finish",
                                                   explain=lambda: system.diagnose(plural))
    return result


def failures(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {n: (o.get("status") or {}).get("conditions") for n, o in objs.items()
            if phase(o) != "Completed"}


def explained(system: System, failed: dict[str, Any]) -> dict[str, Any]:
    """``failed`` with, for a trust failure (a conflict or a refused record), what the
    repository holds of the source target: who wrote its policy record and its manifests."""
    out = dict(failed)
    for name, conditions in failed.items():
        if "Tampered" in str(conditions) or "Conflict" in str(conditions):
            target = next((f"{e}-{s}" for e in system.engines for s in STORES
                           if name.startswith(f"{e}-{s}")
                           or (name.startswith(f"{e}-every-minute") and s == "s3")), None)
            if target is not None:
                store = target.rsplit("-", 1)[1]
                out[f"{name}: repository"] = repository_records(system.store_endpoints, store,
                                                                target)
    return out


def pitr_engines(system: System) -> tuple[str, ...]:
    return tuple(e for e in PITR_ENGINES if e in system.engines)


def point_in_time(system: System, target: str) -> dict[str, Any]:
    """The target's status.pointInTime (what the operator read from its streamer)."""
    return dict((system.objects("backuptargets")[target].get("status") or {}).get(
        "pointInTime") or {})


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def server_now(system: System, engine: str) -> datetime:
    return datetime.fromisoformat(system.sql(engine, data.SOURCE, NOW[engine]).strip())


@pytest.fixture(scope="module")
def source(system: System) -> dict[str, Fingerprint]:
    """Stores, credentials, targets and backups of every engine applied, and the point-in-time
    targets (their streamers start meanwhile) with the first batch of `events`; the source
    data's fingerprints."""
    make_buckets(system.store_endpoints)
    system.apply("stores.yaml")
    for engine in system.engines:
        system.apply(f"{engine}/{'claim' if engine == 'sqlite' else 'credentials'}.yaml")
    if "sqlite" in system.engines:
        system.sqlite("seed", "app.db")
    prints = {e: fingerprint(system, e) for e in system.engines}
    for engine in system.engines:
        assert {t: n for t, (n, _) in prints[engine].items()} == data.EXPECTED_ROWS, engine
        system.apply(f"{engine}/targets.yaml")
        system.apply(f"{engine}/backups.yaml")
    for engine in pitr_engines(system):
        system.sql(engine, data.SOURCE, f"{data.EVENTS_TABLE}; {OWNED[engine]}"
                   f" {data.events('w0', range(1, 11))}")
        system.apply(f"{engine}/pointintime-target.yaml")
    return prints


@pytest.fixture(scope="module")
def backups(system: System, source: dict[str, Fingerprint]) -> dict[str, dict[str, Any]]:
    """Every Backup finished; then the restores and the schedules applied (they run while the
    first tests look at the backups), and, once its streamer is healthy, each point-in-time
    target's full (the archive then holds the log from the full's start on)."""
    done = finished(system, "backups", names(system, "-1"))
    for engine in system.engines:
        system.apply(f"{engine}/restores.yaml")
        system.apply(f"{engine}/schedule.yaml")
    for engine in pitr_engines(system):
        eventually(lambda e=engine: point_in_time(system, f"{e}-pitr").get(  # type: ignore[misc]
            "health") == "ok", f"the streamer of {engine}-pitr healthy",
            explain=lambda: system.diagnose("backuptargets"))
        system.apply(f"{engine}/pointintime-backup.yaml")
    return done


@pytest.fixture(scope="module")
def restored_to_a_time(system: System, backups: dict[str, dict[str, Any]]) -> dict[
        str, tuple[datetime, list[str], dict[str, Any]]]:
    """Per point-in-time engine: once its full completed and the window starts, batch w1
    written, the time (the mark), batch w2; the log archived past the mark; the Restore to the
    mark applied and finished. -> {engine: (mark, the `events` rows at the mark, Restore)}."""
    engines = pitr_engines(system)
    full = finished(system, "backups", [f"{e}-pitr-1" for e in engines])
    assert not failures(full), explained(system, failures(full))
    for engine in engines:
        eventually(lambda e=engine: point_in_time(system, f"{e}-pitr").get(  # type: ignore[misc]
            "windowStart"), f"the window of {engine}-pitr starting at its full's end",
            timeout=300, explain=lambda: system.diagnose("backuptargets"))
    marks: dict[str, tuple[datetime, list[str]]] = {}
    for engine in engines:
        system.sql(engine, data.SOURCE, data.events("w1", range(11, 21)))
    time.sleep(1.5)  # binlog times are whole seconds: a clear second either side of the mark
    for engine in engines:
        marks[engine] = (server_now(system, engine),
                         system.sql(engine, data.SOURCE, data.EVENTS_ROWS).split())
    time.sleep(1.5)
    for engine in engines:
        system.sql(engine, data.SOURCE, data.events("w2", range(21, 31)))  # after the mark
    for engine in engines:
        archived_past(system, engine, marks[engine][0])
        start = when(point_in_time(system, f"{engine}-pitr")["windowStart"])
        assert start < marks[engine][0], (engine, start, marks[engine][0])
        system.apply(f"{engine}/pointintime-restore.yaml",
                     RESTORE_TIME=marks[engine][0].isoformat())
    restores = finished(system, "restores", [f"{e}-pitr-restore" for e in engines])
    return {e: (*marks[e], restores[f"{e}-pitr-restore"]) for e in engines}


def archived_past(system: System, engine: str, mark: datetime) -> None:
    """Wait until the target's window ends past ``mark``. MariaDB's streamer flushes the binary
    log every segmentSeconds; a PostgreSQL WAL segment is archived once it is closed, so close
    segments (a write, then pg_switch_wal) until one covers the mark, as time would."""
    target = f"{engine}-pitr"

    def past() -> bool:
        end = point_in_time(system, target).get("windowEnd")
        return bool(end) and when(end) >= mark

    if engine == "mariadb":
        eventually(past, f"the window of {target} past {mark}", timeout=300,
                   explain=lambda: system.diagnose("backuptargets"))
        return
    switch = ("CREATE TABLE IF NOT EXISTS switch_filler (at timestamptz);"
              " INSERT INTO switch_filler VALUES (clock_timestamp());"
              " SELECT pg_walfile_name(pg_current_wal_insert_lsn()), pg_switch_wal()")
    for _ in range(5):
        # (the last line: psql may print the other statements' command tags before it)
        segment = system.sql(engine, "postgres", switch).strip().splitlines()[-1].split("|")[0]
        eventually(lambda s=segment: point_in_time(system, target).get(  # type: ignore[misc]
            "lastSegment") == s, f"{target}'s streamer to archive WAL segment {segment}",
            timeout=300, explain=lambda: system.diagnose("backuptargets"))
        if past():
            return
    raise AssertionError(f"after 5 closed WAL segments the window of {target} ends at"
                         f" {point_in_time(system, target).get('windowEnd')}, not past {mark}")


def test_every_target_is_checked_ready(system: System, source: dict[str, Fingerprint]) -> None:
    wanted = names(system)

    def probe() -> dict[str, Any] | None:
        objs = system.objects("backuptargets")
        conds = {n: ready(objs[n]) for n in wanted if n in objs}
        return conds if len(conds) == len(wanted) and all(conds.values()) else None

    conds = eventually(probe, f"targets {wanted} checked",
                       explain=lambda: system.diagnose("backuptargets"))
    assert all(c["status"] == "True" for c in conds.values()), {
        n: c for n, c in conds.items() if c["status"] != "True"}


def test_backups_complete_into_every_store(system: System,
                                           backups: dict[str, dict[str, Any]]) -> None:
    assert not failures(backups), failures(backups)
    for engine in system.engines:
        for store in STORES:
            st = backups[f"{engine}-{store}-1"]["status"]
            assert st["type"] == "full" and st["storedBytes"] > 0 and st["keyId"], st
            keys = stored_keys(system.store_endpoints, store, f"{engine}-{store}")
            assert any(f"/{st['backupId']}/" in k for k in keys), (engine, store, keys)


def test_restores_reproduce_the_data(system: System, source: dict[str, Fingerprint],
                                     backups: dict[str, dict[str, Any]]) -> None:
    restores = finished(system, "restores", names(system, "-restore"))
    assert not failures(restores), explained(system, failures(restores))
    for engine in system.engines:
        for store in STORES:
            restore = restores[f"{engine}-{store}-restore"]["status"]
            assert restore["backupId"] == backups[f"{engine}-{store}-1"]["status"]["backupId"]
            assert fingerprint(system, engine, store) == source[engine], (engine, store)


def test_schedules_fire(system: System, backups: dict[str, dict[str, Any]]) -> None:
    schedules = [f"{e}-every-minute" for e in system.engines]
    for name in schedules:
        fired = eventually(
            lambda n=name: [b for b in system.objects(  # type: ignore[misc]
                "backups", f"safehold.dev/schedule={n}").values()
                if phase(b) in ("Completed", "Failed")],
            f"a Backup of BackupSchedule {name}", timeout=300,
            explain=lambda: system.diagnose("backupschedules"))
        assert all(phase(b) == "Completed" for b in fired), explained(system, failures(
            {b["metadata"]["name"]: b for b in fired}))
        assert fired[0]["spec"]["targetRef"]["name"] == name.replace("-every-minute", "-s3")
        # the schedule records it (on its next look at its Backups; by then maybe a later one)
        eventually(lambda n=name: str((  # type: ignore[misc]
            system.objects("backupschedules")[n].get("status") or {}).get(
                "lastSuccessfulBackup")).startswith(f"{n}-full-"),
            f"{name} to record a successful Backup", timeout=180,
            explain=lambda: system.diagnose("backupschedules"))
    # it fires every minute: stop it (its Backups stay)
    system.kubectl("-n", system.namespace, "delete", "backupschedules", *schedules)


def test_a_restore_to_a_point_in_time_holds_the_writes_before_it(
        system: System, source: dict[str, Fingerprint],
        restored_to_a_time: dict[str, tuple[datetime, list[str], dict[str, Any]]]) -> None:
    restores = {f"{e}-pitr-restore": r for e, (_, _, r) in restored_to_a_time.items()}
    assert not failures(restores), explained(system, failures(restores))
    for engine, (mark, expected, restore) in restored_to_a_time.items():
        assert expected == [f"{i}:w{0 if i <= 10 else 1}" for i in range(1, 21)], expected
        restored_to = when(restore["status"]["restoredTo"])
        assert restored_to <= mark, (engine, restored_to, mark)
        if engine == "postgresql":  # a new data directory: started by a server of its major
            with system.restored_postgres(PITR_CLAIM) as psql:
                eventually(lambda q=psql: q("postgres", "SELECT pg_is_in_recovery()")  # type: ignore[misc]
                           == "f", "the restored server to recover and promote", timeout=180)
                rows = psql(data.SOURCE, data.EVENTS_ROWS).split()
                prints = data.parse(psql(data.SOURCE, data.PG_FINGERPRINT))
        else:  # a new database on the same server
            rows = system.sql(engine, data.AT_TIME, data.EVENTS_ROWS).split()
            prints = data.parse(system.sql(engine, data.AT_TIME, FINGERPRINT[engine]))
        assert rows == expected, (engine, mark)  # w0 and w1, not w2
        assert prints == source[engine], engine


def test_what_kubectl_shows(
        system: System, backups: dict[str, dict[str, Any]],
        restored_to_a_time: dict[str, tuple[datetime, list[str], dict[str, Any]]]) -> None:
    """The closing picture (printed for `pytest -s`): the images' sizes, helm's output, and the
    Pods, Backups and Restores of the run (the point-in-time ones included)."""
    table = system.kubectl("get", "pods,backups,restores", "-A")
    for key, value in system.info.items():
        print(f"--- {key}\n{value}")
    print(f"--- kubectl get pods,backups,restores -A\n{table}")
    rows = [line.split() for line in table.splitlines() if line.strip()]
    manual = {r[1] for r in rows if r[0] == system.namespace and r[1].startswith("backup.")
              and r[4] == "Completed"}
    assert {f"backup.safehold.dev/{n}" for n in names(system, "-1")} <= manual, table
    listed = {r[1] for r in rows if r[0] == system.namespace and r[1].startswith("restore.")}
    assert {f"restore.safehold.dev/{e}-pitr-restore" for e in restored_to_a_time} <= listed, table
    operator = [r for r in rows if r[0] == system.operator_namespace
                and r[1].startswith("pod/") and r[3] == "Running"]
    assert operator, f"no operator Pod Running:\n{table}"
