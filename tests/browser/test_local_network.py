"""Chrome's Local Network Access (issue 15 item 5; docs/cards.md): the portal on an address that
is not loopback, the card agent on 127.0.0.1, real Chromium between them.

A page whose own address is not loopback may open ``ws://127.0.0.1:…`` only with the user's
``loopback-network`` permission, and only from a secure context. The portal here listens on a
198.18.0.0/15 address (RFC 2544's benchmarking range, never routed) that the module adds to
``lo`` and removes afterwards; Chromium is told to treat that ``http://`` origin as secure
(``--unsafely-treat-insecure-origin-as-secure``), as it treats the ``https://`` origin of a real
portal. The card is a SoftHSM2 token offered by ``swreg agent --pkcs11-module`` (no pcscd).

Measured with Chromium 156 and recorded in docs/cards.md: without the permission the socket
fails at once (``net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS``); headless Chromium answers
the permission prompt with a denial, after which ``navigator.permissions.query`` reports
``denied`` in that context; ``grant_permissions(["local-network-access"])`` (Playwright maps it to
``local-network`` and ``loopback-network``) lets the socket through.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserType,
    CDPSession,
    Page,
    expect,
    sync_playwright,
)
from sqlalchemy import func, select

from engine import Settings, bootstrap
from engine.store import Challenge, Registration
from engine.testing.ports import free_port

from ..conftest import SECRET
from ..processes import SWREG, answers_http, spawn, stop_process, swreg_env, wait_until
from ..test_pkcs11 import PIN, SOFTHSM, Tokens, tokens
from .conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    EXPECT_TIMEOUT_MS,
    Mailbox,
    Portal,
    SaveScreenshot,
)
from .test_pkcs11_agent import agent
from .test_wizard import PERSON_STEPS, choose_type, expect_step, held_reload

__all__ = ["agent", "tokens"]  # SoftHSM2's tokens and the agent offering them, shared fixtures

SPEC = f"pkcs11:token=rsa-card?module-path={SOFTHSM}"
TITLE = "允許本網站連線讀卡元件"
ASK = (
    "本網站需要連線您電腦上的讀卡元件才能讀取憑證卡。瀏覽器會詢問是否允許本網站"
    "「存取這部裝置上的其他應用程式和服務」，請按「允許」。"
)
DENIED_HELP = (
    "瀏覽器已封鎖本網站連線您電腦上的讀卡元件。請按網址列左側的網站資訊圖示，開啟「網站設定」，"
    "將「存取這部裝置上的其他應用程式和服務」改為「允許」，再按「開啟偵測多台讀卡機」重新偵測。"
)
DENIED = "瀏覽器封鎖了本網站連線讀卡元件，請依「允許本網站連線讀卡元件」的說明設定後重新偵測。"
INSECURE = (
    "本網站不是以 https:// 開啟，瀏覽器不允許網頁連線您電腦上的讀卡元件。"
    "請改以 https:// 開頭的網址開啟本網站。"
)

RECORDER = """
(() => {
  /* What the user is told (#local-network) and when the page opens a WebSocket, in order. */
  const log = (window.__localNetwork = []);
  let shown = "";
  const note = () => {
    const notice = document.getElementById("local-network");
    const title = document.getElementById("local-network-title");
    const text = document.getElementById("local-network-text");
    const now = notice && !notice.hidden && title && text
      ? notice.getAttribute("data-state") + ": " + title.textContent + " / " + text.textContent
      : "";
    if (now !== shown) {
      shown = now;
      if (now) log.push(now);
    }
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      note();
      log.push("connect " + args[0]);
      super(...args);
    }
  };
  /* observers are called in the order they were made: this one before agent.js's */
  let helpShown = false;
  new MutationObserver(() => {
    note();
    const help = document.getElementById("agent-missing");
    const now = !!help && !help.hidden;
    if (now && !helpShown) {
      log.push("install help revealed");
      const seen = log.filter((entry) => entry === "install help revealed").length;
      document.documentElement.setAttribute("data-install-help-revealed", String(seen));
    }
    helpShown = now;
  }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
})();
"""


def own_address() -> str:
    """This run's own 198.18.0.0/15 address (by PID: concurrent runs do not share one)."""
    n = os.getpid() % (254 * 254)
    return f"198.18.{1 + n // 254}.{1 + n % 254}"


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def portal_address() -> Iterator[str]:
    """A non-loopback IPv4 address of this host, on ``lo`` for this module only (root:
    ``ip addr add``; removed in teardown)."""
    address = own_address()
    added = ip("-4", "addr", "add", f"{address}/32", "dev", "lo")
    assert added.returncode == 0 or "File exists" in added.stderr, (
        f"cannot add {address} to lo (root and iproute2 needed): {added.stderr}"
    )
    try:
        yield address
    finally:
        removed = ip("-4", "addr", "del", f"{address}/32", "dev", "lo")
        assert removed.returncode == 0, removed.stderr


