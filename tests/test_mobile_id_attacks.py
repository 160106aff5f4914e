"""行動自然人憑證 under attack (issue 17, DESIGN.md §13, DOMAIN.md §4.6): one test per attack on
the portal's mobile ID flows, each asserting the safe behaviour with exact codes and exact
stored rows. The phone is played with the mock TW FidO service (engine/testing/twfido.py) over
real HTTP; the portal's clock is the mock's (tests/test_mobile_id.py sets them up, and its
fixtures are imported by name). The races run real threads on the test database.
"""
# ruff: noqa: F811 - the imported fixtures are parameters of the tests

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine import App, FixedClock, Settings, bootstrap
from engine._errors import SwregError
from engine._settings import TwFidoSettings
from engine.cli import app as cli_app
from engine.core.identifiers import national_id_check_digit
from engine.services.login import LoginResult
from engine.store import (
    AuditEntry,
    Certificate,
    Challenge,
    LoginChallenge,
    LoginSession,
    MobileIdTicket,
    RateLimitWindow,
)
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.twfido import TwFidoHolder, TwFidoMock
from engine.web import create_app
from tests.conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET
from tests.test_api import card_check, csrf, error, start
from tests.test_concurrency import race
from tests.test_mobile_id import (  # noqa: F401  (fixtures)
    KEY,
    NEW_PASSWORD,
    PERSON_ID,
    SERVICE,
    Wizard,
    app,
    begin,
    client,
    fido,
    fingerprint,
    mobile,
    only_ticket,
    poll,
    registered,
    registration_row,
    tickets,
)

LOGIN = "/api/login/mobile-id"
RESET = "/api/password-reset/mobile-id"
FULL_WIDTH_ID = "Ａ１２３４５６７８９"  # PERSON_ID typed with a Chinese IME in full-width mode
B_ID = "B120000008"  # 陳大文: a physical 自然人憑證, no mobile certificate
B_ANSWERS: dict[str, Any] = {
    **PERSON_ANSWERS,
    "email": "chen@example.com",
    "contact_name": "陳大文",
    "national_id": B_ID,
}


def valid_id(letter: str, middle: int) -> str:
    first_nine = f"{letter}1{middle:07d}"
    return first_nine + str(national_id_check_digit(first_nine))


