"""Hostile input to the pure parsers: certificates, Subject Directory Attributes, identifiers,
forms and step data. Properties, not examples (tests/test_certificate.py and friends hold
those, and the random-bytes and byte-flip fuzzing of the parser).

What must hold for anything an attacker sends:

- :func:`load_certificate` returns a certificate or refuses with one of its four codes, the
  same code every time; a key in any PEM wrapping is ``private_key_refused``; a certificate in
  PEM with noise around it is the same certificate as its DER.
- The SDA parser decodes well-formed attributes exactly and raises only ``ValueError``
  otherwise; a certificate whose SDA is broken still loads (without that identity).
- Identifier validators agree with independent reference implementations of DOMAIN.md §1.4
  and §2 after NFKC; a look-alike letter or a digit of another script never passes as ASCII.
- Forms accept or refuse with codes on their own fields, whatever the JSON type; what they
  accept is text that can be stored, hashed and shown (no lone surrogates, no controls).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, create_model

from engine import Catalog, make_plugin_manager
from engine._errors import ErrorCode, FormError, RefusedError, SwregError
from engine.core.declarations import CertificateIdentity, IssuerCA
from engine.core.fields import (
    CustomsOffice,
    Email,
    NationalId,
    Oid,
    Phone,
    SpecialistCode,
    SubCard,
    Ubn,
    using_today,
    validate_form,
)
from engine.core.forms import (
    BrokerSpecialistForm,
    CompanyCustomsForm,
    CompanyInfo,
    EnterpriseBasicData,
    OidBasicData,
    OrganizationInfo,
    PersonBasicData,
)
from engine.core.identifiers import (
    CustomsOffices,
    is_valid_national_id,
    is_valid_oid,
    is_valid_specialist_code,
    is_valid_sub_card,
    is_valid_ubn,
    normalize_text,
)
from engine.core.step_data import accept_step
from engine.core.workflow import Step
from engine.pki.certificate import (
    SDA_OID,
    ParsedCertificate,
    load_certificate,
    parse_directory_attributes,
)
from engine.testing.pki import IssuedCard, TestPKI

from .conftest import COMPANY_ANSWERS, ORG_OID, PERSON_ANSWERS
from .hostile_strategies import (
    FOREIGN_DIGITS,
    INJECTIONS,
    LOOKALIKE_LETTERS,
    PEM_LABELS,
    SEQUENCE,
    broken_directory_attributes,
    der_trees,
    directory_attributes,
    hostile_text,
    json_values,
    national_ids,
    pem,
    pem_noise,
    tlv,
    tricky_character,
    ubns,
)
from .hypothesis_profiles import hostile

PARSER_CODES = frozenset(
    {
        ErrorCode.FILE_TOO_LARGE,
        ErrorCode.NOT_A_CERTIFICATE,
        ErrorCode.PRIVATE_KEY_REFUSED,
        ErrorCode.CERTIFICATE_MALFORMED,
    }
)
TODAY = date(2025, 6, 1)


def verdict(data: bytes) -> ParsedCertificate | ErrorCode:
    """What :func:`load_certificate` makes of ``data``: the certificate, or its refusal code
    (which must be one of the parser's own)."""
    try:
        return load_certificate(data)
    except SwregError as exc:
        assert isinstance(exc, RefusedError), exc
        assert exc.code in PARSER_CODES, exc
        return exc.code


@pytest.fixture(scope="module")
def cards(pki: TestPKI) -> list[IssuedCard]:
    """One card of each family (EC and RSA keys), to be damaged."""
    return [
        pki.issue_person(),
        pki.issue_company("04595257", key="rsa"),
        pki.issue_organization(ORG_OID),
        pki.issue_customs("97162640"),
    ]


# -- the certificate parser ---------------------------------------------------------------------


def check_certificate_bytes(data: bytes) -> None:
    """Any bytes: a certificate (DER input: fingerprinted as given) or one of the parser's
    codes, the same answer every time."""
    first = verdict(data)
    assert verdict(data) == first
    if isinstance(first, ParsedCertificate) and b"-----BEGIN" not in data:
        assert first.fingerprint == hashlib.sha256(data).hexdigest()
        assert first.serial_hex == format(first.certificate.serial_number, "X")


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@hostile(150)
@given(der_trees)
def test_der_shaped_input_is_refused_with_a_parser_code(data: bytes) -> None:
    check_certificate_bytes(data)


def _damage(der: bytes, how: str, at: int, payload: bytes) -> bytes:
    position = at % (len(der) + 1)
    if how == "truncate":
        return der[:position]
    if how == "insert":
        return der[:position] + payload + der[position:]
    if how == "length":  # rewrite a length octet: the byte after some tag
        data = bytearray(der)
        index = min(position | 1, len(data) - 1)
        data[index] = payload[0] if payload else 0x80
        return bytes(data)
    if how == "duplicate":
        return der[:position] + der[position : position + len(payload) + 8] + der[position:]
    return der + payload  # trailing


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.filterwarnings("ignore:Parsed a serial number:UserWarning")
@hostile(150)
@given(
    st.integers(0, 3),
    st.sampled_from(["truncate", "insert", "length", "duplicate", "trailing"]),
    st.integers(0, 4096),
    st.binary(max_size=16),
)
def test_structural_damage_to_a_card_is_refused_with_a_parser_code(
    cards: list[IssuedCard], which: int, how: str, at: int, payload: bytes
) -> None:
    check_certificate_bytes(_damage(cards[which].der(), how, at, payload))


@hostile(100)
@given(
    st.integers(0, 3),
    pem_noise,
    pem_noise,
    st.integers(1, 120),
    st.sampled_from(["\n", "\r\n"]),
)
def test_a_pem_card_in_any_wrapping_is_the_der_card(
    cards: list[IssuedCard], which: int, before: bytes, after: bytes, width: int, newline: str
) -> None:
    der = cards[which].der()
    found = verdict(before + pem(der, width=width, newline=newline) + after)
    assert isinstance(found, ParsedCertificate), found
    assert found.fingerprint == hashlib.sha256(der).hexdigest()


@hostile(100)
@given(
    st.lists(st.sampled_from(PEM_LABELS), min_size=1, max_size=3),
    st.integers(0, 3),
    st.binary(max_size=64),
    pem_noise,
)
def test_pem_blocks_other_than_one_certificate_are_refused(
    cards: list[IssuedCard], labels: list[str], which: int, junk: bytes, noise: bytes
) -> None:
    blocks = [
        pem(cards[which].der() if "CERTIFICATE" in label else junk, label) for label in labels
    ]
    found = verdict(noise.join(blocks))
    certificates = [lb for lb in labels if lb in ("CERTIFICATE", "X509 CERTIFICATE")]
    if any("PRIVATE KEY" in lb or lb == "PKCS12" for lb in labels):
        assert found is ErrorCode.PRIVATE_KEY_REFUSED  # a key is never taken, whatever else
    elif len(certificates) != 1:  # none, or several
        assert found is ErrorCode.NOT_A_CERTIFICATE
    else:
        assert isinstance(found, ParsedCertificate)


# -- Subject Directory Attributes ---------------------------------------------------------------


@hostile(100)
@given(directory_attributes())
def test_well_formed_sda_decodes_exactly(sda: tuple[bytes, tuple[tuple[str, str], ...]]) -> None:
    data, expected = sda
    assert parse_directory_attributes(data) == expected


def check_sda_bytes(data: bytes) -> None:
    """Any bytes: ``(dotted OID, text)`` pairs, or ``ValueError``."""
    try:
        attributes = parse_directory_attributes(data)
    except ValueError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in attributes)
    assert all(re.fullmatch(r"[0-2](\.[0-9]+)+", k) for k, _ in attributes)


