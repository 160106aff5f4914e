"""Fixed-window rate limits kept in the database, so every worker counts the same hits.

``RateLimiter.hit("start:<client ip>", limit=10, window=timedelta(minutes=1))`` counts one hit
in the current window (windows are aligned to the Unix epoch) with one atomic upsert, and
refuses with ``rate_limited`` (``retry_after`` = whole seconds until the window ends) once the
count exceeds ``limit``. A refused hit still counts.

Keys are chosen by the caller and stored as given, in plain text: **hash personal data out of
them first** (an e-mail address or a national ID must not become a key; an IP address is
personal data under some laws too: use :func:`hashed_key` when in doubt).

A request counts its hit in its own work's transaction (:meth:`RateLimiter.counting`): the
count is looked at before the work (a key already at its limit is refused, and that hit counted,
without doing the work), the hit is added by the work's first commit (refused there, and the
work rolled back, when concurrent hits took the key past its limit meanwhile), and counted on its
own only when the work committed nothing: one write transaction per request, not two.

Old windows are purged opportunistically: every ``purge_every`` hits, rows whose window started
more than two ``max_window`` ago are deleted.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from threading import Lock

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.store import Database, UnitOfWork, rate_limit_count

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
        self._check(key, limit, window)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            count = self._add(uow, key, window, now)
            uow.commit()
        if count > limit:
            raise RefusedError(ErrorCode.RATE_LIMITED, retry_after=retry_after(now, window))

    @contextmanager
    def counting(
        self,
        key: str,
        *,
        limit: int,
        window: timedelta,
        refused: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """One hit of ``key`` for the work of the block, counted by the block's first commit
        (see the module docstring); ``rate_limited`` before the block when ``key`` is at its
        limit already, or after it when its commit was refused. ``refused()`` is called when
        this hit is refused (not for a ``rate_limited`` of the work's own)."""
        self._check(key, limit, window)
        now = self._clock.now()
        if rate_limit_count(self._database, key, window_start(now, window)) >= limit:
            self._hit_alone(key, limit, window, refused)  # refused, unless the window turned
            yield
            return

        def count(uow: UnitOfWork) -> None:
            if self._add(uow, key, window, now) > limit:  # concurrent hits took it past
                raise RefusedError(ErrorCode.RATE_LIMITED, retry_after=retry_after(now, window))

        try:
            with self._database.riding_the_next_commit(count) as rider:
                yield
        finally:
            if not rider.carried:  # nothing committed, or the commit was refused: on its own
                self._hit_alone(key, limit, window, refused)

    def _hit_alone(
        self, key: str, limit: int, window: timedelta, refused: Callable[[], None] | None
    ) -> None:
        try:
            self.hit(key, limit=limit, window=window)
        except RefusedError:
            if refused is not None:
                refused()
            raise

    def _add(self, uow: UnitOfWork, key: str, window: timedelta, now: datetime) -> int:
        """Add the hit in ``uow`` (purging old windows now and then); the window's count."""
        count = uow.rate_limits.hit(key, window_start(now, window))
        if self._purge_due():
            uow.rate_limits.purge(now - 2 * self._max_window)
        return count

    def _check(self, key: str, limit: int, window: timedelta) -> None:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"a rate-limit key has 1 to {MAX_KEY_LENGTH} characters")
        if limit < 1 or not timedelta(0) < window <= self._max_window:
            raise ValueError("limit must be at least 1 and 0 < window <= max_window")

    def _purge_due(self) -> bool:
        with self._lock:
            self._hits += 1
            return self._hits % self._purge_every == 0
