"""The one revocation check of every certificate check (DESIGN.md §4a), end to end: the portal's
card check, card login, ``swreg cert inspect --json`` and Turnkey, against OpenSSL's own OCSP
responder (``openssl ocsp``) and a real local HTTP server publishing CRLs.

Each case is judged by what a user sees (the exact error code) and by what is stored: nothing
for a refusal, the OCSP response or the CRL number as ``evidence.revocation`` for an acceptance,
and ``policy: soft`` in the evidence and the audit row when an unknown status was accepted.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from sqlalchemy import delete

from engine import CertificateError, ErrorCode, IssuerCA
from engine._settings import RevocationPolicy
from engine.store import CRL, CrlSource, OcspResponse
from engine.testing import TestCA, TestPKI
from engine.testing.http_server import LocalHTTPServer
from engine.testing.ocsp import Revocation, issue_ocsp_signer
from engine.testing.ports import free_port

from .conftest import PERSON_ANSWERS
from .helpers import certificates, enrol, rows
from .revocation_support import (
    GRACE,
    NOW,
    Portal,
    PortalFactory,
    Responder,
    card_tried,
    cli,
    der,
    fresh_crl,
    moica,
    ocsp_url,
    pki,
    portal,
    responder,
    response_tried,
    strip_nonce,
)
from .test_api import csrf, error, signed
from .test_turnkey import UBN, register

__all__ = ["moica", "pki", "portal", "responder"]  # fixtures used here

REVOKED_AT = NOW - timedelta(hours=3)
_SHA256 = hashes.SHA256()


# -- OCSP through the portal's card check ---------------------------------------------------------


def test_a_good_ocsp_answer_is_stored_as_the_evidence(
    portal: PortalFactory, pki: TestPKI, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=ocsp_url(port))
    responder(port, good=[card])
    site = portal()
    registration, response = site.card_check(card)
    assert response.status_code == 200, response.text
    evidence = site.evidence(registration)["revocation"]
    assert (
        evidence["status"],
        evidence["source"],
        evidence.get("policy"),
    ) == (
        "good",
        "ocsp",
        None,
    )
    answer = ocsp.load_der_ocsp_response(base64.b64decode(evidence["ocsp_response"]))
    assert answer.serial_number == card.certificate.serial_number
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert evidence["tried"][0] == {
        "certificate": f"certificate {card.certificate.serial_number:X}",
        "source": "ocsp",
        "url": ocsp_url(port),
        "status": "good",
        "problem": None,
        "cached": False,
    }
    audited = site.audit("next")[-1]["revocation"]
    assert audited == {"status": "good", "source": "ocsp"}  # the response is kept as evidence


def test_a_revoked_card_is_refused_with_nothing_stored(
    portal: PortalFactory, pki: TestPKI, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=ocsp_url(port))
    responder(port, revoked=[Revocation(card, REVOKED_AT)])
    site = portal(crls=(fresh_crl(pki, pki.ca(IssuerCA.MOICA)),))  # the CRL says good: OCSP wins
    registration, response = site.card_check(card)
    assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")
    assert site.evidence(registration) == {}
    assert certificates(site.app) == []


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("delegated", None),
        ("not_known", "revocation_unknown"),
        ("wrong_responder", "revocation_unknown"),
        ("responder_of_another_ca", "revocation_unknown"),
        ("stale", "revocation_unknown"),
        ("down", "revocation_unknown"),
        ("hangs", "revocation_unknown"),
        ("replayed", "revocation_unknown"),
    ],
)
def test_ocsp_answers_that_are_not_believed_leave_the_status_unknown(
    portal: PortalFactory,
    pki: TestPKI,
    moica: TestCA,
    responder: Responder,
    case: str,
    code: str | None,
) -> None:
    """No CRL of MOICA is loaded: only OCSP can answer, and under ``hard`` it must be believed."""
    port = free_port()
    card = pki.issue_person(ocsp_url=ocsp_url(port))
    site = portal()
    server: LocalHTTPServer | None = None
    if case == "delegated":
        responder(port, good=[card], signer=issue_ocsp_signer(pki, moica))
    elif case == "not_known":
        responder(port, good=[])
    elif case == "wrong_responder":
        responder(port, good=[card], signer=issue_ocsp_signer(pki, moica, ocsp_signing=False))
    elif case == "responder_of_another_ca":
        other = pki.ca(IssuerCA.MOEACA)
        responder(port, good=[card], signer=issue_ocsp_signer(pki, other))
    elif case == "stale":
        responder(port, good=[card], next_update=timedelta(minutes=1))
        site.clock.advance(timedelta(minutes=10))
    elif case == "hangs":
        server = LocalHTTPServer().start()
        server.answer_posts("/", _hang)
        card = pki.issue_person(ocsp_url=server.url("/"))
    elif case == "replayed":  # a genuine answer kept from an earlier request: not our nonce
        genuine = responder(port, good=[])
        server = LocalHTTPServer().start()
        kept: list[bytes] = []

        def relay(body: bytes, headers: object) -> tuple[int, str, bytes]:
            if not kept:
                kept.append(httpx.post(genuine.url, content=body, headers=_OCSP_REQUEST).content)
            return 200, "application/ocsp-response", kept[0]

        server.answer_posts("/", relay)
        card = pki.issue_person(ocsp_url=server.url("/"))
        genuine.stop()
        responder(port, good=[card])  # the same responder, now knowing the card
        first = site.app.ocsp.ocsp_status(card.certificate, moica.certificate, now=site.clock.now())
        assert first.status.value == "good"  # the relay's first answer is believed...
        _forget_ocsp(site)  # ...and the next request gets the same bytes again
    try:
        registration, response = site.card_check(card)
    finally:
        if server is not None:
            server.stop()
    if code is None:
        assert response.status_code == 200, response.text
        assert site.evidence(registration)["revocation"]["source"] == "ocsp"
    else:
        assert (response.status_code, error(response)["code"]) == (422, code), response.text
        assert site.evidence(registration) == {}


def _hang(body: bytes, headers: object) -> tuple[int, str, bytes]:
    time.sleep(3)  # three times SWREG_OCSP_TIMEOUT
    return 200, "application/ocsp-response", b""


def _forget_ocsp(site: Portal) -> None:
    with site.app.database.unit_of_work() as uow:
        uow.session.execute(delete(OcspResponse))
        uow.commit()


_OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


# -- unknown under each policy ------------------------------------------------------------------


def test_unknown_is_refused_under_hard_and_marked_under_soft(
    portal: PortalFactory, pki: TestPKI
) -> None:
    card = pki.issue_person(ocsp_url=ocsp_url(free_port()))  # nobody listens there
    hard = portal()
    registration, response = hard.card_check(card)
    assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
    assert hard.evidence(registration) == {}

    soft = portal(policy=RevocationPolicy.SOFT)
    registration, response = soft.card_check(card)
    assert response.status_code == 200, response.text
    evidence = soft.evidence(registration)["revocation"]
    assert (evidence["status"], evidence["source"], evidence["policy"]) == (
        "unknown",
        "none",
        "soft",
    )
    assert [t["source"] for t in card_tried(evidence)] == ["ocsp", "crl"]
    assert soft.audit("next")[-1]["revocation"] == {
        "status": "unknown",
        "source": "none",
        "policy": "soft",
    }


# -- CRLs ---------------------------------------------------------------------------------------


def test_a_fresh_crl_answers_when_the_card_names_no_responder(
    portal: PortalFactory, pki: TestPKI, moica: TestCA
) -> None:
    site = portal(crls=(fresh_crl(pki, moica),))
    registration, response = site.card_check(pki.issue_person())
    assert response.status_code == 200, response.text
    evidence = site.evidence(registration)
    assert (evidence["crl_number"], evidence["revocation"]["source"]) == ("7", "crl")


def test_a_stale_crl_is_unknown_but_its_revocations_still_count(
    portal: PortalFactory, pki: TestPKI, moica: TestCA
) -> None:
    revoked, other = pki.issue_person(), pki.issue_person()
    stale = fresh_crl(
        pki,
        moica,
        (revoked,),
        this_update=NOW - timedelta(days=2),
        next_update=NOW - GRACE - timedelta(seconds=1),
    )
    site = portal(crls=(stale,))
    _, response = site.card_check(other)
    assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
    _, response = site.card_check(revoked)
    assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")


def test_a_missing_crl_is_fetched_from_the_cards_distribution_point_once(
    portal: PortalFactory, pki: TestPKI, moica: TestCA
) -> None:
    with LocalHTTPServer() as server:
        url = server.url("/MOICA-G3-10-31.crl")
        card, later = pki.issue_person(crl_url=url), pki.issue_person(crl_url=url)
        server.serve(url.removeprefix(server.url("")), der(fresh_crl(pki, moica, partition=[url])))
        site = portal()
        registration, response = site.card_check(card)
        assert response.status_code == 200, response.text
        assert card_tried(site.evidence(registration)["revocation"])[-1]["fetched"] == "fetched"
        assert [(s.url, s.origin) for s in rows(site.app, CrlSource)] == [(url, "seen")]
        assert [c.source_url for c in rows(site.app, CRL)] == [None, None, url]
        requests = len(server.requests)
        _, response = site.card_check(later)  # answered by the stored partition
        assert response.status_code == 200, response.text
        assert len(server.requests) == requests


@pytest.mark.parametrize("fault", ["other_partition", "wrong_key", "truncate", "other_host"])
def test_a_distribution_point_that_does_not_answer_for_the_card_leaves_it_unknown(
    portal: PortalFactory, pki: TestPKI, moica: TestCA, fault: str
) -> None:
    with LocalHTTPServer() as server:
        url = server.url("/CRL_0064.crl")
        card = pki.issue_person(crl_url=url)
        path = "/CRL_0064.crl"
        if fault == "other_partition":
            other = server.url("/CRL_0065.crl")
            server.serve(path, der(fresh_crl(pki, moica, partition=[other])))
        elif fault == "wrong_key":
            forged = pki.lookalike_ca(IssuerCA.MOICA).key
            server.serve(path, der(fresh_crl(pki, moica, signing_key=forged)))
        elif fault == "truncate":
            server.serve(path, der(fresh_crl(pki, moica)), misbehaviour="truncate")
        else:
            server.redirect(path, server.url(path, host="localhost"))
        site = portal()
        registration, response = site.card_check(card)
        assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
        assert site.evidence(registration) == {}
        stored = [c.source_url for c in rows(site.app, CRL)]
        assert stored == [None, None] if fault != "other_partition" else stored[:2] == [None, None]


def test_an_issuing_ca_revoked_by_its_root_refuses_its_cards(
    portal: PortalFactory, pki: TestPKI, moica: TestCA
) -> None:
    site = portal(crls=(fresh_crl(pki, moica),))
    site.app.trust.add_crl(der(pki.crl(pki.root, [moica.certificate], number=9)))
    _, response = site.card_check(pki.issue_person())
    assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")


# -- per-CA settings ----------------------------------------------------------------------------


def test_a_crl_only_ca_is_never_asked_over_ocsp(
    portal: PortalFactory, pki: TestPKI, moica: TestCA, tmp_path: Path,
    responder: Responder,
) -> None:  # fmt: skip
    port = free_port()
    card = pki.issue_person(ocsp_url=ocsp_url(port))
    running = responder(port, revoked=[Revocation(card, REVOKED_AT)])
    fingerprint = moica.certificate.fingerprint(_SHA256).hex()
    config = tmp_path / "cas.toml"
    config.write_text(f'["{fingerprint}"]\nsources = ["crl"]\n', encoding="utf-8")
    site = portal(crls=(fresh_crl(pki, moica),), cas=str(config))
    registration, response = site.card_check(card)
    assert response.status_code == 200, response.text  # the CRL does not list it
    assert [t["source"] for t in card_tried(site.evidence(registration)["revocation"])] == ["crl"]
    log = running.log_path.read_text(encoding="utf-8", errors="replace")
    assert log.count("Received request") == 1  # the readiness probe of OcspResponder.start


def test_a_ca_that_requires_the_nonce_refuses_an_answer_without_it(
    portal: PortalFactory, pki: TestPKI, moica: TestCA, tmp_path: Path,
    responder: Responder,
) -> None:  # fmt: skip
    fingerprint = moica.certificate.fingerprint(_SHA256).hex()
    config = tmp_path / "cas.toml"
    config.write_text(f'["{fingerprint}"]\nocsp_nonce = "required"\n', encoding="utf-8")
    with LocalHTTPServer() as proxy:  # a responder (or a cache) that does not echo the nonce
        card = pki.issue_person(ocsp_url=proxy.url("/ocsp"))
        running = responder(free_port(), good=[card])
        proxy.answer_posts("/ocsp", strip_nonce(running.url))
        strict = portal(cas=str(config))
        registration, response = strict.card_check(card)
        assert (response.status_code, error(response)["code"]) == (422, "revocation_unknown")
        assert card_tried(response_tried(strict, card))[0]["problem"] == "nonce_missing"
        lenient = portal()  # the same database, no per-CA setting: the answer is believed
        registration, response = lenient.card_check(card)
        assert response.status_code == 200, response.text
        assert lenient.evidence(registration)["revocation"]["source"] == "ocsp"


# -- login, cert inspect, Turnkey ---------------------------------------------------------------


def test_card_login_with_a_card_revoked_since_registration_is_refused(
    portal: PortalFactory, pki: TestPKI, moica: TestCA
) -> None:
    card = pki.issue_person()
    site = portal(crls=(fresh_crl(pki, moica),))
    enrol(site.app, "person.general", card, PERSON_ANSWERS)
    site.app.trust.add_crl(der(fresh_crl(pki, moica, (card,), number=8)))
    with site.client() as client:
        headers = csrf(client)
        challenge = client.post("/api/login/challenge", headers=headers).json()
        response = client.post("/api/login", json=signed(card, challenge), headers=headers)
    assert (response.status_code, error(response)["code"]) == (422, "certificate_revoked")
    assert site.audit("login") == []


def test_a_card_login_keeps_the_ocsp_response_in_its_audit_row(
    portal: PortalFactory, pki: TestPKI, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=ocsp_url(port))
    responder(port, good=[card])
    site = portal()
    view = enrol(site.app, "person.general", card, PERSON_ANSWERS)
    assert view.account is not None
    site.app.accounts.activate(site.app.accounts.send_activation(view.account))
    with site.client() as client:
        headers = csrf(client)
        challenge = client.post("/api/login/challenge", headers=headers).json()
        response = client.post("/api/login", json=signed(card, challenge), headers=headers)
    assert response.status_code == 200, response.text
    [login] = site.audit("login")
    assert (login["revocation"]["status"], login["revocation"]["source"]) == ("good", "ocsp")
    answer = ocsp.load_der_ocsp_response(base64.b64decode(login["revocation"]["ocsp_response"]))
    assert answer.serial_number == card.certificate.serial_number


def test_cert_inspect_explains_the_revocation_status(
    portal: PortalFactory, pki: TestPKI, moica: TestCA, tmp_path: Path,
    responder: Responder,
) -> None:  # fmt: skip
    port = free_port()
    revoked = pki.issue_person(ocsp_url=ocsp_url(port))
    responder(port, revoked=[Revocation(revoked, REVOKED_AT)])
    good, unknown = pki.issue_person(), pki.issue_company("04595257")
    site = portal(crls=(fresh_crl(pki, moica),))
    shown = {}
    for name, card in {"revoked": revoked, "good": good, "unknown": unknown}.items():
        path = tmp_path / f"{name}.cer"
        path.write_bytes(card.der())
        code, shown[name] = cli(site, "cert", "inspect", str(path))
        assert code == 0, shown[name]
    assert shown["revoked"]["status"] == "revoked"
    assert {k: shown["revoked"]["revocation"][k] for k in ("status", "source", "reason")} == {
        "status": "revoked",
        "source": "ocsp",
        "reason": "key_compromise",
    }
    assert shown["revoked"]["revocation"]["revoked_at"] == REVOKED_AT.isoformat()
    assert (shown["good"]["status"], shown["good"]["revocation"]["source"]) == ("valid", "crl")
    assert shown["unknown"]["status"] == "revocation_unknown"  # no MOEACA CRL, no responder
    assert shown["unknown"]["revocation"]["status"] == "unknown"


def test_turnkey_reads_the_cached_status_only(portal: PortalFactory, pki: TestPKI) -> None:
    taica = pki.ca(IssuerCA.TAICA)
    site = portal(crls=(fresh_crl(pki, taica),))
    card = pki.issue_customs(UBN)
    register(site.app, card)
    message = b"<Message/>"
    assert site.app.turnkey.verify(UBN, message, card.sign(message)).fingerprint
    site.app.trust.add_crl(der(fresh_crl(pki, taica, (card,), number=8)))
    site.app.turnkey.forget()
    with pytest.raises(CertificateError) as caught:
        site.app.turnkey.verify(UBN, message, card.sign(message))
    assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED


@pytest.mark.parametrize("policy", [RevocationPolicy.HARD, RevocationPolicy.SOFT])
def test_turnkey_never_asks_the_network_and_applies_the_policy(
    portal: PortalFactory, pki: TestPKI, responder: Responder,
    policy: RevocationPolicy,
) -> None:  # fmt: skip
    """No TaiCA CRL; the signing card names a live responder that would answer good, but
    Turnkey only reads the cache, which is empty: unknown."""
    port = free_port()
    card = pki.issue_customs(UBN, ocsp_url=ocsp_url(port))
    running = responder(port, good=[card], ca=pki.ca(IssuerCA.TAICA))
    site = portal(policy=policy)
    register(site.app, card)
    message = b"<Message/>"
    if policy is RevocationPolicy.HARD:
        with pytest.raises(CertificateError) as caught:
            site.app.turnkey.verify(UBN, message, card.sign(message))
        assert caught.value.code is ErrorCode.REVOCATION_UNKNOWN
    else:
        assert site.app.turnkey.verify(UBN, message, card.sign(message)).sender == UBN
    log = running.log_path.read_text(encoding="utf-8", errors="replace")
    assert log.count("Received request") == 1  # the readiness probe only
