"""The officer list and the officers' personal API tokens (DESIGN.md §9, §12).

An officer is a certificate on the list (政府憑證 GCA or 自然人憑證 MOICA) with a unique name and a
role: ``reviewer`` (approves, rejects, searches) or ``admin`` (also suspends accounts, manages
officers and trust). ``swreg officers token NAME`` issues the officer's personal bearer token
for ``/api/officer/…``: :data:`TOKEN_BYTES` random bytes, shown once; only its SHA-256 hex is
stored, so issuing a new one revokes the old and a leaked table holds no usable token.

:meth:`OfficerService.authenticate` is the officer API's gate, in this order::

    blocked         20 failed tokens from this client in the        rate_limited (retry_after)
                    current 10-minute window (checked first)
    shape           43 to 512 URL-safe characters (≥ 32 random      not_authorized
                    bytes, as issued)
    lookup          the SHA-256 hex of the token names an officer   not_authorized

Every refusal but the first counts one failure of the client in the database
(:class:`~engine.services.rate_limits.RateLimiter`, so all workers count together) and is logged
as ``officer_auth_failed`` with the client's keyed hash and a reason — never the token. The
lookup is by digest: the database compares SHA-256 values, whose timing says nothing about the
token.

Adding, removing and token issues are audit rows (actor ``cli`` by default) holding the name,
role and certificate fingerprint, never a token.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.core.declarations import IssuerCA
from engine.core.fields import Form, Name, validate_form
from engine.core.identifiers import normalize_text
from engine.pki.certificate import load_certificate
from engine.services.rate_limits import RateLimiter, retry_after, window_start
from engine.store import Database, Officer, UnitOfWork

log = logging.getLogger("swreg.officer")

REVIEWER: Final = "reviewer"
ADMIN: Final = "admin"
ROLES: Final = (REVIEWER, ADMIN)
OFFICER_CAS: Final = frozenset({IssuerCA.GCA, IssuerCA.MOICA})
"""The CAs whose certificates may be officers (DESIGN.md §12)."""
TOKEN_BYTES: Final = 32
"""Random bytes in a personal token (``secrets.token_urlsafe``: 43 characters)."""
MIN_TOKEN_CHARS: Final = 43
"""The fewest characters a presented token may have: 32 bytes in URL-safe base64."""
MAX_TOKEN_CHARS: Final = 512
MAX_NAME_CHARS: Final = 400
_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+")
FAILURE_LIMIT: Final = 20
FAILURE_WINDOW: Final = timedelta(minutes=10)
FAILURE_KEY: Final = "officer_auth"
"""The rate-limit key prefix of failed officer tokens: ``officer_auth:<client keyed hash>``."""
AUTH_FAILED_EVENT: Final = "officer_auth_failed"


@dataclass(frozen=True, slots=True)
class OfficerView:
    """An officer on the list, as the CLI and the officer API see it (no token, no hash)."""

    name: str
    role: str
    fingerprint: str
    added_at: datetime
    token_issued_at: datetime | None

    @property
    def actor(self) -> str:
        """The officer as an audit actor: ``officer:NAME``."""
        return f"officer:{self.name}"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A personal token just issued: shown once, never stored in clear."""

    name: str
    token: str
    fingerprint: str
    replaced: bool
    """Whether an earlier token of this officer was revoked by this one."""


class _NewOfficer(Form):
    name: Name


