"""Honest side-by-side timing: alternating rounds, medians with the spread, peak RSS, checks.

Each :class:`Case` is one command (Safehold or a peer) with a label stating its threads, level
and encryption. :func:`alternate` runs every case once per round, round after round (A B C A B
C ...), so a burst of load on the shared machine hits all of them alike; a case's ``before``
prepares its run (e.g. an empty target database) and its ``check`` must pass (per-table
checksums of a restore) before the time counts — a failed check raises. :func:`table` prints
the median, min-max and peak RSS of each case, and the ratio Safehold/peer (< 1.0: Safehold
is faster) beside each peer. Numbers are printed, never asserted (DESIGN.md section 8).

Where a ratio comes from is measured in the same runs: each command's CPU time (its own
processes, from GNU time), the database server's CPU time over the command (when
:func:`alternate` is given the server's :meth:`tests.infra.procs.Server.cpu_seconds`), and how
busy the machine's cores were. :func:`table` prints them and, beside the fastest peer, the CPU
Safehold spent beyond it and whether the cores were saturated (at or over
:data:`SATURATED`): on saturated cores a ratio is the extra work; below it, waiting.

A run that is not saturated as a whole may be saturated in parts: a restore's start-up and
its schema step run on one core, its data on all. So each run is also profiled in
:data:`WINDOW`-second windows (:class:`Profile`), and the time Safehold takes beyond the peer
is split by how busy the cores were meanwhile: saturated (extra work), at most one core busy
(a serial step: start-up, creating tables), or in between (waiting).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Safehold as users run it: its console script (the runner image's entrypoint), which sets what
# `python -m safehold.cli` does not (safehold/cli/entry.py); quiet but for warnings.
SAFEHOLD = (str(Path(sys.executable).with_name("safehold")), "--log-level", "warning")


@dataclass
class Case:
    name: str
    label: str  # threads, level, encryption: e.g. "2 threads, zstd -3, AES-256-GCM"
    argv: Sequence[str] | str  # a string runs in sh -c (pipelines)
    env: dict[str, str] | None = None
    before: Callable[[], None] | None = None
    check: Callable[[], None] | None = None
    walls: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the command's own CPU seconds (user+sys)
    server_cpu: list[float] = field(default_factory=list)  # the database server's, meanwhile
    busy: list[float] = field(default_factory=list)  # share of the machine's cores in use
    # seconds of each run with the cores saturated, with at most one core busy, in between
    profile: list[tuple[float, float, float]] = field(default_factory=list)
    stages: str = ""  # Safehold's per-stage figures of the last run (from --output json)
    stage_cpu: dict[str, float] = field(default_factory=dict)  # and their CPU seconds
    # the stages Safehold's engine left to its tools (pg_dump compressing, pg_restore
    # decompressing: pipeline.tool_stages), and the CPU seconds of those tools in each run
    tool_stages: tuple[str, ...] = ()
    tool_cpu: list[float] = field(default_factory=list)
    # Safehold's pipeline stages this peer does without: "decompress" beside an uncompressed
    # archive; "encrypt"/"decrypt" and "hash" beside any peer (none stores encrypted objects)
    spares: tuple[str, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    def spread(self) -> str:
        return f"{min(self.walls):.2f}-{max(self.walls):.2f}"


# Safehold's stages that every peer here does without (Case.spares): none encrypts or
# authenticates what it stores, or checks that when it reads it back
PLAIN_OUT, PLAIN_IN = ("encrypt", "hash"), ("decrypt", "hash")

SATURATED = 0.9  # cores this busy bound a run by work, not by waiting (the threshold)
WINDOW = 0.05  # seconds per profile window: 10 clock ticks per core (/proc/stat counts 100 Hz)
ONE_CORE = 1.2  # cores busy at most, for a window to count as a serial step on one core
# Rounds of the 200-table layouts: their runs last one to two seconds, where the machine's own
# noise moved a command's three runs by up to 35% (1.81-2.45 s); five keep the median steady.
SHORT_ROUNDS = 5


def rounds_for(layout: str, rounds: int) -> int:
    """The alternating rounds a layout is measured with: at least SHORT_ROUNDS for 200 tables."""
    return max(rounds, SHORT_ROUNDS) if layout == "tables200" else rounds


def _cores() -> tuple[int, int]:
    """Busy and total jiffies of all cores so far (/proc/stat; idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class Profile:
    """How busy the cores are, window by window, while a command runs (a thread sampling
    /proc/stat every :data:`WINDOW` seconds, from ``with`` entry to exit)."""

    def __init__(self) -> None:
        self.windows: list[tuple[float, float]] = []  # (seconds, share of all cores busy)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Profile:
        self._first = self._last = _cores()
        self._at = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._window()  # the last, partial one

    def _sample(self) -> None:
        while not self._done.wait(WINDOW):
            self._window()

    def _window(self) -> None:
        cores, at = _cores(), time.perf_counter()
        if cores[1] > self._last[1]:  # else no tick yet: the next window takes this one in
            self.windows.append((at - self._at, (cores[0] - self._last[0])
                                 / (cores[1] - self._last[1])))
            self._last, self._at = cores, at

    @property
    def busy(self) -> float:
        """The cores' busy share over the whole span (after exit)."""
        return (self._last[0] - self._first[0]) / max(1, self._last[1] - self._first[1])

    def split(self, ncores: int) -> tuple[float, float, float]:
        """Seconds with the cores saturated, with at most :data:`ONE_CORE` busy, in between."""
        saturated = sum(t for t, b in self.windows if b >= SATURATED)
        serial = sum(t for t, b in self.windows if b < SATURATED and b * ncores <= ONE_CORE)
        return saturated, serial, sum(t for t, _ in self.windows) - saturated - serial


def _gnu_time(stderr: str, label: str) -> float:
    match = re.search(rf"{re.escape(label)}: ([0-9.]+)", stderr)
    return float(match[1]) if match else 0.0


def measure(case: Case, server_cpu: Callable[[], float] | None = None) -> None:
    """One run of ``case``: wall time, peak RSS and CPU time (GNU time), the server's CPU time
    and the cores' busy share over it, then its check."""
    if case.before is not None:
        case.before()
    argv = ["sh", "-c", case.argv] if isinstance(case.argv, str) else list(case.argv)
    # Written out first: no run pays for the writeback of what an earlier one left dirty
    # (a peer that does not fsync leaves its output to the kernel's flusher threads).
    os.sync()
    server0 = server_cpu() if server_cpu is not None else 0.0
    start = time.perf_counter()
    with Profile() as profile:
        res = subprocess.run(["/usr/bin/time", "-v", *argv], env=case.env,
                             capture_output=True, text=True)
    wall = time.perf_counter() - start
    server = server_cpu() - server0 if server_cpu is not None else 0.0
    if res.returncode != 0:
        raise RuntimeError(f"{case.name} failed ({res.returncode}):\n{res.stdout[-1500:]}\n"
                           f"{res.stderr[-1500:]}")
    if case.check is not None:
        case.check()  # raises: an unchecked restore's time never counts
    case.walls.append(wall)
    case.rss_mib.append(_gnu_time(res.stderr, "Maximum resident set size (kbytes)") / 1024)
    case.cpu.append(_gnu_time(res.stderr, "User time (seconds)")
                    + _gnu_time(res.stderr, "System time (seconds)"))
    case.server_cpu.append(server)
    case.busy.append(profile.busy)
    case.profile.append(profile.split(os.cpu_count() or 1))
    if "{" in res.stdout:  # Safehold's --output json
        try:
            out = json.loads(res.stdout[res.stdout.index("{"):])
            case.stages = stage_line(out, wall)
            case.stage_cpu = stage_cpu(out)
            fig = out.get("pipeline") or {}
            case.tool_stages = tuple(fig.get("tool_stages", ()))
            case.tool_cpu.append(float(fig.get("tool_cpu_seconds", 0.0)))
        except ValueError:
            case.stages = f"(unreadable output: {res.stdout[:200]!r})"


def stage_line(out: dict[str, object], wall: float) -> str:
    """``bottleneck ...; read 1.2s, compress 3.4s, ...`` from Safehold's JSON output, and the
    time the command spent outside the streaming pipeline (start-up, checks, planning)."""
    fig = out.get("pipeline")
    if not isinstance(fig, dict):
        return ""
    cpu = fig.get("stage_cpu_seconds", {})
    stages = ", ".join(f"{k} {v:.1f}s (cpu {cpu.get(k, 0):.1f}s)"
                       for k, v in fig["stage_seconds"].items())
    outside = wall - float(fig["wall_seconds"])
    return (f"{fig['summary']}; {stages}; outside the pipeline (start-up, checks) {outside:.1f}s"
            f" of {wall:.1f}s")


def stage_cpu(out: dict[str, object]) -> dict[str, float]:
    """The CPU seconds of each pipeline stage in Safehold's JSON output."""
    fig = out.get("pipeline")
    cpu = fig.get("stage_cpu_seconds") if isinstance(fig, dict) else None
    return {str(k): float(v) for k, v in cpu.items()} if isinstance(cpu, dict) else {}


def alternate(cases: Sequence[Case], rounds: int = 3,
              server_cpu: Callable[[], float] | None = None) -> None:
    """``rounds`` rounds of every case in turn; ``server_cpu`` (cumulative CPU seconds of the
    database server) lets each run report what the server spent on it."""
    for _ in range(rounds):
        for case in cases:
            measure(case, server_cpu)


def table(title: str, mb: float, safehold: Case, peers: Sequence[Case]) -> None:
    """The cases' figures; each peer with the ratio Safehold/peer (< 1.0: Safehold faster)."""
    rounds = len(safehold.walls)
    print(f"\n### {title} ({mb:.0f} MB, median of {rounds} alternating runs, min-max)")
    print(f"{'command':<50} {'median s':>8} {'min-max s':>12} {'MB/s':>7} {'RSS MiB':>8}"
          f" {'CPU s cmd+db':>12} {'busy':>5} {'safehold/peer':>13}  threads, level, encryption")
    for case in (safehold, *peers):
        ratio = "" if case is safehold else f"{safehold.median / case.median:.2f}x"
        cpu = f"{_med(case.cpu):.1f}+{_med(case.server_cpu):.1f}"
        print(f"{case.name:<50} {case.median:>8.2f} {case.spread():>12} {mb / case.median:>7.1f}"
              f" {max(case.rss_mib):>8.0f} {cpu:>12} {_med(case.busy):>5.0%} {ratio:>13}"
              f"  {case.label}")
    if safehold.stages:
        print(f"  safehold stages (last run): {safehold.stages}")
    if peers:
        fastest = min(peers, key=lambda c: c.median)
        print(f"  {difference(safehold, fastest)}")
        if safehold.median > fastest.median:
            print(f"  {split_line(safehold, fastest)}")
            if fastest.spares and safehold.stage_cpu:
                print(f"  {spared_line(safehold, fastest)}")


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def difference(safehold: Case, peer: Case) -> str:
    """Where Safehold's time beside ``peer`` goes, from the medians of both: the extra CPU in
    the command and in the server, and whether the cores were saturated (then the ratio is
    that extra work) or not (then it is waiting: a serial step, a slow stage)."""
    own, server = _med(safehold.cpu) - _med(peer.cpu), \
        _med(safehold.server_cpu) - _med(peer.server_cpu)
    busy = min(_med(safehold.busy), _med(peer.busy))
    if safehold.median <= peer.median:
        verdict = "Safehold is the faster"
    elif busy >= SATURATED:
        verdict = (f"both saturated (cores >= {SATURATED:.0%} busy): Safehold's extra time is"
                   " that extra work")
    else:
        verdict = (f"not saturated (cores under {SATURATED:.0%} busy): part of Safehold's extra"
                   " time is waiting")
    return (f"beside the fastest peer ({peer.name}): CPU {own:+.1f}s in the command,"
            f" {server:+.1f}s in the database server; cores busy {_med(safehold.busy):.0%} vs"
            f" {_med(peer.busy):.0%}; {verdict}")


def _median_run(case: Case) -> tuple[float, tuple[float, float, float]]:
    """The wall time and profile split of the case's median run (the lower one of an even
    count): one run's parts add up to its time, medians of each part need not."""
    wall, split = sorted(zip(case.walls, case.profile, strict=True))[(len(case.walls) - 1) // 2]
    return wall, split


def split_line(safehold: Case, peer: Case) -> str:
    """Safehold's time beyond ``peer``'s, split by how busy the cores were meanwhile (each
    case's median run, :meth:`Profile.split`): saturated (extra work), one core (a serial
    step), in between (waiting)."""
    (own_wall, own), (other_wall, other) = _median_run(safehold), _median_run(peer)
    parts = ", ".join(f"{a - b:+.2f}s {what}" for a, b, what in zip(
        own, other, ("with the cores saturated", "on one core or less", "in between"),
        strict=True))
    return (f"Safehold's {own_wall - other_wall:+.2f}s beside it (median runs), by how busy"
            f" the cores were: {parts} (Safehold {own[0]:.2f}/{own[1]:.2f}/{own[2]:.2f}s, the"
            f" peer {other[0]:.2f}/{other[1]:.2f}/{other[2]:.2f}s)")


def spared_line(safehold: Case, peer: Case) -> str:
    """The CPU Safehold spends on stages ``peer`` does without (:attr:`Case.spares`: it reads
    an uncompressed archive, it stores nothing encrypted), from Safehold's last run, and the
    runs' CPU (command + server, medians) with and without it: when both saturate the cores,
    what is left beside the peer's is the part of the ratio that is not that work.

    A spared stage that Safehold's tool did (a pg_restore decompressing what it is fed, where
    the peer's pg_restore reads an uncompressed archive) has no stage figure: it is measured as
    the CPU of Safehold's tools beyond the peer's command, the same tool doing the rest."""
    parts: dict[str, float] = {}
    for name in peer.spares:
        if name in safehold.tool_stages:
            tools, plain = _med(safehold.tool_cpu), _med(peer.cpu)
            parts[f"{name} inside the tool (its CPU {tools:.1f}s against the peer's"
                  f" {plain:.1f}s)"] = tools - plain
        else:
            parts[name] = safehold.stage_cpu.get(name, 0.0)
    spared = sum(parts.values())
    own = _med(safehold.cpu) + _med(safehold.server_cpu)
    other = _med(peer.cpu) + _med(peer.server_cpu)
    listed = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in parts.items())
    return (f"work this peer does without (Safehold's stage CPU, last run): {listed} ="
            f" {spared:.1f}s; CPU command + server {own:.1f}s, {own - spared:.1f}s without"
            f" that work, the peer's {other:.1f}s")
