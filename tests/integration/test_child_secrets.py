"""No repository key, passphrase or cloud credential reaches a child process, and a database
password only through the channel chosen for its tool (docs/security.md, "Secrets of child
processes").

Every real child is read through /proc while it runs: for the PostgreSQL tools a wrapper
directory (``SAFEHOLD_PG_BINDIR``) puts a shell script in front of each tool that copies its
own ``/proc/$$/environ``, ``/proc/$$/cmdline`` and the passfile it was handed, then ``exec``s
the real tool in the same process with the same environment and descriptors; for the MariaDB
client the test reads ``/proc/PID`` of the running client itself.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from safehold.engines import childenv
from safehold.engines.base import ConnectionOptions
from safehold.engines.mysql import tools as mysql_tools
from safehold.engines.mysql.conn import parse_target
from safehold.engines.postgres import tools as pg_tools
from tests.infra.mariadb import MariaDB
from tests.infra.postgres import Postgres
from tests.integration.cli_helpers import run

CANARY = f"canary-{uuid.uuid4().hex}"
KEY = base64.b64encode(b"K" * 32).decode()
KEY2 = base64.b64encode(b"L" * 32).decode()
PG_SETTINGS = {"PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGAPPNAME", "PGCONNECT_TIMEOUT",
               "PGPASSFILE"}


def secret_env(tmp_path: Path, db_password: str) -> dict[str, str]:
    """Every secret Safehold may hold while it runs, each with a value no child may see."""
    key_file = tmp_path / f"key-{CANARY}"
    key_file.write_text(KEY + "\n")
    config = tmp_path / "safehold.yaml"
    config.write_text("{}\n")
    return {
        "SAFEHOLD_CONFIG": str(config), "SAFEHOLD_KEY_FILE": str(key_file),
        "SAFEHOLD_KEY": KEY2, "SAFEHOLD_PASSPHRASE": f"phrase-{CANARY}",
        "SAFEHOLD_PASSWORD": db_password,
        "AWS_ACCESS_KEY_ID": f"AKIA{CANARY}", "AWS_SECRET_ACCESS_KEY": f"aws-{CANARY}",
        "AWS_SESSION_TOKEN": f"tok-{CANARY}",
        "AZURE_STORAGE_CONNECTION_STRING": f"AccountKey=az-{CANARY}",
        "AZURE_CLIENT_SECRET": f"azc-{CANARY}",
        "GOOGLE_APPLICATION_CREDENTIALS": f"/run/gcp-{CANARY}.json",
        "PGPASSWORD": f"pgpw-{CANARY}", "MYSQL_PWD": f"mypw-{CANARY}",
        "PGOPTIONS": f"-c application_name={CANARY}",
    }


def forbidden(env: dict[str, str], db_password: str) -> list[str]:
    """Strings that must not appear in a child's environment or command line."""
    values = [v for k, v in env.items() if k != "SAFEHOLD_CONFIG"]
    return [*values, KEY, KEY2, CANARY, db_password]


def wrappers(tmp_path: Path, real: Path) -> tuple[Path, Path]:
    """A bin directory whose pg_dump/pg_restore/psql record their /proc entries, then exec
    the real tool; and the directory the records land in (one sub-directory per process)."""
    bindir, records = tmp_path / "bin", tmp_path / "records"
    bindir.mkdir()
    records.mkdir()
    for tool in pg_tools.TOOLS:
        script = bindir / tool
        script.write_text(f"""#!/bin/sh
d={records}/$$
mkdir -p "$d"
cp /proc/$$/environ "$d/environ"
cp /proc/$$/cmdline "$d/cmdline"
case "$PGPASSFILE" in
  /dev/fd/*) cat "$PGPASSFILE" > "$d/passfile"; stat -L -c %a "$PGPASSFILE" > "$d/passmode";;
esac
exec {real / tool} "$@"
""")
        script.chmod(0o755)
    return bindir, records


def read_records(records: Path) -> list[dict[str, Any]]:
    out = []
    for d in sorted(records.iterdir()):
        environ = dict(item.split("=", 1) for item in
                       (d / "environ").read_text().split("\0") if item)
        argv = (d / "cmdline").read_text().split("\0")
        out.append({"environ": environ, "argv": argv, "raw": (d / "environ").read_bytes()
                    + (d / "cmdline").read_bytes(),
                    "passfile": (d / "passfile").read_text() if (d / "passfile").exists()
                    else None,
                    "passmode": (d / "passmode").read_text().strip()
                    if (d / "passmode").exists() else None})
    return out


