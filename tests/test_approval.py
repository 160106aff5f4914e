"""Officer steps: a plugin's approval step, placed by a workflow file, where a registration waits
(待審核) until an officer approves it (the account is created as usual) or rejects it.

The step comes from an in-test plugin here; tests/test_example_plugin.py does the same through
the installed example package, from the CLI and the HTTP API.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine import (
    App,
    Catalog,
    DefinitionError,
    Event,
    FixedClock,
    Form,
    Labels,
    RegistrationView,
    Settings,
    StepSpec,
    SwregError,
    Text,
    bootstrap,
    hookimpl,
    load_definition,
    make_plugin_manager,
)
from engine._settings import MailSettings
from engine.core.workflow import ENDINGS, NO_DEADLINE, default_definition_source, transitions
from engine.services.mail import OutboxMailer
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS
from .helpers import accounts, audit_events, card_response, certificates, to_card_check

UBN = "04595257"
OFFICER = "林關員"
APPROVAL = StepSpec("approval", Labels("審核", "Approval"), actor="officer")


class ApprovalPlugin:
    """A plugin contributing an officer step, as a third-party package would."""

    def __init__(self, *steps: StepSpec) -> None:
        self.steps = steps or (APPROVAL,)

    @hookimpl
    def swreg_workflow_steps(self) -> list[StepSpec]:
        return list(self.steps)


def with_approval(applies_to: str = '["enterprise"]', extra: str = "") -> str:
    """The default workflow with ``approval`` placed after 企業資訊."""
    return default_definition_source().replace(
        '[[step]]\nid = "completed"',
        f'[[step]]\nid = "approval"\napplies_to = {applies_to}\n{extra}\n'
        '[[step]]\nid = "completed"',
    )


def officer_token(app: App, pki: TestPKI, name: str = OFFICER, role: str = "reviewer") -> str:
    """Put ``name`` on the officer list (a MOICA card of the test PKI) and issue their personal
    API token (``swreg officers add`` and ``swreg officers token``)."""
    app.officers.add(pki.issue_person(name=name).der(), name=name, role=role, actor="test")
    return app.officers.issue_token(name, actor="test").token


class Apps:
    """Apps over one database, each with its own workflow file and plugin manager."""

    def __init__(self, tmp_path: Path, settings: Settings, clock: FixedClock, pki: TestPKI):
        self.tmp_path = tmp_path
        self.outbox = tmp_path / "outbox"
        self.settings = replace(settings, mail=MailSettings(outbox=self.outbox))
        self.clock = clock
        self.pki = pki
        self.opened: list[App] = []

    def open(self, source: str | None = None, *plugins: object) -> App:
        settings = self.settings
        if source is not None:
            path = self.tmp_path / f"workflow-{len(self.opened)}.toml"
            path.write_text(source, encoding="utf-8")
            settings = replace(settings, workflow_file=path)
        manager = make_plugin_manager(plugins=plugins or [ApprovalPlugin()])
        app = bootstrap(settings, clock=self.clock, plugins=manager)
        self.pki.publish_to(app.trust, actor="test")
        self.opened.append(app)
        return app

    def mails(self) -> list[Any]:
        return OutboxMailer(self.outbox).messages() if self.outbox.exists() else []


@pytest.fixture
def apps(tmp_path: Path, settings: Settings, clock: FixedClock, pki: TestPKI) -> Iterator[Apps]:
    made = Apps(tmp_path, settings, clock, pki)
    yield made
    for app in made.opened:
        app.close()


@pytest.fixture
def officer_app(apps: Apps) -> App:
    return apps.open(with_approval())


def walk(app: App, type_code: str, card: IssuedCard, answers: dict[str, Any]) -> RegistrationView:
    """The applicant's part: start, card check, every form until it ends or awaits an officer."""
    view = to_card_check(app, type_code)
    view = app.registrations.submit_card(view.id, card_response(app, view, card))
    while view.state not in ENDINGS and view.awaiting is None:
        view = app.registrations.submit(view.id, answers)
    return view


def audit_rows(app: App, registration_id: str) -> list[Any]:
    with app.database.unit_of_work() as uow:
        found = uow.audit.entries(registration_id)
        uow.session.expunge_all()
        return found


def refusal(info: pytest.ExceptionInfo[SwregError]) -> tuple[str, str | None]:
    return str(info.value.code), info.value.field


# -- waiting, approving, rejecting -------------------------------------------------------------


