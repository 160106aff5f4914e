"""Hostile input for the properties of tests/test_hostile_*.py (and ``scripts/fuzz.py``).

Text an attacker types (SQL and HTML injection, control characters and NUL, lone surrogates,
confusable letters and digits, oversized values), JSON values of any shape, and DER: TLV
trees, Subject Directory Attributes and certificates mangled structurally. Each strategy
mixes a few hand-picked values, which Hypothesis tries early, with generated ones.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Sequence
from typing import Any, Final

from hypothesis import strategies as st

from engine.core.identifiers import national_id_check_digit

# -- text ----------------------------------------------------------------------------------

SQL_INJECTIONS: Final = (
    "'; DROP TABLE accounts; --",
    "' OR '1'='1",
    '" OR 1=1 --',
    "Robert'); DROP TABLE audit_log;--",
    "%' UNION SELECT password_hash FROM accounts --",
    "1; UPDATE accounts SET status='active'",
    "\\'; SELECT pg_sleep(5); --",
)
HTML_INJECTIONS: Final = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg/onload=alert(1)>",
    "</textarea></title><script>alert(1)</script>",
    "</script><script>alert(1)</script>",
    "javascript:alert(1)",
    "<a href='//evil.example'>x</a>",
    "{{ 7*7 }}{% raw %}${7*7}",
    "&lt;b&gt;&amp;&#x3C;",
    "<!-- ]]> -->",
    "\u202e<b>\u202d",  # bidi override around markup
)
INJECTIONS: Final = SQL_INJECTIONS + HTML_INJECTIONS

CONTROL_CHARACTERS: Final = "\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x7f\x85\u2028\u2029"
FORMAT_CHARACTERS: Final = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u202e"  # Unicode Cf
LONE_SURROGATES: Final = "\ud800\udbff\udc00\udfff"

# Letters that look like Latin capitals but are not (Cyrillic, Greek, ...) and letters whose
# str.upper() is ASCII (ß → SS, ı → I): none of them is an ASCII letter after NFKC.
LOOKALIKE_LETTERS: Final = "АВСЕНІЈКМОРЅТХУΑΒΕΖΗΙΚΜΝΟΡΤΥΧаеорсхуßı𝚤"
# Digits of other scripts (not folded by NFKC) and compatibility digits (folded to ASCII).
FOREIGN_DIGITS: Final = "٠١٢٣٤٥٦٧٨٩۰۱۲۳०१२३৪๕"
COMPATIBLE_CHARACTERS: Final = "０１２３４５６７８９ＡＢＣＤＺａｚ①¹₂𝟎𝟗ⅠＫ"


def fullwidth(text: str) -> str:
    """``A123`` → ``Ａ１２３`` (what a Chinese IME types)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


any_character = st.characters(codec=None, exclude_categories=())
"""Any code point, lone surrogates included (Hypothesis leaves those out by default)."""

tricky_character = st.one_of(
    st.sampled_from(
        CONTROL_CHARACTERS
        + FORMAT_CHARACTERS
        + LONE_SURROGATES
        + LOOKALIKE_LETTERS
        + FOREIGN_DIGITS
        + COMPATIBLE_CHARACTERS
    ),
    any_character,
)


def _spliced(base: str, insert: str, where: int) -> str:
    position = where % (len(base) + 1)
    return base[:position] + insert + base[position:]


