"""The PIV profile and the virtual PIV card: in-process, and through the real pcscd over vpcd."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from smartcard import scard
from smartcard.System import readers as pcsc_readers

from engine import CardError, ErrorCode
from engine.testing.pki import IssuedCard, KeyType, TestPKI, pkcs12_bytes
from readers import Card
from readers._transport import AppletTransport, Response, Transport, command
from readers.profiles.piv import PIV_AID, PivCard
from readers.vcard import CardThread, PivApplet, RetryState
from readers.vcard._piv import PIV_ATR

from .conftest import PIN

MESSAGE = b"SHA-256(origin) || SHA-256(registration id) || SHA-256(nonce)"
WRONG_PIN = "135790"
KEY_TYPES: list[KeyType] = ["rsa", "ec"]


# -- helpers --------------------------------------------------------------------------------------


def apdu(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", ""))


def exchange(applet: PivApplet, hex_text: str) -> Response:
    return Response.parse(applet.process(apdu(hex_text)))


def verify_signature(der: bytes, signature: bytes, message: bytes = MESSAGE) -> None:
    """Raise ``InvalidSignature`` unless the certificate's key made ``signature``."""
    public_key = x509.load_der_x509_certificate(der).public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


class RecordingTransport:
    """Passes APDUs to ``inner`` and remembers them."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> Response:
        self.sent.append(apdu)
        return self.inner.transmit(apdu)


class ScriptedTransport:
    """Answers by APDU prefix; everything else gets ``6D00``."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers

    def transmit(self, apdu: bytes) -> Response:
        for prefix, raw in self.answers.items():
            if apdu.startswith(prefix):
                return Response.parse(raw)
        return Response(b"", 0x6D00)


SELECT_PIV = command(0x00, 0xA4, 0x04, 0x00, PIV_AID)


@pytest.fixture(scope="module")
def issued(pki: TestPKI) -> dict[str, IssuedCard]:
    """One RSA-2048 and one P-256 person card (自然人憑證-shaped) from the test PKI."""
    return {key_type: pki.issue_person(key=key_type) for key_type in KEY_TYPES}


@pytest.fixture(params=KEY_TYPES)
def key_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def card_material(issued: dict[str, IssuedCard], key_type: str) -> IssuedCard:
    return issued[key_type]


@pytest.fixture
def applet(card_material: IssuedCard) -> PivApplet:
    return PivApplet.from_pkcs12(pkcs12_bytes(card_material, PIN), PIN)


@pytest.fixture
def ec_applet(issued: dict[str, IssuedCard]) -> PivApplet:
    return PivApplet.from_pkcs12(pkcs12_bytes(issued["ec"], PIN), PIN)


@pytest.fixture
def rsa_applet(issued: dict[str, IssuedCard]) -> PivApplet:
    return PivApplet.from_pkcs12(pkcs12_bytes(issued["rsa"], PIN), PIN)


def open_piv(applet: PivApplet, **options: Any) -> PivCard:
    return PivCard(AppletTransport(applet), label="in-process PIV", **options)


# -- the profile against the virtual card, in-process ---------------------------------------------


@pytest.mark.parametrize("extended", [False, True], ids=["chaining", "extended"])
def test_reads_verifies_and_signs(
    applet: PivApplet, card_material: IssuedCard, extended: bool
) -> None:
    with open_piv(applet, extended=extended) as card:
        assert isinstance(card, Card)
        assert card.read_certificate() == card_material.der()
        assert card.read_chain() == ()
        card.verify_pin(PIN)
        signature = card.sign(MESSAGE)
    verify_signature(card_material.der(), signature)
    if isinstance(card_material.key, ec.EllipticCurvePrivateKey):
        assert signature[0] == 0x30  # DER, not r‖s


def test_rsa_signature_is_deterministic_pkcs1(rsa_applet: PivApplet) -> None:
    card = open_piv(rsa_applet)
    card.verify_pin(PIN)
    key = rsa_applet.certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert len(card.sign(MESSAGE)) == 256
    assert card.sign(MESSAGE) == card.sign(MESSAGE)


