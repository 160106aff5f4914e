"""通關憑證查詢 at the store: one statement per key kind, no transaction, the rows it finds.

``test_customs.py`` covers the service's result rows through real imports; here rows are
written directly, so ids, UBNs and statuses can be placed where the query could go wrong (a
signing row older than the login row, a login row whose account has another UBN).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError, ProgrammingError

from engine import App, EnvironmentProblem, ErrorCode, SwregError
from engine.services.hashing import IdentifierHasher
from engine.store import Account, Certificate, Database
from engine.store._customs_lookup import CustomsKey, CustomsLookupRow, customs_lookup
from engine.testing.pki import TestPKI
from engine.testing.ports import free_port

from .conftest import ORG_OID, SECRET, FreshDatabase, sqlite_only

UBN = "04595257"
OTHER_UBN = "97162640"
NATIONAL_ID = "A123456789"
BROKER_KEY = "A00001"
NOT_BEFORE = datetime(2025, 1, 1, 16, 0, tzinfo=UTC)  # 2025/01/02 in Taipei
NOT_AFTER = NOT_BEFORE + timedelta(days=730)


def id_hash(national_id: str = NATIONAL_ID) -> str:
    return IdentifierHasher(SECRET).hash("national_id", national_id)


class Store:
    """Writes accounts and certificates straight into the app's database (ids in order)."""

    def __init__(self, app: App, der: bytes) -> None:
        self.app = app
        self.der = der
        self.serial = 0

    def account(self, name: str, *, ubn: str | None = None) -> int:
        with self.app.database.unit_of_work() as uow:
            row = Account(
                name=name, applicant_type="enterprise.general", category="enterprise",
                status="active", email=f"{self.serial}@example.com", contact_name="陳大文",
                ubn=ubn, phone="02-2345-6789", address="臺北市", iot=False, password_hash="x",
                profile={}, registration_id="reg", created_at=NOT_BEFORE,
            )  # fmt: skip
            uow.session.add(row)
            uow.commit()
            return row.id

    def certificate(self, purpose: str, **values: Any) -> int:
        self.serial += 1
        fields: dict[str, Any] = {
            "fingerprint": f"{self.serial:064x}", "purpose": purpose, "der": self.der,
            "serial_hex": f"{self.serial:X}", "subject": "CN=test", "issuer": "CN=ca",
            "ca": "TaiCA", "not_before": NOT_BEFORE, "not_after": NOT_AFTER,
            "created_at": NOT_BEFORE, "status": "active", **values,
        }  # fmt: skip
        with self.app.database.unit_of_work() as uow:
            row = Certificate(**fields)
            uow.session.add(row)
            uow.commit()
            return row.id


@pytest.fixture
def store(app: App, pki: TestPKI) -> Store:
    return Store(app, pki.issue_customs(UBN, "06").der())


def found(app: App, kind: CustomsKey, key: str) -> list[tuple[int, str]]:
    return [(row.id, row.purpose) for row in customs_lookup(app.database, kind, key)]


# -- what each key kind finds, in which order ------------------------------------------------


def test_login_rows_come_first_whatever_their_ids(app: App, store: Store) -> None:
    signing = store.certificate("signing", ubn=UBN, kind="non_ic", usage_type="shipping")
    account = store.account(UBN, ubn=UBN)
    login = store.certificate("login", account_id=account, ubn=UBN, ca="MOEACA")
    later = store.certificate("signing", ubn=UBN, kind="ic_card", usage_type="airline")
    assert found(app, CustomsKey.UBN, UBN) == [
        (login, "login"),
        (signing, "signing"),
        (later, "signing"),
    ]
    assert [row.usage_type for row in app.customs.query(UBN)] == [None, "shipping", "airline"]


def test_a_ubn_finds_login_rows_by_the_accounts_ubn(app: App, store: Store) -> None:
    ours = store.account("ours", ubn=UBN)
    theirs = store.account("theirs", ubn=OTHER_UBN)
    by_account = store.certificate("login", account_id=ours, ubn=None, ca="MOICA")
    store.certificate("login", account_id=theirs, ubn=UBN, ca="MOEACA")  # another account's
    store.certificate("login", account_id=None, ubn=UBN, ca="MOEACA")  # no account
    signing = store.certificate("signing", ubn=UBN)
    store.certificate("signing", ubn=OTHER_UBN)
    assert found(app, CustomsKey.UBN, UBN) == [(by_account, "login"), (signing, "signing")]


