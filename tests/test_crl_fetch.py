"""Reading CRLs (engine.pki.crl) and fetching them from a real local HTTP server (DESIGN.md §4a):
a partitioned CRL, one signed by the wrong key, a stale one, a truncated download."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine._errors import ErrorCode
from engine._settings import FetchHosts
from engine.core.declarations import IssuerCA
from engine.pki.crl import CrlOutcome, CrlRefused, read_crl
from engine.services.fetching import Fetcher, FetchOutcome
from engine.testing import IssuedCard, TestPKI
from engine.testing.http_server import LocalHTTPServer

from .revocation_support import der

NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
GRACE = timedelta(hours=6)
PARTITION = "http://127.0.0.1/crl/MOICA-G3-10-31.crl"


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


@pytest.fixture(scope="module")
def cards(pki: TestPKI) -> tuple[IssuedCard, IssuedCard, IssuedCard]:
    return pki.issue_person(), pki.issue_person(), pki.issue_person()


@pytest.fixture(scope="module")
def crls(pki: TestPKI, cards: tuple[IssuedCard, ...]) -> dict[str, bytes]:
    revoked, held, _ = cards
    moica = IssuerCA.MOICA
    other_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "partition": der(
            pki.crl(
                moica,
                [revoked],
                number=31,
                partition=[PARTITION],
                reason=x509.ReasonFlags.key_compromise,
            )
        ),
        "held": der(pki.crl(moica, [held], number=32, reason=x509.ReasonFlags.certificate_hold)),
        "wrong-key": der(pki.crl(moica, [revoked], number=33, signing_key=other_key)),
        "stale": der(
            pki.crl(
                moica,
                [revoked],
                number=30,
                this_update=NOW - timedelta(days=9),
                next_update=NOW - timedelta(days=2),
            )
        ),
    }


@pytest.fixture(scope="module")
def server(crls: dict[str, bytes]) -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer(hang_seconds=10) as running:
        for name, body in crls.items():
            running.serve(f"/crl/{name}.crl", body, etag=f'"{name}"')
        running.serve("/crl/cut.crl", crls["partition"], misbehaviour="truncate")
        running.serve("/crl/cut-quietly.crl", crls["partition"], misbehaviour="short_length")
        running.serve("/crl/cut-no-length.crl", crls["partition"][:-40], misbehaviour="no_length")
        running.redirect("/crl/moved.crl", running.url("/crl/partition.crl", host="localhost"))
        yield running


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(FetchHosts.parse("127.0.0.1,localhost")) as client:
        yield client


def fetch(fetcher: Fetcher, server: LocalHTTPServer, path: str, tmp_path: Path) -> bytes:
    """Download through the fetcher into a temporary file, as `revocation refresh` will."""
    url = server.url(path)
    with fetcher.download(url, timeout=5, directory=tmp_path) as result:
        assert result.outcome is FetchOutcome.FETCHED, result
        assert result.path is not None
        return result.path.read_bytes()


# -- a partitioned CRL, fetched ------------------------------------------------------------------


def test_partitioned_crl_fetched_read_and_verified(
    pki: TestPKI,
    cards: tuple[IssuedCard, ...],
    fetcher: Fetcher,
    server: LocalHTTPServer,
    tmp_path: Path,
) -> None:
    revoked, _, good = cards
    crl = read_crl(fetch(fetcher, server, "/crl/partition.crl", tmp_path))
    moica = pki.ca(IssuerCA.MOICA)
    info = crl.info
    assert info.issuer == moica.name and info.issuer_key_id == moica.key_identifier
    assert (info.number, info.entries, info.this_update) == (31, 1, NOW)
    assert info.next_update == NOW + timedelta(days=7)
    assert info.partitioned and info.partition == (PARTITION,)
    assert crl.covers_partition([PARTITION]) and not crl.covers_partition(["http://x/other.crl"])
    assert crl.verify(pki.intermediates()) == moica.certificate
    entry = crl.lookup(revoked.certificate.serial_number)
    assert entry is not None and entry.reason is x509.ReasonFlags.key_compromise
    assert entry.revoked_at == NOW and not entry.hold
    assert crl.lookup(good.certificate.serial_number) is None
    assert list(crl.entries()) == [entry]
    assert list(crl.serials()) == [revoked.certificate.serial_number]
    # cryptography agrees on what the entry says
    theirs = crl.crl.get_revoked_certificate_by_serial_number(entry.serial)
    assert theirs is not None and theirs.revocation_date_utc == entry.revoked_at


def test_a_complete_crl_covers_every_partition(crls: dict[str, bytes]) -> None:
    crl = read_crl(crls["held"])
    assert not crl.info.partitioned and crl.info.partition == ()
    assert crl.covers_partition([]) and crl.covers_partition([PARTITION])


def test_a_hold_is_reported_as_a_hold(
    crls: dict[str, bytes], cards: tuple[IssuedCard, ...]
) -> None:
    entry = read_crl(crls["held"]).lookup(cards[1].certificate.serial_number)
    assert entry is not None and entry.hold
    assert entry.reason is x509.ReasonFlags.certificate_hold


def test_pem_is_read_too(crls: dict[str, bytes]) -> None:
    loaded = x509.load_der_x509_crl(crls["partition"])
    pem = read_crl(b"junk before\n" + loaded.public_bytes(serialization.Encoding.PEM))
    assert pem.der == crls["partition"] and pem.info.number == 31


def test_conditional_get_of_a_crl(
    fetcher: Fetcher, server: LocalHTTPServer, tmp_path: Path
) -> None:
    url = server.url("/crl/partition.crl")
    with fetcher.download(url, timeout=5, directory=tmp_path) as first:
        assert first.outcome is FetchOutcome.FETCHED and first.validators.etag == '"partition"'
    with fetcher.download(url, timeout=5, validators=first.validators) as second:
        assert second.outcome is FetchOutcome.NOT_MODIFIED and second.path is None


def test_redirect_to_another_host_is_refused(fetcher: Fetcher, server: LocalHTTPServer) -> None:
    with fetcher.download(server.url("/crl/moved.crl"), timeout=5) as result:
        assert result.outcome is FetchOutcome.REDIRECT_TO_OTHER_HOST


# -- signed by the wrong key ---------------------------------------------------------------------


def test_crl_signed_by_the_wrong_key_is_refused(
    pki: TestPKI, fetcher: Fetcher, server: LocalHTTPServer, tmp_path: Path
) -> None:
    crl = read_crl(fetch(fetcher, server, "/crl/wrong-key.crl", tmp_path))
    assert crl.info.issuer_key_id == pki.ca(IssuerCA.MOICA).key_identifier  # it claims MOICA
    with pytest.raises(CrlRefused) as caught:
        crl.verify(pki.intermediates())
    assert caught.value.outcome is CrlOutcome.SIGNATURE_INVALID
    assert caught.value.code is ErrorCode.SIGNATURE_INVALID


def test_issuer_is_matched_by_key_never_by_name(pki: TestPKI, crls: dict[str, bytes]) -> None:
    crl = read_crl(crls["held"])
    lookalike = pki.lookalike_ca(IssuerCA.MOICA)  # same name, another key and SKI
    with pytest.raises(CrlRefused) as caught:
        crl.verify([lookalike.certificate])
    assert caught.value.outcome is CrlOutcome.UNKNOWN_ISSUER
    assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED
    twin = pki.lookalike_ca(IssuerCA.MOICA, copy_key_identifier=True)  # even the same SKI
    with pytest.raises(CrlRefused) as forged:
        crl.verify([twin.certificate])
    assert forged.value.outcome is CrlOutcome.SIGNATURE_INVALID
    real = pki.ca(IssuerCA.MOICA).certificate
    assert crl.verify([twin.certificate, real]) == real


def test_a_ca_without_crl_sign_never_verifies(pki: TestPKI) -> None:
    moica = pki.ca(IssuerCA.MOICA)
    no_crl_sign = (
        x509.CertificateBuilder()
        .subject_name(moica.name)
        .issuer_name(moica.name)
        .public_key(moica.key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, False, False, False), True
        )
        .sign(moica.key, hashes.SHA256())
    )
    with pytest.raises(CrlRefused) as caught:
        read_crl(der(pki.crl(IssuerCA.MOICA))).verify([no_crl_sign])
    assert caught.value.outcome is CrlOutcome.SIGNATURE_INVALID


# -- stale ---------------------------------------------------------------------------------------


def test_stale_crl(
    pki: TestPKI,
    cards: tuple[IssuedCard, ...],
    fetcher: Fetcher,
    server: LocalHTTPServer,
    tmp_path: Path,
) -> None:
    crl = read_crl(fetch(fetcher, server, "/crl/stale.crl", tmp_path))
    assert crl.verify(pki.intermediates()) == pki.ca(IssuerCA.MOICA).certificate
    assert crl.is_stale(NOW, GRACE)
    assert crl.stale_after(GRACE) == NOW - timedelta(days=2) + GRACE
    # a stale CRL still says what it lists (a revocation is final: the service decides)
    assert crl.lookup(cards[0].certificate.serial_number) is not None


@pytest.mark.parametrize(
    ("after_next_update", "grace", "stale"),
    [
        (timedelta(seconds=-1), timedelta(0), False),  # a second before nextUpdate
        (timedelta(0), timedelta(0), False),  # at nextUpdate: not yet past it
        (timedelta(seconds=1), timedelta(0), True),  # a second past, no grace
        (timedelta(hours=6), GRACE, False),  # at the end of the grace
        (timedelta(hours=6, seconds=1), GRACE, True),  # a second past the grace
    ],
)
def test_staleness_boundaries(
    crls: dict[str, bytes], after_next_update: timedelta, grace: timedelta, stale: bool
) -> None:
    crl = read_crl(crls["held"])
    assert crl.info.next_update is not None
    assert crl.is_stale(crl.info.next_update + after_next_update, grace) is stale


# -- truncated downloads and other refusals ------------------------------------------------------


def test_truncated_download_refused_by_the_fetcher(
    fetcher: Fetcher, server: LocalHTTPServer, tmp_path: Path
) -> None:
    with fetcher.download(server.url("/crl/cut.crl"), timeout=5, directory=tmp_path) as result:
        assert result.outcome is FetchOutcome.TRUNCATED and result.path is None


@pytest.mark.parametrize("path", ["/crl/cut-quietly.crl", "/crl/cut-no-length.crl"])
def test_truncated_download_refused_by_the_parser(
    fetcher: Fetcher, server: LocalHTTPServer, tmp_path: Path, path: str
) -> None:
    # the HTTP layer cannot tell: a Content-Length that lies low, or no Content-Length at all
    with pytest.raises(CrlRefused) as caught:
        read_crl(fetch(fetcher, server, path, tmp_path))
    assert caught.value.outcome is CrlOutcome.TRUNCATED
    assert caught.value.code is ErrorCode.NOT_A_CERTIFICATE


@pytest.mark.parametrize("keep", [1, 2, 5, 100, -1])  # bytes kept (-1: all but the last)
def test_every_cut_is_truncated(crls: dict[str, bytes], keep: int) -> None:
    with pytest.raises(CrlRefused) as caught:
        read_crl(crls["partition"][:keep])
    assert caught.value.outcome is CrlOutcome.TRUNCATED


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"garbage, not DER",
        b"\x30\x03\x02\x01\x01",  # one whole element that is no CRL
        b"-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n",
    ],
)
def test_not_a_crl(data: bytes) -> None:
    with pytest.raises(CrlRefused) as caught:
        read_crl(data)
    assert caught.value.outcome in (CrlOutcome.NOT_A_CRL, CrlOutcome.TRUNCATED)
    assert caught.value.code is ErrorCode.NOT_A_CERTIFICATE


def test_trailing_bytes_and_cut_pem(crls: dict[str, bytes]) -> None:
    with pytest.raises(CrlRefused) as trailing:
        read_crl(crls["held"] + b"\x00")
    assert trailing.value.outcome is CrlOutcome.NOT_A_CRL
    pem = x509.load_der_x509_crl(crls["held"]).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CrlRefused) as cut:
        read_crl(pem[: len(pem) // 2])
    assert cut.value.outcome is CrlOutcome.TRUNCATED


def test_too_large(crls: dict[str, bytes]) -> None:
    with pytest.raises(CrlRefused) as caught:
        read_crl(crls["held"], max_bytes=len(crls["held"]) - 1)
    assert caught.value.outcome is CrlOutcome.TOO_LARGE
    assert caught.value.code is ErrorCode.FILE_TOO_LARGE


def test_delta_and_indirect_crls_are_unsupported(pki: TestPKI) -> None:
    moica = pki.ca(IssuerCA.MOICA)
    base = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(moica.name)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
    )
    delta = base.add_extension(x509.DeltaCRLIndicator(5), critical=True)
    indirect = base.add_extension(
        x509.IssuingDistributionPoint(None, None, False, False, None, True, False), critical=True
    )
    for builder in (delta, indirect):
        with pytest.raises(CrlRefused) as caught:
            read_crl(der(builder.sign(moica.key, hashes.SHA256())))
        assert caught.value.outcome is CrlOutcome.UNSUPPORTED


def test_rsa_issuers_verify_too() -> None:
    rsa_pki = TestPKI.create(NOW, key_type="rsa")
    crl = read_crl(der(rsa_pki.crl(IssuerCA.MOEACA, [rsa_pki.issue_company("04595257")])))
    assert crl.verify(rsa_pki.intermediates()) == rsa_pki.ca(IssuerCA.MOEACA).certificate
    forged = rsa_pki.crl(IssuerCA.MOEACA, signing_key=rsa_pki.ca(IssuerCA.GCA).key)
    with pytest.raises(CrlRefused) as caught:
        read_crl(der(forged)).verify(rsa_pki.intermediates())
    assert caught.value.outcome is CrlOutcome.SIGNATURE_INVALID


def test_entries_and_lookups_agree_with_cryptography(pki: TestPKI) -> None:
    moica = pki.ca(IssuerCA.MOICA)
    reasons = [None, *x509.ReasonFlags]
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(moica.name)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
    )
    for index in range(300):
        reason = reasons[index % len(reasons)]
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(index * 7919 + 1 if index % 5 else 2**159 - 1 - index)  # 1 to 20 bytes
            .revocation_date(NOW - timedelta(minutes=index))
        )
        if index % 3 == 0:  # another extension before the reason
            entry = entry.add_extension(x509.InvalidityDate(NOW - timedelta(days=1)), False)
        if reason is not None:  # sometimes marked critical: a BOOLEAN before the value
            entry = entry.add_extension(x509.CRLReason(reason), critical=index % 2 == 0)
        builder = builder.add_revoked_certificate(entry.build())
    crl = read_crl(der(builder.sign(moica.key, hashes.SHA256())))
    theirs = [(r.serial_number, r.revocation_date_utc, _reason(r)) for r in crl.crl]
    mine = [(e.serial, e.revoked_at, e.reason) for e in crl.entries()]
    assert mine == theirs and crl.info.entries == 300
    for serial, revoked_at, reason in theirs:
        found = crl.lookup(serial)
        if reason is x509.ReasonFlags.remove_from_crl:  # not revoked (a delta CRL's word)
            assert found is None
        else:
            assert found is not None and (found.revoked_at, found.reason) == (revoked_at, reason)
    assert crl.lookup(2) is None and crl.lookup(-1) is None


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None
