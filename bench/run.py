"""``make bench``: every figure of DESIGN.md §10 against its floor, in one run (not a test).

Sections (each runs in its own fresh process, one after the other):

``registration``  one full registration's server-side CPU, KDF excluded: engine ≤ 3 × floor
                  (bench/registration.py; RSA card, and an EC card for information)
``turnkey``       Turnkey verification throughput: engine ≥ 0.80 × floor (bench/turnkey.py)
``query``         通關憑證查詢 p99 < 2 ms with 1,000,000 certificates, SQLite and PostgreSQL
                  (bench/customs_query.py; PostgreSQL from SWREG_PG_URL, else reported skipped)
``memory``        RSS flat over 100,000 registrations (bench/memory.py)
``portal``        ≥ 200 complete registrations/s on 2 workers with the KDF excluded, and the
                  figure with OWASP argon2id (bench/portal.py)
``piv``           for information: a PIV card check through pcscd (virtual card over vpcd),
                  median ms, against the same APDUs replayed raw (bench/piv.py; pcscd started
                  for the section when none runs, else reported skipped)
``revocation``    a cached OCSP answer adds ≤ 10 % to the server's card check CPU
                  (``submit_card``; the pure check, without a database, for information); a
                  cold OCSP round trip to OpenSSL's responder on loopback ≤ 2 ms beyond its raw
                  POST; CRL lookups O(1); ``swreg revocation refresh`` of a 1,000,000-entry
                  CRL ≤ 10 s and ≤ 500 MiB (bench/revocation.py; --quick: 100,000 entries, not
                  judged)

Prints one table (engine, floor, ratio, target, met) and writes ``bench/results.json``: the
sections' full data, the table and how long the run took. ``--quick`` runs everything at
small sizes (a few minutes); ``--only`` / ``--skip`` pick sections; ``--table`` prints the
table of the last run again from ``bench/results.json``.

    .venv/bin/python bench/run.py [--quick] [--only registration,query] [--skip memory]
    scripts/with-postgres .venv/bin/python bench/run.py      # with PostgreSQL
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import common
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

SECTIONS = ("registration", "turnkey", "query", "memory", "portal", "piv", "revocation")


@dataclass(frozen=True)
class Sizes:
    registration_count: int
    registration_repeat: int
    turnkey_seconds: float
    turnkey_repeat: int
    query_rows: int
    query_count: int
    memory_count: int
    portal_seconds: float
    portal_repeat: int
    portal_clients: int
    piv_runs: int
    revocation_checks: int
    revocation_repeat: int
    revocation_cold_rounds: int
    revocation_crl_entries: int
    revocation_refresh_rounds: int


FULL = Sizes(100, 3, 2.0, 3, 1_000_000, 2000, 100_000, 10.0, 2, 8, 30, 200, 5, 200, 1_000_000, 3)
QUICK = Sizes(20, 2, 0.5, 2, 50_000, 300, 3000, 3.0, 1, 8, 8, 50, 3, 40, 100_000, 1)


# -- the sections, each in a fresh process ---------------------------------------------------


def _registration(sizes: Sizes) -> dict[str, Any]:
    import registration

    return {
        f"registration_{key}": registration.measure(
            count=sizes.registration_count, repeat=sizes.registration_repeat, key=key
        )
        for key in ("rsa", "ec")
    }


def _turnkey(sizes: Sizes) -> dict[str, Any]:
    import turnkey

    return {"turnkey": turnkey.measure(seconds=sizes.turnkey_seconds, repeat=sizes.turnkey_repeat)}


def _query(sizes: Sizes) -> dict[str, Any]:
    import customs_query

    section = customs_query.measure(
        rows=sizes.query_rows, queries=sizes.query_count, databases=("sqlite", "pg")
    )
    return {"customs_query": section}


def _memory(sizes: Sizes) -> dict[str, Any]:
    import memory

    return {"memory": memory.measure(count=sizes.memory_count, samples=20, key="ec", progress=True)}


def _portal(sizes: Sizes) -> dict[str, Any]:
    import portal

    section = portal.measure(
        seconds=sizes.portal_seconds,
        clients=sizes.portal_clients,
        repeat=sizes.portal_repeat,
        progress=True,
    )
    return {"portal": section}


def _piv(sizes: Sizes) -> dict[str, Any]:
    import piv

    return {"piv": piv.measure(runs=sizes.piv_runs)}


def _revocation(sizes: Sizes) -> dict[str, Any]:
    import revocation

    section = revocation.measure(
        checks=sizes.revocation_checks,
        repeat=sizes.revocation_repeat,
        cold_rounds=sizes.revocation_cold_rounds,
        crl_entries=sizes.revocation_crl_entries,
        refresh_rounds=sizes.revocation_refresh_rounds,
    )
    return {"revocation": section}


RUNNERS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "registration": _registration,
    "turnkey": _turnkey,
    "query": _query,
    "memory": _memory,
    "portal": _portal,
    "piv": _piv,
    "revocation": _revocation,
}


def isolated(name: str, sizes: Sizes) -> dict[str, Any]:
    """Run one section in a fresh (spawned) process; an error becomes part of the result."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(RUNNERS[name], sizes).result()
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return {f"{name}_error": {"error": detail}}


