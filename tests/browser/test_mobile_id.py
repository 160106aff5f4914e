"""行動自然人憑證 (the mobile citizen certificate, issue 17) in headless Chromium: the wizard's card
step, 憑證登入 and 忘記密碼 with the phone instead of a card (mobile.js, DESIGN.md §13).

The portal (``swreg serve``) talks over real HTTP to the TW FidO mock of
:mod:`engine.testing.twfido`, which runs in this process; the test plays the phone with
``mock.approve`` / ``reject`` / ``expire`` once the page shows the QR code (the ticket exists by
then). The page polls the portal every ``poll_after`` (4) seconds, so each answer of the phone
takes one poll to show. What was stored is read back from the portal's database.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from engine import App
from engine._errors import ErrorCode, message_for
from engine.core.identifiers import national_id_check_digit
from engine.services.hashing import PasswordHasher
from engine.services.mail import PASSWORD_RESET_SUBJECT
from engine.store import Account, Certificate, MobileIdTicket
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.twfido import TwFidoHolder, TwFidoMock, TwFidoTicket

from ..conftest import PERSON_ANSWERS
from ..helpers import enrol, registration_row
from .conftest import TWFIDO_PERSON, Mailbox, Portal, SaveScreenshot
from .test_customs_renewal import portal_app
from .test_wizard import (
    COMPLETED_TEXT,
    PERSON_STEPS,
    activation_link,
    choose_type,
    expect_step,
    fill_fields,
    held_reload,
)

WAITING = "請以行動自然人憑證App掃描QR Code並於App中確認，等待確認中…"
NEW_PASSWORD = "N3wPassw0rd!"


@pytest.fixture
def stored(twfido_portal: Portal, mailbox: Mailbox) -> Iterator[App]:
    """The engine on the portal's database: to arrange accounts and read what was stored."""
    app = portal_app(twfido_portal, mailbox)
    yield app
    app.close()


# -- people with a mobile certificate ---------------------------------------------------------


def national_id(serial: int, letter: str = "F") -> str:
    """A valid 身分證字號 ``<letter>1<serial, 7 digits><check digit>``."""
    head = f"{letter}1{serial:07d}"
    return head + str(national_id_check_digit(head))


def holder(
    pki: TestPKI, twfido: TwFidoMock, name: str, serial: int, *, last4: str | None = None
) -> tuple[str, IssuedCard]:
    """A person with a mobile certificate at the mock: their ID and certificate (whose SDA
    last four digits are the ID's unless ``last4`` says otherwise)."""
    number = national_id(serial)
    card = pki.issue_person(name, last4 or number[-4:], key="rsa", card_rank="mobile")
    twfido.holders[number] = TwFidoHolder(card)
    return number, card


def answers_for(number: str, name: str, email: str) -> dict[str, Any]:
    return {**PERSON_ANSWERS, "national_id": number, "contact_name": name, "email": email}


# -- page helpers -----------------------------------------------------------------------------


def to_card_step(page: Page, portal: Portal) -> str:
    """一般個人 up to 憑證檢查; the registration's id."""
    choose_type(page, portal, "person", "person.general")
    page.locator("#next").click()
    expect_step(page, "憑證檢查", PERSON_STEPS)
    found = re.search(r"/register/([0-9a-f-]{36})", page.url)
    assert found, page.url
    return found.group(1)


def start_mobile(page: Page, number: str) -> None:
    """Choose 行動自然人憑證, type the ID, press 開始驗證; the QR code then shows."""
    page.locator("#bridge-mobile").check()
    page.locator("#mobile-national-id").fill(number)
    page.locator("#mobile-start").click()
    expect(page.locator("#mobile-qr")).to_be_visible()
    expect(page.locator("#mobile-status")).to_have_text(WAITING)
    expect(page.locator("#mobile-start")).to_be_disabled()
    expect(page.locator("#mobile-status")).to_be_focused()  # not lost with the disabled button


def ticket_of(twfido: TwFidoMock, number: str) -> TwFidoTicket:
    """The one ticket the mock holds pending for ``number``'s phone."""
    tickets = [t for t in twfido.pending() if t.id_num == number]
    assert len(tickets) == 1, tickets
    return tickets[0]


def expect_final(page: Page, code: ErrorCode, state: str) -> None:
    """A final answer in #mobile-status, the portal's message in the page's language alone (the
    service's English detail, e.g. TW FidO's code, stays in the API's answer); the QR code is
    gone and 重新產生 replaces 開始驗證."""
    expect(page.locator("#mobile-status")).to_have_text(message_for(code))
    expect(page.locator("#mobile-status")).to_have_attribute("data-state", state)
    expect(page.locator("#mobile-waiting")).to_be_hidden()
    expect(page.locator("#mobile-restart")).to_be_visible()
    expect(page.locator("#mobile-start")).to_be_hidden()


