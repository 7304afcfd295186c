"""A local stand-in for a Slack incoming webhook (127.0.0.1, free port).

It answers as Slack does: 200 ``ok`` for a valid payload, 400 ``invalid_blocks`` /
``invalid_payload`` for a body that breaks Slack's Block Kit rules (checked by
:func:`block_kit_problems`), and whatever a test scripts in :attr:`SlackHook.script` first
(e.g. 429 with ``Retry-After``, 503). Every request is recorded with its arrival order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

BLOCK_TYPES = {"header", "section", "divider", "context", "actions", "image"}


@dataclass
class Received:
    path: str
    body: Any
    answered: int


@dataclass
class SlackHook:
    url: str
    path: str
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    @property
    def delivered(self) -> list[Any]:
        """Bodies answered 200, in order."""
        return [r.body for r in self.received if r.answered == 200]


def block_kit_problems(payload: Any) -> list[str]:
    """What Slack would reject in a webhook body (the rules Safehold's messages rely on)."""
    problems: list[str] = []
    if not isinstance(payload, dict):
        return ["payload is not a JSON object"]
    if not isinstance(payload.get("text"), str) or not payload["text"]:
        problems.append("no fallback text")
    blocks: list[Any] = list(payload.get("blocks") or [])
    for att in payload.get("attachments") or []:
        if not isinstance(att.get("color", ""), str):
            problems.append("attachment color is not a string")
        blocks.extend(att.get("blocks") or [])
    if not blocks:
        problems.append("no blocks")
    if len(blocks) > 50:
        problems.append(f"{len(blocks)} blocks (Slack takes at most 50)")
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            problems.append(f"block {i}: unknown type {kind!r}")
        elif kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                problems.append(f"block {i}: header needs plain_text of 1..150 chars")
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if not text and not fields:
                problems.append(f"block {i}: section without text or fields")
            if text and not 0 < len(text.get("text", "")) <= 3000:
                problems.append(f"block {i}: section text not 1..3000 chars")
            if fields is not None and not 0 < len(fields) <= 10:
                problems.append(f"block {i}: section has {len(fields)} fields (1..10)")
            for f in fields or []:
                if f.get("type") not in ("mrkdwn", "plain_text") or len(f.get("text", "")) > 2000:
                    problems.append(f"block {i}: bad field {f!r}")
        elif kind == "context":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= 10:
                problems.append(f"block {i}: context needs 1..10 elements")
    return problems


def serve() -> tuple[ThreadingHTTPServer, SlackHook]:
    hook = SlackHook(url="", path="/services/T000/B000/secret-token")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with lock:
                scripted = hook.script.pop(0) if hook.script else None
            headers: dict[str, str] = {}
            if self.path != hook.path:
                status, text = 404, "no_service"
            elif scripted is not None:
                status, headers, text = scripted
            else:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                status, text = ((400, "invalid_payload") if body is None
                                else (400, "invalid_blocks") if block_kit_problems(body)
                                else (200, "ok"))
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            with lock:
                hook.received.append(Received(self.path, parsed, status))
            data = text.encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}{hook.path}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hook


@pytest.fixture
def slack_hook() -> Iterator[SlackHook]:
    """A Slack webhook stand-in on 127.0.0.1 (free port), stopped after the test."""
    server, hook = serve()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
