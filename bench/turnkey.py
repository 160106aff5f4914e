"""Turnkey verification against its floor (DESIGN.md §10): messages per second, not a test.

The floor is what no verifier can beat: a public key already loaded and one
``verify(signature, message, PKCS1v15(), SHA256())`` (or ``ECDSA(SHA256())``) over a 10 KiB
message. The engine is :meth:`TurnkeyVerifier.verify` for a registered sender, with its store
(temporary SQLite), trust service and default 1 s recheck interval, for a sender with one
signing certificate and with three (the signing one registered last, and, informative only,
three signers taking turns). Each figure is the best of 3 loops of at least 2 s each, the
cases interleaved round by round (a load change hits floor and engine alike); the
target is engine/floor ≥ 0.80. Prints a table and merges a ``turnkey`` section into
``bench/results.json``.

    .venv/bin/python bench/turnkey.py [--seconds 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import interleaved, machine, merge_results
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from engine import App, Settings, bootstrap
from engine._settings import Argon2Parameters
from engine.services.turnkey import TurnkeyVerifier
from engine.store import Certificate
from engine.testing.pki import IssuedCard, KeyType, TestPKI

MESSAGE_BYTES = 10 * 1024
TARGET = 0.80


def register(app: App, card: IssuedCard, sender: str) -> None:
    """A registered signing certificate, inserted as the customs import would store it."""
    cert = card.certificate
    der = card.der()
    with app.database.unit_of_work() as uow:
        uow.certificates.add(
            Certificate(
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
        )
        uow.commit()


def floor(card: IssuedCard, message: bytes) -> Callable[[], object]:
    key = card.certificate.public_key()
    signature = card.sign(message)
    if isinstance(key, rsa.RSAPublicKey):
        return lambda: key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return lambda: key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def engine_call(
    verifier: TurnkeyVerifier, sender: str, message: bytes, signature: bytes
) -> Callable[[], object]:
    verifier.verify(sender, message, signature)  # warm: cache filled, right candidate known
    return lambda: verifier.verify(sender, message, signature)


def rotating(
    verifier: TurnkeyVerifier, sender: str, message: bytes, cards: list[IssuedCard]
) -> Callable[[], object]:
    signatures = [card.sign(message) for card in cards]
    state = {"i": 0}

    def call() -> object:
        state["i"] = (state["i"] + 1) % len(signatures)
        return verifier.verify(sender, message, signatures[state["i"]])

    return call


def measure(*, seconds: float, repeat: int) -> dict[str, Any]:
    """Every case of both algorithms, interleaved; the ``turnkey`` section of the results."""
    message = os.urandom(MESSAGE_BYTES)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            database_url=f"sqlite:///{Path(folder) / 'bench.db'}",
            secret_key=bytes(32),
            argon2=Argon2Parameters(1, 64, 1),
        )
        pki = TestPKI.create(datetime.now(UTC), key_type="rsa")
        app = bootstrap(settings)
        pki.publish_to(app.trust, actor="bench")
        wired = getattr(app, "turnkey", None)
        verifier = (
            wired
            if isinstance(wired, TurnkeyVerifier)
            else TurnkeyVerifier(app.database, app.clock, app.trust, app.revocation_checks)
        )
        cases: tuple[tuple[KeyType, str], ...] = (
            ("rsa", "RSA-2048 PKCS#1 v1.5"),
            ("ec", "ECDSA P-256"),
        )
        for key, label in cases:
            one_sender = "04595257" if key == "rsa" else "22099131"
            single = pki.issue_customs(one_sender, key=key)
            register(app, single, one_sender)
            three_sender = "16446274" if key == "rsa" else "97162640"
            three = [pki.issue_customs(three_sender, f"0{i}", key=key) for i in (1, 2, 3)]
            for card in three:  # the signing one (three[-1]) registered last
                register(app, card, three_sender)

            measured = interleaved(
                [
                    ("floor: cached key + one verify", floor(single, message)),
                    (
                        "engine: 1 certificate",
                        engine_call(verifier, one_sender, message, single.sign(message)),
                    ),
                    (
                        "engine: 3 certificates, right one last",
                        engine_call(verifier, three_sender, message, three[-1].sign(message)),
                    ),
                    (
                        "engine: 3 certificates, signers taking turns (info)",
                        rotating(verifier, three_sender, message, three),
                    ),
                ],
                seconds,
                repeat,
            )
            base = measured[0][1]
            for case, value in measured:
                rows.append(
                    {
                        "algorithm": label,
                        "case": case,
                        "messages_per_s": round(value, 1),
                        "us_per_message": round(1e6 / value, 2),
                        "ratio_to_floor": round(value / base, 3),
                    }
                )
        app.close()
    targets = [r for r in rows if r["case"].startswith("engine") and "(info)" not in r["case"]]
    worst = min(r["ratio_to_floor"] for r in targets)
    return {
        **machine(),
        "message_bytes": MESSAGE_BYTES,
        "seconds_per_loop": seconds,
        "best_of": repeat,
        "target_ratio": TARGET,
        "worst_ratio": worst,
        "target_met": worst >= TARGET,
        "rows": rows,
    }


def print_table(section: dict[str, Any]) -> None:
    print(
        f"Turnkey verification, {section['message_bytes'] // 1024} KiB messages, "
        f"best of {section['best_of']}"
    )
    print(f"{'algorithm':22} {'case':52} {'msg/s':>9} {'µs/msg':>8} {'ratio':>6}")
    for row in section["rows"]:
        print(
            f"{row['algorithm']:22} {row['case']:52} {row['messages_per_s']:9.0f} "
            f"{row['us_per_message']:8.2f} {row['ratio_to_floor']:6.3f}"
        )
    verdict = "met" if section["target_met"] else "NOT met"
    print(f"target engine/floor ≥ {TARGET:.2f}: {verdict} (worst {section['worst_ratio']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    section = measure(seconds=args.seconds, repeat=args.repeat)
    print_table(section)
    merge_results({"turnkey": section})
    print("written: bench/results.json")


if __name__ == "__main__":
    main()
