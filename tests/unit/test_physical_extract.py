"""A base backup's tar unpacked safely on every Python: the stdlib ``data`` filter where it
exists, :func:`plain_members` (the same rules) where it does not (Debian 12's 3.11.2, the
runner image's Python)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from safehold.engines.base import EngineError
from safehold.engines.postgres import physical_restore
from safehold.engines.postgres.physical_restore import extract


def _tar(*add: Callable[[tarfile.TarFile], None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for step in add:
            step(tar)
    return out.getvalue()


def _file(name: str, data: bytes = b"x", mode: int = 0o600) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))
    return add


def _link(name: str, target: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        tar.addfile(info)
    return add


@pytest.fixture(params=["stdlib filter", "plain_members"])
def without_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each case twice: with the stdlib's data filter and as on a Python without it."""
    if request.param == "plain_members":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        return True
    if not hasattr(tarfile, "data_filter"):
        pytest.fail("this Python has no tarfile data filter: the stdlib case cannot run")
    return False


def test_files_and_directories_unpack_without_dangerous_mode_bits(
        tmp_path: Path, without_filter: bool) -> None:
    data = _tar(_file("PG_VERSION", b"15\n"), _file("global/pg_control", b"c", mode=0o4777))
    extract(iter([data]), tmp_path / "d")
    assert (tmp_path / "d" / "PG_VERSION").read_bytes() == b"15\n"
    assert (tmp_path / "d" / "global" / "pg_control").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(("member", "stdlib_keeps_it_inside"), [
    (_file("../escaped"), False),
    # the stdlib filter strips the leading slash: the file lands inside, which is safe too
    (_file("/tmp/absolute-from-a-forged-backup"), True),
    (_link("pg_tblspc/16384", "/etc"), False),
])
def test_a_member_leaving_the_directory_is_refused(
        tmp_path: Path, without_filter: bool, member: Callable[[tarfile.TarFile], None],
        stdlib_keeps_it_inside: bool) -> None:
    outside = Path("/tmp/absolute-from-a-forged-backup")
    outside.unlink(missing_ok=True)
    try:
        extract(iter([_tar(_file("PG_VERSION"), member)]), tmp_path / "d")
    except (EngineError, tarfile.FilterError):
        refused = True
    else:
        refused = False
    assert refused or (stdlib_keeps_it_inside and not without_filter and (
        tmp_path / "d" / "tmp" / "absolute-from-a-forged-backup").is_file())
    assert not (tmp_path / "escaped").exists() and not outside.exists()
    assert not (tmp_path / "d" / "pg_tblspc" / "16384").is_symlink()


def test_plain_members_is_what_runs_without_the_filter(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    seen: list[str] = []
    real = physical_restore.plain_members

    def spy(tar: tarfile.TarFile, into: Path):  # type: ignore[no-untyped-def]
        for member in real(tar, into):
            seen.append(member.name)
            yield member

    monkeypatch.setattr(physical_restore, "plain_members", spy)
    extract(iter([_tar(_file("PG_VERSION"))]), tmp_path / "d")
    assert seen == ["PG_VERSION"]


@pytest.mark.parametrize("existed", [False, True])
def test_a_failure_after_the_chain_is_in_place_leaves_no_data_directory(
        tmp_path: Path, existed: bool) -> None:
    """The chain restored, then the WAL bundle fails: what was written goes, an empty
    directory the user gave stays empty (a retry finds it as before)."""
    from safehold.pipeline.physical import new_data_dir

    data = tmp_path / "pgdata"
    if existed:
        data.mkdir()
    with pytest.raises(OSError, match="injected"), new_data_dir(data):
        data.mkdir(exist_ok=True)
        (data / "PG_VERSION").write_text("15\n")  # the chain, moved into place
        raise OSError("injected: the WAL bundle failed")
    assert (data.is_dir() and not any(data.iterdir())) if existed else not data.exists()


def test_a_refused_destination_is_left_as_it_was(tmp_path: Path) -> None:
    """A data directory that was not empty (the restore refuses it) is never touched."""
    from safehold.pipeline.physical import new_data_dir

    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "theirs").write_text("keep")
    with pytest.raises(ValueError), new_data_dir(data):
        raise ValueError("the destination is not empty")
    assert (data / "theirs").read_text() == "keep"
