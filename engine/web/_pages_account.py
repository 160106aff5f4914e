"""The account's own pages (DESIGN.md §6) and 忘記密碼, server-rendered.

``GET /account``               after 憑證登入 (「設定憑證」 on the completion page leads here): the
                               account (masked), its login certificates (主卡/附卡, CA, expiry,
                               status), its live sessions (where, when; this one marked), and the
                               forms below; links to 憑證更換作業 and the account's 通關憑證.
                               Without a live session → ``/login``.
``POST /account/password``     目前密碼, 新密碼, 確認密碼 → ``/account?done=password`` with a new
                               session cookie (every session ended), or the page again with each
                               error next to its field
``POST /account/email``        新電子郵件Email and 目前密碼 → ``/account?done=email`` (the link went
                               to the new address)
``POST /account/logout-all``   登出所有裝置: every session ends, this one included → ``/login``
``GET /account/email/{token}`` the confirmation mail's link: a button, so that a mail scanner
                               fetching the link confirms nothing
``POST /account/email/{token}`` confirm → 「電子郵件已變更」
``GET /password/forgot``       忘記密碼: 帳號, 新密碼, 確認密碼 and the card (password.js signs
                               through the agent or HiPKI and posts to ``/api/password-reset``)
``POST /password/forgot``      without JavaScript: the page again (the card needs the script)
``POST /password/forgot/email`` with ``SWREG_PASSWORD_RESET=card,email``: a reset link to the
                               account's address; the page says the same whether or not the
                               account exists
``GET|POST /password/reset/{token}``  the link's page: 新密碼, 確認密碼 → 「密碼已重新設定」

Every form carries the CSRF token; the limits are the JSON API's (one budget per client).
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine._errors import RefusedError
from engine.core.declarations import Labels
from engine.services.account_settings import AccountOverview
from engine.web._i18n import Translator
from engine.web._pages import form_values, render
from engine.web._portal import ACCOUNT_LIMIT, ACTIVATE_LIMIT, PASSWORD_RESET_LIMIT, status_for
from engine.web._security import clear_session_cookie, set_session_cookie
from engine.web._shared import (
    actor,
    errors_by_field,
    limited,
    portal_of,
    session_token,
    translator,
    where_from,
)

router = APIRouter(include_in_schema=False)

PASSWORD_FIELDS: Final = ("current_password", "password", "password_confirm")

_TEXTS: Final[dict[str, Labels]] = {
    "account_data": Labels("帳號資料", "Account"),
    "state": Labels("帳號狀態", "Status"),
    "state_active": Labels("已啟用", "Active"),
    "state_locked": Labels(
        "密碼已鎖定（請以憑證「忘記密碼」重設）", "Password locked (reset it with your card)"
    ),
    "email": Labels("電子郵件Email", "E-mail"),
    "password_changed_at": Labels("密碼最後變更", "Password last set"),
    "certificates": Labels("登入憑證", "Login certificates"),
    "cert_role": Labels("卡別", "Card"),
    "cert_ca": Labels("憑證種類", "CA"),
    "cert_not_after": Labels("有效期限", "Valid until"),
    "cert_status": Labels("狀態", "Status"),
    "role_primary": Labels("主卡", "Primary card"),
    "role_secondary": Labels("附卡", "Secondary card"),
    "role_mobile": Labels("行動自然人憑證", "Mobile ID"),
    "role_card": Labels("憑證卡", "Card"),
    "status_active": Labels("有效", "Valid"),
    "status_expired": Labels("已逾期", "Expired"),
    "status_replaced": Labels("已更換", "Replaced"),
    "status_revoked": Labels("已廢止", "Revoked"),
    "renewal_link": Labels("憑證更換作業", "Replace a card"),
    "customs_link": Labels("我的通關憑證", "My customs certificates"),
    "change_password": Labels("變更密碼", "Change the password"),
    "current_password": Labels("目前密碼", "Current password"),
    "new_password": Labels("新密碼", "New password"),
    "password_confirm": Labels("確認密碼", "Confirm the password"),
    "password_rule": Labels(
        "密碼長度至少8碼，須包含英文大寫、小寫、數字及符號中的三種。連續輸入錯誤5次，密碼將鎖定。",
        "At least 8 characters, with three of: upper case, lower case, digits, symbols. Five "
        "wrong current passwords in a row lock the password.",
    ),
    "password_by_card": Labels(
        "忘記目前密碼？以憑證重設密碼", "Forgot the current password? Reset it with your card"
    ),
    "save_password": Labels("變更密碼", "Change password"),
    "done_password": Labels(
        "密碼已變更，其他裝置已登出。", "The password was changed; other sessions were logged out."
    ),
    "change_email": Labels("變更電子郵件Email", "Change the e-mail address"),
    "new_email": Labels("新電子郵件Email", "New e-mail address"),
    "email_note": Labels(
        "確認信將寄至新信箱，點選信中連結後才會生效；舊信箱會收到通知。帳號名稱不會因此變更。",
        "A confirmation link goes to the new address and the change takes effect once it is "
        "opened; the old address is told. The account name does not change.",
    ),
    "send_email": Labels("寄送確認信", "Send the confirmation link"),
    "done_email": Labels(
        "確認信已寄出，請至新信箱點選連結。", "The link was sent to the new address."
    ),
    "sessions": Labels("登入中的裝置", "Signed-in devices"),
    "session_where": Labels("裝置與位置", "Device and address"),
    "session_since": Labels("登入時間", "Signed in"),
    "session_seen": Labels("最後使用", "Last used"),
    "this_session": Labels("（本裝置）", "(this device)"),
    "logout_all": Labels("登出所有裝置", "Log out everywhere"),
    "email_confirm_title": Labels("確認新電子郵件Email", "Confirm the new e-mail address"),
    "email_confirm_text": Labels(
        "按下 [確認變更] 後，帳號的電子郵件Email將改為本信箱。",
        "Press [Confirm] to make this the account's e-mail address.",
    ),
    "email_confirm": Labels("確認變更", "Confirm"),
    "email_changed": Labels("電子郵件Email已變更", "The e-mail address was changed"),
    "forgot_intro": Labels(
        "請輸入帳號及新密碼，插入已註冊於此帳號的憑證卡（主卡或附卡），輸入PIN碼後按下 [重設密碼]。"
        "重設後所有裝置將登出，並寄送通知信至帳號的電子郵件Email。",
        "Enter the account and a new password, insert a card registered to the account (the "
        "primary card or a secondary card), enter its PIN and press [Reset password]. Every "
        "session then ends and the account's e-mail address is told.",
    ),
    "forgot_account": Labels("帳號", "Account"),
    "reset": Labels("重設密碼", "Reset password"),
    "reset_done": Labels(
        "密碼已重新設定，請以新密碼或憑證登入。", "The password was reset; log in again."
    ),
    "by_email": Labels("沒有憑證卡？以電子郵件重設", "No card at hand? Reset by e-mail"),
    "by_email_intro": Labels(
        "輸入帳號後，重設連結將寄至帳號的電子郵件Email，30分鐘內有效。",
        "Enter the account: a reset link goes to its e-mail address, valid for 30 minutes.",
    ),
    "send_link": Labels("寄送重設連結", "Send the reset link"),
    "link_sent": Labels(
        "若此帳號存在，重設連結已寄至帳號的電子郵件Email。",
        "If the account exists, a reset link was sent to its e-mail address.",
    ),
    "link_title": Labels("重設密碼", "Reset the password"),
}


def _text(t: Translator, key: str) -> str:
    return t.label(_TEXTS[key])


def _texts(t: Translator) -> dict[str, str]:
    return {key: _text(t, key) for key in _TEXTS}


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- the account page --------------------------------------------------------------------------


def _account_page(
    request: Request,
    overview: AccountOverview,
    *,
    done: str | None = None,
    errors: dict[str, str] | None = None,
    new_email: str = "",
    status_code: int = 200,
) -> HTMLResponse:
    t = translator(request)
    portal = portal_of(request)
    summary = overview.summary
    applicant = portal.catalog.applicant_types.get(summary.type)
    return render(
        request,
        "account.html",
        title=t("my_account"),
        status_code=status_code,
        x=_texts(t),
        summary=summary,
        sessions=overview.sessions,
        applicant_label=t.label(applicant.labels) if applicant else summary.type,
        done=_text(t, f"done_{done}") if done in ("password", "email") else None,
        errors=errors or {},
        new_email=new_email,
    )


async def _overview(request: Request) -> AccountOverview | None:
    """The account page's data for the visitor's live session, or None (→ log in)."""
    portal = portal_of(request)
    token = session_token(request)
    try:
        return await limited(
            portal, ACCOUNT_LIMIT, request, portal.account_settings.overview, token
        )
    except RefusedError as error:
        if error.code == "session_expired":
            return None
        raise


@router.get("/account", response_model=None)
async def account_page(request: Request) -> Response:
    overview = await _overview(request)
    if overview is None:
        return _see_other("/login")
    return _account_page(request, overview, done=request.query_params.get("done"))


@router.post("/account/password", response_model=None)
async def account_password(request: Request) -> Response:
    portal = portal_of(request)
    values = await form_values(request)
    token = session_token(request)
    try:
        done = await limited(
            portal, ACCOUNT_LIMIT, request, portal.account_settings.change_password, token,
            current=values.get("current_password", ""),
            answers={k: values.get(k, "") for k in ("password", "password_confirm")},
            actor=actor(request, "web"), client=where_from(request),
        )  # fmt: skip
    except RefusedError as error:
        if error.code == "session_expired":
            return _see_other("/login")
        overview = await _overview(request)
        if overview is None:
            return _see_other("/login")
        t = translator(request)
        errors = errors_by_field(error, t.language, PASSWORD_FIELDS, other="current_password")
        return _account_page(request, overview, errors=errors, status_code=status_for(error))
    response = _see_other("/account?done=password")
    set_session_cookie(response, done.token, portal.settings)  # the old session ended
    return response


@router.post("/account/email", response_model=None)
async def account_email(request: Request) -> Response:
    portal = portal_of(request)
    values = await form_values(request)
    token = session_token(request)
    address = values.get("email", "")
    try:
        await limited(
            portal, ACCOUNT_LIMIT, request, portal.account_settings.request_email_change, token,
            new_email=address, current=values.get("email_password", ""),
            actor=actor(request, "web"),
        )  # fmt: skip
    except RefusedError as error:
        if error.code == "session_expired":
            return _see_other("/login")
        overview = await _overview(request)
        if overview is None:
            return _see_other("/login")
        language = translator(request).language
        errors = errors_by_field(error, language, ("email", "current_password"), other="email")
        errors["email_password"] = errors.pop("current_password", "")
        return _account_page(
            request, overview, errors=errors, new_email=address, status_code=status_for(error)
        )
    return _see_other("/account?done=email")


@router.post("/account/logout-all", response_model=None)
async def account_logout_all(request: Request) -> Response:
    portal = portal_of(request)
    token = session_token(request)
    await limited(
        portal, ACCOUNT_LIMIT, request, portal.logins.logout_all, token,
        actor=actor(request, "web"),
    )  # fmt: skip
    response = _see_other("/login")
    clear_session_cookie(response, portal.settings)
    return response


# -- the e-mail confirmation link ----------------------------------------------------------------


@router.get("/account/email/{token}", response_class=HTMLResponse)
async def email_confirm_page(token: str, request: Request) -> HTMLResponse:
    t = translator(request)
    return render(
        request, "account_email.html", title=_text(t, "email_confirm_title"), x=_texts(t),
        token=token, error=None, account=None,
    )  # fmt: skip


@router.post("/account/email/{token}", response_class=HTMLResponse)
async def email_confirm(token: str, request: Request) -> HTMLResponse:
    portal = portal_of(request)
    t = translator(request)
    try:
        account = await limited(
            portal, ACTIVATE_LIMIT, request, portal.account_settings.confirm_email_change, token,
            actor=actor(request, "web"),
        )  # fmt: skip
    except RefusedError as error:
        return render(
            request, "account_email.html", title=_text(t, "email_confirm_title"), x=_texts(t),
            token=token, error=error.message(t.language), account=None,
            status_code=status_for(error),
        )  # fmt: skip
    return render(
        request, "account_email.html", title=_text(t, "email_changed"), x=_texts(t),
        token=token, error=None, account=account,
    )  # fmt: skip


# -- 忘記密碼 ----------------------------------------------------------------------------------


@router.get("/password/forgot", response_class=HTMLResponse)
async def forgot_page(request: Request) -> HTMLResponse:
    return _forgot_page(request, account=request.query_params.get("account", "")[:256])


def _forgot_page(
    request: Request,
    *,
    account: str = "",
    link_sent: bool = False,
    link_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    portal = portal_of(request)
    t = translator(request)
    messages = t.script_messages()
    messages.update({key: _text(t, key) for key in ("reset_done",)})
    return render(
        request,
        "password_forgot.html",
        title=t("forgot_password"),
        status_code=status_code,
        body_data={"agent-url": portal.settings.agent_url},
        script_data={"messages": messages},
        x=_texts(t),
        account=account,
        by_email=portal.settings.email_password_reset,
        mobile_id_enabled=portal.mobile_id_enabled,
        mobile_push_enabled=portal.mobile_push_enabled,
        link_sent=link_sent,
        link_error=link_error,
    )


@router.post("/password/forgot/email", response_class=HTMLResponse)
async def forgot_by_email(request: Request) -> HTMLResponse:
    portal = portal_of(request)
    values = await form_values(request)
    account = values.get("account", "")[:256]
    try:
        await limited(
            portal, PASSWORD_RESET_LIMIT, request, portal.password_resets.request_link, account,
            actor=actor(request, "web"),
        )  # fmt: skip
    except RefusedError as error:
        message = error.message(translator(request).language)
        return _forgot_page(
            request, account=account, link_error=message, status_code=status_for(error)
        )
    return _forgot_page(request, account=account, link_sent=True)


@router.get("/password/reset/{token}", response_class=HTMLResponse)
async def reset_link_page(token: str, request: Request) -> HTMLResponse:
    return _reset_link_page(request, token)


@router.post("/password/reset/{token}", response_class=HTMLResponse)
async def reset_with_link(token: str, request: Request) -> HTMLResponse:
    portal = portal_of(request)
    values = await form_values(request)
    try:
        done = await limited(
            portal, PASSWORD_RESET_LIMIT, request, portal.password_resets.reset_with_link, token,
            answers={k: values.get(k, "") for k in ("password", "password_confirm")},
            actor=actor(request, "web"),
        )  # fmt: skip
    except RefusedError as error:
        t = translator(request)
        errors = errors_by_field(error, t.language, PASSWORD_FIELDS, other="token")
        return _reset_link_page(request, token, errors=errors, status_code=status_for(error))
    return _reset_link_page(request, token, account=done.account)


def _reset_link_page(
    request: Request,
    token: str,
    *,
    errors: dict[str, str] | None = None,
    account: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    t = translator(request)
    return render(
        request, "password_reset_link.html", title=_text(t, "link_title"), x=_texts(t),
        token=token, errors=errors or {}, account=account, status_code=status_code,
    )  # fmt: skip


@router.post("/password/forgot", response_model=None)
async def forgot_fallback() -> Response:
    """The form without JavaScript: the card needs the page's script; show it again."""
    return _see_other("/password/forgot")


__all__ = ["router"]
