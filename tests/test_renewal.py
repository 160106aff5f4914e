"""憑證更換作業: a renewed card replaces the old one after both the account and the card are proven.

The old account is proven by a session opened with the old card, or, once the old certificate
has expired, by the account's password. Afterwards the new card logs in and the old one does not.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from engine import (
    App,
    CardResponse,
    FixedClock,
    IssuerCA,
    SessionView,
    SwregError,
    challenge_payload,
)
from engine.cli import app as cli_app
from engine.pki.certificate import load_certificate
from engine.services.accounts import MAX_FAILED_PASSWORDS, AccountLimits, AccountService
from engine.services.hashing import IdentifierHasher, PasswordHasher
from engine.services.login import LoginService
from engine.services.rate_limits import RateLimiter
from engine.services.renewal import (
    RENEWAL_CHALLENGE_SCOPE,
    RenewalService,
    Replacement,
    same_identity,
)
from engine.store import AuditEntry, Certificate, LoginSession, RateLimitWindow
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from tests.conftest import COMPANY_ANSWERS, PERSON_ANSWERS, PIN, PKI_NOW, SECRET
from tests.helpers import enrol
from tests.test_concurrency import codes, race

ORIGIN = "https://portal.example"
UBN = "04595257"
PASSWORD = PERSON_ANSWERS["password"]
SESSION_TTL = timedelta(minutes=30)


class _Dropped:
    def send(self, message: object) -> None:
        pass


def account_limits(app: App) -> AccountLimits:
    return AccountLimits(RateLimiter(app.database, app.clock), IdentifierHasher(SECRET))


@pytest.fixture
def renewals(app: App) -> RenewalService:
    fast = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    return RenewalService(
        app.database,
        app.clock,
        app.trust,
        app.revocation_checks,
        app.catalog,
        fast,
        limits=account_limits(app),
    )


@pytest.fixture
def login(app: App) -> LoginService:
    return LoginService(
        app.database, app.clock, app.trust, app.revocation_checks, limits=account_limits(app),
        session_ttl=SESSION_TTL,
        session_max=app.settings.session_max,
    )  # fmt: skip


def activate(app: App, account: str) -> None:
    service = AccountService(
        app.database, app.clock, _Dropped(), public_origin=ORIGIN, activation_ttl=timedelta(1)
    )
    service.activate(service.send_activation(account))


def answer(challenge: Any, card: IssuedCard, **override: Any) -> CardResponse:
    fields: dict[str, Any] = {
        "challenge_id": challenge.id,
        "certificate": card.der(),
        "signature": card.sign(challenge.payload),
        "chain": card.chain_der(),
    }
    fields.update(override)
    return CardResponse(**fields)


def renew(renewals: RenewalService, card: IssuedCard, **proof: Any) -> Replacement:
    response = answer(renewals.issue_challenge(origin=ORIGIN), card)
    return renewals.replace_card(response, origin=ORIGIN, **proof)


def refused(call: Any) -> str:
    with pytest.raises(SwregError) as info:
        call()
    return str(info.value.code)


def session_of(login: LoginService, card: IssuedCard) -> SessionView:
    result = login.login(answer(login.issue_challenge(origin=ORIGIN), card), origin=ORIGIN)
    view = login.session(result.token)
    assert view is not None
    return view


def login_code(login: LoginService, card: IssuedCard) -> str:
    return refused(
        lambda: login.login(answer(login.issue_challenge(origin=ORIGIN), card), origin=ORIGIN)
    )


def login_certificates(app: App) -> list[tuple[str, str, int | None]]:
    """(serial, status, account id) of every login certificate, in id order."""
    with app.database.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Certificate.serial_hex, Certificate.status, Certificate.account_id)
            .where(Certificate.purpose == "login")
            .order_by(Certificate.id)
        )
        return [(r[0], r[1], r[2]) for r in rows]


def serial(card: IssuedCard) -> str:
    return format(card.certificate.serial_number, "X")


def fingerprint(card: IssuedCard) -> str:
    return load_certificate(card.der()).fingerprint


def audit(app: App, event: str = "card_replaced") -> list[dict[str, Any]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).where(AuditEntry.event == event))
        return [dict(r.diff) for r in rows]


def audit_ok(app: App) -> bool:
    with app.database.unit_of_work() as uow:
        return uow.audit.verify().ok


@pytest.fixture
def company(app: App, pki: TestPKI) -> IssuedCard:
    """A registered and activated 工商憑證 (account 04595257)."""
    card = pki.issue_company(UBN)
    enrol(app, "enterprise.general", card, COMPANY_ANSWERS)
    activate(app, UBN)
    return card


@pytest.fixture
def person(app: App, pki: TestPKI, clock: FixedClock) -> IssuedCard:
    """A registered and activated 自然人憑證 that expires in two days (ming@example.com)."""
    card = pki.issue_person("王小明", "6789", valid_to=PKI_NOW + timedelta(days=2))
    enrol(app, "person.general", card, PERSON_ANSWERS)
    activate(app, "ming@example.com")
    return card


# -- replacing -------------------------------------------------------------------------------


def test_replace_with_a_session_of_the_old_card(
    app: App, pki: TestPKI, renewals: RenewalService, login: LoginService, company: IssuedCard
) -> None:
    session = session_of(login, company)
    new = pki.issue_company(UBN, rank="secondary")

    done = renew(renewals, new, session=session)

    assert done == Replacement(UBN, fingerprint(company), fingerprint(new))
    account_id = login_certificates(app)[0][2]
    assert login_certificates(app) == [
        (serial(company), "replaced", account_id),
        (serial(new), "active", account_id),
    ]
    assert session_of(login, new).account == UBN
    assert login_code(login, company) == "not_registered"
    [entry] = audit(app)
    assert entry == {
        "account": UBN, "proof": "session", "old_certificate": fingerprint(company),
        "new_certificate": fingerprint(new), "serial": serial(new),
        "not_after": new.certificate.not_valid_after_utc.isoformat(), "origin": ORIGIN,
        "sessions_ended": 1,
        "revocation": {"status": "good", "source": "crl", "crl_number": "1"},
    }  # fmt: skip
    with app.database.unit_of_work() as uow:
        stored = uow.certificates.active_login_of(account_id or 0)
        assert stored is not None
        assert (stored.ubn, stored.card_rank, stored.registration_id) == (UBN, "secondary", None)
        replaced = uow.certificates.find(fingerprint(company), "login")
        assert replaced is not None and replaced.status == "replaced"
    assert audit_ok(app)


def test_replace_with_the_password_once_the_old_card_expired(
    app: App, pki: TestPKI, renewals: RenewalService, login: LoginService,
    person: IssuedCard, clock: FixedClock,
) -> None:  # fmt: skip
    new = pki.issue_person("王小明", "6789")
    early = renew_code(renewals, new, account="ming@example.com", password=PASSWORD)
    assert early == "not_authorized"  # the old card still works: log in with it instead

    clock.advance(timedelta(days=3))  # the old certificate has expired
    assert login_code(login, person) == "certificate_expired"
    done = renew(renewals, new, account="ming@example.com", password=PASSWORD)

    assert done == Replacement("ming@example.com", fingerprint(person), fingerprint(new))
    account_id = login_certificates(app)[0][2]
    assert login_certificates(app) == [
        (serial(person), "replaced", account_id),
        (serial(new), "active", account_id),
    ]
    assert session_of(login, new).account == "ming@example.com"
    [entry] = audit(app)
    assert (entry["proof"], entry["account"]) == ("password", "m**g@example.com")
    assert PASSWORD not in json.dumps(audit(app))
    with app.database.unit_of_work() as uow:
        stored = uow.certificates.active_login_of(account_id or 0)
        old = uow.certificates.find(fingerprint(person), "login")
        assert stored is not None and old is not None
        assert stored.national_id_hash == old.national_id_hash is not None
    assert audit_ok(app)


# -- refusals --------------------------------------------------------------------------------


def renew_code(renewals: RenewalService, card: IssuedCard, **proof: Any) -> str:
    return refused(lambda: renew(renewals, card, **proof))


def test_refusals_leave_everything_as_it_was(
    app: App, pki: TestPKI, renewals: RenewalService, login: LoginService,
    company: IssuedCard, person: IssuedCard, clock: FixedClock,
) -> None:  # fmt: skip
    session = session_of(login, company)
    before = login_certificates(app)

    other_company = pki.issue_company("97162640", rank="secondary")
    assert renew_code(renewals, other_company, session=session) == "identity_mismatch"
    person_card = pki.issue_person("王小明", "6789")
    assert renew_code(renewals, person_card, session=session) == "certificate_type_mismatch"
    assert renew_code(renewals, company, session=session) == "already_registered"
    assert renew_code(renewals, pki.issue_company(UBN)) == "not_authorized"  # no proof
    spoofed = SessionView("ming@example.com", "person.general", clock.now(), clock.now())
    stranger = pki.issue_company(UBN, rank="secondary")
    assert renew_code(renewals, stranger, session=spoofed, account=UBN) == "not_authorized"

    clock.advance(timedelta(days=3))  # the person's card expired
    for name, last4 in (("王大明", "6789"), ("王小明", "1234")):  # another holder's card:
        card = pki.issue_person(name, last4)  # the password is not even checked
        code = renew_code(renewals, card, account="ming@example.com", password=PASSWORD)
        assert code == "not_authorized", (name, last4)
    new = pki.issue_person("王小明", "6789")
    assert renew_code(renewals, new, account="ming@example.com", password="Wr0ngPass") == (
        "not_authorized"
    )
    assert renew_code(renewals, new, account="nobody@example.com", password=PASSWORD) == (
        "not_authorized"
    )
    assert renew_code(renewals, new, account="ming@example.com") == "not_authorized"
    # the company's registered card cannot become the person's (another holder: refused alike)
    assert renew_code(renewals, company, account="ming@example.com", password=PASSWORD) == (
        "not_authorized"
    )
    assert renew_code(renewals, person, account="ming@example.com", password=PASSWORD) == (
        "certificate_expired"
    )

    assert login_certificates(app) == before
    assert audit(app) == []
    assert audit_ok(app)


def test_a_new_card_registered_to_another_account_is_already_registered(
    app: App, pki: TestPKI, renewals: RenewalService, login: LoginService, company: IssuedCard
) -> None:
    secondary = pki.issue_company(UBN, rank="secondary")
    enrol(app, "enterprise.general", secondary, {**COMPANY_ANSWERS, "sub_card": "01"})
    session = session_of(login, company)
    assert renew_code(renewals, secondary, session=session) == "already_registered"
    replacement = pki.issue_company(UBN, rank="secondary")
    renew(renewals, replacement, session=session)
    # a replaced certificate stays registered: it cannot come back either
    again = session_of(login, replacement)
    assert renew_code(renewals, company, session=again) == "already_registered"


def test_the_challenge_is_single_use_scoped_and_origin_bound(
    renewals: RenewalService, login: LoginService, company: IssuedCard, pki: TestPKI
) -> None:
    session = session_of(login, company)
    new = pki.issue_company(UBN, rank="secondary")
    challenge = renewals.issue_challenge(origin=ORIGIN)
    assert challenge.registration_id == RENEWAL_CHALLENGE_SCOPE == "renewal"
    as_login = challenge_payload(ORIGIN, "login", bytes.fromhex(challenge.nonce))
    forged = answer(challenge, new, signature=new.sign(as_login))
    assert refused(lambda: renewals.replace_card(forged, origin=ORIGIN, session=session)) == (
        "signature_invalid"
    )
    good = answer(challenge, new)
    assert refused(lambda: renewals.replace_card(good, origin=ORIGIN, session=session)) == (
        "challenge_used"
    )
    other = answer(renewals.issue_challenge(origin=ORIGIN), new)
    assert refused(
        lambda: renewals.replace_card(other, origin="https://evil.example", session=session)
    ) == ("signature_invalid")
    # a login challenge's id is not a way around the scope: the payload names "renewal"
    login_challenge = login.issue_challenge(origin=ORIGIN)
    signed_login = answer(login_challenge, new)
    assert refused(lambda: renewals.replace_card(signed_login, origin=ORIGIN, session=session)) == (
        "signature_invalid"
    )


def test_same_identity_per_ca(pki: TestPKI) -> None:
    def parsed(card: IssuedCard) -> Any:
        return load_certificate(card.der())

    org = "2.16.886.111.90010.90003.100004"
    assert same_identity(parsed(pki.issue_company(UBN)), parsed(pki.issue_company(UBN, rank=None)))
    assert not same_identity(parsed(pki.issue_company(UBN)), parsed(pki.issue_company("97162640")))
    assert not same_identity(
        parsed(pki.issue_company(UBN)), parsed(pki.issue_company(UBN, serial_rdn="97162640"))
    )
    assert same_identity(parsed(pki.issue_organization(org)), parsed(pki.issue_organization(org)))
    assert not same_identity(
        parsed(pki.issue_organization(org)), parsed(pki.issue_organization(org + "1"))
    )
    assert not same_identity(parsed(pki.issue_organization(org)), parsed(pki.issue_agency(org)))
    assert same_identity(parsed(pki.issue_person("王小明")), parsed(pki.issue_person("王小明")))


# -- HTTP API ------------------------------------------------------------------------------


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


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


def api_renew(client: TestClient, card: IssuedCard, **extra: Any) -> Any:
    headers = csrf(client)
    challenge = client.post("/api/renewal/challenge", headers=headers)
    assert challenge.status_code == 200, challenge.text
    return client.post(
        "/api/renewal", json=signed(card, challenge.json(), **extra), headers=headers
    )


def test_api_replaces_with_the_session_cookie(
    app: App, client: TestClient, pki: TestPKI, company: IssuedCard
) -> None:
    new = pki.issue_company(UBN, rank="secondary")
    no_session = api_renew(client, new)
    assert (no_session.status_code, no_session.json()["errors"][0]["code"]) == (
        403, "not_authorized"
    )  # fmt: skip
    no_csrf = client.post("/api/renewal/challenge")
    assert (no_csrf.status_code, no_csrf.json()["errors"][0]["code"]) == (403, "csrf_failed")

    headers = csrf(client)
    challenge = client.post("/api/login/challenge", headers=headers).json()
    logged_in = client.post("/api/login", json=signed(company, challenge), headers=headers)
    assert logged_in.status_code == 200, logged_in.text

    done = api_renew(client, new)
    assert done.status_code == 200, done.text
    assert done.json() == {
        "account": UBN, "old_fingerprint": fingerprint(company),
        "new_fingerprint": fingerprint(new),
    }  # fmt: skip
    # the replacement ended every session of the account, this one included
    ended = client.get("/api/session")
    assert (ended.status_code, ended.json()["errors"][0]["code"]) == (401, "session_expired")
    challenge = client.post("/api/login/challenge", headers=headers).json()
    assert client.post("/api/login", json=signed(new, challenge), headers=headers).is_success
    again = api_renew(client, new)
    assert (again.status_code, again.json()["errors"][0]["code"]) == (409, "already_registered")
    assert [s for s, _, _ in login_certificates(app)] == [serial(company), serial(new)]


def test_api_replaces_with_the_password(
    app: App, client: TestClient, pki: TestPKI, person: IssuedCard, clock: FixedClock
) -> None:
    clock.advance(timedelta(days=3))
    new = pki.issue_person("王小明", "6789")
    wrong = api_renew(client, new, account="ming@example.com", password="Wr0ngPass")
    assert (wrong.status_code, wrong.json()["errors"][0]["code"]) == (403, "not_authorized")
    done = api_renew(client, new, account="ming@example.com", password=PASSWORD)
    assert done.status_code == 200, done.text
    assert done.json()["account"] == "ming@example.com"
    assert login_certificates(app)[-1][:2] == (serial(new), "active")


# -- the command ---------------------------------------------------------------------------


def test_cli_replaces_an_expired_card_with_pin_and_password(
    app: App, pki: TestPKI, clock: FixedClock, card_file: Any, db_url: str, tmp_path: Path
) -> None:
    # registered ten days ago with a card that expired yesterday (the CLI runs at the real time)
    clock.set(PKI_NOW - timedelta(days=10))
    old = pki.issue_person(
        "王小明", "6789", valid_from=PKI_NOW - timedelta(days=20), valid_to=PKI_NOW - timedelta(1)
    )
    enrol(app, "person.general", old, PERSON_ANSWERS)
    activate(app, "ming@example.com")
    new = pki.issue_person("王小明", "6789")
    env = {"SWREG_DATABASE_URL": db_url, "SWREG_SECRET_KEY": SECRET.hex()}
    args = ["renewal", "replace", "--account", "ming@example.com", "--card", card_file(new)]

    runner = CliRunner()
    wrong = runner.invoke(
        cli_app, [*args, "--pin-stdin", "--json"], input=f"{PIN}\nnope\n", env=env
    )
    assert wrong.exit_code == 1
    assert json.loads(wrong.stdout)["errors"][0]["code"] == "not_authorized"
    bad_pin = runner.invoke(
        cli_app, [*args, "--pin-stdin", "--json"], input=f"000000\n{PASSWORD}\n", env=env
    )
    assert bad_pin.exit_code != 0
    assert json.loads(bad_pin.stdout)["errors"][0]["code"] == "pin_incorrect"

    result = runner.invoke(
        cli_app, [*args, "--pin-stdin", "--json"], input=f"{PIN}\n{PASSWORD}\n", env=env
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True, "account": "ming@example.com", "old_fingerprint": fingerprint(old),
        "new_fingerprint": fingerprint(new),
    }  # fmt: skip
    assert PIN not in result.stdout and PASSWORD not in result.stdout
    assert [r[:2] for r in login_certificates(app)] == [
        (serial(old), "replaced"), (serial(new), "active")
    ]  # fmt: skip
    [entry] = audit(app)
    assert entry["proof"] == "password" and entry["origin"] == app.settings.cli_origin
    assert audit_ok(app)


# -- the password oracle and the lockout (issue 13) ----------------------------------------


def account_row(app: App, name: str = "ming@example.com") -> tuple[str, int]:
    """(status, failed_passwords) as stored."""
    with app.database.unit_of_work() as uow:
        row = uow.accounts.get_by_name(name)
        assert row is not None
        return row.status, row.failed_passwords


def forged_body(
    client: TestClient, card: IssuedCard, stranger: IssuedCard | None, **extra: Any
) -> dict[str, Any]:
    """A renewal body of ``card``; signed by ``stranger``'s key instead, when given."""
    headers = csrf(client)
    challenge = client.post("/api/renewal/challenge", headers=headers).json()
    body = signed(card, challenge, **extra)
    if stranger is not None:
        body["signature"] = b64(stranger.sign(base64.b64decode(challenge["payload"])))
    return body


