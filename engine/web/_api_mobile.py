"""The JSON API of 行動自然人憑證 (TW FidO, DESIGN.md §13): the card step, 憑證登入 and 忘記密碼
with the phone instead of a card. Errors go through the portal's one error mapping.

::

    POST /api/registrations/{id}/mobile-id        {national_id, push}
    POST /api/login/mobile-id                     {national_id, push}
    POST /api/password-reset/mobile-id            {account, national_id, push}
        → {pending_id, qr, app_link, expires_at, poll_after}: the QR code (an SVG data URI
          rendered here, no outside service) and the app-to-app link of the ticket, none for a
          push to the person's bound device
    POST /api/registrations/{id}/mobile-id/poll   {pending_id}
    POST /api/login/mobile-id/poll                {pending_id}
    POST /api/password-reset/mobile-id/poll       {pending_id, account, password, password_confirm}
        → {status: "pending", poll_after} | {status: "done", registration | login | reset}

The pending id is the browser's bearer of the signing (for a login it becomes a session): it
travels in bodies only, never in a URL that access logs keep. A begin asks MOI's service and a
phone, so it counts against a per-client limit (:data:`MOBILE_ID_LIMIT`, every flow together;
the service adds a per-person one); a poll asks MOI at most once per 4 s whatever the client
does, so it is not counted. The browser polls the portal, never MOI. ``push`` is refused
(``invalid_value``) unless ``SWREG_TWFIDO_PUSH`` allows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import segno
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from engine.services.login import LoginResult
from engine.services.mobile_id import PendingMobileId
from engine.services.password_reset import PasswordReset
from engine.services.registration import RegistrationView
from engine.services.twfido import POLL_INTERVAL
from engine.web._api import ErrorsOut, LoginOut, RegistrationOut
from engine.web._api_password import NewPasswordIn, PasswordResetOut
from engine.web._portal import MOBILE_ID_LIMIT
from engine.web._registration_secret import registration_secret
from engine.web._security import set_session_cookie
from engine.web._shared import PortalDep, actor, limited, off_loop, where_from

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorsOut} for status in (403, 404, 409, 413, 422, 429, 503)
}
_POLL_AFTER = int(POLL_INTERVAL.total_seconds())

router = APIRouter(prefix="/api", responses=_ERRORS, tags=["mobile-id"])


# -- bodies and views ----------------------------------------------------------------------


class MobileIdIn(BaseModel):
    national_id: str = Field(max_length=16)
    push: bool = False
    """Send the signing to the person's bound device instead of showing a QR code."""


class ResetMobileIdIn(MobileIdIn):
    account: str = Field(max_length=256)


class PollIn(BaseModel):
    pending_id: str = Field(max_length=64)


class ResetPollIn(PollIn, NewPasswordIn):
    """A 忘記密碼 poll carries the account and the new password: both are checked each time."""


class MobileIdOut(BaseModel):
    """A signing the phone has not answered yet. ``qr`` (an SVG data URI) and ``app_link`` are
    null for a push; poll no sooner than ``poll_after`` seconds."""

    pending_id: str
    qr: str | None
    app_link: str | None
    expires_at: datetime
    poll_after: int = _POLL_AFTER

    @classmethod
    def of(cls, pending: PendingMobileId) -> MobileIdOut:
        qr = None
        if pending.sp_ticket is not None:
            qr = segno.make(pending.sp_ticket, error="m").svg_data_uri(scale=4, border=2)
        return cls(
            pending_id=pending.pending_id,
            qr=qr,
            app_link=pending.app_link,
            expires_at=pending.expires_at,
        )


class PollOut(BaseModel):
    """``pending`` (poll again after ``poll_after`` seconds) or ``done`` with the flow's
    result; a final refusal is an error answer instead, and the pending id is then spent."""

    status: Literal["pending", "done"]
    poll_after: int | None = None
    registration: RegistrationOut | None = None
    login: LoginOut | None = None
    reset: PasswordResetOut | None = None


