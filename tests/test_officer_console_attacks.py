"""Attacks on the officer console (DESIGN.md §12): sessions and cookies, login answers, CSRF,
markup, personal data, roles, races, malformed input, the audit export.

Each test names the attack it makes; tests/test_officer_console.py holds the behaviour. What an
officer sees in clear and what masked (the rule the masking tests pin):

    clear    a company's public register data: UBN, OID, company name; the applicant type,
             states, times, certificate fingerprints, CA, serial, issuer
    masked   everything about a person: national ID (``A12*****89``), the card's last four ID
             digits (``**89``, no more of the ID than the masked one shows), e-mail, phone,
             contact name and the card holder's name (``王*明``), birth date, address, the
             account name (an e-mail or a UBN with its suffix)
    never    passwords and their hashes, the national ID hash, tokens
"""

# ruff: noqa: F811 - the imported fixtures are parameters of the tests

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from engine import App, FixedClock, RegistrationView, SwregError
from engine._errors import ErrorCode, message_for
from engine.core.declarations import IssuerCA
from engine.pki.card_response import CardResponse
from engine.services.hashing import IdentifierHasher
from engine.services.officer_console import OfficerConsole
from engine.store import Account, AuditEntry, Officer, OfficerSession
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from engine.web._security import new_csrf_token

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS
from .helpers import card_response, count
from .test_approval import (  # noqa: F401 - apps: a fixture
    Apps,
    apps,
    walk,
    with_approval,
)
from .test_concurrency import race
from .test_customs import activate_and_login
from .test_officer_console import (  # noqa: F401 - cards: a fixture
    ADMIN_NAME,
    REVIEWER_NAME,
    UBN,
    account_id,
    account_status,
    answer,
    audit,
    cards,
    client_of,
    csrf,
    error_codes,
    fingerprint,
    log_in,
    officer,
    post,
)

HTTPS_ORIGIN = "https://portal.example"
SCRIPT = "<script>alert(1)</script>"
IMAGE = '<img src=x onerror="alert(2)">'
MARKUP = re.compile(r"<(script|img)\b", re.IGNORECASE)
"""An element an applicant smuggled in: no console page may hold one (the pages have no <img>
and load their scripts by src only)."""


@pytest.fixture
def app(apps: Apps) -> App:
    """Both people and companies wait for an officer (待審核) after their data."""
    return apps.open(with_approval('["person", "enterprise"]'))


