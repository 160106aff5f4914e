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

SHA-1: the GRCA 2002 root, its 2012 link certificate and the G1 CAs are signed with SHA-1,
which recent cryptography releases refuse in ``verify_directly_issued_by`` (older ones still
verify it). A SHA-1 signature is never left to cryptography: it is verified here (PKCS#1 v1.5 /
ECDSA) only on the legacy CA certificates pinned by SHA-256 fingerprint in
:data:`LEGACY_SHA1_CA_FINGERPRINTS` (real certificates whose content their CA chose long ago: no
chosen-prefix collision can produce them now). Any other CA certificate signed with SHA-1 is
refused (``certificate_untrusted``): a SHA-1 collision could otherwise forge a CA under a
trusted issuer. End-entity certificates signed with SHA-1 are refused too, unless the store is
built with ``sha1_end_entities=True``.

Time is not part of the path; :func:`check_validity` is separate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from threading import Lock
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from engine._errors import CertificateError, ErrorCode
from engine.pki.certificate import ParsedCertificate

MAX_PATH_LENGTH = 8
"""The longest chain built, end-entity and anchor included."""

LEGACY_SHA1_CA_FINGERPRINTS: Final = frozenset(
    {
        # GRCA 政府憑證總管理中心, first generation (2002), self-signed: grca-g1-2002-root.cer
        "7600295eefe85b9e1fd624db76062aaaae59818a54d2774cd4c0b2c01131e1b3",
        # GRCA 2012 key-rollover link (the 2002 key signs the new GRCA key): grca-2012-link.cer
        "d87aad615fe7c2385032244d08cdfe06eb005675aa1892d6e5b82780f19fb87f",
        # MOICA 內政部憑證管理中心 G1, issued by the 2002 GRCA: moica-g1-ca.cer
        "45111450fb31ef5137e4b7cff9ee2bef23e8bbfd165086dfbd93df2f329b785e",
        # MOEACA 工商憑證管理中心 G1, issued by the 2002 GRCA: moeaca-g1-ca.cer
        "90ffc5150ce0535069e7e5ef961e4047fb0861a140732c8cedc7e8d58eb59bd1",
        # TWCA Root Certification Authority (TaiCA's root), self-signed: twca-root-ca.cer
        "bfd88fe1101c41ae3e801bf8be56350ee9bad1a6b9bd515edc5c6d5b8711ac44",
    }
)
"""SHA-256 fingerprints (hex) of the only CA certificates whose SHA-1 signature is verified
(the real certificates are in the project's GPKI test vectors)."""

_SHA1_SIGNATURES: Final = frozenset(
    {SignatureAlgorithmOID.RSA_WITH_SHA1, SignatureAlgorithmOID.ECDSA_WITH_SHA1}
)

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
    """A certificate of the store (or a remembered chain helper): its index for the signature
    memo, and what it may do."""

    index: int
    info: _Issuing
    anchor: bool
    self_signed: bool = False


_Entry = tuple[x509.Certificate, _Member]

MAX_HELPERS = 256
"""How many CA certificates sent along by cards the store remembers (their issuing data and
verified signatures); beyond that the memo starts over."""

_HELPERS_PER_SIGNATURE = 4  # equal signature bytes on different certificates: only forgeries
_MAX_HELPER_SIGNATURES = 16 * MAX_HELPERS  # remembered verifications involving a helper


