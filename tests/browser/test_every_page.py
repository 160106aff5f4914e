"""Every page and state of the portal in Chromium (issue 19): axe-core (as bundled by
axe-playwright-python) finds no violation in zh-TW and English at 1280 and 320 px (item 5), and a
phone (320 and 375 px) gets the content first, the menu behind a button, the step bar on one line,
no horizontal scrolling and touch targets of at least 24 × 24 px (item 4).

The states are arranged in-process on the portal's database and handed to Chromium as the
cookies a browser would hold (a registration's secret, a card login's session, an officer's
console session), or reached by what a person does on the page: the public pages, every step of
a company's registration (and a refused form), the card step with the mobile certificate's QR
code and with the readers the local card agent lists (a virtual card in the first reader),
忘記密碼 (refused, a reset link sent, the link's page and its refused form), a person's account
page, and the officer console (queue, a registration's detail, search results, an account,
trust, audit). The portal is conftest's with the TW FidO mock (``twfido_portal``) and mailed
reset links; only the readers' state reaches the agent: every other page finds none (its socket
is refused), as on a computer without one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from engine import App, CardResponse, Settings, bootstrap
from engine._settings import Argon2Parameters, MailSettings
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.twfido import TwFidoMock
from engine.web._registration_secret import registration_cookie

from ..conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET
from ..helpers import card_response, enrol
from .conftest import (
    EXPECT_TIMEOUT_MS,
    InsertCard,
    Mailbox,
    Portal,
    SaveScreenshot,
)
from .test_mobile_id import holder

WIDTHS = (1280, 320)
LANGUAGES = ("zh-TW", "en")
UBN = "04595257"
PUBLIC = (
    "/", "/register", "/login", "/accessibility", "/privacy", "/customs/query",
    f"/customs/query?key={UBN}", "/customs/import", "/password/forgot", "/renewal",
    "/activate/not-a-token", "/officer", "/no-such-page",
)  # fmt: skip
STATES = (
    *(f"public {path}" for path in PUBLIC),
    "card step", "card step with readers", "mobile id QR code", "basic data",
    "refused basic data", "enterprise info", "completed", "account page",
    "refused forgot password", "reset link sent", "reset link page", "refused reset link",
    "console queue", "console registration", "console search", "console account",
    "console trust", "console audit", "console search results",
)  # fmt: skip
"""Every state's name, in the order :func:`states` arranges them (``-k`` picks one: its test
id is the name with ``-`` for spaces)."""
STATE_IDS = [name.replace(" ", "-") for name in STATES]


@dataclass(frozen=True)
class State:
    """A page to open, with the cookies that reach it."""

    name: str
    path: str
    cookies: tuple[tuple[str, str], ...] = ()
    form: dict[str, str] | None = None
    """Fields to fill and submit first (a refused form's page)."""
    prepare: Callable[[Page], None] | None = None
    """What a person does on the page then, waiting for what it shows."""
    agent: bool = False
    """Whether the page reaches the local card agent (else its socket is refused)."""


@pytest.fixture(scope="module")
def portal_environment() -> dict[str, str]:
    """忘記密碼 by a mailed link too: the link's pages."""
    return {"SWREG_PASSWORD_RESET": "card,email"}


@pytest.fixture(scope="module")
def portal(twfido_portal: Portal) -> Portal:
    """conftest's portal with the TW FidO mock (the mobile certificate) and
    ``portal_environment``; conftest's ``agent`` serves it."""
    return twfido_portal


@pytest.fixture
def card_in_reader(agent: str, insert_card: InsertCard, pki: TestPKI) -> str:
    """The agent running and a virtual card in the first reader, for it to list; the
    reader's name."""
    return insert_card(pki.issue_person("讀卡機", "0000"))


@pytest.fixture(scope="module")
def arranged(portal: Portal, mailbox: Mailbox) -> Iterator[App]:
    settings = Settings(
        database_url=portal.database_url,
        secret_key=SECRET,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(host=mailbox.host, port=mailbox.port, tls="none"),
        public_origin=portal.origin,
        email_password_reset=True,
    )
    app = bootstrap(settings)
    yield app
    app.close()


def _signed(app: App, card: IssuedCard, challenge: Any) -> CardResponse:
    return CardResponse(
        challenge_id=challenge.id,
        certificate=card.der(),
        signature=card.sign(challenge.payload),
        chain=card.chain_der(),
    )


@pytest.fixture(scope="module")
def states(arranged: App, pki: TestPKI, twfido: TwFidoMock) -> dict[str, State]:
    app = arranged
    origin = app.settings.public_origin
    found = [State(f"public {path}", path) for path in PUBLIC]

    # a company's registration at each step, and a refused 基本資料
    company = pki.issue_company(UBN)
    view = app.registrations.start("enterprise.general", consent=True)
    assert view.secret is not None
    own = ((registration_cookie(view.id), view.secret),)
    url = f"/register/{view.id}"
    app.registrations.submit_card(view.id, card_response(app, view, company))
    waiting = app.registrations.start("person.general", consent=True)  # stays at the card step
    assert waiting.secret is not None
    at_card = ((registration_cookie(waiting.id), waiting.secret),)
    found.append(
        State("card step", f"/register/{waiting.id}", at_card, prepare=_no_agent)
    )  # fmt: skip
    found.append(
        State("card step with readers", f"/register/{waiting.id}", at_card,
              prepare=_readers_listed, agent=True)
    )  # fmt: skip

    def qr_code(page: Page) -> None:
        """行動自然人憑證 chosen, the ID of someone holding one typed, 開始驗證: the QR code
        and the countdown (each time another person: one may ask five times in 10 minutes)."""
        number, _ = holder(pki, twfido, "林行動", next(_PHONES))
        page.locator("#bridge-mobile").check()
        page.locator("#mobile-national-id").fill(number)
        page.locator("#mobile-start").click()
        expect(page.locator("#mobile-qr")).to_be_visible()
        expect(page.locator("#mobile-countdown")).not_to_be_empty()

    found.append(State("mobile id QR code", f"/register/{waiting.id}", at_card, prepare=qr_code))
    basic = {k: v for k, v in COMPANY_ANSWERS.items() if k not in ("consent", "company_name")}
    found.append(State("basic data", url, own))
    found.append(State("refused basic data", url, own, form={"email": "not-an-address"}))

    # a second registration at 企業資訊 and a third completed
    def advanced(answers: dict[str, Any], *, done: bool) -> State:
        card = pki.issue_company("12345675") if not done else pki.issue_person()
        kind = "enterprise.general" if not done else "person.general"
        started = app.registrations.start(kind, consent=True)
        assert started.secret is not None
        app.registrations.submit_card(started.id, card_response(app, started, card))
        step = app.registrations.submit(started.id, answers)
        if done:
            assert step.state == "completed", step
        cookie = ((registration_cookie(started.id), started.secret),)
        return State("completed" if done else "enterprise info", f"/register/{started.id}", cookie)

    found.append(advanced({**basic, "ubn": "12345675"}, done=False))
    found.append(
        advanced({**PERSON_ANSWERS, "email": "axe@example.com", "national_id": "A123456789"},
                 done=True)
    )  # fmt: skip

    # a person's account page after 憑證登入
    person = pki.issue_person("陳小美", "6182")
    answers = {
        **PERSON_ANSWERS,
        "email": "rain@example.com",
        "national_id": "B220206182",
        "contact_name": "陳小美",
    }
    account = enrol(app, "person.general", person, answers).account
    assert account is not None
    app.accounts.activate(app.accounts.send_activation(account))
    login = app.logins.login(_signed(app, person, app.logins.issue_challenge(origin=origin)),
                             origin=origin)  # fmt: skip
    found.append(State("account page", "/account", (("swreg_session", login.token),)))

    # 忘記密碼: refused, a link sent, the link's page (a real link) and its refused form
    found.append(State("refused forgot password", "/password/forgot", prepare=_refused_forgot))
    found.append(State("reset link sent", "/password/forgot", prepare=_link_sent))
    link = app.password_resets.request_link(account)
    assert link is not None and link.startswith(f"{origin}/password/reset/"), link
    reset = link.removeprefix(origin)
    found.append(State("reset link page", reset))
    found.append(
        State("refused reset link", reset,
              form={"password": "N3wPassw0rd!", "password_confirm": "Other-Passw0rd!"},
              prepare=_refused_reset)
    )  # fmt: skip

    # the officer console, as an admin
    officer = pki.issue_person("林關員", "1111")
    app.officers.add(officer.der(), name="林關員", role="admin", actor="test")
    console = app.console.login(
        _signed(app, officer, app.console.issue_challenge(origin=origin)),
        origin=origin,
        via="test",
    )
    session = (("swreg_officer", console.token),)
    with app.database.unit_of_work() as uow:
        person_row = uow.accounts.get_by_name(account)
        assert person_row is not None
        person_id = person_row.id
    for name, path in (
        ("console queue", "/officer"),
        ("console registration", url),
        ("console search", "/officer/accounts"),
        ("console account", f"/officer/accounts/{person_id}"),
        ("console trust", "/officer/trust"),
        ("console audit", "/officer/audit"),
    ):
        target = f"/officer/registrations/{view.id}" if path == url else path
        found.append(State(name, target, session))
    found.append(State("console search results", "/officer/accounts", session, form={"q": UBN}))
    assert tuple(state.name for state in found) == STATES
    return {state.name: state for state in found}


# -- what a person does on a page first ------------------------------------------------------

_LINKS_ASKED = itertools.count(1)
"""Each reset link asked for another name: a name may ask for three an hour."""
_PHONES = itertools.count(2000001)
"""Serial numbers of the people whose phones show a QR code (:func:`holder`)."""


def _no_agent(page: Page) -> None:
    """No card component answers: the card step says how to install one."""
    expect(page.locator("#agent-missing")).to_be_visible()


def _readers_listed(page: Page) -> None:
    """The agent lists pcscd's readers and picks the one holding a card."""
    expect(page.locator("#reader")).to_have_value(re.compile(r"^pcsc:(?!0$)."))
    expect(page.locator("#reader option")).not_to_have_count(1)
    expect(page.locator("#agent-missing")).to_be_hidden()


def _refused_forgot(page: Page) -> None:
    """重設密碼 with nothing filled: every field says it is required."""
    page.locator("#reset").click()
    for field in ("account", "password", "password_confirm"):
        expect(page.locator(f"#error-{field}")).to_be_visible()


def _link_sent(page: Page) -> None:
    """A reset link asked for by account name: the page says it was sent."""
    page.locator("#f-email-account").fill(f"asker{next(_LINKS_ASKED)}@example.com")
    page.locator("#send-link").click()
    expect(page.locator("#link-sent")).to_be_visible()


def _refused_reset(page: Page) -> None:
    """The link's form with two different passwords: refused at 確認密碼."""
    expect(page.locator("#error-password_confirm")).to_be_visible()


def _refuse_socket(socket: WebSocketRoute) -> None:
    socket.close()


def open_state(browser: Browser, portal: Portal, state: State, lang: str, width: int,
               height: int = 900) -> Page:  # fmt: skip
    """A fresh context at ``width`` × ``height`` holding the state's cookies, on its page."""
    context = browser.new_context(locale=lang, viewport={"width": width, "height": height})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    context.add_cookies([{"name": k, "value": v, "url": portal.origin} for k, v in state.cookies])
    if not state.agent:
        context.route_web_socket(re.compile(re.escape(portal.agent_url)), _refuse_socket)
    page = context.new_page()
    page.goto(f"{portal.origin}{state.path}{'&' if '?' in state.path else '?'}lang={lang}")
    if state.form is not None:
        for name, value in state.form.items():
            page.locator(f'[name="{name}"]').fill(value)
        page.locator('form [type="submit"].primary').first.click()
        page.wait_for_load_state()
    if state.prepare is not None:
        state.prepare(page)
    return page


@pytest.fixture(scope="module")
def axe() -> Axe:
    return Axe()


def violations_of(axe: Axe, page: Page) -> list[str]:
    results = axe.run(page)
    return [
        f"{v['id']} ({v['impact']}): {node['target']}"
        for v in results.response["violations"]
        for node in v["nodes"]
    ]


def opened(
    request: pytest.FixtureRequest, browser: Browser, portal: Portal, state: State, lang: str,
    width: int, height: int = 900,
) -> Page:  # fmt: skip
    """:func:`open_state`, with a card in the first reader first if the state lists readers."""
    if state.agent:
        request.getfixturevalue("card_in_reader")
    return open_state(browser, portal, state, lang, width, height)


@pytest.mark.parametrize("name", STATES, ids=STATE_IDS)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_no_axe_violation_on_any_page_or_state(
    request: pytest.FixtureRequest, browser: Browser, portal: Portal, states: dict[str, State],
    axe: Axe, lang: str, width: int, name: str,
) -> None:  # fmt: skip
    page = opened(request, browser, portal, states[name], lang, width)
    try:
        assert violations_of(axe, page) == []
    finally:
        page.context.close()


_PHONE = r"""() => {
  const visible = e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length)
    && getComputedStyle(e).visibility !== 'hidden';
  const box = e => e.getBoundingClientRect();
  const main = document.querySelector('main'), menu = document.getElementById('side-menu');
  const steps = Array.from(document.querySelectorAll('#steps li')).map(li => box(li).top);
  const small = Array.from(document.querySelectorAll(
      'button, select, input[type=checkbox], input[type=radio], .button'))
    .filter(e => visible(e) && !e.classList.contains('default-submit'))
    .filter(e => box(e).width < 24 || box(e).height < 24)
    .map(e => `${e.tagName}#${e.id}.${e.className} `
      + `${Math.round(box(e).width)}x${Math.round(box(e).height)}`);
  const brokenWords = e => {  // a word of the command laid out on two lines
    const text = e.firstChild, words = [];
    if (!text || text.nodeType !== Node.TEXT_NODE) { return words; }
    for (const found of text.data.matchAll(/\S+/g)) {
      const range = document.createRange();
      range.setStart(text, found.index);
      range.setEnd(text, found.index + found[0].length);
      if (new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top))).size > 1) {
        words.push(found[0]);
      }
    }
    return words;
  };
  const broken = Array.from(document.querySelectorAll('code.command'))
    .filter(visible).flatMap(brokenWords);
  const wide = Array.from(document.querySelectorAll('main *'))
    .filter(e => visible(e) && box(e).right > window.innerWidth + 1
      && !Array.from(e.children).some(c => box(c).right > window.innerWidth + 1))
    .slice(0, 3).map(e => `${e.tagName}#${e.id}.${e.className}`);
  return {
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    wide: wide,
    menuShown: menu ? visible(menu) : null,
    menuAbove: menu && visible(menu) ? box(menu).top < box(main).top : false,
    stepRows: new Set(steps.map(Math.round)).size,
    small: small, broken: broken,
  };
}"""


@pytest.mark.parametrize("name", STATES, ids=STATE_IDS)
@pytest.mark.parametrize("width", [320, 375])
@pytest.mark.parametrize("lang", LANGUAGES)
def test_phones_get_the_content_first_and_no_sideways_scrolling(
    request: pytest.FixtureRequest, browser: Browser, portal: Portal, states: dict[str, State],
    lang: str, width: int, name: str,
) -> None:  # fmt: skip
    page = opened(request, browser, portal, states[name], lang, width, height=640)
    try:
        seen = page.evaluate(_PHONE)
        wrong = {
            key: value
            for key, value in (
                ("overflow", seen["overflow"] and (seen["overflow"], seen["wide"])),
                ("menu shown before asked", seen["menuShown"]),
                ("step bar rows", seen["stepRows"]),
                ("targets under 24 px", seen["small"]),
                ("commands broken", seen["broken"]),
            )
            if value and not (key == "step bar rows" and value == 1)
        }
    finally:
        page.context.close()
    assert wrong == {}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_on_a_phone_step_1_starts_on_the_first_screen_and_the_menu_opens_on_demand(
    browser: Browser, portal: Portal, lang: str, screenshots: SaveScreenshot
) -> None:
    page = open_state(browser, portal, State("step 1", "/register"), lang, 320, height=640)
    try:
        if lang == "zh-TW":
            screenshots(page, "phone-step1-category.png")
        first = page.locator("#category-form input[type=radio]").first.bounding_box()
        assert first is not None and first["y"] + first["height"] <= 640
        toggle = page.locator("#menu-toggle")
        assert toggle.get_attribute("aria-expanded") == "false"
        assert not page.locator("#side-menu").is_visible()
        toggle.click()
        assert toggle.get_attribute("aria-expanded") == "true"
        menu = page.locator("#side-menu").bounding_box()
        main = page.locator("main").bounding_box()
        assert menu is not None and main is not None and menu["y"] < main["y"]
        toggle.click()
        assert not page.locator("#side-menu").is_visible()
    finally:
        page.context.close()
    wide = open_state(browser, portal, State("step 1", "/register"), lang, 1280)
    try:  # a wide screen: the menu beside the content, no button
        assert wide.locator("#side-menu").is_visible()
        assert not wide.locator("#menu-toggle").is_visible()
    finally:
        wide.context.close()
