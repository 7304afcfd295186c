"""`safehold stats --output html`: one self-contained page of a repository's trends.

Inline SVG plots per target (duration, throughput, sizes, compression ratio, bottleneck stage,
each run over time; regressed runs marked), the p50/p95 summary and a table of the runs. No
script, no external asset (a Content-Security-Policy forbids loading any), and every text that
comes from the repository (its URL, target names, stage names, messages) is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from safehold.cli.common import human_bytes

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 640, 180, 70, 16, 12, 28
COLORS = ("#1f6feb", "#8250df", "#1a7f37", "#bf8700", "#cf222e", "#0a7ea4")
REGRESSED = "#cf222e"
CSP = "default-src 'none'; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1f2328;max-width:1100px}
h1{font-size:20px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #d0d7de}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#59636e}dd{margin:0}
.plots{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-weight:600}
svg.plot{background:#f6f8fa;border:1px solid #d0d7de}svg text{font-size:11px;fill:#59636e}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #d0d7de;padding:2px 6px}
tr.regressed td{background:#ffebe9}.note{color:#59636e}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _time(run: dict[str, Any]) -> datetime | None:
    text = run.get("finished_at")
    return datetime.fromisoformat(text) if text else None


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def _ratio(run: dict[str, Any]) -> float | None:
    raw, stored = run.get("raw_bytes"), run.get("stored_bytes")
    return raw / stored if raw and stored else None


def _xs(runs: Sequence[dict[str, Any]]) -> list[float]:
    """Each run's x position: by finish time, evenly spaced when the times give no spread."""
    times = [_time(r) for r in runs]
    stamps = [t.timestamp() for t in times if t is not None]
    width = WIDTH - PAD_L - PAD_R
    if len(stamps) == len(runs) and len(runs) > 1 and max(stamps) > min(stamps):
        low, span = min(stamps), max(stamps) - min(stamps)
        return [PAD_L + (s - low) / span * width for s in stamps]
    return [PAD_L + (i / max(len(runs) - 1, 1)) * width if len(runs) > 1 else PAD_L + width / 2
            for i in range(len(runs))]


