"""The network edge of the portal (DESIGN.md §6, §11): who the client is, and which Host is served.

- Behind ``SWREG_TRUSTED_PROXIES`` the client is the rightmost ``X-Forwarded-For`` entry that is
  not a trusted proxy; from any other peer, ``X-Forwarded-For``, ``X-Real-IP`` and ``Forwarded``
  are ignored, so a forged header never buys a fresh rate-limit bucket.
- Rate limits count an IPv6 client by its /64, an IPv4-mapped IPv6 client as its IPv4 address,
  and their keys hold keyed hashes, never an address; audit rows name the client the same way.
- A request whose ``Host`` is not the public origin's (nor an allowed host) is 400
  ``bad_request`` before any route runs: the demo outbox cannot be read through DNS rebinding.

Requests go through the real application (Starlette's TestClient, the socket peer given as
``client=``); rows are read back from the database.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.types import Message

from engine import App, FixedClock, Settings, bootstrap
from engine.services.hashing import IdentifierHasher
from engine.store import AuditEntry, RateLimitWindow
from engine.testing.pki import TestPKI
from engine.testing.ports import free_port
from engine.web import create_app
from engine.web._portal import START_LIMIT
from engine.web._security import (
    HOST_CHECK_EXEMPT,
    allowed_hosts,
    forwarded_client,
    host_allowed,
    rate_limit_subject,
)

from .conftest import SECRET, FreshDatabase
from .processes import SWREG, answers_http, spawn, stop_process, swreg_env, wait_until

PROXY = "10.0.0.5"
"""The reverse proxy: the socket peer of every request that came through it."""
TRUSTED = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/64"))
KEYS = IdentifierHasher(SECRET)


def client_hash(address: str) -> str:
    """How the audit log names a client: 16 hex of the HMAC of its address."""
    return KEYS.hash("client", address)[:16]


def bucket(address: str) -> str:
    """The rate-limit key of a client's registration starts."""
    return f"{START_LIMIT.name}:{KEYS.hash('client', rate_limit_subject(address))[:32]}"


def proxied(app: App) -> App:
    return replace(app, settings=replace(app.settings, trusted_proxies=TRUSTED))


def portal(app: App, peer: str) -> TestClient:
    """A client of the portal over ``app`` whose socket peer is ``peer``."""
    return TestClient(create_app(app), client=(peer, 40000))


def start(http: TestClient, **headers: str) -> httpx.Response:
    """Start a registration (one hit against the start limit) with extra request headers."""
    token = http.get("/api/csrf").json()["token"]
    body = {"type": "person.general", "consent": True}
    answer: httpx.Response = http.post(
        "/api/registrations", json=body, headers={"X-CSRF-Token": token, **headers}
    )
    return answer


def counts(app: App) -> dict[str, int]:
    """The rate-limit counters: key → hits in the current window."""
    return {row.key: row.count for row in rows_of(app, RateLimitWindow)}


def rows_of(app: App, model: type[Any]) -> list[Any]:
    with app.database.unit_of_work() as uow:
        found = list(uow.session.scalars(select(model)))
        uow.session.expunge_all()
        return found


# -- who the client is -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.7", [], "203.0.113.7"),  # no proxy: the peer
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # an untrusted peer's header: ignored
        (PROXY, ["198.51.100.1"], "198.51.100.1"),  # the proxy appended the client
        (PROXY, ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # the client's own entry is ignored
        (PROXY, ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # several headers: one list
        (PROXY, ["198.51.100.1, 10.0.0.9"], "198.51.100.1"),  # past a second trusted hop
        (PROXY, ["10.0.0.9, 10.0.0.8"], PROXY),  # only trusted hops: the peer
        (PROXY, [], PROXY),  # a trusted peer without the header: the peer
        (PROXY, ["6.6.6.6, garbage"], PROXY),  # not an address where the client should be
        (PROXY, ["6.6.6.6, 198.51.100.1:443"], PROXY),  # a port: not a bare address
        (PROXY, ["6.6.6.6, unknown, 10.0.0.9"], PROXY),  # a malformed hop stops the walk
        (PROXY, ["garbage, 198.51.100.1"], "198.51.100.1"),  # left of the client: never read
        (PROXY, ["::ffff:198.51.100.1"], "198.51.100.1"),  # IPv4-mapped IPv6 is the IPv4
        ("::ffff:10.0.0.5", ["198.51.100.1"], "198.51.100.1"),  # a mapped peer is trusted too
        ("fd00::1", ["2001:DB8:0::1"], "2001:db8::1"),  # canonical spelling
        ("fd00::1", ["fd00::2, fd00::3"], "fd00::1"),
        ("testclient", ["198.51.100.1"], "testclient"),  # no address: the peer, as given
    ],
)
def test_the_client_is_the_rightmost_untrusted_forwarded_hop(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert forwarded_client(peer, forwarded_for, TRUSTED) == client


def test_without_trusted_proxies_forwarded_headers_are_never_read() -> None:
    assert forwarded_client("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same /64
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),  # the next /64
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: the IPv4 address
        ("testclient", "testclient"),
    ],
)
def test_rate_limits_count_an_ipv6_client_by_its_64(address: str, subject: str) -> None:
    assert rate_limit_subject(address) == subject


