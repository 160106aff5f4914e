"""The officer API under ``/api/officer``: the queue of registrations waiting for an officer
(待審核), and approve / reject — the same service calls as ``swreg registrations``.

Every route needs ``Authorization: Bearer TOKEN``, an officer's personal token (``swreg
officers token NAME``, DESIGN.md §12), checked by
:meth:`~engine.services.officers.OfficerService.authenticate`: after 20 failed tokens from one
client in a 10-minute window every request of that client is 429 ``rate_limited`` (with
``Retry-After``) until the window ends, a right token included; each failure is 403
``not_authorized`` and logged as ``officer_auth_failed`` with the client's keyed hash, never the
token. The credential is a header, never a cookie, so a browser cannot be made to send it
cross-site: these routes need no CSRF token.

The authenticated officer decides: the audit row's actor is ``officer:NAME``, its diff holds
the officer's ``certificate`` (fingerprint) and ``via`` (``api:client=KEY``, the client's keyed
hash). A name in the body is not read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from engine.core.workflow import NO_DEADLINE
from engine.services.officers import OfficerView
from engine.services.registration import MAX_LISTED, RegistrationView
from engine.web._security import client_address
from engine.web._shared import PortalDep, actor, client_key, off_loop

_bearer = HTTPBearer(
    auto_error=False, description="An officer's personal token (swreg officers token NAME)."
)


async def require_officer(
    request: Request,
    portal: PortalDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> OfficerView:
    """The officer presenting the bearer token: 429 ``rate_limited`` while the client is
    blocked, 403 ``not_authorized`` for a missing or wrong token (counted and logged)."""
    presented = credentials.credentials if credentials is not None else None
    return await off_loop(
        portal.officers.authenticate,
        presented,
        client=client_key(request),
        subject=portal.client_subject(client_address(request)),
    )


OfficerDep = Annotated[OfficerView, Depends(require_officer)]


# -- bodies and views ------------------------------------------------------------------------


class RejectIn(BaseModel):
    """Why the registration is rejected (kept in the audit row). The officer is the one the
    bearer token names."""

    reason: str = Field(max_length=500, examples=["IATA 代碼與登記資料不符"])


class OfficerRegistrationOut(BaseModel):
    """A registration as an officer sees it: the applicant's view plus its status and times.

    ``status`` is 待審核 / Awaiting approval while ``awaiting`` is ``officer``; ``expires_at``
    is null while it waits without a deadline.
    """

    id: str
    state: str
    status: dict[str, str]
    awaiting: str | None
    applicant_type: str
    chosen_type: str
    account: str | None
    path: list[str]
    step_number: int
    data: dict[str, Any]
    identity: dict[str, str]
    updated_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, view: RegistrationView) -> OfficerRegistrationOut:
        return cls(
            id=view.id,
            state=view.state,
            status={"zh-TW": view.status.zh_tw, "en": view.status.en},
            awaiting=view.awaiting,
            applicant_type=view.applicant_type,
            chosen_type=view.chosen_type,
            account=view.account,
            path=list(view.path),
            step_number=view.step_number,
            data=dict(view.data),
            identity=dict(view.identity),
            updated_at=view.updated_at,
            expires_at=None if view.expires_at >= NO_DEADLINE else view.expires_at,
        )


class OfficerListOut(BaseModel):
    registrations: list[OfficerRegistrationOut]


# -- routes ----------------------------------------------------------------------------------


async def list_registrations(
    portal: PortalDep,
    state: Annotated[str | None, Query(max_length=32, examples=["approval"])] = None,
    type_code: Annotated[str | None, Query(alias="type", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
) -> OfficerListOut:
    """Registrations, longest waiting first; ``?state=approval`` is the queue (待審核)."""
    found = await off_loop(
        portal.registrations.find, state=state, applicant_type=type_code, limit=limit
    )
    return OfficerListOut(registrations=[OfficerRegistrationOut.of(v) for v in found])


async def get_registration(
    registration_id: str, portal: PortalDep, officer: OfficerDep
) -> OfficerRegistrationOut:
    view = await off_loop(portal.registrations.status, registration_id, actor=officer.actor)
    return OfficerRegistrationOut.of(view)


async def approve_registration(
    registration_id: str, request: Request, portal: PortalDep, officer: OfficerDep
) -> OfficerRegistrationOut:
    """核准: the registration moves on; entering 註冊完成 creates the account (activation mail).
    Takes no body: the officer is the one the bearer token names."""
    view = await off_loop(
        portal.registrations.approve,
        registration_id,
        officer=officer.name,
        via=actor(request, "api"),
        certificate=officer.fingerprint,
    )
    return OfficerRegistrationOut.of(view)


async def reject_registration(
    registration_id: str, body: RejectIn, request: Request, portal: PortalDep, officer: OfficerDep
) -> OfficerRegistrationOut:
    """駁回: the registration ends in ``rejected``; no account; the reason is audited."""
    view = await off_loop(
        portal.registrations.reject,
        registration_id,
        officer=officer.name,
        reason=body.reason,
        via=actor(request, "api"),
        certificate=officer.fingerprint,
    )
    return OfficerRegistrationOut.of(view)


def add_officer_routes(router: APIRouter) -> None:
    """Add the officer routes to ``router`` (the ``/api`` router) under ``/officer``, each
    behind :func:`require_officer`."""
    common: dict[str, Any] = {"tags": ["officer"], "dependencies": [Depends(require_officer)]}
    one = "/officer/registrations/{registration_id}"
    router.add_api_route("/officer/registrations", list_registrations, methods=["GET"], **common)
    router.add_api_route(one, get_registration, methods=["GET"], **common)
    router.add_api_route(f"{one}/approve", approve_registration, methods=["POST"], **common)
    router.add_api_route(f"{one}/reject", reject_registration, methods=["POST"], **common)


__all__ = ["OfficerDep", "add_officer_routes", "require_officer"]
