"""The account's own pages (issue 16) without a browser: /account and its forms, the e-mail
confirmation link, and the 忘記密碼 page's contract with password.js, in both languages.

Mail goes through a real SMTP server (the fixtures of tests/test_password_reset.py)."""
# ruff: noqa: F811 - the imported fixtures are parameters of the tests

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engine import App
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from tests.conftest import PERSON_ANSWERS
from tests.helpers import enrol
from tests.test_account_settings import api_login
from tests.test_mail import SmtpSink, body
from tests.test_password_reset import (  # noqa: F401 - app, links, person, smtp_sink: fixtures
    NEW,
    OLD_PASSWORD,
    PERSON,
    account_row,
    app,
    audit,
    links,
    password_is,
    person,
    smtp_sink,
)
from tests.test_renewal import ORIGIN, csrf

from .test_pages import page

LINK = re.compile(re.escape(ORIGIN) + r"/account/email/([A-Za-z0-9_-]{43})")


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app), base_url=ORIGIN) as test_client:
        yield test_client


def csrf_of(client: TestClient) -> str:
    return csrf(client)["X-CSRF-Token"]


def log_in(client: TestClient, card: IssuedCard) -> None:
    api_login(client, card, csrf(client))


def post(client: TestClient, url: str, **fields: str) -> object:
    return client.post(url, data={"csrf": csrf_of(client), **fields}, follow_redirects=False)


