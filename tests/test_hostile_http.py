"""Hostile requests to the portal: the JSON API of the registration steps, the card check, the
customs ``.cer`` upload (API and page) and the wizard's forms. Properties over every route the
application has, so a route added later is covered too.

For any request, whatever its body, headers or path:

- the answer is never a 5xx; a refusal carries stable codes (:class:`ErrorCode`, plus the
  framework's ``not_found`` / ``method_not_allowed`` / ``bad_request``);
- an unsafe request without a matching CSRF token the server issued is 403 ``csrf_failed`` and
  changes nothing (not even a rate-limit counter), even when an attacker's value is both in the
  cookie and in the header; an oversized body is 413 and changes nothing;
- a request for a foreign ``Host`` is 400 ``bad_request`` before any route runs;
- what a visitor typed, or a certificate's subject, comes back in a page as text: the HTML
  parser reads back exactly the typed value, and no element or attribute appears;
- a card answer passes only with the registration's own live challenge, signed by the key of
  the certificate sent: replayed, expired, foreign or login challenges, another card's
  signature and other origins are refused with their codes and leave the step where it was.

The example registrations, customs and card tests (test_api.py, test_pages.py,
test_customs_api.py, test_pages_customs.py) hold the contract's examples; these add the
properties. Each example gets its own client address, so rate limits do not cut it short.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import fastapi.routing
import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import example, given, reject
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from engine import App, FixedClock, challenge_payload
from engine._errors import ErrorCode
from engine.core.identifiers import is_valid_ubn
from engine.services.hashing import IdentifierHasher
from engine.store import Base
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from engine.web._security import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    UPLOAD_BODY_BYTES,
    new_csrf_token,
)

from .conftest import COMPANY_ANSWERS, ORG_OID, PERSON_ANSWERS, SECRET
from .hostile_strategies import (
    HTML_INJECTIONS,
    INJECTIONS,
    der_trees,
    hostile_text,
    json_values,
    nested,
    pem,
)
from .hypothesis_profiles import hostile
from .test_customs import trust_intermediates
from .test_pages import Page

STABLE_CODES: Final = frozenset(code.value for code in ErrorCode)
"""Every refusal code, the framework's (not_found, method_not_allowed, bad_request) included."""
UNSAFE: Final = ("POST", "PUT", "PATCH", "DELETE")
BEARER_ONLY: Final = ("/api/officer",)
"""Routes authenticated by an Authorization header, never a cookie: CSRF does not apply."""


# -- the site under attack ---------------------------------------------------------------------


