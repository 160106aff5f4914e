"""通關憑證註冊 / 查詢 / 刪除: the signing certificates of Turnkey systems (DESIGN.md §5).

:meth:`CustomsCertificateService.import_certificate` refuses, in this order, stopping at the
first failure with its code; nothing is stored on a refusal::

    usage type      declared by a plugin                              unknown_type (usage_type)
    form            the usage type's form                             field codes
    parse           one DER or PEM certificate, no key, ≤ 64 KiB       file_too_large,
                                                                      not_a_certificate,
                                                                      private_key_refused,
                                                                      certificate_malformed
    what it is      TaiCA → 通關專屬憑證, MOEACA → 工商憑證              certificate_type_mismatch
    allowed         (import kind, certificate kind) by the usage type  certificate_type_mismatch
    chain           a path to a configured trust anchor               certificate_untrusted
    validity        the certificate and its intermediates, now        certificate_expired / ...
    key usage       digitalSignature or nonRepudiation                certificate_key_usage
    revocation      OCSP, then CRLs (the revocation check)            certificate_revoked /
                                                                      revocation_unknown
    binding         the certificate names the entered ``ubn``, or    identity_mismatch,
                    the logged-in person is the one entered           not_authorized
    proof           the importer proves it is the owner              proof_required,
                                                                      challenge_expired,
                                                                      challenge_used,
                                                                      signature_invalid
    not registered  no active signing row with this fingerprint       already_registered

**Owners are proven, never typed** (DESIGN.md §5). Each usage type says who owns what it imports
(:attr:`UsageType.owner_field`):

- a company (``ubn``): the certificate must name the entered UBN — a 工商憑證 in SDA .101 (and,
  when present, the subject serialNumber, which must agree), a 通關專屬法人憑證 as the first eight
  digits of its CN (``04595257-06-000``) — else ``identity_mismatch``, even for a logged-in owner:
  a certificate that names no UBN belongs to no company. Then the importer proves it is that
  company: an IC card signs a single-use challenge (always); a ``.cer`` is accepted from a card
  login of the company (an account of the UBN holding an active 工商憑證 login certificate of it),
  or with a signature of the certificate's own key over a challenge of :meth:`issue_challenge`
  (``signed``; the CLI signs a fresh one locally with ``--key`` / ``--p12``:
  ``signature_check``); otherwise ``proof_required``;
- a person (``national_id``, 報關專責人員): the CN prefix of a 通關專屬個人憑證 is the broker
  *company*'s UBN, not the person's (❓ how a personal certificate encodes the specialist is
  unknown), so the certificate cannot name its owner. The person's own card login proves the
  person: no session (or an account of another applicant type) → ``not_authorized``, a session
  whose national ID is not the entered one → ``identity_mismatch``; the broker key (大關別 +
  專責人員代碼) stays with the first person who registered a certificate under it (another
  person → ``identity_mismatch`` on ``specialist_code``); and, as the certificate names nobody,
  its key signs a challenge too (``proof_required`` otherwise), so no one registers a
  certificate whose key they do not hold. The row keeps the keyed hash of the 身分證字號, which
  is what :meth:`delete` checks.

Through the portal an IC card never reaches the server: the page asks the local card agent to
read the certificate and sign a challenge from :meth:`issue_challenge` (scope
``customs_import``, bound to the page's origin, single use), and :meth:`import_from_card` checks
that signature with the certificate's key — the proof that whoever imports it holds the card.
A ``.cer`` proves possession the same way with any tool that signs (``openssl dgst -sha256
-sign``): the challenge is consumed when its proof is checked, so a refusal before that step
(a typo in the form) leaves it usable.

Deleting keeps the row with ``status="deleted"`` (the unique (fingerprint, purpose) row stays the
one record of that certificate); importing it again reactivates that row.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cryptography import x509
from pydantic import BaseModel
from sqlalchemy import select

from engine._clock import Clock
from engine._errors import CertificateError, ErrorCode, RefusedError
from engine._plugins import Catalog
from engine.core.declarations import CertificateKind, ImportKind, IssuerCA, Labels, UsageType
from engine.core.fields import validate_form
from engine.core.identifiers import (
    is_valid_national_id,
    is_valid_oid,
    is_valid_ubn,
    mask_account_name,
    mask_text,
    normalize_text,
)
from engine.core.step_data import masked_diff
from engine.pki.card_response import CardResponse, Challenge, chain_certificates
from engine.pki.certificate import ParsedCertificate, load_certificate, ubn_conflict
from engine.pki.certificate_checks import check_chain_validity, verify_signature
from engine.pki.revocation import RevocationVerdict
from engine.services.challenges import ScopedChallenges
from engine.services.hashing import IdentifierHasher
from engine.services.login import SessionView
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService
from engine.store import (
    Account,
    Certificate,
    CustomsKey,
    CustomsLookupRow,
    Database,
    UnitOfWork,
    customs_lookup,
)

__all__ = [
    "CERTIFICATE_KIND_FIELD",
    "COLUMNS",
    "CUSTOMS_CHALLENGE_SCOPE",
    "IMPORT_MESSAGE",
    "MAX_QUERY_KEY_LENGTH",
    "CustomsCertificateService",
    "CustomsImport",
    "CustomsRow",
    "SignatureCheck",
    "SignedChallenge",
    "masked_subject",
]

IMPORT_MESSAGE = Labels("主憑證匯入成功!", "The certificate was imported.")
"""What the seed manual shows after a successful import (and its English); the front ends pick
the reader's language."""

