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
kept in memory and revalidated at most once per ``recheck_interval`` seconds. Revalidation is
batched: time is cut into epochs of ``recheck_interval``; the first message after an epoch ends
checks, in one indexed query per :data:`SWEEP_CHUNK` senders, every entry used during the last
:data:`WARM_EPOCHS` epochs (its sender's active signing rows and when their OCSP answers were
cached) plus the trust snapshot's version; an unchanged entry carries on into the new epoch, a
changed one is rebuilt by its sender's next message, and an entry quiet for longer is checked on
its own when used again. So 10,000 senders taking turns cost a few queries per interval (about
4 µs per sender), not two statements per sender.
An entry is also rebuilt when the earliest future notAfter of its certificates or the end of a
revocation answer it used passes. Per message the cost is one SHA-256 of the message and
normally one signature verification: the digest is handed to cryptography as ``Prehashed``,
and the candidate that verified last is tried first, so a sender with several certificates
whose signer does not change pays no failed verification. Cache fills hold a lock; reads take
none.

**Which certificate signed**: a raw signature names none, so a sender whose several
certificates' signers take turns costs on average (k+1)/2 verifications for k certificates (no
order of trials does better without a signer id; the one that verified last goes first, which
serves bursts of one signer). A caller that knows the certificate (from the envelope it
unpacked) names it with ``certificate=`` — its SHA-256 fingerprint or its serial — and pays one
verification; a CMS SignerInfo's issuerAndSerialNumber puts that certificate first. A named
certificate that is not one of the sender's registered active signing certificates is refused
with ``not_registered`` (field ``certificate``) and the others are **not** tried: the caller
asserted which certificate signed, and an answer naming another one would not be what it asked.
A named certificate is judged like any other (validity, revocation).

**The cache is bounded by memory**: each entry is charged an estimate of what it holds
(:data:`ENTRY_BYTES` plus :data:`CANDIDATE_BYTES` per certificate, measured by
``bench/turnkey.py`` as RSS growth per cached sender) against ``cache_bytes`` (default
:data:`DEFAULT_CACHE_BYTES`, every sender of a large platform); beyond it, entries not used in
the current epoch go first, oldest first, then the oldest.

