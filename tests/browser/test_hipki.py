"""The card pages through CHT's HiPKI component, in headless Chromium: real portal and SMTP, the
component emulated (:mod:`engine.testing.hipki`) on a port of its own (``SWREG_HIPKI_URL``).

No swreg agent runs: the page finds none and turns to HiPKI, as a browser with only CHT's
component would. The component is strict (it trusts only the sites it is told to, form-decodes
bodies) unless a test says otherwise; each test asserts what the user sees (exact texts from
``engine/web/_i18n.py`` and ``engine/_errors.py``) and what was stored or sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Route, expect
from sqlalchemy import select

from engine import App, Settings, bootstrap
from engine._settings import Argon2Parameters, MailSettings
from engine.store import Registration
from engine.testing.hipki import FormDecoding, HiPKICard, HiPKIEmulator, HiPKIReader
from engine.testing.pki import IssuedCard, TestPKI

from ..conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET
from .conftest import CARD_PIN, EXPECT_TIMEOUT_MS, Mailbox, Portal, StartHiPKI
from .test_wizard import (
    ACTIVATE_TEXT,
    COMPLETED_TEXT,
    PERSON_STEPS,
    STEP_LABELS,
    activation_link,
    choose_type,
    expect_step,
    fill_fields,
    held_reload,
)

WRONG_PIN = "97531864"
READER_A = "CASTLES EZ100PU 00 00"
READER_B = "Generic USB Smart Card Reader 01 00"
HIPKI_STATUS = re.compile(r"^使用 HiCOS 跨平台網頁元件 1\.3\.4\.9，找到 \d+ 台讀卡機$")
UNTRUSTED_TEXT = "此網站尚未加入 HiCOS 元件的信任網站清單，請依元件提示加入後重試。"
MISSING_TEXT = "未偵測到 HiCOS 跨平台網頁元件，請確認已安裝並啟動後重試。"


# -- the portal pointed at the emulator's port; no agent (conftest: hipki_portal, start_hipki) -----


@pytest.fixture(scope="module")
def portal(hipki_portal: Portal) -> Portal:
    """``swreg serve`` with ``SWREG_HIPKI_URL`` at the emulator's port and no agent."""
    return hipki_portal


@pytest.fixture
def page(hipki_page: Page) -> Page:
    """A fresh zh-TW context; no swreg agent runs."""
    return hipki_page


def hipki_card(pki: TestPKI, issued: IssuedCard, **options: Any) -> HiPKICard:
    """The card as the component sees it, CA certificates included."""
    return HiPKICard.from_pkcs12(pki.pkcs12_bytes(issued, CARD_PIN), CARD_PIN, **options)


# -- what was stored and sent ----------------------------------------------------------------------


def portal_app(portal: Portal, mailbox: Mailbox) -> App:
    settings = Settings(
        database_url=portal.database_url,
        secret_key=SECRET,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(host=mailbox.host, port=mailbox.port, tls="none"),
    )
    return bootstrap(settings)


def stored(portal: Portal, mailbox: Mailbox, registration_id: str) -> tuple[str, bytes | None, str]:
    """(state, certificate DER, evidence fingerprint) of a registration."""
    app = portal_app(portal, mailbox)
    try:
        with app.database.unit_of_work() as uow:
            row = uow.session.scalars(
                select(Registration).where(Registration.id == registration_id)
            ).one()
            fingerprint = (row.evidence or {}).get("fingerprint", "")
            return row.state, row.certificate_der, str(fingerprint)
    finally:
        app.close()


def registration_id(page: Page) -> str:
    value = page.locator("body").get_attribute("data-registration-id")
    assert value, "not on a registration page"
    return value


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def sign_packages(emulator: HiPKIEmulator) -> list[dict[str, Any]]:
    """The ``tbsPackage`` JSON of every /sign request, form-decoded."""
    packages = []
    for request in emulator.requests:
        if request.path == "/sign":
            fields = urllib.parse.parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
            packages.append(json.loads(fields["tbsPackage"][0]))
    return packages


class Submissions:
    """The JSON bodies the page POSTs to the card endpoints (registration and login)."""

    def __init__(self, page: Page) -> None:
        self.bodies: list[dict[str, Any]] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        path = urllib.parse.urlsplit(request.url).path
        if request.method == "POST" and (path.endswith("/card") or path == "/api/login"):
            body = request.post_data_json
            assert isinstance(body, dict)
            self.bodies.append(body)


