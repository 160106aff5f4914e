"""``GET /healthz`` and ``GET /readyz`` over the ASGI app (DESIGN.md §11): ready, each unready
reason on its own with its exact answer, the 5-second cache, the Host exemption, no secrets.

Every unready state is real: a database gone (its SQLite folder moved away, its PostgreSQL
database dropped), a schema downgraded one revision by Alembic, CRLs past nextUpdate + grace on
the FixedClock, a CA without any CRL.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import make_url

from engine import App, FixedClock, IssuerCA, Settings, bootstrap
from engine._settings import CaRevocation, MailSettings, RevocationPolicy, RevocationSourceKind
from engine.services.health import CACHE_FOR
from engine.store import MIGRATIONS_DIR
from engine.testing.pki import TestPKI
from engine.web import create_app

from .conftest import ON_POSTGRESQL, PKI_NOW, SECRET, TestDatabases

GRACE = Settings().crl_grace  # 6 h by default
MOICA = "swreg TEST MOICA (測試用)"
OK_CHECKS = {
    "database": "ok",
    "migrations": "ok",
    "trust_anchors": "ok",
    "crls": "ok",
    "mail": "ok",
}
READY = {"ready": True, "checks": OK_CHECKS}


def unready(**reasons: str) -> dict[str, Any]:
    """The answer with every check ``ok`` but those given."""
    return {"ready": False, "checks": {**OK_CHECKS, **reasons}}


def der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(Encoding.DER)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def mailing(settings: Settings, tmp_path: Path) -> Settings:
    """The suite's settings with mail configured (an outbox folder)."""
    return replace(settings, mail=MailSettings(outbox=tmp_path / "outbox"))


Opener = Callable[..., tuple[App, TestClient]]


@pytest.fixture
def portal(mailing: Settings, clock: FixedClock, pki: TestPKI) -> Iterator[Opener]:
    """``portal(settings=..., trust=True, crls=True)``: an app (mail configured unless the
    settings say otherwise) trusting the test PKI with its published CRLs, and a client."""
    opened: list[tuple[App, TestClient]] = []

    def open_(
        *, settings: Settings | None = None, trust: bool = True, crls: bool = True
    ) -> tuple[App, TestClient]:
        app = bootstrap(settings or mailing, clock=clock)
        if trust:
            pki.publish_to(app.trust, crls=crls)
        client = TestClient(create_app(app))
        opened.append((app, client))
        return app, client

    yield open_
    for app, client in opened:
        client.close()
        app.close()


def readyz(client: TestClient, expected_status: int) -> dict[str, Any]:
    response = client.get("/readyz")
    assert response.status_code == expected_status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


# -- ready ---------------------------------------------------------------------------------------


def test_healthz_answers_without_touching_the_database(portal: Opener) -> None:
    app, client = portal()
    with counted(app) as seen:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert seen == {"statements": 0, "checkouts": 0}


def test_readyz_ready(portal: Opener) -> None:
    _, client = portal()
    assert readyz(client, 200) == READY


# -- each unready reason on its own --------------------------------------------------------------


def test_database_unreachable(
    portal: Opener, mailing: Settings, test_databases: TestDatabases, clock: FixedClock
) -> None:
    """The database goes away after start-up: its SQLite folder is moved off (a volume gone),
    its PostgreSQL database dropped. /healthz still answers; /readyz says only ``unreachable``
    (the database's name, path or host is not in the answer)."""
    app, client = portal()
    assert readyz(client, 200) == READY
    app.database.dispose()
    url = make_url(mailing.database_url)
    if ON_POSTGRESQL:
        test_databases.drop(mailing.database_url)
        gone = str(url.database)
    else:
        folder = Path(str(url.database)).parent
        folder.rename(folder.with_name(folder.name + "-gone"))
        gone = str(folder)
    clock.advance(CACHE_FOR)

    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {
            "database": "unreachable",
            "migrations": "not checked",
            "trust_anchors": "not checked",
            "crls": "not checked",
            "mail": "ok",
        },
    }
    assert gone not in response.text
    assert client.get("/healthz").json() == {"ok": True}


def test_migrations_behind_head(portal: Opener) -> None:
    """The database is taken back one revision by Alembic (as an older deployment left it)."""
    app, client = portal()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with app.database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    assert readyz(client, 503) == unready(migrations="not at head")


def test_an_empty_database(
    fresh_database: Callable[..., str], mailing: Settings, clock: FixedClock
) -> None:
    """A worker started on a database nobody ran ``swreg init`` on: reachable, not migrated,
    and the checks that read its tables are not checked."""
    settings = replace(mailing, database_url=fresh_database(migrated=False))
    app = bootstrap(settings, clock=clock, migrate=False)
    try:
        with TestClient(create_app(app)) as client:
            assert readyz(client, 503) == unready(
                migrations="not at head", trust_anchors="not checked", crls="not checked"
            )
    finally:
        app.close()


