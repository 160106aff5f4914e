"""One full registration's server-side CPU against its floor (DESIGN.md §10), not a test.

The engine: :class:`RegistrationService` with its SQLite file store, a 一般個人 applicant and an
in-process card (``start`` → ``issue_challenge`` → the card signs → ``submit_card`` →
``submit`` (基本資料) → ``completed``, which also sends the activation mail through the null
mailer). Only the server calls are timed; the card's signature is the client's work and is not.

The floor: the least any implementation of the same contract must do, with the same
primitives and nothing else: a dict transition table; raw ``sqlite3`` with the engine's own
schema and PRAGMAs (``synchronous`` read from the engine's connection) writing the same rows
(registration, audit rows with their hash chain, challenge, account, login certificate,
activation token), one transaction per server call; the same ``cryptography`` calls (parse,
two ``verify_directly_issued_by`` up to the root, validity, key usage, the identity
extension, the signature over the challenge, SHA-256 fingerprint); the same HMAC of the
national ID, the same argon2id call and the same activation mail, composed with the standard
library's ``EmailMessage.set_content`` as the engine composes it.

Both use the cheapest argon2id the settings accept (``1,8,1``: "KDF excluded"; it costs a few
µs in both). CPU is ``time.process_time`` (user + system: fsync's kernel work counts, the wait
for the disk does not); wall time is reported beside it. Each round runs ``count``
registrations of the floor, then of the engine, in small alternating batches; the figure is
the best round's mean. Target: engine ≤ 3 × floor.

    .venv/bin/python bench/registration.py [--count 100] [--repeat 3] [--key rsa|ec]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sqlite3
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, Type
from common import (
    NO_KDF,
    SECRET,
    Applicant,
    Applicants,
    machine,
    merge_results,
    quiet,
    trusted_app,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtensionOID, NameOID

from engine import App, CardResponse
from engine._settings import Argon2Parameters
from engine.core.identifiers import (
    is_strong_password,
    is_valid_email,
    is_valid_national_id,
    is_valid_phone,
    mask_email,
    mask_national_id,
    mask_phone,
    parse_birth_date,
)
from engine.pki.certificate import SDA_OID
from engine.testing.pki import KeyType, TestPKI

TARGET = 3.0
TYPE_CODE = "person.general"
TRANSITIONS: Mapping[tuple[str, str], str] = {
    ("category", "next"): "card_check",
    ("card_check", "next"): "basic_data",
    ("basic_data", "next"): "completed",
    ("card_check", "back"): "category",
    ("basic_data", "back"): "card_check",
    ("category", "cancel"): "cancelled",
    ("card_check", "cancel"): "cancelled",
    ("basic_data", "cancel"): "cancelled",
}
IDLE = timedelta(minutes=30)
CHALLENGE_TTL = timedelta(minutes=5)
SDA_LAST4 = bytes.fromhex("060760867601640233")  # OID 2.16.886.1.100.2.51, DER
PHASES = ("start", "challenge", "card", "step")
MAIL_SUBJECT = "關港貿單一窗口帳號啟用 / Account activation"


class Segments:
    """Accumulates the CPU and wall time of the server calls of one registration."""

    __slots__ = ("cpu", "per_phase", "wall")

    def __init__(self) -> None:
        self.cpu = 0.0
        self.wall = 0.0
        self.per_phase = dict.fromkeys(PHASES, 0.0)

    def run(self, phase: str, call: Callable[[], Any]) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        result = call()
        spent = time.process_time() - cpu
        self.wall += time.perf_counter() - wall
        self.cpu += spent
        self.per_phase[phase] += spent
        return result


# -- the engine ----------------------------------------------------------------------------------


def engine_registration(app: App, applicant: Applicant, segments: Segments) -> None:
    service = app.registrations
    card = applicant.card
    view = segments.run("start", lambda: service.start(TYPE_CODE, consent=True))
    challenge = segments.run("challenge", lambda: service.issue_challenge(view.id))
    response = CardResponse(
        challenge.id, card.der(), card.sign(challenge.payload), card.chain_der()
    )
    view = segments.run("card", lambda: service.submit_card(view.id, response))
    view = segments.run("step", lambda: service.submit(view.id, applicant.answers))
    if view.state != "completed":
        raise AssertionError(f"engine ended at {view.state}")


# -- the floor -----------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite dialect stores it."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``offset``."""
    tag, length = data[offset], data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    return tag, start, start + length


