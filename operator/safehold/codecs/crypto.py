"""AES-256-GCM envelope encryption: key-encryption keys, wrapped data keys, chunk cipher, MAC.

Every backup gets a random 32-byte data key. It is stored only wrapped (AES-256-GCM) under a
key-encryption key (KEK) named by ``key_id``, with the backup id in the AAD, so rotating a KEK
means re-wrapping data keys and never re-encrypting data. KEKs come from a key file / Secret or
from a passphrase through Argon2id.

Each object encrypts with its own subkey, HKDF-derived from the data key and the object name, so
a chunk or an object moved into another object or backup fails authentication. Each chunk
authenticates its index and a final-chunk flag, which turns reordering and truncation into
authentication failures. Nonces are synthetic (SIV-style): HMAC-SHA256 of the chunk's index,
final flag and plaintext under a separate per-object subkey. The same nonce therefore only ever
encrypts the same plaintext at the same position, which reveals nothing but that equality, and
the stored bytes are deterministic: a backup retried with the same id and data key produces the
same bytes, which is what lets an interrupted upload resume from the parts already stored.

All functions are pure and thread-safe: the pipeline calls ``ChunkCipher`` from a thread pool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from safehold.api.errors import Exit, IntegrityError, KeyProblem

KEY_SIZE = 32
CIPHER = "aes-256-gcm"
NONCE_SIZE = 12
TAG_SIZE = 16
CHUNK_OVERHEAD = NONCE_SIZE + TAG_SIZE
"""Bytes an encrypted chunk adds to its plaintext (nonce prefix + GCM tag)."""

_KEY_HELP = (
    "pass it with --key-file, SAFEHOLD_KEY_FILE or SAFEHOLD_KEY, "
    "or its passphrase with SAFEHOLD_PASSPHRASE"
)


class CryptoError(KeyProblem):
    """Base of every encryption failure."""


class KeyFormatError(CryptoError, KeyProblem, ValueError):
    """Key material or a key record is malformed (not a failed authentication)."""


class MissingKeyError(CryptoError, KeyProblem):
    """The data key was wrapped by a KEK that was not supplied."""


class WrongKeyError(CryptoError, KeyProblem):
    """A KEK with the right id failed to unwrap: wrong key material or a tampered key record."""


class TamperedError(CryptoError, IntegrityError):
    """Ciphertext or a manifest failed authentication."""

    exit_code = Exit.CORRUPT


def _check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_SIZE:
        raise KeyFormatError(f"{what} must be {KEY_SIZE} bytes, got {len(key)}")


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"{what} is not valid base64: {exc}") from None


def _subkey(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(key)


# --- key-encryption keys ----------------------------------------------------------------------


def key_id_for(key: bytes) -> str:
    """A stable, non-secret fingerprint naming a KEK in manifests, e.g. ``k-1f2e…`` (16 hex)."""
    return "k-" + hmac.new(key, b"safehold key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Kek:
    """A key-encryption key. ``repr`` shows only the id, so logs and tracebacks never leak it."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_key(self.key, f"key-encryption key {self.key_id}")

    @classmethod
    def from_key(cls, key: bytes) -> Kek:
        return cls(key_id_for(key), key)


def generate_key() -> bytes:
    """A new random 32-byte key (for a KEK or a backup's data key)."""
    return os.urandom(KEY_SIZE)


def encode_key(key: bytes) -> str:
    """The key-file form of ``key``: base64 and a newline."""
    _check_key(key, "key")
    return base64.b64encode(key).decode("ascii") + "\n"


def kek_from_b64(text: str, source: str = "key") -> Kek:
    """A KEK from base64 text (e.g. ``SAFEHOLD_KEY``); ``source`` names it in error messages."""
    key = _b64decode("".join(text.split()), source)
    if len(key) != KEY_SIZE:
        raise KeyFormatError(
            f"{source} decodes to {len(key)} bytes, expected {KEY_SIZE}: "
            "create a key with `safehold keys generate`"
        )
    return Kek.from_key(key)


def load_key_file(path: str | os.PathLike[str]) -> Kek:
    """Load a KEK from a file holding the key base64-encoded (whitespace allowed) or 32 raw bytes.

    Raw keys are accepted because Kubernetes Secret volumes hand out decoded bytes; base64 is
    what ``safehold keys generate`` writes. The two forms cannot be confused: base64 of a 32-byte
    key is 44 characters.
    """
    data = Path(path).read_bytes()
    if len(data) == KEY_SIZE:
        return Kek.from_key(data)
    text = b"".join(data.split())
    problem = f"{len(data)} bytes that are not base64"
    if not text:
        problem = f"no key ({len(data)} bytes, empty or only whitespace)"
    else:
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
        else:
            if len(key) == KEY_SIZE:
                return Kek.from_key(key)
            problem = f"{len(data)} bytes of base64 that decode to {len(key)} bytes"
    raise KeyFormatError(
        f"key file {path} holds {problem}; a key file holds a {KEY_SIZE}-byte key as base64 "
        f"(44 characters) or {KEY_SIZE} raw bytes: create one with `safehold keys generate`"
    )


