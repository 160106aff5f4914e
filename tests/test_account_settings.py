"""The account page's own changes (issue 16): the password, the e-mail address, the sessions.

Mail goes through a real SMTP server; sessions are opened by card logins with the test PKI's keys.
The fixtures (an app mailing to the SMTP server, an activated 個人 account) are those of
tests/test_password_reset.py, imported by name.
"""
# ruff: noqa: F811 - the imported fixtures are parameters of the tests

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from sqlalchemy import select

from engine import App, FixedClock
from engine._errors import FormError, SwregError
from engine.services.account_settings import EMAIL_CHANGE_TTL, EmailChange, PasswordChange
from engine.services.accounts import ACTIVE, LOCKED, MAX_FAILED_PASSWORDS
from engine.services.login import MAX_CLIENT_CHARS
from engine.services.mail import (
    EMAIL_CHANGE_NOTICE_SUBJECT,
    EMAIL_CHANGE_SUBJECT,
    PASSWORD_CHANGED_SUBJECT,
)
from engine.store import AccountToken
from engine.testing.pki import IssuedCard
from engine.web import create_app
from engine.web._shared import where_from
from tests.test_mail import SmtpSink, body
from tests.test_password_reset import (  # noqa: F401 - app, person, smtp_sink: fixtures
    NEW,
    OLD_PASSWORD,
    PERSON,
    account_row,
    app,
    audit,
    password_is,
    person,
    reset,
    smtp_sink,
)
from tests.test_renewal import ORIGIN, answer, csrf, refused, signed

NEW_EMAIL = "hua@example.org"


def log_in(app: App, card: IssuedCard, client: str | None = None) -> str:
    logins = app.logins
    response = answer(logins.issue_challenge(origin=ORIGIN), card)
    return logins.login(response, origin=ORIGIN, client=client).token


def change(app: App, token: str, current: str, answers: Any = None) -> PasswordChange:
    return app.account_settings.change_password(token, current=current, answers=answers or NEW)


def subjects(sink: SmtpSink) -> list[str]:
    return [str(m["Subject"]) for m in sink.messages]


# -- the password ----------------------------------------------------------------------------


def test_change_password_ends_every_session_and_hands_the_caller_a_new_one(
    app: App, person: IssuedCard, clock: FixedClock, smtp_sink: SmtpSink
) -> None:
    mine, elsewhere = log_in(app, person), log_in(app, person)
    clock.advance(timedelta(minutes=1))

    done = change(app, mine, OLD_PASSWORD)

    assert (done.account, done.sessions_ended) == (PERSON, 1)
    assert password_is(app, PERSON, NEW["password"])
    assert account_row(app, PERSON).password_changed_at == clock.now()
    assert app.logins.session(mine) is None  # a copy of the old cookie is worth nothing
    assert app.logins.session(elsewhere) is None
    fresh = app.logins.session(done.token)
    assert fresh is not None and fresh.account == PERSON
    [(actor, _before, _after, diff)] = audit(app, "password_changed")
    assert (actor, diff) == ("web", {"account": "m**g@example.com", "sessions_ended": 1})
    assert subjects(smtp_sink)[-1] == PASSWORD_CHANGED_SUBJECT
    assert smtp_sink.messages[-1]["To"] == PERSON
    assert NEW["password"] not in body(smtp_sink.messages[-1])


