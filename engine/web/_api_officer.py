"""The officer API under ``/api/officer``: the queue of registrations waiting for an officer
(待審核), and approve / reject — the same service calls as ``swreg registrations``.

Every route needs ``Authorization: Bearer <SWREG_OFFICER_TOKEN>``, an operator credential from
the settings, compared in constant time; when no token is configured the officer API refuses
every request (``not_authorized``; officers use the CLI). The credential is a header, never a
cookie, so a browser cannot be made to send it cross-site: these routes need no CSRF token.
The officer's name comes with each decision and is the audit row's actor (``officer:NAME``);
the client address is recorded beside it (``via``).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from engine._errors import ErrorCode, RefusedError
from engine._settings import Settings
from engine.core.workflow import NO_DEADLINE
from engine.services.registration import MAX_LISTED, RegistrationView
from engine.web._shared import PortalDep, actor, off_loop

_bearer = HTTPBearer(auto_error=False, description="SWREG_OFFICER_TOKEN")


def officer_token(settings: Settings) -> str | None:
    """The configured officer token (``SWREG_OFFICER_TOKEN``), or None: then nobody gets in."""
    return settings.officer_token or None


async def require_officer(
    portal: PortalDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """403 ``not_authorized`` unless the bearer token is the configured one (``async``: it does
    not block, so FastAPI calls it on the event loop, not in the thread pool)."""
    configured = officer_token(portal.settings)
    presented = credentials.credentials if credentials is not None else None
    if configured is None or presented is None or not _same(presented, configured):
        raise RefusedError(ErrorCode.NOT_AUTHORIZED)


def _same(presented: str, configured: str) -> bool:
    """Constant-time comparison (of digests, so the length leaks nothing either)."""
    return hmac.compare_digest(
        hashlib.sha256(presented.encode("utf-8")).digest(),
        hashlib.sha256(configured.encode("utf-8")).digest(),
    )


# -- bodies and views ------------------------------------------------------------------------


class ApproveIn(BaseModel):
    """Who approves (the audit row's actor is ``officer:NAME``)."""

    officer: str = Field(max_length=100, examples=["林關員"])


class RejectIn(ApproveIn):
    """Who rejects, and why (kept in the audit row)."""

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
    registration_id: str, request: Request, portal: PortalDep
) -> OfficerRegistrationOut:
    view = await off_loop(portal.registrations.status, registration_id, actor=actor(request, "api"))
    return OfficerRegistrationOut.of(view)


async def approve_registration(
    registration_id: str, body: ApproveIn, request: Request, portal: PortalDep
) -> OfficerRegistrationOut:
    """核准: the registration moves on; entering 註冊完成 creates the account (activation mail)."""
    view = await off_loop(
        portal.registrations.approve,
        registration_id,
        officer=body.officer,
        via=actor(request, "api"),
    )
    return OfficerRegistrationOut.of(view)


async def reject_registration(
    registration_id: str, body: RejectIn, request: Request, portal: PortalDep
) -> OfficerRegistrationOut:
    """駁回: the registration ends in ``rejected``; no account; the reason is audited."""
    view = await off_loop(
        portal.registrations.reject,
        registration_id,
        officer=body.officer,
        reason=body.reason,
        via=actor(request, "api"),
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


__all__ = ["add_officer_routes", "officer_token", "require_officer"]
