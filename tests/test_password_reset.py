"""忘記密碼 (card-proven password reset), ``swreg accounts show`` and suspension (issue 16).

The notice mail goes through a real SMTP server; the card answers come from the test PKI's keys,
through the service, the HTTP API and the CLI (a ``virtual:`` PKCS#12 card).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from engine import App, FixedClock, IssuerCA, Settings, bootstrap
from engine._errors import FormError, SwregError
from engine._settings import MailSettings
from engine.cli import app as cli_app
from engine.services.accounts import ACTIVE, LOCKED, MAX_FAILED_PASSWORDS, PENDING, SUSPENDED
from engine.services.hashing import PasswordHasher
from engine.services.mail import PASSWORD_RESET_LINK_SUBJECT, PASSWORD_RESET_SUBJECT
from engine.services.password_reset import PasswordReset
from engine.store import Account, AuditEntry, LoginSession
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from tests.conftest import COMPANY_ANSWERS, PERSON_ANSWERS, PIN, PKI_NOW, SECRET
from tests.helpers import enrol
from tests.test_mail import SmtpSink, body
from tests.test_renewal import (
    ORIGIN,
    answer,
    csrf,
    fingerprint,
    login_code,
    refused,
    serial,
    signed,
)

UBN = "04595257"
PERSON = "ming@example.com"
NEW = {"password": "N3wPassw0rd!", "password_confirm": "N3wPassw0rd!"}
OLD_PASSWORD = PERSON_ANSWERS["password"]


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def app(settings: Settings, clock: FixedClock, pki: TestPKI, smtp_sink: SmtpSink) -> Iterator[App]:
    """The test app with its mail going to a real SMTP server and ORIGIN as its public origin."""
    mail = MailSettings(host="127.0.0.1", port=smtp_sink.port, tls="none")
    configured = replace(settings, mail=mail, public_origin=ORIGIN)
    application = bootstrap(configured, clock=clock)
    pki.publish_to(application.trust, actor="test")
    yield application
    application.close()


def activate(app: App, name: str) -> None:
    link = app.accounts.send_activation(name)
    app.accounts.activate(link)


@pytest.fixture
def person(app: App, pki: TestPKI) -> IssuedCard:
    card = pki.issue_person("王小明", "6789")
    enrol(app, "person.general", card, PERSON_ANSWERS)
    activate(app, PERSON)
    return card


@pytest.fixture
def company(app: App, pki: TestPKI) -> IssuedCard:
    card = pki.issue_company(UBN)
    enrol(app, "enterprise.general", card, COMPANY_ANSWERS)
    activate(app, UBN)
    return card


def reset(app: App, card: IssuedCard, account: str, answers: Any = None) -> PasswordReset:
    service = app.password_resets
    response = answer(service.issue_challenge(origin=ORIGIN), card)
    return service.reset(response, origin=ORIGIN, account=account, answers=answers or NEW)


def account_row(app: App, name: str) -> Account:
    with app.database.unit_of_work() as uow:
        row = uow.accounts.get_by_name(name)
        assert row is not None
        uow.session.expunge(row)
        return row


def password_is(app: App, name: str, password: str) -> bool:
    return PasswordHasher().verify(account_row(app, name).password_hash, password)


def audit(app: App, event: str) -> list[tuple[str, str | None, str | None, dict[str, Any]]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.event == event).order_by(AuditEntry.seq)
        )
        return [(r.actor, r.from_state, r.to_state, dict(r.diff)) for r in rows]


def live_sessions(app: App) -> int:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(LoginSession).where(LoginSession.ended_at.is_(None)))
        return len(list(rows))


def log_in(app: App, card: IssuedCard) -> str:
    logins = app.logins
    return logins.login(answer(logins.issue_challenge(origin=ORIGIN), card), origin=ORIGIN).token


def set_status(app: App, name: str, status: str, failed: int = 0) -> None:
    with app.database.unit_of_work() as uow:
        row = uow.accounts.get_by_name(name)
        assert row is not None
        row.status, row.failed_passwords = status, failed
        uow.commit()


def nothing_changed(app: App, name: str, sink: SmtpSink, sessions: int) -> None:
    assert password_is(app, name, OLD_PASSWORD)
    assert audit(app, "password_reset") == []
    assert [m["Subject"] for m in sink.messages if m["Subject"] == PASSWORD_RESET_SUBJECT] == []
    assert live_sessions(app) == sessions


# -- the reset -------------------------------------------------------------------------------


def test_reset_with_the_accounts_card_sets_the_password_and_ends_every_session(
    app: App, person: IssuedCard, clock: FixedClock, smtp_sink: SmtpSink
) -> None:
    first, second = log_in(app, person), log_in(app, person)
    clock.advance(timedelta(minutes=3))

    done = reset(app, person, PERSON)

    assert done == PasswordReset(PERSON, sessions_ended=2, unlocked=False, notice_sent=True)
    assert password_is(app, PERSON, NEW["password"])
    assert not password_is(app, PERSON, OLD_PASSWORD)
    row = account_row(app, PERSON)
    assert (row.status, row.failed_passwords) == (ACTIVE, 0)
    assert row.password_changed_at == clock.now()
    assert app.logins.session(first) is None and app.logins.session(second) is None
    [(actor, before, after, diff)] = audit(app, "password_reset")
    assert (actor, before, after) == ("web", ACTIVE, ACTIVE)
    assert diff == {
        "account": "m**g@example.com",
        "proof": "card",
        "certificate": fingerprint(person),
        "origin": ORIGIN,
        "sessions_ended": 2,
        "revocation": diff["revocation"],
    }
    assert diff["revocation"]["status"] in ("good", "unknown")
    notice = smtp_sink.messages[-1]
    assert notice["Subject"] == PASSWORD_RESET_SUBJECT
    assert notice["To"] == PERSON
    text = body(notice)
    assert f"帳號「{PERSON}」的密碼已於" in text and "所有已登入的裝置均已登出" in text
    assert NEW["password"] not in text
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_reset_unlocks_a_locked_account(app: App, company: IssuedCard) -> None:
    set_status(app, UBN, LOCKED, failed=MAX_FAILED_PASSWORDS)

    done = reset(app, company, UBN)

    assert done.unlocked is True
    row = account_row(app, UBN)
    assert (row.status, row.failed_passwords) == (ACTIVE, 0)
    [(_, before, after, _diff)] = audit(app, "password_reset")
    assert (before, after) == (LOCKED, ACTIVE)


def test_another_accounts_card_is_refused_and_changes_nothing(
    app: App, person: IssuedCard, company: IssuedCard, smtp_sink: SmtpSink
) -> None:
    log_in(app, person)
    sent = len(smtp_sink.messages)

    assert refused(lambda: reset(app, company, PERSON)) == "not_authorized"

    nothing_changed(app, PERSON, smtp_sink, sessions=1)
    assert len(smtp_sink.messages) == sent


@pytest.mark.parametrize("account", [PERSON, "nobody@example.com", ""])
def test_an_unregistered_card_is_refused_for_any_account(
    app: App, pki: TestPKI, person: IssuedCard, smtp_sink: SmtpSink, account: str
) -> None:
    stranger = pki.issue_person("陳大文", "1234")

    assert refused(lambda: reset(app, stranger, account)) == "not_authorized"

    nothing_changed(app, PERSON, smtp_sink, sessions=0)


def test_a_replaced_card_no_longer_resets(
    app: App, pki: TestPKI, company: IssuedCard, smtp_sink: SmtpSink
) -> None:
    new = pki.issue_company(UBN, rank="secondary")
    token = log_in(app, company)
    session = app.logins.session(token)
    renewals = app.renewals
    renewals.replace_card(
        answer(renewals.issue_challenge(origin=ORIGIN), new), origin=ORIGIN, session=session
    )

    assert refused(lambda: reset(app, company, UBN)) == "not_authorized"
    assert password_is(app, UBN, OLD_PASSWORD)
    assert reset(app, new, UBN).account == UBN


def test_a_revoked_card_is_refused(
    app: App, pki: TestPKI, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    moica = pki.ca(IssuerCA.MOICA).certificate
    app.trust.add_certificate(pki.der(moica), anchor=False)
    crl = pki.crl(IssuerCA.MOICA, revoked=[person])
    app.trust.add_crl(crl.public_bytes(serialization.Encoding.DER))

    assert refused(lambda: reset(app, person, PERSON)) == "certificate_revoked"

    nothing_changed(app, PERSON, smtp_sink, sessions=0)


def test_a_replayed_answer_is_refused(app: App, person: IssuedCard, smtp_sink: SmtpSink) -> None:
    service = app.password_resets
    response = answer(service.issue_challenge(origin=ORIGIN), person)
    service.reset(response, origin=ORIGIN, account=PERSON, answers=NEW)
    again = {"password": "An0therPass!", "password_confirm": "An0therPass!"}

    code = refused(lambda: service.reset(response, origin=ORIGIN, account=PERSON, answers=again))

    assert code == "challenge_used"
    assert password_is(app, PERSON, NEW["password"])
    assert len(audit(app, "password_reset")) == 1


def test_a_login_answer_does_not_reset(app: App, person: IssuedCard, smtp_sink: SmtpSink) -> None:
    """The scopes differ: a card's answer to a login challenge never verifies as a reset."""
    login_challenge = app.logins.issue_challenge(origin=ORIGIN)
    response = answer(login_challenge, person)

    code = refused(
        lambda: app.password_resets.reset(response, origin=ORIGIN, account=PERSON, answers=NEW)
    )

    assert code == "signature_invalid"
    nothing_changed(app, PERSON, smtp_sink, sessions=0)


