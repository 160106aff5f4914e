"""An emulator of Chunghwa Telecom's HiPKI Local Server (跨平台網頁元件) for tests and the demo.

**Test material only.** It serves, on 127.0.0.1 and a port of its own (the real component
listens on 61161), what DOMAIN.md §4.1 documents of the component, with cards made from
PKCS#12 files (:meth:`HiPKICard.from_pkcs12`; ``TestPKI.pkcs12_bytes`` makes them)::

    card = HiPKICard.from_pkcs12(TestPKI.pkcs12_bytes(issued, "123456"), "123456")
    with HiPKIEmulator([HiPKIReader("Reader A 00 00", card)], trusted_hosts=()) as hipki:
        hipki.url("/p11Image.bmp")        # http://127.0.0.1:PORT/p11Image.bmp

Endpoints (every JSON reply carries ``func``, ``ret_code`` and ``last_error``):

- ``GET /p11Image.bmp``: the ``/pkcs11info`` JSON (no certificates) written into the pixels of a
  one-row 24-bit BMP, file bytes in order, so that a canvas reader taking B, G, R of each pixel
  until a 0 gets the JSON back; padded with spaces to whole pixels, then a black pixel. It is the
  one reply with ``Access-Control-Allow-Origin: *`` (else no canvas could read it).
- ``GET|POST /pkcs11info[?withcert=true]``: readers as ``slots`` (``slotDescription``, ``token``:
  ``serialNumber``, and with ``withcert=true`` ``certs`` labelled ``Root CA Cert`` / ``CA Cert`` /
  ``cert1`` with ``usage``, ``certb64``, ``subjectDN``, ``issuerDN``, ``sn``, ``notBeforeT``,
  ``notAfterT``). A ``tbsPackage`` body naming a ``slotDescription`` keeps that reader only.
- ``POST /sign``: body ``tbsPackage=<JSON>``; ``MakeSignature`` with ``tbs``, ``tbsEncoding``
  (``NONE`` default, ``base64``), ``hashAlgorithm`` (SHA1/SHA256/SHA384/SHA512), ``signatureType``
  (``PKCS1``: RSA PKCS#1 v1.5, ECDSA DER for an EC card, over the hash of the tbs bytes; ``PKCS7``:
  CMS SignedData with the content and the signer's certificate; ``RAW``: base64 ``tbs`` is the
  hash), ``pin``, ``withCardSN``, ``slotDescription``. Reply ``func:"sign"``, ``version``,
  ``signature``, ``certb64``, ``cardSN``.
- ``GET /popupForm``: a single-use page that posts ``{"func":"getTbs"}`` to its opener, takes one
  package from it (``MakeSignature`` → /sign, ``GetUserCert`` → /pkcs11info?withcert=true,
  ``CheckEnvir`` → /pkcs11info), POSTs ``"tbsPackage=" + package`` (as received: the escaping is
  the opener's business), posts the raw reply back to the opener's origin and closes itself.
- ``GET /addDomain?domain=<host>``: a page asking to trust ``host`` (buttons ``#confirm`` and
  ``#cancel``, or answered at once by ``add_domain``); it answers its opener with
  ``{"func":"addDomain","ret_code":…}``. Until then every call from that host answers 0x76000031.

**Decoding** (``form_decoding``): ``"strict"`` reads the body as
``application/x-www-form-urlencoded`` (split on ``&``, ``+`` becomes a space, ``%XX`` decoded), as
CHT's own sample assumes when it ``encodeURIComponent``s ``tbs`` and ``pin``; an unescaped base64
``tbs`` holding ``+`` then fails with 0x76600002 (Base64解碼錯誤), and an unescaped ``&`` cuts the
package (0x7600000B). ``"lenient"`` only percent-decodes what follows ``tbsPackage=``. Either way a
package escaped with ``encodeURIComponent`` (or ``+`` → ``%2B``) decodes to the original — but a
control character so escaped (a newline in a ``NONE`` tbs) lands raw inside a JSON string, which
strict JSON refuses (0x7600000B) unless ``json_control_characters=True``.

**Sites.** The calling site is the host of ``Origin`` (else of ``Referer``); a request with
neither comes from a local program and is served (❓). The emulator's own pages forward their
opener's origin in :data:`OPENER_HEADER`, honoured only on requests whose ``Origin`` is the
emulator itself (another site cannot send it: a custom header needs a CORS preflight, which the
emulator never grants). ``trusted_hosts=None`` trusts every site; a collection trusts those
hosts (and those ``/addDomain`` adds); ``forbidden_hosts`` answer 0x7600000F (禁止存取的網域).

**Cards.** Wrong PINs count down ``tries_left``: ret_code 0x76100006 with ``last_error``
0x80000002 (two tries left), 0x80000001 (one), then 0xA4 (已鎖卡) — as signed 32-bit numbers
(-2147483646, -2147483647) or sign-extended to 64 bits (``last_error_bits=64``:
18446744071562067970, …969); other counts give 0xA0. A PIN outside ``pin_length`` gives 0xA2
without using a try; an empty one 0x76000998. No reader: 0x76100003; no card: 0x76000006;
a card certificate outside its validity (``check_validity``): 0x76500001 / 0x76500002.

**Failure switches**: ``absent=True`` listens on nothing (the port is free); ``hang=True`` accepts
connections and never answers (until :meth:`HiPKIEmulator.stop`). Switches and cards may be
changed while the emulator runs.

Written from DOMAIN.md §4.1 and these public clients of the component (read as reference,
nothing copied): zkmopro/zkID ``wallet-unit-poc/web/src/hipki-popup.ts`` (popupForm protocol and
its func → endpoint table), ``hipki-client.ts``, ``hipki-detector.ts``,
``wallet-unit-poc/ecdsa-spartan2/src/hipki_client.rs`` (form-encoded ``tbsPackage``, PKCS1 over
SHA-256) and ``tests/testdata/pkcs11info_test.json`` / ``response_sign_test.json`` (reply shapes);
public copies of CHT's HiPKI sample pages (makeSignature: ``encodeURIComponent`` of ``tbs`` and
``pin``, ``getTbs`` / ``sign`` messages; checkVersion: ``p11Image.bmp`` read from a canvas, the
``addDomain`` popup answering ``ret_code``; decryptData) and of CHT's ``errorcode.js``; a
government document-system wrapper of the HiCOS LocalSignServer (``+`` → ``%2B``, ``GetUserCert``
→ ``/pkcs11info?withcert=true``, ``RAW`` signatures of a base64 hash); a loan-system
``pkcs.js`` (``token`` ``null`` / ``"unknown token"``, negative major codes, minimum versions).
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import struct
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from http.server import BaseHTTPRequestHandler
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from engine.testing.loopback import LoopbackService

REAL_PORT: Final = 61161
"""Where the real component listens."""

OPENER_HEADER: Final = "X-HiPKI-Emulator-Opener"
"""How the emulator's own pages tell it which site opened them (emulator-internal)."""

