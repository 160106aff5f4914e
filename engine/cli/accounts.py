"""``swreg accounts``: accounts (帳號) — check a name, activate, show, 忘記密碼, suspend, log out.

``show NAME`` prints the account's state, type, masked e-mail address and login certificates
(``--json``: DESIGN.md §9). ``reset-password NAME --card SPEC --answers FILE`` is 忘記密碼: the card
(a login certificate bound to the account) signs a fresh challenge and the answers file holds
``password`` and ``password_confirm``; with ``--pin-stdin`` the PIN is the first stdin line.
``suspend`` / ``reactivate NAME --officer NAME --reason TEXT`` need an ``admin`` officer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine._errors import ErrorCode, RefusedError
from engine.cli.support import (
    CARD_HELP,
    JsonOption,
    Output,
    app_for,
    command,
    read_answers,
    read_pin,
)
from engine.services.accounts import AccountSummary
from engine.services.enrolment import answer_challenge

accounts_app = typer.Typer(help="Accounts (帳號).", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The account (帳號).")]
OfficerOption = Annotated[
    str, typer.Option("--officer", help="An admin officer's name on the officer list.")
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]


@accounts_app.command("check")
def accounts_check(ctx: typer.Context, name: str, as_json: JsonOption = False) -> None:
    """檢核是否存在: is this account name still free?"""
    with command(as_json) as out:
        if not app_for(ctx).registrations.check_account(name):
            raise RefusedError(ErrorCode.ACCOUNT_EXISTS, field="account")
        out.result.update(account=name, available=True, message="此帳號可使用")
        out.say("此帳號可使用 / this account is available")


@accounts_app.command("activate")
def accounts_activate(ctx: typer.Context, token: str, as_json: JsonOption = False) -> None:
    """Activate an account with the token (or the whole link) of its activation mail. 帳號啟用。"""
    with command(as_json) as out:
        account = app_for(ctx).accounts.activate(token, actor="cli")
        out.result.update(account=account, status="active")
        out.say(f"帳號已啟用 / account activated: {account}")


@accounts_app.command("logout-all")
def accounts_logout_all(ctx: typer.Context, name: str, as_json: JsonOption = False) -> None:
    """Log out everywhere: end every session of the account. 登出所有裝置。"""
    with command(as_json) as out:
        ended = app_for(ctx).logins.end_all_sessions(name, actor="cli")
        out.result.update(account=name, sessions_ended=ended)
        out.say(f"已登出所有裝置 / logged out everywhere: {name} ({ended} session(s) ended)")


@accounts_app.command("show")
def accounts_show(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Show an account: state, type, masked e-mail, login certificates. 帳號資料。"""
    with command(as_json) as out:
        _report(out, app_for(ctx).accounts.show(name))


@accounts_app.command("reset-password")
def accounts_reset_password(
    ctx: typer.Context,
    name: NameArgument,
    card: Annotated[str, typer.Option("--card", help=CARD_HELP)],
    answers: Annotated[
        Path, typer.Option("--answers", help="JSON with password and password_confirm.")
    ],
    pin_stdin: Annotated[
        bool, typer.Option("--pin-stdin", help="Read the PIN from the first line of stdin.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """忘記密碼: set a new password, proven with a card bound to the account."""
    from readers import open_card

    with command(as_json) as out:
        application = app_for(ctx)
        service = application.password_resets
        origin = application.settings.cli_origin
        new_password = read_answers(answers)
        with open_card(card) as opened:
            pin = read_pin(pin_stdin)
            challenge = service.issue_challenge(origin=origin)
            response = answer_challenge(opened, challenge, pin)
            del pin
        done = service.reset(
            response, origin=origin, account=name, answers=new_password, actor="cli"
        )
        out.result.update(
            account=done.account,
            sessions_ended=done.sessions_ended,
            unlocked=done.unlocked,
            notice_sent=done.notice_sent,
        )
        out.say(f"密碼已重新設定 / password reset: {done.account}")
        out.say(f"已登出所有裝置 / sessions ended: {done.sessions_ended}")
        if not done.notice_sent:
            out.say("通知信未寄出 / the notice mail was not sent (see the log)")


@accounts_app.command("suspend")
def accounts_suspend(
    ctx: typer.Context,
    name: NameArgument,
    officer: OfficerOption,
    reason: ReasonOption,
    as_json: JsonOption = False,
) -> None:
    """停用帳號 (admin officers): the account's card and password stop working."""
    with command(as_json) as out:
        application = app_for(ctx)
        acting = application.officers.acting(officer)
        _report(out, application.accounts.suspend(name, officer=acting, reason=reason))


@accounts_app.command("reactivate")
def accounts_reactivate(
    ctx: typer.Context,
    name: NameArgument,
    officer: OfficerOption,
    reason: ReasonOption,
    as_json: JsonOption = False,
) -> None:
    """恢復帳號 (admin officers): a suspended account works again."""
    with command(as_json) as out:
        application = app_for(ctx)
        acting = application.officers.acting(officer)
        _report(out, application.accounts.reactivate(name, officer=acting, reason=reason))


def _report(out: Output, summary: AccountSummary) -> None:
    out.result.update(summary.as_dict())
    out.say(f"帳號 / account: {summary.account}")
    out.say(f"狀態 / state:   {summary.state}")
    out.say(f"類別 / type:    {summary.type}")
    out.say(f"Email:          {summary.email}")
    for cert in summary.certificates:
        out.say(
            f"憑證 / card:    {cert.role} {cert.ca} {cert.fingerprint[:16]}… "
            f"{cert.status} (→ {cert.not_after:%Y-%m-%d})"
        )
