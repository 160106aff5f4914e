"""One CRL, read and checked (pure; DESIGN.md §4a): what it says, who signed it, whether it is
stale, whether it lists a serial number.

:func:`read_crl` takes the bytes of a CRL (DER or PEM, at most :data:`MAX_CRL_BYTES`) and
refuses, with a :class:`CrlRefused` whose ``outcome`` is stable, data cut short (``truncated``:
a download that ended early), anything else that is not one CRL (``not_a_crl``), and CRLs whose
scope we cannot honour (``unsupported``: delta CRLs, indirect CRLs, CRLs partitioned by reason,
unknown critical extensions). The :class:`Crl` it returns answers:

- :attr:`Crl.info`: issuer, the issuer's key identifier (AKI), CRL number, this/next update, the
  issuingDistributionPoint partition (its full-name URIs) and the number of entries;
- :meth:`Crl.verify`: the candidate issuer certificate whose *key* signed it — candidates are
  narrowed by AKI/SKI and decided by the signature, never by name (GPKI CA generations share
  their names); ``unknown_issuer`` when no candidate's key identifier fits, ``signature_invalid``
  when none verifies;
- :meth:`Crl.is_stale`: past nextUpdate plus a grace (a CRL without nextUpdate is always stale);
- :meth:`Crl.lookup`: the entry of a serial number (revocation time, reason, whether it is a
  hold), O(1) once an index of ``serial → offset`` is built on first use (about 1.6 s and
  120 MiB for 1,000,000 entries); :meth:`Crl.entries` streams every entry (to store them).

Large CRLs: cryptography keeps the DER it was given without copying it and counts entries at
load, but ``get_revoked_certificate_by_serial_number`` scans the list (O(n): 0.14 s per lookup at
1,000,000 entries) and ``is_signature_valid`` re-encodes the whole TBS (1.2 s, +80 MiB). So the
signature is checked here over the TBS bytes sliced from the DER (a ``memoryview``, no copy), and
entries are read with the one DER reader (:mod:`engine.pki.der`) from the bytes cryptography has
already parsed strictly.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from engine._errors import ErrorCode, RefusedError
from engine.pki.der import (
    CONTEXT_0,
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    DerError,
    DerReader,
    Element,
    decode_time,
)

MAX_CRL_BYTES: Final = 256 * 1024 * 1024
"""The largest CRL read (DESIGN.md §4a: the fetcher's limit too)."""

_PEM_BEGIN: Final = b"-----BEGIN X509 CRL-----"
_PEM_END: Final = b"-----END X509 CRL-----"
_REASON_CODE_DER: Final = bytes.fromhex("0603551d15")
"""The OID of reasonCode (2.5.29.21), DER."""
_ENUMERATED: Final = 0x0A
_TIME_TAGS: Final = frozenset({0x17, 0x18})
_WEAK_HASHES: Final = (hashes.SHA1, hashes.MD5)

_REASONS: Final = MappingProxyType(
    {
        0: x509.ReasonFlags.unspecified,
        1: x509.ReasonFlags.key_compromise,
        2: x509.ReasonFlags.ca_compromise,
        3: x509.ReasonFlags.affiliation_changed,
        4: x509.ReasonFlags.superseded,
        5: x509.ReasonFlags.cessation_of_operation,
        6: x509.ReasonFlags.certificate_hold,
        8: x509.ReasonFlags.remove_from_crl,
        9: x509.ReasonFlags.privilege_withdrawn,
        10: x509.ReasonFlags.aa_compromise,
    }
)
"""RFC 5280 CRLReason codes (7 is unused)."""


class CrlOutcome(StrEnum):
    """Why a CRL was refused (stable: ``swreg revocation refresh`` reports these)."""

    TOO_LARGE = "too_large"
    TRUNCATED = "truncated"
    """The data ends before the CRL does: a download cut short."""
    NOT_A_CRL = "not_a_crl"
    UNSUPPORTED = "unsupported"
    """A delta or indirect CRL, one partitioned by reason, or an unknown critical extension."""
    UNKNOWN_ISSUER = "unknown_issuer"
    """No candidate issuer has the key identifier the CRL names."""
    SIGNATURE_INVALID = "signature_invalid"
    """No candidate issuer's key verifies the signature (forged, or signed by another key)."""


_CODES: Final = MappingProxyType(
    {
        CrlOutcome.TOO_LARGE: ErrorCode.FILE_TOO_LARGE,
        CrlOutcome.TRUNCATED: ErrorCode.NOT_A_CERTIFICATE,
        CrlOutcome.NOT_A_CRL: ErrorCode.NOT_A_CERTIFICATE,
        CrlOutcome.UNSUPPORTED: ErrorCode.NOT_A_CERTIFICATE,
        CrlOutcome.UNKNOWN_ISSUER: ErrorCode.CERTIFICATE_UNTRUSTED,
        CrlOutcome.SIGNATURE_INVALID: ErrorCode.SIGNATURE_INVALID,
    }
)


class CrlRefused(RefusedError):
    """A CRL refused: ``outcome`` says why; ``code`` is the matching error code."""

    def __init__(self, outcome: CrlOutcome, detail: str) -> None:
        super().__init__(_CODES[outcome], detail=detail, outcome=str(outcome))
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class CrlInfo:
    """What a CRL says about itself."""

    issuer: x509.Name
    issuer_key_id: bytes | None
    """The keyIdentifier of its authorityKeyIdentifier (the issuer's SKI), if any."""
    number: int | None
    this_update: datetime
    next_update: datetime | None
    partitioned: bool
    """Whether it carries an issuingDistributionPoint (it covers a part of the issuer's
    certificates: those naming one of ``partition`` as their distribution point)."""
    partition: tuple[str, ...]
    """The full-name URIs of its issuingDistributionPoint (``()`` when none)."""
    only_user_certs: bool
    only_ca_certs: bool
    entries: int


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One entry of a CRL."""

    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None

    @property
    def hold(self) -> bool:
        """``certificateHold``: a suspension that may be lifted, never final."""
        return self.reason is x509.ReasonFlags.certificate_hold


class Crl:
    """A CRL read by :func:`read_crl` (see the module docstring)."""

    __slots__ = ("_crl", "_der", "_index", "_revoked", "info")

    def __init__(
        self, der: bytes, crl: x509.CertificateRevocationList, info: CrlInfo, revoked: Element
    ) -> None:
        self._der = der
        self._crl = crl
        self._revoked = revoked
        self._index: dict[int, int] | None = None
        self.info = info

    @property
    def der(self) -> bytes:
        return self._der

    @property
    def crl(self) -> x509.CertificateRevocationList:
        """cryptography's view of it (its entry lookups are O(n): prefer :meth:`lookup`)."""
        return self._crl

    # -- who signed it ---------------------------------------------------------------------------

    def verify(self, candidates: Iterable[x509.Certificate]) -> x509.Certificate:
        """The candidate whose key signed this CRL; :class:`CrlRefused` when none did.

        Candidates whose SKI differs from the CRL's AKI are skipped (one without an SKI, or a
        CRL without an AKI, leaves the signature to decide); a candidate whose keyUsage lacks
        cRLSign never verifies. SHA-1 and MD5 signatures are refused.
        """
        aki = self.info.issuer_key_id
        matched = [c for c in candidates if aki is None or _ski(c) in (None, aki)]
        if not matched:
            raise CrlRefused(
                CrlOutcome.UNKNOWN_ISSUER,
                f"no issuer with key identifier {aki.hex() if aki else '-'}",
            )
        tbs, signature = self._signed_part()
        for candidate in matched:
            if _may_sign_crls(candidate) and _verifies(candidate, self._crl, tbs, signature):
                return candidate
        raise CrlRefused(
            CrlOutcome.SIGNATURE_INVALID,
            f"CRL of {_name(self.info.issuer)}: no candidate issuer's key verifies it",
        )

    def _signed_part(self) -> tuple[memoryview, bytes]:
        """The TBSCertList bytes (no copy) and the signature; the inner and outer signature
        algorithms must be the same (RFC 5280 §5.1.1.2)."""
        reader = DerReader(self._der)
        try:
            outer = reader.element()
            tbs, algorithm, _ = reader.parts(outer, SEQUENCE)
            inner = list(_first(reader.children(tbs), 3))
            inner_algorithm = inner[1] if inner[0].tag == INTEGER else inner[0]
        except (DerError, ValueError) as exc:  # cryptography has parsed it: not expected
            raise CrlRefused(CrlOutcome.NOT_A_CRL, "unreadable structure") from exc
        view = memoryview(self._der)
        if (
            view[inner_algorithm.start : inner_algorithm.end]
            != view[algorithm.start : algorithm.end]
        ):
            raise CrlRefused(CrlOutcome.SIGNATURE_INVALID, "inner and outer algorithms differ")
        return view[tbs.start : tbs.end], self._crl.signature

    # -- freshness -------------------------------------------------------------------------------

    def stale_after(self, grace: timedelta) -> datetime | None:
        """When it becomes stale: nextUpdate + ``grace`` (``None``: no nextUpdate, always)."""
        nxt = self.info.next_update
        return None if nxt is None else nxt + grace

    def is_stale(self, at: datetime, grace: timedelta) -> bool:
        """Whether it is stale at ``at`` (aware): past nextUpdate + ``grace``, or without
        nextUpdate."""
        limit = self.stale_after(grace)
        return limit is None or at > limit

    def covers_partition(self, distribution_points: Iterable[str]) -> bool:
        """Whether a certificate naming ``distribution_points`` (its CRL DP URIs) is in this
        CRL's scope: always for a CRL that is not partitioned, else when one URI matches."""
        if not self.info.partitioned:
            return True
        return not set(self.info.partition).isdisjoint(distribution_points)

    # -- entries ---------------------------------------------------------------------------------

    def lookup(self, serial: int) -> RevokedEntry | None:
        """The entry listing ``serial`` (``None`` when not listed or ``removeFromCRL``).

        O(1): the first call indexes every serial number (see the module docstring).
        """
        index = self._index
        if index is None:
            index = self._index = self._build_index()
        offset = index.get(serial)
        if offset is None:
            return None
        reader = DerReader(self._der)
        entry = _entry(reader, reader.element(offset, self._revoked.content_end, 2))
        return None if entry.reason is x509.ReasonFlags.remove_from_crl else entry

    def entries(self) -> Iterator[RevokedEntry]:
        """Every entry, in order, read one at a time."""
        reader = DerReader(self._der)
        revoked = self._revoked
        position, end = revoked.content, revoked.content_end
        while position < end:
            element = reader.element(position, end, 2)
            yield _entry(reader, element)
            position = element.end

    def serials(self) -> Iterator[int]:
        """Every serial number listed, in order (faster than :meth:`entries`)."""
        for serial, _ in self._serial_offsets():
            yield serial

    def _build_index(self) -> dict[int, int]:
        return dict(self._serial_offsets())

    def _serial_offsets(self) -> Iterator[tuple[int, int]]:
        reader = DerReader(self._der)
        data, element = self._der, reader.element
        position, end = self._revoked.content, self._revoked.content_end
        while position < end:
            entry = element(position, end, 2)
            serial = element(entry.content, entry.content_end, 3)
            yield int.from_bytes(data[serial.content : serial.content_end], signed=True), position
            position = entry.end


def read_crl(data: bytes, *, max_bytes: int = MAX_CRL_BYTES) -> Crl:
    """Read a CRL from DER or PEM bytes (see the module docstring for the refusals)."""
    if len(data) > max_bytes:
        raise CrlRefused(CrlOutcome.TOO_LARGE, f"more than {max_bytes} bytes")
    der = _der_of(data)
    reader = DerReader(der)
    try:
        outer = reader.element()
    except DerError as exc:
        outcome = CrlOutcome.TRUNCATED if _cut_short(der) else CrlOutcome.NOT_A_CRL
        raise CrlRefused(outcome, f"not one whole CRL: {exc}") from None
    if outer.tag != SEQUENCE or outer.end != len(der):
        raise CrlRefused(CrlOutcome.NOT_A_CRL, "not one DER element")
    try:
        crl = x509.load_der_x509_crl(der)
        extensions = crl.extensions
        entries = len(crl)
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
    except Exception as exc:  # cryptography's parse errors (ValueError and friends)
        raise CrlRefused(CrlOutcome.NOT_A_CRL, "not a CRL") from exc
    return Crl(
        der,
        crl,
        _info(crl, extensions, entries, this_update, next_update),
        _revoked_list(reader, outer),
    )


# -- reading -------------------------------------------------------------------------------------


def _der_of(data: bytes) -> bytes:
    start = data.find(_PEM_BEGIN)
    if start < 0:
        return data
    end = data.find(_PEM_END, start)
    if end < 0:
        raise CrlRefused(CrlOutcome.TRUNCATED, "PEM without its END line")
    try:
        return base64.b64decode(data[start + len(_PEM_BEGIN) : end])
    except (binascii.Error, ValueError):
        raise CrlRefused(CrlOutcome.NOT_A_CRL, "bad PEM") from None


def _cut_short(der: bytes) -> bool:
    """Whether ``der`` starts like a SEQUENCE whose header or content runs past its end."""
    if der[:1] != b"\x30":
        return False
    if len(der) < 2:
        return True
    first = der[1]
    if first <= 0x80:
        return first != 0x80 and 2 + first > len(der)
    count = first & 0x7F
    if count > 4:
        return False
    if 2 + count > len(der):
        return True
    return 2 + count + int.from_bytes(der[2 : 2 + count]) > len(der)


def _info(
    crl: x509.CertificateRevocationList,
    extensions: x509.Extensions,
    entries: int,
    this_update: datetime,
    next_update: datetime | None,
) -> CrlInfo:
    aki: bytes | None = None
    number: int | None = None
    idp: x509.IssuingDistributionPoint | None = None
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.DeltaCRLIndicator):
            raise CrlRefused(CrlOutcome.UNSUPPORTED, "a delta CRL")
        if isinstance(value, x509.AuthorityKeyIdentifier):
            aki = value.key_identifier
        elif isinstance(value, x509.CRLNumber):
            number = value.crl_number
        elif isinstance(value, x509.IssuingDistributionPoint):
            idp = value
        elif isinstance(value, x509.UnrecognizedExtension) and extension.critical:
            raise CrlRefused(
                CrlOutcome.UNSUPPORTED, f"critical extension {value.oid.dotted_string}"
            )
    uris: tuple[str, ...] = ()
    if idp is not None:
        if idp.indirect_crl or idp.only_some_reasons or idp.only_contains_attribute_certs:
            raise CrlRefused(
                CrlOutcome.UNSUPPORTED, "an indirect CRL, or one partitioned by reason"
            )
        uris = tuple(
            n.value for n in idp.full_name or () if isinstance(n, x509.UniformResourceIdentifier)
        )
    return CrlInfo(
        issuer=crl.issuer,
        issuer_key_id=aki,
        number=number,
        this_update=this_update,
        next_update=next_update,
        partitioned=idp is not None,
        partition=uris,
        only_user_certs=bool(idp and idp.only_contains_user_certs),
        only_ca_certs=bool(idp and idp.only_contains_ca_certs),
        entries=entries,
    )


