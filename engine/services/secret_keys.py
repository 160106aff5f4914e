"""The server's keyring (``SWREG_SECRET_KEY``): which keys a database's keyed hashes are under,
and ``swreg keys rotate`` (DESIGN.md §6, §11; docs/operations.md "Rotating SWREG_SECRET_KEY").

The keyed hashes of personal IDs are chained under the keyring, oldest key innermost
(:mod:`engine.services.hashing`). The clear values are not stored, so a rotation cannot hash
them again: it wraps every stored keyed hash ``h`` used for a lookup into ``HMAC(k_new, h)``,
in one transaction. What is rewritten (:data:`KEYED_COLUMNS`):

* ``accounts.national_id_hash`` — account search by national ID, a broker's ownership;
* ``certificates.national_id_hash`` and ``certificates.query_key`` where it is that hash (a
  person's login certificate) — 通關憑證查詢 by 身分證字號;
* ``registrations.data["national_id_hash"]`` and ``registrations.evidence["mobile_id"]
  ["national_id_hash"]`` (the ID a phone was asked for) — the row's ``version`` moves on, so a
  process still holding the row before the rotation cannot write it back;
* ``mobile_id_tickets.national_id_hash`` and ``subject_hash`` — signings under way;
* ``rate_limits`` keys ``account:<limit>:<hash of the account name>`` — the per-account limits
  keep counting.

Not rewritten: the client keys of the web layer's per-client rate limits and of audit rows and
log lines hold only a prefix of a keyed hash (the chain needs all of it), so per-client counters
start over and a client's key in audit rows and logs before a rotation does not match its key
after. The audit log is never edited (its rows are hash-chained). CSRF tokens issued before a
rotation are refused after it (403 ``csrf_failed``; the page's next load issues a new one).
Passwords (argon2id) and the SHA-256 hashes of tokens (sessions, activation links, registration
secrets, officer tokens, mobile ID pending ids) are not keyed and do not change.

The key check. ``secret_key_check`` holds the keyed hash of a fixed text (:data:`CHECK_KIND`)
under the database's keyring. :meth:`SecretKeys.open` (every ``bootstrap``) adopts the keyring
of a database without one (made before the table, or new) and refuses a keyring that makes
another marker — the old key file after a rotation, a new key file on an existing database —
with ``database_unavailable`` (exit 3): lookups would otherwise silently find nothing. ``GET
/readyz`` says ``database: secret key does not match`` when a rotation happened under a running
portal.

The key file of a rotation. The new keyring (the old keys, then the new one) is first written to
``<key file>.next`` (a temporary file, fsynced, 0600, linked into place: an existing ``.next``
means another rotation runs, or one stopped before its commit, and is refused); then the
database is rewritten and committed; then ``.next`` replaces the key file (rename, directory
fsynced). A failure before the commit deletes ``.next``: database and key file stay as they
were. If the process dies between the commit and the rename, the next start of any swreg
command or portal finds the database's marker made by ``.next``'s keyring and finishes the
rename. With ``SWREG_SECRET_KEY`` in the environment no file is written: the new key comes from
``--new-key-file`` (a key only printed could be lost with the terminal), and the operator appends
it to ``SWREG_SECRET_KEY`` after the rotation.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from sqlalchemy import (
    Column,
    Connection,
    Table,
    bindparam,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from engine._clock import Clock
from engine._errors import EnvironmentProblem, ErrorCode, RefusedError, UsageError
from engine._settings import (
    MIN_SECRET_KEY_BYTES,
    Settings,
    read_key_file,
    sync_directory,
    write_new_key_file,
)
from engine.services.hashing import IdentifierHasher, rewrap
from engine.store import (
    Account,
    Certificate,
    Database,
    MobileIdTicket,
    RateLimitWindow,
    Registration,
    SecretKeyCheck,
)

CHECK_KIND: Final = "secret_key_check"
CHECK_TEXT: Final = "swreg"
"""The marker is ``hash(CHECK_KIND, CHECK_TEXT)`` under the keyring."""
ROTATED_EVENT: Final = "secret_key_rotated"
NEXT_SUFFIX: Final = ".next"
_ROW_ID: Final = 1
_BATCH: Final = 1000
_ACCOUNT_LIMIT_KEY = re.compile(r"(account:.+:)([0-9a-f]{64})")

KEYED_COLUMNS: Final = (
    "accounts.national_id_hash",
    "certificates.national_id_hash",
    "certificates.query_key",
    "registrations.data.national_id_hash",
    "registrations.evidence.mobile_id.national_id_hash",
    "mobile_id_tickets.national_id_hash",
    "mobile_id_tickets.subject_hash",
    "rate_limits.key",
)
"""Every stored keyed hash a rotation rewrites (module docstring)."""

Wrap = Callable[[str, str], str]
"""``wrap(hash, where)``: the stored keyed hash wrapped under the new key."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``swreg keys rotate`` did (no key material)."""

    fingerprint: str
    """The new key's short fingerprint."""
    previous_fingerprint: str
    keys: int
    """Keys in the keyring now."""
    rewritten: Mapping[str, int]
    """Rows rewritten, per table (``rate_limits``: keys, each with all its windows)."""
    key_file: Path | None
    """The key file now holding the keyring; None when it is ``SWREG_SECRET_KEY``'s."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "previous_fingerprint": self.previous_fingerprint,
            "keys": self.keys,
            "rewritten": dict(self.rewritten),
            "key_file": str(self.key_file) if self.key_file is not None else None,
        }


@dataclass(frozen=True, slots=True)
class KeyringView:
    """``swreg keys show``: the keyring in use and the database's (fingerprints only)."""

    keys: int
    fingerprint: str
    source: str
    database_keys: int | None
    database_fingerprint: str | None
    matches: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "database_keys": self.database_keys,
            "database_fingerprint": self.database_fingerprint,
            "matches": self.matches,
        }


