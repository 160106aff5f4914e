"""Fetched CRLs (DESIGN.md §4a): ``swreg crl source add``, ``swreg revocation refresh`` and
``swreg revocation status``; the CRL side of the certificate checks (``note_seen``,
``fetch_source``).

:meth:`RevocationService.refresh` re-requests every known distribution point — the CRL
distribution points named by the trusted CA certificates (recorded as sources of origin ``ca``),
those of certificates the checks saw (origin ``seen``: :meth:`RevocationService.note_seen`,
:meth:`RevocationService.fetch_source`) and the sources added by hand (``manual``) — through the
SSRF-safe :class:`~engine.services.fetching.Fetcher`, with a conditional GET when a CRL from
that URL is stored. A fetched CRL is read
(:func:`~engine.pki.crl.read_crl`), verified against the trust store's CA certificates matched
by *key* (:meth:`~engine.pki.crl.Crl.verify`), then checked once more exactly as the trust
snapshot's revocation index will read it (so nothing stored can break the index), and stored
when it is newer (CRL number, then thisUpdate) than what its slot — issuer key + partition —
holds. Older fetched CRLs of the slot are deleted in the same transaction (one fetched CRL per
slot; CRLs added by ``swreg crl add`` are left alone). A stale CRL is stored all the same (it
still proves revocations) and reported as ``stale``.

Every source is handled in its own transaction (its CRL row and its source row together), so a
run cut short leaves no half-written source; concurrent runs are safe: URLs and CRL
fingerprints are unique and inserts skip what another run wrote first. One audit row per run
(``revocation_refreshed``) carries counts only.

**OCSP renewal** (DESIGN.md §4a "Turnkey"): the same run keeps the cached OCSP answer of every
registered signing certificate (``certificates`` rows of purpose ``signing``, ``active``, not
expired) fresh, since Turnkey reads the cache only. Each one that chains to a trust anchor, whose
CA is not CRL-only (``SWREG_REVOCATION_CAS``) and that names a responder (or whose CA has one
configured) is asked through :meth:`~engine.services.ocsp.OcspService.ocsp_status` with the CA's
settings and ``renew_within`` = ``SWREG_OCSP_MAX_AGE``: an answer that is missing or runs out
within that margin is asked again; one that is still good for longer is left alone. A
certificate whose answer could not be renewed (the responder down, a refused answer, ``unknown``)
fails the run, even while its cached answer still lasts.

The checks record the distribution points they see with :meth:`RevocationService.note_seen`
(an in-process set of the URLs known to be stored keeps that free of database writes on the hot
path) and fetch a certificate's own distribution point on a miss with
:meth:`RevocationService.fetch_source` (exactly one source of ``refresh``, without an audit row).
They read the stored CRLs through :meth:`engine.services.trust.TrustService.snapshot`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from types import MappingProxyType
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine._clock import Clock
from engine._errors import ErrorCode, FormError, RefusedError, SwregError
from engine._settings import DEFAULT_CA_REVOCATION, CaRevocation, FetchHosts, RevocationSourceKind
from engine.pki.crl import Crl, CrlInfo, CrlRefused, read_crl
from engine.pki.ocsp import OcspStatus
from engine.pki.revocation import RevocationIndex, issuer_key
from engine.services import metrics
from engine.services.fetching import MAX_CRL_BYTES, Fetcher, FetchOutcome, FetchResult, Validators
from engine.services.ocsp import OcspResult, OcspService, OcspSource, responder_url
from engine.services.trust import TrustService, TrustSnapshot
from engine.store import CrlSource, Database, StoredCrl

log = logging.getLogger("swreg.revocation")

CRL_TIMEOUT: Final = timedelta(seconds=60)
"""The time limit of one CRL download (connect, redirects and body)."""
MAX_URL_CHARS: Final = 2048
"""The longest source URL, in UTF-8 bytes (``crl_sources.url``)."""
MAX_PARTITION_CHARS: Final = 4096
"""The longest partition (``crls.partition``: the issuingDistributionPoint URIs, space-joined,
and its user/CA scope)."""
MAX_REMEMBERED: Final = 16384
"""The most URLs :meth:`RevocationService.note_seen` remembers per process (known or refused);
past it the memory starts over (a database lookup per URL again, nothing lost)."""


class SourceOrigin(StrEnum):
    """Where a CRL source came from."""

    MANUAL = "manual"
    """``swreg crl source add URL``."""
    CA = "ca"
    """A CRL distribution point of a trusted CA certificate."""
    SEEN = "seen"
    """A CRL distribution point of a certificate a check saw (``note_seen``,
    ``fetch_source``)."""


STALE: Final = "stale"
"""The outcome of a source whose CRL was fetched (or 304) and verified but is stale."""
_SUCCESSES: Final = frozenset({FetchOutcome.FETCHED.value, FetchOutcome.NOT_MODIFIED.value})
_NOT_SENT: Final = frozenset(
    {FetchOutcome.HOST_NOT_ALLOWED.value, FetchOutcome.URL_NOT_ALLOWED.value}
)
"""Outcomes of a fetch that sent nothing (no duration, no failure in the metrics)."""

_CODES: Final = MappingProxyType(
    {
        "url_not_allowed": ErrorCode.INVALID_VALUE,
        "host_not_allowed": ErrorCode.INVALID_VALUE,
        "redirect_to_other_host": ErrorCode.INVALID_VALUE,
        "too_many_redirects": ErrorCode.INVALID_VALUE,
        "too_large": ErrorCode.FILE_TOO_LARGE,
        "timeout": ErrorCode.REVOCATION_UNKNOWN,
        "connection_error": ErrorCode.REVOCATION_UNKNOWN,
        "http_status": ErrorCode.REVOCATION_UNKNOWN,
        "truncated": ErrorCode.NOT_A_CERTIFICATE,
        "not_a_crl": ErrorCode.NOT_A_CERTIFICATE,
        "unsupported": ErrorCode.NOT_A_CERTIFICATE,
        "unknown_issuer": ErrorCode.CERTIFICATE_UNTRUSTED,
        "signature_invalid": ErrorCode.SIGNATURE_INVALID,
        STALE: ErrorCode.REVOCATION_UNKNOWN,
    }
)
"""The error code each failed outcome is reported with (``swreg revocation refresh`` exit 1)."""


@dataclass(frozen=True, slots=True)
class SourceView:
    """A CRL source as ``swreg crl source list`` shows it."""

    url: str
    origin: str
    added_at: datetime
    checked_at: datetime | None
    outcome: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "origin": self.origin,
            "added_at": _iso(self.added_at),
            "checked_at": _iso(self.checked_at),
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class SourceReport:
    """How one source went in one refresh.

    ``outcome``: ``fetched`` or ``not_modified`` (verified and fresh), ``stale`` (verified but
    past nextUpdate + grace; stored all the same), or why it failed: a
    :class:`~engine.services.fetching.FetchOutcome` (``host_not_allowed``,
    ``redirect_to_other_host``, ``too_large``, ``timeout``, ``http_status``, ``truncated``, …)
    or a :class:`~engine.pki.crl.CrlOutcome` (``not_a_crl``, ``unknown_issuer``,
    ``signature_invalid``, …). ``crl_number``/``this_update``/``next_update`` describe the
    newest CRL stored for the source's issuer and partition after the run.
    """

    url: str
    origin: str
    outcome: str
    stored: bool = False
    """Whether this run stored a new CRL from it."""
    fresh: bool = False
    crl_number: int | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    error: str | None = None
    entries: int | None = None
    """The entries of the CRL this run downloaded and verified (None when it downloaded none)."""
    size: int | None = None
    """The bytes this run downloaded from the source (None when it downloaded nothing)."""

    @property
    def ok(self) -> bool:
        return self.outcome in _SUCCESSES and self.fresh

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "origin": self.origin,
            "outcome": self.outcome,
            "stored": self.stored,
            "crl_number": self.crl_number,
            "this_update": _iso(self.this_update),
            "next_update": _iso(self.next_update),
            "fresh": self.fresh,
            "error": self.error,
            "entries": self.entries,
            "bytes": self.size,
        }

    def refusal(self) -> RefusedError:
        code = _CODES.get(self.outcome, ErrorCode.REVOCATION_UNKNOWN)
        detail = f"{self.url}: {self.outcome}" + (f" ({self.error})" if self.error else "")
        return RefusedError(code, field="url", detail=detail, url=self.url, outcome=self.outcome)


@dataclass(frozen=True, slots=True)
class OcspReport:
    """How the OCSP answer about one registered signing certificate went in one refresh.

    ``source``: ``network`` (asked now), ``cache`` (still good for longer than the margin, or
    kept because its renewal failed: then ``problem`` says why) or ``none`` (nothing could be
    asked: ``host_not_allowed``, ...). ``problem`` is ``None`` when the answer is good or
    revoked and current; otherwise an :class:`~engine.services.ocsp.OcspResult` problem.
    """

    url: str | None
    fingerprint: str
    serial: str
    status: str
    source: str
    problem: str | None = None
    detail: str | None = None
    checked_at: datetime | None = None
    cache_until: datetime | None = None

    @property
    def ok(self) -> bool:
        """A believed good or revoked answer that is current (renewed, or not due yet)."""
        return self.problem is None and self.status != OcspStatus.UNKNOWN.value

    @property
    def renewed(self) -> bool:
        return self.ok and self.source == OcspSource.NETWORK.value

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "fingerprint": self.fingerprint,
            "serial": self.serial,
            "status": self.status,
            "source": self.source,
            "renewed": self.renewed,
            "checked_at": _iso(self.checked_at),
            "cache_until": _iso(self.cache_until),
            "problem": self.problem,
            "error": self.detail,
        }

    def refusal(self) -> RefusedError:
        problem = self.problem or OcspStatus.UNKNOWN.value
        code = _CODES.get(problem, ErrorCode.REVOCATION_UNKNOWN)
        where = self.url or "no responder"
        detail = f"OCSP {where} for certificate {self.serial}: {problem}"
        if self.detail:
            detail += f" ({self.detail})"
        return RefusedError(
            code,
            field="ocsp",
            detail=detail,
            url=self.url,
            fingerprint=self.fingerprint,
            problem=problem,
        )


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What one ``swreg revocation refresh`` did."""

    sources: tuple[SourceReport, ...]
    ocsp: tuple[OcspReport, ...] = ()
    """The registered signing certificates whose OCSP answer was looked after."""

    @property
    def ok(self) -> bool:
        """Every source fetched (or 304), verified and fresh; every OCSP answer current."""
        return all(s.ok for s in self.sources) and all(o.ok for o in self.ocsp)

    def counts(self) -> dict[str, int]:
        outcomes = [s.outcome for s in self.sources]
        return {
            "sources": len(self.sources),
            "fetched": outcomes.count(FetchOutcome.FETCHED.value),
            "not_modified": outcomes.count(FetchOutcome.NOT_MODIFIED.value),
            "stored": sum(s.stored for s in self.sources),
            "stale": outcomes.count(STALE),
            "failed": sum(o not in _SUCCESSES and o != STALE for o in outcomes),
            "ocsp": len(self.ocsp),
            "ocsp_renewed": sum(o.renewed for o in self.ocsp),
            "ocsp_failed": sum(not o.ok for o in self.ocsp),
        }

    def failure(self) -> SwregError | None:
        """One refusal per source that failed or is stale and per OCSP answer that could not
        be renewed (``None`` when :attr:`ok`)."""
        refusals = [s.refusal() for s in self.sources if not s.ok]
        refusals += [o.refusal() for o in self.ocsp if not o.ok]
        return FormError(refusals) if refusals else None


