"""Account activation (帳號啟用): the mailed single-use link that turns a new account active.

A completed registration leaves the account ``pending_activation`` (「請至您的電子郵件Email進行帳號
啟用」). The registration service has :meth:`AccountService.issue` store the account's first
token (with its ``activation_sent`` audit row) in the transaction that creates the account, and
:meth:`AccountService.deliver` mail it once that transaction has committed: a link that arrives
always works, and an account never exists without one. Only the SHA-256 of a token is stored;
the token itself exists in the mail (and is returned to the caller for tests and the demo),
never in the database or the audit log.

Also here, shared by the services that take an account name from a stranger (renewal by
password, login, the card-proven password reset): the account statuses, the wrong-password
count that makes an account ``locked`` (:data:`MAX_FAILED_PASSWORDS`), and the per-account rate
limits (:class:`AccountLimits`), keyed by a keyed hash of the name, never the name itself.
Audit rows hold account names as :func:`engine.core.step_data.masked_diff` masks them (an
e-mail address as ``m**g@example.com``; a UBN or an OID as it is).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, case, update

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine._settings import MailSettings
from engine.core.identifiers import mask_email, normalize_text
from engine.core.step_data import masked_diff
from engine.services.hashing import IdentifierHasher
from engine.services.mail import Mailer, MailLanguage, activation_message
from engine.services.officers import OfficerView, require_admin
from engine.services.rate_limits import RateLimiter
from engine.store import Account, Database, UnitOfWork

log = logging.getLogger("swreg.mail")

ACTIVATION_PATH = "/activate/"
PENDING = "pending_activation"
ACTIVE = "active"
SUSPENDED = "suspended"
LOCKED = "locked"
"""Too many wrong passwords in a row: the password is refused until a card-proven password
reset. The card still logs in (:data:`CARD_LOGIN_STATUSES`): wrong passwords typed by someone
else must not lock the owner out of the account."""
CARD_LOGIN_STATUSES = frozenset({ACTIVE, LOCKED})
"""The statuses in which the account's own card logs in and its sessions live."""

MAX_REASON_CHARS = 500
"""The longest reason an officer may give for a suspension or a reactivation."""
MAX_FAILED_PASSWORDS = 5
"""Wrong passwords in a row (``Account.failed_passwords``) that make an active account
``locked``; a right password sets the count back to 0."""


def status_refusal(status: str) -> ErrorCode:
    """The refusal for an account whose card may not log in (not in
    :data:`CARD_LOGIN_STATUSES`), told to whoever proved it is theirs (a card bound to it):
    ``account_suspended`` or ``account_inactive``."""
    if status == SUSPENDED:
        return ErrorCode.ACCOUNT_SUSPENDED
    return ErrorCode.ACCOUNT_INACTIVE


@dataclass(frozen=True, slots=True)
class AccountLimit:
    """A rate limit per account: ``limit`` attempts per ``window``, whoever makes them."""

    name: str
    limit: int
    window: timedelta


LOGIN_ACCOUNT_LIMIT = AccountLimit("login", 20, timedelta(minutes=10))
"""Card logins of one account (counted once the card proved it is the account's)."""
RENEWAL_ACCOUNT_LIMIT = AccountLimit("renewal", 10, timedelta(minutes=10))
"""憑證更換作業 attempts naming one account (counted once the new card passed its checks)."""
PASSWORD_RESET_ACCOUNT_LIMIT = AccountLimit("password_reset", 5, timedelta(minutes=10))
"""忘記密碼 resets of one account (counted once the card proved it is the account's)."""


class AccountLimits:
    """Per-account rate limits on top of the per-client ones of the web layer (DESIGN.md §11).

    The key is ``account:<limit>:<HMAC-SHA256 of the name>``: the rate-limit table never holds
    an account name (an e-mail address) in clear, and nobody without the server key can tell
    which account a row counts.
    """

    def __init__(self, limiter: RateLimiter, identifiers: IdentifierHasher) -> None:
        self._limiter = limiter
        self._identifiers = identifiers

    def key(self, rule: AccountLimit, account: str) -> str:
        """The rate-limit key of ``account`` under ``rule``."""
        return f"account:{rule.name}:{self._identifiers.hash('account', account)}"

    def hit(self, rule: AccountLimit, account: str) -> None:
        """Count one attempt on ``account``; ``rate_limited`` (with ``retry_after``) past it.

        Its own transaction: call it outside any open unit of work.
        """
        self._limiter.hit(self.key(rule, account), limit=rule.limit, window=rule.window)