def test_wrong_pins_count_down_then_lock_for_good(applet: PivApplet) -> None:
    card = open_piv(applet)
    for expected in (2, 1):
        with pytest.raises(CardError) as refused:
            card.verify_pin(WRONG_PIN)
        assert refused.value.code is ErrorCode.PIN_INCORRECT
        assert refused.value.details["tries_left"] == expected
    for pin in (WRONG_PIN, PIN):
        with pytest.raises(CardError) as locked:
            card.verify_pin(pin)
        assert locked.value.code is ErrorCode.CARD_LOCKED
    assert exchange(applet, "00 20 00 80").sw == 0x6983
    assert applet.state.blocked


def test_right_pin_refills_the_counter(applet: PivApplet) -> None:
    card = open_piv(applet)
    with pytest.raises(CardError):
        card.verify_pin(WRONG_PIN)
    card.verify_pin(PIN)
    assert applet.state.tries_left == 3
    assert exchange(applet, "00 20 00 80").sw == 0x9000  # empty VERIFY: already verified


def test_sign_before_pin_is_refused(applet: PivApplet) -> None:
    card = open_piv(applet)
    with pytest.raises(CardError) as refused:
        card.sign(MESSAGE)
    assert refused.value.code is ErrorCode.CARD_ERROR
    assert refused.value.detail == "PIN not verified"


@pytest.mark.parametrize("pin", ["12345", "123456789", "12345é", "1234\n56", ""])
def test_malformed_pin_sends_nothing(ec_applet: PivApplet, pin: str) -> None:
    transport = RecordingTransport(AppletTransport(ec_applet))
    card = PivCard(transport, label="recorded")
    sent = len(transport.sent)
    with pytest.raises(CardError) as refused:
        card.verify_pin(pin)
    assert refused.value.code is ErrorCode.CARD_ERROR
    assert refused.value.detail == "PIN must be 6–8 characters"
    assert len(transport.sent) == sent
    assert ec_applet.state.tries_left == 3


def test_pin_is_padded_with_ff(ec_applet: PivApplet) -> None:
    transport = RecordingTransport(AppletTransport(ec_applet))
    PivCard(transport, label="recorded").verify_pin(PIN)
    assert transport.sent[-1] == apdu("00 20 00 80 08") + PIN.encode() + b"\xff\xff"


def test_retry_state_file_survives_a_new_applet(
    tmp_path: Path, issued: dict[str, IssuedCard]
) -> None:
    path = tmp_path / "tries.json"
    p12 = pkcs12_bytes(issued["ec"], PIN)
    first = PivApplet.from_pkcs12(p12, PIN, state=RetryState.file(path))
    with pytest.raises(CardError):
        open_piv(first).verify_pin(WRONG_PIN)
    second = PivApplet.from_pkcs12(p12, PIN, state=RetryState.file(path))
    assert second.state.tries_left == 2
    card = open_piv(second)
    with pytest.raises(CardError) as refused:
        card.verify_pin(WRONG_PIN)
    assert refused.value.details["tries_left"] == 1
    with pytest.raises(CardError):
        card.verify_pin(WRONG_PIN)
    third = PivApplet.from_pkcs12(p12, PIN, state=RetryState.file(path))
    with pytest.raises(CardError) as locked:
        open_piv(third).verify_pin(PIN)
    assert locked.value.code is ErrorCode.CARD_LOCKED


def test_retry_state_file_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "tries.json"
    path.write_text("not json", encoding="utf-8")
    with pytest.raises(ValueError, match="retry-counter"):
        RetryState.file(path)
    with pytest.raises(ValueError):
        RetryState(4, max_tries=3)


