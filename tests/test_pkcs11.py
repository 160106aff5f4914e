"""The PKCS#11 bridge (``readers.pkcs11``) against a real token: SoftHSM2.

The tokens are made once per session, as RECIPES.md §7 shows: ``softhsm2-util --init-token`` in a
configuration of the test's own (``SOFTHSM2_CONF``), ``softhsm2-util --import`` for a test-PKI
card's key and ``pkcs11-tool --write-object`` for its certificates. Three tokens:

* ``rsa-card``: an RSA person card, its key and certificate (ID 01, label ``card``) and its two CA
  certificates;
* ``ec-card``: an EC (P-256) company card;
* ``two-certs``: an encryption certificate (keyEncipherment, ID 01) written before a signing one
  (digitalSignature + nonRepudiation, ID 02), both with their keys;
* ``two-signers``: two certificates that may both sign (digitalSignature), IDs 01 and 02.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11 as p11lib
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from typer.testing import CliRunner

from engine import CardError, EnvironmentProblem, UsageError
from engine.cli import app as cli_app
from engine.testing.pki import IssuedCard, TestPKI
from readers import ReaderInfo, list_readers, open_card
from readers.pkcs11 import Pkcs11Uri, list_tokens, open_pkcs11, parse_uri

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS, PIN, SECRET, FreshDatabase

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
SO_PIN = "87654321"
SWREG = str(Path(sys.executable).parent / "swreg")


def uri(token: str, extra: str = "") -> str:
    return f"pkcs11:token={token}{extra}?module-path={SOFTHSM}"


@dataclass(frozen=True)
class Tokens:
    conf: Path
    rsa: IssuedCard
    ec: IssuedCard
    encryption: IssuedCard
    signature: IssuedCard
    signers: tuple[IssuedCard, IssuedCard]


def _run(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def _token(
    folder: Path, env: dict[str, str], label: str, objects: list[tuple[str, str, IssuedCard]],
    cas: tuple[bytes, ...] = (),
) -> None:  # fmt: skip
    """A token ``label`` holding each card's key and certificate (``id``, ``label``)."""
    _run("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
         "--so-pin", SO_PIN, env=env)  # fmt: skip
    tool = ("pkcs11-tool", "--module", SOFTHSM, "--token-label", label, "--login", "--pin", PIN)
    for key_id, name, card in objects:
        key = folder / f"{label}-{name}.key.pem"
        key.write_bytes(card.key_pem())
        _run("softhsm2-util", "--import", str(key), "--token", label, "--label", name,
             "--id", key_id, "--pin", PIN, env=env)  # fmt: skip
        key.unlink()
        cert = folder / f"{label}-{name}.der"
        cert.write_bytes(card.der())
        _run(*tool, "--write-object", str(cert), "--type", "cert", "--id", key_id,
             "--label", name, env=env)  # fmt: skip
    for i, der in enumerate(cas):
        cert = folder / f"{label}-ca{i}.der"
        cert.write_bytes(der)
        _run(*tool, "--write-object", str(cert), "--type", "cert", "--id", f"a{i}",
             "--label", f"ca{i}", env=env)  # fmt: skip


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> Iterator[Tokens]:
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    made = Tokens(
        conf=conf,
        rsa=pki.issue_person("王小明", "6789", key="rsa"),
        ec=pki.issue_company("04595257", key="ec"),
        encryption=pki.issue_person(key="rsa", key_usage=("key_encipherment", "data_encipherment")),
        signature=pki.issue_person(
            key="rsa", key_usage=("digital_signature", "content_commitment")
        ),
        signers=(pki.issue_person(key="ec"), pki.issue_person(key="ec")),
    )
    _token(folder, env, "rsa-card", [("01", "card", made.rsa)], made.rsa.chain_der())
    _token(folder, env, "ec-card", [("01", "card", made.ec)])
    _token(
        folder, env, "two-certs",
        [("01", "encryption", made.encryption), ("02", "signature", made.signature)],
    )  # fmt: skip
    _token(folder, env, "two-signers", [("01", "a", made.signers[0]), ("02", "b", made.signers[1])])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        loaded = p11lib._loaded.get(SOFTHSM)
        if loaded is not None:  # loaded by an earlier test: read this configuration anew
            loaded.reinitialize()
        yield made


def verify(card: IssuedCard, signature: bytes, message: bytes) -> None:
    key = card.certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


