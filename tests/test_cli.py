"""The ``swreg`` command line, driven as a user (and the acceptance checks) drive it.

Most tests run the real console script in a subprocess: exit statuses, ``--json`` output, the
PIN on stdin, files on disk. The per-type matrix uses Typer's in-process runner for speed; it
runs exactly the same command code.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, pool, text
from typer.testing import CliRunner

from engine.cli import app as cli_app
from engine.testing.pki import IssuedCard, TestPKI

from .conftest import (
    AGENCY_OID,
    COMPANY_ANSWERS,
    ORG_OID,
    PERSON_ANSWERS,
    PIN,
    SECRET,
    FreshDatabase,
)

SWREG = str(Path(sys.executable).parent / "swreg")


class Cli:
    """One database, one environment; ``run`` (subprocess) and ``invoke`` (in-process)."""

    def __init__(self, tmp_path: Path, pki: TestPKI, db_url: str) -> None:
        self.tmp = tmp_path
        self.pki = pki
        self.db_url = db_url
        self.env = {
            **os.environ,
            "SWREG_DATABASE_URL": db_url,
            "SWREG_SECRET_KEY": SECRET.hex(),
            "SWREG_ARGON2": "1,64,1",
        }

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any], str]:
        done = subprocess.run(
            [SWREG, *args, "--json"], input=stdin, capture_output=True, text=True,
            env=self.env, timeout=120, check=False,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr

    def invoke(self, *args: str, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
        result = CliRunner().invoke(cli_app, [*args, "--json"], input=stdin, env=self.env)
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}

    def file(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        return str(path)

    def card(self, card: IssuedCard, pin: str = PIN) -> str:
        path = self.tmp / f"card-{card.certificate.serial_number:x}.p12"
        self.pki.write_pkcs12(card, path, pin)
        return f"virtual:{path}"

    def answers(self, answers: dict[str, Any]) -> str:
        return self.file(f"answers-{len(list(self.tmp.iterdir()))}.json", json.dumps(answers))

    def trust_roots(self) -> None:
        """Trust the test PKI as an operator would: roots, issuing CAs and every CA's CRL."""
        for command in self.pki.trust_commands(self.tmp / "trusted"):
            code, out = self.invoke(*command)
            assert code == 0 and out["ok"] is True

    def register(
        self, type_code: str, card: IssuedCard, answers: dict[str, Any], *, pin: str = PIN,
        subprocess_: bool = False,
    ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        args = ("register", "--type", type_code, "--answers", self.answers(answers),
                "--card", self.card(card), "--pin-stdin")  # fmt: skip
        if subprocess_:
            code, out, _ = self.run(*args, stdin=pin + "\n")
            return code, out
        return self.invoke(*args, stdin=pin + "\n")


@pytest.fixture
def cli(tmp_path: Path, pki: TestPKI, fresh_database: FreshDatabase) -> Cli:
    # `swreg init` migrates it; a SQLite file lies in tmp_path (the PIN test reads every file)
    runner = Cli(tmp_path, pki, fresh_database(migrated=False, directory=tmp_path))
    code, out, _ = runner.run("init")
    assert (code, out["ok"]) == (0, True)
    runner.trust_roots()
    return runner


def org_answers(oid: str, **extra: Any) -> dict[str, Any]:
    base = {k: v for k, v in COMPANY_ANSWERS.items() if k != "ubn"}
    return {**base, "oid": oid, "email": "office@org.example", **extra}


def cards_for(pki: TestPKI) -> dict[str, tuple[Any, dict[str, Any]]]:
    person = (lambda: pki.issue_person("王小明", "6789", key="rsa"), PERSON_ANSWERS)
    company = (lambda: pki.issue_company("04595257", key="ec"), COMPANY_ANSWERS)
    return {
        "person.general": person,
        "person.customs_broker": person,
        "enterprise.organization": (
            lambda: pki.issue_organization(ORG_OID, "測試大學"),
            org_answers(ORG_OID, ubn="10458575"),
        ),
        "enterprise.government": (
            lambda: pki.issue_agency(AGENCY_OID, "測試署"),
            org_answers(AGENCY_OID),
        ),
    } | {code: company for code in (
        "enterprise.general", "enterprise.customs_broker", "enterprise.express",
        "enterprise.shipping", "enterprise.warehouse", "enterprise.forwarder",
        "enterprise.offshore_duty_free", "enterprise.duty_free", "enterprise.bonded_transport",
        "enterprise.equipment_supplier",
    )}  # fmt: skip


ALL_TYPES = sorted([
    "person.general", "person.customs_broker", "enterprise.general", "enterprise.customs_broker",
    "enterprise.express", "enterprise.shipping", "enterprise.warehouse", "enterprise.forwarder",
    "enterprise.offshore_duty_free", "enterprise.duty_free", "enterprise.bonded_transport",
    "enterprise.equipment_supplier", "enterprise.organization", "enterprise.government",
])  # fmt: skip
EXPECTED_ACCOUNT = {"person": "ming@example.com", "enterprise": "04595257"}


def test_types_lists_all_fourteen_applicant_types(cli: Cli) -> None:
    code, out, _ = cli.run("types")
    assert code == 0
    assert sorted(t["code"] for t in out["applicant_types"]) == ALL_TYPES
    assert len(out["applicant_types"]) == 14
    assert {u["code"] for u in out["usage_types"]} == {
        "broker_specialist", "general_forwarder", "shipping", "warehouse", "inspection",
        "offshore_duty_free_system", "duty_free", "airline",
    }  # fmt: skip
    general = next(t for t in out["applicant_types"] if t["code"] == "enterprise.general")
    assert general["labels"] == {
        "zh-TW": "一般企業或組織團體",
        "en": "General enterprise or organisation",
    }
    person = next(t for t in out["applicant_types"] if t["code"] == "person.general")
    assert person["steps"] == ["category", "card_check", "basic_data", "completed"]


@pytest.mark.parametrize("type_code", ALL_TYPES)
def test_every_type_registers_through_the_cli(cli: Cli, pki: TestPKI, type_code: str) -> None:
    make_card, answers = cards_for(pki)[type_code]
    code, out = cli.register(type_code, make_card(), answers)
    assert code == 0, out
    expected = {
        "enterprise.organization": ORG_OID,
        "enterprise.government": AGENCY_OID,
    }.get(type_code, EXPECTED_ACCOUNT[type_code.split(".")[0]])
    assert (out["ok"], out["account"], out["state"], out["type"]) == (
        True,
        expected,
        "completed",
        type_code,
    )
    assert len(out["registration_id"]) == 36


def test_register_in_a_subprocess_with_a_resolved_type(cli: Cli, pki: TestPKI) -> None:
    card = pki.issue_organization(ORG_OID, "測試大學")
    code, out = cli.register(
        "enterprise.general", card, org_answers(ORG_OID, ubn="10458575"), subprocess_=True
    )
    assert (code, out["type"], out["account"]) == (0, "enterprise.organization", ORG_OID)
    code, shown, _ = cli.run("audit", "show", out["registration_id"])
    assert code == 0
    assert [e["event"] for e in shown["entries"]] == ["start", "next", "next", "next", "next"]


def test_successful_commands_write_nothing_to_stderr(cli: Cli, pki: TestPKI) -> None:
    """No dependency warning (cryptography's DSA deprecation was one) reaches a user: each
    command runs in a fresh interpreter with Python's default warning filters."""
    card = pki.issue_person("王小明", "6789")
    env = {k: v for k, v in cli.env.items() if k != "PYTHONWARNINGS"}
    commands = [
        ("--help",),
        ("init",),
        ("types",),
        ("trust", "list"),
        ("workflow", "show"),
        ("cert", "inspect", cli.file("card.cer", card.der())),
        ("audit", "verify"),
    ]
    for args in commands:
        done = subprocess.run(
            [SWREG, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert (done.returncode, done.stderr) == (0, ""), args


def test_the_database_option_is_the_root_commands(cli: Cli, tmp_path: Path) -> None:
    """``swreg --db URL COMMAND``: given once, before the command, for every command."""
    other = tmp_path / "other.db"
    done = subprocess.run(
        [SWREG, "--db", f"sqlite:///{other}", "init", "--json"],
        capture_output=True, text=True, env=cli.env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["database"] == f"sqlite:///{other}"
    assert other.is_file()


def test_init_makes_the_database_and_key_owner_only_and_tightens_looser_ones(
    tmp_path: Path,
) -> None:
    """``swreg init`` with the usual umask 022: a new SQLite file and its key file are 0600; made
    readable by others, the next command sets them back with a warning on stderr."""
    database, key = tmp_path / "new.db", tmp_path / "new.db.key"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWREG_")}
    env["SWREG_DATABASE_URL"] = f"sqlite:///{database}"
    previous = os.umask(0o022)
    try:

        def init() -> str:
            done = subprocess.run(
                [SWREG, "init", "--json"], capture_output=True, text=True, env=env, timeout=120,
                check=False,
            )  # fmt: skip
            assert (done.returncode, json.loads(done.stdout)["ok"]) == (0, True), done.stderr
            return done.stderr

        assert init() == ""
        assert (stat.S_IMODE(database.stat().st_mode), stat.S_IMODE(key.stat().st_mode)) == (
            0o600,
            0o600,
        )
        database.chmod(0o644)
        key.chmod(0o640)
        warnings = init()
    finally:
        os.umask(previous)
    assert (stat.S_IMODE(database.stat().st_mode), stat.S_IMODE(key.stat().st_mode)) == (
        0o600,
        0o600,
    )
    assert f"{database} was mode 0644 (readable by others): set to 0600" in warnings
    assert f"{key} was mode 0640 (readable by others): set to 0600" in warnings


@pytest.mark.parametrize(
    ("args", "status", "code"),
    [
        (("--type", "person.nope"), 1, "unknown_type"),
        (("--card", "pcsc:no-such-reader"), 3, "no_reader"),
        (("--card", "pcsc:Virtual PCD 00 00"), 3, "no_card"),  # a reader, but nothing in it
        (("--card", "smartcard"), 2, "usage"),
        (("--answers", "/nonexistent/answers.json"), 2, "usage"),
    ],
)
def test_register_exit_statuses(
    cli: Cli, pki: TestPKI, args: tuple[str, str], status: int, code: str
) -> None:
    options = {"--type": "person.general", "--answers": cli.answers(PERSON_ANSWERS),
               "--card": cli.card(pki.issue_person())}  # fmt: skip
    options[args[0]] = args[1]
    flat = [item for pair in options.items() for item in pair]
    rc, out, _ = cli.run("register", *flat, "--pin-stdin", stdin=PIN + "\n")
    assert rc == status
    assert out["ok"] is False
    assert out["errors"][0]["code"] == code


def test_a_wrong_pin_is_refused_and_leaves_nothing(cli: Cli, pki: TestPKI) -> None:
    code, out = cli.register("person.general", pki.issue_person(), PERSON_ANSWERS, pin="000000")
    assert code == 1
    assert out["errors"][0]["code"] == "pin_incorrect"
    assert out["errors"][0]["field"] is None
    code, out = cli.invoke("accounts", "check", "ming@example.com")
    assert (code, out["available"], out["message"]) == (0, True, "此帳號可使用")


def test_refusals_report_field_and_code(cli: Cli, pki: TestPKI) -> None:
    code, out = cli.register(
        "enterprise.general", pki.issue_company("04595257"), {**COMPANY_ANSWERS, "ubn": "04595258"}
    )
    assert code == 1
    assert out["errors"] == [
        {"field": "ubn", "code": "invalid_ubn", "message": "統一編號錯誤"},
    ]
    code, out = cli.invoke("accounts", "check", "04595257")
    assert code == 0 and out["available"] is True  # nothing was created


def test_accounts_check_after_registration(cli: Cli, pki: TestPKI) -> None:
    assert (
        cli.register("enterprise.general", pki.issue_company("04595257"), COMPANY_ANSWERS)[0] == 0
    )
    code, out = cli.invoke("accounts", "check", "04595257")
    assert code == 1
    assert out["errors"][0]["code"] == "account_exists"
    assert out["errors"][0]["message"] == "用戶姓名已存在"


def test_the_pin_appears_in_no_file_table_or_output(cli: Cli, pki: TestPKI) -> None:
    pin = "Zq7PIN9313"
    code, out, err = cli.run(
        "register", "--type", "person.general", "--answers", cli.answers(PERSON_ANSWERS),
        "--card", cli.card(pki.issue_person(), pin=pin), "--pin-stdin", stdin=pin + "\n",
    )  # fmt: skip
    assert code == 0, out
    for path in cli.tmp.iterdir():
        if path.suffix != ".p12" and path.is_file():
            assert pin.encode() not in path.read_bytes(), path
    assert pin not in json.dumps(out) and pin not in err
    engine = create_engine(cli.db_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'select * from "{table}"')):
                assert pin not in repr(row), table
                assert "A123456789" not in repr(row), table  # the ID: hashed and masked only
                assert "Passw0rdOK" not in repr(row), table


def _tamper(db_url: str, sql: str) -> None:
    engine = create_engine(db_url, poolclass=pool.NullPool)
    with engine.begin() as connection:
        for statement in sql.split(";"):
            connection.exec_driver_sql(statement)


@pytest.mark.parametrize(
    ("sql", "bad_seq"),
    [
        (
            "update audit_log set diff = '{\"iot\": true}' where seq = 3",
            3,
        ),  # edited (2 rows of trust first)
        ("delete from audit_log where seq = 4", 5),  # deleted: the gap shows at the next row
        (  # reordered: rows 3 and 4 swap places
            "update audit_log set seq = -3 where seq = 3;"
            "update audit_log set seq = 3 where seq = 4;"
            "update audit_log set seq = 4 where seq = -3",
            3,
        ),
    ],
)
def test_audit_verify_finds_the_first_bad_row(
    cli: Cli, pki: TestPKI, sql: str, bad_seq: int
) -> None:
    assert cli.register("person.general", pki.issue_person(), PERSON_ANSWERS)[0] == 0
    code, out, _ = cli.run("audit", "verify")
    assert (code, out["ok"], out["first_bad_seq"]) == (0, True, None)
    _tamper(cli.db_url, sql)
    code, out, _ = cli.run("audit", "verify")
    assert code == 1
    assert out["ok"] is False
    assert out["errors"][0]["first_bad_seq"] == bad_seq


def test_cert_inspect_explains_a_card(cli: Cli, pki: TestPKI) -> None:
    from engine import IssuerCA

    card = pki.issue_company("04595257", rank="secondary")
    stranger = pki.issue_company("04595257", issuer=pki.lookalike_ca(IssuerCA.MOEACA))
    code, out, _ = cli.run("cert", "inspect", cli.file("stranger.cer", stranger.pem()))
    assert (code, out["status"], out["chain"]) == (0, "untrusted", [out["subject"]])
    assert out["revocation"] == {
        "status": "unknown", "source": "none", "tried": [], "checked_at": None, "reason": None,
        "revoked_at": None,
    }  # fmt: skip
    code, out, _ = cli.run("cert", "inspect", cli.file("company.cer", card.pem()))
    assert code == 0
    assert out["ca"] == "MOEACA"
    assert out["status"] == "valid"
    assert out["identity"] == {"ubn": "04595257", "card_rank": "secondary"}
    assert out["key_usage"] == ["digital_signature"]
    assert out["serial"] == format(card.certificate.serial_number, "X")
    assert len(out["chain"]) == 3 and "Government Root CA" in out["chain"][-1]
    assert "enterprise.general" in out["accepted_by"]
    assert "person.general" not in out["accepted_by"]
    revocation = {k: out["revocation"][k] for k in ("status", "source", "reason", "revoked_at")}
    assert revocation == {"status": "good", "source": "crl", "reason": None, "revoked_at": None}


def test_cert_inspect_of_garbage_is_refused(cli: Cli) -> None:
    code, out, _ = cli.run("cert", "inspect", cli.file("junk.cer", b"hello"))
    assert code == 1
    assert out["errors"][0]["code"] == "not_a_certificate"


def test_crl_add_then_a_revoked_card_is_refused(cli: Cli, pki: TestPKI) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from engine import IssuerCA

    card = pki.issue_person()
    moica = pki.ca(IssuerCA.MOICA).certificate
    code, _ = cli.invoke("trust", "add", "--intermediate", cli.file("moica.cer", pki.der(moica)))
    assert code == 0
    crl = pki.crl(IssuerCA.MOICA, revoked=[card], number=7)
    code, out = cli.invoke("crl", "add", cli.file("moica.crl", crl.public_bytes(Encoding.DER)))
    assert (code, out["crl_number"], out["revoked"]) == (0, 7, 1)
    code, out = cli.register("person.general", card, PERSON_ANSWERS)
    assert (code, out["errors"][0]["code"]) == (1, "certificate_revoked")
    code, out, _ = cli.run("cert", "inspect", cli.file("revoked.cer", card.der()))
    assert out["status"] == "revoked"


def test_trust_list_and_readers_list(cli: Cli) -> None:
    code, out = cli.invoke("trust", "list")
    assert code == 0
    anchors = [c["anchor"] for c in out["certificates"]]
    assert sorted(anchors) == [False] * 5 + [True] * 2  # the issuing CAs and the two roots
    code, out = cli.invoke("readers", "list")
    assert code == 0
    empty = {
        "name": "Virtual PCD 00 00", "card_present": False, "profile": None,
        "bridge": "pcsc", "token": None, "spec": None,
    }  # fmt: skip
    assert empty in out["readers"]
    assert out["twfido"] == {"configured": False}


def test_demo_registers_every_category(tmp_path: Path) -> None:
    # `swreg demo` makes its own SQLite database in --out, whatever the test backend.
    done = subprocess.run(
        [SWREG, "demo", "--out", str(tmp_path / "demo"), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "SWREG_ARGON2": "1,64,1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["audit_ok"] is True
    assert [(r["type"], r.get("account"), r.get("code")) for r in out["registrations"]] == [
        ("person.general", "ming@demo.example", None),
        ("enterprise.general", "04595257", None),
        ("enterprise.general", None, "account_exists"),  # the 附卡 without 附卡編號
        ("enterprise.general", "0459525701", None),
        ("enterprise.organization", "2.16.886.111.90010.90003.100001", None),
        ("enterprise.government", "2.16.886.101.20003.20065.20065", None),
        ("person.general", "wei@demo.example", None),  # the mobile ID, through the TW FidO mock
    ]
    assert (tmp_path / "demo" / "pki" / "ca" / "MOICA.pem").exists()  # for twfido mock --pki
    narration = done.stderr.splitlines()  # --json: the narration goes to stderr, never silent
    assert narration[0].startswith("swreg 示範 / demo") and any(
        line.startswith("稽核紀錄 / audit log: ") for line in narration
    )


def test_cert_inspect_of_a_real_gpki_company_certificate(cli: Cli) -> None:
    vectors = Path(__file__).parent / "vectors" / "gpki"
    code, _ = cli.invoke("trust", "add", str(vectors / "grca-g1-2002-root.cer"))
    assert code == 0
    for helper in ("grca-2012-link.cer", "moeaca-g2-ca.cer"):  # the key-rollover link and the CA
        code, out = cli.invoke("trust", "add", "--intermediate", str(vectors / helper))
        assert (code, out["anchor"]) == (0, False)
    code, out, _ = cli.run("cert", "inspect", str(vectors / "moeaca-ee-g2-2019-citibank.cer"))
    assert code == 0
    assert out["ca"] == "MOEACA"
    assert out["identity"] == {"ubn": "28421312", "card_rank": "secondary"}
    assert out["status"] == "expired"  # a real card from 2019: its five years are over
    assert len(out["chain"]) == 4  # EE → MOEACA G2 → 2012 link → GRCA (2002)
    assert out["chain"][1].endswith("OU=工商憑證管理中心,O=行政院,C=TW")
    assert "enterprise.general" in out["accepted_by"]
