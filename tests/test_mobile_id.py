"""行動自然人憑證 on the portal (issue 17, DESIGN.md §13): the card step, 憑證登入 and 忘記密碼
through the JSON API with the mock TW FidO service (engine/testing/twfido.py) over real HTTP.

The phone is played with the mock's own controls; the portal's clock is the mock's, so a test
moves time past the 4-second poll pacing and past a ticket's deadline without waiting.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from engine import App, FixedClock, Settings, bootstrap
from engine._settings import TwFidoSettings
from engine.core.identifiers import national_id_check_digit
from engine.pki.certificate import load_certificate
from engine.services.hashing import PasswordHasher
from engine.store import Certificate, MobileIdTicket
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.twfido import TwFidoHolder, TwFidoMock
from engine.web import create_app
from tests.conftest import PERSON_ANSWERS
from tests.helpers import registration_row
from tests.test_api import csrf, error, start

KEY = bytes(range(64, 96))
SERVICE = "SP-SWREG-PORTAL"
PERSON_ID = str(PERSON_ANSWERS["national_id"])  # 王小明, last four 6789
OTHER_ID = "B123456780"  # nobody's mobile certificate
NEW_PASSWORD = {"password": "NewSecret2026", "password_confirm": "NewSecret2026"}


def fingerprint(card: IssuedCard) -> str:
    return load_certificate(card.der()).fingerprint


def same_last_four(national_id: str) -> str:
    """Another valid ID with the same last four digits (the certificate holds only those)."""
    for letter in "BCDEFGH":
        for middle in range(10000):
            first_nine = f"{letter}{national_id[1]}{middle:04d}{national_id[6:9]}"
            if str(national_id_check_digit(first_nine)) == national_id[9]:
                return first_nine + national_id[9]
    raise AssertionError("no such ID")


@pytest.fixture
def mobile(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("王小明", "6789", key="rsa", card_rank="mobile")


@pytest.fixture
def fido(mobile: IssuedCard, clock: FixedClock) -> Iterator[TwFidoMock]:
    with TwFidoMock({SERVICE: KEY}, {PERSON_ID: TwFidoHolder(mobile)}, clock=clock) as mock:
        yield mock


@pytest.fixture
def app(settings: Settings, clock: FixedClock, pki: TestPKI, fido: TwFidoMock) -> Iterator[App]:
    twfido = TwFidoSettings(fido.url, SERVICE, KEY, 180, timedelta(seconds=5), push=True)
    application = bootstrap(replace(settings, twfido=twfido), clock=clock)
    pki.publish_to(application.trust, actor="test")
    yield application
    application.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def begin(client: TestClient, url: str, **body: Any) -> httpx.Response:
    response: httpx.Response = client.post(url, json=body, headers=csrf(client))
    return response


def poll(client: TestClient, url: str, pending_id: str, **body: Any) -> httpx.Response:
    response: httpx.Response = client.post(
        url, json={"pending_id": pending_id, **body}, headers=csrf(client)
    )
    return response


def tickets(app: App) -> int:
    with app.database.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(MobileIdTicket)) or 0)


def only_ticket(fido: TwFidoMock) -> str:
    (ticket,) = fido.pending()
    return ticket.sp_ticket_id


class Wizard:
    """A 個人 registration at its card step in one browser (the client keeps its cookie)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        view = start(client, "person.general").json()
        self.id = view["id"]
        self.url = f"/api/registrations/{self.id}/mobile-id"

    def begin(self, national_id: str = PERSON_ID, **body: Any) -> httpx.Response:
        return begin(self.client, self.url, national_id=national_id, **body)

    def poll(self, pending_id: str) -> httpx.Response:
        return poll(self.client, self.url + "/poll", pending_id)


def approved(wizard: Wizard, fido: TwFidoMock, clock: FixedClock) -> dict[str, Any]:
    started = wizard.begin()
    assert started.status_code == 200, started.text
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    done = wizard.poll(started.json()["pending_id"])
    assert done.status_code == 200, done.text
    body: dict[str, Any] = done.json()
    return body


# -- the card step ---------------------------------------------------------------------------


