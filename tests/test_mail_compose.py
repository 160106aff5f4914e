"""The activation mail as composed by :func:`activation_message`, against the old composition.

``old_activation_message`` is the implementation before the mail was composed without
re-parsing every header (``message[name] = value`` and ``set_content``); it is the oracle: the
new message must read, decode and serialise exactly as the old one did.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest

from engine import _mail
from engine._mail import (
    ACTIVATION_SUBJECT,
    MailLanguage,
    NullMailer,
    OutboxMailer,
    activation_message,
)

AT = datetime(2025, 3, 1, 1, 2, 3, tzinfo=UTC)
SENDER = "關港貿單一窗口 <no-reply@portal.example>"
LINK = "https://portal.example/activate/abc_DEF-123"
QUERY_LINK = "https://portal.example/activate?token=abc_DEF-123&lang=zh-TW&x=%E4%B8%AD"
LANGUAGES: tuple[MailLanguage, ...] = ("zh-TW", "en")
FIXED_ID = "<174080412300.4242.1234567890123456789@portal.example>"


def old_activation_message(
    *,
    to: str,
    account: str,
    link: str,
    sender: str,
    language: MailLanguage = "zh-TW",
    at: datetime | None = None,
) -> EmailMessage:
    """The reference oracle: ``activation_message`` as it was (copied unchanged)."""
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
    parts = (zh, en) if language == "zh-TW" else (en, zh)
    message = EmailMessage()
    message["Subject"] = ACTIVATION_SUBJECT
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime((at or datetime.now(UTC)).astimezone(UTC))
    message["Message-ID"] = make_msgid(domain=_mail._domain(sender))
    message["Auto-Submitted"] = "auto-generated"
    body = "\n----------------------------------------\n\n".join(parts)
    message.set_content(body, charset="utf-8", cte="base64")
    return message


def fixed_msgid(idstring: str | None = None, domain: str | None = None) -> str:
    return f"<174080412300.4242.1234567890123456789@{domain}>"


@pytest.fixture
def same_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both compositions get the same Message-ID (built from the sender's domain)."""
    monkeypatch.setattr(_mail, "make_msgid", fixed_msgid)
    monkeypatch.setattr(sys.modules[__name__], "make_msgid", fixed_msgid)


def both(language: MailLanguage = "zh-TW", **over: str) -> tuple[EmailMessage, EmailMessage]:
    values = {"to": "ming@example.com", "account": "ming@example.com", "link": LINK}
    values["sender"] = SENDER
    values.update(over)
    new = activation_message(**values, language=language, at=AT)  # type: ignore[arg-type]
    old = old_activation_message(**values, language=language, at=AT)  # type: ignore[arg-type]
    return new, old


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default, _class=EmailMessage).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def content(message: EmailMessage) -> str:
    text = message.get_content()
    assert isinstance(text, str)
    return text


def headers(message: EmailMessage) -> list[tuple[str, str, str]]:
    """(name, value as read, kind of header object) of every header, in order."""
    return [(name, str(value), type(value).__name__) for name, value in message.items()]


CASES = {
    "plain": {},
    "non-ascii account": {"account": "陳小明（Chen）"},
    "link with query": {"link": QUERY_LINK},
    "ascii sender": {"sender": "no-reply@portal.example"},
    "named sender": {"sender": "Single Window <no-reply@sw.example>"},
    "sender without domain": {"sender": "swreg"},
    "to with display name": {"to": "陳小明 <ming@example.com>"},
    "to with a chinese domain": {"to": "ming@中文.tw"},
    "to with an encoded word": {"to": "=?utf-8?q?x?=@example.com"},
    "to malformed": {"to": "<ming@example.com"},
    "to long": {"to": "a" * 64 + "@" + "sub." * 10 + "example.com"},
    "to with atext": {"to": "o'brien+tag_1.x-y{z}@mail-1.example.co"},
}


# --- against the old composition ------------------------------------------------------------


