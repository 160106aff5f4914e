"""The 憑證註冊 web wizard in headless Chromium: real portal, agent, pcscd, SMTP; virtual cards.

Each test drives the pages by the UI contract (ids and texts the portal promises) and asserts
exact texts. Cards are virtual PIV cards in the first vpcd reader; the page reaches them through
the local card agent, as a user's browser would.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from engine import Settings, bootstrap, register_with_card
from engine._settings import Argon2Parameters, MailSettings
from engine.testing.pki import IssuedCard, TestPKI
from readers import open_card
from readers.vcard import RetryState

from ..conftest import COMPANY_ANSWERS, ORG_OID, PERSON_ANSWERS, SECRET
from .conftest import CARD_PIN, InsertCard, Mailbox, Portal, SaveScreenshot

STEP_LABELS = ("申請類別", "憑證檢查", "基本資料", "企業資訊", "註冊完成")
PERSON_STEPS = ("申請類別", "憑證檢查", "基本資料", "註冊完成")
COMPLETED_TEXT = "恭喜您已完成註冊程序"
ACTIVATE_TEXT = "請至您的電子郵件Email進行帳號啟用"
ALREADY_REGISTERED = "您已註冊本系統，系統將為您導回首頁"

PROBE_AGENT_JS = """
(url) => new Promise((resolve) => {
  const socket = new WebSocket(url);
  socket.onopen = () => socket.send(JSON.stringify({id: 1, op: "hello"}));
  socket.onmessage = (event) => { resolve("message:" + event.data); socket.close(); };
  socket.onerror = () => resolve("error");
  socket.onclose = (event) => resolve("close:" + event.code);
})
"""
"""Open the agent's WebSocket, say hello; resolve with the answer, or how the socket failed."""


# -- page helpers ------------------------------------------------------------------------------


def expect_step(page: Page, label: str, steps: tuple[str, ...]) -> None:
    """The step bar shows ``steps`` with ``label`` as the current one."""
    items = page.locator("ol#steps > li")
    expect(items).to_have_count(len(steps))
    for index, name in enumerate(steps):
        expect(items.nth(index)).to_contain_text(name)
    expect(page.locator('ol#steps > li[aria-current="step"]')).to_contain_text(label)


def choose_type(page: Page, portal: Portal, category: str, type_code: str) -> None:
    """Step 1 (申請類別): category, attribute and consent; not submitted yet."""
    page.goto(portal.url("/register"))
    page.locator(f'input[name="category"][value="{category}"]').check()
    page.locator(f'input[name="type"][value="{type_code}"]').check()
    page.locator("#consent").check()


def submit_card(page: Page, reader: str, pin: str) -> None:
    """Step 2 (憑證檢查): ask for the readers, pick the one the agent lists, type the PIN, go on."""
    page.locator("#detect-readers").click()
    page.locator("select#reader").select_option(f"pcsc:{reader}")
    page.locator("input#pin").fill(pin)
    page.locator("#next").click()


@contextmanager
def held_reload(page: Page) -> Iterator[None]:
    """Hold the page's own reload until the block ends.

    After a passed card check the page shows 「檢查完畢」 for a moment and reloads itself into
    the next step; holding that one request keeps the status on screen for the assertion and
    the screenshot, without racing a timer.
    """
    here = page.url
    held: list[Route] = []

    def this_page(url: str) -> bool:
        return url == here

    def hold(route: Route) -> None:
        held.append(route)

    page.route(this_page, hold)
    try:
        yield
    finally:
        page.unroute(this_page, hold)
        for route in held:
            route.continue_()


def pass_card_check(
    page: Page, reader: str, pin: str = CARD_PIN, *, shot: Callable[[], None] | None = None
) -> None:
    """Step 2 with the right PIN: 「檢查完畢」, then (after ``shot``) the page moves on."""
    with held_reload(page):
        submit_card(page, reader, pin)
        try:
            expect(page.locator("#card-status")).to_have_text("檢查完畢")
        except AssertionError as exc:
            pin_error = page.locator("#error-pin").text_content()
            card_error = page.locator("#error-card").text_content()
            raise AssertionError(
                f"the card check did not pass: #error-pin={pin_error!r}, "
                f"#error-card={card_error!r} (a foreign card in {reader}? rerun)"
            ) from exc
        expect(page.locator("#error-pin")).to_be_hidden()
        expect(page.locator("#error-card")).to_be_hidden()
        if shot is not None:
            shot()


def fill_fields(page: Page, answers: Mapping[str, Any]) -> None:
    """Fill every ``#f-<field>`` of this step from ``answers``; locked (readonly) ones stay."""
    for field, value in answers.items():
        box = page.locator(f"#f-{field}")
        if isinstance(value, bool) or box.count() == 0:
            continue
        if box.is_editable():
            box.fill(str(value))


