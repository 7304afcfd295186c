"""The audit log: security-relevant events, appended to a local JSON-lines file and to the
repository the run works on, each record hash-linked to the one before (see
:mod:`safehold.repository.audit` and docs/security.md).

Events: ``key.generated``, ``key.rotated``, ``key.retired``, ``key.used`` (a key unwrapped data
keys to decrypt), ``restore``, ``prune``, ``delete``, ``auth.failure`` (a wrong or missing key,
a database that refused the credentials) and ``tamper.refused`` (an integrity check failed).
Each record says who (user, host, pid, pod), what (the event and its facts), when (UTC), where
(host, repository, command line with passwords redacted) and the outcome.

The local file is appended under an exclusive file lock (``filelock``: flock on POSIX,
msvcrt locking on Windows), so two runs on one host never interleave or fork the chain; the
repository copy is appended with a conditional create (no lease needed). An audit write that
fails is logged as an error; it never changes the outcome of the run it records.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import platformdirs
from filelock import FileLock, Timeout

from safehold import fsutil
from safehold.cli import runlog
from safehold.engines.base import redact_url
from safehold.repository.audit import (
    GENESIS,
    append_to_repository,
    chain,
    record_hash,
    repository_head,
)
from safehold.repository.lease import POD_ENV

log = logging.getLogger("safehold.audit")

FILE_NAME = "audit.jsonl"
LOCK_TIMEOUT = 60.0
_TAIL = 1 << 16


def default_file() -> Path:
    return platformdirs.user_state_path("safehold", appauthor=False) / FILE_NAME


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's random uid)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def event(action: str, outcome: str, *, repository: str | None = None,
          **what: Any) -> dict[str, Any]:
    """One event before it is chained: who, what, when, where, outcome."""
    pod, namespace = (next((os.environ[n] for n in names if os.environ.get(n)), None)
                      for names in POD_ENV)
    host = socket.gethostname()
    who = {"user": _user(), "host": host, "pid": os.getpid()}
    if pod:
        who.update(pod=pod, namespace=namespace)
    return {
        "time": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "action": action,
        "outcome": outcome,
        "who": who,
        "what": {k: v for k, v in what.items() if v is not None},
        "where": {"host": host, "repository": redact_url(repository) if repository else None,
                  "command": redact_url(" ".join(["safehold", *sys.argv[1:]]))[:500]},
    }


def _last_record(path: Path) -> dict[str, Any] | None:
    """The newest complete record of the file (read from its tail), None when empty."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "hash" in record:
            return record
    return None


def append_local(path: Path, body: dict[str, Any]) -> str:
    """Append ``body`` to the local chain under the file lock; the new head."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT):
        last = _last_record(path)
        seq = int(last["seq"]) + 1 if last and isinstance(last.get("seq"), int) else 1
        record = chain(body, seq, str(last["hash"]) if last else GENESIS)
        line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | fsutil.O_BINARY, 0o600)
        try:
            needs_newline = os.fstat(fd).st_size > 0 and not _ends_with_newline(path)
            os.write(fd, (("\n" if needs_newline else "") + line).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    return str(record["hash"])


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def local_head(path: Path) -> str | None:
    """The local file's newest hash; None when there is none or it cannot be read (another
    OS user's file: a restore_command runs as the database server's user)."""
    try:
        last = _last_record(path)
    except OSError as exc:
        log.debug("cannot read the audit log %s: %s", path, exc)
        return None
    return str(last["hash"]) if last else None


def local_records(path: Path) -> Iterator[tuple[str, dict[str, Any] | None]]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            yield f"{path}:{number}", record if isinstance(record, dict) else None


def record(action: str, outcome: str = "success", *, _local: bool = True, **what: Any) -> None:
    """Append an event to the local log and, when the run opened one, the repository's."""
    run = runlog.current()
    repository = run.repository if run else None
    body = event(action, outcome, repository=repository.url if repository else None, **what)
    path = (run.audit_file if run else None) or default_file()
    try:
        if _local:
            head = append_local(path, body)
            if run:
                run.audit_heads["local"] = head
    except (OSError, Timeout) as exc:
        log.error("could not append %s to the audit log %s: %s", action, path, exc)
    if repository is not None and (run is None or run.audit_repository):
        try:
            head = append_to_repository(repository.storage, body)
            if run:
                run.audit_heads["repository"] = head
        except Exception as exc:  # storage failures are the run's to report, not the audit's
            log.error("could not append %s to the repository's audit log: %s", action, exc)
    if run:
        run.audited = True