# -- rate limits through the portal ----------------------------------------------------------


def test_behind_a_trusted_proxy_each_client_gets_its_own_bucket(app: App) -> None:
    with portal(proxied(app), PROXY) as http:
        for client in ("198.51.100.1", "198.51.100.2", "198.51.100.2"):
            assert start(http, **{"X-Forwarded-For": f"6.6.6.6, {client}"}).status_code == 201
    assert counts(app) == {bucket("198.51.100.1"): 1, bucket("198.51.100.2"): 2}


def test_behind_a_proxy_that_is_not_trusted_every_client_shares_its_bucket(app: App) -> None:
    with portal(app, PROXY) as http:  # SWREG_TRUSTED_PROXIES unset
        for client in ("198.51.100.1", "198.51.100.2"):
            assert start(http, **{"X-Forwarded-For": client}).status_code == 201
    assert counts(app) == {bucket(PROXY): 2}


@pytest.mark.parametrize(
    "forged",
    [
        {"X-Forwarded-For": "198.51.100.77"},
        {"X-Real-IP": "198.51.100.77"},
        {"Forwarded": "for=198.51.100.77"},
        {"X-Forwarded-For": "198.51.100.77", "X-Real-IP": "198.51.100.78"},
    ],
)
def test_a_forged_forwarding_header_buys_no_fresh_bucket(app: App, forged: dict[str, str]) -> None:
    attacker = "203.0.113.66"  # not a trusted proxy
    with portal(proxied(app), attacker) as http:
        for _ in range(START_LIMIT.limit):
            assert start(http).status_code == 201
        refused = start(http, **forged)
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["code"] == "rate_limited"
    assert counts(app) == {bucket(attacker): START_LIMIT.limit + 1}


def test_two_addresses_of_one_ipv6_64_share_a_bucket(app: App) -> None:
    for peer in ("2001:db8:5:6::1", "2001:db8:5:6:ffff::2", "2001:db8:5:7::1"):
        with portal(app, peer) as http:
            assert start(http).status_code == 201
    assert counts(app) == {bucket("2001:db8:5:6::1"): 2, bucket("2001:db8:5:7::1"): 1}
    assert bucket("2001:db8:5:6::1") != bucket("2001:db8:5:7::1")


def test_an_ipv6_64_is_limited_as_one_client(app: App) -> None:
    for n in range(START_LIMIT.limit):  # a new address of the /64 for every request
        with portal(app, f"2001:db8:5:6::{n + 1:x}") as http:
            assert start(http).status_code == 201
    with portal(app, "2001:db8:5:6:dead:beef:0:1") as http:
        assert start(http).status_code == 429
    with portal(app, "2001:db8:5:7::1") as http:  # the neighbouring /64 is another client
        assert start(http).status_code == 201


# -- audit rows name clients by keyed hash -----------------------------------------------------

_ADDRESSES = ("203.0.113.77", "198.51.100.23", "2001:db8:85a3::8a2e:370:7334")


def test_audit_rows_hold_no_client_address_in_clear(app: App) -> None:
    direct, forwarded, ipv6 = _ADDRESSES
    seen: list[str] = []
    with portal(proxied(app), direct) as http:  # an untrusted peer: its header is ignored
        seen.append(start(http, **{"X-Forwarded-For": "192.0.2.1"}).json()["id"])
    with portal(proxied(app), PROXY) as http:
        seen.append(start(http, **{"X-Forwarded-For": forwarded}).json()["id"])
        token = http.get("/api/csrf").json()["token"]
        cancel = http.post(
            f"/api/registrations/{seen[-1]}/cancel",
            headers={"X-CSRF-Token": token, "X-Forwarded-For": forwarded},
        )
        assert cancel.status_code == 200, cancel.text
    with portal(app, ipv6) as http:
        assert http.get("/register").status_code == 200
        token = http.cookies["csrf"]
        page = http.post(
            "/register", data={"csrf": token, "type": "person.general", "consent": "1"}
        )
        assert page.status_code == 200, page.text

    entries = rows_of(app, AuditEntry)
    actors = {entry.actor for entry in entries}
    assert {f"api:client={client_hash(direct)}", f"api:client={client_hash(forwarded)}"} <= actors
    assert f"web:client={client_hash(ipv6)}" in actors
    spelled = {  # every address a request came from or named, as typed and written out
        form
        for address in (*_ADDRESSES, "192.0.2.1", PROXY)
        for form in (address, ipaddress.ip_address(address).exploded)
    }
    for entry in entries:
        text = json.dumps([entry.actor, entry.diff], ensure_ascii=False)
        assert not [form for form in spelled if form in text], text
    for key in counts(app):
        assert not [form for form in spelled if form in key], key


# -- the Host check ----------------------------------------------------------------------------


