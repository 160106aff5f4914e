"""The OCSP client with its shared database cache (DESIGN.md §4a), against OpenSSL's own
responder (``openssl ocsp``, :mod:`engine.testing.ocsp`): good and cached, revoked (final),
unknown (not cached), a stale response, a delegated responder, a responder that is down, one
that hangs, a host outside ``SWREG_FETCH_HOSTS``, expiry by the clock, a hold (never final), two
apps on one database, concurrent workers, and ``swreg revocation status --json``.

Requests are counted by wrapping the :class:`~engine.services.fetching.Fetcher`, and a cached
answer is shown again with the responder stopped.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from typer.testing import CliRunner

from engine import EnvironmentProblem, ErrorCode, IssuerCA
from engine._settings import FetchHosts
from engine.cli import app as cli_app
from engine.pki.ocsp import OcspStatus
from engine.pki.revocation import issuer_key
from engine.services.fetching import Fetcher
from engine.services.ocsp import (
    NO_RESPONDER,
    NOT_KNOWN,
    OcspResult,
    OcspService,
    OcspSource,
    certificate_fingerprint,
)
from engine.store import CachedOcsp, Database
from engine.testing import TestCA, TestPKI
from engine.testing.ocsp import Revocation, issue_ocsp_signer
from engine.testing.ports import free_port

from .revocation_support import (
    MAX_AGE,
    NOW,
    TIMEOUT,
    OcspSetup,
    Responder,
    cli_env,
    moica,
    pki,
    responder,
    setup,
)
from .revocation_support import ocsp_url as url

__all__ = ["moica", "pki", "responder", "setup"]  # fixtures used here

REVOKED_AT = NOW - timedelta(hours=2)
HELD_AT = NOW - timedelta(hours=1)


# -- good, revoked, unknown ---------------------------------------------------------------------


def test_a_good_answer_is_cached_and_served_without_a_request(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    running = responder(port, good=[card])
    first = setup.status(card, moica)
    assert (first.status, first.source, first.problem) == (
        OcspStatus.GOOD,
        OcspSource.NETWORK,
        None,
    )
    assert first.url == url(port) and first.der  # the response itself: the evidence
    assert first.cache_until == first.next_update  # nextUpdate: one hour after thisUpdate
    running.stop()  # the cache answers without the responder
    second = setup.status(card, moica)
    assert (second.status, second.source) == (OcspStatus.GOOD, OcspSource.CACHE)
    assert second.der == first.der and second.checked_at == first.checked_at
    assert setup.fetches.posts == [url(port)]  # one request in all
    assert setup.cached_rows() == 1


def test_a_revoked_answer_carries_reason_and_time_and_is_final(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    running = responder(
        port, revoked=[Revocation(card, REVOKED_AT, x509.ReasonFlags.key_compromise)]
    )
    answer = setup.status(card, moica)
    assert (answer.status, answer.source) == (OcspStatus.REVOKED, OcspSource.NETWORK)
    assert (answer.reason, answer.revoked_at) == (x509.ReasonFlags.key_compromise, REVOKED_AT)
    running.stop()
    setup.clock.advance(timedelta(days=2))  # far past cache_until: a revocation is final
    again = setup.status(card, moica)
    assert (again.status, again.source, again.reason) == (
        OcspStatus.REVOKED,
        OcspSource.CACHE,
        x509.ReasonFlags.key_compromise,
    )
    assert len(setup.fetches.posts) == 1


def test_unknown_from_the_responder_is_not_cached(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    listed, unlisted = pki.issue_person(ocsp_url=url(port)), pki.issue_person(ocsp_url=url(port))
    responder(port, good=[listed])
    for _ in range(2):
        answer = setup.status(unlisted, moica)
        assert (answer.status, answer.source, answer.problem) == (
            OcspStatus.UNKNOWN,
            OcspSource.NETWORK,
            NOT_KNOWN,
        )
        assert answer.der  # a believed response that says "unknown": still the evidence
    assert len(setup.fetches.posts) == 2
    assert setup.cached_rows() == 0


def test_a_stale_response_is_unknown_and_not_cached(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card], next_update=timedelta(minutes=1))
    setup.clock.advance(timedelta(minutes=30))  # the responder's nextUpdate is 29 minutes past
    answer = setup.status(card, moica)
    assert (answer.status, answer.problem) == (OcspStatus.UNKNOWN, "stale")
    assert setup.cached_rows() == 0


def test_a_delegated_responder_is_believed_and_cached(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card], signer=issue_ocsp_signer(pki, moica))
    answer = setup.status(card, moica)
    assert (answer.status, answer.problem) == (OcspStatus.GOOD, None)
    assert setup.status(card, moica).source is OcspSource.CACHE


def test_a_responder_signing_for_another_ca_is_refused(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    other = pki.ca(IssuerCA.MOEACA)
    responder(port, good=[card], signer=issue_ocsp_signer(pki, other))
    answer = setup.status(card, moica)
    assert answer.status is OcspStatus.UNKNOWN
    assert answer.problem in {"responder_unknown", "responder_not_issued_by_ca"}
    assert setup.cached_rows() == 0


# -- failures: down, hanging, not allowed, none named ------------------------------------------


def test_a_responder_that_is_down_gives_unknown_with_the_problem(
    setup: OcspSetup, pki: TestPKI, moica: TestCA
) -> None:
    port = free_port()  # nothing listens there
    card = pki.issue_person(ocsp_url=url(port))
    answer = setup.status(card, moica)
    assert (answer.status, answer.source, answer.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NETWORK,
        "connection_error",
    )
    assert answer.der == b"" and setup.cached_rows() == 0


def test_a_responder_that_hangs_times_out(setup: OcspSetup, pki: TestPKI, moica: TestCA) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the connection; nobody ever answers
        port = listener.getsockname()[1]
        card = pki.issue_person(ocsp_url=url(port))
        started = datetime.now(UTC)
        answer = setup.status(card, moica)
        elapsed = datetime.now(UTC) - started
    assert (answer.status, answer.problem) == (OcspStatus.UNKNOWN, "timeout")
    assert elapsed < TIMEOUT + timedelta(seconds=2)
    assert setup.cached_rows() == 0


def test_a_host_outside_fetch_hosts_is_not_asked(
    setup: OcspSetup, pki: TestPKI, moica: TestCA
) -> None:
    card = pki.issue_person(ocsp_url="http://ocsp.example.org/")
    answer = setup.status(card, moica)
    assert (answer.status, answer.source, answer.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NONE,
        "host_not_allowed",
    )
    assert setup.fetches.posts == []
    assert setup.ocsp.responders() == []  # nothing asked, nothing recorded


def test_a_certificate_without_a_responder_is_unknown(
    setup: OcspSetup, pki: TestPKI, moica: TestCA
) -> None:
    answer = setup.status(pki.issue_person(), moica)
    assert (answer.status, answer.source, answer.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NONE,
        NO_RESPONDER,
    )
    assert setup.fetches.posts == []


# -- expiry and holds ---------------------------------------------------------------------------


def test_the_cache_expires_by_the_clock(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card], next_update=None)  # no nextUpdate: SWREG_OCSP_MAX_AGE
    first = setup.status(card, moica)
    assert first.cache_until == first.checked_at + MAX_AGE
    setup.clock.advance(MAX_AGE - timedelta(seconds=1))  # 1 second before expiry: cached
    assert setup.status(card, moica).source is OcspSource.CACHE
    setup.clock.advance(timedelta(seconds=1))  # at cache_until: asked again
    again = setup.status(card, moica)
    assert (again.status, again.source) == (OcspStatus.GOOD, OcspSource.NETWORK)
    assert len(setup.fetches.posts) == 2
    assert setup.cached_rows() == 1  # replaced, not added


def test_a_hold_without_next_update_is_not_cached(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    hold = Revocation(card, HELD_AT, x509.ReasonFlags.certificate_hold)
    responder(port, revoked=[hold], next_update=None)
    for _ in range(2):
        answer = setup.status(card, moica)
        assert (answer.status, answer.reason, answer.source) == (
            OcspStatus.REVOKED,
            x509.ReasonFlags.certificate_hold,
            OcspSource.NETWORK,
        )
    assert setup.cached_rows() == 0


def test_a_hold_is_cached_until_next_update_and_never_final(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    hold = Revocation(card, HELD_AT, x509.ReasonFlags.certificate_hold)
    running = responder(port, revoked=[hold])
    first = setup.status(card, moica)
    assert first.is_hold and first.cache_until == first.next_update
    assert setup.status(card, moica).source is OcspSource.CACHE
    running.stop()
    assert first.next_update is not None
    setup.clock.set(first.next_update)  # past its nextUpdate: not served as final
    answer = setup.status(card, moica)
    assert (answer.status, answer.problem) == (OcspStatus.UNKNOWN, "connection_error")


# -- sharing -------------------------------------------------------------------------------------


def test_two_apps_on_one_database_share_the_cache(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    running = responder(port, good=[card])
    assert (
        setup.app.ocsp.ocsp_status(
            card.certificate, moica.certificate, now=setup.clock.now()
        ).source
        is OcspSource.NETWORK
    )
    running.stop()
    other = OcspSetup(setup.settings.database_url)  # another worker: its own app and connections
    try:
        answer = other.status(card, moica)
        assert (answer.status, answer.source) == (OcspStatus.GOOD, OcspSource.CACHE)
        assert other.fetches.posts == []
    finally:
        other.app.close()


def test_workers_racing_on_one_certificate_leave_one_row(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card])
    workers = [OcspSetup(setup.settings.database_url) for _ in range(4)]
    answers: list[OcspResult] = []
    try:
        threads = [
            threading.Thread(target=lambda w=w: answers.append(w.status(card, moica)))
            for w in workers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for worker in workers:
            worker.app.close()
    assert [a.status for a in answers] == [OcspStatus.GOOD] * 4
    assert setup.cached_rows() == 1


# -- swreg revocation status ----------------------------------------------------------------------


def test_revocation_status_lists_the_responders_asked(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    up, down = free_port(), free_port()
    card = pki.issue_person(ocsp_url=url(up))
    responder(up, good=[card])
    setup.app.ocsp.ocsp_status(card.certificate, moica.certificate, now=setup.clock.now())
    lost = pki.issue_person(ocsp_url=url(down))
    setup.app.ocsp.ocsp_status(lost.certificate, moica.certificate, now=setup.clock.now())
    env = cli_env(setup.settings.database_url)
    result = CliRunner().invoke(cli_app, ["revocation", "status", "--json"], env=env)
    assert result.exit_code == 0, result.stdout
    rows = {row["url"]: row for row in json.loads(result.stdout)["ocsp"]}
    issuer = moica.certificate.subject.rfc4514_string()
    assert rows[url(up)]["reachable"] is True and rows[url(up)]["last_error"] is None
    assert rows[url(down)]["reachable"] is False
    assert rows[url(down)]["last_error"] == "connection_error"
    assert {row["issuer"] for row in rows.values()} == {issuer}
    assert all(row["checked_at"] for row in rows.values())


@pytest.mark.parametrize(
    ("reason", "kept"),
    [
        ("keyCompromise", "revoked"),  # a revocation is final: a racing good answer loses
        ("certificateHold", "good"),  # a hold is not: the later good answer replaces it
    ],
)
def test_a_final_revocation_is_never_overwritten(setup: OcspSetup, reason: str, kept: str) -> None:
    at = setup.clock.now()
    revoked = CachedOcsp(
        fingerprint="ab" * 32,
        issuer_key_id="cd" * 32,
        responder_url="http://127.0.0.1/",
        status="revoked",
        reason=reason,
        revoked_at=at - timedelta(hours=1),
        this_update=at,
        next_update=at + timedelta(hours=1),
        produced_at=at,
        is_hold=reason == "certificateHold",
        der=b"revoked",
        checked_at=at,
        cache_until=at + timedelta(hours=1),
    )
    good = replace(revoked, status="good", reason=None, revoked_at=None, is_hold=False, der=b"g")
    with setup.app.database.unit_of_work() as uow:
        uow.ocsp.put(revoked)
        uow.commit()
    with setup.app.database.unit_of_work() as uow:
        uow.ocsp.put(good)
        uow.commit()
        stored = uow.ocsp.get(revoked.fingerprint)
    assert stored is not None and stored.status == kept
    assert setup.cached_rows() == 1


# -- the cached read: the shared cache only, one statement outside any transaction --------------


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def test_an_answer_the_database_no_longer_holds_is_never_used(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    running = responder(port, good=[card])
    assert setup.status(card, moica).source is OcspSource.NETWORK
    assert setup.status(card, moica).source is OcspSource.CACHE
    running.stop()
    engine = create_engine(setup.settings.database_url)  # another process's connection
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM ocsp_responses"))
    finally:
        engine.dispose()
    answer = setup.status(card, moica)  # the very next check: nothing kept in the process
    assert (answer.status, answer.source, answer.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NETWORK,
        "connection_error",
    )


def test_a_revocation_another_worker_cached_is_seen_by_the_next_check(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card])
    good = setup.status(card, moica)
    assert setup.status(card, moica).source is OcspSource.CACHE
    at = setup.clock.now()
    assert good.this_update is not None and good.cache_until is not None
    revoked = CachedOcsp(
        fingerprint=_fingerprint(card.der()),
        issuer_key_id=issuer_key(moica.certificate).hex(),
        responder_url=url(port),
        status="revoked",
        reason="keyCompromise",
        revoked_at=at - timedelta(minutes=5),
        this_update=good.this_update,
        next_update=good.next_update,
        produced_at=at,
        is_hold=False,
        der=b"the other worker's response",
        checked_at=at,
        cache_until=good.cache_until,
    )
    other = OcspSetup(setup.settings.database_url)  # another worker writes the revocation
    try:
        with other.app.database.unit_of_work() as uow:
            uow.ocsp.put(revoked)
            uow.commit()
    finally:
        other.app.close()
    answer = setup.status(card, moica)
    assert (answer.status, answer.source, answer.reason, answer.der) == (
        OcspStatus.REVOKED,
        OcspSource.CACHE,
        x509.ReasonFlags.key_compromise,
        b"the other worker's response",
    )
    assert len(setup.fetches.posts) == 1


def test_an_answer_cached_under_another_issuer_key_is_not_returned(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card])
    setup.status(card, moica)
    with setup.app.database.unit_of_work() as uow:
        stored = uow.ocsp.get(_fingerprint(card.der()))
        assert stored is not None
        uow.ocsp.put(replace(stored, issuer_key_id="ee" * 32))  # cached for another CA key
        uow.commit()
    answer = setup.status(card, moica)
    assert (answer.status, answer.source) == (OcspStatus.GOOD, OcspSource.NETWORK)
    assert len(setup.fetches.posts) == 2


def test_a_certificate_decoded_again_finds_its_answer_and_a_forged_twin_does_not(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card])
    setup.status(card, moica)
    again = x509.load_der_x509_certificate(card.der())  # another object, the same bytes
    assert certificate_fingerprint(again) == _fingerprint(card.der())
    assert setup.ocsp.ocsp_status(again, moica.certificate, now=setup.clock.now()).source is (
        OcspSource.CACHE
    )
    # The same signature over another serial number: the fingerprint remembered for the
    # signature is not taken, the forged certificate has its own (and no cached answer).
    serial = card.certificate.serial_number
    length = (serial.bit_length() + 8) // 8
    forged_der = card.der().replace(
        serial.to_bytes(length, "big"), (serial ^ 1).to_bytes(length, "big"), 1
    )
    forged = x509.load_der_x509_certificate(forged_der)
    assert forged.signature == again.signature and forged.serial_number == serial ^ 1
    assert certificate_fingerprint(forged) == _fingerprint(forged_der)
    answer = setup.ocsp.ocsp_status(forged, moica.certificate, now=setup.clock.now())
    assert (answer.status, answer.source, answer.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NETWORK,
        NOT_KNOWN,
    )
    assert certificate_fingerprint(again) == _fingerprint(card.der())  # the twin did not stick


def test_the_caller_may_pass_the_fingerprint_it_has(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    running = responder(port, good=[card])
    first = setup.ocsp.ocsp_status(
        card.certificate,
        moica.certificate,
        now=setup.clock.now(),
        fingerprint=_fingerprint(card.der()),
    )
    assert first.source is OcspSource.NETWORK
    running.stop()
    again = setup.status(card, moica)  # computed: the same row
    assert (again.status, again.source, again.der) == (OcspStatus.GOOD, OcspSource.CACHE, first.der)


def test_a_cached_read_leaves_the_pooled_connection_transactional(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card])
    setup.status(card, moica)
    for _ in range(3):  # the read runs in autocommit on PostgreSQL: the pool gets it back reset
        assert setup.status(card, moica).source is OcspSource.CACHE
        with setup.app.database.unit_of_work() as uow:
            uow.ocsp.forget(_fingerprint(card.der()))  # rolled back: never committed
    assert setup.cached_rows() == 1
    assert setup.status(card, moica).source is OcspSource.CACHE


def test_a_failing_cached_read_raises_as_sqlalchemy_and_hides_the_key(
    fresh_database: Callable[..., str], pki: TestPKI, moica: TestCA
) -> None:
    database = Database(fresh_database(migrated=False))  # no tables yet
    service = OcspService(
        database, hosts=FetchHosts.parse("127.0.0.1"), timeout=TIMEOUT, max_age=MAX_AGE
    )
    card = pki.issue_person(ocsp_url=url(free_port()))
    try:
        with pytest.raises((OperationalError, ProgrammingError)) as info:  # SQLite, PostgreSQL
            service.ocsp_status(card.certificate, moica.certificate, now=datetime.now(UTC))
        assert "ocsp_responses" in str(info.value)
        assert _fingerprint(card.der()) not in str(info.value)  # parameters hidden
        database.migrate()  # the failed connection was discarded: the next read works
        answer = service.ocsp_status(
            card.certificate, moica.certificate, now=datetime.now(UTC), network=False
        )
        assert (answer.status, answer.problem) == (OcspStatus.UNKNOWN, "not_cached")
    finally:
        database.dispose()


def test_an_unreachable_database_is_database_unavailable(pki: TestPKI, moica: TestCA) -> None:
    database = Database(f"postgresql://swreg@127.0.0.1:{free_port()}/nothing")  # nothing listens
    service = OcspService(
        database, hosts=FetchHosts.parse("127.0.0.1"), timeout=TIMEOUT, max_age=MAX_AGE
    )
    try:
        with pytest.raises(EnvironmentProblem) as info:
            service.ocsp_status(pki.issue_person().certificate, moica.certificate, now=NOW)
        assert info.value.code is ErrorCode.DATABASE_UNAVAILABLE
    finally:
        database.dispose()


def test_one_fetcher_per_service_until_closed(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    cards = [pki.issue_person(ocsp_url=url(port)) for _ in range(3)]
    responder(port, good=cards)
    made: list[Fetcher] = []

    def factory(hosts: FetchHosts) -> Fetcher:
        made.append(Fetcher(hosts))
        return made[-1]

    service = OcspService(
        setup.app.database, hosts=setup.settings.fetch_hosts, timeout=TIMEOUT, max_age=MAX_AGE,
        fetcher=factory,
    )  # fmt: skip
    for card in cards[:2]:
        answer = service.ocsp_status(card.certificate, moica.certificate, now=setup.clock.now())
        assert (answer.status, answer.source) == (OcspStatus.GOOD, OcspSource.NETWORK)
    assert len(made) == 1  # its connections and TLS context serve every request
    service.close()
    answer = service.ocsp_status(cards[2].certificate, moica.certificate, now=setup.clock.now())
    assert (answer.status, answer.source) == (OcspStatus.GOOD, OcspSource.NETWORK)
    assert len(made) == 2  # closed: the next request made another
    service.close()


def test_threads_read_the_cache_through_one_service_at_once(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card])
    first = setup.status(card, moica)
    found: list[tuple[OcspStatus, OcspSource, bytes]] = []
    failures: list[BaseException] = []

    def read() -> None:  # pooled connections (and the cursor each keeps) change threads
        try:
            for _ in range(50):
                answer = setup.status(card, moica)
                found.append((answer.status, answer.source, answer.der))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert found == [(OcspStatus.GOOD, OcspSource.CACHE, first.der)] * 200
    assert len(setup.fetches.posts) == 1
