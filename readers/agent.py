"""The local card agent (``swreg agent``): a WebSocket server on loopback for the wizard page.

DESIGN.md §7 calls it what the seed calls the 「WebSocket 元件」 (DOMAIN.md §4.5): the page in the
browser cannot reach a smart card, so it asks this agent, which runs on the user's machine, to
read the card's certificate and to sign the challenge of the card check (DESIGN.md §4). The
agent signs what the page gives it; the server issued that challenge and checks the signature.

Security model
==============

* It listens on a loopback address only (``127.0.0.1``, ``::1`` or ``localhost``); any other
  host is refused when the :class:`AgentConfig` is made.
* It answers only pages whose ``Origin`` is in :attr:`AgentConfig.allowed_origins` (exact match
  of ``scheme://host[:port]``), in a request whose ``Host`` names a loopback address. Other
  origins, a missing ``Origin`` header, repeated ``Origin`` headers and any other ``Host`` are
  refused at the handshake with a bare HTTP 403 (DESIGN.md §7): the status line and
  ``Content-Length: 0``, no body, no ``Server`` header; the reason goes to the agent's log,
  never to the asker, who learns nothing (not the allowed origins). This is what stops other
  web sites (and DNS rebinding) from driving the card; a program running locally can send any
  ``Origin``, but such a program can reach the card directly anyway.
* Only the card schemes in :attr:`AgentConfig.card_schemes` may be opened (``pcsc`` by
  default), so a page cannot make the agent open ``virtual:`` files by path unless asked to.
* PKCS#11 tokens (``pkcs11:`` URIs, :mod:`readers.pkcs11`) are offered only from the modules of
  :attr:`AgentConfig.pkcs11_modules` (``swreg agent --pkcs11-module PATH``): loading a module
  runs its code, so the page never chooses one. A URI whose ``module-path`` is not one of them,
  exactly, is refused with ``invalid_value`` (field ``card``) before anything is loaded; a URI
  without ``module-path`` searches the agent's modules only (never ``SWREG_PKCS11_MODULES``).
* The PIN is handed to :meth:`~readers.Card.verify_pin` and nowhere else: it is never logged,
  echoed, stored or put in an error, and references to it are dropped after use (Python cannot
  wipe a string; this is best effort). Message bodies are never logged: the agent logs op names
  and outcome codes on ``logging.getLogger("swreg.agent")``, and the WebSocket library's own
  logger (``swreg.agent.transport``) never logs frames, whatever the log level.

Protocol (version 1)
====================

The page opens ``ws://127.0.0.1:61234/`` (any path) and sends JSON **text** messages, one
request each; the agent answers every request with one JSON text message, in order::

    request:  {"id": <any JSON value>, "op": "<op>", ...arguments}
    success:  {"id": <echoed>, "ok": true, ...results}
    failure:  {"id": <echoed>, "ok": false,
               "error": {"code": "<stable code>", "message": "<zh-TW>", "message_en": "<en>",
                         "field": "<argument concerned, when there is one>", ...details}}

``id`` is echoed unchanged (``null`` when absent, or when the message could not be read as a
JSON object). ``code`` is one of swreg's stable error codes (DESIGN.md §8); details are
machine-readable extras such as ``tries_left``. Binary data travels as standard base64.

``hello``
    ``{"id": 1, "op": "hello"}`` → ``{"id": 1, "ok": true, "agent": "swreg", "version": 1,
    "ops": ["hello", "list_readers", "read_certificate", "sign"]}``

``list_readers``
    → ``{"readers": [{"name": "Virtual PCD 00 00", "card_present": true, "profile": "piv",
    "bridge": "pcsc", "token": null, "spec": null}, ...]}`` (``profile`` is ``null`` when no card
    profile was recognised): the PC/SC readers, then each slot of the agent's PKCS#11 modules
    with ``"bridge": "pkcs11"``, the token's label and the ``spec`` that opens it.

``read_certificate``
    ``{"op": "read_certificate", "card": "pcsc:0"}`` → ``{"certificate": "<b64 DER>",
    "chain": ["<b64 DER>", ...]}``. ``card`` is a card spec as ``swreg --card`` takes it:
    ``pcsc:NAME`` (``pcsc:Virtual PCD 00 00``), ``pcsc:INDEX`` (``pcsc:0``), a ``pkcs11:`` URI
    of a token of the agent's modules (as ``list_readers`` gives it) or, when enabled,
    ``virtual:FILE.p12``. No PIN is needed where the card hands out certificates freely (a
    ``virtual:`` card needs its PIN first and answers ``card_error``; use ``sign``).

``sign``
    ``{"op": "sign", "card": "pcsc:0", "pin": "246810", "data": "<b64, 1..4096 bytes>"}`` →
    ``{"certificate": "<b64 DER>", "chain": [...], "signature": "<b64>"}``. In ONE card
    session (open → verify PIN → read certificate and chain → sign → close) the card hashes
    ``data`` with SHA-256 and signs it: RSA PKCS#1 v1.5, or ECDSA as a DER signature. For the
    card check, ``data`` is ``SHA-256(origin) ‖ SHA-256(registration id) ‖ SHA-256(nonce)``
    (:func:`engine.challenge_payload`) with the challenge the server issued.

Errors a page should expect: ``invalid_value`` (malformed JSON, a binary message, not an
object, unknown ``op``, a missing or malformed argument, a message larger than
:attr:`AgentConfig.max_message_bytes`, ``data`` larger than 4 KiB, a card scheme not enabled, a
PKCS#11 module not enabled);
``pin_incorrect`` (with ``tries_left``, ``null`` when the card has no retry counter);
``card_locked``; ``card_error``; ``no_reader``; ``no_card``; ``usage`` (a malformed card
spec). After any of them the connection stays open and usable. A message larger than
:data:`TRANSPORT_SIZE_FACTOR` × ``max_message_bytes`` is not read at all: the WebSocket layer
closes the connection with code 1009 (message too big).

Card work is blocking (pyscard), so it runs in a worker thread, one operation at a time per card
spec: requests for the same spec wait for each other, across connections. All ``pkcs11:`` work
shares one turn, whatever the URI (two URIs can name one token, and PKCS#11 login is per
token). Requests on one connection are answered in order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine import CardError, ErrorCode, SwregError, UsageError

from . import Card, ReaderInfo, open_card, with_tokens

__all__ = [
    "DEFAULT_PORT",
    "MAX_SIGN_DATA",
    "OPS",
    "PROTOCOL_VERSION",
    "TRANSPORT_SIZE_FACTOR",
    "AgentConfig",
    "run_agent",
    "serve_agent",
]

PROTOCOL_VERSION: Final = 1
OPS: Final = ("hello", "list_readers", "read_certificate", "sign")
DEFAULT_PORT: Final = 61234
MAX_SIGN_DATA: Final = 4096
CHALLENGE_PAYLOAD_BYTES: Final = 96
"""The most bytes ``sign`` accepts in ``data`` (a card-check payload is 96)."""
TRANSPORT_SIZE_FACTOR: Final = 4
"""The WebSocket layer's ``max_size`` is this many times ``max_message_bytes``: messages in
between are read and answered with ``invalid_value``; larger ones close the connection (1009)."""

PKCS11_SCHEME: Final = "pkcs11"
MAX_SPEC_LENGTH: Final = 1024
MAX_PIN_LENGTH: Final = 64
LOOPBACK_NAMES: Final = frozenset({"localhost"})

logger = logging.getLogger("swreg.agent")

_T = TypeVar("_T")


# -- configuration -----------------------------------------------------------------------------


def _pcsc_readers() -> list[ReaderInfo]:
    """The PC/SC readers (imports :mod:`readers.pcsc`, and pyscard, on first use)."""
    from . import pcsc

    return pcsc.list_readers()


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """How the agent listens and whom it answers; checked when made (``UsageError``).

    ``card_opener`` and ``reader_lister`` are seams (tests pass ``virtual:`` cards or fixed
    readers); ``reader_lister`` lists the PC/SC readers. ``card_schemes`` are the card spec
    schemes a page may open: ``pcsc`` by default; add ``virtual`` for demos and tests with
    PKCS#12 files. ``pkcs11_modules``: absolute paths of the PKCS#11 modules whose tokens are
    offered (and listed); when not empty, ``pkcs11:`` specs are opened with these modules only.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allowed_origins: frozenset[str]
    max_message_bytes: int = 64 * 1024
    card_opener: Callable[[str], Card] = open_card
    reader_lister: Callable[[], list[ReaderInfo]] = _pcsc_readers
    card_schemes: frozenset[str] = field(default_factory=lambda: frozenset({"pcsc"}))
    pkcs11_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_host(self.host)
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise UsageError(detail=f"the agent port must be an integer, not {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise UsageError(detail=f"the agent port must be 0..65535, not {self.port}")
        origins = _string_set(self.allowed_origins, "allowed_origins")
        for origin in origins:
            _check_origin(origin)
        object.__setattr__(self, "allowed_origins", origins)
        schemes = _string_set(self.card_schemes, "card_schemes")
        modules = self.pkcs11_modules
        if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
            raise UsageError(detail=f"pkcs11_modules must be a sequence of paths, not {modules!r}")
        for module in modules:
            if not module or "\0" in module or not os.path.isabs(module):
                raise UsageError(
                    detail=f"a PKCS#11 module is named by its absolute path, not {module!r}"
                )
            if not os.path.isfile(module):
                raise UsageError(detail=f"no PKCS#11 module at {module}; install its card software")
        modules = tuple(dict.fromkeys(modules))
        object.__setattr__(self, "pkcs11_modules", modules)
        if modules:
            schemes |= {PKCS11_SCHEME}
        elif PKCS11_SCHEME in schemes:
            raise UsageError(detail="pkcs11 cards need the modules to load (pkcs11_modules)")
        object.__setattr__(self, "card_schemes", schemes)
        size = self.max_message_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 1024:
            raise UsageError(detail=f"max_message_bytes must be an integer ≥ 1024, not {size!r}")


def _check_host(host: str) -> None:
    """Refuse anything but a loopback address: the agent must not be reachable from elsewhere."""
    if isinstance(host, str) and host in LOOPBACK_NAMES:
        return
    try:
        loopback = isinstance(host, str) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(
            detail=(
                f"the card agent listens on loopback only (127.0.0.1, ::1 or localhost), "
                f"not on {host!r}"
            )
        )


def _string_set(values: Any, name: str) -> frozenset[str]:
    try:
        result = frozenset(values)
    except TypeError:
        result = None
    if isinstance(values, str) or result is None or not all(isinstance(v, str) for v in result):
        raise UsageError(detail=f"{name} must be a set of strings, not {values!r}")
    if not result:
        raise UsageError(detail=f"{name} must name at least one value")
    return result


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _check_origin(origin: str) -> None:
    """An allowed origin must be written as browsers send it: ``scheme://host[:port]``."""
    form = (
        "write origins as browsers send them, e.g. https://swreg.example or http://localhost:8000"
    )
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError as exc:
        raise UsageError(detail=f"allowed origin {origin!r} is malformed; {form}") from exc
    exact = f"{parts.scheme}://{parts.netloc}"
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or "@" in parts.netloc
        or origin != exact
        or origin != origin.lower()
    ):
        raise UsageError(detail=f"allowed origin {origin!r} is not scheme://host[:port]; {form}")
    if port == _DEFAULT_PORTS[parts.scheme]:
        raise UsageError(
            detail=f"allowed origin {origin!r} names the default port, which browsers omit; {form}"
        )


