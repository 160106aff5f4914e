"""The portal's Prometheus metrics (DESIGN.md §11): the metric objects and the few helpers the
services call, in one place.

Each metric is a prometheus-client object in this module's own registry; the services record
through the helpers below (a line at the right place, or a decorator on the method), never by
naming a metric. Label values are bounded and never personal: applicant type codes from the
catalogue, :class:`~engine.ErrorCode` values, workflow step ids, revocation sources and
statuses, fetch kinds, rate-limit names and fixed outcomes — never an ID, a name, an address, a
URL or free text.

- ``swreg_registrations_started_total{type}``: :meth:`RegistrationService.start` committed, by
  the chosen applicant type;
- ``swreg_registrations_completed_total{type}``: a registration entered ``completed`` (its
  account exists), by its final type (the card check may have changed it);
- ``swreg_registrations_refused_total{code}``: a refused step (``start``, the card check, a form),
  by the error's code — one per refusal (a form with several bad fields counts its first code);
- ``swreg_card_check_duration_seconds``: the certificate, signature and revocation checks of a
  card check;
- ``swreg_step_duration_seconds{step}``: a registration step's whole service call, refused ones
  too, by step (``category``, ``card_check``, the form's step id);
- ``swreg_revocation_answers_total{source,status}``: each source's answer during a revocation
  check — a card check, a customs certificate, a Turnkey sender's certificates when first read
  (``ocsp``/``crl``; ``good``, ``revoked``, ``unknown``);
- ``swreg_revocation_fetch_duration_seconds{kind}``: one CRL download or OCSP request;
- ``swreg_revocation_fetch_failures_total{kind}``: a fetch that brought nothing usable — the
  network, HTTP, size or time limit failed, or the body was refused (not a CRL of a trusted
  issuer; an OCSP answer failing its checks);
- ``swreg_turnkey_verifications_total{outcome}``: ``verified`` or the refusal's code;
- ``swreg_rate_limited_total{route}``: a request refused by a per-client limit, by its name;
- ``swreg_mails_total{outcome}``: ``sent``, ``failed``, or ``dropped`` (no mail configured).

**Several workers** (``swreg serve --workers N``): prometheus-client's multiprocess mode.
``swreg serve`` makes a new private directory for the run (:func:`shared_across_workers`) and
names it in ``PROMETHEUS_MULTIPROC_DIR`` before the workers start; every worker imports
prometheus-client with it set, so its values live in memory-mapped files there, and
:func:`exposition` merges every worker's files (whichever worker answers ``/metrics``, the
numbers are the whole portal's). The supervisor tells :func:`worker_exited` of each worker that
is gone, as the documentation asks. With one process (one worker, the CLI, the tests) the
variable is unset and :func:`exposition` reads this module's registry: the instrumentation is
the same code either way, only where the values live differs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from functools import wraps
from pathlib import Path
from typing import Final, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from engine._errors import RefusedError

_P = ParamSpec("_P")
_T = TypeVar("_T")

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client's multiprocess mode keeps the workers' values: set by ``swreg serve``
for its workers, never by the operator (a process that starts with it set keeps its own values
in files there from the first import on)."""
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The Prometheus text format (0.0.4: every Prometheus reads it)."""
VERIFIED: Final = "verified"
"""The Turnkey outcome of a verified message (the others are refusal codes)."""
SENT, FAILED, DROPPED = "sent", "failed", "dropped"
CRL, OCSP = "crl", "ocsp"
"""The fetch kinds."""

_FETCH_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""A CRL may take minutes (``refresh``); an OCSP answer should take well under a second."""

REGISTRY: Final = CollectorRegistry(auto_describe=True)
"""This module's registry (one process); several workers are read from their files instead."""