def token_hash(token: str) -> str:
    """The SHA-256 hex under which a token (activation or session) is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def link_token(text: str) -> str:
    """The token in ``text``: the token itself, or a whole mailed link pasted by a user (its
    last path segment; query and fragment dropped)."""
    text = text.strip().split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return text.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class ActivationMail:
    """An activation link whose token is stored (or about to be, with its transaction)."""

    to: str
    account: str
    applicant_type: str
    link: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """One login certificate of an account as its owner and officers see it (no personal data).

    ``role`` is the card rank the certificate carries (``primary`` 正卡, ``secondary`` 附卡,
    ``mobile``) or ``card`` where the CA has no ranks; ``status`` is ``active``, ``expired``
    or what ended it (``replaced``).
    """

    fingerprint: str
    ca: str
    role: str
    not_after: datetime
    status: str

    def as_dict(self) -> dict[str, str]:
        return {
            "fingerprint": self.fingerprint,
            "ca": self.ca,
            "role": self.role,
            "not_after": self.not_after.isoformat(),
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """``swreg accounts show``: an account with its e-mail address masked (DESIGN.md §9)."""

    account: str
    state: str
    type: str
    email: str
    certificates: tuple[CertificateSummary, ...]
    password_changed_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        changed = self.password_changed_at
        return {
            "account": self.account,
            "state": self.state,
            "type": self.type,
            "email": self.email,
            "certificates": [c.as_dict() for c in self.certificates],
            "password_changed_at": changed.isoformat() if changed else None,
        }


class AccountService:
    """Issues and mails activation links, activates accounts, shows them, and lets an admin
    officer suspend and reactivate them."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        mailer: Mailer,
        *,
        public_origin: str,
        activation_ttl: timedelta,
        sender: str = MailSettings.sender,
        language: MailLanguage = "zh-TW",
    ) -> None:
        self._database = database
        self._clock = clock
        self._mailer = mailer
        self._origin = public_origin.rstrip("/")
        self._ttl = activation_ttl
        self._sender = sender
        self._language: MailLanguage = language

    def send_activation(self, account_name: str, *, actor: str = "system") -> str:
        """Mail a new activation link to the account's e-mail address; returns the link.

        The token is committed (its hash, with ``activation_sent`` audited) before the mail goes
        out, so a link that arrives always works. Earlier links stay valid until they expire or
        the account is activated. An unknown or already active account is refused
        (``invalid_value``); a mail failure raises ``EnvironmentProblem`` after the commit.
        """
        with self._database.unit_of_work() as uow:
            account = uow.accounts.get_by_name(account_name)
            if account is None:
                raise RefusedError(
                    ErrorCode.INVALID_VALUE, field="account", detail="no such account"
                )
            if account.status != PENDING:
                raise RefusedError(
                    ErrorCode.INVALID_VALUE, field="account", detail=f"account is {account.status}"
                )
            mail = self.issue(
                uow, account_id=account.id, name=account.name, email=account.email,
                applicant_type=account.applicant_type, actor=actor,
            )  # fmt: skip
            uow.commit()
        self.deliver(mail)
        return mail.link

    def issue(
        self, uow: UnitOfWork, *, account_id: int, name: str, email: str, applicant_type: str,
        actor: str = "system",
    ) -> ActivationMail:  # fmt: skip
        """Store a new activation token of a pending account in ``uow`` and audit it
        (``activation_sent``); mail the returned link with :meth:`deliver` after the commit."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires_at = now + self._ttl
        uow.activations.insert(
            {
                "token_hash": token_hash(token),
                "account_id": account_id,
                "created_at": now,
                "expires_at": expires_at,
            }
        )
        uow.audit.append(
            at=now,
            actor=actor,
            event="activation_sent",
            applicant_type=applicant_type,
            diff={
                **masked_diff({"account": name}),
                "email": mask_email(email),
                "expires_at": expires_at.isoformat(),
            },
        )
        link = f"{self._origin}{ACTIVATION_PATH}{token}"
        return ActivationMail(
            to=email, account=name, applicant_type=applicant_type, link=link, at=now
        )

    def deliver(self, mail: ActivationMail) -> None:
        """Mail an issued link; a mail failure raises ``EnvironmentProblem``."""
        message = activation_message(
            to=mail.to, account=mail.account, link=mail.link, sender=self._sender,
            language=self._language, at=mail.at,
        )  # fmt: skip
        self._mailer.send(message)

    def deliver_quietly(self, mail: ActivationMail) -> None:
        """:meth:`deliver` for a new account: a failure is logged, never raised.

        The account exists regardless, and the link can be re-sent (:meth:`send_activation`).
        """
        try:
            self.deliver(mail)
        except Exception as exc:  # SwregError, or a third-party mailer broke its contract
            _log_failure(mail, exc)

    def activate(self, token: str, *, actor: str = "web") -> str:
        """Activate the account of ``token`` (or of a pasted link); returns the account name.

        Single use: an unknown or used token is ``activation_invalid``, one past its expiry
        ``activation_expired``. Activation retires the account's other unused links.
        """
        digest = token_hash(link_token(token))
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.activations.get(digest)
            if row is None or row.used_at is not None:
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            if now > row.expires_at:
                raise RefusedError(ErrorCode.ACTIVATION_EXPIRED, field="token")
            if not uow.activations.consume(digest, now):
                raise RefusedError(ErrorCode.ACTIVATION_INVALID, field="token")
            account = row.account
            if account.status not in (PENDING, ACTIVE):
                raise RefusedError(
                    ErrorCode.ACCOUNT_INACTIVE, detail=f"account is {account.status}"
                )
            previous = account.status
            account.status = ACTIVE
            uow.activations.retire(account.id, now)
            uow.audit.append(
                at=now,
                actor=actor,
                event="activated",
                from_state=previous,
                to_state=ACTIVE,
                applicant_type=account.applicant_type,
                diff=masked_diff({"account": account.name}),
            )
            uow.commit()
            return account.name

    def show(self, name: str) -> AccountSummary:
        """The account called ``name`` (masked e-mail, login certificates); unknown:
        ``not_registered``."""
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            account = uow.accounts.get_by_name(name)
            if account is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED, field="account")
            certificates = tuple(
                CertificateSummary(
                    fingerprint=row.fingerprint,
                    ca=row.ca,
                    role=row.card_rank or "card",
                    not_after=row.not_after,
                    status=_certificate_status(row.status, row.not_after, now),
                )
                for row in uow.certificates.logins_of(account.id)
            )
            return AccountSummary(
                account=account.name,
                state=account.status,
                type=account.applicant_type,
                email=mask_email(account.email),
                certificates=certificates,
                password_changed_at=account.password_changed_at,
            )

    def suspend(
        self, name: str, *, officer: OfficerView, reason: str, via: str = "cli"
    ) -> AccountSummary:
        """停用: an admin officer sets the account ``suspended`` (from ``active`` or ``locked``)
        and every session of it ends; audited ``account_suspended`` with the reason, the
        officer's certificate and ``via`` (``cli``, ``web:client=…``)."""
        return self._set_suspended(name, True, officer=officer, reason=reason, via=via)

    def reactivate(
        self, name: str, *, officer: OfficerView, reason: str, via: str = "cli"
    ) -> AccountSummary:
        """An admin officer sets a ``suspended`` account ``active`` again; audited
        ``account_reactivated`` like :meth:`suspend`. Its old sessions stay ended."""
        return self._set_suspended(name, False, officer=officer, reason=reason, via=via)

    def _set_suspended(
        self, name: str, suspended: bool, *, officer: OfficerView, reason: str, via: str
    ) -> AccountSummary:
        require_admin(officer)
        reason = normalize_text(reason or "")
        if not reason:
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="reason")
        if len(reason) > MAX_REASON_CHARS:
            raise RefusedError(
                ErrorCode.FIELD_TOO_LONG, field="reason", max_length=MAX_REASON_CHARS
            )
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            found = uow.accounts.get_by_name(name)
            account = uow.accounts.lock(found.id) if found is not None else None
            if account is None:
                raise RefusedError(ErrorCode.NOT_REGISTERED, field="account")
            allowed = CARD_LOGIN_STATUSES if suspended else {SUSPENDED}
            if account.status not in allowed:
                raise RefusedError(
                    ErrorCode.INVALID_TRANSITION, detail=f"account is {account.status}"
                )
            previous = account.status
            account.status = SUSPENDED if suspended else ACTIVE
            diff: dict[str, object] = {
                **masked_diff({"account": account.name}),
                "reason": reason,
                "certificate": officer.fingerprint,
                "via": via,
            }
            if suspended:
                diff["sessions_ended"] = take_back(uow, account.id, now)
            uow.audit.append(
                at=now,
                actor=officer.actor,
                event="account_suspended" if suspended else "account_reactivated",
                from_state=previous,
                to_state=account.status,
                applicant_type=account.applicant_type,
                diff=diff,
            )
            uow.commit()
        return self.show(name)


