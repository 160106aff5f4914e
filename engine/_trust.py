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
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtensionOID

from ._errors import CertificateError, ErrorCode

MAX_PATH_LENGTH = 8
"""The longest chain built, end-entity and anchor included."""

_MAX_SIGNATURE_CHECKS = 64  # bounds the search when a caller hands many look-alike candidates


@dataclass(frozen=True, slots=True)
class _Issuing:
    """What a certificate may do as an issuer, and its names as DER (read once per certificate)."""

    can_issue: bool
    path_length: int | None
    is_ca: bool
    v1: bool
    subject_key_id: bytes | None
    authority_key_id: bytes | None
    subject_der: bytes
    issuer_der: bytes

    @property
    def self_issued(self) -> bool:
        return self.subject_der == self.issuer_der


@dataclass(frozen=True, slots=True)
class _Member:
    """A certificate of the store: its index (for the signature memo) and what it may do."""

    index: int
    info: _Issuing
    anchor: bool
    self_signed: bool = False


class TrustStore:
    """Trust anchors and known intermediates, indexed for O(1) issuer lookup.

    Built once (at bootstrap or after ``swreg trust add``) and shared read-only between threads
    (the only mutation afterwards is a memo of verified CA-to-CA signatures).
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
        self._sha1_end_entities = sha1_end_entities
        self._members: dict[x509.Certificate, _Member] = {}
        self._by_subject: dict[bytes, tuple[x509.Certificate, ...]] = {}
        self._verified: dict[tuple[int, int], bool] = {}
        for index, cert in enumerate((*self._anchors, *self._intermediates)):  # anchors first
            info = _read_issuing(cert)
            self._members[cert] = _Member(index, info, cert in anchor_set)
            self._by_subject[info.subject_der] = (*self._by_subject.get(info.subject_der, ()), cert)
        for anchor in self._anchors:
            member = self._members[anchor]
            if member.info.self_issued and self._signed_by(anchor, member.info, anchor, member):
                self._members[anchor] = replace(member, self_signed=True)

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self._anchors

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return self._intermediates

    def is_anchor(self, cert: x509.Certificate) -> bool:
        member = self._members.get(cert)
        return member is not None and member.anchor

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
        search = _Search(self, tuple(extra))
        return [c for c, _, _ in search.candidates(issuer.public_bytes(), key_identifier)]

    def build_path(
        self, cert: x509.Certificate, *, extra: Sequence[x509.Certificate] = ()
    ) -> tuple[x509.Certificate, ...]:
        """The chain from ``cert`` up to a trust anchor, ``cert`` first.

        ``extra`` are untrusted intermediates sent along (a card's chain). Raises
        ``CertificateError("certificate_untrusted")`` when no path exists.
        """
        search = _Search(self, tuple(extra))
        member = self._members.get(cert)
        info = member.info if member is not None else _read_issuing(cert, as_issuer=False)
        path = search.walk((cert,), (info,), member)
        if path is None:
            path = search.fallback
        if path is None:
            detail = "no path to a trust anchor"
            if search.sha1_refused:
                detail += " (SHA-1 signature on an end-entity certificate refused)"
            raise CertificateError(ErrorCode.CERTIFICATE_UNTRUSTED, detail=detail)
        return path

    # -- internals ---------------------------------------------------------------------------

    def _signed_by(
        self,
        child: x509.Certificate,
        child_info: _Issuing,
        issuer: x509.Certificate,
        issuer_member: _Member | None,
        child_member: _Member | None = None,
    ) -> bool | None:
        """True/False; ``None`` when refused only because it is a SHA-1 end-entity signature.

        Signatures between two store certificates are verified once and remembered.
        """
        key = None
        if child_member is not None and issuer_member is not None:
            key = (child_member.index, issuer_member.index)
            known = self._verified.get(key)
            if known is not None:
                return known
        result = _verify(child, issuer, sha1_allowed=child_info.is_ca)
        if result is None and self._sha1_end_entities:
            result = _verify(child, issuer, sha1_allowed=True)
        if key is not None and result is not None:
            self._verified[key] = result
        return result


class _Search:
    """One depth-first path search (not shared between threads)."""

    def __init__(self, store: TrustStore, extra: tuple[x509.Certificate, ...]) -> None:
        self.store = store
        self.extra = [(c, _read_issuing(c)) for c in extra if c not in store._members]
        self.fallback: tuple[x509.Certificate, ...] | None = None
        self.sha1_refused = False
        self.budget = _MAX_SIGNATURE_CHECKS

    def candidates(
        self, issuer_der: bytes, key_identifier: bytes | None
    ) -> list[tuple[x509.Certificate, _Issuing, _Member | None]]:
        members = self.store._members
        found: list[tuple[x509.Certificate, _Issuing, _Member | None]] = []
        for cert in self.store._by_subject.get(issuer_der, ()):
            member = members[cert]
            found.append((cert, member.info, member))
        found += [(c, i, None) for c, i in self.extra if i.subject_der == issuer_der]
        if key_identifier is None:
            return found
        return [
            item
            for item in found
            if item[1].subject_key_id is None or item[1].subject_key_id == key_identifier
        ]

    def walk(
        self,
        path: tuple[x509.Certificate, ...],
        infos: tuple[_Issuing, ...],
        member: _Member | None,
    ) -> tuple[x509.Certificate, ...] | None:
        node, info = path[-1], infos[-1]
        if member is not None and member.anchor:
            if member.self_signed:
                return path
            if self.fallback is None:
                self.fallback = path  # trusted; keep looking for the self-signed root above
        if len(path) >= MAX_PATH_LENGTH:
            return None
        for candidate, candidate_info, candidate_member in self.candidates(
            info.issuer_der, info.authority_key_id
        ):
            anchor = candidate_member is not None and candidate_member.anchor
            if candidate in path or not _may_issue(candidate_info, anchor, infos):
                continue
            if self.budget <= 0:
                return None
            self.budget -= 1
            signed = self.store._signed_by(node, info, candidate, candidate_member, member)
            if signed is None:
                self.sha1_refused = True
            if not signed:
                continue
            found = self.walk((*path, candidate), (*infos, candidate_info), candidate_member)
            if found is not None:
                return found
        return None


def _may_issue(info: _Issuing, anchor: bool, below: tuple[_Issuing, ...]) -> bool:
    """Whether a certificate may issue the one at the top of ``below`` (EE first)."""
    if not info.can_issue:
        return False
    if not info.is_ca and not anchor and not info.v1:
        return False  # a v3 intermediate must say BasicConstraints ca=True
    if info.path_length is not None:
        intermediates = sum(1 for i in below[1:] if not i.self_issued)
        if intermediates > info.path_length:
            return False
    return True


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


_BASIC_CONSTRAINTS = ExtensionOID.BASIC_CONSTRAINTS
_KEY_USAGE = ExtensionOID.KEY_USAGE
_SKI = ExtensionOID.SUBJECT_KEY_IDENTIFIER
_AKI = ExtensionOID.AUTHORITY_KEY_IDENTIFIER
_WANTED = frozenset({_BASIC_CONSTRAINTS, _KEY_USAGE, _SKI, _AKI})


def _read_issuing(cert: x509.Certificate, *, as_issuer: bool = True) -> _Issuing:
    """Read once what path building needs; ``as_issuer=False`` skips the subject (an EE)."""
    issuer_der = cert.issuer.public_bytes()
    subject_der = cert.subject.public_bytes() if as_issuer else b""
    try:
        found = {e.oid: e.value for e in cert.extensions if e.oid in _WANTED}
        v1 = cert.version is x509.Version.v1
    except Exception:  # unparsable extensions: cannot issue
        return _Issuing(False, None, False, False, None, None, subject_der, issuer_der)
    can_issue, is_ca, path_length = True, False, None
    constraints = found.get(_BASIC_CONSTRAINTS)
    if isinstance(constraints, x509.BasicConstraints):
        is_ca, path_length = constraints.ca, constraints.path_length
        can_issue = constraints.ca
    usage = found.get(_KEY_USAGE)
    if isinstance(usage, x509.KeyUsage):
        can_issue = can_issue and usage.key_cert_sign
    ski = found.get(_SKI)
    aki = found.get(_AKI)
    return _Issuing(
        can_issue,
        path_length,
        is_ca,
        v1,
        ski.digest if isinstance(ski, x509.SubjectKeyIdentifier) else None,
        aki.key_identifier if isinstance(aki, x509.AuthorityKeyIdentifier) else None,
        subject_der,
        issuer_der,
    )


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
