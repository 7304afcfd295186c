"""Per-target leases: at most one writer of a target at a time, across processes, hosts and pods.

The lease is an object in the repository itself, ``<target>/lease.json``, so every writer that
can reach the repository sees it (a CLI on a laptop, a runner Job, the standalone scheduler)
and no other coordination service is needed. It is taken and kept only with the storage's
conditional writes (:meth:`Storage.put_if_absent` / :meth:`Storage.replace_if`):

* **take**: create the record if absent; else read it, and if it is released or expired,
  replace *that version* of it. Of several writers racing for a free or expired lease exactly
  one wins; the others see the winner's record.
* **keep**: a heartbeat thread renews the record every ``ttl / 3`` seconds, replacing the
  version it wrote last. A holder that is killed, or a pod that vanishes, stops renewing, and
  its lease expires ``ttl`` seconds after its last renewal: the next writer breaks it (again
  conditionally, so two breakers cannot both win).
* **lose**: if a renewal finds another record (someone broke the lease), or no renewal has
  succeeded for ``ttl`` seconds, :meth:`Lease.check` raises :class:`LeaseLost` and the writer
  stops before it writes its manifest.
* **release**: the record is replaced by a released one (never deleted: a delete cannot be made
  conditional on every backend, and an unconditional one could remove a successor's lease).

Expiry compares the record's ``expires_at`` with the breaker's wall clock, so hosts' clocks
must agree to well within the TTL (NTP does): a renewal leaves at least ``2/3 ttl`` of validity,
which is the clock skew tolerated. A holder judges its own validity with a monotonic clock.
The clock is injectable for tests.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from safehold.api.errors import LeaseHeld
from safehold.repository import layout
from safehold.storage.base import ConditionFailed, ObjectNotFound, Storage, StorageError

log = logging.getLogger("safehold.lease")

LEASE = "lease.json"
FORMAT = 1
DEFAULT_TTL = 60.0  # seconds a lease stays valid after its last renewal
MIN_TTL = 1.0
TTL_ENV = "SAFEHOLD_LEASE_TTL"
POD_ENV = (("SAFEHOLD_POD_NAME", "POD_NAME"), ("SAFEHOLD_POD_NAMESPACE", "POD_NAMESPACE"))
_TAKE_ATTEMPTS = 20  # immediate re-tries when the record changes under us while taking it


def lease_key(target: str) -> str:
    return f"{layout.check_target_name(target)}/{LEASE}"


class LeaseLost(LeaseHeld):
    """The lease was broken by another writer, or could not be renewed within its TTL."""


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (compared across hosts)."""
        ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Holder(BaseModel):
    """Who holds a lease, as the record names it to the writers it keeps waiting."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    operation: str  # backup, prune, keys rotate
    host: str
    pid: int
    command: str = ""
    backup_id: str | None = None
    pod: str | None = None
    namespace: str | None = None

    @classmethod
    def current(cls, operation: str, *, backup_id: str | None = None,
                command: str | None = None, environ: Mapping[str, str] | None = None
                ) -> Holder:
        """This process: host, pid, command line (pass a redacted one: URLs may hold passwords),
        and the Kubernetes pod and namespace when the runner's environment names them."""
        env = os.environ if environ is None else environ
        pod, namespace = (next((env[n] for n in names if env.get(n)), None) for names in POD_ENV)
        return cls(operation=operation, host=socket.gethostname(), pid=os.getpid(),
                   command=command if command is not None else " ".join(sys.argv)[:500],
                   backup_id=backup_id, pod=pod, namespace=namespace)

    def describe(self) -> str:
        what = f"safehold {self.operation}"
        if self.backup_id:
            what += f" of backup {self.backup_id}"
        where = f"pid {self.pid} on host {self.host}"
        if self.pod:
            where += f", pod {self.namespace + '/' if self.namespace else ''}{self.pod}"
        return f"{what} ({where})"