def test_pg_tools_get_the_password_in_a_0600_passfile_and_no_other_secret(
        pg18: Postgres, tmp_path: Path) -> None:
    pg = pg18
    password = f"Uq:{uuid.uuid4().hex[:8]}\\z"  # ':' and '\' need escaping in a passfile
    role, src = f"dumper_{uuid.uuid4().hex[:6]}", f"s_{uuid.uuid4().hex[:8]}"
    pg.psql(f"CREATE ROLE {role} SUPERUSER LOGIN PASSWORD '{password}'")
    pg.psql(f"CREATE DATABASE {src}")
    pg.psql("CREATE TABLE t AS SELECT i, md5(i::text) m FROM generate_series(1, 1000) i",
            db=src)
    bindir, records = wrappers(tmp_path, Path(pg.tool("pg_dump")).parent)
    secrets = secret_env(tmp_path, password)
    env = {**secrets, "SAFEHOLD_PG_BINDIR": str(bindir)}
    repo = (tmp_path / "repo").as_uri()
    url = f"postgresql://{role}@{pg.host}:{pg.port}/"
    try:
        run("backup", "-t", url + src, "-r", repo, env=env)
        run("restore", "-t", url + src + "_whole", "-r", repo, "-b", "latest", "--from", src,
            "--yes", env=env)
        run("restore", "-t", url + src + "_part", "-r", repo, "-b", "latest", "--from", src,
            "--include", "public.t", "--yes", env=env)
        assert pg.psql("SELECT count(*) FROM t", db=src + "_part").strip() == "1000"
    finally:
        for db in (src, src + "_whole", src + "_part"):
            pg.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        pg.psql(f"DROP ROLE {role}")
    seen = read_records(records)
    started = {Path(r["argv"][1]).name for r in seen}  # argv[0] is /bin/sh
    assert {"pg_dump", "pg_restore", "psql"} <= started
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    for record in seen:
        for secret in forbidden(secrets, password):
            assert secret.encode() not in record["raw"], (secret, record["argv"])
        assert not any(k.startswith(("SAFEHOLD_", "AWS_", "AZURE_", "GOOGLE_"))
                       or k in ("PGPASSWORD", "MYSQL_PWD") for k in record["environ"])
        # the inherited PGOPTIONS never passes; the whole restore's staging loads get their own
        assert record["environ"].get("PGOPTIONS") in (None, "-c synchronous_commit=off")
        extra = {k for k in record["environ"] if k.startswith("PG")} - PG_SETTINGS
        assert extra <= {"PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGOPTIONS"}, extra
        if "--version" in record["argv"] or pg_tools.PROBE in record["argv"]:
            continue  # the version, TLS and compression probes connect nowhere: no password
        assert record["environ"]["PGPASSFILE"].startswith("/dev/fd/")
        assert record["passfile"] == f"*:*:*:*:{escaped}\n"
        assert record["passmode"] == "600"


