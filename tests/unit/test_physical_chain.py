"""Methods and physical chains, from manifests alone: what may chain onto what, and every
break a restore must find before it starts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from safehold.api.manifest import Manifest, method_of
from safehold.engines.base import Capabilities, UnsupportedError, check_request
from safehold.engines.postgres.engine import PostgresEngine
from safehold.engines.postgres.physical import TarTap
from safehold.engines.postgres.physical_restore import chain_problems

T = datetime(2026, 12, 1, tzinfo=UTC)
META = {"method": "physical", "system_identifier": "7400000000000000001", "pg_major": 18,
        "timeline": 1}


def manifest(backup_id: str, kind: str = "full", parent: str | None = None,
             root: str | None = None, **meta: Any) -> Manifest:
    return Manifest(backup_id=backup_id, target="main", engine="postgresql", type=kind,
                    parent_id=parent, chain_id=root or backup_id, started_at=T, finished_at=T,
                    compression="zstd:3", chunk_size=1 << 22, engine_meta={**META, **meta})


class _Engine:
    name = "postgresql"
    capabilities = PostgresEngine.capabilities


def test_a_logical_postgresql_incremental_is_refused_with_what_to_run() -> None:
    with pytest.raises(UnsupportedError) as err:
        check_request(_Engine(), "incremental")  # type: ignore[arg-type]
    assert "safehold backup --method physical" in str(err.value)
    assert "--type incremental" in str(err.value)
    check_request(_Engine(), "differential", method="physical")  # type: ignore[arg-type]


def test_an_engine_without_physical_backups_says_so() -> None:
    class Sqlite:
        name = "sqlite"
        capabilities = Capabilities(backup_types=("full", "incremental"))

    with pytest.raises(UnsupportedError, match="no physical backups; use --method logical"):
        check_request(Sqlite(), "full", method="physical")  # type: ignore[arg-type]


def test_method_of_old_manifests_is_logical() -> None:
    assert method_of(manifest("a", method="")) == "logical"
    assert method_of(manifest("a")) == "physical"


def test_a_sound_chain_has_no_problems() -> None:
    chain = [manifest("f"), manifest("i1", "incremental", "f", "f"),
             manifest("i2", "incremental", "i1", "f")]
    assert chain_problems(chain) == []
    assert chain_problems([manifest("f"), manifest("d", "differential", "f", "f")]) == []


@pytest.mark.parametrize(("child", "words"), [
    (manifest("i2", "incremental", "gone", "f"), ["names parent gone", "missing"]),
    (manifest("i2", "incremental", "i1", "f", system_identifier="7499"),
     ["system identifier 7499"]),
    (manifest("i2", "incremental", "i1", "f", timeline=2), ["timeline 2"]),
    (manifest("i2", "incremental", "i1", "f", pg_major=17), ["major 17"]),
    (manifest("i2", "incremental", "i1", "other"), ["belongs to chain other"]),
    (manifest("i2", "incremental", "i1", "f", method="logical"), ["not a physical"]),
])
def test_a_broken_chain_is_named(child: Manifest, words: list[str]) -> None:
    chain = [manifest("f"), manifest("i1", "incremental", "f", "f"), child]
    text = "; ".join(chain_problems(chain))
    for word in words:
        assert word in text


def test_chains_before_17_cannot_be_combined() -> None:
    chain = [manifest("f", pg_major=15), manifest("i", "incremental", "f", "f", pg_major=15)]
    assert "pg_combinebackup" in "; ".join(chain_problems(chain))


def test_tar_tap_keeps_one_member_across_any_block_split() -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("base/1", b"x" * 3000), ("backup_manifest", b'{"a": 1}' * 100),
                           ("global/pg_control", b"c" * 10)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    for size in (1, 7, 511, 512, 4096, len(raw)):
        tap = TarTap("backup_manifest")
        out = b"".join(tap(raw[i:i + size] for i in range(0, len(raw), size)))
        assert out == raw
        assert tap.captured == b'{"a": 1}' * 100


def test_extract_refuses_members_that_leave_the_directory(tmp_path: Any) -> None:
    import io
    import tarfile

    from safehold.engines.postgres.physical_restore import extract

    def tar_of(name: str, kind: bytes) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            else:
                info.size = 4
            tar.addfile(info, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)
        return buf.getvalue()

    for i, (name, kind) in enumerate([("../evil", tarfile.REGTYPE),
                                      ("link", tarfile.SYMTYPE)]):
        with pytest.raises(tarfile.FilterError):
            extract(iter([tar_of(name, kind)]), tmp_path / f"x{i}")
    assert not (tmp_path / "evil").exists()
    extract(iter([tar_of("/etc/evil", tarfile.REGTYPE)]), tmp_path / "abs")
    assert (tmp_path / "abs" / "etc" / "evil").read_bytes() == b"evil"  # made relative


def test_choose_base_is_the_newest_backup_consistent_before_the_target() -> None:
    from datetime import timedelta

    from safehold.api.errors import UsageError
    from safehold.engines.postgres.pitr import OutsideWindow, choose_base, recovery_settings

    def at(backup_id: str, minutes: int, end_lsn: str, **kw: Any) -> Manifest:
        m = manifest(backup_id, end_lsn=end_lsn, **kw)
        when = T + timedelta(minutes=minutes)
        return m.model_copy(update={"started_at": when, "finished_at": when})

    backups = [at("f", 0, "0/3000000"), at("i", 10, "0/5000000"),
               at("logical", 15, "0/6000000", method="logical"), at("d", 20, "0/7000000")]
    assert choose_base(backups, to_time=T + timedelta(minutes=5)).backup_id == "f"
    assert choose_base(backups, to_time=T + timedelta(minutes=19)).backup_id == "i"
    assert choose_base(backups, to_time=T + timedelta(minutes=20)).backup_id == "d"
    assert choose_base(backups, to_lsn="0/6FFFFFF").backup_id == "i"
    with pytest.raises(OutsideWindow, match="window starts there"):
        choose_base(backups, to_time=T - timedelta(seconds=1))
    with pytest.raises(OutsideWindow, match="LSN 0/3000000"):
        choose_base(backups, to_lsn="0/2000000")
    with pytest.raises(UsageError, match="no time zone"):
        choose_base(backups, to_time=datetime(2026, 12, 1))
    with pytest.raises(OutsideWindow, match="--method physical"):
        choose_base(backups[2:3], to_time=T + timedelta(days=1))
    settings = recovery_settings("cp /a/%f %p", to_lsn="0/6ffffff")
    assert settings["recovery_target_lsn"] == "0/6FFFFFF"
    assert settings["recovery_target_inclusive"] == "off"
