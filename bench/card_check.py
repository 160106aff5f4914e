"""One card check through pcscd, timed: the median of N runs (not a test; no assertions).

Each run is what ``swreg register`` does at 憑證檢查 with a card in a reader: open the reader,
detect the profile, VERIFY the PIN, read the certificate, issue a challenge, have the card sign
it, and validate it server-side (chain, validity, key usage, profile, CRL, signature) — then go
back one step so the next run can check again. A virtual PIV card answers over vpcd.

    scripts/with-pcscd .venv/bin/python bench/card_check.py [--runs 30] [--key rsa|ec]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from engine import CardResponse, Settings, bootstrap
from engine._settings import Argon2Parameters
from engine.testing.pki import TestPKI
from readers import open_card
from readers.pcsc import wait_for_card
from readers.vcard import CardThread, PivApplet

PIN = "13572468"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--key", choices=("rsa", "ec"), default="rsa")
    parser.add_argument("--reader", default="Virtual PCD 00 00")
    parser.add_argument("--port", type=int, default=35963)
    args = parser.parse_args()

    pki = TestPKI.create(datetime.now(UTC))
    card = pki.issue_person(key=args.key)
    applet = PivApplet.from_pkcs12(pki.pkcs12_bytes(card, PIN), PIN)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{Path(folder) / 'bench.db'}",
            secret_key=bytes(32),
            argon2=Argon2Parameters(1, 64, 1),
        )
        app = bootstrap(settings)
        pki.publish_to(app.trust, actor="bench")
        service = app.registrations
        view = service.start("person.general", consent=True)
        card_side, server_side, total = [], [], []
        with CardThread(applet, port=args.port):
            assert wait_for_card(args.reader, present=True, timeout=5)
            for _ in range(args.runs):
                began = time.perf_counter()
                challenge = service.issue_challenge(view.id)
                with open_card(f"pcsc:{args.reader}") as opened:
                    opened.verify_pin(PIN)
                    certificate = opened.read_certificate()
                    signature = opened.sign(challenge.payload)
                signed = time.perf_counter()
                view = service.submit_card(
                    view.id, CardResponse(challenge.id, certificate, signature, card.chain_der())
                )
                done = time.perf_counter()
                view = service.back(view.id)
                card_side.append(signed - began)
                server_side.append(done - signed)
                total.append(done - began)
        wait_for_card(args.reader, present=False, timeout=5)
        app.close()

    def ms(values: list[float]) -> str:
        return (
            f"median {statistics.median(values) * 1000:7.2f} ms   max {max(values) * 1000:7.2f} ms"
        )

    print(f"card check through pcscd, {args.key.upper()} PIV card, {args.runs} runs")
    print(f"  card side (open, verify PIN, read, sign) {ms(card_side)}")
    print(f"  server side (validate, persist, audit)   {ms(server_side)}")
    print(f"  whole check                              {ms(total)}")


if __name__ == "__main__":
    main()
