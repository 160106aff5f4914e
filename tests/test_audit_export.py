"""``swreg audit export`` (JSON Lines with the chain hashes) and the standalone verifier,
``scripts/verify-audit-export.py``, which must get by with the Python standard library alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine import App, Settings, bootstrap
from engine.cli import app as cli_app
from engine.store import HASHED_FIELDS, entry_hash
from engine.testing.pki import TestPKI

from .conftest import COMPANY_ANSWERS, PERSON_ANSWERS, SECRET
from .helpers import enrol

ROOT = Path(__file__).resolve().parent.parent
VERIFIER = ROOT / "scripts" / "verify-audit-export.py"


@pytest.fixture
def logged(app: App, pki: TestPKI) -> App:
    """An audit log of two whole registrations and a cancelled one."""
    enrol(app, "person.general", pki.issue_person(), PERSON_ANSWERS)
    enrol(app, "enterprise.general", pki.issue_company("04595257"), COMPANY_ANSWERS)
    view = app.registrations.start("person.general", consent=True)
    app.registrations.cancel(view.id)
    return app


def export(app: App, *args: str) -> tuple[int, str, str]:
    env = {"SWREG_DATABASE_URL": app.settings.database_url, "SWREG_SECRET_KEY": SECRET.hex()}
    result = CliRunner().invoke(cli_app, ["audit", "export", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def verify(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the verifier as an auditor would: a bare interpreter, no site-packages (``-I -S``)."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(VERIFIER), str(path), "--json", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, result


@pytest.fixture
def exported(logged: App, tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "audit.jsonl"
    code, stdout, _ = export(logged, "--output", str(path), "--json")
    assert code == 0
    summary = json.loads(stdout)
    lines = path.read_text(encoding="utf-8").splitlines()
    with logged.database.unit_of_work() as uow:
        chain = uow.audit.verify()
    assert summary == {
        "ok": True, "output": str(path), "rows": chain.rows, "last_hash": chain.last_hash,
    }  # fmt: skip
    assert len(lines) == chain.rows > 10
    return path, lines


def test_the_export_holds_every_column_of_the_chain(
    exported: tuple[Path, list[str]], logged: App
) -> None:
    _, lines = exported
    records = [json.loads(line) for line in lines]
    with logged.database.unit_of_work() as uow:
        rows = uow.audit.entries(limit=10_000)
        for record, row in zip(records, rows, strict=True):
            assert list(record) == [*HASHED_FIELDS, "hash"]
            assert (record["seq"], record["hash"], record["prev_hash"]) == (
                row.seq, row.hash, row.prev_hash,
            )  # fmt: skip
            assert record["at"].endswith("+00:00")
            assert entry_hash(record) == record["hash"]
    assert records[0]["prev_hash"] == "0" * 64
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert "王小明" not in "\n".join(lines)  # the diff is masked, as stored


def test_the_verifier_accepts_an_intact_export(exported: tuple[Path, list[str]]) -> None:
    path, lines = exported
    code, result = verify(path)
    assert (code, result["ok"], result["rows"]) == (0, True, len(lines))
    assert result["last_hash"] == json.loads(lines[-1])["hash"]
    code, result = verify(path, "--expect-last-hash", result["last_hash"])
    assert code == 0
    human = subprocess.run(
        [sys.executable, "-I", "-S", str(VERIFIER), str(path)], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert human.stdout.startswith(f"intact: {len(lines)} rows")


def _rewrite(path: Path, lines: list[str]) -> Path:
    edited = path.with_name("edited.jsonl")
    edited.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return edited


def test_an_edited_line_is_named(exported: tuple[Path, list[str]]) -> None:
    path, lines = exported
    record = json.loads(lines[6])
    record["actor"] = "someone-else"
    lines[6] = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    code, result = verify(_rewrite(path, lines))
    assert (code, result["ok"], result["line"], result["seq"]) == (1, False, 7, 7)
    assert result["reason"].startswith("edited")


def test_an_edited_line_with_its_hash_recomputed_breaks_the_next_link(
    exported: tuple[Path, list[str]],
) -> None:
    path, lines = exported
    record = json.loads(lines[4])
    record["diff"] = {"forged": True}
    record["hash"] = entry_hash(record)
    lines[4] = json.dumps(record, ensure_ascii=False)
    code, result = verify(_rewrite(path, lines))
    assert (code, result["line"], result["seq"]) == (1, 6, 6)
    assert result["reason"].startswith("broken link")


def test_a_deleted_line_is_named(exported: tuple[Path, list[str]]) -> None:
    path, lines = exported
    del lines[3]
    code, result = verify(_rewrite(path, lines))
    assert (code, result["line"], result["seq"]) == (1, 4, 5)
    assert "deleted" in result["reason"]


def test_reordered_lines_are_named(exported: tuple[Path, list[str]]) -> None:
    path, lines = exported
    lines[8], lines[9] = lines[9], lines[8]
    code, result = verify(_rewrite(path, lines))
    assert (code, result["line"], result["seq"]) == (1, 9, 10)
    assert "moved" in result["reason"]


def test_cut_off_newest_lines_need_the_kept_last_hash(exported: tuple[Path, list[str]]) -> None:
    path, lines = exported
    last_hash = json.loads(lines[-1])["hash"]
    truncated = _rewrite(path, lines[:-2])
    assert verify(truncated)[0] == 0  # the chain alone cannot tell
    code, result = verify(truncated, "--expect-last-hash", last_hash)
    assert (code, result["line"]) == (1, None)
    assert "cut off" in result["reason"]


def test_export_to_stdout_keeps_the_summary_on_stderr(
    exported: tuple[Path, list[str]], logged: App
) -> None:
    _, lines = exported
    code, stdout, stderr = export(logged, "--json")
    assert code == 0
    assert stdout.splitlines() == lines
    assert json.loads(stderr)["rows"] == len(lines)


def test_an_empty_log_exports_nothing(settings: Settings, tmp_path: Path) -> None:
    empty = bootstrap(settings)
    try:
        target = tmp_path / "empty.jsonl"
        code, stdout, _ = export(empty, "--output", str(target), "--json")
        assert code == 0
        assert json.loads(stdout) == {
            "ok": True, "output": str(target), "rows": 0, "last_hash": None,
        }  # fmt: skip
        assert target.read_text(encoding="utf-8") == ""
        assert verify(target) == (0, {"ok": True, "rows": 0, "line": None, "seq": None,
                                      "reason": None, "last_hash": None})  # fmt: skip
    finally:
        empty.close()
