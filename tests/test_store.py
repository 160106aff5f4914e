"""The store on the test database (SQLite or PostgreSQL): schema, units of work, repositories."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import UniqueConstraint, inspect, text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError

from engine import App
from engine._errors import EnvironmentProblem, ErrorCode, RefusedError, UsageError, WorkflowError
from engine.store import (
    Account,
    Base,
    Certificate,
    Challenge,
    Database,
    RegistrationRecord,
)

from .conftest import ON_POSTGRESQL, FreshDatabase, sqlite_only

T0 = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
TAIPEI = timezone(timedelta(hours=8))
WF_HASH = "a" * 64


@pytest.fixture
def db(fresh_database: FreshDatabase) -> Iterator[Database]:
    database = Database(fresh_database(migrated=False))
    database.migrate()
    database.migrate()  # idempotent
    yield database
    database.dispose()


def rows(db: Database, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Raw rows, read outside any unit of work, as SQLite stores them (on PostgreSQL the
    native values are turned into that text: naive UTC datetimes, JSON, ISO dates, 0/1)."""
    with db.engine.connect() as conn:
        return [tuple(_as_sqlite(v) for v in r) for r in conn.execute(text(sql), params)]


def _as_sqlite(value: Any) -> Any:
    if isinstance(value, datetime):
        return str(value.astimezone(UTC).replace(tzinfo=None))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def make_registration(id: str = "reg-1", **over: Any) -> RegistrationRecord:
    values: dict[str, Any] = {
        "id": id,
        "state": "entering",
        "chosen_type": "person",
        "applicant_type": "person.natural",
        "workflow_hash": WF_HASH,
        "data": {"email": "a@example.tw"},
        "locked": [],
        "origin": "https://portal.example.tw",
        "created_at": T0,
        "updated_at": T0,
        "expires_at": T0 + timedelta(hours=1),
    }
    values.update(over)
    return RegistrationRecord(**values)


def make_account(name: str, **over: Any) -> Account:
    values: dict[str, Any] = {
        "name": name,
        "applicant_type": "person.natural",
        "category": "person",
        "email": "a@example.tw",
        "contact_name": "王小明",
        "national_id_hash": "f" * 64,
        "national_id_masked": "A12*****89",
        "phone": "02-12345678",
        "address": "臺北市",
        "birth_date": date(1990, 1, 2),
        "iot": False,
        "password_hash": "$argon2id$x",
        "profile": {},
        "registration_id": "reg-1",
        "created_at": T0,
    }
    values.update(over)
    return Account(**values)


def make_certificate(
    fingerprint: str = "c" * 64, purpose: str = "login", **over: Any
) -> Certificate:
    values: dict[str, Any] = {
        "fingerprint": fingerprint,
        "purpose": purpose,
        "der": b"\x30\x82",
        "serial_hex": "01ab",
        "subject": "CN=王小明",
        "issuer": "CN=MOICA",
        "ca": "MOICA",
        "not_before": T0 - timedelta(days=1),
        "not_after": T0 + timedelta(days=365),
        "created_at": T0,
    }
    values.update(over)
    return Certificate(**values)


def seed_registration(db: Database, id: str = "reg-1") -> None:
    with db.unit_of_work() as uow:
        uow.workflows.ensure(WF_HASH, "default", "[workflow]", T0)
        uow.registrations.add(make_registration(id))
        uow.commit()


# --- database and schema -------------------------------------------------------------------


@sqlite_only  # a SQLite file and its directory
def test_migrate_creates_parent_dir_and_is_idempotent(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'a' / 'b' / 'swreg.db'}")
    assert not database.is_migrated()
    database.migrate()
    database.migrate()
    assert database.is_migrated()
    assert (tmp_path / "a" / "b" / "swreg.db").is_file()
    assert rows(database, "SELECT version_num FROM alembic_version") == [("0011",)]
    database.dispose()


