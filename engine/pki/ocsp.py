"""OCSP (RFC 6960) without I/O: the request to send, and the checks of the answer (DESIGN.md §4a).

:func:`build_request` makes the DER of a request for one certificate: the CertID hashed with
SHA-1 as the RFC 5019 profile expects, and a nonce extension (RFC 8954) when one is given.
:func:`read_response` checks the DER that came back and returns an :class:`OcspAnswer`:

1. at most :data:`MAX_RESPONSE_BYTES`, a readable OCSPResponse, ``responseStatus`` successful;
2. signed by the issuing CA's key, or by a delegated responder certificate carried in the
   response, identified by its responder ID, issued (signature-verified) by the issuing CA,
   carrying id-kp-OCSPSigning and valid at ``at``; RSA PKCS#1 v1.5, ECDSA or EdDSA, never
   with SHA-1 (RSASSA-PSS is refused: cryptography does not give its parameters);
3. a single response whose CertID names the certificate: serial number, issuer name hash and
   issuer key hash (SHA-1, or the SHA-2 family should a responder answer with it); several
   that name it must agree;
4. the nonce: equal when the responder echoes it, present when ``require_nonce``;
5. ``thisUpdate`` not after ``at`` + ``skew``, ``nextUpdate`` (when present) not before ``at``,
   and, with ``max_age``, ``thisUpdate`` not older than ``at - max_age``.

Every failure gives an ``unknown`` answer whose ``problem`` (an :class:`OcspProblem`, stable)
says which check failed and whose ``detail`` explains it to a person; nothing about the response
raises. A refused response is ``unknown`` even when it says ``revoked``; the answer keeps its
DER as evidence. Only a caller's mistake raises (``ValueError``: a naive ``at``,
``require_nonce`` without a nonce, an empty or oversized nonce). The issuer is identified by
key, never by name alone: GPKI CA generations share one name (DOMAIN.md §9).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from engine.pki.der import SEQUENCE, DerError, DerReader, nth
from engine.pki.revocation import RevocationStatus

MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Responses larger than this are refused unread (DESIGN.md §4a: OCSP ≤ 64 KiB)."""

NONCE_BYTES: Final = 32
"""The nonce length callers should send (RFC 8954 allows 1 to 32 octets; Web eID sends 32)."""

DEFAULT_SKEW: Final = timedelta(minutes=5)
"""How far ``thisUpdate`` may lie in the future (clocks differ)."""

