"""The CLI starts without the heavy libraries its command does not use (issue 10, start-up).

A regression guard, not a timing test: ``import safehold.cli.main`` in a fresh interpreter must
not import a database driver, a cloud SDK, kubernetes, rich or slack_sdk, nor may a SQLite backup;
the modules that need them import them when they run.
``make bench BENCH_ARGS="--only startup"`` prints what start-up costs.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

HEAVY = ("boto3", "botocore", "azure", "google", "kubernetes", "kopf", "psycopg", "psycopg2",
         "pymysql", "pymongo", "rich", "slack_sdk")


def _imported_by(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


def test_cli_main_imports_no_driver_or_sdk() -> None:
    pulled = _imported_by("import safehold.cli.main") & set(HEAVY)
    assert not pulled, f"importing safehold.cli.main pulled in {sorted(pulled)}: import lazily"


def test_guard_sees_an_eager_import() -> None:
    # the check itself works: a module that is imported shows up
    assert "slack_sdk" in _imported_by("import safehold.notify.slack_retry")


def test_sqlite_backup_imports_no_driver_or_sdk(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    key = tmp_path / "k.key"
    subprocess.run([sys.executable, "-m", "safehold.cli", "keys", "generate", "--out", str(key)],
                   check=True, capture_output=True)
    argv = ["safehold", "--log-level", "error", "backup", "-t", f"sqlite://{db}", "-r",
            (tmp_path / "repo").as_uri(), "--key-file", str(key)]
    statement = (f"import sys\nsys.argv = {argv!r}\nfrom safehold.cli.main import main\n"
                 "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code")
    pulled = _imported_by(statement) & set(HEAVY)
    assert not pulled, f"a SQLite backup pulled in {sorted(pulled)}: import lazily"