def post_renewal(client: TestClient, body: dict[str, Any]) -> tuple[int, Any]:
    answer_ = client.post("/api/renewal", json=body, headers=csrf(client))
    return answer_.status_code, answer_.json()


@pytest.mark.parametrize("old_card", ["still valid", "expired"])
def test_without_the_new_cards_proof_the_password_changes_nothing(
    app: App, client: TestClient, pki: TestPKI, person: IssuedCard, clock: FixedClock,
    old_card: str,
) -> None:  # fmt: skip
    if old_card == "expired":
        clock.advance(timedelta(days=3))
    new = pki.issue_person("王小明", "6789")
    stranger = pki.issue_person("李小華", "1234")
    untrusted = pki.issue_person("王小明", "6789", issuer=pki.lookalike_ca(IssuerCA.MOICA))
    for card, signer, code in (
        (new, stranger, "signature_invalid"),
        (untrusted, None, "certificate_untrusted"),
    ):
        answers = {
            json.dumps(
                post_renewal(client, forged_body(client, card, signer, account=name, password=pw))
            )
            for name, pw in (
                ("ming@example.com", PASSWORD),  # right
                ("ming@example.com", "Wr0ngPass"),  # wrong
                ("nobody@example.com", PASSWORD),  # no such account
            )
        }
        assert len(answers) == 1, answers  # status and body alike
        status, body = json.loads(answers.pop())
        assert (status, body["errors"][0]["code"]) == (422, code)
    assert account_row(app) == ("active", 0)  # no password was checked, none counted
    assert login_certificates(app)[-1][:2] == (serial(person), "active")


