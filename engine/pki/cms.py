"""Detached signatures as Turnkey receives them: raw, base64, PEM or a CMS SignedData.

Pure: bytes in, a raw signature or the signers of a SignedData out. :func:`read_signature`
detects the format in this order:

- PEM (``-----BEGIN PKCS7-----`` / ``CMS``) or base64 text: decoded first (base64 is recognised
  when every byte is of the base64 alphabet and the decoded value has a plausible length);
- a CMS / PKCS#7 ``ContentInfo`` of type ``signedData`` (RFC 5652 §5), read with
  :mod:`engine.pki.der` (cryptography does not verify CMS; real signers' BER indefinite
  lengths are accepted here and nowhere else): per SignerInfo its signature, digest algorithm
  (SHA-256 only), signer serial and, when signed attributes are present, their SHA-256 as a
  ``SET`` and the ``messageDigest``; an encapsulated content must be the message the signers'
  ``messageDigest`` names. A ``signingTime`` is checked for form only: the sender chose it, so
  nothing uses it (DESIGN.md §5). An RFC 3161 time-stamp token in the unsigned attributes
  (``id-aa-timeStampToken``) is kept as bytes, unread until a caller asks
  (:func:`timestamp_time`);
- anything else is a raw signature (at most :data:`MAX_RAW_SIGNATURE_BYTES`), checked with
  :class:`engine.pki.signatures.SignatureKey`.

Anything unreadable is ``signature_invalid`` (:class:`CertificateError`, field ``signature``).

:func:`timestamp_time` checks a time-stamp token (RFC 3161) against the configured TSA
certificates and answers its ``genTime``, or ``None`` when the token is not one to believe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID

from engine._errors import CertificateError, ErrorCode
from engine.pki.der import (
    CONTEXT_0,
    GENERALIZED_TIME,
    INTEGER,
    OCTET_STRING,
    OID,
    SEQUENCE,
    SET,
    DerError,
    DerReader,
    Element,
    decode_time,
    expect,
    nth,
)
from engine.pki.signatures import SignatureKey

MAX_SIGNATURE_BYTES: Final = 256 * 1024
"""A signature input (raw, base64, PEM or CMS with its certificates) larger than this is refused."""

MAX_RAW_SIGNATURE_BYTES: Final = 1024
"""The largest raw signature: RSA-8192 (ECDSA P-521 DER is 139 bytes)."""

_BASE64_ALPHABET: Final = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \t\r\n"
)
_OID_SIGNED_DATA: Final = bytes.fromhex("2a864886f70d010702")
_OID_CONTENT_TYPE: Final = bytes.fromhex("2a864886f70d010903")
_OID_MESSAGE_DIGEST: Final = bytes.fromhex("2a864886f70d010904")
_OID_SIGNING_TIME: Final = bytes.fromhex("2a864886f70d010905")
_OID_SHA256: Final = bytes.fromhex("608648016503040201")
_OID_TIMESTAMP_TOKEN: Final = bytes.fromhex("2a864886f70d010910020e")  # 1.2.840.113549.1.9.16.2.14
_OID_TST_INFO: Final = bytes.fromhex("2a864886f70d0109100104")  # id-ct-TSTInfo
_IMPRINT_HASHES: Final = {
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}
"""The messageImprint hash algorithms believed in a time-stamp token (no SHA-1)."""
_SIGNATURE_ALGORITHMS: Final = frozenset(
    bytes.fromhex(h)
    for h in (
        "2a864886f70d010101",  # rsaEncryption
        "2a864886f70d01010b",  # sha256WithRSAEncryption
        "2a8648ce3d040302",  # ecdsa-with-SHA256
        "2a8648ce3d0201",  # id-ecPublicKey
    )
)
_SUBJECT_KEY_IDENTIFIER: Final = 0x80  # SignerIdentifier [0] IMPLICIT OCTET STRING
_CONTEXT_1: Final = 0xA1  # SignerInfo unsignedAttrs [1] IMPLICIT SET OF Attribute


class CmsSigner(NamedTuple):
    """One SignerInfo of a SignedData: what it signed and what it says about itself."""

    signature: bytes
    signed_attrs_digest: bytes | None  # SHA-256 of the signed attributes as a SET
    message_digest: bytes | None  # the messageDigest attribute (or the embedded content's)
    serial: int | None = None  # the issuerAndSerialNumber serial (None: subjectKeyIdentifier)
    timestamp_token: bytes | None = None  # an RFC 3161 token (unsigned attribute), unread

    def signed_digest(self, message_hash: bytes) -> bytes | None:
        """The SHA-256 digest this signer's signature covers, for a message whose SHA-256 is
        ``message_hash``: the signed attributes' digest, else the message's. ``None`` when its
        messageDigest (or embedded content) is not the message's."""
        if self.message_digest is not None and not hmac.compare_digest(
            self.message_digest, message_hash
        ):
            return None
        return self.signed_attrs_digest or message_hash


