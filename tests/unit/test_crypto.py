"""Envelope encryption: KEKs, key files, passphrase KDF, key wrapping, chunk AEAD, manifest MAC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from safehold.codecs.crypto import (
    CHUNK_OVERHEAD,
    KEY_SIZE,
    ChunkCipher,
    CryptoError,
    KdfParams,
    Kek,
    KeyFormatError,
    MissingKeyError,
    TamperedError,
    WrappedKey,
    WrongKeyError,
    derive_kek,
    encode_key,
    generate_key,
    kek_from_b64,
    key_id_for,
    load_key_file,
    manifest_mac,
    new_kdf_params,
    unwrap_key,
    verify_manifest_mac,
    wrap_key,
)

CONTEXT = b"safehold/v1 backup 20240101T000000Z-abcd"
# Argon2id's minimum is 8 KiB per lane: tiny parameters keep the KDF tests in milliseconds.
FAST_KDF = {"memory_kib": 64, "iterations": 1, "lanes": 1}


@pytest.fixture
def kek() -> Kek:
    return Kek.from_key(generate_key())


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# --- keys -------------------------------------------------------------------------------------


def test_key_id_is_a_stable_fingerprint() -> None:
    key = bytes(range(32))
    assert key_id_for(key) == key_id_for(bytes(range(32)))
    assert key_id_for(key) != key_id_for(generate_key())
    assert key_id_for(key).startswith("k-")
    assert len(key_id_for(key)) == 18
    int(key_id_for(key)[2:], 16)  # hex


def test_generate_key_is_random_and_sized() -> None:
    assert len(generate_key()) == KEY_SIZE
    assert generate_key() != generate_key()


def test_kek_repr_hides_the_key(kek: Kek) -> None:
    for text in (repr(kek), str(kek)):
        assert kek.key_id in text
        assert kek.key.hex() not in text
        assert repr(kek.key) not in text
        assert base64.b64encode(kek.key).decode() not in text


def test_kek_rejects_wrong_key_length() -> None:
    with pytest.raises(KeyFormatError, match="must be 32 bytes, got 16"):
        Kek("k-x", b"\x00" * 16)


def test_key_file_base64_with_whitespace(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "kek"
    path.write_text(encode_key(key))
    assert encode_key(key).endswith("\n")
    assert load_key_file(path) == Kek.from_key(key)
    b64 = base64.b64encode(key).decode()
    path.write_text(f"  {b64[:20]}\n{b64[20:]}\r\n\n")
    assert load_key_file(str(path)).key == key


def test_key_file_raw_bytes(tmp_path: Path) -> None:
    key = b"\n" + generate_key()[1:]  # whitespace bytes inside a raw key must survive
    path = tmp_path / "raw"
    path.write_bytes(key)
    assert load_key_file(path) == Kek(key_id_for(key), key)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "holds no key (0 bytes, empty or only whitespace)"),
        (b" \n", "holds no key (2 bytes"),
        (b"\x00" * 31, "holds 31 bytes that are not base64"),
        (b"\x00" * 33, "holds 33 bytes that are not base64"),
        (base64.b64encode(b"k" * 16) + b"\n", "25 bytes of base64 that decode to 16 bytes"),
        (b"this is not a key, it is a sentence\n", "that are not base64"),
    ],
)
def test_bad_key_file_names_file_length_and_fix(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFormatError) as info:
        load_key_file(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "safehold keys generate" in message
    assert isinstance(info.value, ValueError)


def test_kek_from_b64() -> None:
    key = generate_key()
    assert kek_from_b64(encode_key(key)).key == key
    with pytest.raises(KeyFormatError, match="SAFEHOLD_KEY decodes to 3 bytes, expected 32"):
        kek_from_b64("YWJj", source="SAFEHOLD_KEY")
    with pytest.raises(KeyFormatError, match="SAFEHOLD_KEY is not valid base64"):
        kek_from_b64("not base64!", source="SAFEHOLD_KEY")


# --- passphrase KDF ---------------------------------------------------------------------------


def test_kdf_is_deterministic_per_salt() -> None:
    params = new_kdf_params(**FAST_KDF)
    first = derive_kek("correct horse battery staple", params)
    assert derive_kek("correct horse battery staple", params) == first
    assert first.key_id == key_id_for(first.key)
    assert derive_kek("correct horse battery stapler", params) != first
    other_salt = new_kdf_params(**FAST_KDF)
    assert other_salt.salt != params.salt
    assert derive_kek("correct horse battery staple", other_salt) != first


def test_kdf_cost_parameters_change_the_key() -> None:
    params = new_kdf_params(**FAST_KDF)
    stronger = KdfParams(salt=params.salt, memory_kib=128, iterations=2, lanes=1)
    assert derive_kek("pw", stronger) != derive_kek("pw", params)


def test_kdf_normalises_unicode() -> None:
    params = new_kdf_params(**FAST_KDF)
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert derive_kek(composed, params) == derive_kek(decomposed, params)


def test_kdf_params_round_trip_through_json() -> None:
    params = new_kdf_params(**FAST_KDF)
    data = json.loads(json.dumps(params.to_dict()))
    assert data["algorithm"] == "argon2id"
    assert KdfParams.from_dict(data) == params


def test_kdf_defaults_are_strong() -> None:
    params = new_kdf_params()
    assert (params.memory_kib, params.iterations, params.lanes) == (64 * 1024, 3, 4)
    assert len(params.salt) == 16


def test_kdf_rejects_bad_input() -> None:
    params = new_kdf_params(**FAST_KDF)
    with pytest.raises(KeyFormatError, match="passphrase is empty"):
        derive_kek("", params)
    with pytest.raises(KeyFormatError, match="unsupported key derivation 'scrypt'"):
        KdfParams.from_dict({**params.to_dict(), "algorithm": "scrypt"})
    with pytest.raises(KeyFormatError, match="malformed KDF parameters"):
        KdfParams.from_dict({"algorithm": "argon2id", "salt": "AAAA"})
    with pytest.raises(KeyFormatError, match="KDF salt is not valid base64"):
        KdfParams.from_dict({**params.to_dict(), "salt": "***"})


# --- envelope ---------------------------------------------------------------------------------


def test_wrap_unwrap_round_trip(kek: Kek) -> None:
    data_key = generate_key()
    wrapped = wrap_key(kek, data_key, CONTEXT)
    assert wrapped.key_id == kek.key_id
    assert data_key not in wrapped.ciphertext
    assert unwrap_key([kek], wrapped, CONTEXT) == data_key
    assert unwrap_key({kek.key_id: kek}, wrapped, CONTEXT) == data_key


def test_wrapped_key_round_trips_through_json(kek: Kek) -> None:
    data_key = generate_key()
    wrapped = wrap_key(kek, data_key, CONTEXT)
    restored = WrappedKey.from_dict(json.loads(json.dumps(wrapped.to_dict())))
    assert restored == wrapped
    assert unwrap_key([kek], restored, CONTEXT) == data_key


def test_rotation_picks_the_kek_named_by_the_record(kek: Kek) -> None:
    """Several KEKs supplied (old + new during rotation): the record's key_id selects one."""
    old, new = kek, Kek.from_key(generate_key())
    data_key = generate_key()
    rewrapped = wrap_key(new, unwrap_key([old], wrap_key(old, data_key, CONTEXT), CONTEXT), CONTEXT)
    assert unwrap_key([old, new], rewrapped, CONTEXT) == data_key
    assert unwrap_key([new], rewrapped, CONTEXT) == data_key


