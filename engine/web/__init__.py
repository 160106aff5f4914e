"""The portal: JSON API (``/api``) and server-rendered wizard over one :class:`engine.App`.

:func:`create_app` builds the FastAPI application; it holds no state of its own (everything
lives in the database or in cookies), so any number of uvicorn workers can serve it. Errors
are turned into HTTP responses here, in one place: ``{"errors": [{field, code, message,
detail?}]}`` for the API, an error page for the wizard, never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, Response

from engine._bootstrap import App
from engine._errors import (
    EnvironmentProblem,
    ErrorCode,
    FormError,
    Language,
    RefusedError,
    SwregError,
)
from engine.web import (
    _api,
    _api_account,
    _api_customs,
    _api_mobile,
    _api_password,
    _api_renewal,
    _api_turnkey,
    _health,
    _metrics,
    _pages,
    _pages_account,
    _pages_customs,
    _pages_officer,
)
from engine.web._i18n import Translator, language_of, page_language
from engine.web._portal import Portal, error_body, retry_after, status_for
from engine.web._request_log import (
    REQUEST_ID_HEADER,
    RequestLogMiddleware,
    request_id_of,
    route_template,
)
from engine.web._security import PortalMiddleware, security_headers

__all__ = ["create_app"]

STATIC_DIR: Final = Path(__file__).parent / "static"
logger = logging.getLogger("swreg.web")

_HTTP_CODES: Final = {
    400: ErrorCode.BAD_REQUEST,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
}
_PYDANTIC_CODES: Final = {
    "missing": ErrorCode.FIELD_REQUIRED,
    "string_too_long": ErrorCode.FIELD_TOO_LONG,
}


def create_app(app: App, *, close_on_shutdown: bool = False) -> FastAPI:
    """The portal over ``app``; ``close_on_shutdown`` closes ``app`` when the server stops."""
    web = FastAPI(
        title="swreg",
        summary="Certificate account registration (關港貿單一窗口 style): JSON API",
        docs_url=None,  # Swagger UI would load scripts from a CDN, which the CSP forbids
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=_closing(app) if close_on_shutdown else None,
    )
    web.state.portal = Portal(app)
    web.state.templates = _pages.make_templates()
    web.include_router(_api.router)
    web.include_router(_api_customs.router)
    web.include_router(_api_turnkey.router)
    web.include_router(_api_renewal.router)
    web.include_router(_api_password.router)
    web.include_router(_api_mobile.router)
    web.include_router(_api_account.router)
    web.include_router(_pages.router)
    web.include_router(_pages_customs.router)
    web.include_router(_pages_account.router)
    web.include_router(_pages_officer.router)
    web.include_router(_pages_officer.api_router)
    web.include_router(_health.router)
    web.include_router(_metrics.router)
    web.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    web.add_exception_handler(SwregError, _domain_error)
    web.add_exception_handler(RequestValidationError, _validation_error)
    web.add_exception_handler(HTTPException, _http_error)
    web.add_exception_handler(Exception, _internal_error)
    web.add_middleware(
        PortalMiddleware,
        settings=app.settings,
        keys=web.state.portal.identifiers,
        on_error=render_error,
    )
    # Outermost, so that every answer (the refusals of PortalMiddleware too) has its id and line.
    web.add_middleware(RequestLogMiddleware, trusted_proxies=app.settings.trusted_proxies)
    return web


def _closing(app: App) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan that closes ``app`` (its database pool) when the server stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.close()

    return lifespan


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path == "/api" or path.startswith(("/api/", "/openapi"))


def render_error(request: Request, error: SwregError) -> Response:
    """A domain error as an HTTP response: the status mapping of :func:`status_for`.

    The detail of an environment problem (a database host, a mail server's answer) is for the
    server's log, not for the public.
    """
    if isinstance(error, EnvironmentProblem) and error.detail:
        logger.warning("%s on %s: %s", error.code, route_template(request.scope), error.detail)
        error = EnvironmentProblem(error.code)
    language = language_of(request) if _wants_json(request) else page_language(request)
    status = status_for(error)
    headers = {}
    if (seconds := retry_after(error)) is not None:
        headers["Retry-After"] = seconds
    if _wants_json(request):
        return JSONResponse(error_body(error, language), status_code=status, headers=headers)
    messages = [item.message(language) for item in error.errors]
    response = _pages.error_page(request, messages, status)
    response.headers.update(headers)
    return response


async def _domain_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, SwregError):  # registered for SwregError only
        return await _internal_error(request, exc)
    return render_error(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """Malformed request bodies, in the same shape as the engine's form errors."""
    if not isinstance(exc, RequestValidationError):  # registered for it only
        return await _internal_error(request, exc)
    errors = []
    for detail in exc.errors():
        names = [str(part) for part in detail.get("loc", ()) if isinstance(part, str)]
        where = [n for n in names if n not in ("body", "query", "path", "header", "cookie")]
        code = _PYDANTIC_CODES.get(str(detail.get("type")), ErrorCode.INVALID_VALUE)
        errors.append(RefusedError(code, field=where[-1] if where else None))
    return render_error(request, FormError(errors or [RefusedError(ErrorCode.INVALID_VALUE)]))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Framework errors (unknown path, wrong method, unreadable body)."""
    if not isinstance(exc, HTTPException):  # registered for it only
        return await _internal_error(request, exc)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
    return _plain_error(request, exc.status_code, code, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged on the server, a short apology for the client."""
    logger.error(
        "unhandled error on %s %s",
        request.method,
        route_template(request.scope),  # never the path: paths hold tokens
        exc_info=exc,
        extra={"request_id": request_id_of(request)},  # outside the request's context by now
    )
    try:
        response = _plain_error(request, 500, ErrorCode.INTERNAL_ERROR, {})
    except Exception:  # even the error page failed: plain text
        response = PlainTextResponse("internal error", status_code=500)
    # This response is made outside the portal middleware, so it adds the headers itself.
    response.headers.update(security_headers(request.app.state.portal.settings))
    if (request_id := request_id_of(request)) is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _plain_error(
    request: Request, status: int, code: ErrorCode, headers: dict[str, str]
) -> Response:
    language: Language = language_of(request) if _wants_json(request) else page_language(request)
    message = Translator(language).error(code)
    if _wants_json(request):
        body = {"errors": [{"field": None, "code": code, "message": message}]}
        return JSONResponse(body, status_code=status, headers=headers)
    response = _pages.error_page(request, [message], status)
    response.headers.update(headers)
    return response