@dataclass(frozen=True, slots=True)
class CrlStatus:
    """One stored CRL as ``swreg revocation status`` shows it."""

    issuer: str
    issuer_key_id: str | None
    partition: str | None
    url: str | None
    crl_number: int | None
    this_update: datetime
    next_update: datetime | None
    age_seconds: int
    entries: int
    fresh: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "issuer_key_id": self.issuer_key_id,
            "partition": self.partition,
            "url": self.url,
            "crl_number": self.crl_number,
            "this_update": _iso(self.this_update),
            "next_update": _iso(self.next_update),
            "age_seconds": self.age_seconds,
            "entries": self.entries,
            "fresh": self.fresh,
        }


class RefreshProgress(Protocol):
    """What :meth:`RevocationService.refresh` tells whoever watches it (the CLI's progress bar
    or lines), source by source."""

    def begin(self, url: str) -> None:
        """The download of ``url`` starts."""

    def received(self, url: str, size: int) -> None:
        """``size`` bytes of ``url`` arrived so far."""

    def end(self, report: SourceReport) -> None:
        """``url`` is done: fetched and verified (with its entries), not modified, or failed."""


class _Unwatched:
    """No one watches: every event is dropped."""

    def begin(self, url: str) -> None:
        pass

    def received(self, url: str, size: int) -> None:
        pass

    def end(self, report: SourceReport) -> None:
        pass


