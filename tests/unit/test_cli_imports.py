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
from typing import Any

HEAVY = ("boto3", "botocore", "azure", "google", "kubernetes", "kopf", "psycopg", "psycopg2",
         "pymysql", "pymongo", "rich", "slack_sdk")


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def _imported_by(statement: str) -> set[str]:
    return {name.split(".")[0] for name in _modules_after(statement)}


def test_commands_load_only_when_they_run() -> None:
    """`safehold backup` does not import stats, audit or schedule (nor --version any)."""
    commands = {m for m in _modules_after("import safehold.cli.main")
                if m.startswith("safehold.cli.") and m.endswith(("_cmds", "run_task"))}
    assert not commands, f"importing safehold.cli.main imported {sorted(commands)}"
    argv = ["safehold", "backup", "--help"]
    statement = (f"import sys\nsys.argv = {argv!r}\nfrom safehold.cli.main import main\n"
                 "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0\n")
    from safehold.cli.main import LAZY_COMMANDS

    others = {ref.split(":")[0] for ref in LAZY_COMMANDS.values()} - {"safehold.cli.backup_cmds"}
    loaded = _modules_after(statement)
    assert "safehold.cli.backup_cmds" in loaded and not loaded & others, loaded & others


def test_the_lazy_command_table_matches_the_modules() -> None:
    """Every command a module offers (its COMMANDS) is in LAZY_COMMANDS under its own name."""
    import importlib

    from safehold.cli.main import LAZY_COMMANDS

    modules = {ref.split(":")[0] for ref in LAZY_COMMANDS.values()}
    offered = {}
    for name in modules:
        module = importlib.import_module(name)
        for command in getattr(module, "COMMANDS", []):
            offered[command.name] = command
    from safehold.cli.run_task import run_task

    offered[run_task.name] = run_task
    assert set(offered) == set(LAZY_COMMANDS)
    for name, ref in LAZY_COMMANDS.items():
        module, attribute = ref.split(":")
        assert getattr(importlib.import_module(module), attribute) is offered[name], name


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


def test_backup_and_restore_commands_load_no_yaml_and_build_no_model() -> None:
    """Loading the backup and restore commands with a PostgreSQL engine neither reads YAML (no
    config file here) nor builds a pydantic model's validator: each model is built when it is
    first used (``defer_build``), so a run pays only for the models it needs."""
    code = ("import json, sys\n"
            "import safehold.cli.main, safehold.cli.backup_cmds, safehold.cli.restore_cmds\n"
            "import safehold.engines.postgres.engine\n"
            "from pydantic import BaseModel\n"
            "def subclasses(cls):\n"
            "    for sub in cls.__subclasses__():\n"
            "        yield sub\n"
            "        yield from subclasses(sub)\n"
            "built = sorted({f'{m.__module__}.{m.__qualname__}'\n"
            "                for m in subclasses(BaseModel)\n"
            "                if m.__module__.startswith('safehold.')\n"
            "                and m.__pydantic_complete__})\n"
            "print(json.dumps({'yaml': 'yaml' in sys.modules, 'built': built}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.splitlines()[-1])
    assert not found["yaml"], "importing the commands imported yaml: import it where a file is read"
    assert not found["built"], (f"models built at import: {found['built']}; give them"
                                " ConfigDict(defer_build=True)")


def test_a_deferred_model_still_validates_on_first_use() -> None:
    # the guard above is not satisfied by models that never build: the first use builds them
    from safehold.api.manifest import StageTimings

    timings = StageTimings.model_validate({"stage_seconds": {"read": 1.5}, "cores_busy": 0.5})
    assert timings.stage_seconds == {"read": 1.5}
    assert StageTimings.__pydantic_complete__


def test_a_deferred_model_first_used_by_many_threads_at_once_validates_in_each() -> None:
    """A PostgreSQL backup records its objects (ObjectRecord, built on first use) from a thread
    per pg_dump. pydantic >= 2.14 (pyproject.toml) builds a deferred model under a lock; with
    2.13 this failed in about one round of ten ("has no attribute '__pydantic_core_schema__'",
    or a parent's validator used), with threads switching as often as the interpreter can."""
    import threading

    from pydantic import create_model

    from safehold.api import manifest

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    failed: list[Exception] = []
    try:
        for round_ in range(40):
            fields: dict[str, Any] = {f"f{i}": (int, 0) for i in range(60)}
            # extra="forbid" and defer_build from manifest._Model, as ObjectRecord
            fresh = create_model(f"Fresh{round_}", __base__=manifest._Model, name=(str, ...),
                                 **fields)
            start = threading.Barrier(16)

            def use(model: type[manifest._Model] = fresh,
                    start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    model(name="data/0000", f1=2)
                except Exception as exc:  # collected for the assertion
                    failed.append(exc)

            threads = [threading.Thread(target=use) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failed, failed[:3]


def test_the_cli_does_not_scan_for_pydantic_plugins() -> None:
    """pydantic scans every installed distribution's entry points for plugins when it builds
    its first model (13 ms here); the console script turns that off (safehold.cli.entry)."""
    code = ("import os, sys\nos.environ.pop('PYDANTIC_DISABLE_PLUGINS', None)\n"
            "sys.argv = ['safehold', '--version']\nfrom safehold.cli.entry import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "import pydantic, pydantic.plugin._loader as loader\n"
            "class Model(pydantic.BaseModel):\n    x: int\n"
            "Model(x=1)\nprint(loader._plugins is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "True", out.stdout
    scanned = code.replace("from safehold.cli.entry import main", "main = lambda: None")
    out = subprocess.run([sys.executable, "-c", scanned], capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines()[-1] == "False"  # without it, pydantic scans
