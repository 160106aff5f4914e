"""The test kit for plugin authors (engine/testing/pytest_plugin.py, docs/plugins.md §6).

The kit is loaded in this very run through its ``pytest11`` entry point, so most tests use its
fixtures directly; pytester runs the documented examples (in a fresh interpreter, to prove that
the entry point alone brings the fixtures), a project with fixtures named like ours, and the
``swreg_pcsc`` marking. Only ``test_a_card_in_a_vpcd_reader_registers`` talks to pcscd.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from engine import (
    App,
    CardError,
    Catalog,
    FixedClock,
    Form,
    IssuerCA,
    Labels,
    RefusedError,
    Settings,
    StepSpec,
    Text,
    hookimpl,
)
from engine.testing import pytest_plugin
from engine.testing.pytest_plugin import (
    AGENCY_OID,
    ORG_OID,
    PIN,
    SAMPLE_ANSWERS,
    AppFactory,
    Registrar,
    SwregPKI,
    VirtualCards,
    VpcdCards,
)
from readers import open_card

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
QUIET = ("-p", "no:hypothesispytest")  # its summary re-imports hypothesis in every inner run


def inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run pytest in-process on the pytester folder (the kit comes from its entry point)."""
    return pytester.runpytest(*QUIET, *args)


# -- the plugin itself -------------------------------------------------------------------------


def test_the_kit_is_registered_through_pytest11(request: pytest.FixtureRequest) -> None:
    [entry] = [e for e in entry_points(group="pytest11") if e.name == "swreg"]
    assert entry.value == "engine.testing.pytest_plugin"
    assert request.config.pluginmanager.get_plugin("swreg") is pytest_plugin


