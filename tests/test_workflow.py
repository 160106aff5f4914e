"""The workflow definition: loading, validation with line numbers, paths and transitions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from statemachine.exceptions import TransitionNotAllowed

from engine import Catalog, DefinitionError, Event, Labels, Step, StepSpec, make_plugin_manager
from engine.core.workflow import (
    advance,
    default_definition_source,
    definition_hash,
    load_definition,
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_plugins(make_plugin_manager())


def load(source: str, catalog: Catalog, **kwargs: object) -> object:
    return load_definition(
        source,
        origin="test.toml",
        contributed=kwargs.get("contributed", catalog.steps),  # type: ignore[arg-type]
        applicants=catalog.applicant_types.values(),
    )


def test_default_definition_reproduces_the_seed_manual(catalog: Catalog) -> None:
    definition = load_definition(
        default_definition_source(), applicants=catalog.applicant_types.values()
    )
    person = catalog.applicant("person.general")
    company = catalog.applicant("enterprise.general")
    assert definition.path_for(person) == ("category", "card_check", "basic_data", "completed")
    assert definition.path_for(company) == (
        "category",
        "card_check",
        "basic_data",
        "enterprise_info",
        "completed",
    )
    assert definition.hash == definition_hash(default_definition_source())
    assert definition.idle_timeout.total_seconds() == 30 * 60
    assert definition.challenge_ttl.total_seconds() == 300


def test_events_walk_forward_back_and_end(catalog: Catalog) -> None:
    definition = load_definition(
        default_definition_source(), applicants=catalog.applicant_types.values()
    )
    company = catalog.applicant("enterprise.general")
    person = catalog.applicant("person.general")
    assert advance(definition, company, "basic_data", Event.NEXT) == "enterprise_info"
    assert advance(definition, person, "basic_data", Event.NEXT) == "completed"
    assert advance(definition, company, "enterprise_info", Event.BACK) == "basic_data"
    assert advance(definition, person, "card_check", Event.CANCEL) == "cancelled"
    assert advance(definition, person, "card_check", Event.EXPIRE) == "expired"
    with pytest.raises(TransitionNotAllowed):
        advance(definition, person, "category", Event.BACK)  # nothing before 申請類別
    with pytest.raises(TransitionNotAllowed):
        advance(definition, person, "completed", Event.BACK)  # a finished registration stays
    with pytest.raises(TransitionNotAllowed):
        advance(definition, person, "cancelled", Event.NEXT)


GOOD = """name = "x"
[[step]]
id = "category"
[[step]]
id = "card_check"
[[step]]
id = "basic_data"
[[step]]
id = "enterprise_info"
applies_to = ["enterprise"]
[[step]]
id = "completed"
"""


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        # an unknown step id is reported on its own line
        (GOOD.replace('id = "enterprise_info"', 'id = "review"'), 9, "unknown step 'review'"),
        # a typo in a setting name
        (GOOD.replace("applies_to", "applies_too"), 10, "unknown step setting 'applies_too'"),
        # applies_to naming a type nobody installed: the step would be unreachable
        (GOOD.replace('["enterprise"]', '["enterprise.nope"]'), 10, "unknown category or type"),
        # the same step twice
        (GOOD.replace('id = "enterprise_info"', 'id = "basic_data"'), 9, "appears twice"),
        # 申請類別 replaced: card_check now appears twice
        (GOOD.replace('id = "category"', 'id = "card_check"', 1), 5, "appears twice"),
        # broken TOML reports the parser's line
        (GOOD.replace('name = "x"', "name = "), 1, "not valid TOML"),
    ],
)
def test_invalid_definitions_name_the_line(
    catalog: Catalog, source: str, line: int, words: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        load(source, catalog)
    assert info.value.details["line"] == line
    assert info.value.details["source"] == "test.toml"
    assert words in str(info.value)


def test_missing_final_step_is_refused(catalog: Catalog) -> None:
    source = GOOD.replace('[[step]]\nid = "completed"\n', "")
    with pytest.raises(DefinitionError, match="missing final step 'completed'"):
        load(source, catalog)


def test_a_contributed_step_can_be_placed(catalog: Catalog) -> None:
    review = StepSpec(id="review", labels=Labels("審核", "Review"), applies_to=frozenset())
    source = GOOD.replace(
        '[[step]]\nid = "completed"',
        '[[step]]\nid = "review"\napplies_to = ["enterprise"]\n[[step]]\nid = "completed"',
    )
    definition = load_definition(
        source, contributed={"review": review}, applicants=catalog.applicant_types.values()
    )
    company = catalog.applicant("enterprise.express")
    person = catalog.applicant("person.general")
    assert definition.path_for(company)[-2:] == ("review", "completed")
    assert "review" not in definition.path_for(person)
    assert advance(definition, company, "review", Event.BACK) == "enterprise_info"


def test_step_enum_labels_are_bilingual() -> None:
    assert Step.CARD_CHECK.labels.get("zh-TW") == "憑證檢查"
    assert Step.ENTERPRISE_INFO.labels.get("en") == "Enterprise information"


def test_advance_agrees_with_the_compiled_state_machine(catalog: Catalog) -> None:
    # advance() reads the compiled machine's transitions as a table; firing through a
    # python-statemachine instance must give the same state, or refuse the same events.
    from engine.core.workflow import _compile, _transition_table, machine_for

    @dataclass
    class Position:
        state: str | None

    definition = load_definition(
        default_definition_source(), applicants=catalog.applicant_types.values()
    )
    machines = [machine_for(definition, a) for a in catalog.applicant_types.values()]
    machines.append(  # an officer's approval step between two applicant steps
        _compile(
            ("category", "card_check", "approval", "basic_data", "completed"),
            frozenset({"approval"}),
        )
    )
    confirmed = entries = 0
    for machine in machines:
        table = _transition_table(machine)
        entries += len(table)
        for state in machine.states:
            for event in Event:
                position = Position(state.id)
                try:
                    machine(model=position).send(event.value)
                    expected: str | None = position.state
                except TransitionNotAllowed:
                    expected = None
                assert table.get((state.id, event.value)) == expected, (state.id, event)
                confirmed += expected is not None
    assert confirmed == entries > len(machines) * 8  # every entry of every table was fired