def test_wrong_current_passwords_lock_the_password_until_a_card_reset(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    token = log_in(app, person)
    for tried in range(1, MAX_FAILED_PASSWORDS + 1):
        with pytest.raises(SwregError) as info:
            change(app, token, "Wr0ngPassword!")
        assert (str(info.value.code), info.value.field) == (
            "password_incorrect",
            "current_password",
        )
        assert account_row(app, PERSON).failed_passwords == tried

    assert account_row(app, PERSON).status == LOCKED
    assert len(audit(app, "account_locked")) == 1
    assert app.logins.session(token) is not None  # the card's session lives on
    assert refused(lambda: change(app, token, OLD_PASSWORD)) == "account_locked"
    assert password_is(app, PERSON, OLD_PASSWORD)

    assert reset(app, person, PERSON).unlocked is True
    assert account_row(app, PERSON).status == ACTIVE


def test_a_right_password_sets_the_count_back(app: App, person: IssuedCard) -> None:
    token = log_in(app, person)
    refused(lambda: change(app, token, "Wr0ngPassword!"))
    assert account_row(app, PERSON).failed_passwords == 1

    change(app, token, OLD_PASSWORD)

    assert account_row(app, PERSON).failed_passwords == 0


def test_a_weak_new_password_is_refused_before_the_current_is_checked(
    app: App, person: IssuedCard
) -> None:
    token = log_in(app, person)

    with pytest.raises(FormError) as info:
        change(app, token, "Wr0ngPassword!", {"password": "short", "password_confirm": "short"})

    assert [(str(e.code), e.field) for e in info.value.errors] == [("password_policy", "password")]
    assert account_row(app, PERSON).failed_passwords == 0


def test_a_dead_session_changes_nothing(app: App, person: IssuedCard, clock: FixedClock) -> None:
    token = log_in(app, person)
    app.logins.logout(token)

    assert refused(lambda: change(app, token, OLD_PASSWORD)) == "session_expired"
    assert refused(lambda: change(app, "", OLD_PASSWORD)) == "session_expired"
    idle = log_in(app, person)
    clock.advance(app.settings.session_ttl + timedelta(seconds=1))
    assert refused(lambda: change(app, idle, OLD_PASSWORD)) == "session_expired"
    assert password_is(app, PERSON, OLD_PASSWORD)
    assert audit(app, "password_changed") == []


# -- the e-mail address ----------------------------------------------------------------------

LINK = re.compile(re.escape(ORIGIN) + r"/account/email/([A-Za-z0-9_-]{43})")


def ask(app: App, token: str, address: str = NEW_EMAIL) -> EmailChange:
    return app.account_settings.request_email_change(token, new_email=address, current=OLD_PASSWORD)


def test_an_email_change_is_confirmed_from_the_new_address(
    app: App, person: IssuedCard, clock: FixedClock, smtp_sink: SmtpSink
) -> None:
    token = log_in(app, person)

    asked = ask(app, token, " hua@Example.ORG ")

    assert asked.new_email == NEW_EMAIL
    assert asked.expires_at == clock.now() + EMAIL_CHANGE_TTL
    confirmation, notice = smtp_sink.messages[-2:]
    assert (confirmation["Subject"], confirmation["To"]) == (EMAIL_CHANGE_SUBJECT, NEW_EMAIL)
    [link_token] = set(LINK.findall(body(confirmation)))
    assert asked.link.endswith(link_token)
    assert (notice["Subject"], notice["To"]) == (EMAIL_CHANGE_NOTICE_SUBJECT, PERSON)
    assert "h*a@example.org" in body(notice) and NEW_EMAIL not in body(notice)
    assert account_row(app, PERSON).email == PERSON  # not before the new address confirms
    [(_actor, _b, _a, requested)] = audit(app, "email_change_requested")
    assert requested == {
        "account": "m**g@example.com",
        "email": "m**g@example.com",
        "new_email": "h*a@example.org",
        "expires_at": asked.expires_at.isoformat(),
    }

    assert app.account_settings.confirm_email_change(asked.link) == PERSON

    row = account_row(app, PERSON)
    assert (row.name, row.email) == (PERSON, NEW_EMAIL)  # the account name stays
    [(_actor, _b, _a, changed)] = audit(app, "email_changed")
    assert changed == {
        "account": "m**g@example.com", "email": "m**g@example.com", "new_email": "h*a@example.org"
    }  # fmt: skip
    again = refused(lambda: app.account_settings.confirm_email_change(link_token))
    assert again == "activation_invalid"
    assert app.accounts.show(PERSON).email == "h*a@example.org"


def test_confirming_one_change_retires_the_others(app: App, person: IssuedCard) -> None:
    token = log_in(app, person)
    first = ask(app, token, "first@example.org")
    second = ask(app, token, "second@example.org")

    app.account_settings.confirm_email_change(second.link)

    assert refused(lambda: app.account_settings.confirm_email_change(first.link)) == (
        "activation_invalid"
    )
    assert account_row(app, PERSON).email == "second@example.org"


def test_an_expired_or_unknown_link_changes_nothing(
    app: App, person: IssuedCard, clock: FixedClock
) -> None:
    asked = ask(app, log_in(app, person))
    clock.advance(EMAIL_CHANGE_TTL + timedelta(seconds=1))

    assert refused(lambda: app.account_settings.confirm_email_change(asked.link)) == (
        "activation_expired"
    )
    assert refused(lambda: app.account_settings.confirm_email_change("x" * 43)) == (
        "activation_invalid"
    )
    assert account_row(app, PERSON).email == PERSON
    assert audit(app, "email_changed") == []


@pytest.mark.parametrize(
    ("address", "code"),
    [("not-an-address", "invalid_email"), (PERSON, "invalid_value"), ("", "field_required")],
)
def test_a_bad_new_address_is_refused_and_mails_nothing(
    app: App, person: IssuedCard, smtp_sink: SmtpSink, address: str, code: str
) -> None:
    token = log_in(app, person)
    sent = len(smtp_sink.messages)

    with pytest.raises(SwregError) as info:
        ask(app, token, address)

    error = info.value
    found = error.errors[0] if isinstance(error, FormError) else error
    assert (str(found.code), found.field) == (code, "email")
    assert len(smtp_sink.messages) == sent
    assert audit(app, "email_change_requested") == []


def test_email_changes_of_one_account_are_limited(app: App, person: IssuedCard) -> None:
    token = log_in(app, person)
    for n in range(5):
        ask(app, token, f"n{n}@example.org")

    assert refused(lambda: ask(app, token, "n9@example.org")) == "rate_limited"


def test_an_email_change_needs_a_live_session(app: App, person: IssuedCard) -> None:
    token = log_in(app, person)
    app.logins.end_all_sessions(PERSON)

    assert refused(lambda: ask(app, token)) == "session_expired"


# -- sessions --------------------------------------------------------------------------------


def test_the_sessions_list_shows_where_and_which_is_mine(
    app: App, person: IssuedCard, clock: FixedClock
) -> None:
    phone = log_in(app, person, client="Safari on iOS · 203.0.113.*")
    clock.advance(timedelta(minutes=5))
    desk = log_in(app, person, client="Chrome on Windows · " + "x" * 200)

    listed = app.logins.sessions_of(desk)

    assert [(s.client, s.current) for s in listed] == [
        (("Chrome on Windows · " + "x" * 200)[:MAX_CLIENT_CHARS], True),
        ("Safari on iOS · 203.0.113.*", False),
    ]
    assert listed[1].created_at == clock.now() - timedelta(minutes=5)
    assert [s.current for s in app.logins.sessions_of(phone)] == [False, True]
    app.logins.logout_all(phone)
    assert refused(lambda: app.logins.sessions_of(desk)) == "session_expired"


# -- through the API -------------------------------------------------------------------------


def api_login(client: TestClient, card: IssuedCard, headers: dict[str, str]) -> None:
    challenge = client.post("/api/login/challenge", headers=headers).json()
    done = client.post("/api/login", json=signed(card, challenge), headers=headers)
    assert done.status_code == 200, done.text


def codes(response: Any) -> tuple[int, list[str]]:
    return response.status_code, [e["code"] for e in response.json()["errors"]]


def test_the_account_api(app: App, person: IssuedCard, smtp_sink: SmtpSink) -> None:
    with TestClient(create_app(app), base_url=ORIGIN) as client:
        headers = csrf(client)
        assert codes(client.get("/api/account")) == (401, ["session_expired"])
        api_login(client, person, headers)
        client.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) Chrome/142.0 Safari/537"

        shown = client.get("/api/account")

        assert shown.status_code == 200, shown.text
        account = shown.json()
        assert {k: account[k] for k in ("account", "state", "type", "email")} == {
            "account": PERSON, "state": "active", "type": "person.general",
            "email": "m**g@example.com",
        }  # fmt: skip
        assert [c["status"] for c in account["certificates"]] == ["active"]
        [session] = account["sessions"]
        assert (session["current"], session["client"]) == (True, "API · ?")
        assert "password_hash" not in shown.text

        wrong = client.post(
            "/api/account/password",
            json={"current_password": "Wr0ngPassword!", **NEW},
            headers=headers,
        )
        assert codes(wrong) == (422, ["password_incorrect"])
        changed = client.post(
            "/api/account/password", json={"current_password": OLD_PASSWORD, **NEW},
            headers=headers,
        )  # fmt: skip
        assert changed.json() == {"account": PERSON, "sessions_ended": 0}
        assert NEW["password"] not in changed.text

        asked = client.post(
            "/api/account/email",
            json={"email": NEW_EMAIL, "current_password": NEW["password"]},
            headers=headers,
        )
        assert asked.status_code == 200, asked.text
        assert asked.json()["email"] == "h*a@example.org"
        [token] = set(LINK.findall(body(smtp_sink.messages[-2])))
        confirmed = client.post(
            "/api/account/email/confirm", json={"token": token}, headers=headers
        )
        assert confirmed.json() == {"account": PERSON}
        email = {"email": NEW_EMAIL, "current_password": NEW["password"]}
        assert codes(client.post("/api/account/email", json=email)) == (
            403,
            ["csrf_failed"],
        )
    assert (account_row(app, PERSON).email, password_is(app, PERSON, NEW["password"])) == (
        NEW_EMAIL,
        True,
    )


