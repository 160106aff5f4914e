"""The registration workflow: a definition file compiled into python-statemachine classes.

A workflow is data (``workflow.toml``): the steps in order, which applicant types each applies to
and a few timings. :func:`load_definition` validates it (unknown step, unreachable step, missing
final step → :class:`DefinitionError` naming the line) and identifies it by the SHA-256 of its
text. :func:`advance` fires an event through a ``StateMachine`` class compiled (once per path and
cached) from the steps that apply to an applicant type: ``next`` walks forward, ``back`` (上一步)
walks back, ``cancel`` (取消) and ``expire`` end it. The machine holds no business rules, so its
transitions are read once into a table that ``advance`` looks up; the service validates input
first and persists the state the machine moved to.

Steps contributed by plugins may be acted on by an officer instead of the applicant
(``StepSpec(actor="officer")``, for example an approval step). At such a step the applicant
has nothing to submit: ``next`` and ``back`` are not possible there, and ``back`` never leads
into it; an officer's ``approve`` moves on to the following step (entering ``completed``
creates the account as usual) and ``reject`` ends the registration in ``rejected``. ``cancel``
and ``expire`` stay possible. Waiting for an officer is not idle time: the registration gets no
deadline there (:data:`NO_DEADLINE`) unless the definition gives the step a ``timeout_minutes``.

:func:`transitions` reads the compiled machine back (states and transitions by event), which is
what ``swreg workflow show`` and ``swreg workflow diagram`` print.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from itertools import pairwise
from typing import Any, cast

from statemachine import State, StateMachine
from statemachine.exceptions import InvalidDefinition, TransitionNotAllowed
from statemachine.factory import StateMachineMetaclass
from statemachine.orderedset import OrderedSet

from engine._errors import DefinitionError
from engine.core.declarations import ApplicantType, Category, Labels, StepActor, StepSpec


class Step(StrEnum):
    """The built-in states of 憑證註冊 (names are stable)."""

    CATEGORY = "category"  # 申請類別
    CARD_CHECK = "card_check"  # 憑證檢查
    BASIC_DATA = "basic_data"  # 基本資料
    ENTERPRISE_INFO = "enterprise_info"  # 企業資訊
    COMPLETED = "completed"  # 註冊完成
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"  # 已駁回: an officer rejected it at an officer step

    @property
    def labels(self) -> Labels:
        return _STEP_LABELS[self]


class Event(StrEnum):
    NEXT = "next"
    BACK = "back"  # 上一步
    CANCEL = "cancel"  # 取消
    EXPIRE = "expire"
    APPROVE = "approve"  # an officer approves (officer steps only)
    REJECT = "reject"  # an officer rejects (officer steps only)


_STEP_LABELS = {
    Step.CATEGORY: Labels("申請類別", "Applicant type"),
    Step.CARD_CHECK: Labels("憑證檢查", "Card check"),
    Step.BASIC_DATA: Labels("基本資料", "Basic data"),
    Step.ENTERPRISE_INFO: Labels("企業資訊", "Enterprise information"),
    Step.COMPLETED: Labels("註冊完成", "Completed"),
    Step.CANCELLED: Labels("已取消", "Cancelled"),
    Step.EXPIRED: Labels("已逾時", "Expired"),
    Step.REJECTED: Labels("已駁回", "Rejected"),
}
ENDINGS = frozenset({Step.COMPLETED, Step.CANCELLED, Step.EXPIRED, Step.REJECTED})
APPLICANT: StepActor = "applicant"
OFFICER: StepActor = "officer"
AWAITING_OFFICER = Labels("待審核", "Awaiting approval")
"""The status of a registration waiting at an officer step."""
NO_DEADLINE = datetime(9999, 1, 1, tzinfo=UTC)
"""``expires_at`` of a registration waiting for an officer at a step without a timeout."""
_PLACEABLE = (Step.CATEGORY, Step.CARD_CHECK, Step.BASIC_DATA, Step.ENTERPRISE_INFO, Step.COMPLETED)
_BUILT_IN = frozenset(s.value for s in Step)
_TOP_KEYS = frozenset({"name", "idle_timeout_minutes", "challenge_ttl_seconds", "step"})
_STEP_KEYS = frozenset({"id", "applies_to", "timeout_minutes"})


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One step of a definition: where it stands and whom it applies to."""

    id: str
    applies_to: frozenset[str] = frozenset()  # categories or type codes; empty = everyone
    timeout: timedelta | None = None
    actor: StepActor = APPLICANT  # who acts here: the applicant, or an officer (approve/reject)
    labels: Labels | None = None

    def applies(self, applicant: ApplicantType) -> bool:
        if not self.applies_to:
            return True
        return applicant.category.value in self.applies_to or applicant.code in self.applies_to


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    """A validated workflow, identified by the SHA-256 of its source text."""

    name: str
    hash: str
    source: str
    steps: tuple[WorkflowStep, ...]
    idle_timeout: timedelta
    challenge_ttl: timedelta
    origin: str = "workflow.toml"

    def path_for(self, applicant: ApplicantType) -> tuple[str, ...]:
        """The states an applicant of this type walks through, in order."""
        return tuple(step.id for step in self.steps if step.applies(applicant))

    def step(self, step_id: str) -> WorkflowStep:
        return next(s for s in self.steps if s.id == step_id)

    def officer_steps(self, applicant: ApplicantType) -> frozenset[str]:
        """The steps of this type's path where an officer acts (approve / reject)."""
        return frozenset(s.id for s in self.steps if s.actor == OFFICER and s.applies(applicant))

    def awaits_officer(self, state: str) -> bool:
        """Whether a registration at ``state`` waits for an officer."""
        return any(s.id == state and s.actor == OFFICER for s in self.steps)

    def deadline(self, state: str, now: datetime) -> datetime:
        """When a registration that just entered ``state`` expires.

        Applicant steps: the step's ``timeout_minutes``, else the idle timeout. Officer steps:
        the step's ``timeout_minutes`` when given, else never (:data:`NO_DEADLINE`) — waiting
        for an officer is not the applicant being idle.
        """
        step = self.step(state)
        if step.actor == OFFICER:
            return now + step.timeout if step.timeout is not None else NO_DEADLINE
        return now + (step.timeout or self.idle_timeout)


