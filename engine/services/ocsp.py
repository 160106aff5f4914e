"""OCSP answers about certificates, cached in the database for every worker (DESIGN.md §4a).

:meth:`OcspService.ocsp_status` answers about one certificate and its issuing CA:

1. **Cache**: a cached ``good`` or ``revoked`` answer is returned (``source`` ``cache``, its
   DER as evidence) while ``now`` is before its ``cache_until`` (for an answer without a
   nextUpdate also before ``checked_at`` + the ``max_age`` in force); a ``revoked`` answer that
   is not a hold is final and is returned even after that. The cache is keyed by the
   certificate's SHA-256 fingerprint (and its issuer's key) and shared by every process on the
   database; it is read with one prebuilt SELECT outside any transaction, and nothing of it is
   kept in the process: an answer the database no longer holds is never used. With
   ``network=False`` (Turnkey never waits on the network) that is all: without a usable cached
   answer the result is ``unknown`` with ``problem`` :data:`NOT_CACHED`, nothing is sent and
   nothing recorded. With ``renew_within`` (``swreg revocation refresh``) a cached answer that
   runs out within that margin is asked again; should the renewal fail, the cached answer is
   returned all the same, carrying the renewal's ``problem``.
2. **Network**: otherwise the responder configured for the issuing CA (``url``), or else the
   one named by the certificate's authorityInfoAccess (the first ``id-ad-ocsp``
   ``http``/``https`` URI), is asked: nothing is sent when there is none (``no_responder``) or
   its host is not in ``SWREG_FETCH_HOSTS`` (``host_not_allowed``). The request carries a fresh
   32-byte nonce and goes through the SSRF-safe :class:`~engine.services.fetching.Fetcher`
   (POST, at most 64 KiB back, ``SWREG_OCSP_TIMEOUT`` for the whole call); the body is checked
   by :func:`~engine.pki.ocsp.read_response` (the nonce compared when echoed, required with
   ``require_nonce``: a response that does not echo it is ``nonce_missing``).
3. **Caching**: a believed ``good`` or ``revoked`` answer is stored (one ``INSERT ... ON CONFLICT
   DO UPDATE``: workers racing on one certificate leave one row) with ``cache_until`` = its
   nextUpdate, or ``checked_at`` + ``SWREG_OCSP_MAX_AGE`` (or the CA's ``max_age``) when it has
   none. A hold (``certificateHold``) is cached only until its nextUpdate — not at all without
   one — and is never final. ``unknown`` answers (the responder does not know the certificate, a
   refused response, a network failure) are **not cached**: the next check asks again.

What the process does keep: what it read from the last certificates asked (fingerprint,
responder URL; an issuer's key identifier and name: :func:`_memoized`), so a check does not
re-encode a certificate, and one :class:`~engine.services.fetching.Fetcher` per service (made by
``fetcher`` on first use; :meth:`OcspService.close` at shutdown), its connections and TLS context
serving every request.

Every request (not a refused URL) is recorded as the latest attempt for its URL, which
``swreg revocation status`` shows (:meth:`OcspService.responders`). Nothing here raises for a
responder's failure: an ``unknown`` :class:`OcspResult` carries the ``problem``. Deciding what an
answer means for a certificate check (policy, CRLs) is not done here.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from engine._settings import FetchHosts
from engine.pki.certificate import BoundedMemo
from engine.pki.ocsp import NONCE_BYTES, OcspAnswer, OcspStatus, build_request, read_response
from engine.pki.revocation import issuer_key
from engine.services import metrics
from engine.services.fetching import MAX_OCSP_BYTES, Fetcher, FetchOutcome
from engine.store import CachedOcsp, Database, OcspCacheRepository, UnitOfWork

MAX_URL_BYTES: Final = 2048
"""The longest responder URL asked (``ocsp_attempts.url``, ``ocsp_responses.responder_url``)."""
NO_RESPONDER: Final = "no_responder"
"""The problem when the certificate names no usable OCSP responder."""
NOT_KNOWN: Final = "certificate_unknown"
"""The problem when the responder answered, believed, that it does not know the certificate."""
NOT_CACHED: Final = "not_cached"
"""The problem of a cache-only question (``network=False``) with no usable cached answer."""


class OcspSource(StrEnum):
    """Where an :class:`OcspResult` came from."""

    CACHE = "cache"
    NETWORK = "network"
    NONE = "none"
    """Nothing was asked: no responder, one outside ``SWREG_FETCH_HOSTS``, or a cache-only
    question (``network=False``) that found nothing usable cached."""


@dataclass(frozen=True, slots=True)
class OcspResult:
    """The OCSP status of one certificate with its evidence.

    ``problem`` is ``None`` for ``good`` and ``revoked``; for ``unknown`` it is one of
    :data:`NO_RESPONDER`, :data:`NOT_KNOWN`, :data:`NOT_CACHED`, a
    :class:`~engine.services.fetching.FetchOutcome` value (``host_not_allowed``, ``timeout``,
    ``connection_error``, ...) or an :class:`~engine.pki.ocsp.OcspProblem` value (``stale``,
    ``signature_invalid``, ``nonce_missing``, ...). The one exception: a cached ``good`` or
    ``revoked`` answer returned because its renewal (``renew_within``) failed carries that
    failure's ``problem`` and ``detail`` (see :attr:`renewal_failed`).
    ``der`` is the response (empty when none came back); ``checked_at`` when it was fetched.
    """

    status: OcspStatus
    source: OcspSource
    url: str | None
    checked_at: datetime
    der: bytes = b""
    problem: str | None = None
    detail: str = ""
    reason: x509.ReasonFlags | None = None
    revoked_at: datetime | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    produced_at: datetime | None = None
    cache_until: datetime | None = None

    @property
    def is_hold(self) -> bool:
        return (
            self.status is OcspStatus.REVOKED and self.reason is x509.ReasonFlags.certificate_hold
        )

    @property
    def renewal_failed(self) -> bool:
        """A still-usable cached answer, returned because asking for a new one failed."""
        return self.source is OcspSource.CACHE and self.problem is not None


@dataclass(frozen=True, slots=True)
class ResponderStatus:
    """The latest request to one responder URL, as ``swreg revocation status`` shows it."""

    issuer: str
    url: str
    reachable: bool
    """A successful HTTP answer came back (believed or not: see ``last_error``)."""
    last_error: str | None
    checked_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "url": self.url,
            "reachable": self.reachable,
            "last_error": self.last_error,
            "checked_at": self.checked_at.isoformat(),
        }


FetcherFactory = Callable[[FetchHosts], Fetcher]


class OcspService:
    """OCSP status with a shared database cache (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        *,
        hosts: FetchHosts,
        timeout: timedelta,
        max_age: timedelta,
        fetcher: FetcherFactory = Fetcher,
    ) -> None:
        self._database = database
        self._hosts = hosts
        self._timeout = timeout
        self._max_age = max_age
        self._fetcher = fetcher
        self._shared: tuple[int, Fetcher] | None = None  # (process id, fetcher): _client()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connections kept to responders (a later request opens new ones). Call it
        when no request is under way: at shutdown."""
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            shared[1].close()

    def _client(self) -> Fetcher:
        """The one fetcher of this service in this process, made on first use: its connections
        to a responder are kept between requests (httpx's pool is shared by threads). A process
        forked after it was made gets its own."""
        pid = os.getpid()
        shared = self._shared
        if shared is None or shared[0] != pid:
            with self._lock:
                shared = self._shared
                if shared is None or shared[0] != pid:
                    shared = self._shared = (pid, self._fetcher(self._hosts))
        return shared[1]

    @property
    def max_age(self) -> timedelta:
        """``SWREG_OCSP_MAX_AGE``: how long an answer without nextUpdate is cached, unless its
        CA says otherwise; also ``swreg revocation refresh``'s renewal margin."""
        return self._max_age

    def ocsp_status(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        *,
        now: datetime,
        network: bool = True,
        url: str | None = None,
        require_nonce: bool = False,
        max_age: timedelta | None = None,
        renew_within: timedelta | None = None,
        fingerprint: str | None = None,
    ) -> OcspResult:
        """The OCSP status of ``certificate`` (issued by ``issuer``) at ``now``: cached, or
        asked of its responder (see the module docstring).

        ``network=False``: the cache only (``unknown``/``none``/:data:`NOT_CACHED` without a
        usable answer; nothing sent, nothing recorded). ``url``: the responder configured for
        the issuing CA, asked instead of the certificate's own (still only a host in
        ``SWREG_FETCH_HOSTS``). ``require_nonce``: refuse an answer that does not echo the
        request's nonce (``nonce_missing``). ``max_age``: this CA's cache lifetime of answers
        without nextUpdate instead of ``SWREG_OCSP_MAX_AGE``. ``renew_within``: a cached answer
        that runs out within this of ``now`` is asked again (a final revocation never is); if
        that fails, the cached answer is returned with the failure's ``problem``.
        ``fingerprint``: the hex SHA-256 of ``certificate``'s DER when the caller has it (not
        checked: a wrong one reads and writes another certificate's answer); otherwise it is
        computed (:func:`certificate_fingerprint`).

        Never raises for the responder's failures; a caller's mistake (a naive ``now``, an
        ``issuer`` whose name is not the certificate's issuer) raises ``ValueError``. An
        expired cached row stays until a new answer replaces it."""
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        age = self._max_age if max_age is None else max_age
        if fingerprint is None:
            fingerprint = certificate_fingerprint(certificate)
        key_id = _memoized(_ISSUERS, issuer, _issuer_facts)[0]
        cached = OcspCacheRepository.lookup(self._database, fingerprint, key_id)
        kept: OcspResult | None = None
        if cached is not None:
            until = _usable_until(cached, age)
            if until is None or now < until:
                kept = _from_cache(cached)
                due = renew_within is not None and until is not None and until - now <= renew_within
                if not network or not due:
                    return kept
        if not network:
            detail = "no usable cached OCSP answer, and the network is not asked"
            where = url if url is not None else responder_url(certificate)
            return OcspResult(
                OcspStatus.UNKNOWN, OcspSource.NONE, where, now, problem=NOT_CACHED, detail=detail
            )
        result = self._ask(certificate, issuer, fingerprint, key_id, now, url, require_nonce, age)
        if kept is not None and result.status is OcspStatus.UNKNOWN:
            detail = f"renewal failed ({result.problem}): {result.detail}"
            return replace(kept, problem=result.problem, detail=detail)
        return result

    def _ask(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        fingerprint: str,
        key_id: str,
        now: datetime,
        url: str | None,
        require_nonce: bool,
        max_age: timedelta,
    ) -> OcspResult:
        """Ask the responder (``url``, else the certificate's own), check, cache, record."""
        if url is None:
            url = responder_url(certificate)
            if url is None:
                detail = "the certificate names no http(s) OCSP responder"
                return OcspResult(
                    OcspStatus.UNKNOWN,
                    OcspSource.NONE,
                    None,
                    now,
                    problem=NO_RESPONDER,
                    detail=detail,
                )
        fetcher = self._client()
        refused = (
            fetcher.allows(url)
            if len(url.encode("utf-8", "surrogatepass")) <= MAX_URL_BYTES
            else FetchOutcome.URL_NOT_ALLOWED
        )
        if refused is not None:
            detail = f"{url[:200]} may not be fetched ({refused.value}): SWREG_FETCH_HOSTS"
            return OcspResult(
                OcspStatus.UNKNOWN,
                OcspSource.NONE,
                url,
                now,
                problem=refused.value,
                detail=detail,
            )
        nonce = secrets.token_bytes(NONCE_BYTES)
        request = build_request(certificate, issuer, nonce=nonce)
        began = metrics.fetch_started()
        fetched = fetcher.post(url, request, max_bytes=MAX_OCSP_BYTES, timeout=self._timeout)
        metrics.fetch_took(metrics.OCSP, began)
        issuer_text = _memoized(_ISSUERS, issuer, _issuer_facts)[1]
        if fetched.outcome is not FetchOutcome.FETCHED or fetched.body is None:
            metrics.fetch_failed(metrics.OCSP)
            detail = fetched.detail or fetched.outcome.value
            self._attempted(url, issuer_text, False, fetched.outcome.value, now)
            return OcspResult(
                OcspStatus.UNKNOWN,
                OcspSource.NETWORK,
                url,
                now,
                problem=fetched.outcome.value,
                detail=detail,
            )
        answer = read_response(
            fetched.body,
            certificate=certificate,
            issuer=issuer,
            nonce=nonce,
            at=now,
            require_nonce=require_nonce,
        )
        if answer.problem is not None:  # the answer failed its checks: nothing usable came
            metrics.fetch_failed(metrics.OCSP)
        result = _from_answer(answer, url, now, max_age)
        with self._database.unit_of_work() as uow:
            if result.cache_until is not None:
                uow.ocsp.put(_row(result, fingerprint, key_id))
            _record(uow, url, issuer_text, True, result.problem, now)
            uow.commit()
        return result

    def responders(self) -> list[ResponderStatus]:
        """The latest request to each responder URL asked, by URL."""
        with self._database.unit_of_work() as uow:
            return [
                ResponderStatus(r.issuer, r.url, r.reachable, r.last_error, r.checked_at)
                for r in uow.ocsp.attempts()
            ]

    def _attempted(
        self, url: str, issuer: str, reachable: bool, error: str | None, at: datetime
    ) -> None:
        with self._database.unit_of_work() as uow:
            _record(uow, url, issuer, reachable, error, at)
            uow.commit()


_V = TypeVar("_V")
_Memo = BoundedMemo[bytes, tuple[x509.Certificate, _V]]

_FINGERPRINTS: _Memo[str] = BoundedMemo(1024)
_RESPONDERS: _Memo[str | None] = BoundedMemo(1024)
_ISSUERS: _Memo[tuple[str, str]] = BoundedMemo(256)
"""What is read from a certificate, for the last ones asked (see :func:`_memoized`)."""


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """The hex SHA-256 of ``certificate``'s DER: the OCSP cache's key.

    Encoding a certificate costs more than a cached answer's whole read (≈ 8 µs), so the last
    1,024 certificates asked are remembered (:func:`_memoized`)."""
    return _memoized(_FINGERPRINTS, certificate, _fingerprint)


def _memoized(
    memo: _Memo[_V], certificate: x509.Certificate, compute: Callable[[x509.Certificate], _V]
) -> _V:
    """``compute(certificate)``, remembered in ``memo``: found by the certificate's signature
    and taken only when the one remembered is equal to it (cryptography compares decoded
    certificates, which encode to the same DER), so a certificate decoded again from the same
    bytes is found, a different one with the same signature never."""
    key = certificate.signature
    found = memo.get(key)
    if found is not None and (found[0] is certificate or found[0] == certificate):
        return found[1]
    return memo.put(key, (certificate, compute(certificate)))[1]


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _issuer_facts(issuer: x509.Certificate) -> tuple[str, str]:
    """The issuer's key identifier (hex) and its name as ``swreg revocation status`` shows it."""
    return issuer_key(issuer).hex(), _name(issuer.subject)


def responder_url(certificate: x509.Certificate) -> str | None:
    """The first ``http``/``https`` id-ad-ocsp URI of the certificate's authorityInfoAccess
    that fits the store (``None`` when there is none, or the extension is unreadable)."""
    return _memoized(_RESPONDERS, certificate, _responder_url)


def _responder_url(certificate: x509.Certificate) -> str | None:
    try:
        access = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess
        ).value
    except Exception:  # none, or unreadable: nothing to ask
        return None
    for description in access:
        location = description.access_location
        if description.access_method != AuthorityInformationAccessOID.OCSP or not isinstance(
            location, x509.UniformResourceIdentifier
        ):
            continue
        uri = location.value
        if uri.lower().startswith(("http://", "https://")) and len(uri.encode()) <= MAX_URL_BYTES:
            return uri
    return None


