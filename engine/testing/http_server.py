"""A real local HTTP server for revocation tests: serves CRLs (and answers POSTs), and misbehaves
on request — truncated bodies, lying or missing Content-Length, hangs, slow drips, redirects.

Test material only: it listens on 127.0.0.1 (an ephemeral port) in a thread of the test process::

    with LocalHTTPServer() as server:
        server.serve("/crl/ca.crl", crl_der, etag='"v1"')
        url = server.url("/crl/ca.crl")            # http://127.0.0.1:PORT/crl/ca.crl
        other = server.url("/x", host="localhost")  # the same server under another host name

Every request is recorded in ``server.requests`` (method, path, headers, body).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Misbehaviour = Literal["truncate", "hang", "drip", "chunked", "no_length", "short_length"]
PostHandler = Callable[[bytes, dict[str, str]], tuple[int, str, bytes]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Route:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/pkix-crl"
    etag: str | None = None
    last_modified: str | None = None
    location: str | None = None
    misbehaviour: Misbehaviour | None = None
    post: PostHandler | None = None
    headers: dict[str, str] = field(default_factory=dict)


class LocalHTTPServer:
    """See the module docstring. ``stop`` (or leaving the ``with``) releases hanging handlers."""

    __test__ = False

    def __init__(self, *, hang_seconds: float = 30.0, drip_interval: float = 0.2) -> None:
        self.routes: dict[str, _Route] = {}
        self.requests: list[RecordedRequest] = []
        self.hang_seconds = hang_seconds
        self.drip_interval = drip_interval
        self._released = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> LocalHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- routes ------------------------------------------------------------------------------

    def serve(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/pkix-crl",
        etag: str | None = None,
        last_modified: float | None = None,
        misbehaviour: Misbehaviour | None = None,
    ) -> None:
        """Serve ``body`` at ``path``; with ``etag``/``last_modified`` (a POSIX time) a matching
        conditional GET gets 304. ``misbehaviour``: ``truncate`` (half the body, then close),
        ``hang`` (never answer), ``drip`` (a byte per ``drip_interval``), ``chunked`` /
        ``no_length`` (no Content-Length), ``short_length`` (announces half the size)."""
        modified = formatdate(last_modified, usegmt=True) if last_modified is not None else None
        self.routes[path] = _Route(
            body=body,
            content_type=content_type,
            etag=etag,
            last_modified=modified,
            misbehaviour=misbehaviour,
        )

    def redirect(self, path: str, location: str, *, status: int = 302) -> None:
        self.routes[path] = _Route(status=status, location=location)

    def status(self, path: str, status: int) -> None:
        self.routes[path] = _Route(status=status, body=b"no", content_type="text/plain")

    def answer_posts(self, path: str, handler: PostHandler) -> None:
        """POSTs to ``path`` get ``handler(body, headers) -> (status, content_type, body)``."""
        self.routes[path] = _Route(post=handler)


def _handler_for(server: LocalHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            route = self._record(b"")
            if route is None:
                return
            if route.location is not None:
                self._head(route.status, {"Location": route.location, "Content-Length": "0"})
                return
            if route.status != 200:
                self._send(route.status, route.content_type, route.body)
                return
            if self._not_modified(route):
                headers = {"Content-Length": "0"}
                if route.etag:
                    headers["ETag"] = route.etag
                self._head(304, headers)
                return
            self._body(route)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            route = self._record(self.rfile.read(length))
            if route is None:
                return
            if route.location is not None:
                self._head(route.status, {"Location": route.location, "Content-Length": "0"})
                return
            if route.post is None:
                self._send(405, "text/plain", b"no POST here")
                return
            status, content_type, body = route.post(
                server.requests[-1].body, dict(self.headers.items())
            )
            self._send(status, content_type, body)

        # -- helpers -------------------------------------------------------------------------

        def _record(self, body: bytes) -> _Route | None:
            server.requests.append(
                RecordedRequest(self.command, self.path, dict(self.headers.items()), body)
            )
            route = server.routes.get(self.path.split("?")[0])
            if route is None:
                self._send(404, "text/plain", b"not found")
            return route

        def _not_modified(self, route: _Route) -> bool:
            match = self.headers.get("If-None-Match")
            if route.etag and match is not None:
                return match == route.etag
            since = self.headers.get("If-Modified-Since")
            return bool(route.last_modified and since == route.last_modified)

        def _head(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self._head(status, {"Content-Type": content_type, "Content-Length": str(len(body))})
            self.wfile.write(body)

        def _body(self, route: _Route) -> None:
            body, kind = route.body, route.misbehaviour
            headers = {"Content-Type": route.content_type}
            if route.etag:
                headers["ETag"] = route.etag
            if route.last_modified:
                headers["Last-Modified"] = route.last_modified
            if kind == "hang":
                server._released.wait(server.hang_seconds)
                self.close_connection = True
                return
            if kind == "chunked":
                self._head(200, {**headers, "Transfer-Encoding": "chunked"})
                for start in range(0, len(body), 65536):
                    piece = body[start : start + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            if kind == "no_length":
                self.close_connection = True
                self._head(200, {**headers, "Connection": "close"})
                self.wfile.write(body)
                return
            if kind == "short_length":
                self.close_connection = True
                self._head(200, {**headers, "Content-Length": str(len(body) // 2)})
                self.wfile.write(body)
                return
            self._head(200, {**headers, "Content-Length": str(len(body))})
            if kind == "truncate":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if kind == "drip":
                for index in range(len(body)):
                    if server._released.wait(server.drip_interval):
                        break
                    self.wfile.write(body[index : index + 1])
                    self.wfile.flush()
                return
            self.wfile.write(body)

    return Handler


def http_date(moment: float | None = None) -> str:
    """An HTTP date (``Last-Modified`` form) of ``moment`` (default: now)."""
    return formatdate(time.time() if moment is None else moment, usegmt=True)
