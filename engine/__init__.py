"""swreg: smart-card certificate account registration (CPT Single Window style).

This module is the public API. Plugins (``plugins/*``), readers (``readers/*``) and third-party
packages use only what it exports, plus :mod:`engine.hookspecs`. Everything else is internal:
the layers ``engine.core``, ``engine.pki``, ``engine.services``, ``engine.store``, ``engine.web``
and ``engine.cli`` (README, "Layout"). Nothing here does I/O at import time: call :func:`bootstrap`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from engine._clock import Clock, FixedClock, SystemClock
from engine._errors import (
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
from engine.core.card_profiles import (
    BUSINESS_CARD,
    CITIZEN_CARD,
    COMPANY_BINDING,
    GOVERNMENT_CARD,
    OID_BINDING,
    ORGANIZATION_CARD,
    PERSON_BINDING,
)
from engine.core.declarations import (
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
from engine.core.fields import (
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
from engine.core.forms import (
    BrokerSpecialistForm,
    CompanyCustomsForm,
    CompanyInfo,
    EnterpriseBasicData,
    OidBasicData,
    OrganizationInfo,
    PasswordFields,
    PersonBasicData,
)
from engine.hookspecs import hookimpl

# The services (and SQLAlchemy, Alembic, cryptography and python-statemachine under them) load
# on first use: a plugin declaring types, or pytest loading the test kit, needs none of them.
_LAZY: dict[str, tuple[str, ...]] = {
    "engine.services.accounts": ("AccountService",),
    "engine._bootstrap": ("App", "bootstrap"),
    "engine.pki.card_response": ("CardResponse", "Challenge", "challenge_payload"),
    "engine.services.enrolment": ("SigningCard", "register_with_card"),
    "engine.services.login": ("LoginResult", "LoginService", "SessionView"),
    "engine.services.mail": (
        "Mailer",
        "NullMailer",
        "OutboxMailer",
        "SmtpMailer",
        "activation_message",
        "make_mailer",
    ),
    "engine._plugins": ("Catalog", "make_plugin_manager"),
    "engine.services.rate_limits": ("RateLimiter",),
    "engine.services.registration": ("RegistrationService", "RegistrationView"),
    "engine._settings": ("Settings",),
    "engine.core.workflow": ("Event", "Step", "WorkflowDefinition", "load_definition"),
}
_SOURCE = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    from engine._bootstrap import App, bootstrap
    from engine._plugins import Catalog, make_plugin_manager
    from engine._settings import Settings
    from engine.core.workflow import Event, Step, WorkflowDefinition, load_definition
    from engine.pki.card_response import CardResponse, Challenge, challenge_payload
    from engine.services.accounts import AccountService
    from engine.services.enrolment import SigningCard, register_with_card
    from engine.services.login import LoginResult, LoginService, SessionView
    from engine.services.mail import (
        Mailer,
        NullMailer,
        OutboxMailer,
        SmtpMailer,
        activation_message,
        make_mailer,
    )
    from engine.services.rate_limits import RateLimiter
    from engine.services.registration import RegistrationService, RegistrationView


def __getattr__(name: str) -> Any:
    module = _SOURCE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
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
