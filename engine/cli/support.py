"""Plumbing shared by the ``swreg`` commands: options, output, exit statuses, input files.

Each command runs its body inside :func:`command`, which prints the result for people or as one
JSON object (``--json``) and turns a :class:`~engine.SwregError` into the contract's errors and
exit status (1 refused, 2 usage, 3 environment).
"""

from __future__ import annotations

import getpass
import json
import logging
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from engine._bootstrap import App, bootstrap
from engine._errors import EnvironmentProblem, ErrorCode, RefusedError, SwregError, UsageError
from engine._settings import Settings

log = logging.getLogger("swreg.cli")
MAX_INPUT_FILE = 1024 * 1024

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
CARD_HELP = (
    "pcsc:NAME_OR_INDEX, virtual:FILE.p12, or a PKCS#11 token as an RFC 7512 URI: "
    "'pkcs11:token=LABEL?module-path=/path/to/module.so' (object=LABEL or id=%01 picks the "
    "certificate; the PIN never goes in the URI), or twfido:NATIONAL_ID (the mobile citizen "
    "certificate through the configured TW FidO service; no PIN)"
)
"""What ``--card`` takes, wherever a command reads a card."""
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: SWREG_DATABASE_URL or ./swreg.db)."),
]
"""``swreg --db URL COMMAND``: declared once, on the root command (:func:`remember_options`)."""


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    """The root command's options, kept in its click context for the command it runs."""

    db: str | None = None


def remember_options(ctx: typer.Context, db: str | None) -> None:
    """Called by the root callback: the options every command's :func:`settings` reads."""
    ctx.obj = GlobalOptions(db=db)


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings from the environment and the root options of the running command."""
    options = ctx.find_root().obj
    db = options.db if isinstance(options, GlobalOptions) else None
    return Settings.from_env(database_url=db, **overrides)


# -- plumbing --------------------------------------------------------------------------------


class Output:
    """Collects a command's result and prints it the way the caller asked."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.result: dict[str, Any] = {}
        self.lines: list[str] = []
        self.to_stderr = False
        """Print the result on stderr: the command's stdout carries data (``audit export``)."""

    def say(self, line: str) -> None:
        self.lines.append(line)

    def emit(self, ok: bool = True) -> None:
        if self.as_json:
            text = json.dumps({"ok": ok, **self.result}, ensure_ascii=False, default=str)
            typer.echo(text, err=self.to_stderr)
        else:
            for line in self.lines:
                typer.echo(line, err=self.to_stderr)


@contextmanager
def command(as_json: bool) -> Iterator[Output]:
    """Run a command body; turn swreg errors into the contract's output and exit status."""
    out = Output(as_json)
    try:
        yield out
    except SwregError as error:
        fail(out, error)
    except (KeyboardInterrupt, typer.Exit):
        raise
    except Exception as exc:  # a defect: still answer in the contract's shape, exit 3
        log.exception("swreg command failed")
        fail(out, EnvironmentProblem(ErrorCode.INTERNAL_ERROR, detail=type(exc).__name__))
    out.emit(ok=True)


def fail(out: Output, error: SwregError) -> None:
    errors = error.as_dicts("zh-TW")
    if out.as_json:
        out.result["errors"] = errors
        out.emit(ok=False)
    else:
        for item in error.errors:
            where = f" [{item.field}]" if item.field else ""
            why = f" ({item.detail})" if item.detail else ""
            typer.echo(
                f"✗ {item.code}{where}: {item.message('zh-TW')} / {item.message('en')}{why}",
                err=True,
            )
    raise typer.Exit(error.exit_status)


def app_for(ctx: typer.Context, **overrides: Any) -> App:
    """The engine wired for the running command (see :func:`settings`)."""
    return bootstrap(settings(ctx, **overrides))


def read_file(path: Path, *, limit: int = MAX_INPUT_FILE) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UsageError(detail=f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise RefusedError(ErrorCode.FILE_TOO_LARGE, field="file")
    return data


def read_answers(path: Path) -> dict[str, Any]:
    raw = read_file(path)
    try:
        if path.suffix.lower() == ".toml":
            answers = tomllib.loads(raw.decode("utf-8"))
        else:
            answers = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(detail=f"{path}: not a JSON or TOML answers file ({exc})") from exc
    if not isinstance(answers, dict):
        raise UsageError(detail=f"{path}: the answers must be one object of field: value")
    return answers


def read_pin(from_stdin: bool) -> str:
    if from_stdin:
        pin = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            pin = getpass.getpass("PIN碼 / PIN: ")
        except (EOFError, OSError) as exc:
            raise UsageError(detail="no terminal to ask for the PIN; use --pin-stdin") from exc
    if not pin:
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field="pin")
    return pin
