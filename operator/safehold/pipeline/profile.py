"""Where a backup's or a restore's time goes: seconds per pipeline stage and the bounding stage.

A backup streams database -> compress -> encrypt -> hash -> storage; a restore streams storage
-> hash -> decrypt -> decompress -> database. :class:`Profile` adds up, across every object and
every thread, the seconds each stage spent working, and the seconds the streaming threads spent
waiting for the codec pool (``waiting``). The figures are thread-seconds: with several objects
streamed at once (``jobs``) or a codec pool of several threads they can add up to more than the
wall time, and the report says how many cores were busy meanwhile. Beside each stage's wall
time is its threads' CPU time: on a crowded machine a stage's wall time grows while it waits for
a core, its CPU time does not — so a stage slow for want of CPU can be told from a costly one.

A stage can be done by the engine's tool rather than the pipeline: a PostgreSQL 16+ backup's
``pg_dump --compress`` compresses, and the ``pg_restore`` of such a backup decompresses. That
work shows inside the tool's stage (``read`` of a backup, ``write`` of a restore: the pipeline
waits for the tool), not as a figure of its own, so the report says so (:data:`BY_TOOL`), and
gives the tools' CPU apart from the runner's: the line then reads "bottleneck: reading from the
database, with compression inside the dump tool", never only "reading from the database" while
the cores are busy compressing.

The bottleneck named is the stage that did the most work: in a pipeline of bounded queues the
slowest stage keeps the others waiting, so it is the one whose time fills the run. ``cores busy``
is the whole machine's CPU use over the run (``/proc/stat``), so a saturated machine — the only
physical limit for compression — can be told from a slow database or storage.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from safehold.api.units import human_seconds

T = TypeVar("T")

# stage -> how a person reads it ("bottleneck: compression")
BACKUP_STAGES = {
    "read": "reading from the database",
    "compress": "compression",
    "encrypt": "encryption",
    "hash": "hashing",
    "write": "writing to storage",
}
RESTORE_STAGES = {
    "read": "reading from storage",
    "hash": "hashing",
    "decrypt": "decryption",
    "decompress": "decompression",
    "write": "writing to the database",
}
WAITING = "waiting"  # a streaming thread waiting for the codec pool's next chunk
# The stages an engine's tool can do itself, and the stage whose time then holds theirs.
BY_TOOL = {
    "backup": {"compress": "read"},  # pg_dump --compress: the pipeline waits on its output
    "restore": {"decompress": "write"},  # pg_restore inflates what it is fed
}
_TOOL = {"backup": "the dump tool", "restore": "the restore tool"}


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot; None where /proc is absent."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process, and of the children it has waited for (the tools)."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


class Tally:
    """A running total of wall and CPU seconds (one thread's: not locked)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu = 0.0

    def __call__(self, seconds: float, cpu: float = 0.0) -> None:
        self.seconds += seconds
        self.cpu += cpu


def timed_iter(items: Iterable[T], on_time: Callable[[float, float], None]) -> Iterator[T]:
    """``items``, passing the (wall, thread CPU) seconds spent inside each ``next`` (producing
    it) to ``on_time``."""
    it = iter(items)
    while True:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            item = next(it)
        except StopIteration:
            on_time(time.perf_counter() - t0, time.thread_time() - c0)
            return
        on_time(time.perf_counter() - t0, time.thread_time() - c0)
        yield item


@dataclass(frozen=True)
class StageReport:
    """The figures of one run (see :meth:`Profile.report`)."""

    operation: str  # backup | restore
    seconds: dict[str, float]  # stage -> thread-seconds, ``waiting`` included
    cpu: dict[str, float]  # stage -> CPU seconds of the threads in it (less: they waited)
    wall_seconds: float
    cpu_seconds: float  # this process and the tools it ran (pg_dump, pg_restore, ...)
    cores: int
    cores_busy: float | None  # 0..1, the whole machine; None where unknown
    bottleneck: str | None  # a stage key; None when nothing was streamed
    tool_stages: tuple[str, ...] = ()  # stages the engine's tools did (BY_TOOL)
    tool_cpu_seconds: float = 0.0  # the tools' part of cpu_seconds

    @property
    def names(self) -> dict[str, str]:
        return BACKUP_STAGES if self.operation == "backup" else RESTORE_STAGES

    def bottleneck_line(self) -> str:
        """``bottleneck: compression (cores busy 97%)`` — what the CLI prints last."""
        if self.bottleneck is None:
            return "bottleneck: none (nothing was streamed)"
        busy = "" if self.cores_busy is None else f"cores busy {self.cores_busy:.0%}, "
        return (f"bottleneck: {self.stage_name(self.bottleneck)} ({busy}"
                f"{human_seconds(self.seconds[self.bottleneck])} of"
                f" {human_seconds(self.wall_seconds)})")

    def stage_name(self, stage: str) -> str:
        """How a person reads ``stage``, with the work the tools did inside it: "reading from
        the database, with compression inside the dump tool"."""
        inside = [self.names[s] for s in self.tool_stages
                  if BY_TOOL[self.operation].get(s) == stage]
        if not inside:
            return self.names[stage]
        return f"{self.names[stage]}, with {' and '.join(inside)} inside {_TOOL[self.operation]}"

    def stages_line(self) -> str:
        """Every stage's seconds, in pipeline order, e.g. ``read 1.2s, compress 3.4s, ...``."""
        order = [*self.names, WAITING]
        return ", ".join(f"{k} {self.seconds.get(k, 0.0):.2f}s" for k in order)

    def as_dict(self) -> dict[str, object]:
        return {
            "stage_seconds": {k: round(v, 6) for k, v in self.seconds.items()},
            "stage_cpu_seconds": {k: round(v, 6) for k, v in self.cpu.items()},
            "wall_seconds": round(self.wall_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "tool_cpu_seconds": round(self.tool_cpu_seconds, 3),
            "tool_stages": list(self.tool_stages),
            "cores": self.cores,
            "cores_busy": None if self.cores_busy is None else round(self.cores_busy, 3),
            "bottleneck": self.bottleneck,
            "summary": self.bottleneck_line(),
        }

    def manifest_record(self) -> dict[str, object]:
        """What a backup's manifest keeps (``engine_meta.pipeline``, api.manifest.StageTimings):
        seconds per stage, the bottleneck and the machine's CPU use, for `safehold stats`."""
        return {
            "stage_seconds": {k: round(v, 6) for k, v in self.seconds.items()},
            "bottleneck": self.bottleneck,
            "cores_busy": None if self.cores_busy is None else round(self.cores_busy, 3),
            "wall_seconds": round(self.wall_seconds, 3),
        }


@dataclass
class Profile:
    """Thread-safe stage clocks for one backup or restore; pass it to the pipeline's writers."""

    operation: str = "backup"
    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _t0: float = field(default_factory=time.perf_counter, repr=False)
    by_tool: set[str] = field(default_factory=set)  # stages the engine's tools did
    _cpu0: tuple[float, float] = field(default_factory=_cpu_seconds, repr=False)
    _ticks0: tuple[int, int] | None = field(default_factory=_machine_ticks, repr=False)

    def __post_init__(self) -> None:
        stages = BACKUP_STAGES if self.operation == "backup" else RESTORE_STAGES
        if self.operation not in ("backup", "restore"):
            raise ValueError(f"unknown operation {self.operation!r}: backup or restore")
        for name in (*stages, WAITING):
            self.seconds.setdefault(name, 0.0)
            self.cpu.setdefault(name, 0.0)

    def add(self, stage: str, seconds: float, cpu: float = 0.0) -> None:
        """``seconds`` of wall time (``cpu`` of them on a CPU) spent in ``stage``."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + max(0.0, seconds)
            self.cpu[stage] = self.cpu.get(stage, 0.0) + max(0.0, cpu)

    def done_by_tool(self, stage: str) -> None:
        """The engine's tool did ``stage`` (one of :data:`BY_TOOL`'s) for some object: its time
        is inside the stage that waits on the tool."""
        if stage not in BY_TOOL[self.operation]:
            raise ValueError(f"a {self.operation}'s tool cannot do {stage!r}:"
                             f" {', '.join(BY_TOOL[self.operation])}")
        with self._lock:
            self.by_tool.add(stage)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0, time.thread_time() - c0)

    def producer(self, items: Iterable[T], stage: str) -> Iterator[T]:
        """``items``, counting the time spent producing each one (inside ``next``) as ``stage``."""
        return timed_iter(items, lambda s, c: self.add(stage, s, c))

    def consumer(self, items: Iterable[T], stage: str) -> Iterator[T]:
        """``items``, counting the time the consumer spends between two items as ``stage``."""
        for item in items:
            t0, c0 = time.perf_counter(), time.thread_time()
            yield item
            self.add(stage, time.perf_counter() - t0, time.thread_time() - c0)

    def report(self) -> StageReport:
        wall = time.perf_counter() - self._t0
        ticks, busy = _machine_ticks(), None
        if ticks is not None and self._ticks0 is not None and ticks[1] > self._ticks0[1]:
            busy = (ticks[0] - self._ticks0[0]) / (ticks[1] - self._ticks0[1])
        with self._lock:
            seconds, cpu, by_tool = dict(self.seconds), dict(self.cpu), set(self.by_tool)
        work = {k: v for k, v in seconds.items() if k != WAITING}
        top = max(work, key=lambda k: work[k]) if any(v > 0 for v in work.values()) else None
        own, tools = _cpu_seconds()
        tools -= self._cpu0[1]
        return StageReport(operation=self.operation, seconds=seconds, cpu=cpu, wall_seconds=wall,
                           cpu_seconds=own - self._cpu0[0] + tools,
                           cores=len(os.sched_getaffinity(0)), cores_busy=busy, bottleneck=top,
                           tool_stages=tuple(s for s in BY_TOOL[self.operation] if s in by_tool),
                           tool_cpu_seconds=tools)
