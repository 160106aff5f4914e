"""Fixtures of the browser tests: a real portal, card agent, SMTP server, cards and Chromium.

Everything here is the production path except the cards, which are virtual PIV cards served to
the real pcscd through its vpcd driver (``readers.vcard``):

* ``mailbox``: an ``aiosmtpd`` SMTP server on a free loopback port that keeps every message;
* ``portal``: a database of the test backend (SQLite, or PostgreSQL in the PostgreSQL pass)
  prepared in-process (trust anchors and intermediates: a PIV card carries no chain), then
  ``swreg serve --workers 2`` as a subprocess pointed at that database, the SMTP server and the
  agent;
* ``agent``: ``swreg agent --origin <portal origin>`` as a subprocess (``pcsc:`` cards only);
* ``insert_card``: inserts virtual cards into the first vpcd reader; they are removed (and the
  reader EMPTY) after each test;
* ``browser`` / ``page``: Debian's Chromium through Playwright (never ``playwright install``),
  one fresh context per test;
* ``screenshots``: full-page screenshots into ``tmp_path``, copied to ``docs/screenshots/`` only
  when ``SWREG_SCREENSHOTS=1``.
* ``hipki_portal`` / ``hipki_page`` / ``start_hipki``: for the pages through CHT's HiPKI
  component: the portal with ``SWREG_HIPKI_URL`` at ``hipki_port`` and no agent, a page of it,
  and the component's emulator (:mod:`engine.testing.hipki`) started on that port.
* ``twfido`` / ``twfido_portal`` / ``twfido_page``: for the mobile citizen certificate: the TW
  FidO mock (:mod:`engine.testing.twfido`) over real HTTP with 王小明 (``TWFIDO_PERSON``) holding
  a mobile certificate of the test PKI, the portal with ``SWREG_TWFIDO_*`` pointing at it (no
  agent), and a page of it (the mock's failure switches are reset after each test).
* ``approval_install`` / ``approval_environment`` / ``approval_app``: an officer approval step
  (待審核) as a third-party plugin in a site folder with a workflow placing it (for whom:
  ``approval_scope``), the environment that installs it for the served processes (a module's
  ``portal_environment``), and the engine on the portal's database with the same step.

Every process started here is stopped by PID in its fixture's teardown (with the uvicorn
workers it forked, found by PID and start time: ``tests/processes.py``).
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, Page, expect, sync_playwright

from engine import App, Settings, bootstrap, make_plugin_manager
from engine._settings import Argon2Parameters, MailSettings
from engine.testing.hipki import HiPKIEmulator, HiPKIReader
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.ports import free_port
from engine.testing.twfido import TwFidoHolder, TwFidoMock
from readers import open_card
from readers.pcsc import wait_for_card
from readers.vcard import CardThread, PivApplet, RetryState

from ..conftest import SECRET, TestDatabases
from ..processes import SWREG, accepts, serve, spawn, stop_process, wait_until
from ..test_approval import ApprovalPlugin, with_approval

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
CARD_PIN = "13572468"
"""The PIN of every virtual card inserted here (unless a test asks for another)."""
CARD_TIMEOUT = 5.0
EXPECT_TIMEOUT_MS = 15_000
"""Card work goes page → agent → pcscd → card and back; allow for a slow machine."""
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO / "docs" / "screenshots"

InsertCard = Callable[..., str]
"""``insert_card(card, pin=CARD_PIN, retry=None) -> reader name``."""
SaveScreenshot = Callable[[Page, str], Path]
StartHiPKI = Callable[..., HiPKIEmulator]
"""``start_hipki(readers, **switches) -> the running emulator``."""


# -- SMTP --------------------------------------------------------------------------------------


class Mailbox:
    """What the SMTP server received; :meth:`wait_for` blocks until a message to someone arrives."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._messages: list[tuple[list[str], EmailMessage]] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: keep the message with its envelope recipients."""
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        recipients = [str(r).lower() for r in envelope.rcpt_tos]
        with self._arrived:
            self._messages.append((recipients, message))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def messages_to(self, address: str) -> list[EmailMessage]:
        with self._arrived:
            return [m for rcpt, m in self._messages if address.lower() in rcpt]

    def wait_for(self, address: str, timeout: float = 15.0) -> EmailMessage:
        """The first message to ``address``, waiting up to ``timeout`` seconds for it."""
        with self._arrived:
            found = self._arrived.wait_for(
                lambda: any(address.lower() in rcpt for rcpt, _ in self._messages), timeout
            )
            assert found, f"no mail to {address} within {timeout} s"
            return next(m for rcpt, m in self._messages if address.lower() in rcpt)


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on a free loopback port collecting every message."""
    box = Mailbox("127.0.0.1", free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# -- portal and agent --------------------------------------------------------------------------


@dataclass(frozen=True)
class Portal:
    """The running portal: where it answers, its database and the agent the pages use."""

    origin: str
    database_url: str
    agent_url: str
    agent_port: int
    log: Path

    def url(self, path: str) -> str:
        return self.origin + path


@pytest.fixture(scope="module")
def portal_ports() -> tuple[int, int]:
    """(portal port, agent port): chosen first, since each process must know the other's."""
    return free_port(), free_port()