def test_no_trust_anchor(portal: Opener) -> None:
    _, client = portal(trust=False)
    assert readyz(client, 503) == unready(trust_anchors="none")


def test_a_stale_crl_under_the_hard_policy(portal: Opener, pki: TestPKI, clock: FixedClock) -> None:
    """MOICA's newest CRL runs out a day from now: ready until nextUpdate + grace, unready
    after — at the very second ``swreg revocation status`` calls it not fresh."""
    app, client = portal()
    next_update = PKI_NOW + timedelta(days=1)
    app.trust.add_crl(der(pki.crl(IssuerCA.MOICA, number=2, next_update=next_update)))

    def moica_fresh() -> bool:
        (row,) = [s for s in app.revocation.status() if s.crl_number == 2]
        return row.fresh

    clock.set(next_update + GRACE)
    assert readyz(client, 200) == READY
    assert moica_fresh()
    clock.advance(CACHE_FOR)
    assert readyz(client, 503) == unready(crls=f"stale: {MOICA}")
    assert not moica_fresh()


def test_a_stale_crl_under_the_soft_policy_is_ready(
    portal: Opener, pki: TestPKI, mailing: Settings, clock: FixedClock
) -> None:
    """Under ``soft`` an unknown status refuses no card, so a stale CRL does not take the
    worker out of the load balancer (``swreg revocation refresh`` still fails and alerts)."""
    app, client = portal(settings=replace(mailing, revocation_policy=RevocationPolicy.SOFT))
    next_update = PKI_NOW + timedelta(days=1)
    app.trust.add_crl(der(pki.crl(IssuerCA.MOICA, number=2, next_update=next_update)))
    clock.set(next_update + GRACE + timedelta(days=1))
    assert readyz(client, 200) == READY


def test_a_ca_without_any_crl(portal: Opener, pki: TestPKI) -> None:
    """A missing CRL counts as stale: MOICA's card checks would all be ``revocation_unknown``."""
    app, client = portal(crls=False)
    moica = pki.ca(IssuerCA.MOICA).certificate
    for crl in pki.published_crls():
        if crl.issuer != moica.subject:
            app.trust.add_crl(der(crl))
    assert readyz(client, 503) == unready(crls=f"no CRL: {MOICA}")


def test_stale_and_missing_crls_are_both_named(
    portal: Opener, pki: TestPKI, clock: FixedClock
) -> None:
    app, client = portal(crls=False)
    moica, gca = (pki.ca(family).certificate for family in (IssuerCA.MOICA, IssuerCA.GCA))
    for crl in pki.published_crls():
        if crl.issuer not in (moica.subject, gca.subject):
            app.trust.add_crl(der(crl))
    app.trust.add_crl(der(pki.crl(IssuerCA.GCA, next_update=PKI_NOW + timedelta(hours=1))))
    clock.advance(timedelta(hours=1) + GRACE + timedelta(seconds=1))
    assert readyz(client, 503) == unready(crls=f"stale: swreg TEST GCA (測試用); no CRL: {MOICA}")


def test_an_ocsp_only_ca_needs_no_crl(portal: Opener, pki: TestPKI, mailing: Settings) -> None:
    """``sources = ["ocsp"]`` in SWREG_REVOCATION_CAS: no check asks MOICA's CRLs."""
    moica = pki.ca(IssuerCA.MOICA).certificate
    fingerprint = hashlib.sha256(moica.public_bytes(Encoding.DER)).hexdigest()
    ocsp_only = CaRevocation(sources=(RevocationSourceKind.OCSP,))
    app, client = portal(
        settings=replace(mailing, revocation_cas={fingerprint: ocsp_only}), crls=False
    )
    for crl in pki.published_crls():
        if crl.issuer != moica.subject:
            app.trust.add_crl(der(crl))
    assert readyz(client, 200) == READY


def test_an_expired_ca_needs_no_crl(portal: Opener, pki: TestPKI, clock: FixedClock) -> None:
    """The issuing CAs' CRLs run out with the CAs themselves (the test PKI's default): once the
    CAs expired, no path validates through them and their stale CRLs answer no check; the
    roots' CRLs are still fresh."""
    app, client = portal()
    expiry = pki.ca(IssuerCA.MOICA).certificate.not_valid_after_utc
    clock.set(expiry + GRACE + timedelta(seconds=1))
    assert sum(not s.fresh for s in app.revocation.status()) == len(pki.intermediates())
    assert readyz(client, 200) == READY


