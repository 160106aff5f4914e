"""通關憑證註冊 / 查詢 / 刪除 through the service: every usage type, every refusal, the query
columns of every key kind, and who may delete.

The trust store holds the two test roots (``app`` fixture) plus the issuing CAs as intermediates,
as an operator adds them (``swreg trust add --intermediate``): a ``.cer`` upload carries no chain.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from hashlib import sha256
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from engine import App, CardResponse, CertificateKind, ImportKind, IssuerCA, SwregError
from engine.core.identifiers import mask_email
from engine.services.customs import CustomsCertificateService, CustomsRow
from engine.services.hashing import IdentifierHasher
from engine.services.login import SessionView
from engine.store import AuditEntry, Certificate
from engine.testing.pki import IssuedCard, TestPKI

from .conftest import COMPANY_ANSWERS, ORG_OID, PERSON_ANSWERS, PIN, SECRET
from .helpers import KeyCard, certificates, enrol

UBN = "04595257"
OTHER_UBN = "97162640"
NATIONAL_ID = "A123456789"
BROKER = {
    "national_id": NATIONAL_ID,
    "contact_name": "王小明",
    "customs_office": "AA",
    "specialist_code": "00001",
}
COMPANY = {"ubn": UBN}
COMPANY_USAGES = (
    "general_forwarder",
    "shipping",
    "warehouse",
    "inspection",
    "offshore_duty_free_system",
    "duty_free",
    "airline",
)
ORIGIN = "https://portal.example"
TAIPEI = ZoneInfo("Asia/Taipei")


# -- shared with the CLI and API tests ------------------------------------------------------------


def trust_intermediates(app: App, pki: TestPKI) -> None:
    """Add the issuing CAs as intermediates (path-building helpers, not anchors)."""
    for ca in pki.intermediates():
        app.trust.add_certificate(pki.der(ca), anchor=False, actor="test")


def stored(app: App) -> list[tuple[Any, ...]]:
    """Every certificate row as (purpose, query_key, usage_type, kind, ca, ubn, status)."""
    return [
        (c.purpose, c.query_key, c.usage_type, c.kind, c.ca, c.ubn, c.status)
        for c in certificates(app)
    ]


def audit(app: App, event: str) -> list[dict[str, Any]]:
    with app.database.unit_of_work() as uow:
        found = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.event == event).order_by(AuditEntry.seq)
        )
        return [dict(r.diff) for r in found]


def dates(card: IssuedCard) -> str:
    """起訖日期 as the 查詢 prints it (Taiwan dates)."""
    cert = card.certificate
    start = cert.not_valid_before_utc.astimezone(TAIPEI).strftime("%Y/%m/%d")
    end = cert.not_valid_after_utc.astimezone(TAIPEI).strftime("%Y/%m/%d")
    return f"{start}~{end}"


def serial(card: IssuedCard) -> str:
    return format(card.certificate.serial_number, "X")


def activate_and_login(app: App, card: IssuedCard, account: str) -> str:
    """Activate ``account`` and log in with ``card``; the session token."""
    app.accounts.activate(app.accounts.send_activation(account))
    challenge = app.logins.issue_challenge(origin=ORIGIN)
    response = KeyCard(card)
    response.verify_pin(PIN)
    result = app.logins.login(
        CardResponse(
            challenge_id=challenge.id,
            certificate=card.der(),
            signature=response.sign(challenge.payload),
            chain=card.chain_der(),
        ),
        origin=ORIGIN,
    )
    return result.token


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def service(app: App, pki: TestPKI) -> CustomsCertificateService:
    trust_intermediates(app, pki)
    return app.customs


def specialist_token(app: App, pki: TestPKI, national_id: str = NATIONAL_ID) -> str:
    """The session token of a 報關專責人員 (``person.customs_broker``) logged in with the MOICA
    card of ``national_id``."""
    card = pki.issue_person("王小明", national_id[-4:])
    email = f"{national_id.lower()}@example.com"
    enrol(app, "person.customs_broker", card, {**PERSON_ANSWERS, "national_id": national_id,
                                                "email": email})  # fmt: skip
    return activate_and_login(app, card, email)


def specialist_session(app: App, pki: TestPKI) -> SessionView:
    session = app.logins.session(specialist_token(app, pki))
    assert session is not None
    return session


def refused(call: Callable[[], Any]) -> tuple[str, str | None]:
    with pytest.raises(SwregError) as info:
        call()
    return str(info.value.code), info.value.field


# -- 通關憑證註冊: every usage type --------------------------------------------------------------


def test_the_plugins_declare_the_eight_usage_types(app: App) -> None:
    assert set(app.catalog.usage_types) == {"broker_specialist", *COMPANY_USAGES}


@pytest.mark.parametrize("usage_type", COMPANY_USAGES)
def test_a_company_imports_a_customs_cer_for_every_company_usage_type(
    app: App, pki: TestPKI, service: CustomsCertificateService, usage_type: str
) -> None:
    card = pki.issue_customs(UBN, "06")
    result = service.import_certificate(
        usage_type, COMPANY, certificate=card.der(), kind=ImportKind.NON_IC,
        signature_check=card.sign,
    )  # fmt: skip
    assert (result.message.zh_tw, result.message.en) == (
        "主憑證匯入成功!",
        "The certificate was imported.",
    )
    assert (result.usage_type, result.query_key, result.kind, result.certificate_kind) == (
        usage_type,
        UBN,
        ImportKind.NON_IC,
        CertificateKind.CUSTOMS,
    )
    assert stored(app) == [("signing", UBN, usage_type, "non_ic", "TaiCA", UBN, "active")]
    [row] = certificates(app)
    assert (row.id, row.fingerprint, row.der, row.serial_hex) == (
        result.id,
        result.fingerprint,
        card.der(),
        serial(card),
    )
    assert (row.account_id, row.national_id_hash, row.registration_id) == (None, None, None)
    assert row.not_after == card.certificate.not_valid_after_utc


def test_a_company_imports_a_business_cer_in_pem(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    card = pki.issue_company(UBN, rank=None)  # 非IC卡 工商憑證
    result = service.import_certificate(
        "shipping", {"ubn": "０４５９５２５７"}, certificate=card.pem(), kind=ImportKind.NON_IC,
        signature_check=card.sign,
    )  # fmt: skip
    assert result.certificate_kind is CertificateKind.BUSINESS
    assert stored(app) == [("signing", UBN, "shipping", "non_ic", "MOEACA", UBN, "active")]


def test_a_broker_specialist_imports_a_personal_customs_cer_in_pem(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    # The CN carries the broker company's UBN, not the person's: it is not compared (❓ §3.7);
    # the specialist's own card login proves the owner.
    card = pki.issue_customs(OTHER_UBN, "06")
    answers = {**BROKER, "customs_office": "aa"}
    result = service.import_certificate(
        "broker_specialist", answers, certificate=card.pem(), kind=ImportKind.NON_IC,
        session=specialist_session(app, pki), signature_check=card.sign,
    )  # fmt: skip
    assert (result.query_key, result.certificate_kind) == ("A00001", CertificateKind.CUSTOMS)
    assert stored(app)[1:] == [  # after the specialist's login certificate
        ("signing", "A00001", "broker_specialist", "non_ic", "TaiCA", None, "active")
    ]
    row = certificates(app)[-1]
    person = IdentifierHasher(SECRET).hash("national_id", NATIONAL_ID)
    assert row.national_id_hash == person
    [diff] = audit(app, "customs_import")
    assert diff["national_id"] == "A12*****89"
    assert NATIONAL_ID not in str(diff)
    assert (diff["query_key"], diff["reactivated"]) == ("A00001", False)
    assert diff["proof"] == {"key": "signed challenge", "login": "a********9@example.com"}
    assert diff["certificate_id"] == result.id


def test_an_ic_card_import_reads_the_card_and_proves_the_key(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    card = pki.issue_company(UBN)
    reader = KeyCard(card)
    reader.verify_pin(PIN)
    result = service.import_certificate(
        "warehouse", COMPANY, certificate=reader.read_certificate(), kind=ImportKind.IC_CARD,
        chain=reader.read_chain(), signature_check=reader.sign, actor="test",
    )  # fmt: skip
    assert (result.kind, result.certificate_kind) == (ImportKind.IC_CARD, CertificateKind.BUSINESS)
    assert stored(app) == [("signing", UBN, "warehouse", "ic_card", "MOEACA", UBN, "active")]
    assert audit(app, "customs_import") == [
        {
            "certificate_id": result.id,
            "usage_type": "warehouse",
            "kind": "ic_card",
            "certificate_kind": "business",
            "fingerprint": result.fingerprint,
            "serial": serial(card),
            "ca": "MOEACA",
            "query_key": UBN,
            "reactivated": False,
            "proof": {"key": "card"},
            "revocation": {"status": "good", "source": "crl", "crl_number": "1"},
            "ubn": UBN,
        }
    ]


def test_an_ic_card_whose_key_does_not_match_is_refused(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    card, other = pki.issue_company(UBN), KeyCard(pki.issue_company(UBN))
    other.verify_pin(PIN)
    call = lambda: service.import_certificate(  # noqa: E731
        "warehouse", COMPANY, certificate=card.der(), kind=ImportKind.IC_CARD,
        signature_check=other.sign,
    )  # fmt: skip
    assert refused(call) == ("signature_invalid", None)
    assert stored(app) == []


# -- refusals: nothing stored --------------------------------------------------------------------

Material = Callable[[TestPKI], bytes]


def _padded_pem(size: int) -> Material:
    return lambda pki: pki.issue_customs(UBN).pem().ljust(size, b"\n")


def _several(pki: TestPKI) -> bytes:
    return pki.issue_customs(UBN).pem() + pki.issue_customs(UBN, "02").pem()


def _expired(pki: TestPKI) -> bytes:
    before = pki.now - timedelta(days=800)
    return pki.issue_customs(UBN, valid_from=before, valid_to=pki.now - timedelta(days=1)).der()


def _revocable(pki: TestPKI) -> bytes:
    return pki.issue_customs(UBN).der()


REFUSALS: list[tuple[str, str, dict[str, Any], Material, ImportKind, tuple[str, str | None]]] = [
    # 64 KiB + 1: refused before parsing
    ("too_large", "shipping", COMPANY, _padded_pem(64 * 1024 + 1), ImportKind.NON_IC,
     ("file_too_large", None)),
    ("garbage", "shipping", COMPANY, lambda _: b"this is no certificate\n", ImportKind.NON_IC,
     ("not_a_certificate", None)),
    # no file at all: required, as the page and the API's multipart form have always said
    ("empty", "shipping", COMPANY, lambda _: b"", ImportKind.NON_IC,
     ("field_required", "certificate")),
    ("pem key", "shipping", COMPANY, lambda p: p.issue_customs(UBN).key_pem(), ImportKind.NON_IC,
     ("private_key_refused", None)),
    ("pkcs12", "shipping", COMPANY, lambda p: p.pkcs12_bytes(p.issue_customs(UBN), PIN),
     ImportKind.NON_IC, ("private_key_refused", None)),
    ("several certificates", "shipping", COMPANY, _several, ImportKind.NON_IC,
     ("not_a_certificate", None)),
    ("truncated DER", "shipping", COMPANY, lambda p: p.issue_customs(UBN).der()[:-10],
     ImportKind.NON_IC, ("certificate_malformed", None)),
    # a TaiCA look-alike CA: same DN, own key
    ("untrusted", "shipping", COMPANY,
     lambda p: p.issue_customs(UBN, issuer=p.lookalike_ca(IssuerCA.TAICA)).der(),
     ImportKind.NON_IC, ("certificate_untrusted", None)),
    ("expired", "shipping", COMPANY, _expired, ImportKind.NON_IC, ("certificate_expired", None)),
    ("not yet valid", "shipping", COMPANY,
     lambda p: p.issue_customs(UBN, valid_from=p.now + timedelta(days=1)).der(),
     ImportKind.NON_IC, ("certificate_not_yet_valid", None)),
    # an encryption certificate cannot sign
    ("key usage", "shipping", COMPANY,
     lambda p: p.issue_customs(UBN, key_usage=("key_encipherment",)).der(), ImportKind.NON_IC,
     ("certificate_key_usage", None)),
    # 報關專責人員 takes only a 通關專屬憑證
    ("business cer for a broker", "broker_specialist", BROKER,
     lambda p: p.issue_company(UBN, rank=None).der(), ImportKind.NON_IC,
     ("certificate_type_mismatch", None)),
    # a 自然人憑證 card is no customs certificate
    ("citizen card for a company", "general_forwarder", COMPANY,
     lambda p: p.issue_person().der(), ImportKind.IC_CARD, ("certificate_type_mismatch", None)),
    ("organisation cer", "general_forwarder", COMPANY,
     lambda p: p.issue_organization(ORG_OID).der(), ImportKind.NON_IC,
     ("certificate_type_mismatch", None)),
    # a 通關專屬憑證 is never on an IC card
    ("customs cer as IC card", "general_forwarder", COMPANY,
     lambda p: p.issue_customs(UBN).der(), ImportKind.IC_CARD,
     ("certificate_type_mismatch", None)),
    ("another company's customs cer", "general_forwarder", COMPANY,
     lambda p: p.issue_customs(OTHER_UBN).der(), ImportKind.NON_IC, ("identity_mismatch", "ubn")),
    ("another company's business cer", "general_forwarder", COMPANY,
     lambda p: p.issue_company(OTHER_UBN).der(), ImportKind.IC_CARD,
     ("identity_mismatch", "ubn")),
    # SDA .101 and the subject serialNumber disagree
    ("conflicting UBNs", "general_forwarder", COMPANY,
     lambda p: p.issue_company(UBN, serial_rdn=OTHER_UBN).der(), ImportKind.IC_CARD,
     ("identity_mismatch", "ubn")),
    ("unknown usage type", "customs_broker", COMPANY, _revocable, ImportKind.NON_IC,
     ("unknown_type", "usage_type")),
    ("no ubn", "shipping", {}, _revocable, ImportKind.NON_IC, ("field_required", "ubn")),
    ("bad ubn", "shipping", {"ubn": "04595258"}, _revocable, ImportKind.NON_IC,
     ("invalid_ubn", "ubn")),
    # the form is checked before the file is read
    ("bad office", "broker_specialist", {**BROKER, "customs_office": "ZZ"},
     lambda _: b"garbage", ImportKind.NON_IC, ("invalid_customs_office", "customs_office")),
    ("bad specialist code", "broker_specialist", {**BROKER, "specialist_code": "1234"},
     _revocable, ImportKind.NON_IC, ("invalid_specialist_code", "specialist_code")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("usage_type", "answers", "material", "kind", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in REFUSALS],
)
def test_refusals_store_nothing(
    app: App,
    pki: TestPKI,
    service: CustomsCertificateService,
    usage_type: str,
    answers: dict[str, Any],
    material: Material,
    kind: ImportKind,
    expected: tuple[str, str | None],
) -> None:
    data = material(pki)
    call = lambda: service.import_certificate(usage_type, answers, certificate=data, kind=kind)  # noqa: E731
    assert refused(call) == expected
    assert stored(app) == []
    assert audit(app, "customs_import") == []


def test_exactly_64_kib_is_accepted(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    card = pki.issue_customs(UBN)
    data = card.pem().ljust(64 * 1024, b"\n")
    service.import_certificate(
        "shipping", COMPANY, certificate=data, kind=ImportKind.NON_IC, signature_check=card.sign
    )
    assert len(stored(app)) == 1


def test_a_revoked_certificate_is_refused(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    card = pki.issue_customs(UBN)
    app.trust.add_crl(pki.crl(IssuerCA.TAICA, [card]).public_bytes(Encoding.DER), actor="test")
    call = lambda: service.import_certificate(  # noqa: E731
        "shipping", COMPANY, certificate=card.der(), kind=ImportKind.NON_IC
    )
    assert refused(call) == ("certificate_revoked", None)
    assert stored(app) == []


def test_the_same_certificate_cannot_be_registered_twice(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    card = pki.issue_customs(UBN)
    service.import_certificate(
        "shipping", COMPANY, certificate=card.der(), kind=ImportKind.NON_IC,
        signature_check=card.sign,
    )  # fmt: skip
    again = lambda: service.import_certificate(  # noqa: E731
        "warehouse",
        COMPANY,
        certificate=card.pem(),
        kind=ImportKind.NON_IC,
        signature_check=card.sign,
    )
    assert refused(again) == ("already_registered", None)
    assert stored(app) == [("signing", UBN, "shipping", "non_ic", "TaiCA", UBN, "active")]
    assert len(audit(app, "customs_import")) == 1


def test_a_login_card_may_also_be_imported_as_a_signing_certificate(
    app: App, pki: TestPKI, service: CustomsCertificateService
) -> None:
    card = pki.issue_company(UBN)
    enrol(app, "enterprise.general", card, COMPANY_ANSWERS)
    service.import_certificate(
        "shipping", COMPANY, certificate=card.der(), kind=ImportKind.IC_CARD,
        signature_check=card.sign,
    )  # fmt: skip
    assert [row[0] for row in stored(app)] == ["login", "signing"]


# -- 通關憑證查詢 ----------------------------------------------------------------------------------


@pytest.fixture
def registered(app: App, pki: TestPKI, service: CustomsCertificateService) -> dict[str, Any]:
    """A company, a person and an organisation with login cards; three customs certificates."""
    company = pki.issue_company(UBN)
    person = pki.issue_person("王小明", "6789")
    org = pki.issue_organization(ORG_OID, "測試大學")
    enrol(app, "enterprise.general", company, COMPANY_ANSWERS)
    enrol(app, "person.customs_broker", person, PERSON_ANSWERS)  # 報關專責人員, ID A123456789
    org_answers = {k: v for k, v in COMPANY_ANSWERS.items() if k != "ubn"}
    enrol(app, "enterprise.organization", org, {**org_answers, "oid": ORG_OID, "ubn": "10458575",
                                                 "email": "office@org.example"})  # fmt: skip
    customs = pki.issue_customs(UBN, "06")
    broker = pki.issue_customs(OTHER_UBN, "05")
    tokens = {
        "company": activate_and_login(app, company, UBN),
        "person": activate_and_login(app, person, "ming@example.com"),
    }
    ids = {
        "customs": service.import_certificate(
            "general_forwarder",
            COMPANY,
            certificate=customs.der(),
            kind=ImportKind.NON_IC,
            signature_check=customs.sign,
        ).id,
        "ic": service.import_certificate(
            "shipping",
            COMPANY,
            certificate=company.der(),
            kind=ImportKind.IC_CARD,
            signature_check=company.sign,
        ).id,
        "broker": service.import_certificate(
            "broker_specialist",
            BROKER,
            certificate=broker.der(),
            kind=ImportKind.NON_IC,
            session=app.logins.session(tokens["person"]),
            signature_check=broker.sign,
        ).id,
    }
    return {"company": company, "person": person, "org": org, "customs": customs,
            "broker": broker, "ids": ids, "tokens": tokens}  # fmt: skip


def columns(rows: list[CustomsRow]) -> list[tuple[str, str, str, str]]:
    return [(r.form, r.kind, r.purpose, r.info) for r in rows]


def subject(card: IssuedCard) -> str:
    cn = card.certificate.subject.rfc4514_string().split(",")[0]
    ubn = cn[3:11]
    return f"C=TW O=Finance OU=TaiCA Test FXML CA OU={ubn}-RA-001 OU=TST {cn}"


def test_query_by_broker_key(
    service: CustomsCertificateService, registered: dict[str, Any]
) -> None:
    broker = registered["broker"]
    rows = service.query("a00001")
    assert columns(rows) == [
        ("非IC卡類憑證", "報關人員憑證", "簽章",
         f"序號: {serial(broker)}, 主體: {subject(broker)}, 起訖日期:{dates(broker)}"),
    ]  # fmt: skip
    [row] = rows
    assert (row.form_en, row.kind_en, row.purpose_en) == (
        "Non-IC certificate",
        "Customs broker certificate",
        "Signing",
    )
    assert (row.id, row.serial, row.account, row.usage_type, row.status) == (
        registered["ids"]["broker"],
        serial(broker),
        None,
        "broker_specialist",
        "active",
    )
    assert row.subject == broker.certificate.subject.rfc4514_string()
    assert row.not_before == broker.certificate.not_valid_before_utc
    assert service.query("B00001") == []


def test_query_by_ubn(
    app: App, service: CustomsCertificateService, registered: dict[str, Any]
) -> None:
    company, customs = registered["company"], registered["customs"]
    company_info = (
        f"序號: {serial(company)}, 主體: C=TW O=測試股份有限公司 serialNumber={UBN}, "
        f"起訖日期:{dates(company)}"
    )
    rows = service.query(UBN)
    assert columns(rows) == [
        ("IC卡", "工商憑證", "登入",  # account names masked for strangers
         f"登入用憑證,使用者帳號0******7, 序號{serial(company)}, 起訖日期:{dates(company)}"),
        ("非IC卡類憑證", "通關專屬憑證", "簽章",
         f"序號: {serial(customs)}, 主體: {subject(customs)}, 起訖日期:{dates(customs)}"),
        ("IC卡", "工商憑證", "簽章", company_info),
    ]  # fmt: skip
    assert [(r.account, r.usage_type) for r in rows] == [
        ("0******7", None),
        (None, "general_forwarder"),
        (None, "shipping"),
    ]
    assert rows[0].info_en == (
        f"Login certificate, account 0******7, serial {serial(company)}, valid {dates(company)}"
    )
    as_owner = service.query(UBN, session=app.logins.session(registered["tokens"]["company"]))
    assert as_owner[0].info_en == (
        f"Login certificate, account {UBN}, serial {serial(company)}, valid {dates(company)}"
    )
    assert as_owner[1:] == rows[1:]


def test_query_by_national_id(
    service: CustomsCertificateService, registered: dict[str, Any]
) -> None:
    person, broker = registered["person"], registered["broker"]
    rows = service.query("a123456789")
    assert columns(rows) == [
        ("IC卡", "自然人憑證", "登入",
         f"登入用憑證,使用者帳號m**g@example.com, 序號{serial(person)}, 起訖日期:{dates(person)}"),
        ("非IC卡類憑證", "報關人員憑證", "簽章",
         f"序號: {serial(broker)}, 主體: {subject(broker)}, 起訖日期:{dates(broker)}"),
    ]  # fmt: skip
    assert service.query("F131104093") == []  # a valid ID nobody registered


def test_query_by_oid(service: CustomsCertificateService, registered: dict[str, Any]) -> None:
    org = registered["org"]
    assert columns(service.query(ORG_OID)) == [
        ("IC卡", "組織團體憑證", "登入",
         f"登入用憑證,使用者帳號2{'*' * 29}4, 序號{serial(org)}, 起訖日期:{dates(org)}"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("chosen", "material", "expected"),
    [
        ("customs", lambda p: p.issue_customs(UBN), None),  # the file's kind: imported
        ("business", lambda p: p.issue_customs(UBN),  # TaiCA file, 工商憑證 chosen
         ("certificate_type_mismatch", "certificate")),
        ("customs", lambda p: p.issue_company(UBN),  # MOEACA file, 通關專屬憑證 chosen
         ("certificate_type_mismatch", "certificate")),
        ("passport", lambda p: p.issue_customs(UBN),  # no 憑證種類 of that name
         ("invalid_value", "certificate_kind")),
    ],
)  # fmt: skip
def test_the_chosen_certificate_kind_must_be_offered_and_be_the_files(
    app: App,
    pki: TestPKI,
    service: CustomsCertificateService,
    chosen: str,
    material: Callable[[TestPKI], IssuedCard],
    expected: tuple[str, str] | None,
) -> None:
    card = material(pki)

    def run() -> Any:
        return service.import_certificate(
            "shipping", COMPANY, certificate=card.der(), kind=ImportKind.NON_IC,
            certificate_kind=chosen, signature_check=card.sign,
        )  # fmt: skip

    if expected is None:
        assert run().certificate_kind is CertificateKind(chosen)
        assert [row[2] for row in stored(app)] == ["shipping"]
    else:
        assert refused(run) == expected
        assert stored(app) == []


def test_a_usage_type_names_its_own_default_and_labels(service: CustomsCertificateService) -> None:
    assert service.usage_type(None).code == "general_forwarder"  # declared default=True
    assert service.usage_type("no-such-usage").code == "general_forwarder"
    assert service.usage_type("shipping").code == "shipping"
    broker = service.usage_type("broker_specialist")
    assert broker.field_labels["contact_name"].zh_tw == "專責人員姓名"
    assert broker.certificate_kinds(ImportKind.NON_IC) == (CertificateKind.CUSTOMS,)
    assert service.usage_type("shipping").certificate_kinds(ImportKind.NON_IC) == (
        CertificateKind.BUSINESS,
        CertificateKind.CUSTOMS,
    )


@pytest.mark.parametrize("key", ["hello", "A0001", "E00001", "04595258", "A123456788", "2"])
def test_other_keys_are_refused(service: CustomsCertificateService, key: str) -> None:
    assert refused(lambda: service.query(key)) == ("invalid_value", "key")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("", ("field_required", "key")),  # nothing typed
        ("  \t", ("field_required", "key")),  # only blanks
        ("1." * 128 + "1", ("field_too_long", "key")),  # 257 characters, past the limit
    ],
)
def test_a_missing_or_overlong_key_is_refused_by_the_service(
    service: CustomsCertificateService, key: str, expected: tuple[str, str]
) -> None:
    assert refused(lambda: service.query(key)) == expected


def test_replaced_certificates_show_with_their_status_and_deleted_ones_hide(
    app: App, service: CustomsCertificateService, registered: dict[str, Any]
) -> None:
    ids = registered["ids"]
    with app.database.unit_of_work() as uow:
        uow.session.get_one(Certificate, ids["customs"]).status = "replaced"
        uow.session.get_one(Certificate, ids["ic"]).status = "deleted"
        uow.commit()
    rows = service.query(UBN)
    assert [(r.purpose, r.status) for r in rows] == [("登入", "active"), ("簽章", "replaced")]


# -- 刪除 -----------------------------------------------------------------------------------------


def test_deleting_needs_the_owner_logged_in_with_its_card(
    app: App, service: CustomsCertificateService, registered: dict[str, Any]
) -> None:
    ids, tokens = registered["ids"], registered["tokens"]
    as_company = app.logins.session(tokens["company"])
    as_person = app.logins.session(tokens["person"])

    def delete(certificate_id: int, session: Any) -> Callable[[], None]:
        return lambda: service.delete(certificate_id, session=session, actor="test")

    assert refused(delete(ids["customs"], None)) == ("not_authorized", None)
    assert refused(delete(ids["customs"], as_person)) == ("not_authorized", None)
    assert refused(delete(ids["broker"], as_company)) == ("not_authorized", None)
    assert refused(delete(999, as_company)) == ("invalid_value", "id")
    login_row = next(c.id for c in certificates(app) if c.purpose == "login")
    assert refused(delete(login_row, as_company)) == ("invalid_value", "id")
    assert audit(app, "customs_delete") == []

    service.delete(ids["customs"], session=as_company, actor="test")
    service.delete(ids["broker"], session=as_person, actor="test")
    assert refused(delete(ids["customs"], as_company)) == ("invalid_value", "id")
    statuses = {c.id: c.status for c in certificates(app)}
    assert (statuses[ids["customs"]], statuses[ids["broker"]], statuses[ids["ic"]]) == (
        "deleted",
        "deleted",
        "active",
    )
    assert [r.usage_type for r in service.query(UBN)] == [None, "shipping"]
    assert service.query("A00001") == []
    assert audit(app, "customs_delete") == [
        {
            "certificate_id": ids["customs"],
            "usage_type": "general_forwarder",
            "fingerprint": sha256(registered["customs"].der()).hexdigest(),
            "query_key": UBN,
            "account": UBN,
        },
        {
            "certificate_id": ids["broker"],
            "usage_type": "broker_specialist",
            "fingerprint": sha256(registered["broker"].der()).hexdigest(),
            "query_key": "A00001",
            "account": mask_email("ming@example.com"),  # audit rows mask e-mail accounts
        },
    ]
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_an_organisation_with_the_same_ubn_is_not_the_owner(
    app: App, service: CustomsCertificateService, registered: dict[str, Any]
) -> None:
    # The organisation typed its UBN; only a 工商憑證 login proves one.
    with app.database.unit_of_work() as uow:
        org = uow.accounts.get_by_name(ORG_OID)
        assert org is not None
        org.ubn = UBN
        uow.session.add(org)
        uow.commit()
    token = activate_and_login(app, registered["org"], ORG_OID)
    session = app.logins.session(token)
    customs = registered["ids"]["customs"]
    call = lambda: service.delete(customs, session=session, actor="test")  # noqa: E731
    assert refused(call) == ("not_authorized", None)


def test_a_deleted_certificate_can_be_imported_again(
    app: App, service: CustomsCertificateService, registered: dict[str, Any]
) -> None:
    ids = registered["ids"]
    as_company = app.logins.session(registered["tokens"]["company"])
    service.delete(ids["customs"], session=as_company, actor="test")
    again = service.import_certificate(  # the owner's card login proves it: no key needed
        "warehouse", COMPANY, certificate=registered["customs"].pem(), kind=ImportKind.NON_IC,
        session=as_company,
    )  # fmt: skip
    assert again.id == ids["customs"]
    row = next(c for c in certificates(app) if c.id == again.id)
    assert (row.status, row.usage_type) == ("active", "warehouse")
    assert audit(app, "customs_import")[-1]["reactivated"] is True
    assert [r.usage_type for r in service.query(UBN)] == [None, "warehouse", "shipping"]
