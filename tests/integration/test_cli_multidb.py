"""Several databases in one target, against real servers: each database its own backup
(``NAME@DB``), one failing mid-run makes the run ``partial`` (exit 12) and leaves the others
whole, and the server-wide objects (PostgreSQL roles, MariaDB users and grants) restore into a
NEW server whose accounts can then log in."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pymysql
import pytest
from click.testing import CliRunner

from safehold.api.errors import Exit
from safehold.cli.main import cli
from safehold.engines import servers
from safehold.engines.base import Engine
from safehold.pipeline.profile import BACKUP_STAGES
from tests.infra import mariadb, postgres
from tests.infra.ferretdb import FerretDB
from tests.infra.fixtures_db import PG_KINDS
from tests.infra.procs import serve, unavailable
from tests.integration.cli_helpers import run

DBS = ("alpha", "beta", "gamma")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_NO_ENCRYPTION": "1", "SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"),
            "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "PGPASSWORD": "", "MYSQL_PWD": ""}


def _pg() -> Iterator[postgres.Postgres]:
    bindir = PG_KINDS["pg18"]()
    if bindir is None:
        unavailable("PostgreSQL 18", "server binaries not installed")
    assert bindir is not None
    yield from serve(postgres.Postgres(bindir), "PostgreSQL 18")


def _maria() -> Iterator[mariadb.MariaDB]:
    if mariadb.server_binary() is None:
        unavailable("MariaDB", "mariadbd not installed")
    yield from serve(mariadb.MariaDB(), "MariaDB")


# Fresh servers: an all-databases backup must see only this test's databases and roles, and
# the roles must restore into a server that has never seen them.
pg_old = pytest.fixture(scope="module")(_pg)
pg_new = pytest.fixture(scope="module")(_pg)
maria_old = pytest.fixture(scope="module")(_maria)
maria_new = pytest.fixture(scope="module")(_maria)


def backup(*args: str, env: dict[str, str], code: int = 0) -> dict[str, Any]:
    result = run("backup", *args, "--output", "json", env=env, ok=False)
    assert result.exit_code == code, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def dropping(victim: str, drop: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault: ``victim`` is dropped after the run listed it, right before its backup."""
    real = servers.open_database

    def opening(url: str, database: str, options: Any) -> Engine:
        if database == victim:
            drop()
        return real(url, database, options)

    monkeypatch.setattr(servers, "open_database", opening)


# -- PostgreSQL -------------------------------------------------------------------------------

def pg_url(pg: postgres.Postgres, db: str = "postgres") -> str:
    return f"postgresql://postgres@{pg.host}:{pg.port}/{db}"


@pytest.fixture(scope="module")
def pg_filled(pg_old: postgres.Postgres) -> postgres.Postgres:
    for db in DBS:
        pg_old.psql(f'CREATE DATABASE "{db}"')
        pg_old.psql(f"CREATE TABLE t (id int PRIMARY KEY, v text);"
                    f" INSERT INTO t SELECT g, '{db}' || g FROM generate_series(1, 300) g", db=db)
    pg_old.psql("CREATE ROLE app_reader NOLOGIN; CREATE ROLE app_user LOGIN PASSWORD 'pw-ü1'"
                " CONNECTION LIMIT 7; GRANT app_reader TO app_user")
    return pg_old


