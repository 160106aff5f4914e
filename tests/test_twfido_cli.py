"""`swreg twfido` (issue 17, DESIGN.md §13): the mock TW FidO service run as a user runs it, in its
own process, and the "phone" played against it with `swreg twfido pending|approve|reject`; a
whole `swreg register --card twfido:ID` through the two processes, and what 通關憑證查詢 then
shows; the demo's mobile-ID settings."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from engine import FixedClock, SwregError
from engine._settings import TwFidoSettings
from engine.cli import app as cli_app
from engine.core.declarations import IssuerCA
from engine.pki.certificate import load_certificate
from engine.services.twfido import TwFidoClient
from engine.testing.demo import MOBILE_BROWSER, MOBILE_NARRATED, MOBILE_SALT, start_mobile_demo
from engine.testing.pki import TestPKI
from engine.testing.portal_demo import _mobile_environment
from engine.testing.ports import free_port

from .conftest import PASSWORD, PKI_NOW, SECRET
from .processes import SWREG, answers_http, stop_process, swreg_env, wait_until

KEY = bytes(range(64, 96))
SERVICE = "SP-CLI-TEST"
PERSON_ID, PERSON_NAME = "B220206182", "陳小美"
MASKED_ID = "B22*****82"
UNKNOWN_TICKET = "00000000-0000-4000-8000-000000000000"
PERSON_ANSWERS: dict[str, Any] = {
    "consent": True,
    "email": "mei@example.com",
    "contact_name": PERSON_NAME,
    "national_id": PERSON_ID,
    "birth_date": "1992-11-02",
    "phone": "0933-222-111",
    "address": "臺中市西屯區示範路6號",
    **PASSWORD,
}


@dataclass
class RunningMock:
    process: subprocess.Popen[bytes]
    url: str
    started: dict[str, Any]
    stdout: Path
    folder: Path


def start_mock(folder: Path, *extra: str) -> RunningMock:
    """`swreg twfido mock --json` on a free port, until its control endpoint answers."""
    port = free_port()
    key_file = folder / "sp.key"
    key_file.write_text(base64.b64encode(KEY).decode() + "\n")
    stdout, stderr = folder / f"mock-{port}.out", folder / f"mock-{port}.err"
    args = [
        SWREG, "twfido", "mock", "--port", str(port), "--service-id", SERVICE,
        "--key-file", str(key_file), "--holder", f"{PERSON_ID}:{PERSON_NAME}",
        "--pki", str(folder / "pki"), "--json", *extra,
    ]  # fmt: skip
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(args, env=swreg_env(), stdout=out, stderr=err, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_http(url + "/control/tickets"), process, stderr, "the mock")
    except BaseException:
        stop_process(process)
        raise
    started = json.loads(stdout.read_text(encoding="utf-8").splitlines()[0])
    return RunningMock(process, url, started, stdout, folder)


@pytest.fixture
def fido(tmp_path: Path) -> Iterator[RunningMock]:
    running = start_mock(tmp_path)
    yield running
    stop_process(running.process)


def phone(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    """`swreg twfido …` in-process: (exit status, stdout, stderr)."""
    result = CliRunner().invoke(cli_app, ["twfido", *args], env=env or {})
    return result.exit_code, result.stdout, result.stderr


def client_of(running: RunningMock) -> TwFidoClient:
    settings = TwFidoSettings(running.url, SERVICE, KEY, 180, timedelta(seconds=10))
    return TwFidoClient(settings, now=FixedClock(PKI_NOW).now)


def errors(stdout: str) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in json.loads(stdout)["errors"]]


# -- the mock --------------------------------------------------------------------------------


def test_the_mock_prints_what_a_portal_needs(fido: RunningMock) -> None:
    started = fido.started
    assert started["ok"] is True
    assert started["settings"] == {
        "SWREG_TWFIDO_URL": fido.url,
        "SWREG_TWFIDO_SERVICE_ID": SERVICE,
        "SWREG_TWFIDO_KEY": base64.b64encode(KEY).decode(),
    }
    assert (started["url"], started["control_url"]) == (fido.url, fido.url + "/control")
    assert (started["service_id"], started["pki"], started["pki_created"]) == (
        SERVICE, str(fido.folder / "pki"), True
    )  # fmt: skip
    trust = fido.folder / "pki" / "trust"
    assert started["trust_commands"][:3] == [
        ["swreg", "trust", "add", str(trust / "trusted-root-0.cer")],
        ["swreg", "trust", "add", str(trust / "trusted-root-1.cer")],
        ["swreg", "trust", "add", "--intermediate", str(trust / "trusted-ca-0.cer")],
    ]
    assert len(started["trust_commands"]) == 14  # 2 roots, 5 CAs, 7 CRLs

    # the holder's mobile certificate: rank "mobile", last four digits, under the folder's MOICA
    kept = (fido.folder / "pki" / f"mobile-{PERSON_ID}.pem").read_bytes()
    certificate = x509.load_pem_x509_certificate(kept)
    assert started["holders"] == [
        {
            "national_id": PERSON_ID,
            "name": PERSON_NAME,
            "fingerprint": certificate.fingerprint(hashes.SHA256()).hex(),
        }
    ]
    identity = load_certificate(certificate.public_bytes(Encoding.DER)).identity
    assert (identity.name, identity.id_last4, identity.card_rank) == (
        PERSON_NAME, "6182", "mobile"
    )  # fmt: skip
    moica = x509.load_pem_x509_certificate((fido.folder / "pki" / "ca" / "MOICA.pem").read_bytes())
    certificate.verify_directly_issued_by(moica)
    assert isinstance(certificate.public_key(), rsa.RSAPublicKey)

    # Ctrl-C (SIGTERM here) stops it with status 0, and stdout held that one JSON object
    stop_process(fido.process)
    assert fido.process.returncode == 0
    assert len(fido.stdout.read_text(encoding="utf-8").splitlines()) == 1


def test_a_pki_folder_is_kept_across_runs(fido: RunningMock) -> None:
    """Started again on the same --pki, the mock issues nothing new: a person registered once
    can log in again, and the portal's trust still holds."""
    stop_process(fido.process)
    again = start_mock(fido.folder)
    try:
        assert again.started["pki_created"] is False
        assert again.started["holders"] == fido.started["holders"]
    finally:
        stop_process(again.process)


