"""The JSON API under ``/api``: the same services as the CLI and the wizard, nothing more.

The services block (the database, argon2id), so every endpoint hands its blocking work to the
thread pool in **one** trip (:func:`blocking`, or :func:`limited` for the client's rate-limit hit
and the service call together) and does the rest (reading the body, building the view) on the
event loop. FastAPI would make three trips for a plain ``def`` endpoint with a plain ``def``
dependency (the dependency, the endpoint, the response model's validation), each a thread
handoff and two wake-ups of the event loop. Errors are raised as :class:`engine.SwregError`
and rendered by the portal's one error mapping (``{"errors": [{field, code, message, detail?}]}``).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, Field

from engine._errors import ErrorCode, Language, RefusedError
from engine.pki.card_response import CardResponse, Challenge
from engine.services.login import LoginResult
from engine.services.registration import RegistrationView
from engine.web._api_officer import add_officer_routes
from engine.web._i18n import Translator, language_of
from engine.web._portal import (
    ACTIVATE_LIMIT,
    CHECK_LIMIT,
    LOGIN_LIMIT,
    START_LIMIT,
    STEP_LIMIT,
    Portal,
)
from engine.web._registration_secret import registration_secret, set_registration_cookie
from engine.web._security import (
    clear_session_cookie,
    csrf_token,
    set_session_cookie,
)
from engine.web._shared import (
    PortalDep,
    actor,
    card_session,
    decode_base64,
    limited,
    off_loop,
    session_token,
    where_from,
)

# -- bodies and views ----------------------------------------------------------------------


class ErrorItem(BaseModel):
    field: str | None
    code: str
    message: str


class ErrorsOut(BaseModel):
    """Every error response: one item per problem (several for a form)."""

    errors: list[ErrorItem]


class StartIn(BaseModel):
    """Step 1 (申請類別): the applicant type code, consent and the IoT request."""

    type: str = Field(max_length=100, examples=["person.general"])
    consent: bool = False
    iot: bool = False


class RegistrationOut(BaseModel):
    """A registration as its applicant may see it (no hashes, no certificate bytes); once it
    has ended, only ``id``, ``state``, the types and the masked ``account``: ``data``,
    ``locked`` and ``identity`` are empty."""

    id: str
    state: str
    applicant_type: str
    chosen_type: str
    path: list[str]
    step_number: int
    data: dict[str, Any]
    locked: list[str]
    account: str | None
    expires_at: datetime
    identity: dict[str, str]

    @classmethod
    def of(cls, view: RegistrationView) -> RegistrationOut:
        return cls(
            id=view.id,
            state=view.state,
            applicant_type=view.applicant_type,
            chosen_type=view.chosen_type,
            path=list(view.path),
            step_number=view.step_number,
            data=dict(view.data),
            locked=list(view.locked),
            account=view.account,
            expires_at=view.expires_at,
            identity=dict(view.identity),
        )


class ChallengeOut(BaseModel):
    """A challenge; the card signs ``payload`` (base64), which is
    SHA-256(origin) ‖ SHA-256(registration id) ‖ SHA-256(nonce)."""

    challenge_id: str
    nonce: str
    origin: str
    payload: str
    expires_at: datetime

    @classmethod
    def of(cls, challenge: Challenge) -> ChallengeOut:
        return cls(
            challenge_id=challenge.id,
            nonce=challenge.nonce,
            origin=challenge.origin,
            payload=base64.b64encode(challenge.payload).decode("ascii"),
            expires_at=challenge.expires_at,
        )


class CardIn(BaseModel):
    """The card's answer to a challenge, all binary values in standard base64."""

    challenge_id: str = Field(max_length=64)
    certificate: str = Field(max_length=16384)
    signature: str = Field(max_length=4096)
    chain: list[str] = Field(default_factory=list, max_length=8)

    def response(self) -> CardResponse:
        return CardResponse(
            challenge_id=self.challenge_id,
            certificate=decode_base64(
                self.certificate, "certificate", ErrorCode.CERTIFICATE_MALFORMED
            ),
            signature=decode_base64(self.signature, "signature", ErrorCode.SIGNATURE_INVALID),
            chain=tuple(
                decode_base64(c, "chain", ErrorCode.CERTIFICATE_MALFORMED) for c in self.chain
            ),
        )


class AccountCheckOut(BaseModel):
    available: bool
    message: str


class LoginOut(BaseModel):
    """A session: ``expires_at`` is its absolute end (its start + ``SWREG_SESSION_MAX``),
    ``idle_expires_at`` when it ends unless used again (``SWREG_SESSION_IDLE``)."""

    account: str
    applicant_type: str
    expires_at: datetime
    idle_expires_at: datetime


