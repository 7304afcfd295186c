"""`safehold config init|show|validate`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click

from safehold import fsutil
from safehold.api.errors import SafeholdError, UsageError
from safehold.cli import common
from safehold.cli.config import (
    Loaded,
    Raw,
    default_path,
    discover,
    effective,
    parse,
    system_path,
    user_path,
)
from safehold.cli.config_check import Problem, check_all
from safehold.cli.errors import Exit
from safehold.engines.base import redact_url

TEMPLATE = """\
# Safehold configuration, written by `safehold config init` (docs/cli.md#config-file).
#
# Found in this order, the first that exists wins: --config FILE, $SAFEHOLD_CONFIG,
# ./safehold.yaml, {user}, {system}.
# Check it with `safehold config validate`; see what is in effect with `safehold config show`.
# Secrets never live here: keys and passwords come from files (key_file, password_file) or
# the environment (SAFEHOLD_KEY_FILE, SAFEHOLD_PASSPHRASE, SAFEHOLD_PASSWORD).
# Any value can be overridden from the environment: SAFEHOLD_<SECTION>__<NAME>[__<FIELD>],
# e.g. SAFEHOLD_LOG__LEVEL=debug or SAFEHOLD_REPOSITORIES__LOCAL__URL=file:///mnt/backups.

# Databases, by name: `safehold backup --target app`.
targets:
  # app:
  #   url: sqlite:///var/lib/app.db
  # orders:
  #   url: postgresql://backup@db:5432/orders
  #   password_file: /run/secrets/pg      # never a password in the URL
  #   tls: verify-full                    # disable, prefer, require, verify-ca, verify-full
  #   tls_ca: /etc/ssl/db-ca.pem
  # shop-server:                        # several databases, each its own backup shop-server@DB
  #   url: mariadb://backup@db:3306/mysql  # the database to log in to
  #   databases: all                      # or [shop, users]; 'all' adds the users and grants
  #   globals: true                       # roles/users too (default: with 'all')

# Where backups go, by name: `safehold backup --repo local`.
repositories:
  # local:
  #   url: file:///var/backups/safehold   # or s3://bucket/prefix, gs://..., az://...
  #   compression: zstd:3                 # gzip, bzip2, lz4, zstd or none, optionally :LEVEL
  #   key_file: /etc/safehold/key         # `safehold keys generate --out /etc/safehold/key`
  #   encryption: none                    # only to back up unencrypted on purpose

# Logs: stderr always; a file too when `file` is set.
log:
  level: info          # debug, info, warning, error
  format: auto         # auto (text on a terminal, else JSON lines), text, json
  # file: /var/log/safehold/safehold.log
  # rotate: 10MiB      # a size, or hourly, daily, midnight
  keep: 5              # rotated files kept

# The audit log (docs/security.md): key use, restores, prunes, refused tamper, ...
audit:
  # file: {audit_file}
  repository: true     # also append each event to the repository's own audit log

# Slack messages after `safehold backup` (a failed message never changes the exit code).
notifications:
  # slack:
  #   webhook_url_env: SAFEHOLD_SLACK_WEBHOOK   # or webhook_file: /etc/safehold/slack-webhook
  #   on: [failure]                           # failure, success

# Where `safehold version --check` looks for newer releases.
updates:
  # index_url: https://pypi.org/pypi/safehold/json   # a mirror's JSON API
  timeout: 3           # seconds; an unreachable index is a note, never a failure

# Named variants merged over the settings above: `safehold --profile prod ...`.
profiles:
  # prod:
  #   repositories:
  #     local:
  #       url: s3://backups/prod
  #   log:
  #     level: warning