def challenges_with_plus(page: Page) -> None:
    """Hand the page only challenges whose base64 payload holds a ``+`` (a real, unused
    challenge is fetched again until one does): the case an unescaped ``tbs`` breaks."""

    def route(route: Route) -> None:
        for _ in range(40):
            response = route.fetch()
            if "+" in response.json().get("payload", ""):
                route.fulfill(response=response)
                return
        raise AssertionError("40 challenges without a '+'")

    page.route(re.compile(r".*/api/(registrations/[^/]+|login)/challenge$"), route)


# -- page steps ------------------------------------------------------------------------------------


def detect_readers(page: Page) -> None:
    """「開啟偵測多台讀卡機」: the component's GetUserCert popup lists readers and certificates.

    The page must have found the component first: a click while it is still looking starts a
    new look, which opens no window."""
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    with page.expect_popup() as opened:
        page.locator("#detect-readers").click()
    popup = opened.value
    for _ in range(EXPECT_TIMEOUT_MS // 50):  # the component answers, then closes its window
        if popup.is_closed():
            break
        page.wait_for_timeout(50)
    assert popup.is_closed(), "the GetUserCert window never closed"
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)


def submit_card(page: Page, reader: str | None, pin: str) -> None:
    """Pick ``reader`` (when given), type the PIN, go on (the popup opens on the click)."""
    if reader is not None:
        page.locator("select#reader").select_option(f"hipki:{reader}")
    page.locator("input#pin").fill(pin)
    with page.expect_popup():
        page.locator("#next").click()


def pass_card_check(page: Page, reader: str | None = None) -> None:
    """The card check with the right PIN: 「檢查完畢」, then the page moves on."""
    with held_reload(page):
        submit_card(page, reader, CARD_PIN)
        try:
            expect(page.locator("#card-status")).to_have_text("檢查完畢")
        except AssertionError as exc:
            pin_error = page.locator("#error-pin").text_content()
            card_error = page.locator("#error-card").text_content()
            raise AssertionError(
                f"the card check did not pass: #error-pin={pin_error!r}, #error-card={card_error!r}"
            ) from exc
        expect(page.locator("#error-pin")).to_be_hidden()
        expect(page.locator("#error-card")).to_be_hidden()


def card_check_page(page: Page, portal: Portal, category: str = "person") -> None:
    """Step 1, then at 憑證檢查 with the component's readers listed."""
    choose_type(page, portal, category, f"{category}.general")
    page.locator("#next").click()
    expect_step(page, "憑證檢查", PERSON_STEPS if category == "person" else STEP_LABELS)


# -- the wizards, card login -----------------------------------------------------------------------


