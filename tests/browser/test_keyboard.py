"""Keyboard-only walks in headless Chromium (issue 19 item 5): the wizard from 步驟1 to 註冊完成 for
a company, 憑證登入 to the account page, and an officer's card login and 核准 of a registration
waiting at the approval step (待審核) — real portal, agent, pcscd and virtual cards, as in
test_wizard.py and test_officer_console.py.

Only ``page.keyboard`` drives the pages: Tab and Shift+Tab to move, typing into fields, Space on
check boxes and buttons, Enter to submit or follow a link, and the arrow keys inside a radio group
(its one tab stop: the arrows choose within it). No click, ``fill`` or ``check``. At every stop
the focused element draws a visible ring (:func:`test_accessibility.focused`: an outline ≥ 2 px,
≥ 3:1 against what surrounds it); the stops in ``<main>`` are exactly the page's controls in the
order they appear, each below the one before it or to its right on the same line; the header and
menu come before ``<main>``, the footer after it. The outcome is read back from the pages and the
database. A wrong PIN typed at 憑證登入 gives the focus back to the PIN field.

The portal has conftest's approval step for 組織團體 only (``approval_scope``): a company's
registration ends at 註冊完成, and the officer approves an organisation's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from itertools import pairwise

import pytest
from playwright.sync_api import Page, expect

from engine import App
from engine.testing.pki import TestPKI
from readers.vcard import RetryState

from ..conftest import COMPANY_ANSWERS, ORG_OID, PERSON_ANSWERS
from ..helpers import enrol, registration_row
from ..test_approval import walk
from .conftest import CARD_PIN, InsertCard, Portal
from .test_accessibility import focused, ring_is_visible
from .test_officer_console import (
    live_sessions,
    put_on_officer_list,
    registration_audit,
    registration_state,
    stored_account,
)
from .test_wizard import STEP_LABELS, expect_step

UBN = "04595257"
ORG_UBN = "12345675"
APPROVED = "已核准。"
AVAILABLE = "此帳號可使用"


@pytest.fixture(scope="module")
def approval_scope() -> str:
    """The approval step for 組織團體 only: a company's registration ends at 註冊完成."""
    return '["enterprise.organization"]'


@pytest.fixture(scope="module")
def portal_environment(approval_environment: dict[str, str]) -> dict[str, str]:
    """conftest's ``portal`` with the approval plugin and its workflow."""
    return approval_environment


# -- the keyboard ------------------------------------------------------------------------------

