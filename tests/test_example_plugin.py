"""The example third-party plugin (examples/swreg-airline), installed with pip and used end to end.

The package is installed with pip into a site folder of its own (``--target``), once per
version of its sources (cached in pytest's cache folder, so repeated runs skip pip), and put on
the path only of the processes and tests that use it: installed into the shared ``.venv`` it
would add a 15th applicant type to every other test and process (tests/test_plugins.py counts
14 and declares its own ``enterprise.airline``). pip builds it offline (``--no-build-isolation
--no-index``) when the venv can build wheels (setuptools ≥ 70.1, or the ``wheel`` package);
otherwise it falls back to an isolated build, which needs the package index.

Through it an airline (航空公司, ``enterprise.airline``) registers from the CLI (``swreg register
--card virtual:FILE.p12``, then ``swreg registrations approve``) and through the HTTP API, with
its account (UBN-IATA), rows and audit rows checked exactly.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from engine import Settings, bootstrap, make_plugin_manager
from engine._settings import MailSettings
from engine.cli import app as cli_app
from engine.services.mail import OutboxMailer
from engine.store import Account, AuditEntry, Certificate, Database
from engine.testing.pki import TestPKI
from engine.web import create_app

from .conftest import COMPANY_ANSWERS, PIN, SECRET
from .test_api import signed
from .test_approval import api_walk, bearer, csrf, officer_token

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "swreg-airline"
SWREG = str(Path(sys.executable).parent / "swreg")
UBN = "04595257"
OFFICER = "林關員"
AIRLINE_ANSWERS: dict[str, Any] = {
    **COMPANY_ANSWERS,
    "email": "ops@airline.example",
    "company_name": "測試航空股份有限公司",
    "iata_code": "ｃｉ",  # full-width and lower case: normalised to CI
}
_IGNORED = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.pyc")


# -- installing the example ----------------------------------------------------------------


def _source_files() -> list[Path]:
    """The example's files, without what builds and imports leave behind."""
    return sorted(
        path
        for path in EXAMPLE.rglob("*")
        if path.is_file()
        and path.suffix != ".pyc"
        and not any(
            part in ("build", "__pycache__") or part.endswith(".egg-info")
            for part in path.relative_to(EXAMPLE).parts
        )
    )


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(EXAMPLE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _builds_offline() -> bool:
    """Whether this venv's setuptools can build a wheel without downloading anything."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    try:
        version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    except ValueError:
        return False
    return version >= (70, 1)


def _pip_install(source: Path, target: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
        "--disable-pip-version-check", "--no-warn-script-location", "--target", str(target),
    ]  # fmt: skip
    if _builds_offline():
        command += ["--no-build-isolation", "--no-index"]
    done = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"pip install of the example failed:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def airline_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding the installed example (its package and its dist-info)."""
    digest = _source_digest()
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("swreg-airline")) if cache else tmp_path_factory.mktemp("airline")
    site = root / digest[:16]
    if not (site / ".installed").exists():
        work = Path(tempfile.mkdtemp(dir=root, prefix=".install-"))
        try:
            source = work / "source"
            shutil.copytree(EXAMPLE, source, ignore=_IGNORED)  # builds leave the tree clean
            target = work / "site"
            _pip_install(source, target)
            (target / ".installed").write_text(digest, encoding="utf-8")
            with contextlib.suppress(OSError):  # another session may have won the race
                os.rename(target, site)  # atomic
        finally:
            shutil.rmtree(work, ignore_errors=True)
    assert (site / ".installed").read_text(encoding="utf-8") == digest
    return site


