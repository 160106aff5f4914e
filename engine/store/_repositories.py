"""Thin, typed repositories over one unit of work's session.

They never commit, and translate the database's refusals into the error tree: a duplicate
account name is ``account_exists``, a duplicate certificate ``already_registered``, a stale
registration update ``invalid_transition`` (:class:`ConcurrentUpdate`).

Rows that may already exist are inserted at once with ``INSERT ... ON CONFLICT (key) DO
NOTHING RETURNING`` (SQLite ≥ 3.35 and PostgreSQL) through SQLAlchemy Core: a taken key
returns nothing, the surrounding transaction stays usable (no savepoint), and any other
integrity failure (a broken foreign key) is raised as it is. Those inserts take the model's
object for its values and set its generated key; the object itself is not added to the
session (a later change to it is not saved). The statements of the registration path are
built once per dialect; lookups that return ORM objects stay ORM queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine._errors import ErrorCode, RefusedError, WorkflowError
from engine.store._models import (
    CRL,
    Account,
    AccountToken,
    ActivationToken,
    Base,
    Certificate,
    Challenge,
    LoginChallenge,
    LoginSession,
    MobileIdTicket,
    RateLimitWindow,
    Reminder,
    TrustCertificate,
    UTCDateTime,
    WorkflowDefinition,
)

if TYPE_CHECKING:
    from engine.store._database import Database

ENDING_STATES: tuple[str, ...] = ("completed", "cancelled", "expired")
"""Registration states that never expire (the workflow's endings)."""

_ACCOUNTS = cast(Table, Account.__table__)
_CERTIFICATES = cast(Table, Certificate.__table__)
_CHALLENGES = cast(Table, Challenge.__table__)
_ACCOUNT_NAMED = select(_ACCOUNTS.c.id).where(_ACCOUNTS.c.name == bindparam("name")).limit(1)
_ACTIVE_LOGIN = (
    select(_CERTIFICATES.c.id)
    .where(
        _CERTIFICATES.c.fingerprint == bindparam("fingerprint"),
        _CERTIFICATES.c.purpose == "login",
        _CERTIFICATES.c.status == "active",
    )
    .limit(1)
)
_CHALLENGE_INSERT = insert(_CHALLENGES)
_CHALLENGE_GET = select(_CHALLENGES).where(_CHALLENGES.c.id == bindparam("id"))
_CONSUME = (
    update(_CHALLENGES)
    .where(_CHALLENGES.c.id == bindparam("challenge_id"), _CHALLENGES.c.used_at.is_(None))
    .values(used_at=bindparam("at"))
)
_TAKE = _CONSUME.where(_CHALLENGES.c.registration_id == bindparam("registration")).returning(
    *_CHALLENGES.c
)
_ACTIVATION_INSERT = insert(cast(Table, ActivationToken.__table__))


class ConcurrentUpdate(WorkflowError):
    """``invalid_transition``: another unit of work updated the registration first (its
    ``version`` moved on since it was loaded), so this update was not applied."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.INVALID_TRANSITION, detail="concurrent update")


@contextmanager
def translate_stale() -> Iterator[None]:
    """Turn SQLAlchemy's optimistic-locking failure into :class:`ConcurrentUpdate`."""
    try:
        yield
    except StaleDataError as exc:
        raise ConcurrentUpdate() from exc


class Scope(Protocol):
    """What a repository works in: one unit of work's transaction (``UnitOfWork``)."""

    @property
    def session(self) -> Session:
        """The ORM session in the transaction (made on first use)."""
        ...

    def connection(self) -> Connection:
        """The connection in the transaction, for Core statements (pending ORM changes are
        flushed first, so a statement sees them)."""
        ...


class _Repository:
    """A repository bound to one unit of work: Core statements on its connection, ORM
    queries on its session (which exists only once one is made)."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    @property
    def _session(self) -> Session:
        return self._scope.session


@cache
def _insert_new_statement(dialect: str, table: Table, key: tuple[str, ...], returning: str) -> Any:
    """``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING returning`` for ``dialect``."""
    if dialect == "postgresql":
        construct: Any = postgresql.insert
    elif dialect == "sqlite":
        construct = sqlite.insert
    else:  # pragma: no cover - the store supports SQLite and PostgreSQL only
        raise NotImplementedError(f"the store needs SQLite or PostgreSQL, not {dialect}")
    return (
        construct(table)
        .on_conflict_do_nothing(index_elements=[table.c[name] for name in key])
        .returning(table.c[returning])
    )


def insert_new(connection: Connection, table: Table, values: dict[str, Any], *key: str) -> Any:
    """Insert ``values`` into ``table`` now; the row's primary key, or None when a row with
    the same ``key`` columns exists (nothing is written then)."""
    returning = next(iter(table.primary_key.columns)).name
    stmt = _insert_new_statement(connection.dialect.name, table, key, returning)
    return connection.execute(stmt, values).scalar()


def _values(row: Base) -> dict[str, Any]:
    """The column values set on a model object (unset ones get their column defaults)."""
    table = cast(Table, row.__table__)
    state = row.__dict__
    return {column.key: state[column.key] for column in table.columns if column.key in state}


def _insert_model(connection: Connection, row: Base, *key: str) -> bool:
    """Insert a model object's values unless ``key`` is taken; set its generated key."""
    table = cast(Table, row.__table__)
    primary = insert_new(connection, table, _values(row), *key)
    if primary is None:
        return False
    name = next(iter(table.primary_key.columns)).key
    if getattr(row, name, None) is None:
        setattr(row, name, primary)
    return True


class AccountRepository(_Repository):
    """Accounts, unique by name."""

    def add(self, account: Account) -> None:
        """Insert ``account`` now and set its ``id``; a taken name raises ``account_exists``
        (field ``account``)."""
        account.id = self.insert(_values(account))

    def insert(self, values: dict[str, Any]) -> int:
        """Insert an account from its column values now; its ``id``. A taken name raises
        ``account_exists`` (field ``account``)."""
        id = insert_new(self._scope.connection(), _ACCOUNTS, values, "name")
        if id is None:
            raise RefusedError(ErrorCode.ACCOUNT_EXISTS, field="account")
        return int(id)

    def exists(self, name: str) -> bool:
        """Whether an account called ``name`` exists."""
        found = self._scope.connection().execute(_ACCOUNT_NAMED, {"name": name})
        return found.first() is not None

    def get(self, id: int) -> Account | None:
        """The account with primary key ``id``, or None."""
        return self._session.get(Account, id)

    def lock(self, id: int) -> Account | None:
        """The account with primary key ``id``, read afresh under its row's write lock (held
        until the unit of work ends): a write first (``UPDATE … SET id = id``: SQLite's writer
        lock, PostgreSQL's row lock), then the read, so no change committed meanwhile is missed
        or overwritten; None if there is no such account."""
        stmt = update(Account).where(Account.id == id).values(id=Account.id)
        if _rowcount(self._session, stmt.execution_options(synchronize_session=False)) != 1:
            return None
        return self._session.get(Account, id, populate_existing=True)

    def get_by_name(self, name: str) -> Account | None:
        """The account called ``name``, or None."""
        return self._session.scalar(select(Account).where(Account.name == name))

    def owner_of_ubn(self, ubn: str) -> Account | None:
        """The account of a company by UBN: the one named by the UBN itself (the 正卡 account),
        else the oldest account carrying that UBN (an account UBN + 附卡編號); None if none."""
        query = (
            select(Account)
            .where(Account.ubn == ubn)
            .order_by((Account.name != ubn), Account.id)
            .limit(1)
        )
        return self._session.scalar(query)


class CertificateRepository(_Repository):
    """Registered certificates, unique per (fingerprint, purpose)."""

    def add(self, cert: Certificate) -> None:
        """Insert ``cert`` now and set its ``id``; a known (fingerprint, purpose) raises
        ``already_registered``."""
        cert.id = self.insert(_values(cert))

    def insert(self, values: dict[str, Any]) -> int:
        """Insert a certificate from its column values now; its ``id``. A known
        (fingerprint, purpose) raises ``already_registered``."""
        id = insert_new(self._scope.connection(), _CERTIFICATES, values, "fingerprint", "purpose")
        if id is None:
            raise RefusedError(ErrorCode.ALREADY_REGISTERED)
        return int(id)

    def has_active_login(self, fingerprint: str) -> bool:
        """Whether an active login certificate has this SHA-256 fingerprint."""
        values = {"fingerprint": fingerprint}
        return self._scope.connection().execute(_ACTIVE_LOGIN, values).first() is not None

    def active_login(self, fingerprint: str) -> Certificate | None:
        """The active login certificate with this SHA-256 fingerprint, or None."""
        query = select(Certificate).where(
            Certificate.fingerprint == fingerprint,
            Certificate.purpose == "login",
            Certificate.status == "active",
        )
        return self._session.scalar(query)

    def find(self, fingerprint: str, purpose: str) -> Certificate | None:
        """The certificate registered for ``purpose`` with this fingerprint, whatever its status."""
        query = select(Certificate).where(
            Certificate.fingerprint == fingerprint, Certificate.purpose == purpose
        )
        return self._session.scalar(query)

    def logins_of(self, account_id: int) -> list[Certificate]:
        """Every login certificate the account has had (active, replaced, ...), oldest first."""
        query = (
            select(Certificate)
            .where(Certificate.account_id == account_id, Certificate.purpose == "login")
            .order_by(Certificate.id)
        )
        return list(self._session.scalars(query))

    def active_login_of(self, account_id: int) -> Certificate | None:
        """The account's active login certificate (the newest, should there be several)."""
        query = (
            select(Certificate)
            .where(
                Certificate.account_id == account_id,
                Certificate.purpose == "login",
                Certificate.status == "active",
            )
            .order_by(Certificate.id.desc())
            .limit(1)
        )
        return self._session.scalar(query)

    def signing_in_force(self, at: datetime) -> list[tuple[str, str, bytes]]:
        """``(fingerprint, serial_hex, der)`` of every active signing certificate not expired
        at ``at``, by id (``swreg revocation refresh`` renews their OCSP answers)."""
        query = (
            select(Certificate.fingerprint, Certificate.serial_hex, Certificate.der)
            .where(
                Certificate.purpose == "signing",
                Certificate.status == "active",
                Certificate.not_after > at,
            )
            .order_by(Certificate.id)
        )
        rows = self._scope.connection().execute(query)
        return [(str(f), str(s), bytes(d)) for f, s, d in rows]


class ChallengeRepository(_Repository):
    """Single-use challenges of 憑證註冊 (Core statements: one per registration step)."""

    def add(self, ch: Challenge) -> None:
        """Insert a new challenge now."""
        self._scope.connection().execute(_CHALLENGE_INSERT, _values(ch))

    def get(self, id: str) -> Row[Any] | None:
        """The challenge ``id`` as a row (``id``, ``registration_id``, ``nonce``, ``origin``,
        ``created_at``, ``expires_at``, ``used_at``), or None."""
        return self._scope.connection().execute(_CHALLENGE_GET, {"id": id}).first()

    def consume(self, id: str, at: datetime) -> bool:
        """Mark the challenge used at ``at``; True only for the one caller that got it first.

        One atomic ``UPDATE ... WHERE used_at IS NULL``, safe across workers.
        """
        values = {"challenge_id": id, "at": at}
        result = cast(CursorResult[Any], self._scope.connection().execute(_CONSUME, values))
        return result.rowcount == 1

    def take(self, id: str, registration_id: str, at: datetime) -> Row[Any] | None:
        """:meth:`consume` the challenge of ``registration_id`` and return its row (as
        :meth:`get`), in one statement; None when it is unknown, another registration's or
        already used (nothing changes then)."""
        values = {"challenge_id": id, "registration": registration_id, "at": at}
        return self._scope.connection().execute(_TAKE, values).first()


class TrustRepository(_Repository):
    """The CA certificates of the trust store."""

    def add(
        self, der: bytes, subject: str, fingerprint: str, is_anchor: bool, at: datetime
    ) -> bool:
        """Add a CA certificate; False (and nothing changes) when it is already there."""
        if self._exists(fingerprint):
            return False
        row = TrustCertificate(
            fingerprint=fingerprint, der=der, subject=subject, is_anchor=is_anchor, added_at=at
        )
        return _insert_model(self._scope.connection(), row, "fingerprint")

    def list(self) -> list[TrustCertificate]:
        """Every trust certificate, in the order added."""
        return list(self._session.scalars(select(TrustCertificate).order_by(TrustCertificate.id)))

    def version(self) -> tuple[int, int]:
        """``(count, max id)``: changes whenever a certificate is added or removed."""
        return _version(self._scope.connection(), TrustCertificate.id)

    def version_with_crls(self) -> tuple[int, int, int, int]:
        """This :meth:`version`, then :meth:`CRLRepository.version`, in one statement.

        What a cached trust snapshot is compared against on every card check (one round trip).
        """
        row = self._scope.connection().execute(_trust_and_crl_version_query()).one()
        count, max_id, crl_count, crl_max_id = (int(value or 0) for value in row)
        return count, max_id, crl_count, crl_max_id

    def _exists(self, fingerprint: str) -> bool:
        query = select(TrustCertificate.id).where(TrustCertificate.fingerprint == fingerprint)
        return self._session.scalar(query) is not None


class CRLRepository(_Repository):
    """Certificate revocation lists."""

    def add(
        self,
        der: bytes,
        issuer: str,
        fingerprint: str,
        crl_number: int | None,
        this_update: datetime,
        next_update: datetime | None,
        at: datetime,
    ) -> bool:
        """Add a CRL; False (and nothing changes) when it is already there."""
        if self._exists(fingerprint):
            return False
        row = CRL(
            fingerprint=fingerprint,
            issuer=issuer,
            der=der,
            crl_number=None if crl_number is None else str(crl_number),
            this_update=this_update,
            next_update=next_update,
            added_at=at,
        )
        return _insert_model(self._scope.connection(), row, "fingerprint")

    def list(self) -> list[CRL]:
        """Every CRL, in the order added."""
        return list(self._session.scalars(select(CRL).order_by(CRL.id)))

    def version(self) -> tuple[int, int]:
        """``(count, max id)``: changes whenever a CRL is added or removed."""
        return _version(self._scope.connection(), CRL.id)

    def _exists(self, fingerprint: str) -> bool:
        query = select(CRL.id).where(CRL.fingerprint == fingerprint)
        return self._session.scalar(query) is not None


class WorkflowRepository(_Repository):
    """Workflow definitions by content hash."""

    def ensure(self, hash: str, name: str, source: str, at: datetime) -> None:
        """Record the definition ``hash`` unless it is already stored."""
        values = {"hash": hash, "name": name, "source": source, "created_at": at}
        insert_new(
            self._scope.connection(), cast(Table, WorkflowDefinition.__table__), values, "hash"
        )

    def get(self, hash: str) -> WorkflowDefinition | None:
        """The definition stored under ``hash``, or None."""
        return self._session.get(WorkflowDefinition, hash)


class ActivationRepository(_Repository):
    """Account activation tokens, keyed by the SHA-256 hex of the token."""

    def add(self, token: ActivationToken) -> None:
        """Insert a new activation token now."""
        self.insert(_values(token))

    def insert(self, values: dict[str, Any]) -> None:
        """Insert a new activation token from its column values now."""
        self._scope.connection().execute(_ACTIVATION_INSERT, values)

    def get(self, token_hash: str) -> ActivationToken | None:
        """The token stored under ``token_hash``, or None."""
        return self._session.get(ActivationToken, token_hash)

    def consume(self, token_hash: str, at: datetime) -> bool:
        """Mark the token used at ``at``; True only for the one caller that got it first.

        One atomic ``UPDATE ... WHERE used_at IS NULL``, safe across workers.
        """
        return _mark_used(
            self._session, ActivationToken, ActivationToken.token_hash, token_hash, at
        )

    def retire(self, account_id: int, at: datetime) -> int:
        """Mark every unused token of the account used at ``at``; how many there were."""
        stmt = (
            update(ActivationToken)
            .where(ActivationToken.account_id == account_id, ActivationToken.used_at.is_(None))
            .values(used_at=at)
            .execution_options(synchronize_session="fetch")
        )
        return _rowcount(self._session, stmt)


class AccountTokenRepository(_Repository):
    """Single-use links of an account's own changes, keyed by the SHA-256 hex of the token."""

    def add(self, token: AccountToken) -> None:
        """Add a new token (inserted at the next flush)."""
        self._session.add(token)

    def get(self, token_hash: str, purpose: str) -> AccountToken | None:
        """The token stored under ``token_hash`` for ``purpose`` (used or not), or None."""
        token = self._session.get(AccountToken, token_hash)
        return token if token is not None and token.purpose == purpose else None

    def consume(self, token_hash: str, at: datetime) -> bool:
        """Mark the token used at ``at``; True only for the one caller that got it first."""
        return _mark_used(self._session, AccountToken, AccountToken.token_hash, token_hash, at)

    def retire_all(self, account_id: int, at: datetime) -> int:
        """Mark every unused token of the account (every purpose) used at ``at``, forgetting
        the addresses they held; how many."""
        stmt = (
            update(AccountToken)
            .where(AccountToken.account_id == account_id, AccountToken.used_at.is_(None))
            .values(used_at=at, new_email=None)
            .execution_options(synchronize_session="fetch")
        )
        return _rowcount(self._session, stmt)

    def delete_dead(self, at: datetime) -> int:
        """Delete the tokens that can no longer be used at ``at`` (used, retired or expired),
        with the addresses they held; how many."""
        stmt = delete(AccountToken).where(
            or_(AccountToken.used_at.is_not(None), AccountToken.expires_at <= at)
        )
        return _rowcount(self._session, stmt.execution_options(synchronize_session=False))


class LoginChallengeRepository(_Repository):
    """Single-use challenges of 憑證登入."""

    def add(self, challenge: LoginChallenge) -> None:
        """Add a new login challenge (inserted at the next flush)."""
        self._session.add(challenge)

    def get(self, id: str) -> LoginChallenge | None:
        """The login challenge ``id``, or None."""
        return self._session.get(LoginChallenge, id)

    def consume(self, id: str, at: datetime) -> bool:
        """Mark the challenge used at ``at``; True only for the one caller that got it first."""
        return _mark_used(self._session, LoginChallenge, LoginChallenge.id, id, at)


class MobileIdTicketRepository(_Repository):
    """Signings under way at TW FidO, keyed by the SHA-256 hex of their pending id."""

    def add(self, ticket: MobileIdTicket) -> None:
        """Add a new ticket (inserted at the next flush)."""
        self._session.add(ticket)

    def get(self, id_hash: str) -> MobileIdTicket | None:
        """The ticket stored under ``id_hash``, or None."""
        return self._session.get(MobileIdTicket, id_hash)

    def claim_poll(self, id_hash: str, at: datetime, next_poll_at: datetime) -> bool:
        """Move the ticket's next poll to ``next_poll_at`` if it is due at ``at``: True only for
        the one caller that may ask the service now."""
        stmt = (
            update(MobileIdTicket)
            .where(MobileIdTicket.id_hash == id_hash, MobileIdTicket.next_poll_at <= at)
            .values(next_poll_at=next_poll_at)
            .execution_options(synchronize_session="fetch")
        )
        return _rowcount(self._session, stmt) == 1

    def pace(self, id_hash: str, next_poll_at: datetime) -> None:
        """The ticket may be asked for again from ``next_poll_at`` (after a pending answer)."""
        stmt = (
            update(MobileIdTicket)
            .where(MobileIdTicket.id_hash == id_hash)
            .values(next_poll_at=next_poll_at)
            .execution_options(synchronize_session="fetch")
        )
        self._session.execute(stmt)

    def remove(self, id_hash: str) -> bool:
        """Delete the ticket (its answer was taken, or it ended); True only for the one caller
        that removed it."""
        stmt = delete(MobileIdTicket).where(MobileIdTicket.id_hash == id_hash)
        return _rowcount(self._session, stmt.execution_options(synchronize_session=False)) == 1

    def delete_dead(self, at: datetime) -> int:
        """Delete the tickets whose time ended before ``at`` (abandoned); how many."""
        stmt = delete(MobileIdTicket).where(MobileIdTicket.expires_at <= at)
        return _rowcount(self._session, stmt.execution_options(synchronize_session=False))


class SessionRepository(_Repository):
    """Logged-in sessions, keyed by the SHA-256 hex of the session token."""

    def add(self, row: LoginSession) -> None:
        """Add a new session (inserted at the next flush)."""
        self._session.add(row)

    def get(self, token_hash: str) -> LoginSession | None:
        """The session stored under ``token_hash`` (live or not), or None."""
        return self._session.get(LoginSession, token_hash)

    def touch(self, token_hash: str, at: datetime, expires_at: datetime) -> bool:
        """Slide a live session: ``last_seen_at = at``, ``expires_at = expires_at``.

        One atomic UPDATE that matches only a session not ended and not expired at ``at``;
        False when there is none.
        """
        stmt = (
            update(LoginSession)
            .where(
                LoginSession.token_hash == token_hash,
                LoginSession.ended_at.is_(None),
                LoginSession.expires_at > at,
            )
            .values(last_seen_at=at, expires_at=expires_at)
            .execution_options(synchronize_session="fetch")
        )
        return _rowcount(self._session, stmt) == 1

    def end(self, token_hash: str, at: datetime) -> bool:
        """End the session at ``at``; True only when it had not ended already."""
        stmt = (
            update(LoginSession)
            .where(LoginSession.token_hash == token_hash, LoginSession.ended_at.is_(None))
            .values(ended_at=at)
            .execution_options(synchronize_session="fetch")
        )
        return _rowcount(self._session, stmt) == 1

    def delete_dead(self, at: datetime) -> int:
        """Delete the sessions that can no longer be used at ``at`` (ended or expired), with the
        client descriptions they held; how many."""
        stmt = delete(LoginSession).where(
            or_(LoginSession.ended_at.is_not(None), LoginSession.expires_at <= at)
        )
        return _rowcount(self._session, stmt.execution_options(synchronize_session=False))

    def live_of(self, account_id: int, at: datetime) -> list[LoginSession]:
        """The account's sessions neither ended nor expired at ``at``, newest first (an
        absolute limit is the caller's to apply: it knows ``session_max``)."""
        query = (
            select(LoginSession)
            .where(
                LoginSession.account_id == account_id,
                LoginSession.ended_at.is_(None),
                LoginSession.expires_at > at,
            )
            .order_by(LoginSession.created_at.desc())
        )
        return list(self._session.scalars(query))

    def end_others(self, account_id: int, keep: str, at: datetime) -> int:
        """End every session of the account but the one stored under ``keep``; how many."""
        stmt = (
            update(LoginSession)
            .where(
                LoginSession.account_id == account_id,
                LoginSession.token_hash != keep,
                LoginSession.ended_at.is_(None),
            )
            .values(ended_at=at)
            .execution_options(synchronize_session="fetch")
        )
        return _rowcount(self._session, stmt)

    def end_all(self, account_id: int, at: datetime) -> int:
        """End every session of the account not ended yet at ``at``; how many ended.

        For services that cut an account off in their own transaction (log out everywhere,
        card replacement, password reset, suspension); they audit it in their own row.
        """
        stmt = (
            update(LoginSession)
            .where(LoginSession.account_id == account_id, LoginSession.ended_at.is_(None))
            .values(ended_at=at)
            .execution_options(synchronize_session="fetch")
        )
        return _rowcount(self._session, stmt)


@cache
def _rate_limit_hit_statement(dialect: str) -> Any:
    """The upsert of :meth:`RateLimitRepository.hit` for ``dialect`` (values at execution)."""
    if dialect == "postgresql":
        construct: Any = postgresql.insert
    elif dialect == "sqlite":
        construct = sqlite.insert
    else:  # pragma: no cover - the store supports SQLite and PostgreSQL only
        raise NotImplementedError(f"rate limits need SQLite or PostgreSQL, not {dialect}")
    table = cast(Table, RateLimitWindow.__table__)
    return (
        construct(table)
        .on_conflict_do_update(
            index_elements=[table.c.key, table.c.window_start],
            set_={"count": table.c.count + 1},
        )
        .returning(table.c.count)
    )


_RATE_LIMIT_COUNT = select(RateLimitWindow.count).where(
    RateLimitWindow.key == bindparam("key", type_=String()),
    RateLimitWindow.window_start == bindparam("window_start", type_=UTCDateTime()),
)


def rate_limit_count(database: Database, key: str, window_start: datetime) -> int:
    """The hits of ``key`` in the window starting at ``window_start`` (0 when none), read
    outside any transaction (:meth:`Database.fetch_prebuilt`): the look a request takes
    before its work, whose own commit then counts its hit."""
    rows = database.fetch_prebuilt(_RATE_LIMIT_COUNT, {"key": key, "window_start": window_start})
    return int(rows[0][0]) if rows else 0


class RateLimitRepository(_Repository):
    """Hit counters per (key, fixed window)."""

    def hit(self, key: str, window_start: datetime) -> int:
        """Count one hit of ``key`` in the window starting at ``window_start``; the new count.

        One ``INSERT ... ON CONFLICT (key, window_start) DO UPDATE SET count = count + 1
        RETURNING count`` (SQLite ≥ 3.35 and PostgreSQL), so concurrent workers never lose a hit.
        Every portal request counts one: the statement is built once per dialect and runs on
        the unit of work's connection (no ORM session).
        """
        connection = self._scope.connection()
        stmt = _rate_limit_hit_statement(connection.dialect.name)
        values = {"key": key, "window_start": window_start, "count": 1}
        return int(connection.execute(stmt, values).scalar_one())

    def count(self, key: str, window_start: datetime) -> int:
        """The hits of ``key`` in the window starting at ``window_start`` (0 when none)."""
        query = select(RateLimitWindow.count).where(
            RateLimitWindow.key == key, RateLimitWindow.window_start == window_start
        )
        return int(self._session.scalar(query) or 0)

    def purge(self, before: datetime) -> int:
        """Delete every window that started before ``before``; how many were deleted."""
        stmt = delete(RateLimitWindow).where(RateLimitWindow.window_start < before)
        return _rowcount(self._session, stmt.execution_options(synchronize_session=False))


class ReminderRepository(_Repository):
    """Expiry reminders, one per (certificate, window); the row is the claim to send it.

    Claims are atomic statements, so any number of workers may run the reminders at once:
    :meth:`claim` is ``INSERT ... ON CONFLICT DO NOTHING`` and :meth:`reclaim` an ``UPDATE``
    guarded by ``sent_at IS NULL AND claimed_at < ?``; only the caller whose statement took
    effect gets True.
    """

    def due(
        self, *, now: datetime, until: datetime, window_days: int, retry_before: datetime
    ) -> list[Certificate]:
        """Active certificates expiring in ``(now, until]`` that still need this window's mail.

        That is: no reminder row yet, or one never sent and last claimed before
        ``retry_before`` (a failed or abandoned send). Soonest expiry first.
        """
        joined = and_(
            Reminder.certificate_id == Certificate.id, Reminder.window_days == window_days
        )
        query = (
            select(Certificate)
            .outerjoin(Reminder, joined)
            .where(
                Certificate.status == "active",
                Certificate.not_after > now,
                Certificate.not_after <= until,
                or_(
                    Reminder.certificate_id.is_(None),
                    and_(Reminder.sent_at.is_(None), Reminder.claimed_at < retry_before),
                ),
            )
            .order_by(Certificate.not_after, Certificate.id)
        )
        return list(self._session.scalars(query))

    def get(self, certificate_id: int, window_days: int) -> Reminder | None:
        """The reminder of ``certificate_id`` for ``window_days``, or None."""
        return self._session.get(Reminder, (certificate_id, window_days))

    def claim(self, certificate_id: int, window_days: int, at: datetime) -> bool:
        """Insert the reminder row; True only when this insert took effect (no row existed).

        ``INSERT ... ON CONFLICT (certificate_id, window_days) DO NOTHING RETURNING``, the
        dialect's own insert on SQLite (≥ 3.35) and PostgreSQL.
        """
        table = Reminder.__table__
        row = {"certificate_id": certificate_id, "window_days": window_days, "attempts": 1}
        stmt = (
            _dialect_insert(self._session)(table)
            .values(**row, created_at=at, claimed_at=at, sent_at=None)
            .on_conflict_do_nothing(index_elements=[table.c.certificate_id, table.c.window_days])
            .returning(table.c.certificate_id)
        )
        return self._session.execute(stmt).first() is not None

    def reclaim(
        self, certificate_id: int, window_days: int, at: datetime, *, claimed_before: datetime
    ) -> bool:
        """Claim an unsent reminder again (a retry); True only for the one caller that did."""
        stmt = (
            update(Reminder)
            .where(
                Reminder.certificate_id == certificate_id,
                Reminder.window_days == window_days,
                Reminder.sent_at.is_(None),
                Reminder.claimed_at < claimed_before,
            )
            .values(claimed_at=at, attempts=Reminder.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(self._session, stmt) == 1

    def mark_sent(self, certificate_id: int, window_days: int, at: datetime) -> bool:
        """Record that the mail went out; True when the row was still unsent."""
        stmt = (
            update(Reminder)
            .where(
                Reminder.certificate_id == certificate_id,
                Reminder.window_days == window_days,
                Reminder.sent_at.is_(None),
            )
            .values(sent_at=at)
            .execution_options(synchronize_session=False)
        )
        return _rowcount(self._session, stmt) == 1


def _dialect_insert(session: Session) -> Any:
    """The dialect's ``insert`` construct (it has ``on_conflict_do_*``): SQLite or PostgreSQL."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"upserts need SQLite or PostgreSQL, not {dialect}")


def _mark_used(session: Session, model: Any, key_column: Any, key: str, at: datetime) -> bool:
    """``UPDATE model SET used_at = at WHERE key = ? AND used_at IS NULL``: one winner."""
    stmt = (
        update(model)
        .where(key_column == key, model.used_at.is_(None))
        .values(used_at=at)
        .execution_options(synchronize_session="fetch")
    )
    return _rowcount(session, stmt) == 1


def _rowcount(session: Session, stmt: Any) -> int:
    result = cast(CursorResult[Any], session.execute(stmt))
    return int(result.rowcount)


@cache
def _version_query(id_column: Any) -> Any:
    return select(func.count(id_column), func.max(id_column))


@cache
def _trust_and_crl_version_query() -> Any:
    return select(
        select(func.count(TrustCertificate.id)).scalar_subquery(),
        select(func.max(TrustCertificate.id)).scalar_subquery(),
        select(func.count(CRL.id)).scalar_subquery(),
        select(func.max(CRL.id)).scalar_subquery(),
    )


def _version(connection: Connection, id_column: Any) -> tuple[int, int]:
    count, max_id = connection.execute(_version_query(id_column)).one()
    return int(count), int(max_id or 0)