class SecretKeys:
    """The keyring of one process and its check against the database (module docstring)."""

    def __init__(
        self, database: Database, clock: Clock, hasher: IdentifierHasher, key_file: Path | None
    ) -> None:
        self._database = database
        self._clock = clock
        self.hasher = hasher
        """The keyed hash every service uses (the same object for the process's life)."""
        self.key_file = key_file
        """The key file the keyring was read from; None when given in the environment."""

    @classmethod
    def open(cls, database: Database, clock: Clock, settings: Settings) -> SecretKeys:
        """The configured keyring, checked against the database: adopted by a database that
        has no marker yet, refused (``database_unavailable``) when it is not the database's;
        an interrupted rotation's ``.next`` key file is installed when the database is under
        its keyring. A database not migrated yet (no table) is not checked."""
        key_file = settings.key_file()
        made = key_file is not None and not key_file.exists()
        keys = cls(database, clock, IdentifierHasher(*settings.identifier_keys()), key_file)
        stored = keys._stored()
        if stored is None:
            keys._adopt()
        elif isinstance(stored, _StoredCheck) and stored.marker != keys.marker:
            installed = keys._finish_interrupted_rotation(stored.marker)
            if installed is None:
                if made and key_file is not None:  # a new key cannot open this database
                    key_file.unlink(missing_ok=True)
                raise keys._mismatch(stored, made=made)
            keys.hasher = installed
        return keys

    @property
    def marker(self) -> str:
        """The keyed hash of the fixed check text under this keyring."""
        return _marker(self.hasher)

    @property
    def source(self) -> str:
        return f"key file {self.key_file}" if self.key_file is not None else "SWREG_SECRET_KEY"

    def matches(self) -> bool | None:
        """Whether the database is under this keyring (None: it has no marker, or no table):
        what ``/readyz`` asks, after a rotation under a running portal for example."""
        stored = self._stored()
        if not isinstance(stored, _StoredCheck):
            return None
        return stored.marker == self.marker

    def view(self) -> KeyringView:
        stored = self._stored()
        row = stored if isinstance(stored, _StoredCheck) else None
        return KeyringView(
            keys=len(self.hasher.keys),
            fingerprint=self.hasher.fingerprint,
            source=self.source,
            database_keys=row.key_count if row is not None else None,
            database_fingerprint=row.fingerprint if row is not None else None,
            matches=row.marker == self.marker if row is not None else None,
        )

    # -- rotation ------------------------------------------------------------------------------

    def rotate(self, new_key: bytes | None = None, *, actor: str = "cli") -> Rotation:
        """Add ``new_key`` (else 32 random bytes) to the keyring and rewrite every stored keyed
        hash under it, in one transaction, with an audit row ``secret_key_rotated``; the key
        file follows (module docstring). This process keeps its keyring: start it again.

        ``usage`` without ``new_key`` when the keyring is ``SWREG_SECRET_KEY``'s;
        ``invalid_value`` (``new_key``) for a key shorter than 32 bytes or in the keyring
        already; ``database_unavailable`` when ``.next`` exists or the transaction fails
        (nothing changed)."""
        if self.key_file is None and new_key is None:
            raise UsageError(
                detail="the keyring is SWREG_SECRET_KEY's: write the new key to a file first "
                "and give it with --new-key-file (swreg writes no key it could only print)"
            )
        key = new_key if new_key is not None else secrets.token_bytes(32)
        if len(key) < MIN_SECRET_KEY_BYTES:
            raise RefusedError(ErrorCode.INVALID_VALUE, field="new_key", detail="32 bytes or more")
        if key in self.hasher.keys:
            raise RefusedError(ErrorCode.INVALID_VALUE, field="new_key", detail="in the keyring")
        rotated = self.hasher.extended(key)
        pending = self._write_next(rotated) if self.key_file is not None else None
        try:
            rewritten = self._rewrite(rotated, key, actor)
        except BaseException:
            if pending is not None and not self._under(rotated):
                pending.unlink(missing_ok=True)  # not committed: the key file stays as it was
            raise
        if pending is not None:
            self._install(pending, rotated)
        return Rotation(
            fingerprint=rotated.fingerprint,
            previous_fingerprint=self.hasher.fingerprint,
            keys=len(rotated.keys),
            rewritten=rewritten,
            key_file=self.key_file,
        )

    def _rewrite(self, rotated: IdentifierHasher, key: bytes, actor: str) -> dict[str, int]:
        now = self._clock.now()
        table = _table(SecretKeyCheck)

        def wrap(digest: str, where: str) -> str:
            try:
                return rewrap(key, digest)
            except ValueError:
                raise EnvironmentProblem(
                    ErrorCode.DATABASE_UNAVAILABLE,
                    detail=f"{where} is not a keyed hash: nothing was rotated",
                ) from None

        try:
            with self._database.unit_of_work() as uow:
                connection = uow.connection()
                claim = (
                    update(table)
                    .where(table.c.id == _ROW_ID, table.c.marker == self.marker)
                    .values(
                        marker=_marker(rotated),
                        fingerprint=rotated.fingerprint,
                        key_count=len(rotated.keys),
                        updated_at=now,
                    )
                )  # first: it takes SQLite's write lock, and a concurrent rotation waits here
                if connection.execute(claim).rowcount != 1:
                    raise EnvironmentProblem(
                        ErrorCode.DATABASE_UNAVAILABLE,
                        detail="the database's secret keys changed meanwhile (another "
                        "rotation?): nothing was rotated",
                    )
                rewritten = {name: rewrite(connection, wrap) for name, rewrite in _REWRITES}
                uow.audit.append(
                    at=now,
                    actor=actor,
                    event=ROTATED_EVENT,
                    diff={
                        "fingerprint": rotated.fingerprint,
                        "previous_fingerprint": self.hasher.fingerprint,
                        "keys": len(rotated.keys),
                        "rewritten": rewritten,
                    },
                )
                uow.commit()
        except DBAPIError as exc:
            raise EnvironmentProblem(
                ErrorCode.DATABASE_UNAVAILABLE,
                detail=f"the rotation was rolled back, nothing changed "
                f"({type(exc.orig or exc).__name__})",
            ) from exc
        return rewritten

    def _write_next(self, rotated: IdentifierHasher) -> Path:
        assert self.key_file is not None
        pending = _next_of(self.key_file)
        try:
            write_new_key_file(pending, rotated.keys)
        except FileExistsError:
            raise EnvironmentProblem(
                ErrorCode.DATABASE_UNAVAILABLE,
                detail=f"{pending} exists: another swreg keys rotate is running, or one stopped "
                f"before its commit (the database is still under {self.key_file}); when none "
                "runs, delete it and rotate again",
            ) from None
        except OSError as exc:
            raise EnvironmentProblem(
                ErrorCode.DATABASE_UNAVAILABLE, detail=f"cannot write {pending}: {exc.strerror}"
            ) from exc
        return pending

    def _install(self, pending: Path, rotated: IdentifierHasher) -> None:
        """``.next`` replaces the key file (after the commit)."""
        assert self.key_file is not None
        try:
            os.replace(pending, self.key_file)
            sync_directory(self.key_file.parent)
        except FileNotFoundError:  # a process starting meanwhile installed it (open())
            if read_key_file(self.key_file) != rotated.keys:
                raise
        except OSError as exc:
            raise EnvironmentProblem(
                ErrorCode.DATABASE_UNAVAILABLE,
                detail=f"the database is rotated, but {pending} could not replace "
                f"{self.key_file} ({exc.strerror}): the next swreg command does it, or rename "
                "it by hand",
            ) from exc

    def _under(self, rotated: IdentifierHasher) -> bool:
        """Whether the database is under ``rotated`` (the commit happened after all); True too
        when that cannot be read, so that ``.next`` is kept for :meth:`open` to settle."""
        try:
            stored = self._stored()
        except Exception:
            return True
        return isinstance(stored, _StoredCheck) and stored.marker == _marker(rotated)

    def _finish_interrupted_rotation(self, stored_marker: str) -> IdentifierHasher | None:
        """The keyring of ``<key file>.next`` installed as the key file, when the database is
        under it (a rotation that committed and stopped before its rename); else None."""
        if self.key_file is None:
            return None
        pending = _next_of(self.key_file)
        if not pending.is_file():
            return None
        rotated = IdentifierHasher(*read_key_file(pending))
        if _marker(rotated) != stored_marker:
            return None
        try:
            os.replace(pending, self.key_file)
            sync_directory(self.key_file.parent)
        except FileNotFoundError:  # another process installed it first
            pass
        if read_key_file(self.key_file) != rotated.keys:
            return None
        return rotated

    # -- the marker row -------------------------------------------------------------------------

    def _stored(self) -> _StoredCheck | _NotMigrated | None:
        table = _table(SecretKeyCheck)
        query = select(table.c.marker, table.c.fingerprint, table.c.key_count).where(
            table.c.id == _ROW_ID
        )
        with self._database.unit_of_work() as uow:
            connection = uow.connection()
            try:
                row = connection.execute(query).first()
            except DBAPIError:
                connection.rollback()
                if not inspect(connection).has_table(table.name):
                    return _NOT_MIGRATED
                raise
        return _StoredCheck(*row) if row is not None else None

    def _adopt(self) -> None:
        """Store this keyring's marker in a database that has none (a concurrent start may
        store its own first: then that one is compared)."""
        table = _table(SecretKeyCheck)
        values = {
            "id": _ROW_ID,
            "marker": self.marker,
            "fingerprint": self.hasher.fingerprint,
            "key_count": len(self.hasher.keys),
            "updated_at": self._clock.now(),
        }
        try:
            with self._database.unit_of_work() as uow:
                uow.connection().execute(insert(table).values(values))
                uow.commit()
        except IntegrityError:
            stored = self._stored()
            if isinstance(stored, _StoredCheck) and stored.marker != self.marker:
                raise self._mismatch(stored) from None

    def _mismatch(self, stored: _StoredCheck, *, made: bool = False) -> EnvironmentProblem:
        given = (
            f"there was no {self.source} (a new key was not kept)"
            if made
            else f"the {self.source} has {len(self.hasher.keys)} key(s), newest "
            f"{self.hasher.fingerprint}"
        )
        return EnvironmentProblem(
            ErrorCode.DATABASE_UNAVAILABLE,
            detail=f"secret key does not match: {given}; this database's keyring has "
            f"{stored.key_count}, newest {stored.fingerprint}. Start with the key file or "
            "SWREG_SECRET_KEY it was made or last rotated with (docs/operations.md, Rotating "
            "SWREG_SECRET_KEY)",
        )