def test_migrations_up_down_and_up_on_the_test_database(fresh_database: FreshDatabase) -> None:
    database = Database(fresh_database(migrated=False))
    assert not database.is_migrated()
    config = database._alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        command.downgrade(config, "base")
    assert set(inspect(database.engine).get_table_names()) == {"alembic_version"}
    database.migrate()
    database.migrate()
    assert database.is_migrated()
    assert rows(database, "SELECT version_num FROM alembic_version") == [("0011",)]
    database.dispose()


def test_a_plain_postgresql_url_gets_the_psycopg_driver() -> None:
    database = Database("postgresql://swreg@db.example/swreg")  # nothing connects
    assert database.engine.dialect.driver == "psycopg"


@sqlite_only
def test_sqlite_connection_settings(db: Database) -> None:
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


@sqlite_only
def test_sqlite_synchronous_full_is_a_setting(tmp_path: Path) -> None:
    from engine import Settings

    settings = Settings.from_env({"SWREG_SQLITE_SYNCHRONOUS": "full"})
    assert settings.sqlite_synchronous == "FULL"
    database = Database(f"sqlite:///{tmp_path / 's.db'}", sqlite_synchronous="FULL")
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    database.engine.dispose()
    with pytest.raises(UsageError):
        Settings.from_env({"SWREG_SQLITE_SYNCHRONOUS": "OFF"})


def test_models_and_migrated_schema_agree(db: Database) -> None:
    inspector = inspect(db.engine)
    migrated = set(inspector.get_table_names()) - {"alembic_version"}
    assert migrated == set(Base.metadata.tables)
    assert migrated == {
        "registrations",
        "accounts",
        "certificates",
        "challenges",
        "trust_certificates",
        "crls",
        "workflow_definitions",
        "audit_log",
        "activation_tokens",
        "account_tokens",
        "login_challenges",
        "mobile_id_tickets",
        "sessions",
        "rate_limits",
        "reminders",
        "officers",
        "officer_sessions",
        "secret_key_check",
        "crl_sources",
        "ocsp_responses",
        "ocsp_attempts",
    }
    for name, table in Base.metadata.tables.items():
        columns = {c["name"]: c for c in inspector.get_columns(name)}
        assert list(columns) == [c.name for c in table.columns], name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, (name, column.name)
        indexes = {
            i["name"]: i["column_names"]
            for i in inspector.get_indexes(name)
            if "duplicates_constraint" not in i  # PostgreSQL: a UNIQUE constraint's index
        }
        assert indexes == {i.name: [c.name for c in i.columns] for i in table.indexes}, name
        pk = inspector.get_pk_constraint(name)["constrained_columns"]
        assert pk == [c.name for c in table.primary_key.columns], name
        fks = {
            (tuple(f["constrained_columns"]), f["referred_table"])
            for f in inspector.get_foreign_keys(name)
        }
        assert fks == {
            (tuple(f.parent.name for f in c.elements), c.referred_table.name)
            for c in table.foreign_key_constraints
        }, name
        uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
        model_uniques = {
            tuple(c.name for c in u.columns)
            for u in table.constraints
            if isinstance(u, UniqueConstraint)
        }
        assert uniques == model_uniques, name


@sqlite_only  # a SQLite file that cannot be opened
def test_unavailable_database_is_an_environment_problem(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}")  # a directory, not a file
    with pytest.raises(EnvironmentProblem) as info:
        database.unit_of_work().__enter__()
    assert info.value.code is ErrorCode.DATABASE_UNAVAILABLE
    with pytest.raises(EnvironmentProblem):
        database.migrate()
    database.dispose()


# --- unit of work --------------------------------------------------------------------------


