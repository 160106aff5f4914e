"""Card access: the narrow interface every card implementation follows (DESIGN.md §7).

A card is opened from a *spec* string, as the CLI's ``--card SPEC`` takes it (DESIGN.md §9)::

    virtual:FILE.p12        a software card: a PKCS#12 file whose password is the PIN
    pcsc:NAME_OR_INDEX      a card in a PC/SC reader (:mod:`readers.pcsc`)
    pkcs11:ATTRS?QUERY      a token of a PKCS#11 module, an RFC 7512 URI (:mod:`readers.pkcs11`),
                            e.g. pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so

Each scheme maps to an *opener* in one registry, so an implementation plugs itself in with
:func:`register_scheme` without touching :func:`open_card`. Errors are ``engine`` errors only:
:class:`~engine.CardError` (the card refused), :class:`~engine.EnvironmentProblem` (no reader, no
card) and :class:`~engine.UsageError` (a malformed spec).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from engine import EnvironmentProblem, UsageError

from . import virtual as _virtual

__all__ = [
    "Card",
    "Opener",
    "ReaderInfo",
    "list_readers",
    "open_card",
    "register_scheme",
    "with_tokens",
]


@runtime_checkable
class Card(Protocol):
    """One card, opened and ready for the card check (DESIGN.md §4).

    Use it as a context manager, or call :meth:`close` when done.
    """

    label: str
    """A human-readable name of the card and where it sits (no secrets)."""

    def read_certificate(self) -> bytes:
        """The DER of the card's **signing** certificate."""
        ...

    def read_chain(self) -> tuple[bytes, ...]:
        """DER of the CA certificates the card carries; may be empty."""
        ...

    def verify_pin(self, pin: str) -> None:
        """Verify ``pin`` on the card.

        Raises ``CardError("pin_incorrect", tries_left=N)`` (``N`` is ``None`` when the card
        has no retry counter) or ``CardError("card_locked")``.
        """
        ...

    def sign(self, message: bytes) -> bytes:
        """Hash ``message`` with SHA-256 on the card and sign it.

        Returns an RSA PKCS#1 v1.5 signature or a DER-encoded ECDSA signature. Needs a verified
        PIN, otherwise raises ``CardError("card_error", detail="PIN not verified")``.
        """
        ...

    def close(self) -> None:
        """Release the card and forget any secret state (verified PIN, keys)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True)
class ReaderInfo:
    """A reader as ``swreg readers list`` shows it.

    ``profile`` names the card profile recognised in it (for example ``"piv"``), or ``None``.
    ``bridge`` is how swreg reaches the card: ``"pcsc"`` (pcscd) or ``"pkcs11"`` (a PKCS#11
    module's slot; ``name`` is then the slot description, ``token`` the token's label and
    ``spec`` the ``--card`` URI that opens it).
    """

    name: str
    card_present: bool
    profile: str | None
    bridge: str = "pcsc"
    token: str | None = None
    spec: str | None = None


Opener = Callable[[str], Card]
"""Opens a card from the part of a spec after ``scheme:``."""


def _open_pcsc(target: str) -> Card:
    """Open a card in a PC/SC reader; imports :mod:`readers.pcsc` (and pyscard) on first use."""
    from . import pcsc

    return pcsc.open_pcsc(target)


def _open_pkcs11(target: str) -> Card:
    """Open a PKCS#11 token; imports :mod:`readers.pkcs11` (and python-pkcs11) on first use."""
    from . import pkcs11

    return pkcs11.open_pkcs11(target)


_OPENERS: dict[str, Opener] = {}


def register_scheme(scheme: str, opener: Opener) -> None:
    """Make ``open_card("SCHEME:...")`` call ``opener``; replaces an earlier registration."""
    _OPENERS[scheme] = opener


register_scheme(_virtual.SCHEME, _virtual.VirtualP12Card)
register_scheme("pcsc", _open_pcsc)
register_scheme("pkcs11", _open_pkcs11)

_SPEC_FORMS = (
    "expected virtual:FILE.p12, pcsc:NAME_OR_INDEX or pkcs11:token=LABEL?module-path=MODULE"
)


def open_card(spec: str) -> Card:
    """Open the card that ``spec`` names (``virtual:FILE.p12``, ``pcsc:NAME_OR_INDEX`` or an
    RFC 7512 ``pkcs11:`` URI).

    Raises :class:`~engine.UsageError` for a malformed spec or an unknown scheme, and whatever
    the scheme's opener raises (``no_reader``, ``no_card``, ``card_error``, ...).
    """
    scheme, sep, target = spec.partition(":")
    opener = _OPENERS.get(scheme)
    if not sep or opener is None:
        raise UsageError(detail=f"unknown card spec {spec!r}; {_SPEC_FORMS}")
    if not target:
        raise UsageError(detail=f"card spec {spec!r} names nothing after {scheme!r}; {_SPEC_FORMS}")
    return opener(target)


def list_readers() -> list[ReaderInfo]:
    """The PC/SC readers present, then the slots of the PKCS#11 modules of
    ``SWREG_PKCS11_MODULES``, with whether a card sits in each and the bridge to it.

    Delegates to :func:`readers.pcsc.list_readers` and :func:`readers.pkcs11.list_tokens`
    (imported on first use, so importing :mod:`readers` never needs pcscd or a PKCS#11 module).
    When pcscd does not run but a PKCS#11 module shows slots, those are listed alone; with
    nothing to list, pcscd's ``no_reader`` error stands. Virtual cards are not readers; they are
    opened directly with ``virtual:FILE.p12``.
    """
    from . import pcsc

    if not os.environ.get("SWREG_PKCS11_MODULES", "").strip(",\t "):
        return pcsc.list_readers()
    from . import pkcs11

    return with_tokens(pcsc.list_readers, pkcs11.configured_modules())


def with_tokens(lister: Callable[[], list[ReaderInfo]], modules: Sequence[str]) -> list[ReaderInfo]:
    """The readers ``lister`` finds, then the slots of the PKCS#11 ``modules``. When the lister
    finds no reader service (pcscd) the slots stand alone; with nothing at all to list, its
    ``no_reader`` error stands."""
    from . import pkcs11

    try:
        found = lister()
    except EnvironmentProblem:
        tokens = pkcs11.list_tokens(modules)
        if not tokens:
            raise
        return tokens
    return found + pkcs11.list_tokens(modules)
