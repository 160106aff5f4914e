"""The store: models, migrations, units of work, repositories and the audit log (DESIGN.md §6)."""

from ._audit import GENESIS_HASH, HASHED_FIELDS, AuditLog, AuditVerification, entry_hash
from ._database import MIGRATIONS_DIR, Database, UnitOfWork
from ._models import (
    CRL,
    Account,
    AuditEntry,
    Base,
    Certificate,
    Challenge,
    Registration,
    TrustCertificate,
    UTCDateTime,
    WorkflowDefinition,
)
from ._repositories import (
    AccountRepository,
    CertificateRepository,
    ChallengeRepository,
    CRLRepository,
    RegistrationRepository,
    TrustRepository,
    WorkflowRepository,
)

__all__ = [
    "CRL",
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "MIGRATIONS_DIR",
    "Account",
    "AccountRepository",
    "AuditEntry",
    "AuditLog",
    "AuditVerification",
    "Base",
    "CRLRepository",
    "Certificate",
    "CertificateRepository",
    "Challenge",
    "ChallengeRepository",
    "Database",
    "Registration",
    "RegistrationRepository",
    "TrustCertificate",
    "TrustRepository",
    "UTCDateTime",
    "UnitOfWork",
    "WorkflowDefinition",
    "WorkflowRepository",
    "entry_hash",
]
