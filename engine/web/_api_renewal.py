"""The JSON API of renewal (under /api); errors go through the portal's one error mapping."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api")
