"""Attacks on the revocation check (issue 14, DESIGN.md §4a), each written as the test that would
show the hole: real OpenSSL responders (``openssl ocsp``), a real local HTTP server publishing
CRLs, the portal through FastAPI's TestClient, and CRLs / OCSP answers forged or relayed the way
an attacker (or a confused CA) would.

Each test is an attack that must keep failing: a forged or misdirected CRL or OCSP answer, a card
that would make the server fetch what it must not (or fetch again and again), a refusal that
would leave a row behind, a revocation that would not reach Turnkey.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import select

from engine import CertificateError, ErrorCode, ImportKind, IssuerCA, SwregError
from engine._settings import RevocationPolicy
from engine.services.turnkey import TurnkeyVerifier
from engine.store import CRL, Account, AuditEntry, CrlSource, OcspAttempt, Registration
from engine.testing import IssuedCard, TestCA, TestPKI
from engine.testing.http_server import LocalHTTPServer
from engine.testing.ocsp import OcspResponder, Revocation, issue_ocsp_signer
from engine.testing.ports import free_port

from .conftest import PERSON_ANSWERS
from .helpers import audit_events, certificates, enrol, rows
from .revocation_support import (
    GRACE,
    NOW,
    Portal,
    PortalFactory,
    Responder,
    card_tried,
    der,
    fresh_crl,
    moica,
    ocsp_url,
    pki,
    portal,
    responder,
    response_tried,
)
from .test_api import csrf, error, signed
from .test_customs import activate_and_login
from .test_turnkey import UBN, register

__all__ = ["moica", "pki", "portal", "responder"]  # fixtures used here

_SHA256 = hashes.SHA256()
_OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}

SiteFactory = PortalFactory


@pytest.fixture
def site(portal: PortalFactory) -> SiteFactory:
    """``site(policy=..., crls=[...], fetch_hosts=..., root_crls=...)``: the portal of
    :mod:`tests.revocation_support` (an app trusting the test PKI, with the roots' CRLs unless
    ``root_crls=False`` and the CRLs given), under the name these attacks give it."""
    return portal


# -- material -----------------------------------------------------------------------------------


def other_generation(pki: TestPKI, ca: TestCA) -> TestCA:
    """Another generation of ``ca`` (MOICA G2 next to G3): the same DN, its own key, issued by
    the same root — a CA the site trusts too."""
    key = pki.lookalike_ca(ca.family or IssuerCA.MOICA).key
    root = pki.root
    certificate = (
        x509.CertificateBuilder()
        .subject_name(ca.name)
        .issuer_name(root.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),  # type: ignore[arg-type]
            False,
        )
        .sign(root.key, _SHA256)
    )
    return TestCA(certificate, key, ca.family)


def trust_ca(portal: Portal, ca: TestCA) -> None:
    portal.app.trust.add_certificate(
        ca.certificate.public_bytes(serialization.Encoding.DER), anchor=False, actor="test"
    )


def scoped(
    *, users: bool = False, cas: bool = False, partition: tuple[str, ...] = ()
) -> x509.IssuingDistributionPoint:
    names = [x509.UniformResourceIdentifier(u) for u in partition] or None
    return x509.IssuingDistributionPoint(names, None, users, cas, None, False, False)


def make_crl(
    signer: TestCA,
    *,
    number: int,
    revoked: tuple[tuple[int, x509.ReasonFlags | None], ...] = (),
    idp: x509.IssuingDistributionPoint | None = None,
    name: x509.Name | None = None,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``signer`` (named ``name``, by default the signer's own), its AKI the
    signer's key."""
    last = this_update or NOW
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name or signer.name)
        .last_update(last)
        .next_update(next_update or NOW + timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if idp is not None:
        builder = builder.add_extension(idp, critical=True)
    for serial, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(signer.key, _SHA256)


def serial(card: IssuedCard) -> int:
    return card.certificate.serial_number


# -- CRLs: whose key, which scope -----------------------------------------------------------------


def test_a_crl_of_another_generation_of_the_ca_does_not_answer_for_its_cards(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    """MOICA G2 and G3 share a DN: G2's CRL (trusted, fresh, empty) must not make a G3 card
    ``good``, nor G2 listing the same serial make it ``revoked``."""
    g2 = other_generation(pki, moica)
    card = pki.issue_person()
    empty_g2 = make_crl(g2, number=50)
    portal = site(crls=())
    trust_ca(portal, g2)
    portal.app.trust.add_crl(der(empty_g2))
    _, response = portal.card_check(card)
    assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")

    portal.app.trust.add_crl(der(make_crl(g2, number=51, revoked=((serial(card), None),))))
    portal.app.trust.add_crl(der(fresh_crl(pki, moica)))  # G3's own: empty
    registration, response = portal.card_check(card)
    assert response.status_code == 200, response.text
    assert portal.evidence(registration)["revocation"]["crl_number"] == "7"


def test_a_crl_of_another_generation_at_the_cards_distribution_point_is_not_used(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    g2 = other_generation(pki, moica)
    with LocalHTTPServer() as server:
        url = server.url("/MOICA-G3-10-31.crl")
        card = pki.issue_person(crl_url=url)
        server.serve(
            "/MOICA-G3-10-31.crl", der(make_crl(g2, number=9, idp=scoped(partition=(url,))))
        )
        portal = site()
        trust_ca(portal, g2)
        _, response = portal.card_check(card)
        assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
        assert len(server.requests) == 1  # fetched, verified (G2 is trusted), of no use


@pytest.mark.parametrize("named", ["sibling", "issuer"])
def test_a_partition_crl_signed_by_a_sibling_ca_does_not_answer(
    site: SiteFactory, pki: TestPKI, moica: TestCA, named: str
) -> None:
    """MOEACA (trusted, same root) signs a CRL for the card's partition, under its own name or
    under MOICA's: neither says anything about MOICA's card."""
    moeaca = pki.ca(IssuerCA.MOEACA)
    with LocalHTTPServer() as server:
        url = server.url("/CRL_0064.crl")
        card = pki.issue_person(crl_url=url)
        name = moeaca.name if named == "sibling" else moica.name
        forged = make_crl(moeaca, number=99, idp=scoped(partition=(url,)), name=name)
        server.serve("/CRL_0064.crl", der(forged))
        portal = site()
        registration, response = portal.card_check(card)
        assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
        assert portal.evidence(registration) == {}


def test_a_ca_only_crl_does_not_make_a_card_good(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    portal = site(crls=(make_crl(moica, number=7, idp=scoped(cas=True)),))
    _, response = portal.card_check(pki.issue_person())
    assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")


def test_a_user_only_root_crl_does_not_make_an_issuing_ca_good(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    users_only = make_crl(pki.root, number=7, idp=scoped(users=True))
    portal = site(crls=(users_only, fresh_crl(pki, moica)), root_crls=False)
    card = pki.issue_person()
    _, response = portal.card_check(card)
    assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
    tried = response_tried(portal, card)["tried"]
    assert [(t["certificate"][:10], t["source"], t["status"]) for t in tried] == [
        ("certificat", "ocsp", "unknown"),
        ("certificat", "crl", "good"),
        ("issuing CA", "ocsp", "unknown"),
        ("issuing CA", "crl", "unknown"),
    ]


@pytest.mark.parametrize("policy", [RevocationPolicy.HARD, RevocationPolicy.SOFT])
def test_fetched_user_only_and_ca_only_crls_of_one_ca_are_both_kept(
    site: SiteFactory, pki: TestPKI, moica: TestCA, policy: RevocationPolicy
) -> None:
    """A CA publishing its end-entity CRL (onlyContainsUserCerts) and its ARL
    (onlyContainsCACerts), both without a partition name, from two URLs — as CAs do. The ARL's
    number is higher: storing it must not delete the user CRL and its revocations."""
    card = pki.issue_person()
    with LocalHTTPServer() as server:
        users = make_crl(moica, number=10, idp=scoped(users=True), revoked=((serial(card), None),))
        arl = make_crl(moica, number=11, idp=scoped(cas=True))
        server.serve("/users.crl", der(users))
        server.serve("/arl.crl", der(arl))
        portal = site(policy=policy)
        portal.app.revocation.add_source(server.url("/users.crl"))
        portal.app.revocation.add_source(server.url("/arl.crl"))
        report = portal.app.revocation.refresh()
        assert [(s.outcome, s.stored) for s in report.sources] == [
            ("fetched", True),
            ("fetched", True),
        ]
        _, response = portal.card_check(card)
        assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")
        stored = sorted(c.source_url or "" for c in rows(portal.app, CRL))
        assert stored == ["", "", server.url("/arl.crl"), server.url("/users.crl")]


@pytest.mark.parametrize("lifted", ["omitted", "remove_from_crl"])
def test_a_hold_refuses_the_card_and_the_next_crl_lifts_it(
    site: SiteFactory, pki: TestPKI, moica: TestCA, lifted: str
) -> None:
    """CRL 8 holds the card; CRL 9 lifts it by leaving it out, or by a removeFromCRL entry
    (delta-CRL style, seen in base CRLs too): neither is a final revocation."""
    card = pki.issue_person()
    hold = x509.ReasonFlags.certificate_hold
    portal = site(crls=(make_crl(moica, number=8, revoked=((serial(card), hold),)),))
    _, response = portal.card_check(card)
    assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")
    removal = ((serial(card), x509.ReasonFlags.remove_from_crl),) if lifted != "omitted" else ()
    portal.app.trust.add_crl(der(make_crl(moica, number=9, revoked=removal)))
    registration, response = portal.card_check(card)
    assert response.status_code == 200, response.text
    assert portal.evidence(registration)["revocation"]["crl_number"] == "9"


def test_a_hold_in_a_stale_crl_does_not_refuse_but_a_revocation_does(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    held, revoked = pki.issue_person(), pki.issue_person()
    stale = make_crl(
        moica,
        number=8,
        revoked=((serial(held), x509.ReasonFlags.certificate_hold), (serial(revoked), None)),
        this_update=NOW - timedelta(days=3),
        next_update=NOW - GRACE - timedelta(minutes=1),
    )
    portal = site(crls=(stale,))
    _, response = portal.card_check(held)
    assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
    _, response = portal.card_check(revoked)
    assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")


# -- OCSP: answers about something else, from someone else, from the future -----------------------


def _nonce(body: bytes) -> bytes | None:
    request = ocsp.load_der_ocsp_request(body)
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def crafted_answer(
    signer: TestCA,
    card: IssuedCard,
    issuer: x509.Certificate,
    *,
    this_update: timedelta = timedelta(0),
) -> Callable[[bytes, dict[str, str]], tuple[int, str, bytes]]:
    """A POST handler answering ``good`` about ``card``'s serial with ``issuer``'s CertID hashes,
    signed by ``signer``'s key, the request's nonce echoed, thisUpdate shifted by
    ``this_update``."""

    def handle(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        asked = ocsp.load_der_ocsp_request(body)
        # cryptography hashes the CertID from ``issuer`` alone: any issuer gives its hashes
        probe = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(card.certificate, issuer, hashes.SHA1())
            .build()
        )
        name_hash, key_hash = probe.issuer_name_hash, probe.issuer_key_hash
        now = datetime.now(UTC).replace(microsecond=0) + this_update
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=asked.serial_number,
                algorithm=hashes.SHA1(),
                cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=now,
                next_update=now + timedelta(hours=1),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.NAME, signer.certificate)
        )
        nonce = _nonce(body)
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        answer = builder.sign(signer.key, _SHA256)  # type: ignore[arg-type]
        return 200, "application/ocsp-response", answer.public_bytes(serialization.Encoding.DER)

    return handle


def relay_about(upstream: str, other: IssuedCard, issuer: x509.Certificate) -> Any:
    """A POST handler that asks the genuine responder about ``other`` (same CA) with the
    request's own nonce, and relays the genuine, signed answer."""

    def handle(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        builder = ocsp.OCSPRequestBuilder().add_certificate(
            other.certificate, issuer, hashes.SHA1()
        )
        nonce = _nonce(body)
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        request = builder.build().public_bytes(serialization.Encoding.DER)
        reply = httpx.post(upstream, content=request, headers=_OCSP_REQUEST, timeout=5)
        return reply.status_code, "application/ocsp-response", reply.content

    return handle


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("control", None),
        ("other_serial", "cert_id_mismatch"),
        ("other_issuer", "cert_id_mismatch"),
        ("signed_by_other_generation", "signature_invalid"),
        ("delegated_by_other_generation", "responder_not_issued_by_ca"),
        ("this_update_in_the_future", "not_yet_valid"),
    ],
)
def test_an_ocsp_answer_not_about_this_card_from_its_ca_now_is_not_believed(
    site: SiteFactory,
    pki: TestPKI,
    moica: TestCA,
    responder: Responder,
    case: str,
    problem: str | None,
) -> None:
    """Everything arrives at the card's own AIA URL (the attacker sits on the plain-HTTP path);
    no MOICA CRL is loaded, so only a believed OCSP answer can make the card good."""
    g2 = other_generation(pki, moica)
    with LocalHTTPServer() as server:
        card = pki.issue_person(ocsp_url=server.url("/ocsp"))
        if case == "control":  # the crafting harness is sound: MOICA's own answer is believed
            server.answer_posts("/ocsp", crafted_answer(moica, card, moica.certificate))
        elif case == "other_serial":
            other = pki.issue_person()
            genuine = responder(free_port(), good=[other])
            server.answer_posts("/ocsp", relay_about(genuine.url, other, moica.certificate))
        elif case == "other_issuer":  # MOICA's key, the card's serial, MOEACA's CertID hashes
            moeaca = pki.ca(IssuerCA.MOEACA)
            server.answer_posts("/ocsp", crafted_answer(moica, card, moeaca.certificate))
        elif case == "signed_by_other_generation":  # OpenSSL, signing with G2 (same DN)
            genuine = responder(free_port(), good=[card], signer=g2)
            server.answer_posts("/ocsp", _forward(genuine.url))
        elif case == "delegated_by_other_generation":  # an OCSPSigning cert issued by G2
            delegate = issue_ocsp_signer(pki, moica, issuer=g2)
            genuine = responder(free_port(), good=[card], signer=delegate)
            server.answer_posts("/ocsp", _forward(genuine.url))
        else:
            server.answer_posts(
                "/ocsp",
                crafted_answer(moica, card, moica.certificate, this_update=timedelta(hours=1)),
            )
        portal = site()
        trust_ca(portal, g2)
        registration, response = portal.card_check(card)
        if problem is None:
            assert response.status_code == 200, response.text
            assert portal.evidence(registration)["revocation"]["source"] == "ocsp"
            return
        assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
        assert portal.evidence(registration) == {}
        tried = card_tried(response_tried(portal, card))
        assert (tried[0]["source"], tried[0]["problem"]) == ("ocsp", problem)


def _forward(upstream: str) -> Any:
    def handle(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        reply = httpx.post(upstream, content=body, headers=_OCSP_REQUEST, timeout=5)
        return reply.status_code, "application/ocsp-response", reply.content

    return handle


# -- SSRF: what a trusted card can make the server fetch ------------------------------------------


@pytest.mark.parametrize(
    "case", ["loopback_not_allowed", "userinfo", "ipv6_loopback", "ipv4_mapped"]
)
def test_a_card_cannot_make_the_server_fetch_outside_the_allowed_hosts(
    site: SiteFactory, pki: TestPKI, case: str
) -> None:
    """Soft policy, so the card is accepted and its evidence shows what was (not) fetched."""
    with LocalHTTPServer() as server:
        port = server.port
        hosts = "127.0.0.1"
        if case == "loopback_not_allowed":
            hosts = "*.gov.tw"
            crl, responder = server.url("/x.crl"), server.url("/ocsp")
            outcome = "host_not_allowed"
        elif case == "userinfo":
            crl = f"http://moica.nat.gov.tw:x@127.0.0.1:{port}/x.crl"
            responder = f"http://moica.nat.gov.tw@127.0.0.1:{port}/ocsp"
            outcome = "url_not_allowed"
        elif case == "ipv6_loopback":
            crl, responder = f"http://[::1]:{port}/x.crl", f"http://[::1]:{port}/ocsp"
            outcome = "host_not_allowed"
        else:
            crl = f"http://[::ffff:127.0.0.1]:{port}/x.crl"
            responder = f"http://[::ffff:127.0.0.1]:{port}/ocsp"
            outcome = "host_not_allowed"
        server.serve("/x.crl", b"not a crl")
        server.answer_posts("/ocsp", lambda body, headers: (500, "text/plain", b"no"))
        card = pki.issue_person(crl_url=crl, ocsp_url=responder)
        portal = site(policy=RevocationPolicy.SOFT, fetch_hosts=hosts)
        registration, response = portal.card_check(card)
        assert response.status_code == 200, response.text
        tried = card_tried(portal.evidence(registration)["revocation"])
        assert [(t["source"], t.get("problem"), t.get("fetched")) for t in tried] == [
            ("ocsp", outcome, None),
            ("crl", "no_crl", outcome),
        ]
        assert server.requests == []
        assert rows(portal.app, CrlSource) == []
        assert rows(portal.app, OcspAttempt) == []


def test_cert_inspect_of_an_untrusted_certificate_fetches_nothing(
    site: SiteFactory, pki: TestPKI
) -> None:
    forger = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=True)
    with LocalHTTPServer() as server:
        server.serve("/x.crl", b"")
        card = pki.issue_person(
            issuer=forger, crl_url=server.url("/x.crl"), ocsp_url=server.url("/ocsp")
        )
        portal = site()
        shown = portal.app.inspect_certificate(card.der())
        assert shown["status"] == "untrusted"
        assert server.requests == []
        assert rows(portal.app, CrlSource) == []


def test_a_login_attempt_without_the_cards_key_makes_the_server_ask_no_responder(
    site: SiteFactory, pki: TestPKI
) -> None:
    """Anyone may hold a copy of someone's (public) card certificate. Without its key, a login
    attempt must not make the server talk to the network on the attacker's behalf: the
    signature over the challenge is checked before the revocation check (which, for an answer
    that stays unknown, asks the responder again on every attempt)."""
    with LocalHTTPServer() as server:
        server.answer_posts("/ocsp", lambda body, headers: (503, "text/plain", b"busy"))
        victim = pki.issue_person(ocsp_url=server.url("/ocsp"))
        impostor = pki.issue_person()  # any key but the victim's
        portal = site(crls=(fresh_crl(pki, pki.ca(IssuerCA.MOICA)),))
        with portal.client() as client:
            headers = csrf(client)
            for _ in range(3):
                challenge = client.post("/api/login/challenge", headers=headers).json()
                body = signed(victim, challenge)
                body["signature"] = signed(impostor, challenge)["signature"]
                response = client.post("/api/login", json=body, headers=headers)
                assert (response.status_code, error(response)["code"]) == (
                    422,
                    "signature_invalid",
                ), response.text
        assert server.requests == []


# -- distribution points: cost and concurrency ----------------------------------------------------


def test_concurrent_checks_missing_one_crl_fetch_it_once(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    """Two card checks at once for a partition not stored yet: one download (the other waits
    for it), not one per request — a 256 MiB CRL fetched by every concurrent request is a
    cheap amplification."""
    with LocalHTTPServer(hang_seconds=2) as server:
        url = server.url("/CRL_0070.crl")
        server.serve(
            "/CRL_0070.crl", der(fresh_crl(pki, moica, partition=[url])), misbehaviour="hang"
        )
        cards = [pki.issue_person(crl_url=url) for _ in range(2)]
        portal = site()
        snapshot = portal.app.trust.snapshot()
        chains = [(c.certificate, moica.certificate, pki.root.certificate) for c in cards]
        start = threading.Barrier(2)

        def check(chain: tuple[x509.Certificate, ...]) -> None:
            start.wait()
            portal.app.revocation_checks.check(chain, snapshot=snapshot)

        threads = [threading.Thread(target=check, args=(chain,)) for chain in chains]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len([r for r in server.requests if r.path == "/CRL_0070.crl"]) == 1


def test_a_distribution_point_whose_crl_does_not_answer_is_not_downloaded_on_every_check(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    """The card's distribution point serves a genuine CRL of its CA — for another partition
    (a CA's mistake, or a path that serves one file for all). The fetch "succeeds", so it is
    not backed off like a failure (RETRY_AFTER): every card check with such a card downloads
    it again in full (the server gives no validators), up to 256 MiB and 60 s each — and the
    card check runs the revocation check before the signature, so no key is needed."""
    with LocalHTTPServer() as server:
        url = server.url("/CRL_0064.crl")
        other = server.url("/CRL_0065.crl")
        server.serve("/CRL_0064.crl", der(fresh_crl(pki, moica, partition=[other])))
        card = pki.issue_person(crl_url=url)
        portal = site()
        for _ in range(3):
            _, response = portal.card_check(card)
            assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
        assert len([r for r in server.requests if r.path == "/CRL_0064.crl"]) == 1


# -- what a refusal leaves, what soft marks -------------------------------------------------------


@pytest.mark.parametrize("code", ["certificate_revoked", "revocation_unknown"])
def test_a_refused_card_check_leaves_no_row_claiming_success(
    site: SiteFactory, pki: TestPKI, moica: TestCA, code: str
) -> None:
    card = pki.issue_person()
    crls = (fresh_crl(pki, moica, (card,)),) if code == "certificate_revoked" else ()
    portal = site(crls=crls)
    registration, response = portal.card_check(card)
    assert (response.status_code, error(response)["code"]) == (422, code)
    with portal.app.database.unit_of_work() as uow:
        row = uow.session.get(Registration, registration)
        assert row is not None
        assert (row.evidence or {}, row.certificate_der, row.certificate_fingerprint) == (
            {},
            None,
            None,
        )
        assert row.state == "card_check"
        events = list(uow.session.scalars(select(AuditEntry.event)))
    assert audit_events(portal.app, registration) == [  # up to the card check, nothing after
        ("start", None, "category"),
        ("next", "category", "card_check"),
    ]
    assert events.count("next") == 1 and "login" not in events
    assert certificates(portal.app) == []
    assert rows(portal.app, Account) == []


def test_soft_policy_marks_the_login_and_the_customs_import_audit_rows(
    site: SiteFactory, pki: TestPKI
) -> None:
    """No MOICA/TaiCA CRL, no responder: every status is unknown, accepted under ``soft``."""
    portal = site(policy=RevocationPolicy.SOFT)
    card = pki.issue_person()
    enrol(portal.app, "person.general", card, PERSON_ANSWERS)
    activate_and_login(portal.app, card, PERSON_ANSWERS["email"])
    [login] = portal.audit("login")
    assert login["revocation"] == {"status": "unknown", "source": "none", "policy": "soft"}
    customs = pki.issue_customs(UBN, "06")
    portal.app.customs.import_certificate(
        "shipping", {"ubn": UBN}, certificate=customs.der(), kind=ImportKind.NON_IC,
        signature_check=customs.sign,
    )  # fmt: skip
    [imported] = portal.audit("customs_import")
    assert imported["revocation"] == {"status": "unknown", "source": "none", "policy": "soft"}
    registered = [d for d in portal.audit("next") if "certificate" in d]  # the card check's
    assert registered and all(d["revocation"].get("policy") == "soft" for d in registered)


# -- a revoked CA, Turnkey -----------------------------------------------------------------------


def test_a_revoked_issuing_ca_is_refused_by_login_and_turnkey(
    site: SiteFactory, pki: TestPKI, moica: TestCA
) -> None:
    taica = pki.ca(IssuerCA.TAICA)
    portal = site(crls=(fresh_crl(pki, moica), fresh_crl(pki, taica)))
    card, customs = pki.issue_person(), pki.issue_customs(UBN)
    enrol(portal.app, "person.general", card, PERSON_ANSWERS)
    register(portal.app, customs)
    message = b"<Message/>"
    assert portal.app.turnkey.verify(UBN, message, customs.sign(message)).sender == UBN
    portal.app.trust.add_crl(der(pki.crl(pki.root, [moica.certificate], number=9)))
    portal.app.trust.add_crl(der(pki.crl(pki.twca_root, [taica.certificate], number=9)))
    with portal.client() as client:
        headers = csrf(client)
        challenge = client.post("/api/login/challenge", headers=headers).json()
        response = client.post("/api/login", json=signed(card, challenge), headers=headers)
    assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")
    portal.app.turnkey.forget()
    with pytest.raises(CertificateError) as caught:
        portal.app.turnkey.verify(UBN, message, customs.sign(message))
    assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED


def test_a_crl_stored_by_refresh_reaches_turnkey_at_its_next_recheck(
    site: SiteFactory, pki: TestPKI
) -> None:
    """No ``forget()``: the verifier must notice the new CRL by itself (its snapshot changes)."""
    taica = pki.ca(IssuerCA.TAICA)
    card = pki.issue_customs(UBN)
    with LocalHTTPServer() as server:
        server.serve("/taica.crl", der(fresh_crl(pki, taica, number=7)))
        portal = site()
        portal.app.revocation.add_source(server.url("/taica.crl"))
        assert portal.app.revocation.refresh().sources[0].stored
        register(portal.app, card)
        turnkey = TurnkeyVerifier(
            portal.app.database,
            portal.clock,
            portal.app.trust,
            portal.app.revocation_checks,
            recheck_interval=0,
        )
        message = b"<Message/>"
        assert turnkey.verify(UBN, message, card.sign(message)).sender == UBN
        server.serve("/taica.crl", der(fresh_crl(pki, taica, (card,), number=8)))
        assert portal.app.revocation.refresh().sources[0].stored
        with pytest.raises(CertificateError) as caught:
            turnkey.verify(UBN, message, card.sign(message))
        assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED


@pytest.mark.parametrize("forget", [True, False])
def test_an_ocsp_revocation_learnt_by_refresh_reaches_turnkey(
    site: SiteFactory, pki: TestPKI, tmp_path: Path, forget: bool
) -> None:
    """The window: a good answer is cached until its nextUpdate (3 h here) and ``refresh``
    renews it only within SWREG_OCSP_MAX_AGE (1 h) of that — until then every check keeps it
    (by DESIGN.md §4a). Once ``refresh`` has learnt and stored the revocation, a card check
    refuses at once; Turnkey must too, without anyone calling ``forget()`` (``forget=True`` is
    the control). A verifier that rechecks on every message isolates the OCSP cache from
    ``recheck_interval``."""
    taica = pki.ca(IssuerCA.TAICA)
    port = free_port()
    card = pki.issue_customs(UBN, ocsp_url=ocsp_url(port))
    good = OcspResponder(
        tmp_path / "good", taica, port=port, good=[card], next_update=timedelta(hours=3)
    )
    good.start()
    try:
        portal = site()
        register(portal.app, card)
        report = portal.app.revocation.refresh()
        assert [o.status for o in report.ocsp] == ["good"]
    finally:
        good.stop()
    turnkey = TurnkeyVerifier(
        portal.app.database,
        portal.clock,
        portal.app.trust,
        portal.app.revocation_checks,
        recheck_interval=0,
    )
    revoked = OcspResponder(
        tmp_path / "revoked",
        taica,
        port=port,
        revoked=[Revocation(card, NOW - timedelta(hours=1))],
        next_update=timedelta(hours=5),  # still current once the clock has moved 2 h on
    )
    revoked.start()
    try:
        report = portal.app.revocation.refresh()  # not due: 3 h > 1 h margin
        assert [(o.status, o.source) for o in report.ocsp] == [("good", "cache")]
        message = b"<Message/>"
        assert turnkey.verify(UBN, message, card.sign(message)).sender == UBN
        portal.clock.advance(timedelta(hours=2, minutes=1))  # within the margin now
        report = portal.app.revocation.refresh()
        assert [(o.status, o.source) for o in report.ocsp] == [("revoked", "network")]
        shown = portal.app.inspect_certificate(card.der())["revocation"]
        assert (shown["status"], shown["source"]) == ("revoked", "ocsp")  # the checks know
        if forget:
            turnkey.forget()
        with pytest.raises(SwregError) as caught:
            turnkey.verify(UBN, message, card.sign(message))
        assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED
    finally:
        revoked.stop()
