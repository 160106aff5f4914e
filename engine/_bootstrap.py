"""The composition root: :func:`bootstrap` wires settings, plugins, store and services.

Nothing in ``engine`` touches the database, a reader or entry points at import time; everything
happens here, once per process (or once per test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pluggy

from ._cert_checks import inspect
from ._certificate import load_certificate
from ._clock import Clock, SystemClock
from ._plugins import Catalog, make_plugin_manager
from ._registration import RegistrationService, WorkflowLibrary
from ._security import IdentifierHasher, PasswordHasher
from ._settings import Settings
from ._trust_service import TrustService
from ._workflow import WorkflowDefinition, default_definition_source, load_definition
from .store import Database


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

    def inspect_certificate(self, data: bytes) -> dict[str, Any]:
        """``swreg cert inspect``: the certificate as the card check sees it."""
        parsed = load_certificate(data)
        snapshot = self.trust.snapshot()
        return inspect(
            parsed,
            trust=snapshot.store,
            revocation=snapshot.revocation,
            at=self.clock.now(),
            accepted_by=self.catalog.accepting(parsed.ca, parsed.identity),
        )

    def close(self) -> None:
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
    database = Database(settings.database_url)
    if migrate:
        database.migrate()
    trust = TrustService(database, clock)
    argon = settings.argon2
    registrations = RegistrationService(
        database=database,
        catalog=catalog,
        workflows=WorkflowLibrary(workflow),
        trust=trust,
        clock=clock,
        passwords=PasswordHasher(
            time_cost=argon.time_cost, memory_cost=argon.memory_kib, parallelism=argon.parallelism
        ),
        identifiers=IdentifierHasher(settings.identifier_key()),
        plugins=manager,
        origin=settings.origin,
    )
    return App(settings, clock, manager, catalog, workflow, database, trust, registrations)


def load_workflow(settings: Settings, catalog: Catalog) -> WorkflowDefinition:
    """The configured workflow file, or the built-in definition of the seed manual."""
    if settings.workflow_file is not None:
        source, origin = (
            settings.workflow_file.read_text(encoding="utf-8"),
            str(settings.workflow_file),
        )
    else:
        source, origin = default_definition_source(), "engine/workflow.toml"
    return load_definition(
        source,
        origin=origin,
        contributed=catalog.steps,
        applicants=catalog.applicant_types.values(),
    )