def test_a_person_registers_with_the_mobile_id(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock, mobile: IssuedCard
) -> None:
    wizard = Wizard(client)
    started = wizard.begin()
    assert started.status_code == 200, started.text
    ticket = started.json()
    assert ticket["qr"].startswith("data:image/svg+xml")
    assert ticket["app_link"].startswith("mobilemoica://moica.moi.gov.tw/a2a/verifySign?sp_ticket=")
    assert ticket["poll_after"] == 4 and tickets(app) == 1
    (pending,) = fido.pending()
    assert pending.id_num == PERSON_ID and pending.op_mode == "I-SCAN"
    # what the phone signs is the card step's own challenge payload
    sent = fido.requests[-1].data["sign_info"]["sign_data"]
    assert len(base64.b64decode(sent)) == 96

    asked = len(fido.requests)
    assert wizard.poll(ticket["pending_id"]).json() == {
        "status": "pending", "poll_after": 4, "registration": None, "login": None, "reset": None,
    }  # fmt: skip
    assert len(fido.requests) == asked  # polled within 4 s of the ticket: MOI is not asked
    clock.advance(timedelta(seconds=4))
    assert wizard.poll(ticket["pending_id"]).json()["status"] == "pending"
    assert len(fido.requests) == asked + 1
    assert wizard.poll(ticket["pending_id"]).json()["status"] == "pending"
    assert len(fido.requests) == asked + 1  # again within 4 s: not asked

    fido.approve(pending.sp_ticket_id)
    clock.advance(timedelta(seconds=4))
    done = wizard.poll(ticket["pending_id"]).json()
    assert done["status"] == "done"
    assert done["registration"]["state"] == "basic_data"
    assert done["registration"]["data"]["contact_name"] == "王小明"
    assert tickets(app) == 0
    row = registration_row(app, wizard.id)
    assert row.certificate_fingerprint == fingerprint(mobile)
    assert row.evidence is not None
    assert row.evidence["mobile_id"] == {
        "bridge": "twfido",
        "national_id_hash": app.identifiers.hash("national_id", PERSON_ID),
        "hashed_id_num": fido.hashed_id_num(PERSON_ID),
        "sp_ticket_id": pending.sp_ticket_id,
        "transaction_id": pending.transaction_id,
    }
    assert row.evidence["identity"]["card_rank"] == "mobile"

    # the same pending id again: the registration has moved on (and the ticket is spent)
    again = wizard.poll(ticket["pending_id"])
    assert (again.status_code, error(again)["code"]) == (422, "invalid_transition")

    finished = client.post(
        f"/api/registrations/{wizard.id}/step", json=PERSON_ANSWERS, headers=csrf(client)
    )
    assert finished.status_code == 200, finished.text
    assert finished.json()["state"] == "completed"
    assert finished.json()["account"] == "m**g@example.com"  # masked to the browser
    with app.database.unit_of_work() as uow:
        certificate = uow.session.scalars(select(Certificate)).one()
        assert (certificate.fingerprint, certificate.card_rank, certificate.purpose) == (
            fingerprint(mobile), "mobile", "login",
        )  # fmt: skip
        assert certificate.national_id_hash == app.identifiers.hash("national_id", PERSON_ID)


