"""The mobile citizen certificate end to end (issue 17): swreg's TW FidO client against the mock
service (engine/testing/twfido.py, written from DOMAIN.md §4.6 alone) over real HTTP, and a whole
`swreg register --card twfido:ID` with the "phone" played from another thread."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select
from typer.testing import CliRunner

from engine import FixedClock, Settings, bootstrap
from engine._settings import TwFidoSettings
from engine.cli import app as cli_app
from engine.services.enrolment import register_with_card
from engine.services.mobile_id import PendingMobileId, Phone
from engine.services.twfido import TwFidoClient
from engine.store import Database, Registration
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.twfido import TwFidoHolder, TwFidoMock
from tests.conftest import FAST_ARGON2, PERSON_ANSWERS, PIN, PKI_NOW, SECRET

KEY = bytes(range(32, 64))
SERVICE = "SP-SWREG"
PERSON_ID = "A123456789"  # PERSON_ANSWERS' national ID (王小明, last four 6789)


@pytest.fixture
def mobile(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("王小明", "6789", key="rsa", card_rank="mobile")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(PKI_NOW)


@pytest.fixture
def fido(mobile: IssuedCard, clock: FixedClock) -> Iterator[TwFidoMock]:
    with TwFidoMock({SERVICE: KEY}, {PERSON_ID: TwFidoHolder(mobile)}, clock=clock) as mock:
        yield mock


def settings(mock: TwFidoMock, **changes: object) -> TwFidoSettings:
    base = TwFidoSettings(mock.url, SERVICE, KEY, 180, timedelta(seconds=5))
    return TwFidoSettings(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def code_of(call: object) -> str:
    from engine._errors import SwregError

    with pytest.raises(SwregError) as info:
        call()  # type: ignore[operator]
    return str(info.value.code)


def test_a_signature_through_the_mock(
    fido: TwFidoMock, mobile: IssuedCard, clock: FixedClock
) -> None:
    client = TwFidoClient(settings(fido), now=clock.now)
    payload = b"the card-check challenge payload"

    ticket = client.start(PERSON_ID, payload)
    assert client.poll(ticket) is None  # the phone has not answered
    fido.approve(ticket.sp_ticket_id)
    answer = client.poll(ticket)

    assert answer is not None
    assert answer.certificate == mobile.der()
    assert answer.hashed_id_num == fido.hashed_id_num(PERSON_ID)
    key = x509.load_der_x509_certificate(answer.certificate).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(answer.signature, payload, padding.PKCS1v15(), hashes.SHA256())
    assert code_of(lambda: client.poll(ticket)) == "mobile_id_unavailable"  # redeemed once


def test_refused_on_the_phone(fido: TwFidoMock, clock: FixedClock) -> None:
    client = TwFidoClient(settings(fido), now=clock.now)
    ticket = client.start(PERSON_ID, b"payload")
    fido.reject(ticket.sp_ticket_id)
    assert code_of(lambda: client.poll(ticket)) == "mobile_id_rejected"


def test_a_ticket_that_times_out(fido: TwFidoMock, clock: FixedClock) -> None:
    """By swreg's own deadline (nothing asked), and by the service's (SPTKT_OVD)."""
    client = TwFidoClient(settings(fido, time_limit=30), now=clock.now)
    ticket = client.start(PERSON_ID, b"payload")
    clock.advance(timedelta(seconds=31))
    asked = len(fido.requests)
    assert code_of(lambda: client.poll(ticket)) == "mobile_id_timeout"
    assert len(fido.requests) == asked
    own_clock = FixedClock(PKI_NOW)  # swreg's clock behind the service's: the service says so
    late = TwFidoClient(settings(fido, time_limit=30), now=own_clock.now)
    assert code_of(lambda: late.poll(ticket)) == "mobile_id_timeout"
    assert len(fido.requests) == asked + 1


def test_an_id_without_a_mobile_certificate_and_a_malformed_id(
    fido: TwFidoMock, clock: FixedClock
) -> None:
    client = TwFidoClient(settings(fido), now=clock.now)
    assert code_of(lambda: client.start("B123456780", b"payload")) == "mobile_id_rejected"
    assert code_of(lambda: client.start("B12345678", b"payload")) == "invalid_national_id"


@pytest.mark.parametrize("target", ["ticket", "result"])
def test_a_tampered_idp_checksum_is_refused(
    fido: TwFidoMock, clock: FixedClock, target: str
) -> None:
    fido.tamper_checksum = target  # type: ignore[assignment]
    client = TwFidoClient(settings(fido), now=clock.now)
    if target == "ticket":
        assert code_of(lambda: client.start(PERSON_ID, b"payload")) == "signature_invalid"
        return
    ticket = client.start(PERSON_ID, b"payload")
    fido.approve(ticket.sp_ticket_id)
    assert code_of(lambda: client.poll(ticket)) == "signature_invalid"


def test_a_wrong_key_or_service_id_is_unavailable(fido: TwFidoMock, clock: FixedClock) -> None:
    for wrong in (settings(fido, key=bytes(32)), settings(fido, service_id="SP-OTHER")):
        client = TwFidoClient(wrong, now=clock.now)
        assert code_of(lambda c=client: c.start(PERSON_ID, b"payload")) == "mobile_id_unavailable"


def test_a_service_answering_500_is_unavailable(fido: TwFidoMock, clock: FixedClock) -> None:
    fido.http_status = 500
    client = TwFidoClient(settings(fido), now=clock.now)
    assert code_of(lambda: client.start(PERSON_ID, b"payload")) == "mobile_id_unavailable"


def test_the_phone_is_polled_every_four_seconds_until_it_answers(
    fido: TwFidoMock, mobile: IssuedCard, clock: FixedClock, db_url: str, pki: TestPKI
) -> None:
    """A whole 憑證註冊 with the phone as the CLI runs it (register_with_card with a Phone):
    the ticket is shown once, and the portal's own pacing is what the CLI waits for."""
    app = bootstrap(
        Settings(database_url=db_url, secret_key=SECRET, argon2=FAST_ARGON2, twfido=settings(fido)),
        clock=clock,
    )
    pki.publish_to(app.trust, actor="test")
    slept: list[float] = []
    shown: list[PendingMobileId] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(timedelta(seconds=seconds))
        if len(slept) == 2:
            (ticket,) = fido.pending()
            fido.approve(ticket.sp_ticket_id)

    try:
        view = register_with_card(
            app.registrations, type_code="person.general", answers=PERSON_ANSWERS,
            card=Phone(PERSON_ID.lower(), sleep=sleep, on_ticket=shown.append), pin="",
        )  # fmt: skip
        assert (view.state, view.account) == ("completed", "ming@example.com")
        assert slept == [4.0, 4.0] and len(shown) == 1
        assert shown[0].app_link is not None and shown[0].sp_ticket in shown[0].app_link
        polls = [r for r in fido.requests if r.operation == "getAthOrSignResult"]
        assert len(polls) == 2
    finally:
        app.close()


