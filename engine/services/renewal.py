"""憑證更換作業: bind a renewed card to an existing account (DESIGN.md §5).

A card is renewed in the 60 days before it expires (DOMAIN.md §3.3–3.4) and the new card has a
new key and certificate. Replacing it proves two things::

    the old account   a session opened with the old card (憑證登入), or, once the old
                      certificate has expired, the account name and its password (argon2id);
                      neither, a wrong password or an unknown account   not_authorized
    the new card      its signature over a single-use challenge whose payload carries the
                      literal "renewal" (:data:`RENEWAL_CHALLENGE_SCOPE`) where a registration
                      id would be, so a login or registration signature never counts here

then checks the new certificate like the card check: parse, chain, validity, key usage, the
account type's login profile, revocation (``certificate_*``), the signature
(``signature_invalid``), the same holder as the old certificate, read from its DER (MOEACA: the
UBN; XCA/GCA: the OID; MOICA: the name and the last four ID digits; else
``identity_mismatch``) and not registered before (``already_registered``). One transaction then
marks the old login certificate ``replaced`` (it stays queryable), stores the new one as the
account's active login certificate and audits ``card_replaced``.

Challenges live in the ``login_challenges`` table (5 minutes, single use, success or not).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine._plugins import Catalog
from engine.core.declarations import IssuerCA, canonical_text
from engine.pki.card_response import CardResponse, Challenge, chain_certificates
from engine.pki.certificate import ParsedCertificate, load_certificate, ubn_conflict
from engine.pki.certificate_checks import check_login_certificate, verify_signature
from engine.services.accounts import ACTIVE
from engine.services.challenges import ScopedChallenges
from engine.services.hashing import PasswordHasher
from engine.services.login import SessionView
from engine.services.trust import TrustService
from engine.store import Account, Certificate, Database, UnitOfWork

RENEWAL_CHALLENGE_SCOPE = "renewal"
"""What stands in the registration-id slot of a renewal challenge's signed payload."""

REPLACED = "replaced"

IDENTITY_ATTRIBUTES: dict[IssuerCA, tuple[str, ...]] = {
    IssuerCA.MOEACA: ("ubn",),
    IssuerCA.XCA: ("oid",),
    IssuerCA.GCA: ("oid",),
    IssuerCA.MOICA: ("name", "id_last4"),
}
"""The certificate attributes that must agree between the old and the new card, per CA."""

ProofMethod = Literal["session", "password"]


@dataclass(frozen=True, slots=True)
class Replacement:
    """A done 憑證更換: the account and the SHA-256 fingerprints of the old and new certificate."""

    account: str
    old_fingerprint: str
    new_fingerprint: str


@dataclass(frozen=True, slots=True)
class _Proof:
    account: str
    method: ProofMethod


