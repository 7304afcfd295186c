"""Entry point of the ``safehold`` command-line tool (the runner)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from safehold import __version__
from safehold.api.errors import Aborted
from safehold.cli.config import load_config
from safehold.cli.errors import EXIT_CODES_HELP, Exit, Terminated, report_for


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


# Options of the whole program, accepted before or after the subcommand: `safehold list -r R
# --output json` and `safehold --output json list -r R` mean the same.
GLOBAL_OPTIONS = {"--config": True, "--log-level": True, "--log-format": True, "--output": True,
                  "-o": True}


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options (with their values) in front of the subcommand, where click wants them.

    Arguments after ``--`` are left alone.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS and name.startswith("--") and "=" in arg:
            front.append(arg)
        elif arg in GLOBAL_OPTIONS and i + 1 < len(args):
            front += args[i:i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def wanted_output(args: list[str]) -> str:
    """The --output the command line asks for (for errors raised before it is parsed)."""
    output = "text"
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in ("--output", "-o") and i + 1 < len(args):
            output = args[i + 1]
        elif arg.startswith("--output="):
            output = arg.split("=", 1)[1]
    return output


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


class SafeholdGroup(click.Group):
    """Every outcome gets its documented exit code and one clear message (JSON with -o json)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        argv = hoist_global_options(list(sys.argv[1:] if args is None else args))
        output = wanted_output(argv)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.Abort as exc:
            report_for(exc.__context__ if isinstance(exc.__context__, KeyboardInterrupt)
                       else Aborted("cancelled at the prompt (no input)")).emit(output)
            code = (Exit.INTERRUPTED if isinstance(exc.__context__, KeyboardInterrupt)
                    else Exit.ABORTED)
        except (Exception, KeyboardInterrupt, Terminated) as exc:
            report = report_for(exc)
            report.emit(output)
            code = report.code
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if not standalone_mode:
            return code
        sys.exit(int(code or 0))


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
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: every outcome, errors included, is one JSON document on stdout.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str, log_format: str,
        output: str) -> None:
    """Safehold: back up and restore databases to local or object storage.

    Targets are database URLs (sqlite:///abs/path.db) or names from the config file;
    repositories are storage URLs (file:///abs/dir) or names. Keys and passphrases come
    from files or the environment, never the command line. The options below may also be
    given after the command.
    """
    setup_logging(log_level, log_format)
    ctx.obj = {"config": load_config(config_path), "output": output}


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