def token_digest(token: str) -> str:
    """The SHA-256 hex stored for a token (what lookups compare)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def well_formed(token: str | None) -> bool:
    """Whether ``token`` could be one this service issued: at least 32 random bytes in URL-safe
    base64 (43 characters), at most :data:`MAX_TOKEN_CHARS`; anything else never matches."""
    return (
        token is not None
        and MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS
        and _TOKEN_SHAPE.fullmatch(token) is not None
    )


class OfficerService:
    """The officer list (``swreg officers``) and the officer API's token check."""

    def __init__(self, database: Database, clock: Clock, limits: RateLimiter) -> None:
        self._database = database
        self._clock = clock
        self._limits = limits

    # -- the list ------------------------------------------------------------------------------

    def add(self, certificate: bytes, *, name: str, role: str, actor: str = "cli") -> OfficerView:
        """Put the officer holding ``certificate`` (DER or PEM) on the list as ``name``.

        ``invalid_value`` (role) for a role other than ``reviewer`` / ``admin``; the name's
        field codes (``field_required``, ``field_too_long``, ``invalid_value``); the
        certificate's parse codes; ``certificate_type_mismatch`` (certificate) for a
        certificate that is not a GCA or MOICA one; ``already_registered`` (name or
        certificate) when either is on the list already.
        """
        if role not in ROLES:
            raise RefusedError(
                ErrorCode.INVALID_VALUE, field="role", detail="role is reviewer or admin"
            )
        officer_name = validate_form(_NewOfficer, {"name": name}).name
        parsed = load_certificate(certificate)
        require_officer_card(parsed.ca)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            self._refuse_duplicate(uow, officer_name, parsed.fingerprint)
            row = Officer(
                name=officer_name,
                role=role,
                fingerprint=parsed.fingerprint,
                der=parsed.der,
                token_hash=None,
                token_issued_at=None,
                added_at=now,
            )
            uow.session.add(row)
            uow.audit.append(
                at=now,
                actor=actor,
                event="officer_added",
                diff={"name": officer_name, "role": role, "fingerprint": parsed.fingerprint},
            )
            try:
                uow.commit()
            except IntegrityError as exc:  # a concurrent add of the same name or certificate
                raise RefusedError(ErrorCode.ALREADY_REGISTERED, field="name") from exc
            return officer_view(row)

    def list(self) -> list[OfficerView]:
        """Every officer, by name."""
        with self._database.unit_of_work() as uow:
            rows = uow.session.scalars(select(Officer).order_by(Officer.name)).all()
            return [officer_view(row) for row in rows]

    def get(self, name: str) -> OfficerView:
        """One officer by name; ``not_registered`` (name) when not on the list."""
        with self._database.unit_of_work() as uow:
            return officer_view(_named(uow, name))

    def acting(self, name: str) -> OfficerView:
        """The officer acting under ``name`` (a CLI ``--officer``); ``not_authorized`` (field
        ``officer``) when no officer has that name. What the officer may do is the acting
        service's check (their role)."""
        with self._database.unit_of_work() as uow:
            try:
                return officer_view(_named(uow, name))
            except RefusedError:
                raise RefusedError(ErrorCode.NOT_AUTHORIZED, field="officer") from None

    def remove(self, name: str, *, actor: str = "cli") -> OfficerView:
        """Take the officer off the list; their token stops working at once.
        ``not_registered`` (name) when not on the list."""
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = _named(uow, name)
            view = officer_view(row)
            uow.session.delete(row)
            uow.audit.append(
                at=now,
                actor=actor,
                event="officer_removed",
                diff={"name": row.name, "role": row.role, "fingerprint": row.fingerprint},
            )
            uow.commit()
            return view

    # -- personal tokens -----------------------------------------------------------------------

    def issue_token(self, name: str, *, actor: str = "cli") -> IssuedToken:
        """A new personal API token for the officer ``name``, replacing (revoking) any earlier
        one. Only its digest is stored; the audit row names the officer, not the token.
        ``not_registered`` (name) when not on the list."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = _named(uow, name)
            replaced = row.token_hash is not None
            row.token_hash = token_digest(token)
            row.token_issued_at = now
            uow.audit.append(
                at=now,
                actor=actor,
                event="officer_token_issued",
                diff={"name": row.name, "fingerprint": row.fingerprint, "replaced": replaced},
            )
            uow.commit()
            return IssuedToken(row.name, token, row.fingerprint, replaced)

    def officer_for_token(self, token: str | None) -> OfficerView | None:
        """The officer whose current token is ``token``, or None (a malformed, short, revoked or
        unknown token; a removed officer). Counts and logs nothing: see :meth:`authenticate`."""
        with self._database.unit_of_work() as uow:
            return _holder(uow, token)

    def authenticate(self, token: str | None, *, client: str, subject: str) -> OfficerView:
        """The officer API's gate (see the module docstring): the officer presenting ``token``.

        ``client`` is the client's keyed hash, what the log line shows; ``subject`` what its
        failures count under (a keyed hash too: the portal's rate-limit subject, an IPv6
        client's /64). Neither may be an address in clear. Raises ``rate_limited`` (with
        ``retry_after``) while the subject is blocked, whatever the token; ``not_authorized``
        for a missing, malformed or unknown token, after counting and logging the failure.
        """
        key = f"{FAILURE_KEY}:{subject}"
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            if uow.rate_limits.count(key, window_start(now, FAILURE_WINDOW)) >= FAILURE_LIMIT:
                raise RefusedError(
                    ErrorCode.RATE_LIMITED, retry_after=retry_after(now, FAILURE_WINDOW)
                )
            officer = _holder(uow, token)
        if officer is not None:
            return officer
        reason = (
            "missing" if token is None else "malformed" if not well_formed(token) else "unknown"
        )
        log.warning(
            "%s client=%s reason=%s",
            AUTH_FAILED_EVENT,
            client,
            reason,
            extra={"event": AUTH_FAILED_EVENT, "client": client, "reason": reason},
        )
        self._limits.hit(key, limit=FAILURE_LIMIT, window=FAILURE_WINDOW)
        raise RefusedError(ErrorCode.NOT_AUTHORIZED)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _refuse_duplicate(uow: UnitOfWork, name: str, fingerprint: str) -> None:
        if uow.session.scalar(select(Officer.id).where(Officer.name == name)) is not None:
            raise RefusedError(
                ErrorCode.ALREADY_REGISTERED, field="name", detail="an officer has this name"
            )
        taken = select(Officer.id).where(Officer.fingerprint == fingerprint)
        if uow.session.scalar(taken) is not None:
            raise RefusedError(
                ErrorCode.ALREADY_REGISTERED,
                field="certificate",
                detail="this certificate is on the officer list",
            )


def require_officer_card(ca: IssuerCA) -> None:
    """``certificate_type_mismatch`` (field ``certificate``) unless ``ca`` issues officers'
    cards (:data:`OFFICER_CAS`: 政府憑證 GCA, 自然人憑證 MOICA; DESIGN.md §12). A company's,
    an organization's or a customs certificate is never an officer."""
    if ca not in OFFICER_CAS:
        raise RefusedError(
            ErrorCode.CERTIFICATE_TYPE_MISMATCH,
            field="certificate",
            detail="an officer's card is a GCA or MOICA certificate",
        )