class LeaseRecord(BaseModel):
    """``<target>/lease.json``. ``token`` identifies one lease across its renewals; ``renewals``
    makes every write's bytes unique (some backends' versions are content hashes)."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    format: int = FORMAT
    target: str
    holder: Holder
    token: str
    renewals: int = 0
    taken_at: datetime
    renewed_at: datetime
    expires_at: datetime
    released: bool = False

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    def expired(self, now: float) -> bool:
        return self.released or self.expires_at.timestamp() <= now


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


_PROBED: set[str] = set()  # repository URLs whose conditional writes were seen to work
_PROBED_LOCK = threading.Lock()


def check_conditional_writes(storage: Storage, target: str) -> None:
    """Refuse storage that ignores write conditions (once per repository URL and process).

    A server that predates conditional writes may accept ``If-None-Match``/``If-Match`` and
    write regardless; then two writers could both "take" a lease. This writes a probe object
    beside the lease, checks that a second create and a replace of a stale version are both
    refused, and deletes it. (Atomicity under concurrency cannot be probed this way: the
    contract tests race real writers for that.)
    """
    with _PROBED_LOCK:
        if storage.url in _PROBED:
            return
    probe = f"{layout.check_target_name(target)}/lease-probe-{secrets.token_hex(8)}.json"
    ignored = None
    try:
        version = storage.put_if_absent(probe, b"probe 1 " + secrets.token_bytes(16))
        try:
            storage.put_if_absent(probe, b"probe 2 " + secrets.token_bytes(16))
            ignored = "a create of an object that exists (If-None-Match: *)"
        except ConditionFailed:
            pass
        if ignored is None:
            storage.replace_if(probe, b"probe 3 " + secrets.token_bytes(16), version)
            try:  # the version replaced just now is stale
                storage.replace_if(probe, b"probe 4 " + secrets.token_bytes(16), version)
                ignored = "a replace of a version that is no longer current (If-Match)"
            except ConditionFailed:
                pass
    finally:
        storage.delete(probe)
    if ignored:
        raise StorageError(
            f"the storage of {storage.url} accepted {ignored}: it ignores conditional writes,"
            " so Safehold cannot keep two writers of a target apart; use a server that"
            " supports them (AWS S3, GCS, Azure Blob, or an S3-compatible server with"
            " conditional PutObject; see docs/storage.md)")
    with _PROBED_LOCK:
        _PROBED.add(storage.url)


_WAIT = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")
_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600}
WAIT_ENV = "SAFEHOLD_LOCK_WAIT"


def parse_wait(text: str) -> float:
    """Seconds from ``90``, ``30s``, ``10m`` or ``1h``; ValueError naming the forms."""
    match = _WAIT.fullmatch(str(text).strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use seconds (90), or a number with s, m"
                         " or h (30s, 10m, 1h)")
    number, unit = match.groups()
    return float(number) * _SECONDS[unit]


def wait_from_env(default: float, environ: Mapping[str, str] | None = None) -> float:
    """``SAFEHOLD_LOCK_WAIT`` (as :func:`parse_wait` reads it), else ``default``."""
    value = (os.environ if environ is None else environ).get(WAIT_ENV, "").strip()
    if not value:
        return default
    try:
        return parse_wait(value)
    except ValueError as exc:
        raise ValueError(f"invalid {WAIT_ENV}: {exc}") from None


def ttl_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The lease TTL: ``SAFEHOLD_LEASE_TTL`` seconds, else the default (60)."""
    value = (os.environ if environ is None else environ).get(TTL_ENV, "").strip()
    if not value:
        return DEFAULT_TTL
    try:
        ttl = float(value)
    except ValueError:
        ttl = -1.0
    if not ttl >= MIN_TTL:  # also rejects NaN
        raise ValueError(f"invalid {TTL_ENV}={value!r}: use a number of seconds >= {MIN_TTL:g}"
                         f" (default {DEFAULT_TTL:g})")
    return ttl


