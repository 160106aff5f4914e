"""The local card agent (``readers.agent``) through a real WebSocket client on loopback.

Every test starts a real agent on a free loopback port and talks to it with
``websockets.asyncio.client.connect``; cards are ``virtual:`` PKCS#12 files issued by the test PKI
(or, for the concurrency and failure tests, small fake cards behind the ``card_opener`` seam).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pkcs11 as p11lib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from engine import CardError, ErrorCode, UsageError, challenge_payload
from engine.testing.pki import TestPKI
from engine.testing.ports import free_port
from readers import Card, ReaderInfo
from readers.agent import MAX_SIGN_DATA, OPS, TRANSPORT_SIZE_FACTOR, AgentConfig, serve_agent

from .conftest import PIN as TOKEN_PIN
from .test_pkcs11 import SOFTHSM, Tokens, tokens  # noqa: F401  (tokens: the SoftHSM2 fixture)

ORIGIN = "https://swreg.example"
OTHER_ORIGIN = "http://localhost:8000"
PIN = "Zq7-pin-8841"
"""Distinctive, so finding it anywhere in logs or answers is unambiguous."""
TIMEOUT = 30.0

T = TypeVar("T")


# -- harness -----------------------------------------------------------------------------------


def _config(**overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "port": free_port(),
        "allowed_origins": frozenset({ORIGIN, OTHER_ORIGIN}),
        "card_schemes": frozenset({"virtual"}),
    }
    values.update(overrides)
    return AgentConfig(**values)


def with_agent(config: AgentConfig, body: Callable[[str], Awaitable[T]]) -> T:
    """Start the agent, run ``body(uri)`` against it, stop the agent; return the body's result."""

    async def main() -> T:
        ready, stop = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(serve_agent(config, ready=ready, stop=stop))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            waiter.cancel()
            server.result()  # raises what stopped it
            raise AssertionError("the agent stopped before it was ready")
        try:
            return await asyncio.wait_for(body(f"ws://127.0.0.1:{config.port}/"), TIMEOUT)
        finally:
            stop.set()
            await asyncio.wait_for(server, TIMEOUT)

    return asyncio.run(main())


def client(uri: str, origin: str | None = ORIGIN, **kwargs: Any) -> connect:
    return connect(uri, origin=Origin(origin) if origin is not None else None, **kwargs)


