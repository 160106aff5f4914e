"""Portal throughput with 2 uvicorn workers (DESIGN.md §10), not a test.

``swreg serve --workers 2`` runs as in production (SQLite file, its own process group); this
process drives it with several concurrent clients. One complete registration is four JSON
requests (``POST /api/registrations``, ``…/challenge``, ``…/card`` with the card's signature made
here, ``…/step`` with 基本資料 → ``completed``), each with the CSRF cookie and header. The
per-client rate limits of the portal stay on: every client moves to a new loopback source
address (127.x.y.z) every 20 registrations, as many real clients would.

Two settings of the KDF: excluded (``SWREG_ARGON2=1,8,1``, the cheapest the settings accept)
and the OWASP default (argon2id m = 19 MiB, t = 2, p = 1). The floor is
the same server stack answering a trivial endpoint (``GET /api/csrf``: middleware, routing,
JSON) with the same clients, divided by the four requests of a registration; rounds alternate
floor and engine.
Target: ≥ 200 complete registrations/s with the KDF excluded (≈ 15/s with OWASP: reported).

The driver shares the 2 cores with the workers; its CPU share is reported, and so is the
server's own CPU time per registration and per trivial request (the worker processes' user +
system time from ``/proc``, which a busy machine disturbs far less than the rates) and what
the workers could serve with the cores to themselves (``cpu_bound_registrations_per_s``). The
clients speak HTTP/1.1 over keep-alive sockets themselves (:class:`RawHttp`): httpx costs
about 1 ms of CPU per request here, as much as the server's work, so at 800 requests/s it
would take most of a core from the workers it measures (``--driver httpx`` to compare).

    .venv/bin/python bench/portal.py [--seconds 10] [--clients 8] [--repeat 2] [--driver raw]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from json import dumps as _dumps
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from common import (
    SECRET,
    Applicant,
    Applicants,
    machine,
    merge_results,
    postgresql_database,
    quiet,
    trusted_app,
)

from engine._settings import Argon2Parameters
from engine.services.hashing import IdentifierHasher
from engine.testing.pki import TestPKI
from engine.testing.ports import free_port
from engine.web._registration_secret import REGISTRATION_COOKIE_PREFIX
from engine.web._security import new_csrf_token

TARGET_PER_S = 200.0
REQUESTS_PER_REGISTRATION = 4
REGISTRATIONS_PER_ADDRESS = 20  # START_LIMIT: 20 starts per client address per 10 minutes
SWREG = Path(sys.executable).with_name("swreg")
CSRF_KEYS = IdentifierHasher(SECRET)
"""The portal's server key (``SWREG_SECRET_KEY``): CSRF tokens are HMACs under it."""
DRIVERS = ("raw", "httpx")
VARIANTS: dict[str, Argon2Parameters] = {
    "kdf_excluded": Argon2Parameters(1, 8, 1),
    "kdf_excluded_postgresql": Argon2Parameters(1, 8, 1),
    "kdf_owasp": Argon2Parameters(),
}
"""The figures: KDF excluded and OWASP argon2id on SQLite; KDF excluded on PostgreSQL too (with
``SWREG_PG_URL``): SQLite has one writer at a time, PostgreSQL does not."""


@dataclass(frozen=True)
class Server:
    """A running ``swreg serve``: its base URL and its process group (the workers are in it)."""

    base: str
    group: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of every process of the group so far (Linux ``/proc``)."""
        return group_cpu_seconds(self.group)


def group_cpu_seconds(group: int) -> float | None:
    """User + system CPU seconds of the live processes of process group ``group``, or None
    without ``/proc``. The server's workers live as long as it does, so differences over a
    round are that round's work."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        if int(fields[2]) == group:  # pgrp; utime and stime are the 14th and 15th fields
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def portal(
    folder: Path, pki: TestPKI, argon2: Argon2Parameters, workers: int, url: str | None = None
) -> Iterator[Server]:
    """``swreg serve --workers N`` on a fresh database: ``url``, else a SQLite file."""
    url = url or f"sqlite:///{folder / 'portal.db'}"
    trusted_app(url, pki, argon2).close()  # migrate and trust the test roots first
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SWREG_DATABASE_URL": url,
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_PUBLIC_ORIGIN": base,
        "SWREG_ARGON2": f"{argon2.time_cost},{argon2.memory_kib},{argon2.parallelism}",
    }
    log = (folder / f"serve-{port}.log").open("wb")
    command = [str(SWREG), "--db", url, "serve", "--workers", str(workers), "--port", str(port)]
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers stop with it
    )
    try:
        _wait_ready(base, process)
        yield Server(base, process.pid)  # a session leader: its pid is the group's id
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group this function started
            process.wait()
        log.close()