def test_reset_forgets_selection_and_verification(applet: PivApplet) -> None:
    card = open_piv(applet)
    card.verify_pin(PIN)
    card.sign(MESSAGE)
    applet.reset()
    assert not applet.verified and not applet.selected
    assert exchange(applet, "00 20 00 80").sw == 0x6985  # PIV is not selected
    with pytest.raises(CardError) as refused:
        open_piv(applet).sign(MESSAGE)
    assert refused.value.detail == "PIN not verified"


def test_reset_keeps_the_counter(applet: PivApplet) -> None:
    with pytest.raises(CardError):
        open_piv(applet).verify_pin(WRONG_PIN)
    applet.reset()
    assert applet.state.tries_left == 2
    open_piv(applet)
    assert exchange(applet, "00 20 00 80").sw == 0x63C2


def test_wrong_pin_forgets_an_earlier_verification(applet: PivApplet) -> None:
    card = open_piv(applet)
    card.verify_pin(PIN)
    with pytest.raises(CardError):
        card.verify_pin(WRONG_PIN)
    assert not applet.verified


def test_falls_back_to_slot_9a(issued: dict[str, IssuedCard]) -> None:
    material = issued["ec"]
    applet = PivApplet(material.key, material.certificate, pin=PIN, slots=(0x9A,))
    transport = RecordingTransport(AppletTransport(applet))
    card = PivCard(transport, label="9A only")
    assert card.read_certificate() == material.der()
    card.verify_pin(PIN)
    verify_signature(material.der(), card.sign(MESSAGE))
    assert transport.sent[-1][:4] == apdu("00 87 11 9A")


def test_card_without_certificate(issued: dict[str, IssuedCard]) -> None:
    material = issued["ec"]
    applet = PivApplet(material.key, material.certificate, pin=PIN, slots=())
    with pytest.raises(CardError) as refused:
        open_piv(applet).read_certificate()
    assert refused.value.detail == "the card holds no certificate"


def test_close_resets_verification_and_releases(ec_applet: PivApplet) -> None:
    released: list[str] = []
    card = open_piv(ec_applet, on_close=lambda: released.append("released"))
    card.verify_pin(PIN)
    card.close()
    card.close()
    assert released == ["released"]
    assert ec_applet.selected and not ec_applet.verified
    for use in (card.read_certificate, card.read_chain, lambda: card.sign(MESSAGE)):
        with pytest.raises(CardError) as refused:
            use()
        assert refused.value.detail == "the card is closed"


def test_repr_shows_no_secrets(ec_applet: PivApplet) -> None:
    card = open_piv(ec_applet)
    card.verify_pin(PIN)
    for text in (repr(ec_applet), repr(card), repr(ec_applet.state)):
        assert PIN not in text
        assert PIN.encode().hex() not in text
    assert "verified" in repr(ec_applet)


# -- detection and the host's handling of other cards ---------------------------------------------


APT_PIX = "61 11 4F 06 000010000100 79 07 4F 05 A000000308 9000"
APT_FULL = "61 16 4F 0B A0000003080000100001 00 79 07 4F 05 A000000308 9000"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (APT_PIX, True),  # YubiKey: the PIX only
        (APT_FULL, True),
        ("9000", True),  # no template at all
        ("6A82", False),
        ("61 08 4F 06 A00000000101 9000", False),  # another application's template
        ("61 FF 4F", False),  # garbage
    ],
)
def test_detect(answer: str, expected: bool) -> None:
    transport = ScriptedTransport({apdu("00 A4 04 00"): apdu(answer)})
    assert PivCard.detect(transport) is expected


def test_detect_against_the_virtual_card(ec_applet: PivApplet) -> None:
    assert PivCard.detect(AppletTransport(ec_applet))
    assert ec_applet.selected


def test_not_a_piv_card() -> None:
    with pytest.raises(CardError) as refused:
        PivCard(ScriptedTransport({}), label="other")
    assert refused.value.code is ErrorCode.CARD_ERROR
    assert "not a PIV card" in str(refused.value.detail)


