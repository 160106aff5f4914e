"""swreg-airline: the 企業 / 航空公司 (airline) applicant type, and an officer approval step.

A third-party swreg plugin, registered through the ``swreg`` entry-point group (see
``pyproject.toml``) and written against swreg's public API only: what ``engine`` exports, plus
``engine.hookspecs``. It contributes

- the applicant type ``enterprise.airline`` (航空公司): a company that logs in with its 工商憑證
  (MOEACA), bound to the card by the 統一編號 like the other enterprise types, and enters its
  IATA airline designator (``iata_code``: two letters or digits, not two digits, e.g. ``CI``,
  ``BR``, ``5X``). Its account is the UBN, a hyphen and the designator (``04595257-CI``): a
  company that already holds its UBN account (as a trader, say) registers its airline
  operations separately, one account per designator, and the hyphen keeps these names apart
  from the UBN + 附卡編號 accounts of secondary cards;
- the workflow step ``approval`` (審核), at which a customs officer, not the applicant, acts.
  ``workflow.toml`` in this package places it after 企業資訊 for airlines; point
  ``SWREG_WORKFLOW`` at that file (``python -m swreg_airline`` prints its path).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from engine import (
    BUSINESS_CARD,
    COMPANY_BINDING,
    AccountRule,
    Address,
    ApplicantType,
    Category,
    CompanyInfo,
    Email,
    ErrorCode,
    Form,
    Labels,
    Name,
    PasswordFields,
    Phone,
    StepSpec,
    Ubn,
    hookimpl,
    message_for,
)

WORKFLOW_FILE = Path(__file__).with_name("workflow.toml")
"""The workflow definition that places the approval step (set ``SWREG_WORKFLOW`` to it)."""

_DESIGNATOR = re.compile(r"[A-Z0-9]{2}")


def iata_designator(value: str) -> str:
    """An IATA airline designator: NFKC-normalised, trimmed, upper-cased; two letters or digits,
    at least one a letter (two digits are never assigned: they read as a flight number).
    Refused with ``invalid_value``."""
    text = unicodedata.normalize("NFKC", value).strip().upper()
    if not _DESIGNATOR.fullmatch(text) or text.isdigit():
        raise PydanticCustomError(
            ErrorCode.INVALID_VALUE.value,
            message_for(ErrorCode.INVALID_VALUE, "en"),
            {"expected": "IATA airline designator: 2 letters or digits, e.g. CI"},
        )
    return text


IataDesignator = Annotated[str, AfterValidator(iata_designator)]


class _AirlineFields(Form):
    email: Email
    contact_name: Name
    ubn: Ubn
    iata_code: IataDesignator
    phone: Phone
    address: Address


class AirlineBasicData(PasswordFields, _AirlineFields):
    """航空公司 基本資料: the enterprise fields plus the IATA designator (no 附卡編號: each
    designator has one account). The password pair comes last, as on every form."""


AIRLINE = ApplicantType(
    code="enterprise.airline",
    category=Category.ENTERPRISE,
    labels=Labels("航空公司", "Airline"),
    basic_data=AirlineBasicData,
    enterprise_info=CompanyInfo,
    account=AccountRule("ubn", suffix_field="iata_code", separator="-"),
    login=BUSINESS_CARD,
    binding=COMPANY_BINDING,
    order=95,
)

APPROVAL = StepSpec(
    id="approval",
    labels=Labels("審核", "Approval"),
    applies_to=frozenset({"enterprise.airline"}),
    actor="officer",
)


@hookimpl
def swreg_applicant_types() -> Sequence[ApplicantType]:
    return [AIRLINE]


@hookimpl
def swreg_workflow_steps() -> Sequence[StepSpec]:
    return [APPROVAL]


__all__ = [
    "AIRLINE",
    "APPROVAL",
    "WORKFLOW_FILE",
    "AirlineBasicData",
    "IataDesignator",
    "iata_designator",
    "swreg_applicant_types",
    "swreg_workflow_steps",
]