def _addressed(web: ASGIApp) -> ASGIApp:
    """``web``, with each request's client address taken from its ``X-Test-Client`` header."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope = {**scope, "client": (value.decode("latin-1"), 50000)}
        await web(scope, receive, send)

    return application


def _valid_ubns() -> Iterator[str]:
    """Distinct valid UBNs: each company registration gets its own account."""
    return (f"{n:08d}" for n in itertools.count(20_000_000) if is_valid_ubn(f"{n:08d}"))


def stored(app: App) -> dict[str, list[str]]:
    """:func:`snapshot` without the rate-limit counters (which a refused request may count)."""
    return {table: rows for table, rows in snapshot(app).items() if table != "rate_limits"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with its path parameters filled in

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


class Site:
    """The portal over one test app, one HTTP client (with a CSRF token), registrations."""

    def __init__(
        self, app: App, web: FastAPI, pki: TestPKI, clock: FixedClock, http: TestClient
    ) -> None:
        self.app, self.web, self.pki, self.clock, self.http = app, web, pki, clock, http
        self.token = new_csrf_token(web.state.portal.identifiers)  # as GET /api/csrf issues
        self.http.headers["X-CSRF-Token"] = self.token
        self.endpoints: list[Endpoint] = []
        self._addresses = itertools.count(1)
        self._ubns = _valid_ubns()
        self._pool: dict[str, tuple[str, dict[str, Any]]] = {}
        self.new_client()

    def __repr__(self) -> str:  # what a failing example prints
        return f"Site({self.app.settings.database_url})"

    def new_client(self) -> None:
        """The next requests come from a new client address (rate limits start afresh)."""
        n = next(self._addresses)
        self.http.headers["x-test-client"] = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        self.http.cookies.set("csrf", self.token)

    def post_json(self, path: str, body: Any) -> httpx.Response:
        """``body`` as JSON with lone surrogates escaped (as a browser's JSON.stringify)."""
        return self.http.post(
            path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )

    def start(self, type_code: str = "person.general") -> dict[str, Any]:
        response = self.post_json("/api/registrations", {"type": type_code, "consent": True})
        assert response.status_code == 201, response.text
        view: dict[str, Any] = response.json()
        return view

    def card_check(self, registration_id: str, card: IssuedCard) -> httpx.Response:
        challenge = self.http.post(f"/api/registrations/{registration_id}/challenge").json()
        return self.post_json(f"/api/registrations/{registration_id}/card", answer(card, challenge))

    def at_step(self, kind: str) -> tuple[str, dict[str, Any]]:
        """A registration waiting at the step ``kind`` names, and that step's valid answers."""
        if kind not in self._pool:
            self._pool[kind] = self._make(kind)
        return self._pool[kind]

    def used(self, kind: str) -> None:
        """The registration of ``kind`` moved on: the next :meth:`at_step` makes another."""
        self._pool.pop(kind, None)

    def _make(self, kind: str) -> tuple[str, dict[str, Any]]:
        self.new_client()
        ubn = next(self._ubns)
        card, answers, type_code = {
            "person": (self.pki.issue_person(), PERSON_ANSWERS, "person.general"),
            "company": (
                self.pki.issue_company(ubn),
                {**COMPANY_ANSWERS, "ubn": ubn},
                "enterprise.general",
            ),
            "company_info": (
                self.pki.issue_company(ubn),
                {**COMPANY_ANSWERS, "ubn": ubn},
                "enterprise.general",
            ),
            "organization": (
                self.pki.issue_organization(ORG_OID),
                {**COMPANY_ANSWERS, "oid": ORG_OID},
                "enterprise.general",  # an XCA card makes it enterprise.organization
            ),
        }[kind]
        view = self.start(type_code)
        checked = self.card_check(view["id"], card)
        assert checked.status_code == 200, checked.text
        if kind == "company_info":
            moved = self.post_json(f"/api/registrations/{view['id']}/step", answers)
            assert moved.json()["state"] == "enterprise_info", moved.text
            return view["id"], {"company_name": COMPANY_ANSWERS["company_name"]}
        return view["id"], dict(answers)


def answer(card: IssuedCard, challenge: Mapping[str, Any], **override: Any) -> dict[str, Any]:
    """What the card agent sends for ``challenge``."""
    body = {
        "challenge_id": challenge["challenge_id"],
        "certificate": b64(card.der()),
        "signature": b64(card.sign(base64.b64decode(challenge["payload"]))),
        "chain": [b64(der) for der in card.chain_der()],
    }
    body.update(override)
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def site(app: App, pki: TestPKI, clock: FixedClock) -> Iterator[Site]:
    trust_intermediates(app, pki)
    web = create_app(app)
    with TestClient(_addressed(web)) as http:
        yield Site(app, web, pki, clock, http)


def coded(response: httpx.Response, *statuses: int) -> list[str]:
    """The refusal codes of ``response`` (none for a success), checking that it is no 5xx,
    that a JSON refusal's codes are stable and, when ``statuses`` are given, its status."""
    assert response.status_code < 500, response.text[:1000]
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:1000])
    if response.status_code < 400:
        return []
    if not response.headers["content-type"].startswith("application/json"):
        assert response.headers["content-type"].startswith("text/html")
        return []  # a page: its refusal is shown, the status says which kind
    errors = response.json()["errors"]
    codes = [str(e["code"]) for e in errors]
    assert codes and set(codes) <= STABLE_CODES, codes
    return codes


