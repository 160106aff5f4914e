"""The 憑證更換作業 page: the UI contract renewal.js works on (ids, names, labels), in both
languages, with and without a card login; and the calls renewal.js makes, as it makes them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from engine import App
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from tests.conftest import COMPANY_ANSWERS
from tests.helpers import enrol

from .test_pages import Page, b64, csrf_of, page
from .test_renewal import UBN, activate, fingerprint

RENEWAL = "/renewal"


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


@pytest.fixture
def company(app: App, pki: TestPKI) -> IssuedCard:
    """A registered and activated 工商憑證 (account 04595257)."""
    card = pki.issue_company(UBN)
    enrol(app, "enterprise.general", card, COMPANY_ANSWERS)
    activate(app, UBN)
    return card


def signed(client: TestClient, url: str, card: IssuedCard) -> dict[str, object]:
    """A challenge from ``url`` signed by ``card``, as the agent's ``sign`` answers it."""
    headers = {"X-CSRF-Token": csrf_of(client)}
    challenge = client.post(url, headers=headers).json()
    return {
        "challenge_id": challenge["challenge_id"],
        "certificate": b64(card.der()),
        "signature": b64(card.sign(base64.b64decode(challenge["payload"]))),
        "chain": [b64(c) for c in card.chain_der()],
    }


def log_in(client: TestClient, card: IssuedCard) -> None:
    """What card.js does on /login: the session cookie lands in the client."""
    headers = {"X-CSRF-Token": csrf_of(client)}
    body = signed(client, "/api/login/challenge", card)
    response = client.post("/api/login", json=body, headers=headers)
    assert response.status_code == 200, response.text


def assert_card_controls(parsed: Page, app: App) -> None:
    assert parsed.all("body")[0].get("data-agent-url") == app.settings.agent_url
    assert parsed.id("reader").tag == "select"
    assert parsed.id("detect-readers").tag == "button"
    assert parsed.id("detect-readers").get("type") == "button"
    pin = parsed.id("pin")
    assert pin.get("type") == "password" and not pin.has("name")
    assert parsed.id("replace").tag == "button"
    for name in ("error-pin", "error-card", "error-account"):
        assert parsed.id(name).get("role") == "alert" and parsed.id(name).has("hidden")
    renewed = parsed.id("renewed")
    assert renewed.get("role") == "status" and renewed.has("hidden")
    assert parsed.id("agent-missing").has("hidden")


def assert_only_the_scripts(parsed: Page) -> None:
    sources = [s.get("src") for s in parsed.all("script") if s.get("src")]
    assert "/static/renewal.js" in sources and "/static/wizard.js" in sources
    for script in parsed.all("script"):
        assert script.get("src") or script.get("type") == "application/json"
    assert not parsed.all("style") and "style=" not in parsed.html


def test_the_renewal_page_renders_the_contract(client: TestClient, app: App) -> None:
    parsed = page(client.get(RENEWAL))
    assert parsed.all("html")[0].get("lang") == "zh-TW"
    assert parsed.all("h1")[0].text == "憑證更換作業"
    assert_card_controls(parsed, app)
    account, password = parsed.id("f-account"), parsed.id("f-password")
    assert (account.get("type"), account.get("name")) == ("text", "account")
    assert (password.get("type"), password.get("name")) == ("password", "password")
    assert parsed.label_for("f-account").text == "帳號"
    assert parsed.label_for("f-password").text == "密碼"
    assert parsed.id("replace").text == "憑證更換"
    assert "憑證更換作業尚未開放" not in parsed.text
    assert not parsed.has_id("account-name")
    assert_only_the_scripts(parsed)
    current = [
        a.get("href")
        for a in parsed.all("nav", class_="side-menu")[0].find_all("a")
        if a.get("aria-current") == "page"
    ]
    assert current == [RENEWAL]


def test_the_renewal_page_in_english(client: TestClient, app: App) -> None:
    parsed = page(client.get(f"{RENEWAL}?lang=en"))
    assert parsed.all("html")[0].get("lang") == "en"
    assert parsed.all("h1")[0].text == "Certificate renewal"
    assert_card_controls(parsed, app)
    assert parsed.label_for("f-account").text == "Account"
    assert parsed.label_for("f-password").text == "Password"
    assert parsed.id("replace").text == "Replace card"
    assert_only_the_scripts(parsed)


def test_the_script_gets_its_messages(client: TestClient) -> None:
    data = page(client.get(RENEWAL)).id("swreg-data")
    assert data.get("type") == "application/json"
    messages = json.loads(data.text)["messages"]
    assert messages["renewed"] == "憑證更換完成"
    assert messages["pin_incorrect"] and messages["field_required"]
    english = json.loads(page(client.get(f"{RENEWAL}?lang=en")).id("swreg-data").text)
    assert english["messages"]["renewed"] == "The card was replaced"


def test_the_script_is_served(client: TestClient) -> None:
    response = client.get("/static/renewal.js")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"]
    script = response.text
    for needed in ("/api/renewal/challenge", '"/api/renewal"', "swreg.Bridge"):
        assert needed in script
    bridges = client.get("/static/agent.js").text + client.get("/static/hipki.js").text
    for needed in ('"sign"', "list_readers", '"MakeSignature"'):  # the agent's and HiPKI's
        assert needed in bridges
    for node in ("error-pin", "error-card", "error-account", "renewed", "f-account", "f-password"):
        assert f'"{node}"' in script


def test_logged_in_the_page_names_the_account_and_asks_no_password(
    client: TestClient, app: App, company: IssuedCard
) -> None:
    log_in(client, company)
    parsed = page(client.get(RENEWAL))
    assert parsed.id("account-name").text == UBN
    assert not parsed.has_id("f-account") and not parsed.has_id("f-password")
    assert_card_controls(parsed, app)


def test_what_the_script_posts_replaces_the_card(
    client: TestClient, pki: TestPKI, company: IssuedCard
) -> None:
    log_in(client, company)
    new = pki.issue_company(UBN, rank="secondary")
    body = signed(client, "/api/renewal/challenge", new)
    headers = {"X-CSRF-Token": csrf_of(client)}
    done = client.post("/api/renewal", json=body, headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["account"] == UBN
    assert done.json()["new_fingerprint"] == fingerprint(new)


def test_the_form_without_javascript_shows_the_page_again(client: TestClient) -> None:
    response = client.post(RENEWAL, data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, RENEWAL)
