"""Single-use challenges outside a registration: card login (憑證登入) and 憑證更換作業.

A scoped challenge is stored in ``login_challenges``; the card signs
``challenge_payload(origin, scope, nonce)``, so a challenge issued for one scope never verifies
in another. It is consumed in its own transaction before anything is checked: single use,
success or not.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from engine._clock import Clock
from engine._errors import CertificateError, ChallengeError, ErrorCode, RefusedError
from engine.pki.card_response import Challenge
from engine.services.hashing import new_id
from engine.store import Database, LoginChallenge

MAX_ORIGIN_LENGTH = 255


class ScopedChallenges:
    def __init__(self, database: Database, clock: Clock, *, scope: str, ttl: timedelta) -> None:
        self._database = database
        self._clock = clock
        self.scope = scope
        self._ttl = ttl

    def issue(self, *, origin: str) -> Challenge:
        """A fresh challenge (256 random bits) bound to ``origin``."""
        if not origin or len(origin) > MAX_ORIGIN_LENGTH:
            raise RefusedError(ErrorCode.INVALID_VALUE, field="origin")
        now = self._clock.now()
        row = LoginChallenge(
            id=new_id(),
            nonce=secrets.token_hex(32),
            origin=origin,
            created_at=now,
            expires_at=now + self._ttl,
        )
        with self._database.unit_of_work() as uow:
            uow.login_challenges.add(row)
            uow.commit()
        return self._challenge(row)

    def consume(self, challenge_id: str, *, origin: str) -> Challenge:
        """Mark the challenge used (its own transaction); refuse one signed for another origin."""
        with self._database.unit_of_work() as uow:
            row = uow.login_challenges.get(challenge_id)
            if row is None:
                raise ChallengeError(ErrorCode.CHALLENGE_EXPIRED, detail="unknown challenge")
            if row.used_at is not None:
                raise ChallengeError(ErrorCode.CHALLENGE_USED)
            now = self._clock.now()
            if now > row.expires_at:
                raise ChallengeError(ErrorCode.CHALLENGE_EXPIRED)
            if not uow.login_challenges.consume(challenge_id, now):
                raise ChallengeError(ErrorCode.CHALLENGE_USED)
            uow.commit()
        if row.origin != origin:
            raise CertificateError(ErrorCode.SIGNATURE_INVALID, detail="signed for another origin")
        return self._challenge(row)

    def _challenge(self, row: LoginChallenge) -> Challenge:
        return Challenge(
            id=row.id,
            registration_id=self.scope,
            nonce=row.nonce,
            origin=row.origin,
            expires_at=row.expires_at,
        )
