"""The audit log as JSON Lines, for auditors who check it without swreg (``swreg audit export``).

One line per row, oldest first, each a JSON object holding every column the chain hash covers
(:data:`engine.store.HASHED_FIELDS`: ``seq``, ``at``, ``actor``, ``event``,
``registration_id``, ``from_state``, ``to_state``, ``applicant_type``, ``workflow_hash``,
``diff``, ``prev_hash``) plus the row's ``hash``. ``at`` is the ISO 8601 text of the UTC time,
exactly as it was hashed, so a line's hash is::

    sha256(json.dumps({the HASHED_FIELDS of the line}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()

and each line's ``prev_hash`` is the hash of the line before it (the first row's is 64 zeros).
``scripts/verify-audit-export.py`` checks an export that way with the Python standard library
alone and names the first edited, deleted or reordered line. Keep the ``last_hash`` this export
reports somewhere else: the chain alone cannot show that the newest rows were cut off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TextIO

from sqlalchemy import func, select

from engine.store import HASHED_FIELDS, AuditEntry, AuditVerification, Database

EXPORTED_FIELDS: tuple[str, ...] = (*HASHED_FIELDS, "hash")
"""The keys of every exported line, in the order they are written."""


@dataclass(frozen=True, slots=True)
class AuditExport:
    """What an export wrote: how many rows, and the hash of the last one (None when empty)."""

    rows: int
    last_hash: str | None


def audit_records(database: Database, *, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Every audit row as an export record (:data:`EXPORTED_FIELDS`), oldest first, streamed
    in batches. Rows appended while the export runs are left out: it stops at the
    ``max(seq)`` read when it started (the same rule as ``swreg audit verify``)."""
    columns = [getattr(AuditEntry, name) for name in EXPORTED_FIELDS]
    with database.unit_of_work() as uow:
        max_seq = uow.session.scalar(select(func.max(AuditEntry.seq)))
        if max_seq is None:
            return
        stream = uow.session.execute(
            select(*columns)
            .where(AuditEntry.seq <= max_seq)
            .order_by(AuditEntry.seq)
            .execution_options(yield_per=batch_size)
        )
        try:
            for row in stream:
                record = {name: row._mapping[name] for name in EXPORTED_FIELDS}
                record["at"] = record["at"].astimezone(UTC).isoformat()  # as it was hashed
                yield record
        finally:
            stream.close()


def export_line(record: dict[str, Any]) -> str:
    """One export record as one compact JSON line (no newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def export_audit(database: Database, handle: TextIO) -> AuditExport:
    """Write every audit row to ``handle`` as JSON Lines; return the count and last hash."""
    rows, last_hash = 0, None
    for record in audit_records(database):
        handle.write(export_line(record) + "\n")
        rows += 1
        last_hash = record["hash"]
    return AuditExport(rows=rows, last_hash=last_hash)


class AuditService:
    """The audit log for people who check it: verify the chain, show, export (``swreg audit``)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def verify(self) -> AuditVerification:
        """Walk the whole chain; the result names the first edited, deleted or reordered row."""
        with self._database.unit_of_work() as uow:
            return uow.audit.verify()

    def entries(self, registration_id: str) -> list[dict[str, Any]]:
        """The rows of one registration, oldest first, as plain values (newest 1,000)."""
        with self._database.unit_of_work() as uow:
            return [_entry(row) for row in uow.audit.entries(registration_id)]

    def export(self, handle: TextIO) -> AuditExport:
        """Every row to ``handle`` as JSON Lines (:func:`export_audit`)."""
        return export_audit(self._database, handle)


def _entry(row: AuditEntry) -> dict[str, Any]:
    return {
        "seq": row.seq, "at": row.at.isoformat(), "actor": row.actor, "event": row.event,
        "registration_id": row.registration_id, "from_state": row.from_state,
        "to_state": row.to_state, "applicant_type": row.applicant_type,
        "workflow_hash": row.workflow_hash, "diff": row.diff, "prev_hash": row.prev_hash,
        "hash": row.hash,
    }  # fmt: skip


__all__ = [
    "EXPORTED_FIELDS",
    "AuditExport",
    "AuditService",
    "audit_records",
    "export_audit",
    "export_line",
]
