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
                               → the account's login limit (own transaction) rate_limited
                               → its account is active (or locked: wrong   account_inactive /
                                 passwords lock the password, not the card) account_suspended
                               → a session: only the SHA-256 of its token is stored

Only the holder of the account's card gets past the signature, so the account's status is told
to its owner alone (a stranger learns nothing of an account from a login).

Sessions live in the database (any worker may serve the next request) and have two limits
(DESIGN.md §6): an idle one (``session_ttl``, ``SWREG_SESSION_IDLE``; each use slides it) and
an absolute one (``session_max``, ``SWREG_SESSION_MAX``) counted from the session's
``created_at``, after which the session is dead however often it was used. The stored
``expires_at`` is the idle expiry, never later than the absolute one. Logout ends one session;
"log out everywhere" (:meth:`LoginService.logout_all`, :meth:`LoginService.end_all_sessions`),
a card replacement, a password reset and a suspension (:func:`~engine.services.accounts.take_back`,
in their own transactions) end every session of the account and retire its pending mailed links.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.core.step_data import masked_diff
from engine.pki.card_response import CardResponse, Challenge
from engine.services.accounts import (
    CARD_LOGIN_STATUSES,
    LOGIN_ACCOUNT_LIMIT,
    AccountLimits,
    status_refusal,
    take_back,
    token_hash,
)
from engine.services.card_proof import CardProofs
from engine.services.mobile_id import (
    MobileIdBinding,
    MobileIds,
    MobileIdSigner,
    PendingMobileId,
)
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService
from engine.store import Account, Database, LoginSession, UnitOfWork

MAX_CLIENT_CHARS = 120
"""The longest description of where a session was opened that is kept."""
LOGIN_CHALLENGE_SCOPE = "login"
"""What stands in the registration-id slot of a login challenge's signed payload."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    """A successful 憑證登入: the session token (give it to the client, e.g. as a cookie).

    ``expires_at`` is the absolute end of the session (its start + ``session_max``);
    ``idle_expires_at`` when it ends unless used again (never later than ``expires_at``).
    """

    token: str
    account: str
    applicant_type: str
    expires_at: datetime
    idle_expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionView:
    """Who a live session belongs to; ``expires_at`` is its absolute end, ``idle_expires_at``
    when it ends unless used again (never later than ``expires_at``)."""

    account: str
    applicant_type: str
    expires_at: datetime
    idle_expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A live session as the account page lists it: a short reference, when it began and was
    last used, where it was opened, and whether it is the caller's own."""

    ref: str
    created_at: datetime
    last_seen_at: datetime
    client: str | None
    current: bool


