"""Registrations are not bearer links (DESIGN.md §6, issue 13 item 2).

Starting a registration sets an HttpOnly, SameSite=Strict cookie holding a secret bound to it;
every API route and page under a registration id answers anyone without that secret exactly
like an unknown id (404 ``registration_not_found``), before and after the registration ends,
and writes nothing for them. Once ended, even the holder sees only id, state, type and the
masked account. Before the fix, a client with no cookies read the e-mail, phone, address,
birth date, name and ID digits of any registration whose id it knew, and drove its steps.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from engine import (
    App,
    FixedClock,
    Labels,
    Settings,
    StepSpec,
    SwregError,
    bootstrap,
    hookimpl,
    make_plugin_manager,
)
from engine.core.workflow import default_definition_source
from engine.store import AuditEntry, Challenge, Registration
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import PERSON_ANSWERS
from .test_api import b64, card_check, csrf, error, signed, start

UNKNOWN = "00000000-0000-0000-0000-000000000000"
COOKIE = re.compile(r"swreg_reg_([0-9a-f-]{36})=([A-Za-z0-9_-]+); (.*)")
ENDED_KEYS = {
    "id", "state", "applicant_type", "chosen_type", "path", "step_number", "data", "locked",
    "account", "expires_at", "identity",
}  # fmt: skip


class ApprovalPlugin:
    """An officer step (待審核) after 企業資訊, as tests/test_approval.py has it."""

    @hookimpl
    def swreg_workflow_steps(self) -> list[StepSpec]:
        return [StepSpec("approval", Labels("審核", "Approval"), actor="officer")]


WITH_APPROVAL = default_definition_source().replace(
    '[[step]]\nid = "completed"',
    '[[step]]\nid = "approval"\napplies_to = ["enterprise"]\n\n[[step]]\nid = "completed"',
)


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    """The applicant's browser."""
    with TestClient(create_app(app)) as test_client:
        yield test_client


@pytest.fixture
def stranger(app: App) -> Iterator[TestClient]:
    """Another browser, on the same portal, that learnt the registration's id."""
    with TestClient(create_app(app)) as test_client:
        yield test_client


