"""The one DER reader of ``engine.pki``: certificate parts, Subject Directory Attributes, CMS.

cryptography parses whole certificates, CRLs and OCSP messages; what it leaves as raw bytes (the
Subject Directory Attributes, a certificate's header sniffed before parsing, a CMS SignedData)
is read here, with one set of rules:

- **Tags**: one identifier octet. High tag numbers (low five bits all set) are refused: nothing
  we read uses them.
- **Lengths**: the short form, or the long form with 1 to 4 length octets; more octets, the
  reserved ``0xFF`` and a length running past the parent (or the end of the data) are refused.
  Minimal encoding of lengths is not demanded (cryptography re-reads whole certificates
  strictly; the parts read here only have to be unambiguous).
- **Indefinite lengths** (BER ``0x80``, ended by ``00 00``): refused, except by a reader made
  with ``indefinite=True`` — the single user is the CMS SignedData of Turnkey signers
  (:mod:`engine.pki.cms`), which real BER encoders produce. Even there only on constructed
  elements, and the end-of-contents octets must lie within the parent.
- **Depth**: at most :data:`MAX_DEPTH` levels below the first element read, counting both
  :meth:`DerReader.children` and the scan for the end of an indefinite length.
- **OBJECT IDENTIFIER**: non-empty, minimal arcs (no leading ``0x80``), no unfinished last arc,
  each arc at most :data:`MAX_ARC_BYTES` octets.

Malformed input raises :class:`DerError`, a ``ValueError``; it never leaves ``engine.pki``:
each caller turns it into a code (``certificate_malformed``, ``signature_invalid``) or skips
the part it could not read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Final, NamedTuple

INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
OID: Final = 0x06
UTC_TIME: Final = 0x17
GENERALIZED_TIME: Final = 0x18
SEQUENCE: Final = 0x30
SET: Final = 0x31
CONTEXT_0: Final = 0xA0
"""``[0]`` constructed (``[0] IMPLICIT`` primitive is ``0x80``)."""

MAX_DEPTH: Final = 32
"""Nesting levels read below the first element; deeper input is refused."""

MAX_ARC_BYTES: Final = 20
"""An OID arc takes at most 20 bytes (140 bits: UUID arcs under 2.25 need 19). Longer ones are
refused: a 2 KiB arc would not even convert to decimal (Python's 4300-digit limit)."""

STRING_CODECS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x0C: "utf-8",  # UTF8String
        0x12: "ascii",  # NumericString
        0x13: "ascii",  # PrintableString
        0x14: "latin-1",  # TeletexString (T61): latin-1 is what real encoders put there
        0x16: "ascii",  # IA5String
        0x1A: "ascii",  # VisibleString
        0x1C: "utf-32-be",  # UniversalString
        0x1E: "utf-16-be",  # BMPString
    }
)
"""The character string types :func:`decode_text` reads, with the codec of each."""

_MEMO_OID_BYTES: Final = 32
"""OIDs up to this size are remembered (attribute types, subject classes: a handful)."""


class DerError(ValueError):
    """Malformed DER (internal to ``engine.pki``; callers translate it or skip the part)."""


class Element(NamedTuple):
    """One element: its tag, where it starts, its content ``[content, content_end)``, its end.

    ``end`` lies after the end-of-contents octets of an indefinite length; ``depth`` counts the
    levels below the first element read.
    """

    tag: int
    start: int
    content: int
    content_end: int
    end: int
    depth: int = 0


_new_element = tuple.__new__  # Element(...) without the Python frame of its generated __new__