class LogoutAllOut(BaseModel):
    """Log out everywhere: how many sessions of the account ended (the caller's included)."""

    ok: bool = True
    sessions_ended: int


class ActivateIn(BaseModel):
    token: str = Field(max_length=256)


class ActivateOut(BaseModel):
    account: str


class CsrfOut(BaseModel):
    token: str


class OkOut(BaseModel):
    ok: bool = True


# -- dependencies --------------------------------------------------------------------------


async def language(request: Request) -> Language:
    return language_of(request)


LanguageDep = Annotated[Language, Depends(language)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorsOut} for status in (403, 404, 409, 413, 422, 429, 503)
}

router = APIRouter(prefix="/api", responses=_ERRORS)

# -- routes --------------------------------------------------------------------------------
# The registration routes come first: the router tries its routes in order.


@router.get("/csrf", tags=["security"])
async def get_csrf(request: Request) -> CsrfOut:
    """The CSRF token (also in the HttpOnly CSRF cookie: ``__Host-csrf`` over https, ``csrf``
    over plain http); send it as ``X-CSRF-Token``."""
    return CsrfOut(token=csrf_token(request))


@router.post("/registrations", status_code=201, tags=["registration"])
async def start_registration(
    request: Request, response: Response, body: StartIn, portal: PortalDep
) -> RegistrationOut:
    """Step 1 (申請類別): choose the type and accept the data-use statement.

    Sets the registration's cookie (``swreg_reg_<id>``, HttpOnly): every later call about this
    registration must carry it, or is answered like one about an unknown id (404)."""
    view = await limited(
        portal,
        START_LIMIT,
        request,
        portal.registrations.start,
        body.type,
        consent=body.consent,
        iot=body.iot,
        actor=actor(request, "api"),
        origin=portal.origin,
    )
    if view.secret is not None:
        set_registration_cookie(response, view.id, view.secret, portal.settings)
    return RegistrationOut.of(view)


@router.get("/registrations/{registration_id}", tags=["registration"])
async def get_registration(
    registration_id: str, request: Request, portal: PortalDep
) -> RegistrationOut:
    view = await off_loop(
        portal.registrations.status,
        registration_id,
        actor=actor(request, "api"),
        secret=registration_secret(request, registration_id),
    )
    return RegistrationOut.of(view)


@router.post("/registrations/{registration_id}/challenge", tags=["registration"])
async def registration_challenge(
    registration_id: str, request: Request, portal: PortalDep
) -> ChallengeOut:
    """Step 2 (憑證檢查): a fresh single-use challenge for the card to sign."""
    challenge = await limited(
        portal,
        STEP_LIMIT,
        request,
        portal.registrations.issue_challenge,
        registration_id,
        actor=actor(request, "api"),
        secret=registration_secret(request, registration_id),
    )
    return ChallengeOut.of(challenge)


@router.post("/registrations/{registration_id}/card", tags=["registration"])
async def registration_card(
    registration_id: str, body: CardIn, request: Request, portal: PortalDep
) -> RegistrationOut:
    """Step 2 (憑證檢查): the card's certificate, chain and signature over the challenge."""

    def submit() -> RegistrationView:  # the base64 is read after the hit: a bad one counts
        return portal.registrations.submit_card(
            registration_id,
            body.response(),
            actor=actor(request, "api"),
            secret=registration_secret(request, registration_id),
        )

    return RegistrationOut.of(await limited(portal, STEP_LIMIT, request, submit))


@router.post("/registrations/{registration_id}/step", tags=["registration"])
async def registration_step(
    registration_id: str,
    request: Request,
    portal: PortalDep,
    answers: Annotated[dict[str, Any], Body(examples=[{"email": "ming@example.com"}])],
) -> RegistrationOut:
    """Steps 3, 4 and plugin steps: the current step's form, keys of the field vocabulary."""
    view = await limited(
        portal,
        STEP_LIMIT,
        request,
        portal.registrations.submit,
        registration_id,
        answers,
        actor=actor(request, "api"),
        secret=registration_secret(request, registration_id),
    )
    return RegistrationOut.of(view)


@router.post("/registrations/{registration_id}/back", tags=["registration"])
async def registration_back(
    registration_id: str, request: Request, portal: PortalDep
) -> RegistrationOut:
    """上一步: what was typed is kept; going back past the card check needs a new check."""
    view = await off_loop(
        portal.registrations.back,
        registration_id,
        actor=actor(request, "api"),
        secret=registration_secret(request, registration_id),
    )
    return RegistrationOut.of(view)


