"""Every command of docs/operations.md is run by a test (issue 18 item 7, DESIGN.md §11).

The document's ``sh`` blocks are read here. Three passages are executed for real, verbatim,
in bash with ``set -euo pipefail``:

- "Try it on this machine" (Several machines on one PostgreSQL) followed by "A restore drill on
  PostgreSQL" (Backups and restore), in one shell: the walkthrough's first block is the one
  line ``scripts/with-postgres bash``, and the test runs ``scripts/with-postgres bash SCRIPT``
  with every later block of the two passages as SCRIPT — a throwaway PostgreSQL cluster of its
  own, whatever ``SWREG_TEST_DATABASE`` is: two ``swreg serve`` processes on two ports, a
  registration across them, both ``/metrics`` (parsed here with prometheus-client's parser),
  then pg_dump, another registration, pg_restore and the checks after a restore;
- the drill of "SQLite" (Backups and restore), from the checkout like the walkthrough.

Conventions, so that the document stays what a newcomer types: the example ports are set on
one line each, ``export P1=8001 P2=8002`` (walkthrough) and ``export P1=8001`` (SQLite drill),
and only these lines change: to free ports. ``TMPDIR`` is the test's own directory (each drill
``cd "$(mktemp -d)"``), no ``SWREG_*`` variable is inherited, and a trap of the test stops the
portals a failing command would leave behind. Between blocks the test echoes a marker, so each
block's output is known: a ``text`` block right after an executed ``sh`` block is the output
that block must print, exactly.

A section another test runs verbatim is in :data:`PASSAGES_ELSEWHERE` ("Rotating
SWREG_SECRET_KEY": tests/test_key_rotation.py). Every other command line (a crontab line, an
address such as 10.0.0.5, the proxy's settings) is in :data:`ELSEWHERE` with the test that runs
its command; a line that is in none of them fails :func:`test_every_command_line_is_run_by_a_test`,
and so does an entry no longer in the document or naming a test whose source does not show the
command.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from engine.testing.ports import free_port

from .processes import descendants, start_time, stop_process
from .test_metrics import Samples, key, moved, parse

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
RUN_TIMEOUT = 300.0
"""A guard against a hang, never a timing assertion (a run takes 15-40 s)."""

WALKTHROUGH = ("Several machines on one PostgreSQL", "Try it on this machine")
PG_DRILL = ("Backups and restore", "PostgreSQL", "A restore drill on PostgreSQL")
SQLITE_DRILL = ("Backups and restore", "SQLite")
SHELL = "scripts/with-postgres bash"
"""The walkthrough's first block: the shell the rest runs in."""
WALKTHROUGH_PORTS = "export P1=8001 P2=8002"
SQLITE_PORT = "export P1=8001"
MARKER = "::block {}::"

