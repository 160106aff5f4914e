"""A crash of the portal in the middle of completing registrations leaves nothing half done.

``swreg serve --workers 2`` runs on the test database; many clients drive registrations through
the JSON API at once and, as soon as the first of their last steps has been answered (so some,
but not all, are acknowledged), the server and its workers are SIGKILLed (no shutdown,
transactions cut anywhere). After a restart every registration is either completed with its
account, login certificate and audit row, or not completed, without any of them, and resumable;
``swreg audit verify`` passes.

The test proves that the kill did cut something: each client records whether its completing
request had been sent in full to the live server (before the kill was ordered) and whether it was
answered. At least one registration must have been sent, never answered, and found not completed
after the restart — a completion the crash interrupted. A round in which the kill came too late
to interrupt any is repeated with new applicants (at most ``ROUNDS`` times); the test fails if
none was interrupted.

Each client sends from its own loopback address (127.0.R.N, a new R each round), so the
per-address rate limits of the portal do not get in the way.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from engine import App
from engine.store import Account, AuditEntry, Certificate
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.ports import free_port

from .conftest import PERSON_ANSWERS, SECRET
from .processes import SWREG, kill_process_tree, serve, stop_process, swreg_env

CLIENTS = 24
ROUNDS = 5
TIMEOUT = 60.0


class Kill:
    """The order to kill, and what each completing request had done before it was given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ordered = False
        self.acknowledged = threading.Event()

    def order(self) -> None:
        """From now on nothing counts as sent to the live server."""
        with self.lock:
            self.ordered = True


@dataclass
class Client:
    """One applicant: a card, an e-mail (the account), an HTTP client from its own address."""

    card: IssuedCard
    email: str
    http: httpx.Client
    registration_id: str = ""
    token: str = ""
    sent_before_kill: bool = False  # the completing request was written in full, server alive
    answer: int | None = None  # its status code; None: no response (the server died)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        if not self.token:  # the double-submit token of this client's csrf cookie
            self.token = self.http.get("/api/csrf").json()["token"]
        return self.http.post(path, json=body, headers={"X-CSRF-Token": self.token})

    def to_basic_data(self) -> None:
        started = self.post("/api/registrations", {"type": "person.general", "consent": True})
        assert started.status_code == 201, started.text
        self.registration_id = started.json()["id"]
        base = f"/api/registrations/{self.registration_id}"
        challenge = self.post(f"{base}/challenge").json()
        signature = self.card.sign(base64.b64decode(challenge["payload"]))
        checked = self.post(
            f"{base}/card",
            {
                "challenge_id": challenge["challenge_id"],
                "certificate": _b64(self.card.der()),
                "signature": _b64(signature),
                "chain": [_b64(der) for der in self.card.chain_der()],
            },
        )
        assert checked.status_code == 200, checked.text
        assert checked.json()["state"] == "basic_data"

    def complete(self, kill: Kill | None = None) -> httpx.Response:
        """The last step, in one request (the csrf token is already known); with ``kill``,
        record whether the request was sent in full before the kill was ordered."""

        def trace(event: str, _info: dict[str, Any]) -> None:
            if kill is not None and event == "http11.send_request_body.complete":
                with kill.lock:
                    self.sent_before_kill = not kill.ordered

        answers = {**PERSON_ANSWERS, "email": self.email}
        return self.http.post(
            f"/api/registrations/{self.registration_id}/step",
            json=answers,
            headers={"X-CSRF-Token": self.token},
            extensions={"trace": trace},
        )

    def complete_until_killed(self, kill: Kill) -> None:
        try:
            response = self.complete(kill)
        except httpx.TransportError:
            return  # the server died under this request (or before it)
        self.answer = response.status_code
        if response.status_code == 200:
            kill.acknowledged.set()

    @property
    def interrupted(self) -> bool:
        """Sent in full to the live server and never answered."""
        return self.sent_before_kill and self.answer is None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Server:
    """``swreg serve --workers 2`` on one database, port and log; may be started again."""

    database_url: str
    port: int
    folder: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> subprocess.Popen[bytes]:
        process = serve(
            self.database_url, SECRET.hex(), self.port, self.folder / "serve.log", workers=2,
            SWREG_MAIL_OUTBOX=str(self.folder / "outbox"),
        )  # fmt: skip
        self.started.append(process)
        return process


