"""A virtual PIV card (NIST SP 800-73-4 part 2), pure Python and ``cryptography``.

**Test and demo material.** The card answers what real PIV software sends (OpenSC and
:class:`readers.profiles.piv.PivCard` alike; RECIPES.md §5):

- SELECT ``00 A4 04 00 Lc AID``: any right-truncated prefix of the PIV AID; answers the
  Application Property Template. Foreign AIDs get ``6A82`` and leave PIV selected.
- VERIFY ``00 20 00 80 08 PIN‖FF…``: ``9000`` / ``63Cx`` / ``6983``; empty: the status;
  ``00 20 FF 80``: forget the verification.
- GET DATA ``00 CB 3F FF 05 5C 03 5F C1 xx``: certificates (``5FC105`` slot 9A, ``5FC10A``
  slot 9C), CHUID ``5FC102``, discovery ``7E``; other objects ``6A82``.
- GENERAL AUTHENTICATE ``00 87 alg key 7C {82 00 81 L c}``: raw RSA (alg 06/07) or prehashed
  ECDSA (alg 11/14); needs a verified PIN (``6982``).
- GET RESPONSE ``00 C0 00 00 Le`` after ``61xx``.

Nothing is selected at power-on: until PIV is SELECTed, GET DATA (``7E`` included), VERIFY
and GENERAL AUTHENTICATE answer ``6985``. OpenSC reads ``7E`` to learn whether PIV is
*already* the active application and SELECTs only when that fails, so a card answering ``7E``
unselected would have every later read refused.

Responses honour Le (short or extended): longer data is cut and the rest announced with
``61xx``. Command chaining (CLA ``10``) carries long input. A missing Le is read as 256.

The retry counter lives in a :class:`RetryState`, which can persist to a JSON file, so a card
served by a process keeps it across restarts; :meth:`PivApplet.reset` (power off/on) forgets
selection and verification, never the counter. The PIN is held only as a SHA-256 digest of its
padded form, and nothing here logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import NameOID

from .._transport import (
    SW_AUTH_METHOD_BLOCKED,
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_NOT_FOUND,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    SW_SECURITY_NOT_SATISFIED,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    Command,
    Response,
)

__all__ = [
    "ALG_ECC_P256",
    "ALG_ECC_P384",
    "ALG_RSA_1024",
    "ALG_RSA_2048",
    "KEY_PIV_AUTHENTICATION",
    "KEY_SIGNATURE",
    "OBJECT_CERT_9A",
    "OBJECT_CERT_9C",
    "OBJECT_CHUID",
    "OBJECT_DISCOVERY",
    "PIV_AID",
    "PIV_ATR",
    "PivApplet",
    "RetryState",
]

PIV_AID = bytes.fromhex("A000000308000010000100")
"""NIST RID ``A000000308`` ‖ PIX ``000010000100`` (PIV application, version 1.0)."""
_PIV_RID = PIV_AID[:5]
_PIV_PIX = PIV_AID[5:]

_HISTORICAL = b"SWREG-PIV1"


def _atr(historical: bytes) -> bytes:
    """``3B 8K 01 <historical> TCK``: T=1 only, TCK the XOR of T0 … the last historical byte."""
    body = bytes((0x80 | len(historical), 0x01)) + historical
    check = 0
    for byte in body:
        check ^= byte
    return b"\x3b" + body + bytes((check,))


PIV_ATR = _atr(_HISTORICAL)
"""``3B 8A 01 "SWREG-PIV1" TCK``: T=1 only (so pcscd picks T=1 and extended APDUs work)."""

KEY_PIV_AUTHENTICATION = 0x9A
KEY_SIGNATURE = 0x9C
OBJECT_CHUID = 0x5FC102
OBJECT_CERT_9A = 0x5FC105
OBJECT_CERT_9C = 0x5FC10A
OBJECT_DISCOVERY = 0x7E
ALG_RSA_1024 = 0x06
ALG_RSA_2048 = 0x07
ALG_ECC_P256 = 0x11
ALG_ECC_P384 = 0x14

_CERT_OBJECTS = {KEY_PIV_AUTHENTICATION: OBJECT_CERT_9A, KEY_SIGNATURE: OBJECT_CERT_9C}
_PIN_REFERENCE = 0x80
_PIN_PAD = 0xFF
_PIN_BLOCK = 8
_MAX_TRIES = 15  # the x of 63Cx is one nibble
_MAX_CHAINED = 4096

_INS_SELECT = 0xA4
_INS_VERIFY = 0x20
_INS_GET_DATA = 0xCB
_INS_GET_RESPONSE = 0xC0
_INS_GENERAL_AUTHENTICATE = 0x87
_CLA_CHAINING = 0x10

_SW_REFERENCE_NOT_FOUND = 0x6A88

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyType = Literal["rsa", "ec"]


# -- BER-TLV (the card side's own, kept apart from the host's on purpose) -------------------------


def _tlv(tag: int, value: bytes) -> bytes:
    """One BER-TLV: ``tag`` as its big-endian bytes, the definite length, ``value``."""
    tag_bytes = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    size = len(value)
    if size < 0x80:
        length = bytes((size,))
    elif size < 0x100:
        length = bytes((0x81, size))
    else:
        length = b"\x82" + size.to_bytes(2, "big")
    return tag_bytes + length + value


def _read_tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """``(tag, value, next offset)`` of the TLV at ``offset``; ``ValueError`` when malformed."""
    end = len(data)
    if offset >= end:
        raise ValueError("TLV expected")
    start = offset
    offset += 1
    if data[start] & 0x1F == 0x1F:
        while offset < end and data[offset] & 0x80:
            offset += 1
        offset += 1
    tag = int.from_bytes(data[start:offset], "big")
    if offset >= end:
        raise ValueError("TLV length missing")
    first = data[offset]
    offset += 1
    if first < 0x80:
        size = first
    elif first in (0x81, 0x82):
        count = first & 0x7F
        size = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    else:
        raise ValueError("unsupported TLV length")
    if offset + size > end:
        raise ValueError("TLV value runs past the data")
    return tag, data[offset : offset + size], offset + size


def _parse_tlvs(data: bytes) -> dict[int, bytes]:
    """The TLVs of ``data`` by tag (the last wins); ``ValueError`` when malformed."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        tag, value, offset = _read_tlv(data, offset)
        fields[tag] = value
    return fields