def count_wrong_password(uow: UnitOfWork, account_id: int, at: datetime, *, actor: str) -> int:
    """One more wrong password in a row; the :data:`MAX_FAILED_PASSWORDS`-th locks an active
    account (one atomic UPDATE, so concurrent attempts all count) and is audited. Returns the
    count: past :data:`MAX_FAILED_PASSWORDS` the guess came too late to be answered (a burst of
    concurrent guesses all read the account active), and the caller says ``account_locked``."""
    count_after = Account.failed_passwords + 1
    stmt = (
        update(Account)
        .where(Account.id == account_id)
        .values(
            failed_passwords=count_after,
            status=case(
                (and_(Account.status == ACTIVE, count_after >= MAX_FAILED_PASSWORDS), LOCKED),
                else_=Account.status,
            ),
        )
        .returning(Account.failed_passwords, Account.status, Account.name, Account.applicant_type)
        .execution_options(synchronize_session=False)
    )
    count, status, name, applicant_type = uow.session.execute(stmt).one()
    if status == LOCKED and count == MAX_FAILED_PASSWORDS:
        uow.audit.append(
            at=at, actor=actor, event="account_locked", from_state=ACTIVE, to_state=LOCKED,
            applicant_type=applicant_type,
            diff={**masked_diff({"account": name}), "failed_passwords": count},
        )  # fmt: skip
    return int(count)