def test_mariadb_client_gets_the_password_only_in_its_defaults_file(
        mariadb_server: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = f"p\"w'#\\ {uuid.uuid4().hex[:6]};x"  # quotes, comment sign, backslash, space
    user = f"u_{uuid.uuid4().hex[:6]}"
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    mariadb_server.sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{quoted}'")
    env = secret_env(tmp_path, password)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    target = parse_target(f"mariadb://{user}@{mariadb_server.host}:{mariadb_server.port}/mysql",
                          ConnectionOptions(password=password))
    proc = mysql_tools.start("mariadb", target, ["--batch", "--skip-column-names"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        proc_dir = Path(f"/proc/{proc.pid}")  # the client waits on stdin: it is running
        # once it has exec'd: during execve (a loaded machine makes it long) the kernel shows
        # an empty command line
        deadline = time.monotonic() + 30
        while True:
            cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
            options_given = [a for a in cmdline if a.startswith(b"--defaults-file=")]
            if options_given or proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        environ = (proc_dir / "environ").read_bytes()
        if not options_given:  # it ended already (a zombie has no command line): say why
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"the client ended early ({proc.returncode}): {err.decode()!r};"
                        f" its command line read {cmdline!r}")
        option = options_given[0]
        fd_path = proc_dir / "fd" / option.decode().rsplit("/", 1)[1]
        options = fd_path.read_text()
        options_mode = stat.S_IMODE(os.stat(fd_path).st_mode)
        out, err = proc.communicate(b"SELECT CURRENT_USER();\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mariadb_server.sql(f"DROP USER '{user}'@'127.0.0.1'")
    assert proc.returncode == 0, err
    assert out.decode().strip() == f"{user}@127.0.0.1"  # logged in with the file's password
    for secret in forbidden(env, password):
        assert secret.encode() not in environ + b"\0".join(cmdline), secret
    assert set(dict(i.split(b"=", 1) for i in environ.split(b"\0") if i)) <= \
        {k.encode() for k in os.environ if k in childenv.ALLOWED or k.startswith("LC_")}
    assert options_mode == 0o600 and "password=" in options
    assert cmdline[1] == option  # --defaults-file must come first


def test_mariadb_backup_starts_only_the_client_and_restore_nothing(
        mariadb_server: MariaDB, mariadb_database: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A MySQL backup reads its rows in `mariadb` client sessions (each handed the password in
    its option file only: the test above) and asks the client's version; nothing else, and no
    secret on any command line or in any environment. A restore works through PyMySQL."""
    started: list[tuple[list[str], dict[str, str]]] = []
    real = subprocess.Popen

    def spy(argv: Any, *a: Any, **kw: Any) -> Any:
        started.append((list(argv), dict(kw.get("env") or {})))
        return real(argv, *a, **kw)

    mariadb_server.sql("CREATE TABLE t (i INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)",
                       db=mariadb_database)
    env = secret_env(tmp_path, mariadb_server.password)
    repo = (tmp_path / "repo").as_uri()
    url = f"mariadb://{mariadb_server.user}@{mariadb_server.host}:{mariadb_server.port}/"
    try:
        with monkeypatch.context() as patch:
            patch.setattr(subprocess, "Popen", spy)
            run("backup", "-t", url + mariadb_database, "-r", repo, "--jobs", "2", env=env)
            by_backup = list(started)
            started.clear()
            run("restore", "-t", url + mariadb_database + "_r", "-r", repo, "-b", "latest",
                "--from", mariadb_database, "--yes", env=env)
        assert mariadb_server.sql("SELECT count(*) FROM t", db=mariadb_database + "_r") == "2"
    finally:
        mariadb_server.sql(f"DROP DATABASE IF EXISTS `{mariadb_database}_r`")
    assert started == []  # the restore
    assert all(Path(argv[0]).name == "mariadb" for argv, _ in by_backup), by_backup
    sessions = [argv for argv, _ in by_backup if argv[1:] != ["--version"]]
    assert len(sessions) == 2 and len(by_backup) == 3, by_backup
    assert all(argv[1].startswith("--defaults-file=/dev/fd/") for argv in sessions)
    for argv, child_env in by_backup:
        seen = "\0".join([*argv, *(f"{k}={v}" for k, v in child_env.items())])
        for secret in forbidden(env, mariadb_server.password):
            assert secret not in seen, (secret, argv)


def test_a_password_in_the_target_url_is_warned_about(pg18: Postgres, tmp_path: Path) -> None:
    config = tmp_path / "safehold.yaml"
    in_url = f"postgresql://{pg18.user}:{pg18.password}@{pg18.host}:{pg18.port}/postgres"
    config.write_text(f"targets:\n  app: {{url: '{in_url}'}}\n"
                      f"  safe: {{url: '{in_url.replace(':' + pg18.password, '')}'}}\n")
    env = {"SAFEHOLD_CONFIG": str(config), "SAFEHOLD_PASSWORD": "", "PGPASSWORD": ""}
    on_command_line = run("check", "-t", in_url, env=env).stderr
    assert "process list" in on_command_line
    assert "--password-file FILE, SAFEHOLD_PASSWORD" in on_command_line
    in_config = run("check", "-t", "app", env=env).stderr
    assert "'app' in the config file" in in_config and "password_file" in in_config
    safe = run("check", "-t", "safe", env={**env, "SAFEHOLD_PASSWORD": pg18.password}).stderr
    assert "password" not in safe
