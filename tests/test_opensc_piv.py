"""OpenSC — PIV software written by others — reads and signs with the virtual PIV card.

The card (``readers.vcard.PivApplet``) is inserted into a vpcd reader of the real pcscd
(``scripts/with-pcscd``); OpenSC's own tools run as subprocesses against it, as a person with
the card would run them (RECIPES.md §5): ``opensc-tool --name``, ``pkcs15-tool
--list-certificates`` / ``--read-certificate``, and ``pkcs11-tool`` with ``opensc-pkcs11.so``
logging in and signing. Nothing here skips: without Debian's ``opensc`` (``make setup``
installs it) every test fails.

What OpenSC does that a card must survive: other drivers' foreign SELECTs and ``00 CA DF 30``
first; then GET DATA ``7E`` (discovery) to learn whether PIV is *already* the active
application, a SELECT of the right-truncated AID when it is not; reads with Le=08 then the exact
length; command chaining in and ``61xx`` out for RSA-2048; a second VERIFY before signing with
key 9C. A card that answered the discovery object while PIV was not selected made OpenSC skip
the SELECT and every certificate read failed with ``69 85`` ("0 certificates").
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from engine.testing.pki import IssuedCard, KeyType, TestPKI
from readers._transport import Response
from readers.pcsc import wait_for_card
from readers.vcard import CardThread, PivApplet, RetryState

SWREG = str(Path(sys.executable).parent / "swreg")
PIN = "24681357"
WRONG_PIN = "97531864"
MESSAGE = b"registration challenge signed through OpenSC's PKCS#11 module"
KEY_TYPES: list[KeyType] = ["rsa", "ec"]
MECHANISMS = {
    "rsa": ["--mechanism", "SHA256-RSA-PKCS"],
    "ec": ["--mechanism", "ECDSA-SHA256", "--signature-format", "openssl"],
}
# OpenSC's PIV emulation: certificate ID 01 is slot 9A, ID 02 slot 9C.
CERTIFICATES = (
    ("Certificate for PIV Authentication", "01"),
    ("Certificate for Digital Signature", "02"),
)
TOOLS = ("opensc-tool", "pkcs15-tool", "pkcs11-tool")


# -- OpenSC ---------------------------------------------------------------------------------------


def _opensc_module() -> Path:
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    return Path("/usr/lib") / multiarch / "opensc-pkcs11.so"


@pytest.fixture(scope="module")
def opensc() -> Path:
    """The path of ``opensc-pkcs11.so``; fails (never skips) when OpenSC is not installed."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    module = _opensc_module()
    if not module.exists():
        missing.append(str(module))
    assert not missing, f"OpenSC is not installed ({', '.join(missing)}): run `make setup`"
    return module


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The tools' environment: a home of the test's own, so no cache of OpenSC's is shared."""
    home = tmp_path / "home"
    home.mkdir()
    values = {k: v for k, v in os.environ.items() if not k.startswith("OPENSC_")}
    return {**values, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, env=env, timeout=60, check=False
    )


def pkcs11_slot(module: Path, env: dict[str, str], reader: str) -> str:
    """The PKCS#11 slot ID (``0x…``) that ``opensc-pkcs11.so`` gives ``reader``."""
    listed = run(env, "pkcs11-tool", "--module", str(module), "--list-slots")
    assert listed.returncode == 0, listed.stderr
    slots = re.findall(r"^Slot \d+ \((0x[0-9a-f]+)\): (.+)$", listed.stdout, re.MULTILINE)
    found: list[str] = [slot for slot, name in slots if name.strip() == reader]
    assert len(found) == 1, listed.stdout
    return found[0]


def sign(
    module: Path, env: dict[str, str], slot: str, key_type: KeyType, key_id: str, pin: str,
    folder: Path,
) -> tuple[subprocess.CompletedProcess[str], Path]:  # fmt: skip
    """``pkcs11-tool --login --pin PIN --sign`` of :data:`MESSAGE` with key ``key_id``."""
    message = folder / "message.bin"
    message.write_bytes(MESSAGE)
    output = folder / f"signature-{key_id}.bin"
    output.unlink(missing_ok=True)
    done = run(
        env, "pkcs11-tool", "--module", str(module), "--slot", slot, "--login", "--pin", pin,
        "--sign", "--id", key_id, *MECHANISMS[key_type], "--input-file", str(message),
        "--output-file", str(output),
    )  # fmt: skip
    return done, output


def verify(der: bytes, signature: bytes) -> None:
    """Raise ``InvalidSignature`` unless the certificate's key signed :data:`MESSAGE`."""
    public_key = x509.load_der_x509_certificate(der).public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))


