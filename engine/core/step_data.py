"""Turning one step's answers into what is stored and what is audited (pure).

A step's form validates the answers; fields read from the certificate are locked (a different
value is ``identity_mismatch``); the identity binding compares the rest with the certificate.
What is kept between steps never holds a clear-text password or national ID: the password is
stored as its argon2id hash, the ID as a keyed hash plus a masked value. The audit diff masks
every personal value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, SecretStr

from engine._errors import ErrorCode, FormError, RefusedError
from engine.core.declarations import ApplicantType, CertificateIdentity, canonical_text
from engine.core.fields import validate_form
from engine.core.identifiers import mask_email, mask_national_id, mask_phone

SECRET_FIELDS = frozenset({"password", "password_confirm"})
MASKERS: Mapping[str, Callable[[str], str]] = {
    "national_id": mask_national_id,
    "email": mask_email,
    "account": lambda value: mask_email(value) if "@" in value else value,
    "contact_name": lambda value: value[:1] + "*" * (len(value) - 1),
    "phone": mask_phone,
    "address": lambda _value: "***",
    "birth_date": lambda _value: "****-**-**",
}


@dataclass(frozen=True, slots=True)
class StepData:
    """A validated step: its values (secrets still in memory only) and the audit diff.

    :meth:`stored` applies the one-way functions; call it only once the step is otherwise
    accepted (argon2id is deliberately expensive).
    """

    values: dict[str, Any]
    audit_diff: dict[str, Any]

    @property
    def plain(self) -> dict[str, Any]:
        """The values without secrets, as plain JSON types."""
        return {k: _plain(v) for k, v in self.values.items() if k not in SECRET_FIELDS}

    def stored(self, hashers: Hashers) -> dict[str, Any]:
        """What is kept with the registration: no clear password, no clear national ID."""
        return _for_storage(self.values, hashers)


@dataclass(frozen=True, slots=True)
class Hashers:
    """The two one-way functions the step needs (kept out so this module stays pure)."""

    password: Callable[[str], str]
    identifier: Callable[[str, str], str]


def accept_step(
    form: type[BaseModel],
    answers: Mapping[str, Any],
    *,
    applicant: ApplicantType,
    identity: CertificateIdentity,
    locked: Mapping[str, str],
) -> StepData:
    """Validate ``answers`` for ``form`` against the locked fields and the certificate."""
    merged = dict(answers)
    for field_name, certified in locked.items():
        if field_name in form.model_fields and merged.get(field_name) in (None, ""):
            merged[field_name] = certified  # not typed: pre-filled from the certificate
    model = validate_form(form, merged)
    values = {name: getattr(model, name) for name in form.model_fields}
    plain = {k: _plain(v) for k, v in values.items() if k not in SECRET_FIELDS}
    conflicts = [
        name
        for name, certified in locked.items()
        if name in plain and not _same(str(plain[name]), certified)
    ]
    mismatched = conflicts + [
        name for name in applicant.binding.mismatches(identity, plain) if name not in conflicts
    ]
    if mismatched:
        raise FormError(RefusedError(ErrorCode.IDENTITY_MISMATCH, field=f) for f in mismatched)
    return StepData(values=values, audit_diff=masked_diff(plain))


def masked_diff(values: Mapping[str, Any]) -> dict[str, Any]:
    """The audit view of changed values: personal values masked, secrets never present."""
    diff: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECRET_FIELDS or key.endswith("_hash"):
            diff[key] = "[set]"
        elif value is not None and key in MASKERS:
            diff[key] = MASKERS[key](str(value))
        else:
            diff[key] = value
    return diff


def _for_storage(values: Mapping[str, Any], hashers: Hashers) -> dict[str, Any]:
    stored: dict[str, Any] = {}
    for key, value in values.items():
        if key == "password_confirm":
            continue
        if key == "password" and isinstance(value, SecretStr):
            stored["password_hash"] = hashers.password(value.get_secret_value())
        elif key == "national_id" and value:
            stored["national_id_hash"] = hashers.identifier("national_id", str(value))
            stored["national_id_masked"] = mask_national_id(str(value))
        else:
            stored[key] = _plain(value)
    return stored


def _plain(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def _same(given: str, certified: str) -> bool:
    return canonical_text(given) == canonical_text(certified)