def rows(app: App, model: type[Any]) -> int:
    with app.database.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def audit(app: App) -> list[AuditEntry]:
    with app.database.unit_of_work() as uow:
        entries = list(uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
        for entry in entries:
            uow.session.expunge(entry)
        return entries


def events(app: App) -> list[str]:
    return [entry.event for entry in audit(app)]


def password_hash(app: App, name: str) -> str:
    with app.database.unit_of_work() as uow:
        account = uow.accounts.get_by_name(name)
        assert account is not None
        return account.password_hash


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(error(response)["code"])


def pending_ticket(app: App) -> MobileIdTicket:
    with app.database.unit_of_work() as uow:
        row = uow.session.scalars(select(MobileIdTicket)).one()
        uow.session.expunge(row)
        return row


@pytest.fixture
def b_card(pki: TestPKI) -> IssuedCard:
    assert valid_id("B", 2000000) == B_ID
    return pki.issue_person("陳大文", B_ID[-4:])


@pytest.fixture
def b_account(client: TestClient, app: App, b_card: IssuedCard) -> str:
    """陳大文 registered with a physical card (no mobile certificate) and activated."""
    view = start(client, "person.general").json()
    assert card_check(client, view["id"], b_card).status_code == 200
    done = client.post(
        f"/api/registrations/{view['id']}/step", json=B_ANSWERS, headers=csrf(client)
    )
    assert done.json()["state"] == "completed", done.text
    name = str(B_ANSWERS["email"])
    app.accounts.activate(app.accounts.send_activation(name))
    return name


# -- stealing, guessing and replaying a pending id ----------------------------------------------


def test_a_pending_id_answers_only_its_own_registration(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """The same browser holds two registrations: the phone's answer for the first cannot
    move the second (the ticket's subject is its registration), and is not spent trying."""
    first, second = Wizard(client), Wizard(client)
    pending_id = first.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    asked = len(fido.requests)
    replayed = second.poll(pending_id)
    assert code(replayed) == (422, "challenge_expired")
    assert len(fido.requests) == asked and tickets(app) == 1
    other = registration_row(app, second.id)
    assert (other.state, other.evidence, other.certificate_der) == ("card_check", None, None)
    assert first.poll(pending_id).json()["status"] == "done"


def test_a_registration_answer_cannot_log_in_or_reset_a_password(
    registered: str, client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """The phone signed for a registration: offered to 憑證登入 or 忘記密碼 (same browser) it
    is unknown there, MOI is not asked, no session opens, no password changes."""
    before = password_hash(app, registered)
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    asked = len(fido.requests)
    sessions = rows(app, LoginSession)
    as_login = poll(client, LOGIN + "/poll", pending_id)
    as_reset = poll(client, RESET + "/poll", pending_id, account=registered, **NEW_PASSWORD)
    assert code(as_login) == (422, "challenge_expired")
    assert code(as_reset) == (422, "challenge_expired")
    assert len(fido.requests) == asked and tickets(app) == 1
    assert rows(app, LoginSession) == sessions
    assert password_hash(app, registered) == before
    assert "password_reset" not in events(app)


def test_a_login_answer_cannot_reset_the_password(
    registered: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """An attacker who got a login's pending id (the phone approved a login) tries it on the
    忘記密碼 poll to set a password of his own: unknown there; the login still works."""
    before = password_hash(app, registered)
    with TestClient(create_app(app)) as browser:
        pending_id = begin(browser, LOGIN, national_id=PERSON_ID).json()["pending_id"]
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        stolen = poll(browser, RESET + "/poll", pending_id, account=registered, **NEW_PASSWORD)
        assert code(stolen) == (422, "challenge_expired")
        assert password_hash(app, registered) == before and tickets(app) == 1
        assert poll(browser, LOGIN + "/poll", pending_id).json()["login"]["account"] == registered
    assert "password_reset" not in events(app)


def test_a_guessed_or_oversized_pending_id(client: TestClient, app: App, fido: TwFidoMock) -> None:
    wizard = Wizard(client)
    wizard.begin()
    asked = len(fido.requests)
    guessed = wizard.poll("A" * 43)
    assert code(guessed) == (422, "challenge_expired")
    oversized = wizard.poll("A" * 65)
    assert code(oversized) == (422, "field_too_long")
    assert error(oversized)["field"] == "pending_id"
    not_text = client.post(wizard.url + "/poll", json={"pending_id": 12}, headers=csrf(client))
    assert code(not_text) == (422, "invalid_value")
    missing = client.post(wizard.url + "/poll", json={}, headers=csrf(client))
    assert code(missing) == (422, "field_required")
    assert len(fido.requests) == asked and tickets(app) == 1


# -- person A's phone, person B's account ------------------------------------------------------


def test_person_a_phone_cannot_reset_person_b_password(
    registered: str, b_account: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """王小明 (mobile ID) asks 忘記密碼 for 陳大文's account with his own phone: refused at the
    end (not_authorized on account), 陳大文's password and sessions untouched."""
    before = password_hash(app, b_account)
    with TestClient(create_app(app)) as attacker:
        started = begin(attacker, RESET, account=b_account, national_id=PERSON_ID)
        assert started.status_code == 200, started.text
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        refused = poll(
            attacker, RESET + "/poll", started.json()["pending_id"], account=b_account,
            **NEW_PASSWORD,
        )  # fmt: skip
        assert code(refused) == (403, "not_authorized")
        assert error(refused)["field"] == "account"
    assert password_hash(app, b_account) == before
    assert "password_reset" not in events(app)
    assert tickets(app) == 0  # the answer is spent


def test_person_b_id_cannot_reach_person_a_phone_answer(
    registered: str, b_account: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """The begin names 陳大文's account and ID (no mobile certificate: MOI refuses at once)."""
    with TestClient(create_app(app)) as attacker:
        refused = begin(attacker, RESET, account=b_account, national_id=B_ID)
        assert code(refused) == (422, "mobile_id_rejected")
    assert tickets(app) == 0 and fido.pending() == []


def test_a_reset_begin_tells_nothing_about_the_account(
    registered: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """忘記密碼 for an account that does not exist: the begin answers as for a real one (no
    account enumeration), the refusal comes once the phone has signed, nothing is changed."""
    before = password_hash(app, registered)
    with TestClient(create_app(app)) as browser:
        known = begin(browser, RESET, account=registered, national_id=PERSON_ID)
        unknown = begin(browser, RESET, account="nobody@example.com", national_id=PERSON_ID)
        assert (known.status_code, unknown.status_code) == (200, 200)
        assert set(known.json()) == set(unknown.json())
        for ticket in fido.pending():
            fido.approve(ticket.sp_ticket_id)
        clock.advance(timedelta(seconds=4))
        refused = poll(
            browser, RESET + "/poll", unknown.json()["pending_id"], account="nobody@example.com",
            **NEW_PASSWORD,
        )  # fmt: skip
        assert code(refused) == (403, "not_authorized")
    assert password_hash(app, registered) == before
    assert "password_reset" not in events(app)


def test_a_reset_begin_without_an_account_asks_no_phone(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    """忘記密碼 with the account left blank: field_required (account) at the begin, before
    anybody's phone is asked or the person's signings are counted (else a blank form pushes
    a phone for an answer that can only be refused)."""
    limits = rows(app, RateLimitWindow)
    for blank in ("", "   "):
        refused = begin(client, RESET, account=blank, national_id=PERSON_ID, push=True)
        assert code(refused) == (422, "field_required")
        assert error(refused)["field"] == "account"
    assert fido.requests == [] and tickets(app) == 0
    assert rows(app, RateLimitWindow) == limits + 1  # the client's reset limit only


def register_b_with_a_phone(client: TestClient, fido: TwFidoMock, clock: FixedClock,
                            pki: TestPKI) -> IssuedCard:  # fmt: skip
    """陳大文 registers with his own mobile certificate; returns it."""
    phone = pki.issue_person("陳大文", B_ID[-4:], key="rsa", card_rank="mobile")
    fido.holders[B_ID] = TwFidoHolder(phone)
    wizard = Wizard(client)
    pending_id = wizard.begin(B_ID).json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    assert wizard.poll(pending_id).json()["status"] == "done"
    done = client.post(f"/api/registrations/{wizard.id}/step", json=B_ANSWERS, headers=csrf(client))
    assert done.json()["state"] == "completed", done.text
    return phone


def test_a_login_checks_the_phone_binding(
    registered: str, client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock,
    pki: TestPKI,
) -> None:  # fmt: skip
    """DESIGN.md §13's binding holds for 憑證登入 too: the service answers 王小明's ticket with
    陳大文's certificate (its last four ID digits are not the ID sent): identity_mismatch, no
    session, as the card step refuses it (test_mobile_id.py)."""
    b_phone = register_b_with_a_phone(client, fido, clock, pki)
    app.accounts.activate(app.accounts.send_activation(str(B_ANSWERS["email"])))
    fido.holders[PERSON_ID] = TwFidoHolder(b_phone)
    sessions = rows(app, LoginSession)
    with TestClient(create_app(app)) as browser:
        pending_id = begin(browser, LOGIN, national_id=PERSON_ID).json()["pending_id"]
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        refused = poll(browser, LOGIN + "/poll", pending_id)
        assert code(refused) == (422, "identity_mismatch")
        assert error(refused)["field"] == "national_id"
        assert browser.get("/api/session").status_code == 403
    assert rows(app, LoginSession) == sessions
    assert tickets(app) == 0


def test_a_reset_checks_the_phone_binding(
    registered: str, client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock,
    pki: TestPKI,
) -> None:  # fmt: skip
    """The same for 忘記密碼: 王小明's ticket answered with 陳大文's certificate cannot set
    陳大文's password."""
    b_phone = register_b_with_a_phone(client, fido, clock, pki)
    b_name = str(B_ANSWERS["email"])
    app.accounts.activate(app.accounts.send_activation(b_name))
    before = password_hash(app, b_name)
    fido.holders[PERSON_ID] = TwFidoHolder(b_phone)
    with TestClient(create_app(app)) as browser:
        started = begin(browser, RESET, account=b_name, national_id=PERSON_ID)
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        refused = poll(
            browser, RESET + "/poll", started.json()["pending_id"], account=b_name,
            **NEW_PASSWORD,
        )  # fmt: skip
        assert code(refused) == (422, "identity_mismatch")
    assert password_hash(app, b_name) == before
    assert "password_reset" not in events(app)


def test_the_audit_tells_a_phone_from_a_card(
    registered: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """A login and a reset with the phone are audited as such (``bridge: twfido``, as the card
    step's audit row says), not as a card's: an investigator must be able to tell them apart
    and find MOI's transaction."""
    with TestClient(create_app(app)) as browser:
        pending_id = begin(browser, LOGIN, national_id=PERSON_ID).json()["pending_id"]
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        assert poll(browser, LOGIN + "/poll", pending_id).status_code == 200
        clock.advance(timedelta(minutes=1))
        started = begin(browser, RESET, account=registered, national_id=PERSON_ID)
        fido.approve(only_ticket(fido))
        clock.advance(timedelta(seconds=4))
        done = poll(
            browser, RESET + "/poll", started.json()["pending_id"], account=registered,
            **NEW_PASSWORD,
        )  # fmt: skip
        assert done.status_code == 200, done.text
    trail = {e.event: e.diff for e in audit(app)}
    assert trail["login"].get("bridge") == "twfido"
    assert trail["password_reset"].get("bridge") == "twfido"


def test_the_phone_time_never_outlives_the_challenge(
    settings: Settings, clock: FixedClock, pki: TestPKI, fido: TwFidoMock
) -> None:
    """SWREG_TWFIDO_TIME_LIMIT may be 600 s, a challenge lives 5 minutes: the browser must not
    be told (nor MOI asked for) a time the challenge will not honour, else a person who
    confirms on the phone in minute 6 gets challenge_expired for an answer given in time."""
    twfido = TwFidoSettings(fido.url, SERVICE, KEY, 600, timedelta(seconds=5))
    application = bootstrap(replace(settings, twfido=twfido), clock=clock)
    try:
        pki.publish_to(application.trust, actor="test")
        with TestClient(create_app(application)) as browser:
            wizard = Wizard(browser)
            started = wizard.begin()
            assert started.status_code == 200, started.text
            with application.database.unit_of_work() as uow:
                challenge = uow.session.scalars(select(Challenge)).one()
                challenge_ends = challenge.expires_at
            ticket_ends = pending_ticket(application).expires_at
            assert ticket_ends <= challenge_ends
            (sent,) = [r for r in fido.requests if r.operation == "getSpTicket"]
            assert int(sent.data["time_limit"]) <= 300
    finally:
        application.close()


# -- racing polls ------------------------------------------------------------------------------


def test_two_racing_login_polls_open_one_session(
    registered: str, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """Three workers poll one approved login at once: one session, the others pending or
    spent (the poll slot is claimed atomically, the ticket removed once)."""
    pending = app.logins.begin_mobile_id(PERSON_ID, origin="https://portal.example")
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    sessions = rows(app, LoginSession)

    def collect() -> LoginResult | None:
        return app.logins.collect_mobile_id(pending.pending_id, origin="https://portal.example")

    results = race(3, lambda _: collect())
    logged_in = [r for r in results if isinstance(r, LoginResult)]
    assert len(logged_in) == 1
    others = [r if r is None else str(r.code) for r in results if not isinstance(r, LoginResult)]
    assert set(others) <= {None, "challenge_expired"}
    assert rows(app, LoginSession) == sessions + 1
    assert events(app).count("login") == 1
    assert tickets(app) == 0


def test_two_racing_registration_polls_move_it_once(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock, mobile: IssuedCard
) -> None:
    """Three workers poll one approved registration at once: one card check, one audit row."""
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))

    def collect() -> Any:
        return app.registrations.collect_mobile_id(wizard.id, pending_id)

    results = race(3, lambda _: collect())
    moved = [r for r in results if r is not None and not isinstance(r, SwregError)]
    assert len(moved) == 1 and moved[0].state == "basic_data"
    others = [r if r is None else str(r.code) for r in results if r not in moved]
    # a poll that finds the ticket claimed is pending or spent; one that starts after the
    # winner's commit finds the registration at basic_data already
    assert set(others) <= {None, "challenge_expired", "invalid_transition"}
    row = registration_row(app, wizard.id)
    assert (row.state, row.certificate_fingerprint) == ("basic_data", fingerprint(mobile))
    assert [e.event for e in audit(app) if e.registration_id == wizard.id].count("next") == 2
    assert tickets(app) == 0


# -- the registration moved on, back, away -----------------------------------------------------


def registration_events(app: App, registration_id: str) -> list[str]:
    return [e.event for e in audit(app) if e.registration_id == registration_id]


def test_a_poll_after_the_registration_was_cancelled(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """取消, then the phone's answer: invalid_transition, nothing stored, and MOI is not asked
    for an answer nobody may use (the registration is checked before the ticket is)."""
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    cancelled = client.post(f"/api/registrations/{wizard.id}/cancel", headers=csrf(client))
    assert cancelled.json()["state"] == "cancelled"
    trail = registration_events(app, wizard.id)
    asked = len(fido.requests)
    late = wizard.poll(pending_id)
    assert code(late) == (422, "invalid_transition")
    assert len(fido.requests) == asked
    row = registration_row(app, wizard.id)
    assert (row.state, row.evidence, row.certificate_der) == ("cancelled", None, None)
    assert registration_events(app, wizard.id) == trail


def test_a_poll_after_going_back_to_the_category_step(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """上一步 from the card check: a phone answer arriving afterwards moves nothing."""
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    back = client.post(f"/api/registrations/{wizard.id}/back", headers=csrf(client))
    assert back.json()["state"] == "category", back.text
    trail = registration_events(app, wizard.id)
    asked = len(fido.requests)
    late = wizard.poll(pending_id)
    assert code(late) == (422, "invalid_transition")
    assert len(fido.requests) == asked
    row = registration_row(app, wizard.id)
    assert (row.state, row.evidence, row.certificate_der) == ("category", None, None)
    assert registration_events(app, wizard.id) == trail


def test_a_second_answer_after_basic_data_moves_nothing(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock, mobile: IssuedCard,
    pki: TestPKI,
) -> None:  # fmt: skip
    """Two tickets begun for one registration; after the first moved it to 基本資料, the
    second (another person's phone) cannot replace the certificate."""
    other_id = valid_id("C", 1234567)
    fido.holders[other_id] = TwFidoHolder(
        pki.issue_person("林美麗", other_id[-4:], key="rsa", card_rank="mobile")
    )
    wizard = Wizard(client)
    first = wizard.begin().json()["pending_id"]
    second = wizard.begin(other_id).json()["pending_id"]
    for ticket in fido.pending():
        fido.approve(ticket.sp_ticket_id)
    clock.advance(timedelta(seconds=4))
    assert wizard.poll(first).json()["registration"]["state"] == "basic_data"
    trail = registration_events(app, wizard.id)
    asked = len(fido.requests)
    late = wizard.poll(second)
    assert code(late) == (422, "invalid_transition")
    assert len(fido.requests) == asked
    row = registration_row(app, wizard.id)
    assert (row.state, row.certificate_fingerprint) == ("basic_data", fingerprint(mobile))
    assert row.evidence is not None
    assert row.evidence["mobile_id"]["national_id_hash"] == app.identifiers.hash(
        "national_id", PERSON_ID
    )
    assert registration_events(app, wizard.id) == trail


def test_a_poll_after_the_registration_expired(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """The phone answers in time, but the registration's own idle time ended meanwhile:
    registration_expired, MOI not asked for an answer nobody may use."""
    wizard = Wizard(client)
    deadline = registration_row(app, wizard.id).expires_at
    clock.advance(deadline - clock.now() - timedelta(seconds=60))
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=120))  # the ticket (180 s) is still running
    asked = len(fido.requests)
    late = wizard.poll(pending_id)
    assert code(late) == (422, "registration_expired")
    assert len(fido.requests) == asked
    row = registration_row(app, wizard.id)
    assert (row.state, row.evidence, row.certificate_der) == ("expired", None, None)
    assert registration_events(app, wizard.id)[-1] == "expire"


def test_the_same_phone_certificate_cannot_register_twice(
    registered: str, client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock
) -> None:
    """A second registration with a phone already registered: already_registered, nothing
    stored, the registration still at its card check, the ticket spent."""
    wizard = Wizard(client)
    pending_id = wizard.begin().json()["pending_id"]
    fido.approve(only_ticket(fido))
    clock.advance(timedelta(seconds=4))
    refused = wizard.poll(pending_id)
    assert code(refused) == (409, "already_registered")
    row = registration_row(app, wizard.id)
    assert (row.state, row.evidence, row.certificate_der) == ("card_check", None, None)
    assert tickets(app) == 0 and rows(app, Certificate) == 1


# -- who may begin, and how often ---------------------------------------------------------------


def test_a_company_registration_cannot_begin(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    """The mobile ID is for 個人 types (DESIGN.md §13): a 企業 registration is refused at the
    begin as a card of the wrong kind would be, before MOI or anybody's phone is asked, and
    nothing is written (no ticket, no challenge, nothing counted against the person)."""
    view = start(client, "enterprise.general").json()
    url = f"/api/registrations/{view['id']}/mobile-id"
    limits = rows(app, RateLimitWindow)
    refused = begin(client, url, national_id=PERSON_ID, push=True)
    assert code(refused) == (422, "certificate_type_mismatch")
    assert fido.requests == [] and tickets(app) == 0
    assert rows(app, Challenge) == 0
    assert rows(app, RateLimitWindow) == limits + 1  # the client's step limit only
    row = registration_row(app, view["id"])
    assert (row.state, row.evidence) == ("card_check", None)


def test_the_per_person_limit_holds_across_flows_and_browsers(
    registered: str, client: TestClient, app: App, fido: TwFidoMock
) -> None:
    """Push-bombing one person's phone from several browsers and flows: five signings per ten
    minutes in all, the sixth refused before MOI is asked."""
    browsers = [TestClient(create_app(app)) for _ in range(3)]
    try:
        wizard = Wizard(client)
        assert wizard.begin(push=True).status_code == 200
        assert begin(browsers[0], LOGIN, national_id=PERSON_ID, push=True).status_code == 200
        assert begin(browsers[1], LOGIN, national_id=PERSON_ID, push=True).status_code == 200
        assert (
            begin(
                browsers[2], RESET, account=registered, national_id=PERSON_ID, push=True
            ).status_code
            == 200
        )
        # (the fifth: the `registered` fixture's own registration)
        asked = len(fido.requests)
        flooded = begin(browsers[0], LOGIN, national_id=" a123456789 ", push=True)
        assert code(flooded) == (429, "rate_limited")
        assert len(fido.requests) == asked and tickets(app) == 4
        other = begin(browsers[2], RESET, account="x@example.com", national_id=valid_id("C", 1))
        assert code(other) == (422, "mobile_id_rejected")  # another person: not limited
    finally:
        for browser in browsers:
            browser.close()


def test_a_full_width_id_is_the_same_person(client: TestClient, app: App, fido: TwFidoMock) -> None:
    """Typed with a Chinese IME in full-width mode, the ID is the person's: MOI is sent the
    ASCII ID (it refuses anything else), the ticket keeps its hash, and the per-person limit
    counts it with the ASCII spelling (else every spelling would be five more pushes)."""
    wizard = Wizard(client)
    started = wizard.begin(FULL_WIDTH_ID)
    assert started.status_code == 200, started.text
    (ticket,) = fido.pending()
    assert ticket.id_num == PERSON_ID
    assert pending_ticket(app).national_id_hash == app.identifiers.hash("national_id", PERSON_ID)
    for spelling in ("Ａ12345678９", "A１23456789", " a123456789 ", "A123456789\u200b"):
        assert wizard.begin(spelling).status_code == 200
    flooded = wizard.begin("A12345６789")
    assert code(flooded) == (429, "rate_limited")


def test_odd_national_ids_are_refused_before_anything_is_sent(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    wizard = Wizard(client)
    for value, expected in (
        ("", "field_required"),
        ("   ", "field_required"),
        ("A123 456789", "invalid_national_id"),
        ("A1234567890", "invalid_national_id"),
        ("ı123456789", "invalid_national_id"),  # dotless i: not an ASCII letter
        ("A" * 17, "field_too_long"),
    ):
        refused = wizard.begin(value)
        assert (refused.status_code, error(refused)["code"]) == (422, expected), value
        assert error(refused)["field"] == "national_id"
    for body in ({"national_id": 123456789}, {"national_id": None}, {"push": True}):
        refused = client.post(wizard.url, json=body, headers=csrf(client))
        assert refused.status_code == 422 and error(refused)["field"] == "national_id"
    assert fido.requests == [] and tickets(app) == 0


def test_a_refused_begin_leaves_no_challenge_behind(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    """A begin refused for its input writes nothing: the flow's challenge is issued only once
    the ID is known to be sendable (as tickets are, test_mobile_id.py)."""
    wizard = Wizard(client)
    assert code(wizard.begin("A123456780")) == (422, "invalid_national_id")
    assert code(wizard.begin("")) == (422, "field_required")
    for url, body in ((LOGIN, {}), (RESET, {"account": "ming@example.com"})):
        assert code(begin(client, url, national_id="A123456780", **body)) == (
            422, "invalid_national_id",
        )  # fmt: skip
    assert tickets(app) == 0
    assert (rows(app, Challenge), rows(app, LoginChallenge)) == (0, 0)


def test_a_begin_without_the_registration_cookie(
    client: TestClient, app: App, fido: TwFidoMock
) -> None:
    """Somebody who knows a registration's id but not its secret cannot have a phone asked
    for it, and nothing is counted against the person."""
    wizard = Wizard(client)
    with TestClient(create_app(app)) as stranger:
        refused = begin(stranger, wizard.url, national_id=PERSON_ID, push=True)
        assert code(refused) == (404, "registration_not_found")
    assert fido.requests == [] and tickets(app) == 0 and rows(app, Challenge) == 0
    for _ in range(5):  # the person's five signings are all still there
        assert wizard.begin().status_code == 200


def test_a_begin_without_the_csrf_token(client: TestClient, app: App, fido: TwFidoMock) -> None:
    wizard = Wizard(client)
    for url, body in (
        (wizard.url, {"national_id": PERSON_ID}),
        (LOGIN, {"national_id": PERSON_ID}),
        (RESET, {"account": "ming@example.com", "national_id": PERSON_ID}),
    ):
        refused = client.post(url, json=body)
        assert code(refused) == (403, "csrf_failed")
    assert fido.requests == [] and tickets(app) == 0


# -- what is kept ------------------------------------------------------------------------------


def test_no_clear_id_pending_id_or_key_is_kept(
    client: TestClient, app: App, fido: TwFidoMock, clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The ticket row, the registration's evidence, the audit log and the logs hold neither
    the national ID in clear, nor the pending id (a bearer), nor the SP key, nor the QR
    code's ticket."""
    caplog.set_level(logging.DEBUG)
    wizard = Wizard(client)
    started = wizard.begin().json()
    pending_id = started["pending_id"]
    (ticket,) = fido.pending()
    row = pending_ticket(app)
    stored = json.dumps({c.name: str(getattr(row, c.name)) for c in MobileIdTicket.__table__.c})
    fido.approve(ticket.sp_ticket_id)
    clock.advance(timedelta(seconds=4))
    assert wizard.poll(pending_id).json()["status"] == "done"
    registration = registration_row(app, wizard.id)
    evidence = json.dumps(registration.evidence, ensure_ascii=False)
    trail = json.dumps(
        [[e.actor, e.event, e.diff] for e in audit(app)], ensure_ascii=False, default=str
    )
    secrets = {
        "national ID": PERSON_ID,
        "pending id": pending_id,
        "SP key (hex)": KEY.hex(),
        "SP key (base64)": base64.b64encode(KEY).decode(),
        "sp_ticket": ticket.sp_ticket,
    }
    for where, text in (
        ("ticket row", stored), ("evidence", evidence), ("audit", trail), ("logs", caplog.text)
    ):  # fmt: skip
        for what, value in secrets.items():
            assert value not in text, f"{what} in the {where}"
    assert row.id_last4 == "6789"


# -- the CLI -----------------------------------------------------------------------------------


def test_the_cli_refuses_a_company_before_asking_moi(
    fido: TwFidoMock, db_url: str, tmp_path: Path
) -> None:
    """`swreg register --type enterprise.general --card twfido:ID`: the mobile ID is for 個人
    types; refused as the web refuses it, before anything is sent."""
    answers = tmp_path / "answers.json"
    answers.write_text(
        json.dumps({**COMPANY_ANSWERS, "national_id": PERSON_ID}, ensure_ascii=False),
        encoding="utf-8",
    )
    env = {
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_TWFIDO_URL": fido.url,
        "SWREG_TWFIDO_SERVICE_ID": SERVICE,
        "SWREG_TWFIDO_KEY": base64.b64encode(KEY).decode(),
    }
    stop = threading.Event()

    def phone() -> None:  # refuses whatever it is asked, so a failing run ends at once
        while not stop.wait(0.05):
            for ticket in fido.pending():
                fido.reject(ticket.sp_ticket_id)

    threading.Thread(target=phone, daemon=True).start()
    try:
        result = CliRunner().invoke(
            cli_app,
            ["--db", db_url, "register", "--type", "enterprise.general",
             "--answers", str(answers), "--card", f"twfido:{PERSON_ID}", "--json"],
            env=env,
        )  # fmt: skip
    finally:
        stop.set()
    assert result.exit_code == 1, result.output
    assert [e["code"] for e in json.loads(result.stdout)["errors"]] == ["certificate_type_mismatch"]
    assert fido.requests == []
