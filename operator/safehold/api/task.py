"""The task a runner Job executes: the operator builds it, ``safehold run-task`` runs it.

A task is JSON in the Job (env ``SAFEHOLD_TASK``, or a mounted file). It carries everything the
runner needs EXCEPT secrets: a database password, a whole connection URL, storage credentials and
encryption keys reach the Pod by reference (``secretKeyRef`` env, ``envFrom``, Secret volumes), and
the task only says where to find them (:class:`SecretInput`). Validators refuse a task that
smuggles a password inside a URL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, TypeAdapter, model_validator

from safehold.api.common import BACKUP_REF_PATTERN, KubeModel
from safehold.api.manifest import BackupMethod, BackupType

TASK_ENV = "SAFEHOLD_TASK"
TASK_VERSION: Final = 1
Engine = Literal["postgresql", "mysql", "mongodb", "sqlite"]
TlsMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
ConflictPolicy = Literal["fail", "replace"]
# The target's name inside the repository (repository/layout.py checks the same rule).
RepoTargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
# a target's name, or one of its databases' (target@database, api/databases.py)
RepoSourceName = Annotated[str, Field(
    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@[A-Za-z0-9._~-]{1,80})?$")]
BackupRef = Annotated[str, Field(pattern=BACKUP_REF_PATTERN)]
AbsPath = Annotated[str, Field(pattern=r"^/")]


def _no_password(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.password is not None:
        raise ValueError(
            f"{what} carries a password; tasks never hold secrets — pass it by reference"
            " (passwordFrom / urlFrom)"
        )
    return url


class SecretInput(KubeModel):
    """Where the runner reads one secret value: an environment variable or a mounted file."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                            description="Name of an environment variable holding the value.")
    file: AbsPath | None = Field(default=None, description="Path of a file holding the value.")

    @model_validator(mode="after")
    def _one(self) -> SecretInput:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret input names exactly one of env or file")
        return self


class TaskTls(KubeModel):
    mode: TlsMode
    ca_file: AbsPath | None = None
    cert_file: AbsPath | None = None
    key_file: AbsPath | None = None


class TaskDatabase(KubeModel):
    """How the runner reaches the database: a URL without secrets, or a URL from a Secret."""

    engine: Engine
    url: str | None = Field(
        default=None, description="e.g. postgresql://backup@db.shop.svc:5432/orders, or"
        " sqlite:///data/app.db; never with a password"
    )
    url_from: SecretInput | None = Field(default=None, description="A whole URL in a Secret.")
    password_from: SecretInput | None = None
    password_origin: str | None = Field(
        default=None, max_length=300,
        description="Where the user set the password, in their words, for error hints instead"
        " of the CLI's options: e.g. the BackupTarget's connection.passwordSecretRef (Secret"
        " orders-db, key password). Names only, never a value.",
    )
    tls: TaskTls | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    jobs: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TaskDatabase:
        if (self.url is None) == (self.url_from is None):
            raise ValueError("a task database names exactly one of url or urlFrom")
        if self.url is not None:
            _no_password(self.url, "the database url")
        return self


class TaskRepository(KubeModel):
    """The repository; its credentials come from the environment (AWS_*, AZURE_*, GCS key file)."""

    url: str = Field(min_length=1, description="e.g. s3://backups/prod or file:///repo")

    @model_validator(mode="after")
    def _check(self) -> TaskRepository:
        _no_password(self.url, "the repository url")
        return self


class TaskEncryption(KubeModel):
    """Encryption keys: ``keys`` reads a mounted key Secret; ``none`` writes plain backups.

    ``keyDir`` holds one file per key (base64, 32 bytes). When it holds several, a file named
    ``active`` names the key that encrypts new backups; the others still decrypt old ones.
    """

    mode: Literal["keys", "none"]
    key_dir: AbsPath | None = None

    @model_validator(mode="after")
    def _check(self) -> TaskEncryption:
        if (self.mode == "keys") != (self.key_dir is not None):
            raise ValueError("encryption mode keys needs keyDir, and mode none takes no keyDir")
        return self


class _Task(KubeModel):
    version: Literal[1] = TASK_VERSION


