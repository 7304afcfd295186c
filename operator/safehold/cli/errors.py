"""Exit codes (documented in ``safehold --help`` and docs/cli.md) and error classification."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1  # unexpected error (a bug or an unclassified failure)
    USAGE = 2  # bad command line or configuration
    NOT_FOUND = 3  # target, repository or backup does not exist
    CORRUPT = 4  # an integrity check failed: data damaged or tampered with
    KEY = 5  # missing or wrong encryption key
    DATABASE = 6  # the database refused or could not be reached
    STORAGE = 7  # the repository's storage failed or is full
    UNSUPPORTED = 8  # the engine cannot do what was asked
    CONFLICT = 9  # the restore target exists and --conflict is fail
    ABORTED = 10  # the user declined a confirmation
    LOCKED = 11  # another writer holds the target's lease
    INTERRUPTED = 130


_MEANING = {
    Exit.OK: "success",
    Exit.FAILED: "unexpected error",
    Exit.USAGE: "bad command line or configuration",
    Exit.NOT_FOUND: "target, repository or backup not found",
    Exit.CORRUPT: "integrity check failed (damaged or tampered data)",
    Exit.KEY: "encryption key missing or wrong",
    Exit.DATABASE: "database unreachable or refused the operation",
    Exit.STORAGE: "storage failed or full",
    Exit.UNSUPPORTED: "the engine cannot do what was asked",
    Exit.CONFLICT: "restore target exists and --conflict fail was given",
    Exit.ABORTED: "confirmation declined or missing (--yes)",
    Exit.LOCKED: "another writer holds the target's lease",
    Exit.INTERRUPTED: "interrupted",
}
EXIT_CODES_HELP = "\n".join(f"  {code.value:>3}  {_MEANING[code]}" for code in Exit)


class CliError(Exception):
    """An error with a message for the user and an exit code."""

    def __init__(self, message: str, code: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.code = code


def classify(exc: BaseException) -> Exit:
    """Map an exception from the runner's layers to an exit code."""
    from safehold.api.errors import LeaseHeld
    from safehold.codecs.compression import CodecError, CorruptDataError
    from safehold.codecs.crypto import (
        KeyFormatError,
        MissingKeyError,
        TamperedError,
        WrongKeyError,
    )
    from safehold.engines.base import ConflictError, EngineError, UnsupportedError
    from safehold.pipeline.objects import CorruptObjectError
    from safehold.repository.repo import RepositoryError
    from safehold.storage.base import StorageError

    table: list[tuple[type[BaseException] | tuple[type[BaseException], ...], Exit]] = [
        (CliError, Exit.FAILED),
        (LeaseHeld, Exit.LOCKED),
        ((CorruptObjectError, CorruptDataError, TamperedError), Exit.CORRUPT),
        ((MissingKeyError, WrongKeyError, KeyFormatError), Exit.KEY),
        (UnsupportedError, Exit.UNSUPPORTED),
        (ConflictError, Exit.CONFLICT),
        (EngineError, Exit.DATABASE),
        (StorageError, Exit.STORAGE),
        (RepositoryError, Exit.NOT_FOUND),
        ((CodecError, ValueError), Exit.USAGE),
        (KeyboardInterrupt, Exit.INTERRUPTED),
    ]
    if isinstance(exc, CliError):
        return exc.code
    for kinds, code in table:
        if isinstance(exc, kinds):
            return code
    return Exit.FAILED
