"""How the CLI reports an outcome: exit codes (docs/cli.md), error messages, JSON error documents.

Every deliberate error is a :class:`~safehold.api.errors.SafeholdError` carrying its exit code and
an optional hint, classified where it arises. Anything else that escapes is a bug: exit 1 with
"this is a bug" and how to get the traceback, never disguised as a usage error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import click

from safehold.api.errors import EXIT_MEANING, Exit, SafeholdError
from safehold.cli.signals import SignalExit

__all__ = ["EXIT_CODES_HELP", "Exit", "Report", "Terminated", "report_for"]

EXIT_CODES_HELP = "\n".join(f"  {code.value:>3}  {EXIT_MEANING[code]}" for code in Exit)
BUG_HINT = ("run the command again with `--log-level debug` for the traceback, and report the"
            " bug with that output")


class Terminated(SignalExit):
    """SIGTERM arrived: unwind like KeyboardInterrupt (nothing catches it on the way)."""


@dataclass(frozen=True)
class Report:
    """One outcome other than success, as the user sees it."""

    code: Exit
    error_class: str
    message: str
    hint: str | None = None

    def as_json(self, extra: dict[str, object] | None = None) -> str:
        return json.dumps({"error": {"code": int(self.code), "class": self.error_class,
                                     "message": self.message, "hint": self.hint},
                           **(extra or {})}, indent=2)

    def emit(self, output: str, audit_head: dict[str, str | None] | None = None) -> None:
        """The error on stderr (JSON: on stdout), with the audit heads when given."""
        if output == "json":
            click.echo(self.as_json({"audit_head": audit_head} if audit_head else None))
            return
        click.echo(f"error: {self.message}", err=True)
        if self.hint:
            click.echo(f"hint: {self.hint}", err=True)
        for where, head in sorted((audit_head or {}).items()):
            if head:
                click.echo(f"audit head ({where}): {head}", err=True)


_SIGNAL_REPORTS = {
    Exit.INTERRUPTED: "interrupted (SIGINT): stopped cleanly; no backup or restore was"
                      " completed, and nothing partial is visible (an interrupted backup has no"
                      " manifest; `safehold prune` removes its leftovers)",
    Exit.TERMINATED: "terminated (SIGTERM): stopped cleanly; no backup or restore was completed,"
                     " and nothing partial is visible (an interrupted backup has no manifest;"
                     " `safehold prune` removes its leftovers)",
}


def report_for(exc: BaseException) -> Report:
    """The report for anything that ended a command; unknown exceptions are bugs (exit 1)."""
    from safehold.engines.base import redact_url

    if isinstance(exc, SafeholdError):
        return Report(exc.exit_code, exc.error_class, redact_url(exc.message),
                      redact_url(exc.hint) if exc.hint else None)
    if isinstance(exc, click.ClickException):
        message = exc.format_message()
        if isinstance(exc, click.BadParameter) and exc.param is not None \
                and exc.param.name == "output":
            hint = ("-o/--output chooses the output format of any command (text or json; html"
                    " for `stats`), not a file: redirect stdout to keep it (> FILE);"
                    " `safehold keys generate` writes its key with --out FILE")
        elif isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f"see `{exc.ctx.command_path} --help`"
        else:
            hint = None
        return Report(Exit.USAGE, "UsageError", message, hint)
    if isinstance(exc, Terminated):
        return Report(Exit.TERMINATED, "Terminated", _SIGNAL_REPORTS[Exit.TERMINATED])
    if isinstance(exc, KeyboardInterrupt):
        return Report(Exit.INTERRUPTED, "Interrupted", _SIGNAL_REPORTS[Exit.INTERRUPTED])
    logging.getLogger("safehold").debug("unexpected error", exc_info=exc)
    text = redact_url(f"{type(exc).__name__}: {exc}")
    return Report(Exit.FAILED, "Bug", f"unexpected {text}; this is a bug in safehold", BUG_HINT)
