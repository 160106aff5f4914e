"""Trust anchors and CRLs: stored in the database, compiled into lookup structures once.

Any worker may add an anchor or a CRL; every worker notices through a cheap version query and
rebuilds its :class:`TrustSnapshot` (path-building indexes and the O(1) revocation sets) only
then, never per check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from threading import Lock
from typing import Any

from cryptography import x509

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.pki.certificate import load_certificate
from engine.pki.crl import read_crl
from engine.pki.revocation import RevocationIndex, load_crl
from engine.pki.trust import TrustStore
from engine.store import Database, UnitOfWork


@dataclass(frozen=True, slots=True)
class TrustSnapshot:
    store: TrustStore
    revocation: RevocationIndex


@dataclass(frozen=True, slots=True)
class TrustEntry:
    fingerprint: str
    subject: str
    is_anchor: bool
    added: bool  # False when it was already present


class TrustService:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._clock = clock
        self._lock = Lock()
        self._cached: tuple[tuple[int, int, int, int], TrustSnapshot] | None = None

    def add_certificate(
        self, data: bytes, *, anchor: bool = True, actor: str = "cli"
    ) -> TrustEntry:
        """Trust a CA certificate (``anchor``) or keep it as an intermediate for path building."""
        parsed = load_certificate(data)
        if not _can_issue(parsed.certificate):
            raise RefusedError(ErrorCode.INVALID_VALUE, field="file", detail="not a CA certificate")
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            added = uow.trust.add(parsed.der, parsed.subject, parsed.fingerprint, anchor, now)
            if added:
                uow.audit.append(
                    at=now,
                    actor=actor,
                    event="trust_added",
                    diff={
                        "subject": parsed.subject,
                        "fingerprint": parsed.fingerprint,
                        "anchor": anchor,
                    },
                )
            uow.commit()
        return TrustEntry(parsed.fingerprint, parsed.subject, anchor, added)

    def list(self) -> list[TrustEntry]:
        with self._database.unit_of_work() as uow:
            return [
                TrustEntry(t.fingerprint, t.subject, t.is_anchor, False) for t in uow.trust.list()
            ]

    def add_crl(self, data: bytes, *, actor: str = "cli") -> dict[str, Any]:
        """Store a CRL after checking its signature against a trusted issuer."""
        crl = load_crl(data)
        snapshot = self.snapshot()
        RevocationIndex.build([crl], snapshot.store)  # refuses a CRL no trusted CA signed
        der = crl.der
        fingerprint = hashlib.sha256(der).hexdigest()
        info = crl.info
        number = info.number
        issuer = info.issuer.rfc4514_string()
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            added = uow.crls.add(
                der,
                issuer,
                fingerprint,
                number,
                info.this_update,
                info.next_update,
                now,
            )
            if added:
                uow.audit.append(
                    at=now,
                    actor=actor,
                    event="crl_added",
                    diff={
                        "issuer": issuer,
                        "crl_number": str(number) if number is not None else None,
                        "revoked": info.entries,
                    },
                )
            uow.commit()
        return {"issuer": issuer, "crl_number": number, "revoked": info.entries, "added": added}

    def snapshot(self, uow: UnitOfWork | None = None) -> TrustSnapshot:
        """The compiled trust store and revocation index, rebuilt only when the data changed."""
        if uow is None:
            with self._database.unit_of_work() as own:
                return self.snapshot(own)
        version = uow.trust.version_with_crls()  # one statement
        cached = self._cached
        if cached is not None and cached[0] == version:
            return cached[1]
        with self._lock:
            cached = self._cached  # another thread may have rebuilt it meanwhile
            if cached is not None and cached[0] == version:
                return cached[1]
            rows = uow.trust.list()
            anchors = [x509.load_der_x509_certificate(r.der) for r in rows if r.is_anchor]
            helpers = [x509.load_der_x509_certificate(r.der) for r in rows if not r.is_anchor]
            store = TrustStore(anchors, helpers)
            crls = [read_crl(r.der) for r in uow.crls.list()]
            snapshot = TrustSnapshot(store, RevocationIndex.build(crls, store))
            self._cached = (version, snapshot)
            return snapshot


def _can_issue(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return True  # the 2002 GRCA root states none of this; trust is the operator's choice
    return constraints.ca
