"""The store's side of fetched CRLs (DESIGN.md §4a): distribution points and the newest CRL per
issuer key and partition.

:class:`CrlSourceRepository` keeps the URLs ``swreg revocation refresh`` re-requests (unique by
URL: concurrent adds of one URL write one row). :class:`FetchedCrlRepository` stores a fetched
CRL as the newest of its *slot* (issuer key + partition) and deletes the older fetched CRLs of
that slot in the same transaction, so at most one fetched CRL per slot is kept after a run;
CRLs added by ``swreg crl add`` (no issuer key recorded) are never touched. The CRL rows are the
ones the trust snapshot's revocation index reads (``uow.crls.list()``).

:class:`OcspCacheRepository` keeps the cached OCSP answer per certificate (unique by
fingerprint; a write replaces the row in one ``INSERT ... ON CONFLICT DO UPDATE``, so workers
racing on one certificate leave one row, the last answer — but never over a final revocation)
and the latest request per responder URL. A certificate check reads its answer with
:meth:`OcspCacheRepository.lookup`: one prebuilt SELECT on a pooled driver cursor, outside any
unit of work (:meth:`~engine.store._database.Database.fetch_prebuilt`); the upserts are built
once per dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, delete, not_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.store._models import CRL, CrlSource, OcspAttempt, OcspResponse
from engine.store._repositories import _Repository, insert_new

if TYPE_CHECKING:  # _database imports this module
    from engine.store._database import Database

_SOURCES = cast(Table, CrlSource.__table__)
_CRLS = cast(Table, CRL.__table__)
_OCSP = cast(Table, OcspResponse.__table__)
_ATTEMPTS = cast(Table, OcspAttempt.__table__)


@dataclass(frozen=True, slots=True)
class StoredCrl:
    """A stored CRL without its DER: what freshness and ordering need."""

    id: int
    fingerprint: str
    issuer: str
    issuer_key_id: str | None
    partition: str | None
    source_url: str | None
    crl_number: int | None
    this_update: datetime
    next_update: datetime | None
    added_at: datetime

    @property
    def order(self) -> tuple[int, datetime]:
        """What "newer" means: CRL number first, then thisUpdate (no number counts as -1)."""
        return (-1 if self.crl_number is None else self.crl_number, self.this_update)


_STORED_COLUMNS = (
    CRL.id,
    CRL.fingerprint,
    CRL.issuer,
    CRL.issuer_key_id,
    CRL.partition,
    CRL.source_url,
    CRL.crl_number,
    CRL.this_update,
    CRL.next_update,
    CRL.added_at,
)


def _stored(row: tuple[object, ...]) -> StoredCrl:
    values = list(row)
    number = values[6]
    values[6] = None if number is None else int(str(number))
    return StoredCrl(*values)  # type: ignore[arg-type]


class CrlSourceRepository(_Repository):
    """The CRL distribution points to re-request, unique by URL."""

    def add(self, url: str, origin: str, at: datetime) -> bool:
        """Record ``url``; False (and nothing changes) when it is already there."""
        values = {"url": url, "origin": origin, "added_at": at}
        return insert_new(self._scope.connection(), _SOURCES, values, "url") is not None

    def list(self) -> list[CrlSource]:
        """Every source, in the order added."""
        return list(self._session.scalars(select(CrlSource).order_by(CrlSource.id)))

    def get(self, url: str) -> CrlSource | None:
        return self._session.scalar(select(CrlSource).where(CrlSource.url == url))

    def record(
        self,
        url: str,
        *,
        at: datetime,
        outcome: str,
        error: str | None,
        etag: str | None,
        last_modified: str | None,
    ) -> None:
        """How the run of ``at`` went for ``url`` and the validators to send next time."""
        statement = (
            update(_SOURCES)
            .where(_SOURCES.c.url == url)
            .values(
                checked_at=at,
                outcome=outcome,
                error=None if error is None else error[:1024],
                etag=None if etag is None or len(etag) > 1024 else etag,
                last_modified=None
                if last_modified is None or len(last_modified) > 64
                else last_modified,
            )
        )
        self._scope.connection().execute(statement)


class FetchedCrlRepository(_Repository):
    """Fetched CRLs, the newest per issuer key and partition (see the module docstring)."""

    def slot(self, issuer_key_id: str, partition: str | None) -> list[StoredCrl]:
        """The CRLs stored for one issuer key and partition, newest first."""
        query = select(*_STORED_COLUMNS).where(
            CRL.issuer_key_id == issuer_key_id,
            CRL.partition.is_(None) if partition is None else CRL.partition == partition,
        )
        rows = [_stored(tuple(row)) for row in self._scope.connection().execute(query)]
        return sorted(rows, key=lambda r: r.order, reverse=True)

    def from_source(self, url: str) -> StoredCrl | None:
        """The newest CRL fetched from ``url``, if any is still stored."""
        query = select(*_STORED_COLUMNS).where(CRL.source_url == url)
        rows = [_stored(tuple(row)) for row in self._scope.connection().execute(query)]
        return max(rows, key=lambda r: r.order, default=None)

    def all(self) -> list[StoredCrl]:
        """Every stored CRL (fetched or added by hand), in the order added."""
        query = select(*_STORED_COLUMNS).order_by(CRL.id)
        return [_stored(tuple(row)) for row in self._scope.connection().execute(query)]

    def der(self, id: int) -> bytes | None:
        return self._scope.connection().execute(select(CRL.der).where(CRL.id == id)).scalar()

    def replace(
        self,
        *,
        der: bytes,
        fingerprint: str,
        issuer: str,
        issuer_key_id: str,
        partition: str | None,
        source_url: str,
        crl_number: int | None,
        this_update: datetime,
        next_update: datetime | None,
        at: datetime,
    ) -> bool:
        """Store a CRL as the newest of its slot and delete the older ones of the slot.

        False when a CRL with the same fingerprint is stored already: nothing is written then,
        except that a CRL added by ``swreg crl add`` (no issuer key) is given its issuer key,
        partition and URL, so it joins its slot. The caller has checked that it is newer than
        what the slot holds.
        """
        values = {
            "fingerprint": fingerprint,
            "issuer": issuer[:1024],
            "der": der,
            "crl_number": None if crl_number is None else str(crl_number),
            "this_update": this_update,
            "next_update": next_update,
            "added_at": at,
            "issuer_key_id": issuer_key_id,
            "partition": partition,
            "source_url": source_url,
        }
        connection = self._scope.connection()
        new_id = insert_new(connection, _CRLS, values, "fingerprint")
        if new_id is None:  # stored already: by another run, or by `swreg crl add` (adopted)
            adopt = (
                update(_CRLS)
                .where(_CRLS.c.fingerprint == fingerprint, _CRLS.c.issuer_key_id.is_(None))
                .values(issuer_key_id=issuer_key_id, partition=partition, source_url=source_url)
            )
            connection.execute(adopt)
            return False
        mine = (-1 if crl_number is None else crl_number, this_update)
        older = [row.id for row in self.slot(issuer_key_id, partition) if row.order < mine]
        if older:
            connection.execute(delete(_CRLS).where(_CRLS.c.id.in_(older)))
        return True


@dataclass(frozen=True, slots=True)
class CachedOcsp:
    """A cached OCSP answer (a row of ``ocsp_responses``)."""

    fingerprint: str
    issuer_key_id: str
    responder_url: str
    status: str
    reason: str | None
    revoked_at: datetime | None
    this_update: datetime
    next_update: datetime | None
    produced_at: datetime | None
    is_hold: bool
    der: bytes
    checked_at: datetime
    cache_until: datetime


@dataclass(frozen=True, slots=True)
class OcspAttemptRow:
    """The latest request to one responder URL."""

    url: str
    issuer: str
    reachable: bool
    last_error: str | None
    checked_at: datetime


_CACHED_COLUMNS = tuple(_OCSP.c[name] for name in CachedOcsp.__slots__)
_ATTEMPT_COLUMNS = tuple(_ATTEMPTS.c[name] for name in OcspAttemptRow.__slots__)
_KEYED = ("fingerprint", "issuer_key_id")
_LOOKUP = select(*(c for c in _CACHED_COLUMNS if c.name not in _KEYED)).where(
    _OCSP.c.fingerprint == bindparam("fingerprint"),
    _OCSP.c.issuer_key_id == bindparam("issuer_key_id"),
)
"""The cached answer about one certificate under one issuer key: every column but those two, in
:class:`CachedOcsp`'s order."""
_FINAL = and_(_OCSP.c.status == "revoked", _OCSP.c.is_hold.is_(False))
"""A final revocation (not a hold): never overwritten."""


