"""憑證更換作業 and the customs IC-card import through CHT's HiPKI component, in headless
Chromium: real portal and SMTP, the component emulated (:mod:`engine.testing.hipki`) on a port of
its own (``SWREG_HIPKI_URL``), no swreg agent (the pages find none and turn to HiPKI).

Both pages read the card through hipki.js, the client the card check uses: the component's
readers and site state before any PIN, ``tbs``/PIN/``slotDescription`` escaped for a component
that form-decodes its body (``strict``) or only percent-decodes it (``lenient``), the card's CA
certificates sent with the signature. Each test asserts what the user sees (exact texts from
``engine/web/_i18n.py``, ``engine/web/_pages_customs.py`` and ``engine/_errors.py``) and the
rows stored. The portal's database is the module's: rows are compared before and after.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from datetime import datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Route, expect
from sqlalchemy import select

from engine import App, FixedClock, Settings, bootstrap
from engine._settings import Argon2Parameters, MailSettings
from engine.store import AuditEntry, Certificate
from engine.testing.hipki import FormDecoding, HiPKIReader
from engine.testing.pki import IssuedCard, TestPKI

from ..conftest import COMPANY_ANSWERS, PKI_NOW, SECRET
from ..helpers import enrol
from .conftest import CARD_PIN, Mailbox, Portal, StartHiPKI
from .test_hipki import (
    HIPKI_STATUS,
    READER_A,
    READER_B,
    UNTRUSTED_TEXT,
    WRONG_PIN,
    detect_readers,
    hipki_card,
    sign_packages,
)

RENEWED = "憑證更換完成"
IMPORTED = "主憑證匯入成功!"
IC_LOADED = "卡片資訊載入完成，請按 [送出]。"
IC_READ_FIRST = "請先按 [匯入] 讀取IC卡。"
TRUSTED_TEXT = "已加入 HiCOS 元件的信任網站，請重新執行"
NOT_AUTHORIZED_TEXT = "無權限執行此操作"
TWO_TRIES_LEFT = "PIN碼錯誤，剩餘2次機會"
PASSWORD = COMPANY_ANSWERS["password"]
COMPANY = "更換測試股份有限公司"

Row = tuple[str, str, str | None, str, str | None, str | None, str | None, str | None]


# -- the portal pointed at the emulator's port; no agent (conftest: hipki_portal, start_hipki) -----


@pytest.fixture(scope="module")
def portal(hipki_portal: Portal) -> Portal:
    """``swreg serve`` with ``SWREG_HIPKI_URL`` at the emulator's port and no agent."""
    return hipki_portal


@pytest.fixture
def page(hipki_page: Page) -> Page:
    """A fresh zh-TW context; no swreg agent runs."""
    return hipki_page


# -- arranging accounts, reading what was stored ---------------------------------------------------


def engine_of(portal: Portal, mailbox: Mailbox, at: datetime | None = None) -> App:
    """The engine on the portal's database; with ``at``, on a clock stopped there."""
    settings = Settings(
        database_url=portal.database_url,
        secret_key=SECRET,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(host=mailbox.host, port=mailbox.port, tls="none"),
    )
    return bootstrap(settings, clock=FixedClock(at) if at is not None else None)


def enrol_company(
    portal: Portal, mailbox: Mailbox, card: IssuedCard, ubn: str, at: datetime | None = None
) -> None:
    """An active 一般企業 account ``ubn`` (password :data:`PASSWORD`) whose login card is
    ``card``, registered at ``at`` (default now)."""
    answers = {**COMPANY_ANSWERS, "ubn": ubn, "email": f"info-{ubn}@trading.example"}
    app = engine_of(portal, mailbox, at)
    try:
        view = enrol(app, "enterprise.general", card, answers)
        assert view.state == "completed"
        app.accounts.activate(app.accounts.send_activation(ubn))
    finally:
        app.close()


def certificates(portal: Portal, mailbox: Mailbox) -> list[Row]:
    """Every certificate row as (purpose, fingerprint, usage_type, status, kind, query_key, ubn,
    owning account), oldest first."""
    app = engine_of(portal, mailbox)
    try:
        with app.database.unit_of_work() as uow:
            rows = uow.session.scalars(select(Certificate).order_by(Certificate.id))
            return [_row(r) for r in rows]
    finally:
        app.close()


def _row(r: Certificate) -> Row:
    owner = r.account.name if r.account is not None else None
    return (r.purpose, r.fingerprint, r.usage_type, r.status, r.kind, r.query_key, r.ubn, owner)


