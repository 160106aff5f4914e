"""``swreg demo``: one applicant of each category registers with virtual test cards.

Everything here is test material made on the spot by :class:`engine.testing.pki.TestPKI`: a
GRCA-like test root, test MOICA/MOEACA/XCA/GCA CAs and PKCS#12 "cards" whose password is the
PIN. The demo uses its own SQLite database in its own folder and narrates every step in zh-TW
and English.

A mock of MOI's TW FidO service (:mod:`engine.testing.twfido`) runs on a loopback port for the
whole demo, holding two people with a mobile citizen certificate (行動自然人憑證) under the test
MOICA: one registers in the narration (the mock "phone" approves at once), the other is left for
the browser (``--serve``). Their IDs and the mock's ``hashed_id_num`` salt are fixed, so every
run is the same. The PKI is kept in ``FOLDER/pki`` (``swreg twfido mock --pki FOLDER/pki``
serves people under the same test MOICA later).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from engine._bootstrap import App, bootstrap
from engine._errors import SwregError
from engine._settings import Settings, TwFidoSettings
from engine.core.workflow import Step
from engine.services.enrolment import register_with_card
from engine.services.mobile_id import PendingMobileId, Phone
from engine.services.registration import RegistrationView
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.twfido import TwFidoHolder, TwFidoMock
from engine.testing.twfido_setup import HolderSpec, mobile_certificate, save_pki

PIN = "123456"
DEMO_CRL_VALIDITY = timedelta(days=7)
"""The demo CAs' CRLs are valid a week, like GPKI's daily CRLs with a margin (a demo portal
left running longer refuses cards with ``revocation_unknown``, as a real one would)."""
Say = Callable[[str], None]

MOBILE_SERVICE_ID = "SWREG-DEMO-SP"
MOBILE_SALT = b"swreg demo TW FidO salt (TEST)"
"""The mock's ``hashed_id_num`` salt: fixed, so a demo person's hash is the same every run."""
MOBILE_NARRATED = HolderSpec("E120206183", "黃志偉")
"""Registers in the narration with the mobile ID (the mock phone approves at once)."""
MOBILE_BROWSER = HolderSpec("B220206182", "陳小美")
"""Left for the browser (``--serve``): type this ID, approve on the mock's control page."""


@dataclass(frozen=True)
class Scenario:
    title: str
    type_code: str
    card: IssuedCard
    answers: dict[str, Any]
    expect: str | None = None  # the refusal code this scenario shows on purpose
    mobile_id: str | None = None  # signed by this person's phone through TW FidO, not a card


@dataclass(frozen=True)
class MobileDemo:
    """The TW FidO mock of the demo and the SP settings that reach it."""

    mock: TwFidoMock
    settings: TwFidoSettings
    person: HolderSpec = MOBILE_BROWSER


def start_mobile_demo(pki: TestPKI) -> MobileDemo:
    """The mock on a free loopback port, holding :data:`MOBILE_NARRATED` and
    :data:`MOBILE_BROWSER` (a fresh SP key: test material)."""
    key = secrets.token_bytes(32)
    holders = {
        person.national_id: TwFidoHolder(mobile_certificate(pki, person))
        for person in (MOBILE_NARRATED, MOBILE_BROWSER)
    }
    mock = TwFidoMock({MOBILE_SERVICE_ID: key}, holders, salt=MOBILE_SALT).start()
    return MobileDemo(mock, TwFidoSettings(mock.url, MOBILE_SERVICE_ID, key))