# -- URIs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        (
            "pkcs11:token=swreg-test;object=card?module-path=/usr/lib/softhsm/libsofthsm2.so",
            Pkcs11Uri(module_path=SOFTHSM, token="swreg-test", object="card"),
        ),
        # every token of the module: an empty path
        ("pkcs11:?module-path=/opt/p11/x.so", Pkcs11Uri(module_path="/opt/p11/x.so")),
        # id is %-escaped bytes; a token label with a space and a semicolon, escaped
        (
            "pkcs11:token=My%20Card%3B2;id=%01%a0%FF;slot-id=7;type=cert",
            Pkcs11Uri(token="My Card;2", id=b"\x01\xa0\xff", slot_id=7, type="cert"),
        ),
        # attribute names are case-insensitive; UTF-8 labels
        ("pkcs11:TOKEN=%E8%87%AA%E7%84%B6%E4%BA%BA", Pkcs11Uri(token="自然人")),
        (
            "pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=55b0",
            Pkcs11Uri(manufacturer="SoftHSM project", model="SoftHSM v2", serial="55b0"),
        ),
    ],
)
def test_uri_forms_that_parse(spec: str, parsed: Pkcs11Uri) -> None:
    assert parse_uri(spec) == parsed


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        # the PIN never comes from a spec (shell history, process lists)
        (
            f"pkcs11:token=t?module-path={SOFTHSM}&pin-value={PIN}",
            "pkcs11 URI: pin-value is refused: the PIN never comes from a card spec; "
            "it is asked for (or read with --pin-stdin)",
        ),
        (
            "pkcs11:token=t;pin-value=1234",
            "pkcs11 URI: pin-value is refused: the PIN never comes from a card spec; "
            "it is asked for (or read with --pin-stdin)",
        ),
        (
            "pkcs11:token=t?pin-source=file:/tmp/pin",
            "pkcs11 URI: pin-source is refused: the PIN never comes from a card spec; "
            "it is asked for (or read with --pin-stdin)",
        ),
        (
            "pkcs11:token=t?module-name=softhsm2",
            "pkcs11 URI: module-name is refused: name the module by its absolute path with "
            "module-path=",
        ),
        # a relative module path would be searched along LD_LIBRARY_PATH: never load that
        (
            "pkcs11:?module-path=libsofthsm2.so",
            "pkcs11 URI: module-path must be an absolute path, not 'libsofthsm2.so'",
        ),
        ("pkcs11:?module-path=", "pkcs11 URI: module-path must be an absolute path, not ''"),
        ("pkcs11:token=a;token=b", "pkcs11 URI: token appears twice"),
        ("pkcs11:id=%0", "pkcs11 URI: bad %-escape in id='%0'"),
        ("pkcs11:object=a%zzb", "pkcs11 URI: bad %-escape in object='a%zzb'"),
        ("pkcs11:token=%ff", "pkcs11 URI: token is not UTF-8"),
        ("pkcs11:slot-id=0x1", "pkcs11 URI: slot-id must be decimal, not '0x1'"),
        (
            "pkcs11:type=secret-key",
            "pkcs11 URI: type must be one of cert, private, public, not 'secret-key'",
        ),
        ("pkcs11:library-version=1", "pkcs11 URI: unsupported path attribute 'library-version'"),
        ("pkcs11:?token=x", "pkcs11 URI: unsupported query attribute 'token'"),
        ("pkcs11:token", "pkcs11 URI: 'token' is not NAME=VALUE"),
        ("pkcs11:token=a#frag", "pkcs11 URI: a fragment (#) is not allowed"),
    ],
)
def test_uri_forms_that_are_refused(spec: str, detail: str) -> None:
    with pytest.raises(UsageError) as caught:
        open_card(spec)
    assert (caught.value.code, caught.value.detail) == ("usage", detail)


def test_a_uri_without_module_needs_swreg_pkcs11_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWREG_PKCS11_MODULES", raising=False)
    with pytest.raises(UsageError) as caught:
        open_card("pkcs11:token=rsa-card")
    assert caught.value.detail == (
        "pkcs11 URI: give ?module-path=/path/to/module.so (or set SWREG_PKCS11_MODULES)"
    )