@hostile(100)
@given(broken_directory_attributes())
def test_broken_sda_raises_only_value_error(data: bytes) -> None:
    check_sda_bytes(data)


_CARD_KEY = ec.generate_private_key(ec.SECP256R1())


def card_with_sda(pki: TestPKI, sda: bytes) -> bytes:
    ca = pki.ca(IssuerCA.MOICA)
    now = datetime.now(UTC).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "王小明")]))
        .issuer_name(ca.name)
        .public_key(_CARD_KEY.public_key())
        .serial_number(0x1234)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.UnrecognizedExtension(SDA_OID, sda), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


@hostile(60)
@given(st.one_of(broken_directory_attributes(), directory_attributes().map(lambda p: p[0])))
@example(
    tlv(
        SEQUENCE, tlv(SEQUENCE, tlv(0x06, b"\x2a") + tlv(0x31, tlv(0x06, b"\xff" * 2100 + b"\x7f")))
    )
)
def test_a_card_with_any_sda_loads_with_its_issuer(pki: TestPKI, sda: bytes) -> None:
    check_card_with_sda(pki, sda)


def check_card_with_sda(pki: TestPKI, sda: bytes) -> None:
    """A MOICA card whose SDA is ``sda`` loads, with exactly the attributes that parse."""
    parsed = load_certificate(card_with_sda(pki, sda))
    assert parsed.ca is IssuerCA.MOICA
    assert parsed.identity.name == "王小明"
    try:
        expected = parse_directory_attributes(sda)
    except ValueError:
        expected = ()  # a broken SDA is no identity, not a broken certificate
    assert parsed.directory_attributes == expected


