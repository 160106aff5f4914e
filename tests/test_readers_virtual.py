"""The virtual card (``virtual:FILE.p12``) and the card spec parser."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    pkcs12,
)
from cryptography.x509.oid import NameOID

import readers
from engine import CardError, EnvironmentProblem, ErrorCode, UsageError
from readers import Card, ReaderInfo, list_readers, open_card, register_scheme
from readers.virtual import MAX_FILE_SIZE, VirtualP12Card

PIN = "Pin-246810"
MESSAGE = b"SHA-256(origin) || SHA-256(registration id) || SHA-256(nonce)"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class P12:
    path: Path
    key: PrivateKey
    cert: x509.Certificate
    ca: x509.Certificate


def _cert(
    subject: str, key: PrivateKey, issuer: str, signer: PrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, algorithm)
    )


def _make_p12(tmp_path: Path, key: PrivateKey, name: str) -> P12:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Test CA (test material)", ca_key, "Test CA (test material)", ca_key, ca=True)
    cert = _cert(f"Card holder {name}", key, "Test CA (test material)", ca_key, ca=False)
    data = pkcs12.serialize_key_and_certificates(
        b"card", key, cert, [ca], BestAvailableEncryption(PIN.encode())
    )
    path = tmp_path / f"{name}.p12"
    path.write_bytes(data)
    return P12(path, key, cert, ca)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(params=["rsa", "ec"])
def p12(request: pytest.FixtureRequest, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> P12:
    key: PrivateKey = rsa_key if request.param == "rsa" else ec.generate_private_key(ec.SECP256R1())
    return _make_p12(tmp_path, key, request.param)


def _verify(cert: x509.Certificate, signature: bytes, message: bytes) -> None:
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))


# --- the card ---------------------------------------------------------------------------------


def test_right_pin_reads_certificate_and_chain_and_signs(p12: P12) -> None:
    with open_card(f"virtual:{p12.path}") as card:
        assert isinstance(card, Card)
        card.verify_pin(PIN)
        assert card.read_certificate() == p12.cert.public_bytes(Encoding.DER)
        assert card.read_chain() == (p12.ca.public_bytes(Encoding.DER),)
        _verify(p12.cert, card.sign(MESSAGE), MESSAGE)


def test_wrong_pin_is_pin_incorrect_without_tries_left(p12: P12) -> None:
    card = VirtualP12Card(p12.path)
    with pytest.raises(CardError) as info:
        card.verify_pin("000000")
    assert info.value.code is ErrorCode.PIN_INCORRECT
    assert info.value.details == {"tries_left": None}
    assert info.value.exit_status == 1


def test_wrong_pin_after_right_one_unverifies(p12: P12) -> None:
    card = VirtualP12Card(p12.path)
    card.verify_pin(PIN)
    with pytest.raises(CardError):
        card.verify_pin("000000")
    with pytest.raises(CardError) as info:
        card.sign(MESSAGE)
    assert info.value.code is ErrorCode.CARD_ERROR


@pytest.mark.parametrize("operation", ["sign", "read_certificate", "read_chain"])
def test_needs_pin_first(p12: P12, operation: str) -> None:
    card = VirtualP12Card(p12.path)
    with pytest.raises(CardError) as info:
        if operation == "sign":
            card.sign(MESSAGE)
        else:
            getattr(card, operation)()
    assert info.value.code is ErrorCode.CARD_ERROR
    assert info.value.detail == "PIN not verified"


def test_close_drops_the_key(p12: P12) -> None:
    with VirtualP12Card(p12.path) as card:
        card.verify_pin(PIN)
    with pytest.raises(CardError) as info:
        card.sign(MESSAGE)
    assert info.value.code is ErrorCode.CARD_ERROR
    assert card._key is None


def test_repr_shows_no_secret(p12: P12) -> None:
    card = VirtualP12Card(p12.path)
    card.verify_pin(PIN)
    text = repr(card)
    assert PIN not in text
    assert "pin_verified=True" in text
    assert PIN not in repr(vars(card))  # the PIN is not kept at all


def test_other_key_types_cannot_sign(tmp_path: Path) -> None:
    p12 = _make_p12(tmp_path, ed25519.Ed25519PrivateKey.generate(), "ed25519")
    card = VirtualP12Card(p12.path)
    card.verify_pin(PIN)
    assert card.read_certificate() == p12.cert.public_bytes(Encoding.DER)
    with pytest.raises(CardError) as info:
        card.sign(MESSAGE)
    assert info.value.code is ErrorCode.CARD_ERROR


@pytest.mark.parametrize(
    ("with_key", "with_cert"),
    [
        (False, True),  # a certificate only: nothing to sign with
        (True, False),  # a key only: nothing to present
    ],
)
def test_p12_without_key_or_certificate(tmp_path: Path, with_key: bool, with_cert: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("Holder", key, "Holder", key, ca=False)
    data = pkcs12.serialize_key_and_certificates(
        b"card",
        key if with_key else None,
        cert if with_cert else None,
        None,
        BestAvailableEncryption(PIN.encode()),
    )
    path = tmp_path / "partial.p12"
    path.write_bytes(data)
    card = VirtualP12Card(path)
    with pytest.raises(CardError) as info:
        card.verify_pin(PIN)
    assert info.value.code is ErrorCode.CARD_ERROR


def test_missing_file_is_no_card(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem) as info:
        open_card(f"virtual:{tmp_path / 'absent.p12'}")
    assert info.value.code is ErrorCode.NO_CARD
    assert info.value.exit_status == 3


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a PKCS#12 file",  # text
        b"",  # empty
        b"\x30\x03\x02\x01\x01",  # a DER SEQUENCE, but version 1 is no PFX
        b"\x30\x82\x01\x00\x02\x01\x03",  # a PFX header whose length overruns the file
    ],
)
def test_garbage_file_is_card_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.p12"
    path.write_bytes(content)
    with pytest.raises(CardError) as info:
        open_card(f"virtual:{path}")
    assert info.value.code is ErrorCode.CARD_ERROR


def test_file_over_one_mib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.p12"
    path.write_bytes(b"\0" * (MAX_FILE_SIZE + 1))
    with pytest.raises(UsageError) as info:
        VirtualP12Card(path)
    assert info.value.code is ErrorCode.FILE_TOO_LARGE
    assert info.value.exit_status == 2


# --- the spec parser --------------------------------------------------------------------------


def test_virtual_spec_opens_a_virtual_card(p12: P12) -> None:
    card = open_card(f"virtual:{p12.path}")
    assert isinstance(card, VirtualP12Card)
    assert card.label == f"virtual:{p12.path}"


def test_pcsc_spec_naming_no_reader_is_no_reader() -> None:
    with pytest.raises(EnvironmentProblem) as info:
        open_card("pcsc:no-such-reader")
    assert info.value.code is ErrorCode.NO_READER
    assert info.value.exit_status == 3


@pytest.mark.parametrize("spec", ["bogus", "bogus:x", "virtual:", "pcsc:", "", ":file.p12"])
def test_bad_spec_is_usage_error(spec: str) -> None:
    with pytest.raises(UsageError) as info:
        open_card(spec)
    assert info.value.code is ErrorCode.USAGE
    assert info.value.exit_status == 2
    assert "virtual:FILE.p12" in str(info.value)
    assert "pcsc:NAME_OR_INDEX" in str(info.value)


def test_registered_scheme_replaces_the_opener(monkeypatch: pytest.MonkeyPatch, p12: P12) -> None:
    monkeypatch.setattr(readers, "_OPENERS", dict(readers._OPENERS))  # restored after the test
    register_scheme("pcsc", lambda target: VirtualP12Card(p12.path))
    card = open_card("pcsc:0")
    assert isinstance(card, VirtualP12Card)


def test_list_readers_delegates_to_pcsc(monkeypatch: pytest.MonkeyPatch) -> None:
    import readers.pcsc

    listed = [ReaderInfo("Some Reader 00 00", card_present=True, profile="piv")]
    monkeypatch.setattr(readers.pcsc, "list_readers", lambda: listed)
    found: list[ReaderInfo] = list_readers()
    assert found is listed
