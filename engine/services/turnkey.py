"""Turnkey message verification (訊息簽章驗證): the hot path of DESIGN.md §5 and §10.

:meth:`TurnkeyVerifier.verify` takes the sender key (a UBN or a broker key such as ``A00001``),
a message and its detached signature, and answers which of the sender's registered signing
certificates (``purpose="signing"``, ``status="active"``, ``query_key == sender``) made it.

Signature formats, detected in this order:

- PEM (``-----BEGIN PKCS7-----`` / ``CMS``) or base64 text: decoded first (base64 is recognised
  when every byte is of the base64 alphabet and the decoded value has a plausible length);
- a detached CMS / PKCS#7 ``SignedData`` (DER), read by the small DER walker below (cryptography
  does not verify CMS): the SignerInfo's signature, digest algorithm (SHA-256 only) and, when
  signed attributes are present, the ``messageDigest`` (must equal SHA-256 of the message) and
  the signature over the attributes' DER re-tagged as ``SET``; ``signingTime`` becomes the
  default signing time;
- anything else is a raw signature: RSA PKCS#1 v1.5 with SHA-256, or ECDSA with SHA-256 as DER
  or raw ``r ‖ s``.

The hot path: each sender's candidates (public key objects, validity, revocation state) are
kept in memory and revalidated at most once per ``recheck_interval`` seconds by one indexed
query (the sender's active signing rows) plus the trust snapshot's version check; an entry is
also rebuilt when the earliest future notAfter of its certificates or nextUpdate of their CRLs
passes. Per message the cost is one SHA-256 of the message and normally one signature
verification: the digest is handed to cryptography as ``Prehashed``, and the candidate that
verified last is tried first, so a sender with several certificates does not pay a failed
verification per extra certificate. Cache fills hold a lock; reads take none.

Refusals (:class:`~engine.RefusedError` / :class:`~engine.CertificateError`): ``not_registered``
(no active signing certificate), ``certificate_expired`` / ``certificate_not_yet_valid`` (none
valid at the signing time), ``certificate_revoked`` (every valid one revoked),
``signature_invalid`` (none verifies, or the signature input is malformed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine._clock import Clock
from engine._errors import CertificateError, ErrorCode, RefusedError
from engine.services.trust import TrustService, TrustSnapshot
from engine.store import CRL, Certificate, Database

MAX_SIGNATURE_BYTES: Final = 256 * 1024
"""A signature input (raw, base64, PEM or CMS with its certificates) larger than this is refused."""

MAX_RAW_SIGNATURE_BYTES: Final = 1024
"""The largest raw signature: RSA-8192 (ECDSA P-521 DER is 139 bytes)."""

DEFAULT_RECHECK_INTERVAL: Final = 1.0
"""Seconds between two checks that a sender's cached certificates are still current."""

DEFAULT_MAX_SENDERS: Final = 50_000
"""Senders kept in the cache; the oldest entry is dropped beyond this."""

PURPOSE: Final = "signing"

_PKCS1: Final = padding.PKCS1v15()
_PREHASHED: Final = Prehashed(hashes.SHA256())
_ECDSA: Final = ec.ECDSA(_PREHASHED)
_BASE64_ALPHABET: Final = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \t\r\n"
)


class TurnkeyResult(NamedTuple):
    """A verified Turnkey message: who signed it, with which registered certificate, and when.

    ``serial`` is the certificate serial number as stored (upper-case hex), ``fingerprint`` its
    SHA-256 (hex), ``subject`` its RFC 4514 subject. (A named tuple: immutable and cheaper to
    make than a frozen dataclass, which matters on the hot path.)
    """

    sender: str
    fingerprint: str
    subject: str
    serial: str
    signed_at: datetime

    def certificate(self) -> dict[str, str]:
        """``{fingerprint, subject, serial}`` as the CLI and the API report it."""
        return {"fingerprint": self.fingerprint, "subject": self.subject, "serial": self.serial}


