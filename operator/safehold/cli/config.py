"""Named targets and repositories from a YAML/JSON config file, so commands can say `--target app`.

::

    targets:
      app: {url: "sqlite:///var/lib/app.db"}
    repositories:
      local: {url: "file:///var/backups/safehold", compression: "zstd:3"}

Looked up in ``--config``, then SAFEHOLD_CONFIG, then ~/.config/safehold/config.yaml. Secrets never
live here: keys and passphrases come from files or the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safehold.api.errors import UsageError
from safehold.api.validation import describe_validation_error


class TargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="database URL, e.g. postgresql://user@host:5432/db")
    password_file: Path | None = None
    tls: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


class RepositoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="storage URL, e.g. file:///var/backups")
    compression: str | None = None
    key_file: Path | None = None
    encryption: Literal["none"] | None = Field(
        default=None, description="'none': back up unencrypted (as --no-encryption)")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    repositories: dict[str, RepositoryConfig] = Field(default_factory=dict)


def default_path() -> Path:
    return Path(os.environ.get("SAFEHOLD_CONFIG")
                or Path.home() / ".config" / "safehold" / "config.yaml")


def load_config(path: Path | None) -> Config:
    explicit = path is not None or "SAFEHOLD_CONFIG" in os.environ
    path = path or default_path()
    if not path.exists():
        if explicit:
            raise UsageError(f"config file {path} does not exist")
        return Config()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return Config.model_validate(data)
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML/JSON: {exc}") from exc
    except ValidationError as exc:
        raise UsageError(f"config file {path}: {describe_validation_error(exc)}") from None


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