FetcherFactory = Callable[[FetchHosts], Fetcher]


class RevocationService:
    """CRL sources, ``revocation refresh`` and ``revocation status`` (see the module doc).

    ``ocsp``: renew the OCSP answers of registered signing certificates in ``refresh`` (none
    without it), with each issuing CA's settings from ``cas`` (by the SHA-256 fingerprint of
    the CA certificate, as ``SWREG_REVOCATION_CAS``). Thread-safe.
    """

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        *,
        hosts: FetchHosts,
        grace: timedelta,
        timeout: timedelta = CRL_TIMEOUT,
        fetcher: FetcherFactory = Fetcher,
        ocsp: OcspService | None = None,
        cas: Mapping[str, CaRevocation] | None = None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._hosts = hosts
        self._grace = grace
        self._timeout = timeout
        self._fetcher = fetcher
        self._ocsp = ocsp
        self._cas: Mapping[str, CaRevocation] = MappingProxyType(dict(cas or {}))
        self._lock = threading.Lock()
        self._known: set[str] = set()
        """Source URLs known to be stored (no write needed to record them)."""
        self._refused: set[str] = set()
        """URLs ``note_seen`` found outside ``SWREG_FETCH_HOSTS`` (or no http(s) URL)."""

    # -- sources -------------------------------------------------------------------------------

    def add_source(self, url: str, *, actor: str = "cli") -> tuple[SourceView, bool]:
        """Record a CRL distribution point (idempotent: ``added`` is False when known).

        ``invalid_value`` (url), nothing stored, for anything but an ``http``/``https`` URL
        whose host is in ``SWREG_FETCH_HOSTS``.
        """
        url = url.strip()
        with self._fetcher(self._hosts) as fetcher:
            refused = _refusal(fetcher, url)
        if refused is not None:
            detail = (
                "the host is not in SWREG_FETCH_HOSTS"
                if refused == FetchOutcome.HOST_NOT_ALLOWED
                else "not an http or https URL"
            )
            raise RefusedError(ErrorCode.INVALID_VALUE, field="url", detail=detail)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            added = uow.crl_sources.add(url, SourceOrigin.MANUAL.value, now)
            if added:
                uow.audit.append(at=now, actor=actor, event="crl_source_added", diff={"url": url})
            uow.commit()
            row = uow.crl_sources.get(url)
            assert row is not None
        self._remember(known=(url,))
        return _view(row), added

    def note_seen(self, urls: Iterable[str]) -> None:
        """Record CRL distribution points of checked certificates as sources of origin
        ``seen`` (``refresh`` re-requests them). A URL outside ``SWREG_FETCH_HOSTS`` (or not
        ``http``/``https``, or too long) is not recorded. Cheap when nothing is new: a URL this
        process knows to be stored costs no database statement."""
        with self._lock:
            new = [
                u for u in dict.fromkeys(urls) if u not in self._known and u not in self._refused
            ]
        if not new:
            return
        with self._fetcher(self._hosts) as fetcher:
            refusals = {u: _refusal(fetcher, u) for u in new}
        allowed = [u for u, refused in refusals.items() if refused is None]
        if allowed:
            now = self._clock.now()
            with self._database.unit_of_work() as uow:
                for url in allowed:
                    uow.crl_sources.add(url, SourceOrigin.SEEN.value, now)
                uow.commit()
        self._remember(known=allowed, refused=[u for u, r in refusals.items() if r is not None])

    def fetch_source(
        self,
        url: str,
        *,
        origin: SourceOrigin = SourceOrigin.SEEN,
        actor: str = "check",
        timeout: timedelta | None = None,
    ) -> SourceReport:
        """Record ``url`` as a source (of ``origin`` unless known already) and fetch, verify
        and store it exactly as ``refresh`` does one source (conditional GET when a CRL from it
        is stored). A URL ``add_source`` would refuse is recorded nowhere and reported with
        its refusal (``host_not_allowed``, ``url_not_allowed``). Never raises for the source;
        writes no audit row. Call it outside any transaction of the caller's. ``timeout``: a
        shorter limit than ``refresh``'s (a check has a user waiting)."""
        with self._fetcher(self._hosts) as fetcher:
            refused = _refusal(fetcher, url)
            if refused is not None:
                self._remember(refused=(url,))
                detail = (
                    "the host is not in SWREG_FETCH_HOSTS"
                    if refused is FetchOutcome.HOST_NOT_ALLOWED
                    else "not an http or https URL"
                )
                return SourceReport(
                    url=url, origin=origin.value, outcome=refused.value, error=detail
                )
            snapshot = self._trust.snapshot()
            candidates = [*snapshot.store.anchors, *snapshot.store.intermediates]
            with self._database.unit_of_work() as uow:
                uow.crl_sources.add(url, origin.value, self._clock.now())
                uow.commit()
                row = uow.crl_sources.get(url)
                assert row is not None
                known = (row.origin, Validators(row.etag, row.last_modified))
            self._remember(known=(url,))
            report = self._refresh_one(
                fetcher, url, *known, snapshot, candidates, timeout=timeout or self._timeout
            )
        log.info("CRL %s fetched for %s: %s", url, actor, report.outcome)
        return report

    def _remember(self, *, known: Iterable[str] = (), refused: Iterable[str] = ()) -> None:
        with self._lock:
            for memory, urls in ((self._known, known), (self._refused, refused)):
                for url in urls:
                    if len(memory) >= MAX_REMEMBERED:
                        memory.clear()
                    memory.add(url)

    def sources(self) -> list[SourceView]:
        """Every source, in the order added."""
        with self._database.unit_of_work() as uow:
            return [_view(row) for row in uow.crl_sources.list()]

    # -- refresh -------------------------------------------------------------------------------

    def refresh(
        self, *, actor: str = "cli", progress: RefreshProgress | None = None
    ) -> RefreshReport:
        """Re-request every source (see the module docstring); never raises for a source.
        ``progress`` hears of each source as it downloads (bytes) and ends (its report)."""
        watcher = progress or _Unwatched()
        snapshot = self._trust.snapshot()
        candidates = [*snapshot.store.anchors, *snapshot.store.intermediates]
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            for url in _distribution_points(candidates):
                uow.crl_sources.add(url, SourceOrigin.CA.value, now)
            uow.commit()
            sources = [
                (row.url, row.origin, row.etag, row.last_modified) for row in uow.crl_sources.list()
            ]
        self._remember(known=[url for url, *_ in sources])
        reports: list[SourceReport] = []
        with self._fetcher(self._hosts) as fetcher:
            for url, origin, etag, last_modified in sources:
                validators = Validators(etag, last_modified)
                watcher.begin(url)
                one = self._refresh_one(
                    fetcher, url, origin, validators, snapshot, candidates, progress=watcher
                )
                watcher.end(one)
                reports.append(one)
        report = RefreshReport(tuple(reports), tuple(self._renew_ocsp(snapshot)))
        with self._database.unit_of_work() as uow:
            uow.audit.append(
                at=self._clock.now(),
                actor=actor,
                event="revocation_refreshed",
                diff={**report.counts(), "ok": report.ok},
            )
            uow.commit()
        return report

    def _renew_ocsp(self, snapshot: TrustSnapshot) -> list[OcspReport]:
        """Ask again for the OCSP answer of every registered signing certificate whose cached
        answer is missing or runs out within ``SWREG_OCSP_MAX_AGE`` (see the module doc)."""
        if self._ocsp is None:
            return []
        with self._database.unit_of_work() as uow:
            rows = uow.certificates.signing_in_force(self._clock.now())
        reports: list[OcspReport] = []
        for fingerprint, serial, der in rows:
            asked = self._ask_ocsp(der, snapshot)
            if asked is not None:
                reports.append(_ocsp_report(fingerprint, serial, asked))
        return reports

    def _ask_ocsp(self, der: bytes, snapshot: TrustSnapshot) -> OcspResult | None:
        """The renewal of one certificate's answer; ``None`` when OCSP does not apply to it
        (unreadable, no trusted path — Turnkey does not accept it then —, a CRL-only CA, no
        responder)."""
        assert self._ocsp is not None
        try:
            certificate = x509.load_der_x509_certificate(der)
            path = snapshot.store.build_path(certificate)
        except (SwregError, ValueError) as error:
            log.info("OCSP renewal skips a signing certificate: %s", error)
            return None
        if len(path) < 2:  # a trust anchor registered as a signing certificate: nothing asks
            return None
        issuer = path[1]
        config = self._ca(issuer)
        if RevocationSourceKind.OCSP not in config.sources:
            return None
        if config.ocsp_url is None and responder_url(certificate) is None:
            return None
        return self._ocsp.ocsp_status(
            certificate,
            issuer,
            now=self._clock.now(),
            url=config.ocsp_url,
            require_nonce=config.ocsp_nonce_required,
            max_age=config.ocsp_max_age,
            renew_within=self._ocsp.max_age,
        )

    def _ca(self, issuer: x509.Certificate) -> CaRevocation:
        if not self._cas:
            return DEFAULT_CA_REVOCATION
        der = issuer.public_bytes(serialization.Encoding.DER)
        return self._cas.get(hashlib.sha256(der).hexdigest(), DEFAULT_CA_REVOCATION)

    def _refresh_one(
        self,
        fetcher: Fetcher,
        url: str,
        origin: str,
        validators: Validators,
        snapshot: TrustSnapshot,
        candidates: Sequence[x509.Certificate],
        *,
        timeout: timedelta | None = None,
        progress: RefreshProgress | None = None,
    ) -> SourceReport:
        with self._database.unit_of_work() as uow:
            kept = uow.fetched_crls.from_source(url)
        if kept is None:
            validators = Validators()  # nothing stored from it: a 304 would prove nothing
        began = metrics.fetch_started()
        with fetcher.download(
            url,
            max_bytes=MAX_CRL_BYTES,
            timeout=timeout or self._timeout,
            validators=validators,
            on_bytes=None if progress is None else partial(progress.received, url),
        ) as result:
            if result.outcome not in _NOT_SENT:
                metrics.fetch_took(metrics.CRL, began)
            if result.outcome is FetchOutcome.NOT_MODIFIED and kept is not None:
                return self._finish(url, origin, result.outcome.value, kept, False, result)
            if result.outcome is not FetchOutcome.FETCHED or result.path is None:
                return self._fail(url, origin, result.outcome.value, result.detail)
            data = result.path.read_bytes()
        try:
            crl = read_crl(data)
            issuer = crl.verify(candidates)
            RevocationIndex.build([crl], snapshot.store)  # as the index will read it
        except CrlRefused as refused:
            return self._fail(url, origin, refused.outcome.value, refused.detail)
        except SwregError as error:  # the index's own check: no trusted path, name mismatch
            outcome = (
                "unknown_issuer" if error.code is ErrorCode.CERTIFICATE_UNTRUSTED else "not_a_crl"
            )
            return self._fail(url, origin, outcome, error.detail)
        except Exception as exc:  # cryptography refusing what the DER reader let through
            log.warning("CRL from %s unreadable: %s", url, type(exc).__name__)
            return self._fail(url, origin, "not_a_crl", type(exc).__name__)
        if crl.info.partitioned and len(_partition(crl.info) or "") > MAX_PARTITION_CHARS:
            return self._fail(url, origin, "unsupported", "an issuingDistributionPoint too long")
        report = self._store(url, origin, crl, issuer, result)
        return replace(report, entries=crl.info.entries, size=result.size)

    def _store(
        self, url: str, origin: str, crl: Crl, issuer: x509.Certificate, result: FetchResult
    ) -> SourceReport:
        info = crl.info
        key_id = issuer_key(issuer).hex()
        partition = _partition(info)
        order = (-1 if info.number is None else info.number, info.this_update)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            slot = uow.fetched_crls.slot(key_id, partition)
            stored = False
            if not slot or order > slot[0].order:
                stored = uow.fetched_crls.replace(
                    der=crl.der,
                    fingerprint=hashlib.sha256(crl.der).hexdigest(),
                    issuer=_issuer_text(info.issuer),
                    issuer_key_id=key_id,
                    partition=partition,
                    source_url=url,
                    crl_number=info.number,
                    this_update=info.this_update,
                    next_update=info.next_update,
                    at=now,
                )
                slot = uow.fetched_crls.slot(key_id, partition)
            newest = slot[0] if slot else _as_stored(crl, key_id, partition, url, now)
            report = self._judge(url, origin, FetchOutcome.FETCHED.value, newest, stored)
            uow.crl_sources.record(
                url,
                at=now,
                outcome=report.outcome,
                error=None,
                etag=result.validators.etag,
                last_modified=result.validators.last_modified,
            )
            uow.commit()
        return report

    def _finish(
        self,
        url: str,
        origin: str,
        outcome: str,
        kept: StoredCrl,
        stored: bool,
        result: FetchResult,
    ) -> SourceReport:
        report = self._judge(url, origin, outcome, kept, stored)
        with self._database.unit_of_work() as uow:
            uow.crl_sources.record(
                url,
                at=self._clock.now(),
                outcome=report.outcome,
                error=None,
                etag=result.validators.etag,
                last_modified=result.validators.last_modified,
            )
            uow.commit()
        return report

    def _judge(
        self, url: str, origin: str, outcome: str, newest: StoredCrl, stored: bool
    ) -> SourceReport:
        fresh = self._fresh(newest.next_update, self._clock.now())
        return SourceReport(
            url=url,
            origin=origin,
            outcome=outcome if fresh else STALE,
            stored=stored,
            fresh=fresh,
            crl_number=newest.crl_number,
            this_update=newest.this_update,
            next_update=newest.next_update,
        )

    def _fail(self, url: str, origin: str, outcome: str, detail: str | None) -> SourceReport:
        """A failed source: reported, its validators dropped (the next run fetches in full)."""
        if outcome not in _NOT_SENT:
            metrics.fetch_failed(metrics.CRL)
        with self._database.unit_of_work() as uow:
            uow.crl_sources.record(
                url,
                at=self._clock.now(),
                outcome=outcome,
                error=detail or None,
                etag=None,
                last_modified=None,
            )
            uow.commit()
        return SourceReport(url=url, origin=origin, outcome=outcome, error=detail or None)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> list[CrlStatus]:
        """Every stored CRL (fetched or added by hand) with its age and freshness."""
        now = self._clock.now()
        statuses: list[CrlStatus] = []
        with self._database.unit_of_work() as uow:
            for row in uow.fetched_crls.all():
                der = uow.fetched_crls.der(row.id) or b""
                statuses.append(
                    CrlStatus(
                        issuer=row.issuer,
                        issuer_key_id=row.issuer_key_id,
                        partition=row.partition,
                        url=row.source_url,
                        crl_number=row.crl_number,
                        this_update=row.this_update,
                        next_update=row.next_update,
                        age_seconds=max(0, int((now - row.this_update).total_seconds())),
                        entries=_entries(der),
                        fresh=self._fresh(row.next_update, now),
                    )
                )
        return statuses

    def _fresh(self, next_update: datetime | None, at: datetime) -> bool:
        """Not past nextUpdate + ``SWREG_CRL_GRACE`` (a CRL without nextUpdate never is)."""
        return next_update is not None and at <= next_update + self._grace