def test_wrap_uses_fresh_nonces(kek: Kek) -> None:
    data_key = generate_key()
    first, second = wrap_key(kek, data_key, CONTEXT), wrap_key(kek, data_key, CONTEXT)
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_missing_key_names_the_key_id_and_how_to_supply_it(kek: Kek) -> None:
    wrapped = wrap_key(kek, generate_key(), CONTEXT)
    other = Kek.from_key(generate_key())
    supplied_sets: list[list[Kek] | dict[str, Kek]] = [[other], {}, []]
    for supplied in supplied_sets:
        with pytest.raises(MissingKeyError) as info:
            unwrap_key(supplied, wrapped, CONTEXT)
        message = str(info.value)
        assert kek.key_id in message
        for how in ("--key-file", "SAFEHOLD_KEY_FILE", "SAFEHOLD_KEY", "SAFEHOLD_PASSPHRASE"):
            assert how in message
    assert isinstance(info.value, CryptoError)
    assert not isinstance(info.value, KeyError)


def test_wrong_kek_with_same_id_fails(kek: Kek) -> None:
    wrapped = wrap_key(kek, generate_key(), CONTEXT)
    impostor = Kek(kek.key_id, generate_key())
    with pytest.raises(WrongKeyError, match=kek.key_id):
        unwrap_key([impostor], wrapped, CONTEXT)


