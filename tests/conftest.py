"""Shared fixtures: a test PKI made once per run, a fresh database and app per test.

The PKI is issued at the real current time (so the CLI, which reads the system clock, sees
valid certificates); service-level tests use a :class:`FixedClock` starting at the same instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import App, FixedClock, Settings, bootstrap
from engine._settings import Argon2Parameters
from engine.testing.pki import IssuedCard, TestPKI

PIN = "246810"
FAST_ARGON2 = Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1)
SECRET = bytes(range(32))
PKI_NOW = datetime.now(UTC).replace(microsecond=0)

PASSWORD = {"password": "Passw0rdOK", "password_confirm": "Passw0rdOK"}
PERSON_ANSWERS: dict[str, Any] = {
    "consent": True,
    "email": "ming@example.com",
    "contact_name": "王小明",
    "national_id": "A123456789",
    "birth_date": "1985-03-14",
    "phone": "0912-345-678",
    "address": "臺北市信義區市府路1號",
    **PASSWORD,
}
COMPANY_ANSWERS: dict[str, Any] = {
    "consent": True,
    "email": "info@trading.example",
    "contact_name": "陳大文",
    "ubn": "04595257",
    "phone": "02-2345-6789",
    "address": "臺北市中正區重慶南路1號",
    "company_name": "測試貿易股份有限公司",
    **PASSWORD,
}
ORG_OID = "2.16.886.111.90010.90003.100004"
AGENCY_OID = "2.16.886.101.20003.20065.20065"


def _vpcd_readers() -> list[tuple[str, int]]:
    """Readers of pcscd's vpcd driver and the TCP port a virtual card connects to for each.

    ``SWREG_TEST_VPCD="NAME=PORT;NAME=PORT"`` overrides the default (Debian's reader.conf: two
    slots of "Virtual PCD" on 35963 and 35964).
    """
    spec = os.environ.get("SWREG_TEST_VPCD", "Virtual PCD 00 00=35963;Virtual PCD 00 01=35964")
    pairs = [item.rsplit("=", 1) for item in spec.split(";") if item.strip()]
    return [(name.strip(), int(port)) for name, port in pairs]


_PCSC_FILES = {
    "test_cli.py",
    "test_readers_virtual.py",
    "test_pcsc.py",
    "test_pcsc_registration.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``pcsc`` every test that talks to pcscd (reader fixture, browser, ``pcsc:`` spec)."""
    for item in items:
        path = item.path
        uses_readers = "vpcd_readers" in getattr(item, "fixturenames", ())
        if uses_readers or path.parent.name == "browser" or path.name in _PCSC_FILES:
            item.add_marker(pytest.mark.pcsc)


@pytest.fixture(scope="session")
def vpcd_readers() -> list[tuple[str, int]]:
    """At least two (reader name, vpcd port) pairs; pcscd runs (``make test`` starts it)."""
    readers = _vpcd_readers()
    assert len(readers) >= 2, "SWREG_TEST_VPCD must name at least two vpcd readers"
    return readers


@pytest.fixture(scope="session")
def pki() -> TestPKI:
    return TestPKI.create(PKI_NOW)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(PKI_NOW)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'swreg.db'}"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, secret_key=SECRET, argon2=FAST_ARGON2)


@pytest.fixture
def app(settings: Settings, clock: FixedClock, pki: TestPKI) -> Iterator[App]:
    application = bootstrap(settings, clock=clock)
    for anchor in pki.anchors():
        application.trust.add_certificate(pki.der(anchor), actor="test")
    yield application
    application.close()


@pytest.fixture
def card_file(tmp_path: Path, pki: TestPKI) -> Any:
    """Write a card as a PKCS#12 file (password = PIN) and return its ``virtual:`` spec."""

    def write(card: IssuedCard, pin: str = PIN) -> str:
        path = tmp_path / f"card-{card.certificate.serial_number:x}.p12"
        pki.write_pkcs12(card, path, pin)
        return f"virtual:{path}"

    return write


@pytest.fixture
def answers_file(tmp_path: Path) -> Any:
    def write(answers: dict[str, Any], name: str = "answers.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
        return path

    return write