def test_after_the_cards_proof_unknown_account_wrong_password_and_valid_old_card_answer_alike(
    app: App, client: TestClient, pki: TestPKI, person: IssuedCard, clock: FixedClock
) -> None:
    new = pki.issue_person("王小明", "6789")
    right_but_old_card_valid = api_renew(client, new, account="ming@example.com", password=PASSWORD)
    wrong = api_renew(client, new, account="ming@example.com", password="Wr0ngPass")
    unknown = api_renew(client, new, account="nobody@example.com", password=PASSWORD)
    no_password = api_renew(client, new, account="ming@example.com")
    answers = [(r.status_code, r.json()) for r in (right_but_old_card_valid, wrong, unknown)]
    answers.append((no_password.status_code, no_password.json()))
    assert (
        answers
        == [
            (
                403,
                {
                    "errors": [
                        {"field": None, "code": "not_authorized", "message": "無權限執行此操作"}
                    ]
                },
            )
        ]
        * 4
    )
    assert account_row(app) == ("active", 1)  # the wrong password counted, the right one reset

    clock.advance(timedelta(days=3))  # the old card expired: only the password decides now
    wrong = api_renew(client, new, account="ming@example.com", password="Wr0ngPass")
    assert (wrong.status_code, wrong.json()) == answers[0]
    assert account_row(app) == ("active", 2)