def _usable_until(cached: CachedOcsp, max_age: timedelta) -> datetime | None:
    """Until when a cached answer may be returned: its ``cache_until`` (for one without a
    nextUpdate at most ``checked_at`` + ``max_age``, the lifetime in force now); ``None`` for a
    final revocation (not a hold), which never runs out."""
    if cached.status == OcspStatus.REVOKED.value and not cached.is_hold:
        return None
    if cached.next_update is None:
        return min(cached.cache_until, cached.checked_at + max_age)
    return cached.cache_until


def _cache_until(answer: OcspAnswer, checked_at: datetime, max_age: timedelta) -> datetime | None:
    """How long ``answer`` is cached; ``None``: not at all (unknown, or a hold without a
    nextUpdate)."""
    if answer.problem is not None or answer.status is OcspStatus.UNKNOWN:
        return None
    if answer.next_update is not None:
        return answer.next_update
    return None if answer.is_hold else checked_at + max_age


def _from_answer(answer: OcspAnswer, url: str, now: datetime, max_age: timedelta) -> OcspResult:
    problem: str | None = None if answer.problem is None else answer.problem.value
    if problem is None and answer.status is OcspStatus.UNKNOWN:
        problem = NOT_KNOWN
    detail = answer.detail or ("the responder does not know the certificate" if problem else "")
    return OcspResult(
        answer.status,
        OcspSource.NETWORK,
        url,
        now,
        der=answer.der,
        problem=problem,
        detail=detail,
        reason=answer.reason,
        revoked_at=answer.revoked_at,
        this_update=answer.this_update,
        next_update=answer.next_update,
        produced_at=answer.produced_at,
        cache_until=_cache_until(answer, now, max_age),
    )