def test_the_mock_in_plain_text(tmp_path: Path) -> None:
    port = free_port()
    key_file = tmp_path / "sp.key"
    key_file.write_text(base64.b64encode(KEY).decode())
    out = tmp_path / "mock.out"
    args = [SWREG, "twfido", "mock", "--port", str(port), "--key-file", str(key_file),
            "--pki", str(tmp_path / "pki")]  # fmt: skip
    with out.open("wb") as handle:
        process = subprocess.Popen(args, env=swreg_env(), stdout=handle, stderr=handle)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_http(url + "/control"), process, out, "the mock")
    finally:
        stop_process(process)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[:9] == [
        "行動自然人憑證 TW FidO 模擬服務 / mock service — 測試用 TEST material",
        f"SWREG_TWFIDO_URL={url}",
        "SWREG_TWFIDO_SERVICE_ID=SWREG-TEST-SP",  # the default service id
        f"SWREG_TWFIDO_KEY={base64.b64encode(KEY).decode()}",
        f"模擬手機 / the phone: {url}/control",
        f"   或 / or: swreg twfido pending|approve|reject TICKET --url {url}",
        "持有行動自然人憑證者 / holders of a mobile certificate:",
        "   A123456789 王小明",  # the default holder
        f"測試PKI / test PKI: {tmp_path / 'pki'} — 註冊網站須信任 / the portal must trust it:",
    ]
    assert lines[-2:] == ["Ctrl-C 結束 / to stop", "已停止 / stopped"]
    assert process.returncode == 0


def test_a_port_in_use_is_mobile_id_unavailable(fido: RunningMock) -> None:
    port = fido.url.rsplit(":", 1)[1]
    done, out, _ = phone("mock", "--port", port, "--pki", str(fido.folder / "pki"), "--json")
    assert (done, errors(out)) == (3, [(None, "mobile_id_unavailable")])
    assert answers_http(fido.url + "/control")  # the running one is untouched


@pytest.mark.parametrize(
    ("holder", "status", "code"),
    [
        ("A123456788:王小明", 1, ("holder", "invalid_national_id")),  # check digit wrong
        ("A123456789", 2, (None, "usage")),  # no name
        ("A123456789:", 2, (None, "usage")),  # an empty name
    ],
)
def test_a_holder_is_national_id_and_name(
    tmp_path: Path, holder: str, status: int, code: tuple[str | None, str]
) -> None:
    done, out, _ = phone("mock", "--holder", holder, "--pki", str(tmp_path / "pki"), "--json")
    assert (done, errors(out)) == (status, [code])
    assert not (tmp_path / "pki").exists()  # refused before anything was made


