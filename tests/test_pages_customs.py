"""The 通關憑證註冊 and 通關憑證查詢 pages: the UI contract (ids, names, labels) and effects."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from engine import App
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from engine.web._security import SESSION_COOKIE

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS
from .helpers import enrol
from .test_customs import (
    BROKER,
    OTHER_UBN,
    UBN,
    activate_and_login,
    audit,
    specialist_token,
    stored,
    trust_intermediates,
)
from .test_pages import Page, csrf_of, page

IMPORT = "/customs/import"
QUERY = "/customs/query"


@pytest.fixture
def client(app: App, pki: TestPKI) -> Iterator[TestClient]:
    trust_intermediates(app, pki)
    with TestClient(create_app(app)) as test_client:
        yield test_client


def post_import(
    client: TestClient,
    usage_type: str,
    answers: dict[str, str],
    data: bytes | None,
    *,
    certificate_kind: str = "customs",
    name: str = "turnkey.cer",
    prove: IssuedCard | None = None,
) -> httpx.Response:
    """The 通關憑證註冊 form as a browser posts it (multipart, csrf field); ``prove``: first
    press 取得驗證碼 and sign the challenge the page shows with that card's key."""
    fields = {
        "csrf": csrf_of(client),
        "usage_type": usage_type,
        "certificate_kind": certificate_kind,
        **answers,
    }
    if prove is not None:
        shown = page(client.post(IMPORT, data={**fields, "challenge": "1"}))
        payload = str(shown.id("challenge-payload").text).strip()
        signature = prove.sign(base64.b64decode(payload))
        fields["challenge_id"] = str(shown.all("input", name="challenge_id")[0].get("value"))
        fields["signature"] = base64.b64encode(signature).decode("ascii")
    files = {"file": (name, data if data is not None else b"", "application/pkix-cert")}
    response: httpx.Response = client.post(IMPORT, data=fields, files=files)
    return response


def checked(parsed: Page, name: str) -> list[str]:
    return [str(i.get("value")) for i in parsed.all("input", name=name) if i.has("checked")]


# -- the import page ---------------------------------------------------------------------------


def test_the_import_page_offers_every_usage_type(client: TestClient, app: App) -> None:
    parsed = page(client.get(IMPORT))
    radios = parsed.all("input", name="usage_type")
    assert [r.get("value") for r in radios] == list(app.catalog.usage_types)
    assert checked(parsed, "usage_type") == ["general_forwarder"]
    assert parsed.id("f-ubn").get("name") == "ubn"
    assert "★" in parsed.label_for("f-ubn").text
    kinds = parsed.all("input", name="certificate_kind")
    assert [parsed.label_for(str(k.get("id"))).text for k in kinds] == ["工商憑證", "通關專屬憑證"]
    file = parsed.id("file")
    assert (file.get("type"), file.get("name"), file.get("accept")) == (
        "file",
        "file",
        ".cer,.crt,.pem,.der",
    )
    form = parsed.id("customs-form")
    assert (form.get("method"), form.get("enctype")) == ("post", "multipart/form-data")
    [csrf] = form.find_all("input", name="csrf")
    assert csrf.get("type") == "hidden" and csrf.get("value") == client.cookies["csrf"]
    assert parsed.id("submit").text == "送出"
    assert "非IC卡類憑證" in parsed.text
    for script in parsed.all("script"):
        assert script.get("src") or script.get("type") == "application/json"


