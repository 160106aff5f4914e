"""Settings: read from the environment once, passed explicitly everywhere after that.

``SWREG_DATABASE_URL``   database URL (default: a SQLite file ``swreg.db`` in the working directory)
``SWREG_WORKFLOW``       a workflow definition file replacing the built-in one
``SWREG_SECRET_KEY``     hex key for the keyed hashes of personal IDs (≥ 32 bytes); otherwise
                         ``SWREG_SECRET_KEY_FILE`` or ``<database file>.key`` beside a SQLite file,
                         created on first use
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
``SWREG_SQLITE_SYNCHRONOUS``  ``NORMAL`` (default; WAL keeps every commit through a crash of the
                         process, power loss may drop the last ones) or ``FULL`` (fsync each commit)
``SWREG_TRUSTED_PROXIES`` comma-separated CIDRs of reverse proxies whose ``X-Forwarded-For`` is
                         believed (DESIGN.md §11); unset, the socket peer is the client
``SWREG_ALLOWED_HOSTS``  comma-separated host names (or ``host:port``) the portal answers besides
                         the public origin's
``SWREG_SESSION_IDLE`` / ``SWREG_SESSION_MAX``  a login session's idle and absolute limits in
                         seconds (defaults 1800 and 28800)
``SWREG_RETENTION_DAYS`` days after which ``swreg purge`` deletes the personal data of ended
                         registrations and never-activated accounts (integer ≥ 0, default 30)
``SWREG_TSA_CERTS``      comma-separated files of the RFC 3161 time-stamping authorities whose
                         tokens may date a Turnkey signature (DESIGN.md §5); unset, none
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from engine._errors import EnvironmentProblem, ErrorCode, UsageError

DEFAULT_DATABASE_URL = "sqlite:///swreg.db"
SQLITE_SYNCHRONOUS = ("NORMAL", "FULL")
CLI_ORIGIN = "urn:swreg:cli"
DEFAULT_PUBLIC_ORIGIN = "http://127.0.0.1:8000"
DEFAULT_RETENTION_DAYS = 30

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    workflow_file: Path | None = None
    secret_key: bytes | None = None
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
    sqlite_synchronous: str = "NORMAL"
    """SQLite's ``PRAGMA synchronous`` in WAL mode: ``NORMAL`` or ``FULL`` (see the module doc)."""
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Reverse proxies whose ``X-Forwarded-For`` names the client (DESIGN.md §11)."""
    allowed_hosts: tuple[str, ...] = ()
    """Hosts answered besides the public origin's (lower-case; ``host`` or ``host:port``)."""
    retention_days: int = DEFAULT_RETENTION_DAYS
    """How long the personal data of ended registrations is kept (``swreg purge``)."""
    tsa_certs: tuple[Path, ...] = ()
    """Certificates of the time-stamping authorities trusted to date Turnkey signatures."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            database_url=env.get("SWREG_DATABASE_URL") or DEFAULT_DATABASE_URL,
            workflow_file=Path(env["SWREG_WORKFLOW"]) if env.get("SWREG_WORKFLOW") else None,
            secret_key=_hex_key(env["SWREG_SECRET_KEY"]) if env.get("SWREG_SECRET_KEY") else None,
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
            sqlite_synchronous=_synchronous(env.get("SWREG_SQLITE_SYNCHRONOUS") or "NORMAL"),
            session_ttl=_seconds(env, "SWREG_SESSION_IDLE", cls.session_ttl),
            session_max=_seconds(env, "SWREG_SESSION_MAX", cls.session_max),
            trusted_proxies=_networks(env.get("SWREG_TRUSTED_PROXIES") or ""),
            allowed_hosts=_list(env.get("SWREG_ALLOWED_HOSTS") or "", lower=True),
            retention_days=_retention(env.get("SWREG_RETENTION_DAYS")),
            tsa_certs=tuple(Path(p) for p in _list(env.get("SWREG_TSA_CERTS") or "")),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **given)  # type: ignore[arg-type]

    def identifier_key(self) -> bytes:
        """The key of the keyed personal-ID hashes: configured, or a key file created once."""
        if self.secret_key is not None:
            return self.secret_key
        path = self.secret_key_file or _key_file_beside(self.database_url)
        return _load_or_create_key(path)


def _port(text: str | None, default: int) -> int:
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(detail=f"SWREG_SMTP_PORT must be a port number, not {text!r}")
    return int(text)


def _hex_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError(detail="SWREG_SECRET_KEY must be hex") from None
    if len(key) < 32:
        raise UsageError(detail="SWREG_SECRET_KEY must hold at least 32 bytes")
    return key


def _key_file_beside(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database + ".key")
    return Path("swreg.key")


def _load_or_create_key(path: Path) -> bytes:
    """Read the key file, or create it atomically (write a temporary file, then link it into
    place): racing processes all end up with the one key that won, never a half-written one.
    An existing key file that others may read is set to 0600 with a warning."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        finally:
            temporary.unlink()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:  # owner-only, like the database (DESIGN.md §6)
        os.chmod(path, 0o600)
        logging.getLogger("swreg.settings").warning(
            "%s was mode %04o (readable by others): set to 0600", path, mode
        )
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError as exc:
        raise EnvironmentProblem(
            ErrorCode.DATABASE_UNAVAILABLE, detail=f"bad key file {path}"
        ) from exc
    if len(key) < 32:
        raise EnvironmentProblem(
            ErrorCode.DATABASE_UNAVAILABLE, detail=f"key file {path} holds fewer than 32 bytes"
        )
    return key


def _synchronous(value: str) -> str:
    mode = value.strip().upper()
    if mode not in SQLITE_SYNCHRONOUS:
        raise UsageError(detail=f"SWREG_SQLITE_SYNCHRONOUS is {' or '.join(SQLITE_SYNCHRONOUS)}")
    return mode


def _list(text: str, *, lower: bool = False) -> tuple[str, ...]:
    """The non-empty items of a comma-separated setting, stripped."""
    items = (item.strip() for item in text.split(","))
    return tuple(item.lower() if lower else item for item in items if item)


def _networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _list(text))
    except ValueError as exc:
        raise UsageError(detail=f"SWREG_TRUSTED_PROXIES holds CIDRs: {exc}") from None


def _seconds(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise UsageError(detail=f"{name} is a number of seconds ≥ 1, not {text!r}")
    return timedelta(seconds=int(text))


def _retention(text: str | None) -> int:
    value = (text or "").strip()
    if not value:
        return DEFAULT_RETENTION_DAYS
    if not value.isdigit():
        raise UsageError(detail=f"SWREG_RETENTION_DAYS is an integer ≥ 0, not {value!r}")
    return int(value)
