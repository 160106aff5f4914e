"""Path building to configured trust anchors, and validity periods (pure).

Why not cryptography's ``PolicyBuilder().build_client_verifier``: it demands subjectAltName,
extendedKeyUsage and an AKI, and real GPKI card certificates have no SAN and no EKU (DOMAIN.md
§3.2a). The path is built here instead:

- issuer candidates share the child's issuer name (DER) **and**, when the child has an AKI key
  identifier and the candidate an SKI, the key identifier; MOICA G1, G2 and G3 have the same DN,
  so a name alone never chains;
- a candidate is accepted only when its key verifies the child's signature
  (``verify_directly_issued_by``: RSA PKCS#1 v1.5, RSA-PSS, ECDSA);
- every issuing certificate must be able to issue: BasicConstraints ``ca=True`` (required on
  intermediates, optional on anchors and v1 certificates), pathLenConstraint respected, and
  keyCertSign when keyUsage is present (the GRCA 2002 root has no keyUsage);
- key-rollover link certificates (GRCA 2002 → grca-2012-link → MOICA G2) are followed like any
  intermediate; the search continues past an anchor that is not self-signed, up to a self-signed
  one when that is reachable, so the chain shows the full path;
- at most :data:`MAX_PATH_LENGTH` certificates, none twice.

SHA-1: cryptography 50 no longer verifies SHA-1 certificate signatures, yet the GRCA 2002 root,
its 2012 link certificate and the G1 CAs are signed with SHA-1. SHA-1 signatures are verified
here (PKCS#1 v1.5 / ECDSA) on **CA certificates** only, whose content the CA itself chose (no
chosen-prefix collision); on end-entity certificates they are refused unless the store is built
with ``sha1_end_entities=True``.

Time is not part of the path; :func:`check_validity` is separate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ._errors import CertificateError, ErrorCode

MAX_PATH_LENGTH = 8
"""The longest chain built, end-entity and anchor included."""

_MAX_SIGNATURE_CHECKS = 64  # bounds the search when a caller hands many look-alike candidates


@dataclass(frozen=True, slots=True)
class _Issuing:
    """What a certificate may do as an issuer (read once per certificate)."""

    can_issue: bool
    path_length: int | None
    self_issued: bool
    is_ca: bool
    subject_key_id: bytes | None
    authority_key_id: bytes | None


class TrustStore:
    """Trust anchors and known intermediates, indexed for O(1) issuer lookup.

    Built once (at bootstrap or after ``swreg trust add``) and shared read-only between threads.
    Intermediates help build paths but are not trusted on their own.
    """

    def __init__(
        self,
        anchors: Iterable[x509.Certificate],
        intermediates: Iterable[x509.Certificate] = (),
        *,
        sha1_end_entities: bool = False,
    ) -> None:
        self._anchors = tuple(dict.fromkeys(anchors))
        anchor_set = frozenset(self._anchors)
        self._intermediates = tuple(c for c in dict.fromkeys(intermediates) if c not in anchor_set)
        self._anchor_set = anchor_set
        self._members = anchor_set | frozenset(self._intermediates)
        self._sha1_end_entities = sha1_end_entities
        self._info: dict[x509.Certificate, _Issuing] = {}
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        self._by_key_id: dict[bytes, list[x509.Certificate]] = {}
        self._verified: dict[tuple[x509.Certificate, x509.Certificate], bool] = {}
        for cert in (*self._anchors, *self._intermediates):
            info = self._issuing(cert)
            self._by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
            if info.subject_key_id is not None:
                self._by_key_id.setdefault(info.subject_key_id, []).append(cert)
        self._self_signed = frozenset(
            a
            for a in self._anchors
            if self._issuing(a).self_issued and self._signed_by(a, a, memo=True) is True
        )

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self._anchors

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return self._intermediates

    def is_anchor(self, cert: x509.Certificate) -> bool:
        return cert in self._anchor_set

    def issuer_candidates(
        self,
        issuer: x509.Name,
        key_identifier: bytes | None = None,
        *,
        extra: Sequence[x509.Certificate] = (),
    ) -> list[x509.Certificate]:
        """Certificates named ``issuer`` whose SKI (when both sides have one) is ``key_identifier``.

        Anchors come first, then intermediates, then ``extra``; signatures are not checked here.
        """
        name = issuer.public_bytes()
        found = list(self._by_subject.get(name, ()))
        found.sort(key=lambda c: c not in self._anchor_set)
        found += [c for c in extra if c not in found and c.subject.public_bytes() == name]
        if key_identifier is None:
            return found
        return [
            c
            for c in found
            if (ski := self._issuing(c).subject_key_id) is None or ski == key_identifier
        ]

    def build_path(
        self, cert: x509.Certificate, *, extra: Sequence[x509.Certificate] = ()
    ) -> tuple[x509.Certificate, ...]:
        """The chain from ``cert`` up to a trust anchor, ``cert`` first.

        ``extra`` are untrusted intermediates sent along (a card's chain). Raises
        ``CertificateError("certificate_untrusted")`` when no path exists.
        """
        search = _Search(self, tuple(extra))
        path = search.walk((cert,))
        if path is None:
            path = search.fallback
        if path is None:
            detail = "no path to a trust anchor"
            if search.sha1_refused:
                detail += " (SHA-1 signature on an end-entity certificate refused)"
            raise CertificateError(ErrorCode.CERTIFICATE_UNTRUSTED, detail=detail)
        return path

    # -- internals ---------------------------------------------------------------------------

    def _is_member(self, cert: x509.Certificate) -> bool:
        return cert in self._members

    def _is_self_signed_anchor(self, cert: x509.Certificate) -> bool:
        return cert in self._self_signed

    def _issuing(self, cert: x509.Certificate) -> _Issuing:
        info = self._info.get(cert)
        if info is None:
            info = _read_issuing(cert)
            if cert in self._members:
                self._info[cert] = info
        return info

    def _signed_by(
        self, child: x509.Certificate, issuer: x509.Certificate, *, memo: bool
    ) -> bool | None:
        """True/False; ``None`` when refused only because it is a SHA-1 end-entity signature."""
        key = (child, issuer)
        if memo and key in self._verified:
            return self._verified[key]
        result = _verify(child, issuer, sha1_allowed=self._issuing(child).is_ca)
        if result is None and self._sha1_end_entities:
            result = _verify(child, issuer, sha1_allowed=True)
        if memo and result is not None:
            self._verified[key] = result
        return result

    def _may_issue_for(
        self, candidate: x509.Certificate, path: tuple[x509.Certificate, ...]
    ) -> bool:
        info = self._issuing(candidate)
        if not info.can_issue:
            return False
        if not info.is_ca and candidate not in self._anchor_set and candidate.version.value != 0:
            return False  # a v3 intermediate must say BasicConstraints ca=True
        if info.path_length is not None:
            below = sum(1 for c in path[1:] if not self._issuing(c).self_issued)
            if below > info.path_length:
                return False
        return True


class _Search:
    """One depth-first path search (not shared between threads)."""

    def __init__(self, store: TrustStore, extra: tuple[x509.Certificate, ...]) -> None:
        self.store = store
        self.extra = extra
        self.fallback: tuple[x509.Certificate, ...] | None = None
        self.sha1_refused = False
        self.budget = _MAX_SIGNATURE_CHECKS

    def walk(self, path: tuple[x509.Certificate, ...]) -> tuple[x509.Certificate, ...] | None:
        store = self.store
        node = path[-1]
        if store.is_anchor(node):
            if store._is_self_signed_anchor(node):
                return path
            if self.fallback is None:
                self.fallback = path  # trusted; keep looking for the self-signed root above
        if len(path) >= MAX_PATH_LENGTH:
            return None
        info = store._issuing(node)
        for candidate in store.issuer_candidates(
            node.issuer, info.authority_key_id, extra=self.extra
        ):
            if candidate in path or not store._may_issue_for(candidate, path):
                continue
            if self.budget <= 0:
                return None
            self.budget -= 1
            memo = store._is_member(node) and store._is_member(candidate)
            signed = store._signed_by(node, candidate, memo=memo)
            if signed is None:
                self.sha1_refused = True
            if not signed:
                continue
            found = self.walk((*path, candidate))
            if found is not None:
                return found
        return None


def check_validity(cert: x509.Certificate, at: datetime) -> None:
    """Refuse ``cert`` outside its validity period; both bounds are inclusive.

    Raises ``certificate_not_yet_valid`` before notBefore and ``certificate_expired`` after
    notAfter. A naive ``at`` is taken as UTC.
    """
    moment = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    if moment < cert.not_valid_before_utc:
        raise CertificateError(
            ErrorCode.CERTIFICATE_NOT_YET_VALID,
            detail=f"valid from {cert.not_valid_before_utc.isoformat()}",
        )
    if moment > cert.not_valid_after_utc:
        raise CertificateError(
            ErrorCode.CERTIFICATE_EXPIRED,
            detail=f"valid until {cert.not_valid_after_utc.isoformat()}",
        )


def _read_issuing(cert: x509.Certificate) -> _Issuing:
    try:
        extensions = cert.extensions
        self_issued = cert.subject.public_bytes() == cert.issuer.public_bytes()
    except Exception:  # unparsable extensions: cannot issue, matches nothing
        return _Issuing(False, None, False, False, None, None)
    can_issue, is_ca, path_length = True, False, None
    ski = aki = None
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints):
            is_ca = value.ca
            can_issue = can_issue and value.ca
            path_length = value.path_length
        elif isinstance(value, x509.KeyUsage):
            can_issue = can_issue and value.key_cert_sign
        elif isinstance(value, x509.SubjectKeyIdentifier):
            ski = value.digest
        elif isinstance(value, x509.AuthorityKeyIdentifier):
            aki = value.key_identifier
    return _Issuing(can_issue, path_length, self_issued, is_ca, ski, aki)


def _verify(
    child: x509.Certificate, issuer: x509.Certificate, *, sha1_allowed: bool
) -> bool | None:
    try:
        child.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass  # an unsupported algorithm (SHA-1 since cryptography 47), a key type, a name
    try:
        if not isinstance(child.signature_hash_algorithm, hashes.SHA1):
            return False
    except UnsupportedAlgorithm:
        return False
    if child.issuer != issuer.subject:
        return False
    if not sha1_allowed:
        return None
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            parameters = child.signature_algorithm_parameters
            if not isinstance(parameters, padding.PKCS1v15 | padding.PSS):
                return False
            key.verify(child.signature, child.tbs_certificate_bytes, parameters, hashes.SHA1())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True