def test_five_wrong_passwords_lock_the_account(
    app: App, renewals: RenewalService, login: LoginService, pki: TestPKI, person: IssuedCard,
    clock: FixedClock,
) -> None:  # fmt: skip
    new = pki.issue_person("王小明", "6789")
    for _ in range(3):
        assert renew_code(renewals, new, account="ming@example.com", password="Wr0ngPass") == (
            "not_authorized"
        )
    assert account_row(app) == ("active", 3)
    # a right password (the old card is still valid, so still refused) sets the count back
    assert renew_code(renewals, new, account="ming@example.com", password=PASSWORD) == (
        "not_authorized"
    )
    assert account_row(app) == ("active", 0)

    clock.advance(timedelta(days=3))  # old card expired
    for tries in range(1, MAX_FAILED_PASSWORDS + 1):
        assert renew_code(renewals, new, account="ming@example.com", password="Wr0ngPass") == (
            "not_authorized"
        )
        assert account_row(app) == ("active" if tries < 5 else "locked", tries)
    assert MAX_FAILED_PASSWORDS == 5
    # locked: the right password no longer opens it, and the answer does not say "locked"
    assert renew_code(renewals, new, account="ming@example.com", password=PASSWORD) == (
        "not_authorized"
    )
    assert account_row(app) == ("locked", 5)
    assert login_certificates(app)[-1][:2] == (serial(person), "active")
    [locked] = audit(app, "account_locked")
    assert locked == {"account": "m**g@example.com", "failed_passwords": 5}
    # the owner's own card still logs in: someone else's wrong passwords lock the password,
    # never the card (a card-proven password reset opens the password again)
    clock.set(PKI_NOW)
    result = login.login(answer(login.issue_challenge(origin=ORIGIN), person), origin=ORIGIN)
    assert result.account == "ming@example.com"
    assert login.session(result.token) is not None
    assert account_row(app) == ("locked", 5)
    assert audit_ok(app)


