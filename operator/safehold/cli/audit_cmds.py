"""`safehold audit verify`: check an audit history against a head a later run printed."""

from __future__ import annotations

from pathlib import Path

import click

from safehold.api.errors import NotFoundError
from safehold.cli import audit, common, runlog
from safehold.repository.audit import AuditTampered, repository_records, verify_chain


@click.group("audit")
def audit_group() -> None:
    """Check the audit log (docs/security.md)."""


@audit_group.command()
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The local audit file. [default: audit.file in the config, else the user"
              " state dir's audit.jsonl]")
@click.option("--repo", "-r", default=None,
              help="Verify this repository's audit log instead of the local file.")
@click.option("--head", "head", default=None,
              help="A later run's audit_head (local or repository): the history must contain"
              " it, so a history cut short or rewritten is detected.")
@common.output_option
@click.pass_context
def verify(ctx: click.Context, file: Path | None, repo: str | None, head: str | None,
           output: str) -> None:
    """Re-hash every record and check each links to the one before (exit 4 if not)."""
    if repo:
        repository = common.open_repo(ctx, repo)
        source = f"{repository.url} (_audit/)"
        report = verify_chain(repository_records(repository.storage), head)
    else:
        run = runlog.current()
        path = file or common.config(ctx).audit.file or (run and run.audit_file) \
            or audit.default_file()
        source = str(path)
        if not path.exists():
            if head is None:
                raise NotFoundError(f"no audit log at {path}",
                                    hint="give --file, or audit.file in the config")
            raise AuditTampered(f"the audit log {path} is gone, but a later run reported the"
                                f" head {head}: the whole history was removed")
        report = verify_chain(audit.local_records(path), head)
    doc = {"source": source, "records": report.records, "head": report.head,
           "expected_head_found": report.head_found, "ok": not report.problems,
           "problems": list(report.problems)}

    def text() -> None:
        if report.problems:
            for problem in report.problems:
                click.echo(f"TAMPERED {problem}")
        else:
            click.echo(f"{source}: {report.records} record(s), chain intact, head"
                       f" {report.head}" + (" (contains the given head)" if head else ""))

    common.emit(output, doc, text)
    if report.problems:
        raise AuditTampered(f"the audit log {source} fails verification:"
                            f" {len(report.problems)} problem(s), first: {report.problems[0]}",
                            hint="restore the log from a copy you trust (the repository's and"
                            " the local copy hold the same events) and investigate who"
                            " changed it")


COMMANDS = [audit_group]
