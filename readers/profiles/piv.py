"""The PIV profile (NIST SP 800-73-4): a :class:`~readers.Card` over any APDU transport.

Real PIV cards and tokens (YubiKey and others), and the virtual
:class:`~readers.vcard.PivApplet`, speak it::

    SELECT A0 00 00 03 08 00 00 10 00 01 00          the PIV application
    VERIFY 00 20 00 80 08 <PIN ‖ FF padding>         63Cx: x tries left; 6983: blocked
    GET DATA 00 CB 3F FF 5C 03 5F C1 0A              the slot 9C certificate (5FC105: slot 9A)
    GENERAL AUTHENTICATE 00 87 <alg> 9C 7C{82 00 81 <challenge>}

The card computes raw private-key operations only, so the host hashes and pads: for RSA the
challenge is the whole EMSA-PKCS1-v1_5 block, for ECC the SHA-256 digest (the card returns a DER
ECDSA signature). Long input goes out with command chaining (CLA ``10``), which every card
supports, or with extended APDUs when asked; long answers come back with ``61xx`` and GET
RESPONSE. The PIN is never kept, only sent once per :meth:`PivCard.verify_pin`.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from engine import CardError, ErrorCode, SwregError

from .._transport import SW_OK, Response, Transport, command

__all__ = ["PIV_AID", "PROFILE", "PivCard"]

PROFILE = "piv"
PIV_AID = bytes.fromhex("A000000308000010000100")
_PIV_PIX = PIV_AID[5:]

_KEY_SIGNATURE = 0x9C
_KEY_PIV_AUTHENTICATION = 0x9A
_CERTIFICATE_OBJECTS = ((_KEY_SIGNATURE, 0x5FC10A), (_KEY_PIV_AUTHENTICATION, 0x5FC105))
"""Where to look for the signing certificate, in order: slot 9C, then slot 9A."""

_PIN_REFERENCE = 0x80
_PIN_BLOCK = 8
_MAX_SHORT_DATA = 255
_MAX_RESPONSE_PARTS = 64
_SW_FILE_NOT_FOUND = 0x6A82
_SW_SECURITY_NOT_SATISFIED = 0x6982
_SW_BLOCKED = 0x6983

_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_RSA_ALGORITHMS = {1024: 0x06, 2048: 0x07, 3072: 0x05, 4096: 0x16}
_ECC_ALGORITHMS = {"secp256r1": (0x11, 32), "secp384r1": (0x14, 48)}


# -- BER-TLV (the host side's own, kept apart from the virtual card's on purpose) -----------------


def _tlv(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")
    size = len(value)
    if size < 0x80:
        return tag_bytes + bytes((size,)) + value
    if size < 0x100:
        return tag_bytes + bytes((0x81, size)) + value
    return tag_bytes + b"\x82" + size.to_bytes(2, "big") + value


def _tlvs(data: bytes) -> dict[int, bytes]:
    """The TLVs of ``data`` by tag; ``ValueError`` when malformed."""
    fields: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        start = offset
        offset += 1
        if data[start] & 0x1F == 0x1F:
            while offset < end and data[offset] & 0x80:
                offset += 1
            offset += 1
        tag = int.from_bytes(data[start:offset], "big")
        if offset >= end:
            raise ValueError("TLV length missing")
        size, offset = _length(data, offset)
        if offset + size > end:
            raise ValueError("TLV value runs past the data")
        fields[tag] = data[offset : offset + size]
        offset += size
    return fields


def _length(data: bytes, offset: int) -> tuple[int, int]:
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    if not 1 <= count <= 3 or offset + 1 + count > len(data):
        raise ValueError("unsupported TLV length")
    return int.from_bytes(data[offset + 1 : offset + 1 + count], "big"), offset + 1 + count


def _field(data: bytes, *path: int) -> bytes:
    """The value at ``path`` of nested TLVs (``_field(d, 0x53, 0x70)``); ``KeyError`` if absent."""
    for tag in path:
        data = _tlvs(data)[tag]
    return data


# -- APDU exchange ---------------------------------------------------------------------------------


def _exchange(transport: Transport, apdu: bytes) -> Response:
    """Send ``apdu`` and follow ``61xx`` with GET RESPONSE until the answer is whole."""
    response = transport.transmit(apdu)
    data = response.data
    for _ in range(_MAX_RESPONSE_PARTS):
        more = response.more
        if more is None:
            return Response(data, response.sw)
        response = transport.transmit(command(0x00, 0xC0, 0x00, 0x00, le=more or 256))
        data += response.data
    raise CardError(ErrorCode.CARD_ERROR, detail="the card's answer does not end")


def _select_apdu() -> bytes:
    return command(0x00, 0xA4, 0x04, 0x00, PIV_AID, le=256)


def _is_piv_answer(response: Response) -> bool:
    """Whether a SELECT answer is PIV's: ``9000`` and, if an APT came, its ``4F`` is PIV's.

    Cards answer with the full AID or, like YubiKeys, only the PIX; some send no template.
    """
    if not response.ok:
        return False
    if not response.data:
        return True
    try:
        aid = _field(response.data, 0x61, 0x4F)
    except (KeyError, ValueError, IndexError):
        return False
    return aid in (PIV_AID, _PIV_PIX)


def _unexpected(response: Response) -> CardError:
    return CardError(ErrorCode.CARD_ERROR, detail=f"SW {response.sw:04X}")


def _pin_block(pin: str) -> bytes:
    """The VERIFY data: the PIN's 6–8 ASCII characters padded with ``FF`` to 8 bytes."""
    if not 6 <= len(pin) <= _PIN_BLOCK or not pin.isascii() or not pin.isprintable():
        raise CardError(ErrorCode.CARD_ERROR, detail="PIN must be 6–8 characters")
    return pin.encode("ascii").ljust(_PIN_BLOCK, b"\xff")


