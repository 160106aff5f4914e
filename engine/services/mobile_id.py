"""行動自然人憑證: a TW FidO signing under way, between the person and MOI (DESIGN.md §13,
DOMAIN.md §4.6).

A flow that a card answers with a signed challenge (the card check of a registration, 憑證登入,
忘記密碼) may instead have the person's phone sign the same challenge::

    begin(purpose, subject, national_id, issue)  the ID checked, the per-person limit counted,
                                                 the flow's challenge issued, getSpTicket (or a
                                                 push) for its payload → a PendingMobileId: the
                                                 pending id (the browser's bearer) and the QR
                                                 code's text
    collect(pending id, purpose, subject)        at most one question to MOI per 4 s, whoever
                                                 polls → None while pending, else a
                                                 MobileIdAnswer: the CardResponse the flow checks
                                                 like a card's, and the binding

The portal and the CLI (``--card twfido:ID``, :class:`Phone`) both go this way. The ticket is
stored (``mobile_id_tickets``) with only the SHA-256 of its pending id, the keyed hash of the ID
sent and its last four digits, so any worker may answer the next poll. A final answer of the
service (signed, refused, expired, unreachable, tampered) removes it: a pending id is used
once. The person's time on the phone never outlives the flow's challenge.

The binding (:class:`MobileIdBinding`) ties the phone's certificate to the person typed in: the
ID typed is the one sent (its keyed hash, compared at 基本資料), the certificate's last four ID
digits when it carries them (checked by every flow), and the service's answer kept as evidence.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from engine._clock import Clock
from engine._errors import (
    CertificateError,
    ChallengeError,
    EnvironmentProblem,
    ErrorCode,
    RefusedError,
    SwregError,
)
from engine._settings import TwFidoSettings
from engine.core.declarations import CertificateIdentity
from engine.core.identifiers import ascii_upper, is_valid_national_id, normalize_text
from engine.pki.card_response import CardResponse, Challenge
from engine.services.accounts import AccountLimit, AccountLimits, token_hash
from engine.services.hashing import IdentifierHasher
from engine.services.twfido import POLL_INTERVAL, Ticket, TwFidoClient
from engine.store import Database, MobileIdTicket, UnitOfWork

MAX_NATIONAL_ID_CHARS: Final = 10
MIN_TIME_LIMIT: Final = 30
"""The service's shortest ``time_limit`` (seconds)."""
MOBILE_ID_PERSON_LIMIT: Final = AccountLimit("mobile_id", 5, timedelta(minutes=10))
"""Signings asked of one person's phone, whoever asks (counted before the service is)."""
_SUBJECT_KIND: Final = "mobile_id_subject"


@dataclass(frozen=True, slots=True)
class PendingMobileId:
    """A signing the phone has not answered yet: the pending id (give it to the browser only),
    the QR code's text and the app-to-app link (none for a push), and when its time ends."""

    pending_id: str
    sp_ticket: str | None
    app_link: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MobileIdBinding:
    """What ties the phone's answer to the person typed in (module docstring)."""

    national_id_hash: str
    id_last4: str
    hashed_id_num: str
    sp_ticket_id: str
    transaction_id: str

    def check(self, identity: CertificateIdentity) -> None:
        """``identity_mismatch`` (``national_id``) when the certificate's last four ID digits,
        if it has them, are not those of the ID sent."""
        certified = identity.get("id_last4")
        if certified is not None and certified != self.id_last4:
            raise CertificateError(ErrorCode.IDENTITY_MISMATCH, field="national_id")

    def audit(self) -> dict[str, str]:
        """For an audit row: that the certificate came from the phone, and MOI's transaction
        (nothing personal)."""
        return {
            "bridge": "twfido",
            "sp_ticket_id": self.sp_ticket_id,
            "transaction_id": self.transaction_id,
        }

    def evidence(self) -> dict[str, str]:
        """Kept with a registration's card evidence (purged with it): the audit's facts, the
        keyed hash of the ID sent and the service's opaque ``hashed_id_num``."""
        return {
            **self.audit(),
            "national_id_hash": self.national_id_hash,
            "hashed_id_num": self.hashed_id_num,
        }


@dataclass(frozen=True, slots=True)
class MobileIdAnswer:
    """The phone's answer as a card's (:class:`CardResponse`, no chain), and its binding."""

    response: CardResponse
    binding: MobileIdBinding