def take_back(uow: UnitOfWork, account_id: int, at: datetime) -> int:
    """What an account's owner taking it back undoes, in ``uow``: every session ended and every
    mailed link still pending (an e-mail change, a password reset) retired — a thief's session
    or link dies with it. For a password reset, log out everywhere, a card replacement and a
    suspension; returns how many sessions ended."""
    uow.account_tokens.retire_all(account_id, at)
    return uow.sessions.end_all(account_id, at)


def password_accepted(uow: UnitOfWork, account_id: int, stored: str) -> bool:
    """A right password: the count goes back to 0, if the account is still active and its
    password still the one checked."""
    stmt = (
        update(Account)
        .where(
            Account.id == account_id,
            Account.status == ACTIVE,
            Account.password_hash == stored,
        )
        .values(failed_passwords=0)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], uow.session.execute(stmt)).rowcount == 1


def _certificate_status(stored: str, not_after: datetime, now: datetime) -> str:
    """An active certificate past its end is ``expired``; the others keep what ended them."""
    return "expired" if stored == "active" and not_after <= now else stored


def _log_failure(mail: ActivationMail, exc: BaseException) -> None:
    """Log a failed activation mail with the masked address only (no exception text: an SMTP
    reply may quote the address)."""
    code = getattr(exc, "code", type(exc).__name__)
    log.warning(
        "activation mail for a %s account to %s not sent (%s); it can be re-sent",
        mail.applicant_type,
        mask_email(mail.to),
        code,
    )
