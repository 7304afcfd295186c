"""Where things live in a repository (docs/format.md). Pure string functions.

::

    safehold-repo.json                      repository config (format, id, KDF parameters, keys)
    <target>/target.json                    the target's encryption policy (first backup writes it)
    <target>/<backup-id>/keys.json          the backup's wrapped data key (encrypted backups)
    <target>/<backup-id>/data/<object>      data objects
    <target>/<backup-id>/manifest.json      written last: no manifest, no backup

A target of several databases stores each one as the target ``<target>@<database>`` (and the
server-wide objects as ``<target>@~globals``): see :mod:`safehold.api.databases`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from safehold.api import databases

CONFIG = "safehold-repo.json"
MANIFEST = "manifest.json"
KEYS = "keys.json"
POLICY = "target.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")


def check_target_name(name: str) -> str:
    if not is_target_name(name):
        raise ValueError(
            f"invalid target name {name!r}: use 1-128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def is_target_name(text: str) -> bool:
    """A plain target name, or ``<target>@<database>`` (one database of a target)."""
    plain, part = databases.split_key(text)
    return bool(_NAME.match(plain)) and (part is None or databases.is_database_part(part))


def is_backup_id(text: str) -> bool:
    return bool(_ID.match(text))


def new_backup_id(now: datetime | None = None) -> str:
    """Time-stamped ids that sort in time order: 20261126T114217.123456Z."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def backup_prefix(target: str, backup_id: str) -> str:
    return f"{target}/{backup_id}/"


def manifest_key(target: str, backup_id: str) -> str:
    return f"{target}/{backup_id}/{MANIFEST}"


def keys_key(target: str, backup_id: str) -> str:
    return f"{target}/{backup_id}/{KEYS}"


def object_key(target: str, backup_id: str, name: str) -> str:
    return f"{target}/{backup_id}/data/{name}"



def policy_key(target: str) -> str:
    """The target's encryption policy record (docs/format.md), written with its first backup."""
    return f"{target}/{POLICY}"
