"""``GET /metrics`` (DESIGN.md §11): what moves after real requests (registrations, refusals,
rate limits, CRL and OCSP fetches, Turnkey, mail), who may read it (``SWREG_METRICS_ALLOW``,
trusted proxies, a proxy left out of them, any Host), the docs' table against the code, and the
numbers of ``swreg serve --workers 2`` merged whichever worker answers.

Every answer is read with prometheus-client's own parser. The in-process tests share the
metric objects with the rest of the run, so they compare a scrape before and after; the
subprocess portal is fresh, so its numbers are exact totals.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from engine import App, FixedClock, IssuerCA, Settings, bootstrap
from engine._errors import EnvironmentProblem, ErrorCode, RefusedError, UsageError
from engine._settings import FetchHosts, MailSettings
from engine.pki.ocsp import OcspStatus
from engine.services import metrics
from engine.services.mail import NullMailer, OutboxMailer, SmtpMailer
from engine.services.ocsp import OcspSource
from engine.services.revocation import RevocationService
from engine.testing.http_server import LocalHTTPServer
from engine.testing.pki import IssuedCard, TestCA, TestPKI
from engine.testing.ports import free_port
from engine.web import create_app

from .conftest import PERSON_ANSWERS, SECRET, TestDatabases
from .processes import serve, stop_process, wait_until
from .revocation_support import OcspSetup, Responder, der, moica, ocsp_url, responder, setup
from .test_api import card_check, csrf, error, register, signed, start
from .test_turnkey import register as register_signing

__all__ = ["moica", "responder", "setup"]  # fixtures used here

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""(sample name, sorted labels) → value."""

