"""The one DER reader (engine/pki/der.py): its rules, each with the input that tests it.

Indefinite lengths only where a reader allows them (the CMS of Turnkey signers), a bounded
depth, lengths that are truncated, too long or reserved, high tag numbers, OBJECT IDENTIFIERs,
strings and times. The callers' own behaviour is tested with them (test_certificate.py,
test_hostile_parsers.py, test_turnkey.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

from engine.pki.certificate import parse_directory_attributes
from engine.pki.cms import read_signed_data
from engine.pki.der import (
    MAX_DEPTH,
    OID,
    SEQUENCE,
    DerError,
    DerReader,
    Element,
    decode_oid,
    decode_text,
    decode_time,
    expect,
    nth,
)


def tlv(tag: int, body: bytes) -> bytes:
    """One element with a definite length (long form from 128 bytes)."""
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    length = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def ber(tag: int, body: bytes) -> bytes:
    """One constructed element with an indefinite length."""
    return bytes([tag, 0x80]) + body + b"\x00\x00"


def nested(levels: int, *, indefinite: bool = False) -> bytes:
    """``levels`` SEQUENCEs inside each other around an empty one."""
    data = b"\x30\x00"
    for _ in range(levels):
        data = ber(SEQUENCE, data) if indefinite else tlv(SEQUENCE, data)
    return data


def read(data: bytes, *, indefinite: bool = False) -> Element:
    return DerReader(data, indefinite=indefinite).element()


def walk_down(reader: DerReader) -> int:
    """Follow the first child down as far as it goes; the depth reached."""
    element = reader.element()
    while element.content < element.content_end:
        element = next(reader.children(element))
    return element.depth


# -- elements and lengths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x04\x00", Element(0x04, 0, 2, 2, 2)),  # empty content
        (b"\x04\x02ab", Element(0x04, 0, 2, 4, 4)),  # short form
        (b"\x04\x81\x02ab", Element(0x04, 0, 3, 5, 5)),  # long form, 1 octet (not minimal: taken)
        (b"\x04\x84\x00\x00\x00\x02ab", Element(0x04, 0, 6, 8, 8)),  # long form, 4 octets
        (b"\x04\x02abTRAILING", Element(0x04, 0, 2, 4, 4)),  # what follows is the caller's
        (tlv(0x04, bytes(300)), Element(0x04, 0, 4, 304, 304)),  # two length octets
    ],
)
def test_definite_lengths(data: bytes, expected: Element) -> None:
    assert read(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"\x30",  # a tag without its length
        b"\x04\x03ab",  # content shorter than its length
        b"\x04\x82\x01",  # length octets cut short
        b"\x04\x85\x00\x00\x00\x00\x02ab",  # five length octets: more than 4 are refused
        b"\x04\x88" + bytes(7) + b"\x02ab",  # eight length octets
        b"\x04\xff" + bytes(127),  # 0xFF is reserved
        b"\x04\x84\xff\xff\xff\xff",  # a 4 GiB length in a few bytes
    ],
)
def test_truncated_and_oversized_lengths_are_refused(data: bytes) -> None:
    with pytest.raises(DerError):
        read(data)
    with pytest.raises(DerError):  # the same rules with indefinite lengths allowed
        read(data, indefinite=True)


@pytest.mark.parametrize(
    "data",
    [
        b"\x1f\x01\x00",  # universal, high tag number
        b"\x3f\x81\x00\x00",  # constructed, high tag number
        b"\x9f\x22\x01\x00",  # context-specific [34]
        b"\xdf\x01\x00",  # private, high tag number
    ],
)
def test_high_tag_numbers_are_refused(data: bytes) -> None:
    with pytest.raises(DerError, match="high tag"):
        read(data)


def test_a_child_must_end_within_its_parent() -> None:
    data = b"\x30\x03\x04\x05abcde"  # the OCTET STRING runs past the SEQUENCE
    reader = DerReader(data)
    parent = reader.element()
    with pytest.raises(DerError):
        list(reader.children(parent))


def test_an_element_must_end_within_the_limit() -> None:
    reader = DerReader(b"\x04\x02ab")
    assert reader.element(0, 4).end == 4
    with pytest.raises(DerError):
        reader.element(0, 3)


def test_errors_are_value_errors() -> None:
    assert issubclass(DerError, ValueError)  # callers catch it as ValueError where they must


# -- indefinite lengths ------------------------------------------------------------------------


def test_indefinite_lengths_are_refused_by_default() -> None:
    data = ber(SEQUENCE, tlv(0x04, b"ab"))
    with pytest.raises(DerError, match="indefinite"):
        read(data)
    with pytest.raises(ValueError):  # certificates' SDA: DER only
        parse_directory_attributes(data)


def test_indefinite_lengths_where_allowed() -> None:
    data = ber(SEQUENCE, tlv(0x04, b"ab") + ber(0xA0, tlv(0x02, b"\x01"))) + b"tail"
    reader = DerReader(data, indefinite=True)
    outer = reader.element()
    assert outer == Element(SEQUENCE, 0, 2, 13, 15)  # content ends before the 00 00
    first, second = reader.children(outer)
    assert reader.body(first, 0x04) == b"ab"
    assert second.tag == 0xA0 and second.end == outer.content_end
    assert [reader.body(e, 0x02) for e in reader.children(second)] == [b"\x01"]


@pytest.mark.parametrize(
    "data",
    [
        b"\x04\x80ab\x00\x00",  # on a primitive element
        b"\x30\x80\x04\x02ab",  # no end-of-contents octets
        b"\x30\x80\x04\x02ab\x00",  # half of them
        b"\x30\x80\x04\x05ab\x00\x00",  # a child running through them
    ],
)
def test_broken_indefinite_lengths_are_refused_even_where_allowed(data: bytes) -> None:
    with pytest.raises(DerError):
        read(data, indefinite=True)


def test_the_end_of_contents_must_lie_within_the_parent() -> None:
    data = tlv(SEQUENCE, b"\x30\x80\x04\x00") + b"\x00\x00"
    reader = DerReader(data, indefinite=True)
    with pytest.raises(DerError):
        list(reader.children(reader.element()))


# -- depth -------------------------------------------------------------------------------------


def test_depth_is_bounded_when_walking_down() -> None:
    assert walk_down(DerReader(nested(MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(DerError, match="deep"):
        walk_down(DerReader(nested(MAX_DEPTH + 1)))


def test_depth_is_bounded_when_scanning_indefinite_lengths() -> None:
    read(nested(MAX_DEPTH, indefinite=True), indefinite=True)  # 33 levels: the last definite
    with pytest.raises(DerError, match="deep"):
        read(nested(MAX_DEPTH + 1, indefinite=True), indefinite=True)
    with pytest.raises(DerError):  # thousands of levels: refused, not a RecursionError
        read(nested(5000, indefinite=True), indefinite=True)


# -- expect, body, parts -----------------------------------------------------------------------


def test_expect_body_parts_and_nth() -> None:
    data = tlv(SEQUENCE, tlv(OID, b"\x2a\x03") + tlv(0x04, b"xy"))
    reader = DerReader(data)
    outer = reader.element()
    parts = reader.parts(outer, SEQUENCE)
    assert reader.oid(nth(parts)) == "1.2.3"
    assert reader.body(nth(parts, 1), 0x04) == b"xy"
    assert nth(parts, 2) is None
    with pytest.raises(DerError, match="expected tag"):
        reader.body(nth(parts, 2), 0x04)  # a missing element
    with pytest.raises(DerError, match="expected tag"):
        reader.parts(outer, 0x31)  # the wrong tag
    assert expect(outer, SEQUENCE) is outer
    assert reader.content_offset() == 2


def test_content_offset_reads_only_the_header() -> None:
    reader = DerReader(b"\x30\x82\x10\x00\x06")  # a length far beyond the data
    assert reader.content_offset() == 4
    with pytest.raises(DerError):
        reader.element()


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "dotted"),
    [
        (b"\x2a\x03", "1.2.3"),
        (bytes.fromhex("608676016402"), "2.16.886.1.100.2"),
        (bytes.fromhex("2a864886f70d010702"), "1.2.840.113549.1.7.2"),  # signedData
        (b"\x00", "0.0"),
        (b"\x81\x00", "2.48"),  # a first arc ≥ 80: joint-iso-itu-t
        (b"\x69" + b"\x01" * 40, "2.25" + ".1" * 40),  # longer than the memo keeps
        (b"\x69" + b"\x81" * 18 + b"\x01", "2.25." + str(int("0000001" * 19, 2))),  # a 19-byte arc
    ],
)
def test_object_identifiers(body: bytes, dotted: str) -> None:
    assert decode_oid(body) == dotted
    assert decode_oid(body) == dotted  # again, from the memo when it is short


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty
        b"\x2a\x86",  # the last arc is unfinished
        b"\x2a\x80\x01",  # a non-minimal arc (leading 0x80)
        b"\x80\x01",  # the first arc non-minimal
        b"\x2a" + b"\x81" * 20 + b"\x01",  # a 21-byte arc (longer than any real OID's)
        b"\x2a" + b"\xff" * 2100 + b"\x7f",  # a 2 KiB arc, beyond int-to-text limits
    ],
)
def test_malformed_object_identifiers_are_refused(body: bytes) -> None:
    for _ in range(2):  # a malformed OID is refused every time, never remembered
        with pytest.raises(DerError):
            decode_oid(body)


@pytest.mark.parametrize(
    ("tag", "body", "text"),
    [
        (0x0C, "王小明".encode(), "王小明"),  # UTF8String
        (0x13, b"TW", "TW"),  # PrintableString
        (0x1E, "測".encode("utf-16-be"), "測"),  # BMPString
        (0x14, "é".encode("latin-1"), "é"),  # TeletexString read as latin-1
        (OID, b"\x2a\x03", "1.2.3"),  # an OID as text
        (0x02, b"\x01", None),  # INTEGER: not text
        (0x18, b"20250101000000Z", None),  # GeneralizedTime: not text
    ],
)
def test_text_values(tag: int, body: bytes, text: str | None) -> None:
    assert decode_text(tag, body) == text


def test_text_its_type_cannot_hold_is_refused() -> None:
    with pytest.raises(DerError):
        decode_text(0x0C, b"\xff\xfe")  # not UTF-8
    with pytest.raises(DerError):
        decode_text(0x13, "é".encode())  # not ASCII


@pytest.mark.parametrize(
    ("tag", "body", "moment"),
    [
        (0x17, b"250601120000Z", datetime(2025, 6, 1, 12, tzinfo=UTC)),  # UTCTime
        (0x17, b"500101000000Z", datetime(1950, 1, 1, tzinfo=UTC)),  # 50 → 1950
        (0x17, b"491231235959Z", datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)),  # 49 → 2049
        (0x18, b"20250601120000Z", datetime(2025, 6, 1, 12, tzinfo=UTC)),  # GeneralizedTime
        (0x18, b"20250601120000.123Z", datetime(2025, 6, 1, 12, tzinfo=UTC)),  # fraction dropped
    ],
)
def test_times(tag: int, body: bytes, moment: datetime) -> None:
    assert decode_time(tag, body) == moment


@pytest.mark.parametrize(
    ("tag", "body"),
    [
        (0x17, b"250601120000"),  # no Z
        (0x17, b"250601120000+0800"),  # an offset instead of Z
        (0x17, b"2506011200Z"),  # no seconds
        (0x18, b"250601120000Z"),  # a GeneralizedTime with two year digits
        (0x17, b"ab0601120000Z"),  # letters
        (0x18, b"20251301120000Z"),  # month 13
        (0x18, "２０２５0601120000Z".encode()),  # not ASCII
        (0x0C, b"20250601120000Z"),  # not a time type
    ],
)
def test_malformed_times_are_refused(tag: int, body: bytes) -> None:
    with pytest.raises(DerError):
        decode_time(tag, body)


# -- the one place with indefinite lengths: CMS of Turnkey signers ------------------------------


def _header(data: bytes, at: int = 0) -> int:
    """The size of the tag and length octets of the element at ``at``."""
    return 2 + (data[at + 1] & 0x7F if data[at + 1] > 0x80 else 0)


def as_ber(cms: bytes) -> bytes:
    """``cms`` with its ContentInfo and ``[0]`` wrapper re-encoded with indefinite lengths."""
    inner = cms[_header(cms) :]  # contentType OID, [0] { SignedData }
    oid_end = _header(inner) + inner[1]
    explicit = inner[oid_end:]
    signed_data = explicit[_header(explicit) :]
    return ber(SEQUENCE, inner[:oid_end] + ber(0xA0, signed_data))


def test_a_ber_cms_reads_like_its_der() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x4EEA4DF4)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(b"message")
        .add_signer(certificate, key, hashes.SHA256())
        .sign(Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature])
    )
    indefinite = as_ber(der)
    assert indefinite != der and indefinite[:2] == b"\x30\x80"
    signers = read_signed_data(der)
    assert read_signed_data(indefinite) == signers
    assert signers[0].serial == 0x4EEA4DF4
    with pytest.raises(DerError):  # the same bytes are not DER: a certificate reader refuses
        DerReader(indefinite).element()
