"""``swreg workflow``: the registration workflow as the engine compiled it.

``show`` prints, for each applicant type (or each group of types walking the same path), the
states and the transitions by event (``next``, ``back``, ``approve``, ``reject``, ``cancel``,
``expire``); ``diagram`` draws the same machine as Mermaid or Graphviz DOT. Both read the
compiled python-statemachine classes back (:func:`engine.core.workflow.transitions`), never a
hand-written picture, so what they print is what runs. Neither needs the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from engine._bootstrap import load_workflow
from engine._errors import UsageError
from engine._plugins import Catalog, make_plugin_manager
from engine.cli.support import JsonOption, command, settings
from engine.core.declarations import ApplicantType, Category
from engine.core.workflow import (
    OFFICER,
    MachineState,
    Step,
    Transition,
    WorkflowDefinition,
    machine_states,
    transitions,
)

workflow_app = typer.Typer(
    help="The registration workflow (憑證註冊流程): states, transitions, diagrams.",
    no_args_is_help=True,
)

TypeOption = Annotated[
    str | None,
    typer.Option("--type", help="One applicant type code (default: every type's path)."),
]
WorkflowOption = Annotated[
    Path | None,
    typer.Option(
        "--workflow", help="A definition file to read instead of SWREG_WORKFLOW or the built-in."
    ),
]
FORMATS = ("mermaid", "dot")


# -- the model: paths and their union ----------------------------------------------------------


@dataclass(frozen=True)
class WorkflowPath:
    """The compiled machine of one or more applicant types that walk the same path."""

    types: tuple[str, ...]
    states: tuple[MachineState, ...]
    transitions: tuple[Transition, ...]


@dataclass
class Graph:
    """The union of the machines of several types; each edge knows which types it serves."""

    name: str
    all_types: frozenset[str]
    categories: dict[str, frozenset[str]]
    states: dict[str, MachineState] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    reaching: dict[str, set[str]] = field(default_factory=dict)
    """The types whose machine has each state."""

    def qualifier(self, source: str, types: Iterable[str]) -> str:
        """Whom an edge from ``source`` serves: '' when every type that reaches ``source``,
        else categories, 'category except codes' or codes, whichever is shortest."""
        serves = frozenset(types)
        if serves == frozenset(self.reaching.get(source, ())) or serves == self.all_types:
            return ""
        parts = []
        for category, members in self.categories.items():
            inside = serves & members
            if not inside:
                continue
            if inside == members:
                parts.append(category)
            elif len(members - inside) < len(inside):
                parts.append(f"{category} except {', '.join(sorted(members - inside))}")
            else:
                parts.extend(sorted(inside))
        return ", ".join(parts)


def paths(
    definition: WorkflowDefinition, applicants: Sequence[ApplicantType]
) -> list[WorkflowPath]:
    """Every distinct compiled machine, with the types that walk it, in catalogue order."""
    grouped: dict[tuple[Any, ...], list[str]] = {}
    machines: dict[tuple[Any, ...], tuple[tuple[MachineState, ...], tuple[Transition, ...]]] = {}
    for applicant in applicants:
        states = machine_states(definition, applicant)
        moves = transitions(definition, applicant)
        key = (states, moves)
        grouped.setdefault(key, []).append(applicant.code)
        machines[key] = (states, moves)
    return [WorkflowPath(tuple(codes), *machines[key]) for key, codes in grouped.items()]


def graph(definition: WorkflowDefinition, applicants: Sequence[ApplicantType]) -> Graph:
    categories: dict[str, frozenset[str]] = {}
    for category in Category:
        members = frozenset(a.code for a in applicants if a.category is category)
        if members:
            categories[category.value] = members
    union = Graph(
        name=definition.name,
        all_types=frozenset(a.code for a in applicants),
        categories=categories,
    )
    order = [s.id for s in definition.steps] + [Step.REJECTED, Step.CANCELLED, Step.EXPIRED]
    found: dict[str, MachineState] = {}
    for path in paths(definition, applicants):
        for machine_state in path.states:
            found.setdefault(machine_state.id, machine_state)
            union.reaching.setdefault(machine_state.id, set()).update(path.types)
        for move in path.transitions:
            union.edges.setdefault((move.source, move.event, move.target), set()).update(path.types)
    union.states = {sid: found[sid] for sid in order if sid in found}
    rank = {sid: i for i, sid in enumerate(union.states)}
    events = ("next", "approve", "reject", "back", "cancel", "expire")
    union.edges = dict(
        sorted(
            union.edges.items(),
            key=lambda item: (rank[item[0][0]], events.index(item[0][1]), rank[item[0][2]]),
        )
    )
    return union


# -- renderers --------------------------------------------------------------------------------


def mermaid(union: Graph) -> str:
    """A Mermaid ``stateDiagram-v2`` of ``union`` (what README.md embeds)."""
    lines = ["stateDiagram-v2", "    direction LR"]
    for sid, machine_state in union.states.items():
        label = f"{machine_state.labels.zh_tw} {sid}"
        if machine_state.actor == OFFICER:
            label += " (officer)"
        lines.append(f'    state "{label.replace(chr(34), chr(39))}" as {sid}')
    for sid, machine_state in union.states.items():
        if machine_state.initial:
            lines.append(f"    [*] --> {sid}")
    for (source, event, target), types in union.edges.items():
        qualifier = union.qualifier(source, types)
        suffix = f" ({qualifier})" if qualifier else ""
        lines.append(f"    {source} --> {target}: {event}{suffix}")
    for sid, machine_state in union.states.items():
        if machine_state.final:
            lines.append(f"    {sid} --> [*]")
    officers = [sid for sid, s in union.states.items() if s.actor == OFFICER]
    if officers:
        lines.append("    classDef officer fill:#fff3cd,stroke:#b8860b")
        lines.append(f"    class {','.join(officers)} officer")
    return "\n".join(lines) + "\n"


def dot(union: Graph) -> str:
    """A Graphviz DOT digraph of ``union``."""
    lines = [
        f'digraph "{_dot_text(union.name)}" {{',
        "    rankdir=LR;",
        "    node [shape=box, style=rounded];",
        '    "__start__" [shape=point, label=""];',
    ]
    for sid, machine_state in union.states.items():
        parts = [machine_state.labels.zh_tw, sid]
        attributes = []
        if machine_state.actor == OFFICER:
            parts.append("(officer)")
            attributes.append('style="rounded,filled", fillcolor="#fff3cd"')
        if machine_state.final:
            attributes.append("peripheries=2")
        label = "\\n".join(_dot_text(part) for part in parts)
        extra = (", " + ", ".join(attributes)) if attributes else ""
        lines.append(f'    "{sid}" [label="{label}"{extra}];')
    for sid, machine_state in union.states.items():
        if machine_state.initial:
            lines.append(f'    "__start__" -> "{sid}";')
    for (source, event, target), types in union.edges.items():
        qualifier = union.qualifier(source, types)
        label = event + (f" ({qualifier})" if qualifier else "")
        lines.append(f'    "{source}" -> "{target}" [label="{_dot_text(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    """Text inside a DOT double-quoted string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(definition: WorkflowDefinition, applicants: Sequence[ApplicantType], fmt: str) -> str:
    union = graph(definition, applicants)
    return mermaid(union) if fmt == "mermaid" else dot(union)


