"""Entry point of the ``safehold`` command-line tool (the runner)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from safehold import __version__
from safehold.cli.config import load_config
from safehold.cli.errors import EXIT_CODES_HELP, Exit, classify
from safehold.engines.base import redact_url


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (used when stderr is not a terminal)."""

    _RESERVED = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in vars(record).items()
                     if k not in self._RESERVED and not k.startswith("_")})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def setup_logging(level: str, fmt: str) -> None:
    handler: logging.Handler
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        from safehold.cli.common import stderr_console

        # the same console as the progress bar, so log lines print above it, not through it
        handler = RichHandler(console=stderr_console(), show_time=False, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class SafeholdGroup(click.Group):
    """Turns every runner error into one clear line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            code = classify(exc)
            if code is Exit.FAILED:
                logging.getLogger("safehold").debug("unexpected error", exc_info=True)
            click.echo(f"error: {redact_url(str(exc))}", err=True)
            ctx.exit(int(code))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(int(Exit.INTERRUPTED))


@click.group(cls=SafeholdGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes:\n\n\b\n" + EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="safehold")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file naming targets and repositories (YAML or JSON)."
              " [env SAFEHOLD_CONFIG; default ~/.config/safehold/config.yaml]")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="auto", show_default=True,
              type=click.Choice(["auto", "text", "json"]),
              help="auto: text on a terminal, JSON lines otherwise.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str, log_format: str) -> None:
    """Safehold: back up and restore databases to local or object storage.

    Targets are database URLs (sqlite:///abs/path.db) or names from the config file;
    repositories are storage URLs (file:///abs/dir) or names. Keys and passphrases come
    from files or the environment, never the command line.
    """
    setup_logging(log_level, log_format)
    ctx.obj = {"config": load_config(config_path)}


def _register() -> None:
    from safehold.cli import backup_cmds, inspect_cmds, keys_cmds, prune_cmds
    from safehold.cli.run_task import run_task  # the runner Jobs' entry point

    for module in (backup_cmds, inspect_cmds, keys_cmds, prune_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)
    cli.add_command(run_task)


_register()


def main() -> None:
    cli(prog_name="safehold")
