"""Identifiers of the Single Window, checked as pure functions (DOMAIN.md §1, §2, §5).

Every predicate here normalises its input first (:func:`normalize_text`: NFKC, format characters
removed, trimmed), so full-width digits and letters typed on a Chinese keyboard count as ASCII.
Predicates never raise on text: they answer ``False`` (or ``None``). Nothing here does I/O or
knows about pydantic; :mod:`engine.core.fields` turns these answers into form errors.

Passwords are the one exception to normalisation: they are checked exactly as typed (see
:func:`password_problems`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Literal

from engine._errors import Language

__all__ = [
    "DEFAULT_CUSTOMS_DISTRICTS",
    "DEFAULT_CUSTOMS_OFFICES",
    "PASSWORD_MAX_LENGTH",
    "PASSWORD_MIN_LENGTH",
    "SPECIALIST_CODE_PATTERN",
    "SUB_CARD_PATTERN",
    "CustomsOffices",
    "NationalIdKind",
    "ascii_upper",
    "broker_key",
    "is_strong_password",
    "is_valid_email",
    "is_valid_national_id",
    "is_valid_oid",
    "is_valid_phone",
    "is_valid_specialist_code",
    "is_valid_sub_card",
    "is_valid_ubn",
    "mask_account_name",
    "mask_email",
    "mask_national_id",
    "mask_phone",
    "mask_text",
    "national_id_check_digit",
    "national_id_kind",
    "normalize_email",
    "normalize_text",
    "parse_birth_date",
    "password_problems",
    "ubn_checksum_ok",
]


# --- text ----------------------------------------------------------------------------------


def normalize_text(value: str) -> str:
    """NFKC-normalise, drop format characters (zero-width space, BOM, ...) and trim.

    Full-width ``Ａ１２３`` becomes ``A123`` and the ideographic space becomes a space. Nothing is
    refused here.
    """
    if value.isascii():  # NFKC leaves ASCII alone and it has no format characters
        return value.strip()
    text = unicodedata.normalize("NFKC", value)
    if any(unicodedata.category(ch) == "Cf" for ch in text):
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.strip()


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_upper(value: str) -> str:
    """Upper-case the ASCII letters only.

    ``str.upper`` maps some non-ASCII letters to ASCII (``ß`` → ``SS``, dotless ``ı`` → ``I``),
    which would let them pass as the letters of an ID, a 附卡編號 or an office code; NFKC (in
    :func:`normalize_text`) is the only folding identifiers get.
    """
    return value.translate(_ASCII_UPPER)


def _upper(value: str) -> str:
    return ascii_upper(normalize_text(value))


# --- national ID and resident certificate numbers (DOMAIN.md §1) ------------------------------

NationalIdKind = Literal["national", "arc_new", "arc_old"]

# Not alphabetical: I=34, O=35, W=32, X=30, Y=31, Z=33 (DOMAIN.md §1.1).
_LETTER_CODES: Mapping[str, int] = MappingProxyType(
    dict(zip("ABCDEFGHJKLMNPQRSTUVXYWZIO", range(10, 36), strict=True))
)
_ID_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 1)  # second character and the seven serial digits
_ID_KINDS: tuple[tuple[NationalIdKind, re.Pattern[str]], ...] = (
    ("national", re.compile(r"[A-Z][12][0-9]{8}")),
    ("arc_new", re.compile(r"[A-Z][89][0-9]{8}")),
    ("arc_old", re.compile(r"[A-Z][A-D][0-9]{8}")),
)


def national_id_check_digit(first_nine: str) -> int:
    """The check digit that completes the first nine characters of an ID or ARC number.

    Raises :class:`ValueError` when ``first_nine`` is not a letter followed by ``1``, ``2``,
    ``8``, ``9`` or ``A``-``D`` and seven digits.
    """
    head = _upper(first_nine)
    if not re.fullmatch(r"[A-Z][1289A-D][0-9]{7}", head):
        raise ValueError(f"not the first nine characters of an ID number: {first_nine!r}")
    return (10 - _id_partial_sum(head) % 10) % 10


def _id_partial_sum(head: str) -> int:
    """The checksum of the first nine characters (DOMAIN.md §1.4), before the check digit."""
    area = _LETTER_CODES[head[0]]
    second = int(head[1]) if head[1].isdigit() else _LETTER_CODES[head[1]] % 10
    digits = [second, *(int(c) for c in head[2:9])]
    return (
        area // 10 + (area % 10) * 9 + sum(d * w for d, w in zip(digits, _ID_WEIGHTS, strict=True))
    )


def national_id_kind(value: str) -> NationalIdKind | None:
    """Which kind of number ``value`` is, or ``None`` unless it is a *valid* one.

    ``national`` 身分證字號 (``[A-Z][12]``), ``arc_new`` 新式居留證號 (``[A-Z][89]``), ``arc_old``
    舊式居留證號 (``[A-Z][A-D]``). The third digit (身分碼) is never checked.
    """
    number = _upper(value)
    for kind, pattern in _ID_KINDS:
        if pattern.fullmatch(number):
            return kind if (_id_partial_sum(number) + int(number[9])) % 10 == 0 else None
    return None


def is_valid_national_id(value: str) -> bool:
    """A national ID or a new- or old-format resident certificate number with a good checksum."""
    return national_id_kind(value) is not None


# --- unified business number (DOMAIN.md §2) ----------------------------------------------------

_UBN_PATTERN = re.compile(r"[0-9]{8}")
_UBN_WEIGHTS = (1, 2, 1, 2, 1, 2, 4, 1)


def ubn_checksum_ok(value: str, modulus: int = 5) -> bool:
    """The UBN checksum with ``modulus`` 5 (the rule since 2023) or 10 (the old rule).

    Each digit times its weight, each product replaced by the sum of its digits, all added up.
    When the 7th digit is 7 its product 28 counts as either 1 or 0.
    """
    if modulus <= 0:
        raise ValueError("modulus must be positive")
    number = normalize_text(value)
    if not _UBN_PATTERN.fullmatch(number):
        return False
    total = sum(_digit_sum(int(d) * w) for d, w in zip(number, _UBN_WEIGHTS, strict=True))
    if total % modulus == 0:  # 7th digit 7 counts 10 here, the same as 0
        return True
    return number[6] == "7" and (total + 1) % modulus == 0


def _digit_sum(product: int) -> int:
    return product // 10 + product % 10


def is_valid_ubn(value: str) -> bool:
    """An 8-digit 統一編號 under the 2023 mod-5 rule (which accepts every mod-10 number)."""
    return ubn_checksum_ok(value, 5)


# --- OID (組織團體 / 政府機關 accounts) ---------------------------------------------------------

_OID_PATTERN = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")
_OID_MAX_ARCS = 64
_OID_MAX_LENGTH = 256


def is_valid_oid(value: str) -> bool:
    """Dotted decimal, first arc 0-2, second arc below 40 under 0 and 1, 2 to 64 arcs."""
    oid = normalize_text(value)
    if len(oid) > _OID_MAX_LENGTH or not _OID_PATTERN.fullmatch(oid):
        return False
    arcs = oid.split(".")
    if len(arcs) > _OID_MAX_ARCS or int(arcs[0]) > 2:
        return False
    return arcs[0] == "2" or int(arcs[1]) < 40


# --- e-mail ------------------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL_PART = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_EMAIL_MAX_LENGTH = 254
_LOCAL_MAX_LENGTH = 64


def normalize_email(value: str) -> str:
    """``value`` normalised, with the domain in lower case (the local part keeps its case)."""
    local, at, domain = normalize_text(value).rpartition("@")
    return f"{local}@{domain.lower()}" if at else normalize_text(value)


def is_valid_email(value: str) -> bool:
    """A pragmatic address check: ``local@domain.tld``.

    The local part is 1-64 characters of RFC 5322 atext and dots (no leading, trailing or double
    dot); the domain has at least two LDH labels after IDNA encoding, so 中文 domains are
    accepted; the top-level label is not all digits; the whole address is at most 254 characters.
    """
    address = normalize_text(value)
    if address.count("@") != 1:
        return False
    local, _, domain = address.partition("@")
    if len(local) > _LOCAL_MAX_LENGTH or not _LOCAL_PART.fullmatch(local):
        return False
    ascii_domain = _idna_domain(domain)
    if ascii_domain is None:
        return False
    return len(local) + 1 + len(ascii_domain) <= _EMAIL_MAX_LENGTH


def _idna_domain(domain: str) -> str | None:
    """The ASCII form of ``domain`` when it is a host name of two or more labels."""
    if not domain or len(domain) > _EMAIL_MAX_LENGTH:
        return None
    try:
        encoded = domain.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return None
    labels = encoded.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        return None
    return encoded if all(_LDH_LABEL.fullmatch(label) for label in labels) else None


# --- phone -------------------------------------------------------------------------------------

_PHONE_PATTERN = re.compile(
    r"""
    (?P<country>\+886[ -]?)?
    (?:\((?P<area>[0-9]{1,4})\)[ -]?)?
    (?P<number>[0-9]+(?:[ -][0-9]+)*)
    (?:[ ]*(?:\#|ext\.?|轉|分機)[ ]*(?P<extension>[0-9]{1,6}))?
    """,
    re.VERBOSE | re.IGNORECASE,
)
_PHONE_DIGITS = range(7, 16)


def is_valid_phone(value: str) -> bool:
    """A Taiwan phone number as people type it.

    Optional ``+886``, an optional area code in parentheses, digits grouped by single spaces or
    hyphens, an optional extension (``#123``, ``ext 123``, ``轉123``). The number without its
    extension has 7 to 15 digits, country code included.
    """
    match = _PHONE_PATTERN.fullmatch(normalize_text(value))
    if match is None:
        return False
    head = match.group("country", "area", "number")
    digits = sum(ch.isdigit() for part in head if part for ch in part)
    return digits in _PHONE_DIGITS


# --- birth date --------------------------------------------------------------------------------

_EARLIEST_BIRTH = date(1900, 1, 1)
_ROC_OFFSET = 1911
_DATE_PATTERNS: tuple[tuple[re.Pattern[str], int], ...] = (
    # (pattern, years to add): Gregorian then ROC (民國) forms.
    (re.compile(r"(?P<y>[0-9]{4})([-/])(?P<m>[0-9]{1,2})\2(?P<d>[0-9]{1,2})"), 0),
    (
        re.compile(r"(?:民國)?(?P<y>[0-9]{2,3})年(?P<m>[0-9]{1,2})月(?P<d>[0-9]{1,2})日"),
        _ROC_OFFSET,
    ),
    (re.compile(r"(?P<y>[0-9]{2,3})/(?P<m>[0-9]{1,2})/(?P<d>[0-9]{1,2})"), _ROC_OFFSET),
)


def parse_birth_date(value: str, *, today: date) -> date | None:
    """``YYYY-MM-DD``, ``YYYY/MM/DD``, ``民國YY年MM月DD日`` or ``YYY/MM/DD`` (ROC year + 1911).

    ``None`` when the text is no date, the date does not exist, is after ``today`` or before
    1900-01-01.
    """
    text = normalize_text(value).replace(" ", "")
    for pattern, offset in _DATE_PATTERNS:
        match = pattern.fullmatch(text)
        if match is not None:
            year = int(match["y"])
            if offset and year < 1:  # there is no 民國0年
                return None
            return _birth_date(year + offset, int(match["m"]), int(match["d"]), today)
    return None


def _birth_date(year: int, month: int, day: int, today: date) -> date | None:
    try:
        born = date(year, month, day)
    except ValueError:
        return None
    return born if _EARLIEST_BIRTH <= born <= today else None


# --- customs offices (DOMAIN.md §5) -----------------------------------------------------------

# 大關別: the one-letter customs districts (✅).
DEFAULT_CUSTOMS_DISTRICTS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "A": ("基隆關", "Keelung"),
        "B": ("高雄關", "Kaohsiung"),
        "C": ("臺北關", "Taipei"),
        "D": ("臺中關", "Taichung"),
    }
)

# PARTIAL: only the two-letter 關別 codes seen in public code (🟡). The official table with branch
# names is unknown (❓), so each code is named after its district; deployments load the real
# table through CustomsOffices.from_mapping().
DEFAULT_CUSTOMS_OFFICES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        code: DEFAULT_CUSTOMS_DISTRICTS[code[0]]
        for code in ("AA", "AT", "BA", "BC", "BD", "BE", "BF", "BJ", "CA", "CF", "DA", "DE")
    }
)

_OFFICE_CODE = re.compile(r"[A-Z][A-Z0-9]")


@dataclass(frozen=True, slots=True)
class CustomsOffices:
    """The 關別 table: two-letter office codes whose first letter is the 大關別 (district).

    Build it from data, ``CustomsOffices.from_mapping({"AA": ("基隆關", "Keelung")})``, or take
    the partial built-in table with :meth:`default`. Names are ``(zh-TW, English)`` pairs.
    """

    offices: Mapping[str, tuple[str, str]] = field(hash=False)
    districts: Mapping[str, tuple[str, str]] = field(hash=False)

    @classmethod
    def default(cls) -> CustomsOffices:
        return cls.from_mapping(DEFAULT_CUSTOMS_OFFICES)

    @classmethod
    def from_mapping(
        cls,
        offices: Mapping[str, tuple[str, str]],
        districts: Mapping[str, tuple[str, str]] = DEFAULT_CUSTOMS_DISTRICTS,
    ) -> CustomsOffices:
        """A table from ``{code: (zh-TW name, English name)}``; codes are upper-cased.

        Raises :class:`ValueError` for a code that is not two characters (a letter, then a letter
        or digit).
        """
        table = {_upper(code): (zh, en) for code, (zh, en) in offices.items()}
        bad = sorted(code for code in table if not _OFFICE_CODE.fullmatch(code))
        if bad:
            raise ValueError(f"invalid customs office codes: {', '.join(bad)}")
        return cls(MappingProxyType(table), MappingProxyType(dict(districts)))

    def is_valid(self, code: str) -> bool:
        return _upper(code) in self.offices

    def codes(self) -> tuple[str, ...]:
        """Every office code, sorted (for a drop-down)."""
        return tuple(sorted(self.offices))

    def district_of(self, code: str) -> str:
        """The 大關別 letter of a known office code (``AT`` → ``A``).

        Raises :class:`KeyError` for a code not in the table.
        """
        return self._known(code)[0]

    def name(self, code: str, language: Language = "zh-TW") -> str:
        """The office's name in ``language``; :class:`KeyError` for an unknown code."""
        zh, en = self.offices[self._known(code)]
        return zh if language == "zh-TW" else en

    def district_name(self, district: str, language: Language = "zh-TW") -> str:
        """The name of a 大關別 (``A`` → 基隆關); raises :class:`KeyError` for an unknown one."""
        zh, en = self.districts[_upper(district)]
        return zh if language == "zh-TW" else en

    def _known(self, code: str) -> str:
        key = _upper(code)
        if key not in self.offices:
            raise KeyError(f"unknown customs office code {code!r}")
        return key


# --- customs brokers and secondary cards -------------------------------------------------------

SPECIALIST_CODE_PATTERN = re.compile(r"[0-9]{5}")  # 報關專責人員代碼 (letters allowed? ❓)
SUB_CARD_PATTERN = re.compile(r"[0-9A-Z]{1,4}")  # 附卡編號: the real format is unknown (❓)


def is_valid_specialist_code(value: str) -> bool:
    """報關專責人員代碼: exactly five digits."""
    return SPECIALIST_CODE_PATTERN.fullmatch(normalize_text(value)) is not None


def broker_key(customs_office: str, specialist_code: str) -> str:
    """The 通關專屬個人憑證 query key: 大關別 + 專責人員代碼 (``AA``, ``00001`` → ``A00001``).

    Checks only the shapes (use :class:`CustomsOffices` for the office itself); raises
    :class:`ValueError` when either is malformed.
    """
    office, code = _upper(customs_office), normalize_text(specialist_code)
    if not _OFFICE_CODE.fullmatch(office):
        raise ValueError(f"invalid customs office code {customs_office!r}")
    if not SPECIALIST_CODE_PATTERN.fullmatch(code):
        raise ValueError(f"invalid specialist code {specialist_code!r}")
    return office[0] + code


def is_valid_sub_card(value: str) -> bool:
    """附卡編號: one to four letters or digits (case-insensitive)."""
    return SUB_CARD_PATTERN.fullmatch(_upper(value)) is not None


# --- passwords ---------------------------------------------------------------------------------

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128

PasswordProblem = Literal["too_short", "too_long", "no_digit", "no_upper", "no_lower"]


def password_problems(password: str) -> list[PasswordProblem]:
    """What the password rule (8-128 characters, a digit, an upper- and a lower-case letter)
    finds wrong with ``password``; empty when it is strong enough.

    The password is checked exactly as typed: no NFKC, no trimming. Normalising would make
    distinct passwords equal and change what gets hashed; the form hands it over untouched too.
    Digits and letters are counted in ASCII only, so full-width ``Ａ`` is not an upper-case letter.
    """
    problems: list[PasswordProblem] = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append("too_short")
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append("too_long")
    if not any("0" <= ch <= "9" for ch in password):
        problems.append("no_digit")
    if not any("A" <= ch <= "Z" for ch in password):
        problems.append("no_upper")
    if not any("a" <= ch <= "z" for ch in password):
        problems.append("no_lower")
    return problems


def is_strong_password(password: str) -> bool:
    return not password_problems(password)


# --- masking for logs and screens --------------------------------------------------------------


def mask_national_id(value: str) -> str:
    """Keep the first three and last two characters: ``A123456789`` → ``A12*****89``."""
    number = _upper(value)
    if len(number) <= 5:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 5) + number[-2:]


def mask_email(value: str) -> str:
    """Keep the first and last character of the local part and the domain:
    ``alice@example.com`` → ``a***e@example.com``."""
    local, at, domain = normalize_email(value).rpartition("@")
    return f"{_mask_middle(local)}@{domain}" if at else _mask_middle(domain)


def mask_account_name(value: str) -> str:
    """An account name as strangers see it: an e-mail address as :func:`mask_email`, any other
    name (a UBN with its suffix, an OID) with only its first and last character:
    ``04595257`` → ``0******7``."""
    return mask_email(value) if "@" in value else mask_text(value)


def mask_text(text: str) -> str:
    """Only the first and last character kept: ``王小明`` → ``王*明``."""
    return _mask_middle(text)


def _mask_middle(text: str) -> str:
    """``a`` → ``*``, ``ab`` → ``a*``, ``alice`` → ``a***e``."""
    if len(text) <= 1:
        return "*" * len(text)
    if len(text) == 2:
        return text[0] + "*"
    return text[0] + "*" * (len(text) - 2) + text[-1]


def mask_phone(value: str) -> str:
    """Mask every digit but the last three and keep the separators.

    ``0912-345-678`` → ``****-***-678``.
    """
    text = normalize_text(value)
    to_mask = max(sum(ch.isdigit() for ch in text) - 3, 0)
    masked = []
    for ch in text:
        if ch.isdigit() and to_mask > 0:
            masked.append("*")
            to_mask -= 1
        else:
            masked.append(ch)
    return "".join(masked)
