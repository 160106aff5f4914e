"""Secrets handling: password hashing, keyed identifier hashes and ids (DESIGN.md §6).

Pure functions and small objects, no database. Passwords use argon2id with the OWASP parameters
by default (m = 19 MiB, t = 2, p = 1). Personal identifiers (national IDs) are stored as
HMAC-SHA256 under a server key, so a leaked table cannot be brute-forced without the key.

The server key is a keyring (``SWREG_SECRET_KEY``, the key file): keys ``k1 … kn``, oldest
first, one added by each ``swreg keys rotate``. A value's keyed hash is a chain, innermost under
the oldest key::

    h1 = hex(HMAC-SHA256(k1, utf8(kind + ":" + value)))
    hi = hex(HMAC-SHA256(ki, ascii(h(i-1))))        for i = 2 … n
    hash(kind, value) = hn                          (64 lower-case hex characters)

So one key gives exactly the hash of before keyrings, and a rotation rewrites a stored hash
``h`` into ``hex(HMAC(k_new, h))`` without the clear value (:func:`rewrap`). Every layer is
needed: a table stolen after a rotation cannot be brute-forced with the old keys alone (a leaked
old key is why one rotates), nor with the new one alone. An inner input is 64 hex digits, never
``kind:value`` (which holds a colon), so the layers cannot be confused with each other.
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
    """Keyed hashes of personal identifiers for lookups under the keyring (module docstring):
    with one key, ``HMAC-SHA256(key, kind + ":" + value)``.

    ``IdentifierHasher(key)`` or ``IdentifierHasher(k1, …, kn)``, oldest key first. The caller
    normalises ``value`` first (for example upper-cases a national ID), so one person always gets
    one hash. ``kind`` separates name spaces (``"national_id"``, ...).
    """

    __slots__ = ("_keys",)

    def __init__(self, *keys: bytes) -> None:
        if not keys:
            raise ValueError("the identifier keyring needs at least one key")
        for key in keys:
            if len(key) < MIN_IDENTIFIER_KEY_BYTES:
                raise ValueError(
                    f"the identifier key needs at least {MIN_IDENTIFIER_KEY_BYTES} bytes"
                )
        self._keys = tuple(bytes(key) for key in keys)

    def __repr__(self) -> str:
        return f"IdentifierHasher(keys={len(self._keys)}, newest={self.fingerprint})"

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The keyring, oldest first (secret: never print it)."""
        return self._keys

    @property
    def fingerprint(self) -> str:
        """The newest key's :func:`key_fingerprint` (not secret)."""
        return key_fingerprint(self._keys[-1])

    def hash(self, kind: str, value: str) -> str:
        """The hex keyed hash of ``kind:value`` under the keyring (64 characters)."""
        digest = hmac.new(self._keys[0], f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
        for key in self._keys[1:]:
            digest = rewrap(key, digest)
        return digest

    def extended(self, key: bytes) -> IdentifierHasher:
        """The keyring with ``key`` added as the newest (what a rotation installs)."""
        return IdentifierHasher(*self._keys, key)


def rewrap(key: bytes, digest: str) -> str:
    """The keyed hash ``digest`` (64 hex characters) wrapped under ``key``, the next layer of
    the chain: ``hex(HMAC-SHA256(key, ascii(digest)))``."""
    if len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise ValueError("a keyed hash is 64 lower-case hex characters")
    return hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """A key's short public name: the first 8 hex characters of its SHA-256 (shown by ``swreg
    keys``, kept in the audit row of a rotation; it reveals nothing usable about the key)."""
    return hashlib.sha256(key).hexdigest()[:8]


def new_id() -> str:
    """A fresh random identifier (uuid4, 36 characters)."""
    return str(uuid.uuid4())
