"""Fault injection for object-storage tests: an HTTP/1.1 proxy that misbehaves on request.

The emulators (moto, fake-gcs-server, Azurite) never fail by themselves, so the retry and resume
paths of the storage backends are exercised by putting :class:`FaultProxy` between the SDK and the
emulator. It is a real TCP proxy on 127.0.0.1 (one thread per client connection, stdlib only)
that parses each HTTP/1.1 request and response (Content-Length or chunked bodies, keep-alive,
``Expect: 100-continue``), numbers the requests in arrival order, and passes them through unless a
planned fault matches. It speaks plain HTTP and knows nothing of any cloud, so the S3, GCS and
Azure tests share it.

API::

    with FaultProxy(upstream="http://127.0.0.1:9000") as proxy:   # or proxy.start() / .stop()
        proxy.endpoint                   # "http://127.0.0.1:PORT": point the SDK here
        proxy.fail(nth=3, mode="503")    # the 3rd request from now gets a 503 (not forwarded)
        proxy.fail(nth=1, mode="reset", when=lambda r: r.method == "GET")
                                         # the next GET: the connection is cut mid-body
        proxy.fail(nth=2, mode="stall", seconds=5, times=2)
                                         # the 2nd and 3rd requests from now wait 5 s first
        proxy.requests                   # every Request seen: n, method, target, headers, fault
        proxy.count(lambda r: r.method == "PUT")
        proxy.clear()                    # forget planned faults and the request log

Modes:

* ``"503"`` — answer ``503 Service Unavailable`` (``status=`` and ``body=`` change it) without
  forwarding; the connection is closed afterwards (``Connection: close``).
* ``"stall"`` — hold the request ``seconds`` before forwarding it; a client whose read timeout is
  shorter gives up first (the request is then forwarded to a closed client and dropped).
* ``"reset"`` — cut both connections mid-transfer: a request with a body after ``at`` bytes of it
  (default: half) have reached the server, so the server never sees it complete; a request
  without a body after its response head and ``at`` bytes (default: half) of the response body,
  which is what a connection dropped during a download looks like.

``nth`` counts the requests, from the moment ``fail`` is called, that satisfy ``when`` (default:
every request); ``times`` consecutive such requests get the fault. Faults planned at once are
independent. Request numbers in ``proxy.requests`` count from 1 since start or ``clear()``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, Literal, Self
from urllib.parse import urlsplit

Mode = Literal["503", "stall", "reset"]
_MAX_HEAD = 64 * 1024
_COPY = 64 * 1024


@dataclass(frozen=True)
class Request:
    """One HTTP request seen by the proxy (header names lower-cased)."""

    n: int
    method: str
    target: str
    headers: dict[str, str]
    fault: Mode | None = None


@dataclass
class _Plan:
    mode: Mode
    nth: int
    times: int
    when: Callable[[Request], bool]
    seconds: float
    at: int | None
    status: int
    body: bytes
    seen: int = 0  # matching requests since the plan was made

    def claims(self, req: Request) -> bool:
        if not self.when(req):
            return False
        self.seen += 1
        return self.nth <= self.seen < self.nth + self.times


class _Closed(Exception):
    """One side closed the connection, or a fault cut it."""


@dataclass
class _Message:
    head: bytes
    start: str
    headers: dict[str, str] = field(default_factory=dict)


def _read_head(f: BinaryIO) -> _Message | None:
    """Read a request/response head; None on a clean EOF before any byte."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = f.readline(_MAX_HEAD)
        if not line:
            if lines:
                raise _Closed("connection closed inside a message head")
            return None
        size += len(line)
        if size > _MAX_HEAD:
            raise _Closed("message head too large")
        if not lines and line in (b"\r\n", b"\n"):
            continue  # tolerate stray CRLF between messages
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            break
    start = lines[0].decode("latin-1").rstrip("\r\n")
    headers = {}
    for raw in lines[1:-1]:
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return _Message(b"".join(lines), start, headers)


def _without_header(head: bytes, name: str) -> bytes:
    keep = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(name.encode() + b":")]
    return b"\r\n".join(keep)


