"""SSRF-safe fetching (DESIGN.md §4a) against a real local HTTP server, and its settings."""

from __future__ import annotations

import http.server
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine._errors import UsageError
from engine._settings import FetchHosts, RevocationPolicy, Settings, parse_duration
from engine.services.fetching import (
    MAX_OCSP_BYTES,
    OCSP_REQUEST,
    Fetcher,
    FetchOutcome,
    Validators,
)
from engine.testing.http_server import LocalHTTPServer
from engine.testing.ports import free_port

BODY = bytes(range(256)) * 64  # 16 KiB
LOOPBACK = FetchHosts.parse("127.0.0.1,localhost")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer(hang_seconds=10, drip_interval=0.05) as running:
        running.serve("/crl/ok.crl", BODY, etag='"v1"', last_modified=1_700_000_000)
        running.serve("/crl/truncated.crl", BODY, misbehaviour="truncate")
        running.serve("/crl/hang.crl", BODY, misbehaviour="hang")
        running.serve("/crl/drip.crl", BODY, misbehaviour="drip")
        running.serve("/crl/chunked.crl", BODY, misbehaviour="chunked")
        running.serve("/crl/no-length.crl", BODY, misbehaviour="no_length")
        running.serve("/crl/short-length.crl", BODY, misbehaviour="short_length")
        running.redirect("/to-other-host", running.url("/crl/ok.crl", host="localhost"))
        running.redirect("/to-same-host", "/crl/ok.crl")
        running.redirect("/to-same-host-absolute", running.url("/to-same-host"))
        running.redirect("/loop", "/loop")
        running.redirect("/to-ftp", "ftp://127.0.0.1/x.crl")
        running.status("/missing-500", 500)
        running.answer_posts(
            "/ocsp",
            lambda body, headers: (200, "application/ocsp-response", b"answer:" + body),
        )
        running.redirect("/ocsp-moved", "/ocsp", status=307)
        running.redirect("/ocsp-303", "/ocsp", status=303)
        yield running


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(LOOPBACK) as client:
        yield client


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert str(settings.fetch_hosts) == "*.nat.gov.tw,*.moi.gov.tw"
    assert settings.revocation_policy is RevocationPolicy.HARD
    assert settings.ocsp_timeout == timedelta(seconds=3)
    assert settings.ocsp_max_age == timedelta(hours=1)
    assert settings.crl_grace == timedelta(hours=6)


def test_settings_from_environment() -> None:
    settings = Settings.from_env(
        {
            "SWREG_FETCH_HOSTS": " crl.example.org , *.Example.COM,10.0.0.1,[::1]",
            "SWREG_REVOCATION_POLICY": "soft",
            "SWREG_OCSP_TIMEOUT": "5",
            "SWREG_OCSP_MAX_AGE": "15m",
            "SWREG_CRL_GRACE": "0",
        }
    )
    assert settings.fetch_hosts.allows("crl.example.org")
    assert settings.fetch_hosts.allows("a.b.example.com")
    assert settings.fetch_hosts.allows("::1") and settings.fetch_hosts.allows("[::1]")
    assert settings.revocation_policy is RevocationPolicy.SOFT
    assert settings.ocsp_timeout == timedelta(seconds=5)
    assert settings.ocsp_max_age == timedelta(minutes=15)
    assert settings.crl_grace == timedelta(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("6h", timedelta(hours=6)),
        ("2d", timedelta(days=2)),
        ("45", timedelta(seconds=45)),  # a bare integer is seconds
        (" 7H ", timedelta(hours=7)),  # spaces and case forgiven
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "SWREG_X") == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SWREG_OCSP_TIMEOUT", "3 s"),  # no space inside
        ("SWREG_OCSP_TIMEOUT", "1.5s"),  # integers only
        ("SWREG_OCSP_TIMEOUT", "0"),  # a timeout of nothing
        ("SWREG_OCSP_MAX_AGE", "1w"),  # no weeks
        ("SWREG_OCSP_MAX_AGE", "-5m"),
        ("SWREG_CRL_GRACE", "six hours"),
        ("SWREG_CRL_GRACE", "99999999999d"),  # too many digits
        ("SWREG_REVOCATION_POLICY", "lenient"),
        ("SWREG_FETCH_HOSTS", "*"),  # allow-all is not a pattern
        ("SWREG_FETCH_HOSTS", "*.nat.gov.tw,crl.example.org:80"),  # no ports
        ("SWREG_FETCH_HOSTS", "crl.*.gov.tw"),  # wildcards only in front
        ("SWREG_FETCH_HOSTS", "**.gov.tw"),
        ("SWREG_FETCH_HOSTS", "http://crl.example.org/"),  # a URL is not a host
        ("SWREG_FETCH_HOSTS", "bad_host.example"),
    ],
)
def test_bad_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(UsageError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.detail is not None and variable in caught.value.detail


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("moica.nat.gov.tw", True),  # one level under the suffix
        ("a.b.crl.nat.gov.tw", True),  # any depth
        ("MOICA.NAT.GOV.TW", True),  # case-insensitive
        ("moica.nat.gov.tw.", True),  # the root dot
        ("nat.gov.tw", False),  # not the suffix itself
        ("evilnat.gov.tw", False),  # a label boundary, not a string suffix
        ("nat.gov.tw.evil.example", False),
        ("moi.gov.tw", False),
        ("ocsp-moica.moi.gov.tw", True),
        ("127.0.0.1", False),  # addresses only when listed
        ("", False),
    ],
)
def test_default_allow_list(host: str, allowed: bool) -> None:
    assert Settings.from_env({}).fetch_hosts.allows(host) is allowed