@pytest.fixture
def person_card(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("王小明", "6789")


def at_state(client: TestClient, state: str, card: IssuedCard) -> str:
    """A registration of ``client`` at ``state`` (card_check, basic_data, completed,
    cancelled), driven through the API as its browser does; its id."""
    registration_id: str = start(client, "person.general").json()["id"]
    if state == "card_check":
        return registration_id
    assert card_check(client, registration_id, card).status_code == 200
    if state == "cancelled":
        cancelled = client.post(
            f"/api/registrations/{registration_id}/cancel", headers=csrf(client)
        )
        assert cancelled.json()["state"] == "cancelled"
    elif state == "completed":
        done = client.post(
            f"/api/registrations/{registration_id}/step", json=PERSON_ANSWERS, headers=csrf(client)
        )
        assert done.json()["state"] == "completed", done.text
    return registration_id


def footprint(app: App, registration_id: str) -> tuple[Any, ...]:
    """Everything a request could have written about a registration."""
    with app.database.unit_of_work() as uow:
        session = uow.session
        row = session.get(Registration, registration_id)
        assert row is not None
        return (
            row.state,
            row.version,
            row.updated_at,
            dict(row.data),
            session.scalar(select(func.count()).select_from(AuditEntry)),
            session.scalar(
                select(func.count())
                .select_from(Challenge)
                .where(Challenge.registration_id == registration_id)
            ),
            session.scalar(
                select(func.count())
                .select_from(Challenge)
                .where(Challenge.registration_id == registration_id, Challenge.used_at.is_not(None))
            ),
        )


def card_body(card: IssuedCard, challenge_id: str = "0" * 32) -> dict[str, Any]:
    """A well-formed card response (signed over nothing in particular)."""
    return {
        "challenge_id": challenge_id,
        "certificate": b64(card.der()),
        "signature": b64(card.sign(b"not the challenge")),
        "chain": [b64(der) for der in card.chain_der()],
    }


def api_request(
    client: TestClient, action: str, registration_id: str, card: IssuedCard
) -> httpx.Response:
    """One of the API's registration routes, with a body it would accept."""
    base = f"/api/registrations/{registration_id}"
    if action == "get":
        return client.get(base)
    headers = csrf(client)
    if action == "card":
        return client.post(f"{base}/card", json=card_body(card), headers=headers)
    if action == "step":
        return client.post(f"{base}/step", json=PERSON_ANSWERS, headers=headers)
    return client.post(f"{base}/{action}", headers=headers)


def page_request(client: TestClient, action: str, registration_id: str) -> httpx.Response:
    """One of the wizard's registration pages (a form post with its CSRF token)."""
    url = f"/register/{registration_id}"
    if action == "page":
        return client.get(url)
    headers = csrf(client)
    form = {k: str(v) for k, v in PERSON_ANSWERS.items() if k != "consent"}
    target = url if action == "post" else f"{url}/{action}"
    return client.post(target, data=form, headers=headers, follow_redirects=False)


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every route of the application, through the routers it includes."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI's included router
            yield from api_routes(route.original_router.routes)


API_ACTIONS = ["get", "challenge", "card", "step", "back", "cancel"]
PAGE_ACTIONS = ["page", "post", "check-account", "back", "cancel"]


# -- the cookie --------------------------------------------------------------------------------


def test_the_api_start_sets_one_httponly_strict_cookie_per_registration(
    client: TestClient, app: App
) -> None:
    response = start(client, "person.general")
    assert response.status_code == 201
    registration_id = response.json()["id"]
    cookies = [COOKIE.fullmatch(c) for c in response.headers.get_list("set-cookie")]
    found = [m.groups() for m in cookies if m is not None]
    assert [(i, rest) for i, _, rest in found] == [
        (registration_id, f"HttpOnly; Path=/register/{registration_id}; SameSite=strict"),
        (registration_id, f"HttpOnly; Path=/api/registrations/{registration_id}; SameSite=strict"),
    ]
    [secret] = {value for _, value, _ in found}
    assert len(secret) >= 43  # 256 bits of urlsafe base64
    assert secret not in response.text  # the secret travels in the cookie only
    with app.database.unit_of_work() as uow:
        row = uow.session.get(Registration, registration_id)
        assert row is not None
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(row.data) and secret not in repr(row.evidence)


def test_the_wizard_start_sets_the_cookie_on_its_redirect(client: TestClient) -> None:
    response = client.post(
        "/register",
        data={"type": "person.general", "consent": "on"},
        headers=csrf(client),
        follow_redirects=False,
    )
    assert response.status_code == 303
    registration_id = response.headers["location"].removeprefix("/register/")
    paths = sorted(
        m.group(3)
        for c in response.headers.get_list("set-cookie")
        if (m := COOKIE.fullmatch(c)) and m.group(1) == registration_id
    )
    assert paths == [
        f"HttpOnly; Path=/api/registrations/{registration_id}; SameSite=strict",
        f"HttpOnly; Path=/register/{registration_id}; SameSite=strict",
    ]
    assert client.get(response.headers["location"]).status_code == 200


def test_the_cookie_is_secure_when_the_portal_is_https(settings: Settings, app: App) -> None:
    secure = replace(app, settings=replace(settings, public_origin="https://portal.example"))
    with TestClient(create_app(secure), base_url="https://portal.example") as browser:
        response = start(browser, "person.general")
        cookies = [c for c in response.headers.get_list("set-cookie") if COOKIE.fullmatch(c)]
        assert len(cookies) == 2
        assert all(c.endswith("; SameSite=strict; Secure") for c in cookies), cookies


def test_several_registrations_run_side_by_side_in_one_browser(
    client: TestClient, pki: TestPKI
) -> None:
    first = at_state(client, "basic_data", pki.issue_person("王小明", "6789"))
    second = at_state(client, "basic_data", pki.issue_person("李小華", "4321"))
    assert client.get(f"/api/registrations/{first}").json()["data"]["contact_name"] == "王小明"
    assert client.get(f"/api/registrations/{second}").json()["data"]["contact_name"] == "李小華"
    assert client.get(f"/register/{first}").status_code == 200
    back = client.post(f"/api/registrations/{second}/back", headers=csrf(client))
    assert back.json()["state"] == "card_check"
    assert client.get(f"/api/registrations/{first}").json()["state"] == "basic_data"


# -- strangers get what an unknown id gets ------------------------------------------------------


@pytest.mark.parametrize("state", ["card_check", "basic_data", "completed", "cancelled"])
@pytest.mark.parametrize("action", API_ACTIONS)
def test_the_api_answers_a_stranger_like_an_unknown_id(
    client: TestClient,
    stranger: TestClient,
    app: App,
    person_card: IssuedCard,
    state: str,
    action: str,
) -> None:
    registration_id = at_state(client, state, person_card)
    before = footprint(app, registration_id)
    unknown = api_request(stranger, action, UNKNOWN, person_card)
    assert (unknown.status_code, error(unknown)["code"]) == (404, "registration_not_found")

    refused = api_request(stranger, action, registration_id, person_card)

    assert (refused.status_code, refused.json()) == (404, unknown.json())
    assert footprint(app, registration_id) == before  # nothing read into it, nothing written


@pytest.mark.parametrize("state", ["card_check", "basic_data", "completed", "cancelled"])
@pytest.mark.parametrize("action", PAGE_ACTIONS)
def test_the_pages_answer_a_stranger_like_an_unknown_id(
    client: TestClient,
    stranger: TestClient,
    app: App,
    person_card: IssuedCard,
    state: str,
    action: str,
) -> None:
    registration_id = at_state(client, state, person_card)
    before = footprint(app, registration_id)
    unknown = page_request(stranger, action, UNKNOWN)
    assert unknown.status_code == 404

    refused = page_request(stranger, action, registration_id)

    assert refused.status_code == 404
    assert refused.text.replace(registration_id, UNKNOWN) == unknown.text
    assert "王小明" not in refused.text and "ming@example.com" not in refused.text
    assert footprint(app, registration_id) == before


def test_another_registrations_cookie_opens_nothing(
    client: TestClient, stranger: TestClient, app: App, pki: TestPKI
) -> None:
    victim = at_state(client, "basic_data", pki.issue_person("王小明", "6789"))
    own = start(stranger, "person.general")
    own_id = own.json()["id"]
    own_secret = stranger.cookies.get(f"swreg_reg_{own_id}", path=f"/api/registrations/{own_id}")
    assert own_secret
    before = footprint(app, victim)

    # the stranger holds a cookie of their own registration: it is not sent for the victim's
    assert api_request(stranger, "get", victim, pki.issue_person()).status_code == 404
    # nor does it open the victim's when sent under the victim's cookie name, nor does a guess
    for forged in (own_secret, secrets.token_urlsafe(32), ""):
        with TestClient(create_app(app), cookies={f"swreg_reg_{victim}": forged}) as forger:
            for response in (
                forger.get(f"/api/registrations/{victim}"),
                forger.get(f"/register/{victim}"),
                forger.post(f"/api/registrations/{victim}/cancel", headers=csrf(forger)),
                forger.post(f"/register/{victim}/back", headers=csrf(forger)),
            ):
                assert response.status_code == 404, (forged, response.url)
    assert footprint(app, victim) == before
    assert client.get(f"/api/registrations/{victim}").json()["state"] == "basic_data"


def test_a_stranger_cannot_use_up_the_holders_challenge(
    client: TestClient, stranger: TestClient, person_card: IssuedCard
) -> None:
    registration_id = at_state(client, "card_check", person_card)
    base = f"/api/registrations/{registration_id}"
    challenge = client.post(f"{base}/challenge", headers=csrf(client)).json()

    stolen = stranger.post(
        f"{base}/card", json=signed(person_card, challenge), headers=csrf(stranger)
    )

    assert (stolen.status_code, error(stolen)["code"]) == (404, "registration_not_found")
    checked = client.post(f"{base}/card", json=signed(person_card, challenge), headers=csrf(client))
    assert (checked.status_code, checked.json()["state"]) == (200, "basic_data")


def test_a_stranger_does_not_expire_an_idle_registration(
    client: TestClient, stranger: TestClient, app: App, clock: FixedClock, person_card: IssuedCard
) -> None:
    registration_id = at_state(client, "basic_data", person_card)
    clock.advance(timedelta(hours=2))  # past its idle deadline, not yet marked
    before = footprint(app, registration_id)

    refused = stranger.get(f"/api/registrations/{registration_id}")

    assert (refused.status_code, error(refused)["code"]) == (404, "registration_not_found")
    assert footprint(app, registration_id) == before
    assert client.get(f"/api/registrations/{registration_id}").json()["state"] == "expired"


def test_every_route_under_a_registration_id_asks_for_the_secret(
    client: TestClient, stranger: TestClient, app: App, person_card: IssuedCard
) -> None:
    """A route added later that forgets the secret fails here."""
    registration_id = at_state(client, "basic_data", person_card)
    routes = [
        (route.path, method)
        for route in api_routes(create_app(app).routes)
        if "{registration_id}" in route.path
        and not route.path.startswith(("/api/officer/", "/officer/"))  # officers: their own login
        for method in sorted(route.methods)
    ]
    assert len(routes) == 13  # 8 API routes and 5 pages (GET and POST of the step page)
    bodies: dict[str, dict[str, Any]] = {
        "/card": card_body(person_card),
        "/mobile-id": {"national_id": "A123456789"},  # well-formed: refused for the secret
        "/mobile-id/poll": {"pending_id": "x" * 43},
    }
    for path, method in routes:
        url = path.replace("{registration_id}", registration_id)
        if path.startswith("/api/"):
            suffix = next((s for s in bodies if url.endswith(s)), None)
            body: dict[str, Any] = {"json": bodies[suffix] if suffix else {}}
        else:
            body = {"data": {}}
        response = stranger.request(method, url, headers=csrf(stranger), **body)
        assert response.status_code == 404, (method, path, response.text[:200])
        if path.startswith("/api/"):
            assert error(response)["code"] == "registration_not_found", (method, path)


# -- ended registrations show only id, state, type and the masked account -------------------------


def test_an_ended_registration_shows_no_entered_data_even_to_its_holder(
    client: TestClient, app: App, clock: FixedClock, pki: TestPKI
) -> None:
    completed = at_state(client, "completed", pki.issue_person("王小明", "6789"))
    cancelled = at_state(client, "basic_data", pki.issue_person("李小華", "4321"))
    assert client.get(f"/api/registrations/{cancelled}").json()["identity"] == {
        "name": "李小華",
        "id_last4": "4321",
    }
    client.post(f"/api/registrations/{cancelled}/cancel", headers=csrf(client))
    expired = at_state(client, "basic_data", pki.issue_person("張小芳", "1357"))
    clock.advance(timedelta(hours=1))

    views = {
        i: client.get(f"/api/registrations/{i}").json() for i in (completed, cancelled, expired)
    }

    assert {i: (v["state"], v["account"]) for i, v in views.items()} == {
        completed: ("completed", "m**g@example.com"),
        cancelled: ("cancelled", None),
        expired: ("expired", None),
    }
    for view in views.values():
        assert set(view) == ENDED_KEYS
        assert (view["applicant_type"], view["data"], view["locked"], view["identity"]) == (
            "person.general",
            {},
            [],
            {},
        )
    page = client.get(f"/register/{completed}")
    assert page.status_code == 200 and "m**g@example.com" in page.text
    for personal in ("ming@example.com", "王小明", "0912-345-678", "A12", "1985-03-14", "6789"):
        assert personal not in page.text
        assert personal not in str(views[completed])
    # the operator's CLI and officers still see the whole registration (until it is purged)
    local = app.registrations.status(completed)
    assert (local.account, local.data["email"]) == ("ming@example.com", "ming@example.com")


def test_a_rejected_registration_shows_no_entered_data_to_its_holder(
    tmp_path: Path, settings: Settings, clock: FixedClock, pki: TestPKI
) -> None:
    workflow = tmp_path / "approval.toml"
    workflow.write_text(WITH_APPROVAL, encoding="utf-8")
    app = bootstrap(
        replace(settings, workflow_file=workflow),
        clock=clock,
        plugins=make_plugin_manager(plugins=[ApprovalPlugin()]),
    )
    try:
        pki.publish_to(app.trust, actor="test")
        with TestClient(create_app(app)) as browser:
            registration_id = start(browser, "enterprise.general").json()["id"]
            card_check(browser, registration_id, pki.issue_company("04595257"))
            url = f"/api/registrations/{registration_id}"
            answers = {**PERSON_ANSWERS, "ubn": "04595257", "company_name": "測試貿易股份有限公司"}
            while (view := browser.get(url).json())["state"] not in ("approval",):
                browser.post(f"{url}/step", json=answers, headers=csrf(browser))
            assert view["data"]["email"] == "ming@example.com"  # still open: the holder sees it
            app.registrations.reject(registration_id, officer="林關員", reason="資料不符")

            view = browser.get(url).json()

            assert (view["state"], view["account"], view["data"], view["identity"]) == (
                "rejected",
                "04595257",
                {},
                {},
            )
    finally:
        app.close()


# -- the service: the check lives there --------------------------------------------------------


def test_the_service_answers_a_missing_or_wrong_secret_like_an_unknown_id(
    app: App, person_card: IssuedCard
) -> None:
    view = app.registrations.start("person.general", consent=True)
    assert view.secret is not None and len(view.secret) >= 43
    assert view.secret not in repr(view)

    def refusal(registration_id: str, secret: str | None) -> tuple[str, str | None]:
        with pytest.raises(SwregError) as info:
            app.registrations.status(registration_id, secret=secret)
        return info.value.code, info.value.field

    assert refusal(UNKNOWN, view.secret) == ("registration_not_found", "registration_id")
    for wrong in (None, "", view.secret[:-1], view.secret + "x", secrets.token_urlsafe(32)):
        assert refusal(view.id, wrong) == refusal(UNKNOWN, wrong)
    for act in (
        lambda s: app.registrations.issue_challenge(view.id, secret=s),
        lambda s: app.registrations.back(view.id, secret=s),
        lambda s: app.registrations.cancel(view.id, secret=s),
        lambda s: app.registrations.submit(view.id, PERSON_ANSWERS, secret=s),
    ):
        with pytest.raises(SwregError) as info:
            act(None)
        assert info.value.code == "registration_not_found"
    assert app.registrations.status(view.id, secret=view.secret).state == "card_check"
    assert app.registrations.status(view.id).state == "card_check"  # the local CLI needs none