CUSTOMS_CHALLENGE_SCOPE = "customs_import"
"""What an IC-card import's challenge payload is bound to instead of a registration id."""

MAX_QUERY_KEY_LENGTH = 256
"""The longest 查詢 key accepted (an OID is the longest real one)."""

CERTIFICATE_KIND_FIELD = "certificate_kind"
"""The field of the 憑證種類 an importer chose (the page asks; the API and the CLI need not)."""

SIGNING, LOGIN = "signing", "login"
ACTIVE, DELETED = "active", "deleted"
TAIPEI = ZoneInfo("Asia/Taipei")  # the validity dates of 憑證資訊 are Taiwan's

COLUMNS: tuple[tuple[str, Labels], ...] = (
    ("form", Labels("憑證型態", "Certificate form")),
    ("kind", Labels("憑證種類", "Certificate kind")),
    ("purpose", Labels("用途", "Purpose")),
    ("info", Labels("憑證資訊", "Certificate information")),
)
"""The result columns of 通關憑證查詢, in the seed manual's order."""

SignatureCheck = Callable[[bytes], bytes]
"""Proof of possession at hand (a card, a key file): signs the given challenge with the
certificate's key."""

_Proof = Callable[[ParsedCertificate], None]

_BROKER_KEY = re.compile(r"[A-D][0-9]{5}")
_UBN_SHAPE = re.compile(r"[0-9]{8}")
_CA_KIND = {IssuerCA.TAICA: CertificateKind.CUSTOMS, IssuerCA.MOEACA: CertificateKind.BUSINESS}
_FORM_LABELS = {
    ImportKind.IC_CARD.value: Labels("IC卡", "IC card"),
    ImportKind.NON_IC.value: Labels("非IC卡類憑證", "Non-IC certificate"),
}
_MOBILE_RANK = "mobile"
_MOBILE_FORM = Labels("行動自然人憑證", "Mobile citizen certificate")
"""The 憑證型態 of a login certificate of card rank ``mobile`` (DESIGN.md §13): no IC card."""
_LOGIN_KINDS = {
    IssuerCA.MOEACA.value: Labels("工商憑證", "Business certificate"),
    IssuerCA.MOICA.value: Labels("自然人憑證", "Citizen certificate"),
    IssuerCA.XCA.value: Labels("組織團體憑證", "Organisation certificate"),
    IssuerCA.GCA.value: Labels("政府憑證", "Government certificate"),
}
_BROKER_KIND = Labels("報關人員憑證", "Customs broker certificate")
_PURPOSES = {LOGIN: Labels("登入", "Login"), SIGNING: Labels("簽章", "Signing")}


@dataclass(frozen=True, slots=True)
class SignedChallenge:
    """A challenge of :meth:`CustomsCertificateService.issue_challenge` and the signature of the
    certificate's key over its payload (a ``.cer`` import's proof of possession)."""

    challenge_id: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class CustomsImport:
    """A registered (or reactivated) customs certificate."""

    id: int
    usage_type: str
    query_key: str
    fingerprint: str
    kind: ImportKind
    certificate_kind: CertificateKind
    message: Labels = IMPORT_MESSAGE


