"""The SP client of MOI's TW FidO service: the mobile citizen certificate (DOMAIN.md §4.6, DESIGN.md
§13).

The person types the national ID; the service asks their phone to sign the same challenge
payload a card signs (``op_code`` SIGN, ``sign_info`` PKCS#1 / base64 / SHA256), and the SP polls
for the answer::

    start(id_num, payload)   getSpTicket → the ticket (the QR code's text, the app-to-app link)
    poll(ticket)             getAthOrSignResult → None while pending, else the signed answer
    push(id_num, payload)    requestAthOrSignPush: the same, to a bound device (no ``op_mode``)

Every request carries a fresh ``transaction_id`` (a UUID; a poll repeats its ticket's),
``sp_service_id`` and ``sp_checksum``: AES-256-GCM under the SP's key of the lowercase hex
SHA-256 of the request's fields concatenated, as ``hex(IV ‖ ciphertext ‖ tag)`` (random IV). An
answer's ``idp_checksum`` (over transaction id + error code + hashed ID + signed response; the
certificate is not covered) is checked by decrypting it with the same key: one that does not
verify is ``signature_invalid`` and nothing of the answer is used.

Errors (HTTP 200 with ``error_code``): the person refused or has no mobile certificate or bound
device → ``mobile_id_rejected``; the ticket expired → ``mobile_id_timeout``; a malformed ID →
``invalid_national_id``; swreg's own configuration refused (checksum, service id) or any other
failure of the service (no connection, non-200, no answer within the time limit, an answer
that is not JSON) → ``mobile_id_unavailable``. The SP key is never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.error import URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine._errors import CertificateError, EnvironmentProblem, ErrorCode, RefusedError
from engine._settings import TwFidoSettings

log = logging.getLogger("swreg.twfido")

API_PATH: Final = "/moise/sp/"
POLL_INTERVAL: Final = timedelta(seconds=4)
"""No faster than this: the service's own rule for getAthOrSignResult."""
MAX_SIGN_DATA: Final = 1024
"""Characters of base64 ``sign_data`` the service takes."""
MAX_ANSWER_BYTES: Final = 64 * 1024
APP_LINK: Final = "mobilemoica://moica.moi.gov.tw/a2a/verifySign"
SUCCESS: Final = "0"
REJECTED: Final = frozenset(
    {"APP_USER_CANCEL", "APP_SIGN_FAILURE", "IDNUM_USERPROF_NF", "IDNUM_DEVPROF_NF"}
)
TIMED_OUT: Final = frozenset({"SPTKT_OVD"})
BAD_ID: Final = frozenset({"PM_IDN_FT_ERR"})
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16


# -- the checksum ------------------------------------------------------------------------------


def checksum(key: bytes, *fields: str, iv: bytes | None = None) -> str:
    """``hex(IV ‖ AES-256-GCM_key(lowercase hex SHA-256 of the fields concatenated) ‖ tag)``."""
    digest = hashlib.sha256("".join(fields).encode("utf-8")).hexdigest()
    nonce = os.urandom(_IV_BYTES) if iv is None else iv
    return (nonce + AESGCM(key).encrypt(nonce, digest.encode("ascii"), None)).hex()


def checksum_matches(key: bytes, value: str, *fields: str) -> bool:
    """Whether ``value`` is a checksum of ``fields`` under ``key``, whatever its IV: decrypted
    (the tag authenticates it) and compared."""
    try:
        raw = bytes.fromhex(value)
    except (ValueError, TypeError):
        return False
    if len(raw) <= _IV_BYTES + _TAG_BYTES:
        return False
    try:
        plain = AESGCM(key).decrypt(raw[:_IV_BYTES], raw[_IV_BYTES:], None)
    except InvalidTag:
        return False
    expected = hashlib.sha256("".join(fields).encode("utf-8")).hexdigest()
    return plain == expected.encode("ascii")


# -- what the service answers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticket:
    """A started signing: the text of the QR code (``sp_ticket``), its id and transaction id
    (a poll repeats them), and when the person's time ends."""

    sp_ticket: str
    sp_ticket_id: str
    transaction_id: str
    deadline: datetime

    def app_link(self, return_url: str = "") -> str:
        """The app-to-app link a phone opens (``rtn_url`` only wakes the page up)."""
        link = f"{APP_LINK}?sp_ticket={quote(self.sp_ticket, safe='')}"
        return link + (f"&rtn_url={quote(return_url, safe='')}" if return_url else "")


