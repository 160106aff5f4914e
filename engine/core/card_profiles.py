"""Standard login-certificate profiles and identity bindings of the GPKI cards (DOMAIN.md §3).

Plugins compose their applicant types from these; a ministry adding a type reuses them.
"""

from __future__ import annotations

from engine.core.declarations import BindingRule, CertificateProfile, IdentityBinding, IssuerCA

CITIZEN_CARD = CertificateProfile.of(IssuerCA.MOICA)
"""自然人憑證 or 居留證 (MOICA)."""
BUSINESS_CARD = CertificateProfile.of(IssuerCA.MOEACA)
"""工商憑證 (MOEACA), primary or secondary card."""
ORGANIZATION_CARD = CertificateProfile.of(IssuerCA.XCA)
"""組織團體憑證 (XCA)."""
GOVERNMENT_CARD = CertificateProfile.of(IssuerCA.GCA)
"""政府憑證 (GCA)."""

PERSON_BINDING = IdentityBinding(
    (
        BindingRule("contact_name", "name"),
        BindingRule("national_id", "id_last4", compare="last4"),
    )
)
"""MOICA: the CN is the name typed in, SDA .51 the last four digits of the ID typed in."""
COMPANY_BINDING = IdentityBinding((BindingRule("ubn", "ubn"),))
"""MOEACA: the UBN in the certificate is the UBN typed in."""
OID_BINDING = IdentityBinding((BindingRule("oid", "oid"),))
"""XCA / GCA: the organisation OID (SDA .102) is the OID typed in."""
