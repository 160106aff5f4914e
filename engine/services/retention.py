"""Retention (DESIGN.md §6): ``swreg purge`` forgets what is no longer needed.

Two things go, both after ``SWREG_RETENTION_DAYS`` (:attr:`Settings.retention_days`, an integer
≥ 0, default 30; 0 takes everything already due):

* **the personal data of ended registrations.** A registration has ended when it is
  ``completed``, ``cancelled``, ``rejected`` or ``expired``; it ended at its last event, and an
  expired one at its idle deadline (``expires_at``). A registration still open past its
  deadline has ended too: the purge first records its expiry (the ``expire`` event, as the
  sweeper would), so no open registration ever loses its data. What a purged registration
  keeps and loses is said by :meth:`engine.store.RegistrationRepository.purge`: it keeps id,
  state, type, times and certificate fingerprint; the entered fields, the certificate DER, the
  account name and the personal parts of the card evidence go, and ``purged_at`` is set.
* **accounts never activated**: ``pending_activation`` accounts created at least that many
  days ago whose activation links have all lapsed (none unused and unexpired: a link still
  valid could be used a moment later, so its account stays until it expires). They go with
  everything that refers to them (activation tokens, sessions, their login certificates and
  those certificates' reminders), which frees their names and their cards for a new
  registration.

Dead mailed links of an account's own changes (``account_tokens``: used, retired or expired)
go at every run, with the new e-mail addresses they held, and so do mobile ID signings whose
time ended unanswered (``mobile_id_tickets``, abandoned in the browser) and sessions that can
no longer be used: card-login sessions ended or expired (with the masked client address and
browser they held) and officers' console sessions expired.

Everything of one run but the expiry is one transaction with one audit row (``purge``, counts
only: the audit log holds no personal data, so nothing in it has to go and the chain stays
whole). A run that finds nothing writes nothing; running it again at once purges nothing, so it
is safe from cron at any frequency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, exists, select

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine._settings import MAX_RETENTION_DAYS
from engine.core.workflow import ENDINGS
from engine.services.accounts import PENDING
from engine.services.registration import RegistrationService
from engine.store import (
    Account,
    AccountToken,
    ActivationToken,
    Certificate,
    Database,
    LoginSession,
    OfficerSession,
    Reminder,
    UnitOfWork,
)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What one run of the purge did."""

    retention_days: int
    cutoff: datetime
    """Registrations ended and accounts created at or before this time were due."""
    expired: int
    """Open registrations past their idle deadline that the run marked ``expired`` first."""
    registrations: int
    """Registrations whose personal data was removed."""
    accounts: int
    """Accounts never activated that were deleted."""
    links: int = 0
    """Mailed links of accounts' own changes that could no longer be used, deleted with the
    addresses they held (used, retired or expired: no retention time applies)."""
    mobile_tickets: int = 0
    """Mobile ID signings whose time ended unanswered (no retention time applies)."""
    sessions: int = 0
    """Card-login and console sessions that can no longer be used (no retention time applies)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "retention_days": self.retention_days,
            "cutoff": self.cutoff.isoformat(),
            "expired": self.expired,
            "registrations": self.registrations,
            "accounts": self.accounts,
            "links": self.links,
            "mobile_tickets": self.mobile_tickets,
            "sessions": self.sessions,
        }


class RetentionService:
    """``swreg purge``: see the module docstring."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        registrations: RegistrationService,
        *,
        retention_days: int,
    ) -> None:
        self._database = database
        self._clock = clock
        self._registrations = registrations
        self.retention_days = retention_days

    def purge(
        self,
        *,
        days: int | None = None,
        actor: str = "cli",
        progress: Callable[[str, int], object] | None = None,
    ) -> PurgeReport:
        """Purge what ended (or was created) at least ``days`` (default: the configured
        retention) days ago; idempotent. ``progress`` is told each step's name and count as it
        is done (``expired``, ``registrations``, ``accounts``, ``links``, ``mobile_tickets``,
        ``sessions``; the last five commit together)."""
        told = progress or (lambda step, count: None)
        days = self.retention_days if days is None else days
        if isinstance(days, bool) or not 0 <= days <= MAX_RETENTION_DAYS:
            raise RefusedError(
                ErrorCode.INVALID_VALUE, field="days", detail=f"0 to {MAX_RETENTION_DAYS}"
            )
        expired = self._registrations.expire_idle(actor=actor)
        told("expired", expired)
        now = self._clock.now()
        cutoff = now - timedelta(days=days)
        with self._database.unit_of_work() as uow:
            registrations = uow.registrations.purge(
                ended_by=cutoff, at=now, ending_states=sorted(ENDINGS)
            )
            told("registrations", registrations)
            accounts = _delete_unactivated(uow, created_by=cutoff, now=now)
            told("accounts", accounts)
            links = uow.account_tokens.delete_dead(now)
            told("links", links)
            mobile_tickets = uow.mobile_id_tickets.delete_dead(now)
            told("mobile_tickets", mobile_tickets)
            sessions = uow.sessions.delete_dead(now) + _delete_dead_console_sessions(uow, now)
            told("sessions", sessions)
            report = PurgeReport(
                retention_days=days,
                cutoff=cutoff,
                expired=expired,
                registrations=registrations,
                accounts=accounts,
                links=links,
                mobile_tickets=mobile_tickets,
                sessions=sessions,
            )
            if (links or mobile_tickets or sessions) and not (registrations or accounts):
                uow.commit()  # dead links hold no history worth an audit row
            if registrations or accounts:
                uow.audit.append(
                    at=now, actor=actor, event="purge",
                    diff={
                        "retention_days": days, "cutoff": cutoff.isoformat(),
                        "registrations": registrations, "accounts": accounts,
                    },
                )  # fmt: skip
                uow.commit()
        return report


def _delete_dead_console_sessions(uow: UnitOfWork, now: datetime) -> int:
    stmt = delete(OfficerSession).where(OfficerSession.expires_at <= now)
    result = cast(CursorResult[Any], uow.session.execute(stmt))
    return result.rowcount


def _delete_unactivated(uow: UnitOfWork, *, created_by: datetime, now: datetime) -> int:
    """Delete the pending accounts created at or before ``created_by`` that no activation link
    can open any more, with every row referring to them; how many accounts."""
    session = uow.session
    usable_link = exists().where(
        ActivationToken.account_id == Account.id,
        ActivationToken.used_at.is_(None),
        ActivationToken.expires_at > now,
    )
    due = (
        select(Account.id)
        .where(Account.status == PENDING, Account.created_at <= created_by, ~usable_link)
        .with_for_update()  # PostgreSQL: nobody activates or re-links them meanwhile
    )
    ids = list(session.scalars(due))
    if not ids:
        return 0
    certificates = select(Certificate.id).where(Certificate.account_id.in_(ids))
    for statement in (
        delete(Reminder).where(Reminder.certificate_id.in_(certificates)),
        delete(Certificate).where(Certificate.account_id.in_(ids)),
        delete(ActivationToken).where(ActivationToken.account_id.in_(ids)),
        delete(AccountToken).where(AccountToken.account_id.in_(ids)),
        delete(LoginSession).where(LoginSession.account_id.in_(ids)),
    ):
        session.execute(statement.execution_options(synchronize_session=False))
    accounts = (
        delete(Account).where(Account.id.in_(ids)).execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(accounts))
    return result.rowcount


__all__ = ["MAX_RETENTION_DAYS", "PurgeReport", "RetentionService"]
