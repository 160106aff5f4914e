"""忘記密碼 and the account page in headless Chromium: real portal, agent, pcscd, SMTP (issue 16).

The card signs through the local card agent (agent.js) as on every card page; mail arrives at
the module's real SMTP server. What the pages did is read back from the portal's database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from engine import App
from engine.services.hashing import PasswordHasher
from engine.services.mail import EMAIL_CHANGE_SUBJECT, PASSWORD_RESET_SUBJECT
from engine.store import Account, AuditEntry
from engine.testing.pki import IssuedCard, TestPKI

from ..conftest import PERSON_ANSWERS
from ..helpers import enrol
from .conftest import CARD_PIN, InsertCard, Mailbox, Portal, SaveScreenshot
from .test_customs_renewal import portal_app
from .test_wizard import login_with_card

NEW_PASSWORD = "N3wPassw0rd!"


@pytest.fixture
def arranged(portal: Portal, mailbox: Mailbox) -> Iterator[App]:
    app = portal_app(portal, mailbox)
    yield app
    app.close()


LIN = {"contact_name": "林小華", "national_id": "B123456780"}
"""Another person than PERSON_ANSWERS' 王小明."""


def registered(
    app: App, pki: TestPKI, email: str, person: dict[str, str] | None = None
) -> IssuedCard:
    """An activated 個人 account ``email`` with its card (王小明's, or ``person``'s)."""
    answers = {**PERSON_ANSWERS, **(person or {}), "email": email}
    card = pki.issue_person(answers["contact_name"], answers["national_id"][-4:])
    view = enrol(app, "person.general", card, answers)
    assert (view.state, view.account) == ("completed", email)
    app.accounts.activate(app.accounts.send_activation(email))
    return card


def account(app: App, name: str) -> Account:
    with app.database.unit_of_work() as uow:
        row = uow.session.scalar(select(Account).where(Account.name == name))
        assert row is not None
        uow.session.expunge(row)
        return row


def events(app: App, event: str) -> int:
    with app.database.unit_of_work() as uow:
        return len(list(uow.session.scalars(select(AuditEntry).where(AuditEntry.event == event))))


def test_forgot_password_with_the_card(
    page: Page,
    portal: Portal,
    pki: TestPKI,
    insert_card: InsertCard,
    mailbox: Mailbox,
    arranged: App,
    screenshots: SaveScreenshot,
) -> None:
    """忘記密碼: another account's card is refused; the account's own card sets the password."""
    email = "forgot@example.com"
    registered(arranged, pki, email)
    other = registered(arranged, pki, "other@example.com", LIN)
    before = account(arranged, email).password_hash

    page.goto(portal.url("/"))
    page.get_by_role("link", name="忘記密碼").click()
    expect(page).to_have_url(portal.url("/password/forgot"))
    page.locator("#f-account").fill(email)
    page.locator("#f-password").fill(NEW_PASSWORD)
    page.locator("#f-password_confirm").fill(NEW_PASSWORD)
    reader = insert_card(other)
    expect(page.locator("#reader")).to_have_value(f"pcsc:{reader}")
    screenshots(page, "password-forgot.png")
    page.locator("#pin").fill(CARD_PIN)
    page.locator("#reset").click()

    expect(page.locator("#error-account")).to_have_text("無權限執行此操作")
    expect(page.locator("#f-account")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-password")).to_have_value("")  # typed again for each try
    assert account(arranged, email).password_hash == before
    assert mailbox.messages_to(email)[-1]["Subject"] != PASSWORD_RESET_SUBJECT

    page.locator("#pin").fill("000000")  # the card's own wrong-PIN answer, next to the PIN
    page.locator("#f-password").fill(NEW_PASSWORD)
    page.locator("#f-password_confirm").fill(NEW_PASSWORD)
    page.locator("#reset").click()
    expect(page.locator("#error-pin")).to_contain_text("PIN")


def test_forgot_password_resets_and_ends_every_session(
    page: Page,
    portal: Portal,
    pki: TestPKI,
    insert_card: InsertCard,
    mailbox: Mailbox,
    arranged: App,
) -> None:
    email = "reset@example.com"
    card = registered(arranged, pki, email)
    reader = insert_card(card)
    login_with_card(page, portal, reader, email)

    page.goto(portal.url("/account"))
    page.locator("#password-by-card").click()
    expect(page.locator("#f-account")).to_have_value(email)
    page.locator("#f-password").fill(NEW_PASSWORD)
    page.locator("#f-password_confirm").fill(NEW_PASSWORD)
    page.locator("#pin").fill(CARD_PIN)
    page.locator("#reset").click()

    expect(page.locator("#reset-done")).to_contain_text(email)
    assert PasswordHasher().verify(account(arranged, email).password_hash, NEW_PASSWORD)
    assert events(arranged, "password_reset") >= 1
    notice = [m for m in mailbox.messages_to(email) if m["Subject"] == PASSWORD_RESET_SUBJECT]
    assert len(notice) == 1
    page.goto(portal.url("/account"))  # the reset ended this browser's session too
    expect(page).to_have_url(portal.url("/login"))


def test_the_account_page_changes_password_and_email_and_logs_out_everywhere(
    page: Page,
    portal: Portal,
    pki: TestPKI,
    insert_card: InsertCard,
    mailbox: Mailbox,
    arranged: App,
    screenshots: SaveScreenshot,
) -> None:
    email = "pages@example.com"
    card = registered(arranged, pki, email)
    login_with_card(page, portal, insert_card(card), email)

    expect(page.locator("#account-email")).to_have_text("p***s@example.com")
    expect(page.locator("#certificates tbody tr")).to_have_count(1)
    expect(page.locator("#sessions tr.current")).to_contain_text("（本裝置）")
    screenshots(page, "account.png")

    page.locator("#f-current_password").fill("Wr0ngPassword!")
    page.locator("#f-password").fill(NEW_PASSWORD)
    page.locator("#f-password_confirm").fill(NEW_PASSWORD)
    page.locator("#change-password").click()
    expect(page.locator("#error-current_password")).to_have_text("密碼錯誤")
    assert account(arranged, email).failed_passwords == 1

    page.locator("#f-current_password").fill(PERSON_ANSWERS["password"])
    page.locator("#f-password").fill(NEW_PASSWORD)
    page.locator("#f-password_confirm").fill(NEW_PASSWORD)
    page.locator("#change-password").click()
    expect(page.locator("#done")).to_have_text("密碼已變更，其他裝置已登出。")
    assert PasswordHasher().verify(account(arranged, email).password_hash, NEW_PASSWORD)

    page.locator("#f-email").fill("pages-new@example.org")
    page.locator("#f-email_password").fill(NEW_PASSWORD)
    page.locator("#change-email").click()
    expect(page.locator("#done")).to_have_text("確認信已寄出，請至新信箱點選連結。")
    confirmation = mailbox.wait_for("pages-new@example.org")
    assert confirmation["Subject"] == EMAIL_CHANGE_SUBJECT
    text = confirmation.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(re.escape(portal.origin) + r"/account/email/[A-Za-z0-9_-]{43}", text)
    assert link is not None
    page.goto(link.group(0))
    assert account(arranged, email).email == email  # opening the link changes nothing
    page.locator("#email-confirm").click()
    expect(page.locator("#email-changed")).to_contain_text(email)
    assert account(arranged, email).email == "pages-new@example.org"

    page.goto(portal.url("/account"))
    page.locator("#logout-all").click()
    expect(page).to_have_url(portal.url("/login"))
    page.goto(portal.url("/account"))
    expect(page).to_have_url(portal.url("/login"))
    assert events(arranged, "logout_all") >= 1