class _Body:
    """Copies one message body from ``src`` to ``dst``, optionally stopping after ``limit``."""

    def __init__(self, src: BinaryIO, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.sent = 0

    def _send(self, data: bytes, limit: int | None) -> None:
        if limit is not None and self.sent + len(data) >= limit:
            self.dst.sendall(data[: max(0, limit - self.sent)])
            raise _Closed("cut by a planned fault")
        self.dst.sendall(data)
        self.sent += len(data)

    def fixed(self, length: int, limit: int | None = None) -> None:
        left = length
        while left:
            data = self.src.read(min(left, _COPY))
            if not data:
                raise _Closed("connection closed inside a body")
            left -= len(data)
            self._send(data, limit)

    def chunked(self, limit: int | None = None) -> None:
        while True:
            line = self.src.readline(_MAX_HEAD)
            if not line:
                raise _Closed("connection closed inside a chunked body")
            self._send(line, limit)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = self.src.readline(_MAX_HEAD)
                    if not trailer:
                        raise _Closed("connection closed inside chunked trailers")
                    self._send(trailer, limit)
                    if trailer in (b"\r\n", b"\n"):
                        return
            self.fixed(size + 2, limit)  # data + CRLF

    def until_eof(self, limit: int | None = None) -> None:
        while data := self.src.read1(_COPY):  # type: ignore[attr-defined]
            self._send(data, limit)


def _body_kind(msg: _Message) -> tuple[str, int]:
    if "chunked" in msg.headers.get("transfer-encoding", "").lower():
        return "chunked", -1
    if "content-length" in msg.headers:
        return "fixed", int(msg.headers["content-length"])
    return "none", 0


class FaultProxy:
    """A misbehaving HTTP/1.1 proxy in front of ``upstream`` (see the module docstring)."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://HOST:PORT, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.host = host
        self.requests: list[Request] = []
        self._plans: list[_Plan] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- control -----------------------------------------------------------------------------

    def fail(self, *, nth: int = 1, mode: Mode = "503", times: int = 1,
             when: Callable[[Request], bool] | None = None, seconds: float = 5.0,
             at: int | None = None, status: int = 503, body: bytes | None = None) -> None:
        """Plan a fault for the ``nth`` .. ``nth+times-1`` matching requests from now on."""
        if mode not in ("503", "stall", "reset"):
            raise ValueError(f"unknown fault mode {mode!r}: use '503', 'stall' or 'reset'")
        if nth < 1 or times < 1:
            raise ValueError("nth and times count from 1")
        default_body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable"
                        b"</Code><Message>injected by FaultProxy</Message></Error>")
        plan = _Plan(mode, nth, times, when or (lambda _r: True), seconds, at, status,
                     default_body if body is None else body)
        with self._lock:
            self._plans.append(plan)

    def clear(self) -> None:
        """Forget planned faults and the request log; numbering restarts at 1."""
        with self._lock:
            self._plans.clear()
            self.requests.clear()

    def count(self, when: Callable[[Request], bool] | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if when is None or when(r))

    def faults(self) -> list[Request]:
        """The requests that got a fault, in order."""
        with self._lock:
            return [r for r in self.requests if r.fault]

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Self:
        listener = socket.create_server((self.host, 0))
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True,
                                      name="fault-proxy-conn")
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _register(self, request: Request) -> _Plan | None:
        with self._lock:
            plan = next((p for p in self._plans if p.claims(request)), None)
            n = len(self.requests) + 1
            self.requests.append(Request(n, request.method, request.target, request.headers,
                                         plan.mode if plan else None))
            return plan

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        with self._lock:
            self._conns.add(client)
        try:
            cin = client.makefile("rb")
            upstream = socket.create_connection(self.upstream, timeout=60)
            with self._lock:
                self._conns.add(upstream)
            uin = upstream.makefile("rb")
            while not self._stop.is_set() and self._exchange(client, cin, upstream, uin):
                pass
        except (_Closed, OSError, ValueError):
            pass  # a fault, a client that gave up, or a server that closed: end the connection
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
                    with self._lock:
                        self._conns.discard(sock)

    def _exchange(self, client: socket.socket, cin: BinaryIO, upstream: socket.socket,
                  uin: BinaryIO) -> bool:
        """Relay one request and its response; False when the connection is done."""
        req = _read_head(cin)
        if req is None:
            return False
        method, target = [*req.start.split(" "), "", ""][:2]
        plan = self._register(Request(0, method, target, req.headers))
        kind, length = _body_kind(req)
        expects = req.headers.get("expect", "").lower() == "100-continue"
        head = _without_header(req.head, "expect") if expects else req.head

        if plan is not None and plan.mode == "503":
            if not expects:  # drain the body so the client reads our answer, not a reset
                sink = _Body(cin, _NullSocket())  # type: ignore[arg-type]
                sink.chunked() if kind == "chunked" else sink.fixed(length)
            client.sendall(
                f"HTTP/1.1 {plan.status} Injected Fault\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(plan.body)}\r\nConnection: close\r\n\r\n".encode()
                + plan.body)
            return False
        if plan is not None and plan.mode == "stall":
            deadline = time.monotonic() + plan.seconds
            while time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.05)
        if expects:
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

        has_body = kind == "chunked" or length > 0
        cut_request = plan is not None and plan.mode == "reset" and has_body
        upstream.sendall(head)
        body = _Body(cin, upstream)
        limit = None
        if cut_request:
            assert plan is not None
            limit = plan.at if plan.at is not None else max(1, length // 2 if length > 0 else 1)
        if kind == "chunked":
            body.chunked(limit)
        elif length:
            body.fixed(length, limit)

        resp = _read_head(uin)
        if resp is None:
            raise _Closed("server closed without answering")
        client.sendall(resp.head)
        rkind, rlength = _body_kind(resp)
        status = int(resp.start.split(" ")[1])
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        cut_response = plan is not None and plan.mode == "reset" and not has_body
        rlimit = None
        if cut_response:
            assert plan is not None
            rlimit = plan.at if plan.at is not None else max(0, rlength // 2)
            if no_body or rlimit == 0:
                raise _Closed("cut after the response head")
        out = _Body(uin, client)
        if no_body:
            pass
        elif rkind == "chunked":
            out.chunked(rlimit)
        elif rkind == "fixed":
            out.fixed(rlength, rlimit)
        else:
            out.until_eof(rlimit)
            return False
        closing = "close" in (resp.headers.get("connection", "") + req.headers.get(
            "connection", "")).lower()
        return not closing


class _NullSocket:
    """A sendall() that discards, for draining a body nobody will read."""

    def sendall(self, data: bytes) -> None:
        pass
