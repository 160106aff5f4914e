"""Turnkey message verification (訊息簽章驗證): the hot path of DESIGN.md §5 and §10.

:meth:`TurnkeyVerifier.verify` takes the sender key (a UBN or a broker key such as ``A00001``),
a message and its detached signature, and answers which of the sender's registered signing
certificates (``purpose="signing"``, ``status="active"``, ``query_key == sender``) made it.

Reading the signature is pure and lives in ``engine.pki``: :func:`~engine.pki.cms.read_signature`
takes raw bytes, base64, PEM or a detached CMS / PKCS#7 ``SignedData``, and
:class:`~engine.pki.signatures.SignatureKey` checks RSA PKCS#1 v1.5 or ECDSA (DER or raw
``r ‖ s``) with SHA-256. This module is the service: the per-sender cache, the store, and which
registered certificate verifies.

**The time that counts** (DESIGN.md §5) is when the message is received, the clock's now: a
caller's ``signed_at`` and a CMS ``signingTime`` are the sender's word and are ignored, so a key
whose certificate expired (or is revoked) never verifies by backdating. Only an RFC 3161
time-stamp token in the SignerInfo's unsigned attributes, signed by a TSA listed in
``SWREG_TSA_CERTS`` over that SignerInfo's signature value, may set an earlier time: its
``genTime`` (:func:`~engine.pki.cms.timestamp_time`; a token that does not check out is ignored).
A message without a token costs nothing extra.

**Revocation** is the revocation check's verdict read from what is known already — the OCSP
cache and the stored CRLs (``network=False``; ``swreg revocation refresh`` keeps the cache of
registered signing certificates fresh): a revoked candidate never verifies; one whose status is
unknown verifies only under ``SWREG_REVOCATION_POLICY=soft`` and is read again after
:data:`UNKNOWN_RECHECK`.

The hot path: each sender's candidates (public key objects, validity, revocation state) are
kept in memory and revalidated at most once per ``recheck_interval`` seconds by one indexed
query (the sender's active signing rows and when their OCSP answers were cached) plus the trust
snapshot's version check; an entry is also rebuilt when the earliest future notAfter of its
certificates or the end of a revocation answer it used passes. Per message the cost is one
SHA-256 of the message and normally one signature verification: the digest is handed to
cryptography as ``Prehashed``, and the candidate that verified last is tried first, so a sender
with several certificates does not pay a failed verification per extra certificate. Cache fills
hold a lock; reads take none.

Refusals (:class:`~engine.RefusedError` / :class:`~engine.CertificateError`): ``not_registered``
(no active signing certificate), ``certificate_expired`` / ``certificate_not_yet_valid`` (none
valid at the time that counts), ``certificate_revoked`` (every valid one revoked),
``revocation_unknown`` (every valid one's status unknown, under the ``hard`` policy),
``signature_invalid`` (none verifies, or the signature input is malformed).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from sqlalchemy import select

from engine._clock import Clock
from engine._errors import CertificateError, ErrorCode, RefusedError, UsageError
from engine._settings import RevocationPolicy
from engine.pki.cms import TimestampAuthority, read_signature, timestamp_time
from engine.pki.revocation import RevocationStatus
from engine.pki.signatures import SignatureKey
from engine.services import metrics
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService, TrustSnapshot
from engine.store import Certificate, Database, OcspResponse

UNKNOWN_RECHECK: Final = timedelta(minutes=1)
"""How soon a candidate whose revocation status is unknown is read again (``swreg revocation
refresh`` may have filled the OCSP cache meanwhile)."""
DEFAULT_RECHECK_INTERVAL: Final = 1.0
"""Seconds between two checks that a sender's cached certificates are still current."""

DEFAULT_MAX_SENDERS: Final = 50_000
"""Senders kept in the cache; the oldest entry is dropped beyond this."""

PURPOSE: Final = "signing"


class TurnkeyResult(NamedTuple):
    """A verified Turnkey message: who signed it, with which registered certificate, and when.

    ``signed_at`` is the time the certificates were judged at: the receipt time, or the
    ``genTime`` of a trusted time-stamp token. ``serial`` is the certificate serial number as
    stored (upper-case hex), ``fingerprint`` its SHA-256 (hex), ``subject`` its RFC 4514
    subject. (A named tuple: immutable and cheaper to make than a frozen dataclass, which
    matters on the hot path.)
    """

    sender: str
    fingerprint: str
    subject: str
    serial: str
    signed_at: datetime

    def certificate(self) -> dict[str, str]:
        """``{fingerprint, subject, serial}`` as the CLI and the API report it."""
        return {"fingerprint": self.fingerprint, "subject": self.subject, "serial": self.serial}


