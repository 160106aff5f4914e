"""The server-rendered 通關憑證註冊, 通關憑證查詢 and 憑證更換作業.

``GET /customs/import``   步驟1 選擇憑證使用類型 (``?usage_type=`` re-renders the form for a type,
                          which is how the page works without JavaScript), 步驟2 選擇憑證、匯入憑證:
                          非IC卡類憑證 (a ``.cer``) or, for the types that take one and with
                          JavaScript, IC卡類憑證 (customs.js: the local card agent reads the
                          工商憑證 and signs a challenge after the PIN (匯入); 送出 posts both
                          to ``/api/customs-certificates``)
``POST /customs/import``  multipart: ``usage_type``, the type's fields, ``certificate_kind`` and
                          ``file`` (the ``.cer``) with its proof of ownership (DESIGN.md §5): the
                          owner's card login, or ``challenge_id`` and ``signature``, the
                          private key's signature over a challenge (``challenge`` = 取得驗證碼
                          re-renders the page with one and the ``openssl`` command that signs
                          it); success → 「主憑證匯入成功!」 on the same page
``GET /customs/query``    步驟3 憑證查詢: ``?key=`` (A00001, UBN, 身分證字號 or OID) → the table
                          憑證型態 | 憑證種類 | 用途 | 憑證資訊 | 刪除 (刪除: for the owner
                          logged in with its card, a form posting to ``/customs/delete/{id}``)
``POST /customs/delete/{id}``  刪除 a signing certificate (csrf; the ``swreg_session`` login);
                          → back to the query with 「已刪除」, or the query with ``#error-delete``
``GET /renewal``          憑證更換作業: the new card signs through the agent (renewal.js posts to
                          ``/api/renewal``); without a login also 帳號 and 密碼 for an expired card

Refusals stand next to their field (``#error-<field>``); certificate and file refusals, which
name no form field, next to the file input (``#error-file``). Other errors (rate limits, the
database) go to the portal's error page. The rate limits are the JSON API's (one budget per
client for both ways in).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine._errors import ErrorCode, RefusedError
from engine.core.declarations import CertificateKind, ImportKind, Labels, UsageType
from engine.core.fields import customs_offices, form_fields
from engine.pki.card_response import Challenge
from engine.pki.certificate import MAX_CERTIFICATE_BYTES
from engine.services.customs import (
    CERTIFICATE_KIND_FIELD,
    COLUMNS,
    MAX_QUERY_KEY_LENGTH,
    CustomsImport,
    CustomsRow,
)
from engine.services.login import SessionView
from engine.web._i18n import Translator
from engine.web._pages import FieldView, field_view, render
from engine.web._portal import IMPORT_LIMIT, QUERY_LIMIT, Portal, status_for
from engine.web._security import CSRF_FIELD
from engine.web._shared import (
    actor,
    card_session,
    errors_by_field,
    limited,
    off_loop,
    portal_of,
    signed_challenge,
    translator,
)

router = APIRouter(include_in_schema=False)

FILE_FIELD: Final = "file"
KIND_FIELD: Final = CERTIFICATE_KIND_FIELD
IMPORT_KIND_FIELD: Final = "import_kind"

# The words of these two pages (the portal's shared ones are in _i18n.TEXTS).
_TEXTS: Final[Mapping[str, Labels]] = {
    "import_intro": Labels(
        "步驟1、選擇 [憑證使用類型]；步驟2、填寫資料、選擇憑證種類並匯入憑證檔 (.cer)，按 [送出]。",
        "Step 1: choose the certificate usage type. Step 2: fill in the form, choose the "
        "certificate kind, pick the certificate file (.cer) and press [Submit].",
    ),
    "usage_type": Labels("憑證使用類型", "Certificate usage type"),
    "change_usage": Labels("變更憑證使用類型", "Change usage type"),
    "change_hint": Labels(
        "選擇其他類型後請按 [變更憑證使用類型] 以顯示該類型的欄位。",
        "After choosing another type, press [Change usage type] to show its fields.",
    ),
    "specialist": Labels("報關專責人員", "Customs broker specialist"),
    "choose_office": Labels("請選擇關區", "Choose a customs office"),
    "non_ic": Labels("非IC卡類憑證", "Non-IC certificate"),
    "ic_card": Labels("IC卡類憑證", "IC card certificate"),
    "business": Labels("工商憑證", "Business certificate"),
    "ic_hint": Labels(
        "插入工商憑證IC卡、輸入PIN碼後按 [匯入]，待卡片資訊載入完成後按 [送出]。"
        "PIN碼只交給本機的讀卡元件，不會傳送到伺服器。",
        "Insert the business certificate card, enter its PIN and press [Import]; once the card "
        "is read, press [Submit]. The PIN goes only to the card component on your computer, "
        "never to the server.",
    ),
    "ic_read": Labels("匯入", "Import"),
    "ic_loaded": Labels("卡片資訊載入完成，請按 [送出]。", "The card was read: press [Submit]."),
    "ic_read_first": Labels("請先按 [匯入] 讀取IC卡。", "Press [Import] to read the card first."),
    "ic_needs_script": Labels(
        "IC卡類憑證匯入需要啟用 JavaScript 及本機讀卡元件。",
        "Importing from an IC card needs JavaScript and the card component on your computer.",
    ),
    "certificate_kind": Labels("憑證種類", "Certificate kind"),
    "file": Labels("憑證檔案", "Certificate file"),
    "file_hint": Labels(
        "請選擇 .cer 憑證檔 (DER 或 PEM，不含私密金鑰，64 KiB 以內)。",
        "Choose a .cer certificate file (DER or PEM, no private key, at most 64 KiB).",
    ),
    "proof": Labels("證明持有憑證", "Proof of ownership"),
    "proof_hint": Labels(
        "以此憑證所屬帳號「憑證登入」者免簽；否則請按 [取得驗證碼]，以憑證的私密金鑰簽署驗證碼，"
        "再將簽章 (Base64) 貼上。",
        "The owner logged in with its card need not sign. Otherwise press [Get a challenge], "
        "sign it with the certificate's private key and paste the signature (base64).",
    ),
    "logged_in_as": Labels(
        "目前以憑證登入帳號：{account}。", "Logged in with a card as {account}."
    ),
    "proof_logged_in": Labels(
        "目前以憑證登入帳號：{account}。若此憑證屬於此帳號，免簽驗證碼。",
        "Logged in with a card as {account}: a certificate of this account needs no signature.",
    ),
    "proof_person": Labels(
        "報關專責人員憑證須由專責人員本人以自然人憑證「憑證登入」後匯入，並以憑證的私密金鑰簽署"
        "驗證碼：請按 [取得驗證碼]，簽署後將簽章 (Base64) 貼上。",
        "A specialist's certificate is imported by the specialist, logged in with the citizen "
        "certificate card, and its private key signs a challenge: press [Get a challenge], sign "
        "it and paste the signature (base64).",
    ),
    "get_challenge": Labels("取得驗證碼", "Get a challenge"),
    "challenge": Labels("驗證碼 (Base64)", "Challenge (base64)"),
    "challenge_command": Labels(
        "以 OpenSSL 簽署 (private-key.pem 為憑證的私密金鑰，不會上傳)：",
        "Sign it with OpenSSL (private-key.pem is the certificate's private key; it is never "
        "uploaded):",
    ),
    "challenge_expires": Labels("驗證碼有效至", "The challenge expires at"),
    "signature": Labels("簽章 (Base64)", "Signature (base64)"),
    "submit": Labels("送出", "Submit"),
    "query_key": Labels("查詢鍵", "Query key"),
    "query_link": Labels("查詢此憑證", "Look this certificate up"),
    "query_intro": Labels(
        "請輸入查詢憑證：大關別+報關專責人員代碼 (如 A00001)、統一編號、身分證字號或 OID，"
        "按 [查詢]。",
        "Enter a query key: customs district + specialist code (e.g. A00001), a UBN, a national "
        "ID or an OID, then press [Query].",
    ),
    "query_field": Labels("查詢憑證", "Certificate query"),
    "query": Labels("查詢", "Query"),
    "results": Labels("查詢結果", "Results"),
    "no_results": Labels("查無憑證資料。", "No certificates found."),
    "delete_column": Labels("刪除", "Delete"),
    "delete": Labels("刪除", "Delete"),
    "deleted": Labels("已刪除", "Deleted"),
    "renewal_intro": Labels(
        "請插入新的憑證卡，輸入新卡的PIN碼後按下 [憑證更換]。請先以舊卡「憑證登入」；"
        "舊卡已過期者，請輸入帳號及密碼（密碼連續錯誤5次帳號將鎖定）。更換後請以新卡重新登入。",
        "Insert the new card, enter its PIN and press [Replace card]. Log in with the old card "
        "first; if the old card has expired, enter your account and password instead (five "
        "wrong passwords in a row lock the account). Log in again with the new card afterwards.",
    ),
    "renewal_logged_in": Labels("目前登入帳號", "Logged in as"),
    "renewal_old_account": Labels(
        "舊卡已過期者：帳號及密碼", "Old card expired: account and password"
    ),
    "renewal_account": Labels("帳號", "Account"),
    "renewal_password": Labels("密碼", "Password"),
    "replace": Labels("憑證更換", "Replace card"),
    "renewed": Labels("憑證更換完成", "The card was replaced"),
}


def _text(t: Translator, key: str) -> str:
    return t.label(_TEXTS[key])


@dataclass(frozen=True, slots=True)
class Choice:
    """One radio or option: value, label, chosen."""

    value: str
    label: str
    checked: bool = False


# -- 通關憑證註冊 ------------------------------------------------------------------------------


def _usage_fields(
    usage: UsageType, t: Translator, values: Mapping[str, str], errors: Mapping[str, str]
) -> list[FieldView]:
    fields = []
    for description in form_fields(usage.form):
        view = field_view(
            description,
            t,
            value=values.get(description.name),
            locked=False,
            error=errors.get(description.name),
        )
        label = usage.field_labels.get(description.name)
        if label is not None:
            view = replace(view, label=t.label(label))
        fields.append(view)
    return fields


def _offices(t: Translator, chosen: str) -> list[Choice]:
    table = customs_offices()
    options = [Choice("", _text(t, "choose_office"), not chosen)]
    for code in table.codes():
        zh, en = table.offices[code]
        name = zh if t.language == "zh-TW" else en
        options.append(Choice(code, f"{code} {name}", code == chosen.strip().upper()))
    return options


def _import_page(
    request: Request,
    usage: UsageType,
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    result: CustomsImport | None = None,
    session: SessionView | None = None,
    challenge: ChallengeView | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    portal = portal_of(request)
    t = translator(request)
    values = values or {}
    if challenge is None and result is None:
        challenge = ChallengeView.kept(values)
    person_owned = usage.owner_field == "national_id"  # a login never spares the key's proof
    login_key = "logged_in_as" if person_owned else "proof_logged_in"
    errors = errors or {}
    kinds = usage.certificate_kinds(ImportKind.NON_IC)
    chosen_kind = values.get(KIND_FIELD)
    if chosen_kind not in {k.value for k in kinds}:
        chosen_kind = kinds[-1].value if kinds else ""
    usages = [
        Choice(u.code, t.label(u.labels), u.code == usage.code)
        for u in portal.catalog.usage_types.values()
    ]
    messages = t.script_messages()
    messages.update({key: _text(t, key) for key in ("ic_loaded", "ic_read_first")})
    return render(
        request,
        "customs_import.html",
        title=t("customs_register"),
        status_code=status_code,
        body_data={"agent-url": portal.settings.agent_url},
        script_data={"messages": messages},
        ic_allowed=usage.accepts(ImportKind.IC_CARD, CertificateKind.BUSINESS),
        x={key: _text(t, key) for key in _TEXTS},
        usages=usages,
        usage=Choice(usage.code, t.label(usage.labels), True),
        fields=_usage_fields(usage, t, values, errors),
        offices=_offices(t, values.get("customs_office", "")),
        kinds=[Choice(k.value, t.label(k.labels), k.value == chosen_kind) for k in kinds],
        errors=errors,
        result=result,
        query_url=f"/customs/query?{urlencode({'key': result.query_key})}" if result else "",
        person_owned=person_owned,
        logged_in=_text(t, login_key).format(account=session.account) if session else "",
        challenge=challenge,
        signature=values.get("signature", "") if challenge else "",
    )


@dataclass(frozen=True, slots=True)
class ChallengeView:
    """A challenge for a ``.cer``'s key to sign, as the page shows it (and keeps it across a
    refusal: a challenge is consumed only when its proof is checked)."""

    id: str
    payload: str  # base64
    expires_at: str

    @property
    def command(self) -> str:
        """The OpenSSL one-liner that signs it (RSA or EC keys; the signature in base64)."""
        return (
            f"echo {self.payload} | openssl base64 -d -A | "
            "openssl dgst -sha256 -sign private-key.pem | openssl base64 -A"
        )

    @classmethod
    def of(cls, challenge: Challenge) -> ChallengeView:
        payload = base64.b64encode(challenge.payload).decode("ascii")
        return cls(challenge.id, payload, challenge.expires_at.isoformat(timespec="seconds"))

    @classmethod
    def kept(cls, values: Mapping[str, str]) -> ChallengeView | None:
        """The challenge a refused form carried, when it looks like one."""
        found = cls(
            values.get("challenge_id", ""),
            values.get("challenge_payload", ""),
            values.get("challenge_expires", ""),
        )
        if not (_CHALLENGE_ID.fullmatch(found.id) and _PAYLOAD.fullmatch(found.payload)):
            return None
        return found if _MOMENT.fullmatch(found.expires_at) else replace(found, expires_at="")


_CHALLENGE_ID: Final = re.compile(r"[0-9a-f-]{1,64}")
_PAYLOAD: Final = re.compile(r"[A-Za-z0-9+/=]{1,256}")
_MOMENT: Final = re.compile(r"[0-9T:+\-]{1,32}")


@router.get("/customs/import", response_class=HTMLResponse)
async def customs_import_page(request: Request, usage_type: str | None = None) -> HTMLResponse:
    usage = portal_of(request).app.customs.usage_type(usage_type)
    return _import_page(request, usage, session=await _session(request))


@router.post("/customs/import", response_model=None)
async def customs_import(request: Request) -> Response:
    portal = portal_of(request)
    t = translator(request)
    async with request.form(max_files=1) as form:
        values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != CSRF_FIELD}
        upload = form.get(FILE_FIELD)
        data = (
            await upload.read(MAX_CERTIFICATE_BYTES + 1) if isinstance(upload, UploadFile) else b""
        )
    usage = portal.customs.usage_type(values.get("usage_type"))
    if "change" in values:  # 變更憑證使用類型 without JavaScript: show that type's form
        return RedirectResponse(
            f"/customs/import?{urlencode({'usage_type': usage.code})}", status_code=303
        )
    known = [d.name for d in form_fields(usage.form)]
    answers = {k: v for k, v in values.items() if k in known}
    session = await _session(request)
    if values.get(IMPORT_KIND_FIELD) == ImportKind.IC_CARD.value:  # customs.js posts those itself
        errors = {IMPORT_KIND_FIELD: _text(t, "ic_needs_script")}
        return _import_page(
            request, usage, values=values, errors=errors, session=session, status_code=422
        )
    if "challenge" in values:  # 取得驗證碼: a challenge for the .cer's key to sign
        challenge = await limited(
            portal, IMPORT_LIMIT, request, portal.customs.issue_challenge, origin=portal.origin
        )
        return _import_page(
            request, usage, values=values, session=session, challenge=ChallengeView.of(challenge)
        )
    who = actor(request, "web")

    def run() -> CustomsImport:
        return portal.customs.import_certificate(
            values.get("usage_type", ""),  # the service refuses an unknown one
            answers, certificate=data, kind=ImportKind.NON_IC, signed=signed_challenge(values),
            origin=portal.origin, session=session, certificate_kind=values.get(KIND_FIELD),
            actor=who,
        )  # fmt: skip

    try:
        result = await limited(portal, IMPORT_LIMIT, request, run)
    except RefusedError as error:
        if error.code == ErrorCode.RATE_LIMITED:
            raise
        errors = errors_by_field(
            error, t.language, [*known, "usage_type", KIND_FIELD, *_PROOF_FIELDS], other=FILE_FIELD
        )
        return _import_page(
            request, usage, values=values, errors=errors, session=session,
            status_code=status_for(error),
        )  # fmt: skip
    return _import_page(
        request, usage, values={KIND_FIELD: values.get(KIND_FIELD, "")}, result=result,
        session=session,
    )  # fmt: skip


_PROOF_FIELDS: Final = ("signature", "challenge_id", "national_id")


# -- 通關憑證查詢 ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowView:
    id: int
    cells: tuple[str, str, str, str]
    purpose: str  # "login" or "signing"
    deletable: bool = False


def _row_view(row: CustomsRow, t: Translator, owned: frozenset[int]) -> RowView:
    purpose = "login" if row.usage_type is None else "signing"
    if t.language == "zh-TW":
        cells = (row.form, row.kind, row.purpose, row.info)
    else:
        cells = (row.form_en, row.kind_en, row.purpose_en, row.info_en)
    return RowView(row.id, cells, purpose, row.id in owned)


async def _session(request: Request) -> SessionView | None:
    """The visitor's card login (``swreg_session``), if any is live."""
    return await off_loop(card_session, portal_of(request), request)


