"""``GET /metrics``: the Prometheus metrics of :mod:`~engine.services.metrics` (DESIGN.md §11).

Answered only to a client in ``SWREG_METRICS_ALLOW`` (loopback by default), the client being
the one :func:`~engine.web._security.client_address` finds: the socket peer, or behind a
trusted proxy (``SWREG_TRUSTED_PROXIES``) the address that proxy forwarded — so a scraper
outside the list cannot get in by writing ``X-Forwarded-For`` itself, and a proxy in the list
does not open the metrics to everyone behind it. A request that carries a forwarding header
(``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``) whose client is still its socket peer came
through a proxy that is not in ``SWREG_TRUSTED_PROXIES`` (or named no client): it is refused
too, so a reverse proxy on the same machine, forgotten in that list, does not hand the metrics
to the internet as "loopback". Anyone else gets 403 ``not_authorized`` (the API's JSON error
body). Whatever the ``Host``
(:data:`~engine.web._security.HOST_CHECK_EXEMPT`: a scraper reaches each worker by its
address); a GET, so no CSRF token. With several workers every answer holds all of theirs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from engine._errors import ErrorCode, RefusedError
from engine._settings import IPNetwork
from engine.services import metrics
from engine.web._i18n import language_of
from engine.web._portal import error_body, status_for
from engine.web._security import client_address, forwarded_client
from engine.web._shared import PortalDep, off_loop

router = APIRouter(tags=["operations"])
FORWARDING_HEADERS: Final = ("x-forwarded-for", "forwarded", "x-real-ip")


@router.get("/metrics", include_in_schema=False, response_class=Response)
async def metrics_text(request: Request, portal: PortalDep) -> Response:
    """Every metric in the Prometheus text format; 403 ``not_authorized`` outside the list."""
    if relayed_unseen(request) or not allowed(
        client_address(request), portal.settings.metrics_allow
    ):
        refused = RefusedError(ErrorCode.NOT_AUTHORIZED)
        body = error_body(refused, language_of(request))
        return JSONResponse(body, status_code=status_for(refused))
    text = await off_loop(metrics.exposition)  # several workers: files to read and merge
    return Response(text, media_type=metrics.CONTENT_TYPE)


def relayed_unseen(request: Request) -> bool:
    """Whether ``request`` came through a proxy without a client it believes: a forwarding
    header, and the client is the socket peer all the same."""
    if not any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    peer = request.client.host if request.client else "unknown"
    return client_address(request) == forwarded_client(peer, (), ())  # the peer, canonical


def allowed(client: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether ``client`` (an address as :func:`client_address` gives it) is in ``networks``;
    a client without an address never is."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in networks)