def line_plot(kind: str, title: str, runs: Sequence[dict[str, Any]],
              series: Sequence[tuple[str, Callable[[dict[str, Any]], float | None]]],
              label: Callable[[float], str]) -> str:
    """One SVG line plot of ``series`` (name, value of a run) over ``runs``."""
    xs = _xs(runs)
    values = [v for _, get in series for r in runs if (v := get(r)) is not None]
    plot_h = HEIGHT - PAD_T - PAD_B
    parts = [f'<svg class="plot" data-plot="{_e(kind)}" width="{WIDTH}" height="{HEIGHT}"'
             f' viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_e(title)}">']
    if not values:
        parts.append(f'<text x="{PAD_L}" y="{HEIGHT / 2}">no data</text></svg>')
        return f"<figure><figcaption>{_e(title)}</figcaption>{''.join(parts)}</figure>"
    low, high = min(0.0, min(values)), max(values)
    span = (high - low) or 1.0

    def y(v: float) -> float:
        return PAD_T + plot_h - (v - low) / span * plot_h

    base = y(low)
    parts.append(f'<line x1="{PAD_L}" y1="{base:.1f}" x2="{WIDTH - PAD_R}" y2="{base:.1f}"'
                 ' stroke="#8c959f"/>')
    parts.append(f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{base:.1f}"'
                 ' stroke="#8c959f"/>')
    parts.append(f'<text x="{PAD_L - 6}" y="{PAD_T + 9}" text-anchor="end">{_e(label(high))}'
                 '</text>')
    parts.append(f'<text x="{PAD_L - 6}" y="{base:.1f}" text-anchor="end">{_e(label(low))}'
                 '</text>')
    first, last = _time(runs[0]), _time(runs[-1])
    if first is not None:
        parts.append(f'<text x="{PAD_L}" y="{HEIGHT - 8}">{_e(_stamp(first))}</text>')
    if last is not None and len(runs) > 1:
        parts.append(f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 8}" text-anchor="end">'
                     f"{_e(_stamp(last))}</text>")
    for n, (name, get) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        points = [(x, y(v), r, v) for x, r in zip(xs, runs, strict=True)
                  if (v := get(r)) is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            parts.append(f'<polyline class="series" data-series="{_e(name)}" points="{path}"'
                         f' fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py, r, v in points:
            bad = bool(r.get("regressed"))
            tip = f"{r.get('finished_at') or '?'} {r.get('type') or ''}: {name} {label(v)}" + (
                f" — REGRESSED: {r.get('regression')}" if bad else "")
            parts.append(f'<circle class="point{" regressed" if bad else ""}" cx="{px:.1f}"'
                         f' cy="{py:.1f}" r="{5 if bad else 3}"'
                         f' fill="{REGRESSED if bad else color}"><title>{_e(tip)}</title>'
                         '</circle>')
    if len(series) > 1:
        for n, (name, _) in enumerate(series):
            parts.append(f'<text x="{PAD_L + 8 + n * 120}" y="{PAD_T + 10}"'
                         f' fill="{COLORS[n % len(COLORS)]}" style="fill:'
                         f'{COLORS[n % len(COLORS)]}">■ {_e(name)}</text>')
    parts.append("</svg>")
    return f"<figure><figcaption>{_e(title)}</figcaption>{''.join(parts)}</figure>"


def _busy(run: dict[str, Any]) -> str:
    busy = run.get("cores_busy")
    return f" (cores busy {busy:.0%})" if isinstance(busy, int | float) else ""


def bottleneck_plot(runs: Sequence[dict[str, Any]]) -> str:
    """The bottleneck stage of each run, one coloured mark per run on a row per stage."""
    stages = sorted({str(r["bottleneck_stage"]) for r in runs if r.get("bottleneck_stage")})
    title = "Bottleneck stage"
    if not stages:
        return (f"<figure><figcaption>{title}</figcaption><p class=\"note\">No stage timings"
                " in these manifests: these backups were taken before Safehold recorded them"
                " (the bottleneck is in each run's own result and log).</p></figure>")
    xs = _xs(runs)
    row = (HEIGHT - PAD_T - PAD_B) / len(stages)
    parts = [f'<svg class="plot" data-plot="bottleneck" width="{WIDTH}" height="{HEIGHT}"'
             f' viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}">']
    for i, stage in enumerate(stages):
        cy = PAD_T + row * (i + 0.5)
        parts.append(f'<text x="{PAD_L - 6}" y="{cy + 4:.1f}" text-anchor="end">{_e(stage)}'
                     '</text>')
    for x, r in zip(xs, runs, strict=True):
        if r.get("bottleneck_stage"):
            at = stages.index(str(r["bottleneck_stage"]))
            parts.append(f'<circle class="point" cx="{x:.1f}" cy="{PAD_T + row * (at + 0.5):.1f}"'
                         f' r="4" fill="{COLORS[at % len(COLORS)]}"><title>'
                         f'{_e(r.get("finished_at"))}: {_e(r["bottleneck_stage"])}{_busy(r)}'
                         '</title></circle>')
    parts.append("</svg>")
    return f"<figure><figcaption>{title}</figcaption>{''.join(parts)}</figure>"


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{human_bytes(v)}/s"


def _size(v: float | None) -> str:
    return "-" if v is None else human_bytes(v)


def target_section(t: dict[str, Any]) -> str:
    runs: list[dict[str, Any]] = t["runs"]
    ratio = t.get("compression_ratio")
    summary = [
        ("backups", str(t["count"])),
        ("duration", f"p50 {_seconds(t.get('p50_duration_seconds'))},"
                     f" p95 {_seconds(t.get('p95_duration_seconds'))}"),
        ("throughput", f"p50 {_rate(t.get('p50_throughput_bytes_per_second'))},"
                       f" p95 {_rate(t.get('p95_throughput_bytes_per_second'))}"),
        ("size", f"latest {_size(t.get('raw_bytes_latest'))} raw;"
                 f" {_size(t.get('stored_bytes_total'))} stored in all"),
        ("ratio", "-" if ratio is None else f"{ratio:.2f}"),
        ("bottleneck", t.get("bottleneck_stage") or "-"),
        ("regressed runs", str(t.get("regressions", 0))),
    ]
    if t.get("damaged"):
        summary.append(("damaged manifests", f"{t['damaged']} (left out)"))
    out = [f'<section class="target" data-target="{_e(t["target"])}">'
           f"<h2>{_e(t['target'])}</h2><dl>"]
    out += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in summary]
    out.append("</dl>")
    if not runs:
        out.append('<p class="note">No backups in this period.</p></section>')
        return "".join(out)
    out.append('<div class="plots">')
    out.append(line_plot("duration", "Duration", runs, [("duration", lambda r: r["seconds"])],
                         lambda v: f"{v:.2f} s"))
    out.append(line_plot("throughput", "Throughput (raw bytes per second)", runs,
                         [("throughput", lambda r: r.get("throughput_bytes_per_second"))],
                         lambda v: f"{human_bytes(v)}/s"))
    out.append(line_plot("size", "Size", runs,
                         [("raw", lambda r: r.get("raw_bytes")),
                          ("stored", lambda r: r.get("stored_bytes"))], human_bytes))
    out.append(line_plot("ratio", "Compression ratio (raw / stored)", runs,
                         [("ratio", _ratio)], lambda v: f"{v:.2f}"))
    out.append(bottleneck_plot(runs))
    out.append("</div><table><tr><th>finished</th><th>backup</th><th>type</th>"
               "<th>duration</th><th>throughput</th><th>raw</th><th>stored</th><th>ratio</th>"
               "<th>bottleneck</th><th>regression</th></tr>")
    for r in reversed(runs):
        ratio_r = _ratio(r)
        cells = [r.get("finished_at") or "-", r["backup_id"], r["type"],
                 _seconds(r.get("seconds")), _rate(r.get("throughput_bytes_per_second")),
                 _size(r.get("raw_bytes")), _size(r.get("stored_bytes")),
                 "-" if ratio_r is None else f"{ratio_r:.2f}", r.get("bottleneck_stage") or "-",
                 r.get("regression") or ""]
        cls = ' class="regressed"' if r.get("regressed") else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table></section>")
    return "".join(out)


def render(data: dict[str, Any], generated: datetime) -> str:
    """The page for ``safehold stats``'s JSON result ``data``."""
    targets: list[dict[str, Any]] = data["targets"]
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Safehold stats: {_e(data['repository'])}</title><style>{STYLE}</style>"
            "</head><body>")
    intro = (f"<h1>Safehold backup trends</h1><p>Repository <code>{_e(data['repository'])}"
             f"</code>, backups finished since {_e(data['since_time'])} (last"
             f" {_e(data['since'])}); generated {_e(f'{generated:%Y-%m-%d %H:%M:%S %Z}')}."
             " Figures come from the manifests, read without any key (unauthenticated)."
             " A red point is a run that regressed against the trailing median of its type.</p>")
    body = "".join(target_section(t) for t in targets) if targets else (
        '<p class="empty">No backups in this repository.</p>')
    return head + intro + body + "</body></html>\n"
