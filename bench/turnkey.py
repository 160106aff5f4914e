"""Turnkey verification against its floor (DESIGN.md §10): messages per second, not a test.

The floor is what no verifier can beat: a public key already loaded and one
``verify(signature, message, PKCS1v15(), SHA256())`` (or ``ECDSA(SHA256())``) over a 10 KiB
message. The engine is :meth:`TurnkeyVerifier.verify` for registered senders, with its store
(temporary SQLite), trust service and default 1 s recheck interval (its batched revalidation
runs inside the loops), in every signer pattern:

- one certificate; three with the signing one registered last;
- three certificates whose signers take turns (round robin, and at random) with a raw
  signature, which names no certificate: without a signer id the verifier must try them, (k+1)/2
  verifications on average for k certificates, so these rows cannot reach 0.80 and say so;
- the same turns with the certificate named by the caller (fingerprint, or serial), and as a
  detached CMS whose issuerAndSerialNumber names it (the CMS parsing is in the engine's cost);
- 10,000 senders, each with its own certificate, taking turns (round robin, and at random):
  every sender's keys cached at once. For information, the floor's one verify over those 10,000
  loaded keys taken at random: what any verifier holding them pays in CPU-cache misses (the
  floor proper keeps one key hot).

It also reports the memory one cached sender costs (RSS growth while 10,000 senders are loaded,
next to the cache's own estimate) and the cold load of one sender. Each figure is the best of
3 loops of at least 2 s each, the cases interleaved round by round (a load change hits floor
and engine alike); the target is engine/floor ≥ 0.80. Prints a table and merges a ``turnkey``
section into ``bench/results.json``. The 10,000 senders take about 20 s to issue and load per
algorithm; ``--senders`` makes fewer for a quick look.

    .venv/bin/python bench/turnkey.py [--seconds 2] [--repeat 3] [--senders 10000]
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import itertools
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import interleaved, machine, merge_results, rss_bytes, shared_card_keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from engine import App, Settings, bootstrap
from engine._settings import Argon2Parameters
from engine.services.turnkey import CANDIDATE_BYTES, ENTRY_BYTES, TurnkeyVerifier
from engine.store import Certificate
from engine.testing.pki import IssuedCard, KeyType, TestPKI

MESSAGE_BYTES = 10 * 1024
TARGET = 0.80
SENDERS = 10_000
RR = "round robin"
NO_SIGNER_ID = (
    "no signer id: a raw signature names no certificate, so k certificates cost (k+1)/2 "
    "verifications on average whatever the order of trials (≈ 2/(k+1) of the floor, plus "
    "the hash); name the certificate or send a CMS with issuerAndSerialNumber"
)


def row(app: App, card: IssuedCard, sender: str) -> Certificate:
    """A registered signing certificate, as the customs import would store it."""
    cert = card.certificate
    der = card.der()
    return Certificate(
        fingerprint=hashlib.sha256(der).hexdigest(),
        purpose="signing",
        der=der,
        serial_hex=format(cert.serial_number, "X"),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        ca="TaiCA",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        ubn=sender,
        query_key=sender,
        kind="non_ic",
        usage_type="shipping",
        status="active",
        created_at=app.clock.now(),
    )


def register(app: App, cards: Sequence[tuple[IssuedCard, str]]) -> None:
    """Insert ``(card, sender)`` pairs in one transaction."""
    with app.database.unit_of_work() as uow:
        for card, sender in cards:
            uow.certificates.add(row(app, card, sender))
        uow.commit()


def floor(card: IssuedCard, message: bytes) -> Callable[[], object]:
    key = card.certificate.public_key()
    signature = card.sign(message)
    if isinstance(key, rsa.RSAPublicKey):
        return lambda: key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return lambda: key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def many_keys(keys: Sequence[object], signature: bytes, message: bytes) -> Callable[[], object]:
    """For information: the floor over many loaded keys taken at random, what any verifier
    holding every sender's key pays in cache misses (the floor proper keeps one key hot)."""
    draw = random.Random(21).choices(keys, k=65_536)
    following = itertools.cycle(draw).__next__

    def call() -> object:
        key = following()
        if isinstance(key, rsa.RSAPublicKey):
            return key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key.verify(signature, message, ec.ECDSA(hashes.SHA256()))

    return call