def _scenarios(pki: TestPKI, mobile: MobileDemo) -> list[Scenario]:
    password = {"password": "Demo2026pass", "password_confirm": "Demo2026pass"}
    company = {
        "consent": True, "email": "contact@demo-trading.example", "contact_name": "陳大文",
        "ubn": "04595257", "phone": "02-2345-6789", "address": "臺北市中正區測試路1號",
        "company_name": "示範貿易股份有限公司", **password,
    }  # fmt: skip
    secondary = pki.issue_company(ubn="04595257", name="示範貿易股份有限公司", rank="secondary")
    return [
        Scenario(
            "個人 / 一般個人 — Individual with a 自然人憑證 (MOICA test card)",
            "person.general",
            pki.issue_person(name="王小明", id_last4="6789", key="rsa"),
            {
                "consent": True,
                "email": "ming@demo.example",
                "contact_name": "王小明",
                "national_id": "A123456789",
                "birth_date": "1985-03-14",
                "phone": "0912-345-678",
                "address": "臺北市信義區示範路2號",
                **password,
            },
        ),
        Scenario(
            "企業 / 一般企業 — a company's primary 工商憑證 (MOEACA test card, 正卡)",
            "enterprise.general",
            pki.issue_company(ubn="04595257", name="示範貿易股份有限公司", rank="primary"),
            company,
        ),
        Scenario(
            "企業 / 一般企業 — the secondary card (附卡) without 附卡編號: the UBN account exists",
            "enterprise.general",
            secondary,
            {**company, "email": "branch@demo-trading.example"},
            expect="account_exists",
        ),
        Scenario(
            "企業 / 一般企業 — the secondary card again, with 附卡編號 01",
            "enterprise.general",
            secondary,
            {**company, "sub_card": "01", "email": "branch@demo-trading.example"},
        ),
        Scenario(
            "企業 / 組織團體 — chosen as 一般企業或組織團體 with an XCA card (組織團體憑證)",
            "enterprise.general",
            pki.issue_organization(oid="2.16.886.111.90010.90003.100001", name="示範大學"),
            {
                "consent": True,
                "email": "office@demo-univ.example",
                "contact_name": "林小美",
                "oid": "2.16.886.111.90010.90003.100001",
                "phone": "(02)23456789",
                "address": "臺北市大安區示範路3號",
                "company_name": "示範大學",
                "ubn": "10458575",
                **password,
            },
        ),
        Scenario(
            "企業 / 政府機關 — a government agency with a GCA card (政府憑證)",
            "enterprise.government",
            pki.issue_agency(oid="2.16.886.101.20003.20065.20065", name="示範署"),
            {
                "consent": True,
                "email": "it@demo-agency.example",
                "contact_name": "張志明",
                "oid": "2.16.886.101.20003.20065.20065",
                "phone": "02-2787-8000",
                "address": "臺北市南港區示範路4號",
                "company_name": "示範署",
                **password,
            },
        ),
        Scenario(
            "個人 / 一般個人 — with the 行動自然人憑證 (mobile ID) through the TW FidO mock",
            "person.general",
            mobile.mock.holders[MOBILE_NARRATED.national_id].card,
            {
                "consent": True,
                "email": "wei@demo.example",
                "contact_name": MOBILE_NARRATED.name,
                "national_id": MOBILE_NARRATED.national_id,
                "birth_date": "1990-07-21",
                "phone": "0922-333-444",
                "address": "高雄市前鎮區示範路5號",
                **password,
            },
            mobile_id=MOBILE_NARRATED.national_id,
        ),
    ]


