"""Memory over 100,000 registrations (DESIGN.md §10: memory flat), not a test.

One engine in one process registers ``count`` 一般個人 applicants in a row (the full flow of
``bench/registration.py``, with the cheapest argon2id), its SQLite file on /dev/shm when
there is one (no waiting for fsync; tmpfs pages are not part of the process's RSS). Every
``count / samples`` registrations the process collects garbage and records its resident set
size (``/proc/self/statm``) and the number of objects the garbage collector tracks. The
first 20 % (at least 1,500) are warm-up (bounded caches filling, the allocator's arenas
growing: the engine keeps the public keys of the last 1,024 certificates); after that the
growth must be flat: at most ``--limit-mib`` MiB of RSS (default 4) and no steady rise of
live objects (≤ 0.5 live objects per registration).

    .venv/bin/python bench/memory.py [--count 100000] [--samples 20] [--key ec]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import Applicants, collect, machine, merge_results, quiet, rss_bytes, trusted_app
from registration import Segments, engine_registration

from engine.testing.pki import KeyType, TestPKI

WARM_UP = 0.2
WARM_UP_MIN = 1500  # past the engine's bounded caches (at most 512 entries each, engine/pki)
MIB = 1024 * 1024


def measure(
    *, count: int, samples: int, key: KeyType, limit_mib: float = 4.0, progress: bool = False
) -> dict[str, Any]:
    quiet()
    pki = TestPKI.create(datetime.now(UTC), key_type=key)
    applicants = Applicants(pki, key=key)
    every = max(1, count // samples)
    points: list[dict[str, Any]] = []
    began = time.perf_counter()
    shm = Path("/dev/shm")  # tmpfs: no fsync waits (not counted in RSS); else the temp dir
    place = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="swreg-bench-", dir=place) as folder:
        app = trusted_app(f"sqlite:///{Path(folder) / 'memory.db'}", pki)
        collect()
        points.append({"registrations": 0, "rss_mib": rss_bytes() / MIB, "objects": 0})
        points[0]["objects"] = len(gc.get_objects())
        for done in range(1, count + 1):
            engine_registration(app, applicants(), Segments())
            if done % every == 0 or done == count:
                collect()
                point = {
                    "registrations": done,
                    "rss_mib": round(rss_bytes() / MIB, 2),
                    "objects": len(gc.get_objects()),
                    "seconds": round(time.perf_counter() - began, 1),
                }
                points.append(point)
                if progress:
                    print(
                        f"  memory: {done:>7} registrations, RSS {point['rss_mib']:.1f} MiB, "
                        f"{point['objects']} objects, {point['seconds']:.0f} s",
                        flush=True,
                    )
        app.close()
    warm = min(max(count * WARM_UP, WARM_UP_MIN), count // 2)
    base = next(p for p in points if p["registrations"] >= warm)
    last = points[-1]
    span = max(1, last["registrations"] - base["registrations"])
    growth_mib = last["rss_mib"] - base["rss_mib"]
    objects_per_registration = (last["objects"] - base["objects"]) / span
    flat = growth_mib <= limit_mib and objects_per_registration <= 0.5
    return {
        **machine(),
        "registrations": count,
        "key": key,
        "seconds": round(time.perf_counter() - began, 1),
        "warm_up_registrations": base["registrations"],
        "rss_after_warm_up_mib": base["rss_mib"],
        "rss_end_mib": last["rss_mib"],
        "rss_growth_after_warm_up_mib": round(growth_mib, 2),
        "rss_growth_bytes_per_registration": round(growth_mib * MIB / span, 1),
        "objects_growth_per_registration": round(objects_per_registration, 3),
        "limit_mib": limit_mib,
        "target_met": flat,
        "samples": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--key", choices=("rsa", "ec"), default="ec")
    parser.add_argument("--limit-mib", type=float, default=4.0)
    args = parser.parse_args()
    section = measure(
        count=args.count,
        samples=args.samples,
        key=args.key,
        limit_mib=args.limit_mib,
        progress=True,
    )
    print(json.dumps({k: v for k, v in section.items() if k != "samples"}, indent=2))
    merge_results({"memory": section})


if __name__ == "__main__":
    main()
