"""mongodb.conn.classify: a plaintext server may sit on a TLS handshake until the connect
timeout instead of closing the connection (seen under load: FerretDB, --tls require). The
timeout's error then also says that TLS may not match, as the closed-connection error does;
a timeout with no handshake in it stays a plain timeout."""

from __future__ import annotations

from pymongo.errors import NetworkTimeout, ServerSelectionTimeoutError

from safehold.engines.base import ConnectTimeout, HostUnreachable
from safehold.engines.mongodb.conn import MongoTarget, classify

TARGET = MongoTarget.parse("mongodb://u@127.0.0.1:27017/db", password="pw")
HANDSHAKE = ("127.0.0.1:27017: SSL handshake failed: 127.0.0.1:27017: _ssl.c:989: The handshake"
             " operation timed out (configured timeouts: connectTimeoutMS: 3000.0ms)")


def test_a_handshake_timeout_names_the_tls_mismatch() -> None:
    err = classify(ServerSelectionTimeoutError(HANDSHAKE), TARGET)
    assert isinstance(err, ConnectTimeout)
    assert "did not answer in time" in str(err) and "--connect-timeout" in str(err)
    assert "--tls require" in str(err) and "--tls disable" in str(err)


def test_a_plain_timeout_has_no_tls_hint() -> None:
    err = classify(NetworkTimeout("127.0.0.1:27017: timed out"), TARGET)
    assert isinstance(err, ConnectTimeout)
    assert "--tls" not in str(err)


def test_a_closed_connection_keeps_its_tls_hint() -> None:
    err = classify(ServerSelectionTimeoutError("127.0.0.1:27017: connection closed"), TARGET)
    assert isinstance(err, HostUnreachable)
    assert "--tls require" in str(err)
