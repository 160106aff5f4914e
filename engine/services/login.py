"""憑證登入: log in with a registered card, and the sessions that follow.

The flow mirrors the card check of a registration (DESIGN.md §4), with the literal
:data:`LOGIN_CHALLENGE_SCOPE` (``"login"``) in place of a registration id, so the card signs
``challenge_payload(origin, "login", nonce)``::

    issue_challenge(origin)  → a single-use Challenge (5 min), stored in ``login_challenges``
    login(response, origin)  → consume the challenge (own transaction: single use, success or not)
                               → origin bound to the challenge              signature_invalid
                               → parse, chain, validity, key usage, CRL     certificate_*
                               → signature over the payload                 signature_invalid
                               → an active login certificate with that fingerprint
                                                                            not_registered
                               → its account is active                      account_inactive
                               → a session: only the SHA-256 of its token is stored

Sessions live in the database (any worker may serve the next request); each use slides the
expiry by ``session_ttl``; logout ends them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.pki.card_response import CardResponse, Challenge, chain_certificates
from engine.pki.certificate import load_certificate
from engine.pki.certificate_checks import check_login_certificate, verify_signature
from engine.services.accounts import ACTIVE, token_hash
from engine.services.challenges import ScopedChallenges
from engine.services.trust import TrustService
from engine.store import Database, LoginSession

LOGIN_CHALLENGE_SCOPE = "login"
"""What stands in the registration-id slot of a login challenge's signed payload."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful 憑證登入: the session token (give it to the client, e.g. as a cookie)."""

    token: str
    account: str
    applicant_type: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionView:
    """Who a live session belongs to, and until when it lasts unless used again."""

    account: str
    applicant_type: str
    expires_at: datetime


class LoginService:
    """Issues login challenges, logs cards in, and keeps the sessions."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        *,
        session_ttl: timedelta,
        challenge_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._session_ttl = session_ttl
        self._challenges = ScopedChallenges(
            database, clock, scope=LOGIN_CHALLENGE_SCOPE, ttl=challenge_ttl
        )

    def issue_challenge(self, *, origin: str) -> Challenge:
        """A fresh single-use login challenge (256 random bits) bound to ``origin``."""
        return self._challenges.issue(origin=origin)

    def login(self, response: CardResponse, *, origin: str, actor: str = "web") -> LoginResult:
        """Check the card's answer to a login challenge and open a session (module docstring)."""
        challenge = self._challenges.consume(response.challenge_id, origin=origin)
        parsed = load_certificate(response.certificate)
        extra = chain_certificates(response.chain)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            snapshot = self._trust.snapshot(uow)
            check_login_certificate(
                parsed, trust=snapshot.store, revocation=snapshot.revocation, at=now,
                profile=None, extra=extra,
            )  # fmt: skip
            verify_signature(parsed.certificate, response.signature, challenge.payload)
            certificate = uow.certificates.active_login(parsed.fingerprint)
            if certificate is None or certificate.account_id is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED)
            account = uow.accounts.get(certificate.account_id)
            if account is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED)
            if account.status != ACTIVE:
                raise RefusedError(ErrorCode.ACCOUNT_INACTIVE)
            token = secrets.token_urlsafe(32)
            digest = token_hash(token)
            expires_at = now + self._session_ttl
            uow.sessions.add(
                LoginSession(
                    token_hash=digest, account_id=account.id, created_at=now,
                    expires_at=expires_at, last_seen_at=now,
                )
            )  # fmt: skip
            uow.audit.append(
                at=now,
                actor=actor,
                event="login",
                applicant_type=account.applicant_type,
                diff={
                    "account": account.name,
                    "certificate": parsed.fingerprint,
                    "origin": origin,
                    "session": _session_ref(digest),
                },
            )
            uow.commit()
            return LoginResult(token, account.name, account.applicant_type, expires_at)

    def session(self, token: str) -> SessionView | None:
        """The live session of ``token``, its expiry slid to now + ``session_ttl``; else None.

        Expired, ended or unknown tokens, and sessions of accounts no longer active, give None.
        """
        if not token:
            return None
        digest = token_hash(token)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            if not uow.sessions.touch(digest, now, now + self._session_ttl):
                return None
            row = uow.sessions.get(digest)
            if row is None:  # pragma: no cover - touched a moment ago in this transaction
                return None
            account = uow.accounts.get(row.account_id)
            if account is None or account.status != ACTIVE:
                return None  # rolled back: the session is not slid
            uow.commit()
            return SessionView(account.name, account.applicant_type, row.expires_at)

    def logout(self, token: str, *, actor: str = "web") -> None:
        """End the session of ``token`` (audited as ``logout``); unknown or ended: nothing."""
        if not token:
            return
        digest = token_hash(token)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.sessions.get(digest)
            if row is None or not uow.sessions.end(digest, now):
                return
            account = uow.accounts.get(row.account_id)
            uow.audit.append(
                at=now,
                actor=actor,
                event="logout",
                applicant_type=account.applicant_type if account else None,
                diff={
                    "account": account.name if account else None,
                    "session": _session_ref(digest),
                },
            )
            uow.commit()


def _session_ref(digest: str) -> str:
    """A short reference to a session for the audit log (a prefix of the token's hash)."""
    return digest[:16]