def _distribution_points(certificates: Iterable[x509.Certificate]) -> list[str]:
    """The ``http``/``https`` full-name URIs of the certificates' CRL distribution points."""
    urls: dict[str, None] = {}
    for certificate in certificates:
        try:
            points = certificate.extensions.get_extension_for_class(
                x509.CRLDistributionPoints
            ).value
        except Exception:  # none, or unreadable: nothing to fetch
            continue
        for point in points:
            for name in point.full_name or ():
                if not isinstance(name, x509.UniformResourceIdentifier):
                    continue
                uri = name.value
                if uri.lower().startswith(("http://", "https://")) and _short(uri):
                    urls[uri] = None
    return list(urls)


def _partition(info: CrlInfo) -> str | None:
    """The stored slot of a partitioned CRL: its issuingDistributionPoint URIs, space-joined,
    plus ``only-user-certs`` / ``only-ca-certs`` for a CRL limited to one kind of certificate (a
    CA's user CRL and its CA CRL are two slots even when neither names a URI); ``None`` for a
    complete CRL."""
    if not info.partitioned:
        return None
    scope = (
        ("only-user-certs",)
        if info.only_user_certs
        else ("only-ca-certs",)
        if info.only_ca_certs
        else ()
    )
    return " ".join((*info.partition, *scope))


