"""The shape of a table of contents read back from a backup: every value the kind its field's
annotation says, so that a forged or damaged ``toc.json`` is refused as damage, naming the
place (``toc.tables[3].bytes``), rather than crashing a restore later on a string where a size
belongs. Unencrypted backups are protected by nothing but the storage."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any


def describe(exc: Exception) -> str:
    """What a parse error says, short enough for a message (a KeyError names only its key)."""
    detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc)
    return detail[:200]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check(value: Any, hint: Any, where: str) -> None:
    """Raise ValueError, naming the place, unless ``value`` (parsed JSON) is what ``hint`` (a
    field's annotation) says: every field of every dataclass present or defaulted and none
    unknown, integers (not booleans) not negative, strings, and lists, tuples and mappings of
    them."""
    if hint is Any:
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint, = (a for a in args if a is not type(None))  # X | None: the one kind there is
        check(value, hint, where)
    elif dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{where} is a {type(value).__name__}, not an object")
        fields = {f.name: f for f in dataclasses.fields(hint)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"{where} has a field Safehold never writes: {unknown[0]!r}")
        hints = _hints(hint)  # type: ignore[arg-type]
        for name, f in fields.items():
            if name in value:
                check(value[name], hints[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where} lacks its field {name!r}")
    elif origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        if not isinstance(value, list):
            raise ValueError(f"{where} is a {type(value).__name__}, not a list")
        for i, item in enumerate(value):
            check(item, args[0], f"{where}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} is a {type(value).__name__}, not an object")
        for key, item in value.items():
            check(item, args[1], f"{where}[{key!r}]")
    elif hint is int:
        if type(value) is not int or value < 0:
            raise ValueError(f"{where} is {value!r}, not a count or an OID")
    elif hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} is {value!r}, not a string")
    else:  # a field of a kind this check does not know: a bug here (not damage: not caught)
        raise AssertionError(f"no check for {where}'s annotation {hint!r}")
