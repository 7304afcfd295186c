"""BackupTarget (short name ``bt``): what to protect, where its backups go, how they are sealed.

Cross-field rules live twice on purpose: as CEL ``x-kubernetes-validations`` (so the API server
refuses a bad object at ``kubectl apply``) and as pydantic validators (so the operator and unit
tests get the same verdict). ``tests/unit/test_api_models.py`` keeps the two in step.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from safehold.api.common import (
    API_VERSION,
    ClaimRef,
    ConditionStatus,
    KubeModel,
    Name,
    ObjectMeta,
    SecretKeyRef,
    SecretRef,
    StatusModel,
    condition_reason,
    set_condition,
    utcnow,
)
from safehold.api.common import Condition as Condition
from safehold.api.common import RunnerOverrides as RunnerOverrides
from safehold.api.manifest import BackupMethod
from safehold.api.pointintime import (
    MULTI_DB_MESSAGE,
    PHYSICAL_MESSAGE,
    POINT_IN_TIME,
    STREAMER_ENGINES,
    PointInTimeSpec,
    PointInTimeStatus,
    engines_cel,
    no_streamer_message,
)
from safehold.api.result import TaskResult
from safehold.api.schedule import Notifications
from safehold.api.task import Engine, RepoTargetName, TlsMode
from safehold.api.trends import DEGRADED, TrendSummary

COMPRESSION_PATTERN = r"^(none|gzip|bzip2|lz4|zstd)(:[0-9]{1,2})?$"
STORAGE_URL_PATTERN = r"^(s3|gs|az|file)://.+$"
READY = "Ready"
KEYS_ROTATED = "KeysRotated"


def _count(*fields: str) -> str:
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)


def _rule(rule: str, message: str, **extra: str) -> JsonDict:
    return {"rule": rule, "message": message, **extra}


class DatabaseTls(KubeModel):
    """TLS for the database connection."""

    mode: TlsMode = Field(
        default="verify-full",
        description="disable, prefer, require, verify-ca (check the certificate chain) or"
        " verify-full (also check the host name).",
    )
    ca_secret_ref: SecretKeyRef | None = Field(
        default=None, description="CA certificate (PEM) to verify the server with."
    )
    client_cert_secret_ref: SecretRef | None = Field(
        default=None,
        description="A kubernetes.io/tls Secret (tls.crt, tls.key) for client-certificate"
        " authentication.",
    )


class Connection(KubeModel):
    """Where a database server is and how to log in; the password stays in a Secret."""

    host: str = Field(min_length=1, max_length=253,
                      description="Host name or address of the server, e.g. orders-db.shop.svc.")
    port: int | None = Field(default=None, ge=1, le=65535,
                             description="TCP port (default: the engine's standard port).")
    database: str = Field(
        min_length=1, max_length=128,
        description="Database to back up (and, for a Restore into this target, to restore into).",
    )
    username: str | None = Field(default=None, min_length=1, max_length=128,
                                 description="User to log in as.")
    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the password (never copied into Jobs)."
    )
    tls: DatabaseTls | None = Field(default=None, description="TLS settings.")


class DatabaseSelection(KubeModel):
    """Several databases of one server, each backed up as its own backup."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _rule("(has(self.names) && size(self.names) > 0) != (has(self.all) && self.all)",
              "set exactly one of names: [...] or all: true"),
    ]})

    names: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=1000,
        description="These databases (connection.database is where to log in).")
    all: bool = Field(default=False, description="Every database of the server (system ones"
                      " left out).")
    globals: bool | None = Field(
        default=None, description="Also back up the server-wide objects (PostgreSQL roles,"
        " MySQL/MariaDB users and grants) as <repositoryName>@~globals; default: with all.")

    @model_validator(mode="after")
    def _check(self) -> DatabaseSelection:
        if bool(self.names) == self.all:
            raise ValueError("set exactly one of names: [...] or all: true")
        if len(set(self.names)) != len(self.names):
            raise ValueError("databases.names lists a database twice")
        return self