# -- swreg register --card twfido:ID ----------------------------------------------------------


def test_swreg_register_with_the_mobile_id(
    fido: TwFidoMock, db_url: str, tmp_path: object, pki: TestPKI
) -> None:
    """The whole 憑證註冊 through the CLI; the phone approves from another thread."""
    from pathlib import Path

    folder = Path(str(tmp_path))
    answers = folder / "answers.json"
    answers.write_text(json.dumps({**PERSON_ANSWERS}, ensure_ascii=False), encoding="utf-8")
    trust = folder / "trust"
    trust.mkdir()
    env = {
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_ARGON2": "1,64,1",
        "SWREG_TWFIDO_URL": fido.url,
        "SWREG_TWFIDO_SERVICE_ID": SERVICE,
        "SWREG_TWFIDO_KEY": base64.b64encode(KEY).decode(),
    }
    runner = CliRunner()
    for command in pki.trust_commands(trust):
        done = runner.invoke(cli_app, ["--db", db_url, *command], env=env)
        assert done.exit_code == 0, done.output
    stop = threading.Event()

    def phone() -> None:  # approves the first ticket it sees
        while not stop.wait(0.05):
            for ticket in fido.pending():
                fido.approve(ticket.sp_ticket_id)
                return

    threading.Thread(target=phone, daemon=True).start()
    try:
        result = runner.invoke(
            cli_app,
            ["--db", db_url, "register", "--type", "person.general", "--answers", str(answers),
             "--card", f"twfido:{PERSON_ID}", "--json"],
            env=env,
        )  # fmt: skip
    finally:
        stop.set()
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["account"], out["state"], out["type"]) == (
        "ming@example.com", "completed", "person.general"
    )  # fmt: skip
    assert "mobilemoica://moica.moi.gov.tw/a2a/verifySign?sp_ticket=" in result.stderr
    assert PIN not in result.stdout + result.stderr
    database = Database(db_url)
    try:
        with database.unit_of_work() as uow:
            evidence = uow.session.scalars(select(Registration.evidence)).one()
    finally:
        database.dispose()
    assert evidence["mobile_id"]["bridge"] == "twfido"
    assert evidence["mobile_id"]["hashed_id_num"] == fido.hashed_id_num(PERSON_ID)


def test_the_typed_id_must_be_the_specs(fido: TwFidoMock, db_url: str, tmp_path: object) -> None:
    from pathlib import Path

    answers = Path(str(tmp_path)) / "answers.json"
    answers.write_text(json.dumps(PERSON_ANSWERS, ensure_ascii=False), encoding="utf-8")
    env = {
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_TWFIDO_URL": fido.url,
        "SWREG_TWFIDO_SERVICE_ID": SERVICE,
        "SWREG_TWFIDO_KEY": base64.b64encode(KEY).decode(),
    }
    result = CliRunner().invoke(
        cli_app,
        ["--db", db_url, "register", "--type", "person.general", "--answers", str(answers),
         "--card", "twfido:B123456780", "--json"],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert [e["code"] for e in json.loads(result.stdout)["errors"]] == ["identity_mismatch"]
    assert fido.requests == []  # nothing was sent


def test_without_a_configured_service_the_cli_says_so(db_url: str, tmp_path: object) -> None:
    from pathlib import Path

    answers = Path(str(tmp_path)) / "answers.json"
    answers.write_text(json.dumps(PERSON_ANSWERS, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(
        cli_app,
        ["--db", db_url, "register", "--type", "person.general", "--answers", str(answers),
         "--card", f"twfido:{PERSON_ID}", "--json"],
        env={"SWREG_SECRET_KEY": SECRET.hex()},
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert [e["code"] for e in json.loads(result.stdout)["errors"]] == ["mobile_id_unavailable"]