def test_exact_names_and_addresses() -> None:
    hosts = FetchHosts.parse("crl.example.org,192.0.2.7,2001:db8::1,*.1")
    assert hosts.allows("crl.example.org")
    assert not hosts.allows("www.crl.example.org")  # exact means exact
    assert hosts.allows("192.0.2.7") and not hosts.allows("192.0.2.8")
    assert hosts.allows("[2001:DB8:0::1]")  # compared as addresses
    assert not hosts.allows("10.0.0.1")  # '*.1' is a name suffix: never matches an address


# -- the allow-list at the fetcher ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "outcome"),
    [
        ("http://crl.example.org/a.crl", FetchOutcome.HOST_NOT_ALLOWED),
        ("http://127.0.0.2/a.crl", FetchOutcome.HOST_NOT_ALLOWED),  # another loopback address
        ("ftp://127.0.0.1/a.crl", FetchOutcome.URL_NOT_ALLOWED),
        ("file:///etc/passwd", FetchOutcome.URL_NOT_ALLOWED),
        ("http://user:secret@127.0.0.1/a.crl", FetchOutcome.URL_NOT_ALLOWED),
        ("not a url", FetchOutcome.URL_NOT_ALLOWED),
    ],
)
def test_refused_urls_send_nothing(
    fetcher: Fetcher, server: LocalHTTPServer, url: str, outcome: FetchOutcome
) -> None:
    before = len(server.requests)
    result = fetcher.get(url, max_bytes=1024, timeout=2)
    assert result.outcome is outcome and result.body is None and not result.ok
    assert fetcher.allows(url) is outcome
    assert len(server.requests) == before


def test_port_is_not_part_of_the_match(server: LocalHTTPServer) -> None:
    with Fetcher(FetchHosts.parse("127.0.0.1")) as fetcher:
        result = fetcher.get(server.url("/crl/ok.crl"), max_bytes=len(BODY), timeout=5)
    assert result.outcome is FetchOutcome.FETCHED and result.body == BODY


def test_wildcard_does_not_allow_the_suffix_itself(server: LocalHTTPServer) -> None:
    with Fetcher(FetchHosts.parse("*.localhost")) as fetcher:
        result = fetcher.get(server.url("/crl/ok.crl", host="localhost"), max_bytes=1, timeout=2)
    assert result.outcome is FetchOutcome.HOST_NOT_ALLOWED


# -- fetching ------------------------------------------------------------------------------------


