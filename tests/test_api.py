"""The JSON API over the ASGI app: whole registrations, refusals, CSRF, limits and headers.

Cards are the test PKI's; the tests sign the server's challenge the way the page's script has
the local card agent do it.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from engine import App, FixedClock, Settings, bootstrap, challenge_payload
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS
from .helpers import accounts

UBN = "04595257"


# -- helpers -----------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def csrf(client: TestClient) -> dict[str, str]:
    """Fetch a CSRF token (the cookie comes with it) and return the header that carries it."""
    response = client.get("/api/csrf")
    assert response.status_code == 200
    return {"X-CSRF-Token": response.json()["token"]}


def signed(card: IssuedCard, challenge: dict[str, Any]) -> dict[str, Any]:
    """What the agent hands back for a challenge: certificate, chain and signature."""
    return {
        "challenge_id": challenge["challenge_id"],
        "certificate": b64(card.der()),
        "signature": b64(card.sign(base64.b64decode(challenge["payload"]))),
        "chain": [b64(der) for der in card.chain_der()],
    }


def start(client: TestClient, type_code: str, **body: Any) -> httpx.Response:
    payload = {"type": type_code, "consent": True, **body}
    response: httpx.Response = client.post("/api/registrations", json=payload, headers=csrf(client))
    return response


def card_check(client: TestClient, registration_id: str, card: IssuedCard) -> httpx.Response:
    headers = csrf(client)
    challenge = client.post(f"/api/registrations/{registration_id}/challenge", headers=headers)
    assert challenge.status_code == 200, challenge.text
    response: httpx.Response = client.post(
        f"/api/registrations/{registration_id}/card",
        json=signed(card, challenge.json()),
        headers=headers,
    )
    return response


def register(
    client: TestClient, type_code: str, card: IssuedCard, answers: dict[str, Any]
) -> dict[str, Any]:
    """A whole registration through the API: start, card check, every form step."""
    view = start(client, type_code).json()
    response = card_check(client, view["id"], card)
    assert response.status_code == 200, response.text
    view = response.json()
    while view["state"] != "completed":
        response = client.post(
            f"/api/registrations/{view['id']}/step", json=answers, headers=csrf(client)
        )
        assert response.status_code == 200, response.text
        view = response.json()
    result: dict[str, Any] = view
    return result


def error(response: httpx.Response) -> dict[str, Any]:
    """The first error of an error response (and a check of the shape of all of them)."""
    body = response.json()
    assert set(body) == {"errors"}
    for item in body["errors"]:
        assert {"field", "code", "message"} <= set(item)
    first: dict[str, Any] = body["errors"][0]
    return first


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


@pytest.fixture
def person_card(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("王小明", "6789")


# -- whole registrations -----------------------------------------------------------------------


def test_a_person_registers_through_the_json_api_alone(
    client: TestClient, app: App, person_card: IssuedCard
) -> None:
    response = start(client, "person.general")
    assert response.status_code == 201
    view = response.json()
    assert view["state"] == "card_check"
    assert view["path"] == ["category", "card_check", "basic_data", "completed"]  # 4 steps
    assert view["step_number"] == 2
    assert set(view) == {
        "id", "state", "applicant_type", "chosen_type", "path", "step_number", "data",
        "locked", "account", "expires_at", "identity",
    }  # fmt: skip

    headers = csrf(client)
    challenge = client.post(f"/api/registrations/{view['id']}/challenge", headers=headers).json()
    assert set(challenge) == {"challenge_id", "nonce", "origin", "payload", "expires_at"}
    assert challenge["origin"] == app.settings.public_origin
    assert base64.b64decode(challenge["payload"]) == challenge_payload(
        app.settings.public_origin, view["id"], bytes.fromhex(challenge["nonce"])
    )
    checked = client.post(
        f"/api/registrations/{view['id']}/card",
        json=signed(person_card, challenge),
        headers=headers,
    )
    assert checked.status_code == 200, checked.text
    view = checked.json()
    assert (view["state"], view["step_number"]) == ("basic_data", 3)
    assert view["locked"] == ["contact_name"]
    assert view["data"]["contact_name"] == "王小明"
    assert view["identity"] == {"name": "王小明", "id_last4": "6789"}

    done = client.post(
        f"/api/registrations/{view['id']}/step", json=PERSON_ANSWERS, headers=headers
    )
    assert done.status_code == 200, done.text
    view = done.json()
    assert (view["state"], view["account"], view["step_number"]) == (
        "completed",
        "m**g@example.com",  # an ended registration shows its account masked (§6)
        4,
    )
    assert view["data"] == {}
    assert not any(key.startswith("password") for key in view["data"])
    [account] = accounts(app)
    assert (account.name, account.status) == ("ming@example.com", "pending_activation")
    assert client.get(f"/api/registrations/{view['id']}").json()["state"] == "completed"


def test_a_company_registers_through_the_json_api_alone(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    view = start(client, "enterprise.general").json()
    assert view["path"] == ["category", "card_check", "basic_data", "enterprise_info", "completed"]
    view = card_check(client, view["id"], pki.issue_company(UBN)).json()
    assert (view["state"], view["locked"], view["data"]["ubn"]) == ("basic_data", ["ubn"], UBN)
    headers = csrf(client)
    basic = client.post(
        f"/api/registrations/{view['id']}/step", json=COMPANY_ANSWERS, headers=headers
    )
    assert (basic.status_code, basic.json()["state"]) == (200, "enterprise_info")
    assert basic.json()["account"] == UBN
    info = client.post(
        f"/api/registrations/{view['id']}/step",
        json={"company_name": "測試貿易股份有限公司"},
        headers=headers,
    )
    assert info.status_code == 200, info.text
    assert (info.json()["state"], info.json()["account"], info.json()["step_number"]) == (
        "completed",
        UBN,
        5,
    )
    assert [a.name for a in accounts(app)] == [UBN]


def test_back_and_cancel_through_the_api(client: TestClient, person_card: IssuedCard) -> None:
    view = start(client, "person.general").json()
    card_check(client, view["id"], person_card)
    headers = csrf(client)
    back = client.post(f"/api/registrations/{view['id']}/back", headers=headers)
    assert (back.status_code, back.json()["state"], back.json()["locked"]) == (
        200,
        "card_check",
        [],
    )
    cancelled = client.post(f"/api/registrations/{view['id']}/cancel", headers=headers)
    assert cancelled.json()["state"] == "cancelled"
    again = client.post(f"/api/registrations/{view['id']}/challenge", headers=headers)
    assert again.status_code == 422
    assert error(again) == {  # the message in one language; the operator's detail on its own
        "field": None,
        "code": "invalid_transition",
        "message": "目前步驟不可執行此操作",
        "detail": "the registration is at 'cancelled', not 'card_check'",
    }


def test_the_signed_origin_is_the_public_origin_never_the_host_header(
    client: TestClient, app: App
) -> None:
    view = start(client, "person.general").json()
    challenge = client.post(  # Host: testserver, an allowed host that is not the origin's
        f"/api/registrations/{view['id']}/challenge", headers=csrf(client)
    ).json()
    assert challenge["origin"] == app.settings.public_origin == "http://127.0.0.1:8000"
    foreign = client.post(
        f"/api/registrations/{view['id']}/challenge",
        headers={**csrf(client), "Host": "evil.example"},
    )
    assert (foreign.status_code, error(foreign)["code"]) == (400, "bad_request")


# -- refusals ----------------------------------------------------------------------------------


def test_an_invalid_ubn_is_refused_with_its_field_and_code(
    client: TestClient, pki: TestPKI
) -> None:
    view = start(client, "enterprise.general").json()
    view = card_check(client, view["id"], pki.issue_company(UBN)).json()
    answers = {**COMPANY_ANSWERS, "ubn": "12345678"}
    refused = client.post(
        f"/api/registrations/{view['id']}/step", json=answers, headers=csrf(client)
    )
    assert refused.status_code == 422
    codes = {(e["field"], e["code"]) for e in refused.json()["errors"]}
    assert ("ubn", "invalid_ubn") in codes
    assert error(refused)["message"]


def test_a_form_error_lists_every_bad_field(client: TestClient, person_card: IssuedCard) -> None:
    view = start(client, "person.general").json()
    card_check(client, view["id"], person_card)
    answers = {**PERSON_ANSWERS, "email": "not-an-email", "password_confirm": "Other0pass"}
    refused = client.post(
        f"/api/registrations/{view['id']}/step", json=answers, headers=csrf(client)
    )
    assert refused.status_code == 422
    fields = {(e["field"], e["code"]) for e in refused.json()["errors"]}
    assert {("email", "invalid_email"), ("password_confirm", "password_mismatch")} <= fields


def test_an_already_registered_card_is_refused_with_409(
    client: TestClient, person_card: IssuedCard
) -> None:
    register(client, "person.general", person_card, PERSON_ANSWERS)
    view = start(client, "person.general").json()
    refused = card_check(client, view["id"], person_card)
    assert refused.status_code == 409
    assert error(refused)["code"] == "already_registered"
    assert error(refused)["message"] == "您已註冊本系統，系統將為您導回首頁"


def test_step_one_refusals(client: TestClient) -> None:
    headers = csrf(client)
    no_consent = client.post("/api/registrations", json={"type": "person.general"}, headers=headers)
    assert (no_consent.status_code, error(no_consent)["field"], error(no_consent)["code"]) == (
        422,
        "consent",
        "consent_required",
    )
    iot = start(client, "person.general", iot=True)
    assert (iot.status_code, error(iot)["field"], error(iot)["code"]) == (
        422,
        "iot",
        "iot_not_allowed",
    )
    unknown = start(client, "person.astronaut")
    assert (unknown.status_code, error(unknown)["code"]) == (422, "unknown_type")
    missing = client.post("/api/registrations", json={"consent": True}, headers=headers)
    assert (missing.status_code, error(missing)["field"], error(missing)["code"]) == (
        422,
        "type",
        "field_required",
    )
    garbage = client.post(
        "/api/registrations",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert (garbage.status_code, error(garbage)["code"]) == (422, "invalid_value")
    assert start(client, "enterprise.shipping", iot=True).status_code == 201


def test_bad_base64_and_a_wrong_signature_are_refused(
    client: TestClient, person_card: IssuedCard, pki: TestPKI
) -> None:
    view = start(client, "person.general").json()
    headers = csrf(client)
    url = f"/api/registrations/{view['id']}"
    challenge = client.post(f"{url}/challenge", headers=headers).json()
    body = {**signed(person_card, challenge), "certificate": "***"}
    refused = client.post(f"{url}/card", json=body, headers=headers)
    assert (refused.status_code, error(refused)["field"]) == (422, "certificate")
    challenge = client.post(f"{url}/challenge", headers=headers).json()
    other = pki.issue_person("王小明", "6789")
    forged = {**signed(person_card, challenge), "signature": signed(other, challenge)["signature"]}
    refused = client.post(f"{url}/card", json=forged, headers=headers)
    assert (refused.status_code, error(refused)["code"]) == (422, "signature_invalid")
    replayed = client.post(f"{url}/card", json=signed(person_card, challenge), headers=headers)
    assert error(replayed)["code"] == "challenge_used"


def test_an_unknown_registration_is_404(client: TestClient) -> None:
    missing = client.get("/api/registrations/00000000-0000-0000-0000-000000000000")
    assert (missing.status_code, error(missing)["code"]) == (404, "registration_not_found")
    nowhere = client.get("/api/nowhere")
    assert (nowhere.status_code, error(nowhere)["code"]) == (404, "not_found")


def test_an_idle_registration_expires(
    client: TestClient, clock: FixedClock, person_card: IssuedCard
) -> None:
    from datetime import timedelta

    view = start(client, "person.general").json()
    clock.advance(timedelta(hours=1))
    refused = client.post(f"/api/registrations/{view['id']}/challenge", headers=csrf(client))
    assert (refused.status_code, error(refused)["code"]) == (422, "registration_expired")
    assert client.get(f"/api/registrations/{view['id']}").json()["state"] == "expired"


# -- 檢核是否存在 --------------------------------------------------------------------------------


def test_check_account_says_free_or_taken(client: TestClient, person_card: IssuedCard) -> None:
    free = client.get("/api/accounts/check", params={"name": "ming@example.com"})
    assert free.status_code == 200
    assert free.json() == {"available": True, "message": "此帳號可使用"}
    register(client, "person.general", person_card, PERSON_ANSWERS)
    taken = client.get("/api/accounts/check", params={"name": "Ming@Example.com"})
    assert (taken.status_code, error(taken)["code"], error(taken)["message"]) == (
        409,
        "account_exists",
        "用戶姓名已存在",
    )
    empty = client.get("/api/accounts/check", params={"name": " "})
    assert (empty.status_code, error(empty)["code"]) == (422, "field_required")


def test_messages_follow_the_language(client: TestClient) -> None:
    free = client.get(
        "/api/accounts/check", params={"name": "x@example.com"}, headers={"Accept-Language": "en"}
    )
    assert free.json()["message"] == "This account is available"
    refused = client.post(
        "/api/registrations?lang=en", json={"type": "person.general"}, headers=csrf(client)
    )
    assert error(refused)["message"] == "You must read and accept the data-use statement"
    assert client.cookies["lang"] == "en"  # ?lang= is remembered...
    english = client.post(
        "/api/registrations", json={"type": "person.general"}, headers=csrf(client)
    )
    assert error(english)["message"].startswith("You must")
    client.cookies.delete("lang")  # ...until the cookie goes; then Accept-Language decides
    chinese = client.post(
        "/api/registrations",
        json={"type": "person.general"},
        headers={**csrf(client), "Accept-Language": "zh-TW,en;q=0.5"},
    )
    assert error(chinese)["message"] == "請勾選「我已經詳細閱讀並同意資料使用聲明」"


# -- security ----------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(client: TestClient) -> None:
    body = {"type": "person.general", "consent": True}
    no_cookie = TestClient(client.app).post("/api/registrations", json=body)
    assert (no_cookie.status_code, error(no_cookie)["code"]) == (403, "csrf_failed")
    csrf(client)  # the cookie is set, the header is not sent
    no_header = client.post("/api/registrations", json=body)
    assert (no_header.status_code, error(no_header)["code"]) == (403, "csrf_failed")
    wrong = client.post("/api/registrations", json=body, headers={"X-CSRF-Token": "x" * 43})
    assert (wrong.status_code, error(wrong)["code"]) == (403, "csrf_failed")
    assert client.post("/api/registrations", json=body, headers=csrf(client)).status_code == 201


def test_the_csrf_cookie_is_set_once_and_the_page_carries_its_token(client: TestClient) -> None:
    response = client.get("/api/csrf")
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith("csrf=")]
    assert "SameSite=Strict" in cookie and "HttpOnly" in cookie and "Secure" not in cookie
    token = response.json()["token"]
    assert cookie.startswith(f"csrf={token};")
    again = client.get("/")  # the cookie holds an issued token: it stays as it is
    assert not any(c.startswith("csrf=") for c in again.headers.get_list("set-cookie"))
    assert f'<meta name="csrf-token" content="{token}">' in again.text


def test_cookies_are_secure_when_the_portal_is_https(settings: Settings, app: App) -> None:
    secure = replace(app, settings=replace(settings, public_origin="https://portal.example"))
    with TestClient(create_app(secure), base_url="https://portal.example") as client:
        response = client.get("/api/csrf")
        cookies = response.headers.get_list("set-cookie")
        [cookie] = [c for c in cookies if c.startswith("__Host-csrf=")]
        assert cookie == f"__Host-csrf={response.json()['token']}; Path=/; SameSite=Strict; " + (
            "HttpOnly; Secure"
        )


def test_an_oversized_body_is_refused_with_413(client: TestClient) -> None:
    headers = csrf(client)
    big = {"type": "person.general", "consent": True, "padding": "x" * 70_000}
    declared = client.post("/api/registrations", json=big, headers=headers)
    assert (declared.status_code, error(declared)["code"]) == (413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is counted
        yield b'{"type": "person.general", "consent": true, "padding": "'
        for _ in range(20):
            yield b"y" * 4096
        yield b'"}'

    streamed = client.post(
        "/api/registrations",
        content=chunks(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert (streamed.status_code, error(streamed)["code"]) == (413, "request_too_large")
    small = client.post("/api/registrations", json={**big, "padding": "x"}, headers=headers)
    assert small.status_code == 201


def test_the_account_check_is_rate_limited(client: TestClient) -> None:
    statuses = [
        client.get("/api/accounts/check", params={"name": "x@example.com"}).status_code
        for _ in range(31)
    ]
    assert statuses[:30] == [200] * 30
    limited = client.get("/api/accounts/check", params={"name": "x@example.com"})
    assert (limited.status_code, error(limited)["code"]) == (429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1


def test_starting_registrations_is_rate_limited(client: TestClient) -> None:
    codes = [start(client, "person.general").status_code for _ in range(21)]
    assert codes[:20] == [201] * 20 and codes[20] == 429


def test_security_headers_are_on_every_response(client: TestClient) -> None:
    for response in (
        client.get("/"),
        client.get("/register"),
        client.get("/api/csrf"),
        client.get("/static/style.css"),
        client.get("/api/registrations/nope"),
        client.get("/no/such/page"),
        client.post("/api/registrations", json={}),
    ):
        headers = response.headers
        csp = headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ):
            assert directive in csp
        assert "ws://127.0.0.1:*" in csp and "http://localhost:61161" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-frame-options"] == "DENY"


def test_the_csp_lets_the_page_reach_the_configured_agent(settings: Settings, app: App) -> None:
    moved = replace(app, settings=replace(settings, agent_url="wss://agent.example:9443/"))
    with TestClient(create_app(moved)) as client:
        assert "wss://agent.example:9443" in client.get("/").headers["content-security-policy"]


def test_openapi_lists_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/api/csrf", "get"),
        ("/api/registrations", "post"),
        ("/api/registrations/{registration_id}", "get"),
        ("/api/registrations/{registration_id}/challenge", "post"),
        ("/api/registrations/{registration_id}/card", "post"),
        ("/api/registrations/{registration_id}/step", "post"),
        ("/api/registrations/{registration_id}/back", "post"),
        ("/api/registrations/{registration_id}/cancel", "post"),
        ("/api/accounts/check", "get"),
        ("/api/login/challenge", "post"),
        ("/api/login", "post"),
        ("/api/logout", "post"),
        ("/api/session", "get"),
        ("/api/activate", "post"),
        ("/api/password-reset/challenge", "post"),
        ("/api/password-reset", "post"),
        ("/api/password-reset/email", "post"),
        ("/api/password-reset/link", "post"),
        ("/api/account", "get"),
        ("/api/account/password", "post"),
        ("/api/account/email", "post"),
        ("/api/account/email/confirm", "post"),
        ("/api/registrations/{registration_id}/mobile-id", "post"),
        ("/api/registrations/{registration_id}/mobile-id/poll", "post"),
        ("/api/login/mobile-id", "post"),
        ("/api/login/mobile-id/poll", "post"),
        ("/api/password-reset/mobile-id", "post"),
        ("/api/password-reset/mobile-id/poll", "post"),
    ]:
        assert method in paths[path], path
    assert not any(not p.startswith("/api/") for p in paths)  # pages stay out of the API


def test_no_error_body_carries_a_traceback(
    client: TestClient, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    responses = [
        client.get("/api/registrations/nope"),
        client.post("/api/registrations", json={}),
        client.post("/api/registrations", json={}, headers=csrf(client)),
        client.post("/api/registrations", content=b"[", headers=csrf(client)),
        client.get("/api/nowhere"),
        client.put("/api/csrf"),
    ]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.registrations, "status", broken)
    quiet = TestClient(client.app, raise_server_exceptions=False)
    internal = quiet.get("/api/registrations/some-id")
    assert (internal.status_code, error(internal)["code"]) == (500, "internal_error")
    assert internal.headers["x-frame-options"] == "DENY"
    page = quiet.get("/register/some-id")
    assert page.status_code == 500 and "secret internal detail" not in page.text
    for response in [*responses, internal, page]:
        assert response.status_code >= 400
        assert "Traceback" not in response.text
        assert "secret internal detail" not in response.text
        assert 'File "' not in response.text


def test_blocking_work_runs_off_the_event_loop(
    client: TestClient, app: App, person_card: IssuedCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The /api routes are ``async``: each hands its service call and its rate-limit hit to the
    thread pool (one trip), none of them runs on the event loop."""
    called: set[str] = set()
    on_loop: list[str] = []

    def watched(name: str, function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            called.add(name)
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # a worker thread: no loop runs here
                pass
            else:
                on_loop.append(name)
            return function(*args, **kwargs)

        return call

    for attribute in ("registrations", "logins", "accounts", "limits"):
        service = getattr(app, attribute)
        for name, _ in inspect.getmembers(type(service), inspect.isfunction):
            if not name.startswith("_"):
                bound = getattr(service, name)
                monkeypatch.setattr(service, name, watched(f"{attribute}.{name}", bound))

    headers = csrf(client)
    view = start(client, "person.general").json()
    client.get(f"/api/registrations/{view['id']}")
    assert card_check(client, view["id"], person_card).status_code == 200
    step = f"/api/registrations/{view['id']}/step"
    client.post(step, json={"email": "not-an-email"}, headers=headers)
    client.post(f"/api/registrations/{view['id']}/back", headers=headers)
    client.post(f"/api/registrations/{view['id']}/cancel", headers=headers)
    client.get("/api/accounts/check", params={"name": "ming@example.com"})
    challenge = client.post("/api/login/challenge", headers=headers).json()
    client.post("/api/login", json=signed(person_card, challenge), headers=headers)  # no account
    client.cookies.set("swreg_session", "x" * 43)
    client.get("/api/session")
    client.post("/api/logout", headers=headers)
    client.post("/api/activate", json={"token": "no-such-token"}, headers=headers)

    assert on_loop == []
    assert {
        "registrations.start",
        "registrations.status",
        "registrations.issue_challenge",
        "registrations.submit_card",
        "registrations.submit",
        "registrations.back",
        "registrations.cancel",
        "registrations.check_account",
        "logins.issue_challenge",
        "logins.login",
        "logins.session",
        "logins.logout",
        "accounts.activate",
        "limits.hit",
    } <= called


# -- activation and login (need app.accounts, app.logins and the demo mailer) ------------------


@pytest.fixture
def demo_app(settings: Settings, clock: FixedClock, pki: TestPKI) -> Iterator[App]:
    application = bootstrap(replace(settings, demo=True), clock=clock)
    pki.publish_to(application.trust, actor="test")
    yield application
    application.close()


def activation_token(app: App, address: str) -> str:
    mailer: Any = app.mailer
    [mail] = [m for m in mailer.messages() if address in str(m["To"])]
    body = mail.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"/activate/([A-Za-z0-9_\-.~]+)", body)
    assert found, body
    return found.group(1)