async def call(ws: ClientConnection, request: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """Send one request (a dict is JSON-encoded) and return the decoded answer."""
    await ws.send(json.dumps(request) if isinstance(request, dict) else request)
    answer = await ws.recv()
    assert isinstance(answer, str), "the agent answers with text messages"
    decoded: dict[str, Any] = json.loads(answer)
    return decoded


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def card_spec(tmp_path: Path, pki: TestPKI) -> Callable[..., tuple[str, Any]]:
    """Issue a person card of ``key`` type, write it as a PKCS#12 (password PIN): (spec, card)."""

    def make(key: str = "ec", pin: str = PIN) -> tuple[str, Any]:
        card = pki.issue_person(key=key)  # type: ignore[arg-type]
        path = pki.write_pkcs12(
            card, tmp_path / f"{key}-{card.certificate.serial_number:x}.p12", pin
        )
        return f"virtual:{path}", card

    return make


def verify(certificate_der: bytes, signature: bytes, message: bytes) -> None:
    """Raise unless ``signature`` over ``message`` verifies with the certificate's public key."""
    key = x509.load_der_x509_certificate(certificate_der).public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


# -- hello and readers -------------------------------------------------------------------------


def test_hello_names_the_agent_and_its_ops() -> None:
    async def body(uri: str) -> dict[str, Any]:
        async with client(uri) as ws:
            return await call(ws, {"id": "h-1", "op": "hello"})

    answer = with_agent(_config(), body)
    assert answer == {"id": "h-1", "ok": True, "agent": "swreg", "version": 1, "ops": list(OPS)}


def test_hello_answers_every_allowed_origin() -> None:
    async def body(uri: str) -> bool:
        async with client(uri, origin=OTHER_ORIGIN) as ws:
            return bool((await call(ws, {"id": 1, "op": "hello"}))["ok"])

    assert with_agent(_config(), body)


def test_list_readers_uses_the_injected_lister() -> None:
    readers = [
        ReaderInfo(name="Virtual PCD 00 00", card_present=True, profile="piv"),
        ReaderInfo(name="Virtual PCD 00 01", card_present=False, profile=None),
    ]

    async def body(uri: str) -> dict[str, Any]:
        async with client(uri) as ws:
            return await call(ws, {"id": 7, "op": "list_readers"})

    answer = with_agent(_config(reader_lister=lambda: readers), body)
    assert answer == {
        "id": 7,
        "ok": True,
        "readers": [
            {
                "name": "Virtual PCD 00 00",
                "card_present": True,
                "profile": "piv",
                "bridge": "pcsc",
                "token": None,
                "spec": None,
            },
            {
                "name": "Virtual PCD 00 01",
                "card_present": False,
                "profile": None,
                "bridge": "pcsc",
                "token": None,
                "spec": None,
            },
        ],
    }


def test_list_readers_reports_a_reader_failure_as_card_error() -> None:
    def broken() -> list[ReaderInfo]:
        raise RuntimeError("pcscd said something private")

    async def body(uri: str) -> dict[str, Any]:
        async with client(uri) as ws:
            return await call(ws, {"id": 1, "op": "list_readers"})

    answer = with_agent(_config(reader_lister=broken), body)
    assert answer["ok"] is False
    assert answer["error"]["code"] == "card_error"
    assert "RuntimeError" in answer["error"]["detail"]
    assert "private" not in json.dumps(answer)


# -- read_certificate and sign with virtual cards ----------------------------------------------


def test_read_certificate_before_the_pin_reports_the_cards_error(
    card_spec: Callable[..., tuple[str, Any]],
) -> None:
    spec, _ = card_spec()

    async def body(uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
        async with client(uri) as ws:
            first = await call(ws, {"id": 1, "op": "read_certificate", "card": spec})
            return first, await call(ws, {"id": 2, "op": "hello"})

    answer, after = with_agent(_config(), body)
    assert answer["id"] == 1
    assert answer["ok"] is False
    error = answer["error"]
    assert error["code"] == "card_error"
    assert "PIN not verified" in error["detail"]
    assert error["message"].startswith("IC卡讀取錯誤")
    assert after["ok"] is True


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_sign_with_the_right_pin_signs_the_challenge_payload(
    card_spec: Callable[..., tuple[str, Any]], key: str
) -> None:
    spec, card = card_spec(key)
    payload = challenge_payload(ORIGIN, "reg-0001", os.urandom(32))

    async def body(uri: str) -> dict[str, Any]:
        async with client(uri) as ws:
            request = {"id": [1, "x"], "op": "sign", "card": spec, "pin": PIN, "data": b64(payload)}
            return await call(ws, request)

    answer = with_agent(_config(), body)
    assert answer["ok"] is True, answer
    assert answer["id"] == [1, "x"]
    assert set(answer) == {"id", "ok", "certificate", "chain", "signature"}
    certificate = base64.b64decode(answer["certificate"])
    assert certificate == card.der()
    assert tuple(base64.b64decode(c) for c in answer["chain"]) == card.chain_der()
    verify(certificate, base64.b64decode(answer["signature"]), payload)
    with pytest.raises(Exception):  # noqa: B017 - any verification failure will do
        verify(certificate, base64.b64decode(answer["signature"]), payload + b"x")


def test_sign_with_a_wrong_pin_reports_pin_incorrect_and_the_connection_stays(
    card_spec: Callable[..., tuple[str, Any]],
) -> None:
    spec, _ = card_spec()
    data = b64(challenge_payload(ORIGIN, "reg-2", b"n" * 32))

    async def body(uri: str) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            wrong = {"id": 1, "op": "sign", "card": spec, "pin": "000000", "data": data}
            right = {"id": 2, "op": "sign", "card": spec, "pin": PIN, "data": data}
            return [await call(ws, wrong), await call(ws, right)]

    wrong, right = with_agent(_config(), body)
    assert wrong["ok"] is False
    assert wrong["error"]["code"] == "pin_incorrect"
    assert "tries_left" in wrong["error"]
    assert wrong["error"]["tries_left"] is None  # a file has no retry counter
    assert wrong["error"]["message"] == "PIN碼錯誤"
    assert wrong["error"]["message_en"] == "Incorrect PIN"
    assert right["ok"] is True


def test_an_unopenable_card_is_reported_with_its_code(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.p12"

    async def body(uri: str) -> dict[str, Any]:
        async with client(uri) as ws:
            return await call(ws, {"id": 1, "op": "read_certificate", "card": f"virtual:{missing}"})

    answer = with_agent(_config(), body)
    assert answer["error"]["code"] == "no_card"


def test_a_card_scheme_not_enabled_is_refused(card_spec: Callable[..., tuple[str, Any]]) -> None:
    spec, _ = card_spec()

    async def body(uri: str) -> dict[str, Any]:
        async with client(uri) as ws:
            return await call(ws, {"id": 1, "op": "read_certificate", "card": spec})

    answer = with_agent(_config(card_schemes=frozenset({"pcsc"})), body)
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid_value"
    assert answer["error"]["field"] == "card"
    assert "'virtual' is not enabled" in answer["error"]["detail"]
    assert AgentConfig(allowed_origins=frozenset({ORIGIN})).card_schemes == {"pcsc"}


# -- the handshake -----------------------------------------------------------------------------


def _refusal(config: AgentConfig, **connect_kwargs: Any) -> InvalidStatus:
    async def body(uri: str) -> InvalidStatus:
        with pytest.raises(InvalidStatus) as caught:
            async with client(uri, **connect_kwargs):
                pass
        return caught.value

    return with_agent(config, body)


def assert_bare_403(refused: InvalidStatus) -> None:
    """DESIGN.md §7: the status line and ``Content-Length: 0``; no body, no ``Server``."""
    response = refused.response
    assert response.status_code == 403
    assert response.body == b""
    assert list(response.headers.raw_items()) == [("Content-Length", "0")]


def test_a_foreign_origin_gets_a_bare_403() -> None:
    refused = _refusal(_config(), origin="https://evil.example")
    assert_bare_403(refused)


def handshake_bytes(config: AgentConfig, host: str, origin: str) -> bytes:
    """Everything the agent answers to a raw WebSocket handshake with this Host and Origin."""

    async def body(uri: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
        writer.write(
            f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n".encode()
        )
        answer = await reader.read(65536)
        writer.close()
        return answer

    return with_agent(config, body)


BARE_403 = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"


def test_the_refusal_on_the_wire_is_the_status_line_and_content_length_only() -> None:
    """Raw bytes: nothing names the allowed origins, the software or its version."""
    config = _config()
    answer = handshake_bytes(config, f"127.0.0.1:{config.port}", "https://evil.example")
    assert answer == BARE_403
    for secret in (ORIGIN, OTHER_ORIGIN, "swreg", "allowed", "Server"):
        assert secret.encode() not in answer


@pytest.mark.parametrize(
    "origin",
    [
        "https://swreg.example.evil.example",
        "https://swreg.example:8443",
        "http://swreg.example",
        "https://SWREG.example",
        "null",
    ],
)
def test_near_miss_origins_are_refused(origin: str) -> None:
    assert_bare_403(_refusal(_config(), origin=origin))


def test_a_missing_origin_is_refused() -> None:
    assert_bare_403(_refusal(_config(), origin=None))


def test_several_origin_headers_are_refused() -> None:
    refused = _refusal(_config(), additional_headers=[("Origin", "https://evil.example")])
    assert_bare_403(refused)


@pytest.mark.parametrize(
    ("host", "answered"),
    [
        ("127.0.0.1:{port}", True),
        ("localhost:{port}", True),
        ("[::1]:{port}", True),
        ("evil.example:{port}", False),  # a rebound name
        ("evil.example", False),
        ("192.168.1.10:{port}", False),
        ("127.0.0.1.evil.example:{port}", False),
    ],
)
def test_a_rebound_host_is_refused_even_from_an_allowed_origin(host: str, answered: bool) -> None:
    """DNS rebinding: the page's own name, now resolving to 127.0.0.1, arrives as ``Host``."""
    config = _config()
    answer = handshake_bytes(config, host.format(port=config.port), ORIGIN)
    if answered:
        assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    else:
        assert answer == BARE_403


def test_two_host_headers_are_refused() -> None:
    assert_bare_403(_refusal(_config(), additional_headers=[("Host", "127.0.0.1")]))


def test_the_agent_names_no_software_to_an_allowed_page(card_spec: Any) -> None:
    async def body(uri: str) -> dict[str, Any]:
        async with client(uri) as ws:
            assert ws.response is not None
            assert "Server" not in ws.response.headers
            return await call(ws, {"id": 1, "op": "hello"})

    assert with_agent(_config(), body)["ok"] is True


def test_why_a_handshake_was_refused_goes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="swreg.agent"):
        _refusal(_config(), origin="https://evil.example")
    assert "refused a handshake from origin https://evil.example" in caplog.text


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", "", 2130706433]
)
def test_a_non_loopback_host_is_refused_at_config_time(host: Any) -> None:
    with pytest.raises(UsageError) as caught:
        AgentConfig(host=host, allowed_origins=frozenset({ORIGIN}))
    assert caught.value.code is ErrorCode.USAGE
    assert "loopback only" in str(caught.value.detail)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert AgentConfig(host=host, allowed_origins=frozenset({ORIGIN})).host == host


@pytest.mark.parametrize(
    "origins",
    [
        frozenset(),
        "https://swreg.example",
        frozenset({"https://swreg.example/"}),
        frozenset({"https://swreg.example/wizard"}),
        frozenset({"https://Swreg.example"}),
        frozenset({"https://swreg.example:443"}),
        frozenset({"ftp://swreg.example"}),
        frozenset({"*"}),
        frozenset({"https://user@swreg.example"}),
        frozenset({"https://swreg.example:99999"}),
        None,
        frozenset({1}),
    ],
)
def test_malformed_allowed_origins_are_refused(origins: Any) -> None:
    with pytest.raises(UsageError):
        AgentConfig(allowed_origins=origins)


@pytest.mark.parametrize(
    "overrides",
    [{"port": 70000}, {"port": -1}, {"port": "61234"}, {"max_message_bytes": 10}],
)
def test_malformed_ports_and_limits_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        AgentConfig(allowed_origins=frozenset({ORIGIN}), **overrides)


def test_a_busy_port_is_a_usage_error() -> None:
    config = _config()

    async def body(uri: str) -> None:
        with pytest.raises(UsageError) as caught:
            await serve_agent(config)
        assert "cannot listen on 127.0.0.1" in str(caught.value.detail)

    with_agent(config, body)


# -- malformed requests ------------------------------------------------------------------------


def test_malformed_requests_are_answered_and_the_connection_stays_usable(
    card_spec: Callable[..., tuple[str, Any]],
) -> None:
    spec, _ = card_spec()
    config = _config()
    good_data = b64(challenge_payload(ORIGIN, "reg-1", b"n" * 32))
    too_much = b64(b"x" * (MAX_SIGN_DATA + 1))
    padding_ = " " * config.max_message_bytes
    cases: list[tuple[Any, Any, str | None]] = [
        # (request, expected id, expected field)
        ("{not json", None, None),
        ("[1, 2, 3]", None, None),
        ('{"id": 1, "op": "hello", "x": NaN}', None, None),
        (b'{"id": 1, "op": "hello"}', None, None),
        ('{"id": 1, "op": "hello"}' + padding_, None, None),
        ({"id": 2, "op": "format_card"}, 2, "op"),
        ({"id": 3}, 3, "op"),
        ({"id": 4, "op": "read_certificate"}, 4, "card"),
        ({"id": 5, "op": "read_certificate", "card": 12}, 5, "card"),
        ({"id": 6, "op": "sign", "card": spec, "data": good_data}, 6, "pin"),
        ({"id": 7, "op": "sign", "card": spec, "pin": 246810, "data": good_data}, 7, "pin"),
        ({"id": 8, "op": "sign", "card": spec, "pin": PIN}, 8, "data"),
        ({"id": 9, "op": "sign", "card": spec, "pin": PIN, "data": "!!not base64!!"}, 9, "data"),
        ({"id": 10, "op": "sign", "card": spec, "pin": PIN, "data": ""}, 10, "data"),
        ({"id": 11, "op": "sign", "card": spec, "pin": PIN, "data": too_much}, 11, "data"),
    ]

    async def body(uri: str) -> list[dict[str, Any]]:
        answers = []
        async with client(uri) as ws:
            for request, _, _ in cases:
                answers.append(await call(ws, request))
            answers.append(await call(ws, {"id": "still", "op": "hello"}))
        return answers

    answers = with_agent(config, body)
    for (request, expected_id, expected_field), answer in zip(cases, answers, strict=False):
        shown = str(request)[:80]
        assert answer["ok"] is False, shown
        assert answer["id"] == expected_id, shown
        assert answer["error"]["code"] == "invalid_value", shown
        assert answer["error"]["message"].startswith("輸入值錯誤"), shown
        assert answer["error"]["message_en"].startswith("Invalid value"), shown
        assert answer["error"].get("field") == expected_field, shown
    assert "larger than 65536 bytes" in answers[4]["error"]["detail"]
    assert f"larger than {MAX_SIGN_DATA} bytes" in answers[-2]["error"]["detail"]
    assert answers[-1] == {
        "id": "still",
        "ok": True,
        "agent": "swreg",
        "version": 1,
        "ops": list(OPS),
    }


def test_a_message_beyond_the_transport_limit_closes_the_connection() -> None:
    config = _config()

    async def body(uri: str) -> int | None:
        async with client(uri, max_size=None) as ws:
            await ws.send("x" * (config.max_message_bytes * TRANSPORT_SIZE_FACTOR + 1))
            with pytest.raises(ConnectionClosed) as caught:
                await ws.recv()
            return caught.value.rcvd.code if caught.value.rcvd else None

    assert with_agent(config, body) == 1009


# -- the PIN stays secret ----------------------------------------------------------------------


def test_the_pin_never_appears_in_logs_or_answers(
    card_spec: Callable[..., tuple[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spec, _ = card_spec()
    data = b64(challenge_payload(ORIGIN, "reg-3", b"n" * 32))
    requests: list[dict[str, Any]] = [
        {"id": 1, "op": "sign", "card": spec, "pin": PIN, "data": data},
        {"id": 2, "op": "sign", "card": spec, "pin": PIN + "-wrong", "data": data},
        {"id": 3, "op": "read_certificate", "card": spec, "pin": PIN},
        {"id": 4, "op": "sign", "card": spec, "pin": PIN},
        {"id": 5, "op": "sign", "card": "virtual:/no/such/file.p12", "pin": PIN, "data": data},
        {"id": 6, "op": PIN, "pin": PIN},
    ]

    async def body(uri: str) -> list[str]:
        texts = []
        async with client(uri) as ws:
            for request in requests:
                await ws.send(json.dumps(request))
                answer = await ws.recv()
                assert isinstance(answer, str)
                texts.append(answer)
        return texts

    answers = with_agent(_config(), body)
    assert json.loads(answers[0])["ok"] is True
    assert json.loads(answers[1])["error"]["code"] == "pin_incorrect"
    for answer in answers:
        assert PIN not in answer
    # The test's own client logs the frames it sends at DEBUG; everything else is the agent's.
    agent_records = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    assert agent_records, "the agent logs op names and outcomes"
    for record in agent_records:
        assert PIN not in record.getMessage(), record.name
        assert PIN not in str(record.args), record.name
    outcomes = [r.getMessage() for r in agent_records if r.name == "swreg.agent"]
    assert "op sign: ok" in outcomes
    assert "op sign: pin_incorrect" in outcomes
    assert "op ?: invalid_value" in outcomes  # an unknown op is not logged by name
    assert not [
        r
        for r in agent_records
        if r.name.startswith("swreg.agent.transport") and r.levelno <= logging.DEBUG
    ]


# -- one card operation at a time per card -----------------------------------------------------


@dataclass
class _Activity:
    """Counts card sessions open at once, per spec and overall."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    active: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    overall: int = 0
    overall_peak: int = 0

    def enter(self, spec: str) -> None:
        with self.lock:
            self.active[spec] = self.active.get(spec, 0) + 1
            self.peak[spec] = max(self.peak.get(spec, 0), self.active[spec])
            self.overall += 1
            self.overall_peak = max(self.overall_peak, self.overall)

    def leave(self, spec: str) -> None:
        with self.lock:
            self.active[spec] -= 1
            self.overall -= 1


class _SlowCard:
    """A fake card whose every read takes a while; ``boom`` makes it fail like a foreign bug."""

    def __init__(self, spec: str, activity: _Activity) -> None:
        self.label = spec
        self._spec = spec
        self._activity = activity

    def read_certificate(self) -> bytes:
        if "boom" in self._spec:
            raise RuntimeError("driver text that must not leak")
        time.sleep(0.15)
        return self._spec.encode()

    def read_chain(self) -> tuple[bytes, ...]:
        return ()

    def verify_pin(self, pin: str) -> None:
        raise CardError(ErrorCode.CARD_LOCKED)

    def sign(self, message: bytes) -> bytes:
        raise AssertionError("not reached")

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        self._activity.enter(self._spec)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._activity.leave(self._spec)


def _slow_config(activity: _Activity) -> AgentConfig:
    def opener(spec: str) -> Card:
        return _SlowCard(spec, activity)

    return _config(card_opener=opener, card_schemes=frozenset({"pcsc"}))


def test_card_operations_on_one_card_never_overlap_but_other_cards_proceed() -> None:
    activity = _Activity()

    async def reader(uri: str, specs: list[str]) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            return [await call(ws, {"id": s, "op": "read_certificate", "card": s}) for s in specs]

    async def body(uri: str) -> list[list[dict[str, Any]]]:
        return list(
            await asyncio.gather(
                reader(uri, ["pcsc:A", "pcsc:A"]),
                reader(uri, ["pcsc:A", "pcsc:A"]),
                reader(uri, ["pcsc:B", "pcsc:B"]),
            )
        )

    results = with_agent(_slow_config(activity), body)
    for answers in results:
        for answer in answers:
            assert answer["ok"] is True
            assert base64.b64decode(answer["certificate"]).decode() == answer["id"]
    assert activity.peak == {"pcsc:A": 1, "pcsc:B": 1}
    assert activity.overall_peak == 2  # A and B at the same time: the lock is per card


def test_foreign_card_failures_become_card_error_without_their_text() -> None:
    async def body(uri: str) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            boom = await call(ws, {"id": 1, "op": "read_certificate", "card": "pcsc:boom"})
            locked = await call(
                ws,
                {
                    "id": 2,
                    "op": "sign",
                    "card": "pcsc:A",
                    "pin": PIN,
                    "data": b64(challenge_payload(ORIGIN, "reg-4", b"n" * 32)),
                },
            )
            return [boom, locked]

    boom, locked = with_agent(_slow_config(_Activity()), body)
    assert boom["error"]["code"] == "card_error"
    assert "RuntimeError" in boom["error"]["detail"]
    assert "must not leak" not in json.dumps(boom)
    assert locked["error"]["code"] == "card_locked"


# -- run_agent ---------------------------------------------------------------------------------


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    code = (
        "from readers.agent import AgentConfig, run_agent\n"
        f"run_agent(AgentConfig(port={port}, allowed_origins=frozenset({{{ORIGIN!r}}})))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=TIMEOUT)


def test_run_agent_serves_until_sigterm(
    agent_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = agent_process

    async def hello() -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                async with client(f"ws://127.0.0.1:{port}/") as ws:
                    return await call(ws, {"id": 1, "op": "hello"})
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                await asyncio.sleep(0.1)

    assert asyncio.run(hello())["ok"] is True
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=TIMEOUT) == 0


def test_the_agent_signs_only_challenges_bound_to_the_page(
    card_spec: Callable[..., tuple[str, Any]],
) -> None:
    """A script on an allowed page cannot have the card sign anything else (a Turnkey message,
    another origin's challenge)."""
    spec, _ = card_spec()

    async def body(uri: str) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            other = b64(challenge_payload(OTHER_ORIGIN, "reg-5", b"n" * 32))
            arbitrary = b64(b"<Turnkey message>" * 4)
            return [
                await call(ws, {"id": i, "op": "sign", "card": spec, "pin": PIN, "data": data})
                for i, data in enumerate((other, arbitrary))
            ]

    for answer in with_agent(_config(), body):
        assert (answer["ok"], answer["error"]["code"], answer["error"]["field"]) == (
            False,
            "invalid_value",
            "data",
        )


# -- PKCS#11 tokens (swreg agent --pkcs11-module) ----------------------------------------------


def _token_config(**overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "card_schemes": frozenset({"pcsc"}),
        "pkcs11_modules": (SOFTHSM,),
        "reader_lister": lambda: [ReaderInfo("Virtual PCD 00 00", False, None)],
    }
    return _config(**{**values, **overrides})


def test_pkcs11_tokens_are_listed_and_sign(
    tokens: Tokens,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The tokens of the agent's modules come after the PC/SC readers; a listed spec signs; a
    URI without module-path searches the agent's modules, never SWREG_PKCS11_MODULES."""
    monkeypatch.setenv("SWREG_PKCS11_MODULES", str(tmp_path / "not-this-one.so"))
    payload = challenge_payload(ORIGIN, "reg-p11", b"n" * 32)
    data = b64(payload)

    async def body(uri: str) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            listed = await call(ws, {"id": 1, "op": "list_readers"})
            spec = next(r["spec"] for r in listed["readers"] if r["token"] == "rsa-card")
            sign = {"op": "sign", "card": spec, "data": data}
            return [
                listed,
                await call(ws, {**sign, "id": 2, "pin": "000000"}),
                await call(ws, {**sign, "id": 3, "pin": TOKEN_PIN}),
                await call(ws, {**sign, "id": 4, "pin": TOKEN_PIN, "card": "pkcs11:token=ec-card"}),
                await call(ws, {"id": 5, "op": "read_certificate", "card": spec}),
            ]

    listed, wrong, rsa_signed, ec_signed, read = with_agent(_token_config(), body)
    readers = listed["readers"]
    assert readers[0] == {
        "name": "Virtual PCD 00 00", "card_present": False, "profile": None, "bridge": "pcsc",
        "token": None, "spec": None,
    }  # fmt: skip
    present = {r["token"]: r for r in readers[1:] if r["card_present"]}
    assert sorted(present) == ["ec-card", "rsa-card", "two-certs", "two-signers"]
    assert all(r["bridge"] == "pkcs11" for r in readers[1:])
    assert present["rsa-card"]["spec"] == f"pkcs11:token=rsa-card?module-path={SOFTHSM}"
    assert (wrong["error"]["code"], wrong["error"]["tries_left"]) == ("pin_incorrect", None)
    for answer, card in ((rsa_signed, tokens.rsa), (ec_signed, tokens.ec)):
        assert answer["ok"] is True, answer
        assert base64.b64decode(answer["certificate"]) == card.der()
        verify(card.der(), base64.b64decode(answer["signature"]), payload)
    assert [base64.b64decode(c) for c in rsa_signed["chain"]] == list(tokens.rsa.chain_der())
    assert base64.b64decode(read["certificate"]) == tokens.rsa.der()


def test_a_page_cannot_make_the_agent_load_another_module(
    tokens: Tokens,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Loading a module runs its code: a module-path the agent's user did not enable is refused
    before anything is loaded — here a working copy of SoftHSM2, which would sign if loaded."""
    copy = tmp_path / "libsofthsm2-copy.so"
    copy.write_bytes(Path(SOFTHSM).read_bytes())
    data = b64(challenge_payload(ORIGIN, "reg-p11", b"n" * 32))
    escaped = "%2F".join(str(copy).split("/"))
    specs = [
        f"pkcs11:token=rsa-card?module-path={copy}",
        f"pkcs11:token=rsa-card?module-path={escaped}",  # the same path, %-escaped
        "pkcs11:token=rsa-card?module-path=/usr/lib/softhsm/../softhsm/libsofthsm2.so",
    ]

    async def body(uri: str) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            answers = []
            for i, spec in enumerate(specs):
                request = {"id": i, "op": "sign", "card": spec, "pin": TOKEN_PIN, "data": data}
                answers.append(await call(ws, request))
                answers.append(await call(ws, {"id": i, "op": "read_certificate", "card": spec}))
            return answers

    answers = with_agent(_token_config(), body)
    shown = [str(copy), str(copy), "/usr/lib/softhsm/../softhsm/libsofthsm2.so"]
    for answer, module in zip(answers, [m for m in shown for _ in range(2)], strict=True):
        assert answer["ok"] is False
        assert (answer["error"]["code"], answer["error"]["field"]) == ("invalid_value", "card")
        assert answer["error"]["detail"].endswith(
            f"PKCS#11 module {module!r} is not enabled in this agent; the agent's user enables "
            "modules with swreg agent --pkcs11-module PATH"
        )
    assert str(copy) not in p11lib._loaded


def test_pkcs11_specs_need_the_agents_modules(tokens: Tokens) -> None:  # noqa: F811
    spec = f"pkcs11:token=rsa-card?module-path={SOFTHSM}"

    async def body(uri: str) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            return [
                await call(ws, {"id": 1, "op": "read_certificate", "card": spec}),
                await call(ws, {"id": 2, "op": "read_certificate", "card": f"{spec}&pin-value=1"}),
            ]

    without, _ = with_agent(_config(card_schemes=frozenset({"pcsc"})), body)
    assert (without["error"]["code"], without["error"]["field"]) == ("invalid_value", "card")
    assert "'pkcs11' is not enabled" in without["error"]["detail"]
    _, pin_in_uri = with_agent(_token_config(), body)
    assert pin_in_uri["error"]["code"] == "usage"
    assert "pin-value is refused" in pin_in_uri["error"]["detail"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"pkcs11_modules": ("libsofthsm2.so",)},
        {"pkcs11_modules": ("",)},
        {"pkcs11_modules": ("/usr/lib/no-such-pkcs11-module.so",)},  # a typo: said at start
        {"pkcs11_modules": SOFTHSM},
        {"card_schemes": frozenset({"pkcs11"})},  # the scheme without modules to load
    ],
)
def test_malformed_pkcs11_module_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        AgentConfig(allowed_origins=frozenset({ORIGIN}), **overrides)


def test_swreg_agent_pkcs11_module_serves_the_tokens(tokens: Tokens) -> None:  # noqa: F811
    port = free_port()
    env = {**os.environ, "SOFTHSM2_CONF": str(tokens.conf)}
    swreg = str(Path(sys.executable).parent / "swreg")
    refused = subprocess.run(
        [swreg, "agent", "--origin", ORIGIN, "--port", str(port), "--pkcs11-module",
         "libsofthsm2.so"], capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "absolute path" in refused.stderr
    process = subprocess.Popen(
        [swreg, "agent", "--origin", ORIGIN, "--port", str(port), "--pkcs11-module", SOFTHSM],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    payload = challenge_payload(ORIGIN, "reg-cli", b"n" * 32)

    async def sign() -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                async with client(f"ws://127.0.0.1:{port}/") as ws:
                    return await call(ws, {
                        "id": 1, "op": "sign", "card": "pkcs11:token=ec-card", "pin": TOKEN_PIN,
                        "data": b64(payload),
                    })  # fmt: skip
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                await asyncio.sleep(0.1)

    try:
        answer = asyncio.run(sign())
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
    assert answer["ok"] is True, answer
    verify(tokens.ec.der(), base64.b64decode(answer["signature"]), payload)