def read_signature(data: bytes) -> bytes | tuple[CmsSigner, ...]:
    """The raw signature, or the signers of a CMS SignedData (see the module docstring)."""
    if not data:
        raise _invalid("empty signature")
    if len(data) > MAX_SIGNATURE_BYTES:
        raise _invalid("signature too large")
    if data.lstrip()[:11] == b"-----BEGIN ":
        data = _decode_pem(data)
    elif not data.translate(None, _BASE64_ALPHABET):  # base64 text (raw bytes almost never are)
        decoded = _decode_base64(data)
        if decoded is not None:
            data = decoded
    if data[0] == SEQUENCE and is_signed_data(data):
        try:
            return read_signed_data(data)
        except DerError as exc:
            raise _invalid(f"unreadable CMS SignedData ({exc})") from None
        except (IndexError, ValueError, OverflowError):
            raise _invalid("unreadable CMS SignedData") from None
    if len(data) > MAX_RAW_SIGNATURE_BYTES:
        raise _invalid("not a signature")
    return data


def is_signed_data(data: bytes) -> bool:
    """Whether ``data`` starts like a ContentInfo of type signedData (its header only)."""
    if len(data) < 4 or data[0] != SEQUENCE:
        return False
    reader = DerReader(data, indefinite=True)
    try:
        content_type = reader.element(reader.content_offset(0))
    except DerError:
        return False
    return content_type.tag == OID and reader.body(content_type, OID) == _OID_SIGNED_DATA


def read_signed_data(data: bytes) -> tuple[CmsSigner, ...]:
    """The SignerInfos of a ContentInfo ``{signedData, [0] SignedData}`` (RFC 5652 §5).

    Raises :class:`DerError` (a ``ValueError``) on anything malformed or unsupported.
    """
    return _read_signed_data(data)[2]


def _read_signed_data(data: bytes) -> tuple[bytes, bytes | None, tuple[CmsSigner, ...]]:
    """The encapsulated content type, the embedded content (``None``: detached), the signers."""
    reader = DerReader(data, indefinite=True)
    content_info = reader.element(0)
    if data[content_info.end :].strip(b"\x00"):
        raise DerError("trailing data")
    outer = reader.parts(content_info, SEQUENCE)
    if reader.body(nth(outer), OID) != _OID_SIGNED_DATA:
        raise DerError("not signedData")
    wrapped = reader.parts(nth(outer, 1), CONTEXT_0)
    parts = reader.parts(nth(wrapped), SEQUENCE)
    if len(parts) < 4:
        raise DerError("short SignedData")
    expect(parts[0], INTEGER)  # version
    expect(parts[1], SET)  # digestAlgorithms
    encapsulated = reader.parts(parts[2], SEQUENCE)
    content_type = reader.body(nth(encapsulated), OID)
    embedded: bytes | None = None
    if len(encapsulated) > 1:  # not detached: the content must then be the message
        explicit = reader.parts(encapsulated[1], CONTEXT_0)
        embedded = reader.body(nth(explicit), OCTET_STRING)
    infos = reader.parts(parts[-1], SET)
    if not infos:
        raise DerError("no SignerInfo")
    signers = tuple(_signer(reader, info, content_type, embedded) for info in infos)
    return content_type, embedded, signers