class BackupTask(_Task):
    kind: Literal["backup"] = "backup"
    repository: TaskRepository
    target: RepoTargetName
    namespace: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="The BackupTarget's namespace: recorded with the target's policy and bound"
        " into each manifest, so another namespace's target of the same name is refused",
    )
    database: TaskDatabase
    encryption: TaskEncryption
    type: BackupType = "full"
    method: BackupMethod | None = Field(
        default=None, description="physical for base backups; absent means logical (so a"
        " logical task reads the same to runners that predate methods)")
    include: list[str] = Field(default_factory=list)
    backup_id: BackupRef | None = Field(
        default=None, description="Fixed by the operator so a retried Job resumes the same backup"
    )
    compression: str = "zstd:3"
    chunk_size: int = Field(default=4 * 2**20, ge=64 * 1024, le=256 * 2**20)
    # unset (not empty) by default: the task JSON of a one-database target stays as it was
    databases: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, description="Several databases of the server, each its own backup"
        " under target@database (the database url says where to log in)")
    all_databases: bool | None = Field(default=None, description="Every database of the"
                                       " server")
    globals: bool | None = Field(default=None, description="Also the server-wide objects"
                                 " (roles, users and grants) under target@~globals")

    @model_validator(mode="after")
    def _check(self) -> BackupTask:
        if self.databases and self.all_databases:
            raise ValueError("databases and allDatabases exclude each other")
        if (self.databases or self.all_databases) and self.include:
            raise ValueError("include names tables of one database: not with databases")
        if self.backup_id == "latest":
            raise ValueError("a backup task's backupId names the new backup, not 'latest'")
        if self.include and self.type != "full":
            raise ValueError("include is only valid for full backups")
        return self


class TaskRecovery(KubeModel):
    """A point-in-time restore's target: exactly one of time, gtid or position."""

    time: datetime | None = Field(default=None, description="Restore to this time (UTC).")
    gtid: str | None = Field(default=None, min_length=1, max_length=256,
                             description="MariaDB: up to and including this GTID.")
    position: str | None = Field(default=None, pattern=r"^[^:\s]+:[0-9]+$",
                                 description="MariaDB: up to (not including) FILE:POS.")

    @model_validator(mode="after")
    def _check(self) -> TaskRecovery:
        if sum(x is not None for x in (self.time, self.gtid, self.position)) != 1:
            raise ValueError("a recovery target is exactly one of time, gtid or position")
        return self


class RestoreTask(_Task):
    kind: Literal["restore"] = "restore"
    repository: TaskRepository
    source: RepoSourceName = Field(description="The target whose backups are restored (or"
                                   " one database's of it: target@database).")
    backup_id: BackupRef = "latest"
    database: TaskDatabase | None = Field(default=None, description="Where to restore into"
                                          " (or data_dir).")
    data_dir: str | None = Field(
        default=None, description="A physical PostgreSQL backup: restore it into this new data"
        " directory (on a mounted volume), with the WAL a recovery replays bundled into it.")
    encryption: TaskEncryption
    include: list[str] = Field(default_factory=list)
    conflict_policy: ConflictPolicy = "fail"
    plan_only: bool = Field(default=False, description="Resolve the chain, restore nothing.")
    globals: bool | None = Field(
        default=None, description="Restore the server-wide objects of target@~globals (roles,"
        " users and grants) into the database's server; refused when any of them exists")
    recovery: TaskRecovery | None = Field(
        default=None, description="Point in time: the full at or before the target, then the"
        " logs up to it (backupId is then ignored: the plan is picked from the target)")

    @model_validator(mode="after")
    def _check(self) -> RestoreTask:
        if self.globals and (not self.source.endswith("@~globals") or self.include):
            raise ValueError("a globals restore reads target@~globals and takes no include")
        if self.recovery is not None and (self.include or self.globals):
            raise ValueError("a point-in-time restore takes no include and no globals")
        if (self.database is None) == (self.data_dir is None):
            raise ValueError("give exactly one of database or data_dir")
        if self.data_dir is not None and (self.include or self.globals or (
                self.recovery is not None and self.recovery.time is None)):
            raise ValueError("a data_dir restore takes a whole physical backup, to a time at"
                             " most: no include, globals, gtid or position")
        return self


