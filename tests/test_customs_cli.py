"""``swreg customs-cert import / query / delete`` as a user runs them.

One subprocess run proves the console script end to end; the rest use Typer's in-process runner
(the same command code). The IC-card import reads a ``virtual:`` PKCS#12 card with the PIN on
stdin; the pcscd path of ``readers.open_card`` is covered by the reader tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine import App, Settings, bootstrap
from engine.cli import app as cli_app
from engine.testing.pki import IssuedCard, TestPKI

from .conftest import COMPANY_ANSWERS, FAST_ARGON2, PIN, SECRET, FreshDatabase
from .helpers import enrol
from .test_customs import (
    BROKER,
    OTHER_UBN,
    UBN,
    activate_and_login,
    audit,
    specialist_token,
    stored,
)

SWREG = str(Path(sys.executable).parent / "swreg")


class Cli:
    """One database and environment for ``swreg``; ``invoke`` runs a command in-process."""

    def __init__(self, tmp_path: Path, pki: TestPKI, db_url: str) -> None:
        self.tmp = tmp_path
        self.pki = pki
        self.url = db_url
        self.env = {
            **os.environ,
            "SWREG_DATABASE_URL": self.url,
            "SWREG_SECRET_KEY": SECRET.hex(),
            "SWREG_ARGON2": "1,64,1",
        }
        self._files = 0

    def invoke(self, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(cli_app, [*args, "--json"], input=stdin, env=self.env)
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}

    def text(self, *args: str, stdin: str | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(cli_app, list(args), input=stdin, env=self.env)
        return result.exit_code, result.output

    def file(self, data: bytes | dict[str, Any], suffix: str = ".cer") -> str:
        self._files += 1
        path = self.tmp / f"file-{self._files}{suffix}"
        if isinstance(data, dict):
            path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        else:
            path.write_bytes(data)
        return str(path)

    def card(self, card: IssuedCard) -> str:
        path = self.tmp / f"card-{card.certificate.serial_number:x}.p12"
        self.pki.write_pkcs12(card, path, PIN)
        return f"virtual:{path}"

    def import_cer(
        self, usage: str, answers: dict[str, Any], data: bytes, *proof: str
    ) -> tuple[int, Any]:
        """``customs-cert import --cer``; ``proof``: ``--key FILE``, ``--session TOKEN``, …"""
        answers_file = self.file(answers, ".json")
        return self.invoke(
            "customs-cert", "import", "--usage-type", usage, "--answers", answers_file,
            "--cer", self.file(data), *proof,
        )  # fmt: skip

    def key(self, card: IssuedCard) -> tuple[str, str]:
        """``--key FILE``: the card's private key in a PEM file."""
        return "--key", self.file(card.key_pem(), ".pem")

    def app(self) -> App:
        """The same database in-process (the system clock: the test PKI is issued at now)."""
        return bootstrap(Settings(database_url=self.url, secret_key=SECRET, argon2=FAST_ARGON2))


@pytest.fixture
def cli(tmp_path: Path, pki: TestPKI, fresh_database: FreshDatabase) -> Cli:
    runner = Cli(tmp_path, pki, fresh_database(migrated=False))  # the first command migrates it
    for command in pki.trust_commands(tmp_path / "trusted"):
        assert runner.invoke(*command)[0] == 0
    return runner


@pytest.fixture
def app(cli: Cli) -> Iterator[App]:  # the conftest ``app`` has its own database; use the CLI's
    application = cli.app()
    yield application
    application.close()


