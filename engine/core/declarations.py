"""Declarative, frozen values that plugins return and the engine reads.

An applicant type (DESIGN.md §3) is data: its forms, its account-naming rule, the login
certificates it accepts and how the certificate binds to what the applicant typed. Nothing here
does I/O; every value is immutable and safe to share between threads and workers.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel

from engine._errors import ErrorCode, Language


class Category(StrEnum):
    """申請類別."""

    PERSON = "person"
    ENTERPRISE = "enterprise"

    @property
    def labels(self) -> Labels:
        return _CATEGORY_LABELS[self]


class IssuerCA(StrEnum):
    """The certification authority family that issued a certificate (DOMAIN.md §3.1)."""

    MOICA = "MOICA"  # 內政部憑證管理中心: 自然人憑證, 居留證
    MOEACA = "MOEACA"  # 工商憑證管理中心: 工商憑證
    XCA = "XCA"  # 組織及團體憑證管理中心: 組織團體憑證
    GCA = "GCA"  # 政府憑證管理中心: 政府憑證
    TAICA = "TaiCA"  # 通關專屬憑證 (TWCA TaiCA FXML)
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Labels:
    """A label in both languages the engine speaks."""

    zh_tw: str
    en: str

    def get(self, language: Language = "zh-TW") -> str:
        return self.zh_tw if language == "zh-TW" else self.en


_CATEGORY_LABELS = {
    Category.PERSON: Labels("個人", "Individual"),
    Category.ENTERPRISE: Labels("企業", "Enterprise"),
}


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """What a certificate says about its holder; ``None`` where it says nothing.

    ``name`` is the subject CN (MOICA), ``id_last4`` SDA 2.16.886.1.100.2.51, ``ubn`` SDA .101
    (or the subject serialNumber), ``oid`` SDA .102, ``card_rank`` SDA .2 (``primary``,
    ``secondary``, ``mobile``), ``subject_class`` SDA .1, ``organization`` the subject O.
    """

    name: str | None = None
    id_last4: str | None = None
    ubn: str | None = None
    oid: str | None = None
    card_rank: str | None = None
    subject_class: str | None = None
    organization: str | None = None

    def get(self, attribute: str) -> str | None:
        value: str | None = getattr(self, attribute)
        return value

    def as_dict(self) -> dict[str, str]:
        """Only the attributes the certificate carries."""
        keys = ("name", "id_last4", "ubn", "oid", "card_rank")
        return {k: v for k in keys if (v := getattr(self, k)) is not None}


@dataclass(frozen=True, slots=True)
class CertificateProfile:
    """Which login certificates an applicant type accepts.

    Start from the issuing CAs and narrow with builder calls that return new values::

        CertificateProfile.of(IssuerCA.MOEACA).with_card_ranks("primary", "secondary")
    """

    cas: frozenset[IssuerCA]
    card_ranks: frozenset[str] | None = None  # None: any rank, including none at all

    @classmethod
    def of(cls, *cas: IssuerCA) -> CertificateProfile:
        return cls(frozenset(cas))

    def with_card_ranks(self, *ranks: str) -> CertificateProfile:
        return replace(self, card_ranks=frozenset(ranks))

    def accepts(self, ca: IssuerCA, identity: CertificateIdentity) -> bool:
        return self.accepts_card(ca, identity.card_rank)

    def accepts_card(self, ca: IssuerCA, card_rank: str | None) -> bool:
        """Whether a certificate of ``ca`` with ``card_rank`` (SDA, None when absent) fits."""
        if ca not in self.cas:
            return False
        return self.card_ranks is None or card_rank in self.card_ranks


@dataclass(frozen=True, slots=True)
class AccountRule:
    """帳號 naming: the value of ``field``, followed by ``suffix_field`` when that is filled.

    個人 → ``AccountRule("email")``; 企業 → ``AccountRule("ubn", suffix_field="sub_card")``
    (UBN, or UBN + 附卡編號); 組織團體/政府機關 → ``AccountRule("oid")``.
    """

    field: str
    suffix_field: str | None = None
    separator: str = ""

    def name(self, data: Mapping[str, Any]) -> str | None:
        """The account name for ``data``, or ``None`` while the field is still empty."""
        base = data.get(self.field)
        if not base:
            return None
        name = str(base).lower() if self.field == "email" else str(base)
        suffix = data.get(self.suffix_field) if self.suffix_field else None
        return f"{name}{self.separator}{suffix}" if suffix else name


BindingCompare = Literal["equal", "last4"]


@dataclass(frozen=True, slots=True)
class BindingRule:
    """One entered field that must agree with one certificate attribute.

    ``equal`` compares NFKC-normalised, trimmed values and pre-fills (and locks) the field from
    the certificate; ``last4`` compares the last four characters of the field with the attribute.
    """

    field: str
    attribute: str
    compare: BindingCompare = "equal"

    def matches(self, value: str, certified: str) -> bool:
        entered = canonical_text(value)
        if self.compare == "last4":
            return entered[-4:] == canonical_text(certified)
        return entered == canonical_text(certified)


def canonical_text(value: str) -> str:
    """How identity values compare: NFKC-normalised, trimmed, upper-cased."""
    return unicodedata.normalize("NFKC", value).strip().upper()


@dataclass(frozen=True, slots=True)
class IdentityBinding:
    """The rules tying a certificate to the data typed in (MOICA: name and ID; MOEACA: UBN)."""

    rules: tuple[BindingRule, ...] = ()

    def prefill(self, identity: CertificateIdentity) -> dict[str, str]:
        """Fields pre-filled (and locked) from the certificate."""
        return {
            r.field: v
            for r in self.rules
            if r.compare == "equal" and (v := identity.get(r.attribute)) is not None
        }

    def mismatches(self, identity: CertificateIdentity, data: Mapping[str, Any]) -> list[str]:
        """Fields whose entered value contradicts the certificate (or that it lacks)."""
        bad = []
        for rule in self.rules:
            if rule.field not in data or data[rule.field] in (None, ""):
                continue
            certified = identity.get(rule.attribute)
            if certified is None or not rule.matches(str(data[rule.field]), certified):
                bad.append(rule.field)
        return bad


@dataclass(frozen=True, slots=True)
class ApplicantType:
    """An applicant type (類別 / 屬性), contributed by a plugin.

    ``takes_over`` lists chosen types this one replaces at the card check when the inserted card
    fits this type's profile and not the chosen one's (an XCA card under
    ``enterprise.general`` becomes ``enterprise.organization``).
    """

    code: str
    category: Category
    labels: Labels
    basic_data: type[BaseModel]
    account: AccountRule
    login: CertificateProfile
    binding: IdentityBinding = IdentityBinding()
    enterprise_info: type[BaseModel] | None = None
    iot_allowed: bool = False
    takes_over: frozenset[str] = frozenset()
    order: int = 100

    def form_for(self, step: str) -> type[BaseModel] | None:
        return {"basic_data": self.basic_data, "enterprise_info": self.enterprise_info}.get(step)


class ImportKind(StrEnum):
    """How a customs certificate reaches the system."""

    IC_CARD = "ic_card"  # IC卡類憑證: read from a card with its PIN
    NON_IC = "non_ic"  # 非IC卡類憑證: a .cer file


class CertificateKind(StrEnum):
    """憑證種類 of a customs (Turnkey signing) certificate."""

    BUSINESS = "business"  # 工商憑證
    CUSTOMS = "customs"  # 通關專屬憑證

    @property
    def labels(self) -> Labels:
        return _KIND_LABELS[self]


_KIND_LABELS = {
    CertificateKind.BUSINESS: Labels("工商憑證", "Business certificate"),
    CertificateKind.CUSTOMS: Labels("通關專屬憑證", "Customs-exclusive certificate"),
}


@dataclass(frozen=True, slots=True)
class UsageType:
    """憑證使用類型 of 通關憑證註冊: its form and the imports it allows (DESIGN.md §5)."""

    code: str
    labels: Labels
    form: type[BaseModel]
    imports: frozenset[tuple[ImportKind, CertificateKind]]
    query_key: str = "ubn"  # the form field that keys 通關憑證查詢
    order: int = 100
    field_labels: Mapping[str, Labels] = field(default_factory=dict, hash=False)
    """Labels replacing the form's own for this usage (報關專責人員: ``contact_name`` is the
    specialist's name)."""
    default: bool = False
    """The usage the 通關憑證註冊 page shows first (else the lowest ``order``)."""
    owner_field: Literal["ubn", "national_id"] = "ubn"
    """Who owns what this usage imports (DESIGN.md §5 "Owners are proven, never typed"):
    ``ubn``, the company the certificate names (proven by its card, by a 工商憑證 login of that
    UBN, or by a signature of the certificate's key over a challenge); ``national_id``, the
    person entered, proven only by that person's card login (報關專責人員)."""
    owner_types: frozenset[str] = frozenset()
    """The applicant types whose logged-in accounts may own this usage's certificates (empty:
    any account of the owner)."""

    def accepts(self, kind: ImportKind, certificate: CertificateKind) -> bool:
        return (kind, certificate) in self.imports

    def certificate_kinds(self, kind: ImportKind) -> tuple[CertificateKind, ...]:
        """The 憑證種類 this usage takes by ``kind`` of import, 工商憑證 first (as on the page)."""
        return tuple(c for c in CertificateKind if (kind, c) in self.imports)

    def accepted_cas(self) -> frozenset[IssuerCA]:
        cas = {
            IssuerCA.MOEACA if c is CertificateKind.BUSINESS else IssuerCA.TAICA
            for _, c in self.imports
        }
        return frozenset(cas)