@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_person_wizard_and_card_login_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding,
) -> None:  # fmt: skip
    """一般個人 through HiPKI, then 憑證登入: challenges holding '+' reach a strict component
    intact (tbs escaped like the PIN), the chosen reader is named, the card's CA certificates
    are sent with the signature, and the registration moves on with the card's certificate."""
    national_id, name, last4, email = {
        "strict": ("A123456789", "王小明", "6789", "hipki-strict@example.com"),
        "lenient": ("B123456780", "林小華", "6780", "hipki-lenient@example.com"),
    }[decoding]
    issued = pki.issue_person(name=name, id_last4=last4, key="rsa")
    card = hipki_card(pki, issued)
    hipki = start_hipki([HiPKIReader(READER_A, card)], form_decoding=decoding)
    sent = Submissions(page)
    challenges_with_plus(page)

    card_check_page(page, portal)
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    expect(page.locator("#agent-missing")).to_be_hidden()
    detect_readers(page)
    expect(page.locator("select#reader option")).to_have_text([READER_A])
    registration = registration_id(page)
    pass_card_check(page, READER_A)

    expect_step(page, "基本資料", PERSON_STEPS)
    expect(page.locator("#f-contact_name")).to_have_value(name)
    expect(page.locator("#f-contact_name")).not_to_be_editable()
    state, der, fingerprint = stored(portal, mailbox, registration)
    assert (state, der, fingerprint) == (
        "basic_data",
        issued.der(),
        hashlib.sha256(issued.der()).hexdigest(),
    )
    [package] = sign_packages(hipki)
    assert "+" in package["tbs"]  # escaped in transit, so a form-decoding reader keeps it
    assert package["slotDescription"] == READER_A
    assert "pin" in package and package["pin"] == CARD_PIN
    [submitted] = sent.bodies
    assert submitted["certificate"] == b64(issued.der())
    assert sorted(submitted["chain"]) == sorted(b64(pki.der(c)) for c in card.chain)

    answers = {**PERSON_ANSWERS, "email": email, "contact_name": name, "national_id": national_id}
    fill_fields(page, answers)
    page.locator("#check-account").click()
    expect(page.locator("#check-account-result")).to_have_text("此帳號可使用")
    page.locator("#next").click()
    expect_step(page, "註冊完成", PERSON_STEPS)
    expect(page.locator("section#completed")).to_contain_text(COMPLETED_TEXT)
    expect(page.locator("section#completed")).to_contain_text(ACTIVATE_TEXT)
    assert stored(portal, mailbox, registration)[0] == "completed"

    page.goto(activation_link(mailbox.wait_for(email), portal.origin))
    page.locator("#activate").click()
    expect(page.locator("#activated")).to_be_visible()

    page.goto(portal.url("/login"))
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    page.locator("input#pin").fill(CARD_PIN)
    with page.expect_popup():
        page.locator("#login").click()
    expect(page).to_have_url(re.compile(re.escape(portal.url("/account")) + r"(\?.*)?$"))
    expect(page.locator("#account-name")).to_have_text(email)
    assert len(sign_packages(hipki)) == 2
    assert sent.bodies[-1]["certificate"] == b64(issued.der())


def test_enterprise_wizard_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI
) -> None:
    """一般企業 with a P-256 工商憑證 through a strict component, to 註冊完成."""
    issued = pki.issue_company("04595257", key="ec")
    start_hipki([HiPKIReader(READER_A, hipki_card(pki, issued))])
    challenges_with_plus(page)

    card_check_page(page, portal, "enterprise")
    detect_readers(page)
    registration = registration_id(page)
    pass_card_check(page, READER_A)

    expect_step(page, "基本資料", STEP_LABELS)
    expect(page.locator("#f-ubn")).to_have_value("04595257")
    assert stored(portal, mailbox, registration)[:2] == ("basic_data", issued.der())
    fill_fields(page, COMPANY_ANSWERS)
    page.locator("#check-account").click()
    expect(page.locator("#check-account-result")).to_have_text("此帳號可使用")
    page.locator("#next").click()
    expect_step(page, "企業資訊", STEP_LABELS)
    fill_fields(page, COMPANY_ANSWERS)
    page.locator("#next").click()
    expect_step(page, "註冊完成", STEP_LABELS)
    expect(page.locator("section#completed")).to_contain_text(COMPLETED_TEXT)
    assert stored(portal, mailbox, registration)[0] == "completed"


# -- PIN and card errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_wrong_pins_count_down_to_a_locked_card(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    bits: int, decoding: FormDecoding,
) -> None:  # fmt: skip
    """Wrong PINs: 0x76100006 with last_error 0x80000002, 0x80000001 (as signed 32-bit numbers
    or sign-extended to 64 bits), then 0xA4: two tries left, one, locked — and a locked card
    stays locked for the right PIN. The registration stays at 憑證檢查 with no card."""
    card = hipki_card(pki, pki.issue_person())
    start_hipki(
        [HiPKIReader(READER_A, card)], last_error_bits=bits, form_decoding=decoding
    )  # fmt: skip
    card_check_page(page, portal)
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    registration = registration_id(page)

    for expected, left in (
        ("PIN碼錯誤，剩餘2次機會", 2),
        ("PIN碼錯誤，剩餘1次機會", 1),
        ("IC卡已鎖卡", 0),
    ):
        submit_card(page, None, WRONG_PIN)
        expect(page.locator("#error-pin")).to_have_text(expected)
        expect(page.locator("#error-card")).to_be_hidden()
        expect(page.locator("#card-status")).to_have_text("")
        assert card.tries_left == left
    submit_card(page, None, CARD_PIN)
    expect(page.locator("#error-pin")).to_have_text("IC卡已鎖卡")
    expect_step(page, "憑證檢查", PERSON_STEPS)
    assert stored(portal, mailbox, registration) == ("card_check", None, "")


