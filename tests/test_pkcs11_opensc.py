"""The PKCS#11 bridge (``readers.pkcs11``) with OpenSC's module and the virtual PIV card.

The second real token of issue 15 item 2 (the first is SoftHSM2, tests/test_pkcs11.py): the
virtual PIV card (``readers.vcard.PivApplet``) sits in a vpcd reader of the real pcscd
(``scripts/with-pcscd``) and ``/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so`` — PIV software
written by others — drives it, loaded by python-pkcs11 in this process, in ``swreg``
subprocesses and in the card agent. This is the only token of the suite that counts wrong PINs
and locks, so the codes are asserted exactly.

What OpenSC shows that SoftHSM2 does not: the card's one certificate twice (ID 01 for slot 9A,
ID 02 for 9C), the 9C key with ``CKA_ALWAYS_AUTHENTICATE`` (a VERIFY before each use), the
token label taken from the certificate's subject, and PIN-try flags from the card's counter
(none at two tries left, ``CKF_USER_PIN_FINAL_TRY`` at one, ``CKF_USER_PIN_LOCKED`` at none).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pkcs11 as p11lib
import pytest
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from engine import CardError, challenge_payload
from engine.cli import app as cli_app
from engine.testing.pki import IssuedCard, KeyType, TestPKI
from readers import ReaderInfo, open_card
from readers.pkcs11 import list_tokens
from readers.vcard import RetryState

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET, FreshDatabase
from .test_agent import ORIGIN, call, client, with_agent
from .test_agent import _config as agent_config
from .test_agent import verify as verify_der
from .test_opensc_piv import (
    KEY_TYPES,
    PIN,
    WRONG_PIN,
    Insert,
    RecordingApplet,
    cards,  # noqa: F401  (fixture)
    opensc,  # noqa: F401  (fixture)
    reader,  # noqa: F401  (fixture)
    recording,
)

SWREG = str(Path(sys.executable).parent / "swreg")
OPENSC = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
MESSAGE = b"a registration challenge, signed through opensc-pkcs11.so"
VERIFY = bytes.fromhex("00200080")  # VERIFY of the PIV card PIN


@pytest.fixture(autouse=True, scope="module")
def release_the_readers() -> Iterator[None]:
    """OpenSC's module, loaded once per process, keeps its PC/SC card handles until
    C_Finalize: release them when this module is done, so that later tests (in any order) find
    the vpcd readers free ("Sharing violation" otherwise). A later use initialises it again."""
    yield
    loaded = p11lib._loaded.get(OPENSC)
    if loaded is not None and loaded.initialized:
        loaded.finalize()


@pytest.fixture(autouse=True)
def opensc_home(opensc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """OpenSC installed (the fixture fails otherwise), with a home of the test's own."""
    assert str(opensc) == OPENSC
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))


def the_token(name: str) -> ReaderInfo:
    """The one token OpenSC shows in reader ``name``."""
    found = [t for t in list_tokens([OPENSC]) if t.card_present and t.name == name]
    assert len(found) == 1, list_tokens([OPENSC])
    return found[0]


def general_authenticate_starts(applet: RecordingApplet) -> list[int]:
    """The index of each GENERAL AUTHENTICATE's first APDU (the chained rest skipped)."""
    return [
        i
        for i, (apdu, _) in enumerate(applet.exchanges)
        if apdu[1] == 0x87 and not (i and applet.exchanges[i - 1][0][:2] == bytes([0x10, 0x87]))
    ]


# -- listing -------------------------------------------------------------------------------------


