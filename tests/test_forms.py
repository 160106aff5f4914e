"""Field types and the standard forms: each refusal carries the exact code on the exact field."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from engine._errors import ErrorCode, FormError, RefusedError
from engine.core.fields import (
    MAX_INPUT_BYTES,
    FieldDescription,
    Form,
    Text,
    customs_offices,
    form_fields,
    today,
    using_customs_offices,
    using_today,
    validate_form,
)
from engine.core.forms import (
    BrokerSpecialistForm,
    CompanyCustomsForm,
    CompanyInfo,
    EnterpriseBasicData,
    OidBasicData,
    OrganizationInfo,
    PersonBasicData,
)
from engine.core.identifiers import CustomsOffices

TODAY = date(2024, 6, 1)

PERSON: Mapping[str, Any] = {
    "email": "Wang@Example.COM",
    "contact_name": "王小明",
    "national_id": "A123456789",
    "birth_date": "2000-01-05",
    "phone": "02-2345-6789",
    "address": "臺北市中正區重慶南路一段122號",
    "password": "Passw0rd",
    "password_confirm": "Passw0rd",
}
ENTERPRISE: Mapping[str, Any] = {
    **{k: v for k, v in PERSON.items() if k not in ("national_id", "birth_date")},
    "ubn": "04595257",
}
OID: Mapping[str, Any] = {
    **{k: v for k, v in PERSON.items() if k not in ("national_id", "birth_date")},
    "oid": "2.16.886.101.20003.20065.21001",
}
BROKER: Mapping[str, Any] = {
    "national_id": "A123456789",
    "contact_name": "王小明",
    "customs_office": "AA",
    "specialist_code": "00001",
}


@pytest.fixture(autouse=True)
def fixed_today() -> Iterator[date]:
    with using_today(TODAY) as day:
        yield day


def refusals(model: type[BaseModel], data: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """``[(field, code)]`` of the form error ``data`` raises."""
    with pytest.raises(FormError) as caught:
        validate_form(model, data)
    return [(e.field, str(e.code)) for e in caught.value.errors]


# --- accepted forms ---------------------------------------------------------------------------


def test_person_form_normalises() -> None:
    form = validate_form(
        PersonBasicData,
        {
            **PERSON,
            "email": " Wang@Example.COM ",
            "national_id": "ａ１２３４５６７８９",  # full-width, lower case
            "birth_date": "民國89年1月5日",
            "contact_name": "  王小明\u200b ",
        },
    )
    assert form.email == "Wang@example.com"
    assert form.national_id == "A123456789"
    assert form.birth_date == date(2000, 1, 5)
    assert form.contact_name == "王小明"
    assert form.password.get_secret_value() == "Passw0rd"


def test_forms_are_frozen_and_ignore_unknown_keys() -> None:
    form = validate_form(PersonBasicData, {**PERSON, "unexpected": "x"})
    assert not hasattr(form, "unexpected")
    with pytest.raises(ValidationError):
        form.email = "other@example.com"  # type: ignore[misc]


def test_enterprise_form_sub_card_is_optional() -> None:
    assert validate_form(EnterpriseBasicData, ENTERPRISE).sub_card is None
    assert validate_form(EnterpriseBasicData, {**ENTERPRISE, "sub_card": "  "}).sub_card is None
    assert validate_form(EnterpriseBasicData, {**ENTERPRISE, "sub_card": "a1"}).sub_card == "A1"


def test_enterprise_accepts_new_mod5_ubn() -> None:
    assert validate_form(EnterpriseBasicData, {**ENTERPRISE, "ubn": "04595252"}).ubn == "04595252"


def test_oid_form() -> None:
    assert validate_form(OidBasicData, OID).oid == "2.16.886.101.20003.20065.21001"


def test_company_forms() -> None:
    assert validate_form(CompanyInfo, {"company_name": "關貿網路股份有限公司"}).company_name
    info = validate_form(OrganizationInfo, {"company_name": "某協會", "ubn": "97162640"})
    assert info.ubn == "97162640"
    assert validate_form(CompanyCustomsForm, {"ubn": "０４１７７０３６"}).ubn == "04177036"


def test_broker_form_and_query_key() -> None:
    form = validate_form(BrokerSpecialistForm, {**BROKER, "customs_office": "aa"})
    assert form.customs_office == "AA"
    assert form.query_key == "A00001"


# --- refusals, one field at a time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("email", "not-an-email", "invalid_email"),  # no @
        ("email", "", "field_required"),  # empty is missing
        ("email", "   ", "field_required"),  # whitespace only is missing
        ("contact_name", "x" * 101, "field_too_long"),  # Name is at most 100
        ("contact_name", "王\n小明", "invalid_value"),  # control character
        ("national_id", "A123456788", "invalid_national_id"),  # bad check digit
        ("national_id", "AC12345678", "invalid_national_id"),  # bad old-ARC check digit
        ("birth_date", "2024-06-02", "invalid_birth_date"),  # tomorrow
        ("birth_date", "1899-12-31", "invalid_birth_date"),  # before 1900
        ("birth_date", "2023-02-29", "invalid_birth_date"),  # no such day
        ("phone", "02-2345-678a", "invalid_phone"),  # trailing letter
        ("phone", "123", "invalid_phone"),  # too short
        ("address", "x" * 201, "field_too_long"),  # Address is at most 200
        ("password", "passw0rd", "password_policy"),  # no upper case
        ("password", "Pass0rd", "password_policy"),  # seven characters
        ("password", "Passw0rd" * 17, "password_policy"),  # 136 characters
        ("password_confirm", "Passw0rD", "password_mismatch"),  # differs in case only
        ("password_confirm", "", "field_required"),  # confirmation missing
        ("email", 12345, "invalid_value"),  # not a string
    ],
)
def test_person_form_refuses(field: str, value: object, code: str) -> None:
    assert refusals(PersonBasicData, {**PERSON, field: value}) == [(field, code)]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("ubn", "04595250", "invalid_ubn"),  # fails mod 5
        ("ubn", "00501502", "invalid_ubn"),  # S=9
        ("ubn", "22822280", "invalid_ubn"),  # S=29
        ("ubn", "1234567", "invalid_ubn"),  # seven digits
        ("sub_card", "12345", "invalid_sub_card"),  # five characters
        ("sub_card", "A-1", "invalid_sub_card"),  # punctuation
    ],
)
def test_enterprise_form_refuses(field: str, value: str, code: str) -> None:
    assert refusals(EnterpriseBasicData, {**ENTERPRISE, field: value}) == [(field, code)]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("3.1", "invalid_oid"),  # first arc above 2
        ("1.40.1", "invalid_oid"),  # second arc 40 under 1
        ("2.016", "invalid_oid"),  # leading zero
        ("", "field_required"),  # missing
    ],
)
def test_oid_form_refuses(value: str, code: str) -> None:
    assert refusals(OidBasicData, {**OID, "oid": value}) == [("oid", code)]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("customs_office", "EA", "invalid_customs_office"),  # not in the table
        ("customs_office", "A", "invalid_customs_office"),  # district letter only
        ("specialist_code", "0001", "invalid_specialist_code"),  # four digits
        ("specialist_code", "0000A", "invalid_specialist_code"),  # a letter
        ("national_id", "A123456788", "invalid_national_id"),  # bad check digit
    ],
)
def test_broker_form_refuses(field: str, value: str, code: str) -> None:
    assert refusals(BrokerSpecialistForm, {**BROKER, field: value}) == [(field, code)]


def test_company_name_is_at_most_200() -> None:
    assert validate_form(CompanyInfo, {"company_name": "公" * 200})
    assert refusals(CompanyInfo, {"company_name": "公" * 201}) == [
        ("company_name", "field_too_long")
    ]


def test_organization_info_needs_ubn() -> None:
    assert refusals(OrganizationInfo, {"company_name": "某協會"}) == [("ubn", "field_required")]


# --- several errors, password rules -----------------------------------------------------------


def test_several_errors_in_field_order() -> None:
    data = {
        "password_confirm": "different",
        "phone": "abc",
        "national_id": "A123456788",
        "email": "nope",
        "address": "",
        "contact_name": "王小明",
        "birth_date": "2999-01-01",
        "password": "Passw0rd",
    }
    assert refusals(PersonBasicData, data) == [
        ("email", "invalid_email"),
        ("national_id", "invalid_national_id"),
        ("birth_date", "invalid_birth_date"),
        ("phone", "invalid_phone"),
        ("address", "field_required"),
        ("password_confirm", "password_mismatch"),
    ]


def test_every_field_missing() -> None:
    assert refusals(EnterpriseBasicData, {}) == [
        (name, "field_required")
        for name in ("email", "contact_name", "ubn", "phone", "address", "password")
    ] + [("password_confirm", "field_required")]


def test_weak_password_is_not_also_a_mismatch() -> None:
    data = {**PERSON, "password": "weak", "password_confirm": "other"}
    assert refusals(PersonBasicData, data) == [("password", "password_policy")]


def test_password_policy_lists_the_problems() -> None:
    with pytest.raises(FormError) as caught:
        validate_form(PersonBasicData, {**PERSON, "password": "weak", "password_confirm": "weak"})
    (error,) = caught.value.errors
    assert error.details == {"problems": ["too_short", "no_digit", "no_upper"]}


def test_password_is_kept_as_typed() -> None:
    spaced = " Passw0rd "
    form = validate_form(
        PersonBasicData, {**PERSON, "password": spaced, "password_confirm": spaced}
    )
    assert form.password.get_secret_value() == spaced
    assert "Passw0rd" not in repr(form)  # secrets stay hidden
    assert refusals(PersonBasicData, {**PERSON, "password_confirm": " Passw0rd"}) == [
        ("password_confirm", "password_mismatch")
    ]


def test_full_width_password_characters_do_not_count_as_ascii() -> None:
    data = {**PERSON, "password": "ＰＡＳＳｗ０ｒｄ", "password_confirm": "ＰＡＳＳｗ０ｒｄ"}
    assert refusals(PersonBasicData, data) == [("password", "password_policy")]


# --- size limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "a" * (MAX_INPUT_BYTES + 1)),  # one byte too many
        ("address", "臺" * 1366),  # 1366 chars but 4098 UTF-8 bytes
        ("password", "Aa1" * 2000),  # passwords too
        ("national_id", "Ａ" * 100_000),  # huge full-width input, never normalised
    ],
)
def test_oversized_values_are_refused_unread(field: str, value: str) -> None:
    assert (field, "field_too_long") in refusals(PersonBasicData, {**PERSON, field: value})


def test_oversized_unknown_keys_are_ignored() -> None:
    assert validate_form(PersonBasicData, {**PERSON, "junk": "x" * 100_000})


# --- seams: today and the customs-office table --------------------------------------------------


def test_today_comes_from_the_context() -> None:
    assert today() == TODAY
    with using_today(date(2000, 1, 4)):
        assert refusals(PersonBasicData, PERSON) == [("birth_date", "invalid_birth_date")]
    assert validate_form(PersonBasicData, PERSON).birth_date == date(2000, 1, 5)


def test_customs_offices_come_from_the_context() -> None:
    table = CustomsOffices.from_mapping({"EA": ("測試關", "Test")})
    with using_customs_offices(table):
        assert customs_offices() is table
        assert validate_form(BrokerSpecialistForm, {**BROKER, "customs_office": "EA"})
        assert refusals(BrokerSpecialistForm, BROKER) == [
            ("customs_office", "invalid_customs_office")
        ]
    assert customs_offices() == CustomsOffices.default()


# --- building other forms -----------------------------------------------------------------------


class _Period(Form):
    """A form with a model-level check naming its field through the error context."""

    start: Text
    end: Text

    @model_validator(mode="after")
    def _ordered(self) -> _Period:
        if self.end < self.start:
            raise PydanticCustomError("invalid_value", "end before start", {"field": "end"})
        return self


def test_model_level_errors_name_their_field() -> None:
    assert refusals(_Period, {"start": "b", "end": "a"}) == [("end", "invalid_value")]


class _Plain(BaseModel):
    count: int
    label: str = ""


def test_foreign_pydantic_errors_become_invalid_value() -> None:
    assert refusals(_Plain, {"count": "many"}) == [("count", "invalid_value")]
    assert refusals(_Plain, {}) == [("count", "field_required")]


def test_form_error_is_a_refused_error_with_messages() -> None:
    with pytest.raises(RefusedError) as caught:
        validate_form(PersonBasicData, {**PERSON, "email": "x"})
    assert caught.value.code is ErrorCode.INVALID_EMAIL
    assert caught.value.as_dicts("en") == [
        {"field": "email", "code": "invalid_email", "message": "Invalid e-mail address"}
    ]


# --- describing forms ---------------------------------------------------------------------------


def test_form_fields_describe_each_field_in_order() -> None:
    assert form_fields(EnterpriseBasicData) == [
        FieldDescription("email", True, "email"),
        FieldDescription("contact_name", True, "name"),
        FieldDescription("ubn", True, "ubn"),
        FieldDescription("sub_card", False, "sub_card"),
        FieldDescription("phone", True, "phone"),
        FieldDescription("address", True, "address"),
        FieldDescription("password", True, "password"),
        FieldDescription("password_confirm", True, "password_confirm"),
    ]
    assert [f.name for f in form_fields(PersonBasicData)] == list(PERSON)
    assert [f.name for f in form_fields(OidBasicData)] == [
        "email",
        "contact_name",
        "oid",
        "phone",
        "address",
        "password",
        "password_confirm",
    ]
    assert [f.type_name for f in form_fields(BrokerSpecialistForm)] == [
        "national_id",
        "name",
        "customs_office",
        "specialist_code",
    ]
    assert form_fields(_Plain) == [
        FieldDescription("count", True, "int"),
        FieldDescription("label", False, "str"),
    ]


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=50)
@given(st.dictionaries(st.sampled_from(sorted(PERSON)), st.text(max_size=40)))
def test_validate_form_only_raises_form_errors(changes: dict[str, str]) -> None:
    try:
        validate_form(PersonBasicData, {**PERSON, **changes})
    except FormError as exc:
        assert all(e.field in PERSON for e in exc.errors)
        assert all(isinstance(e.code, ErrorCode) for e in exc.errors)


def test_secret_str_password_from_python_callers() -> None:
    data = {**PERSON, "password": SecretStr("Passw0rd"), "password_confirm": SecretStr("Passw0rd")}
    assert validate_form(PersonBasicData, data).password.get_secret_value() == "Passw0rd"
