"""The cookie that binds a registration to the browser that started it (DESIGN.md §6).

Starting a registration (``POST /register``, ``POST /api/registrations``) sets its secret in a
cookie of its own, ``swreg_reg_<id>``, once for the wizard's pages (``Path=/register/<id>``)
and once for the API the pages' scripts call (``Path=/api/registrations/<id>``): a browser sends
it only to that registration's addresses, so several registrations run side by side and no
other request carries it. It is

* ``HttpOnly``: no script reads it (the pages' scripts call the API with ``fetch`` and
  ``credentials: "same-origin"``; the browser adds it);
* ``SameSite=Strict``: every request that needs it comes from the portal's own pages (a form
  post, the redirect after it, a same-origin ``fetch``), and nothing outside the portal links
  into a registration (no mail carries its address), so a request another site starts — even
  a top-level link — never carries it and gets the answer an unknown id gets;
* ``Secure`` when the portal is served over https;
* a browser-session cookie: it goes when the browser closes. A registration left waiting for
  an officer (待審核) goes on without it; its outcome comes by mail.

Every route under a registration id hands :func:`registration_secret` to the registration
service, which answers a missing or wrong secret exactly like an unknown id.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import HTTPConnection
from starlette.responses import Response

from engine._settings import Settings
from engine.web._security import secure_cookies

REGISTRATION_COOKIE_PREFIX: Final = "swreg_reg_"
PAGE_PREFIX: Final = "/register/"
API_PREFIX: Final = "/api/registrations/"


def registration_cookie(registration_id: str) -> str:
    """The name of the cookie holding the secret of ``registration_id``."""
    return REGISTRATION_COOKIE_PREFIX + registration_id


def registration_secret(connection: HTTPConnection, registration_id: str) -> str | None:
    """The secret this request presents for ``registration_id`` (None: no cookie)."""
    return connection.cookies.get(registration_cookie(registration_id))


def set_registration_cookie(
    response: Response, registration_id: str, secret: str, settings: Settings
) -> None:
    """Hand a new registration's secret to the browser (see the module docstring)."""
    for prefix in (PAGE_PREFIX, API_PREFIX):
        response.set_cookie(
            registration_cookie(registration_id),
            secret,
            path=prefix + registration_id,
            httponly=True,
            samesite="strict",
            secure=secure_cookies(settings),
        )


__all__ = [
    "REGISTRATION_COOKIE_PREFIX",
    "registration_cookie",
    "registration_secret",
    "set_registration_cookie",
]
