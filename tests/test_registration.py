"""憑證註冊 through the service layer: every applicant type, every refusal, back/cancel/expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from engine import App, ErrorCode, FixedClock, RefusedError, SwregError
from engine.store import Account, Certificate
from engine.testing.pki import TestPKI

from .conftest import AGENCY_OID, COMPANY_ANSWERS, ORG_OID, PERSON_ANSWERS
from .helpers import (
    accounts,
    audit_events,
    card_response,
    certificates,
    count,
    enrol,
    to_card_check,
)

MOEACA_TYPES = [
    "enterprise.general",
    "enterprise.customs_broker",
    "enterprise.express",
    "enterprise.shipping",
    "enterprise.warehouse",
    "enterprise.forwarder",
    "enterprise.offshore_duty_free",
    "enterprise.duty_free",
    "enterprise.bonded_transport",
    "enterprise.equipment_supplier",
]


def org_answers(oid: str, **extra: Any) -> dict[str, Any]:
    answers = {k: v for k, v in COMPANY_ANSWERS.items() if k != "ubn"}
    return {**answers, "oid": oid, "email": "office@org.example", **extra}


def refusal(excinfo: pytest.ExceptionInfo[SwregError]) -> tuple[str, str | None]:
    return str(excinfo.value.code), excinfo.value.field


# -- every applicant type ----------------------------------------------------------------------


@pytest.mark.parametrize("type_code", ["person.general", "person.customs_broker"])
def test_a_person_registers_with_a_citizen_card(app: App, pki: TestPKI, type_code: str) -> None:
    view = enrol(app, type_code, pki.issue_person("王小明", "6789", key="rsa"), PERSON_ANSWERS)
    assert (view.state, view.account, view.applicant_type) == (
        "completed",
        "ming@example.com",
        type_code,
    )
    assert view.path == ("category", "card_check", "basic_data", "completed")  # 4 steps
    [account] = accounts(app)
    assert account.name == "ming@example.com"
    assert account.status == "pending_activation"
    assert account.national_id_masked == "A12*****89"
    assert account.national_id_hash is not None and "A123456789" not in account.national_id_hash
    assert account.password_hash.startswith("$argon2id$")
    assert account.birth_date is not None and account.birth_date.isoformat() == "1985-03-14"
    [cert] = certificates(app)
    assert (cert.purpose, cert.account_id, cert.ca, cert.status) == (
        "login",
        account.id,
        "MOICA",
        "active",
    )
    assert audit_events(app, view.id) == [
        ("start", None, "category"),
        ("next", "category", "card_check"),
        ("next", "card_check", "basic_data"),
        ("next", "basic_data", "completed"),
    ]


@pytest.mark.parametrize("type_code", MOEACA_TYPES)
def test_every_business_card_type_registers_with_the_ubn_as_account(
    app: App, pki: TestPKI, type_code: str
) -> None:
    view = enrol(app, type_code, pki.issue_company("04595257"), COMPANY_ANSWERS)
    assert (view.state, view.account, view.applicant_type) == ("completed", "04595257", type_code)
    assert len(view.path) == 5
    [account] = accounts(app)
    assert (account.ubn, account.company_name, account.category) == (
        "04595257",
        "測試貿易股份有限公司",
        "enterprise",
    )


def test_a_secondary_card_needs_a_sub_card_number(app: App, pki: TestPKI) -> None:
    enrol(app, "enterprise.general", pki.issue_company("04595257"), COMPANY_ANSWERS)
    secondary = pki.issue_company("04595257", rank="secondary")
    with pytest.raises(RefusedError) as info:  # 用戶姓名已存在
        enrol(app, "enterprise.general", secondary, COMPANY_ANSWERS)
    assert refusal(info) == ("account_exists", "ubn")
    view = enrol(app, "enterprise.general", secondary, {**COMPANY_ANSWERS, "sub_card": "01"})
    assert view.account == "0459525701"
    assert [a.name for a in accounts(app)] == ["04595257", "0459525701"]
    assert not app.registrations.check_account("0459525701")
    assert app.registrations.check_account("0459525702")


@pytest.mark.parametrize(
    ("card_kind", "oid", "resolved"),
    [
        ("organization", ORG_OID, "enterprise.organization"),  # XCA card under 一般企業
        ("agency", AGENCY_OID, "enterprise.government"),  # GCA card under 一般企業
    ],
)
def test_xca_and_gca_cards_resolve_the_general_type(
    app: App, pki: TestPKI, card_kind: str, oid: str, resolved: str
) -> None:
    card = getattr(pki, f"issue_{card_kind}")(oid, "測試單位")
    view = enrol(app, "enterprise.general", card, org_answers(oid, ubn="10458575"))
    assert (view.state, view.account, view.applicant_type, view.chosen_type) == (
        "completed",
        oid,
        resolved,
        "enterprise.general",
    )
    with app.database.unit_of_work() as uow:
        [row] = [e for e in uow.audit.entries(view.id) if e.to_state == "basic_data"]
        assert row.diff["applicant_type"] == {"from": "enterprise.general", "to": resolved}
        assert row.applicant_type == resolved


def test_an_organization_gives_its_ubn_at_enterprise_info(app: App, pki: TestPKI) -> None:
    card = pki.issue_organization(ORG_OID, "測試大學")
    without_ubn = org_answers(ORG_OID)
    view = to_card_check(app, "enterprise.organization")
    view = app.registrations.submit_card(view.id, card_response(app, view, card))
    view = app.registrations.submit(view.id, without_ubn)
    assert view.state == "enterprise_info"
    with pytest.raises(RefusedError) as info:
        app.registrations.submit(view.id, without_ubn)
    assert refusal(info) == ("field_required", "ubn")
    view = app.registrations.submit(view.id, {**without_ubn, "ubn": "10458575"})
    assert (view.state, view.account) == ("completed", ORG_OID)
    assert accounts(app)[0].ubn == "10458575"


def test_the_government_type_directly(app: App, pki: TestPKI) -> None:
    view = enrol(
        app,
        "enterprise.government",
        pki.issue_agency(AGENCY_OID, "測試署"),
        org_answers(AGENCY_OID),
    )
    assert (view.account, view.applicant_type) == (AGENCY_OID, "enterprise.government")


# -- step 1 refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_code", "start", "expected"),
    [
        ("person.nope", {"consent": True}, ("unknown_type", "type")),
        ("person.general", {"consent": False}, ("consent_required", "consent")),
        ("enterprise.general", {"consent": True, "iot": True}, ("iot_not_allowed", "iot")),
    ],
)
def test_start_refusals(
    app: App, type_code: str, start: dict[str, Any], expected: tuple[str, str]
) -> None:
    with pytest.raises(SwregError) as info:
        app.registrations.start(type_code, **start)
    assert refusal(info) == expected


@pytest.mark.parametrize("type_code", ["enterprise.shipping", "enterprise.warehouse"])
def test_iot_permission_where_allowed(app: App, pki: TestPKI, type_code: str) -> None:
    view = enrol(app, type_code, pki.issue_company("04595257"), {**COMPANY_ANSWERS, "iot": True})
    assert view.state == "completed"
    assert accounts(app)[0].iot is True


# -- card-check refusals (DESIGN.md §4 order) --------------------------------------------------


def _card_refusal(app: App, type_code: str, card: Any, **override: Any) -> tuple[str, str | None]:
    """The code and field of a refused card check, after checking it changed nothing."""
    before = (count(app, Account), count(app, Certificate))
    view = to_card_check(app, type_code)
    response = card_response(app, view, card, **override)
    with pytest.raises(SwregError) as info:
        app.registrations.submit_card(view.id, response)
    assert app.registrations.status(view.id).state == "card_check"  # nothing moved
    assert (count(app, Account), count(app, Certificate)) == before
    return refusal(info)


def test_malformed_certificate(app: App, pki: TestPKI) -> None:
    card = pki.issue_person()
    assert _card_refusal(app, "person.general", card, certificate=b"\x30\x03\x02\x01\x01")[0] in {
        "certificate_malformed"
    }


def test_lookalike_issuer_is_untrusted(app: App, pki: TestPKI) -> None:
    fake = pki.lookalike_ca(pki_family("MOICA"), copy_key_identifier=True)
    card = pki.issue_person(issuer=fake)
    assert _card_refusal(app, "person.general", card) == ("certificate_untrusted", None)


def pki_family(name: str) -> Any:
    from engine import IssuerCA

    return IssuerCA(name)


@pytest.mark.parametrize(
    ("window", "code"),
    [
        ((-40, -1), "certificate_expired"),  # expired yesterday
        ((1, 40), "certificate_not_yet_valid"),  # valid from tomorrow
    ],
)
def test_validity(app: App, pki: TestPKI, window: tuple[int, int], code: str) -> None:
    now = pki.now
    card = pki.issue_person(
        valid_from=now + timedelta(days=window[0]), valid_to=now + timedelta(days=window[1])
    )
    assert _card_refusal(app, "person.general", card) == (code, None)


def test_encryption_certificate_is_refused_for_key_usage(app: App, pki: TestPKI) -> None:
    card = pki.issue_person(key_usage=("key_encipherment", "data_encipherment"))
    assert _card_refusal(app, "person.general", card) == ("certificate_key_usage", None)


@pytest.mark.parametrize(
    ("type_code", "card_kind"),
    [
        ("enterprise.general", "person"),  # a citizen card for a company
        ("person.general", "company"),  # a business card for a person
        ("enterprise.express", "organization"),  # XCA only takes over 一般企業或組織團體
    ],
)
def test_wrong_card_type(app: App, pki: TestPKI, type_code: str, card_kind: str) -> None:
    card = {
        "person": lambda: pki.issue_person(),
        "company": lambda: pki.issue_company("04595257"),
        "organization": lambda: pki.issue_organization(ORG_OID, "測試大學"),
    }[card_kind]()
    assert _card_refusal(app, type_code, card) == ("certificate_type_mismatch", None)


def test_revoked_card(app: App, pki: TestPKI) -> None:
    card = pki.issue_person()
    moica = pki.ca(pki_family("MOICA")).certificate
    app.trust.add_certificate(pki.der(moica), anchor=False)  # the CRL's issuer must be known
    app.trust.add_crl(_der(pki.crl(pki_family("MOICA"), revoked=[card])))
    assert _card_refusal(app, "person.general", card) == ("certificate_revoked", None)


def _der(crl: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return bytes(crl.public_bytes(Encoding.DER))


def test_signature_over_something_else(app: App, pki: TestPKI) -> None:
    card = pki.issue_person()
    forged = card.sign(b"not the challenge")
    assert _card_refusal(app, "person.general", card, signature=forged) == (
        "signature_invalid",
        None,
    )


def test_signature_by_another_card(app: App, pki: TestPKI) -> None:
    card, other = pki.issue_person(), pki.issue_person()
    view = to_card_check(app, "person.general")
    challenge = app.registrations.issue_challenge(view.id)
    from engine import CardResponse

    response = CardResponse(
        challenge.id, card.der(), other.sign(challenge.payload), card.chain_der()
    )
    with pytest.raises(SwregError) as info:
        app.registrations.submit_card(view.id, response)
    assert refusal(info) == ("signature_invalid", None)


def test_an_already_registered_card(app: App, pki: TestPKI) -> None:
    card = pki.issue_person()
    enrol(app, "person.general", card, PERSON_ANSWERS)
    # 「您已註冊本系統，系統將為您導回首頁」
    assert _card_refusal(app, "person.general", card)[0] == "already_registered"
    assert count(app, Account) == 1


def test_challenges_are_single_use_and_expire(app: App, pki: TestPKI, clock: FixedClock) -> None:
    card = pki.issue_person()
    view = to_card_check(app, "person.general")
    response = card_response(app, view, card, signature=b"bad")
    with pytest.raises(SwregError):
        app.registrations.submit_card(view.id, response)
    with pytest.raises(SwregError) as info:  # the same challenge again, now properly signed
        app.registrations.submit_card(view.id, response)
    assert refusal(info) == ("challenge_used", None)
    late = card_response(app, view, card)
    clock.advance(timedelta(minutes=5, seconds=1))
    with pytest.raises(SwregError) as info:
        app.registrations.submit_card(view.id, late)
    assert refusal(info) == ("challenge_expired", None)


# -- identity binding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"contact_name": "王大明"}, "contact_name"),  # CN is 王小明
        ({"national_id": "A800000014"}, "national_id"),  # valid ID, last four 0014 ≠ 6789
    ],
)
def test_person_identity_mismatch(
    app: App, pki: TestPKI, change: dict[str, str], field: str
) -> None:
    with pytest.raises(RefusedError) as info:
        enrol(
            app, "person.general", pki.issue_person("王小明", "6789"), {**PERSON_ANSWERS, **change}
        )
    assert refusal(info) == ("identity_mismatch", field)
    assert count(app, Account) == 0


def test_company_ubn_must_be_the_certificates(app: App, pki: TestPKI) -> None:
    with pytest.raises(RefusedError) as info:
        enrol(app, "enterprise.general", pki.issue_company("04595257"),
              {**COMPANY_ANSWERS, "ubn": "10458575"})  # fmt: skip
    assert refusal(info) == ("identity_mismatch", "ubn")


def test_fields_read_from_the_certificate_are_prefilled_and_locked(app: App, pki: TestPKI) -> None:
    view = to_card_check(app, "enterprise.general")
    view = app.registrations.submit_card(
        view.id, card_response(app, view, pki.issue_company("04595257"))
    )
    assert view.locked == ("ubn",)
    assert view.data["ubn"] == "04595257"
    answers = {k: v for k, v in COMPANY_ANSWERS.items() if k != "ubn"}  # not typed: pre-filled
    view = app.registrations.submit(view.id, answers)
    assert view.state == "enterprise_info" and view.account == "04595257"


def test_basic_data_field_errors_come_together(app: App, pki: TestPKI) -> None:
    view = to_card_check(app, "person.general")
    view = app.registrations.submit_card(view.id, card_response(app, view, pki.issue_person()))
    bad = {**PERSON_ANSWERS, "email": "nope", "national_id": "A123456788", "password": "short"}
    with pytest.raises(RefusedError) as info:
        app.registrations.submit(view.id, bad)
    assert [(e.code, e.field) for e in info.value.errors] == [
        ("invalid_email", "email"),
        ("invalid_national_id", "national_id"),
        ("password_policy", "password"),
    ]
    assert app.registrations.status(view.id).state == "basic_data"


# -- back, cancel, expiry ------------------------------------------------------------------------


def test_back_keeps_answers_but_needs_a_new_card_check(app: App, pki: TestPKI) -> None:
    card = pki.issue_company("04595257")
    view = to_card_check(app, "enterprise.general")
    view = app.registrations.submit_card(view.id, card_response(app, view, card))
    view = app.registrations.submit(view.id, COMPANY_ANSWERS)
    assert view.state == "enterprise_info"
    view = app.registrations.back(view.id)
    assert view.state == "basic_data"
    assert view.data["email"] == "info@trading.example"  # 上一步 keeps what was typed
    view = app.registrations.back(view.id)
    assert view.state == "card_check"
    assert view.locked == () and view.identity == {}
    stored = app.registrations.status(view.id)  # read back: the card is forgotten in the row too
    assert stored.locked == () and stored.identity == {} and "ubn" not in stored.data
    with app.database.unit_of_work() as uow:
        row = uow.registrations.get(view.id)
        assert row is not None
        assert (row.evidence, row.certificate_der, row.certificate_fingerprint) == (None,) * 3
        assert row.applicant_type == row.chosen_type == "enterprise.general"
    with pytest.raises(SwregError) as info:  # no skipping the card check on the way forward
        app.registrations.submit(view.id, COMPANY_ANSWERS)
    assert refusal(info)[0] == "invalid_transition"
    view = app.registrations.submit_card(view.id, card_response(app, view, card))
    assert view.data["email"] == "info@trading.example"
    view = app.registrations.submit(view.id, COMPANY_ANSWERS)
    view = app.registrations.submit(view.id, COMPANY_ANSWERS)
    assert view.state == "completed"


def test_cancel_ends_the_registration(app: App, pki: TestPKI) -> None:
    view = to_card_check(app, "person.general")
    view = app.registrations.cancel(view.id)
    assert view.state == "cancelled"
    with pytest.raises(SwregError) as info:
        app.registrations.issue_challenge(view.id)
    assert refusal(info)[0] == "invalid_transition"
    assert audit_events(app, view.id)[-1] == ("cancel", "card_check", "cancelled")


def test_idle_registrations_expire(app: App, pki: TestPKI, clock: FixedClock) -> None:
    view = to_card_check(app, "person.general")
    clock.advance(timedelta(minutes=30, seconds=1))
    with pytest.raises(SwregError) as info:
        app.registrations.issue_challenge(view.id)
    assert refusal(info) == ("registration_expired", None)
    assert app.registrations.status(view.id).state == "expired"
    assert audit_events(app, view.id)[-1] == ("expire", "card_check", "expired")


def test_the_sweeper_expires_idle_registrations(app: App, clock: FixedClock) -> None:
    first = to_card_check(app, "person.general")
    clock.advance(timedelta(minutes=20))
    second = to_card_check(app, "person.general")
    clock.advance(timedelta(minutes=11))
    assert app.registrations.expire_idle() == 1
    assert app.registrations.status(first.id).state == "expired"
    assert app.registrations.status(second.id).state == "card_check"


def test_the_definition_hash_is_pinned(app: App) -> None:
    view = to_card_check(app, "person.general")
    with app.database.unit_of_work() as uow:
        registration = uow.registrations.get(view.id)
        assert registration is not None
        assert registration.workflow_hash == app.workflow.hash
        assert uow.workflows.get(app.workflow.hash) is not None


def test_completion_is_told_to_plugins(app: App, pki: TestPKI) -> None:
    from engine import RegistrationCompleted, hookimpl

    seen: list[RegistrationCompleted] = []

    class Listener:
        @hookimpl
        def swreg_registration_completed(self, event: RegistrationCompleted) -> None:
            seen.append(event)

    app.plugins.register(Listener())
    view = enrol(app, "person.general", pki.issue_person(), PERSON_ANSWERS)
    [event] = seen
    assert (event.account, event.registration_id, event.email) == (
        "ming@example.com",
        view.id,
        "ming@example.com",
    )
    assert event.fields["national_id_masked"] == "A12*****89"


def test_error_codes_are_the_contracts() -> None:
    assert {c.value for c in ErrorCode} >= {
        "consent_required", "unknown_type", "field_required", "invalid_email",
        "invalid_national_id", "invalid_ubn", "invalid_oid", "invalid_phone",
        "invalid_birth_date", "invalid_customs_office", "invalid_specialist_code",
        "password_policy", "password_mismatch", "account_exists", "already_registered",
        "iot_not_allowed", "no_reader", "no_card", "pin_incorrect", "card_locked",
        "certificate_malformed", "certificate_untrusted", "certificate_expired",
        "certificate_not_yet_valid", "certificate_revoked", "certificate_key_usage",
        "certificate_type_mismatch", "identity_mismatch", "signature_invalid",
        "challenge_expired", "challenge_used", "registration_expired", "invalid_transition",
        "file_too_large", "not_a_certificate", "private_key_refused", "rate_limited",
        "not_authorized",
    }  # fmt: skip


def test_a_plugin_step_placed_by_a_workflow_file(
    tmp_path: Any, settings: Any, clock: FixedClock, pki: TestPKI
) -> None:
    """A plugin contributes a 'declaration' step with a form; a workflow file places it."""
    from dataclasses import replace

    from engine import Form, Labels, StepSpec, Text, bootstrap, hookimpl, make_plugin_manager

    class Declaration(Form):
        declared_by: Text

    class DeclarationPlugin:
        @hookimpl
        def swreg_workflow_steps(self) -> list[StepSpec]:
            return [StepSpec("declaration", Labels("聲明", "Declaration"), form=Declaration)]

    workflow = tmp_path / "workflow.toml"
    workflow.write_text(
        'name = "with-declaration"\n'
        '[[step]]\nid = "category"\n[[step]]\nid = "card_check"\n[[step]]\nid = "basic_data"\n'
        '[[step]]\nid = "declaration"\napplies_to = ["person"]\n[[step]]\nid = "completed"\n',
        encoding="utf-8",
    )
    manager = make_plugin_manager(plugins=[DeclarationPlugin()])
    app = bootstrap(replace(settings, workflow_file=workflow), clock=clock, plugins=manager)
    try:
        pki.publish_to(app.trust, actor="cli")
        view = to_card_check(app, "person.general")
        assert view.path == ("category", "card_check", "basic_data", "declaration", "completed")
        view = app.registrations.submit_card(view.id, card_response(app, view, pki.issue_person()))
        view = app.registrations.submit(view.id, PERSON_ANSWERS)
        assert view.state == "declaration"
        with pytest.raises(RefusedError) as info:
            app.registrations.submit(view.id, {})
        assert refusal(info) == ("field_required", "declared_by")
        view = app.registrations.submit(view.id, {"declared_by": "王小明"})
        assert (view.state, view.account) == ("completed", "ming@example.com")
        assert accounts(app)[0].profile["declared_by"] == "王小明"
    finally:
        app.close()


def test_a_registration_finishes_under_its_pinned_definition(
    tmp_path: Any, settings: Any, clock: FixedClock, pki: TestPKI
) -> None:
    """The operator edits the workflow file mid-registration: the started one is undisturbed."""
    from dataclasses import replace

    from engine import bootstrap
    from engine.core.workflow import default_definition_source

    first = bootstrap(settings, clock=clock)
    pki.publish_to(first.trust, actor="cli")
    view = to_card_check(first, "person.general")
    first.close()
    edited = tmp_path / "edited.toml"
    source = default_definition_source()
    edited.write_text(source + "\n# edited by the operator\n", encoding="utf-8")
    second = bootstrap(replace(settings, workflow_file=edited), clock=clock)
    try:
        assert second.workflow.hash != first.workflow.hash
        view = second.registrations.submit_card(
            view.id, card_response(second, view, pki.issue_person())
        )
        view = second.registrations.submit(view.id, PERSON_ANSWERS)
        assert view.state == "completed"
        with second.database.unit_of_work() as uow:
            registration = uow.registrations.get(view.id)
            assert registration is not None and registration.workflow_hash == first.workflow.hash
        assert second.registrations.status(to_card_check(second, "person.general").id).state
    finally:
        second.close()


def test_a_failing_completion_hook_does_not_undo_the_account(app: App, pki: TestPKI) -> None:
    from engine import RegistrationCompleted, hookimpl

    class Broken:
        @hookimpl
        def swreg_registration_completed(self, event: RegistrationCompleted) -> None:
            raise RuntimeError("mail server on fire")

    app.plugins.register(Broken())
    view = enrol(app, "person.general", pki.issue_person(), PERSON_ANSWERS)
    assert view.state == "completed"
    assert [a.name for a in accounts(app)] == ["ming@example.com"]


def test_the_audit_diff_masks_personal_values(app: App, pki: TestPKI) -> None:
    view = enrol(app, "person.general", pki.issue_person(), PERSON_ANSWERS)
    with app.database.unit_of_work() as uow:
        text = repr([e.diff for e in uow.audit.entries(view.id)])
    for clear in ("ming@example.com", "王小明", "A123456789", "0912-345-678", "Passw0rdOK"):
        assert clear not in text, clear
    assert "A12*****89" in text


def test_a_plugin_step_without_a_form_is_passed_with_next(
    tmp_path: Any, settings: Any, clock: FixedClock, pki: TestPKI
) -> None:
    from dataclasses import replace

    from engine import Labels, StepSpec, bootstrap, hookimpl, make_plugin_manager

    class Notice:
        @hookimpl
        def swreg_workflow_steps(self) -> list[StepSpec]:
            return [StepSpec("notice", Labels("注意事項", "Notice"))]

    workflow = tmp_path / "workflow.toml"
    workflow.write_text(
        '[[step]]\nid = "category"\n[[step]]\nid = "card_check"\n[[step]]\nid = "basic_data"\n'
        '[[step]]\nid = "notice"\n[[step]]\nid = "completed"\n',
        encoding="utf-8",
    )
    manager = make_plugin_manager(plugins=[Notice()])
    app = bootstrap(replace(settings, workflow_file=workflow), clock=clock, plugins=manager)
    try:
        pki.publish_to(app.trust, actor="cli")
        view = to_card_check(app, "person.general")
        view = app.registrations.submit_card(view.id, card_response(app, view, pki.issue_person()))
        view = app.registrations.submit(view.id, PERSON_ANSWERS)
        assert view.state == "notice"
        view = app.registrations.submit(view.id, {})
        assert (view.state, view.account) == ("completed", "ming@example.com")
    finally:
        app.close()