def test_an_answer_signed_for_another_origin_is_refused(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    service = app.password_resets
    response = answer(service.issue_challenge(origin="https://evil.example"), person)

    code = refused(lambda: service.reset(response, origin=ORIGIN, account=PERSON, answers=NEW))

    assert code == "signature_invalid"
    nothing_changed(app, PERSON, smtp_sink, sessions=0)


@pytest.mark.parametrize(
    ("answers", "code", "field"),
    [
        ({"password": "short", "password_confirm": "short"}, "password_policy", "password"),
        ({"password": "N3wPassw0rd!", "password_confirm": "other"}, "password_mismatch",
         "password_confirm"),
        ({"password_confirm": "N3wPassw0rd!"}, "field_required", "password"),
    ],
)  # fmt: skip
def test_a_bad_new_password_costs_no_challenge(
    app: App, person: IssuedCard, answers: dict[str, str], code: str, field: str
) -> None:
    service = app.password_resets
    response = answer(service.issue_challenge(origin=ORIGIN), person)

    with pytest.raises(FormError) as info:
        service.reset(response, origin=ORIGIN, account=PERSON, answers=answers)

    assert [(str(e.code), e.field) for e in info.value.errors] == [(code, field)]
    assert service.reset(response, origin=ORIGIN, account=PERSON, answers=NEW).account == PERSON


@pytest.mark.parametrize(
    ("status", "code"), [(SUSPENDED, "account_suspended"), (PENDING, "account_inactive")]
)
def test_only_active_and_locked_accounts_reset(
    app: App, person: IssuedCard, smtp_sink: SmtpSink, status: str, code: str
) -> None:
    set_status(app, PERSON, status)

    assert refused(lambda: reset(app, person, PERSON)) == code

    nothing_changed(app, PERSON, smtp_sink, sessions=0)
    assert account_row(app, PERSON).status == status


def test_resets_of_one_account_are_limited(app: App, person: IssuedCard) -> None:
    for _ in range(5):
        reset(app, person, PERSON)

    assert refused(lambda: reset(app, person, PERSON)) == "rate_limited"
    assert len(audit(app, "password_reset")) == 5


def test_the_old_password_stops_working_for_renewal(
    app: App, pki: TestPKI, clock: FixedClock
) -> None:
    """憑證更換作業 by password (the old card expired) takes the new password, not the old."""
    card = pki.issue_person("王小明", "6789", valid_to=PKI_NOW + timedelta(days=2))
    enrol(app, "person.general", card, PERSON_ANSWERS)
    activate(app, PERSON)
    reset(app, card, PERSON)
    clock.advance(timedelta(days=3))
    renewed = pki.issue_person("王小明", "6789")
    renewals = app.renewals

    def renew(password: str) -> str:
        response = answer(renewals.issue_challenge(origin=ORIGIN), renewed)
        return renewals.replace_card(
            response, origin=ORIGIN, account=PERSON, password=password
        ).account

    assert refused(lambda: renew(OLD_PASSWORD)) == "not_authorized"
    assert renew(NEW["password"]) == PERSON


# -- through the API -------------------------------------------------------------------------


def test_reset_through_the_api(app: App, person: IssuedCard) -> None:
    with TestClient(create_app(app), base_url=ORIGIN) as client:
        headers = csrf(client)
        issued = client.post("/api/password-reset/challenge", headers=headers)
        assert issued.status_code == 200, issued.text
        challenge = issued.json()

        done = client.post(
            "/api/password-reset",
            json=signed(person, challenge, account=PERSON, **NEW),
            headers=headers,
        )

        assert done.status_code == 200, done.text
        assert done.json() == {
            "account": PERSON, "sessions_ended": 0, "unlocked": False, "notice_sent": True,
        }  # fmt: skip
        assert NEW["password"] not in done.text
        replay = client.post(
            "/api/password-reset",
            json=signed(person, challenge, account=PERSON, **NEW),
            headers=headers,
        )
        assert (replay.status_code, replay.json()["errors"][0]["code"]) == (422, "challenge_used")
        no_csrf = client.post("/api/password-reset/challenge")
        assert no_csrf.status_code == 403
    assert password_is(app, PERSON, NEW["password"])


def test_the_api_refuses_another_accounts_card(
    app: App, person: IssuedCard, company: IssuedCard
) -> None:
    with TestClient(create_app(app), base_url=ORIGIN) as client:
        headers = csrf(client)
        challenge = client.post("/api/password-reset/challenge", headers=headers).json()
        request = signed(company, challenge, account=PERSON, **NEW)
        refusal = client.post("/api/password-reset", json=request, headers=headers)
    assert refusal.status_code == 403, refusal.text
    assert [e["code"] for e in refusal.json()["errors"]] == ["not_authorized"]
    assert password_is(app, PERSON, OLD_PASSWORD)


# -- through the CLI -------------------------------------------------------------------------


def run(app: App, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        cli_app, ["--db", app.settings.database_url, *args, "--json"], input=stdin,
        env=cli_env(app),
    )  # fmt: skip
    return result.exit_code, json.loads(result.stdout)


def cli_env(app: App) -> dict[str, str]:
    mail = app.settings.mail
    return {
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_SMTP_HOST": mail.host or "",
        "SWREG_SMTP_PORT": str(mail.port),
        "SWREG_SMTP_TLS": mail.tls,
        "SWREG_ARGON2": "1,64,1",
    }


def test_cli_reset_password(
    app: App, person: IssuedCard, company: IssuedCard, card_file: Any, answers_file: Any
) -> None:
    answers = answers_file(NEW)

    code, refusal = run(
        app, "accounts", "reset-password", PERSON, "--card", card_file(company),
        "--answers", str(answers), "--pin-stdin", stdin=PIN + "\n",
    )  # fmt: skip
    assert (code, [e["code"] for e in refusal["errors"]]) == (1, ["not_authorized"])
    assert audit(app, "password_reset") == []

    code, done = run(
        app, "accounts", "reset-password", PERSON, "--card", card_file(person),
        "--answers", str(answers), "--pin-stdin", stdin=PIN + "\n",
    )  # fmt: skip

    assert code == 0, done
    assert done == {
        "ok": True, "account": PERSON, "sessions_ended": 0, "unlocked": False, "notice_sent": True,
    }  # fmt: skip
    assert password_is(app, PERSON, NEW["password"])
    [(actor, *_rest)] = audit(app, "password_reset")
    assert actor == "cli"


def test_cli_accounts_show(app: App, person: IssuedCard, pki: TestPKI) -> None:
    code, shown = run(app, "accounts", "show", PERSON)

    assert code == 0, shown
    assert shown == {
        "ok": True,
        "account": PERSON,
        "state": "active",
        "type": "person.general",
        "email": "m**g@example.com",
        "certificates": [
            {
                "fingerprint": fingerprint(person),
                "ca": "MOICA",
                "role": "card",
                "not_after": person.certificate.not_valid_after_utc.isoformat(),
                "status": "active",
            }
        ],
        "password_changed_at": shown["password_changed_at"],
    }
    changed = account_row(app, PERSON).password_changed_at
    assert changed is not None and shown["password_changed_at"] == changed.isoformat()
    code, unknown = run(app, "accounts", "show", "nobody@example.com")
    assert (code, [e["code"] for e in unknown["errors"]]) == (1, ["not_registered"])


def test_accounts_show_tells_roles_and_replaced_cards(
    app: App, pki: TestPKI, company: IssuedCard, clock: FixedClock
) -> None:
    new = pki.issue_company(UBN, rank="secondary")
    session = app.logins.session(log_in(app, company))
    renewals = app.renewals
    renewals.replace_card(
        answer(renewals.issue_challenge(origin=ORIGIN), new), origin=ORIGIN, session=session
    )

    shown = app.accounts.show(UBN)

    assert [(c.fingerprint, c.role, c.status) for c in shown.certificates] == [
        (fingerprint(company), "primary", "replaced"),
        (fingerprint(new), "secondary", "active"),
    ]
    clock.advance(new.certificate.not_valid_after_utc - clock.now() + timedelta(seconds=1))
    assert [c.status for c in app.accounts.show(UBN).certificates] == ["replaced", "expired"]
    assert serial(new)  # the renewed card is a different certificate


# -- suspension --------------------------------------------------------------------------------


@pytest.fixture
def officers(app: App, pki: TestPKI) -> dict[str, str]:
    """An admin and a reviewer on the officer list."""
    admin = pki.issue_person("林關員", "1111")
    reviewer = pki.issue_person("張審核", "2222")
    app.officers.add(admin.der(), name="Lin", role="admin")
    app.officers.add(reviewer.der(), name="Chang", role="reviewer")
    return {"admin": "Lin", "reviewer": "Chang"}


def test_suspend_and_reactivate(app: App, person: IssuedCard, officers: dict[str, str]) -> None:
    token = log_in(app, person)

    code, suspended = run(
        app, "accounts", "suspend", PERSON, "--officer", "Lin", "--reason", "冒用調查中"
    )

    assert code == 0, suspended
    assert suspended["state"] == SUSPENDED
    assert app.logins.session(token) is None
    assert login_code(app.logins, person) == "account_suspended"
    assert refused(lambda: reset(app, person, PERSON)) == "account_suspended"
    [(actor, before, after, diff)] = audit(app, "account_suspended")
    assert (actor, before, after) == ("officer:Lin", ACTIVE, SUSPENDED)
    assert diff == {
        "account": "m**g@example.com",
        "reason": "冒用調查中",
        "certificate": app.officers.get("Lin").fingerprint,
        "via": "cli",
        "sessions_ended": 1,
    }

    code, back = run(
        app, "accounts", "reactivate", PERSON, "--officer", "Lin", "--reason", "調查完畢"
    )

    assert (code, back["state"]) == (0, ACTIVE)
    assert app.logins.session(token) is None  # the old sessions stay ended
    assert log_in(app, person)
    [(actor, before, after, diff)] = audit(app, "account_reactivated")
    assert (actor, before, after) == ("officer:Lin", SUSPENDED, ACTIVE)
    assert diff == {
        "account": "m**g@example.com",
        "reason": "調查完畢",
        "certificate": app.officers.get("Lin").fingerprint,
        "via": "cli",
    }


@pytest.mark.parametrize(
    ("officer", "reason", "code"),
    [("Chang", "冒用", "not_authorized"), ("Nobody", "冒用", "not_authorized"),
     ("Lin", "  ", "field_required")],
)  # fmt: skip
def test_suspension_needs_an_admin_and_a_reason(
    app: App, person: IssuedCard, officers: dict[str, str], officer: str, reason: str, code: str
) -> None:
    status, refusal = run(
        app, "accounts", "suspend", PERSON, "--officer", officer, "--reason", reason
    )

    assert (status, [e["code"] for e in refusal["errors"]]) == (1, [code])
    assert account_row(app, PERSON).status == ACTIVE
    assert audit(app, "account_suspended") == []


def test_reactivating_an_active_account_is_refused(
    app: App, person: IssuedCard, officers: dict[str, str]
) -> None:
    status, refusal = run(
        app, "accounts", "reactivate", PERSON, "--officer", "Lin", "--reason", "x"
    )
    assert (status, [e["code"] for e in refusal["errors"]]) == (1, ["invalid_transition"])


# -- by a mailed link (SWREG_PASSWORD_RESET=card,email) -----------------------------------------

RESET_LINK = re.compile(re.escape(ORIGIN) + r"/password/reset/([A-Za-z0-9_-]{43})")


@pytest.fixture
def links(
    settings: Settings, clock: FixedClock, pki: TestPKI, smtp_sink: SmtpSink
) -> Iterator[App]:
    """The app with e-mail reset links on (``SWREG_PASSWORD_RESET=card,email``)."""
    mail = MailSettings(host="127.0.0.1", port=smtp_sink.port, tls="none")
    configured = replace(settings, mail=mail, public_origin=ORIGIN, email_password_reset=True)
    application = bootstrap(configured, clock=clock)
    pki.publish_to(application.trust, actor="test")
    yield application
    application.close()


def test_the_setting_says_which_proofs_reset() -> None:
    assert Settings.from_env({}).email_password_reset is False
    assert Settings.from_env({"SWREG_PASSWORD_RESET": "card"}).email_password_reset is False
    assert Settings.from_env({"SWREG_PASSWORD_RESET": "email, card"}).email_password_reset
    for wrong in ("email", "card,sms", "none"):
        with pytest.raises(SwregError) as info:
            Settings.from_env({"SWREG_PASSWORD_RESET": wrong})
        assert str(info.value.code) == "usage"


def test_without_the_setting_no_link_is_sent(
    app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    sent = len(smtp_sink.messages)
    assert refused(lambda: app.password_resets.request_link(PERSON)) == "not_authorized"
    assert len(smtp_sink.messages) == sent


def test_a_mailed_link_resets_once(
    links: App, pki: TestPKI, clock: FixedClock, smtp_sink: SmtpSink
) -> None:
    card = pki.issue_person("王小明", "6789")
    enrol(links, "person.general", card, PERSON_ANSWERS)
    activate(links, PERSON)
    token = log_in(links, card)

    link = links.password_resets.request_link(PERSON)

    mail = smtp_sink.messages[-1]
    assert (mail["Subject"], mail["To"]) == (PASSWORD_RESET_LINK_SUBJECT, PERSON)
    [found] = set(RESET_LINK.findall(body(mail)))
    assert link is not None and link.endswith(found)
    [(_actor, _b, _a, requested)] = audit(links, "password_reset_requested")
    assert requested["account"] == "m**g@example.com" and found not in str(requested)
    assert password_is(links, PERSON, OLD_PASSWORD)  # nothing changes before the link is used
    clock.advance(timedelta(minutes=10))

    done = links.password_resets.reset_with_link(found, answers=NEW)

    assert done == PasswordReset(PERSON, sessions_ended=1, unlocked=False, notice_sent=True)
    assert password_is(links, PERSON, NEW["password"]) and links.logins.session(token) is None
    [(_actor, before, _after, diff)] = audit(links, "password_reset")
    assert (before, diff) == (
        ACTIVE, {"account": "m**g@example.com", "proof": "email", "sessions_ended": 1}
    )  # fmt: skip
    again = refused(lambda: links.password_resets.reset_with_link(link, answers=NEW))
    assert again == "activation_invalid"


def test_a_link_is_asked_for_alike_whether_or_not_the_account_exists(
    links: App, smtp_sink: SmtpSink
) -> None:
    """No enumeration: an unknown name gets the same answer (no error) and no mail."""
    sent = len(smtp_sink.messages)
    assert links.password_resets.request_link("nobody@example.com") is None
    assert len(smtp_sink.messages) == sent
    for _ in range(2):
        links.password_resets.request_link("nobody@example.com")
    assert refused(lambda: links.password_resets.request_link("nobody@example.com")) == (
        "rate_limited"
    )


def test_an_expired_or_foreign_link_resets_nothing(
    links: App, pki: TestPKI, clock: FixedClock, smtp_sink: SmtpSink
) -> None:
    card = pki.issue_person("王小明", "6789")
    enrol(links, "person.general", card, PERSON_ANSWERS)
    activate(links, PERSON)
    link = links.password_resets.request_link(PERSON)
    assert link is not None
    clock.advance(timedelta(minutes=31))

    code = refused(lambda: links.password_resets.reset_with_link(link, answers=NEW))

    assert code == "activation_expired"
    log_in(links, card)
    email_link = links.account_settings.request_email_change(
        log_in(links, card), new_email="hua@example.org", current=OLD_PASSWORD
    ).link
    assert refused(lambda: links.password_resets.reset_with_link(email_link, answers=NEW)) == (
        "activation_invalid"
    )  # an e-mail change's link is not a reset link
    assert password_is(links, PERSON, OLD_PASSWORD)
    assert audit(links, "password_reset") == []


def test_reset_links_through_the_api(links: App, pki: TestPKI, smtp_sink: SmtpSink) -> None:
    enrol(links, "person.general", pki.issue_person("王小明", "6789"), PERSON_ANSWERS)
    activate(links, PERSON)
    with TestClient(create_app(links), base_url=ORIGIN) as client:
        headers = csrf(client)
        for name in ("nobody@example.com", PERSON):
            asked = client.post(
                "/api/password-reset/email", json={"account": name}, headers=headers
            )
            assert (asked.status_code, asked.json()) == (202, {"ok": True})
        [token] = set(RESET_LINK.findall(body(smtp_sink.messages[-1])))
        weak = client.post(
            "/api/password-reset/link",
            json={"token": token, "password": "short", "password_confirm": "short"},
            headers=headers,
        )
        assert [e["code"] for e in weak.json()["errors"]] == ["password_policy"]

        done = client.post(
            "/api/password-reset/link", json={"token": token, **NEW}, headers=headers
        )

        assert done.json() == {
            "account": PERSON, "sessions_ended": 0, "unlocked": False, "notice_sent": True,
        }  # fmt: skip
    assert password_is(links, PERSON, NEW["password"])


def test_the_api_says_when_links_are_off(app: App, person: IssuedCard) -> None:
    with TestClient(create_app(app), base_url=ORIGIN) as client:
        asked = client.post(
            "/api/password-reset/email", json={"account": PERSON}, headers=csrf(client)
        )
    assert (asked.status_code, [e["code"] for e in asked.json()["errors"]]) == (
        403, ["not_authorized"]
    )  # fmt: skip
