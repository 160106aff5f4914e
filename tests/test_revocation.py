"""What the stored CRLs say about a certificate (DESIGN.md §4a): loading, signatures checked
against the trust store by key, the newest CRL per issuer and partition, and ``answer``'s
good / revoked / unknown with the CRL it rests on. Also the verdict's stored shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from engine._errors import CertificateError, ErrorCode, RefusedError
from engine.core.declarations import IssuerCA
from engine.pki.crl import Crl
from engine.pki.revocation import (
    NO_CRL,
    STALE,
    CrlAnswer,
    RevocationIndex,
    RevocationSource,
    RevocationStatus,
    RevocationVerdict,
    distribution_points,
    is_ca_certificate,
    issuer_key,
    load_crl,
    verified_issuer,
)
from engine.testing import IssuedCard, TestCA, TestPKI

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
GRACE = timedelta(hours=6)
WEEK = 7 * DAY  # TestPKI.crl's default nextUpdate: thisUpdate + 7 days

GOOD = RevocationStatus.GOOD
REVOKED = RevocationStatus.REVOKED
UNKNOWN = RevocationStatus.UNKNOWN

_DER = serialization.Encoding.DER

URL_A = "http://crl.test.example/MOICA-G3-10-31.crl"
URL_B = "http://crl.test.example/MOICA-G3-10-32.crl"


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


def _index(pki: TestPKI, *crls: x509.CertificateRevocationList | Crl) -> RevocationIndex:
    return RevocationIndex.build(crls, pki.trust_store())


def _answer(
    index: RevocationIndex, card: IssuedCard, *, at: datetime = NOW, grace: timedelta = GRACE
) -> CrlAnswer:
    return index.answer(card.certificate, card.chain[0], at=at, grace=grace)


def _good(number: int, this_update: datetime = NOW) -> CrlAnswer:
    return CrlAnswer(
        GOOD, crl_number=number, this_update=this_update, next_update=this_update + WEEK
    )


def _numbers(crls: tuple[Crl, ...]) -> list[int]:
    """The CRL numbers of ``crls``, sorted (every test CRL has one)."""
    return sorted(crl.info.number or 0 for crl in crls)


NO_CRL_ANSWER = CrlAnswer(UNKNOWN, problem=NO_CRL)
STALE_ANSWER = CrlAnswer(UNKNOWN, problem=STALE)


# -- loading -----------------------------------------------------------------------------------


def test_load_crl_der_and_pem(pki: TestPKI) -> None:
    crl = pki.crl(IssuerCA.MOICA, number=5)
    der = crl.public_bytes(serialization.Encoding.DER)
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        loaded = load_crl(crl.public_bytes(encoding))
        assert isinstance(loaded, Crl)
        assert (loaded.der, loaded.crl, loaded.info.number) == (der, crl, 5)


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x30\x03\x02\x01\x01"])
def test_load_crl_refuses_garbage(data: bytes) -> None:
    with pytest.raises(RefusedError) as caught:
        load_crl(data)
    assert (caught.value.code, caught.value.detail) == (ErrorCode.NOT_A_CERTIFICATE, "not a CRL")


def test_build_takes_read_crls_and_cryptography_crls_alike(pki: TestPKI) -> None:
    card = pki.issue_person()
    crl = pki.crl(IssuerCA.MOICA, [card], number=3)
    for item in (crl, load_crl(crl.public_bytes(serialization.Encoding.DER))):
        assert _answer(_index(pki, item), card).status is REVOKED


# -- good / revoked / unknown ------------------------------------------------------------------


def test_fresh_complete_crl_answers_good_for_a_card_it_does_not_list(pki: TestPKI) -> None:
    card = pki.issue_person()
    index = _index(pki, pki.crl(IssuerCA.MOICA, [pki.issue_person()], number=4))
    assert _answer(index, card) == _good(4)


@pytest.mark.parametrize(
    "reason",
    [
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.superseded,
        None,  # no reasonCode: still revoked
    ],
)
def test_listed_card_is_revoked_with_reason_and_time(
    pki: TestPKI, reason: x509.ReasonFlags | None
) -> None:
    card, other = pki.issue_person(), pki.issue_person()
    revoked_at = NOW - 2 * DAY
    crl = pki.crl(IssuerCA.MOICA, [card], number=9, this_update=revoked_at, reason=reason)
    index = _index(pki, crl)
    assert _answer(index, card) == CrlAnswer(
        REVOKED,
        crl_number=9,
        this_update=revoked_at,
        next_update=revoked_at + WEEK,
        reason=reason,
        revoked_at=revoked_at,  # TestPKI dates every entry at the CRL's thisUpdate
    )
    assert _answer(index, other) == _good(9, revoked_at)


def test_another_issuers_key_has_no_crl_even_under_the_same_name(pki: TestPKI) -> None:
    index = _index(pki, pki.crl(IssuerCA.MOICA, [], number=2))
    lookalike = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=True)
    assert lookalike.name == pki.ca(IssuerCA.MOICA).name
    victim = pki.issue_person(issuer=lookalike)
    assert _answer(index, victim) == NO_CRL_ANSWER
    real = pki.issue_person()  # the real card asked against the look-alike's key: no CRL either
    assert index.answer(real.certificate, lookalike.certificate, at=NOW, grace=GRACE) == (
        NO_CRL_ANSWER
    )
    assert _answer(index, real) == _good(2)


def test_an_issuer_without_crls_and_the_empty_index_answer_no_crl(pki: TestPKI) -> None:
    card = pki.issue_person()
    index = _index(pki, pki.crl(IssuerCA.MOEACA, [card], number=1))  # the serial, another CA
    assert _answer(index, card) == NO_CRL_ANSWER
    assert _answer(RevocationIndex.empty(), card) == NO_CRL_ANSWER
    assert not RevocationIndex.empty() and index


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (timedelta(0), _good(1, NOW - WEEK)),  # exactly nextUpdate
        (GRACE, _good(1, NOW - WEEK)),  # exactly nextUpdate + grace: still fresh
        (GRACE + SECOND, STALE_ANSWER),  # one second later: stale
        (30 * DAY, STALE_ANSWER),  # long stale
    ],
)
def test_staleness_bounds(pki: TestPKI, after: timedelta, expected: CrlAnswer) -> None:
    card = pki.issue_person()
    crl = pki.crl(IssuerCA.MOICA, [], number=1, this_update=NOW - WEEK)  # nextUpdate: NOW
    assert _answer(_index(pki, crl), card, at=NOW + after) == expected


def test_grace_zero_is_stale_one_second_past_next_update(pki: TestPKI) -> None:
    card = pki.issue_person()
    index = _index(pki, pki.crl(IssuerCA.MOICA, [], number=1, this_update=NOW - WEEK))
    assert _answer(index, card, at=NOW, grace=timedelta(0)).status is GOOD
    assert _answer(index, card, at=NOW + SECOND, grace=timedelta(0)) == STALE_ANSWER


def test_a_revocation_in_a_stale_crl_is_still_final(pki: TestPKI) -> None:
    card = pki.issue_person()
    old = NOW - 60 * DAY
    crl = pki.crl(
        IssuerCA.MOICA, [card], number=2, this_update=old, reason=x509.ReasonFlags.key_compromise
    )
    assert _answer(_index(pki, crl), card) == CrlAnswer(
        REVOKED,
        crl_number=2,
        this_update=old,
        next_update=old + WEEK,
        reason=x509.ReasonFlags.key_compromise,
        revoked_at=old,
    )


def test_a_hold_counts_only_in_a_fresh_crl(pki: TestPKI) -> None:
    card = pki.issue_person()
    hold = x509.ReasonFlags.certificate_hold
    fresh = pki.crl(IssuerCA.MOICA, [card], number=5, reason=hold)
    assert _answer(_index(pki, fresh), card) == CrlAnswer(
        REVOKED,
        crl_number=5,
        this_update=NOW,
        next_update=NOW + WEEK,
        reason=hold,
        revoked_at=NOW,
    )
    # the same CRL read a day after nextUpdate + grace: the hold may have been lifted since
    later = NOW + WEEK + GRACE + DAY
    assert _answer(_index(pki, fresh), card, at=later) == STALE_ANSWER


def test_a_hold_lifted_by_the_next_crl_is_good_again(pki: TestPKI) -> None:
    card = pki.issue_person()
    held = pki.crl(
        IssuerCA.MOICA,
        [card],
        number=1,
        this_update=NOW - DAY,
        reason=x509.ReasonFlags.certificate_hold,
    )
    lifted = pki.crl(IssuerCA.MOICA, [], number=2)
    for crls in ([held, lifted], [lifted, held]):
        assert _answer(_index(pki, *crls), card) == _good(2)


def test_remove_from_crl_is_not_a_revocation(pki: TestPKI) -> None:
    card = pki.issue_person()
    crl = pki.crl(IssuerCA.MOICA, [card], number=3, reason=x509.ReasonFlags.remove_from_crl)
    assert _answer(_index(pki, crl), card) == _good(3)


# -- newest wins -------------------------------------------------------------------------------


def test_newest_crl_per_issuer_wins_whatever_the_order(pki: TestPKI) -> None:
    first, second = pki.issue_company("04595257"), pki.issue_company("10458575")
    hold = x509.ReasonFlags.certificate_hold
    old = pki.crl(IssuerCA.MOEACA, [first], number=1, this_update=NOW - DAY, reason=hold)
    new = pki.crl(IssuerCA.MOEACA, [second], number=2, reason=hold)
    moeaca = pki.ca(IssuerCA.MOEACA).certificate
    for crls in ([old, new], [new, old]):
        index = _index(pki, *crls)
        assert [crl.info.number for crl in index.crls_of(moeaca)] == [2]
        assert _answer(index, second).status is REVOKED
        assert _answer(index, first) == _good(2)  # taken off hold in CRL 2


def test_same_number_later_this_update_wins(pki: TestPKI) -> None:
    card = pki.issue_person()
    earlier = pki.crl(IssuerCA.MOICA, [], number=7, this_update=NOW - 2 * DAY)
    later = pki.crl(IssuerCA.MOICA, [card], number=7, this_update=NOW - DAY)
    for crls in ([later, earlier], [earlier, later]):
        assert _answer(_index(pki, *crls), card).status is REVOKED


def test_a_higher_number_wins_over_a_later_this_update(pki: TestPKI) -> None:
    card = pki.issue_person()
    higher = pki.crl(IssuerCA.MOICA, [], number=8, this_update=NOW - DAY)
    lower = pki.crl(IssuerCA.MOICA, [], number=6, this_update=NOW)
    assert _answer(_index(pki, lower, higher), card) == _good(8, NOW - DAY)


def test_crls_of_several_issuers(pki: TestPKI) -> None:
    person, customs = pki.issue_person(), pki.issue_customs("97162640")
    index = _index(
        pki, pki.crl(IssuerCA.MOICA, [person]), pki.crl(IssuerCA.TAICA, [customs], number=9)
    )
    assert _answer(index, person).status is REVOKED
    assert (_answer(index, customs).status, _answer(index, customs).crl_number) == (REVOKED, 9)
    assert _answer(index, pki.issue_customs("97162640")) == _good(9)


def test_a_ca_certificate_is_answered_by_its_roots_crl(pki: TestPKI) -> None:
    moica = pki.ca(IssuerCA.MOICA).certificate
    moeaca = pki.ca(IssuerCA.MOEACA).certificate
    root = pki.root.certificate
    assert moica.issuer == root.subject and moeaca.issuer == root.subject
    index = _index(pki, pki.crl(pki.root, [moica], number=4))
    assert index.answer(moica, root, at=NOW, grace=GRACE).status is REVOKED
    assert index.answer(moeaca, root, at=NOW, grace=GRACE) == _good(4)


def test_the_published_crls_answer_good_for_every_family(pki: TestPKI) -> None:
    index = RevocationIndex.build(pki.published_crls(), pki.trust_store())
    earlier = NOW - timedelta(hours=1)
    cards = [
        pki.issue_person(),
        pki.issue_company("04595257"),
        pki.issue_organization("2.16.886.111.1"),
        pki.issue_agency("2.16.886.101.1"),
        pki.issue_customs("97162640"),
    ]
    for card in cards:
        answer = _answer(index, card, at=NOW + 365 * DAY)
        assert (answer.status, answer.crl_number, answer.this_update) == (GOOD, 1, earlier)
        intermediate, root = card.chain[0], card.chain[-1]
        assert index.answer(intermediate, root, at=NOW, grace=GRACE).status is GOOD


# -- partitions --------------------------------------------------------------------------------


def test_a_card_is_covered_only_by_its_own_partitions_crl(pki: TestPKI) -> None:
    in_a, in_b = pki.issue_person(crl_url=URL_A), pki.issue_person(crl_url=URL_B)
    unnamed = pki.issue_person()  # names no distribution point
    assert distribution_points(in_a.certificate) == (URL_A,)
    index = _index(pki, pki.crl(IssuerCA.MOICA, [], number=10, partition=[URL_A]))
    assert _answer(index, in_a) == _good(10)
    assert _answer(index, in_b) == NO_CRL_ANSWER  # a fresh CRL, but of another partition
    assert _answer(index, unnamed) == NO_CRL_ANSWER


def test_a_revocation_in_another_partitions_crl_is_still_final(pki: TestPKI) -> None:
    in_a, in_b = pki.issue_person(crl_url=URL_A), pki.issue_person(crl_url=URL_B)
    index = _index(pki, pki.crl(IssuerCA.MOICA, [in_b], number=10, partition=[URL_A]))
    assert _answer(index, in_b).status is REVOKED
    assert _answer(index, in_b).crl_number == 10
    assert _answer(index, in_a) == _good(10)


def test_a_hold_in_another_partitions_crl_does_not_count(pki: TestPKI) -> None:
    in_b = pki.issue_person(crl_url=URL_B)
    crl = pki.crl(
        IssuerCA.MOICA,
        [in_b],
        number=10,
        partition=[URL_A],
        reason=x509.ReasonFlags.certificate_hold,
    )
    assert _answer(_index(pki, crl), in_b) == NO_CRL_ANSWER


def test_a_fresh_other_partition_does_not_hide_a_stale_own_one(pki: TestPKI) -> None:
    in_a = pki.issue_person(crl_url=URL_A)
    own = pki.crl(IssuerCA.MOICA, [], number=3, partition=[URL_A], this_update=NOW - 30 * DAY)
    other = pki.crl(IssuerCA.MOICA, [], number=4, partition=[URL_B])
    assert _answer(_index(pki, own, other), in_a) == STALE_ANSWER


def test_a_complete_crl_covers_every_partition(pki: TestPKI) -> None:
    in_a, in_b = pki.issue_person(crl_url=URL_A), pki.issue_person(crl_url=URL_B)
    unnamed = pki.issue_person()
    partition_a = pki.crl(IssuerCA.MOICA, [], number=40, partition=[URL_A])
    complete = pki.crl(IssuerCA.MOICA, [], number=12)
    index = _index(pki, partition_a, complete)
    assert _answer(index, in_b) == _good(12)
    assert _answer(index, unnamed) == _good(12)
    assert _answer(index, in_a) == _good(40)  # the newest fresh CRL covering it
    stale_partition = pki.crl(
        IssuerCA.MOICA, [], number=40, partition=[URL_A], this_update=NOW - 30 * DAY
    )
    assert _answer(_index(pki, stale_partition, complete), in_a) == _good(12)


def test_a_crl_naming_several_partitions_covers_each(pki: TestPKI) -> None:
    in_a, in_b = pki.issue_person(crl_url=URL_A), pki.issue_person(crl_url=URL_B)
    index = _index(pki, pki.crl(IssuerCA.MOICA, [in_b], number=5, partition=[URL_A, URL_B]))
    assert _answer(index, in_a) == _good(5)
    assert _answer(index, in_b).status is REVOKED


def test_newest_crl_per_partition_wins(pki: TestPKI) -> None:
    in_a, in_b = pki.issue_person(crl_url=URL_A), pki.issue_person(crl_url=URL_B)
    hold = x509.ReasonFlags.certificate_hold
    a_old = pki.crl(
        IssuerCA.MOICA, [in_a], number=20, partition=[URL_A], this_update=NOW - DAY, reason=hold
    )
    a_new = pki.crl(IssuerCA.MOICA, [], number=21, partition=[URL_A])
    b_only = pki.crl(IssuerCA.MOICA, [in_b], number=7, partition=[URL_B], reason=hold)
    moica = pki.ca(IssuerCA.MOICA).certificate
    for crls in ([a_old, a_new, b_only], [b_only, a_new, a_old]):
        index = _index(pki, *crls)
        assert _numbers(index.crls_of(moica)) == [7, 21]
        assert _answer(index, in_a) == _good(21)  # the hold of CRL 20 is gone with it
        assert _answer(index, in_b).status is REVOKED  # B's older number does not lose to A's


def _idp_crl(
    ca: TestCA,
    *,
    uris: tuple[str, ...],
    only_user: bool = False,
    only_ca: bool = False,
    number: int = 1,
) -> x509.CertificateRevocationList:
    """A CRL of ``ca`` with an issuingDistributionPoint naming ``uris`` and scope flags."""
    names = [x509.UniformResourceIdentifier(u) for u in uris] or None
    idp = x509.IssuingDistributionPoint(names, None, only_user, only_ca, None, False, False)
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.name)
        .last_update(NOW)
        .next_update(NOW + WEEK)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
        .add_extension(idp, critical=True)
        .sign(ca.key, hashes.SHA256())
    )


def _sub_ca_with_crl_url(pki: TestPKI, url: str) -> x509.Certificate:
    """A CA certificate issued by the root that names ``url`` as its CRL distribution point."""
    root = pki.root
    key = pki.ca(IssuerCA.MOICA).key  # any key: the certificate is only asked about
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swreg TEST sub")]))
        .issuer_name(root.name)
        .public_key(key.public_key())
        .serial_number(424242)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(True, 0), critical=True)
        .add_extension(x509.CRLDistributionPoints([point]), critical=False)
        .sign(root.key, hashes.SHA256())
    )


def test_user_only_and_ca_only_crls_cover_their_scope(pki: TestPKI) -> None:
    card = pki.issue_person(crl_url=URL_A)
    root = pki.root
    sub = _sub_ca_with_crl_url(pki, URL_A)
    assert is_ca_certificate(sub) and not is_ca_certificate(card.certificate)
    moica = pki.ca(IssuerCA.MOICA)
    user_only = _index(pki, _idp_crl(moica, uris=(URL_A,), only_user=True, number=3))
    assert _answer(user_only, card) == _good(3)
    ca_only = _index(pki, _idp_crl(moica, uris=(URL_A,), only_ca=True, number=4))
    assert _answer(ca_only, card) == NO_CRL_ANSWER
    root_ca_only = _index(pki, _idp_crl(root, uris=(URL_A,), only_ca=True, number=5))
    assert root_ca_only.answer(sub, root.certificate, at=NOW, grace=GRACE) == _good(5)
    root_user_only = _index(pki, _idp_crl(root, uris=(URL_A,), only_user=True, number=6))
    assert root_user_only.answer(sub, root.certificate, at=NOW, grace=GRACE) == NO_CRL_ANSWER


def test_user_only_and_ca_only_crls_of_one_partition_are_both_kept(pki: TestPKI) -> None:
    moica = pki.ca(IssuerCA.MOICA)
    index = _index(
        pki,
        _idp_crl(moica, uris=(URL_A,), only_user=True, number=3),
        _idp_crl(moica, uris=(URL_A,), only_ca=True, number=9),
    )
    assert _numbers(index.crls_of(moica.certificate)) == [3, 9]
    assert _answer(index, pki.issue_person(crl_url=URL_A)) == _good(3)


# -- who may sign a CRL ------------------------------------------------------------------------


def test_crl_of_a_lookalike_ca_is_refused(pki: TestPKI) -> None:
    for copy in (False, True):  # with its own key identifier, and claiming the real one
        forged = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=copy)
        with pytest.raises(CertificateError) as caught:
            _index(pki, pki.crl(forged))
        assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED
        with pytest.raises(CertificateError):
            verified_issuer(load_crl(pki.crl(forged).public_bytes(_DER)), pki.trust_store())


def test_crl_signed_by_another_key_is_refused(pki: TestPKI) -> None:
    card = pki.issue_person()
    forged = pki.crl(IssuerCA.MOICA, [card], signing_key=pki.ca(IssuerCA.MOEACA).key)
    with pytest.raises(CertificateError) as caught:
        _index(pki, forged)
    assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED


def test_verified_issuer_is_the_ca_whose_key_signed(pki: TestPKI) -> None:
    for ca in (pki.ca(IssuerCA.MOICA), pki.ca(IssuerCA.TAICA), pki.root):
        crl = load_crl(pki.crl(ca).public_bytes(serialization.Encoding.DER))
        assert verified_issuer(crl, pki.trust_store()) == ca.certificate


def test_crl_issuer_must_chain_to_an_anchor(pki: TestPKI) -> None:
    # the issuing CA is known only as an intermediate given alongside, not chained: refused
    other = TestPKI.create(NOW)
    crl = other.crl(IssuerCA.MOICA)
    helper = other.ca(IssuerCA.MOICA).certificate
    with pytest.raises(CertificateError):
        RevocationIndex.build([crl], pki.trust_store(), issuers=[helper])
    index = RevocationIndex.build(
        [crl], other.trust_store(with_intermediates=False), issuers=[helper]
    )
    assert [c.info.number for c in index.crls_of(helper)] == [1]
    assert _answer(index, other.issue_person()) == _good(1)


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


# -- helpers -----------------------------------------------------------------------------------


def test_issuers_are_looked_up_by_key_not_by_object(pki: TestPKI) -> None:
    card = pki.issue_person()
    issuer = card.chain[0]
    index = _index(pki, pki.crl(IssuerCA.MOICA, [card], number=7))
    copy = x509.load_der_x509_certificate(issuer.public_bytes(serialization.Encoding.DER))
    assert copy is not issuer
    for candidate in (issuer, copy, issuer, copy):
        assert index.answer(card.certificate, candidate, at=NOW, grace=GRACE).crl_number == 7
        assert [c.info.number for c in index.crls_of(candidate)] == [7]
    assert RevocationIndex.empty().crls_of(issuer) == ()


def test_issuer_key_is_the_spki_hash(pki: TestPKI) -> None:
    ca = pki.ca(IssuerCA.MOICA).certificate
    assert len(issuer_key(ca)) == 32
    assert issuer_key(ca) != issuer_key(pki.lookalike_ca(IssuerCA.MOICA).certificate)


def test_distribution_points_and_ca_flag(pki: TestPKI) -> None:
    assert distribution_points(pki.issue_person(crl_url=URL_B).certificate) == (URL_B,)
    assert distribution_points(pki.issue_person().certificate) == ()
    assert is_ca_certificate(pki.ca(IssuerCA.MOICA).certificate)
    assert is_ca_certificate(pki.root.certificate)
    assert not is_ca_certificate(pki.issue_company("04595257").certificate)


# -- the verdict's stored shapes ---------------------------------------------------------------

CHECKED = datetime(2025, 6, 1, 11, 0, 0, tzinfo=UTC)
TRIED = (
    {"source": "ocsp", "url": "http://ocsp.test/", "status": "unknown", "problem": "unreachable"},
    {"source": "crl", "crl_number": "7", "status": "revoked", "problem": None},
)


def test_revoked_verdict_as_dict_and_as_evidence() -> None:
    verdict = RevocationVerdict(
        RevocationStatus.REVOKED,
        RevocationSource.CRL,
        CHECKED,
        subject="CN=王小明,serialNumber=1234567890123456,C=TW",
        tried=TRIED,
        reason=x509.ReasonFlags.key_compromise,
        revoked_at=datetime(2025, 5, 30, 8, 0, 0, tzinfo=UTC),
        crl_number=7,
        valid_until=CHECKED + WEEK,
    )
    shown = {
        "status": "revoked",
        "source": "crl",
        "tried": [dict(t) for t in TRIED],
        "checked_at": "2025-06-01T11:00:00+00:00",
        "reason": "key_compromise",
        "revoked_at": "2025-05-30T08:00:00+00:00",
    }
    assert verdict.as_dict() == shown
    assert verdict.as_evidence() == {
        **shown,
        "subject": "CN=王小明,serialNumber=1234567890123456,C=TW",
        "crl_number": "7",
        "ocsp_response": None,
    }
    assert verdict.audit() == {"status": "revoked", "source": "crl", "crl_number": "7"}


def test_good_ocsp_verdict_carries_its_response() -> None:
    verdict = RevocationVerdict(
        RevocationStatus.GOOD,
        RevocationSource.OCSP,
        CHECKED,
        subject="serialNumber=04595257,O=測試貿易股份有限公司,C=TW",
        tried=({"source": "ocsp", "url": "http://ocsp.test/", "status": "good"},),
        ocsp_response=b"\x30\x03\x0a\x01\x00",
    )
    assert verdict.as_evidence() == {
        "status": "good",
        "source": "ocsp",
        "tried": [{"source": "ocsp", "url": "http://ocsp.test/", "status": "good"}],
        "checked_at": "2025-06-01T11:00:00+00:00",
        "reason": None,
        "revoked_at": None,
        "subject": "serialNumber=04595257,O=測試貿易股份有限公司,C=TW",
        "crl_number": None,
        "ocsp_response": "MAMKAQA=",
    }
    assert verdict.audit() == {"status": "good", "source": "ocsp", "ocsp_response": "MAMKAQA="}


def test_unknown_verdict_accepted_softly_is_marked() -> None:
    verdict = RevocationVerdict(
        RevocationStatus.UNKNOWN, RevocationSource.NONE, CHECKED, subject="CN=x", tried=TRIED[:1]
    )
    soft = verdict.accepted_softly()
    assert (verdict.policy, soft.policy) == (None, "soft")
    assert (
        soft.as_dict()
        == verdict.as_dict()
        == {
            "status": "unknown",
            "source": "none",
            "tried": [dict(TRIED[0])],
            "checked_at": "2025-06-01T11:00:00+00:00",
            "reason": None,
            "revoked_at": None,
        }
    )
    assert soft.as_evidence() == {
        **verdict.as_dict(),
        "subject": "CN=x",
        "crl_number": None,
        "ocsp_response": None,
        "policy": "soft",
    }
    assert "policy" not in verdict.as_evidence()
    assert soft.audit() == {"status": "unknown", "source": "none", "policy": "soft"}
