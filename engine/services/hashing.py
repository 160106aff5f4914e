"""Secrets handling: password hashing, keyed identifier hashes and ids (DESIGN.md §6).

Pure functions and small objects, no database. Passwords use argon2id with the OWASP parameters
by default (m = 19 MiB, t = 2, p = 1). Personal identifiers (national IDs) are stored as
HMAC-SHA256 under a server key, so a leaked table cannot be brute-forced without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from argon2 import PasswordHasher as _Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_IDENTIFIER_KEY_BYTES = 32


class PasswordHasher:
    """argon2id password hashing; the hash string records its own parameters.

    Hashing costs tens of milliseconds and memory on purpose: call it off the event loop.
    """

    def __init__(self, time_cost: int = 2, memory_cost: int = 19456, parallelism: int = 1) -> None:
        self.time_cost = time_cost
        self.memory_cost = memory_cost
        self.parallelism = parallelism
        self._hasher = _Argon2Hasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )

    def __repr__(self) -> str:
        return (
            f"PasswordHasher(time_cost={self.time_cost}, memory_cost={self.memory_cost}, "
            f"parallelism={self.parallelism})"
        )

    def hash(self, password: str) -> str:
        """A new salted ``$argon2id$...`` hash of ``password``."""
        return self._hasher.hash(password)

    def verify(self, hash: str, password: str) -> bool:
        """Whether ``password`` matches ``hash``; False for a wrong password or a malformed hash."""
        try:
            return self._hasher.verify(hash, password)
        except (VerificationError, InvalidHashError):
            return False


class IdentifierHasher:
    """Keyed hashes of personal identifiers for lookups: ``HMAC-SHA256(key, kind + ":" + value)``.

    The caller normalises ``value`` first (for example upper-cases a national ID), so one person
    always gets one hash. ``kind`` separates name spaces (``"national_id"``, ...).
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_IDENTIFIER_KEY_BYTES:
            raise ValueError(f"the identifier key needs at least {MIN_IDENTIFIER_KEY_BYTES} bytes")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "IdentifierHasher(key=<hidden>)"

    def hash(self, kind: str, value: str) -> str:
        """The hex HMAC-SHA256 of ``kind:value`` under the key (64 characters)."""
        message = f"{kind}:{value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def new_id() -> str:
    """A fresh random identifier (uuid4, 36 characters)."""
    return str(uuid.uuid4())
