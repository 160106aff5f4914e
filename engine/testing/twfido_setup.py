"""What ``swreg twfido mock`` and ``swreg demo`` set up around the TW FidO mock: a test PKI kept
in a folder, the people holding a mobile certificate, and the lines a portal's settings need.

**Test material only.** A *PKI folder* holds the test hierarchy of :class:`TestPKI` so that a
mock started later issues mobile certificates under the same "MOICA" a portal already trusts::

    FOLDER/ca/root.pem, twca-root.pem, MOICA.pem, …   each CA's certificate and private key
    FOLDER/mobile-<ID>.pem                            a holder's mobile certificate and key
    FOLDER/twfido-salt                                the mock's salt of ``hashed_id_num`` (hex)
    FOLDER/trust/                                     the files of :meth:`TestPKI.trust_commands`

:func:`pki_folder` loads the hierarchy, or creates and saves it when the folder holds none
(``swreg demo --out DIR`` saves its own in ``DIR/pki``); private keys are unencrypted PEM,
mode 0600, like the demo's PKCS#12 "cards". A holder's certificate is kept across runs, so a
person registered once can log in again after the mock restarts.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.core.declarations import IssuerCA
from engine.core.identifiers import is_valid_national_id
from engine.testing.pki import IssuedCard, KeyType, TestCA, TestPKI
from engine.testing.twfido import TwFidoHolder

MOBILE_RANK: Final = "mobile"
"""The card rank (SDA .2) of a mobile citizen certificate (DESIGN.md §13)."""
DEFAULT_SERVICE_ID: Final = "SWREG-TEST-SP"
_ROOT, _TWCA_ROOT = "root", "twca-root"


@dataclass(frozen=True, slots=True)
class HolderSpec:
    """A person the mock knows: ``NATIONAL_ID:NAME`` on the command line."""

    national_id: str
    name: str

    @classmethod
    def parse(cls, text: str) -> HolderSpec:
        """``A123456789:王小明``; :class:`ValueError` for another shape or an invalid ID."""
        national_id, colon, name = text.partition(":")
        national_id, name = national_id.strip().upper(), name.strip()
        if not colon or not national_id or not name:
            raise ValueError("a holder is NATIONAL_ID:NAME, e.g. A123456789:王小明")
        if not is_valid_national_id(national_id):
            raise ValueError(f"{national_id} is not a valid 身分證字號")
        return cls(national_id, name)


def mobile_certificate(pki: TestPKI, holder: HolderSpec) -> IssuedCard:
    """A mobile citizen certificate for ``holder``: RSA-2048 under the test MOICA, rank
    ``mobile``, the ID's last four digits in SDA .51 (DOMAIN.md §4.6)."""
    return pki.issue_person(holder.name, holder.national_id[-4:], key="rsa", card_rank=MOBILE_RANK)


# -- a PKI folder --------------------------------------------------------------------------------


def pki_folder(folder: Path, now: datetime | None = None) -> tuple[TestPKI, bool]:
    """The test PKI kept in ``folder`` (``now``: the moment new cards are issued around), or a
    new one saved there; the flag says whether it was created."""
    moment = now or datetime.now(UTC)
    loaded = load_pki(folder, moment)
    if loaded is not None:
        return loaded, False
    pki = TestPKI.create(moment)
    save_pki(pki, folder)
    return pki, True


def save_pki(pki: TestPKI, folder: Path) -> None:
    """Write each CA's certificate and key to ``folder/ca/`` (see the module docstring)."""
    target = folder / "ca"
    target.mkdir(parents=True, exist_ok=True)
    named = {_ROOT: pki.root, _TWCA_ROOT: pki.twca_root}
    named.update({family.value: ca for family, ca in pki.cas.items()})
    for name, ca in named.items():
        _write_private(target / f"{name}.pem", _pem(ca.certificate, ca.key))


def load_pki(folder: Path, now: datetime) -> TestPKI | None:
    """The PKI :func:`save_pki` wrote to ``folder``, or None when there is none."""
    source = folder / "ca"
    if not (source / f"{_ROOT}.pem").exists():
        return None
    root = _load_ca(source / f"{_ROOT}.pem", None)
    twca_root = _load_ca(source / f"{_TWCA_ROOT}.pem", None)
    cas: dict[IssuerCA, TestCA] = {
        family: _load_ca(source / f"{family.value}.pem", family)
        for family in IssuerCA
        if family is not IssuerCA.UNKNOWN
    }
    key_type: KeyType = "rsa" if isinstance(root.key, rsa.RSAPrivateKey) else "ec"
    return TestPKI(now.replace(microsecond=0), key_type, root, twca_root, cas)


def holder_in(pki: TestPKI, folder: Path, holder: HolderSpec) -> TwFidoHolder:
    """``holder``'s mobile certificate kept in ``folder`` when it is still theirs (same name,
    issued by this PKI's MOICA, not expired), else a new one, saved there."""
    path = folder / f"mobile-{holder.national_id}.pem"
    card = _load_card(path, pki, holder)
    if card is None:
        card = mobile_certificate(pki, holder)
        _write_private(path, _pem(card.certificate, card.key))
    return TwFidoHolder(card)


def salt_in(folder: Path) -> bytes:
    """The mock's ``hashed_id_num`` salt kept in ``folder`` (made once): a person's hash stays
    the same across runs, as the real service's does."""
    path = folder / "twfido-salt"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        salt = secrets.token_bytes(16)
        _write_private(path, salt.hex().encode("ascii"))
        return salt


def portal_settings(url: str, service_id: str, key: bytes) -> dict[str, str]:
    """The ``SWREG_TWFIDO_*`` settings a portal (or ``swreg register``) needs for the mock."""
    return {
        "SWREG_TWFIDO_URL": url,
        "SWREG_TWFIDO_SERVICE_ID": service_id,
        "SWREG_TWFIDO_KEY": base64.b64encode(key).decode("ascii"),
    }


# -- files ---------------------------------------------------------------------------------------


def _pem(
    certificate: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _read_pem(
    path: Path,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    data = path.read_bytes()
    certificate = x509.load_pem_x509_certificate(data)
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an RSA or EC key")
    return certificate, key


def _load_ca(path: Path, family: IssuerCA | None) -> TestCA:
    certificate, key = _read_pem(path)
    return TestCA(certificate, key, family)


def _load_card(path: Path, pki: TestPKI, holder: HolderSpec) -> IssuedCard | None:
    if not path.exists():
        return None
    certificate, key = _read_pem(path)
    moica = pki.ca(IssuerCA.MOICA)
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if (
        not isinstance(key, rsa.RSAPrivateKey)
        or [n.value for n in names] != [holder.name]
        or certificate.issuer != moica.name
        or certificate.not_valid_after_utc <= pki.now
    ):
        return None
    try:
        certificate.verify_directly_issued_by(moica.certificate)
    except (ValueError, TypeError, InvalidSignature):  # signed by another PKI's MOICA
        return None
    return IssuedCard(certificate, key, IssuerCA.MOICA, pki.chain_of(moica))
