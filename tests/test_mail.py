"""Mailers against a real SMTP server (aiosmtpd on a free loopback port) and the outbox folder.

The SMTP settings default to STARTTLS (DESIGN.md §11, issue 13): the plain sink is used with
``tls="none"`` and no login; a login goes over STARTTLS or implicit TLS only, and a relay in
front of the server records every byte the mailer sent, to show the password never left in
clear.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from engine import EnvironmentProblem, ErrorCode
from engine._settings import MailSettings
from engine.services.mail import (
    ACTIVATION_SUBJECT,
    PART_SEPARATOR,
    NullMailer,
    OutboxMailer,
    SmtpMailer,
    _parsed_message,
    activation_message,
    bilingual_message,
    make_mailer,
)
from engine.testing.ports import free_port

LINK = "https://portal.example/activate/abc_DEF-123"


class SmtpSink:
    """A real SMTP server on 127.0.0.1 that keeps every message it accepts."""

    def __init__(self, *, auth: bool = False, **server: Any) -> None:
        self.envelopes: list[Envelope] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.port = free_port()
        if auth:  # AUTH even without TLS unless asked otherwise: the mailer must not use it
            server.setdefault("auth_require_tls", False)
            server.update(authenticator=self.authenticate)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **server)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False)
        self.logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)

    @property
    def messages(self) -> list[EmailMessage]:
        parser = BytesParser(policy=policy.default)
        found = []
        for envelope in self.envelopes:
            content = envelope.original_content or b""
            message = parser.parsebytes(content)
            assert isinstance(message, EmailMessage)
            found.append(message)
        return found

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def settings(self, **over: Any) -> MailSettings:
        """Settings for this server: plain SMTP (``tls="none"``) unless ``over`` says otherwise."""
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "sender": SENDER,
            "tls": "none",
        }
        values.update(over)
        return MailSettings(**values)


SENDER = "關港貿單一窗口 <no-reply@portal.example>"


class RecordingRelay:
    """A TCP relay on a free loopback port in front of ``port``: records what clients send."""

    def __init__(self, port: int) -> None:
        self.sent = bytearray()
        self.connections = 0
        self._target = port
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self.connections += 1
            for source, target, record in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, target, record), daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data  # recorded before the server can answer it
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


def credentials_in(data: bytes, user: str, password: str) -> bool:
    """Whether ``data`` holds the password in any form smtplib's AUTH mechanisms send it."""
    forms = [
        password.encode(),
        base64.b64encode(password.encode()),  # AUTH LOGIN
        base64.b64encode(f"\0{user}\0{password}".encode()),  # AUTH PLAIN
    ]
    return any(form in data for form in forms)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def sample(to: str = "ming@example.com") -> EmailMessage:
    return activation_message(
        to=to, account="ming@example.com", link=LINK, sender=SENDER,
        at=datetime(2025, 3, 1, 1, 2, 3, tzinfo=UTC),
    )  # fmt: skip


# --- the message --------------------------------------------------------------------------


def test_activation_message_is_bilingual_utf8_with_the_link() -> None:
    message = sample()
    assert message["Subject"] == ACTIVATION_SUBJECT == "關港貿單一窗口帳號啟用 / Account activation"
    assert message["To"] == "ming@example.com"
    assert message["From"] == SENDER
    assert message["Date"] == "Sat, 01 Mar 2025 01:02:03 +0000"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    text = body(message)
    assert text.count(LINK) == 2
    assert text.index("帳號啟用") < text.index("activate the account")  # zh-TW first
    english_first = body(
        activation_message(to="a@b.example", account="x", link=LINK, sender=SENDER, language="en")
    )
    assert english_first.index("activate the account") < english_first.index("帳號啟用")


def test_header_injection_is_refused() -> None:
    for to in ("ming@example.com\r\nBcc: all@example.com", "ming@example.com\nBcc: a@b.example"):
        with pytest.raises(ValueError):
            sample(to=to)
    for boundary in ("\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"):  # splitlines' others
        for header in ("subject", "to", "sender"):
            values = {"subject": "s", "to": "a@b.example", "sender": SENDER}
            values[header] = f"Name{boundary}Bcc: all@example.com <x@y.example>"
            with pytest.raises(ValueError):
                bilingual_message(zh="", en="", **values)
    with pytest.raises(ValueError):
        bilingual_message(subject="a\r\nBcc: all@example.com", zh="", en="", to="a@b.example",
                          sender=SENDER)  # fmt: skip


_NAMES = st.text(st.sampled_from("Single Window 關港貿單一窗口 é"), max_size=30)
_ADDRESSES = st.sampled_from(["ming@example.com", "a.b+c@mail.example.tw", "noreply@x.example"])