def _pin_refused(response: Response) -> CardError:
    """The error of a refused VERIFY: ``63Cx`` (``63C0``: locked), ``6983``, or other."""
    sw = response.sw
    if sw == _SW_BLOCKED or sw == 0x63C0:
        return CardError(ErrorCode.CARD_LOCKED)
    if sw & 0xFFF0 == 0x63C0:
        return CardError(ErrorCode.PIN_INCORRECT, tries_left=sw & 0x0F)
    if sw == 0x6300:
        return CardError(ErrorCode.PIN_INCORRECT, tries_left=None)
    return _unexpected(response)


def _certificate_from_object(data: bytes) -> bytes:
    """The DER inside a certificate object ``53 { 70 cert, 71 info, ... }`` (gunzipped if so)."""
    try:
        body = _field(data, 0x53)
        fields = _tlvs(body)
        der = fields[0x70]
        info = fields.get(0x71, b"\x00")
        if info and info[0] & 0x01:
            der = gzip.decompress(der)
    except (KeyError, ValueError, IndexError, OSError, EOFError, zlib.error) as exc:
        raise CardError(ErrorCode.CARD_ERROR, detail="malformed certificate object") from exc
    return der


def _challenge(public_key: CertificatePublicKeyTypes | None, digest: bytes) -> tuple[int, bytes]:
    """``(algorithm, challenge)`` for GENERAL AUTHENTICATE over a SHA-256 ``digest``."""
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size in _RSA_ALGORITHMS:
        size = (public_key.key_size + 7) // 8
        encoded = _SHA256_DIGEST_INFO + digest
        block = b"\x00\x01" + b"\xff" * (size - len(encoded) - 3) + b"\x00" + encoded
        return _RSA_ALGORITHMS[public_key.key_size], block
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        found = _ECC_ALGORITHMS.get(public_key.curve.name)
        if found is not None:
            algorithm, size = found
            return algorithm, digest.rjust(size, b"\x00")
    raise CardError(ErrorCode.CARD_ERROR, detail="the card's key is not one PIV can sign with")


