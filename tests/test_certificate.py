"""Parsing and classification: real GPKI vectors, the test PKI, refusals and hostile bytes."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine._errors import CertificateError, ErrorCode, RefusedError, SwregError
from engine.core.declarations import IssuerCA
from engine.pki.certificate import (
    MAX_CERTIFICATE_BYTES,
    ParsedCertificate,
    classify_issuer,
    load_certificate,
    parse_directory_attributes,
    ubn_conflict,
)
from engine.testing import TestPKI, pkcs12_bytes

from .vectors import ALL_VECTORS, GpkiVector, parsed_vector, vector, vector_bytes

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


def refusal(data: bytes) -> SwregError:
    with pytest.raises(SwregError) as caught:
        load_certificate(data)
    return caught.value


# -- real vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_VECTORS)
def test_every_vector_parses(name: GpkiVector) -> None:
    raw = vector_bytes(name)
    parsed = load_certificate(raw)
    assert parsed.der == raw
    assert parsed.fingerprint == hashlib.sha256(raw).hexdigest()
    assert parsed.serial_hex == format(vector(name).serial_number, "X")
    assert parsed.not_before.tzinfo is UTC and parsed.not_after.tzinfo is UTC
    pem = vector(name).public_bytes(serialization.Encoding.PEM)
    assert load_certificate(pem) == parsed


@pytest.mark.parametrize(
    ("name", "ca"),
    [
        ("moeaca-ee-g1-2011-uxb2b", IssuerCA.MOEACA),  # OU=工商憑證管理中心
        ("moeaca-ee-g2-2019-citibank", IssuerCA.MOEACA),  # same OU, G2 key
        ("moica-test-ee-2024-2", IssuerCA.MOICA),  # OU=(測試用) 內政部憑證管理中心
        ("moica-test-ee-2024-enc-1", IssuerCA.MOICA),  # same test CA
        ("gca-ee-2017-epa-ssl", IssuerCA.GCA),  # OU=政府憑證管理中心
        ("gtestca-ee-testagency1", IssuerCA.GCA),  # GPKI test CA, subject class …3.2.1.1
        ("gtestca-ee-2023-testco1", IssuerCA.MOEACA),  # GPKI test CA, subject class …3.2.2.1.1
        ("gtestca-ee-2010-testco1", IssuerCA.MOEACA),  # old test CA OU, no "(測試用)" prefix
        ("related-taica-test-fxml-ee-2022", IssuerCA.TAICA),  # issuer CN=TaiCA Test FXML CA
        ("moica-g1-ca", IssuerCA.UNKNOWN),  # a CA: issued by GRCA, which is no card CA
        ("grca-g1-2002-root", IssuerCA.UNKNOWN),  # the root itself
    ],
)
def test_classification_of_real_certificates(name: GpkiVector, ca: IssuerCA) -> None:
    assert parsed_vector(name).ca is ca


def test_moeaca_2011_has_no_serial_number_rdn_and_takes_the_ubn_from_sda() -> None:
    parsed = parsed_vector("moeaca-ee-g1-2011-uxb2b")
    assert parsed.subject_serial_number is None
    assert parsed.subject == "O=網際優勢股份有限公司,C=TW"
    assert parsed.identity.ubn == "70762419"
    assert parsed.identity.card_rank == "secondary"
    assert parsed.identity.organization == "網際優勢股份有限公司"
    assert parsed.identity.name is None
    assert parsed.public_key_algorithm == "RSA-1024"
    assert not ubn_conflict(parsed)


def test_moeaca_2019_carries_the_ubn_in_both_places() -> None:
    parsed = parsed_vector("moeaca-ee-g2-2019-citibank")
    assert parsed.subject == "serialNumber=28421312,O=花旗(台灣)商業銀行股份有限公司,C=TW"
    assert parsed.issuer == "OU=工商憑證管理中心,O=行政院,C=TW"
    assert parsed.subject_serial_number == "28421312"
    assert parsed.attribute("2.16.886.1.100.2.101") == "28421312"
    assert parsed.identity.ubn == "28421312"
    assert parsed.identity.card_rank == "secondary"
    assert parsed.identity.subject_class == "2.16.886.1.100.3.2.2.1.1"
    assert parsed.key_usage == ("digital_signature",)
    assert parsed.serial_hex == "B9E6EE38F8053CA254D25C871D24D04E"
    assert parsed.not_before == datetime(2019, 3, 11, 6, 54, 39, tzinfo=UTC)
    assert not ubn_conflict(parsed)


def test_gpki_test_ca_company_and_agency() -> None:
    company = parsed_vector("gtestca-ee-2023-testco1")
    assert (company.identity.ubn, company.identity.card_rank) == ("82675132", "primary")
    assert company.identity.organization == "測試公司1"
    old = parsed_vector("gtestca-ee-2010-testco1")
    assert (old.identity.ubn, old.subject_serial_number) == ("34051920", None)
    agency = parsed_vector("gtestca-ee-testagency1")
    assert agency.identity.oid == "2.16.886.1.101.90007.20001"
    assert agency.identity.subject_class == "2.16.886.1.100.3.2.1.1"
    assert agency.identity.ubn is None
    assert agency.subject == "O=測試機關1,L=苗栗縣,C=TW"


def test_gca_server_certificate_has_no_oid_attribute() -> None:
    parsed = parsed_vector("gca-ee-2017-epa-ssl")
    assert parsed.directory_attributes == (("2.16.886.1.100.2.1", "2.16.886.1.100.3.3.1"),)
    assert parsed.identity.oid is None
    assert parsed.key_usage == ("digital_signature", "key_encipherment")


def test_moica_test_encryption_certificates() -> None:
    enc = parsed_vector("moica-test-ee-2024-enc-1")
    assert enc.identity.as_dict() == {"name": "測試人", "id_last4": "2116", "card_rank": "mobile"}
    assert enc.key_usage == ("key_encipherment", "data_encipherment")
    other = parsed_vector("moica-test-ee-2024-2")
    assert other.identity.id_last4 == "9945"
    assert other.identity.subject_class == "2.16.886.1.100.3.1.9"  # not …3.1.1: mobile class


def test_taica_certificate_ubn_comes_from_the_cn() -> None:
    parsed = parsed_vector("related-taica-test-fxml-ee-2022")
    assert parsed.identity.name == "86517384-01-2048TEST"
    assert parsed.identity.ubn == "86517384"
    assert parsed.serial_hex == "4EEA4DF4"
    assert parsed.key_usage == ("digital_signature", "content_commitment")
    assert parsed.directory_attributes == ()


def test_serial_hex_drops_leading_zeros() -> None:
    # format(serial, "X"): the DER serial 08:B5:D8:… prints without its leading zero.
    assert parsed_vector("moica-g1-ca").serial_hex == "8B5D8ABC80BDCEF2C7E0F390A563713"


def test_public_key_algorithms() -> None:
    assert parsed_vector("grca-test-g4-ecc-root").public_key_algorithm == "EC-P384"
    assert parsed_vector("grca-g3-root").public_key_algorithm == "RSA-4096"


# -- classification rules ----------------------------------------------------------------------


def _name(**parts: str | list[str]) -> x509.Name:
    oids = {
        "C": NameOID.COUNTRY_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "CN": NameOID.COMMON_NAME,
    }
    attributes = []
    for key, value in parts.items():
        for item in [value] if isinstance(value, str) else value:
            attributes.append(x509.NameAttribute(oids[key], item))
    return x509.Name(attributes)


@pytest.mark.parametrize(
    ("issuer", "subject_class", "ca"),
    [
        (_name(C="TW", O="行政院", OU="內政部憑證管理中心"), None, IssuerCA.MOICA),
        (_name(C="TW", O="行政院", OU="工商憑證管理中心"), None, IssuerCA.MOEACA),
        (_name(C="TW", O="行政院", OU="組織及團體憑證管理中心"), None, IssuerCA.XCA),
        (_name(C="TW", O="行政院", OU="政府憑證管理中心"), None, IssuerCA.GCA),
        # full-width parentheses fold to the same test marker
        (_name(C="TW", O="行政院", OU="（測試用）工商憑證管理中心"), None, IssuerCA.MOEACA),
        # any OU counts, not only the first
        (_name(C="TW", O="行政院", OU=["Other", "政府憑證管理中心"]), None, IssuerCA.GCA),
        # an OU that merely contains a CA name is not that CA
        (_name(C="TW", O="行政院", OU="非內政部憑證管理中心"), None, IssuerCA.UNKNOWN),
        # the GPKI test CA: by subject class (whole arcs: …3.2.11 is XCA, not GCA …3.2.1)
        (_name(O="行政院", OU="政府測試憑證管理中心"), "2.16.886.1.100.3.1.1", IssuerCA.MOICA),
        (_name(O="行政院", OU="政府測試憑證管理中心"), "2.16.886.1.100.3.2.11", IssuerCA.XCA),
        (_name(O="行政院", OU="政府測試憑證管理中心"), "2.16.886.1.100.3.2.1.1", IssuerCA.GCA),
        (_name(O="行政院", OU="政府測試憑證管理中心"), "2.16.886.1.100.3.3.1", IssuerCA.UNKNOWN),
        (_name(O="行政院", OU="政府測試憑證管理中心"), None, IssuerCA.UNKNOWN),
        # TaiCA: O=Finance with an OU naming TaiCA, or TaiCA / TWCA anywhere in CN, O, OU
        (_name(C="TW", O="Finance", OU="TaiCA Test FXML CA"), None, IssuerCA.TAICA),
        (_name(C="TW", O="TAIWAN-CA", CN="TWCA Secure CA"), None, IssuerCA.TAICA),
        (_name(C="TW", O="Finance", OU="Other"), None, IssuerCA.UNKNOWN),
        (_name(C="TW", O="Example", CN="Example CA"), None, IssuerCA.UNKNOWN),
    ],
)
def test_classify_issuer(issuer: x509.Name, subject_class: str | None, ca: IssuerCA) -> None:
    assert classify_issuer(issuer, subject_class) is ca


# -- test PKI cards ----------------------------------------------------------------------------


def test_test_pki_cards_parse_with_their_identity(pki: TestPKI) -> None:
    person = load_certificate(pki.issue_person("王小明", "6789", key="rsa").der())
    assert person.ca is IssuerCA.MOICA
    assert person.identity.as_dict() == {"name": "王小明", "id_last4": "6789"}
    assert person.public_key_algorithm == "RSA-2048"
    company = load_certificate(pki.issue_company("04595257", "測試貿易").pem())
    assert company.ca is IssuerCA.MOEACA
    assert company.identity.as_dict() == {"ubn": "04595257", "card_rank": "primary"}
    assert company.public_key_algorithm == "EC-P256"
    org = load_certificate(pki.issue_organization("2.16.886.111.90010.90003.100004").der())
    assert (org.ca, org.identity.oid) == (IssuerCA.XCA, "2.16.886.111.90010.90003.100004")
    agency = load_certificate(pki.issue_agency("2.16.886.101.20003.20065.20065").der())
    assert (agency.ca, agency.identity.oid) == (IssuerCA.GCA, "2.16.886.101.20003.20065.20065")
    customs = load_certificate(pki.issue_customs("97162640", "06").der())
    assert (customs.ca, customs.identity.ubn) == (IssuerCA.TAICA, "97162640")
    assert customs.identity.name == "97162640-06-000"


def test_ubn_from_serial_number_only_when_sda_lacks_it(pki: TestPKI) -> None:
    without_rdn = load_certificate(pki.issue_company("04595257", serial_rdn=False).der())
    assert without_rdn.identity.ubn == "04595257"
    assert without_rdn.subject_serial_number is None


def test_ubn_conflict_between_sda_and_serial_number(pki: TestPKI) -> None:
    parsed = load_certificate(pki.issue_company("04595257", serial_rdn="10458575").der())
    assert parsed.identity.ubn == "04595257"  # SDA .101 wins; the caller decides
    assert parsed.subject_serial_number == "10458575"
    assert ubn_conflict(parsed)
    not_a_ubn = load_certificate(pki.issue_company("04595257", serial_rdn="ABC").der())
    assert not ubn_conflict(not_a_ubn)


# -- refusals ----------------------------------------------------------------------------------


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_empty_and_garbage_are_not_certificates() -> None:
    for data in (b"", b"   \n", b"hello world", b"\x00\x01\x02", bytes(range(256))):
        error = refusal(data)
        assert error.code is ErrorCode.NOT_A_CERTIFICATE, data
        assert isinstance(error, RefusedError)


def test_too_large() -> None:
    error = refusal(b"0" * (MAX_CERTIFICATE_BYTES + 1))
    assert error.code is ErrorCode.FILE_TOO_LARGE


def test_exactly_the_size_limit_is_parsed_not_refused_for_size() -> None:
    assert refusal(b"x" * MAX_CERTIFICATE_BYTES).code is ErrorCode.NOT_A_CERTIFICATE


@pytest.mark.parametrize(
    ("encoding", "private_format", "password"),
    [
        (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, None),  # BEGIN PRIVATE KEY
        (serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, None),
        (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, b"pw"),  # ENCRYPTED
        (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, None),
        (serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, None),
        (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, b"pw"),
    ],
)
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_private_keys_are_refused(
    pki: TestPKI,
    kind: str,
    encoding: serialization.Encoding,
    private_format: serialization.PrivateFormat,
    password: bytes | None,
) -> None:
    key = pki.issue_person(key="rsa" if kind == "rsa" else "ec").key
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    data = key.private_bytes(encoding, private_format, encryption)
    assert refusal(data).code is ErrorCode.PRIVATE_KEY_REFUSED


def test_pkcs12_is_refused(pki: TestPKI) -> None:
    data = pkcs12_bytes(pki.issue_person(), "1234")
    assert refusal(data).code is ErrorCode.PRIVATE_KEY_REFUSED


def test_certificate_with_its_key_in_one_pem_is_refused(pki: TestPKI) -> None:
    card = pki.issue_person()
    assert refusal(card.pem() + card.key_pem()).code is ErrorCode.PRIVATE_KEY_REFUSED


def test_several_certificates_are_refused(pki: TestPKI) -> None:
    card = pki.issue_person()
    pem = card.pem() + pki.root.certificate.public_bytes(serialization.Encoding.PEM)
    error = refusal(pem)
    assert (error.code, error.detail) == (ErrorCode.NOT_A_CERTIFICATE, "several certificates")
    der = refusal(card.der() + card.der())
    assert (der.code, der.detail) == (ErrorCode.NOT_A_CERTIFICATE, "several certificates")


def test_other_pki_files_are_not_certificates(pki: TestPKI) -> None:
    crl = pki.crl(IssuerCA.MOICA).public_bytes(serialization.Encoding.DER)
    assert refusal(crl).code is ErrorCode.NOT_A_CERTIFICATE
    public = pki.issue_person().key.public_key()
    spki = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert refusal(spki).code is ErrorCode.NOT_A_CERTIFICATE
    p7b = pkcs7.serialize_certificates([pki.root.certificate], serialization.Encoding.DER)
    error = refusal(p7b)  # a .p7b bundle is not the single .cer asked for
    assert (error.code, error.detail) == (ErrorCode.NOT_A_CERTIFICATE, "PKCS#7")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda der: der[: len(der) // 2],  # truncated DER
        lambda der: der[:-1],  # one byte short
        lambda der: der[:4] + b"\x30\x03\x02\x01\x01" + der[9:],  # a broken TBSCertificate
        lambda der: der + b"\x00\x00",  # trailing bytes after the certificate
    ],
)
def test_damaged_der_is_malformed(pki: TestPKI, mangle: Callable[[bytes], bytes]) -> None:
    der = pki.issue_person().der()
    error = refusal(mangle(der))
    assert error.code is ErrorCode.CERTIFICATE_MALFORMED
    assert isinstance(error, CertificateError)


def test_damaged_pem_is_malformed(pki: TestPKI) -> None:
    pem = pki.issue_person().pem()
    bad_base64 = pem.replace(b"\n", b"\n!", 2)
    assert refusal(bad_base64).code is ErrorCode.CERTIFICATE_MALFORMED
    truncated = pem[: len(pem) // 2]  # no END line
    assert refusal(truncated).code is ErrorCode.CERTIFICATE_MALFORMED


def test_broken_mandatory_extension_is_malformed(pki: TestPKI) -> None:
    # keyUsage whose value is not a BIT STRING: cryptography parses extensions lazily
    ca = pki.ca(IssuerCA.MOICA)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "王小明")]))
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW.replace(year=2026))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.15"), b"\x05\x00"),
            critical=True,
        )
        .sign(ca.key, hashes.SHA256())
    )
    error = refusal(cert.public_bytes(serialization.Encoding.DER))
    assert error.code is ErrorCode.CERTIFICATE_MALFORMED


# -- Subject Directory Attributes --------------------------------------------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 0x80
    return bytes([tag, len(body)]) + body


def _attribute(oid_body: bytes, *values: bytes) -> bytes:
    return _tlv(0x30, _tlv(0x06, oid_body) + _tlv(0x31, b"".join(values)))


_OID_51 = bytes.fromhex("60867601640233")  # 2.16.886.1.100.2.51


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        (_tlv(0x0C, "王小明".encode()), "王小明"),  # UTF8String
        (_tlv(0x13, b"primary"), "primary"),  # PrintableString
        (_tlv(0x16, b"a@b.tw"), "a@b.tw"),  # IA5String
        (_tlv(0x1A, b"6789"), "6789"),  # VisibleString
        (_tlv(0x12, b"6789"), "6789"),  # NumericString
        (_tlv(0x1E, "王小明".encode("utf-16-be")), "王小明"),  # BMPString
        (_tlv(0x14, "Müller".encode("latin-1")), "Müller"),  # TeletexString (T61)
        (_tlv(0x1C, "測".encode("utf-32-be")), "測"),  # UniversalString
        (_tlv(0x06, bytes.fromhex("608676016403010101")), "2.16.886.1.100.3.1.1.1"),  # OID
    ],
)
def test_sda_value_types(value: bytes, decoded: str) -> None:
    sda = _tlv(0x30, _attribute(_OID_51, value))
    assert parse_directory_attributes(sda) == (("2.16.886.1.100.2.51", decoded),)


def test_sda_skips_values_of_other_types_and_takes_the_first_string() -> None:
    date = _tlv(0x18, b"19850314000000Z")  # GeneralizedTime: not an identity string
    sda = _tlv(0x30, _attribute(_OID_51, date) + _attribute(_OID_51, date, _tlv(0x0C, b"1234")))
    assert parse_directory_attributes(sda) == (("2.16.886.1.100.2.51", "1234"),)


@pytest.mark.parametrize(
    "sda",
    [
        b"",  # nothing
        b"\x30\x05\x30\x03",  # length beyond the data
        _tlv(0x30, _tlv(0x02, b"\x01")),  # an INTEGER where an Attribute belongs
        _tlv(0x30, _tlv(0x30, _tlv(0x06, _OID_51))),  # an Attribute without values
        _tlv(0x30, _attribute(_OID_51, _tlv(0x0C, b"\xff\xfe"))),  # invalid UTF-8
        _tlv(0x30, _attribute(b"\x80\x01", _tlv(0x0C, b"x"))),  # non-minimal OID
        _tlv(0x30, _attribute(b"\x86", _tlv(0x0C, b"x"))),  # OID ends mid-arc
        b"\x30\x80\x00\x00",  # indefinite length (BER, not DER)
        b"\x30\x00\x00",  # trailing bytes
    ],
)
def test_malformed_sda_raises_value_error(sda: bytes) -> None:
    with pytest.raises(ValueError):
        parse_directory_attributes(sda)


def test_certificate_with_malformed_sda_loads_without_identity(pki: TestPKI) -> None:
    ca = pki.ca(IssuerCA.MOICA)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "王小明")]))
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW.replace(year=2026))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.9"), b"\x30\x05\x30\x03"),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    parsed = load_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert parsed.ca is IssuerCA.MOICA
    assert parsed.directory_attributes == ()
    assert parsed.identity.as_dict() == {"name": "王小明"}


# -- hostile input: only swreg errors ----------------------------------------------------------


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_give_only_swreg_errors(data: bytes) -> None:
    with contextlib.suppress(SwregError):
        load_certificate(data)


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(ALL_VECTORS),
    st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_vectors_give_a_certificate_or_a_swreg_error(
    name: GpkiVector, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(vector_bytes(name))
    for position, byte in edits:
        data[position % len(data)] = byte
    try:
        parsed = load_certificate(bytes(data))
    except SwregError:
        return
    assert isinstance(parsed, ParsedCertificate)


def test_pkcs12_loader_round_trip_is_not_a_certificate_path(pki: TestPKI) -> None:
    # sanity for the refusal above: the bytes really are a PKCS#12 the PIN opens
    card = pki.issue_person()
    key, cert, _ = pkcs12.load_key_and_certificates(pkcs12_bytes(card, "1234"), b"1234")
    assert cert == card.certificate and key is not None


def test_non_positive_serial_number_is_malformed(pki: TestPKI) -> None:
    # cryptography still parses these (with a deprecation warning) but RFC 5280 forbids them
    card = pki.issue_customs("97162640")
    assert 2**30 <= card.certificate.serial_number < 2**31  # a 4-byte positive INTEGER
    der = bytearray(card.der())
    # INTEGER, 4 bytes, the serial's own: not the first 02 04, which may be a length's bytes
    tbs_serial = der.index(b"\x02\x04" + card.certificate.serial_number.to_bytes(4, "big"))
    der[tbs_serial + 2] |= 0x80  # now negative
    with warnings.catch_warnings():  # cryptography may warn about it first (or, later, not)
        warnings.simplefilter("ignore")
        error = refusal(bytes(der))
    assert error.code is ErrorCode.CERTIFICATE_MALFORMED


def test_der_containing_a_pem_marker_is_still_der(pki: TestPKI) -> None:
    card = pki.issue_person("-----BEGIN CERTIFICATE-----")  # the marker inside the subject CN
    parsed = load_certificate(card.der())
    assert parsed.identity.name == "-----BEGIN CERTIFICATE-----"
