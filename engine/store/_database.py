"""The database: engine, migrations and units of work.

:class:`Database` owns the SQLAlchemy engine; a :class:`UnitOfWork` owns one session and one
transaction, and the service layer decides when it commits. SQLite files run in WAL mode with
foreign keys on and a 5 s busy timeout; PostgreSQL (psycopg 3) is used as configured by its URL,
at its default READ COMMITTED isolation (the audit chain's lock relies on it).

The schema comes from the Alembic migrations shipped in ``migrations/`` (:meth:`Database.migrate`),
never from ``create_all``.

The reads by key that a request waits for (the cached OCSP answer, 通關憑證查詢) skip the unit
of work: :meth:`Database.fetch_prebuilt` runs a statement built once, compiled once per database
(:func:`prebuilt`), on a driver cursor kept by each pooled connection, in autocommit on PostgreSQL.

Personal data stays out of logs and error texts: the engine is made with ``hide_parameters``,
so a failing statement's message (and ``echo``) shows the SQL without its bound values, and
PostgreSQL's data and integrity errors, which repeat the offending values (``DETAIL:  Key
(name)=(…) already exists``, ``invalid input syntax for type integer: "…"``), are cut down to
what names the failure (:func:`_hide_server_values`). A
SQLite database file and its ``-wal`` and ``-shm`` files are owner-only (0600): created so
whatever the umask, and tightened with a warning when found looser (DESIGN.md §6).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CompoundSelect, Connection, Dialect, Engine, Select, create_engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine._errors import EnvironmentProblem, ErrorCode, RefusedError
from engine._files import OWNER_ONLY, tighten_file_mode
from engine.store._audit import AuditLog
from engine.store._registrations import RegistrationRepository
from engine.store._repositories import (
    AccountRepository,
    AccountTokenRepository,
    ActivationRepository,
    CertificateRepository,
    ChallengeRepository,
    ConcurrentUpdate,
    CRLRepository,
    LoginChallengeRepository,
    MobileIdTicketRepository,
    RateLimitRepository,
    ReminderRepository,
    SessionRepository,
    TrustRepository,
    WorkflowRepository,
    translate_stale,
)
from engine.store._revocation import (
    CrlSourceRepository,
    FetchedCrlRepository,
    OcspCacheRepository,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Where the Alembic environment and revisions live (shipped as package data)."""

"""The mode of a SQLite database file, its ``-wal`` and ``-shm`` files (and the key file)."""


def _unavailable(exc: OperationalError) -> EnvironmentProblem:
    return EnvironmentProblem(ErrorCode.DATABASE_UNAVAILABLE, detail=str(exc.orig or exc))


def _sqlite_settings(synchronous: str) -> Callable[[Any, Any], None]:
    """Per-connection SQLite settings: WAL, ``synchronous``, foreign keys, busy timeout.

    In WAL mode ``synchronous=NORMAL`` syncs at checkpoints, not at every commit: a committed
    transaction survives the process being killed, and the database is never corrupted, but
    power loss may roll back the last commits. It saves ≈ 28 % of a registration's CPU and half
    its wall time (``make bench``); ``FULL`` is there for who needs every commit on disk.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
        finally:
            cursor.close()

    return on_connect


def _hide_server_values(context: ExceptionContext) -> None:
    """The engine's ``handle_error`` hook: :func:`_hide_values` on the driver's error, and the
    SQLAlchemy exception wrapping it reworded to match."""
    original = context.original_exception
    wrapped = context.sqlalchemy_exception
    if _hide_values(original) and wrapped is not None:
        kind = type(original)
        wrapped.args = (f"({kind.__module__}.{kind.__name__}) {original.args[0]}",)


def _hide_values(original: BaseException) -> bool:
    """Reword a PostgreSQL data (SQLSTATE 22…) or integrity (23…) error without the values it
    quotes; whether it was one. An integrity error keeps its primary message (``duplicate key
    value violates unique constraint "…"``: names only) and loses its DETAIL; a data error,
    whose primary message may quote the value itself, is told by its class, SQLSTATE and
    column. The exception classes stay, so callers catch them as before."""
    diag = getattr(original, "diag", None)
    state = str(getattr(diag, "sqlstate", None) or "")
    if not state.startswith(("22", "23")):
        return False
    primary = getattr(diag, "message_primary", None)
    if state.startswith("23") and primary:
        message = f"{primary} (SQLSTATE {state}; details hidden)"
    else:
        column = getattr(diag, "column_name", None)
        where = f", column {column}" if column else ""
        message = f"{type(original).__name__} (SQLSTATE {state}{where}; values hidden)"
    original.args = (message,)
    return True


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite database URL; ``None`` for in-memory databases and ``file:`` URIs."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def _prepare_sqlite_file(path: Path) -> None:
    """Create the directory and the database file owner-only (0600), and tighten an existing
    database, ``-wal`` or ``-shm`` file that others may read (a warning says so).

    SQLite gives the ``-wal`` and ``-shm`` files it creates the database file's mode.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # an empty file is an empty database to SQLite
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, OWNER_ONLY)  # exactly 0600, whatever the umask
            finally:
                os.close(fd)
        for member in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            tighten_file_mode(member)
    except OSError as exc:
        raise EnvironmentProblem(
            ErrorCode.DATABASE_UNAVAILABLE, detail=f"{path}: {exc.strerror}"
        ) from exc


