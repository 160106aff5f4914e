"""The composition root: :func:`bootstrap` wires settings, plugins, store and services.

Nothing in ``engine`` touches the database, a reader or entry points at import time; everything
happens here, once per process (or once per test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pluggy

from engine._clock import Clock, SystemClock
from engine._plugins import Catalog, make_plugin_manager
from engine._settings import Settings
from engine.core.workflow import WorkflowDefinition, default_definition_source, load_definition
from engine.services.account_settings import AccountSettingsService
from engine.services.accounts import AccountLimits, AccountService
from engine.services.audit import AuditService
from engine.services.customs import CustomsCertificateService
from engine.services.hashing import IdentifierHasher, PasswordHasher
from engine.services.health import HealthService
from engine.services.inspection import CertificateInspector
from engine.services.login import LoginService
from engine.services.mail import Mailer, make_mailer
from engine.services.mobile_id import MobileIdSigner
from engine.services.ocsp import OcspService
from engine.services.officer_console import OfficerConsole
from engine.services.officers import OfficerService
from engine.services.password_reset import PasswordResetService
from engine.services.rate_limits import RateLimiter
from engine.services.registration import RegistrationService, WorkflowLibrary
from engine.services.reminders import ReminderService
from engine.services.renewal import RenewalService
from engine.services.retention import RetentionService
from engine.services.revocation import RevocationService
from engine.services.revocation_checks import RevocationChecker
from engine.services.secret_keys import SecretKeys
from engine.services.trust import TrustService
from engine.services.turnkey import TurnkeyVerifier, load_timestamp_authorities
from engine.store import Database


@dataclass(frozen=True)
class App:
    """Everything a front end (CLI, HTTP API, web wizard) needs, wired once."""

    settings: Settings
    clock: Clock
    plugins: pluggy.PluginManager
    catalog: Catalog
    workflow: WorkflowDefinition
    database: Database
    trust: TrustService
    registrations: RegistrationService
    mailer: Mailer
    accounts: AccountService
    logins: LoginService
    limits: RateLimiter
    customs: CustomsCertificateService
    turnkey: TurnkeyVerifier
    reminders: ReminderService
    renewals: RenewalService
    password_resets: PasswordResetService
    """忘記密碼: a new password proven with the account's card (DESIGN.md §6)."""
    account_settings: AccountSettingsService
    """The account page's password and e-mail changes (DESIGN.md §6)."""
    audit: AuditService
    retention: RetentionService
    officers: OfficerService
    revocation: RevocationService
    """CRL sources, ``swreg revocation refresh`` and ``status`` (DESIGN.md §4a)."""
    ocsp: OcspService
    """OCSP status with the shared database cache (DESIGN.md §4a)."""
    revocation_checks: RevocationChecker
    """The one revocation check of every certificate check, with the policy (DESIGN.md §4a)."""
    identifiers: IdentifierHasher
    """The keyed hash under the server's key: personal IDs, client addresses, CSRF tokens."""
    mobile_ids: MobileIdSigner
    """行動自然人憑證: TW FidO signings under way (DESIGN.md §13)."""
    health: HealthService
    """What ``GET /readyz`` answers (DESIGN.md §11)."""
    secret_keys: SecretKeys
    """The keyring behind :attr:`identifiers`, checked against the database; ``swreg keys``."""
    inspector: CertificateInspector
    """``swreg cert inspect`` (DESIGN.md §9)."""
    console: OfficerConsole
    """The officer console at ``/officer`` (DESIGN.md §12)."""

    def inspect_certificate(self, data: bytes) -> dict[str, Any]:
        """``swreg cert inspect``: the certificate as the card check sees it."""
        return self.inspector.explain(data)

    def close(self) -> None:
        self.ocsp.close()
        self.database.dispose()


