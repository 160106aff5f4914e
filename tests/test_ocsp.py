"""OCSP (DESIGN.md §4a): requests, and responses from OpenSSL's own responder (``openssl ocsp``).

Every response checked here comes from a real ``openssl ocsp -index … -port …`` process
(:mod:`engine.testing.ocsp`) fetched with an HTTP POST, except those OpenSSL's responder cannot
be made to send, which cryptography's builder makes: CertIDs with the right serial but another
issuer's hashes, SHA-2 CertIDs, an unknown critical extension, a failure status, and two
single responses about one certificate that disagree.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from engine.core.declarations import IssuerCA
from engine.pki.der import OCTET_STRING, SEQUENCE, DerReader
from engine.pki.ocsp import (
    DEFAULT_SKEW,
    MAX_RESPONSE_BYTES,
    OcspAnswer,
    OcspProblem,
    OcspStatus,
    build_request,
    read_response,
)
from engine.testing import IssuedCard, TestCA, TestPKI
from engine.testing.ocsp import OcspResponder, Revocation, index_text, issue_ocsp_signer

NOW = datetime.now(UTC).replace(microsecond=0)
"""OpenSSL stamps responses with the real clock: the test PKI is built around it."""

REVOKED_AT = NOW - timedelta(hours=2)
HELD_AT = NOW - timedelta(hours=1)
SHA1_OID = "1.3.14.3.2.26"


@dataclass(frozen=True)
class Cards:
    good: IssuedCard
    revoked: IssuedCard
    held: IssuedCard
    unlisted: IssuedCard  # not in the responder's index: "unknown"

    @property
    def revocations(self) -> list[Revocation]:
        return [
            Revocation(self.revoked, REVOKED_AT, x509.ReasonFlags.key_compromise),
            Revocation(self.held, HELD_AT, x509.ReasonFlags.certificate_hold),
        ]


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


@pytest.fixture(scope="module")
def moica(pki: TestPKI) -> TestCA:
    return pki.ca(IssuerCA.MOICA)


@pytest.fixture(scope="module")
def cards(pki: TestPKI) -> Cards:
    return Cards(pki.issue_person(), pki.issue_person(), pki.issue_person(), pki.issue_person())


@pytest.fixture(scope="module")
def ca_responder(
    tmp_path_factory: pytest.TempPathFactory, moica: TestCA, cards: Cards
) -> Iterator[OcspResponder]:
    """Signs with the CA's own key; nextUpdate one hour after thisUpdate."""
    with OcspResponder(
        tmp_path_factory.mktemp("ocsp-ca"), moica, good=[cards.good], revoked=cards.revocations
    ) as responder:
        yield responder


@pytest.fixture(scope="module")
def delegated_responder(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, moica: TestCA, cards: Cards
) -> Iterator[OcspResponder]:
    """Signs with a delegated responder certificate the CA issued with id-kp-OCSPSigning."""
    signer = issue_ocsp_signer(pki, moica)
    directory = tmp_path_factory.mktemp("ocsp-delegated")
    with OcspResponder(
        directory, moica, signer=signer, good=[cards.good], revoked=cards.revocations
    ) as responder:
        yield responder


