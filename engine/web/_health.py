"""The probes (DESIGN.md §11): ``GET /healthz`` (the process answers) and ``GET /readyz``.

Both are answered whatever the ``Host`` (:data:`~engine.web._security.HOST_CHECK_EXEMPT`: a
load balancer reaches a worker by its address) and, being GETs, need no CSRF token. ``/healthz``
touches nothing; ``/readyz`` asks :class:`~engine.services.health.HealthService` (cached 5 s per
process) and answers 200 when ready, 503 otherwise, with the same body:
``{ready, checks: {database, migrations, trust_anchors, crls, mail}}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from engine.web._shared import PortalDep, off_loop

router = APIRouter(tags=["operations"], include_in_schema=False)  # probes, not the API


class HealthOut(BaseModel):
    ok: bool = True


class ChecksOut(BaseModel):
    database: str
    migrations: str
    trust_anchors: str
    crls: str
    mail: str


class ReadyOut(BaseModel):
    ready: bool
    checks: ChecksOut


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> dict[str, Any]:
    """Liveness: the process answers (no database access)."""
    return {"ok": True}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready: a check gives its reason."}},
)
async def readyz(portal: PortalDep) -> JSONResponse:
    """Readiness: every check ``ok`` (200), or not (503), each failing one with a short reason."""
    readiness = await off_loop(portal.app.health.readiness)
    return JSONResponse(readiness.as_dict(), status_code=200 if readiness.ready else 503)
