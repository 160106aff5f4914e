"""The helpers every route module shares (none defines its own copy of these):

- :data:`PortalDep` / :func:`portal_of`: the portal services of the running application;
- :func:`actor`: who a request acts as in the audit log (``api:client=KEY`` / ``web:…``), and
  :func:`client_key`: the client's address as a keyed hash (for audit rows and log lines);
- :func:`session_token` and :func:`card_session`: the visitor's session cookie and live card
  login, and
  :func:`where_from`: where a new session is opened, as its owner sees it on the account page;
- :func:`off_loop` and :func:`limited`: the one way a route leaves the event loop (a blocking
  service call in the thread pool, with the client's rate-limit hit in the same trip);
- :func:`decode_base64`, :func:`required_text`, :func:`signed_challenge` and
  :func:`errors_by_field`: inputs and refusals at the edge.

Besides these, route modules import only public names of three others: the API's common bodies
(``_api``: ``ErrorsOut``, ``OkOut``, ``ChallengeOut``, ``CardIn``), the page renderer (``_pages``:
``render``, ``form_values``, ``FieldView``, ``field_view``) and the registration cookie
(``_registration_secret``); services only through :class:`Portal`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from engine._errors import ErrorCode, Language, RefusedError, SwregError
from engine.services.customs import SignedChallenge
from engine.services.login import SessionView
from engine.web._i18n import Translator, page_language
from engine.web._portal import Limit, Portal
from engine.web._security import client_address, session_cookie_name

_P = ParamSpec("_P")
_T = TypeVar("_T")


def portal_of(request: HTTPConnection) -> Portal:
    """The portal services of the application serving ``request``."""
    found: Portal = request.app.state.portal
    return found


async def _portal_dependency(request: Request) -> Portal:
    return portal_of(request)  # ``async``: FastAPI calls it on the loop, not in the thread pool


PortalDep = Annotated[Portal, Depends(_portal_dependency)]


def translator(request: Request) -> Translator:
    """The words of a page in the language the request asks for."""
    return Translator(page_language(request))


CLIENT_KEY_CHARS = 16
"""Hex characters of a client's keyed hash in audit rows and logs (64 bits)."""


def client_key(connection: HTTPConnection) -> str:
    """The client's address (:func:`~engine.web._security.client_address`) as a keyed hash:
    16 hex characters of an HMAC under the server's identifier key. What audit rows and log
    lines hold instead of the address (DESIGN.md §6): one client, one key; no address in clear."""
    keys = portal_of(connection).identifiers
    return keys.hash("client", client_address(connection))[:CLIENT_KEY_CHARS]


def actor(request: Request, channel: Literal["api", "web"]) -> str:
    """Who the request acts as in the audit log: the channel and the client's keyed hash
    (``api:client=0123456789abcdef``), never the address."""
    return f"{channel}:client={client_key(request)}"


def session_token(connection: HTTPConnection) -> str:
    """The visitor's session cookie (``__Host-swreg_session`` over https, ``swreg_session``
    over plain http), or ``""``."""
    name = session_cookie_name(portal_of(connection).settings)
    return connection.cookies.get(name) or ""


def card_session(portal: Portal, connection: HTTPConnection) -> SessionView | None:
    """The visitor's live card login (its session cookie), if any. It reads the database:
    call it in the thread pool, inside the route's one trip there."""
    token = session_token(connection)
    return portal.logins.session(token) if token else None


_BROWSERS: Sequence[tuple[str, str]] = (
    ("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"), ("Safari/", "Safari"),
)  # fmt: skip
_SYSTEMS: Sequence[tuple[str, str]] = (
    ("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"), ("Windows", "Windows"),
    ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"),
)  # fmt: skip


def where_from(connection: HTTPConnection, channel: str = "") -> str:
    """Where a session is opened, for its owner's list of sessions: the browser and system its
    User-Agent names (or ``channel``, e.g. ``API``, for a client that names none of them) and
    the client's address masked (``203.0.113.*``, ``2001:db8:1:2:*``). No full address and no
    raw User-Agent string is kept."""
    agent = connection.headers.get("user-agent", "")[:512]
    browser = next((name for mark, name in _BROWSERS if mark in agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in agent), None)
    named = [name for name in (browser, system) if name]
    label = " / ".join(named) or channel or "?"
    return f"{label} · {_masked_address(client_address(connection))}"


def _masked_address(address: str) -> str:
    """An IPv4 address without its last byte, an IPv6 one with only its /64 prefix."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "?"
    if ip.version == 4:
        return ".".join([*str(ip).split(".")[:3], "*"])
    return ":".join(ip.exploded.split(":")[:4]) + ":*"


async def off_loop(function: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``function(*args, **kwargs)`` in the thread pool: every blocking service call goes here."""
    return await run_in_threadpool(function, *args, **kwargs)


async def limited(
    portal: Portal,
    rule: Limit,
    request: Request,
    function: Callable[_P, _T],
    /,
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """Call ``function`` with the client's hit against ``rule`` (``rate_limited`` past it),
    in one trip to the thread pool: the hit is counted by ``function``'s own commit, or on its
    own when it commits nothing (a refused form or card still counts; ``Portal.limit``)."""
    client = client_address(request)

    def run() -> _T:
        with portal.limit(rule, client):
            return function(*args, **kwargs)

    return await run_in_threadpool(run)


def decode_base64(text: str, field: str, code: ErrorCode) -> bytes:
    """Strict standard base64; anything else → ``code`` on ``field``."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RefusedError(code, field=field, detail="not base64") from None


MAX_CHALLENGE_ID = 64
"""The longest challenge id accepted (a UUID has 36 characters)."""
MAX_SIGNATURE_TEXT = 4096
"""The longest base64 signature accepted (an RSA-8192 one takes 1,368 characters)."""


def required_text(value: object, field: str) -> str:
    """A request value that must be non-blank text, stripped; else ``field_required``."""
    if not isinstance(value, str) or not value.strip():
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field=field)
    return value.strip()


def signed_challenge(fields: Mapping[str, Any]) -> SignedChallenge | None:
    """A ``.cer``'s proof of possession (``challenge_id`` and base64 ``signature``, from a JSON
    body or form fields), if sent; one without the other is ``field_required`` on the missing
    one."""
    challenge_id, signature = fields.get("challenge_id"), fields.get("signature")
    if not challenge_id and not signature:
        return None
    challenge_id = required_text(challenge_id, "challenge_id")
    if len(challenge_id) > MAX_CHALLENGE_ID:
        raise RefusedError(ErrorCode.FIELD_TOO_LONG, field="challenge_id")
    text = required_text(signature, "signature")
    if len(text) > MAX_SIGNATURE_TEXT:
        raise RefusedError(ErrorCode.FIELD_TOO_LONG, field="signature")
    return SignedChallenge(
        challenge_id, decode_base64(text, "signature", ErrorCode.SIGNATURE_INVALID)
    )


def errors_by_field(
    error: SwregError, language: Language, known: Sequence[str], *, other: str = ""
) -> dict[str, str]:
    """The first message for each known field; those of any other field (or none) under
    ``other`` (a page shows them there)."""
    found: dict[str, str] = {}
    for item in error.errors:
        key = item.field if item.field in known else other
        found.setdefault(key or other, item.message(language))
    return found


__all__ = [
    "MAX_CHALLENGE_ID",
    "MAX_SIGNATURE_TEXT",
    "PortalDep",
    "actor",
    "card_session",
    "client_key",
    "decode_base64",
    "errors_by_field",
    "limited",
    "off_loop",
    "portal_of",
    "required_text",
    "session_token",
    "signed_challenge",
    "translator",
]
