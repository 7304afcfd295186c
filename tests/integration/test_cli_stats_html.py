"""`safehold stats --output html`: the page is opened in Debian's headless Chromium (in a network
namespace of its own, so it can reach nothing), which must lay out every plot; an empty
repository and hostile names (HTML escaping) included."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from safehold.cli import stats_html
from safehold.cli.errors import Exit
from safehold.cli.stats_cmds import target_stats
from tests.integration.cli_helpers import run
from tests.integration.test_cli_stats import backups, stretch

# Appended to a copy of the page (whose CSP, rightly, forbids scripts): what the browser laid out.
PROBE = """<pre id="probe"></pre><script>
const plots = [...document.querySelectorAll('svg.plot')].map(svg => {
  const box = svg.getBoundingClientRect();
  return {plot: svg.dataset.plot, width: box.width, height: box.height,
          lines: [...svg.querySelectorAll('polyline')].map(l => l.getTotalLength()),
          points: [...svg.querySelectorAll('circle')].filter(
            c => c.getBoundingClientRect().width > 0).length,
          regressed: svg.querySelectorAll('circle.regressed').length};
});
document.getElementById('probe').textContent = JSON.stringify({
  plots, scripts: document.scripts.length - 1, images: document.images.length,
  targets: [...document.querySelectorAll('section.target h2')].map(h => h.textContent),
  empty: document.querySelector('.empty')?.textContent ?? null});
</script>"""
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&amp;"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml"), "SAFEHOLD_KEY_FILE": "",
            "SAFEHOLD_KEY": "", "SAFEHOLD_PASSPHRASE": ""}


def runs_for(now: datetime, stage: str, count: int = 3) -> list[dict[str, Any]]:
    """Runs as `target_stats` lists them, each with ``stage`` as its bottleneck."""
    return [{"backup_id": f"b{i}", "type": "full", "finished_at":
             (now + timedelta(hours=i)).isoformat(), "seconds": 1.0 + i, "raw_bytes": 1000,
             "stored_bytes": 400, "throughput_bytes_per_second": 1000 / (1 + i),
             "bottleneck_stage": stage, "regressed": i == count - 1,
             "regression": stage if i == count - 1 else None} for i in range(count)]


def chromium(page: Path, tmp_path: Path) -> str:
    """The DOM of ``page`` after Chromium loaded it (--dump-dom), with no network at all."""
    tool = shutil.which("chromium")
    assert tool, "chromium is missing: scripts/infra/10-system.sh installs it (apt chromium)"
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing"
    result = subprocess.run(
        [unshare, "--net", tool, "--headless", "--no-sandbox", "--disable-gpu",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


def laid_out(html: str, tmp_path: Path) -> dict[str, Any]:
    """The probe's report on ``html`` as Chromium rendered it."""
    copy = tmp_path / "probe.html"
    copy.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "",
                           html).replace("</body>", PROBE + "</body>"))
    dom = chromium(copy, tmp_path)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), dom[-2000:]
    report: dict[str, Any] = json.loads(found.group(1).replace("&amp;", "&")
                                        .replace("&lt;", "<").replace("&gt;", ">"))
    return report


def self_contained(html: str) -> None:
    """No script and nothing to load: no tag may fetch or run anything."""
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    tags = re.findall(r"<([a-zA-Z][\w-]*)([^>]*)>", html)
    assert {name.lower() for name, _ in tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "section",
        "dl", "dt", "dd", "div", "figure", "figcaption", "svg", "line", "text", "polyline",
        "circle", "table", "tr", "th", "td"}, tags
    for _, attributes in tags:
        names = re.sub(r'"[^"]*"', '""', attributes)  # attribute names, not their values
        assert not re.search(r"\b(src|href|on\w+)\s*=", names), attributes
    assert "url(" not in html and "@import" not in html