def test_a_pin_of_the_wrong_length_costs_no_try(
    page: Page, portal: Portal, pki: TestPKI, start_hipki: StartHiPKI
) -> None:
    """last_error 0xA2: 「PIN碼長度錯誤」, not a wrong PIN; the card keeps its three tries."""
    card = hipki_card(pki, pki.issue_person())
    start_hipki([HiPKIReader(READER_A, card)])
    card_check_page(page, portal)
    submit_card(page, None, "1234")
    expect(page.locator("#error-pin")).to_have_text("PIN碼長度錯誤")
    assert card.tries_left == 3


@pytest.mark.parametrize(
    ("moved", "expected"),
    [(timedelta(days=-3650), "憑證尚未生效"), (timedelta(days=3650), "憑證已逾期")],
    ids=["not-yet-valid", "expired"],
)
def test_the_components_validity_codes_are_told(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    moved: timedelta, expected: str,
) -> None:  # fmt: skip
    """0x76500001 / 0x76500002 (the component's clock outside the card certificate's validity):
    certificate_not_yet_valid / certificate_expired, not a wrong PIN."""
    card = hipki_card(pki, pki.issue_person())
    start_hipki([HiPKIReader(READER_A, card)], clock=lambda: datetime.now(UTC) + moved)
    card_check_page(page, portal)
    registration = registration_id(page)
    submit_card(page, None, CARD_PIN)
    expect(page.locator("#error-card")).to_have_text(expected)
    expect(page.locator("#error-pin")).to_be_hidden()
    assert card.tries_left == 3
    assert stored(portal, mailbox, registration) == ("card_check", None, "")


def test_no_card_in_the_reader_is_told_before_the_pin_leaves(
    page: Page, portal: Portal, mailbox: Mailbox, start_hipki: StartHiPKI
) -> None:
    """A reader without a card ("unknown token"): listed as empty; 「未插入IC卡」, and the PIN
    never reached the component (no /sign)."""
    hipki = start_hipki([HiPKIReader(READER_A)], empty_slot_token="unknown token")
    card_check_page(page, portal)
    expect(page.locator("select#reader option")).to_have_text([f"{READER_A} (—)"])
    registration = registration_id(page)
    submit_card(page, None, CARD_PIN)
    expect(page.locator("#error-pin")).to_have_text("未插入IC卡")
    expect(page.locator("#card-status")).to_have_text("")
    assert sign_packages(hipki) == []
    assert stored(portal, mailbox, registration) == ("card_check", None, "")


def test_no_reader_is_told_when_the_page_opens(
    page: Page, portal: Portal, start_hipki: StartHiPKI
) -> None:
    """A component with no reader at all: 「找不到讀卡機」 before any PIN."""
    hipki = start_hipki([])
    card_check_page(page, portal)
    expect(page.locator("#error-pin")).to_have_text("找不到讀卡機")
    submit_card(page, None, CARD_PIN)
    expect(page.locator("#error-pin")).to_have_text("找不到讀卡機")
    assert sign_packages(hipki) == []


# -- the component's site list, its absence --------------------------------------------------------


def test_an_untrusted_site_is_offered_the_components_trust_page(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI
) -> None:
    """0x76000031 in /p11Image.bmp: the page says so before a PIN and offers /addDomain; the
    user's 取消 there is told; once confirmed the component trusts 127.0.0.1 and the card
    check passes."""
    issued = pki.issue_person(name="陳小春", id_last4="6781")
    hipki = start_hipki([HiPKIReader(READER_A, hipki_card(pki, issued))], trusted_hosts=())
    card_check_page(page, portal)
    expect(page.locator("#error-card")).to_have_text(UNTRUSTED_TEXT)
    trust = page.locator("#hipki-trust")
    expect(trust).to_have_text("加入 HiCOS 元件信任網站")

    with page.expect_popup() as opened:
        trust.click()
    popup = opened.value
    expect(popup.locator("#domain")).to_have_text("127.0.0.1")
    popup.locator("#cancel").click()
    expect(page.locator("#error-card")).to_have_text("使用者已取消")
    assert hipki.trusted_hosts == set()

    with page.expect_popup() as opened:
        trust.click()
    opened.value.locator("#confirm").click()
    expect(page.locator("#card-status")).to_have_text("已加入 HiCOS 元件的信任網站，請重新執行")
    expect(trust).to_be_hidden()
    expect(page.locator("#error-card")).to_be_hidden()
    assert hipki.trusted_hosts == {"127.0.0.1"}

    registration = registration_id(page)
    pass_card_check(page, READER_A)
    expect_step(page, "基本資料", PERSON_STEPS)
    assert stored(portal, mailbox, registration)[:2] == ("basic_data", issued.der())