def test_the_broker_specialist_form(client: TestClient) -> None:
    parsed = page(client.get(f"{IMPORT}?usage_type=broker_specialist"))
    assert checked(parsed, "usage_type") == ["broker_specialist"]
    labels = {
        name: parsed.label_for(f"f-{name}").text
        for name in ("national_id", "contact_name", "customs_office", "specialist_code")
    }
    assert all("★" in text for text in labels.values())
    assert "身分證字號" in labels["national_id"]
    assert "專責人員姓名" in labels["contact_name"]
    assert "關別" in labels["customs_office"]
    assert "報關專責人員代碼" in labels["specialist_code"]
    office = parsed.id("f-customs_office")
    assert office.tag == "select" and office.get("name") == "customs_office"
    options = office.find_all("option")
    assert (options[0].get("value"), options[0].text) == ("", "請選擇關區")
    assert "AA" in [o.get("value") for o in options]
    kinds = parsed.all("input", name="certificate_kind")
    assert [k.get("value") for k in kinds] == ["customs"]
    assert parsed.label_for("kind-customs").text == "通關專屬憑證"


def test_an_unknown_usage_type_shows_the_default(client: TestClient) -> None:
    parsed = page(client.get(f"{IMPORT}?usage_type=nope"))
    assert checked(parsed, "usage_type") == ["general_forwarder"]


def test_a_company_type_offers_the_ic_card_through_the_agent(client: TestClient) -> None:
    parsed = page(client.get(IMPORT, params={"usage_type": "warehouse"}))
    section = parsed.id("ic-card")
    assert section.has("hidden")  # customs.js shows it; without JavaScript: the .cer only
    assert parsed.label_for("import-ic").text == "IC卡類憑證"
    assert parsed.label_for("import-non-ic").text == "非IC卡類憑證"
    assert checked(parsed, "import_kind") == ["non_ic"]
    assert parsed.id("ic-read").text == "匯入"
    for control in ("reader", "pin", "detect-readers", "error-pin", "error-card", "card-status"):
        assert parsed.has_id(control), control
    assert parsed.id("agent-missing").has("hidden")
    scripts = [s.get("src") for s in parsed.all("script") if s.get("src")]
    assert scripts[-3:] == ["/static/agent.js", "/static/hipki.js", "/static/customs.js"]
    assert parsed.all("body")[0].get("data-agent-url") == "ws://127.0.0.1:61234/"


def test_the_broker_specialist_type_has_no_ic_card(client: TestClient) -> None:
    parsed = page(client.get(IMPORT, params={"usage_type": "broker_specialist"}))
    assert not parsed.has_id("ic-card") and not parsed.has_id("import-non-ic")
    assert "/static/customs.js" not in [s.get("src") for s in parsed.all("script")]


def test_an_ic_card_post_without_javascript_says_what_it_needs(
    client: TestClient, app: App
) -> None:
    data = {"csrf": csrf_of(client), "usage_type": "warehouse", "import_kind": "ic_card"}
    parsed = page(client.post(IMPORT, data=data), 422)
    assert "JavaScript" in parsed.id("error-import_kind").text
    assert stored(app) == []


def test_the_language_switch_keeps_the_usage_type(client: TestClient) -> None:
    parsed = page(client.get(IMPORT, params={"usage_type": "warehouse"}))
    assert parsed.id("lang-switch").get("href") == f"{IMPORT}?usage_type=warehouse&lang=en"