# -- the retry counter ----------------------------------------------------------------------------


class RetryState:
    """The PIN retry counter of one card: ``tries_left`` of ``max_tries`` (3 of 3 by default).

    In memory unless made with :meth:`file`, which persists every change to a JSON file. At zero
    the PIN is blocked for good (this card has no PUK).
    """

    def __init__(
        self, tries_left: int | None = None, *, max_tries: int = 3, path: Path | None = None
    ) -> None:
        if not 1 <= max_tries <= _MAX_TRIES:
            raise ValueError(f"max_tries must be 1–{_MAX_TRIES}")
        left = max_tries if tries_left is None else tries_left
        if not 0 <= left <= max_tries:
            raise ValueError("tries_left must be between 0 and max_tries")
        self.max_tries = max_tries
        self._tries_left = left
        self.path = path

    @classmethod
    def file(cls, path: str | os.PathLike[str], *, max_tries: int = 3) -> RetryState:
        """The counter kept in ``path``: loaded when the file exists, created full otherwise."""
        target = Path(path)
        if not target.exists():
            state = cls(max_tries=max_tries, path=target)
            state._save()
            return state
        try:
            stored = json.loads(target.read_text(encoding="utf-8"))
            return cls(int(stored["tries_left"]), max_tries=int(stored["max_tries"]), path=target)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{target} is not a retry-counter file") from exc

    @property
    def tries_left(self) -> int:
        return self._tries_left

    @property
    def blocked(self) -> bool:
        return self._tries_left == 0

    def record_failure(self) -> int:
        """Count a wrong PIN; returns the tries left."""
        self._tries_left = max(0, self._tries_left - 1)
        self._save()
        return self._tries_left

    def record_success(self) -> None:
        """A right PIN refills the counter (unless already blocked)."""
        if not self.blocked and self._tries_left != self.max_tries:
            self._tries_left = self.max_tries
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        payload = {"tries_left": self._tries_left, "max_tries": self.max_tries}
        temporary.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(temporary, self.path)

    def __repr__(self) -> str:
        where = "" if self.path is None else f" file={str(self.path)!r}"
        return f"<RetryState {self._tries_left}/{self.max_tries}{where}>"


# -- keys -----------------------------------------------------------------------------------------


