"""One error taxonomy: every layer's errors carry the exit code docs/cli.md documents."""

from __future__ import annotations

import click
import pytest
from pydantic import ValidationError

from safehold.api.errors import (
    Conflict,
    DatabaseProblem,
    Exit,
    IntegrityError,
    KeyProblem,
    NotFoundError,
    SafeholdError,
    StorageProblem,
    Unsupported,
    UsageError,
)
from safehold.api.retention import RetentionPolicy
from safehold.api.validation import describe_validation_error
from safehold.cli.errors import Terminated, report_for
from safehold.cli.main import hoist_global_options, wanted_output
from safehold.codecs.compression import CodecError, CorruptDataError
from safehold.codecs.crypto import KeyFormatError, MissingKeyError, TamperedError, WrongKeyError
from safehold.codecs.frames import FrameError
from safehold.engines.base import (
    ConflictError,
    DatabaseMissing,
    EngineError,
    HostUnreachable,
    UnsupportedError,
)
from safehold.engines.common import retry_transient
from safehold.pipeline.objects import CorruptObjectError
from safehold.repository.repo import (
    BackupNotFound,
    FormatTooNew,
    KeyRecordLost,
    RepositoryDamaged,
)
from safehold.storage.base import (
    NoSpaceError,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
)

CASES: list[tuple[SafeholdError, Exit, type[SafeholdError]]] = [
    (StorageError("x"), Exit.STORAGE, StorageProblem),
    (NoSpaceError("x"), Exit.STORAGE, StorageProblem),
    (TransientStorageError("x"), Exit.STORAGE, StorageProblem),
    (ObjectNotFound("k"), Exit.NOT_FOUND, StorageProblem),
    (BackupNotFound("x"), Exit.NOT_FOUND, NotFoundError),
    (RepositoryDamaged("x"), Exit.CORRUPT, IntegrityError),
    (KeyRecordLost("x"), Exit.KEY, KeyProblem),
    (FormatTooNew("x"), Exit.UNSUPPORTED, Unsupported),
    (EngineError("x"), Exit.DATABASE, DatabaseProblem),
    (HostUnreachable("x"), Exit.DATABASE, DatabaseProblem),
    (DatabaseMissing("x"), Exit.NOT_FOUND, NotFoundError),
    (UnsupportedError("x"), Exit.UNSUPPORTED, Unsupported),
    (ConflictError("x"), Exit.CONFLICT, Conflict),
    (MissingKeyError("x"), Exit.KEY, KeyProblem),
    (WrongKeyError("x"), Exit.KEY, KeyProblem),
    (KeyFormatError("x"), Exit.KEY, KeyProblem),
    (TamperedError("x"), Exit.CORRUPT, IntegrityError),
    (CodecError("x"), Exit.USAGE, UsageError),
    (CorruptDataError("x"), Exit.CORRUPT, IntegrityError),
    (FrameError("x"), Exit.CORRUPT, IntegrityError),
    (CorruptObjectError("b", "o", "d"), Exit.CORRUPT, IntegrityError),
]


@pytest.mark.parametrize(("error", "code", "kind"), CASES, ids=lambda v: type(v).__name__)
def test_layer_errors_derive_from_the_taxonomy(error: SafeholdError, code: Exit,
                                               kind: type[SafeholdError]) -> None:
    assert isinstance(error, kind)
    assert error.exit_code is code
    report = report_for(error)
    assert report.code is code and report.error_class == type(error).__name__


def test_transient_flags_survive() -> None:
    assert TransientStorageError("x").transient and HostUnreachable("x").transient
    assert not StorageError("x").transient and not EngineError("x").transient


def test_an_unexpected_exception_is_a_bug_never_a_usage_error() -> None:
    for exc in (ValueError("odd"), KeyError("k"), RuntimeError("r")):
        report = report_for(exc)
        assert report.code is Exit.FAILED and "this is a bug" in report.message
        assert report.hint and "--log-level debug" in report.hint


def test_signals_and_click_errors() -> None:
    assert report_for(Terminated()).code is Exit.TERMINATED
    assert report_for(KeyboardInterrupt()).code is Exit.INTERRUPTED
    assert report_for(click.UsageError("no such option")).code is Exit.USAGE


def test_json_error_document() -> None:
    import json

    doc = json.loads(report_for(BackupNotFound("gone", hint="look")).as_json())
    assert doc == {"error": {"code": 3, "class": "BackupNotFound", "message": "gone",
                             "hint": "look"}}


def test_passwords_in_urls_are_redacted_from_messages() -> None:
    report = report_for(EngineError("cannot reach postgresql://u:secret@h/db"))
    assert "secret" not in report.message