def test_the_page_renders_every_plot_in_chromium(tmp_path: Path, env: dict[str, str]) -> None:
    repo, ids = backups(tmp_path, env, "app", 4)
    backups(tmp_path, env, "other", 1)
    for bid in ids[:3]:
        stretch(repo, "app", bid, 1.0)
    stretch(repo, "app", ids[3], 5.0)  # a regression

    result = run("stats", "-r", repo, "--output", "html", env=env)
    html = result.stdout
    self_contained(html)
    page = tmp_path / "stats.html"
    page.write_text(html)
    dom = chromium(page, tmp_path)  # the page as it is, CSP and all: it parses whole
    assert dom.count('<section class="target"') == 2 and "<script" not in dom

    report = laid_out(html, tmp_path)
    assert report["targets"] == ["app", "other"] and report["scripts"] == 0
    assert report["images"] == 0
    plots = report["plots"]
    assert [p["plot"] for p in plots] == ["duration", "throughput", "size", "ratio",
                                          "bottleneck"] * 2  # manifests record the stages
    for p in plots:
        assert p["width"] > 300 and p["height"] > 100, p  # laid out, not collapsed
    assert [p["points"] for p in plots if p["plot"] == "bottleneck"] == [4, 1]  # one per run
    plots = [p for p in plots if p["plot"] != "bottleneck"]
    app, other = plots[:4], plots[4:]
    for p in app:  # four runs: a visible line per series and a visible point per run
        series = 2 if p["plot"] == "size" else 1
        assert len(p["lines"]) == series and all(length > 10 for length in p["lines"]), p
        assert p["points"] == 4 * series
        assert p["regressed"] == series  # the slow run is marked in every plot
    assert all(p["lines"] == [] and p["points"] in (1, 2) for p in other)  # one run: no line
    assert "took 5.0s" in html and ids[3] in html  # the regression in the runs table


def test_an_empty_repository_renders_a_page_without_plots(tmp_path: Path,
                                                         env: dict[str, str]) -> None:
    (tmp_path / "repo").mkdir()
    html = run("stats", "-r", (tmp_path / "repo").as_uri(), "-o", "html", env=env).stdout
    self_contained(html)
    report = laid_out(html, tmp_path)
    assert report["plots"] == [] and report["targets"] == []
    assert report["empty"] == "No backups in this repository."


def test_hostile_names_are_text_not_markup(tmp_path: Path, env: dict[str, str]) -> None:
    """A repository path, a target name and a stage name made of markup show as text."""
    # through the CLI: the repository's path holds markup (target names cannot; the URL the
    # page shows is percent-encoded)
    hostile_dir = tmp_path / "r<i onmouseover=x>&'q"  # no '/' in a directory name
    hostile_dir.mkdir()
    html = run("stats", "-r", f"file://{hostile_dir}", "-o", "html", env=env).stdout
    self_contained(html)
    assert "<i " not in html
    assert "r%3Ci%20onmouseover%3Dx%3E%26%27q" in html  # the repository's URL form, inert

    # the renderer, fed names no repository would accept today
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    data = {"repository": HOSTILE, "since": HOSTILE, "since_time": HOSTILE, "targets": []}
    data["targets"] = [{**target_stats(HOSTILE, []), "target": HOSTILE,
                        "bottleneck_stage": HOSTILE, "runs": runs_for(now, HOSTILE),
                        "count": 3}]
    page = stats_html.render(data, now)
    self_contained(page)
    report = laid_out(page, tmp_path)
    assert report["scripts"] == 0 and report["images"] == 0
    assert report["targets"] == [HOSTILE]  # the exact text, shown, not run
    assert [p["plot"] for p in report["plots"]] == ["duration", "throughput", "size", "ratio",
                                                    "bottleneck"]
    bottleneck = report["plots"][-1]
    assert bottleneck["points"] == 3 and bottleneck["width"] > 300


def test_html_is_only_for_stats(tmp_path: Path, env: dict[str, str]) -> None:
    result = run("list", "-r", (tmp_path / "repo").as_uri(), "-o", "html", env=env, ok=False)
    assert result.exit_code == Exit.USAGE
    assert "--output html is not available" in result.output and "--output text" in result.output


@pytest.mark.parametrize("count", [0, 1, 2])
def test_few_runs_render(count: int) -> None:
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    runs = [{**r, "bottleneck_stage": None, "regressed": False, "regression": None}
            for r in runs_for(now, "x", count)]
    t = {**target_stats("app", []), "runs": runs, "count": count}
    page = stats_html.render({"repository": "file:///r", "since": "30d", "since_time": "x",
                              "targets": [t]}, now)
    self_contained(page)
    assert page.count('class="plot"') == (4 if count else 0)
    assert page.count("<polyline") == (5 if count == 2 else 0)
