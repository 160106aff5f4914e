"""Fixed-window rate limits stored in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from threading import Thread

import pytest
from sqlalchemy import event, select

from engine import App, FixedClock, RefusedError
from engine.services.hashing import IdentifierHasher
from engine.services.rate_limits import RateLimiter, hashed_key, retry_after, window_start
from engine.store import RateLimitWindow
from engine.web._portal import Limit, Portal

from .conftest import SECRET

MINUTE = timedelta(minutes=1)
T0 = datetime(2025, 3, 1, 9, 30, 0, tzinfo=UTC)


@pytest.fixture
def limiter(app: App, clock: FixedClock) -> RateLimiter:
    clock.set(T0 + timedelta(seconds=15))  # 45 s left in the current minute
    return RateLimiter(app.database, clock)


def stored(app: App) -> list[tuple[str, datetime, int]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(
            select(RateLimitWindow).order_by(RateLimitWindow.window_start, RateLimitWindow.key)
        )
        return [(r.key, r.window_start, r.count) for r in rows]


def test_fourth_hit_in_a_window_is_refused(
    app: App, limiter: RateLimiter, clock: FixedClock
) -> None:
    for _ in range(3):
        limiter.hit("start:203.0.113.9", limit=3, window=MINUTE)
    with pytest.raises(RefusedError) as info:
        limiter.hit("start:203.0.113.9", limit=3, window=MINUTE)
    assert info.value.code == "rate_limited"
    assert info.value.details == {"retry_after": 45}
    assert info.value.as_dicts("en")[0]["retry_after"] == 45
    limiter.hit("start:198.51.100.7", limit=3, window=MINUTE)  # other keys are not affected
    assert stored(app) == [("start:198.51.100.7", T0, 1), ("start:203.0.113.9", T0, 4)]

    clock.advance(timedelta(seconds=44))  # the last second of the window
    with pytest.raises(RefusedError) as info:
        limiter.hit("start:203.0.113.9", limit=3, window=MINUTE)
    assert info.value.details == {"retry_after": 1}

    clock.advance(timedelta(seconds=1))  # a new window
    for _ in range(3):
        limiter.hit("start:203.0.113.9", limit=3, window=MINUTE)
    assert ("start:203.0.113.9", T0 + MINUTE, 3) in stored(app)


def test_counts_are_shared_by_limiters_of_one_database(app: App, limiter: RateLimiter) -> None:
    other_worker = RateLimiter(app.database, app.clock)
    limiter.hit("k", limit=2, window=MINUTE)
    other_worker.hit("k", limit=2, window=MINUTE)
    with pytest.raises(RefusedError):
        limiter.hit("k", limit=2, window=MINUTE)


def test_old_windows_are_purged(app: App, clock: FixedClock) -> None:
    clock.set(T0)
    limiter = RateLimiter(app.database, clock, max_window=timedelta(hours=1), purge_every=3)
    limiter.hit("old", limit=5, window=MINUTE)
    clock.advance(timedelta(hours=2, minutes=1))
    limiter.hit("new", limit=5, window=MINUTE)
    assert [key for key, _, _ in stored(app)] == ["old", "new"]
    limiter.hit("new", limit=5, window=MINUTE)  # the third call purges
    assert stored(app) == [("new", T0 + timedelta(hours=2, minutes=1), 2)]


@pytest.mark.parametrize(
    ("at", "window", "start", "left"),
    [
        (T0, MINUTE, T0, 60),  # the first instant of a window
        (T0 + timedelta(seconds=59, microseconds=1), MINUTE, T0, 1),  # part of a second left
        (T0 + timedelta(minutes=7), timedelta(minutes=15), T0, 480),  # windows align to epoch
        (T0 + timedelta(hours=3), timedelta(days=1), datetime(2025, 3, 1, tzinfo=UTC), 41400),
    ],
)
def test_windows(at: datetime, window: timedelta, start: datetime, left: int) -> None:
    assert window_start(at, window) == start
    assert retry_after(at, window) == left


def test_arguments_are_checked(limiter: RateLimiter) -> None:
    for key, limit, window in [
        ("", 1, MINUTE),  # empty key
        ("x" * 201, 1, MINUTE),  # key too long
        ("k", 0, MINUTE),  # limit below 1
        ("k", 1, timedelta(0)),  # empty window
        ("k", 1, timedelta(days=2)),  # longer than max_window
    ]:
        with pytest.raises(ValueError):
            limiter.hit(key, limit=limit, window=window)


def test_hashed_key_hides_the_value() -> None:
    key = hashed_key("activate", "ming@example.com")
    assert key.startswith("activate:") and "ming" not in key and len(key) == 9 + 64


def test_the_portal_keys_a_client_by_a_keyed_hash_of_its_address_or_64(app: App) -> None:
    """``Portal.limit``: no address in the table; an IPv6 /64 is one client; an IPv4-mapped
    IPv6 address is its IPv4 address."""
    portal = Portal(app)
    rule = Limit("start", 5, timedelta(minutes=10))
    for client in ("203.0.113.9", "::ffff:203.0.113.9", "2001:db8:7:8::1", "2001:db8:7:8::2"):
        with portal.limit(rule, client):
            pass
    keys = IdentifierHasher(SECRET)
    expected = {
        "start:" + keys.hash("client", "203.0.113.9")[:32]: 2,
        "start:" + keys.hash("client", "2001:db8:7:8::/64")[:32]: 2,
    }
    assert {key: hits for key, _, hits in stored(app)} == expected
    assert not [key for key, _, _ in stored(app) if "203.0" in key or "2001:" in key]


# -- a request's hit counted by its own work's commit (RateLimiter.counting) -----------------------


class Commits:
    """How many transactions the database committed (the engine's ``commit`` event)."""

    def __init__(self, app: App) -> None:
        self.count = 0
        event.listen(app.database.engine, "commit", self._seen)

    def _seen(self, connection: object) -> None:
        self.count += 1


def write_marker(app: App, name: str = "work") -> None:
    """The block's own work: one row (a hit of ``name``) in one committed unit of work."""
    with app.database.unit_of_work() as uow:
        uow.rate_limits.hit(name, T0)
        uow.commit()


def test_a_counted_hit_rides_the_work_s_own_commit(app: App, limiter: RateLimiter) -> None:
    commits = Commits(app)
    with limiter.counting("start:c", limit=3, window=MINUTE):
        write_marker(app)
    assert commits.count == 1  # one transaction: the work's, which counted the hit
    assert stored(app) == [("start:c", T0, 1), ("work", T0, 1)]


def test_work_that_fails_or_commits_nothing_still_counts_its_hit(
    app: App, limiter: RateLimiter
) -> None:
    with pytest.raises(RefusedError) as info, limiter.counting("start:c", limit=3, window=MINUTE):
        raise RefusedError("field_required", field="name")
    assert info.value.code == "field_required"  # the work's own refusal
    with limiter.counting("start:c", limit=3, window=MINUTE):
        pass  # a read-only step
    assert stored(app) == [("start:c", T0, 2)]


def test_a_client_at_its_limit_is_refused_before_the_work(app: App, limiter: RateLimiter) -> None:
    refusals: list[str] = []
    for _ in range(2):
        with limiter.counting("start:c", limit=2, window=MINUTE):
            write_marker(app)
    ran = False
    with (
        pytest.raises(RefusedError) as info,
        limiter.counting(
            "start:c", limit=2, window=MINUTE, refused=lambda: refusals.append("ours")
        ),
    ):
        ran = True
    assert info.value.code == "rate_limited" and info.value.details == {"retry_after": 45}
    assert not ran and refusals == ["ours"]
    assert stored(app) == [("start:c", T0, 3), ("work", T0, 2)]  # the refused hit counts


LIMIT_2 = {"limit": 2, "window": MINUTE}


def test_hits_that_pass_the_limit_meanwhile_refuse_the_work_s_commit(
    app: App, limiter: RateLimiter
) -> None:
    """The look before the work found room; a concurrent request took the last place while
    the work ran: the work's commit is refused and rolled back, and the hit still counts."""
    refusals: list[str] = []
    limiter.hit("start:c", limit=2, window=MINUTE)
    with (
        pytest.raises(RefusedError) as info,
        limiter.counting(
            "start:c", limit=2, window=MINUTE, refused=lambda: refusals.append("ours")
        ),
    ):
        concurrent = Thread(target=limiter.hit, args=("start:c",), kwargs=LIMIT_2)
        concurrent.start()  # another request, in its own thread (its own context)
        concurrent.join()
        write_marker(app)
    assert info.value.code == "rate_limited" and refusals == ["ours"]
    assert stored(app) == [("start:c", T0, 3)]  # no "work" row; the refused hit counted


def test_the_work_s_own_rate_limit_is_not_this_hit_s_refusal(
    app: App, limiter: RateLimiter
) -> None:
    refusals: list[str] = []
    with (
        pytest.raises(RefusedError) as info,
        limiter.counting("start:c", limit=5, window=MINUTE, refused=lambda: refusals.append("x")),
    ):
        raise RefusedError("rate_limited", retry_after=9)  # e.g. a per-account limit
    assert info.value.details == {"retry_after": 9} and refusals == []
    assert stored(app) == [("start:c", T0, 1)]
