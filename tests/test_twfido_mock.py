"""The TW FidO mock (:mod:`engine.testing.twfido`), driven over real HTTP by a client written in
this file from DOMAIN.md §4.6 alone: checksums made here with ``AESGCM`` (zero and random IVs),
tickets decoded here, signatures verified with the returned certificate's key, the certificate
checked against the test PKI's MOICA. The clock is fixed; nothing waits for real time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine import FixedClock
from engine.core.declarations import IssuerCA
from engine.testing import IssuedCard, TestPKI
from engine.testing.twfido import TwFidoCode, TwFidoHolder, TwFidoMock, make_checksum

SERVICE = "SVC-SWREG-TEST"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PERSON = "A123456789"
NO_DEVICE = "B123456780"
NOBODY = "AC01234567"  # a valid old-format ARC with no mobile certificate
CHALLENGE = "swreg challenge: register 個人 A123456789 nonce=00112233".encode()
ZERO_IV = bytes(12)

ATH02 = "SP-API-ATH-02-"


# -- a client written from DOMAIN.md §4.6 --------------------------------------------------------


def digest_hex(payload: str) -> bytes:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest().encode("ascii")


def checksum(payload: str, *, key: bytes = KEY, iv: bytes | None = None) -> str:
    """``hex(IV ‖ AES-256-GCM(lowercase hex SHA-256(payload)) ‖ tag)``."""
    nonce = secrets.token_bytes(12) if iv is None else iv
    return (nonce + AESGCM(key).encrypt(nonce, digest_hex(payload), None)).hex()


def decrypt_checksum(value: str, *, key: bytes = KEY) -> bytes:
    raw = bytes.fromhex(value)
    return AESGCM(key).decrypt(raw[:12], raw[12:], None)


def post(url: str, body: dict[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ticket_request(
    *,
    tx: str | None = None,
    service: str = SERVICE,
    key: bytes = KEY,
    id_num: str = PERSON,
    op_code: str = "SIGN",
    op_mode: str | None = "I-SCAN",
    hint: str = "swreg 註冊",
    time_limit: Any = 180,
    sign_data: str | None = None,
    iv: bytes | None = ZERO_IV,
) -> dict[str, Any]:
    tx = tx or str(uuid.uuid4())
    data = b64(CHALLENGE) if sign_data is None else sign_data
    payload = tx + service + id_num + op_code + (op_mode or "") + hint + data
    body: dict[str, Any] = {
        "transaction_id": tx,
        "sp_service_id": service,
        "sp_checksum": checksum(payload, key=key, iv=iv),
        "id_num": id_num,
        "op_code": op_code,
        "hint": hint,
        "time_limit": time_limit,
        "sign_info": {
            "sign_type": "PKCS#1",
            "tbs_encoding": "base64",
            "hash_algorithm": "SHA256",
            "sign_data": data,
        },
    }
    if op_mode is not None:
        body["op_mode"] = op_mode
    return body


@dataclass
class Ticket:
    tx: str
    sp_ticket_id: str
    sp_ticket: str
    answer: dict[str, Any]


class Client:
    def __init__(self, fido: TwFidoMock) -> None:
        self.fido = fido

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return post(self.fido.endpoint(operation), body)

    def ticket(self, **fields: Any) -> Ticket:
        body = ticket_request(**fields)
        answer = self.call("getSpTicket", body)
        assert answer["error_code"] == "0", answer
        result = answer["result"]
        return Ticket(body["transaction_id"], result["sp_ticket_id"], result["sp_ticket"], answer)

    def result(
        self, ticket: Ticket, *, tx: str | None = None, key: bytes = KEY, iv: bytes | None = None
    ) -> dict[str, Any]:
        tx = tx or ticket.tx
        body = {
            "transaction_id": tx,
            "sp_service_id": SERVICE,
            "sp_ticket_id": ticket.sp_ticket_id,
            "sp_checksum": checksum(tx + SERVICE + ticket.sp_ticket_id, key=key, iv=iv),
        }
        return self.call("getAthOrSignResult", body)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobile_card(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("王小明", "6789", key="rsa", card_rank="mobile")


@pytest.fixture(scope="module")
def other_card(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("陳大文", "6780", key="rsa", card_rank="mobile")


@pytest.fixture
def fido(
    mobile_card: IssuedCard, other_card: IssuedCard, clock: FixedClock
) -> Iterator[TwFidoMock]:
    holders = {
        PERSON: TwFidoHolder(mobile_card),
        NO_DEVICE: TwFidoHolder(other_card, device=False),
    }
    with TwFidoMock({SERVICE: KEY}, holders, clock=clock) as mock:
        yield mock


@pytest.fixture
def client(fido: TwFidoMock) -> Client:
    return Client(fido)


# -- the whole SIGN flow -------------------------------------------------------------------------


def test_sign_flow_pending_then_approved_then_redeemed(
    client: Client, fido: TwFidoMock, pki: TestPKI
) -> None:
    ticket = client.ticket(op_mode="APP2APP")
    result = ticket.answer["result"]
    head, _, tail = ticket.sp_ticket.partition(".")
    assert unb64url(tail) == hashlib.sha256(head.encode("ascii")).digest()
    claims = json.loads(unb64url(head))
    assert claims["sp_ticket_id"] == ticket.sp_ticket_id
    assert claims["transaction_id"] == ticket.tx
    assert (claims["op_code"], claims["op_mode"], claims["hint"]) == (
        "SIGN",
        "APP2APP",
        "swreg 註冊",
    )
    assert claims["hashed_id_num"] == result["hashed_id_num"]
    assert PERSON not in ticket.sp_ticket and PERSON not in json.dumps(claims)
    assert "expiration_time" in claims
    # the ticket answer's idp_checksum: tx + "0" + hashed_id_num (no signed_response) ❓
    assert decrypt_checksum(result["idp_checksum"]) == digest_hex(
        ticket.tx + "0" + result["hashed_id_num"]
    )

    pending = client.result(ticket)
    assert (pending["error_code"], pending["result"]) == ("20002", None)
    assert client.result(ticket, iv=ZERO_IV)["error_code"] == "20002"

    fido.approve(ticket.sp_ticket_id)
    answer = client.result(ticket)
    assert answer["error_code"] == "0"
    final = answer["result"]
    assert final["hashed_id_num"] == result["hashed_id_num"]
    signed = final["signed_response"]
    certificate = x509.load_der_x509_certificate(base64.b64decode(final["cert"]))
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(base64.b64decode(signed), CHALLENGE, padding.PKCS1v15(), hashes.SHA256())
    moica = pki.ca(IssuerCA.MOICA).certificate
    certificate.verify_directly_issued_by(moica)
    moica.verify_directly_issued_by(pki.root.certificate)
    assert decrypt_checksum(final["idp_checksum"]) == digest_hex(
        ticket.tx + "0" + final["hashed_id_num"] + signed
    )

    again = client.result(ticket)
    assert (again["error_code"], again["result"]) == (ATH02 + "SPTKTID_SPTKT_RDM", None)


def test_the_mocks_checksum_helper_matches_an_independent_zero_iv_vector() -> None:
    payload = "tx" + SERVICE + PERSON + "SIGN" + "I-SCAN" + "hint" + "QUJD"
    expected = ZERO_IV + AESGCM(KEY).encrypt(ZERO_IV, digest_hex(payload), None)
    assert make_checksum(KEY, payload, iv=ZERO_IV) == expected.hex()
    assert len(expected) == 12 + 64 + 16


def test_same_person_has_a_stable_hashed_id_and_another_person_another(
    client: Client, fido: TwFidoMock
) -> None:
    first = client.ticket().answer["result"]["hashed_id_num"]
    second = client.ticket(iv=None).answer["result"]["hashed_id_num"]
    other = client.ticket(id_num=NO_DEVICE).answer["result"]["hashed_id_num"]
    assert first == second != other
    assert len(first) == 64 and PERSON not in first


# -- the phone says no, or nothing ---------------------------------------------------------------


@pytest.mark.parametrize("code", ["APP_USER_CANCEL", "APP_SIGN_FAILURE"])
def test_refusal_on_the_phone_is_answered_once(client: Client, fido: TwFidoMock, code: str) -> None:
    ticket = client.ticket()
    fido.reject(ticket.sp_ticket_id, code=TwFidoCode(code))
    answer = client.result(ticket)
    assert (answer["error_code"], answer["result"]) == (ATH02 + code, None)
    assert client.result(ticket)["error_code"] == ATH02 + "SPTKTID_SPTKT_RDM"


def test_ticket_expires_by_the_clock(client: Client, fido: TwFidoMock, clock: FixedClock) -> None:
    ticket = client.ticket(time_limit=30)
    clock.advance(timedelta(seconds=29))
    assert client.result(ticket)["error_code"] == "20002"
    clock.advance(timedelta(seconds=1))  # the deadline itself
    assert client.result(ticket)["error_code"] == ATH02 + "SPTKT_OVD"
    with pytest.raises(ValueError, match="expired"):
        fido.approve(ticket.sp_ticket_id)
    assert fido.pending() == []


def test_expire_control_makes_the_ticket_time_out_now(client: Client, fido: TwFidoMock) -> None:
    ticket = client.ticket()
    fido.expire(ticket.sp_ticket_id)
    assert client.result(ticket)["error_code"] == ATH02 + "SPTKT_OVD"


def test_approved_but_fetched_after_the_deadline_is_expired(
    client: Client, fido: TwFidoMock, clock: FixedClock
) -> None:
    ticket = client.ticket(time_limit=60)
    fido.approve(ticket.sp_ticket_id)
    clock.advance(timedelta(seconds=60))
    assert client.result(ticket)["error_code"] == ATH02 + "SPTKT_OVD"


# -- refusals of getAthOrSignResult --------------------------------------------------------------


def test_unknown_ticket_and_a_ticket_polled_under_another_transaction(client: Client) -> None:
    ticket = client.ticket()
    unknown = Ticket(ticket.tx, str(uuid.uuid4()), "", {})
    assert client.result(unknown)["error_code"] == ATH02 + "SPTKTID_SPTKT_NF"
    other_tx = client.result(ticket, tx=str(uuid.uuid4()))
    assert other_tx["error_code"] == ATH02 + "SPTKTID_SPTKT_NF"


def test_poll_with_a_bad_checksum_is_refused(client: Client, fido: TwFidoMock) -> None:
    ticket = client.ticket()
    fido.approve(ticket.sp_ticket_id)
    wrong = client.result(ticket, key=OTHER_KEY)
    assert wrong["error_code"] == ATH02 + "INV_SP_CHECKSUM"
    assert client.result(ticket)["error_code"] == "0"  # the refused poll redeemed nothing


# -- refusals of getSpTicket ---------------------------------------------------------------------


def refusal(client: Client, body: dict[str, Any], operation: str = "getSpTicket") -> str:
    answer = client.call(operation, body)
    assert answer["result"] is None
    code: str = answer["error_code"]
    return code


def test_bad_checksums_are_refused(client: Client, fido: TwFidoMock) -> None:
    wrong_key = ticket_request(key=OTHER_KEY)
    other_payload = ticket_request()
    other_payload["hint"] = "changed after signing"
    upper = ticket_request()
    payload = (
        upper["transaction_id"]
        + SERVICE
        + PERSON
        + "SIGN"
        + "I-SCAN"
        + upper["hint"]
        + b64(CHALLENGE)
    )
    upper_digest = hashlib.sha256(payload.encode()).hexdigest().upper().encode()
    upper["sp_checksum"] = (ZERO_IV + AESGCM(KEY).encrypt(ZERO_IV, upper_digest, None)).hex()
    garbage = ticket_request()
    garbage["sp_checksum"] = "zz" + garbage["sp_checksum"][2:]
    short = ticket_request()
    short["sp_checksum"] = short["sp_checksum"][:40]
    missing = ticket_request()
    del missing["sp_checksum"]
    for body in (wrong_key, other_payload, upper, garbage, short, missing):
        assert refusal(client, body) == "SP-API-ATH-01-INV_SP_CHECKSUM"
    assert fido.tickets == {}


def test_random_iv_checksums_are_accepted(client: Client) -> None:
    assert client.ticket(iv=None).sp_ticket_id != client.ticket(iv=None).sp_ticket_id


def test_unknown_service_is_refused(client: Client) -> None:
    assert refusal(client, ticket_request(service="NOT-A-SERVICE")) == "SP-API-ATH-01-SPSVCID_NF"


@pytest.mark.parametrize(
    ("id_num", "code"),
    [
        ("A123456788", "PM_IDN_FT_ERR"),  # bad check digit
        ("a123456789", "PM_IDN_FT_ERR"),  # lowercase letter
        ("A12345678", "PM_IDN_FT_ERR"),  # nine characters
        ("A1234567890", "PM_IDN_FT_ERR"),  # eleven characters
        ("", "PM_IDN_FT_ERR"),  # empty
        (NOBODY, "IDNUM_USERPROF_NF"),  # a valid ARC number: well formed, but no certificate
        ("A800000014", "IDNUM_USERPROF_NF"),  # a valid new-format ARC number
    ],
)
def test_id_numbers(client: Client, id_num: str, code: str) -> None:
    assert refusal(client, ticket_request(id_num=id_num)) == "SP-API-ATH-01-" + code


def test_transaction_id_reuse_is_refused_and_the_first_ticket_stands(
    client: Client, fido: TwFidoMock
) -> None:
    first = client.ticket()
    reused = ticket_request(tx=first.tx, iv=None)
    assert refusal(client, reused) == "SP-API-ATH-01-TXNLOG_INS_ERR"
    assert list(fido.tickets) == [first.sp_ticket_id]
    assert client.result(first)["error_code"] == "20002"


def test_transaction_id_must_be_a_uuid(client: Client) -> None:
    assert refusal(client, ticket_request(tx="12345")) == "SP-API-ATH-01-PM_TXNID_FT_ERR"


def test_sign_data_length_limit(client: Client) -> None:
    at_limit = base64.b64encode(b"x" * 768).decode()  # 1024 characters
    over = at_limit + "AAAA"  # 1028
    assert len(at_limit) == 1024
    assert client.ticket(sign_data=at_limit).sp_ticket_id
    assert refusal(client, ticket_request(sign_data=over)) == "SP-API-ATH-01-SIGNDATA_LEN_LIMIT"


@pytest.mark.parametrize(
    ("time_limit", "accepted"),
    [
        (29, False),  # one second short
        (30, True),  # the shortest
        (600, True),  # the longest
        (601, False),  # one second too long
        ("180", True),  # a number in a string
        ("soon", False),  # not a number
        (True, False),  # a JSON boolean is not a number
    ],
)
def test_time_limit_range(client: Client, time_limit: Any, accepted: bool) -> None:
    answer = client.call("getSpTicket", ticket_request(time_limit=time_limit))
    expected = "0" if accepted else "SP-API-ATH-01-SPTKT_TIME_ORV"
    assert answer["error_code"] == expected


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"op_code": "LOGIN"}, "PM_OPCODE_FT_ERR"),
        ({"op_mode": "QR"}, "PM_OPMODE_FT_ERR"),
        ({"op_mode": None}, "PM_OPMODE_FT_ERR"),  # getSpTicket needs an op_mode
        ({"sign_data": "not base64!"}, "PM_SIGNINFO_FT_ERR"),
        ({"sign_data": ""}, "PM_SIGNINFO_FT_ERR"),
    ],
)
def test_malformed_fields(client: Client, fields: dict[str, Any], code: str) -> None:
    assert refusal(client, ticket_request(**fields)) == "SP-API-ATH-01-" + code


def test_sign_info_must_say_pkcs1_base64_sha256(client: Client) -> None:
    for name, value in (
        ("sign_type", "PKCS#7"),
        ("tbs_encoding", "NONE"),
        ("hash_algorithm", "SHA1"),
    ):
        body = ticket_request()
        body["sign_info"][name] = value
        assert refusal(client, body) == "SP-API-ATH-01-PM_SIGNINFO_FT_ERR"


def test_ath_ticket_needs_no_sign_info_and_answers_without_a_signature(
    client: Client, fido: TwFidoMock
) -> None:
    tx = str(uuid.uuid4())
    payload = tx + SERVICE + PERSON + "ATH" + "MWEB2APP" + "login"
    body = {
        "transaction_id": tx,
        "sp_service_id": SERVICE,
        "sp_checksum": checksum(payload),
        "id_num": PERSON,
        "op_code": "ATH",
        "op_mode": "MWEB2APP",
        "hint": "login",
        "time_limit": 60,
    }
    answer = client.call("getSpTicket", body)
    ticket = Ticket(tx, answer["result"]["sp_ticket_id"], answer["result"]["sp_ticket"], answer)
    fido.approve(ticket.sp_ticket_id)
    final = client.result(ticket)["result"]
    assert "signed_response" not in final
    assert decrypt_checksum(final["idp_checksum"]) == digest_hex(tx + "0" + final["hashed_id_num"])


# -- push and device status ----------------------------------------------------------------------


def test_push_without_op_mode_is_a_ticket_the_phone_answers(
    client: Client, fido: TwFidoMock
) -> None:
    body = ticket_request(op_mode=None, iv=None)
    answer = client.call("requestAthOrSignPush", body)
    assert answer["error_code"] == "0"
    ticket = Ticket(
        body["transaction_id"],
        answer["result"]["sp_ticket_id"],
        answer["result"]["sp_ticket"],
        answer,
    )
    assert client.result(ticket)["error_code"] == "20002"
    fido.approve(ticket.sp_ticket_id)
    assert client.result(ticket)["error_code"] == "0"


def test_push_with_op_mode_is_refused(client: Client, fido: TwFidoMock) -> None:
    body = ticket_request(op_mode="I-SCAN")
    assert refusal(client, body, "requestAthOrSignPush") == "SP-API-ATH-03-PM_OPMODE_FT_ERR"
    assert fido.tickets == {}


def test_push_to_people_without_a_certificate_or_device(client: Client) -> None:
    nobody = ticket_request(id_num=NOBODY, op_mode=None)
    no_device = ticket_request(id_num=NO_DEVICE, op_mode=None)
    assert refusal(client, nobody, "requestAthOrSignPush") == "SP-API-ATH-03-IDNUM_USERPROF_NF"
    assert refusal(client, no_device, "requestAthOrSignPush") == "SP-API-ATH-03-IDNUM_DEVPROF_NF"


def device_status(client: Client, id_num: str, tx: str | None = None) -> dict[str, Any]:
    tx = tx or str(uuid.uuid4())
    body = {
        "transaction_id": tx,
        "sp_service_id": SERVICE,
        "id_num": id_num,
        "sp_checksum": checksum(tx + SERVICE + id_num),
    }
    return client.call("checkDeviceStatus", body)


def test_device_status(client: Client) -> None:
    tx = str(uuid.uuid4())
    assert device_status(client, PERSON, tx)["error_code"] == "0"
    assert device_status(client, PERSON, tx)["error_code"] == "SP-API-DEV-01-TXNLOG_INS_ERR"
    assert device_status(client, NO_DEVICE)["error_code"] == "SP-API-DEV-01-IDNUM_DEVPROF_NF"
    assert device_status(client, NOBODY)["error_code"] == "SP-API-DEV-01-IDNUM_USERPROF_NF"
    assert device_status(client, "A123456788")["error_code"] == "SP-API-DEV-01-PM_IDN_FT_ERR"


# -- switches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["flip", "digest"])
def test_tampered_idp_checksum_does_not_verify(client: Client, fido: TwFidoMock, mode: Any) -> None:
    fido.tamper_checksum = "result"
    fido.tamper_mode = mode
    ticket = client.ticket()
    assert decrypt_checksum(ticket.answer["result"]["idp_checksum"])  # the ticket answer is fine
    fido.approve(ticket.sp_ticket_id)
    final = client.result(ticket)["result"]
    expected = digest_hex(ticket.tx + "0" + final["hashed_id_num"] + final["signed_response"])
    if mode == "flip":
        with pytest.raises(InvalidTag):
            decrypt_checksum(final["idp_checksum"])
    else:
        assert decrypt_checksum(final["idp_checksum"]) != expected


def test_tampered_ticket_answer(client: Client, fido: TwFidoMock) -> None:
    fido.tamper_checksum = "ticket"
    ticket = client.ticket()
    with pytest.raises(InvalidTag):
        decrypt_checksum(ticket.answer["result"]["idp_checksum"])


def test_http_500_switch(client: Client, fido: TwFidoMock) -> None:
    fido.http_status = 500
    with pytest.raises(urllib.error.HTTPError) as raised:
        client.call("getSpTicket", ticket_request())
    assert raised.value.code == 500


def test_hang_switch_never_answers(client: Client, fido: TwFidoMock) -> None:
    fido.hang = True
    with pytest.raises(TimeoutError):
        post(fido.endpoint("getSpTicket"), ticket_request(), timeout=0.3)


def test_absent_service_refuses_connections() -> None:
    with TwFidoMock({SERVICE: KEY}, absent=True) as fido, pytest.raises(urllib.error.URLError):
        post(fido.endpoint("getSpTicket"), ticket_request())


def test_bare_codes_and_integer_success(client: Client, fido: TwFidoMock) -> None:
    fido.code_prefixes = False
    fido.success_as_integer = True
    answer = client.call("getSpTicket", ticket_request())
    assert answer["error_code"] == 0
    assert refusal(client, ticket_request(service="X")) == "SPSVCID_NF"


def test_pending_code_switch(client: Client, fido: TwFidoMock) -> None:
    fido.pending_code = "SPTKTID_TXNLOG_NF"
    ticket = client.ticket()
    assert client.result(ticket)["error_code"] == ATH02 + "SPTKTID_TXNLOG_NF"


def test_batch_signing_and_unknown_operations_and_bodies(fido: TwFidoMock) -> None:
    for operation, status in (("doBatchSigning", 501), ("nothing", 404)):
        with pytest.raises(urllib.error.HTTPError) as raised:
            post(fido.endpoint(operation), {})
        assert raised.value.code == status
    request = urllib.request.Request(fido.endpoint("getSpTicket"), data=b"[1]", method="POST")
    with pytest.raises(urllib.error.HTTPError) as not_object:
        urllib.request.urlopen(request, timeout=5)
    assert not_object.value.code == 400


def test_requests_are_recorded(client: Client, fido: TwFidoMock, clock: FixedClock) -> None:
    body = ticket_request()
    client.call("getSpTicket", body)
    [request] = fido.requests
    assert (request.method, request.operation, request.data) == ("POST", "getSpTicket", body)
    assert request.at == clock.now()


# -- the control endpoints -----------------------------------------------------------------------


def control(fido: TwFidoMock, action: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{fido.control_url}/{action}",
        data=body,
        headers={"Content-Type": content_type},
        method="POST",
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def test_control_page_lists_pending_tickets_escaped(client: Client, fido: TwFidoMock) -> None:
    ticket = client.ticket(hint="<script>alert(1)</script>")
    with urllib.request.urlopen(fido.control_url, timeout=5) as response:
        page = response.read().decode("utf-8")
    assert ticket.sp_ticket_id in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert PERSON not in page and "A12*****89" in page
    with urllib.request.urlopen(fido.control_url + "/tickets", timeout=5) as response:
        listing = json.loads(response.read())
    assert [t["sp_ticket_id"] for t in listing["tickets"]] == [ticket.sp_ticket_id]


def test_control_form_approve_and_json_reject(client: Client, fido: TwFidoMock) -> None:
    first, second = client.ticket(), client.ticket()
    form = f"sp_ticket_id={first.sp_ticket_id}".encode()
    status, _ = control(fido, "approve", form, "application/x-www-form-urlencoded")
    assert status == 303
    assert client.result(first)["error_code"] == "0"
    by_ticket = json.dumps({"sp_ticket_id": second.sp_ticket}).encode()  # the whole sp_ticket
    status, body = control(fido, "reject", by_ticket, "application/json")
    assert (status, json.loads(body)["state"]) == (200, "refused")
    assert client.result(second)["error_code"] == ATH02 + "APP_USER_CANCEL"


def test_control_refusals(client: Client, fido: TwFidoMock) -> None:
    ticket = client.ticket()
    fido.approve(ticket.sp_ticket_id)
    again = json.dumps({"sp_ticket_id": ticket.sp_ticket_id}).encode()
    assert control(fido, "reject", again, "application/json")[0] == 409
    unknown = json.dumps({"sp_ticket_id": "nope"}).encode()
    assert control(fido, "approve", unknown, "application/json")[0] == 404
    assert control(fido, "approve", b"", "application/x-www-form-urlencoded")[0] == 400


def test_holders_must_have_rsa_keys(pki: TestPKI) -> None:
    with pytest.raises(ValueError, match="RSA"):
        TwFidoHolder(pki.issue_person(key="ec", card_rank="mobile"))
