"""Login sessions end (DESIGN.md §6): idle and absolute limits, "log out everywhere".

Issue 13 found that a session slid forever as long as it was used. A session now also dies
``SWREG_SESSION_MAX`` after it began, however often it is used; ``POST
/api/sessions/logout-all`` and ``swreg accounts logout-all NAME`` end every session of the
account. Time moves through the :class:`FixedClock` seam: no test sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from engine import App, FixedClock, Settings, bootstrap
from engine._errors import RefusedError
from engine.cli import app as cli_app
from engine.services.accounts import token_hash
from engine.services.login import LoginService
from engine.store import AuditEntry, LoginSession
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from tests.conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET
from tests.helpers import enrol
from tests.test_renewal import ORIGIN, UBN, activate, answer, csrf, signed

IDLE = timedelta(minutes=30)


@pytest.fixture
def person(app: App, pki: TestPKI) -> IssuedCard:
    """A registered and activated 自然人憑證 (account ming@example.com)."""
    card = pki.issue_person("王小明", "6789")
    enrol(app, "person.general", card, PERSON_ANSWERS)
    activate(app, "ming@example.com")
    return card


@pytest.fixture
def company(app: App, pki: TestPKI) -> IssuedCard:
    """A registered and activated 工商憑證 (account 04595257)."""
    card = pki.issue_company(UBN)
    enrol(app, "enterprise.general", card, COMPANY_ANSWERS)
    activate(app, UBN)
    return card


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def log_in(logins: LoginService, card: IssuedCard) -> str:
    """A new session of ``card``'s account; its token."""
    challenge = logins.issue_challenge(origin=ORIGIN)
    return logins.login(answer(challenge, card), origin=ORIGIN).token


def api_log_in(client: TestClient, card: IssuedCard) -> dict[str, Any]:
    headers = csrf(client)
    challenge = client.post("/api/login/challenge", headers=headers).json()
    done = client.post("/api/login", json=signed(card, challenge), headers=headers)
    assert done.status_code == 200, done.text
    body: dict[str, Any] = done.json()
    return body


def sessions(app: App) -> list[tuple[str, datetime | None]]:
    """(token hash, ended_at) of every stored session."""
    with app.database.unit_of_work() as uow:
        rows = uow.session.execute(select(LoginSession.token_hash, LoginSession.ended_at))
        return sorted((r[0], r[1]) for r in rows)


def audit(app: App, event: str) -> list[tuple[str, dict[str, Any]]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).where(AuditEntry.event == event))
        return [(r.actor, dict(r.diff)) for r in rows]


# -- the absolute limit ----------------------------------------------------------------------


def test_the_limits_come_from_the_environment() -> None:
    settings = Settings.from_env({"SWREG_SESSION_IDLE": "600", "SWREG_SESSION_MAX": "7200"})
    assert (settings.session_ttl, settings.session_max) == (
        timedelta(minutes=10),
        timedelta(hours=2),
    )
    defaults = Settings.from_env({})
    assert (defaults.session_ttl, defaults.session_max) == (IDLE, timedelta(hours=8))


def test_a_session_used_every_minute_still_dies_at_the_absolute_limit(
    app: App, person: IssuedCard, clock: FixedClock
) -> None:
    logins = app.logins  # as bootstrapped: SWREG_SESSION_IDLE 1800 s, SWREG_SESSION_MAX 28800 s
    started = clock.now()
    token = log_in(logins, person)
    end = started + timedelta(hours=8)
    while clock.now() + timedelta(minutes=1) < end:
        clock.advance(timedelta(minutes=1))
        view = logins.session(token)
        assert view is not None, clock.now() - started
        assert view.expires_at == end
        assert view.idle_expires_at == min(clock.now() + IDLE, end)
    clock.set(end)  # used a minute ago, idle for far less than 30 minutes: dead all the same
    assert logins.session(token) is None
    clock.advance(timedelta(minutes=1))
    assert logins.session(token) is None
    with app.database.unit_of_work() as uow:
        row = uow.sessions.get(token_hash(token))
        assert row is not None and row.expires_at == end  # the idle expiry never passed the end


def test_a_lower_limit_applies_to_sessions_already_open(
    app: App, settings: Settings, person: IssuedCard, clock: FixedClock
) -> None:
    token = log_in(app.logins, person)
    for _ in range(4):  # used every 20 minutes: alive under the default 8 hours
        clock.advance(timedelta(minutes=20))
        assert app.logins.session(token) is not None
    stricter = bootstrap(replace(settings, session_max=timedelta(hours=1)), clock=clock)
    try:
        assert stricter.logins.session(token) is None  # measured from the session's start
    finally:
        stricter.close()