def logins_of(portal: Portal, mailbox: Mailbox, account: str) -> list[tuple[str, str]]:
    """(fingerprint, status) of the account's login certificates, oldest first."""
    return [
        (row[1], row[3])
        for row in certificates(portal, mailbox)
        if row[0] == "login" and row[7] == account
    ]


def audited(portal: Portal, mailbox: Mailbox, event: str) -> list[dict[str, Any]]:
    """The diffs of the audit entries of ``event``, oldest first."""
    app = engine_of(portal, mailbox)
    try:
        with app.database.unit_of_work() as uow:
            rows = uow.session.scalars(
                select(AuditEntry).where(AuditEntry.event == event).order_by(AuditEntry.seq)
            )
            return [dict(r.diff) for r in rows]
    finally:
        app.close()


def fingerprint(card: IssuedCard) -> str:
    return hashlib.sha256(card.der()).hexdigest()


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def card_chain(pki: TestPKI, issued: IssuedCard) -> list[str]:
    """The CA certificates the emulated card holds, as the page sends them (sorted)."""
    return sorted(b64(pki.der(c)) for c in hipki_card(pki, issued).chain)


class Posted:
    """The JSON bodies the page POSTs to ``path`` (exactly that path)."""

    def __init__(self, page: Page, path: str) -> None:
        self.path = path
        self.bodies: list[dict[str, Any]] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if request.method == "POST" and urllib.parse.urlsplit(request.url).path == self.path:
            body = request.post_data_json
            assert isinstance(body, dict)
            self.bodies.append(body)


def challenges_with_plus(page: Page, path: str) -> None:
    """Hand the page only challenges of ``path`` whose base64 payload holds a ``+`` (a real,
    unused challenge is fetched again until one does): what an unescaped ``tbs`` breaks."""

    def route(route: Route) -> None:
        for _ in range(10):
            response = route.fetch()
            if "+" in response.json().get("payload", ""):
                route.fulfill(response=response)
                return
        raise AssertionError("10 challenges without a '+'")

    page.route(re.compile(re.escape(path) + "$"), route)


# -- page steps ------------------------------------------------------------------------------------


def login_through_hipki(page: Page, portal: Portal, reader: str, account: str) -> None:
    """憑證登入 with the card in ``reader``; the account page names ``account``."""
    page.goto(portal.url("/login"))
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    page.locator("select#reader").select_option(f"hipki:{reader}")
    page.locator("input#pin").fill(CARD_PIN)
    with page.expect_popup():
        page.locator("#login").click()
    expect(page).to_have_url(re.compile(re.escape(portal.url("/account")) + r"(\?.*)?$"))
    expect(page.locator("#account-name")).to_have_text(account)


def replace_card(page: Page, reader: str | None, pin: str) -> None:
    """憑證更換作業: pick ``reader`` (when given), type the PIN, 更換 (the popup opens on it)."""
    if reader is not None:
        page.locator("select#reader").select_option(f"hipki:{reader}")
    page.locator("input#pin").fill(pin)
    with page.expect_popup():
        page.locator("#replace").click()


def read_ic_card(page: Page, pin: str) -> None:
    """匯入: type the PIN and read the card (the popup opens on the click)."""
    page.locator("input#pin").fill(pin)
    with page.expect_popup():
        page.locator("#ic-read").click()


def trust_the_site(page: Page) -> None:
    """「加入 HiCOS 元件信任網站」, confirmed in the component's /addDomain page."""
    trust = page.locator("#hipki-trust")
    expect(trust).to_have_text("加入 HiCOS 元件信任網站")
    with page.expect_popup() as opened:
        trust.click()
    popup = opened.value
    expect(popup.locator("#domain")).to_have_text("127.0.0.1")
    popup.locator("#confirm").click()
    expect(page.locator("#card-status")).to_have_text(TRUSTED_TEXT)
    expect(trust).to_be_hidden()
    expect(page.locator("#error-card")).to_be_hidden()


def customs_ic_page(page: Page, portal: Portal, ubn: str) -> None:
    """通關憑證註冊 (倉儲業者), the UBN typed, IC卡類憑證 chosen."""
    page.goto(portal.url("/customs/import?usage_type=warehouse"))
    page.locator("#f-ubn").fill(ubn)
    page.locator("#import-ic").check()


