"""The tables of the store as SQLAlchemy 2 declarative models (DESIGN.md §6).

One :class:`Base` carries a naming convention, so every index and constraint has the same name
on SQLite and PostgreSQL (and the Alembic migration in ``migrations/versions`` can spell it).
Datetimes go through :class:`UTCDateTime`: aware in, aware UTC out, on every dialect.

The many-to-one relationships (``Registration.workflow``, ``Challenge.registration``,
``Certificate.account``) are there so one flush inserts parents before children; setting the
foreign-key column alone is enough.

The JSON columns of registrations and accounts track in-place changes of their top level
(``reg.data["email"] = ...`` is flushed); nested values must be reassigned.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC.

    Naive datetimes are refused on the way in (their meaning is a guess). SQLite keeps the value
    as naive UTC text, PostgreSQL as ``timestamptz``; both come back aware, in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs aware datetimes")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_JSONDict = MutableDict.as_mutable(JSON())
_JSONDictOrNull = MutableDict.as_mutable(JSON(none_as_null=True))  # None is SQL NULL
_JSONList = MutableList.as_mutable(JSON())


class Base(DeclarativeBase):
    """The declarative base of every swreg table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorkflowDefinition(Base):
    """A workflow definition as it was when a registration started, keyed by its hash."""

    __tablename__ = "workflow_definitions"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Registration(Base):
    """One registration in progress (or finished); ``version`` guards concurrent updates."""

    __tablename__ = "registrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(32))
    chosen_type: Mapped[str] = mapped_column(String(64))
    applicant_type: Mapped[str] = mapped_column(String(64))
    workflow_hash: Mapped[str] = mapped_column(String(64), ForeignKey("workflow_definitions.hash"))
    data: Mapped[dict[str, Any]] = mapped_column(_JSONDict)
    locked: Mapped[list[str]] = mapped_column(_JSONList)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(_JSONDictOrNull, nullable=True)
    certificate_der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    certificate_fingerprint: Mapped[str | None] = mapped_column(
        String(64), nullable=True, index=True
    )
    account_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    origin: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 hex of the registration's secret, the HttpOnly cookie its browser holds (§6)."""
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """When ``swreg purge`` removed its personal data (entered fields, certificate DER)."""

    workflow: Mapped[WorkflowDefinition] = relationship()

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy reads it once)


class Account(Base):
    """A Single Window account created by a completed registration."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    applicant_type: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(
        String(32), default="pending_activation", server_default="pending_activation"
    )
    email: Mapped[str] = mapped_column(String(254))
    contact_name: Mapped[str] = mapped_column(String(200))
    national_id_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    national_id_masked: Mapped[str | None] = mapped_column(String(16), nullable=True)
    ubn: Mapped[str | None] = mapped_column(String(8), nullable=True, index=True)
    sub_card: Mapped[str | None] = mapped_column(String(8), nullable=True)
    oid: Mapped[str | None] = mapped_column(String(256), nullable=True, index=True)
    company_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    phone: Mapped[str] = mapped_column(String(40))
    address: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    iot: Mapped[bool] = mapped_column(Boolean)
    password_hash: Mapped[str] = mapped_column(String(255))
    profile: Mapped[dict[str, Any]] = mapped_column(_JSONDict)
    registration_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failed_passwords: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Wrong passwords in a row (憑證更換作業 by password); too many make the account
    ``locked``."""
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """When the password was last set: the completion time, then each reset or change."""


class Certificate(Base):
    """A registered login or signing certificate (also the 通關憑證 lookup table)."""

    __tablename__ = "certificates"
    __table_args__ = (UniqueConstraint("fingerprint", "purpose"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id"), nullable=True, index=True
    )
    registration_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    serial_hex: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(1024))
    issuer: Mapped[str] = mapped_column(String(1024))
    ca: Mapped[str] = mapped_column(String(16))
    card_rank: Mapped[str | None] = mapped_column(String(16), nullable=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ubn: Mapped[str | None] = mapped_column(String(8), nullable=True, index=True)
    oid: Mapped[str | None] = mapped_column(String(256), nullable=True, index=True)
    national_id_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    query_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    usage_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    account: Mapped[Account | None] = relationship()


class Challenge(Base):
    """A single-use nonce the card signs to prove possession of the private key."""

    __tablename__ = "challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"))
    nonce: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    registration: Mapped[Registration] = relationship()


