"""The rows of 通關憑證查詢: one prebuilt SQLAlchemy Core statement per key kind, one round trip.

A key's certificates are login rows (joined to their account, for its name) and signing rows;
one ``UNION ALL`` reads both, ordered login first (``'login' < 'signing'``), then by id, and
selects only the columns a result row shows. Deleted certificates are left out; a login
certificate without an account is never found (inner join).

The statements are built once, compiled once per dialect into the driver's SQL text, and
executed on the pooled DBAPI connection of a plain SQLAlchemy ``Connection``: no ORM, no
Session, and none of the per-execution work of ``Connection.execute`` (the cache key, the
cursor description — 13 column objects per query with psycopg —, the result object), which
cost more CPU than the driver's own work (on PostgreSQL ≈ 135 against ≈ 250 µs of CPU per
lookup, ``bench/customs_query.py`` at 20,000 rows). The columns are converted by their
SQLAlchemy types' own result processors (aware UTC datetimes, as everywhere in the store).
psycopg prepares the statement after its fifth use on a connection.

PostgreSQL runs it in autocommit: no BEGIN and no ROLLBACK round trips, the one statement seeing
one committed state. The sqlite3 driver opens no transaction for a SELECT anyway, and switching
its isolation level would cost a PRAGMA on the way back to the pool.

Bypassing ``Connection.execute`` also bypasses its events and ``echo`` logging; a driver error
discards the connection (it is never returned to the pool in an unknown state) and propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Boolean,
    ColumnElement,
    CompoundSelect,
    Connection,
    Dialect,
    LargeBinary,
    Select,
    String,
    bindparam,
    false,
    literal_column,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.exc import OperationalError

from engine.store._database import Database, _unavailable
from engine.store._models import Account, Certificate

__all__ = ["CustomsKey", "CustomsLookupRow", "customs_lookup", "customs_statement"]


class CustomsKey(Enum):
    """What a 查詢憑證 key is, and so which certificates it finds."""

    BROKER = "broker"
    """大關別 + 專責人員代碼 (``A00001``): that broker's signing certificates."""
    UBN = "ubn"
    """The login certificates of accounts with the UBN, then the company's signing ones."""
    NATIONAL_ID_HASH = "national_id_hash"
    """The keyed hash of a 身分證字號: that person's login and broker certificates."""
    OID = "oid"
    """Login certificates with that OID."""


class CustomsLookupRow(NamedTuple):
    """The columns of one found certificate that a 查詢 result row shows.

    ``broker``: a signing certificate entered with a 身分證字號 (whether, never the hash);
    ``der``: signing certificates only (their subject is displayed from it); ``account``: the
    account's name, login certificates only.
    """

    id: int
    purpose: str
    ca: str
    kind: str | None
    broker: bool
    serial_hex: str
    subject: str
    not_before: datetime
    not_after: datetime
    usage_type: str | None
    status: str
    der: bytes | None
    account: str | None


# -- the statements ------------------------------------------------------------------------------

_CERTIFICATES = Certificate.__table__
_ACCOUNTS = Account.__table__
_C = _CERTIFICATES.c
_A = _ACCOUNTS.c
_KEY = bindparam("key", type_=String())
# Constants inline in the SQL, not bound: the planner sees them in a generic plan too.
_LOGIN: ColumnElement[str] = literal_column("'login'")
_SIGNING: ColumnElement[str] = literal_column("'signing'")
_DELETED: ColumnElement[str] = literal_column("'deleted'")


_LOGIN_COLUMNS = (
    _C.id, _C.purpose, _C.ca, _C.kind, type_coerce(false(), Boolean).label("broker"),
    _C.serial_hex, _C.subject, _C.not_before, _C.not_after, _C.usage_type, _C.status,
    type_coerce(null(), LargeBinary).label("der"), _A.name.label("account"),
)  # fmt: skip
_SIGNING_COLUMNS = (
    _C.id, _C.purpose, _C.ca, _C.kind, _C.national_id_hash.is_not(None).label("broker"),
    _C.serial_hex, _C.subject, _C.not_before, _C.not_after, _C.usage_type, _C.status,
    _C.der, type_coerce(null(), String).label("account"),
)  # fmt: skip


def _login(condition: ColumnElement[bool]) -> Select[Any]:
    return (
        select(*_LOGIN_COLUMNS)
        .select_from(_CERTIFICATES.join(_ACCOUNTS, _C.account_id == _A.id))
        .where(condition, _C.purpose == _LOGIN, _C.status != _DELETED)
    )


