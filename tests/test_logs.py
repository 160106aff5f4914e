"""Structured logs (DESIGN.md §11): one JSON object per line, the request id, and no secret.

- The formatter: every line one JSON object starting with ``ts``, ``level``, ``event`` and
  ``request_id``, on one line whatever the message holds.
- ``X-Request-ID``: a fresh id when none is given; kept only when a trusted proxy sent one that
  is short and safe; replaced from any other peer or when malformed.
- The request id reaches the lines services and the audit seam log during the request (in the
  thread pool), and every request has one line holding its route's template, never its path.
- The scan: ``swreg serve --workers 2`` over real HTTP through a whole 個人 registration, a
  refused card (an untrusted CA, a wrong signature), an activation by the mailed link, a card
  login, 忘記密碼 with the card and by the mailed link, and officer API calls with a personal
  token from ``swreg officers token``; then every line of its log is JSON with the four fields and
  none holds a national ID, an e-mail address, the PIN, a password or any token of the run.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from engine import App, FixedClock, Settings, bootstrap
from engine._logging import FIRST_FIELDS, JsonFormatter, _timestamp, request_context
from engine.services.hashing import IdentifierHasher
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.ports import free_port
from engine.web import create_app

from .conftest import PASSWORD, PERSON_ANSWERS, PIN, PKI_NOW, SECRET, TestDatabases
from .processes import SWREG, serve, stop_process, swreg_env
from .test_mail import SmtpSink, body

PEER = "198.51.100.20"
PROXY = "10.0.0.5"
TRUSTED = (ipaddress.ip_network("10.0.0.0/24"),)
KEYS = IdentifierHasher(SECRET)
FRESH_ID = re.compile(r"[0-9a-f]{32}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PERSON = PERSON_ANSWERS["email"]
NATIONAL_ID = PERSON_ANSWERS["national_id"]
CARD_RESET = {"password": "N3wPassw0rd!", "password_confirm": "N3wPassw0rd!"}
LINK_RESET = {"password": "L1nkPassw0rd?", "password_confirm": "L1nkPassw0rd?"}
OFFICER = "林關員"


def client_hash(address: str) -> str:
    """How a log line names a client: 16 hex of the HMAC of its address (as audit rows do)."""
    return KEYS.hash("client", address)[:16]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def signed(card: IssuedCard, challenge: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What the card agent hands back for a challenge: certificate, chain and signature."""
    return {
        "challenge_id": challenge["challenge_id"],
        "certificate": b64(card.der()),
        "signature": b64(card.sign(base64.b64decode(challenge["payload"]))),
        "chain": [b64(der) for der in card.chain_der()],
        **extra,
    }


# -- the formatter -----------------------------------------------------------------------------


def record(message: str, *args: Any, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("swreg.test", level, __file__, 1, message, args, None)
    made.created = 1_800_000_000.25
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_the_formatter_writes_one_json_object_per_line_with_the_four_fields() -> None:
    formatter = JsonFormatter()
    text = formatter.format(record("two\nlines \u2028 and %s", "一個", level=logging.WARNING))
    assert "\n" not in text and text.isascii()  # no character of a message can end the line
    line = json.loads(text)
    assert list(line)[:4] == list(FIRST_FIELDS)
    assert line == {
        "ts": "2027-01-15T08:00:00.250Z",
        "level": "warning",
        "event": "two\nlines \u2028 and 一個",
        "request_id": None,
        "logger": "swreg.test",
    }


def test_a_named_event_keeps_its_fields_and_the_request_id() -> None:
    formatter = JsonFormatter()
    named = record(
        "officer_auth_failed client=%s", "abc", event="officer_auth_failed", client="abc",
        color_message="\x1b[1mcolours\x1b[0m",
    )  # fmt: skip
    with request_context("edge-42"):
        inside = json.loads(formatter.format(named))
    assert inside == {
        "ts": "2027-01-15T08:00:00.250Z", "level": "info", "event": "officer_auth_failed",
        "request_id": "edge-42", "logger": "swreg.test", "client": "abc",
    }  # fmt: skip
    assert json.loads(formatter.format(named))["request_id"] is None  # the context ended
    given = record("unhandled", request_id="given-1")  # from outside the request's context
    assert json.loads(formatter.format(given))["request_id"] == "given-1"


def test_an_exception_is_one_field_of_the_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        failed = logging.LogRecord(
            "swreg.test", logging.ERROR, __file__, 1, "boom", (), sys.exc_info()
        )
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["event"], parsed["level"]) == ("boom", "error")
    assert (
        parsed["exception"].startswith("Traceback") and "ValueError: broken" in parsed["exception"]
    )


