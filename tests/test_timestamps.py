"""Turnkey judges certificates at the receipt time; only a trusted RFC 3161 token dates earlier.

DESIGN.md §5: a caller's ``signed_at`` and a CMS signingTime are ignored; a time-stamp token
(the SignerInfo's unsigned attribute id-aa-timeStampToken) from a TSA listed in
``SWREG_TSA_CERTS`` may set an earlier time, its genTime. The tokens here are made by a real
TSA, ``openssl ts -reply``, over the SignerInfo's signature value; the attacks are backdating
(signingTime, ``signed_at``), tokens from other TSAs, tokens over another signature, altered
tokens and a look-alike TSA certificate.

The scene of most tests: a TaiCA signing certificate valid until tomorrow, signed today (the
real time: openssl stamps it), verified with the clock two days ahead — the certificate expired
yesterday from the verifier's point of view.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from engine import App, ErrorCode, FixedClock, Settings, SwregError, UsageError, bootstrap
from engine.cli import app as cli_app
from engine.pki.cms import TimestampAuthority, read_signed_data, timestamp_time
from engine.pki.der import CONTEXT_0, SEQUENCE, SET, DerReader
from engine.services.turnkey import TurnkeyVerifier, load_timestamp_authorities
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app

from .conftest import SECRET
from .test_turnkey import MESSAGE, UBN, cms, register, revoke

_TIMESTAMP_TOKEN_OID = bytes.fromhex("060b2a864886f70d010910020e")  # id-aa-timeStampToken


# -- a real TSA: openssl ts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Tsa:
    """A time-stamping authority run by ``openssl ts -reply`` with its certificate and key."""

    certificate: x509.Certificate
    folder: Path

    @classmethod
    def create(
        cls,
        folder: Path,
        *,
        key_type: str = "rsa",
        name: str = "swreg TEST TSA",
        serial: int | None = None,
        valid_to: datetime | None = None,
        eku: bool = True,
    ) -> Tsa:
        folder.mkdir(parents=True, exist_ok=True)
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if key_type == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        now = datetime.now(UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30))
            .not_valid_after(valid_to or now + timedelta(days=365))
        )
        if eku:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
            )
        certificate = builder.sign(key, hashes.SHA256())
        (folder / "tsa.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (folder / "tsa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / "serial").write_text("01\n")
        (folder / "tsa.cnf").write_text(
            "[ tsa ]\ndefault_tsa = tsa_config\n"
            "[ tsa_config ]\n"
            f"serial = {folder / 'serial'}\n"
            "default_policy = 1.2.3.4.1\n"
            "digests = sha256, sha384, sha512\n"
            "accuracy = secs:1\n"
            "ess_cert_id_alg = sha256\n"
            "signer_digest = sha256\n"
        )
        return cls(certificate, folder)

    @property
    def pem_file(self) -> Path:
        return self.folder / "tsa.pem"

    def authority(self) -> TimestampAuthority:
        return TimestampAuthority.of(self.certificate)

    def stamp(self, data: bytes, *, digest: str = "sha256") -> bytes:
        """A TimeStampToken (DER) whose messageImprint is the ``digest`` hash of ``data``."""
        query, token = self.folder / "query.tsq", self.folder / "token.der"
        imprint = hashlib.new(digest, data).hexdigest()
        self._openssl("-query", "-digest", imprint, f"-{digest}", "-no_nonce", "-out", query)
        self._openssl(
            "-reply", "-config", self.folder / "tsa.cnf", "-queryfile", query,
            "-signer", self.pem_file, "-inkey", self.folder / "tsa.key",
            "-token_out", "-out", token,
        )  # fmt: skip
        return token.read_bytes()

    @staticmethod
    def _openssl(*args: str | Path) -> None:
        done = subprocess.run(
            ["openssl", "ts", *map(str, args)], capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr.decode()


def gen_time_span(token: bytes) -> tuple[int, int]:
    """Where the TSTInfo's genTime digits lie in ``token`` (read independently of the code
    under test: SignedData → encapContentInfo → eContent → TSTInfo field 5)."""
    reader = DerReader(token)
    outer = reader.parts(reader.element(0), SEQUENCE)
    signed_data = reader.parts(reader.parts(outer[1], CONTEXT_0)[0], SEQUENCE)
    encapsulated = reader.parts(signed_data[2], SEQUENCE)
    content = reader.parts(encapsulated[1], CONTEXT_0)[0]
    tst = reader.parts(reader.element(content.content, content.content_end), SEQUENCE)
    return tst[4].content, tst[4].content_end


def gen_time(token: bytes) -> datetime:
    start, end = gen_time_span(token)
    text = token[start:end].decode("ascii").rstrip("Z").split(".")[0]
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def with_token(signed: bytes, token: bytes) -> bytes:
    """``signed`` (a DER CMS SignedData, one signer) with ``token`` as the signer's unsigned
    attribute id-aa-timeStampToken, every enclosing length rewritten."""
    reader = DerReader(signed)
    outer = reader.parts(reader.element(0), SEQUENCE)
    signed_data = reader.parts(outer[1], CONTEXT_0)[0]
    parts = reader.parts(signed_data, SEQUENCE)
    infos = parts[-1]
    (info,) = reader.parts(infos, SET)
    attribute = _tlv(0x30, _TIMESTAMP_TOKEN_OID + _tlv(0x31, token))
    new_info = _tlv(0x30, signed[info.content : info.content_end] + _tlv(0xA1, attribute))
    new_signed_data = _tlv(0x30, signed[signed_data.content : infos.start] + _tlv(0x31, new_info))
    return _tlv(0x30, signed[outer[0].start : outer[0].end] + _tlv(0xA0, new_signed_data))


def signature_value(signed: bytes) -> bytes:
    return read_signed_data(signed)[0].signature


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Tsa:
    return Tsa.create(tmp_path_factory.mktemp("tsa"))


@pytest.fixture(scope="module")
def other_tsa(tmp_path_factory: pytest.TempPathFactory) -> Tsa:
    return Tsa.create(tmp_path_factory.mktemp("other-tsa"), key_type="ec", name="another TSA")


@pytest.fixture
def card(pki: TestPKI) -> IssuedCard:
    """A signing certificate that expires tomorrow (real time)."""
    return pki.issue_customs(UBN, "06", key="rsa", valid_to=pki.now + timedelta(days=1))


@dataclass
class Scene:
    app: App
    clock: FixedClock
    card: IssuedCard
    signed: bytes  # a detached CMS made now (its signingTime is now, the real time)

    def verifier(self, *authorities: Tsa) -> TurnkeyVerifier:
        return TurnkeyVerifier(
            self.app.database,
            self.clock,
            self.app.trust,
            self.app.revocation_checks,
            timestamp_authorities=[a.authority() for a in authorities],
            recheck_interval=0,
        )

    def expire(self) -> None:
        """Move the clock to the day after tomorrow: the certificate expired yesterday."""
        self.clock.set(self.card.certificate.not_valid_after_utc + timedelta(days=1))


@pytest.fixture
def scene(app: App, clock: FixedClock, card: IssuedCard) -> Scene:
    register(app, card)
    return Scene(app, clock, card, cms(card))


def code_of(verifier: TurnkeyVerifier, signature: bytes) -> ErrorCode:
    with pytest.raises(SwregError) as caught:
        verifier.verify(UBN, MESSAGE, signature)
    return caught.value.code


# -- the receipt time counts ---------------------------------------------------------------------


def test_a_cms_signing_time_inside_the_validity_does_not_rescue_an_expired_certificate(
    scene: Scene, tsa: Tsa
) -> None:
    verifier = scene.verifier(tsa)
    assert verifier.verify(UBN, MESSAGE, scene.signed).signed_at == scene.clock.now()
    scene.expire()  # the CMS still says it was signed today, inside the validity
    assert code_of(verifier, scene.signed) is ErrorCode.CERTIFICATE_EXPIRED
    assert code_of(verifier, scene.card.sign(MESSAGE)) is ErrorCode.CERTIFICATE_EXPIRED


def test_a_valid_certificate_verifies_at_the_receipt_time_whatever_the_signing_time(
    scene: Scene,
) -> None:
    scene.clock.advance(timedelta(hours=12))  # the signingTime is 12 hours before receipt
    result = scene.verifier().verify(UBN, MESSAGE, scene.signed)
    assert result.signed_at == scene.clock.now()


def test_the_api_ignores_signed_at(scene: Scene) -> None:
    body = {
        "sender": UBN,
        "message": base64.b64encode(MESSAGE).decode(),
        "signature": base64.b64encode(scene.card.sign(MESSAGE)).decode(),
        "signed_at": (scene.clock.now() - timedelta(days=30)).isoformat(),  # last month
    }
    with TestClient(create_app(scene.app)) as client:

        def post() -> Any:
            token = client.get("/api/csrf").json()["token"]
            return client.post("/api/turnkey/verify", json=body, headers={"X-CSRF-Token": token})

        answer = post()
        assert answer.status_code == 200, answer.text
        assert datetime.fromisoformat(answer.json()["signed_at"]) == scene.clock.now()
        scene.expire()
        scene.app.turnkey.forget()
        refused = post()
        assert (refused.status_code, refused.json()["errors"][0]["code"]) == (
            422,
            "certificate_expired",
        )


def test_the_cli_ignores_signed_at_and_says_so(scene: Scene, db_url: str, tmp_path: Path) -> None:
    message, signature = tmp_path / "message.xml", tmp_path / "message.sig"
    message.write_bytes(MESSAGE)
    signature.write_bytes(scene.card.sign(MESSAGE))
    env = {"SWREG_DATABASE_URL": db_url, "SWREG_SECRET_KEY": SECRET.hex()}
    inside = (scene.card.certificate.not_valid_after_utc - timedelta(days=1)).isoformat()
    late = (scene.card.certificate.not_valid_after_utc + timedelta(days=1)).isoformat()
    args = ["turnkey", "verify", "--sender", UBN, "--message", str(message)]
    args += ["--signature", str(signature), "--json"]
    for claimed in (inside, late, "not even a time"):  # none of them counts: now (real) does
        result = CliRunner().invoke(cli_app, [*args, "--signed-at", claimed], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["ok"] is True
        assert "--signed-at is ignored" in result.stderr


# -- trusted time-stamp tokens -------------------------------------------------------------------


def test_a_token_from_a_listed_tsa_dates_the_signature(scene: Scene, tsa: Tsa) -> None:
    token = tsa.stamp(signature_value(scene.signed))
    stamped = with_token(scene.signed, token)
    verifier = scene.verifier(tsa)
    assert verifier.verify(UBN, MESSAGE, stamped).signed_at == scene.clock.now()  # not earlier
    scene.expire()
    result = verifier.verify(UBN, MESSAGE, stamped)
    assert result.signed_at == gen_time(token)
    assert result.serial == format(scene.card.certificate.serial_number, "X")
    assert code_of(verifier, scene.signed) is ErrorCode.CERTIFICATE_EXPIRED  # the same, no token


@pytest.mark.parametrize("digest", ["sha384", "sha512"])
def test_other_imprint_hashes_are_believed_too(scene: Scene, tsa: Tsa, digest: str) -> None:
    stamped = with_token(scene.signed, tsa.stamp(signature_value(scene.signed), digest=digest))
    scene.expire()
    assert scene.verifier(tsa).verify(UBN, MESSAGE, stamped).signed_at < scene.clock.now()


def test_a_token_from_an_unlisted_tsa_is_ignored(scene: Scene, tsa: Tsa, other_tsa: Tsa) -> None:
    stamped = with_token(scene.signed, other_tsa.stamp(signature_value(scene.signed)))
    scene.expire()
    assert code_of(scene.verifier(tsa), stamped) is ErrorCode.CERTIFICATE_EXPIRED
    assert code_of(scene.verifier(), stamped) is ErrorCode.CERTIFICATE_EXPIRED  # none listed
    assert scene.verifier(other_tsa).verify(UBN, MESSAGE, stamped).serial  # listed: believed


def test_a_look_alike_of_the_listed_tsa_is_ignored(scene: Scene, tsa: Tsa, tmp_path: Path) -> None:
    """Same name and serial number as the listed TSA's certificate, another key."""
    name = tsa.certificate.subject.rfc4514_string().removeprefix("CN=")
    forger = Tsa.create(tmp_path / "forger", name=name, serial=tsa.certificate.serial_number)
    stamped = with_token(scene.signed, forger.stamp(signature_value(scene.signed)))
    scene.expire()
    assert code_of(scene.verifier(tsa), stamped) is ErrorCode.CERTIFICATE_EXPIRED