@router.post("/registrations/{registration_id}/cancel", tags=["registration"])
async def registration_cancel(
    registration_id: str, request: Request, portal: PortalDep
) -> RegistrationOut:
    """取消."""
    view = await off_loop(
        portal.registrations.cancel,
        registration_id,
        actor=actor(request, "api"),
        secret=registration_secret(request, registration_id),
    )
    return RegistrationOut.of(view)


@router.get("/accounts/check", tags=["registration"])
async def check_account(
    request: Request, portal: PortalDep, lang: LanguageDep, name: str = ""
) -> AccountCheckOut:
    """檢核是否存在: 「此帳號可使用」, or 409 ``account_exists`` (「用戶姓名已存在」)."""
    await limited(portal, CHECK_LIMIT, request, _check_account, portal, name)
    return AccountCheckOut(available=True, message=Translator(lang)("account_available"))


def _check_account(portal: Portal, name: str) -> None:
    if not name.strip():
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field="name")
    if len(name) > 256:
        raise RefusedError(ErrorCode.FIELD_TOO_LONG, field="name")
    if not portal.registrations.check_account(name):
        raise RefusedError(ErrorCode.ACCOUNT_EXISTS, field="name")


@router.post("/login/challenge", tags=["login"])
async def login_challenge(request: Request, portal: PortalDep) -> ChallengeOut:
    """憑證登入: a single-use challenge for the card to sign."""
    challenge = await limited(
        portal, LOGIN_LIMIT, request, portal.logins.issue_challenge, origin=portal.origin
    )
    return ChallengeOut.of(challenge)


@router.post("/login", tags=["login"])
async def login(body: CardIn, request: Request, response: Response, portal: PortalDep) -> LoginOut:
    """憑證登入 with a registered, activated card; sets the ``swreg_session`` cookie."""

    def log_in() -> LoginResult:  # the base64 is read after the hit: a bad one counts
        return portal.logins.login(
            body.response(),
            origin=portal.origin,
            actor=actor(request, "api"),
            client=where_from(request, "API"),
        )

    result = await limited(portal, LOGIN_LIMIT, request, log_in)
    set_session_cookie(response, result.token, portal.settings)
    return LoginOut(
        account=result.account,
        applicant_type=result.applicant_type,
        expires_at=result.expires_at,
        idle_expires_at=result.idle_expires_at,
    )


@router.post("/logout", tags=["login"])
async def logout(request: Request, response: Response, portal: PortalDep) -> OkOut:
    token = session_token(request)
    if token:
        await off_loop(portal.logins.logout, token, actor=actor(request, "api"))
    clear_session_cookie(response, portal.settings)
    return OkOut()


@router.get("/session", tags=["login"])
async def get_session(request: Request, portal: PortalDep) -> LoginOut:
    """The logged-in account and both ends of its session; 403 ``not_authorized`` without a
    session cookie, 401 ``session_expired`` when the cookie's session has ended (idle or
    absolute limit, logout elsewhere, a reset or a card replacement)."""
    session = await off_loop(card_session, portal, request)
    if session is None:
        stale = bool(session_token(request))
        raise RefusedError(ErrorCode.SESSION_EXPIRED if stale else ErrorCode.NOT_AUTHORIZED)
    return LoginOut(
        account=session.account,
        applicant_type=session.applicant_type,
        expires_at=session.expires_at,
        idle_expires_at=session.idle_expires_at,
    )


@router.post("/sessions/logout-all", tags=["login"])
async def logout_all(request: Request, response: Response, portal: PortalDep) -> LogoutAllOut:
    """Log out everywhere: end every session of the account, this one included, and clear
    the cookie; without a live session 403 ``not_authorized``."""
    token = session_token(request)
    ended = await off_loop(portal.logins.logout_all, token, actor=actor(request, "api"))
    clear_session_cookie(response, portal.settings)
    return LogoutAllOut(sessions_ended=ended)


@router.post("/activate", tags=["login"])
async def activate(body: ActivateIn, request: Request, portal: PortalDep) -> ActivateOut:
    """帳號啟用 with the token of the activation e-mail."""
    account = await limited(
        portal,
        ACTIVATE_LIMIT,
        request,
        portal.accounts.activate,
        body.token,
        actor=actor(request, "api"),
    )
    return ActivateOut(account=account)


add_officer_routes(router)  # /api/officer/...: a bearer token instead of CSRF (_api_officer)