ELSEWHERE: dict[str, tuple[str, str]] = {
    # Behind a reverse proxy
    "export SWREG_PUBLIC_ORIGIN=https://portal.example": (
        "tests/test_proxy_and_host.py::test_allowed_hosts_come_from_the_environment",
        '"SWREG_PUBLIC_ORIGIN": "https://portal.example"',
    ),
    "export SWREG_TRUSTED_PROXIES=10.0.0.0/24": (
        "tests/test_proxy_and_host.py::test_behind_a_trusted_proxy_each_client_gets_its_own_bucket",
        "proxied(app)",
    ),
    "export SWREG_ALLOWED_HOSTS=backend:8000": (
        "tests/test_proxy_and_host.py::test_allowed_hosts_come_from_the_environment",
        '"SWREG_ALLOWED_HOSTS": "Backend:8000"',
    ),
    "swreg serve --host 10.0.0.5 --port 8000 --workers 2": (
        "tests/test_shutdown.py::test_sigterm_lets_a_running_registration_finish",
        "workers=2",  # swreg serve --host 127.0.0.1 --port <free> --workers 2 (processes.serve)
    ),
    # Several machines on one PostgreSQL (the machines of the example are not this one)
    "swreg serve --host 10.0.0.5 --port 8000 --workers 4": (
        "tests/test_metrics.py::test_two_workers_report_one_registration_whichever_answers",
        "workers=2",  # the same command on 127.0.0.1, a free port and 2 workers
    ),
    # Cron jobs: the crontab's commands
    "*/30 * * * *  swreg revocation refresh --json >> /var/log/swreg/refresh.log || alert-oncall": (
        "tests/test_revocation_ocsp_renewal.py"
        "::test_cli_refresh_exits_1_while_a_signing_certificates_responder_is_down",
        '["revocation", "refresh", "--json"]',
    ),
    "15 3 * * *    swreg reminders send --days 60 --json >> /var/log/swreg/reminders.log"
    " || alert-oncall": (
        "tests/test_reminders.py::test_cli_reminders_send",
        '["reminders", "send", "--days", "60", "--json"]',
    ),
    "45 3 * * *    swreg purge --json >> /var/log/swreg/purge.log || alert-oncall": (
        "tests/test_purge.py::test_swreg_purge_json",
        "purge_command(db_url)",  # swreg purge --json
    ),
    # Revocation refresh
    "swreg crl source add https://crl-moica.moi.gov.tw/crl/MOICA-G3-complete.crl": (
        "tests/test_revocation_refresh.py::test_a_fetched_crl_is_stored_used_by_cert_inspect_then_304_then_replaced",
        'swreg("crl", "source", "add", url)',
    ),
    "swreg revocation refresh --json": (
        "tests/test_revocation_ocsp_renewal.py"
        "::test_cli_refresh_exits_1_while_a_signing_certificates_responder_is_down",
        '["revocation", "refresh", "--json"]',
    ),
    # Officers
    "swreg officers add lin.cer --name 林關員 --role reviewer": (
        "tests/test_officers.py::test_the_officers_commands",
        '"officers", "add", lin_cer, "--name", "林關員", "--role", "reviewer"',
    ),
    "swreg officers token 林關員": (
        "tests/test_officers.py::test_the_officers_commands",
        'cli.text("officers", "token", "林關員")',
    ),
    # Metrics
    "swreg serve --port 8000 --workers 2": (
        "tests/test_metrics.py::test_two_workers_report_one_registration_whichever_answers",
        "workers=2",
    ),
    "curl -s http://127.0.0.1:8000/metrics | grep '^swreg_registrations'": (
        "tests/test_metrics.py::test_two_workers_report_one_registration_whichever_answers",
        "scrape(http)",
    ),
    "SWREG_METRICS_ALLOW=10.0.0.9/32 swreg serve --host 10.0.0.5 --port 8000 --workers 2": (
        "tests/test_metrics.py::test_the_allow_list_is_the_operators",
        '"SWREG_METRICS_ALLOW"',
    ),
}
"""Command lines that cannot run here verbatim → (the test that runs their command, a string
of that test's source showing it does)."""

PASSAGES_ELSEWHERE: dict[tuple[str, ...], tuple[str, str]] = {
    ("Rotating SWREG_SECRET_KEY",): (
        "tests/test_key_rotation.py::test_the_rotation_drill_of_operations_md",
        "rotation_section_commands()",
    ),
}
"""Sections whose every ``sh`` block another test runs verbatim → (that test, a string of its
source showing it does)."""