@dataclass(frozen=True, slots=True)
class CustomsRow:
    """One row of 通關憑證查詢: the four columns in zh-TW (and English), plus machine fields.

    ``form`` 憑證型態, ``kind`` 憑證種類, ``purpose`` 用途 and ``info`` 憑證資訊 read as in the seed
    manual; ``*_en`` are the same cells in English. ``account`` is the login account (login
    certificates only); ``usage_type`` the 憑證使用類型 (signing certificates only).
    """

    id: int
    form: str
    kind: str
    purpose: str
    info: str
    form_en: str
    kind_en: str
    purpose_en: str
    info_en: str
    serial: str
    subject: str
    not_before: datetime
    not_after: datetime
    account: str | None
    usage_type: str | None
    status: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (datetimes as ISO 8601)."""
        values = asdict(self)
        values["not_before"] = self.not_before.isoformat()
        values["not_after"] = self.not_after.isoformat()
        return values


@dataclass(frozen=True, slots=True)
class _Checked:
    """A certificate that passed every check before the store is touched."""

    usage: UsageType
    form: BaseModel
    parsed: ParsedCertificate
    kind: ImportKind
    certificate_kind: CertificateKind
    query_key: str
    ubn: str | None
    national_id_hash: str | None
    revocation: RevocationVerdict


class CustomsCertificateService:
    """Imports, looks up and deletes the signing certificates of Turnkey systems."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        trust: TrustService,
        revocation: RevocationChecker,
        catalog: Catalog,
        identifiers: IdentifierHasher,
        *,
        challenge_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._revocation = revocation
        self._catalog = catalog
        self._identifiers = identifiers
        self._challenges = ScopedChallenges(
            database, clock, scope=CUSTOMS_CHALLENGE_SCOPE, ttl=challenge_ttl
        )

    # -- 通關憑證註冊 -------------------------------------------------------------------------

    def import_certificate(
        self,
        usage_type: str,
        answers: Mapping[str, Any],
        *,
        certificate: bytes,
        kind: ImportKind,
        chain: Sequence[bytes] = (),
        signature_check: SignatureCheck | None = None,
        signed: SignedChallenge | None = None,
        origin: str = "",
        session: SessionView | None = None,
        certificate_kind: str | None = None,
        actor: str = "cli",
    ) -> CustomsImport:
        """Check and register a signing certificate (the order is in the module docstring).

        ``kind`` says how it came: ``IC_CARD`` (read from a card by the caller, after the PIN;
        ``chain`` holds the CA certificates the card carries and ``signature_check`` signs a
        challenge with the card's key) or ``NON_IC`` (a ``.cer`` file). The importer's proof of
        ownership: ``session``, the importer's card login; ``signature_check``, the key at hand
        (a card, a key file) signing a fresh challenge; ``signed``, a challenge of
        :meth:`issue_challenge` signed elsewhere (issued for ``origin``). ``certificate_kind``
        is the 憑證種類 the importer chose, when asked (the page): one the usage takes by
        ``kind`` (else ``invalid_value``), and the file's (else ``certificate_type_mismatch``).
        One transaction writes the row and the ``customs_import`` audit row.
        """
        prove: _Proof | None = None
        if signature_check is not None:
            prove = _fresh_signature(signature_check)
        elif signed is not None:
            prove = self._signed_challenge(signed, origin)
        return self._import(
            usage_type, answers, certificate, ImportKind(kind), chain, prove, session, actor,
            chosen=certificate_kind,
        )  # fmt: skip

    def issue_challenge(self, *, origin: str) -> Challenge:
        """A single-use challenge (256 random bits, scope ``customs_import``) for a card to sign."""
        return self._challenges.issue(origin=origin)

    def import_from_card(
        self,
        usage_type: str,
        answers: Mapping[str, Any],
        response: CardResponse,
        *,
        origin: str,
        session: SessionView | None = None,
        actor: str = "web",
    ) -> CustomsImport:
        """An IC-card import from afar: the card signed a challenge of :meth:`issue_challenge`.

        The challenge is consumed first (single use, success or not); the certificate then goes
        through every check of :meth:`import_certificate`, the signature over the challenge's
        payload being the possession check.
        """
        challenge = self._challenges.consume(response.challenge_id, origin=origin)

        def prove(parsed: ParsedCertificate) -> None:
            verify_signature(parsed.certificate, response.signature, challenge.payload)

        return self._import(
            usage_type, answers, response.certificate, ImportKind.IC_CARD, response.chain, prove,
            session, actor,
        )  # fmt: skip

    def _signed_challenge(self, signed: SignedChallenge, origin: str) -> _Proof:
        """The proof of a challenge signed elsewhere: consumed when checked (single use)."""

        def prove(parsed: ParsedCertificate) -> None:
            challenge = self._challenges.consume(signed.challenge_id, origin=origin)
            verify_signature(parsed.certificate, signed.signature, challenge.payload)

        return prove

    def _import(
        self,
        usage_type: str,
        answers: Mapping[str, Any],
        certificate: bytes,
        kind: ImportKind,
        chain: Sequence[bytes],
        prove: _Proof | None,
        session: SessionView | None,
        actor: str,
        *,
        chosen: str | None = None,
    ) -> CustomsImport:
        checked = self._check(usage_type, answers, certificate, kind, chain, chosen)
        logged_in_owner = self._bind_owner(checked, session)
        proofs = {"login": session.account} if session is not None and logged_in_owner else {}
        if kind is ImportKind.IC_CARD or not logged_in_owner:
            if prove is None:
                raise RefusedError(ErrorCode.PROOF_REQUIRED, field="signature")
            prove(checked.parsed)
            proofs = {"key": "card" if kind is ImportKind.IC_CARD else "signed challenge"}
            if session is not None:
                proofs["login"] = session.account
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row, reactivated = self._store(uow, checked, now)
            uow.audit.append(
                at=now, actor=actor, event="customs_import",
                diff=_import_diff(checked, row.id, reactivated, proofs),
            )  # fmt: skip
            uow.commit()
            return CustomsImport(
                id=row.id,
                usage_type=checked.usage.code,
                query_key=checked.query_key,
                fingerprint=checked.parsed.fingerprint,
                kind=checked.kind,
                certificate_kind=checked.certificate_kind,
            )

    def _check(
        self,
        usage_type: str,
        answers: Mapping[str, Any],
        certificate: bytes,
        kind: ImportKind,
        chain: Sequence[bytes],
        chosen: str | None,
    ) -> _Checked:
        usage = self._usage(usage_type)
        allowed = {k.value for k in usage.certificate_kinds(kind)}
        if chosen is not None and chosen not in allowed:
            raise RefusedError(ErrorCode.INVALID_VALUE, field=CERTIFICATE_KIND_FIELD)
        form = validate_form(usage.form, answers)
        if not certificate:
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="certificate")
        parsed = load_certificate(certificate)
        certificate_kind = _certificate_kind(parsed)
        if chosen is not None and certificate_kind.value != chosen:
            raise CertificateError(
                ErrorCode.CERTIFICATE_TYPE_MISMATCH,
                field="certificate",
                detail=f"chose {chosen}, the file is {certificate_kind.value}",
            )
        if not usage.accepts(kind, certificate_kind):
            raise CertificateError(
                ErrorCode.CERTIFICATE_TYPE_MISMATCH,
                detail=f"{usage.code} does not take {kind.value} {certificate_kind.value}",
            )
        revocation = self._check_certificate(parsed, chain)
        ubn = _entered(form, "ubn")
        if usage.owner_field == "ubn":
            _check_binding(parsed, ubn)
        national_id = _entered(form, "national_id")
        return _Checked(
            usage=usage, form=form, parsed=parsed, kind=kind, certificate_kind=certificate_kind,
            query_key=_query_key(form, usage), ubn=ubn,
            national_id_hash=self._id_hash(national_id) if national_id else None,
            revocation=revocation,
        )  # fmt: skip

    def _bind_owner(self, checked: _Checked, session: SessionView | None) -> bool:
        """Whether ``session`` is a card login of the certificate's owner that spares the proof
        of possession (module docstring).

        A person's certificate (報關專責人員) needs the person's login — ``not_authorized``
        without one, ``identity_mismatch`` (``national_id``) when the logged-in person is not
        the one entered — and its query key (大關別 + 專責人員代碼) must not be another person's
        already (``identity_mismatch`` on ``specialist_code``: the first person to register a
        key keeps it); the certificate names no person, so its key must still sign (False). A
        company's certificate names its owner (checked before); a login of it spares the proof.
        """
        usage = checked.usage
        with self._database.unit_of_work() as uow:
            account = uow.accounts.get_by_name(session.account) if session is not None else None
            if account is not None and usage.owner_types:
                account = account if account.applicant_type in usage.owner_types else None
            if usage.owner_field == "national_id":
                if account is None:
                    raise RefusedError(
                        ErrorCode.NOT_AUTHORIZED, detail="log in with the specialist's card"
                    )
                if account.national_id_hash != checked.national_id_hash:
                    raise CertificateError(ErrorCode.IDENTITY_MISMATCH, field="national_id")
                if _key_of_another_person(uow, checked):
                    raise CertificateError(ErrorCode.IDENTITY_MISMATCH, field="specialist_code")
                return False
            return (
                account is not None
                and checked.ubn is not None
                and _proven_company(uow, account, checked.ubn)
            )

    def usage_type(self, code: str | None) -> UsageType:
        """The usage type ``code`` names, else the one shown first: the one declared
        ``default``, else the lowest ``order`` (the page falls back; imports refuse)."""
        usages = self._catalog.usage_types
        found = usages.get(code or "")
        if found is not None:
            return found
        if not usages:
            raise RefusedError(ErrorCode.UNKNOWN_TYPE, field="usage_type", detail="none declared")
        return min(usages.values(), key=lambda u: (not u.default, u.order, u.code))

    def _usage(self, code: str) -> UsageType:
        try:
            return self._catalog.usage_types[code]
        except KeyError:
            raise RefusedError(ErrorCode.UNKNOWN_TYPE, field="usage_type", detail=code) from None

    def _check_certificate(
        self, parsed: ParsedCertificate, chain: Sequence[bytes]
    ) -> RevocationVerdict:
        """Chain, validity now, key usage for signing, revocation (its verdict)."""
        snapshot = self._trust.snapshot()
        path = snapshot.store.build_path(parsed.certificate, extra=chain_certificates(chain))
        check_chain_validity(path, trust=snapshot.store, at=self._clock.now())
        if not {"digital_signature", "content_commitment"} & set(parsed.key_usage):
            found = ", ".join(parsed.key_usage) or "no keyUsage"
            raise CertificateError(ErrorCode.CERTIFICATE_KEY_USAGE, detail=found)
        return self._revocation.require(path, snapshot=snapshot)

    def _store(self, uow: UnitOfWork, checked: _Checked, now: datetime) -> tuple[Certificate, bool]:
        """Insert the signing row, or reactivate a deleted one; ``already_registered`` else."""
        parsed = checked.parsed
        existing = uow.certificates.find(parsed.fingerprint, SIGNING)
        if existing is not None and existing.status != DELETED:
            raise RefusedError(ErrorCode.ALREADY_REGISTERED, detail=f"certificate {existing.id}")
        values = {
            "query_key": checked.query_key,
            "usage_type": checked.usage.code,
            "kind": checked.kind.value,
            "ubn": checked.ubn,
            "national_id_hash": checked.national_id_hash,
            "status": ACTIVE,
        }
        if existing is not None:
            for name, value in values.items():
                setattr(existing, name, value)
            uow.flush()
            return existing, True
        row = Certificate(
            fingerprint=parsed.fingerprint, purpose=SIGNING, der=parsed.der,
            serial_hex=parsed.serial_hex, subject=parsed.subject, issuer=parsed.issuer,
            ca=parsed.ca.value, card_rank=parsed.identity.card_rank,
            not_before=parsed.not_before, not_after=parsed.not_after, created_at=now, **values,
        )  # fmt: skip
        uow.certificates.add(row)
        return row, False

    # -- 通關憑證查詢 -------------------------------------------------------------------------

    def query(self, key: str, *, session: SessionView | None = None) -> list[CustomsRow]:
        """The certificates a 查詢憑證 key finds, login ones first; deleted ones are hidden.

        The account name and the personal parts of a login certificate's subject (CN,
        serialNumber, e-mail) are masked unless ``session`` is a card login of that very
        account (DESIGN.md §5 "Queries reveal no personal data to strangers").

        ``A00001`` (大關別 + 專責人員代碼) → signing certificates of that broker; a UBN → the
        company's signing certificates and the login certificates of accounts with that UBN;
        a 身分證字號 (or 居留證號) → that person's login and broker certificates; an OID → login
        certificates with that OID. Anything else → ``invalid_value`` (field ``key``); nothing
        → ``field_required``; more than :data:`MAX_QUERY_KEY_LENGTH` → ``field_too_long``.
        """
        if not (key or "").strip():
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="key")
        if len(key) > MAX_QUERY_KEY_LENGTH:
            raise RefusedError(ErrorCode.FIELD_TOO_LONG, field="key")
        text = normalize_text(key).upper()
        kind, value = self._classify(text)
        asker = session.account if session is not None else None
        return [
            _row(found, reveal=found.account is not None and found.account == asker)
            for found in customs_lookup(self._database, kind, value)
        ]

    def of_owner(
        self, *, ubn: str | None, national_id_hash: str | None, oid: str | None
    ) -> list[CustomsRow]:
        """The certificates of an account's owner as 查詢 finds them by its strongest key (the
        company's UBN, else the person's national ID by its keyed hash, else the OID), every
        personal value masked (the officer console); none when the account has no such key."""
        for kind, value in (
            (CustomsKey.UBN, ubn),
            (CustomsKey.NATIONAL_ID_HASH, national_id_hash),
            (CustomsKey.OID, oid),
        ):
            if value:
                return [
                    _row(found, reveal=False)
                    for found in customs_lookup(self._database, kind, value)
                ]
        return []

    def _classify(self, key: str) -> tuple[CustomsKey, str]:
        """The key's kind and the value looked up (a 身分證字號 by its keyed hash only)."""
        if _BROKER_KEY.fullmatch(key):
            return CustomsKey.BROKER, key
        if _UBN_SHAPE.fullmatch(key) and is_valid_ubn(key):
            return CustomsKey.UBN, key
        if is_valid_national_id(key):
            return CustomsKey.NATIONAL_ID_HASH, self._id_hash(key)
        if is_valid_oid(key):
            return CustomsKey.OID, key
        raise RefusedError(ErrorCode.INVALID_VALUE, field="key", detail="not a query key")

    # -- 刪除 -----------------------------------------------------------------------------------

    def delete(self, certificate_id: int, *, session: SessionView | None, actor: str) -> None:
        """Delete a customs (signing) certificate; its owner must be logged in with a card.

        The owner is the session's account when it is an enterprise account proven by a
        工商憑證 of the certificate's UBN, or a person whose 身分證字號 hash is the one entered at
        import (報關專責人員). No session or another account → ``not_authorized``; an unknown,
        deleted or login certificate → ``invalid_value`` (field ``id``).
        """
        if session is None:
            raise RefusedError(ErrorCode.NOT_AUTHORIZED, detail="log in with your card first")
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            row = uow.session.get(Certificate, certificate_id)
            if row is None or row.purpose != SIGNING or row.status == DELETED:
                raise RefusedError(
                    ErrorCode.INVALID_VALUE, field="id", detail="no such customs certificate"
                )
            account = uow.accounts.get_by_name(session.account)
            if account is None or not _owns(uow, account, row):
                raise RefusedError(ErrorCode.NOT_AUTHORIZED)
            previous, row.status = row.status, DELETED
            uow.audit.append(
                at=now, actor=actor, event="customs_delete", from_state=previous,
                to_state=DELETED, diff=_delete_diff(row, account.name),
            )  # fmt: skip
            uow.commit()

    def deletable(
        self, certificate_ids: Sequence[int], session: SessionView | None
    ) -> frozenset[int]:
        """The ids among ``certificate_ids`` that the session's account may delete (刪除 column)."""
        if session is None or not certificate_ids:
            return frozenset()
        with self._database.unit_of_work() as uow:
            account = uow.accounts.get_by_name(session.account)
            if account is None:
                return frozenset()
            found = (uow.session.get(Certificate, row_id) for row_id in certificate_ids)
            return frozenset(
                c.id
                for c in found
                if c is not None and c.purpose == SIGNING and c.status != DELETED
                and _owns(uow, account, c)
            )  # fmt: skip

    def _id_hash(self, national_id: str) -> str:
        return self._identifiers.hash("national_id", national_id.upper())