def _last4(extension: bytes) -> str | None:
    """SDA 2.16.886.1.100.2.51 (the last four ID digits) from the extension's DER."""
    _, position, end = _tlv(extension, 0)
    while position < end:
        _, attribute, attribute_end = _tlv(extension, position)
        _, _, oid_end = _tlv(extension, attribute)
        if extension[attribute:oid_end] == SDA_LAST4:
            _, set_start, _ = _tlv(extension, oid_end)
            _, value_start, value_end = _tlv(extension, set_start)
            return extension[value_start:value_end].decode("utf-8")
        position = attribute_end
    return None


class Floor:
    """The registration floor (module docstring) over one SQLite file with the engine's schema."""

    def __init__(self, path: Path, pki: TestPKI, workflow_hash: str, argon2: Argon2Parameters):
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=5000"):
            self.db.execute(f"PRAGMA {pragma}")
        self.workflow_hash = workflow_hash
        self.origin = "urn:swreg:cli"
        self.issuers = {
            cert.subject.public_bytes(): cert for cert in (*pki.anchors(), *pki.intermediates())
        }
        self.anchors = {cert.subject.public_bytes() for cert in pki.anchors()}
        self.revoked: set[int] = set()
        self.passwords = PasswordHasher(
            time_cost=argon2.time_cost,
            memory_cost=argon2.memory_kib,
            parallelism=argon2.parallelism,
            type=Type.ID,
        )

    def close(self) -> None:
        self.db.close()

    # one registration, server side: four calls, one transaction each

    def start(self) -> str:
        now = datetime.now(UTC)
        state = TRANSITIONS[("category", "next")]
        registration_id = str(uuid.uuid4())
        db = self.db
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO registrations (id, state, chosen_type, applicant_type, workflow_hash, "
            "data, locked, origin, version, created_at, updated_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            (
                registration_id, state, TYPE_CODE, TYPE_CODE, self.workflow_hash,
                json.dumps({"consent": True, "iot": False}), "[]", self.origin,
                _stamp(now), _stamp(now), _stamp(now + IDLE),
            ),
        )  # fmt: skip
        self._audit(
            now,
            registration_id,
            [
                ("start", None, "category", {"consent": True, "iot": False}),
                ("next", "category", state, {}),
            ],
        )
        db.execute("COMMIT")
        return registration_id

    def issue_challenge(self, registration_id: str) -> tuple[str, bytes]:
        now = datetime.now(UTC)
        db = self.db
        db.execute("BEGIN")
        state, origin, expires_at = db.execute(
            "SELECT state, origin, expires_at FROM registrations WHERE id = ?", (registration_id,)
        ).fetchone()
        if state != "card_check" or _stamp(now) > expires_at:
            raise AssertionError("floor: not at the card check")
        challenge_id, nonce = str(uuid.uuid4()), secrets.token_hex(32)
        db.execute(
            "INSERT INTO challenges (id, registration_id, nonce, origin, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                challenge_id, registration_id, nonce, origin, _stamp(now),
                _stamp(now + CHALLENGE_TTL),
            ),
        )  # fmt: skip
        db.execute("COMMIT")
        payload = (
            hashlib.sha256(origin.encode()).digest()
            + hashlib.sha256(registration_id.encode()).digest()
            + hashlib.sha256(bytes.fromhex(nonce)).digest()
        )
        return challenge_id, payload

    def submit_card(
        self, registration_id: str, challenge_id: str, der: bytes, signature: bytes
    ) -> None:
        now = datetime.now(UTC)
        db = self.db
        db.execute("BEGIN")
        used = db.execute(
            "UPDATE challenges SET used_at = ? WHERE id = ? AND registration_id = ? "
            "AND used_at IS NULL AND expires_at >= ?",
            (_stamp(now), challenge_id, registration_id, _stamp(now)),
        ).rowcount
        if used != 1:
            raise AssertionError("floor: challenge used or expired")
        nonce, origin = db.execute(
            "SELECT nonce, origin FROM challenges WHERE id = ?", (challenge_id,)
        ).fetchone()
        state, data, version = db.execute(
            "SELECT state, data, version FROM registrations WHERE id = ?", (registration_id,)
        ).fetchone()
        if state != "card_check":
            raise AssertionError("floor: not at the card check")
        # the card check: parse → issuer → chain → validity → key usage → CRL → signature
        certificate = x509.load_der_x509_certificate(der)
        fingerprint = hashlib.sha256(der).hexdigest()
        issuer = self.issuers[certificate.issuer.public_bytes()]
        certificate.verify_directly_issued_by(issuer)
        root = self.issuers[issuer.issuer.public_bytes()]
        issuer.verify_directly_issued_by(root)
        if root.subject.public_bytes() not in self.anchors:
            raise AssertionError("floor: untrusted")
        for cert in (certificate, issuer):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise AssertionError("floor: expired")
        usage = certificate.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        if not isinstance(usage, x509.KeyUsage) or not usage.digital_signature:
            raise AssertionError("floor: key usage")
        if certificate.serial_number in self.revoked:
            raise AssertionError("floor: revoked")
        payload = (
            hashlib.sha256(origin.encode()).digest()
            + hashlib.sha256(registration_id.encode()).digest()
            + hashlib.sha256(bytes.fromhex(nonce)).digest()
        )
        key = certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            pair = signature  # DER, as this client's card sends it; raw r‖s is converted
            if len(signature) == 64:
                pair = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
            key.verify(pair, payload, ec.ECDSA(hashes.SHA256()))
        name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        extension = certificate.extensions.get_extension_for_oid(SDA_OID).value
        assert isinstance(extension, x509.UnrecognizedExtension)
        last4 = _last4(extension.value)
        taken = db.execute(
            "SELECT 1 FROM certificates WHERE fingerprint = ? AND purpose = 'login' "
            "AND status = 'active'",
            (fingerprint,),
        ).fetchone()
        if taken is not None:
            raise AssertionError("floor: already registered")
        identity = {"name": str(name), "id_last4": last4}
        evidence = {
            "fingerprint": fingerprint,
            "ca": "MOICA",
            "serial": format(certificate.serial_number, "X"),
            "subject": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(),
            "not_before": certificate.not_valid_before_utc.isoformat(),
            "not_after": certificate.not_valid_after_utc.isoformat(),
            "identity": identity,
            "validated_at": now.isoformat(),
            "challenge_id": challenge_id,
            "origin": origin,
        }
        target = TRANSITIONS[(state, "next")]
        stored = {**json.loads(data), "contact_name": identity["name"]}
        db.execute(
            "UPDATE registrations SET state = ?, data = ?, locked = ?, evidence = ?, "
            "certificate_der = ?, certificate_fingerprint = ?, version = ?, updated_at = ?, "
            "expires_at = ? WHERE id = ? AND version = ?",
            (
                target, json.dumps(stored), '["contact_name"]', json.dumps(evidence), der,
                fingerprint, version + 1, _stamp(now), _stamp(now + IDLE), registration_id,
                version,
            ),
        )  # fmt: skip
        diff = {"certificate": fingerprint, "ca": "MOICA", "contact_name": name[:1] + "**"}
        self._audit(now, registration_id, [("next", state, target, diff)])
        db.execute("COMMIT")

    def submit(self, registration_id: str, answers: Mapping[str, Any]) -> None:
        now = datetime.now(UTC)
        db = self.db
        db.execute("BEGIN")
        state, data, evidence, der, version = db.execute(
            "SELECT state, data, evidence, certificate_der, version FROM registrations "
            "WHERE id = ?",
            (registration_id,),
        ).fetchone()
        if state != "basic_data":
            raise AssertionError("floor: not at 基本資料")
        values = {
            key: unicodedata.normalize("NFKC", value).strip() if isinstance(value, str) else value
            for key, value in answers.items()
        }
        email = values["email"].lower()
        national_id = values["national_id"].upper()
        birth = parse_birth_date(values["birth_date"], today=now.date())
        if not (
            is_valid_email(email)
            and is_valid_national_id(national_id)
            and is_valid_phone(values["phone"])
            and birth is not None
            and is_strong_password(values["password"])
            and values["password"] == values["password_confirm"]
            and values["address"]
        ):
            raise AssertionError("floor: invalid answers")
        registration = json.loads(data)
        identity = json.loads(evidence)["identity"]
        if values["contact_name"] != identity["name"] or national_id[-4:] != identity["id_last4"]:
            raise AssertionError("floor: identity mismatch")
        if db.execute("SELECT 1 FROM accounts WHERE name = ?", (email,)).fetchone() is not None:
            raise AssertionError("floor: account exists")
        password_hash = self.passwords.hash(values["password"])
        id_hash = hmac.new(SECRET, f"national_id:{national_id}".encode(), "sha256").hexdigest()
        id_masked = mask_national_id(national_id)
        profile = {"birth_date": birth.isoformat(), "consent": True, "iot": False}
        stored = {
            **registration, "email": email, "contact_name": values["contact_name"],
            "national_id_hash": id_hash, "national_id_masked": id_masked,
            "birth_date": birth.isoformat(), "phone": values["phone"],
            "address": values["address"], "password_hash": password_hash,
        }  # fmt: skip
        account_id = db.execute(
            "INSERT INTO accounts (name, applicant_type, category, status, email, contact_name, "
            "national_id_hash, national_id_masked, phone, address, birth_date, iot, "
            "password_hash, profile, registration_id, created_at) "
            "VALUES (?, ?, 'person', 'pending_activation', ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (
                email, TYPE_CODE, email, values["contact_name"], id_hash, id_masked,
                values["phone"], values["address"], date.isoformat(birth), password_hash,
                json.dumps(profile), registration_id, _stamp(now),
            ),
        ).lastrowid  # fmt: skip
        proof = json.loads(evidence)
        db.execute(
            "INSERT INTO certificates (fingerprint, purpose, account_id, registration_id, der, "
            "serial_hex, subject, issuer, ca, not_before, not_after, national_id_hash, "
            "query_key, status, created_at) "
            "VALUES (?, 'login', ?, ?, ?, ?, ?, ?, 'MOICA', ?, ?, ?, ?, 'active', ?)",
            (
                proof["fingerprint"], account_id, registration_id, der, proof["serial"],
                proof["subject"], proof["issuer"],
                _stamp(datetime.fromisoformat(proof["not_before"])),
                _stamp(datetime.fromisoformat(proof["not_after"])), id_hash, id_hash,
                _stamp(now),
            ),
        )  # fmt: skip
        target = TRANSITIONS[(state, "next")]
        db.execute(
            "UPDATE registrations SET state = ?, data = ?, account_name = ?, version = ?, "
            "updated_at = ? WHERE id = ? AND version = ?",
            (target, json.dumps(stored), email, version + 1, _stamp(now), registration_id, version),
        )
        token = secrets.token_urlsafe(32)
        db.execute(
            "INSERT INTO activation_tokens (token_hash, account_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (
                hashlib.sha256(token.encode()).hexdigest(), account_id, _stamp(now),
                _stamp(now + timedelta(hours=24)),
            ),
        )  # fmt: skip
        masked = {
            "email": mask_email(email), "contact_name": values["contact_name"][:1] + "**",
            "national_id": id_masked, "birth_date": "****-**-**",
            "phone": mask_phone(values["phone"]), "address": "***",
            "password": "[set]", "account": mask_email(email),
        }  # fmt: skip
        sent = {"account": email, "email": mask_email(email), "expires_at": now.isoformat()}
        self._audit(
            now,
            registration_id,
            [("next", state, target, masked), ("activation_sent", None, None, sent)],
        )
        db.execute("COMMIT")
        body = f"帳號「{email}」\nhttp://127.0.0.1:8000/activate/{token}\n"
        message = EmailMessage()  # the same mail, composed the same standard way
        message["Subject"] = MAIL_SUBJECT
        message["From"] = "swreg <no-reply@swreg.invalid>"
        message["To"] = email
        message["Date"] = format_datetime(now)
        message["Message-ID"] = f"<{token[:20]}@swreg.invalid>"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body, charset="utf-8", cte="base64")

    def _audit(
        self,
        now: datetime,
        registration_id: str,
        rows: list[tuple[str, str | None, str | None, dict[str, Any]]],
    ) -> None:
        tail = self.db.execute(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, previous = (tail[0], tail[1]) if tail is not None else (0, "0" * 64)
        for event, source, target, diff in rows:
            seq += 1
            fields = {
                "seq": seq, "at": now.isoformat(), "actor": "cli", "event": event,
                "registration_id": registration_id, "from_state": source, "to_state": target,
                "applicant_type": TYPE_CODE, "workflow_hash": self.workflow_hash, "diff": diff,
                "prev_hash": previous,
            }  # fmt: skip
            digest = hashlib.sha256(_canonical(fields).encode()).hexdigest()
            self.db.execute(
                "INSERT INTO audit_log (seq, at, actor, event, registration_id, from_state, "
                "to_state, applicant_type, workflow_hash, diff, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq, _stamp(now), "cli", event, registration_id, source, target, TYPE_CODE,
                    self.workflow_hash, _canonical(diff), previous, digest,
                ),
            )  # fmt: skip
            previous = digest