REGISTRATIONS_STARTED: Final = Counter(
    "swreg_registrations_started_total",
    "Registrations started, by applicant type.",
    ["type"],
    registry=REGISTRY,
)
REGISTRATIONS_COMPLETED: Final = Counter(
    "swreg_registrations_completed_total",
    "Registrations completed (the account exists), by applicant type.",
    ["type"],
    registry=REGISTRY,
)
REGISTRATIONS_REFUSED: Final = Counter(
    "swreg_registrations_refused_total",
    "Refused registration steps (start, card check, forms), by error code.",
    ["code"],
    registry=REGISTRY,
)
CARD_CHECK_DURATION: Final = Histogram(
    "swreg_card_check_duration_seconds",
    "The certificate, signature and revocation checks of a card check.",
    registry=REGISTRY,
)
STEP_DURATION: Final = Histogram(
    "swreg_step_duration_seconds",
    "A registration step's service call, refused or not, by step.",
    ["step"],
    registry=REGISTRY,
)
REVOCATION_ANSWERS: Final = Counter(
    "swreg_revocation_answers_total",
    "Answers of revocation sources during certificate checks, by source and status.",
    ["source", "status"],
    registry=REGISTRY,
)
REVOCATION_FETCH_DURATION: Final = Histogram(
    "swreg_revocation_fetch_duration_seconds",
    "One CRL download or OCSP request, by kind.",
    ["kind"],
    buckets=_FETCH_BUCKETS,
    registry=REGISTRY,
)
REVOCATION_FETCH_FAILURES: Final = Counter(
    "swreg_revocation_fetch_failures_total",
    "CRL downloads and OCSP requests that brought nothing usable, by kind.",
    ["kind"],
    registry=REGISTRY,
)
TURNKEY_VERIFICATIONS: Final = Counter(
    "swreg_turnkey_verifications_total",
    "Turnkey message verifications: verified, or the refusal's code.",
    ["outcome"],
    registry=REGISTRY,
)
RATE_LIMITED: Final = Counter(
    "swreg_rate_limited_total",
    "Requests refused by a per-client rate limit, by the limit's name.",
    ["route"],
    registry=REGISTRY,
)
MAILS: Final = Counter(
    "swreg_mails_total",
    "Mail handed to the mailer: sent, failed, or dropped (no mail configured).",
    ["outcome"],
    registry=REGISTRY,
)

for _kind in (CRL, OCSP):  # fixed label sets start at 0: a rate over them exists from the start
    REVOCATION_FETCH_FAILURES.labels(_kind)
for _outcome in (SENT, FAILED, DROPPED):
    MAILS.labels(_outcome)


# -- registrations -------------------------------------------------------------------------


def registration_started(type_code: str) -> None:
    REGISTRATIONS_STARTED.labels(type_code).inc()


def registration_completed(type_code: str) -> None:
    REGISTRATIONS_COMPLETED.labels(type_code).inc()


class _Step:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_STEP: ContextVar[_Step | None] = ContextVar("swreg_metrics_step", default=None)
UNKNOWN_STEP: Final = "unknown"
"""The step label of a call refused before its registration's step was known."""