# -- checks ------------------------------------------------------------------------------------


def _certificate_kind(parsed: ParsedCertificate) -> CertificateKind:
    """TaiCA → 通關專屬憑證, MOEACA → 工商憑證; any other issuer is no customs certificate."""
    try:
        return _CA_KIND[parsed.ca]
    except KeyError:
        raise CertificateError(
            ErrorCode.CERTIFICATE_TYPE_MISMATCH, detail=f"{parsed.ca.value} certificate"
        ) from None


def _check_binding(parsed: ParsedCertificate, ubn: str | None) -> None:
    """The certificate must name the entered UBN (module docstring)."""
    certified = parsed.identity.ubn
    if certified is None or (parsed.ca is IssuerCA.MOEACA and ubn_conflict(parsed)):
        raise CertificateError(
            ErrorCode.IDENTITY_MISMATCH, field="ubn", detail="the certificate states no clear UBN"
        )
    if certified != ubn:
        raise CertificateError(ErrorCode.IDENTITY_MISMATCH, field="ubn")


def _fresh_signature(sign: SignatureCheck) -> _Proof:
    """Have a card at hand sign a fresh 256-bit challenge; verify it with the certificate's key."""

    def prove(parsed: ParsedCertificate) -> None:
        challenge = b"swreg customs import:" + secrets.token_bytes(32)
        verify_signature(parsed.certificate, sign(challenge), challenge)

    return prove


