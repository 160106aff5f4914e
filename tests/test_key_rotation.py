"""Rotating ``SWREG_SECRET_KEY`` without losing the lookups by keyed hash (issue 18 item 7;
``engine/services/secret_keys.py``, docs/operations.md "Rotating SWREG_SECRET_KEY").

Each test starts from a database holding every kind of stored keyed hash the engine writes: a
報關專責人員 (person.customs_broker, national ID ``A123456789``) registered with a MOICA card and
logged in (the account's and the login certificate's hash, the certificate's query key, the
registration's data, a per-account rate-limit key), the broker's customs certificate (its owner's
hash), a mobile ID ticket under way and a registration's mobile ID evidence. The keyring is a key
file in the test's folder, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from engine import App, CardResponse, FixedClock, ImportKind, Settings, bootstrap
from engine._errors import EnvironmentProblem, ErrorCode, RefusedError, UsageError
from engine._settings import keyring_text
from engine.services.hashing import IdentifierHasher, key_fingerprint, rewrap
from engine.services.secret_keys import KEYED_COLUMNS, ROTATED_EVENT
from engine.store import (
    MIGRATIONS_DIR,
    Account,
    AuditEntry,
    Certificate,
    MobileIdTicket,
    RateLimitWindow,
    Registration,
    SecretKeyCheck,
)
from engine.testing.pki import IssuedCard, TestPKI
from engine.web import create_app
from engine.web._security import CSRF_COOKIE, issued_csrf_token

from .conftest import (
    FAST_ARGON2,
    ON_POSTGRESQL,
    PERSON_ANSWERS,
    PIN,
    TEST_CLIENT_HOST,
    FreshDatabase,
    sqlite_only,
)
from .helpers import KeyCard, enrol
from .test_customs import BROKER, NATIONAL_ID, ORIGIN, activate_and_login, trust_intermediates

SWREG = str(Path(sys.executable).parent / "swreg")
EMAIL = PERSON_ANSWERS["email"]
TICKET_ID_HASH = "f" * 64
START = {"type": "person.general", "consent": True}


@dataclass
class Setup:
    """The test's database, its key file and the app opened on them."""

    settings: Settings
    key_file: Path
    app: App
    person: IssuedCard
    opened: list[App]

    def open(self, settings: Settings | None = None) -> App:
        """Another process's view: a new bootstrap (reads the keyring again)."""
        app = bootstrap(settings or self.settings, clock=self.app.clock)
        self.opened.append(app)
        return app


@pytest.fixture
def setup(
    fresh_database: FreshDatabase, tmp_path: Path, clock: FixedClock, pki: TestPKI
) -> Iterator[Setup]:
    key_file = tmp_path / "swreg.key"
    settings = Settings(
        database_url=fresh_database(),
        secret_key_file=key_file,
        argon2=FAST_ARGON2,
        allowed_hosts=(TEST_CLIENT_HOST,),
    )
    app = bootstrap(settings, clock=clock)
    opened = [app]
    pki.publish_to(app.trust, actor="test")
    trust_intermediates(app, pki)
    person = pki.issue_person("王小明", NATIONAL_ID[-4:])
    enrol(app, "person.customs_broker", person, PERSON_ANSWERS)
    token = activate_and_login(app, person, EMAIL)  # a per-account rate-limit key
    broker = pki.issue_customs("97162640", "05")
    app.customs.import_certificate(
        "broker_specialist", BROKER, certificate=broker.der(), kind=ImportKind.NON_IC,
        session=app.logins.session(token), signature_check=broker.sign,
    )  # fmt: skip
    _mobile_id_rows(app, clock)
    yield Setup(settings, key_file, app, person, opened)
    for each in opened:
        each.close()