@pytest.fixture(scope="module")
def portal_database(
    tmp_path_factory: pytest.TempPathFactory, test_databases: TestDatabases, pki: TestPKI
) -> Iterator[str]:
    """A fresh database of the test backend, trusting the test roots and knowing their CAs."""
    url = test_databases.create(tmp_path_factory.mktemp("portal"))
    setup = bootstrap(Settings(database_url=url, secret_key=SECRET))
    try:
        pki.publish_to(setup.trust, actor="test")
    finally:
        setup.close()
    yield url
    test_databases.drop(url)


@pytest.fixture(scope="module")
def portal_environment() -> dict[str, str]:
    """More environment for the served processes; a module overrides it (a plugin installed
    for them, a workflow file)."""
    return {}


@pytest.fixture(scope="module")
def portal(
    portal_database: str,
    portal_ports: tuple[int, int],
    mailbox: Mailbox,
    portal_environment: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Portal]:
    """``swreg serve --workers 2`` on a free port, answering ``GET /``, with
    ``portal_environment``; stopped by PID."""
    port, agent_port = portal_ports
    origin = f"http://127.0.0.1:{port}"
    agent_url = f"ws://127.0.0.1:{agent_port}/"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = serve(
        portal_database, SECRET.hex(), port, log, workers=2,
        SWREG_AGENT_URL=agent_url,
        SWREG_SMTP_HOST=mailbox.host,
        SWREG_SMTP_PORT=str(mailbox.port),
        SWREG_SMTP_TLS="none",  # the plain local mailbox, no login
        **portal_environment,
    )  # fmt: skip
    try:
        yield Portal(origin, portal_database, agent_url, agent_port, log)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def agent(portal: Portal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``swreg agent`` for the portal's origin only (``pcsc:`` cards); yields its ws:// URL."""
    log = tmp_path_factory.mktemp("agent") / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env["PYTHONUNBUFFERED"] = "1"
    args = [SWREG, "agent", "--origin", portal.origin, "--port", str(portal.agent_port)]
    process = spawn(args, env, log)
    try:
        wait_until(lambda: accepts(portal.agent_port), process, log, "swreg agent")
        yield portal.agent_url
    finally:
        stop_process(process)


# -- CHT's HiPKI component (emulated); no agent -----------------------------------------------


@pytest.fixture(scope="module")
def hipki_port(portal_ports: tuple[int, int]) -> int:
    """Where every emulator of a module listens (the portal is told once, at start)."""
    port = free_port()
    assert port not in portal_ports
    return port


@pytest.fixture(scope="module")
def hipki_portal(
    portal_database: str,
    portal_ports: tuple[int, int],
    mailbox: Mailbox,
    hipki_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Portal]:
    """``swreg serve`` as ``portal``, with ``SWREG_HIPKI_URL`` at the emulator's port; the
    agent URL names a port nothing listens on."""
    port, agent_port = portal_ports
    origin = f"http://127.0.0.1:{port}"
    agent_url = f"ws://127.0.0.1:{agent_port}/"
    log = tmp_path_factory.mktemp("serve-hipki") / "serve.log"
    process = serve(
        portal_database, SECRET.hex(), port, log, workers=2,
        SWREG_AGENT_URL=agent_url,
        SWREG_HIPKI_URL=f"http://127.0.0.1:{hipki_port}",
        SWREG_SMTP_HOST=mailbox.host,
        SWREG_SMTP_PORT=str(mailbox.port),
        SWREG_SMTP_TLS="none",
    )  # fmt: skip
    try:
        yield Portal(origin, portal_database, agent_url, agent_port, log)
    finally:
        stop_process(process)


@pytest.fixture
def hipki_page(browser: Browser, hipki_portal: Portal) -> Iterator[Page]:
    """A fresh zh-TW context of the HiPKI portal; no swreg agent runs."""
    context = browser.new_context(locale="zh-TW", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def start_hipki(hipki_port: int) -> Iterator[StartHiPKI]:
    """``start_hipki(readers, **switches)``: the emulator on the module's port (trusting every
    site unless ``trusted_hosts`` says otherwise); stopped after the test."""
    running: list[HiPKIEmulator] = []

    def start(readers: list[HiPKIReader], **switches: Any) -> HiPKIEmulator:
        switches.setdefault("trusted_hosts", None)
        emulator = HiPKIEmulator(readers, port=hipki_port, **switches)
        running.append(emulator.start())
        return emulator

    yield start
    for emulator in running:
        emulator.stop()


# -- the mobile citizen certificate: MOI's TW FidO service (mocked); no agent -------------------

TWFIDO_SERVICE = "SP-SWREG-BROWSER"
TWFIDO_KEY = bytes(range(64, 96))
"""The portal's SP service id and AES key at the mock (test material)."""
TWFIDO_PERSON = "A123456789"
"""王小明 (PERSON_ANSWERS), who holds a mobile certificate at the module's mock."""


@pytest.fixture(scope="module")
def twfido(pki: TestPKI) -> Iterator[TwFidoMock]:
    """The TW FidO mock on a free loopback port: one SP (the portal) and 王小明 with a mobile
    certificate (RSA, MOICA of the test PKI, rank ``mobile``); tests may add holders."""
    card = pki.issue_person("王小明", TWFIDO_PERSON[-4:], key="rsa", card_rank="mobile")
    holders = {TWFIDO_PERSON: TwFidoHolder(card)}
    with TwFidoMock({TWFIDO_SERVICE: TWFIDO_KEY}, holders) as mock:
        yield mock


@pytest.fixture(scope="module")
def twfido_portal(
    portal_database: str,
    portal_ports: tuple[int, int],
    mailbox: Mailbox,
    twfido: TwFidoMock,
    tmp_path_factory: pytest.TempPathFactory,
    portal_environment: dict[str, str],
) -> Iterator[Portal]:
    """``swreg serve`` as ``portal``, with ``SWREG_TWFIDO_*`` naming the mock and
    ``portal_environment``; the agent URL names a port nothing listens on (unless the module
    starts ``agent`` for it)."""
    port, agent_port = portal_ports
    origin = f"http://127.0.0.1:{port}"
    agent_url = f"ws://127.0.0.1:{agent_port}/"
    log = tmp_path_factory.mktemp("serve-twfido") / "serve.log"
    process = serve(
        portal_database, SECRET.hex(), port, log, workers=2,
        SWREG_AGENT_URL=agent_url,
        SWREG_TWFIDO_URL=twfido.url,
        SWREG_TWFIDO_SERVICE_ID=TWFIDO_SERVICE,
        SWREG_TWFIDO_KEY=base64.b64encode(TWFIDO_KEY).decode("ascii"),
        SWREG_TWFIDO_PUSH="1",
        SWREG_SMTP_HOST=mailbox.host,
        SWREG_SMTP_PORT=str(mailbox.port),
        SWREG_SMTP_TLS="none",
        **portal_environment,
    )  # fmt: skip
    try:
        yield Portal(origin, portal_database, agent_url, agent_port, log)
    finally:
        stop_process(process)


@pytest.fixture
def twfido_page(browser: Browser, twfido_portal: Portal, twfido: TwFidoMock) -> Iterator[Page]:
    """A fresh zh-TW context of the TW FidO portal; afterwards the mock's switches are off."""
    context = browser.new_context(locale="zh-TW", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
        twfido.http_status = None
        twfido.tamper_checksum = None
        twfido.hang = False


# -- an officer approval step (待審核), installed as a third-party plugin ------------------------

APPROVAL_PLUGIN = '''"""An officer approval step (待審核), as a third-party package adds one."""

from engine import Labels, StepSpec, hookimpl

APPROVAL = StepSpec("approval", Labels("審核", "Approval"), actor="officer")


@hookimpl
def swreg_workflow_steps():
    return [APPROVAL]
'''


@dataclass(frozen=True)
class ApprovalInstall:
    site: Path
    """A site folder holding the plugin module and its dist-info (entry point ``swreg``)."""
    workflow: Path
    """The default workflow with ``approval`` after 企業資訊 (for ``approval_scope``)."""


@pytest.fixture(scope="module")
def approval_scope() -> str:
    """Whom the approval step applies to (the workflow's ``applies_to``, TOML); a module
    overrides it."""
    return '["enterprise"]'


@pytest.fixture(scope="module")
def approval_install(
    tmp_path_factory: pytest.TempPathFactory, approval_scope: str
) -> ApprovalInstall:
    root = tmp_path_factory.mktemp("approval-plugin")
    site = root / "site"
    site.mkdir()
    (site / "swreg_console_approval.py").write_text(APPROVAL_PLUGIN, encoding="utf-8")
    info = site / "swreg_console_approval-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: swreg-console-approval\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[swreg]\nconsole-approval = swreg_console_approval\n", encoding="utf-8"
    )
    workflow = root / "workflow.toml"
    workflow.write_text(with_approval(approval_scope), encoding="utf-8")
    return ApprovalInstall(site, workflow)


@pytest.fixture(scope="module")
def approval_environment(approval_install: ApprovalInstall) -> dict[str, str]:
    """A module's ``portal_environment`` for the console: the approval plugin installed for
    the served processes and the workflow placing it."""
    python_path = os.pathsep.join(
        part for part in (str(approval_install.site), os.environ.get("PYTHONPATH", "")) if part
    )
    return {"PYTHONPATH": python_path, "SWREG_WORKFLOW": str(approval_install.workflow)}


@pytest.fixture
def approval_app(
    portal: Portal, mailbox: Mailbox, approval_install: ApprovalInstall
) -> Iterator[App]:
    """The engine on the portal's database, with the same approval step and workflow."""
    settings = Settings(
        database_url=portal.database_url,
        secret_key=SECRET,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(host=mailbox.host, port=mailbox.port, tls="none"),
        workflow_file=approval_install.workflow,
        public_origin=portal.origin,
    )
    app = bootstrap(settings, plugins=make_plugin_manager(plugins=[ApprovalPlugin()]))
    yield app
    app.close()


# -- cards -------------------------------------------------------------------------------------


@pytest.fixture
def card_reader(vpcd_readers: list[tuple[str, int]]) -> tuple[str, int]:
    """The first vpcd reader (name, port): the one the browser tests insert cards into."""
    return vpcd_readers[0]


@pytest.fixture
def insert_card(pki: TestPKI, card_reader: tuple[str, int]) -> Iterator[InsertCard]:
    """Insert a card as a virtual PIV card into the first reader; removed (EMPTY) afterwards.

    ``insert_card(card, pin=CARD_PIN, retry=None)`` returns the reader's name; the reader must
    be empty first (a foreign card there means another run uses the reader: rerun).
    """
    name, port = card_reader
    inserted: list[CardThread] = []

    def put(card: IssuedCard, pin: str = CARD_PIN, retry: RetryState | None = None) -> str:
        assert not inserted, "one card at a time in the browser tests' reader"
        assert wait_for_card(name, present=False, timeout=CARD_TIMEOUT), f"{name} is not empty"
        applet = PivApplet.from_pkcs12(pki.pkcs12_bytes(card, pin), pin, state=retry)
        inserted.append(CardThread(applet, port=port).start())
        assert wait_for_card(name, present=True, timeout=CARD_TIMEOUT), f"no card in {name}"
        with open_card(f"pcsc:{name}") as present:  # ours, not another run's card in the slot
            seen = present.read_certificate()
        assert seen == card.der(), f"a foreign card is in {name} (another run uses it): rerun"
        return name

    yield put
    for thread in inserted:
        thread.stop()
    if inserted:
        assert wait_for_card(name, present=False, timeout=CARD_TIMEOUT), f"{name} not EMPTY"


# -- browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium (``/usr/bin/chromium``) driven by Playwright's sync API."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, portal: Portal, agent: str) -> Iterator[Page]:
    """A page in a fresh browser context (zh-TW), with the portal and its agent running."""
    context = browser.new_context(locale="zh-TW", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> SaveScreenshot:
    """``screenshots(page, "step1-category.png")``: a full-page PNG in ``tmp_path``.

    With ``SWREG_SCREENSHOTS=1`` the file is also copied into ``docs/screenshots/``.
    """
    publish = os.environ.get("SWREG_SCREENSHOTS") == "1"

    def save(page: Page, name: str) -> Path:
        path = tmp_path / "screenshots" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        if publish:
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOT_DIR / name)
        return path

    return save