def test_a_token_over_another_signature_is_ignored(scene: Scene, tsa: Tsa) -> None:
    """A genuine token, moved from an earlier signature onto a signature made after expiry."""
    earlier = cms(scene.card, b"an earlier message")
    token = tsa.stamp(signature_value(earlier))
    assert scene.verifier(tsa).verify(UBN, b"an earlier message", with_token(earlier, token))
    stamped = with_token(scene.signed, token)
    scene.expire()
    assert code_of(scene.verifier(tsa), stamped) is ErrorCode.CERTIFICATE_EXPIRED


def test_an_altered_token_is_ignored(scene: Scene, tsa: Tsa) -> None:
    token = tsa.stamp(signature_value(scene.signed))
    start, _ = gen_time_span(token)
    year = int(token[start : start + 4])
    earlier = token[:start] + str(year - 1).encode() + token[start + 4 :]  # a year earlier
    assert gen_time(earlier) < gen_time(token)
    scene.expire()
    verifier = scene.verifier(tsa)
    assert code_of(verifier, with_token(scene.signed, earlier)) is ErrorCode.CERTIFICATE_EXPIRED
    not_a_token = b"\x30\x03\x02\x01\x00"  # ignored, not a crash
    assert code_of(verifier, with_token(scene.signed, not_a_token)) is (
        ErrorCode.CERTIFICATE_EXPIRED
    )
    assert verifier.verify(UBN, MESSAGE, with_token(scene.signed, token)).serial  # untouched