LOOPBACK = ("127.0.0.1", 40000)
OUTSIDE = "203.0.113.7"
PROXY = "10.0.0.5"
"""A reverse proxy in ``SWREG_TRUSTED_PROXIES``: the socket peer of what came through it."""


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def parse(text: str) -> Samples:
    """Every sample of a scrape, read by prometheus-client's parser."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[key(sample.name, **sample.labels)] = sample.value
    return found


def scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == metrics.CONTENT_TYPE
    return parse(response.text)


def moved(before: Samples, after: Samples) -> Samples:
    """The counts that changed: counters and histogram counts (never a duration's sum or
    bucket, nor a ``_created`` timestamp, which depend on the clock)."""
    counted = ("_total", "_count")
    return {
        k: after[k] - before.get(k, 0.0)
        for k in after
        if k[0].endswith(counted) and after[k] != before.get(k, 0.0)
    }


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    """The portal, reached from loopback (in ``SWREG_METRICS_ALLOW`` by default)."""
    with TestClient(create_app(app), client=LOOPBACK) as test_client:
        yield test_client


@pytest.fixture
def person_card(pki: TestPKI) -> IssuedCard:
    return pki.issue_person("王小明", "6789")


# -- what moves --------------------------------------------------------------------------------


def test_a_registration_through_the_api_moves_exactly_its_counters(
    client: TestClient, person_card: IssuedCard
) -> None:
    before = scrape(client)
    view = register(client, "person.general", person_card, PERSON_ANSWERS)
    assert view["state"] == "completed"
    after = scrape(client)
    assert moved(before, after) == {
        key("swreg_registrations_started_total", type="person.general"): 1,
        key("swreg_registrations_completed_total", type="person.general"): 1,
        key("swreg_step_duration_seconds_count", step="category"): 1,
        key("swreg_step_duration_seconds_count", step="card_check"): 1,
        key("swreg_step_duration_seconds_count", step="basic_data"): 1,
        key("swreg_card_check_duration_seconds_count"): 1,
        # the card and its issuing CA, each asked of OCSP (the test PKI names no responder)
        # and of the stored CRLs
        key("swreg_revocation_answers_total", source="ocsp", status="unknown"): 2,
        key("swreg_revocation_answers_total", source="crl", status="good"): 2,
        key("swreg_mails_total", outcome="dropped"): 1,  # no mail configured in the tests
    }


def test_refused_steps_count_their_codes(client: TestClient, person_card: IssuedCard) -> None:
    view = start(client, "person.general").json()
    headers = csrf(client)
    url = f"/api/registrations/{view['id']}"
    before = scrape(client)

    challenge = client.post(f"{url}/challenge", headers=headers).json()
    forged = signed(person_card, challenge)
    forged["signature"] = base64.b64encode(person_card.sign(b"another payload")).decode()
    refused = client.post(f"{url}/card", json=forged, headers=headers)
    assert refused.status_code == 422
    assert error(refused)["code"] == "signature_invalid"
    again = client.post(f"{url}/card", json=signed(person_card, challenge), headers=headers)
    assert error(again)["code"] == "challenge_used"  # refused before any certificate check
    assert card_check(client, view["id"], person_card).status_code == 200
    bad = client.post(
        f"{url}/step", json={**PERSON_ANSWERS, "email": "not an address"}, headers=headers
    )
    assert error(bad)["code"] == "invalid_email"

    assert moved(before, scrape(client)) == {
        key("swreg_registrations_refused_total", code="signature_invalid"): 1,
        key("swreg_registrations_refused_total", code="challenge_used"): 1,
        key("swreg_registrations_refused_total", code="invalid_email"): 1,
        key("swreg_step_duration_seconds_count", step="card_check"): 3,
        key("swreg_step_duration_seconds_count", step="basic_data"): 1,
        key("swreg_card_check_duration_seconds_count"): 2,  # the forged one and the good one
        key("swreg_revocation_answers_total", source="ocsp", status="unknown"): 4,
        key("swreg_revocation_answers_total", source="crl", status="good"): 4,
    }


def test_a_rate_limited_request_counts_its_route(client: TestClient) -> None:
    before = scrape(client)
    answers = [start(client, "person.general").status_code for _ in range(21)]
    assert answers == [201] * 20 + [429]  # START_LIMIT: 20 starts per client in 10 minutes
    assert moved(before, scrape(client)) == {
        key("swreg_registrations_started_total", type="person.general"): 20,
        key("swreg_step_duration_seconds_count", step="category"): 20,
        key("swreg_rate_limited_total", route="start"): 1,
    }


def registry_samples() -> Samples:
    """This process's own values (what an in-process portal's ``/metrics`` shows)."""
    return parse(metrics.exposition().decode())


def test_crl_downloads_and_their_failures_are_counted(
    app: App, clock: FixedClock, pki: TestPKI
) -> None:
    app.trust.add_certificate(pki.der(pki.ca(IssuerCA.MOICA).certificate), anchor=False)
    service = RevocationService(
        app.database, clock, app.trust, hosts=FetchHosts.parse("127.0.0.1"),
        grace=timedelta(hours=6),
    )  # fmt: skip
    with LocalHTTPServer() as server:
        server.serve("/good.crl", der(pki.crl(IssuerCA.MOICA, [], number=1)))
        server.serve("/garbage.crl", b"not a CRL")
        server.status("/missing.crl", 404)
        for path in ("/good.crl", "/garbage.crl", "/missing.crl"):
            service.add_source(server.url(path))
        before = registry_samples()
        report = service.refresh(actor="test")
    assert sorted(s.outcome for s in report.sources) == ["fetched", "http_status", "not_a_crl"]
    assert moved(before, registry_samples()) == {
        key("swreg_revocation_fetch_duration_seconds_count", kind="crl"): 3,
        key("swreg_revocation_fetch_failures_total", kind="crl"): 2,  # garbage, 404
    }


def test_ocsp_requests_and_their_failures_are_counted(
    setup: OcspSetup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    card = pki.issue_person(ocsp_url=ocsp_url(port))
    responder(port, good=[card])
    silent = pki.issue_person(ocsp_url=ocsp_url(free_port()))  # nothing listens there
    outside = pki.issue_person(ocsp_url="http://ocsp.example/")  # not in SWREG_FETCH_HOSTS
    before = registry_samples()
    assert setup.status(card, moica).status is OcspStatus.GOOD
    assert setup.status(card, moica).source is OcspSource.CACHE  # asked once
    assert setup.status(silent, moica).problem == "connection_error"
    assert setup.status(outside, moica).problem == "host_not_allowed"  # nothing sent
    assert moved(before, registry_samples()) == {
        key("swreg_revocation_fetch_duration_seconds_count", kind="ocsp"): 2,
        key("swreg_revocation_fetch_failures_total", kind="ocsp"): 1,
    }


def test_turnkey_verifications_count_their_outcome(app: App, pki: TestPKI) -> None:
    card = pki.issue_customs("04595257", "06", key="rsa")
    register_signing(app, card, "04595257")
    before = registry_samples()
    assert app.turnkey.verify("04595257", b"message", card.sign(b"message")).sender == "04595257"
    with pytest.raises(RefusedError) as forged:
        app.turnkey.verify("04595257", b"message", card.sign(b"another message"))
    assert forged.value.code is ErrorCode.SIGNATURE_INVALID
    with pytest.raises(RefusedError) as unknown:
        app.turnkey.verify("12345675", b"message", card.sign(b"message"))
    assert unknown.value.code is ErrorCode.NOT_REGISTERED
    assert moved(before, registry_samples()) == {
        key("swreg_turnkey_verifications_total", outcome="verified"): 1,
        key("swreg_turnkey_verifications_total", outcome="signature_invalid"): 1,
        key("swreg_turnkey_verifications_total", outcome="not_registered"): 1,
        # the sender's certificate and its CA, read once when the sender's entry is filled
        key("swreg_revocation_answers_total", source="ocsp", status="unknown"): 2,
        key("swreg_revocation_answers_total", source="crl", status="good"): 2,
    }


def test_mail_sent_failed_and_dropped_are_counted(tmp_path: Path) -> None:
    message = EmailMessage()
    message["To"], message["Subject"] = "ming@example.com", "test"
    before = registry_samples()
    OutboxMailer(tmp_path / "outbox").send(message)
    closed = SmtpMailer(MailSettings(host="127.0.0.1", port=free_port(), tls="none"))
    with pytest.raises(EnvironmentProblem):
        closed.send(message)  # nothing listens there
    NullMailer().send(message)
    assert moved(before, registry_samples()) == {
        key("swreg_mails_total", outcome="sent"): 1,
        key("swreg_mails_total", outcome="failed"): 1,
        key("swreg_mails_total", outcome="dropped"): 1,
    }


def test_operations_md_lists_exactly_the_metrics() -> None:
    """docs/operations.md's table of metrics names each metric with its labels, no more."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `(swreg_\w+)` \|([^|]*)\|", doc, re.MULTILINE)
    documented = {name: sorted(re.findall(r"`(\w+)`", labels)) for name, labels in rows}
    served = {  # the metric objects' own names and label names (prometheus-client's fields)
        (f"{m._name}_total" if m._type == "counter" else m._name): sorted(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    assert documented == served
    assert len(served) == 11  # DESIGN.md §11


# -- who may read them -------------------------------------------------------------------------


def metrics_for(
    app: App, peer: str, headers: dict[str, str] | None = None, **settings: Any
) -> httpx.Response:
    """``GET /metrics`` from the socket peer ``peer``, the portal's settings changed by
    ``settings``."""
    configured = replace(app, settings=replace(app.settings, **settings))
    with TestClient(create_app(configured), client=(peer, 40000)) as http:
        response: httpx.Response = http.get("/metrics", headers=headers)
        return response


def refused_with_not_authorized(response: httpx.Response) -> bool:
    return response.status_code == 403 and error(response)["code"] == "not_authorized"


def test_only_loopback_reads_the_metrics_by_default(app: App) -> None:
    assert Settings().metrics_allow == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert metrics_for(app, "127.0.0.1").status_code == 200
    assert metrics_for(app, "::1").status_code == 200
    assert metrics_for(app, "::ffff:127.0.0.1").status_code == 200  # IPv4 through an IPv6 socket
    refused = metrics_for(app, OUTSIDE)
    assert refused_with_not_authorized(refused)
    assert "swreg_" not in refused.text


def test_the_allow_list_is_the_operators(app: App) -> None:
    allow = Settings.from_env({"SWREG_METRICS_ALLOW": " 192.0.2.0/24 , 2001:db8::/32"})
    assert allow.metrics_allow == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert metrics_for(app, "192.0.2.99", metrics_allow=allow.metrics_allow).status_code == 200
    assert metrics_for(app, "2001:db8::5", metrics_allow=allow.metrics_allow).status_code == 200
    # the list replaces loopback: a scraper on the same machine must be listed too
    assert refused_with_not_authorized(
        metrics_for(app, "127.0.0.1", metrics_allow=allow.metrics_allow)
    )


def test_a_malformed_allow_list_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as refused:
        Settings.from_env({"SWREG_METRICS_ALLOW": "10.0.0.0/8,metrics.example"})
    assert refused.value.detail is not None
    assert refused.value.detail.startswith("SWREG_METRICS_ALLOW holds CIDRs")


def test_a_forwarded_for_header_opens_nothing_by_itself(app: App) -> None:
    """The client is the one SWREG_TRUSTED_PROXIES finds: an untrusted peer's header is not
    read, and a trusted proxy's own address does not vouch for the client behind it."""
    loopback_xff = {"X-Forwarded-For": "127.0.0.1"}
    assert refused_with_not_authorized(metrics_for(app, OUTSIDE, headers=loopback_xff))
    trusted = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("127.0.0.0/8"))
    behind_loopback_proxy = metrics_for(
        app, "127.0.0.1", trusted_proxies=trusted, headers={"X-Forwarded-For": OUTSIDE}
    )
    assert refused_with_not_authorized(behind_loopback_proxy)
    # a listed scraper behind a trusted proxy is let in, by the address the proxy forwarded
    scraper = {"X-Forwarded-For": "192.0.2.10"}
    listed = (ipaddress.ip_network("192.0.2.0/24"),)
    assert (
        metrics_for(
            app, PROXY, trusted_proxies=trusted, metrics_allow=listed, headers=scraper
        ).status_code
        == 200
    )
    assert refused_with_not_authorized(
        metrics_for(app, PROXY, trusted_proxies=trusted, metrics_allow=listed)
    )  # the proxy itself is not listed


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": OUTSIDE},
        {"Forwarded": f"for={OUTSIDE}"},
        {"X-Real-IP": OUTSIDE},
        {"X-Forwarded-For": "unknown"},
    ],
)
def test_a_proxy_left_out_of_the_trusted_list_does_not_open_the_metrics(
    app: App, header: dict[str, str]
) -> None:
    """A reverse proxy on the portal's machine that the operator forgot to list in
    SWREG_TRUSTED_PROXIES: every request it relays comes from loopback. Its forwarding header
    gives it away, and the request is refused rather than taken for a local scraper."""
    assert metrics_for(app, "127.0.0.1").status_code == 200  # a scraper on the machine
    assert refused_with_not_authorized(metrics_for(app, "127.0.0.1", headers=header))
    # listed, but naming no client the portal believes (all hops trusted, or garbage): refused
    trusted = (ipaddress.ip_network("127.0.0.0/8"),)
    assert refused_with_not_authorized(
        metrics_for(app, "127.0.0.1", headers={"X-Forwarded-For": "127.0.0.2"},
                    trusted_proxies=trusted)
    )  # fmt: skip


