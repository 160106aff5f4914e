"""The hash-chained audit log: append, verify, tamper detection, recomputable hashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, text, update

from engine.store import GENESIS_HASH, AuditEntry, AuditVerification, Database, entry_hash

from .conftest import FreshDatabase

T0 = datetime(2025, 3, 1, 9, 30, 0, 500, tzinfo=UTC)
COLUMNS = (
    "at, actor, event, registration_id, from_state, to_state, applicant_type, workflow_hash,"
    " diff, prev_hash, hash"
)


@pytest.fixture
def db(fresh_database: FreshDatabase) -> Iterator[Database]:
    database = Database(fresh_database(migrated=False))
    database.migrate()
    database.migrate()
    yield database
    database.dispose()


def append_five(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.audit.append(at=T0, actor="system", event="workflow_loaded", workflow_hash="w" * 64)
        for i, (src, dst) in enumerate([("start", "entering"), ("entering", "card_check")]):
            uow.audit.append(
                at=T0 + timedelta(seconds=i + 1),
                actor="applicant",
                event="transition",
                registration_id="reg-1",
                from_state=src,
                to_state=dst,
                applicant_type="person.natural",
                workflow_hash="w" * 64,
                diff={"email": [None, "a***@example.tw"], "姓名": "王*明"},
            )
        uow.commit()
    with db.unit_of_work() as uow:
        taipei = timezone(timedelta(hours=8))
        uow.audit.append(at=(T0 + timedelta(seconds=3)).astimezone(taipei), actor="x", event="e")
        uow.audit.append(
            at=T0 + timedelta(seconds=4), actor="admin", event="note", diff={"n": (1, 2.5, True)}
        )
        uow.commit()


def execute(db: Database, sql: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(sql), params)


def as_text(value: Any) -> Any:
    """A raw column value as SQLite stores it (PostgreSQL returns datetimes and JSON values)."""
    if isinstance(value, datetime):
        return str(value.astimezone(UTC).replace(tzinfo=None))
    return json.dumps(value) if isinstance(value, dict) else value


def verify(db: Database) -> AuditVerification:
    with db.unit_of_work() as uow:
        return uow.audit.verify()


def test_empty_log_verifies(db: Database) -> None:
    assert verify(db) == AuditVerification(ok=True, rows=0)


def test_append_chains_rows(db: Database) -> None:
    append_five(db)
    with db.engine.connect() as conn:
        query = text("SELECT seq, at, prev_hash, hash, diff FROM audit_log ORDER BY seq")
        stored = conn.execute(query).all()
    assert [r.seq for r in stored] == [1, 2, 3, 4, 5]
    assert stored[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in stored[1:]] == [r.hash for r in stored[:-1]]
    assert as_text(stored[3].at) == "2025-03-01 09:30:03.000500"  # stored as UTC
    assert json.loads(as_text(stored[4].diff)) == {"n": [1, 2.5, True]}
    result = verify(db)
    assert result == AuditVerification(ok=True, rows=5, last_hash=stored[4].hash)


def test_hashes_are_recomputable_outside_the_system(db: Database) -> None:
    append_five(db)
    with db.unit_of_work() as uow:
        entries = uow.audit.entries()
        assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
        for e in entries:
            fields = {c: getattr(e, c) for c in ("seq", *COLUMNS.replace(" ", "").split(","))}
            assert entry_hash(fields) == e.hash
    # An auditor with only the exported text and hashlib:
    with db.engine.connect() as conn:
        raw = conn.execute(text("SELECT * FROM audit_log WHERE seq = 2")).one()._asdict()
        row = {k: as_text(v) for k, v in raw.items()}
    payload = {k: row[k] for k in row if k != "hash"}
    payload["at"] = datetime.fromisoformat(row["at"]).replace(tzinfo=UTC).isoformat()
    payload["diff"] = json.loads(row["diff"])
    assert payload["at"] == "2025-03-01T09:30:01.000500+00:00"
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() == row["hash"]
    assert entry_hash(payload) == row["hash"]


def test_entries_by_registration_and_limit(db: Database) -> None:
    append_five(db)
    with db.unit_of_work() as uow:
        assert [e.seq for e in uow.audit.entries("reg-1")] == [2, 3]
        assert [e.seq for e in uow.audit.entries(limit=2)] == [4, 5]
        assert uow.audit.entries("nope") == []
        second = uow.audit.entries("reg-1")[0]
        assert (second.from_state, second.to_state, second.at) == (
            "start",
            "entering",
            T0 + timedelta(seconds=1),
        )


def test_edited_row(db: Database) -> None:
    append_five(db)
    execute(db, """UPDATE audit_log SET diff = '{"email": "x"}' WHERE seq = 3""")
    assert verify(db) == AuditVerification(ok=False, rows=3, first_bad_seq=3, reason="edited row")


def test_edited_row_with_recomputed_hash_breaks_the_next_link(db: Database) -> None:
    append_five(db)
    with db.unit_of_work() as uow:
        row = uow.audit.entries()[2]
        fields = {c: getattr(row, c) for c in ("seq", *COLUMNS.replace(" ", "").split(","))}
        fields["actor"] = "mallory"
        forged = entry_hash(fields)
    execute(db, "UPDATE audit_log SET actor = 'mallory', hash = :h WHERE seq = 3", h=forged)
    assert verify(db) == AuditVerification(ok=False, rows=4, first_bad_seq=4, reason="broken link")


def test_deleted_middle_row(db: Database) -> None:
    append_five(db)
    execute(db, "DELETE FROM audit_log WHERE seq = 3")
    assert verify(db) == AuditVerification(ok=False, rows=3, first_bad_seq=4, reason="missing row")


def test_deleted_first_row(db: Database) -> None:
    append_five(db)
    execute(db, "DELETE FROM audit_log WHERE seq = 1")
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 2, "missing row")


def test_deleted_last_row_changes_the_head(db: Database) -> None:
    # The chain alone cannot show truncation; the head hash recorded earlier can.
    append_five(db)
    before = verify(db)
    execute(db, "DELETE FROM audit_log WHERE seq = 5")
    after = verify(db)
    assert after.ok and after.rows == 4
    assert after.last_hash != before.last_hash


@pytest.mark.parametrize("with_hashes", [True, False], ids=["whole rows", "contents only"])
def test_swapped_rows(db: Database, with_hashes: bool) -> None:
    append_five(db)
    columns = COLUMNS if with_hashes else COLUMNS.removesuffix(", diff, prev_hash, hash")
    names = [c.strip() for c in columns.split(",")]
    selected = [getattr(AuditEntry, n) for n in names]  # typed: JSON binds back on any database
    with db.engine.begin() as conn:
        two, four = (
            conn.execute(select(*selected).where(AuditEntry.seq == s)).one() for s in (2, 4)
        )
        for seq, values in ((2, four), (4, two)):
            params = dict(zip(names, values, strict=True))
            conn.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(**params))
    result = verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert result.reason == ("broken link" if with_hashes else "edited row")


def test_renumbered_row_is_unexpected(db: Database) -> None:
    append_five(db)
    execute(db, "UPDATE audit_log SET seq = 0 WHERE seq = 1")
    result = verify(db)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 0, "unexpected row")


def test_interleaved_appenders_are_chained_in_commit_order(db: Database) -> None:
    # Rows are chained when their unit of work commits (threads: tests/test_concurrency.py).
    append_five(db)
    with db.unit_of_work() as first, db.unit_of_work() as second:
        a = first.audit.append(at=T0, actor="w1", event="e")
        b = second.audit.append(at=T0, actor="w2", event="e")
        assert a.seq is None and first.audit.pending == 1
        second.commit()
        first.commit()
    assert (b.seq, a.seq) == (6, 7)
    assert a.prev_hash == b.hash
    assert verify(db) == AuditVerification(ok=True, rows=7, last_hash=a.hash)


def test_a_rolled_back_append_leaves_no_row(db: Database) -> None:
    with db.unit_of_work() as uow:
        uow.audit.append(at=T0, actor="a", event="e")
        uow.rollback()
        uow.commit()
    with db.unit_of_work() as uow:
        uow.audit.append(at=T0, actor="a", event="e")
    assert verify(db) == AuditVerification(ok=True, rows=0)


def test_append_refuses_naive_time(db: Database) -> None:
    with db.unit_of_work() as uow, pytest.raises(ValueError):
        uow.audit.append(at=datetime(2025, 1, 1), actor="a", event="e")


def test_entry_hash_is_pure_and_sensitive() -> None:
    fields: dict[str, Any] = {
        "seq": 1,
        "at": T0,
        "actor": "a",
        "event": "e",
        "registration_id": None,
        "from_state": None,
        "to_state": None,
        "applicant_type": None,
        "workflow_hash": None,
        "diff": {},
        "prev_hash": GENESIS_HASH,
    }
    digest = entry_hash(fields)
    assert digest == entry_hash({**fields, "at": "2025-03-01T09:30:00.000500+00:00"})
    assert digest == entry_hash({**fields, "hash": "ignored"})
    assert digest != entry_hash({**fields, "seq": 2})
    assert digest != entry_hash({**fields, "diff": {"x": 1}})
