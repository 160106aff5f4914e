"""Real GPKI and TWCA certificates (public data), loaded through one typed helper.

``tests/vectors/gpki/README.md`` has a line per file: what it is and what it shows. Every
end-entity certificate there has expired (or is a test certificate): tests validate them at a
fixed time inside their validity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509

from engine.pki.certificate import ParsedCertificate, load_certificate

GPKI_DIR = Path(__file__).parent / "vectors" / "gpki"

GpkiVector = Literal[
    "gca-ee-2017-epa-ssl",
    "grca-2012-link",
    "grca-g1-2002-root",
    "grca-g3-root",
    "grca-test-g4-ecc-root",
    "gtestca-ee-2010-testco1",
    "gtestca-ee-2023-testco1",
    "gtestca-ee-testagency1",
    "moeaca-ee-g1-2011-uxb2b",
    "moeaca-ee-g2-2019-citibank",
    "moeaca-g1-ca",
    "moeaca-g2-ca",
    "moica-g1-ca",
    "moica-g2-ca",
    "moica-g3-ca",
    "moica-test-ee-2024-2",
    "moica-test-ee-2024-enc-1",
    "related-taica-test-fxml-ee-2022",
    "twca-cyber-root-ca",
    "twca-global-root-ca",
    "twca-root-ca",
]
ALL_VECTORS: tuple[GpkiVector, ...] = get_args(GpkiVector)

# A moment inside the validity of the GRCA 2002 root, the 2012 link, MOEACA G2 and the
# citibank card (2019-03-11 … 2024-03-11).
INSIDE_G2_ERA = datetime(2020, 1, 1, tzinfo=UTC)


def vector_bytes(name: GpkiVector) -> bytes:
    """The DER bytes of ``tests/vectors/gpki/<name>.cer``."""
    return (GPKI_DIR / f"{name}.cer").read_bytes()


@cache
def vector(name: GpkiVector) -> x509.Certificate:
    return x509.load_der_x509_certificate(vector_bytes(name))


@cache
def parsed_vector(name: GpkiVector) -> ParsedCertificate:
    return load_certificate(vector_bytes(name))
