"""The server-rendered wizard (Jinja2): 憑證註冊, 帳號啟用, 憑證登入, and their neighbours.

Pages work without JavaScript except where a card is involved (the browser needs the local card
agent or HiCOS for that). Handlers parse the form, call the services off the event loop and
render; refusals carrying a field are shown next to that field, other errors go to the portal's
error handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine._errors import ErrorCode, RefusedError, SwregError
from engine.core.declarations import ApplicantType, Category, Labels
from engine.core.fields import FieldDescription, form_fields
from engine.core.workflow import ENDINGS, Step
from engine.services.mail import TAIPEI
from engine.services.registration import RegistrationView
from engine.web._i18n import Translator, page_language
from engine.web._portal import (
    ACTIVATE_LIMIT,
    CHECK_LIMIT,
    START_LIMIT,
    STEP_LIMIT,
    Portal,
    status_for,
)
from engine.web._registration_secret import registration_secret, set_registration_cookie
from engine.web._security import (
    clear_session_cookie,
    csrf_token,
)
from engine.web._shared import (
    actor,
    errors_by_field,
    limited,
    off_loop,
    portal_of,
    session_token,
    translator,
)

TEMPLATES_DIR: Final = Path(__file__).parent / "templates"
_INPUT_TYPES: Final = {
    "password": "password",
    "password_confirm": "password",
    "birth_date": "date",
    "email": "email",
    "phone": "tel",
    "bool": "checkbox",
}
_AUTOCOMPLETE: Final = {
    "email": "email",
    "contact_name": "name",
    "phone": "tel",
    "address": "street-address",
    "birth_date": "bday",
    "password": "new-password",
    "password_confirm": "new-password",
    "company_name": "organization",
}
_FORM_FIELDS: Final = ("type", "category", "consent", "iot")
_URL: Final = re.compile(r"(https?://[^\s<>\"']+)")
_T = TypeVar("_T")


def make_templates() -> Jinja2Templates:
    """The page templates: autoescaped, and strict about undefined names."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["taipei"] = taipei_time
    return Jinja2Templates(env=environment)


def taipei_time(value: datetime, format: str = "%Y-%m-%d %H:%M") -> str:
    """A time as the pages show it: Taiwan time (the ``taipei`` template filter)."""
    return value.astimezone(TAIPEI).strftime(format)


router = APIRouter(include_in_schema=False)

# -- view values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepItem:
    id: str
    label: str
    current: bool = False
    done: bool = False


@dataclass(frozen=True, slots=True)
class FieldView:
    """One form control as the template draws it."""

    name: str
    label: str
    required: bool
    input_type: str
    value: str
    readonly: bool
    autocomplete: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TypeGroup:
    """The 屬性 radios of one 類別."""

    category: str
    label: str
    types: list[tuple[str, str]] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------


async def form_values(request: Request) -> dict[str, str]:
    """The posted form's text fields (the CSRF field left out); repeated keys keep the last.

    A field holding NUL is refused (``invalid_value``): no field may hold one and PostgreSQL
    cannot compare one (the portal middleware refuses it in urlencoded forms already).
    """
    async with request.form() as form:
        values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf"}
    if any("\x00" in value for value in values.values()):
        raise RefusedError(ErrorCode.INVALID_VALUE, detail="a NUL character")
    return values


