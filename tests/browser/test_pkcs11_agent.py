"""The wizard's card check through the local agent with a PKCS#11 token (issue 15 item 2): a
SoftHSM2 token the test initialises, offered by ``swreg agent --pkcs11-module``, chosen in the
page's reader list by its own RFC 7512 spec, signing the challenge in real Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from engine.testing import TestPKI

from ..processes import SWREG, accepts, spawn, stop_process, wait_until
from ..test_pkcs11 import PIN, SOFTHSM, Tokens, tokens
from .conftest import Portal
from .test_wizard import PERSON_STEPS, choose_type, expect_step, held_reload

__all__ = ["tokens"]  # the SoftHSM2 tokens fixture, shared with tests/test_pkcs11.py


@pytest.fixture(scope="module")
def agent(
    portal: Portal, tokens: Tokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``swreg agent`` for the portal's origin offering SoftHSM2's tokens (replaces the module
    fixture of conftest.py for this module)."""
    log = tmp_path_factory.mktemp("agent") / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["SOFTHSM2_CONF"] = str(tokens.conf)
    args = [
        SWREG, "agent", "--origin", portal.origin, "--port", str(portal.agent_port),
        "--pkcs11-module", SOFTHSM,
    ]  # fmt: skip
    process = spawn(args, env, log)
    try:
        wait_until(lambda: accepts(portal.agent_port), process, log, "swreg agent")
        yield portal.agent_url
    finally:
        stop_process(process)


def test_a_person_passes_the_card_check_with_a_pkcs11_token(
    page: Page, portal: Portal, pki: TestPKI, tokens: Tokens
) -> None:
    spec = f"pkcs11:token=rsa-card?module-path={SOFTHSM}"
    choose_type(page, portal, "person", "person.general")
    page.locator("#next").click()
    expect_step(page, "憑證檢查", PERSON_STEPS)
    page.locator("#detect-readers").click()
    token = page.locator(f'select#reader option[value="{spec}"]')
    expect(token).to_have_text("rsa-card (PKCS#11)")
    with held_reload(page):
        page.locator("select#reader").select_option(spec)
        page.locator("input#pin").fill(PIN)
        page.locator("#next").click()
        expect(page.locator("#card-status")).to_have_text("檢查完畢")
    expect_step(page, "基本資料", PERSON_STEPS)
    expect(page.locator("#f-contact_name")).to_have_value("王小明")  # read from the token's card