# -- identifiers --------------------------------------------------------------------------------

_ID_LETTERS = dict(zip("ABCDEFGHJKLMNPQRSTUVXYWZIO", range(10, 36), strict=True))


def reference_text(value: str) -> str | None:
    """DESIGN.md §3: NFKC, format characters dropped, trimmed; ``None`` unless ASCII then."""
    text = unicodedata.normalize("NFKC", value)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf").strip()
    return text if text.isascii() else None


def reference_national_id(value: str) -> bool:
    """DOMAIN.md §1.4, ``tw_id_ok``, with ASCII digits only."""
    text = reference_text(value)
    if text is None:
        return False
    s = text.upper()
    if not re.fullmatch(r"[A-Z]([12]|[89]|[A-D])[0-9]{8}", s):
        return False
    area = _ID_LETTERS[s[0]]
    second = int(s[1]) if s[1].isdigit() else _ID_LETTERS[s[1]] % 10
    digits = [second] + [int(c) for c in s[2:]]
    weights = [8, 7, 6, 5, 4, 3, 2, 1, 1]
    total = area // 10 + (area % 10) * 9 + sum(d * w for d, w in zip(digits, weights, strict=True))
    return total % 10 == 0


def reference_ubn(value: str) -> bool:
    """DOMAIN.md §2: weights 1,2,1,2,1,2,4,1, digit sums, mod 5, the 7th-digit-7 rule."""
    text = reference_text(value)
    if text is None or not re.fullmatch(r"[0-9]{8}", text):
        return False
    products = [int(d) * w for d, w in zip(text, (1, 2, 1, 2, 1, 2, 4, 1), strict=True)]
    sums = [p // 10 + p % 10 for p in products]
    total = sum(sums)
    return total % 5 == 0 or (text[6] == "7" and (total + 1) % 5 == 0)


def _edit(value: str, position: int, character: str, replace: bool) -> str:
    at = position % (len(value) + 1)
    return value[:at] + character + value[at + (1 if replace else 0) :]


@hostile(300)
@given(national_ids(), st.integers(0, 10), tricky_character, st.booleans())
@example("A123456789", 0, "А", True)  # Cyrillic А
@example("A123456789", 0, "ａ", True)  # full-width a: NFKC and case make it A
@example("I123456781", 0, "ı", True)  # dotless ı: str.upper() would make it I
@example("A123456789", 5, "٥", True)  # Arabic-Indic five
def test_national_ids_agree_with_the_reference(
    number: str, position: int, character: str, replace: bool
) -> None:
    check_identifier_text(_edit(number, position, character, replace))


def check_identifier_text(typed: str) -> None:
    """Any text: the ID and UBN validators agree with the references."""
    assert is_valid_national_id(typed) == reference_national_id(typed), typed
    assert is_valid_ubn(typed) == reference_ubn(typed), typed


@hostile(300)
@given(st.one_of(ubns(), st.sampled_from(["04595257", "04595252", "10458575", "10000078"])),
       st.integers(0, 8), tricky_character, st.booleans())  # fmt: skip
@example("04595257", 3, "９", True)  # full-width nine: the same UBN
@example("04595257", 3, "९", True)  # Devanagari nine: not a digit here
def test_ubns_agree_with_the_reference(
    ubn: str, position: int, character: str, replace: bool
) -> None:
    check_identifier_text(_edit(ubn, position, character, replace))


_OFFICES = CustomsOffices.default()
_CONFUSABLE_TARGETS: list[tuple[Callable[[str], bool], str]] = [
    (is_valid_national_id, "A123456789"),
    (is_valid_national_id, "AC01234567"),
    (is_valid_ubn, "04595257"),
    (is_valid_oid, "2.16.886.111.90010"),
    (is_valid_specialist_code, "00001"),
    (is_valid_sub_card, "A1"),
    (_OFFICES.is_valid, "BC"),
]


@hostile(200)
@given(
    st.sampled_from(_CONFUSABLE_TARGETS),
    st.integers(0, 30),
    st.sampled_from(LOOKALIKE_LETTERS + FOREIGN_DIGITS),
)
def test_a_look_alike_never_passes_for_ascii(
    target: tuple[Callable[[str], bool], str], position: int, character: str
) -> None:
    valid, value = target
    assert valid(value)
    at = position % len(value)
    assert not valid(value[:at] + character + value[at + 1 :])


_FIELD_TYPES: dict[str, Any] = {
    "national_id": NationalId,
    "ubn": Ubn,
    "oid": Oid,
    "phone": Phone,
    "specialist_code": SpecialistCode,
    "sub_card": SubCard,
    "customs_office": CustomsOffice,
    "email": Email,
}
_ASCII_FIELDS = frozenset(_FIELD_TYPES) - {"email", "phone"}  # 中文 domains, 轉 extensions
_FIELD_SEEDS = [
    "A123456789", "ａ１２３４５６７８９", "04595257", "2.16.886.111.90010", "0912-345-678",
    "+886 (2) 2345-6789 轉 123", "00001", "a1", "BC", "ming@example.com", "王@例子.台灣",
]  # fmt: skip


def _model(field_name: str) -> type[BaseModel]:
    model: type[BaseModel] = create_model(
        f"Only_{field_name}", **{field_name: (_FIELD_TYPES[field_name], ...)}
    )
    return model


_MODELS = {name: _model(name) for name in _FIELD_TYPES}


@hostile(300)
@given(st.sampled_from(sorted(_FIELD_TYPES)), hostile_text(_FIELD_SEEDS))
def test_accepted_identifiers_are_canonical(field_name: str, text: str) -> None:
    check_field_text(field_name, text)


FIELD_NAMES = sorted(_FIELD_TYPES)


def check_field_text(field_name: str, text: str) -> None:
    """Any text in an identifier field: refused on that field with a code, or accepted as
    trimmed text (ASCII for IDs, UBNs, OIDs, codes) that validates to itself."""
    model = _MODELS[field_name]
    try:
        value = getattr(validate_form(model, {field_name: text}), field_name)
    except FormError as exc:
        assert [(e.field, e.code in ErrorCode) for e in exc.errors] == [(field_name, True)]
        return
    assert value == value.strip() and value.encode("utf-8")
    if field_name in _ASCII_FIELDS:
        assert value.isascii() and value.isprintable(), repr(value)
    again = getattr(validate_form(model, {field_name: value}), field_name)
    assert again == value  # validating what was accepted changes nothing


# -- forms -----------------------------------------------------------------------------------

_SECRET = {"password", "password_confirm"}
_BROKER = {
    "national_id": "A123456789",
    "contact_name": "林專員",
    "customs_office": "AA",
    "specialist_code": "00001",
}
_OID_ANSWERS = {**COMPANY_ANSWERS, "oid": ORG_OID}
FORMS: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (PersonBasicData, PERSON_ANSWERS),
    (EnterpriseBasicData, {**COMPANY_ANSWERS, "sub_card": "A1"}),
    (OidBasicData, _OID_ANSWERS),
    (CompanyInfo, COMPANY_ANSWERS),
    (OrganizationInfo, COMPANY_ANSWERS),
    (BrokerSpecialistForm, _BROKER),
    (CompanyCustomsForm, COMPANY_ANSWERS),
]
_SEEDS = sorted({str(v) for _, answers in FORMS for v in answers.values()})