# -- requests in process -----------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """What the portal's handler would write during the test: the JSON formatter on the root
    logger, swreg's loggers from INFO (as ``swreg serve`` sets them)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root, swreg = logging.getLogger(), logging.getLogger("swreg")
    level = swreg.level
    root.addHandler(handler)
    swreg.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        swreg.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(text) for text in stream.getvalue().splitlines()]


def request_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in lines_of(stream) if line["event"] == "request"]


@pytest.fixture
def proxied(settings: Settings, clock: FixedClock, pki: TestPKI) -> Iterator[App]:
    """The app behind a reverse proxy: ``SWREG_TRUSTED_PROXIES=10.0.0.0/24``."""
    application = bootstrap(replace(settings, trusted_proxies=TRUSTED), clock=clock)
    pki.publish_to(application.trust, actor="test")
    yield application
    application.close()


def test_each_request_gets_a_fresh_id_and_one_line(app: App, json_log: io.StringIO) -> None:
    with TestClient(create_app(app), client=(PEER, 40000)) as client:
        first = client.get("/api/csrf")
        second = client.get("/api/csrf?lang=en", headers={"X-Request-ID": "chosen-by-me"})
    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(FRESH_ID.fullmatch(found) for found in ids) and ids[0] != ids[1]
    assert [len(r.headers.get_list("x-request-id")) for r in (first, second)] == [1, 1]
    lines = request_lines(json_log)
    assert [
        (line["request_id"], line["level"], line["logger"], line["method"], line["path"],
         line["status"], line["client"])
        for line in lines
    ] == [
        (ids[0], "info", "swreg.request", "GET", "/api/csrf", 200, client_hash(PEER)),
        (ids[1], "info", "swreg.request", "GET", "/api/csrf", 200, client_hash(PEER)),
    ]  # fmt: skip
    assert all(TIMESTAMP.fullmatch(line["ts"]) for line in lines)
    assert all(isinstance(line["duration_ms"], float) for line in lines)


@pytest.mark.parametrize(
    ("peer", "given", "kept"),
    [
        (PROXY, [("X-Request-ID", "edge-42.A_b")], True),  # a trusted proxy's safe id
        (PROXY, [("X-Request-ID", "a" * 64)], True),  # the longest kept
        ("::ffff:10.0.0.5", [("X-Request-ID", "edge-43")], True),  # the proxy, IPv4-mapped
        ("203.0.113.7", [("X-Request-ID", "edge-42")], False),  # not a trusted proxy
        (PROXY, [("X-Request-ID", "a" * 65)], False),  # too long
        (PROXY, [("X-Request-ID", "two words")], False),  # a space
        (PROXY, [("X-Request-ID", 'x","event":"forged')], False),  # JSON in the header
        (PROXY, [("X-Request-ID", "")], False),  # empty
        (PROXY, [("X-Request-ID", "caf\xe9".encode("latin-1"))], False),  # not ASCII
        (PROXY, [("X-Request-ID", "one"), ("X-Request-ID", "two")], False),  # two of them
    ],
)  # fmt: skip
def test_an_incoming_request_id_is_kept_only_from_a_trusted_proxy_and_when_safe(
    proxied: App, json_log: io.StringIO, peer: str, given: list[tuple[str, Any]], kept: bool
) -> None:
    with TestClient(create_app(proxied), client=(peer, 40000)) as client:
        response = client.get("/api/csrf", headers=given)
    [echoed] = response.headers.get_list("x-request-id")
    if kept:
        assert echoed == given[0][1]
    else:
        assert FRESH_ID.fullmatch(echoed)
    [line] = request_lines(json_log)
    assert (line["request_id"], line["path"], line["status"]) == (echoed, "/api/csrf", 200)