class TurnkeyVerifier:
    """Verifies Turnkey message signatures against the senders' registered signing certificates.

    ``recheck_interval`` (seconds) bounds how stale the per-sender cache may be: a certificate
    registered, deleted or replaced, a trust anchor or a CRL added, is seen by the first message
    after the interval (``0`` checks on every message, for tests). ``max_senders`` bounds the
    cache. Safe to share between threads.
    """

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        *,
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
        max_senders: int = DEFAULT_MAX_SENDERS,
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._interval = recheck_interval
        self._max_senders = max(1, max_senders)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    # -- the hot path ------------------------------------------------------------------------

    def verify(
        self,
        sender: str,
        message: bytes,
        signature: bytes | str,
        *,
        signed_at: datetime | None = None,
    ) -> TurnkeyResult:
        """Verify ``signature`` over ``message`` by one of ``sender``'s signing certificates.

        ``signature`` is raw bytes, base64 (bytes or text), or a detached CMS SignedData (DER
        or PEM). ``signed_at`` (naive means UTC) defaults to the CMS signingTime, else now.
        Raises ``not_registered``, ``certificate_expired``, ``certificate_not_yet_valid``,
        ``certificate_revoked`` or ``signature_invalid``.
        """
        data = signature.encode("latin-1", "replace") if isinstance(signature, str) else signature
        parsed = _parse_signature(data)
        message_hash = hashlib.sha256(message).digest()
        now = self._clock.now()
        entry = self._entry(sender, now)
        candidates = entry.candidates
        if not candidates:
            raise RefusedError(ErrorCode.NOT_REGISTERED, field="sender")
        if isinstance(parsed, bytes):
            at = now if signed_at is None else _aware(signed_at)
            # the usual case: the candidate that verified last does it again
            preferred = entry.preferred
            first = candidates[preferred]
            if first.usable(at) and first.verify(parsed, message_hash):
                return first.result(sender, at)
            found = self._search(entry, parsed, message_hash, at, None, skip=preferred)
            if found is not None:
                return found.result(sender, at)
            raise _refusal(candidates, [(parsed, message_hash, at)])
        attempts: list[tuple[bytes, bytes, datetime]] = []
        for signer in parsed:
            at = _aware(signed_at or signer.signing_time or now)
            digest = _cms_digest(signer, message_hash)
            if digest is None:
                continue
            attempts.append((signer.signature, digest, at))
            found = self._search(entry, signer.signature, digest, at, signer.serial)
            if found is not None:
                return found.result(sender, at)
        if not attempts:
            raise _invalid("messageDigest does not match the message")
        raise _refusal(candidates, attempts)

    def _search(
        self,
        entry: _Entry,
        signature: bytes,
        digest: bytes,
        at: datetime,
        serial: int | None,
        *,
        skip: int = -1,
    ) -> _Candidate | None:
        """Try the usable candidates (the CMS signer's serial first, else the one that verified
        last); remember the one that verifies."""
        candidates = entry.candidates
        order = list(range(len(candidates)))
        if serial is not None:
            order.sort(key=lambda i: candidates[i].serial != serial)
        else:
            preferred = entry.preferred
            order.sort(key=lambda i: i != preferred)
        for index in order:
            candidate = candidates[index]
            if index != skip and candidate.usable(at) and candidate.verify(signature, digest):
                entry.preferred = index
                return candidate
        return None

    # -- the cache ---------------------------------------------------------------------------

    def _entry(self, sender: str, now: datetime) -> _Entry:
        entry = self._entries.get(sender)
        if (
            entry is not None
            and time.monotonic() - entry.checked < self._interval
            and now < entry.expires_at
        ):
            return entry
        with self._lock:
            entry = self._entries.get(sender)  # another thread may have refreshed it
            if (
                entry is not None
                and time.monotonic() - entry.checked < self._interval
                and now < entry.expires_at
            ):
                return entry
            fresh = self._load(sender, entry, now)
            if sender not in self._entries and len(self._entries) >= self._max_senders:
                self._entries.pop(next(iter(self._entries)))
            self._entries[sender] = fresh
            return fresh

    def _load(self, sender: str, previous: _Entry | None, now: datetime) -> _Entry:
        """The sender's candidates: reused when rows, trust snapshot and deadline are unchanged."""
        checked = time.monotonic()
        with self._database.unit_of_work() as uow:
            snapshot = self._trust.snapshot(uow)
            query = (
                select(
                    Certificate.id,
                    Certificate.fingerprint,
                    Certificate.der,
                    Certificate.serial_hex,
                    Certificate.subject,
                )
                .where(
                    Certificate.query_key == sender,
                    Certificate.purpose == PURPOSE,
                    Certificate.status == "active",
                )
                .order_by(Certificate.id)
            )
            rows = uow.session.execute(query).all()
            version = tuple((row[0], row[1]) for row in rows)
            if (
                previous is not None
                and previous.version == version
                and previous.snapshot is snapshot
                and now < previous.expires_at
            ):
                previous.checked = checked
                return previous
            candidates: list[_Candidate] = []
            crl_deadlines: list[datetime] = []
            for _, fingerprint, der, serial_hex, subject in rows:
                candidate, issuer = _candidate(der, fingerprint, serial_hex, subject, snapshot)
                if candidate is None:
                    continue
                candidates.append(candidate)
                if issuer is not None:
                    next_update = _crl_next_update(uow.session, issuer)
                    if next_update is not None:
                        crl_deadlines.append(next_update)
        candidates.sort(key=lambda c: c.not_before, reverse=True)  # the newest card first
        deadlines = [c.not_after for c in candidates] + crl_deadlines
        future = [d for d in deadlines if d > now]  # a past deadline must not rebuild forever
        expires_at = min(future, default=datetime.max.replace(tzinfo=UTC))
        return _Entry(tuple(candidates), version, snapshot, expires_at, checked)

    def forget(self, sender: str | None = None) -> None:
        """Drop the cached candidates of ``sender`` (of every sender when None)."""
        with self._lock:
            if sender is None:
                self._entries.clear()
            else:
                self._entries.pop(sender, None)


