"""`safehold version [--check]`: the installed version, and whether the package index has a newer
release.

The check reads the index's JSON API (PyPI's ``/pypi/safehold/json`` by default; a mirror's
from ``updates.index_url`` in the config or ``SAFEHOLD_UPDATES__INDEX_URL``). It is offline-safe:
a short timeout, and an index that cannot be reached or answers nonsense gives a one-line note
and exit 0, never a traceback — a backup host without internet access is normal. Pre-releases
and fully yanked releases are never offered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from safehold import __version__
from safehold.api.errors import UsageError
from safehold.cli import common

if TYPE_CHECKING:
    from packaging.version import Version

DEFAULT_INDEX_URL = "https://pypi.org/pypi/safehold/json"
MAX_BYTES = 32 * 1024 * 1024  # PyPI's document for a project with a long history is a few MiB
UPGRADE_HINT = "upgrade with `pipx upgrade safehold`, `scripts/install.sh`, or a new executable"


class IndexProblem(Exception):
    """The index could not be asked or did not answer sensibly (a note, not a failure)."""


@dataclass
class Check:
    installed: str
    index_url: str
    latest: str | None = None
    status: str = "unknown"  # update-available | up-to-date | ahead | unknown
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"installed": self.installed, "latest": self.latest, "status": self.status,
                "index_url": self.index_url, "note": self.note}


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the package index URL {url!r} is not an http(s) URL",
                         hint="set updates.index_url (or SAFEHOLD_UPDATES__INDEX_URL) to the JSON"
                         " API of the project on PyPI or a mirror, e.g. " + DEFAULT_INDEX_URL)
    return url


def fetch(url: str, timeout: float) -> Any:
    import http.client  # the CLI's start-up pays for HTTP only when a check runs
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={
        "Accept": "application/json", "User-Agent": f"safehold/{__version__} (version --check)"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise IndexProblem(f"the index answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise IndexProblem(f"the index is unreachable ({reason or type(exc).__name__})") from None
    if len(body) > MAX_BYTES:
        raise IndexProblem(f"the index's answer is larger than {MAX_BYTES} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise IndexProblem("the index's answer is not JSON") from None


def latest_release(doc: Any) -> Version:
    """The highest final release in a PyPI JSON API document (pre-releases, dev releases and
    releases whose every file is yanked are skipped)."""
    from packaging.version import InvalidVersion, Version

    if not isinstance(doc, dict) or not isinstance(doc.get("releases"), dict):
        raise IndexProblem("the index's answer has no 'releases' mapping (not a PyPI JSON API"
                           " document)")
    found: list[Version] = []
    for name, files in doc["releases"].items():
        try:
            version = Version(str(name))
        except InvalidVersion:
            continue
        if version.is_prerelease or version.is_devrelease:
            continue
        if isinstance(files, list) and files and all(
                isinstance(f, dict) and f.get("yanked") for f in files):
            continue
        found.append(version)
    if not found:
        raise IndexProblem("the index lists no final release of safehold")
    return max(found)


def run_check(url: str, timeout: float, installed: str = __version__) -> Check:
    from packaging.version import Version

    result = Check(installed=installed, index_url=url)
    try:
        latest = latest_release(fetch(url, timeout))
    except IndexProblem as exc:
        result.note = f"could not check for a newer release: {exc}; {url}"
        return result
    result.latest = str(latest)
    current = Version(installed)
    if latest > current:
        result.status = "update-available"
    elif latest == current:
        result.status = "up-to-date"
    else:
        result.status = "ahead"  # a development build, or a mirror that lags
    return result


@click.command("version")
@click.option("--check", is_flag=True,
              help="Also ask the package index whether a newer release exists (offline-safe:"
              " exit 0 with a note when it cannot be reached). [index: updates.index_url in the"
              " config, env SAFEHOLD_UPDATES__INDEX_URL, else PyPI]")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=60), default=None,
              help="Seconds to wait for the index. [default: updates.timeout, else 3]")
@common.output_option
@click.pass_context
def version(ctx: click.Context, check: bool, timeout: float | None, output: str) -> None:
    """Print the installed version; with --check, whether a newer release is out."""
    if not check:
        common.emit(output, {"installed": __version__},
                    lambda: click.echo(f"safehold {__version__}"))
        return
    updates = common.config(ctx).updates
    url = check_url(updates.index_url or DEFAULT_INDEX_URL)
    result = run_check(url, timeout if timeout is not None else updates.timeout)

    def text() -> None:
        if result.status == "update-available":
            click.echo(f"safehold {result.installed}: a newer release, {result.latest}, is on"
                       f" the package index; {UPGRADE_HINT}")
        elif result.status == "up-to-date":
            click.echo(f"safehold {result.installed} is the latest release")
        elif result.status == "ahead":
            click.echo(f"safehold {result.installed} is newer than the index's latest release,"
                       f" {result.latest}")
        else:
            click.echo(f"safehold {result.installed}")
            click.echo(f"note: {result.note}", err=True)

    common.emit(output, result.as_dict(), text)


COMMANDS = [version]
