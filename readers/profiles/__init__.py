"""Card profiles: the host side of the APDU dialects real cards speak.

A profile wraps a :class:`~readers._transport.Transport` and implements the
:class:`~readers.Card` protocol; :mod:`readers.profiles.piv` speaks NIST SP 800-73 PIV.
Each profile offers a ``detect(transport)`` check so a reader can tell which one a card speaks.
"""
