"""`safehold stats`: history and trends of a repository's backups, from their manifests alone.

The figures come from the pure trend module the operator uses for BackupTarget status.trends
(safehold.api.trends): p50/p95 duration and throughput, the compression ratio, the most frequent
bottleneck stage, and a regression flag on each run much slower than the trailing median of its
type. Manifests are read without any key (nothing is decrypted), so like `list` the figures are
unauthenticated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from safehold.api.errors import UsageError
from safehold.api.manifest import Manifest, stage_timings
from safehold.api.trends import WINDOW, Sample, regression, summarize
from safehold.cli import common, stats_html
from safehold.repository.trust import UNAUTHENTICATED

_SINCE = re.compile(r"^(\d+)([hdw])$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
BARS = "▁▂▃▄▅▆▇█"


def parse_since(text: str) -> timedelta:
    """``--since``: a whole number of hours, days or weeks (``12h``, ``30d``, ``8w``)."""
    match = _SINCE.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"invalid --since {text!r}: give a positive age such as 12h, 30d or 8w"
                         " (hours, days, weeks)")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise UsageError(f"--since {text} is too far back: at most 999999999d") from None


def sparkline(values: Sequence[float | None]) -> str:
    """One block character per value, scaled between the smallest and the largest; a space
    for a value that is not known (a run too short to time, nothing stored)."""
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    low, high = min(known), max(known)
    span = high - low
    return "".join(" " if v is None else
                   BARS[0 if span == 0 else round((v - low) / span * (len(BARS) - 1))]
                   for v in values)


def stage_initials(runs: list[dict[str, Any]]) -> str:
    """Each run's bottleneck stage as its initial, oldest first, and the legend:
    ``rrrc  (c compress, r read)``; ``-`` for a run without stage timings."""
    row = "".join((r["bottleneck_stage"] or "-")[0] for r in runs)
    stages = sorted({r["bottleneck_stage"] for r in runs if r["bottleneck_stage"]})
    legend = ", ".join(f"{stage[0]} {stage}" for stage in stages)
    return f"{row}  ({legend})" if legend else row


def run_charts(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The terminal chart of a target's runs over time, one column per run (oldest first):
    duration, throughput, raw and stored size, compression ratio and bottleneck stage."""
    def ratio(r: dict[str, Any]) -> float | None:
        known = r["raw_bytes"] is not None and r["stored_bytes"]
        return r["raw_bytes"] / r["stored_bytes"] if known else None

    def scale(values: list[float | None], show: Callable[[float], str]) -> str:
        known = [v for v in values if v is not None]
        return f"  {show(min(known))} .. {show(max(known))}" if known else ""

    seconds = [r["seconds"] for r in runs]
    rates = [r["throughput_bytes_per_second"] for r in runs]
    raw = [float(r["raw_bytes"]) if r["raw_bytes"] is not None else None for r in runs]
    stored = [float(r["stored_bytes"]) if r["stored_bytes"] is not None else None for r in runs]
    ratios = [ratio(r) for r in runs]
    return [
        ("durations", sparkline(seconds) + scale(seconds, lambda v: f"{v:.2f}s")),
        ("throughputs", sparkline(rates) + scale(rates, _rate)),
        ("raw sizes", sparkline(raw) + scale(raw, common.human_bytes)),
        ("stored", sparkline(stored) + scale(stored, common.human_bytes)),
        ("ratios", sparkline(ratios) + scale(ratios, lambda v: f"{v:.2f}")),
        ("stages", stage_initials(runs)),
    ]


def sample(manifest: Manifest) -> Sample:
    """What the trend module needs from one backup's manifest. A backup whose dump tool
    compressed (pg_dump) has no raw size to tell: its objects' raw size is the tool's
    compressed output, so its ratio and throughput are left out rather than understated."""
    seconds = max(0.0, (manifest.finished_at - manifest.started_at).total_seconds())
    timings = stage_timings(manifest)  # None in backups taken before manifests recorded them
    return Sample(backup_id=manifest.backup_id, type=manifest.type,
                  finished_at=manifest.finished_at, seconds=seconds,
                  raw_bytes=None if manifest.tool_compressed else manifest.raw_bytes,
                  stored_bytes=manifest.stored_bytes,
                  stage_seconds=timings.stage_seconds if timings else {},
                  bottleneck_stage=timings.bottleneck if timings else None,
                  cores_busy=timings.cores_busy if timings else None)


def target_stats(name: str, manifests: list[Manifest]) -> dict[str, Any]:
    """One target's summary and its runs (oldest first), each flagged when it regressed."""
    samples = [sample(m) for m in sorted(manifests, key=lambda m: m.finished_at)]
    runs: list[dict[str, Any]] = []
    for i, s in enumerate(samples):
        slow = regression(samples[max(0, i + 1 - WINDOW):i + 1])
        runs.append({"backup_id": s.backup_id, "type": s.type,
                     "finished_at": s.finished_at.isoformat() if s.finished_at else None,
                     "seconds": round(s.seconds or 0.0, 3), "raw_bytes": s.raw_bytes,
                     "stored_bytes": s.stored_bytes,
                     "throughput_bytes_per_second": (round(s.throughput, 1)
                                                     if s.throughput is not None else None),
                     "bottleneck_stage": s.bottleneck,
                     "cores_busy": s.cores_busy,
                     "stage_seconds": s.stage_seconds or None,
                     "regressed": slow is not None,
                     "regression": slow.message if slow else None})
    summary = summarize(samples, window=max(len(samples), 1))
    data: dict[str, Any] = {"target": name, **summary.model_dump(mode="json", by_alias=False,
                                                                 exclude={"regression"})}
    data.update({
        "raw_bytes_total": sum(s.raw_bytes or 0 for s in samples),
        "stored_bytes_total": sum(s.stored_bytes or 0 for s in samples),
        "raw_bytes_latest": samples[-1].raw_bytes if samples else None,
        "regressions": sum(1 for r in runs if r["regressed"]),
        "runs": runs,
    })
    return data


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _size(value: int | None) -> str:
    return "-" if value is None else common.human_bytes(value)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{common.human_bytes(value)}/s"