def _entered(form: BaseModel, name: str) -> str | None:
    value = getattr(form, name, None)
    return str(value) if value else None


def _query_key(form: BaseModel, usage: UsageType) -> str:
    """The form's value of the usage type's key field (``ubn``), or its ``query_key`` property
    (報關專責人員: 大關別 + 專責人員代碼)."""
    value = getattr(form, usage.query_key, None) or getattr(form, "query_key", None)
    if not value:
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field=usage.query_key)
    return str(value)


def _owns(uow: UnitOfWork, account: Account, row: Certificate) -> bool:
    if row.national_id_hash is not None:
        return account.national_id_hash == row.national_id_hash
    return row.ubn is not None and _proven_company(uow, account, row.ubn)


def _key_of_another_person(uow: UnitOfWork, checked: _Checked) -> bool:
    """Whether a person other than the one entered registered a certificate under this query
    key (deleted ones too: a key stays with the person who first registered it)."""
    other = select(Certificate.id).where(
        Certificate.purpose == SIGNING,
        Certificate.query_key == checked.query_key,
        Certificate.national_id_hash.is_not(None),
        Certificate.national_id_hash != checked.national_id_hash,
    )
    return uow.session.scalar(other.limit(1)) is not None


def _proven_company(uow: UnitOfWork, account: Account, ubn: str) -> bool:
    """``account`` is the company ``ubn``, proven by an active 工商憑證 login certificate of it."""
    if account.ubn != ubn:
        return False
    proof = select(Certificate.id).where(
        Certificate.account_id == account.id,
        Certificate.purpose == LOGIN,
        Certificate.status == ACTIVE,
        Certificate.ca == IssuerCA.MOEACA.value,
        Certificate.ubn == ubn,
    )
    return uow.session.scalar(proof.limit(1)) is not None