def test_basic_data_must_name_the_id_the_phone_was_asked_for(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """The certificate holds only the ID's last four digits: another ID ending alike would
    pass the card's own binding, so the ID sent to MOI decides."""
    wizard = Wizard(client)
    assert approved(wizard, fido, clock)["registration"]["state"] == "basic_data"
    lookalike = same_last_four(PERSON_ID)
    refused = client.post(
        f"/api/registrations/{wizard.id}/step",
        json={**PERSON_ANSWERS, "national_id": lookalike},
        headers=csrf(client),
    )
    assert refused.status_code == 422
    assert (error(refused)["code"], error(refused)["field"]) == ("identity_mismatch", "national_id")
    assert registration_row(app, wizard.id).state == "basic_data"


def test_refused_on_the_phone(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.reject(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    refused = wizard.poll(pending_id)
    assert (refused.status_code, error(refused)["code"]) == (422, "mobile_id_rejected")
    assert tickets(app) == 0
    row = registration_row(app, wizard.id)
    assert (row.state, row.evidence, row.certificate_der) == ("card_check", None, None)
    # start again: a new ticket works
    assert approved(wizard, fido, clock)["registration"]["state"] == "basic_data"


def test_a_ticket_that_times_out(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.expire(only_ticket(fido))  # the service's deadline
    clock.advance(timedelta(seconds=4))
    late = wizard.poll(pending_id)
    assert (late.status_code, error(late)["code"]) == (422, "mobile_id_timeout")
    assert tickets(app) == 0

    pending_id = wizard.begin().json()["pending_id"]
    clock.advance(timedelta(seconds=181))  # swreg's own deadline: MOI is not asked
    asked = len(fido.requests)
    late = wizard.poll(pending_id)
    assert error(late)["code"] == "mobile_id_timeout" and len(fido.requests) == asked
    assert registration_row(app, wizard.id).state == "card_check"


def test_a_tampered_answer_is_refused_and_nothing_is_stored(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.tamper_checksum = "result"
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    refused = wizard.poll(pending_id)
    assert (refused.status_code, error(refused)["code"]) == (422, "signature_invalid")
    row = registration_row(app, wizard.id)
    assert (row.state, row.evidence, row.certificate_fingerprint) == ("card_check", None, None)
    assert tickets(app) == 0


def test_another_persons_certificate_is_refused(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock, pki: TestPKI
) -> None:
    """The service answers with a certificate whose last four ID digits are not the ID's."""
    fido.holders[PERSON_ID] = TwFidoHolder(
        pki.issue_person("陳大文", "1234", key="rsa", card_rank="mobile")
    )
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    refused = wizard.poll(pending_id)
    assert refused.status_code == 422
    assert (error(refused)["code"], error(refused)["field"]) == ("identity_mismatch", "national_id")
    row = registration_row(app, wizard.id)
    assert (row.state, row.evidence) == ("card_check", None)


def test_a_malformed_id_and_an_id_without_a_mobile_certificate(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    wizard = Wizard(client)
    asked = len(fido.requests)
    bad = wizard.begin("A123456780")
    assert (bad.status_code, error(bad)["code"], error(bad)["field"]) == (
        422, "invalid_national_id", "national_id",
    )  # fmt: skip
    assert len(fido.requests) == asked  # never sent
    none = wizard.begin(OTHER_ID)
    assert (none.status_code, error(none)["code"]) == (422, "mobile_id_rejected")
    assert tickets(app) == 0


def test_the_service_down(client: TestClient, app: App, fido: TwFidoMock) -> None:
    wizard = Wizard(client)
    fido.http_status = 500
    down = wizard.begin()
    assert (down.status_code, error(down)["code"]) == (503, "mobile_id_unavailable")
    assert tickets(app) == 0


def test_another_browser_cannot_collect_the_answer(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """Without the registration's cookie the pending id is worth nothing, and is not spent."""
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    with TestClient(create_app(app)) as stranger:
        stolen = poll(stranger, wizard.url + "/poll", pending_id)
        assert (stolen.status_code, error(stolen)["code"]) == (404, "registration_not_found")
        as_login = poll(stranger, "/api/login/mobile-id/poll", pending_id)
        assert (as_login.status_code, error(as_login)["code"]) == (422, "challenge_expired")
    assert tickets(app) == 1
    assert wizard.poll(pending_id).json()["status"] == "done"


def test_a_push_to_the_bound_device(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    wizard = Wizard(client)
    started = wizard.begin(push=True)
    assert started.status_code == 200, started.text
    assert (started.json()["qr"], started.json()["app_link"]) == (None, None)
    assert fido.requests[-1].operation == "requestAthOrSignPush"
    assert "op_mode" not in fido.requests[-1].data
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    assert wizard.poll(started.json()["pending_id"]).json()["status"] == "done"


def test_a_push_only_where_the_operator_allows_it(
    settings: Settings, clock: FixedClock, fido: TwFidoMock
) -> None:
    """Off by default (SWREG_TWFIDO_PUSH): whoever knows an ID could otherwise make that
    person's phone ask, unprompted, to approve what someone else started."""
    twfido = TwFidoSettings(fido.url, SERVICE, KEY, 180, timedelta(seconds=5))
    application = bootstrap(replace(settings, twfido=twfido), clock=clock)
    try:
        with TestClient(create_app(application)) as browser:
            refused = begin(browser, "/api/login/mobile-id", national_id=PERSON_ID, push=True)
            assert (refused.status_code, error(refused)["code"], error(refused)["field"]) == (
                422, "invalid_value", "push",
            )  # fmt: skip
            assert fido.requests == []
            assert 'id="mobile-push"' not in browser.get("/login").text
            assert begin(browser, "/api/login/mobile-id", national_id=PERSON_ID).status_code == 200
    finally:
        application.close()


def test_one_persons_phone_is_asked_at_most_five_times_in_ten_minutes(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    wizard = Wizard(client)
    for _ in range(5):
        assert wizard.begin().status_code == 200
    asked = len(fido.requests)
    flooded = wizard.begin()
    assert (flooded.status_code, error(flooded)["code"]) == (429, "rate_limited")
    assert len(fido.requests) == asked


def test_without_a_configured_service(settings: Settings, clock: FixedClock, pki: TestPKI) -> None:
    application = bootstrap(settings, clock=clock)
    try:
        with TestClient(create_app(application)) as plain:
            wizard = Wizard(plain)
            refused = wizard.begin()
            assert (refused.status_code, error(refused)["code"]) == (503, "mobile_id_unavailable")
            login = begin(plain, "/api/login/mobile-id", national_id=PERSON_ID)
            assert error(login)["code"] == "mobile_id_unavailable"
    finally:
        application.close()


def test_abandoned_tickets_are_purged(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    Wizard(client).begin()
    assert app.retention.purge().mobile_tickets == 0  # still running
    clock.advance(timedelta(seconds=181))
    assert app.retention.purge().mobile_tickets == 1
    assert tickets(app) == 0


# -- 憑證登入 and 忘記密碼 ---------------------------------------------------------------------


@pytest.fixture
def registered(client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock) -> str:
    """王小明 registered with the mobile ID and activated; the account name."""
    wizard = Wizard(client)
    approved(wizard, fido, clock)
    done = client.post(
        f"/api/registrations/{wizard.id}/step", json=PERSON_ANSWERS, headers=csrf(client)
    )
    assert done.json()["state"] == "completed"
    name = str(PERSON_ANSWERS["email"])
    app.accounts.activate(app.accounts.send_activation(name))
    return name


def test_login_with_the_mobile_id(
    registered: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    with TestClient(create_app(app)) as browser:
        started = begin(browser, "/api/login/mobile-id", national_id=PERSON_ID)
        assert started.status_code == 200, started.text
        pending_id = started.json()["pending_id"]
        assert browser.get("/api/session").status_code == 403
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        done = poll(browser, "/api/login/mobile-id/poll", pending_id)
        assert done.status_code == 200, done.text
        assert done.json()["login"]["account"] == registered
        session = browser.get("/api/session")
        assert (session.status_code, session.json()["account"]) == (200, registered)


def test_a_mobile_id_not_registered_does_not_log_in(
    app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    with TestClient(create_app(app)) as browser:
        pending_id = begin(browser, "/api/login/mobile-id", national_id=PERSON_ID).json()[
            "pending_id"
        ]
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        refused = poll(browser, "/api/login/mobile-id/poll", pending_id)
        assert error(refused)["code"] == "not_registered"
        assert browser.get("/api/session").status_code == 403


def test_forgotten_password_with_the_mobile_id(
    registered: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    url = "/api/password-reset/mobile-id"
    with TestClient(create_app(app)) as browser:
        started = begin(browser, url, account=registered, national_id=PERSON_ID)
        assert started.status_code == 200, started.text
        pending_id = started.json()["pending_id"]
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        asked = len(fido.requests)
        weak = poll(
            browser, url + "/poll", pending_id, account=registered,
            password="short", password_confirm="short",
        )  # fmt: skip
        assert (weak.status_code, error(weak)["field"]) == (422, "password")
        assert len(fido.requests) == asked and tickets(app) == 1  # the answer is not spent
        wrong_account = poll(browser, url + "/poll", pending_id, account="x@example.com",
                             **NEW_PASSWORD)  # fmt: skip
        assert error(wrong_account)["code"] == "challenge_expired"
        done = poll(browser, url + "/poll", pending_id, account=registered, **NEW_PASSWORD)
        assert done.status_code == 200, done.text
        assert done.json()["reset"]["account"] == registered
    with app.database.unit_of_work() as uow:
        account = uow.accounts.get_by_name(registered)
        assert account is not None
        assert PasswordHasher().verify(account.password_hash, NEW_PASSWORD["password"])


def test_a_company_registration_cannot_use_the_mobile_id(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    """The mobile ID is a person's (MOICA): a 企業 type is refused before MOI is asked."""
    view = start(client, "enterprise.general").json()
    refused = begin(client, f"/api/registrations/{view['id']}/mobile-id", national_id=PERSON_ID)
    assert (refused.status_code, error(refused)["code"]) == (422, "certificate_type_mismatch")
    assert fido.requests == [] and tickets(app) == 0
