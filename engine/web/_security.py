"""Request hygiene for every response: Host, client address, body size, CSRF, headers, cookies.

:class:`PortalMiddleware` is plain ASGI (no per-process state, so any worker can serve any
request). For each HTTP request it

1. refuses, with 400 ``bad_request`` and before any route runs, a request whose ``Host`` is not
   the public origin's (or one of ``SWREG_ALLOWED_HOSTS``): a page reached through a foreign
   name, as after DNS rebinding, gets nothing (DESIGN.md §11; :data:`HOST_CHECK_EXEMPT`
   paths are the only exception);
2. finds the client's address (:func:`forwarded_client`): the socket peer, or, when the peer
   is one of ``SWREG_TRUSTED_PROXIES``, the rightmost ``X-Forwarded-For`` entry that is not a
   trusted proxy. Rate limits and audit rows read it through :func:`client_address`;
3. refuses bodies over :data:`MAX_BODY_BYTES` with 413 ``request_too_large``: first by the
   ``Content-Length`` header, then by counting what actually streams in (chunked uploads too).
   The body is buffered (it is small by then) and replayed to the application;
4. checks the CSRF token on unsafe methods: the token must be one this server issued (a random
   nonce and its HMAC under the server key, :func:`new_csrf_token`), presented both in the
   CSRF cookie and in the ``X-CSRF-Token`` header or the ``csrf`` form field, else 403
   ``csrf_failed`` — a value the server did not issue fails even when cookie and header agree;
5. refuses, with 422 ``invalid_value``, requests no route could read safely: a NUL character
   in the path, the query, a JSON string (``\\u0000``) or an urlencoded form (no field may hold
   one, and PostgreSQL text cannot); a multipart form declaring a charset other than UTF-8
   (Starlette would decode its fields with that codec, and UTF-7 or ``unicode_escape`` make
   lone surrogates, which no page can store or show); a JSON body that is not UTF-8 (RFC 8259
   §8.1; Python would read UTF-16 and UTF-32 too, past the checks here) or is nested deeper
   than :data:`MAX_JSON_DEPTH` (the route's parser would recurse to Python's recursion limit).
   Any body but a form is read as JSON here: the API reads only JSON;
6. adds the security headers (CSP, nosniff, referrer policy, frame denial, no-store), the CSRF
   cookie when the request brought no valid one and, after ``?lang=``, the ``lang`` cookie.

The CSRF cookie is ``__Host-csrf`` (Secure, Path=/, no Domain, SameSite=Strict, HttpOnly) when
the public origin is https. A portal served over plain http (development, the tests, the demo)
names it ``csrf``, without ``Secure``: a ``__Host-`` cookie must be Secure, and a Secure cookie
is not sent back over http by most clients (Python's cookie jar, so httpx; browsers on a host
that is not loopback). The page's scripts never read the cookie: they take the token from the
page's ``<meta name="csrf-token">`` (or ``GET /api/csrf``).

Its refusals are rendered by the callback it is given, the same one the exception handlers use.
"""

from __future__ import annotations

import codecs
import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from python_multipart.multipart import parse_options_header
from starlette.requests import HTTPConnection, Request, cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine._errors import ErrorCode, RefusedError, SwregError, UsageError
from engine._settings import IPNetwork, Settings
from engine.services.hashing import IdentifierHasher
from engine.web._i18n import LANG_COOKIE, query_language

MAX_BODY_BYTES: Final = 64 * 1024
UPLOAD_BODY_BYTES: Final = 256 * 1024
"""The body limit of certificate uploads: above the 64 KiB a certificate may have, so that an
oversized file is refused by the service as ``file_too_large`` and nothing is stored."""
_UPLOAD_PATHS: Final = ("/api/customs-certificates",)
MAX_JSON_DEPTH: Final = 32
"""Arrays and objects nest at most this deep in a request body (the API's bodies nest 3)."""


def body_limit(scope: Scope) -> int:
    """The largest body accepted on this request's path."""
    path = str(scope.get("path", ""))
    return UPLOAD_BODY_BYTES if path.startswith(_UPLOAD_PATHS) else MAX_BODY_BYTES


