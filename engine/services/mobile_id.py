"""行動自然人憑證 on the portal: a TW FidO signing under way, between the browser and MOI
(DESIGN.md §13, DOMAIN.md §4.6).

A flow that a card answers with a signed challenge (the card check of a registration, 憑證登入,
忘記密碼) may instead have the person's phone sign the same challenge::

    begin(purpose, subject, national_id, challenge)  getSpTicket (or a push) for the challenge's
                                                      payload → a PendingMobileId: its pending id
                                                      (the browser's bearer) and the QR code's text
    collect(pending id, purpose, subject)             at most one question to MOI per 4 s,
                                                      whoever polls → None while pending, else a
                                                      MobileIdAnswer: the CardResponse the flow
                                                      checks like a card's, and the binding

The ticket is stored (``mobile_id_tickets``) with only the SHA-256 of its pending id, the keyed
hash of the ID sent and its last four digits, so any worker may answer the next poll. A final
answer of the service (signed, refused, expired, unreachable, tampered) removes it: a pending id
is used once. The binding (:class:`MobileIdBinding`) is what ties the phone's certificate to the
person typed in: the ID typed is the one sent (its keyed hash, compared at 基本資料), the
certificate's last four ID digits when it carries them, and the service's own answer kept as
evidence.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
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
from engine.core.identifiers import is_valid_national_id
from engine.pki.card_response import CardResponse, Challenge
from engine.services.accounts import AccountLimit, AccountLimits, token_hash
from engine.services.hashing import IdentifierHasher
from engine.services.twfido import POLL_INTERVAL, MobileSignature, Ticket, TwFidoClient
from engine.store import Database, MobileIdTicket

MAX_NATIONAL_ID_CHARS: Final = 10
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

    def evidence(self) -> dict[str, str]:
        """Kept with the card evidence: how the certificate came, and the service's answer."""
        return {
            "bridge": "twfido",
            "national_id_hash": self.national_id_hash,
            "hashed_id_num": self.hashed_id_num,
            "sp_ticket_id": self.sp_ticket_id,
            "transaction_id": self.transaction_id,
        }


@dataclass(frozen=True, slots=True)
class MobileIdAnswer:
    """The phone's answer as a card's (:class:`CardResponse`, no chain), and its binding."""

    response: CardResponse
    binding: MobileIdBinding


