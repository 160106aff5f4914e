"""通關憑證查詢 latency with 1,000,000 certificates stored (DESIGN.md §10), not a test.

The store is filled in bulk, not through the service (``executemany`` on SQLite, ``COPY`` on
PostgreSQL), into the engine's own schema (its Alembic migrations), then ``ANALYZE``d:

- 100,000 enterprise accounts, each with its login certificate (工商憑證, purpose ``login``);
- 800,000 company signing certificates (通關專屬憑證), two per UBN over 400,000 UBNs (the
  accounts' UBNs among them);
- 100,000 報關專責人員 signing certificates, two per broker key (``A00001``) and person
  (身分證字號, stored as its keyed hash).

Certificate DERs are real (a pool of issued TaiCA certificates, reused), so rows have their
real size. Then a sample of existing keys (70 % UBNs, 20 % broker keys, 10 % 身分證字號) is
queried, each key by the floor and by the engine in turn (order alternating): the engine is
:meth:`CustomsCertificateService.query` (the service behind ``swreg customs-cert query`` and
``/api/customs-certificates``: key classification, one prebuilt statement per key kind on a pooled
connection outside a transaction, the result rows of the seed manual); the floor is the same
indexed ``SELECT`` (the engine's statement compiled to the driver's SQL text) with the raw driver
(``sqlite3`` / ``psycopg``, prepared, outside a transaction too), rows fetched and nothing else.
Latency is wall time per query; target: engine p99 < 2 ms on both databases.

PostgreSQL comes from ``SWREG_PG_URL`` (``scripts/with-postgres`` sets it); a database
``swreg_bench_<pid>`` is created there and dropped afterwards. Without it the section says why.

    .venv/bin/python bench/customs_query.py [--rows 1000000] [--queries 2000] [--db sqlite|pg]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    SECRET,
    machine,
    merge_results,
    national_id,
    percentile,
    quiet,
    settings_for,
    shared_card_keys,
)
from sqlalchemy.engine import Dialect

from engine import bootstrap
from engine.core.identifiers import is_valid_ubn
from engine.services.hashing import IdentifierHasher
from engine.store._customs_lookup import CustomsKey, customs_statement
from engine.testing.pki import TestPKI

TARGET_P99_MS = 2.0
DER_POOL = 256
CERT_COLUMNS = (
    "fingerprint", "purpose", "account_id", "registration_id", "der", "serial_hex", "subject",
    "issuer", "ca", "card_rank", "not_before", "not_after", "ubn", "oid", "national_id_hash",
    "query_key", "kind", "usage_type", "status", "created_at",
)  # fmt: skip
ACCOUNT_COLUMNS = (
    "id", "name", "applicant_type", "category", "status", "email", "contact_name", "ubn",
    "company_name", "phone", "address", "iot", "password_hash", "profile", "registration_id",
    "created_at",
)  # fmt: skip


# -- keys and rows -----------------------------------------------------------------------------


def ubns(count: int) -> list[str]:
    """``count`` distinct valid UBNs (2023 mod-5 rule), spread over the number space."""
    found: list[str] = []
    candidate = 10_000_007
    while len(found) < count:
        text = f"{candidate % 100_000_000:08d}"
        if is_valid_ubn(text):
            found.append(text)
        candidate += 97
    return found


def broker_key(number: int) -> str:
    return f"{'ABCD'[number // 100_000 % 4]}{number % 100_000:05d}"


def broker_national_id(number: int) -> str:
    return national_id(5_000_000 + number)


class Plan:
    """What is stored: sizes, keys and the DER pool (deterministic for a given ``rows``)."""

    def __init__(self, rows: int, pki: TestPKI) -> None:
        self.accounts = rows // 10
        self.company_ubns = ubns(rows * 4 // 10)
        self.company_certs = 2 * len(self.company_ubns)
        self.broker_certs = rows - self.accounts - self.company_certs
        self.brokers = self.broker_certs // 2
        with shared_card_keys():
            cards = [pki.issue_customs(self.company_ubns[i], key="rsa") for i in range(DER_POOL)]
        self.ders = [card.der() for card in cards]
        self.subject = cards[0].certificate.subject.rfc4514_string()
        self.issuer = cards[0].certificate.issuer.rfc4514_string()
        self.identifiers = IdentifierHasher(SECRET)
        now = datetime.now(UTC).replace(microsecond=0)
        self.now = now
        self.not_before = now - timedelta(days=30)
        self.not_after = now + timedelta(days=700)

    @property
    def total(self) -> int:
        return self.accounts + self.company_certs + self.broker_certs

    def id_hash(self, number: int) -> str:
        return self.identifiers.hash("national_id", broker_national_id(number))

    def account_rows(self) -> Iterator[tuple[Any, ...]]:
        for number in range(self.accounts):
            ubn = self.company_ubns[number]
            yield (
                number + 1, ubn, "enterprise.general", "enterprise", "active",
                f"info{number}@example.com", "陳大文", ubn, "測試貿易股份有限公司",
                "02-2345-6789", "臺北市中正區重慶南路1號", False, "$argon2id$v=19$bench",
                "{}", f"reg-{number}", self.now,
            )  # fmt: skip

    def certificate_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every certificate row, as ``CERT_COLUMNS``; the ids follow this order from 1."""
        ders, serial = self.ders, 0
        for number in range(self.accounts):  # login certificates of the accounts
            serial += 1
            ubn = self.company_ubns[number]
            yield self._row(serial, "login", number + 1, ders[serial % DER_POOL], ubn, None,
                            ubn, None, None, "MOEACA")  # fmt: skip
        for number in range(self.company_certs):  # company signing certificates
            serial += 1
            ubn = self.company_ubns[number // 2]
            yield self._row(serial, "signing", None, ders[serial % DER_POOL], ubn, None, ubn,
                            "non_ic", "general_forwarder", "TaiCA")  # fmt: skip
        for number in range(self.broker_certs):  # 報關專責人員 signing certificates
            serial += 1
            person = number // 2
            yield self._row(serial, "signing", None, ders[serial % DER_POOL], None,
                            self.id_hash(person), broker_key(person), "non_ic",
                            "broker_specialist", "TaiCA")  # fmt: skip

    def _row(
        self, serial: int, purpose: str, account_id: int | None, der: bytes, ubn: str | None,
        id_hash: str | None, query_key: str, kind: str | None, usage_type: str | None, ca: str,
    ) -> tuple[Any, ...]:  # fmt: skip
        fingerprint = hashlib.sha256(serial.to_bytes(8, "big")).hexdigest()
        return (
            fingerprint, purpose, account_id, None, der, format(serial, "X"), self.subject,
            self.issuer, ca, None, self.not_before, self.not_after, ubn, None, id_hash,
            query_key, kind, usage_type, "active", self.now,
        )  # fmt: skip

    def sample(self, count: int, seed: int = 1) -> list[str]:
        """Existing query keys: 70 % UBNs, 20 % broker keys, 10 % 身分證字號."""
        chooser = random.Random(seed)
        keys: list[str] = []
        for index in range(count):
            kind = index % 10
            if kind < 7:
                keys.append(chooser.choice(self.company_ubns))
            elif kind < 9:
                keys.append(broker_key(chooser.randrange(self.brokers)))
            else:
                keys.append(broker_national_id(chooser.randrange(self.brokers)))
        chooser.shuffle(keys)
        return keys


# -- floors --------------------------------------------------------------------------------------


def floor_statement(key: str, identifiers: IdentifierHasher) -> tuple[CustomsKey, str]:
    """The key kind of ``key`` (a sample key, so no validation) and its one parameter, as
    :meth:`CustomsCertificateService.query` classifies it."""
    if len(key) == 6:
        return CustomsKey.BROKER, key
    if key.isdigit():
        return CustomsKey.UBN, key
    return CustomsKey.NATIONAL_ID_HASH, identifiers.hash("national_id", key.upper())


def floor_sql(dialect: Dialect) -> dict[CustomsKey, str]:
    """The engine's own statement of each key kind, as the SQL text the driver receives
    (``:key`` for ``sqlite3``, ``%(key)s`` for ``psycopg``): one ``UNION ALL`` of the login
    and signing rows, the columns a result row shows, ordered."""
    return {kind: str(customs_statement(kind).compile(dialect=dialect)) for kind in CustomsKey}


def sqlite_floor(path: Path, identifiers: IdentifierHasher) -> Callable[[str], int]:
    """The engine's statements through ``sqlite3`` (no transaction, as the engine's)."""
    from sqlalchemy.dialects import sqlite

    statements = floor_sql(sqlite.dialect(paramstyle="named"))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA foreign_keys=ON")

    def query(key: str) -> int:
        kind, parameter = floor_statement(key, identifiers)
        return len(connection.execute(statements[kind], {"key": parameter}).fetchall())

    return query


def pg_floor(conninfo: str, identifiers: IdentifierHasher) -> Callable[[str], int]:
    """The engine's statements through ``psycopg``, prepared, in autocommit (as the engine's:
    no BEGIN, no ROLLBACK)."""
    import psycopg
    from sqlalchemy.dialects import postgresql

    statements = floor_sql(postgresql.psycopg.dialect())
    connection = psycopg.connect(conninfo, autocommit=True)

    def query(key: str) -> int:
        kind, parameter = floor_statement(key, identifiers)
        with connection.cursor() as cursor:
            cursor.execute(statements[kind], {"key": parameter}, prepare=True)
            return len(cursor.fetchall())

    return query


# -- loading -------------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def load_sqlite(path: Path, plan: Plan) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("BEGIN")
    columns = ", ".join(ACCOUNT_COLUMNS)
    marks = ", ".join("?" * len(ACCOUNT_COLUMNS))
    connection.executemany(
        f"INSERT INTO accounts ({columns}) VALUES ({marks})",
        (_sqlite_values(row) for row in plan.account_rows()),
    )
    columns = ", ".join(CERT_COLUMNS)
    marks = ", ".join("?" * len(CERT_COLUMNS))
    connection.executemany(
        f"INSERT INTO certificates ({columns}) VALUES ({marks})",
        (_sqlite_values(row) for row in plan.certificate_rows()),
    )
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


def _sqlite_values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_stamp(v) if isinstance(v, datetime) else v for v in row)


