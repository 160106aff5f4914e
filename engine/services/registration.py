"""The 憑證註冊 service: one registration, step by step, persisted after every event.

The CLI, the HTTP API and the web wizard call these methods and nothing else. Each method is one
unit of work: it loads the registration, validates the input with the pure core, fires the
workflow event (the machine says where it leads), then saves the registration, its audit row
and, on entering ``completed``, the account with its login certificate and its first activation
link, and commits. A refusal raises before the commit, so it leaves nothing behind; the account
exists only once ``completed`` is entered. Every step is one transaction (the card step's
challenge is consumed in it too: a refused card check commits only that).

At a step whose actor is an officer (an approval step contributed by a plugin) the applicant
has nothing to submit: the registration waits (待審核) until :meth:`RegistrationService.approve`
(it moves on; entering ``completed`` creates the account, exactly as after the last form) or
:meth:`RegistrationService.reject` (it ends in ``rejected`` with the reason in the audit row).

Registrations are not bearer links (DESIGN.md §6). :meth:`RegistrationService.start` makes a
secret (256 random bits) and stores its SHA-256; the web keeps the secret in the browser's
cookie and passes it as ``secret=`` to every method that acts on the registration. With a
missing or wrong secret the registration is answered exactly like an unknown id
(``registration_not_found``), before anything else is read or written; the holder of an ended
registration sees only its id, state, type and masked account. Callers on the server (the CLI,
officers, tests) pass nothing: ``secret`` defaults to :data:`LOCAL`, which the web never uses.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

import pluggy
from pydantic import BaseModel
from statemachine.exceptions import TransitionNotAllowed

from engine._clock import Clock
from engine._errors import (
    CertificateError,
    ChallengeError,
    ErrorCode,
    FormError,
    RefusedError,
    WorkflowError,
)
from engine._plugins import Catalog
from engine.core.declarations import (
    CertificateIdentity,
    IssuerCA,
    Labels,
    RegistrationCompleted,
)
from engine.core.fields import Form, Name, text_validator, using_today, validate_form
from engine.core.step_data import MASKERS, Hashers, accept_step, masked_diff
from engine.core.workflow import (
    AWAITING_OFFICER,
    ENDINGS,
    OFFICER,
    Event,
    Step,
    WorkflowDefinition,
    advance,
)
from engine.pki.card_response import CardResponse, Challenge, check_card_response
from engine.services import metrics
from engine.services.accounts import AccountService, ActivationMail
from engine.services.hashing import IdentifierHasher, PasswordHasher, new_id
from engine.services.mobile_id import (
    MobileIdBinding,
    MobileIds,
    MobileIdSigner,
    PendingMobileId,
)
from engine.services.revocation_checks import RevocationChecker
from engine.services.trust import TrustService
from engine.store import (
    KEPT_EVIDENCE,
    ConcurrentUpdate,
    Database,
    RegistrationRecord,
    UnitOfWork,
)
from engine.store import Challenge as ChallengeRow

ACCOUNT_COLUMNS = (
    "email", "contact_name", "national_id_hash", "national_id_masked", "ubn", "sub_card", "oid",
    "company_name", "phone", "address",
)  # fmt: skip
log = logging.getLogger("swreg.registration")
TAIPEI = ZoneInfo("Asia/Taipei")  # birth dates and 'today' are Taiwan's
_NOT_PROFILE = frozenset(ACCOUNT_COLUMNS) | {"birth_date", "password_hash", "consent", "iot"}
MAX_LISTED = 1000
MOBILE_CARD_RANK: Final = "mobile"
"""The SDA card rank of a mobile citizen certificate (DESIGN.md §13)."""
MOBILE_ID_PURPOSE: Final = "registration"
"""What a registration's mobile ID tickets are begun for (their subject: its id)."""
_NO_STATUS = Labels("", "")
_NO_SECRET_HASH: Final = "0" * 64  # compared against when a registration has none


class Local(Enum):
    """The type of :data:`LOCAL`."""

    LOCAL = "local"


LOCAL: Final = Local.LOCAL
"""``secret=LOCAL``: the caller runs on the server (the CLI, an officer, a test), not in a
browser, and needs no registration secret. The web never passes it: it passes the secret of the
registration's cookie, or None when there is none (which opens nothing)."""

Secret = str | None | Local
"""What a caller presents for a registration: its secret (the web), None (the web, no cookie:
answered like an unknown id) or :data:`LOCAL`."""


def _decision_diff(officer: str, via: str, certificate: str | None) -> dict[str, str]:
    """Who decided, how, and with which certificate (when known) — an officer's audit diff."""
    diff = {"officer": officer, "via": via}
    if certificate is not None:
        diff["certificate"] = certificate
    return diff


