"""The officer list, personal API tokens and the officer API's gate (DESIGN.md §9, §12).

Attacks: guessing tokens (60 wrong ones from one client: the 21st and later are 429 until the
window ends, a right token included, while another client is unaffected, and the count holds
across workers), tokens in logs, revoked and removed officers' tokens, short tokens, the shared
``SWREG_OFFICER_TOKEN`` of old. The audit actor of an API decision is covered in
tests/test_approval.py (``test_the_authenticated_officer_decides_not_the_name_in_the_body``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from engine import App, FixedClock, Settings, SwregError, bootstrap
from engine.cli import app as cli_app
from engine.services.hashing import IdentifierHasher
from engine.services.officers import FAILURE_LIMIT, FAILURE_WINDOW
from engine.services.rate_limits import window_start
from engine.store import AuditEntry, Officer, RateLimitWindow
from engine.testing.pki import TestPKI
from engine.web import create_app

from .conftest import SECRET

LIST = "/api/officer/registrations"
ATTACKER = "203.0.113.7"
COLLEAGUE = "198.51.100.20"
OGA = "2.16.886.101.20003.20065.20065"


def officer_rows(app: App) -> list[tuple[str, str, str, str | None]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(Officer).order_by(Officer.name)).all()
        return [(r.name, r.role, r.fingerprint, r.token_hash) for r in rows]


def audit_rows(app: App) -> list[tuple[str, str, dict[str, Any]]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        return [(r.actor, r.event, r.diff) for r in rows if r.event.startswith("officer_")]


def failure_count(app: App) -> int:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(
            select(RateLimitWindow).where(RateLimitWindow.key.startswith("officer_auth:"))
        ).all()
        return sum(r.count for r in rows)


def refusal(info: pytest.ExceptionInfo[SwregError]) -> tuple[str, str | None]:
    return str(info.value.code), info.value.field


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(response: Any) -> str:
    code: str = response.json()["errors"][0]["code"]
    return code


@pytest.fixture
def officer(app: App, pki: TestPKI) -> tuple[bytes, str]:
    """林關員, a reviewer holding a MOICA card of the test PKI, and their token."""
    card = pki.issue_person(name="林關員")
    app.officers.add(card.der(), name="林關員", role="reviewer", actor="test")
    return card.der(), app.officers.issue_token("林關員", actor="test").token


@pytest.fixture
def portal(app: App) -> Iterator[dict[str, TestClient]]:
    """Two clients of one portal, from two addresses."""
    web = create_app(app)
    with (
        TestClient(web, client=(ATTACKER, 40000)) as attacker,
        TestClient(web, client=(COLLEAGUE, 40001)) as colleague,
    ):
        yield {"attacker": attacker, "colleague": colleague}


# -- the list ----------------------------------------------------------------------------------


def test_officers_are_added_listed_and_removed_with_audit_rows(app: App, pki: TestPKI) -> None:
    moica = pki.issue_person(name="林關員")
    gca = pki.issue_agency(OGA, "財政部關務署")
    lin = app.officers.add(moica.der(), name=" 林關員 ", role="reviewer")  # DER, name trimmed
    chen = app.officers.add(gca.pem(), name="陳科長", role="admin")  # PEM
    fingerprints = {
        "林關員": hashlib.sha256(moica.der()).hexdigest(),
        "陳科長": hashlib.sha256(gca.der()).hexdigest(),
    }
    assert (lin.name, lin.role, lin.fingerprint) == ("林關員", "reviewer", fingerprints["林關員"])
    assert (chen.name, chen.fingerprint) == ("陳科長", fingerprints["陳科長"])
    assert [(o.name, o.role, o.fingerprint) for o in app.officers.list()] == [
        ("林關員", "reviewer", fingerprints["林關員"]),
        ("陳科長", "admin", fingerprints["陳科長"]),
    ]
    assert officer_rows(app) == [
        ("林關員", "reviewer", fingerprints["林關員"], None),
        ("陳科長", "admin", fingerprints["陳科長"], None),
    ]
    removed = app.officers.remove("林關員")
    assert removed.fingerprint == fingerprints["林關員"]
    assert [o.name for o in app.officers.list()] == ["陳科長"]
    assert audit_rows(app) == [
        ("cli", "officer_added", {
            "name": "林關員", "role": "reviewer", "fingerprint": fingerprints["林關員"],
        }),
        ("cli", "officer_added", {
            "name": "陳科長", "role": "admin", "fingerprint": fingerprints["陳科長"],
        }),
        ("cli", "officer_removed", {
            "name": "林關員", "role": "reviewer", "fingerprint": fingerprints["林關員"],
        }),
    ]  # fmt: skip
    assert app.audit.verify().ok


@pytest.mark.parametrize(
    ("name", "role", "certificate", "expected"),
    [
        ("王關員", "superuser", "new", ("invalid_value", "role")),  # only reviewer or admin
        ("王關員", "", "new", ("invalid_value", "role")),
        ("王關員", "Admin", "new", ("invalid_value", "role")),  # exact, lower case
        ("", "reviewer", "new", ("field_required", "name")),
        ("a" * 101, "reviewer", "new", ("field_too_long", "name")),
        ("王\n關員", "reviewer", "new", ("invalid_value", "name")),
        ("林關員", "admin", "new", ("already_registered", "name")),  # the name is taken
        ("王關員", "admin", "taken", ("already_registered", "certificate")),  # the card is listed
        ("王關員", "reviewer", "junk", ("not_a_certificate", None)),
        ("王關員", "reviewer", "key", ("private_key_refused", None)),
    ],
)
def test_adding_is_refused_and_writes_nothing(
    app: App,
    pki: TestPKI,
    officer: tuple[bytes, str],
    name: str,
    role: str,
    certificate: str,
    expected: tuple[str, str | None],
) -> None:
    listed_der, _ = officer
    data = {
        "new": pki.issue_person(name="王關員").der(),
        "taken": listed_der,
        "junk": b"not a certificate at all",
        "key": pki.issue_person().key_pem(),
    }[certificate]
    before = (officer_rows(app), audit_rows(app))
    with pytest.raises(SwregError) as info:
        app.officers.add(data, name=name, role=role)
    assert refusal(info) == expected
    assert (officer_rows(app), audit_rows(app)) == before


def test_unknown_officers_are_not_registered(app: App) -> None:
    for action in (app.officers.remove, app.officers.issue_token, app.officers.get):
        with pytest.raises(SwregError) as info:
            action("無此人")
        assert refusal(info) == ("not_registered", "name")
    assert audit_rows(app) == []


# -- personal tokens ---------------------------------------------------------------------------


def test_a_token_is_32_random_bytes_stored_only_as_its_digest(app: App, pki: TestPKI) -> None:
    app.officers.add(pki.issue_person(name="林關員").der(), name="林關員", role="reviewer")
    issued = app.officers.issue_token("林關員")
    assert (issued.name, issued.replaced, len(issued.token)) == ("林關員", False, 43)
    [(_, _, fingerprint, token_hash)] = officer_rows(app)
    assert token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    diff = {"name": "林關員", "fingerprint": fingerprint, "replaced": False}
    assert audit_rows(app)[-1] == ("cli", "officer_token_issued", diff)
    with app.database.unit_of_work() as uow:  # the token itself is nowhere in the database
        stored = uow.session.scalars(select(AuditEntry)).all()
        assert all(issued.token not in json.dumps(row.diff) for row in stored)
    assert app.officers.officer_for_token(issued.token) == app.officers.get("林關員")
    second = app.officers.issue_token("林關員")
    assert second.token != issued.token and second.replaced
    assert audit_rows(app)[-1][2]["replaced"] is True


def test_a_reissued_token_revokes_the_old_one(
    app: App, officer: tuple[bytes, str], portal: dict[str, TestClient]
) -> None:
    _, old = officer
    client = portal["colleague"]
    assert client.get(LIST, headers=bearer(old)).status_code == 200
    new = app.officers.issue_token("林關員").token
    response = client.get(LIST, headers=bearer(old))
    assert (response.status_code, error_code(response)) == (403, "not_authorized")
    assert client.get(LIST, headers=bearer(new)).status_code == 200


def test_a_removed_officers_token_stops_working(
    app: App, officer: tuple[bytes, str], portal: dict[str, TestClient]
) -> None:
    _, token = officer
    client = portal["colleague"]
    assert client.get(LIST, headers=bearer(token)).status_code == 200
    app.officers.remove("林關員")
    response = client.get(LIST, headers=bearer(token))
    assert (response.status_code, error_code(response)) == (403, "not_authorized")
    assert app.officers.officer_for_token(token) is None


@pytest.mark.parametrize(
    "short",
    [
        "abc",  # 3 characters
        "x" * 42,  # 31.5 bytes: one character short of 32 random bytes
        "a-b_c" * 8,  # 40 characters
    ],
)
def test_a_short_token_never_matches_even_if_stored(
    app: App, officer: tuple[bytes, str], portal: dict[str, TestClient], short: str
) -> None:
    """A row holding the digest of a short token (planted, or from an older swreg) still
    refuses it: fewer than 32 random bytes is never a credential."""
    with app.database.unit_of_work() as uow:
        digest = hashlib.sha256(short.encode()).hexdigest()
        uow.session.execute(update(Officer).values(token_hash=digest))
        uow.commit()
    assert app.officers.officer_for_token(short) is None
    response = portal["colleague"].get(LIST, headers=bearer(short))
    assert (response.status_code, error_code(response)) == (403, "not_authorized")


@pytest.mark.parametrize(
    "token",
    [
        "x" * 513,  # longer than any token
        "é" * 43,  # not URL-safe base64
        "x" * 42 + "=",
        "x" * 20 + " " + "x" * 22,
    ],
)
def test_malformed_tokens_are_refused_without_a_lookup(app: App, token: str) -> None:
    with pytest.raises(SwregError) as info:
        app.officers.authenticate(token, client="c", subject="c")
    assert refusal(info) == ("not_authorized", None)
    assert app.officers.officer_for_token(token) is None


def test_the_shared_officer_token_is_gone(
    db_url: str, officer: tuple[bytes, str], portal: dict[str, TestClient]
) -> None:
    """``SWREG_OFFICER_TOKEN`` configures nothing any more: its value is no credential."""
    shared = "officer-token-" + "x" * 40
    settings = Settings.from_env({"SWREG_DATABASE_URL": db_url, "SWREG_OFFICER_TOKEN": shared})
    assert not hasattr(settings, "officer_token")
    response = portal["colleague"].get(LIST, headers=bearer(shared))
    assert (response.status_code, error_code(response)) == (403, "not_authorized")


# -- guessing tokens ---------------------------------------------------------------------------


def test_sixty_wrong_tokens_are_rate_limited_until_the_window_ends(
    app: App,
    clock: FixedClock,
    officer: tuple[bytes, str],
    portal: dict[str, TestClient],
) -> None:
    _, token = officer
    attacker, colleague = portal["attacker"], portal["colleague"]
    clock.set(window_start(clock.now(), FAILURE_WINDOW) + FAILURE_WINDOW)  # a window starts
    answers = []
    for guess in range(60):
        clock.advance(timedelta(seconds=1))
        response = attacker.get(LIST, headers=bearer(f"{guess:043d}"))
        answers.append((response.status_code, error_code(response)))
    assert answers[:FAILURE_LIMIT] == [(403, "not_authorized")] * 20
    assert answers[FAILURE_LIMIT:] == [(429, "rate_limited")] * 40
    # the right token from the blocked client: still 429, with the rest of the window to wait
    response = attacker.get(LIST, headers=bearer(token))
    assert (response.status_code, error_code(response)) == (429, "rate_limited")
    assert response.headers["Retry-After"] == str(600 - 60)
    # nothing in the request helps: no token, a POST, another route
    assert attacker.get(LIST).status_code == 429
    assert attacker.post(f"{LIST}/x/approve", headers=bearer(token)).status_code == 429
    # another client is unaffected, wrong and right tokens alike
    response = colleague.get(LIST, headers=bearer("y" * 43))
    assert (response.status_code, error_code(response)) == (403, "not_authorized")
    assert colleague.get(LIST, headers=bearer(token)).status_code == 200
    # only failures counted: 20 of the attacker, 1 of the colleague (blocked requests are not)
    assert failure_count(app) == 21
    # one second before the window ends: still blocked; then the right token works again
    clock.advance(timedelta(seconds=600 - 60 - 1))
    assert attacker.get(LIST, headers=bearer(token)).status_code == 429
    clock.advance(timedelta(seconds=1))
    assert attacker.get(LIST, headers=bearer(token)).status_code == 200


def test_the_failure_count_holds_across_workers(
    settings: Settings, clock: FixedClock, app: App, officer: tuple[bytes, str]
) -> None:
    """Two workers (two apps over one database): failures at one block the client at both."""
    _, token = officer
    clock.set(window_start(clock.now(), FAILURE_WINDOW) + FAILURE_WINDOW)
    other = bootstrap(settings, clock=clock)
    try:
        workers = [create_app(app), create_app(other)]
        clients = [TestClient(w, client=(ATTACKER, 40000)) for w in workers]
        for guess in range(FAILURE_LIMIT):
            response = clients[guess % 2].get(LIST, headers=bearer(f"{guess:043d}"))
            assert response.status_code == 403
        for client in clients:
            response = client.get(LIST, headers=bearer(token))
            assert (response.status_code, error_code(response)) == (429, "rate_limited")
    finally:
        other.close()


def test_ipv6_clients_count_by_their_64(
    app: App, clock: FixedClock, officer: tuple[bytes, str]
) -> None:
    """Rotating addresses inside one's /64 does not reset the count; the table holds no
    address, only keyed hashes."""
    _, token = officer
    clock.set(window_start(clock.now(), FAILURE_WINDOW) + FAILURE_WINDOW)
    web = create_app(app)
    for guess in range(FAILURE_LIMIT):
        address = f"2001:db8:1:2::{guess + 1:x}"
        response = TestClient(web, client=(address, 40000)).get(
            LIST, headers=bearer(f"{guess:043d}")
        )
        assert response.status_code == 403
    fresh = TestClient(web, client=("2001:db8:1:2:ffff:ffff:ffff:fffe", 40000))
    assert fresh.get(LIST, headers=bearer(token)).status_code == 429
    neighbour = TestClient(web, client=("2001:db8:1:3::1", 40000))
    assert neighbour.get(LIST, headers=bearer(token)).status_code == 200
    with app.database.unit_of_work() as uow:
        keys = uow.session.scalars(select(RateLimitWindow.key)).all()
    assert len(keys) == 1 and "2001" not in keys[0] and keys[0].startswith("officer_auth:")


def test_each_failure_is_logged_with_the_clients_keyed_hash_never_the_token(
    app: App,
    officer: tuple[bytes, str],
    portal: dict[str, TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, token = officer
    guesses = ["g" * 43, token[:-1] + ("A" if token[-1] != "A" else "B"), "shrt9Q", token + "x"]
    caplog.set_level(logging.INFO)
    for guess in guesses:
        assert portal["attacker"].get(LIST, headers=bearer(guess)).status_code == 403
    assert portal["attacker"].get(LIST).status_code == 403  # no token at all
    assert portal["attacker"].get(LIST, headers=bearer(token)).status_code == 200
    failed = [r for r in caplog.records if getattr(r, "event", None) == "officer_auth_failed"]
    keys = IdentifierHasher(SECRET)  # the server key: the log shows HMAC(key, address)
    client_hash = keys.hash("client", ATTACKER)[:16]
    assert client_hash != keys.hash("client", COLLEAGUE)[:16]
    assert [(r.name, r.levelname, r.client, r.reason) for r in failed] == [  # type: ignore[attr-defined]
        ("swreg.officer", "WARNING", client_hash, "unknown"),
        ("swreg.officer", "WARNING", client_hash, "unknown"),
        ("swreg.officer", "WARNING", client_hash, "malformed"),
        ("swreg.officer", "WARNING", client_hash, "unknown"),
        ("swreg.officer", "WARNING", client_hash, "missing"),
    ]
    assert all(r.getMessage().startswith("officer_auth_failed client=") for r in failed)
    everything = caplog.text + "".join(repr(vars(r)) for r in caplog.records)
    for secret in (*guesses, token, ATTACKER):
        assert secret not in everything


# -- the CLI ---------------------------------------------------------------------------------


class Cli:
    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.env = {**os.environ, "SWREG_DATABASE_URL": db_url, "SWREG_SECRET_KEY": SECRET.hex()}

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(cli_app, [*args, "--json"], env=self.env)
        return result.exit_code, json.loads(result.stdout)

    def text(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli_app, list(args), env=self.env)
        return result.exit_code, result.stdout

    def file(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)


def test_the_officers_commands(db_url: str, tmp_path: Path, app: App, pki: TestPKI) -> None:
    cli = Cli(db_url, tmp_path)
    lin, chen = pki.issue_person(name="林關員"), pki.issue_agency(OGA, "財政部關務署")
    lin_fp, chen_fp = (hashlib.sha256(c.der()).hexdigest() for c in (lin, chen))
    lin_cer, chen_cer = cli.file("lin.cer", lin.der()), cli.file("chen.pem", chen.pem())

    assert cli.json("officers", "list") == (0, {"ok": True, "officers": []})
    added = cli.json("officers", "add", lin_cer, "--name", "林關員", "--role", "reviewer")
    assert added == (
        0, {"ok": True, "name": "林關員", "role": "reviewer", "fingerprint": lin_fp},
    )  # fmt: skip
    code, text = cli.text("officers", "add", chen_cer, "--name", "陳科長", "--role", "admin")
    assert (code, text) == (0, f"已加入 / added: 陳科長 (admin) {chen_fp[:16]}…\n")
    assert cli.json("officers", "list") == (0, {"ok": True, "officers": [
        {"name": "林關員", "role": "reviewer", "fingerprint": lin_fp},
        {"name": "陳科長", "role": "admin", "fingerprint": chen_fp},
    ]})  # fmt: skip

    # the token: alone on one line; --json gives {ok, name, token}; each revokes the one before
    code, plain = cli.text("officers", "token", "林關員")
    assert code == 0 and plain.endswith("\n") and plain.count("\n") == 1
    first = plain.strip()
    assert app.officers.officer_for_token(first) is not None
    code, issued = cli.json("officers", "token", "林關員")
    assert (code, sorted(issued), issued["ok"], issued["name"]) == (
        0, ["name", "ok", "token"], True, "林關員",
    )  # fmt: skip
    assert app.officers.officer_for_token(first) is None
    found = app.officers.officer_for_token(issued["token"])
    assert found is not None and (found.name, found.fingerprint) == ("林關員", lin_fp)

    assert cli.json("officers", "remove", "林關員") == (
        0, {"ok": True, "name": "林關員", "role": "reviewer", "fingerprint": lin_fp},
    )  # fmt: skip
    assert app.officers.officer_for_token(issued["token"]) is None
    assert [o.name for o in app.officers.list()] == ["陳科長"]
    assert [event for _, event, _ in audit_rows(app)] == [
        "officer_added", "officer_added", "officer_token_issued", "officer_token_issued",
        "officer_removed",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "field"),
    [
        (("add", "{cer}", "--name", "王關員", "--role", "root"), "invalid_value", "role"),
        (("add", "{cer}", "--name", "陳科長", "--role", "admin"), "already_registered", "name"),
        (("add", "{taken}", "--name", "王關員", "--role", "admin"), "already_registered",
         "certificate"),
        (("remove", "無此人"), "not_registered", "name"),
        (("token", "無此人"), "not_registered", "name"),
    ],
)  # fmt: skip
def test_refused_officers_commands_exit_1(
    db_url: str,
    tmp_path: Path,
    app: App,
    pki: TestPKI,
    args: tuple[str, ...],
    code: str,
    field: str,
) -> None:
    cli = Cli(db_url, tmp_path)
    taken = pki.issue_agency(OGA, "財政部關務署")
    app.officers.add(taken.der(), name="陳科長", role="admin")
    files = {
        "{cer}": cli.file("new.cer", pki.issue_person(name="王關員").der()),
        "{taken}": cli.file("taken.cer", taken.der()),
    }
    before = (officer_rows(app), audit_rows(app))
    status, output = cli.json("officers", *(files.get(a, a) for a in args))
    assert (status, output["ok"]) == (1, False)
    assert [(e["code"], e["field"]) for e in output["errors"]] == [(code, field)]
    assert (officer_rows(app), audit_rows(app)) == before


def test_a_missing_role_is_a_usage_error(db_url: str, tmp_path: Path, pki: TestPKI) -> None:
    cli = Cli(db_url, tmp_path)
    cer = cli.file("lin.cer", pki.issue_person(name="林關員").der())
    result = CliRunner().invoke(cli_app, ["officers", "add", cer, "--name", "林關員"], env=cli.env)
    assert result.exit_code == 2