class TurnkeyVerifier:
    """Verifies Turnkey message signatures against the senders' registered signing certificates.

    ``timestamp_authorities`` are the TSAs whose RFC 3161 tokens may date a signature earlier
    than its receipt (:func:`load_timestamp_authorities`; none by default).
    ``recheck_interval`` (seconds) bounds how stale the per-sender cache may be: a certificate
    registered, deleted or replaced, a trust anchor or a CRL added, is seen by the first message
    after the interval (``0`` checks on every message, for tests). ``max_senders`` bounds the
    cache. Safe to share between threads.
    """

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        revocation: RevocationChecker,
        *,
        timestamp_authorities: Sequence[TimestampAuthority] = (),
        recheck_interval: float = DEFAULT_RECHECK_INTERVAL,
        max_senders: int = DEFAULT_MAX_SENDERS,
    ) -> None:
        self._authorities = tuple(timestamp_authorities)
        self._database = database
        self._clock = clock
        self._trust = trust
        self._revocation = revocation
        self._interval = recheck_interval
        self._max_senders = max(1, max_senders)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    # -- the hot path ------------------------------------------------------------------------

    @metrics.turnkey_verification
    def verify(self, sender: str, message: bytes, signature: bytes | str) -> TurnkeyResult:
        """Verify ``signature`` over ``message`` by one of ``sender``'s signing certificates.

        ``signature`` is raw bytes, base64 (bytes or text), or a detached CMS SignedData (DER
        or PEM). The certificates are judged at the receipt time (now), or at the genTime of a
        trusted time-stamp token (module docstring). Raises ``not_registered``,
        ``certificate_expired``, ``certificate_not_yet_valid``, ``certificate_revoked`` or
        ``signature_invalid``.
        """
        data = signature.encode("latin-1", "replace") if isinstance(signature, str) else signature
        parsed = read_signature(data)
        message_hash = hashlib.sha256(message).digest()
        now = self._clock.now()
        entry = self._entry(sender, now)
        candidates = entry.candidates
        if not candidates:
            raise RefusedError(ErrorCode.NOT_REGISTERED, field="sender")
        if isinstance(parsed, bytes):
            # the usual case: the candidate that verified last does it again
            preferred = entry.preferred
            first = candidates[preferred]
            if first.usable(now) and first.key.verifies_digest(parsed, message_hash):
                return first.result(sender, now)
            found = self._search(entry, parsed, message_hash, now, None, skip=preferred)
            if found is not None:
                return found.result(sender, now)
            raise _refusal(candidates, [(parsed, message_hash, now)])
        attempts: list[tuple[bytes, bytes, datetime]] = []
        for signer in parsed:
            digest = signer.signed_digest(message_hash)
            if digest is None:
                continue
            at = now
            if signer.timestamp_token is not None:  # the only way to an earlier time
                at = self._stamped(signer.timestamp_token, signer.signature, now)
            attempts.append((signer.signature, digest, at))
            found = self._search(entry, signer.signature, digest, at, signer.serial)
            if found is not None:
                return found.result(sender, at)
        if not attempts:
            raise _invalid("messageDigest does not match the message")
        raise _refusal(candidates, attempts)

    def _stamped(self, token: bytes, signature: bytes, now: datetime) -> datetime:
        """The genTime of a trusted token over ``signature`` when earlier than ``now``; else now."""
        stamped = timestamp_time(token, signature, self._authorities)
        return stamped if stamped is not None and stamped < now else now

    def _search(
        self,
        entry: _Entry,
        signature: bytes,
        digest: bytes,
        at: datetime,
        serial: int | None,
        *,
        skip: int = -1,
    ) -> _Candidate | None:
        """Try the usable candidates (the CMS signer's serial first, else the one that verified
        last); remember the one that verifies."""
        candidates = entry.candidates
        order = list(range(len(candidates)))
        if serial is not None:
            order.sort(key=lambda i: candidates[i].serial != serial)
        else:
            preferred = entry.preferred
            order.sort(key=lambda i: i != preferred)
        for index in order:
            candidate = candidates[index]
            if (
                index != skip
                and candidate.usable(at)
                and candidate.key.verifies_digest(signature, digest)
            ):
                entry.preferred = index
                return candidate
        return None

    # -- the cache ---------------------------------------------------------------------------

    def _entry(self, sender: str, now: datetime) -> _Entry:
        entry = self._entries.get(sender)
        if (
            entry is not None
            and time.monotonic() - entry.checked < self._interval
            and now < entry.expires_at
        ):
            return entry
        with self._lock:
            entry = self._entries.get(sender)  # another thread may have refreshed it
            if (
                entry is not None
                and time.monotonic() - entry.checked < self._interval
                and now < entry.expires_at
            ):
                return entry
            fresh = self._load(sender, entry, now)
            if sender not in self._entries and len(self._entries) >= self._max_senders:
                self._entries.pop(next(iter(self._entries)))
            self._entries[sender] = fresh
            return fresh

    def _load(self, sender: str, previous: _Entry | None, now: datetime) -> _Entry:
        """The sender's candidates: reused when rows, trust snapshot and deadline are unchanged."""
        checked = time.monotonic()
        with self._database.unit_of_work() as uow:
            snapshot = self._trust.snapshot(uow)
            query = (
                select(
                    Certificate.id,
                    Certificate.fingerprint,
                    Certificate.der,
                    Certificate.serial_hex,
                    Certificate.subject,
                    OcspResponse.checked_at,  # a new OCSP answer (refresh) rebuilds the entry
                )
                .outerjoin(OcspResponse, OcspResponse.fingerprint == Certificate.fingerprint)
                .where(
                    Certificate.query_key == sender,
                    Certificate.purpose == PURPOSE,
                    Certificate.status == "active",
                )
                .order_by(Certificate.id)
            )
            rows = uow.session.execute(query).all()
            version = tuple((row[0], row[1], row[5]) for row in rows)
            if (
                previous is not None
                and previous.version == version
                and previous.snapshot is snapshot
                and now < previous.expires_at
            ):
                previous.checked = checked
                return previous
        candidates: list[_Candidate] = []
        revocation_deadlines: list[datetime] = []
        for _, fingerprint, der, serial_hex, subject, _ in rows:
            found = self._candidate(der, fingerprint, serial_hex, subject, snapshot, now)
            if found is None:
                continue
            candidate, until = found
            candidates.append(candidate)
            revocation_deadlines.append(until)
        candidates.sort(key=lambda c: c.not_before, reverse=True)  # the newest card first
        deadlines = [c.not_after for c in candidates] + revocation_deadlines
        future = [d for d in deadlines if d > now]  # a past deadline must not rebuild forever
        expires_at = min(future, default=datetime.max.replace(tzinfo=UTC))
        return _Entry(tuple(candidates), version, snapshot, expires_at, checked)

    def _candidate(
        self,
        der: bytes,
        fingerprint: str,
        serial_hex: str,
        subject: str,
        snapshot: TrustSnapshot,
        now: datetime,
    ) -> tuple[_Candidate, datetime] | None:
        """The parsed candidate and when its revocation status must be read again; ``None``
        when its key is unusable. The status is the cached one only (no network): a path the
        trust store cannot build is ``unknown``."""
        try:
            certificate = x509.load_der_x509_certificate(der)
            key = SignatureKey.of(certificate.public_key())
        except (ValueError, UnsupportedAlgorithm):
            return None
        if key is None:  # neither RSA nor EC
            return None
        try:
            path = snapshot.store.build_path(certificate)
        except CertificateError:
            status, until = RevocationStatus.UNKNOWN, now + UNKNOWN_RECHECK
        else:
            verdict = self._revocation.check(path, snapshot=snapshot, network=False)
            status = verdict.status
            until = verdict.valid_until or now + UNKNOWN_RECHECK
        usable = status is RevocationStatus.GOOD or (
            status is RevocationStatus.UNKNOWN and self._revocation.policy is RevocationPolicy.SOFT
        )
        candidate = _Candidate(key, certificate, fingerprint, serial_hex, subject, status, usable)
        return candidate, until

    def forget(self, sender: str | None = None) -> None:
        """Drop the cached candidates of ``sender`` (of every sender when None)."""
        with self._lock:
            if sender is None:
                self._entries.clear()
            else:
                self._entries.pop(sender, None)


