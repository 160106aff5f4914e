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
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from engine import App, FixedClock, RegistrationView, SwregError
from engine.services.officers import OfficerView
from engine.store import Account, AuditEntry, OfficerSession
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS
from .helpers import count, enrol
from .test_approval import (  # noqa: F401 - apps: a fixture
    Apps,
    apps,
    walk,
    with_approval,
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
    assert 'id="cert-ca">MOEACA<' in page and 'id="cert-status" data-status="valid">' in page
    assert re.search(r'<ol id="cert-chain"><li>[^<]+</li><li>', page)
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
    assert f"<code>{app.revocation_checks.policy.value}</code>" in page


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
