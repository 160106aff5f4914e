"""The server-rendered wizard: the UI contract (ids, names, labels) the browser tests rely on.

Pages are parsed with the standard library's HTML parser; the card check, which a browser does
through its script and the local card agent, is done here through the JSON API.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from engine import App, FixedClock, Settings
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS

UBN = "04595257"
VOID = {"input", "br", "meta", "link", "img", "hr"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Element] = []
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()

    def get(self, name: str) -> str | None:
        return self.attrs.get(name)

    def has(self, name: str) -> bool:
        return name in self.attrs

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(
                child.attrs.get(k.rstrip("_")) == v for k, v in attrs.items()
            ):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found


class Page(HTMLParser):
    """A parsed page: ``page.id("steps")``, ``page.all("input", name="type")``."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.html = html
        self.root = Element("#root", {}, None)
        self.current = self.root
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs), self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        node: Element | None = self.current
        while node is not None:
            node.parts.append(data)
            node = node.parent

    def all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        return self.root.find_all(tag, **attrs)

    def id(self, value: str) -> Element:
        [element] = self.all(id=value)
        return element

    def has_id(self, value: str) -> bool:
        return bool(self.all(id=value))

    def label_for(self, control_id: str) -> Element:
        [label] = self.all("label", for_=control_id)
        return label

    @property
    def text(self) -> str:
        return self.root.text


def page(response: httpx.Response, status: int = 200) -> Page:
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def csrf_of(client: TestClient) -> str:
    client.get("/")
    return str(client.cookies["csrf"])


def start(client: TestClient, type_code: str, **fields: str) -> str:
    """Step 1 through the page form; returns the registration's page URL."""
    category = type_code.split(".")[0]
    data = {"csrf": csrf_of(client), "category": category, "type": type_code, "consent": "on"}
    response = client.post("/register", data={**data, **fields}, follow_redirects=False)
    assert response.status_code == 303, response.text
    location: str = response.headers["location"]
    assert re.fullmatch(r"/register/[0-9a-f-]{36}", location)
    return location


def card_check(client: TestClient, url: str, card: IssuedCard) -> None:
    """What card.js does: challenge → agent signs → certificate and signature to the API."""
    registration_id = url.rsplit("/", 1)[1]
    headers = {"X-CSRF-Token": csrf_of(client)}
    api = f"/api/registrations/{registration_id}"
    challenge = client.post(f"{api}/challenge", headers=headers).json()
    signature = card.sign(base64.b64decode(challenge["payload"]))
    body = {
        "challenge_id": challenge["challenge_id"],
        "certificate": b64(card.der()),
        "signature": b64(signature),
        "chain": [b64(c) for c in card.chain_der()],
    }
    response = client.post(f"{api}/card", json=body, headers=headers)
    assert response.status_code == 200, response.text


def post_form(client: TestClient, url: str, fields: dict[str, Any]) -> httpx.Response:
    data = {"csrf": csrf_of(client), **{k: str(v) for k, v in fields.items()}}
    response: httpx.Response = client.post(url, data=data, follow_redirects=False)
    return response


def steps(page: Page) -> tuple[int, int | None]:
    """(number of steps in the bar, 1-based position of the current one)."""
    bar = page.id("steps")
    assert bar.tag == "ol"
    items = bar.find_all("li")
    current = [i for i, li in enumerate(items, 1) if li.get("aria-current") == "step"]
    return len(items), current[0] if current else None


def assert_labelled(page: Page, control_id: str) -> Element:
    label = page.label_for(control_id)
    assert label.text
    return label


def assert_required(label: Element) -> None:
    assert "★" in label.text and ("(必填)" in label.text or "(required)" in label.text)


# -- every page ------------------------------------------------------------------------------


def test_home_links_to_registration_and_login(client: TestClient) -> None:
    home = page(client.get("/"))
    assert home.all("html")[0].get("lang") == "zh-TW"
    hrefs = {a.get("href") for a in home.all("a")}
    assert {"/register", "/login"} <= hrefs
    assert home.id("lang-switch").get("href") == "/?lang=en"
    menu = home.all("nav", class_="side-menu")[0].text
    for entry in ("憑證登入", "憑證更換作業", "註冊", "忘記密碼", "通關憑證註冊", "通關憑證查詢"):
        assert entry in menu