class Database:
    """One database, by SQLAlchemy URL (``sqlite:///path/swreg.db``, ``postgresql+psycopg://...``).

    A plain ``postgresql://`` URL gets the psycopg (3) driver swreg depends on, not SQLAlchemy's
    default psycopg2.
    """

    def __init__(self, url: str, *, echo: bool = False, sqlite_synchronous: str = "NORMAL") -> None:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.url = parsed
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite:
            path = _sqlite_file(parsed)
            if path is not None:
                _prepare_sqlite_file(path)
        self.engine: Engine = create_engine(parsed, echo=echo, hide_parameters=True)
        self._prebuilt: dict[PrebuiltQuery, PrebuiltSql] = {}  # see fetch_prebuilt
        event.listen(self.engine, "handle_error", _hide_server_values)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_settings(sqlite_synchronous))

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        return config

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision and commit; a no-op when up to date."""
        config = self._alembic_config()
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def is_migrated(self) -> bool:
        """Whether the schema is at the newest revision."""
        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        try:
            with self.engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        except OperationalError as exc:
            raise _unavailable(exc) from exc
        return current is not None and current == head

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work; use it as a context manager."""
        return UnitOfWork(self.engine)

    @contextmanager
    def riding_the_next_commit(self, work: Callable[[UnitOfWork], None]) -> Iterator[Rider]:
        """``work(uow)`` done in the first unit of work of this database that the block
        commits, in this thread (or task), as the first step of its :meth:`UnitOfWork.commit`:
        a statement that belongs to the block's work but needs no transaction of its own (a
        request's rate-limit hit). ``work`` may raise to refuse the commit (it is rolled back).

        Afterwards :attr:`Rider.carried` says whether a commit carried it; when none did (the
        block committed nothing, failed, or ``work`` refused), the caller does it on its own.
        Blocks may nest: the innermost rider rides.
        """
        rider = Rider(work, self.engine)
        token = _RIDER.set(rider)
        try:
            yield rider
        finally:
            _RIDER.reset(token)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def fetch_prebuilt(
        self, statement: PrebuiltQuery, parameters: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of a read-only ``statement`` built once (a module constant: it is kept
        here, compiled), bound to ``parameters`` by name: compiled once per database into the
        driver's SQL text (:func:`prebuilt`) and run on a pooled DBAPI connection, outside any
        unit of work. A name bound at several places (the two parts of a ``UNION ALL``) is given
        once; a driver of positional parameters (sqlite3) gets it at each place. The reads by
        key a request waits for use it: the cached OCSP answer (``_revocation``) and
        通關憑證查詢 (``_customs_lookup``).

        None of the per-execution work of ``Connection.execute`` is done (the cache key, the
        cursor description — a column object per selected column with psycopg —, the result
        object), which costs more CPU than the driver's own work, and each pooled connection
        keeps one driver cursor for these reads (a new psycopg cursor costs ≈ 40 µs of CPU,
        twice an OCSP cache read, half a 通關憑證查詢): a lookup by key costs about the driver's
        own time. psycopg prepares
        the statement on a connection after its fifth run there. The columns are converted by
        their SQLAlchemy types' result processors (aware UTC datetimes, booleans, bytes), as a
        ``Connection`` would. PostgreSQL runs it in autocommit (no BEGIN and ROLLBACK round
        trips; the one statement sees one committed state); the sqlite3 driver opens no
        transaction for a SELECT anyway, so its isolation level is left alone.

        Connection events and ``echo`` are bypassed (the pool's events are not). A database
        that cannot be reached is ``database_unavailable`` (as for a unit of work); a driver
        error in the statement discards the connection (never back to the pool in an unknown
        state) and is raised as ``Connection.execute`` raises it (its SQLAlchemy class, the
        parameters and the values a PostgreSQL error quotes hidden).
        """
        engine = self.engine
        dialect = engine.dialect
        compiled = self._prebuilt.get(statement)
        if compiled is None:  # a race compiles twice, harmlessly
            compiled = self._prebuilt[statement] = prebuilt(statement, dialect)
        driver_error = dialect.loaded_dbapi.Error
        try:
            raw = engine.raw_connection()
        except driver_error as exc:
            failed = _translated(exc, dialect, compiled.sql)
            if isinstance(failed, OperationalError):
                raise _unavailable(failed) from exc
            raise failed from exc
        autocommit = dialect.name != "sqlite"
        try:
            if autocommit:
                raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            kept = raw.info.get(_CURSOR)
            if kept is not None and kept[0] is raw.dbapi_connection:
                cursor = kept[1]
            else:
                cursor = raw.cursor()
                raw.info[_CURSOR] = (raw.dbapi_connection, cursor)
            cursor.execute(compiled.sql, compiled.parameters(parameters))
            rows = cursor.fetchall()
            if autocommit:
                raw.driver_connection.autocommit = False  # type: ignore[union-attr]
        except BaseException as exc:
            raw.invalidate()  # in an unknown state (a lost link?): not back to the pool
            if isinstance(exc, driver_error):
                raise _translated(exc, dialect, compiled.sql) from exc
            raise
        finally:
            raw.close()
        return [compiled.row(values) for values in rows]


# -- prebuilt read-only statements on the pooled driver cursor ----------------------------------

PrebuiltQuery = Select[Any] | CompoundSelect[Any]
"""A statement :meth:`Database.fetch_prebuilt` runs: built once, at import."""

_CURSOR = "swreg_prebuilt_cursor"
"""The key of the driver cursor :meth:`Database.fetch_prebuilt` keeps in a pooled connection's
``info`` (with the driver connection it belongs to; SQLAlchemy clears ``info`` when it replaces
the connection)."""


class PrebuiltSql(NamedTuple):
    """A :data:`PrebuiltQuery` compiled for one dialect (:func:`prebuilt`)."""

    sql: str
    """The driver's SQL text."""
    names: tuple[str, ...]
    """The bind parameters' names, in the order a driver of positional parameters takes them."""
    positional: bool
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    """(name, bind processor of its type) for the parameters the driver needs converted."""
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    """(column index, result processor of its type) for the columns the driver does not return
    as they are meant (SQLite: datetimes as text, booleans as integers; PostgreSQL: aware
    datetimes in the session's time zone)."""

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """``values`` as the driver takes them (every bind parameter named, no other)."""
        if self.binds:
            values = dict(values)
            for name, process in self.binds:
                values[name] = process(values[name])
        if self.positional:
            return tuple([values[name] for name in self.names])
        return {name: values[name] for name in self.names}

    def row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """One fetched row with its columns converted."""
        if not self.processors:
            return tuple(values)
        converted = list(values)
        for index, process in self.processors:
            converted[index] = process(converted[index])
        return tuple(converted)


def prebuilt(statement: PrebuiltQuery, dialect: Dialect) -> PrebuiltSql:
    """``statement`` compiled for ``dialect`` (for ``EXPLAIN`` and benchmarks too)."""
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ()) if dialect.positional else tuple(compiled.binds)
    if dialect.positional and compiled.binds and not names:  # pragma: no cover
        raise AssertionError("a positional statement without its parameters' order")
    binds = []
    for name in dict.fromkeys(names):
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds.append((name, process))
    processors = []
    for index, column in enumerate(statement.selected_columns):
        result = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if result is not None:
            processors.append((index, result))
    return PrebuiltSql(compiled.string, names, dialect.positional, tuple(binds), tuple(processors))


def _translated(exc: Exception, dialect: Dialect, sql: str) -> BaseException:
    """A driver's exception as ``Connection.execute`` raises it: its SQLAlchemy class, the
    parameters hidden, and the values a PostgreSQL error quotes too (:func:`_hide_values`, what
    the engine's ``handle_error`` hook does, which this path bypasses)."""
    _hide_values(exc)
    return DBAPIError.instance(
        sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
    )


class Rider:
    """Work carried by the next commit (:meth:`Database.riding_the_next_commit`)."""

    def __init__(self, work: Callable[[UnitOfWork], None], engine: Engine) -> None:
        self.work = work
        self.engine = engine
        self.carried = False
        """Whether a committed unit of work carried the work."""


_RIDER: ContextVar[Rider | None] = ContextVar("swreg_commit_rider", default=None)
"""The rider of the block running in this context (:meth:`Database.riding_the_next_commit`)."""


class UnitOfWork:
    """One connection and its transaction, with the repositories bound to it.

    ::

        with database.unit_of_work() as uow:
            reg = uow.registrations.get(id)
            ...
            uow.commit()

    Leaving the block without :meth:`commit` rolls back; an exception rolls back and propagates
    (a stale registration update propagates as :class:`ConcurrentUpdate`, ``invalid_transition``).
    Audit rows appended in it are chained at :meth:`commit` (see ``_audit``).

    Core statements run on :meth:`connection`; the ORM :attr:`session` is made on first use,
    joined to the same transaction. The registration path never needs one: a session costs
    ≈ 50 µs per unit of work (``make bench``). After :meth:`commit` or :meth:`rollback` the
    unit of work goes on in a new transaction.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._after_commit: list[Callable[[], None]] = []
        self.registrations = RegistrationRepository(self)
        self.accounts = AccountRepository(self)
        self.certificates = CertificateRepository(self)
        self.challenges = ChallengeRepository(self)
        self.trust = TrustRepository(self)
        self.crls = CRLRepository(self)
        self.crl_sources = CrlSourceRepository(self)
        self.fetched_crls = FetchedCrlRepository(self)
        self.ocsp = OcspCacheRepository(self)
        self.workflows = WorkflowRepository(self)
        self.activations = ActivationRepository(self)
        self.account_tokens = AccountTokenRepository(self)
        self.login_challenges = LoginChallengeRepository(self)
        self.mobile_id_tickets = MobileIdTicketRepository(self)
        self.sessions = SessionRepository(self)
        self.rate_limits = RateLimitRepository(self)
        self.reminders = ReminderRepository(self)
        self.audit = AuditLog(self)

    def __enter__(self) -> UnitOfWork:
        try:
            self._connection = self._engine.connect()
        except OperationalError as exc:
            raise _unavailable(exc) from exc
        self._connection.begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.audit.discard_pending()
        try:
            if self._session is not None:
                self._session.close()
        finally:
            if self._connection is not None:
                self._connection.close()  # rolls back what was not committed
                self._connection = None
        if isinstance(exc, StaleDataError):
            raise ConcurrentUpdate() from exc
        if isinstance(exc, DataError):  # NUL in PostgreSQL text, a number out of range
            raise RefusedError(
                ErrorCode.INVALID_VALUE, detail="a value the database cannot hold"
            ) from exc

    @property
    def session(self) -> Session:
        """The ORM session, in this unit of work's transaction (made on first use)."""
        if self._session is None:
            self._session = Session(
                bind=self._open(), expire_on_commit=False, join_transaction_mode="rollback_only"
            )
        return self._session

    def connection(self) -> Connection:
        """The connection in this unit of work's transaction, for Core statements.

        Pending ORM changes are flushed first, so a statement sees them.
        """
        if self._session is not None:
            self.flush()
        return self._open()

    def _open(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("use the unit of work as a context manager")
        return self._connection

    def commit(self) -> None:
        """Flush and commit everything done so far: first the work of a rider waiting for
        this commit (:meth:`Database.riding_the_next_commit`), the audit rows chained last."""
        connection = self._open()
        rider = _RIDER.get()
        if rider is not None and (rider.carried or rider.engine is not self._engine):
            rider = None
        if rider is not None:
            rider.work(self)
        with translate_stale():
            self.audit.write_pending()
            if self._session is not None:
                self._session.commit()  # flushes; the transaction is the connection's
        connection.commit()
        if rider is not None:
            rider.carried = True
        connection.begin()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the next :meth:`commit` succeeded (not after a rollback)."""
        self._after_commit.append(callback)

    def rollback(self) -> None:
        """Discard everything since the last commit."""
        connection = self._open()
        self.audit.discard_pending()
        self._after_commit.clear()
        if self._session is not None:
            self._session.rollback()  # rolls the connection's transaction back too
        if connection.in_transaction():
            connection.rollback()
        connection.begin()

    def flush(self) -> None:
        """Send pending ORM changes to the database without committing."""
        if self._session is not None:
            with translate_stale():
                self._session.flush()
