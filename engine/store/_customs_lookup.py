"""The rows of 通關憑證查詢: one prebuilt SQLAlchemy Core statement per key kind, one round trip.

A key's certificates are login rows (joined to their account, for its name) and signing rows;
one ``UNION ALL`` reads both, ordered login first (``'login' < 'signing'``), then by id, and
selects only the columns a result row shows. Deleted certificates are left out; a login
certificate without an account is never found (inner join). The constants (``'login'``,
``'signing'``, ``'deleted'``) are inline in the SQL, the key its one bind parameter.

The statements are built once, at import, and run by
:meth:`~engine.store._database.Database.fetch_prebuilt` (what the cached OCSP read uses too):
compiled once per database, on the pooled driver cursor, outside any transaction (autocommit
on PostgreSQL), no ORM and none of ``Connection.execute``'s per-execution work, the columns
converted by their types' result processors (aware UTC datetimes, booleans). Its docstring says
how, and how errors are raised: an unreachable database is ``database_unavailable``, a failing
statement its SQLAlchemy exception, the connection discarded.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    ColumnElement,
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

from engine.store._database import Database, PrebuiltQuery
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
    account's name, login certificates only; ``card_rank``: the certificate's card rank
    (``mobile`` for a mobile citizen certificate, DESIGN.md §13).
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
    card_rank: str | None = None


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
    type_coerce(null(), LargeBinary).label("der"), _A.name.label("account"), _C.card_rank,
)  # fmt: skip
_SIGNING_COLUMNS = (
    _C.id, _C.purpose, _C.ca, _C.kind, _C.national_id_hash.is_not(None).label("broker"),
    _C.serial_hex, _C.subject, _C.not_before, _C.not_after, _C.usage_type, _C.status,
    _C.der, type_coerce(null(), String).label("account"), _C.card_rank,
)  # fmt: skip


def _login(condition: ColumnElement[bool]) -> Select[Any]:
    return (
        select(*_LOGIN_COLUMNS)
        .select_from(_CERTIFICATES.join(_ACCOUNTS, _C.account_id == _A.id))
        .where(condition, _C.purpose == _LOGIN, _C.status != _DELETED)
    )


def _signing(condition: ColumnElement[bool]) -> Select[Any]:
    return select(*_SIGNING_COLUMNS).where(condition, _C.purpose == _SIGNING, _C.status != _DELETED)


def _ordered(*parts: Select[Any]) -> PrebuiltQuery:
    if len(parts) == 1:
        return parts[0].order_by(_C.id)
    return union_all(*parts).order_by(literal_column("purpose"), literal_column("id"))


_STATEMENTS: dict[CustomsKey, PrebuiltQuery] = {
    CustomsKey.BROKER: _ordered(_signing(_C.query_key == _KEY)),
    CustomsKey.UBN: _ordered(_login(_A.ubn == _KEY), _signing(_C.ubn == _KEY)),
    CustomsKey.NATIONAL_ID_HASH: _ordered(
        _login(_C.national_id_hash == _KEY), _signing(_C.national_id_hash == _KEY)
    ),
    CustomsKey.OID: _ordered(_login(_C.oid == _KEY)),
}


def customs_statement(kind: CustomsKey) -> PrebuiltQuery:
    """The statement of a key kind, with its one bind parameter ``key`` (for ``EXPLAIN`` and
    the benchmark's floor; ``prebuilt(customs_statement(kind), dialect).sql`` is the SQL text
    the driver receives)."""
    return _STATEMENTS[kind]


# -- the lookup -----------------------------------------------------------------------------------


def customs_lookup(database: Database, kind: CustomsKey, key: str) -> list[CustomsLookupRow]:
    """The certificates ``key`` (of ``kind``) finds, login ones first, each by id; not deleted.

    ``NATIONAL_ID_HASH`` takes the keyed hash of the 身分證字號, never the number itself.
    """
    rows = database.fetch_prebuilt(_STATEMENTS[kind], {"key": key})
    return [CustomsLookupRow._make(row) for row in rows]