@pytest.fixture
def server(app: App, db_url: str, tmp_path: Path) -> Iterator[Server]:
    """The portal on the test database (``app`` trusts the test roots); whatever it started is
    stopped by PID at the end."""
    portal = Server(db_url, free_port(), tmp_path)
    yield portal
    for process in portal.started:
        stop_process(process)


def crash_round(
    round_: int,
    process: subprocess.Popen[bytes],
    pki: TestPKI,
    server: Server,
    everyone: list[Client],
) -> list[Client]:
    """``CLIENTS`` new applicants (added to ``everyone``) reach 基本資料, send their last step
    at once, and the server is killed as soon as the first is acknowledged."""
    clients = [
        Client(
            card=pki.issue_person(),
            email=f"applicant{round_}.{i}@example.com",
            http=httpx.Client(
                base_url=server.origin,
                timeout=TIMEOUT,
                transport=httpx.HTTPTransport(local_address=f"127.0.{round_}.{i + 2}"),
            ),
        )
        for i in range(CLIENTS)
    ]
    everyone += clients
    kill = Kill()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(Client.to_basic_data, clients, timeout=TIMEOUT))
        sent = [pool.submit(c.complete_until_killed, kill) for c in clients]
        assert kill.acknowledged.wait(TIMEOUT), "no registration completed"
        kill.order()
        kill_process_tree(process)  # in the middle of completing the others
        for future in sent:
            future.result(timeout=TIMEOUT)
    answers = [c.answer for c in clients]
    assert set(answers) <= {200, None}, answers
    return clients


def test_a_crash_while_completing_leaves_every_registration_whole_or_resumable(
    app: App, pki: TestPKI, db_url: str, server: Server
) -> None:
    process = server.start()
    clients: list[Client] = []
    cut: list[Client] = []
    rounds: list[str] = []  # what each round saw, for the failure message
    try:
        for round_ in range(ROUNDS):
            latest = crash_round(round_, process, pki, server, clients)
            process = server.start()  # the same database, port and origin
            states = {c.registration_id: status(c) for c in clients}
            assert set(states.values()) <= {"completed", "basic_data"}, states
            assert_whole(app, states)
            for client in latest:
                state = states[client.registration_id]
                if client.answer == 200:  # acknowledged: done, and durably so
                    assert state == "completed", client.registration_id
                if client.interrupted and state == "basic_data":
                    cut.append(client)
            rounds.append(
                f"round {round_}: {sum(c.answer == 200 for c in latest)} acknowledged, "
                f"{sum(c.interrupted for c in latest)} sent and unanswered, "
                f"{sum(c in cut for c in latest)} of them not completed"
            )
            if cut:
                break
        assert cut, f"the kill interrupted no completion in {ROUNDS} rounds: {rounds}"

        for client in clients:  # those not completed are resumable
            if status(client) == "basic_data":
                response = client.complete()
                assert response.status_code == 200, response.text
                assert response.json()["state"] == "completed"
        assert_whole(app, {c.registration_id: "completed" for c in clients})
    finally:
        for client in clients:
            client.http.close()

    done = subprocess.run(
        [SWREG, "audit", "verify", "--json"], capture_output=True, text=True, timeout=TIMEOUT,
        env=swreg_env(SWREG_DATABASE_URL=db_url, SWREG_SECRET_KEY=SECRET.hex()), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True


def status(client: Client) -> str:
    response = client.http.get(f"/api/registrations/{client.registration_id}")
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


def assert_whole(app: App, states: dict[str, str]) -> None:
    """A completed registration has its account, login certificate and completion audit row;
    any other has none of them."""
    with app.database.unit_of_work() as uow:
        accounts = {
            r: a for r, a in uow.session.execute(select(Account.registration_id, Account.id))
        }
        login = select(Certificate.registration_id, Certificate.account_id).where(
            Certificate.purpose == "login"
        )
        logins = {r: a for r, a in uow.session.execute(login)}
        completions = list(
            uow.session.scalars(
                select(AuditEntry.registration_id).where(AuditEntry.to_state == "completed")
            )
        )
        assert uow.audit.verify().ok
    for registration_id, state in states.items():
        whole = state == "completed"
        assert (registration_id in accounts) is whole, (registration_id, state)
        assert (registration_id in logins) is whole, (registration_id, state)
        assert completions.count(registration_id) == int(whole), (registration_id, state)
        if whole:
            assert logins[registration_id] == accounts[registration_id]
    assert len(accounts) == len(logins) == sum(s == "completed" for s in states.values())
