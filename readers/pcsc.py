"""Cards in PC/SC readers, through pcscd and pyscard (``pcsc:NAME_OR_INDEX``).

* :func:`list_readers` lists every reader, whether a card sits in it (one
  ``SCardGetStatusChange`` with timeout 0 over all readers) and which profile the card speaks,
  found by connecting briefly (shared) and probing PIV first, then GPKI.
* :func:`open_pcsc` opens the card of one reader and keeps **one** connection for the card's
  whole life: pcscd powers an idle card down and a verified PIN does not survive a reconnect
  (RECIPES.md §1.6). Closing disconnects with ``SCARD_RESET_CARD``, so the PIN state is dropped.
* :func:`wait_for_card` waits for a card to arrive or leave with ``SCardGetStatusChange``
  (pcscd polls vpcd every 400 ms; never sleep).

pyscard's errors become ``engine`` errors here, at the edge: card removed, reset, mute or absent
→ ``EnvironmentProblem("no_card")``; pcscd not running or stopped, reader gone →
``EnvironmentProblem("no_reader")`` (saying how to start pcscd); anything else →
``CardError("card_error")``.

Importing this module registers the ``pcsc`` scheme of :func:`readers.open_card`; importing
:mod:`readers` does not import it, so nothing needs pcscd until a reader is used.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from smartcard import scard
from smartcard.CardConnection import CardConnection
from smartcard.Exceptions import SmartcardException
from smartcard.pcsc.PCSCCardConnection import PCSCCardConnection

from engine import CardError, EnvironmentProblem, ErrorCode, SwregError, UsageError

from . import Card, ReaderInfo, register_scheme
from ._transport import Response, Transport
from .profiles import gpki, piv
from .profiles.piv import PivCard

__all__ = [
    "CARD_WAIT_ENV",
    "PCSCD_HINT",
    "SCHEME",
    "PcscTransport",
    "list_readers",
    "open_pcsc",
    "reader_names",
    "resolve_reader",
    "wait_for_card",
]

SCHEME = "pcsc"
CARD_WAIT_ENV = "SWREG_CARD_WAIT"
"""Seconds :func:`open_pcsc` waits for a card in an empty reader (default 0: don't wait)."""

PCSCD_HINT = "pcscd is not running; start it with `pcscd` (or `sudo systemctl start pcscd.socket`)"

_NO_CARD = frozenset(
    {
        scard.SCARD_W_REMOVED_CARD,
        scard.SCARD_W_RESET_CARD,
        scard.SCARD_E_NO_SMARTCARD,
        scard.SCARD_W_UNRESPONSIVE_CARD,
        scard.SCARD_W_UNPOWERED_CARD,
    }
)
_NO_SERVICE = frozenset({scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED})
_NO_READER = frozenset({scard.SCARD_E_UNKNOWN_READER, scard.SCARD_E_READER_UNAVAILABLE})
_WAIT_DONE = frozenset({scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT})
_LONGEST_WAIT_MS = 0xFFFFFFFE  # a DWORD; 0xFFFFFFFF would be INFINITE


# --- errors -----------------------------------------------------------------------------------


def _hresult(value: int) -> int:
    """An hresult as the unsigned 32-bit value the ``SCARD_*`` constants hold."""
    return int(value) & 0xFFFFFFFF


def _describe(hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult)} (0x{_hresult(hresult):08X})"


def _error_for(hresult: int, where: str, text: str) -> SwregError:
    """The ``engine`` error for a PC/SC status ``hresult`` met at ``where``."""
    code = _hresult(hresult)
    if code in _NO_SERVICE:
        return EnvironmentProblem(ErrorCode.NO_READER, detail=PCSCD_HINT)
    if code in _NO_CARD:
        return EnvironmentProblem(ErrorCode.NO_CARD, detail=f"{where}: {text}")
    if code in _NO_READER:
        return EnvironmentProblem(ErrorCode.NO_READER, detail=f"{where}: {text}")
    return CardError(ErrorCode.CARD_ERROR, detail=f"{where}: {text}")


def _check(
    hresult: int, where: str, ok: frozenset[int] = frozenset({scard.SCARD_S_SUCCESS})
) -> None:
    if _hresult(hresult) not in ok:
        raise _error_for(hresult, where, _describe(hresult))


def _translate(exc: SmartcardException, where: str) -> SwregError:
    """The ``engine`` error for a pyscard exception (raise it ``from exc``)."""
    return _error_for(getattr(exc, "hresult", -1), where, str(exc))


# --- contexts and reader states ---------------------------------------------------------------


@contextlib.contextmanager
def _context() -> Iterator[int]:
    """A PC/SC context for the block; ``no_reader`` (how to start pcscd) when it cannot be had."""
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    _check(hresult, "SCardEstablishContext")
    try:
        yield context
    finally:
        scard.SCardReleaseContext(context)


