"""The officer console (DESIGN.md §12), server-rendered; officers log in with their own card.

``GET /officer``                        without a console session: the card login (card.js in
                                        ``officer`` mode posts to ``/api/console/login``); with
                                        one: the approval queue (待審核), longest waiting first
``GET /officer/registrations/{id}``     a registration: masked data, the card's identity, its
                                        certificate explained like ``swreg cert inspect``, the
                                        audit trail with its diffs; 核准 and 駁回 (with a reason)
``POST …/approve``, ``POST …/reject``   → the registration again with 「已核准」 / 「已駁回」
``GET|POST /officer/accounts``          account search (帳號, 統一編號, OID, 身分證字號; a
                                        form post, so that no national ID is ever in a URL)
``GET /officer/accounts/{id}``          an account, its login certificates, its owner's customs
                                        certificates; 停用 / 恢復 with a reason (admins)
``POST …/suspend``, ``POST …/reactivate``
``GET /officer/trust``                  trust anchors, stored CRLs and their freshness
``GET /officer/audit``                  (admins) verify the chain, export it as JSON Lines
``POST /officer/audit/verify``, ``POST /officer/audit/export``
``POST /officer/logout``
``POST /api/console/login/challenge``   the console login's challenge (JSON, like 憑證登入's)
``POST /api/console/login``             the card's answer → the ``swreg_officer`` cookie

The console session is its own cookie (``__Host-swreg_officer`` over https, SameSite=Strict),
never an applicant's session; every form carries the CSRF token. Without a live session every
page goes back to ``/officer`` (the login). What an officer may do is the service's check
(:class:`~engine.services.officer_console.OfficerConsole`): a reviewer posting an admin's form
gets the error page, 403 ``not_authorized``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from engine._errors import RefusedError
from engine.core.declarations import Labels
from engine.services.customs import COLUMNS
from engine.services.officer_console import AccountHit, OfficerSessionView
from engine.services.officers import ADMIN, require_admin
from engine.web._api import CardIn, ChallengeOut
from engine.web._i18n import Translator
from engine.web._pages import form_values, render
from engine.web._portal import LOGIN_LIMIT, status_for
from engine.web._security import clear_officer_cookie, officer_cookie_name, set_officer_cookie
from engine.web._shared import PortalDep, actor, errors_by_field, limited, off_loop, portal_of
from engine.web._shared import translator as translator_of

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/console", tags=["officer console"])

HOME: Final = "/officer"
AccountId = Annotated[int, Path(ge=1, le=2**31 - 1)]
"""An account's id in a console URL (a 32-bit key: anything else is no account)."""

