"""Readiness (DESIGN.md §11): what ``GET /readyz`` answers. ``GET /healthz`` needs no service.

:meth:`HealthService.readiness` checks, in order,

- ``database``: reachable (the migration check below opens a connection), and under this
  process's secret keyring (:data:`KEY_MISMATCH` otherwise: a ``swreg keys rotate`` ran under
  the running portal, whose lookups by keyed hash now find nothing; start it with the new key
  file or ``SWREG_SECRET_KEY``);
- ``migrations``: the schema is at the migrations' head (:meth:`Database.is_migrated`, the
  ``alembic_version`` row against the newest revision shipped in ``MIGRATIONS_DIR``);
- ``trust_anchors``: at least one trust anchor is stored;
- ``crls``: under the ``hard`` revocation policy, every CA certificate of the trust store (anchors
  and intermediates: each issues certificates a check asks its CRL about) that is still valid and
  not OCSP-only (``SWREG_REVOCATION_CAS`` ``sources`` without ``"crl"``) has CRLs, none of them
  stale. "Stale" is :meth:`engine.pki.crl.Crl.is_stale` — past nextUpdate + ``SWREG_CRL_GRACE``
  —, the rule the certificate checks refuse by and ``swreg revocation status`` shows as
  ``fresh``; the CRLs are those the checks use (the trust snapshot's index: the newest per
  issuer key and partition, matched by key, CRLs added with ``swreg crl add`` included).
  Under ``soft`` an unknown status refuses nobody, so this check is ``ok`` without reading;
- ``mail``: mail goes somewhere (``SWREG_SMTP_HOST`` or ``SWREG_MAIL_OUTBOX``, or the demo's own
  outbox): the wired mailer is not the :class:`~engine.services.mail.NullMailer`.

Each check is ``"ok"`` or a short reason (:data:`UNREACHABLE`, :data:`NOT_AT_HEAD`, ...; for
``crls`` ``"stale: NAME, ..."`` and/or ``"no CRL: NAME, ..."``, NAME being the CA's common name,
which is public). Nothing else is said: no URL, no host, no error text — those go to the log,
once when a check's answer changes. A check that fails unexpectedly answers :data:`ERROR`; the
readiness probe itself never fails.

The answer is kept per process for :data:`CACHE_FOR` by the :class:`~engine._clock.Clock`, so a
probe every second costs the database one round of reads per five seconds and worker.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from engine._clock import Clock
from engine._errors import EnvironmentProblem
from engine._settings import (
    DEFAULT_CA_REVOCATION,
    CaRevocation,
    RevocationPolicy,
    RevocationSourceKind,
)
from engine.pki.certificate import subject_text
from engine.services.mail import Mailer, NullMailer
from engine.services.secret_keys import SecretKeys
from engine.services.trust import TrustService, TrustSnapshot
from engine.store import Database

log = logging.getLogger("swreg.health")

CACHE_FOR: Final = timedelta(seconds=5)
"""How long one process keeps a readiness answer (DESIGN.md §11: at most 5 s)."""

OK: Final = "ok"
UNREACHABLE: Final = "unreachable"
"""``database``: no connection could be opened (or the server closed it)."""
KEY_MISMATCH: Final = "secret key does not match"
"""``database``: its keyed hashes are under another keyring than this process's."""
NOT_AT_HEAD: Final = "not at head"
"""``migrations``: the schema is older (or newer) than this code's migrations: ``swreg init``."""
NO_ANCHOR: Final = "none"
"""``trust_anchors``: no trust anchor is stored: ``swreg trust add``."""
NOT_CONFIGURED: Final = "not configured"
"""``mail``: neither ``SWREG_SMTP_HOST`` nor ``SWREG_MAIL_OUTBOX`` is set."""
NOT_CHECKED: Final = "not checked"
"""A check that needs the database while it is unreachable, or tables it has not got."""
ERROR: Final = "error"
"""A check that failed unexpectedly (the log says why)."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """Each check ``"ok"`` or a short reason; ready when all are ``"ok"``."""

    database: str
    migrations: str
    trust_anchors: str
    crls: str
    mail: str

    @property
    def ready(self) -> bool:
        return all(value == OK for value in self.checks().values())

    def checks(self) -> dict[str, str]:
        return asdict(self)

    def as_dict(self) -> dict[str, Any]:
        """``{ready, checks: {database, migrations, trust_anchors, crls, mail}}``."""
        return {"ready": self.ready, "checks": self.checks()}


class HealthService:
    """The readiness checks of one process (see the module doc). Thread-safe."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        mailer: Mailer,
        *,
        policy: RevocationPolicy,
        grace: timedelta,
        cas: Mapping[str, CaRevocation] | None = None,
        cache_for: timedelta = CACHE_FOR,
        secret_keys: SecretKeys | None = None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._mail = OK if not isinstance(mailer, NullMailer) else NOT_CONFIGURED
        self._policy = policy
        self._grace = grace
        self._cas: Mapping[str, CaRevocation] = dict(cas or {})
        self._cache_for = cache_for
        self._secret_keys = secret_keys
        self._lock = threading.Lock()
        self._cached: tuple[datetime, Readiness] | None = None

    def readiness(self) -> Readiness:
        """The checks, as computed at most :data:`CACHE_FOR` ago by this process.

        The lock guards the cache only: a check waiting on an unreachable database holds no
        other probe (each waits on its own connection, as any request would).
        """
        now = self._clock.now()
        with self._lock:
            cached = self._cached
        if cached is not None and timedelta(0) <= now - cached[0] < self._cache_for:
            return cached[1]
        answer, why = self._check(now)
        with self._lock:
            previous, self._cached = self._cached, (now, answer)
        _log_changes(previous[1] if previous else None, answer, why)
        return answer

    def _check(self, now: datetime) -> tuple[Readiness, dict[str, str]]:
        """The checks, and for the log what made a check fail (never part of the answer)."""
        try:
            migrated = self._database.is_migrated()
        except EnvironmentProblem as problem:
            why = {"database": problem.detail or str(problem.code)}
            return Readiness(UNREACHABLE, NOT_CHECKED, NOT_CHECKED, NOT_CHECKED, self._mail), why
        except Exception as exc:  # the probe answers whatever happens
            why = {"database": type(exc).__name__}
            return Readiness(ERROR, NOT_CHECKED, NOT_CHECKED, NOT_CHECKED, self._mail), why
        migrations = OK if migrated else NOT_AT_HEAD
        database, why = self._keyring(), {}
        if database != OK:
            why["database"] = "this process's keyring is not the database's (swreg keys show)"
        try:
            snapshot = self._trust.snapshot()
        except Exception as exc:  # an empty database: the migrations check says why
            failed = ERROR if migrated else NOT_CHECKED
            why |= {"trust_anchors": type(exc).__name__, "crls": type(exc).__name__}
            return Readiness(database, migrations, failed, failed, self._mail), why
        anchors = OK if snapshot.store.anchors else NO_ANCHOR
        crls = self._crls(snapshot, now)
        return Readiness(database, migrations, anchors, crls, self._mail), why

    def _keyring(self) -> str:
        """``ok``, or :data:`KEY_MISMATCH` when the database's key check is another
        keyring's (none stored yet, or no table yet: ``ok``)."""
        if self._secret_keys is None:
            return OK
        try:
            matches = self._secret_keys.matches()
        except Exception:  # the other checks say what is wrong with the database
            return OK
        return KEY_MISMATCH if matches is False else OK

    def _crls(self, snapshot: TrustSnapshot, now: datetime) -> str:
        """``ok``, or the CAs whose CRLs a ``hard`` check would find stale or missing."""
        if self._policy is not RevocationPolicy.HARD:
            return OK  # unknown is accepted: a stale CRL refuses nobody
        stale: dict[str, None] = {}
        missing: dict[str, None] = {}
        store = snapshot.store
        for ca in (*store.anchors, *store.intermediates):
            if ca.not_valid_after_utc < now:
                continue  # an expired CA validates no path: its CRL answers no check
            if RevocationSourceKind.CRL not in self._config(ca).sources:
                continue  # OCSP-only: no check asks its CRLs
            crls = snapshot.revocation.crls_of(ca)
            if not crls:
                missing[ca_name(ca)] = None
            elif any(crl.is_stale(now, self._grace) for crl in crls):
                stale[ca_name(ca)] = None
        reasons = [
            f"{label}: {', '.join(names)}"
            for label, names in (("stale", stale), ("no CRL", missing))
            if names
        ]
        return "; ".join(reasons) or OK

    def _config(self, ca: x509.Certificate) -> CaRevocation:
        """The CA's ``SWREG_REVOCATION_CAS`` settings (by its certificate's SHA-256)."""
        if not self._cas:
            return DEFAULT_CA_REVOCATION
        der = ca.public_bytes(serialization.Encoding.DER)
        return self._cas.get(hashlib.sha256(der).hexdigest(), DEFAULT_CA_REVOCATION)


def ca_name(ca: x509.Certificate) -> str:
    """A CA's public name, short: its common name, else its first organisational unit (MOICA
    has none: ``OU=內政部憑證管理中心``), else its whole subject."""
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME):
        values = ca.subject.get_attributes_for_oid(oid)
        if values and isinstance(values[0].value, str):
            return values[0].value
    return subject_text(ca)


def _log_changes(previous: Readiness | None, current: Readiness, why: Mapping[str, str]) -> None:
    """One warning line per check whose answer changed to a reason (with what caused it, for
    the operator), one info line per check back to ``ok``: a probe every second does not fill
    the log."""
    before = previous.checks() if previous is not None else {}
    for name, value in current.checks().items():
        if before.get(name, OK) == value:
            continue
        if value == OK:
            log.info("readiness: %s ok again", name)
        elif name in why:
            log.warning("readiness: %s: %s (%s)", name, value, why[name])
        else:
            log.warning("readiness: %s: %s", name, value)
