"""The JSON API of customs (under /api); errors go through the portal's one error mapping.

``POST /api/customs-certificates/challenge``  a single-use challenge for an IC card to sign
``POST /api/customs-certificates``   通關憑證註冊: multipart (``usage_type``, the answers as form
                                     fields, ``file`` = the ``.cer``) or JSON (``usage_type``,
                                     ``kind``, ``certificate`` in base64, optional ``chain``, the
                                     answers under ``answers`` or at the top level); an IC card
                                     (``kind: "ic_card"``) also sends ``challenge_id`` and
                                     ``signature``: the card's signature over the challenge's
                                     payload, which proves the importer holds the card; a
                                     ``.cer`` sends them too (form fields or JSON), signed with
                                     the certificate's private key, unless the owner is logged
                                     in with its card (``swreg_session``): else 422
                                     ``proof_required`` (DESIGN.md §5)
``GET /api/customs-certificates?key=``  通關憑證查詢 (account names and personal values masked
                                     unless the ``swreg_session`` login owns the row)
``DELETE /api/customs-certificates/{id}``  刪除, by the owner logged in with its card
                                     (``swreg_session`` cookie)

Unsafe methods need the CSRF token like every other POST (the portal middleware checks it).
Bodies over 64 KiB never reach these routes: the middleware answers 413 ``request_too_large``,
so a ``.cer`` over the 64 KiB limit is refused there; ``file_too_large`` (422) comes from the
service for what gets through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from engine._errors import ErrorCode, Language, RefusedError
from engine.core.declarations import ImportKind
from engine.pki.card_response import CardResponse
from engine.pki.certificate import MAX_CERTIFICATE_BYTES
from engine.services.customs import CustomsImport, CustomsRow, SignedChallenge
from engine.web._api import ChallengeOut
from engine.web._i18n import language_of
from engine.web._portal import IMPORT_LIMIT, QUERY_LIMIT
from engine.web._security import CSRF_FIELD
from engine.web._shared import (
    MAX_CHALLENGE_ID,
    PortalDep,
    actor,
    card_session,
    decode_base64,
    limited,
    off_loop,
    required_text,
    signed_challenge,
)

_RESERVED: Final = frozenset(
    {
        "usage_type",
        "kind",
        "certificate",
        "chain",
        "answers",
        "challenge_id",
        "signature",
        CSRF_FIELD,
    }
)
_MAX_CHAIN: Final = 8

router = APIRouter(prefix="/api", tags=["customs"])


class CustomsImportOut(BaseModel):
    """An imported certificate: 「主憑證匯入成功!」 (``message``, in the request's language)."""

    ok: bool = True
    id: int
    query_key: str
    fingerprint: str
    usage_type: str
    kind: str
    certificate_kind: str
    message: str

    @classmethod
    def of(cls, result: CustomsImport, language: Language) -> CustomsImportOut:
        return cls(
            id=result.id,
            query_key=result.query_key,
            fingerprint=result.fingerprint,
            usage_type=result.usage_type,
            kind=result.kind.value,
            certificate_kind=result.certificate_kind.value,
            message=result.message.get(language),
        )


class CustomsRowOut(BaseModel):
    """One row of 通關憑證查詢 (憑證型態 | 憑證種類 | 用途 | 憑證資訊, and English)."""

    id: int
    form: str
    kind: str
    purpose: str
    info: str
    form_en: str
    kind_en: str
    purpose_en: str
    info_en: str
    serial: str
    subject: str
    not_before: str
    not_after: str
    account: str | None
    usage_type: str | None
    status: str


class CustomsRowsOut(BaseModel):
    rows: list[CustomsRowOut]

    @classmethod
    def of(cls, rows: list[CustomsRow]) -> CustomsRowsOut:
        return cls(rows=[CustomsRowOut(**row.as_dict()) for row in rows])


class DeletedOut(BaseModel):
    ok: bool = True
    id: int
    status: str = "deleted"


@router.post("/customs-certificates/challenge")
async def customs_challenge(request: Request, portal: PortalDep) -> ChallengeOut:
    """A single-use challenge for an IC card to sign (its payload names ``customs_import``)."""
    challenge = await limited(
        portal, IMPORT_LIMIT, request, portal.customs.issue_challenge, origin=portal.origin
    )
    return ChallengeOut.of(challenge)


@router.post("/customs-certificates", status_code=201)
async def import_customs_certificate(request: Request, portal: PortalDep) -> CustomsImportOut:
    """通關憑證註冊: a ``.cer`` upload (multipart) or a certificate in JSON (base64)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            async with request.form(max_files=1) as form:
                upload = await _upload(form)
        else:
            upload = _json_upload(await _json_body(request))
    except RefusedError:  # a refused body counts too (rate_limited past the limit)
        await limited(portal, IMPORT_LIMIT, request, lambda: None)
        raise
    who = actor(request, "api")

    def run() -> CustomsImport:
        session = card_session(portal, request)
        if upload.kind is ImportKind.IC_CARD and upload.proof is not None:
            return portal.customs.import_from_card(
                upload.usage_type, upload.answers, upload.proof, origin=portal.origin,
                session=session, actor=who,
            )  # fmt: skip
        return portal.customs.import_certificate(
            upload.usage_type, upload.answers, certificate=upload.certificate, kind=upload.kind,
            chain=upload.chain, signed=upload.signed, origin=portal.origin, session=session,
            actor=who,
        )  # fmt: skip

    return CustomsImportOut.of(
        await limited(portal, IMPORT_LIMIT, request, run), language_of(request)
    )


@router.get("/customs-certificates")
async def query_customs_certificates(
    request: Request, portal: PortalDep, key: str = ""
) -> CustomsRowsOut:
    """通關憑證查詢 by A00001 (大關別+專責人員代碼), UBN, 身分證字號 or OID."""

    def run() -> list[CustomsRow]:
        return portal.customs.query(key, session=card_session(portal, request))

    return CustomsRowsOut.of(await limited(portal, QUERY_LIMIT, request, run))


@router.delete("/customs-certificates/{certificate_id}")
async def delete_customs_certificate(
    certificate_id: int, request: Request, portal: PortalDep
) -> DeletedOut:
    """刪除: the owner logged in with its card (憑證登入); else 403 ``not_authorized``."""
    who = actor(request, "api")

    def delete() -> None:
        session = card_session(portal, request)
        portal.customs.delete(certificate_id, session=session, actor=who)

    await off_loop(delete)
    return DeletedOut(id=certificate_id)


# -- request bodies ----------------------------------------------------------------------------


class _Upload:
    """What an import request carries, whatever its content type."""

    def __init__(
        self,
        usage_type: str,
        answers: Mapping[str, Any],
        certificate: bytes,
        kind: ImportKind = ImportKind.NON_IC,
        chain: tuple[bytes, ...] = (),
        proof: CardResponse | None = None,
        signed: SignedChallenge | None = None,
    ) -> None:
        self.usage_type = usage_type
        self.answers = answers
        self.certificate = certificate
        self.kind = kind
        self.chain = chain
        self.proof = proof  # an IC card's signed challenge
        self.signed = signed  # a .cer's proof of possession


async def _upload(form: FormData) -> _Upload:
    """Multipart: ``usage_type``, the answers as fields, the ``.cer`` as ``file`` (非IC卡類),
    and its proof of possession as ``challenge_id`` and ``signature`` (base64) when sent."""
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field="file")
    data = await file.read(MAX_CERTIFICATE_BYTES + 1)
    answers = {k: v for k, v in form.items() if k not in _RESERVED and isinstance(v, str)}
    usage_type = required_text(form.get("usage_type"), "usage_type")
    return _Upload(usage_type, answers, data, signed=signed_challenge(form))


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # the portal refuses deep nesting first; belt and braces
        raise RefusedError(ErrorCode.INVALID_VALUE, detail="not a JSON object") from None
    if not isinstance(body, dict):
        raise RefusedError(ErrorCode.INVALID_VALUE, detail="not a JSON object")
    return body


def _json_upload(body: Mapping[str, Any]) -> _Upload:
    """JSON: ``usage_type``, ``kind`` (``non_ic`` / ``ic_card``), ``certificate`` (base64)."""
    nested = body.get("answers") or {}
    if not isinstance(nested, dict):
        raise RefusedError(ErrorCode.INVALID_VALUE, field="answers")
    answers = {**{k: v for k, v in body.items() if k not in _RESERVED}, **nested}
    try:
        kind = ImportKind(body.get("kind", ImportKind.NON_IC.value))
    except ValueError:
        raise RefusedError(ErrorCode.INVALID_VALUE, field="kind") from None
    chain = body.get("chain") or []
    if not isinstance(chain, list) or len(chain) > _MAX_CHAIN:
        raise RefusedError(ErrorCode.INVALID_VALUE, field="chain")
    usage_type = required_text(body.get("usage_type"), "usage_type")
    certificate = _b64(body.get("certificate"), "certificate")
    chain_der = tuple(_b64(item, "chain") for item in chain)
    if kind is not ImportKind.IC_CARD:
        return _Upload(
            usage_type, answers, certificate, kind, chain_der, signed=signed_challenge(body)
        )
    # An IC card proves it is held: it signed a challenge of /customs-certificates/challenge.
    challenge_id = required_text(body.get("challenge_id"), "challenge_id")
    if len(challenge_id) > MAX_CHALLENGE_ID:
        raise RefusedError(ErrorCode.FIELD_TOO_LONG, field="challenge_id")
    signature = _b64(body.get("signature"), "signature", ErrorCode.SIGNATURE_INVALID)
    proof = CardResponse(challenge_id, certificate, signature, chain_der)
    return _Upload(usage_type, answers, certificate, kind, chain_der, proof)


def _b64(value: object, field: str, code: ErrorCode = ErrorCode.NOT_A_CERTIFICATE) -> bytes:
    if not isinstance(value, str) or not value:
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field=field)
    return decode_base64(value, field, code)