CSRF_COOKIE: Final = "csrf"
"""The CSRF cookie's name when the portal is served over plain http (see the module doc)."""
CSRF_HOST_COOKIE: Final = "__Host-csrf"
"""The CSRF cookie's name over https: Secure, Path=/ and no Domain, as the prefix requires."""
CSRF_HEADER: Final = "x-csrf-token"
CSRF_FIELD: Final = "csrf"
SESSION_COOKIE: Final = "swreg_session"
"""The login session cookie's name over plain http."""
SESSION_HOST_COOKIE: Final = "__Host-swreg_session"
"""Its name over https: the prefix keeps a sibling host (``evil.portal.example``) from setting
it for the portal (cookie tossing: fixing a victim into the attacker's session)."""
OFFICER_COOKIE: Final = "swreg_officer"
"""The officer console's session cookie over plain http (SameSite=Strict: no other site's page
or link ever brings it along)."""
OFFICER_HOST_COOKIE: Final = "__Host-swreg_officer"
HIPKI_ORIGINS: Final = ("http://localhost:61161", "http://127.0.0.1:61161")
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_EXEMPT_PREFIXES: Final = ("/api/officer/",)
"""Paths authenticated by an ``Authorization: Bearer`` header, never by a cookie (the officer
API): a browser cannot attach that header to a cross-site request without a CORS preflight the
portal never grants, so a forged request carries no credential and CSRF does not apply."""
HOST_CHECK_EXEMPT: Final = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths answered whatever the ``Host`` (DESIGN.md §11: probes and the metrics scraper reach a
worker by its address; ``/metrics`` has its own address allow-list)."""
_SCOPE_KEY: Final = "swreg.csrf"
_CLIENT_KEY: Final = "swreg.client"
_CSRF_KIND: Final = "csrf"
_CSRF_NONCE_BYTES: Final = 24
_CSRF_MAC_CHARS: Final = 32
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{32}\.[0-9a-f]{32}")
"""A token as :func:`new_csrf_token` makes it: a base64url nonce, a dot, its truncated HMAC."""
_HOST: Final = re.compile(r"[A-Za-z0-9.\-\[\]:]+")

ErrorRenderer = Callable[[Request, SwregError], Response]


def content_security_policy(settings: Settings) -> str:
    """The CSP: own scripts and styles only; the page may reach the card agent and HiPKI."""
    connect = ["'self'", "ws://127.0.0.1:*", "ws://localhost:*", *HIPKI_ORIGINS]
    agent = _origin_of(settings.agent_url)
    if agent is not None and agent not in connect:
        connect.append(agent)
    images = ["'self'", "data:", *HIPKI_ORIGINS]  # /p11Image.bmp, read from a canvas
    hipki = _origin_of(settings.hipki_url)
    for known in (images, connect):
        if hipki is not None and hipki not in known:
            known.append(hipki)
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src " + " ".join(images),
            "connect-src " + " ".join(connect),
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
            "object-src 'none'",
        )
    )


def security_headers(settings: Settings) -> dict[str, str]:
    """Headers every response carries (error responses made outside the middleware too)."""
    return {
        "content-security-policy": content_security_policy(settings),
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "x-frame-options": "DENY",
    }


def secure_cookies(settings: Settings) -> bool:
    """Cookies are ``Secure`` when the portal is served over https."""
    return settings.public_origin.lower().startswith("https://")


def csrf_cookie_name(settings: Settings) -> str:
    """``__Host-csrf`` over https, ``csrf`` over plain http (see the module docstring)."""
    return CSRF_HOST_COOKIE if secure_cookies(settings) else CSRF_COOKIE


def session_cookie_name(settings: Settings) -> str:
    """``__Host-swreg_session`` over https, ``swreg_session`` over plain http."""
    return SESSION_HOST_COOKIE if secure_cookies(settings) else SESSION_COOKIE


def csrf_token(connection: HTTPConnection) -> str:
    """The CSRF token of this request (the cookie's, or the one the response will set)."""
    token = connection.scope.get(_SCOPE_KEY)
    return token if isinstance(token, str) else ""


def new_csrf_token(keys: IdentifierHasher) -> str:
    """A CSRF token issued by this server: a random nonce, ``.``, the nonce's HMAC under the
    server key (truncated to 128 bits). Only the key's holder can make one that
    :func:`issued_csrf_token` accepts."""
    nonce = secrets.token_urlsafe(_CSRF_NONCE_BYTES)
    return f"{nonce}.{_csrf_mac(keys, nonce)}"


def issued_csrf_token(keys: IdentifierHasher, token: str) -> bool:
    """Whether ``token`` is one :func:`new_csrf_token` made under these keys."""
    if not _TOKEN.fullmatch(token):  # only ASCII of the right shape is compared below
        return False
    nonce, _, mac = token.partition(".")
    return hmac.compare_digest(mac.encode("ascii"), _csrf_mac(keys, nonce).encode("ascii"))


def _csrf_mac(keys: IdentifierHasher, nonce: str) -> str:
    return keys.hash(_CSRF_KIND, nonce)[:_CSRF_MAC_CHARS]


# -- the client's address ------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(connection: HTTPConnection) -> str:
    """The client's address: as :class:`PortalMiddleware` found it (:func:`forwarded_client`),
    or the socket peer for a request that did not pass through it."""
    found = connection.scope.get(_CLIENT_KEY)
    if isinstance(found, str):
        return found
    return _canonical(connection.client.host) if connection.client else "unknown"


def forwarded_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """Who the client is (DESIGN.md §11), as a canonical address (an IPv4-mapped IPv6 address
    as IPv4).

    When the socket ``peer`` is in a ``trusted`` network, the ``X-Forwarded-For`` headers
    (``forwarded_for``, in the order received, each a comma-separated list) are walked from
    the right, past the trusted proxies; the first entry that is not one is the client. When
    every entry is a trusted proxy, or an entry is not a bare IP address (a port, a name,
    ``unknown``, garbage) before an untrusted one is found, the client is the peer: a request
    never gets a client address it wrote itself, only one that a trusted proxy appended, so an
    unexpected header puts it in the proxy's own bucket rather than a fresh one. Otherwise
    (the peer is not trusted, or nothing is) the client is the peer, and ``X-Forwarded-For``,
    ``X-Real-IP`` and ``Forwarded`` are never read.
    """
    address = _ip(peer)
    if address is None or not _trusted(address, trusted):
        return _canonical(peer)
    entries = [entry.strip() for header in forwarded_for for entry in header.split(",")]
    for entry in reversed(entries):
        hop = _ip(entry)
        if hop is None:
            break
        if not _trusted(hop, trusted):
            return str(hop)
    return str(address)


def rate_limit_subject(address: str) -> str:
    """What a rate limit counts for a client: an IPv4 address itself, an IPv6 address's /64
    (one subscriber usually holds a whole /64), anything else (no address) as given."""
    parsed = _ip(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))
    return str(parsed) if parsed is not None else address