def test_no_mail_configured(portal: Opener, settings: Settings) -> None:
    """Neither SWREG_SMTP_HOST nor SWREG_MAIL_OUTBOX: activation links would go nowhere."""
    _, client = portal(settings=settings)
    assert readyz(client, 503) == unready(mail="not configured")


def test_smtp_counts_as_mail(portal: Opener, settings: Settings) -> None:
    _, client = portal(settings=replace(settings, mail=MailSettings(host="smtp.invalid")))
    assert readyz(client, 200) == READY


# -- the cache -------------------------------------------------------------------------------------


class counted:
    """Count the SQL statements run and connections checked out of the app's pool meanwhile."""

    def __init__(self, app: App) -> None:
        self._engine = app.database.engine
        self.seen = {"statements": 0, "checkouts": 0}

    def _statement(self, *_: Any) -> None:
        self.seen["statements"] += 1

    def _checkout(self, *_: Any) -> None:
        self.seen["checkouts"] += 1

    def __enter__(self) -> dict[str, int]:
        event.listen(self._engine, "before_cursor_execute", self._statement)
        event.listen(self._engine.pool, "checkout", self._checkout)
        return self.seen

    def __exit__(self, *_: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._statement)
        event.remove(self._engine.pool, "checkout", self._checkout)


def test_two_probes_within_five_seconds_read_the_database_once(
    portal: Opener, clock: FixedClock
) -> None:
    app, client = portal()
    with counted(app) as first:
        assert readyz(client, 200) == READY
    assert first["statements"] > 0 and first["checkouts"] > 0
    clock.advance(CACHE_FOR - timedelta(microseconds=1))
    with counted(app) as second:
        assert readyz(client, 200) == READY
    assert second == {"statements": 0, "checkouts": 0}
    clock.advance(timedelta(microseconds=1))
    with counted(app) as third:
        assert readyz(client, 200) == READY
    assert third["statements"] > 0


def test_the_cached_answer_lasts_five_seconds_on_the_clock(
    portal: Opener, pki: TestPKI, clock: FixedClock
) -> None:
    """An anchor added meanwhile shows only once the 5 s are over."""
    app, client = portal(trust=False)
    assert readyz(client, 503) == unready(trust_anchors="none")
    pki.publish_to(app.trust)
    clock.advance(timedelta(seconds=4))
    assert readyz(client, 503) == unready(trust_anchors="none")
    clock.advance(timedelta(seconds=1))
    assert readyz(client, 200) == READY


def test_an_unready_check_is_logged_once_while_it_lasts(
    portal: Opener, pki: TestPKI, clock: FixedClock
) -> None:
    """A probe every 5 s does not fill the log: one line when a check turns unready, one when
    it is ok again."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("swreg.health")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        app, client = portal(trust=False)
        for _ in range(3):
            readyz(client, 503)
            clock.advance(CACHE_FOR)
        pki.publish_to(app.trust)
        readyz(client, 200)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert lines == ["readiness: trust_anchors: none", "readiness: trust_anchors ok again"]


# -- Host and secrets ------------------------------------------------------------------------------


def test_probes_answer_any_host(portal: Opener) -> None:
    """A load balancer reaches a worker by its address: the probes skip the Host check that
    refuses every other path (DESIGN.md §11)."""
    _, client = portal()
    foreign = {"Host": "10.1.2.3:8000"}
    assert client.get("/api/csrf", headers=foreign).status_code == 400
    healthz = client.get("/healthz", headers=foreign)
    assert (healthz.status_code, healthz.json()) == (200, {"ok": True})
    ready = client.get("/readyz", headers=foreign)
    assert (ready.status_code, ready.json()) == (200, READY)


def test_no_secret_in_either_answer(portal: Opener, settings: Settings) -> None:
    """Ready or not, the answers hold no database URL, name or host, no key, no SMTP server or
    credentials, no CRL URL, and no holder's data."""
    mail = MailSettings(host="smtp.internal.example", user="mailer", password="smtp-Pa55word")
    _, client = portal(settings=replace(settings, mail=mail), crls=False)
    url = make_url(settings.database_url)
    secrets = [
        settings.database_url,
        str(url.database),
        SECRET.hex(),
        "smtp.internal.example",
        "smtp-Pa55word",
        "mailer",
        "http",
    ]
    if url.host:
        secrets += [url.host, str(url.username), str(url.password)]
    answers = [client.get("/healthz").text, client.get("/readyz").text]
    assert '"crls":"no CRL: ' in answers[1]
    assert all(s not in a for s in secrets for a in answers), answers