def test_lines_logged_in_services_carry_the_request_id(app: App, json_log: io.StringIO) -> None:
    with TestClient(create_app(app), client=(PEER, 40000)) as client:
        guessed = client.get(
            "/api/officer/registrations", headers={"Authorization": "Bearer " + "g" * 43}
        )
        token = client.get("/api/csrf").json()["token"]
        started = client.post(
            "/api/registrations",
            json={"type": "person.general", "consent": True},
            headers={"X-CSRF-Token": token},
        )
    assert (guessed.status_code, started.status_code) == (403, 201)
    lines = lines_of(json_log)
    [failed] = [line for line in lines if line["event"] == "officer_auth_failed"]
    assert failed == {
        "ts": failed["ts"], "level": "warning", "event": "officer_auth_failed",
        "request_id": guessed.headers["x-request-id"], "logger": "swreg.officer",
        "client": client_hash(PEER), "reason": "unknown",
    }  # fmt: skip
    business = [line for line in lines if line["logger"] == "swreg.audit"]
    started_id, registration_id = started.headers["x-request-id"], started.json()["id"]
    assert [
        (line["event"], line["level"], line["request_id"], line["actor_kind"],
         line["registration_id"], line["applicant_type"], line["from_state"], line["to_state"])
        for line in business
    ] == [
        ("start", "info", started_id, "api", registration_id, "person.general", None,
         "category"),
        ("next", "info", started_id, "api", registration_id, "person.general", "category",
         "card_check"),
    ]  # fmt: skip
    first = business[0]["audit_seq"]
    assert [line["audit_seq"] for line in business] == [first, first + 1]
    assert all("diff" not in line and "actor" not in line for line in business)
    assert "g" * 43 not in json_log.getvalue()


def test_a_business_event_is_logged_once_its_row_is_committed(
    app: App, clock: FixedClock, json_log: io.StringIO
) -> None:
    """The audit seam logs a row when its commit succeeded: a rolled-back row has no line,
    and the line never holds the row's diff or its actor's name."""
    diff = {"account": "m**g@example.com", "national_id": NATIONAL_ID}
    with app.database.unit_of_work() as uow:
        uow.audit.append(at=clock.now(), actor="officer:林關員", event="rolled_back", diff=diff)
        uow.rollback()
        uow.audit.append(at=clock.now(), actor="officer:林關員", event="kept", diff=diff)
        assert lines_of(json_log) == []  # queued, not committed
        uow.commit()
    [line] = lines_of(json_log)
    assert {k: v for k, v in line.items() if k not in ("ts", "audit_seq")} == {
        "level": "info", "event": "kept", "request_id": None, "logger": "swreg.audit",
        "actor_kind": "officer", "registration_id": None, "applicant_type": None,
        "from_state": None, "to_state": None,
    }  # fmt: skip
    shown = json.dumps(line, ensure_ascii=False)  # the line as a reader decodes it
    assert NATIONAL_ID not in shown and "林關員" not in shown and "m**g" not in shown