def default_definition_source() -> str:
    return resources.files("engine.core").joinpath("workflow.toml").read_text(encoding="utf-8")


def definition_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def load_definition(
    source: str,
    *,
    origin: str = "workflow.toml",
    contributed: Mapping[str, StepSpec] | None = None,
    applicants: Iterable[ApplicantType] = (),
) -> WorkflowDefinition:
    """Parse and validate a workflow definition; raise :class:`DefinitionError` naming the line.

    ``contributed`` are plugin steps the file may place; ``applicants`` are the installed
    applicant types, used to prove every step reachable by someone.
    """
    contributed = contributed or {}
    applicants = tuple(applicants)
    locate = _Locator(source, origin)
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise DefinitionError(
            f"not valid TOML ({exc})", source=origin, line=int(match[1]) if match else None
        ) from exc
    for key in raw.keys() - _TOP_KEYS:
        raise locate.error(f"unknown setting {key!r}", key=key)
    raw_steps = raw.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise DefinitionError("no [[step]] tables", source=origin)
    known = {s.value for s in _PLACEABLE} | set(contributed)
    scopes = {c.value for c in Category} | {a.code for a in applicants}
    steps = tuple(
        _parse_step(i, entry, known, scopes, locate, contributed)
        for i, entry in enumerate(raw_steps)
    )
    _check_order(steps, locate)
    if applicants:
        for i, step in enumerate(steps):
            if not any(step.applies(a) for a in applicants):
                raise locate.error(f"step {step.id!r} applies to no installed type", step=i)
    definition = WorkflowDefinition(
        name=_text(raw.get("name", "workflow"), "name", locate),
        hash=definition_hash(source),
        source=source,
        steps=steps,
        idle_timeout=timedelta(minutes=_positive(raw, "idle_timeout_minutes", 30, locate)),
        challenge_ttl=timedelta(seconds=_positive(raw, "challenge_ttl_seconds", 300, locate)),
        origin=origin,
    )
    for applicant in applicants:  # compile once now so a broken graph fails at load time
        try:
            machine_for(definition, applicant)
        except InvalidDefinition as exc:
            raise DefinitionError(f"{applicant.code}: {exc}", source=origin) from exc
    return definition


def _parse_step(
    index: int,
    entry: Any,
    known: set[str],
    scopes: set[str],
    locate: _Locator,
    contributed: Mapping[str, StepSpec],
) -> WorkflowStep:
    if not isinstance(entry, dict):
        raise locate.error("a step must be a table", step=index)
    for key in entry.keys() - _STEP_KEYS:
        raise locate.error(f"unknown step setting {key!r}", step=index, key=key)
    step_id = entry.get("id")
    if not isinstance(step_id, str):
        raise locate.error("a step needs an id", step=index)
    if step_id not in known:
        raise locate.error(f"unknown step {step_id!r}", step=index, key="id")
    applies_to = entry.get("applies_to", [])
    if not isinstance(applies_to, list) or not all(isinstance(a, str) for a in applies_to):
        raise locate.error("applies_to must be a list of strings", step=index, key="applies_to")
    for scope in applies_to:
        if scope not in scopes:
            raise locate.error(
                f"applies_to names unknown category or type {scope!r}", step=index, key="applies_to"
            )
    timeout = entry.get("timeout_minutes")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise locate.error("timeout_minutes must be a positive integer", step=index)
    spec = None if step_id in _BUILT_IN else contributed.get(step_id)
    return WorkflowStep(
        id=step_id,
        applies_to=frozenset(applies_to),
        timeout=timedelta(minutes=timeout) if timeout else None,
        actor=spec.actor if spec is not None else APPLICANT,
        labels=spec.labels if spec is not None else Step(step_id).labels,
    )


