"""A PIV card check through pcscd against its floor, for information (not a test, no target).

The engine is what ``swreg register`` does at 憑證檢查 with a card in a reader, card side:
``open_card("pcsc:READER")`` (the reader resolved, an exclusive connection, the profile
detected), VERIFY the PIN, read the certificate, sign a 96-byte challenge, close (the card is
reset). The floor is the very APDUs the engine sent, recorded on a first run, replayed over one
raw pyscard connection opened the same way (exclusive, reset on disconnect), each response
checked against the recorded status word: what pcscd, vpcd and the card itself cost with no
engine code. The card is a virtual PIV card (RSA-2048, then P-256) answering over vpcd from a
thread of this process. Engine and floor take turns run by run (a load change hits both
alike); each figure is the median of ``runs`` runs and the ratio is engine / floor.

pcscd must list a "Virtual PCD" reader (vsmartcard-vpcd). When none answers, this starts
``pcscd --foreground`` for its duration (as ``scripts/with-pcscd`` does) and stops it by PID;
without pcscd the section reports itself skipped. ``SWREG_TEST_VPCD`` ("NAME=PORT;...") names
the reader and its vpcd port as for the tests; the first pair is used.

    .venv/bin/python bench/piv.py [--runs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from common import machine, merge_results

import readers.pcsc
from engine.testing.pki import KeyType, TestPKI, pkcs12_bytes
from readers import open_card
from readers._transport import Response
from readers.vcard import CardThread, PivApplet

PIN = "13572468"
CHALLENGE = bytes(range(96))  # SHA-256(origin) ‖ SHA-256(registration id) ‖ SHA-256(nonce)
KEYS: tuple[tuple[KeyType, str], ...] = (("rsa", "RSA-2048"), ("ec", "EC P-256"))
DEFAULT_VPCD = "Virtual PCD 00 00=35963"


def vpcd_reader() -> tuple[str, int]:
    """The first (reader name, vpcd port) of ``SWREG_TEST_VPCD``, else Debian's first slot."""
    spec = os.environ.get("SWREG_TEST_VPCD", "").strip() or DEFAULT_VPCD
    name, port = spec.split(";")[0].rsplit("=", 1)
    return name.strip(), int(port)


def reader_listed(name: str) -> bool:
    from smartcard.System import readers

    try:
        return any(str(r) == name for r in readers())
    except Exception:  # pcscd not running: pyscard raises its own errors
        return False


