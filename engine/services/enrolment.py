"""One whole 憑證註冊 with a card, as the CLI and the demo run it; a card's answer to a challenge.

The card is anything with the four methods of :class:`SigningCard` (``readers`` provides them);
the PIN goes to the card and nowhere else. A :class:`~engine.services.mobile_id.Phone` instead
has TW FidO ask the person's phone, through the same service calls as the portal's. A refusal
cancels the registration (audited) and re-raises, so nothing is left half-done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, Protocol

from engine._errors import ErrorCode, RefusedError, SwregError
from engine.core.identifiers import ascii_upper, normalize_text
from engine.core.workflow import ENDINGS
from engine.pki.card_response import CardResponse, Challenge
from engine.services.mobile_id import Phone, national_id_of
from engine.services.registration import RegistrationService, RegistrationView
from engine.services.twfido import POLL_INTERVAL


class SigningCard(Protocol):
    def verify_pin(self, pin: str) -> None: ...
    def read_certificate(self) -> bytes: ...
    def read_chain(self) -> tuple[bytes, ...]: ...
    def sign(self, message: bytes) -> bytes: ...


StepCallback = Callable[[RegistrationView], None]


def register_with_card(
    service: RegistrationService,
    *,
    type_code: str,
    answers: Mapping[str, Any],
    card: SigningCard | Phone,
    pin: str,
    actor: str = "cli",
    on_step: StepCallback | None = None,
) -> RegistrationView:
    """Start, pass the card check with ``card`` (or the person's phone: the mobile citizen
    certificate, as the portal asks it) and fill every form step from ``answers``."""
    notify = on_step or (lambda _view: None)
    if isinstance(card, Phone):
        _check_phone(service, type_code, answers, card)
    view = service.start(
        type_code, consent=answers.get("consent") is True, iot=bool(answers.get("iot")), actor=actor
    )
    notify(view)
    try:
        if isinstance(card, Phone):
            view = _check_with_phone(service, view, card, actor)
        else:
            challenge = service.issue_challenge(view.id, actor=actor)
            view = service.submit_card(view.id, answer_challenge(card, challenge, pin), actor=actor)
        notify(view)
        while view.state not in ENDINGS and view.awaiting is None:  # an officer's turn
            view = service.submit(view.id, answers, actor=actor)
            notify(view)
    except SwregError:
        _cancel_quietly(service, view.id, actor)
        raise
    return view


def _check_phone(
    service: RegistrationService, type_code: str, answers: Mapping[str, Any], phone: Phone
) -> None:
    """Before anything is started or sent: the type takes a mobile certificate, and the ID the
    answers name is the one the phone will be asked for (``identity_mismatch``)."""
    service.check_mobile_id(type_code)
    sent = national_id_of(phone.national_id)
    if ascii_upper(normalize_text(str(answers.get("national_id") or ""))) != sent:
        raise RefusedError(ErrorCode.IDENTITY_MISMATCH, field="national_id")


def _check_with_phone(
    service: RegistrationService, view: RegistrationView, phone: Phone, actor: str
) -> RegistrationView:
    """The card check through TW FidO: begin, show the ticket, poll until the phone answers."""
    pending = service.begin_mobile_id(view.id, phone.national_id, actor=actor)
    phone.on_ticket(pending)
    while True:
        phone.sleep(POLL_INTERVAL.total_seconds())
        checked = service.collect_mobile_id(view.id, pending.pending_id, actor=actor)
        if checked is not None:
            return checked


def answer_challenge(card: SigningCard, challenge: Challenge, pin: str) -> CardResponse:
    """The card's answer to ``challenge``: the PIN to the card, its signature over the
    challenge's payload, then its certificate and its chain."""
    card.verify_pin(pin)
    signature = card.sign(challenge.payload)
    return CardResponse(
        challenge_id=challenge.id,
        certificate=card.read_certificate(),
        signature=signature,
        chain=card.read_chain(),
    )


def _cancel_quietly(service: RegistrationService, registration_id: str, actor: str) -> None:
    with suppress(SwregError):  # already ended (expired): nothing to undo
        service.cancel(registration_id, actor=actor)