def _wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"swreg serve exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/api/csrf", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("swreg serve did not answer within 30 s")


class Answer:
    """A response as :class:`RawHttp` read it (the parts of ``httpx.Response`` used here)."""

    __slots__ = ("content", "path", "status_code")

    def __init__(self, status_code: int, content: bytes, path: str) -> None:
        self.status_code = status_code
        self.content = content
        self.path = path

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise AssertionError(f"{self.path}: {self.status_code} {self.text}")


_REGISTRATION_COOKIE: Final = REGISTRATION_COOKIE_PREFIX.encode("ascii")


class RawHttp:
    """One keep-alive HTTP/1.1 connection from a loopback source address, with the CSRF cookie
    and header on every request: the driver's client.

    It sends what httpx sends for these requests (``Host``, ``Cookie``, ``X-CSRF-Token``; a
    JSON body with ``Content-Type`` and ``Content-Length``; ``Content-Length: 0`` for a POST
    without one; TCP_NODELAY, as browsers send without delay) and reads each response by its
    ``Content-Length`` or chunk by chunk, for a tenth of httpx's CPU time. The cookie of the
    latest registration started (``swreg_reg_<id>``, the secret its routes ask for) goes with
    every later request: one client runs one registration at a time.
    """

    def __init__(self, base: str, local_address: str, token: str) -> None:
        url = urlsplit(base)
        self._server = (url.hostname or "127.0.0.1", url.port or 80)
        self._local = local_address
        self._token = token
        self._host = f"Host: {url.netloc}\r\nAccept: */*\r\nX-CSRF-Token: {token}\r\n"
        self._headers = self._with_cookies(b"")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.bind((self._local, 0))
            connection.setblocking(False)
            await asyncio.get_running_loop().sock_connect(connection, self._server)
        except BaseException:
            connection.close()
            raise
        self._reader, self._writer = await asyncio.open_connection(sock=connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    def _with_cookies(self, registration: bytes) -> bytes:
        cookies = f"csrf={self._token}".encode("ascii")
        if registration:
            cookies += b"; " + registration
        return self._host.encode("ascii") + b"Cookie: " + cookies + b"\r\n"

    async def get(self, path: str) -> Answer:
        return await self._exchange(b"GET", path, None)

    async def post(self, path: str, json: Any = None) -> Answer:
        if json is None:
            return await self._exchange(b"POST", path, b"")
        body = _dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return await self._exchange(b"POST", path, body.encode("utf-8"), b"application/json")

    async def _exchange(
        self, method: bytes, path: str, body: bytes | None, content_type: bytes | None = None
    ) -> Answer:
        assert self._reader is not None and self._writer is not None, "not connected"
        head = [method, b" ", path.encode("ascii"), b" HTTP/1.1\r\n", self._headers]
        if content_type is not None:
            head += [b"Content-Type: ", content_type, b"\r\n"]
        if body is not None:
            head += [b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
        head += [b"\r\n", body or b""]
        self._writer.write(b"".join(head))
        lines = (await self._reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"set-cookie" and value.strip().startswith(_REGISTRATION_COOKIE):
                self._headers = self._with_cookies(value.strip().split(b";", 1)[0])
        if chunked:
            content = await self._chunks()
        else:
            content = await self._reader.readexactly(length)
        return Answer(status, content, path)

    async def _chunks(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await self._reader.readexactly(size + 2))[:-2])
        await self._reader.readuntil(b"\r\n")  # the empty trailer
        return b"".join(parts)


class Driver:
    """Concurrent clients; each owns a loopback source address and its CSRF token."""

    def __init__(
        self, base: str, applicants: Applicants, clients: int, driver: str = "raw"
    ) -> None:
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}")
        self.base = base
        self.applicants = applicants
        self.clients = clients
        self.driver = driver
        self._addresses = 0
        self.pool: list[Applicant] = []

    def _client(self) -> Any:
        self._addresses += 1
        number = self._addresses
        address = f"127.{20 + number // 62500 % 200}.{number // 250 % 250}.{number % 250 + 1}"
        token = new_csrf_token(CSRF_KEYS)  # a token the server (same key) accepts as its own
        if self.driver == "raw":
            return RawHttp(self.base, address, token)
        return httpx.AsyncClient(
            base_url=self.base,
            transport=httpx.AsyncHTTPTransport(
                local_address=address,  # browsers send without delay; so does this driver
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ),
            cookies={"csrf": token},
            headers={"X-CSRF-Token": token},
            timeout=60,
        )

    def applicant(self) -> Applicant:
        return self.pool.pop() if self.pool else self.applicants()

    async def trivial(self, seconds: float) -> int:
        """``GET /api/csrf`` as fast as the clients go; how many answered."""
        stop = time.perf_counter() + seconds

        async def client() -> int:
            done = 0
            async with self._client() as http:
                while time.perf_counter() < stop:
                    response = await http.get("/api/csrf")
                    response.raise_for_status()
                    if time.perf_counter() <= stop:
                        done += 1
            return done

        return sum(await asyncio.gather(*(client() for _ in range(self.clients))))

    async def registrations(self, seconds: float) -> int:
        """Complete registrations as fast as the clients go; how many completed in time."""
        stop = time.perf_counter() + seconds

        async def client() -> int:
            done = 0
            while time.perf_counter() < stop:
                async with self._client() as http:
                    for _ in range(REGISTRATIONS_PER_ADDRESS):
                        if time.perf_counter() >= stop:
                            break
                        await self.register(http, self.applicant())
                        if time.perf_counter() <= stop:
                            done += 1
            return done

        return sum(await asyncio.gather(*(client() for _ in range(self.clients))))

    async def register(self, http: Any, applicant: Applicant) -> None:
        """One registration over ``http`` (a :class:`RawHttp` or an ``httpx.AsyncClient``)."""
        card = applicant.card
        start = {"type": "person.general", "consent": True}
        view = _ok("start", await http.post("/api/registrations", json=start))
        path = f"/api/registrations/{view['id']}"
        challenge = _ok("challenge", await http.post(f"{path}/challenge"))
        signature = card.sign(base64.b64decode(challenge["payload"]))
        body = {
            "challenge_id": challenge["challenge_id"],
            "certificate": base64.b64encode(card.der()).decode(),
            "signature": base64.b64encode(signature).decode(),
            "chain": [base64.b64encode(der).decode() for der in card.chain_der()],
        }
        _ok("card", await http.post(f"{path}/card", json=body))
        done = _ok("step", await http.post(f"{path}/step", json=applicant.answers))
        if done["state"] != "completed":
            raise AssertionError(f"registration ended at {done['state']}")


def _ok(what: str, response: Any) -> dict[str, Any]:
    if response.status_code >= 300:
        raise AssertionError(f"{what}: {response.status_code} {response.text}")
    result: dict[str, Any] = response.json()
    return result


def measure(
    *, seconds: float, clients: int, repeat: int, workers: int = 2, progress: bool = False,
    variants: tuple[str, ...] = tuple(VARIANTS), driver: str = "raw",
) -> dict[str, Any]:  # fmt: skip
    quiet()
    pki = TestPKI.create(datetime.now(UTC), key_type="ec")
    applicants = Applicants(pki, key="ec")
    section: dict[str, Any] = {
        **machine(),
        "workers": workers,
        "clients": clients,
        "driver": driver,
        "seconds_per_round": seconds,
        "best_of": repeat,
        "requests_per_registration": REQUESTS_PER_REGISTRATION,
        "card_key": "ec",
        "target_per_s": TARGET_PER_S,
    }
    for name, argon2 in VARIANTS.items():
        if name not in variants:
            continue
        on_pg = name.endswith("_postgresql")
        if on_pg and not os.environ.get("SWREG_PG_URL"):
            section[name] = {"skipped": "SWREG_PG_URL is not set (scripts/with-postgres sets it)"}
            continue
        with (
            tempfile.TemporaryDirectory(prefix="swreg-bench-") as folder,
            postgresql_database() if on_pg else nullcontext(None) as url,
            portal(Path(folder), pki, argon2, workers, url) as server,
        ):
            clients_ = Driver(server.base, applicants, clients, driver)
            expected = 300 if argon2.memory_kib < 1024 else 40
            clients_.pool = applicants.batch(int(seconds * repeat * expected))
            asyncio.run(clients_.registrations(min(2.0, seconds)))  # warm up: workers, caches
            best = {"floor": 0.0, "engine": 0.0}
            server_ms = {"floor": float("inf"), "engine": float("inf")}  # per request, per reg.
            cores = {"floor": 0.0, "engine": 0.0}
            driver_cpu = 0.0
            for _ in range(repeat):  # what completed within ``seconds``, per second
                for part in ("floor", "engine"):
                    run = clients_.trivial if part == "floor" else clients_.registrations
                    began, cpu = time.perf_counter(), time.process_time()
                    used_before = server.cpu_seconds()
                    done = asyncio.run(run(seconds))
                    used_after = server.cpu_seconds()
                    elapsed = time.perf_counter() - began
                    best[part] = max(best[part], done / seconds)
                    if used_before is not None and used_after is not None and done:
                        used = used_after - used_before
                        server_ms[part] = min(server_ms[part], 1000 * used / done)
                        cores[part] = max(cores[part], used / elapsed)
                    if part == "engine":
                        driver_cpu = max(driver_cpu, (time.process_time() - cpu) / elapsed)
            floor = best["floor"] / REQUESTS_PER_REGISTRATION
            section[name] = {
                "database": "postgresql" if on_pg else "sqlite",
                "argon2": f"{argon2.time_cost},{argon2.memory_kib},{argon2.parallelism}",
                "trivial_requests_per_s": round(best["floor"], 1),
                "floor_registrations_per_s": round(floor, 1),
                "registrations_per_s": round(best["engine"], 1),
                "ratio": round(best["engine"] / floor, 3),
                "driver_cpu_share_of_one_core": round(driver_cpu, 2),
            }
            if server_ms["engine"] < float("inf"):
                usable = min(workers, os.cpu_count() or 1)
                section[name] |= {
                    "server_cpu_ms_per_trivial_request": round(server_ms["floor"], 3),
                    "server_cpu_ms_per_registration": round(server_ms["engine"], 2),
                    "server_cpu_ms_per_registration_request": round(
                        server_ms["engine"] / REQUESTS_PER_REGISTRATION, 3
                    ),
                    "server_cores_used": round(cores["engine"], 2),
                    "cpu_bound_registrations_per_s": round(1000 * usable / server_ms["engine"], 1),
                }
            if progress:
                print(
                    f"  portal, {name}: {best['engine']:.1f} registrations/s "
                    f"(trivial endpoint {best['floor']:.0f} requests/s); server CPU "
                    f"{server_ms['engine']:.2f} ms per registration, "
                    f"{server_ms['floor']:.3f} ms per trivial request",
                    flush=True,
                )
    if "kdf_excluded" in section:
        section["target_met"] = section["kdf_excluded"]["registrations_per_s"] >= TARGET_PER_S
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--driver", choices=DRIVERS, default="raw")
    parser.add_argument("--only", choices=tuple(VARIANTS), help="measure one KDF setting")
    args = parser.parse_args()
    section = measure(
        seconds=args.seconds,
        clients=args.clients,
        repeat=args.repeat,
        progress=True,
        variants=(args.only,) if args.only else tuple(VARIANTS),
        driver=args.driver,
    )
    print(json.dumps(section, indent=2, ensure_ascii=False))
    merge_results({"portal": section})


if __name__ == "__main__":
    main()