def test_metrics_are_answered_whatever_the_host(client: TestClient) -> None:
    foreign = {"Host": "metrics-scraper.internal:9100"}
    assert client.get("/", headers=foreign).status_code == 400  # pages check the Host
    answered = client.get("/metrics", headers=foreign)
    assert answered.status_code == 200
    assert "swreg_registrations_started_total" in answered.text


# -- the run's directory for several workers -----------------------------------------------------


def test_each_run_of_several_workers_gets_a_new_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # TMPDIR
    monkeypatch.setenv(metrics.MULTIPROCESS_ENV, "/var/tmp/left-over")  # inherited: dropped
    runs = []
    for _ in range(2):
        with metrics.shared_across_workers(2) as directory:
            assert directory is not None and directory.parent == tmp_path
            assert os.environ[metrics.MULTIPROCESS_ENV] == str(directory)
            assert list(directory.iterdir()) == []  # empty at start
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            (directory / "counter_4242.db").write_bytes(b"")  # what a worker writes
            runs.append(directory)
        assert not directory.exists()  # removed with the run
        assert metrics.MULTIPROCESS_ENV not in os.environ
    assert runs[0] != runs[1]
    monkeypatch.setenv(metrics.MULTIPROCESS_ENV, "/var/tmp/left-over")
    with metrics.shared_across_workers(1) as alone:
        assert alone is None  # one process serves its own registry
        assert metrics.MULTIPROCESS_ENV not in os.environ


