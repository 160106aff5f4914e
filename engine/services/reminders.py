"""Expiry reminders (憑證逾期提醒): one mail per certificate that expires within a window.

The completion page tells applicants 「請注意[自然人憑證/工商憑證]逾期前60天…於本站[憑證更換作業]
進行憑證更新」 (DESIGN.md §5, DOMAIN.md §3.3–3.4: cards are renewed in the 60 days before expiry).
:meth:`ReminderService.send_due` mails each owner of an active certificate whose ``not_after``
lies within ``days`` (and is still in the future) exactly once per window::

    collect   active certificates expiring in (now, now + days] without this window's reminder
              (or with one never sent and claimed over ``retry_after`` ago, default 10 min);
              the recipient is the certificate's account, or for a signing certificate without
              one the company account of its UBN; none (or no e-mail) → skipped, counted
    claim     per certificate, its own short transaction: INSERT ... ON CONFLICT DO NOTHING into
              ``reminders`` (a retry: UPDATE ... WHERE sent_at IS NULL AND claimed_at < ?);
              only the process whose statement took effect goes on
    send      the bilingual mail, with a link to ``{public_origin}/renewal``
    record    sent_at = now and the audit row ``reminder_sent`` (e-mail masked), one transaction

Safe to run from cron on several machines at once: the database decides who sends. A send that
fails is reported (``ReminderRun.failed``, a warning in the log) and left claimed with
``sent_at`` NULL; a later run retries it once ``retry_after`` has passed since its claim (so a
run still busy sending is never doubled). Delivery is at least once: should recording
``sent_at`` fail after the mail went out, the retry mails it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError, SwregError
from engine._settings import MailSettings
from engine.core.identifiers import mask_email
from engine.core.step_data import masked_diff
from engine.services.accounts import ACTIVE, PENDING
from engine.services.mail import TAIPEI, Mailer, MailLanguage, bilingual_message
from engine.store import Account, Certificate, Database, UnitOfWork

log = logging.getLogger("swreg.reminders")

DEFAULT_WINDOW_DAYS = 60
RETRY_AFTER = timedelta(minutes=10)
"""An unsent reminder is claimed again only this long after its last claim."""

RENEWAL_PATH = "/renewal"
REMINDED_STATUSES = frozenset({ACTIVE, PENDING})


@dataclass(frozen=True, slots=True)
class ReminderRun:
    """What one run did: reminders ``claimed`` by this run, of them ``sent`` and ``failed``;
    ``skipped``: due certificates with no account or e-mail to write to."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class DueReminder:
    """Everything one reminder needs, read before the claim (no ORM object leaves a session)."""

    certificate_id: int
    fingerprint: str
    purpose: str
    serial: str
    subject: str
    not_after: datetime
    account: str
    applicant_type: str
    email: str