class _Refused(Exception):
    """A handler's way to answer with a status word and no data."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"SW {sw:04X}")
        self.sw = sw


@dataclass(frozen=True, slots=True)
class _KeySlot:
    """A private key in a PIV key reference, with the algorithm identifier it answers to."""

    key: PrivateKey
    algorithm: int

    @classmethod
    def of(cls, key: PrivateKey) -> _KeySlot:
        return cls(key, _algorithm_of(key))

    def sign(self, challenge: bytes) -> bytes:
        """The GENERAL AUTHENTICATE response to ``challenge``; ``6A80`` when it does not fit."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return _rsa_raw(self.key, challenge)
        size = (self.key.curve.key_size + 7) // 8
        if len(challenge) != size:
            raise _Refused(SW_WRONG_DATA)
        digest_algorithm = hashes.SHA256() if size == 32 else hashes.SHA384()
        return self.key.sign(challenge, ec.ECDSA(utils.Prehashed(digest_algorithm)))


def _algorithm_of(key: PrivateKey) -> int:
    """The SP 800-78 algorithm identifier of ``key``; ``ValueError`` for other keys."""
    if isinstance(key, rsa.RSAPrivateKey):
        algorithms = {1024: ALG_RSA_1024, 2048: ALG_RSA_2048}
        if key.key_size in algorithms:
            return algorithms[key.key_size]
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        curves = {"secp256r1": ALG_ECC_P256, "secp384r1": ALG_ECC_P384}
        if key.curve.name in curves:
            return curves[key.curve.name]
    raise ValueError("a PIV card holds RSA-1024/2048 or ECC P-256/P-384 keys")


def _rsa_raw(key: rsa.RSAPrivateKey, block: bytes) -> bytes:
    """``block^d mod n`` with the CRT (the card pads nothing: the host sent the padded block)."""
    numbers = key.private_numbers()
    public = numbers.public_numbers
    size = (public.n.bit_length() + 7) // 8
    value = int.from_bytes(block, "big")
    if len(block) != size or value >= public.n:
        raise _Refused(SW_WRONG_DATA)
    m1 = pow(value, numbers.dmp1, numbers.p)
    m2 = pow(value, numbers.dmq1, numbers.q)
    h = (numbers.iqmp * (m1 - m2)) % numbers.p
    return (m2 + h * numbers.q).to_bytes(size, "big")


# -- the card -------------------------------------------------------------------------------------


def _pin_block(pin: str) -> bytes:
    """The 8-byte VERIFY data of ``pin``; ``ValueError`` unless 6–8 printable ASCII characters."""
    if not 6 <= len(pin) <= _PIN_BLOCK or not all(" " < c <= "~" for c in pin):
        raise ValueError("a PIV PIN is 6–8 printable ASCII characters")
    return pin.encode("ascii").ljust(_PIN_BLOCK, bytes((_PIN_PAD,)))


def _certificate_object(certificate: x509.Certificate) -> bytes:
    """``53 { 70 cert, 71 00 (not compressed), FE (no error detection code) }``."""
    der = certificate.public_bytes(Encoding.DER)
    return _tlv(0x53, _tlv(0x70, der) + _tlv(0x71, b"\x00") + _tlv(0xFE, b""))


def _chuid(guid: bytes) -> bytes:
    """A minimal CHUID: a FASC-N of "no agency", the card's GUID, an expiry, no signature."""
    fascn = bytes.fromhex("D4E739DA739CED39CE739D836858210842108421C84210C3EB")
    expiry = b"20991231"
    body = _tlv(0x30, fascn) + _tlv(0x34, guid) + _tlv(0x35, expiry) + _tlv(0x3E, b"")
    return _tlv(0x53, body + _tlv(0xFE, b""))


def _discovery() -> bytes:
    """``7E { 4F PIV AID, 5F2F 40 00 }``: the PIV PIN is the only PIN and satisfies the policy."""
    return _tlv(0x7E, _tlv(0x4F, PIV_AID) + _tlv(0x5F2F, b"\x40\x00"))


def _property_template() -> bytes:
    """The SELECT answer: ``61 { 4F PIX, 79 { 4F RID }, 50 label }``."""
    label = _tlv(0x50, b"swreg virtual PIV")
    return _tlv(0x61, _tlv(0x4F, _PIV_PIX) + _tlv(0x79, _tlv(0x4F, _PIV_RID)) + label)


def _self_signed(key: PrivateKey, subject_cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    now = datetime.now(UTC).replace(microsecond=0)
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )


