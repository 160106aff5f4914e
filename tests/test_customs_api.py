"""The customs-certificate endpoints of the JSON API: upload, query, delete; CSRF and statuses."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from engine import App
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS, PIN
from .helpers import enrol
from .test_customs import (
    BROKER,
    OTHER_UBN,
    UBN,
    activate_and_login,
    audit,
    specialist_token,
    stored,
    trust_intermediates,
)

URL = "/api/customs-certificates"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def csrf(client: TestClient) -> dict[str, str]:
    response = client.get("/api/csrf")
    return {"X-CSRF-Token": response.json()["token"]}


def upload(
    client: TestClient, usage_type: str, answers: dict[str, str], data: bytes
) -> httpx.Response:
    """A multipart upload as the 通關憑證註冊 page posts it."""
    response: httpx.Response = client.post(
        URL,
        data={"usage_type": usage_type, **answers},
        files={"file": ("turnkey.cer", data, "application/pkix-cert")},
        headers=csrf(client),
    )
    return response


def signed_upload(
    client: TestClient,
    usage_type: str,
    answers: dict[str, str],
    card: IssuedCard,
    *,
    signer: IssuedCard | None = None,
    data: bytes | None = None,
) -> httpx.Response:
    """A ``.cer`` upload with its proof of possession (the key signed a customs challenge)."""
    issued = client.post(f"{URL}/challenge", headers=csrf(client)).json()
    signature = (signer or card).sign(base64.b64decode(issued["payload"]))
    proof = {"challenge_id": issued["challenge_id"], "signature": b64(signature)}
    return upload(client, usage_type, {**answers, **proof}, card.der() if data is None else data)


def error(response: httpx.Response) -> tuple[int, str, str | None]:
    body = response.json()
    assert set(body) == {"errors"}
    first = body["errors"][0]
    return response.status_code, first["code"], first["field"]


@pytest.fixture
def client(app: App, pki: TestPKI) -> Iterator[TestClient]:
    trust_intermediates(app, pki)
    with TestClient(create_app(app)) as test_client:
        yield test_client


# -- 通關憑證註冊 ------------------------------------------------------------------------------


def test_a_cer_upload_imports_the_certificate(client: TestClient, app: App, pki: TestPKI) -> None:
    response = signed_upload(client, "shipping", {"ubn": UBN}, pki.issue_customs(UBN))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {
        "ok": True,
        "id": 1,
        "query_key": UBN,
        "fingerprint": body["fingerprint"],
        "usage_type": "shipping",
        "kind": "non_ic",
        "certificate_kind": "customs",
        "message": "主憑證匯入成功!",
    }
    assert stored(app) == [("signing", UBN, "shipping", "non_ic", "TaiCA", UBN, "active")]
    assert audit(app, "customs_import")[0]["certificate_id"] == 1


def test_a_broker_uploads_a_pem(client: TestClient, app: App, pki: TestPKI) -> None:
    client.cookies.set("swreg_session", specialist_token(app, pki))
    card = pki.issue_customs(OTHER_UBN)
    response = signed_upload(client, "broker_specialist", BROKER, card, data=card.pem())
    assert response.status_code == 201, response.text
    assert response.json()["query_key"] == "A00001"


def ic_card_body(
    client: TestClient, card: IssuedCard, *, signer: IssuedCard | None = None, **override: Any
) -> dict[str, Any]:
    """An IC-card import as the page posts it: the card signed a customs challenge."""
    challenge = client.post(f"{URL}/challenge", headers=csrf(client))
    assert challenge.status_code == 200, challenge.text
    issued = challenge.json()
    payload = base64.b64decode(issued["payload"])
    body = {
        "usage_type": "airline",
        "kind": "ic_card",
        "certificate": b64(card.der()),
        "chain": [b64(der) for der in card.chain_der()],
        "challenge_id": issued["challenge_id"],
        "signature": b64((signer or card).sign(payload)),
        "answers": {"ubn": UBN},
    }
    body.update(override)
    return body


def test_json_imports_an_ic_card_that_signed_a_challenge(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    response = client.post(
        URL, json=ic_card_body(client, pki.issue_company(UBN)), headers=csrf(client)
    )
    assert response.status_code == 201, response.text
    assert (response.json()["kind"], response.json()["certificate_kind"]) == (
        "ic_card",
        "business",
    )
    assert stored(app) == [("signing", UBN, "airline", "ic_card", "MOEACA", UBN, "active")]


def test_the_customs_challenge_is_bound_to_the_origin_and_its_scope(client: TestClient) -> None:
    issued = client.post(f"{URL}/challenge", headers=csrf(client)).json()
    payload = base64.b64decode(issued["payload"])
    assert len(payload) == 96
    assert payload[:32] == hashlib.sha256(issued["origin"].encode()).digest()
    assert payload[32:64] == hashlib.sha256(b"customs_import").digest()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"challenge_id": None}, (422, "field_required", "challenge_id")),
        ({"signature": None}, (422, "field_required", "signature")),
        ({"signature": "!!"}, (422, "signature_invalid", "signature")),
        ({"challenge_id": "no-such-challenge"}, (422, "challenge_expired", None)),
    ],
)
def test_an_ic_card_import_without_a_valid_proof_stores_nothing(
    client: TestClient, app: App, pki: TestPKI, change: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    body = ic_card_body(client, pki.issue_company(UBN))
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    assert error(client.post(URL, json=body, headers=csrf(client))) == expected
    assert stored(app) == []
    assert audit(app, "customs_import") == []


def test_a_signature_from_another_card_is_refused(
    client: TestClient, app: App, pki: TestPKI
) -> None:
    card, other = pki.issue_company(UBN), pki.issue_company(UBN)
    body = ic_card_body(client, card, signer=other)
    assert error(client.post(URL, json=body, headers=csrf(client)))[:2] == (
        422,
        "signature_invalid",
    )
    assert stored(app) == []


def test_a_customs_challenge_is_single_use(client: TestClient, app: App, pki: TestPKI) -> None:
    body = ic_card_body(client, pki.issue_company(UBN))
    refused = dict(body, answers={"ubn": OTHER_UBN})  # the first try fails on the binding …
    assert error(client.post(URL, json=refused, headers=csrf(client)))[:2] == (
        422,
        "identity_mismatch",
    )
    replay = client.post(URL, json=body, headers=csrf(client))  # … and used the challenge
    assert error(replay)[:2] == (422, "challenge_used")
    assert stored(app) == []


def test_uploads_need_the_csrf_token(client: TestClient, app: App, pki: TestPKI) -> None:
    response = client.post(
        URL,
        data={"usage_type": "shipping", "ubn": UBN},
        files={"file": ("x.cer", pki.issue_customs(UBN).der())},
    )
    assert error(response) == (403, "csrf_failed", None)
    assert stored(app) == []


@pytest.mark.parametrize(
    ("usage_type", "answers", "material", "expected"),
    [
        ("shipping", {"ubn": UBN}, lambda p: b"garbage", (422, "not_a_certificate", None)),
        (
            "shipping",
            {"ubn": UBN},
            lambda p: p.pkcs12_bytes(p.issue_customs(UBN), PIN),
            (422, "private_key_refused", None),
        ),
        (
            "shipping",
            {"ubn": UBN},
            lambda p: p.issue_customs(OTHER_UBN).der(),
            (422, "identity_mismatch", "ubn"),
        ),
        (
            "broker_specialist",
            BROKER,
            lambda p: p.issue_company(UBN).der(),
            (422, "certificate_type_mismatch", None),
        ),
        (
            "nonsense",
            {"ubn": UBN},
            lambda p: p.issue_customs(UBN).der(),
            (422, "unknown_type", "usage_type"),
        ),
        # a file one byte over 64 KiB: the upload path takes it, the service refuses it
        (
            "shipping",
            {"ubn": UBN},
            lambda p: p.issue_customs(UBN).pem().ljust(64 * 1024 + 1),
            (422, "file_too_large", None),
        ),
        # the whole request over the upload limit: refused before any route
        (
            "shipping",
            {"ubn": UBN},
            lambda p: p.issue_customs(UBN).pem().ljust(256 * 1024 + 1),
            (413, "request_too_large", None),
        ),
    ],
)
def test_refused_uploads_store_nothing(
    client: TestClient,
    app: App,
    pki: TestPKI,
    usage_type: str,
    answers: dict[str, str],
    material: Any,
    expected: tuple[int, str, str | None],
) -> None:
    assert error(upload(client, usage_type, answers, material(pki))) == expected
    assert stored(app) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"usage_type": "shipping", "ubn": UBN}, (422, "field_required", "certificate")),
        (
            {"usage_type": "shipping", "ubn": UBN, "certificate": "!!"},
            (422, "not_a_certificate", "certificate"),
        ),
        (
            {"usage_type": "shipping", "ubn": UBN, "certificate": "AA==", "kind": "usb"},
            (422, "invalid_value", "kind"),
        ),
        ({"ubn": UBN, "certificate": "AA=="}, (422, "field_required", "usage_type")),
    ],
)
def test_malformed_json_imports(
    client: TestClient, body: dict[str, Any], expected: tuple[int, str, str | None]
) -> None:
    assert error(client.post(URL, json=body, headers=csrf(client))) == expected


def test_a_multipart_without_file(client: TestClient) -> None:
    response = client.post(
        URL, data={"usage_type": "shipping", "ubn": UBN}, files={"x": ("x", b"")},
        headers=csrf(client),
    )  # fmt: skip
    assert error(response) == (422, "field_required", "file")


def test_the_same_certificate_twice_is_a_conflict(client: TestClient, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN)
    assert signed_upload(client, "shipping", {"ubn": UBN}, card).status_code == 201
    assert error(signed_upload(client, "shipping", {"ubn": UBN}, card)) == (
        409,
        "already_registered",
        None,
    )


# -- 通關憑證查詢 ------------------------------------------------------------------------------


def test_query_by_key(client: TestClient, app: App, pki: TestPKI) -> None:
    client.cookies.set("swreg_session", specialist_token(app, pki))
    broker = pki.issue_customs(OTHER_UBN)
    assert signed_upload(client, "broker_specialist", BROKER, broker).status_code == 201
    response = client.get(URL, params={"key": "A00001"})
    assert response.status_code == 200
    [row] = response.json()["rows"]
    assert (row["form"], row["kind"], row["purpose"], row["usage_type"]) == (
        "非IC卡類憑證",
        "報關人員憑證",
        "簽章",
        "broker_specialist",
    )
    assert row["serial"] == format(broker.certificate.serial_number, "X")
    assert row["not_after"] == broker.certificate.not_valid_after_utc.isoformat()
    assert client.get(URL, params={"key": UBN}).json() == {"rows": []}
    assert error(client.get(URL, params={"key": "nonsense"})) == (422, "invalid_value", "key")
    assert error(client.get(URL)) == (422, "field_required", "key")


# -- 刪除 ----------------------------------------------------------------------------------------


def test_delete_needs_the_owner_logged_in(client: TestClient, app: App, pki: TestPKI) -> None:
    company, person = pki.issue_company(UBN), pki.issue_person("王小明", "6789")
    enrol(app, "enterprise.general", company, COMPANY_ANSWERS)
    enrol(app, "person.general", person, PERSON_ANSWERS)
    owner = activate_and_login(app, company, UBN)
    stranger = activate_and_login(app, person, "ming@example.com")
    uploaded = signed_upload(client, "shipping", {"ubn": UBN}, pki.issue_customs(UBN))
    certificate_id = uploaded.json()["id"]
    target = f"{URL}/{certificate_id}"

    assert error(client.delete(target, headers=csrf(client))) == (403, "not_authorized", None)
    client.cookies.set("swreg_session", stranger)
    assert error(client.delete(target, headers=csrf(client))) == (403, "not_authorized", None)
    client.cookies.set("swreg_session", owner)
    assert error(client.delete(target)) == (403, "csrf_failed", None)
    response = client.delete(target, headers=csrf(client))
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "id": certificate_id, "status": "deleted"}
    assert [row[-1] for row in stored(app)][-1] == "deleted"
    assert client.get(URL, params={"key": UBN}).json()["rows"][0]["purpose"] == "登入"
    assert error(client.delete(target, headers=csrf(client))) == (422, "invalid_value", "id")
    assert [d["account"] for d in audit(app, "customs_delete")] == [UBN]
