"""What the benchmarks share: timing loops, test material in bulk, applicants, result files.

Not a test and not part of the engine. Every section of ``bench/run.py`` measures the engine
and its floor in the same process, interleaved round by round, so a load change on this shared
2-core machine hits both alike; the ratios are what to read, not the absolute figures.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import engine.testing.pki as _pki_module
from engine import App, Settings, bootstrap
from engine._settings import Argon2Parameters
from engine.core.identifiers import national_id_check_digit
from engine.testing.pki import IssuedCard, KeyType, TestPKI

RESULTS = Path(__file__).resolve().parent / "results.json"
SECRET = bytes(range(32))
NO_KDF = Argon2Parameters(time_cost=1, memory_kib=8, parallelism=1)
"""The cheapest argon2id the settings accept: "KDF excluded" (it costs a few µs)."""
PASSWORD = "Passw0rdOK"


def quiet() -> None:
    """Silence the engine's log lines (the null mailer says "dropped a message" per account)."""
    logging.getLogger("swreg").setLevel(logging.ERROR)


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second over one loop of at least ``seconds``."""
    count = 0
    batch = 64
    began = time.perf_counter()
    while True:
        for _ in range(batch):
            operation()
        count += batch
        elapsed = time.perf_counter() - began
        if elapsed >= seconds:
            return count / elapsed


def interleaved(
    cases: list[tuple[str, Callable[[], object]]], seconds: float, repeat: int
) -> list[tuple[str, float]]:
    """The best of ``repeat`` rounds per case; each round runs every case once, so a load
    change on the machine hits the floor and the engine alike."""
    best = {name: 0.0 for name, _ in cases}
    for _ in range(repeat):
        for name, operation in cases:
            best[name] = max(best[name], rate(operation, seconds))
    return [(name, best[name]) for name, _ in cases]


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 → p99) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def rss_bytes() -> int:
    """The resident set size of this process now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- test material in bulk -----------------------------------------------------------------------


@contextlib.contextmanager
def shared_card_keys() -> Iterator[None]:
    """Issue cards with one key per key type instead of a fresh key per card.

    Each card is still its own certificate (own serial, own fingerprint); only the key pair is
    shared, so issuing 100,000 RSA cards costs a signature each instead of an RSA key
    generation each. The engine never compares keys between cards.
    """
    original = _pki_module._new_key
    keys: dict[KeyType, Any] = {}

    def cached(key_type: KeyType) -> Any:
        if key_type not in keys:
            keys[key_type] = original(key_type)
        return keys[key_type]

    _pki_module._new_key = cached  # type: ignore[assignment]
    try:
        yield
    finally:
        _pki_module._new_key = original


def national_id(number: int) -> str:
    """A valid national ID (身分證字號), different for each ``number`` < 10**7 per letter."""
    letter = "ABCDEFGHJKLMNPQRSTUVXYWZIO"[number // 10**7 % 26]
    first_nine = f"{letter}1{number % 10**7:07d}"
    return first_nine + str(national_id_check_digit(first_nine))


@dataclass(frozen=True, slots=True)
class Applicant:
    """One 一般個人 applicant: answers and a card that binds to them."""

    number: int
    answers: dict[str, Any]
    card: IssuedCard


def person_answers(number: int, nid: str) -> dict[str, Any]:
    return {
        "consent": True,
        "email": f"applicant{number}@example.com",
        "contact_name": "王小明",
        "national_id": nid,
        "birth_date": "1985-03-14",
        "phone": "0912-345-678",
        "address": "臺北市信義區市府路1號",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }


class Applicants:
    """A stream of distinct 一般個人 applicants with their (shared-key) cards."""

    def __init__(self, pki: TestPKI, *, key: KeyType, start: int = 0) -> None:
        self.pki = pki
        self.key = key
        self._next = start

    def __call__(self) -> Applicant:
        number = self._next
        self._next += 1
        nid = national_id(number)
        with shared_card_keys():
            card = self.pki.issue_person("王小明", nid[-4:], key=self.key)
        return Applicant(number, person_answers(number, nid), card)

    def batch(self, count: int) -> list[Applicant]:
        return [self() for _ in range(count)]


def settings_for(url: str, argon2: Argon2Parameters = NO_KDF) -> Settings:
    return Settings(database_url=url, secret_key=SECRET, argon2=argon2)


def trusted_app(url: str, pki: TestPKI, argon2: Argon2Parameters = NO_KDF) -> App:
    """A bootstrapped engine over ``url`` whose trust store holds the test roots."""
    app = bootstrap(settings_for(url, argon2))
    pki.publish_to(app.trust, actor="bench")
    return app


@contextlib.contextmanager
def postgresql_database() -> Iterator[str]:
    """A new empty database ``swreg_bench_<pid>`` on the PostgreSQL of ``SWREG_PG_URL``
    (``scripts/with-postgres`` sets it), dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(os.environ["SWREG_PG_URL"]).set(drivername="postgresql")
    database = f"swreg_bench_{os.getpid()}"
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database}")
    try:
        yield admin.set(database=database).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def collect() -> None:
    gc.collect()
    gc.collect()


# -- results -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def merge_results(
    sections: dict[str, Any], path: Path = RESULTS, *, drop: tuple[str, ...] = ()
) -> None:
    """Merge ``sections`` into ``bench/results.json`` (other sections are kept, but ``drop``)."""
    results: dict[str, Any] = {}
    if path.exists():
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            results = {}
    for key in drop:
        results.pop(key, None)
    results.update(sections)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
