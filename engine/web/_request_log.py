"""The request id and the one log line per request (DESIGN.md §11).

:class:`RequestLogMiddleware` is the outermost of the portal's middleware (plain ASGI). For each
HTTP request it

1. picks the request id (:func:`choose_request_id`): the ``X-Request-ID`` a trusted proxy sent
   (the socket peer is in ``SWREG_TRUSTED_PROXIES``), when it is one header of at most
   :data:`MAX_REQUEST_ID` characters of ``[A-Za-z0-9._-]``; otherwise a fresh one. A client
   that is not a trusted proxy cannot choose the id its lines are filed under;
2. serves the request inside :func:`engine._logging.request_context`, so that every line logged
   meanwhile, in a route or deep in a service (in the thread pool too), carries the id, and
   returns the id in the ``X-Request-ID`` response header;
3. writes the request line (logger ``swreg.request``, event ``request``): the method, the
   matched route's path *template* (``/activate/{token}``, never the path itself: paths hold
   activation, e-mail change and reset tokens), the status, the duration and the client's keyed
   hash (:func:`~engine.web._shared.client_key`, as in audit rows). No query string, header or
   cookie is logged. A path no route knows is logged as ``null``: it could be a mistyped link
   holding a token.

uvicorn's access log is off under ``swreg serve`` (its lines hold raw paths): these lines
replace it. An unexpected error's response is made outside every middleware (Starlette's
``ServerErrorMiddleware``); the portal's handler reads the id from the scope
(:func:`request_id_of`) for its log line and header.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine._logging import request_context
from engine._settings import IPNetwork
from engine.web._shared import client_key

REQUEST_ID_HEADER: Final = "X-Request-ID"
MAX_REQUEST_ID: Final = 64
_HEADER: Final = REQUEST_ID_HEADER.lower().encode("ascii")
_SAFE_ID: Final = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_REQUEST_ID}}}")
_SCOPE_KEY: Final = "swreg.request_id"
REQUEST_EVENT: Final = "request"

log = logging.getLogger("swreg.request")


def new_request_id() -> str:
    """A fresh request id: 128 random bits in hex."""
    return secrets.token_hex(16)


def choose_request_id(scope: Scope, trusted: Sequence[IPNetwork]) -> str:
    """The incoming ``X-Request-ID`` when a trusted proxy sent exactly one that is short and
    safe (see the module docstring), else :func:`new_request_id`."""
    client = scope.get("client")
    if not client or not _trusted_peer(str(client[0]), trusted):
        return new_request_id()
    given = [value for name, value in scope.get("headers", ()) if name.lower() == _HEADER]
    if len(given) == 1:
        text = bytes(given[0]).decode("latin-1")
        if _SAFE_ID.fullmatch(text):
            return text
    return new_request_id()


def _trusted_peer(peer: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def request_id_of(connection: HTTPConnection) -> str | None:
    """The id :class:`RequestLogMiddleware` gave this request (None if it did not pass it)."""
    found = connection.scope.get(_SCOPE_KEY)
    return found if isinstance(found, str) else None


def route_template(scope: Scope) -> str | None:
    """The path template of the route that answers ``scope`` (``/activate/{token}``;
    ``/static/{path}`` for the static files), None when no route does.

    The router records the route it chose in the scope; a request refused before routing
    (Host, CSRF, body size) is matched here against the application's routes instead.
    """
    chosen = getattr(scope.get("route"), "path_format", None)
    if isinstance(chosen, str):
        return chosen
    router = getattr(scope.get("app"), "router", None)
    path, method = str(scope.get("path", "")), scope.get("method")  # the portal is at "/"
    found: str | None = None
    for route in _leaves(getattr(router, "routes", ())):
        regex, template = getattr(route, "path_regex", None), getattr(route, "path_format", None)
        if regex is None or not isinstance(template, str) or not regex.match(path):
            continue
        methods = getattr(route, "methods", None)
        if not methods or method in methods:
            return template
        found = found or template  # the path's route, for another method (405)
    return found


def _leaves(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes that answer requests: those of included routers too (FastAPI keeps an
    included router as one route whose ``effective_route_contexts`` are its routes)."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            yield from contexts()
        else:
            yield route


class RequestLogMiddleware:
    """Request id, ``X-Request-ID`` and the request line (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = choose_request_id(scope, self.trusted)
        scope[_SCOPE_KEY] = request_id
        header = (_HEADER, request_id.encode("ascii"))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [item for item in message.get("headers", []) if item[0] != _HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        started = time.perf_counter()
        with request_context(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:  # answered 500 by Starlette, outside every middleware
                status = status or 500
                raise
            finally:
                _log_request(scope, status, time.perf_counter() - started)


def _log_request(scope: Scope, status: int | None, seconds: float) -> None:
    """The request line; ``status`` None: the client went away before an answer."""
    try:
        client = client_key(HTTPConnection(scope))
    except Exception:  # the portal's state is missing (a request during shutdown)
        client = None
    level = logging.ERROR if status is not None and status >= 500 else logging.INFO
    log.log(
        level,
        REQUEST_EVENT,
        extra={
            "event": REQUEST_EVENT,
            "method": scope.get("method"),
            "path": route_template(scope),
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "client": client,
        },
    )


__all__ = [
    "MAX_REQUEST_ID",
    "REQUEST_ID_HEADER",
    "RequestLogMiddleware",
    "choose_request_id",
    "new_request_id",
    "request_id_of",
    "route_template",
]