class LoginService:
    """Issues login challenges, logs cards in, and keeps the sessions."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        revocation: RevocationChecker,
        *,
        limits: AccountLimits,
        session_ttl: timedelta,
        session_max: timedelta,
        challenge_ttl: timedelta = timedelta(minutes=5),
        mobile: MobileIdSigner | None = None,
    ) -> None:
        if session_ttl <= timedelta(0) or session_max <= timedelta(0):
            raise ValueError("session limits must be positive")
        self._database = database
        self._clock = clock
        self._limits = limits
        self._session_ttl = session_ttl
        self._session_max = session_max
        self._proofs = CardProofs(
            database, clock, trust, revocation, scope=LOGIN_CHALLENGE_SCOPE, ttl=challenge_ttl
        )
        self._mobile = MobileIds(mobile, purpose=LOGIN_CHALLENGE_SCOPE)

    def issue_challenge(self, *, origin: str) -> Challenge:
        """A fresh single-use login challenge (256 random bits) bound to ``origin``."""
        return self._proofs.issue_challenge(origin=origin)

    def begin_mobile_id(
        self, national_id: str, *, origin: str, push: bool = False
    ) -> PendingMobileId:
        """憑證登入 with the mobile citizen certificate: a login challenge that TW FidO asks
        ``national_id``'s phone to sign."""
        return self._mobile.begin(
            national_id, lambda: self.issue_challenge(origin=origin), push=push
        )

    def collect_mobile_id(
        self, pending_id: str, *, origin: str, actor: str = "web", client: str | None = None
    ) -> LoginResult | None:
        """The phone's answer to :meth:`begin_mobile_id`, logged in as a card's would be (and
        bound to the ID sent); None while the phone has not answered."""
        answer = self._mobile.collect(pending_id)
        if answer is None:
            return None
        return self.login(
            answer.response, origin=origin, actor=actor, client=client, mobile=answer.binding
        )

    def login(
        self,
        response: CardResponse,
        *,
        origin: str,
        actor: str = "web",
        client: str | None = None,
        mobile: MobileIdBinding | None = None,
    ) -> LoginResult:
        """Check the card's answer to a login challenge and open a session (module docstring).

        ``client`` is where the session is opened as its owner will see it on the account page
        (browser, system, masked address; at most :data:`MAX_CLIENT_CHARS` kept); ``mobile``
        the binding of a phone's answer (:meth:`collect_mobile_id`).
        """
        proven = self._proofs.prove(response, origin=origin, mobile=mobile)
        now = proven.at
        with self._database.unit_of_work() as uow:  # reads only: the card proves the account
            certificate = uow.certificates.active_login(proven.fingerprint)
            if certificate is None or certificate.account_id is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED)
            found = uow.accounts.get(certificate.account_id)
            if found is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED)
            account_id, name = found.id, found.name
        self._limits.hit(LOGIN_ACCOUNT_LIMIT, name)
        with self._database.unit_of_work() as uow:
            account = uow.accounts.get(account_id)
            if account is None:  # pragma: no cover - accounts are never deleted while in use
                raise RefusedError(ErrorCode.NOT_REGISTERED)
            if account.status not in CARD_LOGIN_STATUSES:
                raise RefusedError(status_refusal(account.status))
            opened = self.open_session(uow, account, now, client=client)
            uow.audit.append(
                at=now,
                actor=actor,
                event="login",
                applicant_type=account.applicant_type,
                diff={
                    **masked_diff({"account": account.name}),
                    "certificate": proven.fingerprint,
                    "origin": origin,
                    "session": _session_ref(token_hash(opened.token)),
                    "revocation": proven.revocation.audit(),
                    **proven.bridge,
                },
            )
            uow.commit()
            return opened

    def open_session(
        self, uow: UnitOfWork, account: Account, at: datetime, *, client: str | None = None
    ) -> LoginResult:
        """A new session of ``account`` from ``at``, added in the caller's ``uow`` (a login, or
        the session a password change hands its owner in place of the one it ended); only the
        SHA-256 of its token is stored."""
        token = secrets.token_urlsafe(32)
        expires_at = at + self._session_max
        idle_expires_at = min(at + self._session_ttl, expires_at)
        uow.sessions.add(
            LoginSession(
                token_hash=token_hash(token), account_id=account.id, created_at=at,
                expires_at=idle_expires_at, last_seen_at=at,
                client=client[:MAX_CLIENT_CHARS] if client else None,
            )
        )  # fmt: skip
        return LoginResult(token, account.name, account.applicant_type, expires_at, idle_expires_at)

    def session(self, token: str) -> SessionView | None:
        """The live session of ``token``, its idle expiry slid to now + ``session_ttl`` (never
        past its absolute end); else None.

        Expired (idle or absolute), ended or unknown tokens, and sessions of accounts whose
        card may no longer log in (suspended, or never activated), give None.
        """
        if not token:
            return None
        digest = token_hash(token)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            live = self._live(uow, digest, now)
            if live is None:
                return None
            row, account = live
            end = self._absolute_end(row)
            idle = min(now + self._session_ttl, end)
            if not uow.sessions.touch(digest, now, idle):
                return None  # ended or expired by another request a moment ago
            uow.commit()
            return SessionView(account.name, account.applicant_type, end, idle)

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
                    **masked_diff({"account": account.name if account else None}),
                    "session": _session_ref(digest),
                },
            )
            uow.commit()

    def logout_all(self, token: str, *, actor: str = "web") -> int:
        """Log out everywhere: end every session of the account of the live session ``token``,
        that one included; returns how many ended. Audited as ``logout_all``.

        Without a live session: ``not_authorized`` (nothing ended, nothing audited).
        """
        digest = token_hash(token) if token else ""
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            live = self._live(uow, digest, now) if digest else None
            if live is None:
                raise RefusedError(ErrorCode.NOT_AUTHORIZED)
            _, account = live
            ended = take_back(uow, account.id, now)
            _audit_logout_all(uow, account, ended, at=now, actor=actor, session=digest)
            uow.commit()
            return ended

    def end_all_sessions(self, account: str, *, actor: str = "system") -> int:
        """End every session of the account named ``account``; returns how many ended.

        Audited as ``logout_all``. ``swreg accounts logout-all NAME`` calls it, and so may a
        service that must cut the account off (a password reset: in its own transaction it
        may call :func:`~engine.services.accounts.take_back` instead). Unknown account:
        ``not_registered``.
        """
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get_by_name(account)
            if row is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED, field="account")
            ended = take_back(uow, row.id, now)
            _audit_logout_all(uow, row, ended, at=now, actor=actor)
            uow.commit()
            return ended

    def sessions_of(self, token: str) -> list[SessionSummary]:
        """The live sessions of the account of the live session ``token``, newest first, the
        caller's own marked ``current``; a dead ``token`` is ``session_expired``."""
        digest = token_hash(token) if token else ""
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            live = self._live(uow, digest, now) if digest else None
            if live is None:
                raise RefusedError(ErrorCode.SESSION_EXPIRED)
            _row, account = live
            return [
                SessionSummary(
                    ref=_session_ref(row.token_hash),
                    created_at=row.created_at,
                    last_seen_at=row.last_seen_at,
                    client=row.client,
                    current=row.token_hash == digest,
                )
                for row in uow.sessions.live_of(account.id, now)
                if now < self._absolute_end(row)
            ]

    def _live(
        self, uow: UnitOfWork, digest: str, now: datetime
    ) -> tuple[LoginSession, Account] | None:
        """The session stored under ``digest`` and its account, if the session is live now:
        not ended, within both limits, of an account whose card logs in."""
        row = uow.sessions.get(digest)
        if row is None or row.ended_at is not None:
            return None
        if now >= row.expires_at or now >= self._absolute_end(row):
            return None
        account = uow.accounts.get(row.account_id)
        if account is None or account.status not in CARD_LOGIN_STATUSES:
            return None
        return row, account

    def _absolute_end(self, row: LoginSession) -> datetime:
        return row.created_at + self._session_max


def _audit_logout_all(
    uow: UnitOfWork,
    account: Account,
    ended: int,
    *,
    at: datetime,
    actor: str,
    session: str | None = None,
) -> None:
    diff: dict[str, Any] = {**masked_diff({"account": account.name}), "sessions_ended": ended}
    if session:
        diff["session"] = _session_ref(session)
    uow.audit.append(
        at=at, actor=actor, event="logout_all", applicant_type=account.applicant_type, diff=diff
    )


def _session_ref(digest: str) -> str:
    """A short reference to a session for the audit log (a prefix of the token's hash)."""
    return digest[:16]
