"""The TW FidO SP client (issue 17): checksums against vectors computed here, the settings, and
how every answer of the service is read (through the client's HTTP seam, and over real HTTP for
a service that is down)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from typer.testing import CliRunner

from engine._errors import SwregError
from engine._settings import Settings, TwFidoSettings
from engine.cli import app as cli_app
from engine.services.twfido import (
    MobileSignature,
    Ticket,
    TwFidoClient,
    checksum,
    checksum_matches,
)
from engine.testing.ports import free_port

KEY = bytes(range(32))
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
SETTINGS = TwFidoSettings("https://fido.example", "SP0001", KEY, 180, timedelta(seconds=5))


def expected_checksum(key: bytes, text: str, iv: bytes) -> str:
    """The checksum as DOMAIN.md §4.6 states it, computed here from the primitives."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")
    return (iv + AESGCM(key).encrypt(iv, digest, None)).hex()


def test_a_zero_iv_checksum_is_the_documented_one() -> None:
    zero = bytes(12)
    fields = ("tx-1", "SP0001", "A123456789", "SIGN", "I-SCAN", "", "AAEC")
    assert checksum(KEY, *fields, iv=zero) == expected_checksum(KEY, "".join(fields), zero)


def test_a_checksum_is_checked_by_decrypting_whatever_its_iv() -> None:
    fields = ("tx-1", "0", "hashed", "c2lnbmF0dXJl")
    random_iv = bytes.fromhex("0f1e2d3c4b5a69788796a5b4")
    made_elsewhere = expected_checksum(KEY, "".join(fields), random_iv)

    assert checksum_matches(KEY, made_elsewhere, *fields)
    assert checksum_matches(KEY, checksum(KEY, *fields), *fields)  # its own random IV
    assert not checksum_matches(KEY, made_elsewhere, "tx-2", *fields[1:])
    assert not checksum_matches(bytes(32), made_elsewhere, *fields)
    assert not checksum_matches(KEY, made_elsewhere[:-2], *fields)
    assert not checksum_matches(KEY, "not hex", *fields)
    assert not checksum_matches(KEY, "", *fields)


# -- settings --------------------------------------------------------------------------------


ENV = {
    "SWREG_TWFIDO_URL": "https://fidoapi.moi.gov.tw/",
    "SWREG_TWFIDO_SERVICE_ID": "SP0001",
    "SWREG_TWFIDO_KEY": base64.b64encode(KEY).decode(),
}


def test_the_settings() -> None:
    assert Settings.from_env({}).twfido is None
    configured = Settings.from_env(ENV).twfido
    assert configured is not None
    assert (configured.url, configured.service_id, configured.key) == (
        "https://fidoapi.moi.gov.tw", "SP0001", KEY
    )  # fmt: skip
    assert (configured.time_limit, configured.http_timeout) == (180, timedelta(seconds=10))
    assert base64.b64encode(KEY).decode() not in repr(configured) and "key" not in repr(configured)
    loopback = Settings.from_env({**ENV, "SWREG_TWFIDO_URL": "http://127.0.0.1:8123"}).twfido
    assert loopback is not None and loopback.url == "http://127.0.0.1:8123"


@pytest.mark.parametrize(
    "wrong",
    [
        {"SWREG_TWFIDO_URL": "http://fidoapi.moi.gov.tw"},
        {"SWREG_TWFIDO_SERVICE_ID": ""},
        {"SWREG_TWFIDO_KEY": base64.b64encode(b"short").decode()},
        {"SWREG_TWFIDO_KEY": "not base64!"},
        {"SWREG_TWFIDO_TIME_LIMIT": "29"},
        {"SWREG_TWFIDO_TIME_LIMIT": "601"},
        {"SWREG_TWFIDO_HINT": "字" * 65},
    ],
)
def test_wrong_settings_are_usage_errors(wrong: dict[str, str]) -> None:
    with pytest.raises(SwregError) as info:
        Settings.from_env({**ENV, **wrong})
    assert str(info.value.code) == "usage"


# -- answers, through the client's HTTP seam ---------------------------------------------------


class Service:
    """Answers each POST with the next of ``answers`` (a dict, or raw bytes) and keeps what
    was sent."""

    def __init__(self, *answers: Mapping[str, Any] | bytes) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, body: bytes, timeout: float) -> bytes:
        self.sent.append((url, json.loads(body)))
        answer = self.answers.pop(0)
        return answer if isinstance(answer, bytes) else json.dumps(answer).encode()


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        return self.at


def ticket_answer(ticket_id: str = "TKT-1") -> dict[str, Any]:
    return {"error_code": "0", "error_message": "", "result": {
        "sp_ticket": "eyJ0IjoxfQ.abc", "sp_ticket_id": ticket_id}}  # fmt: skip