class SqliteSource(KubeModel):
    """A SQLite database file on a PersistentVolumeClaim."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _rule("self.path.startsWith(self.mountPath + '/')",
              "path must lie under mountPath (the claim is mounted there)"),
    ]})

    claim_name: Name = Field(description="PersistentVolumeClaim that holds the database file.")
    mount_path: Annotated[str, Field(pattern=r"^/[^:]*[^/:]$")] = Field(
        default="/data", description="Where the claim is mounted in the runner Pod."
    )
    path: Annotated[str, Field(pattern=r"^/.+")] = Field(
        description="Absolute path of the database file in the runner Pod, under mountPath,"
        " e.g. /data/app.db."
    )

    @model_validator(mode="after")
    def _check(self) -> SqliteSource:
        if not self.path.startswith(self.mount_path + "/"):
            raise ValueError("path must lie under mountPath (the claim is mounted there)")
        return self


class StorageSpec(KubeModel):
    """The repository the backups are written to."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _rule("!self.url.startsWith('file://') || has(self.volume)",
              "a file:// repository needs volume: {claimName} (the claim holding it)",
              fieldPath=".volume"),
        _rule("!has(self.volume) || self.url.startsWith('file://')",
              "volume is only for file:// repositories", fieldPath=".volume"),
    ]})

    url: str = Field(
        pattern=STORAGE_URL_PATTERN, max_length=2048,
        description="Repository URL: s3://bucket/prefix, gs://bucket/prefix,"
        " az://container/prefix or file:///path (on volume). Query options such as"
        " ?endpoint=https://minio.example:9000 are allowed; credentials are not.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with the storage credentials, referenced and never copied: its"
        " keys become the runner's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,"
        " AZURE_STORAGE_CONNECTION_STRING, ...); a key named gcs.json is mounted as the GCS"
        " service-account key.",
    )
    volume: ClaimRef | None = Field(
        default=None,
        description="PersistentVolumeClaim mounted at the file:// URL's path (file:// only).",
    )

    @model_validator(mode="after")
    def _check(self) -> StorageSpec:
        local = self.url.startswith("file://")
        if local and self.volume is None:
            raise ValueError("a file:// repository needs volume: {claimName}")
        if not local and self.volume is not None:
            raise ValueError("volume is only for file:// repositories")
        return self