# -- rows and audit ----------------------------------------------------------------------------


def _row(found: CustomsLookupRow, *, reveal: bool) -> CustomsRow:
    """A result row; ``reveal``: the asker owns it and sees its personal values in clear."""
    form, kind, purpose = _labels(found)
    dates = f"{_day(found.not_before)}~{_day(found.not_after)}"
    serial = found.serial_hex
    account, certificate_subject = found.account, found.subject
    if found.purpose == LOGIN and not reveal:
        account = mask_account_name(account or "")
        certificate_subject = masked_subject(certificate_subject)
    if found.purpose == LOGIN:
        name = account or ""
        info = f"登入用憑證,使用者帳號{name}, 序號{serial}, 起訖日期:{dates}"
        info_en = f"Login certificate, account {name}, serial {serial}, valid {dates}"
    else:
        subject = _display_subject(found.der or b"")
        info = f"序號: {serial}, 主體: {subject}, 起訖日期:{dates}"
        info_en = f"Serial: {serial}, subject: {subject}, valid {dates}"
    return CustomsRow(
        id=found.id, form=form.zh_tw, kind=kind.zh_tw, purpose=purpose.zh_tw, info=info,
        form_en=form.en, kind_en=kind.en, purpose_en=purpose.en, info_en=info_en,
        serial=serial, subject=certificate_subject, not_before=found.not_before,
        not_after=found.not_after, account=account, usage_type=found.usage_type,
        status=found.status,
    )  # fmt: skip


