"""Settings: read from the environment once, passed explicitly everywhere after that.

``SWREG_DATABASE_URL``   database URL (default: a SQLite file ``swreg.db`` in the working directory)
``SWREG_WORKFLOW``       a workflow definition file replacing the built-in one
``SWREG_SECRET_KEY``     the keyring of the keyed hashes of personal IDs (and of client
                         addresses, CSRF tokens): hex keys of ≥ 32 bytes, comma-separated, oldest
                         first (one key until ``swreg keys rotate`` adds one); otherwise
                         ``SWREG_SECRET_KEY_FILE`` or ``<database file>.key`` beside a SQLite file
                         (``swreg.key`` in the working directory for other databases): one hex
                         key per line, oldest first, created with one key on first use
``SWREG_ORIGIN``         the origin the CLI's card check signs (default ``urn:swreg:cli``)
``SWREG_ARGON2``         ``time_cost,memory_kib,parallelism`` (default OWASP ``2,19456,1``)
``SWREG_PUBLIC_ORIGIN``  the portal's origin, e.g. ``https://portal.example`` (default
                         ``http://127.0.0.1:8000``); the browser's card check signs it
``SWREG_SMTP_HOST`` / ``_PORT`` / ``_TLS`` (starttls (default) | ssl | none) / ``_USER`` /
``_PASSWORD``,
``SWREG_MAIL_FROM``      the SMTP server that sends activation mail
``SWREG_MAIL_OUTBOX``    a folder receiving mail as ``.eml`` files instead (demo)
``SWREG_DEMO``           ``1``: demo mode (the portal shows the outbox at /demo/outbox)
``SWREG_AGENT_URL``      where the wizard page finds the local card agent (ws://127.0.0.1:61234/)
``SWREG_HIPKI_URL``      where the card pages find CHT's HiPKI component (http://localhost:61161)
``SWREG_SQLITE_SYNCHRONOUS``  ``NORMAL`` (default; WAL keeps every commit through a crash of the
                         process, power loss may drop the last ones) or ``FULL`` (fsync each commit)
``SWREG_TRUSTED_PROXIES`` comma-separated CIDRs of reverse proxies whose ``X-Forwarded-For`` is
                         believed (DESIGN.md §11); unset, the socket peer is the client
``SWREG_ALLOWED_HOSTS``  comma-separated host names (or ``host:port``) the portal answers besides
                         the public origin's
``SWREG_METRICS_ALLOW``  comma-separated CIDRs of the clients that may read ``/metrics`` (DESIGN.md
                         §11; the client as ``SWREG_TRUSTED_PROXIES`` finds it); default loopback
``SWREG_SESSION_IDLE`` / ``SWREG_SESSION_MAX``  a login session's idle and absolute limits, as
                         durations (below; a bare integer is seconds; defaults 30m and 8h)
``SWREG_PASSWORD_RESET`` how 忘記密碼 proves the account: ``card`` (default: a card bound to it
                         signs) or ``card,email`` (also a single-use 30-minute link mailed to the
                         account's address)
``SWREG_TWFIDO_URL`` / ``_SERVICE_ID`` / ``_KEY`` / ``_TIME_LIMIT`` / ``_HTTP_TIMEOUT`` /
``_PENDING_CODES`` / ``_HINT`` / ``_PUSH``  the TW FidO
                         service of the mobile citizen certificate (DESIGN.md §13): its API's base
                         URL (https, or http for a loopback host), this SP's service id, its
                         32-byte AES key in base64, the seconds a person has to confirm (30–600,
                         default 180), one request's time limit (default 10 s), the error
                         codes that mean "not answered yet" (default 20002,20003,
                         SPTKTID_TXNLOG_NF), every ticket's hint (≤ 64 characters) and ``1`` to
                         allow a push to the person's bound device (default off); unset URL: the
                         mobile certificate is not offered
``SWREG_RETENTION_DAYS`` days after which ``swreg purge`` deletes the personal data of ended
                         registrations and never-activated accounts (0 to 36500, default 30)
``SWREG_TSA_CERTS``      comma-separated files of the RFC 3161 time-stamping authorities whose
                         tokens may date a Turnkey signature (DESIGN.md §5); unset, none
``SWREG_FETCH_HOSTS``    comma-separated hosts that revocation data may be fetched from (DESIGN.md
                         §4a): exact host names or IP literals, or ``*.suffix`` for any name under
                         the suffix at any depth but not the suffix itself; no ports (a URL's port
                         is not part of the match); default ``*.nat.gov.tw,*.moi.gov.tw``
``SWREG_REVOCATION_POLICY``  ``hard`` (default: a certificate whose revocation status is unknown is
                         refused) or ``soft`` (accepted, and the evidence and audit row say so)
``SWREG_OCSP_TIMEOUT``   the time limit of one OCSP request (default ``3s``)
``SWREG_OCSP_MAX_AGE``   how long an OCSP answer without nextUpdate is cached (default ``1h``)
``SWREG_CRL_GRACE``      a CRL is stale once past its nextUpdate plus this (default ``6h``; ``0``
                         for none)
``SWREG_REVOCATION_CAS`` a TOML file of per-CA revocation settings (:class:`CaRevocation`): one
                         table per issuing CA, named by the SHA-256 fingerprint of its certificate
                         (``swreg trust list``), with ``sources`` (``["ocsp", "crl"]`` by default;
                         ``["crl"]`` CRL-only, ``["ocsp"]`` OCSP-only, or another order),
                         ``ocsp_url``, ``ocsp_nonce`` (``optional`` | ``required``) and
                         ``ocsp_max_age`` (a duration)

Durations are an integer with a unit: ``30s``, ``15m``, ``6h``, ``2d``; a bare integer is seconds.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from engine._errors import EnvironmentProblem, ErrorCode, UsageError
from engine._files import OWNER_ONLY, tighten_file_mode

DEFAULT_DATABASE_URL = "sqlite:///swreg.db"
SQLITE_SYNCHRONOUS = ("NORMAL", "FULL")
CLI_ORIGIN = "urn:swreg:cli"
DEFAULT_PUBLIC_ORIGIN = "http://127.0.0.1:8000"
DEFAULT_RETENTION_DAYS = 30
MAX_RETENTION_DAYS = 36500
"""A hundred years: more is a typo (and would overflow the dates)."""

DEFAULT_FETCH_HOSTS = "*.nat.gov.tw,*.moi.gov.tw"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_METRICS_ALLOW = "127.0.0.0/8,::1/128"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class RevocationPolicy(StrEnum):
    """What an ``unknown`` revocation status does (DESIGN.md §4a)."""

    HARD = "hard"
    """Refuse with ``revocation_unknown`` and store nothing."""
    SOFT = "soft"
    """Accept; the evidence and the audit row carry ``{"status": "unknown", "policy": "soft"}``."""


class RevocationSourceKind(StrEnum):
    OCSP = "ocsp"
    CRL = "crl"


@dataclass(frozen=True)
class CaRevocation:
    """How the certificates one CA issued are checked for revocation (``SWREG_REVOCATION_CAS``)."""

    sources: tuple[RevocationSourceKind, ...] = (
        RevocationSourceKind.OCSP,
        RevocationSourceKind.CRL,
    )
    """The sources asked, in order (DESIGN.md §4a: OCSP first, then CRLs)."""
    ocsp_url: str | None = None
    """A responder used instead of the one the certificate names."""
    ocsp_nonce_required: bool = False
    """Refuse an OCSP answer that does not echo the request's nonce."""
    ocsp_max_age: timedelta | None = None
    """How long this CA's answers without nextUpdate are cached (else ``SWREG_OCSP_MAX_AGE``)."""


