"""Certificate revocation lists, indexed once for O(1) lookups (pure; DESIGN.md §10).

A :class:`RevocationIndex` is built from the configured (or cached) CRLs each time they are
refreshed: every CRL's signature is checked against its issuer from the :class:`TrustStore`, the
newest CRL per issuer key (and per partition, when the CRL has an issuingDistributionPoint) is
kept, and the revoked serial numbers become one frozenset per issuer key. Keys, not names, identify
an issuer: MOICA G2 and G3 share a DN but not a key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from engine._errors import CertificateError, ErrorCode, RefusedError
from engine.pki.certificate import BoundedMemo
from engine.pki.trust import TrustStore

MAX_CRL_BYTES = 64 * 1024 * 1024
"""A full MOICA G2 CRL is about 20 MB; anything beyond this is refused as not a CRL."""

_ISSUER_KEYS = (  # no DSA: no CA we trust signs with it, and cryptography deprecates it
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)

IssuerKey = bytes
"""SHA-256 of the issuer's SubjectPublicKeyInfo: what a CRL and its certificates share."""


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from DER or PEM bytes; anything else → ``not_a_certificate`` ("not a CRL")."""
    if len(data) > MAX_CRL_BYTES:
        raise RefusedError(ErrorCode.FILE_TOO_LARGE, detail="CRL too large")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except Exception as exc:
        raise RefusedError(ErrorCode.NOT_A_CERTIFICATE, detail="not a CRL") from exc


def issuer_key(issuer: x509.Certificate) -> IssuerKey:
    """The index key of ``issuer``: SHA-256 of its SubjectPublicKeyInfo."""
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    """The newest CRL of one issuer key and partition."""

    number: int | None
    this_update: datetime
    serials: frozenset[int]
    partitioned: bool

    def newer_than(self, other: _Entry) -> bool:
        mine = (-1 if self.number is None else self.number, self.this_update)
        theirs = (-1 if other.number is None else other.number, other.this_update)
        return mine > theirs


class RevocationIndex:
    """Revoked serial numbers per issuer key; ``is_revoked`` is a dict and a set lookup."""

    def __init__(
        self,
        revoked: Mapping[IssuerKey, frozenset[int]],
        numbers: Mapping[IssuerKey, int | None],
    ) -> None:
        self._revoked = MappingProxyType(dict(revoked))
        self._numbers = MappingProxyType(dict(numbers))
        # issuer → key, by identity (hashing a Certificate serialises it); holding the issuer
        # keeps its id from being reused while the entry exists
        self._keys: BoundedMemo[int, tuple[x509.Certificate, IssuerKey]] = BoundedMemo(256)

    @classmethod
    def empty(cls) -> RevocationIndex:
        return cls({}, {})

    @classmethod
    def build(
        cls,
        crls: Iterable[x509.CertificateRevocationList],
        trust: TrustStore,
        *,
        issuers: Sequence[x509.Certificate] = (),
    ) -> RevocationIndex:
        """Verify every CRL and index the newest one per issuer key (and partition).

        The issuer is looked up in ``trust`` (plus ``issuers``) by name and AKI; it must chain to
        a trust anchor, may sign CRLs (cRLSign when keyUsage is present) and must have signed
        the CRL, otherwise ``CertificateError("certificate_untrusted")``. Delta CRLs are refused
        (``not_a_certificate``): configure complete CRLs.
        """
        newest: dict[tuple[IssuerKey, bytes], _Entry] = {}
        for crl in crls:
            key, partition = _verified_issuer(crl, trust, issuers)
            entry = _Entry(
                number=_crl_number(crl),
                this_update=crl.last_update_utc,
                serials=frozenset(r.serial_number for r in crl),
                partitioned=bool(partition),
            )
            slot = (key, partition)
            if slot not in newest or entry.newer_than(newest[slot]):
                newest[slot] = entry
        revoked: dict[IssuerKey, frozenset[int]] = {}
        complete: dict[IssuerKey, int | None] = {}
        partitions: dict[IssuerKey, int | None] = {}
        for (key, _), entry in newest.items():
            revoked[key] = revoked.get(key, frozenset()) | entry.serials
            if not entry.partitioned:
                complete[key] = entry.number
            else:
                numbers_seen = (partitions.get(key), entry.number)
                partitions[key] = max((n for n in numbers_seen if n is not None), default=None)
        numbers = {**partitions, **complete}
        return cls(revoked, numbers)

    def covers(self, issuer: x509.Certificate) -> bool:
        """Whether a CRL of ``issuer`` was loaded (when not, revocation is not known)."""
        return bool(self._revoked) and self._key(issuer) in self._revoked

    def is_revoked(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Whether ``issuer``'s CRL lists ``cert``'s serial number."""
        if not self._revoked:
            return False
        serials = self._revoked.get(self._key(issuer))
        return serials is not None and cert.serial_number in serials

    def crl_number_for(self, issuer: x509.Certificate) -> int | None:
        """The CRL number of ``issuer``'s complete CRL (or newest partition), if any."""
        if not self._numbers:
            return None
        return self._numbers.get(self._key(issuer))

    def _key(self, issuer: x509.Certificate) -> IssuerKey:
        known = self._keys.get(id(issuer))
        if known is not None and known[0] is issuer:
            return known[1]
        key = issuer_key(issuer)
        self._keys.put(id(issuer), (issuer, key))
        return key


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _verified_issuer(
    crl: x509.CertificateRevocationList,
    trust: TrustStore,
    issuers: Sequence[x509.Certificate],
) -> tuple[IssuerKey, bytes]:
    """The issuer key and partition (issuingDistributionPoint DER, or ``b""``) of ``crl``."""
    try:
        extensions = crl.extensions
    except Exception as exc:
        raise RefusedError(ErrorCode.NOT_A_CERTIFICATE, detail="not a CRL") from exc
    partition = b""
    aki: bytes | None = None
    for ext in extensions:
        if isinstance(ext.value, x509.DeltaCRLIndicator):
            raise RefusedError(ErrorCode.NOT_A_CERTIFICATE, detail="delta CRLs are not supported")
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            partition = ext.value.public_bytes()
        if isinstance(ext.value, x509.AuthorityKeyIdentifier):
            aki = ext.value.key_identifier
    issuer_name = _name(crl)
    for candidate in trust.issuer_candidates(crl.issuer, aki, extra=issuers):
        if not _may_sign_crls(candidate):
            continue
        try:
            key = candidate.public_key()
            if not isinstance(key, _ISSUER_KEYS) or not crl.is_signature_valid(key):
                continue
        except Exception:  # an unsupported algorithm: this candidate did not sign it
            continue
        try:
            trust.build_path(candidate, extra=issuers)
        except CertificateError:
            continue
        return issuer_key(candidate), partition
    raise CertificateError(
        ErrorCode.CERTIFICATE_UNTRUSTED,
        detail=f"CRL of {issuer_name}: no trusted issuer verifies its signature",
    )


def _may_sign_crls(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except Exception:
        return False
    return usage.crl_sign


def _name(crl: x509.CertificateRevocationList) -> str:
    try:
        return crl.issuer.rfc4514_string()
    except Exception:
        return "an unreadable issuer"