def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    plugins: pluggy.PluginManager | None = None,
    migrate: bool = True,
) -> App:
    """Build the application: plugins, catalogue, workflow, database and services."""
    clock = clock or SystemClock()
    manager = plugins or make_plugin_manager()
    catalog = Catalog.from_plugins(manager)
    workflow = load_workflow(settings, catalog)
    database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    if migrate:
        database.migrate()
    trust = TrustService(database, clock)
    ocsp = OcspService(
        database,
        hosts=settings.fetch_hosts,
        timeout=settings.ocsp_timeout,
        max_age=settings.ocsp_max_age,
    )
    revocation = RevocationService(
        database,
        clock,
        trust,
        hosts=settings.fetch_hosts,
        grace=settings.crl_grace,
        ocsp=ocsp,  # refresh renews the OCSP answers of registered signing certificates
        cas=settings.revocation_cas,
    )
    checker = RevocationChecker(
        trust=trust,
        ocsp=ocsp,
        crls=revocation,
        clock=clock,
        policy=settings.revocation_policy,
        grace=settings.crl_grace,
        cas=settings.revocation_cas,
    )
    argon = settings.argon2
    secret_keys = SecretKeys.open(database, clock, settings)  # refused: not this database's
    identifiers = secret_keys.hasher
    passwords = PasswordHasher(
        time_cost=argon.time_cost, memory_cost=argon.memory_kib, parallelism=argon.parallelism
    )
    mailer = make_mailer(settings.mail, demo=settings.demo)
    account_limits = AccountLimits(RateLimiter(database, clock), identifiers)
    mobile_ids = MobileIdSigner(
        database, clock, identifiers, settings.twfido, limits=account_limits
    )
    accounts = AccountService(
        database,
        clock,
        mailer,
        public_origin=settings.public_origin,
        activation_ttl=settings.activation_ttl,
        sender=settings.mail.sender,
    )
    logins = LoginService(
        database,
        clock,
        trust,
        checker,
        limits=account_limits,
        session_ttl=settings.session_ttl,
        session_max=settings.session_max,
        mobile=mobile_ids,
    )
    registrations = RegistrationService(
        database=database,
        catalog=catalog,
        workflows=WorkflowLibrary(
            workflow,
            lambda source, origin: load_definition(
                source,
                origin=origin,
                contributed=catalog.steps,
                applicants=catalog.applicant_types.values(),
            ),
        ),
        trust=trust,
        revocation=checker,
        clock=clock,
        passwords=passwords,
        identifiers=identifiers,
        plugins=manager,
        activations=accounts,
        origin=settings.cli_origin,
        mobile=mobile_ids,
    )
    customs = CustomsCertificateService(database, clock, trust, checker, catalog, identifiers)
    audit = AuditService(database)
    inspector = CertificateInspector(trust, checker, catalog, clock)
    return App(
        settings=settings,
        identifiers=identifiers,
        clock=clock,
        plugins=manager,
        catalog=catalog,
        workflow=workflow,
        database=database,
        trust=trust,
        registrations=registrations,
        mailer=mailer,
        accounts=accounts,
        logins=logins,
        limits=RateLimiter(database, clock),
        customs=customs,
        turnkey=TurnkeyVerifier(
            database,
            clock,
            trust,
            checker,
            timestamp_authorities=load_timestamp_authorities(settings.tsa_certs),
        ),
        reminders=ReminderService(
            database,
            clock,
            mailer,
            public_origin=settings.public_origin,
            sender=settings.mail.sender,
        ),
        renewals=RenewalService(
            database, clock, trust, checker, catalog, passwords, limits=account_limits
        ),
        password_resets=PasswordResetService(
            database,
            clock,
            trust,
            checker,
            passwords,
            mailer,
            limits=account_limits,
            sender=settings.mail.sender,
            public_origin=settings.public_origin,
            email_links=settings.email_password_reset,
            mobile=mobile_ids,
        ),
        account_settings=AccountSettingsService(
            database,
            clock,
            accounts,
            logins,
            passwords,
            mailer,
            limits=account_limits,
            public_origin=settings.public_origin,
            sender=settings.mail.sender,
        ),
        audit=audit,
        retention=RetentionService(
            database, clock, registrations, retention_days=settings.retention_days
        ),
        officers=OfficerService(database, clock, RateLimiter(database, clock)),
        revocation=revocation,
        ocsp=ocsp,
        revocation_checks=checker,
        mobile_ids=mobile_ids,
        health=HealthService(
            database,
            clock,
            trust,
            mailer,
            policy=settings.revocation_policy,
            grace=settings.crl_grace,
            cas=settings.revocation_cas,
            secret_keys=secret_keys,
        ),
        secret_keys=secret_keys,
        inspector=inspector,
        console=OfficerConsole(
            database,
            clock,
            trust=trust,
            revocation_checks=checker,
            revocation=revocation,
            registrations=registrations,
            accounts=accounts,
            customs=customs,
            audit=audit,
            identifiers=identifiers,
            inspector=inspector,
            session_ttl=settings.session_ttl,
            session_max=settings.session_max,
        ),
    )


def load_workflow(settings: Settings, catalog: Catalog) -> WorkflowDefinition:
    """The configured workflow file, or the built-in definition of the seed manual."""
    if settings.workflow_file is not None:
        source, origin = (
            settings.workflow_file.read_text(encoding="utf-8"),
            str(settings.workflow_file),
        )
    else:
        source, origin = default_definition_source(), "engine/core/workflow.toml"
    return load_definition(
        source,
        origin=origin,
        contributed=catalog.steps,
        applicants=catalog.applicant_types.values(),
    )