# -- candidates --------------------------------------------------------------------------------


class _Candidate:
    """One registered signing certificate, parsed once: key, validity, revocation, identity."""

    __slots__ = (
        "fingerprint",
        "key",
        "not_after",
        "not_before",
        "revocation",
        "serial",
        "serial_hex",
        "subject",
        "trusted",
    )

    def __init__(
        self,
        key: SignatureKey,
        certificate: x509.Certificate,
        fingerprint: str,
        serial_hex: str,
        subject: str,
        revocation: RevocationStatus,
        trusted: bool,
    ) -> None:
        self.key = key
        self.not_before = certificate.not_valid_before_utc
        self.not_after = certificate.not_valid_after_utc
        self.serial = certificate.serial_number
        self.fingerprint = fingerprint
        self.serial_hex = serial_hex
        self.subject = subject
        self.revocation = revocation
        self.trusted = trusted
        """Not revoked, and its status known (or accepted unknown under the soft policy)."""

    def usable(self, at: datetime) -> bool:
        return self.trusted and self.not_before <= at <= self.not_after

    def result(self, sender: str, at: datetime) -> TurnkeyResult:
        return TurnkeyResult(sender, self.fingerprint, self.subject, self.serial_hex, at)


class _Entry:
    """A sender's cached candidates; ``preferred`` indexes the one that verified last."""

    __slots__ = ("candidates", "checked", "expires_at", "preferred", "snapshot", "version")

    def __init__(
        self,
        candidates: tuple[_Candidate, ...],
        version: tuple[tuple[int, str, datetime | None], ...],
        snapshot: TrustSnapshot,
        expires_at: datetime,
        checked: float,
    ) -> None:
        self.candidates = candidates
        self.version = version
        self.snapshot = snapshot
        self.expires_at = expires_at
        self.checked = checked
        self.preferred = 0


