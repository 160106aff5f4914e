"""A mock of the Ministry of the Interior's TW FidO service (行動自然人憑證) for tests and the demo.

**Test material only.** Written from the public protocol of DOMAIN.md §4.6 and DESIGN.md §13
alone. It serves, on 127.0.0.1 and a port of its own, JSON over HTTP POST under
``/moise/sp/<operation>``, holds a 32-byte AES key per service provider and a set of people with
a mobile certificate (an :class:`~engine.testing.IssuedCard`, RSA, chained to the test PKI's
MOICA, rank ``mobile``), and answers "pending" until the phone is played::

    pki = TestPKI.create(now)
    card = pki.issue_person("王小明", "6789", key="rsa", card_rank="mobile")
    with TwFidoMock({"SVC1": key}, {"A123456789": TwFidoHolder(card)}) as fido:
        fido.url                                  # http://127.0.0.1:PORT
        fido.endpoint("getSpTicket")              # http://127.0.0.1:PORT/moise/sp/getSpTicket
        fido.approve(ticket_id)                   # the phone says yes (or reject / expire)

Operations (every answer is HTTP 200 ``{error_code, error_message, result}``, ``"0"`` success):

- ``getSpTicket``: ``transaction_id``, ``sp_service_id``, ``sp_checksum``, ``id_num``, ``op_code``
  (ATH|SIGN), ``op_mode`` (I-SCAN|APP2APP|MWEB2APP), ``hint``, ``time_limit`` (30–600 s),
  ``sign_info`` (SIGN: ``sign_type`` PKCS#1, ``tbs_encoding`` base64, ``hash_algorithm``
  SHA256, ``sign_data`` base64 ≤ 1024 characters). ``result``: ``transaction_id``,
  ``sp_ticket_id``, ``sp_ticket``, ``hashed_id_num``, ``idp_checksum``.
- ``requestAthOrSignPush``: the same with **no** ``op_mode`` (present → refused), for a holder
  with a bound device; the same ``result``.
- ``getAthOrSignResult``: ``transaction_id`` (the ticket's own), ``sp_service_id``,
  ``sp_ticket_id``, ``sp_checksum``. Pending: :attr:`TwFidoMock.pending_code` (``20002``).
  Approved: ``result`` with ``transaction_id``, ``sp_ticket_id``, ``hashed_id_num``,
  ``signed_response`` (SIGN: base64 RSA PKCS#1 v1.5 SHA-256 over the decoded ``sign_data``),
  ``cert`` (base64 DER) and ``idp_checksum``. Refused on the phone: ``APP_USER_CANCEL`` (or
  ``APP_SIGN_FAILURE``). A final answer redeems the ticket: asked again, ``SPTKTID_SPTKT_RDM``.
- ``checkDeviceStatus``: ``transaction_id``, ``sp_service_id``, ``id_num``, ``sp_checksum``.
- ``doBatchSigning``: HTTP 501 (the mock does not implement it).

**Checksums** (DOMAIN.md §4.6): ``hex(IV ‖ AES-256-GCM(lowercase hex SHA-256 of the payload) ‖
tag)``; ``sp_checksum`` is checked by decrypting (zero and random IVs both pass). Payloads:
getSpTicket tx + svc + id_num + op_code + op_mode + hint + sign_data; getAthOrSignResult tx + svc
+ sp_ticket_id; ``idp_checksum`` tx + error_code + hashed_id_num + signed_response (random IV;
``cert`` not covered). ❓ (not in the public record; the mock's choice): requestAthOrSignPush uses
the getSpTicket payload with an empty op_mode; checkDeviceStatus tx + svc + id_num; the ticket
and device answers carry ``idp_checksum`` by the answer rule with an empty ``signed_response``.

**Error codes** are ``{interface}-{code}`` (``code_prefixes=False``: bare). Only
``SP-API-ATH-02`` (getAthOrSignResult) is documented; the other prefixes, and the
``PM_<FIELD>_FT_ERR`` codes for malformed fields other than ``id_num`` (:class:`TwFidoCode`), are
the mock's guesses ❓. Checks run in this order: service id, field types (and no ``op_mode`` in a
push), checksum, fields and limits, the person (``IDNUM_USERPROF_NF``; for push and device
status ``IDNUM_DEVPROF_NF``), then transaction id reuse (``TXNLOG_INS_ERR``: ids are remembered
once a ticket or device answer is given).

**Tickets**: ``sp_ticket`` = base64url(JSON) ``.`` base64url(SHA-256 of the first part), no
padding (:func:`parse_ticket`); ``hashed_id_num`` is SHA-256 hex of a per-mock salt and the ID
(opaque, stable per person). A ticket expires ``time_limit`` seconds after it was issued, by
``clock`` (``SPTKT_OVD``; the phone can no longer answer it either).

**Playing the phone**: :meth:`TwFidoMock.approve`, :meth:`~TwFidoMock.reject`,
:meth:`~TwFidoMock.expire`; over HTTP ``POST /control/approve|reject|expire`` with
``sp_ticket_id=<id or the whole sp_ticket>`` (form: 303 to the page; JSON: a JSON answer);
``GET /control`` (also ``/``) is a page listing pending tickets with buttons, ``GET
/control/tickets`` the same as JSON.

**Failure switches** (changeable while running): ``absent=True`` listens on nothing;
``http_status=500`` answers every API call with that status; ``hang=True`` never answers an API
call (until :meth:`TwFidoMock.stop`; the control endpoints still answer); ``tamper_checksum``
(``"ticket"``, ``"result"`` or ``"all"``) spoils the ``idp_checksum`` of those answers,
``tamper_mode`` ``"flip"`` (a flipped tag bit: it no longer decrypts) or ``"digest"`` (a
well-encrypted digest of another payload). ``success_as_integer`` sends ``"0"`` as the bare
integer ``0``; ``pending_code`` is what "pending" answers (``20002``, or ``SPTKTID_TXNLOG_NF``,
then prefixed). Every request is recorded in :attr:`TwFidoMock.requests` with the clock's time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import secrets
import threading
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum, StrEnum
from http.server import BaseHTTPRequestHandler
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine._clock import Clock, SystemClock
from engine.core.identifiers import is_valid_national_id, mask_national_id
from engine.testing.loopback import LoopbackService
from engine.testing.pki import IssuedCard

API_PREFIX: Final = "/moise/sp/"
OPERATIONS: Final = (
    "getSpTicket",
    "getAthOrSignResult",
    "requestAthOrSignPush",
    "checkDeviceStatus",
    "doBatchSigning",
)
INTERFACES: Final[Mapping[str, str]] = {
    "getSpTicket": "SP-API-ATH-01",  # ❓
    "getAthOrSignResult": "SP-API-ATH-02",  # DOMAIN.md §4.6
    "requestAthOrSignPush": "SP-API-ATH-03",  # ❓
    "checkDeviceStatus": "SP-API-DEV-01",  # ❓
    "doBatchSigning": "SP-API-SIGN-01",  # ❓
}
"""The ``{interface}`` prefix of each operation's error codes."""