def _revoked_list(reader: DerReader, outer: Element) -> Element:
    """The revokedCertificates SEQUENCE of the TBS (an empty one when the CRL has none)."""
    try:
        tbs = next(reader.children(outer))
        seen_time = False
        for part in reader.children(tbs):
            if part.tag in _TIME_TAGS:
                seen_time = True
            elif seen_time and part.tag == SEQUENCE:
                return part
            elif part.tag == CONTEXT_0:
                break
    except DerError as exc:  # cryptography has parsed it: not expected
        raise CrlRefused(CrlOutcome.NOT_A_CRL, "unreadable structure") from exc
    return Element(SEQUENCE, 0, 0, 0, 0, 1)


def _entry(reader: DerReader, entry: Element) -> RevokedEntry:
    """``SEQUENCE {serial INTEGER, revocationDate Time, crlEntryExtensions OPTIONAL}``; of the
    extensions only reasonCode is read (its OID compared as bytes: this runs per entry)."""
    data, element, end = reader.data, reader.element, entry.content_end
    serial = element(entry.content, end, 3)
    when = element(serial.end, end, 3)
    reason: x509.ReasonFlags | None = None
    if when.end < end:
        extensions = element(when.end, end, 3)
        position = extensions.content
        while position < extensions.content_end:
            extension = element(position, extensions.content_end, 4)
            position = extension.end
            oid = element(extension.content, extension.content_end, 5)
            if data[oid.start : oid.end] != _REASON_CODE_DER:
                continue
            value = element(oid.end, extension.content_end, 5)
            if value.tag != OCTET_STRING:  # a critical flag first
                value = element(value.end, extension.content_end, 5)
            code = element(value.content, value.content_end, 6)
            if value.tag == OCTET_STRING and code.tag == _ENUMERATED:
                number = int.from_bytes(data[code.content : code.content_end])
                reason = _REASONS.get(number, x509.ReasonFlags.unspecified)
    return RevokedEntry(
        int.from_bytes(data[serial.content : serial.content_end], signed=True),
        decode_time(when.tag, data[when.content : when.content_end]),
        reason,
    )


def _first(elements: Iterator[Element], count: int) -> Iterator[Element]:
    for index, element in enumerate(elements):
        if index == count:
            return
        yield element


# -- signatures ----------------------------------------------------------------------------------


def _verifies(
    candidate: x509.Certificate,
    crl: x509.CertificateRevocationList,
    tbs: memoryview,
    signature: bytes,
) -> bool:
    data = cast(bytes, tbs)  # cryptography takes any buffer (no copy); its stubs say bytes
    try:
        key = candidate.public_key()
        algorithm = crl.signature_hash_algorithm
        if isinstance(algorithm, _WEAK_HASHES):
            return False
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            parameters = crl.signature_algorithm_parameters
            if not isinstance(parameters, padding.PKCS1v15 | padding.PSS):
                return False
            key.verify(signature, data, parameters, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if algorithm is not None:
                return False
            key.verify(signature, data)
        else:
            return False
    except Exception:  # InvalidSignature, an unsupported algorithm, a key type mismatch
        return False
    return True


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except Exception:
        return None


def _may_sign_crls(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except Exception:
        return False
    return usage.crl_sign


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "an unreadable issuer"