def login(client: TestClient, card: IssuedCard) -> httpx.Response:
    headers = csrf(client)
    challenge = client.post("/api/login/challenge", headers=headers)
    assert challenge.status_code == 200, challenge.text
    assert challenge.json()["origin"] == "http://127.0.0.1:8000"
    response: httpx.Response = client.post(
        "/api/login", json=signed(card, challenge.json()), headers=headers
    )
    return response


def test_activate_then_log_in_with_the_card_and_out(demo_app: App, person_card: IssuedCard) -> None:
    with TestClient(create_app(demo_app)) as client:
        register(client, "person.general", person_card, PERSON_ANSWERS)
        inactive = login(client, person_card)
        assert (inactive.status_code, error(inactive)["code"]) == (422, "account_inactive")

        token = activation_token(demo_app, "ming@example.com")
        activated = client.post("/api/activate", json={"token": token}, headers=csrf(client))
        assert activated.json() == {"account": "ming@example.com"}
        again = client.post("/api/activate", json={"token": token}, headers=csrf(client))
        assert (again.status_code, error(again)["code"]) == (422, "activation_invalid")

        logged_in = login(client, person_card)
        assert logged_in.status_code == 200, logged_in.text
        assert logged_in.json()["account"] == "ming@example.com"
        assert logged_in.json()["applicant_type"] == "person.general"
        [cookie] = [
            c for c in logged_in.headers.get_list("set-cookie") if c.startswith("swreg_session=")
        ]
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        session = client.get("/api/session")
        assert (session.status_code, session.json()["account"]) == (200, "ming@example.com")

        out = client.post("/api/logout", headers=csrf(client))
        assert out.status_code == 200
        after = client.get("/api/session")
        assert (after.status_code, error(after)["code"]) == (403, "not_authorized")


def test_an_unregistered_card_cannot_log_in(client: TestClient, pki: TestPKI) -> None:
    refused = login(client, pki.issue_person("陳小華", "1234"))
    assert (refused.status_code, error(refused)["code"]) == (422, "not_registered")


def test_no_session_is_not_authorized(client: TestClient) -> None:
    response = client.get("/api/session")
    assert (response.status_code, error(response)["code"]) == (403, "not_authorized")


def test_a_bad_activation_token_is_refused(client: TestClient) -> None:
    refused = client.post("/api/activate", json={"token": "nope"}, headers=csrf(client))
    assert (refused.status_code, error(refused)["code"]) == (422, "activation_invalid")