@pytest.fixture
def demo(settings: Settings, clock: FixedClock, pki: TestPKI) -> Iterator[App]:
    """The portal in demo mode: the outbox of activation links at /demo/outbox."""
    application = bootstrap(replace(settings, demo=True), clock=clock)
    mail = EmailMessage()
    mail["To"], mail["Subject"] = "ming@example.com", "帳號啟用"
    mail.set_content("http://127.0.0.1:8000/activate/secret-activation-token")
    application.mailer.send(mail)
    yield application
    application.close()


@pytest.mark.parametrize("path", ["/demo/outbox", "/", "/?lang=en", "/api/csrf", "/register"])
@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1:8000.evil.example", "127.0.0.1:8001"]
)
def test_a_foreign_host_is_refused_before_any_route(demo: App, path: str, host: str) -> None:
    """DNS rebinding: once evil.example resolves to 127.0.0.1, the attacker's page reads
    /demo/outbox (activation links) from "its own" origin; the browser sends its Host."""
    with TestClient(create_app(demo), base_url="http://127.0.0.1:8000") as http:
        answered = http.get(path)  # the public origin's Host
        refused = http.get(path, headers={"Host": host})
    assert answered.status_code == 200
    if path == "/demo/outbox":
        assert "secret-activation-token" in answered.text
    assert refused.status_code == 400
    assert "set-cookie" not in refused.headers  # no CSRF token for a foreign page either
    if path.startswith("/api/"):
        assert refused.json()["errors"][0]["code"] == "bad_request"
    else:
        assert refused.headers["content-type"].startswith("text/html")
        assert "secret-activation-token" not in refused.text and "ming@" not in refused.text


def test_requests_without_exactly_one_host_are_refused(app: App) -> None:
    web = create_app(app)

    async def ask(headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/api/csrf", "raw_path": b"/api/csrf", "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }  # fmt: skip
        await web(scope, receive, send)
        status: int = sent[0]["status"]
        return status

    assert asyncio.run(ask([(b"host", b"127.0.0.1:8000")])) == 200
    assert asyncio.run(ask([])) == 400  # HTTP/1.0 without a Host
    assert asyncio.run(ask([(b"host", b"127.0.0.1:8000"), (b"host", b"evil.example")])) == 400
    assert asyncio.run(ask([(b"host", b"evil.example"), (b"host", b"127.0.0.1:8000")])) == 400


@pytest.mark.parametrize(
    ("origin", "extra", "host", "allowed"),
    [
        ("http://127.0.0.1:8000", (), "127.0.0.1:8000", True),
        ("http://127.0.0.1:8000", (), "127.0.0.1", False),  # port 80 is another server
        ("http://127.0.0.1:8000", (), "localhost:8000", False),
        ("https://portal.example", (), "portal.example", True),  # browsers omit :443
        ("https://portal.example", (), "PORTAL.example:443", True),  # names are case-blind
        ("https://portal.example", (), "portal.example:8443", False),
        ("https://portal.example", (), "portal.example.", False),
        ("https://portal.example", (), "sub.portal.example", False),
        ("https://portal.example:443", (), "portal.example", True),
        ("http://[::1]:8000", (), "[::1]:8000", True),
        ("http://[::1]:8000", (), "[::1]", False),
        ("https://portal.example", ("internal.lan",), "internal.lan:9000", True),  # any port
        ("https://portal.example", ("internal.lan:9000",), "internal.lan:9001", False),
        ("https://portal.example", ("[::1]",), "[::1]:8000", True),
        ("https://portal.example", (), "", False),
    ],
)
def test_allowed_hosts(origin: str, extra: tuple[str, ...], host: str, allowed: bool) -> None:
    settings = Settings(public_origin=origin, allowed_hosts=extra)
    assert host_allowed(host, allowed_hosts(settings)) is allowed


def test_allowed_hosts_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"SWREG_PUBLIC_ORIGIN": "https://portal.example", "SWREG_ALLOWED_HOSTS": "Backend:8000"}
    )
    assert host_allowed("backend:8000", allowed_hosts(settings))
    assert not host_allowed("evil.example", allowed_hosts(settings))


def test_probes_and_metrics_are_the_only_paths_exempt_from_the_host_check() -> None:
    assert {"/healthz", "/readyz", "/metrics"} == HOST_CHECK_EXEMPT


def test_swreg_serve_without_a_public_origin_answers_where_it_listens(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    """Without SWREG_PUBLIC_ORIGIN the origin is ``--host``/``--port``: the address the command
    prints answers (before, every request got 400 from the Host check), a foreign Host does not."""
    port = free_port()
    env = swreg_env(
        SWREG_DATABASE_URL=fresh_database(), SWREG_SECRET_KEY=SECRET.hex(), SWREG_ARGON2="1,64,1"
    )
    log = tmp_path / "serve.log"
    process = spawn([SWREG, "serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
    try:
        origin = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_http(origin + "/"), process, log, "swreg serve")
        assert httpx.get(origin + "/register").status_code == 200
        foreign = httpx.get(origin + "/api/csrf", headers={"Host": f"localhost:{port}"})
        assert (foreign.status_code, foreign.json()["errors"][0]["code"]) == (400, "bad_request")
        assert f"swreg portal: {origin}/" in log.read_text()
    finally:
        stop_process(process)
