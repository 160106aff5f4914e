"""The account's own changes on its page (DESIGN.md §6): the password and the e-mail address.

Every call starts from the caller's live card-login session (``session_expired`` otherwise)::

    change_password(token, current, answers)
      the new password: the rule and its confirmation        password_* / field_required
      the password usable: ``active`` (``locked`` waits for 忘記密碼 with the card)
                                                             account_locked
      the current password (argon2id, outside any transaction); a wrong one counts toward
      the lock shared with 憑證更換作業 (MAX_FAILED_PASSWORDS)   password_incorrect
      one transaction: the new hash, ``password_changed_at``, every OTHER session ended,
      an audit row ``password_changed``; then a notice to the account's address
    (With the card instead of the current password the page uses 忘記密碼 for its own account:
    :class:`~engine.services.password_reset.PasswordResetService`.)

    request_email_change(token, new_email)
      the address valid and not the current one             invalid_email / invalid_value
      the account's change limit                             rate_limited
      a single-use link (24 h) to the NEW address, a notice to the OLD one naming the new one
      masked; audited ``email_change_requested``
    confirm_email_change(link token)
      unknown or used                                        activation_invalid
      past its 24 hours                                      activation_expired
      the account still active or locked                     account_inactive / _suspended
      the address set, the account's other pending changes retired; audited ``email_changed``

The account NAME does not follow the address, not even for a 個人 account (whose name was its
e-mail address when it registered): the name is how the account logs in by password, is shown on
its customs certificates and appears in the audit log, and DESIGN.md §3's account rule computes it
once, at registration. The page says so next to the field.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.core.fields import Email, Form, validate_form
from engine.core.forms import PasswordFields
from engine.core.identifiers import mask_email
from engine.core.step_data import masked_diff
from engine.services.accounts import (
    ACTIVE,
    CARD_LOGIN_STATUSES,
    AccountLimit,
    AccountLimits,
    AccountService,
    AccountSummary,
    count_wrong_password,
    link_token,
    status_refusal,
    token_hash,
)
from engine.services.hashing import PasswordHasher
from engine.services.login import LoginService, SessionSummary, SessionView
from engine.services.mail import (
    Mailer,
    MailLanguage,
    email_change_confirmation,
    email_change_notice,
    password_changed_notice,
    send_notice,
)
from engine.store import AccountToken, Database

EMAIL_CHANGE = "email_change"
"""The ``purpose`` of an e-mail change's confirmation link."""
EMAIL_CHANGE_PATH = "/account/email/"
EMAIL_CHANGE_TTL = timedelta(hours=24)
EMAIL_CHANGE_LIMIT = AccountLimit("email_change", 5, timedelta(hours=1))
"""E-mail changes asked for by one account: each sends two mails."""


class _NewEmail(Form):
    email: Email


@dataclass(frozen=True, slots=True)
class AccountOverview:
    """The account page: the account as :meth:`AccountService.show` tells it, and its live
    sessions, newest first, the caller's own marked ``current``."""

    summary: AccountSummary
    sessions: tuple[SessionSummary, ...]


@dataclass(frozen=True, slots=True)
class PasswordChange:
    account: str
    sessions_ended: int


@dataclass(frozen=True, slots=True)
class EmailChange:
    """An asked-for change: the link went to the new address (returned for tests and the demo)."""

    account: str
    new_email: str
    link: str
    expires_at: datetime