def test_pages_carry_no_inline_script_or_style(client: TestClient) -> None:
    for url in ("/", "/register", "/login", "/privacy", "/activate/abc"):
        parsed = page(client.get(url))
        for script in parsed.all("script"):
            assert script.get("src") or script.get("type") == "application/json"
        assert not parsed.all("style")
        assert "style=" not in parsed.html
    for asset in (
        "wizard.js",
        "agent.js",
        "hipki.js",
        "card.js",
        "renewal.js",
        "customs.js",
        "password.js",
        "mobile.js",
        "style.css",
    ):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and response.headers["x-content-type-options"]


# -- step 1 --------------------------------------------------------------------------------------


def test_step_one_renders_the_contract(client: TestClient, app: App) -> None:
    step1 = page(client.get("/register"))
    assert steps(step1) == (4, 1)  # 個人 is chosen first: four steps
    categories = {i.get("value") for i in step1.all("input", name="category")}
    assert categories == {"person", "enterprise"}
    assert assert_labelled(step1, "category-person").text == "個人"
    types = {i.get("value"): i for i in step1.all("input", name="type")}
    assert set(types) == set(app.catalog.applicant_types)
    for code, radio in types.items():
        assert radio.get("type") == "radio"
        label = assert_labelled(step1, str(radio.get("id")))
        assert label.text == app.catalog.applicant(str(code)).labels.zh_tw
    groups = {g.get("data-category"): g for g in step1.all("fieldset", class_="type-group")}
    assert "一般個人" in groups["person"].text and "報關業" in groups["enterprise"].text
    assert "一般企業或組織團體" not in groups["person"].text
    assert step1.id("iot").get("name") == "iot" and step1.id("iot").get("type") == "checkbox"
    assert step1.label_for("iot").text == "申請物聯網權限"
    assert step1.id("consent").get("name") == "consent"
    assert step1.label_for("consent").text == "我已經詳細閱讀並同意資料使用聲明"
    assert step1.id("privacy").get("href") == "/privacy"
    assert step1.id("privacy").text == "資料使用聲明"
    [csrf] = step1.all("input", name="csrf")
    assert csrf.get("type") == "hidden" and csrf.get("value") == client.cookies["csrf"]
    assert step1.id("next").tag == "button" and step1.id("next").text == "下一步"
    assert step1.id("cancel").text == "取消"


def test_step_one_refusals_are_shown_next_to_their_field(client: TestClient) -> None:
    csrf = csrf_of(client)
    base = {"csrf": csrf, "category": "person", "type": "person.general"}
    no_consent = page(client.post("/register", data=base), 422)
    assert "請勾選" in no_consent.id("error-consent").text
    assert no_consent.id("error-consent").get("role") == "alert"
    assert no_consent.id("type-person-general").has("checked")  # the choice is kept

    iot = page(client.post("/register", data={**base, "consent": "on", "iot": "on"}), 422)
    assert iot.id("error-iot").text == "此屬性不可申請物聯網權限"

    no_type = page(client.post("/register", data={"csrf": csrf, "consent": "on"}), 422)
    assert no_type.has_id("error-type")
    mixed = {**base, "category": "enterprise", "consent": "on"}
    assert page(client.post("/register", data=mixed), 422).has_id("error-type")


def test_a_form_post_without_csrf_is_refused(client: TestClient) -> None:
    data = {"category": "person", "type": "person.general", "consent": "on"}
    refused = page(client.post("/register", data=data), 403)
    assert "重新整理" in refused.id("error-page").text
    wrong = page(client.post("/register", data={**data, "csrf": "x" * 43}), 403)
    assert wrong.has_id("error-page")


# -- step 2: the card check --------------------------------------------------------------------