@pytest.mark.usefixtures("same_ids")
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("case", CASES)
def test_identical_to_the_old_composition(case: str, language: MailLanguage) -> None:
    new, old = both(language, **CASES[case])
    assert isinstance(new, EmailMessage)
    assert new.policy is policy.default
    assert headers(new) == headers(old)
    assert content(new) == content(old)
    assert new.get_payload() == old.get_payload()
    assert new.as_bytes(policy=policy.SMTP) == old.as_bytes(policy=policy.SMTP)  # smtplib
    assert new.as_bytes() == old.as_bytes()
    assert new.as_string() == old.as_string()
    assert headers(parse(new.as_bytes(policy=policy.SMTP))) == headers(
        parse(old.as_bytes(policy=policy.SMTP))
    )


def test_header_set_matches_the_old_one() -> None:
    new, old = both()
    assert new.keys() == old.keys() == [
        "Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted",
        "Content-Type", "Content-Transfer-Encoding", "MIME-Version",
    ]  # fmt: skip


# --- the composed message -------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_round_trip_keeps_every_header_and_the_body(language: MailLanguage) -> None:
    message = activation_message(
        to="ming@example.com", account="陳小明", link=QUERY_LINK, sender=SENDER,
        language=language, at=AT,
    )  # fmt: skip
    read = parse(message.as_bytes(policy=policy.SMTP))
    assert read["Subject"] == ACTIVATION_SUBJECT
    assert read["From"] == SENDER
    assert read["To"] == "ming@example.com"
    assert read["Date"] == "Sat, 01 Mar 2025 01:02:03 +0000"
    assert read["Date"].datetime == AT
    assert read["Message-ID"] == message["Message-ID"]
    assert re.fullmatch(r"<[0-9.]+@portal\.example>", str(read["Message-ID"]))
    assert read["Auto-Submitted"] == "auto-generated"
    assert read["MIME-Version"] == "1.0"
    assert read["Content-Type"] == 'text/plain; charset="utf-8"'
    assert read.get_content_type() == "text/plain"
    assert read.get_content_charset() == "utf-8"
    assert read["Content-Transfer-Encoding"] == "base64"
    text = content(read)
    assert text == content(message)
    assert text.count(QUERY_LINK) == 2
    assert "帳號為「陳小明」" in text and "your account is 陳小明." in text
    first, _, second = text.partition("\n----------------------------------------\n\n")
    assert ("請點選下列連結" in first) == (language == "zh-TW")
    assert ("Open this link" in second) == (language == "zh-TW")


def test_message_reads_as_composed() -> None:
    message = activation_message(
        to="ming@example.com", account="ming@example.com", link=LINK, sender=SENDER, at=AT
    )
    assert message["Subject"] == message.get("Subject") == ACTIVATION_SUBJECT
    assert message["From"] == SENDER
    assert message["From"].addresses[0].addr_spec == "no-reply@portal.example"
    assert message["To"] == "ming@example.com"
    assert message["To"].addresses[0].domain == "example.com"
    assert message["Date"].datetime == AT
    assert message.get_content_type() == "text/plain"
    assert message.get_params() == [("text/plain", ""), ("charset", "utf-8")]
    assert message.get_body(("plain",)) is message
    assert content(message).startswith("您好：\n\n您已完成關港貿單一窗口憑證註冊")


def test_subject_is_encoded_as_before() -> None:
    data = activation_message(to="a@b.example", account="x", link=LINK, sender=SENDER).as_bytes(
        policy=policy.SMTP
    )
    assert data.startswith(
        b"Subject: =?utf-8?b?6Zec5riv6LK/5Zau5LiA56qX5Y+j5biz6Jmf5ZWf55So?= / Account\r\n"
        b" activation\r\n"
    )
    folded = data.split(b"\r\nFrom:")[0].removeprefix(b"Subject: ").decode("ascii")
    assert str(make_header(decode_header(folded.replace("\r\n", "")))) == ACTIVATION_SUBJECT
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))