def _reader_names(context: int) -> list[str]:
    hresult, names = scard.SCardListReaders(context, [])
    if _hresult(hresult) == scard.SCARD_E_NO_READERS_AVAILABLE:
        return []
    _check(hresult, "SCardListReaders")
    return list(names)


def _states(context: int, states: Sequence[tuple[str, int]], timeout_ms: int) -> list[int]:
    """Event states of the readers ``states`` names, waiting up to ``timeout_ms`` for a change.

    Each pair is a reader and the state the caller last saw (``SCARD_STATE_UNAWARE`` at first).
    """
    if not states:
        return []
    hresult, events = scard.SCardGetStatusChange(context, timeout_ms, list(states))
    _check(hresult, "SCardGetStatusChange", _WAIT_DONE)
    return [int(event) & ~scard.SCARD_STATE_CHANGED for _name, event, _atr in events]


def _present(state: int) -> bool:
    return bool(state & scard.SCARD_STATE_PRESENT)


def _wait(context: int, reader: str, *, present: bool, timeout: float) -> bool:
    """Whether ``reader`` holds a card (``present``) or none, waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    [state] = _states(context, [(reader, scard.SCARD_STATE_UNAWARE)], 0)
    while _present(state) != present:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        timeout_ms = min(math.ceil(remaining * 1000), _LONGEST_WAIT_MS)
        [state] = _states(context, [(reader, state)], timeout_ms)
    return True


def wait_for_card(reader: str, *, present: bool, timeout: float) -> bool:
    """Wait until a card is in ``reader`` (``present=True``) or out of it; ``False`` on timeout.

    Uses ``SCardGetStatusChange``, so it returns as soon as pcscd sees the change. Raises
    ``EnvironmentProblem("no_reader")`` for an unknown reader or when pcscd is not running.
    """
    with _context() as context:
        return _wait(context, reader, present=present, timeout=timeout)


# --- connections ------------------------------------------------------------------------------


def _connect(reader: str, disposition: int, *, exclusive: bool = False) -> Any:
    """A connection to the card in ``reader``: T=1 preferred, T=0 accepted.

    ``disposition`` is what :meth:`disconnect` does to the card (``SCARD_RESET_CARD``, ...).
    ``exclusive`` keeps every other program off the card while we hold it: between our VERIFY
    and our signature nobody else may use the PIN-verified card.
    """
    share = scard.SCARD_SHARE_EXCLUSIVE if exclusive else scard.SCARD_SHARE_SHARED
    try:
        connection = PCSCCardConnection(reader)
    except SmartcardException as exc:
        raise _translate(exc, reader) from exc
    for protocol in (CardConnection.T1_protocol, CardConnection.T0_protocol):
        try:
            connection.connect(protocol, share, disposition)
        except SmartcardException as exc:
            mismatch = _hresult(exc.hresult) == scard.SCARD_E_PROTO_MISMATCH
            if mismatch and protocol == CardConnection.T1_protocol:
                continue
            _release(connection)
            raise _translate(exc, reader) from exc
        return connection
    raise AssertionError("unreachable: the T=0 attempt returns or raises")  # pragma: no cover


def _release(connection: Any) -> None:
    """Disconnect (with the connection's disposition) and release its context; never raises."""
    with contextlib.suppress(SmartcardException):
        connection.disconnect()
    with contextlib.suppress(SmartcardException):
        connection.release()


class PcscTransport:
    """A :class:`~readers._transport.Transport` over one pyscard connection.

    pyscard's exceptions become ``engine`` errors (see the module's docstring), raised
    ``from`` the original. :meth:`close` disconnects the card and releases the context.
    """

    def __init__(self, connection: Any) -> None:
        self._connection: Any = connection
        self.reader = str(connection.getReader())

    def transmit(self, apdu: bytes) -> Response:
        """Send ``apdu``; its response (data and status word)."""
        if self._connection is None:
            raise CardError(ErrorCode.CARD_ERROR, detail=f"{self.reader}: the card is closed")
        try:
            data, sw1, sw2 = self._connection.transmit(list(apdu))
        except SmartcardException as exc:
            raise _translate(exc, self.reader) from exc
        return Response(bytes(data), sw1 << 8 | sw2)

    def close(self) -> None:
        """Disconnect (as the connection was opened: reset for a card, leave for a probe)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            _release(connection)


# --- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    name: str
    detect: Callable[[Transport], bool]
    open: Callable[[PcscTransport, str], Card]


def _open_piv(transport: PcscTransport, label: str) -> Card:
    return PivCard(transport, label=label, on_close=transport.close)


def _open_gpki(transport: PcscTransport, label: str) -> Card:
    return gpki.GpkiCard(transport, label=label, on_close=transport.close)


_PROFILES = (
    _Profile(piv.PROFILE, PivCard.detect, _open_piv),
    _Profile(gpki.PROFILE, gpki.detect, _open_gpki),
)
"""Probed in this order: PIV first (its SELECT by AID is harmless elsewhere), then GPKI."""


def _detect(transport: Transport) -> _Profile | None:
    for profile in _PROFILES:
        if profile.detect(transport):
            return profile
    return None


def _probe(reader: str) -> str | None:
    """The profile of the card in ``reader``, found over a brief shared connection.

    The connection leaves the card as it was (``SCARD_LEAVE_CARD``): another program may be
    using it. A card that cannot be reached or answers oddly has no profile (``None``).
    """
    try:
        transport = PcscTransport(_connect(reader, scard.SCARD_LEAVE_CARD))
    except SwregError:
        return None
    try:
        profile = _detect(transport)
    except SwregError:
        return None
    finally:
        transport.close()
    return None if profile is None else profile.name


# --- the public operations --------------------------------------------------------------------


def reader_names() -> list[str]:
    """The names of all readers, in pcscd's order (the order ``pcsc:INDEX`` counts in).

    Touches no card. ``EnvironmentProblem("no_reader")`` when pcscd does not run.
    """
    with _context() as context:
        return _reader_names(context)


def list_readers(*, only: Collection[str] | None = None) -> list[ReaderInfo]:
    """Every PC/SC reader, whether a card is in it and the profile the card speaks.

    ``only`` restricts the list to those reader names: other readers are neither listed nor
    their cards probed (a probe is a few SELECTs over a shared connection, which another
    program's card session can do without). ``[]`` when pcscd runs without readers;
    ``EnvironmentProblem("no_reader")`` saying how to start pcscd when it does not run.
    """
    with _context() as context:
        names = _reader_names(context)
        if only is not None:
            names = [name for name in names if name in only]
        states = _states(context, [(name, scard.SCARD_STATE_UNAWARE) for name in names], 0)
    return [
        ReaderInfo(name, _present(state), _probe(name) if _usable(state) else None)
        for name, state in zip(names, states, strict=True)
    ]


def _usable(state: int) -> bool:
    """A card is present and answered its reset (not mute)."""
    return _present(state) and not state & scard.SCARD_STATE_MUTE


def _reader_list(names: Sequence[str]) -> str:
    return "; ".join(f"{index}: {name}" for index, name in enumerate(names)) or "none"


def resolve_reader(target: str, names: Sequence[str]) -> str:
    """The reader ``target`` names among ``names``.

    In this order: the exact name; a decimal index (0-based) within range; the one reader
    whose name contains ``target`` (case-insensitive). Otherwise
    ``EnvironmentProblem("no_reader")`` listing the readers.
    """
    if target in names:
        return target
    if target.isdecimal() and int(target) < len(names):
        return names[int(target)]
    matches = [name for name in names if target.casefold() in name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        detail = f"{target!r} matches several readers ({'; '.join(matches)}); name one exactly"
    else:
        detail = f"no reader matches {target!r}; readers: {_reader_list(names)}"
    raise EnvironmentProblem(ErrorCode.NO_READER, detail=detail)


def _card_wait() -> float:
    raw = os.environ.get(CARD_WAIT_ENV, "").strip() or "0"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(detail=f"{CARD_WAIT_ENV} must be a number of seconds ≥ 0, not {raw!r}")
    return seconds


def open_pcsc(target: str) -> Card:
    """Open the card in the reader ``target`` names (see :func:`resolve_reader`).

    The card is its profile's (:class:`~readers.profiles.piv.PivCard` or
    :class:`~readers.profiles.gpki.GpkiCard`) over one :class:`PcscTransport` kept open until
    the card's ``close()``, which disconnects with ``SCARD_RESET_CARD``. An empty reader is
    waited on for ``$SWREG_CARD_WAIT`` seconds (default 0), then
    ``EnvironmentProblem("no_card")``. A card that speaks neither PIV nor GPKI raises
    ``CardError("card_error", detail="unsupported card")``.
    """
    with _context() as context:
        reader = resolve_reader(target, _reader_names(context))
        if not _wait(context, reader, present=True, timeout=_card_wait()):
            raise EnvironmentProblem(ErrorCode.NO_CARD, detail=f"no card in {reader}")
    transport = PcscTransport(_connect(reader, scard.SCARD_RESET_CARD, exclusive=True))
    try:
        profile = _detect(transport)
        if profile is None:
            raise CardError(ErrorCode.CARD_ERROR, detail="unsupported card", reader=reader)
        return profile.open(transport, f"{SCHEME}:{reader}")
    except BaseException:
        transport.close()
        raise


register_scheme(SCHEME, open_pcsc)
