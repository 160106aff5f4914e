"""Retention: ``swreg purge`` (DESIGN.md §6, issue 13 item 5 "Nothing is purged").

Before the fix nothing was ever deleted: a registration's e-mail, phone, address, birth date,
name and card stayed in the database for ever, and an account nobody activated kept its name
and its card from being registered again.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine import App, FixedClock, Settings, SwregError, UsageError, bootstrap
from engine.cli.app import app as cli_app
from engine.store import (
    Account,
    ActivationToken,
    AuditEntry,
    Certificate,
    LoginSession,
    Officer,
    OfficerSession,
    Registration,
    Reminder,
)
from engine.testing.pki import IssuedCard, TestPKI

from .conftest import PERSON_ANSWERS, SECRET
from .helpers import card_response, enrol, to_card_check

RETENTION = timedelta(days=30)
KEPT_EVIDENCE = {
    "fingerprint", "ca", "serial", "issuer", "not_before", "not_after", "validated_at",
    "crl_number", "revocation", "challenge_id", "origin",
}  # fmt: skip


# -- helpers -----------------------------------------------------------------------------------


PEOPLE = {  # name: (national ID, e-mail)
    "王小明": ("A223456781", "ming@example.com"),
    "李小華": ("B223456782", "hua@example.com"),
    "陳小美": ("C223456783", "mei@example.com"),
    "張小芳": ("D223456784", "fang@example.com"),
    "林小安": ("E223456785", "an@example.com"),
    "黃小強": ("F223456786", "qiang@example.com"),
}


def person(pki: TestPKI, name: str) -> IssuedCard:
    """The card of one of :data:`PEOPLE` (its certificate names them and their ID's last 4)."""
    return pki.issue_person(name, PEOPLE[name][0][-4:])


def answers(name: str) -> dict[str, Any]:
    national_id, email = PEOPLE[name]
    return {**PERSON_ANSWERS, "contact_name": name, "email": email, "national_id": national_id}


def register(app: App, pki: TestPKI, name: str) -> str:
    """A whole registration of one of :data:`PEOPLE` (its account left pending); its id."""
    view = enrol(app, "person.general", person(pki, name), answers(name))
    assert view.state == "completed"
    return view.id


def registration(app: App, registration_id: str) -> dict[str, Any]:
    """The stored row, every column."""
    with app.database.unit_of_work() as uow:
        row = uow.session.execute(
            select(Registration.__table__).where(Registration.id == registration_id)
        ).one()
        return dict(row._mapping)


def table(app: App, model: type[Any]) -> list[dict[str, Any]]:
    """Every row of ``model`` as a dict, in a stable order."""
    with app.database.unit_of_work() as uow:
        key = next(iter(model.__table__.primary_key.columns))
        found = uow.session.execute(select(model.__table__).order_by(key)).all()
        return [dict(r._mapping) for r in found]


def audit_count(app: App) -> int:
    with app.database.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def last_audit(app: App) -> AuditEntry:
    with app.database.unit_of_work() as uow:
        row = uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
        assert row is not None
        uow.session.expunge_all()
        return row


def activate(app: App, name: str) -> None:
    link = app.accounts.send_activation(name)
    app.accounts.activate(link.rsplit("/", 1)[1], actor="test")


def at_basic_data(app: App, card: IssuedCard) -> str:
    view = to_card_check(app, "person.general")
    view = app.registrations.submit_card(view.id, card_response(app, view, card))
    assert view.state == "basic_data"
    return view.id


def assert_purged(app: App, before: dict[str, Any], now: datetime, state: str) -> None:
    """Exactly what a purge leaves of a registration (DESIGN.md §6)."""
    after = registration(app, before["id"])
    assert after["data"] == {}
    assert after["locked"] == []
    assert after["certificate_der"] is None
    assert after["account_name"] is None
    assert after["purged_at"] == now
    assert after["certificate_fingerprint"] == before["certificate_fingerprint"] is not None
    assert set(after["evidence"]) == KEPT_EVIDENCE
    assert {k: before["evidence"][k] for k in KEPT_EVIDENCE} == after["evidence"]
    assert "identity" not in after["evidence"] and "subject" not in after["evidence"]
    kept = ("id", "chosen_type", "applicant_type", "workflow_hash", "origin", "created_at")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert after["state"] == state
    assert after["version"] == before["version"] + (2 if state != before["state"] else 1)
    if state == before["state"]:
        assert (after["updated_at"], after["expires_at"]) == (
            before["updated_at"],
            before["expires_at"],
        )


class World:
    """Registrations and accounts of every kind, made at ``start`` and 20 days later."""

    def __init__(self, app: App, clock: FixedClock, pki: TestPKI) -> None:
        self.app = app
        self.start = clock.now()
        # day 0
        self.active = register(app, pki, "王小明")
        activate(app, "ming@example.com")
        self.pending_card = person(pki, "李小華")
        self.pending = enrol(app, "person.general", self.pending_card, answers("李小華")).id
        self.cancelled = at_basic_data(app, person(pki, "陳小美"))
        app.registrations.cancel(self.cancelled)
        self.idle = at_basic_data(app, person(pki, "張小芳"))  # never marked expired
        # day 20
        clock.advance(timedelta(days=20))
        self.recent = register(app, pki, "林小安")
        # day 31
        clock.advance(timedelta(days=11))
        self.open = at_basic_data(app, person(pki, "黃小強"))

    def rows(self) -> dict[str, dict[str, Any]]:
        ids = (self.active, self.pending, self.cancelled, self.idle, self.recent, self.open)
        return {i: registration(self.app, i) for i in ids}


@pytest.fixture
def world(app: App, clock: FixedClock, pki: TestPKI) -> World:
    return World(app, clock, pki)


# -- the service -------------------------------------------------------------------------------


def test_purge_after_the_retention_time(world: World, app: App, clock: FixedClock) -> None:
    before = world.rows()
    accounts_before = {a["name"]: a for a in table(app, Account)}
    certificates_before = table(app, Certificate)
    audit_before = audit_count(app)
    now = clock.now()

    report = app.retention.purge(days=30)

    assert report.as_dict() == {
        "retention_days": 30,
        "cutoff": (now - RETENTION).isoformat(),
        "expired": 1,  # the idle one, marked expired first
        "registrations": 4,
        "accounts": 1,
        "links": 0,
        "mobile_tickets": 0,
        "sessions": 0,
    }
    assert_purged(app, before[world.active], now, "completed")
    assert_purged(app, before[world.pending], now, "completed")
    assert_purged(app, before[world.cancelled], now, "cancelled")
    assert_purged(app, before[world.idle], now, "expired")
    idle = registration(app, world.idle)
    assert (idle["updated_at"], idle["expires_at"]) == (now, before[world.idle]["expires_at"])
    for untouched in (world.recent, world.open):
        assert registration(app, untouched) == before[untouched]
    # the account never activated is gone with its certificate and links; the others stay
    accounts_after = {a["name"]: a for a in table(app, Account)}
    assert accounts_after == {
        "ming@example.com": accounts_before["ming@example.com"],
        "an@example.com": accounts_before["an@example.com"],
    }
    gone = accounts_before["hua@example.com"]["id"]
    assert table(app, Certificate) == [c for c in certificates_before if c["account_id"] != gone]
    assert [t for t in table(app, ActivationToken) if t["account_id"] == gone] == []
    # one audit row (the expiry's besides), with counts only; the chain still verifies
    assert audit_count(app) == audit_before + 2
    row = last_audit(app)
    assert (row.event, row.actor, row.registration_id) == ("purge", "cli", None)
    assert row.diff == {
        "retention_days": 30,
        "cutoff": (now - RETENTION).isoformat(),
        "registrations": 4,
        "accounts": 1,
    }
    assert app.audit.verify().ok

    again = app.retention.purge(days=30)

    assert (again.expired, again.registrations, again.accounts) == (0, 0, 0)
    assert audit_count(app) == audit_before + 2
    assert registration(app, world.active)["purged_at"] == now


def test_a_freed_name_and_card_register_again(
    world: World, app: App, clock: FixedClock, pki: TestPKI
) -> None:
    assert not app.registrations.check_account("hua@example.com")
    app.retention.purge(days=30)
    assert app.registrations.check_account("hua@example.com")

    view = enrol(app, "person.general", world.pending_card, answers("李小華"))

    assert (view.state, view.account) == ("completed", "hua@example.com")
    assert app.audit.verify().ok


def test_retention_zero_purges_everything_already_ended(
    world: World, app: App, clock: FixedClock
) -> None:
    before = world.rows()
    now = clock.now()

    report = app.retention.purge(days=0)

    assert (report.expired, report.registrations, report.accounts) == (1, 5, 2)
    for ended in (world.active, world.pending, world.cancelled, world.idle, world.recent):
        assert registration(app, ended)["purged_at"] == now
    assert registration(app, world.open) == before[world.open]  # still open: untouched
    assert sorted(a["name"] for a in table(app, Account)) == ["ming@example.com"]
    assert app.audit.verify().ok
    assert app.retention.purge(days=0).registrations == 0


def test_an_account_whose_link_still_works_is_kept(
    app: App, clock: FixedClock, pki: TestPKI
) -> None:
    view = app.registrations.status(register(app, pki, "王小明"))
    clock.advance(timedelta(hours=1))

    report = app.retention.purge(days=0)

    assert (report.registrations, report.accounts) == (1, 0)  # the link is valid for 24 h
    assert [a["name"] for a in table(app, Account)] == ["ming@example.com"]
    clock.advance(timedelta(hours=24))
    assert app.retention.purge(days=0).accounts == 1
    assert table(app, Account) == [] and table(app, Certificate) == []
    assert registration(app, view.id)["certificate_fingerprint"] is not None


def test_reminders_of_a_deleted_account_go_with_it(
    app: App, clock: FixedClock, pki: TestPKI
) -> None:
    register(app, pki, "王小明")
    [certificate] = table(app, Certificate)
    with app.database.unit_of_work() as uow:
        uow.session.add(
            Reminder(
                certificate_id=certificate["id"],
                window_days=60,
                created_at=clock.now(),
                claimed_at=clock.now(),
                attempts=1,
            )
        )
        uow.commit()
    clock.advance(timedelta(days=2))

    assert app.retention.purge(days=1).accounts == 1

    assert table(app, Reminder) == [] and table(app, Certificate) == []


def test_sessions_that_can_no_longer_be_used_go_at_every_run(
    app: App, clock: FixedClock, pki: TestPKI
) -> None:
    """Ended or expired card-login sessions (with the client they describe) and expired console
    sessions are deleted whatever the retention; live ones of both kinds stay."""
    register(app, pki, "王小明")
    app.officers.add(person(pki, "李小華").der(), name="林關員", role="reviewer")
    [account], [officer] = table(app, Account), table(app, Officer)
    now = clock.now()
    with app.database.unit_of_work() as uow:
        for token, ended, expires in (
            ("ended", now - timedelta(minutes=5), now + timedelta(minutes=10)),
            ("expired", None, now - timedelta(seconds=1)),
            ("live", None, now + timedelta(minutes=10)),
        ):
            uow.session.add(
                LoginSession(
                    token_hash=token, account_id=account["id"], created_at=now,
                    expires_at=expires, last_seen_at=now, ended_at=ended,
                    client="Firefox on Linux, 203.0.113.*",
                )
            )  # fmt: skip
        for token, expires in (("console-expired", now), ("console-live", now + timedelta(1))):
            uow.session.add(
                OfficerSession(
                    token_hash=token, officer_id=officer["id"], created_at=now,
                    expires_at=expires, last_seen_at=now,
                )
            )  # fmt: skip
        uow.commit()
    audit_before = audit_count(app)

    report = app.retention.purge(days=30)

    assert (report.sessions, report.registrations, report.accounts) == (3, 0, 0)
    assert [row["token_hash"] for row in table(app, LoginSession)] == ["live"]
    assert [row["token_hash"] for row in table(app, OfficerSession)] == ["console-live"]
    assert audit_count(app) == audit_before  # dead sessions hold no history worth a row
    assert app.retention.purge(days=30).sessions == 0


def test_waiting_and_open_registrations_are_never_purged(
    app: App, clock: FixedClock, pki: TestPKI
) -> None:
    open_one = at_basic_data(app, person(pki, "王小明"))
    before = registration(app, open_one)

    report = app.retention.purge(days=0)

    assert (report.expired, report.registrations, report.accounts) == (0, 0, 0)
    assert registration(app, open_one) == before


@pytest.mark.parametrize("days", [-1, 36501, True])
def test_a_bad_retention_is_refused(app: App, days: int) -> None:
    with pytest.raises(SwregError) as info:
        app.retention.purge(days=days)
    assert (info.value.code, info.value.field) == ("invalid_value", "days")


def test_the_configured_retention_is_the_default(
    settings: Settings, clock: FixedClock, pki: TestPKI, app: App
) -> None:
    register(app, pki, "王小明")
    clock.advance(timedelta(days=3))
    assert app.retention.purge().as_dict()["retention_days"] == 30
    assert app.retention.purge().registrations == 0
    short = bootstrap(replace(settings, retention_days=2), clock=clock)
    try:
        assert short.retention.purge().registrations == 1
    finally:
        short.close()


# -- the command -------------------------------------------------------------------------------


def purge_command(db_url: str, *args: str, retention: str | None = None) -> tuple[int, Any]:
    env = {"SWREG_DATABASE_URL": db_url, "SWREG_SECRET_KEY": SECRET.hex()}
    if retention is not None:
        env["SWREG_RETENTION_DAYS"] = retention
    result = CliRunner().invoke(cli_app, ["purge", *args, "--json"], env=env)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def test_swreg_purge_json(app: App, pki: TestPKI, db_url: str) -> None:
    """The CLI runs on the real clock: what the fixed clock made is already in the past."""
    done = app.registrations.status(register(app, pki, "王小明"))
    cancelled = at_basic_data(app, person(pki, "李小華"))
    app.registrations.cancel(cancelled)

    code, out = purge_command(db_url)  # the default, 30 days: nothing yet

    assert code == 0
    assert (out["ok"], out["retention_days"], out["registrations"], out["accounts"]) == (
        True,
        30,
        0,
        0,
    )
    code, out = purge_command(db_url, retention="0")
    assert (code, out["ok"], out["registrations"], out["expired"]) == (0, True, 2, 0)
    assert set(out) == {
        "ok", "retention_days", "cutoff", "expired", "registrations", "accounts", "links",
        "mobile_tickets", "sessions",
    }  # fmt: skip
    assert registration(app, done.id)["data"] == {}
    code, out = purge_command(db_url, "--days", "0")
    assert (code, out["registrations"]) == (0, 0)  # idempotent


def test_swreg_purge_tells_each_step_on_stderr(app: App, pki: TestPKI, db_url: str) -> None:
    """Each step with its count as it is done (issue 19 item 7); stdout keeps the JSON alone."""
    register(app, pki, "王小明")
    env = {"SWREG_DATABASE_URL": db_url, "SWREG_SECRET_KEY": SECRET.hex()}
    result = CliRunner().invoke(cli_app, ["purge", "--days", "0", "--json"], env=env)
    assert json.loads(result.stdout)["registrations"] == 1
    assert result.stderr.splitlines() == [
        "✓ expired: 0",
        "✓ registrations: 1",
        "✓ accounts: 0",
        "✓ links: 0",
        "✓ mobile_tickets: 0",
        "✓ sessions: 0",
    ]
    assert app.audit.verify().ok


@pytest.mark.parametrize(
    ("args", "retention"), [(("--days", "-1"), None), ((), "-3"), ((), "thirty")]
)
def test_swreg_purge_usage_errors(
    db_url: str, app: App, args: tuple[str, ...], retention: str | None
) -> None:
    code, _ = purge_command(db_url, *args, retention=retention)
    assert code == 2


@pytest.mark.parametrize("value", ["36501", "-1", "1.5", "٣", "²", "30d"])
def test_a_retention_setting_that_is_no_plain_day_count_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError) as info:
        Settings.from_env({"SWREG_RETENTION_DAYS": value})
    assert "SWREG_RETENTION_DAYS" in str(info.value.detail)
    assert Settings.from_env({"SWREG_RETENTION_DAYS": "36500"}).retention_days == 36500


@pytest.mark.parametrize(("value", "seconds"), [("900", 900), ("15m", 900), ("2h", 7200)])
def test_session_limits_are_durations(value: str, seconds: int) -> None:
    settings = Settings.from_env({"SWREG_SESSION_IDLE": value, "SWREG_SESSION_MAX": value})
    assert settings.session_ttl.total_seconds() == settings.session_max.total_seconds() == seconds
    with pytest.raises(UsageError):
        Settings.from_env({"SWREG_SESSION_MAX": "٣"})