class CheckTask(_Task):
    kind: Literal["check"] = "check"
    repository: TaskRepository | None = Field(
        default=None, description="Also check that this repository is writable."
    )
    database: TaskDatabase
    purpose: Literal["backup", "restore"] = "backup"
    method: BackupMethod | None = Field(
        default=None, description="physical: also check what base backups need")


class DeleteTask(_Task):
    kind: Literal["delete"] = "delete"
    repository: TaskRepository
    target: RepoTargetName
    backup_ids: list[BackupRef] = Field(min_length=1)
    databases: list[RepoSourceName] | None = Field(
        default=None, description="A multi-database Backup: delete the same ids under these"
        " targets (target@database) instead of under target")

    @model_validator(mode="after")
    def _check(self) -> DeleteTask:
        if "latest" in self.backup_ids:
            raise ValueError("a delete task names backups by id, never 'latest'")
        strangers = [d for d in self.databases or () if not d.startswith(self.target + "@")]
        if strangers:
            raise ValueError(f"databases must be {self.target}@<database>: {strangers}")
        return self


class RewrapTask(_Task):
    """Re-wrap every backup's data key with the active key (rotation); no data is rewritten."""

    kind: Literal["rewrap"] = "rewrap"
    repository: TaskRepository
    encryption: TaskEncryption

    @model_validator(mode="after")
    def _check(self) -> RewrapTask:
        if self.encryption.mode != "keys":
            raise ValueError("a rewrap task needs encryption mode keys")
        return self


class ListTask(_Task):
    """List a target's backups (id, type, parent, size), oldest first, one page at a time.

    A page is what fits the 4 KiB termination message (the result says ``more``); the next
    page is a new task with ``after`` set to the last id reported. Manifests are verified with
    the keys, so a page only names backups this key Secret can restore.
    """

    kind: Literal["list"] = "list"
    repository: TaskRepository
    target: RepoTargetName
    encryption: TaskEncryption
    after: BackupRef | None = Field(
        default=None, description="Report only backups whose id sorts after this one (the"
        " previous page's last id)."
    )

    @model_validator(mode="after")
    def _check(self) -> ListTask:
        if self.after == "latest":
            raise ValueError("a list task's after names a backup id, not 'latest'")
        return self


class VerifyTask(_Task):
    kind: Literal["verify"] = "verify"
    repository: TaskRepository
    target: RepoTargetName | None = None
    backup_id: BackupRef | None = None
    encryption: TaskEncryption

    @model_validator(mode="after")
    def _check(self) -> VerifyTask:
        if self.backup_id is not None and self.target is None:
            raise ValueError("verify of one backupId needs its target")
        return self


class StreamTask(_Task):
    """A long-running log streamer (the BackupTarget's pointInTime Deployment): archives the
    server's log into the repository and serves its status on ``statusPort``; it never ends by
    itself (errors are reported on the endpoint and retried)."""

    kind: Literal["stream"] = "stream"
    repository: TaskRepository
    target: RepoTargetName
    namespace: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="The BackupTarget's namespace (bound into the archive like a backup's)")
    database: TaskDatabase
    encryption: TaskEncryption
    status_port: int = Field(default=8089, ge=1, le=65535)
    status_address: str = Field(default="0.0.0.0", min_length=1, max_length=64)
    spool: AbsPath = Field(default="/tmp/safehold-spool",
                           description="Local directory for the file being pulled")
    poll: float = Field(default=1.0, ge=0.05, description="Seconds between looks")
    flush_every: float = Field(default=0, ge=0, description="Seconds between forced log"
                               " rotations (0: only the server's own)")
    retry_after: float = Field(default=10.0, ge=0.1, description="Seconds before a retry")


Task = Annotated[
    BackupTask | RestoreTask | CheckTask | DeleteTask | RewrapTask | VerifyTask | ListTask
    | StreamTask,
    Field(discriminator="kind"),
]
TASK_ADAPTER: TypeAdapter[Task] = TypeAdapter(Task)


def parse_task(text: str | bytes) -> Task:
    """A task from its JSON; raises pydantic.ValidationError naming every problem."""
    return TASK_ADAPTER.validate_json(text)


def task_to_json(task: Task) -> str:
    """Compact camelCase JSON for the Job's SAFEHOLD_TASK env."""
    return TASK_ADAPTER.dump_json(task, by_alias=True, exclude_none=True).decode()
