"""``swreg demo --serve``: the portal in a browser, with virtual cards in virtual readers.

After the narrated CLI registrations, this inserts two fresh virtual PIV cards into pcscd's vpcd
readers (a citizen card in "Virtual PCD 00 00", a company card in "00 01"), starts the local card
agent for the portal's origin and serves the portal on SQLite until Ctrl-C. Mail goes to an
outbox the portal shows at /demo/outbox. The demo's TW FidO mock configures the portal's mobile
citizen certificate (``SWREG_TWFIDO_*``): a newcomer registers 陳小美 with the ID the demo prints
and plays the phone on the mock's control page. Everything is test material.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from engine._bootstrap import App
from engine._settings import keyring_text
from engine.testing.pki import TestPKI
from readers.agent import AgentConfig, serve_agent
from readers.vcard import CardThread, PivApplet, port_for_slot

if TYPE_CHECKING:
    from engine.testing.demo import MobileDemo

PIN = "123456"
Say = Callable[[str], None]


def serve_demo(
    app: App, pki: TestPKI, folder: Path, *, port: int = 8000, agent_port: int = 61234,
    say: Say = print, mobile: MobileDemo | None = None,
) -> None:  # fmt: skip
    """Serve the portal (blocks until Ctrl-C); ``app`` is the demo's bootstrapped engine;
    ``mobile``: the running TW FidO mock the portal's mobile ID talks to."""
    origin = f"http://127.0.0.1:{port}"
    for ca in pki.intermediates():  # PIV cards carry no chain: the portal knows the test CAs
        app.trust.add_certificate(pki.der(ca), anchor=False, actor="demo")
    person = pki.issue_person("林小華", "0014", key="rsa")
    company = pki.issue_company("10458575", "展示物流股份有限公司", key="ec")
    cards = [
        CardThread(PivApplet.from_pkcs12(pki.pkcs12_bytes(card, PIN), PIN), port=port_for_slot(i))
        for i, card in enumerate((person, company))
    ]
    for card in cards:
        card.start()
    stop = threading.Event()
    agent = threading.Thread(
        target=_run_agent,
        args=(AgentConfig(port=agent_port, allowed_origins=frozenset({origin})), stop),
        name="swreg-agent",
        daemon=True,
    )
    agent.start()
    os.environ.update(
        SWREG_DATABASE_URL=app.settings.database_url,
        SWREG_SECRET_KEY=keyring_text(app.identifiers.keys),
        SWREG_PUBLIC_ORIGIN=origin,
        SWREG_AGENT_URL=f"ws://127.0.0.1:{agent_port}/",
        SWREG_MAIL_OUTBOX=str(folder / "outbox"),
        SWREG_DEMO="1",
    )
    if mobile is not None:
        os.environ.update(_mobile_environment(mobile))
    say("")
    say(f"== 註冊網站 / the portal: {origin}/register")
    say("   讀卡機 Virtual PCD 00 00: 自然人憑證 (測試) 林小華, 身分證字號 A800000014, PIN 123456")
    say("   讀卡機 Virtual PCD 00 01: 工商憑證 (測試) 統一編號 10458575, PIN 123456")
    if mobile is not None:
        holder = mobile.person
        say(
            f"   行動自然人憑證 (測試) / mobile ID (test): 姓名 {holder.name}, "
            f"身分證字號 {holder.national_id}"
        )
        say(f"      模擬手機 / the phone: {mobile.mock.control_url} (核准 approve / 拒絕 reject)")
        say(f"      或 / or: swreg twfido approve TICKET --url {mobile.mock.url}")
    say(f"   信件 / mail outbox: {origin}/demo/outbox     Ctrl-C 結束 / to stop")
    try:
        uvicorn.run(
            "engine.web.asgi:create_app_from_env",
            factory=True,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            server_header=False,
            proxy_headers=False,  # the client is the socket peer (SWREG_TRUSTED_PROXIES decides)
        )
    finally:
        stop.set()
        for card in cards:
            card.stop()


def _mobile_environment(mobile: MobileDemo) -> dict[str, str]:
    """The ``SWREG_TWFIDO_*`` settings of the demo's mock (its SP key is test material)."""
    from engine.testing.twfido_setup import portal_settings

    settings = mobile.settings
    return portal_settings(settings.url, settings.service_id, settings.key)


def _run_agent(config: AgentConfig, stop: threading.Event) -> None:
    """The local card agent on its own event loop, until ``stop`` is set."""

    async def main() -> None:
        halt = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(halt.set)),
                         daemon=True).start()  # fmt: skip
        await serve_agent(config, stop=halt)

    asyncio.run(main())
