"""The JSON API of 憑證更換作業 (under /api); errors go through the portal's one error mapping.

::

    POST /api/renewal/challenge   a single-use challenge for the NEW card to sign
    POST /api/renewal             {challenge_id, certificate, signature, chain} of the new card,
                                  plus the proof of the old account: the ``swreg_session``
                                  cookie of a login with the old card, or (once the old
                                  certificate has expired) ``account`` + ``password``

Both are POSTs and need the CSRF token like every other (``X-CSRF-Token``); both count against
a per-client rate limit, and the service counts each attempt against the named account's own
limit once the new card has passed (password guessing from many addresses). The service checks
the new card first; after it an unknown account, a wrong password and a still-valid old card
all answer the same 403 ``not_authorized``. A replacement ends every session of the account,
the caller's included (log in again with the new card).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from engine.services.renewal import Replacement
from engine.web._api import CardIn, ChallengeOut, ErrorsOut
from engine.web._portal import RENEWAL_LIMIT
from engine.web._shared import PortalDep, actor, card_session, limited

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorsOut} for status in (403, 409, 413, 422, 429, 503)
}

router = APIRouter(prefix="/api", responses=_ERRORS)


class RenewalIn(CardIn):
    """The new card's answer to a renewal challenge, and (without a session) the password."""

    account: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=256)


class RenewalOut(BaseModel):
    """A done replacement: SHA-256 fingerprints of the old and the new login certificate."""

    account: str
    old_fingerprint: str
    new_fingerprint: str

    @classmethod
    def of(cls, done: Replacement) -> RenewalOut:
        return cls(
            account=done.account,
            old_fingerprint=done.old_fingerprint,
            new_fingerprint=done.new_fingerprint,
        )


@router.post("/renewal/challenge", tags=["renewal"])
async def renewal_challenge(request: Request, portal: PortalDep) -> ChallengeOut:
    """憑證更換作業: a single-use challenge for the new card (its payload names ``renewal``)."""
    challenge = await limited(
        portal, RENEWAL_LIMIT, request, portal.renewals.issue_challenge, origin=portal.origin
    )
    return ChallengeOut.of(challenge)


@router.post("/renewal", tags=["renewal"])
async def renewal(body: RenewalIn, request: Request, portal: PortalDep) -> RenewalOut:
    """Bind the new card to the account proven by the session cookie or by the password."""

    def replace_card() -> Replacement:
        session = card_session(portal, request)
        return portal.renewals.replace_card(
            body.response(),
            origin=portal.origin,
            session=session,
            account=body.account,
            password=body.password,
            actor=actor(request, "api"),
        )

    return RenewalOut.of(await limited(portal, RENEWAL_LIMIT, request, replace_card))