# -- swreg serve --workers 2 -------------------------------------------------------------------


@pytest.fixture
def served_database(tmp_path: Path, test_databases: TestDatabases, pki: TestPKI) -> Iterator[str]:
    """A fresh database of the test backend trusting the test PKI (as the browser tests')."""
    url = test_databases.create(tmp_path)
    setup = bootstrap(Settings(database_url=url, secret_key=SECRET))
    try:
        pki.publish_to(setup.trust, actor="test")
    finally:
        setup.close()
    yield url
    test_databases.drop(url)


@contextmanager
def only(worker: int, others: Iterable[int]) -> Iterator[None]:
    """Let ``worker`` alone accept connections: the other workers are paused (SIGSTOP) and go
    on afterwards (SIGCONT). Kept short: uvicorn's supervisor replaces a worker that does not
    answer its health ping for 5 s."""
    paused = [pid for pid in others if pid != worker]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def worker_pids(run: Path) -> list[int]:
    """The workers that wrote values in the run's directory (``counter_<pid>.db``, ...)."""
    return sorted({int(path.stem.rsplit("_", 1)[1]) for path in run.glob("*.db")})


def own_samples(run: Path, pid: int) -> Samples:
    """What one worker counted: its own files of the run's directory, merged alone."""
    files = [str(path) for path in run.glob(f"*_{pid}.db")]
    return {
        key(sample.name, **sample.labels): sample.value
        for family in MultiProcessCollector.merge(files)
        for sample in family.samples
    }