@pytest.fixture(scope="module")
def portal(
    portal_database: str,
    portal_address: str,
    mailbox: Mailbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Portal]:
    """``swreg serve`` on the non-loopback address, its agent on 127.0.0.1 (replaces the
    conftest.py fixture for this module)."""
    port, agent_port = free_port(portal_address), free_port("127.0.0.1")
    origin = f"http://{portal_address}:{port}"
    agent_url = f"ws://127.0.0.1:{agent_port}/"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = swreg_env(
        SWREG_DATABASE_URL=portal_database,
        SWREG_SECRET_KEY=SECRET.hex(),
        SWREG_ARGON2="1,64,1",
        SWREG_PUBLIC_ORIGIN=origin,
        SWREG_AGENT_URL=agent_url,
        SWREG_SMTP_HOST=mailbox.host,
        SWREG_SMTP_PORT=str(mailbox.port),
        SWREG_SMTP_TLS="none",
    )
    args = [SWREG, "serve", "--host", portal_address, "--port", str(port), "--workers", "2"]
    process = spawn(args, env, log)
    try:
        wait_until(lambda: answers_http(origin + "/"), process, log, "swreg serve")
        yield Portal(origin, portal_database, agent_url, agent_port, log)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def chromium() -> Iterator[BrowserType]:
    """Playwright's Chromium driver (one per module: the browsers below share it)."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        yield playwright.chromium


@pytest.fixture(scope="module")
def browser(chromium: BrowserType, portal: Portal) -> Iterator[Browser]:
    """Debian's Chromium treating the portal's ``http://`` origin as secure, as it treats an
    ``https://`` one (replaces the conftest.py fixture for this module)."""
    secure = f"--unsafely-treat-insecure-origin-as-secure={portal.origin}"
    launched = chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, secure])
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def recorded(page: Page) -> Page:
    """The page, logging in ``window.__localNetwork`` what #local-network says and each
    WebSocket the page opens, in order."""
    page.add_init_script(RECORDER)
    return page


def revealed(page: Page) -> None:
    """Wait until a script has revealed #agent-missing once (the bridge found no component)."""
    expect(page.locator("html")).to_have_attribute("data-install-help-revealed", "1")


def told(page: Page) -> list[str]:
    log = page.evaluate("window.__localNetwork")
    assert isinstance(log, list)
    return [str(entry) for entry in log]


def deny(page: Page, origin: str) -> CDPSession:
    """The user's 「封鎖」 in the site settings: loopback-network denied for ``origin``, for as
    long as the returned DevTools session stays attached (Chromium drops the override when it
    detaches)."""
    session = page.context.new_cdp_session(page)
    context = session.send("Target.getTargetInfo")["targetInfo"]["browserContextId"]
    session.send(
        "Browser.setPermission",
        {
            "permission": {"name": "loopback-network"},
            "setting": "denied",
            "origin": origin,
            "browserContextId": context,
        },
    )
    return session


def allow(page: Page, origin: str) -> None:
    """The user's 「允許」: Playwright grants local-network and loopback-network."""
    page.context.grant_permissions(["local-network-access"], origin=origin)


def registration_id(page: Page) -> str:
    value = page.locator("body").get_attribute("data-registration-id")
    assert value, "not on a registration page"
    return value


def stored(portal: Portal, registration: str) -> tuple[str, bytes | None, object, int]:
    """(state, certificate DER, evidence's fingerprint and origin, challenges issued)."""
    app = bootstrap(Settings(database_url=portal.database_url, secret_key=SECRET))
    try:
        with app.database.unit_of_work() as uow:
            row = uow.session.scalars(
                select(Registration).where(Registration.id == registration)
            ).one()
            challenges = uow.session.scalar(
                select(func.count())
                .select_from(Challenge)
                .where(Challenge.registration_id == registration)
            )
            evidence = None
            if row.evidence is not None:
                evidence = (row.evidence.get("fingerprint"), row.evidence.get("origin"))
            return row.state, row.certificate_der, evidence, int(challenges or 0)
    finally:
        app.close()


def to_card_step(page: Page, portal: Portal) -> str:
    choose_type(page, portal, "person", "person.general")
    page.locator("#next").click()
    expect_step(page, "憑證檢查", PERSON_STEPS)
    return registration_id(page)


def pass_with_token(page: Page) -> None:
    """開啟偵測多台讀卡機, the SoftHSM2 token, its PIN, 下一步: 「檢查完畢」, then 基本資料."""
    page.locator("#detect-readers").click()
    expect(page.locator(f'select#reader option[value="{SPEC}"]')).to_have_text("rsa-card (PKCS#11)")
    with held_reload(page):
        page.locator("select#reader").select_option(SPEC)
        page.locator("input#pin").fill(PIN)
        page.locator("#next").click()
        expect(page.locator("#card-status")).to_have_text("檢查完畢")
    expect_step(page, "基本資料", PERSON_STEPS)
    expect(page.locator("#f-contact_name")).to_have_value("王小明")  # read from the token