_TEXTS: Final[dict[str, Labels]] = {
    "console": Labels("關員作業", "Officer console"),
    "login_intro": Labels(
        "請插入您的政府憑證（GCA）或自然人憑證（MOICA），輸入PIN碼後按下 [登入]。",
        "Insert your government (GCA) or citizen (MOICA) card, enter its PIN and press [Log in].",
    ),
    "login": Labels("登入", "Log in"),
    "logout": Labels("登出", "Log out"),
    "signed_in_as": Labels("登入者", "Signed in as"),
    "role_reviewer": Labels("審核人員", "Reviewer"),
    "role_admin": Labels("管理人員", "Administrator"),
    "nav": Labels("關員作業選單", "Console menu"),
    "queue": Labels("待審核案件", "Approval queue"),
    "queue_empty": Labels("目前沒有待審核的案件。", "No registration is waiting."),
    "registration": Labels("註冊案件", "Registration"),
    "registration_id": Labels("案件編號", "Registration"),
    "applicant_type": Labels("申請類別", "Applicant type"),
    "account": Labels("帳號", "Account"),
    "state": Labels("狀態", "Status"),
    "waiting_since": Labels("等待自", "Waiting since"),
    "open": Labels("檢視", "Open"),
    "entered": Labels("申請資料（已遮蔽）", "Entered data (masked)"),
    "card_identity": Labels("憑證身分", "What the card says"),
    "certificate": Labels("憑證說明", "The certificate"),
    "no_certificate": Labels("尚未檢查憑證。", "No card was checked yet."),
    "ca": Labels("憑證機構", "CA"),
    "subject": Labels("主體", "Subject"),
    "issuer": Labels("簽發者", "Issuer"),
    "serial": Labels("序號", "Serial"),
    "validity": Labels("有效期間", "Valid"),
    "key_usage": Labels("金鑰用途", "Key usage"),
    "cert_status": Labels("憑證狀態", "Status"),
    "revocation": Labels("廢止檢查", "Revocation"),
    "chain": Labels("憑證路徑", "Chain"),
    "accepted_by": Labels("可用於", "Accepted by"),
    "trail": Labels("稽核軌跡", "Audit trail"),
    "at": Labels("時間", "When"),
    "actor": Labels("執行者", "Actor"),
    "event": Labels("事件", "Event"),
    "change": Labels("狀態變更", "State change"),
    "diff": Labels("內容", "Details"),
    "decide": Labels("審核", "Decision"),
    "approve": Labels("核准", "Approve"),
    "reject": Labels("駁回", "Reject"),
    "reason": Labels("原因", "Reason"),
    "done_approved": Labels("已核准。", "Approved."),
    "done_rejected": Labels("已駁回。", "Rejected."),
    "done_suspended": Labels("帳號已停用。", "The account was suspended."),
    "done_reactivated": Labels("帳號已恢復。", "The account was reactivated."),
    "search": Labels("帳號查詢", "Account search"),
    "search_hint": Labels(
        "輸入帳號、統一編號、OID或身分證字號（以雜湊比對，不留存）。",
        "An account name, a UBN, an OID or a national ID (matched through its keyed hash, "
        "never kept).",
    ),
    "search_query": Labels("查詢條件", "Search for"),
    "search_button": Labels("查詢", "Search"),
    "no_hits": Labels("查無符合的帳號。", "No account matches."),
    "email": Labels("電子郵件Email", "E-mail"),
    "national_id": Labels("身分證字號", "National ID"),
    "ubn": Labels("統一編號", "UBN"),
    "oid": Labels("OID", "OID"),
    "created_at": Labels("建立時間", "Created"),
    "login_certificates": Labels("登入憑證", "Login certificates"),
    "card_role": Labels("卡別", "Card"),
    "not_after": Labels("有效期限", "Valid until"),
    "customs": Labels("通關憑證", "Customs certificates"),
    "no_customs": Labels("沒有通關憑證。", "No customs certificate."),
    "state_active": Labels("已啟用", "Active"),
    "state_suspended": Labels("已停用", "Suspended"),
    "state_locked": Labels("密碼已鎖定", "Password locked"),
    "state_pending_activation": Labels("待啟用", "Awaiting activation"),
    "cert_role_primary": Labels("主卡", "Primary card"),
    "cert_role_secondary": Labels("附卡", "Secondary card"),
    "cert_role_mobile": Labels("行動自然人憑證", "Mobile ID"),
    "cert_role_card": Labels("憑證卡", "Card"),
    "cert_status_active": Labels("有效", "Valid"),
    "cert_status_expired": Labels("已逾期", "Expired"),
    "cert_status_replaced": Labels("已更換", "Replaced"),
    "cert_status_revoked": Labels("已廢止", "Revoked"),
    "cert_status_valid": Labels("有效", "Valid"),
    "cert_status_not_yet_valid": Labels("尚未生效", "Not yet valid"),
    "cert_status_untrusted": Labels("不受信任", "Untrusted"),
    "cert_status_revocation_unknown": Labels("廢止狀態不明", "Revocation unknown"),
    "suspend": Labels("停用帳號", "Suspend the account"),
    "reactivate": Labels("恢復帳號", "Reactivate the account"),
    "trust": Labels("信任錨與廢止清冊", "Trust and revocation"),
    "anchors": Labels("信任錨", "Trust anchors"),
    "fingerprint": Labels("指紋", "Fingerprint"),
    "anchor": Labels("根憑證", "Anchor"),
    "intermediate": Labels("中繼憑證", "Intermediate"),
    "crls": Labels("廢止清冊（CRL）", "Revocation lists (CRLs)"),
    "no_crls": Labels("尚無廢止清冊。", "No CRL is stored."),
    "this_update": Labels("發布時間", "Issued"),
    "next_update": Labels("下次更新", "Next update"),
    "entries": Labels("筆數", "Entries"),
    "fresh": Labels("是否有效", "Fresh"),
    "yes": Labels("是", "Yes"),
    "no": Labels("否（過期）", "No (stale)"),
    "policy": Labels("廢止檢查政策", "Revocation policy"),
    "audit": Labels("稽核紀錄", "Audit log"),
    "audit_intro": Labels(
        "驗證稽核紀錄的雜湊鏈，或匯出為 JSON Lines"
        "（可用 scripts/verify-audit-export.py 獨立驗證）。",
        "Verify the audit log's hash chain, or export it as JSON Lines (checkable on its own "
        "with scripts/verify-audit-export.py).",
    ),
    "verify": Labels("驗證雜湊鏈", "Verify the chain"),
    "export": Labels("匯出", "Export"),
    "verified_ok": Labels(
        "雜湊鏈完整：共 {rows} 筆，最後雜湊 {last}。",
        "The chain holds: {rows} rows, last hash {last}.",
    ),
    "verified_bad": Labels(
        "雜湊鏈有誤：第 {seq} 筆（{reason}）。", "The chain is broken at row {seq} ({reason})."
    ),
}