def test_a_forbidden_site_is_told(page: Page, portal: Portal, start_hipki: StartHiPKI) -> None:
    """0x7600000F is its own message, not a wrong PIN."""
    start_hipki([HiPKIReader(READER_A)], forbidden_hosts={"127.0.0.1"})
    card_check_page(page, portal)
    expect(page.locator("#error-card")).to_have_text("HiCOS 元件禁止本網站存取（禁止存取的網域）。")
    expect(page.locator("#error-pin")).to_be_hidden()


@pytest.mark.parametrize("failure", ["absent", "hang"])
def test_a_missing_component_is_told(
    page: Page, portal: Portal, start_hipki: StartHiPKI, failure: str
) -> None:
    """Nothing on the port, or a component that never answers (the page gives it 5 s): the
    install help shows; 下一步 says the component did not answer."""
    start_hipki([HiPKIReader(READER_A)], **{failure: True})
    card_check_page(page, portal)
    expect(page.locator("#agent-missing")).to_be_visible()
    expect(page.locator("#agent-missing-title")).to_have_text("找不到讀卡元件")
    expect(page.locator("#card-status")).to_have_text("")
    page.locator("input#pin").fill(CARD_PIN)
    page.locator("#next").click()
    expect(page.locator("#error-card")).to_have_text(MISSING_TEXT)
    expect_step(page, "憑證檢查", PERSON_STEPS)


# -- two readers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_the_chosen_readers_card_signs(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding,
) -> None:  # fmt: skip
    """Two readers, a card in each: the user picks the second; its card signs (slotDescription
    names it) and its certificate is the one stored."""
    first = pki.issue_person(name="張三", id_last4="6782")
    second = pki.issue_person(name="李四", id_last4="6783")
    hipki = start_hipki(
        [HiPKIReader(READER_A, hipki_card(pki, first)),
         HiPKIReader(READER_B, hipki_card(pki, second))],
        form_decoding=decoding,
    )  # fmt: skip
    card_check_page(page, portal)
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    expect(page.locator("select#reader option")).to_have_text([READER_A, READER_B])
    expect(page.locator("select#reader")).to_have_value(f"hipki:{READER_A}")
    detect_readers(page)
    registration = registration_id(page)
    pass_card_check(page, READER_B)

    expect_step(page, "基本資料", PERSON_STEPS)
    expect(page.locator("#f-contact_name")).to_have_value("李四")
    assert stored(portal, mailbox, registration)[:2] == ("basic_data", second.der())
    assert [p["slotDescription"] for p in sign_packages(hipki)] == [READER_B]


def test_a_check_while_the_reader_list_is_still_being_read(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI
) -> None:
    """「開啟偵測多台讀卡機」's window is still at work (its GetUserCert held) when the user presses
    下一步: the check gets a window of its own, answers only from its own window count, and
    passes; the reader list's window is left alone."""
    issued = pki.issue_person(name="周小玲", id_last4="6784")
    start_hipki([HiPKIReader(READER_A, hipki_card(pki, issued))])
    held: list[Route] = []

    def hold_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page.context.route(re.compile(r".*/pkcs11info\?withcert=true$"), hold_first)
    try:
        card_check_page(page, portal)
        expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
        with page.expect_popup() as opened:
            page.locator("#detect-readers").click()
        listing = opened.value
        for _ in range(EXPECT_TIMEOUT_MS // 50):
            if held:
                break
            page.wait_for_timeout(50)
        assert held, "the reader list's GetUserCert never left its window"
        registration = registration_id(page)
        pass_card_check(page, READER_A)
        assert not listing.is_closed()
    finally:
        for route in held:
            route.continue_()
    expect_step(page, "基本資料", PERSON_STEPS)
    assert stored(portal, mailbox, registration)[:2] == ("basic_data", issued.der())