def post(responder: OcspResponder, request: bytes) -> bytes:
    """POST ``request`` as RFC 6960 appendix A.1 says; the body of the 200 answer."""
    reply = httpx.post(
        responder.url,
        content=request,
        headers={"Content-Type": "application/ocsp-request"},
        timeout=10.0,
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/ocsp-response"
    return reply.content


def fetch(responder: OcspResponder, card: IssuedCard, issuer: TestCA, nonce: bytes | None) -> bytes:
    return post(responder, build_request(card.certificate, issuer.certificate, nonce=nonce))


def read(
    der: bytes,
    card: IssuedCard,
    issuer: TestCA,
    nonce: bytes | None,
    *,
    at: datetime | None = None,
    require_nonce: bool = False,
    skew: timedelta = DEFAULT_SKEW,
    max_age: timedelta | None = None,
) -> OcspAnswer:
    """``read_response`` about ``card`` from ``issuer``, at ``at`` (default: now)."""
    return read_response(
        der,
        certificate=card.certificate,
        issuer=issuer.certificate,
        nonce=nonce,
        at=at or datetime.now(UTC),
        require_nonce=require_nonce,
        skew=skew,
        max_age=max_age,
    )


def ask(
    responder: OcspResponder, card: IssuedCard, issuer: TestCA, *, at: datetime | None = None
) -> OcspAnswer:
    """Fetch with a fresh 32-byte nonce and read the answer with it (required)."""
    nonce = secrets.token_bytes(32)
    der = fetch(responder, card, issuer, nonce)
    return read(der, card, issuer, nonce, at=at, require_nonce=True)


def openssl(*arguments: str | Path) -> str:
    """``openssl ocsp ARGUMENTS`` (client side: making and printing requests); its output."""
    command = ["openssl", "ocsp", *map(str, arguments)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def outcome(answer: OcspAnswer) -> tuple[OcspStatus, OcspProblem | None]:
    """What an answer says, and why it was not believed (``None``: it was)."""
    return answer.status, answer.problem


# -- requests ------------------------------------------------------------------------------------


def test_request_has_a_sha1_cert_id_and_the_nonce(moica: TestCA, cards: Cards) -> None:
    nonce = secrets.token_bytes(32)
    der = build_request(cards.good.certificate, moica.certificate, nonce=nonce)
    request = ocsp.load_der_ocsp_request(der)
    issuer_bits = x509.SubjectKeyIdentifier.from_public_key(moica.certificate.public_key()).digest
    assert isinstance(request.hash_algorithm, hashes.SHA1)
    assert request.serial_number == cards.good.certificate.serial_number
    assert request.issuer_name_hash == hashlib.sha1(moica.name.public_bytes()).digest()
    assert request.issuer_key_hash == issuer_bits  # SHA-1 of the key's BIT STRING value
    (extension,) = list(request.extensions)
    assert extension.value == x509.OCSPNonce(nonce)
    assert not extension.critical
    # the DER itself: OCSPRequest → TBSRequest → requestList → Request → CertID → hashAlgorithm
    reader = DerReader(der)
    (tbs,) = reader.parts(reader.element(), SEQUENCE)
    request_list = reader.parts(tbs, SEQUENCE)[0]
    (single,) = reader.parts(request_list, SEQUENCE)
    (cert_id,) = reader.parts(single, SEQUENCE)
    algorithm, name_hash, key_hash, _serial = reader.parts(cert_id, SEQUENCE)
    assert reader.oid(reader.parts(algorithm, SEQUENCE)[0]) == SHA1_OID
    assert len(reader.body(name_hash, OCTET_STRING)) == len(reader.body(key_hash, OCTET_STRING))
    assert len(reader.body(key_hash, OCTET_STRING)) == 20
    # requestExtensions [2] EXPLICIT: one Extension {id-pkix-ocsp-nonce, OCTET STRING {nonce}}
    (extensions,) = reader.parts(reader.parts(tbs, SEQUENCE)[1], 0xA2)
    (extension,) = reader.parts(extensions, SEQUENCE)
    extension_id, extension_value = reader.parts(extension, SEQUENCE)
    assert reader.oid(extension_id) == "1.3.6.1.5.5.7.48.1.2"
    assert reader.body(extension_value, OCTET_STRING) == bytes([OCTET_STRING, 32]) + nonce


def test_request_without_nonce_equals_openssls_own(
    tmp_path: Path, moica: TestCA, cards: Cards
) -> None:
    der = build_request(cards.good.certificate, moica.certificate, nonce=None)
    assert list(ocsp.load_der_ocsp_request(der).extensions) == []
    TestPKI.write_pem(moica.certificate, tmp_path / "ca.pem")
    TestPKI.write_pem(cards.good, tmp_path / "card.pem")
    openssl(
        "-issuer",
        tmp_path / "ca.pem",
        "-cert",
        tmp_path / "card.pem",
        "-no_nonce",
        "-reqout",
        tmp_path / "openssl.der",
    )
    assert der == (tmp_path / "openssl.der").read_bytes()


def test_openssl_reads_our_request(tmp_path: Path, moica: TestCA, cards: Cards) -> None:
    nonce = bytes(range(32))
    (tmp_path / "request.der").write_bytes(
        build_request(cards.good.certificate, moica.certificate, nonce=nonce)
    )
    text = openssl("-reqin", tmp_path / "request.der", "-req_text")
    assert "Hash Algorithm: sha1" in text
    assert f"Serial Number: {cards.good.certificate.serial_number:X}" in text
    assert "OCSP Nonce:" in text
    assert "0420" + nonce.hex().upper() in text  # OCTET STRING {nonce}, as RFC 8954 has it


@pytest.mark.parametrize(
    ("nonce", "message"),
    [
        (b"", "a nonce has 1 to 32 bytes, not 0"),  # RFC 8954: at least one octet
        (bytes(33), "a nonce has 1 to 32 bytes, not 33"),  # ... and at most 32
    ],
)
def test_request_refuses_a_nonce_of_the_wrong_size(
    moica: TestCA, cards: Cards, nonce: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_request(cards.good.certificate, moica.certificate, nonce=nonce)


def test_request_refuses_an_issuer_that_did_not_issue_the_certificate(
    pki: TestPKI, cards: Cards
) -> None:
    with pytest.raises(ValueError, match="not issued by this issuer"):
        build_request(cards.good.certificate, pki.ca(IssuerCA.MOEACA).certificate, nonce=None)


# -- answers from the CA's own key ---------------------------------------------------------------


def test_good(ca_responder: OcspResponder, moica: TestCA, cards: Cards) -> None:
    nonce = secrets.token_bytes(32)
    der = fetch(ca_responder, cards.good, moica, nonce)
    before = datetime.now(UTC)
    answer = read(der, cards.good, moica, nonce, require_nonce=True)
    assert (answer.status, answer.problem, answer.detail) == (OcspStatus.GOOD, None, "")
    assert answer.signer == "ca"
    assert answer.der == der
    assert answer.this_update is not None and answer.produced_at is not None
    assert NOW <= answer.this_update <= before
    assert answer.next_update is not None
    lifetime = answer.next_update - answer.this_update  # -nmin 60 (two reads of OpenSSL's clock)
    assert timedelta(hours=1) <= lifetime <= timedelta(hours=1, seconds=1)
    assert (answer.reason, answer.revoked_at, answer.is_hold) == (None, None, False)


def test_revoked_with_reason_and_time(
    ca_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    answer = ask(ca_responder, cards.revoked, moica)
    assert (answer.status, answer.problem) == (OcspStatus.REVOKED, None)
    assert (answer.reason, answer.revoked_at) == (x509.ReasonFlags.key_compromise, REVOKED_AT)
    assert not answer.is_hold


def test_hold_is_revoked_but_not_final(
    ca_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    answer = ask(ca_responder, cards.held, moica)
    assert (answer.status, answer.reason, answer.revoked_at) == (
        OcspStatus.REVOKED,
        x509.ReasonFlags.certificate_hold,
        HELD_AT,
    )
    assert answer.is_hold


def test_unknown_to_the_responder(ca_responder: OcspResponder, moica: TestCA, cards: Cards) -> None:
    answer = ask(ca_responder, cards.unlisted, moica)
    assert (answer.status, answer.problem, answer.signer) == (OcspStatus.UNKNOWN, None, "ca")
    assert answer.this_update is not None  # a believed answer: the responder does not know it


def test_responder_id_by_key(tmp_path: Path, moica: TestCA, cards: Cards) -> None:
    with OcspResponder(tmp_path, moica, by_key=True, good=[cards.good]) as responder:
        answer = ask(responder, cards.good, moica)
    assert outcome(answer) == (OcspStatus.GOOD, None)
    assert answer.signer == "ca"


def test_no_next_update(tmp_path: Path, moica: TestCA, cards: Cards) -> None:
    with OcspResponder(
        tmp_path, moica, next_update=None, good=[cards.good], revoked=cards.revocations
    ) as responder:
        answer = ask(responder, cards.good, moica, at=datetime.now(UTC) + timedelta(days=1))
    assert (answer.status, answer.next_update) == (OcspStatus.GOOD, None)  # the cache bounds it


def test_one_response_among_several(
    tmp_path: Path, ca_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    """A request for two certificates (made by ``openssl ocsp``): each is found by its CertID."""
    TestPKI.write_pem(moica.certificate, tmp_path / "ca.pem")
    TestPKI.write_pem(cards.good, tmp_path / "good.pem")
    TestPKI.write_pem(cards.revoked, tmp_path / "revoked.pem")
    openssl(
        "-issuer",
        tmp_path / "ca.pem",
        "-cert",
        tmp_path / "good.pem",
        "-cert",
        tmp_path / "revoked.pem",
        "-no_nonce",
        "-reqout",
        tmp_path / "two.der",
    )
    der = post(ca_responder, (tmp_path / "two.der").read_bytes())
    assert len(list(ocsp.load_der_ocsp_response(der).responses)) == 2
    assert read(der, cards.good, moica, None).status is OcspStatus.GOOD
    assert read(der, cards.revoked, moica, None).status is OcspStatus.REVOKED


def test_rsa_keys(tmp_path: Path) -> None:
    """RSA PKCS#1 v1.5 signatures, by the CA and by a delegated responder; RSASSA-PSS refused
    (cryptography does not read its parameters in OCSP responses; GPKI signs with v1.5)."""
    pki = TestPKI.create(NOW, key_type="rsa")
    moica, card = pki.ca(IssuerCA.MOICA), pki.issue_person()
    signer = issue_ocsp_signer(pki, moica)
    with OcspResponder(tmp_path / "ca", moica, good=[card]) as responder:
        answer = ask(responder, card, moica)
    assert (answer.status, answer.signer) == (OcspStatus.GOOD, "ca")
    with OcspResponder(tmp_path / "delegated", moica, good=[card], signer=signer) as responder:
        answer = ask(responder, card, moica)
    assert (answer.status, answer.signer) == (OcspStatus.GOOD, "delegated")
    pss = ["rsa_padding_mode:pss", "rsa_pss_saltlen:32"]
    with OcspResponder(tmp_path / "pss", moica, good=[card], signature_options=pss) as responder:
        answer = ask(responder, card, moica)
    assert (answer.status, answer.problem, answer.detail) == (
        OcspStatus.UNKNOWN,
        OcspProblem.SIGNATURE_INVALID,
        "unsupported signature algorithm 1.2.840.113549.1.1.10",  # RSASSA-PSS
    )


# -- delegated responders ------------------------------------------------------------------------


def test_delegated_responder_is_accepted(
    delegated_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    assert outcome(ask(delegated_responder, cards.good, moica)) == (OcspStatus.GOOD, None)
    answer = ask(delegated_responder, cards.revoked, moica)
    assert (answer.status, answer.signer, answer.reason) == (
        OcspStatus.REVOKED,
        "delegated",
        x509.ReasonFlags.key_compromise,
    )


def test_delegated_responder_by_key(
    tmp_path: Path, pki: TestPKI, moica: TestCA, cards: Cards
) -> None:
    signer = issue_ocsp_signer(pki, moica)
    with OcspResponder(tmp_path, moica, signer=signer, by_key=True, good=[cards.good]) as responder:
        answer = ask(responder, cards.good, moica)
    assert (answer.status, answer.signer) == (OcspStatus.GOOD, "delegated")


MakeSigner = Callable[[TestPKI, TestCA], IssuedCard | TestCA]

BAD_SIGNERS: list[tuple[str, MakeSigner, OcspProblem]] = [
    (  # the same name as the issuing CA, another key: only the signature tells them apart
        "issued by a look-alike of the CA",
        lambda pki, ca: issue_ocsp_signer(pki, ca, issuer=pki.lookalike_ca(IssuerCA.MOICA)),
        OcspProblem.RESPONDER_NOT_ISSUED_BY_CA,
    ),
    (  # a proper OCSP signer, of MOEACA
        "issued by another CA",
        lambda pki, ca: issue_ocsp_signer(pki, ca, issuer=pki.ca(IssuerCA.MOEACA)),
        OcspProblem.RESPONDER_NOT_ISSUED_BY_CA,
    ),
    (  # issued by the CA, for TLS clients instead
        "without id-kp-OCSPSigning",
        lambda pki, ca: issue_ocsp_signer(pki, ca, ocsp_signing=False),
        OcspProblem.RESPONDER_NOT_OCSP_SIGNER,
    ),
    (  # ended yesterday
        "expired",
        lambda pki, ca: issue_ocsp_signer(
            pki, ca, valid_from=NOW - timedelta(days=30), valid_to=NOW - timedelta(days=1)
        ),
        OcspProblem.RESPONDER_NOT_VALID,
    ),
    (  # begins tomorrow
        "not yet valid",
        lambda pki, ca: issue_ocsp_signer(pki, ca, valid_from=NOW + timedelta(days=1)),
        OcspProblem.RESPONDER_NOT_VALID,
    ),
    (  # MOEACA's own key and certificate answering about MOICA's cards
        "another CA's own key",
        lambda pki, ca: pki.ca(IssuerCA.MOEACA),
        OcspProblem.RESPONDER_NOT_ISSUED_BY_CA,
    ),
]


@pytest.mark.parametrize(
    ("make", "problem"), [p[1:] for p in BAD_SIGNERS], ids=[p[0] for p in BAD_SIGNERS]
)
def test_responder_certificate_refused(
    tmp_path: Path,
    pki: TestPKI,
    moica: TestCA,
    cards: Cards,
    make: MakeSigner,
    problem: OcspProblem,
) -> None:
    with OcspResponder(
        tmp_path, moica, signer=make(pki, moica), good=[cards.good], revoked=cards.revocations
    ) as responder:
        good = ask(responder, cards.good, moica)
        revoked = ask(responder, cards.revoked, moica)
    assert outcome(good) == (OcspStatus.UNKNOWN, problem)
    assert outcome(revoked) == (OcspStatus.UNKNOWN, problem)  # not even "revoked" is believed
    assert (good.this_update, good.signer, good.reason) == (None, None, None)


def test_delegated_responder_certificate_left_out(
    tmp_path: Path, pki: TestPKI, moica: TestCA, cards: Cards
) -> None:
    """A delegated responder that does not send its certificate (``-resp_no_certs``)."""
    signer = issue_ocsp_signer(pki, moica)
    with OcspResponder(
        tmp_path, moica, signer=signer, include_certificates=False, good=[cards.good]
    ) as responder:
        answer = ask(responder, cards.good, moica)
    assert outcome(answer) == (OcspStatus.UNKNOWN, OcspProblem.RESPONDER_UNKNOWN)
    assert answer.detail == (
        "responder CN=swreg TEST OCSP responder (測試用),O=行政院,C=TW is neither the issuing CA "
        "nor a certificate in the response"
    )


def test_signed_by_a_lookalike_ca_key(
    tmp_path: Path, pki: TestPKI, moica: TestCA, cards: Cards
) -> None:
    """A CA with the issuing CA's exact name (GPKI generations share names) but another key."""
    lookalike = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=True)
    for include in (True, False):
        with OcspResponder(
            tmp_path / str(include),
            moica,
            signer=lookalike,
            include_certificates=include,
            good=[cards.good],
            revoked=cards.revocations,
        ) as responder:
            answer = ask(responder, cards.revoked, moica)
        assert outcome(answer) == (OcspStatus.UNKNOWN, OcspProblem.SIGNATURE_INVALID)
        assert answer.detail == (
            f"the signature does not verify with the key of {moica.name.rfc4514_string()}"
        )


def test_signed_with_sha1(tmp_path: Path, moica: TestCA, cards: Cards) -> None:
    with OcspResponder(
        tmp_path, moica, digest="sha1", good=[cards.good], revoked=cards.revocations
    ) as responder:
        answer = ask(responder, cards.good, moica)
    assert (answer.status, answer.problem, answer.detail) == (
        OcspStatus.UNKNOWN,
        OcspProblem.SIGNATURE_INVALID,
        "SHA-1 signatures are not accepted",
    )


# -- time ----------------------------------------------------------------------------------------


def test_stale_response(tmp_path: Path, moica: TestCA, cards: Cards) -> None:
    """nextUpdate one minute after thisUpdate (``-nmin 1``), read later."""
    with OcspResponder(
        tmp_path,
        moica,
        next_update=timedelta(minutes=1),
        good=[cards.good],
        revoked=cards.revocations,
    ) as r:
        nonce = secrets.token_bytes(32)
        der = fetch(r, cards.revoked, moica, nonce)
    fresh = read(der, cards.revoked, moica, nonce)
    assert (fresh.status, fresh.problem) == (OcspStatus.REVOKED, None)
    assert fresh.next_update is not None
    at_next_update = read(der, cards.revoked, moica, nonce, at=fresh.next_update)
    assert at_next_update.status is OcspStatus.REVOKED  # still valid at nextUpdate itself
    later = fresh.next_update + timedelta(seconds=1)
    stale = read(der, cards.revoked, moica, nonce, at=later)
    assert (stale.status, stale.problem, stale.detail) == (
        OcspStatus.UNKNOWN,
        OcspProblem.STALE,
        f"nextUpdate {fresh.next_update} is before {later}",
    )
    assert stale.der == der  # kept as evidence of what was refused


def test_this_update_in_the_future(
    ca_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    nonce = secrets.token_bytes(32)
    der = fetch(ca_responder, cards.good, moica, nonce)
    this_update = read(der, cards.good, moica, nonce).this_update
    assert this_update is not None
    within_skew = this_update - timedelta(minutes=5)
    assert read(der, cards.good, moica, nonce, at=within_skew).status is OcspStatus.GOOD
    too_early = within_skew - timedelta(seconds=1)
    answer = read(der, cards.good, moica, nonce, at=too_early)
    assert outcome(answer) == (OcspStatus.UNKNOWN, OcspProblem.NOT_YET_VALID)
    narrow = read(
        der,
        cards.good,
        moica,
        nonce,
        at=this_update - timedelta(seconds=2),
        skew=timedelta(seconds=1),
    )
    assert outcome(narrow) == (OcspStatus.UNKNOWN, OcspProblem.NOT_YET_VALID)


def test_max_age(ca_responder: OcspResponder, moica: TestCA, cards: Cards) -> None:
    nonce = secrets.token_bytes(32)
    der = fetch(ca_responder, cards.good, moica, nonce)
    this_update = read(der, cards.good, moica, nonce).this_update
    assert this_update is not None
    limit = timedelta(minutes=2)  # Web eID's limit
    ok = read(der, cards.good, moica, nonce, at=this_update + limit, max_age=limit)
    assert ok.status is OcspStatus.GOOD
    old = read(
        der, cards.good, moica, nonce, at=this_update + limit + timedelta(seconds=1), max_age=limit
    )
    assert outcome(old) == (OcspStatus.UNKNOWN, OcspProblem.TOO_OLD)


# -- nonces --------------------------------------------------------------------------------------


def test_nonce_missing(ca_responder: OcspResponder, moica: TestCA, cards: Cards) -> None:
    """A response to a request without a nonce (as a pre-signed, cached response would be)."""
    der = fetch(ca_responder, cards.good, moica, None)
    nonce = secrets.token_bytes(32)
    assert read(der, cards.good, moica, nonce).status is OcspStatus.GOOD  # checked when echoed
    required = read(der, cards.good, moica, nonce, require_nonce=True)
    assert (required.status, required.problem, required.detail) == (
        OcspStatus.UNKNOWN,
        OcspProblem.NONCE_MISSING,
        "the responder did not echo the nonce",
    )


def test_replayed_response_for_another_nonce(
    ca_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    first = secrets.token_bytes(32)
    der = fetch(ca_responder, cards.revoked, moica, first)
    assert read(der, cards.revoked, moica, first).status is OcspStatus.REVOKED
    second = secrets.token_bytes(32)
    for require in (False, True):
        answer = read(der, cards.revoked, moica, second, require_nonce=require)
        assert (answer.status, answer.problem, answer.detail) == (
            OcspStatus.UNKNOWN,
            OcspProblem.NONCE_MISMATCH,
            "the echoed nonce is not the one sent",
        )
    stored = read(der, cards.revoked, moica, None)  # read again from a store: no nonce to compare
    assert stored.status is OcspStatus.REVOKED


def test_tampered_nonce(ca_responder: OcspResponder, moica: TestCA, cards: Cards) -> None:
    nonce = secrets.token_bytes(32)
    der = fetch(ca_responder, cards.good, moica, nonce)
    assert der.count(nonce) == 1
    forged_nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    forged = der.replace(nonce, forged_nonce)
    answer = read(forged, cards.good, moica, forged_nonce)
    assert outcome(answer) == (OcspStatus.UNKNOWN, OcspProblem.SIGNATURE_INVALID)


# -- CertIDs -------------------------------------------------------------------------------------


def test_response_about_another_certificate(
    ca_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    nonce = secrets.token_bytes(32)
    der = fetch(ca_responder, cards.good, moica, nonce)
    answer = read(der, cards.revoked, moica, nonce)
    assert (answer.status, answer.problem, answer.detail) == (
        OcspStatus.UNKNOWN,
        OcspProblem.CERT_ID_MISMATCH,
        f"the response is about serial {cards.good.certificate.serial_number:x}, not serial "
        f"{cards.revoked.certificate.serial_number:x} of {moica.name.rfc4514_string()}",
    )


def _signed(
    moica: TestCA,
    card: IssuedCard,
    *,
    name_hash: bytes | None = None,
    key_hash: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    critical: bool = False,
) -> bytes:
    """A response signed by ``moica`` about ``card``'s serial, with the CertID hashes given
    (by default the right ones, with ``algorithm``, SHA-1 unless told)."""
    algorithm = algorithm or hashes.SHA1()
    now = datetime.now(UTC)
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    bits = x509.SubjectKeyIdentifier.from_public_key(moica.certificate.public_key()).digest
    if not isinstance(algorithm, hashes.SHA1):  # the SHA-1 of the key bits is its SKI here
        bits = hashlib.new(algorithm.name, _key_bits(moica)).digest()
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        name_hash or hashlib.new(algorithm.name, moica.name.public_bytes()).digest(),
        key_hash or bits,
        card.certificate.serial_number,
        algorithm,
        status,
        now,
        now + timedelta(hours=1),
        REVOKED_AT if revoked else None,
        x509.ReasonFlags.key_compromise if revoked else None,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.NAME, moica.certificate)
    if critical:
        unknown = x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"
        )
        builder = builder.add_extension(unknown, critical=True)
    response = builder.sign(moica.key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)


def _key_bits(ca: TestCA) -> bytes:
    """The subjectPublicKey BIT STRING's value of ``ca`` (what an issuer key hash hashes)."""
    spki = ca.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    reader = DerReader(spki)
    return reader.body(reader.parts(reader.element(), SEQUENCE)[1], 0x03)[1:]


@pytest.mark.parametrize(
    ("name_hash", "key_hash", "algorithm", "problem"),
    [
        (None, None, hashes.SHA1(), None),  # the right CertID: believed
        (None, None, hashes.SHA256(), None),  # ... also hashed with SHA-256
        (None, None, hashes.SHA512(), None),  # ... or SHA-512
        (bytes(20), None, hashes.SHA1(), OcspProblem.CERT_ID_MISMATCH),  # another issuer name
        (None, bytes(20), hashes.SHA1(), OcspProblem.CERT_ID_MISMATCH),  # another issuer key
        (None, bytes(32), hashes.SHA256(), OcspProblem.CERT_ID_MISMATCH),  # ... with SHA-256
    ],
)
def test_cert_id_hashes_must_match(
    moica: TestCA,
    cards: Cards,
    name_hash: bytes | None,
    key_hash: bytes | None,
    algorithm: hashes.HashAlgorithm,
    problem: OcspProblem | None,
) -> None:
    der = _signed(moica, cards.good, name_hash=name_hash, key_hash=key_hash, algorithm=algorithm)
    answer = read(der, cards.good, moica, None)
    assert answer.problem == problem
    assert answer.status is (OcspStatus.GOOD if problem is None else OcspStatus.UNKNOWN)


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _two_single_responses(moica: TestCA, card: IssuedCard, *statuses: ocsp.OCSPCertStatus) -> bytes:
    """One response, signed by ``moica``, carrying a SingleResponse about ``card`` per status
    (cryptography's builder makes one; the others are spliced in and the whole signed again)."""
    tbs_parts: list[bytes] = []
    singles = b""
    for status in statuses:
        tbs = ocsp.load_der_ocsp_response(_signed(moica, card, status=status)).tbs_response_bytes
        reader = DerReader(tbs)
        responder_id, produced_at, responses = reader.parts(reader.element(), SEQUENCE)[:3]
        tbs_parts = [tbs[responder_id.start : produced_at.end]]
        singles += tbs[responses.content : responses.content_end]
    tbs = _tlv(SEQUENCE, tbs_parts[0] + _tlv(SEQUENCE, singles))
    assert isinstance(moica.key, ec.EllipticCurvePrivateKey)
    signature = moica.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    ecdsa_with_sha256 = bytes.fromhex("300a06082a8648ce3d040302")
    basic = _tlv(SEQUENCE, tbs + ecdsa_with_sha256 + _tlv(0x03, b"\0" + signature))
    id_pkix_ocsp_basic = bytes.fromhex("06092b0601050507300101")
    response_bytes = _tlv(SEQUENCE, id_pkix_ocsp_basic + _tlv(OCTET_STRING, basic))
    return _tlv(SEQUENCE, bytes.fromhex("0a0100") + _tlv(0xA0, response_bytes))


def test_several_single_responses_about_the_certificate(moica: TestCA, cards: Cards) -> None:
    """Two SingleResponses with one CertID: believed when they agree, not when they disagree
    (openssl/openssl#32376: OpenSSL takes the first)."""
    good, revoked = ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED
    agreeing = read(_two_single_responses(moica, cards.good, good, good), cards.good, moica, None)
    assert outcome(agreeing) == (OcspStatus.GOOD, None)
    for order in ((good, revoked), (revoked, good)):
        der = _two_single_responses(moica, cards.good, *order)
        assert len(list(ocsp.load_der_ocsp_response(der).responses)) == 2
        answer = read(der, cards.good, moica, None)
        assert (answer.status, answer.problem, answer.detail) == (
            OcspStatus.UNKNOWN,
            OcspProblem.AMBIGUOUS,
            "2 single responses about the certificate disagree",
        )


# -- bodies that are not answers -----------------------------------------------------------------


def test_oversized_body(moica: TestCA, cards: Cards) -> None:
    body = b"\x30\x84" + (MAX_RESPONSE_BYTES).to_bytes(4, "big") + bytes(MAX_RESPONSE_BYTES)
    answer = read(body, cards.good, moica, None)
    assert (answer.status, answer.problem, answer.der) == (
        OcspStatus.UNKNOWN,
        OcspProblem.TOO_LARGE,
        b"",
    )
    assert answer.detail == f"{len(body)} bytes, more than 65536"


@pytest.mark.parametrize(
    "body",
    [
        b"",  # an empty body
        b"garbage",  # not DER
        b"<html><body>502 Bad Gateway</body></html>",  # a proxy's error page
        b"\x30\x03\x0a\x01\x00",  # successful, but no responseBytes
        bytes.fromhex("3082") + bytes(10),  # truncated
    ],
)
def test_garbage_body(moica: TestCA, cards: Cards, body: bytes) -> None:
    answer = read(body, cards.good, moica, None)
    assert (answer.status, answer.problem, answer.der) == (
        OcspStatus.UNKNOWN,
        OcspProblem.MALFORMED,
        body,
    )


def test_truncated_response_from_the_responder(
    ca_responder: OcspResponder, moica: TestCA, cards: Cards
) -> None:
    der = fetch(ca_responder, cards.good, moica, None)
    answer = read(der[:-1], cards.good, moica, None)
    assert outcome(answer) == (OcspStatus.UNKNOWN, OcspProblem.MALFORMED)


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformed_request"),
        (ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internal_error"),
        (ocsp.OCSPResponseStatus.TRY_LATER, "try_later"),
        (ocsp.OCSPResponseStatus.SIG_REQUIRED, "sig_required"),
        (ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized"),
    ],
)
def test_unsuccessful_status(
    moica: TestCA, cards: Cards, status: ocsp.OCSPResponseStatus, name: str
) -> None:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
    answer = read(der, cards.good, moica, None)
    assert (answer.status, answer.problem, answer.detail) == (
        OcspStatus.UNKNOWN,
        OcspProblem.UNSUCCESSFUL,
        f"responseStatus {name}",
    )


def test_unknown_critical_extension(moica: TestCA, cards: Cards) -> None:
    answer = read(_signed(moica, cards.good, critical=True), cards.good, moica, None)
    assert (answer.status, answer.problem, answer.detail) == (
        OcspStatus.UNKNOWN,
        OcspProblem.MALFORMED,
        "unknown critical extension 1.3.6.1.4.1.99999.1",
    )


# -- the caller's mistakes -----------------------------------------------------------------------


def test_callers_mistakes_raise(moica: TestCA, cards: Cards) -> None:
    der = _signed(moica, cards.good)
    with pytest.raises(ValueError, match="aware"):
        read(der, cards.good, moica, None, at=datetime.now())  # naive: the mistake
    with pytest.raises(ValueError, match="require_nonce needs the nonce"):
        read(der, cards.good, moica, None, require_nonce=True)


# -- the test helper -----------------------------------------------------------------------------


def test_index_lines(cards: Cards) -> None:
    serial = f"{cards.revoked.certificate.serial_number:X}"
    text = index_text([], [Revocation(cards.revoked, REVOKED_AT, x509.ReasonFlags.superseded)])
    (line,) = text.splitlines()
    fields = line.split("\t")
    assert fields[0] == "R"
    assert fields[2] == REVOKED_AT.strftime("%y%m%d%H%M%SZ") + ",superseded"
    assert fields[3] == "0" * (len(serial) % 2) + serial
    with pytest.raises(ValueError, match="privilegeWithdrawn"):
        index_text(
            [], [Revocation(cards.revoked, REVOKED_AT, x509.ReasonFlags.privilege_withdrawn)]
        )


def test_responder_stops(tmp_path: Path, moica: TestCA, cards: Cards) -> None:
    responder = OcspResponder(tmp_path, moica, good=[cards.good])
    with responder:
        assert ask(responder, cards.good, moica).status is OcspStatus.GOOD
    with pytest.raises(httpx.ConnectError):
        httpx.post(responder.url, content=b"", timeout=2.0)


@pytest.mark.parametrize("responder", ["ca_responder", "delegated_responder"])
def test_no_damaged_response_raises_or_changes_the_answer(
    request: pytest.FixtureRequest, responder: str, moica: TestCA, cards: Cards
) -> None:
    """Every single-byte change and every truncation of a real response: an ``unknown`` answer
    with a problem, or (a change outside what is signed, such as in the copy of the CA
    certificate) the same answer; never an exception."""
    nonce = secrets.token_bytes(32)
    der = fetch(request.getfixturevalue(responder), cards.revoked, moica, nonce)
    at = datetime.now(UTC)
    damaged = [der[:cut] for cut in range(len(der))]
    damaged += [der[:i] + bytes([der[i] ^ 0x55]) + der[i + 1 :] for i in range(len(der))]
    for body in damaged:
        answer = read(body, cards.revoked, moica, nonce, at=at, require_nonce=True)
        if answer.problem is None:
            assert (answer.status, answer.revoked_at) == (OcspStatus.REVOKED, REVOKED_AT)
        else:
            assert answer.status is OcspStatus.UNKNOWN
