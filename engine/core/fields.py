"""Form field types and form validation (DESIGN.md §3 field vocabulary, §8 error codes).

Each field type is an ``Annotated`` pydantic type that normalises its input with
:func:`~engine.core.identifiers.normalize_text` and refuses it with a
:class:`~pydantic_core.PydanticCustomError` whose *type is the swreg* :class:`ErrorCode`, so the
code survives pydantic untouched. :func:`validate_form` runs a :class:`Form` model and turns a
pydantic ``ValidationError`` into one :class:`FormError` with one error per failing field, in
the order the fields are declared.

Two values come from context variables, so that services (and tests) can set them per request
without globals: the date of "today" (:func:`using_today`; birth dates may not be after it) and
the 關別 table (:func:`using_customs_offices`).
"""

from __future__ import annotations

import types
import typing
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from engine._errors import ErrorCode, FormError, RefusedError, message_for
from engine.core.identifiers import (
    CustomsOffices,
    ascii_upper,
    is_valid_email,
    is_valid_national_id,
    is_valid_oid,
    is_valid_phone,
    is_valid_specialist_code,
    is_valid_sub_card,
    is_valid_ubn,
    normalize_email,
    normalize_text,
    parse_birth_date,
    password_problems,
)

__all__ = [
    "MAX_INPUT_BYTES",
    "Address",
    "BirthDate",
    "CustomsOffice",
    "Email",
    "FieldDescription",
    "FieldKind",
    "Form",
    "Name",
    "NationalId",
    "Oid",
    "Password",
    "Phone",
    "SpecialistCode",
    "SubCard",
    "Text",
    "Ubn",
    "customs_offices",
    "form_fields",
    "text_validator",
    "today",
    "using_customs_offices",
    "using_today",
    "validate_form",
]

MAX_INPUT_BYTES = 4096  # larger values are refused with field_too_long before any parsing

# --- seams: today and the customs-office table -------------------------------------------------

_TODAY: ContextVar[date | None] = ContextVar("swreg_today", default=None)
_CUSTOMS_OFFICES: ContextVar[CustomsOffices | None] = ContextVar(
    "swreg_customs_offices", default=None
)
_DEFAULT_OFFICES = CustomsOffices.default()


def today() -> date:
    """The date birth dates are checked against: the one set by :func:`using_today`, else the
    system's local date."""
    return _TODAY.get() or date.today()


def customs_offices() -> CustomsOffices:
    """The 關別 table :data:`CustomsOffice` fields are checked against (default: built-in)."""
    return _CUSTOMS_OFFICES.get() or _DEFAULT_OFFICES


@contextmanager
def using_today(day: date) -> Iterator[date]:
    """Validate forms as if today were ``day`` (services pass the clock's date in Taipei)."""
    token = _TODAY.set(day)
    try:
        yield day
    finally:
        _TODAY.reset(token)


@contextmanager
def using_customs_offices(offices: CustomsOffices) -> Iterator[CustomsOffices]:
    """Validate :data:`CustomsOffice` fields against ``offices`` inside the block."""
    token = _CUSTOMS_OFFICES.set(offices)
    try:
        yield offices
    finally:
        _CUSTOMS_OFFICES.reset(token)


# --- building blocks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldKind:
    """``Annotated`` marker naming a field type for renderers (``email``, ``national_id``, ...)."""

    name: str


def _refuse(code: ErrorCode, **context: Any) -> PydanticCustomError:
    return PydanticCustomError(code.value, message_for(code, "en"), context or None)


def _oversized(value: object) -> bool:
    if not isinstance(value, str):
        return False
    return len(value) > MAX_INPUT_BYTES or len(value.encode("utf-8", "replace")) > MAX_INPUT_BYTES