def test_a_token_dated_after_the_receipt_is_not_used(scene: Scene, tsa: Tsa) -> None:
    stamped = with_token(scene.signed, tsa.stamp(signature_value(scene.signed)))
    scene.clock.set(scene.card.certificate.not_valid_before_utc + timedelta(minutes=1))
    result = scene.verifier(tsa).verify(UBN, MESSAGE, stamped)
    assert result.signed_at == scene.clock.now()  # the receipt time, earlier than genTime


def test_a_trusted_token_never_makes_a_revoked_certificate_count(
    scene: Scene, tsa: Tsa, pki: TestPKI
) -> None:
    stamped = with_token(scene.signed, tsa.stamp(signature_value(scene.signed)))
    revoke(scene.app, pki, scene.card)
    assert code_of(scene.verifier(tsa), stamped) is ErrorCode.CERTIFICATE_REVOKED


def test_a_tsa_certificate_expired_at_gen_time_is_not_believed(
    scene: Scene, tmp_path: Path
) -> None:
    lapsed = Tsa.create(tmp_path / "lapsed", valid_to=datetime.now(UTC) - timedelta(days=1))
    token = lapsed.stamp(signature_value(scene.signed))
    assert timestamp_time(token, signature_value(scene.signed), [lapsed.authority()]) is None
    scene.expire()
    stamped = with_token(scene.signed, token)
    assert code_of(scene.verifier(lapsed), stamped) is ErrorCode.CERTIFICATE_EXPIRED