class MobileIdSigner:
    """Begins TW FidO signings for the portal's flows and collects their answers."""

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
        make = client or (lambda s: TwFidoClient(s, now=clock.now))
        self._client = make(settings) if settings is not None else None

    @property
    def enabled(self) -> bool:
        """Whether a TW FidO service is configured (``SWREG_TWFIDO_*``)."""
        return self._client is not None

    def national_id_hash(self, national_id: str) -> str:
        """The keyed hash an ID is stored and compared under (as 基本資料 stores it)."""
        return self._identifiers.hash("national_id", national_id)

    def card(
        self,
        national_id: str,
        *,
        sleep: Callable[[float], None],
        on_ticket: Callable[[Ticket], None] = lambda _ticket: None,
    ) -> MobileIdCard:
        """The person's phone as a card for the CLI's whole 憑證註冊 (:class:`MobileIdCard`)."""
        client = self._require_client()
        return MobileIdCard(
            client, national_id, self._identifiers, sleep=sleep, on_ticket=on_ticket
        )

    def begin(
        self,
        *,
        purpose: str,
        subject: str,
        national_id: str,
        challenge: Challenge,
        push: bool = False,
    ) -> PendingMobileId:
        """Ask the service to have ``national_id``'s phone sign ``challenge`` for ``purpose``
        (a flow) and ``subject`` (the registration id, the account name, or ""): the ticket."""
        id_num = _national_id(national_id)
        client = self._require_client()
        self._limits.hit(MOBILE_ID_PERSON_LIMIT, id_num)  # nobody's phone is flooded
        ticket = (
            client.push(id_num, challenge.payload)
            if push
            else client.start(id_num, challenge.payload)
        )
        pending_id = secrets.token_urlsafe(32)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            uow.mobile_id_tickets.add(
                MobileIdTicket(
                    id_hash=token_hash(pending_id),
                    purpose=purpose,
                    subject_hash=self._subject_hash(purpose, subject),
                    challenge_id=challenge.id,
                    national_id_hash=self.national_id_hash(id_num),
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
        ``subject``; None while it is pending (the service is asked at most once per
        :data:`POLL_INTERVAL`, however often this is called). Anything final removes the
        ticket; an unknown or finished one is ``challenge_expired``."""
        id_hash = token_hash(pending_id)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.mobile_id_tickets.get(id_hash)
            if row is None or (row.purpose, row.subject_hash) != (
                purpose,
                self._subject_hash(purpose, subject),
            ):
                raise ChallengeError(ErrorCode.CHALLENGE_EXPIRED, detail="unknown mobile ID ticket")
            if not uow.mobile_id_tickets.claim_poll(id_hash, now, now + POLL_INTERVAL):
                return None  # asked less than 4 s ago (by this browser or another worker)
            uow.commit()
            ticket = Ticket("", row.sp_ticket_id, row.transaction_id, row.expires_at)
            binding = MobileIdBinding(
                row.national_id_hash, row.id_last4, "", row.sp_ticket_id, row.transaction_id
            )
            challenge_id = row.challenge_id
        try:
            answer = self._require_client().poll(ticket)
        except SwregError:
            self._remove(id_hash)
            raise
        if answer is None:
            return None
        if not self._remove(id_hash):  # pragma: no cover - the poll slot is held for 4 s
            raise ChallengeError(ErrorCode.CHALLENGE_USED)
        return MobileIdAnswer(
            CardResponse(challenge_id, answer.certificate, answer.signature, ()),
            replace(binding, hashed_id_num=answer.hashed_id_num),
        )

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

    def begin(
        self, national_id: str, challenge: Challenge, *, subject: str = "", push: bool = False
    ) -> PendingMobileId:
        return self._require().begin(
            purpose=self._purpose, subject=subject, national_id=national_id,
            challenge=challenge, push=push,
        )  # fmt: skip

    def collect(self, pending_id: str, *, subject: str = "") -> MobileIdAnswer | None:
        return self._require().collect(pending_id, purpose=self._purpose, subject=subject)

    def _require(self) -> MobileIdSigner:
        if self._signer is None:
            raise _not_configured()
        return self._signer


class MobileIdCard:
    """The mobile citizen certificate as a card (:class:`~engine.services.enrolment.SigningCard`)
    for the CLI's whole 憑證註冊: no PIN (the phone asks for its own), ``sign`` starts a ticket
    for the person ``id_num``, tells ``on_ticket`` (the QR code's text and the app link go to
    the user) and polls every :data:`POLL_INTERVAL` until the phone answers or the ticket's
    time ends; the certificate comes with the signature, so it is read after signing."""

    def __init__(
        self,
        client: TwFidoClient,
        id_num: str,
        identifiers: IdentifierHasher,
        *,
        sleep: Callable[[float], None],
        on_ticket: Callable[[Ticket], None] = lambda _ticket: None,
    ) -> None:
        self._client = client
        self._id_num = _national_id(id_num)
        self._identifiers = identifiers
        self._sleep = sleep
        self._on_ticket = on_ticket
        self._answer: MobileSignature | None = None
        self._ticket: Ticket | None = None

    def __enter__(self) -> MobileIdCard:
        return self

    def __exit__(self, *exc: object) -> None:
        self._answer = None

    def verify_pin(self, pin: str) -> None:
        """Nothing: the mobile ID app asks for its own PIN or biometrics on the phone."""

    def sign(self, message: bytes) -> bytes:
        ticket = self._ticket = self._client.start(self._id_num, message)
        self._on_ticket(ticket)
        while True:
            answer = self._client.poll(ticket)
            if answer is not None:
                self._answer = answer
                return answer.signature
            self._sleep(POLL_INTERVAL.total_seconds())

    def read_certificate(self) -> bytes:
        if self._answer is None:
            raise RefusedError(ErrorCode.CARD_ERROR, detail="nothing signed yet")
        return self._answer.certificate

    def read_chain(self) -> tuple[bytes, ...]:
        return ()

    @property
    def binding(self) -> MobileIdBinding | None:
        """The binding of the answer (the ID sent, the service's answer), once signed."""
        if self._answer is None or self._ticket is None:
            return None
        return MobileIdBinding(
            self._identifiers.hash("national_id", self._id_num),
            self._id_num[-4:],
            self._answer.hashed_id_num,
            self._ticket.sp_ticket_id,
            self._ticket.transaction_id,
        )


def _not_configured() -> EnvironmentProblem:
    return EnvironmentProblem(
        ErrorCode.MOBILE_ID_UNAVAILABLE, detail="SWREG_TWFIDO_URL is not configured"
    )


def _national_id(value: str) -> str:
    id_num = value.strip().upper()
    if not id_num:
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field="national_id")
    if len(id_num) > MAX_NATIONAL_ID_CHARS or not is_valid_national_id(id_num):
        raise RefusedError(ErrorCode.INVALID_NATIONAL_ID, field="national_id")
    return id_num