FormDecoding = Literal["strict", "lenient"]
AddDomainAnswer = Literal["ask", "accept", "cancel"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class HiPKICode(IntEnum):
    """``ret_code`` values (CHT errorcode.js, DOMAIN.md §4.1) the emulator answers with."""

    OK = 0
    NO_TBS = 0x76000003  # 未輸入待簽訊息
    NO_CARD = 0x76000006  # 未插入IC卡
    JSON_ERROR = 0x7600000B  # JSON格式錯誤
    PARAMETER_ERROR = 0x7600000C  # 參數錯誤
    UNSUPPORTED_METHOD = 0x7600000E  # 不支援的方法
    FORBIDDEN_DOMAIN = 0x7600000F  # 禁止存取的網域
    UNTRUSTED_SITE = 0x76000031  # 非信任網站
    NO_PIN = 0x76000998  # 未輸入PIN碼
    CANCELLED = 0x76000999  # 使用者已取消動作
    NO_READER = 0x76100003  # 無可用讀卡機
    LOGIN_FAILED = 0x76100006  # IC卡登入失敗 (reason in last_error)
    SIGN_INIT_ERROR = 0x76300001  # 簽章初始錯誤
    SIGNATURE_TYPE_ERROR = 0x76300002  # 簽章型別錯誤
    SIGN_CONTENT_ERROR = 0x76300003  # 簽章內容錯誤
    NOT_YET_VALID = 0x76500001  # 憑證尚未生效
    EXPIRED = 0x76500002  # 憑證已逾期
    BASE64_DECODE_ERROR = 0x76600002  # Base64解碼錯誤


class HiPKIMinor(IntEnum):
    """``last_error`` values (CHT errorcode.js MinorErrorReason), as unsigned 32-bit numbers."""

    NONE = 0
    PIN_INCORRECT = 0xA0  # PIN碼錯誤
    PIN_LENGTH = 0xA2  # PIN碼長度錯誤
    PIN_LOCKED = 0xA4  # 已鎖卡
    ONE_TRY_LEFT = 0x80000001  # PIN碼錯誤，剩餘一次機會
    TWO_TRIES_LEFT = 0x80000002  # PIN碼錯誤，剩餘兩次機會


MESSAGES: Final[dict[int, str]] = {
    HiPKICode.NO_TBS: "未輸入待簽訊息",
    HiPKICode.NO_CARD: "未插入IC卡",
    HiPKICode.JSON_ERROR: "JSON格式錯誤",
    HiPKICode.PARAMETER_ERROR: "參數錯誤",
    HiPKICode.UNSUPPORTED_METHOD: "不支援的方法",
    HiPKICode.FORBIDDEN_DOMAIN: "禁止存取的網域",
    HiPKICode.UNTRUSTED_SITE: "非信任網站",
    HiPKICode.NO_PIN: "未輸入PIN碼",
    HiPKICode.CANCELLED: "使用者已取消動作",
    HiPKICode.NO_READER: "無可用讀卡機",
    HiPKICode.LOGIN_FAILED: "IC卡登入失敗",
    HiPKICode.SIGN_INIT_ERROR: "簽章初始錯誤",
    HiPKICode.SIGNATURE_TYPE_ERROR: "簽章型別錯誤",
    HiPKICode.SIGN_CONTENT_ERROR: "簽章內容錯誤",
    HiPKICode.NOT_YET_VALID: "憑證尚未生效",
    HiPKICode.EXPIRED: "憑證已逾期",
    HiPKICode.BASE64_DECODE_ERROR: "Base64解碼錯誤",
}

_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "SHA1": hashes.SHA1,
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
_HASH_BY_SIZE: Final[dict[int, Callable[[], hashes.HashAlgorithm]]] = {
    20: hashes.SHA1,
    32: hashes.SHA256,
    48: hashes.SHA384,
    64: hashes.SHA512,
}
_KEY_USAGES: Final = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)
_DN_NAMES: Final = {
    "2.5.4.6": "C",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "1.2.840.113549.1.9.1": "E",
}


