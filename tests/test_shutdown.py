"""SIGTERM lets running requests finish (DESIGN.md §11, issue 18 item 6).

``swreg serve --workers 2`` is sent SIGTERM while a registration's last step is in flight: the
step's request is held inside the portal by a real SMTP server that does not answer the
activation mail until the test lets it. The portal must stop taking new requests, finish that
one (200, the account created, the mail delivered) and exit 0.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import select

from engine import Settings, bootstrap
from engine.store import Account, Database
from engine.testing.pki import TestPKI
from engine.testing.ports import free_port

from .conftest import PERSON_ANSWERS, SECRET, TestDatabases
from .processes import serve, stop_process
from .test_mail import SmtpSink


class HoldingSink(SmtpSink):
    """An SMTP server that holds each message's DATA until :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 60)
        return await super().handle_DATA(server, session, envelope)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def to_basic_data(http: httpx.Client, pki: TestPKI) -> tuple[str, dict[str, str]]:
    """A 個人 registration through the card check; its id and the CSRF header."""
    csrf = {"X-CSRF-Token": http.get("/api/csrf").json()["token"]}
    started = http.post(
        "/api/registrations", json={"type": "person.general", "consent": True}, headers=csrf
    )
    assert started.status_code == 201, started.text
    registration_id: str = started.json()["id"]
    base = f"/api/registrations/{registration_id}"
    challenge = http.post(f"{base}/challenge", headers=csrf).json()
    card = pki.issue_person("王小明", "6789")
    answer = {
        "challenge_id": challenge["challenge_id"],
        "certificate": b64(card.der()),
        "signature": b64(card.sign(base64.b64decode(challenge["payload"]))),
        "chain": [b64(der) for der in card.chain_der()],
    }
    checked = http.post(f"{base}/card", json=answer, headers=csrf)
    assert checked.json()["state"] == "basic_data", checked.text
    return registration_id, csrf


def shutting_down(origin: str) -> bool:
    """Whether the portal no longer answers a new request (its workers stopped accepting)."""
    try:
        httpx.get(origin + "/healthz", timeout=0.5)
    except httpx.HTTPError:
        return True
    return False


def test_sigterm_lets_a_running_registration_finish(
    tmp_path: Path, test_databases: TestDatabases, pki: TestPKI
) -> None:
    (tmp_path / "db").mkdir()
    url = test_databases.create(tmp_path / "db")
    setup = bootstrap(Settings(database_url=url, secret_key=SECRET))
    try:
        pki.publish_to(setup.trust, actor="test")
    finally:
        setup.close()
    sink = HoldingSink().start()
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    process = serve(
        url, SECRET.hex(), port, tmp_path / "serve.log", workers=2,
        SWREG_SMTP_HOST="127.0.0.1", SWREG_SMTP_PORT=str(sink.port), SWREG_SMTP_TLS="none",
    )  # fmt: skip
    answer: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=origin, timeout=60) as http:
            registration_id, csrf = to_basic_data(http, pki)

            def last_step() -> None:
                response = http.post(
                    f"/api/registrations/{registration_id}/step",
                    json=PERSON_ANSWERS, headers=csrf,
                )  # fmt: skip
                answer.update(status=response.status_code, body=response.json())

            step = threading.Thread(target=last_step)
            step.start()
            assert sink.arrived.wait(60), "the step never reached the mail"
            process.send_signal(signal.SIGTERM)  # while the step waits for the SMTP server
            while not shutting_down(origin):  # a state, not a time: new requests are refused
                assert process.poll() is None, "the portal exited with a request running"
            assert process.poll() is None and step.is_alive()
            sink.release.set()
            step.join(60)
        assert process.wait(timeout=60) == 0
    finally:
        sink.release.set()
        stop_process(process)
        sink.stop()
    assert answer["status"] == 200, answer
    assert answer["body"]["state"] == "completed"
    assert len(sink.messages) == 1 and PERSON_ANSWERS["email"] in str(sink.messages[0]["To"])
    database = Database(url)
    try:
        with database.unit_of_work() as uow:
            names = uow.session.scalars(select(Account.name)).all()
    finally:
        database.dispose()
    assert names == [PERSON_ANSWERS["email"]]