# -- candidates --------------------------------------------------------------------------------


class _Candidate:
    """One registered signing certificate, parsed once: key, validity, revocation, identity."""

    __slots__ = (
        "ec_key",
        "ec_size",
        "fingerprint",
        "not_after",
        "not_before",
        "revoked",
        "rsa_key",
        "serial",
        "serial_hex",
        "subject",
    )

    def __init__(
        self,
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        certificate: x509.Certificate,
        fingerprint: str,
        serial_hex: str,
        subject: str,
        revoked: bool,
    ) -> None:
        self.rsa_key = key if isinstance(key, rsa.RSAPublicKey) else None
        self.ec_key = key if isinstance(key, ec.EllipticCurvePublicKey) else None
        self.ec_size = 0 if self.ec_key is None else (self.ec_key.curve.key_size + 7) // 8
        self.not_before = certificate.not_valid_before_utc
        self.not_after = certificate.not_valid_after_utc
        self.serial = certificate.serial_number
        self.fingerprint = fingerprint
        self.serial_hex = serial_hex
        self.subject = subject
        self.revoked = revoked

    def usable(self, at: datetime) -> bool:
        return not self.revoked and self.not_before <= at <= self.not_after

    def verify(self, signature: bytes, digest: bytes) -> bool:
        """Whether ``signature`` is this key's SHA-256 signature of ``digest`` (prehashed)."""
        try:
            if self.rsa_key is not None:
                self.rsa_key.verify(signature, digest, _PKCS1, _PREHASHED)
                return True
            key = self.ec_key
            if key is None:
                return False
            size = self.ec_size
            if len(signature) == 2 * size:  # raw r ‖ s, as PKCS#11 returns it
                raw = encode_dss_signature(
                    int.from_bytes(signature[:size], "big"),
                    int.from_bytes(signature[size:], "big"),
                )
                try:
                    key.verify(raw, digest, _ECDSA)
                    return True
                except InvalidSignature:
                    if signature[:1] != b"\x30":
                        return False
            key.verify(signature, digest, _ECDSA)  # DER
            return True
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False

    def result(self, sender: str, at: datetime) -> TurnkeyResult:
        return TurnkeyResult(sender, self.fingerprint, self.subject, self.serial_hex, at)