# -- reading the database ---------------------------------------------------------------------


def password_hash(app: App, name: str) -> str:
    with app.database.unit_of_work() as uow:
        found = uow.session.scalar(select(Account.password_hash).where(Account.name == name))
        assert found is not None
        return found


def tickets_left(app: App) -> int:
    """Mobile ID tickets the portal still holds (each final answer removes its own)."""
    with app.database.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(MobileIdTicket)) or 0)


def certificates_of(app: App, card: IssuedCard) -> list[tuple[str, str | None, str | None]]:
    """(purpose, card_rank, account name) of each stored row of ``card``'s certificate."""
    fingerprint = hashlib.sha256(card.der()).hexdigest()
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(
            select(Certificate).where(Certificate.fingerprint == fingerprint)
        )
        return [(r.purpose, r.card_rank, r.account.name if r.account else None) for r in rows]


def expect_nothing_stored(
    app: App, registration_id: str, card: IssuedCard, tickets: int,
    rows: list[tuple[str, str | None, str | None]] | None = None,
) -> None:  # fmt: skip
    """The registration is still at 憑證檢查 with no certificate, ``card``'s certificate has only
    ``rows`` (none), and no ticket is left over."""
    row = registration_row(app, registration_id)
    assert (row.state, row.certificate_der, row.certificate_fingerprint, row.evidence) == (
        "card_check", None, None, None,
    )  # fmt: skip
    assert certificates_of(app, card) == (rows or [])
    assert tickets_left(app) == tickets


# -- 憑證檢查, 註冊完成, 憑證登入 -----------------------------------------------------------------


def test_register_with_the_mobile_id_and_log_in_with_it(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, mailbox: Mailbox,
    stored: App, screenshots: SaveScreenshot,
) -> None:  # fmt: skip
    """一般個人 with 行動自然人憑證: QR code → the phone approves → 基本資料 → 註冊完成 (the
    certificate stored with rank ``mobile``) → activation → 憑證登入 with the phone → /account."""
    page = twfido_page
    card = twfido.holders[TWFIDO_PERSON].card
    email = "mobile@example.com"
    registration_id = to_card_step(page, twfido_portal)
    before = tickets_left(stored)

    expect(page.locator("#bridge-card")).to_be_checked()
    expect(page.locator("#card-part")).to_be_visible()
    expect(page.locator("#mobile-id")).to_be_hidden()
    page.locator("#bridge-mobile").check()
    expect(page.locator("#card-part")).to_be_hidden()
    expect(page.locator("#agent-missing")).to_be_hidden()  # no card component is needed
    page.locator("#mobile-national-id").fill(TWFIDO_PERSON.lower())
    expect(page.locator("#mobile-national-id")).to_have_value(TWFIDO_PERSON)
    page.locator("#mobile-start").click()

    qr = page.locator("#mobile-qr")
    expect(qr).to_be_visible()
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml")  # drawn by the portal
    expect(qr).to_have_attribute("alt", "請以行動自然人憑證App掃描此QR Code")
    expect(page.locator("#mobile-status")).to_have_text(WAITING)
    expect(page.locator("#mobile-countdown")).to_have_text(re.compile(r"^剩餘時間 \d+:\d\d$"))
    ticket = ticket_of(twfido, TWFIDO_PERSON)
    assert ticket.op_code == "SIGN"
    link = page.locator("#mobile-app-link")
    expect(link).to_have_text("開啟行動自然人憑證App")
    href = link.get_attribute("href") or ""
    assert href.startswith("mobilemoica://moica.moi.gov.tw/")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)
    assert query["sp_ticket"] == [ticket.sp_ticket]
    screenshots(page, "mobile-id-qr.png")

    with held_reload(page):
        twfido.approve(ticket.sp_ticket_id)
        expect(page.locator("#mobile-status")).to_have_text("檢查完畢")
    expect_step(page, "基本資料", PERSON_STEPS)
    expect(page.locator("#f-contact_name")).to_have_value("王小明")
    expect(page.locator("#f-contact_name")).not_to_be_editable()
    fill_fields(page, answers_for(TWFIDO_PERSON, "王小明", email))
    page.locator("#check-account").click()
    expect(page.locator("#check-account-result")).to_have_text("此帳號可使用")
    page.locator("#next").click()
    expect_step(page, "註冊完成", PERSON_STEPS)
    expect(page.locator("section#completed")).to_contain_text(COMPLETED_TEXT)

    row = registration_row(stored, registration_id)
    assert (row.state, row.account_name) == ("completed", email)
    assert row.certificate_fingerprint == hashlib.sha256(card.der()).hexdigest()
    assert row.evidence is not None
    assert row.evidence["mobile_id"]["sp_ticket_id"] == ticket.sp_ticket_id
    assert row.evidence["mobile_id"]["hashed_id_num"] == twfido.hashed_id_num(TWFIDO_PERSON)
    assert certificates_of(stored, card) == [("login", "mobile", email)]
    assert tickets_left(stored) == before

    page.goto(activation_link(mailbox.wait_for(email), twfido_portal.origin))
    page.locator("#activate").click()
    expect(page.locator("#activated")).to_be_visible()

    page.goto(twfido_portal.url("/login"))
    start_mobile(page, TWFIDO_PERSON)
    twfido.approve(ticket_of(twfido, TWFIDO_PERSON).sp_ticket_id)
    expect(page).to_have_url(re.compile(re.escape(twfido_portal.url("/account")) + r"(\?.*)?$"))
    expect(page.locator("#account-name")).to_have_text(email)
    assert tickets_left(stored) == before


