"""Identifier checks against the vectors of DOMAIN.md §1, §2 and §5."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.identifiers import (
    DEFAULT_CUSTOMS_OFFICES,
    CustomsOffices,
    broker_key,
    is_strong_password,
    is_valid_email,
    is_valid_national_id,
    is_valid_oid,
    is_valid_phone,
    is_valid_specialist_code,
    is_valid_sub_card,
    is_valid_ubn,
    mask_email,
    mask_national_id,
    mask_phone,
    national_id_check_digit,
    national_id_kind,
    normalize_email,
    normalize_text,
    parse_birth_date,
    password_problems,
    ubn_checksum_ok,
)

TODAY = date(2024, 6, 1)

# --- normalize_text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ａ１２３４５６７８９", "A123456789"),  # full-width letter and digits
        ("  A123  ", "A123"),  # trimmed
        ("\u3000A123\u3000", "A123"),  # ideographic spaces trimmed
        ("A1\u200b23", "A123"),  # zero-width space (Cf) removed
        ("\ufeffA123", "A123"),  # BOM removed
        ("ｔｅｓｔ＠ｅｘａｍｐｌｅ．ｃｏｍ", "test@example.com"),  # full-width address
        ("王小明", "王小明"),  # CJK untouched
        ("", ""),  # nothing refused
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


# --- national ID / ARC (DOMAIN.md §1.4) -------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("A123456789", "national"),  # textbook example, sum 130
        ("A800000014", "arc_new"),  # new ARC, sum 70
        ("A800000005", "arc_new"),  # new ARC, sum 70
        ("A900000007", "arc_new"),  # new ARC, female, sum 80
        ("AC01234567", "arc_old"),  # old ARC, C -> 2, sum 80
        ("AA00000009", "arc_old"),  # old ARC, A -> 0
        ("AB00000001", "arc_old"),  # old ARC, B -> 1
        ("AC00000003", "arc_old"),  # old ARC, C -> 2
        ("AD00000005", "arc_old"),  # old ARC, D -> 3
        ("HD12345678", "arc_old"),  # the investintaiwan example that does pass
        ("Ａ１２３４５６７８９", "national"),  # full-width, NFKC first
        ("a123456789", "national"),  # lower case, upper-cased first
        (" A123456789 ", "national"),  # surrounding spaces trimmed
    ],
)
def test_valid_national_ids(number: str, kind: str) -> None:
    assert is_valid_national_id(number)
    assert national_id_kind(number) == kind


@pytest.mark.parametrize(
    "number",
    [
        "A123456788",  # check digit off by one (sum 129)
        "A800000015",  # new ARC with a bad check digit
        "AC12345678",  # investintaiwan's illustrative old ARC fails the checksum
        "A323456789",  # second digit 3: no such kind
        "AE12345678",  # old ARC second letter beyond D
        "A12345678",  # nine characters
        "A1234567890",  # eleven characters
        "1123456789",  # no area letter
        "",  # empty
        "A12345678９x",  # junk
        "A１２３４５６７８٩",  # Arabic-Indic nine is a digit, but not an ASCII one
    ],
)
def test_invalid_national_ids(number: str) -> None:
    assert not is_valid_national_id(number)
    assert national_id_kind(number) is None


def test_letter_codes_are_not_alphabetical() -> None:
    # I=34, O=35, W=32, X=30, Y=31, Z=33: a check digit computed alphabetically would differ.
    assert national_id_check_digit("I12345678") == (10 - (3 + 4 * 9 + 120) % 10) % 10
    assert national_id_check_digit("O12345678") == (10 - (3 + 5 * 9 + 120) % 10) % 10
    assert national_id_check_digit("W12345678") == (10 - (3 + 2 * 9 + 120) % 10) % 10
    assert national_id_check_digit("X12345678") == (10 - (3 + 0 * 9 + 120) % 10) % 10
    assert national_id_check_digit("Y12345678") == (10 - (3 + 1 * 9 + 120) % 10) % 10
    assert national_id_check_digit("Z12345678") == (10 - (3 + 3 * 9 + 120) % 10) % 10


def test_third_digit_is_not_checked() -> None:
    for third in "0123456789":
        head = f"A1{third}234567"
        assert is_valid_national_id(head + str(national_id_check_digit(head)))


def test_check_digit_refuses_malformed_prefix() -> None:
    with pytest.raises(ValueError, match="ID number"):
        national_id_check_digit("A3")


_ID_HEADS = st.builds(
    lambda letter, second, digits: letter + second + digits,
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.sampled_from("1289ABCD"),
    st.text("0123456789", min_size=7, max_size=7),
)


@given(_ID_HEADS)
def test_completed_ids_always_validate(head: str) -> None:
    number = head + str(national_id_check_digit(head))
    assert is_valid_national_id(number)
    wrong = head + str((national_id_check_digit(head) + 1) % 10)
    assert not is_valid_national_id(wrong)


# --- UBN (DOMAIN.md §2) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ubn", "mod5", "mod10"),
    [
        ("04595257", True, True),  # official notice example, S=40
        ("04595252", True, False),  # S=35: valid only under the 2023 mod-5 rule
        ("10458575", True, True),  # 7th digit 7, others 20, count 0
        ("10000078", True, True),  # 7th digit 7, others 9: valid only by counting it as 1
        ("00501502", False, False),  # S=9
        ("22822280", False, False),  # S=29
        ("97162640", True, True),  # seed manual screenshot, S=30
        ("04177036", True, True),  # seed manual screenshot, S=30
        ("０４５９５２５２", True, False),  # full-width digits
        ("0459525", False, False),  # seven digits
        ("045952570", False, False),  # nine digits
        ("0459525a", False, False),  # a letter
        ("", False, False),  # empty
    ],
)
def test_ubn_rules(ubn: str, mod5: bool, mod10: bool) -> None:
    assert ubn_checksum_ok(ubn) is mod5
    assert ubn_checksum_ok(ubn, modulus=10) is mod10
    assert is_valid_ubn(ubn) is mod5


def _sum_without_seventh_digit_rule(ubn: str) -> int:
    products = (int(d) * w for d, w in zip(ubn, (1, 2, 1, 2, 1, 2, 4, 1), strict=True))
    return sum(p // 10 + p % 10 for p in products)


def test_10000078_is_valid_only_by_the_seventh_digit_rule() -> None:
    assert _sum_without_seventh_digit_rule("10000078") == 19  # 28 -> 10: neither mod 5 nor 10
    assert is_valid_ubn("10000078")  # 28 counted as 1: 9 + 1 = 10


def test_modulus_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ubn_checksum_ok("04595257", modulus=0)


@given(st.text("0123456789", min_size=8, max_size=8))
def test_mod5_accepts_everything_mod10_accepts(ubn: str) -> None:
    if ubn_checksum_ok(ubn, modulus=10):
        assert ubn_checksum_ok(ubn, modulus=5)


# --- OID ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("oid", "valid"),
    [
        ("2.16.886.101.20003.20065.21001", True),  # a GCA-style organisation OID
        ("2.16.886.1.100.2.102", True),  # the SDA attribute itself
        ("1.2.840.113549", True),  # RSA arc
        ("0.9", True),  # two arcs are enough
        ("2.999", True),  # second arc may exceed 39 under 2
        ("1.39.1", True),  # largest second arc under 1
        ("1.40.1", False),  # second arc 40 under 1
        ("0.40", False),  # second arc 40 under 0
        ("3.1", False),  # first arc above 2
        ("2", False),  # a single arc
        ("2.16.", False),  # trailing dot
        (".2.16", False),  # leading dot
        ("2..16", False),  # empty arc
        ("2.016", False),  # leading zero
        ("2.a", False),  # not a number
        ("2.-1", False),  # negative
        ("２.１６.８８６", True),  # full-width digits normalised
        (".".join(["2"] + ["1"] * 63), True),  # 64 arcs
        (".".join(["2"] + ["1"] * 64), False),  # 65 arcs
        ("2." + "1" * 255, False),  # over 256 characters
        ("", False),  # empty
    ],
)
def test_oid(oid: str, valid: bool) -> None:
    assert is_valid_oid(oid) is valid


# --- e-mail -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "valid"),
    [
        ("user@example.com", True),  # plain
        ("First.Last+tag@Example.COM.tw", True),  # dots, plus, mixed case
        ("o'neil!#$%&*/=?^_`{|}~-@example.com", True),  # every atext symbol
        ("user@例子.台灣", True),  # internationalised domain via IDNA
        ("ｕｓｅｒ＠ｅｘａｍｐｌｅ．ｃｏｍ", True),  # full-width, NFKC first
        ("user@xn--fsqu00a.xn--kpry57d", True),  # punycode domain
        ("a" * 64 + "@example.com", True),  # longest local part
        ("a" * 65 + "@example.com", False),  # local part too long
        ("a@" + ".".join(["b" * 63] * 4), False),  # over 254 characters
        ("userexample.com", False),  # no @
        ("user@@example.com", False),  # two @
        ("us@er@example.com", False),  # two @ apart
        ("@example.com", False),  # empty local part
        (".user@example.com", False),  # leading dot
        ("user.@example.com", False),  # trailing dot
        ("us..er@example.com", False),  # double dot
        ("us er@example.com", False),  # space
        ('"quoted"@example.com', False),  # quoted local parts are not supported
        ("user@localhost", False),  # single label
        ("user@example..com", False),  # empty label
        ("user@-example.com", False),  # label starts with a hyphen
        ("user@example-.com", False),  # label ends with a hyphen
        ("user@exa_mple.com", False),  # underscore is not LDH
        ("user@" + "a" * 64 + ".com", False),  # label over 63
        ("user@1.2.3.4", False),  # numeric top-level label (an IP address)
        ("user@example.com.", False),  # trailing dot
        ("", False),  # empty
    ],
)
def test_email(email: str, valid: bool) -> None:
    assert is_valid_email(email) is valid


def test_normalize_email_lowers_the_domain_only() -> None:
    assert normalize_email(" First.Last@Example.COM ") == "First.Last@example.com"


# --- phone --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "valid"),
    [
        ("02-2345-6789", True),  # Taipei landline with hyphens
        ("(02)23456789", True),  # area code in parentheses
        ("(02) 2345 6789", True),  # spaces
        ("0912-345-678", True),  # mobile with hyphens
        ("0912345678", True),  # mobile, digits only
        ("+886-2-2345-6789", True),  # international landline
        ("+886912345678", True),  # international mobile
        ("+886 912 345 678", True),  # international with spaces
        ("02-25589601#123", True),  # extension with #
        ("02-2558-9601 ext 123", True),  # extension with ext
        ("02-2558-9601 EXT. 123", True),  # ext., any case
        ("02-2558-9601轉123", True),  # Chinese extension marker
        ("０２－２３４５－６７８９", True),  # full-width digits and hyphen
        ("1234567", True),  # seven digits is the minimum
        ("123456789012345", True),  # fifteen digits is the maximum
        ("1234567890123456", False),  # sixteen digits
        ("123456", False),  # six digits
        ("abc", False),  # letters
        ("123", False),  # too short
        ("02-2345-678a", False),  # trailing letter
        ("", False),  # empty
        ("02--2345-6789", False),  # doubled separator
        ("02-2345-6789-", False),  # trailing separator
        ("(02)", False),  # area code alone
        ("+1-212-555-0100", False),  # not a Taiwan prefix
        ("02-2345-6789#", False),  # extension marker without digits
    ],
)
def test_phone(phone: str, valid: bool) -> None:
    assert is_valid_phone(phone) is valid


# --- birth date ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2000-01-05", date(2000, 1, 5)),  # ISO
        ("2000/01/05", date(2000, 1, 5)),  # slashes
        ("2000/1/5", date(2000, 1, 5)),  # one-digit month and day
        ("民國89年1月5日", date(2000, 1, 5)),  # ROC with 民國
        ("89年01月05日", date(2000, 1, 5)),  # ROC without 民國
        ("089/01/05", date(2000, 1, 5)),  # ROC three-digit year
        ("112/12/31", date(2023, 12, 31)),  # ROC 112
        ("２０００－０１－０５", date(2000, 1, 5)),  # full-width
        ("2024-06-01", date(2024, 6, 1)),  # today is allowed
        ("1900-01-01", date(1900, 1, 1)),  # earliest accepted
        ("2024-06-02", None),  # tomorrow
        ("1899-12-31", None),  # before 1900
        ("2023-02-29", None),  # no such day
        ("2000-13-01", None),  # no such month
        ("2000-01/05", None),  # mixed separators
        ("00/01/01", None),  # there is no 民國0年
        ("01/02/2000", None),  # day-first is ambiguous: refused
        ("20000105", None),  # no separators
        ("yesterday", None),  # words
        ("", None),  # empty
    ],
)
def test_parse_birth_date(text: str, expected: date | None) -> None:
    assert parse_birth_date(text, today=TODAY) == expected


# --- customs offices (DOMAIN.md §5) -------------------------------------------------------------


def test_default_customs_offices() -> None:
    offices = CustomsOffices.default()
    assert offices.codes() == tuple(sorted(DEFAULT_CUSTOMS_OFFICES))
    assert offices.is_valid("AA")
    assert offices.is_valid(" at ")  # normalised and upper-cased
    assert not offices.is_valid("EA")  # maps to nothing (CargoWise test)
    assert not offices.is_valid("A")
    assert offices.district_of("BC") == "B"
    assert offices.name("AA") == "基隆關"
    assert offices.name("CF", "en") == "Taipei"
    assert offices.name("DE") == "臺中關"  # official 臺, not 台
    assert offices.district_name("B", "en") == "Kaohsiung"


def test_customs_offices_from_mapping() -> None:
    offices = CustomsOffices.from_mapping({"ia": ("關務署", "Customs Administration")})
    assert offices.is_valid("IA")
    assert not offices.is_valid("AA")
    assert offices.name("IA", "en") == "Customs Administration"
    with pytest.raises(KeyError):
        offices.district_of("AA")
    assert offices == CustomsOffices.from_mapping({"IA": ("關務署", "Customs Administration")})
    assert hash(offices) == hash(CustomsOffices.from_mapping({"IA": ("x", "y")}))


def test_customs_offices_refuse_malformed_codes() -> None:
    with pytest.raises(ValueError, match="A1B"):
        CustomsOffices.from_mapping({"A1B": ("x", "y")})


# --- brokers and secondary cards ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("00001", True),  # the seed manual's example
        ("９９９９９", True),  # full-width digits
        ("0001", False),  # four digits
        ("000001", False),  # six digits
        ("0000A", False),  # a letter (❓ upstream; refused for now)
        ("", False),  # empty
    ],
)
def test_specialist_code(code: str, valid: bool) -> None:
    assert is_valid_specialist_code(code) is valid


def test_broker_key() -> None:
    assert broker_key("AA", "00001") == "A00001"  # the seed manual's example
    assert broker_key("bc", "１２３４５") == "B12345"
    with pytest.raises(ValueError, match="specialist"):
        broker_key("AA", "1")
    with pytest.raises(ValueError, match="customs office"):
        broker_key("A", "00001")


@pytest.mark.parametrize(
    ("sub_card", "valid"),
    [
        ("1", True),  # one digit
        ("01", True),  # two digits
        ("A1B2", True),  # four letters and digits
        ("a1", True),  # lower case is upper-cased
        ("12345", False),  # five characters
        ("A-1", False),  # punctuation
        ("", False),  # empty
    ],
)
def test_sub_card(sub_card: str, valid: bool) -> None:
    assert is_valid_sub_card(sub_card) is valid


# --- passwords ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "problems"),
    [
        ("Passw0rd", []),  # eight characters, all classes
        ("aB3" + "x" * 125, []),  # 128 characters
        ("aB3" + "x" * 126, ["too_long"]),  # 129 characters
        ("Pass0rd", ["too_short"]),  # seven characters
        ("Password", ["no_digit"]),  # no digit
        ("passw0rd", ["no_upper"]),  # no upper case
        ("PASSW0RD", ["no_lower"]),  # no lower case
        ("ＰＡＳＳｗ０ｒｄ", ["no_digit", "no_upper", "no_lower"]),  # full-width is not ASCII
        (" Passw0rd ", []),  # spaces are kept, not trimmed
        ("", ["too_short", "no_digit", "no_upper", "no_lower"]),  # everything wrong
    ],
)
def test_password_problems(password: str, problems: list[str]) -> None:
    assert password_problems(password) == problems
    assert is_strong_password(password) is (not problems)


# --- masking ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "value", "masked"),
    [
        (mask_national_id, "A123456789", "A12*****89"),  # first three and last two kept
        (mask_national_id, "ａ１２３４５６７８９", "A12*****89"),  # normalised first
        (mask_national_id, "AB12", "****"),  # too short to show anything
        (mask_email, "alice@Example.com", "a***e@example.com"),  # ends of the local part
        (mask_email, "ab@example.com", "a*@example.com"),  # two-character local part
        (mask_email, "a@example.com", "*@example.com"),  # one-character local part
        (mask_phone, "0912-345-678", "****-***-678"),  # last three digits, separators kept
        (mask_phone, "+886912345678", "+*********678"),  # plus sign kept
        (mask_phone, "12", "12"),  # nothing to hide
    ],
)
def test_masking(function: Callable[[str], str], value: str, masked: str) -> None:
    assert function(value) == masked


# --- robustness ---------------------------------------------------------------------------------

_PREDICATES = (
    is_valid_national_id,
    national_id_kind,
    is_valid_ubn,
    is_valid_oid,
    is_valid_email,
    is_valid_phone,
    is_valid_specialist_code,
    is_valid_sub_card,
    CustomsOffices.default().is_valid,
    password_problems,
    mask_national_id,
    mask_email,
    mask_phone,
)


@given(st.text())
def test_validators_never_raise_on_text(text: str) -> None:
    for predicate in _PREDICATES:
        predicate(text)
    parse_birth_date(text, today=TODAY)


@given(st.text())
def test_normalize_text_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