def test_importing_the_kit_costs_nothing_beyond_engine(tmp_path: Path) -> None:
    """pytest imports the kit in every run of every project with swreg installed."""
    probe = (
        "import sys, json\n"
        "import engine, engine.testing\n"
        "before = set(sys.modules)\n"
        "import engine.testing.pytest_plugin\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    added = {name.split(".")[0] for name in json.loads(done.stdout)}
    heavy = {"readers", "smartcard", "plugins", "psycopg", "uvicorn", "fastapi", "cryptography"}
    assert not added & heavy, added & heavy
    assert list(tmp_path.iterdir()) == []  # no database, key file or PKI written


def _kit_fixtures(output: str) -> list[str]:
    section = output.split("fixtures defined from engine.testing.pytest_plugin", 1)[1]
    section = re.split(r"\n-+ fixtures defined from ", section, maxsplit=1)[0]
    return re.findall(r"^(\w+)(?: \[\w+ scope\])? -- ", section, flags=re.M)


def test_every_fixture_is_prefixed_and_documented(pytester: pytest.Pytester) -> None:
    result = inner(pytester, "--fixtures")
    names = _kit_fixtures(result.stdout.str())
    assert names and all(name.startswith("swreg_") for name in names), names
    documented = set(re.findall(r"^\| `(swreg_\w+)` \|", DOCS.read_text("utf-8"), flags=re.M))
    assert set(names) - {"swreg_template_database"} == documented


def test_a_projects_own_fixtures_keep_their_names(pytester: pytest.Pytester) -> None:
    """Our tests/conftest.py has pki, app, clock, settings, db_url: the kit never shadows one."""
    pytester.makeconftest(
        """
        import pytest
        for _name in ("pki", "app", "clock", "settings", "db_url", "card_file"):
            exec(f"@pytest.fixture\\ndef {_name}(): return 'mine'")
        """
    )
    pytester.makepyfile(
        """
        from engine import App
        def test_both(pki, app, clock, settings, db_url, card_file, swreg_app, swreg_pki):
            assert {pki, app, clock, settings, db_url, card_file} == {"mine"}
            assert isinstance(swreg_app, App) and swreg_pki.now
        """
    )
    inner(pytester).assert_outcomes(passed=1)


def test_the_documented_examples_pass(pytester: pytest.Pytester) -> None:
    """Every ``<!-- pytest -->`` example of docs/plugins.md, with the docs' example files, in a
    fresh interpreter where only the entry point brings the kit."""
    text = DOCS.read_text(encoding="utf-8")
    for match in re.finditer(
        r"```(?:python|toml)\n# ([\w./-]+\.(?:py|toml))\n(.*?)```", text, re.S
    ):
        name, body = match[1], match[2]
        if name == "pyproject.toml":
            continue
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {name}\n{body}", encoding="utf-8")
    examples = re.findall(r"<!-- pytest -->\n```python\n(.*?)```", text, re.S)
    assert len(examples) >= 2
    for i, example in enumerate(examples):
        pytester.makepyfile(**{f"test_docs_example_{i}": example})
    expected = sum(len(re.findall(r"^def test_", example, re.M)) for example in examples)
    result = pytester.runpytest_subprocess(*QUIET, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=expected)


def test_vpcd_cards_are_marked_and_fail_clearly_without_pcscd(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from engine import EnvironmentProblem

        @pytest.fixture(autouse=True)
        def no_pcscd(monkeypatch):
            def refuse():
                raise EnvironmentProblem("no_reader", detail="pcscd is not running")
            monkeypatch.setattr("readers.pcsc.reader_names", refuse)
        """
    )
    pytester.makepyfile(
        """
        def test_in_a_reader(swreg_vpcd_card):
            swreg_vpcd_card()

        def test_without(swreg_pki):
            pass
        """
    )
    result = inner(pytester, "-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*swreg_vpcd_card needs pcscd running*not swreg_pcsc*"])
    inner(pytester, "-m", "not swreg_pcsc").assert_outcomes(passed=1, deselected=1)


ON_POSTGRESQL = os.environ.get("SWREG_TEST_DATABASE") == "postgresql"


def test_each_test_gets_a_database_of_the_pass_that_is_removed_after_it(
    pytester: pytest.Pytester,
) -> None:
    """SQLite pass: a file per test; PostgreSQL pass: a database per test, dropped after it
    (and the run's template with them). The other ``make test`` process creates and drops
    databases of its own meanwhile: only this run's are judged."""
    used = pytester.path / "used.txt"
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parametrize("i", [1, 2])
        def test_register(swreg_database_url, swreg_app, swreg_register, i):
            assert swreg_database_url.startswith({"postgresql" if ON_POSTGRESQL else "sqlite"!r})
            assert swreg_register(swreg_app, "person.general") == "applicant@example.com"
            with open({str(used)!r}, "a") as record:
                record.write(swreg_database_url.rsplit("/", 1)[-1].split("?")[0] + "\\n")
        """
    )
    if not ON_POSTGRESQL:
        inner(pytester).assert_outcomes(passed=2)
        return
    from sqlalchemy import create_engine, pool, text

    engine = create_engine(os.environ["SWREG_PG_URL"], poolclass=pool.NullPool)

    def databases() -> set[str]:
        with engine.connect() as connection:
            query = text("SELECT datname FROM pg_database WHERE datname LIKE 'swreg_%'")
            return set(connection.scalars(query))

    before = databases()
    inner(pytester).assert_outcomes(passed=2)
    names = used.read_text().split()
    assert len(set(names)) == 2 and all(name.startswith("swreg_test_") for name in names)
    templates = f"swreg_template_{os.getpid()}_"  # the in-process run's, named by this PID
    left = {n for n in databases() - before if n in names or n.startswith(templates)}
    assert left == set()
    assert not set(names) & databases()
    engine.dispose()


# -- the fixtures ------------------------------------------------------------------------------

ACCOUNTS = {
    "person.general": SAMPLE_ANSWERS["email"],
    "person.customs_broker": SAMPLE_ANSWERS["email"],
    "enterprise.general": SAMPLE_ANSWERS["ubn"],
    "enterprise.customs_broker": SAMPLE_ANSWERS["ubn"],
    "enterprise.express": SAMPLE_ANSWERS["ubn"],
    "enterprise.shipping": SAMPLE_ANSWERS["ubn"],
    "enterprise.warehouse": SAMPLE_ANSWERS["ubn"],
    "enterprise.forwarder": SAMPLE_ANSWERS["ubn"],
    "enterprise.offshore_duty_free": SAMPLE_ANSWERS["ubn"],
    "enterprise.duty_free": SAMPLE_ANSWERS["ubn"],
    "enterprise.bonded_transport": SAMPLE_ANSWERS["ubn"],
    "enterprise.equipment_supplier": SAMPLE_ANSWERS["ubn"],
    "enterprise.organization": ORG_OID,
    "enterprise.government": AGENCY_OID,
}


@pytest.mark.parametrize(("type_code", "account"), ACCOUNTS.items())
def test_every_built_in_type_registers_with_a_card_of_its_profile(
    swreg_app: App, swreg_register: Registrar, type_code: str, account: str
) -> None:
    assert swreg_register(swreg_app, type_code) == account


def test_the_pki_issues_every_card_profile(swreg_app: App, swreg_pki: SwregPKI) -> None:
    cases = [
        (swreg_pki.person("林小美", "B234567896"), "MOICA", {"name": "林小美", "id_last4": "7896"}),
        (swreg_pki.resident("SMITH JOHN", "A800000014"), "MOICA", {"id_last4": "0014"}),
        (swreg_pki.company("10458575"), "MOEACA", {"ubn": "10458575", "card_rank": "primary"}),
        (swreg_pki.sub_card("10458575"), "MOEACA", {"card_rank": "secondary"}),
        (swreg_pki.organization(), "XCA", {"oid": ORG_OID}),
        (swreg_pki.agency(), "GCA", {"oid": AGENCY_OID}),
        (swreg_pki.customs("04595257", "06"), "TaiCA", {}),
    ]
    for card, ca, identity in cases:
        seen = swreg_app.inspect_certificate(card.der())
        assert (seen["ca"], seen["status"]) == (ca, "valid"), seen
        assert identity.items() <= seen["identity"].items(), seen
    assert (
        swreg_pki.customs("04595257", "06")
        .certificate.subject.rfc4514_string()
        .startswith("CN=04595257-06-000")
    )
    assert swreg_pki.issue_person().ca is IssuerCA.MOICA  # TestPKI's own methods reach through


def test_card_for_follows_the_profile_and_the_answers(swreg_pki: SwregPKI, swreg_app: App) -> None:
    catalog: Catalog = swreg_app.catalog
    company = swreg_pki.card_for(catalog.applicant("enterprise.general").login, {"ubn": "10458575"})
    assert (company.ca, swreg_app.inspect_certificate(company.der())["identity"]["ubn"]) == (
        IssuerCA.MOEACA,
        "10458575",
    )
    sub = swreg_pki.card_for(IssuerCA.MOEACA, {"sub_card": "01"})
    assert swreg_app.inspect_certificate(sub.der())["identity"]["card_rank"] == "secondary"
    person = swreg_pki.card_for("MOICA", {"contact_name": "林小美", "national_id": "B234567896"})
    assert swreg_app.inspect_certificate(person.der())["identity"] == {
        "name": "林小美",
        "id_last4": "7896",
    }
    assert swreg_pki.card_for(IssuerCA.GCA).ca is IssuerCA.GCA


def test_a_secondary_card_and_a_takeover(
    swreg_app: App, swreg_register: Registrar, swreg_pki: SwregPKI
) -> None:
    assert swreg_register(swreg_app, "enterprise.general") == "04595257"
    with pytest.raises(RefusedError) as taken:  # 用戶姓名已存在
        swreg_register(swreg_app, "enterprise.general", card=swreg_pki.sub_card())
    assert taken.value.code == "account_exists"
    assert swreg_register(swreg_app, "enterprise.general", sub_card="01") == "0459525701"
    view = swreg_register.run(swreg_app, "enterprise.general", card=swreg_pki.organization())
    assert (view.account, view.applicant_type) == (ORG_OID, "enterprise.organization")


def test_a_refusal_raises_and_leaves_no_account(
    swreg_app: App, swreg_register: Registrar, swreg_pki: SwregPKI
) -> None:
    with pytest.raises(RefusedError) as refused:
        swreg_register(swreg_app, "person.general", card=swreg_pki.person(national_id="B234567896"))
    assert (refused.value.code, refused.value.field) == ("identity_mismatch", "national_id")
    assert swreg_app.registrations.check_account(SAMPLE_ANSWERS["email"])


def test_a_virtual_card_spec_is_a_pkcs12_software_card(
    swreg_virtual_card: VirtualCards, swreg_pki: SwregPKI
) -> None:
    card = swreg_pki.company()
    spec = swreg_virtual_card(card, pin="13572468")
    assert spec.startswith("virtual:") and spec.endswith(".p12")
    with open_card(spec) as opened:
        with pytest.raises(CardError) as wrong:
            opened.verify_pin(PIN)
        assert wrong.value.code == "pin_incorrect"
        opened.verify_pin("13572468")
        assert opened.read_certificate() == card.der()
        assert opened.read_chain() == card.chain_der()


def test_a_spec_or_a_card_object_may_be_given(
    swreg_app: App, swreg_register: Registrar, swreg_virtual_card: VirtualCards
) -> None:
    spec = swreg_virtual_card(pin="13572468")  # a citizen card of the sample person
    assert swreg_register(swreg_app, "person.general", card=spec, pin="13572468")
    with pytest.raises(RefusedError) as again:  # the same card: 您已註冊本系統
        swreg_register(swreg_app, "person.general", card=spec, pin="13572468")
    assert again.value.code == "already_registered"


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_database(
    swreg_app: App, swreg_register: Registrar, swreg_database_url: str, tmp_path: Path, run: int
) -> None:
    if ON_POSTGRESQL:  # scripts/with-postgres: a database of its own on the cluster
        assert swreg_database_url.startswith("postgresql+psycopg://")
    else:
        assert swreg_database_url == f"sqlite:///{tmp_path / 'swreg.db'}"
    assert swreg_app.registrations.check_account("applicant@example.com")
    swreg_register(swreg_app, "person.general")
    assert not swreg_app.registrations.check_account("applicant@example.com")


def test_the_app_runs_on_the_fixed_clock_and_mails_to_the_outbox(
    swreg_app: App,
    swreg_clock: FixedClock,
    swreg_pki: SwregPKI,
    swreg_settings: Settings,
    swreg_register: Registrar,
) -> None:
    assert swreg_app.clock is swreg_clock and swreg_clock.now() == swreg_pki.now
    assert swreg_settings.argon2.memory_kib == 64  # cheap hashing for tests
    swreg_register(swreg_app, "person.general")
    assert swreg_settings.mail.outbox is not None
    [mail] = list(swreg_settings.mail.outbox.glob("*.eml"))
    assert "applicant@example.com" in mail.read_text(encoding="utf-8")


def test_a_module_loaded_by_entry_points_is_not_registered_twice(
    swreg_plugin: AppFactory,
) -> None:
    import plugins.person

    assert len(swreg_plugin(plugins.person).catalog.applicant_types) == 14
    import plugins.enterprise  # the built-in workflow's 企業資訊 must apply to some type

    alone = swreg_plugin(plugins.person, plugins.enterprise, entrypoints=False)
    assert "person.customs_broker" not in alone.catalog.applicant_types
    assert next(iter(alone.catalog.applicant_types)) == "person.general"


def test_an_object_without_hook_implementations_is_refused(swreg_plugin: AppFactory) -> None:
    class Forgotten:
        def swreg_applicant_types(self) -> list[object]:  # no @hookimpl
            return []

    with pytest.raises(ValueError, match="holds no swreg hook implementation"):
        swreg_plugin(Forgotten)


class Declaration(Form):
    declared_by: Text


class DeclarationStep:
    @hookimpl
    def swreg_workflow_steps(self) -> list[StepSpec]:
        return [
            StepSpec("declaration", Labels("聲明", "Declaration"), form=Declaration),
            StepSpec("approval", Labels("審核", "Approval"), actor="officer"),
        ]


STEPS = '[[step]]\nid = "category"\n[[step]]\nid = "card_check"\n[[step]]\nid = "basic_data"\n'


def test_a_contributed_step_placed_by_workflow_text(
    swreg_plugin: AppFactory, swreg_register: Registrar
) -> None:
    workflow = STEPS + '[[step]]\nid = "declaration"\n[[step]]\nid = "completed"\n'
    app = swreg_plugin(DeclarationStep, workflow=workflow)
    with pytest.raises(RefusedError) as missing:
        swreg_register(app, "person.general")
    assert (missing.value.code, missing.value.field) == ("field_required", "declared_by")
    view = swreg_register.run(app, "person.general", declared_by="王小明")
    assert view.path == ("category", "card_check", "basic_data", "declaration", "completed")
    assert view.state == "completed"


def test_run_stops_where_an_officer_decides(
    swreg_plugin: AppFactory, swreg_register: Registrar
) -> None:
    workflow = STEPS + '[[step]]\nid = "approval"\n[[step]]\nid = "completed"\n'
    app = swreg_plugin(DeclarationStep, workflow=workflow)
    view = swreg_register.run(app, "person.general")
    assert (view.state, view.account) == ("approval", "applicant@example.com")
    with pytest.raises(AssertionError, match="waits for an officer at 'approval'"):
        swreg_register(app, "person.general", email="second@example.com")


@pytest.mark.pcsc
def test_a_card_in_a_vpcd_reader_registers(
    swreg_app: App, swreg_register: Registrar, swreg_pki: SwregPKI, swreg_vpcd_card: VpcdCards
) -> None:
    """Through the running pcscd: vpcd, pyscard and the PIV card profile (needs pcscd)."""
    spec = swreg_vpcd_card(swreg_pki.person(key="rsa"))
    assert spec.startswith("pcsc:Virtual PCD")
    assert swreg_register(swreg_app, "person.general", card=spec) == "applicant@example.com"