def test_readers_list_shows_the_piv_token_with_swreg_pkcs11_modules(
    reader: Insert,  # noqa: F811
    cards: dict[KeyType, IssuedCard],  # noqa: F811
    vpcd_readers: list[tuple[str, int]],
) -> None:
    card = cards["ec"]
    env = {**os.environ, "SWREG_PKCS11_MODULES": OPENSC}
    with reader(recording(card)) as name:
        done = subprocess.run(
            [SWREG, "readers", "list", "--json"], capture_output=True, text=True, env=env,
            timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["readers"]
    empty = vpcd_readers[1][0]
    label = card.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert label == "王小明"  # OpenSC labels a PIV token with its certificate's common name
    spec = f"pkcs11:token={quote(str(label), safe='')}?module-path={OPENSC}"
    expected_pcsc = [
        {"name": name, "card_present": True, "profile": "piv", "bridge": "pcsc", "token": None,
         "spec": None},
        {"name": empty, "card_present": False, "profile": None, "bridge": "pcsc", "token": None,
         "spec": None},
    ]  # fmt: skip
    assert [r for r in shown if r["bridge"] == "pcsc"] == expected_pcsc
    # OpenSC gives each PC/SC reader a slot named after it; the card's token in the first
    tokens = [r for r in shown if r["bridge"] == "pkcs11"]
    assert tokens == [
        {"name": name, "card_present": True, "profile": None, "bridge": "pkcs11",
         "token": label, "spec": spec},
        {"name": empty, "card_present": False, "profile": None, "bridge": "pkcs11",
         "token": None, "spec": None},
    ]  # fmt: skip


# -- the card ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_reads_the_9c_certificate_and_signs(
    reader: Insert,  # noqa: F811
    cards: dict[KeyType, IssuedCard],  # noqa: F811
    key_type: KeyType,
) -> None:
    card = cards[key_type]
    applet = recording(card)
    with reader(applet) as name:
        token = the_token(name)
        assert token.spec is not None
        with open_card(token.spec) as opened:
            assert opened.read_certificate() == card.der()  # before the PIN
            assert opened.read_chain() == ()  # the card holds no CA certificate
            opened.verify_pin(PIN)
            assert opened.read_certificate() == card.der()
            signatures = [opened.sign(MESSAGE + b"%d" % i) for i in range(2)]
    for i, signature in enumerate(signatures):
        verify_der(card.der(), signature, MESSAGE + b"%d" % i)
    if key_type == "rsa":
        assert len(signatures[0]) == 256
    else:
        assert signatures[0][0] == 0x30  # DER, not OpenSC's raw r||s
    # The signature key (9C, ID 02) was used, never 9A, each time after a VERIFY: the bridge's
    # C_Login(CKU_CONTEXT_SPECIFIC) for a CKA_ALWAYS_AUTHENTICATE key.
    firsts = general_authenticate_starts(applet)
    assert [applet.exchanges[i][0][3] for i in firsts] == [0x9C, 0x9C]
    for i in firsts:
        before, answer = applet.exchanges[i - 1]
        assert (before[:4], answer.sw) == (VERIFY, 0x9000)
    assert applet.applet.state.tries_left == 3


def test_wrong_pins_report_tries_then_card_locked(
    reader: Insert,  # noqa: F811
    cards: dict[KeyType, IssuedCard],  # noqa: F811
    tmp_path: Path,
) -> None:
    state = RetryState.file(tmp_path / "tries.json")
    applet = recording(cards["ec"], state)
    outcomes: list[tuple[str, Any, int]] = []
    with reader(applet) as name:
        token = the_token(name)
        assert token.spec is not None
        with open_card(token.spec) as opened:
            for pin in (WRONG_PIN, PIN, WRONG_PIN, WRONG_PIN, WRONG_PIN, PIN):
                try:
                    opened.verify_pin(pin)
                    verify_der(cards["ec"].der(), opened.sign(MESSAGE), MESSAGE)
                    outcomes.append(("signed", None, state.tries_left))
                except CardError as exc:
                    outcomes.append((exc.code, exc.details.get("tries_left"), state.tries_left))
            with pytest.raises(CardError) as unsigned:
                opened.sign(MESSAGE)
    assert outcomes == [
        ("pin_incorrect", None, 2),  # OpenSC flags nothing at two tries left of three
        ("signed", None, 3),  # the right PIN refills the counter
        ("pin_incorrect", None, 2),
        ("pin_incorrect", 1, 1),  # CKF_USER_PIN_FINAL_TRY
        ("card_locked", None, 0),  # the wrong PIN that locked the card
        ("card_locked", None, 0),  # even the right PIN: not sent to the card
    ]
    assert (unsigned.value.code, unsigned.value.detail) == ("card_error", "PIN not verified")
    verifies = [answer.sw for apdu, answer in applet.exchanges if apdu[:4] == VERIFY and apdu[4:]]
    assert verifies[-1] == 0x63C0  # once locked, no PIN was sent to the card


# -- the CLI -------------------------------------------------------------------------------------


