"""The wizard through the local agent and OpenSC's PKCS#11 module (issue 15 item 2), in Chromium.

The second real token of the browser tests (the first is SoftHSM2, test_pkcs11_agent.py): the
virtual PIV card (``readers.vcard.PivApplet``, its APDUs recorded) sits in the first vpcd reader
of the real pcscd (``scripts/with-pcscd``); ``swreg agent --pkcs11-module
/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so`` offers it as the token OpenSC makes of it; the page
lists that token by its own RFC 7512 spec and the card signs the challenges through OpenSC.

OpenSC's module keeps its PC/SC card handles for as long as the process that loaded it lives,
so each test here runs an agent of its own, stopped (its handles released) before the card is
taken out and before any later test inserts one.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.x509.oid import NameOID
from playwright.sync_api import Page, expect
from sqlalchemy import select

from engine import App, Settings, bootstrap
from engine._settings import Argon2Parameters, MailSettings
from engine.store import Account, Certificate, Registration
from engine.testing.pki import IssuedCard, KeyType, TestPKI
from readers.vcard import RetryState

from ..conftest import PERSON_ANSWERS, SECRET
from ..processes import SWREG, accepts, spawn, stop_process, wait_until
from ..test_opensc_piv import PIN, WRONG_PIN, Insert, RecordingApplet, opensc, reader, recording
from ..test_pkcs11_opensc import OPENSC, VERIFY, general_authenticate_starts
from .conftest import Mailbox, Portal
from .test_wizard import (
    ACTIVATE_TEXT,
    COMPLETED_TEXT,
    PERSON_STEPS,
    activation_link,
    choose_type,
    expect_step,
    fill_fields,
    held_reload,
)

__all__ = ["opensc", "reader"]  # fixtures shared with tests/test_opensc_piv.py


@pytest.fixture
def agent(portal: Portal, opensc: Path, reader: Insert, tmp_path: Path) -> Iterator[str]:
    """``swreg agent --pkcs11-module opensc-pkcs11.so`` for the portal's origin, for one test.

    It replaces the module-wide agent of conftest.py: set up after ``reader`` (so stopped before
    the card is removed) and stopped by PID at the test's end, releasing the reader it holds
    through OpenSC. A home of its own keeps OpenSC's caches out of the user's.
    """
    assert str(opensc) == OPENSC
    log = tmp_path / "agent.log"
    home = tmp_path / "agent-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWREG_", "OPENSC_"))}
    env.update(PYTHONUNBUFFERED="1", HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    args = [
        SWREG, "agent", "--origin", portal.origin, "--port", str(portal.agent_port),
        "--pkcs11-module", OPENSC,
    ]  # fmt: skip
    process = spawn(args, env, log)
    try:
        wait_until(lambda: accepts(portal.agent_port), process, log, "swreg agent")
        yield portal.agent_url
    finally:
        stop_process(process)


def token_spec(card: IssuedCard) -> str:
    """The spec the agent gives OpenSC's token of ``card``: OpenSC labels a PIV token with its
    certificate's common name."""
    label = card.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return f"pkcs11:token={quote(str(label), safe='')}?module-path={OPENSC}"


def pick_token(page: Page, card: IssuedCard, label: str) -> str:
    """「開啟偵測多台讀卡機」, then choose OpenSC's token of ``card`` (shown as ``label``)."""
    spec = token_spec(card)
    page.locator("#detect-readers").click()
    expect(page.locator(f'select#reader option[value="{spec}"]')).to_have_text(f"{label} (PKCS#11)")
    page.locator("select#reader").select_option(spec)
    return spec


def registration_id(page: Page) -> str:
    value = page.locator("body").get_attribute("data-registration-id")
    assert value, "not on a registration page"
    return value