class Lease:
    """One writer's lease on one target. Use :func:`hold`; the methods are for it and tests."""

    def __init__(self, storage: Storage, target: str, holder: Holder, *,
                 ttl: float = DEFAULT_TTL, clock: Clock | None = None) -> None:
        if not ttl >= MIN_TTL:
            raise ValueError(f"lease TTL {ttl!r} is below {MIN_TTL:g}s")
        self.storage, self.target, self.holder, self.ttl = storage, target, holder, ttl
        self.key = lease_key(target)
        self.clock = clock or SystemClock()
        self.record: LeaseRecord | None = None
        self.version: str | None = None
        self._renewed = 0.0  # monotonic time of the last successful write
        self._lost: LeaseLost | None = None
        self._mutex = threading.Lock()  # renewals from the heartbeat and from confirm()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        return f"target {self.target!r} in {self.storage.url}"

    # -- taking --------------------------------------------------------------------------------

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lease, waiting up to ``wait`` seconds for its holder to release it or for
        it to expire; raise LeaseHeld naming the holder when that does not happen in time."""
        check_conditional_writes(self.storage, self.target)
        deadline = self.clock.monotonic() + max(wait, 0.0)
        announced = False
        while True:
            current = self._try_take()
            if current is None:
                return
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                raise self._held_error(current)
            if not announced:
                log.info("%s is locked by %s until %s; waiting up to %.0fs", self.where,
                         current.holder.describe(), _when(current.expires_at), remaining)
                announced = True
            until_expiry = current.expires_at.timestamp() - self.clock.time() + 0.05
            poll = max(0.2, min(5.0, self.ttl / 4))
            self.clock.sleep(max(0.05, min(remaining, poll, until_expiry)))

    def _try_take(self) -> LeaseRecord | None:
        """Take the lease if it is free, released or expired: None; else the holder's record."""
        for _ in range(_TAKE_ATTEMPTS):
            now = self.clock.time()
            mine = LeaseRecord(target=self.target, holder=self.holder,
                               token=secrets.token_hex(16), taken_at=_at(now), renewed_at=_at(now),
                               expires_at=_at(now + self.ttl))
            try:
                self._took(mine, self.storage.put_if_absent(self.key, mine.to_bytes()))
                return None
            except ConditionFailed:
                pass
            try:
                data, version = self.storage.get_versioned(self.key)
            except ObjectNotFound:
                continue  # deleted meanwhile: create it again
            current = self._parse(data)
            if current is not None and not current.expired(now):
                return current
            try:
                self._took(mine, self.storage.replace_if(self.key, mine.to_bytes(), version))
            except ConditionFailed:
                continue  # someone else changed it first: look again
            if current is None:
                log.warning("replaced the unreadable lease record %s in %s", self.key,
                            self.storage.url)
            elif not current.released:
                log.warning("took over the expired lease of %s from %s (expired %s)",
                            self.where, current.holder.describe(), _when(current.expires_at))
            return None
        raise StorageError(f"the lease record {self.key} in {self.storage.url} kept changing"
                           f" while {_TAKE_ATTEMPTS} attempts tried to take it; try again")

    def _took(self, record: LeaseRecord, version: str) -> None:
        self.record, self.version = record, version
        self._renewed = self.clock.monotonic()
        self._lost = None
        log.debug("took the lease of %s (%s)", self.where, self.key)

    def _parse(self, data: bytes) -> LeaseRecord | None:
        try:
            return LeaseRecord.model_validate_json(data)
        except ValidationError:
            return None  # not a lease record we can read: treated as expired

    def _held_error(self, current: LeaseRecord) -> LeaseHeld:
        left = current.expires_at.timestamp() - self.clock.time()
        return LeaseHeld(
            f"{self.where} is locked by {current.holder.describe()} since"
            f" {_when(current.taken_at)}; its lease expires at {_when(current.expires_at)}"
            f" (in {max(left, 0):.0f}s) unless renewed; retry later or wait for it with"
            f" --lock-wait (e.g. --lock-wait 10m)",
            hint=f"a lease whose holder was killed expires by itself {self.ttl:.0f}s after its"
                 f" last renewal; the record is {self.key} in the repository")

    # -- keeping -------------------------------------------------------------------------------

    def renew(self) -> None:
        """Extend the lease by a TTL from now; LeaseLost if it is no longer ours."""
        with self._mutex:
            if self._lost is not None:
                raise self._lost
            if self.record is None or self.version is None:
                raise RuntimeError("renew() of a lease that is not held")
            now = self.clock.time()
            record = self.record.model_copy(update={
                "renewals": self.record.renewals + 1, "renewed_at": _at(now),
                "expires_at": _at(now + self.ttl)})
            try:
                version = self.storage.replace_if(self.key, record.to_bytes(), self.version)
            except ConditionFailed:
                self._lost = self._taken_over()
                raise self._lost from None
            self.record, self.version = record, version
            self._renewed = self.clock.monotonic()

    def _taken_over(self) -> LeaseLost:
        try:
            current = self._parse(self.storage.get_versioned(self.key)[0])
        except StorageError:
            current = None
        by = f" by {current.holder.describe()}" if current and not current.released else ""
        return LeaseLost(f"lost the lease of {self.where}: it was broken or taken over{by}"
                         " (this writer had not renewed it in time); stopping before anything"
                         " else is written; run the operation again")

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still ours and was renewed within its TTL."""
        if self._lost is not None:
            raise self._lost
        if self.record is None:
            raise RuntimeError("check() of a lease that is not held")
        silent = self.clock.monotonic() - self._renewed
        if silent >= self.ttl:
            self._lost = LeaseLost(
                f"lost the lease of {self.where}: it could not be renewed for {silent:.0f}s"
                f" (TTL {self.ttl:.0f}s), so another writer may have taken it; stopping before"
                " anything else is written; check the storage and run the operation again")
            raise self._lost

    def confirm(self) -> None:
        """Renew now and check: called right before a writer commits (writes its manifest)."""
        self.check()
        self.renew()
        self.check()

    def start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.target}",
                                        daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        interval = self.ttl / 3
        wait = interval
        while not self._stop.wait(wait):
            try:
                self.renew()
                wait = interval
            except LeaseLost as exc:
                log.error("%s", exc)
                return
            except StorageError as exc:  # transient trouble: try again soon, check() judges
                log.warning("could not renew the lease of %s: %s", self.where, exc)
                wait = max(0.2, interval / 4)

    # -- releasing -----------------------------------------------------------------------------

    def release(self) -> None:
        """Mark the record released (conditionally: a successor's lease is never touched)."""
        self.stop_heartbeat()
        with self._mutex:
            if self.record is None or self.version is None:
                return
            now = self.clock.time()
            record = self.record.model_copy(update={
                "renewals": self.record.renewals + 1, "renewed_at": _at(now),
                "expires_at": _at(now), "released": True})
            try:
                self.storage.replace_if(self.key, record.to_bytes(), self.version)
            except ConditionFailed:
                log.warning("the lease of %s was no longer ours when released", self.where)
            except StorageError as exc:
                log.warning("could not release the lease of %s (%s); it expires by itself at"
                            " %s", self.where, exc, _when(self.record.expires_at))
            self.record, self.version = None, None


@contextmanager
def hold(storage: Storage, target: str, holder: Holder, *, wait: float = 0.0,
         ttl: float = DEFAULT_TTL, clock: Clock | None = None) -> Iterator[Lease]:
    """Hold the lease of ``target`` (heartbeat running) for the duration of the block."""
    lease = Lease(storage, target, holder, ttl=ttl, clock=clock)
    lease.acquire(wait)
    try:
        lease.start_heartbeat()
        yield lease
    finally:
        lease.release()