def test_changing_the_usage_type_without_javascript(client: TestClient) -> None:
    data = {"csrf": csrf_of(client), "usage_type": "broker_specialist", "change": "1"}
    response = client.post(IMPORT, data=data, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"{IMPORT}?usage_type=broker_specialist"


def test_a_customs_certificate_is_imported(client: TestClient, app: App, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN)
    parsed = page(post_import(client, "shipping", {"ubn": UBN}, card.der(), prove=card))
    success = parsed.id("import-success")
    assert (success.tag, success.get("role"), success.text) == ("p", "status", "主憑證匯入成功!")
    assert parsed.id("query-link").get("href") == f"{QUERY}?key={UBN}"
    assert checked(parsed, "usage_type") == ["shipping"]
    assert stored(app) == [("signing", UBN, "shipping", "non_ic", "TaiCA", UBN, "active")]


def test_the_import_is_told_in_the_pages_language(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    """The service's outcome is worded by the page (issue 19 item 3), not a Chinese string."""
    client.get(IMPORT, params={"lang": "en"})
    card = pki.issue_customs(UBN)
    parsed = page(post_import(client, "shipping", {"ubn": UBN}, card.der(), prove=card))
    assert parsed.id("import-success").text == "The certificate was imported."


def test_a_broker_imports_a_pem(client: TestClient, app: App, pki: TestPKI) -> None:
    card = pki.issue_customs(OTHER_UBN)
    refused = page(post_import(client, "broker_specialist", BROKER, card.pem(), prove=card), 403)
    assert refused.id("error-file").text  # log in with the specialist's card first
    assert refused.has_id("proof-person")
    client.cookies.set(SESSION_COOKIE, specialist_token(app, pki))
    response = post_import(client, "broker_specialist", BROKER, card.pem(), prove=card)
    assert page(response).id("import-success").text == "主憑證匯入成功!"
    assert [row[1] for row in stored(app) if row[0] == "signing"] == ["A00001"]


def test_a_garbage_file_is_refused_by_the_file(client: TestClient, app: App) -> None:
    parsed = page(post_import(client, "shipping", {"ubn": UBN}, b"garbage"), 422)
    assert parsed.id("error-file").text
    assert parsed.id("error-file").get("role") == "alert"
    assert parsed.id("import-success").has("hidden") and not parsed.id("import-success").text
    assert parsed.id("f-ubn").get("value") == UBN  # what was typed stays
    assert stored(app) == []


def test_no_file_is_required(client: TestClient, app: App) -> None:
    parsed = page(post_import(client, "shipping", {"ubn": UBN}, None), 422)
    assert parsed.id("error-file").text
    assert not parsed.has_id("error-ubn")
    assert stored(app) == []


def test_an_invalid_customs_office(client: TestClient, app: App, pki: TestPKI) -> None:
    answers = {**BROKER, "customs_office": "ZZ"}
    certificate = pki.issue_customs(OTHER_UBN).der()
    parsed = page(post_import(client, "broker_specialist", answers, certificate), 422)
    assert parsed.id("error-customs_office").text
    assert parsed.id("f-customs_office").get("aria-invalid") == "true"
    assert checked(parsed, "usage_type") == ["broker_specialist"]
    assert stored(app) == []


def test_the_wrong_ubn_is_shown_by_the_ubn(client: TestClient, app: App, pki: TestPKI) -> None:
    certificate = pki.issue_customs(OTHER_UBN).der()
    parsed = page(post_import(client, "shipping", {"ubn": UBN}, certificate), 422)
    assert parsed.id("error-ubn").text
    assert stored(app) == []


def test_the_chosen_kind_must_be_the_files(client: TestClient, app: App, pki: TestPKI) -> None:
    certificate = pki.issue_customs(UBN).der()
    response = post_import(
        client, "shipping", {"ubn": UBN}, certificate, certificate_kind="business"
    )
    parsed = page(response, 422)
    assert parsed.id("error-file").text
    assert stored(app) == []


def test_a_second_import_is_refused(client: TestClient, app: App, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN)
    page(post_import(client, "shipping", {"ubn": UBN}, card.der(), prove=card))
    again = page(post_import(client, "shipping", {"ubn": UBN}, card.der(), prove=card), 409)
    assert again.id("error-file").text


def test_the_import_form_needs_csrf(client: TestClient, app: App, pki: TestPKI) -> None:
    files = {"file": ("x.cer", pki.issue_customs(UBN).der())}
    response = client.post(IMPORT, data={"usage_type": "shipping", "ubn": UBN}, files=files)
    assert response.status_code == 403
    assert stored(app) == []


# -- the query page ----------------------------------------------------------------------------


def test_the_query_page_without_a_key(client: TestClient) -> None:
    parsed = page(client.get(QUERY))
    assert parsed.id("key").get("name") == "key"
    assert parsed.id("query").text == "查詢"
    assert not parsed.has_id("results") and not parsed.has_id("no-results")


def test_a_query_by_ubn_shows_the_row(client: TestClient, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN)
    page(post_import(client, "shipping", {"ubn": UBN}, card.der(), prove=card))
    parsed = page(client.get(f"{QUERY}?key={UBN}"))
    table = parsed.id("results")
    headers = [th.text for th in table.find_all("th")]
    assert headers == ["憑證型態", "憑證種類", "用途", "憑證資訊"]
    [row] = table.find_all("tbody")[0].find_all("tr")
    cells = [td.text for td in row.find_all("td")]
    assert cells[:3] == ["非IC卡類憑證", "通關專屬憑證", "簽章"]
    assert "序號" in cells[3]
    assert parsed.id("key").get("value") == UBN


def test_a_query_in_english(client: TestClient, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN)
    page(post_import(client, "shipping", {"ubn": UBN}, card.der(), prove=card))
    parsed = page(client.get(f"{QUERY}?key={UBN}&lang=en"))
    assert parsed.all("html")[0].get("lang") == "en"
    table = parsed.id("results")
    headers = [th.text for th in table.find_all("th")]
    assert headers == ["Certificate form", "Certificate kind", "Purpose", "Certificate information"]
    cells = [td.text for td in table.find_all("td")]
    assert cells[:3] == ["Non-IC certificate", "Customs-exclusive certificate", "Signing"]
    assert parsed.id("query").text == "Query"


def test_a_query_without_results(client: TestClient) -> None:
    parsed = page(client.get(f"{QUERY}?key={OTHER_UBN}"))
    assert parsed.id("no-results").text
    assert not parsed.has_id("results")


@pytest.mark.parametrize("key", ["not-a-key", "", " ", "x" * 300])
def test_a_bad_key(client: TestClient, key: str) -> None:
    parsed = page(client.get(QUERY, params={"key": key}), 422)
    assert parsed.id("error-key").text
    assert parsed.id("key").get("aria-invalid") == "true"
    assert not parsed.has_id("results")


# -- 刪除 ------------------------------------------------------------------------------------------


def log_in(client: TestClient, app: App, card: IssuedCard, account: str) -> None:
    """A card login (what card.js does on /login), its session cookie in the client."""
    client.cookies.set(SESSION_COOKIE, activate_and_login(app, card, account))


def imported(client: TestClient, pki: TestPKI) -> int:
    """A customs certificate of UBN, imported through the page; its row id."""
    card = pki.issue_customs(UBN)
    page(post_import(client, "shipping", {"ubn": UBN}, card.der(), prove=card))
    [row_id] = signing_rows(page(client.get(f"{QUERY}?key={UBN}")))
    return int(row_id)


def signing_rows(parsed: Page) -> list[str]:
    return [str(tr.get("data-id")) for tr in parsed.all("tr", **{"data-purpose": "signing"})]


def delete(client: TestClient, row_id: int, key: str = UBN) -> httpx.Response:
    data = {"csrf": csrf_of(client), "key": key}
    response: httpx.Response = client.post(
        f"/customs/delete/{row_id}", data=data, follow_redirects=False
    )
    return response


def test_the_owner_deletes_from_the_query(client: TestClient, app: App, pki: TestPKI) -> None:
    company = pki.issue_company(UBN)
    enrol(app, "enterprise.general", company, COMPANY_ANSWERS)
    row_id = imported(client, pki)
    log_in(client, app, company, UBN)

    parsed = page(client.get(f"{QUERY}?key={UBN}"))
    headers = [th.text for th in parsed.id("results").find_all("th")]
    assert headers == ["憑證型態", "憑證種類", "用途", "憑證資訊", "刪除"]
    button = parsed.id(f"delete-{row_id}")
    assert (button.tag, button.get("type"), button.text) == ("button", "submit", "刪除")
    form = button.parent
    assert form is not None and form.tag == "form"
    assert (form.get("method"), form.get("action")) == ("post", f"/customs/delete/{row_id}")
    [csrf] = form.find_all("input", name="csrf")
    assert csrf.get("value") == client.cookies["csrf"]
    assert [b.get("id") for b in parsed.all("button") if "delete-" in str(b.get("id"))] == [
        f"delete-{row_id}"
    ]  # the login certificate's row has no button

    response = delete(client, row_id)
    assert response.status_code == 303
    assert response.headers["location"] == f"{QUERY}?key={UBN}&deleted=1"
    after = page(client.get(response.headers["location"]))
    assert after.id("deleted").text == "已刪除"
    assert after.id("deleted").get("role") == "status"
    assert str(row_id) not in signing_rows(after)
    assert not after.has_id(f"delete-{row_id}")
    assert [row[-1] for row in stored(app) if row[0] == "signing"] == ["deleted"]
    assert [entry["certificate_id"] for entry in audit(app, "customs_delete")] == [row_id]
    english = page(client.get(f"{QUERY}?key={UBN}&deleted=1&lang=en"))
    assert english.id("deleted").text == "Deleted"


def test_anonymous_visitors_see_no_delete_buttons(client: TestClient, pki: TestPKI) -> None:
    row_id = imported(client, pki)
    parsed = page(client.get(f"{QUERY}?key={UBN}"))
    assert signing_rows(parsed) == [str(row_id)]
    assert not parsed.has_id(f"delete-{row_id}")
    assert "刪除" not in [th.text for th in parsed.all("th")]
    assert not parsed.all("form", action=f"/customs/delete/{row_id}")


def test_a_delete_without_a_login_is_refused(client: TestClient, app: App, pki: TestPKI) -> None:
    row_id = imported(client, pki)
    parsed = page(delete(client, row_id), 403)
    assert parsed.id("error-delete").text
    assert parsed.id("error-delete").get("role") == "alert"
    assert signing_rows(parsed) == [str(row_id)]
    assert [row[-1] for row in stored(app)] == ["active"]


def test_a_non_owners_delete_is_refused(client: TestClient, app: App, pki: TestPKI) -> None:
    person = pki.issue_person("王小明", "6789")
    enrol(app, "person.general", person, PERSON_ANSWERS)
    row_id = imported(client, pki)
    log_in(client, app, person, PERSON_ANSWERS["email"])

    parsed = page(client.get(f"{QUERY}?key={UBN}"))
    assert not parsed.has_id(f"delete-{row_id}")  # not the owner: no button
    refused = page(delete(client, row_id), 403)
    assert refused.id("error-delete").text
    assert not refused.has_id("deleted")
    assert signing_rows(refused) == [str(row_id)]
    assert [row[-1] for row in stored(app) if row[0] == "signing"] == ["active"]
    assert audit(app, "customs_delete") == []


def test_a_delete_needs_csrf(client: TestClient, app: App, pki: TestPKI) -> None:
    row_id = imported(client, pki)
    response = client.post(f"/customs/delete/{row_id}", data={"key": UBN})
    assert response.status_code == 403
    assert [row[-1] for row in stored(app)] == ["active"]


# -- menu --------------------------------------------------------------------------------------


def test_the_menu_links_to_the_customs_pages(client: TestClient) -> None:
    home = page(client.get("/"))
    menu = home.all("nav", class_="side-menu")[0]
    links = {a.text: a.get("href") for a in menu.find_all("a")}
    assert links["通關憑證註冊"] == IMPORT
    assert links["通關憑證查詢"] == QUERY
    assert menu.find_all("span", class_="unbuilt") == []  # every item is built
    english = page(client.get(f"{IMPORT}?lang=en")).all("nav", class_="side-menu")[0]
    links = {a.text: a.get("href") for a in english.find_all("a")}
    assert links["Customs certificate registration"] == IMPORT
    assert links["Customs certificate query"] == QUERY
    current = [a for a in english.find_all("a") if a.get("aria-current") == "page"]
    assert [a.get("href") for a in current] == [IMPORT]
