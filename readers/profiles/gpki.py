"""Host side of a GPKI/HiCOS card (MOICA 自然人憑證 and its kin): the certificate read only.

DOMAIN.md §4.3 documents, from public sources, how to detect such a card (the ``CHT V32N``
version string) and how to read its certificate store EF ``08F2``, with the proprietary CLA
``0x80``. No PIN is needed for that. How the card verifies a PIN and signs is not public (the
PIN may travel encrypted under a CHT key), so :meth:`GpkiCard.verify_pin` and
:meth:`GpkiCard.sign` raise ``CardError("hicos_required")``: such a card signs only through the
user's HiCOS component (HiPKI, the web wizard's path).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from engine import CardError, ErrorCode

from .._transport import SW_OK, Response, Transport, command

__all__ = ["PROFILE", "GpkiCard", "detect"]

PROFILE = "gpki"
"""The profile name :class:`~readers.ReaderInfo` shows for such a card."""

CLA = 0x80
_INS_SELECT, _INS_READ_BINARY = 0xA4, 0xB0
_MF, _DF_VERSION, _EF_VERSION, _DF_PKCS15, _EF_CERTIFICATES = 0x3F00, 0x0900, 0x0905, 0x5030, 0x08F2
_VERSION_MARKER = b"CHT V32N"
_VERSION_READ = 0x14  # the probe reads 20 bytes, as the public script does

OFFSET_ROOT, OFFSET_ISSUER, OFFSET_ENCRYPTION, OFFSET_SIGNATURE = 0x0000, 0x0700, 0x0E00, 0x1500
MAX_CHUNK = 0xF0
"""The largest READ BINARY this host asks for (short APDUs, well under any card's buffer)."""

_HEADER_SIZE = 4  # 30 82 LL LL
_MAX_OFFSET = 0x8000  # READ BINARY P1 bit 8 set would mean short-EF addressing


def _select(transport: Transport, fid: int) -> Response:
    return transport.transmit(command(CLA, _INS_SELECT, 0, 0, fid.to_bytes(2, "big")))


def _read_binary(transport: Transport, offset: int, size: int) -> Response:
    return transport.transmit(command(CLA, _INS_READ_BINARY, offset >> 8, offset & 0xFF, le=size))


def detect(transport: Transport) -> bool:
    """Whether the card answers the four-APDU ``CHT V32N`` probe of DOMAIN.md §4.3.

    SELECT 3F00, 0900, 0905, then READ BINARY 20 bytes starting with ``CHT V32N``. A card that
    refuses any step is not a GPKI card; transport errors (no card, no reader) propagate.
    """
    for fid in (_MF, _DF_VERSION, _EF_VERSION):
        if not _select(transport, fid).ok:
            return False
    version = _read_binary(transport, 0, _VERSION_READ)
    return version.ok and version.data.startswith(_VERSION_MARKER)


def _card_error(detail: str) -> CardError:
    return CardError(ErrorCode.CARD_ERROR, detail=detail)


class GpkiCard:
    """A GPKI/HiCOS card over ``transport``: reads certificates; signing needs HiCOS.

    ``on_close`` runs once on :meth:`close` (to release the reader connection, for instance).
    """

    profile = PROFILE

    def __init__(
        self,
        transport: Transport,
        *,
        label: str,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        self._transport: Transport | None = transport
        self._on_close = on_close

    def __repr__(self) -> str:
        state = "closed" if self._transport is None else "open"
        return f"<{type(self).__name__} {self.label!r} {state}>"

    @classmethod
    def detect(cls, transport: Transport) -> bool:
        """See the module-level :func:`detect`."""
        return detect(transport)

    def read_certificate(self) -> bytes:
        """The DER of the signature certificate (offset 0x1500 of EF 08F2); no PIN needed."""
        self._select_store()
        der = self._read_at(OFFSET_SIGNATURE)
        if der is None:
            raise _card_error("the card holds no signature certificate")
        return der

    def read_chain(self) -> tuple[bytes, ...]:
        """The issuer CA (0x0700) and root CA (0x0000) certificates the card holds, in that order.

        Empty slots (no ``30 82`` header) are left out.
        """
        self._select_store()
        found = (self._read_at(OFFSET_ISSUER), self._read_at(OFFSET_ROOT))
        return tuple(der for der in found if der is not None)

    def verify_pin(self, pin: str) -> None:
        """Always ``CardError("hicos_required")``: the card's PIN protocol is not public."""
        self._open_transport()
        raise CardError(ErrorCode.HICOS_REQUIRED)

    def sign(self, message: bytes) -> bytes:
        """Always ``CardError("hicos_required")``: such a card signs only through HiCOS/HiPKI."""
        self._open_transport()
        raise CardError(ErrorCode.HICOS_REQUIRED)

    def close(self) -> None:
        """Forget the transport and run ``on_close`` (once); later calls raise ``card_error``."""
        if self._transport is None:
            return
        self._transport = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_transport(self) -> Transport:
        if self._transport is None:
            raise _card_error("the card is closed")
        return self._transport

    def _select_store(self) -> None:
        transport = self._open_transport()
        for fid in (_MF, _DF_PKCS15, _EF_CERTIFICATES):
            response = _select(transport, fid)
            if not response.ok:
                raise _card_error(f"SELECT {fid:04X} failed (SW {response.sw:04X})")

    def _read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes from ``offset`` of the selected EF, in chunks of MAX_CHUNK."""
        transport = self._open_transport()
        data = bytearray()
        while len(data) < size:
            want = min(MAX_CHUNK, size - len(data))
            response = _read_binary(transport, offset + len(data), want)
            if response.sw != SW_OK or len(response.data) != want:
                raise _card_error(
                    f"READ BINARY at {offset + len(data):04X} returned {len(response.data)}"
                    f" of {want} bytes (SW {response.sw:04X})"
                )
            data += response.data
        return bytes(data)

    def _read_at(self, offset: int) -> bytes | None:
        """The certificate at ``offset`` of EF 08F2, or ``None`` when the slot is empty."""
        header = self._read(offset, _HEADER_SIZE)
        if header[:2] != b"\x30\x82":
            return None
        length = int.from_bytes(header[2:], "big")
        if offset + _HEADER_SIZE + length > _MAX_OFFSET:
            raise _card_error(f"the certificate at {offset:04X} claims {length} bytes: too many")
        return header + self._read(offset + _HEADER_SIZE, length)
