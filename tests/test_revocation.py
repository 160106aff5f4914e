"""CRLs: loading, signature checks against the trust store, newest-wins, O(1) lookups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from engine._errors import CertificateError, ErrorCode, RefusedError
from engine.core.declarations import IssuerCA
from engine.pki.revocation import RevocationIndex, issuer_key, load_crl
from engine.testing import TestPKI

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


def test_load_crl_der_and_pem(pki: TestPKI) -> None:
    crl = pki.crl(IssuerCA.MOICA, number=5)
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        assert load_crl(crl.public_bytes(encoding)) == crl


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x30\x03\x02\x01\x01"])
def test_load_crl_refuses_garbage(data: bytes) -> None:
    with pytest.raises(RefusedError) as caught:
        load_crl(data)
    assert (caught.value.code, caught.value.detail) == (ErrorCode.NOT_A_CERTIFICATE, "not a CRL")


def test_revoked_card_is_found_and_others_are_not(pki: TestPKI) -> None:
    revoked, kept = pki.issue_person(), pki.issue_person()
    moica = pki.ca(IssuerCA.MOICA).certificate
    index = RevocationIndex.build([pki.crl(IssuerCA.MOICA, [revoked], number=3)], pki.trust_store())
    assert index.is_revoked(revoked.certificate, moica)
    assert not index.is_revoked(kept.certificate, moica)
    assert index.crl_number_for(moica) == 3
    assert index.covers(moica)
    other_ca = pki.ca(IssuerCA.MOEACA).certificate
    assert not index.covers(other_ca)
    assert index.crl_number_for(other_ca) is None
    assert not index.is_revoked(revoked.certificate, other_ca)  # keyed by the issuer's key


def test_newest_crl_per_issuer_wins_whatever_the_order(pki: TestPKI) -> None:
    first, second = pki.issue_company("04595257"), pki.issue_company("10458575")
    old = pki.crl(IssuerCA.MOEACA, [first], number=1)
    new = pki.crl(IssuerCA.MOEACA, [second], number=2)
    moeaca = pki.ca(IssuerCA.MOEACA).certificate
    for crls in ([old, new], [new, old]):
        index = RevocationIndex.build(crls, pki.trust_store())
        assert index.crl_number_for(moeaca) == 2
        assert index.is_revoked(second.certificate, moeaca)
        assert not index.is_revoked(first.certificate, moeaca)  # taken off hold in CRL 2


def test_same_number_later_this_update_wins(pki: TestPKI) -> None:
    card = pki.issue_person()
    earlier = pki.crl(IssuerCA.MOICA, [], number=7, this_update=NOW - timedelta(hours=2))
    later = pki.crl(IssuerCA.MOICA, [card], number=7, this_update=NOW - timedelta(hours=1))
    index = RevocationIndex.build([later, earlier], pki.trust_store())
    assert index.is_revoked(card.certificate, pki.ca(IssuerCA.MOICA).certificate)


def test_crls_of_several_issuers(pki: TestPKI) -> None:
    person, customs = pki.issue_person(), pki.issue_customs("97162640")
    index = RevocationIndex.build(
        [pki.crl(IssuerCA.MOICA, [person]), pki.crl(IssuerCA.TAICA, [customs], number=9)],
        pki.trust_store(),
    )
    assert index.is_revoked(person.certificate, pki.ca(IssuerCA.MOICA).certificate)
    assert index.is_revoked(customs.certificate, pki.ca(IssuerCA.TAICA).certificate)
    assert index.crl_number_for(pki.ca(IssuerCA.TAICA).certificate) == 9


def test_crl_of_a_lookalike_ca_is_refused(pki: TestPKI) -> None:
    for copy in (False, True):  # with its own key identifier, and claiming the real one
        forged = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=copy)
        with pytest.raises(CertificateError) as caught:
            RevocationIndex.build([pki.crl(forged)], pki.trust_store())
        assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED


def test_crl_issuer_must_chain_to_an_anchor(pki: TestPKI) -> None:
    # the issuing CA is known only as an intermediate given alongside, not chained: refused
    other = TestPKI.create(NOW)
    crl = other.crl(IssuerCA.MOICA)
    with pytest.raises(CertificateError):
        RevocationIndex.build(
            [crl], pki.trust_store(), issuers=[other.ca(IssuerCA.MOICA).certificate]
        )
    index = RevocationIndex.build(
        [crl],
        other.trust_store(with_intermediates=False),
        issuers=[other.ca(IssuerCA.MOICA).certificate],
    )
    assert index.covers(other.ca(IssuerCA.MOICA).certificate)


def test_delta_crls_are_refused(pki: TestPKI) -> None:
    ca = pki.ca(IssuerCA.MOICA)
    delta = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.name)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .add_extension(x509.CRLNumber(2), critical=False)
        .add_extension(x509.DeltaCRLIndicator(1), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(RefusedError) as caught:
        RevocationIndex.build([delta], pki.trust_store())
    assert caught.value.code is ErrorCode.NOT_A_CERTIFICATE


def _partition(
    pki: TestPKI, uri: str, revoked: list[x509.Certificate], number: int
) -> x509.CertificateRevocationList:
    ca = pki.ca(IssuerCA.MOEACA)
    idp = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(uri)],
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.name)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(idp, critical=True)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(NOW)
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def test_partitioned_crls_are_united(pki: TestPKI) -> None:
    a, b = pki.issue_company("04595257"), pki.issue_company("10458575")
    crls = [
        _partition(pki, "http://crl.example/1.crl", [a.certificate], 40),
        _partition(pki, "http://crl.example/2.crl", [b.certificate], 41),
    ]
    moeaca = pki.ca(IssuerCA.MOEACA).certificate
    index = RevocationIndex.build(crls, pki.trust_store())
    assert index.is_revoked(a.certificate, moeaca) and index.is_revoked(b.certificate, moeaca)
    assert index.crl_number_for(moeaca) == 41  # no complete CRL: the newest partition
    complete = pki.crl(IssuerCA.MOEACA, [], number=12)
    index = RevocationIndex.build([*crls, complete], pki.trust_store())
    assert index.crl_number_for(moeaca) == 12  # the complete CRL's number
    assert index.is_revoked(a.certificate, moeaca)


def test_empty_index_and_issuer_key(pki: TestPKI) -> None:
    card = pki.issue_person()
    ca = pki.ca(IssuerCA.MOICA).certificate
    empty = RevocationIndex.empty()
    assert not empty.is_revoked(card.certificate, ca)
    assert empty.crl_number_for(ca) is None
    assert len(issuer_key(ca)) == 32
    assert issuer_key(ca) != issuer_key(pki.lookalike_ca(IssuerCA.MOICA).certificate)