def test_deleted_rows_hide_and_replaced_ones_show(app: App, store: Store) -> None:
    account = store.account(UBN, ubn=UBN)
    store.certificate("login", account_id=account, ubn=UBN, status="deleted")
    replaced = store.certificate("login", account_id=account, ubn=UBN, status="replaced")
    store.certificate("signing", ubn=UBN, status="deleted")
    active = store.certificate("signing", ubn=UBN)
    rows = customs_lookup(app.database, CustomsKey.UBN, UBN)
    assert [(row.id, row.status) for row in rows] == [(replaced, "replaced"), (active, "active")]


def test_a_broker_key_finds_signing_rows_only(app: App, store: Store) -> None:
    account = store.account("ming@example.com")
    store.certificate("login", account_id=account, query_key=BROKER_KEY)
    first = store.certificate("signing", query_key=BROKER_KEY, national_id_hash=id_hash())
    second = store.certificate("signing", query_key=BROKER_KEY, national_id_hash=id_hash())
    store.certificate("signing", query_key="A00002")
    assert found(app, CustomsKey.BROKER, BROKER_KEY) == [(first, "signing"), (second, "signing")]


def test_a_national_id_is_looked_up_by_its_keyed_hash_only(app: App, store: Store) -> None:
    person = store.account("ming@example.com")
    login = store.certificate("login", account_id=person, national_id_hash=id_hash(), ca="MOICA")
    store.certificate("login", account_id=None, national_id_hash=id_hash())  # no account
    broker = store.certificate("signing", national_id_hash=id_hash(), query_key=BROKER_KEY)
    store.certificate("signing", national_id_hash=id_hash("F131104093"))
    expected = [(login, "login"), (broker, "signing")]
    assert found(app, CustomsKey.NATIONAL_ID_HASH, id_hash()) == expected
    assert found(app, CustomsKey.NATIONAL_ID_HASH, NATIONAL_ID) == []
    assert [row.id for row in app.customs.query(NATIONAL_ID.lower())] == [login, broker]


def test_an_oid_finds_login_rows_with_an_account(app: App, store: Store) -> None:
    org = store.account(ORG_OID)
    login = store.certificate("login", account_id=org, oid=ORG_OID, ca="XCA")
    store.certificate("login", account_id=None, oid=ORG_OID, ca="XCA")
    store.certificate("signing", oid=ORG_OID)
    assert found(app, CustomsKey.OID, ORG_OID) == [(login, "login")]


def test_the_row_values(app: App, store: Store) -> None:
    account = store.account(UBN, ubn=UBN)
    store.certificate("login", account_id=account, ubn=UBN, ca="MOEACA")
    store.certificate(
        "signing", ubn=UBN, kind="ic_card", usage_type="shipping", national_id_hash=id_hash()
    )
    store.certificate("signing", ubn=UBN, kind="non_ic", usage_type="warehouse")
    login, broker, company = customs_lookup(app.database, CustomsKey.UBN, UBN)
    assert login == CustomsLookupRow(
        id=login.id, purpose="login", ca="MOEACA", kind=None, broker=False, serial_hex="1",
        subject="CN=test", not_before=NOT_BEFORE, not_after=NOT_AFTER, usage_type=None,
        status="active", der=None, account=UBN,
    )  # fmt: skip
    assert (broker.broker, broker.der, broker.account) == (True, store.der, None)
    assert (broker.kind, broker.usage_type, broker.ca) == ("ic_card", "shipping", "TaiCA")
    assert company.broker is False
    for row in (login, broker, company):
        assert row.not_before.utcoffset() == timedelta(0)
        assert type(row.broker) is bool


