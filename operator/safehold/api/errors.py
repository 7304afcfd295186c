"""One error taxonomy for both planes.

Every error Safehold raises on purpose derives from :class:`SafeholdError`, which carries the
runner's exit code (the table in docs/cli.md), whether a retry may help (``transient``) and an
optional hint naming the fix. An error is classified once, where it arises; the CLI maps it to an
exit code, the runner's ``run-task`` puts ``error_class``/``exit_code`` into its result, and the
operator maps ``transient`` to kopf's TemporaryError or PermanentError. Anything else that
escapes is a bug (exit 1).

Layer modules subclass these (``StorageError(SafeholdError)`` in storage, ``EngineError`` in
engines, ...) so that ``except`` clauses stay local while the exit code stays in one place.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class Exit(IntEnum):
    """The runner's exit codes. docs/cli.md documents each one; tests reach each one."""

    OK = 0
    FAILED = 1  # unexpected error: a bug
    USAGE = 2  # bad command line or configuration
    NOT_FOUND = 3  # target, repository or backup does not exist
    CORRUPT = 4  # an integrity check failed: data damaged or tampered with
    KEY = 5  # missing or wrong encryption key, or a lost key record
    DATABASE = 6  # the database refused or could not be reached
    STORAGE = 7  # the repository's storage failed or is full
    UNSUPPORTED = 8  # the engine (or this version of safehold) cannot do what was asked
    CONFLICT = 9  # the restore target exists and --conflict is fail
    ABORTED = 10  # the user declined a confirmation
    LOCKED = 11  # another writer holds the target's lease
    PARTIAL = 12  # a multi-database run: some databases backed up, some failed
    INTERRUPTED = 130  # SIGINT
    TERMINATED = 143  # SIGTERM


EXIT_MEANING: dict[Exit, str] = {
    Exit.OK: "success",
    Exit.FAILED: "unexpected error (a bug)",
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
    Exit.PARTIAL: "some databases of the target were backed up, others failed",
    Exit.INTERRUPTED: "interrupted (SIGINT)",
    Exit.TERMINATED: "terminated (SIGTERM)",
}


class SafeholdError(Exception):
    """Base of every deliberate error: a message for people, an exit code, a retry verdict."""

    exit_code: ClassVar[Exit] = Exit.FAILED
    transient: ClassVar[bool] = False
    # the credentials were refused (storage, database): the audit log records `auth.failure`
    auth_failure: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def error_class(self) -> str:
        """The stable name reported in JSON output and in runner results."""
        return type(self).__name__


class UsageError(SafeholdError):
    """A bad command line, configuration or request."""

    exit_code = Exit.USAGE


class NotFoundError(SafeholdError):
    """A target, repository or backup that does not exist."""

    exit_code = Exit.NOT_FOUND


class IntegrityError(SafeholdError):
    """Data that fails an integrity check: damaged in storage or tampered with."""

    exit_code = Exit.CORRUPT


class KeyProblem(SafeholdError):
    """An encryption key that is missing, wrong, malformed, or whose record was lost."""

    exit_code = Exit.KEY


class DatabaseProblem(SafeholdError):
    """The database refused the operation or could not be reached."""

    exit_code = Exit.DATABASE


class StorageProblem(SafeholdError):
    """The repository's storage failed."""

    exit_code = Exit.STORAGE


class Unsupported(SafeholdError):
    """The engine, or this version of Safehold, cannot do what was asked."""

    exit_code = Exit.UNSUPPORTED


class Conflict(SafeholdError):
    """The restore destination exists and the conflict policy is ``fail``."""

    exit_code = Exit.CONFLICT


class Aborted(SafeholdError):
    """The user declined a confirmation (or none could be asked: no ``--yes``)."""

    exit_code = Exit.ABORTED


class PartialFailure(SafeholdError):
    """A target of several databases: some were backed up, the others failed (each named)."""

    exit_code = Exit.PARTIAL


class LeaseHeld(SafeholdError):
    """Another writer holds the target's lease; the message names the holder."""

    exit_code = Exit.LOCKED
    transient = True

