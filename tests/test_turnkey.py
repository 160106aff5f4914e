"""Turnkey message verification (DESIGN.md §5): formats, refusals, the per-sender cache, CLI, API.

Signing certificates are inserted as ``Certificate`` rows directly (the customs import is
another module); every verifier here rechecks the store on every message (interval 0) unless
the test is about the interval itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from typer.testing import CliRunner

from engine import App, CertificateError, ErrorCode, FixedClock, RefusedError, SwregError
from engine.cli import app as cli_app
from engine.core.declarations import IssuerCA
from engine.services import turnkey
from engine.services.turnkey import CANDIDATE_BYTES, ENTRY_BYTES, TurnkeyResult, TurnkeyVerifier
from engine.store import Certificate
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

UBN = "04595257"
BROKER = "A00001"
MESSAGE = b"<Envelope><Body>NX5105 " + bytes(range(256)) * 40 + b"</Body></Envelope>"


# -- helpers -----------------------------------------------------------------------------------


def register(
    app: App,
    card: IssuedCard,
    sender: str = UBN,
    *,
    status: str = "active",
    usage: str = "shipping",
) -> int:
    """Insert ``card`` as a registered signing certificate of ``sender``; return its row id."""
    cert = card.certificate
    der = card.der()
    row = Certificate(
        fingerprint=hashlib.sha256(der).hexdigest(),
        purpose="signing",
        der=der,
        serial_hex=format(cert.serial_number, "X"),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        ca="TaiCA",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        ubn=sender if sender.isdigit() else None,
        query_key=sender,
        kind="non_ic",
        usage_type=usage,
        status=status,
        created_at=app.clock.now(),
    )
    with app.database.unit_of_work() as uow:
        uow.certificates.add(row)
        uow.commit()
        return row.id


def set_status(app: App, row_id: int, status: str) -> None:
    with app.database.unit_of_work() as uow:
        uow.session.execute(
            update(Certificate).where(Certificate.id == row_id).values(status=status)
        )
        uow.commit()


def revoke(app: App, pki: TestPKI, *cards: IssuedCard, number: int = 1) -> None:
    """Trust the TaiCA CA as an intermediate and add its CRL listing ``cards``."""
    app.trust.add_certificate(pki.der(pki.ca(IssuerCA.TAICA).certificate), anchor=False)
    crl = pki.crl(IssuerCA.TAICA, cards, number=number)
    app.trust.add_crl(crl.public_bytes(serialization.Encoding.DER))


def cms(
    card: IssuedCard,
    message: bytes = MESSAGE,
    *,
    attributes: bool = True,
    encoding: serialization.Encoding = serialization.Encoding.DER,
    digest: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A detached CMS SignedData over ``message`` made by cryptography's PKCS#7 builder."""
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    if not attributes:
        options.append(pkcs7.PKCS7Options.NoAttributes)
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(message)
        .add_signer(card.certificate, card.key, digest or hashes.SHA256())  # type: ignore[arg-type]
        .sign(encoding, options)
    )


def code_of(verifier: TurnkeyVerifier, *args: Any, **kwargs: Any) -> ErrorCode:
    with pytest.raises(SwregError) as caught:
        verifier.verify(*args, **kwargs)
    return caught.value.code


@pytest.fixture
def verifier(app: App) -> TurnkeyVerifier:
    return TurnkeyVerifier(
        app.database, app.clock, app.trust, app.revocation_checks, recheck_interval=0
    )


@pytest.fixture(scope="module")
def rsa_card(pki: TestPKI) -> IssuedCard:
    return pki.issue_customs(UBN, "06", key="rsa")


@pytest.fixture(scope="module")
def ec_card(pki: TestPKI) -> IssuedCard:
    return pki.issue_customs(UBN, "07", key="ec")


# -- good senders and formats ------------------------------------------------------------------


def test_an_rsa_sender_verifies_with_a_raw_signature(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard
) -> None:
    register(app, rsa_card)
    result = verifier.verify(UBN, MESSAGE, rsa_card.sign(MESSAGE))
    assert isinstance(result, TurnkeyResult)
    assert result.sender == UBN
    assert result.fingerprint == hashlib.sha256(rsa_card.der()).hexdigest()
    assert result.serial == format(rsa_card.certificate.serial_number, "X")
    assert result.subject == rsa_card.certificate.subject.rfc4514_string()
    assert f"CN={UBN}-06-000" in result.subject
    assert result.signed_at == app.clock.now()
    assert result.certificate() == {
        "fingerprint": result.fingerprint,
        "subject": result.subject,
        "serial": result.serial,
    }


