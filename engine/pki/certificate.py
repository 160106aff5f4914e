"""Parse an uploaded or card-read certificate and say what it is (DOMAIN.md §3).

Pure: bytes in, a frozen :class:`ParsedCertificate` out, no I/O. Everything a caller can feed
:func:`load_certificate` ends either in a ``ParsedCertificate`` or in a :class:`SwregError` with a
stable code; nothing else escapes (the parser is fuzzed).

Classification looks at the **issuer** (DOMAIN.md §3.1): the OU of the four GPKI sub-CAs, the
TaiCA / TWCA names, and for the GPKI test CA (政府測試憑證管理中心, which issues test cards of every
kind) the subject class in the Subject Directory Attributes. The identity lives in the Subject
Directory Attributes (extension 2.5.29.9), which cryptography only exposes as raw bytes;
:mod:`engine.pki.der` reads them, the issuer name as encoded, and the header of what was uploaded.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import unicodedata
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from threading import Lock
from types import MappingProxyType
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from engine._errors import CertificateError, ErrorCode, RefusedError, SwregError
from engine.core.declarations import CertificateIdentity, IssuerCA
from engine.pki.der import INTEGER, OCTET_STRING, OID, SEQUENCE, SET, DerError, DerReader

MAX_CERTIFICATE_BYTES = 64 * 1024
"""Uploads larger than this are refused with ``file_too_large`` before any parsing."""

SDA_OID = x509.ObjectIdentifier("2.5.29.9")
"""Subject Directory Attributes, where GPKI certificates carry the holder's identity."""

SDA_SUBJECT_CLASS = "2.16.886.1.100.2.1"
SDA_CARD_RANK = "2.16.886.1.100.2.2"
SDA_ID_LAST4 = "2.16.886.1.100.2.51"
SDA_UBN = "2.16.886.1.100.2.101"
SDA_OID_ATTRIBUTE = "2.16.886.1.100.2.102"

# The issuer OU of each GPKI sub-CA (DOMAIN.md §3.1). Test CAs prefix the name with "(測試用)".
ISSUER_OU_TO_CA: Mapping[str, IssuerCA] = MappingProxyType(
    {
        "內政部憑證管理中心": IssuerCA.MOICA,
        "工商憑證管理中心": IssuerCA.MOEACA,
        "組織及團體憑證管理中心": IssuerCA.XCA,
        "政府憑證管理中心": IssuerCA.GCA,
    }
)

GPKI_TEST_CA_OU = "政府測試憑證管理中心"
"""The GPKI test CA issues test cards of every family; its cards are classified by subject class."""

# Subject class (SDA .1) → family, for cards of the GPKI test CA. Matched on whole arcs, so
# ``…3.2.1`` covers ``…3.2.1.1`` but not ``…3.2.11``.
SUBJECT_CLASS_TO_CA: tuple[tuple[str, IssuerCA], ...] = (
    ("2.16.886.1.100.3.1", IssuerCA.MOICA),  # …3.1.1 citizen (自然人)
    ("2.16.886.1.100.3.2.1", IssuerCA.GCA),  # …3.2.1.1 government agency (機關)
    ("2.16.886.1.100.3.2.2", IssuerCA.MOEACA),  # …3.2.2.1.1 company (公司)
    ("2.16.886.1.100.3.2.11", IssuerCA.XCA),  # …3.2.11 organisation (組織團體)
)

_TEST_MARKER = "(測試用)"  # compared after NFKC, which folds the full-width parentheses
_TAICA_MARKERS = ("taica", "twca")
_TAICA_CN = re.compile(r"^(\d{8})-(\d{2})-([0-9A-Za-z]+)$")
_UBN = re.compile(r"^\d{8}$")

_NAME_OVERRIDES = {
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.GIVEN_NAME: "givenName",
    NameOID.SURNAME: "SN",
}

_KEY_USAGE_NAMES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)

_CURVE_NAMES = {"secp256r1": "P256", "secp384r1": "P384", "secp521r1": "P521"}


