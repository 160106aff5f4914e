"""APDUs and the transport seam between card profiles and whatever carries the bytes.

Host side, a card *profile* (PIV, GPKI) speaks ISO 7816-4 through a :class:`Transport`:
``readers.pcsc`` carries APDUs through pcscd, :class:`AppletTransport` hands them to an
in-process :class:`Applet` (tests, no daemon). Card side, an :class:`Applet` answers APDUs; the
virtual cards of ``readers.vcard`` are applets, served to pcscd over vpcd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_AUTH_METHOD_BLOCKED = 0x6983
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_WRONG_DATA = 0x6A80
SW_FUNCTION_NOT_SUPPORTED = 0x6A81
SW_FILE_NOT_FOUND = 0x6A82
SW_INCORRECT_P1P2 = 0x6A86
SW_WRONG_P1P2 = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_END_OF_FILE = 0x6282


@dataclass(frozen=True, slots=True)
class Response:
    """A response APDU: data and the status word (``sw1 << 8 | sw2``)."""

    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    @property
    def more(self) -> int | None:
        """Bytes still available (``61xx``; 0 means 256 or more), else ``None``."""
        return self.sw & 0xFF if self.sw >> 8 == 0x61 else None

    @classmethod
    def parse(cls, raw: bytes) -> Response:
        if len(raw) < 2:
            raise ValueError("a response APDU has at least a status word")
        return cls(raw[:-2], int.from_bytes(raw[-2:], "big"))

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")


class Transport(Protocol):
    """Carries one command APDU to the card and its response back."""

    def transmit(self, apdu: bytes) -> Response: ...


class Applet(Protocol):
    """The card side: answers command APDUs (virtual cards implement this)."""

    atr: bytes

    def process(self, apdu: bytes) -> bytes:
        """The response APDU (data ‖ SW1 SW2) to ``apdu``."""
        ...

    def reset(self) -> None:
        """Power off/on or reset: selection and PIN state are forgotten, counters are not."""
        ...


class AppletTransport:
    """An in-process transport to an :class:`Applet` (a seam we own; no pcscd involved)."""

    def __init__(self, applet: Applet) -> None:
        self.applet = applet

    def transmit(self, apdu: bytes) -> Response:
        return Response.parse(self.applet.process(apdu))


def command(
    cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None
) -> bytes:
    """Encode a command APDU, short when it fits and extended otherwise (ISO 7816-4 §5.1).

    ``le`` is the number of bytes expected (0 < le ≤ 65536), ``None`` for none.
    """
    header = bytes((cla, ins, p1, p2))
    extended = len(data) > 255 or (le is not None and le > 256)
    if not extended:
        body = bytes((len(data),)) + data if data else b""
        trailer = b"" if le is None else bytes((le % 256,))
        return header + body + trailer
    body = b"\x00" + len(data).to_bytes(2, "big") + data if data else b""
    if le is None:
        return header + body
    trailer = (le % 65536).to_bytes(2, "big")
    return header + body + (trailer if data else b"\x00" + trailer)


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed command APDU (what an applet receives)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None  # None: no Le; otherwise the bytes expected (256 / 65536 for "all")

    @classmethod
    def parse(cls, apdu: bytes) -> Command:
        """Parse cases 1–4, short and extended; raises ``ValueError`` when malformed."""
        if len(apdu) < 4:
            raise ValueError("a command APDU has at least four header bytes")
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[4:]
        if not body:
            return cls(cla, ins, p1, p2, b"", None)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, b"", body[0] or 256)
        if body[0] != 0:  # short with data
            lc = body[0]
            if len(body) == 1 + lc:
                return cls(cla, ins, p1, p2, body[1 : 1 + lc], None)
            if len(body) == 2 + lc:
                return cls(cla, ins, p1, p2, body[1 : 1 + lc], body[-1] or 256)
            raise ValueError("Lc does not match the data")
        if len(body) == 3:  # extended, Le only
            return cls(cla, ins, p1, p2, b"", int.from_bytes(body[1:3], "big") or 65536)
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0 or len(body) < 3 + lc:
            raise ValueError("extended Lc does not match the data")
        data = body[3 : 3 + lc]
        rest = body[3 + lc :]
        if not rest:
            return cls(cla, ins, p1, p2, data, None)
        if len(rest) == 2:
            return cls(cla, ins, p1, p2, data, int.from_bytes(rest, "big") or 65536)
        raise ValueError("extended Le must be two bytes")