StepActor = Literal["applicant", "officer"]
"""Who acts at a workflow step: the applicant (fills its form, or passes it with ``next``) or a
customs officer (``approve`` / ``reject``; the registration waits meanwhile)."""

STEP_ACTORS: tuple[StepActor, ...] = ("applicant", "officer")


@dataclass(frozen=True, slots=True)
class StepSpec:
    """A workflow step contributed by a plugin (for example a review or an approval step).

    ``applies_to`` holds categories or applicant-type codes; empty means every type (the
    workflow definition file decides where the step stands and whom it applies to).

    ``actor`` says who acts there. ``"applicant"`` (the default): the applicant submits the
    step's ``form`` (or passes a form-less step with ``next``). ``"officer"``: the step takes no
    applicant input; the registration waits there (待審核, awaiting approval) until an officer
    approves it (it moves on: to ``completed``, the account is created) or rejects it (it ends
    in ``rejected`` with a reason, and no account). An officer step has no ``form``. It is not
    subject to the idle timeout: it waits until decided, or for the step's own
    ``timeout_minutes`` when the definition gives one::

        StepSpec("approval", Labels("審核", "Approval"), actor="officer")
    """

    id: str
    labels: Labels
    form: type[BaseModel] | None = None
    applies_to: frozenset[str] = frozenset()
    actor: StepActor = "applicant"


@dataclass(frozen=True, slots=True)
class RegistrationCompleted:
    """Told to plugins after an account was created (the transaction has committed)."""

    registration_id: str
    account: str
    applicant_type: str
    email: str | None
    at: datetime
    fields: Mapping[str, Any] = field(default_factory=dict)


__all__ = [
    "AccountRule",
    "ApplicantType",
    "BindingRule",
    "Category",
    "CertificateIdentity",
    "CertificateKind",
    "CertificateProfile",
    "ErrorCode",
    "IdentityBinding",
    "ImportKind",
    "IssuerCA",
    "Labels",
    "RegistrationCompleted",
    "StepActor",
    "StepSpec",
    "UsageType",
]
