"""``swreg registrations``: look at registrations, and decide those waiting for an officer.

A registration at an officer step (an approval step contributed by a plugin and placed by the
workflow file) waits there as 待審核 until ``approve`` (it moves on; entering ``completed``
creates the account and sends the activation mail) or ``reject`` (it ends in ``rejected``; the
reason is kept in the audit row). ``list --state approval`` is the officers' queue.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from engine.cli.support import JsonOption, app_for, command
from engine.core.workflow import NO_DEADLINE
from engine.services.registration import RegistrationView

registrations_app = typer.Typer(
    help="Registrations (註冊作業): the officers' queue, approve and reject.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(metavar="ID", help="The registration id.")]
OfficerOption = Annotated[
    str, typer.Option("--officer", help="Who decides (recorded as the audit row's actor).")
]


def registration_json(view: RegistrationView) -> dict[str, Any]:
    """A registration as ``--json`` prints it (and the officer API returns it)."""
    return {
        "id": view.id,
        "state": view.state,
        "status": {"zh-TW": view.status.zh_tw, "en": view.status.en},
        "awaiting": view.awaiting,
        "applicant_type": view.applicant_type,
        "chosen_type": view.chosen_type,
        "account": view.account,
        "path": list(view.path),
        "step_number": view.step_number,
        "data": dict(view.data),
        "identity": dict(view.identity),
        "evidence": dict(view.evidence),
        "updated_at": view.updated_at.isoformat() if view.updated_at else None,
        "expires_at": None if view.expires_at >= NO_DEADLINE else view.expires_at.isoformat(),
    }


def _line(view: RegistrationView) -> str:
    since = f"{view.updated_at:%Y-%m-%d %H:%M}" if view.updated_at else "-"
    return (
        f"{view.id}  {view.state} ({view.status.zh_tw} / {view.status.en})  "
        f"{view.applicant_type}  {view.account or '-'}  {since}"
    )


@registrations_app.command("list")
def registrations_list(
    ctx: typer.Context,
    state_: Annotated[
        str | None, typer.Option("--state", help="Only registrations at this state (approval).")
    ] = None,
    type_code: Annotated[
        str | None, typer.Option("--type", help="Only registrations of this applicant type.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (1-1000).")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Registrations, longest waiting first (--state approval: 待審核). 列出註冊作業。"""
    with command(as_json) as out:
        found = app_for(ctx).registrations.find(state=state_, applicant_type=type_code, limit=limit)
        out.result["registrations"] = [registration_json(view) for view in found]
        for view in found:
            out.say(_line(view))
        if not found:
            out.say("沒有符合的註冊作業 / no matching registrations")


@registrations_app.command("show")
def registrations_show(
    ctx: typer.Context, registration_id: IdArgument, as_json: JsonOption = False
) -> None:
    """One registration: its state, what was entered, the card's identity. 查看註冊作業。"""
    with command(as_json) as out:
        view = app_for(ctx).registrations.status(registration_id, actor="cli")
        out.result["registration"] = registration_json(view)
        out.say(_line(view))
        for key, value in {
            **view.data,
            **{f"card.{k}": v for k, v in view.identity.items()},
        }.items():
            out.say(f"  {key:18} {value}")


@registrations_app.command("approve")
def registrations_approve(
    ctx: typer.Context,
    registration_id: IdArgument,
    officer: OfficerOption,
    as_json: JsonOption = False,
) -> None:
    """Approve a registration waiting for an officer: it moves on (the account is created).
    核准。"""
    with command(as_json) as out:
        view = app_for(ctx).registrations.approve(registration_id, officer=officer, via="cli")
        out.result["registration"] = registration_json(view)
        out.result.update(state=view.state, account=view.account, registration_id=view.id)
        out.say(f"已核准 / approved: {view.id} → {view.state} ({view.status.zh_tw})")
        if view.state == "completed":
            out.say(f"帳號 / account: {view.account}")
            out.say("已寄出帳號啟用信 / the activation mail was sent")


@registrations_app.command("reject")
def registrations_reject(
    ctx: typer.Context,
    registration_id: IdArgument,
    officer: OfficerOption,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")],
    as_json: JsonOption = False,
) -> None:
    """Reject a registration waiting for an officer: it ends, no account is created. 駁回。"""
    with command(as_json) as out:
        view = app_for(ctx).registrations.reject(
            registration_id, officer=officer, reason=reason, via="cli"
        )
        out.result["registration"] = registration_json(view)
        out.result.update(state=view.state, registration_id=view.id)
        out.say(f"已駁回 / rejected: {view.id}")


__all__ = ["registration_json", "registrations_app"]