class AccountSettingsService:
    """Password and e-mail changes by the account's owner, from a card-login session."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        accounts: AccountService,
        logins: LoginService,
        passwords: PasswordHasher,
        mailer: Mailer,
        *,
        limits: AccountLimits,
        public_origin: str,
        sender: str,
        language: MailLanguage = "zh-TW",
    ) -> None:
        self._database = database
        self._clock = clock
        self._accounts = accounts
        self._logins = logins
        self._passwords = passwords
        self._mailer = mailer
        self._limits = limits
        self._origin = public_origin.rstrip("/")
        self._sender = sender
        self._language: MailLanguage = language

    def overview(self, token: str) -> AccountOverview:
        """What the account page shows the owner of the live session ``token``."""
        session = self._session(token)
        sessions = tuple(self._logins.sessions_of(token))
        return AccountOverview(self._accounts.show(session.account), sessions)

    # -- the password -------------------------------------------------------------------------

    def change_password(
        self, token: str, *, current: str, answers: Mapping[str, Any], actor: str = "web"
    ) -> PasswordChange:
        """Set a new password after the current one (module docstring)."""
        session = self._session(token)
        password = validate_form(PasswordFields, answers).password.get_secret_value()
        if not current:
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="current_password")
        with self._database.unit_of_work() as uow:  # reads only
            account = uow.accounts.get_by_name(session.account)
            if account is None or account.status not in CARD_LOGIN_STATUSES:
                raise RefusedError(ErrorCode.SESSION_EXPIRED)
            if account.status != ACTIVE:
                raise RefusedError(ErrorCode.ACCOUNT_LOCKED)
            account_id, stored, email = account.id, account.password_hash, account.email
        right = self._passwords.verify(stored, current)
        new_hash = self._passwords.hash(password) if right else ""
        del password, current
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            if not right:
                count_wrong_password(uow, account_id, now, actor=actor)
                uow.commit()
                raise RefusedError(ErrorCode.PASSWORD_INCORRECT, field="current_password")
            row = uow.accounts.get(account_id)
            if row is None or row.status != ACTIVE or row.password_hash != stored:
                raise RefusedError(ErrorCode.ACCOUNT_LOCKED)  # locked or changed meanwhile
            row.password_hash = new_hash
            row.failed_passwords = 0
            row.password_changed_at = now
            ended = uow.sessions.end_others(row.id, token_hash(token), now)
            uow.audit.append(
                at=now, actor=actor, event="password_changed",
                applicant_type=row.applicant_type,
                diff={**masked_diff({"account": row.name}), "sessions_ended": ended},
            )  # fmt: skip
            uow.commit()
        notice = password_changed_notice(
            to=email, account=session.account, sender=self._sender, language=self._language,
            at=now,
        )  # fmt: skip
        send_notice(self._mailer, notice)
        return PasswordChange(session.account, ended)

    # -- the e-mail address ---------------------------------------------------------------------

    def request_email_change(
        self, token: str, *, new_email: str, actor: str = "web"
    ) -> EmailChange:
        """Mail a confirmation link to ``new_email`` and a notice to the current address."""
        session = self._session(token)
        address = validate_form(_NewEmail, {"email": new_email}).email
        with self._database.unit_of_work() as uow:  # reads only
            account = uow.accounts.get_by_name(session.account)
            if account is None:
                raise RefusedError(ErrorCode.SESSION_EXPIRED)
            if address == account.email:
                raise RefusedError(
                    ErrorCode.INVALID_VALUE, field="email", detail="that is the current address"
                )
        self._limits.hit(EMAIL_CHANGE_LIMIT, session.account)
        link_token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires_at = now + EMAIL_CHANGE_TTL
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get_by_name(session.account)
            if row is None:  # pragma: no cover - accounts are never deleted while in use
                raise RefusedError(ErrorCode.SESSION_EXPIRED)
            uow.account_tokens.add(
                AccountToken(
                    token_hash=token_hash(link_token), account_id=row.id, purpose=EMAIL_CHANGE,
                    new_email=address, created_at=now, expires_at=expires_at,
                )
            )  # fmt: skip
            uow.audit.append(
                at=now, actor=actor, event="email_change_requested",
                applicant_type=row.applicant_type,
                diff={
                    **masked_diff({"account": row.name}),
                    "email": mask_email(row.email), "new_email": mask_email(address),
                    "expires_at": expires_at.isoformat(),
                },
            )  # fmt: skip
            old_address = row.email
            uow.commit()
        link = f"{self._origin}{EMAIL_CHANGE_PATH}{link_token}"
        confirmation = email_change_confirmation(
            to=address, account=session.account, link=link, sender=self._sender,
            language=self._language, at=now,
        )  # fmt: skip
        self._mailer.send(confirmation)  # a failure is the caller's: ask again
        notice = email_change_notice(
            to=old_address, account=session.account, new_address=mask_email(address),
            sender=self._sender, language=self._language, at=now,
        )  # fmt: skip
        send_notice(self._mailer, notice)
        return EmailChange(session.account, address, link, expires_at)

    def confirm_email_change(self, link: str, *, actor: str = "web") -> str:
        """Set the address a confirmation link was sent to; returns the account name."""
        digest = token_hash(link_token(link))
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.account_tokens.get(digest, EMAIL_CHANGE)
            if row is None or row.used_at is not None or row.new_email is None:
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            if now > row.expires_at:
                raise RefusedError(ErrorCode.ACTIVATION_EXPIRED, field="token")
            if not uow.account_tokens.consume(digest, now):
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            account = row.account
            if account.status not in CARD_LOGIN_STATUSES:
                raise RefusedError(status_refusal(account.status))
            old = account.email
            account.email = row.new_email
            uow.account_tokens.retire(account.id, EMAIL_CHANGE, now)
            uow.audit.append(
                at=now, actor=actor, event="email_changed",
                applicant_type=account.applicant_type,
                diff={
                    **masked_diff({"account": account.name}),
                    "email": mask_email(old), "new_email": mask_email(row.new_email),
                },
            )  # fmt: skip
            uow.commit()
            return account.name

    # -- helpers ---------------------------------------------------------------------------------

    def _session(self, token: str) -> SessionView:
        session = self._logins.session(token) if token else None
        if session is None:
            raise RefusedError(ErrorCode.SESSION_EXPIRED)
        return session