OP_CODES: Final = frozenset({"ATH", "SIGN"})
OP_MODES: Final = frozenset({"I-SCAN", "APP2APP", "MWEB2APP"})
TIME_LIMIT: Final = (30, 600)
SIGN_DATA_MAX: Final = 1024
KEY_SIZE: Final = 32
IV_SIZE: Final = 12
TAG_SIZE: Final = 16
MAX_BODY: Final = 64 * 1024

TamperTarget = Literal["ticket", "result", "all"]
TamperMode = Literal["flip", "digest"]
ControlAction = Literal["approve", "reject", "expire"]

_TAIPEI: Final = timezone(timedelta(hours=8))
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_ID_SHAPE: Final = re.compile(r"[A-Z][1289A-D][0-9]{8}")


class TwFidoCode(StrEnum):
    """Error codes (DOMAIN.md §4.6) without their ``{interface}-`` prefix."""

    OK = "0"
    PENDING = "20002"
    PENDING_OTHER = "20003"
    INV_SP_CHECKSUM = "INV_SP_CHECKSUM"
    SPSVCID_NF = "SPSVCID_NF"
    PM_IDN_FT_ERR = "PM_IDN_FT_ERR"
    IDNUM_USERPROF_NF = "IDNUM_USERPROF_NF"
    IDNUM_DEVPROF_NF = "IDNUM_DEVPROF_NF"
    SIGNDATA_LEN_LIMIT = "SIGNDATA_LEN_LIMIT"
    SPTKT_TIME_ORV = "SPTKT_TIME_ORV"
    SPTKT_OVD = "SPTKT_OVD"
    SPTKTID_SPTKT_NF = "SPTKTID_SPTKT_NF"
    SPTKTID_SPTKT_RDM = "SPTKTID_SPTKT_RDM"
    SPTKTID_TXNLOG_NF = "SPTKTID_TXNLOG_NF"
    TXNLOG_INS_ERR = "TXNLOG_INS_ERR"
    APP_USER_CANCEL = "APP_USER_CANCEL"
    APP_SIGN_FAILURE = "APP_SIGN_FAILURE"
    # The mock's own guesses in the documented PM_*_FT_ERR pattern ❓ (a malformed field):
    PM_TXNID_FT_ERR = "PM_TXNID_FT_ERR"
    PM_OPCODE_FT_ERR = "PM_OPCODE_FT_ERR"
    PM_OPMODE_FT_ERR = "PM_OPMODE_FT_ERR"
    PM_HINT_FT_ERR = "PM_HINT_FT_ERR"
    PM_SIGNINFO_FT_ERR = "PM_SIGNINFO_FT_ERR"


