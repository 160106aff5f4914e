"""``swreg reminders``: Expiry reminders (憑證逾期提醒)."""

from __future__ import annotations

import typer

reminders_app = typer.Typer(help="Expiry reminders (憑證逾期提醒).", no_args_is_help=True)
renewal_app = typer.Typer(
    help="憑證更換作業: bind a renewed card to an account.", no_args_is_help=True
)
