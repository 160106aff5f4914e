"""A software card: a PKCS#12 file whose password is the PIN (``virtual:FILE.p12``).

It behaves like a card as far as the card check can tell, with two differences, both because
the file is one encrypted container:

* the certificates are inside it, so :meth:`VirtualP12Card.read_certificate` and
  :meth:`VirtualP12Card.read_chain` need a verified PIN (a real card hands them out freely);
* a file has no retry counter, so a wrong PIN raises ``pin_incorrect`` with ``tries_left=None``
  and never locks.

The PIN itself is never kept: verifying it decrypts the container and the object keeps only the
decrypted key and certificates, which :meth:`VirtualP12Card.close` drops. Nothing is logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from engine import CardError, EnvironmentProblem, ErrorCode, UsageError

__all__ = ["MAX_FILE_SIZE", "SCHEME", "VirtualP12Card"]

SCHEME = "virtual"
MAX_FILE_SIZE = 1024 * 1024
"""Larger files are refused unread: a card's key and a few certificates take a few KiB."""

_PFX_VERSION = b"\x02\x01\x03"  # PFX ::= SEQUENCE { version INTEGER {v3(3)}, ... }


def _looks_like_pfx(data: bytes) -> bool:
    """Whether ``data`` starts like a DER/BER PKCS#12 ``PFX`` (RFC 7292 §4); decrypts nothing."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first == 0x80:  # BER indefinite length, as some older tools write
        start = 2
    elif first < 0x80:
        start, length = 2, first
        if start + length != len(data):
            return False
    else:
        size = first & 0x7F
        start = 2 + size
        if size > 4 or len(data) < start:
            return False
        length = int.from_bytes(data[2:start], "big")
        if start + length != len(data):
            return False
    return data[start : start + 3] == _PFX_VERSION


def _not_verified() -> CardError:
    return CardError(ErrorCode.CARD_ERROR, detail="PIN not verified")


class VirtualP12Card:
    """A card backed by a PKCS#12 file; the file's password is the PIN.

    Opening reads the file but decrypts nothing. Raises ``EnvironmentProblem("no_card")`` when
    the file cannot be read, ``UsageError("file_too_large")`` above :data:`MAX_FILE_SIZE` and
    ``CardError("card_error")`` when the file is not PKCS#12.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self.label = f"{SCHEME}:{self._path}"
        try:
            with self._path.open("rb") as f:
                data = f.read(MAX_FILE_SIZE + 1)
        except OSError as exc:
            detail = str(self._path) if exc.strerror is None else f"{self._path}: {exc.strerror}"
            raise EnvironmentProblem(ErrorCode.NO_CARD, detail=detail) from exc
        if len(data) > MAX_FILE_SIZE:
            raise UsageError(ErrorCode.FILE_TOO_LARGE, detail=f"{self._path} is larger than 1 MiB")
        if not _looks_like_pfx(data):
            raise CardError(ErrorCode.CARD_ERROR, detail=f"{self._path} is not a PKCS#12 file")
        self._data: bytes | None = data
        self._key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None
        self._certificate: bytes | None = None
        self._chain: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        state = "closed" if self._data is None else f"pin_verified={self._certificate is not None}"
        return f"<{type(self).__name__} {self.label!r} {state}>"

    def verify_pin(self, pin: str) -> None:
        """Decrypt the file with ``pin``; keep its key and certificates, not the PIN.

        Raises ``CardError("pin_incorrect", tries_left=None)`` on a wrong PIN (a file has no
        retry counter) and ``CardError("card_error")`` when the file lacks a key or certificate
        or they do not belong together.
        """
        data = self._open_data()
        self._forget()
        try:
            p12 = pkcs12.load_pkcs12(data, pin.encode("utf-8") or None)
        except ValueError as exc:
            raise CardError(ErrorCode.PIN_INCORRECT, tries_left=None) from exc
        key, cert = p12.key, p12.cert
        if key is None:
            raise CardError(ErrorCode.CARD_ERROR, detail="the PKCS#12 file holds no private key")
        if cert is None:
            raise CardError(ErrorCode.CARD_ERROR, detail="the PKCS#12 file holds no certificate")
        if cert.certificate.public_key() != key.public_key():
            raise CardError(
                ErrorCode.CARD_ERROR, detail="the certificate does not match the private key"
            )
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            self._key = key  # other key types verify the PIN but cannot sign
        self._certificate = cert.certificate.public_bytes(Encoding.DER)
        self._chain = tuple(c.certificate.public_bytes(Encoding.DER) for c in p12.additional_certs)

    def read_certificate(self) -> bytes:
        """The signing certificate's DER; needs a verified PIN (it is inside the container)."""
        self._open_data()
        if self._certificate is None:
            raise _not_verified()
        return self._certificate

    def read_chain(self) -> tuple[bytes, ...]:
        """DER of the other certificates in the file; needs a verified PIN."""
        self.read_certificate()
        return self._chain

    def sign(self, message: bytes) -> bytes:
        """SHA-256 and sign ``message``: RSA PKCS#1 v1.5, or ECDSA as a DER signature.

        Needs a verified PIN; keys other than RSA and EC raise ``CardError("card_error")``.
        """
        self.read_certificate()
        key = self._key
        try:
            if isinstance(key, rsa.RSAPrivateKey):
                return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key.sign(message, ec.ECDSA(hashes.SHA256()))
        except (TypeError, ValueError) as exc:
            raise CardError(ErrorCode.CARD_ERROR, detail="the key could not sign") from exc
        raise CardError(
            ErrorCode.CARD_ERROR, detail="the card's key is neither RSA nor EC; cannot sign"
        )

    def close(self) -> None:
        """Drop the decrypted key, the certificates and the file contents."""
        self._forget()
        self._data = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_data(self) -> bytes:
        if self._data is None:
            raise CardError(ErrorCode.CARD_ERROR, detail="the card is closed")
        return self._data

    def _forget(self) -> None:
        self._key = None
        self._certificate = None
        self._chain = ()