DEFAULT_CA_REVOCATION: Final = CaRevocation()


@dataclass(frozen=True)
class FetchHosts:
    """The hosts revocation data may be fetched from (``SWREG_FETCH_HOSTS``).

    ``names`` are exact host names, ``suffixes`` the ``*.suffix`` patterns (kept as
    ``.suffix``: any name under it at any depth, never the suffix itself), ``addresses`` the IP
    literals. A name never matches an address pattern nor an address a name pattern.
    """

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    addresses: frozenset[IPAddress] = frozenset()

    @classmethod
    def parse(cls, text: str, *, variable: str = "SWREG_FETCH_HOSTS") -> FetchHosts:
        names: set[str] = set()
        suffixes: list[str] = []
        addresses: set[IPAddress] = set()
        for item in _list(text):
            address = _ip_literal(item)
            if address is not None:
                addresses.add(address)
                continue
            wildcard = item.startswith("*.")
            name = _host_name(item[2:] if wildcard else item)
            if name is None:
                raise UsageError(
                    detail=f"{variable} holds host names, IP literals or *.suffix (no ports, "
                    f"no other wildcards), not {item!r}"
                )
            if wildcard:
                suffixes.append("." + name)
            else:
                names.add(name)
        return cls(frozenset(names), tuple(dict.fromkeys(suffixes)), frozenset(addresses))

    def allows(self, host: str) -> bool:
        """Whether ``host`` (a URL's host, without port; IPv6 with or without brackets) is
        allowed."""
        address = _ip_literal(host)
        if address is not None:
            return address in self.addresses
        name = _host_name(host)
        if name is None:
            return False
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def __str__(self) -> str:
        items = [*sorted(self.names), *("*" + s for s in self.suffixes)]
        items += sorted(str(a) for a in self.addresses)
        return ",".join(items)


