"""Fixtures of the browser tests: a real portal, card agent, SMTP server, cards and Chromium.

Everything here is the production path except the cards, which are virtual PIV cards served to
the real pcscd through its vpcd driver (``readers.vcard``):

* ``mailbox``: an ``aiosmtpd`` SMTP server on a free loopback port that keeps every message;
* ``portal``: a SQLite database prepared in-process (trust anchors and intermediates: a PIV card
  carries no chain), then ``swreg serve --workers 2`` as a subprocess pointed at that database,
  the SMTP server and the agent;
* ``agent``: ``swreg agent --origin <portal origin>`` as a subprocess (``pcsc:`` cards only);
* ``insert_card``: inserts virtual cards into the first vpcd reader; they are removed (and the
  reader EMPTY) after each test;
* ``browser`` / ``page``: Debian's Chromium through Playwright (never ``playwright install``),
  one fresh context per test;
* ``screenshots``: full-page screenshots into ``tmp_path``, copied to ``docs/screenshots/`` only
  when ``SWREG_SCREENSHOTS=1``.

Every process started here is stopped by PID in its fixture's teardown (with the uvicorn
workers it forked, found by PID and start time).
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, Page, expect, sync_playwright

from engine import Settings, bootstrap
from engine.testing.pki import IssuedCard, TestPKI
from readers import open_card
from readers.pcsc import wait_for_card
from readers.vcard import CardThread, PivApplet, RetryState

from ..conftest import SECRET

SWREG = str(Path(sys.executable).parent / "swreg")
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
STARTUP_TIMEOUT = 30.0
CARD_TIMEOUT = 5.0
EXPECT_TIMEOUT_MS = 15_000
"""Card work goes page → agent → pcscd → card and back; allow for a slow machine."""
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO / "docs" / "screenshots"

InsertCard = Callable[..., str]
"""``insert_card(card, pin=CARD_PIN, retry=None) -> reader name``."""
SaveScreenshot = Callable[[Page, str], Path]


# -- helpers -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(PID, start time) of every live descendant of ``pid`` (uvicorn workers, helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            started = _start_time(child)
            if started is not None:
                found.append((child, started))
                todo.append(child)
    return found


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a process we started (SIGTERM, then SIGKILL) and any descendant it left behind."""
    children = _descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for pid, started in children:
        if _start_time(pid) == started:  # still the same process: a leftover of ours
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _log_tail(path: Path, limit: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-limit:]


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str
) -> None:
    """Poll ``ready`` until it holds; fail early (with the log) if the process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {STARTUP_TIMEOUT} s:\n{_log_tail(log)}")
        time.sleep(0.05)  # startup polling only; the tests themselves never sleep


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP answer, even an error status, means the server is up
    except OSError:
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)


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
def portal_database(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> str:
    """A SQLite database, migrated in-process, trusting the test roots and knowing their CAs."""
    url = f"sqlite:///{tmp_path_factory.mktemp('portal') / 'swreg.db'}"
    setup = bootstrap(Settings(database_url=url, secret_key=SECRET))
    try:
        for anchor in pki.anchors():
            setup.trust.add_certificate(pki.der(anchor), actor="test")
        for ca in pki.intermediates():  # a PIV card carries no chain: the CAs must be known
            setup.trust.add_certificate(pki.der(ca), anchor=False, actor="test")
    finally:
        setup.close()
    return url


@pytest.fixture(scope="module")
def portal(
    portal_database: str, portal_ports: tuple[int, int], mailbox: Mailbox
) -> Iterator[Portal]:
    """``swreg serve --workers 2`` on a free port, answering ``GET /``; stopped by PID."""
    port, agent_port = portal_ports
    origin = f"http://127.0.0.1:{port}"
    agent_url = f"ws://127.0.0.1:{agent_port}/"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env.update(
        {
            "SWREG_DATABASE_URL": portal_database,
            "SWREG_SECRET_KEY": SECRET.hex(),
            "SWREG_ARGON2": "1,64,1",
            "SWREG_PUBLIC_ORIGIN": origin,
            "SWREG_AGENT_URL": agent_url,
            "SWREG_SMTP_HOST": mailbox.host,
            "SWREG_SMTP_PORT": str(mailbox.port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = Path(portal_database.removeprefix("sqlite:///")).parent / "serve.log"
    args = [SWREG, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    process = _spawn(args, env, log)
    try:
        _wait_until(lambda: _answers_http(origin + "/"), process, log, "swreg serve")
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
    process = _spawn(args, env, log)
    try:
        _wait_until(lambda: _accepts(portal.agent_port), process, log, "swreg agent")
        yield portal.agent_url
    finally:
        stop_process(process)


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
