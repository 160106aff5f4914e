"""Owners are proven, never typed (DESIGN.md §5; issue 13, item 1): the attacks a review made on
通關憑證註冊 and 查詢, each now refused with its code and nothing stored.

- 報關專責人員: the national ID and broker key are never taken on the importer's word — only the
  specialist's own card login proves them;
- a certificate that names no UBN belongs to no company;
- squatting: a company's public ``.cer`` cannot be claimed by someone else first;
- a ``.cer`` proves possession of its private key (a signed single-use challenge; the page's
  ``openssl`` one-liner, run here by the real OpenSSL) or comes from the owner's card login;
- 通關憑證查詢 shows strangers no account name or personal subject value in clear.
"""

from __future__ import annotations

import base64
import html
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine import App, ImportKind
from engine.core.identifiers import mask_email
from engine.services.customs import CustomsCertificateService
from engine.services.hashing import IdentifierHasher
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET
from .helpers import certificates, enrol
from .test_customs import (
    BROKER,
    COMPANY,
    NATIONAL_ID,
    OTHER_UBN,
    UBN,
    activate_and_login,
    refused,
    service,  # noqa: F401 (a fixture)
    stored,
    trust_intermediates,
)
from .test_customs_api import b64, csrf, error, signed_upload, upload

URL = "/api/customs-certificates"
SESSION_COOKIE = "swreg_session"
ATTACKER_ID = "F131104093"


@pytest.fixture
def client(app: App, pki: TestPKI) -> Iterator[TestClient]:
    trust_intermediates(app, pki)
    with TestClient(create_app(app)) as test_client:
        yield test_client


def signing(app: App) -> list[tuple[Any, ...]]:
    """The stored signing certificates (``stored`` without the login ones)."""
    return [row for row in stored(app) if row[0] == "signing"]


def log_in(client: TestClient, token: str) -> None:
    client.cookies.set(SESSION_COOKIE, token)


def company_login(app: App, pki: TestPKI, ubn: str = UBN) -> tuple[IssuedCard, str]:
    """A company registered and logged in with its 工商憑證: (its card, the session token)."""
    card = pki.issue_company(ubn)
    enrol(app, "enterprise.general", card, {**COMPANY_ANSWERS, "ubn": ubn})
    return card, activate_and_login(app, card, ubn)


def person_login(app: App, pki: TestPKI, type_code: str, national_id: str) -> str:
    card = pki.issue_person("王小明", national_id[-4:])
    email = f"{national_id.lower()}@example.com"
    answers = {**PERSON_ANSWERS, "national_id": national_id, "email": email}
    enrol(app, type_code, card, answers)
    return activate_and_login(app, card, email)


# -- 報關專責人員: the person is proven by the person's card ------------------------------------