def test_refused_on_the_phone_then_started_again(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI, stored: App
) -> None:
    """The phone refuses: mobile_id_rejected, nothing stored; 重新產生 makes a new ticket, which
    the phone approves (on to 基本資料)."""
    page = twfido_page
    number, card = holder(pki, twfido, "陳大文", 1000001)
    registration_id = to_card_step(page, twfido_portal)
    before = tickets_left(stored)
    start_mobile(page, number)
    refused = ticket_of(twfido, number)
    twfido.reject(refused.sp_ticket_id)

    expect_final(page, ErrorCode.MOBILE_ID_REJECTED, "rejected")
    expect(page.locator("#mobile-restart")).to_be_focused()  # where 開始驗證 kept the focus
    expect(page.locator("#mobile-qr")).to_be_hidden()
    expect_nothing_stored(stored, registration_id, card, before)

    page.locator("#mobile-restart").click()
    expect(page.locator("#mobile-qr")).to_be_visible()
    expect(page.locator("#mobile-status")).to_have_text(WAITING)
    expect(page.locator("#mobile-restart")).to_be_hidden()
    again = ticket_of(twfido, number)
    assert again.sp_ticket_id != refused.sp_ticket_id
    with held_reload(page):
        twfido.approve(again.sp_ticket_id)
        expect(page.locator("#mobile-status")).to_have_text("檢查完畢")
    expect_step(page, "基本資料", PERSON_STEPS)
    assert registration_row(stored, registration_id).state == "basic_data"
    assert tickets_left(stored) == before


def test_a_ticket_that_times_out(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI, stored: App
) -> None:
    """The phone never answers before the ticket's deadline: mobile_id_timeout, nothing stored."""
    page = twfido_page
    number, card = holder(pki, twfido, "張美玲", 1000002)
    registration_id = to_card_step(page, twfido_portal)
    before = tickets_left(stored)
    start_mobile(page, number)
    twfido.expire(ticket_of(twfido, number).sp_ticket_id)

    expect_final(page, ErrorCode.MOBILE_ID_TIMEOUT, "timeout")
    expect_nothing_stored(stored, registration_id, card, before)


def test_a_tampered_answer_is_refused(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI, stored: App
) -> None:
    """The result's idp_checksum does not verify: signature_invalid, nothing stored."""
    page = twfido_page
    number, card = holder(pki, twfido, "黃志強", 1000003)
    registration_id = to_card_step(page, twfido_portal)
    before = tickets_left(stored)
    start_mobile(page, number)
    twfido.tamper_checksum = "result"
    twfido.approve(ticket_of(twfido, number).sp_ticket_id)

    expect_final(page, ErrorCode.SIGNATURE_INVALID, "failed")
    expect_nothing_stored(stored, registration_id, card, before)