@dataclass(frozen=True, slots=True)
class ParsedCertificate:
    """A certificate as the card check sees it.

    ``serial_hex`` is ``format(serial, "X")``: upper-case hex without leading zeros (the way
    GPKI and TWCA print serials, e.g. ``4EEA4DF4``). ``subject`` and ``issuer`` are RFC 4514
    strings (most specific RDN first) with non-ASCII characters kept. ``directory_attributes``
    holds the decoded Subject Directory Attributes as ``(oid, value)`` pairs in certificate order;
    ``subject_serial_number`` is the subject serialNumber RDN (the UBN on newer MOEACA cards).
    ``issuer_der`` is ``certificate.issuer.public_bytes()`` (what path building looks issuers up
    by; ``b""`` when not computed).
    """

    der: bytes
    certificate: x509.Certificate
    fingerprint: str
    serial_hex: str
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    key_usage: tuple[str, ...]
    ca: IssuerCA
    identity: CertificateIdentity
    public_key_algorithm: str
    subject_serial_number: str | None = None
    directory_attributes: tuple[tuple[str, str], ...] = ()
    issuer_der: bytes = b""

    def attribute(self, oid: str) -> str | None:
        """The first value of Subject Directory Attribute ``oid``, if the certificate has it."""
        return next((v for k, v in self.directory_attributes if k == oid), None)


def load_certificate(data: bytes) -> ParsedCertificate:
    """Parse exactly one certificate, DER or PEM.

    Refuses (all :class:`RefusedError`): more than :data:`MAX_CERTIFICATE_BYTES` →
    ``file_too_large``; a private key or PKCS#12 → ``private_key_refused``; several
    certificates → ``not_a_certificate`` ("several certificates"); empty or anything else →
    ``not_a_certificate``; something shaped like a certificate that does not parse →
    ``certificate_malformed`` (:class:`CertificateError`).
    """
    try:
        return _load(bytes(data))
    except SwregError:
        raise
    except Exception as exc:  # a fuzzed parser must answer with a code, never a traceback
        raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED, detail=type(exc).__name__) from exc


def ubn_conflict(parsed: ParsedCertificate) -> bool:
    """True when SDA .101 and an 8-digit subject serialNumber both exist and disagree.

    The caller decides (the card check refuses such a card with ``identity_mismatch``).
    """
    sda = parsed.attribute(SDA_UBN)
    serial = parsed.subject_serial_number
    return sda is not None and serial is not None and bool(_UBN.match(serial)) and sda != serial


def classify_issuer(issuer: x509.Name, subject_class: str | None = None) -> IssuerCA:
    """The CA family of a certificate issued by ``issuer`` (DOMAIN.md §3.1).

    ``subject_class`` (SDA .1 of the certificate) decides for cards of the GPKI test CA.
    """
    ca = _classify_name(issuer)
    return _class_to_ca(subject_class) if ca is None else ca


def _classify_name(issuer: x509.Name) -> IssuerCA | None:
    """:func:`classify_issuer` as far as the name decides; ``None`` for the GPKI test CA."""
    raw_ous: list[str] = []
    orgs: list[str] = []
    cns: list[str] = []
    wanted = {
        NameOID.ORGANIZATIONAL_UNIT_NAME: raw_ous,
        NameOID.ORGANIZATION_NAME: orgs,
        NameOID.COMMON_NAME: cns,
    }
    for attribute in issuer:  # one pass, in the order get_attributes_for_oid would give
        values = wanted.get(attribute.oid)
        if values is not None and isinstance(attribute.value, str):
            values.append(attribute.value)
    ous = [_normalise_ou(v) for v in raw_ous]
    for ou in ous:
        if ou in ISSUER_OU_TO_CA:
            return ISSUER_OU_TO_CA[ou]
    if GPKI_TEST_CA_OU in ous:
        return None
    if "Finance" in orgs and any("taica" in ou.lower() for ou in raw_ous):
        return IssuerCA.TAICA
    names = [*cns, *orgs, *raw_ous]
    if any(marker in n.lower() for n in names for marker in _TAICA_MARKERS):
        return IssuerCA.TAICA
    return IssuerCA.UNKNOWN


def name_string(name: x509.Name) -> str:
    """RFC 4514 form of ``name`` with readable attribute names and non-ASCII kept."""
    try:
        return name.rfc4514_string(_NAME_OVERRIDES)
    except Exception:  # an attribute value that is not a string (BitString, …)
        return ",".join(
            f"{a.oid.dotted_string}=#{a.value.hex() if isinstance(a.value, bytes) else a.value}"
            for a in reversed(list(name))
        )


def subject_text(certificate: x509.Certificate) -> str:
    """``name_string(certificate.subject)``, remembered for the CA certificates a chain shows.

    Keyed by the object itself (the memo keeps it alive, so its ``id`` is not reused): trust
    store members and cached chain helpers are the same objects call after call.
    """
    hit = _SUBJECTS.get(id(certificate))
    if hit is not None and hit[0] is certificate:
        return hit[1]
    text = name_string(certificate.subject)
    _SUBJECTS.put(id(certificate), (certificate, text))
    return text