def signed_with_9c_after_verify(applet: RecordingApplet) -> list[int]:
    """The key of each signature the card made (9C, OpenSC's ID 02, each time after a
    VERIFY that succeeded: the bridge's context-specific login)."""
    keys = []
    for i in general_authenticate_starts(applet):
        before, answer = applet.exchanges[i - 1]
        assert (before[:4], answer.sw) == (VERIFY, 0x9000)
        keys.append(applet.exchanges[i][0][3])
    return keys


@pytest.mark.parametrize(
    ("key_type", "name", "id_last4", "answers"),
    [
        ("rsa", "王小明", "6789", PERSON_ANSWERS),
        ("ec", "林小華", "6780", {**PERSON_ANSWERS, "email": "lin@example.com",
                                  "contact_name": "林小華", "national_id": "B123456780"}),
    ],
    ids=["rsa", "p256"],
)  # fmt: skip
def test_a_person_registers_and_logs_in_through_opensc(
    page: Page, portal: Portal, pki: TestPKI, mailbox: Mailbox, reader: Insert,
    key_type: KeyType, name: str, id_last4: str, answers: dict[str, Any],
) -> None:  # fmt: skip
    """一般個人 with an RSA or a P-256 card: the card check through opensc-pkcs11.so, 註冊完成
    with the card's certificate stored, activation, then 憑證登入 through the same token."""
    card = pki.issue_person(name, id_last4, key=key_type)
    state = RetryState()
    applet = recording(card, state)
    account = str(answers["email"])  # a person's account name is the e-mail address
    with reader(applet):
        choose_type(page, portal, "person", "person.general")
        page.locator("#next").click()
        expect_step(page, "憑證檢查", PERSON_STEPS)
        registration = registration_id(page)
        spec = pick_token(page, card, name)
        with held_reload(page):
            page.locator("input#pin").fill(PIN)
            page.locator("#next").click()
            expect(page.locator("#card-status")).to_have_text("檢查完畢")
            expect(page.locator("#error-pin")).to_be_hidden()
            expect(page.locator("#error-card")).to_be_hidden()

        expect_step(page, "基本資料", PERSON_STEPS)
        expect(page.locator("#f-contact_name")).to_have_value(name)  # from the card
        expect(page.locator("#f-contact_name")).not_to_be_editable()
        fill_fields(page, answers)
        page.locator("#check-account").click()
        expect(page.locator("#check-account-result")).to_have_text("此帳號可使用")
        expect(page.locator("#account")).to_have_value(account)
        page.locator("#next").click()

        expect_step(page, "註冊完成", PERSON_STEPS)
        completed = page.locator("section#completed")
        expect(completed).to_contain_text(COMPLETED_TEXT)
        expect(completed).to_contain_text(ACTIVATE_TEXT)
        stored = stored_rows(portal, mailbox, registration)

        page.goto(activation_link(mailbox.wait_for(account), portal.origin))
        page.locator("#activate").click()
        expect(page.locator("#activated")).to_be_visible()

        page.goto(portal.url("/login"))
        expect(page.locator(f'select#reader option[value="{spec}"]')).to_have_text(
            f"{name} (PKCS#11)"
        )
        page.locator("select#reader").select_option(spec)
        page.locator("#pin").fill(PIN)
        page.locator("#login").click()
        expect(page).to_have_url(re.compile(re.escape(portal.url("/account")) + r"(\?.*)?$"))
        expect(page.locator("#account-name")).to_have_text(account)
        activated = stored_rows(portal, mailbox, registration)["account"]

    fingerprint = hashlib.sha256(card.der()).hexdigest()
    serial = f"{card.certificate.serial_number:X}"
    assert stored == {
        "registration": (
            "completed", "person.general", account, card.der(), fingerprint,
            (fingerprint, serial, portal.origin),
        ),
        "account": (account, "person", "pending_activation", account, name),
        "certificates": [("login", fingerprint, serial, card.der())],
    }  # fmt: skip
    assert activated == (account, "person", "active", account, name)
    # OpenSC signed twice (the card check, the login) with the signature key, never with 9A;
    # a P-256 signature reached the portal as DER (it checks it), not as OpenSC's raw r||s
    assert signed_with_9c_after_verify(applet) == [0x9C, 0x9C]
    assert state.tries_left == 3