def _unencodable(value: object) -> bool:
    """A string with a lone surrogate (``"\\ud800"`` in JSON): it is not text, cannot be stored,
    hashed or shown, and is refused with ``invalid_value`` unread."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _normalized(value: str) -> str:
    """Size-guarded :func:`normalize_text`; blank input counts as missing."""
    if _oversized(value):
        raise _refuse(ErrorCode.FIELD_TOO_LONG, max_length=MAX_INPUT_BYTES)
    text = normalize_text(value)
    if not text:
        raise _refuse(ErrorCode.FIELD_REQUIRED)
    return text


def _checked(
    code: ErrorCode, ok: Callable[[str], bool], transform: Callable[[str], str] = str
) -> AfterValidator:
    """An after-validator: normalise, ``transform``, then refuse with ``code`` unless ``ok``."""

    def validate(value: str) -> str:
        text = transform(_normalized(value))
        if not ok(text):
            raise _refuse(code)
        return text

    return AfterValidator(validate)


_CONTROL = frozenset({"Cc", "Cs"})  # control characters (tab and newline too), lone surrogates


def text_validator(max_length: int) -> AfterValidator:
    """Free text of 1 to ``max_length`` characters without control characters.

    Use as ``Annotated[str, text_validator(50)]`` for a text field of another length.
    """

    def validate(value: str) -> str:
        text = _normalized(value)
        if len(text) > max_length:
            raise _refuse(ErrorCode.FIELD_TOO_LONG, max_length=max_length)
        if any(unicodedata.category(ch) in _CONTROL for ch in text):
            raise _refuse(ErrorCode.INVALID_VALUE)
        return text

    return AfterValidator(validate)


def _parse_birth_date(value: object) -> date:
    if isinstance(value, datetime) or not isinstance(value, date | str):
        raise _refuse(ErrorCode.INVALID_VALUE)
    day = today()
    if isinstance(value, str):
        parsed = parse_birth_date(_normalized(value), today=day)
    else:
        parsed = value if date(1900, 1, 1) <= value <= day else None
    if parsed is None:
        raise _refuse(ErrorCode.INVALID_BIRTH_DATE)
    return parsed


def _password(value: object) -> object:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str) or _unencodable(value):
        raise _refuse(ErrorCode.INVALID_VALUE)
    if _oversized(value):
        raise _refuse(ErrorCode.FIELD_TOO_LONG, max_length=MAX_INPUT_BYTES)
    problems = password_problems(value)  # checked as typed: never normalised (see there)
    if problems:
        raise _refuse(ErrorCode.PASSWORD_POLICY, problems=list(problems))
    return value


def _valid_office(code: str) -> bool:
    return customs_offices().is_valid(code)


# --- the field types ---------------------------------------------------------------------------

Text = Annotated[str, FieldKind("text"), text_validator(200)]
Name = Annotated[str, FieldKind("name"), text_validator(100)]
Address = Annotated[str, FieldKind("address"), text_validator(200)]
Email = Annotated[
    str, FieldKind("email"), _checked(ErrorCode.INVALID_EMAIL, is_valid_email, normalize_email)
]
NationalId = Annotated[
    str,
    FieldKind("national_id"),
    _checked(ErrorCode.INVALID_NATIONAL_ID, is_valid_national_id, ascii_upper),
]
Ubn = Annotated[str, FieldKind("ubn"), _checked(ErrorCode.INVALID_UBN, is_valid_ubn)]
Oid = Annotated[str, FieldKind("oid"), _checked(ErrorCode.INVALID_OID, is_valid_oid)]
Phone = Annotated[str, FieldKind("phone"), _checked(ErrorCode.INVALID_PHONE, is_valid_phone)]
BirthDate = Annotated[date, FieldKind("birth_date"), BeforeValidator(_parse_birth_date)]
CustomsOffice = Annotated[
    str,
    FieldKind("customs_office"),
    _checked(ErrorCode.INVALID_CUSTOMS_OFFICE, _valid_office, ascii_upper),
]
SpecialistCode = Annotated[
    str,
    FieldKind("specialist_code"),
    _checked(ErrorCode.INVALID_SPECIALIST_CODE, is_valid_specialist_code),
]
SubCard = Annotated[
    str, FieldKind("sub_card"), _checked(ErrorCode.INVALID_SUB_CARD, is_valid_sub_card, ascii_upper)
]
Password = Annotated[SecretStr, FieldKind("password"), BeforeValidator(_password)]


# --- forms -------------------------------------------------------------------------------------


def _blank(value: object) -> bool:
    return isinstance(value, str) and not _oversized(value) and not normalize_text(value)


class Form(BaseModel):
    """Base of every form: frozen, unknown keys ignored, blank strings treated as absent.

    A required field left blank is refused with ``field_required``; an optional one takes its
    default. A model validator that refuses with a :class:`PydanticCustomError` can name the
    field it concerns with a ``field`` context entry (``{"field": "password_confirm"}``).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_missing(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if not _blank(value)}
        return data


