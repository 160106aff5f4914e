"""The append-only, hash-chained audit log (DESIGN.md §6).

Each row carries the hash of the row before it (``prev_hash``; the first row links to
:data:`GENESIS_HASH`) and its own hash over its fields, so editing, deleting or reordering rows
breaks the chain. The hash is reproducible outside swreg with :func:`entry_hash`::

    sha256(json.dumps({seq, at, actor, event, registration_id, from_state, to_state,
                       applicant_type, workflow_hash, diff, prev_hash},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False))

with ``at`` as the ISO 8601 text of the UTC time (``2025-01-02T03:04:05.000006+00:00``).

The chain alone cannot show that the newest rows were cut off; keep
:attr:`AuditVerification.last_hash` somewhere else and compare it later.

Concurrent writers. A row's ``seq`` and ``prev_hash`` depend on the row committed before it, so
appenders must take turns: :meth:`AuditLog.append` only queues the row, and
:meth:`AuditLog.write_pending` (called by ``UnitOfWork.commit`` as its last step) takes the
chain lock, reads the tail, chains the queued rows and lets the commit release the lock. The
lock is ``pg_advisory_xact_lock`` on PostgreSQL (a statement of READ COMMITTED that then reads
the tail sees every chain committed before the lock was granted) and SQLite's write lock
(``BEGIN IMMEDIATE`` when the transaction has not written yet; SQLite has one writer at a time).

Why a lock held only at the end, and not the alternatives:

* the former ``SELECT ... FOR UPDATE`` of the tail row does not serialise: the waiter wakes up
  on the same (still existing) row, reads the old tail and collides on ``seq``, so one of two
  concurrent units of work failed with a raw ``IntegrityError``;
* taking the lock at the first ``append`` holds it across the rest of the unit of work (other
  rows' locks, plugin hooks, password hashing), so a holder could wait for a row lock of a unit
  of work queued behind it: a deadlock. Taken last, the lock's holder waits for nothing else;
* retrying whole units of work on a ``seq`` conflict needs every service to be idempotent
  (mails, hooks) and wastes the loser's work; with the lock nobody loses.

Measured on the 2-core development machine (busy), 200 single-row units of work: PostgreSQL
300-440 appends/s from one thread and 260-300/s from eight; SQLite (WAL, a commit fsyncs)
120-210/s either way. Without the lock the one-thread figures are the same within the noise,
and the eight-thread runs fail on ``seq`` (``tests/test_concurrency.py`` checks the chain).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select, text

from engine.store._models import AuditEntry
from engine.store._repositories import Scope

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first row."""

HASHED_FIELDS: tuple[str, ...] = (
    "seq",
    "at",
    "actor",
    "event",
    "registration_id",
    "from_state",
    "to_state",
    "applicant_type",
    "workflow_hash",
    "diff",
    "prev_hash",
)
"""The fields :func:`entry_hash` covers (every column except ``hash`` itself)."""

_EMPTY: Mapping[str, Any] = {}

CHAIN_LOCK_KEY = 0x7377_7265_6741_7564
"""The PostgreSQL advisory lock key of the chain (the bytes of ``swregAud``)."""

log = logging.getLogger("swreg.audit")

_TAIL = select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
_INSERT = insert(cast(Table, AuditEntry.__table__))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(fields: Mapping[str, Any]) -> str:
    """The SHA-256 hex digest of one audit row's :data:`HASHED_FIELDS`.

    ``fields`` may hold ``at`` as an aware datetime (converted to UTC) or as the ISO text an
    auditor exported; extra keys (such as ``hash``) are ignored. Pure: no database needed.
    """
    payload = {name: fields[name] for name in HASHED_FIELDS}
    at = payload["at"]
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("entry_hash needs an aware datetime for 'at'")
        payload["at"] = at.astimezone(UTC).isoformat()
    return hashlib.sha256(_canonical(payload).encode("utf-8")).hexdigest()


@dataclass(slots=True)
class QueuedEntry:
    """An appended row waiting for its unit of work's commit, which chains it: ``seq``,
    ``prev_hash`` and ``hash`` are set then (a plain record, not an ORM object)."""

    at: datetime
    actor: str
    event: str
    registration_id: str | None
    from_state: str | None
    to_state: str | None
    applicant_type: str | None
    workflow_hash: str | None
    diff: dict[str, Any]
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


