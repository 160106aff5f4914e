"""Plugins: the built-ins through the entry-point group, a third party added without touching
``engine/``, the public API and the layering rules of DESIGN.md §1."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine import Catalog, Category, DefinitionError, IssuerCA, hookimpl, make_plugin_manager
from engine.testing.pki import TestPKI

from .conftest import COMPANY_ANSWERS, SECRET, FreshDatabase
from .helpers import enrol

ROOT = Path(__file__).resolve().parent.parent
SWREG = str(Path(sys.executable).parent / "swreg")

THIRD_PARTY = '''
"""An example third-party applicant type: 企業 / 航空公司 with its IATA code."""
from engine import (
    BUSINESS_CARD, COMPANY_BINDING, AccountRule, ApplicantType, Category, CompanyInfo,
    EnterpriseBasicData, Labels, Text, hookimpl,
)


class AirlineData(EnterpriseBasicData):
    iata_code: Text


AIRLINE = ApplicantType(
    code="enterprise.airline",
    category=Category.ENTERPRISE,
    labels=Labels("航空公司", "Airline"),
    basic_data=AirlineData,
    enterprise_info=CompanyInfo,
    account=AccountRule("ubn", suffix_field="iata_code", separator="-"),
    login=BUSINESS_CARD,
    binding=COMPANY_BINDING,
    order=95,
)


@hookimpl
def swreg_applicant_types():
    return [AIRLINE]
'''


@pytest.fixture
def third_party(tmp_path: Path) -> Iterator[Path]:
    """A package installed the way pip would: a module plus a dist-info with entry points."""
    site = tmp_path / "site"
    (site / "acme_airline").mkdir(parents=True)
    (site / "acme_airline" / "__init__.py").write_text(THIRD_PARTY, encoding="utf-8")
    info = site / "acme_airline-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-airline\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[swreg]\nairline = acme_airline\n")
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("acme_airline", None)


def test_the_built_ins_come_through_the_entry_point_group() -> None:
    manager = make_plugin_manager()
    names = {name for name, _ in manager.list_name_plugin()}
    assert {"person", "enterprise", "broker", "org_oid"} <= names
    catalog = Catalog.from_plugins(manager)
    assert len(catalog.applicant_types) == 14
    assert [a.code for a in catalog.applicant_types.values()][:2] == [
        "person.general",
        "person.customs_broker",
    ]
    iot = {a.code for a in catalog.applicant_types.values() if a.iot_allowed}
    assert iot == {"enterprise.shipping", "enterprise.warehouse", "enterprise.bonded_transport"}
    assert catalog.applicant("enterprise.organization").takes_over == {"enterprise.general"}
    for applicant in catalog.applicant_types.values():
        assert applicant.labels.zh_tw and applicant.labels.en
        expected = {"person": {IssuerCA.MOICA}}.get(applicant.category.value)
        if expected:
            assert applicant.login.cas == expected


def test_without_entry_points_nothing_is_loaded() -> None:
    manager = make_plugin_manager(load_entrypoints=False)
    assert Catalog.from_plugins(manager).applicant_types == {}


def test_a_duplicate_code_is_a_definition_error() -> None:
    import plugins.person as person

    class Again:
        swreg_applicant_types = staticmethod(person.swreg_applicant_types)

    manager = make_plugin_manager(plugins=[Again()])
    with pytest.raises(DefinitionError, match=r"duplicate applicant type 'person\.general'"):
        Catalog.from_plugins(manager)


@pytest.mark.parametrize("code", ["enterprise." + "x" * 60, "Enterprise.Airline", "a..b", ""])
def test_a_type_code_must_fit_every_database(code: str) -> None:
    """Codes are stored in 64-character columns: PostgreSQL would refuse a longer one."""
    import plugins.person as person

    odd = dataclasses.replace(person.GENERAL_PERSON, code=code)

    class Odd:
        @staticmethod
        @hookimpl
        def swreg_applicant_types() -> list[object]:
            return [odd]

    manager = make_plugin_manager(plugins=[Odd()], load_entrypoints=False)
    with pytest.raises(DefinitionError, match="type code"):
        Catalog.from_plugins(manager)


def test_a_third_party_type_registers_in_process(
    third_party: Path, settings: engine.Settings, clock: engine.FixedClock, pki: TestPKI
) -> None:
    app = engine.bootstrap(settings, clock=clock)
    try:
        airline = app.catalog.applicant("enterprise.airline")
        assert airline.category is Category.ENTERPRISE
        pki.publish_to(app.trust, actor="cli")
        answers = {**COMPANY_ANSWERS, "iata_code": "BR"}
        view = enrol(app, "enterprise.airline", pki.issue_company("04595257"), answers)
        assert (view.state, view.account) == ("completed", "04595257-BR")
    finally:
        app.close()


def test_a_third_party_type_through_the_cli(
    third_party: Path, tmp_path: Path, pki: TestPKI, fresh_database: FreshDatabase
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(third_party),
        "SWREG_DATABASE_URL": fresh_database(migrated=False),
        "SWREG_SECRET_KEY": SECRET.hex(),  # no key file beside a PostgreSQL database
        "SWREG_ARGON2": "1,64,1",
    }

    def swreg(*args: str, stdin: str | None = None) -> dict[str, object]:
        done = subprocess.run(
            [SWREG, *args, "--json"], env=env, input=stdin, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict[str, object] = json.loads(done.stdout)
        return result

    types = swreg("types")
    assert "enterprise.airline" in [t["code"] for t in types["applicant_types"]]  # type: ignore[attr-defined,index]
    for command in pki.trust_commands(tmp_path / "trusted"):
        swreg(*command)
    answers = tmp_path / "airline.json"
    answers.write_text(json.dumps({**COMPANY_ANSWERS, "iata_code": "CI"}), encoding="utf-8")
    card = tmp_path / "airline.p12"
    pki.write_pkcs12(pki.issue_company("04595257"), card, "1234")
    out = swreg(
        "register", "--type", "enterprise.airline", "--answers", str(answers),
        "--card", f"virtual:{card}", "--pin-stdin", stdin="1234\n",
    )  # fmt: skip
    assert (out["account"], out["type"]) == ("04595257-CI", "enterprise.airline")


def test_the_public_api_is_pinned() -> None:
    assert engine.__all__ == sorted(engine.__all__, key=lambda n: (not n.isupper(), n))
    for name in engine.__all__:
        assert hasattr(engine, name), name
    assert {"bootstrap", "hookimpl", "ApplicantType", "SwregError", "ErrorCode"} <= set(
        engine.__all__
    )
    assert set(engine._SOURCE) <= set(engine.__all__)  # nothing lazy that is not public


def test_importing_engine_loads_no_service_machinery() -> None:
    """A plugin declaring types (or pytest loading the test kit) pays for pydantic only."""
    probe = "import sys, engine; print(sorted(m for m in HEAVY if m in sys.modules))"
    heavy = '{"sqlalchemy", "alembic", "cryptography", "statemachine", "fastapi", "smartcard"}'
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {heavy}\n{probe}"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_hookspecs_are_prefixed_and_documented() -> None:
    from engine import hookspecs

    specs = [n for n in dir(hookspecs) if n.startswith("swreg_")]
    assert specs == [
        "swreg_applicant_types",
        "swreg_registration_completed",
        "swreg_usage_types",
        "swreg_workflow_steps",
    ]
    for name in specs:
        doc = textwrap.dedent(getattr(hookspecs, name).__doc__ or "")
        assert "Parameters:" in doc and "Returns:" in doc, name