def hostile_text(base: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Text a form field may receive: injections, controls, NUL, surrogates, confusables,
    oversized text, and ``base`` values (valid ones, say) with tricky characters spliced in."""
    seeds = [*base, *INJECTIONS] or ["x"]
    return st.one_of(
        st.sampled_from(seeds),
        st.builds(
            _spliced, st.sampled_from(seeds), st.text(tricky_character, max_size=3), st.integers()
        ),
        st.text(tricky_character, max_size=40),
        st.sampled_from(seeds).map(fullwidth),
        st.builds(lambda c, n: c * n, st.sampled_from("x王\x00<"), st.integers(4090, 6000)),
        st.text(max_size=300),
    )


# -- JSON ----------------------------------------------------------------------------------


def json_values(text: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON-decodable value (the strings may hold lone surrogates: JSON escapes them)."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        text if text is not None else hostile_text(),
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )


def nested(depth: int, leaf: str = "1") -> str:
    """JSON nested ``depth`` deep: ``[[[…1…]]]`` and ``{"a":{…}}`` alternating."""
    opening = "".join("[" if i % 2 else '{"a":' for i in range(depth))
    closing = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opening + leaf + closing


# -- identifiers -----------------------------------------------------------------------------

_ID_SECOND = "1289ABCD"


@st.composite
def national_ids(draw: st.DrawFn) -> str:
    """A valid 身分證字號 or new/old 居留證號 (DOMAIN.md §1), with its check digit."""
    head = (
        draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        + draw(st.sampled_from(_ID_SECOND))
        + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=7, max_size=7)))
    )
    return head + str(national_id_check_digit(head))


def ubns() -> st.SearchStrategy[str]:
    """Eight digits (valid or not; the reference decides)."""
    return st.text("0123456789", min_size=8, max_size=8)


# -- DER -----------------------------------------------------------------------------------

SEQUENCE, SET, INTEGER, OID, OCTET_STRING, BIT_STRING = 0x30, 0x31, 0x02, 0x06, 0x04, 0x03
UTF8_STRING, PRINTABLE_STRING, IA5_STRING, BMP_STRING = 0x0C, 0x13, 0x16, 0x1E
UNIVERSAL_STRING, TELETEX_STRING, GENERALIZED_TIME = 0x1C, 0x14, 0x18


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element (definite length, long form from 128 bytes)."""
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def oid_body(arcs: Sequence[int]) -> bytes:
    """The content octets of an OBJECT IDENTIFIER (``arcs`` has at least two arcs)."""
    first, second, *rest = arcs
    out = bytearray()
    for arc in (first * 40 + second, *rest):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def dotted(arcs: Sequence[int]) -> str:
    return ".".join(str(a) for a in arcs)


oid_arcs = st.builds(
    lambda first, second, rest: [first, second, *rest],
    st.integers(0, 2),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**64), max_size=8),
)

_BROKEN_OIDS: Final = (
    b"",  # empty
    b"\x86",  # ends mid-arc
    b"\x80\x01",  # non-minimal
    b"\xff" * 2100 + b"\x7f",  # one arc of 14 700 bits: 4 400 decimal digits
)

der_leaf = st.one_of(
    st.builds(
        tlv,
        st.sampled_from([INTEGER, OCTET_STRING, BIT_STRING, 0x05, 0x01]),
        st.binary(max_size=12),
    ),
    st.builds(lambda arcs: tlv(OID, oid_body(arcs)), oid_arcs),
    st.builds(lambda body: tlv(OID, body), st.sampled_from(_BROKEN_OIDS)),
    st.builds(lambda s: tlv(UTF8_STRING, s.encode()), st.text(max_size=10)),
    st.binary(max_size=6),  # not even a TLV
)
der_trees = st.recursive(
    der_leaf,
    lambda inner: st.builds(
        lambda tag, children: tlv(tag, b"".join(children)),
        st.sampled_from([SEQUENCE, SET, 0xA0, 0xA3]),
        st.lists(inner, max_size=4),
    ),
    max_leaves=16,
)
"""DER-shaped byte strings: nested SEQUENCEs and SETs of leaves, some broken."""

# A value of an Attribute: a string type the parser decodes, or another type it skips.
_TEXT_CODECS: Final = (
    (UTF8_STRING, "utf-8"),
    (PRINTABLE_STRING, "ascii"),
    (IA5_STRING, "ascii"),
    (BMP_STRING, "utf-16-be"),
    (UNIVERSAL_STRING, "utf-32-be"),
    (TELETEX_STRING, "latin-1"),
)