class PivCard:
    """A PIV card (or token) behind ``transport``, selected and ready.

    Raises ``CardError("card_error")`` when the card does not answer the PIV SELECT. With
    ``extended=True`` long commands go as extended APDUs instead of command chaining.
    ``on_close`` runs once on :meth:`close` (to release the reader connection, for instance).
    """

    profile = PROFILE

    def __init__(
        self,
        transport: Transport,
        *,
        label: str,
        extended: bool = False,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        self._transport = transport
        self._extended = extended
        self._on_close = on_close
        self._closed = False
        self._der: bytes | None = None
        self._public_key: CertificatePublicKeyTypes | None = None
        self._key_reference = _KEY_SIGNATURE
        self._select()

    @staticmethod
    def detect(transport: Transport) -> bool:
        """Whether the card behind ``transport`` answers the PIV SELECT (and is now selected)."""
        return _is_piv_answer(_exchange(transport, _select_apdu()))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"slot={self._key_reference:02X}"
        return f"<{type(self).__name__} {self.label!r} {state}>"

    # -- the Card protocol ------------------------------------------------------------------------

    def verify_pin(self, pin: str) -> None:
        """VERIFY the PIV PIN (key reference 80).

        Sends nothing for a PIN that is not 6–8 ASCII characters (``card_error``). Raises
        ``CardError("pin_incorrect", tries_left=N)`` or ``CardError("card_locked")``.
        """
        block = _pin_block(pin)
        response = self._send(0x20, 0x00, _PIN_REFERENCE, block)
        if not response.ok:
            raise _pin_refused(response)

    def read_certificate(self) -> bytes:
        """The DER of the slot 9C certificate, or of slot 9A when 9C holds none."""
        if self._der is None:
            self._load_certificate()
        assert self._der is not None
        return self._der

    def read_chain(self) -> tuple[bytes, ...]:
        """Always empty: a PIV card stores no CA certificates."""
        self._require_open()
        return ()

    def sign(self, message: bytes) -> bytes:
        """SHA-256 of ``message`` signed by the certificate's key (RSA PKCS#1 v1.5 or DER ECDSA).

        Raises ``CardError("card_error", detail="PIN not verified")`` without a verified PIN.
        """
        self.read_certificate()
        digest = hashlib.sha256(message).digest()
        algorithm, challenge = _challenge(self._public_key, digest)
        template = _tlv(0x7C, _tlv(0x82, b"") + _tlv(0x81, challenge))
        response = self._send(0x87, algorithm, self._key_reference, template, le=True)
        if response.sw == _SW_SECURITY_NOT_SATISFIED:
            raise CardError(ErrorCode.CARD_ERROR, detail="PIN not verified")
        if not response.ok:
            raise _unexpected(response)
        try:
            return _field(response.data, 0x7C, 0x82)
        except (KeyError, ValueError, IndexError) as exc:
            raise CardError(ErrorCode.CARD_ERROR, detail="malformed signature response") from exc

    def close(self) -> None:
        """Reset the PIN verification on the card (``00 20 FF 80``), then run ``on_close``."""
        if self._closed:
            return
        self._closed = True
        self._der = None
        self._public_key = None
        try:
            self._transport.transmit(command(0x00, 0x20, 0xFF, _PIN_REFERENCE))
        except SwregError:
            pass  # a card already gone or one without the reset keeps nothing of ours anyway
        finally:
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    def _select(self) -> None:
        response = _exchange(self._transport, _select_apdu())
        if not _is_piv_answer(response):
            detail = f"not a PIV card (SELECT answered SW {response.sw:04X})"
            raise CardError(ErrorCode.CARD_ERROR, detail=detail)

    def _load_certificate(self) -> None:
        for key_reference, tag in _CERTIFICATE_OBJECTS:
            response = self._get_data(tag)
            if response.sw == _SW_FILE_NOT_FOUND:
                continue
            if not response.ok:
                raise _unexpected(response)
            der = _certificate_from_object(response.data)
            try:
                public_key = x509.load_der_x509_certificate(der).public_key()
            except ValueError as exc:
                detail = f"the certificate in slot {key_reference:02X} is not DER X.509"
                raise CardError(ErrorCode.CARD_ERROR, detail=detail) from exc
            self._der, self._public_key, self._key_reference = der, public_key, key_reference
            return
        raise CardError(ErrorCode.CARD_ERROR, detail="the card holds no certificate")

    def _get_data(self, tag: int) -> Response:
        tag_list = _tlv(0x5C, tag.to_bytes(3, "big"))
        return self._send(0xCB, 0x3F, 0xFF, tag_list, le=True)

    def _send(self, ins: int, p1: int, p2: int, data: bytes, *, le: bool = False) -> Response:
        """One command, chained in 255-byte parts when long (unless ``extended``).

        ``le`` asks for everything the card has (Le ``00``, or ``0000`` when extended).
        """
        self._require_open()
        expected = (65536 if self._extended else 256) if le else None
        if self._extended or len(data) <= _MAX_SHORT_DATA:
            return _exchange(self._transport, command(0x00, ins, p1, p2, data, le=expected))
        parts = [data[i : i + _MAX_SHORT_DATA] for i in range(0, len(data), _MAX_SHORT_DATA)]
        for part in parts[:-1]:
            response = self._transport.transmit(command(0x10, ins, p1, p2, part))
            if response.sw != SW_OK:
                return response
        return _exchange(self._transport, command(0x00, ins, p1, p2, parts[-1], le=expected))

    def _require_open(self) -> None:
        if self._closed:
            raise CardError(ErrorCode.CARD_ERROR, detail="the card is closed")
