"""Every problem of a config file at once, each with where (file:line, or the environment
variable) and the fix; a mistyped key names the key it probably meant."""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from safehold.api.errors import UsageError
from safehold.cli.config import (
    AuditConfig,
    Config,
    LogConfig,
    Path_,
    Raw,
    RepositoryConfig,
    Settings,
    TargetConfig,
)


@dataclass(frozen=True)
class Problem:
    where: str  # "/etc/safehold/config.yaml:12" or "env SAFEHOLD_LOG__LEVEL"
    key: str  # dotted: targets.app.url
    message: str
    fix: str

    def describe(self) -> str:
        return f"{self.where}: {self.key or '(top level)'}: {self.message} (fix: {self.fix})"

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "key": self.key, "message": self.message, "fix": self.fix}


def _where(path: Path_, raw: Raw, source: str, origins: dict[Path_, str]) -> str:
    """The origin of ``path`` or of its closest ancestor that has one."""
    for end in range(len(path), 0, -1):
        prefix = path[:end]
        if prefix in origins:
            return origins[prefix]
        leaves = [o for p, o in origins.items() if p[:end] == prefix]
        if leaves and prefix not in raw.lines:
            return leaves[0]
        if prefix in raw.lines:
            return f"{source}:{raw.lines[prefix]}"
    return source


def _model_at(loc: Path_) -> type[BaseModel] | None:
    """The model a location inside the config lies in (for the keys allowed there)."""
    model: Any = Config
    expect_name = False
    for part in loc:
        if expect_name:
            expect_name = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        annotation = info.annotation
        if typing.get_origin(annotation) is dict:
            model = typing.get_args(annotation)[1]
            expect_name = True
        else:
            model = annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _suggest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _from_validation(exc: ValidationError, raw: Raw, source: str,
                     origins: dict[Path_, str]) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        where = _where(loc, raw, source, origins)
        key = ".".join(loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            allowed = sorted(model.model_fields) if model else []
            guess = _suggest(loc[-1], allowed)
            fix = (f"did you mean {guess!r}?" if guess
                   else f"remove it; allowed here: {', '.join(allowed) or 'nothing'}")
            problems.append(Problem(where, key, f"unknown key {loc[-1]!r}", fix))
        elif kind == "missing":
            problems.append(Problem(where, key, "required and missing",
                                    f"add `{loc[-1]}:` here"))
        elif kind == "literal_error":
            expected = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected")))
            got = error.get("input")
            guess = _suggest(str(got), expected) if isinstance(got, str) else None
            fix = (f"did you mean {guess!r}?" if guess else "use one of: " + ", ".join(expected))
            problems.append(Problem(where, key, f"{got!r} is not allowed", fix))
        else:
            problems.append(Problem(where, key, error["msg"],
                                    "give a value of the right kind (see `safehold config"
                                    " init` for an example)"))
    return problems


def problems_of(merged: dict[str, Any], raw: Raw, source: str, origins: dict[Path_, str]
                ) -> tuple[Config | None, list[Problem]]:
    """The validated config, or None and every structural problem."""
    try:
        return Config.model_validate(merged), []
    except ValidationError as exc:
        return None, _from_validation(exc, raw, source, origins)


def raise_problems(source: str, problems: list[Problem]) -> None:
    count = len(problems)
    lines = "\n  ".join(p.describe() for p in problems)
    raise UsageError(f"config file {source} has {count} problem{'s' if count != 1 else ''}:"
                     f"\n  {lines}",
                     hint="`safehold config validate` lists them; fix each as its line says")


def _file_problems(settings: Settings, base: Path_, raw: Raw, source: str,
                   origins: dict[Path_, str]) -> list[Problem]:
    """What validates but cannot work: URLs without a scheme, codecs, missing files."""
    from safehold.cli.logsetup import parse_rotation
    from safehold.codecs.compression import parse_codec

    problems = []

    def add(path: Path_, message: str, fix: str) -> None:
        full = (*base, *path)
        problems.append(Problem(_where(full, raw, source, origins), ".".join(full), message, fix))

    for name, target in settings.targets.items():
        if not urlsplit(target.url).scheme:
            add(("targets", name, "url"), f"{target.url!r} is not a database URL",
                "e.g. sqlite:///abs/path.db or postgresql://user@host:5432/db")
        for key in ("password_file", "tls_ca", "tls_cert", "tls_key"):
            value = getattr(target, key)
            if value is not None and not value.is_file():
                add(("targets", name, key), f"{value} does not exist", "correct the path")
    for name, repo in settings.repositories.items():
        if not urlsplit(repo.url).scheme:
            add(("repositories", name, "url"), f"{repo.url!r} is not a storage URL",
                "e.g. file:///var/backups/safehold or s3://bucket/prefix")
        if repo.compression:
            try:
                parse_codec(repo.compression)
            except UsageError as exc:  # CodecError names the codec and the choices
                add(("repositories", name, "compression"), exc.message,
                    "gzip, bzip2, lz4, zstd or none, optionally :LEVEL")
        if repo.key_file is not None and not repo.key_file.is_file():
            add(("repositories", name, "key_file"), f"{repo.key_file} does not exist",
                "correct the path (create a key with `safehold keys generate`)")
    if settings.log.rotate:
        try:
            parse_rotation(settings.log.rotate)
        except UsageError as exc:
            add(("log", "rotate"), exc.message, exc.hint or "")
    return problems


def _salvage(data: Any) -> Settings:
    """The parts of a (structurally broken) document that validate on their own."""
    data = data if isinstance(data, dict) else {}

    def valid(model: type[BaseModel], value: Any) -> Any:
        try:
            return model.model_validate(value or {})
        except ValidationError:
            return None

    def named(section: str, model: type[BaseModel]) -> dict[str, Any]:
        entries = data.get(section)
        if not isinstance(entries, dict):
            return {}
        found = {name: valid(model, value) for name, value in entries.items()}
        return {name: value for name, value in found.items() if value is not None}

    return Settings.model_construct(
        targets=named("targets", TargetConfig), repositories=named("repositories",
                                                                   RepositoryConfig),
        log=valid(LogConfig, data.get("log")) or LogConfig(), audit=AuditConfig())


def check_all(merged: dict[str, Any], raw: Raw, source: str, origins: dict[Path_, str]
              ) -> list[Problem]:
    """Every problem: the structure's, and what cannot work (of whatever validates) — for the
    effective settings and for every profile."""
    config, problems = problems_of(merged, raw, source, origins)
    profiles = merged.get("profiles")
    problems += _file_problems(config or _salvage(merged), (), raw, source, origins)
    for name, settings in (profiles.items() if isinstance(profiles, dict) else ()):
        problems += _file_problems(_salvage(settings), ("profiles", str(name)), raw, source, {})
    return problems
