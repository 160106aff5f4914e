"""The plugin manager factory and the catalogue of what installed plugins declare.

Nothing is loaded at import time: :func:`make_plugin_manager` builds a manager on demand (tests
build their own), and :class:`Catalog` reads the declaration hooks once at bootstrap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import pluggy
from pydantic import BaseModel

from engine import hookspecs
from engine._errors import DefinitionError, ErrorCode, WorkflowError
from engine.core.declarations import (
    STEP_ACTORS,
    ApplicantType,
    CertificateIdentity,
    IssuerCA,
    StepSpec,
    UsageType,
)
from engine.core.workflow import Step

_Declared = TypeVar("_Declared", ApplicantType, UsageType, StepSpec)


def make_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Iterable[object] = ()
) -> pluggy.PluginManager:
    """A plugin manager with swreg's hook specs, entry-point plugins and ``plugins``."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    if load_entrypoints:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    for plugin in plugins:
        manager.register(plugin)
    manager.check_pending()
    return manager


@dataclass(frozen=True)
class Catalog:
    """Applicant types, customs usage types and workflow steps of the installed plugins."""

    applicant_types: Mapping[str, ApplicantType]
    usage_types: Mapping[str, UsageType]
    steps: Mapping[str, StepSpec]

    @classmethod
    def from_plugins(cls, manager: pluggy.PluginManager) -> Catalog:
        hook = manager.hook
        applicants = _unique(
            (t for group in hook.swreg_applicant_types() for t in group), "applicant type"
        )
        usages = _unique((u for group in hook.swreg_usage_types() for u in group), "usage type")
        steps = _unique((s for group in hook.swreg_workflow_steps() for s in group), "step")
        for spec in steps.values():
            _check_step(spec)
        for code in (*applicants, *usages):
            _check_code(code)
        for applicant in applicants.values():
            for code in applicant.takes_over:
                if code not in applicants:
                    raise DefinitionError(f"{applicant.code} takes over unknown type {code!r}")
        ordered = sorted(
            applicants.values(), key=lambda a: (a.category != "person", a.order, a.code)
        )
        return cls(
            applicant_types=MappingProxyType({a.code: a for a in ordered}),
            usage_types=MappingProxyType(
                {u.code: u for u in sorted(usages.values(), key=lambda u: (u.order, u.code))}
            ),
            steps=MappingProxyType(steps),
        )

    def step_form(self, applicant: ApplicantType, step: str) -> type[BaseModel] | None:
        """The form an applicant fills at ``step``: its own 基本資料 / 企業資訊, else the form of
        the plugin step of that name (None: nothing to fill, or a step that is only passed)."""
        form = applicant.form_for(step)
        if form is None and step in self.steps:
            form = self.steps[step].form
        return form

    def applicant(self, code: str) -> ApplicantType:
        try:
            return self.applicant_types[code]
        except KeyError:
            raise WorkflowError(ErrorCode.UNKNOWN_TYPE, field="type", detail=code) from None

    def resolve(
        self, chosen: ApplicantType, ca: IssuerCA, identity: CertificateIdentity
    ) -> ApplicantType:
        """The type a card makes of the chosen one: itself, or a type that takes it over.

        An XCA card under ``enterprise.general`` resolves to ``enterprise.organization``.
        When nothing accepts the card the chosen type stays (and its profile check refuses).
        """
        if chosen.login.accepts(ca, identity):
            return chosen
        for candidate in self.applicant_types.values():
            if chosen.code in candidate.takes_over and candidate.login.accepts(ca, identity):
                return candidate
        return chosen

    def accepting(self, ca: IssuerCA, identity: CertificateIdentity) -> list[str]:
        """Codes of applicant and usage types that would accept such a certificate."""
        codes = [a.code for a in self.applicant_types.values() if a.login.accepts(ca, identity)]
        codes += [u.code for u in self.usage_types.values() if ca in u.accepted_cas()]
        return codes


_STEP_ID = re.compile(r"[a-z][a-z0-9_]{0,31}")


_CODE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
MAX_CODE_LENGTH = 64  # the width of the applicant_type / usage_type columns


def _check_code(code: object) -> None:
    """A type code is dotted lowercase words that fit the database columns (every backend)."""
    if not isinstance(code, str) or len(code) > MAX_CODE_LENGTH or not _CODE.fullmatch(code):
        raise DefinitionError(
            f"type code {code!r} must be dotted words of [a-z0-9_], at most {MAX_CODE_LENGTH}"
        )


def _check_step(spec: StepSpec) -> None:
    """A contributed step has a plain id (it is stored as the state and drawn in diagrams),
    does not shadow a built-in one and names a known actor."""
    if not isinstance(spec.id, str) or not _STEP_ID.fullmatch(spec.id):
        raise DefinitionError(f"step id {spec.id!r} must match [a-z][a-z0-9_]{{0,31}}")
    if spec.id in Step.__members__.values():
        raise DefinitionError(f"step {spec.id!r} is built in; a plugin cannot contribute it")
    if spec.actor not in STEP_ACTORS:
        raise DefinitionError(
            f"step {spec.id!r}: actor must be one of {', '.join(STEP_ACTORS)}, not {spec.actor!r}"
        )
    if spec.actor == "officer" and spec.form is not None:
        raise DefinitionError(f"step {spec.id!r}: an officer step takes no applicant form")


def _unique(items: Iterable[_Declared], what: str) -> dict[str, _Declared]:
    found: dict[str, _Declared] = {}
    for item in items:
        key = item.code if not isinstance(item, StepSpec) else item.id
        if key in found:
            raise DefinitionError(f"duplicate {what} {key!r} declared by two plugins")
        found[key] = item
    return found
