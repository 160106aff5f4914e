"""忘記密碼: a new password, proven with a card bound to the account (DESIGN.md §6, §9).

The card signs ``challenge_payload(origin, "password_reset", nonce)``; a login or renewal answer
never verifies here, nor this one there. :meth:`PasswordResetService.reset` checks, in order::

    the new password: the password rule and its confirmation   password_* / field_required
                      (before anything is spent: a typo costs no challenge)
    the card's proof (:class:`~engine.services.card_proof.CardProofs`): single-use challenge,
    chain, validity, key usage, signature, revocation        challenge_* / certificate_* /
                                                             signature_invalid
    an active login certificate of the named account (its primary card or a 附卡, whichever
    the account registered; any other card, or an unknown account)          not_authorized
    the account's reset limit (own transaction)              rate_limited
    the account is active or locked                          account_inactive / account_suspended
    argon2id of the new password (outside any transaction: it is slow)
    one transaction: the password, the wrong-password count back to 0, ``locked`` → ``active``,
    ``password_changed_at``, every session of the account ended, an audit row
    ``password_reset``
    after the commit: a notice to the account's address (a failure is logged; the reset stands)

A refusal changes nothing (no audit row, no mail). Only the holder of a card bound to the account
gets past the proof, so the account's status is told to its owner alone.

With ``SWREG_PASSWORD_RESET=card,email`` an account's address may also receive a single-use
30-minute link (:meth:`PasswordResetService.request_link`: the same answer whether or not the
account exists, a per-name limit; :meth:`PasswordResetService.reset_with_link`), which then does
what the card does; the audit row says which proof (``card`` or ``email``) it was.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.core.fields import validate_form
from engine.core.forms import PasswordFields
from engine.core.identifiers import mask_email, normalize_text
from engine.core.step_data import masked_diff
from engine.pki.card_response import CardResponse, Challenge
from engine.services.accounts import (
    ACTIVE,
    CARD_LOGIN_STATUSES,
    LOCKED,
    PASSWORD_RESET_ACCOUNT_LIMIT,
    AccountLimit,
    AccountLimits,
    link_token,
    status_refusal,
    take_back,
    token_hash,
)
from engine.services.card_proof import CardProofs, ProvenCard
from engine.services.hashing import PasswordHasher
from engine.services.mail import (
    Mailer,
    MailLanguage,
    password_reset_link,
    password_reset_notice,
    send_notice,
)
from engine.services.mobile_id import (
    MobileIdBinding,
    MobileIds,
    MobileIdSigner,
    PendingMobileId,
)
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService
from engine.store import Account, AccountToken, Database, UnitOfWork

RESET_LINK = "password_reset"
"""The ``purpose`` of a mailed reset link (``account_tokens``)."""
RESET_LINK_PATH = "/password/reset/"
RESET_LINK_TTL = timedelta(minutes=30)
RESET_LINK_LIMIT = AccountLimit("password_reset_link", 3, timedelta(hours=1))
"""Reset links asked for one account name (known or not): each sends a mail."""
MAX_ACCOUNT_CHARS = 256
PASSWORD_RESET_SCOPE = "password_reset"
"""What stands in the registration-id slot of a reset challenge's signed payload."""
RESET_STATUSES = CARD_LOGIN_STATUSES
"""A reset is allowed for ``active`` and ``locked`` accounts: unlocking is what it is for."""


@dataclass(frozen=True, slots=True)
class PasswordReset:
    """A finished 忘記密碼: the account, how many sessions ended, whether it was unlocked and
    whether the notice mail went out."""

    account: str
    sessions_ended: int
    unlocked: bool
    notice_sent: bool


@dataclass(frozen=True, slots=True)
class _Target:
    id: int
    name: str
    email: str