def test_the_card_check_page_renders_the_contract(client: TestClient, app: App) -> None:
    url = start(client, "person.general")
    card = page(client.get(url))
    assert steps(card) == (4, 2)
    body = card.all("body")[0]
    assert body.get("data-agent-url") == app.settings.agent_url
    assert body.get("data-registration-id") == url.rsplit("/", 1)[1]
    assert body.get("data-origin") == app.settings.public_origin
    assert card.id("reader").tag == "select"
    assert_labelled(card, "reader")
    assert card.id("detect-readers").text == "開啟偵測多台讀卡機"
    pin = card.id("pin")
    assert pin.get("type") == "password" and pin.get("autocomplete") == "off"
    assert not pin.has("name")  # the PIN is never posted
    assert_required(assert_labelled(card, "pin"))
    for name in ("error-pin", "error-card"):
        assert card.id(name).get("role") == "alert"
    assert card.has_id("card-status")
    assert card.id("agent-missing").has("hidden")
    assert "swreg agent --origin http://127.0.0.1:8000" in card.id("agent-missing").text
    assert "HiCOS" in card.id("agent-missing").text
    assert [card.id(b).text for b in ("back", "next", "cancel")] == ["上一步", "下一步", "取消"]
    assert all(card.id(b).tag == "button" for b in ("back", "next", "cancel"))
    assert card.id("back").get("formaction") == f"{url}/back"
    assert card.id("cancel").get("formaction") == f"{url}/cancel"
    assert any(s.get("src") == "/static/card.js" for s in card.all("script"))
    assert "自然人憑證" in card.text  # 個人: how to apply for a citizen certificate


# -- steps 3 and 4 -------------------------------------------------------------------------------


def test_the_basic_data_page_after_a_card_check(client: TestClient, app: App, pki: TestPKI) -> None:
    url = start(client, "person.general")
    card_check(client, url, pki.issue_person("王小明", "6789"))
    basic = page(client.get(url))
    assert steps(basic) == (4, 3)
    form = basic.id("step-form")
    assert form.get("method") == "post" and form.get("action") == url
    for key in ("email", "contact_name", "national_id", "birth_date", "phone", "address"):
        control = basic.id(f"f-{key}")
        assert control.get("name") == key
        assert_required(assert_labelled(basic, f"f-{key}"))
    assert basic.id("f-email").get("type") == "email"
    assert basic.id("f-birth_date").get("type") == "date"
    assert basic.id("f-password").get("type") == "password"
    assert basic.id("f-password_confirm").get("type") == "password"
    locked = basic.id("f-contact_name")
    assert locked.has("readonly") and locked.get("value") == "王小明"
    assert not basic.id("f-email").has("readonly")
    assert basic.id("account").has("readonly")
    assert basic.id("check-account").text == "檢核是否存在"
    assert basic.has_id("check-account-result")
    assert "大寫英文至少1碼" in basic.text
    assert basic.id("back").get("formaction") == f"{url}/back"
    assert basic.id("cancel").get("formaction") == f"{url}/cancel"
    assert basic.id("next").text == "下一步"


