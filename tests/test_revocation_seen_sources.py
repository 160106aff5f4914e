"""CRL distribution points seen by the certificate checks (DESIGN.md §4a), against a real local
HTTP server: :meth:`RevocationService.fetch_source` (one fetch on a miss: recorded as a source of
origin ``seen``, fetched, verified and stored like one source of ``refresh``, conditional the
next time; a host outside ``SWREG_FETCH_HOSTS`` recorded nowhere and never asked) and
:meth:`RevocationService.note_seen` (recorded once; a URL this process knows is stored costs no
database statement, counted on the engine), then re-requested by ``revocation refresh``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import event, func, select

from engine import App, FixedClock, IssuerCA, bootstrap
from engine._settings import FetchHosts
from engine.services.revocation import RevocationService, SourceOrigin
from engine.store import AuditEntry, CrlSource
from engine.testing.http_server import LocalHTTPServer
from engine.testing.pki import TestPKI

from .conftest import PKI_NOW, FreshDatabase
from .revocation_support import der, fetching_settings, server, trust_moica

__all__ = ["server"]  # a fixture used here

PATH = "/crl/moica.crl"


@pytest.fixture
def app(db_url: str, clock: FixedClock, pki: TestPKI) -> Iterator[App]:
    """An app fetching from 127.0.0.1 only, trusting the test roots and the MOICA CA."""
    made = bootstrap(fetching_settings(db_url), clock=clock)
    trust_moica(made, pki)
    yield made
    made.close()


def sources(app: App) -> list[tuple[str, str]]:
    return [(s.url, s.origin) for s in app.revocation.sources()]


def audit_events(app: App) -> list[str]:
    with app.database.unit_of_work() as uow:
        return list(uow.session.scalars(select(AuditEntry.event).order_by(AuditEntry.seq)))


class Statements:
    """Counts the SQL statements sent on an engine while active (``with``)."""

    def __init__(self, app: App) -> None:
        self.engine = app.database.engine
        self.sent: list[str] = []

    def _count(self, *args: Any) -> None:
        self.sent.append(str(args[2]))

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


# -- fetch_source --------------------------------------------------------------------------------


def test_fetch_source_records_fetches_stores_then_asks_conditionally(
    app: App, server: LocalHTTPServer, pki: TestPKI
) -> None:
    revoked = pki.issue_person()
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [revoked], number=7)), etag='"v7"')
    url = server.url(PATH)
    before = audit_events(app)

    report = app.revocation.fetch_source(url)
    assert (report.url, report.origin, report.outcome) == (url, "seen", "fetched")
    assert (report.stored, report.fresh, report.ok, report.crl_number) == (True, True, True, 7)
    assert sources(app) == [(url, "seen")]
    [row] = app.revocation.status()
    assert (row.url, row.crl_number, row.entries, row.fresh) == (url, 7, 1, True)

    again = app.revocation.fetch_source(url)  # the next miss asks conditionally: 304
    assert (again.outcome, again.stored, again.ok, again.crl_number) == (
        "not_modified", False, True, 7,
    )  # fmt: skip
    assert server.requests[-1].headers.get("If-None-Match") == '"v7"'
    assert "If-None-Match" not in server.requests[0].headers
    assert [r.crl_number for r in app.revocation.status()] == [7]
    assert audit_events(app) == before  # a check writes no audit row per fetch

    # and revocation refresh re-requests it, reported with its origin
    refreshed = app.revocation.refresh(actor="test")
    assert [(s.url, s.origin, s.outcome) for s in refreshed.sources] == [
        (url, "seen", "not_modified")
    ]
    assert audit_events(app) == [*before, "revocation_refreshed"]


@pytest.mark.parametrize(
    ("target", "outcome"),
    [
        ("http://crl.example.com/moica.crl", "host_not_allowed"),  # not in SWREG_FETCH_HOSTS
        ("http://localhost:{port}/crl/moica.crl", "host_not_allowed"),  # our server, unlisted
        ("ftp://127.0.0.1/moica.crl", "url_not_allowed"),  # not http(s)
        ("file:///etc/passwd", "url_not_allowed"),
        ("http://127.0.0.1:{port}/" + "a" * 2100, "url_not_allowed"),  # longer than the column
    ],
)
def test_fetch_source_of_a_refused_url_records_nothing_and_sends_nothing(
    app: App, server: LocalHTTPServer, pki: TestPKI, target: str, outcome: str
) -> None:
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [], number=1)))
    url = target.format(port=server.port)
    before = audit_events(app)
    report = app.revocation.fetch_source(url)
    assert (report.url, report.origin, report.outcome) == (url, "seen", outcome)
    assert (report.stored, report.ok) == (False, False) and report.error
    assert server.requests == []
    assert sources(app) == [] and app.revocation.status() == []
    assert audit_events(app) == before
    app.revocation.note_seen([url])  # nor does noting it record it
    assert sources(app) == []


def test_fetch_source_of_a_forged_crl_stores_no_crl(
    app: App, server: LocalHTTPServer, pki: TestPKI
) -> None:
    forged = pki.crl(
        IssuerCA.MOICA, [], number=9, signing_key=ec.generate_private_key(ec.SECP256R1())
    )
    server.serve(PATH, der(forged), etag='"forged"')
    report = app.revocation.fetch_source(server.url(PATH))
    assert (report.outcome, report.stored, report.ok) == ("signature_invalid", False, False)
    assert app.revocation.status() == []
    [view] = app.revocation.sources()  # the source is known, with what went wrong
    assert (view.origin, view.outcome) == ("seen", "signature_invalid")
    app.revocation.fetch_source(server.url(PATH))
    assert "If-None-Match" not in server.requests[-1].headers  # never conditional on a forgery


def test_fetch_source_of_a_known_source_keeps_its_origin(
    app: App, server: LocalHTTPServer, pki: TestPKI
) -> None:
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [], number=3)))
    app.revocation.add_source(server.url(PATH))
    report = app.revocation.fetch_source(server.url(PATH))
    assert (report.origin, report.outcome) == ("manual", "fetched")
    assert sources(app) == [(server.url(PATH), "manual")]


def test_a_stale_crl_fetched_on_a_miss_is_stored_and_reported_stale(
    app: App, server: LocalHTTPServer, pki: TestPKI
) -> None:
    card = pki.issue_person()
    stale = pki.crl(
        IssuerCA.MOICA,
        [card],
        number=2,
        this_update=PKI_NOW - timedelta(days=10),
        next_update=PKI_NOW - timedelta(days=3),
    )
    server.serve(PATH, der(stale))
    report = app.revocation.fetch_source(server.url(PATH))
    assert (report.outcome, report.stored, report.fresh, report.ok) == ("stale", True, False, False)


# -- note_seen -----------------------------------------------------------------------------------


def test_note_seen_records_each_url_once_and_then_costs_no_statement(
    app: App, server: LocalHTTPServer
) -> None:
    first, second = server.url("/crl/a.crl"), server.url("/crl/b.crl")
    outside = "http://crl.example.com/c.crl"
    seen = [first, second, first, outside, "ldap://127.0.0.1/cn=CRL"]
    with Statements(app) as statements:
        app.revocation.note_seen(seen)
    assert statements.sent  # the first time writes
    assert sources(app) == [(first, "seen"), (second, "seen")]  # refused ones nowhere

    with Statements(app) as statements:
        app.revocation.note_seen(seen)  # every URL known (or refused) in this process
        app.revocation.note_seen(iter([second]))
    assert statements.sent == []
    assert sources(app) == [(first, "seen"), (second, "seen")]


def test_note_seen_in_another_process_adds_no_row_and_keeps_the_origin(
    app: App, clock: FixedClock, server: LocalHTTPServer
) -> None:
    manual, seen = server.url("/crl/manual.crl"), server.url("/crl/seen.crl")
    app.revocation.add_source(manual)
    app.revocation.note_seen([seen])
    other = RevocationService(  # another worker: an empty memory, the same database
        app.database, clock, app.trust, hosts=FetchHosts.parse("127.0.0.1"), grace=timedelta(0)
    )
    other.note_seen([manual, seen])
    assert sources(app) == [(manual, "manual"), (seen, "seen")]
    with Statements(app) as statements:
        other.note_seen([seen, manual])
    assert statements.sent == []


def test_note_seen_from_many_threads_records_each_url_once(
    fresh_database: FreshDatabase, clock: FixedClock, server: LocalHTTPServer
) -> None:
    settings = fetching_settings(fresh_database())
    apps = [bootstrap(settings, clock=clock), bootstrap(settings, clock=clock, migrate=False)]
    urls = [server.url(f"/crl/{n}.crl") for n in range(6)]
    errors: list[BaseException] = []

    def note(app: App, offset: int) -> None:
        try:
            for n in range(len(urls)):
                app.revocation.note_seen([urls[(n + offset) % len(urls)]])
        except BaseException as error:  # reported below
            errors.append(error)

    try:
        threads = [threading.Thread(target=note, args=(apps[n % 2], n)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        with apps[0].database.unit_of_work() as uow:
            count = uow.session.scalar(select(func.count()).select_from(CrlSource))
        assert count == len(urls)
        assert sorted(sources(apps[0])) == sorted((u, SourceOrigin.SEEN.value) for u in urls)
    finally:
        for each in apps:
            each.close()


def test_refresh_re_requests_the_seen_sources(
    app: App, server: LocalHTTPServer, pki: TestPKI
) -> None:
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [], number=4)), etag='"v4"')
    app.revocation.note_seen([server.url(PATH)])
    assert server.requests == []  # noting fetches nothing
    report = app.revocation.refresh(actor="test")
    assert report.ok
    assert [(s.url, s.origin, s.outcome, s.stored) for s in report.sources] == [
        (server.url(PATH), "seen", "fetched", True)
    ]


def test_two_checks_fetching_one_source_at_once_store_one_crl(
    app: App, server: LocalHTTPServer, pki: TestPKI
) -> None:
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [pki.issue_person()], number=5)))
    reports: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: reports.append(app.revocation.fetch_source(server.url(PATH)))
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [r.ok for r in reports] == [True] * 3
    assert sum(r.stored for r in reports) >= 1
    assert sources(app) == [(server.url(PATH), "seen")]
    assert [s.crl_number for s in app.revocation.status()] == [5]
