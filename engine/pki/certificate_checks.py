"""The ordered certificate checks of the card check (DESIGN.md §4), and ``cert inspect`` (§9).

Pure. :func:`check_login_certificate` runs, in this order, stopping at the first failure with its
code::

    classify    issuing CA known (MOICA/MOEACA/XCA/GCA/TaiCA)  certificate_untrusted
    chain       a verified path to a trust anchor               certificate_untrusted
    validity    the certificate and its intermediates           certificate_expired /
                                                                certificate_not_yet_valid
    key usage   keyUsage present with digitalSignature          certificate_key_usage
    profile     the applicant type accepts this CA / card rank  certificate_type_mismatch

Revocation (``certificate_revoked`` / ``revocation_unknown``) follows in the service, which asks
the one revocation check (:mod:`engine.services.revocation_checks`: OCSP and CRLs, the policy);
so do the signature over the challenge (:func:`verify_signature`) and "not already registered",
which need the challenge and the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from engine._errors import CertificateError, ErrorCode
from engine.core.declarations import CertificateProfile, IssuerCA
from engine.pki.certificate import ParsedCertificate, subject_text
from engine.pki.revocation import RevocationStatus, RevocationVerdict
from engine.pki.signatures import SignatureKey
from engine.pki.trust import TrustStore, check_validity

Status = Literal["valid", "expired", "not_yet_valid", "untrusted", "revoked", "revocation_unknown"]


@dataclass(frozen=True, slots=True)
class CertificateVerdict:
    """A login certificate that passed the pure checks; ``chain`` runs from the certificate to
    its trust anchor (the path the revocation check is asked about)."""

    parsed: ParsedCertificate
    chain: tuple[x509.Certificate, ...]
    checked_at: datetime


def check_login_certificate(
    parsed: ParsedCertificate,
    *,
    trust: TrustStore,
    at: datetime,
    profile: CertificateProfile | None,
    extra: Sequence[x509.Certificate] = (),
) -> CertificateVerdict:
    """Run the checks in order (module docstring); raise the first failure's ``CertificateError``.

    ``profile=None`` skips the profile step. ``extra`` are untrusted intermediates the card sent
    along.
    """
    if parsed.ca is IssuerCA.UNKNOWN:
        raise CertificateError(
            ErrorCode.CERTIFICATE_UNTRUSTED, detail=f"unknown issuer {parsed.issuer}"
        )
    chain = trust.build_path(parsed, extra=extra)
    check_chain_validity(chain, trust=trust, at=at)
    check_key_usage(parsed)
    if profile is not None and not profile.accepts(parsed.ca, parsed.identity):
        rank = f", card rank {parsed.identity.card_rank}" if parsed.identity.card_rank else ""
        raise CertificateError(
            ErrorCode.CERTIFICATE_TYPE_MISMATCH, detail=f"{parsed.ca.value} certificate{rank}"
        )
    return CertificateVerdict(parsed=parsed, chain=chain, checked_at=at)


def check_chain_validity(
    chain: Sequence[x509.Certificate], *, trust: TrustStore, at: datetime
) -> None:
    """The certificate and every intermediate must be valid at ``at`` (bounds inclusive).

    Trust anchors are configuration, not checked for time (RFC 5280 §6.1.1).
    """
    for cert in chain:
        if cert is not chain[0] and trust.is_anchor(cert):
            continue
        try:
            check_validity(cert, at)
        except CertificateError as exc:
            if cert is chain[0]:
                raise
            raise CertificateError(
                exc.code, detail=f"issuing CA {subject_text(cert)}: {exc.detail}"
            ) from exc


def check_key_usage(parsed: ParsedCertificate) -> None:
    """A login certificate must carry keyUsage with digitalSignature (``certificate_key_usage``).

    The encryption certificate of a card (keyEncipherment + dataEncipherment) is refused here.
    """
    if "digital_signature" not in parsed.key_usage:
        found = ", ".join(parsed.key_usage) or "no keyUsage"
        raise CertificateError(ErrorCode.CERTIFICATE_KEY_USAGE, detail=found)


def verify_signature(cert: x509.Certificate, signature: bytes, message: bytes) -> None:
    """Verify a SHA-256 signature by ``cert``'s key over ``message``.

    RSA: PKCS#1 v1.5. ECDSA: DER, or raw ``r ‖ s`` (each the curve's byte size, as PKCS#11 and
    many card middlewares return it); see :mod:`engine.pki.signatures`. Another key type, or a
    bad signature → ``signature_invalid``.
    """
    try:
        key = SignatureKey.of(cert.public_key())  # not cached: a login cert is rarely seen twice
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(ErrorCode.SIGNATURE_INVALID, detail="unreadable key") from exc
    if key is None:
        raise CertificateError(ErrorCode.SIGNATURE_INVALID, detail="unsupported key type")
    if not key.verifies(signature, message):
        raise CertificateError(ErrorCode.SIGNATURE_INVALID)


def certificate_status(
    parsed: ParsedCertificate, *, trust: TrustStore, at: datetime
) -> tuple[Status, tuple[x509.Certificate, ...]]:
    """The ``cert inspect`` status before revocation, and the chain (just the certificate when
    untrusted)."""
    try:
        chain = trust.build_path(parsed)
    except CertificateError:
        return "untrusted", (parsed.certificate,)
    try:
        check_chain_validity(chain, trust=trust, at=at)
    except CertificateError as exc:
        status: Status = "expired" if exc.code is ErrorCode.CERTIFICATE_EXPIRED else "not_yet_valid"
        return status, chain
    return "valid", chain


def inspect(
    parsed: ParsedCertificate,
    *,
    status: Status,
    chain: Sequence[x509.Certificate],
    revocation: RevocationVerdict | None,
    accepted_by: Sequence[str],
) -> dict[str, Any]:
    """What ``swreg cert inspect --json`` reports (DESIGN.md §9, §4a), key for key.

    ``status`` and ``chain`` come from :func:`certificate_status`; ``revocation`` is the
    revocation check's verdict on that chain (``None`` when the chain is untrusted: nothing was
    asked). A ``valid`` status becomes ``revoked`` or ``revocation_unknown`` accordingly.
    Times are ``isoformat()`` of aware UTC (``2024-01-01T00:00:00+00:00``); ``chain`` lists
    subjects from the certificate to its anchor; ``accepted_by`` is passed through.
    """
    if revocation is not None and status == "valid":
        if revocation.status is RevocationStatus.REVOKED:
            status = "revoked"
        elif revocation.status is RevocationStatus.UNKNOWN:
            status = "revocation_unknown"
    return {
        "ca": parsed.ca.value,
        "subject": parsed.subject,
        "issuer": parsed.issuer,
        "serial": parsed.serial_hex,
        "not_before": parsed.not_before.isoformat(),
        "not_after": parsed.not_after.isoformat(),
        "key_usage": list(parsed.key_usage),
        "identity": parsed.identity.as_dict(),
        "status": status,
        "chain": [parsed.subject, *(subject_text(c) for c in chain[1:])],
        "accepted_by": list(accepted_by),
        "revocation": revocation.as_dict() if revocation is not None else _NOT_ASKED,
    }


_NOT_ASKED: dict[str, Any] = {
    "status": "unknown",
    "source": "none",
    "tried": [],
    "checked_at": None,
    "reason": None,
    "revoked_at": None,
}