@cache
def _upsert_statement(dialect: str, table: Table, key: str, columns: tuple[str, ...]) -> Any:
    """``INSERT (columns) ... ON CONFLICT (key) DO UPDATE`` every other column for
    ``dialect``, except over a final revocation (``ocsp_responses``); its values bound by
    column name at execution."""
    construct: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = construct(table)
    changed = {name: statement.excluded[name] for name in columns if name != key}
    where = not_(_FINAL) if table is _OCSP else None
    return statement.on_conflict_do_update(index_elements=[key], set_=changed, where=where)


def _upsert(connection: Connection, table: Table, values: dict[str, Any], key: str) -> None:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` every other column: one row per key, the
    last write wins (except over a final revocation in ``ocsp_responses``), on SQLite and
    PostgreSQL alike."""
    statement = _upsert_statement(connection.dialect.name, table, key, tuple(values))
    connection.execute(statement, values)


class OcspCacheRepository(_Repository):
    """Cached OCSP answers and the latest request per responder (see the module docstring)."""

    @staticmethod
    def lookup(database: Database, fingerprint: str, issuer_key_id: str) -> CachedOcsp | None:
        """The cached answer (expired or not) about the certificate of ``fingerprint`` issued
        under the key ``issuer_key_id`` (an answer cached under another key is not returned),
        read outside any unit of work: one prebuilt SELECT, what a certificate check asks."""
        rows = database.fetch_prebuilt(
            _LOOKUP, {"fingerprint": fingerprint, "issuer_key_id": issuer_key_id}
        )
        if not rows:
            return None
        (url, status, reason, revoked_at, this_update, next_update, produced_at, is_hold, der,
         checked_at, cache_until) = rows[0]  # fmt: skip
        return CachedOcsp(
            fingerprint, issuer_key_id, url, status, reason, revoked_at, this_update,
            next_update, produced_at, bool(is_hold), bytes(der), checked_at, cache_until,
        )  # fmt: skip

    def get(self, fingerprint: str) -> CachedOcsp | None:
        """The cached answer about the certificate of ``fingerprint`` (expired or not)."""
        query = select(*_CACHED_COLUMNS).where(_OCSP.c.fingerprint == fingerprint)
        row = self._scope.connection().execute(query).first()
        if row is None:
            return None
        values = dict(zip(CachedOcsp.__slots__, row, strict=True))
        values["is_hold"] = bool(values["is_hold"])
        values["der"] = bytes(values["der"])
        return CachedOcsp(**values)

    def put(self, answer: CachedOcsp) -> None:
        """Store ``answer`` as the one about its certificate, replacing any before it except a
        final revocation (``revoked``, not a hold): a worker racing with a good answer never
        overwrites it."""
        values = {name: getattr(answer, name) for name in CachedOcsp.__slots__}
        _upsert(self._scope.connection(), _OCSP, values, "fingerprint")

    def forget(self, fingerprint: str) -> None:
        """Drop the cached answer about a certificate (a hold lifted, an answer now unknown)."""
        statement = delete(_OCSP).where(_OCSP.c.fingerprint == fingerprint)
        self._scope.connection().execute(statement)

    def attempted(
        self, url: str, *, issuer: str, reachable: bool, error: str | None, at: datetime
    ) -> None:
        """Record a request to ``url`` at ``at`` (the latest one per URL is kept)."""
        values = {
            "url": url,
            "issuer": issuer[:1024],
            "reachable": reachable,
            "last_error": None if error is None else error[:1024],
            "checked_at": at,
        }
        _upsert(self._scope.connection(), _ATTEMPTS, values, "url")

    def attempts(self) -> list[OcspAttemptRow]:
        """The latest request per responder URL, by URL."""
        query = select(*_ATTEMPT_COLUMNS).order_by(_ATTEMPTS.c.url)
        rows = self._scope.connection().execute(query)
        return [
            OcspAttemptRow(
                url=row.url,
                issuer=row.issuer,
                reachable=bool(row.reachable),
                last_error=row.last_error,
                checked_at=row.checked_at,
            )
            for row in rows
        ]
