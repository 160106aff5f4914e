"""報關: the customs-broker specialist (個人), the customs-broker company (企業) and the
通關憑證 usage type 報關專責人員, whose 通關專屬個人憑證 is looked up by 大關別 + 專責人員代碼.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine import (
    BUSINESS_CARD,
    CITIZEN_CARD,
    COMPANY_BINDING,
    PERSON_BINDING,
    AccountRule,
    ApplicantType,
    BrokerSpecialistForm,
    Category,
    CertificateKind,
    CompanyInfo,
    EnterpriseBasicData,
    ImportKind,
    Labels,
    PersonBasicData,
    UsageType,
    hookimpl,
)

BROKER_SPECIALIST = ApplicantType(
    code="person.customs_broker",
    category=Category.PERSON,
    labels=Labels("報關專責人員", "Customs broker specialist"),
    basic_data=PersonBasicData,
    account=AccountRule("email"),
    login=CITIZEN_CARD,
    binding=PERSON_BINDING,
    order=20,
)

BROKER_COMPANY = ApplicantType(
    code="enterprise.customs_broker",
    category=Category.ENTERPRISE,
    labels=Labels("報關業", "Customs broker"),
    basic_data=EnterpriseBasicData,
    enterprise_info=CompanyInfo,
    account=AccountRule("ubn", suffix_field="sub_card"),
    login=BUSINESS_CARD,
    binding=COMPANY_BINDING,
    order=20,
)

SPECIALIST_CERTIFICATE = UsageType(
    code="broker_specialist",
    labels=Labels("報關專責人員", "Customs broker specialist"),
    form=BrokerSpecialistForm,
    imports=frozenset({(ImportKind.NON_IC, CertificateKind.CUSTOMS)}),
    query_key="broker_key",
    order=10,
    field_labels={"contact_name": Labels("專責人員姓名", "Specialist name")},
    owner_field="national_id",
    owner_types=frozenset({BROKER_SPECIALIST.code}),
)


@hookimpl
def swreg_applicant_types() -> Sequence[ApplicantType]:
    return [BROKER_SPECIALIST, BROKER_COMPANY]


@hookimpl
def swreg_usage_types() -> Sequence[UsageType]:
    return [SPECIALIST_CERTIFICATE]