def test_an_ecdsa_sender_verifies_der_and_raw_r_s(
    app: App, verifier: TurnkeyVerifier, ec_card: IssuedCard
) -> None:
    register(app, ec_card)
    for raw in (False, True):
        result = verifier.verify(UBN, MESSAGE, ec_card.sign(MESSAGE, raw=raw))
        assert result.serial == format(ec_card.certificate.serial_number, "X")


def test_a_broker_key_is_a_sender_too(app: App, verifier: TurnkeyVerifier, pki: TestPKI) -> None:
    card = pki.issue_customs("12345675", "01", key="ec")
    register(app, card, BROKER, usage="broker_specialist")
    assert verifier.verify(BROKER, MESSAGE, card.sign(MESSAGE)).sender == BROKER
    assert code_of(verifier, "12345675", MESSAGE, card.sign(MESSAGE)) is ErrorCode.NOT_REGISTERED


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_base64_signatures_as_bytes_or_text_with_line_breaks(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard, ec_card: IssuedCard, key: str
) -> None:
    card = rsa_card if key == "rsa" else ec_card
    register(app, card)
    signature = card.sign(MESSAGE)
    encoded = base64.b64encode(signature)
    assert verifier.verify(UBN, MESSAGE, encoded).serial
    assert verifier.verify(UBN, MESSAGE, encoded.decode("ascii")).serial
    wrapped = b"\r\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64)) + b"\n"
    assert verifier.verify(UBN, MESSAGE, wrapped).serial
    assert verifier.verify(UBN, MESSAGE, base64.urlsafe_b64encode(signature).rstrip(b"=")).serial


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_a_detached_cms_with_signed_attributes_is_judged_at_the_receipt_time(
    app: App,
    clock: FixedClock,
    verifier: TurnkeyVerifier,
    rsa_card: IssuedCard,
    ec_card: IssuedCard,
    key: str,
) -> None:
    card = rsa_card if key == "rsa" else ec_card
    register(app, card)
    clock.advance(timedelta(days=30))  # the builder writes the real time as signingTime
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        signature = cms(card, encoding=encoding)
        result = verifier.verify(UBN, MESSAGE, signature)
        assert result.serial == format(card.certificate.serial_number, "X")
        assert result.signed_at == clock.now()  # the signingTime is the sender's word
    der = cms(card)
    assert verifier.verify(UBN, MESSAGE, base64.b64encode(der)).serial
    assert code_of(verifier, UBN, MESSAGE + b" ", der) is ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_a_detached_cms_without_attributes(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard, ec_card: IssuedCard, key: str
) -> None:
    card = rsa_card if key == "rsa" else ec_card
    register(app, card)
    signature = cms(card, attributes=False)
    result = verifier.verify(UBN, MESSAGE, signature)
    assert result.signed_at == app.clock.now()  # no signingTime: the clock's
    assert code_of(verifier, UBN, MESSAGE[:-1], signature) is ErrorCode.SIGNATURE_INVALID


def test_a_cms_with_another_digest_than_sha256_is_refused(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard
) -> None:
    register(app, rsa_card)
    signature = cms(rsa_card, digest=hashes.SHA512())
    assert code_of(verifier, UBN, MESSAGE, signature) is ErrorCode.SIGNATURE_INVALID


def test_a_cms_by_another_key_is_refused(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard, pki: TestPKI
) -> None:
    register(app, rsa_card)
    stranger = pki.issue_customs(UBN, "09", key="rsa")
    assert code_of(verifier, UBN, MESSAGE, cms(stranger)) is ErrorCode.SIGNATURE_INVALID


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_a_tampered_message_is_signature_invalid(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard, ec_card: IssuedCard, key: str
) -> None:
    card = rsa_card if key == "rsa" else ec_card
    register(app, card)
    signature = card.sign(MESSAGE)
    tampered = MESSAGE.replace(b"NX5105", b"NX5106")
    with pytest.raises(CertificateError) as caught:
        verifier.verify(UBN, tampered, signature)
    assert caught.value.code is ErrorCode.SIGNATURE_INVALID
    assert caught.value.field == "signature"


def test_the_clock_decides_expired_and_not_yet_valid(
    app: App, clock: FixedClock, verifier: TurnkeyVerifier, rsa_card: IssuedCard
) -> None:
    register(app, rsa_card)
    signature = rsa_card.sign(MESSAGE)
    clock.set(rsa_card.certificate.not_valid_after_utc + timedelta(seconds=1))
    assert code_of(verifier, UBN, MESSAGE, signature) is ErrorCode.CERTIFICATE_EXPIRED
    clock.set(rsa_card.certificate.not_valid_before_utc - timedelta(seconds=1))
    assert code_of(verifier, UBN, MESSAGE, signature) is ErrorCode.CERTIFICATE_NOT_YET_VALID
    clock.set(rsa_card.certificate.not_valid_after_utc)  # bounds inclusive
    assert verifier.verify(UBN, MESSAGE, signature).signed_at == clock.now()


