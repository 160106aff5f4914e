"""Concurrent writers on the test database (SQLite with WAL and a busy timeout, or PostgreSQL).

Racers are threads released together by a barrier, each unit of work on its own pooled
connection, plus processes for the audit chain. Whatever the interleaving, the outcome is the
one a serial order would give: one account, one customs certificate row, an intact audit chain,
a step applied once; the losers get stable error codes, never a raw database exception (those
propagate out of :func:`race` and fail the test).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import func, select

from engine import App, FixedClock, ImportKind, RegistrationView, SwregError
from engine._errors import ErrorCode
from engine.store import Account, AuditEntry, Certificate, Database, Registration
from engine.testing.pki import TestPKI

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS, PKI_NOW
from .helpers import audit_events, card_response, count
from .test_customs import COMPANY, UBN, trust_intermediates

T = TypeVar("T")
RACE_TIMEOUT = 60.0


def race(n: int, work: Callable[[int], T]) -> list[T | SwregError]:
    """Run ``work(0)`` … ``work(n - 1)`` in ``n`` threads released at once; each one's result or
    the :class:`SwregError` it raised (any other exception fails the caller)."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T | SwregError:
        barrier.wait(timeout=RACE_TIMEOUT)
        try:
            return work(i)
        except SwregError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n), timeout=RACE_TIMEOUT))


def codes(outcomes: list[T | SwregError]) -> list[str]:
    return sorted(str(o.code) for o in outcomes if isinstance(o, SwregError))


class RendezvousClock(FixedClock):
    """A fixed clock that, once armed, holds the first ``now()`` of each racing thread until
    ``parties`` threads got there. The registration service reads the clock right after loading
    the registration, so every racer has loaded the same version before any of them writes."""

    def __init__(self, at: datetime, parties: int = 2) -> None:
        super().__init__(at)
        self._barrier = threading.Barrier(parties)
        self._armed = False
        self._waited = threading.local()

    @contextmanager
    def rendezvous(self) -> Iterator[None]:
        """Armed inside the block only."""
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def now(self) -> datetime:
        if self._armed and not getattr(self._waited, "done", False):
            self._waited.done = True
            self._barrier.wait(timeout=RACE_TIMEOUT)
        return super().now()


@pytest.fixture
def clock() -> RendezvousClock:  # the conftest ``app`` runs on this clock
    return RendezvousClock(PKI_NOW)


def at_basic_data(app: App, pki: TestPKI, type_code: str) -> RegistrationView:
    """A new registration that passed the card check (a new card each time)."""
    card = pki.issue_company(UBN) if type_code.startswith("enterprise") else pki.issue_person()
    view = app.registrations.start(type_code, consent=True)
    view = app.registrations.submit_card(view.id, card_response(app, view, card))
    assert view.state == "basic_data"
    return view


def test_fifty_registrations_racing_for_one_account_make_one(app: App, pki: TestPKI) -> None:
    views = [at_basic_data(app, pki, "person.general") for _ in range(50)]
    outcomes = race(50, lambda i: app.registrations.submit(views[i].id, PERSON_ANSWERS))
    completed = [o for o in outcomes if isinstance(o, RegistrationView)]
    assert [v.state for v in completed] == ["completed"]
    assert codes(outcomes) == ["account_exists"] * 49
    assert count(app, Account) == 1
    with app.database.unit_of_work() as uow:
        account = uow.accounts.get_by_name(PERSON_ANSWERS["email"])
        assert account is not None and account.registration_id == completed[0].id
        logins = uow.session.scalars(select(Certificate).where(Certificate.purpose == "login"))
        assert [c.account_id for c in logins] == [account.id]
        states = uow.session.execute(
            select(Registration.state, func.count()).group_by(Registration.state)
        )
        assert {state: n for state, n in states} == {"completed": 1, "basic_data": 49}
        assert uow.audit.verify().ok


def test_concurrent_imports_of_one_customs_certificate_store_one_row(
    app: App, pki: TestPKI
) -> None:
    trust_intermediates(app, pki)
    card = pki.issue_customs(UBN, "06")

    def import_it(_: int) -> int:
        result = app.customs.import_certificate(
            "shipping", COMPANY, certificate=card.der(), kind=ImportKind.NON_IC,
            signature_check=card.sign,  # its key at hand proves it, each time afresh
        )  # fmt: skip
        return result.id

    outcomes = race(20, import_it)
    assert len([o for o in outcomes if isinstance(o, int)]) == 1
    assert codes(outcomes) == ["already_registered"] * 19
    assert count(app, Certificate) == 1
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok
        imports = uow.session.scalar(
            select(func.count()).where(AuditEntry.event == "customs_import")
        )
        assert imports == 1