# -- 憑證更換作業 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_renewal_with_the_old_cards_login_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding,
) -> None:  # fmt: skip
    """Logged in with the old card (reader A), the new card in reader B replaces it: the chosen
    reader signs a renewal challenge holding '+' (intact through a strict component), the new
    card's CA certificates go along, and the old login certificate becomes ``replaced``."""
    ubn = {"strict": "24681358", "lenient": "24681364"}[decoding]
    old = pki.issue_company(ubn, name=COMPANY)
    new = pki.issue_company(ubn, name=COMPANY, key="ec")
    enrol_company(portal, mailbox, old, ubn)
    new_card = hipki_card(pki, new)
    hipki = start_hipki(
        [HiPKIReader(READER_A, hipki_card(pki, old)), HiPKIReader(READER_B, new_card)],
        form_decoding=decoding,
    )
    sent = Posted(page, "/api/renewal")
    challenges_with_plus(page, "/api/renewal/challenge")
    login_through_hipki(page, portal, READER_A, ubn)

    page.goto(portal.url("/renewal"))
    expect(page.locator("#account-name")).to_have_text(ubn)
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    expect(page.locator("#agent-missing")).to_be_hidden()
    expect(page.locator("select#reader option")).to_have_text([READER_A, READER_B])
    replace_card(page, READER_B, CARD_PIN)

    expect(page.locator("#renewed")).to_have_text(f"{RENEWED} ({ubn})")
    expect(page.locator("#error-pin")).to_be_hidden()
    expect(page.locator("#error-card")).to_be_hidden()
    expect(page.locator("#pin")).to_have_value("")
    assert logins_of(portal, mailbox, ubn) == [
        (fingerprint(old), "replaced"),
        (fingerprint(new), "active"),
    ]
    login, renewal = sign_packages(hipki)
    assert (login["slotDescription"], renewal["slotDescription"]) == (READER_A, READER_B)
    assert "+" in renewal["tbs"]  # escaped in transit, so a form-decoding reader keeps it
    assert renewal["pin"] == CARD_PIN
    [body] = sent.bodies
    assert set(body) == {"challenge_id", "certificate", "signature", "chain"}  # no password
    assert body["certificate"] == b64(new.der())
    assert sorted(body["chain"]) == card_chain(pki, new)
    entry = audited(portal, mailbox, "card_replaced")[-1]
    assert (entry["proof"], entry["old_certificate"], entry["new_certificate"]) == (
        "session",
        fingerprint(old),
        fingerprint(new),
    )
    assert (entry["origin"], entry["sessions_ended"]) == (portal.origin, 1)
    assert new_card.tries_left == 3


def test_renewal_with_the_password_once_the_old_card_expired_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI
) -> None:
    """No login (the old card expired ten minutes before the PKI's now): 帳號 and 密碼 prove the
    account. A wrong password is 「無權限執行此操作」 by the account fields and replaces nothing;
    the right one replaces the card (proof ``password``) and is cleared from the page."""
    ubn = "24681370"
    old = pki.issue_company(ubn, name=COMPANY, valid_to=PKI_NOW - timedelta(minutes=10))
    new = pki.issue_company(ubn, name=COMPANY, key="ec")
    enrol_company(portal, mailbox, old, ubn, at=PKI_NOW - timedelta(minutes=30))
    hipki = start_hipki([HiPKIReader(READER_A, hipki_card(pki, new))])
    sent = Posted(page, "/api/renewal")

    page.goto(portal.url("/renewal"))
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    page.locator("#f-account").fill(ubn)
    page.locator("#f-password").fill("Wr0ngPass99")
    replace_card(page, None, CARD_PIN)
    expect(page.locator("#error-account")).to_have_text(NOT_AUTHORIZED_TEXT)
    expect(page.locator("#renewed")).to_be_hidden()
    assert logins_of(portal, mailbox, ubn) == [(fingerprint(old), "active")]

    page.locator("#f-password").fill(PASSWORD)
    replace_card(page, None, CARD_PIN)
    expect(page.locator("#renewed")).to_have_text(f"{RENEWED} ({ubn})")
    expect(page.locator("#error-account")).to_be_hidden()
    expect(page.locator("#f-password")).to_have_value("")
    assert logins_of(portal, mailbox, ubn) == [
        (fingerprint(old), "replaced"),
        (fingerprint(new), "active"),
    ]
    assert [(b["account"], b["password"]) for b in sent.bodies] == [
        (ubn, "Wr0ngPass99"),
        (ubn, PASSWORD),
    ]
    assert all(b["certificate"] == b64(new.der()) for b in sent.bodies)
    assert [p["slotDescription"] for p in sign_packages(hipki)] == [READER_A, READER_A]
    entry = audited(portal, mailbox, "card_replaced")[-1]
    assert (entry["proof"], entry["new_certificate"]) == ("password", fingerprint(new))


