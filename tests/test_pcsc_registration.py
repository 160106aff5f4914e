"""憑證註冊 with cards in readers: virtual PIV and GPKI cards through the real pcscd.

Every card here is a virtual card (``readers.vcard``) connected to pcscd's vpcd driver; the host
side is the production path (``pcsc:`` specs, pyscard, the card profiles). ``make test`` starts
pcscd for the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    App,
    CardError,
    EnvironmentProblem,
    Settings,
    SwregError,
    bootstrap,
    register_with_card,
)
from engine.store import Account, Certificate
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.ports import free_port
from readers import open_card
from readers.pcsc import list_readers, wait_for_card
from readers.vcard import CardThread, GpkiApplet, PivApplet

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET, FreshDatabase
from .helpers import count

SWREG = str(Path(sys.executable).parent / "swreg")
PIN = "13572468"

Insert = Callable[..., str]


def piv(pki: TestPKI, card: IssuedCard, pin: str = PIN) -> PivApplet:
    return PivApplet.from_pkcs12(pki.pkcs12_bytes(card, pin), pin)


@pytest.fixture
def insert(vpcd_readers: list[tuple[str, int]]) -> Iterator[Insert]:
    """Insert applets into the vpcd readers; every card is removed (and EMPTY) afterwards."""
    inserted: list[tuple[CardThread, str]] = []

    def put(applet: Any, slot: int = 0) -> str:
        name, port = vpcd_readers[slot]
        thread = CardThread(applet, port=port).start()
        inserted.append((thread, name))
        assert wait_for_card(name, present=True, timeout=5)
        return name

    yield put
    for thread, name in inserted:
        thread.stop()
        assert wait_for_card(name, present=False, timeout=5)


def swreg(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [SWREG, *args, "--json"], input=stdin, capture_output=True, text=True, env=env,
        timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


@pytest.fixture
def cli_env(fresh_database: FreshDatabase, pki: TestPKI) -> dict[str, str]:
    """The environment of a CLI whose database trusts the test roots and knows their CAs."""
    url = fresh_database()
    setup = bootstrap(Settings(database_url=url, secret_key=SECRET))
    pki.publish_to(setup.trust, actor="cli")
    setup.close()
    return {
        **os.environ,
        "SWREG_DATABASE_URL": url,
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_ARGON2": "1,64,1",
    }


@pytest.fixture
def trusted(app: App, pki: TestPKI) -> App:
    """The app, also knowing the issuing CAs (PIV cards send no chain)."""
    for ca in pki.intermediates():
        app.trust.add_certificate(pki.der(ca), anchor=False)
    return app


def answers(tmp_path: Path, data: dict[str, Any], name: str = "answers.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("type_code", "key", "data", "account"),
    [
        ("person.general", "rsa", PERSON_ANSWERS, "ming@example.com"),  # RSA-2048 PIV card
        ("enterprise.general", "ec", COMPANY_ANSWERS, "04595257"),  # ECC P-256 PIV card
    ],
)
def test_register_with_a_piv_card_in_a_reader(
    insert: Insert, pki: TestPKI, cli_env: dict[str, str], tmp_path: Path,
    type_code: str, key: str, data: dict[str, Any], account: str,
) -> None:  # fmt: skip
    card = pki.issue_person(key="rsa") if key == "rsa" else pki.issue_company("04595257", key="ec")
    reader = insert(piv(pki, card))
    code, out = swreg(
        cli_env, "register", "--type", type_code, "--answers", answers(tmp_path, data),
        "--card", f"pcsc:{reader}", "--pin-stdin", stdin=PIN + "\n",
    )  # fmt: skip
    assert code == 0, out
    assert (out["account"], out["state"], out["type"]) == (account, "completed", type_code)


def test_readers_list_shows_cards_and_profiles(
    insert: Insert, pki: TestPKI, cli_env: dict[str, str], vpcd_readers: list[tuple[str, int]]
) -> None:
    insert(piv(pki, pki.issue_person()), slot=0)
    card = pki.issue_person()
    insert(GpkiApplet(card.der(), issuer_cert=card.chain_der()[0]), slot=1)
    code, out = swreg(cli_env, "readers", "list")
    assert code == 0
    shown = {r["name"]: (r["card_present"], r["profile"]) for r in out["readers"]}
    assert shown[vpcd_readers[0][0]] == (True, "piv")
    assert shown[vpcd_readers[1][0]] == (True, "gpki")


def test_two_cards_in_two_readers_register_two_applicants(
    insert: Insert, pki: TestPKI, trusted: App
) -> None:
    app = trusted
    person, company = pki.issue_person(key="rsa"), pki.issue_company("04595257", key="ec")
    first = insert(piv(pki, person), slot=0)
    second = insert(piv(pki, company), slot=1)
    with open_card(f"pcsc:{first}") as one, open_card(f"pcsc:{second}") as two:  # both open
        a = register_with_card(
            app.registrations, type_code="person.general", answers=PERSON_ANSWERS, card=one,
            pin=PIN,
        )  # fmt: skip
        b = register_with_card(
            app.registrations, type_code="enterprise.general", answers=COMPANY_ANSWERS, card=two,
            pin=PIN,
        )  # fmt: skip
    assert (a.account, b.account) == ("ming@example.com", "04595257")
    assert count(app, Account) == 2


def test_wrong_pin_twice_then_right(
    insert: Insert, pki: TestPKI, cli_env: dict[str, str], tmp_path: Path
) -> None:
    reader = insert(piv(pki, pki.issue_person()))
    answers_file = answers(tmp_path, PERSON_ANSWERS)
    args = ("register", "--type", "person.general", "--answers", answers_file,
            "--card", f"pcsc:{reader}", "--pin-stdin")  # fmt: skip
    for tries_left in (2, 1):
        code, out = swreg(cli_env, *args, stdin="00000000\n")
        assert code == 1
        assert (out["errors"][0]["code"], out["errors"][0]["tries_left"]) == (
            "pin_incorrect",
            tries_left,
        )
    code, out = swreg(cli_env, *args, stdin=PIN + "\n")
    assert (code, out["account"]) == (0, "ming@example.com")


def test_three_wrong_pins_lock_the_card(insert: Insert, pki: TestPKI) -> None:
    reader = insert(piv(pki, pki.issue_person()))
    with open_card(f"pcsc:{reader}") as card:
        for tries_left in (2, 1):
            with pytest.raises(CardError) as info:
                card.verify_pin("00000000")
            assert (info.value.code, info.value.details["tries_left"]) == (
                "pin_incorrect",
                tries_left,
            )
        with pytest.raises(CardError) as info:
            card.verify_pin("00000000")
        assert info.value.code == "card_locked"
    with open_card(f"pcsc:{reader}") as card, pytest.raises(CardError) as info:
        card.verify_pin(PIN)  # even the right PIN: the counter survived the reconnect
    assert info.value.code == "card_locked"


def test_card_removed_mid_check_stores_nothing(
    vpcd_readers: list[tuple[str, int]], pki: TestPKI, trusted: App
) -> None:
    app = trusted
    name, port = vpcd_readers[0]
    thread = CardThread(piv(pki, pki.issue_person()), port=port).start()
    try:
        assert wait_for_card(name, present=True, timeout=5)
        opened = open_card(f"pcsc:{name}")

        class PulledOut:
            """The production card, with the card pulled out right after its PIN is verified
            (before it signs)."""

            def verify_pin(self, pin: str) -> None:
                opened.verify_pin(pin)
                thread.stop()
                assert wait_for_card(name, present=False, timeout=5)

            def read_chain(self) -> tuple[bytes, ...]:
                return opened.read_chain()

            def read_certificate(self) -> bytes:
                return opened.read_certificate()

            def sign(self, message: bytes) -> bytes:
                return opened.sign(message)

        with pytest.raises(EnvironmentProblem) as info:
            register_with_card(
                app.registrations, type_code="person.general", answers=PERSON_ANSWERS,
                card=PulledOut(), pin=PIN,
            )  # fmt: skip
        assert info.value.code == "no_card"
        opened.close()
    finally:
        thread.stop()
        wait_for_card(name, present=False, timeout=5)
    assert (count(app, Account), count(app, Certificate)) == (0, 0)


def test_without_pcscd_the_error_says_how_to_start_it(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PCSCLITE_CSOCK_NAME": "/nonexistent/pcscd.comm"}
    code, out = swreg(env, "readers", "list")
    assert code == 3
    [error] = out["errors"]
    assert error["code"] == "no_reader"
    assert "pcscd" in error["detail"]


def test_a_gpki_card_is_read_but_signs_only_through_hicos(insert: Insert, pki: TestPKI) -> None:
    card = pki.issue_person()
    reader = insert(GpkiApplet(card.der(), issuer_cert=card.chain_der()[0]))
    with open_card(f"pcsc:{reader}") as opened:
        assert opened.read_certificate() == card.der()
        assert opened.read_chain()[0] == card.chain_der()[0]
        with pytest.raises(SwregError) as info:
            opened.sign(b"challenge")
        assert info.value.code == "hicos_required"


def test_readers_are_found_by_index_and_name(insert: Insert, pki: TestPKI) -> None:
    reader = insert(piv(pki, pki.issue_person()))
    names = [r.name for r in list_readers()]
    by_index = names.index(reader)
    for spec in (f"pcsc:{reader}", f"pcsc:{by_index}"):
        with open_card(spec) as opened:
            assert opened.read_certificate()


def test_the_browser_path_through_the_agent(insert: Insert, pki: TestPKI, trusted: App) -> None:
    """A page on an allowed origin signs the challenge through the local agent and pcscd;
    a page on a foreign origin is refused at the WebSocket handshake."""
    import asyncio
    import base64

    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from engine import CardResponse
    from readers.agent import AgentConfig, serve_agent

    page = "http://127.0.0.1:8000"
    reader = insert(piv(pki, pki.issue_person(key="ec")))
    port = free_port()
    service = trusted.registrations
    view = service.start("person.general", consent=True, origin=page)
    challenge = service.issue_challenge(view.id)

    async def browser() -> dict[str, Any]:
        ready, stop = asyncio.Event(), asyncio.Event()
        config = AgentConfig(port=port, allowed_origins=frozenset({page}))
        agent = asyncio.create_task(serve_agent(config, ready=ready, stop=stop))
        await ready.wait()
        try:
            url = f"ws://127.0.0.1:{port}/"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403
            async with connect(url, origin=page) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps({
                    "id": 1, "op": "sign", "card": f"pcsc:{reader}", "pin": PIN,
                    "data": base64.b64encode(challenge.payload).decode(),
                }))  # fmt: skip
                answer: dict[str, Any] = json.loads(await ws.recv())
                return answer
        finally:
            stop.set()
            await agent

    signed = asyncio.run(browser())
    assert signed["ok"] is True, signed
    response = CardResponse(
        challenge.id,
        base64.b64decode(signed["certificate"]),
        base64.b64decode(signed["signature"]),
    )
    view = service.submit_card(view.id, response)
    view = service.submit(view.id, PERSON_ANSWERS)
    assert (view.state, view.account) == ("completed", "ming@example.com")


def test_card_serve_puts_a_pkcs12_into_a_reader(
    pki: TestPKI, cli_env: dict[str, str], tmp_path: Path, vpcd_readers: list[tuple[str, int]]
) -> None:
    """``swreg card serve FILE.p12 --slot 1``: a person without hardware registers with it."""
    import signal

    name, port = vpcd_readers[1]
    card = tmp_path / "mine.p12"
    pki.write_pkcs12(pki.issue_company("04595257", key="rsa"), card, PIN)
    where = ["--slot", "1"] if port == 35964 else ["--port", str(port)]  # Debian's vpcd: 00 01
    server = subprocess.Popen(
        [SWREG, "card", "serve", str(card), *where, "--pin-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env,
    )  # fmt: skip
    try:
        assert server.stdin is not None
        server.stdin.write(PIN + "\n")
        server.stdin.close()
        assert wait_for_card(name, present=True, timeout=10)
        code, out = swreg(
            cli_env, "register", "--type", "enterprise.warehouse", "--answers",
            answers(tmp_path, {**COMPANY_ANSWERS, "iot": True}), "--card", f"pcsc:{name}",
            "--pin-stdin", stdin=PIN + "\n",
        )  # fmt: skip
        assert (code, out.get("account")) == (0, "04595257"), out
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        assert wait_for_card(name, present=False, timeout=5)


def test_a_customs_certificate_imported_from_an_ic_card_in_a_reader(
    insert: Insert, pki: TestPKI, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """通關憑證註冊, IC卡類憑證: the 工商憑證 is read from the card after its PIN."""
    reader = insert(piv(pki, pki.issue_company("04595257", key="ec")))
    code, out = swreg(
        cli_env, "customs-cert", "import", "--usage-type", "shipping",
        "--answers", answers(tmp_path, {"ubn": "04595257"}), "--card", f"pcsc:{reader}",
        "--pin-stdin", stdin=PIN + "\n",
    )  # fmt: skip
    assert code == 0, out
    assert (out["message"], out["query_key"], out["kind"]) == (
        "主憑證匯入成功!",
        "04595257",
        "ic_card",
    )
    code, out = swreg(cli_env, "customs-cert", "query", "04595257")
    assert code == 0
    [row] = out["rows"]
    assert (row["form"], row["kind"], row["purpose"]) == ("IC卡", "工商憑證", "簽章")
