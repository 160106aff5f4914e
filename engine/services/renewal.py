"""憑證更換作業: bind a renewed card to an existing account (DESIGN.md §5).

A card is renewed in the 60 days before it expires (DOMAIN.md §3.3–3.4) and the new card has a
new key and certificate. Replacing it proves two things, **the new card first**::

    the new card      its signature over a single-use challenge whose payload carries the
                      literal "renewal" (:data:`RENEWAL_CHALLENGE_SCOPE`) where a registration
                      id would be, so a login or registration signature never counts here
                      (``signature_invalid``), then its certificate: parse, chain, validity,
                      key usage, revocation (``certificate_*``)
    the old account   a session opened with the old card (憑證登入), or, once the old
                      certificate has expired, the account name and its password (argon2id)

Until the new card has passed, nothing depends on the account or password sent: every refusal
is the same whatever they were, and no password is checked or counted. After it, a password is
checked only when the new card's holder is the named account's (the same identity as its login
certificate), and only then counts against the account's rate limit
(:data:`RENEWAL_ACCOUNT_LIMIT`, keyed by a keyed hash of the name); an unknown account, another
holder's card, an account whose password is not usable (any status but active: ``locked``
included), a wrong password, no proof at all and a still-valid old card all get the one refusal
:func:`refusal` (403 ``not_authorized``, no detail): the answer tells a stranger neither that
the account exists nor that the password was right, and a stranger's card cannot lock it.
Each wrong password of an active account adds one to ``Account.failed_passwords``; the
:data:`MAX_FAILED_PASSWORDS`-th makes it ``locked`` (audited ``account_locked``), after which no
password is checked here until a card-proven password reset; a right password sets the count
back to 0. A locked account's owner still replaces the card through a session of the old card:
the password is locked, not the card.

Once the account is proven, the new certificate must suit it: the account type's login profile
(``certificate_type_mismatch``), the same holder as the old certificate, read from its DER
(MOEACA: the UBN; XCA/GCA: the OID; MOICA: the name and the last four ID digits; else
``identity_mismatch``) and not registered before (``already_registered``). One transaction then
marks the old login certificate ``replaced`` (it stays queryable), stores the new one as the
account's active login certificate, ends every session of the account (the old card's too) and
audits ``card_replaced``.

Challenges live in the ``login_challenges`` table (5 minutes, single use, success or not).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509

from engine._clock import Clock
from engine._errors import CertificateError, ErrorCode, RefusedError
from engine._plugins import Catalog
from engine.core.declarations import IssuerCA, canonical_text
from engine.core.step_data import masked_diff
from engine.pki.card_response import CardResponse, Challenge, chain_certificates
from engine.pki.certificate import ParsedCertificate, load_certificate, ubn_conflict
from engine.pki.certificate_checks import check_login_certificate, verify_signature
from engine.pki.revocation import RevocationVerdict
from engine.services.accounts import (
    ACTIVE,
    CARD_LOGIN_STATUSES,
    RENEWAL_ACCOUNT_LIMIT,
    AccountLimits,
    count_wrong_password,
    password_accepted,
    take_back,
)
from engine.services.challenges import ScopedChallenges
from engine.services.hashing import PasswordHasher
from engine.services.login import SessionView
from engine.services.revocation_checks import RevocationChecker
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


def refusal() -> RefusedError:
    """The one answer to an unproven account, whatever the reason (module docstring)."""
    return RefusedError(ErrorCode.NOT_AUTHORIZED)


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
        revocation: RevocationChecker,
        catalog: Catalog,
        passwords: PasswordHasher,
        *,
        limits: AccountLimits,
        challenge_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._revocation = revocation
        self._catalog = catalog
        self._passwords = passwords
        self._limits = limits
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
        parsed = load_certificate(response.certificate)
        extra = chain_certificates(response.chain)
        now = self._clock.now()
        verify_signature(parsed.certificate, response.signature, challenge.payload)
        revocation = self._check_new_card(parsed, extra, now)
        proof = self._prove(session, account, password, parsed, now, actor=actor)
        with self._database.unit_of_work() as uow:
            owner = uow.accounts.get_by_name(proof.account)
            # the old card's session works while the password is locked; a password does not
            usable = CARD_LOGIN_STATUSES if proof.method == "session" else {ACTIVE}
            if owner is None or owner.status not in usable:
                raise refusal()  # gone, suspended or (for a password) locked since the proof
            old = uow.certificates.active_login_of(owner.id)
            if old is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED, detail="no login certificate")
            self._check_profile(owner, parsed)
            if not same_identity(load_certificate(old.der), parsed):
                raise RefusedError(ErrorCode.IDENTITY_MISMATCH, field="certificate")
            if uow.certificates.find(parsed.fingerprint, "login") is not None:
                raise RefusedError(ErrorCode.ALREADY_REGISTERED)
            self._swap(uow, owner, old, parsed, now)
            ended = take_back(uow, owner.id, now)
            _audit(
                uow, owner, old, parsed, proof,
                sessions_ended=ended, origin=origin, revocation=revocation, actor=actor, at=now,
            )  # fmt: skip
            uow.commit()
            return Replacement(owner.name, old.fingerprint, parsed.fingerprint)

    # -- proving the old account -----------------------------------------------------------------

    def _prove(
        self,
        session: SessionView | None,
        account: str | None,
        password: str | None,
        new_card: ParsedCertificate,
        now: datetime,
        *,
        actor: str,
    ) -> _Proof:
        """Who the caller proved to be; else :func:`refusal` (module docstring).

        A password is checked (and counted when wrong) only when the new card is the named
        account's holder's (:func:`same_identity` with its login certificate): someone else's
        valid card can neither guess the password nor lock it.
        """
        if session is not None:
            if account is not None and account != session.account:
                raise refusal()  # another account's session
            self._limits.hit(RENEWAL_ACCOUNT_LIMIT, session.account)
            return _Proof(session.account, "session")
        if not account or not password:
            raise refusal()
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get_by_name(account)
            old_card = uow.certificates.active_login_of(row.id) if row is not None else None
            holder = old_card is not None and same_identity(
                load_certificate(old_card.der), new_card
            )
            usable = row is not None and row.status == ACTIVE and holder
            account_id = row.id if row is not None else None
            stored = row.password_hash if row is not None and usable else None
        if stored is not None:
            self._limits.hit(RENEWAL_ACCOUNT_LIMIT, account)
        # Outside the transaction (argon2 is slow); an unknown, locked or otherwise inactive
        # account, or another holder's card, costs the same time and is answered alike, its
        # password never checked.
        matches = self._passwords.verify(stored or self._dummy(), password)
        if stored is None or account_id is None:
            raise refusal()
        with self._database.unit_of_work() as uow:
            if not matches:
                count_wrong_password(uow, account_id, now, actor=actor)
                uow.commit()
                raise refusal()
            if not password_accepted(uow, account_id, stored):
                raise refusal()  # locked, or the password changed, meanwhile
            old = uow.certificates.active_login_of(account_id)
            uow.commit()
        if old is not None and old.not_after >= now:
            raise refusal()  # the old card still works: log in with it to replace it
        return _Proof(account, "password")

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._passwords.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    # -- the new card ----------------------------------------------------------------------------

    def _check_new_card(
        self, parsed: ParsedCertificate, extra: tuple[x509.Certificate, ...], now: datetime
    ) -> RevocationVerdict:
        """The certificate checks of the card check, before any account is looked at (the
        account type's login profile follows the proof: :meth:`_check_profile`)."""
        snapshot = self._trust.snapshot()
        verdict = check_login_certificate(
            parsed, trust=snapshot.store, at=now, profile=None, extra=extra
        )
        return self._revocation.require(verdict.chain, snapshot=snapshot)

    def _check_profile(self, owner: Account, parsed: ParsedCertificate) -> None:
        """The account type's login profile accepts the new card (CA, card rank)."""
        profile = self._catalog.applicant(owner.applicant_type).login
        if not profile.accepts(parsed.ca, parsed.identity):
            rank = f", card rank {parsed.identity.card_rank}" if parsed.identity.card_rank else ""
            raise CertificateError(
                ErrorCode.CERTIFICATE_TYPE_MISMATCH, detail=f"{parsed.ca.value} certificate{rank}"
            )

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


def _audit(
    uow: UnitOfWork,
    owner: Account,
    old: Certificate,
    parsed: ParsedCertificate,
    proof: _Proof,
    *,
    sessions_ended: int,
    origin: str,
    revocation: RevocationVerdict,
    actor: str,
    at: datetime,
) -> None:
    uow.audit.append(
        at=at,
        actor=actor,
        event="card_replaced",
        applicant_type=owner.applicant_type,
        diff={
            **masked_diff({"account": owner.name}),
            "proof": proof.method,
            "old_certificate": old.fingerprint,
            "new_certificate": parsed.fingerprint,
            "serial": parsed.serial_hex,
            "not_after": parsed.not_after.isoformat(),
            "origin": origin,
            "sessions_ended": sessions_ended,
            "revocation": revocation.audit(),
        },
    )
