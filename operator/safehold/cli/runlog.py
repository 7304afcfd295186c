"""One CLI run: what it did, for the run log (start, end, duration, outcome, sizes, ratio,
per-stage timings) and for the audit log (the repository it opened, the heads it printed).

A command's result reaches this module through :func:`safehold.cli.common.emit`, so the run
log reads whatever the command reports: ``raw_bytes``, ``stored_bytes``,
``compression_ratio`` and any per-stage timings (``stage_seconds`` or ``stages``, at the top
level or in a nested mapping such as the result's ``pipeline``) with their ``bottleneck``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safehold.repository.repo import Repository

log = logging.getLogger("safehold.run")

_SIZE_KEYS = ("raw_bytes", "stored_bytes", "compression_ratio", "throughput_mib_s",
              "freed_bytes")
_STAGE_KEYS = ("stage_seconds", "stages")


@dataclass
class Run:
    command: str
    started: float = field(default_factory=time.monotonic)
    result: Any = None
    repository: Repository | None = None
    audit_file: Path | None = None
    audit_repository: bool = True
    audit_heads: dict[str, str] = field(default_factory=dict)
    audited: bool = False
    keys_used: dict[str, dict[str, Any]] = field(default_factory=dict)  # key id -> first read
    informational: bool = False  # --help or --version: nothing runs, nothing is logged


_current: Run | None = None
INFORMATIONAL_FLAGS = frozenset({"-h", "--help", "--version"})


def begin(command: str, argv: list[str] | None = None) -> Run:
    """A run of ``command``; asking for help or the version (``argv``) is not a run."""
    global _current
    _current = Run(command, informational=bool(INFORMATIONAL_FLAGS & set(argv or ())))
    return _current


def started(run: Run) -> None:
    """Log the start (once logging is set up from the options and the config)."""
    if run.informational:
        return
    log.info("run started: safehold %s", run.command, extra={"event": "run.start",
                                                           "command": run.command})


def current() -> Run | None:
    return _current


OUTCOMES = ("success", "partial", "failure")


def outcome(code: int, run: Run) -> str:
    """The result's own ``status`` when it states one (a multi-database backup: every database
    failed is a failure, though it reports each); else success; partial: a result was reported
    but some of it failed (e.g. a damaged backup beside healthy ones); failure: no result."""
    status = run.result.get("status") if isinstance(run.result, dict) else None
    if status in OUTCOMES:
        return str(status)
    if code == 0:
        return "success"
    return "partial" if run.result is not None else "failure"


def finish(run: Run, code: int) -> None:
    global _current
    if run.informational and code == 0:
        _current = None
        return
    seconds = round(time.monotonic() - run.started, 3)
    facts: dict[str, Any] = {"event": "run.end", "command": run.command, "exit_code": code,
                             "outcome": outcome(code, run), "seconds": seconds}
    if isinstance(run.result, dict):
        facts.update({k: run.result[k] for k in _SIZE_KEYS if run.result.get(k) is not None})
        # stage timings at the top level or one level down (e.g. the result's "pipeline")
        for part in [run.result, *(v for v in run.result.values() if isinstance(v, dict))]:
            for key in _STAGE_KEYS:
                if isinstance(part.get(key), dict) and "stage_seconds" not in facts:
                    facts["stage_seconds"] = part[key]
                    if part.get("bottleneck"):
                        facts["bottleneck"] = part["bottleneck"]
    if run.repository is not None and not run.audit_heads:  # a run that printed no result
        from safehold.cli import audit

        try:
            audit.heads(run)
        except Exception as exc:  # the audit never changes how a run ends
            log.debug("no audit head: %s", exc)
    if run.audit_heads:
        facts["audit_head"] = dict(run.audit_heads)
    sizes = ""
    if "raw_bytes" in facts and "stored_bytes" in facts:
        sizes = f", {facts['raw_bytes']} -> {facts['stored_bytes']} bytes"
    stages = ""
    if "stage_seconds" in facts:
        stages = ", stages " + " ".join(f"{k}={v}s" for k, v in facts["stage_seconds"].items())
    log.info("run finished: safehold %s: %s (exit %d) in %.3fs%s%s", run.command,
             facts["outcome"], code, seconds, sizes, stages, extra=facts)
    _current = None