def test_wrapped_key_bound_to_its_backup(kek: Kek) -> None:
    wrapped = wrap_key(kek, generate_key(), CONTEXT)
    with pytest.raises(WrongKeyError):
        unwrap_key([kek], wrapped, b"safehold/v1 backup some-other-backup")


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
def test_tampered_key_record_fails(kek: Kek, field: str) -> None:
    wrapped = wrap_key(kek, generate_key(), CONTEXT)
    record = wrapped.to_dict()
    raw = base64.b64decode(record[field])
    record[field] = base64.b64encode(_flip(raw, len(raw) - 1)).decode()
    with pytest.raises(WrongKeyError):
        unwrap_key([kek], WrappedKey.from_dict(record), CONTEXT)


def test_malformed_key_record() -> None:
    with pytest.raises(KeyFormatError, match="lacks 'nonce'"):
        WrappedKey.from_dict({"key_id": "k-1", "ciphertext": ""})
    with pytest.raises(KeyFormatError, match="wrapped key nonce is not valid base64"):
        WrappedKey.from_dict({"key_id": "k-1", "nonce": "@@", "ciphertext": ""})


def test_wrap_rejects_a_short_data_key(kek: Kek) -> None:
    with pytest.raises(KeyFormatError, match="data key must be 32 bytes"):
        wrap_key(kek, b"short", CONTEXT)


# --- chunks -----------------------------------------------------------------------------------


def test_chunk_round_trip_and_overhead() -> None:
    cipher = ChunkCipher(generate_key(), "db/pages")
    for index, plaintext in enumerate([b"", b"x", os.urandom(100_000)]):
        blob = cipher.encrypt(index, index == 2, plaintext)
        assert len(blob) == len(plaintext) + CHUNK_OVERHEAD
        assert cipher.decrypt(index, index == 2, blob) == plaintext


def test_chunk_tamper_matrix() -> None:
    data_key = generate_key()
    cipher = ChunkCipher(data_key, "db/pages")
    prefix = ChunkCipher(data_key, "db/page")
    blob = cipher.encrypt(5, False, b"chunk five of db/pages" * 10)
    final_blob = cipher.encrypt(6, True, b"last chunk")
    attacks: dict[str, Callable[[], bytes]] = {
        "bit flip in nonce": lambda: cipher.decrypt(5, False, _flip(blob, 0)),
        "bit flip in ciphertext": lambda: cipher.decrypt(5, False, _flip(blob, 20)),
        "bit flip in tag": lambda: cipher.decrypt(5, False, _flip(blob, len(blob) - 1)),
        "wrong index (reordered)": lambda: cipher.decrypt(4, False, blob),
        "marked final (truncated object)": lambda: cipher.decrypt(5, True, blob),
        "final flag dropped": lambda: cipher.decrypt(6, False, final_blob),
        "other object": lambda: ChunkCipher(data_key, "db/pages2").decrypt(5, False, blob),
        "other object, prefix name": lambda: prefix.decrypt(5, False, blob),
        "other data key": lambda: ChunkCipher(generate_key(), "db/pages").decrypt(5, False, blob),
        "truncated blob": lambda: cipher.decrypt(5, False, blob[:-1]),
        "too short for a nonce": lambda: cipher.decrypt(5, False, blob[:8]),
        "empty blob": lambda: cipher.decrypt(5, False, b""),
    }
    for what, attack in attacks.items():
        with pytest.raises(TamperedError, match="failed authentication"):
            attack()
            pytest.fail(f"{what} went undetected")
    assert cipher.decrypt(5, False, blob) == b"chunk five of db/pages" * 10


def test_tampered_error_names_chunk_and_object() -> None:
    cipher = ChunkCipher(generate_key(), "orders.csv")
    blob = cipher.encrypt(3, True, b"data")
    with pytest.raises(TamperedError, match=r"chunk 3 \(final\) of object 'orders.csv'"):
        cipher.decrypt(3, True, _flip(blob, 15))


