"""帳號啟用: the activation mail goes through a real SMTP server; its link activates the account."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from engine import App, EnvironmentProblem, FixedClock, SwregError
from engine._settings import MailSettings
from engine.services.accounts import AccountService, link_token, token_hash
from engine.services.mail import ACTIVATION_SUBJECT, Mailer, OutboxMailer, SmtpMailer
from engine.store import ActivationToken, AuditEntry
from engine.testing.pki import TestPKI
from engine.testing.ports import free_port
from tests.conftest import COMPANY_ANSWERS, PERSON_ANSWERS
from tests.helpers import accounts, enrol
from tests.test_mail import SmtpSink, body

ORIGIN = "https://portal.example"
TTL = timedelta(hours=24)
LINK = re.compile(r"https://portal\.example/activate/([A-Za-z0-9_-]{43})")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on a free loopback port, collecting what it receives."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def service(app: App, mailer: Mailer) -> AccountService:
    return AccountService(
        app.database, app.clock, mailer, public_origin=ORIGIN + "/", activation_ttl=TTL,
        sender="關港貿單一窗口 <no-reply@portal.example>",
    )  # fmt: skip


def use(app: App, accounts_service: AccountService) -> AccountService:
    """Make ``accounts_service`` issue and mail the activation links of new accounts."""
    app.registrations.activations = accounts_service
    return accounts_service


def status(app: App, name: str) -> str:
    return {a.name: a.status for a in accounts(app)}[name]


def events(app: App) -> list[tuple[str, dict[str, object]]]:
    """Audit rows of account events (not of registrations or the trust store), in order."""
    with app.database.unit_of_work() as uow:
        found = uow.session.scalars(select(AuditEntry).order_by(AuditEntry.seq))
        return [(e.event, dict(e.diff)) for e in found if e.event in ACCOUNT_EVENTS]


ACCOUNT_EVENTS = {"activation_sent", "activated"}


def refusal(info: pytest.ExceptionInfo[SwregError]) -> str:
    return str(info.value.code)


def test_registration_mails_a_link_that_activates_once(
    app: App, pki: TestPKI, smtp_sink: SmtpSink
) -> None:
    accounts_service = use(app, service(app, SmtpMailer(smtp_sink.settings())))
    view = enrol(app, "person.general", pki.issue_person("王小明", "6789"), PERSON_ANSWERS)
    assert view.account == "ming@example.com"
    assert status(app, "ming@example.com") == "pending_activation"

    assert len(smtp_sink.envelopes) == 1
    assert smtp_sink.envelopes[0].rcpt_tos == ["ming@example.com"]
    mail = smtp_sink.messages[0]
    assert mail["Subject"] == ACTIVATION_SUBJECT
    found = LINK.findall(body(mail))
    assert len(found) == 2 and found[0] == found[1]  # zh-TW and English halves
    token = found[0]

    assert accounts_service.activate(token) == "ming@example.com"
    assert status(app, "ming@example.com") == "active"
    with pytest.raises(SwregError) as info:
        accounts_service.activate(token)
    assert refusal(info) == "activation_invalid"
    assert status(app, "ming@example.com") == "active"

    sent, activated = events(app)
    assert sent[0] == "activation_sent"
    assert sent[1]["account"] == "m**g@example.com"  # masked like the e-mail field (§6)
    assert sent[1]["email"] == "m**g@example.com"
    assert token not in str(sent[1]) and token_hash(token) not in str(sent[1])
    assert activated == ("activated", {"account": "m**g@example.com"})
    assert "ming@example.com" not in str(events(app))
    with app.database.unit_of_work() as uow:
        assert uow.audit.verify().ok
        stored = uow.session.scalars(select(ActivationToken)).one()
        assert stored.token_hash == token_hash(token) != token
        assert stored.used_at == app.clock.now()


def test_expired_link(app: App, pki: TestPKI, clock: FixedClock, tmp_path: Path) -> None:
    outbox = OutboxMailer(tmp_path / "outbox")
    accounts_service = use(app, service(app, outbox))
    enrol(app, "enterprise.general", pki.issue_company("04595257"), COMPANY_ANSWERS)
    [mail] = outbox.messages()
    assert mail["To"] == "info@trading.example"
    token = LINK.findall(body(mail))[0]
    clock.advance(TTL + timedelta(seconds=1))
    with pytest.raises(SwregError) as info:
        accounts_service.activate(token)
    assert refusal(info) == "activation_expired"
    assert status(app, "04595257") == "pending_activation"

    link = accounts_service.send_activation("04595257")  # re-sent: a new link works
    assert len(outbox.messages()) == 2
    assert accounts_service.activate(link) == "04595257"  # a whole pasted link is accepted
    assert status(app, "04595257") == "active"


def test_link_valid_until_its_last_second(app: App, pki: TestPKI, clock: FixedClock) -> None:
    outbox: list[object] = []
    accounts_service = use(app, service(app, _ListMailer(outbox)))
    enrol(app, "person.general", pki.issue_person("王小明", "6789"), PERSON_ANSWERS)
    assert len(outbox) == 1  # sent by the hook
    link = accounts_service.send_activation("ming@example.com")
    assert len(outbox) == 2
    clock.advance(TTL)  # exactly at expiry: still valid
    assert accounts_service.activate(link) == "ming@example.com"


def test_activation_retires_the_other_links(app: App, pki: TestPKI) -> None:
    accounts_service = use(app, service(app, _ListMailer([])))
    enrol(app, "person.general", pki.issue_person("王小明", "6789"), PERSON_ANSWERS)
    first = accounts_service.send_activation("ming@example.com")
    second = accounts_service.send_activation("ming@example.com")
    assert first != second
    accounts_service.activate(second)
    with pytest.raises(SwregError) as info:
        accounts_service.activate(first)
    assert refusal(info) == "activation_invalid"
    with pytest.raises(SwregError) as info:  # nothing to activate any more
        accounts_service.send_activation("ming@example.com")
    assert refusal(info) == "invalid_value"


@pytest.mark.parametrize(
    "token",
    [
        "",  # empty
        "x" * 43,  # the right shape, never issued
        f"{ORIGIN}/activate/unknown",  # a link with an unknown token
    ],
)
def test_unknown_tokens(app: App, token: str) -> None:
    with pytest.raises(SwregError) as info:
        service(app, _ListMailer([])).activate(token)
    assert refusal(info) == "activation_invalid"


def test_unknown_account_is_refused(app: App) -> None:
    with pytest.raises(SwregError) as info:
        service(app, _ListMailer([])).send_activation("nobody@example.com")
    assert refusal(info) == "invalid_value"


def test_mail_failure_does_not_undo_the_registration(
    app: App, pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    down = SmtpMailer(MailSettings(host="127.0.0.1", port=free_port()), timeout=2)
    accounts_service = use(app, service(app, down))
    with caplog.at_level(logging.WARNING, logger="swreg.mail"):
        view = enrol(app, "person.general", pki.issue_person("王小明", "6789"), PERSON_ANSWERS)
    assert view.state == "completed"
    assert status(app, "ming@example.com") == "pending_activation"
    assert "m**g@example.com" in caplog.text
    assert "ming@example.com" not in caplog.text
    with pytest.raises(EnvironmentProblem):  # called directly, the failure is reported
        accounts_service.send_activation("ming@example.com")


def test_link_parsing() -> None:
    assert link_token(" abc ") == "abc"
    assert link_token(f"{ORIGIN}/activate/abc") == "abc"
    assert link_token(f"{ORIGIN}/activate/abc/?utm=1#x") == "abc"


class _ListMailer:
    """Keeps messages in a list (a fake at our own seam)."""

    def __init__(self, sent: list[object]) -> None:
        self.sent = sent

    def send(self, message: object) -> None:
        self.sent.append(message)