def _check_order(steps: Sequence[WorkflowStep], locate: _Locator) -> None:
    ids = [s.id for s in steps]
    for i, step_id in enumerate(ids):
        if ids.index(step_id) != i:
            raise locate.error(f"step {step_id!r} appears twice", step=i, key="id")
    if ids[0] != Step.CATEGORY:
        raise locate.error("the first step must be 'category'", step=0)
    if Step.COMPLETED not in ids:
        raise DefinitionError("missing final step 'completed'", source=locate.origin)
    if ids[-1] != Step.COMPLETED:
        raise locate.error("'completed' must be the last step", step=ids.index(Step.COMPLETED))
    if steps[-1].applies_to or steps[0].applies_to:
        raise locate.error("'category' and 'completed' apply to every type", step=len(ids) - 1)
    for required in (Step.CARD_CHECK, Step.BASIC_DATA):
        if required not in ids:
            raise DefinitionError(f"missing step {required.value!r}", source=locate.origin)
        if steps[ids.index(required)].applies_to:
            raise locate.error(
                f"{required.value!r} applies to every type", step=ids.index(required)
            )
    if ids.index(Step.CARD_CHECK) > ids.index(Step.BASIC_DATA):
        raise locate.error(
            "'card_check' must come before 'basic_data'", step=ids.index(Step.CARD_CHECK)
        )


def _text(value: Any, key: str, locate: _Locator) -> str:
    if not isinstance(value, str) or not value:
        raise locate.error(f"{key} must be a non-empty string", key=key)
    return value


def _positive(raw: Mapping[str, Any], key: str, default: int, locate: _Locator) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise locate.error(f"{key} must be a positive integer", key=key)
    return value


class _Locator:
    """Finds the line a problem sits on (tomllib reports no positions for valid TOML)."""

    def __init__(self, source: str, origin: str) -> None:
        self.origin = origin
        self.lines = source.splitlines()
        self.step_lines = [
            n for n, line in enumerate(self.lines, 1) if line.strip().startswith("[[step]]")
        ]

    def error(
        self, detail: str, *, step: int | None = None, key: str | None = None
    ) -> DefinitionError:
        return DefinitionError(detail, source=self.origin, line=self.line(step, key))

    def line(self, step: int | None, key: str | None) -> int | None:
        start, end = 0, len(self.lines)
        if step is not None and step < len(self.step_lines):
            start = self.step_lines[step] - 1
            later = [n for n in self.step_lines if n - 1 > start]
            end = later[0] - 1 if later else end
        elif step is not None:
            return None
        if key is None:
            return start + 1 if step is not None else None
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for n in range(start, end):
            if pattern.match(self.lines[n]):
                return n + 1
        return start + 1 if step is not None else None


# -- compiled machines -----------------------------------------------------------------------


def machine_for(definition: WorkflowDefinition, applicant: ApplicantType) -> type[StateMachine]:
    """The compiled ``StateMachine`` class of ``applicant``'s path through ``definition``."""
    return _compile(definition.path_for(applicant), definition.officer_steps(applicant))


@cache
def _compile(path: tuple[str, ...], officer: frozenset[str] = frozenset()) -> type[StateMachine]:
    """A ``StateMachine`` class for one path of states (``officer``: the states where an officer
    approves or rejects); cached because building one costs ~0.5 ms."""
    states = {
        name: State(name=name, value=name, initial=(i == 0), final=(name == Step.COMPLETED))
        for i, name in enumerate(path)
    }
    endings = (*((Step.REJECTED,) if officer else ()), Step.CANCELLED, Step.EXPIRED)
    for ending in endings:
        states[ending.value] = State(name=ending.value, value=ending.value, final=True)
    live = path[:-1]
    forward = list(pairwise(path))
    transitions = {
        Event.NEXT: (states[a].to(states[b]) for a, b in forward if a not in officer),
        Event.BACK: (
            states[b].to(states[a])
            for a, b in pairwise(live)
            if a not in officer and b not in officer
        ),
        Event.APPROVE: (states[a].to(states[b]) for a, b in forward if a in officer),
        Event.REJECT: (states[s].to(states[Step.REJECTED.value]) for s in live if s in officer),
        Event.CANCEL: (states[s].to(states[Step.CANCELLED.value]) for s in live),
        Event.EXPIRE: (states[s].to(states[Step.EXPIRED.value]) for s in live),
    }
    events: dict[str, Any] = {}
    for event, group in transitions.items():
        combined = _chain(group)
        if combined is not None:
            events[event.value] = combined
    name = "Registration_" + "_".join(path)
    cls = StateMachineMetaclass(name, (StateMachine,), {**states, **events})
    return cast(type[StateMachine], cls)