# -- reading the document --------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced block: its language, text, the headings it is under, and what came before it
    since the previous block (to tell a block's expected output from a later one)."""

    language: str
    text: str
    headings: tuple[str, ...]
    gap: str
    """The document's text between the previous fence and this one."""


HEADING = re.compile(r"^(#{2,4}) (.+)$")


def blocks() -> list[Block]:
    """Every fenced block of the document, in order (headings inside blocks are not headings)."""
    found: list[Block] = []
    trail: list[str] = []
    gap: list[str] = []
    fence: tuple[str, list[str]] | None = None  # (language, lines) while inside a block
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if fence is None:
            if line.startswith("```"):
                fence = (line[3:].strip(), [])
                continue
            heading = HEADING.match(line)
            if heading:
                trail = [*trail[: len(heading.group(1)) - 2], heading.group(2).strip()]
            gap.append(line)
        elif line.rstrip() == "```":
            language, text = fence
            found.append(
                Block(language, "".join(f"{x}\n" for x in text), tuple(trail), "\n".join(gap))
            )
            fence, gap = None, []
        else:
            fence[1].append(line)
    assert fence is None, "a block is not closed"
    return found


def sh_blocks(headings: tuple[str, ...] | None = None) -> list[Block]:
    """The ``sh`` blocks, or those under exactly ``headings``."""
    return [
        block
        for block in blocks()
        if block.language == "sh" and (headings is None or block.headings == headings)
    ]


def commands(block: Block) -> list[str]:
    """The block's command lines: continuation lines joined, a here-document kept with the line
    that opens it, comment-only and blank lines left out."""
    lines = block.text.splitlines()
    found: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + lines[i].strip()
            i += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", line)
        if heredoc:
            end = heredoc.group(1)
            body = []
            while i < len(lines) and lines[i].strip() != end:
                body.append(lines[i])
                i += 1
            i += 1
            line = "\n".join([line, *body, end])
        found.append(line)
    return found


def normalized(command: str) -> str:
    """A command without its trailing comment (`` # …``) and outer spaces."""
    first, *rest = command.split("\n")
    first = re.sub(r"\s+#\s.*$", "", first).strip()
    return "\n".join([first, *rest])


def executed_blocks() -> list[Block]:
    return [*sh_blocks(WALKTHROUGH), *sh_blocks(PG_DRILL), *sh_blocks(SQLITE_DRILL)]


# -- running passages ------------------------------------------------------------------------


def script(passage: list[Block], substitutions: dict[str, str]) -> str:
    """The passage's blocks as one bash script, with the test's markers and port lines."""
    lines = [
        "set -euo pipefail",
        # stop what the script started in the background, should a command fail before the
        # document's own `kill ...; wait`
        "trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT",
    ]
    for number, block in enumerate(passage):
        lines.append(f"echo '{MARKER.format(number)}'")
        text = block.text
        for line, replacement in substitutions.items():
            assert text.count(line + "\n") <= 1
            text = text.replace(line + "\n", replacement + "\n")
        lines.append(text)
    return "\n".join(lines) + "\n"


def environment(tmp: Path) -> dict[str, str]:
    """This environment without ``SWREG_*`` (nor a multiprocess directory), ``TMPDIR`` the
    test's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWREG_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["TMPDIR"] = str(tmp)
    return env


@dataclass(frozen=True)
class Run:
    outputs: list[str]
    """Each block's standard output."""
    stderr: str


def run(args: list[str], text: str, tmp: Path) -> Run:
    """Run ``args`` + the script file from the checkout; fail with both streams on error."""
    path = tmp / "passage.sh"
    path.write_text(text, encoding="utf-8")
    out, err = tmp / "stdout", tmp / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [*args, str(path)], cwd=ROOT, env=environment(tmp), stdout=stdout, stderr=stderr
        )
        try:
            process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            # end what runs under scripts/with-postgres first, so that its trap stops the cluster
            for pid, started in descendants(process.pid):
                if start_time(pid) == started:
                    os.kill(pid, signal.SIGTERM)
            stop_process(process)
    stdout_text = out.read_text(encoding="utf-8", errors="replace")
    stderr_text = err.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, f"exit {process.returncode}\n{stdout_text}\n{stderr_text}"
    parts = re.split(r"^::block (\d+)::\n", stdout_text, flags=re.MULTILINE)
    outputs = parts[2::2]
    assert [int(n) for n in parts[1::2]] == list(range(len(outputs)))
    return Run(outputs, stderr_text)


def check_expected_outputs(passage: list[Block], result: Run) -> int:
    """Each ``text`` block right after one of the passage's blocks is that block's output."""
    every = blocks()
    checked = 0
    for number, block in enumerate(passage):
        for following in every[every.index(block) + 1 :][:1]:
            if following.language == "text" and not following.gap.strip():
                assert result.outputs[number] == following.text, (number, block.text)
                checked += 1
    return checked


def one(tmp: Path, name: str) -> Path:
    (path,) = tmp.rglob(name)
    return path


def counters(path: Path) -> Samples:
    """The counts a portal's scrape shows (counters and histogram counts that moved)."""
    return moved({}, parse(path.read_text(encoding="utf-8")))


# -- the tests -------------------------------------------------------------------------------


def test_the_runnable_passages_are_where_the_tests_expect_them() -> None:
    walkthrough, pg_drill, sqlite_drill = (
        sh_blocks(WALKTHROUGH),
        sh_blocks(PG_DRILL),
        sh_blocks(SQLITE_DRILL),
    )
    assert len(walkthrough) >= 4 and len(pg_drill) >= 3 and len(sqlite_drill) >= 5
    assert [normalized(c) for c in commands(walkthrough[0])] == [SHELL]
    assert sum(WALKTHROUGH_PORTS in commands(b) for b in walkthrough) == 1
    assert sum(SQLITE_PORT in commands(b) for b in sqlite_drill) == 1
    assert normalized(commands(pg_drill[-1])[-1]) == "exit"  # the shell ends with the drill


