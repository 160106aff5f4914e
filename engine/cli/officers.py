"""``swreg officers``: the officer list and the officers' personal API tokens (DESIGN.md §9, §12).

``add CERT.cer --name NAME --role reviewer|admin`` puts an officer's certificate (DER or PEM) on
the list; ``list`` shows it; ``remove NAME`` takes an officer off (their token stops working);
``token NAME`` issues the officer's personal bearer token for ``/api/officer/…`` — printed once,
alone on one line (``--json``: ``{ok, name, token}``); issuing a new one revokes the old.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.cli.support import JsonOption, app_for, command, read_file
from engine.services.officers import OfficerView

officers_app = typer.Typer(
    help="The officer list (關員名單) and personal API tokens.", no_args_is_help=True
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The officer's name.")]


def _summary(officer: OfficerView) -> dict[str, str]:
    return {"name": officer.name, "role": officer.role, "fingerprint": officer.fingerprint}


@officers_app.command("add")
def officers_add(
    ctx: typer.Context,
    certificate: Annotated[
        Path, typer.Argument(metavar="CERT.cer", help="The officer's certificate (DER or PEM).")
    ],
    name: Annotated[str, typer.Option("--name", help="The officer's name (unique).")],
    role: Annotated[str, typer.Option("--role", help="reviewer or admin.")],
    as_json: JsonOption = False,
) -> None:
    """Put an officer's certificate on the officer list. 新增關員。"""
    with command(as_json) as out:
        officer = app_for(ctx).officers.add(read_file(certificate), name=name, role=role)
        out.result.update(_summary(officer))
        out.say(f"已加入 / added: {officer.name} ({officer.role}) {officer.fingerprint[:16]}…")


@officers_app.command("list")
def officers_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The officer list. 列出關員。"""
    with command(as_json) as out:
        officers = app_for(ctx).officers.list()
        out.result["officers"] = [_summary(officer) for officer in officers]
        for officer in officers:
            token = "token" if officer.token_issued_at else "-"
            out.say(f"{officer.fingerprint[:16]}…  {officer.role:8}  {token:5}  {officer.name}")
        if not officers:
            out.say("尚無關員 / no officers yet (swreg officers add CERT.cer --name N --role R)")


@officers_app.command("remove")
def officers_remove(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Take an officer off the list; their API token stops working. 移除關員。"""
    with command(as_json) as out:
        officer = app_for(ctx).officers.remove(name)
        out.result.update(_summary(officer))
        out.say(f"已移除 / removed: {officer.name}")


@officers_app.command("token")
def officers_token(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Issue the officer's personal API token (revokes the previous one); printed once.
    核發關員 API 權杖。"""
    with command(as_json) as out:
        issued = app_for(ctx).officers.issue_token(name)
        out.result.update(name=issued.name, token=issued.token)
        out.say(issued.token)


__all__ = ["officers_app"]
