"""bench/harness.py: how a run's time is split by how busy the cores were (the figures that
tell a ratio made of extra work from one made of serial steps or waiting)."""

from __future__ import annotations

import time

import pytest
from bench import harness
from bench.harness import Case, Profile, split_line

TICK = 0.01  # /proc/stat counts in clock ticks (USER_HZ = 100)


def test_windows_are_split_into_saturated_serial_and_between() -> None:
    profile = Profile()
    profile.windows = [(0.05, 0.95), (0.05, 0.9), (0.05, 0.5), (0.05, 0.6), (0.05, 0.61),
                       (0.05, 0.1), (0.02, 0.75)]
    saturated, serial, between = profile.split(2)  # one core of two: 0.5; ONE_CORE: 0.6
    assert saturated == pytest.approx(0.10)
    assert serial == pytest.approx(0.15)
    assert between == pytest.approx(0.07)
    # on 8 cores one core is 0.125 of them: 0.5 busy is neither serial nor saturated
    assert profile.split(8) == pytest.approx((0.10, 0.05, 0.17))


def test_a_profile_covers_the_whole_run() -> None:
    # Bounds a loaded machine cannot break (it only makes the span longer): the windows lie
    # inside the ``with`` and cover the sleep, less at most a last one too short for a tick.
    start = time.perf_counter()
    with Profile() as profile:
        time.sleep(3 * harness.WINDOW + 0.01)
    elapsed = time.perf_counter() - start
    assert len(profile.windows) >= 3
    covered = sum(t for t, _ in profile.windows)
    assert 3 * harness.WINDOW + 0.01 - TICK <= covered <= elapsed
    assert all(0.0 <= b <= 1.0 for _, b in profile.windows)
    assert 0.0 <= profile.busy <= 1.0


def test_the_extra_time_is_told_by_where_it_went() -> None:
    # each case's median run (1.40 s and 1.20 s), whose parts add up to its time
    ours = Case("safehold", "2 threads", ["true"], walls=[1.50, 1.30, 1.40],
                profile=[(0.9, 0.5, 0.1), (0.8, 0.4, 0.1), (0.9, 0.4, 0.1)])
    peer = Case("peer", "2 processes", ["true"], walls=[1.25, 1.20, 1.10],
                profile=[(0.8, 0.3, 0.15), (0.8, 0.3, 0.1), (0.8, 0.2, 0.1)])
    line = split_line(ours, peer)
    assert line.startswith("Safehold's +0.20s beside it (median runs)")
    assert "+0.10s with the cores saturated, +0.10s on one core or less, +0.00s in between" \
        in line
    assert "(Safehold 0.90/0.40/0.10s, the peer 0.80/0.30/0.10s)" in line


def test_the_work_a_peer_does_without_is_counted_from_the_stages() -> None:
    ours = Case("safehold", "2 threads", ["true"], cpu=[3.0, 3.2, 3.4],
                server_cpu=[10.0, 10.0, 11.0],
                stage_cpu={"read": 0.1, "decompress": 1.5, "decrypt": 0.2, "hash": 0.3,
                           "write": 0.4})
    peer = Case("peer", "2 processes", ["true"], cpu=[1.0, 1.1], server_cpu=[10.5, 10.5],
                spares=("decompress", *harness.PLAIN_IN))
    line = harness.spared_line(ours, peer)
    # 13.2 s of CPU (medians), 2.0 s of it on stages the peer does without
    assert "decompress 1.5s, decrypt 0.2s, hash 0.3s = 2.0s" in line
    assert "CPU command + server 13.2s, 11.2s without that work, the peer's 11.6s" in line


def test_work_left_to_the_tool_is_counted_from_the_tools_cpu() -> None:
    """Safehold's pg_restore decompresses what it is fed (no stage figure: 0.0s); beside a
    pg_restore of an uncompressed archive, that work is its tools' CPU beyond the peer's."""
    ours = Case("safehold", "2 threads", ["true"], cpu=[3.0, 3.2, 3.4],
                server_cpu=[10.0, 10.0, 11.0], tool_stages=("decompress",),
                tool_cpu=[2.0, 2.2, 2.1],
                stage_cpu={"read": 0.1, "decompress": 0.0, "decrypt": 0.2, "hash": 0.0,
                           "write": 0.1})
    peer = Case("peer", "2 processes", ["true"], cpu=[1.1, 1.1], server_cpu=[10.5, 10.5],
                spares=("decompress", *harness.PLAIN_IN))
    line = harness.spared_line(ours, peer)
    assert ("decompress inside the tool (its CPU 2.1s against the peer's 1.1s) 1.0s,"
            " decrypt 0.2s, hash 0.0s = 1.2s") in line
    assert "CPU command + server 13.2s, 12.0s without that work, the peer's 11.6s" in line


def test_the_spared_work_is_printed_beside_the_slower_safehold(
        capsys: pytest.CaptureFixture[str]) -> None:
    def case(name: str, wall: float, **extra: object) -> Case:
        return Case(name, "x", ["true"], walls=[wall], rss_mib=[50.0], cpu=[1.0], server_cpu=[1.0],
                    busy=[0.95], profile=[(wall, 0.0, 0.0)], **extra)  # type: ignore[arg-type]

    harness.table("t", 1.0, case("safehold", 2.0, stage_cpu={"hash": 0.5}),
                  [case("peer", 1.0, spares=harness.PLAIN_IN)])
    assert "does without (Safehold's stage CPU, last run): decrypt 0.0s, hash 0.5s" \
        in capsys.readouterr().out
    # a faster Safehold needs no explanation
    harness.table("t", 1.0, case("safehold", 1.0, stage_cpu={"hash": 0.5}),
                  [case("peer", 2.0, spares=harness.PLAIN_IN)])
    assert "does without" not in capsys.readouterr().out