"""

_SECRET = re.compile(r"password|secret|token|webhook|passphrase", re.IGNORECASE)


def _template() -> str:
    from safehold.cli.audit import default_file

    return TEMPLATE.format(user=user_path(), system=system_path(), audit_file=default_file())


@click.group("config")
def config_group() -> None:
    """Create, show and check the config file."""


@config_group.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@common.output_option
@click.pass_context
def init(ctx: click.Context, path: Path | None, force: bool, output: str) -> None:
    """Write a commented default config file.

    PATH defaults to --config, else SAFEHOLD_CONFIG, else the user config dir's config.yaml.
    An existing file is never overwritten without --force.
    """
    path = path or (ctx.find_root().obj or {}).get("config_path") or default_path()
    if path.exists() and not force:
        raise UsageError(f"{path} exists; it is left as it is",
                         hint="pass --force to overwrite it, or give another PATH")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temp.write_text(_template(), encoding="utf-8")
        fsutil.replace(temp, path)  # atomic: never a half-written config
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}",
                         hint="choose a writable PATH") from None
    common.emit(output, {"path": str(path)},
                lambda: click.echo(f"wrote {path}; edit it, then `safehold config validate`"))


def _flatten(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        out = []
        for key, inner in value.items():
            out += _flatten(inner, (*prefix, str(key)))
        return out
    return [(prefix, value)]


def _redact(path: tuple[str, ...], value: Any) -> Any:
    if value is None:
        return None
    if _SECRET.search(path[-1]) and not path[-1].endswith("_file"):
        return "***"
    return redact_url(value) if isinstance(value, str) else value


def _loaded(ctx: click.Context) -> Loaded:
    obj = ctx.find_root().obj or {}
    if "config_error" in obj:
        raise obj["config_error"]
    loaded: Loaded = obj["loaded"]
    return loaded


@config_group.command()
@common.output_option
@click.pass_context
def show(ctx: click.Context, output: str) -> None:
    """Print the effective configuration and where each value came from (secrets redacted)."""
    loaded = _loaded(ctx)
    data = loaded.config.model_dump(mode="json", exclude={"profiles"})
    rows = [{"key": ".".join(path), "value": _redact(path, value),
             "source": loaded.origins.get(path, "default")}
            for path, value in _flatten(data) if path]
    where = loaded.location
    profiles = sorted(loaded.config.profiles)
    doc = {"file": str(where.path) if where.path else None, "found_by": where.how,
           "searched": [str(p) for p in where.searched], "profile": loaded.profile,
           "profiles": profiles, "values": rows}

    def text() -> None:
        click.echo(f"file: {where.path or 'none'} ({where.how})")
        if where.path is None:
            click.echo("searched: " + ", ".join(str(p) for p in where.searched))
        click.echo(f"profile: {loaded.profile or 'none'}"
                   + (f" (defined: {', '.join(profiles)})" if profiles else ""))
        width = max((len(r["key"]) for r in rows), default=0)
        for r in rows:
            value = "(empty)" if r["value"] in ({}, None) else r["value"]
            click.echo(f"{r['key']:<{width}}  {value}    [{r['source']}]")

    common.emit(output, doc, text)


@config_group.command()
@common.output_option
@click.pass_context
def validate(ctx: click.Context, output: str) -> None:
    """Report every problem of the config file, each with file, line and fix (exit 2)."""
    obj = ctx.find_root().obj or {}
    location = discover(obj.get("config_path"))
    source = str(location.path) if location.path else "(no config file)"
    problems: list[Problem] = []
    try:
        raw = (parse(location.path.read_text(encoding="utf-8"), source) if location.path
               else Raw({}))
        merged, origins = effective(raw, source, obj.get("profile"))
        problems = check_all(merged, raw, source, origins)
    except SafeholdError as exc:  # the syntax, or a document that is not a mapping
        where, message = source, exc.message
        if message.startswith("config file "):
            where, _, message = message.removeprefix("config file ").partition(": ")
        problems = [Problem(where, "", message, exc.hint or "")]
    unique = list(dict.fromkeys(problems))
    doc = {"file": str(location.path) if location.path else None, "found_by": location.how,
           "ok": not unique, "problems": [p.as_dict() for p in unique]}

    def text() -> None:
        if not unique:
            click.echo(f"{source}: ok")
        for p in unique:
            click.echo(p.describe())
        if unique:
            click.echo(f"{len(unique)} problem(s) in {source}")

    common.emit(output, doc, text)
    if unique:
        ctx.exit(int(Exit.USAGE))


COMMANDS = [config_group]
