"""Path building on real GPKI chains and on built hierarchies; validity bounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from engine._errors import CertificateError, ErrorCode
from engine.core.declarations import IssuerCA
from engine.pki.trust import (
    LEGACY_SHA1_CA_FINGERPRINTS,
    MAX_PATH_LENGTH,
    TrustStore,
    check_validity,
)
from engine.testing import IssuedCard, TestPKI
from engine.testing.pki import sha1_signed

from .vectors import ALL_VECTORS, GpkiVector, vector

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


def untrusted(
    store: TrustStore, cert: x509.Certificate, extra: Sequence[x509.Certificate] = ()
) -> CertificateError:
    with pytest.raises(CertificateError) as caught:
        store.build_path(cert, extra=extra)
    assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED
    return caught.value


# -- real GPKI chains --------------------------------------------------------------------------


def test_grca_2002_root_to_moica_g1() -> None:
    store = TrustStore([vector("grca-g1-2002-root")])
    chain = store.build_path(vector("moica-g1-ca"))  # SHA-1 signed CA certificate
    assert chain == (vector("moica-g1-ca"), vector("grca-g1-2002-root"))


@pytest.mark.parametrize("ca", ["moica-g2-ca", "moeaca-g2-ca"])
def test_g2_cas_chain_through_the_2012_link_certificate(ca: GpkiVector) -> None:
    store = TrustStore([vector("grca-g1-2002-root")], [vector("grca-2012-link")])
    chain = store.build_path(vector(ca))
    assert chain == (
        vector(ca),
        vector("grca-2012-link"),
        vector("grca-g1-2002-root"),
    )


def test_moeaca_g2_card_chains_to_the_2002_root() -> None:
    store = TrustStore(
        anchors=[vector("grca-g1-2002-root")],
        intermediates=[vector("grca-2012-link"), vector("moeaca-g2-ca")],
    )
    chain = store.build_path(vector("moeaca-ee-g2-2019-citibank"))
    assert chain == (
        vector("moeaca-ee-g2-2019-citibank"),
        vector("moeaca-g2-ca"),
        vector("grca-2012-link"),
        vector("grca-g1-2002-root"),
    )


def test_grca_g3_to_moica_g3() -> None:
    store = TrustStore([vector("grca-g3-root")])
    assert store.build_path(vector("moica-g3-ca")) == (
        vector("moica-g3-ca"),
        vector("grca-g3-root"),
    )


def test_the_card_chain_may_come_from_extra() -> None:
    store = TrustStore([vector("grca-g1-2002-root")])
    extra = [vector("moeaca-g2-ca"), vector("grca-2012-link")]
    chain = store.build_path(vector("moeaca-ee-g2-2019-citibank"), extra=extra)
    assert len(chain) == 4


def test_a_name_alone_never_chains() -> None:
    # moeaca-g2-ca has exactly the DN of MOEACA G1, but not its key (AKI and signature differ)
    store = TrustStore(
        [vector("grca-g1-2002-root")], [vector("grca-2012-link"), vector("moeaca-g2-ca")]
    )
    untrusted(store, vector("moeaca-ee-g1-2011-uxb2b"))
    # moica-g2-ca names the GRCA root as issuer, but was signed by the link key
    untrusted(TrustStore([vector("grca-g1-2002-root")]), vector("moica-g2-ca"))
    # and the G3 CA does not chain to the 2002 root under any name
    untrusted(TrustStore([vector("grca-g1-2002-root")]), vector("moica-g3-ca"))


def test_sha1_end_entity_signatures_are_refused_by_default() -> None:
    anchors = [vector("grca-g1-2002-root")]
    intermediates = [vector("moeaca-g1-ca")]
    error = untrusted(TrustStore(anchors, intermediates), vector("moeaca-ee-g1-2011-uxb2b"))
    assert "SHA-1" in (error.detail or "")
    lenient = TrustStore(anchors, intermediates, sha1_end_entities=True)
    assert lenient.build_path(vector("moeaca-ee-g1-2011-uxb2b")) == (
        vector("moeaca-ee-g1-2011-uxb2b"),
        vector("moeaca-g1-ca"),
        vector("grca-g1-2002-root"),
    )


# -- SHA-1 on CA certificates: only the pinned legacy ones ------------------------------------


def test_every_sha1_signed_ca_vector_is_pinned_and_nothing_else() -> None:
    sha1_cas = {
        cert.fingerprint(hashes.SHA256()).hex()
        for cert in (vector(name) for name in ALL_VECTORS)
        if isinstance(cert.signature_hash_algorithm, hashes.SHA1) and _is_ca(cert)
    }
    assert sha1_cas == LEGACY_SHA1_CA_FINGERPRINTS
    # the pinned SHA-1 root is still seen as self-signed: the path ends at it
    store = TrustStore([vector("grca-g1-2002-root")], [vector("moeaca-g1-ca")])
    assert store.build_path(vector("moeaca-g1-ca"))[-1] == vector("grca-g1-2002-root")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_a_sha1_signed_ca_certificate_that_is_not_pinned_is_refused(key_type: str) -> None:
    pki = TestPKI.create(NOW, key_type="rsa" if key_type == "rsa" else "ec")
    moica = pki.ca(IssuerCA.MOICA)
    weak = sha1_signed(moica.certificate, pki.root.key)
    assert isinstance(weak.signature_hash_algorithm, hashes.SHA1)
    # a genuine SHA-1 signature by the root's key: refused by policy, not as a broken signature
    root_key = pki.root.certificate.public_key()
    if isinstance(root_key, rsa.RSAPublicKey):
        root_key.verify(
            weak.signature, weak.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1()
        )
    else:
        assert isinstance(root_key, ec.EllipticCurvePublicKey)
        root_key.verify(weak.signature, weak.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))
    card = pki.issue_person()
    error = untrusted(TrustStore(pki.anchors(), [weak]), card.certificate)
    assert "SHA-1" in (error.detail or "")
    untrusted(TrustStore(pki.anchors()), card.certificate, extra=[weak])  # sent along by a card
    untrusted(TrustStore(pki.anchors(), sha1_end_entities=True), card.certificate, extra=[weak])
    # the same CA signed with SHA-256 chains
    assert TrustStore(pki.anchors(), [moica.certificate]).build_path(card.certificate) == (
        card.certificate,
        moica.certificate,
        pki.root.certificate,
    )


def test_a_sha1_signed_anchor_is_not_a_self_signed_root_unless_pinned() -> None:
    pki = TestPKI.create(NOW)
    weak_root = sha1_signed(pki.root.certificate, pki.root.key)
    card = pki.issue_person()
    moica = pki.ca(IssuerCA.MOICA).certificate
    # an anchor is configuration: still trusted, but its SHA-1 self-signature is not believed
    store = TrustStore([weak_root], [moica])
    assert store.build_path(card.certificate) == (card.certificate, moica, weak_root)


def test_path_continues_past_an_intermediate_anchor_to_the_root() -> None:
    store = TrustStore(
        anchors=[vector("moeaca-g2-ca"), vector("grca-2012-link"), vector("grca-g1-2002-root")]
    )
    chain = store.build_path(vector("moeaca-ee-g2-2019-citibank"))
    assert chain[-1] == vector("grca-g1-2002-root")
    assert len(chain) == 4


def test_an_anchor_that_is_not_self_signed_ends_the_path_when_nothing_is_above() -> None:
    store = TrustStore(anchors=[vector("moeaca-g2-ca")])
    chain = store.build_path(vector("moeaca-ee-g2-2019-citibank"))
    assert chain == (vector("moeaca-ee-g2-2019-citibank"), vector("moeaca-g2-ca"))


def test_intermediates_are_not_trusted_on_their_own() -> None:
    store = TrustStore(anchors=[], intermediates=[vector("moeaca-g2-ca"), vector("grca-2012-link")])
    untrusted(store, vector("moeaca-ee-g2-2019-citibank"))
    assert store.intermediates == (vector("moeaca-g2-ca"), vector("grca-2012-link"))


# -- test PKI ----------------------------------------------------------------------------------


ISSUE: dict[str, Callable[[TestPKI], IssuedCard]] = {
    "MOICA": lambda p: p.issue_person(),
    "MOEACA": lambda p: p.issue_company("04595257"),
    "XCA": lambda p: p.issue_organization("2.16.886.111.90010.90003.100004"),
    "GCA": lambda p: p.issue_agency("2.16.886.101.20003.20065.20065"),
    "TaiCA": lambda p: p.issue_customs("97162640"),
}


@pytest.mark.parametrize("family", ISSUE)
def test_test_pki_cards_chain_to_their_root(pki: TestPKI, family: str) -> None:
    card = ISSUE[family](pki)
    chain = pki.trust_store().build_path(card.certificate)
    assert chain == (card.certificate, *card.chain)
    # without intermediates in the store, the chain the card sends along is enough
    bare = pki.trust_store(with_intermediates=False)
    assert bare.build_path(card.certificate, extra=card.chain[:1]) == chain
    untrusted(bare, card.certificate)


def test_rsa_test_pki_chains() -> None:
    rsa_pki = TestPKI.create(NOW, key_type="rsa")
    card = rsa_pki.issue_person(key="rsa")
    assert len(rsa_pki.trust_store().build_path(card.certificate)) == 3


def test_lookalike_ca_is_untrusted(pki: TestPKI) -> None:
    forged = pki.lookalike_ca(IssuerCA.MOICA)
    assert forged.name == pki.ca(IssuerCA.MOICA).name
    card = pki.issue_person(issuer=forged)
    store = pki.trust_store()
    untrusted(store, card.certificate)
    untrusted(store, card.certificate, [forged.certificate])


def test_lookalike_with_copied_key_identifier_fails_on_the_signature(pki: TestPKI) -> None:
    forged = pki.lookalike_ca(IssuerCA.MOEACA, copy_key_identifier=True)
    card = pki.issue_company("04595257", issuer=forged)
    aki = card.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert aki.value.key_identifier == pki.ca(IssuerCA.MOEACA).key_identifier
    untrusted(pki.trust_store(), card.certificate)


def test_another_test_pki_is_untrusted(pki: TestPKI) -> None:
    other = TestPKI.create(NOW)
    untrusted(pki.trust_store(), other.issue_person().certificate)


def test_a_ca_that_is_also_an_anchor_still_shows_the_root(pki: TestPKI) -> None:
    moica = pki.ca(IssuerCA.MOICA).certificate
    store = TrustStore([moica, *pki.anchors()])
    card = pki.issue_person()
    assert store.build_path(card.certificate) == (card.certificate, moica, pki.root.certificate)


# -- built hierarchies: CA constraints, loops, depth -------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: PrivateKey,
    issuer: str,
    issuer_key: PrivateKey,
    *,
    ca: bool | None = True,
    path_length: int | None = None,
    cert_sign: bool | None = True,
    rsa_padding: padding.PSS | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    if cert_sign is not None:
        usage = x509.KeyUsage(
            digital_signature=not cert_sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=cert_sign,
            crl_sign=cert_sign,
            encipher_only=False,
            decipher_only=False,
        )
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA256(), rsa_padding=rsa_padding)


def test_issuers_must_be_able_to_issue() -> None:
    root_key, mid_key, ee_key = _key(), _key(), _key()
    root = _cert("Root", root_key, "Root", root_key)
    cases = {
        "BasicConstraints ca=False": _cert("Mid", mid_key, "Root", root_key, ca=False),
        "keyUsage without keyCertSign": _cert("Mid", mid_key, "Root", root_key, cert_sign=False),
        "a v3 intermediate without BasicConstraints": _cert(
            "Mid", mid_key, "Root", root_key, ca=None
        ),
    }
    ee = _cert("EE", ee_key, "Mid", mid_key, ca=None, cert_sign=False)
    for reason, mid in cases.items():
        store = TrustStore([root], [mid])
        with pytest.raises(CertificateError) as caught:
            store.build_path(ee)
        assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED, reason
    good = _cert("Mid", mid_key, "Root", root_key)
    assert TrustStore([root], [good]).build_path(ee) == (ee, good, root)


def test_root_without_key_usage_may_issue() -> None:
    # like the GRCA 2002 root: BasicConstraints, no keyUsage
    root_key, ee_key = _key(), _key()
    root = _cert("Root", root_key, "Root", root_key, cert_sign=None)
    ee = _cert("EE", ee_key, "Root", root_key, ca=None, cert_sign=False)
    assert TrustStore([root]).build_path(ee) == (ee, root)


def test_path_length_constraint_is_respected() -> None:
    root_key, ca_key, sub_key, ee_key = _key(), _key(), _key(), _key()
    root = _cert("Root", root_key, "Root", root_key)
    ca = _cert("CA", ca_key, "Root", root_key, path_length=0)
    sub = _cert("Sub", sub_key, "CA", ca_key)
    ee = _cert("EE", ee_key, "Sub", sub_key, ca=None, cert_sign=False)
    untrusted(TrustStore([root], [ca, sub]), ee)
    direct = _cert("EE", ee_key, "CA", ca_key, ca=None, cert_sign=False)
    assert len(TrustStore([root], [ca, sub]).build_path(direct)) == 3


def test_cross_signed_loop_terminates() -> None:
    a_key, b_key, ee_key, root_key = _key(), _key(), _key(), _key()
    a = _cert("A", a_key, "B", b_key)
    b = _cert("B", b_key, "A", a_key)
    root = _cert("Root", root_key, "Root", root_key)
    ee = _cert("EE", ee_key, "A", a_key, ca=None, cert_sign=False)
    untrusted(TrustStore([root], [a, b]), ee)


def _ladder(length: int) -> tuple[x509.Certificate, x509.Certificate, list[x509.Certificate]]:
    """A root, ``length`` intermediates under it in a line, and an EE under the last."""
    keys = [_key() for _ in range(length + 2)]
    root = _cert("L0", keys[0], "L0", keys[0])
    mids = [_cert(f"L{i}", keys[i], f"L{i - 1}", keys[i - 1]) for i in range(1, length + 1)]
    ee = _cert("EE", keys[-1], f"L{length}", keys[length], ca=None, cert_sign=False)
    return root, ee, mids


@pytest.mark.parametrize(
    ("intermediates", "builds"),
    [
        (MAX_PATH_LENGTH - 2, True),  # EE + 6 intermediates + root = 8 certificates: the limit
        (MAX_PATH_LENGTH - 1, False),  # one more: refused
    ],
)
def test_depth_limit(intermediates: int, builds: bool) -> None:
    root, ee, mids = _ladder(intermediates)
    store = TrustStore([root], mids)
    if builds:
        assert len(store.build_path(ee)) == MAX_PATH_LENGTH
    else:
        untrusted(store, ee)


def test_rsa_pss_signatures_verify() -> None:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    root = _cert("Root", root_key, "Root", root_key, rsa_padding=pss)
    ee_key = _key()
    ee = _cert("EE", ee_key, "Root", root_key, ca=None, cert_sign=False, rsa_padding=pss)
    assert TrustStore([root]).build_path(ee) == (ee, root)


# -- validity ----------------------------------------------------------------------------------


Moment = Callable[[datetime, datetime], datetime]  # (notBefore, notAfter) → the time checked


@pytest.mark.parametrize(
    ("moment", "code"),
    [
        (
            lambda nb, na: nb - timedelta(seconds=1),
            ErrorCode.CERTIFICATE_NOT_YET_VALID,
        ),  # 1 s early
        (lambda nb, na: nb, None),  # exactly notBefore: valid (inclusive)
        (lambda nb, na: nb + (na - nb) / 2, None),  # the middle of the period
        (lambda nb, na: na, None),  # exactly notAfter: valid (inclusive)
        (lambda nb, na: na + timedelta(seconds=1), ErrorCode.CERTIFICATE_EXPIRED),  # 1 s late
    ],
)
def test_check_validity_bounds(pki: TestPKI, moment: Moment, code: ErrorCode | None) -> None:
    cert = pki.issue_person().certificate
    at = moment(cert.not_valid_before_utc, cert.not_valid_after_utc)
    if code is None:
        check_validity(cert, at)
    else:
        with pytest.raises(CertificateError) as caught:
            check_validity(cert, at)
        assert caught.value.code is code


def test_check_validity_naive_time_is_utc(pki: TestPKI) -> None:
    card = pki.issue_person()
    naive = card.certificate.not_valid_before_utc.replace(tzinfo=None)
    check_validity(card.certificate, naive)
    with pytest.raises(CertificateError):
        check_validity(card.certificate, naive - timedelta(seconds=1))