def test_every_command_line_is_run_by_a_test() -> None:
    shell_like = [b.text for b in blocks() if b.language in ("", "bash", "shell", "console", "zsh")]
    assert shell_like == [], "commands go in ```sh blocks, which this file checks"
    executed = {normalized(c) for block in executed_blocks() for c in commands(block)}
    run_elsewhere = [
        block for block in sh_blocks()
        if any(block.headings[: len(h)] == h for h in PASSAGES_ELSEWHERE)
    ]  # fmt: skip
    others = [
        normalized(c) for block in sh_blocks()
        if block not in executed_blocks() and block not in run_elsewhere
        for c in commands(block)
    ]  # fmt: skip
    unmapped = [c for c in others if c not in executed and c not in ELSEWHERE]
    assert unmapped == [], (
        "run these in a passage of tests/test_docs_operations_commands.py, or map each to the "
        "test that runs its command (ELSEWHERE)"
    )
    stale = [line for line in ELSEWHERE if line not in others]
    assert stale == []
    present = [
        h for h in PASSAGES_ELSEWHERE if any(b.headings[: len(h)] == h for b in run_elsewhere)
    ]
    for line, (node, evidence) in [
        *ELSEWHERE.items(),
        *((h, PASSAGES_ELSEWHERE[h]) for h in present),
    ]:
        path, name = node.split("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        (function,) = [
            f
            for f in ast.walk(ast.parse(source))
            if isinstance(f, ast.FunctionDef) and f.name == name
        ]
        assert evidence in (ast.get_source_segment(source, function) or ""), (line, node)


def test_two_portals_on_one_postgresql_then_a_restore_drill(tmp_path: Path) -> None:
    """The walkthrough and the PostgreSQL drill, as one shell would run them: both portals
    ready, one registration across them, both scrapes showing what each process counted; a
    dump, another registration, the restore into a new database and its checks."""
    walkthrough, drill = sh_blocks(WALKTHROUGH), sh_blocks(PG_DRILL)
    p1, p2 = free_port(), free_port()
    while p2 == p1:
        p2 = free_port()
    text = script([*walkthrough[1:], *drill], {WALKTHROUGH_PORTS: f"export P1={p1} P2={p2}"})
    result = run(SHELL.split(), text, tmp_path)
    passage = [*walkthrough[1:], *drill]
    assert check_expected_outputs(passage, result) == 3  # readyz, the registration, /metrics

    first, second = (
        counters(one(tmp_path, "metrics-1.txt")),
        counters(one(tmp_path, "metrics-2.txt")),
    )
    steps = "swreg_step_duration_seconds_count"
    assert first == {
        key("swreg_registrations_started_total", type="person.general"): 1,
        key("swreg_registrations_completed_total", type="person.general"): 1,
        key(steps, step="category"): 1,
        key(steps, step="basic_data"): 1,
        key("swreg_mails_total", outcome="sent"): 1,
    }
    assert second == {
        key(steps, step="card_check"): 1,
        key("swreg_card_check_duration_seconds_count"): 1,
        # the card and its CA: no OCSP responder named, the stored CRLs answer
        key("swreg_revocation_answers_total", source="ocsp", status="unknown"): 2,
        key("swreg_revocation_answers_total", source="crl", status="good"): 2,
    }

    checks = result.outputs[len(walkthrough) - 1 + len(drill) - 1]
    assert_restored(checks)


def assert_restored(checks: str) -> None:
    """The checks after a restore printed what the document says they show."""
    assert "audit chain intact" in checks
    assert "database ready" in checks  # swreg init at head
    assert "帳號 / account: ming@example.com" in checks
    assert "此帳號可使用 / this account is available" in checks  # wei@example.com: after the backup
    assert "登入用憑證" in checks and "m**g@example.com" in checks  # the lookup by national ID
    ready = [line for line in checks.splitlines() if line.startswith("{")]
    assert ready == [
        '{"ready":true,"checks":{"database":"ok","migrations":"ok","trust_anchors":"ok",'
        '"crls":"ok","mail":"ok"}}'
    ]


def test_the_sqlite_backup_and_restore_drill(tmp_path: Path) -> None:
    passage = sh_blocks(SQLITE_DRILL)
    text = script(passage, {SQLITE_PORT: f"export P1={free_port()}"})
    result = run(["bash"], text, tmp_path)
    check_expected_outputs(passage, result)
    work = one(tmp_path, "ming.json").parent
    backups = sorted(p.name for p in (work / "backups").iterdir())
    assert backups == ["swreg-py.db", "swreg.db"]
    assert [p.name for p in (work / "keys").iterdir()] == ["swreg.db.key"]
    for path in (*(work / "backups").iterdir(), work / "keys" / "swreg.db.key"):
        assert path.stat().st_mode & 0o077 == 0, path  # umask 077: owner-only copies
    assert_restored(result.outputs[-1])