def _mobile_id_rows(app: App, clock: FixedClock) -> None:
    """A mobile ID signing under way and a registration's mobile ID evidence, with the keyed
    hashes :class:`~engine.services.mobile_id.MobileIdSigner` stores."""
    now = clock.now()
    sent = app.identifiers.hash("national_id", NATIONAL_ID)
    with app.database.unit_of_work() as uow:
        uow.mobile_id_tickets.add(
            MobileIdTicket(
                id_hash=TICKET_ID_HASH, purpose="login",
                subject_hash=app.identifiers.hash("mobile_id_subject", "login:"),
                challenge_id="c" * 36, national_id_hash=sent, id_last4=NATIONAL_ID[-4:],
                sp_ticket_id="sp-ticket", transaction_id="t" * 36, created_at=now,
                expires_at=now + timedelta(minutes=3), next_poll_at=now,
            )
        )  # fmt: skip
        registration = uow.session.scalars(select(Registration)).one()
        evidence = {**(registration.evidence or {}), "mobile_id": {"national_id_hash": sent}}
        uow.session.execute(
            update(Registration).where(Registration.id == registration.id).values(evidence=evidence)
        )
        uow.commit()


def keyed_values(app: App) -> dict[str, list[Any]]:
    """Every stored keyed hash, by :data:`KEYED_COLUMNS` name, in a stable order."""
    with app.database.unit_of_work() as uow:
        s = uow.session
        registrations = s.execute(
            select(Registration.data, Registration.evidence).order_by(Registration.id)
        ).all()
        return {
            "accounts.national_id_hash": list(
                s.scalars(select(Account.national_id_hash).order_by(Account.id))
            ),
            "certificates.national_id_hash": list(
                s.scalars(select(Certificate.national_id_hash).order_by(Certificate.id))
            ),
            "certificates.query_key": list(
                s.scalars(select(Certificate.query_key).order_by(Certificate.id))
            ),
            "registrations.data.national_id_hash": [
                data.get("national_id_hash") for data, _ in registrations
            ],
            "registrations.evidence.mobile_id.national_id_hash": [
                ((evidence or {}).get("mobile_id") or {}).get("national_id_hash")
                for _, evidence in registrations
            ],
            "mobile_id_tickets.national_id_hash": list(
                s.scalars(select(MobileIdTicket.national_id_hash))
            ),
            "mobile_id_tickets.subject_hash": list(s.scalars(select(MobileIdTicket.subject_hash))),
            "rate_limits.key": sorted(s.scalars(select(RateLimitWindow.key))),
        }


def versions(app: App) -> list[int]:
    with app.database.unit_of_work() as uow:
        return list(uow.session.scalars(select(Registration.version).order_by(Registration.id)))


def marker_row(app: App) -> tuple[str, str, int]:
    with app.database.unit_of_work() as uow:
        row = uow.session.scalars(select(SecretKeyCheck)).one()
        return row.marker, row.fingerprint, row.key_count


