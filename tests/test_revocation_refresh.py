"""``swreg crl source add|list``, ``swreg revocation refresh|status`` against a real local HTTP
server (DESIGN.md §4a): a good CRL fetched, stored and then used by ``cert inspect``; a 304 on
the next run; a newer CRL replacing the older one; a partitioned CRL; a CRL signed by the wrong
key; a stale CRL; a truncated download; a redirect to another host; a distribution point named
by a trusted CA certificate; a host outside ``SWREG_FETCH_HOSTS``; two refreshes at once."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text
from typer.testing import CliRunner

from engine import App, FixedClock, IssuerCA, bootstrap
from engine._settings import FetchHosts
from engine.cli import app as cli_app
from engine.cli.progress import CliProgress
from engine.services.revocation import RevocationService, SourceReport
from engine.testing.http_server import LocalHTTPServer
from engine.testing.pki import TestPKI

from .conftest import PKI_NOW, FreshDatabase
from .revocation_support import cli_env, der, fetching_settings, server, trust_moica

__all__ = ["server"]  # a fixture used here

PATH = "/crl/moica.crl"


class Swreg:
    """The ``swreg`` command in-process, on one database, fetching only from 127.0.0.1."""

    def __init__(self, tmp: Path, db_url: str, hosts: str = "127.0.0.1") -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.env = cli_env(db_url, hosts)

    def __call__(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(cli_app, [*args, "--json"], env=self.env)
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}

    def file(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def trust(self, certificate: x509.Certificate, *, intermediate: bool = False) -> None:
        name = f"ca-{certificate.serial_number:x}.cer"
        extra = ("--intermediate",) if intermediate else ()
        code, out = self("trust", "add", *extra, self.file(name, TestPKI.der(certificate)))
        assert (code, out["ok"]) == (0, True), out

    def trust_moica(self, pki: TestPKI) -> None:
        """Trust the test roots and keep the MOICA CA certificate as an intermediate."""
        for anchor in pki.anchors():
            self.trust(anchor)
        self.trust(pki.ca(IssuerCA.MOICA).certificate, intermediate=True)


@pytest.fixture
def swreg(tmp_path: Path, pki: TestPKI, db_url: str) -> Swreg:
    runner = Swreg(tmp_path, db_url)
    runner.trust_moica(pki)
    return runner


def crl_rows(swreg: Swreg) -> list[dict[str, Any]]:
    code, out = swreg("revocation", "status")
    assert code == 0, out
    assert out["ocsp"] == []
    return list(out["crls"])


def fetched_rows(swreg: Swreg) -> list[dict[str, Any]]:
    """The stored CRLs that came from a source (not added with ``swreg crl add``)."""
    return [row for row in crl_rows(swreg) if row["url"] is not None]


# -- the good path -------------------------------------------------------------------------------


def test_a_fetched_crl_is_stored_used_by_cert_inspect_then_304_then_replaced(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    revoked, later = pki.issue_person(), pki.issue_person()
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [revoked], number=5)), etag='"v5"')
    url = server.url(PATH)
    code, out = swreg("crl", "source", "add", url)
    assert (code, out["added"], out["source"]["origin"]) == (0, True, "manual")
    # the MOICA CA certificate is checked too, against the root's CRL (added by hand)
    root_crl = swreg.file("root.crl", der(pki.crl(pki.root, [], number=1)))
    assert swreg("crl", "add", root_crl)[0] == 0

    code, out = swreg("revocation", "refresh")
    assert (code, out["ok"]) == (0, True), out
    [source] = out["sources"]
    assert source["url"] == url
    assert (source["outcome"], source["stored"], source["fresh"]) == ("fetched", True, True)
    assert source["crl_number"] == 5 and source["next_update"] is not None

    # an existing check now sees the revocation
    code, out = swreg("cert", "inspect", swreg.file("revoked.cer", revoked.der()))
    assert (code, out["status"]) == (0, "revoked")
    code, out = swreg("cert", "inspect", swreg.file("later.cer", later.der()))
    assert (code, out["status"]) == (0, "valid")

    [row] = fetched_rows(swreg)
    assert (row["url"], row["crl_number"], row["entries"], row["fresh"]) == (url, 5, 1, True)
    assert row["partition"] is None and len(row["issuer_key_id"]) == 64
    assert 0 <= row["age_seconds"] < 3600

    # the second run asks conditionally and gets 304: nothing new is stored
    code, out = swreg("revocation", "refresh")
    assert (code, out["ok"]) == (0, True), out
    [source] = out["sources"]
    assert (source["outcome"], source["stored"], source["crl_number"]) == (
        "not_modified", False, 5,
    )  # fmt: skip
    assert server.requests[-1].headers.get("If-None-Match") == '"v5"'
    assert [r["crl_number"] for r in fetched_rows(swreg)] == [5]

    # a newer CRL replaces the older one of the same issuer key (one fetched CRL per slot)
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [revoked, later], number=6)), etag='"v6"')
    code, out = swreg("revocation", "refresh")
    assert (code, out["sources"][0]["stored"], out["sources"][0]["crl_number"]) == (0, True, 6)
    assert [(r["crl_number"], r["entries"]) for r in fetched_rows(swreg)] == [(6, 2)]
    code, out = swreg("cert", "inspect", swreg.file("later.cer", later.der()))
    assert out["status"] == "revoked"

    code, out = swreg("crl", "source", "list")
    assert [(s["url"], s["outcome"]) for s in out["sources"]] == [(url, "fetched")]


def test_a_partitioned_crl_is_stored_with_its_partition(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    card = pki.issue_person()
    part_url = server.url("/crl/MOICA-G3-10-31.crl")
    partitioned = pki.crl(IssuerCA.MOICA, [card], number=31, partition=[part_url])
    server.serve("/crl/MOICA-G3-10-31.crl", der(partitioned))
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [], number=30)))
    for url in (part_url, server.url(PATH)):
        assert swreg("crl", "source", "add", url)[0] == 0
    code, out = swreg("revocation", "refresh")
    assert (code, [s["stored"] for s in out["sources"]]) == (0, [True, True]), out
    rows = {r["crl_number"]: r for r in crl_rows(swreg)}
    assert rows[31]["partition"] == part_url and rows[31]["entries"] == 1
    assert rows[30]["partition"] is None
    assert rows[30]["issuer_key_id"] == rows[31]["issuer_key_id"]  # one issuer, two slots
    code, out = swreg("cert", "inspect", swreg.file("card.cer", card.der()))
    assert out["status"] == "revoked"


def test_a_crl_added_by_hand_and_then_fetched_is_stored_once(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    data = der(pki.crl(IssuerCA.MOICA, [pki.issue_person()], number=12))
    code, out = swreg("crl", "add", swreg.file("moica.crl", data))
    assert (code, out["added"]) == (0, True)
    [row] = crl_rows(swreg)
    assert (row["url"], row["issuer_key_id"], row["partition"]) == (None, None, None)
    server.serve(PATH, data)
    swreg("crl", "source", "add", server.url(PATH))
    code, out = swreg("revocation", "refresh")
    assert (code, out["sources"][0]["stored"], out["sources"][0]["crl_number"]) == (0, False, 12)
    [row] = crl_rows(swreg)  # the same row, now known by its issuer key and URL
    assert (row["url"], row["crl_number"]) == (server.url(PATH), 12)
    assert row["issuer_key_id"] is not None


def test_a_distribution_point_of_a_trusted_ca_certificate_is_fetched(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    # the MOICA certificate again, now naming the root's CRL as its distribution point
    moica, root = pki.ca(IssuerCA.MOICA), pki.root
    root_url = server.url("/crl/root.crl")
    builder = x509.CertificateBuilder(
        issuer_name=moica.certificate.issuer,
        subject_name=moica.certificate.subject,
        public_key=moica.certificate.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=moica.certificate.not_valid_before_utc,
        not_valid_after=moica.certificate.not_valid_after_utc,
        extensions=list(moica.certificate.extensions),
    )
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(root_url)], None, None, None)
    builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    swreg.trust(builder.sign(root.key, hashes.SHA256()), intermediate=True)
    server.serve("/crl/root.crl", der(pki.crl(root, [], number=2)))
    code, out = swreg("revocation", "refresh")
    assert code == 0, out
    [source] = out["sources"]
    assert (source["url"], source["origin"], source["stored"]) == (root_url, "ca", True)
    [row] = crl_rows(swreg)
    assert row["issuer"] == root.name.rfc4514_string()


# -- refusals ------------------------------------------------------------------------------------


def refused(out: dict[str, Any], outcome: str, code: str) -> None:
    assert out["ok"] is False
    [source] = out["sources"]
    assert (source["outcome"], source["stored"], source["fresh"]) == (outcome, False, False)
    [error] = out["errors"]
    assert (error["code"], error["outcome"], error["url"]) == (code, outcome, source["url"])


def test_a_crl_signed_by_the_wrong_key_is_refused_and_nothing_stored(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    forged = pki.crl(
        IssuerCA.MOICA, [], number=9, signing_key=ec.generate_private_key(ec.SECP256R1())
    )
    server.serve(PATH, der(forged), etag='"forged"')
    swreg("crl", "source", "add", server.url(PATH))
    code, out = swreg("revocation", "refresh")
    assert code == 1
    refused(out, "signature_invalid", "signature_invalid")
    assert crl_rows(swreg) == []
    code, out = swreg("crl", "source", "list")
    assert out["sources"][0]["outcome"] == "signature_invalid"
    # its validators were not kept: the next run fetches in full again
    swreg("revocation", "refresh")
    assert "If-None-Match" not in server.requests[-1].headers


def test_a_crl_of_an_issuer_not_in_the_trust_store_is_refused(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    server.serve(PATH, der(pki.crl(IssuerCA.XCA, [], number=1)))  # XCA is not trusted here
    swreg("crl", "source", "add", server.url(PATH))
    code, out = swreg("revocation", "refresh")
    assert code == 1
    refused(out, "unknown_issuer", "certificate_untrusted")
    assert crl_rows(swreg) == []


def test_a_stale_crl_is_kept_shown_as_stale_and_exits_1(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    card = pki.issue_person()
    stale = pki.crl(
        IssuerCA.MOICA,
        [card],
        number=3,
        this_update=PKI_NOW - timedelta(days=10),
        next_update=PKI_NOW - timedelta(days=3),
    )
    server.serve(PATH, der(stale))
    swreg("crl", "source", "add", server.url(PATH))
    code, out = swreg("revocation", "refresh")
    assert code == 1
    [source] = out["sources"]
    assert (source["outcome"], source["stored"], source["fresh"]) == ("stale", True, False)
    assert out["errors"][0]["code"] == "revocation_unknown"
    [row] = crl_rows(swreg)
    assert (row["crl_number"], row["fresh"]) == (3, False)
    code, out = swreg("cert", "inspect", swreg.file("card.cer", card.der()))
    assert out["status"] == "revoked"  # a revocation is final, even on a stale CRL


def test_a_truncated_download_is_refused(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [], number=4)), misbehaviour="truncate")
    swreg("crl", "source", "add", server.url(PATH))
    code, out = swreg("revocation", "refresh")
    assert code == 1
    refused(out, "truncated", "not_a_certificate")
    assert crl_rows(swreg) == []


def test_a_missing_crl_is_an_http_status(swreg: Swreg, server: LocalHTTPServer) -> None:
    server.status(PATH, 404)
    swreg("crl", "source", "add", server.url(PATH))
    code, out = swreg("revocation", "refresh")
    assert code == 1
    refused(out, "http_status", "revocation_unknown")


def test_a_hanging_server_times_out(
    app: App, clock: FixedClock, server: LocalHTTPServer, pki: TestPKI
) -> None:
    app.trust.add_certificate(pki.der(pki.ca(IssuerCA.MOICA).certificate), anchor=False)
    service = RevocationService(
        app.database,
        clock,
        app.trust,
        hosts=FetchHosts.parse("127.0.0.1"),
        grace=timedelta(hours=6),
        timeout=timedelta(seconds=1),
    )
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [], number=1)), misbehaviour="hang")
    service.add_source(server.url(PATH))
    report = service.refresh(actor="test")
    assert not report.ok
    assert [(s.outcome, s.stored) for s in report.sources] == [("timeout", False)]
    assert report.counts()["failed"] == 1
    assert [s for s in service.status() if s.url is not None] == []  # nothing fetched stored


def test_a_redirect_to_another_host_is_refused(
    tmp_path: Path, db_url: str, pki: TestPKI, server: LocalHTTPServer
) -> None:
    swreg = Swreg(tmp_path, db_url, hosts="127.0.0.1,localhost")  # both allowed, still refused
    swreg.trust_moica(pki)
    server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [], number=4)))
    server.redirect("/moved.crl", server.url(PATH, host="localhost"))
    swreg("crl", "source", "add", server.url("/moved.crl"))
    code, out = swreg("revocation", "refresh")
    assert code == 1
    refused(out, "redirect_to_other_host", "invalid_value")
    assert [r.path for r in server.requests] == ["/moved.crl"]
    assert crl_rows(swreg) == []


def test_crl_source_add_refuses_a_host_outside_the_allow_list_and_is_idempotent(
    swreg: Swreg, server: LocalHTTPServer
) -> None:
    for url in ("http://crl.example.com/x.crl", "ftp://127.0.0.1/x.crl", "file:///etc/passwd"):
        code, out = swreg("crl", "source", "add", url)
        assert code == 1, url
        assert (out["errors"][0]["code"], out["errors"][0]["field"]) == ("invalid_value", "url")
    assert swreg("crl", "source", "list")[1]["sources"] == []
    url = server.url(PATH)
    assert swreg("crl", "source", "add", url)[1]["added"] is True
    assert swreg("crl", "source", "add", url)[1]["added"] is False
    assert len(swreg("crl", "source", "list")[1]["sources"]) == 1


def test_a_source_whose_host_left_the_allow_list_is_reported(
    tmp_path: Path, db_url: str, server: LocalHTTPServer, swreg: Swreg
) -> None:
    swreg("crl", "source", "add", server.url(PATH))
    narrower = Swreg(tmp_path, db_url, hosts="crl.example.com")
    code, out = narrower("revocation", "refresh")
    assert code == 1
    refused(out, "host_not_allowed", "invalid_value")
    assert server.requests == []


# -- concurrency ---------------------------------------------------------------------------------


def test_two_refreshes_at_once_store_one_crl(
    fresh_database: FreshDatabase, server: LocalHTTPServer, pki: TestPKI
) -> None:
    settings = fetching_settings(fresh_database())
    first, second = bootstrap(settings), bootstrap(settings, migrate=False)
    try:
        trust_moica(first, pki)
        server.serve(PATH, der(pki.crl(IssuerCA.MOICA, [pki.issue_person()], number=8)))
        first.revocation.add_source(server.url(PATH))
        reports: list[Any] = []

        def run(app: Any) -> None:
            reports.append(app.revocation.refresh(actor="test"))

        threads = [threading.Thread(target=run, args=(a,)) for a in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(reports) == 2 and all(r.ok for r in reports)
        assert sum(r.sources[0].stored for r in reports) >= 1
        statuses = first.revocation.status()
        assert [s.crl_number for s in statuses] == [8]
        with first.database.engine.connect() as connection:
            audit = connection.execute(
                text("SELECT diff FROM audit_log WHERE event = 'revocation_refreshed'")
            ).all()
        diffs = [json.loads(d) if isinstance(d, str) else d for (d,) in audit]
        assert len(diffs) == 2
        assert all(d["sources"] == 1 and d["failed"] == 0 and d["ok"] for d in diffs)
        assert set(diffs[0]) == {
            "sources",
            "fetched",
            "not_modified",
            "stored",
            "stale",
            "failed",
            "ocsp",
            "ocsp_renewed",
            "ocsp_failed",
            "ok",
        }
        assert all(d["ocsp"] == 0 for d in diffs)  # no registered signing certificate
    finally:
        first.close()
        second.close()


# -- progress (issue 19 item 7) ------------------------------------------------------------------


def test_refresh_tells_each_crls_bytes_and_entries_on_stderr(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    """Not a terminal (cron, a pipe) and ``--json``: plain lines on stderr, the one JSON
    object alone on stdout."""
    crl = der(pki.crl(IssuerCA.MOICA, [pki.issue_person(), pki.issue_person()], number=3))
    server.serve(PATH, crl, etag='"v3"')
    url = server.url(PATH)
    assert swreg("crl", "source", "add", url)[0] == 0

    result = CliRunner().invoke(cli_app, ["revocation", "refresh", "--json"], env=swreg.env)

    [source] = json.loads(result.stdout)["sources"]
    assert (source["entries"], source["bytes"]) == (2, len(crl))
    assert result.stderr.splitlines() == [
        f"… {url}",
        f"✓ {url}: fetched, {len(crl):,} B, 2 entries",
    ]
    _, out = swreg("revocation", "refresh")  # 304: nothing downloaded, nothing counted
    assert (out["sources"][0]["outcome"], out["sources"][0]["bytes"]) == ("not_modified", None)


def test_refresh_on_a_terminal_draws_a_progress_bar(
    swreg: Swreg, server: LocalHTTPServer, pki: TestPKI
) -> None:
    """stderr a terminal (a pseudo-terminal here): rich draws the bar, then the outcome."""
    crl = der(pki.crl(IssuerCA.MOICA, [pki.issue_person()], number=4))
    server.serve(PATH, crl)
    url = server.url(PATH)
    assert swreg("crl", "source", "add", url)[0] == 0
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "swreg"), "revocation", "refresh"],
            env={**swreg.env, "COLUMNS": "200", "TERM": "xterm"},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            check=False,
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0, drawn
    screen = drawn.decode("utf-8", "replace")
    assert "\x1b[" in screen  # drawn with terminal control sequences, not plain lines
    assert f"{url}: fetched, {len(crl):,} B, 1 entries" in screen
    assert "✓ " + url not in screen  # the plain line is for non-terminals only
    assert url in done.stdout.decode()  # the summary stays on stdout


def test_plain_progress_prints_a_line_per_eight_mebibytes() -> None:
    """A large CRL in a log: a line when it starts, one per 8 MiB, one when it ends."""
    stream = io.StringIO()
    url = "http://127.0.0.1/big.crl"
    mib = 1024 * 1024
    with CliProgress(as_json=False, stream=stream) as progress:
        progress.begin(url)
        for size in (3 * mib, 7 * mib, 8 * mib, 12 * mib, 16 * mib, 17 * mib):
            progress.received(url, size)
        progress.end(SourceReport(url, "manual", "fetched", fresh=True, entries=10, size=17 * mib))
    assert stream.getvalue().splitlines() == [
        f"… {url}",
        f"… {url}: 8.0 MiB",
        f"… {url}: 16.0 MiB",
        f"✓ {url}: fetched, 17.0 MiB, 10 entries",
    ]