def _invalid(detail: str) -> CertificateError:
    return CertificateError(ErrorCode.SIGNATURE_INVALID, field="signature", detail=detail)


def _refusal(
    candidates: Sequence[_Candidate], attempts: Sequence[tuple[bytes, bytes, datetime]]
) -> RefusedError:
    """Why no usable candidate verified (the cold path; its cost does not matter).

    When an unusable candidate verifies the signature, its own reason is given (out of its
    validity at the time that counts, or revoked); otherwise: none valid at that time →
    ``certificate_expired`` (``certificate_not_yet_valid`` when all lie ahead), every valid
    one revoked → ``certificate_revoked``, else ``signature_invalid``.
    """
    for signature, digest, at in attempts:
        for candidate in candidates:
            if not candidate.usable(at) and candidate.key.verifies_digest(signature, digest):
                return _unusable(candidate, at)
    times = [at for _, _, at in attempts]
    in_time = [c for c in candidates if any(c.not_before <= at <= c.not_after for at in times)]
    if not in_time:
        if all(at < c.not_before for c in candidates for at in times):
            return CertificateError(ErrorCode.CERTIFICATE_NOT_YET_VALID, field="signature")
        return CertificateError(ErrorCode.CERTIFICATE_EXPIRED, field="signature")
    if all(c.revocation is RevocationStatus.REVOKED for c in in_time):
        return CertificateError(ErrorCode.CERTIFICATE_REVOKED, field="signature")
    if all(not c.trusted for c in in_time):
        return CertificateError(ErrorCode.REVOCATION_UNKNOWN, field="signature")
    return _invalid("no registered signing certificate of the sender verifies it")


def _unusable(candidate: _Candidate, at: datetime) -> CertificateError:
    if at < candidate.not_before:
        return CertificateError(ErrorCode.CERTIFICATE_NOT_YET_VALID, field="signature")
    if at > candidate.not_after:
        return CertificateError(ErrorCode.CERTIFICATE_EXPIRED, field="signature")
    if candidate.revocation is RevocationStatus.REVOKED:
        return CertificateError(ErrorCode.CERTIFICATE_REVOKED, field="signature")
    return CertificateError(ErrorCode.REVOCATION_UNKNOWN, field="signature")


def load_timestamp_authorities(paths: Sequence[Path]) -> tuple[TimestampAuthority, ...]:
    """The TSA certificates of ``SWREG_TSA_CERTS`` (DER or PEM files, one certificate each).

    A missing or unreadable file, or a certificate without id-kp-timeStamping, is a
    configuration error (``usage``).
    """
    authorities = []
    for path in paths:
        try:
            data = path.read_bytes()
            if data.lstrip().startswith(b"-----BEGIN"):
                certificate = x509.load_pem_x509_certificate(data)
            else:
                certificate = x509.load_der_x509_certificate(data)
            authorities.append(TimestampAuthority.of(certificate))
        except OSError as exc:
            raise UsageError(detail=f"SWREG_TSA_CERTS: {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise UsageError(detail=f"SWREG_TSA_CERTS: {path}: {exc}") from exc
    return tuple(authorities)
