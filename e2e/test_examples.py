"""The sample manifests of docs/examples, applied with kubectl to a real cluster whose operator
runs as a Pod from its image, installed by the Helm chart (see e2e/README.md for the modes).

Per engine (PostgreSQL, MariaDB, SQLite; on kind also MongoDB) and per object store (S3, GCS,
Azure): a BackupTarget becomes Ready through its check Job, a full Backup completes and its
objects are in the store, a Restore of it reproduces the data (fingerprints of every table), and
a BackupSchedule fires. Everything of one step is applied at once, so the operator runs the
Jobs of all engines and stores side by side.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e import data
from e2e.system import (
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


@pytest.fixture(scope="module")
def source(system: System) -> dict[str, Fingerprint]:
    """Stores, credentials, targets and backups of every engine applied; the source data's
    fingerprints."""
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
    return prints


@pytest.fixture(scope="module")
def backups(system: System, source: dict[str, Fingerprint]) -> dict[str, dict[str, Any]]:
    """Every Backup finished; then the restores and the schedules applied (they run while the
    first tests look at the backups)."""
    done = finished(system, "backups", names(system, "-1"))
    for engine in system.engines:
        system.apply(f"{engine}/restores.yaml")
        system.apply(f"{engine}/schedule.yaml")
    return done


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


def test_what_kubectl_shows(system: System, backups: dict[str, dict[str, Any]]) -> None:
    """The closing picture (printed for `pytest -s`): Pods, Backups and Restores of the run."""
    table = system.kubectl("get", "pods,backups,restores", "-A")
    for key, value in system.info.items():
        print(f"--- {key}\n{value}")
    print(f"--- kubectl get pods,backups,restores -A\n{table}")
    rows = [line.split() for line in table.splitlines() if line.strip()]
    manual = {r[1] for r in rows if r[0] == system.namespace and r[1].startswith("backup.")
              and r[4] == "Completed"}
    assert {f"backup.safehold.dev/{n}" for n in names(system, "-1")} <= manual, table
    operator = [r for r in rows if r[0] == system.operator_namespace
                and r[1].startswith("pod/") and r[3] == "Running"]
    assert operator, f"no operator Pod Running:\n{table}"