def test_without_a_login_the_account_page_sends_to_login(client: TestClient) -> None:
    response = client.get("/account", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login")


def test_the_account_page_shows_the_account_masked(client: TestClient, person: IssuedCard) -> None:
    log_in(client, person)

    parsed = page(client.get("/account"))

    assert parsed.id("account-name").text == PERSON
    assert parsed.id("account-state").text == "已啟用"
    assert parsed.id("account-email").text == "m**g@example.com"
    [row] = [r for r in parsed.id("certificates").find_all("tr") if r.has("data-fingerprint")]
    cells = [td.text for td in row.find_all("td")]
    assert cells[0:2] == ["憑證卡", "MOICA"] and cells[3] == "有效"
    [mine] = [r for r in parsed.id("sessions").find_all("tr") if r.has("data-session")]
    assert "（本裝置）" in mine.text and mine.get("class") == "current"
    assert parsed.id("renewal-link").get("href") == "/renewal"
    assert (
        parsed.id("password-by-card").get("href") == "/password/forgot?account=ming%40example.com"
    )
    for form_id, action in (
        ("password-form", "/account/password"),
        ("email-form", "/account/email"),
    ):
        form = parsed.id(form_id)
        assert form.get("method") == "post" and form.get("action") == action
        assert [i.get("name") for i in form.find_all("input", type="hidden")] == ["csrf"]
    english = page(client.get("/account?lang=en"))
    assert english.id("account-state").text == "Active"
    assert english.id("change-password").text == "Change password"


def test_change_the_password_on_the_page(
    client: TestClient, app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    log_in(client, person)

    wrong = post(client, "/account/password", current_password="Wr0ngPassword!", **NEW)
    parsed = page(wrong, 422)  # type: ignore[arg-type]
    assert parsed.id("error-current_password").text == "密碼錯誤"
    assert parsed.id("f-current_password").get("aria-invalid") == "true"
    assert account_row(app, PERSON).failed_passwords == 1
    weak = post(
        client, "/account/password", current_password=OLD_PASSWORD, password="short",
        password_confirm="short",
    )  # fmt: skip
    assert page(weak, 422).id("error-password").text  # type: ignore[arg-type]

    done = post(client, "/account/password", current_password=OLD_PASSWORD, **NEW)

    assert (done.status_code, done.headers["location"]) == (303, "/account?done=password")  # type: ignore[attr-defined]
    assert page(client.get("/account?done=password")).id("done").text.startswith("密碼已變更")
    assert password_is(app, PERSON, NEW["password"])
    assert len(audit(app, "password_changed")) == 1


def test_change_the_email_address_on_the_page(
    client: TestClient, app: App, person: IssuedCard, smtp_sink: SmtpSink
) -> None:
    log_in(client, person)
    bad = post(client, "/account/email", email="not-an-address", email_password=OLD_PASSWORD)
    parsed = page(bad, 422)  # type: ignore[arg-type]
    assert parsed.id("error-email").text == "電子郵件格式錯誤"
    assert parsed.id("f-email").get("value") == "not-an-address"

    wrong = page(
        post(client, "/account/email", email="hua@example.org", email_password="Wr0ng!pass"), 422
    )  # type: ignore[arg-type]
    assert wrong.id("error-email_password").text == "密碼錯誤"
    assert wrong.id("f-email_password").get("aria-invalid") == "true"
    asked = post(client, "/account/email", email="hua@example.org", email_password=OLD_PASSWORD)

    assert asked.headers["location"] == "/account?done=email"  # type: ignore[attr-defined]
    [token] = set(LINK.findall(body(smtp_sink.messages[-2])))
    confirm_page = page(client.get(f"/account/email/{token}"))
    assert account_row(app, PERSON).email == PERSON  # opening the link changes nothing
    form = confirm_page.id("email-confirm-form")
    assert form.get("action") == f"/account/email/{token}"
    confirmed = page(client.post(form.get("action"), data={"csrf": csrf_of(client)}))
    assert PERSON in confirmed.id("email-changed").text
    assert account_row(app, PERSON).email == "hua@example.org"
    again = page(client.post(form.get("action"), data={"csrf": csrf_of(client)}), 422)
    assert again.id("error-token").text


def test_log_out_everywhere_on_the_page(client: TestClient, app: App, person: IssuedCard) -> None:
    log_in(client, person)
    other = TestClient(create_app(app), base_url=ORIGIN)
    log_in(other, person)

    ended = post(client, "/account/logout-all")

    assert ended.headers["location"] == "/login"  # type: ignore[attr-defined]
    assert client.get("/account", follow_redirects=False).status_code == 303
    assert other.get("/account", follow_redirects=False).status_code == 303
    [(_actor, _b, _a, diff)] = audit(app, "logout_all")
    assert diff["sessions_ended"] == 2


def test_the_forgot_password_page(client: TestClient, app: App) -> None:
    parsed = page(client.get("/password/forgot?account=ming@example.com"))

    assert parsed.id("f-account").get("value") == "ming@example.com"
    for name in ("password", "password_confirm"):
        field = parsed.id(f"f-{name}")
        assert field.get("type") == "password" and field.get("autocomplete") == "new-password"
    pin = parsed.id("pin")
    assert pin.get("type") == "password" and not pin.has("name")
    for name in ("error-account", "error-password", "error-password_confirm", "error-pin"):
        assert parsed.id(name).get("role") == "alert" and parsed.id(name).has("hidden")
    sources = [s.get("src") for s in parsed.all("script") if s.get("src")]
    assert sources[-3:] == ["/static/agent.js", "/static/hipki.js", "/static/password.js"]
    assert parsed.all("body")[0].get("data-agent-url") == app.settings.agent_url
    menu = parsed.all("nav", class_="side-menu")[0]
    [item] = [a for a in menu.find_all("a") if a.get("href") == "/password/forgot"]
    assert (item.text, item.get("aria-current")) == ("忘記密碼", "page")
    english = page(client.get("/password/forgot?lang=en"))
    assert english.id("reset").text == "Reset password"
    fallback = post(client, "/password/forgot")
    assert fallback.headers["location"] == "/password/forgot"  # type: ignore[attr-defined]
    served = client.get("/static/password.js")
    assert served.status_code == 200 and "/api/password-reset" in served.text


# -- 忘記密碼 by a mailed link (SWREG_PASSWORD_RESET=card,email) --------------------------------

RESET_LINK = re.compile(re.escape(ORIGIN) + r"/password/reset/([A-Za-z0-9_-]{43})")


def test_without_the_setting_the_page_offers_only_the_card(client: TestClient) -> None:
    parsed = page(client.get("/password/forgot"))
    assert not any(e.get("id") == "by-email" for e in parsed.all("section"))


def test_a_reset_by_mailed_link_on_the_pages(links: App, pki: TestPKI, smtp_sink: SmtpSink) -> None:
    enrol(links, "person.general", pki.issue_person("王小明", "6789"), PERSON_ANSWERS)
    links.accounts.activate(links.accounts.send_activation(PERSON))
    with TestClient(create_app(links), base_url=ORIGIN) as client:
        form = page(client.get("/password/forgot")).id("email-reset-form")
        assert form.get("action") == "/password/forgot/email"
        sent = len(smtp_sink.messages)

        unknown = page(
            client.post(
                form.get("action"), data={"csrf": csrf_of(client), "account": "x@example.com"}
            )
        )  # type: ignore[arg-type]
        known = page(
            client.post(form.get("action"), data={"csrf": csrf_of(client), "account": PERSON})
        )  # type: ignore[arg-type]

        assert unknown.id("link-sent").text == known.id("link-sent").text  # the same answer
        assert len(smtp_sink.messages) == sent + 1
        [token] = set(RESET_LINK.findall(body(smtp_sink.messages[-1])))
        url = f"/password/reset/{token}"
        assert page(client.get(url)).id("link-reset-form").get("action") == url
        assert password_is(links, PERSON, OLD_PASSWORD)  # opening the link changes nothing
        weak = client.post(
            url, data={"csrf": csrf_of(client), "password": "short", "password_confirm": "short"}
        )
        assert page(weak, 422).id("error-password").text  # type: ignore[arg-type]

        done = page(client.post(url, data={"csrf": csrf_of(client), **NEW}))

        assert PERSON in done.id("reset-done").text
        assert password_is(links, PERSON, NEW["password"])
        again = page(client.post(url, data={"csrf": csrf_of(client), **NEW}), 422)
        assert again.id("error-token").text == "此連結無效或已使用過"
