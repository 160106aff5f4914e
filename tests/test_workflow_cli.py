"""``swreg workflow show`` and ``swreg workflow diagram``: the compiled machines, printed and drawn.

The README's Workflow diagram is checked against the command's output, so it cannot go stale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine import Catalog, load_definition, make_plugin_manager
from engine.cli import app as cli_app
from engine.cli.workflow import dot, graph, mermaid, paths
from engine.core.workflow import default_definition_source

from .test_approval import ApprovalPlugin, with_approval

ROOT = Path(__file__).resolve().parent.parent
PERSON_PATH = ["category", "card_check", "basic_data", "completed"]
ENTERPRISE_PATH = ["category", "card_check", "basic_data", "enterprise_info", "completed"]


def swreg(*args: str, env: dict[str, Any] | None = None) -> tuple[int, str]:
    """Run a command in-process with the built-in definition (SWREG_WORKFLOW unset)."""
    result = CliRunner().invoke(cli_app, list(args), env={"SWREG_WORKFLOW": None, **(env or {})})
    return result.exit_code, result.stdout


def as_json(*args: str, env: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    code, out = swreg(*args, "--json", env=env)
    return code, json.loads(out)


def test_the_readme_shows_the_default_diagram() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Workflow\n", 1)[1]
    match = re.search(r"```mermaid\n(.*?)```", section, re.S)
    assert match is not None, "README.md: no mermaid block under ## Workflow"
    code, printed = swreg("workflow", "diagram", "--format", "mermaid")
    assert code == 0
    assert match[1] == printed, "regenerate: swreg workflow diagram --format mermaid"


def test_show_lists_every_path_with_its_transitions() -> None:
    code, out = as_json("workflow", "show")
    assert code == 0 and out["ok"] is True
    assert out["workflow"]["name"] == "certificate-registration"
    assert (out["workflow"]["idle_timeout_minutes"], out["workflow"]["challenge_ttl_seconds"]) == (
        30, 300,
    )  # fmt: skip
    person, company = out["paths"]
    assert person["types"] == ["person.general", "person.customs_broker"]
    assert len(company["types"]) == 12 and "enterprise.organization" in company["types"]
    assert [s["id"] for s in person["states"]] == [*PERSON_PATH, "cancelled", "expired"]
    assert [s["id"] for s in company["states"]] == [*ENTERPRISE_PATH, "cancelled", "expired"]
    assert person["states"][0] == {
        "id": "category", "labels": {"zh-TW": "申請類別", "en": "Applicant type"},
        "actor": "applicant", "initial": True, "final": False, "timeout_minutes": None,
    }  # fmt: skip
    moves = {(t["source"], t["event"], t["target"]) for t in person["transitions"]}
    assert moves == {
        ("category", "next", "card_check"), ("category", "cancel", "cancelled"),
        ("category", "expire", "expired"),
        ("card_check", "next", "basic_data"), ("card_check", "back", "category"),
        ("card_check", "cancel", "cancelled"), ("card_check", "expire", "expired"),
        ("basic_data", "next", "completed"), ("basic_data", "back", "card_check"),
        ("basic_data", "cancel", "cancelled"), ("basic_data", "expire", "expired"),
    }  # fmt: skip


def test_show_one_type_for_people() -> None:
    code, out = as_json("workflow", "show", "--type", "enterprise.government")
    assert code == 0
    [path] = out["paths"]
    assert path["types"] == ["enterprise.government"]
    code, text = swreg("workflow", "show", "--type", "person.general")
    assert code == 0
    assert "路徑 / path 1: person.general" in text
    assert "basic_data  基本資料 / Basic data" in text
    assert "next → completed  back → card_check  cancel → cancelled  expire → expired" in text
    code, refused = as_json("workflow", "show", "--type", "person.nobody")
    assert code == 1 and refused["errors"][0]["code"] == "unknown_type"


def test_diagram_formats_and_output_file(tmp_path: Path) -> None:
    code, out = as_json("workflow", "diagram", "--format", "dot", "--type", "person.general")
    assert code == 0
    text = out["diagram"]
    assert text.startswith('digraph "certificate-registration" {')
    assert '"basic_data" -> "completed" [label="next"];' in text
    assert '"completed" [label="註冊完成\\ncompleted", peripheries=2];' in text
    assert "enterprise_info" not in text
    target = tmp_path / "flow.mmd"
    code, out = as_json("workflow", "diagram", "--output", str(target))
    assert (code, out["output"]) == (0, str(target))
    assert target.read_text(encoding="utf-8") == swreg("workflow", "diagram")[1]
    code, refused = as_json("workflow", "diagram", "--format", "svg")
    assert (code, refused["errors"][0]["code"]) == (2, "usage")


def test_a_broken_workflow_file_names_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    source = default_definition_source().replace('"enterprise_info"', '"enterprize_info"')
    broken.write_text(source, encoding="utf-8")
    line = source.splitlines().index('id = "enterprize_info"') + 1
    code, out = as_json("workflow", "show", "--workflow", str(broken))
    assert code == 3
    [error] = out["errors"]
    assert error["code"] == "definition_invalid"
    assert (error["line"], error["source"]) == (line, str(broken))
    assert "unknown step 'enterprize_info'" in error["detail"]
    code, out = as_json("workflow", "show", "--workflow", str(tmp_path / "missing.toml"))
    assert code == 2


def test_officer_steps_in_the_drawings() -> None:
    """With an approval step for one type, the union qualifies the edges that differ."""
    catalog = Catalog.from_plugins(make_plugin_manager(plugins=[ApprovalPlugin()]))
    definition = load_definition(
        with_approval('["enterprise.shipping"]', "timeout_minutes = 1440"),
        contributed=catalog.steps,
        applicants=catalog.applicant_types.values(),
    )
    applicants = list(catalog.applicant_types.values())
    assert len(paths(definition, applicants)) == 3  # person, enterprise, shipping
    union = graph(definition, applicants)
    drawn = mermaid(union)
    assert '    state "審核 approval (officer)" as approval' in drawn
    assert "    enterprise_info --> approval: next (enterprise.shipping)" in drawn
    assert (
        "    enterprise_info --> completed: next (enterprise except enterprise.shipping)" in drawn
    )
    assert "    approval --> completed: approve" in drawn
    assert "    approval --> rejected: reject" in drawn
    assert "    rejected --> [*]" in drawn
    assert "    class approval officer" in drawn
    assert "approval --> enterprise_info" not in drawn  # no back out of an officer step
    graphviz = dot(union)
    assert '"approval" -> "rejected" [label="reject"];' in graphviz
    assert 'fillcolor="#fff3cd"' in graphviz


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_every_state_of_the_machines_is_drawn(fmt: str) -> None:
    code, text = swreg("workflow", "diagram", "--format", fmt)
    assert code == 0
    for state in (*ENTERPRISE_PATH, "cancelled", "expired"):
        assert state in text