def _as_stored(crl: Crl, key_id: str, partition: str | None, url: str, at: datetime) -> StoredCrl:
    """A fetched CRL described as if stored (when another run's row is not visible yet)."""
    info = crl.info
    return StoredCrl(
        id=0,
        fingerprint=hashlib.sha256(crl.der).hexdigest(),
        issuer=_issuer_text(info.issuer),
        issuer_key_id=key_id,
        partition=partition,
        source_url=url,
        crl_number=info.number,
        this_update=info.this_update,
        next_update=info.next_update,
        added_at=at,
    )


def _ocsp_report(fingerprint: str, serial: str, result: OcspResult) -> OcspReport:
    return OcspReport(
        url=result.url,
        fingerprint=fingerprint,
        serial=serial,
        status=result.status.value,
        source=result.source.value,
        problem=result.problem,
        detail=result.detail or None,
        checked_at=result.checked_at,
        cache_until=result.cache_until,
    )


def _refusal(fetcher: Fetcher, url: str) -> FetchOutcome | None:
    """Why ``url`` may not be a source (``None``: it may), as ``crl source add`` decides."""
    return fetcher.allows(url) if _short(url) else FetchOutcome.URL_NOT_ALLOWED


def _short(url: str) -> bool:
    """Whether ``url`` fits its column (and a unique index) on every database."""
    return len(url.encode("utf-8", "surrogatepass")) <= MAX_URL_CHARS


def _entries(der: bytes) -> int:
    try:
        return len(x509.load_der_x509_crl(der))
    except Exception:
        return 0


def _issuer_text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "an unreadable issuer"


def _view(row: CrlSource) -> SourceView:
    return SourceView(row.url, row.origin, row.added_at, row.checked_at, row.outcome, row.error)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