_BIT_STRING: Final = 0x03
_CERT_ID_HASHES: Final = {  # the CertID hash algorithms RFC 6960 responders use
    "sha1": hashlib.sha1,
    "sha224": hashlib.sha224,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_SIGNATURE_FAILURES: Final = (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm)


OcspStatus = RevocationStatus
"""An OCSP answer's status is a revocation status: good, revoked or unknown."""


class OcspProblem(StrEnum):
    """Why a response was not believed (the answer is then ``unknown``)."""

    TOO_LARGE = "too_large"  # over MAX_RESPONSE_BYTES
    MALFORMED = "malformed"  # not a DER OCSPResponse (or an unknown critical extension)
    UNSUCCESSFUL = "unsuccessful"  # responseStatus malformedRequest, tryLater, ...
    RESPONDER_UNKNOWN = "responder_unknown"  # neither the CA nor an included certificate
    RESPONDER_NOT_ISSUED_BY_CA = "responder_not_issued_by_ca"
    RESPONDER_NOT_OCSP_SIGNER = "responder_not_ocsp_signer"  # no id-kp-OCSPSigning
    RESPONDER_NOT_VALID = "responder_not_valid"  # the responder certificate, at ``at``
    SIGNATURE_INVALID = "signature_invalid"
    CERT_ID_MISMATCH = "cert_id_mismatch"  # no single response names this certificate
    AMBIGUOUS = "ambiguous"  # several single responses name it and disagree
    NONCE_MISSING = "nonce_missing"
    NONCE_MISMATCH = "nonce_mismatch"
    NOT_YET_VALID = "not_yet_valid"  # thisUpdate after at + skew
    STALE = "stale"  # nextUpdate before at
    TOO_OLD = "too_old"  # thisUpdate before at - max_age


ResponderKind = Literal["ca", "delegated"]
"""Who signed a believed response: the issuing CA itself, or a delegated responder."""


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    """What one OCSP response says about one certificate, with the response as evidence.

    A believed response fills ``this_update`` .. ``signer`` and leaves ``problem`` ``None``
    (its status may still be ``unknown``: the responder does not know the certificate). A
    response that failed a check is ``unknown`` with ``problem`` and ``detail`` set and the
    time fields ``None``; ``der`` is what was read (empty when it was too large to read).
    """

    status: OcspStatus
    der: bytes
    problem: OcspProblem | None = None
    detail: str = ""
    this_update: datetime | None = None
    next_update: datetime | None = None
    produced_at: datetime | None = None
    reason: x509.ReasonFlags | None = None
    revoked_at: datetime | None = None
    signer: ResponderKind | None = None

    @property
    def is_hold(self) -> bool:
        """A revocation by ``certificateHold``: it may be lifted, so it is never final."""
        return (
            self.status is OcspStatus.REVOKED and self.reason is x509.ReasonFlags.certificate_hold
        )


class _Refused(Exception):
    """A check failed: becomes an ``unknown`` answer (never leaves this module)."""

    def __init__(self, problem: OcspProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


def build_request(
    certificate: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None
) -> bytes:
    """The DER of an OCSP request for ``certificate`` (issued by ``issuer``): SHA-1 CertID,
    and a non-critical nonce extension holding ``nonce`` (``secrets.token_bytes(NONCE_BYTES)``
    from the caller) unless it is ``None``."""
    if certificate.issuer != issuer.subject:
        raise ValueError("the certificate was not issued by this issuer (names differ)")
    builder = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
    if nonce is not None:
        _check_nonce_size(nonce)
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def read_response(
    der: bytes,
    *,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    nonce: bytes | None,
    at: datetime,
    require_nonce: bool = False,
    skew: timedelta = DEFAULT_SKEW,
    max_age: timedelta | None = None,
) -> OcspAnswer:
    """Check ``der`` (the body the responder returned) as the answer about ``certificate`` from
    its issuing CA ``issuer`` at ``at`` (see the module docstring for the checks).

    ``nonce`` is the one the request carried; ``None`` when it carried none, or when a stored
    response is read again (an echoed nonce is then not compared). ``require_nonce`` refuses a
    response that does not echo ``nonce``: pre-signed responses served from a cache do not.
    """
    if at.tzinfo is None:
        raise ValueError("at must be an aware datetime")
    if require_nonce and nonce is None:
        raise ValueError("require_nonce needs the nonce the request carried")
    if len(der) > MAX_RESPONSE_BYTES:
        detail = f"{len(der)} bytes, more than {MAX_RESPONSE_BYTES}"
        return OcspAnswer(OcspStatus.UNKNOWN, b"", OcspProblem.TOO_LARGE, detail)
    try:
        return _read(der, certificate, issuer, nonce, at, require_nonce, skew, max_age)
    except _Refused as refused:
        return OcspAnswer(OcspStatus.UNKNOWN, der, refused.problem, refused.detail)


def _read(
    der: bytes,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    nonce: bytes | None,
    at: datetime,
    require_nonce: bool,
    skew: timedelta,
    max_age: timedelta | None,
) -> OcspAnswer:
    response = _load(der)
    signer = _check_signature(response, issuer, at)
    single = _single_response(response, certificate, issuer)
    _check_nonce(response, nonce, require_nonce)
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > at + skew:
        raise _Refused(OcspProblem.NOT_YET_VALID, f"thisUpdate {this_update} is after {at}")
    if next_update is not None and next_update < at:
        raise _Refused(OcspProblem.STALE, f"nextUpdate {next_update} is before {at}")
    if max_age is not None and this_update < at - max_age:
        raise _Refused(OcspProblem.TOO_OLD, f"thisUpdate {this_update} is older than {max_age}")
    status = {
        ocsp.OCSPCertStatus.GOOD: OcspStatus.GOOD,
        ocsp.OCSPCertStatus.REVOKED: OcspStatus.REVOKED,
        ocsp.OCSPCertStatus.UNKNOWN: OcspStatus.UNKNOWN,
    }[single.certificate_status]
    revoked = status is OcspStatus.REVOKED
    return OcspAnswer(
        status,
        der,
        this_update=this_update,
        next_update=next_update,
        produced_at=response.produced_at_utc,
        reason=(single.revocation_reason or x509.ReasonFlags.unspecified) if revoked else None,
        revoked_at=single.revocation_time_utc if revoked else None,
        signer=signer,
    )


def _load(der: bytes) -> ocsp.OCSPResponse:
    """The parsed response, successful, every part readable, every critical extension known.

    cryptography parses the parts of a response when they are first asked for: each one used
    later is read here once, so that a damaged part is ``malformed`` rather than an exception.
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
    except Exception as exc:
        raise _Refused(OcspProblem.MALFORMED, "not a DER OCSPResponse") from exc
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        name = response.response_status.name.lower()
        raise _Refused(OcspProblem.UNSUCCESSFUL, f"responseStatus {name}")
    part = "the response data"
    try:
        _ = (response.responder_name, response.responder_key_hash, response.produced_at_utc)
        _ = (response.tbs_response_bytes, response.signature, response.signature_algorithm_oid)
        part = "the certificates"
        _ = response.certificates
        part = "a single response"
        singles = list(response.responses)
        for single in singles:
            _ = (single.serial_number, single.issuer_name_hash, single.issuer_key_hash)
            _ = (single.certificate_status, single.this_update_utc, single.next_update_utc)
            _ = (single.revocation_time_utc, single.revocation_reason)
        part = "the extensions"
        extensions = list(response.extensions)
        if len(singles) == 1:  # with several, cryptography cannot show their extensions
            extensions += list(response.single_extensions)
    except ValueError as exc:
        raise _Refused(OcspProblem.MALFORMED, f"unreadable {part}") from exc
    for extension in extensions:
        if extension.critical and isinstance(extension.value, x509.UnrecognizedExtension):
            raise _Refused(
                OcspProblem.MALFORMED, f"unknown critical extension {extension.oid.dotted_string}"
            )
    return response


# -- who signed it ------------------------------------------------------------------------------


def _check_signature(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, at: datetime
) -> ResponderKind:
    """Who signed ``response``: the issuing CA or a delegated responder it authorised.

    The candidates are the issuer and the certificates the response carries that match its
    responder ID; the first that is authorised and whose key verifies the signature wins,
    otherwise the first candidate's failure is reported.
    """
    candidates = [c for c in (issuer, *response.certificates) if _is_responder(response, c)]
    if not candidates:
        raise _Refused(
            OcspProblem.RESPONDER_UNKNOWN,
            f"responder {_responder_id(response)} is neither the issuing CA nor a certificate "
            "in the response",
        )
    issuer_spki = _spki(issuer)
    failure: _Refused | None = None
    for candidate in candidates:
        spki = _spki(candidate)
        signer: ResponderKind = "ca" if spki and spki == issuer_spki else "delegated"
        try:
            if signer == "delegated":
                _check_delegation(candidate, issuer, at)
            _verify(response, candidate)
        except _Refused as refused:
            failure = failure or refused
            continue
        return signer
    assert failure is not None
    raise failure


def _is_responder(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """Whether ``cert`` is the one the responder ID names (byName or byKey); an unreadable
    certificate the response carries is not."""
    try:
        if response.responder_name is not None:
            return cert.subject == response.responder_name
        return _key_hash(cert, "sha1") == response.responder_key_hash
    except ValueError:
        return False


def _responder_id(response: ocsp.OCSPResponse) -> str:
    if response.responder_name is not None:
        return _name(response.responder_name)
    key_hash = response.responder_key_hash or b""
    return f"key {key_hash.hex()}"


def _check_delegation(responder: x509.Certificate, issuer: x509.Certificate, at: datetime) -> None:
    """``responder`` is a delegated OCSP signer of ``issuer`` valid at ``at`` (RFC 6960 4.2.2.2)."""
    who = _name(responder.subject)
    try:
        responder.verify_directly_issued_by(issuer)
    except _SIGNATURE_FAILURES as exc:
        raise _Refused(
            OcspProblem.RESPONDER_NOT_ISSUED_BY_CA,
            f"responder certificate {who} was not issued by the issuing CA",
        ) from exc
    try:
        usages = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    except Exception as exc:
        raise _Refused(
            OcspProblem.RESPONDER_NOT_OCSP_SIGNER, f"responder certificate {who}: unreadable EKU"
        ) from exc
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise _Refused(
            OcspProblem.RESPONDER_NOT_OCSP_SIGNER,
            f"responder certificate {who} lacks id-kp-OCSPSigning",
        )
    if not responder.not_valid_before_utc <= at <= responder.not_valid_after_utc:
        raise _Refused(
            OcspProblem.RESPONDER_NOT_VALID,
            f"responder certificate {who} is valid {responder.not_valid_before_utc} .. "
            f"{responder.not_valid_after_utc}, not at {at}",
        )


def _verify(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """The signature over ``tbsResponseData`` verifies with ``signer``'s key: RSA PKCS#1 v1.5,
    ECDSA or EdDSA, never with SHA-1 (RSASSA-PSS: cryptography cannot read its parameters)."""
    try:
        algorithm = response.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        oid = response.signature_algorithm_oid.dotted_string
        raise _Refused(
            OcspProblem.SIGNATURE_INVALID, f"unsupported signature algorithm {oid}"
        ) from exc
    if isinstance(algorithm, hashes.SHA1):
        raise _Refused(OcspProblem.SIGNATURE_INVALID, "SHA-1 signatures are not accepted")
    data, signature = response.tbs_response_bytes, response.signature
    try:
        key = signer.public_key()
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        elif algorithm is None:
            raise ValueError("no hash algorithm for this key")
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            raise TypeError(f"unsupported key type {type(key).__name__}")
    except _SIGNATURE_FAILURES as exc:
        raise _Refused(
            OcspProblem.SIGNATURE_INVALID,
            f"the signature does not verify with the key of {_name(signer.subject)}",
        ) from exc


# -- which certificate it is about ---------------------------------------------------------------


def _single_response(
    response: ocsp.OCSPResponse, certificate: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    """The single response whose CertID names ``certificate`` as issued by ``issuer``.

    Several that name it must agree (openssl/openssl#32376: OpenSSL believes the first).
    """
    seen: list[int] = []
    found: list[ocsp.OCSPSingleResponse] = []
    for single in response.responses:
        seen.append(single.serial_number)
        if _names(single, certificate, issuer):
            found.append(single)
    if not found:
        about = ", ".join(f"{serial:x}" for serial in seen[:3]) + (", …" if seen[3:] else "")
        raise _Refused(
            OcspProblem.CERT_ID_MISMATCH,
            f"the response is about serial {about or 'nothing'}, not serial "
            f"{certificate.serial_number:x} of {_name(issuer.subject)}",
        )
    statuses = {(s.certificate_status, s.revocation_time_utc, s.revocation_reason) for s in found}
    if len(statuses) > 1:
        raise _Refused(
            OcspProblem.AMBIGUOUS,
            f"{len(found)} single responses about the certificate disagree",
        )
    return found[0]


def _names(
    single: ocsp.OCSPSingleResponse, certificate: x509.Certificate, issuer: x509.Certificate
) -> bool:
    """Whether the CertID of ``single`` is that of ``certificate`` issued by ``issuer``."""
    if single.serial_number != certificate.serial_number:
        return False
    try:
        algorithm = single.hash_algorithm.name
    except UnsupportedAlgorithm:
        return False
    if algorithm not in _CERT_ID_HASHES:
        return False
    name_hash = _CERT_ID_HASHES[algorithm](issuer.subject.public_bytes()).digest()
    return single.issuer_name_hash == name_hash and single.issuer_key_hash == _key_hash(
        issuer, algorithm
    )


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes | None, require: bool) -> None:
    try:
        echoed: bytes | None = response.extensions.get_extension_for_class(
            x509.OCSPNonce
        ).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    if echoed is None:
        if require:
            raise _Refused(OcspProblem.NONCE_MISSING, "the responder did not echo the nonce")
        return
    if nonce is not None and echoed != nonce:
        raise _Refused(OcspProblem.NONCE_MISMATCH, "the echoed nonce is not the one sent")


def _check_nonce_size(nonce: bytes) -> None:
    if not 1 <= len(nonce) <= NONCE_BYTES:
        raise ValueError(f"a nonce has 1 to {NONCE_BYTES} bytes, not {len(nonce)}")


def _key_hash(cert: x509.Certificate, algorithm: str) -> bytes:
    """The hash of the subjectPublicKey BIT STRING's value (without its unused-bits octet)."""
    spki = _spki(cert)
    if not spki:
        return b""
    reader = DerReader(spki)
    try:
        parts = reader.parts(reader.element(), SEQUENCE)
        bits = reader.body(nth(parts, 1), _BIT_STRING)[1:]
    except DerError:  # cryptography wrote it: cannot happen
        return b""
    return _CERT_ID_HASHES[algorithm](bits).digest()


def _spki(cert: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo DER; empty for a key cryptography cannot load."""
    try:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, UnsupportedAlgorithm):
        return b""


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except Exception:
        return "an unreadable name"