def test_a_key_expired_yesterday_cannot_backdate_with_a_cms_signing_time(
    app: App, clock: FixedClock, verifier: TurnkeyVerifier, pki: TestPKI
) -> None:
    """The attack of issue 13: a CMS whose signingTime lies a month back, inside the validity
    of a certificate that expired yesterday, used to choose the time the certificates counted."""
    now = datetime.now(UTC)
    card = pki.issue_customs(UBN, "08", key="ec", valid_to=now + timedelta(days=29))
    register(app, card)
    signature = cms(card)  # signingTime: now, a month before the receipt below
    clock.set(now + timedelta(days=30))  # the certificate expired yesterday
    assert code_of(verifier, UBN, MESSAGE, signature) is ErrorCode.CERTIFICATE_EXPIRED
    assert code_of(verifier, UBN, MESSAGE, card.sign(MESSAGE)) is ErrorCode.CERTIFICATE_EXPIRED


def test_an_expired_certificate_is_refused_at_the_clocks_time(
    app: App, clock: FixedClock, verifier: TurnkeyVerifier, pki: TestPKI
) -> None:
    card = pki.issue_customs(UBN, "02", key="ec", valid_to=clock.now() + timedelta(days=1))
    register(app, card)
    signature = card.sign(MESSAGE)
    assert verifier.verify(UBN, MESSAGE, signature).serial
    clock.advance(timedelta(days=2))  # past the cached entry's deadline (its notAfter)
    assert code_of(verifier, UBN, MESSAGE, signature) is ErrorCode.CERTIFICATE_EXPIRED


def test_a_revoked_certificate_is_refused(
    app: App, verifier: TurnkeyVerifier, pki: TestPKI, rsa_card: IssuedCard
) -> None:
    register(app, rsa_card)
    revoke(app, pki, rsa_card)
    with pytest.raises(CertificateError) as caught:
        verifier.verify(UBN, MESSAGE, rsa_card.sign(MESSAGE))
    assert caught.value.code is ErrorCode.CERTIFICATE_REVOKED


def test_the_revoked_one_of_two_says_revoked_and_the_other_still_verifies(
    app: App, verifier: TurnkeyVerifier, pki: TestPKI, rsa_card: IssuedCard, ec_card: IssuedCard
) -> None:
    register(app, rsa_card)
    register(app, ec_card)
    revoke(app, pki, rsa_card)
    assert code_of(verifier, UBN, MESSAGE, rsa_card.sign(MESSAGE)) is (
        ErrorCode.CERTIFICATE_REVOKED
    )
    assert verifier.verify(UBN, MESSAGE, ec_card.sign(MESSAGE)).serial == format(
        ec_card.certificate.serial_number, "X"
    )


def test_an_unknown_sender_is_not_registered(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard
) -> None:
    register(app, rsa_card)
    with pytest.raises(RefusedError) as caught:
        verifier.verify("22099131", MESSAGE, rsa_card.sign(MESSAGE))
    assert (caught.value.code, caught.value.field) == (ErrorCode.NOT_REGISTERED, "sender")


def test_login_certificates_are_not_signing_certificates(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard
) -> None:
    row_id = register(app, rsa_card)
    with app.database.unit_of_work() as uow:
        uow.session.execute(
            update(Certificate).where(Certificate.id == row_id).values(purpose="login")
        )
        uow.commit()
    assert code_of(verifier, UBN, MESSAGE, rsa_card.sign(MESSAGE)) is ErrorCode.NOT_REGISTERED


@pytest.mark.parametrize("status", ["replaced", "deleted"])
def test_replaced_or_deleted_certificates_are_not_used(
    app: App,
    verifier: TurnkeyVerifier,
    rsa_card: IssuedCard,
    ec_card: IssuedCard,
    status: str,
) -> None:
    register(app, rsa_card, status=status)
    assert code_of(verifier, UBN, MESSAGE, rsa_card.sign(MESSAGE)) is ErrorCode.NOT_REGISTERED
    register(app, ec_card)
    assert code_of(verifier, UBN, MESSAGE, rsa_card.sign(MESSAGE)) is (ErrorCode.SIGNATURE_INVALID)
    assert verifier.verify(UBN, MESSAGE, ec_card.sign(MESSAGE)).serial


