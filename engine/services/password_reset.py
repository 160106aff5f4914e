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
gets past the proof, so the account's status is told to its owner alone. The e-mail-only reset
link (``SWREG_PASSWORD_RESET=card,email``) is not built: the setting accepts only ``card``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.core.fields import validate_form
from engine.core.forms import PasswordFields
from engine.core.step_data import masked_diff
from engine.pki.card_response import CardResponse, Challenge
from engine.services.accounts import (
    ACTIVE,
    CARD_LOGIN_STATUSES,
    LOCKED,
    PASSWORD_RESET_ACCOUNT_LIMIT,
    AccountLimits,
    status_refusal,
)
from engine.services.card_proof import CardProofs, ProvenCard
from engine.services.hashing import PasswordHasher
from engine.services.mail import Mailer, MailLanguage, password_reset_notice, send_notice
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService
from engine.store import Account, Database, UnitOfWork

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
        language: MailLanguage = "zh-TW",
        challenge_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._database = database
        self._clock = clock
        self._passwords = passwords
        self._mailer = mailer
        self._limits = limits
        self._sender = sender
        self._language: MailLanguage = language
        self._proofs = CardProofs(
            database, clock, trust, revocation, scope=PASSWORD_RESET_SCOPE, ttl=challenge_ttl
        )

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
    ) -> PasswordReset:
        """Set the password of ``account`` from ``answers`` (``password``, ``password_confirm``)
        once the card of ``response`` proved it is the account's (module docstring)."""
        password = validate_form(PasswordFields, answers).password.get_secret_value()
        proven = self._proofs.prove(response, origin=origin)
        target = self._bound_account(account, proven)
        self._limits.hit(PASSWORD_RESET_ACCOUNT_LIMIT, target.name)
        new_hash = self._passwords.hash(password)
        del password
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get(target.id)
            if row is None:  # pragma: no cover - accounts are never deleted while in use
                raise RefusedError(ErrorCode.NOT_AUTHORIZED)
            if row.status not in RESET_STATUSES:
                raise RefusedError(status_refusal(row.status))  # suspended meanwhile
            if uow.certificates.active_login(proven.fingerprint) is None:
                raise RefusedError(ErrorCode.NOT_AUTHORIZED)  # replaced meanwhile
            unlocked = row.status == LOCKED
            previous = row.status
            row.password_hash = new_hash
            row.failed_passwords = 0
            row.status = ACTIVE
            row.password_changed_at = proven.at
            ended = uow.sessions.end_all(row.id, proven.at)
            _audit(uow, row, proven, previous, ended, origin=origin, actor=actor)
            uow.commit()
        sent = self._notify(target, proven.at)
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


def _audit(
    uow: UnitOfWork,
    account: Account,
    proven: ProvenCard,
    previous: str,
    ended: int,
    *,
    origin: str,
    actor: str,
) -> None:
    uow.audit.append(
        at=proven.at,
        actor=actor,
        event="password_reset",
        from_state=previous,
        to_state=ACTIVE,
        applicant_type=account.applicant_type,
        diff={
            **masked_diff({"account": account.name}),
            "certificate": proven.fingerprint,
            "origin": origin,
            "sessions_ended": ended,
            "revocation": proven.revocation.audit(),
        },
    )