def test_engine_retries_do_not_multiply_storage_retries() -> None:
    calls = {"storage": 0, "engine": 0}

    def storage_gave_up() -> None:
        calls["storage"] += 1
        raise TransientStorageError("503 after the storage layer's own retries")

    with pytest.raises(TransientStorageError):
        retry_transient(storage_gave_up, "dump of t", attempts=3)
    assert calls["storage"] == 1

    def flaky_connection() -> str:
        calls["engine"] += 1
        if calls["engine"] < 3:
            raise HostUnreachable("refused")
        return "ok"

    assert retry_transient(flaky_connection, "connect", attempts=3) == "ok"
    assert calls["engine"] == 3


@pytest.mark.parametrize(("given", "hoisted"), [
    (["list", "-r", "R", "--output", "json"], ["--output", "json", "list", "-r", "R"]),
    (["list", "--log-format=json", "-r", "R"], ["--log-format=json", "list", "-r", "R"]),
    (["cat", "-r", "R", "-t", "a", "--", "--output"], ["cat", "-r", "R", "-t", "a", "--",
                                                       "--output"]),
    (["keys", "generate", "--out", "f"], ["keys", "generate", "--out", "f"]),
])
def test_global_options_are_hoisted(given: list[str], hoisted: list[str]) -> None:
    assert hoist_global_options(given) == hoisted


def test_wanted_output() -> None:
    assert wanted_output(["-o", "json", "list"]) == "json"
    assert wanted_output(["list", "--output=json"]) == "json"
    assert wanted_output(["list"]) == "text"


def test_validation_errors_in_words_naming_flags() -> None:
    flags = {"keep_last": "--keep-last", "max_age": "--max-age", "keep_daily": "--keep-daily"}
    with pytest.raises(ValidationError) as bad:
        RetentionPolicy(keep_last=-1)
    text = describe_validation_error(bad.value, flags)
    assert text.startswith("--keep-last: ") and "pydantic" not in text
    with pytest.raises(ValidationError) as empty:
        RetentionPolicy()
    text = describe_validation_error(empty.value, flags)
    assert "--keep-daily" in text and "keep_daily" not in text


def test_include_names_are_checked_against_the_backups_tables() -> None:
    from datetime import UTC, datetime

    from safehold.api.manifest import Manifest, ObjectRecord
    from safehold.cli.tables import check_include

    toc = ObjectRecord(name="toc.json", raw_size=1, stored_size=1, sha256="0", chunks=1,
                       meta={"kind": "toc", "tables": ["customers", "orders"]})
    now = datetime.now(UTC)
    m = Manifest(backup_id="20261202T000000.000000Z", target="shop", engine="mysql",
                 type="full", chain_id="x", started_at=now, finished_at=now,
                 compression="zstd:3", chunk_size=1 << 20, objects=(toc,))
    assert check_include(m, ["orders"]) == ["orders"]
    with pytest.raises(UsageError, match=r"no table 'order' \(did you mean 'orders'\?\);"
                                         r" it holds: customers, orders"):
        check_include(m, ["order"])


@pytest.mark.parametrize("argv", [["keys", "generate", "-o", "new.key"],
                                  ["list", "-r", "file:///tmp/repo", "--output", "out.txt"]])
def test_a_file_given_to_output_is_told_what_output_means(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`-o FILE` (as many tools take it) meets the global --output FORMAT: the hint says so and
    names the option that does write a file."""
    from safehold.cli.main import cli

    assert cli.main(argv, prog_name="safehold", standalone_mode=False) == Exit.USAGE
    err = capsys.readouterr().err
    assert "is not one of 'text', 'json', 'html'" in err
    assert "not a file" in err and "keys generate` writes its key with --out FILE" in err


def test_other_usage_errors_point_to_help(capsys: pytest.CaptureFixture[str]) -> None:
    from safehold.cli.main import cli

    argv = ["--log-level", "loud", "list"]
    assert cli.main(argv, prog_name="safehold", standalone_mode=False) == Exit.USAGE
    err = capsys.readouterr().err
    assert "hint: see `safehold --help`" in err and "not a file" not in err


@pytest.mark.parametrize(("typo", "meant"), [("bakcup", "'backup'"), ("lsit", "'list'"),
                                             ("restroe", "'restore'")])
def test_a_mistyped_command_is_told_the_one_meant(
        typo: str, meant: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Most commands load lazily; the suggestion still knows them all."""
    from safehold.cli.main import cli

    assert cli.main([typo], prog_name="safehold", standalone_mode=False) == Exit.USAGE
    err = capsys.readouterr().err
    assert f"error: No such command '{typo}'. Did you mean {meant}?" in err
    assert "hint: see `safehold --help`" in err


def test_an_unknown_command_with_nothing_close_is_just_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    from safehold.cli.main import cli

    assert cli.main(["xyzzy"], prog_name="safehold", standalone_mode=False) == Exit.USAGE
    err = capsys.readouterr().err
    assert "error: No such command 'xyzzy'." in err and "Did you mean" not in err