def test_the_console_script_imports_a_cer(cli: Cli, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN, "06")
    answers, cer = cli.file({"ubn": UBN}, ".json"), cli.file(card.der())
    args = ["customs-cert", "import", "--usage-type", "shipping",
            "--answers", answers, "--cer", cer, *cli.key(card), "--json"]  # fmt: skip
    done = subprocess.run(
        [SWREG, *args], capture_output=True, text=True, env=cli.env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out == {
        "ok": True,
        "id": 1,
        "query_key": UBN,
        "fingerprint": out["fingerprint"],
        "usage_type": "shipping",
        "kind": "non_ic",
        "certificate_kind": "customs",
        "message": "主憑證匯入成功!",
    }
    assert len(out["fingerprint"]) == 64


def test_a_broker_imports_a_pem_and_people_read_the_success_message(
    cli: Cli, pki: TestPKI, app: App
) -> None:
    card = pki.issue_customs(OTHER_UBN)
    answers, cer = cli.file(BROKER, ".json"), cli.file(card.pem())
    args = ("customs-cert", "import", "--usage-type", "broker_specialist",
            "--answers", answers, "--cer", cer, *cli.key(card))  # fmt: skip
    code, output = cli.text(*args)
    assert code == 1 and "not_authorized" in output  # only the specialist's card login proves it
    code, output = cli.text(*args, "--session", specialist_token(app, pki))
    assert code == 0, output
    assert "主憑證匯入成功!" in output
    assert "A00001" in output
    assert stored(app)[1:] == [  # after the specialist's login certificate
        ("signing", "A00001", "broker_specialist", "non_ic", "TaiCA", None, "active")
    ]


def test_an_ic_card_import_reads_the_virtual_card_with_its_pin(
    cli: Cli, pki: TestPKI, app: App
) -> None:
    card = pki.issue_company(UBN)
    answers = cli.file({"ubn": UBN}, ".json")
    args = ("customs-cert", "import", "--usage-type", "warehouse",
            "--answers", answers, "--card", cli.card(card), "--pin-stdin")  # fmt: skip
    code, out = cli.invoke(*args, stdin="000000\n")
    assert (code, out["errors"][0]["code"]) == (1, "pin_incorrect")
    assert stored(app) == []
    code, out = cli.invoke(*args, stdin=PIN + "\n")
    assert code == 0, out
    assert (out["kind"], out["certificate_kind"], out["query_key"]) == ("ic_card", "business", UBN)
    assert stored(app) == [("signing", UBN, "warehouse", "ic_card", "MOEACA", UBN, "active")]
    assert [d["kind"] for d in audit(app, "customs_import")] == ["ic_card"]


# neither; both; a --cer that is no file (a usage error too)
@pytest.mark.parametrize("sources", [(), ("--cer", "X", "--card", "virtual:y"), ("--cer", "X")])
def test_exactly_one_of_cer_and_card(cli: Cli, sources: tuple[str, ...]) -> None:
    answers = cli.file({"ubn": UBN}, ".json")
    code, out = cli.invoke(
        "customs-cert", "import", "--usage-type", "shipping", "--answers", answers, *sources
    )
    assert (code, out["ok"], out["errors"][0]["code"]) == (2, False, "usage")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not a certificate at all", "not_a_certificate"),
        (b"-----BEGIN CERTIFICATE-----\n" + b"A" * (64 * 1024), "file_too_large"),
    ],
)
def test_refusals_exit_1_with_their_code(cli: Cli, app: App, data: bytes, expected: str) -> None:
    code, out = cli.import_cer("shipping", {"ubn": UBN}, data)
    assert (code, out["ok"], out["errors"][0]["code"]) == (1, False, expected)
    assert stored(app) == []


def test_query_prints_the_rows(cli: Cli, pki: TestPKI) -> None:
    card = pki.issue_customs(UBN)
    assert cli.import_cer("shipping", {"ubn": UBN}, card.der(), *cli.key(card))[0] == 0
    code, out = cli.invoke("customs-cert", "query", UBN)
    assert code == 0
    [row] = out["rows"]
    assert (row["form"], row["kind"], row["purpose"], row["usage_type"], row["status"]) == (
        "非IC卡類憑證",
        "通關專屬憑證",
        "簽章",
        "shipping",
        "active",
    )
    assert row["info"].startswith("序號: ")
    code, text = cli.text("customs-cert", "query", UBN)
    assert "憑證型態 | 憑證種類 | 用途 | 憑證資訊" in text
    assert code == 0
    code, out = cli.invoke("customs-cert", "query", "nonsense")
    assert (code, out["errors"][0]["code"], out["errors"][0]["field"]) == (
        1,
        "invalid_value",
        "key",
    )


def test_an_empty_query_key_is_refused_as_the_api_refuses_it(cli: Cli) -> None:
    """The rule lives in the service: the CLI says what ``GET /api/customs-certificates``
    says (tests/test_customs_api.py: ``field_required`` on ``key``)."""
    code, out = cli.invoke("customs-cert", "query", "")
    assert (code, out["errors"][0]["code"], out["errors"][0]["field"]) == (
        1,
        "field_required",
        "key",
    )