@dataclass(frozen=True)
class Argon2Parameters:
    time_cost: int = 2
    memory_kib: int = 19456
    parallelism: int = 1

    @classmethod
    def parse(cls, text: str) -> Argon2Parameters:
        try:
            t, m, p = (int(part) for part in text.split(","))
        except ValueError:
            raise UsageError(
                detail=f"SWREG_ARGON2 must be 'time,memory_kib,parallelism': {text!r}"
            ) from None
        if t < 1 or p < 1 or m < 8 * p:
            raise UsageError(
                detail="SWREG_ARGON2 needs time ≥ 1, parallelism ≥ 1, memory ≥ 8·p KiB"
            )
        return cls(t, m, p)


@dataclass(frozen=True)
class MailSettings:
    """Where e-mail goes: an SMTP server, or (demo) ``.eml`` files in ``outbox``."""

    host: str | None = None
    port: int = 25
    tls: str = "starttls"  # "starttls" | "ssl" | "none"
    user: str | None = None
    password: str | None = None
    sender: str = "swreg <no-reply@swreg.invalid>"
    outbox: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MailSettings:
        tls = env.get("SWREG_SMTP_TLS") or "starttls"
        if tls not in ("none", "starttls", "ssl"):
            raise UsageError(detail="SWREG_SMTP_TLS is none, starttls or ssl")
        return cls(
            host=env.get("SWREG_SMTP_HOST") or None,
            port=_port(env.get("SWREG_SMTP_PORT"), 465 if tls == "ssl" else 25),
            tls=tls,
            user=env.get("SWREG_SMTP_USER") or None,
            password=env.get("SWREG_SMTP_PASSWORD") or None,
            sender=env.get("SWREG_MAIL_FROM") or cls.sender,
            outbox=Path(env["SWREG_MAIL_OUTBOX"]) if env.get("SWREG_MAIL_OUTBOX") else None,
        )


TWFIDO_PENDING_CODES: Final = frozenset({"20002", "20003", "SPTKTID_TXNLOG_NF"})
TWFIDO_MAX_HINT: Final = 64