def _ip(text: str) -> IPAddress | None:
    """``text`` as an address (an IPv4-mapped IPv6 address as the IPv4 one), else None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _canonical(text: str) -> str:
    address = _ip(text)
    return str(address) if address is not None else text


def _trusted(address: IPAddress, trusted: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


# -- the Host check ------------------------------------------------------------------------


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """The ``Host`` values the portal answers, lower-case: the public origin's ``host:port``
    (and the bare host when the port is the scheme's default, as browsers send it), and each
    ``SWREG_ALLOWED_HOSTS`` entry: ``host:port`` exactly, a bare ``host`` on any port (kept
    as ``host:*``). An IPv6 host is written in brackets, as in a ``Host`` header."""
    parts = urlsplit(settings.public_origin.strip().lower())
    default = {"http": "80", "https": "443"}.get(parts.scheme)
    host, port = _split_host(parts.netloc)
    hosts = {f"{host}:{port or default}"}
    if port in (None, default):
        hosts.add(host)
    for entry in settings.allowed_hosts:
        name, given = _split_host(entry.strip().lower())
        hosts.add(f"{name}:{given or '*'}")
    return frozenset(hosts)


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's ``Host`` header is one of ``allowed`` (:func:`allowed_hosts`)."""
    if not host:
        return False
    value = host.lower()
    return value in allowed or f"{_split_host(value)[0]}:*" in allowed


def _split_host(value: str) -> tuple[str, str | None]:
    """``host[:port]`` → (host, port or None); an IPv6 host keeps its brackets."""
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end >= 0 else ""
        if rest.startswith(":") and rest[1:].isdigit():
            return value[: end + 1], rest[1:]
        return value, None
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, port
    return value, None


def _cookie(settings: Settings, samesite: Literal["lax", "strict"]) -> dict[str, Any]:
    """A session cookie's attributes: HttpOnly, Secure over https, Path=/, browser-session."""
    return {"httponly": True, "samesite": samesite, "secure": secure_cookies(settings), "path": "/"}


def set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    """The login session cookie: HttpOnly, SameSite=Lax, Secure over https, browser-session."""
    response.set_cookie(session_cookie_name(settings), token, **_cookie(settings, "lax"))


def officer_cookie_name(settings: Settings) -> str:
    """``__Host-swreg_officer`` over https, ``swreg_officer`` over plain http."""
    return OFFICER_HOST_COOKIE if secure_cookies(settings) else OFFICER_COOKIE


def set_officer_cookie(response: Response, token: str, settings: Settings) -> None:
    """The officer console's session cookie: HttpOnly, SameSite=Strict, Secure over https."""
    response.set_cookie(officer_cookie_name(settings), token, **_cookie(settings, "strict"))


def clear_officer_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(officer_cookie_name(settings), **_cookie(settings, "strict"))


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(session_cookie_name(settings), **_cookie(settings, "lax"))


class PortalMiddleware:
    """Host check, client address, body limit, CSRF and security headers (see the module
    docstring).

    Everything that does not depend on the request is computed once, here: the raw security
    headers and the cookie attributes. A request's headers are read in one pass
    (:class:`_RequestHeaders`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        keys: IdentifierHasher,
        on_error: ErrorRenderer,
    ) -> None:
        self.app = app
        self.on_error = on_error
        self.keys = keys
        self.headers = security_headers(settings)
        self.secure = "; Secure" if secure_cookies(settings) else ""
        self.hosts = allowed_hosts(settings)
        self.trusted = settings.trusted_proxies
        self._raw_headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers.items()
        ]
        self._csrf_cookie = csrf_cookie_name(settings)
        self._csrf_cookie_head = f"{self._csrf_cookie}=".encode("ascii")
        tail = f"; Path=/; SameSite=Strict; HttpOnly{self.secure}"
        self._csrf_cookie_tail = tail.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _RequestHeaders(scope)
        if not self._host_ok(scope, request.hosts):
            foreign = UsageError(ErrorCode.BAD_REQUEST)
            answer = self.on_error(Request(scope, receive), foreign)
            await answer(scope, receive, self._decorated(scope, send, None, cookies=False))
            return
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        scope[_CLIENT_KEY] = forwarded_client(peer, request.forwarded_for, self.trusted)
        presented_cookie = request.csrf_cookie(self._csrf_cookie, self.keys)
        token = presented_cookie or new_csrf_token(self.keys)
        scope[_SCOPE_KEY] = token
        send = self._decorated(scope, send, None if presented_cookie else token)

        body = await _read_body(scope, receive, request.content_length)
        if body is _Body.DISCONNECTED:
            return
        refusal: SwregError | None = None
        if body is _Body.TOO_LARGE:
            refusal, body = RefusedError(ErrorCode.REQUEST_TOO_LARGE), b""
        elif (
            scope["method"] in UNSAFE_METHODS
            and not _csrf_exempt(scope, request.authorization)
            and not await _csrf_ok(scope, body, presented_cookie, request)
        ):
            refusal = RefusedError(ErrorCode.CSRF_FAILED)
        elif (problem := _unreadable(scope, body, request.content_type)) is not None:
            refusal = RefusedError(ErrorCode.INVALID_VALUE, detail=problem)
        replay = _replay(body, receive)
        if refusal is not None:
            await self.on_error(Request(scope, replay), refusal)(scope, replay, send)
            return
        await self.app(scope, replay, send)

    def _host_ok(self, scope: Scope, hosts: list[str]) -> bool:
        """One ``Host`` header naming the portal (:func:`allowed_hosts`), or an exempt path."""
        if scope.get("path") in HOST_CHECK_EXEMPT:
            return True
        return len(hosts) == 1 and host_allowed(hosts[0], self.hosts)

    def _decorated(
        self, scope: Scope, send: Send, new_token: str | None, *, cookies: bool = True
    ) -> Send:
        """``send`` adding the security headers and, unless ``cookies`` is false, the cookies:
        the CSRF cookie holding ``new_token`` (None: the request's own cookie stays) and the
        ``lang`` cookie."""
        language = query_language(scope) if cookies and scope.get("query_string") else None
        static = str(scope.get("path", "")).startswith("/static/")
        extra: list[tuple[bytes, bytes]] = []
        if new_token is not None:
            csrf = self._csrf_cookie_head + new_token.encode("ascii") + self._csrf_cookie_tail
            extra.append((b"set-cookie", csrf))
        if language is not None:
            cookie = f"{LANG_COOKIE}={language}; Path=/; Max-Age=31536000; SameSite=Lax"
            extra.append((b"set-cookie", (cookie + self.secure).encode("latin-1")))
        security = self._raw_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in security if item[0] not in present)
                if not static and b"cache-control" not in present:
                    headers.append(_NO_STORE)
                headers.extend(extra)
                message["headers"] = headers
            await send(message)

        return send_with_headers


# -- helpers -------------------------------------------------------------------------------

_CSRF_HEADER_RAW: Final = CSRF_HEADER.encode("ascii")
_NO_STORE: Final = (b"cache-control", b"no-store")


class _RequestHeaders:
    """The request headers the middleware reads, found in one pass over the raw list. Like
    :class:`starlette.datastructures.Headers`: the first of a repeated header counts, except
    ``Cookie``, whose headers are all read (as :attr:`starlette.requests.Request.cookies`),
    ``Host`` (all kept: more than one is refused) and ``X-Forwarded-For`` (all, in order)."""

    __slots__ = (
        "authorization",
        "content_length",
        "content_type",
        "cookies",
        "csrf_header",
        "forwarded_for",
        "hosts",
    )

    def __init__(self, scope: Scope) -> None:
        self.authorization: str | None = None
        self.content_length: str | None = None
        self.content_type: str | None = None
        self.csrf_header: str | None = None
        self.cookies: list[str] = []
        self.hosts: list[str] = []
        self.forwarded_for: list[str] = []
        for name, value in scope["headers"]:
            if name == b"cookie":  # ASGI servers lower-case header names
                self.cookies.append(value.decode("latin-1"))
            elif name == b"host":
                self.hosts.append(value.decode("latin-1"))
            elif name == b"x-forwarded-for":
                self.forwarded_for.append(value.decode("latin-1"))
            elif name == b"content-length":
                if self.content_length is None:
                    self.content_length = value.decode("latin-1")
            elif name == b"content-type":
                if self.content_type is None:
                    self.content_type = value.decode("latin-1")
            elif name == _CSRF_HEADER_RAW:
                if self.csrf_header is None:
                    self.csrf_header = value.decode("latin-1")
            elif name == b"authorization" and self.authorization is None:
                self.authorization = value.decode("latin-1")

    def csrf_cookie(self, name: str, keys: IdentifierHasher) -> str | None:
        """The CSRF cookie ``name`` when it holds a token this server issued, else None."""
        value: str | None = None
        for header in self.cookies:
            value = cookie_parser(header).get(name, value)
        return value if value is not None and issued_csrf_token(keys, value) else None


class _Body(Enum):
    """What :func:`_read_body` returns instead of a body."""

    TOO_LARGE = "too_large"
    DISCONNECTED = "disconnected"


async def _read_body(scope: Scope, receive: Receive, declared: str | None) -> bytes | _Body:
    """The whole request body, or why there is none to hand on (``declared``: the
    ``Content-Length`` header)."""
    limit = body_limit(scope)
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        return _Body.TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _Body.DISCONNECTED
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _Body.TOO_LARGE
        if not message.get("more_body", False):
            return b"".join(chunks) + chunk if chunks else chunk
        chunks.append(chunk)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out the buffered body once, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {
                "type": "http.request",
                "body": body,
                "more_body": False,
            }
        return await receive()

    return replay


def _csrf_exempt(scope: Scope, authorization: str | None) -> bool:
    """A bearer-authenticated request to a path of :data:`CSRF_EXEMPT_PREFIXES`."""
    path = str(scope.get("path", ""))
    return path.startswith(CSRF_EXEMPT_PREFIXES) and (authorization or "")[:7].lower() == "bearer "


async def _csrf_ok(scope: Scope, body: bytes, cookie: str | None, request: _RequestHeaders) -> bool:
    """The token presented in the header (or form field) is the cookie's, which is issued."""
    if cookie is None:  # no cookie, or one holding a value this server did not issue
        return False
    presented = request.csrf_header or await _form_token(scope, body, request.content_type)
    if not _TOKEN.fullmatch(presented):  # never a token: and only ASCII is compared below
        return False
    return secrets.compare_digest(presented.encode("ascii"), cookie.encode("ascii"))


async def _form_token(scope: Scope, body: bytes, content_type: str | None) -> str:
    """The ``csrf`` field of a form body (urlencoded or multipart), or ''."""
    if not (content_type or "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        return ""
    request = Request(scope, _replay(body, _no_more))
    try:
        async with request.form() as form:
            value = form.get(CSRF_FIELD)
            return value if isinstance(value, str) else ""
    except Exception:  # a malformed form carries no token
        return ""


async def _no_more() -> Message:
    return {"type": "http.disconnect"}


_NUL: Final = "a NUL character"


def _unreadable(scope: Scope, body: bytes, content_type_header: str | None) -> str | None:
    """Why no route can safely read this request (see the module docstring, 5.), or None."""
    if "\x00" in str(scope.get("path", "")) or b"%00" in scope.get("query_string", b""):
        return _NUL
    if not body:
        return None
    content_type, options = parse_options_header(content_type_header)
    if content_type == b"multipart/form-data":
        charset = options.get(b"charset")
        if charset is not None and _codec(charset) != "utf-8":
            return "multipart forms are read as UTF-8 only"
        return None
    if content_type == b"application/x-www-form-urlencoded":
        return _NUL if b"%00" in body else None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "JSON must be UTF-8"
    return json_problem(body, MAX_JSON_DEPTH)


def _codec(charset: bytes) -> str | None:
    try:
        return codecs.lookup(charset.decode("latin-1")).name
    except LookupError:
        return None


_JSON_STRUCTURE: Final = re.compile(rb'[\[\]{}"]')
_JSON_STRING_END: Final = re.compile(rb'["\\]')


def json_problem(body: bytes, max_depth: int) -> str | None:
    """Why ``body``, read as JSON, is refused unread: arrays and objects nested deeper than
    ``max_depth``, or a string holding NUL (``\\u0000``); None when neither.

    One linear scan of UTF-8 (or ASCII-compatible) bytes; it does not validate (the route's
    parser does). Most bodies skip the scan: without the bytes ``\\u0000`` no string can hold
    the escape, and with no more ``[`` and ``{`` than ``max_depth`` (inside strings or not)
    nothing can nest deeper.
    """
    if b"\\u0000" not in body and body.count(b"[") + body.count(b"{") <= max_depth:
        return None
    depth = 0
    position = 0
    while (found := _JSON_STRUCTURE.search(body, position)) is not None:
        position = found.end()
        token = found.group()
        if token == b'"':
            position = _string_end(body, position)
            if position < 0:
                return _NUL
        elif token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels"
        else:
            depth = max(depth - 1, 0)
    return None


def _string_end(body: bytes, position: int) -> int:
    """Where the JSON string whose content starts at ``position`` ends (past its quote); -1
    when it escapes a NUL."""
    while (found := _JSON_STRING_END.search(body, position)) is not None:
        if found.group() == b'"':
            return found.end()
        if body.startswith(b"u0000", found.end()):
            return -1
        position = found.end() + 1  # a backslash: skip the character it escapes
    return len(body)


def _origin_of(url: str) -> str | None:
    """``scheme://host:port`` of a URL, when it is a well-formed ws/wss/http/https one."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("ws", "wss", "http", "https") or not _HOST.fullmatch(parts.netloc):
        return None
    return f"{parts.scheme}://{parts.netloc}"


__all__ = [
    "CSRF_COOKIE",
    "CSRF_HOST_COOKIE",
    "HOST_CHECK_EXEMPT",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "SESSION_COOKIE",
    "SESSION_HOST_COOKIE",
    "PortalMiddleware",
    "allowed_hosts",
    "clear_officer_cookie",
    "clear_session_cookie",
    "client_address",
    "content_security_policy",
    "csrf_cookie_name",
    "csrf_token",
    "forwarded_client",
    "host_allowed",
    "issued_csrf_token",
    "json_problem",
    "new_csrf_token",
    "officer_cookie_name",
    "rate_limit_subject",
    "secure_cookies",
    "session_cookie_name",
    "set_officer_cookie",
    "set_session_cookie",
]
