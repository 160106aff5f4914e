"""組織團體 (XCA card) and 政府機關 (GCA card): the account is the organisation's OID.

Both take over ``enterprise.general``: a user who chose 一般企業或組織團體 and inserted an XCA or
GCA card continues as 組織團體 or 政府機關. 組織團體 also gives a 統一編號 at 企業資訊, for the
tax-bill look-ups of 稅規費繳納系統.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine import (
    GOVERNMENT_CARD,
    OID_BINDING,
    ORGANIZATION_CARD,
    AccountRule,
    ApplicantType,
    Category,
    CompanyInfo,
    Labels,
    OidBasicData,
    OrganizationInfo,
    hookimpl,
)

ORGANIZATION = ApplicantType(
    code="enterprise.organization",
    category=Category.ENTERPRISE,
    labels=Labels("組織團體", "Organisation"),
    basic_data=OidBasicData,
    enterprise_info=OrganizationInfo,
    account=AccountRule("oid"),
    login=ORGANIZATION_CARD,
    binding=OID_BINDING,
    takes_over=frozenset({"enterprise.general"}),
    order=110,
)

GOVERNMENT = ApplicantType(
    code="enterprise.government",
    category=Category.ENTERPRISE,
    labels=Labels("政府機關", "Government agency"),
    basic_data=OidBasicData,
    enterprise_info=CompanyInfo,
    account=AccountRule("oid"),
    login=GOVERNMENT_CARD,
    binding=OID_BINDING,
    takes_over=frozenset({"enterprise.general"}),
    order=120,
)


@hookimpl
def swreg_applicant_types() -> Sequence[ApplicantType]:
    return [ORGANIZATION, GOVERNMENT]
