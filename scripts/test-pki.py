#!/usr/bin/env python3
"""Write a small TEST PKI for trying a portal by hand (docs/operations.md): no real card needed.

    python scripts/test-pki.py FOLDER        (with swreg's virtualenv: .venv/bin/python)

FOLDER then holds, made on the spot by :class:`engine.testing.pki.TestPKI` (every certificate
says TEST in its name; never trust them in production):

    root.cer, moica.cer      a GRCA-like test root (the trust anchor) and a test MOICA under it
    root.crl, moica.crl      their CRLs (empty, valid 7 days), so that the default ``hard``
                             revocation policy knows every status and ``/readyz`` is ready
    card-1.p12 … card-3.p12  自然人憑證 test cards (PKCS#12, password = PIN 123456) of the three
                             people printed (name and national ID, for the forms)

and the script prints one line per card: ``FILE NAME NATIONAL_ID``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from engine.core.declarations import IssuerCA
from engine.testing.pki import TestPKI

PIN = "123456"
CRL_VALIDITY = timedelta(days=7)
PEOPLE = (("王小明", "A123456789"), ("黃志偉", "E120206183"), ("陳小美", "B220206182"))
"""Test people: valid national IDs (the card carries the last four digits)."""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    pki = TestPKI.create(datetime.now(UTC))
    moica = pki.ca(IssuerCA.MOICA)
    (folder / "root.cer").write_bytes(pki.der(pki.root.certificate))
    (folder / "moica.cer").write_bytes(pki.der(moica.certificate))
    next_update = pki.now + CRL_VALIDITY
    earlier = pki.now - timedelta(hours=1)
    for name, ca in (("root", pki.root), ("moica", moica)):
        crl = pki.crl(ca, [], this_update=earlier, next_update=next_update)
        (folder / f"{name}.crl").write_bytes(crl.public_bytes(Encoding.DER))
    for number, (name, national_id) in enumerate(PEOPLE, start=1):
        card = pki.issue_person(name, national_id[-4:])
        path = pki.write_pkcs12(card, folder / f"card-{number}.p12", PIN)
        print(path, name, national_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
