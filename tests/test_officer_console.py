"""The officer console over HTTP (DESIGN.md §12): card login, queue, detail, decisions, search,
suspension, trust and audit — with the roles checked by the service and every action audited
with the officer's certificate.

The officer's card answers the console's own challenge through ``/api/console/login`` exactly as
card.js posts it; the pages are the server-rendered HTML. Chromium drives the same pages in
tests/browser/test_officer_console.py.
"""

# ruff: noqa: F811 - the imported fixtures are parameters of the tests

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from engine import App, FixedClock, ImportKind, RegistrationView, SwregError
from engine._errors import Language
from engine.core.declarations import CertificateIdentity, IssuerCA, Labels
from engine.core.identifiers import mask_account_name
from engine.services.officer_console import RevocationFacts
from engine.services.officers import OfficerView
from engine.store import Account, AuditEntry, OfficerSession
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import _pages_officer, create_app
from engine.web._i18n import Translator
from engine.web._pages import taipei_time
from engine.web._pages_officer import Words

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS
from .helpers import count, enrol
from .test_approval import (  # noqa: F401 - apps: a fixture
    Apps,
    apps,
    walk,
    with_approval,
)
from .test_pages import (
    CJK,
    VOID,
    WORDED_ATTRIBUTES,
    Element,
    Page,
    chinese_outside_marked_text,
    english_wordings,
    page,
)

UBN = "04595257"
ADMIN_NAME = "林關員"
REVIEWER_NAME = "張審核"


@pytest.fixture
def app(apps: Apps) -> App:
    return apps.open(with_approval())


@pytest.fixture
def cards(app: App, pki: TestPKI) -> dict[str, IssuedCard]:
    """An admin's and a reviewer's cards on the officer list, and a stranger's card."""
    found = {
        "admin": pki.issue_person(name=ADMIN_NAME, id_last4="1111"),
        "reviewer": pki.issue_person(name=REVIEWER_NAME, id_last4="2222"),
        "stranger": pki.issue_person(name="路人甲", id_last4="3333"),
    }
    app.officers.add(found["admin"].der(), name=ADMIN_NAME, role="admin", actor="test")
    app.officers.add(found["reviewer"].der(), name=REVIEWER_NAME, role="reviewer", actor="test")
    return found


@pytest.fixture
def waiting(app: App, pki: TestPKI) -> RegistrationView:
    """An enterprise registration waiting at the approval step (待審核)."""
    view = walk(app, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    assert view.state == "approval"
    return view


def client_of(app: App) -> TestClient:
    return TestClient(create_app(app))


def csrf(client: TestClient) -> str:
    token: str = client.get("/api/csrf").json()["token"]
    return token


def answer(client: TestClient, card: IssuedCard, challenge_url: str) -> dict[str, Any]:
    """The card's answer to a fresh challenge from ``challenge_url``, as card.js posts it."""
    headers = {"X-CSRF-Token": csrf(client)}
    challenge = client.post(challenge_url, headers=headers).json()
    signature = card.sign(base64.b64decode(challenge["payload"]))
    return {
        "challenge_id": challenge["challenge_id"],
        "certificate": base64.b64encode(card.der()).decode(),
        "signature": base64.b64encode(signature).decode(),
        "chain": [base64.b64encode(c).decode() for c in card.chain_der()],
    }


def log_in(client: TestClient, card: IssuedCard) -> httpx.Response:
    body = answer(client, card, "/api/console/login/challenge")
    return client.post("/api/console/login", json=body, headers={"X-CSRF-Token": csrf(client)})


def post(client: TestClient, url: str, **fields: str) -> httpx.Response:
    return client.post(url, data={"csrf": csrf(client), **fields})


def audit(app: App, event: str) -> list[AuditEntry]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).where(AuditEntry.event == event)).all()
        uow.session.expunge_all()
        return list(rows)


def error_codes(response: httpx.Response) -> list[str]:
    return [item["code"] for item in response.json()["errors"]]


def fingerprint(card: IssuedCard) -> str:
    return hashlib.sha256(card.der()).hexdigest()


def officer(app: App, name: str) -> OfficerView:
    return app.officers.get(name)


def account_id(app: App, name: str) -> int:
    with app.database.unit_of_work() as uow:
        found = uow.accounts.get_by_name(name)
        assert found is not None
        return found.id


def account_status(app: App, name: str) -> str:
    with app.database.unit_of_work() as uow:
        found = uow.accounts.get_by_name(name)
        assert found is not None
        return found.status


# -- login -------------------------------------------------------------------------------------