def chain(keys: list[bytes], kind: str, value: str) -> str:
    """The keyed hash by its definition (hashing.py's docstring), with hmac alone."""
    digest = hmac.new(keys[0], f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    for key in keys[1:]:
        digest = hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()
    return digest


def lookups(app: App) -> dict[str, Any]:
    """What the lookups by national ID find: 通關憑證查詢's rows, the account whose hash is
    the ID's under the app's keyring, and the customs certificates its owner may delete."""
    rows = app.customs.query(NATIONAL_ID)
    with app.database.unit_of_work() as uow:
        wanted = app.identifiers.hash("national_id", NATIONAL_ID)
        names = list(
            uow.session.scalars(select(Account.name).where(Account.national_id_hash == wanted))
        )
        ids = list(uow.session.scalars(select(Certificate.id).order_by(Certificate.id)))
    return {
        "query": [(r.form, r.purpose, r.info) for r in rows],
        "accounts": names,
        "certificates": len(ids),
    }


# -- the chain -----------------------------------------------------------------------------------


def test_one_key_gives_the_plain_hmac_of_before_keyrings() -> None:
    """Byte-compatible: a one-key keyring hashes as ``HMAC-SHA256(key, kind:value)`` did, so
    existing databases keep their lookups; more keys chain, oldest innermost."""
    k1, k2, k3 = (bytes([n]) * 32 for n in (1, 2, 3))
    plain = hmac.new(k1, b"national_id:A123456789", hashlib.sha256).hexdigest()
    assert IdentifierHasher(k1).hash("national_id", NATIONAL_ID) == plain
    two = IdentifierHasher(k1, k2).hash("national_id", NATIONAL_ID)
    assert two == hmac.new(k2, plain.encode("ascii"), hashlib.sha256).hexdigest()
    assert two == rewrap(k2, plain) == chain([k1, k2], "national_id", NATIONAL_ID)
    three = IdentifierHasher(k1, k2, k3).hash("national_id", NATIONAL_ID)
    assert three == chain([k1, k2, k3], "national_id", NATIONAL_ID)
    assert IdentifierHasher(k1).extended(k2).keys == (k1, k2)
    assert (
        repr(IdentifierHasher(k1, k2)) == f"IdentifierHasher(keys=2, newest={key_fingerprint(k2)})"
    )
    with pytest.raises(ValueError):
        rewrap(k2, "not a keyed hash")


def test_a_key_file_with_one_key_keeps_the_hashes_of_a_database_made_before_the_key_check(
    setup: Setup,
) -> None:
    """A database of before the ``secret_key_check`` table (taken back to revision 0010) keeps
    its one-key hashes; its next start migrates it, adopts the keyring's marker and finds what
    it found."""
    (key,) = [bytes.fromhex(line) for line in setup.key_file.read_text().split()]
    before, found = keyed_values(setup.app), lookups(setup.app)
    assert before["accounts.national_id_hash"] == [
        hmac.new(key, b"national_id:A123456789", hashlib.sha256).hexdigest()
    ]
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with setup.app.database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0010")
    again = setup.open()
    assert marker_row(again) == (chain([key], "secret_key_check", "swreg"), key_fingerprint(key), 1)
    assert (keyed_values(again), lookups(again)) == (before, found)


# -- swreg keys rotate --------------------------------------------------------------------------


def login(app: App, card: IssuedCard) -> str:
    """憑證登入 with ``card``: the session token."""
    challenge = app.logins.issue_challenge(origin=ORIGIN)
    signer = KeyCard(card)
    signer.verify_pin(PIN)
    response = CardResponse(
        challenge_id=challenge.id, certificate=card.der(),
        signature=signer.sign(challenge.payload), chain=card.chain_der(),
    )  # fmt: skip
    return app.logins.login(response, origin=ORIGIN).token


def signing_ids(app: App) -> list[int]:
    """The customs (signing) certificates: the broker's."""
    with app.database.unit_of_work() as uow:
        query = select(Certificate.id).where(Certificate.purpose == "signing")
        return list(uow.session.scalars(query))


def login_counts(app: App) -> dict[str, int]:
    with app.database.unit_of_work() as uow:
        rows = uow.session.execute(select(RateLimitWindow.key, RateLimitWindow.count))
        return {key: count for key, count in rows if key.startswith("account:")}


def test_the_lookups_find_the_same_rows_after_a_rotation(setup: Setup) -> None:
    """通關憑證查詢 by 身分證字號, the account found by its ID hash, the broker's ownership of
    their customs certificate and the per-account login count all carry on under the new
    keyring."""
    found = lookups(setup.app)
    assert found["query"] and found["accounts"] == [EMAIL]
    setup.app.secret_keys.rotate()
    rotated = setup.open()
    assert len(rotated.identifiers.keys) == 2
    assert lookups(rotated) == found
    session = rotated.logins.session(login(rotated, setup.person))
    signing = signing_ids(rotated)
    assert len(signing) == 1 and rotated.customs.deletable(signing, session) == set(signing)
    account_hash = rotated.identifiers.hash("account", EMAIL)
    assert login_counts(rotated) == {f"account:login:{account_hash}": 2}  # 1 before, 1 after


def test_stored_hashes_are_the_chain_and_the_old_key_alone_does_not_make_them(
    setup: Setup,
) -> None:
    """Every stored keyed hash becomes ``HMAC(k2, h)``: the chain of both keys, which neither
    the old key (the leaked one) nor the new one alone reproduces. One audit row, no key
    material in it; the chain of the audit log still verifies."""
    (old,) = [bytes.fromhex(line) for line in setup.key_file.read_text().split()]
    before, before_versions = keyed_values(setup.app), versions(setup.app)
    assert set(before) == set(KEYED_COLUMNS)
    assert all(before.values()), before  # every kind of keyed hash is there to rewrite
    rotation = setup.app.secret_keys.rotate()
    keys = [bytes.fromhex(line) for line in setup.key_file.read_text().split()]
    assert keys[0] == old and len(keys) == 2
    new = keys[1]
    after = keyed_values(setup.app)

    def wrapped(value: Any) -> Any:
        return rewrap(new, value) if isinstance(value, str) and len(value) == 64 else value

    def wrapped_key(key: str) -> str:
        head, _, digest = key.rpartition(":")
        return f"{head}:{rewrap(new, digest)}" if key.startswith("account:") else key

    expected = {name: [wrapped(v) for v in values] for name, values in before.items()}
    expected["rate_limits.key"] = sorted(wrapped_key(k) for k in before["rate_limits.key"])
    assert after == expected
    person = chain([old, new], "national_id", NATIONAL_ID)
    assert after["accounts.national_id_hash"] == [person]
    assert IdentifierHasher(old).hash("national_id", NATIONAL_ID) not in str(after)
    assert IdentifierHasher(new).hash("national_id", NATIONAL_ID) not in str(after)
    assert versions(setup.app) == [v + 1 for v in before_versions]
    assert marker_row(setup.app) == (
        chain([old, new], "secret_key_check", "swreg"),
        key_fingerprint(new),
        2,
    )
    assert rotation.as_dict() == {
        "fingerprint": key_fingerprint(new),
        "previous_fingerprint": key_fingerprint(old),
        "keys": 2,
        "rewritten": {
            "accounts": 1, "certificates": 2, "registrations": 1, "mobile_id_tickets": 1,
            "rate_limits": 1,
        },
        "key_file": str(setup.key_file),
    }  # fmt: skip
    diffs = audit_diffs(setup.app, ROTATED_EVENT)
    assert diffs == [{k: v for k, v in rotation.as_dict().items() if k != "key_file"}]
    assert old.hex() not in str(diffs) and new.hex() not in str(diffs)
    assert setup.app.audit.verify().ok
    assert stat.S_IMODE(setup.key_file.stat().st_mode) == 0o600
    assert not next_file(setup).exists()


def audit_diffs(app: App, event: str) -> list[dict[str, Any]]:
    with app.database.unit_of_work() as uow:
        found = uow.session.scalars(
            select(AuditEntry.diff).where(AuditEntry.event == event).order_by(AuditEntry.seq)
        )
        return [dict(diff) for diff in found]


def next_file(setup: Setup) -> Path:
    return setup.key_file.with_name(setup.key_file.name + ".next")


def refuse_certificate_updates(app: App) -> None:
    """A trigger that fails every UPDATE of ``certificates``: a real database error in the
    middle of a rotation (the accounts are rewritten before the certificates)."""
    with app.database.engine.begin() as connection:
        if ON_POSTGRESQL:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_update() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON certificates "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_update()"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON certificates "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )


def test_a_rotation_failing_in_the_database_changes_neither_rows_nor_key_file(
    setup: Setup,
) -> None:
    key_text = setup.key_file.read_bytes()
    before = (keyed_values(setup.app), versions(setup.app), marker_row(setup.app))
    refuse_certificate_updates(setup.app)
    with pytest.raises(EnvironmentProblem) as refused:
        setup.app.secret_keys.rotate()
    assert refused.value.code is ErrorCode.DATABASE_UNAVAILABLE
    assert "rolled back" in str(refused.value.detail)
    assert (keyed_values(setup.app), versions(setup.app), marker_row(setup.app)) == before
    assert setup.key_file.read_bytes() == key_text
    assert not next_file(setup).exists()
    assert audit_diffs(setup.app, ROTATED_EVENT) == []
    assert lookups(setup.open()) == lookups(setup.app)  # the old keyring still opens it


def test_a_leftover_next_key_file_refuses_a_rotation_and_changes_nothing(setup: Setup) -> None:
    """``<key file>.next`` of a rotation that stopped before its commit (or of one running):
    the database is still under the key file, so it opens; a rotation is refused until an
    operator removes it."""
    next_file(setup).write_text(secrets.token_hex(32) + "\n")
    key_text, before = setup.key_file.read_bytes(), keyed_values(setup.app)
    with pytest.raises(EnvironmentProblem) as refused:
        setup.app.secret_keys.rotate()
    assert "exists: another swreg keys rotate is running" in str(refused.value.detail)
    assert (setup.key_file.read_bytes(), keyed_values(setup.app)) == (key_text, before)
    assert lookups(setup.open()) == lookups(setup.app)


def test_a_rotation_stopped_between_commit_and_rename_is_finished_by_the_next_start(
    setup: Setup,
) -> None:
    """The state a crash right after the commit leaves: the database under the new keyring,
    the key file still the old one, ``.next`` holding the new keyring. The next start installs
    ``.next`` and finds everything."""
    old_text = setup.key_file.read_bytes()
    found = lookups(setup.app)
    setup.app.secret_keys.rotate()
    new_text = setup.key_file.read_bytes()
    setup.key_file.write_bytes(old_text)
    next_file(setup).write_bytes(new_text)
    again = setup.open()
    assert (setup.key_file.read_bytes(), next_file(setup).exists()) == (new_text, False)
    assert len(again.identifiers.keys) == 2
    assert lookups(again) == found


# -- the key check ------------------------------------------------------------------------------


def test_starting_with_the_old_keyring_after_a_rotation_is_refused(
    setup: Setup, tmp_path: Path
) -> None:
    """The old key file (a machine not updated), the new key alone, a brand-new key file on the
    existing database: each refused at start with ``database_unavailable`` naming the keyring
    and the database's by fingerprint; the rotated key file still opens it."""
    old_file = tmp_path / "old.key"
    old_file.write_bytes(setup.key_file.read_bytes())
    (old,) = [bytes.fromhex(line) for line in old_file.read_text().split()]
    setup.app.secret_keys.rotate()
    new = bytes.fromhex(setup.key_file.read_text().split()[1])
    for wrong in (
        replace(setup.settings, secret_key_file=old_file),
        replace(setup.settings, secret_key_file=None, secret_keys=(new,)),
        replace(setup.settings, secret_key_file=tmp_path / "fresh.key"),
    ):
        with pytest.raises(EnvironmentProblem) as refused:
            setup.open(wrong)
        assert refused.value.code is ErrorCode.DATABASE_UNAVAILABLE
        detail = str(refused.value.detail)
        assert detail.startswith("secret key does not match: ")
        assert f"this database's keyring has 2, newest {key_fingerprint(new)}" in detail
        assert old.hex() not in detail and new.hex() not in detail
    assert "there was no key file" in detail and not (tmp_path / "fresh.key").exists()
    chained = replace(setup.settings, secret_key_file=None, secret_keys=(old, new))
    assert len(setup.open(chained).identifiers.keys) == 2  # the environment's keyring


def test_readyz_says_the_secret_key_does_not_match_after_a_rotation_under_it(
    setup: Setup, clock: FixedClock
) -> None:
    """A portal still running with the old keyring when the rotation ran: ``/readyz`` names
    the database check ``secret key does not match`` (its lookups find nothing any more)."""
    with TestClient(create_app(setup.app)) as client:
        assert client.get("/readyz").json()["checks"]["database"] == "ok"
        setup.open().secret_keys.rotate()
        clock.advance(timedelta(seconds=6))  # past the readiness cache
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "secret key does not match"
    with TestClient(create_app(setup.open())) as restarted:
        assert restarted.get("/readyz").json()["checks"]["database"] == "ok"


def test_rotating_needs_a_new_and_long_enough_key(setup: Setup) -> None:
    (old,) = [bytes.fromhex(line) for line in setup.key_file.read_text().split()]
    for key, detail in ((b"k" * 31, "32 bytes or more"), (old, "in the keyring")):
        with pytest.raises(RefusedError) as refused:
            setup.app.secret_keys.rotate(key)
        assert (refused.value.code, refused.value.field, refused.value.detail) == (
            ErrorCode.INVALID_VALUE, "new_key", detail,
        )  # fmt: skip
    environment = replace(setup.settings, secret_key_file=None, secret_keys=(old,))
    with pytest.raises(UsageError):
        setup.open(environment).secret_keys.rotate()  # no key it could only print
    assert not next_file(setup).exists() and audit_diffs(setup.app, ROTATED_EVENT) == []


# -- the command ---------------------------------------------------------------------------------


def swreg(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [SWREG, *args, "--json"], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def test_swreg_keys_rotate_with_a_key_file(setup: Setup) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env |= {"SWREG_DATABASE_URL": setup.settings.database_url,
            "SWREG_SECRET_KEY_FILE": str(setup.key_file)}  # fmt: skip
    (old,) = [bytes.fromhex(line) for line in setup.key_file.read_text().split()]
    code, shown, _ = swreg(env, "keys", "show")
    assert (code, shown) == (0, {
        "ok": True, "keys": 1, "fingerprint": key_fingerprint(old),
        "source": f"key file {setup.key_file}", "database_keys": 1,
        "database_fingerprint": key_fingerprint(old), "matches": True,
    })  # fmt: skip
    code, rotated, stderr = swreg(env, "keys", "rotate")
    new = bytes.fromhex(setup.key_file.read_text().split()[1])
    assert (code, rotated) == (0, {
        "ok": True, "fingerprint": key_fingerprint(new),
        "previous_fingerprint": key_fingerprint(old), "keys": 2,
        "rewritten": {"accounts": 1, "certificates": 2, "registrations": 1,
                      "mobile_id_tickets": 1, "rate_limits": 1},
        "key_file": str(setup.key_file),
    }), stderr  # fmt: skip
    assert setup.key_file.read_text() == f"{old.hex()}\n{new.hex()}\n"
    assert new.hex() not in stderr
    stale = env | {"SWREG_SECRET_KEY_FILE": str(setup.key_file) + ".old"}
    Path(stale["SWREG_SECRET_KEY_FILE"]).write_text(old.hex() + "\n")
    code, refused, _ = swreg(stale, "keys", "show")
    assert (code, [e["code"] for e in refused["errors"]]) == (3, ["database_unavailable"])
    assert "secret key does not match" in refused["errors"][0]["detail"]


def test_swreg_keys_rotate_with_the_keyring_in_the_environment(
    setup: Setup, tmp_path: Path
) -> None:
    """``SWREG_SECRET_KEY``: no file is written; without ``--new-key-file`` the command is a
    usage error (exit 2) and changes nothing; with it the database is rotated and the new
    keyring is the old value, a comma and the new key."""
    (old,) = [bytes.fromhex(line) for line in setup.key_file.read_text().split()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env |= {"SWREG_DATABASE_URL": setup.settings.database_url, "SWREG_SECRET_KEY": old.hex()}
    before = keyed_values(setup.app)
    code, refused, _ = swreg(env, "keys", "rotate")
    assert (code, [e["code"] for e in refused["errors"]]) == (2, ["usage"])
    assert keyed_values(setup.app) == before
    new = secrets.token_bytes(32)
    new_file = tmp_path / "new.key"
    new_file.write_text(new.hex() + "\n")
    code, rotated, _ = swreg(env, "keys", "rotate", "--new-key-file", str(new_file))
    assert (code, rotated["key_file"], rotated["fingerprint"]) == (0, None, key_fingerprint(new))
    assert not list(tmp_path.glob("*.next"))
    code, shown, _ = swreg(env | {"SWREG_SECRET_KEY": keyring_text((old, new))}, "keys", "show")
    assert (code, shown["matches"], shown["source"]) == (0, True, "SWREG_SECRET_KEY")
    code, _, _ = swreg(env, "keys", "show")  # the old value alone
    assert code == 3


def test_a_csrf_token_issued_before_a_rotation_is_refused_once_and_replaced(
    setup: Setup,
) -> None:
    """CSRF tokens are HMACs under the keyring: one issued before the rotation is 403
    ``csrf_failed`` after it, and that answer already sets a token the new keyring issued."""
    with TestClient(create_app(setup.app)) as before:
        token = before.get("/api/csrf").json()["token"]
    setup.app.secret_keys.rotate()
    rotated = setup.open()
    with TestClient(create_app(rotated)) as after:
        after.cookies.set(CSRF_COOKIE, token)
        refused = after.post("/api/registrations", json=START, headers={"X-CSRF-Token": token})
        fresh = refused.cookies[CSRF_COOKIE]
        after.cookies.clear()
        after.cookies.set(CSRF_COOKIE, fresh)
        made = after.post("/api/registrations", json=START, headers={"X-CSRF-Token": fresh})
    assert (refused.status_code, refused.json()["errors"][0]["code"]) == (403, "csrf_failed")
    assert fresh != token and issued_csrf_token(rotated.identifiers, fresh)
    assert made.status_code == 201


# -- docs/operations.md ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Rotating SWREG_SECRET_KEY"


def rotation_section_commands() -> list[str]:
    """The ``sh`` blocks of the section, in order."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("\n" + SECTION + "\n", 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


@sqlite_only  # the drill's own SQLite databases, whatever the suite runs on
def test_the_rotation_drill_of_operations_md(tmp_path: Path) -> None:
    """Every command of "Rotating SWREG_SECRET_KEY", verbatim, in one bash with ``set -euo
    pipefail``, from the checkout, no ``SWREG_*`` inherited, ``TMPDIR`` the test's: a rotation
    with a key file, the old key file refused (exit 3), a rotation of a keyring in the
    environment."""
    blocks = rotation_section_commands()
    assert len(blocks) == 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    shown = [line for line in done.stdout.splitlines() if line.startswith("使用中 / in use")]
    assert [line.split(",")[0] for line in shown] == [
        "使用中 / in use: 1 把金鑰 / keys",
        "使用中 / in use: 2 把金鑰 / keys",
        "使用中 / in use: 2 把金鑰 / keys",
    ]
    assert shown[2].endswith("(SWREG_SECRET_KEY)")
    assert "refused: exit 3" in done.stdout.splitlines()
    refusal = "✗ database_unavailable: 資料庫無法使用 / The database is not available"
    assert f"{refusal} (secret key does not match" in done.stderr
    (work,) = [path.parent for path in tmp_path.rglob("swreg.db.key")]
    assert len(read_key_lines(work / "swreg.db.key")) == 2
    assert not list(work.glob("*.next")) and not (work / "new.key").exists()


def read_key_lines(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").split()
