"""OpenSSL's own OCSP responder for tests: ``openssl ocsp -index … -port …`` as a subprocess.

**Test material only.** The responder answers for one test CA from an OpenSSL CA database
(``index.txt``) written from the certificates it is told about::

    with OcspResponder(tmp_path, pki.ca(IssuerCA.MOICA), good=[card], revoked=[
        Revocation(other, at, x509.ReasonFlags.key_compromise),
    ], next_update=timedelta(minutes=5)) as responder:
        httpx.post(responder.url, content=request_der,
                   headers={"Content-Type": "application/ocsp-request"})

It signs with the CA's key, or with a delegated responder certificate (:func:`issue_ocsp_signer`
makes one, or a faulty one for refusal tests). Certificates it is not told about are ``unknown``.
OpenSSL 3.0's ``-port`` takes a port only, so the responder listens on every interface; the
port is picked free on loopback and :attr:`OcspResponder.url` points at ``127.0.0.1``. The
responder is ready when it has answered a real request; :meth:`OcspResponder.stop` ends it by
its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Final

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.core.declarations import IssuerCA
from engine.testing.pki import IssuedCard, TestCA, TestPKI, _new_key, _second, _test_policy
from engine.testing.ports import free_port

STARTUP_TIMEOUT: Final = 15.0
"""Seconds to wait for the responder's first answer."""

