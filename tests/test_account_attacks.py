"""Attacks on issue 16 (忘記密碼, the account page, e-mail and password changes, sessions).

Each test is one attack, written as a real attacker would try it, and passes when the system
holds. The fixtures (an app mailing to a real SMTP server, an activated 個人 account and a
company account) are those of tests/test_password_reset.py, imported by name. Card answers
come from the test PKI's keys; the races run real threads on the test database.
"""
# ruff: noqa: F811 - the imported fixtures are parameters of the tests

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from engine import App, FixedClock, bootstrap
from engine.services.account_settings import EMAIL_CHANGE_TTL, EmailChange
from engine.services.accounts import LOCKED, MAX_FAILED_PASSWORDS, PENDING, SUSPENDED
from engine.services.mail import (
    EMAIL_CHANGE_NOTICE_SUBJECT,
    EMAIL_CHANGE_SUBJECT,
    PASSWORD_RESET_LINK_SUBJECT,
    PASSWORD_RESET_SUBJECT,
)
from engine.services.officers import OfficerView
from engine.services.password_reset import PasswordReset
from engine.store import AccountToken, AuditEntry, Base, LoginSession
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from engine.web._security import SESSION_HOST_COOKIE as SESSION_COOKIE
from tests.conftest import PERSON_ANSWERS, PIN, PKI_NOW
from tests.helpers import enrol
from tests.test_account_settings import api_login
from tests.test_concurrency import race
from tests.test_mail import SmtpSink, body
from tests.test_pages import page
from tests.test_password_reset import (  # noqa: F401 - app, person, company, links, smtp_sink: fixtures
    NEW,
    OLD_PASSWORD,
    PERSON,
    UBN,
    account_row,
    app,
    audit,
    company,
    links,
    password_is,
    person,
    reset,
    run,
    set_status,
    smtp_sink,
)
from tests.test_renewal import ORIGIN, answer, csrf, refused, signed

ATTACKER_EMAIL = "mallory@evil.example"
NEW_EMAIL = "hua@example.org"
WRONG = "Wr0ngPassword!"
PEER = "203.0.113.77"
UA_MARKER = "uid-7f3a9c-tracking-marker"
USER_AGENT = f"Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0 Safari/537 {UA_MARKER}"


# -- a clock that lines racing threads up ------------------------------------------------------


class StagedClock(FixedClock):
    """A fixed clock that, once armed, holds each racing thread at its ``call``-th ``now()``
    until ``parties`` threads are there: every racer has done what comes before that call
    before any of them goes on."""

    def __init__(self, at: datetime) -> None:
        super().__init__(at)
        self._armed: tuple[int, threading.Barrier] | None = None
        self._calls = threading.local()

    @contextmanager
    def staged(self, call: int, parties: int) -> Iterator[None]:
        self._armed = (call, threading.Barrier(parties))
        try:
            yield
        finally:
            self._armed = None

    def now(self) -> datetime:
        armed = self._armed
        if armed is not None:
            count = getattr(self._calls, "n", 0) + 1
            self._calls.n = count
            if count == armed[0]:
                with suppress(threading.BrokenBarrierError):
                    armed[1].wait(timeout=10)
        return super().now()


@pytest.fixture
def clock() -> StagedClock:  # the imported ``app`` fixture runs on this clock
    return StagedClock(PKI_NOW)


# -- helpers ------------------------------------------------------------------------------------


def log_in(app: App, card: IssuedCard) -> str:
    logins = app.logins
    return logins.login(answer(logins.issue_challenge(origin=ORIGIN), card), origin=ORIGIN).token


def ask(app: App, token: str, address: str = NEW_EMAIL, current: str = OLD_PASSWORD) -> EmailChange:
    return app.account_settings.request_email_change(token, new_email=address, current=current)


def confirm(app: App, link: str) -> str:
    return app.account_settings.confirm_email_change(link)


def dump(app: App, *, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every row of every table, as text, table by table (sorted)."""
    with app.database.unit_of_work() as uow:
        return {
            table.name: sorted(repr(tuple(row)) for row in uow.session.execute(select(table)))
            for table in Base.metadata.sorted_tables
            if table.name not in skip
        }


def audit_text(app: App) -> str:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq))
        return "\n".join(
            f"{r.actor} {r.event} {json.dumps(r.diff, ensure_ascii=False)}" for r in rows
        )


def our_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the portal logged (the test SMTP server's own ``mail.log`` lines left out)."""
    return "\n".join(
        f"{r.name} {r.getMessage()}" for r in caplog.records if not r.name.startswith("mail.log")
    )


def codes_of(response: Any) -> tuple[int, list[str]]:
    return response.status_code, [e["code"] for e in response.json()["errors"]]


def live_tokens_of(app: App, name: str) -> int:
    with app.database.unit_of_work() as uow:
        account = uow.accounts.get_by_name(name)
        assert account is not None
        rows = uow.session.scalars(
            select(LoginSession).where(
                LoginSession.account_id == account.id, LoginSession.ended_at.is_(None)
            )
        )
        return len(list(rows))


def admin() -> OfficerView:
    return OfficerView(
        name="Lin", role="admin", fingerprint="00" * 32, added_at=PKI_NOW, token_issued_at=None
    )


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app), base_url=ORIGIN) as test_client:
        yield test_client


# == 1. account enumeration through 忘記密碼 =======================================================


@pytest.mark.parametrize("card_of", ["stranger", "other_account"])
def test_reset_refusals_do_not_tell_accounts_apart_before_the_card_is_proven(
    app: App, pki: TestPKI, person: IssuedCard, company: IssuedCard, card_of: str
) -> None:
    """Attack: name accounts in 忘記密碼 with a card that is not theirs (a stranger's card, or
    the attacker's own registered card) and read the refusal to learn which accounts exist and
    in which state (active, locked, suspended, pending). Every name must get the same code."""
    stranger = pki.issue_person("陳大文", "1234")
    card = stranger if card_of == "stranger" else company
    names = [PERSON, "nobody@example.com", "", "x" * 256]
    if card_of == "stranger":
        set_status(app, UBN, SUSPENDED)
        names.append(UBN)

    found = {name: refused(lambda name=name: reset(app, card, name)) for name in names}

    assert set(found.values()) == {"not_authorized"}, found
    for status in (LOCKED, PENDING, SUSPENDED):
        set_status(app, PERSON, status, failed=MAX_FAILED_PASSWORDS)
        assert refused(lambda: reset(app, card, PERSON)) == "not_authorized", status


def test_reset_api_answers_an_unknown_and_an_existing_account_byte_for_byte_alike(
    app: App, pki: TestPKI, person: IssuedCard
) -> None:
    """Attack: compare the whole HTTP answers of /api/password-reset for a registered account
    and an unknown one, with a card that is not the account's, and with a forged signature."""
    stranger = pki.issue_person("陳大文", "1234")
    answers: dict[tuple[str, str], tuple[int, str]] = {}
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        for name in (PERSON, "nobody@example.com"):
            for how in ("stranger", "forged"):
                challenge = http.post("/api/password-reset/challenge", headers=headers).json()
                request = signed(stranger, challenge, account=name, **NEW)
                if how == "forged":
                    request = signed(person, challenge, account=name, **NEW)
                    request["signature"] = signed(stranger, challenge)["signature"]
                got = http.post("/api/password-reset", json=request, headers=headers)
                answers[(name, how)] = (got.status_code, got.text)

    assert answers[(PERSON, "stranger")] == answers[("nobody@example.com", "stranger")]
    assert answers[(PERSON, "forged")] == answers[("nobody@example.com", "forged")]
    assert codes_of_text(answers[(PERSON, "stranger")]) == (403, ["not_authorized"])
    assert password_is(app, PERSON, OLD_PASSWORD)


