"""Secrets handling: argon2id passwords, keyed identifier hashes, nonces and ids; CSRF tokens
the server issued (an HMAC under its key), through the portal too."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from engine import App
from engine.services.hashing import IdentifierHasher, PasswordHasher, new_id
from engine.store import Registration
from engine.web import create_app
from engine.web._security import (
    CSRF_COOKIE,
    CSRF_HOST_COOKIE,
    issued_csrf_token,
    new_csrf_token,
)

from .conftest import SECRET
from .helpers import count

# Tiny argon2 parameters keep the tests fast; production uses the OWASP defaults.
FAST = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}
KEY = b"k" * 32


def test_password_round_trip() -> None:
    hasher = PasswordHasher(**FAST)
    digest = hasher.hash("Secret123")
    assert digest.startswith("$argon2id$")
    assert "m=8,t=1,p=1" in digest
    assert hasher.verify(digest, "Secret123")
    assert not hasher.verify(digest, "secret123")
    assert hasher.hash("Secret123") != digest  # salted


def test_password_verify_tolerates_garbage() -> None:
    hasher = PasswordHasher(**FAST)
    assert not hasher.verify("not a hash", "Secret123")


def test_password_defaults_are_owasp() -> None:
    hasher = PasswordHasher()
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (2, 19456, 1)


def test_identifier_hash_is_keyed_hmac() -> None:
    hasher = IdentifierHasher(KEY)
    digest = hasher.hash("national_id", "A123456789")
    expected = hmac.new(KEY, b"national_id:A123456789", hashlib.sha256).hexdigest()
    assert digest == expected
    assert len(digest) == 64
    assert hasher.hash("national_id", "A123456789") == digest  # deterministic
    assert IdentifierHasher(b"x" * 32).hash("national_id", "A123456789") != digest
    assert hasher.hash("ubn", "A123456789") != digest  # kinds are separate name spaces
    assert hashlib.sha256(b"national_id:A123456789").hexdigest() != digest
    assert "kkkk" not in repr(hasher)


@pytest.mark.parametrize("length", [0, 16, 31])
def test_identifier_key_must_be_long_enough(length: int) -> None:
    with pytest.raises(ValueError):
        IdentifierHasher(b"k" * length)


def test_new_id_is_a_fresh_uuid4() -> None:
    ident = new_id()
    assert len(ident) == 36 and uuid.UUID(ident).version == 4
    assert new_id() != ident


# -- CSRF tokens: issued by the server (DESIGN.md §11) ---------------------------------------


def test_a_csrf_token_is_a_nonce_and_its_hmac_under_the_server_key() -> None:
    keys = IdentifierHasher(KEY)
    token = new_csrf_token(keys)
    nonce, mac = token.split(".")
    assert mac == hmac.new(KEY, f"csrf:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]
    assert issued_csrf_token(keys, token)
    assert new_csrf_token(keys) != token  # a fresh nonce each time


@pytest.mark.parametrize(
    "token",
    [
        "F" * 32 + "." + "0" * 32,  # the shape, chosen by the attacker
        "T" * 43,  # what the old double-submit cookie held
        "",
        "x" * 65,
    ],
)
def test_a_csrf_value_the_server_did_not_issue_is_refused(token: str) -> None:
    assert not issued_csrf_token(IdentifierHasher(KEY), token)


def test_a_csrf_token_is_bound_to_its_key_and_nonce() -> None:
    keys = IdentifierHasher(KEY)
    token = new_csrf_token(keys)
    nonce, mac = token.split(".")
    assert not issued_csrf_token(IdentifierHasher(b"x" * 32), token)  # another server's key
    other = "A" if nonce[0] != "A" else "B"
    assert not issued_csrf_token(keys, other + nonce[1:] + "." + mac)  # another nonce
    flipped = "0" if mac[-1] != "0" else "1"
    assert not issued_csrf_token(keys, nonce + "." + mac[:-1] + flipped)
    assert not issued_csrf_token(keys, token.upper())
    assert not issued_csrf_token(keys, token + "\n")


START = {"type": "person.general", "consent": True}


def started(app: App) -> int:
    return count(app, Registration)


@pytest.mark.parametrize(
    "value",
    ["F" * 32 + "." + "0" * 32, "T" * 43, new_csrf_token(IdentifierHasher(b"y" * 32))],
    ids=["zero_mac", "no_mac", "another_servers_token"],  # stable ids: pytest-xdist compares them
)
def test_an_attacker_value_in_both_cookie_and_header_is_refused(app: App, value: str) -> None:
    with TestClient(create_app(app)) as stranger:
        stranger.cookies.set(CSRF_COOKIE, value)
        refused = stranger.post("/api/registrations", json=START, headers={"X-CSRF-Token": value})
        page = stranger.post("/register", data={"csrf": value, **START})
    assert (refused.status_code, refused.json()["errors"][0]["code"]) == (403, "csrf_failed")
    assert page.status_code == 403
    assert started(app) == 0


def test_a_server_issued_token_passes(app: App) -> None:
    with TestClient(create_app(app)) as client:
        token = client.get("/api/csrf").json()["token"]
        assert issued_csrf_token(IdentifierHasher(SECRET), token)
        assert client.cookies[CSRF_COOKIE] == token
        made = client.post("/api/registrations", json=START, headers={"X-CSRF-Token": token})
    assert made.status_code == 201
    assert started(app) == 1


def test_an_invalid_cookie_is_replaced_by_an_issued_token(app: App) -> None:
    with TestClient(create_app(app)) as client:
        client.cookies.set(CSRF_COOKIE, "F" * 32 + "." + "0" * 32)
        answer = client.get("/api/csrf")
    token = answer.json()["token"]
    assert issued_csrf_token(IdentifierHasher(SECRET), token)
    assert f"{CSRF_COOKIE}={token}; Path=/; SameSite=Strict; HttpOnly" in answer.headers.get_list(
        "set-cookie"
    )


def test_over_https_the_token_lives_in_a_host_prefixed_cookie(app: App) -> None:
    secure = replace(app, settings=replace(app.settings, public_origin="https://portal.example"))
    with TestClient(create_app(secure), base_url="https://portal.example") as client:
        answer = client.get("/api/csrf")
        token = answer.json()["token"]
        [cookie] = answer.headers.get_list("set-cookie")
        assert cookie == f"{CSRF_HOST_COOKIE}={token}; Path=/; SameSite=Strict; HttpOnly; Secure"
        assert "domain" not in cookie.lower()
        made = client.post("/api/registrations", json=START, headers={"X-CSRF-Token": token})
        assert made.status_code == 201

    with TestClient(create_app(secure), base_url="https://portal.example") as tosser:
        # An issued token planted under the plain name (cookie tossing from a sibling host or
        # over http) is not read over https: only the __Host- cookie counts.
        tosser.cookies.set(CSRF_COOKIE, token)
        refused = tosser.post("/api/registrations", json=START, headers={"X-CSRF-Token": token})
        assert (refused.status_code, refused.json()["errors"][0]["code"]) == (403, "csrf_failed")
    assert started(app) == 1