def stored_rows(portal: Portal, mailbox: Mailbox, registration: str) -> dict[str, object]:
    """The registration's row, its account and the account's certificates, as stored."""
    settings = Settings(
        database_url=portal.database_url,
        secret_key=SECRET,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(host=mailbox.host, port=mailbox.port, tls="none"),
    )
    app: App = bootstrap(settings)
    try:
        with app.database.unit_of_work() as uow:
            row = uow.session.scalars(
                select(Registration).where(Registration.id == registration)
            ).one()
            evidence = row.evidence or {}
            accounts = uow.session.scalars(
                select(Account).where(Account.registration_id == registration)
            ).all()
            assert len(accounts) == 1, accounts
            owner = accounts[0]
            certificates = uow.session.scalars(
                select(Certificate).where(Certificate.account_id == owner.id)
            ).all()
            return {
                "registration": (
                    row.state,
                    row.chosen_type,
                    row.account_name,
                    row.certificate_der,
                    row.certificate_fingerprint,
                    (evidence.get("fingerprint"), evidence.get("serial"), evidence.get("origin")),
                ),
                "account": (
                    owner.name,
                    owner.category,
                    owner.status,
                    owner.email,
                    owner.contact_name,
                ),
                "certificates": [
                    (c.purpose, c.fingerprint, c.serial_hex, c.der) for c in certificates
                ],
            }
    finally:
        app.close()


def test_wrong_pins_through_opensc_tell_the_tries_it_reports(
    page: Page,
    portal: Portal,
    pki: TestPKI,
    reader: Insert,
) -> None:
    """Wrong PINs through opensc-pkcs11.so: OpenSC tells no count at two tries left of three
    (it flags only the final try), 「剩餘1次機會」 at one; the third locks the card, and then
    even the right PIN is refused without reaching the card."""
    card = pki.issue_person("林小華", "6780", key="ec")
    state = RetryState()
    applet = recording(card, state)
    error_pin = page.locator("#error-pin")
    seen: list[tuple[str, int]] = []
    with reader(applet):
        choose_type(page, portal, "person", "person.general")
        page.locator("#next").click()
        expect_step(page, "憑證檢查", PERSON_STEPS)
        pick_token(page, card, "林小華")
        for pin, shown in [
            (WRONG_PIN, "PIN碼錯誤"),  # 2 tries left: OpenSC sets no flag
            (WRONG_PIN, "PIN碼錯誤，剩餘1次機會"),  # CKF_USER_PIN_FINAL_TRY
            (WRONG_PIN, "IC卡已鎖卡"),  # the wrong PIN that locked the card
            (PIN, "IC卡已鎖卡"),  # CKF_USER_PIN_LOCKED: the PIN is not sent
        ]:
            page.locator("input#pin").fill(pin)
            page.locator("#next").click()  # clears #error-pin and disables #next at once
            expect(error_pin).to_have_text(shown)
            expect(page.locator("#error-card")).to_be_hidden()
            expect(page.locator("#next")).to_be_enabled()  # the check is over
            seen.append((str(error_pin.text_content()), state.tries_left))
        expect_step(page, "憑證檢查", PERSON_STEPS)
        expect(page.locator("#card-status")).to_have_text("")
    assert seen == [
        ("PIN碼錯誤", 2),
        ("PIN碼錯誤，剩餘1次機會", 1),
        ("IC卡已鎖卡", 0),
        ("IC卡已鎖卡", 0),
    ]
    verifies = [answer.sw for apdu, answer in applet.exchanges if apdu[:4] == VERIFY and apdu[4:]]
    assert verifies == [0x63C2, 0x63C1, 0x63C0]  # three PINs reached the card, none after
    assert general_authenticate_starts(applet) == []  # nothing was signed
