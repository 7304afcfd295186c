"""Slack messages after a standalone `safehold backup`, and the daemon's own notices (a slot
not run, a retention that failed), through the operator's notifier.

The config file's ``notifications.slack`` names where the webhook URL (a secret) is: an
environment variable or a file. The message goes out once the run's outcome is known; a message
that cannot be built or delivered is a warning on stderr and never changes the exit code. The
daemon's notices are problems: they go out when ``on`` lists ``failure``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from safehold.api.errors import SafeholdError
from safehold.cli import common, runlog
from safehold.cli.config import SlackConfig
from safehold.cli.errors import Terminated
from safehold.notify.slack import Notice, SlackNotifier

F = TypeVar("F", bound=Callable[..., Any])


def _slack(ctx: click.Context) -> SlackConfig | None:
    try:
        return common.config(ctx).notifications.slack
    except SafeholdError:  # a broken config file: the command reports it itself
        return None


def webhook_url(slack: SlackConfig) -> str:
    """The webhook URL from the variable or the file the config names (UsageError-free: the
    caller turns any problem into a warning)."""
    if slack.webhook_url_env:
        url = os.environ.get(slack.webhook_url_env, "")
        if not url.strip():
            raise ValueError(f"environment variable {slack.webhook_url_env} (notifications.slack"
                             ".webhook_url_env) is not set")
        return url
    assert slack.webhook_file is not None
    try:
        return slack.webhook_file.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read notifications.slack.webhook_file {slack.webhook_file}:"
                         f" {exc.strerror or exc}") from None


def _warn(text: str) -> None:
    click.echo(f"warning: Slack notification not sent: {text}", err=True)


def send(slack: SlackConfig, notice: Notice, *, retries: int = 3) -> bool:
    """Send one notice if its event is wanted; False (after a warning) when it was not
    delivered. Never raises."""
    if wanted_as(notice) not in slack.on:
        return True
    details: list[str] = []
    try:
        notifier = SlackNotifier(webhook_url(slack), window=None, retries=retries,
                                 on_failure=lambda reason, detail, _: details.append(
                                     f"{reason}: {detail}"))
    except SafeholdError as exc:  # check_url: names the source, never the URL
        _warn(f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
        return False
    except ValueError as exc:
        _warn(str(exc))
        return False
    notifier.notify(notice)
    if notifier.flush():
        return True
    _warn(details[0] if details else "not delivered")
    return False


def wanted_as(notice: Notice) -> str:
    """The ``on`` event a notice is sent for: a backup's own outcome, else ``failure`` (a
    missed slot, a failed retention)."""
    return notice.event if notice.event in ("success", "failure") and not notice.failed \
        else "failure"


def daemon_notice(ctx: click.Context, notice: Notice) -> None:
    """Send one of the daemon's own notices when the config file asks for failures."""
    slack = _slack(ctx)
    if slack is not None:
        send(slack, notice)


def not_run(schedule: str, kind: str, slot: str, why: str) -> Notice:
    """A slot the daemon did not run (missed, or interrupted and not run again)."""
    return Notice(event="missed", target=schedule, backup_type=kind, error_class="SlotNotRun",
                  message=f"schedule {schedule}: the {kind} backup of slot {slot} was not run:"
                  f" {why}"[:1000],
                  hint=f"`safehold schedule show {schedule}` has its record; `safehold"
                  f" schedule run-now {schedule}` backs up now")


def retention_failed(schedule: str, kind: str, target: str, code: int,
                     result: dict[str, Any]) -> Notice:
    """The retention after a successful scheduled backup failed (the prune's JSON result)."""
    error = result.get("error") if isinstance(result.get("error"), dict) else {}
    assert isinstance(error, dict)
    # a prune that finds damaged manifests prunes the rest and exits 4, naming them
    damaged = [str(d.get("problem")) for d in result.get("damaged") or [] if isinstance(d, dict)]
    detail = error.get("message") or "; ".join(damaged)
    hint = error.get("hint") or (f"the damaged backups are kept: `safehold verify -t {target}`"
                                 " checks them" if damaged else None)
    return Notice(event="retention", failed=True, target=target, backup_type=kind,
                  error_class=str(error.get("class") or ("DamagedManifest" if damaged
                                                         else f"exit {code}")),
                  message=(f"schedule {schedule}: retention on {target} failed (exit {code})"
                           + (f": {detail}" if detail else ""))[:1000],
                  hint=str(hint) if hint else None)


def notifying(command: F) -> F:
    """Decorate a backup command's callback (below ``click.pass_context``): an exception leaving
    it is a failure notice, a return a success notice built from the result it emitted. Either
    goes to Slack when the config file asks; the exception is re-raised unchanged."""

    @functools.wraps(command)
    def run(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        slack = _slack(ctx)
        target = str(kwargs.get("name") or kwargs.get("target") or "?")
        try:
            value = command(ctx, *args, **kwargs)
        except click.exceptions.Exit as stop:  # a result was emitted, then its exit code
            current = runlog.current()
            if slack is not None and stop.exit_code:
                send(slack, partial(current.result if current else None, target))
            raise
        except (Exception, KeyboardInterrupt, Terminated) as exc:
            if slack is not None:
                send(slack, failure(exc, target),
                     retries=3 if isinstance(exc, Exception) else 0)  # interrupted: one try
            raise
        if slack is not None:
            current = runlog.current()
            send(slack, success(current.result if current else None, target))
        return value

    return run  # type: ignore[return-value]


def failure(exc: BaseException, target: str) -> Notice:
    error = exc if isinstance(exc, SafeholdError) else None
    return Notice(event="failure", target=target, error_class=type(exc).__name__,
                  message=error.message if error else (str(exc)[:300] or None),
                  hint=error.hint if error else None)


def partial(result: Any, target: str) -> Notice:
    """A failure notice from a multi-database run's result: which databases failed, and why."""
    r = result if isinstance(result, dict) else {}
    parts = [*(r.get("databases") or []), *([r["globals"]] if r.get("globals") else [])]
    failed = [p for p in parts if isinstance(p, dict) and p.get("status") == "failed"]
    names = "; ".join(f"{p.get('database') or 'roles/users'} ({p.get('error', {}).get('message')})"
                      for p in failed)
    return Notice(event="failure", target=str(r.get("target") or target),
                  error_class="PartialFailure" if r.get("status") == "partial" else "Failure",
                  message=f"{r.get('status', 'failure')}: {len(parts) - len(failed)} of"
                  f" {len(parts)} backed up; failed: {names}"[:1000])


def success(result: Any, target: str) -> Notice:
    """A success notice from a backup's emitted summary (``safehold backup -o json``)."""
    r = result if isinstance(result, dict) else {}
    seconds = r.get("seconds")
    raw = r.get("raw_bytes")
    return Notice(event="success", target=str(r.get("target") or target),
                  backup_type=r.get("type"), backup_id=r.get("backup_id"), raw_bytes=raw,
                  stored_bytes=r.get("stored_bytes"), seconds=seconds,
                  throughput_bytes_per_second=(raw / seconds if raw and seconds else None))
