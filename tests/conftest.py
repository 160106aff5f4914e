"""Shared fixtures: a test PKI made once per run, a fresh database and app per test.

The PKI is issued at the real current time (so the CLI, which reads the system clock, sees
valid certificates); service-level tests use a :class:`FixedClock` starting at the same instant.

The suite runs on SQLite (the default) and on PostgreSQL: ``SWREG_TEST_DATABASE=postgresql``
with ``SWREG_PG_URL`` naming an admin URL of a throwaway cluster (``scripts/with-postgres``
starts one). Either way each test gets its own fresh database from :class:`TestDatabases`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, pool
from sqlalchemy.engine import make_url

from engine import App, FixedClock, Settings, bootstrap
from engine._settings import Argon2Parameters
from engine.store import Database
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
    "test_pkcs11_opensc.py",  # OpenSC's module enumerates pcscd's readers and probes their cards
    "test_readers_virtual.py",
    "test_pcsc.py",
    "test_pcsc_registration.py",
}


@pytest.hookimpl(tryfirst=True)  # marked before ``-m pcsc`` / ``-m "not pcsc"`` selects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``pcsc`` every test that talks to pcscd (reader fixture, browser, ``pcsc:`` spec);
    on the PostgreSQL pass, deselect the ``sqlite_only`` tests."""
    for item in items:
        path = item.path
        uses_readers = "vpcd_readers" in getattr(item, "fixturenames", ())
        if uses_readers or path.parent.name == "browser" or path.name in _PCSC_FILES:
            item.add_marker(pytest.mark.pcsc)
    if ON_POSTGRESQL:
        about_sqlite = [item for item in items if item.get_closest_marker("sqlite_only")]
        if about_sqlite:
            config.hook.pytest_deselected(items=about_sqlite)
            items[:] = [item for item in items if item not in about_sqlite]


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


TEST_DATABASE = os.environ.get("SWREG_TEST_DATABASE", "sqlite")
"""The database the suite runs on: ``sqlite`` or ``postgresql``."""
ON_POSTGRESQL = TEST_DATABASE == "postgresql"
sqlite_only = pytest.mark.sqlite_only
"""Marks a test about SQLite itself (its file, pragmas, driver): the PostgreSQL pass deselects it
(it ran in the SQLite pass; a skip would read as a missing component)."""


class TestDatabases:
    """Fresh databases for tests, on the backend of :data:`TEST_DATABASE`.

    A migrated database is a copy of a template migrated once per session: on SQLite a file copy
    (3 ms), on PostgreSQL ``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY``. Measured on
    the throwaway cluster of ``scripts/with-postgres`` (tmpfs, fsync off): the copy takes 15 ms
    and its ``DROP ... WITH (FORCE)`` 8 ms, against 13 + 60-80 ms to create an empty database
    and migrate it; ``WAL_LOG`` copies take 16-26 ms; a TRUNCATE of every table of one shared
    database takes 14-20 ms and is no fresh database (on ext4 every CREATE DATABASE costs
    250 ms: hence tmpfs). An unmigrated database (``migrated=False``) is an absent SQLite file
    or an empty PostgreSQL database.
    """

    __test__ = False  # a helper, not a test class

    def __init__(self, root: Path) -> None:
        self._root = root
        self._admin: Engine | None = None
        self._template: str | None = None
        if TEST_DATABASE not in ("sqlite", "postgresql"):
            raise pytest.UsageError(f"SWREG_TEST_DATABASE={TEST_DATABASE}: sqlite or postgresql")
        if ON_POSTGRESQL:
            admin_url = os.environ.get("SWREG_PG_URL")
            if not admin_url:
                raise pytest.UsageError(
                    "SWREG_TEST_DATABASE=postgresql needs SWREG_PG_URL (scripts/with-postgres)"
                )
            self._admin = create_engine(
                admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool
            )

    def _sql(self, statement: str) -> None:
        assert self._admin is not None
        with self._admin.connect() as connection:
            connection.exec_driver_sql(statement)

    def _pg_url(self, name: str) -> str:
        assert self._admin is not None
        url = self._admin.url.set(database=name)
        return url.render_as_string(hide_password=False)

    def _migrated_template(self) -> str:
        """The URL of the session's migrated template (made on first use)."""
        if self._template is None:
            if self._admin is None:
                url = f"sqlite:///{self._root / 'template.db'}"
            else:
                name = f"swreg_template_{uuid.uuid4().hex[:12]}"
                self._sql(f"CREATE DATABASE {name}")
                url = self._pg_url(name)
            database = Database(url)
            database.migrate()
            database.dispose()  # a PostgreSQL template must have no connections
            self._template = url
        return self._template

    def create(self, directory: Path, *, migrated: bool = True) -> str:
        """A new database (file ``swreg.db`` in ``directory`` on SQLite); drop it with
        :meth:`drop`."""
        if self._admin is None:
            path = directory / "swreg.db"
            assert not path.exists(), f"{path} exists already"
            if migrated:
                template = make_url(self._migrated_template()).database
                assert template is not None
                shutil.copy(template, path)  # with its mode: owner-only, like any database
            return f"sqlite:///{path}"
        name = f"swreg_test_{uuid.uuid4().hex[:16]}"
        if migrated:
            template = make_url(self._migrated_template()).database
            self._sql(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
        else:
            self._sql(f"CREATE DATABASE {name}")
        return self._pg_url(name)

    def drop(self, url: str) -> None:
        """Drop a PostgreSQL database made by :meth:`create`, ending its connections (SQLite
        files go with their temporary directory)."""
        if self._admin is not None:
            self._sql(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")

    def close(self) -> None:
        if self._admin is not None:
            if self._template is not None:
                self.drop(self._template)
            self._admin.dispose()


FreshDatabase = Callable[..., str]
"""``fresh_database(migrated=True, directory=None) -> URL``: another new database, dropped after
the test (on SQLite the file ``swreg.db`` in ``directory``, a new temporary one by default)."""


@pytest.fixture(scope="session")
def test_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDatabases]:
    databases = TestDatabases(tmp_path_factory.mktemp("databases"))
    yield databases
    databases.close()


@pytest.fixture
def fresh_database(
    test_databases: TestDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FreshDatabase]:
    """Make new databases for one test; each is dropped when the test ends."""
    made: list[str] = []

    def make(*, migrated: bool = True, directory: Path | None = None) -> str:
        url = test_databases.create(directory or tmp_path_factory.mktemp("db"), migrated=migrated)
        made.append(url)
        return url

    yield make
    for url in made:
        test_databases.drop(url)


@pytest.fixture
def db_url(fresh_database: FreshDatabase) -> str:
    """A fresh, migrated database of this test (SQLite file or PostgreSQL database)."""
    return fresh_database()


TEST_CLIENT_HOST = "testserver"
"""The ``Host`` that Starlette's TestClient sends (``http://testserver``): the test portals
answer it besides their public origin's (``SWREG_ALLOWED_HOSTS``)."""


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        secret_key=SECRET,
        argon2=FAST_ARGON2,
        allowed_hosts=(TEST_CLIENT_HOST,),
    )


@pytest.fixture
def app(settings: Settings, clock: FixedClock, pki: TestPKI) -> Iterator[App]:
    application = bootstrap(settings, clock=clock)
    pki.publish_to(application.trust, actor="test")
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