MESSAGES: Final[Mapping[TwFidoCode, str]] = {
    TwFidoCode.OK: "成功",
    TwFidoCode.PENDING: "等待使用者於行動裝置確認",
    TwFidoCode.PENDING_OTHER: "等待使用者於行動裝置確認",
    TwFidoCode.INV_SP_CHECKSUM: "SP檢核碼錯誤",
    TwFidoCode.SPSVCID_NF: "查無SP服務代碼",
    TwFidoCode.PM_IDN_FT_ERR: "身分證統一編號格式錯誤",
    TwFidoCode.IDNUM_USERPROF_NF: "查無此身分證統一編號之行動自然人憑證",
    TwFidoCode.IDNUM_DEVPROF_NF: "查無此身分證統一編號綁定之行動裝置",
    TwFidoCode.SIGNDATA_LEN_LIMIT: "簽章資料長度超過限制",
    TwFidoCode.SPTKT_TIME_ORV: "時間限制超出範圍",
    TwFidoCode.SPTKT_OVD: "SP票據已逾期",
    TwFidoCode.SPTKTID_SPTKT_NF: "查無SP票據",
    TwFidoCode.SPTKTID_SPTKT_RDM: "SP票據已兌換",
    TwFidoCode.SPTKTID_TXNLOG_NF: "查無交易紀錄",
    TwFidoCode.TXNLOG_INS_ERR: "交易序號重複",
    TwFidoCode.APP_USER_CANCEL: "使用者取消",
    TwFidoCode.APP_SIGN_FAILURE: "簽章失敗",
    TwFidoCode.PM_TXNID_FT_ERR: "交易序號格式錯誤",
    TwFidoCode.PM_OPCODE_FT_ERR: "op_code格式錯誤",
    TwFidoCode.PM_OPMODE_FT_ERR: "op_mode格式錯誤",
    TwFidoCode.PM_HINT_FT_ERR: "hint格式錯誤",
    TwFidoCode.PM_SIGNINFO_FT_ERR: "sign_info格式錯誤",
}

_FIELD_CODES: Final[Mapping[str, TwFidoCode]] = {
    "transaction_id": TwFidoCode.PM_TXNID_FT_ERR,
    "sp_service_id": TwFidoCode.SPSVCID_NF,
    "sp_checksum": TwFidoCode.INV_SP_CHECKSUM,
    "id_num": TwFidoCode.PM_IDN_FT_ERR,
    "op_code": TwFidoCode.PM_OPCODE_FT_ERR,
    "op_mode": TwFidoCode.PM_OPMODE_FT_ERR,
    "hint": TwFidoCode.PM_HINT_FT_ERR,
    "sp_ticket_id": TwFidoCode.SPTKTID_SPTKT_NF,
}
"""The code of a field that is there but not a string."""


# -- checksums -----------------------------------------------------------------------------------


def checksum_digest(payload: str) -> bytes:
    """What is encrypted: the lowercase hex SHA-256 of the payload (UTF-8), as ASCII."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest().encode("ascii")


def make_checksum(key: bytes, payload: str, *, iv: bytes | None = None) -> str:
    """``hex(IV ‖ AES-256-GCM_key(checksum_digest(payload)) ‖ tag)``; a random IV by default."""
    nonce = secrets.token_bytes(IV_SIZE) if iv is None else iv
    if len(nonce) != IV_SIZE:
        raise ValueError("the IV is 12 bytes")
    return (nonce + AESGCM(key).encrypt(nonce, checksum_digest(payload), None)).hex()


def checksum_matches(key: bytes, payload: str, checksum: str) -> bool:
    """Decrypt ``checksum`` with ``key`` and compare it with the payload's digest (any IV)."""
    try:
        raw = bytes.fromhex(checksum)
    except ValueError:
        return False
    if len(raw) < IV_SIZE + TAG_SIZE:
        return False
    try:
        plain = AESGCM(key).decrypt(raw[:IV_SIZE], raw[IV_SIZE:], None)
    except InvalidTag:
        return False
    return secrets.compare_digest(plain, checksum_digest(payload))


