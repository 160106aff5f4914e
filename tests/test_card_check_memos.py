"""The card check's memos (parsed chain helpers, issuer names, verified CA signatures) never
change an outcome: same bytes, same answer; different bytes, checked again."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine import CardResponse, Catalog, make_plugin_manager
from engine._errors import CertificateError, ErrorCode
from engine.core.declarations import IssuerCA
from engine.pki.card_response import Challenge, chain_certificates, check_card_response
from engine.pki.certificate import BoundedMemo, load_certificate, name_string, subject_text
from engine.pki.certificate_checks import check_login_certificate
from engine.pki.revocation import (
    RevocationIndex,
    RevocationSource,
    RevocationStatus,
    RevocationVerdict,
)
from engine.pki.trust import MAX_HELPERS, TrustStore
from engine.testing import TestPKI

from .vectors import ALL_VECTORS, INSIDE_G2_ERA, GpkiVector, vector, vector_bytes

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
GRACE = timedelta(hours=6)


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _tlv(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = (len(body).bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + len(body).to_bytes(size, "big") + body


def _with_signature_of(forged: x509.Certificate, real: x509.Certificate) -> x509.Certificate:
    """``forged``'s TBS with ``real``'s signature bytes: equal signatures, different certificate."""
    algorithm = _tlv(0x30, bytes.fromhex("06082a8648ce3d040302"))  # ecdsa-with-SHA256
    signature = _tlv(0x03, b"\x00" + real.signature)
    body = forged.tbs_certificate_bytes + algorithm + signature
    return x509.load_der_x509_certificate(_tlv(0x30, body))


# -- chain helpers -------------------------------------------------------------------------------


def test_chain_helpers_are_parsed_once_and_store_members_are_the_members(pki: TestPKI) -> None:
    card = pki.issue_person()
    trust = TrustStore(pki.anchors())
    first = chain_certificates(card.chain_der(), trust=trust)
    again = chain_certificates(tuple(bytes(d) for d in card.chain_der()), trust=trust)
    assert first == card.chain
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert first[1] is pki.anchors()[0]  # the root is the store's own object
    assert chain_certificates(card.chain_der()) == card.chain  # no store: still parsed


def test_chain_helpers_take_pem_and_bytearrays_and_skip_junk(pki: TestPKI) -> None:
    card = pki.issue_person()
    intermediate = card.chain[0]
    pem = intermediate.public_bytes(serialization.Encoding.PEM)
    chain: list[Any] = ["text", b"junk", pem, bytearray(_der(intermediate)), b"", None]
    assert chain_certificates(chain) == (intermediate, intermediate)


# -- issuer names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_real_certificates_parse_the_same_on_a_memo_hit(name: GpkiVector) -> None:
    first = load_certificate(vector_bytes(name))
    again = load_certificate(vector_bytes(name))
    assert first.issuer_der == vector(name).issuer.public_bytes()
    assert first.issuer == name_string(vector(name).issuer)
    assert dataclasses.replace(again, certificate=first.certificate) == first


def test_one_test_ca_issuer_still_classifies_by_subject_class() -> None:
    company = load_certificate(vector_bytes("gtestca-ee-2023-testco1"))
    agency = load_certificate(vector_bytes("gtestca-ee-testagency1"))
    assert company.issuer_der == agency.issuer_der  # one memo entry …
    assert (company.ca, agency.ca) == (IssuerCA.MOEACA, IssuerCA.GCA)  # … two families


def test_subject_text_is_name_string(pki: TestPKI) -> None:
    for cert in (*pki.anchors(), *pki.intermediates()):
        assert subject_text(cert) == subject_text(cert) == name_string(cert.subject)


def test_bounded_memo_drops_the_oldest_entry() -> None:
    memo: BoundedMemo[int, str] = BoundedMemo(2)
    memo.put(1, "a")
    memo.put(2, "b")
    memo.put(2, "B")  # replacing evicts nothing and keeps the entry's age
    memo.put(3, "c")
    assert (memo.get(1), memo.get(2), memo.get(3)) == (None, "B", "c")


# -- path building ------------------------------------------------------------------------------


def test_a_parsed_certificate_builds_the_same_path(pki: TestPKI) -> None:
    card = pki.issue_person()
    trust = TrustStore(pki.anchors())
    parsed = load_certificate(card.der())
    assert trust.build_path(parsed, extra=card.chain) == trust.build_path(
        card.certificate, extra=card.chain
    )


def test_real_chain_sent_along_passes_twice() -> None:
    trust = TrustStore([vector("grca-g1-2002-root")])
    parsed = load_certificate(vector_bytes("moeaca-ee-g2-2019-citibank"))
    extra = chain_certificates([vector_bytes("moeaca-g2-ca"), vector_bytes("grca-2012-link")])
    for _ in range(2):  # the second time from the memo of verified CA signatures
        verdict = check_login_certificate(
            parsed, trust=trust, at=INSIDE_G2_ERA, profile=None, extra=extra
        )
        assert len(verdict.chain) == 4


def test_a_forged_helper_with_a_remembered_signature_is_checked_again(pki: TestPKI) -> None:
    trust = TrustStore(pki.anchors())
    card = pki.issue_person()
    real = card.chain[0]
    assert len(trust.build_path(card.certificate, extra=(real,))) == 3  # remembered now
    lookalike = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=True)
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(real.issuer)
        .public_key(lookalike.key.public_key())
        .serial_number(real.serial_number)
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
    )
    for extension in real.extensions:
        if extension.oid != x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            builder = builder.add_extension(extension.value, extension.critical)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier(lookalike.key_identifier), critical=False
    )
    assert isinstance(lookalike.key, ec.EllipticCurvePrivateKey)
    forged = _with_signature_of(builder.sign(lookalike.key, hashes.SHA256()), real)
    assert forged.signature == real.signature and forged != real
    victim = pki.issue_person(issuer=lookalike)
    with pytest.raises(CertificateError) as caught:
        trust.build_path(victim.certificate, extra=(forged,))
    assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED
    assert len(trust.build_path(card.certificate, extra=(real,))) == 3


def test_remembered_helpers_are_bounded(pki: TestPKI) -> None:
    trust = TrustStore(pki.anchors())
    card = pki.issue_person()
    for number in range(MAX_HELPERS + 10):
        helper = pki.lookalike_ca(IssuerCA.MOICA).certificate
        with pytest.raises(CertificateError):
            trust.build_path(card.certificate, extra=(helper,))
        assert trust._helper_count <= MAX_HELPERS, number
    assert len(trust.build_path(card.certificate, extra=card.chain)) == 3


# -- revocation ---------------------------------------------------------------------------------


def test_revocation_looks_issuers_up_by_key_not_by_object(pki: TestPKI) -> None:
    card = pki.issue_person()
    issuer = card.chain[0]
    index = RevocationIndex.build([pki.crl(IssuerCA.MOICA, [card], number=7)], pki.trust_store())
    copy = x509.load_der_x509_certificate(_der(issuer))
    other = pki.issue_person()
    for candidate in (issuer, copy, issuer, copy):  # the memo of issuer keys, hit and missed
        revoked = index.answer(card.certificate, candidate, at=NOW, grace=GRACE)
        assert (revoked.status, revoked.crl_number) == (RevocationStatus.REVOKED, 7)
        good = index.answer(other.certificate, candidate, at=NOW, grace=GRACE)
        assert (good.status, good.crl_number) == (RevocationStatus.GOOD, 7)
        assert [crl.info.number for crl in index.crls_of(candidate)] == [7]
    lookalike = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=True).certificate
    assert lookalike.subject == issuer.subject
    for _ in range(2):  # same name, another key: never the memo entry of the real CA
        assert index.answer(card.certificate, lookalike, at=NOW, grace=GRACE).problem == "no_crl"
        assert index.answer(card.certificate, issuer, at=NOW, grace=GRACE).status is (
            RevocationStatus.REVOKED
        )
    empty = RevocationIndex.empty().answer(card.certificate, issuer, at=NOW, grace=GRACE)
    assert (empty.status, empty.problem) == (RevocationStatus.UNKNOWN, "no_crl")
    assert RevocationIndex.empty().crls_of(issuer) == ()


def test_crl_entries_are_read_the_same_on_every_lookup(pki: TestPKI) -> None:
    revoked = [pki.issue_person() for _ in range(5)]
    index = RevocationIndex.build([pki.crl(IssuerCA.MOICA, revoked, number=3)], pki.trust_store())
    issuer = revoked[0].chain[0]
    for _ in range(2):  # the first lookup builds the CRL's serial index, the second uses it
        for card in revoked:
            answer = index.answer(card.certificate, issuer, at=NOW, grace=GRACE)
            assert (answer.status, answer.revoked_at) == (RevocationStatus.REVOKED, NOW)
        good = index.answer(pki.issue_person().certificate, issuer, at=NOW, grace=GRACE)
        assert good.status is RevocationStatus.GOOD


# -- the whole check ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_the_card_check_answers_the_same_every_time(key: str) -> None:
    rsa_or_ec = TestPKI.create(NOW, key_type="rsa" if key == "rsa" else "ec")
    catalog = Catalog.from_plugins(make_plugin_manager())
    chosen = catalog.applicant("person.general")
    trust = TrustStore(rsa_or_ec.anchors())
    good = rsa_or_ec.issue_person()
    expired = rsa_or_ec.issue_person(valid_to=NOW - timedelta(days=1))
    asked: list[tuple[x509.Certificate, ...]] = []

    def revocation(chain: tuple[x509.Certificate, ...]) -> RevocationVerdict:
        asked.append(chain)
        return RevocationVerdict(RevocationStatus.GOOD, RevocationSource.CRL, NOW, crl_number=1)

    for card, code in [(good, None), (expired, ErrorCode.CERTIFICATE_EXPIRED)] * 2:
        challenge = Challenge("c", "r", "00" * 32, "urn:swreg:cli", NOW + timedelta(minutes=5))
        response = CardResponse("c", card.der(), card.sign(challenge.payload), card.chain_der())
        if code is None:
            result = check_card_response(
                response, challenge, chosen=chosen, catalog=catalog, trust=trust,
                at=NOW, revocation=revocation,
            )  # fmt: skip
            evidence = result.evidence(challenge)
            chain = evidence["chain"]
            assert chain == [name_string(c.subject) for c in (card.certificate, *card.chain)]
            assert evidence["crl_number"] == "1"
            continue
        with pytest.raises(CertificateError) as caught:
            check_card_response(
                response, challenge, chosen=chosen, catalog=catalog, trust=trust,
                at=NOW, revocation=revocation,
            )  # fmt: skip
        assert caught.value.code is code
    assert asked == [(good.certificate, *good.chain)] * 2  # the expired card: never asked