def _key_usage_names(usage: x509.KeyUsage | None) -> tuple[str, ...]:
    if usage is None:
        return ()
    names = [n for n in _KEY_USAGE_NAMES if getattr(usage, n)]
    if usage.key_agreement:
        names += [n for n in ("encipher_only", "decipher_only") if getattr(usage, n)]
    return tuple(names)


def public_key_algorithm(certificate: x509.Certificate) -> str:
    """``RSA-2048``, ``EC-P256``, ``Ed25519``, …"""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{_CURVE_NAMES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(
        key
    ).__name__  # DSA among them: named, not used (its cryptography API is deprecated)


# -- loading -----------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----(.*?)-----END \1-----", re.DOTALL)
_PEM_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_PKCS7_OIDS = {"1.2.840.113549.1.7.2", "1.2.840.113549.1.7.1"}


def _refuse(code: ErrorCode, detail: str | None = None) -> RefusedError:
    return RefusedError(code, detail=detail)


def _load(data: bytes) -> ParsedCertificate:
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise _refuse(ErrorCode.FILE_TOO_LARGE, f"{len(data)} bytes > {MAX_CERTIFICATE_BYTES}")
    if not data.strip():
        raise _refuse(ErrorCode.NOT_A_CERTIFICATE, "empty file")
    der = _pem_to_der(data) if b"-----BEGIN" in data and not _whole_der(data) else data
    _sniff_der(der)
    try:
        certificate = x509.load_der_x509_certificate(der)
    except Exception as exc:
        raise _malformed_or_other(der, exc) from exc
    return _parse(der, certificate)


def _whole_der(data: bytes) -> bool:
    """One DER SEQUENCE spanning all of ``data`` (which may contain "-----BEGIN" by chance)."""
    try:
        element = DerReader(data).element()
    except DerError:
        return False
    return element.tag == SEQUENCE and element.end == len(data)


def _pem_to_der(data: bytes) -> bytes:
    blocks = _PEM_BLOCK.findall(data)
    labels = [label for label, _ in blocks]
    if any(b"PRIVATE KEY" in lb or b"PKCS12" in lb for lb in labels):
        raise _refuse(ErrorCode.PRIVATE_KEY_REFUSED)
    if re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", data):  # a key without its END line
        raise _refuse(ErrorCode.PRIVATE_KEY_REFUSED)
    certificates = [body for label, body in blocks if label in _PEM_CERT_LABELS]
    if len(certificates) > 1:
        raise _refuse(ErrorCode.NOT_A_CERTIFICATE, "several certificates")
    if not certificates:
        if re.search(rb"-----BEGIN (X509 )?CERTIFICATE-----", data):
            raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED, detail="truncated PEM")
        found = ", ".join(sorted({lb.decode("ascii") for lb in labels})) or "no PEM block"
        raise _refuse(ErrorCode.NOT_A_CERTIFICATE, found)
    body = re.sub(rb"\s+", b"", certificates[0])
    try:
        der = binascii.a2b_base64(body, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED, detail="bad base64") from exc
    if not der:
        raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED, detail="empty PEM block")
    return der


def _sniff_der(der: bytes) -> None:
    """Refuse keys, PKCS#12 and non-DER before asking cryptography (which says only "invalid")."""
    reader = DerReader(der)
    try:
        outer = reader.element()
    except DerError as exc:
        if _truncated_certificate(der):
            raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED, detail="truncated") from exc
        raise _refuse(ErrorCode.NOT_A_CERTIFICATE) from exc
    if outer.tag != SEQUENCE:
        raise _refuse(ErrorCode.NOT_A_CERTIFICATE)
    try:
        children = list(reader.children(outer))
    except DerError:
        return  # a SEQUENCE with a broken inside: looks like a damaged certificate
    if outer.end < len(der):
        try:
            next_tag: int | None = reader.element(outer.end).tag
        except DerError:
            next_tag = None
        if next_tag == SEQUENCE:
            raise _refuse(ErrorCode.NOT_A_CERTIFICATE, "several certificates")
    tags = [child.tag for child in children]
    if len(tags) >= 2 and tags[0] == INTEGER:
        # PKCS#8 / PKCS#1 / SEC 1 keys start with version 0 or 1; PKCS#12 PFX with version 3.
        raise _refuse(ErrorCode.PRIVATE_KEY_REFUSED)
    if tags == [SEQUENCE, OCTET_STRING]:  # EncryptedPrivateKeyInfo
        raise _refuse(ErrorCode.PRIVATE_KEY_REFUSED)
    if tags and tags[0] == OID:
        try:
            pkcs7 = reader.oid(children[0]) in _PKCS7_OIDS
        except DerError:
            pkcs7 = False
        raise _refuse(ErrorCode.NOT_A_CERTIFICATE, "PKCS#7" if pkcs7 else None)