Refusals (:class:`~engine.RefusedError` / :class:`~engine.CertificateError`): ``not_registered``
(no active signing certificate), ``certificate_expired`` / ``certificate_not_yet_valid`` (none
valid at the time that counts), ``certificate_revoked`` (every valid one revoked),
``revocation_unknown`` (every valid one's status unknown, under the ``hard`` policy),
``signature_invalid`` (none verifies, or the signature input is malformed).
"""

from __future__ import annotations

import functools
import hashlib
import string
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from sqlalchemy import Select, bindparam, select

from engine._clock import Clock
from engine._errors import CertificateError, ErrorCode, RefusedError, UsageError
from engine._settings import RevocationPolicy
from engine.pki.cms import CmsSigner, TimestampAuthority, read_signature, timestamp_time
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

DEFAULT_CACHE_BYTES: Final = 128 * 1024 * 1024
"""The memory the per-sender cache may hold (estimated, see :data:`ENTRY_BYTES`): about 25,000
senders with one RSA-2048 certificate each. Per process: each portal worker has its own."""
ENTRY_BYTES: Final = 1024
"""Estimated bytes of one cached sender besides its certificates (entry, dict slot, version)."""
CANDIDATE_BYTES: Final = 4096
"""Estimated bytes of one cached certificate (public key object, strings, validity). bench/
turnkey.py measures RSS growth per cached sender with one certificate, and prints it next to
``ENTRY_BYTES + CANDIDATE_BYTES``."""
SWEEP_CHUNK: Final = 500
"""Senders per revalidation query (bound parameters per statement stay well below limits)."""
WARM_EPOCHS: Final = 30
"""How many epochs after its last message an entry is still revalidated by the sweep (30 s at
the default interval). The sweep costs about 4 µs per sender, rebuilding a stale entry on its
own about 180 µs (two statements), so sweeping a sender that has gone quiet 30 more times costs
no more than one such reload, and a sender that comes back within it finds its entry current."""

PURPOSE: Final = "signing"

_ROWS: Final = (
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
        Certificate.query_key == bindparam("sender"),
        Certificate.purpose == PURPOSE,
        Certificate.status == "active",
    )
    .order_by(Certificate.id)
)
"""A sender's active signing certificates (built once: building a statement costs more than
running it)."""


@functools.cache
def _versions(size: int) -> Select[str | None, int, str, datetime]:
    """What :data:`_ROWS` would say of ``size`` senders' versions (no DER): the sweep's query.
    A fixed number of parameters ``s0`` … (a short chunk repeats its last sender), so the
    statement is compiled once; an expanding IN list costs twice as much per sender."""
    return (
        select(
            Certificate.query_key,
            Certificate.id,
            Certificate.fingerprint,
            OcspResponse.checked_at,
        )
        .outerjoin(OcspResponse, OcspResponse.fingerprint == Certificate.fingerprint)
        .where(
            Certificate.query_key.in_([bindparam(f"s{i}") for i in range(size)]),
            Certificate.purpose == PURPOSE,
            Certificate.status == "active",
        )
        .order_by(Certificate.id)
    )


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
    after the interval (``0`` checks on every message, for tests). ``cache_bytes`` bounds the
    cache's estimated memory, ``max_senders`` (optional) its number of senders. Safe to share
    between threads.
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
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_senders: int | None = None,
    ) -> None:
        self._authorities = tuple(timestamp_authorities)
        self._database = database
        self._clock = clock
        self._trust = trust
        self._revocation = revocation
        self._interval = recheck_interval
        self._cache_bytes = max(1, cache_bytes)
        self._max_senders = None if max_senders is None else max(1, max_senders)
        self._entries: dict[str, _Entry] = {}
        self._cached_bytes = 0
        self._epoch = 0
        self._epoch_ends = time.monotonic() + recheck_interval
        self._lock = threading.Lock()

    # -- the hot path ------------------------------------------------------------------------

    @metrics.turnkey_verification
    def verify(
        self,
        sender: str,
        message: bytes,
        signature: bytes | str,
        *,
        certificate: str | None = None,
    ) -> TurnkeyResult:
        """Verify ``signature`` over ``message`` by one of ``sender``'s signing certificates.

        ``signature`` is raw bytes, base64 (bytes or text), or a detached CMS SignedData (DER
        or PEM). ``certificate`` optionally names the certificate that signed: its SHA-256
        fingerprint (64 hex digits, ``:`` allowed) or its serial (hex); then only that one is
        tried. The certificates are judged at the receipt time (now), or at the genTime of a
        trusted time-stamp token (module docstring). Raises ``not_registered`` (field
        ``sender``, or ``certificate`` when the named one is not the sender's),
        ``certificate_expired``, ``certificate_not_yet_valid``, ``certificate_revoked``,
        ``revocation_unknown``, ``signature_invalid``, or ``invalid_value`` (a malformed name).
        """
        data = signature.encode("latin-1", "replace") if isinstance(signature, str) else signature
        name = None if certificate is None else _name(certificate)
        parsed = read_signature(data)
        message_hash = hashlib.sha256(message).digest()
        now = self._clock.now()
        entry = self._entry(sender, now)
        candidates = entry.candidates
        if not candidates:
            raise RefusedError(ErrorCode.NOT_REGISTERED, field="sender")
        if name is not None:
            named = entry.names.get(name)
            if named is None:  # never another one instead: the caller said which signed
                raise RefusedError(ErrorCode.NOT_REGISTERED, field="certificate")
            return self._verify_named(sender, named, parsed, message_hash, now)
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
        attempts = self._attempts(parsed, message_hash, now)
        for signature_value, digest, at, serial in attempts:
            found = self._search(entry, signature_value, digest, at, serial)
            if found is not None:
                return found.result(sender, at)
        if not attempts:
            raise _invalid("messageDigest does not match the message")
        raise _refusal(candidates, [attempt[:3] for attempt in attempts])

    def _verify_named(
        self,
        sender: str,
        named: tuple[_Candidate, ...],
        parsed: bytes | tuple[CmsSigner, ...],
        message_hash: bytes,
        now: datetime,
    ) -> TurnkeyResult:
        """Only the named certificate (a serial may name a few: one per issuer) is tried."""
        if isinstance(parsed, bytes):
            attempts: list[tuple[bytes, bytes, datetime]] = [(parsed, message_hash, now)]
        else:
            attempts = [attempt[:3] for attempt in self._attempts(parsed, message_hash, now)]
            if not attempts:
                raise _invalid("messageDigest does not match the message")
        for signature_value, digest, at in attempts:
            for candidate in named:
                if candidate.usable(at) and candidate.key.verifies_digest(signature_value, digest):
                    return candidate.result(sender, at)
        raise _refusal(named, attempts)

    def _attempts(
        self, signers: tuple[CmsSigner, ...], message_hash: bytes, now: datetime
    ) -> list[tuple[bytes, bytes, datetime, int | None]]:
        """Per CMS signer over this message: its signature, the digest it covers, the time
        that counts, and the serial of its sid."""
        attempts = []
        for signer in signers:
            digest = signer.signed_digest(message_hash)
            if digest is None:
                continue
            at = now
            if signer.timestamp_token is not None:  # the only way to an earlier time
                at = self._stamped(signer.timestamp_token, signer.signature, now)
            attempts.append((signer.signature, digest, at, signer.serial))
        return attempts

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
            and entry.epoch == self._epoch
            and now < entry.expires_at
            and time.monotonic() < self._epoch_ends
        ):
            entry.seen = entry.epoch
            return entry
        with self._lock:
            if time.monotonic() >= self._epoch_ends:
                self._sweep(now)
            entry = self._entries.get(sender)  # the sweep or another thread may have done it
            if entry is None or entry.epoch != self._epoch or not now < entry.expires_at:
                entry = self._load(sender, entry, now)
                self._keep(sender, entry)
            entry.seen = self._epoch
            return entry

    def _sweep(self, now: datetime) -> None:
        """Start a new epoch; carry into it every entry current in the last one and used in
        the last :data:`WARM_EPOCHS` whose rows and trust snapshot have not changed (one query
        per :data:`SWEEP_CHUNK` senders). Other threads keep using the last epoch's entries
        while the queries run (a few ms per thousand senders) instead of waiting for them."""
        last = self._epoch
        self._epoch_ends = time.monotonic() + self._interval
        warm = last - WARM_EPOCHS
        due = [
            (sender, entry)
            for sender, entry in self._entries.items()
            if entry.epoch == last and entry.seen > warm and now < entry.expires_at
        ]
        versions: dict[str, list[tuple[int, str, datetime | None]]] = {}
        snapshot = None
        if due:
            with self._database.unit_of_work() as uow:
                snapshot = self._trust.snapshot(uow)
                connection = uow.session.connection()  # Core rows: no ORM loading
                size = SWEEP_CHUNK
                statement, names = _versions(size), [f"s{i}" for i in range(size)]
                for start in range(0, len(due), size):
                    senders = [sender for sender, _ in due[start : start + size]]
                    senders += senders[-1:] * (size - len(senders))
                    rows = connection.execute(
                        statement, dict(zip(names, senders, strict=True))
                    ).all()
                    for key, row_id, fingerprint, checked in rows:
                        versions.setdefault(key or "", []).append((row_id, fingerprint, checked))
        self._epoch = epoch = last + 1
        for sender, entry in due:
            if entry.snapshot is snapshot and tuple(versions.get(sender, ())) == entry.version:
                entry.epoch = epoch
            # else it stays in the last epoch: its next message rebuilds it

    def _keep(self, sender: str, entry: _Entry) -> None:
        """Store ``entry``, evicting others beyond the memory (or sender) bound."""
        previous = self._entries.pop(sender, None)
        if previous is not None:
            self._cached_bytes -= previous.size
        self._entries[sender] = entry  # at the end: the most recently loaded
        self._cached_bytes += entry.size
        too_many = self._max_senders is not None and len(self._entries) > self._max_senders
        if self._cached_bytes > self._cache_bytes or too_many:
            self._evict(keep=sender)

    def _evict(self, *, keep: str) -> None:
        """Down to 90 % of the memory bound (so eviction is rare) and to the sender bound:
        entries not used in this epoch first, oldest first, then the oldest."""
        byte_goal = self._cache_bytes * 9 // 10
        count_goal = self._max_senders
        epoch = self._epoch

        def over() -> bool:
            return self._cached_bytes > byte_goal or (
                count_goal is not None and len(self._entries) > count_goal
            )

        for idle_only in (True, False):
            for sender, entry in list(self._entries.items()):
                if not over():
                    return
                if sender == keep or (idle_only and entry.seen == epoch):
                    continue
                del self._entries[sender]
                self._cached_bytes -= entry.size

    def _load(self, sender: str, previous: _Entry | None, now: datetime) -> _Entry:
        """The sender's candidates: reused when rows, trust snapshot and deadline are unchanged."""
        with self._database.unit_of_work() as uow:
            snapshot = self._trust.snapshot(uow)
            rows = uow.session.connection().execute(_ROWS, {"sender": sender}).all()
            version = tuple((row[0], row[1], row[5]) for row in rows)
            if (
                previous is not None
                and previous.version == version
                and previous.snapshot is snapshot
                and now < previous.expires_at
            ):
                previous.epoch = self._epoch
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
        return _Entry(tuple(candidates), version, snapshot, expires_at, self._epoch)

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
                self._cached_bytes = 0
            else:
                entry = self._entries.pop(sender, None)
                if entry is not None:
                    self._cached_bytes -= entry.size

    def recheck_soon(self) -> None:
        """End the current epoch: the next message revalidates every warm entry in one sweep
        (after a change this process made itself, or in tests; :meth:`forget` drops entries)."""
        self._epoch_ends = 0.0

    def cache_info(self) -> dict[str, int]:
        """``senders`` cached, their estimated ``bytes``, and the ``limit`` (for the bench)."""
        return {
            "senders": len(self._entries),
            "bytes": self._cached_bytes,
            "limit": self._cache_bytes,
        }


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
    """A sender's cached candidates; ``preferred`` indexes the one that verified last,
    ``names`` maps fingerprints and serials to the candidates they name, ``epoch`` is the
    revalidation epoch it is current in, ``seen`` the last epoch a message used it in."""

    __slots__ = (
        "candidates",
        "epoch",
        "expires_at",
        "names",
        "preferred",
        "seen",
        "size",
        "snapshot",
        "version",
    )

    def __init__(
        self,
        candidates: tuple[_Candidate, ...],
        version: tuple[tuple[int, str, datetime | None], ...],
        snapshot: TrustSnapshot,
        expires_at: datetime,
        epoch: int,
    ) -> None:
        self.candidates = candidates
        self.version = version
        self.snapshot = snapshot
        self.expires_at = expires_at
        self.epoch = epoch
        self.seen = epoch
        self.preferred = 0
        self.size = ENTRY_BYTES + CANDIDATE_BYTES * len(candidates)
        names: dict[str, tuple[_Candidate, ...]] = {}
        for candidate in candidates:
            names[candidate.fingerprint.lower()] = (candidate,)
            key = "serial:" + candidate.serial_hex.upper().lstrip("0")
            names[key] = (*names.get(key, ()), candidate)
        self.names = names


def _name(certificate: str) -> str:
    """The key of :attr:`_Entry.names` for a caller's certificate name: a SHA-256 fingerprint
    (64 hex digits, ``:`` separators allowed) or a serial (hex, an optional ``0x``); anything
    else is ``invalid_value``."""
    text = certificate.strip().replace(":", "")
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if not text or len(text) > 64 or text.strip(string.hexdigits):
        raise RefusedError(ErrorCode.INVALID_VALUE, field="certificate")
    if len(text) == 64:
        return text.lower()
    return "serial:" + text.upper().lstrip("0")


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
