"""The ordered checks of the card check, the challenge signature and ``cert inspect``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from engine import CardResponse, Catalog, make_plugin_manager
from engine._errors import CertificateError, ErrorCode, SwregError
from engine.core.declarations import CertificateProfile, IssuerCA
from engine.pki.card_response import CardCheckResult, Challenge, check_card_response
from engine.pki.certificate import ParsedCertificate, load_certificate
from engine.pki.certificate_checks import (
    CertificateVerdict,
    certificate_status,
    check_key_usage,
    check_login_certificate,
    inspect,
    verify_signature,
)
from engine.pki.revocation import RevocationSource, RevocationStatus, RevocationVerdict
from engine.pki.signatures import SignatureKey
from engine.pki.trust import TrustStore
from engine.testing import IssuedCard, TestCA, TestPKI

from .vectors import INSIDE_G2_ERA, parsed_vector, vector

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)

CITIZEN = CertificateProfile.of(IssuerCA.MOICA)
BUSINESS = CertificateProfile.of(IssuerCA.MOEACA).with_card_ranks("primary", "secondary")


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return TestPKI.create(NOW)


@pytest.fixture(scope="module")
def trust(pki: TestPKI) -> TrustStore:
    return pki.trust_store()


def check(
    pki: TestPKI,
    card: IssuedCard,
    *,
    profile: CertificateProfile | None = CITIZEN,
    at: datetime = NOW,
) -> CertificateVerdict:
    return check_login_certificate(
        load_certificate(card.der()), trust=pki.trust_store(), at=at, profile=profile
    )


# -- success -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_good_cards_pass(pki: TestPKI, key: str) -> None:
    card = pki.issue_person(key="rsa" if key == "rsa" else "ec")
    verdict = check(pki, card)
    assert verdict.chain == (card.certificate, *card.chain)
    assert verdict.checked_at == NOW
    assert verdict.parsed.public_key_algorithm == ("RSA-2048" if key == "rsa" else "EC-P256")


def test_profile_none_skips_the_profile_step(pki: TestPKI) -> None:
    card = pki.issue_company("04595257")
    verdict = check(pki, card, profile=None)
    assert verdict.chain == (card.certificate, *card.chain)
    with pytest.raises(CertificateError) as caught:  # the same card, a citizen's profile
        check(pki, card)
    assert caught.value.code is ErrorCode.CERTIFICATE_TYPE_MISMATCH


@pytest.mark.parametrize(
    ("issue", "profile"),
    [
        (lambda p: p.issue_company("04595257", rank="primary"), BUSINESS),
        (lambda p: p.issue_company("04595257", rank="secondary", key="rsa"), BUSINESS),
        (lambda p: p.issue_organization("2.16.886.111.1"), CertificateProfile.of(IssuerCA.XCA)),
        (lambda p: p.issue_agency("2.16.886.101.1"), CertificateProfile.of(IssuerCA.GCA)),
        (lambda p: p.issue_customs("97162640"), CertificateProfile.of(IssuerCA.TAICA)),
    ],
)
def test_every_family_passes_its_profile(
    pki: TestPKI, issue: Callable[[TestPKI], IssuedCard], profile: CertificateProfile
) -> None:
    check(pki, issue(pki), profile=profile)


def test_real_moeaca_g2_card_passes_at_a_time_inside_its_validity() -> None:
    trust = TrustStore(
        [vector("grca-g1-2002-root")], [vector("grca-2012-link"), vector("moeaca-g2-ca")]
    )
    parsed = parsed_vector("moeaca-ee-g2-2019-citibank")
    verdict = check_login_certificate(parsed, trust=trust, at=INSIDE_G2_ERA, profile=BUSINESS)
    assert len(verdict.chain) == 4
    with pytest.raises(CertificateError) as caught:  # a secondary card, primary only wanted
        check_login_certificate(
            parsed,
            trust=trust,
            at=INSIDE_G2_ERA,
            profile=CertificateProfile.of(IssuerCA.MOEACA).with_card_ranks("primary"),
        )
    assert caught.value.code is ErrorCode.CERTIFICATE_TYPE_MISMATCH
    with pytest.raises(CertificateError) as expired:
        check_login_certificate(
            parsed, trust=trust, at=datetime(2025, 1, 1, tzinfo=UTC), profile=None
        )
    assert expired.value.code is ErrorCode.CERTIFICATE_EXPIRED


# -- every refusal, in the order of the checks -------------------------------------------------


def _unknown_ca_card(pki: TestPKI) -> IssuedCard:
    """A card from a CA that is none of MOICA/MOEACA/XCA/GCA/TaiCA, though it is trusted."""
    other = pki.lookalike_ca(IssuerCA.MOICA)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swreg TEST Other CA (測試用)")])
    renamed = TestCA(
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(other.key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(True, None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(other.key.public_key()), False)
        .sign(other.key, hashes.SHA256()),
        other.key,
        IssuerCA.UNKNOWN,
    )
    return pki.issue_person(issuer=renamed)


REFUSALS: list[tuple[str, Callable[[TestPKI], IssuedCard], ErrorCode]] = [
    # classify: an issuer that is no known card CA
    ("unknown CA", _unknown_ca_card, ErrorCode.CERTIFICATE_UNTRUSTED),
    # chain: the exact DN of the test MOICA, another key
    (
        "look-alike issuer",
        lambda p: p.issue_person(issuer=p.lookalike_ca(IssuerCA.MOICA)),
        ErrorCode.CERTIFICATE_UNTRUSTED,
    ),
    # validity
    (
        "expired yesterday",
        lambda p: p.issue_person(valid_from=NOW - 800 * DAY, valid_to=NOW - DAY),
        ErrorCode.CERTIFICATE_EXPIRED,
    ),
    (
        "valid from tomorrow",
        lambda p: p.issue_person(valid_from=NOW + DAY),
        ErrorCode.CERTIFICATE_NOT_YET_VALID,
    ),
    # key usage: the card's encryption certificate
    (
        "encryption certificate",
        lambda p: p.issue_person(key_usage=("key_encipherment", "data_encipherment")),
        ErrorCode.CERTIFICATE_KEY_USAGE,
    ),
    # profile: a 工商憑證 where a 自然人憑證 is wanted
    ("wrong card type", lambda p: p.issue_company("04595257"), ErrorCode.CERTIFICATE_TYPE_MISMATCH),
    # first failure wins: expired AND wrong key usage → expired (validity comes first)
    (
        "expired encryption certificate",
        lambda p: p.issue_person(
            valid_to=NOW - DAY, valid_from=NOW - 9 * DAY, key_usage=("key_encipherment",)
        ),
        ErrorCode.CERTIFICATE_EXPIRED,
    ),
    # look-alike AND expired → untrusted (the chain comes first)
    (
        "expired look-alike",
        lambda p: p.issue_person(
            issuer=p.lookalike_ca(IssuerCA.MOICA), valid_from=NOW - 9 * DAY, valid_to=NOW - DAY
        ),
        ErrorCode.CERTIFICATE_UNTRUSTED,
    ),
    # wrong key usage AND wrong type → key usage
    (
        "company encryption certificate",
        lambda p: p.issue_company("04595257", key_usage=("key_encipherment",)),
        ErrorCode.CERTIFICATE_KEY_USAGE,
    ),
]


@pytest.mark.parametrize(
    ("issue", "code"), [(i, c) for _, i, c in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_in_order(
    pki: TestPKI, issue: Callable[[TestPKI], IssuedCard], code: ErrorCode
) -> None:
    with pytest.raises(CertificateError) as caught:
        check(pki, issue(pki))
    assert caught.value.code is code


def test_malformed_bytes_are_refused_before_any_check(pki: TestPKI) -> None:
    with pytest.raises(CertificateError) as caught:
        load_certificate(pki.issue_person().der()[:-10])
    assert caught.value.code is ErrorCode.CERTIFICATE_MALFORMED


# -- revocation comes after the profile step, the challenge signature after it -----------------

CHECKED = datetime(2025, 6, 1, 11, 0, 0, tzinfo=UTC)
CATALOG = Catalog.from_plugins(make_plugin_manager())


def _verdict(
    status: RevocationStatus = RevocationStatus.GOOD, *, crl_number: int | None = 42
) -> RevocationVerdict:
    return RevocationVerdict(
        status,
        RevocationSource.CRL,
        CHECKED,
        subject="CN=card",
        tried=(
            {
                "source": "crl",
                "crl_number": None if crl_number is None else str(crl_number),
                "status": status.value,
            },
        ),
        crl_number=crl_number,
    )


class RevocationCheck:
    """The service's revocation check as :func:`check_card_response` sees it: it records the
    path it is asked about and whether it may use the network, and refuses with ``refuse``
    (``refuse_offline`` when asked without the network), else answers ``verdict``."""

    def __init__(
        self,
        *,
        refuse: ErrorCode | None = None,
        refuse_offline: ErrorCode | None = None,
        verdict: RevocationVerdict | None = None,
    ) -> None:
        self.refuse = refuse
        self.refuse_offline = refuse_offline
        self.verdict = verdict or _verdict()
        self.asked: list[tuple[x509.Certificate, ...]] = []
        self.offline: list[tuple[x509.Certificate, ...]] = []

    def __call__(
        self, chain: Sequence[x509.Certificate], *, network: bool = True
    ) -> RevocationVerdict:
        (self.asked if network else self.offline).append(tuple(chain))
        refuse = self.refuse if network else self.refuse_offline
        if refuse is not None:
            raise CertificateError(refuse, detail="by the revocation check")
        return self.verdict


def _card_check(
    pki: TestPKI,
    card: IssuedCard,
    revocation: RevocationCheck,
    *,
    signed: bytes | None = None,
    applicant: str = "person.general",
) -> tuple[Challenge, Callable[[], object]]:
    challenge = Challenge("c", "r", "ab" * 32, "urn:swreg:cli", NOW + 5 * 60 * SECOND)
    signature = card.sign(challenge.payload if signed is None else signed)
    response = CardResponse("c", card.der(), signature, card.chain_der())

    def run() -> object:
        return check_card_response(
            response,
            challenge,
            chosen=CATALOG.applicant(applicant),
            catalog=CATALOG,
            trust=pki.trust_store(),
            at=NOW,
            revocation=revocation,
        )

    return challenge, run


@pytest.mark.parametrize(
    ("issue", "code"),
    [
        # revoked (per the check) AND of the wrong type → the profile step refuses first
        (lambda p: p.issue_company("04595257"), ErrorCode.CERTIFICATE_TYPE_MISMATCH),
        (
            lambda p: p.issue_person(key_usage=("key_encipherment",)),
            ErrorCode.CERTIFICATE_KEY_USAGE,
        ),
        (lambda p: p.issue_person(valid_to=NOW - DAY), ErrorCode.CERTIFICATE_EXPIRED),
        (
            lambda p: p.issue_person(issuer=p.lookalike_ca(IssuerCA.MOICA)),
            ErrorCode.CERTIFICATE_UNTRUSTED,  # never asked: no fetch for an untrusted chain
        ),
    ],
    ids=["wrong type", "key usage", "expired", "look-alike"],
)
def test_revocation_is_not_asked_before_the_profile_step_passes(
    pki: TestPKI, issue: Callable[[TestPKI], IssuedCard], code: ErrorCode
) -> None:
    revocation = RevocationCheck(refuse=ErrorCode.CERTIFICATE_REVOKED)
    _, run = _card_check(pki, issue(pki), revocation)
    with pytest.raises(CertificateError) as caught:
        run()
    assert caught.value.code is code
    assert revocation.asked == []


@pytest.mark.parametrize(
    ("offline", "code"),
    [
        (ErrorCode.CERTIFICATE_REVOKED, ErrorCode.CERTIFICATE_REVOKED),  # known: it comes first
        (ErrorCode.REVOCATION_UNKNOWN, ErrorCode.SIGNATURE_INVALID),  # not known without asking
        (None, ErrorCode.SIGNATURE_INVALID),
    ],
)
def test_a_bad_signature_never_makes_the_revocation_check_use_the_network(
    pki: TestPKI, offline: ErrorCode | None, code: ErrorCode
) -> None:
    card = pki.issue_person()
    revocation = RevocationCheck(refuse=ErrorCode.CERTIFICATE_REVOKED, refuse_offline=offline)
    _, run = _card_check(pki, card, revocation, signed=b"another challenge")  # a bad signature
    with pytest.raises(CertificateError) as caught:
        run()
    assert caught.value.code is code
    assert revocation.asked == []  # never with the network
    assert revocation.offline == [(card.certificate, *card.chain)]  # the trusted path, once


@pytest.mark.parametrize("code", [ErrorCode.CERTIFICATE_REVOKED, ErrorCode.REVOCATION_UNKNOWN])
def test_a_good_signature_is_then_checked_for_revocation(pki: TestPKI, code: ErrorCode) -> None:
    card = pki.issue_person()
    revocation = RevocationCheck(refuse=code)
    _, run = _card_check(pki, card, revocation)
    with pytest.raises(CertificateError) as caught:
        run()
    assert caught.value.code is code
    assert (revocation.asked, revocation.offline) == ([(card.certificate, *card.chain)], [])


@pytest.mark.parametrize("crl_number", [42, None])
def test_a_passed_card_check_keeps_the_revocation_verdict(
    pki: TestPKI, crl_number: int | None
) -> None:
    card = pki.issue_company("04595257")
    verdict = _verdict(crl_number=crl_number)
    revocation = RevocationCheck(verdict=verdict)
    challenge, run = _card_check(pki, card, revocation, applicant="enterprise.general")
    result = run()
    assert isinstance(result, CardCheckResult)
    assert result.revocation is verdict
    assert revocation.asked == [result.verdict.chain]
    evidence = result.evidence(challenge)
    assert evidence["revocation"] == verdict.as_evidence()
    assert evidence["crl_number"] == (None if crl_number is None else "42")


@pytest.mark.parametrize(
    ("at", "code"),
    [
        (lambda nb, na: nb - SECOND, ErrorCode.CERTIFICATE_NOT_YET_VALID),  # 1 s before notBefore
        (lambda nb, na: nb, None),  # exactly notBefore: accepted
        (lambda nb, na: na, None),  # exactly notAfter: accepted
        (lambda nb, na: na + SECOND, ErrorCode.CERTIFICATE_EXPIRED),  # 1 s after notAfter
    ],
)
def test_validity_boundaries(
    pki: TestPKI, at: Callable[[datetime, datetime], datetime], code: ErrorCode | None
) -> None:
    card = pki.issue_person(valid_from=NOW + DAY, valid_to=NOW + 30 * DAY)
    moment = at(card.certificate.not_valid_before_utc, card.certificate.not_valid_after_utc)
    if code is None:
        check(pki, card, at=moment)
        return
    with pytest.raises(CertificateError) as caught:
        check(pki, card, at=moment)
    assert caught.value.code is code


def test_expired_issuing_ca_is_refused(pki: TestPKI) -> None:
    # the card runs longer than its CA (CAs here end NOW + 10 years)
    card = pki.issue_person(valid_from=NOW, valid_to=NOW + 4000 * DAY)
    with pytest.raises(CertificateError) as caught:
        check(pki, card, at=NOW + 3700 * DAY)
    assert caught.value.code is ErrorCode.CERTIFICATE_EXPIRED
    assert "issuing CA" in (caught.value.detail or "")


def test_real_encryption_certificate_is_refused_by_the_key_usage_step() -> None:
    # The MOICA *test* CA that issued it is not among the vectors, so the whole check stops at
    # the chain; the key-usage step is checked on its own.
    parsed = parsed_vector("moica-test-ee-2024-enc-1")
    with pytest.raises(CertificateError) as caught:
        check_key_usage(parsed)
    assert caught.value.code is ErrorCode.CERTIFICATE_KEY_USAGE
    with pytest.raises(CertificateError) as chain:
        check_login_certificate(
            parsed,
            trust=TrustStore([vector("grca-g3-root")], [vector("moica-g3-ca")]),
            at=datetime(2024, 8, 1, tzinfo=UTC),
            profile=CITIZEN,
        )
    assert chain.value.code is ErrorCode.CERTIFICATE_UNTRUSTED
    check_key_usage(parsed_vector("moeaca-ee-g2-2019-citibank"))  # digitalSignature: fine


def test_missing_key_usage_is_refused(pki: TestPKI) -> None:
    ca = pki.ca(IssuerCA.MOICA)
    card = pki.issue_person()
    bare = (
        x509.CertificateBuilder()
        .subject_name(card.certificate.subject)
        .issuer_name(ca.name)
        .public_key(card.key.public_key())
        .serial_number(99)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(CertificateError) as caught:
        check_login_certificate(
            load_certificate(bare.public_bytes(serialization.Encoding.DER)),
            trust=pki.trust_store(),
            at=NOW,
            profile=CITIZEN,
        )
    assert caught.value.code is ErrorCode.CERTIFICATE_KEY_USAGE


# -- the challenge signature -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "raw"),
    [("rsa", False), ("ec", False), ("ec", True)],  # RSA PKCS#1 v1.5; ECDSA DER; ECDSA r‖s
)
def test_verify_signature(pki: TestPKI, key: str, raw: bool) -> None:
    card = pki.issue_person(key="rsa" if key == "rsa" else "ec")
    message = b"challenge payload"
    signature = card.sign(message, raw=raw)
    verify_signature(card.certificate, signature, message)
    with pytest.raises(CertificateError) as caught:
        verify_signature(card.certificate, signature, message + b"!")
    assert caught.value.code is ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("key", "raw"),
    [("rsa", False), ("ec", False), ("ec", True)],  # RSA PKCS#1 v1.5; ECDSA DER; ECDSA r‖s
)
def test_the_signature_helper_over_a_message_or_its_digest(
    pki: TestPKI, key: str, raw: bool
) -> None:
    """The helper behind verify_signature and Turnkey: the same answer either way."""
    card = pki.issue_person(key="rsa" if key == "rsa" else "ec")
    checker = SignatureKey.of(card.certificate.public_key())
    assert checker is not None
    message = b"challenge payload"
    signature = card.sign(message, raw=raw)
    assert checker.verifies(signature, message)
    assert checker.verifies_digest(signature, hashlib.sha256(message).digest())
    assert not checker.verifies(signature, message + b"!")
    assert not checker.verifies_digest(signature, hashlib.sha256(message + b"!").digest())
    assert not checker.verifies_digest(signature, b"short digest")  # a wrong size: False


def test_the_signature_helper_takes_rsa_and_ec_keys_only() -> None:
    assert SignatureKey.of(ed25519.Ed25519PrivateKey.generate().public_key()) is None


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x00" * 64, b"\x30\x00", b"\xff" * 256, b"\x00" * 63],
)
def test_garbage_signatures_are_invalid(pki: TestPKI, signature: bytes) -> None:
    for card in (pki.issue_person(key="ec"), pki.issue_person(key="rsa")):
        with pytest.raises(CertificateError) as caught:
            verify_signature(card.certificate, signature, b"m")
        assert caught.value.code is ErrorCode.SIGNATURE_INVALID


def test_signature_by_another_card_is_invalid(pki: TestPKI) -> None:
    one, other = pki.issue_person(), pki.issue_person()
    with pytest.raises(CertificateError) as caught:
        verify_signature(one.certificate, other.sign(b"m"), b"m")
    assert caught.value.code is ErrorCode.SIGNATURE_INVALID


def test_unsupported_key_type_is_invalid(pki: TestPKI) -> None:
    ca = pki.ca(IssuerCA.MOICA)
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")]))
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(ca.key, hashes.SHA256())
    )
    with pytest.raises(CertificateError) as caught:
        verify_signature(cert, key.sign(b"m"), b"m")
    assert caught.value.code is ErrorCode.SIGNATURE_INVALID


# -- cert inspect ------------------------------------------------------------------------------

INSPECT_KEYS = {
    "ca",
    "subject",
    "issuer",
    "serial",
    "not_before",
    "not_after",
    "key_usage",
    "identity",
    "status",
    "chain",
    "accepted_by",
    "revocation",
}

REVOKED_AT = datetime(2025, 5, 30, 8, 0, 0, tzinfo=UTC)


def _inspect(
    parsed: ParsedCertificate,
    trust: TrustStore,
    revocation: RevocationVerdict | None,
    *,
    at: datetime = NOW,
    accepted_by: tuple[str, ...] = (),
) -> dict[str, object]:
    status, chain = certificate_status(parsed, trust=trust, at=at)
    return inspect(
        parsed, status=status, chain=chain, revocation=revocation, accepted_by=accepted_by
    )


def test_inspect_reports_every_key_exactly(pki: TestPKI) -> None:
    card = pki.issue_company(
        "04595257",
        "測試貿易股份有限公司",
        rank="secondary",
        valid_from=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        valid_to=datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    parsed = load_certificate(card.pem())
    good = RevocationVerdict(
        RevocationStatus.GOOD,
        RevocationSource.OCSP,
        CHECKED,
        tried=({"source": "ocsp", "url": "http://ocsp.test/", "status": "good"},),
        ocsp_response=b"\x30\x00",
    )
    report = _inspect(
        parsed, pki.trust_store(), good, accepted_by=("enterprise.general", "general_forwarder")
    )
    assert set(report) == INSPECT_KEYS
    assert report == {
        "ca": "MOEACA",
        "subject": "serialNumber=04595257,O=測試貿易股份有限公司,C=TW",
        "issuer": "CN=swreg TEST MOEACA (測試用),OU=工商憑證管理中心,O=行政院,C=TW",
        "serial": format(card.certificate.serial_number, "X"),
        "not_before": "2025-01-02T03:04:05+00:00",
        "not_after": "2027-01-02T03:04:05+00:00",
        "key_usage": ["digital_signature"],
        "identity": {"ubn": "04595257", "card_rank": "secondary"},
        "status": "valid",
        "chain": [
            "serialNumber=04595257,O=測試貿易股份有限公司,C=TW",
            "CN=swreg TEST MOEACA (測試用),OU=工商憑證管理中心,O=行政院,C=TW",
            "CN=swreg TEST Government Root CA (測試用),O=行政院,C=TW",
        ],
        "accepted_by": ["enterprise.general", "general_forwarder"],
        "revocation": {
            "status": "good",
            "source": "ocsp",
            "tried": [{"source": "ocsp", "url": "http://ocsp.test/", "status": "good"}],
            "checked_at": "2025-06-01T11:00:00+00:00",
            "reason": None,
            "revoked_at": None,
        },
    }


def _status(pki: TestPKI, card: IssuedCard, revocation: RevocationVerdict | None = None) -> str:
    parsed = load_certificate(card.der())
    status, chain = certificate_status(parsed, trust=pki.trust_store(), at=NOW)
    report = inspect(parsed, status=status, chain=chain, revocation=revocation, accepted_by=[])
    if status == "untrusted":
        assert report["chain"] == [parsed.subject]
    return str(report["status"])


def test_certificate_statuses_before_revocation(pki: TestPKI) -> None:
    good = _verdict()
    assert _status(pki, pki.issue_person(), good) == "valid"
    assert _status(pki, pki.issue_person(issuer=pki.lookalike_ca(IssuerCA.MOICA))) == "untrusted"
    expired = pki.issue_person(valid_to=NOW - SECOND, valid_from=NOW - DAY)
    assert _status(pki, expired, good) == "expired"
    assert _status(pki, pki.issue_person(valid_from=NOW + SECOND), good) == "not_yet_valid"
    # key usage does not change the status: inspect explains, the card check refuses
    encryption = pki.issue_person(key_usage=("key_encipherment", "data_encipherment"))
    assert _status(pki, encryption, good) == "valid"


def test_inspect_a_revoked_card(pki: TestPKI) -> None:
    card = pki.issue_person()
    revoked = RevocationVerdict(
        RevocationStatus.REVOKED,
        RevocationSource.CRL,
        CHECKED,
        subject=load_certificate(card.der()).subject,
        tried=(
            {"source": "ocsp", "url": None, "status": "unknown", "problem": "no_responder"},
            {"source": "crl", "crl_number": "7", "status": "revoked", "problem": None},
        ),
        reason=x509.ReasonFlags.key_compromise,
        revoked_at=REVOKED_AT,
        crl_number=7,
    )
    report = _inspect(load_certificate(card.der()), pki.trust_store(), revoked)
    assert report["status"] == "revoked"
    assert report["revocation"] == {
        "status": "revoked",
        "source": "crl",
        "tried": [
            {"source": "ocsp", "url": None, "status": "unknown", "problem": "no_responder"},
            {"source": "crl", "crl_number": "7", "status": "revoked", "problem": None},
        ],
        "checked_at": "2025-06-01T11:00:00+00:00",
        "reason": "key_compromise",
        "revoked_at": "2025-05-30T08:00:00+00:00",
    }


def test_inspect_a_card_whose_status_is_unknown(pki: TestPKI) -> None:
    card = pki.issue_person()
    unknown = RevocationVerdict(
        RevocationStatus.UNKNOWN,
        RevocationSource.NONE,
        NOW,
        tried=({"source": "crl", "crl_number": None, "status": "unknown", "problem": "stale"},),
    )
    expected = {
        "status": "unknown",
        "source": "none",
        "tried": [{"source": "crl", "crl_number": None, "status": "unknown", "problem": "stale"}],
        "checked_at": "2025-06-01T12:00:00+00:00",
        "reason": None,
        "revoked_at": None,
    }
    # accepted under the soft policy or not, inspect shows what is known
    for verdict in (unknown, unknown.accepted_softly()):
        report = _inspect(load_certificate(card.der()), pki.trust_store(), verdict)
        assert (report["status"], report["revocation"]) == ("revocation_unknown", expected)


def test_revocation_does_not_hide_an_earlier_status(pki: TestPKI) -> None:
    expired = pki.issue_person(valid_to=NOW - SECOND, valid_from=NOW - DAY)
    revoked = _verdict(RevocationStatus.REVOKED)
    assert _status(pki, expired, revoked) == "expired"
    unknown = _verdict(RevocationStatus.UNKNOWN, crl_number=None)
    assert _status(pki, pki.issue_person(valid_from=NOW + SECOND), unknown) == "not_yet_valid"


def test_inspect_an_untrusted_card_asks_nothing(pki: TestPKI) -> None:
    card = pki.issue_person(issuer=pki.lookalike_ca(IssuerCA.MOICA))
    parsed = load_certificate(card.der())
    report = _inspect(parsed, pki.trust_store(), None)
    assert (report["status"], report["chain"]) == ("untrusted", [parsed.subject])
    assert report["revocation"] == {
        "status": "unknown",
        "source": "none",
        "tried": [],
        "checked_at": None,
        "reason": None,
        "revoked_at": None,
    }


def test_inspect_real_card_shows_the_full_chain() -> None:
    trust = TrustStore(
        [vector("grca-g1-2002-root")], [vector("grca-2012-link"), vector("moeaca-g2-ca")]
    )
    report = _inspect(
        parsed_vector("moeaca-ee-g2-2019-citibank"), trust, _verdict(), at=INSIDE_G2_ERA
    )
    assert report["status"] == "valid"
    assert report["chain"] == [
        "serialNumber=28421312,O=花旗(台灣)商業銀行股份有限公司,C=TW",
        "OU=工商憑證管理中心,O=行政院,C=TW",
        "O=Government Root Certification Authority,C=TW",
        "O=Government Root Certification Authority,C=TW",
    ]
    assert report["identity"] == {"ubn": "28421312", "card_rank": "secondary"}
    assert report["serial"] == "B9E6EE38F8053CA254D25C871D24D04E"


def test_nothing_but_swreg_errors_from_the_checks(pki: TestPKI) -> None:
    parsed: ParsedCertificate = parsed_vector("related-taica-test-fxml-ee-2022")
    with pytest.raises(SwregError) as caught:  # its issuer certificate is not available
        check_login_certificate(parsed, trust=pki.trust_store(), at=NOW, profile=None)
    assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED


def test_unknown_ca_is_refused_even_when_trusted(pki: TestPKI) -> None:
    card = _unknown_ca_card(pki)
    trust = TrustStore([*pki.anchors(), card.chain[0]])
    parsed = load_certificate(card.der())
    assert trust.build_path(parsed.certificate)  # the chain itself would pass
    with pytest.raises(CertificateError) as caught:
        check_login_certificate(parsed, trust=trust, at=NOW, profile=None)
    assert caught.value.code is ErrorCode.CERTIFICATE_UNTRUSTED
    assert "unknown issuer" in (caught.value.detail or "")