@dataclass
class HiPKICard:
    """A card as the component sees it: the signing key and certificate, the CA certificates
    stored beside them, the PIN, the card number (``token.serialNumber``, ``cardSN``) and the
    PIN tries left (0: locked; a good PIN sets it back to ``max_tries``)."""

    key: PrivateKey
    certificate: x509.Certificate
    pin: str
    serial_number: str
    chain: tuple[x509.Certificate, ...] = ()
    tries_left: int = 3
    max_tries: int = 3

    @classmethod
    def from_pkcs12(
        cls,
        data: bytes,
        pin: str,
        *,
        password: str | None = None,
        serial_number: str | None = None,
        tries_left: int | None = None,
        max_tries: int = 3,
    ) -> HiPKICard:
        """A card from a PKCS#12 (opened with ``password``, default the PIN); its extra
        certificates become the card's CA certificates. The card number defaults to two
        letters and 14 digits taken from the certificate's serial (DOMAIN.md §1.5);
        ``tries_left`` to ``max_tries`` (0: a locked card)."""
        secret = (pin if password is None else password).encode("utf-8")
        key, certificate, extra = pkcs12.load_key_and_certificates(data, secret)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("the PKCS#12 holds no RSA or EC private key")
        if certificate is None:
            raise ValueError("the PKCS#12 holds no certificate")
        number = serial_number or f"TP{certificate.serial_number % 10**14:014d}"
        left = max_tries if tries_left is None else tries_left
        return cls(key, certificate, pin, number, tuple(extra), left, max_tries)

    @property
    def locked(self) -> bool:
        return self.tries_left <= 0


@dataclass
class HiPKIReader:
    """A card reader (a PKCS#11 slot): its name (``slotDescription``) and the card in it."""

    name: str
    card: HiPKICard | None = None