@dataclass(frozen=True, slots=True)
class MobileSignature:
    """The phone's answer: the holder's certificate, the raw RSA PKCS#1 v1.5 SHA-256
    signature over the payload, and the service's opaque per-person ``hashed_id_num``."""

    certificate: bytes
    signature: bytes
    hashed_id_num: str


Post = Callable[[str, bytes, float], bytes]
"""``post(url, body, timeout) -> answer body``: the HTTP seam (tests may count the calls; the
real one is :func:`http_post`)."""


def http_post(url: str, body: bytes, timeout: float) -> bytes:
    """POST JSON; the answer's body, or ``mobile_id_unavailable`` for anything but a 200."""
    request = Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urlopen(request, timeout=timeout) as answer:
            if answer.status != 200:
                raise _unavailable(f"HTTP {answer.status}")
            data: bytes = answer.read(MAX_ANSWER_BYTES + 1)
    except (URLError, TimeoutError, OSError) as exc:
        raise _unavailable(type(exc).__name__) from None
    if len(data) > MAX_ANSWER_BYTES:
        raise _unavailable("answer too large")
    return data


# -- the client ----------------------------------------------------------------------------------


class TwFidoClient:
    """Talks to the TW FidO service for one SP (module docstring)."""

    def __init__(
        self,
        settings: TwFidoSettings,
        *,
        now: Callable[[], datetime],
        post: Post = http_post,
    ) -> None:
        self._settings = settings
        self._now = now
        self._post = post

    def __repr__(self) -> str:  # the key stays out of every repr and log
        return f"TwFidoClient({self._settings.url!r}, {self._settings.service_id!r})"

    @property
    def http_timeout(self) -> timedelta:
        """How long one question to the service may take."""
        return self._settings.http_timeout

    def start(
        self, id_num: str, payload: bytes, *, op_mode: str = "I-SCAN", time_limit: int | None = None
    ) -> Ticket:
        """getSpTicket for a SIGN of ``payload`` by the person ``id_num`` (``time_limit``:
        seconds on the phone, default the configured ones)."""
        return self._ticket("getSpTicket", id_num, payload, op_mode, time_limit)

    def push(self, id_num: str, payload: bytes, *, time_limit: int | None = None) -> Ticket:
        """requestAthOrSignPush: the same SIGN, sent to the person's bound device (no
        ``op_mode``; the checksum covers an empty one ❓, DOMAIN.md §4.6)."""
        return self._ticket("requestAthOrSignPush", id_num, payload, None, time_limit)

    def _ticket(
        self,
        operation: str,
        id_num: str,
        payload: bytes,
        op_mode: str | None,
        time_limit: int | None,
    ) -> Ticket:
        sign_data = _sign_data(payload)
        hint = self._settings.hint
        seconds = self._settings.time_limit if time_limit is None else time_limit
        tx = str(uuid.uuid4())
        service = self._settings.service_id
        mode = op_mode or ""
        fields: dict[str, Any] = {
            "transaction_id": tx,
            "sp_service_id": service,
            "sp_checksum": checksum(
                self._settings.key, tx, service, id_num, "SIGN", mode, hint, sign_data
            ),
            "id_num": id_num,
            "op_code": "SIGN",
            **({"op_mode": op_mode} if op_mode is not None else {}),
            "hint": hint,
            "time_limit": str(seconds),
            "sign_info": _sign_info(sign_data),
        }
        started = self._now()
        result = self._call(operation, fields)
        self._check_answer(tx, result, signed="")
        ticket = str(result.get("sp_ticket") or "")
        ticket_id = str(result.get("sp_ticket_id") or "")
        if not ticket_id or (op_mode is not None and not ticket):
            raise _unavailable("a ticket answer without a ticket")
        deadline = started + timedelta(seconds=seconds)
        return Ticket(ticket, ticket_id, tx, deadline)

    def poll(self, ticket: Ticket) -> MobileSignature | None:
        """getAthOrSignResult once: None while the phone has not answered, else the verified
        answer (its ``idp_checksum`` checked); past the deadline ``mobile_id_timeout``."""
        if self._now() > ticket.deadline:
            raise RefusedError(ErrorCode.MOBILE_ID_TIMEOUT)
        service = self._settings.service_id
        tx = ticket.transaction_id
        fields = {
            "transaction_id": tx,
            "sp_service_id": service,
            "sp_checksum": checksum(self._settings.key, tx, service, ticket.sp_ticket_id),
            "sp_ticket_id": ticket.sp_ticket_id,
        }
        answer = self._call("getAthOrSignResult", fields, pending_ok=True)
        if answer is None:
            return None
        return self._signature(tx, answer)

    def _signature(self, tx: str, answer: Mapping[str, Any]) -> MobileSignature:
        result = answer.get("result")
        if not isinstance(result, Mapping):
            raise _unavailable("a result without a result")
        signed = str(result.get("signed_response") or "")
        if not self._answer_matches(tx, result, signed=signed, required=True):
            raise CertificateError(ErrorCode.SIGNATURE_INVALID, detail="idp_checksum")
        try:
            certificate = base64.b64decode(str(result.get("cert") or ""), validate=True)
            signature = base64.b64decode(signed, validate=True)
        except (ValueError, binascii.Error):
            raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED) from None
        if not certificate or not signature:
            raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED)
        return MobileSignature(certificate, signature, str(result.get("hashed_id_num") or ""))

    def _check_answer(self, tx: str, result: Mapping[str, Any], *, signed: str) -> None:
        """A ticket answer's ``idp_checksum``, when it carries one (❓ whether the real service
        always does), must verify: ``signature_invalid`` otherwise."""
        if not self._answer_matches(tx, result, signed=signed, required=False):
            raise CertificateError(ErrorCode.SIGNATURE_INVALID, detail="idp_checksum")

    def _answer_matches(
        self, tx: str, result: Mapping[str, Any], *, signed: str, required: bool
    ) -> bool:
        """Whether the answer's ``idp_checksum`` covers tx + "0" + hashed_id_num + signed."""
        idp = str(result.get("idp_checksum") or "")
        if not idp:
            return not required
        hashed = str(result.get("hashed_id_num") or "")
        return checksum_matches(self._settings.key, idp, tx, SUCCESS, hashed, signed)

    def _call(self, operation: str, fields: Mapping[str, Any], *, pending_ok: bool = False) -> Any:
        url = f"{self._settings.url}{API_PATH}{operation}"
        body = json.dumps(fields, ensure_ascii=False).encode("utf-8")
        raw = self._post(url, body, self._settings.http_timeout.total_seconds())
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _unavailable("an answer that is not JSON") from None
        if not isinstance(answer, Mapping):
            raise _unavailable("an answer that is not an object")
        code = _code(answer)
        if code == SUCCESS:
            result = answer.get("result")
            if operation == "getAthOrSignResult":
                return answer
            return result if isinstance(result, Mapping) else {}
        if pending_ok and code in {c.rsplit("-", 1)[-1] for c in self._settings.pending_codes}:
            return None
        raise _refusal(operation, code)


