"""The ASGI entry points for uvicorn.

``swreg serve`` hands uvicorn a :class:`PortalFactory` holding the settings it read (the worker
processes receive it pickled: no environment variable is written on their behalf);
``uvicorn --factory engine.web.asgi:create_app_from_env`` reads them from ``SWREG_*`` instead.
Each worker process builds one portal: one bootstrap (the database is migrated before the
workers start), one app.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from engine._bootstrap import bootstrap
from engine._settings import Settings
from engine.web import create_app


@dataclass(frozen=True, slots=True)
class PortalFactory:
    """Builds the portal for one worker process from the settings it was given."""

    settings: Settings

    def __call__(self) -> FastAPI:
        return create_app(bootstrap(self.settings, migrate=False), close_on_shutdown=True)


def create_app_from_env() -> FastAPI:
    """The portal configured from ``SWREG_*`` environment variables (see :class:`Settings`)."""
    return PortalFactory(Settings.from_env())()
