"""Virtual smart cards: applets that speak the same APDUs as real cards, served to pcscd.

Test and demo material only. A card is an :class:`~readers._transport.Applet`; a
:class:`CardThread` inserts it into a vpcd reader of a real pcscd.
"""

from ._vpcd import VPCD_BASE_PORT, CardThread, port_for_slot, serve

__all__ = ["VPCD_BASE_PORT", "CardThread", "port_for_slot", "serve"]