def cms(card: IssuedCard, message: bytes) -> bytes:
    """A detached CMS SignedData (signed attributes, issuerAndSerialNumber) over ``message``."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(message)
        .add_signer(card.certificate, card.key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )


def turns(
    verifier: TurnkeyVerifier,
    message: bytes,
    calls: Sequence[tuple[str, bytes, str | None]],
    order: str,
) -> Callable[[], object]:
    """``(sender, signature, certificate name)`` calls taken in turn: ``round robin`` or
    ``random`` (a fixed pseudo-random sequence, so drawing costs nothing in the loop)."""
    if order == "random":
        draw = random.Random(20).choices(range(len(calls)), k=max(65_536, 4 * len(calls)))
        sequence = [calls[i] for i in draw]
    else:
        sequence = list(calls)
    for sender, signature, name in calls:  # warm: every sender cached
        verifier.verify(sender, message, signature, certificate=name)
    following = itertools.cycle(sequence).__next__
    verify = verifier.verify

    def call() -> object:
        sender, signature, name = following()
        return verify(sender, message, signature, certificate=name)

    return call


def same(
    verifier: TurnkeyVerifier, sender: str, message: bytes, signature: bytes
) -> Callable[[], object]:
    verifier.verify(sender, message, signature)  # warm: cache filled, right candidate known
    return lambda: verifier.verify(sender, message, signature)


def many_senders(
    app: App, pki: TestPKI, verifier: TurnkeyVerifier, key: KeyType, count: int, first: int
) -> tuple[list[str], list[IssuedCard], dict[str, float]]:
    """``count`` senders, each with its own certificate (one key pair shared, so issuing is a
    CA signature each: ``pki`` has EC CAs, whose signatures cost little), loaded into the
    cache; the memory and time that took."""
    senders = [f"{first + i:08d}" for i in range(count)]
    with shared_card_keys():
        cards = [pki.issue_customs(sender, key=key) for sender in senders]
    register(app, list(zip(cards, senders, strict=True)))
    message = b"warm"
    signature = cards[0].sign(message)  # one key pair: it verifies for every sender
    gc.collect()
    before_rss, before = rss_bytes(), verifier.cache_info()
    began = time.perf_counter()
    for sender in senders:
        verifier.verify(sender, message, signature)
    cold = (time.perf_counter() - began) / count
    gc.collect()
    after = verifier.cache_info()
    loaded = after["senders"] - before["senders"]
    memory = {
        "senders_loaded": loaded,
        "rss_bytes_per_sender": round((rss_bytes() - before_rss) / max(1, loaded)),
        "estimated_bytes_per_sender": round((after["bytes"] - before["bytes"]) / max(1, loaded)),
        "cold_load_us_per_sender": round(cold * 1e6, 1),
    }
    return senders, cards, memory


def measure(*, seconds: float, repeat: int, senders: int = SENDERS) -> dict[str, Any]:
    """Every pattern of both algorithms, interleaved; the ``turnkey`` section of the results."""
    message = os.urandom(MESSAGE_BYTES)
    rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{Path(folder) / 'bench.db'}",
            secret_key=bytes(32),
            argon2=Argon2Parameters(1, 64, 1),
        )
        pki = TestPKI.create(datetime.now(UTC), key_type="rsa")
        app = bootstrap(settings)
        pki.publish_to(app.trust, actor="bench")
        crowd_pki = TestPKI.create(datetime.now(UTC), key_type="ec")  # quick to issue from
        crowd_pki.publish_to(app.trust, actor="bench")
        wired = getattr(app, "turnkey", None)
        verifier = (
            wired
            if isinstance(wired, TurnkeyVerifier)
            else TurnkeyVerifier(app.database, app.clock, app.trust, app.revocation_checks)
        )
        cases: tuple[tuple[KeyType, str, int], ...] = (
            ("rsa", "RSA-2048 PKCS#1 v1.5", 20_000_000),
            ("ec", "ECDSA P-256", 30_000_000),
        )
        for key, label, first in cases:
            one_sender = "04595257" if key == "rsa" else "22099131"
            single = pki.issue_customs(one_sender, key=key)
            three_sender = "16446274" if key == "rsa" else "97162640"
            three = [pki.issue_customs(three_sender, f"0{i}", key=key) for i in (1, 2, 3)]
            register(app, [(single, one_sender)] + [(card, three_sender) for card in three])
            # the signing one (three[-1]) registered last

            raw = [(three_sender, card.sign(message), None) for card in three]
            by_fingerprint = [
                (three_sender, card.sign(message), hashlib.sha256(card.der()).hexdigest())
                for card in three
            ]
            by_serial = [
                (three_sender, card.sign(message), format(card.certificate.serial_number, "X"))
                for card in three
            ]
            with_sid = [(three_sender, cms(card, message), None) for card in three]
            crowd, crowd_cards, memory[label] = many_senders(
                app, crowd_pki, verifier, key, senders, first
            )
            crowd_signature = crowd_cards[0].sign(message)
            crowd_calls = [(sender, crowd_signature, None) for sender in crowd]
            crowd_keys = [card.certificate.public_key() for card in crowd_cards]

            n = f"{senders:,}"
            t = functools.partial(turns, verifier, message)
            patterns: list[tuple[str, Callable[[], object], str | None]] = [
                ("1 certificate", same(verifier, one_sender, message, single.sign(message)), None),
                (
                    "3 certificates, right one last",
                    same(verifier, three_sender, message, three[-1].sign(message)),
                    None,
                ),
                ("3 taking turns, raw (no signer id), round robin", t(raw, RR), NO_SIGNER_ID),
                ("3 taking turns, raw (no signer id), random", t(raw, "random"), NO_SIGNER_ID),
                ("3 taking turns, fingerprint named, round robin", t(by_fingerprint, RR), None),
                ("3 taking turns, serial named, random", t(by_serial, "random"), None),
                ("3 taking turns, CMS issuerAndSerialNumber, random", t(with_sid, "random"), None),
                (f"{n} senders taking turns, round robin", t(crowd_calls, RR), None),
                (f"{n} senders taking turns, random", t(crowd_calls, "random"), None),
            ]
            measured = interleaved(
                [("floor: cached key + one verify", floor(single, message))]
                + [(f"engine: {case}", operation) for case, operation, _ in patterns]
                + [
                    (
                        f"reference: one verify, {n} keys taken at random (info)",
                        many_keys(crowd_keys, crowd_signature, message),
                    )
                ],
                seconds,
                repeat,
            )
            limits = {f"engine: {case}": limit for case, _, limit in patterns}
            base = measured[0][1]
            for case, value in measured:
                entry: dict[str, Any] = {
                    "algorithm": label,
                    "case": case,
                    "messages_per_s": round(value, 1),
                    "us_per_message": round(1e6 / value, 2),
                    "ratio_to_floor": round(value / base, 3),
                }
                if limits.get(case):
                    entry["limit"] = limits[case]
                rows.append(entry)
        cache = verifier.cache_info()
        app.close()
    targets = [r for r in rows if r["case"].startswith("engine")]  # not the (info) reference
    identified = [r for r in targets if "limit" not in r]
    worst = min(r["ratio_to_floor"] for r in targets)
    worst_identified = min(r["ratio_to_floor"] for r in identified)
    return {
        **machine(),
        "message_bytes": MESSAGE_BYTES,
        "seconds_per_loop": seconds,
        "best_of": repeat,
        "target_ratio": TARGET,
        "worst_ratio": worst,
        "target_met": worst >= TARGET,
        "worst_ratio_signer_identified": worst_identified,
        "target_met_signer_identified": worst_identified >= TARGET,
        "no_signer_id": NO_SIGNER_ID,
        "senders": senders,
        "memory": memory,
        "cache": cache,
        "cache_estimate_bytes_per_sender": ENTRY_BYTES + CANDIDATE_BYTES,
        "rows": rows,
    }


def print_table(section: dict[str, Any]) -> None:
    print(
        f"Turnkey verification, {section['message_bytes'] // 1024} KiB messages, "
        f"best of {section['best_of']}"
    )
    print(f"{'algorithm':21} {'case':56} {'msg/s':>8} {'µs/msg':>7} {'ratio':>6}  verdict")
    for row in section["rows"]:
        if row["case"].startswith("floor"):
            verdict = ""
        elif "(info)" in row["case"]:
            verdict = "(info)"
        elif row["ratio_to_floor"] >= TARGET:
            verdict = "met"
        else:
            verdict = "NOT met" + (": needs a signer id" if "limit" in row else "")
        print(
            f"{row['algorithm']:21} {row['case']:56} {row['messages_per_s']:8.0f} "
            f"{row['us_per_message']:7.2f} {row['ratio_to_floor']:6.3f}  {verdict}"
        )
    for label, memory in section["memory"].items():
        print(
            f"{label}: {memory['senders_loaded']:,} senders cached: "
            f"{memory['rss_bytes_per_sender']:,} B RSS per sender (estimate "
            f"{memory['estimated_bytes_per_sender']:,} B), cold load "
            f"{memory['cold_load_us_per_sender']:.0f} µs per sender"
        )
    cache = section["cache"]
    print(
        f"cache: {cache['senders']:,} senders, estimated {cache['bytes'] / 2**20:.1f} MiB "
        f"of {cache['limit'] / 2**20:.0f} MiB"
    )
    print(f"rows marked 'no signer id': {section['no_signer_id']}")
    verdict = "met" if section["target_met"] else "NOT met"
    print(f"target engine/floor ≥ {TARGET:.2f} for every pattern: {verdict} "
          f"(worst {section['worst_ratio']:.3f})")  # fmt: skip
    verdict = "met" if section["target_met_signer_identified"] else "NOT met"
    print(f"  where the signer is identified (one certificate, named, CMS sid): {verdict} "
          f"(worst {section['worst_ratio_signer_identified']:.3f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--senders", type=int, default=SENDERS)
    args = parser.parse_args()
    section = measure(seconds=args.seconds, repeat=args.repeat, senders=args.senders)
    print_table(section)
    merge_results({"turnkey": section})
    print("written: bench/results.json")


if __name__ == "__main__":
    main()