def _status(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class PivApplet:
    """A PIV card holding one key and certificate in slots 9C (signature) and 9A (authentication).

    ``pin`` is 6–8 printable ASCII characters. ``state`` is the retry counter (a fresh 3-of-3
    in-memory one by default; pass :meth:`RetryState.file` to keep it across processes).
    ``slots`` chooses the key references that hold the key (both by default).
    """

    atr: bytes = PIV_ATR

    def __init__(
        self,
        key: PrivateKey,
        certificate: x509.Certificate,
        *,
        pin: str,
        state: RetryState | None = None,
        slots: Iterable[int] = (KEY_SIGNATURE, KEY_PIV_AUTHENTICATION),
    ) -> None:
        if certificate.public_key() != key.public_key():
            raise ValueError("the certificate does not belong to the key")
        self._pin_digest = hashlib.sha256(_pin_block(pin)).digest()
        self.state = state if state is not None else RetryState()
        self.certificate = certificate
        self._keys: dict[int, _KeySlot] = {}
        self._objects: dict[int, bytes] = {OBJECT_CHUID: _chuid(secrets.token_bytes(16))}
        for slot in slots:
            if slot not in _CERT_OBJECTS:
                raise ValueError(f"slot {slot:02X} is not 9A or 9C")
            self._keys[slot] = _KeySlot.of(key)
            self._objects[_CERT_OBJECTS[slot]] = _certificate_object(certificate)
        self._selected = False
        self._verified = False
        self._pending = b""
        self._chain: tuple[tuple[int, int, int], bytes] | None = None

    @classmethod
    def from_pkcs12(
        cls,
        data: bytes,
        password: str,
        *,
        pin: str | None = None,
        state: RetryState | None = None,
    ) -> Self:
        """The key and certificate of a PKCS#12; the PIN is ``pin``, or else ``password``.

        Raises ``ValueError`` for a wrong password, a file without key or certificate, a key
        PIV cannot hold, or a PIN that is not 6–8 printable ASCII characters.
        """
        p12 = pkcs12.load_pkcs12(data, password.encode("utf-8") or None)
        if p12.cert is None or p12.key is None:
            raise ValueError("the PKCS#12 holds no key or no certificate")
        key = p12.key
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("a PIV card holds RSA or EC keys")
        return cls(key, p12.cert.certificate, pin=password if pin is None else pin, state=state)

    @classmethod
    def generate(
        cls,
        key_type: KeyType = "ec",
        *,
        subject_cn: str = "swreg TEST virtual PIV card",
        pin: str = "123456",
        state: RetryState | None = None,
    ) -> Self:
        """A throwaway card: a new RSA-2048 or P-256 key and a self-signed certificate."""
        key: PrivateKey
        if key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif key_type == "ec":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"key type must be 'rsa' or 'ec', not {key_type!r}")
        return cls(key, _self_signed(key, subject_cn), pin=pin, state=state)

    @property
    def selected(self) -> bool:
        """Whether the PIV application is selected."""
        return self._selected

    @property
    def verified(self) -> bool:
        """Whether the PIN is verified (since the last reset)."""
        return self._verified

    def reset(self) -> None:
        """Power off/on: forget selection, verification and pending data; keep the counter."""
        self._selected = False
        self._verified = False
        self._pending = b""
        self._chain = None

    def process(self, apdu: bytes) -> bytes:
        """The response APDU to ``apdu``."""
        try:
            command = Command.parse(apdu)
        except ValueError:
            self._pending = b""
            return _status(SW_WRONG_LENGTH)
        try:
            return self._dispatch(command).to_bytes()
        except _Refused as refused:
            return _status(refused.sw)

    def __repr__(self) -> str:
        flags = " selected" if self._selected else ""
        flags += " verified" if self._verified else ""
        slots = ",".join(f"{slot:02X}" for slot in self._keys)
        subject = self.certificate.subject.rfc4514_string()
        return f"<PivApplet {subject!r} slots={slots} {self.state!r}{flags}>"

    # -- dispatch ---------------------------------------------------------------------------------

    def _dispatch(self, command: Command) -> Response:
        if command.cla not in (0x00, _CLA_CHAINING):
            self._pending = b""
            raise _Refused(SW_CLA_NOT_SUPPORTED)
        if command.ins == _INS_GET_RESPONSE:
            return self._get_response(command)
        self._pending = b""
        complete = self._unchain(command)
        if complete is None:
            return Response(b"", SW_OK)
        handler = {
            _INS_SELECT: self._select,
            _INS_VERIFY: self._verify,
            _INS_GET_DATA: self._get_data,
            _INS_GENERAL_AUTHENTICATE: self._general_authenticate,
        }.get(complete.ins)
        if handler is None:
            raise _Refused(SW_INS_NOT_SUPPORTED)
        return self._respond(handler(complete), complete.le)

    def _unchain(self, command: Command) -> Command | None:
        """Collect a chain (CLA 10); the whole command once its last part arrives, else ``None``.

        A command with another INS/P1/P2 abandons an unfinished chain.
        """
        header = (command.ins, command.p1, command.p2)
        if self._chain is not None and self._chain[0] != header:
            self._chain = None
        collected = b"" if self._chain is None else self._chain[1]
        if len(collected) + len(command.data) > _MAX_CHAINED:
            self._chain = None
            raise _Refused(SW_WRONG_LENGTH)
        if command.cla & _CLA_CHAINING:
            self._chain = (header, collected + command.data)
            return None
        self._chain = None
        return dataclasses.replace(command, data=collected + command.data)

    def _respond(self, data: bytes, le: int | None) -> Response:
        """Up to ``le`` bytes of ``data`` (256 without Le); the rest waits for GET RESPONSE."""
        limit = 256 if le is None else le
        self._pending = data[limit:]
        if not self._pending:
            return Response(data, SW_OK)
        return Response(data[:limit], 0x6100 | min(len(self._pending), 256) % 256)

    def _get_response(self, command: Command) -> Response:
        if command.cla != 0x00 or (command.p1, command.p2) != (0, 0):
            self._pending = b""
            raise _Refused(SW_INCORRECT_P1P2)
        if not self._pending:
            raise _Refused(SW_CONDITIONS_NOT_SATISFIED)
        return self._respond(self._pending, command.le)

    # -- commands ---------------------------------------------------------------------------------

    def _select(self, command: Command) -> bytes:
        """SELECT by AID; anything but (a prefix of) the PIV AID leaves the selection alone."""
        aid = command.data
        if command.p1 != 0x04 or not aid or not PIV_AID.startswith(aid):
            raise _Refused(SW_FILE_NOT_FOUND)
        if command.p2 not in (0x00, 0x0C):
            raise _Refused(SW_INCORRECT_P1P2)
        self._selected = True
        return b"" if command.p2 == 0x0C else _property_template()

    def _verify(self, command: Command) -> bytes:
        if command.p2 != _PIN_REFERENCE:
            raise _Refused(_SW_REFERENCE_NOT_FOUND)
        self._require_selected()
        if command.p1 == 0xFF and not command.data:
            self._verified = False
            return b""
        if command.p1 != 0x00:
            raise _Refused(SW_INCORRECT_P1P2)
        if self.state.blocked:
            self._verified = False
            raise _Refused(SW_AUTH_METHOD_BLOCKED)
        if not command.data:
            if self._verified:
                return b""
            raise _Refused(0x63C0 | self.state.tries_left)
        if len(command.data) != _PIN_BLOCK:
            raise _Refused(SW_WRONG_DATA)
        return self._check_pin(command.data)

    def _check_pin(self, block: bytes) -> bytes:
        if hmac.compare_digest(hashlib.sha256(block).digest(), self._pin_digest):
            self.state.record_success()
            self._verified = True
            return b""
        self._verified = False
        raise _Refused(0x63C0 | self.state.record_failure())

    def _get_data(self, command: Command) -> bytes:
        if (command.p1, command.p2) != (0x3F, 0xFF):
            raise _Refused(SW_INCORRECT_P1P2)
        try:
            fields = _parse_tlvs(command.data)
        except ValueError:
            raise _Refused(SW_WRONG_DATA) from None
        if set(fields) != {0x5C}:
            raise _Refused(SW_WRONG_DATA)
        self._require_selected()  # 7E too: clients probe with it whether PIV is active
        tag = int.from_bytes(fields[0x5C], "big")
        if tag == OBJECT_DISCOVERY:
            return _discovery()
        found = self._objects.get(tag)
        if found is None:
            raise _Refused(SW_FILE_NOT_FOUND)
        return found

    def _general_authenticate(self, command: Command) -> bytes:
        self._require_selected()
        slot = self._keys.get(command.p2)
        if slot is None or slot.algorithm != command.p1:
            raise _Refused(SW_INCORRECT_P1P2)
        try:
            outer = _parse_tlvs(command.data)
            inner = _parse_tlvs(outer[0x7C])
        except (ValueError, KeyError):
            raise _Refused(SW_WRONG_DATA) from None
        if inner.get(0x82) != b"" or 0x81 not in inner:
            raise _Refused(SW_WRONG_DATA)
        if not self._verified:
            raise _Refused(SW_SECURITY_NOT_SATISFIED)
        return _tlv(0x7C, _tlv(0x82, slot.sign(inner[0x81])))

    def _require_selected(self) -> None:
        if not self._selected:
            raise _Refused(SW_CONDITIONS_NOT_SATISFIED)