def activation_link(message: EmailMessage, origin: str) -> str:
    """The ``/activate/<token>`` link of an activation mail (plain text preferred)."""
    body = message.get_body(preferencelist=("plain", "html"))
    assert body is not None, "the activation mail has no text body"
    found = re.search(re.escape(origin) + r"/activate/[A-Za-z0-9_.~%-]+", body.get_content())
    assert found, f"no activation link in:\n{body.get_content()}"
    return found.group(0)


def login_with_card(page: Page, portal: Portal, reader: str, account: str) -> None:
    """憑證登入 at /login with the card in ``reader``; the account page names ``account``."""
    page.goto(portal.url("/login"))
    page.locator("#reader").select_option(f"pcsc:{reader}")
    page.locator("#pin").fill(CARD_PIN)
    page.locator("#login").click()
    expect(page).to_have_url(re.compile(re.escape(portal.url("/account")) + r"(\?.*)?$"))
    expect(page.locator("#account-name")).to_have_text(account)


# -- registration through the pages ------------------------------------------------------------


@dataclass(frozen=True)
class Applicant:
    category: str
    type_code: str
    answers: Mapping[str, Any]
    account: str
    locked: Mapping[str, str]
    """Fields the card fills in and locks, with their values."""
    shots: Mapping[str, str]
    """Step label → screenshot file name."""


PERSON = Applicant(
    category="person",
    type_code="person.general",
    answers=PERSON_ANSWERS,
    account="ming@example.com",
    locked={"contact_name": "王小明"},
    shots={
        "申請類別": "step1-category.png",
        "憑證檢查": "step2-card-check.png",
        "基本資料": "step3-basic-data.png",
        "註冊完成": "step5-completed.png",
    },
)
ENTERPRISE = Applicant(
    category="enterprise",
    type_code="enterprise.general",
    answers=COMPANY_ANSWERS,
    account="04595257",
    locked={"ubn": "04595257"},
    shots={"企業資訊": "step4-enterprise-info.png"},
)


@pytest.mark.parametrize(
    ("applicant", "key"),
    [(PERSON, "rsa"), (ENTERPRISE, "ec")],
    ids=["person-rsa", "enterprise-p256"],
)
def test_register_activate_and_log_in(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard, mailbox: Mailbox,
    screenshots: SaveScreenshot, applicant: Applicant, key: str,
) -> None:  # fmt: skip
    """一般個人 (RSA card) / 一般企業 (P-256 card): wizard → mail → activation → card login."""
    card = (
        pki.issue_person(key="rsa")
        if applicant.category == "person"
        else pki.issue_company("04595257", key="ec")
    )
    reader = insert_card(card)
    steps = PERSON_STEPS if applicant.category == "person" else STEP_LABELS

    def shot(label: str) -> None:
        if label in applicant.shots:
            screenshots(page, applicant.shots[label])

    choose_type(page, portal, applicant.category, applicant.type_code)
    expect_step(page, "申請類別", steps)
    shot("申請類別")
    page.locator("#next").click()

    expect_step(page, "憑證檢查", steps)
    pass_card_check(page, reader, shot=lambda: shot("憑證檢查"))

    expect_step(page, "基本資料", steps)
    for field, value in applicant.locked.items():
        expect(page.locator(f"#f-{field}")).to_have_value(value)
        expect(page.locator(f"#f-{field}")).not_to_be_editable()
    fill_fields(page, applicant.answers)
    page.locator("#check-account").click()
    expect(page.locator("#check-account-result")).to_have_text("此帳號可使用")
    expect(page.locator("#account")).to_have_value(applicant.account)
    shot("基本資料")
    page.locator("#next").click()

    if applicant.category == "enterprise":
        expect_step(page, "企業資訊", steps)
        fill_fields(page, applicant.answers)
        shot("企業資訊")
        page.locator("#next").click()

    expect_step(page, "註冊完成", steps)
    completed = page.locator("section#completed")
    expect(completed).to_contain_text(COMPLETED_TEXT)
    expect(completed).to_contain_text(ACTIVATE_TEXT)
    shot("註冊完成")

    mail = mailbox.wait_for(str(applicant.answers["email"]))
    page.goto(activation_link(mail, portal.origin))
    page.locator("#activate").click()
    expect(page.locator("#activated")).to_be_visible()

    login_with_card(page, portal, reader, applicant.account)


# -- the wizard's other paths ------------------------------------------------------------------