def _truncated_certificate(der: bytes) -> bool:
    """A SEQUENCE header with a long-form length (0x81-0x83) whose content is cut short."""
    if len(der) < 8 or der[0] != SEQUENCE or der[1] not in (0x81, 0x82, 0x83):
        return False
    return der[DerReader(der).content_offset()] == SEQUENCE  # the TBSCertificate begins


def _malformed_or_other(der: bytes, exc: Exception) -> SwregError:
    for loader, what in (
        (x509.load_der_x509_crl, "a certificate revocation list"),
        (x509.load_der_x509_csr, "a certificate request"),
    ):
        try:
            loader(der)
        except Exception:
            continue
        return _refuse(ErrorCode.NOT_A_CERTIFICATE, what)
    return CertificateError(ErrorCode.CERTIFICATE_MALFORMED, detail=str(exc)[:200] or None)


def _parse(der: bytes, certificate: x509.Certificate) -> ParsedCertificate:
    try:
        # Touch every part we rely on now, so a broken certificate fails here with a code. The
        # issuer comes from a memo keyed by its exact DER: the same bytes parse the same way.
        subject_name = certificate.subject
        issuer = _issuer_of(der, certificate)
        extensions = certificate.extensions
        serial = certificate.serial_number
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
        algorithm = public_key_algorithm(certificate)
        usage: x509.KeyUsage | None = None
        sda: x509.Extension[x509.ExtensionType] | None = None
        for extension in extensions:  # one pass; the first of each, as get_extension_for_* does
            value = extension.value
            if usage is None and isinstance(value, x509.KeyUsage):
                usage = value
            elif sda is None and extension.oid == SDA_OID:
                sda = extension
        key_usage = _key_usage_names(usage)
        _ = certificate.signature_algorithm_oid
    except Exception as exc:
        raise CertificateError(
            ErrorCode.CERTIFICATE_MALFORMED, detail=str(exc)[:200] or type(exc).__name__
        ) from exc
    if serial <= 0:  # RFC 5280 §4.1.2.2; future cryptography releases refuse to parse these
        raise CertificateError(ErrorCode.CERTIFICATE_MALFORMED, detail="serial number not positive")
    attributes = _decode_sda(sda)
    subject_class = _first(attributes, SDA_SUBJECT_CLASS)
    ca = _class_to_ca(subject_class) if issuer.ca is None else issuer.ca
    serial_rdn, common_name, organization = _subject_values(subject_name)
    identity = CertificateIdentity(
        name=common_name,
        id_last4=_first(attributes, SDA_ID_LAST4),
        ubn=_ubn(ca, attributes, serial_rdn, common_name),
        oid=_first(attributes, SDA_OID_ATTRIBUTE),
        card_rank=_first(attributes, SDA_CARD_RANK),
        subject_class=subject_class,
        organization=organization,
    )
    return ParsedCertificate(
        der=der,
        certificate=certificate,
        fingerprint=hashlib.sha256(der).hexdigest(),
        serial_hex=format(serial, "X"),
        subject=name_string(subject_name),
        issuer=issuer.text,
        not_before=not_before,
        not_after=not_after,
        key_usage=key_usage,
        ca=ca,
        identity=identity,
        public_key_algorithm=algorithm,
        subject_serial_number=serial_rdn,
        directory_attributes=attributes,
        issuer_der=issuer.der,
    )


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class BoundedMemo(Generic[_K, _V]):
    """A small bounded map shared by threads: lock-free reads, the oldest entry leaves first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: dict[_K, _V] = {}
        self._lock = Lock()

    def get(self, key: _K) -> _V | None:
        return self._data.get(key)

    def put(self, key: _K, value: _V) -> _V:
        with self._lock:
            data = self._data
            if key not in data and len(data) >= self._size:
                del data[next(iter(data))]
            data[key] = value
        return value


@dataclass(frozen=True, slots=True)
class _IssuerName:
    """What a certificate's issuer name says, read once per distinct issuer DER."""

    der: bytes  # Name.public_bytes(): the key path building looks issuers up by
    text: str  # name_string()
    ca: IssuerCA | None  # None: the GPKI test CA, decided by the subject class


_ISSUERS: BoundedMemo[bytes, _IssuerName] = BoundedMemo(256)
_SUBJECTS: BoundedMemo[int, tuple[x509.Certificate, str]] = BoundedMemo(256)