def test_with_the_permission_the_card_check_passes(
    recorded: Page, portal: Portal, tokens: Tokens
) -> None:
    page = recorded
    allow(page, portal.origin)
    registration = to_card_step(page, portal)
    expect(page.locator("#reader")).to_contain_text("rsa-card (PKCS#11)")  # the agent answered
    expect(page.locator("#local-network")).to_be_hidden()
    assert f"connect {portal.agent_url}" in told(page)
    assert [entry for entry in told(page) if not entry.startswith("connect ")] == []  # nothing told

    pass_with_token(page)
    fingerprint = hashlib.sha256(tokens.rsa.der()).hexdigest()
    assert stored(portal, registration) == (
        "basic_data", tokens.rsa.der(), (fingerprint, portal.origin), 1
    )  # fmt: skip


def test_denied_the_page_says_what_to_do_and_no_card_is_checked(
    recorded: Page, portal: Portal, tokens: Tokens, screenshots: SaveScreenshot
) -> None:
    page = recorded
    blocked = deny(page, portal.origin)
    registration = to_card_step(page, portal)
    notice = page.locator("#local-network")
    expect(notice).to_be_visible()
    expect(page.locator("#local-network-title")).to_have_text(TITLE)
    expect(page.locator("#local-network-text")).to_have_text(DENIED_HELP)
    # the bridge found no component and revealed the install help: agent.js hid it again
    revealed(page)
    expect(page.locator("#agent-missing")).to_be_hidden()
    # no socket was tried: the page knew the answer
    assert told(page) == [f"denied: {TITLE} / {DENIED_HELP}", "install help revealed"]
    screenshots(page, "card-step-local-network-denied.png")

    page.locator("input#pin").fill(PIN)
    page.locator("#next").click()
    expect(page.locator("#error-card")).to_have_text(DENIED)
    expect(page.locator("#agent-missing")).to_be_hidden()
    assert stored(portal, registration) == ("card_check", None, None, 0)
    assert [entry for entry in told(page) if entry.startswith("connect")] == []

    # what the page says to do: allow, then 開啟偵測多台讀卡機 — and the check passes
    allow(page, portal.origin)
    page.locator("#detect-readers").click()
    expect(notice).to_be_hidden()
    pass_with_token(page)
    fingerprint = hashlib.sha256(tokens.rsa.der()).hexdigest()
    assert stored(portal, registration) == (
        "basic_data", tokens.rsa.der(), (fingerprint, portal.origin), 1
    )  # fmt: skip
    blocked.detach()


def test_the_page_says_the_browser_will_ask_before_it_connects(
    recorded: Page, portal: Portal
) -> None:
    """Neither granted nor denied: #local-network explains the browser's question before the
    socket is opened; headless Chromium answers it with a denial, and the page then says what
    to do."""
    page = recorded
    registration = to_card_step(page, portal)
    revealed(page)
    assert told(page) == [
        f"prompt: {TITLE} / {ASK}",
        f"connect {portal.agent_url}",
        f"denied: {TITLE} / {DENIED_HELP}",
        "install help revealed",
    ]
    expect(page.locator("#agent-missing")).to_be_hidden()
    assert stored(portal, registration) == ("card_check", None, None, 0)


def test_over_plain_http_the_page_says_to_use_https(
    chromium: BrowserType, portal: Portal, agent: str
) -> None:
    """Without the secure-context flag the portal's http:// page can never be granted the
    permission (Chromium reports it denied): the page says to open the https:// address."""
    plain = chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        context = plain.new_context(locale="zh-TW")
        try:
            page = context.new_page()
            page.add_init_script(RECORDER)
            registration = to_card_step(page, portal)
            expect(page.locator("#local-network-text")).to_have_text(INSECURE)
            revealed(page)
            expect(page.locator("#agent-missing")).to_be_hidden()
            assert [e for e in told(page) if e.startswith("connect")] == []
            assert stored(portal, registration) == ("card_check", None, None, 0)
        finally:
            context.close()
    finally:
        plain.close()


def test_the_login_page_says_it_too(recorded: Page, portal: Portal, agent: str) -> None:
    """憑證登入 has no #local-network of its own: agent.js makes one before #agent-missing."""
    page = recorded
    blocked = deny(page, portal.origin)
    page.goto(portal.url("/login"))
    expect(page.locator("#local-network-title")).to_have_text(TITLE)
    expect(page.locator("#local-network-text")).to_have_text(DENIED_HELP)
    revealed(page)
    expect(page.locator("#agent-missing")).to_be_hidden()
    assert page.evaluate(
        "document.getElementById('local-network').nextElementSibling.id"
    ) == "agent-missing"  # fmt: skip
    assert [entry for entry in told(page) if entry.startswith("connect")] == []
    blocked.detach()