class PasswordResetService:
    """Issues reset challenges and sets a new password for the card's own account."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        revocation: RevocationChecker,
        passwords: PasswordHasher,
        mailer: Mailer,
        *,
        limits: AccountLimits,
        sender: str,
        public_origin: str,
        email_links: bool = False,
        language: MailLanguage = "zh-TW",
        challenge_ttl: timedelta = timedelta(minutes=5),
        mobile: MobileIdSigner | None = None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._passwords = passwords
        self._mailer = mailer
        self._limits = limits
        self._sender = sender
        self._origin = public_origin.rstrip("/")
        self._email_links = email_links
        self._language: MailLanguage = language
        self._proofs = CardProofs(
            database, clock, trust, revocation, scope=PASSWORD_RESET_SCOPE, ttl=challenge_ttl
        )
        self._mobile = MobileIds(mobile, purpose=PASSWORD_RESET_SCOPE)

    def issue_challenge(self, *, origin: str) -> Challenge:
        """A fresh single-use reset challenge (256 random bits) bound to ``origin``."""
        return self._proofs.issue_challenge(origin=origin)

    def reset(
        self,
        response: CardResponse,
        *,
        origin: str,
        account: str,
        answers: Mapping[str, Any],
        actor: str = "web",
        mobile: MobileIdBinding | None = None,
    ) -> PasswordReset:
        """Set the password of ``account`` from ``answers`` (``password``, ``password_confirm``)
        once the card of ``response`` (or the phone, with its ``mobile`` binding) proved it is
        the account's (module docstring)."""
        password = validate_form(PasswordFields, answers).password.get_secret_value()
        proven = self._proofs.prove(response, origin=origin, mobile=mobile)
        target = self._bound_account(account, proven)
        self._limits.hit(PASSWORD_RESET_ACCOUNT_LIMIT, target.name)
        new_hash = self._passwords.hash(password)
        del password
        with self._database.unit_of_work() as uow:
            row = uow.accounts.lock(target.id)  # a suspension meanwhile is seen, not undone
            if row is None:  # pragma: no cover - accounts are never deleted while in use
                raise RefusedError(ErrorCode.NOT_AUTHORIZED)
            if row.status not in RESET_STATUSES:
                raise RefusedError(status_refusal(row.status))  # suspended meanwhile
            if uow.certificates.active_login(proven.fingerprint) is None:
                raise RefusedError(ErrorCode.NOT_AUTHORIZED)  # replaced meanwhile
            evidence = {
                "proof": "card",
                "certificate": proven.fingerprint,
                "origin": origin,
                "revocation": proven.revocation.audit(),
                **proven.bridge,
            }
            ended, unlocked = _set_password(uow, row, new_hash, proven.at, evidence, actor=actor)
            uow.commit()
        sent = self._notify(target, proven.at)
        return PasswordReset(target.name, ended, unlocked, sent)

    def begin_mobile_id(
        self, account: str, national_id: str, *, origin: str, push: bool = False
    ) -> PendingMobileId:
        """忘記密碼 with the mobile citizen certificate: a reset challenge that TW FidO asks
        ``national_id``'s phone to sign for ``account``. Whether the account exists, or is that
        person's, is told only once the phone has signed (as with a card)."""
        subject = _subject(account)
        if not subject:  # nobody's phone is asked for an answer that can only be refused
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="account")
        return self._mobile.begin(
            national_id, lambda: self.issue_challenge(origin=origin), subject=subject, push=push
        )

    def collect_mobile_id(
        self,
        pending_id: str,
        *,
        origin: str,
        account: str,
        answers: Mapping[str, Any],
        actor: str = "web",
    ) -> PasswordReset | None:
        """The phone's answer to :meth:`begin_mobile_id`, then :meth:`reset` as with a card's
        (and bound to the ID sent); the new password is checked first, on every poll, so a bad
        one spends no answer. None while the phone has not answered."""
        validate_form(PasswordFields, answers)
        answer = self._mobile.collect(pending_id, subject=_subject(account))
        if answer is None:
            return None
        return self.reset(
            answer.response, origin=origin, account=account, answers=answers, actor=actor,
            mobile=answer.binding,
        )  # fmt: skip

    # -- by a mailed link (SWREG_PASSWORD_RESET=card,email) ---------------------------------------

    def request_link(self, account: str, *, actor: str = "web") -> str | None:
        """Mail a single-use reset link (:data:`RESET_LINK_TTL`) to the address of ``account``
        if it exists and may reset; returns the link (for tests and the demo) or None. The
        caller tells every asker the same: whether an account exists is not told. Refused
        (``not_authorized``) unless ``SWREG_PASSWORD_RESET=card,email``."""
        if not self._email_links:
            raise RefusedError(ErrorCode.NOT_AUTHORIZED, detail="e-mail reset links are off")
        name = normalize_text(account or "")
        if not name:
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="account")
        if len(name) > MAX_ACCOUNT_CHARS:
            raise RefusedError(
                ErrorCode.FIELD_TOO_LONG, field="account", max_length=MAX_ACCOUNT_CHARS
            )
        self._limits.hit(RESET_LINK_LIMIT, name)  # counted for any name, known or not
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get_by_name(name)
            if row is None or row.status not in RESET_STATUSES:
                return None
            uow.account_tokens.add(
                AccountToken(
                    token_hash=token_hash(token), account_id=row.id, purpose=RESET_LINK,
                    created_at=now, expires_at=now + RESET_LINK_TTL,
                )
            )  # fmt: skip
            uow.audit.append(
                at=now, actor=actor, event="password_reset_requested",
                applicant_type=row.applicant_type,
                diff={
                    **masked_diff({"account": row.name}), "email": mask_email(row.email),
                    "expires_at": (now + RESET_LINK_TTL).isoformat(),
                },
            )  # fmt: skip
            target = _Target(row.id, row.name, row.email)
            uow.commit()
        link = f"{self._origin}{RESET_LINK_PATH}{token}"
        message = password_reset_link(
            to=target.email, account=target.name, link=link, sender=self._sender,
            language=self._language, at=now,
        )  # fmt: skip
        send_notice(self._mailer, message)
        return link

    def reset_with_link(
        self, link: str, *, answers: Mapping[str, Any], actor: str = "web"
    ) -> PasswordReset:
        """Set the password from ``answers`` with a mailed reset link (single use): unknown or
        used ``activation_invalid``, past its 30 minutes ``activation_expired``."""
        if not self._email_links:  # links mailed before the operator turned them off
            raise RefusedError(ErrorCode.NOT_AUTHORIZED, detail="e-mail reset links are off")
        password = validate_form(PasswordFields, answers).password.get_secret_value()
        digest = token_hash(link_token(link))
        with self._database.unit_of_work() as uow:  # reads only: argon2 runs outside
            found = uow.account_tokens.get(digest, RESET_LINK)
            if found is None or found.used_at is not None:
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            account_id = found.account_id
        new_hash = self._passwords.hash(password)
        del password
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.accounts.lock(account_id)  # before the token: links race without deadlock
            token = uow.account_tokens.get(digest, RESET_LINK)
            if row is None or token is None or token.used_at is not None:
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            if now > token.expires_at:
                raise RefusedError(ErrorCode.ACTIVATION_EXPIRED, field="token")
            if row.status == LOCKED:  # only the card lifts a lock (DESIGN.md §6)
                raise RefusedError(ErrorCode.ACCOUNT_LOCKED)
            if row.status not in RESET_STATUSES:
                raise RefusedError(status_refusal(row.status))
            if not uow.account_tokens.consume(digest, now):
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            ended, unlocked = _set_password(
                uow, row, new_hash, now, {"proof": "email"}, actor=actor
            )
            target = _Target(row.id, row.name, row.email)
            uow.commit()
        sent = self._notify(target, now)
        return PasswordReset(target.name, ended, unlocked, sent)

    def _bound_account(self, name: str, proven: ProvenCard) -> _Target:
        """The account ``name`` if the proven card is one of its active login certificates and
        the account may reset; else the refusal (``not_authorized`` for any other card)."""
        with self._database.unit_of_work() as uow:  # reads only
            certificate = uow.certificates.active_login(proven.fingerprint)
            account = uow.accounts.get_by_name(name) if name else None
            if account is None or certificate is None or certificate.account_id != account.id:
                raise RefusedError(ErrorCode.NOT_AUTHORIZED, field="account")
            if account.status not in RESET_STATUSES:
                raise RefusedError(status_refusal(account.status))
            return _Target(account.id, account.name, account.email)

    def _notify(self, target: _Target, at: datetime) -> bool:
        message = password_reset_notice(
            to=target.email, account=target.name, sender=self._sender,
            language=self._language, at=at,
        )  # fmt: skip
        return send_notice(self._mailer, message)


def _set_password(
    uow: UnitOfWork,
    account: Account,
    new_hash: str,
    at: datetime,
    evidence: dict[str, Any],
    *,
    actor: str,
) -> tuple[int, bool]:
    """The reset itself, in ``uow`` on the locked ``account``: the new hash, the wrong-password
    count back to 0, a locked account unlocked, every session ended and every pending mailed
    link retired (:func:`take_back`), audited ``password_reset`` with how it was proven;
    (sessions ended, whether it was unlocked)."""
    previous = account.status
    account.password_hash = new_hash
    account.failed_passwords = 0
    account.status = ACTIVE
    account.password_changed_at = at
    ended = take_back(uow, account.id, at)
    uow.audit.append(
        at=at,
        actor=actor,
        event="password_reset",
        from_state=previous,
        to_state=ACTIVE,
        applicant_type=account.applicant_type,
        diff={**masked_diff({"account": account.name}), **evidence, "sessions_ended": ended},
    )
    return ended, previous == LOCKED


def _subject(account: str) -> str:
    return account.strip()
