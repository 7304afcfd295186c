"""The image cache key: an unchanged input reuses the cached archive, any change rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.images import input_key
from tests.infra.procs import ServerError


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