class _Approval(Form):
    """An officer's decision: who decides (the audit row's actor is ``officer:NAME``)."""

    officer: Name


class _Rejection(_Approval):
    """A rejection also says why (kept in the audit row)."""

    reason: Annotated[str, text_validator(500)]


@dataclass(frozen=True, slots=True)
class RegistrationView:
    """What a client may see of a registration (no hashes, no certificate bytes)."""

    id: str
    state: str
    applicant_type: str
    chosen_type: str
    path: tuple[str, ...]
    data: Mapping[str, Any]
    locked: tuple[str, ...]
    account: str | None
    expires_at: datetime
    identity: Mapping[str, str] = field(default_factory=dict)
    awaiting: str | None = None
    """``"officer"`` while the registration waits at an officer step (待審核), else None."""
    status: Labels = _NO_STATUS
    """What to show for the state: its step's label, 待審核 while awaiting an officer, 已駁回."""
    updated_at: datetime | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    """The card check's non-personal evidence (``KEPT_EVIDENCE``: the certificate's facts and
    ``revocation``, DESIGN.md §4a); empty before the card check."""
    secret: str | None = field(default=None, repr=False)
    """The registration's secret, on the view :meth:`RegistrationService.start` returns only
    (the web sets it as the registration's cookie); only its SHA-256 is stored."""

    @property
    def step_number(self) -> int:
        """1-based position in the progress bar (the path's length when it ended)."""
        return self.path.index(self.state) + 1 if self.state in self.path else len(self.path)


DefinitionLoader = Callable[[str, str], WorkflowDefinition]
"""Parses and validates a definition's ``(source, origin)`` against the installed plugins."""


class WorkflowLibrary:
    """Workflow definitions by hash: the current one plus every one a registration pinned.

    A registration finishes under the definition it started with, even after the operator
    changed the file or on a worker started with another one: pinned definitions are read back
    from the database (their source is stored at ``start``) the first time they are needed.
    """

    def __init__(self, current: WorkflowDefinition, load: DefinitionLoader) -> None:
        self.current = current
        self._load = load
        self._known = {current.hash: current}
        self._stored: set[str] = set()

    def pin(self, uow: UnitOfWork, definition: WorkflowDefinition, at: datetime) -> None:
        """Make sure ``definition``'s source is stored, for registrations that start on it."""
        if definition.hash not in self._stored:
            uow.workflows.ensure(definition.hash, definition.name, definition.source, at)
            uow.on_commit(lambda: self._stored.add(definition.hash))

    def get(self, definition_hash: str, uow: UnitOfWork | None = None) -> WorkflowDefinition:
        known = self._known.get(definition_hash)
        if known is not None:
            return known
        row = uow.workflows.get(definition_hash) if uow is not None else None
        if row is None:
            raise WorkflowError(
                ErrorCode.REGISTRATION_EXPIRED, detail="its workflow definition is gone"
            )
        definition = self._load(row.source, f"pinned workflow {definition_hash[:12]}")
        self._known[definition_hash] = definition
        return definition


