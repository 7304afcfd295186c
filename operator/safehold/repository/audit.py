"""The audit chain: security-relevant events as hash-linked JSON records.

Every record carries ``seq`` (1, 2, ...), ``prev`` (the hash of the record before it; 64 zeros
for the first) and ``hash`` = SHA-256 over the record's canonical JSON without ``hash``. So an
edited record no longer matches its hash, a removed one breaks the ``prev`` link or the ``seq``
run, and a history cut short at the end (or rewritten wholesale, hashes recomputed) no longer
contains a ``hash`` printed by a later run: :func:`verify_chain` checks against such a head.

Two copies exist (docs/security.md): the local file (``safehold.cli.audit``), and the
repository's, one object per record under ``_audit/`` (``_audit/000000000001.json``, ...).
``_audit`` cannot be a target name, so it never shows up among the targets. A record is
appended with :meth:`Storage.put_if_absent` on the next sequence number: of two writers racing
for one number exactly one wins, the other re-reads the head and takes the next, so concurrent
runs on any host never fork or corrupt the chain and no lease is needed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from safehold.api.errors import IntegrityError
from safehold.storage.base import ConditionFailed, ObjectNotFound, Storage

GENESIS = "0" * 64
PREFIX = "_audit/"
_APPEND_ATTEMPTS = 50


class AuditTampered(IntegrityError):
    """The audit history was edited, reordered, cut short or otherwise damaged."""


def record_hash(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain(event: Mapping[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """``event`` as the record that follows ``prev`` at position ``seq``."""
    record = {**event, "seq": seq, "prev": prev}
    record["hash"] = record_hash(record)
    return record


@dataclass(frozen=True)
class ChainReport:
    records: int
    head: str | None
    problems: tuple[str, ...]
    head_found: bool | None = None  # None: no expected head was given


def verify_chain(records: Iterable[tuple[str, Mapping[str, Any] | None]],
                 expected_head: str | None = None) -> ChainReport:
    """Check ``(where, record)`` pairs in order; ``record`` None means unreadable at ``where``.

    ``expected_head``: a hash printed by a run after these records; it must be in the chain.
    """
    problems: list[str] = []
    prev = GENESIS
    count = 0
    found = False
    for where, record in records:
        count += 1
        if record is None:
            problems.append(f"{where}: not a JSON record (cut short or overwritten)")
            prev = "?"
            continue
        if record.get("seq") != count:
            problems.append(f"{where}: sequence number {record.get('seq')!r}, expected {count}"
                            " (a record was removed, inserted or reordered)")
        if record.get("prev") != prev and prev != "?":
            problems.append(f"{where}: does not follow the record before it (prev hash"
                            " mismatch: a record before it was removed or edited)")
        actual = record_hash(record)
        if record.get("hash") != actual:
            problems.append(f"{where}: its content does not match its hash (the record was"
                            " edited)")
        if expected_head is not None and expected_head in (record.get("hash"), actual):
            found = True
        prev = str(record.get("hash"))
    head = prev if count and prev != "?" else None
    if expected_head is not None and not found:
        problems.append(f"the history does not contain the head {expected_head} reported by a"
                        f" later run: it was cut short or rewritten (it holds {count} records)")
    return ChainReport(count, head, tuple(problems),
                       None if expected_head is None else found)


def _key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}.json"


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def repository_records(storage: Storage) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """The repository's audit records in sequence order, as ``(key, record)``."""
    for info in storage.list(PREFIX):
        name = info.key[len(PREFIX):]
        if "/" in name or not name.endswith(".json"):
            continue
        try:
            data = storage.get_bytes(info.key)
        except ObjectNotFound:
            continue
        yield info.key, _parse(data)


def _last(storage: Storage) -> tuple[int, str]:
    """(seq, hash) of the newest record, (0, GENESIS) when there is none."""
    keys = [i.key for i in storage.list(PREFIX) if i.key.endswith(".json")]
    if not keys:
        return 0, GENESIS
    key = max(keys)
    record = _parse(storage.get_bytes(key))
    if record is None or not isinstance(record.get("seq"), int):
        raise AuditTampered(f"the repository's last audit record {key} is damaged",
                            hint="run `safehold audit verify -r REPO` to see the history")
    return int(record["seq"]), str(record.get("hash"))


def append_to_repository(storage: Storage, event: Mapping[str, Any]) -> str:
    """Append ``event`` to the repository's chain; the new head's hash."""
    for _ in range(_APPEND_ATTEMPTS):
        seq, prev = _last(storage)
        record = chain(event, seq + 1, prev)
        data = json.dumps(record, sort_keys=True).encode() + b"\n"
        try:
            storage.put_if_absent(_key(seq + 1), data)
        except ConditionFailed:
            continue  # another writer took this number: re-read the head
        return str(record["hash"])
    raise AuditTampered("could not append to the repository's audit log: the head kept"
                        f" changing over {_APPEND_ATTEMPTS} attempts")


def repository_head(storage: Storage) -> str | None:
    seq, head = _last(storage)
    return head if seq else None
