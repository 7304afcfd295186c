"""What the commands share: options, opening repositories/engines/keys, output and progress."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import click

from safehold.api.errors import UsageError
from safehold.api.units import human_bytes as human_bytes  # re-exported
from safehold.api.units import human_seconds as human_seconds  # re-exported
from safehold.cli import runlog
from safehold.cli.config import (
    Config,
    TargetConfig,
    load_config,
    resolve_repository,
    resolve_target,
)
from safehold.codecs import crypto
from safehold.engines.base import ConnectionOptions, Engine, open_engine, redact_url
from safehold.engines.common import url_password_warning
from safehold.pipeline.keys import load_keks
from safehold.repository.repo import BackupNotFound, Repository
from safehold.storage.base import open_storage

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


def config(ctx: click.Context) -> Config:
    obj = ctx.find_root().obj or {}
    if "config_error" in obj:  # the config file is broken: the commands that need it say so
        raise obj["config_error"]
    cfg: Config = obj["config"] if "config" in obj else load_config(None)
    return cfg


def repo_option(f: F) -> F:
    return click.option("--repo", "-r", required=True, envvar="SAFEHOLD_REPO",
                        help="Repository URL (file:///dir) or name from the config file."
                        " [env SAFEHOLD_REPO]")(f)


def output_option(f: F) -> F:
    """Pass the global ``--output`` (given before or after the subcommand) as ``output``."""

    @functools.wraps(f)
    def with_output(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        output = (ctx.find_root().obj or {}).get("output", "text")
        if output not in OUTPUTS.get(ctx.command_path.split(" ", 1)[-1], ("text", "json")):
            raise UsageError(f"--output {output} is not available for `{ctx.command_path}`",
                             hint="use --output text or --output json")
        return f(*args, output=output, **kwargs)

    return with_output  # type: ignore[return-value]


# commands with outputs besides text and json (by command path without the program name)
OUTPUTS = {"stats": ("text", "json", "html")}


def key_file_option(f: F) -> F:
    return click.option(
        "--key-file", "key_files", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        multiple=True,
        help="File holding a base64 32-byte key (repeatable). Also SAFEHOLD_KEY_FILE,"
        " SAFEHOLD_KEY (inline base64) or SAFEHOLD_PASSPHRASE.")(f)


def open_repo(ctx: click.Context, ref: str, *, create: bool = False,
              allow_empty: bool = False) -> Repository:
    """The repository ``ref`` names. Only commands that write a backup (``create=True``) may
    create it; the others never create anything and fail with exit 3, naming the location, when
    it does not exist or nothing is stored there (``allow_empty``: a prune that only has
    abandoned uploads to clean up, which listings do not show)."""
    url = resolve_repository(config(ctx), ref).url
    if not create:
        _require_local_directory(url)
    try:
        storage = open_storage(url)
    except ValueError as exc:  # a malformed URL: the user's to fix
        raise UsageError(str(exc)) from None
    repository = Repository(storage)
    run = runlog.current()
    if run is not None:  # the audit log's repository copy
        run.repository = repository
    if create:
        repository.initialize()
    elif not allow_empty and not repository.exists():
        raise BackupNotFound(f"no repository at {repository.url}: nothing is stored there",
                             hint="check the path or URL (a typo, or a volume not mounted?);"
                             " `safehold backup` creates a repository")
    return repository


def _require_local_directory(url: str) -> None:
    """Opening a local repository creates its directory; a read-only command must not."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc:
        return  # malformed ones are reported by the backend
    path = Path(unquote(parts.path))
    if path.is_absolute() and not path.is_dir():
        raise BackupNotFound(
            f"no repository at {path}: " + ("it is not a directory" if path.exists()
                                            else "the directory does not exist"),
            hint="check the path (a typo, or a volume not mounted?); `safehold backup` creates"
            " a repository")


def repo_key_files(ctx: click.Context, ref: str, key_files: tuple[Path, ...]) -> list[Path]:
    configured = resolve_repository(config(ctx), ref).key_file
    return [*key_files, *([configured] if configured else [])]


def keks_for(ctx: click.Context, repo: Repository, repo_ref: str, key_files: tuple[Path, ...],
             *, create_kdf: bool = False) -> list[crypto.Kek]:
    return load_keks(repo, repo_key_files(ctx, repo_ref, key_files), create_kdf=create_kdf)


def connection_options(f: F) -> F:
    """Options for reaching a database server (ignored by SQLite), and ``--jobs``."""
    return _connection_options(f, jobs=True)


def server_options(f: F) -> F:
    """Options for reaching a database server, without ``--jobs`` (for `check`)."""
    return _connection_options(f, jobs=False)


def _connection_options(f: F, *, jobs: bool) -> F:
    options = [
        click.option("--password-file", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
                     help="File holding the database password. Also SAFEHOLD_PASSWORD, the"
                     " URL, or the client's convention (PGPASSWORD, MYSQL_PWD)."),
        click.option("--tls", type=click.Choice(["disable", "prefer", "require", "verify-ca",
                                                 "verify-full"]),
                     help="TLS mode for the database connection."),
        click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="CA bundle to verify the server's certificate."),
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Client certificate."),
        click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Client certificate's private key."),
        click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=10.0,
                     show_default=True, help="Seconds to wait for the database."),
    ]
    if jobs:
        options.append(click.option(
            "--jobs", "-j", type=click.IntRange(min=1),
            help="Parallel workers for per-table/collection dumps and restores."))
    for option in reversed(options):
        f = option(f)
    return f