@st.composite
def form_answers(
    draw: st.DrawFn, forms: list[tuple[type[BaseModel], dict[str, Any]]] = FORMS
) -> tuple[type[BaseModel], dict[str, Any]]:
    """A form and its valid answers with some fields replaced by hostile JSON values."""
    form, answers = draw(st.sampled_from(forms))
    names = sorted(form.model_fields)
    changed = draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True))
    values = json_values(hostile_text(_SEEDS))
    hostile_answers = {**answers, **{name: draw(values) for name in changed}}
    if draw(st.booleans()):  # the confirmation follows the password, as a browser sends it
        hostile_answers["password_confirm"] = hostile_answers.get("password")
    return form, hostile_answers


def _is_storable_text(value: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


@hostile(100)
@given(form_answers())
def test_forms_accept_storable_values_or_refuse_with_field_codes(
    case: tuple[type[BaseModel], dict[str, Any]],
) -> None:
    check_form(*case)


def check_form(form: type[BaseModel], answers: dict[str, Any]) -> None:
    """Any answers: refused with codes on the form's fields, or values that can be stored,
    hashed and shown."""
    fields = set(form.model_fields)
    with using_today(TODAY):
        try:
            model = validate_form(form, answers)
        except FormError as exc:
            for error in exc.errors:
                assert error.field in fields, error
                assert isinstance(error.code, ErrorCode)
                assert error.message("zh-TW") and error.message("en")
            return
    for name in fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            value.get_secret_value().encode("utf-8")  # it will be hashed
        elif isinstance(value, str):
            assert _is_storable_text(value), (name, value)


def test_a_password_with_a_lone_surrogate_is_refused_before_hashing() -> None:
    # It passed the password rule and then crashed argon2 (UnicodeEncodeError → 500).
    answers = {**PERSON_ANSWERS, "password": "Passw0rdOK\ud800", "password_confirm": "x"}
    with using_today(TODAY), pytest.raises(FormError) as info:
        validate_form(PersonBasicData, answers)
    assert (info.value.errors[0].field, info.value.errors[0].code) == (
        "password",
        ErrorCode.INVALID_VALUE,
    )


@hostile(50)
@given(st.sampled_from(INJECTIONS), st.sampled_from(["contact_name", "address"]))
def test_injection_strings_are_plain_text_kept_as_typed(text: str, field_name: str) -> None:
    with using_today(TODAY):
        model = validate_form(EnterpriseBasicData, {**COMPANY_ANSWERS, field_name: text})
    assert getattr(model, field_name) == normalize_text(text)  # escaping is the renderer's job


# -- step data with a hostile certificate ------------------------------------------------------

_CATALOG = Catalog.from_plugins(make_plugin_manager())


_STEP_ANSWERS = {
    "person.general": PERSON_ANSWERS,
    "enterprise.general": COMPANY_ANSWERS,
    "enterprise.organization": _OID_ANSWERS,
}


@st.composite
def step_cases(draw: st.DrawFn) -> tuple[str, type[BaseModel], dict[str, Any]]:
    type_code = draw(st.sampled_from(sorted(_STEP_ANSWERS)))
    form = _CATALOG.applicant_types[type_code].form_for(Step.BASIC_DATA)
    assert form is not None
    _, answers = draw(form_answers([(form, _STEP_ANSWERS[type_code])]))
    return type_code, form, answers


@hostile(80)
@given(
    step_cases(),
    st.one_of(st.none(), hostile_text(["王小明", "陳大文"])),
    st.one_of(st.none(), hostile_text(["6789", "04595257", ORG_OID])),
)
def test_a_step_with_any_certificate_identity_answers_with_codes(
    case: tuple[str, type[BaseModel], dict[str, Any]], name: str | None, attribute: str | None
) -> None:
    type_code, form, answers = case
    applicant = _CATALOG.applicant_types[type_code]
    identity = CertificateIdentity(name=name, id_last4=attribute, ubn=attribute, oid=attribute)
    locked = applicant.binding.prefill(identity)
    with using_today(TODAY):
        try:
            step = accept_step(form, answers, applicant=applicant, identity=identity, locked=locked)
        except FormError as exc:
            assert all(e.field in form.model_fields and e.code in ErrorCode for e in exc.errors)
            return
    national_id = step.values.get("national_id")
    audit = repr(step.audit_diff)
    assert national_id is None or national_id not in audit
    assert not any(
        isinstance(v, SecretStr) and v.get_secret_value() in audit for v in step.values.values()
    )
    assert _SECRET.isdisjoint(step.plain)