@pytest.fixture
def waiting(app: App, pki: TestPKI) -> RegistrationView:
    view = walk(app, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    assert view.state == "approval"
    return view


@pytest.fixture
def person_waiting(app: App, pki: TestPKI) -> RegistrationView:
    """A person's registration waiting for an officer, with the card of the national ID."""
    view = walk(app, "person.general", pki.issue_person(), PERSON_ANSWERS)
    assert view.state == "approval"
    return view


def https_app(app: App) -> App:
    return replace(app, settings=replace(app.settings, public_origin=HTTPS_ORIGIN))


def audit_count(app: App) -> int:
    return count(app, AuditEntry)


def is_login_page(response: httpx.Response) -> bool:
    return 'data-mode="officer"' in response.text and 'id="officer-name"' not in response.text


# -- sessions and cookies ----------------------------------------------------------------------


def test_over_https_the_console_cookie_is_host_prefixed_and_tossed_cookies_open_nothing(
    app: App, cards: dict[str, IssuedCard]
) -> None:
    """Cookie tossing and session fixation: a sibling host (or plain http) can set
    ``swreg_officer`` but never ``__Host-swreg_officer``; the console reads only the latter, and a
    login always mints a new token, whatever cookie the browser brought."""
    secure = https_app(app)
    with TestClient(create_app(secure), base_url=HTTPS_ORIGIN) as client:
        client.cookies.set("__Host-swreg_officer", "F" * 43)  # planted before the login
        response = log_in(client, cards["admin"])
        assert response.status_code == 200, response.text
        [cookie] = [c for c in response.headers.get_list("set-cookie") if "swreg_officer" in c]
        name, _, rest = cookie.partition("=")
        token = rest.split(";")[0]
        assert name == "__Host-swreg_officer" and token != "F" * 43
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path=/", "samesite=strict", "secure"} <= attributes
        assert not any(part.startswith("domain") for part in attributes)
        assert 'id="officer-name"' in client.get("/officer").text

    with TestClient(create_app(secure), base_url=HTTPS_ORIGIN) as tosser:
        tosser.cookies.set("swreg_officer", token)  # the live token, under the tossable name
        assert is_login_page(tosser.get("/officer"))
        tosser.cookies.set("__Host-swreg_officer", "F" * 43)
        assert is_login_page(tosser.get("/officer"))
    assert count(app, OfficerSession) == 1


def test_an_applicants_session_opens_no_console_page(
    app: App, cards: dict[str, IssuedCard], pki: TestPKI
) -> None:
    """An applicant's session token, as the applicant cookie or copied into the officer
    cookie, is no console session."""
    card = pki.issue_person()
    view = walk(app, "person.general", card, PERSON_ANSWERS)
    app.registrations.approve(view.id, officer=ADMIN_NAME)
    assert view.account is not None
    token = activate_and_login(app, card, view.account)
    before = audit_count(app)
    with client_of(app) as client:
        client.cookies.set("swreg_session", token)
        assert client.get("/api/account").status_code == 200  # it is a live session
        assert is_login_page(client.get("/officer"))
        assert client.get("/officer/trust", follow_redirects=False).status_code == 303
        client.cookies.set("swreg_officer", token)
        assert is_login_page(client.get("/officer"))
        response = post(client, "/officer/accounts", q=PERSON_ANSWERS["national_id"])
        assert is_login_page(response)
    assert audit_count(app) == before


def test_an_officer_session_is_no_applicant_session_and_no_api_token(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["admin"])
        token = client.cookies.get("swreg_officer")
        assert token
        # the officer cookie alone, on the officer API: no bearer token, no officer
        alone = client.get("/api/officer/registrations")
        assert (alone.status_code, error_codes(alone)) == (403, ["not_authorized"])
        # nor on the applicant's pages
        assert client.get("/api/account").status_code == 401
        page = client.get("/account", follow_redirects=False)
        assert (page.status_code, page.headers["location"]) == (303, "/login")
    with client_of(app) as client:
        client.cookies.set("swreg_session", token)
        account = client.get("/api/account")
        bearer = {"Authorization": f"Bearer {token}"}
        listed = client.get("/api/officer/registrations", headers=bearer)
        approved = client.post(f"/api/officer/registrations/{waiting.id}/approve", headers=bearer)
    assert (account.status_code, error_codes(account)) == (401, ["session_expired"])
    assert (listed.status_code, error_codes(listed)) == (403, ["not_authorized"])
    assert (approved.status_code, error_codes(approved)) == (403, ["not_authorized"])
    assert app.registrations.status(waiting.id).state == "approval"


def test_a_removed_officers_open_session_can_do_nothing(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView, pki: TestPKI
) -> None:
    card = pki.issue_person()
    person = walk(app, "person.general", card, PERSON_ANSWERS)
    app.registrations.approve(person.id, officer=ADMIN_NAME)
    assert person.account is not None
    app.accounts.activate(app.accounts.send_activation(person.account))
    target = account_id(app, person.account)
    with client_of(app) as client:
        log_in(client, cards["admin"])
        app.officers.remove(ADMIN_NAME, actor="test")
        before = audit_count(app)
        for url, fields in (
            (f"/officer/accounts/{target}/suspend", {"reason": "冒用"}),
            (f"/officer/registrations/{waiting.id}/approve", {}),
            ("/officer/audit/export", {}),
            ("/officer/accounts", {"q": UBN}),
        ):
            assert is_login_page(post(client, url, **fields)), url
        detail = client.get(f"/officer/registrations/{waiting.id}", follow_redirects=False)
        assert detail.status_code == 303
    assert account_status(app, person.account) == "active"
    assert app.registrations.status(waiting.id).state == "approval"
    assert audit_count(app) == before and count(app, OfficerSession) == 0


# -- login answers -----------------------------------------------------------------------------


def console_login(client: TestClient, body: dict[str, Any]) -> httpx.Response:
    return client.post("/api/console/login", json=body, headers={"X-CSRF-Token": csrf(client)})


def test_a_console_login_answer_is_single_use(app: App, cards: dict[str, IssuedCard]) -> None:
    with client_of(app) as client:
        body = answer(client, cards["admin"], "/api/console/login/challenge")
        first = console_login(client, body)
    with client_of(app) as thief:  # the answer, captured, replayed from elsewhere
        replayed = console_login(thief, body)
    assert first.status_code == 200
    assert (replayed.status_code, error_codes(replayed)) == (422, ["challenge_used"])
    assert "swreg_officer" not in str(replayed.headers.get_list("set-cookie"))
    assert count(app, OfficerSession) == 1 and len(audit(app, "officer_login")) == 1


def test_an_answer_signed_for_another_origin_opens_nothing(
    app: App, cards: dict[str, IssuedCard]
) -> None:
    """A phishing page at another origin relays the console's challenge; the card signs the
    payload that names the phishing origin; the portal checks its own origin's payload."""
    with client_of(app) as client:
        headers = {"X-CSRF-Token": csrf(client)}
        challenge = client.post("/api/console/login/challenge", headers=headers).json()
        payload = base64.b64decode(challenge["payload"])
        origin = hashlib.sha256(app.settings.public_origin.encode()).digest()
        assert payload.startswith(origin)  # SHA-256(origin) ‖ SHA-256(scope) ‖ SHA-256(nonce)
        forged = hashlib.sha256(b"https://evil.example").digest() + payload[32:]
        body = {
            "challenge_id": challenge["challenge_id"],
            "certificate": base64.b64encode(cards["admin"].der()).decode(),
            "signature": base64.b64encode(cards["admin"].sign(forged)).decode(),
            "chain": [base64.b64encode(c).decode() for c in cards["admin"].chain_der()],
        }
        response = console_login(client, body)
    assert (response.status_code, error_codes(response)) == (422, ["signature_invalid"])
    # and a challenge issued for another origin is refused by the service whatever is signed
    challenge_for_evil = app.console.issue_challenge(origin="https://evil.example")
    signed = CardResponse(
        challenge_id=challenge_for_evil.id,
        certificate=cards["admin"].der(),
        signature=cards["admin"].sign(challenge_for_evil.payload),
        chain=cards["admin"].chain_der(),
    )
    with pytest.raises(SwregError) as info:
        app.console.login(signed, origin=app.settings.public_origin, via="test")
    assert info.value.code == "signature_invalid"
    assert count(app, OfficerSession) == 0 and audit(app, "officer_login") == []


@pytest.mark.parametrize(
    "challenge_url",
    [
        "/api/login/challenge",
        "/api/password-reset/challenge",
        "/api/customs-certificates/challenge",
        "/api/renewal/challenge",
    ],
)
def test_an_answer_from_an_applicants_flow_opens_no_console(
    app: App, cards: dict[str, IssuedCard], challenge_url: str
) -> None:
    """憑證登入, 忘記密碼, 通關憑證註冊 and 憑證更換 sign their own scopes: none opens the
    console."""
    with client_of(app) as client:
        body = answer(client, cards["admin"], challenge_url)
        response = console_login(client, body)
    assert (response.status_code, error_codes(response)) == (422, ["signature_invalid"])
    assert count(app, OfficerSession) == 0 and audit(app, "officer_login") == []


def test_a_console_answer_opens_no_applicant_login(app: App, cards: dict[str, IssuedCard]) -> None:
    with client_of(app) as client:
        body = answer(client, cards["admin"], "/api/console/login/challenge")
        response = client.post("/api/login", json=body, headers={"X-CSRF-Token": csrf(client)})
    assert response.status_code == 422 and error_codes(response) == ["signature_invalid"]


def test_a_revoked_officer_card_opens_nothing(
    app: App, cards: dict[str, IssuedCard], pki: TestPKI, clock: FixedClock
) -> None:
    crl = pki.crl(
        IssuerCA.MOICA, [cards["admin"]], number=1000, this_update=clock.now(),
        next_update=clock.now() + timedelta(days=1),
    )  # fmt: skip
    app.trust.add_crl(crl.public_bytes(serialization.Encoding.DER), actor="test")
    with client_of(app) as client:
        response = log_in(client, cards["admin"])
        assert (response.status_code, error_codes(response)) == (422, ["certificate_revoked"])
        assert is_login_page(client.get("/officer"))
    assert count(app, OfficerSession) == 0 and audit(app, "officer_login") == []


def test_an_expired_or_not_yet_valid_officer_card_opens_nothing(
    app: App, pki: TestPKI, clock: FixedClock
) -> None:
    now = clock.now()
    expired = pki.issue_person(
        name="過期", valid_from=now - timedelta(days=800), valid_to=now - timedelta(days=1)
    )
    early = pki.issue_person(
        name="未生效", valid_from=now + timedelta(days=1), valid_to=now + timedelta(days=800)
    )
    app.officers.add(expired.der(), name="過期", role="admin", actor="test")
    app.officers.add(early.der(), name="未生效", role="admin", actor="test")
    with client_of(app) as client:
        old = log_in(client, expired)
        new = log_in(client, early)
    assert (old.status_code, error_codes(old)) == (422, ["certificate_expired"])
    assert (new.status_code, error_codes(new)) == (422, ["certificate_not_yet_valid"])
    assert count(app, OfficerSession) == 0


@pytest.mark.parametrize("kind", ["company", "organization", "customs"])
def test_only_gca_and_moica_certificates_go_on_the_officer_list(
    app: App, pki: TestPKI, kind: str
) -> None:
    """DESIGN.md §12: an officer is a 政府憑證 (GCA) or 自然人憑證 (MOICA). A company's card
    (MOEACA), an organization's (XCA) or a customs certificate (TaiCA) is refused by
    ``officers add``; one that got on the list anyway (an older list) opens no console."""
    card = {
        "company": lambda: pki.issue_company(UBN),
        "organization": lambda: pki.issue_organization("2.16.886.111.90010.90003.100004"),
        "customs": lambda: pki.issue_customs(UBN),
    }[kind]()
    before = audit_count(app)
    with pytest.raises(SwregError) as info:
        app.officers.add(card.der(), name="冒牌", role="admin", actor="test")
    assert (info.value.code, info.value.field) == ("certificate_type_mismatch", "certificate")
    assert count(app, Officer) == 0 and audit_count(app) == before

    with app.database.unit_of_work() as uow:  # an entry written before the rule
        uow.session.add(
            Officer(
                name="冒牌", role="admin", fingerprint=fingerprint(card), der=card.der(),
                token_hash=None, token_issued_at=None, added_at=app.clock.now(),
            )
        )  # fmt: skip
        uow.commit()
    with client_of(app) as client:
        response = log_in(client, card)
    assert (response.status_code, error_codes(response)) == (422, ["certificate_type_mismatch"])
    assert count(app, OfficerSession) == 0 and audit(app, "officer_login") == []


def test_gca_and_moica_officers_log_in(app: App, pki: TestPKI) -> None:
    agency = pki.issue_agency("2.16.886.101.20003.20065.20065", "財政部關務署")
    app.officers.add(agency.der(), name="關務署", role="reviewer", actor="test")
    with client_of(app) as client:
        response = log_in(client, agency)
    assert response.json() == {"officer": "關務署", "role": "reviewer"}


# -- CSRF --------------------------------------------------------------------------------------


def foreign_token() -> str:
    """A well-formed CSRF token issued under another server's key."""
    return new_csrf_token(IdentifierHasher(bytes(range(100, 132))))


@pytest.mark.parametrize("token", ["none", "foreign"])
def test_every_console_post_needs_this_servers_csrf_token(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView, pki: TestPKI, token: str
) -> None:
    card = pki.issue_person()
    person = walk(app, "person.general", card, PERSON_ANSWERS)
    app.registrations.approve(person.id, officer=ADMIN_NAME)
    assert person.account is not None
    app.accounts.activate(app.accounts.send_activation(person.account))
    target = account_id(app, person.account)
    with client_of(app) as client:
        log_in(client, cards["admin"])
        login_body = answer(client, cards["reviewer"], "/api/console/login/challenge")
        if token == "foreign":  # cookie and field agree, but this server never issued it
            client.cookies.set("csrf", foreign_token())
        before = (audit_count(app), count(app, OfficerSession))
        forms = {
            "/officer/logout": {},
            f"/officer/registrations/{waiting.id}/approve": {},
            f"/officer/registrations/{waiting.id}/reject": {"reason": "偽造"},
            "/officer/accounts": {"q": UBN},
            f"/officer/accounts/{target}/suspend": {"reason": "偽造"},
            f"/officer/accounts/{target}/reactivate": {"reason": "偽造"},
            "/officer/audit/verify": {},
            "/officer/audit/export": {},
        }
        for url, fields in forms.items():
            data = fields if token == "none" else {**fields, "csrf": foreign_token()}
            response = client.post(url, data=data)
            assert (response.status_code, error_codes_html(response)) == (403, "csrf_failed"), url
        headers = {} if token == "none" else {"X-CSRF-Token": foreign_token()}
        for url, body in (
            ("/api/console/login", login_body),
            ("/api/console/login/challenge", None),
        ):
            response = client.post(url, json=body, headers=headers)
            assert (response.status_code, error_codes(response)) == (403, ["csrf_failed"]), url
        assert (audit_count(app), count(app, OfficerSession)) == before
    assert app.registrations.status(waiting.id).state == "approval"
    assert account_status(app, person.account) == "active"


def error_codes_html(response: httpx.Response) -> str:
    """The error code of a refusal: the JSON one, or the one whose message an HTML error page
    shows (``id="error-page"``)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return str(response.json()["errors"][0]["code"])
    page = re.search(r'<div id="error-page".*?</div>', response.text, re.DOTALL)
    if page is None:
        return "no error page"
    shown = [code.value for code in ErrorCode if html.escape(message_for(code)) in page.group()]
    return shown[0] if len(shown) == 1 else f"messages of {shown}"


# -- markup --------------------------------------------------------------------------------------


def test_markup_an_applicant_controls_is_escaped_on_every_console_page(
    app: App, cards: dict[str, IssuedCard], pki: TestPKI
) -> None:
    """Company name, contact name, address, e-mail, the card's subject, the audit diffs and a
    reason: shown escaped, never as markup."""
    company = f"{SCRIPT}貿易股份有限公司"
    card = pki.issue_company(UBN, name=company)
    answers = {
        **COMPANY_ANSWERS, "company_name": company, "contact_name": f"陳{IMAGE}",
        "address": f"臺北市{SCRIPT}",
    }  # fmt: skip
    view = walk(app, "enterprise.general", card, answers)
    assert view.state == "approval"
    with client_of(app) as client:
        log_in(client, cards["admin"])
        pages = [client.get(f"/officer/registrations/{view.id}")]
        pages.append(post(client, f"/officer/registrations/{view.id}/reject", reason=SCRIPT))
        pages.append(client.get("/officer"))
        pages.append(post(client, "/officer/accounts", q=SCRIPT))
        pages.append(post(client, "/officer/accounts", q=f"{IMAGE}x"))
    for page in pages:
        assert page.status_code == 200, page.text[:300]
        assert not MARKUP.search(page.text.replace('<script src="', "")), page.url
    with client_of(app) as client:  # the export holds the markup: a download, never a page
        log_in(client, cards["admin"])
        exported = post(client, "/officer/audit/export")
    assert SCRIPT in exported.text
    assert exported.headers["content-type"] == "application/jsonl; charset=utf-8"
    assert exported.headers["content-disposition"].startswith("attachment")
    assert exported.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in exported.headers["content-security-policy"]
    detail, rejected = pages[0].text, pages[1].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;貿易股份有限公司" in detail  # shown, escaped
    assert "&lt;script&gt;" in rejected  # the reason on the trail


def test_markup_in_a_login_certificates_subject_and_account_is_escaped(
    app: App, cards: dict[str, IssuedCard], pki: TestPKI
) -> None:
    """The card holder's name (the subject CN, the contact name prefilled from it) holds
    markup; e-mail addresses cannot (``invalid_email``)."""
    card = pki.issue_person(name=f"王{SCRIPT}<b>")
    view = walk(app, "person.general", card, {**PERSON_ANSWERS, "contact_name": f"王{SCRIPT}<b>"})
    assert view.state == "approval"
    app.registrations.approve(view.id, officer=ADMIN_NAME)
    assert view.account is not None
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        detail = client.get(f"/officer/registrations/{view.id}").text
        account = client.get(f"/officer/accounts/{account_id(app, view.account)}").text
    for page in (detail, account):
        assert not MARKUP.search(page.replace('<script src="', ""))
        assert "<b>" not in page


# -- personal data -------------------------------------------------------------------------------

PERSON_CLEAR = {
    "national_id": PERSON_ANSWERS["national_id"],
    "email": PERSON_ANSWERS["email"],
    "phone": "0912345678",
    "birth_date": "1985",
    "address": "市府路",
    "contact_name": PERSON_ANSWERS["contact_name"],
}


def clear_values_in(text: str, values: dict[str, str]) -> list[str]:
    """Which of ``values`` appear in ``text`` (phone digits compared without separators)."""
    digits = re.sub(r"[-\s]", "", text)
    found = [key for key, value in values.items() if value in text]
    if "phone" in values and values["phone"] in digits and "phone" not in found:
        found.append("phone")
    return found


def test_a_persons_registration_shows_no_clear_personal_data(
    app: App, cards: dict[str, IssuedCard], person_waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        page = client.get(f"/officer/registrations/{person_waiting.id}").text
        queue = client.get("/officer").text
    assert clear_values_in(page, PERSON_CLEAR) == []
    assert clear_values_in(queue, PERSON_CLEAR) == []
    assert "A12*****89" in page and "王*明" in page
    # the card's last four ID digits: no more of the ID than the masked one shows
    identity = re.search(r'data-identity="id_last4">([^<]*)<', page)
    assert identity is not None and identity.group(1) == "**89"
    assert "6789" not in re.sub(r"<[^>]+>", " ", page)
    entered = dict(re.findall(r'data-field="([a-z_0-9]+)">([^<]*)<', page))
    assert entered == {
        "consent": "✓", "iot": "✗", "contact_name": "王**", "email": "m**g@example.com",
        "national_id": "A12*****89", "birth_date": "****-**-**", "phone": "****-***-678",
        "address": "***",
    }  # fmt: skip
    assert "$argon2" not in page and "Passw0rdOK" not in page


def test_a_companys_registration_shows_its_public_data_and_masks_the_contact(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        page = client.get(f"/officer/registrations/{waiting.id}").text
    contact = {
        "email": COMPANY_ANSWERS["email"],
        "phone": "0223456789",
        "address": "重慶南路",
        "contact_name": COMPANY_ANSWERS["contact_name"],
    }
    assert clear_values_in(page, contact) == []
    entered = dict(re.findall(r'data-field="([a-z_0-9]+)">([^<]*)<', page))
    assert entered == {
        "consent": "✓", "iot": "✗", "ubn": UBN, "email": "i**o@trading.example",
        "contact_name": "陳**", "sub_card": "—", "phone": "**-****-*789", "address": "***",
        "company_name": COMPANY_ANSWERS["company_name"],  # public register data, in clear
    }  # fmt: skip


def test_search_and_account_pages_show_no_clear_personal_data(
    app: App, cards: dict[str, IssuedCard], person_waiting: RegistrationView
) -> None:
    app.registrations.approve(person_waiting.id, officer=ADMIN_NAME)
    assert person_waiting.account is not None
    target = account_id(app, person_waiting.account)
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        hits = post(client, "/officer/accounts", q=PERSON_ANSWERS["national_id"]).text
        page = client.get(f"/officer/accounts/{target}").text
        decided = client.get(f"/officer/registrations/{person_waiting.id}").text  # its trail
    assert re.findall(r'data-account-id="(\d+)"', hits) == [str(target)]
    assert clear_values_in(hits, PERSON_CLEAR) == []
    assert clear_values_in(page, PERSON_CLEAR) == []
    assert clear_values_in(decided, PERSON_CLEAR) == [] and 'data-event="approve"' in decided
    assert "A12*****89" in page and 'id="account-email">m**g@example.com<' in page


# -- logs ----------------------------------------------------------------------------------------


def test_console_requests_log_no_personal_data_and_no_token(
    app: App, cards: dict[str, IssuedCard], person_waiting: RegistrationView,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with client_of(app) as client:
        log_in(client, cards["stranger"])  # refused: logged with the fingerprint only
        log_in(client, cards["admin"])
        cookie = client.cookies.get("swreg_officer") or ""
        csrf_token = csrf(client)
        post(client, "/officer/accounts", q=PERSON_ANSWERS["national_id"])
        post(client, "/officer/accounts", q=PERSON_ANSWERS["email"])
        client.get(f"/officer/registrations/{person_waiting.id}")
        post(client, f"/officer/registrations/{person_waiting.id}/approve")
        post(client, "/officer/audit/export")
        post(client, "/officer/logout")
    assert cookie and caplog.records
    lines = [
        record.getMessage() + json.dumps(record.__dict__, default=str, ensure_ascii=False)
        for record in caplog.records
    ]
    with app.database.unit_of_work() as uow:  # nor does the audit log the console wrote
        rows = uow.session.scalars(select(AuditEntry)).all()
        lines += [json.dumps(row.diff, ensure_ascii=False) + row.actor for row in rows]
    for line in lines:
        upper = line.upper()
        assert PERSON_ANSWERS["national_id"] not in upper
        assert PERSON_ANSWERS["email"] not in line and cookie not in line
        assert csrf_token not in line and "Passw0rdOK" not in line


# -- roles ---------------------------------------------------------------------------------------


def test_a_reviewer_reaches_no_admin_action_by_any_route(
    app: App, cards: dict[str, IssuedCard], pki: TestPKI
) -> None:
    card = pki.issue_person()
    person = walk(app, "person.general", card, PERSON_ANSWERS)
    app.registrations.approve(person.id, officer=ADMIN_NAME)
    assert person.account is not None
    app.accounts.activate(app.accounts.send_activation(person.account))
    target = account_id(app, person.account)
    app.accounts.suspend(person.account, officer=officer(app, ADMIN_NAME), reason="調查")
    before = audit_count(app)
    reviewer = officer(app, REVIEWER_NAME)
    console: OfficerConsole = app.console
    for call in (
        lambda: console.reactivate(reviewer, target, reason="x", via="test"),
        lambda: console.suspend(reviewer, target, reason="x", via="test"),
        lambda: console.suspend(reviewer, 999_999, reason="x", via="test"),  # no enumeration
        lambda: console.verify_audit(reviewer, via="test"),
        lambda: console.export_audit(reviewer, via="test"),
        lambda: app.accounts.reactivate(person.account or "", officer=reviewer, reason="x"),
    ):
        with pytest.raises(SwregError) as info:
            call()
        assert (info.value.code, info.value.field) == ("not_authorized", "officer")
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        after_login = audit_count(app)
        for url in (f"/officer/accounts/{target}/reactivate", "/officer/accounts/999999/suspend"):
            response = post(client, url, reason="x")
            assert (response.status_code, error_codes_html(response)) == (403, "not_authorized")
        assert audit_count(app) == after_login
    assert account_status(app, person.account) == "suspended"
    assert audit_count(app) == before + 1  # the reviewer's login only


# -- races ---------------------------------------------------------------------------------------


def test_two_officers_deciding_one_registration_at_once_make_one_decision(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    admin, reviewer = officer(app, ADMIN_NAME), officer(app, REVIEWER_NAME)

    def decide(i: int) -> RegistrationView:
        if i == 0:
            return app.console.approve(admin, waiting.id, via="test")
        return app.console.reject(reviewer, waiting.id, reason="不符", via="test")

    outcomes = race(2, decide)
    won = [o for o in outcomes if isinstance(o, RegistrationView)]
    lost = [o for o in outcomes if isinstance(o, SwregError)]
    assert len(won) == 1 and len(lost) == 1
    assert lost[0].code == "invalid_transition"  # a serial order gives the same
    decisions = audit(app, "approve") + audit(app, "reject")
    assert len(decisions) == 1
    final = app.registrations.status(waiting.id).state
    assert final == ("completed" if decisions[0].event == "approve" else "rejected")
    assert count(app, Account) == (1 if final == "completed" else 0)
    assert app.audit.verify().ok


# -- malformed input -----------------------------------------------------------------------------


def test_huge_malformed_and_traversing_ids_are_refused_and_leave_nothing(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["admin"])
        before = audit_count(app)
        huge = "a" * 10_000
        for url in (f"/officer/registrations/{huge}", f"/officer/registrations/{waiting.id}x"):
            response = client.get(url)
            assert (response.status_code, error_codes_html(response)) == (
                404, "registration_not_found"
            ), url[:80]  # fmt: skip
        for url in (f"/officer/registrations/{huge}/approve",
                    f"/officer/registrations/{huge}/reject"):  # fmt: skip
            response = post(client, url, reason="x")
            assert (response.status_code, error_codes_html(response)) == (
                404, "registration_not_found"
            )  # fmt: skip
        for traversal in ("..%2F..%2Fapi%2Fcsrf", "%2e%2e", "..;", "%252e%252e%252f"):
            response = client.get(f"/officer/registrations/{traversal}")
            assert response.status_code in (200, 404), traversal  # no registration, or /officer
            assert response.url.path.startswith("/officer"), traversal
            assert 'id="registration-id"' not in response.text
            assert "token" not in response.text.split("</head>")[-1]  # not /api/csrf's answer
        for bad in ("0", "-1", str(2**31), "1e3", "abc", "0x1", huge):
            got = client.get(f"/officer/accounts/{bad}")
            sent = post(client, f"/officer/accounts/{bad}/suspend", reason="x")
            assert (got.status_code, sent.status_code) == (422, 422), bad[:20]
        nul = client.post("/officer/accounts", data={"csrf": csrf(client), "q": "A12\x00"})
        assert (nul.status_code, error_codes_html(nul)) == (422, "invalid_value")
        long = post(client, "/officer/accounts", q="A" * 10_000)
        assert (long.status_code, 'id="error-q"' in long.text) == (422, True)
        too_big = post(client, "/officer/accounts", q="A" * 70_000)
        assert (too_big.status_code, error_codes_html(too_big)) == (413, "request_too_large")
        upload = client.post(
            "/officer/accounts", data={"csrf": csrf(client)}, files={"q": ("q.txt", b"A1234")}
        )
        assert upload.status_code == 422  # a file is no query
        assert audit_count(app) == before
        reason = post(client, f"/officer/registrations/{waiting.id}/reject", reason="x" * 10_000)
        assert reason.status_code == 422 and 'id="error-reason"' in reason.text
    # the refused 駁回 shows the registration again: that look is its only row
    assert audit_count(app) == before + 1 and len(audit(app, "officer_viewed")) == 1
    assert audit(app, "reject") == []
    assert app.registrations.status(waiting.id).state == "approval"


# -- the audit export ----------------------------------------------------------------------------


def test_the_export_leaves_out_rows_appended_after_it_began(
    app: App, cards: dict[str, IssuedCard]
) -> None:
    admin = officer(app, ADMIN_NAME)
    with app.database.unit_of_work() as uow:  # a long log
        for i in range(1_500):
            uow.audit.append(at=app.clock.now(), actor="test", event="filler", diff={"i": i})
        uow.commit()
    lines = app.console.export_audit(admin, via="test")
    assert not isinstance(lines, list | tuple)  # streamed, never a list of the whole log
    with app.database.unit_of_work() as uow:  # written while the download starts
        uow.audit.append(at=app.clock.now(), actor="test", event="late", diff={})
        uow.commit()
    first = next(lines)
    app.console.verify_audit(admin, via="test")  # written while the download runs
    records = [json.loads(first), *(json.loads(line) for line in lines)]
    assert records[-1]["event"] == "audit_exported"
    assert {r["event"] for r in records}.isdisjoint({"late", "audit_verified"})
    with app.database.unit_of_work() as uow:
        exported_seq = uow.session.scalar(
            select(AuditEntry.seq).where(AuditEntry.event == "audit_exported")
        )
        total = uow.session.scalar(select(func.count()).select_from(AuditEntry))
    assert [r["seq"] for r in records] == list(range(1, exported_seq + 1))
    assert total == len(records) + 2


# -- what a search tells -------------------------------------------------------------------------


def test_a_search_matches_exactly_never_by_pattern(
    app: App, cards: dict[str, IssuedCard], person_waiting: RegistrationView
) -> None:
    """``%``, ``_`` or a partial name are no wildcards: an officer finds an account by its
    whole key, never lists accounts by a pattern."""
    app.registrations.approve(person_waiting.id, officer=ADMIN_NAME)
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        for query in ("%", "_", "%@example.com", "ming@%", "ming", "A12345678%", "*"):
            page = post(client, "/officer/accounts", q=query)
            assert 'id="no-hits"' in page.text, query


# -- decisions and changes out of turn -----------------------------------------------------------


def test_a_registration_not_waiting_for_an_officer_cannot_be_decided(
    app: App, cards: dict[str, IssuedCard], pki: TestPKI
) -> None:
    """A form posted for a registration the applicant is still filling in (基本資料) decides
    nothing: only one waiting at an officer step can be approved or rejected."""
    started = app.registrations.start("person.general", consent=True)
    view = app.registrations.submit_card(
        started.id, card_response(app, started, pki.issue_person())
    )
    assert view.state == "basic_data"
    with client_of(app) as client:
        log_in(client, cards["admin"])
        before = audit_count(app)
        for action, fields in (("approve", {}), ("reject", {"reason": "搶先"})):
            response = post(client, f"/officer/registrations/{view.id}/{action}", **fields)
            assert response.status_code == 422, action
            assert error_codes_html(response) == "invalid_transition", action
        page = client.get(f"/officer/registrations/{view.id}").text
        assert 'id="approve"' not in page and 'id="reject"' not in page
    assert app.registrations.status(view.id).state == "basic_data"
    assert audit_count(app) == before + 1  # the look at the page, nothing else


def test_an_account_not_yet_activated_cannot_be_suspended_or_reactivated(
    app: App, cards: dict[str, IssuedCard], person_waiting: RegistrationView
) -> None:
    """Suspending then reactivating must never turn a pending account active without its
    e-mail being confirmed; the page offers neither, and a posted form is refused."""
    app.registrations.approve(person_waiting.id, officer=ADMIN_NAME)
    assert person_waiting.account is not None
    target = account_id(app, person_waiting.account)
    with client_of(app) as client:
        log_in(client, cards["admin"])
        page = client.get(f"/officer/accounts/{target}")
        assert 'id="suspend"' not in page.text and 'id="reactivate"' not in page.text
        assert page.headers["cache-control"] == "no-store"  # personal data: no cache keeps it
        for action in ("suspend", "reactivate"):
            response = post(client, f"/officer/accounts/{target}/{action}", reason="測試")
            assert error_codes_html(response) == "invalid_transition", action
    assert account_status(app, person_waiting.account) == "pending_activation"
    assert audit(app, "account_suspended") == audit(app, "account_reactivated") == []


@pytest.mark.parametrize("typed", ["A123 456 789", "a123-456-789", " Ａ１２３４５６７８９ "])
def test_a_national_id_typed_with_spaces_or_hyphens_is_still_one(
    app: App, cards: dict[str, IssuedCard], person_waiting: RegistrationView, typed: str
) -> None:
    """Searched through its keyed hash and not typed back into the form, however it was
    typed: no page holds the ID an officer looked for."""
    app.registrations.approve(person_waiting.id, officer=ADMIN_NAME)
    assert person_waiting.account is not None
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        page = post(client, "/officer/accounts", q=typed).text
    assert re.findall(r'data-account-id="(\d+)"', page) == [
        str(account_id(app, person_waiting.account))
    ]
    assert 'name="q" value=""' in page
    assert not re.search(r"123\W?456\W?789|１２３", page)
    [search] = audit(app, "officer_search")
    assert (search.diff["kind"], search.diff["hits"]) == ("national_id", 1)