def test_a_locked_accounts_owner_replaces_the_card_with_the_old_cards_session(
    app: App, renewals: RenewalService, login: LoginService, pki: TestPKI, person: IssuedCard
) -> None:
    session = session_of(login, person)
    with app.database.unit_of_work() as uow:  # five wrong passwords, typed by someone else
        account = uow.accounts.get_by_name("ming@example.com")
        assert account is not None
        account.status, account.failed_passwords = "locked", MAX_FAILED_PASSWORDS
        uow.commit()
    new = pki.issue_person("王小明", "6789")
    assert renew_code(renewals, new, account="ming@example.com", password=PASSWORD) == (
        "not_authorized"  # no password opens a locked account
    )
    done = renew(renewals, new, session=session)
    assert done.account == "ming@example.com"
    assert account_row(app) == ("locked", MAX_FAILED_PASSWORDS)  # until a card-proven reset


def test_renewal_attempts_per_account_are_limited_after_the_cards_proof(
    app: App, renewals: RenewalService, pki: TestPKI, person: IssuedCard
) -> None:
    new = pki.issue_person("王小明", "6789")
    for _ in range(12):  # a failed card proof never counts against the account named
        challenge = renewals.issue_challenge(origin=ORIGIN)
        forged = answer(challenge, new, signature=new.sign(b"something else"))
        code = refused(
            lambda f=forged: renewals.replace_card(
                f, origin=ORIGIN, account="nobody@example.com", password=PASSWORD
            )
        )
        assert code == "signature_invalid"
    for _ in range(12):  # an unknown account (or another holder's card) counts nothing
        assert renew_code(renewals, new, account="nobody@example.com", password=PASSWORD) == (
            "not_authorized"
        )
    for _ in range(10):  # the holder's own card: the password is checked, the attempt counted
        assert renew_code(renewals, new, account="ming@example.com", password=PASSWORD) == (
            "not_authorized"  # the old card is still valid
        )
    assert renew_code(renewals, new, account="ming@example.com", password=PASSWORD) == (
        "rate_limited"
    )
    with app.database.unit_of_work() as uow:
        keys = sorted(k for (k,) in uow.session.execute(select(RateLimitWindow.key)))
    assert [k.rsplit(":", 1)[0] for k in keys] == ["account:renewal"]
    assert not any("example" in k for k in keys)