def _swreg(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, Any]:
    done = subprocess.run(
        [SWREG, *args, "--json"], input=stdin, capture_output=True, text=True, env=env,
        timeout=180, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else done.stderr


@pytest.fixture
def cli_env(pki: TestPKI, tmp_path: Path, fresh_database: FreshDatabase) -> dict[str, str]:
    env = {
        **os.environ,
        "SWREG_DATABASE_URL": fresh_database(migrated=False, directory=tmp_path),
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_ARGON2": "1,64,1",
    }
    assert _swreg(env, "init")[0] == 0
    for command in pki.trust_commands(tmp_path / "trusted"):  # in-process: quicker
        result = CliRunner().invoke(cli_app, [*command, "--json"], env=env)
        assert result.exit_code == 0, result.stdout
    return env


@pytest.mark.parametrize(
    ("key_type", "type_code", "answers", "account"),
    [
        ("rsa", "person.general", PERSON_ANSWERS, "ming@example.com"),
        ("ec", "enterprise.general", COMPANY_ANSWERS, "04595257"),
    ],
)
def test_register_through_the_cli_with_opensc(
    cli_env: dict[str, str], pki: TestPKI, reader: Insert, tmp_path: Path,  # noqa: F811
    key_type: KeyType, type_code: str, answers: dict[str, Any], account: str,
) -> None:  # fmt: skip
    card = (
        pki.issue_person("王小明", "6789", key=key_type)
        if key_type == "rsa"
        else pki.issue_company("04595257", key=key_type)
    )
    answers_file = tmp_path / "answers.json"
    answers_file.write_text(json.dumps(answers), encoding="utf-8")
    state = RetryState.file(tmp_path / "tries.json")
    with reader(recording(card, state)) as name:
        spec = the_token(name).spec
        assert spec is not None and spec.endswith(f"?module-path={OPENSC}")
        args = ("register", "--type", type_code, "--answers", str(answers_file), "--card", spec,
                "--pin-stdin")  # fmt: skip
        wrong = _swreg(cli_env, *args, stdin=WRONG_PIN + "\n")
        after_wrong = _swreg(cli_env, "registrations", "list")[1]["registrations"]
        right = _swreg(cli_env, *args, stdin=PIN + "\n")
    code, out = wrong
    assert code == 1, out
    assert [(e["code"], e["tries_left"]) for e in out["errors"]] == [("pin_incorrect", None)]
    # the refused check stored no identity and no evidence; the registration is cancelled
    assert [(r["state"], r["account"], r["identity"], r["evidence"]) for r in after_wrong] == [
        ("cancelled", None, {}, {})
    ]
    code, out = right
    assert code == 0, out
    assert (out["account"], out["state"], out["type"]) == (account, "completed", type_code)
    assert state.tries_left == 3
    stored = _swreg(cli_env, "registrations", "list")[1]["registrations"]
    assert [r["id"] for r in stored[:1]] == [after_wrong[0]["id"]]
    assert [(r["id"], r["state"], r["account"]) for r in stored[1:]] == [
        (out["registration_id"], "completed", account)
    ]
    evidence = stored[1]["evidence"]
    assert (evidence["fingerprint"], evidence["serial"], evidence["origin"]) == (
        hashlib.sha256(card.der()).hexdigest(),
        f"{card.certificate.serial_number:X}",
        "urn:swreg:cli",
    )


# -- the agent -----------------------------------------------------------------------------------


def test_the_agent_signs_with_the_piv_card_through_opensc(
    reader: Insert,  # noqa: F811
    cards: dict[KeyType, IssuedCard],  # noqa: F811
) -> None:
    card = cards["rsa"]
    config = agent_config(card_schemes=frozenset({"pcsc"}), pkcs11_modules=(OPENSC,))
    payload = challenge_payload(ORIGIN, "reg-opensc", b"n" * 32)

    async def body(uri: str) -> list[dict[str, Any]]:
        async with client(uri) as ws:
            listed = await call(ws, {"id": 1, "op": "list_readers"})
            tokens = [r for r in listed["readers"] if r["bridge"] == "pkcs11" and r["spec"]]
            assert len(tokens) == 1, listed
            spec = tokens[0]["spec"]
            request = {"op": "sign", "card": spec, "data": base64.b64encode(payload).decode()}
            wrong = await call(ws, {**request, "id": 2, "pin": WRONG_PIN})
            signed = await call(ws, {**request, "id": 3, "pin": PIN})
            other = spec.replace(OPENSC, SOFTHSM)
            refused = await call(ws, {**request, "id": 4, "card": other, "pin": PIN})
            return [listed, wrong, signed, refused]

    with reader(recording(card)) as name:
        listed, wrong, signed, refused = with_agent(config, body)
    shown = [r for r in listed["readers"] if r["bridge"] == "pkcs11" and r["name"] == name]
    assert [(r["token"], r["card_present"]) for r in shown] == [("王小明", True)]
    assert any(r["bridge"] == "pcsc" and r["name"] == name for r in listed["readers"])
    assert wrong["ok"] is False
    assert (wrong["error"]["code"], wrong["error"]["tries_left"]) == ("pin_incorrect", None)
    assert signed["ok"] is True, signed
    assert base64.b64decode(signed["certificate"]) == card.der()
    assert signed["chain"] == []
    verify_der(card.der(), base64.b64decode(signed["signature"]), payload)
    assert refused["ok"] is False
    assert (refused["error"]["code"], refused["error"]["field"]) == ("invalid_value", "card")
