"""The JSON API of the account's own page (under /api, DESIGN.md §6); a card-login session
(the ``swreg_session`` cookie) is the caller, and every POST needs the CSRF token.

::

    GET  /api/account                 the account (masked e-mail), its login certificates and
                                      its live sessions (the caller's marked ``current``)
    POST /api/account/password        {current_password, password, password_confirm}
    POST /api/account/email           {email, current_password}: a confirmation link to the new
                                      address
    POST /api/account/email/confirm   {token}: the link's token (no session needed: the link
                                      is the proof, and it may be opened on another device)

Without a live session the first three answer 401 ``session_expired``. Wrong current passwords
count toward the account's lock (DESIGN.md §6); the new password is never echoed.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from engine._errors import ErrorCode, RefusedError
from engine.core.identifiers import mask_email
from engine.services.account_settings import EmailChange, PasswordChange
from engine.web._api import ErrorsOut
from engine.web._portal import ACCOUNT_LIMIT, ACTIVATE_LIMIT
from engine.web._security import set_session_cookie
from engine.web._shared import PortalDep, actor, limited, session_token, where_from

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorsOut} for status in (401, 403, 409, 413, 422, 429, 503)
}

router = APIRouter(prefix="/api", responses=_ERRORS)


class CertificateOut(BaseModel):
    fingerprint: str
    ca: str
    role: str
    not_after: datetime
    status: str


class SessionOut(BaseModel):
    ref: str
    created_at: datetime
    last_seen_at: datetime
    client: str | None
    current: bool


class AccountOut(BaseModel):
    """The account as its owner sees it: personal values masked, no password hash."""

    account: str
    state: str
    type: str
    email: str
    certificates: list[CertificateOut]
    password_changed_at: datetime | None
    sessions: list[SessionOut]


class PasswordChangeIn(BaseModel):
    current_password: str = Field(max_length=256)
    password: str = Field(max_length=256)
    password_confirm: str = Field(max_length=256)


class PasswordChangeOut(BaseModel):
    account: str
    sessions_ended: int


class EmailChangeIn(BaseModel):
    email: str = Field(max_length=320)
    current_password: str = Field(max_length=256)


class EmailChangeOut(BaseModel):
    """Asked for: the link went to the new address, which is returned masked."""

    account: str
    email: str
    expires_at: datetime


class EmailConfirmIn(BaseModel):
    token: str = Field(max_length=512)


class EmailConfirmOut(BaseModel):
    account: str


def _token(request: Request) -> str:
    token = session_token(request)
    if not token:
        raise RefusedError(ErrorCode.SESSION_EXPIRED)
    return token


@router.get("/account", tags=["account"])
async def get_account(request: Request, portal: PortalDep) -> AccountOut:
    """The logged-in account, its login certificates and its live sessions."""
    found = await limited(
        portal, ACCOUNT_LIMIT, request, portal.account_settings.overview, _token(request)
    )
    summary = found.summary
    return AccountOut(
        account=summary.account,
        state=summary.state,
        type=summary.type,
        email=summary.email,
        certificates=[CertificateOut(**asdict(c)) for c in summary.certificates],
        password_changed_at=summary.password_changed_at,
        sessions=[SessionOut(**asdict(s)) for s in found.sessions],
    )


@router.post("/account/password", tags=["account"])
async def change_password(
    body: PasswordChangeIn, request: Request, response: Response, portal: PortalDep
) -> PasswordChangeOut:
    """Change the password with the current one; every session of the account ends and the
    caller gets a new ``swreg_session`` cookie."""

    def change() -> PasswordChange:
        return portal.account_settings.change_password(
            _token(request),
            current=body.current_password,
            answers={"password": body.password, "password_confirm": body.password_confirm},
            actor=actor(request, "api"),
            client=where_from(request, "API"),
        )

    done = await limited(portal, ACCOUNT_LIMIT, request, change)
    set_session_cookie(response, done.token, portal.settings)
    return PasswordChangeOut(account=done.account, sessions_ended=done.sessions_ended)


@router.post("/account/email", tags=["account"])
async def change_email(body: EmailChangeIn, request: Request, portal: PortalDep) -> EmailChangeOut:
    """Ask for a new e-mail address: a confirmation link goes to it, a notice to the old one."""

    def ask() -> EmailChange:
        return portal.account_settings.request_email_change(
            _token(request),
            new_email=body.email,
            current=body.current_password,
            actor=actor(request, "api"),
        )

    asked = await limited(portal, ACCOUNT_LIMIT, request, ask)
    return EmailChangeOut(
        account=asked.account, email=mask_email(asked.new_email), expires_at=asked.expires_at
    )


@router.post("/account/email/confirm", tags=["account"])
async def confirm_email(
    body: EmailConfirmIn, request: Request, portal: PortalDep
) -> EmailConfirmOut:
    """Confirm a new e-mail address with the token of the link mailed to it."""
    account = await limited(
        portal,
        ACTIVATE_LIMIT,
        request,
        portal.account_settings.confirm_email_change,
        body.token,
        actor=actor(request, "api"),
    )
    return EmailConfirmOut(account=account)