def test_the_service_shows_them(app: App, store: Store) -> None:
    account = store.account(UBN, ubn=UBN)
    store.certificate("login", account_id=account, ubn=UBN, ca="MOEACA")
    store.certificate("signing", ubn=UBN, kind="ic_card", national_id_hash=id_hash())
    rows = app.customs.query(f" {UBN} ")
    assert [(row.form, row.kind, row.purpose) for row in rows] == [
        ("IC卡", "工商憑證", "登入"),
        ("IC卡", "報關人員憑證", "簽章"),
    ]
    # a stranger asks: the account name is masked (DESIGN.md §5)
    assert rows[0].info == "登入用憑證,使用者帳號0******7, 序號1, 起訖日期:2025/01/02~2027/01/02"
    assert rows[1].info.startswith("序號: 2, 主體: C=TW O=Finance ")
    assert rows[1].info.endswith(", 起訖日期:2025/01/02~2027/01/02")


def test_a_mobile_certificate_is_no_ic_card(app: App, store: Store) -> None:
    """DESIGN.md §13: the 憑證型態 of a login certificate of card rank ``mobile`` (行動自然人憑證
    through TW FidO) is 「行動自然人憑證」; the same person's card stays 「IC卡」."""
    account = store.account("ming@example.com")
    mobile = store.certificate(
        "login", account_id=account, national_id_hash=id_hash(), ca="MOICA", card_rank="mobile"
    )
    card = store.certificate("login", account_id=account, national_id_hash=id_hash(), ca="MOICA")
    found_rows = customs_lookup(app.database, CustomsKey.NATIONAL_ID_HASH, id_hash())
    assert [(row.id, row.card_rank) for row in found_rows] == [(mobile, "mobile"), (card, None)]
    rows = app.customs.query(NATIONAL_ID)
    assert [(row.form, row.form_en, row.kind, row.purpose) for row in rows] == [
        ("行動自然人憑證", "Mobile citizen certificate", "自然人憑證", "登入"),
        ("IC卡", "IC card", "自然人憑證", "登入"),
    ]


# The same value sits in every column a lookup could read, one row each (login rows with an
# account, so the join does not hide them): which of them each key kind finds.
EVERYWHERE = [
    ("login", "the account's ubn"),
    ("login", "the account's name"),
    ("login", "ubn"),
    ("login", "query_key"),
    ("login", "national_id_hash"),
    ("login", "oid"),
    ("login", "serial_hex and subject"),
    ("signing", "the account's ubn"),
    ("signing", "ubn"),
    ("signing", "query_key"),
    ("signing", "national_id_hash"),
    ("signing", "oid"),
    ("signing", "serial_hex and subject"),
]


@pytest.mark.parametrize(
    ("kind", "finds"),
    [
        (CustomsKey.BROKER, [("signing", "query_key")]),
        (CustomsKey.UBN, [("login", "the account's ubn"), ("signing", "ubn")]),
        (
            CustomsKey.NATIONAL_ID_HASH,
            [("login", "national_id_hash"), ("signing", "national_id_hash")],
        ),
        (CustomsKey.OID, [("login", "oid")]),
    ],
    ids=["broker", "ubn", "national_id_hash", "oid"],
)
def test_each_key_kind_finds_by_its_own_columns_only(
    app: App, store: Store, kind: CustomsKey, finds: list[tuple[str, str]]
) -> None:
    key = UBN  # fits every column (ubn is the narrowest, 8 characters)
    with_ubn = store.account("with the UBN", ubn=key)
    named = store.account(key)
    plain = store.account("plain")
    placed: dict[str, dict[str, Any]] = {
        "the account's ubn": {"account_id": with_ubn},
        "the account's name": {"account_id": named},
        "ubn": {"account_id": plain, "ubn": key},
        "query_key": {"account_id": plain, "query_key": key},
        "national_id_hash": {"account_id": plain, "national_id_hash": key},
        "oid": {"account_id": plain, "oid": key},
        "serial_hex and subject": {"account_id": plain, "serial_hex": key, "subject": f"CN={key}"},
    }
    where = {
        store.certificate(purpose, **placed[column]): (purpose, column)
        for purpose, column in EVERYWHERE
    }
    assert [where[row.id] for row in customs_lookup(app.database, kind, key)] == finds
    assert customs_lookup(app.database, kind, OTHER_UBN) == []


@pytest.mark.parametrize("key", ["A0001", "04595258", "A123456788", "1.2.3.4.", "97162640x"])
def test_other_keys_are_refused_without_a_query(app: App, key: str) -> None:
    with watching(app) as watched, pytest.raises(SwregError) as info:
        app.customs.query(key)
    assert (str(info.value.code), info.value.field) == ("invalid_value", "key")
    assert watched.checkouts == 0