def test_pg_all_databases_are_one_backup_each_plus_the_roles(
        pg_filled: postgres.Postgres, tmp_path: Path, env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    env = {**env, "SAFEHOLD_PASSWORD": postgres.PASSWORD}
    result = backup("-t", pg_url(pg_filled), "-r", repo, "--all-databases", "--name", "srv",
                    env=env)
    assert result["status"] == "success"
    assert [d["database"] for d in result["databases"]] == [*DBS, "postgres"]
    assert all(d["status"] == "completed" and d["target"] == f"srv@{d['database']}"
               for d in result["databases"])
    assert result["globals"]["target"] == "srv@~globals"
    listed = json.loads(run("list", "-r", repo, "-o", "json", env=env).stdout)["backups"]
    assert {b["target"] for b in listed} == {"srv@alpha", "srv@beta", "srv@gamma",
                                            "srv@postgres", "srv@~globals"}
    manifest = json.loads(next((tmp_path / "repo" / "srv@beta").glob("*/manifest.json"))
                          .read_text())
    assert manifest["database"] == "beta"
    # each database's manifest records its own run's stage timings, and stats shows them
    assert manifest["engine_meta"]["pipeline"]["bottleneck"] in BACKUP_STAGES
    assert manifest["engine_meta"]["pipeline"]["stage_seconds"]["read"] > 0
    stats = json.loads(run("stats", "-r", repo, "-t", "srv@beta", "-o", "json",
                           env=env).stdout)["targets"][0]
    assert stats["runs"][0]["bottleneck_stage"] == manifest["engine_meta"]["pipeline"][
        "bottleneck"]
    # each database is an ordinary target for the other commands
    run("verify", "-r", repo, "-t", "srv@~globals", env=env)
    run("prune", "-r", repo, "-t", "srv@beta", "--keep-last", "1", env=env)
    shown = json.loads(run("show", "-r", repo, "-t", "srv@beta", "-o", "json", env=env).stdout)
    assert shown["target"] == "srv@beta"


def test_pg_one_database_dropped_mid_run_is_partial_and_the_others_restore(
        pg_filled: postgres.Postgres, tmp_path: Path, env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = (tmp_path / "repo").as_uri()
    env = {**env, "SAFEHOLD_PASSWORD": postgres.PASSWORD}
    pg_filled.psql('CREATE DATABASE "doomed"')
    dropping("doomed", lambda: pg_filled.psql('DROP DATABASE "doomed" WITH (FORCE)'),
             monkeypatch)
    result = backup("-t", pg_url(pg_filled), "-r", repo, "--name", "srv",
                    "--databases", "alpha,doomed,gamma", env=env, code=Exit.PARTIAL)
    assert result["status"] == "partial"
    status = {d["database"]: d["status"] for d in result["databases"]}
    assert status == {"alpha": "completed", "doomed": "failed", "gamma": "completed"}
    failed = next(d for d in result["databases"] if d["database"] == "doomed")
    assert failed["error"]["code"] == Exit.NOT_FOUND and "doomed" in failed["error"]["message"]
    assert not list((tmp_path / "repo").glob("srv@doomed/*/manifest.json"))
    run("restore", "-r", repo, "-b", "latest", "--from", "srv", "--database", "gamma",
        "-t", pg_url(pg_filled, "gamma_copy"), "--yes", env=env)
    assert pg_filled.psql("SELECT count(*), min(v) FROM t", db="gamma_copy") == "300|gamma1"


def run_end(log: Path, *args: str, env: dict[str, str], code: int = 0) -> dict[str, Any]:
    """`safehold *args --log-file log` at INFO: the run's `run.end` record."""
    result = CliRunner().invoke(cli, ["--log-level", "info", "--log-file", str(log), *args],
                                env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    end = [json.loads(line) for line in log.read_text().splitlines()][-1]
    assert end["event"] == "run.end"
    return end


def test_pg_run_log_outcomes_ratio_stages_and_restore_sizes(
        pg_filled: postgres.Postgres, tmp_path: Path, env: dict[str, str]) -> None:
    """The run log of a multi-database run: its outcome is the result's status (every database
    missing is a failure, though the run reports each), and its sizes, ratio and stage timings
    are those of all its databases added up; a restore logs what it read."""
    repo, log = (tmp_path / "repo").as_uri(), tmp_path / "run.log"
    env = {**env, "SAFEHOLD_PASSWORD": postgres.PASSWORD}
    base = ["backup", "-t", pg_url(pg_filled), "-r", repo, "--name", "srv"]
    end = run_end(log, *base, "--databases", "alpha,beta", env=env)
    assert end["outcome"] == "success" and end["exit_code"] == 0
    shown = [json.loads(run("show", "-r", repo, "-t", f"srv@{db}", "-o", "json",
                            env=env).stdout) for db in ("alpha", "beta")]
    for m in shown:
        m["raw_bytes"] = sum(o["raw_size"] for o in m["objects"])
        m["stored_bytes"] = sum(o["stored_size"] for o in m["objects"])
    assert end["raw_bytes"] == sum(m["raw_bytes"] for m in shown) > 0
    assert end["stored_bytes"] == sum(m["stored_bytes"] for m in shown) > 0
    assert end["compression_ratio"] == round(end["raw_bytes"] / end["stored_bytes"], 3)
    assert end["throughput_mib_s"] > 0
    stages = [m["engine_meta"]["pipeline"]["stage_seconds"] for m in shown]
    assert set(end["stage_seconds"]) >= set(BACKUP_STAGES) and end["stage_seconds"]["read"] \
        == pytest.approx(stages[0]["read"] + stages[1]["read"], abs=1e-5)
    assert end["bottleneck"] == max((k for k in end["stage_seconds"] if k != "waiting"),
                                    key=lambda k: end["stage_seconds"][k])

    end = run_end(log, *base, "--databases", "alpha,nosuch_1", env=env, code=Exit.PARTIAL)
    assert end["outcome"] == "partial" and end["raw_bytes"] > 0
    end = run_end(log, *base, "--databases", "nosuch_1,nosuch_2", "-o", "json", env=env,
                  code=Exit.NOT_FOUND)
    assert end["outcome"] == "failure" and end["exit_code"] == Exit.NOT_FOUND
    assert end["raw_bytes"] == 0 and "compression_ratio" not in end  # nothing stored

    end = run_end(log, "restore", "-r", repo, "-b", "latest", "--from", "srv", "--database",
                  "beta", "-t", pg_url(pg_filled, "beta_sized"), "--yes", env=env)
    beta = next(m for m in shown if m["database"] == "beta")
    assert end["outcome"] == "success"
    assert (end["raw_bytes"], end["stored_bytes"]) == (beta["raw_bytes"], beta["stored_bytes"])
    assert end["compression_ratio"] == round(beta["raw_bytes"] / beta["stored_bytes"], 3)
    assert end["throughput_mib_s"] > 0 and end["stage_seconds"]["write"] > 0
    assert pg_filled.psql("SELECT count(*) FROM t", db="beta_sized") == "300"


def test_pg_roles_restore_into_a_new_server_and_log_in(
        pg_filled: postgres.Postgres, pg_new: postgres.Postgres, tmp_path: Path,
        env: dict[str, str]) -> None:
    repo = (tmp_path / "repo").as_uri()
    env = {**env, "SAFEHOLD_PASSWORD": postgres.PASSWORD}
    backup("-t", pg_url(pg_filled), "-r", repo, "--name", "srv", "--databases", "alpha",
           "--globals", env=env)
    out = run("restore", "-r", repo, "-b", "latest", "--from", "srv", "--globals",
              "-t", pg_url(pg_new), "-o", "json", env=env)
    assert json.loads(out.stdout)["skipped_existing"] == []
    conn = psycopg2.connect(host=pg_new.host, port=pg_new.port, user="app_user",
                            password="pw-ü1", dbname="postgres")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_has_role('app_user', 'app_reader', 'MEMBER'),"
                    " rolconnlimit FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (True, 7)
    conn.close()
    again = run("restore", "-r", repo, "-b", "latest", "--from", "srv", "--globals",
                "-t", pg_url(pg_new), env=env, ok=False)
    assert again.exit_code == Exit.CONFLICT, again.output
    assert "app_reader, app_user already exist" in again.output
    skipped = run("restore", "-r", repo, "-b", "latest", "--from", "srv", "--globals",
                  "--existing", "skip", "-t", pg_url(pg_new), "-o", "json", env=env)
    assert json.loads(skipped.stdout)["skipped_existing"] == ["app_reader", "app_user"]


# -- MariaDB ----------------------------------------------------------------------------------

def my_url(m: mariadb.MariaDB, db: str = "mysql") -> str:
    return f"mariadb://{m.user}@{m.host}:{m.port}/{db}"


@pytest.fixture(scope="module")
def maria_filled(maria_old: mariadb.MariaDB) -> mariadb.MariaDB:
    for db in DBS:
        maria_old.sql(f"CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id int PRIMARY KEY,"
                      f" v text); INSERT INTO `{db}`.t VALUES (1, '{db}'), (2, '{db}')")
    maria_old.sql("CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw';"
                  " GRANT SELECT ON `beta`.* TO 'app'@'%'")
    return maria_old


def test_mariadb_all_databases_partial_and_users_into_a_new_server(
        maria_filled: mariadb.MariaDB, maria_new: mariadb.MariaDB, tmp_path: Path,
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = (tmp_path / "repo").as_uri()
    env = {**env, "SAFEHOLD_PASSWORD": maria_filled.password}
    result = backup("-t", my_url(maria_filled), "-r", repo, "--all-databases", "--name", "m",
                    env=env)
    assert result["status"] == "success"
    assert [d["database"] for d in result["databases"]] == list(DBS)
    assert result["globals"]["status"] == "completed"
    maria_filled.sql("CREATE DATABASE doomed")
    dropping("doomed", lambda: maria_filled.sql("DROP DATABASE doomed"), monkeypatch)
    partial = backup("-t", my_url(maria_filled), "-r", repo, "--all-databases", "--name", "m",
                     env=env, code=Exit.PARTIAL)
    assert {d["database"]: d["status"] for d in partial["databases"]} == {
        "alpha": "completed", "beta": "completed", "doomed": "failed", "gamma": "completed"}
    text = run("backup", "-t", my_url(maria_filled), "-r", repo, "--name", "m2",
               "--databases", "alpha,nosuch", env=env, ok=False)
    assert text.exit_code == Exit.PARTIAL
    assert "failed     nosuch" in text.output and "partial: 1 of 2" in text.output

    new_env = {**env, "SAFEHOLD_PASSWORD": maria_new.password}
    out = run("restore", "-r", repo, "-b", "latest", "--from", "m", "--globals",
              "-t", my_url(maria_new), "-o", "json", env=new_env)
    # the account the restore runs as exists in every new server: it is left alone
    assert json.loads(out.stdout)["skipped_existing"] == [f"{maria_new.user}@127.0.0.1"]
    run("restore", "-r", repo, "-b", "latest", "--from", "m", "--database", "beta",
        "-t", my_url(maria_new, "beta"), "--yes", env=new_env)
    conn = pymysql.connect(host=maria_new.host, port=maria_new.port, user="app",
                           password="app-pw", database="beta")
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM t ORDER BY id")
        assert cur.fetchall() == (("beta",), ("beta",))
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("INSERT INTO t VALUES (3, 'x')")  # only SELECT was granted
    conn.close()
    again = run("restore", "-r", repo, "-b", "latest", "--from", "m", "--globals",
                "-t", my_url(maria_new), env=new_env, ok=False)
    assert again.exit_code == Exit.CONFLICT and "app@%" in again.output


# -- MongoDB (FerretDB) -----------------------------------------------------------------------

def test_mongodb_three_databases_three_backups(mongo_server: FerretDB, tmp_path: Path,
                                               env: dict[str, str]) -> None:
    client = mongo_server.client()
    names = [f"multi_{n}" for n in DBS]
    try:
        for n in names:
            client[n]["c"].insert_many([{"_id": i, "db": n} for i in range(50)])
        repo = (tmp_path / "repo").as_uri()
        url = f"mongodb://{mongo_server.host}:{mongo_server.port}/admin?directConnection=true"
        result = backup("-t", url, "-r", repo, "--databases", ",".join(names), "--name", "mg",
                        env=env)
        assert result["status"] == "success" and result["globals"] is None
        assert [d["target"] for d in result["databases"]] == [f"mg@{n}" for n in names]
        client.drop_database(names[1])
        run("restore", "-r", repo, "-b", "latest", "--from", "mg", "--database", names[1],
            "-t", url.replace("/admin?", f"/{names[1]}?"), "--yes", env=env)
        assert client[names[1]]["c"].count_documents({"db": names[1]}) == 50
    finally:
        for n in names:
            client.drop_database(n)
        client.close()


def test_mongodb_all_databases_of_a_fresh_server_leave_the_system_ones_out(
        tmp_path: Path, env: dict[str, str]) -> None:
    fresh = FerretDB()
    if not fresh.binary:
        unavailable("FerretDB", "binary not built (scripts/infra/30-ferretdb.sh)")
    for server in serve(fresh, "FerretDB"):
        client = server.client()
        for n in DBS:
            client[n]["c"].insert_one({"_id": 1, "db": n})
        client.close()
        url = f"mongodb://{server.host}:{server.port}/admin?directConnection=true"
        result = backup("-t", url, "-r", (tmp_path / "repo").as_uri(), "--all-databases",
                        "--name", "mg", env=env)
        assert [d["database"] for d in result["databases"]] == list(DBS)
        assert result["globals"] is None and result["status"] == "success"
        refused = run("backup", "-t", url, "-r", (tmp_path / "repo").as_uri(),
                      "--all-databases", "--globals", env=env, ok=False)
        assert refused.exit_code == Exit.USAGE and "MongoDB users" in refused.output


def test_a_database_name_of_any_characters_is_its_own_backup_and_restores(
        pg_filled: postgres.Postgres, tmp_path: Path, env: dict[str, str]) -> None:
    weird = 'we ird/ü"x'
    pg_filled.psql('CREATE DATABASE "we ird/ü""x"')
    try:
        pg_filled.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('odd')", db=weird)
        repo = (tmp_path / "repo").as_uri()
        env = {**env, "SAFEHOLD_PASSWORD": postgres.PASSWORD}
        result = backup("-t", pg_url(pg_filled), "-r", repo, "--name", "srv",
                        "--databases", f"alpha,{weird}", env=env)
        key = result["databases"][1]["target"]
        assert key.startswith("srv@we_ird___x~") and result["status"] == "success"
        manifest = json.loads(next((tmp_path / "repo" / key).glob("*/manifest.json"))
                              .read_text())
        assert manifest["database"] == weird
        run("restore", "-r", repo, "-b", "latest", "--from", "srv", "--database", weird,
            "-t", pg_url(pg_filled, "weird_copy"), "--yes", env=env)
        assert pg_filled.psql("SELECT v FROM t", db="weird_copy") == "odd"
    finally:
        pg_filled.psql('DROP DATABASE IF EXISTS "we ird/ü""x" WITH (FORCE)')


# -- the operator's runner (run-task) ---------------------------------------------------------

def test_run_task_partial_then_a_retry_reports_the_complete_ones_and_takes_the_rest(
        pg_filled: postgres.Postgres, tmp_path: Path) -> None:
    from tests.integration.test_run_task import Runner, key_dir

    keys = key_dir(tmp_path / "keys", "k1")
    (tmp_path / "pw").write_text(postgres.PASSWORD)
    task = {"kind": "backup", "target": "orders", "repository": {
                "url": (tmp_path / "repo").as_uri()},
            "database": {"engine": "postgresql", "url": pg_url(pg_filled),
                         "passwordFrom": {"file": str(tmp_path / "pw")}},
            "encryption": {"mode": "keys", "keyDir": str(keys)},
            "backupId": "20261202T120000.000000Z",
            "databases": ["alpha", "later", "gamma"], "globals": True}
    runner = Runner(tmp_path, {})
    first, _ = runner(task, code=Exit.PARTIAL)
    assert first.phase == "PartiallyFailed" and first.error is not None
    assert first.error.error_class == "PartialFailure"
    assert [(d.target, d.phase) for d in first.databases] == [
        ("orders@alpha", "Completed"), ("orders@later", "Failed"),
        ("orders@gamma", "Completed"), ("orders@~globals", "Completed")]
    assert all(d.backup_id == "20261202T120000.000000Z" for d in first.databases
               if d.phase == "Completed")
    pg_filled.psql('CREATE DATABASE "later"')
    try:
        second, _ = runner(task)
        assert second.phase == "Completed" and not second.error
        assert [d.phase for d in second.databases] == ["Completed"] * 4
        manifest = json.loads(
            (tmp_path / "repo" / "orders@later" / "20261202T120000.000000Z" / "manifest.json")
            .read_text())
        assert manifest["database"] == "later" and manifest["mac"]
        # a scheduled verify of the target covers every database's backups
        verified, _ = runner({"kind": "verify", "target": "orders", "repository":
                              task["repository"], "encryption": task["encryption"]})
        assert verified.phase == "Completed" and (verified.checked or 0) >= 4  # 0 before
        # deleting the Backup (deletionPolicy Delete) removes every database's part
        parts = [d.target for d in second.databases]
        deleted, _ = runner({"kind": "delete", "target": "orders", "repository":
                             task["repository"], "backupIds": ["20261202T120000.000000Z"],
                             "databases": parts})
        assert len(deleted.deleted) == 4 and deleted.freed_bytes
        assert not list((tmp_path / "repo").glob("orders@*/*/manifest.json"))
    finally:
        pg_filled.psql('DROP DATABASE IF EXISTS "later" WITH (FORCE)')


def test_a_partial_run_is_a_failure_notice_naming_the_database(
        maria_filled: mariadb.MariaDB, tmp_path: Path, slack_hook: Any) -> None:
    config = tmp_path / "notify.yaml"
    config.write_text("notifications:\n  slack:\n    webhook_url_env: TEST_SLACK_WEBHOOK\n")
    env = {"SAFEHOLD_CONFIG": str(config), "SAFEHOLD_KEY_FILE": "", "SAFEHOLD_KEY": "",
           "SAFEHOLD_PASSPHRASE": "", "SAFEHOLD_NO_ENCRYPTION": "1",
           "TEST_SLACK_WEBHOOK": slack_hook.url, "SAFEHOLD_PASSWORD": maria_filled.password}
    result = run("backup", "-t", my_url(maria_filled), "-r", (tmp_path / "repo").as_uri(),
                 "--name", "n", "--databases", "alpha,no_such_db", env=env, ok=False)
    assert result.exit_code == Exit.PARTIAL, result.output
    assert len(slack_hook.delivered) == 1
    text = json.dumps(slack_hook.delivered[0])
    assert "Backup failed" in text and "partial: 1 of 2 backed up" in text
    assert "no_such_db" in text


def test_a_config_target_names_its_databases(pg_filled: postgres.Postgres, tmp_path: Path,
                                             env: dict[str, str]) -> None:
    (tmp_path / "pw").write_text(postgres.PASSWORD)
    (tmp_path / "safehold.yaml").write_text(
        f"targets:\n  shop:\n    url: {pg_url(pg_filled)}\n    password_file: {tmp_path / 'pw'}\n"
        "    databases: [gamma, alpha]\n    globals: true\n")
    result = backup("-t", "shop", "-r", (tmp_path / "repo").as_uri(), env=env)
    assert [d["target"] for d in result["databases"]] == ["shop@gamma", "shop@alpha"]
    assert result["globals"]["target"] == "shop@~globals"
    alone = backup("-t", "shop", "-r", (tmp_path / "repo").as_uri(), "--no-globals", env=env)
    assert alone["globals"] is None


def test_run_task_restores_the_roles_into_a_new_server_and_refuses_a_second_time(
        pg_filled: postgres.Postgres, tmp_path: Path) -> None:
    from tests.integration.test_run_task import Runner, key_dir

    keys = key_dir(tmp_path / "keys", "k1")
    (tmp_path / "pw").write_text(postgres.PASSWORD)
    repo = {"url": (tmp_path / "repo").as_uri()}
    encryption = {"mode": "keys", "keyDir": str(keys)}
    runner = Runner(tmp_path, {})
    runner({"kind": "backup", "target": "orders", "repository": repo, "encryption": encryption,
            "database": {"engine": "postgresql", "url": pg_url(pg_filled),
                         "passwordFrom": {"file": str(tmp_path / "pw")}},
            "databases": ["alpha"], "globals": True})
    for fresh in _pg():
        restore = {"kind": "restore", "source": "orders@~globals", "repository": repo,
                   "encryption": encryption, "globals": True,
                   "database": {"engine": "postgresql", "url": pg_url(fresh),
                                "passwordFrom": {"file": str(tmp_path / "pw")}}}
        done, _ = runner(restore)
        assert done.phase == "Completed" and done.target == "orders@~globals"
        conn = psycopg2.connect(host=fresh.host, port=fresh.port, user="app_user",
                                password="pw-ü1", dbname="postgres")
        conn.close()
        again, _ = runner(restore, code=Exit.CONFLICT)
        assert again.error is not None and "app_reader, app_user already exist" in \
            again.error.message
