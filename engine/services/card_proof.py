"""A registered card proves who holds it: the check shared by 憑證登入 and 忘記密碼.

The card signs ``challenge_payload(origin, scope, nonce)`` of a :class:`ScopedChallenge
<engine.services.challenges.ScopedChallenges>` (a scope per flow, so an answer for one flow never
verifies in another); :meth:`CardProofs.prove` then checks, in this order::

    the challenge: consumed in its own transaction (single use, success or not), its origin
                                                            challenge_* / signature_invalid
    the certificate: parse, chain, validity, key usage      certificate_*
    the signature over the payload (before any network revocation check, so an answer that
    does not prove the key makes the server ask no one; a revocation already known still
    wins)                                                   signature_invalid
    a phone's answer (行動自然人憑證): its binding to the ID sent identity_mismatch
    revocation (DESIGN.md §4a)                              certificate_revoked / ..._unknown

What the proven certificate may do (which account it is bound to, and that account's status) is
the caller's business: the proof says only that the caller holds this certificate's key now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from engine._clock import Clock
from engine._errors import CertificateError
from engine.pki.card_response import CardResponse, Challenge, chain_certificates
from engine.pki.certificate import ParsedCertificate, load_certificate
from engine.pki.certificate_checks import check_login_certificate, verify_signature
from engine.pki.revocation import RevocationVerdict, raise_known_revocation
from engine.services.challenges import ScopedChallenges
from engine.services.mobile_id import MobileIdBinding
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService
from engine.store import Database


@dataclass(frozen=True, slots=True)
class ProvenCard:
    """A certificate whose key answered a fresh challenge at ``at``, with its revocation verdict."""

    certificate: ParsedCertificate
    revocation: RevocationVerdict
    at: datetime
    mobile: MobileIdBinding | None = None
    """Set when the answer came from the person's phone (TW FidO), not a card."""

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint

    @property
    def bridge(self) -> dict[str, str]:
        """For the audit: nothing for a card; for a phone, ``bridge: twfido`` and MOI's
        transaction."""
        return {} if self.mobile is None else self.mobile.audit()


class CardProofs:
    """Issues the challenges of one flow (``scope``) and checks the cards' answers to them."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        revocation: RevocationChecker,
        *,
        scope: str,
        ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._clock = clock
        self._trust = trust
        self._revocation = revocation
        self._challenges = ScopedChallenges(database, clock, scope=scope, ttl=ttl)

    def issue_challenge(self, *, origin: str) -> Challenge:
        """A fresh single-use challenge (256 random bits) of this flow, bound to ``origin``."""
        return self._challenges.issue(origin=origin)

    def prove(
        self, response: CardResponse, *, origin: str, mobile: MobileIdBinding | None = None
    ) -> ProvenCard:
        """Check the card's answer (module docstring), or the phone's with its ``mobile``
        binding; the proven certificate, else a refusal."""
        challenge = self._challenges.consume(response.challenge_id, origin=origin)
        parsed = load_certificate(response.certificate)
        extra = chain_certificates(response.chain)
        now = self._clock.now()
        snapshot = self._trust.snapshot()
        verdict = check_login_certificate(
            parsed, trust=snapshot.store, at=now, profile=None, extra=extra
        )
        check = self._revocation.bound(snapshot)
        try:
            verify_signature(parsed.certificate, response.signature, challenge.payload)
        except CertificateError:
            raise_known_revocation(check, verdict.chain)
            raise
        if mobile is not None:
            mobile.check(parsed.identity)
        return ProvenCard(parsed, check(verdict.chain), now, mobile)