def test_two_workers_report_one_registration_whichever_answers(
    served_database: str, tmp_path: Path, person_card: IssuedCard
) -> None:
    """``swreg serve --workers 2``: one worker takes the registration's first steps, the other
    its last; every scrape, from either, shows the whole registration exactly once — after
    one of them is killed and replaced too."""
    port = free_port()
    runs = tmp_path / "tmp"  # the portal's TMPDIR, where the run's directory goes
    log = tmp_path / "serve.log"
    runs.mkdir()
    process = serve(
        served_database, SECRET.hex(), port, log, workers=2,
        SWREG_MAIL_OUTBOX=str(tmp_path / "outbox"),
        TMPDIR=str(runs),
    )  # fmt: skip
    origin = f"http://127.0.0.1:{port}"
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection for every request
    try:
        (run,) = runs.glob("swreg-metrics-*")  # made before the workers started
        # each worker keeps its values in files of its own, written as it imports the metrics
        wait_until(lambda: len(worker_pids(run)) == 2, process, log, "both workers")
        workers = worker_pids(run)
        first, second = workers
        with httpx.Client(base_url=origin, limits=fresh, timeout=30) as http:
            with only(first, workers):
                view = start(http, "person.general").json()
                card = card_check(http, view["id"], person_card)
                assert card.status_code == 200, card.text
                halfway = scrape(http)
            with only(second, workers):
                done = http.post(
                    f"/api/registrations/{view['id']}/step",
                    json=PERSON_ANSWERS,
                    headers=csrf(http),
                )
                assert done.json()["state"] == "completed", done.text
                scrapes = [scrape(http) for _ in range(3)]
            with only(first, workers):
                scrapes += [scrape(http) for _ in range(3)]
            scrapes += [scrape(http) for _ in range(6)]
            by_first, by_second = own_samples(run, first), own_samples(run, second)
            os.kill(first, signal.SIGKILL)  # uvicorn replaces it; what it counted stays
            wait_until(lambda: len(worker_pids(run)) == 3, process, log, "a new worker")
            scrapes += [scrape(http) for _ in range(6)]
    finally:
        stop_process(process)
    assert not run.exists()  # removed when the portal stopped

    started = key("swreg_registrations_started_total", type="person.general")
    completed = key("swreg_registrations_completed_total", type="person.general")
    sent = key("swreg_mails_total", outcome="sent")
    first_part = {
        started: 1,
        key("swreg_step_duration_seconds_count", step="category"): 1,
        key("swreg_step_duration_seconds_count", step="card_check"): 1,
        key("swreg_card_check_duration_seconds_count"): 1,
        key("swreg_revocation_answers_total", source="ocsp", status="unknown"): 2,
        key("swreg_revocation_answers_total", source="crl", status="good"): 2,
    }
    second_part = {
        completed: 1,
        key("swreg_step_duration_seconds_count", step="basic_data"): 1,
        sent: 1,
    }
    assert moved({}, halfway) == first_part
    assert moved({}, by_first) == first_part  # each worker counted only what it did
    assert moved({}, by_second) == second_part
    for samples in scrapes:  # whichever worker answered: both workers' numbers, merged
        assert moved({}, samples) == {**first_part, **second_part}
        assert samples[key("swreg_mails_total", outcome="failed")] == 0  # listed from the start
