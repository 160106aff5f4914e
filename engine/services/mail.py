"""Outgoing e-mail behind a narrow seam: a :class:`Mailer` sends one ``EmailMessage``.

Three mailers ship beside the protocol::

    SmtpMailer     an SMTP server (STARTTLS by default, implicit TLS, or plain without a
                   login; the password never crosses a connection without TLS)
    OutboxMailer   ``.eml`` files in a folder (the demo portal shows them; tests read them)
    NullMailer     sends nothing and says so in the log (no mail configured)

:func:`make_mailer` picks one from :class:`~engine._settings.MailSettings`;
:func:`bilingual_message` builds every mail the services send (pure, no I/O):
:func:`activation_message`, :func:`password_reset_notice` and the expiry reminders. SMTP
failures are translated into :class:`~engine.EnvironmentProblem` at this edge.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
import tempfile
from datetime import UTC, datetime
from email import policy
from email.base64mime import body_encode
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from threading import Lock
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from engine._errors import EnvironmentProblem, ErrorCode
from engine._settings import MailSettings
from engine.core.identifiers import mask_email
from engine.services import metrics

log = logging.getLogger("swreg.mail")

DEFAULT_TIMEOUT = 10.0
"""Seconds allowed for connecting to the SMTP server and for each command."""

ACTIVATION_SUBJECT = "關港貿單一窗口帳號啟用 / Account activation"
PASSWORD_RESET_SUBJECT = "關港貿單一窗口密碼已重新設定 / Your password was reset"
PASSWORD_RESET_LINK_SUBJECT = "關港貿單一窗口重設密碼 / Reset your password"
PASSWORD_CHANGED_SUBJECT = "關港貿單一窗口密碼已變更 / Your password was changed"
EMAIL_CHANGE_SUBJECT = "關港貿單一窗口電子郵件變更確認 / Confirm your new e-mail address"
EMAIL_CHANGE_NOTICE_SUBJECT = "關港貿單一窗口電子郵件變更通知 / Your e-mail address is changing"
PART_SEPARATOR = "\n----------------------------------------\n\n"
"""Between the two languages of a mail."""
TAIPEI = ZoneInfo("Asia/Taipei")
"""Times in mails are Taiwan times."""


class Mailer(Protocol):
    """Sends one message or raises :class:`~engine.EnvironmentProblem`."""

    def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Send through the SMTP server of ``settings`` (``tls``: starttls, ssl or none).

    TLS verifies the server against the system's CAs, or against ``context`` when given (a
    private CA). ``starttls`` never falls back to plain text: a server that does not offer
    STARTTLS gets nothing. Credentials (``user``) only ever cross a TLS connection: with
    ``tls="none"`` and a user set, :meth:`send` refuses before connecting. One connection per
    message: activation mail is rare.
    """

    def __init__(
        self,
        settings: MailSettings,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        context: ssl.SSLContext | None = None,
    ) -> None:
        if settings.host is None:
            raise ValueError("SmtpMailer needs MailSettings.host")
        self._settings = settings
        self._timeout = timeout
        self._context = context

    def __repr__(self) -> str:
        s = self._settings
        return f"SmtpMailer({s.host}:{s.port}, tls={s.tls}, user={'set' if s.user else None})"

    @metrics.mail_delivery
    def send(self, message: EmailMessage) -> None:
        """Deliver ``message``; connection and protocol failures, a server without STARTTLS
        (``starttls``) and a login without TLS → ``EnvironmentProblem`` (``mail_unavailable``)."""
        settings = self._settings
        host = settings.host or ""
        where = f"{host}:{settings.port}"
        if settings.user and settings.tls == "none":
            raise EnvironmentProblem(
                ErrorCode.MAIL_UNAVAILABLE,
                detail=f"mail server {where}: SWREG_SMTP_USER is set but SWREG_SMTP_TLS is none; "
                "the password is only sent over TLS (starttls or ssl); nothing was sent",
            )
        try:
            with self._connect(host) as smtp:
                if settings.tls == "starttls":
                    smtp.ehlo()
                    if not smtp.has_extn("starttls"):
                        raise _refused(f"mail server {where} does not offer STARTTLS")
                    smtp.starttls(context=self._tls_context())
                if settings.user:
                    if not isinstance(smtp.sock, ssl.SSLSocket):  # never AUTH in clear
                        raise _refused(f"mail server {where}: no TLS for the login")
                    smtp.login(settings.user, settings.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise EnvironmentProblem(
                ErrorCode.MAIL_UNAVAILABLE,
                detail=f"mail server unreachable: {where}: {_reason(exc)}",
            ) from exc

    def _connect(self, host: str) -> smtplib.SMTP:
        port = self._settings.port
        if self._settings.tls == "ssl":
            context = self._tls_context()
            return smtplib.SMTP_SSL(host, port, timeout=self._timeout, context=context)
        return smtplib.SMTP(host, port, timeout=self._timeout)

    def _tls_context(self) -> ssl.SSLContext:
        return self._context or ssl.create_default_context()


class OutboxMailer:
    """Write each message to ``folder`` as ``<timestamp>-<n>.eml`` (mode 0600).

    The demo portal lists :meth:`messages`; tests read them back. Safe for several threads of
    one process; several processes get distinct names through the exclusive create.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._lock = Lock()
        self._counter = 0

    def __repr__(self) -> str:
        return f"OutboxMailer({str(self.folder)!r})"

    @metrics.mail_delivery
    def send(self, message: EmailMessage) -> None:
        """Write ``message``; an unwritable folder → ``EnvironmentProblem``."""
        data = message.as_bytes(policy=policy.SMTP)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, path = self._create()
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise EnvironmentProblem(
                ErrorCode.MAIL_UNAVAILABLE,
                detail=f"mail outbox not writable: {self.folder}: {_reason(exc)}",
            ) from exc
        log.info("mail written to %s", path.name)

    def messages(self) -> list[EmailMessage]:
        """Every message in the folder, oldest first (newest last)."""
        if not self.folder.is_dir():
            return []
        parser = BytesParser(policy=policy.default)
        found = []
        for path in sorted(self.folder.glob("*.eml"), key=_outbox_order):
            found.append(parser.parsebytes(path.read_bytes()))
        return found

    def _create(self) -> tuple[int, Path]:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        while True:
            with self._lock:
                self._counter += 1
                n = self._counter
            path = self.folder / f"{stamp}-{n}.eml"
            try:
                return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
            except FileExistsError:
                continue


class NullMailer:
    """Sends nothing: no mail is configured. Each message logs a warning (no addresses)."""

    def __repr__(self) -> str:
        return "NullMailer()"

    def send(self, message: EmailMessage) -> None:
        metrics.mail_dropped()
        log.warning("no mail configured: dropped a message (%s)", message.get("Subject", ""))


def send_notice(mailer: Mailer, message: EmailMessage) -> bool:
    """Send a notice whose failure must not undo what it tells of (a committed change): a
    failure is logged with the masked recipient and its code only (an SMTP reply may quote the
    address) and reported as False."""
    try:
        mailer.send(message)
    except Exception as exc:  # SwregError, or a third-party mailer broke its contract
        code = getattr(exc, "code", type(exc).__name__)
        log.warning(
            "%s to %s not sent (%s)", message["Subject"], mask_email(str(message["To"])), code
        )
        return False
    return True


def make_mailer(settings: MailSettings, *, demo: bool = False) -> Mailer:
    """The outbox when one is set, else SMTP when a host is set, else a :class:`NullMailer`.

    ``demo``: with nothing configured, an :class:`OutboxMailer` in a new private temporary
    folder instead, so the demo portal can show the mail it sent.
    """
    if settings.outbox is not None:
        return OutboxMailer(settings.outbox)
    if settings.host is not None:
        return SmtpMailer(settings)
    if demo:
        return OutboxMailer(tempfile.mkdtemp(prefix="swreg-outbox-"))
    return NullMailer()


MailLanguage = Literal["zh-TW", "en"]


def activation_message(
    *,
    to: str,
    account: str,
    link: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """The bilingual activation mail (plain text, UTF-8, base64 so any relay carries it).

    ``language`` decides which half comes first (zh-TW by default, as on the Single Window's
    own pages); ``at`` is the ``Date`` header (now when omitted). Pure: no I/O.
    """
    zh = (
        "您好：\n\n"
        f"您已完成關港貿單一窗口憑證註冊，帳號為「{account}」。\n"
        "請點選下列連結進行帳號啟用：\n\n"
        f"{link}\n\n"
        "連結僅能使用一次，逾期請重新申請寄送啟用信。若您並未申請註冊，請忽略本信。\n"
    )
    en = (
        "Hello,\n\n"
        f"Your Single Window registration is complete; your account is {account}.\n"
        "Open this link to activate the account:\n\n"
        f"{link}\n\n"
        "The link works once and expires; ask for a new one if it has. If you did not register,\n"
        "ignore this message.\n"
    )
    return bilingual_message(
        subject=ACTIVATION_SUBJECT, zh=zh, en=en, to=to, sender=sender, language=language, at=at
    )


def password_reset_notice(
    *,
    to: str,
    account: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """The notice sent to the account's address after a password reset (忘記密碼). Pure: no I/O."""
    when = _taipei(at)
    zh = (
        "您好：\n\n"
        f"關港貿單一窗口帳號「{account}」的密碼已於 {when}（臺灣時間）重新設定，\n"
        "所有已登入的裝置均已登出。\n\n"
        "若這不是您本人的操作，請立即以您的憑證重新設定密碼，並聯絡客服中心。\n"
    )
    en = (
        "Hello,\n\n"
        f"The password of your Single Window account {account} was reset on\n"
        f"{when} (Taiwan time), and every session of the account was logged out.\n\n"
        "If you did not do this, reset the password again with your card now and contact the\n"
        "help desk.\n"
    )
    return bilingual_message(
        subject=PASSWORD_RESET_SUBJECT, zh=zh, en=en, to=to, sender=sender, language=language,
        at=at,
    )  # fmt: skip


def password_reset_link(
    *,
    to: str,
    account: str,
    link: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """The 忘記密碼 link (``SWREG_PASSWORD_RESET=card,email``). Pure: no I/O."""
    zh = (
        "您好：\n\n"
        f"有人為關港貿單一窗口帳號「{account}」申請以電子郵件重設密碼。\n"
        "請點選下列連結設定新密碼：\n\n"
        f"{link}\n\n"
        "連結僅能使用一次，30分鐘內有效。若您並未申請，請忽略本信，您的密碼不會變更。\n"
    )
    en = (
        "Hello,\n\n"
        f"Someone asked to reset the password of the Single Window account {account} by e-mail.\n"
        "Open this link to set a new password:\n\n"
        f"{link}\n\n"
        "The link works once, within 30 minutes. If you did not ask for it, ignore this message:\n"
        "your password stays as it is.\n"
    )
    return bilingual_message(
        subject=PASSWORD_RESET_LINK_SUBJECT, zh=zh, en=en, to=to, sender=sender,
        language=language, at=at,
    )  # fmt: skip


def password_changed_notice(
    *,
    to: str,
    account: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """The notice sent to the account's address after its owner changed the password on the
    account page. Pure: no I/O."""
    when = _taipei(at)
    zh = (
        "您好：\n\n"
        f"關港貿單一窗口帳號「{account}」的密碼已於 {when}（臺灣時間）變更，\n"
        "其他已登入的裝置均已登出。\n\n"
        "若這不是您本人的操作，請立即以您的憑證重新設定密碼（忘記密碼），並聯絡客服中心。\n"
    )
    en = (
        "Hello,\n\n"
        f"The password of your Single Window account {account} was changed on {when}\n"
        "(Taiwan time), and the account's other sessions were logged out.\n\n"
        "If you did not do this, reset the password with your card now (Forgot password) and\n"
        "contact the help desk.\n"
    )
    return bilingual_message(
        subject=PASSWORD_CHANGED_SUBJECT, zh=zh, en=en, to=to, sender=sender, language=language,
        at=at,
    )  # fmt: skip


def email_change_confirmation(
    *,
    to: str,
    account: str,
    link: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """The link that confirms a new e-mail address, sent to that new address. Pure: no I/O."""
    zh = (
        "您好：\n\n"
        f"關港貿單一窗口帳號「{account}」申請將電子郵件Email變更為本信箱。\n"
        "請點選下列連結確認變更：\n\n"
        f"{link}\n\n"
        "連結僅能使用一次，24小時內有效。若您並未申請變更，請忽略本信。\n"
    )
    en = (
        "Hello,\n\n"
        f"The Single Window account {account} asked to use this address from now on.\n"
        "Open this link to confirm the change:\n\n"
        f"{link}\n\n"
        "The link works once, within 24 hours. If you did not ask for this, ignore this message.\n"
    )
    return bilingual_message(
        subject=EMAIL_CHANGE_SUBJECT, zh=zh, en=en, to=to, sender=sender, language=language,
        at=at,
    )  # fmt: skip


def email_change_notice(
    *,
    to: str,
    account: str,
    new_address: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """The notice to the old address that a change to ``new_address`` (masked by the caller)
    was asked for. Pure: no I/O."""
    when = _taipei(at)
    zh = (
        "您好：\n\n"
        f"關港貿單一窗口帳號「{account}」於 {when}（臺灣時間）申請將電子郵件Email變更為\n"
        f"{new_address}，新信箱確認後即生效。\n\n"
        "若這不是您本人的操作，請立即以您的憑證登入並變更密碼，並聯絡客服中心。\n"
    )
    en = (
        "Hello,\n\n"
        f"On {when} (Taiwan time) the Single Window account {account} asked to change its\n"
        f"e-mail address to {new_address}; the change takes effect once that address confirms.\n\n"
        "If you did not do this, log in with your card, change the password and contact the\n"
        "help desk.\n"
    )
    return bilingual_message(
        subject=EMAIL_CHANGE_NOTICE_SUBJECT, zh=zh, en=en, to=to, sender=sender,
        language=language, at=at,
    )  # fmt: skip


def bilingual_message(
    *,
    subject: str,
    zh: str,
    en: str,
    to: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """A plain-text mail in both languages (UTF-8, base64 so any relay carries it).

    ``language`` decides which half comes first (zh-TW by default, as on the Single Window's
    own pages); ``at`` is the ``Date`` header (now when omitted). Pure: no I/O. A header value
    with a line boundary of any kind (CR, LF, VT, FF, FS… what ``str.splitlines`` splits on,
    as the mail's serializer does) is refused (``ValueError``): no header can be smuggled in.

    The headers are stored already encoded (RFC 2047) and folded, and the body already in
    base64, so neither building the mail nor sending it parses a header: about 50 µs instead
    of the 1 ms an ``EmailMessage`` spends parsing what it was handed. Reading a
    header back parses it then, as always. An address with characters outside ASCII (an
    internationalised mailbox) takes the parsing way.
    """
    parts = (zh, en) if language == "zh-TW" else (en, zh)
    text = PART_SEPARATOR.join(parts)
    date = format_datetime((at or datetime.now(UTC)).astimezone(UTC))
    message_id = make_msgid(domain=_domain(sender))
    if any(value.splitlines() not in ([], [value]) for value in (subject, to, sender)):
        raise ValueError("a header value may not hold a line break")  # \r, \n, \v, \x1c …
    addresses = (_encoded_address(sender), _encoded_address(to))
    if addresses[0] is None or addresses[1] is None:
        return _parsed_message(subject, text, to, sender, date, message_id)
    message = EmailMessage()
    if subject.isascii():  # as it is (a line over 78 characters is folded when sent)
        message.set_raw("Subject", subject)
    else:
        message.set_raw("Subject", Header(subject, "utf-8", header_name="Subject").encode())
    message.set_raw("From", addresses[0])
    message.set_raw("To", addresses[1])
    message.set_raw("Date", date)
    message.set_raw("Message-ID", message_id)
    message.set_raw("Auto-Submitted", "auto-generated")
    message.set_raw("Content-Type", 'text/plain; charset="utf-8"')
    message.set_raw("Content-Transfer-Encoding", "base64")
    message.set_raw("MIME-Version", "1.0")
    lines = text.encode("utf-8").splitlines()  # CR, LF, CRLF only, as set_content splits
    message.set_payload(body_encode(b"\n".join(lines) + b"\n"))
    return message


_MAILBOX = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
_NAMED = re.compile(r'([^"<>,;:@\\()\[\]]*?)\s*<(' + _MAILBOX.pattern + r")>")


def _encoded_address(value: str) -> str | None:
    """``value`` (``box@host`` or ``Name <box@host>``, the name without specials) with its
    display name encoded (RFC 2047) when it is not ASCII; None for anything else (an
    internationalised mailbox, a quoted name, a list), which takes the parsing way."""
    if _MAILBOX.fullmatch(value):
        return value
    named = _NAMED.fullmatch(value.strip())
    if named is None:
        return None
    return formataddr((named.group(1).strip(), named.group(2)), charset="utf-8")


def _parsed_message(
    subject: str, text: str, to: str, sender: str, date: str, message_id: str
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = date
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, charset="utf-8", cte="base64")
    return message


def _taipei(at: datetime | None) -> str:
    return (at or datetime.now(UTC)).astimezone(TAIPEI).strftime("%Y/%m/%d %H:%M")


def _refused(reason: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        ErrorCode.MAIL_UNAVAILABLE,
        detail=f"{reason}; nothing was sent (SWREG_SMTP_TLS=starttls never falls back to plain)",
    )


def _domain(address: str) -> str:
    domain = address.rpartition("@")[2].strip(" >")
    return domain or "swreg.invalid"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "recipient refused"  # its text lists the addresses: personal data
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        return f"{exc.smtp_code} {text}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _outbox_order(path: Path) -> tuple[str, int]:
    stamp, _, n = path.stem.rpartition("-")
    return (stamp, int(n)) if n.isdigit() else (path.stem, 0)