class _Entry:
    """A sender's cached candidates; ``preferred`` indexes the one that verified last."""

    __slots__ = ("candidates", "checked", "expires_at", "preferred", "snapshot", "version")

    def __init__(
        self,
        candidates: tuple[_Candidate, ...],
        version: tuple[tuple[int, str], ...],
        snapshot: TrustSnapshot,
        expires_at: datetime,
        checked: float,
    ) -> None:
        self.candidates = candidates
        self.version = version
        self.snapshot = snapshot
        self.expires_at = expires_at
        self.checked = checked
        self.preferred = 0


def _candidate(
    der: bytes, fingerprint: str, serial_hex: str, subject: str, snapshot: TrustSnapshot
) -> tuple[_Candidate | None, x509.Certificate | None]:
    """The parsed candidate and its issuer (when the trust store knows it); None if unusable."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None, None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return None, None
    issuer = _issuer(certificate, snapshot)
    revoked = issuer is not None and snapshot.revocation.is_revoked(certificate, issuer)
    candidate = _Candidate(key, certificate, fingerprint, serial_hex, subject, revoked)
    return candidate, issuer


def _issuer(certificate: x509.Certificate, snapshot: TrustSnapshot) -> x509.Certificate | None:
    """The trust store's certificate whose key signed ``certificate`` (anchor or intermediate).

    A CRL can only have been stored when its issuer is in the trust store, so an issuer the
    store does not know has no CRL to consult.
    """
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        key_id = aki.value.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    except ValueError:
        return None
    for candidate in snapshot.store.issuer_candidates(certificate.issuer, key_id):
        try:
            certificate.verify_directly_issued_by(candidate)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def _crl_next_update(session: Session, issuer: x509.Certificate) -> datetime | None:
    """nextUpdate of the newest stored CRL named after ``issuer`` (None when there is none)."""
    query = (
        select(CRL.next_update)
        .where(CRL.issuer == issuer.subject.rfc4514_string())
        .order_by(CRL.this_update.desc(), CRL.id.desc())
        .limit(1)
    )
    value: datetime | None = session.scalar(query)
    return value


def _refusal(
    candidates: Sequence[_Candidate], attempts: Sequence[tuple[bytes, bytes, datetime]]
) -> RefusedError:
    """Why no usable candidate verified (the cold path; its cost does not matter).

    When an unusable candidate verifies the signature, its own reason is given (out of its
    validity at the signing time, or revoked); otherwise: none valid at the signing time →
    ``certificate_expired`` (``certificate_not_yet_valid`` when all lie ahead), every valid
    one revoked → ``certificate_revoked``, else ``signature_invalid``.
    """
    for signature, digest, at in attempts:
        for candidate in candidates:
            if not candidate.usable(at) and candidate.verify(signature, digest):
                return _unusable(candidate, at)
    times = [at for _, _, at in attempts]
    in_time = [c for c in candidates if any(c.not_before <= at <= c.not_after for at in times)]
    if not in_time:
        if all(at < c.not_before for c in candidates for at in times):
            return CertificateError(ErrorCode.CERTIFICATE_NOT_YET_VALID, field="signature")
        return CertificateError(ErrorCode.CERTIFICATE_EXPIRED, field="signature")
    if all(c.revoked for c in in_time):
        return CertificateError(ErrorCode.CERTIFICATE_REVOKED, field="signature")
    return _invalid("no registered signing certificate of the sender verifies it")


def _unusable(candidate: _Candidate, at: datetime) -> CertificateError:
    if at < candidate.not_before:
        return CertificateError(ErrorCode.CERTIFICATE_NOT_YET_VALID, field="signature")
    if at > candidate.not_after:
        return CertificateError(ErrorCode.CERTIFICATE_EXPIRED, field="signature")
    return CertificateError(ErrorCode.CERTIFICATE_REVOKED, field="signature")


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# -- signature formats -------------------------------------------------------------------------


class _Signer(NamedTuple):
    """One signature to verify: raw, or a CMS SignerInfo's."""

    signature: bytes
    signed_attrs_digest: bytes | None  # SHA-256 of the signed attributes as a SET
    message_digest: bytes | None  # the messageDigest attribute
    signing_time: datetime | None
    serial: int | None = None  # the SignerInfo's issuerAndSerialNumber serial