def test_an_enterprise_registration_waits_for_an_officer(
    officer_app: App, apps: Apps, pki: TestPKI, clock: FixedClock
) -> None:
    view = walk(officer_app, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    assert view.path == (
        "category", "card_check", "basic_data", "enterprise_info", "approval", "completed",
    )  # fmt: skip
    assert (view.state, view.awaiting, view.step_number) == ("approval", "officer", 5)
    assert (view.status.zh_tw, view.status.en) == ("待審核", "Awaiting approval")
    assert view.account == UBN  # the name it will get
    assert view.expires_at == NO_DEADLINE
    assert accounts(officer_app) == [] and apps.mails() == []

    # the applicant has nothing to submit and cannot step back into the data
    for action in (
        lambda: officer_app.registrations.submit(view.id, COMPANY_ANSWERS),
        lambda: officer_app.registrations.back(view.id),
    ):
        with pytest.raises(SwregError) as info:
            action()
        assert refusal(info) == ("invalid_transition", None)

    # waiting for an officer is not idleness: a day later it still waits
    clock.advance(timedelta(days=1))
    assert officer_app.registrations.expire_idle() == 0
    assert officer_app.registrations.status(view.id).state == "approval"
    queue = officer_app.registrations.find(state="approval")
    assert [v.id for v in queue] == [view.id]
    assert audit_events(officer_app, view.id)[-1] == ("next", "enterprise_info", "approval")


def test_persons_do_not_pass_the_enterprise_approval(officer_app: App, pki: TestPKI) -> None:
    view = walk(officer_app, "person.general", pki.issue_person(), PERSON_ANSWERS)
    assert (view.state, view.awaiting) == ("completed", None)
    assert "approval" not in view.path


def test_approval_creates_the_account_as_a_completion_does(
    officer_app: App, apps: Apps, pki: TestPKI
) -> None:
    told: list[Any] = []

    class Listener:
        @hookimpl
        def swreg_registration_completed(self, event: Any) -> None:
            told.append(event)

    officer_app.plugins.register(Listener())
    view = walk(officer_app, "enterprise.shipping", pki.issue_company(UBN), COMPANY_ANSWERS)
    done = officer_app.registrations.approve(view.id, officer=f"  {OFFICER} ", via="cli")
    assert (done.state, done.account, done.awaiting) == ("completed", UBN, None)
    assert (done.status.zh_tw, done.status.en) == ("註冊完成", "Completed")

    [account] = accounts(officer_app)
    assert (account.name, account.applicant_type, account.status) == (
        UBN, "enterprise.shipping", "pending_activation",
    )  # fmt: skip
    assert account.registration_id == view.id
    assert [c.ubn for c in certificates(officer_app)] == [UBN]
    last = audit_rows(officer_app, view.id)[-1]
    assert (last.event, last.from_state, last.to_state) == ("approve", "approval", "completed")
    assert last.actor == f"officer:{OFFICER}"
    assert last.diff == {"officer": OFFICER, "via": "cli", "account": UBN}
    assert [e.account for e in told] == [UBN]
    [mail] = apps.mails()
    assert mail["To"] == COMPANY_ANSWERS["email"]
    # decided once: a second decision is refused
    with pytest.raises(SwregError) as info:
        officer_app.registrations.reject(view.id, officer=OFFICER, reason="too late")
    assert refusal(info) == ("invalid_transition", None)
    with officer_app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_rejection_ends_the_registration_without_an_account(
    officer_app: App, apps: Apps, pki: TestPKI
) -> None:
    card = pki.issue_company(UBN)
    view = walk(officer_app, "enterprise.general", card, COMPANY_ANSWERS)
    done = officer_app.registrations.reject(
        view.id, officer=OFFICER, reason="統一編號與營業登記不符", via="api:10.0.0.1"
    )
    assert (done.state, done.awaiting) == ("rejected", None)
    assert (done.status.zh_tw, done.status.en) == ("已駁回", "Rejected")
    assert accounts(officer_app) == [] and certificates(officer_app) == []
    assert apps.mails() == []
    last = audit_rows(officer_app, view.id)[-1]
    assert (last.event, last.from_state, last.to_state, last.actor) == (
        "reject", "approval", "rejected", f"officer:{OFFICER}",
    )  # fmt: skip
    assert last.diff == {
        "officer": OFFICER,
        "via": "api:10.0.0.1",
        "reason": "統一編號與營業登記不符",
    }
    for action in (
        lambda: officer_app.registrations.approve(view.id, officer=OFFICER),
        lambda: officer_app.registrations.cancel(view.id),
    ):
        with pytest.raises(SwregError) as info:
            action()
        assert refusal(info) == ("invalid_transition", None)
    # a rejected registration never expires, and the same card may apply again
    assert officer_app.registrations.expire_idle() == 0
    again = walk(officer_app, "enterprise.general", card, COMPANY_ANSWERS)
    assert again.state == "approval"


def test_the_applicant_may_withdraw_while_waiting(officer_app: App, pki: TestPKI) -> None:
    view = walk(officer_app, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    assert officer_app.registrations.cancel(view.id).state == "cancelled"
    with pytest.raises(SwregError) as info:
        officer_app.registrations.approve(view.id, officer=OFFICER)
    assert refusal(info) == ("invalid_transition", None)


@pytest.mark.parametrize(
    ("officer", "reason", "expected"),
    [
        ("", "x", ("field_required", "officer")),
        ("  ", "x", ("field_required", "officer")),
        (OFFICER, "", ("field_required", "reason")),
        (OFFICER, "x" * 501, ("field_too_long", "reason")),
        ("a" * 101, "x", ("field_too_long", "officer")),
        ("關員\n", "bad\x00", ("invalid_value", "reason")),
    ],
)
def test_decisions_are_validated(
    officer_app: App, pki: TestPKI, officer: str, reason: str, expected: tuple[str, str]
) -> None:
    view = walk(officer_app, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    with pytest.raises(SwregError) as info:
        officer_app.registrations.reject(view.id, officer=officer, reason=reason)
    assert refusal(info) == expected
    assert officer_app.registrations.status(view.id).state == "approval"


def test_only_registrations_waiting_for_an_officer_are_decided(
    officer_app: App, pki: TestPKI
) -> None:
    view = to_card_check(officer_app, "enterprise.general")
    with pytest.raises(SwregError) as info:
        officer_app.registrations.approve(view.id, officer=OFFICER)
    assert refusal(info) == ("invalid_transition", None)
    with pytest.raises(SwregError) as info:
        officer_app.registrations.approve("no-such-id", officer=OFFICER)
    assert refusal(info) == ("registration_not_found", "registration_id")


def test_an_officer_step_with_a_timeout_expires(
    apps: Apps, pki: TestPKI, clock: FixedClock
) -> None:
    app = apps.open(with_approval(extra="timeout_minutes = 60"))
    view = walk(app, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    assert view.expires_at == clock.now() + timedelta(minutes=60)
    clock.advance(timedelta(minutes=59))
    assert app.registrations.expire_idle() == 0
    clock.advance(timedelta(minutes=2))
    assert app.registrations.find(state="approval") == []  # past its deadline: not in the queue
    assert app.registrations.expire_idle() == 1
    with pytest.raises(SwregError) as info:
        app.registrations.approve(view.id, officer=OFFICER)
    assert refusal(info) == ("registration_expired", None)
    assert audit_events(app, view.id)[-1] == ("expire", "approval", "expired")


def test_an_approval_before_an_applicant_step(apps: Apps, pki: TestPKI, clock: FixedClock) -> None:
    """Placed before 企業資訊: approving hands the registration back to the applicant, who
    cannot step back past the officer's decision."""
    source = default_definition_source().replace(
        '[[step]]\nid = "enterprise_info"',
        '[[step]]\nid = "approval"\napplies_to = ["enterprise"]\n[[step]]\nid = "enterprise_info"',
    )
    app = apps.open(source)
    view = walk(app, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    assert (view.state, view.step_number) == ("approval", 4)
    view = app.registrations.approve(view.id, officer=OFFICER)
    assert (view.state, view.awaiting) == ("enterprise_info", None)
    assert view.expires_at == clock.now() + timedelta(minutes=30)  # the applicant's turn again
    assert accounts(app) == []
    with pytest.raises(SwregError) as info:
        app.registrations.back(view.id)
    assert refusal(info) == ("invalid_transition", None)
    view = app.registrations.submit(view.id, COMPANY_ANSWERS)
    assert (view.state, view.account) == ("completed", UBN)


# -- the workflow file changes under running registrations --------------------------------------


def test_adding_the_approval_step_does_not_touch_started_registrations(
    apps: Apps, pki: TestPKI
) -> None:
    """Started under the default definition; the operator then adds the approval step."""
    before = apps.open(None)
    view = to_card_check(before, "enterprise.general")
    view = before.registrations.submit_card(
        view.id, card_response(before, view, pki.issue_company(UBN))
    )
    after = apps.open(with_approval())
    assert after.workflow.hash != before.workflow.hash
    view = after.registrations.submit(view.id, COMPANY_ANSWERS)  # 基本資料
    assert view.path == ("category", "card_check", "basic_data", "enterprise_info", "completed")
    view = after.registrations.submit(view.id, COMPANY_ANSWERS)  # 企業資訊
    assert (view.state, view.account) == ("completed", UBN)  # no approval: it was not there
    # a registration started now waits for the officer
    fresh = walk(after, "enterprise.general", pki.issue_company("10458575"), COMPANY_ANSWERS | {
        "ubn": "10458575"
    })  # fmt: skip
    assert fresh.state == "approval"


def test_removing_the_approval_step_does_not_release_waiting_registrations(
    apps: Apps, pki: TestPKI
) -> None:
    """Started (and waiting) under a definition with approval; the operator then removes it."""
    before = apps.open(with_approval())
    waiting = walk(before, "enterprise.general", pki.issue_company(UBN), COMPANY_ANSWERS)
    started = to_card_check(before, "enterprise.express")
    after = apps.open(None)  # a new worker with the default definition, same plugins
    assert "approval" not in after.workflow.path_for(after.catalog.applicant("enterprise.general"))
    # the waiting one still waits, still in the queue, and only an officer moves it on
    assert after.registrations.status(waiting.id).awaiting == "officer"
    assert [v.id for v in after.registrations.find(state="approval")] == [waiting.id]
    with pytest.raises(SwregError):
        after.registrations.submit(waiting.id, COMPANY_ANSWERS)
    assert after.registrations.approve(waiting.id, officer=OFFICER).state == "completed"
    # the one started before the change but not yet waiting also goes to approval
    card = pki.issue_company("10458575")
    view = after.registrations.submit_card(started.id, card_response(after, started, card))
    answers = COMPANY_ANSWERS | {"ubn": "10458575"}
    view = after.registrations.submit(view.id, answers)
    view = after.registrations.submit(view.id, answers)
    assert (view.state, view.awaiting) == ("approval", "officer")
    with after.database.unit_of_work() as uow:
        registration = uow.registrations.get(view.id)
        assert registration is not None and registration.workflow_hash == before.workflow.hash


# -- the compiled machine and the definition -----------------------------------------------------


def test_the_compiled_machine_at_an_officer_step() -> None:
    catalog = Catalog.from_plugins(make_plugin_manager(plugins=[ApprovalPlugin()]))
    definition = load_definition(
        with_approval(), contributed=catalog.steps, applicants=catalog.applicant_types.values()
    )
    company = catalog.applicant("enterprise.general")
    moves = {(t.source, t.event, t.target) for t in transitions(definition, company)}
    at_approval = {(e, t) for s, e, t in moves if s == "approval"}
    assert at_approval == {
        ("approve", "completed"), ("reject", "rejected"), ("cancel", "cancelled"),
        ("expire", "expired"),
    }  # fmt: skip
    assert ("enterprise_info", "next", "approval") in moves
    assert not {m for m in moves if m[1] in ("approve", "reject") and m[0] != "approval"}
    assert definition.step("approval").actor == "officer"
    person = catalog.applicant("person.general")
    assert not {m for m in transitions(definition, person) if m.event in ("approve", "reject")}
    assert {Event.APPROVE.value, Event.REJECT.value} <= {e.value for e in Event}


class _Note(Form):
    note: Text


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (StepSpec("review", Labels("審", "R"), form=_Note, actor="officer"), "takes no applicant"),
        (StepSpec("review", Labels("審", "R"), actor="clerk"), "actor must be"),  # type: ignore[arg-type]
        (StepSpec("basic_data", Labels("審", "R"), actor="officer"), "is built in"),
        (StepSpec("Review Step", Labels("審", "R")), "must match"),
    ],
)
def test_officer_steps_are_checked_at_bootstrap(spec: StepSpec, words: str) -> None:
    with pytest.raises(DefinitionError, match=words):
        Catalog.from_plugins(make_plugin_manager(plugins=[ApprovalPlugin(spec)]))


# -- the officer HTTP API ------------------------------------------------------------------------


@dataclass
class OfficerClient:
    """A portal client, its app, and the personal token of the officer ``OFFICER``."""

    client: TestClient
    app: App
    token: str

    def bearer(self) -> dict[str, str]:
        return bearer(self.token)


@pytest.fixture
def officer_client(apps: Apps, pki: TestPKI) -> Iterator[OfficerClient]:
    app = apps.open(with_approval())
    token = officer_token(app, pki)
    with TestClient(create_app(app)) as client:
        yield OfficerClient(client, app, token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf(client: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.get("/api/csrf").json()["token"]}


def api_walk(
    client: TestClient,
    card: IssuedCard,
    answers: dict[str, Any],
    type_code: str = "enterprise.general",
) -> dict[str, Any]:
    """A registration through the applicant's JSON API, up to the officer (or the end)."""
    headers = csrf(client)
    view = client.post(
        "/api/registrations", json={"type": type_code, "consent": True}, headers=headers
    ).json()
    challenge = client.post(f"/api/registrations/{view['id']}/challenge", headers=headers).json()
    signed = {
        "challenge_id": challenge["challenge_id"],
        "certificate": base64.b64encode(card.der()).decode(),
        "signature": base64.b64encode(card.sign(base64.b64decode(challenge["payload"]))).decode(),
        "chain": [base64.b64encode(der).decode() for der in card.chain_der()],
    }
    response = client.post(f"/api/registrations/{view['id']}/card", json=signed, headers=headers)
    view = response.json()
    while view["state"] not in ("completed", "approval"):
        response = client.post(
            f"/api/registrations/{view['id']}/step", json=answers, headers=headers
        )
        assert response.status_code == 200, response.text
        view = response.json()
    result: dict[str, Any] = view
    return result


def test_the_officer_api_needs_an_officers_personal_token(officer_client: OfficerClient) -> None:
    client, token = officer_client.client, officer_client.token
    headers = csrf(client)
    wrong = (
        {}, bearer("wrong"), {"Authorization": f"Basic {token}"}, bearer(token + "x"),
        bearer(token[:-1]), bearer(token.upper()),
    )  # fmt: skip
    for extra in wrong:
        response = client.get("/api/officer/registrations", headers={**headers, **extra})
        assert response.status_code == 403, extra
        assert response.json()["errors"][0]["code"] == "not_authorized"
        response = client.post(
            "/api/officer/registrations/x/approve", json={"officer": OFFICER},
            headers={**headers, **extra},
        )  # fmt: skip
        assert (response.status_code, response.json()["errors"][0]["code"]) == (
            403, "not_authorized",
        )  # fmt: skip
    assert client.get("/api/officer/registrations", headers=bearer(token)).status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/api/officer/registrations/{registration_id}/approve" in schema["paths"]


def test_an_empty_officer_list_lets_nobody_in(apps: Apps) -> None:
    """No officer has a token (the shared ``SWREG_OFFICER_TOKEN`` is gone): every token fails."""
    app = apps.open(with_approval())
    with TestClient(create_app(app)) as client:
        for token in ("x" * 43, "officer-token-" + "x" * 40, ""):
            response = client.get("/api/officer/registrations", headers=bearer(token))
            assert (response.status_code, response.json()["errors"][0]["code"]) == (
                403, "not_authorized",
            )  # fmt: skip


def test_officers_approve_and_reject_through_the_api(
    officer_client: OfficerClient, apps: Apps, pki: TestPKI
) -> None:
    client, app = officer_client.client, officer_client.app
    bearer = officer_client.bearer
    waiting = api_walk(client, pki.issue_company(UBN), COMPANY_ANSWERS)
    assert (waiting["state"], waiting["step_number"]) == ("approval", 5)
    other_answers = COMPANY_ANSWERS | {"ubn": "10458575"}
    other = api_walk(client, pki.issue_company("10458575"), other_answers)

    queue = client.get("/api/officer/registrations?state=approval", headers=bearer()).json()
    listed = {r["id"]: r for r in queue["registrations"]}
    assert set(listed) == {waiting["id"], other["id"]}
    assert listed[waiting["id"]]["status"] == {"zh-TW": "待審核", "en": "Awaiting approval"}
    assert listed[waiting["id"]]["awaiting"] == "officer"
    assert listed[waiting["id"]]["expires_at"] is None
    assert listed[waiting["id"]]["data"]["company_name"] == COMPANY_ANSWERS["company_name"]
    assert "password_hash" not in listed[waiting["id"]]["data"]
    other_type = "/api/officer/registrations?state=approval&type=enterprise.shipping"
    assert client.get(other_type, headers=bearer()).json() == {"registrations": []}

    headers = {**bearer(), **csrf(client)}
    approved = client.post(f"/api/officer/registrations/{waiting['id']}/approve", headers=headers)
    assert approved.status_code == 200, approved.text
    assert (approved.json()["state"], approved.json()["account"]) == ("completed", UBN)
    rejected = client.post(
        f"/api/officer/registrations/{other['id']}/reject",
        json={"reason": "資料不符"}, headers=headers,
    )  # fmt: skip
    assert rejected.json()["state"] == "rejected"
    assert [a.name for a in accounts(app)] == [UBN]
    assert [m["To"] for m in apps.mails()] == [COMPANY_ANSWERS["email"]]
    [officer] = app.officers.list()
    last = audit_rows(app, other["id"])[-1]
    assert (last.event, last.actor, last.diff["reason"], last.diff["officer"]) == (
        "reject", f"officer:{OFFICER}", "資料不符", OFFICER,
    )  # fmt: skip
    assert re.fullmatch(r"api:client=[0-9a-f]{16}", last.diff["via"])
    assert last.diff["certificate"] == officer.fingerprint

    again = client.post(f"/api/officer/registrations/{waiting['id']}/approve", headers=headers)
    assert (again.status_code, again.json()["errors"][0]["code"]) == (422, "invalid_transition")
    blank = client.post(
        f"/api/officer/registrations/{other['id']}/reject", json={}, headers=headers
    )
    assert (blank.status_code, blank.json()["errors"][0]["field"]) == (422, "reason")
    missing = client.get("/api/officer/registrations/nope", headers=bearer())
    assert missing.status_code == 404
    # the applicant sees the outcome too
    assert client.get(f"/api/registrations/{other['id']}").json()["state"] == "rejected"


def test_officer_decisions_need_no_csrf_token(officer_client: OfficerClient, pki: TestPKI) -> None:
    """The bearer header cannot be sent cross-site by a browser: no CSRF token is asked for."""
    client = officer_client.client
    waiting = api_walk(client, pki.issue_company(UBN), COMPANY_ANSWERS)
    client.cookies.clear()
    response = client.post(
        f"/api/officer/registrations/{waiting['id']}/approve", headers=officer_client.bearer()
    )
    assert response.status_code == 200, response.text


def test_the_authenticated_officer_decides_not_the_name_in_the_body(
    officer_client: OfficerClient, pki: TestPKI
) -> None:
    """A client naming another officer in the body (the old API's ``officer`` field) changes
    nothing: the audit row's actor is the officer whose token was presented."""
    client, app = officer_client.client, officer_client.app
    reviewer = officer_token(app, pki, "陳審核員", role="reviewer")
    waiting = api_walk(client, pki.issue_company(UBN), COMPANY_ANSWERS)
    response = client.post(
        f"/api/officer/registrations/{waiting['id']}/approve", json={"officer": OFFICER},
        headers=bearer(reviewer),
    )  # fmt: skip
    assert response.status_code == 200, response.text
    by_name = {o.name: o for o in app.officers.list()}
    last = audit_rows(app, waiting["id"])[-1]
    assert (last.event, last.actor) == ("approve", "officer:陳審核員")
    assert last.diff["officer"] == "陳審核員"
    assert last.diff["certificate"] == by_name["陳審核員"].fingerprint
    assert by_name["陳審核員"].fingerprint != by_name[OFFICER].fingerprint


def test_the_wizard_shows_awaiting_approval_and_rejected(
    officer_client: OfficerClient, pki: TestPKI
) -> None:
    client, app = officer_client.client, officer_client.app
    waiting = api_walk(client, pki.issue_company(UBN), COMPANY_ANSWERS)
    page = client.get(f"/register/{waiting['id']}")
    assert page.status_code == 200
    assert "待審核" in page.text and 'id="awaiting"' in page.text
    assert 'aria-current="step"' in page.text
    english = client.get(f"/register/{waiting['id']}?lang=en")
    assert "Awaiting approval" in english.text
    app.registrations.reject(waiting["id"], officer=OFFICER, reason="資料不符")
    page = client.get(f"/register/{waiting['id']}?lang=zh-TW")
    assert page.status_code == 200 and "已駁回" in page.text and 'id="rejected"' in page.text
    assert "待審核" not in page.text