def _owned(
    portal: Portal, session: SessionView | None, rows: Sequence[CustomsRow]
) -> frozenset[int]:
    """The ids among ``rows`` of signing certificates the session's account may delete."""
    signing = [row.id for row in rows if row.usage_type is not None]
    return portal.customs.deletable(signing, session)


@router.get("/customs/query", response_class=HTMLResponse)
async def customs_query_page(
    request: Request, key: str | None = None, deleted: str | None = None
) -> HTMLResponse:
    return await _query_page(request, key, deleted=deleted is not None)


async def _query_page(
    request: Request,
    key: str | None,
    *,
    deleted: bool = False,
    delete_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    portal = portal_of(request)
    t = translator(request)
    rows: list[RowView] | None = None
    error: str | None = None
    session = await _session(request)
    if key is not None:

        def look_up() -> tuple[list[CustomsRow], frozenset[int]]:
            found = portal.customs.query(key, session=session)
            return found, _owned(portal, session, found)

        try:
            found, owned = await limited(portal, QUERY_LIMIT, request, look_up)
            rows = [_row_view(row, t, owned) for row in found]
        except RefusedError as refused:
            if refused.code == ErrorCode.RATE_LIMITED:
                raise
            error = refused.message(t.language)
            status_code = status_for(refused)
    return render(
        request,
        "customs_query.html",
        title=t("customs_query"),
        status_code=status_code,
        x={k: _text(t, k) for k in _TEXTS},
        key=(key or "")[:MAX_QUERY_KEY_LENGTH],
        columns=[t.label(labels) for _, labels in COLUMNS],
        rows=rows,
        error=error,
        logged_in=session is not None,
        deletable=rows is not None and any(row.deletable for row in rows),
        deleted=deleted,
        delete_error=delete_error,
    )


@router.post("/customs/delete/{certificate_id}", response_model=None)
async def customs_delete(certificate_id: int, request: Request) -> Response:
    """刪除 by the owner logged in with its card; back to the query it was pressed on."""
    portal = portal_of(request)
    t = translator(request)
    async with request.form() as form:
        value = form.get("key")
        key = value[:MAX_QUERY_KEY_LENGTH] if isinstance(value, str) else ""
    session = await _session(request)
    try:
        await off_loop(
            portal.customs.delete,
            certificate_id,
            session=session,
            actor=actor(request, "web"),
        )
    except RefusedError as refused:
        if refused.code == ErrorCode.RATE_LIMITED:
            raise
        return await _query_page(
            request,
            key or None,
            delete_error=refused.message(t.language),
            status_code=status_for(refused),
        )
    query = {"key": key, "deleted": "1"} if key else {"deleted": "1"}
    return RedirectResponse(f"/customs/query?{urlencode(query)}", status_code=303)


# -- 憑證更換作業 ------------------------------------------------------------------------------


@router.get("/renewal", response_class=HTMLResponse)
async def renewal_page(request: Request) -> HTMLResponse:
    """憑證更換作業: the new card signs in renewal.js; the old account is the login or 帳號+密碼."""
    portal = portal_of(request)
    t = translator(request)
    session = await _session(request)
    messages = t.script_messages()
    messages.update(
        {key: _text(t, key) for key in ("renewed", "renewal_account", "renewal_password")}
    )
    return render(
        request,
        "renewal.html",
        title=t("renewal"),
        body_data={"agent-url": portal.settings.agent_url},
        script_data={"messages": messages},
        x={k: _text(t, k) for k in _TEXTS},
        session=session,
    )


@router.post("/renewal", response_model=None)
async def renewal_fallback() -> Response:
    """The renewal form without JavaScript: the card needs the page's script; show it again."""
    return RedirectResponse("/renewal", status_code=303)


__all__ = ["router"]