_WHERE = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) { return null; }
  const href = e.getAttribute('href'), box = e.getBoundingClientRect();
  const kind = e.classList.length ? '.' + e.classList[0] : '';
  return {
    name: e.id ? '#' + e.id : e.tagName.toLowerCase() + kind + (href ? `[href=${href}]` : ''),
    main: !!e.closest('main'),
    top: box.top + window.scrollY, bottom: box.bottom + window.scrollY,
    left: box.left + window.scrollX, right: box.right + window.scrollX,
  };
}"""


@dataclass(frozen=True)
class Stop:
    """Where the focus is: ``#id`` (or ``tag.class[href=…]``), whether in ``<main>``, and its
    box in page coordinates."""

    name: str
    main: bool
    top: float
    bottom: float
    left: float
    right: float


def press(page: Page, key: str) -> Stop:
    """Press ``key``; where the focus went, asserting that it shows a visible ring there."""
    stop = _press(page, key)
    assert stop is not None, f"after {key} no control has the focus"
    return stop


def _press(page: Page, key: str) -> Stop | None:
    page.keyboard.press(key)
    where = page.evaluate(_WHERE)
    if where is None:
        return None
    stop = Stop(**where)
    ring = focused(page)
    assert ring is not None and ring_is_visible(ring), f"{key} → {stop.name}: {ring}"
    return stop


def tab_to(page: Page, name: str, *, limit: int = 40) -> list[Stop]:
    """Press Tab until ``name`` has the focus; every stop on the way."""
    path: list[Stop] = []
    for _ in range(limit):
        path.append(press(page, "Tab"))
        if path[-1].name == name:
            return path
    raise AssertionError(f"Tab never reached {name}: {[stop.name for stop in path]}")


def type_into(page: Page, name: str, text: str) -> Stop:
    """Tab to the next control, which must be ``name``, and type ``text`` there."""
    stop = press(page, "Tab")
    assert stop.name == name, f"Tab went to {stop.name}, not {name}"
    page.keyboard.type(text)
    return stop


def in_reading_order(stops: list[Stop]) -> None:
    """Each stop is to the right of the one before on the same line, or on a later line."""
    for before, after in pairwise(stops):
        same_line = after.top < before.bottom and before.top < after.bottom
        later = after.left > before.left if same_line else after.top > before.top
        assert later, f"{after.name} comes after {before.name} but is not below or beside it"


def main_stops(path: list[Stop]) -> list[str]:
    """The names of ``path``'s stops in ``<main>``, one run of them: the header and menu
    before it, the footer after it, each in reading order itself."""
    inside = [index for index, stop in enumerate(path) if stop.main]
    assert inside, [stop.name for stop in path]
    first, last = inside[0], inside[-1]
    assert inside == list(range(first, last + 1)), [(stop.name, stop.main) for stop in path]
    header = [stop for stop in path[:first] if not stop.name.startswith("a.skip-link")]
    for part in (header, path[first : last + 1], path[last + 1 :]):
        in_reading_order(part)  # the skip link shows over the header while it has the focus
    return [stop.name for stop in path[first : last + 1]]


def around(page: Page, *, limit: int = 60) -> list[Stop]:
    """Tab from the top of the page to its end (the focus leaves for the browser's own
    controls); every stop on the way."""
    path: list[Stop] = []
    for _ in range(limit):
        stop = _press(page, "Tab")
        if stop is None:
            assert path, "Tab reached nothing on the page"
            return path
        path.append(stop)
    raise AssertionError(f"Tab did not reach the end in {limit}: {[stop.name for stop in path]}")


def focus_name(page: Page) -> str | None:
    where = page.evaluate(_WHERE)
    return None if where is None else str(where["name"])


def card_step_ready(page: Page, reader: str) -> None:
    """The agent has listed the readers and chosen the one holding the card."""
    expect(page.locator("#reader")).to_have_value(f"pcsc:{reader}")


def log_in_with_the_card(page: Page, reader: str) -> None:
    """A card login page (憑證登入 or the console's): Tab to the PIN, type it, Tab to 登入 past
    the page's controls in order, Enter."""
    card_step_ready(page, reader)
    path = tab_to(page, "#pin")
    page.keyboard.type(CARD_PIN)
    path += tab_to(page, "#login")
    assert main_stops(path) == ["a[href=/]", "#reader", "#detect-readers", "#pin", "#login"]
    page.keyboard.press("Enter")


# -- 1. the wizard, 步驟1 to 註冊完成, for a company ---------------------------------------------


def test_a_company_registers_with_the_keyboard_alone(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard, approval_app: App
) -> None:
    card = pki.issue_company(UBN)
    reader = insert_card(card)
    answers = COMPANY_ANSWERS

    # 步驟1 申請類別: 企業 by the arrows, its first 屬性 (一般企業或組織團體) comes chosen
    page.goto(portal.url("/register"))
    expect_step(page, "申請類別", ("申請類別", "憑證檢查", "基本資料", "註冊完成"))
    path = tab_to(page, "#category-person")
    assert path[0].name == "a.skip-link[href=#main]", "the skip link comes first"
    path.append(press(page, "ArrowRight"))
    assert path[-1].name == "#category-enterprise"
    expect(page.locator("#category-enterprise")).to_be_checked()
    expect(page.locator("#type-enterprise-general")).to_be_checked()
    expect_step(page, "申請類別", STEP_LABELS)
    for name in ("#type-enterprise-general", "#iot", "#consent"):
        path.append(press(page, "Tab"))
        assert path[-1].name == name
    page.keyboard.press("Space")
    expect(page.locator("#consent")).to_be_checked()
    expect(page.locator("#iot")).not_to_be_checked()
    path += tab_to(page, "#privacy")
    assert main_stops(path) == [
        "a[href=/]", "#category-person", "#category-enterprise", "#type-enterprise-general",
        "#iot", "#consent", "#next", "#cancel", "#privacy",
    ]  # fmt: skip
    assert press(page, "Shift+Tab").name == "#cancel"
    assert press(page, "Shift+Tab").name == "#next"
    page.keyboard.press("Enter")

    # 步驟2 憑證檢查: the agent's reader with the card comes chosen; the PIN, then 下一步
    expect_step(page, "憑證檢查", STEP_LABELS)
    registration_id = page.url.rsplit("/", 1)[-1]
    card_step_ready(page, reader)
    path = tab_to(page, "#pin")
    page.keyboard.type(CARD_PIN)
    path += tab_to(page, "#cancel")
    assert main_stops(path) == [
        "a[href=/]", "#reader", "#detect-readers", "#pin", "#back", "#next", "#cancel",
    ]  # fmt: skip
    assert press(page, "Shift+Tab").name == "#next"
    page.keyboard.press("Enter")

    # 步驟3 基本資料: 統一編號 from the card (read-only); 檢核是否存在 by Space
    expect_step(page, "基本資料", STEP_LABELS)
    expect(page.locator("#f-ubn")).to_have_value(UBN)
    path = tab_to(page, "#account")
    path.append(type_into(page, "#f-email", answers["email"]))
    path.append(type_into(page, "#f-contact_name", answers["contact_name"]))
    path.append(press(page, "Tab"))
    assert path[-1].name == "#f-ubn"
    expect(page.locator("#f-ubn")).not_to_be_editable()
    path.append(press(page, "Tab"))
    assert path[-1].name == "#f-sub_card"
    path.append(press(page, "Tab"))
    assert path[-1].name == "#check-account"
    page.keyboard.press("Space")
    expect(page.locator("#check-account-result")).to_have_text(AVAILABLE)
    expect(page.locator("#check-account")).to_be_enabled()
    assert focus_name(page) == "#check-account", "the check keeps the focus on its button"
    for field in ("phone", "address", "password", "password_confirm"):
        path.append(type_into(page, f"#f-{field}", answers[field]))
    path += tab_to(page, "#cancel")
    assert main_stops(path) == [
        "a[href=/]", "#account", "#f-email", "#f-contact_name", "#f-ubn", "#f-sub_card",
        "#check-account", "#f-phone", "#f-address", "#f-password", "#f-password_confirm",
        "#back", "#next", "#cancel",
    ]  # fmt: skip
    expect(page.locator("#account")).to_have_value(UBN)
    assert press(page, "Shift+Tab").name == "#next"
    page.keyboard.press("Enter")

    # 步驟4 企業資訊
    expect_step(page, "企業資訊", STEP_LABELS)
    path = tab_to(page, "#account")
    path.append(type_into(page, "#f-company_name", answers["company_name"]))
    path += tab_to(page, "#cancel")
    assert main_stops(path) == [
        "a[href=/]", "#account", "#f-company_name", "#back", "#next", "#cancel",
    ]  # fmt: skip
    assert press(page, "Shift+Tab").name == "#next"
    page.keyboard.press("Enter")

    # 步驟5 註冊完成: the account, and every link on the way to 回首頁
    expect_step(page, "註冊完成", STEP_LABELS)
    expect(page.locator("#completed-account")).to_have_text(UBN)
    path = tab_to(page, "#home")
    assert main_stops(path) == [
        "a[href=/]", "a[href=tel:0800299889]", "a[href=mailto:cpt_helpdesk@mail.sw.nat.gov.tw]",
        "#set-certificate", "#renewal", "#home",
    ]  # fmt: skip

    row = registration_row(approval_app, registration_id)
    assert (row.applicant_type, row.state, row.account_name) == (
        "enterprise.general",
        "completed",
        UBN,
    )
    assert row.certificate_fingerprint == hashlib.sha256(card.der()).hexdigest()
    account = stored_account(approval_app, UBN)
    assert (account.status, account.email) == ("pending_activation", answers["email"])


# -- 2. 憑證登入 to the account page -------------------------------------------------------------


def test_card_login_with_the_keyboard_alone(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard, approval_app: App
) -> None:
    email = "keys@example.com"
    card = pki.issue_person("鍵盤人", "6786")
    answers = {**PERSON_ANSWERS, "email": email, "contact_name": "鍵盤人",
               "national_id": "F126456786"}  # fmt: skip
    view = enrol(approval_app, "person.general", card, answers)
    assert (view.state, view.account) == ("completed", email)
    approval_app.accounts.activate(approval_app.accounts.send_activation(email))
    account = stored_account(approval_app, email)
    reader = insert_card(card)

    page.goto(portal.url("/login"))
    log_in_with_the_card(page, reader)

    expect(page).to_have_url(re.compile(re.escape(portal.url("/account")) + r"(\?.*)?$"))
    expect(page.locator("#account-name")).to_have_text(email)
    assert live_sessions(approval_app, account.id) == 1
    assert main_stops(around(page)) == [
        "a[href=/]", "#renewal-link", "#customs-link", "#f-current_password", "#f-password",
        "#f-password_confirm", "#change-password", "#password-by-card", "#f-email",
        "#f-email_password", "#change-email", "#logout-all", "#logout",
    ]  # fmt: skip


def test_a_wrong_pin_gives_the_focus_back_to_the_pin(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard
) -> None:
    """登入 pressed with a wrong PIN: the error by the PIN field, one try fewer, and the focus
    there again (the button is busy while the card works, which lets the focus go)."""
    retry = RetryState()
    reader = insert_card(pki.issue_person("錯碼人", "5555"), retry=retry)
    page.goto(portal.url("/login"))
    card_step_ready(page, reader)
    tab_to(page, "#pin")
    page.keyboard.type("97531864")
    assert press(page, "Tab").name == "#login"
    page.keyboard.press("Enter")
    expect(page.locator("#error-pin")).to_have_text("PIN碼錯誤，剩餘2次機會")
    assert retry.tries_left == 2
    expect(page.locator("#pin")).to_be_focused()
    ring = focused(page)
    assert ring is not None and ring_is_visible(ring), ring
    expect(page.locator("#pin")).to_have_value("")
    expect(page).to_have_url(portal.url("/login"))


def test_forgot_password_with_a_wrong_pin_gives_the_focus_back_to_the_pin(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard
) -> None:
    """忘記密碼 walked in order (帳號, 新密碼, 確認密碼, the reader, the PIN, 重設密碼) with a wrong
    PIN: the PIN's error, one try fewer, the passwords cleared and the focus on the PIN field."""
    retry = RetryState()
    reader = insert_card(pki.issue_person("忘密人", "4444"), retry=retry)
    page.goto(portal.url("/password/forgot"))
    card_step_ready(page, reader)
    path = tab_to(page, "a[href=/]")
    for name, text in (("#f-account", "someone@example.com"), ("#f-password", "N3wPassw0rd!"),
                       ("#f-password_confirm", "N3wPassw0rd!")):  # fmt: skip
        path.append(type_into(page, name, text))
    path += tab_to(page, "#pin")
    page.keyboard.type("97531864")
    path += tab_to(page, "#reset")
    assert main_stops(path) == [
        "a[href=/]", "#f-account", "#f-password", "#f-password_confirm", "#reader",
        "#detect-readers", "#pin", "#reset",
    ]  # fmt: skip
    page.keyboard.press("Enter")
    expect(page.locator("#error-pin")).to_have_text("PIN碼錯誤，剩餘2次機會")
    assert retry.tries_left == 2
    expect(page.locator("#pin")).to_be_focused()
    ring = focused(page)
    assert ring is not None and ring_is_visible(ring), ring
    expect(page.locator("#f-password")).to_have_value("")
    expect(page.locator("#f-account")).to_have_value("someone@example.com")


# -- 3. an officer's card login and 核准 ---------------------------------------------------------


def test_an_officer_approves_with_the_keyboard_alone(
    page: Page, portal: Portal, pki: TestPKI, insert_card: InsertCard, approval_app: App
) -> None:
    answers = {**COMPANY_ANSWERS, "ubn": ORG_UBN, "email": "org@keys.example"}
    waiting = walk(approval_app, "enterprise.organization", pki.issue_organization(ORG_OID),
                   answers)  # fmt: skip
    assert (waiting.state, waiting.awaiting) == ("approval", "officer"), waiting
    card = put_on_officer_list(approval_app, pki, "柯關員", "reviewer", "4321")
    reader = insert_card(card)

    page.goto(portal.url("/officer"))
    log_in_with_the_card(page, reader)
    expect(page.locator("#officer-name")).to_have_text("柯關員")

    link = f"a[href=/officer/registrations/{waiting.id}]"
    path = tab_to(page, link)
    assert main_stops(path) == ["a[href=/]", "div.table-scroll", link]
    page.keyboard.press("Enter")
    expect(page).to_have_url(portal.url(f"/officer/registrations/{waiting.id}"))
    expect(page.locator("#registration-state")).to_have_text("待審核")

    path = tab_to(page, "#approve")
    assert main_stops(path) == ["a[href=/]", "#approve"]
    page.keyboard.press("Enter")
    expect(page.locator("#done")).to_have_text(APPROVED)
    expect(page.locator("#registration-state")).to_have_text("註冊完成")

    assert registration_state(approval_app, waiting.id) == "completed"
    assert stored_account(approval_app, ORG_OID).status == "pending_activation"
    [decision] = [r for r in registration_audit(approval_app, waiting.id) if r.event == "approve"]
    assert (decision.actor, decision.from_state, decision.to_state) == (
        "officer:柯關員", "approval", "completed",
    )  # fmt: skip
    assert decision.diff["certificate"] == hashlib.sha256(card.der()).hexdigest()