def test_compressed_certificate_object(issued: dict[str, IssuedCard]) -> None:
    der = issued["ec"].der()
    packed = gzip.compress(der)
    body = b"\x70\x82" + len(packed).to_bytes(2, "big") + packed + apdu("71 01 01 FE 00")
    obj = b"\x53\x82" + len(body).to_bytes(2, "big") + body
    transport = ScriptedTransport(
        {
            apdu("00 A4 04 00"): apdu(APT_PIX),
            apdu("00 CB 3F FF 05 5C 03 5F C1 0A"): obj + b"\x90\x00",
        }
    )
    assert PivCard(transport, label="gzip").read_certificate() == der


def test_unexpected_status_is_a_card_error() -> None:
    transport = ScriptedTransport(
        {
            apdu("00 A4 04 00"): apdu(APT_PIX),
            apdu("00 CB"): apdu("6F00"),
            apdu("00 20"): apdu("6A80"),
        }
    )
    card = PivCard(transport, label="odd")
    for use in (card.read_certificate, lambda: card.verify_pin(PIN)):
        with pytest.raises(CardError) as refused:
            use()
        assert refused.value.code is ErrorCode.CARD_ERROR
    with pytest.raises(CardError) as odd:
        card.read_certificate()
    assert odd.value.detail == "SW 6F00"


# -- the virtual card's APDUs, as OpenSC sends them (RECIPES.md §5) -------------------------------


def test_atr_is_t1_only_with_a_valid_tck(ec_applet: PivApplet) -> None:
    atr = ec_applet.atr
    assert atr == PIV_ATR
    assert atr[:3] == apdu("3B 8A 01")
    assert b"PIV" in atr
    check = 0
    for byte in atr[1:]:
        check ^= byte
    assert check == 0


def test_select_truncated_aid_answers_the_property_template(ec_applet: PivApplet) -> None:
    response = exchange(ec_applet, "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00")
    assert response.sw == 0x9000
    assert response.data.startswith(apdu("61"))
    assert apdu("4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08") in response.data
    assert exchange(ec_applet, "00 A4 04 00 0B A0000003080000100001 00 00").sw == 0x9000


def test_get_data_discovery_only_once_piv_is_selected(ec_applet: PivApplet) -> None:
    """OpenSC reads 7E to learn whether PIV is already active, and SELECTs only when it is not."""
    assert exchange(ec_applet, "00 CB 3F FF 03 5C 01 7E 00").sw == 0x6985  # not selected
    assert exchange(ec_applet, "00 CB 3F FF 05 5C 03 5F C1 0A 00").sw == 0x6985
    assert exchange(ec_applet, "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00").sw == 0x9000
    response = exchange(ec_applet, "00 CB 3F FF 03 5C 01 7E 00")
    assert response.sw == 0x9000
    assert response.data.startswith(apdu("7E 12 4F 0B A0000003080000100001 00"))
    assert exchange(ec_applet, "00 A4 04 00 07 A0 00 00 00 03 10 10 00").sw == 0x6A82
    assert exchange(ec_applet, "00 CB 3F FF 03 5C 01 7E 00").sw == 0x9000  # still PIV
    ec_applet.reset()
    assert exchange(ec_applet, "00 CB 3F FF 03 5C 01 7E 00").sw == 0x6985


def test_read_with_le_8_then_exact_length(rsa_applet: PivApplet) -> None:
    exchange(rsa_applet, "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00")
    head = exchange(rsa_applet, "00 CB 3F FF 05 5C 03 5F C1 0A 08")
    assert len(head.data) == 8
    assert head.sw >> 8 == 0x61
    assert head.data[:2] == apdu("53 82")
    total = 4 + int.from_bytes(head.data[2:4], "big")
    exact = rsa_applet.process(command(0x00, 0xCB, 0x3F, 0xFF, apdu("5C 03 5F C1 0A"), le=total))
    whole = Response.parse(exact)
    assert whole.sw == 0x9000 and len(whole.data) == total
    assert rsa_applet.certificate.public_bytes(Encoding.DER) in whole.data


