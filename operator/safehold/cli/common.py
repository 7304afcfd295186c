"""What the commands share: options, opening repositories/engines/keys, output and progress."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from safehold.cli.config import Config, load_config, resolve_repository, resolve_target
from safehold.codecs import crypto
from safehold.engines.base import Engine, open_engine
from safehold.pipeline.keys import load_keks
from safehold.repository.repo import Repository
from safehold.storage.base import open_storage

F = TypeVar("F", bound=Callable[..., Any])


def config(ctx: click.Context) -> Config:
    cfg: Config = ctx.obj["config"] if ctx.obj and "config" in ctx.obj else load_config(None)
    return cfg


def repo_option(f: F) -> F:
    return click.option("--repo", "-r", required=True, envvar="SAFEHOLD_REPO",
                        help="Repository URL (file:///dir) or name from the config file."
                        " [env SAFEHOLD_REPO]")(f)


def output_option(f: F) -> F:
    return click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="Output format; json is for machines.")(f)


def key_file_option(f: F) -> F:
    return click.option(
        "--key-file", "key_files", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        multiple=True,
        help="File holding a base64 32-byte key (repeatable). Also SAFEHOLD_KEY_FILE,"
        " SAFEHOLD_KEY (inline base64) or SAFEHOLD_PASSPHRASE.")(f)


def open_repo(ctx: click.Context, ref: str) -> Repository:
    return Repository(open_storage(resolve_repository(config(ctx), ref).url))


def repo_key_files(ctx: click.Context, ref: str, key_files: tuple[Path, ...]) -> list[Path]:
    configured = resolve_repository(config(ctx), ref).key_file
    return [*key_files, *([configured] if configured else [])]


def keks_for(ctx: click.Context, repo: Repository, repo_ref: str, key_files: tuple[Path, ...],
             *, create_kdf: bool = False) -> list[crypto.Kek]:
    return load_keks(repo, repo_key_files(ctx, repo_ref, key_files), create_kdf=create_kdf)


def open_target(ctx: click.Context, ref: str) -> tuple[str, Engine]:
    name, url = resolve_target(config(ctx), ref)
    return name, open_engine(url)


def emit(output: str, data: Any, text: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``text`` to print it for people."""
    if output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        text()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal; elsewhere periodic JSON log lines instead."""
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress("[progress.description]{task.description}", BarColumn(),
                      DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)
        return
    log = logging.getLogger("safehold.progress")
    done = 0
    last = time.monotonic()

    def hook(n: int) -> None:
        nonlocal done, last
        done += n
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            log.info("%s: %d bytes", label, done, extra={"bytes": done, "total": total})

    yield hook