def signed_answer(tx: str, *, tamper: bool = False) -> dict[str, Any]:
    signed = base64.b64encode(b"raw signature").decode()
    idp = expected_checksum(KEY, tx + "0" + "hashed-id" + signed, bytes(12))
    if tamper:
        idp = expected_checksum(KEY, tx + "0" + "another-id" + signed, bytes(12))
    return {"error_code": "0", "error_message": "", "result": {
        "signed_response": signed, "cert": base64.b64encode(b"DER").decode(),
        "hashed_id_num": "hashed-id", "idp_checksum": idp}}  # fmt: skip


def code_of(call: Any) -> str:
    with pytest.raises(SwregError) as info:
        call()
    return str(info.value.code)


def test_a_sign_request_is_what_the_service_documents() -> None:
    service = Service(ticket_answer())
    client = TwFidoClient(SETTINGS, now=Clock(), post=service)

    ticket = client.start("A123456789", b"\x00\x01payload")

    [(url, sent)] = service.sent
    assert url == "https://fido.example/moise/sp/getSpTicket"
    sign_data = base64.b64encode(b"\x00\x01payload").decode()
    assert sent["sign_info"] == {
        "sign_type": "PKCS#1", "tbs_encoding": "base64", "hash_algorithm": "SHA256",
        "sign_data": sign_data,
    }  # fmt: skip
    assert (sent["id_num"], sent["op_code"], sent["op_mode"], sent["time_limit"]) == (
        "A123456789", "SIGN", "I-SCAN", "180"
    )  # fmt: skip
    fields = (sent["transaction_id"], "SP0001", "A123456789", "SIGN", "I-SCAN", "", sign_data)
    assert checksum_matches(KEY, sent["sp_checksum"], *fields)
    assert ticket == Ticket(
        "eyJ0IjoxfQ.abc", "TKT-1", sent["transaction_id"], NOW + timedelta(seconds=180)
    )
    assert ticket.app_link().startswith("mobilemoica://moica.moi.gov.tw/a2a/verifySign?sp_ticket=")
    again = Service(ticket_answer())
    TwFidoClient(SETTINGS, now=Clock(), post=again).start("A123456789", b"x")
    assert again.sent[0][1]["transaction_id"] != sent["transaction_id"]  # fresh per ticket


def test_the_hint_and_a_push() -> None:
    """``SWREG_TWFIDO_HINT`` goes in every ticket and its checksum; a push has no op_mode and
    its checksum covers an empty one (❓ the mock's reading of DOMAIN.md §4.6)."""
    configured = Settings.from_env({**ENV, "SWREG_TWFIDO_HINT": " 關港貿單一窗口 "}).twfido
    assert configured is not None and configured.hint == "關港貿單一窗口"
    service = Service(ticket_answer(), ticket_answer("TKT-2"))
    client = TwFidoClient(replace(SETTINGS, hint="關港貿單一窗口"), now=Clock(), post=service)
    client.start("A123456789", b"x")
    client.push("A123456789", b"x")
    [(_, started), (url, pushed)] = service.sent
    sign_data = base64.b64encode(b"x").decode()
    assert started["hint"] == pushed["hint"] == "關港貿單一窗口"
    fields = ("SP0001", "A123456789", "SIGN", "I-SCAN", "關港貿單一窗口", sign_data)
    assert checksum_matches(KEY, started["sp_checksum"], started["transaction_id"], *fields)
    assert url == "https://fido.example/moise/sp/requestAthOrSignPush" and "op_mode" not in pushed
    fields = ("SP0001", "A123456789", "SIGN", "", "關港貿單一窗口", sign_data)
    assert checksum_matches(KEY, pushed["sp_checksum"], pushed["transaction_id"], *fields)


def test_polls_repeat_the_tickets_transaction_and_read_the_signature() -> None:
    clock = Clock()
    ticket = Ticket("t", "TKT-1", "tx-1", NOW + timedelta(seconds=180))
    service = Service(
        {"error_code": "20002", "error_message": "pending"},
        {"error_code": "SP-API-ATH-02-SPTKTID_TXNLOG_NF", "error_message": "pending"},
        signed_answer("tx-1"),
    )
    client = TwFidoClient(SETTINGS, now=clock, post=service)

    assert client.poll(ticket) is None
    assert client.poll(ticket) is None
    answer = client.poll(ticket)

    assert answer == MobileSignature(b"DER", b"raw signature", "hashed-id")
    for url, sent in service.sent:
        assert url.endswith("/moise/sp/getAthOrSignResult")
        assert (sent["transaction_id"], sent["sp_ticket_id"]) == ("tx-1", "TKT-1")
        assert checksum_matches(KEY, sent["sp_checksum"], "tx-1", "SP0001", "TKT-1")


def test_a_tampered_idp_checksum_is_signature_invalid() -> None:
    ticket = Ticket("t", "TKT-1", "tx-1", NOW + timedelta(seconds=180))
    client = TwFidoClient(SETTINGS, now=Clock(), post=Service(signed_answer("tx-1", tamper=True)))
    assert code_of(lambda: client.poll(ticket)) == "signature_invalid"