class ReminderService:
    """Sends the expiry reminders that are due (module docstring)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        mailer: Mailer,
        *,
        public_origin: str,
        sender: str = MailSettings.sender,
        language: MailLanguage = "zh-TW",
        retry_after: timedelta = RETRY_AFTER,
    ) -> None:
        self._database = database
        self._clock = clock
        self._mailer = mailer
        self._link = public_origin.rstrip("/") + RENEWAL_PATH
        self._sender = sender
        self._language: MailLanguage = language
        self._retry_after = retry_after

    def send_due(self, *, days: int = DEFAULT_WINDOW_DAYS, actor: str = "cli") -> ReminderRun:
        """Mail every reminder due for the ``days`` window once (module docstring)."""
        if days < 1:
            raise RefusedError(ErrorCode.INVALID_VALUE, field="days", detail="at least 1 day")
        due, skipped = self._collect(days)
        claimed = sent = failed = 0
        for item in due:
            if not self._claim(item, days):
                continue  # another run has it (or sent it meanwhile)
            claimed += 1
            if self._deliver(item, days, actor):
                sent += 1
            else:
                failed += 1
        return ReminderRun(claimed=claimed, sent=sent, failed=failed, skipped=skipped)

    def _collect(self, days: int) -> tuple[list[DueReminder], int]:
        """The due reminders with their recipients, and how many due ones have none."""
        now = self._clock.now()
        found: list[DueReminder] = []
        skipped = 0
        with self._database.unit_of_work() as uow:
            certificates = uow.reminders.due(
                now=now, until=now + timedelta(days=days), window_days=days,
                retry_before=now - self._retry_after,
            )  # fmt: skip
            for certificate in certificates:
                account = _recipient(uow, certificate)
                if account is None:
                    skipped += 1
                    continue
                found.append(_due(certificate, account))
        return found, skipped

    def _claim(self, item: DueReminder, days: int) -> bool:
        """Claim the reminder in its own short transaction; True only for the one claimant."""
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            reminders = uow.reminders
            won = reminders.claim(item.certificate_id, days, now) or reminders.reclaim(
                item.certificate_id, days, now, claimed_before=now - self._retry_after
            )
            uow.commit()
        return won

    def _deliver(self, item: DueReminder, days: int, actor: str) -> bool:
        """Send the mail and record it; False (logged, left unsent) when the send fails."""
        message = reminder_message(
            item, link=self._link, sender=self._sender, language=self._language,
            at=self._clock.now(),
        )  # fmt: skip
        try:
            self._mailer.send(message)
        except SwregError as exc:
            log.warning("expiry reminder of certificate %s not sent: %s", item.serial, exc)
            return False
        self._record(item, days, actor)
        return True

    def _record(self, item: DueReminder, days: int, actor: str) -> None:
        """``sent_at`` and the audit row ``reminder_sent``, in one transaction."""
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            if not uow.reminders.mark_sent(item.certificate_id, days, now):
                return  # pragma: no cover - only the claimant marks its reminder
            uow.audit.append(
                at=now,
                actor=actor,
                event="reminder_sent",
                applicant_type=item.applicant_type,
                diff={
                    **masked_diff({"account": item.account}),
                    "email": mask_email(item.email),
                    "certificate": item.fingerprint,
                    "serial": item.serial,
                    "purpose": item.purpose,
                    "not_after": item.not_after.isoformat(),
                    "window_days": days,
                },
            )
            uow.commit()


def _recipient(uow: UnitOfWork, certificate: Certificate) -> Account | None:
    """Whom to write to: the certificate's account, or the company account of its UBN.

    None when there is no such account, it has no e-mail, or it is neither active nor pending
    activation.
    """
    account: Account | None = None
    if certificate.account_id is not None:
        account = uow.accounts.get(certificate.account_id)
    elif certificate.ubn:
        account = uow.accounts.owner_of_ubn(certificate.ubn)
    if account is None or not account.email or account.status not in REMINDED_STATUSES:
        return None
    return account


def _due(certificate: Certificate, account: Account) -> DueReminder:
    return DueReminder(
        certificate_id=certificate.id,
        fingerprint=certificate.fingerprint,
        purpose=certificate.purpose,
        serial=certificate.serial_hex,
        subject=certificate.subject,
        not_after=certificate.not_after,
        account=account.name,
        applicant_type=account.applicant_type,
        email=account.email,
    )


# -- the mail ----------------------------------------------------------------------------------


def reminder_message(
    item: DueReminder,
    *,
    link: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime,
) -> EmailMessage:
    """The bilingual expiry reminder (plain text, UTF-8, base64), naming the certificate.

    Times are shown in Taiwan time. ``language`` decides which half comes first. Pure: no I/O.
    """
    expires = item.not_after.astimezone(TAIPEI)
    day = expires.strftime("%Y/%m/%d")
    when = expires.strftime("%Y/%m/%d %H:%M")
    left = max(0, (item.not_after - at).days)
    zh, en = _zh_body(item, link, when, left), _en_body(item, link, when, left)
    return bilingual_message(
        subject=f"關港貿單一窗口憑證將於{day}到期 / Your certificate expires on {day}",
        zh=zh, en=en, to=item.email, sender=sender, language=language, at=at,
    )  # fmt: skip


def _zh_body(item: DueReminder, link: str, when: str, left: int) -> str:
    kind = "登入用憑證" if item.purpose == "login" else "簽章用憑證（通關憑證）"
    return (
        "您好：\n\n"
        f"您在關港貿單一窗口帳號「{item.account}」的{kind}將於 {when}（臺灣時間）到期，"
        f"距今約 {left} 天：\n\n"
        f"  憑證序號：{item.serial}\n"
        f"  憑證主旨：{item.subject}\n"
        f"  有效期限：{when}\n\n"
        "請於逾期前進行憑證展延或重新申請，並於本站[憑證更換作業]進行憑證更新：\n\n"
        f"{link}\n\n"
        "本信由系統自動發送，請勿直接回覆。\n"
    )


def _en_body(item: DueReminder, link: str, when: str, left: int) -> str:
    kind = "login certificate" if item.purpose == "login" else "signing (customs) certificate"
    return (
        "Hello,\n\n"
        f"The {kind} of your Single Window account {item.account} expires on {when} "
        f"(Taiwan time), in about {left} days:\n\n"
        f"  Serial number: {item.serial}\n"
        f"  Subject:       {item.subject}\n"
        f"  Valid until:   {when}\n\n"
        "Renew or replace the certificate before then, and bind the new one to your account\n"
        "under [Certificate renewal]:\n\n"
        f"{link}\n\n"
        "This message was sent automatically; please do not reply.\n"
    )