def test_a_missing_module_is_an_environment_problem(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        open_card(f"pkcs11:?module-path={tmp_path}/nothing.so")
    assert (caught.value.code, caught.value.detail) == (
        "no_reader",
        f"PKCS#11 module {tmp_path}/nothing.so not found; install its card software",
    )
    not_a_module = tmp_path / "libnot.so"
    not_a_module.write_bytes(b"\x7fELF but not really")
    with pytest.raises(EnvironmentProblem) as caught:
        open_card(f"pkcs11:?module-path={not_a_module}")
    assert (caught.value.code, caught.value.detail) == (
        "no_reader",
        f"PKCS#11 module {not_a_module} could not be loaded (PKCS11Error)",
    )


# -- tokens and listing -------------------------------------------------------------------------


def test_unknown_and_ambiguous_tokens(tokens: Tokens) -> None:
    slot = r"'SoftHSM slot ID 0x[0-9a-f]+' \(slot-id=[0-9]+\)"
    names = ("ec-card", "rsa-card", "two-certs", "two-signers")
    listed = "; ".join(f"'{name}' in {slot}" for name in names)
    with pytest.raises(EnvironmentProblem) as caught:
        open_card(uri("no-such-token"))
    assert caught.value.code == "no_card"
    assert re.fullmatch(f"no token matches the URI; tokens: {listed}", str(caught.value.detail))
    with pytest.raises(UsageError) as ambiguous:
        open_card(f"pkcs11:?module-path={SOFTHSM}")  # every token matches
    assert re.fullmatch(
        f"the URI matches several tokens \\({listed}\\); add token=LABEL",
        str(ambiguous.value.detail),
    )


def test_list_tokens_shows_each_slot_with_its_token(tokens: Tokens) -> None:
    found = list_tokens([SOFTHSM])
    present = {r.token: r for r in found if r.card_present}
    assert sorted(present) == ["ec-card", "rsa-card", "two-certs", "two-signers"]
    info = present["rsa-card"]
    assert (info.bridge, info.profile, info.spec) == (
        "pkcs11", None, f"pkcs11:token=rsa-card?module-path={SOFTHSM}",
    )  # fmt: skip
    assert info.name.startswith("SoftHSM slot ID 0x")
    # SoftHSM2 always offers one free slot: listed, but no card in it
    empty = [r for r in found if not r.card_present]
    assert [(r.bridge, r.token, r.spec) for r in empty] == [("pkcs11", None, None)]
    # the listed spec opens that token
    assert info.spec is not None
    with open_card(info.spec) as card:
        assert card.read_certificate() == tokens.rsa.der()


@pytest.mark.pcsc  # lists pcscd's readers too, probing their cards
def test_list_readers_adds_the_tokens_of_swreg_pkcs11_modules(
    tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWREG_PKCS11_MODULES", f" {SOFTHSM} ,")
    found = list_readers()  # pcscd running or not: the tokens are there
    assert {r.token for r in found if r.bridge == "pkcs11" and r.card_present} == {
        "ec-card", "rsa-card", "two-certs", "two-signers",
    }  # fmt: skip
    assert all(r.bridge == "pcsc" and r.token is None for r in found if r.bridge != "pkcs11")
    monkeypatch.setenv("SWREG_PKCS11_MODULES", "libsofthsm2.so")
    with pytest.raises(UsageError) as caught:
        list_readers()
    assert caught.value.detail == "SWREG_PKCS11_MODULES: 'libsofthsm2.so' is not an absolute path"


def test_reader_info_stays_compatible() -> None:
    """Code that built ReaderInfo with three fields still does; a PC/SC reader is ``pcsc``."""
    assert ReaderInfo("Virtual PCD 00 00", True, "piv") == ReaderInfo(
        name="Virtual PCD 00 00", card_present=True, profile="piv", bridge="pcsc"
    )


# -- the card -----------------------------------------------------------------------------------


def test_rsa_token_reads_verifies_and_signs(tokens: Tokens) -> None:
    with open_card(uri("rsa-card", ";object=card")) as card:
        assert card.label == f"pkcs11:token=rsa-card?module-path={SOFTHSM}"
        assert card.read_certificate() == tokens.rsa.der()  # before the PIN, as a card does
        assert card.read_chain() == tokens.rsa.chain_der()  # issuing CA first, then the root
        with pytest.raises(CardError) as caught:
            card.sign(b"challenge")
        assert (caught.value.code, caught.value.detail) == ("card_error", "PIN not verified")
        card.verify_pin(PIN)
        assert card.read_certificate() == tokens.rsa.der()
        signature = card.sign(b"challenge")
    assert len(signature) == 256
    verify(tokens.rsa, signature, b"challenge")


def test_ec_token_signs_der_ecdsa(tokens: Tokens) -> None:
    with open_card(uri("ec-card", ";id=%01")) as card:
        card.verify_pin(PIN)
        assert card.read_certificate() == tokens.ec.der()
        assert card.read_chain() == ()  # no CA certificate on this token
        signatures = [card.sign(b"challenge %d" % i) for i in range(3)]
    for i, signature in enumerate(signatures):
        assert signature[0] == 0x30  # DER SEQUENCE { r, s }, not the token's raw r||s
        verify(tokens.ec, signature, b"challenge %d" % i)


def test_wrong_pin_is_pin_incorrect_and_softhsm_never_locks(tokens: Tokens) -> None:
    with open_card(uri("ec-card")) as card:
        for _ in range(5):
            with pytest.raises(CardError) as caught:
                card.verify_pin("000000")
            # SoftHSM2 flags CKF_USER_PIN_COUNT_LOW only: no count to report
            assert (caught.value.code, caught.value.details) == (
                "pin_incorrect",
                {"tries_left": None},
            )
        with pytest.raises(CardError) as caught:
            card.sign(b"challenge")
        assert caught.value.detail == "PIN not verified"
        card.verify_pin(PIN)  # not locked after five wrong PINs
        verify(tokens.ec, card.sign(b"challenge"), b"challenge")


def test_closing_logs_the_token_out(tokens: Tokens) -> None:
    """After close, no session of the process may still see the private key."""
    card = open_card(uri("rsa-card"))
    card.verify_pin(PIN)
    card.sign(b"x")
    card.close()
    token = p11lib.lib(SOFTHSM).get_token(token_label="rsa-card")
    with token.open() as public:
        keys = list(public.get_objects({p11lib.Attribute.CLASS: p11lib.ObjectClass.PRIVATE_KEY}))
    assert keys == []
    with pytest.raises(CardError) as caught:
        card.read_certificate()
    assert caught.value.detail == "the card is closed"


def test_signing_certificate_chosen_by_key_usage(tokens: Tokens) -> None:
    """The encryption certificate comes first on the token; the signing one is chosen."""
    with open_card(uri("two-certs")) as card:
        assert card.read_certificate() == tokens.signature.der()  # before login: keyUsage
        card.verify_pin(PIN)
        assert card.read_certificate() == tokens.signature.der()  # after: keyUsage and CKA_SIGN
        verify(tokens.signature, card.sign(b"challenge"), b"challenge")
    # a URI naming the object wins over key usage (the card check then refuses the usage)
    with open_card(uri("two-certs", ";object=encryption")) as card:
        assert card.read_certificate() == tokens.encryption.der()
    with open_card(uri("two-certs", ";object=nothing")) as card, pytest.raises(CardError) as caught:
        card.read_certificate()
    assert caught.value.detail == "no certificate on the token matches object='nothing'"


def test_two_certificates_that_may_sign_need_an_object(tokens: Tokens) -> None:
    with open_card(uri("two-signers")) as card:
        card.verify_pin(PIN)
        with pytest.raises(UsageError) as caught:
            card.read_certificate()
        assert caught.value.detail == (
            "several certificates on the token fit ('a' (id 01), 'b' (id 02)); "
            "name one with object="
        )
    with open_card(uri("two-signers", ";object=b")) as card:
        card.verify_pin(PIN)
        assert card.read_certificate() == tokens.signers[1].der()
        verify(tokens.signers[1], card.sign(b"challenge"), b"challenge")


def test_a_token_logged_in_elsewhere_never_takes_a_wrong_pin(tokens: Tokens) -> None:
    """PKCS#11 login state is per token: while one card of the process is logged in, C_Login
    of another answers CKR_USER_ALREADY_LOGGED_IN without checking the PIN. That must not pass
    for a verified PIN."""
    with open_card(uri("ec-card")) as first, open_card(uri("ec-card")) as second:
        first.verify_pin(PIN)
        with pytest.raises(CardError) as caught:
            second.verify_pin("000000")
        assert (caught.value.code, caught.value.detail) == (
            "card_error", "the token is already logged in by another session of this program",
        )  # fmt: skip
        with pytest.raises(CardError) as unsigned:
            second.sign(b"challenge")
        assert unsigned.value.detail == "PIN not verified"


def test_only_allowed_modules_are_loaded(tokens: Tokens, tmp_path: Path) -> None:
    """A caller whose spec comes from elsewhere (the agent: a web page) names the modules it
    may load; a URI naming another library is refused before anything is loaded."""
    evil = tmp_path / "libevil.so"
    evil.write_bytes(b"")
    with pytest.raises(UsageError) as caught:
        open_pkcs11(f"token=rsa-card?module-path={evil}", allowed_modules=[SOFTHSM])
    assert caught.value.detail == f"PKCS#11 module {evil} is not enabled"
    with open_pkcs11("token=rsa-card", allowed_modules=[SOFTHSM]) as card:  # no module-path
        assert card.read_certificate() == tokens.rsa.der()


# -- the CLI ------------------------------------------------------------------------------------


def _swreg(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, Any]:
    done = subprocess.run(
        [SWREG, *args, "--json"], input=stdin, capture_output=True, text=True, env=env,
        timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else done.stderr


@pytest.fixture
def cli_env(
    tokens: Tokens, pki: TestPKI, tmp_path: Path, fresh_database: FreshDatabase
) -> dict[str, str]:
    env = {
        **os.environ,
        "SWREG_DATABASE_URL": fresh_database(migrated=False, directory=tmp_path),
        "SWREG_SECRET_KEY": SECRET.hex(),
        "SWREG_ARGON2": "1,64,1",
        "SOFTHSM2_CONF": str(tokens.conf),
    }
    assert _swreg(env, "init")[0] == 0
    for command in pki.trust_commands(tmp_path / "trusted"):  # in-process: quicker
        result = CliRunner().invoke(cli_app, [*command, "--json"], env=env)
        assert result.exit_code == 0, result.stdout
    return env


@pytest.mark.parametrize(
    ("token", "type_code", "answers", "account"),
    [
        ("rsa-card", "person.general", PERSON_ANSWERS, "ming@example.com"),
        ("ec-card", "enterprise.general", COMPANY_ANSWERS, "04595257"),
    ],
)
def test_register_through_the_cli_with_a_pkcs11_token(
    cli_env: dict[str, str], tmp_path: Path, token: str, type_code: str,
    answers: dict[str, Any], account: str,
) -> None:  # fmt: skip
    answers_file = tmp_path / "answers.json"
    answers_file.write_text(json.dumps(answers), encoding="utf-8")
    args = ("register", "--type", type_code, "--answers", str(answers_file), "--card", uri(token),
            "--pin-stdin")  # fmt: skip
    code, out = _swreg(cli_env, *args, stdin="000000\n")
    assert code == 1, out
    assert [(e["code"], e["tries_left"]) for e in out["errors"]] == [("pin_incorrect", None)]
    code, out = _swreg(cli_env, *args, stdin=PIN + "\n")
    assert code == 0, out
    assert (out["account"], out["state"], out["type"]) == (account, "completed", type_code)


def test_cli_refuses_a_pin_in_the_card_spec(cli_env: dict[str, str], tmp_path: Path) -> None:
    answers_file = tmp_path / "answers.json"
    answers_file.write_text(json.dumps(PERSON_ANSWERS), encoding="utf-8")
    code, out = _swreg(
        cli_env, "register", "--type", "person.general", "--answers", str(answers_file),
        "--card", uri("rsa-card") + f"&pin-value={PIN}", stdin=PIN + "\n",
    )  # fmt: skip
    assert code == 2, out
    assert out["errors"][0]["code"] == "usage"
    assert "pin-value is refused" in out["errors"][0]["detail"]


@pytest.mark.pcsc  # lists pcscd's readers too, probing their cards
def test_readers_list_shows_pkcs11_tokens(cli_env: dict[str, str]) -> None:
    code, out = _swreg({**cli_env, "SWREG_PKCS11_MODULES": SOFTHSM}, "readers", "list")
    assert code == 0, out
    shown = {r["token"]: r for r in out["readers"] if r["bridge"] == "pkcs11"}
    assert shown["rsa-card"]["card_present"] is True
    assert shown["rsa-card"]["profile"] is None
    assert shown["rsa-card"]["spec"] == f"pkcs11:token=rsa-card?module-path={SOFTHSM}"
    assert set(shown) == {"rsa-card", "ec-card", "two-certs", "two-signers", None}
