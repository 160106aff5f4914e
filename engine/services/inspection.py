"""``swreg cert inspect``: a certificate explained the way the card check sees it (DESIGN.md §9).

Support desks (the CLI) and officers (the console's registration detail) use the same
explanation: CA, subject, validity, key usage, identity, status, the revocation verdict of the
configured checks (OCSP and CRLs, DESIGN.md §4a), the chain and the types that would accept it.
"""

from __future__ import annotations

from typing import Any

from engine._clock import Clock
from engine._plugins import Catalog
from engine.pki.certificate import load_certificate
from engine.pki.certificate_checks import certificate_status, inspect
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService


class CertificateInspector:
    """Explains certificates against the current trust anchors and revocation data."""

    def __init__(
        self, trust: TrustService, revocation: RevocationChecker, catalog: Catalog, clock: Clock
    ) -> None:
        self._trust = trust
        self._revocation = revocation
        self._catalog = catalog
        self._clock = clock

    def explain(self, data: bytes) -> dict[str, Any]:
        """The ``cert inspect --json`` report of ``data`` (DER or PEM)."""
        parsed = load_certificate(data)
        snapshot = self._trust.snapshot()
        status, chain = certificate_status(parsed, trust=snapshot.store, at=self._clock.now())
        verdict = (
            None if status == "untrusted" else self._revocation.check(chain, snapshot=snapshot)
        )
        return inspect(
            parsed,
            status=status,
            chain=chain,
            revocation=verdict,
            accepted_by=self._catalog.accepting(parsed.ca, parsed.identity),
        )


__all__ = ["CertificateInspector"]