@dataclass(frozen=True)
class HiPKIRequest:
    """A request as the emulator received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Reply:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class HiPKIEmulator(LoopbackService):
    """The component with ``readers`` (a context manager; ``start``/``stop`` also work).

    ``port``: listen there (default a free port; :data:`REAL_PORT` is the real one).
    ``trusted_hosts`` / ``forbidden_hosts`` / ``add_domain``: the trusted-site list, see the
    module docstring. ``form_decoding``, ``json_control_characters``: how bodies are read.
    ``last_error_bits``: 32 (negative numbers) or 64 (sign-extended) for the "tries left" codes.
    ``empty_slot_token``: the ``token`` of a reader without a card (``None`` or
    ``"unknown token"``). ``pin_length``: the PIN lengths C_Login takes. ``check_validity``:
    refuse to sign with a certificate outside its validity at ``clock()``. ``image_cors``: the
    ``Access-Control-Allow-Origin: *`` of ``/p11Image.bmp``. ``absent`` / ``hang``: failures.
    Every request is recorded in :attr:`requests`; error replies also carry ``message``.
    """

    __test__ = False

    def __init__(
        self,
        readers: Sequence[HiPKIReader] = (),
        *,
        port: int | None = None,
        trusted_hosts: Iterable[str] | None = None,
        forbidden_hosts: Iterable[str] = (),
        form_decoding: FormDecoding = "strict",
        last_error_bits: Literal[32, 64] = 32,
        empty_slot_token: Literal["unknown token"] | None = None,
        add_domain: AddDomainAnswer = "ask",
        pin_length: tuple[int, int] = (6, 8),
        check_validity: bool = True,
        json_control_characters: bool = False,
        image_cors: bool = True,
        server_version: str = "1.3.4.9",
        absent: bool = False,
        hang: bool = False,
        clock: Callable[[], datetime] | None = None,
        hang_seconds: float = 300.0,
    ) -> None:
        self.readers: list[HiPKIReader] = list(readers)
        self.trusted_hosts: set[str] | None = None if trusted_hosts is None else set(trusted_hosts)
        self.forbidden_hosts = set(forbidden_hosts)
        self.form_decoding: FormDecoding = form_decoding
        self.last_error_bits = last_error_bits
        self.empty_slot_token = empty_slot_token
        self.add_domain = add_domain
        self.pin_length = pin_length
        self.check_validity = check_validity
        self.json_control_characters = json_control_characters
        self.image_cors = image_cors
        self.server_version = server_version
        self.hang = hang
        self.clock = clock or (lambda: datetime.now(UTC))
        self.hang_seconds = hang_seconds
        self.requests: list[HiPKIRequest] = []
        self._lock = threading.RLock()
        self._listen_on(port, absent=absent)

    # -- lifecycle -----------------------------------------------------------------------------

    def url(self, path: str = "", *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def origin(self) -> str:
        return self.url()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    # -- state -----------------------------------------------------------------------------------

    def trust(self, host: str) -> None:
        """Add ``host`` to the trusted sites (what a confirmed ``/addDomain`` does)."""
        with self._lock:
            if self.trusted_hosts is not None:
                self.trusted_hosts.add(host)

    def reader(self, name: str) -> HiPKIReader:
        for reader in self.readers:
            if reader.name == name:
                return reader
        raise KeyError(name)

    # -- endpoints ---------------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Reply:
        parsed = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        path = parsed.path
        if path == "/p11Image.bmp" and method == "GET":
            reply = self._pkcs11info(headers, b"", with_certs=False)
            cors = {"Access-Control-Allow-Origin": "*"} if self.image_cors else {}
            return _Reply(200, "image/bmp", info_image(_json_bytes(reply, ascii=True)), cors)
        if path == "/pkcs11info" and method in ("GET", "POST"):
            with_certs = query.get("withcert") == ["true"]
            return _json_reply(self._pkcs11info(headers, body, with_certs=with_certs))
        if path == "/sign" and method == "POST":
            return _json_reply(self._sign(headers, body))
        if path == "/popupForm" and method == "GET":
            return _Reply(200, "text/html; charset=utf-8", _POPUP_PAGE.encode("utf-8"))
        if path == "/addDomain" and method == "GET":
            domain = query.get("domain", [""])[0]
            return _Reply(200, "text/html; charset=utf-8", self._add_domain_page(domain))
        if path == "/addDomain" and method == "POST":
            return _json_reply(self._add_domain_answer(headers, body))
        if path in ("/p11Image.bmp", "/pkcs11info", "/sign", "/popupForm", "/addDomain"):
            return _Reply(405, "text/plain", b"method not allowed")
        return _Reply(404, "text/plain", b"not found")

    def _site_refusal(self, headers: dict[str, str]) -> HiPKICode | None:
        """0x7600000F or 0x76000031 for a forbidden or untrusted calling site, else ``None``."""
        host = self._calling_host(headers)
        if host is None:
            return None
        with self._lock:
            if host in self.forbidden_hosts:
                return HiPKICode.FORBIDDEN_DOMAIN
            if self.trusted_hosts is not None and host not in self.trusted_hosts:
                return HiPKICode.UNTRUSTED_SITE
        return None

    def _calling_host(self, headers: dict[str, str]) -> str | None:
        origin = _header(headers, "Origin") or _origin_of(_header(headers, "Referer"))
        if origin is None:
            return None  # a local program, not a web page ❓
        if self._is_own(origin):
            return _host_of(_header(headers, OPENER_HEADER))
        return _host_of(origin) or "null"

    def _is_own(self, origin: str) -> bool:
        parts = urllib.parse.urlsplit(origin)
        own_host = parts.hostname in ("127.0.0.1", "localhost")
        return parts.scheme == "http" and own_host and parts.port == self.port

    def _pkcs11info(
        self, headers: dict[str, str], body: bytes, *, with_certs: bool
    ) -> dict[str, Any]:
        refusal = self._site_refusal(headers)
        if refusal is not None:
            return self._error("pkcs11info", refusal)
        only: str | None = None
        if body.strip():
            package = self._package(body)
            if not isinstance(package, dict):
                return self._error("pkcs11info", package)
            if package.get("func", "GetUserCert") not in ("GetUserCert", "CheckEnvir"):
                return self._error("pkcs11info", HiPKICode.UNSUPPORTED_METHOD)
            slot = package.get("slotDescription")
            only = slot if isinstance(slot, str) and slot else None
        with self._lock:
            slots = [
                {"slotDescription": reader.name, "token": self._token(reader, with_certs)}
                for reader in self.readers
                if only is None or reader.name == only
            ]
        return {
            "func": "pkcs11info",
            "ret_code": 0,
            "last_error": 0,
            "serverVersion": self.server_version,
            "version": self.server_version,
            "libraryDescription": "swreg TEST HiCOS PKCS#11 emulator (測試用)",
            "libraryVersion": "1.0",
            "manufacturerID": "swreg TEST (測試用)",
            "cryptokiVersion": "2.20",
            "flags": 0,
            "installedModule": "swreg TEST HiPKI emulator",
            "slots": slots,
        }

    def _token(self, reader: HiPKIReader, with_certs: bool) -> dict[str, Any] | str | None:
        card = reader.card
        if card is None:
            return self.empty_slot_token
        token: dict[str, Any] = {
            "label": "HiCOS",
            "manufacturerID": "swreg TEST (測試用)",
            "model": "emulated card",
            "serialNumber": card.serial_number,
            "flags": 0x40D,  # CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | ...
        }
        if with_certs:
            token["certs"] = [_cert_entry(c, _ca_label(c)) for c in reversed(card.chain)] + [
                _cert_entry(card.certificate, "cert1")
            ]
        return token

    def _sign(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        refusal = self._site_refusal(headers)
        if refusal is not None:
            return self._error("sign", refusal)
        package = self._package(body)
        if not isinstance(package, dict):
            return self._error("sign", package)
        if package.get("func") != "MakeSignature":
            return self._error("sign", HiPKICode.UNSUPPORTED_METHOD)
        request = _SignRequest.read(package)
        if isinstance(request, HiPKICode):
            return self._error("sign", request)
        with self._lock:
            reader = self._signing_reader(request.slot)
            if isinstance(reader, HiPKICode):
                return self._error("sign", reader)
            card = reader.card
            assert card is not None
            login = self._login(card, request.pin)
            if login is not None:
                return self._error("sign", HiPKICode.LOGIN_FAILED, login)
            validity = self._validity(card.certificate)
            if validity is not None:
                return self._error("sign", validity)
            signature = _signature(card, request)
            if isinstance(signature, HiPKICode):
                return self._error("sign", signature)
            reply: dict[str, Any] = {
                "func": "sign",
                "version": self.server_version,
                "ret_code": 0,
                "last_error": 0,
                "signature": base64.b64encode(signature).decode("ascii"),
                "certb64": _b64_der(card.certificate),
            }
            if request.with_card_sn:
                reply["cardSN"] = card.serial_number
            return reply

    def _signing_reader(self, slot: str | None) -> HiPKIReader | HiPKICode:
        if not self.readers:
            return HiPKICode.NO_READER
        if slot is not None:
            named = [reader for reader in self.readers if reader.name == slot]
            if not named:
                return HiPKICode.PARAMETER_ERROR  # ❓ a reader that is not there
            return named[0] if named[0].card is not None else HiPKICode.NO_CARD
        for reader in self.readers:
            if reader.card is not None:
                return reader
        return HiPKICode.NO_CARD

    def _login(self, card: HiPKICard, pin: str) -> int | None:
        """C_Login: ``None``, or the ``last_error`` (unsigned) of a refusal."""
        if card.locked:
            return HiPKIMinor.PIN_LOCKED
        shortest, longest = self.pin_length
        if not shortest <= len(pin) <= longest:
            return HiPKIMinor.PIN_LENGTH
        if pin == card.pin:
            card.tries_left = card.max_tries  # a good PIN resets the counter, as cards do
            return None
        card.tries_left -= 1
        if card.tries_left <= 0:
            return HiPKIMinor.PIN_LOCKED
        return {
            2: HiPKIMinor.TWO_TRIES_LEFT,
            1: HiPKIMinor.ONE_TRY_LEFT,
        }.get(card.tries_left, HiPKIMinor.PIN_INCORRECT)

    def _validity(self, certificate: x509.Certificate) -> HiPKICode | None:
        if not self.check_validity:
            return None
        now = self.clock()
        if now < certificate.not_valid_before_utc:
            return HiPKICode.NOT_YET_VALID
        if now > certificate.not_valid_after_utc:
            return HiPKICode.EXPIRED
        return None

    def _package(self, body: bytes) -> dict[str, Any] | HiPKICode:
        """The ``tbsPackage`` JSON of a body, decoded as ``form_decoding`` says."""
        prefix = "tbsPackage="
        try:
            text = body.decode("utf-8")
            if self.form_decoding == "strict":
                fields = urllib.parse.parse_qs(text, keep_blank_values=True, errors="strict")
                raw = fields.get("tbsPackage", [""])[0]
            else:
                lead, _, rest = text.partition(prefix)
                raw = urllib.parse.unquote(rest, errors="strict") if lead == "" else ""
            package = json.loads(raw, strict=not self.json_control_characters)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return HiPKICode.JSON_ERROR
        return package if isinstance(package, dict) else HiPKICode.JSON_ERROR

    def _error(self, func: str, code: HiPKICode, minor: int = 0) -> dict[str, Any]:
        reply: dict[str, Any] = {"func": func}
        if func == "sign":
            reply["version"] = self.server_version
        reply["ret_code"] = int(code)
        reply["last_error"] = self._minor(minor)
        reply["message"] = MESSAGES.get(code, "")
        return reply

    def _minor(self, value: int) -> int:
        """``last_error`` as the component writes it: negative when bit 31 is set (32-bit), or
        sign-extended to an unsigned 64-bit number."""
        if value < 0x80000000:
            return value
        if self.last_error_bits == 64:
            return value | 0xFFFFFFFF00000000
        return value - 0x100000000

    # -- addDomain -----------------------------------------------------------------------------

    def _add_domain_page(self, domain: str) -> bytes:
        answer = {"ask": "", "accept": "yes", "cancel": "no"}[self.add_domain]
        page = _ADD_DOMAIN_PAGE.replace("__DOMAIN_TEXT__", html.escape(domain))
        page = page.replace("__DOMAIN_JSON__", _script_json(domain))
        return page.replace("__AUTO_JSON__", _script_json(answer)).encode("utf-8")

    def _add_domain_answer(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        origin = _header(headers, "Origin")
        if origin is None or not self._is_own(origin):
            return self._error("addDomain", HiPKICode.FORBIDDEN_DOMAIN)
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        domain = fields.get("domain", [""])[0]
        if fields.get("answer") != ["yes"]:
            return self._error("addDomain", HiPKICode.CANCELLED)
        if not _valid_host(domain):
            return self._error("addDomain", HiPKICode.PARAMETER_ERROR)
        if domain in self.forbidden_hosts:
            return self._error("addDomain", HiPKICode.FORBIDDEN_DOMAIN)
        self.trust(domain)
        return {"func": "addDomain", "ret_code": 0, "last_error": 0}


@dataclass(frozen=True)
class _SignRequest:
    data: bytes
    encoding: str
    hash_name: str | None
    signature_type: str
    pin: str
    with_card_sn: bool
    slot: str | None

    @classmethod
    def read(cls, package: dict[str, Any]) -> _SignRequest | HiPKICode:
        tbs = package.get("tbs")
        if not isinstance(tbs, str) or not tbs:
            return HiPKICode.NO_TBS
        encoding = package.get("tbsEncoding", "NONE")
        if encoding not in ("NONE", "base64"):
            return HiPKICode.PARAMETER_ERROR
        signature_type = package.get("signatureType")
        if signature_type not in ("PKCS1", "PKCS7", "RAW"):
            return HiPKICode.SIGNATURE_TYPE_ERROR
        hash_name = package.get("hashAlgorithm")
        if signature_type == "RAW":
            if encoding != "base64":
                return HiPKICode.PARAMETER_ERROR  # ❓ a RAW hash must come in base64
        elif hash_name not in _HASHES:
            return HiPKICode.PARAMETER_ERROR
        slot = package.get("slotDescription")
        pin = package.get("pin")
        if slot is not None and not isinstance(slot, str):
            return HiPKICode.PARAMETER_ERROR
        if pin is not None and not isinstance(pin, str):
            return HiPKICode.PARAMETER_ERROR
        if encoding == "base64":
            try:
                data = base64.b64decode(tbs, validate=True)
            except binascii.Error:
                return HiPKICode.BASE64_DECODE_ERROR
        else:
            data = tbs.encode("utf-8")  # ❓ the bytes of a NONE string
        if not pin:
            return HiPKICode.NO_PIN
        return cls(
            data,
            encoding,
            hash_name if isinstance(hash_name, str) else None,
            signature_type,
            pin,
            package.get("withCardSN") == "true",
            slot or None,
        )


def _signature(card: HiPKICard, request: _SignRequest) -> bytes | HiPKICode:
    key = card.key
    if request.signature_type == "RAW":
        algorithm = _HASH_BY_SIZE.get(len(request.data))
        if algorithm is None:
            return HiPKICode.SIGN_CONTENT_ERROR
        prehashed = utils.Prehashed(algorithm())
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(request.data, padding.PKCS1v15(), prehashed)
        return key.sign(request.data, ec.ECDSA(prehashed))
    assert request.hash_name is not None
    algorithm_instance = _HASHES[request.hash_name]()
    if request.signature_type == "PKCS1":
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(request.data, padding.PKCS1v15(), algorithm_instance)
        return key.sign(request.data, ec.ECDSA(algorithm_instance))
    if isinstance(algorithm_instance, hashes.SHA1):
        return HiPKICode.SIGN_INIT_ERROR  # cryptography's CMS builder has no SHA-1
    builder = pkcs7.PKCS7SignatureBuilder().set_data(request.data)
    builder = builder.add_signer(card.certificate, key, algorithm_instance)  # type: ignore[arg-type]
    return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


# -- the image ---------------------------------------------------------------------------------


def info_image(payload: bytes) -> bytes:
    """A one-row 24-bit BMP whose pixel bytes are ``payload`` (padded with spaces to whole
    pixels) followed by a black pixel: what ``/p11Image.bmp`` serves."""
    if b"\0" in payload:
        raise ValueError("the payload cannot hold a NUL byte")
    pixels = payload + b" " * (-len(payload) % 3) + b"\0\0\0"
    width = len(pixels) // 3
    row = pixels + b"\0" * (-len(pixels) % 4)
    header = struct.pack("<2sIHHI", b"BM", 54 + len(row), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, 1, 1, 24, 0, len(row), 2835, 2835, 0, 0)
    return header + info + row


# -- helpers -------------------------------------------------------------------------------------


def _handler(emulator: HiPKIEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._serve(self.rfile.read(length))

        def _serve(self, body: bytes) -> None:
            headers = dict(self.headers.items())
            emulator.requests.append(HiPKIRequest(self.command, self.path, headers, body))
            if emulator.hang:
                emulator._released.wait(emulator.hang_seconds)
                self.close_connection = True
                return
            reply = emulator._dispatch(self.command, self.path, headers, body)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

    return Handler


def _json_bytes(reply: dict[str, Any], *, ascii: bool = False) -> bytes:
    return json.dumps(reply, ensure_ascii=ascii, separators=(",", ":")).encode("utf-8")


def _json_reply(reply: dict[str, Any]) -> _Reply:
    return _Reply(200, "application/json; charset=utf-8", _json_bytes(reply))


def _script_json(value: str) -> str:
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def _header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def _host_of(origin: str | None) -> str | None:
    if not origin:
        return None
    return urllib.parse.urlsplit(origin).hostname


def _valid_host(domain: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-:[]")
    return 0 < len(domain) <= 253 and set(domain.lower()) <= allowed


def _b64_der(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _dn(name: x509.Name) -> str:
    parts = []
    for attribute in name:
        dotted = attribute.oid.dotted_string
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        parts.append(f"{_DN_NAMES.get(dotted, dotted)}={value}")
    return ",".join(parts)


def _usage(certificate: x509.Certificate) -> str:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ""
    return "|".join(name for attribute, name in _KEY_USAGES if getattr(usage, attribute))


def _ca_label(certificate: x509.Certificate) -> str:
    return "Root CA Cert" if certificate.issuer == certificate.subject else "CA Cert"


def _cert_entry(certificate: x509.Certificate, label: str) -> dict[str, Any]:
    return {
        "label": label,
        "usage": _usage(certificate),
        "certb64": _b64_der(certificate),
        "subjectDN": _dn(certificate.subject),
        "issuerDN": _dn(certificate.issuer),
        "sn": f"{certificate.serial_number:X}",
        "notBeforeT": int(certificate.not_valid_before_utc.timestamp()),
        "notAfterT": int(certificate.not_valid_after_utc.timestamp()),
    }


_POPUP_PAGE: Final = """<!DOCTYPE html>
<html lang="zh-Hant"><head><meta charset="utf-8"><title>HiPKI (swreg TEST emulator)</title></head>
<body><p>HiPKI 元件處理中… (swreg TEST emulator, 測試用)</p>
<script>
(function () {
  var used = false;
  var routes = {MakeSignature: "/sign", GetUserCert: "/pkcs11info?withcert=true",
                CheckEnvir: "/pkcs11info"};
  window.addEventListener("message", function (event) {
    if (used || !window.opener || event.source !== window.opener) return;
    if (typeof event.data !== "string") return;
    used = true;
    var func = null;
    try { func = JSON.parse(event.data).func; } catch (e) { func = null; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", routes[func] || "/sign");
    xhr.setRequestHeader("Content-Type", "application/x-www-form-urlencoded");
    xhr.setRequestHeader("X-HiPKI-Emulator-Opener", event.origin);
    xhr.onloadend = function () {
      if (xhr.status === 200) window.opener.postMessage(xhr.responseText, event.origin);
      window.close();
    };
    xhr.send("tbsPackage=" + event.data);
  });
  if (window.opener) window.opener.postMessage(JSON.stringify({func: "getTbs"}), "*");
})();
</script></body></html>
"""

_ADD_DOMAIN_PAGE: Final = """<!DOCTYPE html>
<html lang="zh-Hant"><head><meta charset="utf-8"><title>加入信任網站 (swreg TEST emulator)</title>
</head><body>
<p>是否將 <b id="domain">__DOMAIN_TEXT__</b> 加入 HiPKI 元件的信任網站？</p>
<p>(swreg TEST emulator, 測試用)</p>
<button id="confirm" type="button">加入</button> <button id="cancel" type="button">取消</button>
<script>
(function () {
  var domain = __DOMAIN_JSON__, auto = __AUTO_JSON__, done = false;
  function answer(yes) {
    if (done) return;
    done = true;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/addDomain");
    xhr.setRequestHeader("Content-Type", "application/x-www-form-urlencoded");
    xhr.onloadend = function () {
      if (window.opener && xhr.status === 200) window.opener.postMessage(xhr.responseText, "*");
      window.close();
    };
    xhr.send("domain=" + encodeURIComponent(domain) + "&answer=" + (yes ? "yes" : "no"));
  }
  document.getElementById("confirm").addEventListener("click", function () { answer(true); });
  document.getElementById("cancel").addEventListener("click", function () { answer(false); });
  if (auto) answer(auto === "yes");
})();
</script></body></html>
"""
