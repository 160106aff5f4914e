"""What the stored CRLs say about a certificate, and the shape of a revocation verdict (pure;
DESIGN.md §4a).

A :class:`RevocationIndex` is built from the stored CRLs each time they change: every CRL's
signature is checked against its issuer from the :class:`TrustStore` — matched by *key*, never
by name (MOICA G2 and G3 share a DN but not a key) — and the newest CRL per issuer key and
partition (its issuingDistributionPoint) is kept. :meth:`RevocationIndex.answer` then says, for
one certificate and its issuer:

- ``revoked`` when a kept CRL of the issuer lists it, *even a stale one or another partition's*:
  a revocation is final. A hold (``certificateHold``) counts only in a fresh CRL covering it;
- ``good`` when a fresh CRL covering the certificate (its partition, and its user/CA scope) does
  not list it;
- ``unknown`` otherwise: ``no_crl`` (no CRL covers it) or ``stale`` (past nextUpdate + grace).

Lookups are O(1): each CRL indexes its serial numbers on first use (:meth:`Crl.lookup`).

:class:`RevocationVerdict` is what the revocation service decides for a whole path (OCSP and
CRLs together, DESIGN.md §4a) and what is stored as evidence and shown by ``cert inspect``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine._errors import CertificateError, ErrorCode, RefusedError
from engine.pki.certificate import BoundedMemo
from engine.pki.crl import Crl, CrlRefused, read_crl
from engine.pki.trust import TrustStore

IssuerKey = bytes
"""SHA-256 of the issuer's SubjectPublicKeyInfo: what a CRL and its certificates share."""

NO_CRL: Final = "no_crl"
"""The problem when no stored CRL of the issuer covers the certificate."""
STALE: Final = "stale"
"""The problem when the CRLs covering the certificate are past nextUpdate + grace."""


class RevocationStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class RevocationSource(StrEnum):
    """The source of a final answer (``none``: no source answered)."""

    OCSP = "ocsp"
    CRL = "crl"
    NONE = "none"


def load_crl(data: bytes) -> Crl:
    """A CRL from DER or PEM bytes (``swreg crl add``); anything else → ``not_a_certificate``."""
    try:
        return read_crl(data)
    except CrlRefused as exc:
        if exc.code is ErrorCode.FILE_TOO_LARGE:
            raise RefusedError(ErrorCode.FILE_TOO_LARGE, detail="CRL too large") from exc
        raise RefusedError(ErrorCode.NOT_A_CERTIFICATE, detail="not a CRL") from exc