@dataclass(frozen=True, slots=True)
class _StoredCheck:
    marker: str
    fingerprint: str
    key_count: int


class _NotMigrated:
    """The database has no ``secret_key_check`` table yet."""


_NOT_MIGRATED: Final = _NotMigrated()


def _marker(hasher: IdentifierHasher) -> str:
    return hasher.hash(CHECK_KIND, CHECK_TEXT)


def _next_of(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + NEXT_SUFFIX)


def _table(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


# -- the rewrites, one per table (KEYED_COLUMNS) -------------------------------------------------


def _batches(
    connection: Connection, key: Column[Any], columns: Sequence[Column[Any]], *where: Any
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``columns`` (after the primary ``key``) in primary-key order, a batch at a
    time (the key is not rewritten, so the pages stay put)."""
    last: Any = None
    while True:
        query = select(key, *columns).where(*where).order_by(key).limit(_BATCH)
        if last is not None:
            query = query.where(key > last)
        rows = connection.execute(query).all()
        if not rows:
            return
        yield [tuple(row) for row in rows]
        last = rows[-1][0]


def _rewrite_accounts(connection: Connection, wrap: Wrap) -> int:
    table = _table(Account)
    column = table.c.national_id_hash
    statement = (
        update(table).where(table.c.id == bindparam("pk")).values(national_id_hash=bindparam("h"))
    )
    count = 0
    for rows in _batches(connection, table.c.id, [column], column.is_not(None)):
        where = "accounts.national_id_hash"
        connection.execute(statement, [{"pk": pk, "h": wrap(h, where)} for pk, h in rows])
        count += len(rows)
    return count


def _rewrite_certificates(connection: Connection, wrap: Wrap) -> int:
    table = _table(Certificate)
    column = table.c.national_id_hash
    statement = (
        update(table)
        .where(table.c.id == bindparam("pk"))
        .values(national_id_hash=bindparam("h"), query_key=bindparam("q"))
    )
    count = 0
    for rows in _batches(connection, table.c.id, [column, table.c.query_key], column.is_not(None)):
        changes = []
        for pk, digest, query_key in rows:
            wrapped = wrap(digest, "certificates.national_id_hash")
            # a person's login certificate is found by the hash itself (its query key)
            changes.append(
                {"pk": pk, "h": wrapped, "q": wrapped if query_key == digest else query_key}
            )
        connection.execute(statement, changes)
        count += len(rows)
    return count


def _rewrite_registrations(connection: Connection, wrap: Wrap) -> int:
    table = _table(Registration)
    statement = (
        update(table)
        .where(table.c.id == bindparam("pk"))
        .values(
            data=bindparam("d", type_=table.c.data.type),
            evidence=bindparam("e", type_=table.c.evidence.type),
            version=table.c.version + 1,
        )
    )
    count = 0
    for rows in _batches(connection, table.c.id, [table.c.data, table.c.evidence]):
        changes = []
        for pk, data, evidence in rows:
            new_data, new_evidence, wrapped = _registration_hashes(data, evidence, wrap)
            if wrapped:
                changes.append({"pk": pk, "d": new_data, "e": new_evidence})
        count += len(changes)
        if changes:
            connection.execute(statement, changes)
    return count


def _registration_hashes(
    data: dict[str, Any] | None, evidence: dict[str, Any] | None, wrap: Wrap
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
    """A registration's data and evidence with their keyed hashes wrapped, and how many."""
    wrapped = 0
    if data and isinstance(data.get("national_id_hash"), str):
        data = {**data, "national_id_hash": wrap(data["national_id_hash"], "registrations.data")}
        wrapped += 1
    mobile = (evidence or {}).get("mobile_id")
    if evidence and isinstance(mobile, dict) and isinstance(mobile.get("national_id_hash"), str):
        sent = wrap(mobile["national_id_hash"], "registrations.evidence")
        evidence = {**evidence, "mobile_id": {**mobile, "national_id_hash": sent}}
        wrapped += 1
    return data, evidence, wrapped


def _rewrite_mobile_id_tickets(connection: Connection, wrap: Wrap) -> int:
    table = _table(MobileIdTicket)
    statement = (
        update(table)
        .where(table.c.id_hash == bindparam("pk"))
        .values(national_id_hash=bindparam("h"), subject_hash=bindparam("s"))
    )
    count = 0
    columns = [table.c.national_id_hash, table.c.subject_hash]
    for rows in _batches(connection, table.c.id_hash, columns):
        changes = [
            {
                "pk": pk,
                "h": wrap(digest, "mobile_id_tickets.national_id_hash"),
                "s": wrap(subject, "mobile_id_tickets.subject_hash"),
            }
            for pk, digest, subject in rows
        ]
        connection.execute(statement, changes)
        count += len(rows)
    return count


def _rewrite_rate_limits(connection: Connection, wrap: Wrap) -> int:
    """The per-account limits' keys (every window of a key at once; the key is part of the
    primary key, so the keys are read first). Per-client keys hold a prefix only: left alone."""
    table = _table(RateLimitWindow)
    keys = connection.scalars(
        select(table.c.key).where(table.c.key.like("account:%")).distinct()
    ).all()
    statement = update(table).where(table.c.key == bindparam("old")).values(key=bindparam("new"))
    changes = []
    for key in keys:
        match = _ACCOUNT_LIMIT_KEY.fullmatch(key)
        if match is not None:
            changes.append({"old": key, "new": match[1] + wrap(match[2], "rate_limits.key")})
    if changes:
        connection.execute(statement, changes)
    return len(changes)


_REWRITES: Final = (
    ("accounts", _rewrite_accounts),
    ("certificates", _rewrite_certificates),
    ("registrations", _rewrite_registrations),
    ("mobile_id_tickets", _rewrite_mobile_id_tickets),
    ("rate_limits", _rewrite_rate_limits),
)