# -- how it reaches the database ------------------------------------------------------------------


@dataclass
class Watched:
    checkouts: int = 0
    sql: list[str] = field(default_factory=list)
    """What SQLite ran (its driver's trace callback); empty on PostgreSQL."""
    in_transaction: list[bool] = field(default_factory=list)
    """Whether each connection was in a transaction when handed back to the pool."""


def _in_transaction(dbapi_connection: Any) -> bool:
    if hasattr(dbapi_connection, "in_transaction"):  # sqlite3
        return bool(dbapi_connection.in_transaction)
    import psycopg.pq

    return bool(dbapi_connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)


@contextmanager
def watching(app: App) -> Iterator[Watched]:
    """The pooled connections handed out while the block runs, and what they did."""
    engine, watched = app.database.engine, Watched()

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        watched.checkouts += 1
        if hasattr(dbapi_connection, "set_trace_callback"):
            dbapi_connection.set_trace_callback(watched.sql.append)

    def reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        watched.in_transaction.append(_in_transaction(dbapi_connection))
        if hasattr(dbapi_connection, "set_trace_callback"):
            dbapi_connection.set_trace_callback(None)

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "reset", reset)
    try:
        yield watched
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "reset", reset)


@pytest.fixture
def every_kind(app: App, store: Store) -> dict[str, list[int]]:
    """A key of each kind, and the ids of the certificates it finds."""
    company = store.account(UBN, ubn=UBN)
    login = store.certificate("login", account_id=company, ubn=UBN, ca="MOEACA")
    signing = store.certificate(
        "signing", ubn=UBN, query_key=BROKER_KEY, national_id_hash=id_hash()
    )
    org = store.account(ORG_OID)
    org_login = store.certificate("login", account_id=org, oid=ORG_OID, ca="XCA")
    return {
        UBN: [login, signing],
        BROKER_KEY: [signing],
        NATIONAL_ID: [signing],
        ORG_OID: [org_login],
    }


@sqlite_only  # the sqlite3 driver reports each statement it runs
def test_one_statement_per_query(app: App, every_kind: dict[str, list[int]]) -> None:
    for key, ids in every_kind.items():
        with watching(app) as watched:
            rows = app.customs.query(key)
        assert [row.id for row in rows] == ids, key
        assert len(watched.sql) == 1, (key, len(watched.sql))


def test_no_transaction_is_left_to_roll_back(app: App, every_kind: dict[str, list[int]]) -> None:
    # PostgreSQL: autocommit, no BEGIN; SQLite: its driver opens no transaction for a SELECT
    with watching(app) as watched:
        for key in every_kind:
            app.customs.query(key)
    assert watched.checkouts == len(every_kind)
    assert watched.in_transaction == [False] * len(every_kind)


def test_a_failing_lookup_raises_as_sqlalchemy_hides_the_key_and_discards_the_connection(
    fresh_database: FreshDatabase,
) -> None:
    database = Database(fresh_database(migrated=False))  # no tables yet
    discarded: list[object] = []
    event.listen(database.engine, "invalidate", lambda *args: discarded.append(args))
    try:
        with pytest.raises((OperationalError, ProgrammingError)) as info:  # SQLite, PostgreSQL
            customs_lookup(database, CustomsKey.NATIONAL_ID_HASH, id_hash())
        assert "certificates" in str(info.value)
        assert id_hash() not in "".join(traceback.format_exception(info.value))
        assert len(discarded) == 1  # never back to the pool in an unknown state
        database.migrate()
        assert customs_lookup(database, CustomsKey.NATIONAL_ID_HASH, id_hash()) == []
    finally:
        database.dispose()


def test_an_unreachable_database_is_database_unavailable() -> None:
    database = Database(f"postgresql://swreg@127.0.0.1:{free_port()}/nothing")  # nothing listens
    try:
        with pytest.raises(EnvironmentProblem) as info:
            customs_lookup(database, CustomsKey.UBN, UBN)
        assert info.value.code is ErrorCode.DATABASE_UNAVAILABLE
    finally:
        database.dispose()
