"""Pydantic validation errors in words for people: what is wrong, where, without library jargon.

``describe_validation_error`` names each problem by its location (``objects[0].sha256``, or a
command-line flag when ``flags`` maps field names to flags) and never includes pydantic's
documentation links or the offending input's repr.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

_PLAIN = {
    "missing": "is missing",
    "extra_forbidden": "is not a known field",
    "json_invalid": "is not valid JSON",
    "json_type": "is not JSON text",
}


def _where(loc: tuple[int | str, ...], flags: Mapping[str, str]) -> str:
    if loc and isinstance(loc[0], str) and loc[0] in flags:
        return flags[loc[0]]
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return f"field {out!r}" if out else ""


def describe_validation_error(exc: ValidationError, flags: Mapping[str, str] | None = None,
                              limit: int = 5) -> str:
    """One line naming every problem (at most ``limit``), e.g. ``--keep-last: must be >= 1``."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        kind = err.get("type", "")
        where = _where(tuple(err.get("loc", ())), flags or {})
        if kind in _PLAIN:
            text = f"{where} {_PLAIN[kind]}" if where else f"the document {_PLAIN[kind]}"
        else:
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            msg = msg[0].lower() + msg[1:] if msg else "invalid"
            for field, flag in (flags or {}).items():  # a model rule may name fields in words
                msg = msg.replace(field, flag)
            text = f"{where}: {msg}" if where else msg
        problems.append(text)
    more = len(problems) - limit
    return "; ".join(problems[:limit]) + (f" (and {more} more)" if more > 0 else "")
