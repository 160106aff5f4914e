"""A virtual GPKI/HiCOS card (Chunghwa Telecom) for the certificate read of DOMAIN.md §4.3.

**Test material only.** It answers exactly the public part of the card's protocol: the
``CHT V32N`` detection and the certificate store, all with the proprietary CLA ``0x80``::

    80 A4 00 00 02 <FID>            SELECT 3F00 (MF), 0900 (DF), 0905 (EF), 5030 (DF), 08F2 (EF)
    80 B0 <off_hi> <off_lo> <Le>    READ BINARY from the selected EF

The file tree is ``3F00/0900/0905`` (the card's version string, ``CHT V32N`` and padding) and
``3F00/5030/08F2`` (the certificate store). An EF or a DF below the MF is selectable from its
parent DF only, the MF always, as the host's SELECT sequences of DOMAIN.md §4.3 expect. The
store holds four DER certificates at fixed offsets, zero-filled between them::

    0x0000 root CA     0x0700 issuer CA     0x0E00 encryption cert     0x1500 signature cert

No public trace of the card's VERIFY or signing APDUs exists (DOMAIN.md ❓), so every other
command, including VERIFY and PSO, is refused with ``6D00``: such a card signs through HiCOS.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._transport import (
    SW_CLA_NOT_SUPPORTED,
    SW_END_OF_FILE,
    SW_FILE_NOT_FOUND,
    SW_INCORRECT_P1P2,
    SW_INS_NOT_SUPPORTED,
    SW_OK,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    Command,
    Response,
)

__all__ = [
    "CERT_SLOT_SIZE",
    "CHT_CLA",
    "EF_CERTIFICATES",
    "EF_VERSION",
    "GPKI_ATR",
    "OFFSET_ENCRYPTION",
    "OFFSET_ISSUER",
    "OFFSET_ROOT",
    "OFFSET_SIGNATURE",
    "VERSION_MARKER",
    "GpkiApplet",
]

CHT_CLA = 0x80
"""The proprietary class byte of every command the card answers."""

GPKI_ATR = bytes.fromhex("3B0A") + b"GPKI-VCARD"
"""T=0 only (no TD1), ten historical bytes naming the virtual card; no TCK under T=0 alone."""

MF, DF_VERSION, EF_VERSION, DF_PKCS15, EF_CERTIFICATES = 0x3F00, 0x0900, 0x0905, 0x5030, 0x08F2

VERSION_MARKER = b"CHT V32N"
"""What the version EF 0905 starts with (DOMAIN.md §4.3)."""

OFFSET_ROOT, OFFSET_ISSUER, OFFSET_ENCRYPTION, OFFSET_SIGNATURE = 0x0000, 0x0700, 0x0E00, 0x1500
CERT_SLOT_SIZE = 0x0700
"""Room for one certificate: the distance between two offsets of the store."""

_INS_SELECT, _INS_READ_BINARY = 0xA4, 0xB0
_SW_NO_CURRENT_EF = 0x6986
_VERSION_SIZE = 32
_PARENT = {DF_VERSION: MF, EF_VERSION: DF_VERSION, DF_PKCS15: MF, EF_CERTIFICATES: DF_PKCS15}
_DFS = frozenset({MF, DF_VERSION, DF_PKCS15})


def _status(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def _check_certificate(der: bytes, what: str) -> None:
    """Refuse what the store cannot hold: not ``30 82 LL LL``-framed, or larger than a slot."""
    if not der:
        return
    if len(der) < 4 or der[:2] != b"\x30\x82":
        raise ValueError(f"the {what} certificate must be DER starting 30 82 LL LL")
    if int.from_bytes(der[2:4], "big") + 4 != len(der):
        raise ValueError(f"the {what} certificate's DER length does not match its size")
    if len(der) > CERT_SLOT_SIZE:
        raise ValueError(f"the {what} certificate is larger than a slot ({CERT_SLOT_SIZE} bytes)")


def certificate_store(root: bytes, issuer: bytes, encryption: bytes, signature: bytes) -> bytes:
    """The contents of EF 08F2: each certificate at its offset, zeros between them."""
    store = bytearray(OFFSET_SIGNATURE + CERT_SLOT_SIZE)
    for offset, der in (
        (OFFSET_ROOT, root),
        (OFFSET_ISSUER, issuer),
        (OFFSET_ENCRYPTION, encryption),
        (OFFSET_SIGNATURE, signature),
    ):
        store[offset : offset + len(der)] = der
    return bytes(store)


@dataclass(slots=True)
class _State:
    """What a reset forgets: the current DF and EF."""

    df: int | None = None
    ef: int | None = None


class GpkiApplet:
    """A GPKI/HiCOS card holding a signature certificate and, optionally, its CA chain.

    Every certificate must be DER framed ``30 82 LL LL`` (as real ones are) and fit a slot of
    :data:`CERT_SLOT_SIZE` bytes; otherwise :class:`ValueError`. Empty optional certificates
    leave their slot zero-filled, which the host reads as absent.
    """

    atr = GPKI_ATR

    def __init__(
        self,
        signature_cert: bytes,
        *,
        issuer_cert: bytes = b"",
        root_cert: bytes = b"",
        encryption_cert: bytes = b"",
    ) -> None:
        if not signature_cert:
            raise ValueError("a GPKI card holds a signature certificate")
        for der, what in (
            (signature_cert, "signature"),
            (issuer_cert, "issuer"),
            (root_cert, "root"),
            (encryption_cert, "encryption"),
        ):
            _check_certificate(der, what)
        self._files = {
            EF_VERSION: VERSION_MARKER.ljust(_VERSION_SIZE, b"\x00"),
            EF_CERTIFICATES: certificate_store(
                root_cert, issuer_cert, encryption_cert, signature_cert
            ),
        }
        self._state = _State()

    def reset(self) -> None:
        """Power off/on or reset: the selection is forgotten."""
        self._state = _State()

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU (SELECT and READ BINARY; everything else ``6D00``)."""
        try:
            command = Command.parse(apdu)
        except ValueError:
            return _status(SW_WRONG_LENGTH)
        if command.cla != CHT_CLA:
            return _status(SW_CLA_NOT_SUPPORTED)
        if command.ins == _INS_SELECT:
            return _status(self._select(command))
        if command.ins == _INS_READ_BINARY:
            return self._read_binary(command).to_bytes()
        return _status(SW_INS_NOT_SUPPORTED)

    def _select(self, command: Command) -> int:
        if (command.p1, command.p2) != (0, 0):
            return SW_INCORRECT_P1P2
        if len(command.data) != 2:
            return SW_WRONG_LENGTH
        fid = int.from_bytes(command.data, "big")
        if fid != MF and (fid not in _PARENT or _PARENT[fid] != self._state.df):
            return SW_FILE_NOT_FOUND
        if fid in _DFS:
            self._state = _State(df=fid)
        else:
            self._state.ef = fid
        return SW_OK

    def _read_binary(self, command: Command) -> Response:
        if self._state.ef is None:
            return Response(b"", _SW_NO_CURRENT_EF)
        if command.p1 & 0x80:  # short-EF addressing: not used by this card
            return Response(b"", SW_INCORRECT_P1P2)
        if command.le is None or command.data:
            return Response(b"", SW_WRONG_LENGTH)
        content = self._files[self._state.ef]
        offset = command.p1 << 8 | command.p2
        if offset >= len(content):
            return Response(b"", SW_WRONG_P1P2)
        data = content[offset : offset + command.le]
        return Response(data, SW_OK if len(data) == command.le else SW_END_OF_FILE)
