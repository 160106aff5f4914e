"""What the web layer needs from the engine, and the one place errors become HTTP statuses.

:class:`Portal` is the web layer's view of the composition root (:class:`engine.App`): the
services the routes call (registrations, accounts, logins, customs certificates, renewals,
Turnkey, rate limits, demo outbox) and the per-client rate limits the routes apply. Routes reach
services only through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from engine._bootstrap import App
from engine._errors import (
    EnvironmentProblem,
    ErrorCode,
    Language,
    SwregError,
    UsageError,
)
from engine._plugins import Catalog
from engine._settings import Settings
from engine.core.workflow import WorkflowDefinition
from engine.services import metrics
from engine.services.account_settings import AccountSettingsService
from engine.services.accounts import AccountService
from engine.services.customs import CustomsCertificateService
from engine.services.hashing import IdentifierHasher
from engine.services.login import LoginService
from engine.services.mail import OutboxMailer
from engine.services.officer_console import OfficerConsole
from engine.services.officers import OfficerService
from engine.services.password_reset import PasswordResetService
from engine.services.registration import RegistrationService
from engine.services.renewal import RenewalService
from engine.services.turnkey import TurnkeyVerifier
from engine.web._security import rate_limit_subject


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate limit per client: ``limit`` hits per ``window``. A client is its address, an
    IPv6 client its /64 (:func:`~engine.web._security.rate_limit_subject`)."""

    name: str
    limit: int
    window: timedelta


START_LIMIT: Final = Limit("start", 20, timedelta(minutes=10))
CHECK_LIMIT: Final = Limit("check", 30, timedelta(minutes=10))
STEP_LIMIT: Final = Limit("step", 120, timedelta(minutes=10))
"""Challenges, card results and form posts of registrations, per client: each costs a row or
an argon2id hash, so none may be looped without bound."""
LOGIN_LIMIT: Final = Limit("login", 20, timedelta(minutes=10))
ACTIVATE_LIMIT: Final = Limit("activate", 20, timedelta(minutes=10))
RENEWAL_LIMIT: Final = Limit("renewal", 20, timedelta(minutes=10))
PASSWORD_RESET_LIMIT: Final = Limit("password_reset", 20, timedelta(minutes=10))
MOBILE_ID_LIMIT: Final = Limit("mobile_id", 20, timedelta(minutes=10))
"""Mobile ID signings begun, per client, whatever the flow: each asks MOI and a phone."""
ACCOUNT_LIMIT: Final = Limit("account", 60, timedelta(minutes=10))
"""The account page's reads and changes, per client (a password change costs two argon2id)."""
IMPORT_LIMIT: Final = Limit("customs_import", 20, timedelta(minutes=10))
QUERY_LIMIT: Final = Limit("customs_query", 60, timedelta(minutes=10))


@dataclass(frozen=True)
class Portal:
    """The services behind the portal's routes, taken from one bootstrapped :class:`App`."""

    app: App

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def catalog(self) -> Catalog:
        return self.app.catalog

    @property
    def registrations(self) -> RegistrationService:
        return self.app.registrations

    @property
    def origin(self) -> str:
        """What browsers' card checks sign: the configured public origin, never ``Host``."""
        return self.settings.public_origin

    @property
    def accounts(self) -> AccountService:
        return self.app.accounts

    @property
    def logins(self) -> LoginService:
        return self.app.logins

    @property
    def officers(self) -> OfficerService:
        return self.app.officers

    @property
    def console(self) -> OfficerConsole:
        """The officer console's services (DESIGN.md §12)."""
        return self.app.console

    @property
    def customs(self) -> CustomsCertificateService:
        return self.app.customs

    @property
    def renewals(self) -> RenewalService:
        return self.app.renewals

    @property
    def account_settings(self) -> AccountSettingsService:
        return self.app.account_settings

    @property
    def password_resets(self) -> PasswordResetService:
        return self.app.password_resets

    @property
    def mobile_id_enabled(self) -> bool:
        """Whether the pages offer 行動自然人憑證 (a TW FidO service is configured)."""
        return self.app.mobile_ids.enabled

    @property
    def mobile_push_enabled(self) -> bool:
        """Whether the pages offer a push to the person's bound device (``SWREG_TWFIDO_PUSH``)."""
        return self.app.mobile_ids.push_enabled

    @property
    def turnkey(self) -> TurnkeyVerifier:
        return self.app.turnkey

    @property
    def workflow(self) -> WorkflowDefinition:
        return self.app.workflow

    @property
    def identifiers(self) -> IdentifierHasher:
        """The keyed hash under the server's identifier key: client addresses in rate-limit
        keys and audit rows, CSRF tokens."""
        return self.app.identifiers

    def client_subject(self, client: str) -> str:
        """What rate limits count ``client`` (its address) under: a keyed hash of it, of its
        /64 for IPv6, so that no rate-limit key holds an address."""
        return self.identifiers.hash("client", rate_limit_subject(client))[:32]

    @contextmanager
    def limit(self, rule: Limit, client: str) -> Iterator[None]:
        """One hit of ``client`` (its address) against ``rule`` for the work of the block,
        counted in the block's own transaction (``RateLimiter.counting``); ``rate_limited``
        past it. The key is ``rule:`` and :meth:`client_subject`."""
        key = f"{rule.name}:{self.client_subject(client)}"
        refused = lambda: metrics.rate_limited(rule.name)  # noqa: E731
        with self.app.limits.counting(key, limit=rule.limit, window=rule.window, refused=refused):
            yield

    def outbox(self) -> OutboxMailer | None:
        """The demo mailer's outbox, when the portal runs in demo mode with one."""
        mailer = self.app.mailer
        return mailer if self.settings.demo and isinstance(mailer, OutboxMailer) else None


# -- errors → HTTP ---------------------------------------------------------------------------

_STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.REGISTRATION_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ACCOUNT_EXISTS: 409,
    ErrorCode.ALREADY_REGISTERED: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CSRF_FAILED: 403,
    ErrorCode.NOT_AUTHORIZED: 403,
    ErrorCode.SESSION_EXPIRED: 401,
    ErrorCode.REQUEST_TOO_LARGE: 413,
}


def status_for(error: SwregError) -> int:
    """The HTTP status of a domain error: the one mapping of the web layer."""
    if error.code in _STATUS:
        return _STATUS[error.code]
    if isinstance(error, EnvironmentProblem):
        return 503
    if isinstance(error, UsageError):
        return 400
    return 422


def retry_after(error: SwregError) -> str | None:
    """The ``Retry-After`` header value (whole seconds) of a ``rate_limited`` error."""
    value = error.details.get("retry_after")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(max(1, int(-(-value // 1))))
    return None


def error_body(error: SwregError, language: Language) -> dict[str, Any]:
    """``{"errors": [{field, code, message, ...details}]}`` with JSON-safe details."""
    errors = []
    for item in error.as_dicts(language):
        errors.append({key: _json_safe(value) for key, value in item.items()})
    return {"errors": errors}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)
