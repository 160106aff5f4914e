"""Virtual smart cards: applets that speak the same APDUs as real cards, served to pcscd.

Test and demo material only. A card is an :class:`~readers._transport.Applet`; a
:class:`CardThread` inserts it into a vpcd reader of a real pcscd. :class:`PivApplet` is a PIV
card (NIST SP 800-73-4) whose PIN retry counter lives in a :class:`RetryState`;
:class:`GpkiApplet` is a GPKI/HiCOS card of which only the certificate read is known.
"""

from ._gpki import GpkiApplet
from ._piv import PivApplet, RetryState
from ._vpcd import VPCD_BASE_PORT, CardThread, port_for_slot, serve

__all__ = [
    "VPCD_BASE_PORT",
    "CardThread",
    "GpkiApplet",
    "PivApplet",
    "RetryState",
    "port_for_slot",
    "serve",
]