def snapshot(app: App) -> dict[str, list[str]]:
    """Every row of every table, for "nothing changed" checks."""
    with app.database.unit_of_work() as uow:
        return {
            table.name: sorted(repr(tuple(row)) for row in uow.session.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }


def routes(web: FastAPI) -> Iterator[tuple[str, set[str]]]:
    """``(path, methods)`` of every route, those of included routers too."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI ≥ 0.16x nests
    for route in flatten(web.routes) if flatten is not None else web.routes:
        methods = getattr(route, "methods", None)
        path = getattr(route, "path_format", None)
        if methods and path:
            yield path, set(methods)


def endpoints(site: Site) -> list[Endpoint]:
    """Every unsafe route of the application, its parameters filled in: a live registration,
    certificate 1, anything else ``x`` (made once per test)."""
    if not site.endpoints:
        site.new_client()
        values = {"registration_id": site.start()["id"], "certificate_id": "1"}
        for path, methods in routes(site.web):
            filled = re.sub(r"\{(\w+)[^}]*\}", lambda m: values.get(m[1], "x"), path)
            site.endpoints += [Endpoint(m, filled) for m in sorted(methods & set(UNSAFE))]
        site.endpoints.sort(key=str)
        assert site.endpoints
    return site.endpoints


# -- the JSON API of the steps -------------------------------------------------------------------

_STEP_KINDS: Final = ["person", "company", "company_info", "organization"]
_EXTRA_KEYS: Final = ["__proto__", "constructor", "csrf", "state", "account", "locked", "id", ""]


@st.composite
def step_bodies(draw: st.DrawFn) -> tuple[str, Callable[[dict[str, Any]], Any]]:
    """A step kind and how to turn its valid answers into a hostile body."""
    kind = draw(st.sampled_from(_STEP_KINDS))
    values = json_values(hostile_text(["Passw0rdOK", "04595257", "A123456789", *INJECTIONS]))
    if draw(st.integers(0, 9)) == 0:  # now and then no object at all
        body = draw(values)
        return kind, lambda _answers: body
    fields = sorted({*PERSON_ANSWERS, *COMPANY_ANSWERS, "oid", "sub_card", *_EXTRA_KEYS})
    changes = draw(st.dictionaries(st.sampled_from(fields), values, max_size=4))
    confirm = draw(st.booleans())

    def build(answers: dict[str, Any]) -> Any:
        body = {**answers, **changes}
        if confirm and "password" in changes:
            body["password_confirm"] = changes["password"]
        return body

    return kind, build


@hostile(40)
@given(step_bodies())
@example(
    (
        "person",
        lambda a: {**a, "password": "Passw0rdOK\ud800", "password_confirm": "Passw0rdOK\ud800"},
    )
)
@example(("person", lambda a: {**a, "email": json.loads(nested(40))}))
def test_any_answers_to_a_step_are_accepted_or_refused_with_codes(
    site: Site, case: tuple[str, Callable[[dict[str, Any]], Any]]
) -> None:
    kind, build = case
    registration, answers = site.at_step(kind)
    site.new_client()
    response = site.post_json(f"/api/registrations/{registration}/step", build(answers))
    codes = coded(response, 200, 409, 413, 422)
    if response.status_code == 200:
        site.used(kind)
        return
    form_fields = {*answers, "oid", "sub_card", "iot"}
    for error in response.json()["errors"]:
        assert error["field"] in form_fields or error["field"] is None, (error, codes)


_RAW_BODIES: Final = [
    b"",
    b"{",
    b'{"type": ',
    b"\xef\xbb\xbf{}",  # a BOM
    b"NaN",
    b"[1e999999]",
    b'{"a": 1, "a": 2}',
    "{}".encode("utf-16"),
    b"\xff\xfe{\x00}\x00",
    b"\xc3\x28",  # not UTF-8
    b'"\\ud800"',
    b'{"challenge_id": "a\\u0000", "certificate": "AA==", "signature": "AA==", "type": "x"}',
    b"-" * 1000,
    b"9" * 5000,  # Python refuses to read more than 4300 digits
    nested(MAX_JSON_DEPTH).encode(),
    nested(MAX_JSON_DEPTH + 1).encode(),
    nested(5000).encode(),
]
_CONTENT_TYPES: Final = [
    None,
    "application/json",
    "application/vnd.api+json",
    "application/json; charset=utf-16",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=x",
]
raw_bodies = st.one_of(
    st.sampled_from(_RAW_BODIES),
    json_values().map(lambda value: json.dumps(value).encode()),
    st.integers(1, 6000).map(lambda depth: nested(depth).encode()),
    st.binary(max_size=200),
)


@hostile(80)
@given(st.data(), raw_bodies, st.sampled_from(_CONTENT_TYPES))
def test_any_body_to_any_route_is_answered_with_codes(
    site: Site, data: st.DataObject, body: bytes, content_type: str | None
) -> None:
    endpoint = data.draw(st.sampled_from(endpoints(site)), label="endpoint")
    site.new_client()
    headers = {"content-type": content_type} if content_type else {}
    response = site.http.request(endpoint.method, endpoint.path, content=body, headers=headers)
    codes = coded(response)
    if response.status_code == 400:  # the framework's: a form or JSON text it cannot decode
        assert codes in ([], ["bad_request"]), codes


def test_a_nul_character_is_refused_before_any_route(site: Site) -> None:
    # NUL reached database lookups: PostgreSQL refuses it in text (psycopg DataError → 500)
    # for a registration id, a challenge id, an account name, a Turnkey sender.
    registration = site.start()["id"]
    card = {"challenge_id": "a\x00", "certificate": "AA==", "signature": "AA=="}
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/registrations/%00", {}),
        ("GET", "/register/%00", {}),
        ("GET", "/api/accounts/check?name=a%00b", {}),
        ("GET", "/customs/query?key=A%0000001", {}),
        ("POST", f"/api/registrations/{registration}/card", {"json": card}),
        ("POST", "/api/login", {"json": card}),
        ("POST", "/api/renewal", {"json": {**card, "account": "a\x00", "password": "x"}}),
        (
            "POST",
            "/api/turnkey/verify",
            {"json": {"sender": "\x00", "message": "", "signature": ""}},
        ),
        ("POST", f"/register/{registration}/check-account", {"data": {"email": "a\x00@b.tw"}}),
        ("POST", "/api/login", {"json": card, "encoding": "utf-16"}),  # Python reads UTF-16 JSON
    ]
    before = snapshot(site.app)
    for method, url, body in requests:
        site.new_client()
        if "json" in body:
            response = site.http.request(
                method, url, content=json.dumps(body["json"]).encode(body.get("encoding", "utf-8")),
                headers={"content-type": "application/json"},
            )  # fmt: skip
        else:
            response = site.http.request(method, url, data=body.get("data"))
        codes = coded(response, 422)
        assert codes == (["invalid_value"] if url.startswith("/api/") else []), url
    assert snapshot(site.app) == before


def test_json_nested_deeper_than_the_limit_is_refused_before_any_route(site: Site) -> None:
    # The JSON parser recursed to Python's limit: FastAPI answered 400 with a code outside
    # ErrorCode, and the customs upload, which parses its body itself, 500.
    deep = nested(MAX_JSON_DEPTH + 1).encode()
    for endpoint in endpoints(site):
        response = site.http.request(
            endpoint.method,
            endpoint.path,
            content=deep,
            headers={"content-type": "application/json"},
        )
        codes = coded(response, 422)
        assert codes == (["invalid_value"] if endpoint.path.startswith("/api/") else []), endpoint
    deepest = json.loads(nested(MAX_JSON_DEPTH - 1))  # inside the start body: one level more
    ok = site.post_json(
        "/api/registrations", {"type": "person.general", "consent": True, "x": deepest}
    )
    assert ok.status_code == 201, ok.text


# -- what was typed comes back as text ------------------------------------------------------

_TEXT_INPUTS: Final = ("email", "contact_name", "phone", "address", "sub_card")
page_text = hostile_text([*HTML_INJECTIONS, "王小明"]).filter(
    lambda text: not any("\ud800" <= c <= "\udfff" for c in text)  # no form post carries them
)


def assert_no_markup(parsed: Page) -> None:
    """No element or attribute that only injected markup would make: scripts are the page's
    own (``src`` or JSON data), no event handler, no image, no frame."""
    elements = parsed.all()
    assert not any(name.startswith("on") for e in elements for name in e.attrs)
    assert not {e.tag for e in elements} & {"img", "svg", "iframe", "object", "embed", "textarea"}
    for script in parsed.all("script"):
        assert script.has("src") or script.get("type") == "application/json", script.attrs


@hostile(40)
@given(st.fixed_dictionaries({name: page_text for name in _TEXT_INPUTS}))
@example(dict.fromkeys(_TEXT_INPUTS, '"><script>alert(1)</script>'))
def test_typed_values_come_back_in_the_page_as_text(site: Site, typed: dict[str, str]) -> None:
    registration, answers = site.at_step("company")
    site.new_client()
    baseline = Page(site.http.get(f"/register/{registration}").text)
    form = {**answers, **typed, "password_confirm": "Mismatch0"}  # refused: the page comes back
    response = site.http.post(f"/register/{registration}", data=form)
    coded(response, 409, 413, 422)
    if response.status_code == 413 or any("\x00" in text for text in typed.values()):
        return  # refused before the page: over 64 KiB percent-encoded, or a NUL
    parsed = Page(response.text)
    for name in _TEXT_INPUTS:
        assert parsed.id(f"f-{name}").get("value") == typed[name], name
    assert_no_markup(parsed)
    assert len(parsed.all("script")) == len(baseline.all("script"))
    for text in typed.values():
        if text in HTML_INJECTIONS and "<" in text:
            assert text not in response.text  # only ever escaped


def _echoed(site: Site, page: str, text: str) -> tuple[httpx.Response, dict[str, str]]:
    """Have ``page`` show ``text`` back; the response and ``{element id: expected value}``."""
    if page == "company_info":  # 企業資訊, refused for the control character appended
        registration, _ = site.at_step("company_info")
        typed = text + "\x07"
        response = site.http.post(f"/register/{registration}", data={"company_name": typed})
        return response, {"f-company_name": typed}
    if page == "customs_import":  # 通關憑證註冊, refused for the junk file
        fields = {"national_id": text, "contact_name": text, "specialist_code": text}
        response = site.http.post(
            "/customs/import",
            data={"csrf": site.token, "usage_type": "broker_specialist", **fields},
            files={"file": ("x.cer", b"junk", "application/pkix-cert")},
        )
        return response, {f"f-{name}": value for name, value in fields.items()}
    if page == "customs_query":  # 通關憑證查詢: the key stays in its box
        response = site.http.get("/customs/query", params={"key": text})
        return response, {"key": text[:256]}
    # 帳號啟用: the link's token. (TestClient decodes a path twice, so no "%" in it here.)
    token = text.replace("%", "")
    response = site.http.get(f"/activate/{quote(token, safe='')}", follow_redirects=False)
    return response, {"activate-form": token}


@hostile(40)
@given(st.sampled_from(["company_info", "customs_import", "customs_query", "activate"]), page_text)
@example("activate", "a#b?c=d&e")
def test_other_pages_show_what_they_echo_as_text(site: Site, page: str, text: str) -> None:
    site.new_client()
    response, expected = _echoed(site, page, text)
    coded(response)
    if "\x00" in text or response.status_code in (307, 404, 413):
        return  # refused before any page: a NUL, no such path ("/" in a token), too large
    parsed = Page(response.text)
    assert_no_markup(parsed)
    for element_id, value in expected.items():
        element = parsed.id(element_id)
        if element.tag == "form":  # the token goes back in the action, one path segment
            action = urlsplit(element.get("action") or "")
            assert not action.query and not action.fragment, action
            assert action.path.startswith("/activate/") and "/" not in action.path[10:], action
            assert unquote(action.path[10:]) == value
        else:
            assert element.get("value") == value, element_id


@hostile(15)
@given(
    st.one_of(
        st.sampled_from(HTML_INJECTIONS),
        st.text(
            st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=64
        ),
    )
)
def test_a_certificate_name_is_shown_as_text(site: Site, name: str) -> None:
    try:
        card = site.pki.issue_person(name, "6789")
    except ValueError:  # cryptography will not encode it (length, …)
        reject()
    site.new_client()
    view = site.start()
    checked = site.card_check(view["id"], card)
    coded(checked, 200)
    assert checked.json()["identity"]["name"] == name
    page = site.http.get(f"/register/{view['id']}")
    parsed = Page(page.text)
    field = parsed.id("f-contact_name")
    assert (field.get("value"), field.has("readonly")) == (name, True)
    assert_no_markup(parsed)


@hostile(15)
@given(st.sampled_from(HTML_INJECTIONS).map(lambda text: text[:60]))  # OU: 64 at most
def test_a_customs_certificate_subject_is_shown_as_text(site: Site, system: str) -> None:
    site.new_client()
    card = site.pki.issue_customs("97162640", system=system)
    challenge = site.http.post("/api/customs-certificates/challenge").json()
    signature = card.sign(base64.b64decode(challenge["payload"]))
    proof = {
        "challenge_id": challenge["challenge_id"],
        "signature": base64.b64encode(signature).decode(),
    }
    imported = site.http.post(
        "/api/customs-certificates",
        data={"usage_type": "shipping", "ubn": "97162640", **proof},
        files={"file": ("turnkey.cer", card.der(), "application/pkix-cert")},
    )
    coded(imported, 201)
    page = site.http.get("/customs/query", params={"key": "97162640"})
    coded(page, 200)
    parsed = Page(page.text)
    shown = x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, system).rfc4514_string()
    assert shown in parsed.text  # as text (RFC 4514 escapes < > " ; + , \\ with a backslash)
    assert_no_markup(parsed)


# -- the card check: only the registration's own live challenge, signed by the card -------------

ORIGIN: Final = "http://127.0.0.1:8000"


@hostile(25)
@given(
    challenge=st.sampled_from(
        ["own", "used", "expired", "other_registration", "login", "unknown", "garbage"]
    ),
    payload=st.sampled_from(["own", "other_origin", "other_registration", "empty"]),
    signer=st.sampled_from(["card", "other_card"]),
    certificate=st.sampled_from(["card", "other_card", "garbage"]),
    garbage=st.text(max_size=64),
)
@example("own", "own", "card", "card", "")  # the one that passes
@example("own", "own", "other_card", "card", "")  # a signature from another card
@example("used", "own", "card", "card", "")  # a replay
@example("expired", "own", "card", "card", "")
@example("garbage", "own", "card", "card", "a\x00")  # NUL: PostgreSQL cannot even look it up
def test_a_card_answer_passes_only_for_its_own_live_challenge(
    site: Site, challenge: str, payload: str, signer: str, certificate: str, garbage: str
) -> None:
    site.new_client()
    card, other = site.pki.issue_person(), site.pki.issue_person()
    mine, theirs = site.start()["id"], site.start()["id"]
    issued = site.http.post(f"/api/registrations/{mine}/challenge").json()
    nonce = bytes.fromhex(issued["nonce"])
    if challenge == "used":
        spoiled = site.post_json(
            f"/api/registrations/{mine}/card", answer(card, issued, signature="")
        )
        coded(spoiled, 422)
    elif challenge == "expired":
        site.clock.advance(timedelta(minutes=5, seconds=1))
    challenge_id = {
        "other_registration": lambda: site.http.post(
            f"/api/registrations/{theirs}/challenge"
        ).json()["challenge_id"],
        "login": lambda: site.http.post("/api/login/challenge").json()["challenge_id"],
        "unknown": lambda: str(uuid.uuid4()),
        "garbage": lambda: garbage,
    }.get(challenge, lambda: issued["challenge_id"])()
    message = {
        "own": challenge_payload(ORIGIN, mine, nonce),
        "other_origin": challenge_payload("https://evil.example", mine, nonce),
        "other_registration": challenge_payload(ORIGIN, theirs, nonce),
        "empty": b"",
    }[payload]
    cards = {"card": card, "other_card": other}
    body = {
        "challenge_id": challenge_id,
        "certificate": b64(cards[certificate].der()) if certificate in cards else b64(b"junk"),
        "signature": b64(cards[signer].sign(message)),
        "chain": [b64(der) for der in card.chain_der()],
    }
    response = site.post_json(f"/api/registrations/{mine}/card", body)
    codes = coded(response, 200, 422)
    passes = challenge == "own" and payload == "own" and signer == certificate
    assert (response.status_code == 200) == passes, codes
    state = site.http.get(f"/api/registrations/{mine}").json()
    assert state["state"] == ("basic_data" if passes else "card_check")
    if not passes:
        assert state["identity"] == {} and set(codes) <= {
            "challenge_expired", "challenge_used", "signature_invalid", "invalid_value",
            "certificate_malformed", "not_a_certificate",
        }  # fmt: skip


# -- CSRF and size: refused before any route, nothing changes --------------------------------


_TOKEN: Final = new_csrf_token(IdentifierHasher(SECRET))  # issued under the test apps' key
_OTHER: Final = new_csrf_token(IdentifierHasher(SECRET))  # issued too, but another one
_FORGED: Final = "F" * 32 + "." + "0" * 32  # an issued token's shape, chosen by the attacker
_CHOSEN: Final = "T" * 43  # what the old double-submit cookie held: any 43 url-safe characters
_FOREIGN: Final = new_csrf_token(IdentifierHasher(b"another server's key, 32 bytes!!"))
csrf_failures = st.sampled_from(
    [  # (cookie, headers, form): never the same server-issued token in cookie and header/form
        (None, {}, None),  # nothing at all
        (_TOKEN, {}, None),  # the cookie without the header
        (None, {"X-CSRF-Token": _TOKEN}, None),  # the header without the cookie
        (_TOKEN, {"X-CSRF-Token": _OTHER}, None),  # two issued tokens, not the same
        (_TOKEN, {"X-CSRF-Token": _TOKEN.upper()}, None),
        (_TOKEN[:-1], {"X-CSRF-Token": _TOKEN[:-1]}, None),  # not a token's shape
        ("x" * 43 + ";", {"X-CSRF-Token": "x" * 43 + ";"}, None),
        (_FORGED, {"X-CSRF-Token": _FORGED}, None),  # the attacker's value in both: not issued
        (_CHOSEN, {"X-CSRF-Token": _CHOSEN}, None),  # passed before the tokens were issued
        (_FOREIGN, {"X-CSRF-Token": _FOREIGN}, None),  # issued by another server
        (_FORGED, {}, {"csrf": _FORGED}),  # the same, in the form field
        (_TOKEN, {}, {"csrf": _OTHER}),  # the form field mismatched
        (None, {}, {"csrf": _TOKEN}),  # the form field without the cookie
        (_TOKEN, {"X-CSRF-Token": ""}, {"csrf": ""}),
        (_TOKEN, {}, {"csrf": _TOKEN + "x"}),
    ]
)


@hostile(60)
@given(st.data(), csrf_failures)
def test_an_unsafe_request_without_a_matching_csrf_token_changes_nothing(
    site: Site,
    data: st.DataObject,
    failure: tuple[str | None, dict[str, str], dict[str, str] | None],
) -> None:
    targets = [e for e in endpoints(site) if not e.path.startswith(BEARER_ONLY)]
    endpoint = data.draw(st.sampled_from(targets), label="endpoint")
    cookie, headers, form = failure
    before = snapshot(site.app)
    with TestClient(site.web) as stranger:
        if cookie is not None:
            stranger.cookies.set("csrf", cookie)
        if form is None:
            response = stranger.request(endpoint.method, endpoint.path, headers=headers, json={})
        else:
            response = stranger.request(endpoint.method, endpoint.path, headers=headers, data=form)
    assert response.status_code == 403, (endpoint, response.text[:300])
    if endpoint.path.startswith("/api/"):
        assert coded(response) == ["csrf_failed"]
    assert snapshot(site.app) == before


_FOREIGN_HOSTS: Final = [
    "evil.example",
    "127.0.0.1:8001",  # the public origin's address on another port
    "127.0.0.1:8000.evil.example",
    "testserver.evil.example",
    "localhost:8000",
    "[::1]:8000",
    "",
]


@hostile(40)
@given(st.data(), st.sampled_from(_FOREIGN_HOSTS))
def test_a_foreign_host_is_refused_before_any_route(
    site: Site, data: st.DataObject, host: str
) -> None:
    """DNS rebinding: a page of the attacker's name, resolved to the portal, gets nothing."""
    pages = [Endpoint("GET", path) for path in ("/", "/register", "/api/csrf", "/demo/outbox")]
    endpoint = data.draw(st.sampled_from(pages + endpoints(site)), label="endpoint")
    before = snapshot(site.app)
    response = site.http.request(endpoint.method, endpoint.path, headers={"Host": host}, json={})
    assert response.status_code == 400, (endpoint, response.status_code)
    if endpoint.path.startswith("/api/"):
        assert coded(response) == ["bad_request"]
    assert "set-cookie" not in response.headers
    assert snapshot(site.app) == before


def _limit(path: str) -> int:
    return UPLOAD_BODY_BYTES if path.startswith("/api/customs-certificates") else MAX_BODY_BYTES


@hostile(30)
@given(st.data(), st.integers(1, 5000), st.booleans())
def test_an_oversized_body_is_refused_and_changes_nothing(
    site: Site, data: st.DataObject, extra: int, declared: bool
) -> None:
    endpoint = data.draw(st.sampled_from(endpoints(site)), label="endpoint")
    size = _limit(endpoint.path) + extra
    before = snapshot(site.app)
    site.new_client()

    def chunks() -> Iterator[bytes]:  # no Content-Length: what streams in is counted
        for start in range(0, size, 16384):
            yield b"x" * min(16384, size - start)

    body: bytes | Iterator[bytes] = b"x" * size if declared else chunks()
    response = site.http.request(endpoint.method, endpoint.path, content=body)
    assert response.status_code == 413, (endpoint, response.status_code)
    if endpoint.path.startswith("/api/"):
        assert coded(response) == ["request_too_large"]
    assert snapshot(site.app) == before


# -- forms in a foreign charset --------------------------------------------------------------

_CHARSETS: Final = ["utf-8", "UTF8", "utf-7", "unicode_escape", "raw_unicode_escape", "utf-16",
                    "latin-1", "cp1252", "no-such-codec", ""]  # fmt: skip
_FORM_ROUTES: Final = [
    "/register",
    "/register/{id}/cancel",
    "/register/{id}",
    "/register/{id}/check-account",
    "/customs/import",
    "/customs/delete/1",
    "/api/customs-certificates",
]


def multipart(fields: Mapping[str, str], charset: str) -> tuple[bytes, dict[str, str]]:
    """A multipart form (and a ``file`` part) whose Content-Type names ``charset``. Values are
    encoded in UTF-8 when that is the charset (lone surrogates passed through), else in UTF-7,
    where ``+2AA-`` decodes to a lone surrogate."""
    boundary = "hostile-boundary"
    utf8 = is_utf8(charset)

    def encoded(value: str) -> bytes:
        return value.encode("utf-8", "surrogatepass") if utf8 else value.encode("utf-7")

    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + encoded(value)
        + b"\r\n"
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.cer"\r\n'
        "Content-Type: application/pkix-cert\r\n\r\n".encode()
        + b"junk\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    suffix = f"; charset={charset}" if charset else ""
    return body, {"content-type": f"multipart/form-data; boundary={boundary}{suffix}"}


def is_utf8(charset: str) -> bool:
    return charset.lower().replace("-", "") in ("utf8", "")


@hostile(40)
@given(
    st.sampled_from(_FORM_ROUTES),
    st.sampled_from(_CHARSETS),
    st.dictionaries(
        st.sampled_from(
            ["csrf", "type", "email", "password", "key", "ubn", "usage_type", "contact_name"]
        ),
        st.sampled_from(["\ud800", "\udfff x", "王小明", "Passw0rd\ud800", "<b>"]),
        max_size=4,
    ),
)
@example("/register/{id}", "utf-7", {"email": "\ud800"})
@example("/register/{id}/check-account", "utf-7", {"email": "x\ud800@example.com"})
@example("/customs/import", "utf-7", {"usage_type": "shipping", "ubn": "\ud800"})
@example("/register/{id}/check-account", "utf-8", {"email": "a\x00@example.com"})
@example("/register/{id}/cancel", "utf-7", {"csrf": "\ud800"})  # the token itself
def test_a_form_in_a_foreign_charset_is_refused(
    site: Site, route: str, charset: str, fields: dict[str, str]
) -> None:
    # Starlette decodes form fields with the charset of the Content-Type: UTF-7 turned "+2AA-"
    # into a lone surrogate, which crashed the CSRF check, argon2, SQLite and page rendering.
    registration, answers = site.at_step("person")
    site.new_client()
    path = route.replace("{id}", registration)
    before = snapshot(site.app)
    texts = {k: v for k, v in answers.items() if isinstance(v, str)}
    body, headers = multipart({"csrf": site.token, **texts, **fields}, charset)
    headers["X-CSRF-Token"] = ""  # the token is the form's, as a page posts it
    response = site.http.post(path, content=body, headers=headers)
    coded(response)
    if "csrf" in fields:
        assert response.status_code == 403, (path, charset, response.status_code)
    elif not is_utf8(charset):  # 403 when the charset garbles the token too (UTF-16)
        assert response.status_code in (403, 422), (path, charset, response.status_code)
        if path.startswith("/api/"):
            assert coded(response) in (["invalid_value"], ["csrf_failed"])
        assert snapshot(site.app) == before


# -- paths -----------------------------------------------------------------------------------

_PAGES: Final = [
    "/register/{}",
    "/customs/query?key={}",
    "/activate/{}",
    "/{}",
    "/api/registrations/{}",
    "/api/accounts/check?name={}",
    "/api/customs-certificates?key={}",
]


@hostile(60)
@given(
    st.sampled_from(_PAGES),
    st.one_of(
        hostile_text(["..", "%2e%2e", "//evil.example", "\\evil.example"]), st.text(max_size=3)
    ),
    st.sampled_from(["", "/", "//", "///", "/\\"]),
)
@example("/{}", "evil.example/x", "//")
@example("/api/registrations/{}", "\x00", "")
@example("/api/accounts/check?name={}", "a\x00b", "")
@example("/{}", "evil.example", "/\\")
def test_any_path_is_answered_with_codes_and_links_stay_home(
    site: Site, template: str, segment: str, prefix: str
) -> None:
    site.new_client()
    encoded = quote(segment.encode("utf-8", "surrogatepass"), safe="")
    url = prefix + template.format(encoded).lstrip("/") if prefix else template.format(encoded)
    response = site.http.get(url)
    coded(response)
    if response.headers["content-type"].startswith("text/html"):
        switch = Page(response.text).id("lang-switch").get("href") or ""
        assert switch.startswith("/") and switch[1:2] not in ("/", "\\"), switch


# -- customs uploads -------------------------------------------------------------------------

cer_files = st.one_of(
    der_trees,
    st.binary(max_size=300),
    der_trees.map(pem),
    st.sampled_from([b"", b"-----BEGIN CERTIFICATE-----", pem(b"\x30\x00", "PRIVATE KEY")]),
)


@hostile(40)
@given(
    cer_files,
    st.sampled_from(["shipping", "broker_specialist", "general_forwarder", "nonsense", ""]),
    st.dictionaries(
        st.sampled_from(
            [
                "ubn",
                "national_id",
                "contact_name",
                "customs_office",
                "specialist_code",
                "certificate_kind",
            ]
        ),
        page_text,
        max_size=4,
    ),
    st.booleans(),
)
def test_any_customs_upload_is_refused_with_codes_and_stores_nothing(
    site: Site, file: bytes, usage_type: str, answers: dict[str, str], through_page: bool
) -> None:
    site.new_client()
    before = stored(site.app)
    fields = {"usage_type": usage_type, **answers}
    if through_page:
        fields["csrf"] = site.token
    response = site.http.post(
        "/customs/import" if through_page else "/api/customs-certificates",
        data=fields,
        files={"file": ("upload.cer", file, "application/octet-stream")},
    )
    coded(response, 409, 422)
    assert stored(site.app) == before
