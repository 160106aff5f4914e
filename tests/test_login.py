"""憑證登入 with a registered card, and the sessions it opens."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from engine import (
    App,
    CardResponse,
    Challenge,
    FixedClock,
    IssuerCA,
    SwregError,
    challenge_payload,
)
from engine.services.accounts import AccountLimits, AccountService, token_hash
from engine.services.hashing import IdentifierHasher
from engine.services.login import LoginResult, LoginService, SessionView
from engine.services.rate_limits import RateLimiter
from engine.store import AuditEntry, LoginChallenge, LoginSession, RateLimitWindow
from engine.testing.pki import IssuedCard, TestPKI
from tests.conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET
from tests.helpers import enrol

ORIGIN = "https://portal.example"
SESSION_TTL = timedelta(minutes=30)
SESSION_MAX = timedelta(hours=8)


class _Dropped:
    def send(self, message: object) -> None:
        pass


@pytest.fixture
def login(app: App) -> LoginService:
    limits = AccountLimits(RateLimiter(app.database, app.clock), IdentifierHasher(SECRET))
    return LoginService(
        app.database, app.clock, app.trust, app.revocation_checks, limits=limits,
        session_ttl=SESSION_TTL,
        session_max=SESSION_MAX,
    )  # fmt: skip


@pytest.fixture
def account_service(app: App) -> AccountService:
    return AccountService(
        app.database, app.clock, _Dropped(), public_origin=ORIGIN, activation_ttl=timedelta(1)
    )


@pytest.fixture
def person(app: App, pki: TestPKI, account_service: AccountService) -> IssuedCard:
    """A registered and activated 自然人憑證 card (account ming@example.com)."""
    card = pki.issue_person("王小明", "6789")
    enrol(app, "person.general", card, PERSON_ANSWERS)
    account_service.activate(account_service.send_activation("ming@example.com"))
    return card


def answer(challenge: Challenge, card: IssuedCard, **override: Any) -> CardResponse:
    fields: dict[str, Any] = {
        "challenge_id": challenge.id,
        "certificate": card.der(),
        "signature": card.sign(challenge.payload),
        "chain": card.chain_der(),
    }
    fields.update(override)
    return CardResponse(**fields)


def refused(call: Any) -> str:
    with pytest.raises(SwregError) as info:
        call()
    return str(info.value.code)


def audit(app: App, event: str) -> list[dict[str, Any]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).where(AuditEntry.event == event))
        return [dict(r.diff) for r in rows]


def test_login_opens_a_sliding_session_and_logout_ends_it(
    app: App, login: LoginService, person: IssuedCard, clock: FixedClock
) -> None:
    challenge = login.issue_challenge(origin=ORIGIN)
    assert challenge.registration_id == "login"
    assert len(bytes.fromhex(challenge.nonce)) == 32
    assert challenge.expires_at == clock.now() + timedelta(minutes=5)
    assert challenge.payload == challenge_payload(ORIGIN, "login", bytes.fromhex(challenge.nonce))

    result = login.login(answer(challenge, person), origin=ORIGIN)
    assert isinstance(result, LoginResult)
    assert (result.account, result.applicant_type) == ("ming@example.com", "person.general")
    assert result.idle_expires_at == clock.now() + SESSION_TTL
    assert result.expires_at == clock.now() + SESSION_MAX  # the absolute end
    assert len(result.token) >= 43

    with app.database.unit_of_work() as uow:
        stored = uow.session.scalars(select(LoginSession)).one()
        assert stored.token_hash == token_hash(result.token)
        assert stored.ended_at is None

    clock.advance(timedelta(minutes=20))
    view = login.session(result.token)
    assert view == SessionView(
        "ming@example.com", "person.general", result.expires_at, clock.now() + SESSION_TTL
    )
    clock.advance(timedelta(minutes=29))  # 49 min after login: alive because it slid
    assert login.session(result.token) is not None
    clock.advance(SESSION_TTL + timedelta(seconds=1))
    assert login.session(result.token) is None  # idle too long

    again = login.login(answer(login.issue_challenge(origin=ORIGIN), person), origin=ORIGIN)
    assert login.session(again.token) is not None
    login.logout(again.token)
    assert login.session(again.token) is None
    login.logout(again.token)  # a second logout changes nothing
    login.logout("never-issued")

    logins = audit(app, "login")
    assert [d["account"] for d in logins] == ["m**g@example.com", "m**g@example.com"]
    assert logins[0]["origin"] == ORIGIN
    assert logins[0]["certificate"] == hashlib.sha256(person.der()).hexdigest()
    assert result.token not in str(logins)
    logouts = audit(app, "logout")
    assert logouts == [{"account": "m**g@example.com", "session": token_hash(again.token)[:16]}]
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_company_card_logs_in(
    app: App, pki: TestPKI, login: LoginService, account_service: AccountService
) -> None:
    card = pki.issue_company("04595257")
    enrol(app, "enterprise.general", card, COMPANY_ANSWERS)
    account_service.activate(account_service.send_activation("04595257"))
    result = login.login(answer(login.issue_challenge(origin=ORIGIN), card), origin=ORIGIN)
    assert (result.account, result.applicant_type) == ("04595257", "enterprise.general")


def test_replayed_challenge(login: LoginService, person: IssuedCard) -> None:
    response = answer(login.issue_challenge(origin=ORIGIN), person)
    login.login(response, origin=ORIGIN)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "challenge_used"


def test_a_failed_login_uses_the_challenge_up(
    login: LoginService, person: IssuedCard, pki: TestPKI
) -> None:
    challenge = login.issue_challenge(origin=ORIGIN)
    forged = answer(challenge, person, signature=pki.issue_person().sign(challenge.payload))
    assert refused(lambda: login.login(forged, origin=ORIGIN)) == "signature_invalid"
    good = answer(challenge, person)
    assert refused(lambda: login.login(good, origin=ORIGIN)) == "challenge_used"


def test_expired_challenge(login: LoginService, person: IssuedCard, clock: FixedClock) -> None:
    challenge = login.issue_challenge(origin=ORIGIN)
    clock.advance(timedelta(minutes=5, seconds=1))
    response = answer(challenge, person)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "challenge_expired"


def test_unknown_challenge(login: LoginService, person: IssuedCard, clock: FixedClock) -> None:
    challenge = Challenge("no-such-id", "login", "00" * 32, ORIGIN, clock.now())
    response = answer(challenge, person)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "challenge_expired"


def test_unregistered_card(login: LoginService, person: IssuedCard, pki: TestPKI) -> None:
    stranger = pki.issue_person("李小華", "1234")
    response = answer(login.issue_challenge(origin=ORIGIN), stranger)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "not_registered"


def test_pending_account(app: App, login: LoginService, pki: TestPKI) -> None:
    card = pki.issue_person("王小明", "6789")
    enrol(app, "person.general", card, PERSON_ANSWERS)  # not activated
    response = answer(login.issue_challenge(origin=ORIGIN), card)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "account_inactive"
    assert audit(app, "login") == []
    with app.database.unit_of_work() as uow:
        assert uow.session.scalars(select(LoginSession)).all() == []


def test_signature_by_another_key(login: LoginService, person: IssuedCard, pki: TestPKI) -> None:
    challenge = login.issue_challenge(origin=ORIGIN)
    other = pki.issue_person("王小明", "6789")
    response = answer(challenge, person, signature=other.sign(challenge.payload))
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "signature_invalid"


def test_signature_over_a_registration_payload(login: LoginService, person: IssuedCard) -> None:
    challenge = login.issue_challenge(origin=ORIGIN)
    not_login = challenge_payload(ORIGIN, "some-registration", bytes.fromhex(challenge.nonce))
    response = answer(challenge, person, signature=person.sign(not_login))
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "signature_invalid"


def test_wrong_origin(login: LoginService, person: IssuedCard) -> None:
    challenge = login.issue_challenge(origin=ORIGIN)
    response = answer(challenge, person)
    assert (
        refused(lambda: login.login(response, origin="https://evil.example")) == "signature_invalid"
    )


def test_certificate_checks_apply(
    login: LoginService, person: IssuedCard, pki: TestPKI, clock: FixedClock
) -> None:
    response = answer(login.issue_challenge(origin=ORIGIN), person, certificate=b"garbage")
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "not_a_certificate"
    now = clock.now()
    expired = pki.issue_person(valid_from=now - timedelta(days=800), valid_to=now - timedelta(1))
    response = answer(login.issue_challenge(origin=ORIGIN), expired)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "certificate_expired"
    untrusted = pki.issue_person(issuer=pki.lookalike_ca(IssuerCA.MOICA))
    response = answer(login.issue_challenge(origin=ORIGIN), untrusted)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "certificate_untrusted"


def test_revoked_card_cannot_log_in(
    app: App, login: LoginService, person: IssuedCard, pki: TestPKI
) -> None:
    moica = pki.ca(IssuerCA.MOICA).certificate
    app.trust.add_certificate(pki.der(moica), anchor=False)  # the CRL's issuer must be known
    crl = pki.crl(IssuerCA.MOICA, revoked=[person])
    app.trust.add_crl(crl.public_bytes(serialization.Encoding.DER))
    response = answer(login.issue_challenge(origin=ORIGIN), person)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "certificate_revoked"


def test_account_no_longer_active_ends_its_sessions(
    app: App, login: LoginService, person: IssuedCard
) -> None:
    result = login.login(answer(login.issue_challenge(origin=ORIGIN), person), origin=ORIGIN)
    with app.database.unit_of_work() as uow:
        account = uow.accounts.get_by_name("ming@example.com")
        assert account is not None
        account.status = "suspended"
        uow.commit()
    assert login.session(result.token) is None


def test_bad_origin_is_refused(login: LoginService) -> None:
    assert refused(lambda: login.issue_challenge(origin="")) == "invalid_value"
    assert refused(lambda: login.issue_challenge(origin="x" * 256)) == "invalid_value"


def test_login_challenges_are_stored(app: App, login: LoginService) -> None:
    challenge = login.issue_challenge(origin=ORIGIN)
    with app.database.unit_of_work() as uow:
        row = uow.session.get(LoginChallenge, challenge.id)
        assert row is not None
        assert (row.nonce, row.origin, row.used_at) == (challenge.nonce, ORIGIN, None)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("pending_activation", "account_inactive"),
        ("suspended", "account_suspended"),  # told only to the holder of the account's card
    ],
)
def test_an_account_that_is_not_active_is_refused_with_its_status(
    app: App, login: LoginService, person: IssuedCard, status: str, code: str
) -> None:
    with app.database.unit_of_work() as uow:
        account = uow.accounts.get_by_name("ming@example.com")
        assert account is not None
        account.status = status
        uow.commit()
    response = answer(login.issue_challenge(origin=ORIGIN), person)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == code
    assert audit(app, "login") == []
    with app.database.unit_of_work() as uow:
        assert uow.session.scalars(select(LoginSession)).all() == []


def test_a_locked_account_still_logs_in_with_its_own_card(
    app: App, login: LoginService, person: IssuedCard
) -> None:
    # Wrong passwords (typed by anyone holding some valid card) lock the password, not the card.
    with app.database.unit_of_work() as uow:
        account = uow.accounts.get_by_name("ming@example.com")
        assert account is not None
        account.status = "locked"
        uow.commit()
    result = login.login(answer(login.issue_challenge(origin=ORIGIN), person), origin=ORIGIN)
    session = login.session(result.token)
    assert session is not None and session.account == "ming@example.com"


def test_logins_of_one_account_are_limited_and_only_card_holders_count(
    app: App, login: LoginService, person: IssuedCard, pki: TestPKI
) -> None:
    # a stranger holding the account's public certificate but not its key counts for nothing
    for _ in range(25):
        challenge = login.issue_challenge(origin=ORIGIN)
        forged = answer(challenge, person, signature=pki.issue_person().sign(challenge.payload))
        assert refused(lambda f=forged: login.login(f, origin=ORIGIN)) == "signature_invalid"
    for _ in range(20):
        login.login(answer(login.issue_challenge(origin=ORIGIN), person), origin=ORIGIN)
    response = answer(login.issue_challenge(origin=ORIGIN), person)
    assert refused(lambda: login.login(response, origin=ORIGIN)) == "rate_limited"
    assert len(audit(app, "login")) == 20
    with app.database.unit_of_work() as uow:
        keys = [k for (k,) in uow.session.execute(select(RateLimitWindow.key))]
    assert len(keys) == 1 and keys[0].startswith("account:login:")
    assert "ming" not in keys[0]  # a keyed hash of the name, never the name
    assert keys[0] != "account:login:" + hashlib.sha256(b"account:ming@example.com").hexdigest()