def encoded_serial(certificate: x509.Certificate) -> str:
    """The serial as pkcs15-tool prints it: the DER INTEGER's tag and length, then its value."""
    value = certificate.serial_number.to_bytes(certificate.serial_number.bit_length() // 8 + 1)
    return f"02 {len(value):02X} {value.hex().upper()}"


# -- the card -------------------------------------------------------------------------------------


class RecordingApplet:
    """A :class:`PivApplet` whose APDUs and answers are kept, to see what OpenSC sent."""

    def __init__(self, applet: PivApplet) -> None:
        self.applet = applet
        self.atr = applet.atr
        self.exchanges: list[tuple[bytes, Response]] = []

    def process(self, apdu: bytes) -> bytes:
        answer = self.applet.process(apdu)
        self.exchanges.append((apdu, Response.parse(answer)))
        return answer

    def reset(self) -> None:
        self.applet.reset()

    def sent(self, prefix: str) -> list[tuple[bytes, Response]]:
        head = bytes.fromhex(prefix)
        return [(apdu, answer) for apdu, answer in self.exchanges if apdu.startswith(head)]


Insert = Callable[[RecordingApplet], AbstractContextManager[str]]


@pytest.fixture(scope="module")
def cards(pki: TestPKI) -> dict[KeyType, IssuedCard]:
    return {key_type: pki.issue_person(key=key_type) for key_type in KEY_TYPES}


@pytest.fixture
def reader(vpcd_readers: list[tuple[str, int]]) -> Iterator[Insert]:
    """``insert(applet)`` puts a card into the first vpcd reader; it is removed afterwards."""
    name, port = vpcd_readers[0]
    threads: list[CardThread] = []

    @contextmanager
    def insert(applet: RecordingApplet) -> Iterator[str]:
        thread = CardThread(applet, port=port).start()
        threads.append(thread)
        assert wait_for_card(name, present=True, timeout=5)
        yield name

    yield insert
    for thread in threads:
        thread.stop()
    assert wait_for_card(name, present=False, timeout=5)


def recording(card: IssuedCard, state: RetryState | None = None) -> RecordingApplet:
    return RecordingApplet(PivApplet(card.key, card.certificate, pin=PIN, state=state))


# -- reading: opensc-tool and pkcs15-tool ---------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_pkcs15_tool_lists_and_reads_the_certificates(
    opensc: Path, env: dict[str, str], reader: Insert, cards: dict[KeyType, IssuedCard],
    key_type: KeyType,
) -> None:  # fmt: skip
    card = cards[key_type]
    applet = recording(card)
    with reader(applet) as name:
        named = run(env, "opensc-tool", "--reader", name, "--name")
        listed = run(env, "pkcs15-tool", "--reader", name, "--list-certificates")
        read = {
            key_id: run(env, "pkcs15-tool", "--reader", name, "--read-certificate", key_id)
            for _, key_id in CERTIFICATES
        }
    assert (named.returncode, named.stdout) == (0, "Personal Identity Verification Card\n")
    serial = encoded_serial(card.certificate)
    expected = "".join(
        f"X.509 Certificate [{label}]\n"
        "\tObject Flags   : [0x00]\n"
        "\tAuthority      : no\n"
        "\tPath           : \n"
        f"\tID             : {key_id}\n"
        f"\tEncoded serial : {serial}\n\n"
        for label, key_id in CERTIFICATES
    )
    assert (listed.returncode, listed.stdout) == (0, expected), listed.stderr
    for key_id, done in read.items():
        assert done.returncode == 0, (key_id, done.stderr)
        assert (
            x509.load_pem_x509_certificate(done.stdout.encode()).public_bytes(Encoding.DER)
            == card.der()
        )
    # What OpenSC sent (RECIPES.md §5): foreign SELECTs, 7E before any SELECT (refused, PIV not
    # being selected yet), then the truncated PIV AID, then Le=08 reads of the objects.
    assert applet.sent("00CADF30")[0][1].sw == 0x6D00
    first_discovery = applet.sent("00CB3FFF035C017E")[0]
    assert first_discovery[1].sw == 0x6985
    selects = applet.sent("00A40400")
    foreign = [answer.sw for apdu, answer in selects if apdu[5:10] != bytes.fromhex("A000000308")]
    assert foreign and set(foreign) == {0x6A82}
    assert applet.exchanges.index(first_discovery) < applet.exchanges.index(
        applet.sent("00A4040009A00000030800001000")[0]
    )
    head = applet.sent("00CB3FFF055C035FC10A08")
    assert head and head[0][1].sw >> 8 == 0x61 and len(head[0][1].data) == 8
    assert applet.sent("00CB3FFF055C035FC10708")[0][1].sw == 0x6A82  # no CCC: fine