def test_a_request_line_holds_the_route_template_never_the_path(
    app: App, json_log: io.StringIO
) -> None:
    secret = "S3cretT0ken_abcdefghijklmnopqrstuvwxyz0123"
    with TestClient(create_app(app), client=(PEER, 40000)) as client:
        page = client.get(f"/activate/{secret}?lang=en&token={secret}")
        no_csrf = client.post(f"/activate/{secret}")  # refused before any route runs
        reset = client.get(f"/password/reset/{secret}")
        email = client.get(f"/account/email/{secret}")
        unknown = client.get(f"/nowhere/{secret}")
        static = client.get("/static/style.css")
    assert [r.status_code for r in (page, no_csrf, reset, email, unknown)] == [
        200, 403, 200, 200, 404,
    ]  # fmt: skip
    assert [(line["method"], line["path"], line["status"]) for line in request_lines(json_log)] == [
        ("GET", "/activate/{token}", 200),
        ("POST", "/activate/{token}", 403),
        ("GET", "/password/reset/{token}", 200),
        ("GET", "/account/email/{token}", 200),
        ("GET", None, 404),  # no route: it could be a mistyped link with a token
        ("GET", "/static/{path}", static.status_code),
    ]
    assert secret not in json_log.getvalue()


def test_a_refusal_before_any_route_has_its_id_and_line(app: App, json_log: io.StringIO) -> None:
    """The Host check answers before routing: the answer still has its id and its line."""
    with TestClient(create_app(app), client=(PEER, 40000)) as client:
        foreign = client.get("/activate/S3cretT0ken", headers={"Host": "evil.example"})
    assert foreign.status_code == 400
    [line] = request_lines(json_log)
    assert (line["request_id"], line["path"], line["status"]) == (
        foreign.headers["x-request-id"], "/activate/{token}", 400,
    )  # fmt: skip
    assert "S3cretT0ken" not in json_log.getvalue()


def test_an_unexpected_error_has_its_id_in_the_header_and_its_lines(
    app: App, json_log: io.StringIO
) -> None:
    web = create_app(app)

    async def broken(token: str) -> None:
        raise RuntimeError("a defect")

    web.add_api_route("/broken/{token}", broken)
    with TestClient(web, client=(PEER, 40000), raise_server_exceptions=False) as client:
        response = client.get("/broken/S3cretT0ken")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    lines = lines_of(json_log)
    [error] = [line for line in lines if line["logger"] == "swreg.web"]
    assert (error["level"], error["request_id"]) == ("error", request_id)
    assert error["event"] == "unhandled error on GET /broken/{token}"
    assert "RuntimeError: a defect" in error["exception"]
    [line] = [line for line in lines if line["event"] == "request"]
    assert (line["level"], line["request_id"], line["path"], line["status"]) == (
        "error", request_id, "/broken/{token}", 500,
    )  # fmt: skip
    assert "S3cretT0ken" not in json_log.getvalue()


# -- the scan of a whole run -------------------------------------------------------------------