@given(
    subject=st.one_of(  # the subjects are the code's own: words, not control characters
        st.sampled_from([ACTIVATION_SUBJECT, "x" * 120, "關港貿" * 30]),
        st.from_regex(
            r"[A-Za-z0-9關港貿單一窗口帳號啟用/()'.,:-]+( [A-Za-z0-9關港貿/.-]+){0,12}",
            fullmatch=True,
        ),
    ),
    zh=st.text(max_size=300),
    en=st.text(max_size=300),
    to=st.one_of(_ADDRESSES, st.builds("{} <{}>".format, _NAMES, _ADDRESSES)),
    sender=st.one_of(_ADDRESSES, st.builds("{} <{}>".format, _NAMES, _ADDRESSES)),
)
def test_a_mail_built_without_parsing_reads_back_as_the_parsed_one(
    subject: str, zh: str, en: str, to: str, sender: str
) -> None:
    """``bilingual_message`` stores its headers encoded and its body in base64 (no parsing):
    a receiver reads from the bytes sent what the parsing way gives, except that a subject
    outside ASCII comes back exactly as given (the parsing way's folding may double a space
    before an encoded word)."""
    at = datetime(2025, 3, 1, 1, 2, 3, tzinfo=UTC)
    fast = bilingual_message(subject=subject, zh=zh, en=en, to=to, sender=sender, at=at)
    parsed = _parsed_message(subject, PART_SEPARATOR.join((zh, en)), to, sender,
                             str(fast["Date"]), str(fast["Message-ID"]))  # fmt: skip
    read = [
        BytesParser(policy=policy.default).parsebytes(message.as_bytes(policy=policy.SMTP))
        for message in (fast, parsed)
    ]
    if subject.isascii():  # stored as it is: the library folds it when sent, either way
        assert str(read[0]["Subject"]) == str(read[1]["Subject"])
    else:
        assert str(read[0]["Subject"]) == subject
    for name in ("From", "To", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
                 "Content-Type", "Content-Transfer-Encoding"):  # fmt: skip
        assert str(read[0][name]) == str(read[1][name]), name
    assert read[0].get_content() == read[1].get_content()
    assert fast["Subject"] == subject  # read back from the message itself too


def test_a_mailbox_outside_ascii_takes_the_parsing_way() -> None:
    at = datetime(2025, 3, 1, 1, 2, 3, tzinfo=UTC)
    message = bilingual_message(
        subject="s", zh="甲", en="b", to="王 <王@例.tw>", sender=SENDER, at=at
    )
    assert message["To"].addresses[0].addr_spec == "王@例.tw"
    raw = message.as_bytes(policy=policy.SMTPUTF8)
    assert "To: 王 <王@例.tw>".encode() in raw


# --- SMTP ---------------------------------------------------------------------------------


def test_smtp_delivers_to_a_real_server(smtp_sink: SmtpSink) -> None:
    mailer = make_mailer(smtp_sink.settings())
    assert isinstance(mailer, SmtpMailer)
    mailer.send(sample())
    assert len(smtp_sink.envelopes) == 1
    envelope = smtp_sink.envelopes[0]
    assert envelope.mail_from == "no-reply@portal.example"
    assert envelope.rcpt_tos == ["ming@example.com"]
    received = smtp_sink.messages[0]
    assert received["Subject"] == ACTIVATION_SUBJECT
    assert LINK in body(received)


def test_the_default_is_starttls_and_a_server_without_it_gets_nothing(
    smtp_sink: SmtpSink,
) -> None:
    assert MailSettings().tls == MailSettings.from_env({}).tls == "starttls"
    relay = RecordingRelay(smtp_sink.port)
    try:
        settings = MailSettings(host="127.0.0.1", port=relay.port, sender=SENDER)
        with pytest.raises(EnvironmentProblem) as info:
            SmtpMailer(settings, timeout=5).send(sample())
        assert info.value.code is ErrorCode.MAIL_UNAVAILABLE
        assert "does not offer STARTTLS" in (info.value.detail or "")
        assert smtp_sink.envelopes == []
        assert b"MAIL FROM" not in relay.sent and b"ming@example.com" not in relay.sent
    finally:
        relay.close()


def test_a_login_over_plain_smtp_is_refused_before_connecting() -> None:
    sink = SmtpSink(auth=True).start()  # a server that would take AUTH in clear
    relay = RecordingRelay(sink.port)
    try:
        settings = sink.settings(port=relay.port, tls="none", user="portal", password="s3cret")
        with pytest.raises(EnvironmentProblem) as info:
            SmtpMailer(settings, timeout=5).send(sample())
        assert info.value.code is ErrorCode.MAIL_UNAVAILABLE
        assert "only sent over TLS" in (info.value.detail or "")
        assert "s3cret" not in str(info.value)
        assert (relay.connections, bytes(relay.sent)) == (0, b"")  # nothing reached the server
        assert sink.logins == [] and sink.envelopes == []
    finally:
        relay.close()
        sink.stop()


def test_starttls_not_offered_never_falls_back_to_a_clear_login() -> None:
    sink = SmtpSink(auth=True).start()  # offers AUTH, not STARTTLS
    relay = RecordingRelay(sink.port)
    try:
        settings = sink.settings(port=relay.port, tls="starttls", user="portal", password="s3cret")
        with pytest.raises(EnvironmentProblem) as info:
            SmtpMailer(settings, timeout=5).send(sample())
        assert info.value.code is ErrorCode.MAIL_UNAVAILABLE
        assert "does not offer STARTTLS" in (info.value.detail or "")
        assert relay.connections == 1
        commands = bytes(relay.sent).split(b"\r\n")
        assert [c.split(b" ")[0].upper() for c in commands] == [b"EHLO", b"QUIT", b""]
        assert not credentials_in(relay.sent, "portal", "s3cret")
        assert sink.logins == [] and sink.envelopes == []
    finally:
        relay.close()
        sink.stop()