@dataclass(frozen=True, slots=True)
class Phone:
    """The person's phone for the CLI's whole 憑證註冊 (``--card twfido:ID``): no PIN (the app
    asks for its own); ``on_ticket`` shows the QR code's text and the link, ``sleep`` waits
    between polls."""

    national_id: str
    sleep: Callable[[float], None]
    on_ticket: Callable[[PendingMobileId], None] = lambda _pending: None


class MobileIdSigner:
    """Begins TW FidO signings for swreg's flows and collects their answers."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        identifiers: IdentifierHasher,
        settings: TwFidoSettings | None,
        *,
        limits: AccountLimits,
        client: Callable[[TwFidoSettings], TwFidoClient] | None = None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._identifiers = identifiers
        self._limits = limits
        self._settings = settings
        make = client or (lambda s: TwFidoClient(s, now=clock.now))
        self._client = make(settings) if settings is not None else None

    @property
    def enabled(self) -> bool:
        """Whether a TW FidO service is configured (``SWREG_TWFIDO_*``)."""
        return self._client is not None

    @property
    def push_enabled(self) -> bool:
        """Whether a signing may be pushed to the person's bound device (``SWREG_TWFIDO_PUSH``)."""
        return self._settings is not None and self._settings.push

    def begin(
        self,
        *,
        purpose: str,
        subject: str,
        national_id: str,
        issue: Callable[[], Challenge],
        push: bool = False,
    ) -> PendingMobileId:
        """Ask the service to have ``national_id``'s phone sign the challenge ``issue`` makes,
        for ``purpose`` (a flow) and ``subject`` (the registration id, the account name, or
        ""): the ticket. Nothing is issued or asked for an ID that cannot be sent."""
        id_num = national_id_of(national_id)
        client = self._require_client()
        if push and not self.push_enabled:
            raise RefusedError(ErrorCode.INVALID_VALUE, field="push", detail="SWREG_TWFIDO_PUSH")
        self._limits.hit(MOBILE_ID_PERSON_LIMIT, id_num)  # nobody's phone is flooded
        challenge = issue()
        now = self._clock.now()
        seconds = self._time_limit(challenge, now)
        ask = client.push if push else client.start
        ticket = ask(id_num, challenge.payload, time_limit=seconds)
        pending_id = secrets.token_urlsafe(32)
        with self._database.unit_of_work() as uow:
            uow.mobile_id_tickets.add(
                MobileIdTicket(
                    id_hash=token_hash(pending_id),
                    purpose=purpose,
                    subject_hash=self._subject_hash(purpose, subject),
                    challenge_id=challenge.id,
                    national_id_hash=self._identifiers.hash("national_id", id_num),
                    id_last4=id_num[-4:],
                    sp_ticket_id=ticket.sp_ticket_id,
                    transaction_id=ticket.transaction_id,
                    created_at=now,
                    expires_at=ticket.deadline,
                    next_poll_at=now + POLL_INTERVAL,
                )
            )
            uow.commit()
        if push:
            return PendingMobileId(pending_id, None, None, ticket.deadline)
        return PendingMobileId(pending_id, ticket.sp_ticket, ticket.app_link(), ticket.deadline)

    def collect(self, pending_id: str, *, purpose: str, subject: str) -> MobileIdAnswer | None:
        """The phone's answer to the ticket ``pending_id`` begun for ``purpose`` and
        ``subject``; None while it is pending. The service is asked at most once per
        :data:`POLL_INTERVAL` however often this is called: the caller who claims the poll
        holds it for the HTTP timeout too, so a slow answer is never asked for twice. Anything
        final removes the ticket; an unknown or finished one is ``challenge_expired``."""
        client = self._require_client()
        id_hash = token_hash(pending_id)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = self._ticket(uow, id_hash, purpose, subject)
            lease = now + POLL_INTERVAL + client.http_timeout
            if not uow.mobile_id_tickets.claim_poll(id_hash, now, lease):
                return None  # asked less than 4 s ago (by this browser or another worker)
            uow.commit()
            challenge_id = row.challenge_id
            ticket = Ticket("", row.sp_ticket_id, row.transaction_id, row.expires_at)
            binding = (row.national_id_hash, row.id_last4, row.sp_ticket_id, row.transaction_id)
        try:
            answer = client.poll(ticket)
        except SwregError:
            self._remove(id_hash)
            raise
        if answer is None:
            self._pace(id_hash, self._clock.now() + POLL_INTERVAL)
            return None
        if not self._remove(id_hash):  # pragma: no cover - the poll is held past the timeout
            raise ChallengeError(ErrorCode.CHALLENGE_USED)
        national_id_hash, id_last4, sp_ticket_id, transaction_id = binding
        return MobileIdAnswer(
            CardResponse(challenge_id, answer.certificate, answer.signature, ()),
            MobileIdBinding(
                national_id_hash, id_last4, answer.hashed_id_num, sp_ticket_id, transaction_id
            ),
        )

    def discard(self, pending_id: str, *, purpose: str, subject: str) -> None:
        """Forget the ticket (its flow moved on without it); unknown: nothing."""
        id_hash = token_hash(pending_id)
        with self._database.unit_of_work() as uow:
            row = uow.mobile_id_tickets.get(id_hash)
            if row is not None and row.subject_hash == self._subject_hash(purpose, subject):
                uow.mobile_id_tickets.remove(id_hash)
                uow.commit()

    def _ticket(self, uow: UnitOfWork, id_hash: str, purpose: str, subject: str) -> MobileIdTicket:
        row = uow.mobile_id_tickets.get(id_hash)
        expected = (purpose, self._subject_hash(purpose, subject))
        if row is None or (row.purpose, row.subject_hash) != expected:
            raise ChallengeError(ErrorCode.CHALLENGE_EXPIRED, detail="unknown mobile ID ticket")
        return row

    def _time_limit(self, challenge: Challenge, now: datetime) -> int:
        """The configured time on the phone, never past the challenge's own end."""
        configured = self._settings.time_limit if self._settings is not None else MIN_TIME_LIMIT
        left = int((challenge.expires_at - now).total_seconds())
        return max(MIN_TIME_LIMIT, min(configured, left))

    def _pace(self, id_hash: str, next_poll_at: datetime) -> None:
        with self._database.unit_of_work() as uow:
            uow.mobile_id_tickets.pace(id_hash, next_poll_at)
            uow.commit()

    def _remove(self, id_hash: str) -> bool:
        with self._database.unit_of_work() as uow:
            removed = uow.mobile_id_tickets.remove(id_hash)
            uow.commit()
        return removed

    def _require_client(self) -> TwFidoClient:
        if self._client is None:
            raise _not_configured()
        return self._client

    def _subject_hash(self, purpose: str, subject: str) -> str:
        return self._identifiers.hash(_SUBJECT_KIND, f"{purpose}:{subject}")