def _chain(transitions: Iterable[Any]) -> Any:
    combined = None
    for transition in transitions:
        combined = transition if combined is None else combined | transition
    return combined


@cache
def _transition_table(machine: type[StateMachine]) -> Mapping[tuple[str, str], str]:
    """``{(state, event): target}`` of a compiled machine, read once from its transitions.

    The machines compiled here carry no conditions, guards or callbacks: a transition's
    target depends only on the state and the event, so this table is the machine's whole
    behaviour. Firing through it costs a dict lookup; a ``StateMachine`` instance costs
    ≈ 0.2 ms to build and ≈ 0.08 ms per event (``make bench``; ``tests/test_workflow.py``
    checks the table against ``send`` on every state and event).
    """
    table: dict[tuple[str, str], str] = {}
    for state in machine.states:
        for transition in state.transitions:
            if list(transition.cond):
                raise DefinitionError(f"{machine.__name__}: a compiled transition has a condition")
            for event in transition.events:
                key = (transition.source.id, event.id)
                if table.setdefault(key, transition.target.id) != transition.target.id:
                    raise DefinitionError(f"{machine.__name__}: {key} has two targets")
    return table


def advance(
    definition: WorkflowDefinition, applicant: ApplicantType, state: str, event: Event
) -> str:
    """Fire ``event`` from ``state`` for ``applicant``; return the new state.

    Raises ``statemachine.exceptions.TransitionNotAllowed`` when the event is not possible.
    Pure: the machine holds no business rules and records nothing; the service persists the
    new state with its audit row.
    """
    machine = machine_for(definition, applicant)
    target = _transition_table(machine).get((state, event.value))
    if target is None:
        current = machine.states_map.get(state)
        raise TransitionNotAllowed(
            next((e for e in cast(Any, machine).events if e.id == event.value), None),
            OrderedSet([current] if current is not None else []),
        )
    return target


# -- reading a compiled machine back ---------------------------------------------------------


_EVENT_ORDER = (Event.NEXT, Event.APPROVE, Event.REJECT, Event.BACK, Event.CANCEL, Event.EXPIRE)


@dataclass(frozen=True, slots=True)
class Transition:
    """One transition of a compiled machine: ``event`` moves ``source`` to ``target``."""

    source: str
    event: str
    target: str


@dataclass(frozen=True, slots=True)
class MachineState:
    """One state of a compiled machine, with what the definition says about it."""

    id: str
    labels: Labels
    actor: StepActor
    initial: bool
    final: bool
    timeout: timedelta | None = None


def machine_states(
    definition: WorkflowDefinition, applicant: ApplicantType
) -> tuple[MachineState, ...]:
    """The states of ``applicant``'s compiled machine: its path, then the endings."""
    found = []
    for state in machine_for(definition, applicant).states:
        step = next((s for s in definition.steps if s.id == state.id), None)
        found.append(
            MachineState(
                id=state.id,
                labels=(step.labels if step and step.labels else None) or Step(state.id).labels,
                actor=step.actor if step else APPLICANT,
                initial=bool(state.initial),
                final=bool(state.final),
                timeout=step.timeout if step else None,
            )
        )
    return tuple(found)


def transitions(definition: WorkflowDefinition, applicant: ApplicantType) -> tuple[Transition, ...]:
    """Every transition of ``applicant``'s compiled machine, by source state then event."""
    order = {event.value: i for i, event in enumerate(_EVENT_ORDER)}
    machine = machine_for(definition, applicant)
    found: list[tuple[int, int, Transition]] = []
    for index, state in enumerate(machine.states):
        for transition in state.transitions:
            for event in transition.events:
                found.append(
                    (
                        index,
                        order.get(event.id, len(order)),
                        Transition(transition.source.id, event.id, transition.target.id),
                    )
                )
    return tuple(t for _, _, t in sorted(found, key=lambda item: item[:2]))
