"""Ports for the services tests and benchmarks start: :func:`free_port`, the one way to ask.

A port picked with ``bind(port 0)`` and closed is free *now*; the service that is to listen on it
often starts later (a portal whose agent comes up per test, a responder named in certificates
before it runs). Picked that way, two asks in that window may get the same port — from this
process or from the other ``make test`` process — and an SMTP sink then receives the browser's
WebSocket handshake meant for the agent. So ports come from a block of their own instead:

- below the kernel's ephemeral range, which ``bind(port 0)`` and outgoing connections draw from,
  so no other socket is handed one of them;
- one block per process (``SWREG_TEST_PORT_BLOCK``, set by ``scripts/test-split``; otherwise
  derived from the process ID), so the two test processes never pick the same port;
- handed out in turn, so a port comes round again only after the rest of the block;
- each probed by binding it, so one something else holds is passed over.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

BLOCK_SIZE = 500
FIRST_PORT = 20000
"""The lowest port handed out: above the usual fixed ports of local services (PostgreSQL's 5432,
a web server's 8000 or 8080, …)."""

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _blocks_below_ephemeral() -> int:
    """How many blocks fit between :data:`FIRST_PORT` and the kernel's ephemeral range."""
    try:
        lowest_ephemeral = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 32768
    return max(0, (lowest_ephemeral - FIRST_PORT) // BLOCK_SIZE)


def _block_ports() -> Iterator[int] | None:
    blocks = _blocks_below_ephemeral()
    if blocks < 2:
        return None  # an unusual ephemeral range: fall back to the kernel's pick
    chosen = os.environ.get("SWREG_TEST_PORT_BLOCK")
    block = int(chosen) % blocks if chosen else 2 + os.getpid() % (blocks - 2 or 1)
    start = FIRST_PORT + block * BLOCK_SIZE
    return itertools.cycle(range(start, start + BLOCK_SIZE))


_lock = threading.Lock()
_ports = _block_ports()


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port of ``address`` nothing listens on, not handed out lately (module docstring)."""
    if _ports is not None:
        with _lock:
            for _ in range(BLOCK_SIZE):
                port = next(_ports)
                if _bindable(address, port):
                    return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        picked: int = sock.getsockname()[1]
        return picked


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True