def test_another_persons_certificate_is_refused(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI, stored: App
) -> None:
    """The phone signs with a certificate whose last four ID digits are not the typed ID's:
    identity_mismatch at the national ID field, nothing stored."""
    page = twfido_page
    number, card = holder(pki, twfido, "吳家豪", 1000004, last4="0000")
    assert not number.endswith("0000")
    registration_id = to_card_step(page, twfido_portal)
    before = tickets_left(stored)
    start_mobile(page, number)
    twfido.approve(ticket_of(twfido, number).sp_ticket_id)

    expect(page.locator("#error-mobile-national-id")).to_have_text(
        message_for(ErrorCode.IDENTITY_MISMATCH)
    )
    expect(page.locator("#mobile-national-id")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#mobile-restart")).to_be_visible()
    expect(page.locator("#mobile-waiting")).to_be_hidden()
    expect_nothing_stored(stored, registration_id, card, before)


def test_an_already_registered_mobile_certificate_is_sent_home(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI, stored: App
) -> None:
    """A phone whose certificate an account has already: 「您已註冊本系統，系統將為您導回首頁」,
    then the home page, as with a card; the registration keeps no certificate."""
    page = twfido_page
    number, card = holder(pki, twfido, "蔡依林", 1000008)
    email = "mobile-twice@example.com"
    view = enrol(stored, "person.general", card, answers_for(number, "蔡依林", email))
    assert view.state == "completed"
    registration_id = to_card_step(page, twfido_portal)
    before = tickets_left(stored)
    start_mobile(page, number)
    twfido.approve(ticket_of(twfido, number).sp_ticket_id)

    expect(page.locator("#mobile-status")).to_have_text(message_for(ErrorCode.ALREADY_REGISTERED))
    expect(page).to_have_url(twfido_portal.url("/"))
    expect_nothing_stored(stored, registration_id, card, before, rows=[("login", "mobile", email)])


def test_the_service_down_and_a_malformed_id(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI, stored: App
) -> None:
    """A malformed ID is told at its field (MOI is not asked); MOI answering HTTP 500:
    mobile_id_unavailable; nothing stored either way."""
    page = twfido_page
    number, card = holder(pki, twfido, "林志明", 1000005)
    registration_id = to_card_step(page, twfido_portal)
    before = tickets_left(stored)
    asked = len(twfido.requests)
    page.locator("#bridge-mobile").check()
    page.locator("#mobile-national-id").fill(number[:-1] + str((int(number[-1]) + 1) % 10))
    page.locator("#mobile-start").click()
    expect(page.locator("#error-mobile-national-id")).to_have_text(
        message_for(ErrorCode.INVALID_NATIONAL_ID)
    )
    expect(page.locator("#mobile-start")).to_be_visible()
    assert len(twfido.requests) == asked

    twfido.http_status = 500
    page.locator("#mobile-national-id").fill(number)
    page.keyboard.press("Enter")  # the form's submit starts the mobile ID while it is chosen
    expect(page.locator("#mobile-status")).to_have_text(
        message_for(ErrorCode.MOBILE_ID_UNAVAILABLE)
    )
    expect(page.locator("#mobile-status")).to_have_attribute("data-state", "unavailable")
    expect(page.locator("#error-mobile-national-id")).to_be_hidden()
    expect(page.locator("#mobile-qr")).to_be_hidden()
    expect(page.locator("#error-card")).to_be_hidden()  # card.js was not asked
    assert len(twfido.requests) > asked
    expect_nothing_stored(stored, registration_id, card, before)


def test_the_card_stays_the_default_and_the_choice_is_keyboard_driven(
    twfido_page: Page, twfido_portal: Portal
) -> None:
    """The card is chosen first (card.js answers 下一步: the PIN is required); the arrow keys
    move to 行動自然人憑證, whose 下一步 asks for the national ID instead; back to the card."""
    page = twfido_page
    to_card_step(page, twfido_portal)
    expect(page.locator("#bridge-choice")).to_be_visible()
    expect(page.get_by_role("group", name="驗證方式")).to_be_visible()
    expect(page.get_by_label("行動自然人憑證", exact=True)).not_to_be_checked()
    page.locator("#next").click()
    expect(page.locator("#error-pin")).to_have_text(message_for(ErrorCode.FIELD_REQUIRED))

    page.locator("#bridge-card").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#bridge-mobile")).to_be_checked()
    expect(page.locator("#mobile-id")).to_be_visible()
    expect(page.locator("#card-part")).to_be_hidden()
    expect(page.locator("ol.help")).to_be_hidden()
    expect(page.locator("#mobile-national-id")).to_have_attribute("maxlength", "10")
    expect(page.locator("#mobile-national-id")).to_have_attribute("autocomplete", "off")
    page.locator("#next").click()
    expect(page.locator("#error-mobile-national-id")).to_have_text(
        message_for(ErrorCode.FIELD_REQUIRED)
    )
    expect(page.locator("#mobile-national-id")).to_be_focused()

    page.locator("#bridge-mobile").focus()
    page.keyboard.press("ArrowUp")
    expect(page.locator("#bridge-card")).to_be_checked()
    expect(page.locator("#card-part")).to_be_visible()
    expect(page.locator("#mobile-id")).to_be_hidden()
    expect_step(page, "憑證檢查", PERSON_STEPS)


# -- 憑證登入 and 忘記密碼 ------------------------------------------------------------------------


def test_login_pushed_to_the_phone_of_an_unregistered_certificate_in_english(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI
) -> None:
    """In English, 推播 (a push to the bound device: no QR code, no link); the phone approves
    but no account has its certificate: not_registered, no session."""
    page = twfido_page
    number, _ = holder(pki, twfido, "周杰", 1000006)
    page.goto(twfido_portal.url("/login?lang=en"))
    expect(page.locator("#bridge-choice legend")).to_have_text("Verify with")
    expect(page.get_by_label("Mobile citizen certificate")).not_to_be_checked()
    page.get_by_label("Mobile citizen certificate").check()
    expect(page.locator("p.intro")).to_be_hidden()  # the card's instructions
    page.get_by_label("National ID").fill(number)
    page.get_by_label("Send to my phone (bound device)").check()
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#mobile-status")).to_have_text(
        "A notification was sent to your bound phone; confirm in the mobile ID app; waiting…"
    )
    expect(page.locator("#mobile-countdown")).to_have_text(re.compile(r"^Time left \d+:\d\d$"))
    expect(page.locator("#mobile-qr")).to_be_hidden()
    expect(page.locator("#mobile-app-link")).to_be_hidden()
    ticket = ticket_of(twfido, number)
    assert ticket.op_mode is None  # requestAthOrSignPush
    twfido.approve(ticket.sp_ticket_id)

    expect(page.locator("#mobile-status")).to_have_text(message_for(ErrorCode.NOT_REGISTERED, "en"))
    expect(page).to_have_url(twfido_portal.url("/login?lang=en"))
    page.goto(twfido_portal.url("/account"))  # no session
    expect(page).to_have_url(twfido_portal.url("/login"))
    assert not [c for c in page.context.cookies() if c["name"].startswith("swreg_session")]
    page.goto(twfido_portal.url("/account"))
    expect(page).to_have_url(twfido_portal.url("/login"))