class DerReader:
    """Reads elements of ``data`` by the module's rules.

    ``indefinite=True`` is the one exception to DER: constructed elements may carry a BER
    indefinite length (the CMS of Turnkey signers; nothing else asks for it).
    """

    __slots__ = ("data", "indefinite")

    def __init__(self, data: bytes, *, indefinite: bool = False) -> None:
        self.data = data
        self.indefinite = indefinite

    def element(self, offset: int = 0, limit: int | None = None, depth: int = 0) -> Element:
        """The element at ``offset``, which must end by ``limit`` (default: the end of data);
        ``depth`` is its level below the first element read."""
        data = self.data
        if limit is None:
            limit = len(data)
        if offset + 2 > limit:
            raise DerError("truncated header")
        if depth > MAX_DEPTH:
            raise DerError("nested too deeply")
        tag = data[offset]
        if tag & 0x1F == 0x1F:
            raise DerError("high tag numbers are not used here")
        first = data[offset + 1]
        content = offset + 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            return self._indefinite(tag, offset, limit, depth)
        else:
            count = first & 0x7F
            if count > 4 or content + count > limit:  # 0xFF (reserved) has count 127
                raise DerError("bad length")
            length = int.from_bytes(data[content : content + count], "big")
            content += count
        end = content + length
        if end > limit:
            raise DerError("length beyond the data")
        return _new_element(Element, (tag, offset, content, end, end, depth))

    def children(self, parent: Element) -> Iterator[Element]:
        """The elements inside ``parent``, in order (each read as it is reached)."""
        position, end, depth = parent.content, parent.content_end, parent.depth + 1
        while position < end:
            child = self.element(position, end, depth)
            yield child
            position = child.end

    def parts(self, parent: Element | None, tag: int) -> list[Element]:
        """The children of ``parent``, which must carry ``tag``."""
        return list(self.children(expect(parent, tag)))

    def body(self, element: Element | None, tag: int) -> bytes:
        """The content octets of ``element``, which must carry ``tag``."""
        found = expect(element, tag)
        return self.data[found.content : found.content_end]

    def oid(self, element: Element | None) -> str:
        """``element``, an OBJECT IDENTIFIER, in dotted form."""
        return decode_oid(self.body(element, OID))

    def text(self, element: Element) -> str | None:
        """A character string or OID element as text; ``None`` for other types."""
        return decode_text(element.tag, self.data[element.content : element.content_end])

    def content_offset(self, offset: int = 0) -> int:
        """Where the content of the element at ``offset`` begins, from its header alone.

        Neither the tag nor the length is checked: this peeks into data that may be cut short.
        """
        first = self.data[offset + 1]
        return offset + 2 + (first & 0x7F if first > 0x80 else 0)

    def _indefinite(self, tag: int, offset: int, limit: int, depth: int) -> Element:
        """An element of indefinite length: its children up to the end-of-contents octets."""
        if not self.indefinite:
            raise DerError("indefinite length (BER, not DER)")
        if not tag & 0x20:
            raise DerError("indefinite length on a primitive element")
        data = self.data
        content = child = offset + 2
        while True:
            if child + 2 > limit:
                raise DerError("unterminated indefinite length")
            if data[child] == 0 and data[child + 1] == 0:
                return Element(tag, offset, content, child, child + 2, depth)
            child = self.element(child, limit, depth + 1).end


def expect(element: Element | None, tag: int) -> Element:
    """``element``, which must exist and carry ``tag``."""
    if element is None or element.tag != tag:
        raise DerError(f"expected tag {tag:#04x}")
    return element


def nth(elements: Sequence[Element], index: int = 0) -> Element | None:
    """``elements[index]``, or ``None`` when there are not that many."""
    return elements[index] if index < len(elements) else None


def decode_text(tag: int, body: bytes) -> str | None:
    """The content of a character string (:data:`STRING_CODECS`) or an OID (dotted) as text;
    ``None`` for other types; :class:`DerError` for a string its type cannot hold."""
    if tag == OID:
        return decode_oid(body)
    codec = STRING_CODECS.get(tag)
    if codec is None:
        return None
    try:
        return body.decode(codec)
    except UnicodeDecodeError as exc:
        raise DerError(f"bad {codec} string") from exc


def decode_time(tag: int, body: bytes) -> datetime:
    """A UTCTime or GeneralizedTime (``Z``, optional fraction dropped) as aware UTC."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DerError("bad time") from exc
    if not text.endswith("Z"):
        raise DerError("time without Z")
    text = text[:-1].split(".", 1)[0]
    if not text.isdigit():
        raise DerError("bad time")
    if tag == UTC_TIME and len(text) == 12:
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != GENERALIZED_TIME or len(text) != 14:
        raise DerError("bad time")
    try:
        return datetime(  # not strptime: 6x faster, and CRLs have a million of these
            int(text[:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
            tzinfo=UTC,
        )
    except ValueError as exc:  # a month 13, a day 32
        raise DerError("bad time") from exc


def decode_oid(body: bytes) -> str:
    """The content of an OBJECT IDENTIFIER in dotted form (short ones are remembered)."""
    if len(body) <= _MEMO_OID_BYTES:
        return _decode_short_oid(body)
    return _decode_oid(body)


def _decode_oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise DerError("bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    at_start = True
    arc_bytes = 0
    for byte in body:
        if at_start and byte == 0x80:
            raise DerError("non-minimal OBJECT IDENTIFIER")
        arc_bytes += 1
        if arc_bytes > MAX_ARC_BYTES:
            raise DerError("OBJECT IDENTIFIER arc too large")
        value = (value << 7) | (byte & 0x7F)
        at_start = not byte & 0x80
        if at_start:
            arcs.append(value)
            value = 0
            arc_bytes = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in [*head, *arcs[1:]])


_decode_short_oid = lru_cache(maxsize=512)(_decode_oid)
"""Bounded and thread-safe; a malformed body raises every time (errors are not remembered)."""