# -- commands ---------------------------------------------------------------------------------


def _definition(
    ctx: typer.Context, type_code: str | None, workflow_file: Path | None
) -> tuple[WorkflowDefinition, list[ApplicantType]]:
    """The configured (or given) definition and the applicant types to show; no database."""
    configured = settings(ctx, workflow_file=workflow_file)
    if workflow_file is not None and not workflow_file.is_file():
        raise UsageError(detail=f"no such workflow file: {workflow_file}")
    catalog = Catalog.from_plugins(make_plugin_manager())
    definition = load_workflow(configured, catalog)
    if type_code is not None:
        return definition, [catalog.applicant(type_code)]
    return definition, list(catalog.applicant_types.values())


def _state_json(machine_state: MachineState) -> dict[str, Any]:
    return {
        "id": machine_state.id,
        "labels": {"zh-TW": machine_state.labels.zh_tw, "en": machine_state.labels.en},
        "actor": machine_state.actor,
        "initial": machine_state.initial,
        "final": machine_state.final,
        "timeout_minutes": _minutes(machine_state),
    }


@workflow_app.command("show")
def workflow_show(
    ctx: typer.Context,
    type_code: TypeOption = None,
    workflow_file: WorkflowOption = None,
    as_json: JsonOption = False,
) -> None:
    """States and transitions of the workflow, per applicant type. 顯示註冊流程。"""
    with command(as_json) as out:
        definition, applicants = _definition(ctx, type_code, workflow_file)
        found = paths(definition, applicants)
        out.result["workflow"] = {
            "name": definition.name,
            "hash": definition.hash,
            "origin": definition.origin,
            "idle_timeout_minutes": int(definition.idle_timeout.total_seconds() // 60),
            "challenge_ttl_seconds": int(definition.challenge_ttl.total_seconds()),
        }
        out.result["paths"] = [
            {
                "types": list(path.types),
                "states": [_state_json(s) for s in path.states],
                "transitions": [
                    {"source": t.source, "event": t.event, "target": t.target}
                    for t in path.transitions
                ],
            }
            for path in found
        ]
        out.say(
            f"流程定義 / workflow {definition.name} {definition.hash[:12]} ({definition.origin})"
        )
        out.say(
            f"閒置逾時 / idle timeout {out.result['workflow']['idle_timeout_minutes']} min, "
            f"挑戰碼 / challenge {out.result['workflow']['challenge_ttl_seconds']} s"
        )
        for number, path in enumerate(found, 1):
            out.say("")
            out.say(f"路徑 / path {number}: {', '.join(path.types)}")
            width = max(len(s.id) for s in path.states)
            for machine_state in path.states:
                moves = [t for t in path.transitions if t.source == machine_state.id]
                labels = machine_state.labels
                out.say(
                    f"  {machine_state.id:{width}}  {labels.zh_tw} / {labels.en}"
                    + _notes(machine_state)
                )
                if moves:
                    arrows = "  ".join(f"{t.event} → {t.target}" for t in moves)
                    out.say(f"  {'':{width}}    {arrows}")


def _minutes(machine_state: MachineState) -> int | None:
    timeout = machine_state.timeout
    return int(timeout.total_seconds() // 60) if timeout is not None else None


def _notes(machine_state: MachineState) -> str:
    notes = []
    minutes = _minutes(machine_state)
    if machine_state.actor == OFFICER:
        notes.append("officer, " + (f"timeout {minutes} min" if minutes else "no deadline"))
    elif minutes is not None:
        notes.append(f"timeout {minutes} min")
    flags = (("initial", machine_state.initial), ("final", machine_state.final))
    notes += [name for name, on in flags if on]
    return f" [{'; '.join(notes)}]" if notes else ""


@workflow_app.command("diagram")
def workflow_diagram(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="mermaid or dot.")] = "mermaid",
    type_code: TypeOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the diagram to FILE (else stdout).")
    ] = None,
    workflow_file: WorkflowOption = None,
    as_json: JsonOption = False,
) -> None:
    """A diagram generated from the compiled workflow (Mermaid or Graphviz DOT). 流程圖。"""
    with command(as_json) as out:
        if fmt not in FORMATS:
            raise UsageError(detail=f"--format is {' or '.join(FORMATS)}, not {fmt!r}")
        definition, applicants = _definition(ctx, type_code, workflow_file)
        text = render(definition, applicants, fmt)
        out.result.update(format=fmt, workflow=definition.hash)
        if output is not None:
            try:
                output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise UsageError(detail=f"cannot write {output}: {exc.strerror}") from exc
            out.result["output"] = str(output)
            out.say(f"已寫入 / written: {output}")
        else:
            out.result["diagram"] = text
            out.say(text.rstrip("\n"))


__all__ = ["WorkflowPath", "dot", "graph", "mermaid", "paths", "render", "workflow_app"]
