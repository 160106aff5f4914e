"""The JSON API of turnkey (under /api); errors go through the portal's one error mapping.

``POST /api/turnkey/verify`` checks a Turnkey message's detached signature against the sender's
registered signing certificates (DESIGN.md §5). It is meant for server-to-server calls, yet the
portal's CSRF middleware has no per-route exemption, so it asks for the CSRF token like every
other unsafe request (``GET /api/csrf``, then the cookie and ``X-CSRF-Token``). Bodies are
limited by the middleware (64 KiB), which bounds the message to about 48 KiB here; larger
messages go through the CLI or :class:`engine.services.turnkey.TurnkeyVerifier` in-process.

The certificates are judged at the time the message is received (DESIGN.md §5); a ``signed_at``
in the request is still accepted, so older clients keep working, and ignored. A caller that knows
which certificate signed (from the envelope it unpacked) names it in ``certificate``
(fingerprint or serial): one verification instead of trying the sender's certificates in turn;
a certificate that is not the sender's is refused (``not_registered``), never replaced by another.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from engine._errors import ErrorCode
from engine.web._api import ErrorsOut
from engine.web._shared import PortalDep, decode_base64, off_loop

_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorsOut} for status in (403, 413, 422, 503)
}
router = APIRouter(prefix="/api", responses=_RESPONSES)


class TurnkeyVerifyIn(BaseModel):
    """A message and its detached signature, both base64 (the signature may itself be a
    base64 text, PEM or a CMS SignedData once decoded)."""

    sender: str = Field(max_length=64, examples=["04595257"])
    message: str = Field(description="The message, standard base64.")
    signature: str = Field(max_length=350_000, description="The signature, standard base64.")
    certificate: str | None = Field(
        default=None,
        max_length=200,
        description="Optional: the certificate that signed, by its SHA-256 fingerprint (hex) or "
        "serial (hex). Only it is tried; one that is not the sender's registered signing "
        "certificate is refused (not_registered), never replaced by another.",
        examples=["4ECFCBA3"],
    )
    signed_at: datetime | None = Field(
        default=None,
        description="Ignored (accepted for older clients): the receipt time counts, or the "
        "genTime of a trusted RFC 3161 time-stamp token in the CMS.",
        deprecated=True,
    )


class TurnkeyCertificateOut(BaseModel):
    fingerprint: str
    subject: str
    serial: str


class TurnkeyVerifyOut(BaseModel):
    valid: bool = True
    sender: str
    signed_at: datetime = Field(
        description="The time the certificates were judged at: the receipt time, or the "
        "genTime of a trusted time-stamp token."
    )
    certificate: TurnkeyCertificateOut


@router.post("/turnkey/verify", tags=["turnkey"])
async def turnkey_verify(
    body: TurnkeyVerifyIn, request: Request, portal: PortalDep
) -> TurnkeyVerifyOut:
    """訊息簽章驗證: which registered signing certificate of ``sender`` signed ``message``.

    Refusals (422): ``not_registered`` (field ``sender``, or ``certificate`` for a named
    certificate that is not the sender's), ``certificate_expired``,
    ``certificate_not_yet_valid``, ``certificate_revoked``, ``revocation_unknown``,
    ``signature_invalid``, ``invalid_value`` (message not base64, certificate name not hex).
    """
    message = decode_base64(body.message, "message", ErrorCode.INVALID_VALUE)
    signature = decode_base64(body.signature, "signature", ErrorCode.SIGNATURE_INVALID)
    result = await off_loop(
        portal.turnkey.verify, body.sender, message, signature, certificate=body.certificate
    )
    return TurnkeyVerifyOut(
        sender=result.sender,
        signed_at=result.signed_at,
        certificate=TurnkeyCertificateOut(**result.certificate()),
    )