def test_another_holders_card_cannot_lock_the_account(
    app: App, renewals: RenewalService, pki: TestPKI, person: IssuedCard, clock: FixedClock
) -> None:
    clock.advance(timedelta(days=3))  # the owner's card expired: only the password path is left
    stranger = pki.issue_person("李小華", "4321")  # a valid card of somebody else
    for _ in range(MAX_FAILED_PASSWORDS + 2):
        assert renew_code(renewals, stranger, account="ming@example.com", password="Wr0ng1") == (
            "not_authorized"
        )
    assert account_row(app) == ("active", 0)  # nothing counted, nothing locked
    # and the right password says no more than a wrong one: no oracle for another holder
    assert renew_code(renewals, stranger, account="ming@example.com", password=PASSWORD) == (
        "not_authorized"
    )
    owner = pki.issue_person("王小明", "6789")
    assert renew(renewals, owner, account="ming@example.com", password=PASSWORD).account == (
        "ming@example.com"
    )


def test_a_replacement_ends_every_session_of_the_account(
    app: App, renewals: RenewalService, login: LoginService, pki: TestPKI, company: IssuedCard
) -> None:
    tokens = [
        login.login(answer(login.issue_challenge(origin=ORIGIN), company), origin=ORIGIN).token
        for _ in range(2)
    ]
    acting = login.session(tokens[0])
    assert acting is not None and login.session(tokens[1]) is not None
    renew(renewals, pki.issue_company(UBN, rank="secondary"), session=acting)
    assert [login.session(token) for token in tokens] == [None, None]
    [entry] = audit(app)
    assert entry["sessions_ended"] == 2
    with app.database.unit_of_work() as uow:
        ended = uow.session.scalars(select(LoginSession.ended_at)).all()
    assert ended == [app.clock.now(), app.clock.now()]


def test_concurrent_wrong_passwords_all_count_and_lock_once(
    app: App, renewals: RenewalService, pki: TestPKI, person: IssuedCard
) -> None:
    new = pki.issue_person("王小明", "6789")
    responses = [answer(renewals.issue_challenge(origin=ORIGIN), new) for _ in range(8)]

    def attempt(i: int) -> Replacement:
        return renewals.replace_card(
            responses[i], origin=ORIGIN, account="ming@example.com", password=f"Wr0ngPass{i}"
        )

    outcomes = race(8, attempt)
    assert codes(outcomes) == ["not_authorized"] * 8
    status, failed = account_row(app)
    assert status == "locked" and MAX_FAILED_PASSWORDS <= failed <= 8  # none lost
    assert audit(app, "account_locked") == [{"account": "m**g@example.com", "failed_passwords": 5}]