def bottleneck_summary(t: dict[str, Any]) -> str:
    """The most frequent bottleneck and how often, and the newest run's (with its CPU use)."""
    stage = t["bottleneck_stage"]
    if stage is None:
        return "- (no stage timings in these manifests: taken before Safehold recorded them)"
    runs = t["runs"]
    timed = [r for r in runs if r["bottleneck_stage"]]
    often = sum(1 for r in timed if r["bottleneck_stage"] == stage)
    text = f"{stage} in {often} of {len(timed)} timed run(s)"
    last = runs[-1]
    if last["bottleneck_stage"]:
        busy = "" if last["cores_busy"] is None else f", cores busy {last['cores_busy']:.0%}"
        text += f"; newest: {last['bottleneck_stage']}{busy}"
    return text


def bottleneck_history(runs: list[dict[str, Any]], limit: int = 8) -> str:
    """Each run's bottleneck, oldest first, repeats folded: ``read x3 > compress x1`` (``-``
    for a run without stage timings); only the newest ``limit`` changes, after ``...``."""
    folded: list[list[Any]] = []
    for r in runs:
        stage = r["bottleneck_stage"] or "-"
        if folded and folded[-1][0] == stage:
            folded[-1][1] += 1
        else:
            folded.append([stage, 1])
    shown = " > ".join(f"{stage} x{n}" for stage, n in folded[-limit:])
    return shown if len(folded) <= limit else f"... > {shown}"


def _text(repo_url: str, since: str, targets: list[dict[str, Any]]) -> None:
    if not targets:
        click.echo(f"no backups in {repo_url}")
        return
    for t in targets:
        click.echo(f"{t['target']}: {t['count']} backup(s) in the last {since}")
        if not t["count"]:
            continue
        ratio = t["compression_ratio"]
        rows = [
            ("duration", f"p50 {_seconds(t['p50_duration_seconds'])}"
                         f"  p95 {_seconds(t['p95_duration_seconds'])}"),
            ("throughput", f"p50 {_rate(t['p50_throughput_bytes_per_second'])}"
                           f"  p95 {_rate(t['p95_throughput_bytes_per_second'])}"),
            ("size", f"latest {_size(t['raw_bytes_latest'])} raw;"
                     f" {common.human_bytes(t['stored_bytes_total'])} stored in all"),
            ("ratio", "-" if ratio is None else f"{ratio:.2f}"),
            ("bottleneck", bottleneck_summary(t)),
            *([("bottlenecks", bottleneck_history(t["runs"]) + "  (oldest to newest)")]
              if t["bottleneck_stage"] else []),
            ("over time", f"oldest to newest, one column per run ({len(t['runs'])})"),
            *run_charts(t["runs"]),
        ]
        for key, value in rows:
            click.echo(f"  {key:<11} {value}")
        for r in t["runs"]:
            if r["regressed"]:
                click.echo(f"  REGRESSED  {r['regression']}")
    click.echo(UNAUTHENTICATED, err=True)


@click.command()
@common.repo_option
@click.option("--target", "-t", "target_name", default=None, help="Only this target.")
@click.option("--since", default="30d", show_default=True,
              help="Only backups finished within this age: 12h, 30d, 8w.")
@common.output_option
@click.pass_context
def stats(ctx: click.Context, repo: str, target_name: str | None, since: str,
          output: str) -> None:
    """History and trends per target: p50/p95 duration and throughput, sizes, ratio,
    bottleneck stage, a terminal chart of each run's duration, throughput, raw and stored
    size, ratio (sparklines) and bottleneck stage (initials), and the runs that regressed
    against the trailing median of their type. Reads manifests only (no key needed).

    --output html prints a self-contained page (inline SVG plots over time per target, no
    script or external asset): safehold stats -o html > stats.html."""
    age = parse_since(since)  # a bad flag fails before the repository is opened
    repository = common.open_repo(ctx, repo, allow_empty=True)
    if target_name:
        repository.require_target(target_name)
        names = [target_name]
    else:
        names = repository.targets()
    cutoff = datetime.now(UTC) - age
    targets = []
    for name in names:
        healthy, damaged = repository.scan(name)
        summary = target_stats(name, [m for m in healthy if m.finished_at >= cutoff])
        summary["damaged"] = len(damaged)
        targets.append(summary)
        if damaged:
            click.echo(f"warning: {len(damaged)} backup(s) of {name} left out: damaged manifest"
                       " (`safehold list` names them, `safehold verify` checks them)", err=True)
    data = {"repository": repository.url, "since": since, "since_time": cutoff.isoformat(),
            "targets": targets}
    if output == "html":
        common.emit(output, data, lambda: _html(data))
    else:
        common.emit(output, data, lambda: _text(repository.url, since, targets))


def _html(data: dict[str, Any]) -> None:
    click.echo(stats_html.render(data, datetime.now(UTC)), nl=False)
    click.echo(UNAUTHENTICATED, err=True)


COMMANDS = [stats]
