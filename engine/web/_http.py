"""The HTTP/1.1 wire protocol ``swreg serve`` runs: uvicorn's httptools one (llhttp, in C), with
the bound on a request's head that h11 had and httptools lacks.

Why httptools: per request it costs a third less server CPU than h11 in pure Python (``make
bench``, portal section: 0.42 → 0.30 ms for a trivial request) and it is the stricter parser on
the wire: a request with both ``Content-Length`` and ``Transfer-Encoding``, two different
``Content-Length`` values, obsolete line folding, bare LF line ends, a NUL in a header or an
unknown transfer coding is 400 and the connection closed, so nothing can be smuggled past a
proxy that reads the request otherwise (h11 answered ``Content-Length`` + ``Transfer-Encoding``
as chunked and went on with the next request in the body; ``tests/test_http_wire.py``).

What it lacks: a limit on the request line and headers. llhttp and uvicorn's protocol gather a
head of any size in memory before the application sees it. :class:`BoundedHttpToolsProtocol`
answers 431 and closes the connection when a head passes :data:`MAX_HEAD_BYTES` (h11's bound in
uvicorn: 16 KiB), whether it came in one read or is still coming, so a connection holds at most
that plus one read of the socket. Bodies are bounded by the application (``_security``: 413).
"""

from __future__ import annotations

from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES: Final = 16 * 1024
"""The most bytes a request line and its headers may take (uvicorn's h11 default)."""

_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 32\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request header fields too large."
)


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop the parser (uvicorn then calls send_400_response)."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over :data:`MAX_HEAD_BYTES`.

    Two checks, since llhttp hands over a head only once it is complete: a complete head is
    measured (its target and header lines) before the application is called; and every read
    of the socket that begins and ends inside a head counts, from the first byte of the request
    (or of the connection), so an endless head is cut off too. A read that carries a body's
    last bytes never counts, however large.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._heads = 0  # heads completed on this connection
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        counting, heads = self._in_head, self._heads
        super().data_received(data)
        if not (counting and self._in_head) or self._heads != heads or self.transport.is_closing():
            return  # only a read within one head counts: not a body's, nor one that ends a head
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            self._too_large = True
            raise _HeadTooLarge()  # the parser stops; uvicorn answers through send_400_response
        self._in_head = False
        self._heads += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self.logger.warning("Request head over %d bytes refused.", MAX_HEAD_BYTES)
        self.transport.write(_TOO_LARGE)
        self.transport.close()