def require_admin(officer: OfficerView) -> None:
    """``not_authorized`` (field ``officer``) unless ``officer`` is an admin: what only admins
    do (suspend accounts, verify and export the audit log) checks it first."""
    if officer.role != ADMIN:
        raise RefusedError(ErrorCode.NOT_AUTHORIZED, field="officer")


def _holder(uow: UnitOfWork, token: str | None) -> OfficerView | None:
    """The officer whose current token is ``token`` (looked up by its digest), or None."""
    if token is None or not well_formed(token):
        return None
    row = uow.session.scalar(select(Officer).where(Officer.token_hash == token_digest(token)))
    return None if row is None else officer_view(row)


def _named(uow: UnitOfWork, name: str) -> Officer:
    wanted = normalize_text(name[:MAX_NAME_CHARS])  # as names are stored (the Name field)
    row = uow.session.scalar(select(Officer).where(Officer.name == wanted))
    if row is None:
        raise RefusedError(ErrorCode.NOT_REGISTERED, field="name", detail="no such officer")
    return row


def officer_view(row: Officer) -> OfficerView:
    """An officer row as the services hand it out (no token, no hash)."""
    return OfficerView(
        name=row.name,
        role=row.role,
        fingerprint=row.fingerprint,
        added_at=row.added_at,
        token_issued_at=row.token_issued_at,
    )


__all__ = [
    "ADMIN",
    "AUTH_FAILED_EVENT",
    "FAILURE_LIMIT",
    "FAILURE_WINDOW",
    "MIN_TOKEN_CHARS",
    "OFFICER_CAS",
    "REVIEWER",
    "ROLES",
    "TOKEN_BYTES",
    "IssuedToken",
    "OfficerService",
    "OfficerView",
    "officer_view",
    "require_admin",
    "require_officer_card",
    "token_digest",
    "well_formed",
]
