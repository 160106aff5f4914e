"""``readers.pcsc``: cards in PC/SC readers through the real pcscd, and its error translation.

The cards are virtual (:mod:`readers.vcard`) and sit in the vpcd readers the ``vpcd_readers``
fixture names; every test removes its cards and waits until pcscd reports the reader EMPTY, so
no card leaks into the next test. Readers not named by ``vpcd_readers`` are only ever listed
(``list_readers``), never opened: other suites may be using them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from smartcard import scard
from smartcard.Exceptions import CardConnectionException, NoCardException

import readers
from engine import CardError, EnvironmentProblem, ErrorCode, SwregError, UsageError
from readers import ReaderInfo, open_card
from readers import pcsc as pcsc_module
from readers._transport import Response
from readers.pcsc import (
    PCSCD_HINT,
    PcscTransport,
    list_readers,
    reader_names,
    resolve_reader,
    wait_for_card,
)
from readers.profiles.piv import PivCard
from readers.vcard import CardThread
from readers.vcard._gpki import GpkiApplet
from readers.vcard._piv import PivApplet

PIN = "123456"
_DER = Encoding.DER
MESSAGE = b"SHA-256(origin) || SHA-256(registration id) || SHA-256(nonce)"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Insert = Callable[..., CardThread]


def _with_tck(atr: bytes) -> bytes:
    """``atr`` and its TCK (the XOR of every byte after TS)."""
    check = 0
    for byte in atr[1:]:
        check ^= byte
    return atr + bytes((check,))


class Mute:
    """A card that refuses every command (neither PIV nor GPKI); counts the commands it got."""

    atr = _with_tck(bytes.fromhex("3B8A01") + b"SWREG-MUTE")

    def __init__(self) -> None:
        self.commands = 0

    def process(self, apdu: bytes) -> bytes:
        self.commands += 1
        return b"\x6d\x00"

    def reset(self) -> None:
        pass


class CountingPiv(PivApplet):
    """A PIV applet that counts how often pcscd reset or powered it."""

    resets = 0

    def reset(self) -> None:
        self.resets += 1
        super().reset()


@pytest.fixture
def insert(vpcd_readers: list[tuple[str, int]]) -> Iterator[Insert]:
    """Insert applets into the vpcd readers; every card is removed (and EMPTY) afterwards."""
    inserted: list[tuple[CardThread, str]] = []

    def put(applet: Any, slot: int = 0) -> CardThread:
        name, port = vpcd_readers[slot]
        thread = CardThread(applet, port=port).start()
        inserted.append((thread, name))
        assert wait_for_card(name, present=True, timeout=5)
        return thread

    yield put
    for thread, name in inserted:
        thread.stop()
        assert wait_for_card(name, present=False, timeout=5)


@pytest.fixture
def names(vpcd_readers: list[tuple[str, int]]) -> list[str]:
    return [name for name, _port in vpcd_readers[:2]]


def verify(certificate: x509.Certificate, signature: bytes, message: bytes) -> None:
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))


# --- listing ----------------------------------------------------------------------------------


def test_list_readers_shows_cards_and_profiles(insert: Insert, names: list[str]) -> None:
    piv = PivApplet.generate("ec", pin=PIN)
    gpki = GpkiApplet(piv.certificate.public_bytes(_DER))
    insert(piv, slot=0)
    insert(gpki, slot=1)
    everything = list_readers()
    assert all(isinstance(info, ReaderInfo) for info in everything)
    shown = {info.name: (info.card_present, info.profile) for info in everything}
    assert shown[names[0]] == (True, "piv")
    assert shown[names[1]] == (True, "gpki")
    assert list_readers(only=names) == [info for info in everything if info.name in names]


def test_list_readers_unknown_card_and_empty_reader(insert: Insert, names: list[str]) -> None:
    mute = Mute()
    insert(mute, slot=0)
    assert list_readers(only=names) == [
        ReaderInfo(names[0], True, None),
        ReaderInfo(names[1], False, None),
    ]
    assert mute.commands >= 2  # the probe tried PIV, then GPKI


def test_without_pcscd_the_error_says_how_to_start_it() -> None:
    script = (
        "import readers.pcsc as p\n"
        "try:\n"
        "    p.list_readers()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc.code, exc, sep='|')\n"
        "    raise SystemExit(exc.exit_status)\n"
    )
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": "/nonexistent/pcscd.comm"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    kind, code, message = done.stdout.strip().split("|")
    assert (kind, code) == ("EnvironmentProblem", "no_reader")
    assert PCSCD_HINT in message
    assert "start it with `pcscd`" in message


# --- opening ----------------------------------------------------------------------------------


def test_open_by_exact_name_substring_and_index(insert: Insert, names: list[str]) -> None:
    piv = PivApplet.generate("ec", pin=PIN)
    insert(piv, slot=0)
    listed = reader_names()
    substring = names[0].swapcase()[1:]
    assert [n for n in listed if substring.casefold() in n.casefold()] == [names[0]]
    for target in (names[0], substring, str(listed.index(names[0]))):
        with open_card(f"pcsc:{target}") as card:
            assert isinstance(card, PivCard)
            assert card.label == f"pcsc:{names[0]}"
            assert card.read_certificate() == piv.certificate.public_bytes(_DER)


def test_unknown_reader_is_no_reader() -> None:
    with pytest.raises(EnvironmentProblem) as info:
        open_card("pcsc:no-such-reader")
    assert info.value.code is ErrorCode.NO_READER
    assert info.value.exit_status == 3
    assert "readers: 0: " in str(info.value)


def test_empty_reader_is_no_card(names: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWREG_CARD_WAIT", raising=False)
    started = time.monotonic()
    with pytest.raises(EnvironmentProblem) as info:
        open_card(f"pcsc:{names[1]}")
    assert info.value.code is ErrorCode.NO_CARD
    assert time.monotonic() - started < 0.3  # did not wait
    monkeypatch.setenv("SWREG_CARD_WAIT", "0.5")
    started = time.monotonic()
    with pytest.raises(EnvironmentProblem) as info:
        open_card(f"pcsc:{names[1]}")
    assert info.value.code is ErrorCode.NO_CARD
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_card_wait_is_usage_error(
    names: list[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SWREG_CARD_WAIT", value)
    with pytest.raises(UsageError):
        open_card(f"pcsc:{names[1]}")


def test_a_card_inserted_while_waiting_is_opened(
    vpcd_readers: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, port = vpcd_readers[0]
    monkeypatch.setenv("SWREG_CARD_WAIT", "5")
    thread = CardThread(PivApplet.generate("ec", pin=PIN), port=port)
    timer = threading.Timer(0.2, thread.start)
    timer.start()
    try:
        with open_card(f"pcsc:{name}") as card:
            assert card.read_certificate()
    finally:
        timer.join()
        thread.stop()
        assert wait_for_card(name, present=False, timeout=5)


def test_unsupported_card_is_card_error(insert: Insert, names: list[str]) -> None:
    mute = Mute()
    insert(mute)
    with pytest.raises(CardError) as info:
        open_card(f"pcsc:{names[0]}")
    assert (info.value.code, info.value.detail) == (ErrorCode.CARD_ERROR, "unsupported card")


def test_one_connection_for_the_card_life_and_close_resets(
    insert: Insert, names: list[str]
) -> None:
    applet = CountingPiv.generate("rsa", pin=PIN)
    insert(applet)
    with open_card(f"pcsc:{names[0]}") as card:
        resets = applet.resets
        card.verify_pin(PIN)
        verify(applet.certificate, card.sign(MESSAGE), MESSAGE)
        assert applet.verified
        assert applet.resets == resets  # no reconnect between the PIN and the signature
    deadline = time.monotonic() + 2
    while applet.resets == resets and time.monotonic() < deadline:
        time.sleep(0.01)  # the card thread handles pcscd's reset on its own
    assert applet.resets > resets  # SCARD_RESET_CARD on close
    assert not applet.verified
    assert wait_for_card(names[0], present=True, timeout=0)


def test_card_removed_mid_operation_is_no_card(
    vpcd_readers: list[tuple[str, int]],
) -> None:
    name, port = vpcd_readers[0]
    thread = CardThread(PivApplet.generate("ec", pin=PIN), port=port).start()
    try:
        assert wait_for_card(name, present=True, timeout=5)
        card = open_card(f"pcsc:{name}")
        card.verify_pin(PIN)
        thread.stop()
        assert wait_for_card(name, present=False, timeout=5)
        with pytest.raises(EnvironmentProblem) as info:
            card.sign(MESSAGE)
        assert info.value.code is ErrorCode.NO_CARD
        assert info.value.__cause__ is not None
        card.close()  # closing a card that is gone does not raise
    finally:
        thread.stop()
        assert wait_for_card(name, present=False, timeout=5)


def test_two_cards_in_two_readers_sign_each_with_its_key(insert: Insert, names: list[str]) -> None:
    first = PivApplet.generate("ec", pin=PIN)
    second = PivApplet.generate("rsa", pin="654321")
    insert(first, slot=0)
    insert(second, slot=1)
    with open_card(f"pcsc:{names[0]}") as one, open_card(f"pcsc:{names[1]}") as two:
        one.verify_pin(PIN)
        two.verify_pin("654321")
        signatures = (one.sign(MESSAGE), two.sign(MESSAGE))
        assert one.read_certificate() == first.certificate.public_bytes(_DER)
        assert two.read_certificate() == second.certificate.public_bytes(_DER)
    verify(first.certificate, signatures[0], MESSAGE)
    verify(second.certificate, signatures[1], MESSAGE)


def test_wait_for_card(insert: Insert, names: list[str]) -> None:
    assert wait_for_card(names[0], present=False, timeout=0)
    assert not wait_for_card(names[0], present=True, timeout=0)
    started = time.monotonic()
    assert not wait_for_card(names[0], present=True, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    insert(PivApplet.generate("ec", pin=PIN))
    assert wait_for_card(names[0], present=True, timeout=0)


def test_wait_for_an_unknown_reader_is_no_reader() -> None:
    with pytest.raises(EnvironmentProblem) as info:
        wait_for_card("no-such-reader", present=True, timeout=0)
    assert info.value.code is ErrorCode.NO_READER


# --- without cards: name resolution and error translation -------------------------------------

READERS = ["Virtual PCD 00 00", "Virtual PCD 00 01", "ACS ACR1252 1S CL Reader 00 00"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("Virtual PCD 00 01", "Virtual PCD 00 01"),  # exact
        ("acr1252", "ACS ACR1252 1S CL Reader 00 00"),  # unique substring, any case
        ("2", "ACS ACR1252 1S CL Reader 00 00"),  # index
        ("1", "Virtual PCD 00 01"),  # an index, though "1" is in two names
        ("1252", "ACS ACR1252 1S CL Reader 00 00"),  # out of range: a substring then
    ],
)
def test_resolve_reader(target: str, expected: str) -> None:
    assert resolve_reader(target, READERS) == expected


@pytest.mark.parametrize("target", ["virtual pcd", "nothing", "7"])
def test_resolve_reader_refuses(target: str) -> None:
    with pytest.raises(EnvironmentProblem) as info:
        resolve_reader(target, READERS)
    assert info.value.code is ErrorCode.NO_READER
    assert "Virtual PCD 00 00" in str(info.value)


def test_resolve_reader_without_readers() -> None:
    with pytest.raises(EnvironmentProblem) as info:
        resolve_reader("0", [])
    assert "readers: none" in str(info.value)


class FakeConnection:
    """Stands in for a pyscard connection: raises what it is told to."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.disconnected = False

    def getReader(self) -> str:
        return "Fake Reader 00 00"

    def transmit(self, apdu: list[int]) -> tuple[list[int], int, int]:
        if self.error is not None:
            raise self.error
        return [0xCA, 0xFE], 0x90, 0x00

    def disconnect(self) -> None:
        self.disconnected = True

    def release(self) -> None:
        pass


