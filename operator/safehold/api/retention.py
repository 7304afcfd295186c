"""The retention policy: which backups ``prune`` keeps.

One model serves the CLI, the task sent to a runner and the ``BackupSchedule`` spec, so fields
carry camelCase aliases (``keepLast``, ``maxAge``) for Kubernetes while Python code uses the
snake_case names. ``maxAge`` is written the way people say it ("30d"), not as ISO 8601, and is
serialized back in the same form so a spec round-trips unchanged in meaning.

The selection itself lives in :mod:`safehold.api.retention_select`; this module only validates.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

# Months and years are deliberately absent: their length varies, and keep_monthly/keep_yearly
# already express calendar retention. "m" therefore unambiguously means minutes.
_UNITS: dict[str, timedelta] = {
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION = re.compile(r"(\d+)([mhdw])")
_ACCEPTED = (
    "an integer followed by one unit: m (minutes), h (hours), d (days) or w (weeks), "
    "e.g. '90m', '12h', '30d', '2w'"
)


def parse_duration(text: str) -> timedelta:
    """Parse a retention duration such as ``"30d"`` into a :class:`~datetime.timedelta`.

    Raises ValueError naming the accepted forms, so a typo in a CR or on the command line
    explains itself instead of failing with a regex mismatch.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected {_ACCEPTED}")
    count, unit = match.groups()
    try:
        return int(count) * _UNITS[unit]
    except OverflowError:
        raise ValueError(f"duration {text!r} is too large") from None


def format_duration(value: timedelta) -> str:
    """Render a duration in the largest of d/h/m that represents it exactly ("30d", "36h").

    Days are preferred over weeks because retention is usually thought of in days; a value that
    is not a whole number of minutes falls back to seconds so no information is lost.
    """
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _coerce_duration(value: Any) -> Any:
    """Accept "30d" strings; leave timedeltas (and anything else) to pydantic's own checks."""
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9]+[mhdw]$"}),
]


class RetentionPolicy(BaseModel):
    """Rules deciding which backups survive a prune; a backup kept by any rule is kept."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    keep_last: int | None = Field(default=None, ge=0, description="Keep the N newest backups.")
    keep_daily: int | None = Field(
        default=None,
        ge=0,
        description="Keep the newest backup of each of the last N days that have one.",
    )
    keep_weekly: int | None = Field(
        default=None,
        ge=0,
        description="Keep the newest backup of each of the last N ISO weeks that have one.",
    )
    keep_monthly: int | None = Field(
        default=None,
        ge=0,
        description="Keep the newest backup of each of the last N months that have one.",
    )
    keep_yearly: int | None = Field(
        default=None,
        ge=0,
        description="Keep the newest backup of each of the last N years that have one.",
    )
    max_age: Duration | None = Field(
        default=None,
        description="Keep every backup younger than this, e.g. '30d', '12h', '2w', '90m'.",
    )

    @model_validator(mode="after")
    def _check(self) -> RetentionPolicy:
        if self.max_age is not None and self.max_age < timedelta(0):
            raise ValueError(f"max_age must not be negative, got {self.max_age}")
        counts = (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)
        if not any(counts) and not self.keep_yearly and not self.max_age:
            raise ValueError(
                "a retention policy needs at least one of keep_last, keep_daily, keep_weekly, "
                "keep_monthly, keep_yearly or max_age set above zero — with none, prune would "
                "delete everything"
            )
        return self