def test_malformed_signatures_are_signature_invalid_never_a_crash(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard, ec_card: IssuedCard
) -> None:
    register(app, rsa_card)
    register(app, ec_card)
    der = cms(rsa_card)
    samples: list[bytes | str] = [
        b"",
        b"\x00",
        b"\x30",
        b"\x30\x80",
        b"not a signature at all",
        "簽章",
        b"=" * 40,
        b"-----BEGIN PKCS7-----\nnot base64!\n-----END PKCS7-----\n",
        b"-----BEGIN PKCS7-----\n",
        bytes(2048),
        b"\xff" * (300 * 1024),
        base64.b64encode(b"\x30\x06\x06\x04abcd"),
        der + b"trailing",
        der.replace(
            b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x04", b"\x2a\x86\x48\x86\xf7\x0d\x01\x09\x07"
        ),
    ]
    samples += [der[:cut] for cut in range(0, len(der), 7)]
    for sample in samples:
        assert code_of(verifier, UBN, MESSAGE, sample) is ErrorCode.SIGNATURE_INVALID, sample
    cached = TurnkeyVerifier(app.database, app.clock, app.trust, app.revocation_checks)
    for i in range(len(der)):  # unsigned parts (version, certificates) may change harmlessly
        flipped = der[:i] + bytes([der[i] ^ 0x81]) + der[i + 1 :]
        try:
            cached.verify(UBN, MESSAGE, flipped)
        except SwregError as error:
            assert error.code is ErrorCode.SIGNATURE_INVALID


# -- several certificates and the cache --------------------------------------------------------


def test_three_certificates_the_right_one_last(
    app: App, verifier: TurnkeyVerifier, pki: TestPKI
) -> None:
    cards = [pki.issue_customs(UBN, f"0{i}", key="rsa") for i in range(1, 4)]
    for card in cards:
        register(app, card)
    right = cards[-1]
    for _ in range(3):
        assert verifier.verify(UBN, MESSAGE, right.sign(MESSAGE)).serial == format(
            right.certificate.serial_number, "X"
        )
    for card in (cards[0], cards[1], cards[0], cards[2]):  # alternating signers
        assert verifier.verify(UBN, MESSAGE, card.sign(MESSAGE)).fingerprint == (
            hashlib.sha256(card.der()).hexdigest()
        )
    assert verifier.verify(UBN, MESSAGE, cms(cards[1])).serial == format(
        cards[1].certificate.serial_number, "X"
    )


def test_a_crl_added_later_is_seen_by_the_next_verification(
    app: App, verifier: TurnkeyVerifier, pki: TestPKI, ec_card: IssuedCard
) -> None:
    register(app, ec_card)
    signature = ec_card.sign(MESSAGE)
    assert verifier.verify(UBN, MESSAGE, signature).serial  # cached now
    revoke(app, pki, ec_card)
    assert code_of(verifier, UBN, MESSAGE, signature) is ErrorCode.CERTIFICATE_REVOKED


def test_the_cache_follows_registrations_deletions_and_replacements(
    app: App, verifier: TurnkeyVerifier, rsa_card: IssuedCard, ec_card: IssuedCard
) -> None:
    assert code_of(verifier, UBN, MESSAGE, rsa_card.sign(MESSAGE)) is ErrorCode.NOT_REGISTERED
    old = register(app, rsa_card)
    assert verifier.verify(UBN, MESSAGE, rsa_card.sign(MESSAGE)).serial
    set_status(app, old, "replaced")
    register(app, ec_card)
    assert code_of(verifier, UBN, MESSAGE, rsa_card.sign(MESSAGE)) is (ErrorCode.SIGNATURE_INVALID)
    assert verifier.verify(UBN, MESSAGE, ec_card.sign(MESSAGE)).serial  # the renewed card
    with app.database.unit_of_work() as uow:
        uow.session.execute(
            update(Certificate).where(Certificate.query_key == UBN).values(status="deleted")
        )
        uow.commit()
    assert code_of(verifier, UBN, MESSAGE, ec_card.sign(MESSAGE)) is ErrorCode.NOT_REGISTERED


def test_the_cache_is_trusted_until_the_interval_passes(
    app: App, pki: TestPKI, ec_card: IssuedCard
) -> None:
    slow = TurnkeyVerifier(
        app.database, app.clock, app.trust, app.revocation_checks, recheck_interval=3600
    )
    register(app, ec_card)
    signature = ec_card.sign(MESSAGE)
    assert slow.verify(UBN, MESSAGE, signature).serial
    revoke(app, pki, ec_card)
    assert slow.verify(UBN, MESSAGE, signature).serial  # not rechecked within the interval
    slow.forget(UBN)
    assert code_of(slow, UBN, MESSAGE, signature) is ErrorCode.CERTIFICATE_REVOKED
    slow.forget()
    assert code_of(slow, UBN, MESSAGE, signature) is ErrorCode.CERTIFICATE_REVOKED


def test_the_cache_is_bounded(app: App, pki: TestPKI, ec_card: IssuedCard) -> None:
    small = TurnkeyVerifier(
        app.database, app.clock, app.trust, app.revocation_checks, max_senders=2
    )
    register(app, ec_card)
    for sender in ("11111111", "22222222", "33333333"):
        assert code_of(small, sender, MESSAGE, ec_card.sign(MESSAGE)) is ErrorCode.NOT_REGISTERED
    assert small.verify(UBN, MESSAGE, ec_card.sign(MESSAGE)).serial
    assert len(small._entries) == 2


