"""The architecture drawn in the README is the one import-linter checks (pyproject.toml).

``make test`` runs ``lint-imports`` on the contracts; this test keeps the README's diagram and
its list of rules generated from those same contracts, so neither can drift from the other.
Print the expected block with ``python -m tests.test_architecture``.
"""

from __future__ import annotations

import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- architecture: generated from pyproject.toml by tests/test_architecture.py -->"
END = "<!-- /architecture -->"

LABELS = {
    "engine.cli": "engine.cli<br>the swreg command",
    "engine.web": "engine.web<br>the portal",
    "engine._bootstrap": "engine._bootstrap<br>bootstrap(settings): the wiring",
    "engine.services": "engine.services<br>one service per capability",
    "engine.store": "engine.store<br>SQLAlchemy, audit chain",
    "engine.pki": "engine.pki<br>pure certificate work",
    "engine.core": "engine.core<br>pure domain",
    "engine": "engine (public API)<br>__init__ + hookspecs",
    "plugins": "plugins/*",
    "readers": "readers/*",
}


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _node(module: str) -> str:
    return module.replace("engine.", "").lstrip("_").replace("engine", "api")


def architecture_block() -> str:
    """The README's diagram and rules, from the import-linter contracts."""
    contracts = _contracts()
    stack = contracts["layers"]["layers"]
    pure = contracts["pure-domain"]["layers"]
    public_users = contracts["public-api-only"]["source_modules"]
    modules = [*stack, *pure, "engine", *public_users]
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'    {_node(m)}["{LABELS[m]}"]' for m in modules]
    lines += [f"    {_node(upper)} --> {_node(lower)}" for upper, lower in pairwise(stack)]
    lines.append(f"    {_node('engine.services')} --> {_node(pure[0])}")
    lines += [f"    {_node(upper)} --> {_node(lower)}" for upper, lower in pairwise(pure)]
    lines += [f"    {_node(user)} --> api" for user in public_users]
    lines += ["```", "", "An arrow points at what a package may import (and, through it, what"]
    lines += ["that imports); nothing imports upwards. The contracts `make test` checks:", ""]
    lines += [f"- {' '.join(c['name'].split())}" for c in contracts.values()]
    return "\n".join([BEGIN, *lines, END])


def test_the_readme_draws_the_checked_architecture() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == architecture_block(), architecture_block()


def test_every_layer_of_the_contracts_exists() -> None:
    contracts = _contracts()
    layered = [*contracts["layers"]["layers"], *contracts["pure-domain"]["layers"]]
    for module in layered:
        path = ROOT / module.replace(".", "/")
        assert path.is_dir() or path.with_suffix(".py").is_file(), module


if __name__ == "__main__":
    print(architecture_block())
