"""The portal's HTTP/1.1 on the wire: raw bytes to a real ``swreg serve`` (httptools with its
head bounded, ``engine/web/_http.py``).

Each case is what a request smuggler or a memory exhauster sends; the answer is read until the
server closes the connection, so a second request hidden in the first would show as a second
status line.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from engine.testing.ports import free_port
from engine.web._http import MAX_HEAD_BYTES

from .conftest import SECRET
from .processes import serve, stop_process

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


class Wire:
    """Raw HTTP/1.1 to the portal on ``port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.host = f"Host: 127.0.0.1:{port}\r\n".encode("ascii")

    def exchange(self, *parts: bytes) -> list[int]:
        """Send ``parts`` (one write each) and read until the server closes the connection;
        the status of every response in what came back, in order."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            for part in parts:
                try:
                    connection.sendall(part)
                except (BrokenPipeError, ConnectionResetError):  # refused before the rest
                    break
            received = b""
            try:
                while chunk := connection.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass
        return [int(status) for status in STATUS_LINE.findall(received)]

    def csrf(self) -> bytes:
        """The headers of a request that passes the CSRF check (a token the portal issued)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            connection.sendall(self.get("/api/csrf") + b"\r\n")
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
        token = json.loads(received.split(b"\r\n\r\n", 1)[1])["token"].encode("ascii")
        return b"Cookie: csrf=" + token + b"\r\nX-CSRF-Token: " + token + b"\r\n"

    def exchange_slowly(self, *parts: bytes) -> list[int]:
        """:meth:`exchange`, each part given time to arrive as a read of its own."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            for part in parts:
                connection.sendall(part)
                time.sleep(0.2)
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
        return [int(status) for status in STATUS_LINE.findall(received)]

    def get(self, path: str, *headers: bytes, close: bool = True) -> bytes:
        """A GET of ``path`` with ``headers`` (each ending in CRLF)."""
        ending = b"Connection: close\r\n" if close else b""
        return b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.host + b"".join(headers) + ending


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    folder = tmp_path_factory.mktemp("wire")
    port = free_port()
    process: subprocess.Popen[bytes] = serve(
        f"sqlite:///{folder / 'swreg.db'}", SECRET.hex(), port, folder / "serve.log", workers=1
    )
    try:
        yield Wire(port)
    finally:
        stop_process(process)


def test_a_plain_request_and_pipelined_requests_are_answered_in_order(wire: Wire) -> None:
    assert wire.exchange(wire.get("/healthz") + b"\r\n") == [200]
    pipelined = wire.get("/healthz", close=False) + b"\r\n" + wire.get("/nowhere") + b"\r\n"
    assert wire.exchange(pipelined) == [200, 404]


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", id="content-length+chunked"
        ),
        pytest.param(b"Content-Length: 4\r\nContent-Length: 5\r\n", id="two-content-lengths"),
        pytest.param(b"Content-Length: +4\r\n", id="signed-content-length"),
        pytest.param(b"Transfer-Encoding: chunked, identity\r\n", id="coding-after-chunked"),
        pytest.param(b"Transfer-Encoding: identity\r\nContent-Length: 4\r\n", id="identity"),
        pytest.param(b"X-A: a\r\n b\r\n", id="obsolete-line-folding"),
        pytest.param(b"X-A: a\x00b\r\n", id="nul-in-a-value"),
        pytest.param(b"X-A : b\r\n", id="space-before-colon"),
    ],
)
def test_a_request_framed_two_ways_is_400_and_nothing_after_it_is_read(
    wire: Wire, head: bytes
) -> None:
    """The body of the first request holds a complete second one: a server that frames the
    first by ``Content-Length`` (or any other reading) would answer the second too."""
    smuggled = wire.get("/healthz") + b"\r\n"
    request = b"POST /api/csrf HTTP/1.1\r\n" + wire.host + head + b"\r\n"
    assert wire.exchange(request + b"0\r\n\r\n" + smuggled) == [400]


def test_bare_line_feeds_and_a_bad_chunk_size_are_400(wire: Wire) -> None:
    assert wire.exchange(wire.get("/healthz").replace(b"\r\n", b"\n") + b"\n") == [400]
    chunked = b"POST /api/csrf HTTP/1.1\r\n" + wire.host + b"Transfer-Encoding: chunked\r\n\r\n"
    assert wire.exchange(chunked + b"zz\r\nabc\r\n0\r\n\r\n") == [400]


def test_a_head_over_the_bound_is_431_whether_it_comes_at_once_or_in_pieces(wire: Wire) -> None:
    header = b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    assert wire.exchange(wire.get("/healthz", header) + b"\r\n") == [431]
    pieces = [wire.get("/healthz")] + [b"X-Piece: " + b"b" * 4000 + b"\r\n"] * 5
    assert wire.exchange(*pieces) == [431]  # never ended: refused once past the bound
    assert wire.exchange(b"GET /" + b"c" * MAX_HEAD_BYTES + b" HTTP/1.1\r\n") == [431]
    assert wire.exchange(wire.get("/healthz") + b"\r\n") == [200]  # the server is fine


def test_a_head_within_the_bound_passes_and_a_body_does_not_count_as_head(wire: Wire) -> None:
    header = b"X-Big: " + b"a" * (MAX_HEAD_BYTES - 400) + b"\r\n"
    assert wire.exchange(wire.get("/healthz", header) + b"\r\n") == [200]
    body = b"{" + b" " * (3 * MAX_HEAD_BYTES) + b"}"
    post = (
        b"POST /api/registrations HTTP/1.1\r\n" + wire.host + b"Connection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    assert wire.exchange(post + body) == [403]  # read whole: refused by the CSRF check only


def test_a_body_in_reads_larger_than_the_bound_is_never_taken_for_a_head(wire: Wire) -> None:
    """A 40 KB body whose last 20 KB arrive as a read of their own, after its head: the request
    is read whole and answered by the application (201), not 431."""
    body = json.dumps({"type": "person.general", "consent": True, "padding": "a" * 40_000})
    data = body.encode("ascii")
    head = (
        b"POST /api/registrations HTTP/1.1\r\n" + wire.host + wire.csrf()
        + b"Connection: close\r\nContent-Type: application/json\r\n"
        + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n"
    )  # fmt: skip
    assert wire.exchange_slowly(head, data[:20_000], data[20_000:]) == [201]
