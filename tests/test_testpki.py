"""The test PKI makes what real GPKI/TaiCA certificates look like, labelled as test material."""

from __future__ import annotations

import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtensionOID, NameOID

from engine.core.declarations import IssuerCA
from engine.pki.certificate import load_certificate
from engine.testing import (
    TEST_POLICY_OID,
    IssuedCard,
    TestPKI,
    pkcs12_bytes,
    write_pem,
    write_pkcs12,
)

from .vectors import parsed_vector

NOW = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
WHOLE_NOW = NOW.replace(microsecond=0)
SDA = x509.ObjectIdentifier("2.5.29.9")


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


E = TypeVar("E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def _has(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    return any(e.oid == oid for e in cert.extensions)


# -- the CAs -----------------------------------------------------------------------------------


def test_ca_shapes(pki: TestPKI) -> None:
    for ca in [pki.root, pki.twca_root, *pki.cas.values()]:
        cert = ca.certificate
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(cn, str) and cn.startswith("swreg TEST ") and cn.endswith("(測試用)")
        constraints = _ext(cert, x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca
        usage = _ext(cert, x509.KeyUsage)
        assert usage.critical
        assert usage.value.key_cert_sign and usage.value.crl_sign
        assert not usage.value.digital_signature
        assert _has(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        policies = _ext(cert, x509.CertificatePolicies).value
        assert [p.policy_identifier for p in policies] == [TEST_POLICY_OID]
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    for ca in pki.cas.values():
        assert _has(ca.certificate, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)


def test_issuing_ca_names(pki: TestPKI) -> None:
    assert pki.ca(IssuerCA.MOICA).name.rfc4514_string() == (
        "CN=swreg TEST MOICA (測試用),OU=內政部憑證管理中心,O=行政院,C=TW"
    )
    assert pki.ca(IssuerCA.XCA).name.rfc4514_string() == (
        "CN=swreg TEST XCA (測試用),OU=組織及團體憑證管理中心,O=行政院,C=TW"
    )
    assert pki.ca(IssuerCA.TAICA).name.rfc4514_string() == (
        "CN=swreg TEST TaiCA (測試用),OU=TaiCA Test FXML CA,O=Finance,C=TW"
    )
    assert pki.root.name.rfc4514_string() == (
        "CN=swreg TEST Government Root CA (測試用),O=行政院,C=TW"
    )
    assert pki.anchors() == [pki.root.certificate, pki.twca_root.certificate]
    assert len(pki.intermediates()) == 5


def test_rsa_pki_has_rsa_cas() -> None:
    rsa_pki = TestPKI.create(NOW, key_type="rsa")
    for ca in [rsa_pki.root, *rsa_pki.cas.values()]:
        key = ca.certificate.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert isinstance(rsa_pki.issue_person().key, rsa.RSAPrivateKey)  # the PKI's default


def test_two_test_pkis_share_no_keys() -> None:
    one, two = TestPKI.create(NOW), TestPKI.create(NOW)
    assert one.ca(IssuerCA.MOICA).name == two.ca(IssuerCA.MOICA).name
    assert one.ca(IssuerCA.MOICA).key_identifier != two.ca(IssuerCA.MOICA).key_identifier


# -- cards -------------------------------------------------------------------------------------


def _sda_raw(card: IssuedCard) -> bytes:
    ext = card.certificate.extensions.get_extension_for_oid(SDA)
    assert not ext.critical
    value = ext.value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


@pytest.mark.parametrize(
    "issue",
    [
        lambda p: p.issue_person(),
        lambda p: p.issue_company("04595257"),
        lambda p: p.issue_organization("2.16.886.111.90010.90003.100004"),
        lambda p: p.issue_agency("2.16.886.101.20003.20065.20065"),
    ],
)
def test_gpki_card_shape(pki: TestPKI, issue: Callable[[TestPKI], IssuedCard]) -> None:
    card = issue(pki)
    cert = card.certificate
    assert not _has(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert not _has(cert, ExtensionOID.EXTENDED_KEY_USAGE)
    assert not _has(cert, ExtensionOID.BASIC_CONSTRAINTS)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert load_certificate(card.der()).key_usage == ("digital_signature",)
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == pki.ca(card.ca).key_identifier
    policies = _ext(cert, x509.CertificatePolicies).value
    assert [p.policy_identifier for p in policies] == [TEST_POLICY_OID]
    oids = [oid for oid, _ in load_certificate(card.der()).directory_attributes]
    assert oids == sorted(oids, key=lambda o: [int(a) for a in o.split(".")])  # ascending
    assert card.chain == (pki.ca(card.ca).certificate, pki.root.certificate)


def test_person_card_layout_and_sda_bytes(pki: TestPKI) -> None:
    card = pki.issue_person("王小明", "6789")
    subject = card.certificate.subject
    assert [a.oid for a in subject] == [
        NameOID.COUNTRY_NAME,
        NameOID.COMMON_NAME,
        NameOID.SERIAL_NUMBER,
    ]
    serial = subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    assert isinstance(serial, str) and len(serial) == 16
    # encoded as on the real MOICA cards: .1 OBJECT IDENTIFIER, .51 UTF8String, no .2
    assert _sda_raw(card).hex() == (
        "302a"
        "3015" "060760867601640201" "310a" "06086086760164030101"
        "3011" "060760867601640233" "3106" "0c0436373839"
    )  # fmt: skip


def test_company_sda_is_byte_identical_to_a_real_card(pki: TestPKI) -> None:
    card = pki.issue_company("28421312", rank="secondary")
    # the SDA of moeaca-ee-g2-2019-citibank.cer (a real 工商憑證), byte for byte
    real = (
        "30483017060760867601640201310c060a608676016403020201013016060760867601640202310b"
        "13097365636f6e646172793015060760867601640265310a0c083238343231333132"
    )
    assert _sda_raw(card).hex() == real
    assert parsed_vector("moeaca-ee-g2-2019-citibank").directory_attributes == (
        load_certificate(card.der()).directory_attributes
    )
    no_rdn = pki.issue_company("04595257", serial_rdn=False).certificate.subject
    assert not no_rdn.get_attributes_for_oid(NameOID.SERIAL_NUMBER)


def test_agency_sda_is_byte_identical_to_a_real_test_card(pki: TestPKI) -> None:
    card = pki.issue_agency("2.16.886.1.101.90007.20001", "測試機關1", rank="primary")
    # the SDA of gtestca-ee-testagency1.cer, byte for byte
    real = (
        "30483016060760867601640201310b06096086760164030201013014060760867601640202310913077072"
        "696d6172793018060760867601640266310d060b608676016585bf17819c21"
    )
    assert _sda_raw(card).hex() == real


def test_organization_and_agency_layout(pki: TestPKI) -> None:
    org = pki.issue_organization("2.16.886.111.90010.90003.100004", "測試大學")
    assert org.certificate.subject.rfc4514_string() == "O=測試大學,L=臺北市,C=TW"
    parsed = load_certificate(org.der())
    assert parsed.identity.subject_class == "2.16.886.1.100.3.2.11"
    assert parsed.attribute("2.16.886.1.100.2.102") == "2.16.886.111.90010.90003.100004"
    agency = load_certificate(pki.issue_agency("2.16.886.101.20003.20065.20065").der())
    assert agency.identity.subject_class == "2.16.886.1.100.3.2.1.1"
    assert agency.identity.oid == "2.16.886.101.20003.20065.20065"


def test_customs_card_layout(pki: TestPKI) -> None:
    card = pki.issue_customs("97162640", seq="06")
    cert = card.certificate
    assert cert.subject.rfc4514_string() == (
        "CN=97162640-06-000,OU=TST,OU=97162640-RA-001,OU=TaiCA Test FXML CA,O=Finance,C=TW"
    )
    assert cert.serial_number < 2**32
    assert load_certificate(card.der()).key_usage == ("digital_signature", "content_commitment")
    assert not _has(cert, SDA)
    assert card.ca is IssuerCA.TAICA
    assert card.chain == (pki.ca(IssuerCA.TAICA).certificate, pki.twca_root.certificate)


def test_validity_defaults_and_overrides(pki: TestPKI) -> None:
    card = pki.issue_person()
    assert card.certificate.not_valid_before_utc == WHOLE_NOW - timedelta(days=1)
    assert card.certificate.not_valid_after_utc == WHOLE_NOW + timedelta(days=730)
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    custom = pki.issue_person(valid_from=start, valid_to=end)
    assert custom.certificate.not_valid_before_utc == start
    assert custom.certificate.not_valid_after_utc == end


@pytest.mark.parametrize(("key", "size"), [("rsa", 2048), ("ec", 256)])
def test_key_choice_per_card(pki: TestPKI, key: str, size: int) -> None:
    card = pki.issue_person(key="rsa" if key == "rsa" else "ec")
    public = card.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    assert public.key_size == size


def test_unknown_key_usage_name_is_a_programming_error(pki: TestPKI) -> None:
    with pytest.raises(ValueError):
        pki.issue_person(key_usage=("sign_everything",))


# -- refusal material --------------------------------------------------------------------------


def test_lookalike_ca(pki: TestPKI) -> None:
    forged = pki.lookalike_ca(IssuerCA.GCA)
    real = pki.ca(IssuerCA.GCA)
    assert forged.name == real.name
    assert forged.certificate.issuer == forged.certificate.subject  # self-signed
    assert forged.key_identifier != real.key_identifier
    copied = pki.lookalike_ca(IssuerCA.GCA, copy_key_identifier=True)
    assert copied.key_identifier == real.key_identifier
    card = pki.issue_agency("2.16.886.101.1", issuer=forged)
    assert card.ca is IssuerCA.GCA and card.chain == (forged.certificate,)


def test_crl(pki: TestPKI) -> None:
    card = pki.issue_person()
    crl = pki.crl(IssuerCA.MOICA, revoked=[card, pki.issue_person().certificate], number=4)
    assert crl.issuer == pki.ca(IssuerCA.MOICA).name
    assert crl.get_revoked_certificate_by_serial_number(card.certificate.serial_number)
    assert len(crl) == 2
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 4
    public = pki.ca(IssuerCA.MOICA).certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public)


# -- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_pkcs12_round_trip_with_the_pin(pki: TestPKI, key: str, tmp_path: Path) -> None:
    card = pki.issue_person(key="rsa" if key == "rsa" else "ec")
    path = write_pkcs12(card, tmp_path / "card.p12", "246810")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = pkcs12.load_pkcs12(path.read_bytes(), b"246810")
    assert loaded.cert is not None and loaded.cert.certificate == card.certificate
    assert isinstance(loaded.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    assert loaded.key.public_key().public_numbers() == card.key.public_key().public_numbers()
    assert [c.certificate for c in loaded.additional_certs] == list(card.chain)
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(path.read_bytes(), b"000000")


def test_pkcs12_without_chain(pki: TestPKI) -> None:
    card = pki.issue_company("04595257")
    loaded = pkcs12.load_pkcs12(pkcs12_bytes(card, "1234", include_chain=False), b"1234")
    assert loaded.additional_certs == []
    assert TestPKI.pkcs12_bytes is not None and pki.write_pkcs12 is not None


def test_write_pem_and_der_helpers(pki: TestPKI, tmp_path: Path) -> None:
    card = pki.issue_person()
    path = write_pem(card, tmp_path / "card.pem")
    assert load_certificate(path.read_bytes()).certificate == card.certificate
    root = pki.write_pem(pki.root.certificate, tmp_path / "root.pem")
    assert load_certificate(root.read_bytes()).certificate == pki.root.certificate
    assert pki.der(card) == card.der()
    assert pki.der(pki.root.certificate) == load_certificate(root.read_bytes()).der
    assert card.chain_der()[0] == pki.der(pki.ca(IssuerCA.MOICA).certificate)
    assert card.key_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
