"""What the revocation tests share (issue 14, DESIGN.md §4a): a test PKI issued at the real time
(OpenSSL's responder stamps its answers with it) and its MOICA CA, ``openssl ocsp`` on a port of
127.0.0.1, settings and ``swreg`` environments that fetch from 127.0.0.1 only, an OCSP service
that counts its requests, the portal of the card check, and CRLs as DER.

Plain helpers, imported like tests/helpers.py. The fixtures (``pki``, ``moica``, ``responder``,
``setup``, ``server``, ``portal``) are imported by the test modules that use them, which name
them in their ``__all__`` (pytest finds a fixture imported into a test module; ``__all__`` tells
ruff the import is used).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from engine import App, FixedClock, IssuerCA, Settings, bootstrap
from engine._settings import FetchHosts, RevocationPolicy
from engine.cli import app as cli_app
from engine.services.fetching import Fetcher, FetchResult
from engine.services.ocsp import OcspResult, OcspService
from engine.store import AuditEntry
from engine.testing import IssuedCard, TestCA, TestPKI
from engine.testing.http_server import LocalHTTPServer
from engine.testing.ocsp import OcspResponder
from engine.web import create_app

from .conftest import FAST_ARGON2, SECRET, TEST_CLIENT_HOST
from .test_api import card_check, start

NOW = datetime.now(UTC).replace(microsecond=0)
"""OpenSSL stamps responses with the real clock: the test PKI is built around it."""
TIMEOUT = timedelta(seconds=1)
"""``SWREG_OCSP_TIMEOUT`` of these tests."""
MAX_AGE = timedelta(minutes=10)
"""``SWREG_OCSP_MAX_AGE`` of :class:`OcspSetup`."""
GRACE = timedelta(hours=6)
"""``SWREG_CRL_GRACE`` of the portal."""


# -- the test PKI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    """A test PKI of the module, issued at :data:`NOW`."""
    return TestPKI.create(NOW)


@pytest.fixture(scope="module")
def moica(pki: TestPKI) -> TestCA:
    return pki.ca(IssuerCA.MOICA)


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def fresh_crl(
    pki: TestPKI, ca: TestCA, revoked: tuple[IssuedCard, ...] = (), **options: Any
) -> x509.CertificateRevocationList:
    """``ca``'s CRL number 7 listing ``revoked``, good for a day (``options`` as for
    :meth:`TestPKI.crl`)."""
    options.setdefault("number", 7)
    options.setdefault("next_update", NOW + timedelta(days=1))
    return pki.crl(ca, revoked, **options)


def trust_moica(app: App, pki: TestPKI) -> None:
    """Trust the test roots and keep the MOICA CA certificate as an intermediate."""
    for anchor in pki.anchors():
        app.trust.add_certificate(pki.der(anchor), actor="test")
    app.trust.add_certificate(pki.der(pki.ca(IssuerCA.MOICA).certificate), anchor=False)


# -- settings and the command that fetch from 127.0.0.1 only ----------------------------------


def fetching_settings(database_url: str, hosts: str = "127.0.0.1", **fields: Any) -> Settings:
    """Settings of a test app on ``database_url`` fetching from ``hosts`` only."""
    return Settings(
        database_url=database_url,
        secret_key=SECRET,
        argon2=FAST_ARGON2,
        fetch_hosts=FetchHosts.parse(hosts),
        **fields,
    )


def cli_env(database_url: str, hosts: str = "127.0.0.1", **variables: str) -> dict[str, str]:
    """The environment of ``swreg`` for :func:`fetching_settings` (``variables`` added)."""
    return {
        **os.environ,
        "SWREG_DATABASE_URL": database_url,
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_ARGON2": "1,64,1",
        "SWREG_FETCH_HOSTS": hosts,
        **variables,
    }


# -- OpenSSL's responder and the OCSP service ----------------------------------------------------


def ocsp_url(port: int) -> str:
    """The URL of a responder on ``port`` of 127.0.0.1 (as a card's AIA names it)."""
    return f"http://127.0.0.1:{port}/"


Responder = Callable[..., OcspResponder]
"""``responder(port=None, *, ca=moica, **options)``: a started :class:`OcspResponder`."""


@pytest.fixture
def responder(tmp_path: Path, moica: TestCA) -> Iterator[Responder]:
    """Start ``openssl ocsp`` for MOICA (or ``ca``), on ``port`` when the cards naming it are
    issued before it starts; every one started is stopped after the test."""
    running: list[OcspResponder] = []

    def start(
        port: int | None = None, *, ca: TestCA | None = None, **options: Any
    ) -> OcspResponder:
        started = OcspResponder(
            tmp_path / f"ocsp-{len(running)}", ca or moica, port=port, **options
        )
        started.start()
        running.append(started)
        return started

    yield start
    for each in running:
        each.stop()


class Counting:
    """A fetcher factory that counts the POSTs its fetchers send."""

    def __init__(self) -> None:
        self.posts: list[str] = []

    def __call__(self, hosts: FetchHosts) -> Fetcher:
        counter = self

        class _Fetcher(Fetcher):
            def post(self, url: str, body: bytes, **options: object) -> FetchResult:
                counter.posts.append(url)
                return super().post(url, body, **options)  # type: ignore[arg-type]

        return _Fetcher(hosts)


class OcspSetup:
    """An app on a fresh database (only 127.0.0.1 allowed), its clock, and an OCSP service
    counting its requests."""

    def __init__(self, db_url: str) -> None:
        self.clock = FixedClock(datetime.now(UTC))
        self.settings = fetching_settings(db_url, ocsp_timeout=TIMEOUT, ocsp_max_age=MAX_AGE)
        self.app: App = bootstrap(self.settings, clock=self.clock)
        self.fetches = Counting()
        self.ocsp = OcspService(
            self.app.database,
            hosts=self.settings.fetch_hosts,
            timeout=TIMEOUT,
            max_age=MAX_AGE,
            fetcher=self.fetches,
        )

    def status(self, card: IssuedCard, issuer: TestCA, **options: Any) -> OcspResult:
        return self.ocsp.ocsp_status(
            card.certificate, issuer.certificate, now=self.clock.now(), **options
        )

    def cached_rows(self) -> int:
        """The cached answers, counted on a connection of its own (as another process sees)."""
        engine = create_engine(self.settings.database_url)
        try:
            with engine.connect() as connection:
                return int(
                    connection.execute(text("SELECT count(*) FROM ocsp_responses")).scalar_one()
                )
        finally:
            engine.dispose()


@pytest.fixture
def setup(db_url: str) -> Iterator[OcspSetup]:
    made = OcspSetup(db_url)
    yield made
    made.app.close()


def strip_nonce(upstream: str) -> Callable[[bytes, dict[str, str]], tuple[int, str, bytes]]:
    """A POST handler that forwards the OCSP request to ``upstream`` without its nonce, so the
    real responder's (signed, valid) answer carries none."""

    def handle(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        request = ocsp.load_der_ocsp_request(body)
        bare = (
            ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(
                request.issuer_name_hash,
                request.issuer_key_hash,
                request.serial_number,
                request.hash_algorithm,
            )
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        reply = httpx.post(
            upstream,
            content=bare,
            headers={"Content-Type": "application/ocsp-request"},
            timeout=5,
        )
        return reply.status_code, "application/ocsp-response", reply.content

    return handle


# -- a CRL server --------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    """A local HTTP server to publish CRLs on (a hanging answer hangs 5 s)."""
    with LocalHTTPServer(hang_seconds=5) as running:
        yield running


# -- the portal's card check ---------------------------------------------------------------------


@dataclass
class Portal:
    app: App
    clock: FixedClock
    settings: Settings

    def client(self) -> TestClient:
        return TestClient(create_app(self.app))

    def card_check(self, card: IssuedCard) -> tuple[str, Any]:
        """A person's registration up to the card check through the API: its id and response."""
        with self.client() as client:
            registration = start(client, "person.general").json()["id"]
            return registration, card_check(client, registration, card)

    def evidence(self, registration: str) -> dict[str, Any]:
        code, shown = cli(self, "registrations", "show", registration)
        assert code == 0, shown
        evidence: dict[str, Any] = shown["registration"]["evidence"]
        return evidence

    def audit(self, event: str) -> list[dict[str, Any]]:
        with self.app.database.unit_of_work() as uow:
            found = uow.session.scalars(
                select(AuditEntry.diff).where(AuditEntry.event == event).order_by(AuditEntry.seq)
            )
            return [dict(diff) for diff in found]


PortalFactory = Callable[..., Portal]


@pytest.fixture
def portal(db_url: str, pki: TestPKI) -> Iterator[PortalFactory]:
    """``portal(policy=..., crls=[...], cas=..., fetch_hosts=..., root_crls=...)``: an app
    trusting the test PKI, with the roots' CRLs (the issuing CAs themselves are good; none with
    ``root_crls=False``), only the CA CRLs given, and ``cas`` as ``SWREG_REVOCATION_CAS``."""
    opened: list[App] = []

    def make(
        *,
        policy: RevocationPolicy = RevocationPolicy.HARD,
        crls: tuple[x509.CertificateRevocationList, ...] = (),
        cas: str | None = None,
        fetch_hosts: str = "127.0.0.1",
        root_crls: bool = True,
    ) -> Portal:
        settings = fetching_settings(
            db_url,
            fetch_hosts,
            allowed_hosts=(TEST_CLIENT_HOST,),
            revocation_policy=policy,
            ocsp_timeout=TIMEOUT,
            crl_grace=GRACE,
        )
        if cas is not None:
            settings = Settings.from_env(
                {"SWREG_REVOCATION_CAS": cas},
                **{f: getattr(settings, f) for f in _SETTINGS},
            )
        clock = FixedClock(datetime.now(UTC))  # OpenSSL answers at the real time
        app = bootstrap(settings, clock=clock)
        opened.append(app)
        pki.publish_to(app.trust, crls=False)
        if root_crls:
            for root in (pki.root, pki.twca_root):
                app.trust.add_crl(der(pki.crl(root, next_update=NOW + timedelta(days=30))))
        for crl in crls:
            app.trust.add_crl(der(crl))
        return Portal(app, clock, settings)

    yield make
    for app in opened:
        app.close()


_SETTINGS = (
    "database_url",
    "secret_key",
    "argon2",
    "allowed_hosts",
    "fetch_hosts",
    "revocation_policy",
    "ocsp_timeout",
    "crl_grace",
)


def cli(portal: Portal, *args: str) -> tuple[int, dict[str, Any]]:
    """``swreg ARGS --json`` on the portal's database: its exit code and output."""
    env = cli_env(
        portal.settings.database_url,
        SWREG_REVOCATION_POLICY=portal.settings.revocation_policy.value,
        SWREG_OCSP_TIMEOUT="1s",
    )
    result = CliRunner().invoke(cli_app, [*args, "--json"], env=env)
    return result.exit_code, json.loads(result.stdout)


def card_tried(revocation: dict[str, Any]) -> list[dict[str, Any]]:
    """The sources tried for the card itself (its issuing CA's follow)."""
    return [t for t in revocation["tried"] if t["certificate"].startswith("certificate ")]


def response_tried(site: Portal, card: IssuedCard) -> dict[str, Any]:
    """What the revocation check tries for ``card`` now (``cert inspect``)."""
    report = site.app.inspect_certificate(card.der())
    revocation: dict[str, Any] = report["revocation"]
    return revocation
