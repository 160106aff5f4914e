"""A test PKI shaped like GPKI and TaiCA, and card certificates shaped like the real ones.

**Test material only.** Every CA name says ``swreg TEST … (測試用)``, every certificate carries the
GPKI *test* policy 2.16.886.101.0.3.0, keys are generated in memory per :class:`TestPKI` and never
written anywhere except by the explicit ``write_*`` helpers.

Layout (DOMAIN.md §3.1, §3.2a, §3.7)::

    C=TW, O=行政院, CN=swreg TEST Government Root CA (測試用)          self-signed (GRCA-like)
    ├── C=TW, O=行政院, OU=內政部憑證管理中心, CN=swreg TEST MOICA (測試用)
    ├── … OU=工商憑證管理中心 (MOEACA), OU=組織及團體憑證管理中心 (XCA), OU=政府憑證管理中心 (GCA)
    C=TW, O=TAIWAN-CA, OU=Root CA, CN=swreg TEST TWCA Root CA (測試用)  self-signed (TWCA-like)
    └── C=TW, O=Finance, OU=TaiCA Test FXML CA, CN=swreg TEST TaiCA (測試用)

Card certificates look like real ones: no SAN, no EKU, no BasicConstraints, keyUsage critical
digitalSignature only, AKI and SKI, the test policy, and Subject Directory Attributes
(non-critical, ascending OID order) holding the identity.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from engine.core.declarations import IssuerCA
from engine.pki.certificate import SDA_OID
from engine.pki.trust import TrustStore

KeyType = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

TEST_POLICY_OID = x509.ObjectIdentifier("2.16.886.101.0.3.0")
"""The GPKI test certificate policy: everything this module makes carries it."""

SUBJECT_CLASS_CITIZEN = "2.16.886.1.100.3.1.1"
SUBJECT_CLASS_COMPANY = "2.16.886.1.100.3.2.2.1.1"
SUBJECT_CLASS_ORGANIZATION = "2.16.886.1.100.3.2.11"
SUBJECT_CLASS_AGENCY = "2.16.886.1.100.3.2.1.1"

_SDA_CLASS = "2.16.886.1.100.2.1"
_SDA_RANK = "2.16.886.1.100.2.2"
_SDA_LAST4 = "2.16.886.1.100.2.51"
_SDA_UBN = "2.16.886.1.100.2.101"
_SDA_OID = "2.16.886.1.100.2.102"

_GPKI_OU: Mapping[IssuerCA, str] = MappingProxyType(
    {
        IssuerCA.MOICA: "內政部憑證管理中心",
        IssuerCA.MOEACA: "工商憑證管理中心",
        IssuerCA.XCA: "組織及團體憑證管理中心",
        IssuerCA.GCA: "政府憑證管理中心",
    }
)
_TAICA_OU = "TaiCA Test FXML CA"
_TEST = "(測試用)"

_CARD_VALIDITY_BEFORE = timedelta(days=1)
_CARD_VALIDITY_AFTER = timedelta(days=730)
_CA_VALIDITY_BEFORE = timedelta(days=365)
_CA_VALIDITY_AFTER = timedelta(days=3650)
_ROOT_VALIDITY_AFTER = timedelta(days=7300)

_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


class TrustTarget(Protocol):
    """What :meth:`TestPKI.publish_to` needs of a trust service."""

    def add_certificate(self, data: bytes, *, anchor: bool = True, actor: str = "cli") -> object:
        """Trust a CA certificate."""

    def add_crl(self, data: bytes, *, actor: str = "cli") -> object:
        """Store a CRL."""


@dataclass(frozen=True, slots=True)
class TestCA:
    """A test CA: its certificate and key. ``family`` is ``None`` for the two roots."""

    __test__ = False  # not a pytest test class

    certificate: x509.Certificate
    key: PrivateKey
    family: IssuerCA | None = None

    @property
    def name(self) -> x509.Name:
        return self.certificate.subject

    @property
    def key_identifier(self) -> bytes:
        return _ski(self.certificate)


@dataclass(frozen=True, slots=True)
class IssuedCard:
    """A card (or software) certificate with its private key; ``chain`` runs up to the root."""

    certificate: x509.Certificate
    key: PrivateKey
    ca: IssuerCA
    chain: tuple[x509.Certificate, ...] = field(default=())

    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM (test material: for refusal tests)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def chain_der(self) -> tuple[bytes, ...]:
        """The CA certificates (issuing CA first), DER, as a card would send them along."""
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.chain)

    def sign(self, message: bytes, *, raw: bool = False) -> bytes:
        """SHA-256 signature as a card makes it: RSA PKCS#1 v1.5, or ECDSA (DER; ``raw`` r‖s)."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        signature = self.key.sign(message, ec.ECDSA(hashes.SHA256()))
        if not raw:
            return signature
        r, s = decode_dss_signature(signature)
        size = (self.key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


class TestPKI:
    """A GPKI-like and a TaiCA-like test hierarchy built around ``now``.

    Build with :meth:`create`; issue cards with ``issue_*``; hand :meth:`anchors` (the two roots)
    and :meth:`intermediates` to a ``TrustStore`` (or call :meth:`trust_store`).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        now: datetime,
        key_type: KeyType,
        root: TestCA,
        twca_root: TestCA,
        cas: Mapping[IssuerCA, TestCA],
    ) -> None:
        self.now = now
        self.key_type = key_type
        self.root = root
        self.twca_root = twca_root
        self.cas = MappingProxyType(dict(cas))

    @classmethod
    def create(cls, now: datetime, *, key_type: KeyType = "ec") -> TestPKI:
        """Build the roots and the five issuing CAs (EC P-256 keys, or RSA-2048)."""
        now = _second(now)
        root = _self_signed_ca(
            _name(O="行政院", CN=f"swreg TEST Government Root CA {_TEST}"),
            _new_key(key_type),
            now,
            now + _ROOT_VALIDITY_AFTER,
        )
        twca_root = _self_signed_ca(
            _name(O="TAIWAN-CA", OU=["Root CA"], CN=f"swreg TEST TWCA Root CA {_TEST}"),
            _new_key(key_type),
            now,
            now + _ROOT_VALIDITY_AFTER,
        )
        cas: dict[IssuerCA, TestCA] = {}
        for family, ou in _GPKI_OU.items():
            subject = _name(O="行政院", OU=[ou], CN=f"swreg TEST {family.value} {_TEST}")
            cas[family] = _sub_ca(subject, _new_key(key_type), root, now, family)
        taica = _name(O="Finance", OU=[_TAICA_OU], CN=f"swreg TEST TaiCA {_TEST}")
        cas[IssuerCA.TAICA] = _sub_ca(taica, _new_key(key_type), twca_root, now, IssuerCA.TAICA)
        return cls(now, key_type, root, twca_root, cas)

    # -- the hierarchy -----------------------------------------------------------------------

    def ca(self, family: IssuerCA) -> TestCA:
        return self.cas[family]

    def anchors(self) -> list[x509.Certificate]:
        """The two self-signed roots."""
        return [self.root.certificate, self.twca_root.certificate]

    def intermediates(self) -> list[x509.Certificate]:
        """The issuing CAs (MOICA, MOEACA, XCA, GCA, TaiCA)."""
        return [ca.certificate for ca in self.cas.values()]

    def trust_store(self, *, with_intermediates: bool = True) -> TrustStore:
        """A trust store over :meth:`anchors` (and :meth:`intermediates`)."""
        return TrustStore(self.anchors(), self.intermediates() if with_intermediates else ())

    def chain_of(self, issuer: TestCA) -> tuple[x509.Certificate, ...]:
        """``issuer`` and the certificates above it up to its root."""
        if issuer.family is None or issuer not in self.cas.values():
            return (issuer.certificate,)
        root = self.twca_root if issuer.family is IssuerCA.TAICA else self.root
        return (issuer.certificate, root.certificate)

    # -- cards -------------------------------------------------------------------------------

    def issue_person(
        self,
        name: str = "王小明",
        id_last4: str = "6789",
        *,
        key: KeyType | None = None,
        card_rank: str | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
        key_usage: Sequence[str] | None = None,
        ca: IssuerCA = IssuerCA.MOICA,
        issuer: TestCA | None = None,
        serial_number: str | None = None,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
    ) -> IssuedCard:
        """自然人憑證: ``C=TW, CN=<name>, serialNumber=<16 chars>``; SDA .1 citizen, .2, .51.

        ``ocsp_url``: an authorityInfoAccess extension naming that OCSP responder; ``crl_url``:
        a CRL distribution point (a partition's URL, as MOICA's cards name theirs). Neither
        without them."""
        serial_rdn = serial_number or "".join(secrets.choice("0123456789") for _ in range(16))
        subject = _name(CN=name, serialNumber=serial_rdn)
        attributes = [(_SDA_CLASS, _der_oid(SUBJECT_CLASS_CITIZEN)), (_SDA_LAST4, _utf8(id_last4))]
        if card_rank is not None:
            attributes.append((_SDA_RANK, _printable(card_rank)))
        return self._issue(
            issuer or self.cas[ca],
            subject,
            attributes,
            key,
            valid_from,
            valid_to,
            key_usage,
            ocsp_url=ocsp_url,
            crl_url=crl_url,
        )

    def issue_company(
        self,
        ubn: str,
        name: str = "測試股份有限公司",
        *,
        rank: str | None = "primary",
        serial_rdn: bool | str = True,
        key: KeyType | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
        key_usage: Sequence[str] | None = None,
        issuer: TestCA | None = None,
    ) -> IssuedCard:
        """工商憑證: ``C=TW, O=<name>[, serialNumber=<ubn>]``; SDA .1 company, .2 rank, .101 UBN.

        ``serial_rdn=False`` leaves the serialNumber out (as on 2011/2013 cards); a string puts
        that value there instead of the UBN (refusal material for ``ubn_conflict``).
        """
        rdn = ubn if serial_rdn is True else serial_rdn if isinstance(serial_rdn, str) else None
        subject = _name(O=name, serialNumber=rdn)
        attributes = [(_SDA_CLASS, _der_oid(SUBJECT_CLASS_COMPANY)), (_SDA_UBN, _utf8(ubn))]
        if rank is not None:
            attributes.append((_SDA_RANK, _printable(rank)))
        return self._issue(
            issuer or self.cas[IssuerCA.MOEACA],
            subject,
            attributes,
            key,
            valid_from,
            valid_to,
            key_usage,
        )

    def issue_organization(
        self,
        oid: str,
        name: str = "測試財團法人",
        *,
        locality: str = "臺北市",
        rank: str | None = None,
        key: KeyType | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
        key_usage: Sequence[str] | None = None,
        issuer: TestCA | None = None,
    ) -> IssuedCard:
        """組織團體憑證 (XCA): ``C=TW, L=<locality>, O=<name>``; SDA .1 …3.2.11, .102 OID."""
        return self._issue_oid_holder(
            IssuerCA.XCA,
            SUBJECT_CLASS_ORGANIZATION,
            oid,
            _name(L=locality, O=name),
            rank,
            key,
            valid_from,
            valid_to,
            key_usage,
            issuer,
        )

    def issue_agency(
        self,
        oid: str,
        name: str = "測試機關",
        *,
        locality: str = "臺北市",
        rank: str | None = None,
        key: KeyType | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
        key_usage: Sequence[str] | None = None,
        issuer: TestCA | None = None,
    ) -> IssuedCard:
        """政府憑證 (GCA): ``C=TW, L=<locality>, O=<name>``; SDA .1 …3.2.1.1, .102 OID."""
        return self._issue_oid_holder(
            IssuerCA.GCA,
            SUBJECT_CLASS_AGENCY,
            oid,
            _name(L=locality, O=name),
            rank,
            key,
            valid_from,
            valid_to,
            key_usage,
            issuer,
        )

    def issue_customs(
        self,
        ubn: str,
        seq: str = "01",
        *,
        system: str = "TST",
        key: KeyType | None = None,
        valid_from: datetime | None = None,
        valid_to: datetime | None = None,
        key_usage: Sequence[str] | None = None,
        issuer: TestCA | None = None,
        ocsp_url: str | None = None,
    ) -> IssuedCard:
        """通關專屬憑證 (TaiCA): ``CN=<ubn>-<seq>-000``, digitalSignature + nonRepudiation.

        Subject ``C=TW, O=Finance, OU=TaiCA Test FXML CA, OU=<ubn>-RA-001, OU=<system>,
        CN=<ubn>-<seq>-000``; a 32-bit serial number; no SDA (DOMAIN.md §3.7). ``ocsp_url``: an
        authorityInfoAccess naming that OCSP responder.
        """
        subject = _name(O="Finance", OU=[_TAICA_OU, f"{ubn}-RA-001", system], CN=f"{ubn}-{seq}-000")
        return self._issue(
            issuer or self.cas[IssuerCA.TAICA],
            subject,
            None,
            key,
            valid_from,
            valid_to,
            key_usage or ("digital_signature", "content_commitment"),
            serial=secrets.randbits(31) | (1 << 30),
            end_entity_constraints=True,
            ocsp_url=ocsp_url,
        )

    # -- refusal material --------------------------------------------------------------------

    def lookalike_ca(self, family: IssuerCA, *, copy_key_identifier: bool = False) -> TestCA:
        """A self-signed CA with the exact DN of the test ``family`` CA but its own key.

        Cards it issues must be refused with ``certificate_untrusted``. With
        ``copy_key_identifier`` it also claims the real CA's SKI, so only the signature check
        can tell it apart.
        """
        real = self.cas[family]
        key = _new_key(self.key_type)
        ski = real.key_identifier if copy_key_identifier else None
        forged = _self_signed_ca(
            real.name, key, self.now, self.now + _CA_VALIDITY_AFTER, key_identifier=ski
        )
        return TestCA(forged.certificate, key, family)

    def crl(
        self,
        ca: IssuerCA | TestCA,
        revoked: Iterable[IssuedCard | x509.Certificate] = (),
        number: int = 1,
        *,
        this_update: datetime | None = None,
        next_update: datetime | None = None,
        partition: Sequence[str] = (),
        reason: x509.ReasonFlags | None = None,
        signing_key: PrivateKey | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL of ``ca`` listing ``revoked``, with CRL number ``number`` and an AKI.

        ``partition``: the full-name URIs of an issuingDistributionPoint (a partitioned CRL, as
        MOICA and MOEACA publish them); ``reason``: the reasonCode of every entry;
        ``signing_key``: sign with this key instead of the CA's (refusal material).
        """
        issuer = ca if isinstance(ca, TestCA) else self.cas[ca]
        last = _second(this_update or self.now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.name)
            .last_update(last)
            .next_update(_second(next_update or last + timedelta(days=7)))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(_aki(issuer), critical=False)
        )
        if partition:
            names = [x509.UniformResourceIdentifier(uri) for uri in partition]
            idp = x509.IssuingDistributionPoint(names, None, False, False, None, False, False)
            builder = builder.add_extension(idp, critical=True)
        for item in revoked:
            cert = item.certificate if isinstance(item, IssuedCard) else item
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(last)
            )
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(signing_key or issuer.key, hashes.SHA256())

    def published_crls(
        self, *, next_update: datetime | None = None
    ) -> list[x509.CertificateRevocationList]:
        """One empty CRL per CA — the two roots and the five issuing CAs —, as a real PKI
        publishes them, so that the default ``hard`` revocation policy knows every status.

        Number 1, thisUpdate an hour before :attr:`now` (so a test's own CRL made with
        :meth:`crl` at :attr:`now` is newer), nextUpdate ``next_update`` or, by default, the CA
        certificate's notAfter (a test may move its clock far ahead)."""
        earlier = self.now - timedelta(hours=1)
        return [
            self.crl(
                ca,
                this_update=earlier,
                next_update=next_update or ca.certificate.not_valid_after_utc,
            )
            for ca in (self.root, self.twca_root, *self.cas.values())
        ]

    def publish_to(self, trust: TrustTarget, *, actor: str = "test", crls: bool = True) -> None:
        """Trust this PKI in ``trust`` (an app's ``TrustService``): the roots as anchors, the
        issuing CAs as intermediates and, with ``crls``, :meth:`published_crls`."""
        for anchor in self.anchors():
            trust.add_certificate(self.der(anchor), actor=actor)
        for ca in self.intermediates():
            trust.add_certificate(self.der(ca), anchor=False, actor=actor)
        if crls:
            for crl in self.published_crls():
                trust.add_crl(crl.public_bytes(serialization.Encoding.DER), actor=actor)

    def trust_commands(self, folder: str | Path) -> list[list[str]]:
        """The ``swreg`` commands an operator would run to trust this PKI — ``trust add`` for
        the roots, ``trust add --intermediate`` for the issuing CAs, ``crl add`` for
        :meth:`published_crls` — with their files written to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        commands: list[list[str]] = []
        for i, anchor in enumerate(self.anchors()):
            path = folder / f"trusted-root-{i}.cer"
            path.write_bytes(self.der(anchor))
            commands.append(["trust", "add", str(path)])
        for i, ca in enumerate(self.intermediates()):
            path = folder / f"trusted-ca-{i}.cer"
            path.write_bytes(self.der(ca))
            commands.append(["trust", "add", "--intermediate", str(path)])
        for i, crl in enumerate(self.published_crls()):
            path = folder / f"published-{i}.crl"
            path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
            commands.append(["crl", "add", str(path)])
        return commands

    # -- files -------------------------------------------------------------------------------

    @staticmethod
    def der(cert: x509.Certificate | IssuedCard) -> bytes:
        """A certificate (or a card's certificate) as DER."""
        certificate = cert.certificate if isinstance(cert, IssuedCard) else cert
        return certificate.public_bytes(serialization.Encoding.DER)

    @staticmethod
    def pkcs12_bytes(card: IssuedCard, pin: str, *, include_chain: bool = True) -> bytes:
        return pkcs12_bytes(card, pin, include_chain=include_chain)

    @staticmethod
    def write_pkcs12(
        card: IssuedCard, path: str | Path, pin: str, *, include_chain: bool = True
    ) -> Path:
        return write_pkcs12(card, path, pin, include_chain=include_chain)

    @staticmethod
    def write_pem(cert: x509.Certificate | IssuedCard, path: str | Path) -> Path:
        return write_pem(cert, path)

    # -- internals ---------------------------------------------------------------------------

    def _issue_oid_holder(
        self,
        family: IssuerCA,
        subject_class: str,
        oid: str,
        subject: x509.Name,
        rank: str | None,
        key: KeyType | None,
        valid_from: datetime | None,
        valid_to: datetime | None,
        key_usage: Sequence[str] | None,
        issuer: TestCA | None,
    ) -> IssuedCard:
        attributes = [(_SDA_CLASS, _der_oid(subject_class)), (_SDA_OID, _der_oid(oid))]
        if rank is not None:
            attributes.append((_SDA_RANK, _printable(rank)))
        return self._issue(
            issuer or self.cas[family], subject, attributes, key, valid_from, valid_to, key_usage
        )

    def _issue(
        self,
        issuer: TestCA,
        subject: x509.Name,
        attributes: list[tuple[str, bytes]] | None,
        key: KeyType | None,
        valid_from: datetime | None,
        valid_to: datetime | None,
        key_usage: Sequence[str] | None,
        *,
        serial: int | None = None,
        end_entity_constraints: bool = False,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
    ) -> IssuedCard:
        private = _new_key(key or self.key_type)
        not_before = _second(valid_from or self.now - _CARD_VALIDITY_BEFORE)
        not_after = _second(valid_to or self.now + _CARD_VALIDITY_AFTER)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.name)
            .public_key(private.public_key())
            .serial_number(serial if serial is not None else secrets.randbits(128) | 1 << 127)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(_aki(issuer), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False
            )
            .add_extension(_key_usage(key_usage or ("digital_signature",)), critical=True)
            .add_extension(_test_policy(), critical=False)
        )
        if end_entity_constraints:
            builder = builder.add_extension(x509.BasicConstraints(False, None), critical=False)
        if attributes:
            builder = builder.add_extension(_sda(attributes), critical=False)
        if ocsp_url is not None:
            access = x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
            builder = builder.add_extension(
                x509.AuthorityInformationAccess([access]), critical=False
            )
        if crl_url is not None:
            point = x509.DistributionPoint(
                [x509.UniformResourceIdentifier(crl_url)], None, None, None
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        certificate = builder.sign(issuer.key, hashes.SHA256())
        family = issuer.family or IssuerCA.UNKNOWN
        return IssuedCard(certificate, private, family, self.chain_of(issuer))


# -- files -------------------------------------------------------------------------------------


def pkcs12_bytes(card: IssuedCard, pin: str, *, include_chain: bool = True) -> bytes:
    """A PKCS#12 holding the card's key and certificate, password = ``pin``, CA chain beside."""
    return pkcs12.serialize_key_and_certificates(
        b"swreg TEST card (test material)",
        card.key,
        card.certificate,
        list(card.chain) if include_chain else None,
        serialization.BestAvailableEncryption(pin.encode("utf-8")),
    )


def write_pkcs12(
    card: IssuedCard, path: str | Path, pin: str, *, include_chain: bool = True
) -> Path:
    """Write :func:`pkcs12_bytes` to ``path`` (mode 0600) and return the path."""
    target = Path(path)
    target.write_bytes(pkcs12_bytes(card, pin, include_chain=include_chain))
    target.chmod(0o600)
    return target


def write_pem(cert: x509.Certificate | IssuedCard, path: str | Path) -> Path:
    """Write a certificate as PEM and return the path."""
    certificate = cert.certificate if isinstance(cert, IssuedCard) else cert
    target = Path(path)
    target.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return target


_SHA1_RESIGN = {  # (the SHA-256 AlgorithmIdentifier cryptography writes, its SHA-1 twin)
    "rsa": (
        bytes.fromhex("300d06092a864886f70d01010b0500"),  # sha256WithRSAEncryption, NULL
        bytes.fromhex("300d06092a864886f70d0101050500"),  # sha1WithRSAEncryption, NULL
    ),
    "ec": (
        bytes.fromhex("300a06082a8648ce3d040302"),  # ecdsa-with-SHA256
        bytes.fromhex("300906072a8648ce3d0401"),  # ecdsa-with-SHA1
    ),
}


def sha1_signed(certificate: x509.Certificate, issuer_key: PrivateKey) -> x509.Certificate:
    """``certificate`` (made with SHA-256 by ``issuer_key``) signed again with SHA-1.

    Refusal material: cryptography no longer signs with SHA-1, so the TBS's algorithm is
    rewritten and the signature made by hand (RSA PKCS#1 v1.5 or ECDSA).
    """
    old, new = _SHA1_RESIGN["rsa" if isinstance(issuer_key, rsa.RSAPrivateKey) else "ec"]
    tbs = certificate.tbs_certificate_bytes
    header = 2 + (tbs[1] & 0x7F if tbs[1] > 0x80 else 0)
    body = tbs[header:]
    if body.count(old) != 1:
        raise ValueError("not a certificate signed with SHA-256 by a key of this type")
    resigned = _tlv(0x30, body.replace(old, new))
    if isinstance(issuer_key, rsa.RSAPrivateKey):
        signature = issuer_key.sign(resigned, padding.PKCS1v15(), hashes.SHA1())
    else:
        signature = issuer_key.sign(resigned, ec.ECDSA(hashes.SHA1()))
    der = _tlv(0x30, resigned + new + _tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


# -- building blocks ---------------------------------------------------------------------------


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key type must be 'rsa' or 'ec', not {key_type!r}")


def _second(moment: datetime) -> datetime:
    """Aware UTC at whole seconds (certificate times have no fractions)."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.replace(microsecond=0)


def _name(
    *,
    O: str | None = None,  # noqa: E741 - X.500 attribute names
    OU: Sequence[str] = (),
    L: str | None = None,
    CN: str | None = None,
    serialNumber: str | None = None,
) -> x509.Name:
    """``C=TW`` followed by the given attributes, in the order GPKI certificates use."""
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "TW")]
    if L is not None:
        attributes.append(x509.NameAttribute(NameOID.LOCALITY_NAME, L))
    if O is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, O))
    attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou) for ou in OU]
    if CN is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, CN))
    if serialNumber is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serialNumber))
    return x509.Name(attributes)


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(issuer: TestCA) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier(issuer.key_identifier, None, None)


def _key_usage(names: Sequence[str]) -> x509.KeyUsage:
    unknown = set(names) - set(_KEY_USAGE_FLAGS)
    if unknown:
        raise ValueError(f"unknown key usage: {sorted(unknown)}")
    flags = {flag: flag in names for flag in _KEY_USAGE_FLAGS}
    return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


def _test_policy() -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(TEST_POLICY_OID, None)])


def _self_signed_ca(
    subject: x509.Name,
    key: PrivateKey,
    not_before: datetime,
    not_after: datetime,
    *,
    key_identifier: bytes | None = None,
) -> TestCA:
    ski = x509.SubjectKeyIdentifier(
        key_identifier or x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before - _CA_VALIDITY_BEFORE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(("key_cert_sign", "crl_sign")), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(_test_policy(), critical=False)
        .sign(key, hashes.SHA256())
    )
    return TestCA(certificate, key, None)


def _sub_ca(
    subject: x509.Name, key: PrivateKey, parent: TestCA, now: datetime, family: IssuerCA
) -> TestCA:
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CA_VALIDITY_BEFORE)
        .not_valid_after(now + _CA_VALIDITY_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(("key_cert_sign", "crl_sign")), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(parent), critical=False)
        .add_extension(_test_policy(), critical=False)
        .sign(parent.key, hashes.SHA256())
    )
    return TestCA(certificate, key, family)


# -- a little DER for the Subject Directory Attributes -----------------------------------------


def _sda(attributes: Sequence[tuple[str, bytes]]) -> x509.UnrecognizedExtension:
    """``SEQUENCE OF Attribute {type, SET {value}}`` in ascending OID order, as GPKI writes it."""
    ordered = sorted(attributes, key=lambda a: tuple(int(arc) for arc in a[0].split(".")))
    body = b"".join(_tlv(0x30, _der_oid(oid) + _tlv(0x31, value)) for oid, value in ordered)
    return x509.UnrecognizedExtension(SDA_OID, _tlv(0x30, body))


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"not an OID: {dotted!r}")
    body = b""
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, body)


def _utf8(text: str) -> bytes:
    return _tlv(0x0C, text.encode("utf-8"))


def _printable(text: str) -> bytes:
    return _tlv(0x13, text.encode("ascii"))