def test_get_and_validators(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    result = fetcher.get(server.url("/crl/ok.crl"), max_bytes=len(BODY), timeout=5)
    assert result.outcome is FetchOutcome.FETCHED and result.status == 200
    assert result.body == BODY and result.size == len(BODY)
    assert result.validators == Validators('"v1"', "Tue, 14 Nov 2023 22:13:20 GMT")
    assert result.content_type == "application/pkix-crl"


def test_conditional_get_with_etag_is_not_modified(
    fetcher: Fetcher, server: LocalHTTPServer
) -> None:
    result = fetcher.get(
        server.url("/crl/ok.crl"), max_bytes=len(BODY), timeout=5, validators=Validators('"v1"')
    )
    assert result.outcome is FetchOutcome.NOT_MODIFIED and result.ok and result.status == 304
    assert result.validators.etag == '"v1"' and result.body is None
    assert server.requests[-1].headers["If-None-Match"] == '"v1"'


def test_conditional_get_with_date_and_a_changed_etag(
    fetcher: Fetcher, server: LocalHTTPServer
) -> None:
    since = Validators(last_modified="Tue, 14 Nov 2023 22:13:20 GMT")
    result = fetcher.get(
        server.url("/crl/ok.crl"), max_bytes=len(BODY), timeout=5, validators=since
    )
    assert result.outcome is FetchOutcome.NOT_MODIFIED
    assert server.requests[-1].headers["If-Modified-Since"] == since.last_modified
    changed = fetcher.get(
        server.url("/crl/ok.crl"), max_bytes=len(BODY), timeout=5, validators=Validators('"v0"')
    )
    assert changed.outcome is FetchOutcome.FETCHED and changed.body == BODY


def test_download_streams_into_a_temporary_file(
    fetcher: Fetcher, server: LocalHTTPServer, tmp_path: Path
) -> None:
    with fetcher.download(server.url("/crl/ok.crl"), timeout=5, directory=tmp_path) as result:
        assert result.outcome is FetchOutcome.FETCHED and result.path is not None
        assert result.path.read_bytes() == BODY and result.body is None
        assert result.path.stat().st_mode & 0o077 == 0
    assert list(tmp_path.iterdir()) == []  # removed after the block


def test_download_refused_leaves_no_file(
    fetcher: Fetcher, server: LocalHTTPServer, tmp_path: Path
) -> None:
    url = server.url("/crl/chunked.crl")
    with fetcher.download(url, max_bytes=1000, timeout=5, directory=tmp_path) as result:
        assert result.outcome is FetchOutcome.TOO_LARGE and result.path is None
        assert list(tmp_path.iterdir()) == []


def test_redirect_to_another_host_is_refused(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    result = fetcher.get(server.url("/to-other-host"), max_bytes=len(BODY), timeout=5)
    assert result.outcome is FetchOutcome.REDIRECT_TO_OTHER_HOST and result.status == 302
    assert server.requests[-1].path == "/to-other-host"  # localhost was never asked


def test_same_host_redirects_are_followed(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    result = fetcher.get(server.url("/to-same-host-absolute"), max_bytes=len(BODY), timeout=5)
    assert result.outcome is FetchOutcome.FETCHED and result.body == BODY
    assert result.url == server.url("/crl/ok.crl")


def test_redirect_loops_and_other_schemes_stop(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    loop = fetcher.get(server.url("/loop"), max_bytes=len(BODY), timeout=5)
    assert loop.outcome is FetchOutcome.TOO_MANY_REDIRECTS
    assert sum(r.path == "/loop" for r in server.requests) == 4  # the first ask and 3 redirects
    ftp = fetcher.get(server.url("/to-ftp"), max_bytes=len(BODY), timeout=5)
    assert ftp.outcome is FetchOutcome.URL_NOT_ALLOWED


def test_oversized_body_with_an_honest_content_length(
    fetcher: Fetcher, server: LocalHTTPServer
) -> None:
    result = fetcher.get(server.url("/crl/ok.crl"), max_bytes=len(BODY) - 1, timeout=5)
    assert result.outcome is FetchOutcome.TOO_LARGE and "Content-Length" in result.detail


@pytest.mark.parametrize("path", ["/crl/chunked.crl", "/crl/no-length.crl"])
def test_oversized_body_without_content_length(
    fetcher: Fetcher, server: LocalHTTPServer, path: str
) -> None:
    result = fetcher.get(server.url(path), max_bytes=len(BODY) - 1, timeout=5)
    assert result.outcome is FetchOutcome.TOO_LARGE and "body" in result.detail
    whole = fetcher.get(server.url(path), max_bytes=len(BODY), timeout=5)
    assert whole.outcome is FetchOutcome.FETCHED and whole.body == BODY


def test_a_content_length_that_lies_low_never_delivers_more(
    fetcher: Fetcher, server: LocalHTTPServer
) -> None:
    result = fetcher.get(server.url("/crl/short-length.crl"), max_bytes=len(BODY), timeout=5)
    # only the announced half is read (the CRL parser then refuses it as cut short)
    assert result.outcome is FetchOutcome.FETCHED and result.body == BODY[: len(BODY) // 2]


def test_truncated_download(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    result = fetcher.get(server.url("/crl/truncated.crl"), max_bytes=len(BODY), timeout=5)
    assert result.outcome is FetchOutcome.TRUNCATED and result.body is None


def test_server_that_hangs_times_out(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    started = time.monotonic()
    result = fetcher.get(server.url("/crl/hang.crl"), max_bytes=len(BODY), timeout=0.5)
    assert result.outcome is FetchOutcome.TIMEOUT
    assert time.monotonic() - started < 3


def test_slow_drip_hits_the_total_limit(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    started = time.monotonic()  # each byte comes well within a read timeout, the whole does not
    result = fetcher.get(server.url("/crl/drip.crl"), max_bytes=len(BODY), timeout=0.5)
    assert result.outcome is FetchOutcome.TIMEOUT and "total" in result.detail
    assert time.monotonic() - started < 3


def test_connection_refused() -> None:
    port = free_port()  # nobody listens there
    with Fetcher(LOOPBACK) as fetcher:
        result = fetcher.get(f"http://127.0.0.1:{port}/x.crl", max_bytes=10, timeout=2)
    assert result.outcome is FetchOutcome.CONNECTION_ERROR


@pytest.mark.parametrize(("path", "status"), [("/nothing-here", 404), ("/missing-500", 500)])
def test_http_status(fetcher: Fetcher, server: LocalHTTPServer, path: str, status: int) -> None:
    result = fetcher.get(server.url(path), max_bytes=len(BODY), timeout=5)
    assert result.outcome is FetchOutcome.HTTP_STATUS and result.status == status


def test_post_an_ocsp_request(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    result = fetcher.post(server.url("/ocsp"), b"\x30\x03\x02\x01\x01", timeout=3)
    assert result.outcome is FetchOutcome.FETCHED
    assert result.body == b"answer:\x30\x03\x02\x01\x01"
    assert result.content_type == "application/ocsp-response"
    sent = server.requests[-1]
    assert (sent.method, sent.headers["Content-Type"]) == ("POST", OCSP_REQUEST)
    assert sent.headers["Accept"] == "application/ocsp-response"


def test_post_follows_only_method_keeping_redirects(
    fetcher: Fetcher, server: LocalHTTPServer
) -> None:
    kept = fetcher.post(server.url("/ocsp-moved"), b"abc", timeout=3)
    assert kept.outcome is FetchOutcome.FETCHED and kept.body == b"answer:abc"
    changed = fetcher.post(server.url("/ocsp-303"), b"abc", timeout=3)
    assert changed.outcome is FetchOutcome.HTTP_STATUS and changed.status == 303


def test_post_answer_size_is_limited(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    result = fetcher.post(server.url("/ocsp"), b"x" * MAX_OCSP_BYTES, timeout=3)
    assert result.outcome is FetchOutcome.TOO_LARGE


# -- https: one TLS context for every fetcher, still verifying ----------------------------------


@pytest.fixture(scope="module")
def untrusted_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate (trusted by nobody)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
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
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_every_fetcher_verifies_the_server_certificate(untrusted_tls_server: int) -> None:
    url = f"https://127.0.0.1:{untrusted_tls_server}/x.crl"
    for _ in range(2):  # the shared TLS context is not weakened by being shared
        with Fetcher(LOOPBACK) as fetcher:
            result = fetcher.get(url, max_bytes=10, timeout=5)
        assert result.outcome is FetchOutcome.CONNECTION_ERROR
        assert "CERTIFICATE_VERIFY_FAILED" in result.detail


def test_no_cookie_is_kept_between_requests() -> None:
    sent: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            sent.append(self.headers.get("Cookie"))
            self.send_response(200)
            self.send_header("Set-Cookie", "track=1; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.crl"
        with Fetcher(LOOPBACK) as fetcher:  # one fetcher, many requests (as OcspService's)
            for _ in range(3):
                assert fetcher.get(url, max_bytes=10, timeout=5).outcome is FetchOutcome.FETCHED
    finally:
        server.shutdown()
        server.server_close()
    assert sent == [None, None, None]