def test_leaving_without_commit_rolls_back(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.workflows.ensure(WF_HASH, "default", "[workflow]", T0)
    assert rows(db, "SELECT hash FROM workflow_definitions") == []


def test_exception_rolls_back_and_propagates(db: Database) -> None:
    with pytest.raises(KeyError), db.unit_of_work() as uow:
        uow.workflows.ensure(WF_HASH, "default", "[workflow]", T0)
        uow.flush()
        raise KeyError("boom")
    assert rows(db, "SELECT hash FROM workflow_definitions") == []


def test_an_insert_as_first_write_still_rolls_back(db: Database) -> None:
    # The sqlite3 driver begins lazily, before the first INSERT: nothing may commit early.
    seed_registration(db)
    with db.unit_of_work() as uow:
        uow.accounts.add(make_account("ALICE"))
    assert rows(db, "SELECT name FROM accounts") == []


# --- registrations -------------------------------------------------------------------------


def test_registration_round_trip_and_stored_row(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.workflows.ensure(WF_HASH, "default", "[workflow]", T0)
        uow.workflows.ensure(WF_HASH, "other", "ignored", T0)  # already there: no change
        uow.registrations.add(
            make_registration(created_at=T0.astimezone(TAIPEI), evidence={"ca": "MOICA"})
        )
        uow.commit()
    assert rows(db, "SELECT hash, name, source FROM workflow_definitions") == [
        (WF_HASH, "default", "[workflow]")
    ]
    assert rows(
        db,
        "SELECT id, state, chosen_type, applicant_type, workflow_hash, data, locked, evidence,"
        " certificate_der, certificate_fingerprint, account_name, origin, version, created_at"
        " FROM registrations",
    ) == [
        (
            "reg-1",
            "entering",
            "person",
            "person.natural",
            WF_HASH,
            '{"email": "a@example.tw"}',
            "[]",
            '{"ca": "MOICA"}',
            None,
            None,
            None,
            "https://portal.example.tw",
            1,
            "2025-03-01 09:30:15.123456",
        )
    ]
    with db.unit_of_work() as uow:
        reg = uow.registrations.get("reg-1")
        assert reg is not None
        assert reg.created_at == T0 and reg.created_at.tzinfo is UTC
        assert reg.expires_at == T0 + timedelta(hours=1)
        assert uow.registrations.get("nope") is None
        reg.data["ubn"] = "12345675"
        reg.locked.append("email")
        reg.state = "card_check"
        reg.evidence = None
        uow.commit()  # nothing is tracked: without save() nothing changed
        assert reg.version == 1
    assert rows(db, "SELECT state, version FROM registrations") == [("entering", 1)]
    with db.unit_of_work() as uow:
        reg = uow.registrations.get("reg-1")
        assert reg is not None
        reg.data["ubn"] = "12345675"
        reg.locked.append("email")
        reg.state = "card_check"
        reg.evidence = None
        uow.registrations.save(reg)
        uow.commit()
        assert reg.version == 2
    assert rows(db, "SELECT state, data, locked, evidence, version FROM registrations") == [
        ("card_check", '{"email": "a@example.tw", "ubn": "12345675"}', '["email"]', None, 2)
    ]


def test_naive_datetime_refused(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.workflows.ensure(WF_HASH, "default", "[workflow]", T0)
        with pytest.raises(Exception, match="naive datetime"):
            uow.registrations.add(make_registration(created_at=datetime(2025, 1, 1)))


def test_optimistic_locking(db: Database) -> None:
    seed_registration(db)
    with db.unit_of_work() as first, db.unit_of_work() as second:
        a = first.registrations.get("reg-1")
        b = second.registrations.get("reg-1")
        assert a is not None and b is not None
        a.state = "card_check"
        first.registrations.save(a)
        first.commit()
        b.state = "cancelled"
        with pytest.raises(WorkflowError) as info:
            second.registrations.save(b)
        assert info.value.code is ErrorCode.INVALID_TRANSITION
        assert info.value.detail == "concurrent update"
        assert b.version == 1  # not moved on: nothing was written
    assert rows(db, "SELECT state, version FROM registrations") == [("card_check", 2)]


def test_a_stale_save_undoes_the_whole_unit_of_work(db: Database) -> None:
    seed_registration(db)
    with pytest.raises(WorkflowError), db.unit_of_work() as second:
        b = second.registrations.get("reg-1")
        assert b is not None
        with db.unit_of_work() as first:
            a = first.registrations.get("reg-1")
            assert a is not None
            a.state = "card_check"
            first.registrations.save(a)
            first.commit()
        second.accounts.add(make_account("ALICE"))  # other work of the losing unit of work
        b.state = "cancelled"
        second.registrations.save(b)
        second.commit()
    assert rows(db, "SELECT state, version FROM registrations") == [("card_check", 2)]
    assert rows(db, "SELECT name FROM accounts") == []


# --- accounts ------------------------------------------------------------------------------


def test_duplicate_account_keeps_outer_transaction_usable(db: Database) -> None:
    seed_registration(db)
    with db.unit_of_work() as uow:
        uow.accounts.add(make_account("ALICE"))
        uow.commit()
    with db.unit_of_work() as uow:
        reg = uow.registrations.get("reg-1")
        assert reg is not None
        reg.state = "completed"  # other work, written before the failing insert
        uow.registrations.save(reg)
        with pytest.raises(RefusedError) as info:
            uow.accounts.add(make_account("ALICE", email="other@example.tw"))
        assert info.value.code is ErrorCode.ACCOUNT_EXISTS
        assert info.value.field == "account"
        uow.accounts.add(make_account("BOB", ubn="12345675", national_id_hash=None))
        uow.commit()
    # (no ids: a PostgreSQL sequence keeps the number the refused insert drew)
    assert rows(
        db, "SELECT name, email, status, ubn, birth_date, iot FROM accounts ORDER BY id"
    ) == [
        ("ALICE", "a@example.tw", "pending_activation", None, "1990-01-02", 0),
        ("BOB", "a@example.tw", "pending_activation", "12345675", "1990-01-02", 0),
    ]
    assert rows(db, "SELECT state FROM registrations") == [("completed",)]
    with db.unit_of_work() as uow:
        assert uow.accounts.exists("ALICE")
        assert not uow.accounts.exists("CAROL")
        bob = uow.accounts.get_by_name("BOB")
        assert bob is not None and bob.birth_date == date(1990, 1, 2) and bob.profile == {}
        assert uow.accounts.get_by_name("CAROL") is None


def test_broken_foreign_key_is_not_mistaken_for_a_duplicate(db: Database) -> None:
    with db.unit_of_work() as uow, pytest.raises(Exception, match=r"(?i)FOREIGN KEY"):
        uow.certificates.add(make_certificate(account_id=999))


# --- certificates --------------------------------------------------------------------------


def test_certificates(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.accounts.add(make_account("ALICE"))
        account = uow.accounts.get_by_name("ALICE")
        assert account is not None
        uow.certificates.add(make_certificate(account_id=account.id, query_key="q1"))
        uow.certificates.add(make_certificate(purpose="signing", status="replaced"))
        with pytest.raises(RefusedError) as info:
            uow.certificates.add(make_certificate())
        assert info.value.code is ErrorCode.ALREADY_REGISTERED
        uow.commit()
    assert rows(
        db, "SELECT id, fingerprint, purpose, account_id, status, query_key FROM certificates"
    ) == [
        (1, "c" * 64, "login", 1, "active", "q1"),
        (2, "c" * 64, "signing", None, "replaced", None),
    ]
    with db.unit_of_work() as uow:
        login = uow.certificates.active_login("c" * 64)
        assert login is not None and login.id == 1 and login.not_after.tzinfo is UTC
        assert uow.certificates.active_login("d" * 64) is None
        signing = uow.certificates.find("c" * 64, "signing")
        assert signing is not None and signing.status == "replaced"
        assert uow.certificates.find("d" * 64, "login") is None
        login.status = "deleted"
        uow.commit()
    with db.unit_of_work() as uow:
        assert uow.certificates.active_login("c" * 64) is None


# --- challenges ----------------------------------------------------------------------------


def test_challenge_is_single_use(db: Database) -> None:
    seed_registration(db)
    with db.unit_of_work() as uow:
        uow.challenges.add(
            Challenge(
                id="ch-1",
                registration_id="reg-1",
                nonce="ab" * 32,
                origin="https://portal.example.tw",
                created_at=T0,
                expires_at=T0 + timedelta(minutes=5),
            )
        )
        uow.commit()
    used = T0 + timedelta(seconds=30)
    with db.unit_of_work() as first, db.unit_of_work() as second:
        loaded = first.challenges.get("ch-1")
        assert loaded is not None and loaded.used_at is None
        assert first.challenges.consume("ch-1", used) is True
        first.commit()
        assert second.challenges.consume("ch-1", used) is False
        assert second.challenges.consume("missing", used) is False
    assert rows(db, "SELECT id, used_at FROM challenges") == [
        ("ch-1", "2025-03-01 09:30:45.123456")
    ]
    with db.unit_of_work() as uow:
        assert uow.challenges.consume("ch-1", used + timedelta(seconds=1)) is False
        again = uow.challenges.get("ch-1")
        assert again is not None and again.used_at == used
        assert uow.challenges.get("missing") is None


# --- trust store and CRLs ------------------------------------------------------------------


def test_trust_certificates_are_idempotent(db: Database) -> None:
    with db.unit_of_work() as uow:
        assert uow.trust.version() == (0, 0)
        assert uow.trust.add(b"root", "CN=Root", "1" * 64, True, T0) is True
        assert uow.trust.add(b"root", "CN=Root", "1" * 64, True, T0) is False
        assert uow.trust.add(b"sub", "CN=Sub", "2" * 64, False, T0) is True
        uow.commit()
    assert rows(db, "SELECT id, fingerprint, der, subject, is_anchor FROM trust_certificates") == [
        (1, "1" * 64, b"root", "CN=Root", 1),
        (2, "2" * 64, b"sub", "CN=Sub", 0),
    ]
    with db.unit_of_work() as uow:
        assert [t.subject for t in uow.trust.list()] == ["CN=Root", "CN=Sub"]
        assert uow.trust.version() == (2, 2)


def test_crls_are_idempotent_and_keep_big_numbers(db: Database) -> None:
    big = 2**100 + 7
    with db.unit_of_work() as uow:
        assert uow.crls.version() == (0, 0)
        assert uow.crls.add(b"crl", "CN=Sub", "3" * 64, big, T0, T0 + timedelta(days=7), T0)
        assert not uow.crls.add(b"crl", "CN=Sub", "3" * 64, big, T0, None, T0)
        assert uow.crls.add(b"crl2", "CN=Sub", "4" * 64, None, T0, None, T0)
        uow.commit()
    assert rows(db, "SELECT id, crl_number, next_update FROM crls") == [
        (1, str(big), "2025-03-08 09:30:15.123456"),
        (2, None, None),
    ]
    with db.unit_of_work() as uow:
        first, second = uow.crls.list()
        assert first.crl_number is not None and int(first.crl_number) == big
        assert first.this_update == T0 and second.next_update is None
        assert uow.crls.version() == (2, 2)


def test_idle_registrations(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.workflows.ensure(WF_HASH, "default", "[workflow]", T0)
        uow.registrations.add(make_registration("late", expires_at=T0 - timedelta(minutes=1)))
        uow.registrations.add(make_registration("later", expires_at=T0 - timedelta(minutes=9)))
        uow.registrations.add(make_registration("live", expires_at=T0 + timedelta(minutes=1)))
        uow.registrations.add(
            make_registration("done", state="completed", expires_at=T0 - timedelta(hours=1))
        )
        uow.commit()
    with db.unit_of_work() as uow:
        assert [r.id for r in uow.registrations.idle(T0)] == ["later", "late"]
        assert [r.id for r in uow.registrations.idle(T0, limit=1)] == ["later"]
        assert [r.id for r in uow.registrations.idle(T0, ending_states=())] == [
            "done",
            "later",
            "late",
        ]


def test_a_value_the_database_cannot_hold_is_a_coded_refusal(app: App) -> None:
    """PostgreSQL text cannot hold NUL (the portal refuses it first); the store says so in a code,
    never with a raw DataError. SQLite stores and compares it: the registration is not found."""
    with pytest.raises((RefusedError, WorkflowError)) as info:
        app.registrations.status("a\x00b")
    expected = ErrorCode.INVALID_VALUE if ON_POSTGRESQL else ErrorCode.REGISTRATION_NOT_FOUND
    assert info.value.code == expected


# -- personal data stays out of error texts and logs --------------------------------------------

PERSONAL = ("A123456789", "ming@example.com")


def _probe_table(db: Database) -> None:
    """A scratch table: a unique name and a NOT NULL integer (STRICT on SQLite, so that text in
    the integer column fails there too), holding one row named with personal data."""
    strict = "" if ON_POSTGRESQL else " STRICT"
    with db.engine.begin() as connection:
        connection.execute(
            text(f"CREATE TABLE leak_probe (name TEXT UNIQUE, n INTEGER NOT NULL){strict}")
        )
        connection.execute(text("INSERT INTO leak_probe VALUES (:v, 1)"), {"v": " ".join(PERSONAL)})


@pytest.mark.parametrize(
    ("statement", "failure"),
    [
        # the name is taken: PostgreSQL's DETAIL would quote it
        ("INSERT INTO leak_probe VALUES (:v, 2)", IntegrityError),
        # n missing: PostgreSQL's DETAIL would quote the failing row
        ("INSERT INTO leak_probe (name) VALUES (:v)", IntegrityError),
        # text in the integer column: PostgreSQL's message would quote the text
        ("INSERT INTO leak_probe VALUES ('x', :v)", (IntegrityError, DataError)),
        # an unknown table: only SQLAlchemy's "[parameters: ...]" could show the value
        ("SELECT name FROM no_such_table WHERE name = :v", (OperationalError, ProgrammingError)),
    ],
)
def test_a_failing_statement_never_shows_the_values_it_was_given(
    db: Database,
    statement: str,
    failure: type[Exception] | tuple[type[Exception], ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _probe_table(db)
    with (
        caplog.at_level(logging.DEBUG, logger="sqlalchemy"),
        pytest.raises(failure) as caught,
        db.engine.connect() as connection,
    ):
        connection.execute(text(statement), {"v": " ".join(PERSONAL)})
    shown = "".join(traceback.format_exception(caught.value))  # with the driver's own error
    assert "hide_parameters=True" in shown
    for value in PERSONAL:
        assert value not in shown
        assert value not in caplog.text
    with db.unit_of_work() as uow:  # the row is still the only one
        assert uow.connection().execute(text("SELECT count(*) FROM leak_probe")).scalar() == 1


def test_a_failing_prebuilt_read_never_shows_the_values_it_was_given(db: Database) -> None:
    """``Database.fetch_prebuilt`` bypasses the engine's ``handle_error`` hook: it hides the
    same values itself."""
    _probe_table(db)
    probe = sa.table("leak_probe", sa.column("name"), sa.column("n"))
    unknown_table = sa.table("no_such_table", sa.column("name"))
    failing = [sa.select(unknown_table.c.name).where(unknown_table.c.name == sa.bindparam("v"))]
    if ON_POSTGRESQL:  # text for an integer: PostgreSQL's message would quote it (SQLite compares)
        failing.append(sa.select(probe.c.name).where(probe.c.n == sa.bindparam("v")))
    for statement in failing:
        with pytest.raises((DataError, OperationalError, ProgrammingError)) as caught:
            db.fetch_prebuilt(statement, {"v": " ".join(PERSONAL)})
        shown = "".join(traceback.format_exception(caught.value))  # with the driver's own error
        for value in PERSONAL:
            assert value not in shown
    assert db.fetch_prebuilt(sa.select(probe.c.n), {}) == [(1,)]  # the next read works


def test_echo_logs_statements_without_their_values(
    fresh_database: FreshDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(fresh_database(), echo=True)
    try:
        with (
            caplog.at_level(logging.INFO, logger="sqlalchemy.engine"),
            database.engine.connect() as connection,
        ):
            value = connection.execute(text("SELECT :v"), {"v": " ".join(PERSONAL)}).scalar()
        assert value == " ".join(PERSONAL)
        assert "SELECT" in caplog.text
        for part in PERSONAL:
            assert part not in caplog.text
    finally:
        database.dispose()