@dataclass(frozen=True)
class TwFidoSettings:
    """The TW FidO SP settings (DESIGN.md §13). The key is a secret: never in a repr or a log."""

    url: str
    service_id: str
    key: bytes = field(repr=False)
    time_limit: int = 180
    """Seconds the person has to confirm on the phone (``time_limit``, 30–600)."""
    http_timeout: timedelta = timedelta(seconds=10)
    pending_codes: frozenset[str] = TWFIDO_PENDING_CODES
    """The error codes a poll answers while the phone has not (``SWREG_TWFIDO_PENDING_CODES``;
    ❓ DOMAIN.md §4.6: the public clients disagree on the numbers' meaning)."""
    hint: str = ""
    """The ``hint`` of every ticket (``SWREG_TWFIDO_HINT``, at most 64 characters): what the
    phone may show the person about who asks (e.g. 「關港貿單一窗口」; ❓ how the app shows it)."""
    push: bool = False
    """Whether a signing may be pushed to the person's bound device (``SWREG_TWFIDO_PUSH=1``).
    Off by default: anyone who knows a national ID could otherwise make that person's phone
    ask, unprompted, to approve a login or registration someone else started."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TwFidoSettings | None:
        url = (env.get("SWREG_TWFIDO_URL") or "").strip().rstrip("/")
        if not url:
            return None
        parts = urlsplit(url)
        loopback = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise UsageError(detail="SWREG_TWFIDO_URL is https:// (http:// only for loopback)")
        service_id = (env.get("SWREG_TWFIDO_SERVICE_ID") or "").strip()
        if not service_id:
            raise UsageError(detail="SWREG_TWFIDO_SERVICE_ID is needed with SWREG_TWFIDO_URL")
        try:
            key = base64.b64decode(env.get("SWREG_TWFIDO_KEY") or "", validate=True)
        except (ValueError, binascii.Error):
            key = b""
        if len(key) != 32:
            raise UsageError(detail="SWREG_TWFIDO_KEY is the base64 of a 32-byte AES key")
        limit_text = (env.get("SWREG_TWFIDO_TIME_LIMIT") or "180").strip()
        if not (limit_text.isascii() and limit_text.isdigit()) or not 30 <= int(limit_text) <= 600:
            raise UsageError(detail="SWREG_TWFIDO_TIME_LIMIT is 30 to 600 seconds")
        timeout = _duration(env, "SWREG_TWFIDO_HTTP_TIMEOUT", cls.http_timeout)
        pending = frozenset(_list(env.get("SWREG_TWFIDO_PENDING_CODES") or "")) or cls.pending_codes
        hint = (env.get("SWREG_TWFIDO_HINT") or "").strip()
        if len(hint) > TWFIDO_MAX_HINT:
            raise UsageError(detail=f"SWREG_TWFIDO_HINT is at most {TWFIDO_MAX_HINT} characters")
        push = (env.get("SWREG_TWFIDO_PUSH") or "").strip() == "1"
        return cls(url, service_id, key, int(limit_text), timeout, pending, hint, push)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    workflow_file: Path | None = None
    secret_key: bytes | None = None
    """One key given in code (tests, the demo); wins over :attr:`secret_keys` and the file."""
    secret_keys: tuple[bytes, ...] = ()
    """The keyring of ``SWREG_SECRET_KEY``, oldest first; empty: the key file."""
    secret_key_file: Path | None = None
    cli_origin: str = CLI_ORIGIN
    """What card checks run from the CLI sign (the portal's card checks sign ``public_origin``)."""
    argon2: Argon2Parameters = Argon2Parameters()
    public_origin: str = DEFAULT_PUBLIC_ORIGIN
    """The portal's own origin (scheme://host:port): what the browser's card check signs."""
    mail: MailSettings = MailSettings()
    activation_ttl: timedelta = timedelta(hours=24)
    session_ttl: timedelta = timedelta(minutes=30)
    """A login session's idle limit (``SWREG_SESSION_IDLE``)."""
    session_max: timedelta = timedelta(hours=8)
    """A login session's absolute limit from its start (``SWREG_SESSION_MAX``)."""
    demo: bool = False
    """Demo mode: the portal shows the mail outbox at /demo/outbox."""
    agent_url: str = "ws://127.0.0.1:61234/"
    """Where the wizard page finds the local card agent."""
    hipki_url: str = "http://localhost:61161"
    """Where the card pages find CHT's HiPKI component (DOMAIN.md §4.1; ``SWREG_HIPKI_URL``)."""
    sqlite_synchronous: str = "NORMAL"
    """SQLite's ``PRAGMA synchronous`` in WAL mode: ``NORMAL`` or ``FULL`` (see the module doc)."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Reverse proxies whose ``X-Forwarded-For`` names the client (DESIGN.md §11)."""
    allowed_hosts: tuple[str, ...] = ()
    """Hosts answered besides the public origin's (lower-case; ``host`` or ``host:port``)."""
    metrics_allow: tuple[IPNetwork, ...] = field(
        default_factory=lambda: _networks(DEFAULT_METRICS_ALLOW, "SWREG_METRICS_ALLOW")
    )
    """The clients that may read ``/metrics`` (``SWREG_METRICS_ALLOW``; loopback by default)."""
    retention_days: int = DEFAULT_RETENTION_DAYS
    """How long the personal data of ended registrations is kept (``swreg purge``)."""
    twfido: TwFidoSettings | None = None
    """The TW FidO service of the mobile citizen certificate, when configured (DESIGN.md §13)."""
    email_password_reset: bool = False
    """忘記密碼 by a mailed link as well as by the card (``SWREG_PASSWORD_RESET=card,email``)."""
    tsa_certs: tuple[Path, ...] = ()
    """Certificates of the time-stamping authorities trusted to date Turnkey signatures."""
    fetch_hosts: FetchHosts = field(default_factory=lambda: FetchHosts.parse(DEFAULT_FETCH_HOSTS))
    """Where OCSP answers and CRLs may be fetched from (``SWREG_FETCH_HOSTS``)."""
    revocation_policy: RevocationPolicy = RevocationPolicy.HARD
    """What an unknown revocation status does (``SWREG_REVOCATION_POLICY``)."""
    ocsp_timeout: timedelta = timedelta(seconds=3)
    """The time limit of one OCSP request (``SWREG_OCSP_TIMEOUT``)."""
    ocsp_max_age: timedelta = timedelta(hours=1)
    """How long an OCSP answer without nextUpdate is cached (``SWREG_OCSP_MAX_AGE``)."""
    crl_grace: timedelta = timedelta(hours=6)
    """A CRL is stale once past nextUpdate plus this (``SWREG_CRL_GRACE``)."""
    revocation_cas: Mapping[str, CaRevocation] = field(default_factory=dict)
    """Per-CA revocation settings by the CA certificate's SHA-256 fingerprint (lower-case hex)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            database_url=env.get("SWREG_DATABASE_URL") or DEFAULT_DATABASE_URL,
            workflow_file=Path(env["SWREG_WORKFLOW"]) if env.get("SWREG_WORKFLOW") else None,
            secret_keys=_hex_keys(env.get("SWREG_SECRET_KEY") or ""),
            secret_key_file=(
                Path(env["SWREG_SECRET_KEY_FILE"]) if env.get("SWREG_SECRET_KEY_FILE") else None
            ),
            cli_origin=env.get("SWREG_ORIGIN") or CLI_ORIGIN,
            argon2=Argon2Parameters.parse(env["SWREG_ARGON2"])
            if env.get("SWREG_ARGON2")
            else Argon2Parameters(),
            public_origin=env.get("SWREG_PUBLIC_ORIGIN") or DEFAULT_PUBLIC_ORIGIN,
            mail=MailSettings.from_env(env),
            demo=env.get("SWREG_DEMO") == "1",
            agent_url=env.get("SWREG_AGENT_URL") or "ws://127.0.0.1:61234/",
            hipki_url=env.get("SWREG_HIPKI_URL") or "http://localhost:61161",
            sqlite_synchronous=_synchronous(env.get("SWREG_SQLITE_SYNCHRONOUS") or "NORMAL"),
            session_ttl=_duration(env, "SWREG_SESSION_IDLE", cls.session_ttl),
            session_max=_duration(env, "SWREG_SESSION_MAX", cls.session_max),
            trusted_proxies=_networks(env.get("SWREG_TRUSTED_PROXIES") or ""),
            allowed_hosts=_list(env.get("SWREG_ALLOWED_HOSTS") or "", lower=True),
            metrics_allow=_networks(
                env.get("SWREG_METRICS_ALLOW") or DEFAULT_METRICS_ALLOW, "SWREG_METRICS_ALLOW"
            ),
            retention_days=_retention(env.get("SWREG_RETENTION_DAYS")),
            email_password_reset=_password_reset(env.get("SWREG_PASSWORD_RESET")),
            twfido=TwFidoSettings.from_env(env),
            tsa_certs=tuple(Path(p) for p in _list(env.get("SWREG_TSA_CERTS") or "")),
            fetch_hosts=FetchHosts.parse(env.get("SWREG_FETCH_HOSTS") or DEFAULT_FETCH_HOSTS),
            revocation_policy=_policy(env.get("SWREG_REVOCATION_POLICY")),
            ocsp_timeout=_duration(env, "SWREG_OCSP_TIMEOUT", cls.ocsp_timeout),
            ocsp_max_age=_duration(env, "SWREG_OCSP_MAX_AGE", cls.ocsp_max_age),
            crl_grace=_duration(env, "SWREG_CRL_GRACE", cls.crl_grace, minimum=timedelta(0)),
            revocation_cas=_revocation_cas(env.get("SWREG_REVOCATION_CAS")),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **given)  # type: ignore[arg-type]

    def identifier_keys(self) -> tuple[bytes, ...]:
        """The keyring of the keyed hashes, oldest first: configured, or the key file's (a key
        file with one new key is created on first use)."""
        if self.secret_key is not None:
            return (self.secret_key,)
        if self.secret_keys:
            return self.secret_keys
        path = self.key_file()
        assert path is not None
        return _load_or_create_keyring(path)

    def key_file(self) -> Path | None:
        """The key file the keyring comes from; None when it is given in the environment
        (``SWREG_SECRET_KEY``) or in code."""
        if self.secret_key is not None or self.secret_keys:
            return None
        return self.secret_key_file or _key_file_beside(self.database_url)


def _port(text: str | None, default: int) -> int:
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise UsageError(detail=f"SWREG_SMTP_PORT must be a port number, not {text!r}")
    return int(text)


MIN_SECRET_KEY_BYTES: Final = 32


def _hex_keys(text: str) -> tuple[bytes, ...]:
    """``SWREG_SECRET_KEY``: hex keys, comma-separated, oldest first (empty: none)."""
    keys = []
    for item in _list(text):
        try:
            key = bytes.fromhex(item)
        except ValueError:
            raise UsageError(detail="SWREG_SECRET_KEY holds hex keys, comma-separated") from None
        if len(key) < MIN_SECRET_KEY_BYTES:
            raise UsageError(detail="each key of SWREG_SECRET_KEY must hold at least 32 bytes")
        keys.append(key)
    return tuple(keys)


def keyring_text(keys: tuple[bytes, ...]) -> str:
    """The keyring as ``SWREG_SECRET_KEY`` takes it: hex keys, comma-separated, oldest first."""
    return ",".join(key.hex() for key in keys)


def parse_key_file(text: str, path: Path) -> tuple[bytes, ...]:
    """A key file's keyring: one hex key (≥ 32 bytes) per line, oldest first; blank lines are
    ignored. Anything else is a ``database_unavailable`` naming the file (never its text)."""
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            key = bytes.fromhex(line.strip())
        except ValueError as exc:
            raise EnvironmentProblem(
                ErrorCode.DATABASE_UNAVAILABLE, detail=f"bad key file {path} (line {number})"
            ) from exc
        if len(key) < MIN_SECRET_KEY_BYTES:
            raise EnvironmentProblem(
                ErrorCode.DATABASE_UNAVAILABLE,
                detail=f"key file {path} holds fewer than 32 bytes (line {number})",
            )
        keys.append(key)
    if not keys:
        raise EnvironmentProblem(ErrorCode.DATABASE_UNAVAILABLE, detail=f"key file {path} is empty")
    return tuple(keys)


def read_key_file(path: Path) -> tuple[bytes, ...]:
    """The keyring of an existing key file (see :func:`parse_key_file`)."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvironmentProblem(
            ErrorCode.DATABASE_UNAVAILABLE, detail=f"cannot read key file {path}"
        ) from exc
    return parse_key_file(text, path)