def registration_step(
    step: str | None = None,
) -> Callable[[Callable[_P, _T]], Callable[_P, _T]]:
    """Decorate a registration step's service method: its duration goes to
    ``swreg_step_duration_seconds{step}`` and a refusal (:class:`~engine.RefusedError`, raised
    again) to ``swreg_registrations_refused_total{code}``. ``step`` names it; without one the
    method names it with :func:`at_step` once it knows (:data:`UNKNOWN_STEP` until then)."""

    def decorate(function: Callable[_P, _T]) -> Callable[_P, _T]:
        @wraps(function)
        def timed(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            current = _Step(step or UNKNOWN_STEP)
            token = _STEP.set(current)
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            except RefusedError as refused:
                REGISTRATIONS_REFUSED.labels(refused.code.value).inc()
                raise
            finally:
                STEP_DURATION.labels(current.name).observe(time.perf_counter() - began)
                _STEP.reset(token)

        return timed

    return decorate


def at_step(step: str) -> None:
    """Name the step of the running :func:`registration_step` call (a workflow step id)."""
    current = _STEP.get()
    if current is not None:
        current.name = step


def card_check() -> AbstractContextManager[object]:
    """``with metrics.card_check():`` times the card check's certificate checks."""
    return CARD_CHECK_DURATION.time()


# -- revocation ----------------------------------------------------------------------------


def revocation_answer(source: str, status: str) -> None:
    """One source's answer (``ocsp``/``crl``; ``good``, ``revoked``, ``unknown``)."""
    REVOCATION_ANSWERS.labels(source, status).inc()


def fetch_started() -> float:
    """The moment a fetch starts, for :func:`fetch_took`."""
    return time.perf_counter()


def fetch_took(kind: str, began: float) -> None:
    """A fetch of ``kind`` (:data:`CRL`, :data:`OCSP`) begun at ``began`` has its answer."""
    REVOCATION_FETCH_DURATION.labels(kind).observe(time.perf_counter() - began)


def fetch_failed(kind: str) -> None:
    """A fetch of ``kind`` brought nothing usable."""
    REVOCATION_FETCH_FAILURES.labels(kind).inc()


# -- Turnkey, rate limits, mail ----------------------------------------------------------------


def turnkey_verification(function: Callable[_P, _T]) -> Callable[_P, _T]:
    """Decorate the Turnkey verification: ``verified``, or the refusal's code. The
    ``verified`` child is looked up once (``labels()`` costs 1.9 µs, 7 % of an RSA message's
    floor); prometheus-client's multiprocess values follow a fork by themselves."""
    verified: Counter | None = None

    @wraps(function)
    def counted(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        nonlocal verified
        try:
            result = function(*args, **kwargs)
        except RefusedError as refused:
            TURNKEY_VERIFICATIONS.labels(refused.code.value).inc()
            raise
        if verified is None:  # two threads may both look it up: the same child
            verified = TURNKEY_VERIFICATIONS.labels(VERIFIED)
        verified.inc()
        return result

    return counted


def rate_limited(route: str) -> None:
    """A request refused by the per-client limit named ``route``."""
    RATE_LIMITED.labels(route).inc()


def mail_delivery(function: Callable[_P, _T]) -> Callable[_P, _T]:
    """Decorate a mailer's ``send``: ``sent`` when it returns, ``failed`` when it raises."""

    @wraps(function)
    def counted(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            result = function(*args, **kwargs)
        except Exception:
            MAILS.labels(FAILED).inc()
            raise
        MAILS.labels(SENT).inc()
        return result

    return counted


def mail_dropped() -> None:
    """A message dropped because no mail is configured."""
    MAILS.labels(DROPPED).inc()


# -- exposition and workers ----------------------------------------------------------------


def exposition() -> bytes:
    """Every metric in the Prometheus text format (:data:`CONTENT_TYPE`): with several workers,
    all of theirs merged from the run's directory; else this process's."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        return generate_latest(REGISTRY)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(merged)


@contextmanager
def shared_across_workers(workers: int) -> Iterator[Path | None]:
    """For ``swreg serve``, around starting and running its workers.

    Several workers: a new, empty, owner-only directory for this run in the temporary folder
    (``TMPDIR``), set in ``PROMETHEUS_MULTIPROC_DIR`` for the workers about to start and removed
    when they are gone. Each run has its own, so two portals on one machine never mix their
    values, and none starts with another run's. One worker: ``None``, and the variable is unset
    (the process serves its own registry). An inherited value is dropped either way.
    """
    os.environ.pop(MULTIPROCESS_ENV, None)
    if workers <= 1:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="swreg-metrics-"))
    os.environ[MULTIPROCESS_ENV] = str(directory)
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int | None) -> None:
    """A worker is gone: prometheus-client's bookkeeping for a dead process (its live gauges'
    files go; what it counted stays in the totals). ``None``: one never started."""
    directory = os.environ.get(MULTIPROCESS_ENV)
    if directory and pid is not None:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


__all__ = [
    "CONTENT_TYPE",
    "CRL",
    "MULTIPROCESS_ENV",
    "OCSP",
    "REGISTRY",
    "at_step",
    "card_check",
    "exposition",
    "fetch_failed",
    "fetch_started",
    "fetch_took",
    "mail_delivery",
    "mail_dropped",
    "rate_limited",
    "registration_completed",
    "registration_started",
    "registration_step",
    "revocation_answer",
    "shared_across_workers",
    "turnkey_verification",
    "worker_exited",
]
