"""docs/security.md names the tests behind each control: every one of them exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
# ``tests/test_x.py::test_name``, or ``::test_name`` for the file named last before it
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(test_\w+)`")


def named_tests() -> list[tuple[str, str]]:
    found, current = [], None
    for match in REFERENCE.finditer(DOC.read_text(encoding="utf-8")):
        current = match.group(1) or current
        assert current is not None, f"{match.group(0)} names no file"
        found.append((current, match.group(2)))
    return found


def test_every_test_the_security_document_names_exists() -> None:
    named = named_tests()
    assert len(named) > 60
    missing = []
    for path, name in named:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        functions = {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert missing == []