def log_business_events(entries: Sequence[QueuedEntry]) -> None:
    """One log line per audit row, once its commit succeeded (DESIGN.md §11): every business
    event passes here. The line names the event, the row's ``seq``, the actor's kind (``web``,
    ``api``, ``cli``, ``officer``, ``system``: the part before ``:``, never the officer's name or
    the client's hash) and the registration; never the ``diff``, which holds masked personal
    data."""
    for entry in entries:
        log.info(
            entry.event,
            extra={
                "event": entry.event,
                "audit_seq": entry.seq,
                "actor_kind": entry.actor.partition(":")[0],
                "registration_id": entry.registration_id,
                "applicant_type": entry.applicant_type,
                "from_state": entry.from_state,
                "to_state": entry.to_state,
            },
        )


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The outcome of :meth:`AuditLog.verify`.

    ``reason`` is one of ``"missing row"``, ``"broken link"``, ``"edited row"``,
    ``"unexpected row"`` (a seq below 1) or ``"row count mismatch"``; ``first_bad_seq`` names
    the first row that fails. ``last_hash`` is the hash of the newest row checked (None for an
    empty log); record it elsewhere to detect later truncation.
    """

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str | None = None
    last_hash: str | None = None


class AuditLog:
    """Appends to, verifies and reads the audit log inside one unit of work."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._pending: list[QueuedEntry] = []

    def append(
        self,
        *,
        at: datetime,
        actor: str,
        event: str,
        registration_id: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        applicant_type: str | None = None,
        workflow_hash: str | None = None,
        diff: Mapping[str, Any] = _EMPTY,
    ) -> QueuedEntry:
        """Queue a row for the chain; it is chained and written when the unit of work commits.

        The returned entry gets its ``seq``, ``prev_hash`` and ``hash`` at that commit (see the
        module docstring for why); a rollback discards it.
        """
        if at.tzinfo is None:
            raise ValueError("audit entries need an aware datetime")
        entry = QueuedEntry(
            at=at.astimezone(UTC),
            actor=actor,
            event=event,
            registration_id=registration_id,
            from_state=from_state,
            to_state=to_state,
            applicant_type=applicant_type,
            workflow_hash=workflow_hash,
            # Store exactly what is hashed: JSON round trip (tuples become lists, keys strings).
            diff=json.loads(_canonical(dict(diff))),
        )
        self._pending.append(entry)
        return entry

    @property
    def pending(self) -> int:
        """How many appended rows wait for the commit."""
        return len(self._pending)

    def discard_pending(self) -> None:
        """Forget the queued rows (the unit of work rolled back)."""
        self._pending.clear()

    def write_pending(self) -> None:
        """Lock the chain, chain the queued rows after its tail and add them to the session.

        Call it last before the commit (the lock is released by the commit or rollback).
        """
        if not self._pending:
            return
        connection = self._lock_chain()
        tail = connection.execute(_TAIL).first()
        seq, prev_hash = (tail[0], tail[1]) if tail is not None else (0, GENESIS_HASH)
        rows = []
        for entry in self._pending:
            seq += 1
            entry.seq, entry.prev_hash = seq, prev_hash
            fields = {name: getattr(entry, name) for name in HASHED_FIELDS}
            entry.hash = prev_hash = fields["hash"] = entry_hash(fields)
            rows.append(fields)
        connection.execute(_INSERT, rows)
        written, self._pending = self._pending, []
        if not log.isEnabledFor(logging.INFO):  # the CLI and the bench: no line to write
            return
        on_commit = getattr(self._scope, "on_commit", None)
        if on_commit is not None:
            on_commit(lambda: log_business_events(written))
        else:
            log_business_events(written)

    def _lock_chain(self) -> Connection:
        """Hold the chain until this transaction ends (see the module docstring).

        Everything else of the unit of work is flushed first, so the lock's holder takes no
        other lock after it.
        """
        connection = self._scope.connection()
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
        elif connection.dialect.name == "sqlite":
            dbapi_connection = connection.connection.dbapi_connection
            if dbapi_connection is not None and not dbapi_connection.in_transaction:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        return connection

    def verify(self, *, batch_size: int = 1000) -> AuditVerification:
        """Walk the whole chain in ``seq`` order and report the first row that fails.

        Rows appended while the walk runs are not looked at: the walk stops at the ``max(seq)``
        read when it started.
        """
        connection = self._scope.connection()
        count, max_seq = connection.execute(
            select(func.count(), func.max(AuditEntry.seq)).select_from(AuditEntry)
        ).one()
        if not count:
            return AuditVerification(ok=True, rows=0)
        columns = [getattr(AuditEntry, name) for name in (*HASHED_FIELDS, "hash")]
        stream = connection.execute(
            select(*columns)
            .where(AuditEntry.seq <= max_seq)
            .order_by(AuditEntry.seq)
            .execution_options(yield_per=batch_size)
        )
        rows = 0
        expected, prev_hash = 1, GENESIS_HASH
        try:
            for row in stream:
                rows += 1
                fields = cast(Mapping[str, Any], row._mapping)
                seq: int = fields["seq"]
                problem: str | None = None
                if seq < expected:
                    problem = "unexpected row"
                elif seq > expected:
                    problem = "missing row"
                elif fields["prev_hash"] != prev_hash:
                    problem = "broken link"
                elif entry_hash(fields) != fields["hash"]:
                    problem = "edited row"
                if problem is not None:
                    return AuditVerification(ok=False, rows=rows, first_bad_seq=seq, reason=problem)
                expected, prev_hash = seq + 1, fields["hash"]
        finally:
            stream.close()
        if rows != count:
            return AuditVerification(
                ok=False, rows=rows, first_bad_seq=expected, reason="row count mismatch"
            )
        return AuditVerification(ok=True, rows=rows, last_hash=prev_hash)

    def entries(self, registration_id: str | None = None, *, limit: int = 1000) -> list[AuditEntry]:
        """The newest ``limit`` rows (of one registration, or of all), oldest first."""
        query = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
        if registration_id is not None:
            query = query.where(AuditEntry.registration_id == registration_id)
        newest_first = self._scope.session.scalars(query).all()
        return list(reversed(newest_first))
