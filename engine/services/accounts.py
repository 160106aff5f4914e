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

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine._settings import MailSettings
from engine.core.identifiers import mask_email
from engine.core.step_data import masked_diff
from engine.services.hashing import IdentifierHasher
from engine.services.mail import Mailer, MailLanguage, activation_message
from engine.services.rate_limits import RateLimiter
from engine.store import Database, UnitOfWork

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


def activation_token_from(text: str) -> str:
    """The token in ``text``: the token itself, or a whole activation link pasted by a user."""
    text = text.strip()
    if ACTIVATION_PATH in text:
        text = text.rsplit(ACTIVATION_PATH, 1)[1]
    return text.split("?", 1)[0].split("#", 1)[0].strip("/")


@dataclass(frozen=True, slots=True)
class ActivationMail:
    """An activation link whose token is stored (or about to be, with its transaction)."""

    to: str
    account: str
    applicant_type: str
    link: str
    at: datetime


class AccountService:
    """Issues and mails activation links and activates accounts."""

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
        digest = token_hash(activation_token_from(token))
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