class RenewalService:
    """Issues renewal challenges and replaces an account's login card (module docstring)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        catalog: Catalog,
        passwords: PasswordHasher,
        *,
        challenge_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._catalog = catalog
        self._passwords = passwords
        self._challenges = ScopedChallenges(
            database, clock, scope=RENEWAL_CHALLENGE_SCOPE, ttl=challenge_ttl
        )
        self._dummy_hash: str | None = None

    def issue_challenge(self, *, origin: str) -> Challenge:
        """A fresh single-use renewal challenge (256 random bits) bound to ``origin``."""
        return self._challenges.issue(origin=origin)

    def replace_card(
        self,
        response: CardResponse,
        *,
        origin: str,
        session: SessionView | None = None,
        account: str | None = None,
        password: str | None = None,
        actor: str = "web",
    ) -> Replacement:
        """Bind the card of ``response`` to the proven account (module docstring).

        ``session`` is what ``LoginService.session(token)`` returned for the caller's session;
        without one, ``account`` and ``password`` prove the account, accepted only once the old
        login certificate has expired (until then, log in with the old card).
        """
        challenge = self._challenges.consume(response.challenge_id, origin=origin)
        proof = self._prove(session, account, password)
        parsed = load_certificate(response.certificate)
        extra = chain_certificates(response.chain)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            owner = _proven_account(uow, proof)
            old = uow.certificates.active_login_of(owner.id)
            if old is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED, detail="no login certificate")
            if proof.method == "password" and old.not_after >= now:
                raise RefusedError(
                    ErrorCode.NOT_AUTHORIZED,
                    detail="the old card is still valid: log in with it to replace it",
                )
            self._check_new_card(uow, parsed, extra, owner, now)
            verify_signature(parsed.certificate, response.signature, challenge.payload)
            if not same_identity(load_certificate(old.der), parsed):
                raise RefusedError(ErrorCode.IDENTITY_MISMATCH, field="certificate")
            if uow.certificates.find(parsed.fingerprint, "login") is not None:
                raise RefusedError(ErrorCode.ALREADY_REGISTERED)
            self._swap(uow, owner, old, parsed, now)
            _audit(uow, owner, old, parsed, proof, origin=origin, actor=actor, at=now)
            uow.commit()
            return Replacement(owner.name, old.fingerprint, parsed.fingerprint)

    # -- proving the old account -----------------------------------------------------------------

    def _prove(
        self, session: SessionView | None, account: str | None, password: str | None
    ) -> _Proof:
        """Who the caller proved to be, before any database write; else ``not_authorized``."""
        if session is not None:
            if account is not None and account != session.account:
                raise RefusedError(ErrorCode.NOT_AUTHORIZED, detail="another account's session")
            return _Proof(session.account, "session")
        if not account or not password:
            raise RefusedError(ErrorCode.NOT_AUTHORIZED)
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get_by_name(account)
            stored = row.password_hash if row is not None else None
        # Outside the transaction (argon2 is slow); an unknown account costs the same time.
        matches = self._passwords.verify(stored or self._dummy(), password)
        if stored is None or not matches:
            raise RefusedError(ErrorCode.NOT_AUTHORIZED)
        return _Proof(account, "password")

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._passwords.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    # -- the new card ----------------------------------------------------------------------------

    def _check_new_card(
        self,
        uow: UnitOfWork,
        parsed: ParsedCertificate,
        extra: tuple[x509.Certificate, ...],
        owner: Account,
        now: datetime,
    ) -> None:
        """The certificate checks of the card check, with the account type's login profile."""
        snapshot = self._trust.snapshot(uow)
        profile = self._catalog.applicant(owner.applicant_type).login
        check_login_certificate(
            parsed, trust=snapshot.store, revocation=snapshot.revocation, at=now,
            profile=profile, extra=extra,
        )  # fmt: skip

    @staticmethod
    def _swap(
        uow: UnitOfWork,
        owner: Account,
        old: Certificate,
        parsed: ParsedCertificate,
        now: datetime,
    ) -> None:
        """The old login certificate becomes ``replaced``; the new one the active one."""
        old.status = REPLACED
        identity = parsed.identity
        uow.certificates.add(
            Certificate(
                fingerprint=parsed.fingerprint,
                purpose="login",
                account_id=owner.id,
                registration_id=None,
                der=parsed.der,
                serial_hex=parsed.serial_hex,
                subject=parsed.subject,
                issuer=parsed.issuer,
                ca=parsed.ca.value,
                card_rank=identity.card_rank,
                not_before=parsed.not_before,
                not_after=parsed.not_after,
                ubn=identity.ubn or old.ubn,
                oid=identity.oid or old.oid,
                national_id_hash=old.national_id_hash,
                query_key=old.query_key,
                status="active",
                created_at=now,
            )
        )


def same_identity(old: ParsedCertificate, new: ParsedCertificate) -> bool:
    """Whether both certificates name the same holder (:data:`IDENTITY_ATTRIBUTES`).

    Both must come from the same CA family, carry every attribute compared (NFKC, trimmed,
    upper-cased) and, for the new one, no contradictory UBN (subject serialNumber vs SDA).
    """
    attributes = IDENTITY_ATTRIBUTES.get(new.ca)
    if attributes is None or old.ca is not new.ca or ubn_conflict(new):
        return False
    for attribute in attributes:
        before, after = old.identity.get(attribute), new.identity.get(attribute)
        if before is None or after is None or canonical_text(before) != canonical_text(after):
            return False
    return True


def _proven_account(uow: UnitOfWork, proof: _Proof) -> Account:
    account = uow.accounts.get_by_name(proof.account)
    if account is None:
        raise RefusedError(ErrorCode.NOT_AUTHORIZED)
    if account.status != ACTIVE:
        raise RefusedError(ErrorCode.ACCOUNT_INACTIVE)
    return account


def _audit(
    uow: UnitOfWork,
    owner: Account,
    old: Certificate,
    parsed: ParsedCertificate,
    proof: _Proof,
    *,
    origin: str,
    actor: str,
    at: datetime,
) -> None:
    uow.audit.append(
        at=at,
        actor=actor,
        event="card_replaced",
        applicant_type=owner.applicant_type,
        diff={
            "account": owner.name,
            "proof": proof.method,
            "old_certificate": old.fingerprint,
            "new_certificate": parsed.fingerprint,
            "serial": parsed.serial_hex,
            "not_after": parsed.not_after.isoformat(),
            "origin": origin,
        },
    )