def issuer_key(issuer: x509.Certificate) -> IssuerKey:
    """The index key of ``issuer``: SHA-256 of its SubjectPublicKeyInfo."""
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def distribution_points(certificate: x509.Certificate) -> tuple[str, ...]:
    """The full-name URIs of ``certificate``'s CRL distribution points (``()`` when none)."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except Exception:  # none, or unreadable: no partition named
        return ()
    return tuple(
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    )


def is_ca_certificate(certificate: x509.Certificate) -> bool:
    """basicConstraints cA (a CA-only or user-only CRL partition is chosen by it)."""
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except Exception:
        return False


@dataclass(frozen=True, slots=True)
class CrlAnswer:
    """What the stored CRLs say about one certificate (see the module docstring)."""

    status: RevocationStatus
    crl_number: int | None = None
    """The number of the CRL the answer rests on (``None`` when none did, or it has none)."""
    this_update: datetime | None = None
    next_update: datetime | None = None
    reason: x509.ReasonFlags | None = None
    revoked_at: datetime | None = None
    problem: str | None = None
    """:data:`NO_CRL` or :data:`STALE` for ``unknown``."""


class RevocationIndex:
    """The newest CRL per issuer key and partition (see the module docstring)."""

    def __init__(self, crls: Mapping[IssuerKey, tuple[Crl, ...]]) -> None:
        self._crls = MappingProxyType(dict(crls))
        # issuer → key, by identity (hashing a Certificate serialises it); holding the issuer
        # keeps its id from being reused while the entry exists
        self._keys: BoundedMemo[int, tuple[x509.Certificate, IssuerKey]] = BoundedMemo(256)

    @classmethod
    def empty(cls) -> RevocationIndex:
        return cls({})

    @classmethod
    def build(
        cls,
        crls: Iterable[Crl | x509.CertificateRevocationList],
        trust: TrustStore,
        *,
        issuers: Sequence[x509.Certificate] = (),
    ) -> RevocationIndex:
        """Verify every CRL and keep the newest one per issuer key and partition.

        The issuer is looked up in ``trust`` (plus ``issuers``) by name and key identifier; the
        one whose key signed the CRL must chain to a trust anchor, otherwise
        ``CertificateError("certificate_untrusted")``. Delta and indirect CRLs are refused
        (``not_a_certificate``): configure complete CRLs.
        """
        newest: dict[tuple[IssuerKey, tuple[str, ...], bool, bool], Crl] = {}
        for item in crls:
            crl = item if isinstance(item, Crl) else load_crl(item.public_bytes(_DER))
            key = issuer_key(verified_issuer(crl, trust, issuers))
            info = crl.info
            slot = (key, info.partition, info.only_user_certs, info.only_ca_certs)
            kept = newest.get(slot)
            if kept is None or _order(crl) > _order(kept):
                newest[slot] = crl
        grouped: dict[IssuerKey, list[Crl]] = {}
        for (key, *_), crl in newest.items():
            grouped.setdefault(key, []).append(crl)
        return cls({key: tuple(found) for key, found in grouped.items()})

    def __bool__(self) -> bool:
        return bool(self._crls)

    def answer(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        *,
        at: datetime,
        grace: timedelta,
    ) -> CrlAnswer:
        """What the CRLs of ``issuer`` say about ``certificate`` at ``at`` (module docstring)."""
        crls = self._crls.get(self._key(issuer)) if self._crls else None
        if not crls:
            return CrlAnswer(RevocationStatus.UNKNOWN, problem=NO_CRL)
        serial = certificate.serial_number
        for crl in crls:
            entry = crl.lookup(serial)
            if entry is not None and not entry.hold:
                return _answer(crl, RevocationStatus.REVOKED, entry.reason, entry.revoked_at)
        points = distribution_points(certificate)
        is_ca = is_ca_certificate(certificate)
        fresh: Crl | None = None
        stale = False
        for crl in crls:
            if not _covers(crl, points, is_ca):
                continue
            if crl.is_stale(at, grace):
                stale = True
                continue
            entry = crl.lookup(serial)
            if entry is not None:  # a hold, in force
                return _answer(crl, RevocationStatus.REVOKED, entry.reason, entry.revoked_at)
            if fresh is None or _order(crl) > _order(fresh):
                fresh = crl
        if fresh is not None:
            return _answer(fresh, RevocationStatus.GOOD)
        return CrlAnswer(RevocationStatus.UNKNOWN, problem=STALE if stale else NO_CRL)

    def crls_of(self, issuer: x509.Certificate) -> tuple[Crl, ...]:
        """The kept CRLs of ``issuer`` (one per partition)."""
        return self._crls.get(self._key(issuer), ()) if self._crls else ()

    def _key(self, issuer: x509.Certificate) -> IssuerKey:
        known = self._keys.get(id(issuer))
        if known is not None and known[0] is issuer:
            return known[1]
        key = issuer_key(issuer)
        self._keys.put(id(issuer), (issuer, key))
        return key


def verified_issuer(
    crl: Crl, trust: TrustStore, issuers: Sequence[x509.Certificate] = ()
) -> x509.Certificate:
    """The trusted CA certificate whose key signed ``crl`` (``certificate_untrusted`` if none)."""
    candidates = trust.issuer_candidates(crl.info.issuer, crl.info.issuer_key_id, extra=issuers)
    for candidate in candidates:
        try:
            signer = crl.verify([candidate])
            trust.build_path(signer, extra=issuers)
        except (CrlRefused, CertificateError):
            continue
        return signer
    raise CertificateError(
        ErrorCode.CERTIFICATE_UNTRUSTED,
        detail=f"CRL of {_name(crl.info.issuer)}: no trusted issuer verifies its signature",
    )


class RevocationCheck(Protocol):
    """The service's revocation check of a trusted path, bound to a trust snapshot: the verdict
    to keep, or ``certificate_revoked`` / ``revocation_unknown`` raised. ``network=False`` reads
    only what is known already (the OCSP cache, the stored CRLs)."""

    def __call__(
        self, chain: Sequence[x509.Certificate], *, network: bool = True
    ) -> RevocationVerdict: ...


def raise_known_revocation(check: RevocationCheck, chain: Sequence[x509.Certificate]) -> None:
    """For an answer whose signature failed: ``certificate_revoked`` when the revocation is
    known without asking the network (DESIGN.md §4 puts revocation before the signature),
    nothing otherwise: a response that does not prove the card's key never makes the server
    contact a responder or fetch a CRL."""
    try:
        check(chain, network=False)
    except CertificateError as exc:
        if exc.code is ErrorCode.CERTIFICATE_REVOKED:
            raise


@dataclass(frozen=True, slots=True)
class RevocationVerdict:
    """The revocation status of a certificate path, with the evidence it rests on.

    ``status``/``source``/``reason``/``revoked_at``/``checked_at`` are those of the certificate
    the verdict is about (``subject``: the first revoked or unknown one of the path, else the
    end-entity certificate); ``tried`` lists every source asked for every certificate of the
    path, in order. ``ocsp_response`` (DER) or ``crl_number`` is the evidence of the end-entity
    certificate's answer. ``policy`` is ``"soft"`` when an ``unknown`` status was accepted
    under ``SWREG_REVOCATION_POLICY=soft``. ``valid_until``: when the answers used run out
    (the earliest OCSP cache limit or CRL staleness), ``None`` when unknown.
    """

    status: RevocationStatus
    source: RevocationSource
    checked_at: datetime | None
    subject: str = ""
    tried: tuple[Mapping[str, Any], ...] = ()
    reason: x509.ReasonFlags | None = None
    revoked_at: datetime | None = None
    ocsp_response: bytes = field(default=b"", repr=False)
    crl_number: int | None = None
    policy: str | None = None
    valid_until: datetime | None = None

    def accepted_softly(self) -> RevocationVerdict:
        return replace(self, policy="soft")

    def as_dict(self) -> dict[str, Any]:
        """``cert inspect --json``'s ``revocation`` object (DESIGN.md §4a)."""
        return {
            "status": self.status.value,
            "source": self.source.value,
            "tried": [dict(t) for t in self.tried],
            "checked_at": _iso(self.checked_at),
            "reason": self.reason.name if self.reason is not None else None,
            "revoked_at": _iso(self.revoked_at),
        }

    def as_evidence(self) -> dict[str, Any]:
        """What is stored with a registration, login or import (``evidence.revocation``)."""
        evidence = {
            **self.as_dict(),
            "subject": self.subject,
            "crl_number": str(self.crl_number) if self.crl_number is not None else None,
            "ocsp_response": (
                base64.b64encode(self.ocsp_response).decode() if self.ocsp_response else None
            ),
        }
        if self.policy is not None:
            evidence["policy"] = self.policy
        return evidence

    def audit(self, *, response: bool = True) -> dict[str, Any]:
        """What an audit row's diff carries: the status, its source and the evidence of the
        end-entity certificate's answer — the CRL number, or the OCSP response (base64) — so that
        a login or an import (which keep no evidence column) can be shown later.
        ``response=False`` leaves the OCSP response out (a registration keeps it as evidence)."""
        short: dict[str, Any] = {"status": self.status.value, "source": self.source.value}
        if self.policy is not None:
            short["policy"] = self.policy
        if self.crl_number is not None:
            short["crl_number"] = str(self.crl_number)
        if response and self.ocsp_response:
            short["ocsp_response"] = base64.b64encode(self.ocsp_response).decode()
        return short


_DER: Final = serialization.Encoding.DER


def _order(crl: Crl) -> tuple[int, datetime]:
    number = crl.info.number
    return (-1 if number is None else number, crl.info.this_update)


def _covers(crl: Crl, points: Sequence[str], is_ca: bool) -> bool:
    info = crl.info
    if (info.only_user_certs and is_ca) or (info.only_ca_certs and not is_ca):
        return False
    if info.partitioned and not info.partition:  # a scope without a name: all of that scope
        return True  # (RFC 5280 §5.2.5, e.g. a root's CA-only CRL)
    return crl.covers_partition(points)


def _answer(
    crl: Crl,
    status: RevocationStatus,
    reason: x509.ReasonFlags | None = None,
    revoked_at: datetime | None = None,
) -> CrlAnswer:
    info = crl.info
    return CrlAnswer(
        status,
        crl_number=info.number,
        this_update=info.this_update,
        next_update=info.next_update,
        reason=reason,
        revoked_at=revoked_at,
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "an unreadable issuer"
