"""Entry point of the ``safehold`` command-line tool (the runner)."""

from __future__ import annotations

import difflib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from safehold import __version__
from safehold.api.errors import Aborted, SafeholdError, UsageError
from safehold.cli import runlog, signals
from safehold.cli.config import LogConfig, load
from safehold.cli.errors import EXIT_CODES_HELP, Exit, Terminated, report_for
from safehold.cli.logsetup import FORMATS, LEVELS, parse_rotation, setup_logging
from safehold.pipeline import keyuse

# Options of the whole program, accepted before or after the subcommand: `safehold list -r R
# --output json` and `safehold --output json list -r R` mean the same.
GLOBAL_OPTIONS = {"--config": True, "--profile": True, "--log-level": True, "--log-format": True,
                  "--log-file": True, "--log-rotate": True, "--log-keep": True, "--output": True,
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


def command_of(argv: list[str]) -> str:
    """The subcommand (``backup``, ``keys rotate``) of hoisted arguments, for the run log."""
    words: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in GLOBAL_OPTIONS:
            i += 2
            continue
        if arg.startswith("-") or len(words) == 2:
            break
        words.append(arg)
        i += 1
    return " ".join(words) or "(none)"


# Failures the audit log records: the command's own event, an authentication failure, tamper.
_AUDITED_FAILURES = {"restore": "restore", "prune": "prune", "keys rotate": "key.rotated"}
_AUTH_WORDS = ("password", "authentication", "access denied", "auth failed")


def audit_failure(run: runlog.Run, exc: BaseException) -> None:
    from safehold.cli import audit

    error: dict[str, Any] = {"error_class": type(exc).__name__,
                             "error": str(getattr(exc, "message", exc))[:300]}
    if not isinstance(exc, SafeholdError):
        return
    if exc.exit_code == Exit.CORRUPT:  # classified by exit code: crypto errors are several
        audit.record("tamper.refused", "refused", command=run.command, **error)
    elif exc.exit_code == Exit.KEY or exc.auth_failure or (
            exc.exit_code == Exit.DATABASE and any(w in exc.message.lower()
                                                   for w in _AUTH_WORDS)):
        audit.record("auth.failure", "refused", command=run.command, **error)
    elif run.command in _AUDITED_FAILURES:
        audit.record(_AUDITED_FAILURES[run.command], "failure", **error)


def _audit_head(run: runlog.Run) -> dict[str, str | None] | None:
    """The audit heads an error result carries: a run that opened a repository or recorded an
    event (a refused key or tamper) shows them like any result."""
    if run.repository is None and not run.audited:
        return None
    from safehold.cli import audit

    try:
        return audit.heads(run)
    except Exception as exc:  # the audit never changes how a run ends
        logging.getLogger("safehold.audit").debug("no audit head: %s", exc)
        return None


def _key_used(key_id: str, facts: dict[str, Any]) -> None:
    """The pipeline unwrapped a data key to read: the audit log's ``key.used``."""
    from safehold.cli import audit

    audit.key_used(key_id, facts)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


class SafeholdGroup(click.Group):
    """Every outcome gets its documented exit code and one clear message (JSON with -o json).
    Commands load lazily (:data:`LAZY_COMMANDS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            import importlib

            module, attribute = LAZY_COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            # click suggests among the commands loaded so far, which leaves out the lazy ones
            known = self.list_commands(ctx)
            close = difflib.get_close_matches(args[0], known) if args else []
            if not close or args[0] in known:
                raise
            raise click.UsageError(f"No such command {args[0]!r}. Did you mean "
                                   + " or ".join(repr(name) for name in close) + "?",
                                   ctx) from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        argv = hoist_global_options(list(sys.argv[1:] if args is None else args))
        output = wanted_output(argv)
        run = runlog.begin(command_of(argv), argv)
        keyuse.listen(_key_used)
        try:
            with signals.handling(signal.SIGTERM, _raise_terminated):
                code = super().main(argv, prog_name, complete_var, standalone_mode=False,
                                    **extra)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.Abort as exc:
            report_for(exc.__context__ if isinstance(exc.__context__, KeyboardInterrupt)
                       else Aborted("cancelled at the prompt (no input)")).emit(output)
            code = (Exit.INTERRUPTED if isinstance(exc.__context__, KeyboardInterrupt)
                    else Exit.ABORTED)
        except (Exception, KeyboardInterrupt, Terminated) as exc:
            report = report_for(exc)
            audit_failure(run, exc)
            report.emit(output, _audit_head(run))
            code = report.code
        runlog.finish(run, int(code or 0))
        if not standalone_mode:
            return code
        sys.exit(int(code or 0))


@click.group(cls=SafeholdGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes:\n\n\b\n" + EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="safehold")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Config file (YAML or JSON). [env SAFEHOLD_CONFIG; else ./safehold.yaml, the"
              " user config dir, the system config dir: see `safehold config show`]")
@click.option("--profile", envvar="SAFEHOLD_PROFILE", default=None,
              help="Profile of the config file merged over its top level. [env SAFEHOLD_PROFILE]")
@click.option("--log-level", default=None, type=click.Choice(LEVELS, case_sensitive=False),
              help="[default: log.level in the config, else info]")
@click.option("--log-format", default=None, type=click.Choice(FORMATS, case_sensitive=False),
              help="auto: text on a terminal, JSON lines otherwise. [default: log.format, else"
              " auto]")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also log to this file (JSON lines unless --log-format text).")
@click.option("--log-rotate", default=None,
              help="Rotate the log file at a size (10MiB) or hourly, daily, midnight (UTC).")
@click.option("--log-keep", type=click.IntRange(min=0), default=None,
              help="Rotated log files kept. [default: 5]")
@click.option("--output", "-o", type=click.Choice(["text", "json", "html"]), default="text",
              show_default=True,
              help="json: every outcome, errors included, is one JSON document on stdout."
              " html: a self-contained page (`safehold stats` only).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, profile: str | None,
        log_level: str | None, log_format: str | None, log_file: Path | None,
        log_rotate: str | None, log_keep: int | None, output: str) -> None:
    """Safehold: back up and restore databases to local or object storage.

    Targets are database URLs (sqlite:///abs/path.db) or names from the config file;
    repositories are storage URLs (file:///abs/dir) or names. Keys and passphrases come
    from files or the environment, never the command line. The options below may also be
    given after the command.
    """
    ctx.obj = {"output": output, "config_path": config_path, "profile": profile}
    try:
        loaded = load(config_path, profile)
    except SafeholdError as exc:  # reported by the first command that needs the config
        ctx.obj["config_error"] = exc
        loaded = None
    settings = loaded.config.log if loaded else LogConfig()
    level = (log_level or settings.level or "info").lower()
    fmt = (log_format or settings.format or "auto").lower()
    rotation = parse_rotation(log_rotate)  # a bad flag is the command line's error
    try:
        setup_logging(level, fmt, file=log_file or settings.file,
                      rotation=rotation if log_rotate else parse_rotation(settings.rotate),
                      keep=log_keep if log_keep is not None else settings.keep)
    except SafeholdError as exc:
        if log_file or log_rotate:
            raise
        # log.file/log.rotate of the config: stderr only; the commands that need the config
        # (and `config validate`) report the problem
        setup_logging(level, fmt)
        ctx.obj.setdefault("config_error", UsageError(f"config log settings: {exc.message}",
                                                      hint=exc.hint))
        loaded = None
    run = runlog.current()
    if loaded is not None:
        ctx.obj["config"] = loaded.config
        ctx.obj["loaded"] = loaded
        if run is not None:
            run.audit_file = loaded.config.audit.file
            run.audit_repository = loaded.config.audit.repository
    if run is not None:
        runlog.started(run)


# Every command, by name: "module:attribute". A command's module is imported only when that
# command runs (or help lists them all), so `safehold backup` never pays for `stats`, `audit`
# or `schedule` (start-up is part of every run's time; tests/unit/test_cli_imports.py).
LAZY_COMMANDS = {
    "audit": "safehold.cli.audit_cmds:audit_group",
    "backup": "safehold.cli.backup_cmds:backup",
    "binlog": "safehold.cli.binlog_cmds:binlog_group",
    "cat": "safehold.cli.inspect_cmds:cat",
    "check": "safehold.cli.prune_cmds:check",
    "config": "safehold.cli.config_cmds:config_group",
    "daemon": "safehold.cli.schedule_cmds:daemon",
    "keys": "safehold.cli.keys_cmds:keys",
    "list": "safehold.cli.inspect_cmds:list_",
    "oplog": "safehold.cli.oplog_cmds:oplog_group",
    "prune": "safehold.cli.prune_cmds:prune",
    "restore": "safehold.cli.restore_cmds:restore",
    "run-task": "safehold.cli.run_task:run_task",  # the runner Jobs' entry point
    "schedule": "safehold.cli.schedule_cmds:schedule",
    "show": "safehold.cli.inspect_cmds:show",
    "stats": "safehold.cli.stats_cmds:stats",
    "verify": "safehold.cli.inspect_cmds:verify",
    "version": "safehold.cli.version_cmds:version",
    "wal": "safehold.cli.wal_cmds:wal_group",
}


def main() -> None:
    """The ``safehold`` command: run it, then exit with its code."""
    code = cli.main(prog_name="safehold", standalone_mode=False)
    # At exit the interpreter's collector walks every object the run made (modules, pydantic
    # schemas) before the modules are cleared: 20 ms of `safehold --version`, 70 ms of
    # `safehold list` (bench/startup.py). Frozen, they are skipped; atexit handlers and thread
    # joins still run. Only here, in the process's own entry point: frozen objects are never
    # collected, which a test calling cli() many times in one process must not inherit.
    gc.freeze()
    sys.exit(int(code or 0))
