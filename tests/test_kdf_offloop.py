"""The password KDF never runs on the event loop (DESIGN.md §10).

Every HTTP route that hashes or verifies a password — the registration step with the password
(JSON API and wizard page) and 憑證更換作業 with the password — is driven through the ASGI app
on one event loop, with argon2id behind a gate: the KDF starts, then waits until a second
request on the same loop has been answered, then runs with deliberately slow parameters.
Off the loop, the second request is answered while the KDF waits; on the loop, nothing else
can run, the gate times out first and the recorded order says so. The assertions are on the
order of events, not on timings.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from engine import App, FixedClock, Settings, bootstrap
from engine._settings import Argon2Parameters
from engine.services.hashing import PasswordHasher
from engine.testing.pki import TestPKI
from engine.web import create_app
from engine.web._registration_secret import registration_cookie
from engine.web._security import new_csrf_token
from tests.conftest import PERSON_ANSWERS, SECRET
from tests.helpers import card_response, to_card_check

SLOW_ARGON2 = Argon2Parameters(time_cost=3, memory_kib=19456, parallelism=1)
"""Deliberately slow (more passes than OWASP's two over 19 MiB): what must not block."""
GATE_TIMEOUT = 20.0


class KdfGate:
    """Wraps the argon2id calls: each records that it started, waits for :meth:`release`
    (at most ``GATE_TIMEOUT`` seconds), records how the wait ended, then runs for real."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.started = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()

    def record(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def release(self) -> None:
        self._released.set()

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def gated(hasher: PasswordHasher, *args: Any) -> Any:
            if not self._released.is_set():
                self.record("kdf started")
                self.started.set()
                released = self._released.wait(GATE_TIMEOUT)
                self.record("kdf released" if released else "kdf timed out")
            return real(hasher, *args)

        return gated


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> KdfGate:
    """Gate ``PasswordHasher.hash`` and ``.verify`` (before the app is bootstrapped: the
    registration service binds ``hash`` when it is built)."""
    found = KdfGate()
    monkeypatch.setattr(PasswordHasher, "hash", found.wrap(PasswordHasher.hash))
    monkeypatch.setattr(PasswordHasher, "verify", found.wrap(PasswordHasher.verify))
    return found


@pytest.fixture
def slow_app(gate: KdfGate, db_url: str, clock: FixedClock, pki: TestPKI) -> Iterator[App]:
    application = bootstrap(
        Settings(database_url=db_url, secret_key=SECRET, argon2=SLOW_ARGON2), clock=clock
    )
    pki.publish_to(application.trust, actor="test")
    yield application
    application.close()


def at_basic_data(app: App, pki: TestPKI) -> tuple[str, dict[str, str]]:
    """A registration past its card check (through the services, before the gate matters),
    and the cookie its browser would hold."""
    view = to_card_check(app, "person.general")
    cookie = {registration_cookie(view.id): view.secret or ""}
    card = pki.issue_person("王小明", "6789")
    view = app.registrations.submit_card(view.id, card_response(app, view, card))
    assert view.state == "basic_data"
    return view.id, cookie


def asgi_client(app: App) -> httpx.AsyncClient:
    token = new_csrf_token(app.identifiers)  # as the server issues
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(app)),
        base_url="http://127.0.0.1:8000",
        cookies={"csrf": token},
        headers={"X-CSRF-Token": token},
        timeout=60,
    )


async def while_the_kdf_runs(
    gate: KdfGate, client: httpx.AsyncClient, slow: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    """Send ``slow``; once its KDF has started, answer a second request; then let it finish."""
    pending = asyncio.create_task(slow())
    for _ in range(int(GATE_TIMEOUT * 100) + 100):
        if gate.started.is_set() or pending.done():
            break
        await asyncio.sleep(0.01)
    assert gate.started.is_set(), "the route never reached the KDF"
    second = await client.get("/api/csrf")
    assert second.status_code == 200
    gate.record("second request answered")
    gate.release()
    return await pending


def run(
    gate: KdfGate, app: App, slow: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
) -> httpx.Response:
    async def scenario() -> httpx.Response:
        async with asgi_client(app) as client:
            return await while_the_kdf_runs(gate, client, lambda: slow(client))

    return asyncio.run(scenario())


OFF_THE_LOOP = ["kdf started", "second request answered", "kdf released"]


def test_api_registration_step_hashes_the_password_off_the_event_loop(
    gate: KdfGate, slow_app: App, pki: TestPKI
) -> None:
    registration_id, cookie = at_basic_data(slow_app, pki)

    def step(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        client.cookies.update(cookie)
        return client.post(f"/api/registrations/{registration_id}/step", json=PERSON_ANSWERS)

    response = run(gate, slow_app, step)

    assert gate.events == OFF_THE_LOOP
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "completed"


def test_wizard_page_step_hashes_the_password_off_the_event_loop(
    gate: KdfGate, slow_app: App, pki: TestPKI
) -> None:
    registration_id, cookie = at_basic_data(slow_app, pki)
    form = {k: str(v) for k, v in PERSON_ANSWERS.items() if k != "consent"}

    def step(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        client.cookies.update(cookie)
        return client.post(f"/register/{registration_id}", data=form)

    response = run(gate, slow_app, step)

    assert gate.events == OFF_THE_LOOP
    assert response.status_code == 303, response.text
    assert slow_app.registrations.status(registration_id).state == "completed"


def test_api_renewal_verifies_the_password_off_the_event_loop(
    gate: KdfGate, slow_app: App, pki: TestPKI
) -> None:
    card = pki.issue_person("王小明", "6789")  # the new card is checked before any password

    async def renewal(client: httpx.AsyncClient) -> httpx.Response:
        challenge = await client.post("/api/renewal/challenge")
        assert challenge.status_code == 200, challenge.text
        payload = base64.b64decode(challenge.json()["payload"])
        body = {
            "challenge_id": challenge.json()["challenge_id"],
            "certificate": base64.b64encode(card.der()).decode(),
            "signature": base64.b64encode(card.sign(payload)).decode(),
            "chain": [base64.b64encode(der).decode() for der in card.chain_der()],
            "account": "nobody@example.com",  # unknown: a dummy hash is verified all the same
            "password": PERSON_ANSWERS["password"],
        }
        return await client.post("/api/renewal", json=body)

    response = run(gate, slow_app, renewal)

    assert gate.events == OFF_THE_LOOP
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "not_authorized"


def test_owasp_argon2id_is_the_default_and_configurable() -> None:
    assert Settings.from_env({}).argon2 == Argon2Parameters(2, 19456, 1)
    configured = Settings.from_env({"SWREG_ARGON2": "3,65536,2"}).argon2
    assert configured == Argon2Parameters(3, 65536, 2)
    hasher = PasswordHasher()
    assert hasher.hash("Passw0rdOK").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