def _code(answer: Mapping[str, Any]) -> str:
    """The answer's error code without its ``{interface}-`` prefix (``SP-API-ATH-02-20002`` →
    ``20002``): the codes themselves hold no hyphen."""
    return str(answer.get("error_code", "")).strip().rsplit("-", 1)[-1]


def _refusal(operation: str, code: str) -> Exception:
    if code in REJECTED:
        return RefusedError(ErrorCode.MOBILE_ID_REJECTED, detail=code)
    if code in TIMED_OUT:
        return RefusedError(ErrorCode.MOBILE_ID_TIMEOUT, detail=code)
    if code in BAD_ID:
        return RefusedError(ErrorCode.INVALID_NATIONAL_ID, field="national_id")
    log.warning("TW FidO %s refused: %s", operation, code[:80])
    return _unavailable(f"{operation}: {code[:80]}")


def _unavailable(detail: str) -> EnvironmentProblem:
    return EnvironmentProblem(ErrorCode.MOBILE_ID_UNAVAILABLE, detail=detail)


def _sign_data(payload: bytes) -> str:
    text = base64.b64encode(payload).decode("ascii")
    if len(text) > MAX_SIGN_DATA:
        raise RefusedError(ErrorCode.INVALID_VALUE, detail="sign_data over 1024 characters")
    return text


def _sign_info(sign_data: str) -> dict[str, str]:
    return {
        "sign_type": "PKCS#1",
        "tbs_encoding": "base64",
        "hash_algorithm": "SHA256",
        "sign_data": sign_data,
    }