class TrustStore:
    """Trust anchors and known intermediates, indexed for O(1) issuer lookup.

    Built once (at bootstrap or after ``swreg trust add``) and shared read-only between threads
    (the only mutations afterwards are memos: verified CA-to-CA signatures, and the issuing data
    of CA certificates that cards send along, keyed by the exact certificate).
    Intermediates help build paths but are not trusted on their own.

    Certificates are looked up by their signature bytes, then compared (``is``, else ``==``):
    hashing or comparing a ``Certificate`` serialises it, a dozen times per card check otherwise.
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
        self._verified: dict[tuple[int, int], bool] = {}
        self._helper_verified: dict[tuple[int, int], bool] = {}
        entries: list[_Entry] = []
        for index, cert in enumerate((*self._anchors, *self._intermediates)):  # anchors first
            entries.append((cert, _Member(index, _read_issuing(cert), cert in anchor_set)))
        self._member_count = len(entries)
        for position, (cert, member) in enumerate(entries):
            if (
                member.anchor
                and member.info.self_issued
                and self._signed_by(cert, member.info, cert, member, member)
            ):
                entries[position] = (cert, replace(member, self_signed=True))
        self._by_signature: dict[bytes, tuple[_Entry, ...]] = {}
        self._by_subject: dict[bytes, tuple[_Entry, ...]] = {}
        self._by_der = {c.public_bytes(Encoding.DER): c for c, _ in entries}
        for entry in entries:
            signature, subject = entry[0].signature, entry[1].info.subject_der
            self._by_signature[signature] = (*self._by_signature.get(signature, ()), entry)
            self._by_subject[subject] = (*self._by_subject.get(subject, ()), entry)
        self._helpers: dict[bytes, tuple[_Entry, ...]] = {}
        self._helper_count = 0
        self._helper_lock = Lock()
        self._next_index = itertools.count(len(entries))

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self._anchors

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        return self._intermediates

    def member_by_der(self, data: bytes) -> x509.Certificate | None:
        """The anchor or intermediate whose DER is exactly ``data``, if any."""
        return self._by_der.get(data)

    def is_anchor(self, cert: x509.Certificate) -> bool:
        member = self._member(cert)
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
        self,
        cert: x509.Certificate | ParsedCertificate,
        *,
        extra: Sequence[x509.Certificate] = (),
    ) -> tuple[x509.Certificate, ...]:
        """The chain from ``cert`` up to a trust anchor, ``cert`` first.

        ``extra`` are untrusted intermediates sent along (a card's chain). Raises
        ``CertificateError("certificate_untrusted")`` when no path exists. A
        :class:`ParsedCertificate` saves reading its issuer name again.
        """
        issuer_der = None
        if isinstance(cert, ParsedCertificate):
            issuer_der = cert.issuer_der or None
            cert = cert.certificate
        search = _Search(self, tuple(extra))
        member = self._member(cert)
        if member is not None:
            info = member.info
        else:
            info = _read_issuing(cert, as_issuer=False, issuer_der=issuer_der)
        path = search.walk((cert,), (info,), member)
        if path is None:
            path = search.fallback
        if path is None:
            detail = "no path to a trust anchor"
            if search.sha1_refused:
                detail += " (a SHA-1 signature refused: only pinned legacy CA certificates)"
            raise CertificateError(ErrorCode.CERTIFICATE_UNTRUSTED, detail=detail)
        return path

    # -- internals ---------------------------------------------------------------------------

    def _member(self, cert: x509.Certificate) -> _Member | None:
        """The store's entry for ``cert`` (equal DER), if it is an anchor or intermediate."""
        return _find(self._by_signature, cert)

    def _helper(self, cert: x509.Certificate) -> _Member:
        """A CA certificate sent along (not a store member): its issuing data, remembered."""
        found = _find(self._helpers, cert)
        if found is not None:
            return found
        member = _Member(next(self._next_index), _read_issuing(cert), anchor=False)
        signature = cert.signature
        with self._helper_lock:
            known = self._helpers.get(signature, ())
            if len(known) >= _HELPERS_PER_SIGNATURE:
                return replace(member, index=-1)  # not remembered, nor its signatures
            if self._helper_count >= MAX_HELPERS:
                self._helpers, self._helper_verified = {}, {}
                self._helper_count, known = 0, ()
            self._helpers[signature] = (*known, (cert, member))
            self._helper_count += 1
        return member

    def _signed_by(
        self,
        child: x509.Certificate,
        child_info: _Issuing,
        issuer: x509.Certificate,
        issuer_member: _Member | None,
        child_member: _Member | None = None,
    ) -> bool | None:
        """True/False; ``None`` when refused only because it is a SHA-1 signature (on an
        unpinned CA certificate, or on an end-entity without ``sha1_end_entities``).

        Signatures between two CA certificates of the store (or remembered chain helpers) are
        verified once and remembered; an end-entity's signature is verified every time.
        """
        key = None
        memo = self._verified
        if child_member is not None and issuer_member is not None:
            key = (child_member.index, issuer_member.index)
            if min(key) < 0:
                key = None
            elif max(key) >= self._member_count:
                memo = self._helper_verified
        if key is not None:
            known = memo.get(key)
            if known is not None:
                return known
        result = _verify(
            child, issuer, is_ca=child_info.is_ca, sha1_end_entities=self._sha1_end_entities
        )
        bounded = memo is self._verified or len(memo) < _MAX_HELPER_SIGNATURES
        if key is not None and result is not None and bounded:
            memo[key] = result
        return result


def _find(index: dict[bytes, tuple[_Entry, ...]], cert: x509.Certificate) -> _Member | None:
    for known, member in index.get(cert.signature, ()):
        if known is cert or known == cert:
            return member
    return None


def _contains(path: tuple[x509.Certificate, ...], cert: x509.Certificate) -> bool:
    signature = cert.signature
    return any(c is cert or (c.signature == signature and c == cert) for c in path)


class _Search:
    """One depth-first path search (not shared between threads)."""

    def __init__(self, store: TrustStore, extra: tuple[x509.Certificate, ...]) -> None:
        self.store = store
        self.extra: list[tuple[x509.Certificate, _Issuing, _Member]] = []
        for cert in extra:
            if store._member(cert) is None:
                helper = store._helper(cert)
                self.extra.append((cert, helper.info, helper))
        self.fallback: tuple[x509.Certificate, ...] | None = None
        self.sha1_refused = False
        self.budget = _MAX_SIGNATURE_CHECKS

    def candidates(
        self, issuer_der: bytes, key_identifier: bytes | None
    ) -> list[tuple[x509.Certificate, _Issuing, _Member]]:
        found = [(c, m.info, m) for c, m in self.store._by_subject.get(issuer_der, ())]
        found += [item for item in self.extra if item[1].subject_der == issuer_der]
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
            if _contains(path, candidate) or not _may_issue(
                candidate_info, candidate_member.anchor, infos
            ):
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


def _read_issuing(
    cert: x509.Certificate, *, as_issuer: bool = True, issuer_der: bytes | None = None
) -> _Issuing:
    """Read once what path building needs; ``as_issuer=False`` skips the subject (an EE).

    ``issuer_der`` is ``cert.issuer.public_bytes()`` when the caller has it already.
    """
    issuer_der = cert.issuer.public_bytes() if issuer_der is None else issuer_der
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
    child: x509.Certificate, issuer: x509.Certificate, *, is_ca: bool, sha1_end_entities: bool
) -> bool | None:
    """Whether ``issuer``'s key signed ``child``; ``None`` when refused only for SHA-1."""
    if not _signed_with_sha1(child):
        try:
            child.verify_directly_issued_by(issuer)
            return True
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            return False  # a bad signature, an algorithm or key type refused, another name
    if child.issuer != issuer.subject:
        return False
    allowed = _is_legacy_sha1_ca(child) if is_ca else sha1_end_entities
    if not allowed:
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


def _signed_with_sha1(cert: x509.Certificate) -> bool:
    """Whether ``cert``'s signature uses SHA-1 (PKCS#1 v1.5, ECDSA, or RSA-PSS over SHA-1)."""
    oid = cert.signature_algorithm_oid
    if oid in _SHA1_SIGNATURES:
        return True
    if oid != SignatureAlgorithmOID.RSASSA_PSS:
        return False
    try:
        return isinstance(cert.signature_hash_algorithm, hashes.SHA1)
    except UnsupportedAlgorithm:
        return False


def _is_legacy_sha1_ca(cert: x509.Certificate) -> bool:
    return cert.fingerprint(hashes.SHA256()).hex() in LEGACY_SHA1_CA_FINGERPRINTS