class MobileIds:
    """One flow's use of the signer (``purpose``: ``registration``, ``login``,
    ``password_reset``): ``mobile_id_unavailable`` when no TW FidO service is configured."""

    def __init__(self, signer: MobileIdSigner | None, *, purpose: str) -> None:
        self._signer = signer if signer is not None and signer.enabled else None
        self._purpose = purpose

    @property
    def enabled(self) -> bool:
        return self._signer is not None

    @property
    def push_enabled(self) -> bool:
        return self._signer is not None and self._signer.push_enabled

    def begin(
        self,
        national_id: str,
        issue: Callable[[], Challenge],
        *,
        subject: str = "",
        push: bool = False,
    ) -> PendingMobileId:
        return self.require().begin(
            purpose=self._purpose, subject=subject, national_id=national_id, issue=issue,
            push=push,
        )  # fmt: skip

    def collect(self, pending_id: str, *, subject: str = "") -> MobileIdAnswer | None:
        return self.require().collect(pending_id, purpose=self._purpose, subject=subject)

    def discard(self, pending_id: str, *, subject: str = "") -> None:
        if self._signer is not None:
            self._signer.discard(pending_id, purpose=self._purpose, subject=subject)

    def require(self) -> MobileIdSigner:
        """The signer; ``mobile_id_unavailable`` when no TW FidO service is configured."""
        if self._signer is None:
            raise _not_configured()
        return self._signer


def national_id_of(value: str) -> str:
    """The ID as it is sent to MOI and hashed: NFKC (a full-width ``Ａ１２３…`` typed with an
    IME is the same person), ASCII upper case; ``field_required`` / ``invalid_national_id``."""
    id_num = ascii_upper(normalize_text(value))
    if not id_num:
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field="national_id")
    if len(id_num) > MAX_NATIONAL_ID_CHARS or not is_valid_national_id(id_num):
        raise RefusedError(ErrorCode.INVALID_NATIONAL_ID, field="national_id")
    return id_num


def _not_configured() -> EnvironmentProblem:
    return EnvironmentProblem(
        ErrorCode.MOBILE_ID_UNAVAILABLE, detail="SWREG_TWFIDO_URL is not configured"
    )