def test_threads_share_one_verifier(app: App, pki: TestPKI, ec_card: IssuedCard) -> None:
    shared = TurnkeyVerifier(
        app.database, app.clock, app.trust, app.revocation_checks, recheck_interval=0.001
    )
    other = pki.issue_customs(UBN, "08", key="ec")
    register(app, ec_card)
    register(app, other)
    signatures = {card.certificate.serial_number: card.sign(MESSAGE) for card in (ec_card, other)}
    expected = {format(serial, "X") for serial in signatures}

    def work(offset: int) -> set[str]:
        seen = set()
        items = list(signatures.values())
        for i in range(40):
            seen.add(shared.verify(UBN, MESSAGE, items[(i + offset) % 2]).serial)
        return seen

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(4)))
    assert all(seen == expected for seen in results)


# -- a named certificate -------------------------------------------------------------------------


def fingerprint(card: IssuedCard) -> str:
    return hashlib.sha256(card.der()).hexdigest()


def serial(card: IssuedCard) -> str:
    return format(card.certificate.serial_number, "X")


@pytest.fixture
def three(app: App, pki: TestPKI) -> list[IssuedCard]:
    """Three signing certificates of UBN, registered in this order."""
    cards = [pki.issue_customs(UBN, f"1{i}", key="ec") for i in range(3)]
    for card in cards:
        register(app, card)
    return cards


def test_a_named_certificate_is_the_one_that_verifies(
    verifier: TurnkeyVerifier, three: list[IssuedCard]
) -> None:
    for card in (three[0], three[2], three[1], three[0]):
        signature = card.sign(MESSAGE)
        fp = fingerprint(card)
        colons = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
        for name in (
            fp,
            fp.upper(),
            colons,
            serial(card),
            serial(card).lower(),
            "0x0" + serial(card),
        ):
            result = verifier.verify(UBN, MESSAGE, signature, certificate=name)
            assert (result.fingerprint, result.serial) == (fp, serial(card)), name
        assert verifier.verify(UBN, MESSAGE, cms(card), certificate=fp).fingerprint == fp


def test_a_named_certificate_that_did_not_sign_is_never_replaced_by_another(
    verifier: TurnkeyVerifier, three: list[IssuedCard]
) -> None:
    """The signature is three[1]'s, which is registered and valid: naming three[0] still
    refuses it, since the caller said three[0] signed."""
    signature = three[1].sign(MESSAGE)
    assert verifier.verify(UBN, MESSAGE, signature).fingerprint == fingerprint(three[1])
    for name in (fingerprint(three[0]), serial(three[0])):
        with pytest.raises(CertificateError) as caught:
            verifier.verify(UBN, MESSAGE, signature, certificate=name)
        assert (caught.value.code, caught.value.field) == (ErrorCode.SIGNATURE_INVALID, "signature")
    assert code_of(verifier, UBN, MESSAGE, cms(three[1]), certificate=serial(three[0])) is (
        ErrorCode.SIGNATURE_INVALID
    )


def test_a_named_certificate_of_another_sender_is_not_registered(
    app: App, verifier: TurnkeyVerifier, pki: TestPKI, ec_card: IssuedCard
) -> None:
    register(app, ec_card)  # UBN's own, which made the signature
    other = pki.issue_customs("12345675", "01", key="ec")
    register(app, other, BROKER, usage="broker_specialist")
    signature = ec_card.sign(MESSAGE)
    for name in (fingerprint(other), serial(other)):
        with pytest.raises(RefusedError) as caught:
            verifier.verify(UBN, MESSAGE, signature, certificate=name)
        assert (caught.value.code, caught.value.field) == (ErrorCode.NOT_REGISTERED, "certificate")
    # the other sender's own signature, named, is refused under UBN too
    assert code_of(verifier, UBN, MESSAGE, other.sign(MESSAGE), certificate=fingerprint(other)) is (
        ErrorCode.NOT_REGISTERED
    )
    assert verifier.verify(BROKER, MESSAGE, other.sign(MESSAGE), certificate=serial(other)).sender
    never = pki.issue_customs(UBN, "19", key="ec")  # never registered
    assert code_of(verifier, UBN, MESSAGE, never.sign(MESSAGE), certificate=serial(never)) is (
        ErrorCode.NOT_REGISTERED
    )


