"""Audit rows never hold a personal value in clear (DESIGN.md §6; issue 13, item 5).

Issue 13 found the e-mail account name in clear, next to its masked copy, in ``activation_sent``,
``activated``, ``login``, ``logout`` and ``card_replaced``. Here a person goes through a whole
life over the HTTP API, from a client address of its own: registration, activation, a reminder,
login, logout, 憑證更換作業, log out everywhere, and five wrong renewal passwords that lock the
account. Then every column of every audit row (the JSON diff included) is searched for the
clear e-mail address (and its local part), the national ID, the other personal fields and the
client's address (the audit actor holds a keyed hash of it: "client addresses are kept as keyed
hashes").
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from engine import App, FixedClock, Settings, bootstrap
from engine._settings import MailSettings
from engine.core.identifiers import mask_email
from engine.store import AuditEntry
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from tests.conftest import PERSON_ANSWERS, PKI_NOW

EMAIL = "wang.xiaoming@example.com"
NATIONAL_ID = PERSON_ANSWERS["national_id"]  # A123456789
CLIENT_IP = "198.51.100.23"
ORIGIN_LINK = re.compile(r"/activate/([A-Za-z0-9_-]{43})")
ANSWERS = {**PERSON_ANSWERS, "email": EMAIL}
PERSONAL = {
    "e-mail address": EMAIL,
    "e-mail local part": EMAIL.split("@")[0],
    "national ID": NATIONAL_ID,
    "national ID digits": NATIONAL_ID[1:],
    "phone": PERSON_ANSWERS["phone"],
    "phone digits": PERSON_ANSWERS["phone"].replace("-", ""),
    "address": PERSON_ANSWERS["address"],
    "birth date": PERSON_ANSWERS["birth_date"],
    "password": PERSON_ANSWERS["password"],
    "name": PERSON_ANSWERS["contact_name"],
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def csrf(client: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.get("/api/csrf").json()["token"]}


def signed(card: IssuedCard, challenge: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "challenge_id": challenge["challenge_id"],
        "certificate": b64(card.der()),
        "signature": b64(card.sign(base64.b64decode(challenge["payload"]))),
        "chain": [b64(der) for der in card.chain_der()],
        **extra,
    }


def ok(response: Any) -> Any:
    assert response.is_success, response.text
    return response.json()


def with_card(
    client: TestClient, url: str, challenge_url: str, card: IssuedCard, **extra: Any
) -> Any:
    headers = csrf(client)
    challenge = ok(client.post(challenge_url, headers=headers))
    return client.post(url, json=signed(card, challenge, **extra), headers=headers)


def register(client: TestClient, card: IssuedCard) -> None:
    view = ok(
        client.post(
            "/api/registrations", json={"type": "person.general", "consent": True},
            headers=csrf(client),
        )
    )  # fmt: skip
    base = f"/api/registrations/{view['id']}"
    view = ok(with_card(client, f"{base}/card", f"{base}/challenge", card))
    while view["state"] != "completed":
        view = ok(client.post(f"{base}/step", json=ANSWERS, headers=csrf(client)))


def activation_token(outbox: Path) -> str:
    for path in sorted(outbox.glob("*.eml")):
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        text = "".join(
            part.get_content() for part in mail.walk() if part.get_content_type() == "text/plain"
        )
        found = ORIGIN_LINK.search(text)
        if found:
            return found.group(1)
    raise AssertionError("no activation mail in the outbox")


def log_in(client: TestClient, card: IssuedCard) -> None:
    ok(with_card(client, "/api/login", "/api/login/challenge", card))


@pytest.fixture
def lived(settings: Settings, clock: FixedClock, pki: TestPKI, tmp_path: Path) -> Iterator[App]:
    """An app whose audit log holds a person's whole life, driven from :data:`CLIENT_IP`."""
    outbox = tmp_path / "outbox"
    app = bootstrap(replace(settings, mail=MailSettings(outbox=outbox)), clock=clock)
    pki.publish_to(app.trust, actor="test")
    old = pki.issue_person("王小明", "6789", valid_to=PKI_NOW + timedelta(days=2))
    new = pki.issue_person("王小明", "6789")
    try:
        with TestClient(create_app(app), client=(CLIENT_IP, 50000)) as client:
            register(client, old)
            ok(client.post("/api/activate", json={"token": activation_token(outbox)},
                           headers=csrf(client)))  # fmt: skip
            assert app.reminders.send_due(days=60, actor="cli").sent == 1
            log_in(client, old)
            ok(client.post("/api/logout", headers=csrf(client)))
            log_in(client, old)
            ok(with_card(client, "/api/renewal", "/api/renewal/challenge", new))
            log_in(client, new)
            assert ok(client.post("/api/sessions/logout-all", headers=csrf(client))) == {
                "ok": True, "sessions_ended": 1,
            }  # fmt: skip
            another = pki.issue_person("王小明", "6789")
            for _ in range(5):
                refused = with_card(
                    client, "/api/renewal", "/api/renewal/challenge", another,
                    account=EMAIL, password="Wr0ngPass1",
                )  # fmt: skip
                assert refused.status_code == 403
        yield app
    finally:
        app.close()


def audit_rows(app: App) -> list[dict[str, Any]]:
    """Every column of every audit row, as stored."""
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        columns = [column.key for column in AuditEntry.__table__.columns]
        return [{name: getattr(row, name) for name in columns} for row in rows]


def as_text(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str).lower()


def test_the_life_leaves_the_expected_events(lived: App) -> None:
    events = [row["event"] for row in audit_rows(lived)]
    for event in (
        "activation_sent", "activated", "reminder_sent", "login", "logout", "card_replaced",
        "logout_all", "account_locked",
    ):  # fmt: skip
        assert event in events, event
    with lived.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_no_audit_row_holds_a_personal_value_in_clear(lived: App) -> None:
    rows = audit_rows(lived)
    found = [
        (row["seq"], row["event"], what)
        for row in rows
        for what, value in PERSONAL.items()
        if value.lower() in as_text(row)
    ]
    assert found == []
    masked = mask_email(EMAIL)
    assert masked == "w***********g@example.com"  # DESIGN.md §5: one * per hidden character
    named = {row["event"] for row in rows if masked in json.dumps(row["diff"], ensure_ascii=False)}
    assert {"activation_sent", "activated", "login", "logout", "card_replaced"} <= named
    assert {"logout_all", "account_locked", "reminder_sent"} <= named


def test_no_audit_row_holds_the_client_address(lived: App) -> None:
    rows = audit_rows(lived)
    found = [(row["seq"], row["event"]) for row in rows if CLIENT_IP in as_text(row)]
    assert found == []