def _invalid(detail: str) -> CertificateError:
    return CertificateError(ErrorCode.SIGNATURE_INVALID, field="signature", detail=detail)


def _parse_signature(data: bytes) -> bytes | list[_Signer]:
    """The raw signature, or the signers of a CMS SignedData (see the module docstring)."""
    if not data:
        raise _invalid("empty signature")
    if len(data) > MAX_SIGNATURE_BYTES:
        raise _invalid("signature too large")
    if data.lstrip()[:11] == b"-----BEGIN ":
        data = _decode_pem(data)
    elif not data.translate(None, _BASE64_ALPHABET):  # base64 text (raw bytes almost never are)
        decoded = _decode_text(data)
        if decoded is not None:
            data = decoded
    if data[0] == 0x30 and _is_content_info(data):
        return _parse_cms(data)
    if len(data) > MAX_RAW_SIGNATURE_BYTES:
        raise _invalid("not a signature")
    return data


def _decode_text(data: bytes) -> bytes | None:
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


# -- a small DER walker for CMS ----------------------------------------------------------------

_OID_SIGNED_DATA: Final = bytes.fromhex("2a864886f70d010702")
_OID_CONTENT_TYPE: Final = bytes.fromhex("2a864886f70d010903")
_OID_MESSAGE_DIGEST: Final = bytes.fromhex("2a864886f70d010904")
_OID_SIGNING_TIME: Final = bytes.fromhex("2a864886f70d010905")
_OID_SHA256: Final = bytes.fromhex("608648016503040201")
_SIGNATURE_ALGORITHMS: Final = frozenset(
    bytes.fromhex(h)
    for h in (
        "2a864886f70d010101",  # rsaEncryption
        "2a864886f70d01010b",  # sha256WithRSAEncryption
        "2a8648ce3d040302",  # ecdsa-with-SHA256
        "2a8648ce3d0201",  # id-ecPublicKey
    )
)
_MAX_DEPTH: Final = 32

_SEQUENCE, _SET, _INTEGER, _OCTETS, _OID = 0x30, 0x31, 0x02, 0x04, 0x06
_CTX0, _CTX0_PRIMITIVE = 0xA0, 0x80
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18


class _Malformed(Exception):
    """The DER walker met something it cannot read."""


class _Tlv(NamedTuple):
    """One element: its tag, where it starts, its content [content, content_end), its end."""

    tag: int
    start: int
    content: int
    content_end: int
    end: int