def test_the_api_shows_both_ends_and_refuses_a_session_past_its_end(
    app: App, settings: Settings, person: IssuedCard, clock: FixedClock
) -> None:
    short = bootstrap(replace(settings, session_max=timedelta(hours=1)), clock=clock)
    try:
        with TestClient(create_app(short)) as client:
            started = clock.now()
            logged_in = api_log_in(client, person)
            assert (logged_in["expires_at"], logged_in["idle_expires_at"]) == (
                (started + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
                (started + IDLE).isoformat().replace("+00:00", "Z"),
            )
            for minute in range(1, 60):
                clock.set(started + timedelta(minutes=minute))
                seen = client.get("/api/session")
                assert seen.status_code == 200, minute
                assert seen.json()["expires_at"] == logged_in["expires_at"]
            assert seen.json()["idle_expires_at"] == logged_in["expires_at"]  # capped by the end
            clock.set(started + timedelta(hours=1))
            dead = client.get("/api/session")
            assert (dead.status_code, dead.json()["errors"][0]["code"]) == (401, "session_expired")
    finally:
        short.close()


def test_the_idle_limit_still_holds(app: App, person: IssuedCard, clock: FixedClock) -> None:
    token = log_in(app.logins, person)
    clock.advance(IDLE - timedelta(seconds=1))
    assert app.logins.session(token) is not None
    clock.advance(IDLE)
    assert app.logins.session(token) is None


# -- log out everywhere ----------------------------------------------------------------------


def test_logout_all_ends_every_session_of_the_account_the_acting_one_included(
    app: App, client: TestClient, person: IssuedCard, company: IssuedCard
) -> None:
    api_log_in(client, person)  # session 1: the browser's cookie
    other_device = log_in(app.logins, person)  # session 2: another device
    bystander = log_in(app.logins, company)  # another account's session
    assert client.get("/api/session").status_code == 200

    no_csrf = client.post("/api/sessions/logout-all")
    assert (no_csrf.status_code, no_csrf.json()["errors"][0]["code"]) == (403, "csrf_failed")
    assert app.logins.session(other_device) is not None

    done = client.post("/api/sessions/logout-all", headers=csrf(client))
    assert (done.status_code, done.json()) == (200, {"ok": True, "sessions_ended": 2})
    assert "swreg_session" in done.headers["set-cookie"]
    assert "Max-Age=0" in done.headers["set-cookie"] or "expires=" in done.headers["set-cookie"]
    assert app.logins.session(other_device) is None
    assert client.get("/api/session").status_code == 403
    assert app.logins.session(bystander) is not None
    ended = [at for _, at in sessions(app) if at is not None]
    assert ended == [app.clock.now(), app.clock.now()]

    [(_, diff)] = audit(app, "logout_all")
    assert diff["account"] == "m**g@example.com" and diff["sessions_ended"] == 2
    assert set(diff) == {"account", "sessions_ended", "session"}
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_logout_all_needs_a_live_session(
    app: App, client: TestClient, person: IssuedCard, clock: FixedClock
) -> None:
    log_in(app.logins, person)  # another device: the refused calls below must not end it
    without = client.post("/api/sessions/logout-all", headers=csrf(client))
    assert (without.status_code, without.json()["errors"][0]["code"]) == (403, "not_authorized")
    client.cookies.set("swreg_session", "forged-token")
    forged = client.post("/api/sessions/logout-all", headers=csrf(client))
    assert (forged.status_code, forged.json()["errors"][0]["code"]) == (403, "not_authorized")

    stale = log_in(app.logins, person)
    clock.advance(IDLE)  # ``stale`` and ``other_device`` both went idle
    client.cookies.set("swreg_session", stale)
    expired = client.post("/api/sessions/logout-all", headers=csrf(client))
    assert (expired.status_code, expired.json()["errors"][0]["code"]) == (403, "not_authorized")
    assert [at for _, at in sessions(app)] == [None, None]  # the refused calls ended none
    assert audit(app, "logout_all") == []


def test_end_all_sessions_ends_every_live_session_of_the_account(
    app: App, person: IssuedCard
) -> None:
    tokens = [log_in(app.logins, person) for _ in range(3)]
    app.logins.logout(tokens[0])
    assert app.logins.end_all_sessions("ming@example.com", actor="test") == 2
    assert [app.logins.session(t) for t in tokens] == [None, None, None]
    assert app.logins.end_all_sessions("ming@example.com", actor="test") == 0
    with pytest.raises(RefusedError) as info:
        app.logins.end_all_sessions("nobody@example.com")
    assert info.value.code == "not_registered"
    assert [d["sessions_ended"] for _, d in audit(app, "logout_all")] == [2, 0]


def test_the_command_logs_an_account_out_everywhere(
    app: App, person: IssuedCard, db_url: str
) -> None:
    tokens = [log_in(app.logins, person) for _ in range(2)]
    env = {"SWREG_DATABASE_URL": db_url, "SWREG_SECRET_KEY": SECRET.hex()}
    runner = CliRunner()

    unknown = runner.invoke(
        cli_app, ["accounts", "logout-all", "nobody@example.com", "--json"], env=env
    )
    assert unknown.exit_code == 1
    assert json.loads(unknown.stdout)["errors"][0]["code"] == "not_registered"
    assert all(app.logins.session(t) is not None for t in tokens)

    done = runner.invoke(cli_app, ["accounts", "logout-all", "ming@example.com", "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {
        "ok": True, "account": "ming@example.com", "sessions_ended": 2
    }  # fmt: skip
    assert [app.logins.session(t) for t in tokens] == [None, None]
    [(actor, diff)] = audit(app, "logout_all")
    assert (actor, diff) == ("cli", {"account": "m**g@example.com", "sessions_ended": 2})