def _signer(
    reader: DerReader, info: Element, content_type: bytes, embedded: bytes | None
) -> CmsSigner:
    """One SignerInfo: version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm,
    signature."""
    parts = reader.parts(info, SEQUENCE)
    if len(parts) < 5:
        raise DerError("short SignerInfo")
    expect(parts[0], INTEGER)
    serial: int | None = None
    if parts[1].tag == SEQUENCE:  # issuerAndSerialNumber
        number = reader.body(nth(reader.parts(parts[1], SEQUENCE), 1), INTEGER)
        serial = int.from_bytes(number, "big", signed=True)
    elif parts[1].tag != _SUBJECT_KEY_IDENTIFIER:
        raise DerError("bad signer identifier")
    if reader.body(nth(reader.parts(parts[2], SEQUENCE)), OID) != _OID_SHA256:
        raise DerError("digest algorithm is not SHA-256")
    index = 3
    attributes: Element | None = None
    if parts[index].tag == CONTEXT_0:
        attributes = parts[index]
        index += 1
    algorithm = reader.body(nth(reader.parts(parts[index], SEQUENCE)), OID)
    if algorithm not in _SIGNATURE_ALGORITHMS:
        raise DerError("signature algorithm not supported")
    signature = reader.body(nth(parts, index + 1), OCTET_STRING)
    token = None
    unsigned = nth(parts, index + 2)
    if unsigned is not None and unsigned.tag == _CONTEXT_1:  # read only when present
        token = _timestamp_token(reader, unsigned)
    embedded_digest = None if embedded is None else hashlib.sha256(embedded).digest()
    if attributes is None:
        return CmsSigner(signature, None, embedded_digest, serial, token)
    data = reader.data
    if data[attributes.start + 1] == 0x80:
        raise DerError("signed attributes are not DER")
    digest = _signed_attributes(reader, attributes, content_type)
    if embedded_digest is not None and not hmac.compare_digest(digest, embedded_digest):
        raise DerError("the embedded content does not match messageDigest")
    as_set = b"\x31" + data[attributes.start + 1 : attributes.end]
    return CmsSigner(signature, hashlib.sha256(as_set).digest(), digest, serial, token)


def _timestamp_token(reader: DerReader, unsigned: Element) -> bytes | None:
    """The first ``id-aa-timeStampToken`` value of unsigned attributes, as bytes (unread)."""
    for attribute in reader.children(unsigned):
        pair = reader.parts(attribute, SEQUENCE)
        if reader.body(nth(pair), OID) == _OID_TIMESTAMP_TOKEN:
            value = nth(reader.parts(nth(pair, 1), SET))
            if value is None:
                raise DerError("attribute without a value")
            return reader.data[value.start : value.end]
    return None


def _signed_attributes(reader: DerReader, attributes: Element, content_type: bytes) -> bytes:
    """The messageDigest (required) of signed attributes; contentType and signingTime checked
    for form (a signingTime is the sender's word: nothing uses it)."""
    digest: bytes | None = None
    for attribute in reader.children(attributes):
        pair = reader.parts(attribute, SEQUENCE)
        kind = reader.body(nth(pair), OID)
        value = nth(reader.parts(nth(pair, 1), SET))
        if value is None:
            raise DerError("attribute without a value")
        if kind == _OID_MESSAGE_DIGEST:
            digest = reader.body(value, OCTET_STRING)
        elif kind == _OID_CONTENT_TYPE:
            if reader.body(value, OID) != content_type:
                raise DerError("contentType attribute does not match")
        elif kind == _OID_SIGNING_TIME:
            decode_time(value.tag, reader.data[value.content : value.content_end])
    if digest is None:
        raise DerError("no messageDigest attribute")
    return digest


def _invalid(detail: str) -> CertificateError:
    return CertificateError(ErrorCode.SIGNATURE_INVALID, field="signature", detail=detail)


def _decode_base64(data: bytes) -> bytes | None:
    """Base64 text (standard or URL-safe, whitespace allowed), when it decodes plausibly."""
    compact = b"".join(data.split())
    if len(compact) < 12:
        return None
    padded = compact + b"=" * (-len(compact) % 4)  # URL-safe base64 often drops its padding
    try:
        if b"-" in compact or b"_" in compact:
            decoded = base64.urlsafe_b64decode(padded)
        else:
            decoded = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) >= 8 else None