_PERSONAL_ATTRIBUTES = frozenset(
    {"CN", "SERIALNUMBER", "2.5.4.5", "EMAILADDRESS", "E", "1.2.840.113549.1.9.1"}
)
_RDN_PART = re.compile(r"((?:[^,+\\]|\\.)+)([,+]|$)")


def masked_subject(subject: str) -> str:
    """An RFC 4514 subject with the values of its personal attributes masked (a citizen's
    name and ID digits): ``CN=王小明,C=TW`` → ``CN=王*明,C=TW``."""
    parts = []
    for match in _RDN_PART.finditer(subject):
        attribute, separator = match.group(1), match.group(2)
        name, equals, value = attribute.partition("=")
        if equals and name.strip().upper() in _PERSONAL_ATTRIBUTES:
            attribute = f"{name}={mask_text(value)}"
        parts.append(attribute + separator)
    return "".join(parts)


def _labels(found: CustomsLookupRow) -> tuple[Labels, Labels, Labels]:
    """憑證型態, 憑證種類 and 用途 of a found certificate."""
    purpose = _PURPOSES[found.purpose]
    if found.purpose == LOGIN:
        kind = _LOGIN_KINDS.get(found.ca, Labels(found.ca, found.ca))
        if found.card_rank == _MOBILE_RANK:
            return _MOBILE_FORM, kind, purpose
        return _FORM_LABELS[ImportKind.IC_CARD.value], kind, purpose
    form = _FORM_LABELS.get(found.kind or "", _FORM_LABELS[ImportKind.NON_IC.value])
    if found.ca == IssuerCA.MOEACA.value:
        return form, CertificateKind.BUSINESS.labels, purpose
    if found.broker:
        return form, _BROKER_KIND, purpose
    return form, CertificateKind.CUSTOMS.labels, purpose


