"""docs/cli.md's exit-code table, row by row: each documented code reached by a real scenario.

Every row runs the real CLI against a real SQLite database and a local repository (a real
PostgreSQL client for row 6, a real 256 KiB tmpfs for row 7, real signals for 130 and 143). The
table in docs/cli.md and ``safehold --help`` come from the same ``Exit`` enum; the first test
checks that the page lists exactly the codes tested here.

Portable (tests/infra/portable.py) but for row 12, which needs a real MariaDB; the tmpfs row
is skipped off Linux and the signal rows on Windows (by ``sys.platform``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.api.errors import Exit
from tests.infra.portable import LINUX, WINDOWS, not_portable, sqlite_url
from tests.integration.cli_helpers import make_db, run, run_json

ROOT = Path(__file__).resolve().parents[2]
Scenario = Callable[[Path, dict[str, str]], tuple[int, str]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": "",
            "SAFEHOLD_NO_ENCRYPTION": "1"}  # tests that encrypt pass a key and clear this


def _repo(tmp: Path) -> str:
    return (tmp / "repo").as_uri()


def _backup(tmp: Path, env: dict[str, str], *extra: str) -> dict[str, object]:
    db = tmp / "app.db"
    if not db.exists():
        make_db(db, rows=200)
    plain = [] if "--key-file" in extra else ["--no-encryption"]  # unencrypted by choice
    result: dict[str, object] = run_json("backup", "-t", sqlite_url(db), "-r", _repo(tmp),
                                         *plain, *extra, env=env)
    return result


def _cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    result = run(*args, env=env, ok=False)
    return result.exit_code, result.output


def _child(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "safehold.cli", "--log-level", "warning",
                             *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


# -- one scenario per row --------------------------------------------------------------------

def ok(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    _backup(tmp, env)
    return _cli("verify", "-r", _repo(tmp), env=env)


def bug(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    # A fault injected where no error is expected: an unexpected exception is a bug.
    from safehold.engines.sqlite.engine import SQLiteEngine

    def broken(self: object) -> int:
        raise RuntimeError("injected fault")

    original = SQLiteEngine.estimate_size
    SQLiteEngine.estimate_size = broken  # type: ignore[method-assign,assignment]
    try:
        make_db(tmp / "app.db", rows=10)
        return _cli("backup", "-t", sqlite_url(tmp / 'app.db'), "-r", _repo(tmp),
                    "--no-encryption", env=env)
    finally:
        SQLiteEngine.estimate_size = original  # type: ignore[method-assign]


def usage(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    _backup(tmp, env)
    return _cli("restore", "-r", _repo(tmp), "-b", "latest", "-t",
                sqlite_url(tmp / 'new.db'), "--include", ",,", env=env)


def not_found(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    return _cli("verify", "-r", (tmp / "no-such-repo").as_uri(), env=env)


def corrupt(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    backup_id = _backup(tmp, env)["backup_id"]
    (tmp / "repo" / "app" / str(backup_id) / "manifest.json").write_text("{not json")
    return _cli("verify", "-r", _repo(tmp), env=env)


def key(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    env = {**env, "SAFEHOLD_NO_ENCRYPTION": ""}
    run("keys", "generate", "--out", str(tmp / "k"), env=env)
    _backup(tmp, env, "--key-file", str(tmp / "k"))
    return _cli("verify", "-r", _repo(tmp), env=env)  # no key given


def database(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return _cli("check", "-t", f"postgresql://backup@127.0.0.1:{port}/orders",
                "--connect-timeout", "2", env=env)


def storage(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    """A real full disk: a 256 KiB tmpfs in a private mount namespace holds the repository."""
    if not LINUX:
        pytest.skip("Linux only: a tmpfs in a user and mount namespace (util-linux unshare)")
    assert shutil.which("unshare"), "util-linux unshare is needed for the full-disk scenario"
    db = tmp / "big.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO big (data) VALUES (?)",
                         ((os.urandom(2000),) for _ in range(1000)))  # ~2 MiB, incompressible
    mnt = tmp / "small"
    mnt.mkdir()
    # The free-space pre-check would refuse this backup before it starts (see test_cli_sqlite);
    # without it, as on object stores that report no free space, the disk fills mid-write.
    cli = ("from safehold.storage.local import LocalStorage;"
           " LocalStorage.free_space = lambda self: None;"
           " from safehold.cli.main import main; main()")
    script = (f"mount -t tmpfs -o size=256k tmpfs {mnt} && exec {sys.executable} -c '{cli}'"
              f" --log-level error backup -t {sqlite_url(db)} -r {mnt.as_uri()}/repo -c none"
              " --no-encryption")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def unsupported(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    _backup(tmp, env)
    (tmp / "repo" / "safehold-repo.json").write_text(json.dumps({"format": 99}))
    return _cli("backup", "-t", sqlite_url(tmp / 'app.db'), "-r", _repo(tmp),
                    "--no-encryption", env=env)


def conflict(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    _backup(tmp, env)
    return _cli("restore", "-r", _repo(tmp), "-b", "latest", "-t", sqlite_url(tmp / 'app.db'),
                "--conflict", "fail", env=env)


def aborted(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    _backup(tmp, env)
    return _cli("restore", "-r", _repo(tmp), "-b", "latest", "-t", sqlite_url(tmp / 'app.db'),
                env=env)


def locked(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    """Another writer holds the target's lease: a backup of the same target exits 11."""
    from safehold.repository.lease import Holder, Lease
    from safehold.storage.local import LocalStorage

    _backup(tmp, env)
    lease = Lease(LocalStorage(tmp / "repo"), "app",
                  Holder.current("backup", command="safehold backup (the other writer)"))
    lease.acquire()
    try:
        return _cli("backup", "-t", sqlite_url(tmp / 'app.db'), "-r", _repo(tmp), env=env)
    finally:
        lease.release()


