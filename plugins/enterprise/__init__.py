"""企業 attributes registered with a 工商憑證 (MOEACA), and the companies' 通關憑證 usage types.

The account is the 統一編號, or 統一編號 + 附卡編號 when the company's account exists already and
another card of it registers. Shipping, warehouse and bonded-transport operators may ask for the
IoT permission (申請物聯網權限) of the 物聯網全時監控 platform.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine import (
    BUSINESS_CARD,
    COMPANY_BINDING,
    AccountRule,
    ApplicantType,
    Category,
    CertificateKind,
    CompanyCustomsForm,
    CompanyInfo,
    EnterpriseBasicData,
    ImportKind,
    Labels,
    UsageType,
    hookimpl,
)

# (code, zh-TW, English, order, IoT permission allowed) in the order of the seed manual.
_ATTRIBUTES = (
    ("enterprise.general", "一般企業或組織團體", "General enterprise or organisation", 10, False),
    ("enterprise.express", "快遞", "Express carrier", 30, False),
    ("enterprise.shipping", "船公司/代理業", "Shipping company or agent", 40, True),
    ("enterprise.warehouse", "倉儲業", "Warehouse operator", 50, True),
    ("enterprise.forwarder", "承攬業", "Freight forwarder", 60, False),
    (
        "enterprise.offshore_duty_free",
        "離島免稅購物商店",
        "Offshore-island duty-free shop",
        70,
        False,
    ),
    ("enterprise.duty_free", "免稅商店", "Duty-free shop", 80, False),
    (
        "enterprise.bonded_transport",
        "運輸業(保稅運貨工具業者)",
        "Bonded transport operator",
        90,
        True,
    ),
    ("enterprise.equipment_supplier", "設備供應商", "Equipment supplier", 100, False),
)

ENTERPRISE_TYPES = tuple(
    ApplicantType(
        code=code,
        category=Category.ENTERPRISE,
        labels=Labels(zh, en),
        basic_data=EnterpriseBasicData,
        enterprise_info=CompanyInfo,
        account=AccountRule("ubn", suffix_field="sub_card"),
        login=BUSINESS_CARD,
        binding=COMPANY_BINDING,
        iot_allowed=iot,
        order=order,
    )
    for code, zh, en, order, iot in _ATTRIBUTES
)

_CARD_OR_FILE = frozenset(
    {
        (ImportKind.IC_CARD, CertificateKind.BUSINESS),
        (ImportKind.NON_IC, CertificateKind.BUSINESS),
        (ImportKind.NON_IC, CertificateKind.CUSTOMS),
    }
)

# 憑證使用類型 of companies (通關憑證註冊), in the order of the seed manual.
_USAGES = (
    ("general_forwarder", "一般企業/報關承攬業", "General enterprise or customs forwarder", 20),
    ("shipping", "船公司/代理業", "Shipping company or agent", 30),
    ("warehouse", "倉儲業", "Warehouse operator", 40),
    ("inspection", "報驗業", "Inspection agent", 50),
    (
        "offshore_duty_free_system",
        "離島免稅購物商店系統",
        "Offshore-island duty-free shop system",
        60,
    ),
    ("duty_free", "免稅商店", "Duty-free shop", 70),
    ("airline", "航空公司", "Airline", 80),
)

USAGE_TYPES = tuple(
    UsageType(
        code=code,
        labels=Labels(zh, en),
        form=CompanyCustomsForm,
        imports=_CARD_OR_FILE,
        query_key="ubn",
        order=order,
        default=code == "general_forwarder",  # the page shows it first (the broker's is 10)
    )
    for code, zh, en, order in _USAGES
)


@hookimpl
def swreg_applicant_types() -> Sequence[ApplicantType]:
    return list(ENTERPRISE_TYPES)


@hookimpl
def swreg_usage_types() -> Sequence[UsageType]:
    return list(USAGE_TYPES)
