"""``swreg reminders`` (憑證逾期提醒) and ``swreg renewal`` (憑證更換作業).

``swreg reminders send [--days 60]`` mails the reminders that are due; run it from cron, on as
many machines as you like (each reminder goes out once). Exit 0 when every claimed reminder was
sent, 3 (``mail_unavailable``) when some failed: they are retried by a run at least 10 minutes
later. ``--json`` prints ``claimed``, ``sent``, ``failed`` and ``skipped``.

``swreg renewal replace --account NAME --card SPEC`` binds a renewed card to an account whose
old certificate has **expired** (the password path; with a still-valid old card, replace it on
the portal after logging in with it). It needs the card's PIN and the account's password:
with ``--pin-stdin`` both come from stdin, **two lines: the PIN, then the password**; without
it both are asked for on the terminal. The PIN goes to the card only. The new card is checked
first; after it, an unknown account, a wrong password and a still-valid old card are all
``not_authorized`` (exit 1), and five wrong passwords in a row lock the account (DESIGN.md §5).
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer

from engine._errors import EnvironmentProblem, ErrorCode, RefusedError, UsageError
from engine.cli.support import CARD_HELP, JsonOption, Output, app_for, command, read_pin
from engine.services.enrolment import answer_challenge
from engine.services.reminders import DEFAULT_WINDOW_DAYS
from engine.services.renewal import Replacement

reminders_app = typer.Typer(help="Expiry reminders (憑證逾期提醒).", no_args_is_help=True)
renewal_app = typer.Typer(
    help="憑證更換作業: bind a renewed card to an account.", no_args_is_help=True
)


@reminders_app.command("send")
def reminders_send(
    ctx: typer.Context,
    days: Annotated[
        int, typer.Option("--days", min=1, help="Remind of certificates expiring within DAYS.")
    ] = DEFAULT_WINDOW_DAYS,
    as_json: JsonOption = False,
) -> None:
    """Mail each due expiry reminder once (safe from cron on several machines). 寄送逾期提醒。"""
    with command(as_json) as out:
        run = app_for(ctx).reminders.send_due(days=days, actor="cli")
        out.result.update(
            claimed=run.claimed, sent=run.sent, failed=run.failed, skipped=run.skipped
        )
        out.say(f"逾期提醒 / expiry reminders ({days} days): {run.sent} sent")
        if run.skipped:
            out.say(f"無收件人 / no recipient: {run.skipped} skipped")
        if run.failed:
            raise EnvironmentProblem(
                ErrorCode.MAIL_UNAVAILABLE,
                detail=f"{run.failed} reminder(s) not sent; a run 10 minutes later retries them",
            )


@renewal_app.command("replace")
def renewal_replace(
    ctx: typer.Context,
    account: Annotated[str, typer.Option("--account", help="The account (帳號) to bind to.")],
    card: Annotated[str, typer.Option("--card", help=CARD_HELP)],
    pin_stdin: Annotated[
        bool,
        typer.Option("--pin-stdin", help="Read two lines from stdin: the PIN, then the password."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Replace an expired login card with the renewed one (account password). 憑證更換作業。"""
    from readers import open_card

    with command(as_json) as out:
        application = app_for(ctx)
        service = application.renewals
        origin = application.settings.cli_origin
        with open_card(card) as opened:
            pin = read_pin(pin_stdin)
            password = _read_password(pin_stdin)
            challenge = service.issue_challenge(origin=origin)
            response = answer_challenge(opened, challenge, pin)
            del pin
        done = service.replace_card(
            response, origin=origin, account=account, password=password, actor="cli"
        )
        _report(out, done)


def _read_password(from_stdin: bool) -> str:
    """The account password: the next stdin line, or asked on the terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("密碼 / password: ")
        except (EOFError, OSError) as exc:
            raise UsageError(detail="no terminal to ask for the password; use --pin-stdin") from exc
    if not password:
        raise RefusedError(ErrorCode.FIELD_REQUIRED, field="password")
    return password


def _report(out: Output, done: Replacement) -> None:
    out.result.update(
        account=done.account,
        old_fingerprint=done.old_fingerprint,
        new_fingerprint=done.new_fingerprint,
    )
    out.say(f"憑證已更換 / card replaced: {done.account}")
    out.say(
        f"舊憑證 / old: {done.old_fingerprint[:16]}…  新憑證 / new: {done.new_fingerprint[:16]}…"
    )