def load_pg(conninfo: str, plan: Plan) -> None:
    import psycopg

    with psycopg.connect(conninfo) as connection:
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY accounts ({', '.join(ACCOUNT_COLUMNS)}) FROM STDIN") as copy:
                for row in plan.account_rows():
                    copy.write_row(row)
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('accounts', 'id'), %s)", (plan.accounts,)
            )
            with cursor.copy(f"COPY certificates ({', '.join(CERT_COLUMNS)}) FROM STDIN") as copy:
                for row in plan.certificate_rows():
                    copy.write_row(row)
        connection.commit()
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE accounts")
        connection.execute("VACUUM ANALYZE certificates")


# -- measuring -------------------------------------------------------------------------------------


def measure_store(
    name: str, url: str, plan: Plan, keys: list[str], floor: Callable[[str], int],
    load: Callable[[], None], *, shipped_queries: int,
) -> dict[str, Any]:  # fmt: skip
    """Load, then query ``keys``: as shipped, and (when the schema lacks it) again with the
    index the UBN query needs (``certificates.account_id``, the proposed migration)."""
    app = bootstrap(settings_for(url))
    began = time.perf_counter()
    load()
    result: dict[str, Any] = {"load_seconds": round(time.perf_counter() - began, 1)}
    service = app.customs
    engine: Callable[[str], int] = lambda key: len(service.query(key))  # noqa: E731
    indexed = _has_account_id_index(app.database.engine)
    sample = keys if indexed else keys[:shipped_queries]
    result["as_shipped"] = {"account_id_index": indexed, **_latencies(plan, sample, floor, engine)}
    if not indexed:
        with app.database.engine.begin() as connection:
            connection.exec_driver_sql(
                f"CREATE INDEX {PROPOSED_INDEX} ON certificates (account_id)"
            )
            connection.exec_driver_sql("ANALYZE")
        result["with_account_id_index"] = _latencies(plan, keys, floor, engine)
    app.close()
    return result


