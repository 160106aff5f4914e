"""通關憑證註冊 with an IC card and 憑證更換作業 in headless Chromium: real portal, agent, pcscd.

Both pages reach the card only through the local card agent (agent.js): the card signs a
single-use challenge bound to the portal's origin, and the PIN never leaves the agent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from engine import App, Settings, bootstrap
from engine._settings import Argon2Parameters, MailSettings
from engine.store import Certificate
from engine.testing.pki import IssuedCard, TestPKI
from readers.pcsc import wait_for_card
from readers.vcard import CardThread, PivApplet

from ..conftest import COMPANY_ANSWERS, SECRET
from ..helpers import enrol
from .conftest import CARD_PIN, CARD_TIMEOUT, InsertCard, Mailbox, Portal
from .test_wizard import login_with_card

UBN = "97162640"  # another company than the wizard tests'
IMPORTED = "主憑證匯入成功!"
RENEWED = "憑證更換完成"


def fingerprint(card: IssuedCard) -> str:
    return hashlib.sha256(card.der()).hexdigest()


def portal_app(portal: Portal, mailbox: Mailbox) -> App:
    """The engine on the portal's database (to arrange accounts and to read what was stored)."""
    settings = Settings(
        database_url=portal.database_url,
        secret_key=SECRET,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(host=mailbox.host, port=mailbox.port, tls="none"),
    )
    return bootstrap(settings)


def certificates(portal: Portal, mailbox: Mailbox) -> list[tuple[str, str, str | None, str]]:
    """Every certificate row as (purpose, fingerprint, usage_type, status), oldest first."""
    app = portal_app(portal, mailbox)
    try:
        with app.database.unit_of_work() as uow:
            rows = uow.session.scalars(select(Certificate).order_by(Certificate.id))
            return [(r.purpose, r.fingerprint, r.usage_type, r.status) for r in rows]
    finally:
        app.close()


@pytest.fixture
def second_reader(
    pki: TestPKI, vpcd_readers: list[tuple[str, int]]
) -> Iterator[Callable[[IssuedCard], str]]:
    """Insert a card into the SECOND vpcd reader (the first holds the old card); removed after."""
    name, port = vpcd_readers[1]
    threads: list[CardThread] = []

    def put(card: IssuedCard) -> str:
        assert wait_for_card(name, present=False, timeout=CARD_TIMEOUT), f"{name} is not empty"
        applet = PivApplet.from_pkcs12(pki.pkcs12_bytes(card, CARD_PIN), CARD_PIN)
        threads.append(CardThread(applet, port=port).start())
        assert wait_for_card(name, present=True, timeout=CARD_TIMEOUT), f"no card in {name}"
        return name

    yield put
    for thread in threads:
        thread.stop()
    if threads:
        assert wait_for_card(name, present=False, timeout=CARD_TIMEOUT), f"{name} not EMPTY"


def test_a_company_imports_its_ic_card_through_the_agent(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard, mailbox: Mailbox
) -> None:
    """IC卡類憑證: 匯入 (PIN → the card signs the challenge) then 送出 → 「主憑證匯入成功!」."""
    card = pki.issue_company(UBN, key="ec")
    reader = insert_card(card)
    page.goto(portal.url("/customs/import?usage_type=warehouse"))
    page.locator("#f-ubn").fill(UBN)
    page.locator("#import-ic").check()
    expect(page.locator("#reader")).to_have_value(f"pcsc:{reader}")

    page.locator("#submit").click()  # 送出 before 匯入: the page asks for the card first
    expect(page.locator("#error-card")).to_have_text("請先按 [匯入] 讀取IC卡。")

    page.locator("#pin").fill("000000")  # a wrong PIN: the agent says so, nothing is stored
    page.locator("#ic-read").click()
    expect(page.locator("#error-pin")).to_contain_text("剩餘")
    assert certificates(portal, mailbox) == []

    page.locator("#pin").fill(CARD_PIN)
    page.locator("#ic-read").click()
    expect(page.locator("#ic-loaded")).to_have_text("卡片資訊載入完成，請按 [送出]。")
    expect(page.locator("#pin")).to_have_value("")  # the PIN does not linger in the page
    page.locator("#submit").click()
    expect(page.locator("#import-success")).to_have_text(IMPORTED)
    expect(page.locator("#query-link")).to_have_text(UBN)
    assert certificates(portal, mailbox) == [("signing", fingerprint(card), "warehouse", "active")]

    page.locator("#query-link").click()  # 通關憑證查詢 lists it as an IC card
    expect(page.locator("table#results tbody tr")).to_have_count(1)
    expect(page.locator("table#results tbody tr td").first).to_have_text("IC卡")


def test_a_wrong_ubn_is_refused_next_to_the_field(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard, mailbox: Mailbox
) -> None:
    """The card's UBN is not the one typed: #error-ubn by the field, and nothing stored."""
    insert_card(pki.issue_company(UBN))
    page.goto(portal.url("/customs/import?usage_type=shipping"))
    page.locator("#f-ubn").fill("04595257")
    page.locator("#import-ic").check()
    page.locator("#pin").fill(CARD_PIN)
    page.locator("#ic-read").click()
    expect(page.locator("#ic-loaded")).not_to_be_hidden()
    page.locator("#submit").click()
    expect(page.locator("#error-ubn")).not_to_be_empty()
    expect(page.locator("#f-ubn")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#import-success")).to_be_hidden()
    assert [row for row in certificates(portal, mailbox) if row[2] == "shipping"] == []


def test_an_account_holder_replaces_the_card(
    page: Page,
    portal: Portal,
    pki: TestPKI,
    insert_card: InsertCard,
    second_reader: Callable[[IssuedCard], str],
    mailbox: Mailbox,
) -> None:
    """憑證更換作業: log in with the old card, the new card of the same company signs."""
    ubn = "04595257"
    old = pki.issue_company(ubn, name="更換測試股份有限公司")
    app = portal_app(portal, mailbox)
    try:
        view = enrol(app, "enterprise.general", old, {**COMPANY_ANSWERS, "ubn": ubn})
        assert view.state == "completed"
        app.accounts.activate(app.accounts.send_activation(ubn))
    finally:
        app.close()
    login_with_card(page, portal, insert_card(old), ubn)

    new = pki.issue_company(ubn, name="更換測試股份有限公司", key="ec")
    reader = second_reader(new)
    page.goto(portal.url("/renewal"))
    expect(page.locator("#account-name")).to_have_text(ubn)
    page.locator("#detect-readers").click()
    page.locator("#reader").select_option(f"pcsc:{reader}")
    page.locator("#pin").fill(CARD_PIN)
    page.locator("#replace").click()
    expect(page.locator("#renewed")).to_have_text(re.compile(rf"^{RENEWED} \({ubn}\)$"))
    logins = [row for row in certificates(portal, mailbox) if row[0] == "login"]
    assert [(fp, status) for _, fp, _, status in logins] == [
        (fingerprint(old), "replaced"),
        (fingerprint(new), "active"),
    ]