# -- configuration: SWREG_TSA_CERTS ------------------------------------------------------------


def test_the_configured_tsa_reaches_the_app(
    scene: Scene, tsa: Tsa, settings: Settings, clock: FixedClock, pki: TestPKI
) -> None:
    stamped = with_token(scene.signed, tsa.stamp(signature_value(scene.signed)))
    scene.expire()
    assert code_of(scene.app.turnkey, stamped) is ErrorCode.CERTIFICATE_EXPIRED  # none listed
    der = tsa.folder / "tsa.der"
    der.write_bytes(tsa.certificate.public_bytes(serialization.Encoding.DER))
    for listed in (tsa.pem_file, der):
        app = bootstrap(replace(settings, tsa_certs=(listed,)), clock=clock)
        try:
            assert app.turnkey.verify(UBN, MESSAGE, stamped).signed_at < clock.now()
        finally:
            app.close()


def test_unusable_tsa_files_are_a_usage_error(tmp_path: Path) -> None:
    no_eku = Tsa.create(tmp_path / "no-eku", eku=False)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for path in (no_eku.pem_file, garbage, tmp_path / "missing.pem"):
        with pytest.raises(UsageError) as caught:
            load_timestamp_authorities([path])
        assert str(path) in (caught.value.detail or "")
    settings = Settings.from_env({"SWREG_TSA_CERTS": f"{no_eku.pem_file}, {garbage}"})
    assert settings.tsa_certs == (no_eku.pem_file, garbage)


def test_a_cms_without_a_token_is_read_as_before(scene: Scene, tsa: Tsa) -> None:
    """The hot path reads no unsigned attributes when there are none."""
    (signer,) = read_signed_data(scene.signed)
    assert signer.timestamp_token is None
    token = tsa.stamp(signer.signature)
    (stamped,) = read_signed_data(with_token(scene.signed, token))
    assert stamped.timestamp_token == token
    assert stamped._replace(timestamp_token=None) == signer
