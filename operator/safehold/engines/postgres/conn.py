"""Where a PostgreSQL target lives and how to log in: URL parsing, password, TLS, errors.

A target is ``postgresql://user[:password]@host[:port]/database[?sslmode=...]``. Everything is
validated before the first connection, so a typo is a clear usage error (exit 2), not a libpq
message. The password comes from, in order: ``ConnectionOptions.password`` (``--password-file``
or ``SAFEHOLD_PASSWORD``, the most explicit), the URL, then ``PGPASSWORD``; ``~/.pgpass`` still
works when none is given. It reaches psycopg2 as a keyword and client tools through a 0600
in-memory passfile (``PGPASSFILE``, see :mod:`.procs`) only: never their environment or argv,
logs, error messages or manifests.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg2
import psycopg2.extensions

from safehold.engines.base import (
    AuthenticationFailed,
    ConnectionOptions,
    ConnectTimeout,
    DatabaseMissing,
    EngineError,
    HostUnreachable,
    PermissionDenied,
)
from safehold.engines.common import password_sources, resolve_password, retry_transient

SCHEMES = ("postgresql", "postgres")
MAINTENANCE_DBS = ("postgres", "template1")  # where admin_connection logs in
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_QUERY_KEYS = {"sslmode", "sslrootcert", "sslcert", "sslkey", "host", "port", "user",
               "dbname", "connect_timeout", "application_name"}


@dataclass(frozen=True)
class PgTarget:
    """A validated connection target; ``describe()`` is safe to print (no password)."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout: float = 10.0
    application_name: str = "safehold"
    # Server settings of the tools' sessions (PGOPTIONS -c name=value): see staging().
    session_settings: tuple[tuple[str, str], ...] = ()

    def describe(self, database: str | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{self.user}@{host}:{self.port}/{database or self.database}"

    def on(self, database: str) -> PgTarget:
        """The same server and credentials, another database."""
        return replace(self, database=database)

    def staging(self, database: str) -> PgTarget:
        """The staging database ``database`` of a whole restore (restore.py), for the tools that
        load it: their sessions commit without waiting for the WAL flush
        (``synchronous_commit=off``). Nothing durable is given up: a crash before the swap
        loses only a staging database, which the next restore drops; the swap's own commit
        waits for the flush, and the WAL, being one sequence, is flushed up to it. With fsync
        on, pg_restore otherwise waits for a flush at every commit: each CREATE, COPY and
        index before PostgreSQL 17, each batch (archive.TRANSACTION_SIZE) from 17 on."""
        return replace(self, database=database,
                       session_settings=(("synchronous_commit", "off"),))

    def libpq_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user, "dbname": self.database,
            "connect_timeout": _timeout_seconds(self.connect_timeout),
            "application_name": self.application_name,
        }
        if self.password is not None:
            kwargs["password"] = self.password
        for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
            if getattr(self, key):
                kwargs[key] = getattr(self, key)
        return kwargs

    def tool_env(self) -> dict[str, str]:
        """The connection as PG* variables for pg_dump/pg_restore/psql, password excepted.

        Only these reach the tools (see :mod:`safehold.engines.childenv`): an inherited
        PGOPTIONS or PGSERVICE must not change what is dumped (PGOPTIONS carries only
        ``session_settings``), and the password travels in a passfile (:mod:`.procs`), never
        in the environment.
        """
        env = {
            "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
            "PGDATABASE": self.database, "PGAPPNAME": self.application_name,
            "PGCONNECT_TIMEOUT": str(_timeout_seconds(self.connect_timeout)),
        }
        for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
            if getattr(self, key):
                env[f"PG{key.upper()}"] = getattr(self, key)
        if self.session_settings:  # names and values are ours: no quoting needed
            env["PGOPTIONS"] = " ".join(f"-c {name}={value}"
                                        for name, value in self.session_settings)
        return env

    def redact(self, text: str) -> str:
        """``text`` with the password masked (defence in depth: libpq does not echo it)."""
        if self.password and len(self.password) >= 3:
            return text.replace(self.password, "***")
        return text


def _timeout_seconds(timeout: float) -> int:
    # libpq takes whole seconds and treats 1 as 2; never 0 (which would mean "wait forever").
    return max(2, math.ceil(timeout))