@pytest.mark.parametrize("status", ["replaced", "deleted"])
def test_a_named_certificate_no_longer_active_is_not_registered(
    app: App, verifier: TurnkeyVerifier, three: list[IssuedCard], status: str
) -> None:
    with app.database.unit_of_work() as uow:
        uow.session.execute(
            update(Certificate)
            .where(Certificate.fingerprint == fingerprint(three[0]))
            .values(status=status)
        )
        uow.commit()
    signature = three[0].sign(MESSAGE)
    with pytest.raises(RefusedError) as caught:
        verifier.verify(UBN, MESSAGE, signature, certificate=fingerprint(three[0]))
    assert (caught.value.code, caught.value.field) == (ErrorCode.NOT_REGISTERED, "certificate")
    assert code_of(verifier, UBN, MESSAGE, signature) is ErrorCode.SIGNATURE_INVALID


def test_a_revoked_or_expired_named_certificate_is_refused(
    app: App, clock: FixedClock, verifier: TurnkeyVerifier, pki: TestPKI, three: list[IssuedCard]
) -> None:
    revoke(app, pki, three[0])
    good = three[1].sign(MESSAGE)
    for signature in (three[0].sign(MESSAGE), good):  # its own signature, or another's
        assert code_of(verifier, UBN, MESSAGE, signature, certificate=fingerprint(three[0])) is (
            ErrorCode.CERTIFICATE_REVOKED
        )
    assert verifier.verify(UBN, MESSAGE, good, certificate=serial(three[1])).serial == serial(
        three[1]
    )
    clock.set(three[1].certificate.not_valid_after_utc + timedelta(seconds=1))
    assert code_of(verifier, UBN, MESSAGE, good, certificate=serial(three[1])) is (
        ErrorCode.CERTIFICATE_EXPIRED
    )


def test_a_malformed_certificate_name_is_invalid_value(
    verifier: TurnkeyVerifier, three: list[IssuedCard]
) -> None:
    signature = three[0].sign(MESSAGE)
    for name in ("", "  ", "not hex", "0x", "G1", "a" * 65, "簽章"):
        with pytest.raises(RefusedError) as caught:
            verifier.verify(UBN, MESSAGE, signature, certificate=name)
        assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID_VALUE, "certificate")
    # an unknown sender is not_registered (sender) before any name is looked at
    with pytest.raises(RefusedError) as caught:
        verifier.verify("22099131", MESSAGE, signature, certificate=serial(three[0]))
    assert (caught.value.code, caught.value.field) == (ErrorCode.NOT_REGISTERED, "sender")


# -- many senders: the batched revalidation and the memory bound ----------------------------------


def senders(app: App, pki: TestPKI, count: int) -> dict[str, IssuedCard]:
    """``count`` senders with a signing certificate of their own each."""
    cards = {
        f"{50000000 + i:08d}": pki.issue_customs(f"{50000000 + i:08d}", key="ec")
        for i in range(count)
    }
    for sender, card in cards.items():
        register(app, card, sender)
    return cards


class Statements:
    """The SQL statements a block runs (the real database, counted)."""

    def __init__(self, app: App) -> None:
        self.engine = app.database.engine
        self.seen: list[str] = []

    def __enter__(self) -> list[str]:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.seen.append(statement)