@pytest.mark.parametrize(
    ("agent", "peer", "where"),
    [
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/142.0.0.0 Safari/537.36 Edg/142.0.0.0", "203.0.113.77",
         "Edge / Windows · 203.0.113.*"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "2001:db8:1:2:3:4:5:6",
         "Safari / iOS · 2001:0db8:0001:0002:*"),
        ("curl/8.5.0", "::ffff:198.51.100.9", "API · 198.51.100.*"),
    ],
)  # fmt: skip
def test_where_a_session_was_opened_is_told_without_the_full_address(
    agent: str, peer: str, where: str
) -> None:
    scope = {
        "type": "http", "headers": [(b"user-agent", agent.encode())], "client": (peer, 1234),
        "path": "/", "query_string": b"",
    }  # fmt: skip
    assert where_from(Request(scope), "API") == where


def test_the_purge_forgets_dead_links_and_their_addresses(
    app: App, person: IssuedCard, clock: FixedClock
) -> None:
    token = log_in(app, person)
    ask(app, token, "never-confirmed@example.org")
    ask(app, token, "still-pending@example.org")
    clock.advance(timedelta(hours=23))
    live = ask(app, log_in(app, person), "pending@example.org")  # alive when the others died
    clock.advance(timedelta(hours=2))

    report = app.retention.purge()

    assert report.links == 2
    with app.database.unit_of_work() as uow:
        kept = [t.new_email for t in uow.session.scalars(select(AccountToken))]
    assert kept == ["pending@example.org"]
    assert app.account_settings.confirm_email_change(live.link) == PERSON
