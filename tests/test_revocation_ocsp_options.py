"""The per-call options of :meth:`OcspService.ocsp_status` (DESIGN.md §4a), against OpenSSL's own
responder (``openssl ocsp``, :mod:`engine.testing.ocsp`): the cache only (``network=False``, as
Turnkey asks), a responder configured for the CA instead of the certificate's own, a required
nonce (against a real responder that does not echo it), a CA's own cache lifetime, and renewal
before an answer runs out (``renew_within``, as ``swreg revocation refresh`` asks).

OpenSSL's responder echoes the nonce of every request that carries one (``apps/ocsp.c`` copies
it unconditionally; ``-nonce``/``-no_nonce`` are client options). A responder that does not echo
it — a CDN serving pre-signed answers, or a replay — is made real by a proxy on the local HTTP
server that strips the nonce from the request before OpenSSL answers it
(:func:`tests.revocation_support.strip_nonce`).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from engine.pki.ocsp import OcspStatus
from engine.services.ocsp import NOT_CACHED, OcspSource
from engine.testing import TestCA, TestPKI
from engine.testing.http_server import LocalHTTPServer
from engine.testing.ocsp import Revocation
from engine.testing.ports import free_port

from .revocation_support import (
    MAX_AGE,
    NOW,
    OcspSetup,
    Responder,
    moica,
    pki,
    responder,
    setup,
    strip_nonce,
)
from .revocation_support import ocsp_url as url

__all__ = ["moica", "pki", "responder", "setup"]  # fixtures used here


# -- network=False: the cache only ---------------------------------------------------------------


def test_the_cache_only_never_asks_the_network_nor_records_anything(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, good=[card])
    nothing = setup.status(card, moica, network=False)
    assert (nothing.status, nothing.source, nothing.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NONE,
        NOT_CACHED,
    )
    assert nothing.url == url(port) and nothing.der == b""
    assert setup.fetches.posts == [] and setup.ocsp.responders() == []
    assert setup.cached_rows() == 0

    asked = setup.status(card, moica)  # a check that may wait on the network fills the cache
    assert (asked.status, asked.source) == (OcspStatus.GOOD, OcspSource.NETWORK)
    cached = setup.status(card, moica, network=False)
    assert (cached.status, cached.source, cached.problem) == (
        OcspStatus.GOOD,
        OcspSource.CACHE,
        None,
    )
    assert cached.der == asked.der and cached.checked_at == asked.checked_at

    assert asked.cache_until is not None
    setup.clock.set(asked.cache_until)  # run out: the cache-only question finds nothing
    gone = setup.status(card, moica, network=False)
    assert (gone.status, gone.source, gone.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NONE,
        NOT_CACHED,
    )
    assert setup.fetches.posts == [url(port)]  # the one request of the check that could wait


def test_the_cache_only_still_answers_a_final_revocation(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    revoked_at = NOW - timedelta(hours=2)
    responder(port, revoked=[Revocation(card, revoked_at, x509.ReasonFlags.key_compromise)])
    assert setup.status(card, moica).status is OcspStatus.REVOKED
    setup.clock.advance(timedelta(days=30))
    answer = setup.status(card, moica, network=False)
    assert (answer.status, answer.source, answer.revoked_at) == (
        OcspStatus.REVOKED,
        OcspSource.CACHE,
        revoked_at,
    )


# -- url: the responder configured for the CA ----------------------------------------------------


def test_a_configured_responder_is_asked_instead_of_the_certificates_own(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    dead = free_port()  # the certificate's own responder: nothing listens there
    card, bare = pki.issue_person(ocsp_url=url(dead)), pki.issue_person()  # bare names none
    running = responder(good=[card, bare])
    for each in (card, bare):
        answer = setup.status(each, moica, url=running.url)
        assert (answer.status, answer.source, answer.url) == (
            OcspStatus.GOOD,
            OcspSource.NETWORK,
            running.url,
        )
    assert setup.fetches.posts == [running.url, running.url]
    assert [r.url for r in setup.ocsp.responders()] == [running.url]


@pytest.mark.parametrize(
    ("configured", "problem"),
    [
        ("http://ocsp.example.org/", "host_not_allowed"),  # not in SWREG_FETCH_HOSTS
        ("http://localhost:9/", "host_not_allowed"),  # loopback by another name: not listed
        ("file:///etc/passwd", "url_not_allowed"),  # not http(s)
        ("http://user:pw@127.0.0.1/", "url_not_allowed"),  # credentials in the URL
        ("http://127.0.0.1/" + "a" * 2100, "url_not_allowed"),  # longer than the column
    ],
)
def test_a_configured_responder_goes_through_the_allow_list(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, configured: str, problem: str
) -> None:
    answer = setup.status(pki.issue_person(), moica, url=configured)
    assert (answer.status, answer.source, answer.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NONE,
        problem,
    )
    assert setup.fetches.posts == [] and setup.ocsp.responders() == []


# -- require_nonce ---------------------------------------------------------------------------------


def test_a_required_nonce_refuses_an_answer_that_does_not_echo_it(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    card, other = pki.issue_person(), pki.issue_person()
    running = responder(good=[card, other])
    with LocalHTTPServer() as proxy:
        proxy.answer_posts("/ocsp", strip_nonce(running.url))
        quiet = proxy.url("/ocsp")
        refused = setup.status(card, moica, url=quiet, require_nonce=True)
        assert (refused.status, refused.source, refused.problem) == (
            OcspStatus.UNKNOWN,
            OcspSource.NETWORK,
            "nonce_missing",
        )
        assert refused.der  # the answer itself, signed by the CA: only its nonce is missing
        assert ocsp.load_der_ocsp_request(
            proxy.requests[-1].body
        ).extensions.get_extension_for_class(x509.OCSPNonce)  # we did send one
        assert setup.cached_rows() == 0  # refused: not cached
        [attempt] = setup.ocsp.responders()
        assert (attempt.reachable, attempt.last_error) == (True, "nonce_missing")

        # not required: the same real answer without an echoed nonce is believed
        believed = setup.status(card, moica, url=quiet)
        assert (believed.status, believed.problem) == (OcspStatus.GOOD, None)

    # OpenSSL itself echoes the nonce: required and present
    echoed = setup.status(other, moica, url=running.url, require_nonce=True)
    assert (echoed.status, echoed.source, echoed.problem) == (
        OcspStatus.GOOD,
        OcspSource.NETWORK,
        None,
    )
    response = ocsp.load_der_ocsp_response(echoed.der)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce


# -- max_age: the CA's own cache lifetime ----------------------------------------------------------


def test_a_cas_max_age_replaces_the_setting_for_answers_without_next_update(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    short = timedelta(minutes=2)
    card, other = pki.issue_person(), pki.issue_person()
    running = responder(good=[card, other], next_update=None)
    first = setup.status(card, moica, url=running.url, max_age=short)
    assert first.cache_until == first.checked_at + short  # not SWREG_OCSP_MAX_AGE (10 min)
    setup.clock.advance(short - timedelta(seconds=1))  # 1 second before: cached
    assert setup.status(card, moica, url=running.url, max_age=short).source is OcspSource.CACHE
    setup.clock.advance(timedelta(seconds=1))  # at cache_until: asked again
    assert setup.status(card, moica, url=running.url, max_age=short).source is OcspSource.NETWORK

    # an answer cached under the 10-minute setting is not kept past a CA's shorter lifetime
    assert setup.status(other, moica, url=running.url).cache_until == (setup.clock.now() + MAX_AGE)
    setup.clock.advance(timedelta(minutes=3))
    assert setup.status(other, moica, url=running.url).source is OcspSource.CACHE
    again = setup.status(other, moica, url=running.url, max_age=short)
    assert (again.status, again.source) == (OcspStatus.GOOD, OcspSource.NETWORK)
    assert setup.status(other, moica, network=False, max_age=short).source is OcspSource.CACHE
    assert len(setup.fetches.posts) == 4


# -- renew_within: refresh asks before the answer runs out -----------------------------------------


def test_renew_within_asks_again_before_the_answer_runs_out_and_keeps_it_when_that_fails(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    running = responder(port, good=[card], next_update=timedelta(hours=1))
    margin = timedelta(minutes=30)
    first = setup.status(card, moica, renew_within=margin)
    assert (first.source, first.problem) == (OcspSource.NETWORK, None)
    assert first.cache_until is not None

    # good for an hour: more than the margin, nothing asked
    assert setup.status(card, moica, renew_within=margin).source is OcspSource.CACHE
    assert len(setup.fetches.posts) == 1

    setup.clock.set(first.cache_until - margin + timedelta(seconds=1))  # runs out within it
    assert setup.status(card, moica).source is OcspSource.CACHE  # a check does not renew
    assert setup.status(card, moica, network=False, renew_within=margin).source is (
        OcspSource.CACHE
    )  # nor does a cache-only question
    renewed = setup.status(card, moica, renew_within=margin)
    assert (renewed.status, renewed.source, renewed.problem) == (
        OcspStatus.GOOD,
        OcspSource.NETWORK,
        None,
    )
    assert renewed.checked_at == setup.clock.now() and renewed.der != first.der
    assert len(setup.fetches.posts) == 2

    running.stop()  # the responder goes down before the new answer runs out
    assert renewed.cache_until is not None
    setup.clock.set(renewed.cache_until - timedelta(minutes=5))
    kept = setup.status(card, moica, renew_within=margin)
    assert (kept.status, kept.source, kept.problem) == (
        OcspStatus.GOOD,
        OcspSource.CACHE,
        "connection_error",
    )
    assert (
        kept.renewal_failed
        and kept.der == renewed.der
        and kept.cache_until == (renewed.cache_until)
    )
    assert setup.status(card, moica, network=False).problem is None  # the cache is untouched
    assert setup.cached_rows() == 1

    setup.clock.set(renewed.cache_until)  # run out, and the responder still down: unknown
    lost = setup.status(card, moica, renew_within=margin)
    assert (lost.status, lost.source, lost.problem) == (
        OcspStatus.UNKNOWN,
        OcspSource.NETWORK,
        "connection_error",
    )
    assert not lost.renewal_failed


def test_renew_within_never_asks_again_about_a_final_revocation(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=url(port))
    responder(port, revoked=[Revocation(card, NOW - timedelta(hours=1))])
    assert setup.status(card, moica).status is OcspStatus.REVOKED
    again = setup.status(card, moica, renew_within=timedelta(days=365))
    assert (again.status, again.source) == (OcspStatus.REVOKED, OcspSource.CACHE)
    assert len(setup.fetches.posts) == 1