# PostgreSQL silently truncates longer names to NAMEDATALEN-1 bytes: a restore "into" a 300-byte
# name would land under another one. (MySQL/MariaDB's 64-character limit is checked with the URL.)
_NAME_LIMITS = {"postgresql": 63, "postgres": 63}


def check_database_name(url: str) -> None:
    """Refuse a database name the server would truncate, before anything starts."""
    parts = urlsplit(url)
    limit = _NAME_LIMITS.get(parts.scheme)
    if limit is None:
        return
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    name = unquote(query.get("dbname") or parts.path.lstrip("/"))
    size = len(name.encode())
    if size > limit:
        raise UsageError(
            f"database name {name[:40]!r}… is {size} bytes; PostgreSQL names are at most {limit}"
            " bytes (longer ones are silently truncated by the server)",
            hint="choose a shorter database name")


def open_target(ctx: click.Context, ref: str, **conn: Any) -> tuple[str, Engine]:
    """The target's name and engine, with connection settings from flags, config and env."""
    name, target, options = target_settings(ctx, ref, **conn)
    return name, engine_for(target, options)


def engine_for(target: TargetConfig, options: ConnectionOptions) -> Engine:
    try:
        return open_engine(target.url, options)
    except ValueError as exc:  # the URL or the connection settings: the user's to fix
        raise UsageError(redact_url(str(exc))) from None


def target_settings(ctx: click.Context, ref: str, **conn: Any
                    ) -> tuple[str, TargetConfig, ConnectionOptions]:
    """The target's name, settings and connection options (flags, config and env)."""
    name, target = resolve_target(config(ctx), ref)
    check_database_name(target.url)
    warning = url_password_warning(
        target.url, config_name=ref if ref in config(ctx).targets else None)
    if warning:
        logging.getLogger("safehold.cli").warning("%s", warning)
    password_file = conn.get("password_file") or target.password_file
    password = None
    if password_file:
        password = Path(password_file).read_text().rstrip("\r\n")
    elif os.environ.get("SAFEHOLD_PASSWORD"):
        password = os.environ["SAFEHOLD_PASSWORD"]

    def path(flag: str, configured: Path | None) -> str | None:
        value = conn.get(flag) or configured
        return str(value) if value else None

    options = ConnectionOptions(
        password=password,
        tls=conn.get("tls") or target.tls,
        ca_file=path("tls_ca", target.tls_ca),
        cert_file=path("tls_cert", target.tls_cert),
        key_file=path("tls_key", target.tls_key),
        connect_timeout=conn.get("connect_timeout") or 10.0,
        jobs=conn.get("jobs"),
    )
    return name, target, options


def emit(output: str, data: Any, text: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``text`` to print it for people.

    The run log reads the result from here. A JSON result also carries the audit log's latest
    hashes (``audit_head``); a text (or html) one of a run that opened a repository or
    recorded an audit event prints them on stderr (:func:`audit_heads_to_stderr`).
    """
    run = runlog.current()
    if run is not None:
        run.result = data
    if output == "json":
        if run is not None and isinstance(data, dict):
            from safehold.cli import audit

            data = {**data, "audit_head": audit.heads(run)}
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        text()
        audit_heads_to_stderr()


def audit_heads_to_stderr() -> None:
    """``audit head (local|repository): …`` on stderr when the run opened a repository or
    recorded an audit event: every result shows the latest hashes, so a history edited or cut
    short later is detected against it (``safehold audit verify --head``)."""
    from safehold.cli import audit

    run = runlog.current()
    if run is not None and audit.shows_heads(run):
        audit.print_heads(run)


@functools.cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def progress_text(done: int, total: int | None, speed: float | None) -> str:
    """``12.0 MiB / 40.0 MiB  3.1 MiB/s``: the same IEC units as every summary."""
    text = human_bytes(done) + (f" / {human_bytes(total)}" if total else "")
    return text + (f"  {human_bytes(speed)}/s" if speed else "")


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal; elsewhere periodic JSON log lines instead.

    The bar counts raw bytes in IEC units; when the work ends its total becomes the bytes
    actually done, so the last frame shows what the summary then reports.
    """
    if sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, ProgressColumn, Task, TimeRemainingColumn
        from rich.text import Text

        class Bytes(ProgressColumn):
            def render(self, task: Task) -> Text:
                total = int(task.total) if task.total is not None else None
                return Text(progress_text(int(task.completed), total, task.speed))

        with Progress("[progress.description]{task.description}", BarColumn(), Bytes(),
                      TimeRemainingColumn(), console=stderr_console(), transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)
            bar.update(task, total=bar.tasks[0].completed)
        return
    log = logging.getLogger("safehold.progress")
    done = 0
    last = time.monotonic()
    lock = threading.Lock()  # engines may stream several objects at once

    def hook(n: int) -> None:
        nonlocal done, last
        with lock:
            done += n
            if time.monotonic() - last < 10:
                return
            last = time.monotonic()
        log.info("%s: %s", label, progress_text(done, total, None),
                 extra={"bytes": done, "total": total})

    yield hook
