"""Reaching a MySQL/MariaDB server: the target URL, TLS, the password, and classified errors.

A target is ``mysql://user[:password]@host[:port]/database`` (``mariadb://`` is the same), with
optional query parameters ``ssl-mode`` (DISABLED, PREFERRED, REQUIRED, VERIFY_CA,
VERIFY_IDENTITY), ``ssl-ca``, ``ssl-cert`` and ``ssl-key``, spelled as the MySQL clients spell
them, ``lock-wait`` (seconds a parallel backup waits for the global read lock, see
:mod:`.snapshot`; default 5, 0 for one connection without the lock) and ``reader`` (``client``,
``driver`` or ``auto``: who reads a backup's rows, see :mod:`.snapshot`).
The CLI's ``--tls*`` flags win over the URL. The password comes, as for every engine,
from :class:`ConnectionOptions.password` (``--password-file`` / ``SAFEHOLD_PASSWORD``), else the
URL, else ``MYSQL_PWD``; it is handed to PyMySQL in memory and to client tools in an in-memory
option file (:mod:`.tools`), and no message built here contains it.

Every PyMySQL error is mapped once onto the classes of :mod:`safehold.engines.base` with a
message that says what to fix; connecting retries the transient ones with backoff.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

import pymysql

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

Conn: TypeAlias = "pymysql.connections.Connection[Any]"
TlsMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
_SSL_MODES: dict[str, TlsMode] = {
    "disabled": "disable", "preferred": "prefer", "required": "require",
    "verify_ca": "verify-ca", "verify_identity": "verify-full",
}
_QUERY_KEYS = {"ssl-mode", "ssl-ca", "ssl-cert", "ssl-key", "lock-wait", "reader"}
DEFAULT_LOCK_WAIT = 5.0  # seconds a parallel backup waits for the global read lock
Reader = Literal["auto", "client", "driver"]
READERS: tuple[Reader, ...] = ("auto", "client", "driver")
# Every session starts in this state (PyMySQL's init_command, the mariadb client's
# --init-command): UTC, so TIMESTAMP values are exact; the sql_mode mysqldump writes with.
SESSION_INIT = ("SET time_zone='+00:00', sql_mode='NO_AUTO_VALUE_ON_ZERO',"
                " net_read_timeout=3600, net_write_timeout=3600, wait_timeout=28800")
SCHEMES = ("mysql", "mariadb")


class ServerGone(EngineError):
    """The connection broke mid-operation, or the server asked to retry (deadlock, DDL)."""

    transient = True


@dataclass(frozen=True)
class Target:
    """A validated connection target. ``password`` never appears in ``repr`` or messages."""

    scheme: str
    host: str
    port: int
    user: str
    database: str
    password: str | None = field(default=None, repr=False)
    tls: TlsMode = "prefer"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    connect_timeout: float = 10.0
    lock_wait: float = DEFAULT_LOCK_WAIT  # see .snapshot; 0: never lock, read on one connection
    reader: Reader = "auto"  # who reads a backup's rows (see .snapshot)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.user}@{self.host}:{self.port}/{self.database}"

    def with_database(self, database: str) -> Target:
        from dataclasses import replace

        return replace(self, database=database)


def parse_target(url: str, options: ConnectionOptions) -> Target:
    """Validate ``url`` (and the options beside it) before anything connects."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"  # never echo a password
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a MySQL target URL: {shown!r}; expected mysql://user@host/db")
    if not parts.hostname:
        raise ValueError(f"target {shown!r} names no host; write {parts.scheme}://user@host/db")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError(f"target {shown!r} has an invalid port (1-65535)") from None
    if not parts.username:
        raise ValueError(f"target {shown!r} names no user; write {parts.scheme}://USER@host/db")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError(
            f"target {shown!r} must name exactly one database: {parts.scheme}://user@host/DB")
    if len(database) > 64 or database != database.strip():
        raise ValueError(f"database name {database!r} is not valid in MySQL (1-64 characters,"
                         " no leading or trailing spaces)")
    if parts.fragment:
        raise ValueError(f"target {shown!r} takes no #fragment")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ValueError(f"target {shown!r}: unknown parameter(s) {', '.join(unknown)};"
                         f" known: {', '.join(sorted(_QUERY_KEYS))}")
    tls: TlsMode = "prefer"
    if "ssl-mode" in query:
        mode = query["ssl-mode"].lower()
        if mode not in _SSL_MODES:
            raise ValueError(f"ssl-mode={query['ssl-mode']!r} is not one of "
                             + ", ".join(m.upper() for m in _SSL_MODES))
        tls = _SSL_MODES[mode]
    lock_wait = _lock_wait(query.get("lock-wait"))
    readers: dict[str, Reader] = {r: r for r in READERS}
    reader = readers.get(query.get("reader", "auto"))
    if reader is None:
        raise ValueError(f"reader={query['reader']!r} is not one of {', '.join(READERS)}"
                         " (client: the mariadb client reads a backup's rows, driver: PyMySQL"
                         " does, auto: the client when it is installed and the server is"
                         " MariaDB)")
    password = resolve_password(options.password, parts.password, "MYSQL_PWD")
    target = Target(
        scheme=parts.scheme, host=parts.hostname, port=port, user=unquote(parts.username),
        database=database, password=password, tls=options.tls or tls,
        ca_file=options.ca_file or query.get("ssl-ca"),
        cert_file=options.cert_file or query.get("ssl-cert"),
        key_file=options.key_file or query.get("ssl-key"),
        connect_timeout=options.connect_timeout,
        lock_wait=lock_wait,
        reader=reader,
    )
    _check_tls(target)
    return target