PROPOSED_INDEX = "ix_certificates_account_id"


def _has_account_id_index(engine: Any) -> bool:
    from sqlalchemy import inspect

    indexes = inspect(engine).get_indexes("certificates")
    return any(index["column_names"][:1] == ["account_id"] for index in indexes)


def _latencies(
    plan: Plan, keys: list[str], floor: Callable[[str], int], engine: Callable[[str], int]
) -> dict[str, Any]:
    for key in plan.sample(min(200, len(keys) // 6), seed=2):  # warm: caches, statements, pages
        if floor(key) != engine(key):
            raise AssertionError(f"floor and engine disagree on {key}")
    latencies: dict[str, list[float]] = {"floor": [], "engine": []}
    runners = {"floor": floor, "engine": engine}
    for index, key in enumerate(keys):
        order = ("floor", "engine") if index % 2 == 0 else ("engine", "floor")
        for who in order:
            began = time.perf_counter()
            runners[who](key)
            latencies[who].append((time.perf_counter() - began) * 1000)
    result: dict[str, Any] = {"queries": len(keys)}
    for who, values in latencies.items():
        result[who] = {
            "p50_ms": round(percentile(values, 0.50), 3),
            "p99_ms": round(percentile(values, 0.99), 3),
            "max_ms": round(max(values), 3),
        }
    result["ratio_p99"] = round(result["engine"]["p99_ms"] / result["floor"]["p99_ms"], 2)
    result["target_met"] = result["engine"]["p99_ms"] < TARGET_P99_MS
    return result


def measure(
    *, rows: int, queries: int, databases: tuple[str, ...], shipped_queries: int = 30
) -> dict[str, Any]:
    quiet()
    pki = TestPKI.create(datetime.now(UTC), key_type="rsa")
    plan = Plan(rows, pki)
    keys = plan.sample(queries)
    section: dict[str, Any] = {
        **machine(),
        "certificates": plan.total,
        "accounts": plan.accounts,
        "target_p99_ms": TARGET_P99_MS,
    }
    if "sqlite" in databases:
        with tempfile.TemporaryDirectory(prefix="swreg-bench-") as folder:
            path = Path(folder) / "customs.db"
            url = f"sqlite:///{path}"
            section["sqlite"] = measure_store(
                "sqlite", url, plan, keys, _lazy(lambda: sqlite_floor(path, plan.identifiers)),
                lambda: load_sqlite(path, plan), shipped_queries=shipped_queries,
            )  # fmt: skip
    if "pg" in databases:
        section["postgresql"] = _measure_pg(plan, keys, shipped_queries)
    return section


def _measure_pg(plan: Plan, keys: list[str], shipped_queries: int) -> dict[str, Any]:
    admin_url = os.environ.get("SWREG_PG_URL")
    if not admin_url:
        return {"skipped": "SWREG_PG_URL is not set (run through scripts/with-postgres)"}
    try:
        import psycopg
        from sqlalchemy.engine import make_url
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        return {"skipped": f"psycopg is not installed ({exc})"}
    admin = make_url(admin_url).set(drivername="postgresql")
    database = f"swreg_bench_{os.getpid()}"
    try:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {database}")
    except psycopg.Error as exc:
        return {"skipped": f"PostgreSQL at {admin.host}:{admin.port} unusable: {exc}"}
    url = make_url(admin_url).set(database=database)
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        return measure_store(
            "postgresql", url.render_as_string(hide_password=False), plan, keys,
            _lazy(lambda: pg_floor(conninfo, plan.identifiers)), lambda: load_pg(conninfo, plan),
            shipped_queries=shipped_queries,
        )  # fmt: skip
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _lazy(make: Callable[[], Callable[[str], int]]) -> Callable[[str], int]:
    """A floor connected on first use (after the schema exists)."""
    made: list[Callable[[str], int]] = []

    def query(key: str) -> int:
        if not made:
            made.append(make())
        return made[0](key)

    return query


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--db", choices=("sqlite", "pg", "both"), default="both")
    args = parser.parse_args()
    databases = ("sqlite", "pg") if args.db == "both" else (args.db,)
    section = measure(rows=args.rows, queries=args.queries, databases=databases)
    print(json.dumps(section, indent=2, ensure_ascii=False))
    merge_results({"customs_query": section})


if __name__ == "__main__":
    main()
