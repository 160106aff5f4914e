"""憑證逾期提醒: one mail per certificate expiring within the window, through a real SMTP server.

The store holds, besides the two enrolled accounts' login certificates, signing certificates
inserted directly (the customs import is another module's): one of the company's UBN, one of a
UBN without an account, one expired and one replaced.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from engine import App, FixedClock, SmtpMailer
from engine._settings import MailSettings
from engine.cli import app as cli_app
from engine.pki.certificate import load_certificate
from engine.services.reminders import RETRY_AFTER, ReminderRun, ReminderService
from engine.store import AuditEntry, Certificate, Database, Reminder
from engine.testing.pki import IssuedCard, TestPKI
from engine.testing.ports import free_port
from tests.conftest import COMPANY_ANSWERS, PERSON_ANSWERS, PKI_NOW, SECRET
from tests.helpers import enrol
from tests.test_mail import SENDER, SmtpSink, body

ORIGIN = "https://portal.example"
UBN = "04595257"
NO_ACCOUNT_UBN = "97162640"
TAIPEI = ZoneInfo("Asia/Taipei")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@dataclass
class Store:
    """The certificates of the scenario, by role."""

    person_login: IssuedCard  # expires in 30 days: reminded to the person
    company_login: IssuedCard  # expires in 90 days: outside the 60-day window
    company_signing: IssuedCard  # expires in 45 days, no account: reminded by UBN
    orphan_signing: IssuedCard  # expires in 10 days, UBN without account: skipped
    expired: IssuedCard  # expired yesterday: ignored
    replaced: IssuedCard  # expires in 20 days but replaced: ignored


def days(n: float) -> datetime:
    return PKI_NOW + timedelta(days=n)


def store_certificate(
    app: App, card: IssuedCard, *, purpose: str, ubn: str | None,
    account_id: int | None = None, status: str = "active",
) -> int:  # fmt: skip
    """Insert a certificate row as the customs import would; its id."""
    parsed = load_certificate(card.der())
    with app.database.unit_of_work() as uow:
        row = Certificate(
            fingerprint=parsed.fingerprint, purpose=purpose, account_id=account_id,
            der=parsed.der, serial_hex=parsed.serial_hex, subject=parsed.subject,
            issuer=parsed.issuer, ca=parsed.ca.value, not_before=parsed.not_before,
            not_after=parsed.not_after, ubn=ubn, status=status, created_at=PKI_NOW,
        )  # fmt: skip
        uow.certificates.add(row)
        uow.commit()
        return row.id


@pytest.fixture
def store(app: App, pki: TestPKI) -> Store:
    made = Store(
        person_login=pki.issue_person("王小明", "6789", valid_to=days(30)),
        company_login=pki.issue_company(UBN, valid_to=days(90)),
        company_signing=pki.issue_company(UBN, rank=None, valid_to=days(45)),
        orphan_signing=pki.issue_company(NO_ACCOUNT_UBN, valid_to=days(10)),
        expired=pki.issue_company(UBN, valid_from=days(-60), valid_to=days(-1)),
        replaced=pki.issue_company(UBN, rank="secondary", valid_to=days(20)),
    )
    enrol(app, "person.general", made.person_login, PERSON_ANSWERS)
    enrol(app, "enterprise.general", made.company_login, COMPANY_ANSWERS)
    store_certificate(app, made.company_signing, purpose="signing", ubn=UBN)
    store_certificate(app, made.orphan_signing, purpose="signing", ubn=NO_ACCOUNT_UBN)
    store_certificate(app, made.expired, purpose="signing", ubn=UBN)
    store_certificate(app, made.replaced, purpose="login", ubn=UBN, status="replaced")
    return made


def service(app: App, mailer: Any, database: Database | None = None) -> ReminderService:
    return ReminderService(
        database or app.database, app.clock, mailer, public_origin=ORIGIN + "/", sender=SENDER
    )


def reminder_rows(app: App) -> list[tuple[str, int, datetime | None, int]]:
    """(serial, window, sent_at, attempts) of every reminder, by serial."""
    with app.database.unit_of_work() as uow:
        found = uow.session.execute(
            select(
                Certificate.serial_hex, Reminder.window_days, Reminder.sent_at, Reminder.attempts
            )
            .join(Certificate, Certificate.id == Reminder.certificate_id)
            .order_by(Certificate.serial_hex, Reminder.window_days)
        )
        return [(r[0], r[1], r[2], r[3]) for r in found]


def serial(card: IssuedCard) -> str:
    return format(card.certificate.serial_number, "X")


def audit(app: App) -> list[dict[str, Any]]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.scalars(select(AuditEntry).where(AuditEntry.event == "reminder_sent"))
        return [dict(r.diff) for r in rows]


def recipients(messages: list[EmailMessage]) -> list[str]:
    return sorted(str(m["To"]) for m in messages)


def sent_rows(app: App, *cards: IssuedCard, at: datetime, attempts: int = 1) -> list[Any]:
    return sorted((serial(c), 60, at, attempts) for c in cards)


# -- one reminder each ---------------------------------------------------------------------------


def test_one_reminder_per_expiring_certificate(app: App, store: Store, smtp_sink: SmtpSink) -> None:
    reminders = service(app, SmtpMailer(smtp_sink.settings()))
    assert reminders.send_due() == ReminderRun(claimed=2, sent=2, failed=0, skipped=1)

    messages = smtp_sink.messages
    assert recipients(messages) == ["info@trading.example", "ming@example.com"]
    assert reminder_rows(app) == sent_rows(
        app, store.person_login, store.company_signing, at=PKI_NOW
    )
    person = next(m for m in messages if m["To"] == "ming@example.com")
    text = body(person)
    assert "憑證將於" in str(person["Subject"]) and "expires on" in str(person["Subject"])
    assert serial(store.person_login) in text
    assert "CN=王小明" in text
    expires = store.person_login.certificate.not_valid_after_utc.astimezone(TAIPEI)
    assert expires.strftime("%Y/%m/%d %H:%M") in text
    assert "https://portal.example/renewal" in text
    assert "登入用憑證" in text and "login certificate" in text
    company = body(next(m for m in messages if m["To"] == "info@trading.example"))
    assert serial(store.company_signing) in company and "簽章用憑證" in company

    entries = audit(app)
    assert sorted((d["account"], d["email"], d["serial"], d["window_days"]) for d in entries) == [
        ("04595257", "i**o@trading.example", serial(store.company_signing), 60),
        ("m**g@example.com", "m**g@example.com", serial(store.person_login), 60),
    ]
    assert "ming@example.com" not in json.dumps([d["email"] for d in entries])

    # a second run sends nothing: each window's reminder exists once
    assert reminders.send_due() == ReminderRun(claimed=0, sent=0, failed=0, skipped=1)
    assert len(smtp_sink.messages) == 2
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_another_window_is_another_reminder_and_time_moves_certificates_in(
    app: App, store: Store, smtp_sink: SmtpSink, clock: FixedClock
) -> None:
    reminders = service(app, SmtpMailer(smtp_sink.settings()))
    assert reminders.send_due(days=60).sent == 2
    # 100 days: the company's login card (90 days) too; the other two get a second reminder
    assert reminders.send_due(days=100) == ReminderRun(claimed=3, sent=3, failed=0, skipped=1)
    clock.advance(timedelta(days=31))  # the person's card expired; the company's is 59 days out
    assert reminders.send_due(days=60) == ReminderRun(claimed=1, sent=1, failed=0, skipped=0)
    assert recipients(smtp_sink.messages) == [
        "info@trading.example", "info@trading.example", "info@trading.example",
        "info@trading.example", "ming@example.com", "ming@example.com",
    ]  # fmt: skip
    windows = [(s, w) for s, w, _, _ in reminder_rows(app)]
    assert sorted(windows) == sorted(
        [
            (serial(store.person_login), 60), (serial(store.person_login), 100),
            (serial(store.company_signing), 60), (serial(store.company_signing), 100),
            (serial(store.company_login), 60), (serial(store.company_login), 100),
        ]
    )  # fmt: skip


def test_nothing_is_due_outside_the_window(app: App, store: Store, smtp_sink: SmtpSink) -> None:
    reminders = service(app, SmtpMailer(smtp_sink.settings()))
    assert reminders.send_due(days=5) == ReminderRun(claimed=0, sent=0, failed=0, skipped=0)
    assert smtp_sink.messages == [] and reminder_rows(app) == []


def test_days_must_be_positive(app: App, smtp_sink: SmtpSink) -> None:
    with pytest.raises(Exception) as info:
        service(app, SmtpMailer(smtp_sink.settings())).send_due(days=0)
    assert getattr(info.value, "code", None) == "invalid_value"


# -- concurrency and retries ---------------------------------------------------------------------


def test_concurrent_runs_send_each_reminder_once(
    app: App, store: Store, pki: TestPKI, smtp_sink: SmtpSink, db_url: str
) -> None:
    extra = [pki.issue_company(UBN, rank=None, valid_to=days(5 + i)) for i in range(8)]
    for card in extra:
        store_certificate(app, card, purpose="signing", ubn=UBN)
    barrier = threading.Barrier(2)
    runs: list[ReminderRun] = []
    errors: list[BaseException] = []

    def run() -> None:
        database = Database(db_url)
        try:
            reminders = service(app, SmtpMailer(smtp_sink.settings()), database)
            barrier.wait(timeout=10)
            runs.append(reminders.send_due())
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(runs) == 2
    assert sum(r.claimed for r in runs) == 10
    assert sum(r.sent for r in runs) == 10
    assert sum(r.failed for r in runs) == 0
    assert len(smtp_sink.messages) == 10
    assert reminder_rows(app) == sent_rows(
        app, store.person_login, store.company_signing, *extra, at=PKI_NOW
    )
    assert len(audit(app)) == 10
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok


def test_a_failed_send_is_retried_by_a_later_run(
    app: App, store: Store, smtp_sink: SmtpSink, clock: FixedClock
) -> None:
    down = SmtpMailer(MailSettings(host="127.0.0.1", port=free_port(), sender=SENDER), timeout=2)
    assert service(app, down).send_due() == ReminderRun(claimed=2, sent=0, failed=2, skipped=1)
    unsent = sorted((serial(c), 60, None, 1) for c in (store.person_login, store.company_signing))
    assert reminder_rows(app) == unsent
    assert audit(app) == []

    reminders = service(app, SmtpMailer(smtp_sink.settings()))
    clock.advance(RETRY_AFTER - timedelta(seconds=1))  # maybe still being sent: left alone
    assert reminders.send_due() == ReminderRun(claimed=0, sent=0, failed=0, skipped=1)
    assert smtp_sink.messages == []

    clock.advance(timedelta(seconds=2))
    assert reminders.send_due() == ReminderRun(claimed=2, sent=2, failed=0, skipped=1)
    assert recipients(smtp_sink.messages) == ["info@trading.example", "ming@example.com"]
    assert reminder_rows(app) == sent_rows(
        app, store.person_login, store.company_signing, at=clock.now(), attempts=2
    )
    clock.advance(RETRY_AFTER * 2)
    assert reminders.send_due().claimed == 0
    assert len(smtp_sink.messages) == 2


# -- the command ---------------------------------------------------------------------------------


def test_cli_reminders_send(app: App, store: Store, smtp_sink: SmtpSink, db_url: str) -> None:
    env = {
        "SWREG_DATABASE_URL": db_url,
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_SMTP_HOST": "127.0.0.1",
        "SWREG_SMTP_PORT": str(smtp_sink.port),
        "SWREG_SMTP_TLS": "none",  # the plain local sink, no login
        "SWREG_MAIL_FROM": SENDER,
        "SWREG_PUBLIC_ORIGIN": ORIGIN,
    }
    runner = CliRunner()
    result = runner.invoke(cli_app, ["reminders", "send", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True, "claimed": 2, "sent": 2, "failed": 0, "skipped": 1
    }  # fmt: skip
    assert recipients(smtp_sink.messages) == ["info@trading.example", "ming@example.com"]
    result = runner.invoke(cli_app, ["reminders", "send", "--days", "60", "--json"], env=env)
    assert json.loads(result.stdout)["claimed"] == 0

    env["SWREG_SMTP_PORT"] = str(free_port())
    result = runner.invoke(cli_app, ["reminders", "send", "--days", "100", "--json"], env=env)
    out = json.loads(result.stdout)
    assert result.exit_code == 3
    assert (out["ok"], out["claimed"], out["sent"], out["failed"]) == (False, 3, 0, 3)
    assert out["errors"][0]["code"] == "mail_unavailable"