class TrustCertificate(Base):
    """A CA certificate of the trust store (``is_anchor`` for roots)."""

    __tablename__ = "trust_certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    subject: Mapped[str] = mapped_column(String(1024))
    is_anchor: Mapped[bool] = mapped_column(Boolean)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CRL(Base):
    """A certificate revocation list; ``crl_number`` is a decimal string (may exceed 64 bits)."""

    __tablename__ = "crls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    issuer: Mapped[str] = mapped_column(String(1024))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    crl_number: Mapped[str | None] = mapped_column(String(80), nullable=True)
    this_update: Mapped[datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    issuer_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """Hex SHA-256 of the verifying issuer's SubjectPublicKeyInfo (fetched CRLs; ``None`` for
    ``swreg crl add``)."""
    partition: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    """The issuingDistributionPoint URIs, space-joined (``None``: a complete CRL)."""
    source_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    """Where ``swreg revocation refresh`` fetched it (``None`` for ``swreg crl add``)."""


class CrlSource(Base):
    """A CRL distribution point ``swreg revocation refresh`` re-requests on every run.

    ``origin``: ``manual`` (``swreg crl source add``), ``ca`` (a trusted CA certificate names
    it) or ``seen`` (a checked certificate named it). ``etag`` / ``last_modified`` are the
    validators of the last CRL accepted from it; ``outcome`` / ``error`` say how the last run
    went.
    """

    __tablename__ = "crl_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    origin: Mapped[str] = mapped_column(String(16))
    etag: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OcspResponse(Base):
    """The cached OCSP answer about one certificate (DESIGN.md §4a), shared by every worker.

    Only ``good`` and ``revoked`` answers are kept; ``cache_until`` is when it must be asked
    again (nextUpdate, or ``checked_at`` + ``SWREG_OCSP_MAX_AGE`` without one, never beyond
    nextUpdate). ``der`` is the response as received: the evidence.
    """

    __tablename__ = "ocsp_responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    """Hex SHA-256 of the certificate's DER."""
    issuer_key_id: Mapped[str] = mapped_column(String(64), index=True)
    """Hex SHA-256 of the issuing CA's SubjectPublicKeyInfo."""
    responder_url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    this_update: Mapped[datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    produced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    is_hold: Mapped[bool] = mapped_column(Boolean)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cache_until: Mapped[datetime] = mapped_column(UTCDateTime())


class OcspAttempt(Base):
    """The latest request to one OCSP responder URL: what ``swreg revocation status`` shows."""

    __tablename__ = "ocsp_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    issuer: Mapped[str] = mapped_column(String(1024))
    reachable: Mapped[bool] = mapped_column(Boolean)
    """Whether a believed answer (good, revoked or unknown) came back."""
    last_error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """One row of the hash-chained audit log; ``seq`` is set by the appender, never generated."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(255))
    event: Mapped[str] = mapped_column(String(64))
    registration_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    applicant_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    workflow_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    diff: Mapped[dict[str, Any]] = mapped_column(JSON())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ActivationToken(Base):
    """A single-use account activation link; only the SHA-256 hex of the token is stored."""

    __tablename__ = "activation_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    account: Mapped[Account] = relationship()


class AccountToken(Base):
    """A single-use link mailed for an account's own change (an e-mail address to confirm);
    only the SHA-256 hex of the token is stored. ``purpose`` says what it may do."""

    __tablename__ = "account_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    new_email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    account: Mapped[Account] = relationship()


class MobileIdTicket(Base):
    """A signing under way at MOI's TW FidO service (行動自然人憑證), until the phone answers.

    Keyed by the SHA-256 hex of the pending id the browser holds (a bearer for the poll, so
    only its hash is stored). ``subject_hash`` ties it to what it was begun for (a registration
    id, an account name) under the identifier key; the national ID sent is kept only as its
    keyed hash and last four digits (which the certificate itself carries). ``next_poll_at``
    paces the service's polling whoever asks (DOMAIN.md §4.6: no faster than every 4 s).
    """

    __tablename__ = "mobile_id_tickets"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    subject_hash: Mapped[str] = mapped_column(String(64))
    challenge_id: Mapped[str] = mapped_column(String(36))
    national_id_hash: Mapped[str] = mapped_column(String(64))
    id_last4: Mapped[str] = mapped_column(String(4))
    sp_ticket_id: Mapped[str] = mapped_column(String(128))
    transaction_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    next_poll_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LoginChallenge(Base):
    """A single-use nonce the card signs to log in (憑證登入); bound to an origin, not to a
    registration."""

    __tablename__ = "login_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class LoginSession(Base):
    """A logged-in session (table ``sessions``); only the SHA-256 hex of its token is stored.

    ``expires_at`` slides forward on every use; ``ended_at`` is set by logout.
    """

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    client: Mapped[str | None] = mapped_column(String(120), nullable=True)
    """Where the session was opened, as its owner sees it on the account page: the browser and
    system named by its User-Agent and the client address masked (``203.0.113.*``)."""

    account: Mapped[Account] = relationship()


class RateLimitWindow(Base):
    """How often ``key`` was hit in the fixed window starting at ``window_start``."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True, index=True)
    count: Mapped[int] = mapped_column(Integer)


class Reminder(Base):
    """One expiry reminder (憑證逾期提醒) per certificate and window (e.g. 60 days before).

    The row is the claim: whoever inserts it sends the mail. ``sent_at`` stays NULL until the
    mail went out; ``claimed_at`` is the time of the latest claim (the first one, or a retry's),
    ``attempts`` how many claims there were.
    """

    __tablename__ = "reminders"

    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"), primary_key=True)
    window_days: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Officer(Base):
    """A customs officer: a certificate on the officer list (DESIGN.md §12).

    ``token_hash`` is the SHA-256 hex of the officer's personal API token (``swreg officers
    token``); issuing a new token replaces it.
    """

    __tablename__ = "officers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    token_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OfficerSession(Base):
    """An officer's console login (``/officer``, DESIGN.md §12); only the SHA-256 hex of its
    cookie token is stored. ``expires_at`` slides forward on every use (never past the absolute
    limit counted from ``created_at``); removing the officer deletes their sessions."""

    __tablename__ = "officer_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    officer_id: Mapped[int] = mapped_column(
        ForeignKey("officers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SecretKeyCheck(Base):
    """Which keyring this database's keyed hashes are under (one row, ``id`` 1): ``marker`` is
    the keyed hash of a fixed text under it, ``fingerprint`` its newest key's short public name
    and ``key_count`` how many keys it has. Written at the first start and by ``swreg keys rotate``;
    a process whose keyring makes another marker is refused (DESIGN.md §6, §11)."""

    __tablename__ = "secret_key_check"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    marker: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(8))
    key_count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