def _issuer_of(der: bytes, certificate: x509.Certificate) -> _IssuerName:
    raw = _raw_issuer(der)
    found = _ISSUERS.get(raw) if raw is not None else None
    if found is not None:
        return found
    name = certificate.issuer
    found = _IssuerName(name.public_bytes(), name_string(name), _classify_name(name))
    if raw is not None:
        _ISSUERS.put(raw, found)
    return found


def _raw_issuer(der: bytes) -> bytes | None:
    """The issuer Name exactly as encoded in ``der`` (``None`` if the walk fails)."""
    reader = DerReader(der)
    try:
        tbs = next(reader.children(reader.element()), None)
        if tbs is None or tbs.tag != SEQUENCE:
            return None
        fields = reader.children(tbs)
        first = next(fields, None)
        if first is not None and first.tag == 0xA0:  # [0] version; v1 starts with the serial
            first = next(fields, None)
        next(fields, None)  # signature
        issuer = next(fields, None)
    except DerError:
        return None
    if first is None or issuer is None or issuer.tag != SEQUENCE:
        return None
    return der[issuer.start : issuer.end]


_SUBJECT_OIDS = {NameOID.SERIAL_NUMBER: 0, NameOID.COMMON_NAME: 1, NameOID.ORGANIZATION_NAME: 2}


def _subject_values(name: x509.Name) -> tuple[str | None, str | None, str | None]:
    """The first string serialNumber, CN and O of ``name``, in one pass."""
    found: list[str | None] = [None, None, None]
    for attribute in name:
        slot = _SUBJECT_OIDS.get(attribute.oid)
        if slot is not None and found[slot] is None and isinstance(attribute.value, str):
            found[slot] = attribute.value
    return found[0], found[1], found[2]


def _ubn(
    ca: IssuerCA,
    attributes: tuple[tuple[str, str], ...],
    serial_rdn: str | None,
    common_name: str | None,
) -> str | None:
    sda = _first(attributes, SDA_UBN)
    if sda is not None:
        return sda
    if ca is IssuerCA.MOEACA and serial_rdn is not None and _UBN.match(serial_rdn):
        return serial_rdn
    if ca is IssuerCA.TAICA and common_name is not None:
        match = _TAICA_CN.match(common_name)
        if match:
            return match.group(1)
    return None


def _class_to_ca(subject_class: str | None) -> IssuerCA:
    if subject_class is None:
        return IssuerCA.UNKNOWN
    arcs = subject_class.split(".")
    for prefix, ca in SUBJECT_CLASS_TO_CA:
        head = prefix.split(".")
        if arcs[: len(head)] == head:
            return ca
    return IssuerCA.UNKNOWN


def _normalise_ou(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip()
    if text.startswith(_TEST_MARKER):
        text = text[len(_TEST_MARKER) :].strip()
    return text


def _first(attributes: tuple[tuple[str, str], ...], oid: str) -> str | None:
    return next((v for k, v in attributes if k == oid), None)


# -- Subject Directory Attributes ---------------------------------------------------------------


def _decode_sda(
    extension: x509.Extension[x509.ExtensionType] | None,
) -> tuple[tuple[str, str], ...]:
    if extension is None:
        return ()
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    try:
        return parse_directory_attributes(raw)
    except DerError:
        return ()


def parse_directory_attributes(data: bytes) -> tuple[tuple[str, str], ...]:
    """``SEQUENCE OF Attribute {type OID, SET OF value}`` → ``(oid, first string value)`` pairs.

    Values may be any ASN.1 character string or an OBJECT IDENTIFIER (returned dotted). An
    attribute whose values are all of another type (a date, a structure) is left out. Raises
    ``ValueError`` (:class:`~engine.pki.der.DerError`) on malformed DER.
    """
    reader = DerReader(data)
    sda = reader.element()
    if sda.tag != SEQUENCE or sda.end != len(data):
        raise DerError("SDA is not one SEQUENCE")
    out: list[tuple[str, str]] = []
    for attribute in reader.children(sda):
        if attribute.tag != SEQUENCE:
            raise DerError("Attribute is not a SEQUENCE")
        parts = list(reader.children(attribute))
        if len(parts) != 2 or parts[0].tag != OID or parts[1].tag != SET:
            raise DerError("Attribute is not {OID, SET}")
        oid = reader.oid(parts[0])
        values = [reader.text(value) for value in reader.children(parts[1])]
        decoded = next((v for v in values if v is not None), None)
        if decoded is not None:
            out.append((oid, decoded))
    return tuple(out)
