"""忘記密碼 through CHT's HiPKI component in headless Chromium (issue 16): the card of a real user
with only HiCOS installed resets the password. Real portal and SMTP; the component emulated
(:mod:`engine.testing.hipki`) under both form-decoding models; no swreg agent runs."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from engine.services.hashing import PasswordHasher
from engine.testing.hipki import FormDecoding, HiPKIReader
from engine.testing.pki import TestPKI

from .conftest import CARD_PIN, Mailbox, Portal, StartHiPKI
from .test_account_pages import NEW_PASSWORD, account, registered
from .test_hipki import HIPKI_STATUS, READER_A, hipki_card
from .test_hipki_renewal_customs import Posted, challenges_with_plus, engine_of, sign_packages


@pytest.fixture(scope="module")
def portal(hipki_portal: Portal) -> Portal:
    """``swreg serve`` with ``SWREG_HIPKI_URL`` at the emulator's port and no agent."""
    return hipki_portal


@pytest.fixture
def page(hipki_page: Page) -> Page:
    return hipki_page


@pytest.mark.parametrize("decoding", ["strict", "lenient"])
def test_forgot_password_through_hipki(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, start_hipki: StartHiPKI,
    decoding: FormDecoding,
) -> None:  # fmt: skip
    """The challenge holds a '+' (what an unescaped tbs breaks); the card's chain goes along."""
    email = f"hipki-{decoding}@example.com"
    app = engine_of(portal, mailbox)
    try:
        card = registered(app, pki, email)
    finally:
        app.close()
    hipki = start_hipki([HiPKIReader(READER_A, hipki_card(pki, card))], form_decoding=decoding)
    challenges_with_plus(page, "/api/password-reset/challenge")
    sent = Posted(page, "/api/password-reset")

    page.goto(portal.url(f"/password/forgot?account={email}"))
    expect(page.locator("#card-status")).to_have_text(HIPKI_STATUS)
    page.locator("#f-password").fill(NEW_PASSWORD)
    page.locator("#f-password_confirm").fill(NEW_PASSWORD)
    page.locator("#pin").fill(CARD_PIN)
    with page.expect_popup():
        page.locator("#reset").click()

    expect(page.locator("#reset-done")).to_contain_text(email)
    [body] = sent.bodies
    assert (body["account"], body["password"]) == (email, NEW_PASSWORD)
    assert body["chain"]  # the card's CA certificates, read with GetUserCert
    assert "pin" not in body and CARD_PIN not in str(body)
    assert [p["slotDescription"] for p in sign_packages(hipki)] == [READER_A]
    app = engine_of(portal, mailbox)
    try:
        assert PasswordHasher().verify(account(app, email).password_hash, NEW_PASSWORD)
    finally:
        app.close()