def codes_of_text(answer_: tuple[int, str]) -> tuple[int, list[str]]:
    status, text = answer_
    return status, [e["code"] for e in json.loads(text)["errors"]]


def test_a_stranger_cannot_exhaust_the_accounts_own_reset_limit(
    app: App, pki: TestPKI, person: IssuedCard
) -> None:
    """Attack: burn the owner's per-account reset budget (5 per 10 min) with failed resets
    naming the account, so that the owner is rate_limited when they try with their card."""
    stranger = pki.issue_person("陳大文", "1234")
    for _ in range(8):
        assert refused(lambda: reset(app, stranger, PERSON)) == "not_authorized"

    assert reset(app, person, PERSON).account == PERSON


def test_an_email_change_does_not_tell_whether_an_address_belongs_to_another_account(
    app: App, person: IssuedCard, company: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: from one's own account, ask to move to addresses of other people, and read the
    answer to learn which addresses have accounts (an existing account's address, its
    account name, an unknown address)."""
    answers = {}
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        api_login(http, person, headers)
        for address in ("info@trading.example", "nobody@example.org"):
            got = http.post(
                "/api/account/email",
                json={"email": address, "current_password": OLD_PASSWORD},
                headers=headers,
            )
            body_ = got.json()
            answers[address] = (got.status_code, sorted(body_), body_["account"])

    assert answers["info@trading.example"] == answers["nobody@example.org"]
    assert answers["nobody@example.org"][0] == 200


# == 2. CSRF on every new POST =================================================================

PAGE_POSTS = [
    "/account/password",
    "/account/email",
    "/account/logout-all",
    "/account/email/TOKEN",
    "/password/forgot",
]
API_POSTS: list[tuple[str, dict[str, Any]]] = [
    ("/api/account/password", {"current_password": OLD_PASSWORD, **NEW}),
    ("/api/account/email", {"email": ATTACKER_EMAIL}),
    ("/api/account/email/confirm", {"token": "TOKEN"}),
    ("/api/password-reset/challenge", {}),
    ("/api/password-reset", {"account": PERSON, **NEW}),
    ("/api/sessions/logout-all", {}),
]
FORGED_CSRF = "A" * 32 + "." + "0" * 32


@pytest.mark.parametrize("how", ["missing", "forged_pair", "other_clients_token"])
def test_every_new_post_needs_the_csrf_token(
    app: App, person: IssuedCard, smtp_sink: SmtpSink, how: str
) -> None:
    """Attack: a page on another site makes the logged-in victim's browser post to each new
    route (change the password, change the e-mail to the attacker's, confirm a link, log out
    everywhere, reset): without the token, with a token pair the server never issued, or with
    a token the server issued to another client."""
    victim = TestClient(create_app(app), base_url=ORIGIN)
    attacker = TestClient(create_app(app), base_url=ORIGIN)
    with victim, attacker:
        api_login(victim, person, csrf(victim))
        link = ask(app, log_in(app, person), ATTACKER_EMAIL).link
        link_token = link.rsplit("/", 1)[1]
        sent = len(smtp_sink.messages)
        headers: dict[str, str] = {}
        fields: dict[str, str] = {}
        if how == "forged_pair":
            for name in list(victim.cookies.keys()):
                if name.endswith("csrf"):
                    victim.cookies.set(name, FORGED_CSRF, domain="portal.example")
            jar = [c.value for c in victim.cookies.jar if c.name.endswith("csrf")]
            assert jar == [FORGED_CSRF], jar
            headers, fields = {"X-CSRF-Token": FORGED_CSRF}, {"csrf": FORGED_CSRF}
        elif how == "other_clients_token":
            token = csrf(attacker)["X-CSRF-Token"]
            headers, fields = {"X-CSRF-Token": token}, {"csrf": token}

        for path in PAGE_POSTS:
            form = {"current_password": OLD_PASSWORD, "email": ATTACKER_EMAIL, **NEW, **fields}
            got = victim.post(path.replace("TOKEN", link_token), data=form, follow_redirects=False)
            assert got.status_code == 403, (path, got.status_code)
        for path, payload in API_POSTS:
            payload = {k: (link_token if v == "TOKEN" else v) for k, v in payload.items()}
            got = victim.post(path, json=payload, headers=headers)
            assert codes_of(got) == (403, ["csrf_failed"]), path

        assert victim.get("/api/account").status_code == 200  # still logged in
    assert password_is(app, PERSON, OLD_PASSWORD)
    assert account_row(app, PERSON).email == PERSON
    assert len(smtp_sink.messages) == sent
    for event_name in ("password_changed", "email_changed", "logout_all", "password_reset"):
        assert audit(app, event_name) == [], event_name


# == 3. one account's session acting on another ================================================


def test_a_session_of_one_account_changes_only_that_account(
    app: App, person: IssuedCard, company: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: logged in as the company, send the 個人 account's name (``account``, ``name``,
    ``account_id``) with the account API's requests, hoping a field chooses the target."""
    company_session = log_in(app, company)
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        api_login(http, person, headers)
        extra = {"account": UBN, "name": UBN, "account_id": 1}

        shown = http.get("/api/account", params=extra)
        changed = http.post(
            "/api/account/password",
            json={"current_password": OLD_PASSWORD, **NEW, **extra},
            headers=headers,
        )
        asked = http.post(
            "/api/account/email",
            json={"email": ATTACKER_EMAIL, "current_password": NEW["password"], **extra},
            headers=headers,
        )

    assert shown.json()["account"] == PERSON
    assert [s["current"] for s in shown.json()["sessions"]] == [True]  # not the company's
    assert changed.json() == {"account": PERSON, "sessions_ended": 0}
    assert asked.json()["account"] == PERSON, asked.text
    assert password_is(app, UBN, OLD_PASSWORD) and password_is(app, PERSON, NEW["password"])
    with app.database.unit_of_work() as uow:
        [token] = uow.session.scalars(select(AccountToken))
        assert token.account_id == account_row(app, PERSON).id
    assert app.logins.session(company_session) is not None


# == 4. the e-mail change link ===================================================================


@pytest.mark.parametrize(
    "recovery", ["password_reset", "password_change", "logout_all", "suspension"]
)
def test_recovering_the_account_cancels_an_attackers_pending_email_change(
    app: App, person: IssuedCard, smtp_sink: SmtpSink, recovery: str
) -> None:
    """HOLE. Attack: with a stolen session cookie, ask to move the account's e-mail address to
    the attacker's (the link goes to the attacker). The owner gets the notice, which says
    "log in with your card, change the password"; the owner does that, or resets the password
    with the card, or logs out everywhere, or an officer suspends the account and reactivates
    it after the investigation. The attacker's link still works afterwards (24 h), and every
    later notice about the account goes to the attacker.

    Whatever the owner or an officer does to take the account back must retire the pending
    e-mail change links."""
    stolen = log_in(app, person)
    asked = ask(app, stolen, ATTACKER_EMAIL)
    notice = smtp_sink.messages[-1]
    assert (notice["Subject"], notice["To"]) == (EMAIL_CHANGE_NOTICE_SUBJECT, PERSON)

    if recovery == "password_reset":
        reset(app, person, PERSON)
    elif recovery == "password_change":
        mine = log_in(app, person)
        app.account_settings.change_password(mine, current=OLD_PASSWORD, answers=NEW)
    elif recovery == "logout_all":
        app.logins.logout_all(log_in(app, person))
    else:
        app.accounts.suspend(PERSON, officer=admin(), reason="冒用調查中")
        assert refused(lambda: confirm(app, asked.link)) == "activation_invalid"
        app.accounts.reactivate(PERSON, officer=admin(), reason="調查完畢")
    assert app.logins.session(stolen) is None

    assert refused(lambda: confirm(app, asked.link)) == "activation_invalid"
    assert account_row(app, PERSON).email == PERSON
    assert audit(app, "email_changed") == []


def test_a_link_of_a_suspended_account_changes_nothing(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: confirm an e-mail change link while the account is suspended (the suspension
    retired it; were the status set without that, the status check refuses it)."""
    asked = ask(app, log_in(app, person))
    app.accounts.suspend(PERSON, officer=admin(), reason="冒用調查中")
    sent = len(smtp_sink.messages)

    assert refused(lambda: confirm(app, asked.link)) == "activation_invalid"
    app.accounts.reactivate(PERSON, officer=admin(), reason="調查完畢")
    other = ask(app, log_in(app, person), "other@example.org")
    set_status(app, PERSON, SUSPENDED)  # the status alone, no link retired: the check refuses
    assert refused(lambda: confirm(app, other.link)) == "account_suspended"
    sent = len(smtp_sink.messages)

    assert account_row(app, PERSON).email == PERSON
    assert audit(app, "email_changed") == []
    assert len(smtp_sink.messages) == sent


def test_a_link_is_dead_once_the_address_was_changed_by_a_later_link(
    app: App, person: IssuedCard
) -> None:
    """Attack: the attacker's link was asked for first; the owner then asked for and confirmed
    their own new address. The attacker's older link must not switch the address back."""
    token = log_in(app, person)
    attackers = ask(app, token, ATTACKER_EMAIL)
    owners = ask(app, token, NEW_EMAIL)
    confirm(app, owners.link)

    assert refused(lambda: confirm(app, attackers.link)) == "activation_invalid"
    assert refused(lambda: confirm(app, owners.link)) == "activation_invalid"
    assert account_row(app, PERSON).email == NEW_EMAIL


def test_tokens_of_one_purpose_never_work_for_another(app: App, pki: TestPKI) -> None:
    """Attack: present an activation link's token as an e-mail change confirmation, an e-mail
    change token at /activate, and a session token as either."""
    card = pki.issue_person("王小明", "6789")
    enrol(app, "person.general", card, PERSON_ANSWERS)
    activation = app.accounts.send_activation(PERSON)
    activation_token = activation.rsplit("/", 1)[1]

    assert refused(lambda: confirm(app, activation_token)) == "activation_invalid"
    assert refused(lambda: confirm(app, activation)) == "activation_invalid"
    assert account_row(app, PERSON).status == PENDING
    app.accounts.activate(activation)
    session = log_in(app, card)
    asked = ask(app, session)
    email_token = asked.link.rsplit("/", 1)[1]

    assert refused(lambda: app.accounts.activate(email_token)) == "activation_invalid"
    assert refused(lambda: app.accounts.activate(asked.link)) == "activation_invalid"
    assert refused(lambda: confirm(app, session)) == "activation_invalid"
    assert account_row(app, PERSON).email == PERSON
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        got = http.post(
            "/api/account/email/confirm", json={"token": activation_token}, headers=headers
        )
        assert codes_of(got) == (422, ["activation_invalid"])
    assert confirm(app, asked.link) == PERSON  # the right token still works


def test_opening_a_link_tells_nothing_and_changes_nothing(
    client: TestClient, app: App, person: IssuedCard
) -> None:
    """Attack: probe /account/email/{token} with GETs (or let a mail scanner fetch it) to learn
    whether a token is live, whose it is or where it points."""
    asked = ask(app, log_in(app, person))
    good = client.get(asked.link.removeprefix(ORIGIN))
    bad = client.get("/account/email/" + "x" * 43)

    assert good.status_code == bad.status_code == 200
    for text in (good.text, bad.text):
        assert PERSON not in text and NEW_EMAIL not in text and "m**g" not in text
    assert good.text.replace(asked.link.rsplit("/", 1)[1], "x" * 43) == bad.text
    assert account_row(app, PERSON).email == PERSON


# == 5. races ===================================================================================


def test_two_confirmations_of_one_link_apply_once(app: App, person: IssuedCard) -> None:
    """Attack: double-submit one confirmation link from two devices at once."""
    asked = ask(app, log_in(app, person))

    outcomes = race(2, lambda _i: confirm(app, asked.link))

    assert sorted(str(getattr(o, "code", o)) for o in outcomes) == ["activation_invalid", PERSON]
    assert len(audit(app, "email_changed")) == 1
    assert account_row(app, PERSON).email == NEW_EMAIL


@contextmanager
def held_after_link_consumed(app: App, parties: int) -> Iterator[None]:
    """Hold every racer right after its UPDATE that consumes its own link, until all did (or
    a few seconds passed: on SQLite the second one waits for the first one's commit)."""
    barrier = threading.Barrier(parties)

    def after(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        text = " ".join(statement.split()).lower()
        if text.startswith("update account_tokens set used_at") and "token_hash =" in text:
            with suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=3)

    event.listen(app.database.engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(app.database.engine, "after_cursor_execute", after)


def test_two_different_links_confirmed_at_once_make_one_change_and_no_server_error(
    app: App, person: IssuedCard
) -> None:
    """Attack (or an honest double click across two mails): confirm two different pending
    links of one account at the same moment. Serially the first confirmation retires the
    other link (activation_invalid). Concurrently, each confirmation has consumed its own link
    before retiring the other's: on PostgreSQL the two transactions wait for each other's
    row locks (deadlock), and one ends as a raw database error (500) instead of a stable
    code — or both commit, leaving two ``email_changed`` rows."""
    token = log_in(app, person)
    first = ask(app, token, "first@example.org")
    second = ask(app, token, "second@example.org")
    links = [first.link, second.link]

    with held_after_link_consumed(app, 2):
        outcomes = race(2, lambda i: confirm(app, links[i]))

    codes = sorted(str(getattr(o, "code", o)) for o in outcomes)
    assert codes == ["activation_invalid", PERSON], outcomes
    assert len(audit(app, "email_changed")) == 1
    assert account_row(app, PERSON).email in ("first@example.org", "second@example.org")


def test_two_resets_racing_with_one_answer_apply_once(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: replay one captured reset answer (challenge, certificate, signature) in parallel
    with the owner's own request, each with a different new password."""
    service = app.password_resets
    response = answer(service.issue_challenge(origin=ORIGIN), person)
    passwords = ["N3wPassw0rd!", "Att4ckerPass!"]

    def attempt(i: int) -> PasswordReset:
        chosen = {"password": passwords[i], "password_confirm": passwords[i]}
        return service.reset(response, origin=ORIGIN, account=PERSON, answers=chosen)

    outcomes = race(2, attempt)

    won = [i for i, o in enumerate(outcomes) if isinstance(o, PasswordReset)]
    assert len(won) == 1
    assert [str(getattr(o, "code", "")) for o in outcomes if o is not outcomes[won[0]]] == [
        "challenge_used"
    ]
    assert password_is(app, PERSON, passwords[won[0]])
    assert len(audit(app, "password_reset")) == 1
    assert [m["Subject"] for m in smtp_sink.messages].count(PASSWORD_RESET_SUBJECT) == 1


def test_concurrent_wrong_current_passwords_all_count(app: App, person: IssuedCard) -> None:
    """Attack: guess the current password with many parallel requests, hoping the count of
    wrong passwords loses updates and never reaches the lock."""
    tokens = [log_in(app, person) for _ in range(8)]

    def guess(i: int) -> Any:
        return app.account_settings.change_password(
            tokens[i], current=f"Wr0ngGuess{i}!", answers=NEW
        )

    outcomes = race(8, guess)

    found = [str(getattr(o, "code", o)) for o in outcomes]
    assert set(found) <= {"password_incorrect", "account_locked"}, found
    row = account_row(app, PERSON)
    # every guess answered password_incorrect was checked and counted; none was lost
    assert row.status == LOCKED
    assert row.failed_passwords >= max(MAX_FAILED_PASSWORDS, found.count("password_incorrect"))
    assert len(audit(app, "account_locked")) == 1
    assert password_is(app, PERSON, OLD_PASSWORD)


def test_a_burst_of_guesses_gets_no_more_answers_than_the_lock_allows(
    app: App, person: IssuedCard, clock: StagedClock
) -> None:
    """HOLE. Attack: with a stolen session, one wrong password before the lock, fire 4
    guesses of the current password at once. Each request reads "active" before any of them
    counted, so every guess is checked; the wrong ones are answered ``password_incorrect`` and
    the right one (had it been among them) ``account_locked`` — or it would even change the
    password. Serially, only the first guess is checked and the rest are ``account_locked``
    without being checked: the burst turns one guess into as many as the attacker sends, and
    tells the right one apart.

    A guess counted on an account that was already locked must be answered like the lock
    (``account_locked``), whether right or wrong."""
    set_status(app, PERSON, "active", failed=MAX_FAILED_PASSWORDS - 1)
    tokens = [log_in(app, person) for _ in range(4)]

    def guess(i: int) -> Any:
        return app.account_settings.change_password(
            tokens[i], current=f"Wr0ngGuess{i}!", answers=NEW
        )

    # The 2nd now() of change_password comes after the status read and the argon2 check.
    with clock.staged(call=2, parties=4):
        outcomes = race(4, guess)

    found = sorted(str(getattr(o, "code", o)) for o in outcomes)
    assert found == ["account_locked"] * 3 + ["password_incorrect"], found
    assert account_row(app, PERSON).status == LOCKED


@contextmanager
def meanwhile(app: App, action: Callable[[], object], *, nth: int = 1) -> Iterator[list[object]]:
    """Start ``action`` in another thread right after the ``nth`` statement that loads an
    account by its id (``session.get``): inside the caller's last transaction, after its read
    and before its write. The caller goes on once ``action`` finished, or after 2 s if it is
    waiting for a lock the caller holds (a serializing fix); ``action`` is joined on leaving.
    Yields what ``action`` returned (or raised)."""
    done: list[object] = []
    seen = [0]
    threads: list[threading.Thread] = []

    def run() -> None:
        try:
            done[0] = action()
        except Exception as exc:
            done[0] = exc

    def after(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        text = " ".join(statement.split()).lower()
        if done or not text.startswith("select") or "where accounts.id =" not in text:
            return
        seen[0] += 1
        if seen[0] < nth:
            return
        done.append("running")
        thread = threading.Thread(target=run)
        threads.append(thread)
        thread.start()
        thread.join(timeout=2)

    event.listen(app.database.engine, "after_cursor_execute", after)
    try:
        yield done
    finally:
        for thread in threads:
            thread.join(timeout=30)
        event.remove(app.database.engine, "after_cursor_execute", after)


def test_a_reset_racing_a_suspension_does_not_undo_it(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """HOLE. Attack: the account is ``locked``; an officer suspends it (fraud investigation) at
    the moment someone resets its password with the card. The reset re-reads the account in
    its last transaction and checks the status, but writes without a condition: when the
    suspension commits between that read and the write, the reset writes ``active`` over
    ``suspended``. In either serial order the account ends suspended."""
    set_status(app, PERSON, LOCKED, failed=MAX_FAILED_PASSWORDS)

    def suspend() -> object:
        return app.accounts.suspend(PERSON, officer=admin(), reason="冒用調查中")

    with meanwhile(app, suspend) as suspended:
        try:
            outcome: object = reset(app, person, PERSON)
        except Exception as exc:
            outcome = exc

    assert suspended and getattr(suspended[0], "state", None) == SUSPENDED, suspended
    assert account_row(app, PERSON).status == SUSPENDED, outcome
    if not isinstance(outcome, PasswordReset):
        assert str(getattr(outcome, "code", outcome)) == "account_suspended"


def test_a_password_change_racing_a_card_reset_does_not_overwrite_it(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """HOLE. Attack: with a stolen session and the current password, change the password at
    the moment the owner resets it with the card. The change re-reads the account in its last
    transaction and compares the stored hash with the one it checked, but on a row read
    before the reset committed, and then writes without a condition: the attacker's password
    replaces the owner's new one, and the change even reports success. In either serial order
    the owner's reset is what stands (after it, the stolen session is dead)."""
    stolen = log_in(app, person)
    owners = {"password": "0wnersN3wPass!", "password_confirm": "0wnersN3wPass!"}
    attackers = {"password": "Att4ckersPass!", "password_confirm": "Att4ckersPass!"}

    # The 1st load by id is the session check; the 2nd is the change's last transaction.
    with meanwhile(app, lambda: reset(app, person, PERSON, owners), nth=2) as reset_done:
        try:
            outcome: object = app.account_settings.change_password(
                stolen, current=OLD_PASSWORD, answers=attackers
            )
        except Exception as exc:
            outcome = exc

    assert reset_done and isinstance(reset_done[0], PasswordReset), reset_done
    assert password_is(app, PERSON, owners["password"]), outcome
    assert not password_is(app, PERSON, attackers["password"])
    assert app.logins.session(stolen) is None


# == 6. answers of one flow replayed in another ================================================


def test_a_reset_answer_never_logs_in_and_a_login_answer_never_resets(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: capture the card's answer of one flow (a phishing page, a proxy) and present it
    to the other: a 忘記密碼 answer at /api/login (a session without knowing anything), a
    login answer at /api/password-reset (a new password from a login)."""
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        reset_challenge = http.post("/api/password-reset/challenge", headers=headers).json()
        login_challenge = http.post("/api/login/challenge", headers=headers).json()

        as_login = http.post("/api/login", json=signed(person, reset_challenge), headers=headers)
        as_reset = http.post(
            "/api/password-reset",
            json=signed(person, login_challenge, account=PERSON, **NEW),
            headers=headers,
        )

        assert codes_of(as_login) == (422, ["signature_invalid"])
        assert SESSION_COOKIE not in as_login.cookies
        assert codes_of(as_reset) == (422, ["signature_invalid"])
        assert http.get("/api/account").status_code == 401
    assert password_is(app, PERSON, OLD_PASSWORD)
    assert audit(app, "login") == [] and audit(app, "password_reset") == []


# == 7. personal data ============================================================================


def test_no_full_address_ip_or_user_agent_leaks_from_the_account_flows(
    app: App, person: IssuedCard, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: read what the account flows leave behind — audit rows (exported to auditors),
    log lines, API answers, the account page, the sessions list, the notice to the old
    address — for the full e-mail addresses, the client's IP address, its raw User-Agent
    (a tracking marker in it) and the passwords."""
    caplog.set_level(logging.DEBUG)
    with TestClient(
        create_app(app), base_url=ORIGIN, client=(PEER, 50000),
        headers={"User-Agent": USER_AGENT},
    ) as http:  # fmt: skip
        headers = csrf(http)
        api_login(http, person, headers)
        shown = http.get("/api/account")
        account_page = http.get("/account")
        changed = http.post(
            "/api/account/password", json={"current_password": OLD_PASSWORD, **NEW},
            headers=headers,
        )  # fmt: skip
        wrong = http.post(
            "/api/account/password", json={"current_password": WRONG, **NEW}, headers=headers
        )
        asked = http.post(
            "/api/account/email",
            json={"email": NEW_EMAIL, "current_password": NEW["password"]},
            headers=headers,
        )
        link_token = asked and smtp_sink.messages[-2]
        token = body(link_token).split("/account/email/", 1)[1].split()[0]
        confirmed = http.post("/api/account/email/confirm", json={"token": token}, headers=headers)
        challenge = http.post("/api/password-reset/challenge", headers=headers).json()
        again = {"password": "Th1rdPassw0rd!", "password_confirm": "Th1rdPassw0rd!"}
        done = http.post(
            "/api/password-reset", json=signed(person, challenge, account=PERSON, **again),
            headers=headers,
        )  # fmt: skip
    assert [r.status_code for r in (shown, changed, asked, confirmed, done)] == [200] * 5
    assert wrong.status_code == 422

    secrets_ = [PEER, UA_MARKER, NEW["password"], again["password"], OLD_PASSWORD, WRONG]
    full_addresses = [PERSON, NEW_EMAIL]
    trail = audit_text(app)
    for value in [*secrets_, *full_addresses]:
        assert value not in trail, value
        assert value not in our_log(caplog), value
    everywhere = json.dumps(dump(app, skip=("accounts", "account_tokens", "registrations")))
    for value in secrets_:
        assert value not in everywhere, value
    assert NEW_EMAIL not in everywhere
    for response in (shown, account_page):
        assert PEER not in response.text and UA_MARKER not in response.text
        assert NEW["password"] not in response.text
    assert shown.json()["email"] == "m**g@example.com"
    assert PERSON not in shown.json()["email"]
    [session] = shown.json()["sessions"]
    assert session["client"] == "Chrome / Linux · 203.0.113.*"
    notice = next(m for m in smtp_sink.messages if m["Subject"] == EMAIL_CHANGE_NOTICE_SUBJECT)
    assert notice["To"] == PERSON and NEW_EMAIL not in body(notice)
    confirmation = next(m for m in smtp_sink.messages if m["Subject"] == EMAIL_CHANGE_SUBJECT)
    assert confirmation["To"] == NEW_EMAIL
    for message in smtp_sink.messages:
        text = body(message)
        for value in (PEER, UA_MARKER, NEW["password"], again["password"], OLD_PASSWORD):
            assert value not in text, (message["Subject"], value)


def test_dead_email_change_links_do_not_keep_full_addresses_forever(
    app: App, person: IssuedCard, clock: FixedClock
) -> None:
    """HOLE (retention, DESIGN.md §6). Attack: read the database (a backup, a leaked dump)
    long after the account's e-mail change links died. ``account_tokens.new_email`` keeps
    every address ever typed there in clear — an address that was never confirmed (a typo
    naming a stranger, or the address an attacker tried), a retired one, an expired one — for
    as long as the account lives; ``swreg purge`` never touches the table for accounts that
    were activated. Once a link can no longer be used, its address must go (at the latest
    when the purge runs past the retention time)."""
    token = log_in(app, person)
    ask(app, token, "typo@stranger.example")
    ask(app, token, ATTACKER_EMAIL)
    confirm(app, ask(app, token, NEW_EMAIL).link)
    clock.advance(EMAIL_CHANGE_TTL + timedelta(days=app.settings.retention_days + 1))

    app.retention.purge()

    with app.database.unit_of_work() as uow:
        kept = [t.new_email for t in uow.session.scalars(select(AccountToken))]
    assert [a for a in kept if a is not None] == []


# == 8. oversized, NUL and injected inputs ======================================================


@pytest.mark.parametrize(
    ("path", "payload", "code"),
    [
        ("/api/password-reset", {"account": "a" * 257}, "field_too_long"),
        ("/api/password-reset", {"account": "ming\u0000@example.com"}, "invalid_value"),
        ("/api/password-reset", {"password": "P" * 257, "password_confirm": "P" * 257},
         "field_too_long"),
        ("/api/account/password", {"current_password": "c" * 257}, "field_too_long"),
        ("/api/account/password", {"current_password": "Passw0rd\u0000OK"}, "invalid_value"),
        ("/api/account/email", {"email": "a" * 310 + "@example.org"}, "field_too_long"),
        ("/api/account/email", {"email": "hua@example.org\r\nBcc: x@evil.example"},
         "invalid_email"),
        ("/api/account/email", {"email": "hua@example.org\u0000"}, "invalid_value"),
        ("/api/account/email/confirm", {"token": "t" * 513}, "field_too_long"),
        ("/api/account/email/confirm", {"token": "\u0000"}, "invalid_value"),
    ],
)  # fmt: skip
def test_oversized_nul_and_injected_api_inputs_are_refused_and_change_nothing(
    app: App, person: IssuedCard, smtp_sink: SmtpSink, path: str, payload: dict[str, Any],
    code: str,
) -> None:  # fmt: skip
    """Attack: oversized fields, NUL bytes (PostgreSQL text cannot hold them) and CR/LF mail
    header injection in every new API body."""
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        api_login(http, person, headers)
        before = dump(app, skip=("rate_limits", "login_challenges", "login_sessions"))
        sent = len(smtp_sink.messages)
        base: dict[str, Any] = {"current_password": OLD_PASSWORD, **NEW}
        if path == "/api/password-reset":
            challenge = http.post("/api/password-reset/challenge", headers=headers).json()
            base = signed(person, challenge, account=PERSON, **NEW)

        got = http.post(path, json={**base, **payload}, headers=headers)

        assert got.status_code in (413, 422), got.text
        assert code in codes_of(got)[1], got.text
    assert dump(app, skip=("rate_limits", "login_challenges", "login_sessions")) == before
    assert len(smtp_sink.messages) == sent


def test_oversized_and_nul_page_forms_are_refused_and_change_nothing(
    client: TestClient, app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: the same through the server-rendered forms (no Pydantic model there): a
    60 KB address, a NUL in a password, a header injection in the address, a body over the
    limit, and a huge confirmation token in the path."""
    api_login(client, person, csrf(client))
    token = csrf(client)["X-CSRF-Token"]
    sent = len(smtp_sink.messages)
    before = dump(app, skip=("rate_limits", "login_challenges", "login_sessions"))

    huge = client.post("/account/email", data={"csrf": token, "email": "a" * 60_000 + "@x.org"})
    nul = client.post(
        "/account/password",
        data={"csrf": token, "current_password": "a\u0000b", **NEW},
        follow_redirects=False,
    )
    crlf = client.post(
        "/account/email", data={"csrf": token, "email": "hua@example.org\r\nBcc: x@evil.example"}
    )
    too_big = client.post("/account/email", data={"csrf": token, "email": "a" * 70_000})
    long_token = client.post("/account/email/" + "t" * 4000, data={"csrf": token})

    assert huge.status_code == 422 and crlf.status_code == 422
    assert nul.status_code == 422 and too_big.status_code == 413
    assert long_token.status_code == 422
    assert dump(app, skip=("rate_limits", "login_challenges", "login_sessions")) == before
    assert len(smtp_sink.messages) == sent
    assert account_row(app, PERSON).failed_passwords == 0


# == 9. reflected input, XSS and redirects =======================================================

XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_the_forgot_page_escapes_the_account_parameter(client: TestClient) -> None:
    """Attack: a link to /password/forgot?account=<markup> (or a 忘記密碼 link in a phishing
    mail) that breaks out of the input's value attribute."""
    response = client.get("/password/forgot", params={"account": XSS})

    assert XSS not in response.text and "<script>alert" not in response.text
    assert "<img" not in response.text
    assert page(response).id("f-account").get("value") == XSS
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "token", [XSS, "%2F%2Fevil.example", "\\evil.example", "javascript:alert(1)"]
)
def test_the_confirmation_page_escapes_its_token_and_posts_only_here(
    client: TestClient, token: str
) -> None:
    """Attack: a confirmation link whose token carries markup, a path escape or a scheme, to
    inject into the page or send the confirmation form somewhere else."""
    response = client.get("/account/email/" + token, follow_redirects=False)
    if response.status_code == 404:
        return  # not routed here at all
    assert response.status_code == 200
    assert "<script>alert" not in response.text and "<img" not in response.text
    action = page(response).id("email-confirm-form").get("action") or ""
    assert action.startswith("/account/email/") and "//" not in action and "\\" not in action
    assert ":" not in action


@pytest.mark.parametrize(
    "url",
    [
        "/account?done=https://evil.example",
        "/account?next=https://evil.example",
        "/password/forgot?next=//evil.example",
        "//evil.example/account",
    ],
)
def test_no_account_route_redirects_off_site(client: TestClient, url: str) -> None:
    """Attack: open redirects through the new pages' query strings and paths."""
    response = client.get(url, follow_redirects=False)
    location = response.headers.get("location", "")
    assert not location.startswith(("http", "//", "/\\")), location
    posted = client.post(
        "/password/forgot", data={"csrf": csrf(client)["X-CSRF-Token"], "next": "//evil.example"},
        follow_redirects=False,
    )  # fmt: skip
    assert posted.headers["location"] == "/password/forgot"


# == 10. sessions ================================================================================


def test_a_reset_ends_the_resetting_browsers_own_session(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack (fixation): keep a session cookie across a password reset made in the same
    browser (or planted in it before), and use it afterwards."""
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        api_login(http, person, headers)
        before = http.cookies.get(SESSION_COOKIE)
        challenge = http.post("/api/password-reset/challenge", headers=headers).json()
        done = http.post(
            "/api/password-reset", json=signed(person, challenge, account=PERSON, **NEW),
            headers=headers,
        )  # fmt: skip
        assert done.json()["sessions_ended"] == 1
        assert codes_of(http.get("/api/account")) == (401, ["session_expired"])
    assert before is not None and app.logins.session(before) is None
    assert live_tokens_of(app, PERSON) == 0


def test_a_password_change_rotates_the_acting_session(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """HOLE. Attack: steal the session cookie (a shared computer, a proxy log, XSS elsewhere on
    the origin). The owner notices and changes the password on that very session: every
    other session ends, but the acting one keeps its token, so the stolen copy keeps working
    for up to 8 hours. OWASP's session management rules renew the session id on a password
    change: the old token must stop working, and the owner's browser must get a new one."""
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        api_login(http, person, headers)
        stolen = http.cookies.get(SESSION_COOKIE)
        assert stolen is not None

        changed = http.post(
            "/api/account/password", json={"current_password": OLD_PASSWORD, **NEW},
            headers=headers,
        )  # fmt: skip

        assert changed.status_code == 200, changed.text
        assert http.get("/api/account").status_code == 200  # the owner stays logged in
        assert http.cookies.get(SESSION_COOKIE) != stolen
    assert app.logins.session(stolen) is None


def test_a_suspended_accounts_sessions_are_dead_everywhere(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: keep using an open session after an officer suspended the account — also when
    the status changed without the sessions being ended (another worker, a direct update)."""
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        api_login(http, person, headers)
        set_status(app, PERSON, SUSPENDED)  # no session ended: only the status says so

        assert codes_of(http.get("/api/account")) == (401, ["session_expired"])
        for path, payload in (
            ("/api/account/password", {"current_password": OLD_PASSWORD, **NEW}),
            ("/api/account/email", {"email": ATTACKER_EMAIL, "current_password": OLD_PASSWORD}),
        ):
            assert codes_of(http.post(path, json=payload, headers=headers)) == (
                401,
                ["session_expired"],
            ), path
        page_answer = http.get("/account", follow_redirects=False)
        assert (page_answer.status_code, page_answer.headers["location"]) == (303, "/login")
    assert password_is(app, PERSON, OLD_PASSWORD)
    assert audit(app, "email_change_requested") == []


# == 11. refusals leave nothing ==================================================================


def test_refused_resets_leave_no_row_no_mail_and_no_ended_session(
    app: App, pki: TestPKI, person: IssuedCard, company: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: try every way a reset is refused and look for traces (an audit row saying the
    account exists, a mail telling the owner, a session ended, a count changed). Only the rate
    limits and the spent challenges may move."""
    session = log_in(app, person)
    stranger = pki.issue_person("陳大文", "1234")
    service = app.password_resets
    used = answer(service.issue_challenge(origin=ORIGIN), person)
    service.reset(used, origin=ORIGIN, account=PERSON, answers=NEW)
    session = log_in(app, person)
    skip = ("rate_limits", "login_challenges")
    before = dump(app, skip=skip)
    sent = len(smtp_sink.messages)
    weak = {"password": "short", "password_confirm": "short"}
    other = {"password": "An0therPass!", "password_confirm": "An0therPass!"}

    attempts: list[Callable[[], object]] = [
        lambda: reset(app, stranger, PERSON),
        lambda: reset(app, company, PERSON),
        lambda: reset(app, stranger, "nobody@example.com"),
        lambda: reset(app, person, "nobody@example.com"),
        lambda: reset(app, person, UBN),
        lambda: reset(app, person, PERSON, weak),
        lambda: service.reset(used, origin=ORIGIN, account=PERSON, answers=other),
        lambda: service.reset(
            answer(service.issue_challenge(origin="https://evil.example"), person),
            origin=ORIGIN, account=PERSON, answers=other,
        ),
    ]  # fmt: skip
    for attempt in attempts:
        refused(attempt)

    assert dump(app, skip=skip) == before
    assert len(smtp_sink.messages) == sent
    assert app.logins.session(session) is not None


def test_cli_reset_leaves_neither_pin_nor_password_anywhere(
    app: App, person: IssuedCard, card_file: Any, answers_file: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Attack: after an operator ran ``swreg accounts reset-password`` for a user, look for the
    card's PIN and the new password in the command's output, the audit log, the log and every
    table of the database."""
    caplog.set_level(logging.DEBUG)
    answers = answers_file(NEW)

    code, done = run(
        app, "accounts", "reset-password", PERSON, "--card", card_file(person),
        "--answers", str(answers), "--pin-stdin", stdin=PIN + "\n",
    )  # fmt: skip

    assert code == 0, done
    printed = json.dumps(done)
    for value in (PIN, NEW["password"]):
        assert value not in printed
        assert value not in audit_text(app)
        assert value not in our_log(caplog)
    assert NEW["password"] not in json.dumps(dump(app))
    assert password_is(app, PERSON, NEW["password"])


def test_a_foreign_host_gets_no_link_pointing_at_it(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    """Attack: ask for an e-mail change with a forged ``Host`` header, hoping the confirmation
    link in the mail points at the attacker's host (a link that leaks the token)."""
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        api_login(http, person, headers)
        sent = len(smtp_sink.messages)
        forged = http.post(
            "/api/account/email",
            json={"email": NEW_EMAIL},
            headers={**headers, "Host": "evil.example"},
        )
        assert forged.status_code == 400
        assert len(smtp_sink.messages) == sent
        honest = http.post(
            "/api/account/email",
            json={"email": NEW_EMAIL, "current_password": OLD_PASSWORD},
            headers=headers,
        )
        assert honest.status_code == 200
    link_mail = smtp_sink.messages[-2]
    assert f"{ORIGIN}/account/email/" in body(link_mail) and "evil.example" not in body(link_mail)


def test_the_confirmation_link_does_not_leak_through_referrer_or_caches(
    client: TestClient, app: App, person: IssuedCard
) -> None:
    """Attack: pick the confirmation token up where a browser lets it go — the ``Referer`` of
    a request the page makes to another site, a shared cache, a frame on a hostile page."""
    asked = ask(app, log_in(app, person))
    response = client.get(asked.link.removeprefix(ORIGIN))

    assert response.headers["referrer-policy"] in ("same-origin", "no-referrer", "strict-origin")
    assert "no-store" in response.headers["cache-control"]
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    parsed = page(response)
    sources = [e.get("src") for tag in ("script", "img", "iframe") for e in parsed.all(tag)]
    assert sources and all(str(s).startswith("/") for s in sources if s)


def test_the_session_cookie_cannot_be_tossed_from_a_sibling_host(
    app: App, person: IssuedCard
) -> None:
    """HOLE (low; the cookie predates issue 16). Attack: from a sibling host of the portal
    (``evil.customs.example`` next to ``portal.customs.example``) set ``swreg_session`` with
    ``Domain=.customs.example; Path=/account``: the browser sends that cookie first on the
    account pages, so the victim works on the attacker's account (types a new e-mail address
    into it, sees its page), or is logged out of their own. The CSRF cookie already uses
    the ``__Host-`` prefix over https, which a browser only accepts from the host itself,
    Secure, with ``Path=/`` and no ``Domain``; the session cookie must too."""
    with TestClient(create_app(app), base_url=ORIGIN) as http:
        headers = csrf(http)
        challenge = http.post("/api/login/challenge", headers=headers).json()
        done = http.post("/api/login", json=signed(person, challenge), headers=headers)
    assert done.status_code == 200, done.text
    [cookie] = [c for c in done.headers.get_list("set-cookie") if "session" in c.lower()]
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert cookie.startswith("__Host-"), cookie
    assert "secure" in attributes and "httponly" in attributes and "path=/" in attributes
    assert not any(a.startswith("domain=") for a in attributes)


# == 12. 忘記密碼 by a mailed link (SWREG_PASSWORD_RESET=card,email) ===============================


def registered(links: App, pki: TestPKI) -> IssuedCard:
    """An activated 個人 account (PERSON) on the app with e-mail reset links on."""
    card = pki.issue_person("王小明", "6789")
    enrol(links, "person.general", card, PERSON_ANSWERS)
    link = links.accounts.send_activation(PERSON)
    links.accounts.activate(link)
    return card


def mailed_reset_token(sink: SmtpSink, to: str) -> str:
    [mail] = [m for m in sink.messages if m["Subject"] == PASSWORD_RESET_LINK_SUBJECT][-1:]
    assert mail["To"] == to
    return body(mail).split("/password/reset/", 1)[1].split()[0]


def test_a_stolen_session_alone_cannot_end_with_the_attackers_password(
    links: App, pki: TestPKI, smtp_sink: SmtpSink
) -> None:
    """HOLE (with SWREG_PASSWORD_RESET=card,email). Attack: with nothing but a stolen session
    cookie (no password, no card, no PIN), move the account's e-mail address to the attacker's
    mailbox (the change asks for no re-authentication), confirm it there, then ask 忘記密碼 for
    a reset link — it now goes to the attacker — and set a password of the attacker's choice.
    The attacker then owns the password (憑證更換作業 after the card expires, every later
    notice and reset link), and a card reset by the owner does not even take the address
    back. Changing the recovery address must need the current password or a fresh card
    proof."""
    card = registered(links, pki)
    stolen = log_in(links, card)
    attackers = {"password": "Att4ckersPass!", "password_confirm": "Att4ckersPass!"}

    try:
        asked = ask(links, stolen, ATTACKER_EMAIL, current="Gu3ssedPass!")
        confirm(links, asked.link)
        links.password_resets.request_link(PERSON)
        token = mailed_reset_token(smtp_sink, ATTACKER_EMAIL)
        links.password_resets.reset_with_link(token, answers=attackers)
    except Exception:
        pass

    assert not password_is(links, PERSON, attackers["password"])
    assert account_row(links, PERSON).email == PERSON


@pytest.mark.parametrize(
    "recovery", ["card_reset", "password_change", "email_change", "suspension"]
)
def test_taking_the_account_back_kills_pending_reset_links(
    links: App, pki: TestPKI, smtp_sink: SmtpSink, recovery: str
) -> None:
    """HOLE. Attack: the attacker reads the account's mailbox (the reason the owner acts) and
    has a reset link (30 min) from before. The owner resets the password with the card,
    changes it on the account page, moves the account to a new e-mail address, or an officer
    suspends and reactivates the account: the old mailbox's reset link still sets a password
    afterwards. Everything that takes the account back must retire its pending reset links
    (the card reset and the password change retire none; the e-mail change and the reset by
    link retire only their own purpose)."""
    card = registered(links, pki)
    links.password_resets.request_link(PERSON)
    token = mailed_reset_token(smtp_sink, PERSON)
    owners = {"password": "0wnersN3wPass!", "password_confirm": "0wnersN3wPass!"}

    if recovery == "card_reset":
        reset(links, card, PERSON, owners)
    elif recovery == "password_change":
        links.account_settings.change_password(
            log_in(links, card), current=OLD_PASSWORD, answers=owners
        )
    elif recovery == "email_change":
        confirm(links, ask(links, log_in(links, card), NEW_EMAIL).link)
    else:
        links.accounts.suspend(PERSON, officer=admin(), reason="冒用調查中")
        links.accounts.reactivate(PERSON, officer=admin(), reason="調查完畢")

    attackers = {"password": "Att4ckersPass!", "password_confirm": "Att4ckersPass!"}
    code = refused(lambda: links.password_resets.reset_with_link(token, answers=attackers))
    assert code == "activation_invalid"
    assert not password_is(links, PERSON, attackers["password"])


def test_a_mailed_link_does_not_lift_a_lock_only_the_card_may_lift(
    links: App, pki: TestPKI, smtp_sink: SmtpSink
) -> None:
    """HOLE (contract: DESIGN.md §6 and issue 16 item 5 — too many wrong passwords make the
    account ``locked`` "until a card-proven password reset"). Attack: guess the password
    until the account locks, then lift the lock with a reset link from the mailbox (a
    mailbox is weaker proof than the card: it is what the wrong guesses may have come with).
    The link resets the password and unlocks the account; it must leave it ``locked`` (or
    be refused with ``account_locked``) so that only the card unlocks it."""
    registered(links, pki)
    set_status(links, PERSON, LOCKED, failed=MAX_FAILED_PASSWORDS)
    links.password_resets.request_link(PERSON)
    token = mailed_reset_token(smtp_sink, PERSON)

    try:
        links.password_resets.reset_with_link(token, answers=NEW)
    except Exception as exc:
        assert str(getattr(exc, "code", exc)) == "account_locked"

    assert account_row(links, PERSON).status == LOCKED


def test_links_already_mailed_stop_when_the_operator_turns_links_off(
    links: App, pki: TestPKI, smtp_sink: SmtpSink, settings: Any, clock: StagedClock
) -> None:
    """HOLE (low). Attack: an operator turns e-mail resets off (``SWREG_PASSWORD_RESET=card``)
    after abuse was seen; the links mailed before keep resetting passwords for 30 minutes,
    because only asking for a link checks the setting."""
    registered(links, pki)
    links.password_resets.request_link(PERSON)
    token = mailed_reset_token(smtp_sink, PERSON)
    mail = links.settings.mail
    card_only = bootstrap(replace(settings, mail=mail, public_origin=ORIGIN), clock=clock)
    try:
        code = refused(lambda: card_only.password_resets.reset_with_link(token, answers=NEW))
    finally:
        card_only.close()

    assert code in ("not_authorized", "activation_invalid")
    assert password_is(links, PERSON, OLD_PASSWORD)


def test_reset_links_and_other_tokens_never_stand_in_for_each_other(
    links: App, pki: TestPKI, smtp_sink: SmtpSink
) -> None:
    """Attack: use a reset link's token to confirm an e-mail change or activate an account, and
    a session token or an activation token as a reset link."""
    card = pki.issue_person("王小明", "6789")
    enrol(links, "person.general", card, PERSON_ANSWERS)
    activation = links.accounts.send_activation(PERSON)
    assert refused(lambda: links.password_resets.reset_with_link(activation, answers=NEW)) == (
        "activation_invalid"
    )
    links.accounts.activate(activation)
    session = log_in(links, card)
    links.password_resets.request_link(PERSON)
    token = mailed_reset_token(smtp_sink, PERSON)

    assert refused(lambda: confirm(links, token)) == "activation_invalid"
    assert refused(lambda: links.accounts.activate(token)) == "activation_invalid"
    assert refused(lambda: links.password_resets.reset_with_link(session, answers=NEW)) == (
        "activation_invalid"
    )
    assert password_is(links, PERSON, OLD_PASSWORD)
    assert links.password_resets.reset_with_link(token, answers=NEW).account == PERSON


def test_asking_for_a_reset_link_tells_no_account_apart(
    links: App, pki: TestPKI, smtp_sink: SmtpSink, clock: StagedClock
) -> None:
    """Attack: ask /api/password-reset/email for a registered name in each state (active,
    suspended, pending) and for unknown names, four times each, and compare the answers
    (status, body, when rate limiting starts) to learn which accounts exist and in which
    state."""
    registered(links, pki)
    sent = len(smtp_sink.messages)
    with TestClient(create_app(links), base_url=ORIGIN) as http:
        headers = csrf(http)
        for status in ("active", SUSPENDED, PENDING):
            set_status(links, PERSON, status)
            answers: dict[str, list[tuple[int, str]]] = {}
            for name in (PERSON, f"nobody-{status}@example.com"):
                answers[name] = [
                    (got.status_code, got.text)
                    for got in (
                        http.post(
                            "/api/password-reset/email", json={"account": name}, headers=headers
                        )
                        for _ in range(4)
                    )
                ]
            assert len({json.dumps(a) for a in answers.values()}) == 1, (status, answers)
            assert [code for code, _ in answers[PERSON]] == [202, 202, 202, 429]
            clock.advance(timedelta(hours=2))

    mailed = [m["To"] for m in smtp_sink.messages[sent:]]
    assert mailed == [PERSON] * 3  # the active phase only
    assert len(audit(links, "password_reset_requested")) == 3


def test_two_different_reset_links_used_at_once_make_one_reset_and_no_server_error(
    links: App, pki: TestPKI, smtp_sink: SmtpSink
) -> None:
    """Attack (or a double click on two mails): use two pending reset links of one account at
    the same moment. Each consumes its own link, then retires the other's: on PostgreSQL the
    two wait for each other's row locks and one ends as a raw database error (500)."""
    registered(links, pki)
    links.password_resets.request_link(PERSON)
    first = mailed_reset_token(smtp_sink, PERSON)
    links.password_resets.request_link(PERSON)
    second = mailed_reset_token(smtp_sink, PERSON)
    tokens = [first, second]

    with held_after_link_consumed(links, 2):
        outcomes = race(2, lambda i: links.password_resets.reset_with_link(tokens[i], answers=NEW))

    found = sorted(str(getattr(o, "code", "reset")) for o in outcomes)
    assert found == ["activation_invalid", "reset"], outcomes
    assert len(audit(links, "password_reset")) == 1