def test_chunk_nonces_are_synthetic() -> None:
    """Same chunk, position and key -> same nonce and bytes (a retried backup resumes its upload);
    any other plaintext, index, final flag, object or data key -> another nonce."""
    data_key = generate_key()
    cipher = ChunkCipher(data_key, "obj")
    blob = cipher.encrypt(7, False, b"same")
    assert ChunkCipher(data_key, "obj").encrypt(7, False, b"same") == blob
    assert cipher.nonce(7, False, b"same") == blob[:12]
    others = [
        cipher.encrypt(7, False, b"sane"),
        cipher.encrypt(8, False, b"same"),
        cipher.encrypt(7, True, b"same"),
        ChunkCipher(data_key, "obj2").encrypt(7, False, b"same"),
        ChunkCipher(generate_key(), "obj").encrypt(7, False, b"same"),
    ]
    assert len({b[:12] for b in [blob, *others]}) == 6
    rng = random.Random(7)
    plaintexts = {rng.randbytes(64) for _ in range(2000)}
    assert len({cipher.nonce(0, False, p) for p in plaintexts}) == len(plaintexts)
    assert len({cipher.nonce(i, False, b"x") for i in range(2000)}) == 2000


def test_the_nonce_key_is_not_the_encryption_key() -> None:
    """The nonce is an HMAC under its own subkey: knowing nonces gives no keystream."""
    cipher = ChunkCipher(generate_key(), "obj")
    expected = hmac.new(cipher._nonce_key, b"nonce" + (3).to_bytes(8, "big") + b"\x01" + b"pt",
                        hashlib.sha256).digest()[:12]
    assert cipher.nonce(3, True, b"pt") == expected


def test_chunk_cipher_repr_hides_the_key() -> None:
    data_key = generate_key()
    text = repr(ChunkCipher(data_key, "obj"))
    assert "obj" in text
    assert data_key.hex() not in text


def test_chunk_index_range() -> None:
    cipher = ChunkCipher(generate_key(), "obj")
    assert cipher.decrypt(2**64 - 1, True, cipher.encrypt(2**64 - 1, True, b"x")) == b"x"
    with pytest.raises(ValueError, match="chunk index"):
        cipher.encrypt(-1, False, b"x")


def test_chunk_cipher_from_threads() -> None:
    cipher = ChunkCipher(generate_key(), "obj")
    chunks = [os.urandom(4096) for _ in range(64)]
    indexes = range(len(chunks))
    finals = [i == len(chunks) - 1 for i in indexes]
    with ThreadPoolExecutor(4) as pool:
        blobs = list(pool.map(cipher.encrypt, indexes, finals, chunks))
        assert list(pool.map(cipher.decrypt, indexes, finals, blobs)) == chunks


# --- manifest MAC -----------------------------------------------------------------------------


def test_manifest_mac() -> None:
    data_key = generate_key()
    body = b'{"backup_id":"b1","objects":[]}'
    mac = manifest_mac(data_key, body)
    assert len(mac) == 64
    int(mac, 16)
    verify_manifest_mac(data_key, body, mac)
    assert manifest_mac(data_key, body) == mac


@pytest.mark.parametrize(
    "tamper",
    ["body", "mac", "key", "empty mac", "non-ascii mac"],
)
def test_manifest_mac_tamper(tamper: str) -> None:
    data_key = generate_key()
    body = b'{"backup_id":"b1","objects":[]}'
    mac = manifest_mac(data_key, body)
    args = {
        "body": (data_key, body.replace(b"b1", b"b2"), mac),
        "mac": (data_key, body, mac[:-1] + ("0" if mac[-1] != "0" else "1")),
        "key": (generate_key(), body, mac),
        "empty mac": (data_key, body, ""),
        "non-ascii mac": (data_key, body, "\u00e9" * 32),
    }[tamper]
    with pytest.raises(TamperedError, match="manifest MAC mismatch"):
        verify_manifest_mac(*args)


def test_manifest_key_is_separate_from_object_keys() -> None:
    """The MAC key is HKDF-derived, never the raw data key: an HMAC under the data key differs."""
    data_key = generate_key()
    body = b"{}"
    assert manifest_mac(data_key, body) != hmac.new(data_key, body, hashlib.sha256).hexdigest()