def test_a_key_file_holds_a_32_byte_key(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(bytes(16)).decode())
    done, out, _ = phone("mock", "--key-file", str(short), "--json")
    assert (done, errors(out)) == (2, [(None, "usage")])


# -- the phone -------------------------------------------------------------------------------


def test_pending_then_approve_by_the_whole_ticket(fido: RunningMock) -> None:
    client = client_of(fido)
    payload = b"the card-check challenge payload"
    ticket = client.start(PERSON_ID, payload)

    done, out, _ = phone("pending", "--url", fido.url, "--json")
    assert done == 0
    listed = json.loads(out)["tickets"]
    assert [
        (t["sp_ticket_id"], t["sp_ticket"], t["id_num"], t["op_code"], t["op_mode"], t["state"])
        for t in listed
    ] == [(ticket.sp_ticket_id, ticket.sp_ticket, MASKED_ID, "SIGN", "I-SCAN", "pending")]
    assert client.poll(ticket) is None  # nobody has played the phone yet

    done, out, _ = phone("approve", ticket.sp_ticket, "--url", fido.url)  # the QR code's text
    assert (done, out) == (0, f"已核准 / approved: {ticket.sp_ticket_id} ({MASKED_ID})\n")

    answer = client.poll(ticket)
    assert answer is not None
    certificate = x509.load_der_x509_certificate(answer.certificate)
    assert (
        certificate.fingerprint(hashes.SHA256()).hex()
        == (fido.started["holders"][0]["fingerprint"])
    )
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(answer.signature, payload, padding.PKCS1v15(), hashes.SHA256())

    assert phone("pending", "--url", fido.url) == (0, "沒有等待中的請求 / no pending ticket\n", "")
    done, out, _ = phone("approve", ticket.sp_ticket_id, "--url", fido.url, "--json")
    assert (done, errors(out)) == (1, [("ticket", "challenge_used")])  # answered once only


def test_reject_by_the_app_link_and_the_sp_is_told(fido: RunningMock) -> None:
    client = client_of(fido)
    ticket = client.start(PERSON_ID, b"payload")
    done, out, _ = phone("reject", ticket.app_link(), "--url", fido.url, "--json")
    assert done == 0
    answered = json.loads(out)
    assert answered["ok"] is True
    assert (answered["ticket"]["sp_ticket_id"], answered["ticket"]["state"]) == (
        ticket.sp_ticket_id, "refused"
    )  # fmt: skip
    with pytest.raises(SwregError) as refused:
        client.poll(ticket)
    assert refused.value.code == "mobile_id_rejected"


def test_the_url_comes_from_the_environment(fido: RunningMock) -> None:
    ticket = client_of(fido).start(PERSON_ID, b"payload")
    done, out, _ = phone("approve", ticket.sp_ticket_id, env={"SWREG_TWFIDO_URL": fido.url})
    assert (done, out) == (0, f"已核准 / approved: {ticket.sp_ticket_id} ({MASKED_ID})\n")


def test_an_unknown_ticket_is_challenge_expired(fido: RunningMock) -> None:
    for action in ("approve", "reject"):
        done, out, _ = phone(action, UNKNOWN_TICKET, "--url", fido.url, "--json")
        assert (done, errors(out)) == (1, [("ticket", "challenge_expired")])
    done, _, err = phone("approve", UNKNOWN_TICKET, "--url", fido.url)
    assert done == 1
    assert err.startswith("✗ challenge_expired [ticket]: ")


def test_a_mock_that_cannot_be_reached_is_mobile_id_unavailable() -> None:
    nothing = f"http://127.0.0.1:{free_port()}"
    for args in (["pending"], ["approve", UNKNOWN_TICKET], ["reject", UNKNOWN_TICKET]):
        done, out, _ = phone(*args, "--url", nothing, "--json")
        assert (done, errors(out)) == (3, [(None, "mobile_id_unavailable")])


def test_without_a_url_it_is_a_usage_error() -> None:
    done, out, _ = phone("pending", "--json", env={"SWREG_TWFIDO_URL": None})
    assert (done, errors(out)) == (2, [(None, "usage")])


