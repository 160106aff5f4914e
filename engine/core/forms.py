"""The standard forms, with exactly the field names of DESIGN.md §3 (field vocabulary).

Applicant-type plugins take these as their ``basic_data`` / ``enterprise_info`` models and the
customs-certificate usage types as their ``form``; a plugin needing more fields subclasses one.

Field order is the order the form shows and the order errors are reported in. Pydantic puts a
base class's fields first, so the password pair is mixed in *before* the other fields' class
(``class PersonBasicData(PasswordFields, _PersonFields)``) to keep it at the end of the form.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from engine._errors import ErrorCode, message_for
from engine.core.fields import (
    Address,
    BirthDate,
    CustomsOffice,
    Email,
    FieldKind,
    Form,
    Name,
    NationalId,
    Oid,
    Password,
    Phone,
    SpecialistCode,
    SubCard,
    Ubn,
    text_validator,
)
from engine.core.identifiers import broker_key

__all__ = [
    "BrokerSpecialistForm",
    "CompanyCustomsForm",
    "CompanyInfo",
    "CompanyName",
    "EnterpriseBasicData",
    "OidBasicData",
    "OrganizationInfo",
    "PasswordFields",
    "PersonBasicData",
]

CompanyName = Annotated[str, FieldKind("name"), text_validator(200)]


class PasswordFields(Form):
    """密碼 and 確認密碼: the password rule, and ``password_mismatch`` on ``password_confirm``.

    The confirmation is compared only when the password itself passed the rule, so a weak
    password yields one error, not two.
    """

    password: Password
    password_confirm: Annotated[SecretStr, FieldKind("password_confirm")]  # compared as typed

    @field_validator("password_confirm")
    @classmethod
    def _confirmed(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        password = info.data.get("password")
        if isinstance(password, SecretStr) and (
            password.get_secret_value() != value.get_secret_value()
        ):
            raise PydanticCustomError(
                ErrorCode.PASSWORD_MISMATCH.value,
                message_for(ErrorCode.PASSWORD_MISMATCH, "en"),
                {"field": "password_confirm"},
            )
        return value


# --- 基本資料 (basic_data) -------------------------------------------------------------------


class _PersonFields(Form):
    email: Email
    contact_name: Name
    national_id: NationalId
    birth_date: BirthDate
    phone: Phone
    address: Address


class PersonBasicData(PasswordFields, _PersonFields):
    """個人 基本資料: the account is the e-mail address."""


class _EnterpriseFields(Form):
    email: Email
    contact_name: Name
    ubn: Ubn
    sub_card: SubCard | None = None
    phone: Phone
    address: Address


class EnterpriseBasicData(PasswordFields, _EnterpriseFields):
    """企業 基本資料: the account is the UBN, or UBN + 附卡編號 when ``sub_card`` is given."""


class _OidFields(Form):
    email: Email
    contact_name: Name
    oid: Oid
    phone: Phone
    address: Address


class OidBasicData(PasswordFields, _OidFields):
    """組織團體 / 政府機關 基本資料: the account is the OID."""


# --- 企業資料 (enterprise_info) --------------------------------------------------------------


class CompanyInfo(Form):
    """企業資料: the company's name."""

    company_name: CompanyName


class OrganizationInfo(CompanyInfo):
    """組織團體 企業資料: name and UBN."""

    ubn: Ubn


# --- 通關憑證註冊 forms (one per usage type) --------------------------------------------------


class BrokerSpecialistForm(Form):
    """報關專責人員: the query key is 大關別 + 專責人員代碼 (:attr:`query_key`)."""

    national_id: NationalId
    contact_name: Name
    customs_office: CustomsOffice
    specialist_code: SpecialistCode

    @property
    def query_key(self) -> str:
        """``AA`` + ``00001`` → ``A00001``."""
        return broker_key(self.customs_office, self.specialist_code)


class CompanyCustomsForm(Form):
    """Company usage types (一般企業/報關承攬業, 船公司, ...): keyed by the UBN."""

    ubn: Ubn
