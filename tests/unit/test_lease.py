"""Leases on a real local repository with an injected clock: taking, waiting, expiry, breaking,
renewing, losing and releasing. (The same storage primitive is raced on every backend in
tests/contract; real processes fight over leases in tests/integration/test_lease_cli.py.)"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from safehold.api.errors import Exit, LeaseHeld
from safehold.repository.lease import (
    DEFAULT_TTL,
    Holder,
    Lease,
    LeaseLost,
    LeaseRecord,
    hold,
    lease_key,
    ttl_from_env,
)
from safehold.storage.local import LocalStorage

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00Z


class FakeClock:
    """Wall and monotonic time that move only when told to (or when someone sleeps)."""

    def __init__(self) -> None:
        self.now = T0
        self.mono = 1000.0
        self.slept: list[float] = []
        self.on_sleep: list[object] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.advance(seconds)
        for hook in self.on_sleep:
            hook()  # type: ignore[operator]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "repo")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def holder(operation: str = "backup", pid: int = 4242, **extra: str) -> Holder:
    return Holder(operation=operation, host="db-host-1", pid=pid, command="safehold backup",
                  **extra)


def record(storage: LocalStorage, target: str = "app") -> LeaseRecord:
    return LeaseRecord.model_validate_json(storage.get_bytes(lease_key(target)))


def test_a_free_lease_is_taken_and_names_its_holder(storage: LocalStorage, clock: FakeClock
                                                    ) -> None:
    lease = Lease(storage, "app", holder(backup_id="20270115T080000.000000Z", pod="job-x",
                                         namespace="prod"), ttl=30, clock=clock)
    lease.acquire()
    body = json.loads(storage.get_bytes("app/lease.json"))
    assert body["holder"] == {"operation": "backup", "host": "db-host-1", "pid": 4242,
                              "command": "safehold backup",
                              "backup_id": "20270115T080000.000000Z", "pod": "job-x",
                              "namespace": "prod"}
    assert body["taken_at"] == "2027-01-15T08:00:00Z"
    assert body["expires_at"] == "2027-01-15T08:00:30Z"
    assert body["released"] is False
    lease.release()
    assert record(storage).released


def test_a_second_writer_fails_at_once_naming_the_holder(storage: LocalStorage,
                                                         clock: FakeClock) -> None:
    first = Lease(storage, "app", holder(backup_id="20270115T080000.000000Z", pod="job-x",
                                         namespace="prod"), ttl=60, clock=clock)
    first.acquire()
    clock.advance(20)
    second = Lease(storage, "app", holder(pid=99), ttl=60, clock=clock)
    with pytest.raises(LeaseHeld) as raised:
        second.acquire()
    message = str(raised.value)
    assert "target 'app'" in message and storage.url in message
    assert "safehold backup of backup 20270115T080000.000000Z" in message
    assert "pid 4242 on host db-host-1, pod prod/job-x" in message
    assert "since 2027-01-15 08:00:00Z" in message
    assert "expires at 2027-01-15 08:01:00Z (in 40s)" in message
    assert "--lock-wait" in message
    assert raised.value.exit_code == Exit.LOCKED and raised.value.transient
    assert clock.slept == []  # failing at once means no waiting
    assert record(storage).holder.pid == 4242  # the loser wrote nothing


def test_a_waiting_writer_takes_the_lease_once_it_is_released(storage: LocalStorage,
                                                              clock: FakeClock) -> None:
    first = Lease(storage, "app", holder(), ttl=60, clock=clock)
    first.acquire()
    clock.on_sleep.append(lambda: first.release() if len(clock.slept) == 3 else None)
    second = Lease(storage, "app", holder(pid=99), ttl=60, clock=clock)
    second.acquire(wait=120)
    assert len(clock.slept) == 3  # polled until the release, then took it
    assert record(storage).holder.pid == 99 and not record(storage).released


def test_a_wait_shorter_than_the_hold_fails_naming_the_holder(storage: LocalStorage,
                                                              clock: FakeClock) -> None:
    Lease(storage, "app", holder(), ttl=60, clock=clock).acquire()
    second = Lease(storage, "app", holder(pid=99), ttl=60, clock=clock)
    with pytest.raises(LeaseHeld, match="pid 4242"):
        second.acquire(wait=10)
    assert sum(clock.slept) == pytest.approx(10)


def test_an_abandoned_lease_expires_and_is_taken_over(storage: LocalStorage, clock: FakeClock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    Lease(storage, "app", holder(), ttl=30, clock=clock).acquire()  # its holder "dies": no renewals
    waiter = Lease(storage, "app", holder(pid=99), ttl=30, clock=clock)
    waiter.acquire(wait=300)
    assert T0 + 30 <= clock.now < T0 + 31  # woke up right after the expiry, not long after
    assert record(storage).holder.pid == 99
    assert "took over the expired lease of target 'app'" in caplog.text
    assert "pid 4242" in caplog.text


def test_two_breakers_of_one_expired_lease_cannot_both_win(storage: LocalStorage,
                                                           clock: FakeClock) -> None:
    Lease(storage, "app", holder(), ttl=30, clock=clock).acquire()
    clock.advance(31)
    breakers = [Lease(storage, "app", holder(pid=100 + i), ttl=30, clock=clock)
                for i in range(6)]
    gate = threading.Barrier(len(breakers))
    results: dict[int, str] = {}

    def take(lease: Lease) -> None:
        gate.wait()
        try:
            lease.acquire()
            results[lease.holder.pid] = "won"
        except LeaseHeld:
            results[lease.holder.pid] = "held"

    threads = [threading.Thread(target=take, args=(b,)) for b in breakers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["held"] * 5 + ["won"]
    winner = next(pid for pid, r in results.items() if r == "won")
    assert record(storage).holder.pid == winner


def test_renewals_extend_the_lease(storage: LocalStorage, clock: FakeClock) -> None:
    lease = Lease(storage, "app", holder(), ttl=30, clock=clock)
    lease.acquire()
    for _ in range(5):
        clock.advance(20)
        lease.renew()
        lease.check()
    assert record(storage).expires_at.timestamp() == T0 + 100 + 30
    assert record(storage).renewals == 5
    with pytest.raises(LeaseHeld):  # 100s after taking it, still held
        Lease(storage, "app", holder(pid=99), ttl=30, clock=clock).acquire()


def test_a_broken_lease_is_lost_at_the_next_renewal(storage: LocalStorage, clock: FakeClock
                                                    ) -> None:
    lease = Lease(storage, "app", holder(), ttl=30, clock=clock)
    lease.acquire()
    clock.advance(31)  # e.g. the holder was paused (SIGSTOP, a frozen VM) past its TTL
    Lease(storage, "app", holder(pid=99), ttl=30, clock=clock).acquire()
    with pytest.raises(LeaseLost, match=r"taken over by safehold backup .pid 99"):
        lease.renew()
    with pytest.raises(LeaseLost):
        lease.check()
    assert LeaseLost("x").exit_code == Exit.LOCKED
    lease.release()  # must not touch the successor's record
    assert record(storage).holder.pid == 99 and not record(storage).released


def test_a_lease_not_renewed_within_its_ttl_is_lost(storage: LocalStorage, clock: FakeClock
                                                    ) -> None:
    lease = Lease(storage, "app", holder(), ttl=30, clock=clock)
    lease.acquire()
    clock.advance(29)
    lease.check()
    clock.advance(1)
    with pytest.raises(LeaseLost, match="could not be renewed for 30s"):
        lease.check()
    with pytest.raises(LeaseLost):
        lease.confirm()  # no renewal rescues it: the writer stops


def test_confirm_renews_before_a_commit(storage: LocalStorage, clock: FakeClock) -> None:
    lease = Lease(storage, "app", holder(), ttl=30, clock=clock)
    lease.acquire()
    clock.advance(25)
    lease.confirm()
    assert record(storage).expires_at.timestamp() == T0 + 25 + 30


def test_the_heartbeat_renews_in_the_background(storage: LocalStorage) -> None:
    with hold(storage, "app", holder(), ttl=1.0) as lease:
        first = record(storage).renewals
        done = threading.Event()
        for _ in range(200):  # up to ~20s on a loaded machine; ends as soon as it renewed twice
            if record(storage).renewals >= first + 2:
                done.set()
                break
            done.wait(0.1)
        assert done.is_set(), "the heartbeat never renewed the lease"
        lease.check()
    assert record(storage).released


def test_the_heartbeat_notices_a_broken_lease(storage: LocalStorage) -> None:
    with hold(storage, "app", holder(), ttl=1.0) as lease:
        stolen = record(storage).model_copy(update={"token": "someone-else",
                                                    "holder": holder(pid=99)})
        assert lease.version is not None
        storage.replace_if(lease_key("app"), stolen.to_bytes(), lease.version)
        noticed = threading.Event()
        for _ in range(200):
            try:
                lease.check()
            except LeaseLost:
                noticed.set()
                break
            noticed.wait(0.1)
        assert noticed.is_set(), "the heartbeat did not notice the broken lease"
    assert record(storage).holder.pid == 99  # release left the new holder's record alone


def test_hold_releases_even_when_the_block_fails(storage: LocalStorage) -> None:
    with pytest.raises(ZeroDivisionError), hold(storage, "app", holder()):
        1 / 0  # noqa: B018
    assert record(storage).released
    with hold(storage, "app", holder(pid=99)):
        assert record(storage).holder.pid == 99


def test_an_unreadable_record_counts_as_expired(storage: LocalStorage, clock: FakeClock) -> None:
    storage.put_bytes(lease_key("app"), b"{not json")
    Lease(storage, "app", holder(), ttl=30, clock=clock).acquire()
    assert record(storage).holder.pid == 4242


def test_leases_are_per_target(storage: LocalStorage, clock: FakeClock) -> None:
    Lease(storage, "app", holder(), clock=clock).acquire()
    Lease(storage, "other", holder(pid=99), clock=clock).acquire()
    assert record(storage, "other").holder.pid == 99
    with pytest.raises(ValueError, match="invalid target name"):
        lease_key("../escape")


def test_holder_from_the_environment() -> None:
    me = Holder.current("prune", command="safehold prune -t app",
                        environ={"SAFEHOLD_POD_NAME": "job-1", "POD_NAMESPACE": "db"})
    assert (me.operation, me.pod, me.namespace, me.command) == \
        ("prune", "job-1", "db", "safehold prune -t app")
    assert me.describe().endswith(", pod db/job-1)")
    assert Holder.current("backup", environ={}).pod is None


@pytest.mark.parametrize(("value", "expected"), [("", DEFAULT_TTL), ("5", 5.0), (" 2.5 ", 2.5)])
def test_ttl_from_env(value: str, expected: float) -> None:
    assert ttl_from_env({"SAFEHOLD_LEASE_TTL": value}) == expected


@pytest.mark.parametrize("value", ["0", "0.5", "-3", "soon", "nan"])
def test_bad_ttls_are_refused_with_the_fix(value: str) -> None:
    with pytest.raises(ValueError, match=r"invalid SAFEHOLD_LEASE_TTL=.*seconds >= 1"):
        ttl_from_env({"SAFEHOLD_LEASE_TTL": value})


class IgnoresConditions(LocalStorage):
    """A server that accepts the conditions and writes regardless (as old S3 clones do)."""

    def put_if_absent(self, key: str, data: bytes) -> str:
        self.put_bytes(key, data)
        return self.get_versioned(key)[1]

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        return self.put_if_absent(key, data)


class IgnoresIfMatch(LocalStorage):
    """Honours create-if-absent but replaces whatever version is named."""

    def replace_if(self, key: str, data: bytes, expected: str) -> str:
        self.put_bytes(key, data)
        return self.get_versioned(key)[1]


@pytest.mark.parametrize(("backend", "ignored"), [
    (IgnoresConditions, r"a create of an object that exists \(If-None-Match: \*\)"),
    (IgnoresIfMatch, r"a replace of a version that is no longer current \(If-Match\)"),
])
def test_storage_that_ignores_conditions_is_refused(tmp_path: Path, backend: type[LocalStorage],
                                                    ignored: str) -> None:
    from safehold.storage.base import StorageError

    storage = backend(tmp_path / "repo")
    with pytest.raises(StorageError, match=f"accepted {ignored}: it ignores conditional"):
        Lease(storage, "app", holder()).acquire()
    assert [i.key for i in storage.list()] == []  # the probe object is gone, no lease taken