def _texts(t: Translator) -> dict[str, str]:
    return {key: t.label(labels) for key, labels in _TEXTS.items()}


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _via(request: Request) -> str:
    return actor(request, "web")


def _token(request: Request) -> str:
    return request.cookies.get(officer_cookie_name(portal_of(request).settings)) or ""


async def _session(request: Request) -> OfficerSessionView | None:
    portal = portal_of(request)
    return await off_loop(portal.console.session, _token(request))


def _page(
    request: Request,
    template: str,
    session: OfficerSessionView,
    *,
    title: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    t = translator_of(request)
    x = _texts(t)
    return render(
        request,
        template,
        title=f"{title} – {x['console']}",
        status_code=status_code,
        x=x,
        officer=session.officer,
        is_admin=session.officer.role == ADMIN,
        **context,
    )


Handler = Callable[[Request, OfficerSessionView], Awaitable[Response]]


async def _signed_in(request: Request, handler: Handler) -> Response:
    """``handler`` with the live console session, or back to the login."""
    session = await _session(request)
    if session is None:
        return _see_other(HOME)
    return await handler(request, session)


# -- login -------------------------------------------------------------------------------------


@router.get(HOME, response_model=None)
async def console_home(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        portal = portal_of(request)
        t = translator_of(request)
        return render(
            request,
            "officer_login.html",
            title=t.label(_TEXTS["console"]),
            x=_texts(t),
            body_data={"agent-url": portal.settings.agent_url},
            script_data={"messages": t.script_messages()},
        )
    queue = await off_loop(portal_of(request).console.queue, session.officer)
    return _page(
        request,
        "officer_queue.html",
        session,
        title=_texts(translator_of(request))["queue"],
        registrations=queue,
        type_label=_type_label(request),
    )


class ConsoleLoginOut(BaseModel):
    officer: str
    role: str


@api_router.post("/login/challenge")
async def console_challenge(request: Request, portal: PortalDep) -> ChallengeOut:
    """The console login: a single-use challenge for the officer's card to sign."""
    challenge = await limited(
        portal, LOGIN_LIMIT, request, portal.console.issue_challenge, origin=portal.origin
    )
    return ChallengeOut.of(challenge)


@api_router.post("/login")
async def console_login(
    body: CardIn, request: Request, response: Response, portal: PortalDep
) -> ConsoleLoginOut:
    """The officer's card answer; sets the console cookie. ``not_authorized`` for a card
    that is not on the officer list."""
    via = _via(request)
    result = await limited(
        portal,
        LOGIN_LIMIT,
        request,
        lambda: portal.console.login(body.response(), origin=portal.origin, via=via),
    )
    set_officer_cookie(response, result.token, portal.settings)
    return ConsoleLoginOut(officer=result.officer.name, role=result.officer.role)


@router.post(f"{HOME}/logout", response_model=None)
async def console_logout(request: Request) -> Response:
    portal = portal_of(request)
    await off_loop(portal.console.logout, _token(request), via=_via(request))
    response = _see_other(HOME)
    clear_officer_cookie(response, portal.settings)
    return response


# -- registrations -----------------------------------------------------------------------------


def _type_label(request: Request) -> Callable[[str], str]:
    t = translator_of(request)
    types = portal_of(request).catalog.applicant_types

    def label(code: str) -> str:
        found = types.get(code)
        return t.label(found.labels) if found is not None else code

    return label


async def _registration_page(
    request: Request,
    session: OfficerSessionView,
    registration_id: str,
    *,
    errors: dict[str, str] | None = None,
    reason: str = "",
    status_code: int = 200,
) -> Response:
    portal = portal_of(request)
    detail = await off_loop(
        portal.console.registration, session.officer, registration_id, via=_via(request)
    )
    x = _texts(translator_of(request))
    done = request.query_params.get("done")
    return _page(
        request,
        "officer_registration.html",
        session,
        title=f"{x['registration']} {detail.registration.id[:8]}",
        status_code=status_code,
        detail=detail,
        type_label=_type_label(request),
        done=x.get(f"done_{done}") if done in ("approved", "rejected") else None,
        errors=errors or {},
        reason=reason,
    )


@router.get(HOME + "/registrations/{registration_id}", response_model=None)
async def registration_page(registration_id: str, request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        return await _registration_page(request, session, registration_id)

    return await _signed_in(request, show)


@router.post(HOME + "/registrations/{registration_id}/approve", response_model=None)
async def registration_approve(registration_id: str, request: Request) -> Response:
    async def approve(request: Request, session: OfficerSessionView) -> Response:
        portal = portal_of(request)
        await off_loop(portal.console.approve, session.officer, registration_id, via=_via(request))
        return _see_other(f"{HOME}/registrations/{registration_id}?done=approved")

    return await _signed_in(request, approve)


@router.post(HOME + "/registrations/{registration_id}/reject", response_model=None)
async def registration_reject(registration_id: str, request: Request) -> Response:
    async def reject(request: Request, session: OfficerSessionView) -> Response:
        portal = portal_of(request)
        reason = (await form_values(request)).get("reason", "")
        try:
            await off_loop(
                portal.console.reject,
                session.officer,
                registration_id,
                reason=reason,
                via=_via(request),
            )
        except RefusedError as error:
            if error.code != "field_required" and error.code != "field_too_long":
                raise
            language = translator_of(request).language
            errors = errors_by_field(error, language, ("reason",), other="reason")
            return await _registration_page(
                request, session, registration_id, errors=errors, reason=reason,
                status_code=status_for(error),
            )  # fmt: skip
        return _see_other(f"{HOME}/registrations/{registration_id}?done=rejected")

    return await _signed_in(request, reject)


# -- accounts ----------------------------------------------------------------------------------


@router.get(HOME + "/accounts", response_model=None)
async def accounts_page(request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        return _search_page(request, session)

    return await _signed_in(request, show)


@router.post(HOME + "/accounts", response_model=None)
async def accounts_search(request: Request) -> Response:
    """The search is a form post: a national ID never sits in a URL (history, Referer, logs)."""

    async def search(request: Request, session: OfficerSessionView) -> Response:
        portal = portal_of(request)
        query = (await form_values(request)).get("q", "")
        try:
            found = await off_loop(portal.console.search, session.officer, query, via=_via(request))
        except RefusedError as error:
            language = translator_of(request).language
            errors = errors_by_field(error, language, ("q",), other="q")
            return _search_page(request, session, errors=errors, status_code=status_for(error))
        shown = "" if found.kind == "national_id" else query
        return _search_page(request, session, query=shown, hits=found.hits)

    return await _signed_in(request, search)


def _search_page(
    request: Request,
    session: OfficerSessionView,
    *,
    query: str = "",
    hits: Sequence[AccountHit] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return _page(
        request,
        "officer_accounts.html",
        session,
        title=_texts(translator_of(request))["search"],
        status_code=status_code,
        query=query,
        hits=hits,
        errors=errors or {},
        type_label=_type_label(request),
    )


async def _account_page(
    request: Request,
    session: OfficerSessionView,
    account_id: int,
    *,
    errors: dict[str, str] | None = None,
    reason: str = "",
    status_code: int = 200,
) -> Response:
    portal = portal_of(request)
    detail = await off_loop(portal.console.account, session.officer, account_id, via=_via(request))
    x = _texts(translator_of(request))
    done = request.query_params.get("done")
    return _page(
        request,
        "officer_account.html",
        session,
        title=f"{x['account']} {detail.account.account}",
        status_code=status_code,
        detail=detail,
        columns=[translator_of(request).label(labels) for _, labels in COLUMNS],
        type_label=_type_label(request),
        done=x.get(f"done_{done}") if done in ("suspended", "reactivated") else None,
        errors=errors or {},
        reason=reason,
    )


@router.get(HOME + "/accounts/{account_id}", response_model=None)
async def account_page(account_id: AccountId, request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        return await _account_page(request, session, account_id)

    return await _signed_in(request, show)


_DONE: Final = {"suspend": "suspended", "reactivate": "reactivated"}


def _account_change(action: str) -> Callable[[int, Request], Awaitable[Response]]:
    """停用 (``suspend``) or 恢復 (``reactivate``) an account: admins only (the service says)."""

    async def change(account_id: AccountId, request: Request) -> Response:
        async def act(request: Request, session: OfficerSessionView) -> Response:
            portal = portal_of(request)
            reason = (await form_values(request)).get("reason", "")
            call = getattr(portal.console, action)
            try:
                await off_loop(call, session.officer, account_id, reason=reason, via=_via(request))
            except RefusedError as error:
                if error.code not in ("field_required", "field_too_long"):
                    raise
                language = translator_of(request).language
                errors = errors_by_field(error, language, ("reason",), other="reason")
                return await _account_page(
                    request, session, account_id, errors=errors, reason=reason,
                    status_code=status_for(error),
                )  # fmt: skip
            return _see_other(f"{HOME}/accounts/{account_id}?done={_DONE[action]}")

        return await _signed_in(request, act)

    return change


router.add_api_route(
    HOME + "/accounts/{account_id}/suspend", _account_change("suspend"), methods=["POST"],
    response_model=None,
)  # fmt: skip
router.add_api_route(
    HOME + "/accounts/{account_id}/reactivate", _account_change("reactivate"), methods=["POST"],
    response_model=None,
)  # fmt: skip


# -- trust and audit ---------------------------------------------------------------------------


@router.get(HOME + "/trust", response_model=None)
async def trust_page(request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        overview = await off_loop(portal_of(request).console.trust, session.officer)
        x = _texts(translator_of(request))
        return _page(request, "officer_trust.html", session, title=x["trust"], overview=overview)

    return await _signed_in(request, show)


@router.get(HOME + "/audit", response_model=None)
async def audit_page(request: Request) -> Response:
    async def show(request: Request, session: OfficerSessionView) -> Response:
        require_admin(session.officer)  # the service checks each action too
        x = _texts(translator_of(request))
        return _page(request, "officer_audit.html", session, title=x["audit"], result=None)

    return await _signed_in(request, show)


@router.post(HOME + "/audit/verify", response_model=None)
async def audit_verify(request: Request) -> Response:
    async def verify(request: Request, session: OfficerSessionView) -> Response:
        result = await off_loop(
            portal_of(request).console.verify_audit, session.officer, via=_via(request)
        )
        x = _texts(translator_of(request))
        return _page(request, "officer_audit.html", session, title=x["audit"], result=result)

    return await _signed_in(request, verify)


@router.post(HOME + "/audit/export", response_model=None)
async def audit_export(request: Request) -> Response:
    async def export(request: Request, session: OfficerSessionView) -> Response:
        lines = await off_loop(
            portal_of(request).console.export_audit, session.officer, via=_via(request)
        )
        return StreamingResponse(
            lines,  # a blocking iterator: Starlette steps it in the thread pool
            media_type="application/jsonl; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="swreg-audit.jsonl"'},
        )

    return await _signed_in(request, export)


__all__ = ["api_router", "router"]