def _signalled(tmp: Path, env: dict[str, str], sig: signal.Signals) -> tuple[int, str]:
    """Signal a backup of a ~60 MB database once it has started writing; it must stop cleanly."""
    if WINDOWS:  # send_signal takes only CTRL_C_EVENT/CTRL_BREAK_EVENT there, SIGTERM kills
        pytest.skip(f"POSIX only: {sig.name} to a child process and its exit status")
    db = tmp / "big.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, data BLOB)")
        conn.executemany("INSERT INTO big (data) VALUES (?)",
                         ((os.urandom(4000),) for _ in range(15000)))
    target = tmp / "repo" / "big"
    proc = _child(["backup", "-t", sqlite_url(db), "-r", _repo(tmp), "--no-encryption",
                   "-c", "bzip2:9",
                   "--chunk-size", "1MiB"], env)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any(target.glob("*/data/*")) or any(target.glob("*/data/.tmp-*")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the backup ended before it could be signalled"
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not list(target.glob("*/manifest.json")), "an interrupted backup became visible"
    listed = run_json("list", "-r", _repo(tmp), env=env)["backups"]
    assert [b for b in listed if b["type"] not in ("incomplete",)] == []
    return proc.returncode, out


def partial(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    """A target of two databases on a real MariaDB, one of them missing: exit 12."""
    db = _REQUEST[0].getfixturevalue("mariadb_database")
    maria = _REQUEST[0].getfixturevalue("mariadb_server")
    url = f"mariadb://{maria.user}@{maria.host}:{maria.port}/{db}"
    return _cli("backup", "-t", url, "-r", _repo(tmp), "--name", "m",
                "--databases", f"{db},no_such_db", env={**env,
                                                            "SAFEHOLD_PASSWORD": maria.password})


_REQUEST: list[pytest.FixtureRequest] = []


def interrupted(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    return _signalled(tmp, env, signal.SIGINT)


def terminated(tmp: Path, env: dict[str, str]) -> tuple[int, str]:
    return _signalled(tmp, env, signal.SIGTERM)


ROWS: dict[Exit, tuple[Scenario, str]] = {
    Exit.OK: (ok, "verified"),
    Exit.FAILED: (bug, "this is a bug"),
    Exit.USAGE: (usage, "names no table"),
    Exit.NOT_FOUND: (not_found, "no-such-repo"),
    Exit.CORRUPT: (corrupt, "manifest.json is damaged"),
    Exit.KEY: (key, "encrypted"),
    Exit.DATABASE: (database, "Connection refused"),
    Exit.STORAGE: (storage, "No space left"),
    Exit.UNSUPPORTED: (unsupported, "upgrade safehold"),
    Exit.CONFLICT: (conflict, "exists"),
    Exit.ABORTED: (aborted, "--yes"),
    Exit.LOCKED: (locked, "lease"),
    Exit.PARTIAL: (partial, "partial: 1 of 2"),
    Exit.INTERRUPTED: (interrupted, "interrupted (SIGINT)"),
    Exit.TERMINATED: (terminated, "terminated (SIGTERM)"),
}


def _params() -> list[object]:
    server = not_portable("a real MariaDB server")
    return [pytest.param(code, scenario, expected, id=f"{code.value}-{code.name}",
                         marks=[server] if code is Exit.PARTIAL else [])
            for code, (scenario, expected) in ROWS.items()]


def test_the_documented_table_is_the_tested_one() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    table = page[page.index("## Exit codes"):]
    documented = [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert documented == [int(c) for c in ROWS]


@pytest.mark.parametrize(("code", "scenario", "expected"), _params())
def test_exit_code(tmp_path: Path, env: dict[str, str], code: Exit, scenario: Scenario,
                   expected: str, request: pytest.FixtureRequest) -> None:
    _REQUEST[:] = [request]  # scenarios that need a real server take it from here
    got, output = scenario(tmp_path, env)
    assert got == code, f"expected exit {int(code)} ({code.name}), got {got}:\n{output}"
    assert expected in output, output
    assert "Traceback" not in output and "pydantic" not in output, output
