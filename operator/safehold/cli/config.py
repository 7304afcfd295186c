"""Named targets and repositories, log and audit settings, from a YAML/JSON config file.

::

    targets:
      app: {url: "sqlite:///var/lib/app.db"}
    repositories:
      local: {url: "file:///var/backups/safehold", compression: "zstd:3"}
    log: {level: info, file: /var/log/safehold/safehold.log, rotate: 10MiB}
    profiles:
      prod:
        repositories:
          local: {url: "s3://backups/prod"}

One file is used, the first found (:func:`discover`): ``--config``, ``SAFEHOLD_CONFIG``,
``./safehold.yaml``, the user config dir, the system config dir (platformdirs). A profile
(``--profile``/``SAFEHOLD_PROFILE``) is merged over the file's top level, and environment
variables ``SAFEHOLD_<SECTION>__<NAME>[__<FIELD>]`` over both. Every effective value remembers
where it came from (:class:`Loaded`). Secrets never live here: keys and passphrases come from
files or the environment. Problems are reported all at once, each with file, line and fix
(:mod:`safehold.cli.config_check`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from safehold.api.errors import UsageError

if TYPE_CHECKING:
    import yaml

APP = "safehold"
FILE_NAME = "config.yaml"
LOCAL_NAME = "safehold.yaml"
ENV_PREFIX = "SAFEHOLD_"
ENV_NESTING = "__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class TargetConfig(_Section):
    url: str = Field(description="database URL, e.g. postgresql://user@host:5432/db")
    password_file: Path | None = None
    tls: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    databases: list[str] | Literal["all"] | None = Field(
        default=None, description="several databases of the server (each its own backup,"
        " '<name>@<database>'), or 'all' of them; the URL's database is where to log in")
    globals: bool | None = Field(
        default=None, description="also back up the server-wide objects (roles, users and"
        " grants); default: with databases 'all'")


class RepositoryConfig(_Section):
    url: str = Field(description="storage URL, e.g. file:///var/backups")
    compression: str | None = None
    key_file: Path | None = None
    encryption: Literal["none"] | None = Field(
        default=None, description="'none': back up unencrypted (as --no-encryption)")


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] | None = None
    format: Literal["auto", "text", "json"] | None = None
    file: Path | None = None
    rotate: str | None = Field(default=None, description="10MiB, hourly, daily or midnight")
    keep: int = Field(default=5, ge=0, le=1000, description="rotated files kept")

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class AuditConfig(_Section):
    file: Path | None = Field(default=None, description="the local audit log (JSON lines)")
    repository: bool = Field(default=True, description="also append to the repository's log")


NotifyEvent = Literal["failure", "success"]


class SlackConfig(_Section):
    """Slack incoming webhook for `safehold backup`; the URL (a secret) from the environment or
    a file, never from the config file itself."""

    webhook_url_env: str | None = Field(
        default=None, description="name of the environment variable holding the webhook URL")
    webhook_file: Path | None = Field(default=None, description="file holding the webhook URL")
    on: list[NotifyEvent] = Field(default_factory=lambda: list[NotifyEvent](["failure"]),
                                  description="outcomes worth a message: failure, success")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, value: Any) -> Any:
        if isinstance(value, dict) and "webhook_url" in value:
            raise ValueError("a webhook URL is a secret and never lives in the config file:"
                             " set webhook_url_env (an environment variable's name) or"
                             " webhook_file (a file holding it) instead")
        return value

    @field_validator("on", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:  # SAFEHOLD_NOTIFICATIONS__SLACK__ON=failure,success
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) \
            else value

    @model_validator(mode="after")
    def _one_source(self) -> SlackConfig:
        if (self.webhook_url_env is None) == (self.webhook_file is None):
            raise ValueError("give exactly one of webhook_url_env or webhook_file")
        return self


class NotificationsConfig(_Section):
    slack: SlackConfig | None = None


class UpdatesConfig(_Section):
    """Where `safehold version --check` asks for releases (a mirror's JSON API, e.g.)."""

    index_url: str | None = Field(
        default=None, description="the project's JSON API on the package index; default PyPI's")
    timeout: float = Field(default=3.0, gt=0, le=60, description="seconds to wait for it")


class Settings(_Section):
    """What the top level and each profile may hold."""

    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    repositories: dict[str, RepositoryConfig] = Field(default_factory=dict)
    log: LogConfig = Field(default_factory=LogConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig)

    @field_validator("targets", "repositories", "log", "audit", "notifications", "updates",
                     mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value  # a section with everything commented out


class Config(Settings):
    profiles: dict[str, Settings] = Field(default_factory=dict)

    @field_validator("profiles", mode="before")
    @classmethod
    def _no_profiles(cls, value: Any) -> Any:
        return {} if value is None else value


def user_path() -> Path:
    return platformdirs.user_config_path(APP, appauthor=False) / FILE_NAME


def system_path() -> Path:
    return platformdirs.site_config_path(APP, appauthor=False) / FILE_NAME


def default_path() -> Path:
    """Where ``config init`` writes when not told: SAFEHOLD_CONFIG, else the user's file."""
    return Path(os.environ["SAFEHOLD_CONFIG"]) if os.environ.get("SAFEHOLD_CONFIG") \
        else user_path()


@dataclass(frozen=True)
class Location:
    path: Path | None
    how: str  # --config, SAFEHOLD_CONFIG, working directory, user config dir, ...
    searched: tuple[Path, ...] = ()


def discover(path: Path | None) -> Location:
    """The config file to use: the first of --config, SAFEHOLD_CONFIG (both must exist),
    ./safehold.yaml, the user config dir and the system config dir that exists."""
    for explicit, how in ((path, "--config"),
                          (Path(os.environ["SAFEHOLD_CONFIG"]) if os.environ.get(
                              "SAFEHOLD_CONFIG") else None, "SAFEHOLD_CONFIG")):
        if explicit is not None:
            if not explicit.is_file():
                raise UsageError(
                    f"config file {explicit} (from {how}) does not exist"
                    + (" or is not a file" if explicit.exists() else ""),
                    hint="check the path, or create one with `safehold config init"
                    f" {explicit}`")
            return Location(explicit, how)
    candidates = ((Path(LOCAL_NAME), "working directory"), (user_path(), "user config dir"),
                  (system_path(), "system config dir"))
    for candidate, how in candidates:
        try:
            found = candidate.is_file()
        except PermissionError:  # a directory on the way this OS user may not look into
            raise UsageError(
                f"cannot tell whether the config file {candidate} ({how}) exists: permission"
                " denied on a directory of its path (is this another OS user's environment,"
                " e.g. XDG_CONFIG_HOME or HOME?)",
                hint="let this user read it, or name the config file to use with --config"
                " or SAFEHOLD_CONFIG") from None
        if found:
            return Location(candidate, how, tuple(c for c, _ in candidates))
    return Location(None, "none found", tuple(c for c, _ in candidates))


# --- loading: the raw document with line numbers, merged with profile and environment ------

Path_ = tuple[str, ...]


@dataclass
class Raw:
    """A parsed config document: ``data`` and the 1-based line of every key path."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)


MAX_NODES = 20_000  # a config is small; YAML aliases can make a tiny file expand enormously


def _lines(node: yaml.Node, prefix: Path_, out: dict[Path_, int], budget: list[int]) -> None:
    import yaml

    budget[0] -= 1
    if budget[0] < 0:
        raise UsageError(f"the document expands to more than {MAX_NODES} values (YAML aliases"
                         " repeating each other?)", hint="write the values out; a config file"
                         " needs no nested aliases")
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value)
            out.setdefault((*prefix, name), key.start_mark.line + 1)
            _lines(value, (*prefix, name), out, budget)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _lines(item, prefix, out, budget)


def parse(text: str, source: str) -> Raw:
    """YAML (or JSON) with line numbers; a syntax error names its line and the fix."""
    import yaml  # here, not at the top: a run without a config file never needs it (14 ms)

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:  # before anything walks the data: an alias bomb stops here
            lines: dict[Path_, int] = {}
            try:
                _lines(node, (), lines, [MAX_NODES])
            except UsageError as exc:
                raise UsageError(f"config file {source}:1: {exc.message}", hint=exc.hint) \
                    from None
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"config file {where}: not valid YAML/JSON: {problem}",
                         hint="fix the syntax at that line (indentation, a missing ':' or"
                         " quote); `safehold config validate` lists every problem") from None
    return Raw({} if data is None else _on_keys(data), lines if node is not None else {})


def _on_keys(data: Any) -> Any:
    """YAML 1.1 reads a bare ``on:`` key (notifications.slack.on) as ``true``: give it back
    its name, as the line numbers already have it."""
    if isinstance(data, dict):
        return {("on" if k is True else k): _on_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_on_keys(v) for v in data]
    return data


@dataclass
class Loaded:
    """The effective configuration and where each value came from."""

    config: Config
    location: Location
    profile: str | None
    origins: dict[Path_, str]


def _merge(base: dict[str, Any], over: Any, origins: dict[Path_, str], prefix: Path_,
           origin: Any) -> dict[str, Any]:
    """``over`` merged into ``base`` (mappings recursively); origins of replaced leaves."""
    if not isinstance(over, dict):
        return base
    result = dict(base)
    for key, value in over.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value, origins, path, origin)
        else:
            result[key] = value
            for known in [p for p in origins if p[:len(path)] == path]:
                del origins[known]
            _mark(value, path, origins, origin)
    return result


def _mark(value: Any, path: Path_, origins: dict[Path_, str], origin: Any) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _mark(inner, (*path, str(key)), origins, origin)
    else:
        origins[path] = origin(path) if callable(origin) else origin


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, tuple[Path_, str]]:
    """``SAFEHOLD_LOG__LEVEL=debug`` -> {name: (("log", "level"), "debug")}. Names are
    lower-cased (targets and repositories named in the environment are lower case); an empty
    variable counts as unset."""
    env = os.environ if environ is None else environ
    found = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and ENV_NESTING in name and value != "":
            path = tuple(p.lower() for p in name[len(ENV_PREFIX):].split(ENV_NESTING))
            if all(path):
                found[name] = (path, value)
    return found


def effective(raw: Raw, source: str, profile: str | None,
              environ: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[Path_, str]]:
    """The merged document (top level < profile < environment) and each leaf's origin."""
    if not isinstance(raw.data, dict):
        raise UsageError(f"config file {source}:1: the document is a"
                         f" {type(raw.data).__name__}, not a mapping",
                         hint="start with `targets:`, `repositories:`, `log:` or `audit:`"
                         " (see `safehold config init`)")
    origins: dict[Path_, str] = {}
    top = {k: v for k, v in raw.data.items() if k != "profiles"}

    def at(path: Path_, base: Path_ = ()) -> str:
        line = raw.lines.get((*base, *path))
        return f"{source}:{line}" if line else source

    merged = _merge({}, top, origins, (), lambda p: at(p))
    if profile is not None:
        profiles = raw.data.get("profiles") or {}
        if not isinstance(profiles, dict) or profile not in profiles:
            known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else ""
            raise UsageError(f"profile {profile!r} is not defined in {source}"
                             f" (profiles: {known or 'none'})",
                             hint="add it under `profiles:` or choose one of those")
        merged = _merge(merged, profiles[profile] or {}, origins, (),
                        lambda p: f"{at(p, ('profiles', profile))} (profile {profile})")
    for name, (path, value) in sorted(env_overrides(environ).items()):
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        merged = _merge(merged, nested, origins, (), f"env {name}")
    if raw.data.get("profiles") is not None:
        merged["profiles"] = raw.data["profiles"]
    return merged, origins


def load(path: Path | None, profile: str | None = None) -> Loaded:
    """The effective configuration; every problem at once in one UsageError (exit 2)."""
    from safehold.cli.config_check import problems_of, raise_problems

    location = discover(path)
    if location.path is None:
        raw, source = Raw({}), "(no config file)"
    else:
        source = str(location.path)
        try:
            text = location.path.read_text(encoding="utf-8")
        except PermissionError:
            raise UsageError(f"cannot read the config file {source} ({location.how}):"
                             " permission denied",
                             hint="let this user read it (chmod/chown), or name another"
                             " config file with --config or SAFEHOLD_CONFIG") from None
        raw = parse(text, source)
    merged, origins = effective(raw, source, profile)
    config, problems = problems_of(merged, raw, source, origins)
    if problems or config is None:
        raise_problems(source, problems)
    assert config is not None
    return Loaded(config, location, profile, origins)


def load_config(path: Path | None, profile: str | None = None) -> Config:
    return load(path, profile).config


def resolve_target(config: Config, ref: str) -> tuple[str, TargetConfig]:
    """(name, settings) of a target given as a config name or a URL.

    A URL's name is the database's: the file stem for SQLite, the database name for servers.
    """
    if ref in config.targets:
        return ref, config.targets[ref]
    parts = urlsplit(ref)
    if not parts.scheme:
        known = ", ".join(sorted(config.targets)) or "none defined"
        raise UsageError(
            f"target {ref!r} is neither a URL (sqlite:///abs/path.db) nor a name in the config"
            f" file (known: {known})"
        )
    stem = Path(parts.path).stem or parts.path.strip("/").replace("/", "-")
    return stem or parts.hostname or parts.scheme, TargetConfig(url=ref)


def resolve_repository(config: Config, ref: str) -> RepositoryConfig:
    if ref in config.repositories:
        return config.repositories[ref]
    if not urlsplit(ref).scheme:
        known = ", ".join(sorted(config.repositories)) or "none defined"
        raise UsageError(
            f"repository {ref!r} is neither a URL (file:///abs/dir) nor a name in the config"
            f" file (known: {known})"
        )
    return RepositoryConfig(url=ref)