def _signing(condition: ColumnElement[bool]) -> Select[Any]:
    return select(*_SIGNING_COLUMNS).where(condition, _C.purpose == _SIGNING, _C.status != _DELETED)


def _ordered(*parts: Select[Any]) -> Select[Any] | CompoundSelect[Any]:
    if len(parts) == 1:
        return parts[0].order_by(_C.id)
    return union_all(*parts).order_by(literal_column("purpose"), literal_column("id"))


_STATEMENTS: dict[CustomsKey, Select[Any] | CompoundSelect[Any]] = {
    CustomsKey.BROKER: _ordered(_signing(_C.query_key == _KEY)),
    CustomsKey.UBN: _ordered(_login(_A.ubn == _KEY), _signing(_C.ubn == _KEY)),
    CustomsKey.NATIONAL_ID_HASH: _ordered(
        _login(_C.national_id_hash == _KEY), _signing(_C.national_id_hash == _KEY)
    ),
    CustomsKey.OID: _ordered(_login(_C.oid == _KEY)),
}


def customs_statement(kind: CustomsKey) -> Select[Any] | CompoundSelect[Any]:
    """The statement of a key kind, with its one bind parameter ``key`` (for ``EXPLAIN`` and
    the benchmark's floor)."""
    return _STATEMENTS[kind]


# -- compiled per dialect -------------------------------------------------------------------------


class _Compiled(NamedTuple):
    sql: str
    positions: int
    """How often ``key`` is bound, for a driver of positional parameters; 0: by name."""
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    """(column index, result processor of its type) for the columns the driver does not return
    as they are meant (SQLite: datetimes as text, booleans as integers; PostgreSQL: aware
    datetimes in the session's time zone)."""

    def parameters(self, key: str) -> tuple[str, ...] | dict[str, str]:
        return (key,) * self.positions if self.positions else {"key": key}

    def row(self, values: Sequence[Any]) -> CustomsLookupRow:
        if not self.processors:
            return CustomsLookupRow._make(values)
        converted = list(values)
        for index, process in self.processors:
            converted[index] = process(converted[index])
        return CustomsLookupRow._make(converted)


def _compile(statement: Select[Any] | CompoundSelect[Any], dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    names = compiled.positiontup or []
    if set(names) - {"key"} or (dialect.positional and not names):
        raise AssertionError(f"unexpected bind parameters {names}")  # pragma: no cover
    processors = []
    for index, column in enumerate(statement.selected_columns):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            processors.append((index, process))
    positions = len(names) if dialect.positional else 0
    return _Compiled(compiled.string, positions, tuple(processors))


_COMPILED: WeakKeyDictionary[Dialect, dict[CustomsKey, _Compiled]] = WeakKeyDictionary()


def _compiled(dialect: Dialect) -> dict[CustomsKey, _Compiled]:
    found = _COMPILED.get(dialect)
    if found is None:  # a race compiles twice, harmlessly
        found = {kind: _compile(statement, dialect) for kind, statement in _STATEMENTS.items()}
        _COMPILED[dialect] = found
    return found


# -- the lookup -----------------------------------------------------------------------------------


def customs_lookup(database: Database, kind: CustomsKey, key: str) -> list[CustomsLookupRow]:
    """The certificates ``key`` (of ``kind``) finds, login ones first, each by id; not deleted.

    ``NATIONAL_ID_HASH`` takes the keyed hash of the 身分證字號, never the number itself.
    """
    engine = database.engine
    compiled = _compiled(engine.dialect)[kind]
    try:
        connection = engine.connect()
    except OperationalError as exc:
        raise _unavailable(exc) from exc
    with connection:
        if engine.dialect.name != "sqlite":
            connection.execution_options(isolation_level="AUTOCOMMIT")
        found = _fetch(connection, compiled.sql, compiled.parameters(key))
    return [compiled.row(values) for values in found]


def _fetch(connection: Connection, sql: str, parameters: Any) -> Sequence[Sequence[Any]]:
    cursor = connection.connection.cursor()
    try:
        try:
            cursor.execute(sql, parameters)
            return cursor.fetchall()
        finally:
            cursor.close()
    except BaseException:
        connection.invalidate()  # in an unknown state (a lost link?): not back to the pool
        raise