@pytest.mark.parametrize(("decoding", "bits"), [("strict", 32), ("lenient", 64)])
def test_renewal_wrong_pin_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding, bits: int,
) -> None:  # fmt: skip
    """A wrong PIN for the new card (last_error 0x80000002 as a signed 32-bit number or
    sign-extended to 64 bits): 「PIN碼錯誤，剩餘2次機會」 by the PIN; nothing reaches
    /api/renewal and nothing is stored."""
    new = pki.issue_company("24681379", name=COMPANY, key="ec")
    card = hipki_card(pki, new)
    hipki = start_hipki(
        [HiPKIReader(READER_A, card)], form_decoding=decoding, last_error_bits=bits
    )  # fmt: skip
    sent = Posted(page, "/api/renewal")
    before = certificates(portal, mailbox)

    page.goto(portal.url("/renewal"))
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    page.locator("#f-account").fill("24681379")
    page.locator("#f-password").fill(PASSWORD)
    replace_card(page, READER_A, WRONG_PIN)
    expect(page.locator("#error-pin")).to_have_text(TWO_TRIES_LEFT)
    expect(page.locator("#error-card")).to_be_hidden()
    expect(page.locator("#error-account")).to_be_hidden()
    expect(page.locator("#card-status")).to_have_text("")
    expect(page.locator("#pin")).to_have_value("")
    expect(page.locator("#replace")).to_be_enabled()
    assert card.tries_left == 2
    [package] = sign_packages(hipki)
    assert (package["pin"], package["slotDescription"]) == (WRONG_PIN, READER_A)
    assert sent.bodies == []
    assert certificates(portal, mailbox) == before


@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_renewal_on_an_untrusted_site_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding,
) -> None:  # fmt: skip
    """0x76000031: the page says so when it opens and offers the component's trust page; 更換
    before trusting sends no PIN (no /sign) and stores nothing; once trusted the card is
    replaced."""
    ubn = {"strict": "24681385", "lenient": "24681391"}[decoding]
    old = pki.issue_company(ubn, name=COMPANY, valid_to=PKI_NOW - timedelta(minutes=10))
    new = pki.issue_company(ubn, name=COMPANY, key="ec")
    enrol_company(portal, mailbox, old, ubn, at=PKI_NOW - timedelta(minutes=30))
    hipki = start_hipki(
        [HiPKIReader(READER_A, hipki_card(pki, new))], trusted_hosts=(), form_decoding=decoding
    )
    sent = Posted(page, "/api/renewal")

    page.goto(portal.url("/renewal"))
    expect(page.locator("#error-card")).to_have_text(UNTRUSTED_TEXT)
    expect(page.locator("#hipki-trust")).to_be_visible()
    page.locator("#f-account").fill(ubn)
    page.locator("#f-password").fill(PASSWORD)
    replace_card(page, None, CARD_PIN)
    expect(page.locator("#error-card")).to_have_text(UNTRUSTED_TEXT)
    expect(page.locator("#error-pin")).to_be_hidden()
    assert sign_packages(hipki) == []
    assert sent.bodies == []
    assert logins_of(portal, mailbox, ubn) == [(fingerprint(old), "active")]

    trust_the_site(page)
    assert hipki.trusted_hosts == {"127.0.0.1"}
    replace_card(page, None, CARD_PIN)
    expect(page.locator("#renewed")).to_have_text(f"{RENEWED} ({ubn})")
    assert logins_of(portal, mailbox, ubn) == [
        (fingerprint(old), "replaced"),
        (fingerprint(new), "active"),
    ]


# -- 通關憑證註冊: IC卡類憑證 ----------------------------------------------------------------------