# --- passphrase keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters of a passphrase-derived KEK; stored beside the data so it re-derives."""

    salt: bytes
    memory_kib: int
    iterations: int
    lanes: int
    algorithm: str = "argon2id"

    def __post_init__(self) -> None:
        if self.algorithm != "argon2id":
            raise KeyFormatError(
                f"unsupported key derivation {self.algorithm!r}: this safehold supports 'argon2id'"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "salt": base64.b64encode(self.salt).decode("ascii"),
            "memory_kib": self.memory_kib,
            "iterations": self.iterations,
            "lanes": self.lanes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KdfParams:
        try:
            salt, algorithm = data["salt"], data["algorithm"]
            numbers = {k: int(data[k]) for k in ("memory_kib", "iterations", "lanes")}
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFormatError(f"malformed KDF parameters {dict(data)!r}: {exc!r}") from None
        return cls(salt=_b64decode(salt, "KDF salt"), algorithm=algorithm, **numbers)


def new_kdf_params(memory_kib: int = 64 * 1024, iterations: int = 3, lanes: int = 4) -> KdfParams:
    """Fresh parameters with a random salt; the defaults follow RFC 9106's second recommendation
    (64 MiB, 3 passes, 4 lanes). Tests pass a small ``memory_kib`` to stay fast."""
    return KdfParams(salt=os.urandom(16), memory_kib=memory_kib, iterations=iterations, lanes=lanes)


def derive_kek(passphrase: str, params: KdfParams) -> Kek:
    """Derive a KEK from a passphrase (NFC-normalised, so the same text from any keyboard or
    platform yields the same key)."""
    if not passphrase:
        raise KeyFormatError("the passphrase is empty: set SAFEHOLD_PASSPHRASE to a non-empty one")
    kdf = Argon2id(
        salt=params.salt,
        length=KEY_SIZE,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return Kek.from_key(kdf.derive(unicodedata.normalize("NFC", passphrase).encode("utf-8")))


# --- envelope ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under the KEK ``key_id``; JSON-safe through to_dict/from_dict."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def to_dict(self) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "ciphertext": base64.b64encode(self.ciphertext).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WrappedKey:
        try:
            key_id, nonce, ciphertext = data["key_id"], data["nonce"], data["ciphertext"]
        except KeyError as exc:
            raise KeyFormatError(f"wrapped key record lacks {exc.args[0]!r}") from None
        if not isinstance(key_id, str) or not key_id:
            raise KeyFormatError(f"wrapped key record has an invalid key_id {key_id!r}")
        return cls(
            key_id=key_id,
            nonce=_b64decode(nonce, "wrapped key nonce"),
            ciphertext=_b64decode(ciphertext, "wrapped key ciphertext"),
        )


def wrap_key(kek: Kek, data_key: bytes, context: bytes) -> WrappedKey:
    """Encrypt ``data_key`` under ``kek``, bound to ``context`` (the backup's identity)."""
    _check_key(data_key, "data key")
    nonce = os.urandom(NONCE_SIZE)
    return WrappedKey(kek.key_id, nonce, AESGCM(kek.key).encrypt(nonce, data_key, context))


def unwrap_key(
    keks: Mapping[str, Kek] | Sequence[Kek], wrapped: WrappedKey, context: bytes
) -> bytes:
    """Recover a data key with whichever supplied KEK carries ``wrapped.key_id``.

    Raises MissingKeyError when no such KEK was supplied, WrongKeyError when it does not
    authenticate (wrong key material, a tampered record, or a record from another backup).
    """
    by_id = keks if isinstance(keks, Mapping) else {k.key_id: k for k in keks}
    kek = by_id.get(wrapped.key_id)
    if kek is None:
        have = ", ".join(sorted(by_id)) or "none"
        raise MissingKeyError(
            f"this backup's data key is wrapped by key {wrapped.key_id}, which was not supplied "
            f"(supplied: {have}): {_KEY_HELP}"
        )
    try:
        data_key = AESGCM(kek.key).decrypt(wrapped.nonce, wrapped.ciphertext, context)
    except (InvalidTag, ValueError):
        raise WrongKeyError(
            f"key {wrapped.key_id} failed to unwrap this backup's data key: the key material is "
            "not the key with that id, or the key record was altered or copied from another backup"
        ) from None
    if len(data_key) != KEY_SIZE:
        raise WrongKeyError(f"unwrapped data key is {len(data_key)} bytes, expected {KEY_SIZE}")
    return data_key


# --- chunks -----------------------------------------------------------------------------------


class ChunkCipher:
    """Encrypts the chunks of one object under a subkey derived from the data key and its name.

    A blob is ``nonce (12) || ciphertext || tag (16)``. The AAD is ``b"safehold/v1"``, the
    length-prefixed object id, the chunk index (u64 big-endian) and the final flag, so a chunk
    only decrypts at its own position in its own object, and the last chunk must be final.
    """

    def __init__(self, data_key: bytes, object_id: str) -> None:
        _check_key(data_key, "data key")
        self.object_id = object_id
        oid = object_id.encode("utf-8")
        self._aead = AESGCM(_subkey(data_key, b"safehold/v1 object " + oid))
        self._nonce_key = _subkey(data_key, b"safehold/v1 nonce " + oid)
        self._aad_prefix = b"safehold/v1" + struct.pack(">I", len(oid)) + oid

    def __repr__(self) -> str:
        return f"ChunkCipher(object_id={self.object_id!r})"

    def _aad(self, index: int, final: bool) -> bytes:
        if not 0 <= index < 1 << 64:
            raise ValueError(f"chunk index must be in 0..2**64-1, got {index}")
        return self._aad_prefix + struct.pack(">QB", index, 1 if final else 0)

    def encrypt(self, index: int, final: bool, plaintext: bytes) -> bytes:
        """Encrypt chunk ``index``; ``final`` marks the object's last chunk."""
        return b"".join(self.seal(index, final, plaintext))

    def seal(self, index: int, final: bool, plaintext: bytes) -> tuple[bytes, bytes]:
        """:meth:`encrypt`'s blob in its two parts, ``nonce`` and ``ciphertext || tag``, for a
        writer that need not join them (the pipeline writes a frame's parts in turn)."""
        aad = self._aad(index, final)
        nonce = self.nonce(index, final, plaintext)
        return nonce, self._aead.encrypt(nonce, plaintext, aad)

    def nonce(self, index: int, final: bool, plaintext: bytes) -> bytes:
        """HMAC-SHA256(nonce subkey, "nonce" || index || final || plaintext)[:12]."""
        mac = hmac.new(self._nonce_key, b"nonce", hashlib.sha256)
        mac.update(struct.pack(">QB", index, 1 if final else 0))
        mac.update(plaintext)
        return mac.digest()[:NONCE_SIZE]

    def decrypt(self, index: int, final: bool, blob: bytes | memoryview) -> bytes:
        """Decrypt chunk ``index``; raise TamperedError unless it is exactly what was written."""
        aad = self._aad(index, final)  # before the try: a bad index is a caller bug, not tamper
        view = memoryview(blob)  # sliced without copying the ciphertext
        try:
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
        except (InvalidTag, ValueError):
            raise TamperedError(
                f"chunk {index}{' (final)' if final else ''} of object {self.object_id!r} failed "
                "authentication: it was modified, reordered, truncated, or comes from another "
                "object or backup"
            ) from None


# --- manifest ---------------------------------------------------------------------------------


def manifest_mac(data_key: bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of the manifest body under a key derived from the backup's data key."""
    _check_key(data_key, "data key")
    key = _subkey(data_key, b"safehold/v1 manifest")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_manifest_mac(data_key: bytes, body: bytes, mac: str) -> None:
    """Raise TamperedError unless ``mac`` authenticates ``body`` (constant-time compare)."""
    expected = manifest_mac(data_key, body).encode("ascii")
    if not hmac.compare_digest(expected, mac.encode("utf-8")):
        raise TamperedError(
            "manifest MAC mismatch: manifest.json was modified after the backup wrote it"
        )


# --- target policy records --------------------------------------------------------------------


def policy_mac(kek: Kek, body: bytes) -> str:
    """Hex HMAC-SHA256 of a target's policy record under a key derived from a KEK (a policy
    record exists before any data key, and outlives every backup)."""
    key = _subkey(kek.key, b"safehold/v1 target policy")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_policy_mac(kek: Kek, body: bytes, mac: str) -> None:
    expected = policy_mac(kek, body).encode("ascii")
    if not hmac.compare_digest(expected, mac.encode("utf-8")):
        raise TamperedError("policy record MAC mismatch")
