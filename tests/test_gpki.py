"""The GPKI/HiCOS card: the virtual applet and the host profile, in-process and through pcscd.

The in-process half hands the applet's APDUs over an :class:`AppletTransport` (no daemon); the
second half inserts the applet into a vpcd reader of the real pcscd (``vpcd_readers``) and opens
it with ``pcsc:NAME``, the production path.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from smartcard import scard
from smartcard.CardConnection import CardConnection

from engine import CardError, ErrorCode
from engine.testing.pki import IssuedCard, TestPKI
from readers import Card, open_card
from readers import pcsc as pcsc_module
from readers._transport import AppletTransport, Response, command
from readers.pcsc import wait_for_card
from readers.profiles.gpki import MAX_CHUNK, GpkiCard, detect
from readers.vcard import CardThread
from readers.vcard._gpki import (
    CERT_SLOT_SIZE,
    GPKI_ATR,
    OFFSET_SIGNATURE,
    GpkiApplet,
    certificate_store,
)

PKI = TestPKI.create(datetime.now(UTC))


@pytest.fixture(scope="module")
def person() -> IssuedCard:
    return PKI.issue_person()


@pytest.fixture(scope="module")
def company() -> IssuedCard:
    return PKI.issue_company("04595257")


def full_applet(card: IssuedCard, encryption: IssuedCard) -> GpkiApplet:
    issuer, root = card.chain_der()
    return GpkiApplet(
        card.der(), issuer_cert=issuer, root_cert=root, encryption_cert=encryption.der()
    )


def apdu(applet: GpkiApplet, hex_apdu: str) -> Response:
    return Response.parse(applet.process(bytes.fromhex(hex_apdu)))


class Recorder(AppletTransport):
    """An in-process transport that remembers every command it carried."""

    def __init__(self, applet: GpkiApplet) -> None:
        super().__init__(applet)
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> Response:
        self.sent.append(apdu)
        return super().transmit(apdu)


# --- the applet -------------------------------------------------------------------------------


def test_the_public_detection_script_reads_cht_v32n(person: IssuedCard) -> None:
    applet = GpkiApplet(person.der())
    for fid in ("3F00", "0900", "0905"):
        assert apdu(applet, f"80A4000002{fid}").sw == 0x9000
    version = apdu(applet, "80B0000014")
    assert version.sw == 0x9000
    assert len(version.data) == 20
    assert version.data.startswith(b"CHT V32N")


def test_the_store_holds_each_certificate_at_its_offset(
    person: IssuedCard, company: IssuedCard
) -> None:
    applet = full_applet(person, company)
    for fid in ("3F00", "5030", "08F2"):
        assert apdu(applet, f"80A4000002{fid}").sw == 0x9000
    issuer, root = person.chain_der()
    slots = ((0x0000, root), (0x0700, issuer), (0x0E00, company.der()), (0x1500, person.der()))
    for offset, der in slots:
        header = apdu(applet, f"80B0{offset:04X}04")
        assert header == Response(der[:4], 0x9000)
        assert header.data[:2] == b"\x30\x82"
        body = apdu(applet, f"80B0{offset + 4:04X}{min(0xF0, len(der) - 4):02X}")
        assert body.data == der[4 : 4 + len(body.data)]


def test_empty_slots_are_zero_filled(person: IssuedCard) -> None:
    store = certificate_store(b"", b"", b"", person.der())
    assert store[:OFFSET_SIGNATURE] == bytes(OFFSET_SIGNATURE)
    assert store[OFFSET_SIGNATURE : OFFSET_SIGNATURE + len(person.der())] == person.der()
    assert store[OFFSET_SIGNATURE + len(person.der()) :] == bytes(
        CERT_SLOT_SIZE - len(person.der())
    )


@pytest.mark.parametrize(
    ("hex_apdu", "sw"),
    [
        ("80A40000023F01", 0x6A82),  # no such file
        ("80A4000002500A", 0x6A82),
        ("80A400000208F2", 0x6A82),  # an EF outside its DF
        ("80A40400023F00", 0x6A86),  # P1 other than 00
        ("00A40000023F00", 0x6E00),  # ISO CLA: this card speaks CLA 80 only
        ("00A4040007A000000308000010", 0x6E00),  # a PIV SELECT
        ("80B0000014", 0x6986),  # READ BINARY without a selected EF
        ("80200081083132333435363738", 0x6D00),  # VERIFY: not public, refused
        ("802A9E9A20" + "AB" * 32 + "00", 0x6D00),  # PSO: COMPUTE DIGITAL SIGNATURE: refused
        ("80880000", 0x6D00),  # INTERNAL AUTHENTICATE: refused
        ("80A4", 0x6700),  # not an APDU
    ],
)
def test_refusals(person: IssuedCard, hex_apdu: str, sw: int) -> None:
    applet = GpkiApplet(person.der())
    response = apdu(applet, hex_apdu)
    assert response == Response(b"", sw)


def test_read_binary_at_and_past_the_end(person: IssuedCard) -> None:
    applet = GpkiApplet(person.der())
    for fid in ("3F00", "5030", "08F2"):
        apdu(applet, f"80A4000002{fid}")
    end = OFFSET_SIGNATURE + CERT_SLOT_SIZE
    assert apdu(applet, f"80B0{end - 2:04X}10") == Response(b"\x00\x00", 0x6282)
    assert apdu(applet, f"80B0{end:04X}10").sw == 0x6B00
    assert apdu(applet, f"80B0{0x8000 | 1:04X}10").sw == 0x6A86  # short-EF addressing
    assert apdu(applet, "80B00000").sw == 0x6700  # no Le


def test_reset_forgets_the_selection(person: IssuedCard) -> None:
    applet = GpkiApplet(person.der())
    for fid in ("3F00", "0900", "0905"):
        apdu(applet, f"80A4000002{fid}")
    applet.reset()
    assert apdu(applet, "80B0000014").sw == 0x6986
    assert apdu(applet, "80A40000020905").sw == 0x6A82  # its DF is no longer current


_TOO_BIG = 0x0800 - 4


@pytest.mark.parametrize(
    ("signature", "issuer"),
    [
        (b"", b""),  # a GPKI card always holds a signature certificate
        (b"\x30\x81\x02\x05\x00", b""),  # a short-form DER header: not 30 82 LL LL
        (b"\x30\x82\x00\x05\x00", b""),  # the DER length and the size disagree
        (b"\x30\x82" + _TOO_BIG.to_bytes(2, "big") + bytes(_TOO_BIG), b""),  # over a slot
        (None, b"not DER"),  # a bad optional certificate
    ],
)
def test_certificates_the_store_cannot_hold_are_refused(
    person: IssuedCard, signature: bytes | None, issuer: bytes
) -> None:
    with pytest.raises(ValueError):
        GpkiApplet(person.der() if signature is None else signature, issuer_cert=issuer)


def test_atr_is_t0_only() -> None:
    assert GPKI_ATR[:2] == b"\x3b\x0a"  # T0: no interface bytes, so T=0 only and no TCK
    assert len(GPKI_ATR) == 2 + 10


# --- the profile, in-process --------------------------------------------------------------------


def test_detect_is_the_four_apdu_probe(person: IssuedCard) -> None:
    transport = Recorder(GpkiApplet(person.der()))
    assert detect(transport)
    assert GpkiCard.detect(transport)
    assert transport.sent[:4] == [
        bytes.fromhex("80A40000023F00"),
        bytes.fromhex("80A40000020900"),
        bytes.fromhex("80A40000020905"),
        bytes.fromhex("80B0000014"),
    ]


class Echo:
    """A card that answers every command with one status word."""

    atr = b"\x3b\x00"

    def __init__(self, sw: int, data: bytes = b"") -> None:
        self.response = Response(data, sw).to_bytes()

    def process(self, apdu: bytes) -> bytes:
        return self.response

    def reset(self) -> None:
        pass


@pytest.mark.parametrize(
    "applet",
    [Echo(0x6E00), Echo(0x6D00), Echo(0x9000, b"CHT V31X and more bytes")],
    ids=["cla", "ins", "other-version"],
)
def test_detect_refuses_other_cards(applet: Echo) -> None:
    assert not detect(AppletTransport(applet))


def test_profile_reads_signature_certificate_and_chain(
    person: IssuedCard, company: IssuedCard
) -> None:
    transport = Recorder(full_applet(person, company))
    with GpkiCard(transport, label="test") as card:
        assert isinstance(card, Card)
        assert card.read_certificate() == person.der()
        assert card.read_chain() == person.chain_der()  # issuer first, then root
    reads = [a for a in transport.sent if a[1] == 0xB0]
    assert all(a[4] <= MAX_CHUNK for a in reads)
    assert reads[0] == bytes.fromhex("80B0150004")  # the header first


def test_chain_leaves_out_empty_slots(person: IssuedCard) -> None:
    issuer = person.chain_der()[0]
    card = GpkiCard(AppletTransport(GpkiApplet(person.der(), issuer_cert=issuer)), label="t")
    assert card.read_chain() == (issuer,)
    assert GpkiCard(AppletTransport(GpkiApplet(person.der())), label="t").read_chain() == ()


@pytest.mark.parametrize("operation", ["verify_pin", "sign"])
def test_pin_and_signing_need_hicos(person: IssuedCard, operation: str) -> None:
    card = GpkiCard(AppletTransport(GpkiApplet(person.der())), label="t")
    with pytest.raises(CardError) as info:
        card.verify_pin("123456") if operation == "verify_pin" else card.sign(b"challenge")
    assert info.value.code is ErrorCode.HICOS_REQUIRED
    assert "HiCOS" in info.value.message("en")


def test_a_card_without_the_store_is_card_error() -> None:
    card = GpkiCard(AppletTransport(Echo(0x6A82)), label="t")
    with pytest.raises(CardError) as info:
        card.read_certificate()
    assert info.value.code is ErrorCode.CARD_ERROR
    assert "08F2" in str(info.value) or "3F00" in str(info.value)


def test_an_empty_signature_slot_is_card_error(person: IssuedCard) -> None:
    applet = GpkiApplet(person.der())
    applet._files[0x08F2] = bytes(len(applet._files[0x08F2]))  # wipe the store
    with pytest.raises(CardError) as info:
        GpkiCard(AppletTransport(applet), label="t").read_certificate()
    assert info.value.detail == "the card holds no signature certificate"


def test_a_truncated_certificate_is_card_error(person: IssuedCard) -> None:
    applet = GpkiApplet(person.der())
    store = bytearray(applet._files[0x08F2])
    store[OFFSET_SIGNATURE + 2 : OFFSET_SIGNATURE + 4] = (CERT_SLOT_SIZE + 0x100).to_bytes(2, "big")
    applet._files[0x08F2] = bytes(store)  # the header claims more than the store holds
    with pytest.raises(CardError) as info:
        GpkiCard(AppletTransport(applet), label="t").read_certificate()
    assert info.value.code is ErrorCode.CARD_ERROR


def test_close_runs_on_close_once_and_closes_the_card(person: IssuedCard) -> None:
    calls: list[str] = []
    card = GpkiCard(
        AppletTransport(GpkiApplet(person.der())), label="t", on_close=lambda: calls.append("x")
    )
    card.close()
    card.close()
    assert calls == ["x"]
    assert "closed" in repr(card)
    for operation in (card.read_certificate, card.read_chain, lambda: card.sign(b"m")):
        with pytest.raises(CardError) as info:
            operation()
        assert info.value.code is ErrorCode.CARD_ERROR


def test_command_encoding_matches_the_public_script() -> None:
    assert command(0x80, 0xB0, 0x15, 0x04, le=0xF0) == bytes.fromhex("80B01504F0")


# --- through pcscd ------------------------------------------------------------------------------


@pytest.fixture
def gpki_reader(
    vpcd_readers: list[tuple[str, int]], person: IssuedCard, company: IssuedCard
) -> Iterator[str]:
    """A full GPKI card in the first vpcd reader; removed (and EMPTY) afterwards."""
    name, port = vpcd_readers[0]
    with CardThread(full_applet(person, company), port=port):
        assert wait_for_card(name, present=True, timeout=5)
        yield name
    assert wait_for_card(name, present=False, timeout=5)


def test_through_pcscd_reads_certificate_and_chain(gpki_reader: str, person: IssuedCard) -> None:
    with open_card(f"pcsc:{gpki_reader}") as card:
        assert isinstance(card, GpkiCard)
        assert card.label == f"pcsc:{gpki_reader}"
        assert card.read_certificate() == person.der()
        assert card.read_chain() == person.chain_der()
        with pytest.raises(CardError) as info:
            card.sign(b"challenge")
        assert info.value.code is ErrorCode.HICOS_REQUIRED
        with pytest.raises(CardError) as info:
            card.verify_pin("123456")
        assert info.value.code is ErrorCode.HICOS_REQUIRED


def test_through_pcscd_the_t0_card_is_accepted(gpki_reader: str) -> None:
    connection = pcsc_module._connect(gpki_reader, scard.SCARD_LEAVE_CARD)
    try:
        assert connection.getProtocol() == CardConnection.T0_protocol
        assert bytes(connection.getATR()) == GPKI_ATR
    finally:
        pcsc_module._release(connection)


def test_through_pcscd_listed_as_gpki(gpki_reader: str) -> None:
    [info] = pcsc_module.list_readers(only=[gpki_reader])
    assert (info.card_present, info.profile) == (True, "gpki")