@contextlib.contextmanager
def pcscd_serving(name: str) -> Iterator[str | None]:
    """Yields None once pcscd lists ``name`` (starting pcscd if need be), else why not."""
    if reader_listed(name):
        yield None
        return
    binary = shutil.which("pcscd")
    if binary is None:
        yield "no pcscd on PATH (make setup installs it)"
        return
    process = subprocess.Popen(
        [binary, "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not reader_listed(name) and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.05)
        if reader_listed(name):
            yield None
        else:
            yield f"pcscd lists no reader {name!r} (is vsmartcard-vpcd installed?)"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


# -- the two sides -------------------------------------------------------------------------------

Exchange = tuple[bytes, int]  # an APDU sent and the status word it got


def engine_check(reader: str, der: bytes) -> None:
    """One card check through the engine's reader code."""
    with open_card(f"pcsc:{reader}") as card:
        card.verify_pin(PIN)
        certificate = card.read_certificate()
        card.sign(CHALLENGE)
    if certificate != der:
        raise RuntimeError(f"{reader}: the card answered another certificate")


def recorded(reader: str, der: bytes) -> list[Exchange]:
    """One engine check, with every APDU it sent and the status word that came back."""
    exchanges: list[Exchange] = []
    transmit = readers.pcsc.PcscTransport.transmit

    def recording(self: readers.pcsc.PcscTransport, apdu: bytes) -> Response:
        response = transmit(self, apdu)
        exchanges.append((apdu, response.sw))
        return response

    readers.pcsc.PcscTransport.transmit = recording  # type: ignore[method-assign]
    try:
        engine_check(reader, der)
    finally:
        readers.pcsc.PcscTransport.transmit = transmit  # type: ignore[method-assign]
    return exchanges


def floor_check(reader: Any, exchanges: list[Exchange]) -> None:
    """The same APDUs over one raw connection: exclusive, T=1, the card reset afterwards."""
    from smartcard.CardConnection import CardConnection
    from smartcard.scard import SCARD_RESET_CARD, SCARD_SHARE_EXCLUSIVE

    connection = reader.createConnection()
    connection.connect(CardConnection.T1_protocol, SCARD_SHARE_EXCLUSIVE, SCARD_RESET_CARD)
    try:
        for apdu, sw in exchanges:
            _, sw1, sw2 = connection.transmit(list(apdu))
            if sw1 << 8 | sw2 != sw:
                raise RuntimeError(f"replay: {apdu[:4].hex()} got {sw1:02X}{sw2:02X}, not {sw:04X}")
    finally:
        connection.disconnect()
        connection.release()


def one_key(pki: TestPKI, key: KeyType, reader: str, port: int, runs: int) -> dict[str, Any]:
    from smartcard.System import readers as pcsc_readers

    card = pki.issue_person(key=key)
    der = card.der()
    applet = PivApplet.from_pkcs12(pkcs12_bytes(card, PIN), PIN)
    if not readers.pcsc.wait_for_card(reader, present=False, timeout=5):
        raise RuntimeError(f"{reader} holds a card already (in use by someone else?)")
    engine: list[float] = []
    floor: list[float] = []
    with CardThread(applet, port=port):
        if not readers.pcsc.wait_for_card(reader, present=True, timeout=5):
            raise RuntimeError(f"the virtual card did not show in {reader}")
        (raw_reader,) = [r for r in pcsc_readers() if str(r) == reader]
        exchanges = recorded(reader, der)  # also the warm-up of the engine
        floor_check(raw_reader, exchanges)  # and of the floor
        sides: list[tuple[list[float], Callable[[], None]]] = [
            (engine, lambda: engine_check(reader, der)),
            (floor, lambda: floor_check(raw_reader, exchanges)),
        ]
        for run in range(runs):
            for timings, check in sides if run % 2 == 0 else sides[::-1]:
                began = time.perf_counter()
                check()
                timings.append(time.perf_counter() - began)
    readers.pcsc.wait_for_card(reader, present=False, timeout=5)
    engine_ms = statistics.median(engine) * 1000
    floor_ms = statistics.median(floor) * 1000
    return {
        "apdus": len(exchanges),
        "engine": {"median_ms": round(engine_ms, 3), "max_ms": round(max(engine) * 1000, 3)},
        "floor": {"median_ms": round(floor_ms, 3), "max_ms": round(max(floor) * 1000, 3)},
        "ratio": round(engine_ms / floor_ms, 3),
    }


def measure(*, runs: int) -> dict[str, Any]:
    """Both key types, or ``{"skipped": why}`` when pcscd cannot serve the virtual reader."""
    reader, port = vpcd_reader()
    with pcscd_serving(reader) as unavailable:
        if unavailable is not None:
            return {"skipped": unavailable}
        pki = TestPKI.create(datetime.now(UTC))
        section: dict[str, Any] = {"reader": reader, "runs": runs}
        for key, _ in KEYS:
            section[key] = one_key(pki, key, reader, port, runs)
        return section


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    section = measure(runs=args.runs)
    if "skipped" in section:
        print(f"PIV card check through pcscd: skipped, {section['skipped']}")
        return
    print(f"PIV card check through pcscd ({section['reader']}), median of {args.runs} runs")
    for key, label in KEYS:
        data = section[key]
        print(
            f"  {label:8}  engine {data['engine']['median_ms']:7.2f} ms   "
            f"floor (its {data['apdus']} APDUs raw) {data['floor']['median_ms']:7.2f} ms   "
            f"ratio {data['ratio']:.2f}"
        )
    merge_results({"piv": {**section, "measured": machine()}})


if __name__ == "__main__":
    main()