APPENDER = """
import sys
from datetime import UTC, datetime, timedelta
from engine.store import Database

url, actor, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
database = Database(url)
for i in range(rows):
    with database.unit_of_work() as uow:
        uow.audit.append(at=datetime.now(UTC), actor=actor, event="append", diff={"i": i})
        uow.commit()
database.dispose()
"""


def test_the_audit_chain_stays_intact_with_concurrent_writers(db_url: str) -> None:
    database = Database(db_url)
    threads, processes, rows = 8, 2, 25
    appenders = [
        subprocess.Popen([sys.executable, "-c", APPENDER, db_url, f"process-{p}", str(rows)])
        for p in range(processes)
    ]

    def append(i: int) -> int:
        for n in range(rows):
            with database.unit_of_work() as uow:
                uow.audit.append(at=datetime.now(UTC), actor=f"thread-{i}", event="append")
                if n % 2:  # two rows in one unit of work: chained together
                    uow.audit.append(at=datetime.now(UTC), actor=f"thread-{i}", event="more")
                uow.commit()
        return i

    try:
        assert race(threads, append) == list(range(threads))
    finally:
        assert [p.wait(timeout=RACE_TIMEOUT) for p in appenders] == [0] * processes
    with database.unit_of_work() as uow:
        result = uow.audit.verify()
    database.dispose()
    expected = threads * (rows + rows // 2) + processes * rows
    assert (result.ok, result.rows) == (True, expected)


def test_a_double_submitted_step_applies_once(
    app: App, pki: TestPKI, clock: RendezvousClock
) -> None:
    view = at_basic_data(app, pki, "enterprise.general")
    with clock.rendezvous():  # both submits load version N before either writes
        outcomes = race(2, lambda _: app.registrations.submit(view.id, COMPANY_ANSWERS))
    [applied] = [o for o in outcomes if isinstance(o, RegistrationView)]
    assert applied.state == "enterprise_info"
    [refused] = [o for o in outcomes if isinstance(o, SwregError)]
    assert (refused.code, refused.detail) == (ErrorCode.INVALID_TRANSITION, "concurrent update")
    events = audit_events(app, view.id)
    assert events.count(("next", "basic_data", "enterprise_info")) == 1
    assert app.registrations.status(view.id).state == "enterprise_info"


def test_a_double_submitted_last_step_makes_one_account(
    app: App, pki: TestPKI, clock: RendezvousClock
) -> None:
    view = at_basic_data(app, pki, "person.general")
    with clock.rendezvous():
        outcomes = race(2, lambda _: app.registrations.submit(view.id, PERSON_ANSWERS))
    assert [o.state for o in outcomes if isinstance(o, RegistrationView)] == ["completed"]
    # The loser saw either the updated registration or the new account first.
    assert codes(outcomes) in (["invalid_transition"], ["account_exists"])
    assert count(app, Account) == 1
    assert audit_events(app, view.id).count(("next", "basic_data", "completed")) == 1


def test_racing_requests_on_an_expired_registration_expire_it_once(
    app: App, pki: TestPKI, clock: RendezvousClock
) -> None:
    view = at_basic_data(app, pki, "person.general")
    clock.advance(timedelta(hours=1))
    with clock.rendezvous():
        outcomes = race(2, lambda _: app.registrations.submit(view.id, PERSON_ANSWERS))
    assert codes(outcomes) == ["registration_expired"] * 2
    with clock.rendezvous():
        views = race(2, lambda _: app.registrations.status(view.id))
    assert [v.state for v in views if isinstance(v, RegistrationView)] == ["expired"] * 2
    assert [e for e in audit_events(app, view.id) if e[2] == "expired"] == [
        ("expire", "basic_data", "expired")
    ]


def test_two_purges_at_once_expire_each_idle_registration_once(
    app: App, pki: TestPKI, clock: RendezvousClock
) -> None:
    """``swreg purge`` is cron-safe (DESIGN.md §6): two machines' purges at the same moment
    both succeed, and each idle registration is expired once, by one of them."""
    views = [at_basic_data(app, pki, "person.general") for _ in range(12)]
    clock.advance(timedelta(hours=1))
    with clock.rendezvous():
        outcomes = race(2, lambda _: app.retention.purge(days=30))
    assert codes(outcomes) == []
    assert sum(o.expired for o in outcomes if not isinstance(o, SwregError)) == len(views)
    for view in views:
        assert app.registrations.status(view.id).state == "expired"
        assert [e for e in audit_events(app, view.id) if e[2] == "expired"] == [
            ("expire", "basic_data", "expired")
        ]