# -- the whole flow through the processes ------------------------------------------------------


def test_register_with_the_phone_and_query_it(fido: RunningMock, db_url: str) -> None:
    """`swreg register --card twfido:ID` against the mock process, the phone approved with
    `swreg twfido approve`; the account's certificate is the holder's, rank mobile, and
    通關憑證查詢 shows it as 行動自然人憑證, not IC卡 (DESIGN.md §13)."""
    env = {"SWREG_SECRET_KEY": SECRET.hex(), "SWREG_ARGON2": "1,64,1"}
    runner = CliRunner()
    for command in fido.started["trust_commands"]:
        done = runner.invoke(cli_app, ["--db", db_url, *command[1:]], env=env)
        assert done.exit_code == 0, done.output
    answers = fido.folder / "answers.json"
    answers.write_text(json.dumps(PERSON_ANSWERS, ensure_ascii=False), encoding="utf-8")
    log = fido.folder / "register.err"
    with log.open("wb") as err:
        register = subprocess.Popen(
            [SWREG, "--db", db_url, "register", "--type", "person.general",
             "--answers", str(answers), "--card", f"twfido:{PERSON_ID}", "--json"],
            env=swreg_env(**env, **fido.started["settings"]),
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    try:
        tickets: list[dict[str, Any]] = []

        def a_ticket_is_pending() -> bool:
            done, out, _ = phone("pending", "--url", fido.url, "--json")
            tickets[:] = json.loads(out)["tickets"] if done == 0 else []
            return bool(tickets)

        wait_until(a_ticket_is_pending, register, log, "swreg register's ticket")
        assert phone("approve", tickets[0]["sp_ticket_id"], "--url", fido.url)[0] == 0
        stdout, _ = register.communicate(timeout=120)
    finally:
        stop_process(register)
    assert register.returncode == 0, log.read_text(errors="replace")
    made = json.loads(stdout)
    assert (made["account"], made["state"], made["type"]) == (
        "mei@example.com", "completed", "person.general"
    )  # fmt: skip

    shown = runner.invoke(
        cli_app, ["--db", db_url, "accounts", "show", "mei@example.com", "--json"], env=env
    )
    assert shown.exit_code == 0, shown.output
    certificates = json.loads(shown.stdout)["certificates"]
    assert [(c["fingerprint"], c["ca"], c["role"], c["status"]) for c in certificates] == [
        (fido.started["holders"][0]["fingerprint"], "MOICA", "mobile", "active")
    ]

    query = runner.invoke(
        cli_app, ["--db", db_url, "customs-cert", "query", PERSON_ID, "--json"], env=env
    )
    assert query.exit_code == 0, query.output
    rows = json.loads(query.stdout)["rows"]
    assert [(r["form"], r["form_en"], r["kind"], r["purpose"]) for r in rows] == [
        ("行動自然人憑證", "Mobile citizen certificate", "自然人憑證", "登入")
    ]
    assert query.stdout.count("IC卡") == 0


# -- the demo --------------------------------------------------------------------------------


def test_the_demo_mock_configures_the_portal(pki: TestPKI) -> None:
    """`swreg demo --serve` hands the portal SWREG_TWFIDO_* settings that reach its mock, whose
    two people hold mobile certificates under the demo's MOICA, hashed the same every run."""
    mobile = start_mobile_demo(pki)
    try:
        environment = _mobile_environment(mobile)
        assert TwFidoSettings.from_env(environment) == mobile.settings
        assert environment["SWREG_TWFIDO_URL"] == mobile.mock.url
        assert answers_http(mobile.mock.control_url)
        for person in (MOBILE_NARRATED, MOBILE_BROWSER):
            card = mobile.mock.holders[person.national_id].card
            identity = load_certificate(card.der()).identity
            assert (identity.name, identity.id_last4, identity.card_rank) == (
                person.name, person.national_id[-4:], "mobile"
            )  # fmt: skip
            card.certificate.verify_directly_issued_by(pki.cas[IssuerCA.MOICA].certificate)
            expected = hashlib.sha256(MOBILE_SALT + person.national_id.encode()).hexdigest()
            assert mobile.mock.hashed_id_num(person.national_id) == expected
        assert (MOBILE_BROWSER.national_id, MOBILE_BROWSER.name) == ("B220206182", "陳小美")
    finally:
        mobile.mock.stop()