class RegistrationService:
    def __init__(
        self,
        *,
        database: Database,
        catalog: Catalog,
        workflows: WorkflowLibrary,
        trust: TrustService,
        revocation: RevocationChecker,
        clock: Clock,
        passwords: PasswordHasher,
        identifiers: IdentifierHasher,
        plugins: pluggy.PluginManager,
        origin: str,
        activations: AccountService | None = None,
        mobile: MobileIdSigner | None = None,
    ) -> None:
        self._database = database
        self._catalog = catalog
        self._workflows = workflows
        self._trust = trust
        self._revocation = revocation
        self._clock = clock
        self._hashers = Hashers(password=passwords.hash, identifier=identifiers.hash)
        self._plugins = plugins
        self._mobile = MobileIds(mobile, purpose=MOBILE_ID_PURPOSE)
        self.activations = activations
        """Issues and mails the activation link of each new account (None: no link)."""
        self.origin = origin

    # -- step 1: 申請類別 -------------------------------------------------------------------------

    @metrics.registration_step(Step.CATEGORY.value)
    def start(
        self, type_code: str, *, consent: bool, iot: bool = False, actor: str = "cli",
        origin: str | None = None,
    ) -> RegistrationView:  # fmt: skip
        """Choose 類別/屬性, accept the data-use statement; moves on to the card check.

        The returned view carries the registration's new secret (:attr:`RegistrationView.secret`):
        the web hands it to the browser as the registration's cookie and passes it back on every
        later call; only its SHA-256 is stored.
        """
        applicant = self._catalog.applicant(type_code)
        if consent is not True:
            raise RefusedError(ErrorCode.CONSENT_REQUIRED, field="consent")
        if iot and not applicant.iot_allowed:
            raise RefusedError(ErrorCode.IOT_NOT_ALLOWED, field="iot")
        definition = self._workflows.current
        now = self._clock.now()
        secret = secrets.token_urlsafe(32)  # 256 bits; only its SHA-256 is stored
        registration = RegistrationRecord(
            id=new_id(),
            state=Step.CATEGORY.value,
            chosen_type=applicant.code,
            applicant_type=applicant.code,
            workflow_hash=definition.hash,
            data={"consent": True, "iot": bool(iot)},
            origin=origin or self.origin,
            created_at=now,
            updated_at=now,
            expires_at=now + definition.idle_timeout,
            secret_hash=_secret_hash(secret),
        )
        with self._database.unit_of_work() as uow:
            self._workflows.pin(uow, definition, now)
            uow.audit.append(
                at=now, actor=actor, event="start", registration_id=registration.id,
                to_state=Step.CATEGORY.value, applicant_type=applicant.code,
                workflow_hash=definition.hash, diff={"consent": True, "iot": bool(iot)},
            )  # fmt: skip
            self._fire(uow, registration, Event.NEXT, actor=actor, new=True)
            uow.commit()
        metrics.registration_started(applicant.code)
        return replace(self._view(registration), secret=secret)

    # -- step 2: 憑證檢查 -------------------------------------------------------------------------

    def issue_challenge(
        self, registration_id: str, *, actor: str = "cli", secret: Secret = LOCAL
    ) -> Challenge:
        """A fresh single-use challenge (≥ 256 random bits, 5-minute default lifetime)."""
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor, secret=secret)
            self._require_state(registration, Step.CARD_CHECK)
            definition = self._workflows.get(registration.workflow_hash, uow)
            now = self._clock.now()
            challenge = Challenge(
                id=new_id(),
                registration_id=registration.id,
                nonce=secrets.token_hex(32),
                origin=registration.origin,
                expires_at=now + definition.challenge_ttl,
            )
            uow.challenges.add(
                ChallengeRow(
                    id=challenge.id,
                    registration_id=challenge.registration_id,
                    nonce=challenge.nonce,
                    origin=challenge.origin,
                    created_at=now,
                    expires_at=challenge.expires_at,
                )
            )
            uow.commit()
            return challenge

    @metrics.registration_step(Step.CARD_CHECK.value)
    def submit_card(
        self, registration_id: str, response: CardResponse, *, actor: str = "cli",
        secret: Secret = LOCAL, mobile: MobileIdBinding | None = None,
    ) -> RegistrationView:  # fmt: skip
        """Validate the card's certificate and signature; moves on to 基本資料.

        ``mobile``: the answer came from the phone (行動自然人憑證, DESIGN.md §13), not a card: its
        binding is checked against the certificate too and kept with the evidence, and 基本資料
        must then name the ID the phone was asked for.

        The challenge is used up whatever the outcome: its consumption is committed first, so a
        refused response cannot be replayed either. A caller without the registration's secret
        consumes nothing: it is answered like an unknown id first. The certificate checks run
        outside any transaction — the revocation check may ask an OCSP responder or fetch a CRL
        and writes what it learnt —, then one transaction re-reads the registration and records
        the step.
        """
        with self._database.unit_of_work() as uow:
            if secret is not LOCAL:
                self._get(uow, registration_id, secret)
            challenge = self._consume_challenge(uow, registration_id, response.challenge_id)
            try:
                registration = self._load(uow, registration_id, actor)
                self._require_state(registration, Step.CARD_CHECK)
            finally:
                uow.commit()  # only the challenge's consumption (and an expiry) was written
        chosen = self._catalog.applicant(registration.chosen_type)
        snapshot = self._trust.snapshot()
        with metrics.card_check():
            result = check_card_response(
                response, challenge, chosen=chosen, catalog=self._catalog,
                trust=snapshot.store, at=self._clock.now(),
                revocation=self._revocation.bound(snapshot),
            )  # fmt: skip
        parsed = result.parsed
        if mobile is not None:
            mobile.check(parsed.identity)
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor)
            self._require_state(registration, Step.CARD_CHECK)
            if uow.certificates.has_active_login(parsed.fingerprint):
                raise RefusedError(ErrorCode.ALREADY_REGISTERED)
            applicant = result.applicant
            prefill = applicant.binding.prefill(parsed.identity)
            diff: dict[str, Any] = {
                "certificate": parsed.fingerprint,
                "ca": parsed.ca.value,
                "revocation": result.revocation.audit(response=False),  # kept as evidence
            }
            if applicant.code != registration.applicant_type:
                diff["applicant_type"] = {"from": registration.applicant_type, "to": applicant.code}
                registration.applicant_type = applicant.code
            evidence = result.evidence(challenge)
            if mobile is not None:
                evidence["mobile_id"] = mobile.evidence()
                diff.update(mobile.audit())
            registration.evidence = evidence
            registration.certificate_der = parsed.der
            registration.certificate_fingerprint = parsed.fingerprint
            registration.locked = sorted(prefill)
            registration.data = {**registration.data, **prefill}
            diff.update(masked_diff(prefill))
            self._fire(uow, registration, Event.NEXT, actor=actor, diff=diff)
            uow.commit()
        return self._view(registration, holder=secret is not LOCAL)

    def _consume_challenge(
        self, uow: UnitOfWork, registration_id: str, challenge_id: str
    ) -> Challenge:
        """Mark the challenge used in ``uow`` (single use, success or not: see submit_card)."""
        now = self._clock.now()
        row = uow.challenges.take(challenge_id, registration_id, now)
        if row is None:  # why not: one more read, on this refusal only
            known = uow.challenges.get(challenge_id)
            if known is None or known.registration_id != registration_id:
                raise ChallengeError(ErrorCode.CHALLENGE_EXPIRED, detail="unknown challenge")
            raise ChallengeError(ErrorCode.CHALLENGE_USED)
        if now > row.expires_at:
            raise ChallengeError(ErrorCode.CHALLENGE_EXPIRED)
        return Challenge(
            id=row.id,
            registration_id=row.registration_id,
            nonce=row.nonce,
            origin=row.origin,
            expires_at=row.expires_at,
        )

    def offers_mobile_id(self, type_code: str) -> bool:
        """Whether the card step of ``type_code`` offers the phone: a TW FidO service is
        configured and the type's login certificate may be a mobile one (the 個人 types)."""
        return self._mobile.enabled and self._takes_mobile_certificate(type_code)

    def begin_mobile_id(
        self, registration_id: str, national_id: str, *, push: bool = False,
        actor: str = "cli", secret: Secret = LOCAL,
    ) -> PendingMobileId:  # fmt: skip
        """The card check with the mobile citizen certificate: a challenge for this
        registration, which TW FidO asks ``national_id``'s phone to sign. A type whose login
        certificate cannot be a mobile one is ``certificate_type_mismatch`` before anything is
        asked."""
        view = self.status(registration_id, actor=actor, secret=secret)
        self.check_mobile_id(view.applicant_type)
        return self._mobile.begin(
            national_id,
            lambda: self.issue_challenge(registration_id, actor=actor, secret=secret),
            subject=registration_id,
            push=push,
        )

    def collect_mobile_id(
        self, registration_id: str, pending_id: str, *, actor: str = "cli",
        secret: Secret = LOCAL,
    ) -> RegistrationView | None:  # fmt: skip
        """The phone's answer to :meth:`begin_mobile_id`, checked as :meth:`submit_card` checks a
        card's (moving on to 基本資料); None while the phone has not answered. A registration
        no longer at its card check (cancelled, back, moved on, expired) refuses before MOI is
        asked, and the ticket is forgotten."""
        try:
            with self._database.unit_of_work() as uow:
                state = self._load(uow, registration_id, actor, secret=secret).state
        except WorkflowError as refused:
            if refused.code is ErrorCode.REGISTRATION_EXPIRED:  # nobody may use the answer
                self._mobile.discard(pending_id, subject=registration_id)
            raise
        if state != Step.CARD_CHECK:
            self._mobile.discard(pending_id, subject=registration_id)
            raise WorkflowError(ErrorCode.INVALID_TRANSITION, detail=state)
        answer = self._mobile.collect(pending_id, subject=registration_id)
        if answer is None:
            return None
        return self.submit_card(
            registration_id, answer.response, actor=actor, secret=secret, mobile=answer.binding
        )

    def check_mobile_id(self, type_code: str) -> None:
        """``mobile_id_unavailable`` without a TW FidO service; ``certificate_type_mismatch``
        for a type whose login certificate cannot be a mobile one."""
        self._mobile.require()
        if not self._takes_mobile_certificate(type_code):
            raise CertificateError(ErrorCode.CERTIFICATE_TYPE_MISMATCH)

    def _takes_mobile_certificate(self, type_code: str) -> bool:
        """MOICA, card rank ``mobile`` (DESIGN.md §13), fits the type's login profile."""
        login = self._catalog.applicant(type_code).login
        return login.accepts_card(IssuerCA.MOICA, MOBILE_CARD_RANK)

    # -- steps 3, 4 and plugin steps: forms ------------------------------------------------------

    @metrics.registration_step()  # named by the registration's step once it is loaded
    def submit(
        self, registration_id: str, answers: Mapping[str, Any], *, actor: str = "cli",
        secret: Secret = LOCAL,
    ) -> RegistrationView:  # fmt: skip
        """Submit the current step's form (基本資料, 企業資訊 or a plugin step); moves on."""
        holder = secret is not LOCAL
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor, secret=secret)
            metrics.at_step(registration.state)
            if self._workflows.get(registration.workflow_hash, uow).awaits_officer(
                registration.state
            ):
                raise WorkflowError(
                    ErrorCode.INVALID_TRANSITION, detail="awaiting approval by an officer"
                )
            applicant = self._catalog.applicant(registration.applicant_type)
            form = self._catalog.step_form(applicant, registration.state)
            if form is None and registration.state in self._catalog.steps:
                # a plugin step that only needs to be passed (a notice)
                mail = self._fire(uow, registration, Event.NEXT, actor=actor)
                uow.commit()
                self._announce(registration, mail)
                return self._view(registration, holder=holder)
            if form is None:
                raise WorkflowError(ErrorCode.INVALID_TRANSITION, detail=registration.state)
            with using_today(self._clock.now().astimezone(TAIPEI).date()):
                step = accept_step(
                    form, answers, applicant=applicant, identity=_identity(registration),
                    locked={k: registration.data[k] for k in registration.locked},
                )  # fmt: skip
            self._check_id_sent_to_phone(registration, step.plain)
            account = applicant.account.name({**registration.data, **step.plain})
            if account is not None and uow.accounts.exists(account):  # 用戶姓名已存在
                raise RefusedError(ErrorCode.ACCOUNT_EXISTS, field=applicant.account.field)
            registration.data = {**registration.data, **step.stored(self._hashers)}
            registration.account_name = account
            mail = self._fire(uow, registration, Event.NEXT, actor=actor, diff=step.audit_diff)
            uow.commit()
        self._announce(registration, mail)
        return self._view(registration, holder=holder)

    def _check_id_sent_to_phone(
        self, registration: RegistrationRecord, plain: Mapping[str, Any]
    ) -> None:
        """After a mobile ID's card check, the ID typed must be the one its phone was asked
        for (``identity_mismatch``): the certificate holds only its last four digits."""
        sent = ((registration.evidence or {}).get("mobile_id") or {}).get("national_id_hash")
        typed = plain.get("national_id")
        if sent and typed and self._hashers.identifier("national_id", str(typed)) != sent:
            raise FormError([RefusedError(ErrorCode.IDENTITY_MISMATCH, field="national_id")])

    # -- 上一步, 取消, status, expiry --------------------------------------------------------------

    def back(
        self, registration_id: str, *, actor: str = "cli", secret: Secret = LOCAL
    ) -> RegistrationView:
        """上一步: what was typed is kept; leaving 基本資料 for the card check needs a new check."""
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor, secret=secret)
            self._fire(uow, registration, Event.BACK, actor=actor, arriving=self._forget_card)
            uow.commit()
            return self._view(registration, holder=secret is not LOCAL)

    def cancel(
        self, registration_id: str, *, actor: str = "cli", secret: Secret = LOCAL
    ) -> RegistrationView:
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor, secret=secret)
            self._fire(uow, registration, Event.CANCEL, actor=actor)
            uow.commit()
            return self._view(registration, holder=secret is not LOCAL)

    def step_form(self, view: RegistrationView) -> type[BaseModel] | None:
        """The form of the registration's current step (None: nothing to fill there)."""
        applicant = self._catalog.applicant(view.applicant_type)
        return self._catalog.step_form(applicant, view.state)

    def status(
        self, registration_id: str, *, actor: str = "cli", secret: Secret = LOCAL
    ) -> RegistrationView:
        """The registration as its caller may see it: whole for a local caller; for the holder
        of its secret, whole until it ends and then only id, state, type and masked account."""
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor, secret=secret, expire_only=True)
            return self._view(registration, uow, holder=secret is not LOCAL)

    def expire_idle(self, *, actor: str = "system") -> int:
        """Expire every registration idle past its deadline; returns how many.

        A registration waiting for an officer has no deadline (unless its step has a
        ``timeout_minutes``), so this never expires it for the applicant's idleness.

        Each one is expired in its own transaction: one that another process expired or moved
        on first (a purge on another machine, the applicant's request) is left to it and not
        counted, so that any number of sweeps may run at once (``swreg purge`` from cron).
        """
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            stale = uow.registrations.idle(now, ending_states=sorted(ENDINGS))
        expired = 0
        for registration in stale:
            with self._database.unit_of_work() as uow:
                try:
                    self._fire(uow, registration, Event.EXPIRE, actor=actor)
                    uow.commit()
                except ConcurrentUpdate:
                    uow.rollback()
                    continue
            expired += 1
        return expired

    # -- officer steps: 審核 ----------------------------------------------------------------------

    def find(
        self,
        *,
        state: str | Collection[str] | None = None,
        applicant_type: str | None = None,
        limit: int = 100,
    ) -> list[RegistrationView]:
        """Registrations, longest unchanged first; ``state="approval"`` is an officers' queue.

        Registrations past their deadline that have not ended yet are left out (the sweeper,
        :meth:`expire_idle`, or the next look at them expires them).
        """
        if not 1 <= limit <= MAX_LISTED:
            raise RefusedError(ErrorCode.INVALID_VALUE, field="limit", detail=f"1 to {MAX_LISTED}")
        now = self._clock.now()
        with self._database.unit_of_work() as uow:
            found = uow.registrations.find(state=state, applicant_type=applicant_type, limit=limit)
            return [
                self._view(registration, uow)
                for registration in found
                if registration.state in ENDINGS or now <= registration.expires_at
            ]

    def state_statuses(self, registration_id: str) -> dict[str, Labels]:
        """What to show for every state the workflow of a registration may hold it in (its
        steps and endings), as :attr:`RegistrationView.status` shows the current one: an
        officer's audit trail words its rows' states with these."""
        with self._database.unit_of_work() as uow:
            registration = self._get(uow, registration_id, LOCAL)
            definition = self._workflows.get(registration.workflow_hash, uow)
        states = (*(step.id for step in definition.steps), *(end.value for end in ENDINGS))
        return {state: state_status(definition, state) for state in states}

    def awaiting_officers(self, *, limit: int = MAX_LISTED) -> list[RegistrationView]:
        """The officers' queue: registrations waiting at any officer step (a plugin's step
        with ``actor="officer"``, wherever a workflow placed it), longest waiting first."""
        steps = {code for code, spec in self._catalog.steps.items() if spec.actor == OFFICER}
        if not steps:
            return []
        return [view for view in self.find(state=steps, limit=limit) if view.awaiting]

    def approve(
        self,
        registration_id: str,
        *,
        officer: str,
        via: str = "cli",
        certificate: str | None = None,
    ) -> RegistrationView:
        """An officer approves a registration waiting at an officer step (待審核).

        It moves on to the following step. When that is ``completed``, the account is created
        in this transaction with its audit row, exactly as after a last form, and plugins are
        told after the commit (the activation mail goes out). The audit row's actor is
        ``officer:NAME``; ``via`` (``cli``, ``api:client=…``) and ``certificate`` (the
        fingerprint of the officer's certificate, when the officer was authenticated by it) are
        recorded in its diff.
        """
        decision = validate_form(_Approval, {"officer": officer})
        actor = f"officer:{decision.officer}"
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor)
            self._require_officer_step(uow, registration)
            diff = _decision_diff(decision.officer, via, certificate)
            mail = self._fire(uow, registration, Event.APPROVE, actor=actor, diff=diff)
            uow.commit()
        self._announce(registration, mail)
        return self._view(registration)

    def reject(
        self, registration_id: str, *, officer: str, reason: str, via: str = "cli",
        certificate: str | None = None,
    ) -> RegistrationView:  # fmt: skip
        """An officer rejects a registration waiting at an officer step: it ends in
        ``rejected``, no account is created, and the audit row keeps the reason."""
        decision = validate_form(_Rejection, {"officer": officer, "reason": reason})
        actor = f"officer:{decision.officer}"
        with self._database.unit_of_work() as uow:
            registration = self._load(uow, registration_id, actor)
            self._require_officer_step(uow, registration)
            diff = {**_decision_diff(decision.officer, via, certificate), "reason": decision.reason}
            self._fire(uow, registration, Event.REJECT, actor=actor, diff=diff)
            uow.commit()
        return self._view(registration)

    def _require_officer_step(self, uow: UnitOfWork, registration: RegistrationRecord) -> None:
        definition = self._workflows.get(registration.workflow_hash, uow)
        if registration.state in ENDINGS or not definition.awaits_officer(registration.state):
            raise WorkflowError(
                ErrorCode.INVALID_TRANSITION,
                detail=f"the registration is at {registration.state!r}, not awaiting an officer",
            )

    def check_account(self, name: str) -> bool:
        """檢核是否存在: True when the account name is still free (「此帳號可使用」)."""
        with self._database.unit_of_work() as uow:
            return not uow.accounts.exists(name.strip().lower() if "@" in name else name.strip())

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _get(uow: UnitOfWork, registration_id: str, secret: Secret) -> RegistrationRecord:
        """The registration, if ``secret`` opens it: without its secret (or with a wrong one)
        a registration is answered exactly like an unknown id. Compared in constant time."""
        presented = None if secret is LOCAL else _secret_hash(secret or "")
        registration = uow.registrations.get(registration_id)
        opened = presented is None or (
            registration is not None
            and hmac.compare_digest(presented, registration.secret_hash or _NO_SECRET_HASH)
        )
        if registration is None or not opened:
            raise WorkflowError(ErrorCode.REGISTRATION_NOT_FOUND, field="registration_id")
        return registration

    def _load(
        self, uow: UnitOfWork, registration_id: str, actor: str, *, secret: Secret = LOCAL,
        expire_only: bool = False,
    ) -> RegistrationRecord:  # fmt: skip
        registration = self._get(uow, registration_id, secret)
        if registration.state not in ENDINGS and self._clock.now() > registration.expires_at:
            try:
                self._fire(uow, registration, Event.EXPIRE, actor=actor)
                uow.commit()
            except ConcurrentUpdate:  # another request moved it first: read it again
                uow.rollback()
                registration = uow.registrations.get(registration_id) or registration
            if not expire_only:
                raise WorkflowError(ErrorCode.REGISTRATION_EXPIRED)
        if registration.state == Step.EXPIRED and not expire_only:
            raise WorkflowError(ErrorCode.REGISTRATION_EXPIRED)
        return registration

    @staticmethod
    def _require_state(registration: RegistrationRecord, state: Step) -> None:
        if registration.state != state:
            raise WorkflowError(
                ErrorCode.INVALID_TRANSITION,
                detail=f"the registration is at {registration.state!r}, not {state.value!r}",
            )

    def _fire(
        self, uow: UnitOfWork, registration: RegistrationRecord, event: Event, *, actor: str,
        diff: Mapping[str, Any] | None = None, new: bool = False,
        arriving: Callable[[RegistrationRecord], None] | None = None,
    ) -> ActivationMail | None:  # fmt: skip
        """Move the registration by ``event`` and write it (insert it when ``new``) with its
        audit row; entering ``completed`` also creates the account. ``arriving`` may change
        the record at its new state before it is written. Returns the activation mail to
        deliver after the commit, if an account was created."""
        definition = self._workflows.get(registration.workflow_hash, uow)
        applicant = self._catalog.applicant(registration.applicant_type)
        source = registration.state
        try:
            target = advance(definition, applicant, source, event)
        except TransitionNotAllowed:
            raise WorkflowError(
                ErrorCode.INVALID_TRANSITION, detail=f"cannot {event.value} at {source!r}"
            ) from None
        now = self._clock.now()
        registration.state = target
        registration.updated_at = now
        if target not in ENDINGS:  # officer steps wait without an idle deadline
            registration.expires_at = definition.deadline(target, now)
        applicant_type = registration.applicant_type  # the audit row's: the one that moved
        recorded = dict(diff or {})
        if target == Step.COMPLETED:
            registration.account_name = applicant.account.name(registration.data)
            recorded.update(masked_diff({"account": registration.account_name}))
        if arriving is not None:
            arriving(registration)
        if new:
            uow.registrations.add(registration)
        else:
            uow.registrations.save(registration)  # first: a concurrent double submit stops here
        uow.audit.append(
            at=now, actor=actor, event=event.value, registration_id=registration.id,
            from_state=source, to_state=target, applicant_type=applicant_type,
            workflow_hash=registration.workflow_hash, diff=recorded,
        )  # fmt: skip
        return self._create_account(uow, registration) if target == Step.COMPLETED else None

    @staticmethod
    def _forget_card(registration: RegistrationRecord) -> None:
        """Back at the card check (or before it): the card's prefill and evidence are gone."""
        if registration.state not in (Step.CARD_CHECK, Step.CATEGORY):
            return
        registration.data = {
            k: v for k, v in registration.data.items() if k not in registration.locked
        }
        registration.locked = []
        registration.evidence = None
        registration.certificate_der = None
        registration.certificate_fingerprint = None
        registration.applicant_type = registration.chosen_type

    def _create_account(
        self, uow: UnitOfWork, registration: RegistrationRecord
    ) -> ActivationMail | None:
        """The account, its login certificate and (with an account service) its first
        activation link, in ``uow``; the mail to deliver after the commit."""
        applicant = self._catalog.applicant(registration.applicant_type)
        data = registration.data
        name = applicant.account.name(data)
        evidence = registration.evidence
        if name is None or evidence is None or registration.certificate_der is None:
            raise WorkflowError(ErrorCode.INVALID_TRANSITION, detail="incomplete registration")
        now = self._clock.now()
        birth = data.get("birth_date")
        account_id = uow.accounts.insert(
            {
                "name": name,
                "applicant_type": applicant.code,
                "category": applicant.category.value,
                "status": "pending_activation",
                "birth_date": date.fromisoformat(birth) if birth else None,
                "iot": bool(data.get("iot")),
                "password_hash": data["password_hash"],
                "profile": {k: v for k, v in data.items() if k not in _NOT_PROFILE},
                "registration_id": registration.id,
                "created_at": now,
                "password_changed_at": now,
                **{column: data.get(column) for column in ACCOUNT_COLUMNS},
            }
        )
        identity = evidence.get("identity", {})
        uow.certificates.insert(
            {
                "fingerprint": evidence["fingerprint"],
                "purpose": "login",
                "account_id": account_id,
                "registration_id": registration.id,
                "der": registration.certificate_der,
                "serial_hex": evidence["serial"],
                "subject": evidence["subject"],
                "issuer": evidence["issuer"],
                "ca": evidence["ca"],
                "card_rank": identity.get("card_rank"),
                "not_before": datetime.fromisoformat(evidence["not_before"]),
                "not_after": datetime.fromisoformat(evidence["not_after"]),
                "ubn": identity.get("ubn") or data.get("ubn"),
                "oid": identity.get("oid"),
                "national_id_hash": data.get("national_id_hash"),
                "query_key": data.get("national_id_hash") or data.get(applicant.account.field),
                "status": "active",
                "created_at": now,
            }
        )
        if self.activations is None:
            return None
        return self.activations.issue(
            uow, account_id=account_id, name=name, email=data["email"],
            applicant_type=applicant.code,
        )  # fmt: skip

    def _announce(self, registration: RegistrationRecord, mail: ActivationMail | None) -> None:
        """After the commit of a completion: mail the activation link and tell the plugins
        (a failure of either is logged; the account exists regardless)."""
        if registration.state != Step.COMPLETED:
            return
        metrics.registration_completed(registration.applicant_type)
        if mail is not None and self.activations is not None:
            self.activations.deliver_quietly(mail)
        event = RegistrationCompleted(
            registration_id=registration.id,
            account=registration.account_name or "",
            applicant_type=registration.applicant_type,
            email=registration.data.get("email"),
            at=self._clock.now(),
            fields=masked_diff(
                {k: v for k, v in registration.data.items() if not k.endswith("_hash")}
            ),
        )
        try:
            self._plugins.hook.swreg_registration_completed(event=event)
        except Exception:  # the account exists; a plugin's failure cannot undo it
            log.exception("a swreg_registration_completed hook failed (%s)", event.applicant_type)

    def _view(
        self, registration: RegistrationRecord, uow: UnitOfWork | None = None, *,
        holder: bool = False,
    ) -> RegistrationView:  # fmt: skip
        """What a caller sees; the ``holder`` (a browser, with the secret) of an ended
        registration sees only its id, state, type and masked account (DESIGN.md §6)."""
        applicant = self._catalog.applicant(registration.applicant_type)
        definition = self._workflows.get(registration.workflow_hash, uow)
        state = registration.state
        ended = holder and state in ENDINGS
        account = registration.account_name or applicant.account.name(registration.data)
        if ended and account is not None:
            account = MASKERS["account"](account)
        visible = (
            {} if ended else {k: v for k, v in registration.data.items() if not k.endswith("_hash")}
        )
        awaiting = OFFICER if definition.awaits_officer(state) else None
        status = state_status(definition, state)
        return RegistrationView(
            id=registration.id,
            state=registration.state,
            applicant_type=registration.applicant_type,
            chosen_type=registration.chosen_type,
            path=definition.path_for(applicant),
            data=visible,
            locked=() if ended else tuple(registration.locked),
            account=account,
            expires_at=registration.expires_at,
            identity={} if ended else (registration.evidence or {}).get("identity", {}),
            evidence={k: v for k, v in (registration.evidence or {}).items() if k in KEPT_EVIDENCE},
            awaiting=awaiting,
            status=status,
            updated_at=registration.updated_at,
        )


def state_status(definition: WorkflowDefinition, state: str) -> Labels:
    """What to show for ``state`` under ``definition``: 待審核 at an officer step, else the
    step's label (a plugin's step brings its own), the state id itself for an unknown one."""
    if definition.awaits_officer(state):
        return AWAITING_OFFICER
    if state in Step.__members__.values():
        return Step(state).labels
    step = next((s for s in definition.steps if s.id == state), None)
    return step.labels if step is not None and step.labels else Labels(state, state)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _identity(registration: RegistrationRecord) -> CertificateIdentity:
    identity = (registration.evidence or {}).get("identity", {})
    return CertificateIdentity(**identity)
