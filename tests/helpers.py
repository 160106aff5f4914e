"""Test helpers: an in-process card over an :class:`IssuedCard` and one-call registration.

``KeyCard`` is a fake at a seam we own (the ``SigningCard`` protocol); the real card path
(``readers.virtual`` from a PKCS#12 file) is exercised by the CLI tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from engine import App, CardError, CardResponse, RegistrationView, register_with_card
from engine.store import Account, AuditEntry, Certificate, Registration
from engine.testing.pki import IssuedCard

PIN = "246810"


class KeyCard:
    """A card made of an issued certificate and its key; the PIN is checked like a card would."""

    def __init__(self, card: IssuedCard, pin: str = PIN) -> None:
        self._card = card
        self._pin = pin
        self._verified = False

    def verify_pin(self, pin: str) -> None:
        if pin != self._pin:
            raise CardError("pin_incorrect", tries_left=2)
        self._verified = True

    def read_certificate(self) -> bytes:
        return self._card.der()

    def read_chain(self) -> tuple[bytes, ...]:
        return self._card.chain_der()

    def sign(self, message: bytes) -> bytes:
        assert self._verified
        return self._card.sign(message)


def enrol(
    app: App, type_code: str, card: IssuedCard, answers: Mapping[str, Any]
) -> RegistrationView:
    return register_with_card(
        app.registrations, type_code=type_code, answers=answers, card=KeyCard(card), pin=PIN
    )


def to_card_check(app: App, type_code: str, **start: Any) -> RegistrationView:
    return app.registrations.start(type_code, consent=True, **start)


def card_response(
    app: App, view: RegistrationView, card: IssuedCard, **override: Any
) -> CardResponse:
    challenge = app.registrations.issue_challenge(view.id)
    fields = {
        "challenge_id": challenge.id,
        "certificate": card.der(),
        "signature": card.sign(challenge.payload),
        "chain": card.chain_der(),
    }
    fields.update(override)
    return CardResponse(**fields)


def count(app: App, model: type[Any]) -> int:
    with app.database.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def rows(app: App, model: type[Any]) -> list[Any]:
    """Every row of ``model`` in id order, detached with all columns loaded."""
    with app.database.unit_of_work() as uow:
        found = list(uow.session.scalars(select(model).order_by(model.id)))
        uow.session.expunge_all()
        return found


def accounts(app: App) -> list[Account]:
    return rows(app, Account)


def certificates(app: App) -> list[Certificate]:
    return rows(app, Certificate)


def audit_events(app: App, registration_id: str) -> list[tuple[str, str | None, str | None]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.registration_id == registration_id)
            .order_by(AuditEntry.seq)
        )
        return [(r.event, r.from_state, r.to_state) for r in rows]


def registration_row(app: App, registration_id: str) -> Registration:
    """The stored registration, detached from its session."""
    with app.database.unit_of_work() as uow:
        row = uow.session.get(Registration, registration_id)
        assert row is not None
        uow.session.expunge(row)
        return row