def _decode_pem(data: bytes) -> bytes:
    lines = data.strip().splitlines()
    body = [line for line in lines if line.strip() and not line.startswith(b"-----")]
    if not lines[-1].startswith(b"-----END ") or any(b":" in line for line in body):
        raise _invalid("unreadable PEM")
    try:
        return base64.b64decode(b"".join(b"".join(line.split()) for line in body), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("unreadable PEM") from None


# -- RFC 3161 time-stamp tokens -------------------------------------------------------------------


class TimestampAuthority(NamedTuple):
    """A configured time-stamping authority, read once for :func:`timestamp_time`."""

    certificate: x509.Certificate
    key: SignatureKey
    serial: int

    @classmethod
    def of(cls, certificate: x509.Certificate) -> TimestampAuthority:
        """``certificate`` as a TSA; ``ValueError`` unless it has an RSA or EC key and the
        extended key usage id-kp-timeStamping (RFC 3161 §2.3)."""
        try:
            usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is None or ExtendedKeyUsageOID.TIME_STAMPING not in usage:
            raise ValueError("not a time-stamping certificate (no id-kp-timeStamping)")
        try:
            key = SignatureKey.of(certificate.public_key())
        except UnsupportedAlgorithm as exc:
            raise ValueError("unreadable key") from exc
        if key is None:
            raise ValueError("neither an RSA nor an EC key")
        return cls(certificate, key, certificate.serial_number)


def timestamp_time(
    token: bytes, signature: bytes, authorities: Sequence[TimestampAuthority]
) -> datetime | None:
    """The ``genTime`` of an RFC 3161 ``TimeStampToken`` over ``signature``, when believable.

    Believable means: a SignedData of ``id-ct-TSTInfo`` with one signer whose signature (over
    signed attributes whose messageDigest is the TSTInfo's SHA-256) verifies with the key of
    one of ``authorities``, which was valid at ``genTime``; and a ``messageImprint`` (SHA-256,
    -384 or -512) that is the hash of ``signature``, the SignerInfo's signature value the token
    dates (RFC 3161 Appendix A). Anything else — an unlisted TSA, a forged or malformed token —
    answers ``None``: such a token is ignored, never trusted. The TSA certificate's revocation
    is not checked: listing it in ``SWREG_TSA_CERTS`` is the trust decision.
    """
    if not authorities:
        return None
    try:
        content_type, content, signers = _read_signed_data(token)
        if content_type != _OID_TST_INFO or content is None or len(signers) != 1:
            return None
        signer = signers[0]
        if signer.signed_attrs_digest is None:  # RFC 3161: the signed attributes are required
            return None
        authority = next(
            (
                a
                for a in authorities
                if (signer.serial is None or signer.serial == a.serial)
                and a.key.verifies_digest(signer.signature, signer.signed_attrs_digest)
            ),
            None,
        )
        if authority is None:
            return None
        imprint_algorithm, imprint, gen_time = _read_tst_info(content)
    except (DerError, IndexError, ValueError, OverflowError):
        return None
    expected = hashlib.new(imprint_algorithm, signature).digest()
    if not hmac.compare_digest(imprint, expected):
        return None
    certificate = authority.certificate
    if not certificate.not_valid_before_utc <= gen_time <= certificate.not_valid_after_utc:
        return None
    return gen_time


def _read_tst_info(content: bytes) -> tuple[str, bytes, datetime]:
    """``TSTInfo`` (DER): the messageImprint's hash name and value, and genTime."""
    reader = DerReader(content)
    info = reader.element(0)
    if info.end != len(content):
        raise DerError("trailing data")
    parts = reader.parts(info, SEQUENCE)
    if len(parts) < 5:
        raise DerError("short TSTInfo")
    expect(parts[0], INTEGER)  # version
    expect(parts[1], OID)  # policy
    imprint = reader.parts(parts[2], SEQUENCE)
    algorithm = reader.body(nth(reader.parts(nth(imprint), SEQUENCE)), OID)
    name = _IMPRINT_HASHES.get(algorithm)
    if name is None:
        raise DerError("messageImprint hash algorithm not accepted")
    hashed = reader.body(nth(imprint, 1), OCTET_STRING)
    expect(parts[3], INTEGER)  # serialNumber
    gen_time = parts[4]
    expect(gen_time, GENERALIZED_TIME)
    return (
        name,
        hashed,
        decode_time(GENERALIZED_TIME, content[gen_time.content : gen_time.content_end]),
    )