def _lock_wait(text: str | None) -> float:
    if text is None:
        return DEFAULT_LOCK_WAIT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ValueError(f"lock-wait={text!r} must be seconds from 0 to 3600 (how long a backup"
                         " waits for the global read lock; 0 reads on one connection)")
    return value


def _check_tls(t: Target) -> None:
    if t.tls in ("verify-ca", "verify-full") and not t.ca_file:
        raise ValueError(f"TLS mode {t.tls} verifies the server against a CA: give --tls-ca"
                         " (or ssl-ca= in the URL)")
    if bool(t.cert_file) != bool(t.key_file):
        raise ValueError("a client certificate needs both --tls-cert and --tls-key")
    if t.tls == "disable" and (t.ca_file or t.cert_file):
        raise ValueError("TLS is disabled but TLS files were given; drop them or pick a TLS mode")
    for path in (t.ca_file, t.cert_file, t.key_file):
        if path and not os.path.isfile(path):
            raise ValueError(f"TLS file {path} does not exist")


def _ssl_args(t: Target) -> dict[str, Any]:
    if t.tls == "disable":
        return {"ssl_disabled": True}
    if t.tls == "prefer" and not t.cert_file:
        return {}  # PyMySQL's default: TLS when the server offers it, unverified
    ctx = ssl.create_default_context(cafile=t.ca_file)
    ctx.check_hostname = t.tls == "verify-full"
    ctx.verify_mode = ssl.CERT_REQUIRED if t.tls in ("verify-ca", "verify-full") \
        else ssl.CERT_NONE
    if t.cert_file:
        ctx.load_cert_chain(t.cert_file, keyfile=t.key_file)
    return {"ssl": ctx}