def test_an_anonymous_broker_import_is_refused_and_stores_nothing(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    # Reproduced at 3e9d6ab: stored as A00001, and Turnkey then verified as A00001.
    response = upload(client, "broker_specialist", BROKER, pki.issue_customs(OTHER_UBN).der())
    assert error(response) == (403, "not_authorized", None)
    assert signing(app) == []
    # A signature with the certificate's own key proves the key, not the person.
    card = pki.issue_customs(OTHER_UBN, "02")
    response = signed_upload(client, "broker_specialist", BROKER, card)
    assert error(response) == (403, "not_authorized", None)
    assert signing(app) == []


def test_a_specialist_logged_in_imports_under_the_own_id_only(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    log_in(client, person_login(app, pki, "person.customs_broker", ATTACKER_ID))
    typed_victim = upload(client, "broker_specialist", BROKER, pki.issue_customs(OTHER_UBN).der())
    assert error(typed_victim) == (422, "identity_mismatch", "national_id")
    assert signing(app) == []
    own = {**BROKER, "national_id": ATTACKER_ID, "specialist_code": "00002"}
    card = pki.issue_customs(OTHER_UBN, "02")
    unsigned = upload(client, "broker_specialist", own, card.der())  # the login is not enough:
    assert error(unsigned) == (422, "proof_required", "signature")  # the key must sign too
    response = signed_upload(client, "broker_specialist", own, card)
    assert response.status_code == 201, response.text
    assert signing(app) == [(
        "signing", "A00002", "broker_specialist", "non_ic", "TaiCA", None, "active",
    )]  # fmt: skip


def test_a_broker_key_stays_with_the_person_who_registered_it(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    # Reproduced after the first fix: a second specialist, logged in with the own card, typed
    # A00001 (another specialist's key) and Turnkey then verified the messages as A00001.
    log_in(client, person_login(app, pki, "person.customs_broker", NATIONAL_ID))
    owner = pki.issue_customs(OTHER_UBN, "01")
    assert signed_upload(client, "broker_specialist", BROKER, owner).status_code == 201
    client.cookies.clear()
    log_in(client, person_login(app, pki, "person.customs_broker", ATTACKER_ID))
    impostor = pki.issue_customs(OTHER_UBN, "02")
    as_a00001 = {**BROKER, "national_id": ATTACKER_ID}
    response = signed_upload(client, "broker_specialist", as_a00001, impostor)
    assert error(response) == (422, "identity_mismatch", "specialist_code")
    assert [row[1] for row in signing(app)] == ["A00001"]
    assert [row.national_id_hash for row in certificates(app) if row.purpose == "signing"] == [
        IdentifierHasher(SECRET).hash("national_id", NATIONAL_ID)
    ]


def test_a_specialist_cannot_squat_a_companys_public_cer(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    # Reproduced after the first fix: a logged-in specialist imported a company's public .cer
    # as the own; the company could then neither import nor delete it.
    public = pki.issue_customs(UBN, "02")
    log_in(client, person_login(app, pki, "person.customs_broker", ATTACKER_ID))
    as_broker = {**BROKER, "national_id": ATTACKER_ID, "specialist_code": "99999"}
    assert error(upload(client, "broker_specialist", as_broker, public.der())) == (
        422, "proof_required", "signature",
    )  # fmt: skip
    assert signing(app) == []


def test_a_logged_in_person_of_another_type_is_not_a_specialist(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    log_in(client, person_login(app, pki, "person.general", NATIONAL_ID))
    response = upload(client, "broker_specialist", BROKER, pki.issue_customs(OTHER_UBN).der())
    assert error(response) == (403, "not_authorized", None)
    assert signing(app) == []


# -- companies: the certificate names the owner --------------------------------------------------


def test_a_certificate_naming_no_ubn_is_refused_under_any_ubn(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    # Reproduced: a TaiCA certificate whose CN has no UBN prefix verified as any company.
    card = pki.issue_customs("TURNKEY")
    assert error(signed_upload(client, "shipping", COMPANY, card)) == (
        422, "identity_mismatch", "ubn",
    )  # fmt: skip
    _, token = company_login(app, pki)  # even the logged-in owner of the UBN
    log_in(client, token)
    assert error(upload(client, "shipping", COMPANY, card.der())) == (
        422, "identity_mismatch", "ubn",
    )  # fmt: skip
    assert signing(app) == []


def test_squatting_a_companys_public_cer_fails_and_the_owner_imports_it(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    # Reproduced: imported anonymously under the attacker's ID, the owner could then neither
    # delete it (403) nor import it (409).
    public = pki.issue_customs(UBN, "06")
    as_broker = {**BROKER, "national_id": ATTACKER_ID}
    assert (
        error(upload(client, "broker_specialist", as_broker, public.der()))[1] == "not_authorized"
    )
    assert error(upload(client, "shipping", COMPANY, public.der())) == (
        422, "proof_required", "signature",
    )  # fmt: skip
    assert signing(app) == []
    _, token = company_login(app, pki)
    log_in(client, token)
    response = upload(client, "shipping", COMPANY, public.der())  # the owner's card login
    assert response.status_code == 201, response.text
    deleted = client.delete(f"{URL}/{response.json()['id']}", headers=csrf(client))
    assert deleted.status_code == 200, deleted.text


def test_another_companys_login_does_not_prove_this_company(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    _, token = company_login(app, pki, OTHER_UBN)
    log_in(client, token)
    response = upload(client, "shipping", COMPANY, pki.issue_customs(UBN).der())
    assert error(response) == (422, "proof_required", "signature")
    assert signing(app) == []


# -- possession of the private key -------------------------------------------------------------


def test_a_cer_with_a_signed_challenge_is_imported(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    card = pki.issue_customs(UBN)
    response = signed_upload(client, "general_forwarder", COMPANY, card)
    assert response.status_code == 201, response.text
    assert stored(app) == [("signing", UBN, "general_forwarder", "non_ic", "TaiCA", UBN, "active")]


def test_a_json_cer_import_proves_possession_too(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    card = pki.issue_company(UBN, rank=None)
    body: dict[str, Any] = {"usage_type": "airline", "certificate": b64(card.der()), "ubn": UBN}
    assert error(client.post(URL, json=body, headers=csrf(client))) == (
        422, "proof_required", "signature",
    )  # fmt: skip
    issued = client.post(f"{URL}/challenge", headers=csrf(client)).json()
    body["challenge_id"] = issued["challenge_id"]
    body["signature"] = b64(card.sign(base64.b64decode(issued["payload"])))
    response = client.post(URL, json=body, headers=csrf(client))
    assert response.status_code == 201, response.text
    assert response.json()["certificate_kind"] == "business"


def test_a_signature_by_another_key_or_a_replayed_challenge_is_refused(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    card = pki.issue_customs(UBN)
    other = pki.issue_customs(UBN, "02")
    wrong_key = signed_upload(client, "shipping", COMPANY, card, signer=other)
    assert error(wrong_key) == (422, "signature_invalid", None)
    issued = client.post(f"{URL}/challenge", headers=csrf(client)).json()
    proof = {
        "challenge_id": issued["challenge_id"],
        "signature": b64(card.sign(base64.b64decode(issued["payload"]))),
    }
    assert upload(client, "shipping", {**COMPANY, **proof}, card.der()).status_code == 201
    replay = upload(client, "warehouse", {**COMPANY, **proof}, other.der())
    assert error(replay)[1] in {"challenge_used", "signature_invalid"}
    replay_same = upload(client, "warehouse", {**COMPANY, **proof}, card.der())
    assert error(replay_same) == (422, "challenge_used", None)
    assert len(stored(app)) == 1


def test_a_half_proof_names_the_missing_field(client: TestClient, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN)
    response = upload(client, "shipping", {**COMPANY, "signature": "AAAA"}, card.der())
    assert error(response) == (422, "field_required", "challenge_id")


def test_a_form_refusal_leaves_the_challenge_usable(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    card = pki.issue_customs(UBN)
    issued = client.post(f"{URL}/challenge", headers=csrf(client)).json()
    proof = {
        "challenge_id": issued["challenge_id"],
        "signature": b64(card.sign(base64.b64decode(issued["payload"]))),
    }
    typo = upload(client, "shipping", {"ubn": "04595258", **proof}, card.der())
    assert error(typo) == (422, "invalid_ubn", "ubn")
    assert upload(client, "shipping", {**COMPANY, **proof}, card.der()).status_code == 201


def test_an_ic_card_import_without_its_signature_is_refused(
    app: App,
    pki: TestPKI,
    service: CustomsCertificateService,  # noqa: F811
) -> None:
    card = pki.issue_company(UBN)
    call = lambda: service.import_certificate(  # noqa: E731
        "shipping", COMPANY, certificate=card.der(), kind=ImportKind.IC_CARD,
        session=app.logins.session(company_login_token(app, card)),
    )  # fmt: skip
    assert refused(call) == ("proof_required", "signature")  # a login does not replace the card
    assert stored(app)[-1][0] == "login"


def company_login_token(app: App, card: IssuedCard) -> str:
    enrol(app, "enterprise.general", card, COMPANY_ANSWERS)
    return activate_and_login(app, card, UBN)


@pytest.mark.parametrize("key_type", ["rsa", "ec"])
def test_the_pages_openssl_command_signs_a_challenge_the_portal_accepts(
    client: TestClient, app: App, pki: TestPKI, tmp_path: Path, key_type: Any
) -> None:
    """The page shows a challenge and an OpenSSL one-liner; the real OpenSSL runs it."""
    card = pki.issue_customs(UBN, key=key_type)
    (tmp_path / "private-key.pem").write_bytes(card.key_pem())
    token = csrf(client)["X-CSRF-Token"]
    form = {"csrf": token, "usage_type": "shipping", "ubn": UBN, "certificate_kind": "customs"}
    page = client.post("/customs/import", data={**form, "challenge": "1"})
    assert page.status_code == 200, page.text
    command = html.unescape(_between(page.text, 'id="challenge-command" class="code">', "</pre>"))
    challenge_id = _hidden(page.text, "challenge_id")
    assert command.startswith("echo ") and "openssl dgst -sha256 -sign private-key.pem" in command
    signature = subprocess.run(
        command, shell=True, cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout.strip()
    files = {"file": ("turnkey.cer", card.der(), "application/pkix-cert")}
    proof = {"challenge_id": challenge_id, "signature": signature}
    done = client.post("/customs/import", data={**form, **proof}, files=files)
    assert done.status_code == 200, done.text
    assert "主憑證匯入成功!" in done.text
    assert stored(app) == [("signing", UBN, "shipping", "non_ic", "TaiCA", UBN, "active")]


def test_the_page_asks_for_the_proof_and_keeps_the_challenge_after_a_refusal(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    card = pki.issue_customs(UBN)
    token = csrf(client)["X-CSRF-Token"]
    form = {"csrf": token, "usage_type": "shipping", "ubn": UBN, "certificate_kind": "customs"}
    files = {"file": ("turnkey.cer", card.der(), "application/pkix-cert")}
    unproven = client.post("/customs/import", data=form, files=files)
    assert unproven.status_code == 422
    assert 'id="error-signature"' in unproven.text
    page = client.post("/customs/import", data={**form, "challenge": "1"})
    challenge_id = _hidden(page.text, "challenge_id")
    payload = _hidden(page.text, "challenge_payload")
    kept = {"challenge_id": challenge_id, "challenge_payload": payload, "signature": "AAAA"}
    refused_page = client.post("/customs/import", data={**form, **kept}, files=files)
    assert refused_page.status_code == 422
    assert _hidden(refused_page.text, "challenge_id") == challenge_id  # shown again
    assert signing(app) == []


# -- 通關憑證查詢: nothing personal for strangers -----------------------------------------------


def test_a_query_by_national_id_masks_the_account_for_strangers(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    # Reproduced: the person's account name (the e-mail address) came back in clear.
    card = pki.issue_person("王小明", "6789")
    enrol(app, "person.general", card, PERSON_ANSWERS)
    token = activate_and_login(app, card, "ming@example.com")
    masked = mask_email("ming@example.com")
    assert masked == "m**g@example.com"
    anonymous = client.get(URL, params={"key": NATIONAL_ID}).json()["rows"]
    assert [row["account"] for row in anonymous] == [masked]
    assert "ming@example.com" not in str(anonymous)
    assert "王小明" not in str(anonymous) and "王*明" in anonymous[0]["subject"]
    stranger = TestClient(client.app)
    log_in(stranger, person_login(app, pki, "person.general", ATTACKER_ID))
    assert stranger.get(URL, params={"key": NATIONAL_ID}).json()["rows"][0]["account"] == masked
    log_in(client, token)
    own = client.get(URL, params={"key": NATIONAL_ID}).json()["rows"]
    assert own[0]["account"] == "ming@example.com"
    assert "CN=王小明" in own[0]["subject"] and own[0]["subject"] != anonymous[0]["subject"]
    page = client.get("/customs/query", params={"key": NATIONAL_ID})
    assert "ming@example.com" in page.text
    client.cookies.clear()
    page = client.get("/customs/query", params={"key": NATIONAL_ID})
    assert "ming@example.com" not in page.text and masked in page.text


def test_a_query_by_ubn_masks_the_company_account_for_strangers(
    service: CustomsCertificateService,  # noqa: F811
    app: App,
    pki: TestPKI,
) -> None:
    _, token = company_login(app, pki)
    [row] = service.query(UBN)
    assert (row.account, "0******7" in row.info) == ("0******7", True)
    [own] = service.query(UBN, session=app.logins.session(token))
    assert own.account == UBN


def _hidden(text: str, name: str) -> str:
    found = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', text)
    assert found is not None, name
    return html.unescape(found.group(1))


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]