class SectionProgress:
    """The sections as they run: a rich progress bar (sections done, the current one's time) when
    stdout is a terminal, plain lines otherwise (a CI log, ``| tee``)."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._done = 0
        self._bar: Progress | None = None
        if sys.stdout.isatty():
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            self._task = self._bar.add_task("bench", total=total)

    def __enter__(self) -> SectionProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def begin(self, name: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"{name} ({self._done + 1}/{self._total})")
        else:
            print(f"- [{self._done + 1}/{self._total}] {name} ...", flush=True)

    def end(self, name: str, seconds: float, *, failed: bool) -> None:
        self._done += 1
        line = f"{name}: {seconds:.0f} s{' (failed)' if failed else ''}"
        if self._bar is not None:
            self._bar.console.print(f"  {line}")
            self._bar.advance(self._task)
        else:
            print(f"  {line}", flush=True)


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    figure: str
    engine: str
    floor: str
    ratio: str
    target: str
    met: str


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "NOT met")


def rows_for(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, label in (("registration_rsa", "RSA-2048"), ("registration_ec", "EC P-256")):
        section = results.get(key)
        if section:
            info = "" if key.endswith("rsa") else " (info)"
            rows.append(
                Row(
                    f"(a) registration, server CPU, {label} card, ms{info}",
                    f"{section['engine']['cpu_ms']:.2f}",
                    f"{section['floor']['cpu_ms']:.2f}",
                    f"{section['ratio']:.1f}×",
                    "≤ 3× floor",
                    _verdict(section["target_met"]) if not info else "—",
                )
            )
    turnkey = results.get("turnkey")
    if turnkey:
        floors = {r["algorithm"]: r for r in turnkey["rows"] if r["case"].startswith("floor")}
        for row in turnkey["rows"]:
            if row["case"].startswith("floor"):
                continue
            info = "(info)" in row["case"]
            case = row["case"].removeprefix("engine: ").replace(" (info)", "")
            rows.append(
                Row(
                    f"(b) Turnkey {row['algorithm'].split()[0]}, {case}, msg/s"
                    + (" (info)" if info else ""),
                    f"{row['messages_per_s']:.0f}",
                    f"{floors[row['algorithm']]['messages_per_s']:.0f}",
                    f"{row['ratio_to_floor']:.2f}",
                    "≥ 0.80 × floor",
                    "—" if info else _verdict(row["ratio_to_floor"] >= turnkey["target_ratio"]),
                )
            )
    query = results.get("customs_query")
    if query:
        count = f"{query['certificates']:,}"
        for key, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
            store = query.get(key)
            if store is None:
                continue
            if "skipped" in store:
                rows.append(Row(f"(c) 查詢 p50/p99, {label}: skipped", store["skipped"],
                                "", "", "p99 < 2 ms", "not measured"))  # fmt: skip
                continue
            phases = [("as_shipped", "as shipped")]
            if "with_account_id_index" in store:
                phases.append(("with_account_id_index", "+ index certificates.account_id"))
            for phase, note in phases:
                data = store[phase]
                rows.append(
                    Row(
                        f"(c) 查詢 p50/p99 ms, {count} certs, {label}, {note} "
                        f"({data['queries']} q)",
                        f"{data['engine']['p50_ms']:.2f} / {data['engine']['p99_ms']:.2f}",
                        f"{data['floor']['p50_ms']:.2f} / {data['floor']['p99_ms']:.2f}",
                        f"{data['ratio_p99']:.1f}×",
                        "p99 < 2 ms",
                        _verdict(data["target_met"]),
                    )
                )
    memory = results.get("memory")
    if memory:
        rows.append(
            Row(
                f"(d) memory, {memory['registrations']:,} registrations: RSS growth after "
                f"{memory['warm_up_registrations']:,}",
                f"{memory['rss_growth_after_warm_up_mib']:+.1f} MiB "
                f"({memory['rss_growth_bytes_per_registration']:.0f} B/reg, "
                f"{memory['objects_growth_per_registration']:+.2f} obj/reg)",
                "",
                "",
                f"flat (≤ {memory['limit_mib']:.0f} MiB)",
                _verdict(memory["target_met"]),
            )
        )
    portal = results.get("portal")
    if portal:
        labels = {
            "kdf_excluded": ("KDF excluded", "≥ 200/s", True),
            "kdf_excluded_postgresql": ("PostgreSQL, KDF excluded", "≥ 200/s", True),
            "kdf_owasp": ("OWASP argon2id", "≈ 15/s (report)", False),
        }
        for key, (label, target, judged) in labels.items():
            data = portal.get(key)
            if data is None or "skipped" in data:
                continue
            rows.append(
                Row(
                    f"(e) portal, {portal['workers']} workers, {label}, registrations/s",
                    f"{data['registrations_per_s']:.1f}",
                    f"{data['floor_registrations_per_s']:.1f}",
                    f"{data['ratio']:.2f}",
                    target,
                    _verdict(data["registrations_per_s"] >= portal["target_per_s"])
                    if judged
                    else "—",
                )
            )
        rows.extend(_portal_cpu_rows(portal, results))
        rsa = results.get("registration_rsa")
        if rsa:
            rows.append(
                Row(
                    "(e) in-process figure × 2 workers, registrations/s (info)",
                    f"{2000 / rsa['engine']['cpu_ms']:.0f}",
                    f"{2000 / rsa['floor']['cpu_ms']:.0f}",
                    f"{rsa['floor']['cpu_ms'] / rsa['engine']['cpu_ms']:.2f}",
                    "≥ 200/s",
                    "—",
                )
            )
    piv = results.get("piv")
    if piv:
        if "skipped" in piv:
            rows.append(Row("PIV card check via pcscd (info): skipped", piv["skipped"],
                            "", "", "info", "not measured"))  # fmt: skip
        else:
            for key, label in (("rsa", "RSA-2048"), ("ec", "EC P-256")):
                data = piv[key]
                rows.append(
                    Row(
                        f"PIV card check via pcscd, {label} card, median ms of {piv['runs']} "
                        f"(info; floor: its {data['apdus']} APDUs raw)",
                        f"{data['engine']['median_ms']:.2f}",
                        f"{data['floor']['median_ms']:.2f}",
                        f"{data['ratio']:.2f}×",
                        "info",
                        "—",
                    )
                )
    revocation = results.get("revocation")
    if revocation:
        rows.extend(_revocation_rows(revocation))
    for key, value in results.items():
        if key.endswith("_error"):
            rows.append(Row(f"{key.removesuffix('_error')}: FAILED", value["error"][:80],
                            "", "", "", "error"))  # fmt: skip
    return rows


PORTAL_CPU_BUDGET: Final = 1.5
"""DESIGN.md §10: the portal's server CPU per registration at most this × (the in-process
registration + the portal's trivial request × the registration's requests)."""


def _portal_cpu_rows(portal: dict[str, Any], results: dict[str, Any]) -> list[Row]:
    """(e) the portal's CPU budget per registration, for each KDF-excluded database measured:
    the in-process registration with the portal's card key, plus a trivial request's server
    CPU per request the registration makes."""
    in_process = results.get(f"registration_{portal.get('card_key', 'ec')}")
    if not in_process:
        return []
    rows = []
    for key, label in (("kdf_excluded", "SQLite"), ("kdf_excluded_postgresql", "PostgreSQL")):
        data = portal.get(key)
        if data is None or "server_cpu_ms_per_registration" not in data:
            continue
        trivial = data["server_cpu_ms_per_trivial_request"]
        floor = in_process["engine"]["cpu_ms"] + portal["requests_per_registration"] * trivial
        used = data["server_cpu_ms_per_registration"]
        rows.append(
            Row(
                f"(e) portal server CPU per registration, {label}, ms (floor: in-process "
                f"{in_process['engine']['cpu_ms']:.2f} + {portal['requests_per_registration']} × "
                f"trivial {trivial:.3f})",
                f"{used:.2f}",
                f"{floor:.2f}",
                f"{used / floor:.2f}×",
                f"≤ {PORTAL_CPU_BUDGET:.1f}× floor",
                _verdict(used <= PORTAL_CPU_BUDGET * floor),
            )
        )
    return rows


def _revocation_rows(section: dict[str, Any]) -> list[Row]:
    """The rows of bench/revocation.py's figures (a failed figure: its error)."""
    rows: list[Row] = []

    def failed(label: str, data: dict[str, Any]) -> bool:
        if "error" in data:
            rows.append(Row(f"{label}: FAILED", data["error"][:80], "", "", "", "error"))
        return "error" in data

    for key, label, judged in (
        ("card_check_sqlite", "SQLite", True),
        ("card_check_postgresql", "PostgreSQL, this process's CPU", False),
    ):
        data = section.get(key)
        card = section["key"].upper()
        name = f"(f) card check (submit_card) + cached OCSP answer, {card} card, {label}, CPU ms"
        if data is None or failed(name, data):
            continue
        if "skipped" in data:
            rows.append(Row(f"{name}: skipped", data["skipped"], "", "", "", "not measured"))
            continue
        rows.append(
            Row(
                f"{name} (floor: a card the CRL answers)" + ("" if judged else " (info)"),
                f"{data['engine']['cpu_ms']:.3f}",
                f"{data['floor']['cpu_ms']:.3f}",
                f"{data['ratio']:.2f}×",
                f"≤ {data['target_ratio_max']:.2f} × floor",
                _verdict(data["target_met"]) if judged else "—",
            )
        )
    for key, label in (
        ("cached_ocsp_sqlite", "SQLite"),
        ("cached_ocsp_postgresql", "PostgreSQL, this process's CPU"),
        ("cached_ocsp_sqlite_ec", "SQLite"),
    ):
        data = section.get(key)
        card = "EC" if key.endswith("_ec") else section["key"].upper()
        name = f"(f) pure card check + cached OCSP read, {card} card, {label}, CPU ms"
        if data is None or failed(name, data):
            continue
        if "skipped" in data:
            rows.append(Row(f"{name}: skipped", data["skipped"], "", "", "", "not measured"))
            continue
        rows.append(
            Row(
                f"{name} (floor: the pure card check, no database) (info)",
                f"{data['engine']['cpu_ms']:.3f}",
                f"{data['floor']['cpu_ms']:.3f}",
                f"{data['ratio']:.2f}×",
                "info",
                "—",
            )
        )
    cold = section.get("cold_ocsp")
    name = "(f) cold OCSP round trip, loopback openssl ocsp, median ms"
    if cold and not failed(name, cold):
        rows.append(
            Row(
                f"{name} of {cold['rounds']} (floor: raw POST)",
                f"{cold['engine']['median_ms']:.2f}",
                f"{cold['floor']['median_ms']:.2f}",
                f"+{cold['extra_ms']:.2f} ms",
                f"≤ floor + {cold['target_extra_ms_max']:.0f} ms",
                _verdict(cold["target_met"]),
            )
        )
    lookup = section.get("crl_lookup")
    name = "(f) CRL lookup (Crl.lookup), µs"
    if lookup and not failed(name, lookup):
        rows.append(
            Row(
                f"{name}, {lookup['big']['entries']:,} entries "
                f"(floor: {lookup['small']['entries']:,})",
                f"{lookup['big']['lookup_us']:.2f}",
                f"{lookup['small']['lookup_us']:.2f}",
                f"{lookup['ratio']:.2f}×",
                f"O(1): ≤ {lookup['target_ratio_max']:.0f} × floor",
                _verdict(lookup["target_met"]),
            )
        )
    built = section.get("large_crl")
    if built:
        failed("(f) generating the large CRL", built)
    refresh = section.get("refresh")
    name = "(f) swreg revocation refresh"
    if refresh and not failed(name, refresh):
        entries = f"{refresh['entries']:,}-entry CRL ({refresh['crl_mib']:.0f} MiB)"
        judged = refresh["judged"]
        scope = "" if judged else " (not judged: target is at 1,000,000)"
        rows.append(
            Row(
                f"{name}, {entries}, wall s (floor: its raw GET)",
                f"{refresh['engine']['wall_s']:.2f}",
                f"{refresh['floor']['download_s']:.3f}",
                "",
                f"≤ {refresh['target_wall_s_max']:.0f} s{scope}",
                _verdict(refresh["wall_met"]) if judged else "not judged",
            )
        )
        rows.append(
            Row(
                f"{name}, {entries}, peak RSS MiB (floor: swreg crl source add)",
                f"{refresh['engine']['peak_rss_mib']:.0f}",
                f"{refresh['floor']['cli_start_peak_rss_mib']:.0f}",
                "",
                f"≤ {refresh['target_peak_rss_mib_max']:.0f} MiB{scope}",
                _verdict(refresh["rss_met"]) if judged else "not judged",
            )
        )
    return rows