# -- the server --------------------------------------------------------------------------------


async def serve_agent(
    config: AgentConfig,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the agent on ``config.host:config.port`` until ``stop`` is set (forever if ``None``).

    ``ready`` is set once the socket listens. When ``stop`` is set, open connections are closed
    (code 1001) and the function returns. Raises ``UsageError`` when the port cannot be bound
    (for example another agent already runs).
    """
    agent = _Agent(config)
    try:
        server = await serve(
            agent.handle,
            config.host,
            config.port,
            process_request=agent.check_origin,
            max_size=config.max_message_bytes * TRANSPORT_SIZE_FACTOR,
            compression=None,
            server_header=None,  # no software or version named to whoever connects
            logger=_TRANSPORT_LOGGER,
        )
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(
            detail=(
                f"the card agent cannot listen on {config.host}:{config.port}: {reason} "
                "(is another agent running? choose another port)"
            )
        ) from exc
    try:
        where = ", ".join(sorted({_address(sock.getsockname()) for sock in server.sockets}))
        logger.info("listening on %s for %s", where, ", ".join(sorted(config.allowed_origins)))
        if ready is not None:
            ready.set()
        if stop is None:
            await server.serve_forever()
        else:
            await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        logger.info("stopped")


def run_agent(config: AgentConfig) -> None:
    """Run :func:`serve_agent` in a new event loop until SIGINT or SIGTERM (the CLI's entry)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Windows, or not the main thread: Ctrl-C raises KeyboardInterrupt instead.
            with suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        await serve_agent(config, stop=stop)

    asyncio.run(main())


class _QuietTransport(logging.LoggerAdapter[logging.Logger]):
    """The WebSocket library's logger, with DEBUG switched off for good.

    At DEBUG the library logs every frame, which would put request bodies (and a PIN) in the
    log; it decides from ``isEnabledFor(DEBUG)``, so this adapter always answers no.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_TRANSPORT_LOGGER: Final = _QuietTransport(logging.getLogger("swreg.agent.transport"), {})


# -- one agent ---------------------------------------------------------------------------------


class _BadRequest(Exception):
    """A request the agent cannot act on; answered with ``invalid_value``."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.error = SwregError(ErrorCode.INVALID_VALUE, field=field, detail=detail)


class _Pin:
    """Holds the PIN until the card session takes it; never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value: str | None = value

    def take(self) -> str:
        value, self._value = self._value, None
        if value is None:
            raise CardError(ErrorCode.CARD_ERROR, detail="the PIN was already used")
        return value

    def __repr__(self) -> str:
        return "<PIN hidden>"


class _CardLocks:
    """One lock per card spec, held from the request until the worker thread is really done.

    A cancelled request (the connection went away) does not release the lock early: the card
    work keeps running in its thread, and the next request for the card waits for it.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    async def run(self, spec: str, work: Callable[[], _T]) -> _T:
        lock = self._locks.setdefault(spec, asyncio.Lock())
        self._users[spec] = self._users.get(spec, 0) + 1
        try:
            await lock.acquire()
        except BaseException:
            self._leave(spec)
            raise
        try:
            task = asyncio.ensure_future(asyncio.to_thread(work))
        except BaseException:
            self._release(spec, lock)
            raise
        task.add_done_callback(lambda done: self._finished(spec, lock, done))
        return await asyncio.shield(task)

    def _finished(self, spec: str, lock: asyncio.Lock, done: asyncio.Future[_T]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved here too, so an abandoned request warns nobody
        self._release(spec, lock)

    def _release(self, spec: str, lock: asyncio.Lock) -> None:
        lock.release()
        self._leave(spec)

    def _leave(self, spec: str) -> None:
        self._users[spec] -= 1
        if not self._users[spec]:
            del self._users[spec]
            del self._locks[spec]


class _Agent:
    """The handshake check and the request handler of one running agent."""

    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._locks = _CardLocks()

    # -- handshake ---------------------------------------------------------------------------

    def check_origin(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the handshake with a bare 403 (:func:`_forbidden`) unless the request has one
        ``Host`` naming a loopback address and one ``Origin``, an allowed one. Why is logged."""
        hosts = request.headers.get_all("Host")
        origins = request.headers.get_all("Origin")
        if len(hosts) != 1 or not _loopback_host(hosts[0]):
            shown = _shown(", ".join(hosts)) if hosts else "(none)"
            logger.warning("refused a handshake for host %s", shown)
        elif len(origins) == 1 and origins[0] in self._config.allowed_origins:
            logger.debug("connection from %s", origins[0])
            return None
        elif not origins:
            logger.warning("refused a handshake without an Origin header")
        elif len(origins) > 1:
            logger.warning("refused a handshake with several Origin headers")
        else:
            logger.warning("refused a handshake from origin %s", _shown(origins[0]))
        return _forbidden()

    # -- messages ----------------------------------------------------------------------------

    async def handle(self, connection: ServerConnection) -> None:
        """Answer the connection's requests one by one until it closes."""
        try:
            origin = connection.request.headers.get("Origin", "") if connection.request else ""
            async for message in connection:
                reply = await self._answer(message, origin)
                del message  # it may hold a PIN
                await connection.send(reply)
        except ConnectionClosed:
            pass

    async def _answer(self, message: str | bytes, origin: str) -> str:
        request_id: Any = None
        op = "?"
        try:
            request = self._parse(message)
            del message
            request_id = request.get("id")
            raw_op = request.get("op")
            op = raw_op if isinstance(raw_op, str) and raw_op in OPS else "?"
            result = await self._dispatch(op, raw_op, request, origin)
        except _BadRequest as exc:
            return self._failure(request_id, op, exc.error)
        except SwregError as exc:
            return self._failure(request_id, op, exc)
        except Exception as exc:  # a bug here must not take the connection down
            logger.error("op %s failed: internal error %s", op, type(exc).__name__)
            error = CardError(ErrorCode.CARD_ERROR, detail="internal error in the swreg agent")
            return self._failure(request_id, op, error)
        logger.info("op %s: ok", op)
        return _dumps({"id": request_id, "ok": True, **result})

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        limit = self._config.max_message_bytes
        if isinstance(message, bytes):
            raise _BadRequest("send requests as JSON text messages, not binary ones")
        if len(message) > limit or len(message.encode("utf-8")) > limit:
            raise _BadRequest(f"the message is larger than {limit} bytes")
        try:
            request = json.loads(message, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise _BadRequest("the message is not valid JSON") from exc
        if not isinstance(request, dict):
            raise _BadRequest('a request is a JSON object: {"id": ..., "op": ...}')
        return request

    async def _dispatch(
        self, op: str, raw_op: Any, request: dict[str, Any], origin: str
    ) -> dict[str, Any]:
        # Take the PIN out of the request first, whatever the op, so nothing else can see it.
        pin = request.pop("pin", None)
        if op == "sign":
            spec = self._card_spec(request)
            data = _sign_data(request, origin)
            if not isinstance(pin, str) or not 1 <= len(pin) <= MAX_PIN_LENGTH:
                raise _BadRequest(
                    f"sign needs the card's PIN as a string of 1..{MAX_PIN_LENGTH} characters",
                    field="pin",
                )
            secret = _Pin(pin)
            del pin
            opener = self._opener(spec)
            return await self._locks.run(
                self._turn(spec), lambda: _sign(opener, spec, secret, data)
            )
        del pin
        if op == "hello":
            return {"agent": "swreg", "version": PROTOCOL_VERSION, "ops": list(OPS)}
        if op == "list_readers":
            lister = self._config.reader_lister
            modules = self._config.pkcs11_modules
            if not modules:
                return await asyncio.to_thread(_list_readers, lister)
            return await self._locks.run(
                f"{PKCS11_SCHEME}:", lambda: _list_readers(lambda: with_tokens(lister, modules))
            )
        if op == "read_certificate":
            spec = self._card_spec(request)
            opener = self._opener(spec)
            return await self._locks.run(self._turn(spec), lambda: _read_certificate(opener, spec))
        if raw_op is None:
            raise _BadRequest(f"the request names no op; ops: {', '.join(OPS)}", field="op")
        raise _BadRequest(f"unknown op; ops: {', '.join(OPS)}", field="op")

    def _card_spec(self, request: Mapping[str, Any]) -> str:
        spec = request.get("card")
        if not isinstance(spec, str) or not spec or len(spec) > MAX_SPEC_LENGTH or "\0" in spec:
            raise _BadRequest(
                "name the card as a spec string, e.g. pcsc:0 or pcsc:READER NAME", field="card"
            )
        scheme, _, target = spec.partition(":")
        if scheme not in self._config.card_schemes:
            enabled = ", ".join(sorted(self._config.card_schemes))
            raise _BadRequest(
                f"card scheme {_shown(scheme)!r} is not enabled in this agent; enabled: {enabled}",
                field="card",
            )
        if scheme == PKCS11_SCHEME:
            from . import pkcs11

            module = pkcs11.parse_uri(target).module_path  # UsageError when malformed
            if module is not None and module not in self._config.pkcs11_modules:
                raise _BadRequest(
                    f"PKCS#11 module {_shown(module)!r} is not enabled in this agent; "
                    "the agent's user enables modules with swreg agent --pkcs11-module PATH",
                    field="card",
                )
        return spec

    def _opener(self, spec: str) -> Callable[[str], Card]:
        """How to open ``spec``: PKCS#11 URIs with the agent's modules only."""
        modules = self._config.pkcs11_modules
        if spec.partition(":")[0] != PKCS11_SCHEME or self._config.card_opener is not open_card:
            return self._config.card_opener

        def open_token(spec: str) -> Card:
            from . import pkcs11

            return pkcs11.open_pkcs11(spec.partition(":")[2], allowed_modules=modules)

        return open_token

    @staticmethod
    def _turn(spec: str) -> str:
        """The lock a card operation waits for: its spec; one for all PKCS#11 work."""
        return f"{PKCS11_SCHEME}:" if spec.partition(":")[0] == PKCS11_SCHEME else spec

    @staticmethod
    def _failure(request_id: Any, op: str, error: SwregError) -> str:
        logger.info("op %s: %s", op, error.code)
        body: dict[str, Any] = {
            **error.details,
            "code": str(error.code),
            "message": error.message("zh-TW"),
            "message_en": error.message("en"),
        }
        if error.detail:
            body["detail"] = error.detail
        if error.field is not None:
            body["field"] = error.field
        return _dumps({"id": request_id, "ok": False, "error": body})


# -- card work (in a worker thread) ------------------------------------------------------------


def _read_certificate(opener: Callable[[str], Card], spec: str) -> dict[str, Any]:
    """Open the card, read its signing certificate and chain, close it."""
    with _card_errors(), opener(spec) as card:
        certificate = card.read_certificate()
        chain = card.read_chain()
    return {"certificate": _b64(certificate), "chain": [_b64(c) for c in chain]}


def _sign(opener: Callable[[str], Card], spec: str, secret: _Pin, data: bytes) -> dict[str, Any]:
    """One card session: open → verify PIN → read certificate and chain → sign → close."""
    with _card_errors(), opener(spec) as card:
        pin = secret.take()
        try:
            card.verify_pin(pin)
        finally:
            del pin
        certificate = card.read_certificate()
        chain = card.read_chain()
        signature = card.sign(data)
    return {
        "certificate": _b64(certificate),
        "chain": [_b64(c) for c in chain],
        "signature": _b64(signature),
    }


@contextmanager
def _card_errors() -> Iterator[None]:
    """Translate anything but a ``SwregError`` raised by card code into ``card_error``.

    Only the exception's type is kept: its text might repeat what the card was sent.
    """
    try:
        yield
    except SwregError:
        raise
    except Exception as exc:
        name = type(exc).__name__
        logger.warning("card operation failed: %s", name)
        raise CardError(
            ErrorCode.CARD_ERROR, detail=f"the card operation failed ({name})"
        ) from None


def _list_readers(lister: Callable[[], list[ReaderInfo]]) -> dict[str, Any]:
    with _card_errors():
        readers = lister()
    return {"readers": [asdict(reader) for reader in readers]}


# -- helpers -----------------------------------------------------------------------------------


def _sign_data(request: Mapping[str, Any], origin: str) -> bytes:
    """The bytes to sign: only a swreg challenge payload bound to the asking page's origin.

    A card check payload is ``SHA-256(origin) ‖ SHA-256(scope) ‖ SHA-256(nonce)`` (96 bytes);
    refusing anything else keeps a script on an allowed page from having the card sign, say, a
    Turnkey message, and a page from relaying another origin's challenge.
    """
    text = request.get("data")
    if not isinstance(text, str):
        raise _BadRequest("sign needs data: the bytes to sign, base64", field="data")
    if len(text) > (MAX_SIGN_DATA + 2) // 3 * 4:
        raise _BadRequest(f"data is larger than {MAX_SIGN_DATA} bytes", field="data")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadRequest("data is not valid base64", field="data") from exc
    if not data:
        raise _BadRequest("data is empty", field="data")
    if len(data) > MAX_SIGN_DATA:
        raise _BadRequest(f"data is larger than {MAX_SIGN_DATA} bytes", field="data")
    if (
        len(data) != CHALLENGE_PAYLOAD_BYTES
        or data[:32] != hashlib.sha256(origin.encode()).digest()
    ):
        raise _BadRequest("the agent signs only swreg challenges bound to this page", field="data")
    return data


def _forbidden() -> Response:
    """A bare 403: the status line and ``Content-Length: 0``; nothing else is said."""
    status = HTTPStatus.FORBIDDEN
    return Response(status.value, status.phrase, Headers([("Content-Length", "0")]), b"")


def _loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names a loopback address (any port): what the page's
    ``ws://127.0.0.1:PORT/`` sends; a rebound name (``evil.example:PORT``) is not one."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _address(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _shown(text: str, limit: int = 200) -> str:
    """Text from a client, safe to show in a message: printable and of bounded length."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"