class EncryptionSpec(KubeModel):
    """How backups are encrypted (AES-256-GCM); choose exactly one option explicitly."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _rule("(has(self.keySecretRef) ? 1 : 0) + (has(self.generateKey) && self.generateKey"
              " ? 1 : 0) + (has(self.none) && self.none ? 1 : 0) == 1",
              "set exactly one of keySecretRef, generateKey: true or none: true"),
    ]})

    key_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret holding one or more keys (each a base64 32-byte key under its own"
        " name) and, when it holds several, a key named `active` naming the one that"
        " encrypts new backups; the others still decrypt older backups.",
    )
    generate_key: bool | None = Field(
        default=None,
        description="Create a random key Secret (its name is in status.generatedKeySecret). It"
        " is NOT owned by the target: deleting the target never deletes the only copy of the"
        " key. Export and escrow it.",
    )
    none: bool | None = Field(
        default=None, description="Store backups unencrypted; must be said explicitly."
    )

    @model_validator(mode="after")
    def _check(self) -> EncryptionSpec:
        chosen = [self.key_secret_ref is not None, bool(self.generate_key), bool(self.none)]
        if sum(chosen) != 1:
            raise ValueError("set exactly one of keySecretRef, generateKey: true or none: true")
        return self


class BackupTargetSpec(KubeModel):
    """What to back up, where to, and how."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _rule(_count("connection", "uriSecretRef", "sqlite") + " == 1",
              "set exactly one of connection, uriSecretRef or sqlite"),
        _rule("self.engine == 'sqlite' ? has(self.sqlite) : !has(self.sqlite)",
              "engine sqlite takes sqlite: {claimName, path}; server engines take connection"
              " or uriSecretRef"),
        _rule("self.engine != 'sqlite' || !has(self.databases)",
              "a sqlite target is one file: databases is for server engines",
              fieldPath=".databases"),
        _rule("self.engine != 'mongodb' || !has(self.databases)"
              " || !has(self.databases.globals) || !self.databases.globals",
              "MongoDB users are not backed up as server-wide objects yet: leave"
              " databases.globals out", fieldPath=".databases.globals"),
        _rule("self.engine == oldSelf.engine",
              "engine is immutable: create a new BackupTarget", fieldPath=".engine"),
        _rule("self.method == 'logical' || self.engine == 'postgresql'",
              "method physical is only available for engine postgresql", fieldPath=".method"),
        _rule("!has(self.pointInTime) || !self.pointInTime.enabled"
              f" || self.engine in {engines_cel()}", no_streamer_message(),
              fieldPath=".pointInTime"),
        _rule("!has(self.pointInTime) || !self.pointInTime.enabled || !has(self.databases)",
              MULTI_DB_MESSAGE, fieldPath=".pointInTime"),
        _rule("!has(self.pointInTime) || !self.pointInTime.enabled"
              " || self.engine != 'postgresql' || self.method == 'physical'",
              PHYSICAL_MESSAGE, fieldPath=".pointInTime"),
    ]})

    engine: Engine = Field(description="Database engine: postgresql, mysql (also MariaDB),"
                           " mongodb or sqlite.")
    connection: Connection | None = Field(
        default=None,
        description="How to reach a database server and log in; the password stays in a"
        " Secret. Server engines set exactly one of connection or uriSecretRef.",
    )
    uri_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a whole connection URL, password included (e.g."
        " postgresql://user:pass@host:5432/db); instead of connection.",
    )
    sqlite: SqliteSource | None = Field(
        default=None,
        description="The database file of a sqlite target, on a PersistentVolumeClaim; only"
        " and always for engine sqlite.",
    )
    method: BackupMethod = Field(
        default="logical",
        description="logical: the engine's dump (portable, selective restore), or physical:"
        " the server's files (PostgreSQL base backups, restored into a new data directory),"
        " onto which PostgreSQL incrementals and differentials chain.",
    )
    storage: StorageSpec = Field(description="Where the backups go.")
    encryption: EncryptionSpec = Field(
        description="Encryption of the backups: keySecretRef, generateKey or none."
    )
    compression: str = Field(
        default="zstd:3", pattern=COMPRESSION_PATTERN,
        description="Codec and optional level: zstd, gzip, bzip2, lz4 or none, e.g. zstd:3.",
    )
    runner: RunnerOverrides | None = Field(
        default=None, description="How this target's runner Jobs run (image, resources, ...)."
    )
    repository_name: RepoTargetName | None = Field(
        default=None,
        description="Name of this target's backups in the repository (default: the"
        " BackupTarget's name, so a rebuilt cluster with a target of the same name finds its"
        " backups). Set it when two namespaces' targets of the same name share a repository;"
        " changing it later hides the backups written under the old name.",
    )
    databases: DatabaseSelection | None = Field(
        default=None,
        description="Several databases of the server (names: [...]) or all of them (all: true),"
        " each its own backup in the repository as <repositoryName>@<database>; a Backup"
        " where only some succeed ends PartiallyFailed. Not for sqlite.",
    )
    notifications: Notifications | None = Field(
        default=None,
        description="Where this target's events are reported (in addition to its schedules'),"
        " e.g. slack: {webhookSecretRef: {name: slack, key: url}, on: [failure]}.",
    )
    point_in_time: PointInTimeSpec | None = Field(
        default=None,
        description="enabled: true runs the log streamer, so Restores can reach any time in"
        " the recoverable window (status.pointInTime); engines with a streamer: mysql"
        " (MariaDB) and postgresql (with method: physical).",
    )

    @property
    def streams(self) -> bool:
        return self.point_in_time is not None and self.point_in_time.enabled

    @model_validator(mode="after")
    def _check(self) -> BackupTargetSpec:
        given = [self.connection, self.uri_secret_ref, self.sqlite]
        if sum(x is not None for x in given) != 1:
            raise ValueError("set exactly one of connection, uriSecretRef or sqlite")
        if self.method != "logical" and self.engine != "postgresql":
            raise ValueError("method physical is only available for engine postgresql")
        if (self.engine == "sqlite") != (self.sqlite is not None):
            raise ValueError("engine sqlite takes sqlite: {claimName, path}; server engines"
                             " take connection or uriSecretRef")
        if self.engine == "sqlite" and self.databases is not None:
            raise ValueError("a sqlite target is one file: databases is for server engines")
        if self.engine == "mongodb" and self.databases and self.databases.globals:
            raise ValueError("MongoDB users are not backed up as server-wide objects yet:"
                             " leave databases.globals out")
        if self.streams and self.engine not in STREAMER_ENGINES:
            raise ValueError(no_streamer_message())
        if self.streams and self.databases is not None:
            raise ValueError(MULTI_DB_MESSAGE)
        if self.streams and self.engine == "postgresql" and self.method != "physical":
            raise ValueError(PHYSICAL_MESSAGE)
        return self