def test_shared_headers_serialise_the_same_every_time() -> None:
    """The constant headers are shared between messages; folding must not change them."""
    first = activation_message(to="a@b.example", account="x", link=LINK, sender=SENDER)
    heads = [first.as_bytes(policy=policy.SMTP).partition(b"\r\nTo:")[0] for _ in range(3)]
    second = activation_message(to="c@d.example", account="y", link=LINK, sender=SENDER)
    heads.append(second.as_bytes(policy=policy.SMTP).partition(b"\r\nTo:")[0])
    assert len(set(heads)) == 1
    assert first["Subject"] is second["Subject"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_base64_body_lines_fit_76_columns(language: MailLanguage) -> None:
    message = activation_message(
        to="ming@example.com", account="陳" * 100, link=QUERY_LINK, sender=SENDER,
        language=language,
    )  # fmt: skip
    data = message.as_bytes(policy=policy.SMTP)
    _, _, body = data.partition(b"\r\n\r\n")
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    assert all(0 < len(line) <= 76 for line in lines[:-1])
    assert all(len(line) == 76 for line in lines[:-2])
    decoded = base64.b64decode(b"".join(lines)).decode("utf-8")
    assert decoded == content(message)
    assert "陳" * 100 in decoded


def test_body_line_ends_are_normalised_as_set_content_does(same_ids: None) -> None:
    new, old = both(account="a\r\nb\rc")
    assert content(new) == content(old)
    assert new.as_bytes() == old.as_bytes()


def test_message_id_is_unique_per_call() -> None:
    ids = {
        str(
            activation_message(to="a@b.example", account="x", link=LINK, sender=SENDER)[
                "Message-ID"
            ]
        )
        for _ in range(200)
    }
    assert len(ids) == 200
    assert all(re.fullmatch(r"<[0-9.]+@portal\.example>", value) for value in ids)


def test_date_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    message = activation_message(to="a@b.example", account="x", link=LINK, sender=SENDER)
    after = datetime.now(UTC)
    assert before <= message["Date"].datetime <= after
    local = datetime(2025, 3, 1, 9, 2, 3, tzinfo=UTC).astimezone(timezone(timedelta(hours=8)))
    at_local = activation_message(to="a@b.example", account="x", link=LINK, sender=SENDER, at=local)
    assert at_local["Date"] == "Sat, 01 Mar 2025 09:02:03 +0000"


@pytest.mark.parametrize(
    "over",
    [
        {"to": "ming@example.com\r\nBcc: all@example.com"},
        {"to": "ming@example.com\nBcc: all@example.com"},
        {"to": "ming@example.com\rBcc: all@example.com"},
        {"to": "ming@example.com\u2028Bcc: all@example.com"},
        {"sender": "no-reply@portal.example\r\nBcc: all@example.com"},
    ],
)
def test_header_injection_is_refused_as_before(over: dict[str, str]) -> None:
    values = {"to": "ming@example.com", "account": "x", "link": LINK, "sender": SENDER, **over}
    with pytest.raises(ValueError):
        old_activation_message(**values)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        activation_message(**values)  # type: ignore[arg-type]


# --- the mailers take it unchanged ----------------------------------------------------------


def test_outbox_writes_what_it_wrote_before(tmp_path: Path, same_ids: None) -> None:
    new, old = both(account="陳小明", link=QUERY_LINK)
    OutboxMailer(tmp_path / "new").send(new)
    OutboxMailer(tmp_path / "old").send(old)
    [new_file] = (tmp_path / "new").glob("*.eml")
    [old_file] = (tmp_path / "old").glob("*.eml")
    assert new_file.read_bytes() == old_file.read_bytes()
    [read] = OutboxMailer(tmp_path / "new").messages()
    assert read["To"] == "ming@example.com"
    assert read["Subject"] == ACTIVATION_SUBJECT
    assert read["Message-ID"] == FIXED_ID
    assert content(read) == content(old)


def test_null_mailer_logs_the_subject(caplog: pytest.LogCaptureFixture) -> None:
    message = activation_message(to="ming@example.com", account="x", link=LINK, sender=SENDER)
    with caplog.at_level(logging.WARNING, logger="swreg.mail"):
        NullMailer().send(message)
    assert ACTIVATION_SUBJECT in caplog.text
    assert "ming@example.com" not in caplog.text
