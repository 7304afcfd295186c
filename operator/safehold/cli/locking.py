"""``--lock-wait`` and holding targets' leases for the commands that write them.

Backup, prune and key rotation write a target's objects; each holds the target's lease
(:mod:`safehold.repository.lease`) while it does, so a second writer of the same target — here,
on another host, or in a Kubernetes Job — waits up to ``--lock-wait`` or fails with exit 11
naming the holder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import click

from safehold.api.errors import UsageError
from safehold.engines.base import redact_url
from safehold.repository.lease import Holder, Lease, hold, ttl_from_env
from safehold.repository.lease import parse_wait as parse_duration
from safehold.repository.repo import Repository

F = TypeVar("F", bound=Callable[..., Any])


def parse_wait(ctx: click.Context | None, param: click.Parameter | None, value: str) -> float:
    """Seconds from ``90``, ``30s``, ``10m`` or ``1h`` (a click callback)."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def lock_wait_option(f: F) -> F:
    return click.option(
        "--lock-wait", default="0", show_default=True, callback=parse_wait,
        envvar="SAFEHOLD_LOCK_WAIT",
        help="How long to wait while another writer (a backup, prune or key rotation, here or"
        " elsewhere) holds the target's lease: 0 fails at once with exit 11 naming the holder;"
        " e.g. 30s, 10m, 1h. [env SAFEHOLD_LOCK_WAIT]")(f)


def _holder(operation: str, backup_id: str | None) -> Holder:
    command = redact_url(" ".join(["safehold", *sys.argv[1:]]))[:500]
    return Holder.current(operation, backup_id=backup_id, command=command)


def _ttl() -> float:
    try:
        return ttl_from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def target_lease(repository: Repository, target: str, operation: str, wait: float, *,
                 backup_id: str | None = None) -> Iterator[Lease]:
    """Hold ``target``'s lease (heartbeat running) for the block."""
    with hold(repository.storage, target, _holder(operation, backup_id), wait=wait,
              ttl=_ttl()) as lease:
        yield lease


@contextmanager
def target_leases(repository: Repository, targets: Iterable[str], operation: str, wait: float
                  ) -> Iterator[list[Lease]]:
    """Hold the leases of several targets, taken in name order (so two such writers cannot
    each hold one the other waits for); all are released at the end of the block."""
    with ExitStack() as stack:
        yield [stack.enter_context(target_lease(repository, target, operation, wait))
               for target in sorted(set(targets))]
