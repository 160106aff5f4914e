"""docs/operations.md lists the rate limits the code applies, exactly (DESIGN.md §11)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from engine.services import accounts, officers
from engine.web import _portal

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
ROW = re.compile(r"^\| `(\w+)` \| (\d+) \| (\d+) min \|", re.MULTILINE)


def tables() -> list[list[tuple[str, int, timedelta]]]:
    """The limit tables of the document, in order: (name, hits, window) rows."""
    found = []
    for block in DOC.read_text(encoding="utf-8").split("\n\n"):
        rows = [(n, int(h), timedelta(minutes=int(m))) for n, h, m in ROW.findall(block)]
        if rows:
            found.append(rows)
    return found


def test_the_documented_limits_are_the_codes() -> None:
    per_client, per_account = tables()
    assert per_client == [
        (rule.name, rule.limit, rule.window)
        for rule in vars(_portal).values()
        if isinstance(rule, _portal.Limit)
    ]
    assert per_account == [
        (rule.name, rule.limit, rule.window)
        for rule in vars(accounts).values()
        if isinstance(rule, accounts.AccountLimit)
    ]
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    minutes = officers.FAILURE_WINDOW // timedelta(minutes=1)
    officer_rule = f"after {officers.FAILURE_LIMIT} failed bearer tokens from one client in a"
    assert f"{officer_rule} {minutes}-minute window" in text
    assert accounts.MAX_FAILED_PASSWORDS == 5 and "Five wrong passwords in a row" in text