def run_demo(
    out_dir: Path | None = None, *, say: Say | None = None, serve_port: int | None = None
) -> dict[str, Any]:
    """Run every scenario; return a summary (accounts made, audit rows, where things are).

    With ``serve_port`` the portal is then served on it (with virtual cards and the agent)
    until Ctrl-C.
    """
    speak: Say = say or (lambda _line: None)
    folder = out_dir or Path(tempfile.mkdtemp(prefix="swreg-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    speak(
        "swreg 示範 / demo — 所有憑證與金鑰皆為測試用 / every certificate and key is TEST material"
    )
    speak(f"資料夾 / folder: {folder}")
    pki = TestPKI.create(datetime.now(UTC))
    save_pki(pki, folder / "pki")
    mobile = start_mobile_demo(pki)
    settings = Settings.from_env(
        database_url=f"sqlite:///{folder / 'demo.db'}",
        secret_key=secrets.token_bytes(32),
        twfido=mobile.settings,
    )
    try:
        app = bootstrap(settings)
    except BaseException:
        mobile.mock.stop()
        raise
    try:
        speak(f"行動自然人憑證模擬服務 / TW FidO mock: {mobile.mock.url} (test PKI in pki/)")
        for anchor in pki.anchors():
            entry = app.trust.add_certificate(pki.der(anchor), actor="demo")
            speak(f"信任 / trust: {entry.subject}")
        for ca in pki.intermediates():
            app.trust.add_certificate(pki.der(ca), anchor=False, actor="demo")
        for crl in pki.published_crls(next_update=pki.now + DEMO_CRL_VALIDITY):
            loaded = app.trust.add_crl(crl.public_bytes(Encoding.DER), actor="demo")
            speak(f"廢止清冊 / CRL: {loaded['issuer']} #{loaded['crl_number']}")
        results = [
            _run(app, pki, folder, scenario, speak, mobile) for scenario in _scenarios(pki, mobile)
        ]
        with app.database.unit_of_work() as uow:
            audit = uow.audit.verify()
        chain = "intact 完整" if audit.ok else "BROKEN"
        speak(f"稽核紀錄 / audit log: {audit.rows} rows, chain {chain}")
        if serve_port is not None:
            from engine.testing.portal_demo import serve_demo

            serve_demo(app, pki, folder, port=serve_port, say=speak, mobile=mobile)
        return {
            "folder": str(folder),
            "database": settings.database_url,
            "registrations": results,
            "audit_rows": audit.rows,
            "audit_ok": audit.ok,
        }
    finally:
        app.close()
        mobile.mock.stop()


def _run(
    app: App, pki: TestPKI, folder: Path, scenario: Scenario, speak: Say, mobile: MobileDemo
) -> dict[str, Any]:
    speak("")
    speak(f"== {scenario.title}")
    if scenario.mobile_id is not None:
        speak(f"   手機 / phone: twfido:{scenario.mobile_id} (模擬服務 / the mock, test only)")
    else:
        card_file = folder / f"card-{scenario.card.certificate.serial_number:x}.p12"
        pki.write_pkcs12(scenario.card, card_file, PIN)
        speak(f"   卡片 / card: virtual:{card_file.name} (PIN {PIN}, test only)")
    catalog = app.catalog

    def narrate(view: RegistrationView) -> None:
        """Tell the step that just finished (the view shows the step that comes next)."""
        applicant = catalog.applicant(view.applicant_type)
        if view.state == Step.COMPLETED:
            tell(view, view.path[-2], applicant)
        tell(
            view,
            view.path[view.step_number - 2] if view.state != Step.COMPLETED else view.state,
            applicant,
        )

    def tell(view: RegistrationView, done: str, applicant: Any) -> None:
        number = view.path.index(done) + 1
        label = Step(done).labels if done in Step._value2member_map_ else catalog.steps[done].labels
        head = f"   [{number}/{len(view.path)}] {label.zh_tw} / {label.en}:"
        if done == Step.CATEGORY:
            speak(
                f"{head} {applicant.category.labels.zh_tw}/{applicant.labels.zh_tw} — "
                f"{applicant.category.labels.en} / {applicant.labels.en}; "
                "已同意資料使用聲明 / consent given"
            )
        elif done == Step.CARD_CHECK:
            found = ", ".join(f"{k}={v}" for k, v in view.identity.items())
            how = (
                "the phone signed the challenge"
                if scenario.mobile_id
                else "PIN verified on the card, challenge signed"
            )
            speak(f"{head} 檢查完畢 / passed ({how}): {found}")
            if view.applicant_type != view.chosen_type:
                speak(
                    f"       屬性改為 / type resolved to {applicant.labels.zh_tw} "
                    f"{applicant.labels.en} ({view.applicant_type})"
                )
        elif done == Step.COMPLETED:
            speak(
                f"{head} 帳號 / account {view.account} — 請至您的電子郵件Email進行帳號啟用 "
                "/ activate it from your e-mail"
            )
        else:
            speak(f"{head} 已填寫 / accepted (帳號 / account {view.account})")

    from readers.virtual import VirtualP12Card

    answers = dict(scenario.answers)
    opener: Any = nullcontext(None) if scenario.mobile_id else VirtualP12Card(card_file)
    with opener as card:
        try:
            view = register_with_card(
                app.registrations, type_code=scenario.type_code, answers=answers,
                card=_phone(mobile, scenario.mobile_id, speak) if scenario.mobile_id else card,
                pin="" if scenario.mobile_id else PIN, actor="demo", on_step=narrate,
            )  # fmt: skip
        except SwregError as error:
            speak(f"   ✗ {error.code}: {error.message('zh-TW')} / {error.message('en')}")
            if scenario.expect == error.code:
                speak("       (預期中的拒絕 / refused as expected; the registration was cancelled)")
            return {
                "type": scenario.type_code,
                "ok": False,
                "code": str(error.code),
                "expected": scenario.expect == error.code,
            }
    return {"type": view.applicant_type, "ok": True, "account": view.account, "state": view.state}


def _phone(mobile: MobileDemo, national_id: str, speak: Say) -> Phone:
    """The person's phone: the mock's phone approves each ticket as soon as it is shown (so
    the first poll has the answer)."""

    def approve(pending: PendingMobileId) -> None:
        (ticket,) = [t for t in mobile.mock.pending() if t.id_num == national_id]
        speak(f"   手機 / phone: 票據 / ticket {ticket.sp_ticket_id} — 核准 / approved")
        mobile.mock.approve(ticket.sp_ticket_id)

    return Phone(national_id, sleep=time.sleep, on_ticket=approve)
