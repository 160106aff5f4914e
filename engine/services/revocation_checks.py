"""The one revocation check every certificate check asks (DESIGN.md §4a).

:meth:`RevocationChecker.check` answers for a trusted path (certificate first, trust anchor last)
``good``, ``revoked`` or ``unknown``, with the evidence it used; :meth:`RevocationChecker.require`
applies the policy. Every certificate of the path is checked except the trust anchor, each
against its issuer's sources in the order its CA is configured for (``SWREG_REVOCATION_CAS``;
OCSP then CRLs by default):

- **OCSP**: the CA's configured responder or the certificate's own (authorityInfoAccess),
  through :class:`~engine.services.ocsp.OcspService` — the shared database cache, else the
  network. Nothing is asked (not even the cache) when there is no responder.
- **CRLs**: the stored CRLs of the issuer's *key*, in the trust snapshot's
  :class:`~engine.pki.revocation.RevocationIndex` (O(1)). When they do not answer and no OCSP
  answer was ``good``, the certificate's own first distribution point that may be fetched is
  fetched (:meth:`~engine.services.revocation.RevocationService.fetch_source`, within
  :data:`CHECK_FETCH_TIMEOUT`; one check at a time per URL, not again for :data:`RETRY_AFTER`)
  and the index asked again. At most :data:`MAX_POINTS` points of a certificate are recorded
  (``note_seen``) or tried.

A ``revoked`` answer from any source wins over ``good``; once a source said ``good``, later
OCSP sources are read from the cache only. With ``network=False`` (Turnkey, which never waits on
the network) only the cache and the stored CRLs are read.

The **policy** (``SWREG_REVOCATION_POLICY``): ``revoked`` → ``certificate_revoked``;
``unknown`` → ``revocation_unknown`` under ``hard``, accepted under ``soft`` with the verdict
marked ``policy: soft`` (the caller puts it in the evidence and the audit row).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine._clock import Clock
from engine._errors import CertificateError, ErrorCode
from engine._settings import DEFAULT_CA_REVOCATION, CaRevocation, RevocationPolicy
from engine._settings import RevocationSourceKind as Kind
from engine.pki.certificate import subject_text
from engine.pki.revocation import (
    CrlAnswer,
    RevocationCheck,
    RevocationSource,
    RevocationStatus,
    RevocationVerdict,
    distribution_points,
)
from engine.services import metrics
from engine.services.fetching import FetchOutcome
from engine.services.ocsp import NO_RESPONDER, OcspResult, OcspService, OcspSource, responder_url
from engine.services.revocation import RevocationService
from engine.services.trust import TrustService, TrustSnapshot

RETRY_AFTER: Final = timedelta(minutes=1)
"""How long a distribution point a check fetched (or tried to) is not fetched again by a check."""
CHECK_FETCH_TIMEOUT: Final = timedelta(seconds=10)
"""The time limit of a CRL fetched during a check (a user waits; ``refresh`` allows more)."""
MAX_POINTS: Final = 4
"""The most distribution points of one certificate a check records or tries."""
_NOT_FETCHED: Final = frozenset(
    {FetchOutcome.HOST_NOT_ALLOWED.value, FetchOutcome.URL_NOT_ALLOWED.value}
)


@dataclass(frozen=True, slots=True)
class _Answer:
    """The answer about one certificate of the path."""

    status: RevocationStatus
    source: RevocationSource
    checked_at: datetime
    tried: tuple[dict[str, Any], ...]
    reason: x509.ReasonFlags | None = None
    revoked_at: datetime | None = None
    ocsp_response: bytes = b""
    crl_number: int | None = None
    valid_until: datetime | None = None


class RevocationChecker:
    """See the module docstring."""

    def __init__(
        self,
        *,
        trust: TrustService,
        ocsp: OcspService,
        crls: RevocationService,
        clock: Clock,
        policy: RevocationPolicy,
        grace: timedelta,
        cas: Mapping[str, CaRevocation],
    ) -> None:
        self._trust = trust
        self._ocsp = ocsp
        self._crls = crls
        self._clock = clock
        self._policy = policy
        self._grace = grace
        self._cas = cas
        self._attempted: dict[str, datetime] = {}
        self._fetching: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @property
    def policy(self) -> RevocationPolicy:
        return self._policy

    def bound(self, snapshot: TrustSnapshot) -> RevocationCheck:
        """:meth:`require` against ``snapshot``, as the pure card check takes it."""

        def check(chain: Sequence[x509.Certificate], *, network: bool = True) -> RevocationVerdict:
            return self.require(chain, snapshot=snapshot, network=network)

        return check

    def require(
        self,
        chain: Sequence[x509.Certificate],
        *,
        snapshot: TrustSnapshot,
        network: bool = True,
        field: str | None = None,
    ) -> RevocationVerdict:
        """:meth:`check`, then the policy: the verdict to keep as evidence, or the refusal."""
        return self.enforce(self.check(chain, snapshot=snapshot, network=network), field=field)

    def enforce(self, verdict: RevocationVerdict, *, field: str | None = None) -> RevocationVerdict:
        """``certificate_revoked``, ``revocation_unknown`` (``hard``), or the verdict to keep."""
        if verdict.status is RevocationStatus.REVOKED:
            reason = f" ({verdict.reason.name})" if verdict.reason is not None else ""
            raise CertificateError(
                ErrorCode.CERTIFICATE_REVOKED,
                field=field,
                detail=f"{verdict.subject} revoked{reason}",
            )
        if verdict.status is RevocationStatus.UNKNOWN:
            if self._policy is RevocationPolicy.HARD:
                raise CertificateError(
                    ErrorCode.REVOCATION_UNKNOWN,
                    field=field,
                    detail=f"{verdict.subject}: {_problems(verdict)}",
                )
            return verdict.accepted_softly()
        return verdict

    def check(
        self,
        chain: Sequence[x509.Certificate],
        *,
        snapshot: TrustSnapshot,
        network: bool = True,
    ) -> RevocationVerdict:
        """The revocation status of ``chain`` (a trusted path, anchor last); never raises for a
        source's failure."""
        now = self._clock.now()
        answers: list[tuple[x509.Certificate, _Answer]] = []
        for position in range(len(chain) - 1):
            certificate, issuer = chain[position], chain[position + 1]
            if position and snapshot.store.is_anchor(certificate):
                break
            answer, snapshot = self._answer(certificate, issuer, snapshot, now, network)
            who = _who(certificate, chain)
            tried = tuple({"certificate": who, **t} for t in answer.tried)
            answers.append((certificate, replace(answer, tried=tried)))
        if not answers:  # the trust anchor itself
            return RevocationVerdict(RevocationStatus.GOOD, RevocationSource.NONE, now)
        deciding = next(
            (pair for pair in answers if pair[1].status is RevocationStatus.REVOKED),
            next((pair for pair in answers if pair[1].status is RevocationStatus.UNKNOWN), None),
        )
        certificate, answer = deciding or answers[0]
        leaf = answers[0][1]
        limits = [a.valid_until for _, a in answers]
        return RevocationVerdict(
            status=answer.status,
            source=answer.source,
            checked_at=answer.checked_at,
            subject=_who(certificate, chain),
            tried=tuple(t for _, a in answers for t in a.tried),
            reason=answer.reason,
            revoked_at=answer.revoked_at,
            ocsp_response=leaf.ocsp_response,
            crl_number=leaf.crl_number,
            valid_until=None if None in limits else min(x for x in limits if x is not None),
        )

    # -- one certificate --------------------------------------------------------------------------

    def _answer(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        snapshot: TrustSnapshot,
        now: datetime,
        network: bool,
    ) -> tuple[_Answer, TrustSnapshot]:
        config = self._config(issuer)
        tried: list[dict[str, Any]] = []
        good: _Answer | None = None
        for kind in config.sources:
            if kind is Kind.OCSP:
                found = self._ask_ocsp(certificate, issuer, config, now, network and good is None)
                tried.append(found.tried[0])
            else:
                found, snapshot = self._ask_crls(
                    certificate, issuer, snapshot, now, network and good is None
                )
                tried.append(found.tried[0])
            metrics.revocation_answer(kind.value, found.status.value)
            if found.status is RevocationStatus.REVOKED:
                return replace(found, tried=tuple(tried)), snapshot
            if found.status is RevocationStatus.GOOD and good is None:
                good = found
        if good is not None:
            return replace(good, tried=tuple(tried)), snapshot
        unknown = _Answer(RevocationStatus.UNKNOWN, RevocationSource.NONE, now, tuple(tried))
        return unknown, snapshot

    def _ask_ocsp(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        config: CaRevocation,
        now: datetime,
        network: bool,
    ) -> _Answer:
        if config.ocsp_url is None and responder_url(certificate) is None:
            nothing = {"source": "ocsp", "url": None, "status": "unknown", "problem": NO_RESPONDER}
            return _Answer(RevocationStatus.UNKNOWN, RevocationSource.NONE, now, (nothing,))
        result = self._ocsp.ocsp_status(
            certificate,
            issuer,
            now=now,
            network=network,
            url=config.ocsp_url,
            require_nonce=config.ocsp_nonce_required,
            max_age=config.ocsp_max_age,
        )
        status = result.status
        tried: dict[str, Any] = {
            "source": "ocsp",
            "url": result.url,
            "status": status.value,
            "problem": result.problem,
            "cached": result.source is OcspSource.CACHE,
        }
        if status is RevocationStatus.UNKNOWN:
            return _Answer(status, RevocationSource.NONE, now, (tried,))
        return _Answer(
            status,
            RevocationSource.OCSP,
            result.checked_at,
            (tried,),
            reason=result.reason,
            revoked_at=result.revoked_at,
            ocsp_response=result.der,
            valid_until=_ocsp_limit(result),
        )

    def _ask_crls(
        self,
        certificate: x509.Certificate,
        issuer: x509.Certificate,
        snapshot: TrustSnapshot,
        now: datetime,
        network: bool,
    ) -> tuple[_Answer, TrustSnapshot]:
        points = [p for p in distribution_points(certificate) if _fetchable(p)]
        points = points[:MAX_POINTS]
        if network and points:
            self._crls.note_seen(points)
        crl = snapshot.revocation.answer(certificate, issuer, at=now, grace=self._grace)
        fetched = None
        if crl.status is RevocationStatus.UNKNOWN and network and points:
            fetched = self._fetch_once(points, now)
            snapshot = self._trust.snapshot()  # this or another check may have stored it
            crl = snapshot.revocation.answer(certificate, issuer, at=now, grace=self._grace)
        tried: dict[str, Any] = {
            "source": "crl",
            "crl_number": str(crl.crl_number) if crl.crl_number is not None else None,
            "status": crl.status.value,
            "problem": crl.problem,
        }
        if fetched is not None:
            tried["fetched"] = fetched
        if crl.status is RevocationStatus.UNKNOWN:
            return _Answer(crl.status, RevocationSource.NONE, now, (tried,)), snapshot
        return _crl_answer(crl, tried, self._grace, now), snapshot

    def _fetch_once(self, points: Sequence[str], now: datetime) -> str | None:
        """Fetch the certificate's first distribution point that may be fetched; its outcome
        (the last refusal when none may be), or ``None`` when it was fetched a moment ago: each
        URL is fetched by one check at a time, and not again for :data:`RETRY_AFTER` after an
        attempt, whatever came of it (a CRL that does not answer for the certificate is not
        downloaded on every check)."""
        refused: str | None = None
        for url in points:
            with self._url_lock(url):
                with self._lock:
                    attempted = self._attempted.get(url)
                if attempted is not None and now - attempted < RETRY_AFTER:
                    return None  # another check fetched it (or failed to) a moment ago
                report = self._crls.fetch_source(url, actor="check", timeout=CHECK_FETCH_TIMEOUT)
                if report.outcome in _NOT_FETCHED:
                    refused = report.outcome  # outside SWREG_FETCH_HOSTS: nothing was sent
                    continue
                with self._lock:
                    self._attempted[url] = now
                    if len(self._attempted) > 1024:  # bounded: forget the oldest attempts
                        oldest = sorted(self._attempted, key=self._attempted.__getitem__)
                        for forgotten in oldest[:512]:
                            del self._attempted[forgotten]
                return str(report.outcome)
        return refused

    def _url_lock(self, url: str) -> threading.Lock:
        with self._lock:
            lock = self._fetching.get(url)
            if lock is None:
                if len(self._fetching) > 1024:
                    self._fetching.clear()  # held locks stay with their holders
                lock = self._fetching[url] = threading.Lock()
            return lock

    def _config(self, issuer: x509.Certificate) -> CaRevocation:
        if not self._cas:
            return DEFAULT_CA_REVOCATION
        der = issuer.public_bytes(serialization.Encoding.DER)
        return self._cas.get(hashlib.sha256(der).hexdigest(), DEFAULT_CA_REVOCATION)


def _crl_answer(crl: CrlAnswer, tried: dict[str, Any], grace: timedelta, now: datetime) -> _Answer:
    return _Answer(
        crl.status,
        RevocationSource.CRL,
        crl.this_update or now,
        (tried,),
        reason=crl.reason,
        revoked_at=crl.revoked_at,
        crl_number=crl.crl_number,
        valid_until=crl.next_update + grace if crl.next_update is not None else None,
    )


def _ocsp_limit(result: OcspResult) -> datetime | None:
    return result.cache_until or result.next_update


def _fetchable(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


def _who(certificate: x509.Certificate, chain: Sequence[x509.Certificate]) -> str:
    if certificate is chain[0]:
        return f"certificate {certificate.serial_number:X}"
    return f"issuing CA {subject_text(certificate)}"


def _problems(verdict: RevocationVerdict) -> str:
    """What each source said about the certificate the verdict is about."""
    tried = [t for t in verdict.tried if t.get("certificate") == verdict.subject]
    said = [f"{t['source']} {t.get('problem') or t['status']}" for t in tried]
    return "no source answered (" + ", ".join(said) + ")" if said else "no source answered"