def test_short_le_reads_through_61xx_and_get_response(rsa_applet: PivApplet) -> None:
    exchange(rsa_applet, "00 A4 04 00 0B A0000003080000100001 00 00")
    response = exchange(rsa_applet, "00 CB 3F FF 05 5C 03 5F C1 0A 00")
    data = response.data
    assert len(data) == 256
    while response.more is not None:
        response = exchange(rsa_applet, f"00 C0 00 00 {response.more:02X}")
        data += response.data
    assert response.sw == 0x9000
    assert rsa_applet.certificate.public_bytes(Encoding.DER) in data
    assert exchange(rsa_applet, "00 C0 00 00 00").sw == 0x6985  # nothing left


def test_command_chaining_in_and_get_response_out(rsa_applet: PivApplet) -> None:
    exchange(rsa_applet, "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00")
    pin_data = PIN.encode().hex() + "FFFF"
    assert exchange(rsa_applet, f"00 20 00 80 08 {pin_data}").sw == 0x9000
    block = b"\x00\x01" + b"\xff" * 200 + b"\x00" + bytes(range(53))
    data = apdu("7C 82 01 06 82 00 81 82 01 00") + block
    first = rsa_applet.process(command(0x10, 0x87, 0x07, 0x9C, data[:200]))
    assert first == apdu("9000")
    head = Response.parse(rsa_applet.process(command(0x00, 0x87, 0x07, 0x9C, data[200:], le=256)))
    assert head.sw == 0x6108 and len(head.data) == 256
    tail = exchange(rsa_applet, "00 C0 00 00 08")
    assert tail.sw == 0x9000
    answer = head.data + tail.data
    assert answer[:8] == apdu("7C 82 01 04 82 82 01 00")
    public = rsa_applet.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    numbers = public.public_numbers()
    recovered = pow(int.from_bytes(answer[8:], "big"), numbers.e, numbers.n)
    assert recovered.to_bytes(256, "big") == block


def test_foreign_commands_keep_piv_selected(ec_applet: PivApplet) -> None:
    card = open_piv(ec_applet)
    card.verify_pin(PIN)
    assert exchange(ec_applet, "00 A4 04 00 07 A0 00 00 00 03 10 10 00").sw == 0x6A82
    assert exchange(ec_applet, "00 A4 00 0C 02 3F 00").sw == 0x6A82
    assert exchange(ec_applet, "00 CA DF 30 00").sw == 0x6D00
    assert ec_applet.selected and ec_applet.verified
    verify_signature(card.read_certificate(), card.sign(MESSAGE))


@pytest.mark.parametrize(
    ("command_hex", "sw"),
    [
        ("00 CB 3F FF 05 5C 03 5F C1 07 00", 0x6A82),  # missing object
        ("00 CB 3F FF 05 5C 03 5F C1 01 00", 0x6A82),
        ("00 CB 3F FE 05 5C 03 5F C1 0A 00", 0x6A86),  # P1P2 not 3FFF
        ("00 CB 3F FF 03 7E 01 00 00", 0x6A80),  # not a tag list
        ("80 CB 3F FF 05 5C 03 5F C1 0A 00", 0x6E00),  # bad CLA
        ("00 B0 00 00 00", 0x6D00),  # unknown INS
        ("00 20 00 81 08 3132333435363738", 0x6A88),  # not the PIV PIN
        ("00 20 00 80 06 313233343536", 0x6A80),  # not padded to 8
        ("00 20 00 80", 0x63C3),  # empty VERIFY: status
        ("00 87 07 9C 04 7C 02 82 00", 0x6A86),  # RSA algorithm on an EC key
        ("00 87 11 9D 04 7C 02 82 00", 0x6A86),  # no such key
        ("00 87 11 9C 04 7C 02 82 00", 0x6A80),  # no challenge
        ("00 87 11 9C 06 7C 04 82 00 81 00", 0x6982),  # PIN not verified
        ("00 C0 00 00 00", 0x6985),  # nothing to get
        ("00 CB", 0x6700),  # too short to be an APDU
    ],
)
def test_virtual_card_refusals(ec_applet: PivApplet, command_hex: str, sw: int) -> None:
    exchange(ec_applet, "00 A4 04 00 0B A0000003080000100001 00 00")
    assert exchange(ec_applet, command_hex).sw == sw