def floor_registration(floor: Floor, applicant: Applicant, segments: Segments) -> None:
    card = applicant.card
    registration_id = segments.run("start", floor.start)
    challenge_id, payload = segments.run(
        "challenge", lambda: floor.issue_challenge(registration_id)
    )
    der, signature = card.der(), card.sign(payload)
    segments.run("card", lambda: floor.submit_card(registration_id, challenge_id, der, signature))
    segments.run("step", lambda: floor.submit(registration_id, applicant.answers))


# -- measuring -----------------------------------------------------------------------------------


def measure(*, count: int, repeat: int, key: KeyType, batch: int = 10) -> dict[str, Any]:
    """Interleaved rounds of ``count`` registrations each for the floor and the engine."""
    quiet()
    pki = TestPKI.create(datetime.now(UTC), key_type=key)
    applicants = Applicants(pki, key=key)
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="swreg-bench-") as folder:
        app = trusted_app(f"sqlite:///{Path(folder) / 'engine.db'}", pki)
        floor_app = trusted_app(f"sqlite:///{Path(folder) / 'floor.db'}", pki)  # schema only
        floor_app.close()
        floor = Floor(Path(folder) / "floor.db", pki, app.workflow.hash, NO_KDF)
        with app.database.engine.connect() as connection:  # the engine's durability, whatever
            synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar()
        floor.db.execute(f"PRAGMA synchronous={int(synchronous or 2)}")
        floor.db.execute(
            "INSERT INTO workflow_definitions (hash, name, source, created_at) VALUES (?, ?, ?, ?)",
            (app.workflow.hash, app.workflow.name, app.workflow.source, _stamp(datetime.now(UTC))),
        )
        runners: dict[str, Callable[[Applicant, Segments], None]] = {
            "floor": lambda applicant, seg: floor_registration(floor, applicant, seg),
            "engine": lambda applicant, seg: engine_registration(app, applicant, seg),
        }
        for runner in runners.values():  # warm up: caches, statements, imports
            for applicant in applicants.batch(5):
                runner(applicant, Segments())
        for _ in range(repeat):
            totals = {name: Segments() for name in runners}
            done = dict.fromkeys(runners, 0)
            while min(done.values()) < count:
                for name, runner in runners.items():
                    for applicant in applicants.batch(min(batch, count - done[name])):
                        runner(applicant, totals[name])
                        done[name] += 1
            for name, total in totals.items():
                mean_cpu = total.cpu / count
                if name not in best or mean_cpu < best[name]["cpu_ms"] / 1000:
                    best[name] = {
                        "cpu_ms": round(mean_cpu * 1000, 3),
                        "wall_ms": round(total.wall / count * 1000, 3),
                        "cpu_ms_per_call": {
                            phase: round(spent / count * 1000, 3)
                            for phase, spent in total.per_phase.items()
                        },
                    }
        floor.close()
        app.close()
    ratio = best["engine"]["cpu_ms"] / best["floor"]["cpu_ms"]
    return {
        **machine(),
        "key": key,
        "applicant_type": TYPE_CODE,
        "registrations_per_round": count,
        "best_of": repeat,
        "argon2": "1,8,1 (KDF excluded)",
        "sqlite_synchronous": int(synchronous or 2),
        "floor": best["floor"],
        "engine": best["engine"],
        "ratio": round(ratio, 2),
        "target_ratio_max": TARGET,
        "target_met": ratio <= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--key", choices=("rsa", "ec"), default="rsa")
    args = parser.parse_args()
    section = measure(count=args.count, repeat=args.repeat, key=args.key)
    print(json.dumps(section, indent=2, ensure_ascii=False))
    merge_results({f"registration_{args.key}": section})


if __name__ == "__main__":
    main()