def test_forgot_password_with_the_mobile_id(
    twfido_page: Page, twfido_portal: Portal, twfido: TwFidoMock, pki: TestPKI, stored: App,
    mailbox: Mailbox,
) -> None:  # fmt: skip
    """忘記密碼 with the phone of the account's own mobile certificate. A new password against
    the rule is told at its field while the same ticket keeps waiting (the portal checks it
    before asking MOI); corrected, the phone's approval sets it, the notice is mailed and both
    password fields are emptied."""
    page = twfido_page
    number, card = holder(pki, twfido, "許雅婷", 1000007)
    email = "mobile-reset@example.com"
    view = enrol(stored, "person.general", card, answers_for(number, "許雅婷", email))
    assert (view.state, view.account) == ("completed", email)
    stored.accounts.activate(stored.accounts.send_activation(email))
    old_hash = password_hash(stored, email)
    before = tickets_left(stored)

    page.goto(twfido_portal.url("/password/forgot"))
    page.locator("#f-account").fill(email)
    page.locator("#f-password").fill("short")
    page.locator("#f-password_confirm").fill("short")
    start_mobile(page, number)
    waiting = ticket_of(twfido, number)
    expect(page.locator("#error-password")).to_have_text(message_for(ErrorCode.PASSWORD_POLICY))
    expect(page.locator("#f-password")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#mobile-qr")).to_be_visible()  # still waiting for the phone
    assert password_hash(stored, email) == old_hash

    page.locator("#f-password").fill(NEW_PASSWORD)
    page.locator("#f-password_confirm").fill(NEW_PASSWORD)
    assert ticket_of(twfido, number).sp_ticket_id == waiting.sp_ticket_id
    twfido.approve(waiting.sp_ticket_id)

    expect(page.locator("#reset-done")).to_have_text(
        f"密碼已重新設定，請以新密碼或憑證登入。 ({email})"
    )
    expect(page.locator("#mobile-status")).to_have_text("已於手機完成確認")
    expect(page.locator("#error-password")).to_be_hidden()
    expect(page.locator("#f-password")).to_have_value("")
    expect(page.locator("#f-password_confirm")).to_have_value("")
    after = password_hash(stored, email)
    assert after != old_hash
    assert PasswordHasher().verify(after, NEW_PASSWORD)
    notices = [m for m in mailbox.messages_to(email) if m["Subject"] == PASSWORD_RESET_SUBJECT]
    assert len(notices) == 1
    assert tickets_left(stored) == before
