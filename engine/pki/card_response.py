"""The card check (憑證檢查, DESIGN.md §4) as pure values and one ordered check.

The server issues a :class:`Challenge`; the client side verifies the PIN on the card, reads the
signing certificate and has the card sign :func:`challenge_payload`. The PIN never reaches this
module. :func:`check_card_response` validates in the contract's order and stops at the first
failure: parse → classify → chain → validity → key usage → accepted profile → revocation →
signature. (``already_registered`` needs the store and is checked by the service last.) The
signature is verified before the revocation check may use the network, so a response that does
not prove the card's key never makes the server contact anyone: it is ``certificate_revoked``
when the revocation is known already, else ``signature_invalid``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from engine._errors import CertificateError, SwregError
from engine._plugins import Catalog
from engine.core.declarations import ApplicantType
from engine.pki.certificate import BoundedMemo, ParsedCertificate, load_certificate, subject_text
from engine.pki.certificate_checks import (
    CertificateVerdict,
    check_login_certificate,
    verify_signature,
)
from engine.pki.revocation import RevocationCheck, RevocationVerdict, raise_known_revocation
from engine.pki.trust import TrustStore

MAX_CHAIN_CERTIFICATES = 8


def challenge_payload(origin: str, registration_id: str, nonce: bytes) -> bytes:
    """The bytes the card signs: SHA-256(origin) ‖ SHA-256(registration id) ‖ SHA-256(nonce)."""
    return (
        hashlib.sha256(origin.encode("utf-8")).digest()
        + hashlib.sha256(registration_id.encode("utf-8")).digest()
        + hashlib.sha256(nonce).digest()
    )


@dataclass(frozen=True, slots=True)
class Challenge:
    """A single-use challenge bound to one registration; ``nonce`` is hex of ≥ 256 random bits."""

    id: str
    registration_id: str
    nonce: str
    origin: str
    expires_at: datetime

    @property
    def payload(self) -> bytes:
        return challenge_payload(self.origin, self.registration_id, bytes.fromhex(self.nonce))


@dataclass(frozen=True, slots=True)
class CardResponse:
    """What the client side sends back: the card's certificate, chain and signature."""

    challenge_id: str
    certificate: bytes
    signature: bytes
    chain: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class CardCheckResult:
    """A passed card check: the applicant type the card resolved to and the evidence."""

    applicant: ApplicantType
    verdict: CertificateVerdict
    revocation: RevocationVerdict

    @property
    def parsed(self) -> ParsedCertificate:
        return self.verdict.parsed

    def evidence(self, challenge: Challenge) -> dict[str, Any]:
        """What is stored with the registration (DER is stored beside it)."""
        revocation = self.revocation
        parsed = self.parsed
        return {
            "fingerprint": parsed.fingerprint,
            "ca": parsed.ca.value,
            "serial": parsed.serial_hex,
            "subject": parsed.subject,
            "issuer": parsed.issuer,
            "not_before": parsed.not_before.isoformat(),
            "not_after": parsed.not_after.isoformat(),
            "identity": parsed.identity.as_dict(),
            "chain": [parsed.subject, *(subject_text(c) for c in self.verdict.chain[1:])],
            "validated_at": self.verdict.checked_at.isoformat(),
            "crl_number": (
                str(revocation.crl_number) if revocation.crl_number is not None else None
            ),
            "revocation": revocation.as_evidence(),
            "challenge_id": challenge.id,
            "origin": challenge.origin,
        }


def check_card_response(
    response: CardResponse,
    challenge: Challenge,
    *,
    chosen: ApplicantType,
    catalog: Catalog,
    trust: TrustStore,
    at: datetime,
    revocation: RevocationCheck,
) -> CardCheckResult:
    """Run the ordered checks of DESIGN.md §4 and return the resolved type and verdict.

    ``revocation`` is the service's revocation check of the trusted path. The signature is
    verified before it may use the network: a bad signature is ``certificate_revoked`` only when
    the revocation is known already (:func:`raise_known_revocation`), else ``signature_invalid``.
    """
    parsed = load_certificate(response.certificate)
    extra = chain_certificates(response.chain, trust=trust)
    applicant = catalog.resolve(chosen, parsed.ca, parsed.identity)
    verdict = check_login_certificate(
        parsed, trust=trust, at=at, profile=applicant.login, extra=extra
    )
    try:
        verify_signature(parsed.certificate, response.signature, challenge.payload)
    except CertificateError:
        raise_known_revocation(revocation, verdict.chain)
        raise
    checked = revocation(verdict.chain)
    return CardCheckResult(applicant=applicant, verdict=verdict, revocation=checked)


def chain_certificates(
    chain: Sequence[bytes], *, trust: TrustStore | None = None
) -> tuple[x509.Certificate, ...]:
    """CA certificates the card offered: helpers for path building, never trusted by themselves.

    Each is what :func:`load_certificate` accepts (others are skipped). Cards of one CA send the
    same few certificates, so they are parsed once and remembered by their bytes; one that is a
    member of ``trust`` is that member itself.
    """
    found = []
    for item in chain[:MAX_CHAIN_CERTIFICATES]:
        try:
            data = bytes(item)  # the same object when it is bytes already
        except Exception:  # not bytes-like: load_certificate would refuse it as well
            continue
        cert = trust.member_by_der(data) if trust is not None else None
        if cert is None:
            cert = _HELPERS.get(data)
        if cert is None:
            try:
                cert = load_certificate(data).certificate
            except SwregError:
                continue  # an unusable helper certificate cannot make the path worse
            _HELPERS.put(data, cert)
        found.append(cert)
    return tuple(found)


_HELPERS: BoundedMemo[bytes, x509.Certificate] = BoundedMemo(64)