# -- tickets -------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_ticket(claims: Mapping[str, Any]) -> str:
    """``base64url(JSON) . base64url(SHA-256 of the first part)``, unpadded."""
    head = _b64url(json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return head + "." + _b64url(hashlib.sha256(head.encode("ascii")).digest())


def parse_ticket(sp_ticket: str) -> dict[str, Any]:
    """The JSON of an ``sp_ticket``; :class:`ValueError` when its hash part does not match."""
    head, dot, tail = sp_ticket.partition(".")
    if not dot or not head or not tail:
        raise ValueError("an sp_ticket is two base64url parts joined by a dot")
    try:
        digest = _unb64url(tail)
        claims = json.loads(_unb64url(head))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("an sp_ticket part is not base64url JSON") from exc
    if digest != hashlib.sha256(head.encode("ascii")).digest():
        raise ValueError("the sp_ticket's hash part does not match")
    if not isinstance(claims, dict):
        raise ValueError("an sp_ticket holds a JSON object")
    return claims


class TicketState(Enum):
    PENDING = "pending"
    APPROVED = "approved"
    REFUSED = "refused"
    REDEEMED = "redeemed"


@dataclass
class TwFidoHolder:
    """A person with a mobile certificate (``card``: an RSA key and its certificate) and
    whether a device is bound to their ID (push and device status need one)."""

    card: IssuedCard
    device: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.card.key, rsa.RSAPrivateKey):
            raise ValueError("a mobile certificate has an RSA key (DOMAIN.md §4.6)")


@dataclass
class TwFidoTicket:
    """A ticket as the mock keeps it; ``op_mode`` is ``None`` for a push."""

    sp_ticket_id: str
    sp_ticket: str
    transaction_id: str
    service_id: str
    id_num: str
    op_code: str
    op_mode: str | None
    hint: str
    sign_data: bytes
    issued_at: datetime
    expires_at: datetime
    hashed_id_num: str
    state: TicketState = TicketState.PENDING
    refusal: TwFidoCode | None = None
    signed_response: bytes = b""
    certificate: x509.Certificate | None = None

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class TwFidoRequest:
    """A request as the mock received it (``data``: the JSON body, when it was JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: datetime
    data: Any = None

    @property
    def operation(self) -> str | None:
        return self.path[len(API_PREFIX) :] if self.path.startswith(API_PREFIX) else None


class ControlRefused(ValueError):
    """The phone cannot do that: no such ticket, or it is no longer pending."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Reply:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Refusal(Exception):
    def __init__(self, code: TwFidoCode) -> None:
        super().__init__(code.value)
        self.code = code


# -- the mock ------------------------------------------------------------------------------------