def test_chuid_is_present(ec_applet: PivApplet) -> None:
    exchange(ec_applet, "00 A4 04 00 0B A0000003080000100001 00 00")
    response = exchange(ec_applet, "00 CB 3F FF 05 5C 03 5F C1 02 00")
    assert response.sw == 0x9000
    assert response.data[:2] == apdu("53 3B")
    assert apdu("34 10") in response.data


def test_ec_challenge_of_wrong_length_and_deauthentication(ec_applet: PivApplet) -> None:
    card = open_piv(ec_applet)
    card.verify_pin(PIN)
    challenge = "81 20 " + "11" * 32
    assert exchange(ec_applet, f"00 87 11 9C 26 7C 24 82 00 {challenge} 00").sw == 0x9000
    assert exchange(ec_applet, "00 87 11 9C 15 7C 13 82 00 81 0F " + "11" * 15 + " 00").sw == 0x6A80
    assert exchange(ec_applet, "00 20 FF 80").sw == 0x9000
    assert not ec_applet.verified
    assert exchange(ec_applet, f"00 87 11 9C 26 7C 24 82 00 {challenge} 00").sw == 0x6982


def test_generate_and_pin_override(issued: dict[str, IssuedCard]) -> None:
    for key_type in KEY_TYPES:
        applet = PivApplet.generate(key_type, subject_cn="throwaway", pin="87654321")
        card = open_piv(applet)
        card.verify_pin("87654321")
        verify_signature(card.read_certificate(), card.sign(MESSAGE))
    p12 = pkcs12_bytes(issued["ec"], "a long PKCS#12 password")
    applet = PivApplet.from_pkcs12(p12, "a long PKCS#12 password", pin=PIN)
    open_piv(applet).verify_pin(PIN)
    with pytest.raises(ValueError, match="6–8"):
        PivApplet.from_pkcs12(p12, "a long PKCS#12 password")
    with pytest.raises(ValueError):
        PivApplet.generate("dsa")  # type: ignore[arg-type]


# -- through the real pcscd (vpcd) ----------------------------------------------------------------