def _row(result: OcspResult, fingerprint: str, key_id: str) -> CachedOcsp:
    assert result.this_update is not None and result.cache_until is not None and result.url
    return CachedOcsp(
        fingerprint=fingerprint,
        issuer_key_id=key_id,
        responder_url=result.url,
        status=result.status.value,
        reason=None if result.reason is None else result.reason.value,
        revoked_at=result.revoked_at,
        this_update=result.this_update,
        next_update=result.next_update,
        produced_at=result.produced_at,
        is_hold=result.is_hold,
        der=result.der,
        checked_at=result.checked_at,
        cache_until=result.cache_until,
    )


def _from_cache(cached: CachedOcsp) -> OcspResult:
    return OcspResult(
        OcspStatus(cached.status),
        OcspSource.CACHE,
        cached.responder_url,
        cached.checked_at,
        der=cached.der,
        reason=None if cached.reason is None else x509.ReasonFlags(cached.reason),
        revoked_at=cached.revoked_at,
        this_update=cached.this_update,
        next_update=cached.next_update,
        produced_at=cached.produced_at,
        cache_until=cached.cache_until,
    )


def _record(
    uow: UnitOfWork, url: str, issuer: str, reachable: bool, error: str | None, at: datetime
) -> None:
    uow.ocsp.attempted(url, issuer=issuer, reachable=reachable, error=error, at=at)


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "an unreadable issuer"
