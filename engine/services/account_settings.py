"""The account's own changes on its page (DESIGN.md §6): the password and the e-mail address.

Every call starts from the caller's live card-login session (``session_expired`` otherwise), and
both changes need the current password (:meth:`AccountSettingsService._check_current`)::

    the current password       missing: field_required; the password locked (忘記密碼 with the
                               card lifts it): account_locked; wrong: password_incorrect,
                               counted toward the lock shared with 憑證更換作業
                               (MAX_FAILED_PASSWORDS; a guess of a concurrent burst counted past
                               it: account_locked)

    change_password(token, current, answers)
      the new password: the rule and its confirmation        password_* / field_required
      one transaction on the locked account row: the new hash, ``password_changed_at``, every
      session ended and every pending mailed link retired (``take_back``), a new session for
      the caller (its old cookie is worth nothing, whoever copied it), an audit row
      ``password_changed``; then a notice to the account's address
    (With the card instead of the current password the page uses 忘記密碼 for its own account:
    :class:`~engine.services.password_reset.PasswordResetService`.)

    request_email_change(token, new_email, current)
      the address valid and not the current one             invalid_email / invalid_value
      the current password (above): a stolen session alone cannot move the address that
      notices and reset links go to
      the account's change limit                             rate_limited
      a single-use link (24 h) to the NEW address, a notice to the OLD one naming the new one
      masked; audited ``email_change_requested``
    confirm_email_change(link token)
      unknown or used                                        activation_invalid
      past its 24 hours                                      activation_expired
      the account still active or locked                     account_inactive / _suspended
      on the locked account row: the address set, every other pending link retired (their
      addresses forgotten); audited ``email_changed``

A password reset, log out everywhere, a card replacement and a suspension retire pending links
too (``take_back``), so the owner taking the account back kills a thief's pending change.

The account NAME does not follow the address, not even for a 個人 account (whose name was its
e-mail address when it registered): the name is how the account logs in by password, is shown on
its customs certificates and appears in the audit log, and DESIGN.md §3's account rule computes it
once, at registration. The page says so next to the field.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    MAX_FAILED_PASSWORDS,
    AccountLimit,
    AccountLimits,
    AccountService,
    AccountSummary,
    count_wrong_password,
    link_token,
    password_accepted,
    status_refusal,
    take_back,
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
    """A changed password: the account, how many of its other sessions ended, and the token of
    the caller's new session (the one it came with ended too)."""

    account: str
    sessions_ended: int
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Owner:
    id: int
    email: str
    stored: str


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
        self,
        token: str,
        *,
        current: str,
        answers: Mapping[str, Any],
        actor: str = "web",
        client: str | None = None,
    ) -> PasswordChange:
        """Set a new password after the current one (module docstring). Every session of the
        account ends, the caller's too, and the caller gets a new one (``PasswordChange.token``;
        ``client`` as for a login): a copy of the old cookie is worth nothing afterwards."""
        session = self._session(token)
        password = validate_form(PasswordFields, answers).password.get_secret_value()
        owner = self._check_current(session, current, actor=actor)
        new_hash = self._passwords.hash(password)
        del password, current
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.accounts.lock(owner.id)
            if row is None or row.status != ACTIVE or row.password_hash != owner.stored:
                raise RefusedError(ErrorCode.ACCOUNT_LOCKED)  # locked or reset meanwhile
            row.password_hash = new_hash
            row.failed_passwords = 0
            row.password_changed_at = now
            ended = take_back(uow, row.id, now) - 1  # the caller's own is replaced, not ended
            fresh = self._logins.open_session(uow, row, now, client=client)
            uow.audit.append(
                at=now, actor=actor, event="password_changed",
                applicant_type=row.applicant_type,
                diff={**masked_diff({"account": row.name}), "sessions_ended": ended},
            )  # fmt: skip
            uow.commit()
        notice = password_changed_notice(
            to=owner.email, account=session.account, sender=self._sender,
            language=self._language, at=now,
        )  # fmt: skip
        send_notice(self._mailer, notice)
        return PasswordChange(session.account, ended, fresh.token)

    # -- the e-mail address ---------------------------------------------------------------------

    def request_email_change(
        self, token: str, *, new_email: str, current: str, actor: str = "web"
    ) -> EmailChange:
        """Mail a confirmation link to ``new_email`` and a notice to the current address, once
        the current password is given: a session alone must not move the address that notices
        (and, where enabled, reset links) go to."""
        session = self._session(token)
        address = validate_form(_NewEmail, {"email": new_email}).email
        owner = self._check_current(session, current, actor=actor)
        if address == owner.email:
            raise RefusedError(
                ErrorCode.INVALID_VALUE, field="email", detail="that is the current address"
            )
        self._limits.hit(EMAIL_CHANGE_LIMIT, session.account)
        link_token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires_at = now + EMAIL_CHANGE_TTL
        with self._database.unit_of_work() as uow:
            uow.account_tokens.add(
                AccountToken(
                    token_hash=token_hash(link_token), account_id=owner.id,
                    purpose=EMAIL_CHANGE, new_email=address, created_at=now,
                    expires_at=expires_at,
                )
            )  # fmt: skip
            uow.audit.append(
                at=now, actor=actor, event="email_change_requested",
                applicant_type=session.applicant_type,
                diff={
                    **masked_diff({"account": session.account}),
                    "email": mask_email(owner.email), "new_email": mask_email(address),
                    "expires_at": expires_at.isoformat(),
                },
            )  # fmt: skip
            uow.commit()
        link = f"{self._origin}{EMAIL_CHANGE_PATH}{link_token}"
        confirmation = email_change_confirmation(
            to=address, account=session.account, link=link, sender=self._sender,
            language=self._language, at=now,
        )  # fmt: skip
        self._mailer.send(confirmation)  # a failure is the caller's: ask again
        notice = email_change_notice(
            to=owner.email, account=session.account, new_address=mask_email(address),
            sender=self._sender, language=self._language, at=now,
        )  # fmt: skip
        send_notice(self._mailer, notice)
        return EmailChange(session.account, address, link, expires_at)

    def confirm_email_change(self, link: str, *, actor: str = "web") -> str:
        """Set the address a confirmation link was sent to; returns the account name. Every
        other pending link of the account (e-mail changes, reset links to the old address) is
        retired with it."""
        digest = token_hash(link_token(link))
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            found = uow.account_tokens.get(digest, EMAIL_CHANGE)
            if found is None or found.used_at is not None or found.new_email is None:
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            account = uow.accounts.lock(found.account_id)  # before the token: no deadlock
            row = uow.account_tokens.get(digest, EMAIL_CHANGE)
            if account is None or row is None or row.used_at is not None or not row.new_email:
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            if now > row.expires_at:
                raise RefusedError(ErrorCode.ACTIVATION_EXPIRED, field="token")
            if account.status not in CARD_LOGIN_STATUSES:
                raise RefusedError(status_refusal(account.status))
            if not uow.account_tokens.consume(digest, now):
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            old, new = account.email, row.new_email
            account.email = new
            row.new_email = None  # the address lives on in the account only
            uow.account_tokens.retire_all(account.id, now)
            uow.audit.append(
                at=now, actor=actor, event="email_changed",
                applicant_type=account.applicant_type,
                diff={
                    **masked_diff({"account": account.name}),
                    "email": mask_email(old), "new_email": mask_email(new),
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

    def _check_current(self, session: SessionView, current: str, *, actor: str) -> _Owner:
        """The session's account if ``current`` is its password: ``field_required``,
        ``account_locked`` (the password is locked: 忘記密碼 with the card), or
        ``password_incorrect`` counted toward the lock — a guess counted past the limit (a
        concurrent burst) is answered ``account_locked``, whatever it was."""
        if not current:
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="current_password")
        with self._database.unit_of_work() as uow:  # reads only
            account = uow.accounts.get_by_name(session.account)
            if account is None or account.status not in CARD_LOGIN_STATUSES:
                raise RefusedError(ErrorCode.SESSION_EXPIRED)
            if account.status != ACTIVE:
                raise RefusedError(ErrorCode.ACCOUNT_LOCKED)
            owner = _Owner(account.id, account.email, account.password_hash)
        right = self._passwords.verify(owner.stored, current)
        with self._database.unit_of_work() as uow:
            if right:
                if not password_accepted(uow, owner.id, owner.stored):
                    raise RefusedError(ErrorCode.ACCOUNT_LOCKED)  # locked or reset meanwhile
                uow.commit()
                return owner
            count = count_wrong_password(uow, owner.id, self._clock.now(), actor=actor)
            uow.commit()
        if count > MAX_FAILED_PASSWORDS:
            raise RefusedError(ErrorCode.ACCOUNT_LOCKED)
        raise RefusedError(ErrorCode.PASSWORD_INCORRECT, field="current_password")
