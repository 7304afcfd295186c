"""The CLI starts without the heavy libraries its command does not use (issue 10, start-up).

A regression guard, not a timing test: ``import safehold.cli.main`` in a fresh interpreter must
not import a database driver, a cloud SDK, kubernetes, rich or slack_sdk; the modules that need
them import them when they run. ``make bench --only startup`` prints what start-up costs.
"""

from __future__ import annotations

import json
import subprocess
import sys

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