_PENDING = PollOut(status="pending", poll_after=_POLL_AFTER)


# -- 憑證檢查 --------------------------------------------------------------------------------


@router.post("/registrations/{registration_id}/mobile-id")
async def registration_mobile_id(
    registration_id: str, body: MobileIdIn, request: Request, portal: PortalDep
) -> MobileIdOut:
    """Step 2 (憑證檢查) with the mobile ID: a ticket for the person's phone."""
    pending = await limited(
        portal,
        MOBILE_ID_LIMIT,
        request,
        portal.registrations.begin_mobile_id,
        registration_id,
        body.national_id,
        push=body.push,
        actor=actor(request, "api"),
        secret=registration_secret(request, registration_id),
    )
    return MobileIdOut.of(pending)


@router.post("/registrations/{registration_id}/mobile-id/poll")
async def registration_mobile_id_poll(
    registration_id: str, body: PollIn, request: Request, portal: PortalDep
) -> PollOut:
    """The phone's answer: the card check done (on to 基本資料), or still pending."""
    view: RegistrationView | None = await off_loop(
        portal.registrations.collect_mobile_id,
        registration_id,
        body.pending_id,
        actor=actor(request, "api"),
        secret=registration_secret(request, registration_id),
    )
    if view is None:
        return _PENDING
    return PollOut(status="done", registration=RegistrationOut.of(view))


# -- 憑證登入 --------------------------------------------------------------------------------


@router.post("/login/mobile-id")
async def login_mobile_id(body: MobileIdIn, request: Request, portal: PortalDep) -> MobileIdOut:
    """憑證登入 with the mobile ID: a ticket for the person's phone."""
    pending = await limited(
        portal,
        MOBILE_ID_LIMIT,
        request,
        portal.logins.begin_mobile_id,
        body.national_id,
        origin=portal.origin,
        push=body.push,
    )
    return MobileIdOut.of(pending)


@router.post("/login/mobile-id/poll")
async def login_mobile_id_poll(
    body: PollIn, request: Request, response: Response, portal: PortalDep
) -> PollOut:
    """The phone's answer: logged in (the session cookie is set), or still pending."""
    result: LoginResult | None = await off_loop(
        portal.logins.collect_mobile_id,
        body.pending_id,
        origin=portal.origin,
        actor=actor(request, "api"),
        client=where_from(request, "API"),
    )
    if result is None:
        return _PENDING
    set_session_cookie(response, result.token, portal.settings)
    return PollOut(
        status="done",
        login=LoginOut(
            account=result.account,
            applicant_type=result.applicant_type,
            expires_at=result.expires_at,
            idle_expires_at=result.idle_expires_at,
        ),
    )


# -- 忘記密碼 --------------------------------------------------------------------------------


@router.post("/password-reset/mobile-id")
async def password_reset_mobile_id(
    body: ResetMobileIdIn, request: Request, portal: PortalDep
) -> MobileIdOut:
    """忘記密碼 with the mobile ID: a ticket for the person's phone (whether the account is
    theirs is told once the phone has signed)."""
    pending = await limited(
        portal,
        MOBILE_ID_LIMIT,
        request,
        portal.password_resets.begin_mobile_id,
        body.account,
        body.national_id,
        origin=portal.origin,
        push=body.push,
    )
    return MobileIdOut.of(pending)


@router.post("/password-reset/mobile-id/poll")
async def password_reset_mobile_id_poll(
    body: ResetPollIn, request: Request, portal: PortalDep
) -> PollOut:
    """The phone's answer: the new password set, or still pending (the password is checked
    on every poll, before MOI is asked)."""
    done: PasswordReset | None = await off_loop(
        portal.password_resets.collect_mobile_id,
        body.pending_id,
        origin=portal.origin,
        account=body.account,
        answers=body.answers(),
        actor=actor(request, "api"),
    )
    if done is None:
        return _PENDING
    return PollOut(status="done", reset=PasswordResetOut.of(done))
