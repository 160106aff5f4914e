"""Secrets handling: argon2id passwords, keyed identifier hashes, nonces and ids."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest

from engine.services.hashing import IdentifierHasher, PasswordHasher, new_id

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
