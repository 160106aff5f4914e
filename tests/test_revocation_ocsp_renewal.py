"""``swreg revocation refresh`` keeps the OCSP answers of registered signing certificates fresh
(DESIGN.md §4a "Turnkey"), against OpenSSL's own responder: renewed when missing or running out
within ``SWREG_OCSP_MAX_AGE``, left alone while good for longer, the cached answer kept (and the
run failed) when the responder is down, the CA's configured responder and nonce rule used, a
CRL-only CA never asked, and ``swreg revocation refresh`` exiting 1 (the certificate listed)
while a signing certificate's responder is down.

Signing certificates are inserted as ``Certificate`` rows directly, as tests/test_turnkey.py
does (the customs import is another module).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from engine import App, FixedClock, IssuerCA, bootstrap
from engine._settings import CaRevocation, RevocationSourceKind
from engine.cli import app as cli_app
from engine.pki.ocsp import OcspStatus
from engine.services.ocsp import OcspSource
from engine.services.revocation import RevocationService
from engine.store import Certificate
from engine.testing import IssuedCard, TestCA, TestPKI
from engine.testing.ports import free_port

from .revocation_support import (
    NOW,
    TIMEOUT,
    Responder,
    cli_env,
    fetching_settings,
    moica,
    pki,
    responder,
    trust_moica,
)
from .revocation_support import ocsp_url as url

__all__ = ["moica", "pki", "responder"]  # fixtures used here

MARGIN = timedelta(minutes=30)
"""``SWREG_OCSP_MAX_AGE`` here: the renewal margin (the responder's answers last an hour)."""


def fingerprint(item: IssuedCard | TestCA) -> str:
    return hashlib.sha256(item.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


class Setup:
    """An app on a fresh database fetching from 127.0.0.1, trusting the roots and MOICA."""

    def __init__(self, db_url: str, pki: TestPKI) -> None:
        self.clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
        self.settings = fetching_settings(db_url, ocsp_timeout=TIMEOUT, ocsp_max_age=MARGIN)
        self.app: App = bootstrap(self.settings, clock=self.clock)
        trust_moica(self.app, pki)

    def register(
        self, card: IssuedCard, *, purpose: str = "signing", status: str = "active"
    ) -> None:
        """Insert ``card`` as a registered certificate (as the customs import stores one)."""
        cert = card.certificate
        row = Certificate(
            fingerprint=fingerprint(card),
            purpose=purpose,
            der=card.der(),
            serial_hex=format(cert.serial_number, "X"),
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            ca="MOICA",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            ubn="04595257",
            query_key="04595257",
            kind="non_ic",
            usage_type="shipping",
            status=status,
            created_at=self.clock.now(),
        )
        with self.app.database.unit_of_work() as uow:
            uow.certificates.add(row)
            uow.commit()

    def revocation(self, *, cas: dict[str, CaRevocation]) -> RevocationService:
        """A revocation service of this app with the per-CA settings ``cas``."""
        return RevocationService(
            self.app.database,
            self.clock,
            self.app.trust,
            hosts=self.settings.fetch_hosts,
            grace=timedelta(hours=6),
            ocsp=self.app.ocsp,
            cas=cas,
        )

    def cached(self, card: IssuedCard, issuer: TestCA) -> Any:
        """What Turnkey reads: the cache only."""
        return self.app.ocsp.ocsp_status(
            card.certificate, issuer.certificate, now=self.clock.now(), network=False
        )


@pytest.fixture
def setup(db_url: str, pki: TestPKI) -> Iterator[Setup]:
    made = Setup(db_url, pki)
    yield made
    made.app.close()


# -- renewal ---------------------------------------------------------------------------------------


def test_refresh_renews_only_registered_signing_certificates_and_only_when_due(
    setup: Setup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    signing = pki.issue_person(ocsp_url=url(port))
    expired = pki.issue_person(
        ocsp_url=url(port), valid_from=NOW - timedelta(days=400), valid_to=NOW - timedelta(days=1)
    )
    deleted, login = pki.issue_person(ocsp_url=url(port)), pki.issue_person(ocsp_url=url(port))
    untrusted = pki.issue_person(ocsp_url=url(port), ca=IssuerCA.XCA)  # XCA is not trusted here
    crl_only = pki.issue_person()  # names no responder
    for card in (signing, expired, untrusted, crl_only):
        setup.register(card)
    setup.register(deleted, status="deleted")
    setup.register(login, purpose="login")
    responder(port, good=[signing, expired, deleted, login, untrusted])

    first = setup.app.revocation.refresh(actor="test")
    [entry] = first.ocsp
    assert (entry.fingerprint, entry.serial, entry.url) == (
        fingerprint(signing),
        format(signing.certificate.serial_number, "X"),
        url(port),
    )
    assert (entry.status, entry.source, entry.problem, entry.renewed) == (
        "good", "network", None, True,
    )  # fmt: skip
    assert first.ok and first.failure() is None
    assert entry.checked_at == setup.clock.now() and entry.cache_until is not None
    turnkey = setup.cached(signing, moica)  # Turnkey now finds it without the network
    assert (turnkey.status, turnkey.source) == (OcspStatus.GOOD, OcspSource.CACHE)
    for other in (expired, deleted, login, untrusted):  # nobody asked about them
        assert setup.cached(other, pki.ca(IssuerCA.MOICA)).problem == "not_cached"

    setup.clock.advance(timedelta(minutes=1))  # still good for ~59 minutes: left alone
    second = setup.app.revocation.refresh(actor="test")
    [kept] = second.ocsp
    assert (kept.source, kept.renewed, kept.ok, kept.checked_at) == (
        "cache", False, True, entry.checked_at,
    )  # fmt: skip

    setup.clock.set(entry.cache_until - MARGIN + timedelta(minutes=1))  # runs out within it
    third = setup.app.revocation.refresh(actor="test")
    [renewed] = third.ocsp
    assert (renewed.source, renewed.renewed, renewed.checked_at) == (
        "network", True, setup.clock.now(),
    )  # fmt: skip
    assert renewed.cache_until is not None  # OpenSSL's real clock: its nextUpdate
    assert [third.counts()[k] for k in ("ocsp", "ocsp_renewed", "ocsp_failed")] == [1, 1, 0]


def test_refresh_fails_while_a_renewal_fails_and_turnkey_keeps_the_cached_answer(
    setup: Setup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    port = free_port()
    signing = pki.issue_person(ocsp_url=url(port))
    setup.register(signing)
    running = responder(port, good=[signing])
    [entry] = setup.app.revocation.refresh(actor="test").ocsp
    assert entry.ok and entry.cache_until is not None
    running.stop()

    setup.clock.set(entry.cache_until - timedelta(minutes=5))
    report = setup.app.revocation.refresh(actor="test")
    [failed] = report.ocsp
    assert (failed.status, failed.source, failed.problem, failed.ok) == (
        "good", "cache", "connection_error", False,
    )  # fmt: skip
    assert not report.ok
    assert report.counts()["ocsp_failed"] == 1
    failure = report.failure()
    assert failure is not None
    [error] = failure.errors  # type: ignore[attr-defined]
    assert (error.code.value, error.field) == ("revocation_unknown", "ocsp")
    assert error.details == {
        "url": url(port),
        "fingerprint": fingerprint(signing),
        "problem": "connection_error",
    }
    turnkey = setup.cached(signing, moica)  # still good until it runs out
    assert (turnkey.status, turnkey.problem) == (OcspStatus.GOOD, None)

    setup.clock.set(entry.cache_until)  # run out, responder still down
    [lost] = setup.app.revocation.refresh(actor="test").ocsp
    assert (lost.status, lost.source, lost.problem) == ("unknown", "network", "connection_error")
    assert setup.cached(signing, moica).status is OcspStatus.UNKNOWN


def test_refresh_uses_the_cas_configured_responder_and_nonce_rule(
    setup: Setup, pki: TestPKI, moica: TestCA, responder: Responder
) -> None:
    bare = pki.issue_person()  # names no responder: only the CA's configuration has one
    setup.register(bare)
    running = responder(good=[bare])
    configured = CaRevocation(ocsp_url=running.url, ocsp_nonce_required=True)
    service = setup.revocation(cas={fingerprint(moica): configured})
    [entry] = service.refresh(actor="test").ocsp
    assert (entry.url, entry.status, entry.source, entry.problem) == (
        running.url, "good", "network", None,
    )  # fmt: skip
    assert [r.url for r in setup.app.ocsp.responders()] == [running.url]
    # without the configuration, that certificate has no responder: nothing to renew
    assert setup.app.revocation.refresh(actor="test").ocsp == ()


def test_refresh_never_asks_ocsp_for_a_crl_only_ca(
    setup: Setup, pki: TestPKI, moica: TestCA
) -> None:
    port = free_port()  # nothing listens: asking would fail the run
    setup.register(pki.issue_person(ocsp_url=url(port)))
    crl_only = CaRevocation(sources=(RevocationSourceKind.CRL,))
    service = setup.revocation(cas={fingerprint(moica): crl_only})
    report = service.refresh(actor="test")
    assert (report.ocsp, report.ok) == ((), True)
    assert setup.app.ocsp.responders() == []


# -- the command ---------------------------------------------------------------------------------


def test_cli_refresh_exits_1_while_a_signing_certificates_responder_is_down(
    setup: Setup, pki: TestPKI, responder: Responder
) -> None:
    env = cli_env(setup.settings.database_url, SWREG_OCSP_TIMEOUT="1s", SWREG_OCSP_MAX_AGE="30m")

    def refresh() -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(cli_app, ["revocation", "refresh", "--json"], env=env)
        return result.exit_code, json.loads(result.stdout)

    port = free_port()
    signing = pki.issue_person(ocsp_url=url(port))
    setup.register(signing)
    serial = format(signing.certificate.serial_number, "X")

    code, out = refresh()  # the responder is down
    assert (code, out["ok"], out["sources"]) == (1, False, [])
    [entry] = out["ocsp"]
    assert {k: entry[k] for k in ("url", "fingerprint", "serial", "status", "source")} == {
        "url": url(port),
        "fingerprint": fingerprint(signing),
        "serial": serial,
        "status": "unknown",
        "source": "network",
    }
    assert (entry["problem"], entry["renewed"], entry["cache_until"]) == (
        "connection_error", False, None,
    )  # fmt: skip
    [error] = out["errors"]
    assert (error["code"], error["field"], error["url"], error["problem"]) == (
        "revocation_unknown", "ocsp", url(port), "connection_error",
    )  # fmt: skip

    responder(port, good=[signing])  # back up: renewed, exit 0
    code, out = refresh()
    assert (code, out["ok"]) == (0, True), out
    [entry] = out["ocsp"]
    assert (entry["status"], entry["source"], entry["renewed"], entry["problem"]) == (
        "good", "network", True, None,
    )  # fmt: skip
    code, out = refresh()  # good for an hour, more than SWREG_OCSP_MAX_AGE: not asked again
    assert (code, out["ocsp"][0]["source"], out["ocsp"][0]["renewed"]) == (0, "cache", False)