@pytest.mark.parametrize(
    ("hresult", "kind", "code"),
    [
        (scard.SCARD_W_REMOVED_CARD, EnvironmentProblem, ErrorCode.NO_CARD),
        (scard.SCARD_W_RESET_CARD, EnvironmentProblem, ErrorCode.NO_CARD),
        (scard.SCARD_E_NO_SMARTCARD, EnvironmentProblem, ErrorCode.NO_CARD),
        (scard.SCARD_W_UNRESPONSIVE_CARD, EnvironmentProblem, ErrorCode.NO_CARD),
        (scard.SCARD_E_SERVICE_STOPPED, EnvironmentProblem, ErrorCode.NO_READER),
        (scard.SCARD_E_NO_SERVICE, EnvironmentProblem, ErrorCode.NO_READER),
        (scard.SCARD_E_READER_UNAVAILABLE, EnvironmentProblem, ErrorCode.NO_READER),
        (scard.SCARD_E_NOT_TRANSACTED, CardError, ErrorCode.CARD_ERROR),
        (-1, CardError, ErrorCode.CARD_ERROR),
    ],
)
def test_transport_translates_pyscard_errors(
    hresult: int, kind: type[SwregError], code: ErrorCode
) -> None:
    error = CardConnectionException("Failed to transmit", hresult=hresult)
    transport = PcscTransport(FakeConnection(error))
    with pytest.raises(kind) as info:
        transport.transmit(b"\x00\xa4\x04\x00")
    assert info.value.code is code
    assert info.value.__cause__ is error


def test_transport_translates_a_negative_hresult() -> None:
    error = NoCardException("Unable to connect", hresult=scard.SCARD_W_REMOVED_CARD - 2**32)
    with pytest.raises(EnvironmentProblem) as info:
        PcscTransport(FakeConnection(error)).transmit(b"\x00\xa4\x04\x00")
    assert info.value.code is ErrorCode.NO_CARD


def test_transport_answers_and_closes() -> None:
    connection = FakeConnection()
    transport = PcscTransport(connection)
    assert transport.reader == "Fake Reader 00 00"
    assert transport.transmit(b"\x00\xca\x00\x00") == Response(b"\xca\xfe", 0x9000)
    transport.close()
    transport.close()
    assert connection.disconnected
    with pytest.raises(CardError) as info:
        transport.transmit(b"\x00\xca\x00\x00")
    assert info.value.code is ErrorCode.CARD_ERROR


def test_importing_readers_does_not_import_pcsc() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, readers; print('readers.pcsc' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr


def test_pcsc_scheme_is_registered() -> None:
    assert readers._OPENERS["pcsc"] is not None
    assert pcsc_module.SCHEME == "pcsc"
