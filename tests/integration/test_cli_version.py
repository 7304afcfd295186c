"""`safehold version --check` against a local HTTP server standing in for PyPI's JSON API."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from safehold import __version__
from tests.integration.cli_helpers import run

pytestmark = pytest.mark.portable


def _doc(*versions: str, yanked: tuple[str, ...] = ()) -> bytes:
    return json.dumps({"info": {"name": "safehold", "version": versions[-1] if versions else ""},
                       "releases": {v: [{"filename": f"safehold-{v}.tar.gz",
                                         "yanked": v in yanked}] for v in versions}}).encode()


# path -> (status, body); the handler serves whatever the test put here
PAGES: dict[str, tuple[int, bytes]] = {
    "/newer": (200, _doc("0.0.9", __version__, "99.1.0")),
    "/same": (200, _doc("0.0.1", __version__)),
    "/older": (200, _doc("0.0.1", "0.0.2")),
    "/prerelease": (200, _doc(__version__, "99.0.0rc1", "99.0.0.dev3", "99.0.0b2")),
    "/yanked": (200, _doc(__version__, "99.0.0", yanked=("99.0.0",))),
    "/malformed": (200, b'{"releases": {"1.0": [}'),
    "/not-pypi": (200, b'["a", "list"]'),
    "/error": (503, b"try later"),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = PAGES.get(self.path, (404, b"not found"))
        if self.path == "/hang":  # accepts, never answers: only the client's timeout ends it
            self.server.hung.wait(30)  # type: ignore[attr-defined]
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def index() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.hung = threading.Event()  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.hung.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "safehold.yaml").write_text("{}\n")
    return {"SAFEHOLD_CONFIG": str(tmp_path / "safehold.yaml")}


def check(env: dict[str, str], url: str, *extra: str) -> dict[str, object]:
    result = run("version", "--check", "--output", "json", *extra,
                 env={**env, "SAFEHOLD_UPDATES__INDEX_URL": url})
    doc: dict[str, object] = json.loads(result.stdout)
    assert doc["installed"] == __version__ and doc["index_url"] == url
    return doc


def test_plain_version_needs_no_network(env: dict[str, str]) -> None:
    assert run("version", env=env).stdout.strip() == f"safehold {__version__}"


def test_newer_release_is_reported_with_how_to_upgrade(env: dict[str, str], index: str) -> None:
    doc = check(env, index + "/newer")
    assert (doc["status"], doc["latest"], doc["note"]) == ("update-available", "99.1.0", None)
    text = run("version", "--check", env={**env, "SAFEHOLD_UPDATES__INDEX_URL": index + "/newer"})
    assert "a newer release, 99.1.0" in text.stdout and "pipx upgrade safehold" in text.stdout


def test_same_release_is_up_to_date(env: dict[str, str], index: str) -> None:
    doc = check(env, index + "/same")
    assert (doc["status"], doc["latest"]) == ("up-to-date", __version__)
    text = run("version", "--check", env={**env, "SAFEHOLD_UPDATES__INDEX_URL": index + "/same"})
    assert text.stdout.strip() == f"safehold {__version__} is the latest release"


def test_older_index_means_this_build_is_ahead(env: dict[str, str], index: str) -> None:
    doc = check(env, index + "/older")
    assert (doc["status"], doc["latest"]) == ("ahead", "0.0.2")


def test_prereleases_and_yanked_releases_are_never_offered(env: dict[str, str],
                                                           index: str) -> None:
    assert check(env, index + "/prerelease")["status"] == "up-to-date"
    assert check(env, index + "/yanked")["status"] == "up-to-date"


@pytest.mark.parametrize(("path", "says"), [
    ("/malformed", "not JSON"),
    ("/not-pypi", "no 'releases' mapping"),
    ("/error", "HTTP 503"),
    ("/missing", "HTTP 404"),
])
def test_a_bad_answer_is_a_note_with_exit_0(env: dict[str, str], index: str, path: str,
                                            says: str) -> None:
    doc = check(env, index + path)
    assert doc["status"] == "unknown" and doc["latest"] is None
    assert says in str(doc["note"]), doc
    text = run("version", "--check", env={**env, "SAFEHOLD_UPDATES__INDEX_URL": index + path})
    assert text.stdout.strip() == f"safehold {__version__}"
    assert "note: could not check for a newer release" in text.stderr
    assert "Traceback" not in text.output


def test_unreachable_index_is_a_note_with_exit_0(env: dict[str, str]) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/pypi/safehold/json"
        doc = check(env, url)
    assert doc["status"] == "unknown" and "unreachable" in str(doc["note"]), doc


def test_an_index_that_never_answers_is_cut_off_by_the_timeout(env: dict[str, str],
                                                                index: str) -> None:
    doc = check(env, index + "/hang", "--timeout", "0.5")
    assert doc["status"] == "unknown" and "unreachable" in str(doc["note"]), doc


def test_index_url_from_the_config_file(tmp_path: Path, index: str) -> None:
    config = tmp_path / "safehold.yaml"
    config.write_text(f"updates:\n  index_url: {index}/newer\n  timeout: 2\n")
    doc = json.loads(run("version", "--check", "-o", "json",
                         env={"SAFEHOLD_CONFIG": str(config)}).stdout)
    assert doc["status"] == "update-available" and doc["index_url"] == f"{index}/newer"


def test_a_non_http_index_url_is_a_usage_error(env: dict[str, str]) -> None:
    result = run("version", "--check", ok=False,
                 env={**env, "SAFEHOLD_UPDATES__INDEX_URL": "file:///etc/passwd"})
    assert result.exit_code == 2, result.output
    assert "not an http(s) URL" in result.output and "updates.index_url" in result.output