def test_an_officer_logs_in_with_their_card_and_sees_the_queue(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        page = client.get("/officer")
        assert 'data-mode="officer"' in page.text and waiting.id not in page.text

        response = log_in(client, cards["admin"])

        assert response.status_code == 200, response.text
        assert response.json() == {"officer": ADMIN_NAME, "role": "admin"}
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("swreg_officer=")
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        queue = client.get("/officer")
        assert f'data-registration="{waiting.id}"' in queue.text
        assert "待審核" in queue.text and UBN not in queue.text  # the account name is masked
    [login] = audit(app, "officer_login")
    assert login.actor == f"officer:{ADMIN_NAME}"
    assert login.diff["certificate"] == fingerprint(cards["admin"])
    assert login.diff["via"].startswith("web:client=")
    assert count(app, OfficerSession) == 1


def test_a_card_not_on_the_officer_list_opens_nothing(
    app: App, cards: dict[str, IssuedCard], caplog: pytest.LogCaptureFixture
) -> None:
    with client_of(app) as client:
        response = log_in(client, cards["stranger"])

        assert (response.status_code, error_codes(response)) == (403, ["not_authorized"])
        assert "set-cookie" not in response.headers or "swreg_officer" not in str(
            response.headers.get_list("set-cookie")
        )
        assert client.get("/officer/trust", follow_redirects=False).headers["location"] == (
            "/officer"
        )
    assert count(app, OfficerSession) == 0 and audit(app, "officer_login") == []
    assert f"officer_login_refused certificate={fingerprint(cards['stranger'])}" in caplog.text


def test_an_applicants_login_answer_does_not_open_the_console(
    app: App, cards: dict[str, IssuedCard]
) -> None:
    """Each flow signs its own scope: an answer to 憑證登入's challenge is no console login."""
    with client_of(app) as client:
        body = answer(client, cards["admin"], "/api/login/challenge")
        response = client.post(
            "/api/console/login", json=body, headers={"X-CSRF-Token": csrf(client)}
        )
    assert (response.status_code, error_codes(response)) == (422, ["signature_invalid"])
    assert count(app, OfficerSession) == 0


def test_the_console_login_needs_the_csrf_token(app: App, cards: dict[str, IssuedCard]) -> None:
    with client_of(app) as client:
        body = answer(client, cards["admin"], "/api/console/login/challenge")
        response = client.post("/api/console/login", json=body)
    assert (response.status_code, error_codes(response)) == (403, ["csrf_failed"])
    assert count(app, OfficerSession) == 0


def test_without_a_session_every_page_and_action_goes_back_to_the_login(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        for url in (
            f"/officer/registrations/{waiting.id}",
            "/officer/accounts",
            "/officer/trust",
            "/officer/audit",
        ):
            response = client.get(url, follow_redirects=False)
            assert (response.status_code, response.headers["location"]) == (303, "/officer")
        for url in (
            f"/officer/registrations/{waiting.id}/approve",
            "/officer/audit/verify",
            "/officer/audit/export",
            "/officer/accounts",
        ):
            response = post(client, url, q=UBN)
            assert response.url.path == "/officer", url
    assert app.registrations.status(waiting.id).state == "approval"
    assert audit(app, "approve") == [] and audit(app, "audit_exported") == []
    assert audit(app, "officer_search") == []


def test_logout_ends_the_console_session(app: App, cards: dict[str, IssuedCard]) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        stolen = client.cookies.get("swreg_officer")
        assert stolen

        response = post(client, "/officer/logout")

        assert 'data-mode="officer"' in response.text  # the login page again
        assert count(app, OfficerSession) == 0
        client.cookies.set("swreg_officer", stolen)  # a copy of the cookie is worth nothing
        assert 'data-mode="officer"' in client.get("/officer").text
    [logout] = audit(app, "officer_logout")
    assert logout.actor == f"officer:{REVIEWER_NAME}"


def test_sessions_have_the_idle_and_absolute_limits(
    app: App, cards: dict[str, IssuedCard], clock: FixedClock
) -> None:
    idle, longest = app.settings.session_ttl, app.settings.session_max
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        clock.advance(idle - timedelta(seconds=1))
        assert "officer-name" in client.get("/officer").text  # a use slides the idle limit
        clock.advance(idle + timedelta(seconds=1))
        assert 'data-mode="officer"' in client.get("/officer").text

        log_in(client, cards["reviewer"])
        used = timedelta(0)
        while used + idle / 2 < longest:
            clock.advance(idle / 2)
            used += idle / 2
            assert "officer-name" in client.get("/officer").text
        clock.advance(longest - used)
        assert 'data-mode="officer"' in client.get("/officer").text


def test_removing_an_officer_or_changing_their_role_takes_effect_at_once(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["admin"])
        assert client.get("/officer/audit").status_code == 200

        app.officers.remove(ADMIN_NAME, actor="test")
        app.officers.add(cards["admin"].der(), name=ADMIN_NAME, role="reviewer", actor="test")

        assert 'data-mode="officer"' in client.get("/officer").text  # the removal ended it
        assert count(app, OfficerSession) == 0
        log_in(client, cards["admin"])
        assert client.get("/officer/audit").status_code == 403  # now a reviewer


# -- registrations -----------------------------------------------------------------------------


def test_the_detail_is_masked_explains_the_card_and_shows_the_trail(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        page = client.get(f"/officer/registrations/{waiting.id}").text

    for clear in (COMPANY_ANSWERS["email"], COMPANY_ANSWERS["phone"], COMPANY_ANSWERS["password"]):
        assert clear not in page
    assert "i**o@trading.example" in page  # the e-mail, masked as in the audit log
    assert (
        'id="cert-ca" data-ca="MOEACA">' in page and 'id="cert-status" data-status="valid">' in page
    )
    assert re.search(r'<ol id="cert-chain"><li><span translate="no">[^<]+</span></li><li>', page)
    assert 'data-event="next"' in page and 'id="approve"' in page
    [viewed] = audit(app, "officer_viewed")
    assert (viewed.actor, viewed.registration_id) == (f"officer:{REVIEWER_NAME}", waiting.id)
    assert viewed.diff["certificate"] == fingerprint(cards["reviewer"])
    assert viewed.diff["what"] == "registration"


def test_approving_creates_the_account_with_the_officers_certificate_in_the_audit(
    app: App, apps: Apps, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        response = post(client, f"/officer/registrations/{waiting.id}/approve")

        assert response.status_code == 200 and "已核准" in response.text
        assert waiting.id not in client.get("/officer").text  # no longer queued
    assert app.registrations.status(waiting.id).state == "completed"
    assert account_status(app, UBN) == "pending_activation" and len(apps.mails()) == 1
    [approved] = audit(app, "approve")
    assert approved.actor == f"officer:{REVIEWER_NAME}"
    assert approved.diff["certificate"] == fingerprint(cards["reviewer"])
    assert approved.diff["via"].startswith("web:client=")


def test_rejecting_needs_a_reason(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        empty = post(client, f"/officer/registrations/{waiting.id}/reject", reason="  ")

        assert empty.status_code == 422
        assert 'id="error-reason"' in empty.text and 'aria-invalid="true"' in empty.text
        assert app.registrations.status(waiting.id).state == "approval"

        done = post(client, f"/officer/registrations/{waiting.id}/reject", reason="資料不符")

        assert done.status_code == 200 and "已駁回" in done.text
    assert app.registrations.status(waiting.id).state == "rejected"
    [rejected] = audit(app, "reject")
    assert rejected.diff["reason"] == "資料不符"
    assert rejected.diff["certificate"] == fingerprint(cards["reviewer"])
    assert count(app, Account) == 0


def test_an_unknown_registration_or_account_is_not_found(
    app: App, cards: dict[str, IssuedCard]
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        response = client.get("/officer/registrations/00000000-0000-4000-8000-000000000000")
        huge = client.get(f"/officer/accounts/{2**70}")
        unknown = client.get("/officer/accounts/999999")
    assert response.status_code == 404
    assert (huge.status_code, unknown.status_code) == (422, 404)
    assert audit(app, "officer_viewed") == []


# -- accounts ----------------------------------------------------------------------------------


@pytest.fixture
def person_account(app: App, pki: TestPKI) -> str:
    view = enrol(app, "person.general", pki.issue_person(), PERSON_ANSWERS)
    assert view.account is not None
    app.accounts.activate(app.accounts.send_activation(view.account))
    return view.account


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        (PERSON_ANSWERS["national_id"], "national_id"),
        (PERSON_ANSWERS["national_id"].lower(), "national_id"),
        (PERSON_ANSWERS["email"], "account"),
    ],
)
def test_search_finds_masked_accounts_and_audits_only_the_kind(
    app: App, cards: dict[str, IssuedCard], person_account: str, query: str, kind: str
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        page = post(client, "/officer/accounts", q=query).text

    ids = re.findall(r'data-account-id="(\d+)"', page)
    assert ids == [str(account_id(app, person_account))]
    assert "A12*****89" in page and PERSON_ANSWERS["national_id"] not in page.upper()
    if kind == "national_id":  # not even typed back into the form
        assert 'name="q" value=""' in page
    else:
        assert page.count(PERSON_ANSWERS["email"]) == 1  # the form's value, nowhere else
    [search] = audit(app, "officer_search")
    assert search.diff == {
        "kind": kind,
        "hits": 1,
        "officer": REVIEWER_NAME,
        "certificate": fingerprint(cards["reviewer"]),
        "via": search.diff["via"],
    }
    assert query.upper() not in json.dumps(search.diff, ensure_ascii=False).upper()


def test_search_by_ubn_and_the_account_page_with_its_customs_certificates(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    app.registrations.approve(waiting.id, officer=ADMIN_NAME)
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        hits = post(client, "/officer/accounts", q=UBN).text
        [found] = re.findall(r'data-account-id="(\d+)"', hits)
        page = client.get(f"/officer/accounts/{found}").text
        nothing = post(client, "/officer/accounts", q="nobody@example.com").text

    assert 'id="account-ubn">04595257<' in page
    assert COMPANY_ANSWERS["email"] not in page
    assert page.count("data-fingerprint=") == 1  # the login certificate
    assert "data-certificate-id=" in page  # its login certificate found by 查詢 of the UBN
    assert 'id="suspend"' not in page  # a reviewer is offered no suspension
    assert 'id="no-hits"' in nothing


def test_an_over_long_or_empty_search_is_refused(app: App, cards: dict[str, IssuedCard]) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        long = post(client, "/officer/accounts", q="x" * 300)
        empty = post(client, "/officer/accounts", q=" ")
    assert long.status_code == 422 and 'id="error-q"' in long.text
    assert empty.status_code == 422 and 'id="error-q"' in empty.text
    assert audit(app, "officer_search") == []


def test_a_reviewer_is_refused_every_admin_action(
    app: App, cards: dict[str, IssuedCard], person_account: str
) -> None:
    target = account_id(app, person_account)
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        for url, fields in (
            (f"/officer/accounts/{target}/suspend", {"reason": "冒用調查中"}),
            ("/officer/audit/verify", {}),
            ("/officer/audit/export", {}),
        ):
            response = post(client, url, **fields)
            assert response.status_code == 403, url
            assert "not authorized" in response.text.lower() or "權限" in response.text
        assert client.get("/officer/audit").status_code == 403
    assert account_status(app, person_account) == "active"
    for event in ("account_suspended", "audit_verified", "audit_exported"):
        assert audit(app, event) == []
    with pytest.raises(SwregError) as info:  # the service says no, whatever the page
        app.console.suspend(officer(app, REVIEWER_NAME), target, reason="x", via="test")
    assert (info.value.code, info.value.field) == ("not_authorized", "officer")


def test_an_admin_suspends_and_reactivates_an_account(
    app: App, cards: dict[str, IssuedCard], person_account: str, pki: TestPKI
) -> None:
    target = account_id(app, person_account)
    with client_of(app) as client:
        log_in(client, cards["admin"])
        missing = post(client, f"/officer/accounts/{target}/suspend", reason="")
        assert missing.status_code == 422 and 'id="error-reason"' in missing.text
        assert account_status(app, person_account) == "active"

        suspended = post(client, f"/officer/accounts/{target}/suspend", reason="冒用調查中")

        assert "帳號已停用" in suspended.text and 'id="reactivate"' in suspended.text
        assert account_status(app, person_account) == "suspended"
        back = post(client, f"/officer/accounts/{target}/reactivate", reason="調查完畢")
        assert "帳號已恢復" in back.text
    assert account_status(app, person_account) == "active"
    [row] = audit(app, "account_suspended")
    assert row.actor == f"officer:{ADMIN_NAME}"
    assert (row.diff["reason"], row.diff["certificate"]) == (
        "冒用調查中",
        fingerprint(cards["admin"]),
    )
    assert row.diff["via"].startswith("web:client=")
    assert len(audit(app, "account_reactivated")) == 1


# -- trust and audit ---------------------------------------------------------------------------


def test_the_trust_page_lists_the_anchors_and_the_revocation_policy(
    app: App, cards: dict[str, IssuedCard], pki: TestPKI
) -> None:
    with client_of(app) as client:
        log_in(client, cards["reviewer"])
        page = client.get("/officer/trust").text
    anchors = [entry.fingerprint for entry in app.trust.list()]
    assert anchors and all(f'data-fingerprint="{f}"' in page for f in anchors)
    assert f'id="policy" data-policy="{app.revocation_checks.policy.value}"' in page


def test_an_admin_verifies_and_exports_the_audit_log(
    app: App, cards: dict[str, IssuedCard], waiting: RegistrationView
) -> None:
    with client_of(app) as client:
        log_in(client, cards["admin"])
        verified = post(client, "/officer/audit/verify")
        exported = post(client, "/officer/audit/export")

    assert 'data-ok="true"' in verified.text
    assert exported.headers["content-type"].startswith("application/jsonl")
    assert "attachment" in exported.headers["content-disposition"]
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert lines[-1]["event"] == "audit_exported"  # the export's own row is in it
    check = app.audit.verify()
    assert check.ok and check.last_hash == lines[-1]["hash"] and check.rows == len(lines)
    [row] = audit(app, "audit_verified")
    assert row.diff["ok"] is True and row.diff["certificate"] == fingerprint(cards["admin"])


# -- one language per page (issue 19 item 3) -----------------------------------------------------

ENGLISH_WORD = re.compile(r"[A-Za-z]{3,}")
ACRONYM = re.compile(r"(?<![A-Za-z])[A-Z]{2,}[0-9]*(?![a-z])")
"""OID, PIN, CRL, OCSP, JSONL, MOEACA …: acronyms read as they are in Chinese too."""
HEX = re.compile(r"(?<![0-9A-Za-z])(?=[0-9A-Fa-f-]*[0-9])[0-9A-Fa-f-]{8,}(?![0-9A-Za-z])")
"""A serial number, a fingerprint, a registration id."""
EMAIL = re.compile(r"[A-Za-z0-9._%+*-]+@[A-Za-z0-9.-]+")
FILE_OR_HOST = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+")
PRODUCTS = (
    "電子郵件Email", "HiPKILocalSignServerApp", "HiCOS", "WebSocket", "JavaScript", "swreg",
    "Windows", "Linux", "Mac",
)  # fmt: skip
"""Product names the card login's help names (and the seed manual's 電子郵件Email label)."""
PROPER_NAME = re.compile(
    r"[A-Za-z]+=.*"  # a distinguished name (subject, issuer)
    r"|[A-Za-z0-9._%+*-]+@[A-Za-z0-9.-]+"  # an e-mail address, masked or not
    r"|https?://\S+"  # a URL
    r"|[0-9A-Fa-f-]{8,}"  # hex: a serial number, a fingerprint, a registration id
    r"|[0-9A-Z*]+"  # a CA's name; a masked account or national ID
    r"|[0-9.]+"  # an OID
)
"""What a page may mark ``translate="no"`` (shown as it is in every language)."""


def english_outside_marked_text(html: str) -> list[str]:
    """The English a zh-TW page shows (text and worded attributes) outside ``<code>``, scripts,
    elements marked ``lang="en"`` and names marked ``translate="no"``; acronyms, hex, e-mail
    addresses, file and host names and :data:`PRODUCTS` are not English words here."""
    found: list[str] = []
    skipped: list[bool] = []

    def english(text: str) -> bool:
        for product in PRODUCTS:
            text = text.replace(product, " ")
        for pattern in (EMAIL, FILE_OR_HOST, HEX, ACRONYM):
            text = pattern.sub(" ", text)
        return bool(ENGLISH_WORD.search(text))

    class Reader(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if not any(skipped):
                found.extend(
                    f"<{tag} {name}>: {values[name]}"
                    for name in WORDED_ATTRIBUTES
                    if english(values.get(name) or "")
                )
            if tag not in VOID:
                skipped.append(
                    tag in ("code", "script", "style")
                    or (values.get("lang") or "").startswith("en")
                    or values.get("translate") == "no"
                )

        def handle_endtag(self, tag: str) -> None:
            if tag not in VOID and skipped:
                skipped.pop()

        def handle_data(self, data: str) -> None:
            if not any(skipped) and english(data):
                found.append(data.strip())

    Reader(convert_charrefs=True).feed(html)
    return found


def language_problems(html: str, language: str) -> list[str]:
    """What breaks "one language per page" on a console page in ``language``: the other
    language outside text marked as such, a name marked ``translate="no"`` that is no proper
    name, and (zh-TW) anything marked English but the language switch."""
    shown = Page(html)
    problems = [
        f"not a name: {element.text}"
        for element in shown.all(translate="no")
        if element.text not in ("", "—") and not PROPER_NAME.fullmatch(element.text)
    ]
    if language == "en":
        return problems + chinese_outside_marked_text(html)
    problems += [
        f'lang="en": {element.text}'
        for element in shown.all(lang="en")
        if element.get("id") != "lang-switch"
    ]
    return (
        problems + english_outside_marked_text(html) + [w for w in english_wordings() if w in html]
    )


def by_data(shown: Page, tag: str, name: str, value: str) -> list[Element]:
    return [e for e in shown.all(tag) if e.get(f"data-{name}") == value]


def cells(row: Element) -> list[str]:
    return [cell.text for cell in row.find_all("td")]


def diff_items(row: Element) -> list[str]:
    return [item.text for item in row.find_all("li")]


@pytest.fixture
def company(app: App, pki: TestPKI) -> tuple[IssuedCard, RegistrationView]:
    """A company's card and its registration waiting at the approval step."""
    card = pki.issue_company(UBN)
    view = walk(app, "enterprise.general", card, COMPANY_ANSWERS)
    assert view.awaiting == "officer"
    return card, view


@pytest.fixture
def trader(app: App, pki: TestPKI) -> str:
    """An approved, active company (account ``12345670``) with a customs certificate
    (船公司/代理業)."""
    ubn = "12345670"
    view = walk(app, "enterprise.general", pki.issue_company(ubn), {**COMPANY_ANSWERS, "ubn": ubn})
    app.registrations.approve(view.id, officer=ADMIN_NAME)
    app.accounts.activate(app.accounts.send_activation(ubn))
    customs = pki.issue_customs(ubn, "06")
    app.customs.import_certificate(
        "shipping", {"ubn": ubn}, certificate=customs.der(), kind=ImportKind.NON_IC,
        signature_check=customs.sign,
    )  # fmt: skip
    return view.id


def console_pages(
    app: App, admin: IssuedCard, language: str, waiting_id: str, completed_id: str
) -> dict[str, httpx.Response]:
    """Every console page and state an officer meets, in ``language``."""
    with client_of(app) as client:
        client.get(f"/officer?lang={language}")
        shown = {"login": client.get("/officer")}
        log_in(client, admin)
        shown["queue"] = client.get("/officer")
        shown["registration"] = client.get(f"/officer/registrations/{waiting_id}")
        shown["refused rejection"] = post(
            client, f"/officer/registrations/{waiting_id}/reject", reason=""
        )
        shown["completed registration"] = client.get(f"/officer/registrations/{completed_id}")
        shown["search form"] = client.get("/officer/accounts")
        shown["search"] = post(client, "/officer/accounts", q="12345670")
        shown["no hits"] = post(client, "/officer/accounts", q="nobody@example.com")
        shown["refused search"] = post(client, "/officer/accounts", q=" ")
        [found] = re.findall(r'data-account-id="(\d+)"', shown["search"].text)
        shown["account"] = client.get(f"/officer/accounts/{found}")
        shown["refused suspension"] = post(client, f"/officer/accounts/{found}/suspend")
        shown["suspended"] = post(client, f"/officer/accounts/{found}/suspend", reason="調查中")
        shown["trust"] = client.get("/officer/trust")
        shown["audit"] = client.get("/officer/audit")
        shown["verified"] = post(client, "/officer/audit/verify")
        with app.database.unit_of_work() as uow:  # an edited row: the chain breaks there
            uow.session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="x"))
            uow.commit()
        shown["broken chain"] = post(client, "/officer/audit/verify")
    return shown


@pytest.mark.parametrize("language", ["zh-TW", "en"])
def test_every_console_page_speaks_one_language(
    app: App,
    cards: dict[str, IssuedCard],
    company: tuple[IssuedCard, RegistrationView],
    trader: str,
    language: str,
) -> None:
    """zh-TW pages: no English word outside <code>, names and text marked English (only the
    language switch); English pages: no Chinese outside text marked ``lang="zh-TW"``."""
    shown = console_pages(app, cards["admin"], language, company[1].id, trader)

    statuses = {where: response.status_code for where, response in shown.items()}
    assert statuses == {
        **{where: 200 for where in shown},
        "refused rejection": 422, "refused search": 422, "refused suspension": 422,
    }  # fmt: skip
    assert 'data-reason="edited row"' in shown["broken chain"].text
    found = {where: language_problems(r.text, language) for where, r in shown.items()}
    assert {where: problems for where, problems in found.items() if problems} == {}


DETAIL = {
    "zh-TW": {
        "type": "一般企業或組織團體",
        "card_rank": "主卡",
        "ca": "MOEACA（工商憑證）",
        "key_usage": "數位簽章",
        "status": "有效",
        "revocation": "未廢止，依據：廢止清冊（CRL），查詢時間 {at}",
        "validity": "{start} 至 {end}",
        "accepted": ("註冊申請類別：", "通關憑證使用類型：", "、"),
        "start": ["命令列", "開始申請", "→ 申請類別"],
        "changes": [
            "申請類別 → 憑證檢查", "憑證檢查 → 基本資料", "基本資料 → 企業資訊",
            "企業資訊 → 待審核",
        ],
        "step": ["命令列", "完成步驟"],
        "card_diff": "revocation：crl_number=1、source=廢止清冊（CRL）、status=未廢止",
        "ca_diff": "ca：MOEACA（工商憑證）",
        "viewed": [f"關員 {REVIEWER_NAME}", "關員檢視", ""],
        "what": "what：註冊案件",
        "via": "via：網站（用戶端 ",
    },
    "en": {
        "type": "General enterprise or organisation",
        "card_rank": "Primary card",
        "ca": "MOEACA (business certificate)",
        "key_usage": "Digital signature",
        "status": "Valid",
        "revocation": "Not revoked (source: CRL; checked {at})",
        "validity": "{start} to {end}",
        "accepted": ("Applicant types: ", "Customs certificate usage types: ", ", "),
        "start": ["Command line", "Started", "→ Applicant type"],
        "changes": [
            "Applicant type → Card check", "Card check → Basic data",
            "Basic data → Enterprise information", "Enterprise information → Awaiting approval",
        ],
        "step": ["Command line", "Step completed"],
        "card_diff": "revocation: crl_number=1, source=CRL, status=Not revoked",
        "ca_diff": "ca: MOEACA (business certificate)",
        "viewed": [f"Officer {REVIEWER_NAME}", "Viewed by an officer", ""],
        "what": "what: Registration",
        "via": "via: Web site (client ",
    },
}  # fmt: skip


@pytest.mark.parametrize("language", ["zh-TW", "en"])
def test_the_registration_detail_words_every_code(
    app: App,
    cards: dict[str, IssuedCard],
    company: tuple[IssuedCard, RegistrationView],
    language: str,
) -> None:
    """卡別 主卡, 金鑰用途 數位簽章, 廢止檢查 in words and Taiwan time, 可用於 by the types'
    labels, the trail's events, actors and states in words — the codes kept in data-."""
    card, view = company
    words = DETAIL[language]
    with client_of(app) as client:
        client.get(f"/officer?lang={language}")
        log_in(client, cards["reviewer"])
        shown = page(client.get(f"/officer/registrations/{view.id}"))

    assert shown.id("registration-type").text == words["type"]
    [rank] = by_data(shown, "dd", "identity", "card_rank")
    assert (rank.text, rank.get("data-code")) == (words["card_rank"], "primary")
    assert (shown.id("cert-ca").text, shown.id("cert-ca").get("data-ca")) == (words["ca"], "MOEACA")
    assert shown.id("cert-key-usage").text == words["key_usage"]
    assert [e.get("data-key-usage") for e in shown.id("cert-key-usage").find_all("span")] == [
        "digital_signature"
    ]
    assert shown.id("cert-status").text == words["status"]
    revocation = shown.id("cert-revocation")
    [checked] = revocation.find_all("time")
    at = datetime.fromisoformat(str(checked.get("datetime")))
    assert revocation.text == words["revocation"].format(at=taipei_time(at))
    assert (revocation.get("data-source"), revocation.get("data-status")) == ("crl", "good")
    assert shown.id("cert-validity").text == words["validity"].format(
        start=taipei_time(card.certificate.not_valid_before_utc),
        end=taipei_time(card.certificate.not_valid_after_utc),
    )
    accepted = app.catalog.accepting(
        IssuerCA.MOEACA, CertificateIdentity(ubn=UBN, card_rank="primary")
    )
    types_title, usages_title, separator = words["accepted"]
    label = "zh_tw" if language == "zh-TW" else "en"
    [types] = by_data(shown, "p", "group", "applicant_types")
    assert types.text == types_title + separator.join(
        getattr(a.labels, label)
        for code, a in app.catalog.applicant_types.items()
        if code in accepted
    )
    [usages] = by_data(shown, "p", "group", "usage_types")
    assert usages.text == usages_title + separator.join(
        getattr(u.labels, label) for code, u in app.catalog.usage_types.items() if code in accepted
    )
    [general] = by_data(shown, "span", "code", "enterprise.general")
    assert general.text == words["type"]
    [shipping] = by_data(shown, "span", "code", "shipping")
    assert shipping.text == (
        "船公司/代理業" if language == "zh-TW" else "Shipping company or agent"
    )

    [start] = by_data(shown, "tr", "event", "start")
    assert cells(start)[2:5] == words["start"]
    steps = by_data(shown, "tr", "event", "next")
    assert [cells(row)[2:4] for row in steps] == [words["step"]] * 4
    assert [cells(row)[4] for row in steps] == words["changes"]
    changes = [row.find_all("td")[4] for row in steps]
    assert [(cell.get("data-from"), cell.get("data-to")) for cell in changes] == [
        ("category", "card_check"), ("card_check", "basic_data"),
        ("basic_data", "enterprise_info"), ("enterprise_info", "approval"),
    ]  # fmt: skip
    assert words["card_diff"] in diff_items(steps[1]) and words["ca_diff"] in diff_items(steps[1])
    [viewed] = by_data(shown, "tr", "event", "officer_viewed")
    assert cells(viewed)[2:5] == words["viewed"]
    assert viewed.find_all("td")[2].get("data-actor") == f"officer:{REVIEWER_NAME}"
    assert words["what"] in diff_items(viewed)
    [via] = [item for item in diff_items(viewed) if item.startswith(words["via"])]
    assert re.fullmatch(re.escape(words["via"]) + r"[0-9a-f]{16}[）)]", via)
    assert language_problems(shown.html, language) == []


LISTS = {
    "zh-TW": {
        "queue": ["一般企業或組織團體", mask_account_name(UBN), "待審核"],
        "hit": ["一般企業或組織團體", "已啟用"],
        "login": ["主卡", "MOEACA（工商憑證）", "有效"],
        "customs": ["非IC卡類憑證", "通關專屬憑證", "簽章"],
        "policy": "廢止檢查政策：嚴格（無法確認廢止狀態時拒絕）",
        "anchor": "根憑證",
        "broken": "雜湊鏈有誤：第 2 筆（紀錄遭修改）。",
    },
    "en": {
        "queue": [
            "General enterprise or organisation",
            mask_account_name(UBN),
            "Awaiting approval",
        ],
        "hit": ["General enterprise or organisation", "Active"],
        "login": ["Primary card", "MOEACA (business certificate)", "Valid"],
        "customs": ["Non-IC certificate", "Customs-exclusive certificate", "Signing"],
        "policy": "Revocation policy: Hard (an unknown revocation status is refused)",
        "anchor": "Anchor",
        "broken": "The chain is broken at row 2 (the row was edited).",
    },
}


@pytest.mark.parametrize("language", ["zh-TW", "en"])
def test_the_queue_search_account_trust_and_audit_pages_word_their_codes(
    app: App,
    cards: dict[str, IssuedCard],
    company: tuple[IssuedCard, RegistrationView],
    trader: str,
    language: str,
) -> None:
    words = LISTS[language]
    shown = {
        k: Page(r.text)
        for k, r in console_pages(app, cards["admin"], language, company[1].id, trader).items()
    }

    [queued] = by_data(shown["queue"], "tr", "registration", company[1].id)
    assert cells(queued)[1:4] == words["queue"]
    [hit] = [row for row in shown["search"].all("tr") if row.get("data-account-id")]
    assert cells(hit)[1:3] == words["hit"]
    assert [e.get("data-state") for e in hit.find_all("td") if e.get("data-state")] == ["active"]
    [login] = shown["account"].id("login-certificates").find_all("tbody")[0].find_all("tr")
    assert [cells(login)[i] for i in (0, 1, 3)] == words["login"]
    [signing] = by_data(shown["account"], "tr", "usage-type", "shipping")
    assert cells(signing)[:3] == words["customs"]
    [subject] = [e.text for e in signing.find_all(translate="no")]
    assert subject.startswith("C=TW O=Finance") and subject.endswith("CN=12345670-06-000")
    policy = shown["trust"].id("policy")
    assert (policy.text, policy.get("data-policy")) == (words["policy"], "hard")
    anchors = shown["trust"].id("anchors").find_all("tr")
    assert {row.find_all("td")[1].text for row in anchors[1:]} >= {words["anchor"]}
    broken = shown["broken chain"].id("verify-result")
    assert (broken.text, broken.get("data-reason")) == (words["broken"], "edited row")


def test_every_code_a_console_page_may_show_has_both_wordings() -> None:
    """The events of a registration's trail (the workflow's, ``start`` and the console's
    ``officer_viewed``), every key usage a certificate parse names, every revocation status,
    source, reason and policy, every CA, card rank, account and certificate status."""
    from cryptography import x509

    from engine._settings import RevocationPolicy
    from engine.core.workflow import Event
    from engine.pki import certificate
    from engine.pki.revocation import RevocationSource, RevocationStatus
    from engine.services.accounts import ACTIVE, LOCKED, SUSPENDED

    usages = (*certificate._KEY_USAGE_NAMES, "encipher_only", "decipher_only")
    statuses = (
        "active", "expired", "replaced", "valid", "revoked", "not_yet_valid", "untrusted",
        "revocation_unknown",
    )  # fmt: skip
    reasons = ("missing row", "broken link", "edited row", "unexpected row", "row count mismatch")
    expected = {
        *(f"event_{code}" for code in (*Event, "start", "officer_viewed")),
        *(f"ku_{name}" for name in usages),
        *(f"revocation_status_{status}" for status in RevocationStatus),
        *(f"revocation_source_{source}" for source in RevocationSource),
        *(f"reason_{reason.name}" for reason in x509.ReasonFlags),
        *(f"policy_{policy}" for policy in RevocationPolicy),
        *(f"ca_{ca}" for ca in IssuerCA),
        *(f"cert_role_{rank}" for rank in ("primary", "secondary", "mobile", "card")),
        *(f"state_{state}" for state in (ACTIVE, SUSPENDED, LOCKED, "pending_activation")),
        *(f"cert_status_{status}" for status in statuses),
        *(f"audit_{reason}" for reason in reasons),
    }  # fmt: skip
    missing = expected - _pages_officer._TEXTS.keys()
    assert missing == set()
    for key in expected:
        labels = _pages_officer._TEXTS[key]
        assert labels.zh_tw and labels.en and not CJK.search(labels.en), key
        assert not ENGLISH_WORD.search(ACRONYM.sub("", labels.zh_tw)), key


def wording(language: Language, **states: Labels) -> Words:
    t = Translator(language)
    texts = {key: t.label(labels) for key, labels in _pages_officer._TEXTS.items()}
    return Words(t, texts, types={}, usages={}, states=states)


def test_a_code_nobody_worded_is_shown_as_it_is_marked_english_on_a_chinese_page() -> None:
    """A third party's event, state or actor: its code, marked ``lang="en"`` on a zh-TW page."""
    zh, en = wording("zh-TW", review=Labels("人工審查", "Manual review")), wording("en")
    assert str(zh.event("plugin_checked")) == '<span lang="en">plugin_checked</span>'
    assert str(en.event("plugin_checked")) == "plugin_checked"
    assert str(zh.state("review")) == "人工審查"
    assert str(zh.state("escalated")) == '<span lang="en">escalated</span>'
    assert str(zh.type("acme.trader")) == '<span lang="en">acme.trader</span>'
    assert str(zh.actor("system")) == "系統" and str(en.actor("cron")) == "cron"
    assert str(zh.actor("api:client=0123456789abcdef")) == (
        'API（用戶端 <span translate="no">0123456789abcdef</span>）'
    )
    assert str(en.actor("officer:林關員")) == 'Officer <span lang="zh-TW">林關員</span>'
    assert str(zh.ca("unknown")) == "不明的憑證機構" and str(en.ca("unknown")) == "Unknown CA"


def test_a_revoked_certificate_is_worded_with_its_reason_and_time() -> None:
    revoked = RevocationFacts(
        status="revoked", source="ocsp",
        checked_at=datetime(2026, 12, 7, 16, 30, tzinfo=UTC), reason="key_compromise",
        revoked_at=datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
    )  # fmt: skip
    unanswered = RevocationFacts(status="unknown", source="none", checked_at=None)

    def text(html: object) -> str:
        return Page(str(html)).text

    assert text(wording("zh-TW").revocation(revoked)) == (
        "已廢止，依據：線上憑證狀態查詢（OCSP），查詢時間 2026-12-08 00:30。"
        "廢止原因：金鑰洩露，廢止時間 2026-12-01 00:00"
    )
    assert text(wording("en").revocation(revoked)) == (
        "Revoked (source: OCSP; checked 2026-12-08 00:30). "
        "Reason: Key compromise; revoked 2026-12-01 00:00"
    )
    assert text(wording("zh-TW").revocation(unanswered)) == "無法確認，依據：無來源回應"
    assert text(wording("en").revocation(unanswered)) == "Unknown (source: none answered)"
    assert text(wording("zh-TW").key_usages(())) == "未限定"
    assert text(wording("en").key_usages(("digital_signature", "content_commitment"))) == (
        "Digital signature, Non-repudiation"
    )
