"""Raw signatures with SHA-256: the one check behind the card check and Turnkey.

A :class:`SignatureKey` wraps an RSA or EC public key once and answers whether a signature
verifies, over a message or over its SHA-256 digest (prehashed):

- RSA: PKCS#1 v1.5;
- ECDSA: DER, or raw ``r ‖ s`` (each the curve's byte size, as PKCS#11 and many card
  middlewares return it). A ``2 × size`` signature is tried as ``r ‖ s`` first and, when that
  fails and it starts like a SEQUENCE, as DER (a DER signature can have that length too).

Users: :func:`engine.pki.certificate_checks.verify_signature` (card check, login, renewal, the
customs possession proof) and the Turnkey verifier, whose hot path keeps one ``SignatureKey``
per registered certificate: the curve size and the algorithm objects are computed once.

:func:`key_file_signer` is the other side, for a private key file at hand (``swreg
customs-cert import --key``): it signs the way the check above verifies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

_PKCS1: Final = padding.PKCS1v15()
_SHA256: Final = hashes.SHA256()
_PREHASHED: Final = Prehashed(hashes.SHA256())
_ECDSA: Final = ec.ECDSA(_SHA256)
_ECDSA_PREHASHED: Final = ec.ECDSA(_PREHASHED)
_FAILURES: Final = (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm)

Signer = Callable[[bytes], bytes]
"""Signs a message with SHA-256 (RSA PKCS#1 v1.5, ECDSA DER)."""


def key_file_signer(data: bytes, password: bytes | None = None) -> Signer | None:
    """A signer of the RSA or EC private key in ``data`` (PEM or DER, PKCS#8 or traditional,
    encrypted with ``password`` or not); ``None`` when it holds no such key or the password is
    wrong."""
    loaders = (serialization.load_pem_private_key, serialization.load_der_private_key)
    for load in loaders:
        try:
            key = load(data, password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        if isinstance(key, rsa.RSAPrivateKey):
            rsa_key = key
            return lambda message: rsa_key.sign(message, _PKCS1, _SHA256)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            ec_key = key
            return lambda message: ec_key.sign(message, _ECDSA)
        return None
    return None


class SignatureKey:
    """An RSA or EC public key that checks SHA-256 signatures (see the module docstring)."""

    __slots__ = ("_ec", "_ec_size", "_rsa")

    def __init__(self, key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> None:
        self._rsa: rsa.RSAPublicKey | None = None
        self._ec: ec.EllipticCurvePublicKey | None = None
        self._ec_size = 0  # bytes of r and of s in a raw signature
        if isinstance(key, rsa.RSAPublicKey):
            self._rsa = key
        else:
            self._ec = key
            self._ec_size = (key.curve.key_size + 7) // 8

    @classmethod
    def of(cls, key: PublicKeyTypes) -> SignatureKey | None:
        """``key`` ready to check signatures; ``None`` for other key types (Ed25519, DSA, …)."""
        if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            return cls(key)
        return None

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's SHA-256 signature of ``message``."""
        return self._verifies(signature, message, _SHA256, _ECDSA)

    def verifies_digest(self, signature: bytes, digest: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``digest``, a SHA-256 digest."""
        return self._verifies(signature, digest, _PREHASHED, _ECDSA_PREHASHED)

    def _verifies(
        self,
        signature: bytes,
        data: bytes,
        algorithm: hashes.HashAlgorithm | Prehashed,
        ecdsa: ec.ECDSA,
    ) -> bool:
        try:
            if self._rsa is not None:
                self._rsa.verify(signature, data, _PKCS1, algorithm)
                return True
            key = self._ec
            if key is None:
                return False
            size = self._ec_size
            if len(signature) == 2 * size:  # raw r ‖ s, as PKCS#11 returns it
                raw = encode_dss_signature(
                    int.from_bytes(signature[:size], "big"),
                    int.from_bytes(signature[size:], "big"),
                )
                try:
                    key.verify(raw, data, ecdsa)
                    return True
                except InvalidSignature:
                    if signature[:1] != b"\x30":
                        return False
            key.verify(signature, data, ecdsa)  # DER
            return True
        except _FAILURES:
            return False
