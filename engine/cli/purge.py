"""``swreg purge``: retention (DESIGN.md §6), safe to run from cron at any frequency.

Removes the personal data of registrations that ended more than ``SWREG_RETENTION_DAYS`` days
ago (default 30; 0: everything already ended) and deletes the accounts never activated in that
time, freeing their names. A second run right after the first purges nothing. ``--json``:
``{ok, retention_days, cutoff, expired, registrations, accounts, links, mobile_tickets,
sessions}``.
Each step is told on stderr as it is done (``✓ registrations: 12``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from engine.cli.progress import CliProgress
from engine.cli.support import JsonOption, app_for, command


def purge(
    ctx: typer.Context,
    days: Annotated[
        int | None,
        typer.Option(
            "--days", min=0, help="Retention in days (default: SWREG_RETENTION_DAYS, else 30)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Delete personal data past the retention time. 刪除逾保存期限的個人資料。"""
    with command(as_json) as out, CliProgress(as_json=as_json) as progress:
        report = app_for(ctx).retention.purge(days=days, actor="cli", progress=progress.step)
        out.result.update(report.as_dict())
        out.say(
            f"保存期限 / retention: {report.retention_days} 天 days "
            f"(結束於 / ended by {report.cutoff:%Y-%m-%d %H:%M} UTC)"
        )
        if report.expired:
            out.say(f"已逾時 / expired first: {report.expired}")
        out.say(f"已清除註冊資料 / registrations purged: {report.registrations}")
        out.say(f"已刪除未啟用帳號 / unactivated accounts deleted: {report.accounts}")


__all__ = ["purge"]
