"""The officer console (``/officer``, DESIGN.md §12): officers log in with their own card and
work the queue, search accounts, suspend them, and check trust, revocation and the audit log.

Who may do what is decided here, not in the pages::

    reviewer    the queue, a registration's detail, approve / reject, account search and
                detail (with the owner's customs certificates), trust and revocation status
    admin       all of the above, and suspend / reactivate an account, audit verify / export

Anything else is ``not_authorized`` (field ``officer``). The officer is re-read from the list on
every request (:meth:`OfficerConsole.session`), so a role change or a removal takes effect on the
next click, and a removal ends the officer's sessions (``ON DELETE CASCADE``).

**Login** mirrors 憑證登入 with its own challenge scope (:data:`OFFICER_CHALLENGE_SCOPE`): the card
signs ``challenge_payload(origin, "officer", nonce)``, so an applicant's login answer never opens
the console and the reverse. The proven certificate must be a GCA or MOICA one (else
``certificate_type_mismatch``, whatever the list holds) and on the officer list (else
``not_authorized``, logged as ``officer_login_refused`` with its fingerprint). Only the SHA-256
of a session's token is stored (``officer_sessions``); a session has the applicants' idle and
absolute limits (``SWREG_SESSION_IDLE``, ``SWREG_SESSION_MAX``).

**Audit.** Every action and every look at personal data is an audit row whose actor is
``officer:NAME`` and whose diff holds the officer's ``certificate`` (fingerprint) and ``via``
(``web:client=KEY``): ``officer_login``, ``officer_logout``, ``officer_viewed`` (a registration or
an account), ``officer_search`` (the kind of key and the number of hits, never the key),
``audit_verified``, ``audit_exported``, and the decisions' own rows (``approve``, ``reject``,
``account_suspended``, ``account_reactivated``).

**Masking.** An officer sees what a registration's card proves and what the applicant entered,
masked as in the audit log (national ID ``A12*****89``, e-mail, phone, names); the card's last
four ID digits only as far as the masked ID shows them (``**89``); account names masked like
通關憑證查詢's; certificate subjects with their personal attributes masked. A company's public
register data (UBN, OID, company name) is shown as it is.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select, update

from engine._clock import Clock
from engine._errors import ErrorCode, RefusedError
from engine.core.declarations import Labels
from engine.core.identifiers import (
    is_valid_national_id,
    is_valid_oid,
    is_valid_ubn,
    mask_account_name,
    mask_email,
    mask_text,
    normalize_text,
)
from engine.core.step_data import masked_diff
from engine.pki.card_response import CardResponse, Challenge
from engine.services.accounts import AccountService, CertificateSummary, token_hash
from engine.services.audit import AuditService, audit_records, export_line
from engine.services.card_proof import CardProofs
from engine.services.customs import CustomsCertificateService, CustomsRow, masked_subject
from engine.services.hashing import IdentifierHasher
from engine.services.inspection import CertificateInspector
from engine.services.officers import (
    OfficerView,
    officer_view,
    require_admin,
    require_officer_card,
)
from engine.services.registration import RegistrationService, RegistrationView
from engine.services.revocation import CrlStatus, RevocationService
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustEntry, TrustService
from engine.store import Account, AuditVerification, Database, Officer, OfficerSession, UnitOfWork

log = logging.getLogger("swreg.officer")

OFFICER_CHALLENGE_SCOPE: Final = "officer"
"""What stands in the registration-id slot of an officer login challenge's signed payload."""
MAX_SEARCH_RESULTS: Final = 50
MAX_QUERY_CHARS: Final = 256
LOGIN_REFUSED_EVENT: Final = "officer_login_refused"
_ID_SEPARATORS: Final = re.compile(r"[\s\-]")
"""What an officer may type inside a national ID (spaces, hyphens): it is still one, searched
by its keyed hash and never typed back. No account name holds a space, and no e-mail address,
UBN or OID with a hyphen is a national ID once the hyphens are gone."""