def test_delete_needs_the_owners_card_session(cli: Cli, pki: TestPKI, app: App) -> None:
    company = pki.issue_company(UBN)
    enrol(app, "enterprise.general", company, COMPANY_ANSWERS)
    token = activate_and_login(app, company, UBN)
    code, out = cli.import_cer(
        "shipping", {"ubn": UBN}, pki.issue_customs(UBN).der(), "--session", token
    )
    assert code == 0, out
    certificate_id = str(out["id"])

    code, out = cli.invoke("customs-cert", "delete", certificate_id, "--session", "not-a-session")
    assert (code, out["errors"][0]["code"]) == (1, "session_expired")  # said, not guessed
    code, out = cli.invoke("customs-cert", "delete", certificate_id, "--session", token)
    assert (code, out) == (0, {"ok": True, "id": int(certificate_id), "status": "deleted"})
    assert [r[-1] for r in stored(app)] == ["active", "deleted"]
    assert [d["account"] for d in audit(app, "customs_delete")] == [UBN]


def test_delete_help_says_where_the_session_comes_from(cli: Cli) -> None:
    code, text = cli.text("customs-cert", "delete", "--help")
    assert code == 0
    assert "憑證登入" in text


# -- proof of ownership (DESIGN.md §5) -------------------------------------------------------


def test_a_cer_without_a_proof_is_refused(cli: Cli, pki: TestPKI, app: App) -> None:
    code, out = cli.import_cer("shipping", {"ubn": UBN}, pki.issue_customs(UBN).der())
    assert (code, out["errors"][0]["code"], out["errors"][0]["field"]) == (
        1,
        "proof_required",
        "signature",
    )
    assert stored(app) == []


def test_another_certificates_key_is_refused(cli: Cli, pki: TestPKI, app: App) -> None:
    card, other = pki.issue_customs(UBN), pki.issue_customs(UBN, "02")
    code, out = cli.import_cer("shipping", {"ubn": UBN}, card.der(), *cli.key(other))
    assert (code, out["errors"][0]["code"]) == (1, "signature_invalid")
    assert stored(app) == []


def test_a_p12_proves_the_key_after_its_password(cli: Cli, pki: TestPKI, app: App) -> None:
    card = pki.issue_customs(UBN, key="rsa")
    p12 = cli.file(pki.pkcs12_bytes(card, PIN), ".p12")
    answers = cli.file({"ubn": UBN}, ".json")
    args = ("customs-cert", "import", "--usage-type", "shipping", "--answers", answers,
            "--cer", cli.file(card.pem()), "--p12", p12, "--pin-stdin")  # fmt: skip
    code, out = cli.invoke(*args, stdin="000000\n")
    assert (code, out["errors"][0]["code"]) == (1, "pin_incorrect")
    code, out = cli.invoke(*args, stdin=PIN + "\n")
    assert code == 0, out
    assert stored(app) == [("signing", UBN, "shipping", "non_ic", "TaiCA", UBN, "active")]


def test_an_encrypted_key_file_asks_for_its_password(cli: Cli, pki: TestPKI, app: App) -> None:
    from cryptography.hazmat.primitives import serialization

    card = pki.issue_customs(UBN)
    encrypted = card.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret-pass"),
    )
    key = ("--key", cli.file(encrypted, ".pem"))
    answers = cli.file({"ubn": UBN}, ".json")
    args = ("customs-cert", "import", "--usage-type", "shipping", "--answers", answers,
            "--cer", cli.file(card.der()), *key, "--pin-stdin")  # fmt: skip
    code, out = cli.invoke(*args, stdin="wrong\n")
    assert (code, out["errors"][0]["code"]) == (2, "usage")
    code, out = cli.invoke(*args, stdin="s3cret-pass\n")
    assert code == 0, out


def test_the_query_masks_accounts_unless_the_owner_asks(cli: Cli, pki: TestPKI, app: App) -> None:
    company = pki.issue_company(UBN)
    enrol(app, "enterprise.general", company, COMPANY_ANSWERS)
    token = activate_and_login(app, company, UBN)
    code, out = cli.invoke("customs-cert", "query", UBN)
    assert (code, [row["account"] for row in out["rows"]]) == (0, ["0******7"])
    code, out = cli.invoke("customs-cert", "query", UBN, "--session", token)
    assert (code, [row["account"] for row in out["rows"]]) == (0, [UBN])


def test_a_session_that_is_not_live_is_session_expired(cli: Cli, pki: TestPKI, app: App) -> None:
    card = pki.issue_customs(UBN)
    code, out = cli.import_cer("shipping", {"ubn": UBN}, card.der(), "--session", "gone")
    assert (code, out["errors"][0]["code"], out["errors"][0]["field"]) == (
        1,
        "session_expired",
        "session",
    )
    code, out = cli.invoke("customs-cert", "query", UBN, "--session", "gone")
    assert (code, out["errors"][0]["code"]) == (1, "session_expired")
    assert stored(app) == []