@st.composite
def attribute_values(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """An encoded attribute value and what the SDA parser must decode it to (``None``: the
    value is of a type it skips). Only well-formed values are made here."""
    kind = draw(st.sampled_from(["text", "oid", "other"]))
    if kind == "oid":
        arcs = draw(oid_arcs)
        return tlv(OID, oid_body(arcs)), dotted(arcs)
    if kind == "other":
        tag = draw(st.sampled_from([INTEGER, GENERALIZED_TIME, OCTET_STRING, SEQUENCE]))
        return tlv(tag, draw(st.binary(max_size=8))), None
    tag, codec = draw(st.sampled_from(_TEXT_CODECS))
    alphabet = {
        "ascii": st.characters(max_codepoint=0x7F),
        "latin-1": st.characters(max_codepoint=0xFF),
    }
    text = draw(st.text(alphabet.get(codec, st.characters(codec="utf-8")), max_size=12))
    return tlv(tag, text.encode(codec)), text


@st.composite
def directory_attributes(draw: st.DrawFn) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """Well-formed Subject Directory Attributes and the ``(oid, value)`` pairs they hold."""
    encoded = []
    expected = []
    for _ in range(draw(st.integers(0, 4))):
        arcs = draw(oid_arcs)
        values = draw(st.lists(attribute_values(), min_size=1, max_size=3))
        encoded.append(
            tlv(SEQUENCE, tlv(OID, oid_body(arcs)) + tlv(SET, b"".join(v for v, _ in values)))
        )
        first = next((text for _, text in values if text is not None), None)
        if first is not None:
            expected.append((dotted(arcs), first))
    return tlv(SEQUENCE, b"".join(encoded)), tuple(expected)


@st.composite
def broken_directory_attributes(draw: st.DrawFn) -> bytes:
    """SDA bytes that are wrong somewhere: a bad OID or string, a missing SET, DER trees,
    trailing bytes, or any bytes at all."""
    bad_value = st.one_of(
        st.builds(lambda body: tlv(OID, body), st.sampled_from(_BROKEN_OIDS)),
        st.builds(
            lambda b: tlv(UTF8_STRING, b), st.sampled_from([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"])
        ),
        st.builds(lambda b: tlv(BMP_STRING, b), st.sampled_from([b"\x00", b"\xd8\x00"])),
        st.builds(
            lambda b: tlv(UNIVERSAL_STRING, b),
            st.sampled_from([b"\x00\x00\xd8\x00", b"\x00\x11\x00\x00"]),
        ),
    )
    attribute = st.one_of(
        st.builds(
            lambda arcs, value: tlv(SEQUENCE, tlv(OID, oid_body(arcs)) + tlv(SET, value)),
            oid_arcs,
            bad_value,
        ),
        st.builds(
            lambda body: tlv(SEQUENCE, tlv(OID, body) + tlv(SET, b"")),
            st.sampled_from(_BROKEN_OIDS),
        ),
        st.builds(lambda arcs: tlv(SEQUENCE, tlv(OID, oid_body(arcs))), oid_arcs),  # no SET
        der_trees,
    )
    good, _ = draw(directory_attributes())
    return draw(
        st.one_of(
            st.builds(
                lambda items: tlv(SEQUENCE, b"".join(items)), st.lists(attribute, max_size=3)
            ),
            st.builds(lambda tail: good + tail, st.binary(min_size=1, max_size=4)),
            st.just(good[: max(0, len(good) - 1)]),
            der_trees,
            st.binary(max_size=64),
        )
    )


def pem(der: bytes, label: str = "CERTIFICATE", *, width: int = 64, newline: str = "\n") -> bytes:
    """``der`` as a PEM block with base64 lines of ``width`` characters."""
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + width] for i in range(0, len(body), max(width, 1))]
    text = f"-----BEGIN {label}-----{newline}{newline.join(lines)}{newline}-----END {label}-----"
    return (text + newline).encode("ascii")


PEM_LABELS: Final = (
    "CERTIFICATE",
    "X509 CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "PKCS12",
    "PKCS7",
    "CERTIFICATE REQUEST",
    "X509 CRL",
    "PUBLIC KEY",
)

pem_noise = st.text(st.characters(codec="utf-8", exclude_characters="-"), max_size=40).map(
    lambda text: text.encode("utf-8")
)
"""Text around a PEM block (no dashes, so no stray BEGIN line)."""


def is_nfkc_ascii(character: str) -> bool:
    """Whether NFKC folds ``character`` to one printable ASCII character (``１`` → ``1``)."""
    folded = unicodedata.normalize("NFKC", character)
    return len(folded) == 1 and "!" <= folded <= "~"