@pytest.fixture
def airline_on_path(airline_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example importable (and its entry point visible) in this process, for one test."""
    monkeypatch.syspath_prepend(str(airline_site))
    yield airline_site
    for name in [m for m in sys.modules if m.split(".")[0] == "swreg_airline"]:
        del sys.modules[name]


def workflow_file(site: Path) -> Path:
    return site / "swreg_airline" / "workflow.toml"


def test_the_example_is_an_installed_distribution_using_the_public_api(
    airline_site: Path,
) -> None:
    [dist] = [
        d
        for d in importlib.metadata.distributions(path=[str(airline_site)])
        if d.metadata["Name"] == "swreg-airline"
    ]
    assert [(e.group, e.name, e.value) for e in dist.entry_points] == [
        ("swreg", "airline", "swreg_airline")
    ]
    assert workflow_file(airline_site).is_file()
    done = subprocess.run(
        [sys.executable, "-m", "swreg_airline"], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(airline_site)},
    )  # fmt: skip
    assert Path(done.stdout.strip()) == workflow_file(airline_site)
    for path in (EXAMPLE / "swreg_airline").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        engine_imports = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine")
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name.startswith("engine")
        }
        assert engine_imports <= {"engine", "engine.hookspecs"}, path


def test_not_installed_in_the_shared_environment() -> None:
    """The example stays out of the venv (other tests count the built-in types)."""
    names = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    assert "swreg-airline" not in names
    assert "airline" not in {n for n, _ in make_plugin_manager().list_name_plugin()}


# -- from the CLI ----------------------------------------------------------------------------


class Cli:
    """``swreg`` with the example on its path and its workflow file: ``run`` starts the console
    script (the installed package found through its entry point by a fresh process);
    ``invoke`` runs the same command in-process, where the example is on ``sys.path`` too."""

    def __init__(self, site: Path, db_url: str, tmp_path: Path, pki: TestPKI) -> None:
        self.tmp = tmp_path
        self.pki = pki
        self.outbox = tmp_path / "outbox"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "SWREG_WORKFLOW": str(workflow_file(site)),
            "SWREG_DATABASE_URL": db_url,
            "SWREG_SECRET_KEY": SECRET.hex(),
            "SWREG_ARGON2": "1,64,1",
            "SWREG_MAIL_OUTBOX": str(self.outbox),
        }

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [SWREG, *args, "--json"], input=stdin, capture_output=True, text=True,
            env=self.env, timeout=120, check=False,
        )  # fmt: skip
        output: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
        return done.returncode, output

    def invoke(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(cli_app, [*args, "--json"], env=self.env)
        output: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
        return result.exit_code, output

    def ok(self, *args: str) -> dict[str, Any]:
        code, output = self.invoke(*args)
        assert (code, output.get("ok")) == (0, True), output
        return output

    def register(self, ubn: str, answers: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        card = self.tmp / f"card-{ubn}.p12"
        self.pki.write_pkcs12(self.pki.issue_company(ubn, "測試航空股份有限公司"), card, PIN)
        path = self.tmp / f"answers-{ubn}-{answers.get('iata_code')}.json"
        path.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
        return self.run(
            "register", "--type", "enterprise.airline", "--answers", str(path),
            "--card", f"virtual:{card}", "--pin-stdin", stdin=PIN + "\n",
        )  # fmt: skip


@pytest.fixture
def cli(airline_on_path: Path, db_url: str, tmp_path: Path, pki: TestPKI) -> Cli:
    runner = Cli(airline_on_path, db_url, tmp_path, pki)
    runner.ok("init")
    for command in pki.trust_commands(tmp_path / "trusted"):
        runner.ok(*command)
    return runner


def stored(db_url: str, registration_id: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Accounts, certificates (all) and the registration's audit rows, read back directly."""
    database = Database(db_url)
    try:
        with database.unit_of_work() as uow:
            session = uow.session
            found = (
                list(session.scalars(select(Account).order_by(Account.id))),
                list(session.scalars(select(Certificate).order_by(Certificate.id))),
                list(
                    session.scalars(
                        select(AuditEntry)
                        .where(AuditEntry.registration_id == registration_id)
                        .order_by(AuditEntry.seq)
                    )
                ),
            )
            session.expunge_all()
            return found
    finally:
        database.dispose()


EXPECTED_EVENTS = [
    ("start", None, "category", "cli"),
    ("next", "category", "card_check", "cli"),
    ("next", "card_check", "basic_data", "cli"),
    ("next", "basic_data", "enterprise_info", "cli"),
    ("next", "enterprise_info", "approval", "cli"),
    ("approve", "approval", "completed", f"officer:{OFFICER}"),
]


def test_an_airline_registers_from_the_cli_and_an_officer_approves(cli: Cli, db_url: str) -> None:
    types = cli.ok("types")["applicant_types"]
    airline = next(t for t in types if t["code"] == "enterprise.airline")
    assert airline["steps"] == [
        "category", "card_check", "basic_data", "enterprise_info", "approval", "completed",
    ]  # fmt: skip
    shown = cli.ok("workflow", "show", "--type", "enterprise.airline")
    [path] = shown["paths"]
    approval = next(s for s in path["states"] if s["id"] == "approval")
    assert (approval["actor"], approval["timeout_minutes"]) == ("officer", None)
    moves = {(t["event"], t["target"]) for t in path["transitions"] if t["source"] == "approval"}
    assert moves == {
        ("approve", "completed"), ("reject", "rejected"), ("cancel", "cancelled"),
        ("expire", "expired"),
    }  # fmt: skip

    # a wrong IATA designator is refused with its field and code (and leaves no account)
    code, refused = cli.register(UBN, {**AIRLINE_ANSWERS, "iata_code": "12"})
    assert code == 1
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [("iata_code", "invalid_value")]

    code, out = cli.register(UBN, AIRLINE_ANSWERS)
    assert code == 0, out
    registration_id = out["registration_id"]
    assert out == {
        "ok": True, "registration_id": registration_id, "account": f"{UBN}-CI",
        "state": "approval", "type": "enterprise.airline", "awaiting": "officer",
        "status": {"zh-TW": "待審核", "en": "Awaiting approval"},
    }  # fmt: skip
    assert stored(db_url, registration_id)[0] == []  # no account before the officer approves

    queue = cli.ok("registrations", "list", "--state", "approval")["registrations"]
    assert [(r["id"], r["account"], r["status"]["zh-TW"]) for r in queue] == [
        (registration_id, f"{UBN}-CI", "待審核")
    ]
    assert queue[0]["data"]["iata_code"] == "CI" and queue[0]["expires_at"] is None
    shown = cli.ok("registrations", "show", registration_id)["registration"]
    assert (shown["state"], shown["awaiting"], shown["identity"]["ubn"]) == (
        "approval", "officer", UBN,
    )  # fmt: skip

    code, approved = cli.run("registrations", "approve", registration_id, "--officer", OFFICER)
    assert code == 0, approved
    assert (approved["state"], approved["account"]) == ("completed", f"{UBN}-CI")
    assert approved["registration"]["status"] == {"zh-TW": "註冊完成", "en": "Completed"}

    [account], [certificate], audit = stored(db_url, registration_id)
    assert (account.name, account.applicant_type, account.category, account.status) == (
        f"{UBN}-CI", "enterprise.airline", "enterprise", "pending_activation",
    )  # fmt: skip
    assert (account.ubn, account.email, account.company_name) == (
        UBN, "ops@airline.example", "測試航空股份有限公司",
    )  # fmt: skip
    assert account.profile == {"iata_code": "CI"}
    assert account.registration_id == registration_id
    assert (certificate.purpose, certificate.ubn, certificate.ca, certificate.status) == (
        "login", UBN, "MOEACA", "active",
    )  # fmt: skip
    assert certificate.account_id == account.id
    assert [(a.event, a.from_state, a.to_state, a.actor) for a in audit] == EXPECTED_EVENTS
    assert audit[3].diff["iata_code"] == "CI"
    assert audit[-1].diff == {"officer": OFFICER, "via": "cli", "account": f"{UBN}-CI"}
    assert {a.applicant_type for a in audit} == {"enterprise.airline"}
    assert len({a.workflow_hash for a in audit}) == 1
    [mail] = OutboxMailer(cli.outbox).messages()
    assert mail["To"] == "ops@airline.example"
    assert cli.ok("audit", "verify")["first_bad_seq"] is None

    # decided once; unknown ids and a missing officer are refused with their codes
    code, again = cli.invoke("registrations", "approve", registration_id, "--officer", OFFICER)
    assert (code, again["errors"][0]["code"]) == (1, "invalid_transition")
    code, unknown = cli.invoke("registrations", "approve", "no-such-id", "--officer", OFFICER)
    assert (code, unknown["errors"][0]["code"]) == (1, "registration_not_found")
    code, _ = cli.run("registrations", "approve", registration_id)
    assert code == 2


def test_an_officer_rejects_an_airline_from_the_cli(cli: Cli, db_url: str) -> None:
    code, out = cli.register("10458575", {**AIRLINE_ANSWERS, "ubn": "10458575", "iata_code": "BR"})
    assert (code, out["state"], out["account"]) == (0, "approval", "10458575-BR")
    registration_id = out["registration_id"]
    code, blank = cli.invoke(
        "registrations", "reject", registration_id, "--officer", OFFICER, "--reason", " "
    )
    assert (code, blank["errors"][0]["code"], blank["errors"][0]["field"]) == (
        1, "field_required", "reason",
    )  # fmt: skip
    code, rejected = cli.run(
        "registrations", "reject", registration_id, "--officer", OFFICER,
        "--reason", "IATA 代碼與民航局核准資料不符",
    )  # fmt: skip
    assert code == 0, rejected
    assert rejected["state"] == "rejected"
    assert rejected["registration"]["status"] == {"zh-TW": "已駁回", "en": "Rejected"}
    accounts, certificates, audit = stored(db_url, registration_id)
    assert accounts == [] and certificates == []
    last = audit[-1]
    assert (last.event, last.from_state, last.to_state, last.actor) == (
        "reject", "approval", "rejected", f"officer:{OFFICER}",
    )  # fmt: skip
    assert last.diff == {
        "officer": OFFICER,
        "via": "cli",
        "reason": "IATA 代碼與民航局核准資料不符",
    }
    assert cli.ok("registrations", "list", "--state", "approval")["registrations"] == []
    assert not cli.outbox.exists() or OutboxMailer(cli.outbox).messages() == []


# -- through the HTTP API --------------------------------------------------------------------


@pytest.fixture
def api(
    airline_on_path: Path, settings: Settings, clock: Any, pki: TestPKI, tmp_path: Path
) -> Iterator[tuple[TestClient, Any, Path, str]]:
    outbox = tmp_path / "outbox"
    configured = replace(
        settings, workflow_file=workflow_file(airline_on_path), mail=MailSettings(outbox=outbox)
    )
    app = bootstrap(configured, clock=clock)
    try:
        pki.publish_to(app.trust, actor="test")
        token = officer_token(app, pki, OFFICER)
        with TestClient(create_app(app)) as client:
            yield client, app, outbox, token
    finally:
        app.close()


def test_an_airline_registers_through_the_http_api_and_an_officer_approves(
    api: tuple[TestClient, Any, Path, str], pki: TestPKI, db_url: str
) -> None:
    client, app, outbox, token = api
    assert "airline" in {name for name, _ in app.plugins.list_name_plugin()}
    card = pki.issue_company(UBN, "測試航空股份有限公司")

    refused = api_walk_error(client, card, {**AIRLINE_ANSWERS, "iata_code": "C"})
    assert (refused["field"], refused["code"]) == ("iata_code", "invalid_value")

    view = api_walk(client, card, AIRLINE_ANSWERS, "enterprise.airline")
    assert (view["state"], view["account"], view["step_number"]) == ("approval", f"{UBN}-CI", 5)
    assert view["path"][-2:] == ["approval", "completed"]
    assert client.get(f"/api/registrations/{view['id']}").json()["state"] == "approval"

    queue = client.get("/api/officer/registrations?state=approval", headers=bearer(token))
    [waiting] = queue.json()["registrations"]
    assert (waiting["id"], waiting["applicant_type"], waiting["status"]["zh-TW"]) == (
        view["id"], "enterprise.airline", "待審核",
    )  # fmt: skip

    response = client.post(
        f"/api/officer/registrations/{view['id']}/approve",
        headers={**bearer(token), **csrf(client)},
    )
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["state"], done["account"], done["awaiting"]) == ("completed", f"{UBN}-CI", None)

    [account], [certificate], audit = stored(db_url, view["id"])
    assert (account.name, account.applicant_type, account.profile) == (
        f"{UBN}-CI", "enterprise.airline", {"iata_code": "CI"},
    )  # fmt: skip
    assert (certificate.ubn, certificate.account_id) == (UBN, account.id)
    events = [(a.event, a.from_state, a.to_state) for a in audit]
    assert events == [e[:3] for e in EXPECTED_EVENTS]
    assert audit[0].actor.startswith("api:") and audit[-1].actor == f"officer:{OFFICER}"
    [officer] = app.officers.list()
    assert audit[-1].diff["via"].startswith("api:client=")
    assert audit[-1].diff["certificate"] == officer.fingerprint
    [mail] = OutboxMailer(outbox).messages()
    assert mail["To"] == "ops@airline.example"


def api_walk_error(client: TestClient, card: Any, answers: dict[str, Any]) -> dict[str, Any]:
    """Walk up to 基本資料 and submit ``answers``, expecting a refusal; return its first error."""
    headers = csrf(client)
    view = client.post(
        "/api/registrations", json={"type": "enterprise.airline", "consent": True},
        headers=headers,
    ).json()  # fmt: skip
    challenge = client.post(f"/api/registrations/{view['id']}/challenge", headers=headers).json()
    client.post(
        f"/api/registrations/{view['id']}/card", json=signed(card, challenge), headers=headers
    )
    response = client.post(f"/api/registrations/{view['id']}/step", json=answers, headers=headers)
    assert response.status_code == 422, response.text
    client.post(f"/api/registrations/{view['id']}/cancel", headers=headers)
    error: dict[str, Any] = response.json()["errors"][0]
    return error