def test_language_switch_shows_english(page: Page, portal: Portal) -> None:
    """#lang-switch turns the wizard into English: ``<html lang="en">`` and English labels."""
    page.goto(portal.url("/register"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-TW")
    page.locator("#lang-switch").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.locator('input[name="category"][value="person"]').check()
    expect(page.get_by_text("General individual", exact=True)).to_be_visible()


def test_wrong_pin_tells_the_tries_left(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard
) -> None:
    """A wrong PIN costs one of three tries; #error-pin says how many are left."""
    retry = RetryState()
    reader = insert_card(pki.issue_person(), retry=retry)
    choose_type(page, portal, "person", "person.general")
    page.locator("#next").click()
    submit_card(page, reader, "97531864")
    expect(page.locator("#error-pin")).to_have_text("PIN碼錯誤，剩餘2次機會")
    expect(page.locator("#error-card")).to_be_hidden()
    expect(page.locator("#card-status")).to_have_text("")
    assert retry.tries_left == 2
    expect_step(page, "憑證檢查", PERSON_STEPS)


def test_an_already_registered_card_is_sent_home(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard, mailbox: Mailbox
) -> None:
    """A card whose certificate is registered already: 「您已註冊本系統，系統將為您導回首頁」."""
    card = pki.issue_person(name="林小華", id_last4="6780")
    reader = insert_card(card)
    register_in_process(portal, mailbox, card, reader)

    choose_type(page, portal, "person", "person.general")
    page.locator("#next").click()
    submit_card(page, reader, CARD_PIN)
    expect(page.locator("#error-card")).to_have_text(ALREADY_REGISTERED)
    expect(page).to_have_url(portal.url("/"))


def register_in_process(portal: Portal, mailbox: Mailbox, card: IssuedCard, reader: str) -> None:
    """Register ``card`` (in ``reader``) straight through the engine, on the portal's database."""
    settings = Settings(
        database_url=portal.database_url,
        secret_key=SECRET,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(host=mailbox.host, port=mailbox.port, tls="none"),
    )
    app = bootstrap(settings)
    answers = {
        **PERSON_ANSWERS,
        "email": "lin@example.com",
        "contact_name": "林小華",
        "national_id": "B123456780",
    }
    try:
        with open_card(f"pcsc:{reader}") as opened:
            view = register_with_card(
                app.registrations, type_code="person.general", answers=answers, card=opened,
                pin=CARD_PIN, actor="test",
            )  # fmt: skip
        assert view.state == "completed"
    finally:
        app.close()


def test_an_invalid_ubn_is_reported_next_to_the_field(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard
) -> None:
    """組織團體 gives a 統一編號 at 企業資訊; a wrong check digit shows #error-ubn by the field."""
    reader = insert_card(pki.issue_organization(ORG_OID, key="ec"))
    steps = STEP_LABELS
    choose_type(page, portal, "enterprise", "enterprise.organization")
    page.locator("#next").click()
    expect_step(page, "憑證檢查", steps)
    pass_card_check(page, reader)

    expect_step(page, "基本資料", steps)
    expect(page.locator("#f-oid")).to_have_value(ORG_OID)
    fill_fields(page, {**COMPANY_ANSWERS, "email": "org@example.com"})
    page.locator("#next").click()

    expect_step(page, "企業資訊", steps)
    fill_fields(page, {"company_name": "測試財團法人", "ubn": "04595258"})
    page.locator("#next").click()
    expect(page.locator("#error-ubn")).to_have_text("統一編號錯誤")
    expect_step(page, "企業資訊", steps)
    expect(page.locator("#f-ubn")).to_have_value("04595258")
    # "next to the field": the smallest element holding both holds no other form field
    fields_beside = page.evaluate(
        """() => {
          const field = document.getElementById("f-ubn");
          const error = document.getElementById("error-ubn");
          let box = field.parentElement;
          while (box && !box.contains(error)) box = box.parentElement;
          return box ? box.querySelectorAll('[id^="f-"]').length : -1;
        }"""
    )
    assert fields_beside == 1


# -- the agent's origin check, seen from pages -------------------------------------------------


@pytest.fixture
def foreign_site(tmp_path: Path) -> Iterator[str]:
    """A tiny web site on another loopback port (another origin) serving one HTML page."""
    root = tmp_path / "elsewhere"
    root.mkdir()
    (root / "index.html").write_text(
        "<!doctype html><html lang='en'><title>elsewhere</title><p>another site</p></html>",
        encoding="utf-8",
    )
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="foreign-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_agent_answers_the_portal_only(
    page: Page, portal: Portal, agent: str, foreign_site: str
) -> None:
    """A page from another origin cannot open the agent's socket; the portal's page can."""
    page.goto(foreign_site + "/index.html")
    assert page.evaluate(PROBE_AGENT_JS, agent) == "error"

    page.goto(portal.url("/register"))
    outcome = page.evaluate(PROBE_AGENT_JS, agent)
    assert isinstance(outcome, str) and outcome.startswith("message:"), outcome
    hello = json.loads(outcome.removeprefix("message:"))
    assert (hello["id"], hello["ok"], hello["agent"]) == (1, True, "swreg")