def test_a_login_goes_over_starttls_only(tls_files: tuple[Path, Path]) -> None:
    sink = SmtpSink(
        auth=True,
        auth_require_tls=True,
        tls_context=server_context(tls_files),
        require_starttls=True,
    ).start()
    relay = RecordingRelay(sink.port)
    try:
        settings = sink.settings(port=relay.port, tls="starttls", user="portal", password="s3cret")
        SmtpMailer(settings, timeout=5, context=client_context(tls_files)).send(sample())
        assert sink.logins == [(b"portal", b"s3cret")]
        assert len(sink.envelopes) == 1
        assert b"STARTTLS" in relay.sent
        assert not credentials_in(relay.sent, "portal", "s3cret")  # it crossed encrypted
        wrong = sink.settings(port=relay.port, tls="starttls", user="portal", password="wrong")
        with pytest.raises(EnvironmentProblem) as info:
            SmtpMailer(wrong, timeout=5, context=client_context(tls_files)).send(sample())
        assert info.value.code is ErrorCode.MAIL_UNAVAILABLE
        assert "mail server unreachable" in str(info.value)
        assert len(sink.envelopes) == 1
    finally:
        relay.close()
        sink.stop()


def test_unreachable_server_is_an_environment_problem() -> None:
    port = free_port()  # nothing listens there
    mailer = SmtpMailer(MailSettings(host="127.0.0.1", port=port, tls="none"), timeout=2)
    with pytest.raises(EnvironmentProblem) as info:
        mailer.send(sample())
    assert info.value.exit_status == 3
    assert info.value.detail is not None
    assert info.value.detail.startswith(f"mail server unreachable: 127.0.0.1:{port}")
    assert isinstance(info.value.__cause__, OSError)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


def client_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files[0]))


def test_starttls_verifies_the_server(tls_files: tuple[Path, Path]) -> None:
    sink = SmtpSink(tls_context=server_context(tls_files), require_starttls=True).start()
    try:
        settings = sink.settings(tls="starttls")
        with pytest.raises(EnvironmentProblem):  # self-signed: not in the system's CAs
            SmtpMailer(settings, timeout=5).send(sample())
        assert sink.envelopes == []
        SmtpMailer(settings, timeout=5, context=client_context(tls_files)).send(sample())
        assert len(sink.envelopes) == 1
        with pytest.raises(EnvironmentProblem):  # the server insists on STARTTLS
            SmtpMailer(sink.settings(tls="none"), timeout=5).send(sample())
    finally:
        sink.stop()


def test_implicit_tls(tls_files: tuple[Path, Path]) -> None:
    sink = SmtpSink(ssl_context=server_context(tls_files)).start()
    try:
        mailer = SmtpMailer(sink.settings(tls="ssl"), timeout=5, context=client_context(tls_files))
        mailer.send(sample())
        assert [m["Subject"] for m in sink.messages] == [ACTIVATION_SUBJECT]
    finally:
        sink.stop()


# --- outbox and no mail -------------------------------------------------------------------


def test_outbox_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    mailer = make_mailer(MailSettings(outbox=folder, host="ignored.example"))
    assert isinstance(mailer, OutboxMailer)
    assert mailer.messages() == []
    mailer.send(sample("first@example.com"))
    mailer.send(sample("second@example.com"))
    files = sorted(folder.glob("*.eml"))
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        stamp, _, n = path.stem.rpartition("-")
        assert stamp.endswith("Z") and n.isdigit()
    read = mailer.messages()
    assert [m["To"] for m in read] == ["first@example.com", "second@example.com"]  # newest last
    assert read[1]["Subject"] == ACTIVATION_SUBJECT
    assert LINK in body(read[1])


def test_unwritable_outbox_is_an_environment_problem(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EnvironmentProblem) as info:
        OutboxMailer(blocker / "outbox").send(sample())
    assert info.value.detail is not None and "mail outbox not writable" in info.value.detail


def test_no_mail_configured(caplog: pytest.LogCaptureFixture) -> None:
    mailer = make_mailer(MailSettings())
    assert isinstance(mailer, NullMailer)
    with caplog.at_level(logging.WARNING, logger="swreg.mail"):
        mailer.send(sample())
    assert "no mail configured" in caplog.text
    assert "ming@example.com" not in caplog.text


def test_demo_without_mail_settings_keeps_an_outbox() -> None:
    mailer = make_mailer(MailSettings(), demo=True)
    assert isinstance(mailer, OutboxMailer)
    mailer.send(sample())
    assert [m["To"] for m in mailer.messages()] == ["ming@example.com"]
    assert stat.S_IMODE(mailer.folder.stat().st_mode) == 0o700