_OPENSSL_REASONS: Final = {  # the reason names OpenSSL's index.txt knows (apps/lib/apps.c)
    x509.ReasonFlags.unspecified: "unspecified",
    x509.ReasonFlags.key_compromise: "keyCompromise",
    x509.ReasonFlags.ca_compromise: "CACompromise",
    x509.ReasonFlags.affiliation_changed: "affiliationChanged",
    x509.ReasonFlags.superseded: "superseded",
    x509.ReasonFlags.cessation_of_operation: "cessationOfOperation",
    x509.ReasonFlags.certificate_hold: "certificateHold,holdInstructionReject",
    x509.ReasonFlags.remove_from_crl: "removeFromCRL",
}


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked certificate as the CA database records it: when, and why (``None``: no
    reason given, which the responder sends as no reason at all)."""

    certificate: x509.Certificate | IssuedCard
    at: datetime
    reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise


def issue_ocsp_signer(
    pki: TestPKI,
    ca: TestCA,
    *,
    issuer: TestCA | None = None,
    ocsp_signing: bool = True,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
) -> IssuedCard:
    """A delegated OCSP responder certificate for ``ca``: issued by ``issuer`` (default ``ca``),
    with id-kp-OCSPSigning (``ocsp_signing=False``: id-kp-clientAuth instead), valid one day
    before ``pki.now`` to 30 days after unless told otherwise, carrying the test policy. Another
    ``issuer``, no OCSPSigning or another validity make refusal material."""
    signer = issuer or ca
    key = _new_key(pki.key_type)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    *ca.name.get_attributes_for_oid(NameOID.COUNTRY_NAME),
                    *ca.name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME),
                    x509.NameAttribute(NameOID.COMMON_NAME, "swreg TEST OCSP responder (測試用)"),
                ]
            )
        )
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_second(valid_from or pki.now - timedelta(days=1)))
        .not_valid_after(_second(valid_to or pki.now + timedelta(days=30)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(signer.key_identifier, None, None), False)
        .add_extension(_test_policy(), critical=False)
    )
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    certificate = builder.sign(signer.key, hashes.SHA256())
    family = ca.family or signer.family or IssuerCA.UNKNOWN
    return IssuedCard(certificate, key, family, (signer.certificate,))


def index_text(
    good: Iterable[x509.Certificate | IssuedCard] = (), revoked: Iterable[Revocation] = ()
) -> str:
    """An OpenSSL CA database (``index.txt``): one ``V`` line per good certificate, one ``R``
    line (revocation time and reason) per revocation, tab-separated as ``openssl ca`` writes."""
    lines = [_index_line(_certificate(item), None) for item in good]
    lines += [_index_line(_certificate(r.certificate), r) for r in revoked]
    return "".join(lines)


class OcspResponder:
    """``openssl ocsp`` answering for ``ca`` on a free port (a context manager).

    ``signer`` signs the responses (default: the CA itself); ``next_update`` becomes ``-nmin``
    or ``-ndays`` (whole minutes; ``None``: responses carry no nextUpdate);
    ``include_certificates=False`` adds ``-resp_no_certs``, ``by_key=True`` ``-resp_key_id``
    (responder ID by key hash), ``digest`` ``-rmd`` (the signature's hash, e.g. ``sha1``),
    each of ``signature_options`` ``-rsigopt`` (e.g. ``rsa_padding_mode:pss``); ``port``
    listens there instead of on a free port picked at start (see :func:`free_port`).
    (``-rcid`` is left out: OpenSSL 3.0 then answers with serial 0, openssl/openssl#31070.)
    """

    def __init__(
        self,
        directory: str | Path,
        ca: TestCA,
        *,
        good: Iterable[x509.Certificate | IssuedCard] = (),
        revoked: Iterable[Revocation] = (),
        signer: TestCA | IssuedCard | None = None,
        next_update: timedelta | None = timedelta(hours=1),
        include_certificates: bool = True,
        by_key: bool = False,
        digest: str | None = None,
        signature_options: Sequence[str] = (),
        port: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.ca = ca
        self.signer = signer or ca
        self.next_update = next_update
        self.include_certificates = include_certificates
        self.by_key = by_key
        self.digest = digest
        self.signature_options = tuple(signature_options)
        self.port = port or 0
        self._fixed_port = port
        self._good = list(good)
        self._revoked = list(revoked)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.directory / "ocsp-responder.log"

    def __enter__(self) -> OcspResponder:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Write the files, start ``openssl ocsp`` and wait until it answers a request."""
        if self._process is not None:
            raise RuntimeError("the responder is already running")
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl is not installed (Makefile APT_PACKAGES)")
        self.directory.mkdir(parents=True, exist_ok=True)
        files = self._write_files()
        for _attempt in range(5):  # a port picked free may be taken before openssl binds it
            self.port = self._fixed_port or free_port()
            self._log = self.log_path.open("ab")
            self._process = subprocess.Popen(
                [openssl, "ocsp", *files, "-port", str(self.port), *self._options()],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"openssl ocsp did not start: {self._log_tail()}")

    def stop(self) -> None:
        """Stop the responder (SIGTERM, then SIGKILL after 5 s) and close its log."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- internals ---------------------------------------------------------------------------

    def _write_files(self) -> list[str]:
        index = self.directory / "index.txt"
        index.write_text(index_text(self._good, self._revoked), encoding="utf-8")
        (self.directory / "index.txt.attr").write_text("unique_subject = no\n")
        ca_pem = self.directory / "ca.pem"
        ca_pem.write_bytes(self.ca.certificate.public_bytes(serialization.Encoding.PEM))
        signer_pem = self.directory / "responder.pem"
        signer_pem.write_bytes(self.signer.certificate.public_bytes(serialization.Encoding.PEM))
        key_pem = self.directory / "responder-key.pem"
        key_pem.touch(mode=0o600)
        key_pem.write_bytes(
            self.signer.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths = {"-index": index, "-CA": ca_pem, "-rsigner": signer_pem, "-rkey": key_pem}
        return [part for option, path in paths.items() for part in (option, str(path))]

    def _options(self) -> list[str]:
        options = ["-timeout", "5", "-ignore_err"]
        if self.next_update is not None:
            minutes = int(self.next_update.total_seconds() // 60)
            if minutes < 1:
                raise ValueError("next_update is whole minutes, at least one")
            if minutes % (24 * 60) == 0:
                options += ["-ndays", str(minutes // (24 * 60))]
            else:
                options += ["-nmin", str(minutes)]
        if not self.include_certificates:
            options.append("-resp_no_certs")
        if self.by_key:
            options.append("-resp_key_id")
        if self.digest is not None:
            options += ["-rmd", self.digest]
        for option in self.signature_options:
            options += ["-rsigopt", option]
        return options

    def _wait_ready(self) -> bool:
        """Whether the responder answered a request (for a serial it does not know) in time."""
        probe = (
            ocsp.OCSPRequestBuilder()
            .add_certificate_by_hash(b"\0" * 20, b"\0" * 20, 1, hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                reply = httpx.post(
                    self.url,
                    content=probe,
                    headers={"Content-Type": "application/ocsp-request"},
                    timeout=2.0,
                )
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            # still running: not another program's answer on a port openssl failed to bind
            return reply.status_code == 200 and self._process.poll() is None
        return False

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def _index_line(certificate: x509.Certificate, revocation: Revocation | None) -> str:
    serial = f"{certificate.serial_number:X}"
    serial = "0" * (len(serial) % 2) + serial  # OpenSSL looks serials up as BN_bn2hex writes them
    expires = _openssl_time(certificate.not_valid_after_utc)
    subject = "".join(
        f"/{attribute.rfc4514_attribute_name}={attribute.value!s}"
        for attribute in certificate.subject
    )
    if revocation is None:
        return f"V\t{expires}\t\t{serial}\tunknown\t{subject}\n"
    revoked = _openssl_time(revocation.at)
    if revocation.reason is not None:
        if revocation.reason not in _OPENSSL_REASONS:
            raise ValueError(f"OpenSSL's index cannot record {revocation.reason.value}")
        revoked += "," + _OPENSSL_REASONS[revocation.reason]
    return f"R\t{expires}\t{revoked}\t{serial}\tunknown\t{subject}\n"


def _openssl_time(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    pattern = "%y%m%d%H%M%SZ" if 1950 <= utc.year < 2050 else "%Y%m%d%H%M%SZ"
    return utc.strftime(pattern)


def _certificate(item: x509.Certificate | IssuedCard) -> x509.Certificate:
    return item.certificate if isinstance(item, IssuedCard) else item
