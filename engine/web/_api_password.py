"""The JSON API of 忘記密碼 (under /api); errors go through the portal's one error mapping.

::

    POST /api/password-reset/challenge  a single-use challenge for a card of the account to sign
    POST /api/password-reset            {account, password, password_confirm, challenge_id,
                                         certificate, signature, chain}
    POST /api/password-reset/email      {account}: a reset link to the account's address (only
                                         with ``SWREG_PASSWORD_RESET=card,email``; 202 whether or
                                         not the account exists)
    POST /api/password-reset/link       {token, password, password_confirm}: the link's token

Both are POSTs and need the CSRF token like every other (``X-CSRF-Token``); both count against a
per-client rate limit, and the service counts each reset against the account's own limit once the
card has proven it is the account's. Any card not bound to the named account (or an unknown
account) is 403 ``not_authorized`` and changes nothing. A reset ends every session of the account,
the caller's included; the new password is never echoed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from engine.services.password_reset import PasswordReset
from engine.web._api import CardIn, ChallengeOut, ErrorsOut, OkOut
from engine.web._portal import PASSWORD_RESET_LIMIT
from engine.web._shared import PortalDep, actor, limited

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorsOut} for status in (403, 409, 413, 422, 429, 503)
}

router = APIRouter(prefix="/api", responses=_ERRORS)


class NewPasswordIn(BaseModel):
    """The account a reset is for and its new password (twice)."""

    account: str = Field(max_length=256)
    password: str = Field(max_length=256)
    password_confirm: str = Field(max_length=256)

    def answers(self) -> dict[str, str]:
        """The new password as the service's form reads it."""
        return {"password": self.password, "password_confirm": self.password_confirm}


class PasswordResetIn(CardIn, NewPasswordIn):
    """The card's answer to a reset challenge, the account it is for and the new password."""


class ResetLinkIn(BaseModel):
    account: str = Field(max_length=256)


class ResetWithLinkIn(BaseModel):
    token: str = Field(max_length=512)
    password: str = Field(max_length=256)
    password_confirm: str = Field(max_length=256)


class PasswordResetOut(BaseModel):
    """A done reset: the account and how many of its sessions ended."""

    account: str
    sessions_ended: int
    unlocked: bool
    notice_sent: bool

    @classmethod
    def of(cls, done: PasswordReset) -> PasswordResetOut:
        return cls(
            account=done.account,
            sessions_ended=done.sessions_ended,
            unlocked=done.unlocked,
            notice_sent=done.notice_sent,
        )


@router.post("/password-reset/challenge", tags=["password-reset"])
async def password_reset_challenge(request: Request, portal: PortalDep) -> ChallengeOut:
    """忘記密碼: a single-use challenge for the card (its payload names ``password_reset``)."""
    challenge = await limited(
        portal,
        PASSWORD_RESET_LIMIT,
        request,
        portal.password_resets.issue_challenge,
        origin=portal.origin,
    )
    return ChallengeOut.of(challenge)


@router.post("/password-reset", tags=["password-reset"])
async def password_reset(
    body: PasswordResetIn, request: Request, portal: PortalDep
) -> PasswordResetOut:
    """Set the account's new password once its card signed the challenge."""

    def reset() -> PasswordReset:
        return portal.password_resets.reset(
            body.response(),
            origin=portal.origin,
            account=body.account,
            answers=body.answers(),
            actor=actor(request, "api"),
        )

    return PasswordResetOut.of(await limited(portal, PASSWORD_RESET_LIMIT, request, reset))


@router.post("/password-reset/email", status_code=202, tags=["password-reset"])
async def password_reset_email(body: ResetLinkIn, request: Request, portal: PortalDep) -> OkOut:
    """Mail a reset link to the account's address if the account exists and may reset; the
    answer is the same either way."""
    await limited(
        portal,
        PASSWORD_RESET_LIMIT,
        request,
        portal.password_resets.request_link,
        body.account,
        actor=actor(request, "api"),
    )
    return OkOut()


@router.post("/password-reset/link", tags=["password-reset"])
async def password_reset_link(
    body: ResetWithLinkIn, request: Request, portal: PortalDep
) -> PasswordResetOut:
    """Set the new password with the token of a mailed reset link."""

    def reset() -> PasswordReset:
        return portal.password_resets.reset_with_link(
            body.token,
            answers={"password": body.password, "password_confirm": body.password_confirm},
            actor=actor(request, "api"),
        )

    return PasswordResetOut.of(await limited(portal, PASSWORD_RESET_LIMIT, request, reset))
