"""The ASGI entry point for uvicorn: ``uvicorn --factory engine.web.asgi:create_app_from_env``.

Each worker process calls :func:`create_app_from_env` once: settings from the environment, one
bootstrap (``swreg serve`` migrates the database before starting the workers), one portal.
"""

from __future__ import annotations

from fastapi import FastAPI

from engine._bootstrap import bootstrap
from engine._settings import Settings
from engine.web import create_app


def create_app_from_env() -> FastAPI:
    """The portal configured from ``SWREG_*`` environment variables (see :class:`Settings`)."""
    return create_app(bootstrap(Settings.from_env(), migrate=False), close_on_shutdown=True)
