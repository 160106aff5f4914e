"""Fixed-window rate limits kept in the database, so every worker counts the same hits.

``RateLimiter.hit("start:<client ip>", limit=10, window=timedelta(minutes=1))`` counts one hit
in the current window (windows are aligned to the Unix epoch) with one atomic upsert, and
refuses with ``rate_limited`` (``retry_after`` = whole seconds until the window ends) once the
count exceeds ``limit``. A refused hit still counts.

Keys are chosen by the caller and stored as given, in plain text: **hash personal data out of
them first** (an e-mail address or a national ID must not become a key; an IP address is
personal data under some laws too: use :func:`hashed_key` when in doubt).

Old windows are purged opportunistically: every ``purge_every`` hits, rows whose window started
more than two ``max_window`` ago are deleted.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from threading import Lock

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.store import Database

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_KEY_LENGTH = 200


def window_start(at: datetime, window: timedelta) -> datetime:
    """The start of the fixed window of length ``window`` holding ``at`` (epoch-aligned)."""
    return EPOCH + ((at - EPOCH) // window) * window


def retry_after(at: datetime, window: timedelta) -> int:
    """Whole seconds from ``at`` until its window ends (at least 1)."""
    remaining = window_start(at, window) + window - at
    return max(1, math.ceil(remaining.total_seconds()))


def hashed_key(prefix: str, value: str) -> str:
    """``prefix:`` + the SHA-256 hex of ``value``: a key that does not show the value."""
    return f"{prefix}:{hashlib.sha256(value.encode('utf-8')).hexdigest()}"


class RateLimiter:
    """Counts hits per key in fixed windows stored in ``rate_limits``."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        max_window: timedelta = timedelta(days=1),
        purge_every: int = 1000,
    ) -> None:
        if max_window <= timedelta(0) or purge_every < 1:
            raise ValueError("max_window must be positive and purge_every at least 1")
        self._database = database
        self._clock = clock
        self._max_window = max_window
        self._purge_every = purge_every
        self._hits = 0
        self._lock = Lock()

    def hit(self, key: str, *, limit: int, window: timedelta) -> None:
        """Count one hit of ``key``; ``rate_limited`` (with ``retry_after``) over ``limit``.

        ``window`` may not exceed ``max_window`` (the purge would cut it short).
        """
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"a rate-limit key has 1 to {MAX_KEY_LENGTH} characters")
        if limit < 1 or not timedelta(0) < window <= self._max_window:
            raise ValueError("limit must be at least 1 and 0 < window <= max_window")
        now = self._clock.now()
        start = window_start(now, window)
        with self._database.unit_of_work() as uow:
            count = uow.rate_limits.hit(key, start)
            if self._purge_due():
                uow.rate_limits.purge(now - 2 * self._max_window)
            uow.commit()
        if count > limit:
            raise RefusedError(ErrorCode.RATE_LIMITED, retry_after=retry_after(now, window))

    def _purge_due(self) -> bool:
        with self._lock:
            self._hits += 1
            return self._hits % self._purge_every == 0
