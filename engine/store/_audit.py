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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ._models import AuditEntry

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
    """Appends to, verifies and reads the audit log inside one unit of work's session."""

    def __init__(self, session: Session) -> None:
        self._session = session

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
    ) -> AuditEntry:
        """Chain a new row after the current tail and add it to the session.

        The tail is read ``FOR UPDATE`` (PostgreSQL; SQLite serialises writers anyway). Two
        concurrent appenders that still read the same tail collide on the primary key ``seq``
        at flush: the chain never forks.
        """
        if at.tzinfo is None:
            raise ValueError("audit entries need an aware datetime")
        tail = self._session.execute(
            select(AuditEntry.seq, AuditEntry.hash)
            .order_by(AuditEntry.seq.desc())
            .limit(1)
            .with_for_update()
        ).first()
        seq, prev_hash = (tail[0] + 1, tail[1]) if tail is not None else (1, GENESIS_HASH)
        # Store exactly what was hashed: JSON round trip (tuples become lists, keys strings).
        stored_diff: dict[str, Any] = json.loads(_canonical(dict(diff)))
        fields: dict[str, Any] = {
            "seq": seq,
            "at": at.astimezone(UTC),
            "actor": actor,
            "event": event,
            "registration_id": registration_id,
            "from_state": from_state,
            "to_state": to_state,
            "applicant_type": applicant_type,
            "workflow_hash": workflow_hash,
            "diff": stored_diff,
            "prev_hash": prev_hash,
        }
        entry = AuditEntry(**fields, hash=entry_hash(fields))
        self._session.add(entry)
        return entry

    def verify(self, *, batch_size: int = 1000) -> AuditVerification:
        """Walk the whole chain in ``seq`` order and report the first row that fails.

        Rows appended while the walk runs are not looked at: the walk stops at the ``max(seq)``
        read when it started.
        """
        count, max_seq = self._session.execute(
            select(func.count(), func.max(AuditEntry.seq)).select_from(AuditEntry)
        ).one()
        if not count:
            return AuditVerification(ok=True, rows=0)
        columns = [getattr(AuditEntry, name) for name in (*HASHED_FIELDS, "hash")]
        stream = self._session.execute(
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
        newest_first = self._session.scalars(query).all()
        return list(reversed(newest_first))