class BackupTargetStatus(StatusModel):
    """Observed state of a BackupTarget, written by the operator."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation the status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready: the last check Job's verdict. Degraded: whether"
        " the newest backup was more than twice as slow as the median of its type.",
    )
    server_version: str | None = Field(default=None, description="Server version last seen.")
    last_check_time: datetime | None = Field(default=None, description="When the last check ran.")
    check_job: str | None = Field(default=None, description="Name of the running check Job.")
    generated_key_secret: str | None = Field(
        default=None, description="Name of the key Secret created for generateKey."
    )
    trends: TrendSummary | None = Field(
        default=None, description="Rolling summary of the recent completed backups (durations,"
        " throughput, compression, bottleneck stage); Degraded says when one was unusually slow.",
    )

    adopt_job: str | None = Field(
        default=None, description="Name of the running adopt Job (lists the repository)."
    )
    adopted_through: str | None = Field(
        default=None, description="The newest backup id listed from the repository so far;"
        " a re-check lists only backups after it."
    )
    last_adoption_time: datetime | None = Field(
        default=None, description="When the repository was last listed for adoption."
    )
    key_secret_version: str | None = Field(
        default=None, description="`<Secret>@<resourceVersion>` of the key Secret the last"
        " re-wrap ran against (or first seen); a change starts a re-wrap Job."
    )
    rewrap_job: str | None = Field(default=None, description="Name of the running re-wrap Job.")
    active_key_id: str | None = Field(
        default=None, description="Id of the key every data key is wrapped with after the last"
        " re-wrap."
    )
    retired_key_ids: list[str] = Field(
        default_factory=list, description="Key ids no backup needs any more after the last"
        " re-wrap: they may be removed from the key Secret."
    )
    point_in_time: PointInTimeStatus | None = Field(
        default=None, description="The log streamer (spec.pointInTime): recoverable window,"
        " lag, newest archived file and health, as last polled; the PointInTime condition"
        " says whether it works."
    )

    def streamer_seen(self, pit: PointInTimeStatus | None, generation: int | None,
                      now: datetime | None = None) -> BackupTargetStatus:
        """The streamer's polled state and its PointInTime condition; None: no streamer (the
        condition goes)."""
        if pit is None:
            return self.model_copy(update={
                "point_in_time": None,
                "conditions": [c for c in self.conditions if c.type != POINT_IN_TIME]})
        status, reason, message = pit.condition()
        return self.model_copy(update={
            "point_in_time": pit,
            "conditions": list(set_condition(self.conditions, POINT_IN_TIME, status, reason,
                                             message, generation=generation, now=now))})

    def checking(self, job_name: str, generation: int | None,
                 now: datetime | None = None) -> BackupTargetStatus:
        """A check Job was started; Ready is Unknown until it reports."""
        return self.model_copy(update={
            "check_job": job_name,
            "conditions": list(set_condition(self.conditions, READY, "Unknown", "Checking",
                                             f"check Job {job_name} is running",
                                             generation=generation, now=now)),
        })

    def checked(self, result: TaskResult, generation: int | None,
                now: datetime | None = None) -> BackupTargetStatus:
        """The check Job reported: Ready True, or False with the reason naming the problem."""
        now = now or utcnow()
        status: ConditionStatus
        if result.ok and not result.problems:
            status, reason = "True", "CheckPassed"
            message = f"connected to {result.server_version or 'the server'}" + (
                "; " + "; ".join(result.notes) if result.notes else "")
        elif result.error is not None:
            status, reason = "False", condition_reason(result.error.error_class, "CheckFailed")
            message = result.error.message + (
                f" (hint: {result.error.hint})" if result.error.hint else "")
        else:
            status, reason = "False", "CheckFailed"
            message = "; ".join(result.problems) or "the check failed"
        return self.model_copy(update={
            "observed_generation": generation,
            "check_job": None,
            "last_check_time": now,
            "server_version": result.server_version or self.server_version,
            "conditions": list(set_condition(self.conditions, READY, status, reason, message,
                                             generation=generation, now=now)),
        })

    def adopting(self, job_name: str) -> BackupTargetStatus:
        return self.model_copy(update={"adopt_job": job_name})

    def adopted(self, through: str | None, now: datetime | None = None) -> BackupTargetStatus:
        """A list page was read (and its backups adopted); ``through`` is its newest id."""
        newest = max(filter(None, (self.adopted_through, through)), default=None)
        return self.model_copy(update={"adopt_job": None, "adopted_through": newest,
                                       "last_adoption_time": now or utcnow()})

    def key_seen(self, version: str) -> BackupTargetStatus:
        """The key Secret's version as first seen (nothing to re-wrap yet)."""
        return self.model_copy(update={"key_secret_version": version})

    def rewrapping(self, job_name: str, version: str, generation: int | None,
                   now: datetime | None = None) -> BackupTargetStatus:
        """The key Secret changed: a re-wrap Job runs against ``version``."""
        return self.model_copy(update={
            "rewrap_job": job_name, "key_secret_version": version,
            "conditions": list(set_condition(
                self.conditions, KEYS_ROTATED, "Unknown", "Rewrapping",
                f"the key Secret changed ({version}): re-wrap Job {job_name} wraps every data"
                " key with the active key", generation=generation, now=now)),
        })

    def rewrapped(self, result: TaskResult, generation: int | None,
                  now: datetime | None = None) -> BackupTargetStatus:
        """The re-wrap Job reported: KeysRotated True (old keys may go) or False (why)."""
        update: dict[str, Any] = {"rewrap_job": None}
        if result.ok:
            retired = [k for k in result.retired_key_ids if k != result.active_key_id]
            status: ConditionStatus = "True"
            reason = "Rewrapped"
            message = (f"{result.rewrapped or 0} data key(s) re-wrapped; every backup is"
                       f" wrapped with key {result.active_key_id}")
            if retired:
                message += f"; no backup needs {', '.join(retired)}: it may be removed"
            update.update(active_key_id=result.active_key_id, retired_key_ids=retired)
        else:
            status = "False"
            error = result.error
            reason = condition_reason(error.error_class if error else "", "RewrapFailed")
            message = (error.message + (f" (hint: {error.hint})" if error.hint else "")
                       if error else "the re-wrap Job failed")
            message += "; nothing was changed until every data key could be unwrapped"
        update["conditions"] = list(set_condition(self.conditions, KEYS_ROTATED, status, reason,
                                                  message, generation=generation, now=now))
        return self.model_copy(update=update)

    def trended(self, summary: TrendSummary, generation: int | None,
                now: datetime | None = None) -> BackupTargetStatus:
        """The new rolling summary and the Degraded condition it implies."""
        status, reason, message = summary.condition()
        return self.model_copy(update={
            "trends": summary,
            "conditions": list(set_condition(self.conditions, DEGRADED, status, reason, message,
                                             generation=generation, now=now)),
        })

    def key_generated(self, secret_name: str) -> BackupTargetStatus:
        return self.model_copy(update={"generated_key_secret": secret_name})

    @property
    def ready(self) -> bool:
        return any(c.type == READY and c.status == "True" for c in self.conditions)


class BackupTarget(KubeModel):
    """A database to protect (kind BackupTarget)."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["safehold.dev/v1alpha1"] = API_VERSION
    kind: Literal["BackupTarget"] = "BackupTarget"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: BackupTargetSpec
    status: BackupTargetStatus = Field(default_factory=BackupTargetStatus)

    @classmethod
    def from_body(cls, body: Any) -> BackupTarget:
        return cls.model_validate(dict(body))

    @property
    def repository_name(self) -> str:
        """The target's name inside the repository: spec.repositoryName or metadata.name.

        Both planes use this one rule (the task's ``target``, adoption of existing backups);
        the namespace is bound separately (BackupTask.namespace, repository/trust.py).
        Kubernetes names are at most 253 characters, repository names 128: a longer name is
        cut and made unique with a hash of the whole name.
        """
        name = self.spec.repository_name or self.metadata.name
        if len(name) <= 128:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        return f"{name[:115].rstrip('.-')}-{digest}"
