"""A throw-away certificate authority for the TLS tests (``cryptography``, no openssl CLI).

Everything is generated in a second (ECDSA P-256 keys), written as PEM, private keys with mode
0600 (PostgreSQL and libpq refuse group/world-readable keys). Usable outside pytest::

    ca = CertAuthority.create(Path("/tmp/ca"))
    server = ca.issue("server")            # SANs: DNS localhost + IP 127.0.0.1
    other = ca.issue("elsewhere", dns=("db.example",), ips=())
    print(ca.cert, server.cert, server.key)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key on disk (PEM)."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.chmod(path, 0o600)


class CertAuthority:
    """A self-signed CA in ``directory`` (``ca.pem`` + ``ca.key``) that issues leaf certs."""

    def __init__(self, directory: Path, name: str, key: ec.EllipticCurvePrivateKey,
                 cert: x509.Certificate) -> None:
        self.directory = directory
        self.name = name
        self._key = key
        self._cert = cert
        self.cert = directory / f"{name}.pem"

    @classmethod
    def create(cls, directory: Path, name: str = "ca") -> CertAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"Safehold test CA {name}"))
            .issuer_name(_name(f"Safehold test CA {name}"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, name, key, cert)
        ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(directory / f"{name}.key", key)
        return ca

    def issue(self, name: str, *, dns: Sequence[str] = ("localhost",),
              ips: Sequence[str] = ("127.0.0.1",), client: bool = False) -> KeyPair:
        """A leaf certificate ``<name>.pem`` + ``<name>.key`` signed by this CA.

        The subject alternative names are exactly ``dns`` and ``ips`` (clients match host names
        against SANs only); ``client`` makes it a client certificate whose CN is ``name``.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        pair = KeyPair(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair
