"""docs/plugins.md agrees with the engine (DESIGN.md §3; STYLE.md 6).

Every hook of ``engine/hookspecs.py`` is documented with its exact signature (as
``inspect.signature`` gives it) and an example implementation; every dataclass and enum a hook
returns or receives (followed through their fields) has a table listing exactly its fields
(``dataclasses.fields``: name, type, default) or values; no hook or type is documented that does
not exist. The Python examples run: ``>>>`` blocks as doctests, the others executed, in the
document's order and in one namespace, with the example files (fenced blocks whose first line
is ``# NAME.py`` or ``# NAME.toml``) written to a temporary folder that is the working directory
and on ``sys.path``. The workflow file of the docs is loaded by the engine. The test-kit
examples (``<!-- pytest -->``) are run by tests/test_pytest_plugin.py.

A failure names the hook, type or field to fix, and the text the docs should hold.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import enum
import importlib
import inspect
import io
import re
import sys
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import Catalog, StepSpec, hookspecs, load_definition, make_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
README = ROOT / "README.md"
PYTEST_MARK = "pytest"

# -- reading the markdown ----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, text, first line number and the comment before it."""

    lang: str
    text: str
    line: int
    marker: str | None

    @property
    def file(self) -> str | None:
        """``NAME.py`` / ``NAME.toml`` when the block's first line is ``# NAME``."""
        first = self.text.split("\n", 1)[0]
        match = re.fullmatch(r"# ([\w./-]+\.(?:py|toml))", first.strip())
        return match[1] if match else None


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.fullmatch(r"```(\w*)\s*", lines[i])
        if opening is None:
            i += 1
            continue
        start = i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = re.fullmatch(r"<!--\s*(.*?)\s*-->", before)
        body = "\n".join(lines[start:end]) + "\n"
        found.append(Block(opening[1], body, start + 1, marker[1] if marker else None))
        i = end + 1
    return found


def sections(text: str, level: int) -> dict[str, str]:
    """Heading text → the section's body, for headings of exactly ``level``."""
    found: dict[str, str] = {}
    title: str | None = None
    body: list[str] = []
    in_code = False
    for line in [*text.splitlines(), "#" * level + " <end>"]:
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"^(#+) (.*)$", line) if not in_code else None
        if heading and len(heading[1]) <= level:
            if title is not None:
                found[title] = "\n".join(body)
            title = heading[2].strip() if len(heading[1]) == level else None
            body = []
        elif title is not None:
            body.append(line)
    return found


def table(body: str) -> list[list[str]]:
    """The rows of the first table in ``body`` (header and rule left out), cells unescaped."""
    rows = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    cells = [
        [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)[1:-1]]
        for row in rows
    ]
    return cells[2:]


def code(cell: str) -> str:
    """The text of a table cell written as inline code (```` `x` ````), else the cell."""
    match = re.fullmatch(r"`(.*)`", cell)
    return match[1] if match else cell


TEXT = DOCS.read_text(encoding="utf-8")
BLOCKS = blocks(TEXT)
HEADINGS = sections(TEXT, 3)


# -- the engine's side -------------------------------------------------------------------------


class _Raw:
    """An annotation string that ``inspect`` prints without quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unquoted(annotation: Any) -> Any:
    return _Raw(annotation) if isinstance(annotation, str) else annotation


def signature_text(function: Any) -> str:
    """``name(params) -> return`` as ``inspect.signature`` gives it (annotations unquoted)."""
    signature = inspect.signature(function)
    parameters = [
        p.replace(annotation=_unquoted(p.annotation)) for p in signature.parameters.values()
    ]
    shown = signature.replace(
        parameters=parameters, return_annotation=_unquoted(signature.return_annotation)
    )
    return f"{function.__name__}{shown}"


def hook_specs() -> dict[str, Any]:
    return {
        name: getattr(hookspecs, name)
        for name in dir(hookspecs)
        if name.startswith("swreg_") and hasattr(getattr(hookspecs, name), "swreg_spec")
    }


def _engine_class(candidate: Any) -> bool:
    return isinstance(candidate, type) and candidate.__module__.split(".")[0] == "engine"


def value_types() -> list[type]:
    """Dataclasses and enums of ``engine`` that hooks return or receive, and their fields'."""
    found: list[type] = []

    def walk(annotation: Any) -> None:
        for argument in typing.get_args(annotation):
            walk(argument)
        if not _engine_class(annotation) or annotation in found:
            return
        if dataclasses.is_dataclass(annotation):
            found.append(annotation)
            for hint in typing.get_type_hints(annotation).values():
                walk(hint)
        elif issubclass(annotation, enum.Enum):
            found.append(annotation)

    for spec in hook_specs().values():
        for hint in typing.get_type_hints(spec).values():
            walk(hint)
    return found


VALUE_TYPES = value_types()


def type_text(field: dataclasses.Field[Any]) -> str:
    return field.type if isinstance(field.type, str) else inspect.formatannotation(field.type)


def default_text(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return f"{getattr(field.default_factory, '__name__', 'factory')}()"
    return "required"


# -- hooks -------------------------------------------------------------------------------------


def documented_hooks() -> dict[str, str]:
    """Hook name → the signature in its ``### `swreg_...(...)` `` heading."""
    found: dict[str, str] = {}
    for title in HEADINGS:
        match = re.fullmatch(r"`((swreg_\w+)\(.*)`", title)
        if match:
            found[match[2]] = match[1]
    return found


def test_every_hook_is_documented_with_its_exact_signature() -> None:
    specs, documented = hook_specs(), documented_hooks()
    assert specs, "engine/hookspecs.py declares no swreg_ hook?"
    problems = []
    for name, spec in specs.items():
        expected = signature_text(spec)
        if name not in documented:
            problems.append(
                f"hook {name} (engine/hookspecs.py) is not documented in docs/plugins.md: "
                f"add a section '### `{expected}`' with an example implementation"
            )
        elif documented[name] != expected:
            problems.append(
                f"hook {name}: docs/plugins.md has '### `{documented[name]}`' but "
                f"engine/hookspecs.py says `{expected}`"
            )
    for name in sorted(documented.keys() - specs.keys()):
        problems.append(f"docs/plugins.md documents hook {name}, which engine/hookspecs.py lacks")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_a_working_example(name: str) -> None:
    spec = hook_specs()[name]
    sections_of_hook = [body for title, body in HEADINGS.items() if title.startswith(f"`{name}(")]
    assert sections_of_hook, f"docs/plugins.md has no section for hook {name}"
    examples = [b for b in blocks(sections_of_hook[0]) if b.lang == "python"]
    implementations = [
        node
        for block in examples
        for node in ast.walk(ast.parse(block.text))
        if isinstance(node, ast.FunctionDef) and node.name == name
    ]
    assert implementations, (
        f"the section of hook {name} in docs/plugins.md needs a ```python example with "
        f"'@hookimpl def {name}(...)'"
    )
    allowed = set(inspect.signature(spec).parameters)
    for function in implementations:
        decorators = {ast.unparse(d) for d in function.decorator_list}
        assert "hookimpl" in decorators, f"the example {name} in docs/plugins.md lacks @hookimpl"
        taken = {a.arg for a in function.args.args} - {"self"}
        assert taken <= allowed, f"the example {name} takes {taken - allowed}, not in the spec"
    options = spec.swreg_spec
    if options.get("firstresult"):
        assert "stops at the first non-None result" in sections_of_hook[0], (
            f"hook {name} is firstresult: its section must say it stops at the first "
            "non-None result"
        )
        assert "none stops at the first result" not in TEXT, (
            "docs/plugins.md says no hook stops at the first result, but " + name + " does"
        )
    assert not options.get("historic"), f"hook {name} is historic: document what that means"


# -- value types -------------------------------------------------------------------------------


def test_the_value_types_are_followed_from_the_hooks() -> None:
    names = {t.__name__ for t in VALUE_TYPES}
    assert {"ApplicantType", "UsageType", "StepSpec", "RegistrationCompleted", "Labels"} <= names
    assert StepSpec in VALUE_TYPES


@pytest.mark.parametrize("value_type", VALUE_TYPES, ids=lambda t: t.__name__)
def test_every_value_type_is_documented_field_by_field(value_type: type) -> None:
    name = value_type.__name__
    where = f"docs/plugins.md, section '### {name}'"
    assert name in HEADINGS, f"{where} is missing: document {name} (hooks return or take it)"
    rows = table(HEADINGS[name])
    assert rows, f"{where} has no table"
    if issubclass(value_type, enum.Enum):
        documented = [code(row[0]) for row in rows]
        actual = [str(member.value) for member in value_type]
        missing = [v for v in actual if v not in documented]
        extra = [v for v in documented if v not in actual]
        assert not missing, f"{where}: value(s) {missing} of {name} are missing from the table"
        assert not extra, f"{where} lists value(s) {extra}, which {name} does not have"
        assert documented == actual, f"{where}: values in order {actual}, not {documented}"
        return
    fields = dataclasses.fields(value_type)  # type: ignore[arg-type]
    expected = {f.name: (type_text(f), default_text(f)) for f in fields}
    documented_rows = {code(row[0]): (code(row[1]), code(row[2])) for row in rows}
    problems = []
    for field_name, (kind, default) in expected.items():
        if field_name not in documented_rows:
            problems.append(
                f"{where}: field `{field_name}` (type `{kind}`, default `{default}`) is missing: "
                f"add | `{field_name}` | `{_escaped(kind)}` | {_cell(default)} | ... |"
            )
            continue
        doc_kind, doc_default = documented_rows[field_name]
        if doc_kind != kind:
            problems.append(
                f"{where}: field `{field_name}` has type `{kind}`, docs say `{doc_kind}`"
            )
        if doc_default != default:
            problems.append(
                f"{where}: field `{field_name}` defaults to {_cell(default)}, docs say "
                f"{_cell(doc_default)}"
            )
    for field_name in documented_rows.keys() - expected.keys():
        problems.append(f"{where} documents field `{field_name}`, which {name} does not have")
    if not problems and list(documented_rows) != list(expected):
        problems.append(f"{where}: fields in order {list(expected)}, not {list(documented_rows)}")
    assert not problems, "\n".join(problems)


def _escaped(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe inside a markdown table cell


def _cell(default: str) -> str:
    return default if default == "required" else f"`{default}`"


def test_no_type_is_documented_that_the_engine_lacks() -> None:
    values = sections(TEXT, 2)["3. The values"]
    for title in sections(values, 3):
        if title == "Forms and fields":
            continue
        assert title in engine.__all__, f"docs/plugins.md documents {title}, not in engine's API"


# -- the examples run --------------------------------------------------------------------------


@pytest.fixture
def example_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The docs' example files in a folder that is the working directory and on sys.path."""
    modules = []
    for block in BLOCKS:
        if block.file is None:
            continue
        path = tmp_path / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
        if path.suffix == ".py":
            modules.append(
                ".".join(Path(block.file).with_suffix("").parts).removesuffix(".__init__")
            )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in modules:
        sys.modules.pop(name, None)
    yield tmp_path
    for name in modules:
        sys.modules.pop(name, None)


def _doc_modules() -> list[str]:
    names = []
    for block in BLOCKS:
        if block.file is not None and block.file.endswith(".py"):
            names.append(".".join(Path(block.file).with_suffix("").parts).removesuffix(".__init__"))
    return names


def test_the_examples_run(example_project: Path) -> None:
    for name in _doc_modules():
        importlib.import_module(name)  # every example module imports cleanly
    namespace: dict[str, Any] = {"__name__": "docs_plugins"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    examples = 0
    for block in BLOCKS:
        if block.lang != "python" or block.file is not None or block.marker == PYTEST_MARK:
            continue
        where = f"docs/plugins.md:{block.line}"
        if ">>>" in block.text:
            test = parser.get_doctest(block.text, namespace, where, str(DOCS), block.line - 1)
            examples += len(test.examples)
            runner.run(test, out=report.write, clear_globs=False)
            namespace.update(test.globs)  # DocTest copies the globals it gets
        else:
            exec(compile(block.text, where, "exec"), namespace)
    result = runner.summarize(verbose=False)
    assert examples >= 20, f"only {examples} doctest examples found in docs/plugins.md"
    assert result.failed == 0, report.getvalue()


def test_the_workflow_files_load(example_project: Path) -> None:
    modules = [importlib.import_module(name) for name in _doc_modules()]
    catalog = Catalog.from_plugins(make_plugin_manager(plugins=modules))
    workflows = 0
    for block in BLOCKS:
        if block.lang != "toml":
            continue
        data = tomllib.loads(block.text)  # every TOML example parses
        if "step" in data:
            workflows += 1
            definition = load_definition(
                block.text,
                origin=f"docs/plugins.md:{block.line}",
                contributed=catalog.steps,
                applicants=catalog.applicant_types.values(),
            )
            placed = {step.id for step in definition.steps} & set(catalog.steps)
            assert placed, f"the workflow at docs/plugins.md:{block.line} places no plugin step"
    assert workflows, "docs/plugins.md shows no workflow file"


# -- README ------------------------------------------------------------------------------------


def test_the_readme_links_the_docs_with_the_same_example() -> None:
    readme = README.read_text(encoding="utf-8")
    section = sections(readme, 2).get("Writing a plugin")
    assert section is not None, "README.md needs a '## Writing a plugin' section"
    assert "docs/plugins.md" in section, "README.md's 'Writing a plugin' must link docs/plugins.md"
    first = next(b for b in BLOCKS if b.marker == PYTEST_MARK)
    shown = [b.text for b in blocks(section) if b.lang == "python"]
    assert first.text in shown, (
        "README.md's 'Writing a plugin' must show the ten-line test-kit example of "
        "docs/plugins.md, unchanged"
    )
