"""swreg: smart-card certificate account registration (CPT Single Window style).

This module is the public API. Plugins (``plugins/*``), readers (``readers/*``) and third-party
packages use only what it exports, plus :mod:`engine.hookspecs`. Implementation modules are
private (``engine._name``). Nothing here does I/O at import time: call :func:`bootstrap`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._clock import Clock, FixedClock, SystemClock
from ._errors import (
    CardError,
    CertificateError,
    ChallengeError,
    DefinitionError,
    EnvironmentProblem,
    ErrorCode,
    FormError,
    RefusedError,
    SwregError,
    UsageError,
    WorkflowError,
    message_for,
)
from ._fields import (
    Address,
    BirthDate,
    CustomsOffice,
    Email,
    Form,
    Name,
    NationalId,
    Oid,
    Password,
    Phone,
    SpecialistCode,
    SubCard,
    Text,
    Ubn,
    validate_form,
)
from ._forms import (
    BrokerSpecialistForm,
    CompanyCustomsForm,
    CompanyInfo,
    EnterpriseBasicData,
    OidBasicData,
    OrganizationInfo,
    PasswordFields,
    PersonBasicData,
)
from ._profiles import (
    BUSINESS_CARD,
    CITIZEN_CARD,
    COMPANY_BINDING,
    GOVERNMENT_CARD,
    OID_BINDING,
    ORGANIZATION_CARD,
    PERSON_BINDING,
)
from ._types import (
    AccountRule,
    ApplicantType,
    BindingRule,
    Category,
    CertificateIdentity,
    CertificateKind,
    CertificateProfile,
    IdentityBinding,
    ImportKind,
    IssuerCA,
    Labels,
    RegistrationCompleted,
    StepActor,
    StepSpec,
    UsageType,
)
from .hookspecs import hookimpl

# The services (and SQLAlchemy, Alembic, cryptography and python-statemachine under them) load
# on first use: a plugin declaring types, or pytest loading the test kit, needs none of them.
_LAZY: dict[str, tuple[str, ...]] = {
    "._accounts": ("AccountService",),
    "._bootstrap": ("App", "bootstrap"),
    "._card_check": ("CardResponse", "Challenge", "challenge_payload"),
    "._enrol": ("SigningCard", "register_with_card"),
    "._login": ("LoginResult", "LoginService", "SessionView"),
    "._mail": (
        "Mailer",
        "NullMailer",
        "OutboxMailer",
        "SmtpMailer",
        "activation_message",
        "make_mailer",
    ),
    "._plugins": ("Catalog", "make_plugin_manager"),
    "._ratelimit": ("RateLimiter",),
    "._registration": ("RegistrationService", "RegistrationView"),
    "._settings": ("Settings",),
    "._workflow": ("Event", "Step", "WorkflowDefinition", "load_definition"),
}
_SOURCE = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    from ._accounts import AccountService
    from ._bootstrap import App, bootstrap
    from ._card_check import CardResponse, Challenge, challenge_payload
    from ._enrol import SigningCard, register_with_card
    from ._login import LoginResult, LoginService, SessionView
    from ._mail import Mailer, NullMailer, OutboxMailer, SmtpMailer, activation_message, make_mailer
    from ._plugins import Catalog, make_plugin_manager
    from ._ratelimit import RateLimiter
    from ._registration import RegistrationService, RegistrationView
    from ._settings import Settings
    from ._workflow import Event, Step, WorkflowDefinition, load_definition


def __getattr__(name: str) -> Any:
    module = _SOURCE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BUSINESS_CARD",
    "CITIZEN_CARD",
    "COMPANY_BINDING",
    "GOVERNMENT_CARD",
    "OID_BINDING",
    "ORGANIZATION_CARD",
    "PERSON_BINDING",
    "AccountRule",
    "AccountService",
    "Address",
    "App",
    "ApplicantType",
    "BindingRule",
    "BirthDate",
    "BrokerSpecialistForm",
    "CardError",
    "CardResponse",
    "Catalog",
    "Category",
    "CertificateError",
    "CertificateIdentity",
    "CertificateKind",
    "CertificateProfile",
    "Challenge",
    "ChallengeError",
    "Clock",
    "CompanyCustomsForm",
    "CompanyInfo",
    "CustomsOffice",
    "DefinitionError",
    "Email",
    "EnterpriseBasicData",
    "EnvironmentProblem",
    "ErrorCode",
    "Event",
    "FixedClock",
    "Form",
    "FormError",
    "IdentityBinding",
    "ImportKind",
    "IssuerCA",
    "Labels",
    "LoginResult",
    "LoginService",
    "Mailer",
    "Name",
    "NationalId",
    "NullMailer",
    "Oid",
    "OidBasicData",
    "OrganizationInfo",
    "OutboxMailer",
    "Password",
    "PasswordFields",
    "PersonBasicData",
    "Phone",
    "RateLimiter",
    "RefusedError",
    "RegistrationCompleted",
    "RegistrationService",
    "RegistrationView",
    "SessionView",
    "Settings",
    "SigningCard",
    "SmtpMailer",
    "SpecialistCode",
    "Step",
    "StepActor",
    "StepSpec",
    "SubCard",
    "SwregError",
    "SystemClock",
    "Text",
    "Ubn",
    "UsageError",
    "UsageType",
    "WorkflowDefinition",
    "WorkflowError",
    "activation_message",
    "bootstrap",
    "challenge_payload",
    "hookimpl",
    "load_definition",
    "make_mailer",
    "make_plugin_manager",
    "message_for",
    "register_with_card",
    "validate_form",
]