def test_a_company_walks_every_page_to_completion(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    url = start(client, "enterprise.general")
    assert steps(page(client.get(url))) == (5, 2)
    card_check(client, url, pki.issue_company(UBN))
    basic = page(client.get(url))
    assert steps(basic) == (5, 3)
    assert basic.id("f-ubn").get("value") == UBN and basic.id("f-ubn").has("readonly")
    assert basic.id("account").get("value") == UBN
    assert basic.has_id("f-sub_card")
    answers = {k: v for k, v in COMPANY_ANSWERS.items() if k not in ("consent", "company_name")}
    moved = post_form(client, url, answers)
    assert (moved.status_code, moved.headers["location"]) == (303, url)
    info = page(client.get(url))
    assert steps(info) == (5, 4)
    assert_required(assert_labelled(info, "f-company_name"))
    assert info.id("f-company_name").get("name") == "company_name"
    assert post_form(client, url, {"company_name": "測試貿易股份有限公司"}).status_code == 303

    done = page(client.get(url))
    assert steps(done) == (5, 5)
    completed = done.id("completed")
    assert completed.tag == "section"
    for text in (
        "恭喜您已完成註冊程序",
        "請至您的電子郵件Email進行帳號啟用",
        "通關專屬憑證請於[通關憑證註冊]進行匯入作業",
        "物聯網全時監控",
        "請注意[自然人憑證/工商憑證]逾期前60天",
        "於本站[憑證更換作業]進行憑證更新",
        "0800-299-889",
        "(02)25589601",
        "cpt_helpdesk@mail.sw.nat.gov.tw",
        "08:30",
        "17:30",
        UBN,
    ):
        assert text in completed.text, text
    links = {a.text: a.get("href") for a in completed.find_all("a")}
    assert links["回首頁"] == "/" and "憑證更換作業" in links
    assert "swreg_session" not in client.cookies  # not logged in after registering


def test_a_person_completes_in_four_steps(client: TestClient, pki: TestPKI) -> None:
    url = start(client, "person.general")
    card_check(client, url, pki.issue_person("王小明", "6789"))
    answers = {k: v for k, v in PERSON_ANSWERS.items() if k != "consent"}
    assert post_form(client, url, answers).status_code == 303
    done = page(client.get(url))
    assert steps(done) == (4, 4)
    assert "恭喜您已完成註冊程序" in done.id("completed").text
    assert "m**g@example.com" in done.id("completed").text  # ended: the account masked (§6)
    assert "ming@example.com" not in done.html


def test_an_invalid_ubn_is_shown_next_to_the_field(client: TestClient, pki: TestPKI) -> None:
    url = start(client, "enterprise.general")
    card_check(client, url, pki.issue_company(UBN))
    answers = {**COMPANY_ANSWERS, "ubn": "12345678", "email": "bad"}
    refused = page(post_form(client, url, answers), 422)
    assert refused.id("error-ubn").text == "統一編號錯誤"
    assert refused.id("error-ubn").get("role") == "alert"
    assert refused.id("error-email").text == "電子郵件格式錯誤"
    assert refused.id("f-email").get("value") == "bad"  # what was typed is kept...
    assert refused.id("f-password").get("value") == ""  # ...except passwords


def test_a_taken_account_is_shown_at_the_ubn(client: TestClient, pki: TestPKI) -> None:
    first = start(client, "enterprise.general")
    card_check(client, first, pki.issue_company(UBN))
    post_form(client, first, COMPANY_ANSWERS)
    post_form(client, first, COMPANY_ANSWERS)
    second = start(client, "enterprise.general")
    card_check(client, second, pki.issue_company(UBN, rank="secondary"))
    refused = page(post_form(client, second, COMPANY_ANSWERS), 409)
    assert refused.id("error-ubn").text == "用戶姓名已存在"


def test_check_account_without_javascript(client: TestClient, pki: TestPKI) -> None:
    url = start(client, "person.general")
    card_check(client, url, pki.issue_person("王小明", "6789"))
    check = f"{url}/check-account"
    free = page(post_form(client, check, {"email": "ming@example.com"}))
    assert free.id("check-account-result").text == "此帳號可使用"
    assert free.id("f-email").get("value") == "ming@example.com"
    other = start(client, "person.general")
    card_check(client, other, pki.issue_person("王小明", "6789"))
    post_form(client, other, PERSON_ANSWERS)
    taken = page(post_form(client, check, {"email": "ming@example.com"}))
    assert taken.id("check-account-result").text == "用戶姓名已存在"
    empty = page(post_form(client, check, {"email": ""}), 422)
    assert empty.has_id("error-email")


def test_back_and_cancel_through_the_forms(client: TestClient, pki: TestPKI) -> None:
    url = start(client, "person.general")
    card_check(client, url, pki.issue_person("王小明", "6789"))
    back = post_form(client, f"{url}/back", {})
    assert (back.status_code, back.headers["location"]) == (303, url)
    assert page(client.get(url)).has_id("pin")
    assert post_form(client, f"{url}/cancel", {}).status_code == 303
    ended = page(client.get(url))
    assert "已取消" in ended.id("cancelled").text
    assert any(a.get("href") == "/register" for a in ended.id("cancelled").find_all("a"))


def test_an_expired_registration_says_so(client: TestClient, clock: FixedClock) -> None:
    url = start(client, "person.general")
    clock.advance(timedelta(hours=1))
    expired = page(client.get(url))
    assert "逾時" in expired.id("expired").text
    assert any(a.get("href") == "/register" for a in expired.id("expired").find_all("a"))


def test_an_unknown_registration_is_a_404_page(client: TestClient) -> None:
    missing = page(client.get("/register/00000000-0000-0000-0000-000000000000"), 404)
    assert "查無此註冊作業" in missing.id("error-page").text
    assert page(client.get("/no/such/page"), 404).has_id("error-page")


# -- language ----------------------------------------------------------------------------------


def test_the_language_switch(client: TestClient) -> None:
    english = client.get("/register?lang=en")
    parsed = page(english)
    assert parsed.all("html")[0].get("lang") == "en"
    assert any(c.startswith("lang=en;") for c in english.headers.get_list("set-cookie"))
    assert parsed.id("lang-switch").get("href") == "/register?lang=zh-TW"
    assert parsed.label_for("category-person").text == "Individual"
    assert parsed.label_for("type-person-general").text == "General individual"
    assert "Next" in parsed.id("next").text
    remembered = page(client.get("/"))  # the cookie keeps the choice
    assert remembered.all("html")[0].get("lang") == "en"
    back = page(client.get("/?lang=zh-TW"))
    assert back.all("html")[0].get("lang") == "zh-TW"
    # Pages are zh-TW until the switch is used, whatever the browser prefers.
    by_header = TestClient(client.app).get("/", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert page(by_header).all("html")[0].get("lang") == "zh-TW"


def test_errors_in_english(client: TestClient, pki: TestPKI) -> None:
    client.get("/?lang=en")
    url = start(client, "enterprise.general")
    card_check(client, url, pki.issue_company(UBN))
    refused = page(post_form(client, url, {**COMPANY_ANSWERS, "ubn": "12345678"}), 422)
    assert refused.id("error-ubn").text == "Invalid unified business number (UBN)"
    assert "(required)" in refused.label_for("f-email").text


def test_each_step_and_refusal_has_its_own_title_and_heading(
    client: TestClient, pki: TestPKI
) -> None:
    """Issue 19 item 2: 「步驟N 步驟名 – 自然人/工商憑證註冊」, and 「錯誤 – 」 after a refusal."""
    flow = "自然人/工商憑證註冊"
    first = page(client.get("/register"))
    url = start(client, "enterprise.general")
    card = page(client.get(url))
    card_check(client, url, pki.issue_company(UBN))
    basic = page(client.get(url))
    refused = page(post_form(client, url, {**COMPANY_ANSWERS, "ubn": "12345678"}), 422)
    english = page(client.get(url, params={"lang": "en"}))
    titles = [(p.all("title")[0].text, p.all("h1")[0].text) for p in (first, card, basic, refused)]
    assert titles == [
        (f"步驟1 申請類別 – {flow} | 關港貿單一窗口", f"步驟1 申請類別 – {flow}"),
        (f"步驟2 憑證檢查 – {flow} | 關港貿單一窗口", f"步驟2 憑證檢查 – {flow}"),
        (f"步驟3 基本資料 – {flow} | 關港貿單一窗口", f"步驟3 基本資料 – {flow}"),
        (f"錯誤 – 步驟3 基本資料 – {flow} | 關港貿單一窗口", f"錯誤 – 步驟3 基本資料 – {flow}"),
    ]
    assert english.all("h1")[0].text == (
        "Step 3: Basic data – Citizen and business certificate registration"
    )


def test_a_refused_form_leads_with_an_error_summary_linking_each_field(
    client: TestClient, pki: TestPKI
) -> None:
    url = start(client, "enterprise.general")
    card_check(client, url, pki.issue_company(UBN))
    answers = {**COMPANY_ANSWERS, "ubn": "12345678", "email": "not-an-address"}
    refused = page(post_form(client, url, answers), 422)

    summary = refused.id("error-summary")
    assert summary.get("tabindex") == "-1"  # wizard.js focuses it
    links = [(a.get("href"), a.text) for a in summary.find_all("a")]
    assert links == [
        ("#f-email", refused.id("error-email").text),
        ("#f-ubn", refused.id("error-ubn").text),
    ] or links == [
        ("#f-ubn", refused.id("error-ubn").text),
        ("#f-email", refused.id("error-email").text),
    ]
    for field in ("email", "ubn"):
        control = refused.id(f"f-{field}")
        assert control.get("aria-invalid") == "true"
        assert control.get("aria-describedby") == f"error-{field}"
    assert page(client.get(url)).all(id="error-summary") == []  # only after a refusal
    fields = {"category": "person", "type": "person.general"}
    no_consent = page(post_form(client, "/register", fields), 422)
    assert [a.get("href") for a in no_consent.id("error-summary").find_all("a")] == ["#consent"]
    no_type = page(post_form(client, "/register", {"category": "person", "consent": "on"}), 422)
    [link] = no_type.id("error-summary").find_all("a")
    assert no_type.id(str(link.get("href"))[1:]).get("name") == "type"  # the chosen type


CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
"""Chinese characters and CJK (full-width) punctuation."""
WORDED_ATTRIBUTES = ("placeholder", "aria-label", "title", "alt")


def chinese_outside_marked_text(html: str) -> list[str]:
    """The Chinese an English page shows outside elements marked ``lang="zh-…"`` (text and
    worded attributes; scripts' data left out)."""
    found: list[str] = []
    skipped: list[bool] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            inside = any(skipped)
            if not inside:
                found.extend(
                    f"<{tag} {name}>: {values[name]}"
                    for name in WORDED_ATTRIBUTES
                    if CJK.search(values.get(name) or "")
                )
            if tag not in VOID:
                marked = (values.get("lang") or "").startswith("zh") or tag in ("script", "style")
                skipped.append(marked)

        def handle_endtag(self, tag: str) -> None:
            if tag not in VOID and skipped:
                skipped.pop()

        def handle_data(self, data: str) -> None:
            if not any(skipped) and CJK.search(data):
                found.append(data.strip())

    Reader(convert_charrefs=True).feed(html)
    return found


def test_english_pages_show_no_chinese_outside_text_marked_as_chinese(
    client: TestClient, pki: TestPKI
) -> None:
    """One language per page (issue 19 item 3): the English pages, every wizard state of a
    company's registration included, hold Chinese only where marked ``lang="zh-TW"``."""
    client.get("/?lang=en")
    shown: dict[str, str] = {}
    for path in (
        "/", "/register", "/login", "/accessibility", "/privacy", "/customs/query",
        "/customs/import", "/password/forgot", "/renewal", "/officer", "/activate/x",
        "/no-such-page",
    ):  # fmt: skip
        shown[path] = client.get(path).text
    url = start(client, "enterprise.general")
    shown["card step"] = client.get(url).text
    card_check(client, url, pki.issue_company(UBN))
    shown["basic data"] = client.get(url).text
    answers = {k: v for k, v in COMPANY_ANSWERS.items() if k not in ("consent", "company_name")}
    shown["refused basic data"] = post_form(client, url, {**answers, "ubn": "12345678"}).text
    post_form(client, url, answers)
    shown["enterprise info"] = client.get(url).text
    post_form(client, url, {"company_name": "Trading Co."})
    shown["completed"] = client.get(url).text
    assert 'lang="en"' in shown["completed"]
    found = {where: chinese_outside_marked_text(html) for where, html in shown.items()}
    assert {where: text for where, text in found.items() if text} == {}


def english_wordings() -> set[str]:
    """Every English wording of the pages' translation tables of three words or more."""
    from engine.web import _pages_account, _pages_customs, _pages_officer
    from engine.web._i18n import TEXTS

    found = {en for _, en in TEXTS.values()}
    for module in (_pages_account, _pages_customs, _pages_officer):
        found |= {labels.en for labels in module._TEXTS.values()}
    return {text for text in found if len(text.split()) >= 3}


def test_chinese_pages_show_none_of_the_english_wordings(client: TestClient, pki: TestPKI) -> None:
    """The reverse of the crawl above: where a Chinese wording exists, a zh-TW page uses it."""
    wordings = english_wordings()
    assert len(wordings) > 100
    shown: dict[str, str] = {}
    for path in ("/", "/register", "/login", "/accessibility", "/privacy", "/customs/query",
                 "/customs/import", "/password/forgot", "/renewal", "/officer", "/activate/x",
                 "/no-such-page"):  # fmt: skip
        shown[path] = page(client.get(path), 404 if path == "/no-such-page" else 200).text
    url = start(client, "enterprise.general")
    shown["card step"] = page(client.get(url)).text
    card_check(client, url, pki.issue_company(UBN))
    answers = {k: v for k, v in COMPANY_ANSWERS.items() if k not in ("consent", "company_name")}
    shown["refused"] = page(post_form(client, url, {**answers, "ubn": "12345678"}), 422).text
    post_form(client, url, answers)
    post_form(client, url, {"company_name": "測試貿易股份有限公司"})
    shown["completed"] = page(client.get(url)).text
    found = {where: [w for w in wordings if w in text] for where, text in shown.items()}
    assert {where: hits for where, hits in found.items() if hits} == {}


# -- activation, login, privacy, outbox ----------------------------------------------------------


def test_the_activation_page_has_its_form(client: TestClient) -> None:
    activation = page(client.get("/activate/some-token"))
    form = activation.id("activate-form")
    assert form.get("action") == "/activate/some-token" and form.get("method") == "post"
    assert activation.id("activate").text == "啟用帳號"
    assert form.find_all("input", name="csrf")


def test_a_bad_activation_token_is_shown(client: TestClient) -> None:
    refused = page(post_form(client, "/activate/nope", {}), 422)
    assert refused.id("error-token").text


def test_the_login_page_renders_the_contract(client: TestClient, app: App) -> None:
    login = page(client.get("/login"))
    assert login.all("body")[0].get("data-agent-url") == app.settings.agent_url
    assert login.id("reader").tag == "select"
    assert login.id("detect-readers").tag == "button"
    assert login.id("pin").get("type") == "password" and not login.id("pin").has("name")
    assert login.id("login").tag == "button"
    assert login.id("error-pin").get("role") == "alert"
    assert login.id("error-card").get("role") == "alert"
    assert login.id("agent-missing").has("hidden")


def test_the_account_page_needs_a_session(client: TestClient) -> None:
    response = client.get("/account", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/login")


def test_privacy_statement(client: TestClient) -> None:
    privacy = page(client.get("/privacy"))
    assert "資料使用聲明" in privacy.text and privacy.has_id("privacy-statement")


@pytest.mark.parametrize("path", ["/", "/register", "/login", "/customs/query", "/officer"])
def test_every_footer_links_the_accessibility_statement(client: TestClient, path: str) -> None:
    footer = page(client.get(path)).id("footer-accessibility")
    assert (footer.get("href"), footer.text) == ("/accessibility", "無障礙聲明")


@pytest.mark.parametrize(
    ("lang", "title", "sections"),
    [
        ("zh-TW", "無障礙聲明", ["遵循標準", "如何檢測", "已知限制", "聯絡我們"]),
        ("en", "Accessibility", ["The standard", "How it is tested", "Known limits", "Contact"]),
    ],
)
def test_the_accessibility_statement(
    client: TestClient, lang: str, title: str, sections: list[str]
) -> None:
    """無障礙聲明 (issue 19): the standard, how it is tested, known limits, whom to contact."""
    statement = page(client.get("/accessibility", params={"lang": lang}))
    assert statement.all("h1")[0].text == title
    assert [h.text for h in statement.all("h2")] == sections
    assert "WCAG 2.1" in statement.id("a11y-standard").text
    assert "0800-299-889" in statement.id("a11y-contact").text


def test_the_outbox_exists_only_in_demo_mode(client: TestClient) -> None:
    assert client.get("/demo/outbox").status_code == 404


def test_demo_outbox_activation_and_login_pages(
    settings: Settings, clock: FixedClock, pki: TestPKI
) -> None:
    from engine import bootstrap

    demo = bootstrap(replace(settings, demo=True), clock=clock)
    pki.publish_to(demo.trust, actor="test")
    card = pki.issue_person("王小明", "6789")
    try:
        with TestClient(create_app(demo)) as client:
            url = start(client, "person.general")
            card_check(client, url, card)
            post_form(client, url, PERSON_ANSWERS)
            outbox = page(client.get("/demo/outbox"))
            links = [a.get("href") or "" for a in outbox.all("a")]
            [activation] = {link for link in links if "/activate/" in link}  # zh-TW and en
            assert "ming@example.com" in outbox.text
            path = "/activate/" + activation.split("/activate/", 1)[1]
            activated = page(post_form(client, path, {}))
            assert "帳號已啟用" in activated.id("activated").text
            assert "ming@example.com" in activated.id("activated").text

            headers = {"X-CSRF-Token": csrf_of(client)}
            challenge = client.post("/api/login/challenge", headers=headers).json()
            body = {
                "challenge_id": challenge["challenge_id"],
                "certificate": b64(card.der()),
                "signature": b64(card.sign(base64.b64decode(challenge["payload"]))),
                "chain": [b64(c) for c in card.chain_der()],
            }
            assert client.post("/api/login", json=body, headers=headers).status_code == 200
            account = page(client.get("/account"))
            assert account.id("account-name").text == "ming@example.com"
            assert account.id("logout").tag == "button"
            out = post_form(client, "/logout", {})
            assert (out.status_code, out.headers["location"]) == (303, "/")
            gone = client.get("/account", follow_redirects=False)
            assert gone.headers["location"] == "/login"
    finally:
        demo.close()