def test_past_the_deadline_a_poll_is_a_timeout_without_asking() -> None:
    clock = Clock()
    service = Service()
    ticket = Ticket("t", "TKT-1", "tx-1", NOW + timedelta(seconds=180))
    clock.at = NOW + timedelta(seconds=181)
    assert code_of(lambda: TwFidoClient(SETTINGS, now=clock, post=service).poll(ticket)) == (
        "mobile_id_timeout"
    )
    assert service.sent == []


@pytest.mark.parametrize(
    ("error_code", "code"),
    [
        ("APP_USER_CANCEL", "mobile_id_rejected"),
        ("SP-API-ATH-02-APP_SIGN_FAILURE", "mobile_id_rejected"),
        ("IDNUM_USERPROF_NF", "mobile_id_rejected"),
        ("IDNUM_DEVPROF_NF", "mobile_id_rejected"),
        ("SPTKT_OVD", "mobile_id_timeout"),
        ("PM_IDN_FT_ERR", "invalid_national_id"),
        ("INV_SP_CHECKSUM", "mobile_id_unavailable"),
        ("SPSVCID_NF", "mobile_id_unavailable"),
        ("TXNLOG_INS_ERR", "mobile_id_unavailable"),
        ("SOMETHING_NEW", "mobile_id_unavailable"),
    ],
)
def test_every_documented_error_has_its_code(error_code: str, code: str) -> None:
    service = Service({"error_code": error_code, "error_message": "x", "result": None})
    client = TwFidoClient(SETTINGS, now=Clock(), post=service)
    assert code_of(lambda: client.start("A123456789", b"payload")) == code


@pytest.mark.parametrize("answer", [b"<html>busy</html>", b"[]", b'{"error_code": "0"}'])
def test_an_answer_that_makes_no_sense_is_unavailable(answer: bytes) -> None:
    client = TwFidoClient(SETTINGS, now=Clock(), post=Service(answer))
    assert code_of(lambda: client.start("A123456789", b"payload")) == "mobile_id_unavailable"


def test_a_payload_over_the_services_limit_is_refused_before_sending() -> None:
    service = Service()
    client = TwFidoClient(SETTINGS, now=Clock(), post=service)
    assert code_of(lambda: client.start("A123456789", b"x" * 769)) == "invalid_value"
    assert service.sent == []


def test_a_service_that_is_down_is_unavailable() -> None:
    """Over real HTTP: nothing listens on the port."""
    down = TwFidoSettings(
        f"http://127.0.0.1:{free_port()}", "SP0001", KEY, 180, timedelta(seconds=2)
    )
    client = TwFidoClient(down, now=Clock())
    assert code_of(lambda: client.start("A123456789", b"payload")) == "mobile_id_unavailable"
    assert "000102" not in repr(client) and KEY.hex() not in repr(client)


def test_readers_list_says_whether_the_mobile_id_is_configured() -> None:
    """Even where no PC/SC reader can be listed (no pcscd here), the answer says it."""
    env = {**ENV, "PCSCLITE_CSOCK_NAME": "/nonexistent/pcscd.comm"}
    result = CliRunner().invoke(cli_app, ["readers", "list", "--json"], env=env)
    out = json.loads(result.stdout)
    assert out["twfido"] == {
        "configured": True, "url": "https://fidoapi.moi.gov.tw", "service_id": "SP0001"
    }  # fmt: skip
    assert base64.b64encode(KEY).decode() not in result.stdout + result.stderr


def test_a_ticket_answer_whose_checksum_does_not_verify_is_refused() -> None:
    answer = ticket_answer()
    answer["result"]["hashed_id_num"] = "hashed-id"
    answer["result"]["idp_checksum"] = expected_checksum(KEY, "another tx0hashed-id", bytes(12))
    client = TwFidoClient(SETTINGS, now=Clock(), post=Service(answer))
    assert code_of(lambda: client.start("A123456789", b"payload")) == "signature_invalid"


def test_what_means_pending_is_a_setting() -> None:
    """❓ DOMAIN.md §4.6: the operator can name the codes without a release."""
    custom = Settings.from_env({**ENV, "SWREG_TWFIDO_PENDING_CODES": "40001"}).twfido
    assert custom is not None and custom.pending_codes == frozenset({"40001"})
    ticket = Ticket("t", "TKT-1", "tx-1", NOW + timedelta(seconds=180))
    client = TwFidoClient(custom, now=Clock(), post=Service({"error_code": "SP-API-ATH-02-40001"}))
    assert client.poll(ticket) is None
    default = TwFidoClient(SETTINGS, now=Clock(), post=Service({"error_code": "40001"}))
    assert code_of(lambda: default.poll(ticket)) == "mobile_id_unavailable"
