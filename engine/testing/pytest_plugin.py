"""The swreg test kit: pytest fixtures for the authors of swreg plugins (docs/plugins.md).

Installed with swreg and loaded by pytest through the ``pytest11`` entry point ``swreg``, so a
plugin package's tests just name the fixtures (``-p no:swreg`` turns the kit off)::

    from engine import BUSINESS_CARD, COMPANY_BINDING, AccountRule, ApplicantType, Category
    from engine import CompanyInfo, EnterpriseBasicData, Labels, hookimpl

    class Airline:  # the plugin: 企業 / 航空公司, the account is the UBN
        @hookimpl
        def swreg_applicant_types(self):
            return [ApplicantType(code="enterprise.airline", category=Category.ENTERPRISE,
                    labels=Labels("航空公司", "Airline"), basic_data=EnterpriseBasicData,
                    enterprise_info=CompanyInfo, account=AccountRule("ubn"),
                    login=BUSINESS_CARD, binding=COMPANY_BINDING)]

    def test_an_airline_registers(swreg_plugin, swreg_register):
        app = swreg_plugin(Airline)
        assert swreg_register(app, "enterprise.airline") == "04595257"

Every fixture is prefixed ``swreg_`` so that it never clashes with a project's own:

``swreg_pki`` (session)
    :class:`SwregPKI`: the test PKI (GPKI-like and TaiCA-like test CAs) and cards issued for
    given identity fields: ``person``, ``resident``, ``company``, ``sub_card``, ``organization``,
    ``agency``, ``customs``, and ``card_for(profile, answers)``.
``swreg_clock``
    A :class:`~engine.FixedClock` at the PKI's "now"; every app of the test shares it.
``swreg_database_url``
    A fresh, migrated database for the test: a SQLite file in ``tmp_path``; or, with
    ``SWREG_TEST_DATABASE=postgresql`` and ``SWREG_PG_URL`` naming a PostgreSQL admin URL (the
    same two variables as swreg's own suite), a new PostgreSQL database copied for the test
    from a template migrated once per session, and dropped after it.
``swreg_settings``
    :class:`~engine.Settings` for that database: a fixed secret key, cheap argon2 parameters and
    the activation mail written to ``tmp_path / "outbox"``.
``swreg_plugin``
    :class:`AppFactory`: ``swreg_plugin(plugin, ...)`` bootstraps a fresh :class:`~engine.App`
    with the installed plugins plus ``plugin`` (a module, a class or an instance holding
    ``@hookimpl`` functions; no entry point needed), the PKI trusted and the fixed clock.
``swreg_app``
    ``swreg_plugin()``: an app with the installed plugins only.
``swreg_virtual_card``
    ``swreg_virtual_card(card, pin=PIN)`` writes a card as a PKCS#12 file and returns its
    ``virtual:FILE.p12`` spec (the in-process software card of :mod:`readers.virtual`).
``swreg_vpcd_card``
    ``swreg_vpcd_card(card, pin=PIN, slot=0)`` inserts a virtual PIV card into a vpcd reader of
    the running **pcscd** (Debian ``pcscd`` + ``vsmartcard-vpcd``) and returns its ``pcsc:``
    spec; the card is removed after the test. Without pcscd the test fails saying what to
    install or start (a skip would hide it). Tests using it are marked ``swreg_pcsc``: a run
    without pcscd leaves them out with ``-m "not swreg_pcsc"``.
``swreg_register``
    :class:`Registrar`: ``swreg_register(app, type_code, **fields)`` runs a whole registration
    through the service layer (start → card check with a virtual card → every step →
    ``completed``) and returns the account name.

Importing this module (pytest does so in every run of every project that has swreg installed)
does nothing expensive: it builds no PKI, touches no database, loads no entry point and imports
neither :mod:`readers` nor pyscard; the fixtures do that when a test asks for them. The one
cost is its parent package: Python imports :mod:`engine` first (≈ 0.6 s here, mostly
SQLAlchemy and Alembic), which an swreg plugin's own tests import anyway.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from engine import App, CertificateProfile, FixedClock, RegistrationView, Settings
    from engine.core.declarations import IssuerCA
    from engine.testing.pki import IssuedCard, TestPKI

__all__ = [
    "AGENCY_OID",
    "DATABASE_ENV",
    "ORG_OID",
    "PG_URL_ENV",
    "PIN",
    "SAMPLE_ANSWERS",
    "VPCD_ENV",
    "AppFactory",
    "Registrar",
    "SwregPKI",
    "VirtualCards",
    "VpcdCards",
    "sample_answers",
]

PIN = "246810"
"""The PIN (and PKCS#12 password) of every card the kit makes unless told otherwise."""
ORG_OID = "2.16.886.111.90010.90003.100004"
"""The OID of the sample 組織團體 (XCA card)."""
AGENCY_OID = "2.16.886.101.20003.20065.20065"
"""The OID of the sample 政府機關 (GCA card)."""
DATABASE_ENV = "SWREG_TEST_DATABASE"
"""``sqlite`` (the default) or ``postgresql``: where ``swreg_database_url`` makes databases."""
PG_URL_ENV = "SWREG_PG_URL"
"""With ``postgresql``: an admin URL of a PostgreSQL ≥ 13 server (a role that may CREATE
DATABASE); each test gets its own database there."""
VPCD_ENV = "SWREG_TEST_VPCD"
"""``NAME=PORT;NAME=PORT``: the vpcd readers and their ports (default: Debian's two slots)."""
_DEFAULT_VPCD = "Virtual PCD 00 00=35963;Virtual PCD 00 01=35964"
_SECRET_KEY = bytes(range(32))
_PCSC_MARK = "swreg_pcsc"

SAMPLE_ANSWERS: Mapping[str, Any] = MappingProxyType(
    {
        "consent": True,
        "email": "applicant@example.com",
        "contact_name": "王小明",
        "national_id": "A123456789",
        "birth_date": "1985-03-14",
        "phone": "0912-345-678",
        "address": "臺北市信義區市府路1號",
        "password": "Passw0rdOK",
        "password_confirm": "Passw0rdOK",
        "ubn": "04595257",
        "company_name": "測試貿易股份有限公司",
        "oid": ORG_OID,
        "customs_office": "AA",
        "specialist_code": "00001",
    }
)
"""Valid answers for every field of the standard forms (DESIGN.md §3 field vocabulary).

Forms ignore keys they do not declare, so one set serves every applicant type; ``sub_card`` is
left out (it changes the account name) and ``iot`` is not asked for.
"""


def sample_answers(ca: IssuerCA | str | None = None, /, **fields: Any) -> dict[str, Any]:
    """:data:`SAMPLE_ANSWERS` with ``fields`` on top; for a ``GCA`` card the OID is the agency's."""
    answers = dict(SAMPLE_ANSWERS)
    if ca is not None and str(ca) == "GCA":
        answers["oid"] = AGENCY_OID
    answers.update(fields)
    return answers


def _last4(identifier: str) -> str:
    return identifier.strip()[-4:]


def _preferred_ca(profile: CertificateProfile) -> IssuerCA | None:
    """The CA family whose card the kit issues for ``profile`` (citizen cards first)."""
    from engine import IssuerCA

    order = (IssuerCA.MOICA, IssuerCA.MOEACA, IssuerCA.XCA, IssuerCA.GCA, IssuerCA.TAICA)
    return next((ca for ca in order if ca in profile.cas), None)


# -- the PKI -----------------------------------------------------------------------------------


class SwregPKI:
    """The test PKI of the session and the cards it issues (test material only).

    Each ``issue``-style method returns an :class:`~engine.testing.IssuedCard` (certificate,
    key, chain) whose identity is the given fields; keyword ``options`` go to the matching
    :class:`~engine.testing.TestPKI` method (``key="rsa"``, ``valid_to=...``, ``key_usage=...``).
    Anything else of :class:`~engine.testing.TestPKI` (``crl``, ``lookalike_ca``, ``issue_*``)
    is reachable on this object too.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, pki: TestPKI) -> None:
        self.pki = pki

    @classmethod
    def create(cls, now: datetime | None = None, **options: Any) -> SwregPKI:
        from engine.testing.pki import TestPKI

        moment = (now or datetime.now(UTC)).replace(microsecond=0)
        return cls(TestPKI.create(moment, **options))

    @property
    def now(self) -> datetime:
        """When the PKI was made: certificates are valid from a day before to two years after."""
        return self.pki.now

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pki, name)

    # -- cards by holder ---------------------------------------------------------------------

    def person(
        self, name: str = "王小明", national_id: str = "A123456789", **options: Any
    ) -> IssuedCard:
        """自然人憑證 (MOICA): CN ``name``, the last four characters of ``national_id``."""
        return self.pki.issue_person(name, _last4(national_id), **options)

    def resident(
        self, name: str = "SMITH JOHN", arc: str = "A800000014", **options: Any
    ) -> IssuedCard:
        """居留證 (MOICA, for a resident): CN ``name``, the last four of the 居留證號 ``arc``."""
        return self.pki.issue_person(name, _last4(arc), **options)

    def company(
        self,
        ubn: str = "04595257",
        name: str = "測試貿易股份有限公司",
        *,
        rank: str | None = "primary",
        **options: Any,
    ) -> IssuedCard:
        """工商憑證 (MOEACA) of company ``ubn``: the primary card (正卡) unless ``rank`` says."""
        return self.pki.issue_company(ubn, name, rank=rank, **options)

    def sub_card(
        self, ubn: str = "04595257", name: str = "測試貿易股份有限公司", **options: Any
    ) -> IssuedCard:
        """A secondary 工商憑證 (附卡) of company ``ubn``: it registers with a ``sub_card``."""
        return self.pki.issue_company(ubn, name, rank="secondary", **options)

    def organization(
        self, oid: str = ORG_OID, name: str = "測試財團法人", **options: Any
    ) -> IssuedCard:
        """組織團體憑證 (XCA) of the organisation ``oid``."""
        return self.pki.issue_organization(oid, name, **options)

    def agency(self, oid: str = AGENCY_OID, name: str = "測試機關", **options: Any) -> IssuedCard:
        """政府憑證 (GCA) of the agency ``oid``."""
        return self.pki.issue_agency(oid, name, **options)

    def customs(self, ubn: str = "04595257", seq: str = "01", **options: Any) -> IssuedCard:
        """通關專屬憑證 (TaiCA) of company ``ubn``: CN ``<ubn>-<seq>-000``."""
        return self.pki.issue_customs(ubn, seq, **options)

    def card_for(
        self,
        accepts: CertificateProfile | IssuerCA | str,
        answers: Mapping[str, Any] = SAMPLE_ANSWERS,
        **options: Any,
    ) -> IssuedCard:
        """A card that ``accepts`` (a login profile such as ``ApplicantType.login``, or a CA
        family) takes and whose identity is the one in ``answers``.

        MOICA: ``contact_name`` and ``national_id``; MOEACA: ``ubn`` (a 附卡 when ``sub_card``
        is given); XCA / GCA: ``oid`` and ``company_name``; TaiCA: ``ubn``.
        """
        from engine import CertificateProfile, IssuerCA

        if isinstance(accepts, CertificateProfile):
            profile = accepts
        else:
            profile = CertificateProfile.of(IssuerCA(str(accepts)))
        ca = _preferred_ca(profile)
        if ca is None:
            raise ValueError(f"the test PKI issues no card that {profile} accepts")
        wanted = "secondary" if answers.get("sub_card") else "primary"
        rank: str | None = None
        if profile.card_ranks is not None:
            ranks = sorted(profile.card_ranks)
            rank = wanted if wanted in ranks else ranks[0]
        given = sample_answers(ca, **answers)
        if ca is IssuerCA.MOICA:
            if rank is not None:
                options.setdefault("card_rank", rank)
            return self.person(given["contact_name"], given["national_id"], **options)
        if ca is IssuerCA.MOEACA:
            return self.company(given["ubn"], given["company_name"], rank=rank or wanted, **options)
        if ca is IssuerCA.TAICA:
            return self.customs(given["ubn"], **options)
        issue = self.organization if ca is IssuerCA.XCA else self.agency
        return issue(given["oid"], given["company_name"], rank=rank, **options)


# -- databases -----------------------------------------------------------------------------


def _postgres_admin_url() -> str | None:
    backend = os.environ.get(DATABASE_ENV) or "sqlite"
    if backend == "sqlite":
        return None
    if backend != "postgresql":
        raise pytest.UsageError(f"{DATABASE_ENV}={backend}: sqlite or postgresql")
    url = os.environ.get(PG_URL_ENV)
    if not url:
        raise pytest.UsageError(f"{DATABASE_ENV}=postgresql needs {PG_URL_ENV} (an admin URL)")
    return url


class _Template:
    """A migrated database made once per session; each test gets a copy of it."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._pg_url = _postgres_admin_url()
        self._made: str | None = None
        self._file_copy = False

    def fresh(self, tmp_path: Path) -> tuple[str, Callable[[], None]]:
        """A new migrated database: its URL and how to drop it."""
        if self._pg_url is not None:
            return self._fresh_postgres(self._pg_url)
        template = self._folder / "template.db"
        if self._made is None:
            self._migrate(f"sqlite:///{template}")
            self._made = str(template)
        target = tmp_path / "swreg.db"
        shutil.copy(template, target)  # with its mode (0600)
        return f"sqlite:///{target}", lambda: None

    def close(self) -> None:
        if self._pg_url is not None and self._made is not None:
            self._drop(self._pg_url, self._made)

    @staticmethod
    def _migrate(url: str) -> None:
        from engine.store import Database

        database = Database(url)
        try:
            database.migrate()
        finally:
            database.dispose()

    def _fresh_postgres(self, admin_url: str) -> tuple[str, Callable[[], None]]:
        from sqlalchemy.engine import make_url

        if self._made is None:
            name = f"swreg_template_{os.getpid()}_{secrets.token_hex(4)}"
            version = self._execute(admin_url, "SHOW server_version_num")
            self._file_copy = int(str(version)) >= 150000
            self._execute(admin_url, f'CREATE DATABASE "{name}"')
            self._made = name
            self._migrate(make_url(admin_url).set(database=name).render_as_string(False))
        name = f"swreg_test_{secrets.token_hex(6)}"
        copy = f'CREATE DATABASE "{name}" TEMPLATE "{self._made}"'
        if self._file_copy:  # PostgreSQL ≥ 15: a plain file copy is fastest for a small template
            copy += " STRATEGY FILE_COPY"
        self._execute(admin_url, copy)
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        return url, lambda: self._drop(admin_url, name)

    @classmethod
    def _drop(cls, admin_url: str, name: str) -> None:
        cls._execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @staticmethod
    def _execute(admin_url: str, statement: str) -> object:
        from sqlalchemy import create_engine, pool

        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                result = connection.exec_driver_sql(statement)
                return result.scalar() if result.returns_rows else None
        finally:
            engine.dispose()


# -- apps ------------------------------------------------------------------------------------


class AppFactory:
    """``swreg_plugin(*plugins, entrypoints=True, workflow=None)``: a fresh, trusted app.

    ``plugins`` are modules, classes (instantiated without arguments) or instances holding
    ``@hookimpl``-decorated ``swreg_*`` functions; they are registered beside the plugins of
    the ``swreg`` entry-point group (``entrypoints=False``: beside nothing; the built-in
    workflow then needs a 企業 type among them, or pass ``workflow``), so a plugin is tested
    without installing it. One that the entry points loaded already is not registered
    twice. ``workflow`` is a workflow definition (TOML text or a file path) that places
    contributed steps, as ``SWREG_WORKFLOW`` would. Each app trusts the test PKI (roots as
    anchors, issuing CAs as intermediates, since PIV cards carry no chain, and a CRL of every CA
    valid as long as the CA, so that the default ``hard`` revocation policy knows every card's
    status: :meth:`TestPKI.publish_to`), runs on the test's database and clock, and is closed
    after the test.
    """

    def __init__(self, settings: Settings, clock: FixedClock, pki: SwregPKI, folder: Path) -> None:
        self.settings = settings
        self.clock = clock
        self.pki = pki
        self._folder = folder
        self._apps: list[App] = []

    def __call__(
        self,
        *plugins: object,
        entrypoints: bool = True,
        workflow: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
    ) -> App:
        from dataclasses import replace

        from engine import bootstrap, make_plugin_manager

        manager = make_plugin_manager(load_entrypoints=entrypoints)
        for plugin in plugins:
            instance = plugin() if isinstance(plugin, type) else plugin
            if not manager.is_registered(instance):
                manager.register(instance)
            if not manager.get_hookcallers(instance):
                raise ValueError(
                    f"{plugin!r} holds no swreg hook implementation: decorate its "
                    "swreg_* functions with @engine.hookimpl"
                )
        manager.check_pending()
        chosen = settings or self.settings
        if workflow is not None:
            chosen = replace(chosen, workflow_file=self._workflow_file(workflow))
        app = bootstrap(chosen, clock=self.clock, plugins=manager)
        self._apps.append(app)
        self.pki.publish_to(app.trust, actor="swreg_plugin")
        return app

    def _workflow_file(self, workflow: str | os.PathLike[str]) -> Path:
        if isinstance(workflow, str) and "\n" in workflow:
            path = self._folder / f"workflow-{len(self._apps)}.toml"
            path.write_text(workflow, encoding="utf-8")
            return path
        return Path(workflow)

    def close(self) -> None:
        for app in reversed(self._apps):
            app.close()
        self._apps.clear()


# -- cards -----------------------------------------------------------------------------------


class VirtualCards:
    """``swreg_virtual_card(card=None, pin=PIN)``: a ``virtual:FILE.p12`` spec for ``card``.

    The file is a PKCS#12 of the card's key, certificate and CA chain, password ``pin``, in the
    test's temporary folder; :func:`readers.open_card` (and ``swreg register --card``) open it
    as a software card. Without ``card``, a citizen card of :meth:`SwregPKI.person`.
    """

    def __init__(self, pki: SwregPKI, folder: Path) -> None:
        self._pki = pki
        self._folder = folder

    def __call__(self, card: IssuedCard | None = None, pin: str = PIN) -> str:
        issued = card if card is not None else self._pki.person()
        path = self._folder / f"card-{issued.certificate.serial_number:x}.p12"
        self._pki.write_pkcs12(issued, path, pin)
        return f"virtual:{path}"


def _vpcd_readers() -> list[tuple[str, int]]:
    spec = os.environ.get(VPCD_ENV) or _DEFAULT_VPCD
    pairs = [item.rsplit("=", 1) for item in spec.split(";") if item.strip()]
    return [(name.strip(), int(port)) for name, port in pairs]


class VpcdCards:
    """``swreg_vpcd_card(card=None, pin=PIN, slot=0, profile="piv")``: a card in a reader.

    Inserts ``card`` as a virtual card (:mod:`readers.vcard`) into the vpcd reader ``slot`` of
    the running pcscd and returns its ``pcsc:READER`` spec. ``profile="piv"`` is a PIV card
    that verifies the PIN and signs; ``"gpki"`` a GPKI/HiCOS card whose certificates can only
    be read. Needs pcscd with Debian's ``vsmartcard-vpcd`` driver (readers "Virtual PCD 00 0N"
    on TCP 35963 + N; ``SWREG_TEST_VPCD="NAME=PORT;..."`` names others); without it the test
    fails with what to do. Every card is removed after the test.
    """

    def __init__(self, pki: SwregPKI) -> None:
        self._pki = pki
        self._inserted: list[tuple[Any, str]] = []

    def __call__(
        self,
        card: IssuedCard | None = None,
        *,
        pin: str = PIN,
        slot: int = 0,
        profile: str = "piv",
    ) -> str:
        from engine import EnvironmentProblem

        try:
            from readers.pcsc import reader_names, wait_for_card
            from readers.vcard import CardThread, GpkiApplet, PivApplet
        except ImportError as exc:  # pragma: no cover - pyscard is a dependency of swreg
            pytest.fail(f"swreg_vpcd_card needs pyscard: {exc}", pytrace=False)
        readers = _vpcd_readers()
        if not 0 <= slot < len(readers):
            raise ValueError(f"slot {slot}: {VPCD_ENV} names {len(readers)} vpcd reader(s)")
        name, port = readers[slot]
        try:
            names = reader_names()
        except EnvironmentProblem as exc:
            pytest.fail(
                f"swreg_vpcd_card needs pcscd running ({exc}); start it (as root: pcscd) or "
                'leave these tests out with -m "not swreg_pcsc"',
                pytrace=False,
            )
        if name not in names:
            pytest.fail(
                f"pcscd lists no reader {name!r}: install vsmartcard-vpcd and restart pcscd",
                pytrace=False,
            )
        if not wait_for_card(name, present=False, timeout=5):
            raise RuntimeError(f"{name!r} still holds another card: is another test using it?")
        issued = card if card is not None else self._pki.person()
        applet: Any
        if profile == "piv":
            applet = PivApplet(issued.key, issued.certificate, pin=pin)
        elif profile == "gpki":
            chain = issued.chain_der()
            applet = GpkiApplet(issued.der(), issuer_cert=chain[0] if chain else b"")
        else:
            raise ValueError(f"profile must be 'piv' or 'gpki', not {profile!r}")
        thread = CardThread(applet, port=port).start()
        self._inserted.append((thread, name))
        if not wait_for_card(name, present=True, timeout=5):
            raise RuntimeError(f"pcscd did not see the card inserted into {name!r}")
        return f"pcsc:{name}"

    def remove_all(self) -> None:
        from readers.pcsc import wait_for_card

        while self._inserted:
            thread, name = self._inserted.pop()
            thread.stop()
            with suppress(Exception):
                wait_for_card(name, present=False, timeout=5)


# -- registrations ---------------------------------------------------------------------------

_MAX_STEPS = 50


class Registrar:
    """``swreg_register(app, type_code, answers=None, *, card=None, pin=PIN, **fields)``.

    Runs one whole registration through the service layer, as ``swreg register`` does:
    :meth:`~engine.RegistrationService.start`, the card check (a fresh challenge signed by
    the card after its PIN), then every form step of the workflow with the same answers,
    until ``completed``; returns the account name. A refusal raises its
    :class:`~engine.SwregError` (the registration is cancelled first).

    ``answers`` default to :data:`SAMPLE_ANSWERS`, with ``answers`` and then ``fields`` on
    top (fields a plugin adds go there: ``iata_code="BR"``). ``card`` is an
    :class:`~engine.testing.IssuedCard` (written to a PKCS#12 and opened as a ``virtual:``
    card), a card spec (``"virtual:..."`` or ``"pcsc:..."``) or any object with the four
    methods of :class:`~engine.SigningCard`; by default the PKI issues the card the type's
    login profile accepts, with the identity of the answers (:meth:`SwregPKI.card_for`).
    """

    def __init__(self, pki: SwregPKI, cards: VirtualCards) -> None:
        self._pki = pki
        self._cards = cards

    def __call__(
        self,
        app: App,
        type_code: str,
        answers: Mapping[str, Any] | None = None,
        /,
        *,
        card: object = None,
        pin: str = PIN,
        **fields: Any,
    ) -> str:
        view = self.run(app, type_code, answers, card=card, pin=pin, until_officer=False, **fields)
        assert view.account is not None
        return view.account

    def answers(
        self,
        app: App,
        type_code: str,
        answers: Mapping[str, Any] | None = None,
        /,
        *,
        card: object = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The answers :meth:`run` would submit (the sample, what the card says, yours)."""
        applicant = app.catalog.applicant(type_code)
        given = {**(answers or {}), **fields}
        ca = _card_ca(card) or _preferred_ca(applicant.login)
        merged = sample_answers(ca, **_card_fields(card))
        merged.update(given)
        return merged

    def run(
        self,
        app: App,
        type_code: str,
        answers: Mapping[str, Any] | None = None,
        /,
        *,
        card: object = None,
        pin: str = PIN,
        until_officer: bool = True,
        **fields: Any,
    ) -> RegistrationView:
        """Like calling the registrar, but returns the last :class:`~engine.RegistrationView`:
        ``completed``, or (``until_officer``) the step where it waits for an officer (待審核)."""
        from engine import register_with_card
        from engine.testing.pki import IssuedCard
        from readers import open_card

        merged = self.answers(app, type_code, answers, card=card, **fields)
        if card is None:
            card = self._pki.card_for(app.catalog.applicant(type_code).login, merged)
        if isinstance(card, IssuedCard):
            card = self._cards(card, pin)
        seen: list[str] = []

        def guard(view: RegistrationView) -> None:
            seen.append(view.state)
            if getattr(view, "awaiting", None) == "officer":
                raise _Waiting(view)  # not a SwregError: the registration stays where it is
            if len(seen) > _MAX_STEPS:
                raise AssertionError(f"registration {view.id} does not end: {seen[-5:]}")

        try:
            if isinstance(card, str):
                with open_card(card) as opened:
                    view = register_with_card(
                        app.registrations, type_code=type_code, answers=merged, card=opened,
                        pin=pin, actor="swreg_register", on_step=guard,
                    )  # fmt: skip
            else:
                view = register_with_card(
                    app.registrations, type_code=type_code, answers=merged,
                    card=card,  # type: ignore[arg-type]
                    pin=pin, actor="swreg_register", on_step=guard,
                )  # fmt: skip
        except _Waiting as waiting:
            if not until_officer:
                raise AssertionError(
                    f"registration {waiting.view.id} waits for an officer at "
                    f"{waiting.view.state!r}: use swreg_register.run(...), which stops there"
                ) from None
            return waiting.view
        if view.state != "completed":
            raise AssertionError(f"registration {view.id} ended {view.state!r}, not completed")
        return view


class _Waiting(Exception):
    def __init__(self, view: RegistrationView) -> None:
        super().__init__(view.state)
        self.view = view


def _card_ca(card: object) -> IssuerCA | None:
    from engine.testing.pki import IssuedCard

    return card.ca if isinstance(card, IssuedCard) else None


def _card_fields(card: object) -> dict[str, str]:
    """The answers an issued card dictates (its UBN, OID or holder's name)."""
    from engine.pki.certificate import load_certificate
    from engine.testing.pki import IssuedCard

    if not isinstance(card, IssuedCard):
        return {}
    identity = load_certificate(card.der()).identity
    found = {"ubn": identity.ubn, "oid": identity.oid, "contact_name": identity.name}
    return {key: value for key, value in found.items() if value is not None}


# -- pytest hooks and fixtures ---------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_PCSC_MARK}: uses pcscd's vpcd readers through swreg_vpcd_card (set automatically)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "swreg_vpcd_card" in getattr(item, "fixturenames", ()):
            item.add_marker(_PCSC_MARK)


@pytest.fixture(scope="session")
def swreg_pki() -> SwregPKI:
    """The test PKI of the session (GPKI-like and TaiCA-like CAs) and cards issued from it."""
    return SwregPKI.create()


@pytest.fixture(scope="session")
def swreg_template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Template]:
    """Internal: a migrated database per session that each test's database is copied from."""
    template = _Template(tmp_path_factory.mktemp("swreg-template"))
    yield template
    template.close()


@pytest.fixture
def swreg_clock(swreg_pki: SwregPKI) -> FixedClock:
    """A fixed clock at the PKI's "now" (``swreg_clock.advance(timedelta(...))`` moves it)."""
    from engine import FixedClock

    return FixedClock(swreg_pki.now)


@pytest.fixture
def swreg_database_url(swreg_template_database: _Template, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test (SQLite; PostgreSQL: ``SWREG_TEST_DATABASE``)."""
    url, drop = swreg_template_database.fresh(tmp_path)
    yield url
    drop()


@pytest.fixture
def swreg_settings(swreg_database_url: str, tmp_path: Path) -> Settings:
    """Settings for the test database: fixed secret key, cheap argon2, mail to an outbox; the
    portal also answers Starlette's ``TestClient`` (``Host: testserver``)."""
    from engine import Settings
    from engine._settings import Argon2Parameters, MailSettings

    return Settings(
        database_url=swreg_database_url,
        secret_key=_SECRET_KEY,
        argon2=Argon2Parameters(time_cost=1, memory_kib=64, parallelism=1),
        mail=MailSettings(outbox=tmp_path / "outbox"),
        allowed_hosts=("testserver",),
    )


@pytest.fixture
def swreg_plugin(
    swreg_settings: Settings, swreg_clock: FixedClock, swreg_pki: SwregPKI, tmp_path: Path
) -> Iterator[AppFactory]:
    """``swreg_plugin(plugin, ...) -> App``: a fresh app with ``plugin`` registered."""
    folder = Path(tempfile.mkdtemp(prefix="swreg-workflows-", dir=tmp_path))
    factory = AppFactory(swreg_settings, swreg_clock, swreg_pki, folder)
    yield factory
    factory.close()


@pytest.fixture
def swreg_app(swreg_plugin: AppFactory) -> App:
    """An app with the installed plugins, the test PKI trusted and the fixed clock."""
    return swreg_plugin()


@pytest.fixture
def swreg_virtual_card(swreg_pki: SwregPKI, tmp_path: Path) -> VirtualCards:
    """``swreg_virtual_card(card, pin=PIN) -> "virtual:FILE.p12"``."""
    folder = Path(tempfile.mkdtemp(prefix="swreg-cards-", dir=tmp_path))
    return VirtualCards(swreg_pki, folder)


@pytest.fixture
def swreg_vpcd_card(swreg_pki: SwregPKI) -> Iterator[VpcdCards]:
    """``swreg_vpcd_card(card, pin=PIN, slot=0) -> "pcsc:READER"`` (needs pcscd running)."""
    cards = VpcdCards(swreg_pki)
    yield cards
    cards.remove_all()


@pytest.fixture
def swreg_register(swreg_pki: SwregPKI, swreg_virtual_card: VirtualCards) -> Registrar:
    """``swreg_register(app, type_code, **fields) -> account``: one whole registration."""
    return Registrar(swreg_pki, swreg_virtual_card)