def _day(moment: datetime) -> str:
    """``%Y/%m/%d`` in Taiwan (formatted by hand: ``strftime`` is a 查詢 row's dearest call)."""
    day = moment.astimezone(TAIPEI)
    return f"{day.year}/{day.month:02d}/{day.day:02d}"


@functools.lru_cache(maxsize=4096)
def _display_subject(der: bytes) -> str:
    """The subject as the seed manual prints it: ``C=TW O=Finance OU=… CN=…`` (root first).

    Cached by DER: parsing is the dearest part of a 查詢 row (``make bench``)."""
    try:
        name = x509.load_der_x509_certificate(der).subject
        return " ".join(
            attribute.rfc4514_string(_SHORT_NAMES) for rdn in name.rdns for attribute in rdn
        )
    except ValueError:  # pragma: no cover - stored certificates parsed at import
        return ""


_SHORT_NAMES = {x509.NameOID.SERIAL_NUMBER: "serialNumber"}


def _import_diff(
    checked: _Checked, row_id: int, reactivated: bool, proofs: Mapping[str, str]
) -> dict[str, Any]:
    """The ``customs_import`` audit diff: what was imported, the form (masked) and how the
    importer proved to own it (``proof``: ``key`` — ``card`` or ``signed challenge`` — and the
    ``login`` account, masked like any account name in the audit log)."""
    parsed = checked.parsed
    fields = {k: v for k, v in checked.form.model_dump().items() if v is not None}
    proof: dict[str, Any] = dict(proofs)
    if "login" in proof:
        proof["login"] = masked_diff({"account": proof["login"]})["account"]
    return {
        "certificate_id": row_id,
        "usage_type": checked.usage.code,
        "kind": checked.kind.value,
        "certificate_kind": checked.certificate_kind.value,
        "fingerprint": parsed.fingerprint,
        "serial": parsed.serial_hex,
        "ca": parsed.ca.value,
        "query_key": checked.query_key,
        "reactivated": reactivated,
        "proof": proof,
        "revocation": checked.revocation.audit(),
        **masked_diff(fields),
    }


def _delete_diff(row: Certificate, account: str) -> dict[str, Any]:
    return {
        "certificate_id": row.id,
        "usage_type": row.usage_type,
        "fingerprint": row.fingerprint,
        "query_key": row.query_key,
        **masked_diff({"account": account}),
    }
