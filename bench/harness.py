"""Honest side-by-side timing: alternating rounds, medians with the spread, peak RSS, checks.

Each :class:`Case` is one command (Safehold or a peer) with a label stating its threads, level
and encryption. :func:`alternate` runs every case once per round, round after round (A B C A B
C ...), so a burst of load on the shared machine hits all of them alike; a case's ``before``
prepares its run (e.g. an empty target database) and its ``check`` must pass (per-table
checksums of a restore) before the time counts — a failed check raises. :func:`table` prints
the median, min-max and peak RSS of each case, and the ratio Safehold/peer (< 1.0: Safehold
is faster) beside each peer. Numbers are printed, never asserted (DESIGN.md section 8).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


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
    stages: str = ""  # Safehold's per-stage figures of the last run (from --output json)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    def spread(self) -> str:
        return f"{min(self.walls):.2f}-{max(self.walls):.2f}"


def measure(case: Case) -> None:
    """One run of ``case``: wall time and peak RSS (GNU time), then its check."""
    if case.before is not None:
        case.before()
    argv = ["sh", "-c", case.argv] if isinstance(case.argv, str) else list(case.argv)
    start = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *argv], env=case.env, capture_output=True,
                         text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{case.name} failed ({res.returncode}):\n{res.stdout[-1500:]}\n"
                           f"{res.stderr[-1500:]}")
    if case.check is not None:
        case.check()  # raises: an unchecked restore's time never counts
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    case.walls.append(wall)
    case.rss_mib.append(int(match[1]) / 1024 if match else 0.0)
    if "{" in res.stdout:  # Safehold's --output json
        try:
            case.stages = stage_line(json.loads(res.stdout[res.stdout.index("{"):]), wall)
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


def alternate(cases: Sequence[Case], rounds: int = 3) -> None:
    for _ in range(rounds):
        for case in cases:
            measure(case)


def table(title: str, mb: float, safehold: Case, peers: Sequence[Case]) -> None:
    """The cases' figures; each peer with the ratio Safehold/peer (< 1.0: Safehold faster)."""
    rounds = len(safehold.walls)
    print(f"\n### {title} ({mb:.0f} MB, median of {rounds} alternating runs, min-max)")
    print(f"{'command':<50} {'median s':>8} {'min-max s':>12} {'MB/s':>7} {'RSS MiB':>8}"
          f" {'safehold/peer':>13}  threads, level, encryption")
    for case in (safehold, *peers):
        ratio = "" if case is safehold else f"{safehold.median / case.median:.2f}x"
        print(f"{case.name:<50} {case.median:>8.2f} {case.spread():>12} {mb / case.median:>7.1f}"
              f" {max(case.rss_mib):>8.0f} {ratio:>13}  {case.label}")
    if safehold.stages:
        print(f"  safehold stages (last run): {safehold.stages}")