def parse_target(url: str, options: ConnectionOptions) -> PgTarget:
    """Validate ``url`` + ``options`` into a :class:`PgTarget`; ValueError says what to fix."""
    parts = urlsplit(url)
    shown = _without_password(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {shown!r}; expected postgresql://user@host/db")
    if parts.fragment:
        raise ValueError(f"PostgreSQL URL {shown!r} has a fragment (#...); remove it")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ValueError(f"PostgreSQL URL {shown!r}: unknown parameter(s) {', '.join(unknown)};"
                         f" supported: {', '.join(sorted(_QUERY_KEYS))}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"PostgreSQL URL {shown!r} has an invalid port; use 1-65535") from None
    host = query.get("host") or unquote(parts.hostname or "")
    if not host:
        raise ValueError(f"PostgreSQL URL {shown!r} names no host; write"
                         " postgresql://user@HOST:5432/db (or ?host=/socket/dir)")
    if "," in host or "," in parts.netloc:
        raise ValueError(f"PostgreSQL URL {shown!r} lists several hosts; Safehold backs up one"
                         " server: name the primary (or the standby to dump from)")
    port = int(query.get("port") or port or 5432)
    if not 1 <= port <= 65535:
        raise ValueError(f"PostgreSQL URL {shown!r}: port {port} is outside 1-65535")
    database = query.get("dbname") or unquote(parts.path.lstrip("/"))
    if not database or ("/" in database and not query.get("dbname")):  # ?dbname= takes any
        raise ValueError(f"PostgreSQL URL {shown!r} must name one database:"
                         " postgresql://user@host:5432/DATABASE")
    user = query.get("user") or unquote(parts.username or "") or os.environ.get("PGUSER") \
        or _os_user()
    password = resolve_password(options.password, parts.password, "PGPASSWORD")
    if password is not None:
        check_passfile_password(password)
    timeout = options.connect_timeout
    if "connect_timeout" in query:
        try:
            timeout = float(query["connect_timeout"])
        except ValueError:
            raise ValueError(f"PostgreSQL URL {shown!r}: connect_timeout must be a number of"
                             " seconds") from None
    target = PgTarget(
        host=host, port=port, user=user, database=database, password=password,
        sslmode=options.tls or query.get("sslmode") or None,
        sslrootcert=options.ca_file or query.get("sslrootcert") or None,
        sslcert=options.cert_file or query.get("sslcert") or None,
        sslkey=options.key_file or query.get("sslkey") or None,
        connect_timeout=timeout,
        application_name=query.get("application_name") or "safehold",
    )
    _check_tls(target, shown)
    return target


def check_passfile_password(password: str) -> None:
    """Client tools get the password in a passfile, whose lines cannot hold every character."""
    if any(c in password for c in "\r\n\0"):
        raise ValueError("the PostgreSQL password holds a line break or NUL byte, which the"
                         " client tools' passfile cannot carry; choose a password without one")


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _check_tls(t: PgTarget, shown: str) -> None:
    if t.sslmode is not None and t.sslmode not in SSL_MODES:
        raise ValueError(f"{shown!r}: sslmode {t.sslmode!r} is not one of {', '.join(SSL_MODES)}")
    if t.sslmode in ("verify-ca", "verify-full") and not t.sslrootcert:
        default = Path.home() / ".postgresql" / "root.crt"
        if not default.exists():
            raise ValueError(f"TLS mode {t.sslmode} verifies the server's certificate and needs"
                             " the CA that signed it: pass --tls-ca FILE (or sslrootcert=FILE)")
    if (t.sslcert is None) != (t.sslkey is None):
        raise ValueError("a TLS client certificate needs both --tls-cert and --tls-key")
    for what, path in (("CA file", t.sslrootcert), ("client certificate", t.sslcert),
                       ("client key", t.sslkey)):
        if path and path != "system" and not os.access(path, os.R_OK):
            raise ValueError(f"TLS {what} {path} does not exist or is not readable")
    if t.sslkey and os.stat(t.sslkey).st_mode & 0o077 and os.stat(t.sslkey).st_uid == os.getuid():
        raise ValueError(f"TLS client key {t.sslkey} is readable by group or others; libpq"
                         f" refuses it: chmod 600 {t.sslkey}")


# -- errors ------------------------------------------------------------------------------------

_BY_SQLSTATE: dict[str, type[EngineError]] = {
    "28P01": AuthenticationFailed, "28000": AuthenticationFailed,
    "3D000": DatabaseMissing, "42501": PermissionDenied,
    "57P03": HostUnreachable, "53300": HostUnreachable,
}
# libpq reports connection failures without a SQLSTATE; the texts are stable across 13-18.
_BY_TEXT: list[tuple[str, type[EngineError]]] = [
    (r"password authentication failed|no password supplied|authentication failed"
     r"|no pg_hba\.conf entry|pg_hba\.conf rejects|certificate verify failed|certificate"
     r" (is not|has)|does not match host name|root certificate file|server does not support ssl"
     r"|ssl is not enabled"
     r"|role \".*\" does not exist", AuthenticationFailed),
    (r"database \".*\" does not exist", DatabaseMissing),
    (r"permission denied|must be owner|must be superuser|must have privileges|must be a member"
     r"|insufficient privilege", PermissionDenied),
    (r"timeout expired|timed out", ConnectTimeout),
    (r"connection refused|could not translate host name|no route to host|network is"
     r" unreachable|name or service not known|temporary failure in name resolution"
     r"|server closed the connection unexpectedly|the database system is (starting up|shutting"
     r" down|in recovery mode)|too many clients|connection to server .* failed"
     r"|could not connect to server", HostUnreachable),
]
_HINTS: dict[type[EngineError], str] = {
    AuthenticationFailed: f"check the user and password ({password_sources('PGPASSWORD')}),"
                          " the TLS settings and the server's pg_hba.conf",
    DatabaseMissing: "check the database name in the target URL",
    PermissionDenied: "grant the privilege named above to the backup role",
    ConnectTimeout: "check that the host is reachable; raise --connect-timeout for slow links",
    HostUnreachable: "check the host and port, and that the server runs and accepts TCP"
                     " connections",
}
# TLS failures are AuthenticationFailed too, but their fix is in the TLS options, not the password.
_TLS_TEXT = re.compile(r"certificate|server does not support ssl|ssl is not enabled", re.I)
_TLS_HINT = ("check the TLS options: --tls-ca must be the CA that signed the server's certificate"
             " and the host in the URL a name the certificate was issued for (--tls verify-ca"
             " skips the name check); --tls require/verify-ca/verify-full need TLS enabled on"
             " the server")


def classify(message: str, target: PgTarget, *, sqlstate: str | None = None,
             doing: str = "") -> EngineError:
    """One classified error for a libpq/psycopg2 message or a client tool's stderr."""
    text = target.redact(" ".join(message.split()))
    kind = _BY_SQLSTATE.get(sqlstate or "")
    if kind is None:
        kind = next((k for pattern, k in _BY_TEXT if re.search(pattern, text, re.I)),
                    EngineError)
    hint = _TLS_HINT if kind is AuthenticationFailed and _TLS_TEXT.search(text) \
        else _HINTS.get(kind)
    where = f"{doing} " if doing else ""
    return kind(f"PostgreSQL {target.describe()}: {where}failed: {text}"
                + (f" ({hint})" if hint else ""))


def from_psycopg(exc: psycopg2.Error, target: PgTarget, doing: str = "") -> EngineError:
    return classify(str(exc) or type(exc).__name__, target, sqlstate=exc.pgcode, doing=doing)


def connect(target: PgTarget, *, attempts: int = 3) -> psycopg2.extensions.connection:
    """A psycopg2 connection (autocommit off), classified errors, transient ones retried."""

    def once() -> psycopg2.extensions.connection:
        try:
            return psycopg2.connect(**target.libpq_kwargs())
        except psycopg2.Error as exc:
            raise from_psycopg(exc, target, "connecting") from None

    return retry_transient(once, f"connecting to {target.describe()}", attempts=attempts)


def admin_connection(target: PgTarget) -> psycopg2.extensions.connection:
    """An autocommit connection to a maintenance database of the target's server."""
    last: EngineError | None = None
    for name in MAINTENANCE_DBS:
        try:
            conn = connect(target.on(name))
        except EngineError as exc:
            last = exc
            continue
        conn.autocommit = True
        return conn
    assert last is not None
    raise last