class PyscardTransport:
    """A pyscard connection as a :class:`Transport` (the test's own, tiny one)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def transmit(self, apdu: bytes) -> Response:
        data, sw1, sw2 = self.connection.transmit(list(apdu))
        return Response.parse(bytes(data) + bytes([sw1, sw2]))


def wait_for_reader(name: str, *, present: bool, timeout: float = 5.0) -> None:
    """Block until ``name`` shows a card (``present``) or none, with SCardGetStatusChange."""
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
    wanted = scard.SCARD_STATE_PRESENT if present else scard.SCARD_STATE_EMPTY
    deadline = time.monotonic() + timeout
    state = scard.SCARD_STATE_UNAWARE
    try:
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            assert remaining > 0, f"{name}: not {'PRESENT' if present else 'EMPTY'} in {timeout} s"
            hresult, states = scard.SCardGetStatusChange(context, remaining, [(name, state)])
            if hresult == scard.SCARD_E_TIMEOUT:
                continue
            assert hresult == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hresult)
            _, event, _ = states[0]
            if event & wanted:
                return
            state = event & ~scard.SCARD_STATE_CHANGED
    finally:
        scard.SCardReleaseContext(context)


@contextmanager
def inserted(applet: PivApplet, reader: tuple[str, int]) -> Iterator[Any]:
    """The applet in the vpcd reader ``(name, port)``; removed (reader EMPTY) afterwards."""
    name, port = reader
    wait_for_reader(name, present=False)
    with CardThread(applet, port=port):
        wait_for_reader(name, present=True)
        (found,) = [r for r in pcsc_readers() if str(r) == name]
        yield found
    wait_for_reader(name, present=False)


@contextmanager
def connected(reader: Any) -> Iterator[PivCard]:
    connection = reader.createConnection()
    connection.connect()

    def release() -> None:
        connection.disconnect()
        connection.release()

    try:
        card = PivCard(PyscardTransport(connection), label=f"pcsc:{reader}", on_close=release)
    except BaseException:
        release()
        raise
    with card:
        yield card


def card_check(reader: Any, message: bytes = MESSAGE) -> tuple[bytes, bytes]:
    """connect → SELECT → VERIFY → read → sign → disconnect; the certificate and signature."""
    with connected(reader) as card:
        card.verify_pin(PIN)
        der = card.read_certificate()
        return der, card.sign(message)


def test_pcsc_end_to_end(
    applet: PivApplet, card_material: IssuedCard, vpcd_readers: list[tuple[str, int]]
) -> None:
    with inserted(applet, vpcd_readers[0]) as reader:
        assert card_atr(reader) == PIV_ATR
        with connected(reader) as card:
            with pytest.raises(CardError) as refused:
                card.verify_pin(WRONG_PIN)
            assert refused.value.details["tries_left"] == 2
            card.verify_pin(PIN)
            assert card.read_certificate() == card_material.der()
            signature = card.sign(MESSAGE)
        verify_signature(card_material.der(), signature)
        with connected(reader) as again:  # a new connection powers the card up: PIN forgotten
            with pytest.raises(CardError) as refused:
                again.sign(MESSAGE)
            assert refused.value.detail == "PIN not verified"


def card_atr(reader: Any) -> bytes:
    connection = reader.createConnection()
    connection.connect()
    try:
        return bytes(connection.getATR())
    finally:
        connection.disconnect()
        connection.release()


def test_pcsc_extended_apdus(rsa_applet: PivApplet, vpcd_readers: list[tuple[str, int]]) -> None:
    with inserted(rsa_applet, vpcd_readers[0]) as reader:
        connection = reader.createConnection()
        connection.connect()
        card = PivCard(PyscardTransport(connection), label="ext", extended=True)
        try:
            card.verify_pin(PIN)
            der = card.read_certificate()
            verify_signature(der, card.sign(MESSAGE))
        finally:
            card.close()
            connection.disconnect()
            connection.release()


def test_pcsc_two_readers_at_once(
    issued: dict[str, IssuedCard], vpcd_readers: list[tuple[str, int]]
) -> None:
    applets = [PivApplet.from_pkcs12(pkcs12_bytes(issued[k], PIN), PIN) for k in KEY_TYPES]
    with (
        inserted(applets[0], vpcd_readers[0]) as first,
        inserted(applets[1], vpcd_readers[1]) as second,
    ):
        for reader, key_type in ((first, "rsa"), (second, "ec")):
            der, signature = card_check(reader)
            assert der == issued[key_type].der()
            verify_signature(der, signature)


def test_pcsc_card_check_repeats_on_one_insertion(
    issued: dict[str, IssuedCard], vpcd_readers: list[tuple[str, int]]
) -> None:
    """Card check after card check on the same inserted card, each on a new connection and
    with its own challenge, gives the card's certificate and a signature of that challenge.
    How long a check takes is measured by ``bench/piv.py``, not here."""
    for key_type in KEY_TYPES:
        applet = PivApplet.from_pkcs12(pkcs12_bytes(issued[key_type], PIN), PIN)
        with inserted(applet, vpcd_readers[0]) as reader:
            for round_ in range(5):
                challenge = MESSAGE + bytes([round_])
                der, signature = card_check(reader, challenge)
                assert der == issued[key_type].der()
                verify_signature(der, signature, challenge)