def _element(data: bytes, pos: int, limit: int, depth: int = 0) -> _Tlv:
    """The element at ``pos`` (BER indefinite lengths allowed on constructed elements)."""
    if depth > _MAX_DEPTH or pos + 2 > limit:
        raise _Malformed("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _Malformed("high tag number")
    first = data[pos + 1]
    content = pos + 2
    if first == 0x80:
        if not tag & 0x20:
            raise _Malformed("indefinite length on a primitive element")
        child = content
        while True:
            if child + 2 > limit:
                raise _Malformed("unterminated indefinite length")
            if data[child] == 0 and data[child + 1] == 0:
                return _Tlv(tag, pos, content, child, child + 2)
            child = _element(data, child, limit, depth + 1).end
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if size > 4 or content + size > limit:
            raise _Malformed("bad length")
        length = int.from_bytes(data[content : content + size], "big")
        content += size
    if content + length > limit:
        raise _Malformed("truncated")
    return _Tlv(tag, pos, content, content + length, content + length)


def _children(data: bytes, parent: _Tlv, depth: int = 0) -> Iterator[_Tlv]:
    pos = parent.content
    while pos < parent.content_end:
        child = _element(data, pos, parent.content_end, depth + 1)
        yield child
        pos = child.end


def _parts(data: bytes, parent: _Tlv, tag: int) -> list[_Tlv]:
    """The children of ``parent``, which must carry ``tag``."""
    return list(_children(data, _expect(parent, tag)))


def _expect(element: _Tlv | None, tag: int) -> _Tlv:
    if element is None or element.tag != tag:
        raise _Malformed(f"expected tag {tag:#04x}")
    return element


def _body(data: bytes, element: _Tlv | None, tag: int) -> bytes:
    """The content of ``element``, which must carry ``tag``."""
    found = _expect(element, tag)
    return data[found.content : found.content_end]


def _first(elements: Sequence[_Tlv], index: int = 0) -> _Tlv | None:
    return elements[index] if index < len(elements) else None


def _is_content_info(data: bytes) -> bool:
    """Whether ``data`` starts like a ContentInfo of type signedData (its header only)."""
    if len(data) < 4 or data[0] != _SEQUENCE:
        return False
    first = data[1]
    content = 2 + (first & 0x7F if first > 0x80 else 0)
    try:
        oid = _element(data, content, len(data))
    except _Malformed:
        return False
    return oid.tag == _OID and data[oid.content : oid.content_end] == _OID_SIGNED_DATA


def _parse_cms(data: bytes) -> list[_Signer]:
    try:
        return _signers(data)
    except _Malformed as exc:
        raise _invalid(f"unreadable CMS SignedData ({exc})") from None
    except (IndexError, ValueError, OverflowError, UnicodeDecodeError):
        raise _invalid("unreadable CMS SignedData") from None


def _signers(data: bytes) -> list[_Signer]:
    """The SignerInfos of a ContentInfo { signedData, [0] SignedData } (RFC 5652 §5)."""
    content_info = _element(data, 0, len(data))
    if data[content_info.end :].strip(b"\x00"):
        raise _Malformed("trailing data")
    outer = _parts(data, content_info, _SEQUENCE)
    if _body(data, _first(outer), _OID) != _OID_SIGNED_DATA:
        raise _Malformed("not signedData")
    wrapped = _parts(data, _expect(_first(outer, 1), _CTX0), _CTX0)
    parts = _parts(data, _expect(_first(wrapped), _SEQUENCE), _SEQUENCE)
    if len(parts) < 4:
        raise _Malformed("short SignedData")
    _expect(parts[0], _INTEGER)
    _expect(parts[1], _SET)
    encapsulated = _parts(data, parts[2], _SEQUENCE)
    content_type = _body(data, _first(encapsulated), _OID)
    embedded: bytes | None = None
    if len(encapsulated) > 1:  # not detached: the content must then be the message
        explicit = _parts(data, encapsulated[1], _CTX0)
        embedded = _body(data, _first(explicit), _OCTETS)
    infos = _parts(data, parts[-1], _SET)
    if not infos:
        raise _Malformed("no SignerInfo")
    return [_signer(data, info, content_type, embedded) for info in infos]


def _signer(data: bytes, info: _Tlv, content_type: bytes, embedded: bytes | None) -> _Signer:
    """One SignerInfo: version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm,
    signature."""
    parts = _parts(data, info, _SEQUENCE)
    if len(parts) < 5:
        raise _Malformed("short SignerInfo")
    _expect(parts[0], _INTEGER)
    serial: int | None = None
    if parts[1].tag == _SEQUENCE:  # issuerAndSerialNumber
        number = _body(data, _first(_parts(data, parts[1], _SEQUENCE), 1), _INTEGER)
        serial = int.from_bytes(number, "big", signed=True)
    elif parts[1].tag != _CTX0_PRIMITIVE:  # [0] subjectKeyIdentifier
        raise _Malformed("bad signer identifier")
    if _body(data, _first(_parts(data, parts[2], _SEQUENCE)), _OID) != _OID_SHA256:
        raise _Malformed("digest algorithm is not SHA-256")
    index = 3
    attributes: _Tlv | None = None
    if parts[index].tag == _CTX0:
        attributes = parts[index]
        index += 1
    algorithm = _body(data, _first(_parts(data, parts[index], _SEQUENCE)), _OID)
    if algorithm not in _SIGNATURE_ALGORITHMS:
        raise _Malformed("signature algorithm not supported")
    signature = _body(data, _first(parts, index + 1), _OCTETS)
    embedded_digest = None if embedded is None else hashlib.sha256(embedded).digest()
    if attributes is None:
        return _Signer(signature, None, embedded_digest, None, serial)
    if data[attributes.start + 1] == 0x80:
        raise _Malformed("signed attributes are not DER")
    digest, signing_time = _signed_attributes(data, attributes, content_type)
    if embedded_digest is not None and not hmac.compare_digest(digest, embedded_digest):
        raise _Malformed("the embedded content does not match messageDigest")
    as_set = b"\x31" + data[attributes.start + 1 : attributes.end]
    return _Signer(signature, hashlib.sha256(as_set).digest(), digest, signing_time, serial)


def _signed_attributes(
    data: bytes, attributes: _Tlv, content_type: bytes
) -> tuple[bytes, datetime | None]:
    """The messageDigest (required) and signingTime of signed attributes; contentType checked."""
    digest: bytes | None = None
    signing_time: datetime | None = None
    for attribute in _children(data, attributes):
        pair = _parts(data, attribute, _SEQUENCE)
        kind = _body(data, _first(pair), _OID)
        value = _first(_parts(data, _expect(_first(pair, 1), _SET), _SET))
        if value is None:
            raise _Malformed("attribute without a value")
        if kind == _OID_MESSAGE_DIGEST:
            digest = _body(data, value, _OCTETS)
        elif kind == _OID_CONTENT_TYPE:
            if _body(data, value, _OID) != content_type:
                raise _Malformed("contentType attribute does not match")
        elif kind == _OID_SIGNING_TIME:
            signing_time = _time(value.tag, data[value.content : value.content_end])
    if digest is None:
        raise _Malformed("no messageDigest attribute")
    return digest, signing_time


def _time(tag: int, body: bytes) -> datetime:
    """A UTCTime or GeneralizedTime (``Z``, optional fraction) as aware UTC."""
    text = body.decode("ascii")
    if not text.endswith("Z"):
        raise _Malformed("time without Z")
    text = text[:-1].split(".", 1)[0]
    if tag == _UTC_TIME and len(text) == 12:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME or len(text) != 14:
        raise _Malformed("bad time")
    if not text.isdigit():
        raise _Malformed("bad time")
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _cms_digest(signer: _Signer, message_hash: bytes) -> bytes | None:
    """What a CMS signer signed (the signed attributes' digest, else the message's digest);
    None when its messageDigest (or embedded content) is not the message's."""
    if signer.message_digest is not None and not hmac.compare_digest(
        signer.message_digest, message_hash
    ):
        return None
    return signer.signed_attrs_digest or message_hash