def test_swreg_card_serve_is_read_by_pkcs15_tool(
    opensc: Path, env: dict[str, str], pki: TestPKI, tmp_path: Path,
    vpcd_readers: list[tuple[str, int]],
) -> None:  # fmt: skip
    """The issue's report: ``swreg card serve card.p12 --slot 1``, then ``pkcs15-tool``."""
    name, port = vpcd_readers[1]
    card = pki.issue_company("04595257", key="rsa")
    p12 = tmp_path / "card.p12"
    pki.write_pkcs12(card, p12, PIN)
    where = ["--slot", "1"] if port == 35964 else ["--port", str(port)]
    server = subprocess.Popen(
        [SWREG, "card", "serve", str(p12), *where, "--pin-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdin is not None
        server.stdin.write(PIN + "\n")
        server.stdin.close()
        assert wait_for_card(name, present=True, timeout=10)
        listed = run(env, "pkcs15-tool", "--reader", name, "--list-certificates")
        read = run(env, "pkcs15-tool", "--reader", name, "--read-certificate", "02")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        assert wait_for_card(name, present=False, timeout=5)
    assert listed.returncode == 0, listed.stderr
    labels = re.findall(r"^X\.509 Certificate \[(.+)\]$", listed.stdout, re.MULTILINE)
    assert labels == [label for label, _ in CERTIFICATES]
    assert read.returncode == 0, read.stderr
    assert x509.load_pem_x509_certificate(read.stdout.encode()) == card.certificate


# -- signing: pkcs11-tool with opensc-pkcs11.so ---------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_pkcs11_tool_signs_with_both_keys(
    opensc: Path, env: dict[str, str], reader: Insert, cards: dict[KeyType, IssuedCard],
    key_type: KeyType, tmp_path: Path,
) -> None:  # fmt: skip
    card = cards[key_type]
    applet = recording(card)
    with reader(applet) as name:
        slot = pkcs11_slot(opensc, env, name)
        for key_id in ("02", "01"):
            done, output = sign(opensc, env, slot, key_type, key_id, PIN, tmp_path)
            assert done.returncode == 0, (key_id, done.stderr)
            verify(card.der(), output.read_bytes())
        exported = run(
            env, "pkcs11-tool", "--module", str(opensc), "--slot", slot, "--read-object",
            "--type", "cert", "--id", "02", "--output-file", str(tmp_path / "9c.der"),
        )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "9c.der").read_bytes() == card.der()
    assert applet.applet.state.tries_left == 3
    # Key 9C is "PIN Always": OpenSC VERIFYs the PIN again just before each use of it.
    uses_9c = [  # the first APDU of each GENERAL AUTHENTICATE with key 9C
        i for i, (apdu, _) in enumerate(applet.exchanges)
        if apdu[1] == 0x87 and apdu[3] == 0x9C and not applet.exchanges[i - 1][0][0] & 0x10
    ]  # fmt: skip
    assert uses_9c
    for index in uses_9c:
        before, answer = applet.exchanges[index - 1]
        assert (before[:5], answer.sw) == (bytes.fromhex("0020008008"), 0x9000)
    if key_type == "rsa":  # 266 bytes in: chained; 264 bytes out: 61xx then GET RESPONSE
        assert applet.sent("1087079C")
        assert applet.sent("00C00000")


def test_wrong_pins_are_counted_then_the_card_locks(
    opensc: Path, env: dict[str, str], reader: Insert, cards: dict[KeyType, IssuedCard],
    tmp_path: Path,
) -> None:  # fmt: skip
    state = RetryState.file(tmp_path / "tries.json")
    applet = recording(cards["ec"], state)
    results: list[tuple[int, str, int, bool]] = []
    with reader(applet) as name:
        slot = pkcs11_slot(opensc, env, name)
        for pin in (WRONG_PIN, PIN, WRONG_PIN, WRONG_PIN, WRONG_PIN, WRONG_PIN, PIN):
            done, output = sign(opensc, env, slot, "ec", "02", pin, tmp_path)
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            outcome = errors[0] if errors else "signed"
            results.append((done.returncode, outcome, state.tries_left, output.exists()))
    incorrect = "error: PKCS11 function C_Login failed: rv = CKR_PIN_INCORRECT (0xa0)"
    locked = "error: PKCS11 function C_Login failed: rv = CKR_PIN_LOCKED (0xa4)"
    assert results == [
        (1, incorrect, 2, False),
        (0, "signed", 3, True),  # a right PIN refills the counter
        (1, incorrect, 2, False),
        (1, incorrect, 1, False),
        (1, incorrect, 0, False),
        (1, locked, 0, False),
        (1, locked, 0, False),  # even the right PIN
    ]
    assert [answer.sw for _, answer in applet.sent("0020008008")][-2:] == [0x6983, 0x6983]
    assert '"tries_left": 0' in (tmp_path / "tries.json").read_text()
