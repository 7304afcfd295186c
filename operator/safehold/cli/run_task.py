"""`safehold run-task`: the entry point of the operator's runner Jobs.

Reads one task (:mod:`safehold.api.task`) from ``--task-file`` or the ``SAFEHOLD_TASK``
environment variable, runs it through the same pipeline as the other commands, and writes the
result (:mod:`safehold.api.result`) as JSON of at most 4 KiB to the Pod's termination-message
file. Every outcome — success, a bad task, a failure, SIGTERM — produces a result; the exit code
is the error taxonomy's (docs/cli.md).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import click
from pydantic import ValidationError

from safehold.api.common import ErrorInfo
from safehold.api.errors import Exit, SafeholdError, UsageError
from safehold.api.result import TaskKind, TaskResult
from safehold.api.task import TASK_ENV, Task, parse_task
from safehold.cli import signals
from safehold.cli.errors import Terminated as CliTerminated
from safehold.cli.errors import report_for
from safehold.cli.signals import SignalExit
from safehold.engines.base import redact_url

log = logging.getLogger("safehold.task")
TERMINATION_LOG = Path("/dev/termination-log")


class Terminated(SafeholdError):
    """Kubernetes stopped the Pod (deletion, activeDeadlineSeconds, eviction)."""

    exit_code = Exit.TERMINATED
    transient = True


class _Signalled(SignalExit):
    """SIGTERM while a task runs. A BaseException, like KeyboardInterrupt, so it unwinds past
    every ``except Exception`` on the way (a driver's error wrapping would otherwise turn it
    into a database error, and a streamer would retry it); :func:`run` turns it into the
    Terminated result."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminated(signum: int) -> Terminated:
    return Terminated(f"stopped by signal {signal.Signals(signum).name}",
                      hint="the Job was deleted, hit activeDeadlineSeconds or the Pod was"
                      " evicted; a retried backup resumes where this one stopped")


def error_info(exc: BaseException) -> ErrorInfo:
    """The runner's verdict on ``exc``: class, message (URLs redacted), exit code, hint."""
    if isinstance(exc, SafeholdError):
        code, transient, hint = int(exc.exit_code), exc.transient, exc.hint
        name, message = exc.error_class, exc.message
    else:
        report = report_for(exc)  # click usage errors, signals, or a bug (exit 1)
        code, transient, hint = int(report.code), False, report.hint
        name, message = report.error_class, report.message
    return ErrorInfo(error_class=name, message=redact_url(message) or name, exit_code=code,
                     hint=redact_url(hint) if isinstance(hint, str) else None,
                     transient=transient)


def read_task(task_file: Path | None) -> Task:
    """The task from ``task_file``, else from $SAFEHOLD_TASK; UsageError naming each problem."""
    if task_file is not None:
        text, where = task_file.read_text(), str(task_file)
    elif os.environ.get(TASK_ENV):
        text, where = os.environ[TASK_ENV], f"${TASK_ENV}"
    else:
        raise UsageError(f"no task: set {TASK_ENV} (JSON) or pass --task-file",
                         hint="run-task is started by the operator's Jobs; see docs/cli.md")
    try:
        return parse_task(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'task'}: {e['msg']}" for e in exc.errors()
        )
        raise UsageError(f"invalid task in {where}: {problems}") from None


def _kind_of(task_file: Path | None) -> TaskKind | None:
    """The task's kind, if it can be told even though the task is invalid (for the result)."""
    try:
        text = task_file.read_text() if task_file else os.environ.get(TASK_ENV, "")
        kind = json.loads(text).get("kind")
    except Exception:
        return None
    kinds: tuple[TaskKind, ...] = ("backup", "restore", "check", "delete", "rewrap", "verify",
                               "list", "stream")
    return next((k for k in kinds if k == kind), None)


def run(task_file: Path | None) -> TaskResult:
    """Read and execute the task; never raises: every failure becomes a Failed result."""
    from safehold.pipeline.tasks import Stages, execute, name_wired_secrets

    task: Task | None = None
    stages = Stages()
    try:
        task = read_task(task_file)
        log.info("running %s task", task.kind)
        if task.kind == "stream":  # long-running: ends only when stopped
            from safehold.cli.streamers import run_stream_task

            run_stream_task(task)
            result = TaskResult(kind="stream", phase="Completed")
        else:
            result = execute(task, stages)
    except (Exception, KeyboardInterrupt, _Signalled, CliTerminated) as exc:
        if isinstance(exc, _Signalled):
            exc = _terminated(exc.signum)
        elif isinstance(exc, CliTerminated):  # a streamer's own SIGTERM handling (wal stream)
            exc = _terminated(signal.SIGTERM)
        error = error_info(exc)
        kind = task.kind if task is not None else None
        if error.exit_code == int(Exit.FAILED):
            log.error("unexpected error in the %s task", kind or "", exc_info=True)
        result = TaskResult.failure(kind or _kind_of(task_file), error, **stages.facts())
    # a Kubernetes user set a Secret, not --password-file: the hints name that Secret
    return name_wired_secrets(result, task) if task is not None else result


def audit_task(task_file: Path | None, result: TaskResult) -> TaskResult:
    """Record a task's security-relevant events (restores, deletions, key rotations, refused
    keys and tamper) in the repository's audit log; the result then carries the head."""
    from safehold.cli import audit

    try:
        task = read_task(task_file)
    except SafeholdError:
        return result
    heads = audit.record_task(task, result)
    return result.model_copy(update={"audit_head": heads}) if heads else result


def write_result(result: TaskResult, result_file: Path | None) -> None:
    text = result.to_termination_message()
    target = result_file or (TERMINATION_LOG if TERMINATION_LOG.exists() else None)
    if target is None:
        click.echo(text)
        return
    try:
        target.write_text(text)
    except OSError as exc:
        log.error("cannot write the result to %s (%s); printing it instead", target, exc)
        click.echo(text)
        return
    # the whole result also goes to the log (kubectl logs), the 4 KiB message may be cut
    log.info("result: %s", result.to_json())


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


@click.command("run-task")
@click.option("--task-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"JSON task file (default: the {TASK_ENV} environment variable).")
@click.option("--result-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the result JSON (at most 4 KiB)."
              f" [default: {TERMINATION_LOG} when it exists, else stdout]")
@click.pass_context
def run_task(ctx: click.Context, task_file: Path | None, result_file: Path | None) -> None:
    """Run one task of the operator's runner Job and report its result.

    The task (backup, restore, check, delete, rewrap, verify, list, stream) holds no
    secrets: passwords,
    URLs with credentials, storage credentials and keys come from the environment variables
    and mounted files it names.
    """
    with signals.handling(signal.SIGTERM, _terminate):
        result = run(task_file)
    result = audit_task(task_file, result)
    write_result(result, result_file)
    if not result.ok:
        assert result.error is not None
        click.echo(f"error: {result.error.message}", err=True)
    sys.stdout.flush()
    ctx.exit(result.exit_code)