@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_customs_ic_import_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding,
) -> None:  # fmt: skip
    """IC卡類憑證 through HiPKI: the component's readers listed (「開啟偵測多台讀卡機」 reads the
    card's certificates), 匯入 signs a challenge holding '+', 送出 → 「主憑證匯入成功!」; exactly
    one signing row is added, owned by the UBN (no account), proven by the card."""
    ubn = {"strict": "24681408", "lenient": "24681414"}[decoding]
    card = pki.issue_company(ubn, key="ec" if decoding == "strict" else "rsa")
    hipki = start_hipki([HiPKIReader(READER_A, hipki_card(pki, card))], form_decoding=decoding)
    sent = Posted(page, "/api/customs-certificates")
    challenges_with_plus(page, "/api/customs-certificates/challenge")
    before = certificates(portal, mailbox)

    customs_ic_page(page, portal, ubn)
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    expect(page.locator("#agent-missing")).to_be_hidden()
    detect_readers(page)
    expect(page.locator("select#reader option")).to_have_text([READER_A])
    page.locator("#submit").click()  # 送出 before 匯入: the page asks for the card first
    expect(page.locator("#error-card")).to_have_text(IC_READ_FIRST)

    read_ic_card(page, CARD_PIN)
    expect(page.locator("#ic-loaded")).to_have_text(IC_LOADED)
    expect(page.locator("#pin")).to_have_value("")
    page.locator("#submit").click()
    expect(page.locator("#import-success")).to_have_text(IMPORTED)
    expect(page.locator("#query-link")).to_have_text(ubn)

    added = ("signing", fingerprint(card), "warehouse", "active", "ic_card", ubn, ubn, None)
    assert certificates(portal, mailbox) == [*before, added]
    [package] = sign_packages(hipki)
    assert "+" in package["tbs"]
    assert (package["pin"], package["slotDescription"]) == (CARD_PIN, READER_A)
    [body] = sent.bodies
    assert (body["usage_type"], body["kind"], body["answers"]["ubn"]) == (
        "warehouse",
        "ic_card",
        ubn,
    )
    assert body["certificate"] == b64(card.der())
    assert sorted(body["chain"]) == card_chain(pki, card)
    entry = audited(portal, mailbox, "customs_import")[-1]
    assert (entry["fingerprint"], entry["kind"], entry["query_key"], entry["proof"]) == (
        fingerprint(card),
        "ic_card",
        ubn,
        {"key": "card"},
    )


@pytest.mark.parametrize(("decoding", "bits"), [("strict", 32), ("lenient", 64)])
def test_customs_wrong_pin_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding, bits: int,
) -> None:  # fmt: skip
    """A wrong PIN at 匯入: 「PIN碼錯誤，剩餘2次機會」 by the PIN, the card not loaded (送出 asks
    for 匯入 again), nothing posted, nothing stored."""
    card = hipki_card(pki, pki.issue_company("24681420"))
    hipki = start_hipki(
        [HiPKIReader(READER_A, card)], form_decoding=decoding, last_error_bits=bits
    )  # fmt: skip
    sent = Posted(page, "/api/customs-certificates")
    before = certificates(portal, mailbox)

    customs_ic_page(page, portal, "24681420")
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    read_ic_card(page, WRONG_PIN)
    expect(page.locator("#error-pin")).to_have_text(TWO_TRIES_LEFT)
    expect(page.locator("#error-card")).to_be_hidden()
    expect(page.locator("#ic-loaded")).to_be_hidden()
    expect(page.locator("#pin")).to_have_value("")
    assert card.tries_left == 2
    assert [p["pin"] for p in sign_packages(hipki)] == [WRONG_PIN]
    page.locator("#submit").click()
    expect(page.locator("#error-card")).to_have_text(IC_READ_FIRST)
    expect(page.locator("#import-success")).to_be_hidden()
    assert sent.bodies == []
    assert certificates(portal, mailbox) == before


@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_customs_ic_import_on_an_untrusted_site_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding,
) -> None:  # fmt: skip
    """0x76000031 when IC卡類憑證 is chosen: told by the card with the trust button; 匯入 sends no
    PIN and loads nothing; once the site is trusted the import goes through."""
    ubn = {"strict": "24681435", "lenient": "24681441"}[decoding]
    card = pki.issue_company(ubn)
    hipki = start_hipki(
        [HiPKIReader(READER_A, hipki_card(pki, card))], trusted_hosts=(), form_decoding=decoding
    )
    before = certificates(portal, mailbox)

    customs_ic_page(page, portal, ubn)
    expect(page.locator("#error-card")).to_have_text(UNTRUSTED_TEXT)
    expect(page.locator("#hipki-trust")).to_be_visible()
    read_ic_card(page, CARD_PIN)
    expect(page.locator("#error-card")).to_have_text(UNTRUSTED_TEXT)
    expect(page.locator("#ic-loaded")).to_be_hidden()
    assert sign_packages(hipki) == []

    trust_the_site(page)
    assert hipki.trusted_hosts == {"127.0.0.1"}
    read_ic_card(page, CARD_PIN)
    expect(page.locator("#ic-loaded")).to_have_text(IC_LOADED)
    page.locator("#submit").click()
    expect(page.locator("#import-success")).to_have_text(IMPORTED)
    added = ("signing", fingerprint(card), "warehouse", "active", "ic_card", ubn, ubn, None)
    assert certificates(portal, mailbox) == [*before, added]
