"""Reaching a MongoDB server: the target URI, TLS, the password, and errors classified once.

The URI is validated by pymongo's own parser before anything connects, so a typo in an option
fails at once with pymongo's explanation. The password (from the URI, ``--password-file`` or
``SAFEHOLD_PASSWORD``) is handed to ``MongoClient`` as a keyword and removed from the URI we keep,
and every message that leaves this package goes through :func:`redact`, so it cannot reach logs,
errors or manifests even when a driver error echoes the connection string.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from pymongo import MongoClient, uri_parser
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
)

from safehold.engines.base import (
    AuthenticationFailed,
    ConnectionOptions,
    ConnectTimeout,
    DatabaseMissing,
    EngineError,
    HostUnreachable,
    PermissionDenied,
    UnsupportedError,
)
from safehold.engines.common import password_sources, resolve_password

SCHEMES = ("mongodb", "mongodb+srv")
# Mechanisms that authenticate without a password (certificates, Kerberos, cloud identity).
_PASSWORDLESS = {"MONGODB-X509", "GSSAPI", "MONGODB-AWS", "MONGODB-OIDC"}
# Server error codes (src/mongo/base/error_codes.yml).
AUTH_FAILED, UNAUTHORIZED, NAMESPACE_NOT_FOUND = 18, 13, 26
COMMAND_NOT_FOUND, COMMAND_NOT_SUPPORTED, NOT_IMPLEMENTED = 59, 115, 238
UNSUPPORTED_CODES = {COMMAND_NOT_FOUND, COMMAND_NOT_SUPPORTED, NOT_IMPLEMENTED}
_USERINFO = re.compile(r"(mongodb(?:\+srv)?://)[^@/?\s]*@")


@dataclass(frozen=True)
class MongoTarget:
    """A validated ``mongodb://`` or ``mongodb+srv://`` target, without its password.

    ``uri`` keeps every host and option but no user information; ``username`` and ``password``
    travel separately (the password is never part of ``repr``).
    """

    uri: str
    database: str
    hosts: str  # for messages: "h1:27017,h2:27017" or the SRV name
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    auth_mechanism: str | None = None

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> MongoTarget:
        """Validate ``url`` (pymongo's parser, no DNS or network) and split the credentials off.

        ``password`` (from --password-file / SAFEHOLD_PASSWORD) wins over one in the URI.
        """
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in SCHEMES:
            raise ValueError(f"not a MongoDB URI: {redact(url)!r}; expected"
                             " mongodb://[user@]host[:port]/database[?options] or mongodb+srv://")
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        userinfo, at, hosts = rest[:end].rpartition("@")
        tail = rest[end:]
        parsed = _validate(scheme, hosts, tail, url)
        database = parsed.get("database")
        if not database:
            raise ValueError(
                f"MongoDB target {redact(url)!r} names no database: add it to the path, e.g."
                f" {scheme}://{hosts}/mydb (use ?authSource=admin when the user lives in admin)")
        if parsed.get("collection"):
            raise ValueError(f"MongoDB target {redact(url)!r} names a collection"
                             f" ({database}.{parsed['collection']}); give only the database")
        user = in_url = None
        if at:
            name, colon, secret = userinfo.partition(":")
            user, in_url = unquote(name), (secret if colon else None)
        # A password without a user means nothing to MongoDB (SAFEHOLD_PASSWORD may be set for
        # another target): ignore it rather than fail.
        pw = resolve_password(password, in_url) if user else None
        mechanism = parsed["options"].get("authMechanism")
        if user and pw is None and mechanism not in _PASSWORDLESS:
            raise ValueError(
                f"MongoDB user {user!r} has no password: put it in {password_sources()}"
                " (or, less safely, in the URI)")
        return cls(uri=f"{scheme}://{hosts}{tail}", database=database,
                   hosts=hosts, username=user, password=pw, auth_mechanism=mechanism)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, quote(self.password or "", safe=""))
                     if s)


def _validate(scheme: str, hosts: str, tail: str, url: str) -> dict[str, Any]:
    """pymongo's validation of hosts, database and options. An SRV URI is checked in its
    ``mongodb://`` form plus the SRV rules, because parsing ``mongodb+srv://`` resolves DNS."""
    if scheme == "mongodb+srv":
        if "," in hosts or ":" in hosts:
            raise ValueError(f"{redact(url)!r}: a mongodb+srv:// URI names exactly one host"
                             " name without a port (the SRV record lists the servers)")
        if re.search(r"[?&]directConnection=true", tail, re.IGNORECASE):
            raise ValueError(f"{redact(url)!r}: directConnection=true is not allowed with"
                             " mongodb+srv://")
    try:
        return uri_parser.parse_uri(f"mongodb://{hosts}{tail}", validate=True, warn=False)
    except (ConfigurationError, ValueError, OSError) as exc:
        raise ValueError(f"invalid MongoDB URI {redact(url)!r}: {redact(str(exc))}") from None


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without passwords: user information in URIs and any of ``secrets``."""
    text = _USERINFO.sub(r"\1***@", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def tls_options(options: ConnectionOptions) -> dict[str, Any]:
    """MongoClient keywords for the common TLS flags (they override the URI's own options).

    MongoDB has no opportunistic TLS, so ``prefer`` (like no flag) leaves the URI in charge.
    ``require`` encrypts without checking the certificate unless a CA is given; ``verify-ca``
    checks the chain but not the host name; ``verify-full`` checks both (pymongo's default).
    """
    kw: dict[str, Any] = {}
    mode = options.tls
    if mode == "disable":
        return {"tls": False}
    if options.ca_file:
        kw["tlsCAFile"] = options.ca_file
    if mode == "require" and not options.ca_file:
        kw["tlsAllowInvalidCertificates"] = True
    elif mode in ("require", "verify-ca"):  # require with a CA behaves as verify-ca (libpq)
        kw["tlsAllowInvalidHostnames"] = True
    if mode in ("require", "verify-ca", "verify-full") or options.ca_file or options.cert_file:
        kw["tls"] = True
    return kw


def make_client(target: MongoTarget, options: ConnectionOptions, **extra: Any
                ) -> MongoClient[Any]:
    """A MongoClient for ``target`` (the caller closes it); timeouts follow
    ``connect_timeout``. pymongo connects lazily: the first command reaches the server."""
    timeout_ms = int(options.connect_timeout * 1000)
    kw: dict[str, Any] = {
        "connectTimeoutMS": timeout_ms, "serverSelectionTimeoutMS": timeout_ms,
        "appname": "safehold", **tls_options(options), **extra,
    }
    if target.username:
        kw["username"] = target.username
    if target.password is not None:
        kw["password"] = target.password
    with _client_certificate(options) as cert:
        if cert:
            kw["tlsCertificateKeyFile"] = cert
        with guard(target):
            return MongoClient(target.uri, **kw)


@contextmanager
def _client_certificate(options: ConnectionOptions) -> Iterator[str | None]:
    """pymongo wants certificate and key in one PEM; join separate files in a private temp
    file that lives only while the client loads it (MongoClient reads it when created)."""
    if not options.cert_file:
        if options.key_file:
            raise ValueError("--tls-key was given without --tls-cert")
        yield None
        return
    if not options.key_file or options.key_file == options.cert_file:
        yield options.cert_file
        return
    fd, path = tempfile.mkstemp(prefix="safehold-mongo-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            for part in (options.cert_file, options.key_file):
                with open(part, "rb") as src:
                    out.write(src.read().rstrip(b"\n") + b"\n")
        yield path
    finally:
        os.unlink(path)


_TLS_MISMATCH = ("; or TLS does not match the server: it may require TLS (--tls require or"
                 " verify-full) or not offer it (--tls disable)")


def classify(exc: PyMongoError, target: MongoTarget) -> EngineError:
    """Map a pymongo error onto the engine error classes, with a message that says what to fix
    and no password in it."""
    where = f"MongoDB at {target.hosts}"
    if isinstance(exc, OperationFailure):
        details = exc.details or {}
        # Bulk write errors carry the offending documents: keep only the first message.
        first = (details.get("writeErrors") or [{}])[0]
        detail = redact(str(details.get("errmsg") or first.get("errmsg") or exc)[:500],
                        target.secrets())
        code = exc.code
        if code == AUTH_FAILED:
            return AuthenticationFailed(
                f"{where}: authentication as {target.username!r} failed ({detail}); check the"
                f" user name, the password ({password_sources()}) and authSource"
                " (the database that holds the user, usually ?authSource=admin)")
        if code == UNAUTHORIZED:
            return PermissionDenied(f"{where}: {detail}; grant the user the missing privilege"
                                    " (backup needs the 'backup' or 'read' role, restore"
                                    " 'restore' or 'readWrite' on the database)")
        if code == NAMESPACE_NOT_FOUND:
            return DatabaseMissing(f"{where}: {detail}")
        if code in UNSUPPORTED_CODES:
            return UnsupportedError(f"{where} does not support this: {detail}")
        return EngineError(f"{where}: {detail} (code {code})")
    # Server-selection errors append the whole topology description: keep the first reason.
    detail = redact(str(exc).split(", Timeout: ")[0], target.secrets())
    if isinstance(exc, NetworkTimeout) or (
            isinstance(exc, ConnectionFailure) and "timed out" in detail and
            "refused" not in detail):
        # A plaintext server may also just sit on a TLS handshake until the timeout.
        tls_hint = _TLS_MISMATCH if "SSL handshake" in detail else ""
        return ConnectTimeout(f"{where} did not answer in time ({detail}); check the host,"
                              f" firewalls, or raise --connect-timeout{tls_hint}")
    if isinstance(exc, ConnectionFailure):
        if re.search(r"SSL|certificate|TLS", detail):
            return EngineError(f"{where}: TLS handshake failed ({detail}); check --tls,"
                               " --tls-ca (the CA that signed the server's certificate) and"
                               " the host name in the URI")
        # A TLS-only server closes a plaintext connection; a plaintext one never answers a TLS
        # handshake (no server found): both look like an unreachable host, so say so.
        tls_hint = _TLS_MISMATCH \
            if re.search(r"connection closed|No servers found yet", detail) else ""
        return HostUnreachable(f"{where} is unreachable ({detail}); check the host and port,"
                               f" and that the server is running{tls_hint}")
    if isinstance(exc, ConfigurationError) and "DNS" in detail:
        return HostUnreachable(f"{where}: DNS lookup failed ({detail})")
    return EngineError(f"{where}: {type(exc).__name__}: {detail}")


@contextmanager
def guard(target: MongoTarget) -> Iterator[None]:
    """Turn pymongo errors raised inside into classified engine errors (without the driver's
    traceback chain, which may carry connection details)."""
    try:
        yield
    except PyMongoError as exc:
        raise classify(exc, target) from None