def heads(run: runlog.Run) -> dict[str, str | None]:
    """The latest hashes a run's result prints: local, and the repository's if it opened one
    (read once per run: later records of the run update them)."""
    found: dict[str, str | None] = {"local": run.audit_heads.get("local")}
    if found["local"] is None:
        found["local"] = local_head(run.audit_file or default_file())
    if run.repository is not None and run.audit_repository:
        try:
            found["repository"] = run.audit_heads.get("repository") or repository_head(
                run.repository.storage)
        except Exception as exc:
            log.debug("no repository audit head: %s", exc)
    run.audit_heads.update({k: v for k, v in found.items() if v is not None})
    return found


def shows_heads(run: runlog.Run | None) -> bool:
    """Whether a run's result carries the heads: it opened a repository, or recorded an event."""
    return run is not None and not run.informational and (run.audited
                                                           or run.repository is not None)


def print_heads(run: runlog.Run) -> None:
    """``audit head (local|repository): HASH`` on stderr, beside a text result (never fails
    the run: an unreadable log just shows no head)."""
    try:
        found = heads(run)
    except Exception as exc:
        log.debug("no audit head: %s", exc)
        return
    for where, head in sorted(found.items()):
        if head:
            click.echo(f"audit head ({where}): {head}", err=True)


__all__ = ["default_file", "event", "heads", "key_used", "local_records", "record",
           "record_hash", "record_restore", "record_task"]


def record_restore(repository: Any, chain: Any, **what: Any) -> None:
    """A completed restore (the keys that unwrapped its data keys were recorded as
    ``key.used`` when they did, by :func:`key_used`)."""
    from safehold.pipeline.keys import read_wrapped_key

    key_ids = sorted({read_wrapped_key(repository, m.target, m.backup_id).key_id
                      for m in chain if m.encryption != "none"})
    backup_id = chain[-1].backup_id if chain else None
    record("restore", backup_id=backup_id, chain=[m.backup_id for m in chain],
           key_ids=key_ids, **what)


_KEYS_USED_LOCK = threading.Lock()


def key_used(key_id: str, facts: dict[str, Any]) -> None:
    """A key unwrapped a data key to read (``safehold.pipeline.keyuse``): ``key.used``, once
    per run and key, naming the command and the first backup or log segment it opened. A
    ``run-task`` records them with the task's other events (:func:`record_task`)."""
    run = runlog.current()
    if run is None or run.informational:
        return
    with _KEYS_USED_LOCK:  # object readers run in worker threads
        if key_id in run.keys_used:
            return
        run.keys_used[key_id] = facts
    if run.command != "run-task":
        record("key.used", key_id=key_id, purpose=run.command, **facts)


# error classes whose credentials were refused (``SafeholdError.auth_failure``), by name: a
# task's result carries the class name only
AUTH_FAILURE_CLASSES = frozenset({"StorageAuthError"})


def record_task(task: Any, result: Any) -> dict[str, str]:
    """The events of an operator Job's task (``run-task``), appended to the task's repository
    (and to the local file only when ``audit.file`` is configured: a Pod's home is ephemeral).
    The heads to put into the task's result."""
    from safehold.repository.repo import Repository
    from safehold.storage.base import open_storage

    run = runlog.current()
    if run is None or getattr(task, "repository", None) is None or not run.audit_repository:
        return {}
    events: list[tuple[str, str, dict[str, Any]]] = []
    error = {"error_class": result.error.error_class, "error": result.error.message[:300]} \
        if result.error else {}
    code = result.exit_code
    if code == 4:
        events.append(("tamper.refused", "refused", {"command": f"run-task {task.kind}",
                                                     **error}))
    elif code == 5 or (result.error is not None and result.error.error_class
                       in AUTH_FAILURE_CLASSES):
        events.append(("auth.failure", "refused", {"command": f"run-task {task.kind}",
                                                   **error}))
    elif task.kind == "restore":
        events.append(("restore", "success" if result.ok else "failure",
                       {"target": result.target or task.source, "backup_id": result.backup_id,
                        "chain": result.chain or None, **error}))
    elif task.kind == "delete":
        events += [("delete", "success", {"target": task.target, "backup_id": backup_id,
                                          "by": "run-task"}) for backup_id in result.deleted]
        if not result.ok:
            events.append(("delete", "failure", {"target": task.target, **error}))
    elif task.kind == "rewrap":
        events.append(("key.rotated", "success" if result.ok else "failure",
                       {"key_id": result.active_key_id, "rewrapped": result.rewrapped, **error}))
        events += [("key.retired", "success", {"key_id": key_id})
                   for key_id in result.retired_key_ids if result.ok]
    events += [("key.used", "success", {"key_id": key_id, "purpose": f"run-task {task.kind}",
                                        **facts}) for key_id, facts in run.keys_used.items()]
    if not events:
        return {}
    try:
        run.repository = Repository(open_storage(task.repository.url))
    except Exception as exc:
        log.error("cannot open the repository for the audit log: %s", exc)
        return {}
    local_file = run.audit_file
    for action, outcome, what in events:
        record(action, outcome, _local=local_file is not None, **what)
    return dict(run.audit_heads)