def render(rows: list[Row]) -> str:
    header = Row("figure", "engine", "floor", "ratio", "target", "met")
    table = [header, *rows]
    widths = [max(_width(getattr(r, f)) for r in table) for f in Row.__dataclass_fields__]
    lines = []
    for index, row in enumerate(table):
        cells = [getattr(row, f) for f in Row.__dataclass_fields__]
        lines.append("  ".join(_pad(c, w) for c, w in zip(cells, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    return sum(2 if "\u2e80" <= ch <= "\uffef" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a quick check")
    parser.add_argument("--only", default="", help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--skip", default="", help="comma-separated sections to leave out")
    parser.add_argument("--rows", type=int, help="certificates stored for the query section")
    parser.add_argument("--memory-count", type=int, help="registrations of the memory section")
    parser.add_argument(
        "--table", action="store_true", help="print the table of bench/results.json; no run"
    )
    args = parser.parse_args()
    if args.table:
        stored = json.loads(common.RESULTS.read_text(encoding="utf-8"))
        run = stored.get("run", {})
        print(render(rows_for({k: v for k, v in stored.items() if k != "run"})))
        print(f"\nlast run {run.get('measured_at', '?')}: {', '.join(run.get('sections', []))}")
        return
    only = [s for s in args.only.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    unknown = (set(only) | skip) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    chosen = [s for s in (only or SECTIONS) if s not in skip]
    sizes = QUICK if args.quick else FULL
    if args.rows or args.memory_count:
        sizes = Sizes(**{
            **sizes.__dict__,
            **({"query_rows": args.rows} if args.rows else {}),
            **({"memory_count": args.memory_count} if args.memory_count else {}),
        })  # fmt: skip

    began = time.perf_counter()
    pg = os.environ.get("SWREG_PG_URL")
    database = "SWREG_PG_URL" if pg else "none (SWREG_PG_URL not set)"
    size = "quick" if args.quick else "full sizes"
    print(f"swreg bench: {', '.join(chosen)} ({size}); PostgreSQL: {database}", flush=True)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    with SectionProgress(len(chosen)) as progress:
        for name in chosen:
            started = time.perf_counter()
            progress.begin(name)
            results.update(isolated(name, sizes))
            timings[name] = round(time.perf_counter() - started, 1)
            progress.end(name, timings[name], failed=f"{name}_error" in results)
    total = time.perf_counter() - began

    rows = rows_for(results)
    table = render(rows)
    print()
    print(table)
    print(f"\n{len(chosen)} section(s) in {total / 60:.1f} min ({json.dumps(timings)}); "
          f"{common.machine()['machine']}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    common.merge_results(
        {
            **results,
            "run": {
                **common.machine(),
                "sections": chosen,
                "keys": sorted(results),
                "sizes": "quick" if args.quick else "full",
                "seconds": round(total, 1),
                "section_seconds": timings,
                "table": [row.__dict__ for row in rows],
            },
        },
        drop=tuple(f"{name}_error" for name in chosen),  # a failure of an earlier run
    )
    print(f"written: {common.RESULTS}")
    failed = any(key.endswith("_error") for key in results)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
