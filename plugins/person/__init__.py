"""個人 / 一般個人: a citizen or resident with a 自然人憑證 or 居留證晶片卡 (MOICA).

The account is the e-mail address; the certificate's CN must be the name typed in and its
last-four-ID attribute the end of the 身分證字號 (or 居留證號) typed in.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine import (
    CITIZEN_CARD,
    PERSON_BINDING,
    AccountRule,
    ApplicantType,
    Category,
    Labels,
    PersonBasicData,
    hookimpl,
)

GENERAL_PERSON = ApplicantType(
    code="person.general",
    category=Category.PERSON,
    labels=Labels("一般個人", "General individual"),
    basic_data=PersonBasicData,
    account=AccountRule("email"),
    login=CITIZEN_CARD,
    binding=PERSON_BINDING,
    order=10,
)


@hookimpl
def swreg_applicant_types() -> Sequence[ApplicantType]:
    return [GENERAL_PERSON]
