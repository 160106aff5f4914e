"""The link between a virtual card (an :class:`~readers._transport.Applet`) and pcscd's vpcd.

Debian's ``vsmartcard-vpcd`` driver makes pcscd *listen* on TCP 35963 + slot for "Virtual PCD
00 0N"; the card is the client. Every message is a 2-byte big-endian length and a payload; a
1-byte payload is a control code (0 power off, 1 power on, 2 reset, 4 "send the ATR"), anything
longer a command APDU answered with a response APDU (RECIPES.md §1.3).

Pitfalls handled here: TCP_QUICKACK is re-armed before every ``recv`` (otherwise each APDU costs
~44 ms of delayed ACK), reads loop until complete, and connecting retries while pcscd starts.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Self

from .._transport import Applet

VPCD_BASE_PORT = 35963
_POWER_OFF, _POWER_ON, _RESET, _GET_ATR = 0, 1, 2, 4


def port_for_slot(slot: int, base: int = VPCD_BASE_PORT) -> int:
    """The vpcd port of reader slot ``slot`` ("Virtual PCD 00 0<slot>" by default)."""
    if slot < 0:
        raise ValueError("slot must be ≥ 0")
    return base + slot


def connect(host: str, port: int, *, timeout: float = 10.0) -> socket.socket:
    """Connect to vpcd, retrying while pcscd is not (yet) listening."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=2.0)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise EOFError("vpcd went away")
        chunks += chunk
    return bytes(chunks)


def serve(applet: Applet, sock: socket.socket) -> None:
    """Answer vpcd until the connection ends (EOF, or the socket is shut down)."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    try:
        while True:
            if quickack is not None:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)  # re-arm before every recv
            (size,) = struct.unpack(">H", _recv_exact(sock, 2))
            message = _recv_exact(sock, size)
            if size == 1:
                if message[0] == _GET_ATR:
                    sock.sendall(struct.pack(">H", len(applet.atr)) + applet.atr)
                elif message[0] in (_POWER_OFF, _POWER_ON, _RESET):
                    applet.reset()
                continue
            response = applet.process(message)
            sock.sendall(struct.pack(">H", len(response)) + response)
    except (EOFError, OSError):
        return


class CardThread:
    """A virtual card inserted in a vpcd reader, answered from a background thread.

    ``with CardThread(applet, port=35963):`` inserts the card for the block; leaving it (or
    :meth:`stop`) removes it. pyscard releases the GIL while it waits on pcscd, so the card can
    serve the same process that uses it.
    """

    def __init__(self, applet: Applet, *, port: int = VPCD_BASE_PORT, host: str = "127.0.0.1"):
        self.applet = applet
        self.port = port
        self.host = host
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._sock = connect(self.host, self.port)
        self._thread = threading.Thread(
            target=serve, args=(self.applet, self._sock), name=f"vcard:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Remove the card: close the connection and wait for the thread."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def inserted(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