def connect(t: Target, *, database: str | None = "", streaming: bool = False,
            attempts: int = 3) -> Conn:
    """A connection in a known session state, retrying transient failures with backoff.

    ``database`` overrides the target's (None: no default database). The session uses
    utf8mb4, UTC (so TIMESTAMP values are exact) and the ``sql_mode`` mysqldump writes with;
    ``streaming`` selects the unbuffered cursor for reading big tables.
    """
    db = t.database if database == "" else database

    def attempt() -> Conn:
        try:
            conn = _Connection(
                host=t.host, port=t.port, user=t.user, password=t.password or "",
                database=db, charset="utf8mb4", connect_timeout=max(1, int(t.connect_timeout)),
                autocommit=True, max_allowed_packet=1 << 30,
                cursorclass=pymysql.cursors.SSCursor if streaming else pymysql.cursors.Cursor,
                init_command=SESSION_INIT,
                **_ssl_args(t),
            )
        except Exception as exc:
            raise classify(exc, t) from None
        if t.tls in ("require", "verify-ca", "verify-full") and not _uses_tls(conn):
            conn.close()
            raise AuthenticationFailed(f"{t}: TLS mode {t.tls} but the server did not start TLS"
                                       " (is it configured with ssl-cert/ssl-key?)")
        return conn

    return retry_transient(attempt, f"connecting to {t}", attempts=attempts)


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL's connection with one shared context for its opportunistic TLS ("prefer").

    In that mode PyMySQL builds a fresh default context for every connection, which loads the
    system's CA store (about 30 ms each, a sixth of a small backup's run) only to never verify
    against it. The shared one is the same context without the unused store: TLS 1.2+, no
    certificate or host check, exactly what "prefer" promises. Explicit TLS settings still get
    their own context per connection (:func:`_ssl_args`), so a renewed CA file is read anew.
    """

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if isinstance(sslp, dict) and not sslp:
            return _prefer_context()
        return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]


@functools.cache
def _prefer_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _uses_tls(conn: Conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cur.fetchone()
    return bool(row and row[1])


_AUTH = {1045, 1130, 1698, 3159, 1251}
_PERMISSION = {1044, 1142, 1143, 1227, 1370, 1211, 1410}
_TRANSIENT = {1040, 1205, 1213, 1412, 2006, 2013, 2055, 1927}


def classify(exc: BaseException, t: Target | None = None) -> EngineError:
    """The engine error for a PyMySQL (or socket/TLS) failure; message names the fix."""
    if isinstance(exc, EngineError):
        return exc
    where = f"{t}: " if t else ""
    code, message = _code_message(exc)
    if code in _AUTH:
        hint = {3159: "the server requires TLS: use --tls require (or stronger)",
                1130: f"the server does not accept user {t.user if t else '?'} from this host"}
        credentials = "check the user name and the password" \
            f" ({password_sources('MYSQL_PWD', url=True)})"
        if t and t.tls == "disable":  # a REQUIRE SSL account is refused with 1045 as well
            credentials += "; if the account requires TLS, drop --tls disable"
        return AuthenticationFailed(
            f"{where}authentication failed ({code}: {message}); "
            + hint.get(code, credentials))
    if code == 1049:
        return DatabaseMissing(f"{where}database does not exist ({message}); create it or fix"
                               " the database name in the target URL")
    if code == 1146:
        return DatabaseMissing(f"{where}{message}")
    if code in _PERMISSION:
        return PermissionDenied(f"{where}permission denied ({code}: {message}); grant the"
                                " privilege named here to the backup user")
    if code == 2026:
        return AuthenticationFailed(f"{where}TLS failed ({message}); the server may not offer"
                                    " TLS: configure it, or choose --tls prefer/disable")
    if code == 2003 or isinstance(exc, OSError):
        lowered = message.lower()
        if "certificate" in lowered or "ssl" in lowered:
            return AuthenticationFailed(f"{where}TLS handshake failed ({message}); check"
                                        " --tls-ca and the server's certificate/host name")
        if "timed out" in lowered:
            return ConnectTimeout(f"{where}no answer within the connect timeout ({message});"
                                  " check host, port and firewalls, or raise --connect-timeout")
        return HostUnreachable(f"{where}cannot connect ({message}); check that the server runs"
                               " and that host and port are right")
    if code in _TRANSIENT:
        return ServerGone(f"{where}{message} ({code}); retry the operation")
    return EngineError(f"{where}{message}" + (f" ({code})" if code else ""))


def _code_message(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2 \
            and isinstance(exc.args[0], int):
        return exc.args[0], str(exc.args[1])
    return 0, f"{type(exc).__name__}: {exc}"


def run(conn: Conn, sql: str | bytes,
        args: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    """Execute one statement; all rows of its result (classified errors)."""
    return run_warned(conn, sql, args)[0]


def run_warned(conn: Conn, sql: str | bytes,
               args: tuple[Any, ...] | None = None) -> tuple[list[tuple[Any, ...]], int]:
    """:func:`run`, and how many warnings the statement gave (``SHOW WARNINGS`` lists them)."""
    try:
        with conn.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute(sql, args)
            return list(cur.fetchall()), cur.warning_count
    except pymysql.err.MySQLError as exc:
        raise classify(exc) from exc


def quote_name(name: str) -> str:
    """A backquoted identifier: :func:`safehold.engines.mysql.quote.name`."""
    from safehold.engines.mysql import quote

    return quote.name(name)