class TwFidoMock(LoopbackService):
    """The service, with ``keys`` (``sp_service_id`` → 32-byte AES key) and ``holders``
    (national ID → :class:`TwFidoHolder`); a context manager (``start``/``stop`` also work).
    See the module docstring for the switches."""

    __test__ = False

    def __init__(
        self,
        keys: Mapping[str, bytes],
        holders: Mapping[str, TwFidoHolder] | None = None,
        *,
        port: int | None = None,
        clock: Clock | None = None,
        salt: bytes | None = None,
        pending_code: str = TwFidoCode.PENDING.value,
        code_prefixes: bool = True,
        success_as_integer: bool = False,
        ath_cert: bool = True,
        http_status: int | None = None,
        tamper_checksum: TamperTarget | None = None,
        tamper_mode: TamperMode = "flip",
        absent: bool = False,
        hang: bool = False,
        hang_seconds: float = 300.0,
    ) -> None:
        for service, key in keys.items():
            if len(key) != KEY_SIZE:
                raise ValueError(f"the key of {service!r} is not {KEY_SIZE} bytes")
        self.keys: dict[str, bytes] = dict(keys)
        self.holders: dict[str, TwFidoHolder] = dict(holders or {})
        self.clock: Clock = clock or SystemClock()
        self.salt = secrets.token_bytes(16) if salt is None else salt
        self.pending_code = pending_code
        self.code_prefixes = code_prefixes
        self.success_as_integer = success_as_integer
        self.ath_cert = ath_cert
        self.http_status = http_status
        self.tamper_checksum: TamperTarget | None = tamper_checksum
        self.tamper_mode: TamperMode = tamper_mode
        self.hang = hang
        self.hang_seconds = hang_seconds
        self.requests: list[TwFidoRequest] = []
        self.tickets: dict[str, TwFidoTicket] = {}
        self.transaction_ids: set[str] = set()
        self._lock = threading.RLock()
        self._listen_on(port, absent=absent)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL (what ``SWREG_TWFIDO_URL`` names)."""
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, operation: str) -> str:
        return f"{self.url}{API_PREFIX}{operation}"

    @property
    def control_url(self) -> str:
        return f"{self.url}/control"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    # -- the phone -----------------------------------------------------------------------------

    def hashed_id_num(self, id_num: str) -> str:
        return hashlib.sha256(self.salt + id_num.encode("ascii")).hexdigest()

    def ticket(self, ticket: str) -> TwFidoTicket:
        """A ticket by its ``sp_ticket_id`` or its whole ``sp_ticket``."""
        with self._lock:
            found = self.tickets.get(ticket)
            if found is None:
                found = next((t for t in self.tickets.values() if t.sp_ticket == ticket), None)
            if found is None:
                raise ControlRefused("no such ticket", status=404)
            return found

    def pending(self) -> list[TwFidoTicket]:
        """Tickets the phone has not answered yet and that have not expired."""
        now = self.clock.now()
        with self._lock:
            return [
                t
                for t in self.tickets.values()
                if t.state is TicketState.PENDING and not t.expired(now)
            ]

    def approve(self, ticket: str) -> TwFidoTicket:
        """The holder confirms on the phone: SIGN tickets get the signature over ``sign_data``."""
        with self._lock:
            found = self._answerable(ticket)
            holder = self.holders.get(found.id_num)
            if holder is None:
                raise ControlRefused("this person no longer has a mobile certificate", status=409)
            key = holder.card.key
            assert isinstance(key, rsa.RSAPrivateKey)
            if found.op_code == "SIGN":
                found.signed_response = key.sign(
                    found.sign_data, padding.PKCS1v15(), hashes.SHA256()
                )
            found.certificate = holder.card.certificate
            found.state = TicketState.APPROVED
            return found

    def reject(self, ticket: str, *, code: TwFidoCode = TwFidoCode.APP_USER_CANCEL) -> TwFidoTicket:
        """The holder cancels on the phone (or, with ``APP_SIGN_FAILURE``, signing fails)."""
        if code not in (TwFidoCode.APP_USER_CANCEL, TwFidoCode.APP_SIGN_FAILURE):
            raise ValueError("a phone refuses with APP_USER_CANCEL or APP_SIGN_FAILURE")
        with self._lock:
            found = self._answerable(ticket)
            found.state = TicketState.REFUSED
            found.refusal = code
            return found

    def expire(self, ticket: str) -> TwFidoTicket:
        """The phone never answers: the ticket's deadline is now."""
        with self._lock:
            found = self._answerable(ticket)
            found.expires_at = min(found.expires_at, self.clock.now())
            return found

    def _answerable(self, ticket: str) -> TwFidoTicket:
        found = self.ticket(ticket)
        if found.state is not TicketState.PENDING:
            raise ControlRefused("the ticket was already answered", status=409)
        if found.expired(self.clock.now()):
            raise ControlRefused("the ticket has expired", status=409)
        return found

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        path = urllib.parse.urlsplit(target).path
        if path.startswith(API_PREFIX):
            if method != "POST":
                return _Reply(405, "text/plain", b"method not allowed", {"Allow": "POST"})
            if self.http_status is not None:
                return _Reply(self.http_status, "text/plain", b"service error (mock switch)")
            operation = path[len(API_PREFIX) :]
            if operation not in OPERATIONS:
                return _Reply(404, "text/plain", b"no such operation")
            if operation == "doBatchSigning":
                return _Reply(501, "text/plain", b"doBatchSigning is not implemented by the mock")
            data = _json_object(body)
            if data is None:
                return _Reply(400, "text/plain", b"the body is not a JSON object")
            return _json_reply(self._operation(operation, data))
        if path in ("/", "/control") and method == "GET":
            return _Reply(200, "text/html; charset=utf-8", self._page())
        if path == "/control/tickets" and method == "GET":
            listing = [_ticket_view(t) for t in self.pending()]
            return _Reply(200, "application/json", _json_bytes({"tickets": listing}))
        action = path.removeprefix("/control/")
        if action in ("approve", "reject", "expire"):
            if method != "POST":
                return _Reply(405, "text/plain", b"method not allowed", {"Allow": "POST"})
            return self._control(action, headers, body)
        return _Reply(404, "text/plain", b"not found")

    def _operation(self, operation: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            with self._lock:
                if operation == "getAthOrSignResult":
                    return self._result(data)
                if operation == "checkDeviceStatus":
                    return self._device_status(data)
                return self._new_ticket(data, push=operation == "requestAthOrSignPush")
        except _Refusal as refusal:
            return self._error(operation, refusal.code)

    def _new_ticket(self, data: dict[str, Any], *, push: bool) -> dict[str, Any]:
        key, service = self._service(data)
        if push and "op_mode" in data:
            raise _Refusal(TwFidoCode.PM_OPMODE_FT_ERR)  # a push has no op_mode
        names = ["transaction_id", "id_num", "op_code", "hint", "sp_checksum"]
        text = _texts(data, [*names, *([] if push else ["op_mode"])])
        sign_info = data.get("sign_info")
        sign_data = sign_info.get("sign_data", "") if isinstance(sign_info, dict) else ""
        if not isinstance(sign_data, str):
            raise _Refusal(TwFidoCode.PM_SIGNINFO_FT_ERR)
        tx, id_num, op_code, hint = (text[n] for n in names[:4])
        op_mode = "" if push else text["op_mode"]
        payload = tx + service + id_num + op_code + op_mode + hint + sign_data
        if not checksum_matches(key, payload, text["sp_checksum"]):
            raise _Refusal(TwFidoCode.INV_SP_CHECKSUM)
        _check_transaction_id(tx)
        _check_id_num(id_num)
        if op_code not in OP_CODES:
            raise _Refusal(TwFidoCode.PM_OPCODE_FT_ERR)
        if not push and op_mode not in OP_MODES:
            raise _Refusal(TwFidoCode.PM_OPMODE_FT_ERR)
        seconds = _time_limit(data.get("time_limit"))
        tbs = _sign_data(sign_info) if op_code == "SIGN" else b""
        self._holder(id_num, device=push)
        self._fresh(tx)
        now = self.clock.now()
        ticket_id = str(uuid.uuid4())
        expires_at = now + timedelta(seconds=seconds)
        hashed = self.hashed_id_num(id_num)
        claims = {
            "sp_ticket_id": ticket_id,
            "transaction_id": tx,
            "op_code": op_code,
            "op_mode": None if push else op_mode,
            "hint": hint,
            "expiration_time": expires_at.astimezone(_TAIPEI).isoformat(timespec="seconds"),
            "hashed_id_num": hashed,
        }
        sp_ticket = make_ticket(claims)
        self.tickets[ticket_id] = TwFidoTicket(
            ticket_id,
            sp_ticket,
            tx,
            service,
            id_num,
            op_code,
            None if push else op_mode,
            hint,
            tbs,
            now,
            expires_at,
            hashed,
        )
        result = {
            "transaction_id": tx,
            "sp_ticket_id": ticket_id,
            "sp_ticket": sp_ticket,
            "hashed_id_num": hashed,
            "idp_checksum": self._idp_checksum(key, tx, hashed, "", "ticket"),
        }
        return self._success(result)

    def _result(self, data: dict[str, Any]) -> dict[str, Any]:
        key, service = self._service(data)
        text = _texts(data, ["transaction_id", "sp_ticket_id", "sp_checksum"])
        tx, ticket_id = text["transaction_id"], text["sp_ticket_id"]
        if not checksum_matches(key, tx + service + ticket_id, text["sp_checksum"]):
            raise _Refusal(TwFidoCode.INV_SP_CHECKSUM)
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket.service_id != service or ticket.transaction_id != tx:
            raise _Refusal(TwFidoCode.SPTKTID_SPTKT_NF)
        if ticket.state is TicketState.REDEEMED:
            raise _Refusal(TwFidoCode.SPTKTID_SPTKT_RDM)
        if ticket.expired(self.clock.now()):
            raise _Refusal(TwFidoCode.SPTKT_OVD)
        if ticket.state is TicketState.PENDING:
            return self._pending()
        if ticket.state is TicketState.REFUSED:
            ticket.state = TicketState.REDEEMED
            assert ticket.refusal is not None
            raise _Refusal(ticket.refusal)
        ticket.state = TicketState.REDEEMED
        signed = base64.b64encode(ticket.signed_response).decode("ascii")
        result: dict[str, Any] = {
            "transaction_id": tx,
            "sp_ticket_id": ticket_id,
            "hashed_id_num": ticket.hashed_id_num,
        }
        if ticket.op_code == "SIGN":
            result["signed_response"] = signed
        if ticket.certificate is not None and (ticket.op_code == "SIGN" or self.ath_cert):
            der = ticket.certificate.public_bytes(serialization.Encoding.DER)
            result["cert"] = base64.b64encode(der).decode("ascii")
        result["idp_checksum"] = self._idp_checksum(
            key, tx, ticket.hashed_id_num, result.get("signed_response", ""), "result"
        )
        return self._success(result)

    def _device_status(self, data: dict[str, Any]) -> dict[str, Any]:
        key, service = self._service(data)
        text = _texts(data, ["transaction_id", "id_num", "sp_checksum"])
        tx, id_num = text["transaction_id"], text["id_num"]
        if not checksum_matches(key, tx + service + id_num, text["sp_checksum"]):
            raise _Refusal(TwFidoCode.INV_SP_CHECKSUM)
        _check_transaction_id(tx)
        _check_id_num(id_num)
        self._holder(id_num, device=True)
        self._fresh(tx)
        hashed = self.hashed_id_num(id_num)
        result = {
            "transaction_id": tx,
            "hashed_id_num": hashed,
            "device_status": "BOUND",  # ❓ the field and its values are not in the public record
            "idp_checksum": self._idp_checksum(key, tx, hashed, "", "ticket"),
        }
        return self._success(result)

    # -- pieces --------------------------------------------------------------------------------

    def _service(self, data: dict[str, Any]) -> tuple[bytes, str]:
        service = data.get("sp_service_id")
        key = self.keys.get(service) if isinstance(service, str) else None
        if key is None or not isinstance(service, str):
            raise _Refusal(TwFidoCode.SPSVCID_NF)
        return key, service

    def _holder(self, id_num: str, *, device: bool) -> TwFidoHolder:
        holder = self.holders.get(id_num)
        if holder is None:
            raise _Refusal(TwFidoCode.IDNUM_USERPROF_NF)
        if device and not holder.device:
            raise _Refusal(TwFidoCode.IDNUM_DEVPROF_NF)
        return holder

    def _fresh(self, transaction_id: str) -> None:
        if transaction_id.lower() in self.transaction_ids:
            raise _Refusal(TwFidoCode.TXNLOG_INS_ERR)
        self.transaction_ids.add(transaction_id.lower())

    def _idp_checksum(
        self, key: bytes, tx: str, hashed: str, signed: str, kind: Literal["ticket", "result"]
    ) -> str:
        payload = tx + TwFidoCode.OK.value + hashed + signed
        if self.tamper_checksum not in (kind, "all"):
            return make_checksum(key, payload)
        if self.tamper_mode == "digest":
            return make_checksum(key, payload + "tampered")
        raw = bytearray(bytes.fromhex(make_checksum(key, payload)))
        raw[-1] ^= 0x01
        return bytes(raw).hex()

    def _success(self, result: dict[str, Any]) -> dict[str, Any]:
        code: str | int = 0 if self.success_as_integer else TwFidoCode.OK.value
        return {"error_code": code, "error_message": MESSAGES[TwFidoCode.OK], "result": result}

    def _pending(self) -> dict[str, Any]:
        code = self.pending_code
        if code == TwFidoCode.SPTKTID_TXNLOG_NF and self.code_prefixes:
            code = f"{INTERFACES['getAthOrSignResult']}-{code}"
        bare = code.rsplit("-", 1)[-1]
        known = bare in {member.value for member in TwFidoCode}
        message = MESSAGES.get(TwFidoCode(bare), "") if known else ""
        return {"error_code": code, "error_message": message, "result": None}

    def _error(self, operation: str, code: TwFidoCode) -> dict[str, Any]:
        text = f"{INTERFACES[operation]}-{code.value}" if self.code_prefixes else code.value
        return {"error_code": text, "error_message": MESSAGES[code], "result": None}

    def _control(self, action: str, headers: dict[str, str], body: bytes) -> _Reply:
        as_json = "json" in (_header(headers, "Content-Type") or "")
        if as_json:
            data = _json_object(body) or {}
            value = data.get("sp_ticket_id")
        else:
            fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            value = fields.get("sp_ticket_id", [None])[0]
        try:
            if not isinstance(value, str):
                raise ControlRefused("sp_ticket_id is missing", status=400)
            if action == "approve":
                ticket = self.approve(value)
            elif action == "reject":
                ticket = self.reject(value)
            else:
                ticket = self.expire(value)
        except ControlRefused as refused:
            if as_json:
                return _Reply(
                    refused.status, "application/json", _json_bytes({"error": str(refused)})
                )
            return _Reply(refused.status, "text/plain; charset=utf-8", str(refused).encode("utf-8"))
        if as_json:
            return _Reply(200, "application/json", _json_bytes(_ticket_view(ticket)))
        return _Reply(303, "text/plain", b"", {"Location": "/control"})

    def _page(self) -> bytes:
        now = self.clock.now()
        rows = []
        for ticket in self.pending():
            left = int((ticket.expires_at - now).total_seconds())
            ticket_id = html.escape(ticket.sp_ticket_id)
            buttons = "".join(
                f'<form method="post" action="/control/{action}">'
                f'<input type="hidden" name="sp_ticket_id" value="{ticket_id}">'
                f'<button type="submit" class="{action}">{label}</button></form>'
                for action, label in (("approve", "核准"), ("reject", "拒絕"), ("expire", "逾時"))
            )
            rows.append(
                f'<tr data-ticket="{ticket_id}"><td>{html.escape(mask_national_id(ticket.id_num))}'
                f"</td><td>{html.escape(ticket.op_code)} {html.escape(ticket.op_mode or 'PUSH')}"
                f"</td><td>{html.escape(ticket.hint)}</td><td>{left} s</td>"
                f"<td><code>{ticket_id}</code></td><td>{buttons}</td></tr>"
            )
        table = (
            "".join(rows) or '<tr><td colspan="6">沒有等待中的請求 (no pending ticket)</td></tr>'
        )
        return _PAGE.replace("__ROWS__", table).encode("utf-8")


# -- field checks --------------------------------------------------------------------------------


def _texts(data: dict[str, Any], names: list[str]) -> dict[str, str]:
    """The named fields ("" when missing); a field that is not a string is refused."""
    values: dict[str, str] = {}
    for name in names:
        value = data.get(name, "")
        if not isinstance(value, str):
            raise _Refusal(_FIELD_CODES[name])
        values[name] = value
    return values


def _check_transaction_id(value: str) -> None:
    if not _UUID.fullmatch(value):
        raise _Refusal(TwFidoCode.PM_TXNID_FT_ERR)


def _check_id_num(value: str) -> None:
    """A national ID or a resident certificate number (new or old), uppercase, checksum good."""
    if not _ID_SHAPE.fullmatch(value) or not is_valid_national_id(value):
        raise _Refusal(TwFidoCode.PM_IDN_FT_ERR)


def _time_limit(value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Refusal(TwFidoCode.SPTKT_TIME_ORV)
    low, high = TIME_LIMIT
    if not low <= value <= high:
        raise _Refusal(TwFidoCode.SPTKT_TIME_ORV)
    return value


def _sign_data(sign_info: object) -> bytes:
    if not isinstance(sign_info, dict):
        raise _Refusal(TwFidoCode.PM_SIGNINFO_FT_ERR)
    data = sign_info.get("sign_data")
    if not isinstance(data, str) or not data:
        raise _Refusal(TwFidoCode.PM_SIGNINFO_FT_ERR)
    if len(data) > SIGN_DATA_MAX:
        raise _Refusal(TwFidoCode.SIGNDATA_LEN_LIMIT)
    expected = {"sign_type": "PKCS#1", "tbs_encoding": "base64", "hash_algorithm": "SHA256"}
    if any(sign_info.get(name) != value for name, value in expected.items()):
        raise _Refusal(TwFidoCode.PM_SIGNINFO_FT_ERR)
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise _Refusal(TwFidoCode.PM_SIGNINFO_FT_ERR) from exc


# -- helpers -------------------------------------------------------------------------------------


def _ticket_view(ticket: TwFidoTicket) -> dict[str, Any]:
    return {
        "sp_ticket_id": ticket.sp_ticket_id,
        "sp_ticket": ticket.sp_ticket,
        "id_num": mask_national_id(ticket.id_num),
        "op_code": ticket.op_code,
        "op_mode": ticket.op_mode,
        "hint": ticket.hint,
        "expiration_time": ticket.expires_at.isoformat(timespec="seconds"),
        "state": ticket.state.value,
    }


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def _json_bytes(reply: Mapping[str, Any]) -> bytes:
    return json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_reply(reply: Mapping[str, Any]) -> _Reply:
    return _Reply(200, "application/json; charset=utf-8", _json_bytes(reply))


def _header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def _handler(mock: TwFidoMock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self._send(_Reply(413, "text/plain", b"too large"))
                return
            self._serve(self.rfile.read(length))

        def _serve(self, body: bytes) -> None:
            headers = dict(self.headers.items())
            path = urllib.parse.urlsplit(self.path).path
            data = _json_object(body) if path.startswith(API_PREFIX) else None
            request = TwFidoRequest(self.command, path, headers, body, mock.clock.now(), data)
            with mock._lock:
                mock.requests.append(request)
            if mock.hang and path.startswith(API_PREFIX):
                mock._released.wait(mock.hang_seconds)
                self.close_connection = True
                return
            self._send(mock._dispatch(self.command, self.path, headers, body))

        def _send(self, reply: _Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

    return Handler


_PAGE: Final = """<!DOCTYPE html>
<html lang="zh-Hant"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="3">
<title>行動自然人憑證 TW FidO mock (swreg TEST, 測試用)</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .6em;border-bottom:1px solid #ccc}
form{display:inline}</style></head>
<body><h1>行動自然人憑證 — 模擬手機 (swreg TEST mock, 測試用)</h1>
<p>等待確認的請求 (pending tickets); 核准 = approve, 拒絕 = reject, 逾時 = let it time out.</p>
<table><thead><tr><th>身分證</th><th>op</th><th>hint</th><th>剩餘</th><th>sp_ticket_id</th><th></th>
</tr></thead><tbody>__ROWS__</tbody></table></body></html>
"""
