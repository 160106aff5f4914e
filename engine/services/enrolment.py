"""One whole 憑證註冊 with a card, as the CLI and the demo run it; a card's answer to a challenge.

The card is anything with the four methods of :class:`SigningCard` (``readers`` provides them);
the PIN goes to the card and nowhere else. A refusal cancels the registration (audited) and
re-raises, so nothing is left half-done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, Protocol

from engine._errors import SwregError
from engine.core.workflow import ENDINGS
from engine.pki.card_response import CardResponse, Challenge
from engine.services.mobile_id import MobileIdCard
from engine.services.registration import RegistrationService, RegistrationView


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
    card: SigningCard,
    pin: str,
    actor: str = "cli",
    on_step: StepCallback | None = None,
) -> RegistrationView:
    """Start, pass the card check with ``card`` and fill every form step from ``answers``."""
    notify = on_step or (lambda _view: None)
    view = service.start(
        type_code, consent=answers.get("consent") is True, iot=bool(answers.get("iot")), actor=actor
    )
    notify(view)
    try:
        challenge = service.issue_challenge(view.id, actor=actor)
        response = answer_challenge(card, challenge, pin)
        mobile = card.binding if isinstance(card, MobileIdCard) else None
        view = service.submit_card(view.id, response, actor=actor, mobile=mobile)
        notify(view)
        while view.state not in ENDINGS and view.awaiting is None:  # an officer's turn
            view = service.submit(view.id, answers, actor=actor)
            notify(view)
    except SwregError:
        _cancel_quietly(service, view.id, actor)
        raise
    return view


def answer_challenge(card: SigningCard, challenge: Challenge, pin: str) -> CardResponse:
    """The card's answer to ``challenge``: the PIN to the card, its signature over the
    challenge's payload, then its certificate and its chain."""
    card.verify_pin(pin)
    signature = card.sign(challenge.payload)  # first: a mobile ID's certificate comes with it
    return CardResponse(
        challenge_id=challenge.id,
        certificate=card.read_certificate(),
        signature=signature,
        chain=card.read_chain(),
    )


def _cancel_quietly(service: RegistrationService, registration_id: str, actor: str) -> None:
    with suppress(SwregError):  # already ended (expired): nothing to undo
        service.cancel(registration_id, actor=actor)