class Run:
    """A client of the running portal that remembers every secret the run handles."""

    def __init__(self, origin: str, sink: SmtpSink) -> None:
        self.http = httpx.Client(base_url=origin, timeout=30)
        self.origin = origin
        self.sink = sink
        self.secrets: dict[str, str] = {
            "national ID": NATIONAL_ID,
            "e-mail": PERSON,
            "unknown e-mail": "nobody@example.com",
            "PIN": PIN,
            "password": PASSWORD["password"],
            "card reset password": CARD_RESET["password"],
            "link reset password": LINK_RESET["password"],
        }
        self.answered: list[tuple[str, str, int, str]] = []
        """(method, path template, status, X-Request-ID) of every response."""

    def call(self, method: str, path: str, template: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        self.answered.append(
            (method, template, response.status_code, response.headers["x-request-id"])
        )
        self.keep_cookies()
        return response

    def keep_cookies(self) -> None:
        for cookie in self.http.cookies.jar:
            if cookie.value and cookie.name != "lang":
                self.secrets[f"cookie {cookie.name}"] = cookie.value

    def csrf(self) -> dict[str, str]:
        token = self.call("GET", "/api/csrf", "/api/csrf").json()["token"]
        self.secrets["CSRF token"] = token
        return {"X-CSRF-Token": token}

    def start(self) -> str:
        started = self.call(
            "POST", "/api/registrations", "/api/registrations",
            json={"type": "person.general", "consent": True}, headers=self.csrf(),
        )  # fmt: skip
        assert started.status_code == 201, started.text
        registration_id: str = started.json()["id"]
        return registration_id

    def card(self, registration_id: str, answer: Any) -> httpx.Response:
        """The card check of a registration: ``answer(challenge)`` is what the card sends."""
        url = f"/api/registrations/{registration_id}"
        template = "/api/registrations/{registration_id}"
        headers = self.csrf()
        challenge = self.call("POST", f"{url}/challenge", f"{template}/challenge", headers=headers)
        assert challenge.status_code == 200, challenge.text
        return self.call(
            "POST",
            f"{url}/card",
            f"{template}/card",
            json=answer(challenge.json()),
            headers=headers,
        )

    def mail_link(self, path: str, count: int) -> str:
        """The token of the ``count``-th link to ``path`` mailed to the applicant."""
        pattern = re.compile(re.escape(f"{self.origin}{path}") + r"([A-Za-z0-9_-]+)")
        deadline = time.monotonic() + 15
        while True:  # the mail goes out after the commit: wait for it, never for a time
            found = [
                m for message in self.sink.messages if PERSON in str(message["To"])
                for m in pattern.findall(body(message))
            ]  # fmt: skip
            if len(found) >= count:
                return found[count - 1]
            assert time.monotonic() < deadline, f"no mail with {path} arrived"
            time.sleep(0.05)


def officer_token(database_url: str, card: IssuedCard, folder: Path) -> str:
    """``swreg officers add`` and ``swreg officers token``, as an operator runs them."""
    env = swreg_env(SWREG_DATABASE_URL=database_url, SWREG_SECRET_KEY=SECRET.hex())
    certificate = folder / "officer.cer"
    certificate.write_bytes(card.der())
    add = [SWREG, "officers", "add", str(certificate), "--name", OFFICER, "--role", "reviewer"]
    subprocess.run(add, env=env, check=True, capture_output=True, timeout=60)
    issued = subprocess.run(
        [SWREG, "officers", "token", OFFICER, "--json"],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    token: str = json.loads(issued.stdout)["token"]
    return token


def everything(run: Run, pki: TestPKI, officer: str) -> None:
    """The whole run against the portal; every refusal checked with its code."""
    card = pki.issue_person("王小明", NATIONAL_ID[-4:])

    # a whole 個人 registration
    registration_id = run.start()
    checked = run.card(registration_id, lambda challenge: signed(card, challenge))
    assert (checked.status_code, checked.json()["state"]) == (200, "basic_data"), checked.text
    done = run.call(
        "POST", f"/api/registrations/{registration_id}/step",
        "/api/registrations/{registration_id}/step", json=PERSON_ANSWERS, headers=run.csrf(),
    )  # fmt: skip
    assert (done.status_code, done.json()["state"]) == (200, "completed"), done.text

    # refused cards: one of a CA nobody trusts, one with a signature by another key
    stranger = TestPKI.create(PKI_NOW).issue_person("王小明", NATIONAL_ID[-4:])
    refused_id = run.start()
    untrusted = run.card(refused_id, lambda challenge: signed(stranger, challenge))
    forged = run.card(
        refused_id,
        lambda challenge: {
            **signed(card, challenge),
            "signature": signed(stranger, challenge)["signature"],
        },
    )
    assert [(r.status_code, r.json()["errors"][0]["code"]) for r in (untrusted, forged)] == [
        (422, "certificate_untrusted"), (422, "signature_invalid"),
    ]  # fmt: skip

    # the activation by the mailed link (a post without the CSRF token first: refused)
    activation = run.mail_link("/activate/", 1)
    run.secrets["activation token"] = activation
    page = run.call("GET", f"/activate/{activation}", "/activate/{token}")
    forged_post = run.call("POST", f"/activate/{activation}", "/activate/{token}", data={})
    activated = run.call(
        "POST", f"/activate/{activation}", "/activate/{token}",
        data={"csrf": run.csrf()["X-CSRF-Token"]},
    )  # fmt: skip
    assert [r.status_code for r in (page, forged_post, activated)] == [200, 403, 200]

    # a card login: the session cookie
    challenge = run.call("POST", "/api/login/challenge", "/api/login/challenge", headers=run.csrf())
    login = run.call(
        "POST", "/api/login", "/api/login", json=signed(card, challenge.json()), headers=run.csrf()
    )
    assert login.status_code == 200, login.text
    assert run.call("GET", "/api/session", "/api/session").status_code == 200

    # 忘記密碼 with the card, then by the mailed link
    challenge = run.call(
        "POST", "/api/password-reset/challenge", "/api/password-reset/challenge", headers=run.csrf()
    )
    reset = run.call(
        "POST", "/api/password-reset", "/api/password-reset",
        json=signed(card, challenge.json(), account=PERSON, **CARD_RESET), headers=run.csrf(),
    )  # fmt: skip
    assert (reset.status_code, reset.json()["sessions_ended"]) == (200, 1), reset.text
    for name in ("nobody@example.com", PERSON):
        asked = run.call(
            "POST", "/api/password-reset/email", "/api/password-reset/email",
            json={"account": name}, headers=run.csrf(),
        )  # fmt: skip
        assert asked.status_code == 202, asked.text
    link = run.mail_link("/password/reset/", 1)
    run.secrets["reset token"] = link
    assert run.call("GET", f"/password/reset/{link}", "/password/reset/{token}").status_code == 200
    used = run.call(
        "POST", f"/password/reset/{link}", "/password/reset/{token}",
        data={"csrf": run.csrf()["X-CSRF-Token"], **LINK_RESET},
    )  # fmt: skip
    assert used.status_code == 200 and PERSON in used.text

    # the officer API with the personal token; a wrong token refused
    run.secrets["officer token"] = officer
    wrong = officer[:-2] + ("AA" if not officer.endswith("AA") else "BB")
    run.secrets["wrong officer token"] = wrong
    one = "/api/officer/registrations/{registration_id}"
    listed = run.call(
        "GET", "/api/officer/registrations", "/api/officer/registrations",
        headers={"Authorization": f"Bearer {officer}"},
    )  # fmt: skip
    shown = run.call(
        "GET", f"/api/officer/registrations/{registration_id}", one,
        headers={"Authorization": f"Bearer {officer}"},
    )  # fmt: skip
    rejected = run.call(
        "POST", f"/api/officer/registrations/{registration_id}/reject", f"{one}/reject",
        json={"reason": "資料不符"}, headers={"Authorization": f"Bearer {officer}"},
    )  # fmt: skip
    guessed = run.call(
        "GET", "/api/officer/registrations", "/api/officer/registrations",
        headers={"Authorization": f"Bearer {wrong}"},
    )  # fmt: skip
    assert [listed.status_code, shown.status_code, guessed.status_code] == [200, 200, 403]
    assert rejected.status_code == 422, rejected.text  # completed: nothing left to reject
    assert rejected.json()["errors"][0]["code"] == "invalid_transition"


def test_a_whole_run_logs_json_lines_without_any_secret(
    tmp_path: Path, test_databases: TestDatabases, pki: TestPKI
) -> None:
    (tmp_path / "db").mkdir()
    url = test_databases.create(tmp_path / "db")
    setup = bootstrap(Settings(database_url=url, secret_key=SECRET))
    try:
        pki.publish_to(setup.trust, actor="test")
    finally:
        setup.close()
    officer = officer_token(url, pki.issue_person(name=OFFICER), tmp_path)
    sink = SmtpSink().start()
    port = free_port()
    log = tmp_path / "serve.log"
    try:
        process = serve(
            url, SECRET.hex(), port, log, workers=2,
            SWREG_SMTP_HOST="127.0.0.1", SWREG_SMTP_PORT=str(sink.port), SWREG_SMTP_TLS="none",
            SWREG_PASSWORD_RESET="card,email",
        )  # fmt: skip
        run = Run(f"http://127.0.0.1:{port}", sink)
        try:
            everything(run, pki, officer)
        finally:
            run.http.close()
            stop_process(process)
    finally:
        sink.stop()
        test_databases.drop(url)

    banner, *rest = log.read_text(encoding="utf-8").splitlines()
    assert banner.startswith("swreg portal: ")  # printed before the portal starts
    lines = []
    for text in rest:
        line = json.loads(text)  # every line after start-up is one JSON object
        assert isinstance(line, dict) and list(line)[:4] == list(FIRST_FIELDS), text
        assert TIMESTAMP.fullmatch(line["ts"]) and isinstance(line["event"], str), text
        lines.append(line)
        decoded = json.dumps(line, ensure_ascii=False).lower()  # \u escapes undone
        for what, secret in run.secrets.items():
            assert secret.lower() not in text.lower(), f"{what} in the log: {text}"
            assert secret.lower() not in decoded, f"{what} in the log: {text}"
    assert len(run.secrets) >= 15  # the tokens were collected, the cookies among them
    assert {"cookie csrf", "cookie swreg_session"} <= set(run.secrets)
    assert any(name.startswith("cookie swreg_reg_") for name in run.secrets)

    # one request line per response, with its id, template and status
    logged = {
        (line["method"], line["path"], line["status"], line["request_id"])
        for line in lines if line["event"] == "request"
    }  # fmt: skip
    assert set(run.answered) <= logged
    # the business events carry the id of the request that caused them
    activation_id = next(
        rid for method, path, status, rid in run.answered
        if (method, path, status) == ("POST", "/activate/{token}", 200)
    )  # fmt: skip
    activated = [line for line in lines if line["event"] == "activated"]
    assert [(line["request_id"], line["actor_kind"]) for line in activated] == [
        (activation_id, "web")
    ]
    events = {line["event"] for line in lines if line["logger"] == "swreg.audit"}
    assert {"start", "activated", "login", "password_reset", "password_reset_requested"} <= events
    assert any(line["event"] == "officer_auth_failed" for line in lines)
    assert not any(line["logger"] == "uvicorn.access" for line in lines)
    assert lines[-1]["event"] == "portal_stopped"


def test_the_documented_request_line_is_the_one_written(app: App, json_log: io.StringIO) -> None:
    """docs/operations.md (Logs) shows a request line: it parses, and names the fields a request
    line has, in their order."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text("utf-8")
    logs = text.split("\n## Logs\n", 1)[1].split("\n## ", 1)[0]
    [example] = [json.loads(x) for x in re.findall(r"^\{.*\}$", logs, re.MULTILINE)]
    with TestClient(create_app(app), client=(PEER, 40000)) as client:
        client.get("/api/csrf")
    [line] = request_lines(json_log)
    assert list(example) == list(line)
    assert (example["event"], example["path"]) == ("request", "/activate/{token}")
    assert FRESH_ID.fullmatch(example["request_id"]) and TIMESTAMP.fullmatch(example["ts"])


@given(
    st.one_of(
        st.floats(min_value=0, max_value=4e9, allow_nan=False),
        st.integers(0, 4 * 10**9).map(lambda second: second + 0.9999996),  # rounds up
        st.integers(0, 4 * 10**9).map(lambda second: second + 0.0005),
    )
)
def test_the_kept_second_gives_the_timestamp_datetime_gives(created: float) -> None:
    """``ts`` reuses the text up to the second from the line before; the whole text is still
    what ``datetime.fromtimestamp`` (with its rounding to microseconds) makes of the time."""
    moment = datetime.fromtimestamp(created, UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert _timestamp(created) == expected
    assert _timestamp(created) == expected  # the kept second, now