@dataclass(frozen=True, slots=True)
class OfficerLogin:
    """A console login: the session token (the page sets it as the officer cookie)."""

    token: str
    officer: OfficerView
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class OfficerSessionView:
    """The officer a live console session belongs to, as the list says now."""

    officer: OfficerView
    expires_at: datetime
    idle_expires_at: datetime


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A registration waiting for an officer, as the queue lists it (account masked)."""

    id: str
    applicant_type: str
    account: str | None
    status: Labels
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class TrailEntry:
    """One audit row of a registration, as its detail page lists it (diffs were masked when
    the row was written)."""

    seq: int
    at: datetime
    actor: str
    event: str
    from_state: str | None
    to_state: str | None
    diff: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RevocationFacts:
    """The revocation verdict on a certificate, as ``cert inspect`` reports it (DESIGN.md §4a):
    ``status`` ``good``/``revoked``/``unknown``, ``source`` ``ocsp``/``crl``/``none``, the
    ``reason`` of a revocation (a ``ReasonFlags`` name such as ``key_compromise``)."""

    status: str
    source: str
    checked_at: datetime | None
    reason: str | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """A certificate explained like ``swreg cert inspect`` (its codes and times, the subject
    masked): the pages word the codes (``key_usage`` names, ``status``, the revocation's),
    ``accepted_by`` holds applicant-type and usage-type codes."""

    ca: str
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    key_usage: tuple[str, ...]
    status: str
    revocation: RevocationFacts
    chain: tuple[str, ...]
    accepted_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegistrationDetail:
    """A registration as an officer reviews it."""

    registration: RegistrationView
    account: str | None
    """The account name, masked."""
    data: Mapping[str, Any]
    """What the applicant entered, masked (:func:`~engine.core.step_data.masked_diff`)."""
    identity: Mapping[str, str]
    """What the card's certificate says of its holder, masked (``card_rank`` a code)."""
    certificate: CertificateFacts | None
    """The card's certificate explained like ``swreg cert inspect`` (subject masked); None
    before the card check or after a purge."""
    trail: tuple[TrailEntry, ...]
    states: Mapping[str, Labels] = field(default_factory=dict)
    """What to show for each state of the registration's workflow (the trail's ``from_state``
    and ``to_state``), as :attr:`RegistrationView.status` shows the current one."""

    @property
    def awaiting_officer(self) -> bool:
        return self.registration.awaiting is not None


@dataclass(frozen=True, slots=True)
class AccountHit:
    """An account found by a search, masked."""

    id: int
    account: str
    type: str
    state: str
    email: str
    national_id: str | None
    ubn: str | None
    oid: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What a search found, and what its key was taken for (``national_id``, ``ubn``, ``oid``
    or ``account``): a page shows a national ID typed back to nobody, not even in the form."""

    kind: str
    hits: tuple[AccountHit, ...]


@dataclass(frozen=True, slots=True)
class AccountDetail:
    """An account, its login certificates and the customs certificates of its owner."""

    account: AccountHit
    certificates: tuple[CertificateSummary, ...]
    customs: tuple[CustomsRow, ...]


@dataclass(frozen=True, slots=True)
class TrustOverview:
    """The trust anchors and the stored CRLs with their freshness (DESIGN.md §4a)."""

    anchors: tuple[TrustEntry, ...]
    crls: tuple[CrlStatus, ...]
    policy: str


class OfficerConsole:
    """The console's logins, sessions and every officer action, with the role checks."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        trust: TrustService,
        revocation_checks: RevocationChecker,
        revocation: RevocationService,
        registrations: RegistrationService,
        accounts: AccountService,
        customs: CustomsCertificateService,
        audit: AuditService,
        identifiers: IdentifierHasher,
        inspector: CertificateInspector,
        session_ttl: timedelta,
        session_max: timedelta,
        challenge_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        self._database = database
        self._clock = clock
        self._trust = trust
        self._revocation_checks = revocation_checks
        self._revocation = revocation
        self._registrations = registrations
        self._accounts = accounts
        self._customs = customs
        self._audit = audit
        self._identifiers = identifiers
        self._inspector = inspector
        self._session_ttl = session_ttl
        self._session_max = session_max
        self._proofs = CardProofs(
            database,
            clock,
            trust,
            revocation_checks,
            scope=OFFICER_CHALLENGE_SCOPE,
            ttl=challenge_ttl,
        )

    # -- login and sessions ----------------------------------------------------------------------

    def issue_challenge(self, *, origin: str) -> Challenge:
        """A fresh single-use console login challenge bound to ``origin``."""
        return self._proofs.issue_challenge(origin=origin)

    def login(self, response: CardResponse, *, origin: str, via: str) -> OfficerLogin:
        """Check the card's answer (as 憑證登入 does) and open a console session for the officer
        whose certificate it is; ``not_authorized`` when the certificate is on no officer list."""
        proven = self._proofs.prove(response, origin=origin)
        require_officer_card(proven.certificate.ca)  # whatever an older list may hold
        now = proven.at
        with self._database.unit_of_work() as uow:
            row = uow.session.scalar(
                select(Officer).where(Officer.fingerprint == proven.fingerprint)
            )
            if row is None:
                log.warning(
                    "%s certificate=%s",
                    LOGIN_REFUSED_EVENT,
                    proven.fingerprint,
                    extra={"event": LOGIN_REFUSED_EVENT, "certificate": proven.fingerprint},
                )
                raise RefusedError(ErrorCode.NOT_AUTHORIZED)  # logged above; the page says no more
            officer = officer_view(row)
            token = secrets.token_urlsafe(32)
            uow.session.add(
                OfficerSession(
                    token_hash=token_hash(token), officer_id=row.id, created_at=now,
                    expires_at=min(now + self._session_ttl, now + self._session_max),
                    last_seen_at=now,
                )
            )  # fmt: skip
            self._append(
                uow, officer, "officer_login", via,
                {"origin": origin, "revocation": proven.revocation.audit()},
            )  # fmt: skip
            uow.commit()
        return OfficerLogin(token, officer, now + self._session_max)

    def session(self, token: str) -> OfficerSessionView | None:
        """The live console session of ``token`` with its officer as the list says now (its
        idle expiry slid); None for an unknown, ended or expired token or a removed officer."""
        if not token:
            return None
        digest = token_hash(token)
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            found = uow.session.execute(
                select(OfficerSession, Officer)
                .join(Officer, Officer.id == OfficerSession.officer_id)
                .where(OfficerSession.token_hash == digest)
            ).first()
            if found is None:
                return None
            row, officer = found
            end = row.created_at + self._session_max
            if now >= row.expires_at or now >= end:
                return None
            idle = min(now + self._session_ttl, end)
            uow.session.execute(
                update(OfficerSession)
                .where(OfficerSession.token_hash == digest)
                .values(expires_at=idle, last_seen_at=now)
            )
            uow.commit()
            return OfficerSessionView(officer_view(officer), end, idle)

    def logout(self, token: str, *, via: str) -> None:
        """End the console session of ``token`` (nothing when there is none)."""
        if not token:
            return
        digest = token_hash(token)
        with self._database.unit_of_work() as uow:
            found = uow.session.execute(
                select(Officer)
                .join(OfficerSession, Officer.id == OfficerSession.officer_id)
                .where(OfficerSession.token_hash == digest)
            ).scalar_one_or_none()
            uow.session.execute(delete(OfficerSession).where(OfficerSession.token_hash == digest))
            if found is not None:
                self._append(uow, officer_view(found), "officer_logout", via, {})
            uow.commit()

    # -- registrations ---------------------------------------------------------------------------

    def queue(self, officer: OfficerView) -> list[QueueEntry]:
        """Registrations waiting for an officer (待審核), longest waiting first."""
        del officer  # every officer may see the queue
        return [
            QueueEntry(
                id=view.id,
                applicant_type=view.applicant_type,
                account=mask_account_name(view.account) if view.account else None,
                status=view.status,
                updated_at=view.updated_at,
            )
            for view in self._registrations.awaiting_officers()
        ]

    def registration(
        self, officer: OfficerView, registration_id: str, *, via: str
    ) -> RegistrationDetail:
        """A registration's detail (masked data, the card explained, the audit trail); the
        look is audited (``officer_viewed``). ``registration_not_found`` for an unknown id."""
        view = self._registrations.status(registration_id, actor=officer.actor)
        with self._database.unit_of_work() as uow:
            record = uow.registrations.get(view.id)
            der = record.certificate_der if record is not None else None
            self._append(
                uow, officer, "officer_viewed", via, {"what": "registration"},
                registration_id=view.id,
            )  # fmt: skip
            uow.commit()
        trail = tuple(
            TrailEntry(
                seq=row["seq"], at=datetime.fromisoformat(row["at"]), actor=row["actor"],
                event=row["event"], from_state=row["from_state"], to_state=row["to_state"],
                diff=row["diff"] or {},
            )
            for row in self._audit.entries(view.id)
        )  # fmt: skip
        return RegistrationDetail(
            registration=view,
            account=mask_account_name(view.account) if view.account else None,
            data=_entered(view.data),
            identity=_masked_identity(view.identity),
            certificate=None if der is None else _facts(self._inspector.explain(der)),
            trail=trail,
            states=self._registrations.state_statuses(view.id),
        )

    def approve(self, officer: OfficerView, registration_id: str, *, via: str) -> RegistrationView:
        """核准 (reviewers and admins): the registration moves on."""
        return self._registrations.approve(
            registration_id, officer=officer.name, via=via, certificate=officer.fingerprint
        )

    def reject(
        self, officer: OfficerView, registration_id: str, *, reason: str, via: str
    ) -> RegistrationView:
        """駁回 (reviewers and admins) with a reason: the registration ends in ``rejected``."""
        return self._registrations.reject(
            registration_id,
            officer=officer.name,
            reason=reason,
            via=via,
            certificate=officer.fingerprint,
        )

    # -- accounts --------------------------------------------------------------------------------

    def search(self, officer: OfficerView, query: str, *, via: str) -> SearchResult:
        """Accounts found by a national ID (through its keyed hash), a UBN, an OID or an
        account name; masked; at most :data:`MAX_SEARCH_RESULTS`. The search is audited with
        the kind of key and the number of hits, never the key. ``field_required`` for an empty
        query, ``field_too_long`` past :data:`MAX_QUERY_CHARS`."""
        text = normalize_text(query or "")
        if not text:
            raise RefusedError(ErrorCode.FIELD_REQUIRED, field="q")
        if len(text) > MAX_QUERY_CHARS:
            raise RefusedError(ErrorCode.FIELD_TOO_LONG, field="q", max_length=MAX_QUERY_CHARS)
        kind, condition = self._search_condition(text)
        with self._database.unit_of_work() as uow:
            rows = uow.session.scalars(
                select(Account).where(condition).order_by(Account.id).limit(MAX_SEARCH_RESULTS)
            ).all()
            hits = tuple(_hit(row) for row in rows)
            self._append(uow, officer, "officer_search", via, {"kind": kind, "hits": len(hits)})
            uow.commit()
        return SearchResult(kind, hits)

    def _search_condition(self, text: str) -> tuple[str, Any]:
        upper = text.upper()
        compact = _ID_SEPARATORS.sub("", upper)  # "A123 456 789", "A123-456-789"
        if is_valid_national_id(compact):
            digest = self._identifiers.hash("national_id", compact)
            return "national_id", Account.national_id_hash == digest
        if len(upper) == 8 and upper.isdigit() and is_valid_ubn(upper):
            return "ubn", Account.ubn == upper
        if is_valid_oid(text):
            return "oid", Account.oid == text
        return "account", Account.name == text

    def account(self, officer: OfficerView, account_id: int, *, via: str) -> AccountDetail:
        """One account (masked), its login certificates and its owner's customs certificates;
        the look is audited. ``not_found`` for an unknown id."""
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get(account_id)
            if row is None:
                raise RefusedError(ErrorCode.NOT_FOUND, field="account")
            hit = _hit(row)
            name, ubn, id_hash, oid = row.name, row.ubn, row.national_id_hash, row.oid
            self._append(
                uow, officer, "officer_viewed", via,
                {"what": "account", **masked_diff({"account": name})},
            )  # fmt: skip
            uow.commit()
        summary = self._accounts.show(name)
        return AccountDetail(
            account=hit,
            certificates=summary.certificates,
            customs=tuple(self._customs.of_owner(ubn=ubn, national_id_hash=id_hash, oid=oid)),
        )

    def suspend(
        self, officer: OfficerView, account_id: int, *, reason: str, via: str
    ) -> AccountHit:
        """停用 (admin): the account is suspended and its sessions end."""
        name = self._account_name(officer, account_id)
        self._accounts.suspend(name, officer=officer, reason=reason, via=via)
        return self._hit_of(account_id)

    def reactivate(
        self, officer: OfficerView, account_id: int, *, reason: str, via: str
    ) -> AccountHit:
        """恢復 (admin): a suspended account is active again."""
        name = self._account_name(officer, account_id)
        self._accounts.reactivate(name, officer=officer, reason=reason, via=via)
        return self._hit_of(account_id)

    def _account_name(self, officer: OfficerView, account_id: int) -> str:
        require_admin(officer)
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get(account_id)
            if row is None:
                raise RefusedError(ErrorCode.NOT_FOUND, field="account")
            return row.name

    def _hit_of(self, account_id: int) -> AccountHit:
        with self._database.unit_of_work() as uow:
            row = uow.accounts.get(account_id)
            assert row is not None  # accounts are never deleted while in use
            return _hit(row)

    # -- trust, revocation, audit ----------------------------------------------------------------

    def trust(self, officer: OfficerView) -> TrustOverview:
        """The trust anchors and the stored CRLs with their freshness."""
        del officer  # every officer may see them
        return TrustOverview(
            anchors=tuple(self._trust.list()),
            crls=tuple(self._revocation.status()),
            policy=self._revocation_checks.policy.value,
        )

    def verify_audit(self, officer: OfficerView, *, via: str) -> AuditVerification:
        """``swreg audit verify`` (admin); the check itself is audited (``audit_verified``)."""
        require_admin(officer)
        result = self._audit.verify()
        with self._database.unit_of_work() as uow:
            self._append(
                uow, officer, "audit_verified", via,
                {"ok": result.ok, "rows": result.rows},
            )  # fmt: skip
            uow.commit()
        return result

    def export_audit(self, officer: OfficerView, *, via: str) -> Iterator[str]:
        """``swreg audit export`` (admin) as JSON Lines, streamed in batches, up to and
        including the export's own row (rows appended meanwhile are left out); the role is
        checked and the row written before the first line is produced."""
        require_admin(officer)
        with self._database.unit_of_work() as uow:
            own = uow.audit.append(
                at=self._clock.now(), actor=officer.actor, event="audit_exported",
                diff=_officer_diff(officer, via, {}),
            )  # fmt: skip
            uow.commit()
        last = own.seq
        assert last is not None  # given at the commit
        return _export_lines(audit_records(self._database), last)

    # -- helpers ---------------------------------------------------------------------------------

    def _append(
        self,
        uow: UnitOfWork,
        officer: OfficerView,
        event: str,
        via: str,
        diff: Mapping[str, Any],
        *,
        registration_id: str | None = None,
    ) -> None:
        uow.audit.append(
            at=self._clock.now(),
            actor=officer.actor,
            event=event,
            registration_id=registration_id,
            diff=_officer_diff(officer, via, diff),
        )


def _officer_diff(officer: OfficerView, via: str, diff: Mapping[str, Any]) -> dict[str, Any]:
    """An officer action's audit diff: ``diff`` with who (name, certificate) and how (via)."""
    return {**diff, "officer": officer.name, "certificate": officer.fingerprint, "via": via}


def _export_lines(records: Iterator[dict[str, Any]], last: int) -> Iterator[str]:
    """JSON Lines of ``records`` up to the export's own row (``seq`` ``last``): a row
    appended after the export began is left out, even one written before the response
    started streaming (when :func:`audit_records` reads its ``max(seq)``). The records'
    cursor is closed when the lines end, are cut short or the download is dropped."""
    try:
        for record in records:
            if record["seq"] > last:
                break
            yield export_line(record) + "\n"
    finally:
        close = getattr(records, "close", None)  # a generator: its unit of work ends
        if close is not None:
            close()


def _entered(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the applicant entered, masked as in the audit log; a value stored masked already
    (``national_id_masked``: the national ID itself is kept only as its keyed hash) is shown
    under its field's name."""
    shown = masked_diff({k: v for k, v in data.items() if not k.endswith("_masked")})
    for key, value in data.items():
        if key.endswith("_masked") and value:
            shown[key.removesuffix("_masked")] = value
    return shown


def _hit(row: Account) -> AccountHit:
    return AccountHit(
        id=row.id,
        account=mask_account_name(row.name),
        type=row.applicant_type,
        state=row.status,
        email=mask_email(row.email),
        national_id=row.national_id_masked,
        ubn=row.ubn,
        oid=row.oid,
        created_at=row.created_at,
    )


def _mask_id_last4(value: str) -> str:
    """The card's last four ID digits as much as the masked national ID shows (its last
    two: ``A12*****89``): ``6789`` → ``**89``. In clear, with the masked ID, they would leave
    three unknown digits (a hundred IDs with the check digit)."""
    return "*" * max(len(value) - 2, 0) + value[-2:]


_MASKED_IDENTITY: Final = {"name": mask_text, "id_last4": _mask_id_last4}


def _masked_identity(identity: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _MASKED_IDENTITY[key](str(value)) if key in _MASKED_IDENTITY and value else value
        for key, value in identity.items()
    }


def _facts(explained: Mapping[str, Any]) -> CertificateFacts:
    """``cert inspect``'s explanation, typed, with the personal parts of the subject masked."""
    subject = masked_subject(str(explained["subject"]))
    revocation = explained["revocation"]
    return CertificateFacts(
        ca=explained["ca"],
        subject=subject,
        issuer=explained["issuer"],
        serial=explained["serial"],
        not_before=datetime.fromisoformat(explained["not_before"]),
        not_after=datetime.fromisoformat(explained["not_after"]),
        key_usage=tuple(explained["key_usage"]),
        status=explained["status"],
        revocation=RevocationFacts(
            status=revocation["status"],
            source=revocation["source"],
            checked_at=_time(revocation.get("checked_at")),
            reason=revocation.get("reason"),
            revoked_at=_time(revocation.get("revoked_at")),
        ),
        chain=(subject, *explained["chain"][1:]),
        accepted_by=tuple(explained["accepted_by"]),
    )


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_SEARCH_RESULTS",
    "OFFICER_CHALLENGE_SCOPE",
    "AccountDetail",
    "AccountHit",
    "CertificateFacts",
    "OfficerConsole",
    "OfficerLogin",
    "OfficerSessionView",
    "QueueEntry",
    "RegistrationDetail",
    "RevocationFacts",
    "SearchResult",
    "TrailEntry",
    "TrustOverview",
]
