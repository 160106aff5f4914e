"""Where the engine's time goes: cProfile (CPU clock) over the benchmarked paths, not a test.

``registration``  ``count`` full 一般個人 registrations (bench/registration.py's engine side)
``query``         通關憑證查詢 over ``rows`` certificates on SQLite, with the account_id index
``web``           full registrations through the JSON API in-process (ASGI transport, one
                  client address per registration), the web layer on top of the engine

Prints the functions with the most cumulative and own CPU time; ``--out FILE`` keeps the raw
profile for ``python -m pstats FILE`` or snakeviz.

    .venv/bin/python bench/profiling.py registration [--count 300] [--limit 40]
    .venv/bin/python bench/profiling.py query [--rows 200000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import Applicants, quiet, settings_for, trusted_app

from engine import bootstrap
from engine.testing.pki import TestPKI


def profile_registration(count: int, key: str) -> cProfile.Profile:
    from registration import Segments, engine_registration

    pki = TestPKI.create(datetime.now(UTC), key_type=key)  # type: ignore[arg-type]
    applicants = Applicants(pki, key=key)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="swreg-bench-") as folder:
        app = trusted_app(f"sqlite:///{Path(folder) / 'profile.db'}", pki)
        for applicant in applicants.batch(20):
            engine_registration(app, applicant, Segments())
        batch = applicants.batch(count)
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for applicant in batch:
            engine_registration(app, applicant, Segments())
        profiler.disable()
        app.close()
    return profiler


def profile_query(rows: int, queries: int) -> cProfile.Profile:
    import customs_query

    pki = TestPKI.create(datetime.now(UTC), key_type="rsa")
    plan = customs_query.Plan(rows, pki)
    keys = plan.sample(queries)
    with tempfile.TemporaryDirectory(prefix="swreg-bench-") as folder:
        path = Path(folder) / "customs.db"
        app = bootstrap(settings_for(f"sqlite:///{path}"))
        customs_query.load_sqlite(path, plan)
        with app.database.engine.begin() as connection:
            connection.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS {customs_query.PROPOSED_INDEX} "
                "ON certificates (account_id)"
            )
            connection.exec_driver_sql("ANALYZE")
        for key in keys[:100]:
            app.customs.query(key)
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for key in keys:
            app.customs.query(key)
        profiler.disable()
        app.close()
    return profiler


def inline_thread_pool() -> None:
    """Make FastAPI call sync routes and dependencies inline, and the JSON API its blocking
    work (engine.web._shared.off_loop hands it to the thread pool): profiling only, it blocks."""
    import fastapi.dependencies.utils
    import fastapi.routing

    import engine.web._shared

    async def inline(*args: Any, **kwargs: Any) -> Any:
        return args[0](*args[1:], **kwargs)

    fastapi.routing.run_in_threadpool = inline  # type: ignore[assignment]
    fastapi.dependencies.utils.run_in_threadpool = inline  # type: ignore[assignment]
    engine.web._shared.run_in_threadpool = inline  # type: ignore[assignment]


def profile_web(count: int, key: str) -> cProfile.Profile:
    """Registrations through the JSON API in-process (ASGI, no sockets): the web layer's share."""
    import asyncio

    import httpx
    from portal import Driver

    from engine.web import create_app
    from engine.web._security import new_csrf_token

    pki = TestPKI.create(datetime.now(UTC), key_type=key)  # type: ignore[arg-type]
    applicants = Applicants(pki, key=key)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="swreg-bench-") as folder:
        app = trusted_app(f"sqlite:///{Path(folder) / 'profile.db'}", pki)
        driver = Driver("http://127.0.0.1:8000", applicants, 1)
        web = create_app(app)
        batch = applicants.batch(count)

        async def run(applicants_: list[Any]) -> None:
            token = new_csrf_token(web.state.portal.identifiers)  # as GET /api/csrf issues
            for applicant in applicants_:  # a client address each: the rate limits stay on
                number = applicant.number
                address = (f"10.{number // 62500 % 250}.{number // 250 % 250}.{number % 250}", 1)
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=web, client=address),
                    base_url="http://127.0.0.1:8000",
                    cookies={"csrf": token},
                    headers={"X-CSRF-Token": token},
                ) as http:
                    await driver.register(http, applicant)

        asyncio.run(run(applicants.batch(10)))
        inline_thread_pool()  # cProfile sees one thread: run the sync routes on it
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        asyncio.run(run(batch))
        profiler.disable()
        app.close()
    return profiler


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=("registration", "query", "web"))
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--key", choices=("rsa", "ec"), default="rsa")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    quiet()
    if args.what == "registration":
        profiler = profile_registration(args.count, args.key)
        per = f"per registration: divide by {args.count}"
    elif args.what == "web":
        profiler = profile_web(args.count, args.key)
        per = f"per registration through the JSON API in-process: divide by {args.count}"
    else:
        profiler = profile_query(args.rows, args.count)
        per = f"per query: divide by {args.count}"
    if args.out:
        profiler.dump_stats(args.out)
    stats = pstats.Stats(profiler)
    stats.strip_dirs()
    print(f"== {args.what}: cumulative CPU ({per}) ==")
    stats.sort_stats("cumulative").print_stats(args.limit)
    print(f"== {args.what}: own CPU ==")
    stats.sort_stats("tottime").print_stats(args.limit)


if __name__ == "__main__":
    main()