def render(
    request: Request,
    template: str,
    *,
    title: str,
    status_code: int = 200,
    body_data: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render ``template`` with what every page needs (language, CSRF token, body data)."""
    portal = portal_of(request)
    language = page_language(request)
    data = {
        "lang": language,
        "origin": portal.origin,
        "hipki-url": portal.settings.hipki_url,
        **(body_data or {}),
    }
    response: HTMLResponse = _templates(request).TemplateResponse(
        request,
        template,
        {
            "t": Translator(language),
            "lang": language,
            "csrf": csrf_token(request),
            "path": request.url.path,
            "switch_url": _language_switch(request, Translator(language).other),
            "title": title,
            "body_data": data,
            **context,
        },
        status_code=status_code,
    )
    return response


def _language_switch(request: Request, language: str) -> str:
    """This page in the other language, keeping its query (``?key=``, ``?usage_type=``)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return f"{_local_path(request.url.path)}?{urlencode([*query, ('lang', language)])}"


def _segment(value: str) -> str:
    """``value`` as one URL path segment (the page puts the token in its form's action)."""
    return quote(value, safe="")


def _local_path(path: str) -> str:
    """``path`` as a link that stays on this site.

    A browser reads ``//evil.example/x``, ``///evil.example`` and ``/\\evil.example`` (which a
    request for ``/%2F%2Fevil.example`` or ``/\\evil.example`` makes) as links to another host.
    """
    return "/" + path.lstrip("/\\")


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _step_labels(portal: Portal, step_id: str) -> Labels:
    if step_id in Step.__members__.values():
        return Step(step_id).labels
    spec = portal.catalog.steps.get(step_id)
    return spec.labels if spec is not None else Labels(step_id, step_id)


def wizard_title(t: Translator, number: int, step: str, *, refused: bool = False) -> str:
    """A wizard page's ``<title>`` and ``<h1>``: its step, then the flow (「步驟2 憑證檢查 –
    自然人/工商憑證註冊」), led by 「錯誤 – 」 / "Error – " on a refused submit, so that each step
    and each refusal is told apart by a screen reader and in the browser's history."""
    title = f"{t('step_title', n=number, step=step)} – {t('register_title')}"
    return f"{t('error_prefix')} – {title}" if refused else title


def error_summary(
    errors: Mapping[str, str], targets: Mapping[str, str], *, other: str
) -> list[tuple[str, str]]:
    """The error summary of a refused form: (the id of the element to go to, the message) for
    each error, in the form's order; an error of a field without a target goes to ``other``."""
    return [(targets.get(field, other), message) for field, message in errors.items() if message]


def _steps(
    portal: Portal, t: Translator, path: Sequence[str], current: str | None
) -> list[StepItem]:
    position = list(path).index(current) if current is not None and current in path else -1
    return [
        StepItem(
            id=step,
            label=t.label(_step_labels(portal, step)),
            current=index == position,
            done=index < position,
        )
        for index, step in enumerate(path)
    ]


def field_view(
    description: FieldDescription,
    t: Translator,
    *,
    value: Any,
    locked: bool,
    error: str | None,
) -> FieldView:
    input_type = _INPUT_TYPES.get(description.type_name, "text")
    if input_type == "password" or value is None:
        shown = ""
    elif isinstance(value, bool):
        shown = "true" if value else ""
    else:
        shown = str(value)
    return FieldView(
        name=description.name,
        label=t.field(description.name),
        required=description.required,
        input_type=input_type,
        value=shown,
        readonly=locked,
        autocomplete=_AUTOCOMPLETE.get(description.name, "off"),
        error=error,
    )


# -- home, privacy ----------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    t = translator(request)
    return render(request, "home.html", title=t("home"))


@router.get("/privacy", response_class=HTMLResponse)
async def privacy(request: Request) -> HTMLResponse:
    t = translator(request)
    return render(request, "privacy.html", title=t("privacy"))


@router.get("/accessibility", response_class=HTMLResponse)
async def accessibility(request: Request) -> HTMLResponse:
    """無障礙聲明: the standard followed, how it is tested, known limits, whom to contact."""
    t = translator(request)
    return render(request, "accessibility.html", title=t("accessibility"))


# 憑證更換作業 (/renewal) is in _pages_customs, with the other card-signed pages.


# -- step 1: 申請類別 ----------------------------------------------------------------------------


def _category_page(
    request: Request,
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    portal = portal_of(request)
    t = translator(request)
    applicants = list(portal.catalog.applicant_types.values())
    groups = {c.value: TypeGroup(c.value, t.label(c.labels)) for c in Category}
    for applicant in applicants:
        groups[applicant.category.value].types.append((applicant.code, t.label(applicant.labels)))
    values = values or {}
    # The first type (一般個人) is preselected, as in the manual; a refused post keeps its choice.
    shown = portal.catalog.applicant_types.get(values.get("type", "")) or applicants[0]
    category = values.get("category") or shown.category.value
    workflow = portal.workflow
    paths = {
        a.code: [t.label(_step_labels(portal, s)) for s in workflow.path_for(a)] for a in applicants
    }
    iot_types = t("list_separator").join(t.label(a.labels) for a in applicants if a.iot_allowed)
    return render(
        request,
        "register_category.html",
        title=wizard_title(t, 1, t.label(Step.CATEGORY.labels), refused=bool(errors)),
        status_code=status_code,
        steps=_steps(portal, t, workflow.path_for(shown), Step.CATEGORY.value),
        step_number=1,
        groups=list(groups.values()),
        chosen_type=values.get("type") or shown.code,
        chosen_category=category,
        consent=values.get("consent") is not None,
        iot=values.get("iot") is not None,
        iot_types=iot_types,
        errors=errors or {},
        summary=error_summary(
            errors or {},
            {"type": f"type-{shown.code.replace('.', '-')}", "iot": "iot", "consent": "consent"},
            other="category-form",
        ),
        script_data={"paths": paths},
    )


@router.get("/register", response_class=HTMLResponse)
async def register_start_page(request: Request) -> HTMLResponse:
    return _category_page(request)


@router.post("/register", response_model=None)
async def register_start(request: Request) -> Response:
    portal = portal_of(request)
    t = translator(request)
    values = await form_values(request)
    type_code = values.get("type", "")
    try:
        applicant = portal.catalog.applicant(type_code)
        category = values.get("category")
        if category and category != applicant.category.value:
            raise RefusedError(ErrorCode.UNKNOWN_TYPE, field="type")
        view = await limited(
            portal,
            START_LIMIT,
            request,
            portal.registrations.start,
            applicant.code,
            consent=_checked(values.get("consent")),
            iot=_checked(values.get("iot")),
            actor=actor(request, "web"),
            origin=portal.origin,
        )
    except SwregError as error:
        if error.field not in _FORM_FIELDS:
            raise
        errors = errors_by_field(error, t.language, _FORM_FIELDS)
        return _category_page(request, values=values, errors=errors, status_code=status_for(error))
    response = _see_other(f"/register/{view.id}")
    if view.secret is not None:  # the registration answers to this browser only (§6)
        set_registration_cookie(response, view.id, view.secret, portal.settings)
    return response


def _checked(value: str | None) -> bool:
    return value is not None and value.lower() in ("on", "true", "1", "yes")


# -- steps 2 to 5 ----------------------------------------------------------------------------


@router.get("/register/{registration_id}", response_class=HTMLResponse)
async def register_step_page(registration_id: str, request: Request) -> Response:
    return _step_page(request, await _status(request, registration_id))


async def _status(request: Request, registration_id: str) -> RegistrationView:
    """The registration as this browser may see it: ``registration_not_found`` without its
    cookie, only id, state, type and masked account once it has ended."""
    return await off_loop(
        portal_of(request).registrations.status,
        registration_id,
        actor=actor(request, "web"),
        secret=registration_secret(request, registration_id),
    )


def _step_page(
    request: Request,
    view: RegistrationView,
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    check: tuple[bool, str] | None = None,
    status_code: int = 200,
) -> Response:
    portal = portal_of(request)
    t = translator(request)
    applicant = portal.catalog.applicant(view.applicant_type)
    current = None if view.state in (Step.CANCELLED, Step.EXPIRED) else view.state
    common: dict[str, Any] = {  # the title names the state: its step, 待審核, 已駁回, ...
        "title": wizard_title(t, view.step_number, t.label(view.status), refused=bool(errors)),
        "steps": _steps(portal, t, view.path, current),
        "step_number": view.step_number,
        "registration": view,
        "applicant_label": t.label(applicant.labels),
        "status_code": status_code,
    }
    if view.state == Step.CATEGORY:
        return _see_other("/register")
    if view.state == Step.CARD_CHECK:
        return render(
            request,
            "register_card.html",
            body_data={"registration-id": view.id, "agent-url": portal.settings.agent_url},
            is_person=applicant.category is Category.PERSON,
            mobile_id_enabled=portal.registrations.offers_mobile_id(applicant.code),
            mobile_push_enabled=portal.mobile_push_enabled,
            script_data={"messages": t.script_messages()},
            **common,
        )
    if view.awaiting is not None or view.state == Step.REJECTED:  # 待審核, 已駁回
        return render(request, "register_review.html", **common)
    if view.state == Step.COMPLETED:
        return render(request, "register_completed.html", **common)
    if view.state in ENDINGS:
        return render(request, "register_ended.html", **common)
    form = portal.registrations.step_form(view)
    if form is None:
        raise RefusedError(ErrorCode.INVALID_TRANSITION, detail=view.state)
    fields = _fields(form, view, t, values or {}, errors or {})
    return render(
        request,
        "register_form.html",
        form_fields=fields,
        errors=errors or {},
        summary=error_summary(
            errors or {}, {f.name: f"f-{f.name}" for f in fields}, other="error-form"
        ),
        account=_account_widget(applicant, form, view),
        check=check,
        intro_key=f"step_intro_{view.state}"
        if view.state in (Step.BASIC_DATA, Step.ENTERPRISE_INFO)
        else "step_intro_other",
        step_label=t.label(_step_labels(portal, view.state)),
        **common,
    )


def _fields(
    form: type[BaseModel],
    view: RegistrationView,
    t: Translator,
    values: Mapping[str, str],
    errors: Mapping[str, str],
) -> list[FieldView]:
    return [
        field_view(
            description,
            t,
            value=values.get(description.name, view.data.get(description.name)),
            locked=description.name in view.locked,
            error=errors.get(description.name),
        )
        for description in form_fields(form)
    ]


@dataclass(frozen=True, slots=True)
class AccountWidget:
    """帳號 and 檢核是否存在: the account rule as data for the page (and its script)."""

    value: str
    field: str
    suffix_field: str
    separator: str
    check_after: str | None  # the field the 檢核是否存在 button follows, when it is on this form


def _account_widget(
    applicant: ApplicantType, form: type[BaseModel], view: RegistrationView
) -> AccountWidget:
    rule = applicant.account
    names = list(form.model_fields)
    present = [n for n in (rule.field, rule.suffix_field) if n and n in names]
    return AccountWidget(
        value=view.account or "",
        field=rule.field,
        suffix_field=rule.suffix_field or "",
        separator=rule.separator,
        check_after=present[-1] if rule.field in names else None,
    )


@router.post("/register/{registration_id}", response_model=None)
async def register_step(registration_id: str, request: Request) -> Response:
    portal = portal_of(request)
    t = translator(request)
    values = await form_values(request)
    view = await _status(request, registration_id)
    form = portal.registrations.step_form(view) if view.state not in ENDINGS else None
    if form is None:  # the card check runs in the page's script; anything else: show the step
        return _see_other(f"/register/{registration_id}")
    try:
        await limited(
            portal,
            STEP_LIMIT,
            request,
            portal.registrations.submit,
            registration_id,
            values,
            actor=actor(request, "web"),
            secret=registration_secret(request, registration_id),
        )
    except SwregError as error:
        if error.code in (ErrorCode.REGISTRATION_EXPIRED, ErrorCode.INVALID_TRANSITION):
            return _see_other(f"/register/{registration_id}")
        if not isinstance(error, RefusedError) or error.code == ErrorCode.RATE_LIMITED:
            raise
        errors = errors_by_field(error, t.language, list(form.model_fields))
        return _step_page(
            request, view, values=values, errors=errors, status_code=status_for(error)
        )
    return _see_other(f"/register/{registration_id}")


@router.post("/register/{registration_id}/check-account", response_model=None)
async def register_check_account(registration_id: str, request: Request) -> Response:
    """檢核是否存在 without JavaScript: the account the typed values name, free or taken."""
    portal = portal_of(request)
    t = translator(request)
    values = await form_values(request)
    view = await _status(request, registration_id)
    form = portal.registrations.step_form(view) if view.state not in ENDINGS else None
    if form is None:
        return _see_other(f"/register/{registration_id}")
    rule = portal.catalog.applicant(view.applicant_type).account
    name = rule.name({**view.data, **values})
    if name is None:
        error = t.error(ErrorCode.FIELD_REQUIRED)
        return _step_page(request, view, values=values, errors={rule.field: error}, status_code=422)
    free = await limited(portal, CHECK_LIMIT, request, portal.registrations.check_account, name)
    message = t("account_available") if free else t.error(ErrorCode.ACCOUNT_EXISTS)
    return _step_page(request, view, values=values, check=(free, message))


@router.post("/register/{registration_id}/back", response_model=None)
async def register_back(registration_id: str, request: Request) -> Response:
    portal = portal_of(request)
    await off_loop(
        portal.registrations.back,
        registration_id,
        actor=actor(request, "web"),
        secret=registration_secret(request, registration_id),
    )
    return _see_other(f"/register/{registration_id}")


@router.post("/register/{registration_id}/cancel", response_model=None)
async def register_cancel(registration_id: str, request: Request) -> Response:
    portal = portal_of(request)
    await off_loop(
        portal.registrations.cancel,
        registration_id,
        actor=actor(request, "web"),
        secret=registration_secret(request, registration_id),
    )
    return _see_other(f"/register/{registration_id}")


# -- 帳號啟用 --------------------------------------------------------------------------------------


@router.get("/activate/{token}", response_class=HTMLResponse)
async def activate_page(token: str, request: Request) -> HTMLResponse:
    t = translator(request)
    return render(
        request, "activate.html", title=t("activation"), token=_segment(token), error=None
    )


@router.post("/activate/{token}", response_class=HTMLResponse)
async def activate(token: str, request: Request) -> HTMLResponse:
    portal = portal_of(request)
    t = translator(request)
    try:
        account = await limited(
            portal,
            ACTIVATE_LIMIT,
            request,
            portal.accounts.activate,
            token,
            actor=actor(request, "web"),
        )
    except RefusedError as error:
        return render(
            request,
            "activate.html",
            title=t("activation"),
            token=_segment(token),
            error=error.message(t.language),
            status_code=status_for(error),
        )
    return render(request, "activated.html", title=t("activated"), account=account)


# -- 憑證登入 ----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    portal = portal_of(request)
    t = translator(request)
    return render(
        request,
        "login.html",
        title=t("login"),
        body_data={"agent-url": portal.settings.agent_url},
        mobile_id_enabled=portal.mobile_id_enabled,
        mobile_push_enabled=portal.mobile_push_enabled,
        script_data={"messages": t.script_messages()},
    )


@router.post("/login", response_model=None)
async def login_fallback() -> Response:
    """The login form without JavaScript: the card needs the page's script; show it again."""
    return _see_other("/login")


@router.post("/logout", response_model=None)
async def logout(request: Request) -> Response:
    portal = portal_of(request)
    token = session_token(request)
    if token:
        await off_loop(portal.logins.logout, token, actor=actor(request, "web"))
    response = _see_other("/")
    clear_session_cookie(response, portal.settings)
    return response


# -- demo outbox -------------------------------------------------------------------------------


@router.get("/demo/outbox", response_class=HTMLResponse)
async def demo_outbox(request: Request) -> HTMLResponse:
    portal = portal_of(request)
    outbox = portal.outbox()
    if outbox is None:
        raise HTTPException(404)
    t = translator(request)
    mails = []
    for message in await off_loop(outbox.messages):
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
        mails.append(
            {
                "to": message.get("To", ""),
                "subject": message.get("Subject", ""),
                "body": linkify(text),
            }
        )
    return render(request, "outbox.html", title=t("outbox"), mails=mails)


def linkify(text: str) -> Markup:
    """Escaped text whose http(s) URLs are links."""
    parts = _URL.split(text)
    html = [
        Markup('<a href="{0}">{0}</a>').format(part) if index % 2 else escape(part)
        for index, part in enumerate(parts)
    ]
    return Markup("").join(html)


# -- errors --------------------------------------------------------------------------------------


def error_page(request: Request, messages: Sequence[str], status_code: int) -> HTMLResponse:
    """The page shown for an error that has no field to stand next to."""
    t = translator(request)
    return render(
        request,
        "error.html",
        title=t("error_title"),
        messages=list(messages),
        status_code=status_code,
    )


__all__ = ["error_page", "linkify", "make_templates", "router"]