def test_every_sender_used_lately_is_revalidated_in_a_few_statements(
    app: App, pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cheap form of 10,000 senders taking turns: 23 senders, 5 per sweep statement. After
    the interval, one message revalidates all of them at once (the trust version, then
    ceil(23 / 5) = 5 statements) and the others then need no statement of their own; a change
    made meanwhile is still seen by that sender's next message."""
    monkeypatch.setattr(turnkey, "SWEEP_CHUNK", 5)
    cards = senders(app, pki, 23)
    slow = TurnkeyVerifier(
        app.database, app.clock, app.trust, app.revocation_checks, recheck_interval=3600
    )
    signatures = {sender: card.sign(MESSAGE) for sender, card in cards.items()}
    for sender, signature in signatures.items():
        assert slow.verify(sender, MESSAGE, signature).fingerprint == fingerprint(cards[sender])
    assert slow.cache_info()["senders"] == 23
    first, second, *_ = cards
    with app.database.unit_of_work() as uow:  # a change the cache has not seen yet
        uow.session.execute(
            update(Certificate).where(Certificate.query_key == second).values(status="deleted")
        )
        uow.commit()
    with Statements(app) as seen:
        for sender, signature in signatures.items():  # within the interval: no statement
            assert slow.verify(sender, MESSAGE, signature).sender == sender
    assert seen == []
    slow.recheck_soon()  # as if the interval had passed (rather than sleeping through it)
    with Statements(app) as seen:
        assert slow.verify(first, MESSAGE, signatures[first]).sender == first
    sweeps = [s for s in seen if "IN (" in s]
    assert len(sweeps) == 5
    assert len(seen) == 6  # the trust version and the five sweep statements, nothing per sender
    with Statements(app) as seen:
        for sender, signature in signatures.items():
            if sender != second:
                assert slow.verify(sender, MESSAGE, signature).sender == sender
    assert seen == []  # all carried into the new epoch by that one sweep
    assert code_of(slow, second, MESSAGE, signatures[second]) is ErrorCode.NOT_REGISTERED


def test_a_sweep_sees_a_revocation_for_every_sender(
    app: App, pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(turnkey, "SWEEP_CHUNK", 3)
    cards = senders(app, pki, 7)
    slow = TurnkeyVerifier(
        app.database, app.clock, app.trust, app.revocation_checks, recheck_interval=3600
    )
    for sender, card in cards.items():
        slow.verify(sender, MESSAGE, card.sign(MESSAGE))
    revoked = list(cards.values())[::2]
    revoke(app, pki, *revoked)
    slow.recheck_soon()
    for sender, card in cards.items():
        signature = card.sign(MESSAGE)
        if card in revoked:
            assert code_of(slow, sender, MESSAGE, signature) is ErrorCode.CERTIFICATE_REVOKED
        else:
            assert slow.verify(sender, MESSAGE, signature).fingerprint == fingerprint(card)


def test_a_sender_quiet_past_the_warm_window_is_revalidated_on_its_own(
    app: App, pki: TestPKI
) -> None:
    cards = senders(app, pki, 2)
    (quiet, busy), (quiet_card, busy_card) = list(cards), list(cards.values())
    slow = TurnkeyVerifier(
        app.database, app.clock, app.trust, app.revocation_checks, recheck_interval=3600
    )
    slow.verify(quiet, MESSAGE, quiet_card.sign(MESSAGE))
    for _ in range(turnkey.WARM_EPOCHS + 1):
        slow.recheck_soon()
        slow.verify(busy, MESSAGE, busy_card.sign(MESSAGE))
    assert slow._entries[quiet].epoch < slow._epoch  # no longer swept: not current
    with app.database.unit_of_work() as uow:
        uow.session.execute(
            update(Certificate).where(Certificate.query_key == quiet).values(status="replaced")
        )
        uow.commit()
    assert code_of(slow, quiet, MESSAGE, quiet_card.sign(MESSAGE)) is ErrorCode.NOT_REGISTERED


def test_the_memory_bound_evicts_and_results_stay_correct(app: App, pki: TestPKI) -> None:
    cards = senders(app, pki, 9)
    per_sender = ENTRY_BYTES + CANDIDATE_BYTES
    small = TurnkeyVerifier(
        app.database,
        app.clock,
        app.trust,
        app.revocation_checks,
        recheck_interval=0,
        cache_bytes=4 * per_sender,
    )
    order = list(cards) * 3
    for sender in order:
        card = cards[sender]
        result = small.verify(sender, MESSAGE, card.sign(MESSAGE), certificate=serial(card))
        assert (result.sender, result.fingerprint) == (sender, fingerprint(card))
        info = small.cache_info()
        assert info["bytes"] <= info["limit"] == 4 * per_sender
        assert info["bytes"] == info["senders"] * per_sender
        assert 1 <= info["senders"] <= 4
    last = order[-1]
    assert last in small._entries  # the one just used is never the one evicted
    other = next(iter(cards))
    assert code_of(small, other, MESSAGE, cards[last].sign(MESSAGE)) is (
        ErrorCode.SIGNATURE_INVALID
    )  # reloaded after eviction: still only its own certificate counts
    small.forget(last)
    assert small.cache_info()["bytes"] == small.cache_info()["senders"] * per_sender
    small.forget()
    assert small.cache_info() == {"senders": 0, "bytes": 0, "limit": 4 * per_sender}


# -- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(app: App, db_url: str) -> dict[str, str]:
    return {"SWREG_DATABASE_URL": db_url, "SWREG_SECRET_KEY": bytes(range(32)).hex()}


def invoke(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli_app, ["turnkey", "verify", *args, "--json"], env=env)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def test_the_cli_verifies_and_refuses(
    app: App, cli_env: dict[str, str], tmp_path: Path, rsa_card: IssuedCard
) -> None:
    register(app, rsa_card)
    message = tmp_path / "message.xml"
    message.write_bytes(MESSAGE)
    raw = tmp_path / "message.sig"
    raw.write_bytes(rsa_card.sign(MESSAGE))
    pem = tmp_path / "message.p7s"
    pem.write_bytes(cms(rsa_card, encoding=serialization.Encoding.PEM))

    for signature in (raw, pem):
        code, out = invoke(
            cli_env, "--sender", UBN, "--message", str(message), "--signature", str(signature)
        )
        assert code == 0, out
        assert out["ok"] is True
        assert out["certificate"] == {
            "fingerprint": hashlib.sha256(rsa_card.der()).hexdigest(),
            "subject": rsa_card.certificate.subject.rfc4514_string(),
            "serial": format(rsa_card.certificate.serial_number, "X"),
        }
    base = ["--message", str(message), "--signature", str(raw)]
    code, out = invoke(cli_env, "--sender", "22099131", *base)
    assert (code, out["errors"][0]["code"]) == (1, "not_registered")
    message.write_bytes(MESSAGE + b"!")
    code, out = invoke(cli_env, "--sender", UBN, *base)
    assert (code, out["errors"][0]["code"]) == (1, "signature_invalid")

    result = CliRunner().invoke(
        cli_app,
        ["turnkey", "verify", "--sender", UBN, "--message", str(message), "--signature", str(raw)],
        env=cli_env,
    )
    assert result.exit_code == 1
    assert "signature_invalid" in result.output


def test_the_cli_takes_a_named_certificate(
    app: App, cli_env: dict[str, str], tmp_path: Path, pki: TestPKI, rsa_card: IssuedCard
) -> None:
    register(app, rsa_card)
    other = pki.issue_customs(UBN, "05", key="rsa")
    register(app, other)
    message = tmp_path / "message.xml"
    message.write_bytes(MESSAGE)
    raw = tmp_path / "message.sig"
    raw.write_bytes(rsa_card.sign(MESSAGE))
    base = ["--sender", UBN, "--message", str(message), "--signature", str(raw)]
    code, out = invoke(cli_env, *base, "--certificate", serial(rsa_card))
    assert (code, out["certificate"]["fingerprint"]) == (0, fingerprint(rsa_card))
    code, out = invoke(cli_env, *base, "--certificate", fingerprint(other))
    assert (code, out["errors"][0]["code"]) == (1, "signature_invalid")
    stranger = pki.issue_customs("22099131", "01", key="rsa")
    code, out = invoke(cli_env, *base, "--certificate", fingerprint(stranger))
    assert (code, out["errors"][0]["code"], out["errors"][0]["field"]) == (
        1,
        "not_registered",
        "certificate",
    )


# -- API ---------------------------------------------------------------------------------------


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def post(client: TestClient, body: dict[str, Any], *, with_csrf: bool = True) -> Any:
    headers = {}
    if with_csrf:
        headers["X-CSRF-Token"] = client.get("/api/csrf").json()["token"]
    return client.post("/api/turnkey/verify", json=body, headers=headers)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_the_api_verifies_and_maps_refusals(
    app: App, client: TestClient, pki: TestPKI, ec_card: IssuedCard
) -> None:
    register(app, ec_card)
    body = {"sender": UBN, "message": b64(MESSAGE), "signature": b64(ec_card.sign(MESSAGE))}
    response = post(client, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["valid"] is True
    assert answer["sender"] == UBN
    assert answer["certificate"] == {
        "fingerprint": hashlib.sha256(ec_card.der()).hexdigest(),
        "subject": ec_card.certificate.subject.rfc4514_string(),
        "serial": format(ec_card.certificate.serial_number, "X"),
    }
    cms_body = {**body, "signature": b64(cms(ec_card))}
    assert post(client, cms_body).json()["valid"] is True

    def refused(payload: dict[str, Any]) -> tuple[int, str]:
        response = post(client, payload)
        return response.status_code, response.json()["errors"][0]["code"]

    assert refused({**body, "message": b64(MESSAGE + b"x")}) == (422, "signature_invalid")
    assert refused({**body, "sender": "22099131"}) == (422, "not_registered")
    assert refused({**body, "signature": "***"}) == (422, "signature_invalid")
    assert refused({**body, "message": "***"}) == (422, "invalid_value")
    late = ec_card.certificate.not_valid_after_utc + timedelta(days=1)
    answer = post(client, {**body, "signed_at": late.isoformat()}).json()  # ignored
    assert answer["valid"] is True
    assert datetime.fromisoformat(answer["signed_at"]) == app.clock.now()
    assert refused({"sender": UBN}) == (422, "field_required")
    assert post(client, body, with_csrf=False).status_code == 403  # CSRF like the other routes

    named = post(client, {**body, "certificate": serial(ec_card)}).json()
    assert named["certificate"]["fingerprint"] == fingerprint(ec_card)
    stranger = pki.issue_customs("22099131", "01", key="ec")
    assert refused({**body, "certificate": fingerprint(stranger)}) == (422, "not_registered")
    response = post(client, {**body, "certificate": fingerprint(stranger)})
    assert response.json()["errors"][0]["field"] == "certificate"
    assert refused({**body, "certificate": "not hex"}) == (422, "invalid_value")

    revoke(app, pki, ec_card)
    app.turnkey.forget()
    assert refused(body) == (422, "certificate_revoked")
    assert refused({**body, "certificate": fingerprint(ec_card)}) == (422, "certificate_revoked")