def write_new_key_file(path: Path, keys: tuple[bytes, ...]) -> None:
    """Write ``keys`` (one hex key per line) to ``path``, which must not exist: a temporary
    file beside it, written, fsynced and 0600, then linked into place (``FileExistsError`` when
    ``path`` exists: nothing is overwritten) and the directory fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("".join(key.hex() + "\n" for key in keys))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink()
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """fsync a directory, so that a rename or link in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_file_beside(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database + ".key")
    return Path("swreg.key")


def _load_or_create_keyring(path: Path) -> tuple[bytes, ...]:
    """Read the key file, or create it with one new key atomically (:func:`write_new_key_file`):
    racing processes all end up with the one key that won, never a half-written one. An
    existing key file that others may read is set to 0600 with a warning."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process won the race: its key
            write_new_key_file(path, (secrets.token_bytes(32),))
    tighten_file_mode(path)  # owner-only, like the database (DESIGN.md §6)
    return read_key_file(path)


def _synchronous(value: str) -> str:
    mode = value.strip().upper()
    if mode not in SQLITE_SYNCHRONOUS:
        raise UsageError(detail=f"SWREG_SQLITE_SYNCHRONOUS is {' or '.join(SQLITE_SYNCHRONOUS)}")
    return mode


def _list(text: str, *, lower: bool = False) -> tuple[str, ...]:
    """The non-empty items of a comma-separated setting, stripped."""
    items = (item.strip() for item in text.split(","))
    return tuple(item.lower() if lower else item for item in items if item)


def _networks(text: str, name: str = "SWREG_TRUSTED_PROXIES") -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _list(text))
    except ValueError as exc:
        raise UsageError(detail=f"{name} holds CIDRs: {exc}") from None


def _password_reset(text: str | None) -> bool:
    """``SWREG_PASSWORD_RESET``: whether a mailed link resets a password too (the card always
    does)."""
    methods = {m.strip().lower() for m in (text or "card").split(",")}
    if methods == {"card"}:
        return False
    if methods == {"card", "email"}:
        return True
    raise UsageError(detail=f"SWREG_PASSWORD_RESET is 'card' or 'card,email', not {text!r}")


def _retention(text: str | None) -> int:
    value = (text or "").strip()
    if not value:
        return DEFAULT_RETENTION_DAYS
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_RETENTION_DAYS:
        raise UsageError(
            detail=f"SWREG_RETENTION_DAYS is an integer from 0 to {MAX_RETENTION_DAYS}, "
            f"not {value!r}"
        )
    return int(value)


def parse_duration(text: str, name: str, *, minimum: timedelta = timedelta(seconds=1)) -> timedelta:
    """``30s``, ``15m``, ``6h``, ``2d`` or a bare integer (seconds), at least ``minimum``; anything
    else is a :class:`UsageError` naming the setting ``name``."""
    value = text.strip().lower()
    match = _DURATION.fullmatch(value)
    if match is None or len(match[1]) > 9:
        raise UsageError(
            detail=f"{name} is an integer with a unit (30s, 15m, 6h, 2d), not {text!r}"
        )
    duration = timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2]])
    if duration < minimum:
        raise UsageError(detail=f"{name} must be at least {int(minimum.total_seconds())}s")
    return duration


def _duration(
    env: Mapping[str, str],
    name: str,
    default: timedelta,
    *,
    minimum: timedelta = timedelta(seconds=1),
) -> timedelta:
    text = (env.get(name) or "").strip()
    return parse_duration(text, name, minimum=minimum) if text else default


def _policy(text: str | None) -> RevocationPolicy:
    value = (text or "").strip().lower()
    if not value:
        return RevocationPolicy.HARD
    try:
        return RevocationPolicy(value)
    except ValueError:
        raise UsageError(detail=f"SWREG_REVOCATION_POLICY is hard or soft, not {text!r}") from None


_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_CA_KEYS: Final = frozenset({"sources", "ocsp_url", "ocsp_nonce", "ocsp_max_age"})


def _revocation_cas(path: str | None) -> Mapping[str, CaRevocation]:
    """The per-CA settings of the TOML file at ``path`` (see the module docstring)."""
    if not path:
        return {}
    name = "SWREG_REVOCATION_CAS"
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise UsageError(detail=f"{name}: {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(detail=f"{name}: {path}: {exc}") from exc
    found: dict[str, CaRevocation] = {}
    for table, values in document.items():
        fingerprint = table.replace(":", "").lower()
        where = f"{name}: [{table}]"
        if not _FINGERPRINT.fullmatch(fingerprint) or not isinstance(values, dict):
            raise UsageError(detail=f"{where}: tables are named by a CA's SHA-256 fingerprint")
        unknown = sorted(set(values) - _CA_KEYS)
        if unknown:
            raise UsageError(detail=f"{where}: unknown setting {unknown[0]!r}")
        found[fingerprint] = _ca_revocation(values, where)
    return found  # a dict: settings are pickled to the portal's worker processes


def _ca_revocation(values: Mapping[str, object], where: str) -> CaRevocation:
    sources = values.get("sources", ["ocsp", "crl"])
    kinds = {kind.value for kind in RevocationSourceKind}
    if (
        not isinstance(sources, list)
        or not sources
        or any(s not in kinds for s in sources)
        or len(set(sources)) != len(sources)
    ):
        raise UsageError(detail=f'{where}: sources is a list of "ocsp" and "crl"')
    url = values.get("ocsp_url")
    if url is not None and (
        not isinstance(url, str) or not url.lower().startswith(("http://", "https://"))
    ):
        raise UsageError(detail=f"{where}: ocsp_url is an http(s) URL")
    nonce = values.get("ocsp_nonce", "optional")
    if nonce not in ("optional", "required"):
        raise UsageError(detail=f'{where}: ocsp_nonce is "optional" or "required"')
    age = values.get("ocsp_max_age")
    if age is not None and not isinstance(age, str | int):
        raise UsageError(detail=f'{where}: ocsp_max_age is a duration such as "30m"')
    return CaRevocation(
        sources=tuple(RevocationSourceKind(s) for s in sources),
        ocsp_url=url,
        ocsp_nonce_required=nonce == "required",
        ocsp_max_age=(
            parse_duration(str(age), f"{where} ocsp_max_age") if age is not None else None
        ),
    )


def _ip_literal(text: str) -> IPAddress | None:
    """``text`` as an IP address (IPv6 with or without brackets), or ``None``."""
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


def _host_name(text: str) -> str | None:
    """``text`` as a lower-case DNS name (A-labels; one trailing dot dropped), or ``None``."""
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return None
    return name