M = TypeVar("M", bound=BaseModel)

_PYDANTIC_CODES: Mapping[str, ErrorCode] = {
    "missing": ErrorCode.FIELD_REQUIRED,
    "string_too_long": ErrorCode.FIELD_TOO_LONG,
}
_OWN_CODES = frozenset(code.value for code in ErrorCode)


def validate_form(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate ``data`` with ``model``, or raise :class:`FormError` listing every bad field.

    Values over :data:`MAX_INPUT_BYTES` are refused with ``field_too_long`` unread, strings
    that are not Unicode text (lone surrogates) with ``invalid_value``. The form error holds one
    :class:`RefusedError` per field, in declaration order (form-level errors without a field
    come last).
    """
    names = list(model.model_fields)
    errors: dict[str, RefusedError] = {}
    for name in names:
        value = data.get(name)
        if _oversized(value):
            errors[name] = RefusedError(
                ErrorCode.FIELD_TOO_LONG, field=name, max_length=MAX_INPUT_BYTES
            )
        elif _unencodable(value):
            errors[name] = RefusedError(ErrorCode.INVALID_VALUE, field=name)
    try:
        form = model.model_validate({k: v for k, v in data.items() if k not in errors})
    except ValidationError as exc:
        for detail in exc.errors(include_url=False, include_input=False):
            error = _translate(detail)
            errors.setdefault(error.field or "", error)
    else:
        if not errors:
            return form
    order = {name: index for index, name in enumerate(names)}
    ranked = sorted(errors.values(), key=lambda e: order.get(e.field or "", len(order)))
    raise FormError(ranked)


def _translate(detail: ErrorDetails) -> RefusedError:
    """One pydantic error as a swreg error on its (top-level) field."""
    context = dict(detail.get("ctx") or {})
    named = context.pop("field", None)
    loc = detail["loc"]
    field = str(loc[0]) if loc else named
    kind = detail["type"]
    if kind in _OWN_CODES:
        return RefusedError(ErrorCode(kind), field=field, **context)
    return RefusedError(_PYDANTIC_CODES.get(kind, ErrorCode.INVALID_VALUE), field=field)


# --- describing forms --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """What the CLI and web need to render one field: ``type_name`` is a :class:`FieldKind`
    name (``email``, ``password``, ...) or the plain type (``str``, ``bool``)."""

    name: str
    required: bool
    type_name: str


def form_fields(model: type[BaseModel]) -> list[FieldDescription]:
    """The fields of ``model`` in declaration order."""
    return [
        FieldDescription(name, info.is_required(), _type_name(info.annotation, info.metadata))
        for name, info in model.model_fields.items()
    ]


def _type_name(annotation: Any, metadata: list[Any]) -> str:
    for item in metadata:
        if isinstance(item, FieldKind):
            return item.name
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        return _type_name(base, extra)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(parts) == 1:
            return _type_name(parts[0], [])
    return getattr(annotation, "__name__", str(annotation))
